//! The host with the Lambda backend: the gateway (WebSocket API) and the
//! HTTP API in front of the functions under the emulator, DynamoDB on the
//! tier's server; the Management API on a second listener, on loopback,
//! that only the functions are told of, and `tether-testbed user` (whose
//! `reset` and `remove` close websockets with `DeleteConnection`, as
//! `tether-admin` does on AWS): its endpoint is written to
//! [`MANAGEMENT_FILE`] in the data directory while the host runs. What
//! `tether-testbed serve` runs.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;
use tether_functions::{DynamoStore, TableNames};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::emulator::{table_of, Emulator, TierConfig};
use super::{http_api, ApiIdentity, Functions, LambdaBackend};
use tether_local::gateway::{now_millis, ConnId, Gateway, GatewayConfig, Hub};

/// The WebSocket path, as the embedded host serves it.
const WS_PATH: &str = "/ws";
/// The stage name in events and in the functions' Management API endpoint
/// (as on AWS, where the stage is `ws`).
const STAGE: &str = "ws";
/// API Gateway's integration timeout.
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);
/// A first invocation under the emulator may build the function.
const FIRST_INVOKE_TIMEOUT: Duration = Duration::from_secs(600);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The file in the data directory naming the running host's Management API
/// endpoint (`http://127.0.0.1:PORT/ws`).
pub const MANAGEMENT_FILE: &str = "management-endpoint";

