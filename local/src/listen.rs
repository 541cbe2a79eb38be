//! The host's HTTP listener: plain HTTP on loopback, HTTPS (and so WSS)
//! anywhere, with the bounds a server on the internet needs.
//!
//! - **TLS** with rustls, from PEM files (`--tls-cert`, `--tls-key`). The
//!   files are read again when they change (checked every few seconds), so a
//!   renewed certificate (certbot, acme.sh, a private CA's cron job) needs no
//!   restart; a renewal that cannot be read keeps the old certificate and
//!   says why in the log.
//! - **Slow clients are bounded:** a connection must finish its TLS
//!   handshake and send a whole request head within [`Limits::header_read`],
//!   or it is closed. (Without this, a few hundred idle sockets hold a file
//!   descriptor and a task each for ever.) Websockets are the gateway's
//!   business once upgraded: it has its own idle and age timers.
//! - `TCP_NODELAY` on every accepted socket: the host sends small frames
//!   that should leave at once.
//!
//! Only HTTP/1.1 is served: websockets upgrade from it, and every client
//! (browsers, the worker) speaks it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// The certificate and key files of `--tls-cert` and `--tls-key`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Bounds on what one connection may hold before it is useful.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time for the TLS handshake plus the first request head, and for
    /// each later request head of a kept-alive connection.
    pub header_read: Duration,
    /// How often the certificate files are checked for a change.
    pub reload_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            reload_every: Duration::from_secs(5),
        }
    }
}

/// How the host listens: TLS or not, and the bounds.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// HTTPS with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
}

impl HttpOptions {
    /// The scheme clients use: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, over TLS when
/// `options.tls` names the files (read here first: a bad file fails now,
/// not at the first client). Upgraded connections (websockets) are not
/// awaited: the caller closes them itself (see `host::serve`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let HttpOptions { tls, limits } = options;
    let acceptor = match &tls {
        Some(files) => {
            let certs = Arc::new(ReloadingCert::load(files.clone())?);
            tokio::spawn(Arc::clone(&certs).watch(limits.reload_every));
            Some(TlsAcceptor::from(Arc::new(server_config(certs))))
        }
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop = stop_rx.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY refused");
        }
        let app = app.clone();
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            match acceptor {
                None => connection(TokioIo::new(tcp), peer, app, &limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(TokioIo::new(tls), peer, app, &limits, stop).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    Ok(())
}

/// One HTTP/1.1 connection, with upgrades (websockets). The router sees the
/// peer's address as axum's `ConnectInfo`.
async fn connection<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    app: Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            // Let a request in flight finish; take no new one.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|stopped| *stopped).await.map(|_| ());
}

fn server_config(certs: Arc<ReloadingCert>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The certificate in use, and the files it came from, read again when
/// their modification times change.
#[derive(Debug)]
struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

impl ReloadingCert {
    fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let stamp = stamp(&files);
        let key = Arc::new(certified_key(&files)?);
        info!(cert = %files.cert.display(), "TLS certificate loaded");
        Ok(Self {
            files,
            current: RwLock::new(Loaded { key, stamp }),
        })
    }

    /// Checks the files every `every` and swaps in a changed certificate.
    async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload_if_changed();
        }
    }

    fn reload_if_changed(&self) {
        let now = stamp(&self.files);
        if self.read().stamp == now {
            return;
        }
        match certified_key(&self.files) {
            Ok(key) => {
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                *current = Loaded {
                    key: Arc::new(key),
                    stamp: now,
                };
                info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                // Half-written by a renewal, perhaps: keep serving the old
                // one and try again at the next change.
                warn!(error = format!("{e:#}"), "the changed TLS files cannot be used; keeping the old certificate");
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                current.stamp = now;
            }
        }
    }

    // A poisoned lock only means a reload panicked; the value is whole.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read().key))
    }
}

fn stamp(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&files.cert), modified(&files.key))
}

/// Reads and checks a certificate chain and its key.
fn certified_key(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading the TLS certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", files.cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the TLS key {} (PEM)", files.key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("the TLS key {} is not usable", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().with_context(|| {
        format!(
            "the TLS key {} does not belong to the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).expect("write");
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).expect("write");
        files
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let files = write_pair(dir.path(), "a.example");
        let other = tempfile::tempdir().expect("dir");
        let other = write_pair(other.path(), "b.example");
        let mixed = TlsFiles {
            cert: files.cert.clone(),
            key: other.key,
        };
        let e = certified_key(&mixed).expect_err("mismatch");
        assert!(format!("{e:#}").contains("does not belong"), "{e:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let e = certified_key(&TlsFiles {
            cert: empty,
            key: files.key,
        })
        .expect_err("empty");
        assert!(format!("{e:#}").contains("no PEM certificate"), "{e:#}");
    }

    #[test]
    fn a_changed_pair_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let files = write_pair(dir.path(), "a.example");
        let certs = ReloadingCert::load(files.clone()).expect("load");
        let first = certs.read().key.cert[0].clone();
        // A broken write keeps the old certificate.
        std::fs::write(&files.key, "not a key").expect("write");
        bump(&files.key);
        certs.reload_if_changed();
        assert_eq!(certs.read().key.cert[0], first);
        // A whole new pair is taken.
        write_pair(dir.path(), "b.example");
        bump(&files.cert);
        certs.reload_if_changed();
        assert_ne!(certs.read().key.cert[0], first);
    }

    /// Moves a file's modification time on, since a rewrite within the
    /// file system's time granularity may leave it unchanged.
    fn bump(path: &Path) {
        let file = std::fs::File::options().append(true).open(path).expect("open");
        let later = SystemTime::now() + Duration::from_secs(rand_secs());
        file.set_modified(later).expect("set mtime");
    }

    fn rand_secs() -> u64 {
        use rand::Rng as _;
        rand::rng().random_range(10..10_000)
    }
}
