//! Sets up the AWS-shaped tier once per test process: moto (DynamoDB)
//! behind a proxy that hands it one request at a time, the functions built
//! for `cargo lambda watch`, and the settings file every `tether serve` and
//! `tether user` of this process reads (`LAMBDA_TIER_CONFIG`, a variable the
//! e2e helpers pass on: they drop only `TETHER_*` ones).
//!
//! - Moto: `TETHER_MOTO_URL` names a running server; otherwise
//!   `moto_server` from `$TETHER_MOTO_BIN`, `$HOME/.cache/tether/venv/bin`
//!   or `PATH` is started and goes with this process. Moto serves requests
//!   on threads without a lock and its transactions are not isolated (a
//!   cancelled one restores a copy of the table), so every request from every
//!   function process goes through one proxy that forwards them one at a
//!   time; DynamoDB makes each request atomic, and so does that.
//! - The functions: `cargo lambda watch` runs them with `cargo run`, which
//!   cannot share the build directory of the `cargo test` running this (it
//!   holds its lock), so they build into `<target>/lambda-tier` (once, here,
//!   before any server starts).
//! - `cargo-lambda`: `$TETHER_CARGO_LAMBDA` (the binary), else the venv of
//!   `scripts/install-moto`, else `PATH`.
//! - Instances per function: `$TETHER_LAMBDA_CONCURRENCY` (default 2: more
//!   than one, so frames reorder as on AWS).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What lives as long as the test process.
struct Tier {
    _moto: tether_testsupport::moto::Moto,
    _settings: tempfile::NamedTempFile,
}

static TIER: OnceLock<Tier> = OnceLock::new();

/// Sets the tier up (once per process; later calls return at once).
pub fn ensure() {
    TIER.get_or_init(start);
}

fn start() -> Tier {
    let started = Instant::now();
    let moto = tether_testsupport::moto::start();
    let moto_url = moto.url.clone();
    let proxy = one_at_a_time_proxy(&moto_url);
    let (target_dir, functions_dir) = build_functions();
    let cargo_lambda_dir = cargo_lambda_dir();
    let concurrency: u32 = std::env::var("TETHER_LAMBDA_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let settings = serde_json::json!({
        "functions_dir": functions_dir,
        "cargo_lambda_dir": cargo_lambda_dir,
        "target_dir": target_dir,
        "dynamodb_endpoint": format!("http://{proxy}"),
        "concurrency": concurrency,
    });
    let mut file = tempfile::Builder::new()
        .prefix("tether-lambda-tier-")
        .suffix(".json")
        .tempfile()
        .expect("create the tier settings file");
    std::io::Write::write_all(&mut file, settings.to_string().as_bytes())
        .expect("write the tier settings");
    // Set while every other test waits on `TIER`: no server is being spawned.
    std::env::set_var("LAMBDA_TIER_CONFIG", file.path());
    eprintln!(
        "lambda tier ready in {:?}: moto {moto_url} (one at a time via {proxy}), {concurrency} instances per function",
        started.elapsed()
    );
    Tier {
        _moto: moto,
        _settings: file,
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace")
}

/// Builds the functions' debug binaries where the emulator's `cargo run`
/// will look for them.
fn build_functions() -> (PathBuf, PathBuf) {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let target_dir = base.join("lambda-tier");
    let functions_dir = workspace().join("functions");
    let started = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--bins", "--manifest-path"])
        .arg(functions_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("run cargo build for the functions");
    assert!(status.success(), "building the functions failed ({status})");
    eprintln!("functions built in {:?}", started.elapsed());
    (target_dir, functions_dir)
}

fn cargo_lambda_dir() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TETHER_CARGO_LAMBDA") {
        return PathBuf::from(bin).parent().map(Path::to_owned);
    }
    let home = std::env::var_os("HOME")?;
    let venv = Path::new(&home).join(".cache/tether/venv/bin");
    venv.join("cargo-lambda").is_file().then_some(venv)
}

// ---------------------------------------------------------------------------
// One request at a time
// ---------------------------------------------------------------------------

/// A loopback proxy to `upstream` that forwards one request at a time and
/// answers each with the upstream's status, headers and body. It runs on a
/// thread of its own (each test has its own runtime, which ends with it).
fn one_at_a_time_proxy(upstream: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("proxy address");
    let upstream = upstream.trim_end_matches('/').to_owned();
    std::thread::Builder::new()
        .name("moto-proxy".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                tether_testbed::lambda::install_crypto_provider();
                let state = Arc::new(Proxy {
                    client: reqwest::Client::new(),
                    upstream,
                    turn: tokio::sync::Mutex::new(()),
                });
                let app = axum::Router::new()
                    .fallback(forward)
                    .with_state(state);
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                axum::serve(listener, app).await.expect("proxy serves");
            });
        })
        .expect("spawn the proxy thread");
    addr
}

struct Proxy {
    client: reqwest::Client,
    upstream: String,
    turn: tokio::sync::Mutex<()>,
}

async fn forward(
    axum::extract::State(proxy): axum::extract::State<Arc<Proxy>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return (http::StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut outgoing = proxy
        .client
        .request(parts.method.clone(), format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    let _turn = proxy.turn.lock().await;
    let answer = async {
        let response = outgoing.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    }
    .await;
    match answer {
        Ok((status, headers, body)) => {
            let mut response = axum::response::Response::new(axum::body::Body::from(body));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != http::header::TRANSFER_ENCODING && name != http::header::CONNECTION {
                    response.headers_mut().append(name, value.clone());
                }
            }
            response
        }
        Err(e) => (http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
