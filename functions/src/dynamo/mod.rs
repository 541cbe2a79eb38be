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

mod connections;
mod items;
mod keys;
mod messages;
mod port;
mod schema;
mod sessions;
mod tx;
mod users;
mod workers;

use std::collections::{HashMap, HashSet};
use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem, Update as TxUpdate,
};
use aws_sdk_dynamodb::Client;
use rand::Rng;
use tether_domain::store::{StoreError, StoreResult};

use items::{Entity, Item, PK, REV, SK};
use keys::Key;

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

/// DynamoDB's limit on the actions of one `TransactWriteItems`.
const MAX_TX_ACTIONS: usize = 100;

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

// ---------------------------------------------------------------------------
// Conditions and transactions
// ---------------------------------------------------------------------------

/// A condition on one item write, with its own placeholders.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cond {
    expr: String,
    names: Vec<(String, String)>,
    values: Vec<(String, AttributeValue)>,
}

impl Cond {
    /// No condition.
    fn none() -> Self {
        Self::default()
    }

    fn new(expr: impl Into<String>) -> Self {
        Self {
            expr: expr.into(),
            ..Self::default()
        }
    }

    fn name(mut self, placeholder: &str, attr: &str) -> Self {
        self.names.push((placeholder.into(), attr.into()));
        self
    }

    fn value(mut self, placeholder: &str, v: AttributeValue) -> Self {
        self.values.push((placeholder.into(), v));
        self
    }

    /// The item does not exist.
    fn absent() -> Self {
        Self::new("attribute_not_exists(#c_pk)").name("#c_pk", PK)
    }

    /// The item exists.
    fn exists() -> Self {
        Self::new("attribute_exists(#c_pk)").name("#c_pk", PK)
    }

    /// The item is at revision `rev`.
    fn rev(rev: u64) -> Self {
        Self::new("#c_rev = :c_rev")
            .name("#c_rev", REV)
            .value(":c_rev", items::n(rev))
    }

    fn is_none(&self) -> bool {
        self.expr.is_empty()
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.iter().cloned().collect())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.iter().cloned().collect())
    }

    fn expression(&self) -> Option<String> {
        (!self.is_none()).then(|| self.expr.clone())
    }
}

enum Action {
    Put(Item, Cond),
    Delete(Key, Cond),
    /// `ADD` a number to one attribute (a counter; the item is made if
    /// missing), if the condition holds.
    Add(Key, &'static str, i64, Cond),
}

/// The item writes of one transaction, in order; outcomes are reported by
/// index.
#[derive(Default)]
struct Tx {
    actions: Vec<Action>,
}

/// Where an entity's writes landed in a [`Tx`].
struct Placed {
    /// The entity item's own action (`None` if it did not change).
    item: Option<usize>,
    /// The puts of unique entries, whose failure is a `Conflict`.
    unique: Vec<usize>,
}

impl Tx {
    fn put(&mut self, item: Item, cond: Cond) -> usize {
        self.actions.push(Action::Put(item, cond));
        self.actions.len() - 1
    }

    fn delete(&mut self, key: Key, cond: Cond) -> usize {
        self.actions.push(Action::Delete(key, cond));
        self.actions.len() - 1
    }

    /// Moves counter `attr` of the item at `key` by `delta`; with `below`,
    /// only while the counter (absent: 0) is below it (the action then
    /// fails its condition, and the transaction with it).
    fn count(&mut self, key: Key, attr: &'static str, delta: i64, below: Option<u32>) -> usize {
        let cond = match below {
            Some(cap) => Cond::new("attribute_not_exists(#c_n) OR #c_n < :c_cap")
                .name("#c_n", attr)
                .value(":c_cap", items::n(cap)),
            None => Cond::none(),
        };
        self.actions.push(Action::Add(key, attr, delta, cond));
        self.actions.len() - 1
    }

