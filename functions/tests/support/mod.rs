//! What the tests against moto share: the moto server of this test
//! process and a DynamoDB client that sends it one request at a time.
//!
//! Moto: `TETHER_MOTO_URL` names a running server (shared with other test
//! binaries; every check uses tables of its own, so none resets it).
//! Otherwise the first use starts `moto_server` on a free loopback port, from
//! `$TETHER_MOTO_BIN`, `$HOME/.cache/tether/venv/bin/moto_server` or `PATH`,
//! and the server goes when the test process does. No moto is a failure,
//! never a skip: `scripts/test` installs it (`scripts/install-moto`).
//!
//! Requests go to moto one at a time (see [`OneAtATime`]): moto serves
//! requests on threads without a lock, and its transactions are not
//! isolated (a cancelled one restores a copy of the whole table, undoing
//! what other requests wrote meanwhile). DynamoDB makes each request
//! atomic, and one-at-a-time requests are exactly that; concurrent checks
//! still interleave their requests.

#![allow(dead_code, reason = "each test binary uses its own part")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tether_functions::dynamo::https_client;
use tether_functions::{DynamoStore, TableNames};
use tether_testsupport::moto;

// ---------------------------------------------------------------------------
// Moto
// ---------------------------------------------------------------------------

static MOTO: OnceLock<moto::Moto> = OnceLock::new();

pub fn moto_url() -> &'static str {
    &MOTO.get_or_init(moto::start).url
}

// ---------------------------------------------------------------------------
// A client that sends one request at a time
// ---------------------------------------------------------------------------

/// Shared by every client of this process, so that all requests to moto
/// are serialised.
static TURN: LazyLock<Arc<tokio::sync::Mutex<()>>> =
    LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));

/// Wraps the store's own HTTP client; each request waits for its turn and
/// holds it until the response arrives (moto answers after it has applied
/// the request in full).
#[derive(Debug)]
struct OneAtATime {
    inner: SharedHttpClient,
    tap: Option<Arc<Tap>>,
}

/// Records the DynamoDB calls of a client: operation (`X-Amz-Target`
/// without the version prefix) and request body.
#[derive(Debug, Default)]
pub struct Tap {
    calls: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
}

impl Tap {
    /// Takes the calls recorded so far.
    pub fn take(&self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl HttpClient for OneAtATime {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(OneAtATimeConnector {
            inner: self.inner.http_connector(settings, components),
            tap: self.tap.clone(),
        })
    }
}

#[derive(Debug)]
struct OneAtATimeConnector {
    inner: SharedHttpConnector,
    tap: Option<Arc<Tap>>,
}

impl HttpConnector for OneAtATimeConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if let Some(tap) = &self.tap {
            let op = request
                .headers()
                .get("x-amz-target")
                .unwrap_or_default()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned();
            let body = request.body().bytes().unwrap_or_default().to_vec();
            tap.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((op, body));
        }
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            let _turn = Arc::clone(&TURN).lock_owned().await;
            inner.call(request).await
        })
    }
}

pub fn client() -> Client {
    client_with(None)
}

/// A client whose calls `tap` records.
pub fn tapped_client(tap: Arc<Tap>) -> Client {
    client_with(Some(tap))
}

fn client_with(tap: Option<Arc<Tap>>) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(moto_url())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .http_client(SharedHttpClient::new(OneAtATime {
            inner: https_client(),
            tap,
        }))
        .build();
    Client::from_conf(config)
}

/// Table names no other check or test binary uses.
pub fn fresh_names() -> TableNames {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tag = tether_domain::auth::random_base32(8);
    TableNames::with_prefix(&format!("t{}-{tag}-{n}-", std::process::id()))
}

/// A store on tables of its own.
pub async fn fresh_store(client: &Client) -> DynamoStore {
    let names = fresh_names();
    DynamoStore::create_tables(client, &names)
        .await
        .expect("create tables");
    DynamoStore::new(client.clone(), names)
}
