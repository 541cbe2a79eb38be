//! Writes of an entity with its entries: one transaction, conditional on
//! the entity's revision (or absence), decided again when another writer
//! got there first.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update as TxUpdate};
use tether_domain::store::{Inserted, StoreError, StoreResult};

use super::codec::{self, Entity, Item, PK, REV, STATUS};
use super::keys::Key;
use super::ops::{add_expression, build_err, key_item};
use super::{sdk_err, DynamoStore, Retry};

/// `#c_status IN (:c_s0, …)` over the given statuses.
pub(super) fn status_in(statuses: &[&'static str]) -> Cond {
    let placeholders: Vec<String> = (0..statuses.len()).map(|i| format!(":c_s{i}")).collect();
    let mut cond =
        Cond::new(format!("#c_status IN ({})", placeholders.join(", "))).name("#c_status", STATUS);
    for (p, s) in placeholders.iter().zip(statuses) {
        cond = cond.value(p, codec::s(*s));
    }
    cond
}

/// What a read-modify-write's transaction came to.
pub(super) enum Decided {
    Done,
    /// Someone else wrote first (or the transaction was throttled): read
    /// again and decide again.
    Retry,
    /// A unique entry is taken.
    Conflict,
}

pub(super) fn decide(outcome: &Outcome, placed: &Placed) -> Decided {
    match outcome {
        Outcome::Done => Decided::Done,
        o if o.any_failed(&placed.unique) => Decided::Conflict,
        Outcome::Cancelled(_) => Decided::Retry,
    }
}

impl DynamoStore {
    /// Writes `new` over `old` in one transaction (see [`Tx::entity`]).
    pub(super) async fn replace<E: Entity>(
        &self,
        op: &'static str,
        old: &E,
        new: &E,
    ) -> StoreResult<Decided> {
        let mut tx = Tx::default();
        let placed = tx.entity(Some(old), Some(new))?;
        Ok(decide(&self.commit(op, tx).await?, &placed))
    }

    /// Writes `new` over `old` (as [`Self::replace`]) and, in the same
    /// transaction, moves counter `attr` of the owner's counters item at
    /// `counts` by `delta` (no write when 0).
    pub(super) async fn replace_counted<E: Entity>(
        &self,
        op: &'static str,
        old: &E,
        new: &E,
        counts: Key,
        attr: &'static str,
        delta: i64,
    ) -> StoreResult<Decided> {
        let mut tx = Tx::default();
        let placed = tx.entity(Some(old), Some(new))?;
        if delta != 0 {
            tx.count(counts, attr, delta, None);
        }
        Ok(decide(&self.commit(op, tx).await?, &placed))
    }

    /// Stores a new entity with its entries: true if stored, false if the
    /// entity's key is taken; `Conflict` if a unique entry's is.
    pub(super) async fn insert<E: Entity>(&self, op: &'static str, new: &E) -> StoreResult<bool> {
        let mut retry = Retry::new(op);
        loop {
            let mut tx = Tx::default();
            let placed = tx.entity(None, Some(new))?;
            let outcome = self.commit(op, tx).await?;
            if outcome.failed(placed.item) {
                return Ok(false);
            }
            match decide(&outcome, &placed) {
                Decided::Done => return Ok(true),
                Decided::Conflict => {
                    return Err(StoreError::Conflict(format!(
                        "{op}: a unique {} key is taken",
                        E::WHAT
                    )))
                }
                Decided::Retry => retry.again().await?,
            }
        }
    }

    /// Stores a new entity with its entries; `Conflict` if the entity (the
    /// `what` of id `id`) exists or a unique entry's key is taken.
    pub(super) async fn create<E: Entity>(
        &self,
        op: &'static str,
        new: &E,
        what: &str,
        id: &str,
    ) -> StoreResult<()> {
        if self.insert(op, new).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("{op}: {what} {id} exists")))
        }
    }

    /// Inserts `new`, or returns what is stored under its key.
    pub(super) async fn insert_or_existing<E: Entity>(
        &self,
        op: &'static str,
        new: E,
    ) -> StoreResult<Inserted<E>> {
        let mut retry = Retry::new(op);
        loop {
            if self.insert(op, &new).await? {
                return Ok(Inserted::New(new));
            }
            if let Some(stored) = self.get_entity::<E>(op, &new.key()).await? {
                return Ok(Inserted::Existing(stored));
            }
            // Deleted between the two calls: try again.
            retry.again().await?;
        }
    }
}

/// DynamoDB's limit on the actions of one `TransactWriteItems`.
pub(super) const MAX_TX_ACTIONS: usize = 100;

/// A condition on one item write, with its own placeholders.
#[derive(Clone, Debug, Default)]
pub(super) struct Cond {
    expr: String,
    pub(super) names: Vec<(String, String)>,
    pub(super) values: Vec<(String, AttributeValue)>,
}

impl Cond {
    /// No condition.
    pub(super) fn none() -> Self {
        Self::default()
    }

    pub(super) fn new(expr: impl Into<String>) -> Self {
        Self {
            expr: expr.into(),
            ..Self::default()
        }
    }

    pub(super) fn name(mut self, placeholder: &str, attr: &str) -> Self {
        self.names.push((placeholder.into(), attr.into()));
        self
    }

