//! Workers: pairing tokens, the rate limits on pairing, and the workers
//! themselves (pending, approved, their presence and what they report).

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use tether_domain::auth::SecretHash;
use tether_domain::ids::{ConnectionId, UserId, WorkerId};
use tether_domain::model::{Millis, PairingToken, Worker, WorkerStatus};
use tether_domain::protocol::AgentReport;
use tether_domain::store::{Store, StoreError, StoreResult, WorkerProfile};

use super::codec::{
    self, Entity, Item, Rec, AGENT_AT, AGENT_REASON, AGENT_STATE, CONNECTION, COUNT, EXPIRES_AT,
    LAST_SEEN, PK, WINDOW_START,
};
use super::items::{self, SourceRecord};
use super::keys;
use super::ops::{QuerySpec, Update};
use super::tx::{decide, Cond, Decided, Tx};
use super::{DynamoStore, Retry};

fn json_attr<T: serde::Serialize>(what: &str, v: &T) -> StoreResult<AttributeValue> {
    codec::to_json(what, v).map(codec::s)
}

impl DynamoStore {
    async fn worker_via(
        &self,
        op: &'static str,
        item: Option<Item>,
    ) -> StoreResult<Option<Worker>> {
        let Some(item) = item else {
            return Ok(None);
        };
        let wid = codec::target_of(&item)?;
        Ok(self
            .get_entity::<Rec<Worker>>(op, &keys::worker(&wid))
            .await?
            .map(|r| r.value))
    }
}

pub(super) async fn put_pairing_token(
    store: &DynamoStore,
    hash: &SecretHash,
    token: &PairingToken,
) -> StoreResult<()> {
    store
        .put("put_pairing_token", items::pairing_token_item(hash, token))
        .await
}

pub(super) async fn take_pairing_token(
    store: &DynamoStore,
    hash: &SecretHash,
    now: Millis,
) -> StoreResult<Option<PairingToken>> {
    let key = keys::pairing_token(hash.as_str());
    let decode = items::pairing_token_from_item;
    let expires_at = |t: &PairingToken| t.expires_at;
    store
        .take("take_pairing_token", &key, decode, expires_at, now)
        .await
}

pub(super) async fn count_attempt(
    store: &DynamoStore,
    key: &str,
    window_start: Millis,
    window_end: Millis,
    limit: u32,
) -> StoreResult<bool> {
    const OP: &str = "count_attempt";
    if limit == 0 {
        return Ok(false);
    }
    let item_key = keys::rate_counter(key);
    let mut retry = Retry::new(OP);
    loop {
        // The stored window (or a later one) has room: one more.
        let room = Cond::new("#c_ws >= :c_ws AND #c_count < :c_limit")
            .name("#c_ws", WINDOW_START)
            .name("#c_count", COUNT)
            .value(":c_ws", codec::n(window_start))
            .value(":c_limit", codec::n(limit));
        let one_more = Update::new(item_key.clone(), room).add(COUNT, codec::n(1));
        if store.update(OP, one_more).await?.is_some() {
            return Ok(true);
        }
        // No counter, or one of an earlier window: this window starts.
        let stale = Cond::new("attribute_not_exists(#c_pk) OR #c_ws < :c_ws")
            .name("#c_pk", PK)
            .name("#c_ws", WINDOW_START)
            .value(":c_ws", codec::n(window_start));
        let first = items::counter_item(key, window_start, window_end);
        if store.put_if(OP, first, stale).await? {
            return Ok(true);
        }
        // Neither: the window is full, unless another attempt started
        // it between the two writes (then count again).
        if let Some(item) = store.get(OP, &item_key).await? {
            let a = codec::Attrs::new(&item, "rate counter");
            let (start, count): (Millis, u32) = (a.n(WINDOW_START)?, a.n(COUNT)?);
            if start >= window_start && count >= limit {
                return Ok(false);
            }
        }
        retry.again().await?;
    }
}

