//! The local host: the SQLite store, the domain and the gateway behind one
//! HTTP server, as `tether up` and `tether serve` run it.
//!
//! Routes:
//! - `GET /ws`: the websocket (`?ticket=` for browsers, `Authorization:
//!   Bearer` for workers, `?v=` for the protocol version).
//! - `POST /api/ticket`: a one-use ticket for a browser's websocket.
//! - `POST /api/pair`: a new worker asks to be paired.
//! - `GET /` and the web UI's files (`web/`, built by `build.rs` and
//!   embedded). The UI routes itself in the URL's fragment, so no other path
//!   needs `index.html`.
//! - Anything else is 404, whatever the method. In particular nothing here
//!   reaches a connection but `/ws` with `$connect`'s authentication: no
//!   Management API, no debug routes.
//!
//! Binding is the caller's job (it may want port 0 and the real address
//! before serving); [`serve`] takes the listener and a shutdown future.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use tether_domain::edge::{error_body, Answer, HttpRequest, HTTP_HEADERS, HTTP_PATHS};
use tether_domain::store::Store;
use tether_domain::{ApiError, Domain};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::control::{ControlSocket, DataDir};
use crate::gateway::{client_address, now_millis, DomainBackend, Gateway, GatewayConfig, Hub};
use crate::listen::HttpOptions;
use crate::sqlite::SqliteStore;

/// The database file inside the data directory.
pub const STORE_FILE: &str = "tether.db";
/// Where the websocket is served.
pub const WS_PATH: &str = "/ws";
/// How long a shutdown waits for websockets to close and run `$disconnect`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The address to serve on (the caller binds it; kept for the record).
    pub bind: SocketAddr,
    /// Holds the database ([`STORE_FILE`]).
    pub data_dir: PathBuf,
    pub gateway: GatewayConfig,
    pub domain: tether_domain::Config,
    pub http: HttpOptions,
}

/// The domain as the local host runs it.
pub type LocalDomain = Domain<SqliteStore, Hub>;

/// The database path for a data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_FILE)
}

/// Opens (creating the directory and file if needed) the store of a data directory.
pub fn open_store(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    create_private_dir(data_dir)?;
    let path = store_path(data_dir);
    make_private_files(&path)?;
    SqliteStore::open(&path).with_context(|| format!("opening the database {}", path.display()))
}

/// The data directory holds secret hashes, worker credentials and every
/// conversation: only its owner may enter it (0700), also when it already
/// existed with a looser mode (made by hand, or by an older version).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    set_mode(dir, 0o700)
}

/// The database and its WAL and shared-memory files are 0600. The database
/// is made here before SQLite opens it, since SQLite gives the files it
/// creates beside a database the database's mode; files left by an older
/// version are tightened.
fn make_private_files(db: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(db)
            .with_context(|| format!("creating the database {}", db.display()))?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if file.exists() {
            set_mode(&file, 0o600)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} private (mode {mode:o})", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The domain over the store of a data directory, with a fresh hub.
pub fn open_domain(
    data_dir: &Path,
    config: tether_domain::Config,
) -> anyhow::Result<Arc<LocalDomain>> {
    let store = open_store(data_dir)?;
    Ok(Arc::new(Domain::new(store, Hub::new(), config)))
}

/// The gateway over a domain: the domain's push port is the gateway's hub.
pub fn gateway<S: Store>(
    domain: Arc<Domain<S, Hub>>,
    config: GatewayConfig,
) -> Gateway<DomainBackend<S>> {
    let hub = domain.push().clone();
    Gateway::new(DomainBackend::new(domain), hub, config)
}

/// Every route of the host: `/ws`, `/api/*` and the UI (see the module doc).
pub fn router<S: Store>(gateway: &Gateway<DomainBackend<S>>) -> Router {
    let mut api = Router::new();
    for path in HTTP_PATHS {
        api = api.route(path, any(http_api::<S>));
    }
    let api = api.with_state(gateway.backend().domain().clone());
    gateway.router(WS_PATH).merge(api).fallback(web_ui)
}

/// Opens the store in `config.data_dir` and serves until `shutdown` resolves.
pub async fn run(
    config: HostConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let domain = open_domain(&config.data_dir, config.domain)?;
    serve(domain, config.gateway, config.http, listener, shutdown).await
}

/// Serves a domain on a bound listener until `shutdown` resolves, then
/// closes the websockets (1001) and waits for their `$disconnect`.
pub async fn serve<S: Store + DataDir>(
    domain: Arc<Domain<S, Hub>>,
    gateway_config: GatewayConfig,
    http: HttpOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // How `tether user reset|remove`, another process, close websockets here.
    let control = ControlSocket::start_for(domain.host_store(), domain.push().clone()).await?;
    // This host alone serves the data now: no recorded socket is open.
    let forgotten = domain
        .host_store()
        .forget_connections()
        .await
        .context("forgetting the connections of an earlier run")?;
    if forgotten > 0 {
        info!(
            connections = forgotten,
            "forgot the connections of an earlier run"
        );
    }
    let purger = tokio::spawn(purge_periodically(Arc::clone(&domain)));
    let gateway = gateway(domain, gateway_config);
    let app = router(&gateway);
    let addr = listener.local_addr().context("reading the bound address")?;
    info!(%addr, scheme = http.scheme(), "serving");
    crate::listen::serve(listener, app, http, shutdown).await?;
    // Upgraded websockets are no longer hyper's: close them ourselves.
    let open = gateway.live_connections();
    if open > 0 {
        info!(connections = open, "closing websockets");
        if !gateway.shutdown(SHUTDOWN_GRACE).await {
            warn!(
                left = gateway.live_connections(),
                "some websockets did not close in time"
            );
        }
    }
    purger.abort();
    drop(control);
    info!("stopped");
    Ok(())
}

/// How often expired tickets and connection records are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(300);

/// Deletes what has expired, now and then. Reads already ignore expired
/// rows; this only keeps the file from growing.
async fn purge_periodically<S: Store>(domain: Arc<Domain<S, Hub>>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tick.tick().await;
        match domain.purge_expired(now_millis()).await {
            Ok(0) => {}
            Ok(n) => info!(rows = n, "purged expired records"),
            Err(e) => warn!(error = %e, "purging expired records failed"),
        }
    }
}

