//! The Lambda runtime emulator behind one host process: `cargo lambda
//! watch`, serving the `tether-functions` binaries (each started on its
//! first invocation, up to `concurrency` instances per function so that
//! concurrent frames run in separate processes and may finish in any order,
//! as on AWS), with the functions' environment set for this host.
//!
//! It lives as long as the host: a watchdog shell owns it and kills its
//! whole process group (the emulator and every function instance) once the
//! host's end of a pipe closes, however the host ends (SIGKILL included).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use tokio::process::{Child, ChildStdin, Command};
use tracing::info;

/// How the AWS-shaped tier is set up: read from the JSON file that the
/// `LAMBDA_TIER_CONFIG` variable of `tether-testbed` names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// The functions' crate (the directory of `functions/Cargo.toml`).
    pub functions_dir: PathBuf,
    /// The directory holding `cargo-lambda`, when it is not on `PATH`.
    #[serde(default)]
    pub cargo_lambda_dir: Option<PathBuf>,
    /// The target directory of the functions' builds (default: the
    /// environment's `CARGO_TARGET_DIR`, else the workspace's).
    #[serde(default)]
    pub target_dir: Option<PathBuf>,
    /// The DynamoDB endpoint (a DynamoDB-compatible server).
    pub dynamodb_endpoint: String,
    /// Instances per function (`cargo lambda watch --concurrency`).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// The region the functions and the host's own client use.
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_concurrency() -> u32 {
    4
}

fn default_region() -> String {
    "us-east-1".into()
}

impl TierConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the Lambda tier settings {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing the Lambda tier settings {} (JSON)", path.display()))
    }

    /// A DynamoDB client on the tier's endpoint, for the host's own use
    /// (creating the table, adding users). Credentials are placeholders: a
    /// local DynamoDB-compatible server does not check them.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        tether_functions::dynamo::client(&self.sdk(), Some(&self.dynamodb_endpoint))
    }

    /// The SDK's settings for this tier: its region, placeholder
    /// credentials, the functions' HTTP client.
    fn sdk(&self) -> aws_config::SdkConfig {
        use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "local", "local", None, None, "tether",
            )))
            .http_client(tether_functions::dynamo::https_client())
            .build()
    }

    /// The push port on a Management API endpoint of this tier (the test
    /// bed's own, on loopback), as the functions and `tether-admin` use it
    /// on AWS. Credentials are placeholders: the test bed checks none.
    pub fn management_push(&self, endpoint: &str) -> tether_functions::push::ApiGatewayPush {
        let client = tether_functions::push::ApiGatewayPush::client(&self.sdk(), endpoint);
        tether_functions::push::ApiGatewayPush::new(client, 1)
    }
}

/// The file in a data directory that names the host's table.
pub const TABLE_FILE: &str = "lambda-table";

/// The table of a data directory: named in [`TABLE_FILE`], made up (and
/// written there) on the first start, so a restarted host finds its data.
pub fn table_of(data_dir: &Path, create: bool) -> anyhow::Result<String> {
    let path = data_dir.join(TABLE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if !create {
        bail!(
            "{} names no table: start `tether serve` with the Lambda tier on this data directory first",
            path.display()
        );
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let name = format!(
        "tether-{}",
        tether_domain::auth::random_base32(10).to_ascii_lowercase()
    );
    std::fs::write(&path, &name).with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
}

/// A running `cargo lambda watch`.
pub struct Emulator {
    /// `http://127.0.0.1:PORT`, where `Invoke` calls go.
    pub endpoint: String,
    // Dropping these closes the watchdog's pipe: it then kills the group.
    _watchdog: Child,
    _pipe: ChildStdin,
}

/// Runs the emulator in its own process group, its output on the host's
/// stderr (the host's stdout carries only what its callers read), and
/// kills the group when fd 3 (the host's pipe) closes or the emulator
/// exits. The pipe's far end is the watchdog's stdin, moved to fd 3 so
/// that background jobs keep it (they read /dev/null otherwise).
const WATCHDOG: &str = r#"exec 3<&0 1>&2
setsid "$@" </dev/null &
group=$!
trap 'kill -TERM -"$group" 2>/dev/null; sleep 1; kill -KILL -"$group" 2>/dev/null' EXIT
(cat <&3 >/dev/null; kill -TERM -"$group" 2>/dev/null; sleep 1; kill -KILL -"$group" 2>/dev/null) &
wait "$group"
"#;

impl Emulator {
    /// Starts `cargo lambda watch` on a free loopback port with the
    /// functions' environment `env`, and waits until it listens.
    pub async fn start(tier: &TierConfig, env: &[(String, String)]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("picking a port for the Lambda emulator")?
            .port();
        let mut args: Vec<String> = vec![
            "cargo".into(),
            "lambda".into(),
            "watch".into(),
            "--invoke-address".into(),
            "127.0.0.1".into(),
            "--invoke-port".into(),
            port.to_string(),
            "--concurrency".into(),
            tier.concurrency.max(1).to_string(),
            // Nothing is edited under a test: no rebuilds, no restarts.
            "--ignore-changes".into(),
            "--quiet".into(),
            "--color".into(),
            "never".into(),
        ];
        for (k, v) in env {
            args.push("--env-var".into());
            args.push(format!("{k}={v}"));
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .args(&args)
            .current_dir(&tier.functions_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
        if let Some(dir) = &tier.cargo_lambda_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![dir.clone()];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs).context("PATH")?);
        }
        if let Some(dir) = &tier.target_dir {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        // The emulator's own logging (its file watcher is chatty at debug);
        // the functions get theirs through `--env-var RUST_LOG`.
        cmd.env("RUST_LOG", "warn");
        let mut child = cmd.spawn().context("starting `cargo lambda watch`")?;
        let pipe = child.stdin.take().context("the watchdog's stdin")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().context("watching the emulator")? {
                bail!("`cargo lambda watch` exited ({status}) before listening; is cargo-lambda installed?");
            }
            if Instant::now() > deadline {
                bail!("`cargo lambda watch` did not listen on port {port} within a minute");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        info!(%endpoint, concurrency = tier.concurrency, "Lambda emulator listening");
        Ok(Self {
            endpoint,
            _watchdog: child,
            _pipe: pipe,
        })
    }
}
