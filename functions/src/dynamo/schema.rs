//! The table definition, in one place: `DynamoStore::create_tables` creates
//! it (tests, deploy helpers), and `template.yaml` declares the same thing
//! (see `infra/ACCESS_PATTERNS.md`, section 1, and [`TABLE`]).

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use tether_domain::store::{StoreError, StoreResult};

use super::codec::{EXPIRES_AT, EXPIRY_SHARD, PK, SK, TTL};
use super::sdk_err;

/// The names of the store's tables (one, see `infra/ACCESS_PATTERNS.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    /// Every entity, entry, chunk, ticket and connection record.
    pub main: String,
}

impl TableNames {
    /// The table name a deployment uses when nothing else is configured.
    pub const DEFAULT_MAIN: &'static str = "tether";

    /// `<prefix>tether`: separate tables per test, stage or tenant.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            main: format!("{prefix}{}", Self::DEFAULT_MAIN),
        }
    }
}

impl Default for TableNames {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

/// The main table's shape, as data, for templates and docs to be checked
/// against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// `(attribute, type)` of the key: `pk` S HASH, `sk` S RANGE.
    pub hash_key: &'static str,
    pub range_key: &'static str,
    /// The one GSI: name, hash key (S), range key (N), projection KEYS_ONLY.
    pub gsi_name: &'static str,
    pub gsi_hash_key: &'static str,
    pub gsi_range_key: &'static str,
    /// The TTL attribute (epoch seconds).
    pub ttl_attribute: &'static str,
}

/// The main table: on demand, key `pk`/`sk` (strings), the sparse
/// `expiry` GSI (`expiry_shard` S / `expires_at` N, keys only) that
/// `purge_expired` reads, TTL on `ttl`.
pub const TABLE: TableSpec = TableSpec {
    hash_key: PK,
    range_key: SK,
    gsi_name: EXPIRY_INDEX,
    gsi_hash_key: EXPIRY_SHARD,
    gsi_range_key: EXPIRES_AT,
    ttl_attribute: TTL,
};

pub(super) const EXPIRY_INDEX: &str = "expiry";

fn build_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn attr(name: &str, ty: ScalarAttributeType) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ty)
        .build()
        .map_err(|e| build_err("attribute definition", e))
}

fn key(name: &str, ty: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(ty)
        .build()
        .map_err(|e| build_err("key schema", e))
}

/// Creates the tables if they do not exist, waits until they are active,
/// and turns TTL on. Safe to run again.
pub(super) async fn create_tables(client: &Client, names: &TableNames) -> StoreResult<()> {
    let table = names.main.as_str();
    let expiry = GlobalSecondaryIndex::builder()
        .index_name(EXPIRY_INDEX)
        .key_schema(key(EXPIRY_SHARD, KeyType::Hash)?)
        .key_schema(key(EXPIRES_AT, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| build_err("expiry index", e))?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(SK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(EXPIRY_SHARD, ScalarAttributeType::S)?)
        .attribute_definitions(attr(EXPIRES_AT, ScalarAttributeType::N)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(expiry)
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(table, "created table"),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            tracing::debug!(table, "table exists");
        }
        Err(e) => return Err(sdk_err("create table", e)),
    }
    wait_until_active(client, table).await?;

    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_err("describe time to live", e))?;
    let enabled = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        .is_some_and(|a| a == TTL);
    if !enabled {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL)
                    .build()
                    .map_err(|e| build_err("time to live", e))?,
            )
            .send()
            .await
            .map_err(|e| sdk_err("enable time to live", e))?;
    }
    Ok(())
}

async fn wait_until_active(client: &Client, table: &str) -> StoreResult<()> {
    // DynamoDB takes seconds to a minute; moto is immediate.
    for _ in 0..240 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_err("describe table", e))?;
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StoreError::Unavailable(format!(
        "table {table} did not become active in two minutes"
    )))
}