/// `/api/ticket` and `/api/pair`, any method: the domain's edge answers
/// (405 for a method other than POST), this only reads the request and
/// writes the answer.
async fn http_api<S: Store>(
    State(domain): State<Arc<Domain<S, Hub>>>,
    // The listener (`listen.rs`) records the peer of every request.
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = peer.map(|Extension(ConnectInfo(peer))| client_address(peer.ip(), &headers));
    let answer = domain
        .http(HttpRequest {
            method: method.as_str(),
            path: uri.path(),
            authorization: headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            source,
            body: &body,
            now: now_millis(),
        })
        .await;
    api_response(answer)
}

/// An answer of the HTTP API, with its headers.
fn api_response(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    for (name, value) in HTTP_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The web UI, built from `web/` by `build.rs` into `OUT_DIR`.
#[derive(rust_embed::Embed)]
#[folder = "$OUT_DIR/web-dist"]
struct WebUi;

/// Vite's content-hashed output: a name never changes meaning, so it may be
/// cached for good. Everything else is revalidated on each use.
const HASHED_ASSETS: &str = "assets/";
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";
const CACHE_REVALIDATE: &str = "no-cache";
/// Scripts and styles only from this origin; nothing the agent writes can
/// load a script or frame the page (the UI approves workers and permissions),
/// and the page talks to no host but its own (`connect-src`: see
/// [`content_security_policy`]).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; font-src 'self' data:; \
    manifest-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The page's policy: [`CSP`] and `connect-src` naming the page's own
/// origin and its websocket. `'self'` alone does not cover `ws:`/`wss:` in
/// every browser, and `ws: wss:` would let a script (were one ever injected)
/// send what it reads to any host. The scheme is not known behind a TLS
/// proxy, so both websocket schemes of the same host are allowed. A `Host`
/// header that is not a plain host\[:port] gets `'self'` only.
fn content_security_policy(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        });
    match host {
        Some(host) => format!("{CSP}; connect-src 'self' ws://{host} wss://{host}"),
        None => format!("{CSP}; connect-src 'self'"),
    }
}

/// Serves the UI's files (`/` is `index.html`); any other path is 404: a
/// JSON one under `/api/`, a plain one elsewhere.
async fn web_ui(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return api_response(Answer {
            status: 404,
            body: error_body(ApiError::not_found("endpoint")),
        });
    }
    let name = if path.is_empty() { "index.html" } else { path };
    let Some(file) = WebUi::get(name) else {
        return if path.is_empty() {
            (StatusCode::NOT_FOUND, "the web UI is not built").into_response()
        } else {
            (StatusCode::NOT_FOUND, "not found").into_response()
        };
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let etag = {
        use base64::Engine as _;
        let hash = file.metadata.sha256_hash();
        format!(
            "\"{}\"",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash[..18])
        )
    };
    let cache = if name.starts_with(HASHED_ASSETS) {
        CACHE_FOREVER
    } else {
        CACHE_REVALIDATE
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = file.metadata.mimetype();
        let content_type = if mime.starts_with("text/") || mime == "application/javascript" {
            format!("{mime}; charset=utf-8")
        } else {
            mime.to_owned()
        };
        let mut response = axum::body::Body::from(file.data.into_owned()).into_response();
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(&headers)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn csp_for(host: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).expect("header"));
        content_security_policy(&headers)
    }

    #[test]
    fn a_pairing_source_is_the_peer_or_a_local_proxys_last_hop() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("an address") };
        let forwarded = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
            }
            h
        };
        let none = HeaderMap::new();
        assert_eq!(client_address(ip("203.0.113.7"), &none), ip("203.0.113.7"));
        // A remote client's own header counts for nothing.
        let claimed = forwarded(&["198.51.100.1"]);
        assert_eq!(
            client_address(ip("203.0.113.7"), &claimed),
            ip("203.0.113.7")
        );
        // A proxy on this machine: the hop it appended, not what the client wrote.
        let proxied = forwarded(&["198.51.100.1, 203.0.113.9"]);
        assert_eq!(client_address(ip("127.0.0.1"), &proxied), ip("203.0.113.9"));
        let split = forwarded(&["198.51.100.1", "2001:db8::5"]);
        assert_eq!(client_address(ip("::1"), &split), ip("2001:db8::5"));
        assert_eq!(client_address(ip("127.0.0.1"), &none), ip("127.0.0.1"));
        assert_eq!(
            client_address(ip("127.0.0.1"), &forwarded(&["junk"])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn connect_src_names_the_pages_host_only() {
        assert!(csp_for("tether.example:8443")
            .ends_with("connect-src 'self' ws://tether.example:8443 wss://tether.example:8443"));
        assert!(csp_for("[::1]:80").ends_with("connect-src 'self' ws://[::1]:80 wss://[::1]:80"));
        // A Host that would smuggle a source list in gets 'self' only.
        for forged in ["evil.example *", "a;script-src *", "x'y", ""] {
            assert!(csp_for(forged).ends_with("connect-src 'self'"), "{forged}");
        }
    }
}
