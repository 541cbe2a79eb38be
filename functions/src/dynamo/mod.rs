//! `DynamoStore`: the store port on one DynamoDB table.
//!
//! The design (items, entries, which operation serves which method, and
//! why every read is strongly consistent) is `infra/ACCESS_PATTERNS.md`.
//! In short: an entity is one item plus *entries* (small items that stand
//! in for SQL's unique and partial indexes), and every write that changes an
//! entry is one transaction with the entity, conditional on the entity's
//! revision (`rev`) or absence. Writes that change no entry are single
//! conditional item writes. Lists are a strongly consistent `Query` over
//! entries and a strongly consistent `BatchGetItem`: no Scan, no GSI on a
//! request path.
//!
//! Nothing from the SDK crosses the port: its errors become [`StoreError`]s.
//!
//! - `port.rs`: `impl Store`, each method in the file of its aggregate, as
//!   in the SQLite store: `users.rs`, `workers.rs`, `connections.rs`,
//!   `sessions.rs`, `messages.rs`.
//! - `items.rs`: each entity as its item and entries; `codec.rs`: attribute
//!   names, an item's builder and reader, the `Entity` every one is;
//!   `keys.rs`: the keys.
//! - `tx.rs`: conditions and transactions, the writes of an entity with its
//!   entries; `ops.rs`: the single item operations.
//! - `schema.rs`: the table; this file: the store, its client, retries.

mod codec;
mod connections;
mod items;
mod keys;
mod messages;
mod ops;
mod port;
mod schema;
mod sessions;
#[cfg(test)]
mod tests;
mod tx;
mod users;
mod workers;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::Client;
use rand::Rng;
use tether_domain::store::{StoreError, StoreResult};

pub use schema::{TableNames, TableSpec, TABLE};

/// The store port on DynamoDB. Clones share one client.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
}

impl Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// A store on existing tables (see [`DynamoStore::create_tables`]).
    pub fn new(client: Client, tables: TableNames) -> Self {
        Self {
            client,
            table: tables.main.into(),
        }
    }

    /// Creates the store's tables (as `template.yaml` declares them) if
    /// they do not exist, waits until they are active and enables TTL.
    /// Running it again changes nothing.
    pub async fn create_tables(client: &Client, tables: &TableNames) -> StoreResult<()> {
        schema::create_tables(client, tables).await
    }

    /// The table this store reads and writes.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// An HTTPS client on rustls with the `ring` provider (no C toolchain
/// beyond ring's, unlike the SDK's default aws-lc). It also speaks plain
/// HTTP, for local endpoints.
pub fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK's settings from the environment, as the SDK reads them (region,
/// credentials), with [`https_client`].
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// A DynamoDB client on `sdk`'s settings, at `endpoint` if given (a local
/// DynamoDB-compatible server) or AWS's otherwise. The one way the
/// functions, `tether-admin` and the test bed make one.
pub fn client(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

// ---------------------------------------------------------------------------
// Errors and retries
// ---------------------------------------------------------------------------

/// An SDK failure as the port's `Unavailable`, with the service's message.
pub(crate) fn sdk_err<E, R>(op: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: Debug + 'static,
{
    let err = StoreError::Unavailable(format!("{op}: {}", DisplayErrorContext(&e)));
    tracing::warn!(op, error = %err, "dynamodb call failed");
    err
}

/// A conditional write's result: `Some` if it was applied, `None` if its
/// condition did not hold; any other failure is an error.
fn unless_condition_failed<T, E, R>(
    op: &str,
    result: Result<T, SdkError<E, R>>,
) -> StoreResult<Option<T>>
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: Debug + 'static,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if e.as_service_error().and_then(|s| s.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(None)
        }
        Err(e) => Err(sdk_err(op, e)),
    }
}

/// How often a read-modify-write is tried before giving up.
const MAX_ATTEMPTS: u32 = 50;

/// Jittered exponential backoff between the attempts of one
/// read-modify-write whose condition another writer broke.
struct Retry {
    op: &'static str,
    attempt: u32,
}

impl Retry {
    fn new(op: &'static str) -> Self {
        Self { op, attempt: 0 }
    }

    /// Waits before the next attempt, or gives up.
    async fn again(&mut self) -> StoreResult<()> {
        self.attempt += 1;
        if self.attempt >= MAX_ATTEMPTS {
            let err = StoreError::Unavailable(format!(
                "{}: gave up after {MAX_ATTEMPTS} attempts; other writers kept changing the record",
                self.op
            ));
            tracing::warn!(op = self.op, "too much contention");
            return Err(err);
        }
        let cap_ms = (2u64 << self.attempt.min(6)).min(100);
        let pause = rand::rng().random_range(0..=cap_ms * 1000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
        Ok(())
    }
}
