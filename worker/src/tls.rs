//! The worker's connections to its host: when plain text is allowed, and
//! which certificates the worker trusts.
//!
//! The host may be far away (a home server, a cloud), and what crosses the
//! connection is the worker's credential and every prompt and answer. So:
//!
//! - a plain `http://` or `ws://` host is refused unless it is on this
//!   machine (loopback), or the person said `--insecure` for a network they
//!   trust ([`check_server`]);
//! - every connection to the host (the pairing request and the websocket)
//!   uses one rustls configuration ([`HostTls`]): the web PKI roots, plus the
//!   certificates of `--ca-cert` for a host with a private CA. Certificate
//!   verification is never turned off, in any mode.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::Connector;

/// Why the worker will not start talking to its host.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "refusing to talk to {host} over plain {scheme}://: the worker's credential and every \
         prompt and answer would cross the network in clear text, readable and changeable by \
         anyone on the way. Use https:// instead (put the host behind TLS, e.g. a reverse proxy \
         with a certificate; --ca-cert FILE trusts a private CA), or pass --insecure \
         (TETHER_INSECURE=1) only on a network you trust"
    )]
    PlainTextToRemote { scheme: String, host: String },
    #[error("--server {server}: not a URL the worker understands ({reason})")]
    BadServer { server: String, reason: String },
    // `error` rather than `source`: the message already says it, and
    // anyhow would say it again as a cause.
    #[error("--ca-cert {}: cannot read it: {error}", .path.display())]
    CaUnreadable { path: PathBuf, error: std::io::Error },
    #[error("--ca-cert {}: not a readable PEM certificate file: {reason}", .path.display())]
    CaUnparsable { path: PathBuf, reason: String },
    #[error(
        "--ca-cert {}: no certificate in it (expected one or more PEM blocks \
         starting with -----BEGIN CERTIFICATE-----)",
        .path.display()
    )]
    CaEmpty { path: PathBuf },
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// How the worker will reach its host, as [`check_server`] allowed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `https://` or `wss://`.
    Tls,
    /// Plain text to this machine: nothing crosses a network.
    PlainLoopback,
    /// Plain text to another machine, because `--insecure` said so.
    PlainInsecure { host: String },
}

/// Applies the plain-text rule to `--server`: TLS always passes, plain text
/// only to loopback (127.0.0.0/8, ::1, `localhost`) or with `insecure`.
pub fn check_server(server: &str, insecure: bool) -> Result<Transport, TlsError> {
    let bad = |reason: String| TlsError::BadServer {
        server: server.to_owned(),
        reason,
    };
    // The WHATWG parser is the one reqwest connects with; it also reads the
    // tricky forms (`http://127.0.0.1@example.com`, `http://0x7f.1`) the
    // way a connection would, so the rule judges the host actually reached.
    let url = reqwest::Url::parse(server.trim()).map_err(|e| bad(e.to_string()))?;
    let scheme = url.scheme();
    match scheme {
        "https" | "wss" => return Ok(Transport::Tls),
        "http" | "ws" => {}
        other => return Err(bad(format!("unsupported scheme {other}"))),
    }
    let host = url.host_str().ok_or_else(|| bad("no host".into()))?;
    // IPv6 hosts come in brackets; IPv4 ones already in dotted form.
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => is_localhost(host),
    };
    let host = host.to_owned();
    if loopback {
        Ok(Transport::PlainLoopback)
    } else if insecure {
        Ok(Transport::PlainInsecure { host })
    } else {
        Err(TlsError::PlainTextToRemote {
            scheme: scheme.to_owned(),
            host,
        })
    }
}

/// `localhost` itself (the parser has lowercased it). Not `*.localhost`:
/// RFC 6761 reserves those for loopback, but not every resolver honours it.
fn is_localhost(name: &str) -> bool {
    name.trim_end_matches('.') == "localhost"
}

/// Reads `--ca-cert`: every certificate in a PEM file.
pub fn load_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::CaUnreadable {
        path: path.to_owned(),
        error,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TlsError::CaUnparsable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::CaEmpty { path: path.to_owned() });
    }
    Ok(certs)
}

/// The TLS configuration of every connection to the host.
#[derive(Clone, Debug)]
pub struct HostTls {
    config: Arc<rustls::ClientConfig>,
}