    /// Writes `new` over `old` (either may be absent: insert, delete):
    /// the item, conditional on `old`'s revision (or on absence), plus the
    /// entries `old` had and `new` lacks (deleted) and the entries `new` has
    /// that `old` lacks or had otherwise (put; unique ones only if absent).
    fn entity<E: Entity>(&mut self, old: Option<&E>, new: Option<&E>) -> StoreResult<Placed> {
        let item = match (old, new) {
            (None, Some(new)) => Some(self.put(new.to_item(1)?, Cond::absent())),
            (Some(old), Some(new)) => {
                Some(self.put(new.to_item(old.rev() + 1)?, Cond::rev(old.rev())))
            }
            (Some(old), None) => Some(self.delete(old.key(), Cond::rev(old.rev()))),
            (None, None) => None,
        };
        let old_entries = old.map(E::entries).unwrap_or_default();
        let new_entries = new.map(E::entries).unwrap_or_default();
        let new_keys: HashSet<&Key> = new_entries.iter().map(|e| &e.key).collect();
        for gone in old_entries.iter().filter(|e| !new_keys.contains(&e.key)) {
            self.delete(gone.key.clone(), Cond::none());
        }
        let mut unique = Vec::new();
        for e in new_entries {
            match old_entries.iter().find(|o| o.key == e.key) {
                Some(o) if o.item == e.item => {}
                Some(_) => {
                    self.put(e.item, Cond::none());
                }
                None if e.unique => unique.push(self.put(e.item, Cond::absent())),
                None => {
                    self.put(e.item, Cond::none());
                }
            }
        }
        Ok(Placed { item, unique })
    }
}

/// Why one action of a cancelled transaction failed.
#[derive(Clone, Debug, PartialEq)]
enum Reason {
    /// Not the reason (or the action was fine).
    Fine,
    /// Its condition did not hold.
    Condition,
    /// Lost to a concurrent transaction, or throttled: try again.
    Busy,
}

enum Outcome {
    Done,
    Cancelled(Vec<Reason>),
}

impl Outcome {
    fn failed(&self, index: Option<usize>) -> bool {
        match (self, index) {
            (Outcome::Cancelled(reasons), Some(i)) => reasons.get(i) == Some(&Reason::Condition),
            _ => false,
        }
    }

    fn any_failed(&self, indexes: &[usize]) -> bool {
        indexes.iter().any(|i| self.failed(Some(*i)))
    }
}

fn cond_expr<B>(
    b: B,
    cond: &Cond,
    set: impl Fn(
        B,
        Option<String>,
        Option<HashMap<String, String>>,
        Option<HashMap<String, AttributeValue>>,
    ) -> B,
) -> B {
    set(b, cond.expression(), cond.names(), cond.values())
}

// ---------------------------------------------------------------------------
// Item operations
// ---------------------------------------------------------------------------

fn key_item(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), items::s(key.pk.as_str())),
        (SK.to_owned(), items::s(key.sk.as_str())),
    ])
}