pub(super) async fn create_pending_worker(
    store: &DynamoStore,
    worker: &Worker,
    max_per_source: u32,
    now: Millis,
) -> StoreResult<bool> {
    const OP: &str = "create_pending_worker";
    let Some(source) = &worker.source else {
        store.create_worker(worker).await?;
        return Ok(true);
    };
    let new = Rec::new(worker.clone());
    let source_key = keys::pending_source(source);
    let mut retry = Retry::new(OP);
    loop {
        // The source's record of its pending workers, and the worker,
        // in one transaction conditional on the record's revision: two
        // creations from one source cannot both take the last place.
        let old = store.get_entity::<SourceRecord>(OP, &source_key).await?;
        let mut pending = old.as_ref().map(|r| r.pending.clone()).unwrap_or_default();
        pending.retain(|_, expires_at| *expires_at > now);
        if pending.len() >= max_per_source as usize {
            // Some may have been approved, rejected or deleted since.
            let keys = pending.keys().map(|id| keys::worker(id)).collect();
            let still: BTreeSet<String> = store
                .get_many::<Rec<Worker>>(OP, keys)
                .await?
                .into_iter()
                .filter(|r| {
                    r.value.status == WorkerStatus::Pending && !r.value.pairing_expired(now)
                })
                .map(|r| r.value.id.to_string())
                .collect();
            pending.retain(|id, _| still.contains(id));
        }
        if pending.len() >= max_per_source as usize {
            return Ok(false);
        }
        pending.insert(
            worker.id.to_string(),
            worker.pairing_expires_at.unwrap_or(now),
        );
        let record = SourceRecord {
            source: source.clone(),
            pending,
            rev: old.as_ref().map_or(0, |r| r.rev),
        };
        let mut tx = Tx::default();
        let placed = tx.entity(None, Some(&new))?;
        tx.entity(old.as_ref(), Some(&record))?;
        let outcome = store.commit(OP, tx).await?;
        if outcome.failed(placed.item) {
            return Err(StoreError::Conflict(format!(
                "{OP}: worker {} exists",
                worker.id
            )));
        }
        match decide(&outcome, &placed) {
            Decided::Done => return Ok(true),
            Decided::Conflict => {
                return Err(StoreError::Conflict(format!(
                    "{OP}: the credential is taken"
                )))
            }
            Decided::Retry => retry.again().await?,
        }
    }
}

