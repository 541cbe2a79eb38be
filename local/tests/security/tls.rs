//! Remote use is encrypted: `tether serve` speaks HTTPS and WSS itself with
//! the certificate it is given (read again when it changes), refuses plain
//! HTTP beyond loopback unless told otherwise, and the worker trusts a
//! private CA with `--ca-cert` and refuses plain HTTP to a remote host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use tether_testsupport::helpers::{Mode, Server, WAIT};
use tether_testsupport::security::raw_http::{request, request_on, Response};

/// A private CA (as on a home server) and a host certificate it signed,
/// for `127.0.0.1` and `localhost`, in files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Tether security test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write the CA");
        let pki = Self {
            dir,
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, ca_key),
        };
        pki.issue("first");
        pki
    }

    /// Writes a new host certificate and key over `host.pem`/`host.key`;
    /// returns the certificate's DER.
    fn issue(&self, name: &str) -> Vec<u8> {
        let key = KeyPair::generate().expect("host key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("host params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("host certificate");
        // Key first, certificate last: the host sees the pair change when
        // the certificate does.
        std::fs::write(self.key(), key.serialize_pem()).expect("write the key");
        std::fs::write(self.cert(), cert.pem()).expect("write the certificate");
        cert.der().to_vec()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("host.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("host.key")
    }

    /// A client that trusts this CA only.
    fn client(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA DER");
        roots.add(ca).expect("add the CA");
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    async fn start_server(&self, extra: &[&str]) -> Server {
        let cert = self.cert();
        let key = self.key();
        let mut args = vec![
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        Server::start_with(crate::HOST, Mode::Sequential, &args).await
    }
}

use rustls::pki_types::pem::PemObject as _;

/// Opens TLS to `addr` with `config`; returns the stream and the
/// certificate the server presented.
async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((tls, presented))
}

async fn https(pki: &Pki, addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> Response {
    let (tls, _) = tls_connect(addr, pki.client()).await.expect("TLS to the host");
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request_on(tls, addr, method, path, &headers, "").await
}

#[tokio::test]
async fn the_host_serves_https_and_wss_with_its_certificate() {
    let pki = Pki::new();
    let server = pki.start_server(&[]).await;
    let user = server.add_user("ada").await;

    // The UI over HTTPS.
    let page = https(&pki, server.addr, "GET", "/", None).await;
    assert_eq!(page.status, 200, "{page:?}");

    // A ticket over HTTPS, then the websocket over WSS with it.
    let ticket = https(&pki, server.addr, "POST", "/api/ticket", Some(&user.secret)).await;
    assert_eq!(ticket.status, 200, "{ticket:?}");
    let ticket: serde_json::Value = serde_json::from_str(&ticket.body).expect("JSON");
    let ticket = ticket["ticket"].as_str().expect("a ticket").to_owned();
    let url = format!("wss://{}/ws?v=1&ticket={ticket}", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(Arc::new(pki.client()))),
    )
    .await
    .expect("WSS with the ticket");
    use futures_util::{SinkExt as _, StreamExt as _};
    ws.send(Message::text(r#"{"action":"ping","id":"req_tls"}"#))
        .await
        .expect("send");
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a reply in time")
        .expect("open")
        .expect("frame");
    assert!(reply.to_text().expect("text").contains(r#""ok":true"#), "{reply:?}");

    // A client that does not trust the CA gets no connection; neither does
    // one speaking plain HTTP to the TLS port.
    let untrusting = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let refused = tls_connect(server.addr, untrusting).await;
    assert!(refused.is_err(), "an unknown CA must fail the handshake");
    let mut plain = TcpStream::connect(server.addr).await.expect("tcp");
    use tokio::io::AsyncWriteExt as _;
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("<html"),
        "plain HTTP on the TLS port must not get the page"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let server = pki.start_server(&["--tls-reload-secs", "0.2"]).await;
    let (_, first) = tls_connect(server.addr, pki.client()).await.expect("TLS");
    let renewed = pki.issue("renewed");
    assert_ne!(first, renewed);
    let started = Instant::now();
    loop {
        let (_, presented) = tls_connect(server.addr, pki.client()).await.expect("TLS");
        if presented == renewed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the renewed certificate was not served within 10 s\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A half-written renewal keeps the good certificate in service.
    std::fs::write(pki.cert(), "-----BEGIN CERTIFICATE-----\ngarbage").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, presented) = tls_connect(server.addr, pki.client()).await.expect("TLS");
    assert_eq!(presented, renewed);
}

/// `tether serve` on an address other machines reach, without TLS: refused
/// with a message saying why and what to do, before anything is written;
/// `--insecure-http` is the explicit way round it.
#[tokio::test]
async fn plain_http_beyond_loopback_is_refused_unless_asked_for() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = tether(&["serve", "--bind", "0.0.0.0:0"], data.path()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("--tls-cert") && stderr.contains("--insecure-http"), "{stderr}");
    assert!(stderr.contains("Caddy") && stderr.contains("tailscale serve"), "{stderr}");
    assert!(
        !data.path().join("tether.db").exists(),
        "a refusal changes nothing: no database made"
    );
    // A key without a certificate is a mistake, said as such.
    let out = tether(&["serve", "--tls-key", "k.pem"], data.path()).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key needs --tls-cert"));
    // Explicit consent starts it.
    let mut child = command(&["serve", "--bind", "0.0.0.0:0", "--insecure-http"], data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tether serve");
    let stdout = child.stdout.take().expect("stdout");
    let _running = Running(child);
    let line = first_line_with(stdout, "listening on http://").await;
    let port: u16 = line
        .and_then(|l| l.rsplit(':').next().map(|p| p.trim().trim_end_matches('/').to_owned()))
        .and_then(|p| p.parse().ok())
        .expect("`tether serve --insecure-http` printed its address");
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(request(loopback, "GET", "/", &[], "").await.status, 200);
}

/// The first line of `from` containing `needle`, read on a thread of its
/// own (a reader blocked on a live process must not hold the test's
/// runtime), or `None` if it ends first or [`WAIT`] passes.
async fn first_line_with(from: impl std::io::Read + Send + 'static, needle: &'static str) -> Option<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let found = std::io::BufReader::new(from)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains(needle));
        let _ = tx.send(found);
    });
    tokio::time::timeout(WAIT, rx).await.ok().and_then(Result::ok).flatten()
}

/// A child killed and reaped when dropped, whatever the test's outcome.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a process (SIGKILL) by id when dropped, for a child another task
/// waits on.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// The worker pairs with a host whose certificate a private CA signed when
/// given `--ca-cert`, fails without it, and refuses plain HTTP to a remote
/// host.
#[tokio::test]
async fn the_worker_trusts_a_private_ca_and_refuses_plain_http_remotely() {
    let pki = Pki::new();
    let server = pki.start_server(&[]).await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());

    let root = tempfile::tempdir().expect("tempdir");
    let ca = pki.ca();
    let mut trusting = worker(root.path(), &["--server", &url, "--ca-cert", ca.to_str().expect("path")]);
    let stderr = trusting.stderr.take().expect("stderr");
    let _running = Running(trusting);
    let line = first_line_with(stderr, "Approve it in Tether with the code").await;
    assert!(
        line.is_some(),
        "the worker paired over HTTPS and printed its code\n{}",
        server.logs()
    );

    let other = tempfile::tempdir().expect("tempdir");
    let untrusting = worker(other.path(), &["--server", &url]);
    let _guard2 = KillOnDrop(untrusting.id());
    let out = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || untrusting.wait_with_output()))
        .await
        .expect("the worker gave up in time")
        .expect("join")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("certificate"),
        "the failure names the certificate: {stderr}"
    );

    let third = tempfile::tempdir().expect("tempdir");
    let plain = worker(third.path(), &["--server", "http://192.0.2.10:8787"]);
    let _guard3 = KillOnDrop(plain.id());
    let out = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || plain.wait_with_output()))
        .await
        .expect("refused in time")
        .expect("join")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refusing to talk to 192.0.2.10 over plain http://"), "{stderr}");
}

/// `tether worker` in `root` (its own config directory, HOME and project
/// directory), stdout piped, with the extra flags.
fn worker(root: &Path, extra: &[&str]) -> std::process::Child {
    let project = root.join("project");
    std::fs::create_dir_all(&project).expect("project dir");
    let mut cmd = std::process::Command::new(crate::TETHER_BIN);
    cmd.arg("worker")
        .arg("--dir")
        .arg(&project)
        .arg("--config-dir")
        .arg(root.join("config"))
        .args(extra)
        .env("HOME", root)
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TETHER_") {
            cmd.env_remove(&key);
        }
    }
    // Pairing comes before opencode is needed; a path that exists keeps
    // the worker from installing one meanwhile.
    cmd.arg("--opencode").arg("/bin/false");
    cmd.spawn().expect("spawn tether worker")
}

/// `tether ARGS --data-dir DIR`, with no `TETHER_*` setting inherited.
fn command(args: &[&str], data_dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(crate::TETHER_BIN);
    cmd.args(args).arg("--data-dir").arg(data_dir).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TETHER_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

async fn tether(args: &[&str], data_dir: &Path) -> std::process::Output {
    let mut cmd = tokio::process::Command::from(command(args, data_dir));
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("finished in time")
        .expect("run tether")
}
