//! First run: the worker's credential and pairing.
//!
//! The worker makes up its own credential (32 random bytes), keeps it in a
//! 0600 file under the user's config directory, and asks the host to pair
//! it (`POST /api/pair`, credential in the `Authorization` header). The host
//! answers with a short code that the owner approves in the web UI (or by
//! scanning the QR code of the approval link), or, given a pairing token the
//! owner minted (`--token`), approves it at once. The credential never comes
//! back from the host, so nothing secret crosses the wire but that header
//! (and the one-time token, in the body).
//!
//! Whoever approves the worker owns it: it runs their sessions. So the
//! worker prints who that is when it is approved, and keeps the name in its
//! credential file, where a later start shows it again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use sha2_free_hash::short_hash;
use tether_domain::auth::Secret;
use tether_domain::model::WorkerStatus;
use tether_domain::protocol::{ErrorBody, PairData, PairRequest};

/// Where a host lives: its websocket and its HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// e.g. `ws://127.0.0.1:8787/ws`
    pub websocket: String,
    /// e.g. `http://127.0.0.1:8787` (`/api/pair` and the web UI are under it)
    pub http: String,
}

impl Endpoints {
    /// Reads `--server`: the host's web address (`http(s)://host:port`) or its
    /// websocket URL (`ws(s)://host:port/ws`).
    pub fn from_server(server: &str) -> anyhow::Result<Self> {
        let server = server.trim().trim_end_matches('/');
        let (scheme, rest) = server
            .split_once("://")
            .with_context(|| format!("--server {server}: expected http(s):// or ws(s)://"))?;
        let secure = match scheme {
            "http" | "ws" => false,
            "https" | "wss" => true,
            other => bail!("--server: unsupported scheme {other}"),
        };
        let (ws, http) = if secure { ("wss", "https") } else { ("ws", "http") };
        let base = rest.strip_suffix("/ws").unwrap_or(rest);
        let websocket = if scheme.starts_with("ws") {
            format!("{ws}://{rest}")
        } else {
            format!("{ws}://{base}/ws")
        };
        Ok(Self {
            websocket,
            http: format!("{http}://{base}"),
        })
    }

    /// The link that opens this code's approval in the web UI.
    pub fn approval_link(&self, code: &str) -> String {
        format!("{}/#/pair/{code}", self.http)
    }
}

/// What the worker keeps on disk, per host and working directory.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredCredential {
    pub server: String,
    pub workdir: String,
    pub credential: String,
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The name of the user who approved this worker (its owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("server", &self.server)
            .field("workdir", &self.workdir)
            .field("worker_id", &self.worker_id)
            .field("approved_by", &self.approved_by)
            .finish_non_exhaustive()
    }
}

/// The credential file for a host and directory.
pub fn credential_path(config_dir: &Path, server: &str, workdir: &Path) -> PathBuf {
    config_dir.join(format!("worker-{}.json", instance_key(server, workdir)))
}

/// What tells this machine's workers apart: one per host and directory.
/// Names the worker's files (credential, opencode's pid file), so workers
/// never touch each other's.
pub fn instance_key(server: &str, workdir: &Path) -> String {
    short_hash(&format!("{server}\n{}", workdir.display()))
}

/// Reads the credential file, or creates one with a fresh credential.
pub fn load_or_create(path: &Path, server: &str, workdir: &Path) -> anyhow::Result<StoredCredential> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let stored: StoredCredential = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a worker credential file; delete it to pair again", path.display()))?;
        return Ok(stored);
    }
    let stored = StoredCredential {
        server: server.to_owned(),
        workdir: workdir.display().to_string(),
        credential: Secret::generate("twk_").expose().to_owned(),
        worker_id: None,
        approved_by: None,
    };
    save(path, &stored)?;
    Ok(stored)
}

/// Writes the credential file, readable by its owner only, in a directory
/// only its owner may enter (0700, also when it already existed: the file
/// names tell which hosts and projects this machine works for).
pub fn save(path: &Path, stored: &StoredCredential) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (mode 700)", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(serde_json::to_string_pretty(stored)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Asks the host to pair this worker (or learns it is paired already).
/// `http` is [`crate::tls::HostTls::http_client`]'s, so the request trusts
/// what the websocket trusts.
pub async fn request_pairing(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    credential: &Secret,
    request: &PairRequest,
) -> anyhow::Result<PairData> {
    let res = http
        .post(format!("{}/api/pair", endpoints.http))
        .bearer_auth(credential.expose())
        .json(request)
        .timeout(std::time::Duration::from_secs(20))
        .send()
        .await
        .with_context(|| format!("reaching {}", endpoints.http))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if !status.is_success() {
        match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => bail!(
                "the host refused pairing ({} {}): {}",
                status.as_u16(),
                e.code.as_str(),
                e.message
            ),
            Err(_) => bail!("the host refused pairing ({status}): {body}"),
        }
    }
    serde_json::from_str(&body).with_context(|| format!("unexpected pairing reply: {body}"))
}

