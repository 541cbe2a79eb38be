//! The worker's trust for its host, against real TLS servers started here.
//! A CA made in the test signs the host's certificate. With `--ca-cert`
//! pointing at that CA ([`HostTls::new`] with its file), both connections a
//! worker makes to its host (the websocket and the pairing request) reach
//! the host; without it, both are refused for the certificate, and the host
//! never sees a request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tether_domain::auth::Secret;
use tether_domain::protocol::PairRequest;
use tether_worker::pairing::{self, Endpoints};
use tether_worker::relay::{self, ConnectError, RelayConfig};
use tether_worker::tls::HostTls;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// What the test host saw of one connection.
#[derive(Debug)]
enum Seen {
    /// The TLS handshake failed (the worker did not trust the certificate):
    /// the alert the worker sent.
    HandshakeFailed(String),
    /// A request got through TLS, with this `Authorization` header.
    Request { authorization: String },
}

/// A private CA, a host certificate it signed (for `127.0.0.1` and
/// `localhost`), and the CA's certificate in a PEM file.
struct TestPki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    acceptor: TlsAcceptor,
}

fn pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tether test home CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let host_key = KeyPair::generate().expect("host key");
    let mut host_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("host params");
    host_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let host_cert = host_params.signed_by(&host_key, &issuer).expect("host certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![host_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(host_key.serialize_der().into()),
        )
        .expect("server config");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("home-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write the CA");
    TestPki {
        _dir: dir,
        ca_file,
        acceptor: TlsAcceptor::from(Arc::new(server)),
    }
}

/// A TLS websocket host on 127.0.0.1: accepts each connection's upgrade and
/// keeps it open. Returns its port and what it saw.
async fn websocket_host(acceptor: TlsAcceptor) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = seen.send(Seen::HandshakeFailed(e.to_string()));
                        return;
                    }
                };
                let mut authorization = String::new();
                // The shape tungstenite's callback must have, large error and all.
                #[allow(clippy::result_large_err)]
                let callback = |request: &Request, response: Response| {
                    authorization = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, callback).await else {
                    return;
                };
                let _ = seen.send(Seen::Request { authorization });
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (port, seen_rx)
}

/// A TLS HTTP host on 127.0.0.1 that answers any request with an approved
/// pairing. Returns its port and what it saw.
async fn pairing_host(acceptor: TlsAcceptor) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = seen.send(Seen::HandshakeFailed(e.to_string()));
                        return;
                    }
                };
                let head = read_request(&mut tls).await;
                let authorization = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization").then(|| value.trim().to_owned())
                    })
                    .unwrap_or_default();
                let _ = seen.send(Seen::Request { authorization });
                let body = r#"{"worker_id":"wkr_tls_test","status":"approved","code":null,"expires_at":null}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, seen_rx)
}

/// One HTTP request's head and body (by `content-length`), as text.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return text,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the host saw the connection in time")
        .expect("the host is running")
}

fn credential() -> Secret {
    Secret::from_client("twk_tls_test").expect("a credential")
}

fn relay_config(port: u16, tls: HostTls) -> RelayConfig {
    RelayConfig {
        url: format!("wss://127.0.0.1:{port}/ws"),
        credential: credential(),
        heartbeat: Duration::from_secs(60),
        ack_timeout: Duration::from_secs(8),
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
        tls,
    }
}

#[tokio::test]
async fn the_websocket_reaches_a_host_of_a_private_ca_with_ca_cert() {
    let pki = pki();
    let (port, mut seen) = websocket_host(pki.acceptor.clone()).await;
    let tls = HostTls::new(Some(&pki.ca_file)).expect("the CA loads");
    let ws = relay::connect(&relay_config(port, tls)).await;
    assert!(ws.is_ok(), "connected: {:?}", ws.err());
    match next_seen(&mut seen).await {
        Seen::Request { authorization } => assert_eq!(authorization, "Bearer twk_tls_test"),
        other => panic!("expected the upgrade request, got {other:?}"),
    }
}

#[tokio::test]
async fn the_websocket_is_refused_for_the_certificate_without_ca_cert() {
    let pki = pki();
    let (port, mut seen) = websocket_host(pki.acceptor.clone()).await;
    let tls = HostTls::new(None).expect("web PKI roots");
    match relay::connect(&relay_config(port, tls)).await {
        Err(ConnectError::Other(message)) => {
            assert!(message.contains("invalid peer certificate"), "{message}");
            assert!(message.contains("UnknownIssuer"), "{message}");
        }
        Err(e) => panic!("expected a certificate error, got {e}"),
        Ok(_) => panic!("connected to a host whose CA it was not told to trust"),
    }
    // The credential never went out: the host's side of TLS failed.
    match next_seen(&mut seen).await {
        Seen::HandshakeFailed(reason) => assert!(reason.contains("UnknownCA"), "{reason}"),
        other => panic!("expected a failed handshake, got {other:?}"),
    }
}

fn pair_request() -> PairRequest {
    PairRequest {
        machine: "test-machine".into(),
        name: Some("tls-test".into()),
        workdir: "/src/app".into(),
        token: None,
    }
}

#[tokio::test]
async fn the_pairing_request_reaches_a_host_of_a_private_ca_with_ca_cert() {
    let pki = pki();
    let (port, mut seen) = pairing_host(pki.acceptor.clone()).await;
    let http = HostTls::new(Some(&pki.ca_file))
        .expect("the CA loads")
        .http_client()
        .expect("a client");
    let endpoints = Endpoints::from_server(&format!("https://127.0.0.1:{port}")).expect("endpoints");
    let paired = pairing::request_pairing(&http, &endpoints, &credential(), &pair_request())
        .await
        .expect("paired");
    assert_eq!(paired.worker_id.as_str(), "wkr_tls_test");
    match next_seen(&mut seen).await {
        Seen::Request { authorization } => assert_eq!(authorization, "Bearer twk_tls_test"),
        other => panic!("expected the pairing request, got {other:?}"),
    }
}

#[tokio::test]
async fn the_pairing_request_is_refused_for_the_certificate_without_ca_cert() {
    let pki = pki();
    let (port, mut seen) = pairing_host(pki.acceptor.clone()).await;
    let http = HostTls::new(None).expect("web PKI roots").http_client().expect("a client");
    let endpoints = Endpoints::from_server(&format!("https://127.0.0.1:{port}")).expect("endpoints");
    let err = pairing::request_pairing(&http, &endpoints, &credential(), &pair_request())
        .await
        .expect_err("refused");
    let message = format!("{err:#}");
    assert!(message.contains("invalid peer certificate"), "{message}");
    match next_seen(&mut seen).await {
        Seen::HandshakeFailed(reason) => assert!(reason.contains("UnknownCA"), "{reason}"),
        other => panic!("expected a failed handshake, got {other:?}"),
    }
}