/// The Management API endpoint of the host running on `data_dir`, if one
/// runs (or one killed left its file behind).
pub fn management_endpoint(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(MANAGEMENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// [`MANAGEMENT_FILE`] while the host runs; removed when dropped.
struct EndpointFile(PathBuf);

impl EndpointFile {
    fn write(data_dir: &Path, endpoint: &str) -> anyhow::Result<Self> {
        let path = data_dir.join(MANAGEMENT_FILE);
        std::fs::write(&path, format!("{endpoint}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for EndpointFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Everything the Lambda host needs.
#[derive(Clone, Debug)]
pub struct LambdaHost {
    pub data_dir: PathBuf,
    pub tier: TierConfig,
    pub gateway: GatewayConfig,
    pub domain: tether_domain::Config,
}

/// The host's table on the tier's DynamoDB: named in the data directory
/// (made up on the first start) and created if missing. Returns a client
/// for it too.
pub async fn host_table(host: &LambdaHost) -> anyhow::Result<(aws_sdk_dynamodb::Client, TableNames)> {
    let table = TableNames {
        main: table_of(&host.data_dir, true)?,
    };
    let client = host.tier.dynamodb();
    DynamoStore::create_tables(&client, &table)
        .await
        .with_context(|| format!("creating the table {} at {}", table.main, host.tier.dynamodb_endpoint))?;
    Ok((client, table))
}

/// Starts the emulator with the functions configured for `table` (see
/// [`host_table`]), invokes each function once (so the first client does
/// not wait for a cold start), calls `ready`, and serves until `shutdown`
/// resolves.
pub async fn serve(
    host: LambdaHost,
    table: TableNames,
    listener: TcpListener,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the bound address")?;
    let table = table.main;
    // The Management API listens apart from what clients reach, as on AWS
    // (where it takes IAM-signed calls only).
    let management = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("listening for the Management API on loopback")?;
    let management_addr = management.local_addr().context("reading the bound address")?;
    let endpoint_file = EndpointFile::write(&host.data_dir, &management_endpoint_url(management_addr))?;

    // CloudFront's origin secret: the functions are given it, and the
    // gateway adds it to the events of `$connect` and the HTTP API, as
    // CloudFront adds it to the requests it forwards on AWS. New for each
    // run (nothing outside this process needs it).
    let origin_secret = tether_domain::auth::Secret::generate("tor_");
    let emulator = Emulator::start(
        &host.tier,
        &function_env(&host, &table, management_addr, origin_secret.expose()),
    )
    .await?;
    let backend = LambdaBackend::new(
        emulator.endpoint.clone(),
        Functions::default(),
        ApiIdentity {
            api_id: "local".into(),
            domain_name: addr.to_string(),
            stage: STAGE.into(),
        },
        origin_secret.expose(),
        INTEGRATION_TIMEOUT,
    );
    warm_up(&backend).await?;

    let gateway = Gateway::new(backend.clone(), Hub::new(), host.gateway);
    let app = gateway
        .router(WS_PATH)
        .merge(http_api::routes(backend));
    let management_app = crate::management::routes(gateway.hub().clone());
    let management_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(management, management_app).await {
            warn!(error = %e, "the Management API listener stopped");
        }
    });
    ready(addr);
    info!(%addr, %table, "serving with the Lambda backend");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving HTTP")?;
    if gateway.live_connections() > 0 && !gateway.shutdown(SHUTDOWN_GRACE).await {
        warn!(left = gateway.live_connections(), "some websockets did not close in time");
    }
    drop(emulator);
    management_task.abort();
    drop(endpoint_file);
    info!("stopped");
    Ok(())
}

/// The Management API's endpoint, as the SDK takes it: the listener and the stage.
fn management_endpoint_url(addr: SocketAddr) -> String {
    format!("http://{addr}/{STAGE}")
}

/// The functions' environment for this host: its table, the tier's
/// DynamoDB, this gateway's Management API (at `management`), the domain's
/// timings, CloudFront's origin secret, and placeholder credentials
/// (nothing local checks them).
fn function_env(
    host: &LambdaHost,
    table: &str,
    management: SocketAddr,
    origin_secret: &str,
) -> Vec<(String, String)> {
    use tether_functions::config::*;
    let d = &host.domain;
    let mut env: Vec<(&str, String)> = vec![
        (TABLE_VAR, table.to_owned()),
        (DYNAMODB_ENDPOINT_VAR, host.tier.dynamodb_endpoint.clone()),
        (MANAGEMENT_ENDPOINT_VAR, management_endpoint_url(management)),
        (TICKET_TTL_VAR, d.ticket_ttl_ms.to_string()),
        (PAIRING_TTL_VAR, d.pairing_ttl_ms.to_string()),
        (HEARTBEAT_VAR, d.heartbeat_ms.to_string()),
        (PRESENCE_TIMEOUT_VAR, d.presence_timeout_ms.to_string()),
        (WORKER_LEASE_VAR, d.worker_lease_ms.to_string()),
        (FRAME_INTERVAL_VAR, d.frame_interval_ms.to_string()),
        (CONNECTION_TTL_VAR, d.connection_ttl_ms.to_string()),
        (ORIGIN_SECRET_VAR, origin_secret.to_owned()),
        ("AWS_REGION", host.tier.region.clone()),
        ("AWS_DEFAULT_REGION", host.tier.region.clone()),
        ("AWS_ACCESS_KEY_ID", "local".into()),
        ("AWS_SECRET_ACCESS_KEY", "local".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    env.push((
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    ));
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Invokes every function once with an event it answers without touching
/// any data, and logs how long each first (cold) invocation took. Then
/// checks that `$connect` and the HTTP API refuse an event without
/// CloudFront's origin header (403), as on AWS a request straight to an
/// `execute-api` endpoint.
async fn warm_up(backend: &LambdaBackend) -> anyhow::Result<()> {
    let functions = backend.functions().clone();
    let api = backend.api().clone();
    let now = now_millis();
    let context = |route: &str, kind: &str| {
        json!({
            "routeKey": route, "eventType": kind, "stage": api.stage,
            "connectedAt": now, "requestTimeEpoch": now,
            "requestId": ConnId::random().as_str(), "domainName": api.domain_name,
            "connectionId": ConnId::random().as_str(), "apiId": api.api_id,
        })
    };
    // No ticket, no credential: refused before any read.
    let bare_connect = json!({"headers": {}, "requestContext": context("$connect", "CONNECT"), "isBase64Encoded": false});
    let mut connect = bare_connect.clone();
    backend.add_origin_header(&mut connect, &super::canonical_header_name(tether_functions::config::ORIGIN_HEADER));
    // A frame that is not JSON: answered before any read.
    let message = json!({"requestContext": context("$default", "MESSAGE"), "body": "warm-up", "isBase64Encoded": false});
    // An unknown connection: nothing to delete.
    let disconnect = json!({"requestContext": context("$disconnect", "DISCONNECT"), "isBase64Encoded": false});
    // No such route.
    let bare_http = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/warm-up", "rawQueryString": "",
        "headers": {},
        "requestContext": {"http": {"method": "GET", "path": "/warm-up"}, "timeEpoch": now, "stage": "$default"},
        "isBase64Encoded": false,
    });
    let mut http = bare_http.clone();
    backend.add_origin_header(&mut http, tether_functions::config::ORIGIN_HEADER);
    for (function, event, expected) in [
        (&functions.connect, connect, 401),
        (&functions.message, message, 200),
        (&functions.disconnect, disconnect, 200),
        (&functions.http, http, 404),
    ] {
        let started = Instant::now();
        let result = backend
            .invoke_within(function, &event, FIRST_INVOKE_TIMEOUT)
            .await
            .with_context(|| format!("warming up {function}"))?;
        let status = result.get("statusCode").and_then(|s| s.as_u64());
        if status != Some(expected) {
            bail!("warming up {function}: expected status {expected}, got {result}");
        }
        info!(
            function = function.as_str(),
            first_invoke_ms = started.elapsed().as_millis() as u64,
            "warm"
        );
    }
    for (function, event) in [(&functions.connect, bare_connect), (&functions.http, bare_http)] {
        let result = backend
            .invoke(function, &event)
            .await
            .with_context(|| format!("checking that {function} refuses a request not through CloudFront"))?;
        if result.get("statusCode").and_then(|s| s.as_u64()) != Some(403) {
            bail!("{function} took a request without CloudFront's origin header: {result}");
        }
    }
    Ok(())
}