/// Prints the pairing code, the approval link and its QR code.
pub fn print_pending(endpoints: &Endpoints, code: &str) {
    let link = endpoints.approval_link(code);
    let qr = qrcode::QrCode::new(link.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default();
    eprintln!();
    eprintln!("This worker is not paired yet. Approve it in Tether with the code:");
    eprintln!();
    eprintln!("    {code}");
    eprintln!();
    eprintln!("or open {link}");
    eprintln!("{qr}");
    eprintln!("Waiting for approval…");
}

/// Says who approved this worker: from now on it runs their sessions.
pub fn print_approved(by: Option<&str>) {
    eprintln!();
    match by {
        Some(name) => eprintln!("This worker was approved by {name}: it runs {name}'s sessions now."),
        None => eprintln!("This worker was approved."),
    }
    eprintln!();
}

/// Explains a decided pairing status that stops the worker.
pub fn refusal(status: WorkerStatus, path: &Path) -> String {
    format!(
        "this worker was {}; delete {} and start it again to pair anew",
        status.as_str(),
        path.display()
    )
}

/// A short, stable name for a file: FNV-1a of the text, in hex. Not a
/// security measure, only a file name.
mod sha2_free_hash {
    pub fn short_hash(s: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_either_form() {
        let e = Endpoints::from_server("http://127.0.0.1:8787/").unwrap();
        assert_eq!(e.websocket, "ws://127.0.0.1:8787/ws");
        assert_eq!(e.http, "http://127.0.0.1:8787");
        let e = Endpoints::from_server("ws://127.0.0.1:8787/ws").unwrap();
        assert_eq!(e.websocket, "ws://127.0.0.1:8787/ws");
        assert_eq!(e.http, "http://127.0.0.1:8787");
        let e = Endpoints::from_server("https://tether.example.com").unwrap();
        assert_eq!(e.websocket, "wss://tether.example.com/ws");
        assert!(Endpoints::from_server("ftp://x").is_err());
        assert!(Endpoints::from_server("nope").is_err());
        assert_eq!(e.approval_link("KX7P-Q2MD"), "https://tether.example.com/#/pair/KX7P-Q2MD");
    }

    #[test]
    fn credential_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // An existing directory with the usual mode is tightened.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = credential_path(dir.path(), "http://h", Path::new("/src/app"));
        let a = load_or_create(&path, "http://h", Path::new("/src/app")).unwrap();
        let b = load_or_create(&path, "http://h", Path::new("/src/app")).unwrap();
        assert_eq!(a.credential, b.credential);
        assert!(a.credential.starts_with("twk_"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "the config directory is private");
        assert!(!format!("{a:?}").contains(&a.credential));
        assert_ne!(path, credential_path(dir.path(), "http://h", Path::new("/src/other")));
    }

    #[test]
    fn the_credential_file_keeps_who_approved_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let path = credential_path(dir.path(), "http://h", Path::new("/src/app"));
        let mut stored = load_or_create(&path, "http://h", Path::new("/src/app")).unwrap();
        assert_eq!(stored.approved_by, None, "nobody has approved a new worker");
        stored.worker_id = Some("wkr_1".into());
        stored.approved_by = Some("ada".into());
        save(&path, &stored).unwrap();
        let again = load_or_create(&path, "http://h", Path::new("/src/app")).unwrap();
        assert_eq!(again.approved_by.as_deref(), Some("ada"));
        assert_eq!(again.credential, stored.credential);
        assert!(format!("{again:?}").contains("ada"), "shown in its debug form");

        // A file written before the approver was kept still reads.
        let old = r#"{"server":"http://h","workdir":"/src/app","credential":"twk_x","worker_id":"wkr_1"}"#;
        std::fs::write(&path, old).unwrap();
        let read = load_or_create(&path, "http://h", Path::new("/src/app")).unwrap();
        assert_eq!((read.worker_id.as_deref(), read.approved_by), (Some("wkr_1"), None));
    }
}