/// One `UpdateItem`: `SET`s, `REMOVE`s, `ADD`s and `ADD rev :1`, with a
/// condition.
struct Update {
    key: Key,
    set: Vec<(&'static str, AttributeValue)>,
    remove: Vec<&'static str>,
    add: Vec<(&'static str, AttributeValue)>,
    cond: Cond,
}

impl Update {
    fn new(key: Key, cond: Cond) -> Self {
        Self {
            key,
            set: Vec::new(),
            remove: Vec::new(),
            add: Vec::new(),
            cond,
        }
    }

    /// `ADD attr :v` (a number is incremented by `v`).
    fn add(mut self, attr: &'static str, v: AttributeValue) -> Self {
        self.add.push((attr, v));
        self
    }

    fn set(mut self, attr: &'static str, v: AttributeValue) -> Self {
        self.set.push((attr, v));
        self
    }

    fn set_opt(self, attr: &'static str, v: Option<AttributeValue>) -> Self {
        match v {
            Some(v) => self.set(attr, v),
            None => self,
        }
    }

    fn remove(mut self, attr: &'static str) -> Self {
        self.remove.push(attr);
        self
    }
}

/// A `Query`'s key condition and options.
struct QuerySpec {
    index: Option<&'static str>,
    key_cond: String,
    names: Vec<(String, String)>,
    values: Vec<(String, AttributeValue)>,
    filter: Option<String>,
    forward: bool,
    limit: Option<u32>,
}

impl QuerySpec {
    /// Items of partition `pk` (on the table).
    fn partition(pk: &str) -> Self {
        Self {
            index: None,
            key_cond: "#q_pk = :q_pk".into(),
            names: vec![("#q_pk".into(), PK.into())],
            values: vec![(":q_pk".into(), items::s(pk))],
            filter: None,
            forward: true,
            limit: None,
        }
    }

    /// Items of partition `pk` whose sort key starts with `prefix`.
    fn prefix(pk: &str, prefix: &str) -> Self {
        let mut q = Self::partition(pk);
        q.key_cond.push_str(" AND begins_with(#q_sk, :q_sk)");
        q.names.push(("#q_sk".into(), SK.into()));
        q.values.push((":q_sk".into(), items::s(prefix)));
        q
    }

    /// Items of partition `pk` whose sort key is in `[from, to]`.
    fn between(pk: &str, from: &str, to: &str) -> Self {
        let mut q = Self::partition(pk);
        q.key_cond.push_str(" AND #q_sk BETWEEN :q_from AND :q_to");
        q.names.push(("#q_sk".into(), SK.into()));
        q.values.push((":q_from".into(), items::s(from)));
        q.values.push((":q_to".into(), items::s(to)));
        q
    }

    /// Items of partition `pk` whose sort key sorts after `sk`.
    fn after(pk: &str, sk: &str) -> Self {
        let mut q = Self::partition(pk);
        q.key_cond.push_str(" AND #q_sk > :q_sk");
        q.names.push(("#q_sk".into(), SK.into()));
        q.values.push((":q_sk".into(), items::s(sk)));
        q
    }

    fn descending(mut self) -> Self {
        self.forward = false;
        self
    }

    fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// A filter on attributes, with its placeholders.
    fn filter(
        mut self,
        expr: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Self {
        self.filter = Some(expr.into());
        self.names.extend(
            names
                .iter()
                .map(|(p, a)| ((*p).to_owned(), (*a).to_owned())),
        );
        self.values
            .extend(values.into_iter().map(|(p, v)| (p.to_owned(), v)));
        self
    }
}

impl DynamoStore {
    async fn get(&self, op: &'static str, key: &Key) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(key_item(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err(op, e))?;
        Ok(out.item)
    }

    async fn get_entity<E: Entity>(&self, op: &'static str, key: &Key) -> StoreResult<Option<E>> {
        self.get(op, key)
            .await?
            .map(|item| E::from_item(&item))
            .transpose()
    }

    /// The items a query matches, following pages until `limit` (if any).
    async fn query(&self, op: &'static str, q: QuerySpec) -> StoreResult<Vec<Item>> {
        if q.limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut out: Vec<Item> = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page_limit = q
                .limit
                .map(|l| i32::try_from(l as usize - out.len()).unwrap_or(i32::MAX));
            let page = self
                .client
                .query()
                .table_name(&*self.table)
                .set_index_name(q.index.map(str::to_owned))
                .key_condition_expression(&q.key_cond)
                .set_filter_expression(q.filter.clone())
                .set_expression_attribute_names(Some(q.names.iter().cloned().collect()))
                .set_expression_attribute_values(Some(q.values.iter().cloned().collect()))
                .scan_index_forward(q.forward)
                // A GSI has no strongly consistent reads.
                .consistent_read(q.index.is_none())
                .set_limit(page_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err(op, e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(next) if q.limit.is_none_or(|l| out.len() < l as usize) => start = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The ids that the entries of a query point at, in the query's order.
    async fn query_targets(&self, op: &'static str, q: QuerySpec) -> StoreResult<Vec<String>> {
        self.query(op, q)
            .await?
            .iter()
            .map(items::target_of)
            .collect()
    }

    /// Strongly consistent reads of many items; missing keys are absent
    /// from the map.
    async fn batch_get(&self, op: &'static str, keys: &[Key]) -> StoreResult<HashMap<Key, Item>> {
        let mut found = HashMap::new();
        let unique: Vec<&Key> = {
            let mut seen = HashSet::new();
            keys.iter().filter(|k| seen.insert(*k)).collect()
        };
        for batch in unique.chunks(100) {
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(batch.iter().map(|k| key_item(k)).collect()))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Unavailable(format!("{op}: {e}")))?,
            );
            let mut retry = Retry::new(op);
            while let Some(req) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&*self.table, req)
                    .send()
                    .await
                    .map_err(|e| sdk_err(op, e))?;
                for item in out.responses.unwrap_or_default().into_values().flatten() {
                    found.insert(items::key_of(&item)?, item);
                }
                request = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&*self.table))
                    .filter(|r| !r.keys().is_empty());
                if request.is_some() {
                    retry.again().await?;
                }
            }
        }
        Ok(found)
    }

    /// The entities at `keys`, in that order, skipping missing ones.
    async fn get_many<E: Entity>(&self, op: &'static str, keys: Vec<Key>) -> StoreResult<Vec<E>> {
        let mut found = self.batch_get(op, &keys).await?;
        keys.iter()
            .filter_map(|k| found.remove(k))
            .map(|item| E::from_item(&item))
            .collect()
    }

    /// An `UpdateItem` returning the new item, or `None` if its condition
    /// failed.
    async fn update(&self, op: &'static str, u: Update) -> StoreResult<Option<Item>> {
        let mut names: HashMap<String, String> = u.cond.names.iter().cloned().collect();
        let mut values: HashMap<String, AttributeValue> = u.cond.values.iter().cloned().collect();
        let mut sets = Vec::new();
        for (i, (attr, v)) in u.set.into_iter().enumerate() {
            names.insert(format!("#u_s{i}"), attr.to_owned());
            values.insert(format!(":u_s{i}"), v);
            sets.push(format!("#u_s{i} = :u_s{i}"));
        }
        let mut expr = String::new();
        if !sets.is_empty() {
            expr.push_str(&format!("SET {} ", sets.join(", ")));
        }
        if !u.remove.is_empty() {
            let removes: Vec<String> = u
                .remove
                .iter()
                .enumerate()
                .map(|(i, attr)| {
                    names.insert(format!("#u_r{i}"), (*attr).to_owned());
                    format!("#u_r{i}")
                })
                .collect();
            expr.push_str(&format!("REMOVE {} ", removes.join(", ")));
        }
        names.insert("#u_rev".into(), REV.into());
        values.insert(":u_one".into(), items::n(1));
        expr.push_str("ADD #u_rev :u_one");
        for (i, (attr, v)) in u.add.into_iter().enumerate() {
            names.insert(format!("#u_a{i}"), attr.to_owned());
            values.insert(format!(":u_a{i}"), v);
            expr.push_str(&format!(", #u_a{i} :u_a{i}"));
        }
        let result = self
            .client
            .update_item()
            .table_name(&*self.table)
            .set_key(Some(key_item(&u.key)))
            .update_expression(expr)
            .set_condition_expression(u.cond.expression())
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        Ok(unless_condition_failed(op, result)?.map(|out| out.attributes.unwrap_or_default()))
    }

    /// Puts `item` unless its key exists; `Err` carries what is stored.
    async fn put_if_absent(
        &self,
        op: &'static str,
        item: Item,
    ) -> StoreResult<Result<(), Option<Item>>> {
        let cond = Cond::absent();
        let result = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .set_condition_expression(cond.expression())
            .set_expression_attribute_names(cond.names())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) => match e.as_service_error() {
                Some(s) if s.is_conditional_check_failed_exception() => {
                    let old = match s {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                            c.item().cloned()
                        }
                        _ => None,
                    };
                    Ok(Err(old))
                }
                _ => Err(sdk_err(op, e)),
            },
        }
    }

    async fn put(&self, op: &'static str, item: Item) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_err(op, e))?;
        Ok(())
    }

    /// Deletes an item; returns what was stored.
    async fn delete_returning(&self, op: &'static str, key: &Key) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .delete_item()
            .table_name(&*self.table)
            .set_key(Some(key_item(key)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_err(op, e))?;
        Ok(out.attributes)
    }

    /// Deletes an item if `cond` holds; true if it did.
    async fn delete_if(&self, op: &'static str, key: &Key, cond: Cond) -> StoreResult<bool> {
        let result = self
            .client
            .delete_item()
            .table_name(&*self.table)
            .set_key(Some(key_item(key)))
            .set_condition_expression(cond.expression())
            .set_expression_attribute_names(cond.names())
            .set_expression_attribute_values(cond.values())
            .send()
            .await;
        Ok(unless_condition_failed(op, result)?.is_some())
    }

    /// Runs the writes of `tx` atomically. One action goes as a plain
    /// conditional write (half the cost of a transaction).
    async fn commit(&self, op: &'static str, tx: Tx) -> StoreResult<Outcome> {
        let mut actions = tx.actions;
        match actions.len() {
            0 => return Ok(Outcome::Done),
            1 => {
                let done = match actions.pop() {
                    Some(Action::Put(item, cond)) => self.put_if(op, item, cond).await?,
                    Some(Action::Delete(key, cond)) => self.delete_if(op, &key, cond).await?,
                    Some(Action::Add(key, attr, delta, cond)) => {
                        self.add_if(op, &key, attr, delta, cond).await?
                    }
                    None => true,
                };
                return Ok(if done {
                    Outcome::Done
                } else {
                    Outcome::Cancelled(vec![Reason::Condition])
                });
            }
            _ => {}
        }
        let count = actions.len();
        if count > MAX_TX_ACTIONS {
            let err = StoreError::Unavailable(format!(
                "{op}: {count} item writes exceed DynamoDB's {MAX_TX_ACTIONS} per transaction"
            ));
            tracing::warn!(op, error = %err, "transaction too large");
            return Err(err);
        }
        let mut items = Vec::with_capacity(count);
        for action in actions {
            items.push(self.transact_item(op, action)?);
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Outcome::Done),
            Err(e) => e,
        };
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
        match err.as_service_error() {
            Some(E::TransactionCanceledException(c)) => {
                let mut reasons = vec![Reason::Fine; count];
                for (i, r) in c.cancellation_reasons().iter().enumerate().take(count) {
                    reasons[i] = match r.code() {
                        None | Some("None") => Reason::Fine,
                        Some("ConditionalCheckFailed") => Reason::Condition,
                        Some(
                            "TransactionConflict"
                            | "ThrottlingError"
                            | "ProvisionedThroughputExceeded"
                            | "RequestLimitExceeded",
                        ) => Reason::Busy,
                        Some(other) => {
                            let msg = r.message().unwrap_or_default();
                            let err = StoreError::Unavailable(format!(
                                "{op}: transaction action {i} failed: {other}: {msg}"
                            ));
                            tracing::warn!(op, error = %err, "dynamodb transaction refused");
                            return Err(err);
                        }
                    };
                }
                Ok(Outcome::Cancelled(reasons))
            }
            Some(E::TransactionInProgressException(_)) => {
                Ok(Outcome::Cancelled(vec![Reason::Busy; count]))
            }
            _ => Err(sdk_err(op, err)),
        }
    }

    /// `ADD attr :delta` to one item if `cond` holds; true if it did.
    async fn add_if(
        &self,
        op: &'static str,
        key: &Key,
        attr: &'static str,
        delta: i64,
        cond: Cond,
    ) -> StoreResult<bool> {
        let (expr, names, values) = add_expression(attr, delta, &cond);
        let result = self
            .client
            .update_item()
            .table_name(&*self.table)
            .set_key(Some(key_item(key)))
            .update_expression(expr)
            .set_condition_expression(cond.expression())
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        Ok(unless_condition_failed(op, result)?.is_some())
    }

    /// How many items a query matches (`Select=COUNT`, all pages). Read
    /// units are still those of the items read, before any filter.
    async fn count(&self, op: &'static str, q: QuerySpec) -> StoreResult<u32> {
        let mut total: u32 = 0;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&*self.table)
                .set_index_name(q.index.map(str::to_owned))
                .key_condition_expression(&q.key_cond)
                .set_filter_expression(q.filter.clone())
                .set_expression_attribute_names(Some(q.names.iter().cloned().collect()))
                .set_expression_attribute_values(Some(q.values.iter().cloned().collect()))
                .consistent_read(q.index.is_none())
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err(op, e))?;
            total = total.saturating_add(u32::try_from(page.count).unwrap_or(0));
            match page.last_evaluated_key {
                Some(next) => start = Some(next),
                None => return Ok(total),
            }
        }
    }

    async fn put_if(&self, op: &'static str, item: Item, cond: Cond) -> StoreResult<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .set_condition_expression(cond.expression())
            .set_expression_attribute_names(cond.names())
            .set_expression_attribute_values(cond.values())
            .send()
            .await;
        Ok(unless_condition_failed(op, result)?.is_some())
    }

    fn transact_item(&self, op: &str, action: Action) -> StoreResult<TransactWriteItem> {
        let built = match action {
            Action::Put(item, cond) => {
                let put = cond_expr(
                    Put::builder().table_name(&*self.table).set_item(Some(item)),
                    &cond,
                    |b, e, n, v| {
                        b.set_condition_expression(e)
                            .set_expression_attribute_names(n)
                            .set_expression_attribute_values(v)
                    },
                )
                .build()
                .map_err(|e| build_err(op, e))?;
                TransactWriteItem::builder().put(put).build()
            }
            Action::Delete(key, cond) => {
                let delete = cond_expr(
                    Delete::builder()
                        .table_name(&*self.table)
                        .set_key(Some(key_item(&key))),
                    &cond,
                    |b, e, n, v| {
                        b.set_condition_expression(e)
                            .set_expression_attribute_names(n)
                            .set_expression_attribute_values(v)
                    },
                )
                .build()
                .map_err(|e| build_err(op, e))?;
                TransactWriteItem::builder().delete(delete).build()
            }
            Action::Add(key, attr, delta, cond) => {
                let (expr, names, values) = add_expression(attr, delta, &cond);
                let update = TxUpdate::builder()
                    .table_name(&*self.table)
                    .set_key(Some(key_item(&key)))
                    .update_expression(expr)
                    .set_condition_expression(cond.expression())
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(|e| build_err(op, e))?;
                TransactWriteItem::builder().update(update).build()
            }
        };
        Ok(built)
    }
}

/// `ADD #u_n :u_d` with the condition's own placeholders.
fn add_expression(
    attr: &'static str,
    delta: i64,
    cond: &Cond,
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut names = cond.names().unwrap_or_default();
    let mut values = cond.values().unwrap_or_default();
    names.insert("#u_n".into(), attr.to_owned());
    values.insert(":u_d".into(), items::n(delta));
    ("ADD #u_n :u_d".to_owned(), names, values)
}

fn build_err(op: &str, e: impl Display) -> StoreError {
    StoreError::Unavailable(format!("{op}: building the request: {e}"))
}
