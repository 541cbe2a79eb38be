//! Item operations: one call to DynamoDB each (a strongly consistent
//! `GetItem`, `Query` or `BatchGetItem`, a conditional `PutItem`,
//! `UpdateItem` or `DeleteItem`), its SDK error mapped to the port's.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure, Select,
};
use tether_domain::model::Millis;
use tether_domain::store::{StoreError, StoreResult};

use super::codec::{self, Entity, Item, PK, REV, SK};
use super::keys::Key;
use super::tx::{conditioned, Cond};
use super::{sdk_err, unless_condition_failed, DynamoStore, Retry};

pub(super) fn key_item(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), codec::s(key.pk.as_str())),
        (SK.to_owned(), codec::s(key.sk.as_str())),
    ])
}

/// One `UpdateItem`: `SET`s, `REMOVE`s, `ADD`s and `ADD rev :1`, with a
/// condition.
pub(super) struct Update {
    key: Key,
    set: Vec<(&'static str, AttributeValue)>,
    remove: Vec<&'static str>,
    add: Vec<(&'static str, AttributeValue)>,
    cond: Cond,
}

impl Update {
    pub(super) fn new(key: Key, cond: Cond) -> Self {
        Self {
            key,
            set: Vec::new(),
            remove: Vec::new(),
            add: Vec::new(),
            cond,
        }
    }

    /// `ADD attr :v` (a number is incremented by `v`).
    pub(super) fn add(mut self, attr: &'static str, v: AttributeValue) -> Self {
        self.add.push((attr, v));
        self
    }

    pub(super) fn set(mut self, attr: &'static str, v: AttributeValue) -> Self {
        self.set.push((attr, v));
        self
    }

    pub(super) fn set_opt(self, attr: &'static str, v: Option<AttributeValue>) -> Self {
        match v {
            Some(v) => self.set(attr, v),
            None => self,
        }
    }

    pub(super) fn remove(mut self, attr: &'static str) -> Self {
        self.remove.push(attr);
        self
    }
}

/// A `Query`'s key condition and options.
pub(super) struct QuerySpec {
    pub(super) index: Option<&'static str>,
    pub(super) key_cond: String,
    pub(super) names: Vec<(String, String)>,
    pub(super) values: Vec<(String, AttributeValue)>,
    pub(super) filter: Option<String>,
    pub(super) forward: bool,
    pub(super) limit: Option<u32>,
}

impl QuerySpec {
    /// Items of partition `pk` (on the table).
    pub(super) fn partition(pk: &str) -> Self {
        Self {
            index: None,
            key_cond: "#q_pk = :q_pk".into(),
            names: vec![("#q_pk".into(), PK.into())],
            values: vec![(":q_pk".into(), codec::s(pk))],
            filter: None,
            forward: true,
            limit: None,
        }
    }

    /// Items of partition `pk` whose sort key starts with `prefix`.
    pub(super) fn prefix(pk: &str, prefix: &str) -> Self {
        let mut q = Self::partition(pk);
        q.key_cond.push_str(" AND begins_with(#q_sk, :q_sk)");
        q.names.push(("#q_sk".into(), SK.into()));
        q.values.push((":q_sk".into(), codec::s(prefix)));
        q
    }

    /// Items of partition `pk` whose sort key is in `[from, to]`.
    pub(super) fn between(pk: &str, from: &str, to: &str) -> Self {
        let mut q = Self::partition(pk);
        q.key_cond.push_str(" AND #q_sk BETWEEN :q_from AND :q_to");
        q.names.push(("#q_sk".into(), SK.into()));
        q.values.push((":q_from".into(), codec::s(from)));
        q.values.push((":q_to".into(), codec::s(to)));
        q
    }

    /// Items of partition `pk` whose sort key sorts after `sk`.
    pub(super) fn after(pk: &str, sk: &str) -> Self {
        let mut q = Self::partition(pk);
        q.key_cond.push_str(" AND #q_sk > :q_sk");
        q.names.push(("#q_sk".into(), SK.into()));
        q.values.push((":q_sk".into(), codec::s(sk)));
        q
    }

    pub(super) fn descending(mut self) -> Self {
        self.forward = false;
        self
    }

    pub(super) fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// A filter on attributes, with its placeholders.
    pub(super) fn filter(
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
    pub(super) async fn get(&self, op: &'static str, key: &Key) -> StoreResult<Option<Item>> {
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

    pub(super) async fn get_entity<E: Entity>(
        &self,
        op: &'static str,
        key: &Key,
    ) -> StoreResult<Option<E>> {
        self.get(op, key)
            .await?
            .map(|item| E::from_item(&item))
            .transpose()
    }

    /// A `Query` of `q`'s key condition, filter and placeholders, as
    /// strongly consistent as it can be (a GSI has no strongly consistent
    /// reads).
    fn query_request(&self, q: &QuerySpec) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&*self.table)
            .set_index_name(q.index.map(str::to_owned))
            .key_condition_expression(&q.key_cond)
            .set_filter_expression(q.filter.clone())
            .set_expression_attribute_names(Some(q.names.iter().cloned().collect()))
            .set_expression_attribute_values(Some(q.values.iter().cloned().collect()))
            .consistent_read(q.index.is_none())
    }

    /// The items a query matches, following pages until `limit` (if any).
    pub(super) async fn query(&self, op: &'static str, q: QuerySpec) -> StoreResult<Vec<Item>> {
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
                .query_request(&q)
                .scan_index_forward(q.forward)
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
    pub(super) async fn query_targets(
        &self,
        op: &'static str,
        q: QuerySpec,
    ) -> StoreResult<Vec<String>> {
        self.query(op, q)
            .await?
            .iter()
            .map(codec::target_of)
            .collect()
    }

    /// Strongly consistent reads of many items; missing keys are absent
    /// from the map.
    pub(super) async fn batch_get(
        &self,
        op: &'static str,
        keys: &[Key],
    ) -> StoreResult<HashMap<Key, Item>> {
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
                    found.insert(codec::key_of(&item)?, item);
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
    pub(super) async fn get_many<E: Entity>(
        &self,
        op: &'static str,
        keys: Vec<Key>,
    ) -> StoreResult<Vec<E>> {
        let mut found = self.batch_get(op, &keys).await?;
        keys.iter()
            .filter_map(|k| found.remove(k))
            .map(|item| E::from_item(&item))
            .collect()
    }

    /// An `UpdateItem` returning the new item, or `None` if its condition
    /// failed.
    pub(super) async fn update(&self, op: &'static str, u: Update) -> StoreResult<Option<Item>> {
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
        values.insert(":u_one".into(), codec::n(1));
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
    pub(super) async fn put_if_absent(
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

    pub(super) async fn put(&self, op: &'static str, item: Item) -> StoreResult<()> {
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
    pub(super) async fn delete_returning(
        &self,
        op: &'static str,
        key: &Key,
    ) -> StoreResult<Option<Item>> {
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

    /// Consumes an item: one `DeleteItem` returning the old item, so of two
    /// concurrent takes only one gets it back. `Some` if it had not expired
    /// at `now`.
    pub(super) async fn take<T>(
        &self,
        op: &'static str,
        key: &Key,
        decode: fn(&Item) -> StoreResult<T>,
        expires_at: fn(&T) -> Millis,
        now: Millis,
    ) -> StoreResult<Option<T>> {
        let Some(item) = self.delete_returning(op, key).await? else {
            return Ok(None);
        };
        let value = decode(&item)?;
        Ok((expires_at(&value) > now).then_some(value))
    }

    /// Deletes an item if `cond` holds; true if it did.
    pub(super) async fn delete_if(
        &self,
        op: &'static str,
        key: &Key,
        cond: Cond,
    ) -> StoreResult<bool> {
        let request = self
            .client
            .delete_item()
            .table_name(&*self.table)
            .set_key(Some(key_item(key)));
        let result = conditioned!(request, &cond).send().await;
        Ok(unless_condition_failed(op, result)?.is_some())
    }

    /// `ADD attr :delta` to one item if `cond` holds; true if it did.
    pub(super) async fn add_if(
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
    pub(super) async fn count(&self, op: &'static str, q: QuerySpec) -> StoreResult<u32> {
        let mut total: u32 = 0;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .query_request(&q)
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

    pub(super) async fn put_if(
        &self,
        op: &'static str,
        item: Item,
        cond: Cond,
    ) -> StoreResult<bool> {
        let request = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item));
        let result = conditioned!(request, &cond).send().await;
        Ok(unless_condition_failed(op, result)?.is_some())
    }
}

/// `ADD #u_n :u_d` with the condition's own placeholders.
pub(super) fn add_expression(
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
    values.insert(":u_d".into(), codec::n(delta));
    ("ADD #u_n :u_d".to_owned(), names, values)
}

pub(super) fn build_err(op: &str, e: impl Display) -> StoreError {
    StoreError::Unavailable(format!("{op}: building the request: {e}"))
}