impl HostTls {
    /// The web PKI roots, plus the certificates in `ca_cert` if given.
    pub fn new(ca_cert: Option<&Path>) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_cert {
            for cert in load_ca_certs(path)? {
                // A PEM block that decodes but is no X.509 certificate.
                roots.add(cert).map_err(|e| TlsError::CaUnparsable {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        // The provider is named here rather than taken from the process
        // default, so this works whoever installed what (`tether up` shares
        // its process with the host).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// An HTTP client for the host's API (pairing).
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        reqwest::Client::builder()
            .use_preconfigured_tls((*self.config).clone())
            // The request carries the credential: a redirect could lead it
            // to plain text or to another host, so the host gets none.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))
    }

    /// The connector for the host's websocket (used for `wss://` only).
    pub fn websocket_connector(&self) -> Connector {
        Connector::Rustls(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(server: &str) -> String {
        match check_server(server, false) {
            Err(e @ TlsError::PlainTextToRemote { .. }) => e.to_string(),
            other => panic!("{server}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn plain_text_to_this_machine_is_allowed() {
        for server in [
            "http://127.0.0.1:8787",
            "http://127.8.9.10:8787/",
            "ws://127.0.0.1:8787/ws",
            "http://[::1]:8787",
            "ws://[::1]:8787/ws",
            "http://[::ffff:127.0.0.1]:8787",
            "http://localhost:8787",
            "http://LOCALHOST:8787",
            "ws://localhost./ws",
            "http://0x7f.1:8787",
        ] {
            assert_eq!(check_server(server, false).ok(), Some(Transport::PlainLoopback), "{server}");
        }
    }

    #[test]
    fn plain_text_to_another_machine_is_refused_and_says_why() {
        for server in [
            "http://192.168.1.5:8787",
            "ws://10.0.0.2/ws",
            "http://tether.example.com",
            "http://[2001:db8::1]:8787",
            "http://0.0.0.0:8787",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            // The host is what follows the `@`.
            "http://127.0.0.1@example.com",
        ] {
            let message = refused(server);
            assert!(message.contains("clear text"), "{message}");
            assert!(message.contains("https://"), "{message}");
            assert!(message.contains("--insecure"), "{message}");
        }
        assert!(refused("http://192.168.1.5:8787").contains("192.168.1.5 over plain http://"));
    }

    #[test]
    fn tls_is_always_allowed() {
        for server in ["https://tether.example.com", "wss://192.168.1.5/ws", "https://127.0.0.1"] {
            assert_eq!(check_server(server, false).ok(), Some(Transport::Tls), "{server}");
            assert_eq!(check_server(server, true).ok(), Some(Transport::Tls), "{server}");
        }
    }

    #[test]
    fn insecure_allows_plain_text_to_another_machine() {
        assert_eq!(
            check_server("http://192.168.1.5:8787", true).ok(),
            Some(Transport::PlainInsecure {
                host: "192.168.1.5".into()
            })
        );
        assert_eq!(
            check_server("http://localhost:8787", true).ok(),
            Some(Transport::PlainLoopback)
        );
    }

    #[test]
    fn a_server_that_is_no_url_is_refused() {
        for server in ["nope", "ftp://example.com", "http://"] {
            assert!(
                matches!(check_server(server, true), Err(TlsError::BadServer { .. })),
                "{server}"
            );
        }
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("certificate").pem()
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_ca_file_may_hold_several_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "cas.pem", &format!("{}\n{}", ca_pem(), ca_pem()));
        assert_eq!(load_ca_certs(&path).expect("loads").len(), 2);
        HostTls::new(Some(&path)).expect("a configuration");
    }

    #[test]
    fn a_missing_ca_file_fails_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.pem");
        let err = HostTls::new(Some(&path)).expect_err("missing");
        assert!(matches!(err, TlsError::CaUnreadable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with(&format!("--ca-cert {}: cannot read it", path.display())), "{message}");
    }

    #[test]
    fn a_ca_file_without_certificates_fails_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_only = rcgen::KeyPair::generate().expect("key").serialize_pem();
        for (name, text) in [("empty.pem", ""), ("words.pem", "not a certificate\n"), ("key.pem", key_only.as_str())] {
            let path = write(&dir, name, text);
            let err = HostTls::new(Some(&path)).expect_err(name);
            assert!(matches!(err, TlsError::CaEmpty { .. }), "{name}: {err:?}");
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("no certificate"), "{message}");
        }
    }

    #[test]
    fn an_unparsable_ca_file_fails_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            // Not base64.
            ("bad-base64.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned()),
            // Cut off before its end line.
            ("truncated.pem", ca_pem().lines().take(3).collect::<Vec<_>>().join("\n")),
            // Good PEM around something that is no X.509 certificate.
            ("not-x509.pem", "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n".to_owned()),
        ];
        for (name, text) in cases {
            let path = write(&dir, name, &text);
            let err = HostTls::new(Some(&path)).expect_err(name);
            assert!(matches!(err, TlsError::CaUnparsable { .. }), "{name}: {err:?}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("--ca-cert {}: not a readable PEM certificate file", path.display())),
                "{message}"
            );
        }
    }
}