    pub(super) fn value(mut self, placeholder: &str, v: AttributeValue) -> Self {
        self.values.push((placeholder.into(), v));
        self
    }

    /// The item does not exist.
    pub(super) fn absent() -> Self {
        Self::new("attribute_not_exists(#c_pk)").name("#c_pk", PK)
    }

    /// The item exists.
    pub(super) fn exists() -> Self {
        Self::new("attribute_exists(#c_pk)").name("#c_pk", PK)
    }

    /// The item is at revision `rev`.
    pub(super) fn rev(rev: u64) -> Self {
        Self::new("#c_rev = :c_rev")
            .name("#c_rev", REV)
            .value(":c_rev", codec::n(rev))
    }

    pub(super) fn is_none(&self) -> bool {
        self.expr.is_empty()
    }

    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.iter().cloned().collect())
    }

    pub(super) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.iter().cloned().collect())
    }

    pub(super) fn expression(&self) -> Option<String> {
        (!self.is_none()).then(|| self.expr.clone())
    }
}

pub(super) enum Action {
    Put(Item, Cond),
    Delete(Key, Cond),
    /// `ADD` a number to one attribute (a counter; the item is made if
    /// missing), if the condition holds.
    Add(Key, &'static str, i64, Cond),
}

/// The item writes of one transaction, in order; outcomes are reported by
/// index.
#[derive(Default)]
pub(super) struct Tx {
    actions: Vec<Action>,
}

/// Where an entity's writes landed in a [`Tx`].
pub(super) struct Placed {
    /// The entity item's own action (`None` if it did not change).
    pub(super) item: Option<usize>,
    /// The puts of unique entries, whose failure is a `Conflict`.
    pub(super) unique: Vec<usize>,
}

impl Tx {
    pub(super) fn put(&mut self, item: Item, cond: Cond) -> usize {
        self.actions.push(Action::Put(item, cond));
        self.actions.len() - 1
    }

    pub(super) fn delete(&mut self, key: Key, cond: Cond) -> usize {
        self.actions.push(Action::Delete(key, cond));
        self.actions.len() - 1
    }

    /// Moves counter `attr` of the item at `key` by `delta`; with `below`,
    /// only while the counter (absent: 0) is below it (the action then
    /// fails its condition, and the transaction with it).
    pub(super) fn count(
        &mut self,
        key: Key,
        attr: &'static str,
        delta: i64,
        below: Option<u32>,
    ) -> usize {
        let cond = match below {
            Some(cap) => Cond::new("attribute_not_exists(#c_n) OR #c_n < :c_cap")
                .name("#c_n", attr)
                .value(":c_cap", codec::n(cap)),
            None => Cond::none(),
        };
        self.actions.push(Action::Add(key, attr, delta, cond));
        self.actions.len() - 1
    }

    /// Writes `new` over `old` (either may be absent: insert, delete):
    /// the item, conditional on `old`'s revision (or on absence), plus the
    /// entries `old` had and `new` lacks (deleted) and the entries `new` has
    /// that `old` lacks or had otherwise (put; unique ones only if absent).
    pub(super) fn entity<E: Entity>(
        &mut self,
        old: Option<&E>,
        new: Option<&E>,
    ) -> StoreResult<Placed> {
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
pub(super) enum Reason {
    /// Not the reason (or the action was fine).
    Fine,
    /// Its condition did not hold.
    Condition,
    /// Lost to a concurrent transaction, or throttled: try again.
    Busy,
}

pub(super) enum Outcome {
    Done,
    Cancelled(Vec<Reason>),
}

impl Outcome {
    pub(super) fn failed(&self, index: Option<usize>) -> bool {
        match (self, index) {
            (Outcome::Cancelled(reasons), Some(i)) => reasons.get(i) == Some(&Reason::Condition),
            _ => false,
        }
    }

    pub(super) fn any_failed(&self, indexes: &[usize]) -> bool {
        indexes.iter().any(|i| self.failed(Some(*i)))
    }
}

/// `builder` with a condition and its placeholders set: the SDK's builders
/// of conditional writes share these three setters, but no trait.
macro_rules! conditioned {
    ($builder:expr, $cond:expr) => {{
        let cond = $cond;
        $builder
            .set_condition_expression(cond.expression())
            .set_expression_attribute_names(cond.names())
            .set_expression_attribute_values(cond.values())
    }};
}
pub(super) use conditioned;

impl DynamoStore {
    /// Runs the writes of `tx` atomically. One action goes as a plain
    /// conditional write (half the cost of a transaction).
    pub(super) async fn commit(&self, op: &'static str, tx: Tx) -> StoreResult<Outcome> {
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

    pub(super) fn transact_item(&self, op: &str, action: Action) -> StoreResult<TransactWriteItem> {
        let built = match action {
            Action::Put(item, cond) => {
                let put = conditioned!(
                    Put::builder().table_name(&*self.table).set_item(Some(item)),
                    &cond
                )
                .build()
                .map_err(|e| build_err(op, e))?;
                TransactWriteItem::builder().put(put).build()
            }
            Action::Delete(key, cond) => {
                let delete = conditioned!(
                    Delete::builder()
                        .table_name(&*self.table)
                        .set_key(Some(key_item(&key))),
                    &cond
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
