//! What the Lambda binaries do once per cold start: logging, the
//! configuration, the AWS clients. The binaries themselves only pick a
//! handler and an event type.

use std::sync::Arc;
use std::time::Instant;

use aws_config::SdkConfig;
use tracing::info;

use crate::config::{ConfigError, FunctionConfig};
use crate::handlers::Deps;
use crate::push::{ManagementApi, NoPush};
use crate::{DynamoStore, TableNames};

/// A cold start that could not finish: the function exits before taking
/// its first event, and Lambda reports the init error with this message.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The deps of the WebSocket API's functions.
pub type WebSocketDeps = Deps<DynamoStore, Arc<ManagementApi>>;
/// The deps of the HTTP API's function (it pushes nothing).
pub type HttpDeps = Deps<DynamoStore, NoPush>;

/// The start of a cold start: sets up logging (Lambda's log level and
/// format variables, else `RUST_LOG`) and starts the clock.
pub struct ColdStart {
    started: Instant,
    function: &'static str,
}

impl ColdStart {
    pub fn begin(function: &'static str) -> Self {
        lambda_runtime::tracing::init_default_subscriber();
        Self {
            started: Instant::now(),
            function,
        }
    }

    /// Logs how long the cold start took (config and clients; Lambda's
    /// `Init Duration` adds loading the binary).
    pub fn ready(self) {
        let init_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        info!(function = self.function, init_ms = format!("{init_ms:.1}"), "ready");
    }
}

/// The configuration and the shared SDK settings (region, credentials, the
/// rustls-on-ring HTTP client).
async fn load() -> Result<(FunctionConfig, SdkConfig), StartError> {
    let config = FunctionConfig::from_env()?;
    Ok((config, crate::dynamo::sdk_config().await))
}

fn store(config: &FunctionConfig, sdk: &SdkConfig) -> DynamoStore {
    let client = crate::dynamo::client(sdk, config.dynamodb_endpoint.as_deref());
    DynamoStore::new(
        client,
        TableNames {
            main: config.table.clone(),
        },
    )
}

/// `$disconnect` and the message routes: the store and the Management API.
/// (API Gateway invokes them only for connections `$connect` accepted, so
/// they need no origin secret.)
pub async fn websocket_deps() -> Result<WebSocketDeps, StartError> {
    let (config, sdk) = load().await?;
    Ok(websocket_deps_from(config, sdk))
}

/// `$connect`: as [`websocket_deps`], and CloudFront's origin secret
/// (`TETHER_ORIGIN_SECRET`), without which it does not start.
pub async fn connect_deps() -> Result<WebSocketDeps, StartError> {
    let (config, sdk) = load().await?;
    let secret = config.require_origin_secret()?;
    Ok(websocket_deps_from(config, sdk).with_origin_secret(secret))
}

fn websocket_deps_from(config: FunctionConfig, sdk: SdkConfig) -> WebSocketDeps {
    let store = store(&config, &sdk);
    let pushes = ManagementApi::new(
        sdk,
        config.management_endpoint.as_deref(),
        config.push_concurrency,
    );
    info!(
        table = %config.table,
        management_endpoint = config.management_endpoint.as_deref().unwrap_or("from each event"),
        origin_secret = config.origin_secret.is_some(),
        "configured"
    );
    Deps::new(store, Arc::new(pushes), config.domain)
}

/// The HTTP API: the store and CloudFront's origin secret
/// (`TETHER_ORIGIN_SECRET`), without which it does not start.
pub async fn http_deps() -> Result<HttpDeps, StartError> {
    let (config, sdk) = load().await?;
    let secret = config.require_origin_secret()?;
    let store = store(&config, &sdk);
    info!(table = %config.table, origin_secret = true, "configured");
    Ok(Deps::new(store, NoPush, config.domain).with_origin_secret(secret))
}
