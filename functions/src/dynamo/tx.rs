//! Writes of an entity with its entries: one transaction, conditional on
//! the entity's revision (or absence), decided again when another writer
//! got there first.

use tether_domain::store::{Inserted, StoreError, StoreResult};

use super::items::{self, Entity, STATUS};
use super::keys::Key;
use super::{Cond, DynamoStore, Outcome, Placed, Retry, Tx};

/// `#c_status IN (:c_s0, …)` over the given statuses.
pub(super) fn status_in(statuses: &[&'static str]) -> Cond {
    let placeholders: Vec<String> = (0..statuses.len()).map(|i| format!(":c_s{i}")).collect();
    let mut cond =
        Cond::new(format!("#c_status IN ({})", placeholders.join(", "))).name("#c_status", STATUS);
    for (p, s) in placeholders.iter().zip(statuses) {
        cond = cond.value(p, items::s(*s));
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