pub(super) async fn delete_expired_pending(
    store: &DynamoStore,
    id: &WorkerId,
    now: Millis,
) -> StoreResult<bool> {
    const OP: &str = "delete_expired_pending";
    let key = keys::worker(id.as_str());
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<Rec<Worker>>(OP, &key).await? else {
            return Ok(false);
        };
        if !old.value.pairing_expired(now) {
            return Ok(false);
        }
        // The worker with its entries (credential, code, pending), if
        // nothing changed it since the read.
        let mut tx = Tx::default();
        let placed = tx.entity(Some(&old), None)?;
        match decide(&store.commit(OP, tx).await?, &placed) {
            Decided::Done => return Ok(true),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn create_worker(store: &DynamoStore, worker: &Worker) -> StoreResult<()> {
    const OP: &str = "create_worker";
    let new = Rec::new(worker.clone());
    store.create(OP, &new, "worker", worker.id.as_str()).await
}

pub(super) async fn worker(store: &DynamoStore, id: &WorkerId) -> StoreResult<Option<Worker>> {
    Ok(store
        .get_entity::<Rec<Worker>>("worker", &keys::worker(id.as_str()))
        .await?
        .map(|r| r.value))
}

pub(super) async fn worker_by_credential(
    store: &DynamoStore,
    hash: &SecretHash,
) -> StoreResult<Option<Worker>> {
    const OP: &str = "worker_by_credential";
    let entry = store
        .get(OP, &keys::worker_credential(hash.as_str()))
        .await?;
    store.worker_via(OP, entry).await
}

pub(super) async fn worker_by_pairing_code(
    store: &DynamoStore,
    code: &str,
) -> StoreResult<Option<Worker>> {
    const OP: &str = "worker_by_pairing_code";
    // Codes are random, so two may collide; the newest worker wins.
    let q = QuerySpec::partition(&keys::pairing_code_pk(code))
        .descending()
        .limit(1);
    let newest = store.query(OP, q).await?.into_iter().next();
    store.worker_via(OP, newest).await
}

pub(super) async fn workers_of(store: &DynamoStore, owner: &UserId) -> StoreResult<Vec<Worker>> {
    const OP: &str = "workers_of";
    let q = QuerySpec::prefix(&keys::user_pk(owner.as_str()), keys::WORKER_ENTRY);
    let ids = store.query_targets(OP, q).await?;
    let keys = ids.iter().map(|id| keys::worker(id)).collect();
    let workers = store.get_many::<Rec<Worker>>(OP, keys).await?;
    Ok(workers.into_iter().map(|r| r.value).collect())
}

pub(super) async fn pending_workers(
    store: &DynamoStore,
    now: Millis,
    after: Option<(Millis, &WorkerId)>,
    limit: u32,
) -> StoreResult<Vec<Worker>> {
    const OP: &str = "pending_workers";
    let q = match after {
        Some((created, id)) => QuerySpec::after(
            keys::PENDING,
            &keys::pending_worker_sk(created, id.as_str()),
        ),
        None => QuerySpec::partition(keys::PENDING),
    };
    let q = q
        .filter(
            "#f_exp > :f_now",
            &[("#f_exp", EXPIRES_AT)],
            vec![(":f_now", codec::n(now))],
        )
        .limit(limit);
    let ids = store.query_targets(OP, q).await?;
    let keys = ids.iter().map(|id| keys::worker(id)).collect();
    let workers = store.get_many::<Rec<Worker>>(OP, keys).await?;
    Ok(workers
        .into_iter()
        .map(|r| r.value)
        .filter(|w| w.status == WorkerStatus::Pending && !w.pairing_expired(now))
        .collect())
}

pub(super) async fn transition_worker(
    store: &DynamoStore,
    id: &WorkerId,
    from: WorkerStatus,
    to: WorkerStatus,
    owner: Option<&UserId>,
    name: Option<&str>,
) -> StoreResult<Option<Worker>> {
    const OP: &str = "transition_worker";
    let key = keys::worker(id.as_str());
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<Rec<Worker>>(OP, &key).await? else {
            return Ok(None);
        };
        if old.value.status != from {
            return Ok(None);
        }
        let w = &old.value;
        let new = Rec {
            value: Worker {
                status: to,
                pairing_code: None,
                pairing_expires_at: None,
                owner: owner.cloned().or_else(|| w.owner.clone()),
                name: name.map_or_else(|| w.name.clone(), str::to_owned),
                ..w.clone()
            },
            rev: old.rev,
        };
        match store.replace(OP, &old, &new).await? {
            Decided::Done => return Ok(Some(new.value)),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn set_worker_connection(
    store: &DynamoStore,
    id: &WorkerId,
    connection: &ConnectionId,
    now: Millis,
) -> StoreResult<()> {
    let u = Update::new(keys::worker(id.as_str()), Cond::exists())
        .set(CONNECTION, codec::s(connection.as_str()))
        .set(LAST_SEEN, codec::n(now));
    store.update("set_worker_connection", u).await.map(drop)
}

pub(super) async fn clear_worker_connection(
    store: &DynamoStore,
    id: &WorkerId,
    connection: &ConnectionId,
) -> StoreResult<bool> {
    let cond = Cond::new("#c_conn = :c_conn")
        .name("#c_conn", CONNECTION)
        .value(":c_conn", codec::s(connection.as_str()));
    let u = Update::new(keys::worker(id.as_str()), cond).remove(CONNECTION);
    Ok(store.update("clear_worker_connection", u).await?.is_some())
}

pub(super) async fn touch_worker(
    store: &DynamoStore,
    id: &WorkerId,
    now: Millis,
) -> StoreResult<()> {
    let u = Update::new(keys::worker(id.as_str()), Cond::exists()).set(LAST_SEEN, codec::n(now));
    store.update("touch_worker", u).await.map(drop)
}

pub(super) async fn set_worker_profile(
    store: &DynamoStore,
    id: &WorkerId,
    profile: &WorkerProfile,
) -> StoreResult<()> {
    // An empty list means the hello named no models, not that the
    // worker has none: keep what is stored.
    let models = if profile.models.is_empty() {
        None
    } else {
        Some(json_attr("models", &profile.models)?)
    };
    let default_model = profile
        .default_model
        .as_ref()
        .map(|m| json_attr("default model", m))
        .transpose()?;
    let u = Update::new(keys::worker(id.as_str()), Cond::exists())
        .set_opt("machine", profile.machine.as_deref().map(codec::s))
        .set_opt("name", profile.name.as_deref().map(codec::s))
        .set_opt("workdir", profile.workdir.as_deref().map(codec::s))
        .set_opt("version", profile.version.as_deref().map(codec::s))
        .set_opt("models", models)
        .set_opt("default_model", default_model);
    store.update("set_worker_profile", u).await.map(drop)
}

pub(super) async fn set_agent_state(
    store: &DynamoStore,
    id: &WorkerId,
    report: &AgentReport,
) -> StoreResult<Option<Worker>> {
    // One conditional update: only a newer report replaces the stored one.
    let cond =
        Cond::new("attribute_exists(#c_pk) AND (attribute_not_exists(#c_at) OR #c_at < :c_at)")
            .name("#c_pk", PK)
            .name("#c_at", AGENT_AT)
            .value(":c_at", codec::n(report.at));
    let mut u = Update::new(keys::worker(id.as_str()), cond)
        .set(AGENT_STATE, codec::s(report.state.as_str()))
        .set(AGENT_AT, codec::n(report.at));
    u = match &report.reason {
        Some(reason) => u.set(AGENT_REASON, codec::s(reason.as_str())),
        None => u.remove(AGENT_REASON),
    };
    match store.update("set_agent_state", u).await? {
        Some(item) => Ok(Some(Rec::<Worker>::from_item(&item)?.value)),
        None => Ok(None),
    }
}
