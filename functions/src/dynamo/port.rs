//! `impl Store for DynamoStore`: each method's operations are listed in
//! `infra/ACCESS_PATTERNS.md`, section 4.

use std::collections::BTreeSet;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use tether_domain::auth::SecretHash;
use tether_domain::ids::{ConnectionId, IdError, MessageId, PromptId, SessionId, UserId, WorkerId};
use tether_domain::model::{
    Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Principal, Prompt, Session,
    SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
use tether_domain::protocol::{AgentReport, PromptAnswer};
use tether_domain::store::{
    Capped, Inserted, MessagePatch, SessionPatch, Store, StoreError, StoreResult, WorkerProfile,
};

use super::items::{
    self, ConnRecord, Entity, Item, MessageRecord, Rec, SourceRecord, AGENT_AT, AGENT_REASON,
    AGENT_STATE, CONNECTION, COUNT, EXPIRES_AT, EXPIRY_SHARD, LAST_SEEN, LIVE_SESSIONS,
    OPEN_MESSAGES, OWNER, PK, STATUS, TITLE, TITLE_SOURCE, UPDATED_AT, WINDOW_START,
};
use super::keys::{self, Key};
use super::schema::EXPIRY_INDEX;
use super::{Cond, DynamoStore, Outcome, Placed, QuerySpec, Retry, Tx, Update};

/// At most this many watches go in one transaction (a transaction holds at
/// most 100 actions; the record and its principal entry take two).
const MAX_TX_WATCHES: usize = 90;

fn json_attr<T: serde::Serialize>(what: &str, v: &T) -> StoreResult<AttributeValue> {
    serde_json::to_string(v)
        .map(items::s)
        .map_err(|e| StoreError::Corrupt(format!("encode {what}: {e}")))
}

fn parse_id<T: FromStr<Err = IdError>>(what: &str, s: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what} id {s:?}: {e}")))
}

fn parse_ids<T: FromStr<Err = IdError>>(what: &str, ids: Vec<String>) -> StoreResult<Vec<T>> {
    ids.iter().map(|s| parse_id(what, s)).collect()
}

/// `#c_status IN (:c_s0, …)` over the given statuses.
fn status_in(statuses: &[&'static str]) -> Cond {
    let placeholders: Vec<String> = (0..statuses.len()).map(|i| format!(":c_s{i}")).collect();
    let mut cond =
        Cond::new(format!("#c_status IN ({})", placeholders.join(", "))).name("#c_status", STATUS);
    for (p, s) in placeholders.iter().zip(statuses) {
        cond = cond.value(p, items::s(*s));
    }
    cond
}

/// What a read-modify-write's transaction came to.
enum Decided {
    Done,
    /// Someone else wrote first (or the transaction was throttled): read
    /// again and decide again.
    Retry,
    /// A unique entry is taken.
    Conflict,
}

fn decide(outcome: &Outcome, placed: &Placed) -> Decided {
    match outcome {
        Outcome::Done => Decided::Done,
        o if o.any_failed(&placed.unique) => Decided::Conflict,
        Outcome::Cancelled(_) => Decided::Retry,
    }
}

impl DynamoStore {
    /// Writes `new` over `old` in one transaction (see [`Tx::entity`]).
    async fn replace<E: Entity>(&self, op: &'static str, old: &E, new: &E) -> StoreResult<Decided> {
        let mut tx = Tx::default();
        let placed = tx.entity(Some(old), Some(new))?;
        Ok(decide(&self.commit(op, tx).await?, &placed))
    }

    /// Writes `new` over `old` (as [`Self::replace`]) and, in the same
    /// transaction, moves counter `attr` of the owner's counters item at
    /// `counts` by `delta` (no write when 0).
    async fn replace_counted<E: Entity>(
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
    async fn insert<E: Entity>(&self, op: &'static str, new: &E) -> StoreResult<bool> {
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
    async fn insert_or_existing<E: Entity>(
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

    async fn user_via(&self, op: &'static str, entry: &Key) -> StoreResult<Option<User>> {
        let Some(item) = self.get(op, entry).await? else {
            return Ok(None);
        };
        let uid = items::target_of(&item)?;
        Ok(self
            .get_entity::<Rec<User>>(op, &keys::user(&uid))
            .await?
            .map(|r| r.value))
    }

    async fn worker_via(
        &self,
        op: &'static str,
        item: Option<Item>,
    ) -> StoreResult<Option<Worker>> {
        let Some(item) = item else {
            return Ok(None);
        };
        let wid = items::target_of(&item)?;
        Ok(self
            .get_entity::<Rec<Worker>>(op, &keys::worker(&wid))
            .await?
            .map(|r| r.value))
    }

    async fn entries_to_ids<T: FromStr<Err = IdError>>(
        &self,
        op: &'static str,
        what: &str,
        q: QuerySpec,
    ) -> StoreResult<Vec<T>> {
        parse_ids(what, self.query_targets(op, q).await?)
    }

    /// Deletes a connection record with its entries and watches; with
    /// `expired_at`, only if it had expired by then. Returns what was stored.
    async fn remove_connection(
        &self,
        op: &'static str,
        id: &ConnectionId,
        expired_at: Option<Millis>,
    ) -> StoreResult<Option<Connection>> {
        let key = keys::connection(id.as_str());
        let mut retry = Retry::new(op);
        loop {
            let Some(old) = self.get_entity::<ConnRecord>(op, &key).await? else {
                return Ok(None);
            };
            if expired_at.is_some_and(|now| old.conn.expires_at > now) {
                return Ok(None);
            }
            if old.watching.len() > MAX_TX_WATCHES {
                // Too many watches for one transaction: shed some first.
                let shed = ConnRecord {
                    watching: old.watching.iter().skip(MAX_TX_WATCHES).cloned().collect(),
                    ..old.clone()
                };
                if let Decided::Retry | Decided::Conflict = self.replace(op, &old, &shed).await? {
                    retry.again().await?;
                }
                continue;
            }
            let mut tx = Tx::default();
            let placed = tx.entity(Some(&old), None)?;
            match decide(&self.commit(op, tx).await?, &placed) {
                Decided::Done => return Ok(Some(old.conn)),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn change_watch(
        &self,
        op: &'static str,
        session: &SessionId,
        conn: &ConnectionId,
        add: bool,
    ) -> StoreResult<bool> {
        let key = keys::connection(conn.as_str());
        let sid = session.as_str().to_owned();
        let mut retry = Retry::new(op);
        loop {
            let Some(old) = self.get_entity::<ConnRecord>(op, &key).await? else {
                if !add {
                    // No record: make sure no stray watch item outlives it.
                    let watch = keys::watch(session.as_str(), conn.as_str());
                    self.delete_if(op, &watch, Cond::none()).await?;
                }
                return Ok(false);
            };
            if old.watching.contains(&sid) == add {
                return Ok(true);
            }
            let mut watching: BTreeSet<String> = old.watching.clone();
            if add {
                watching.insert(sid.clone());
            } else {
                watching.remove(&sid);
            }
            let new = ConnRecord {
                watching,
                ..old.clone()
            };
            match self.replace(op, &old, &new).await? {
                Decided::Done => return Ok(true),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }
}

impl Store for DynamoStore {
    // ---- users ----

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        const OP: &str = "create_user";
        if self.insert(OP, &Rec::new(user.clone())).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{OP}: user {} exists",
                user.id
            )))
        }
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        Ok(self
            .get_entity::<Rec<User>>("user", &keys::user(id.as_str()))
            .await?
            .map(|r| r.value))
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        let user = self
            .user_via("user_by_name", &keys::user_name(name))
            .await?;
        Ok(user.filter(|u| u.name == name))
    }

    async fn user_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<User>> {
        let entry = keys::user_secret(hash.as_str());
        let user = self.user_via("user_by_secret", &entry).await?;
        // A rotation between the two reads leaves the entry behind.
        Ok(user.filter(|u| u.secret_hash == *hash))
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        const OP: &str = "users";
        let ids = self
            .query_targets(OP, QuerySpec::partition(keys::USERNAMES))
            .await?;
        let keys = ids.iter().map(|id| keys::user(id)).collect();
        let users = self.get_many::<Rec<User>>(OP, keys).await?;
        Ok(users.into_iter().map(|r| r.value).collect())
    }

    async fn set_user_secret(&self, id: &UserId, hash: &SecretHash) -> StoreResult<bool> {
        const OP: &str = "set_user_secret";
        let key = keys::user(id.as_str());
        let mut retry = Retry::new(OP);
        loop {
            let Some(old) = self.get_entity::<Rec<User>>(OP, &key).await? else {
                return Ok(false);
            };
            if old.value.secret_hash == *hash {
                return Ok(true);
            }
            let new = Rec {
                value: User {
                    secret_hash: hash.clone(),
                    ..old.value.clone()
                },
                rev: old.rev,
            };
            match self.replace(OP, &old, &new).await? {
                Decided::Done => return Ok(true),
                Decided::Conflict => {
                    return Err(StoreError::Conflict(format!(
                        "{OP}: the secret hash belongs to another user"
                    )))
                }
                Decided::Retry => retry.again().await?,
            }
        }
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        const OP: &str = "delete_user";
        let key = keys::user(id.as_str());
        let mut retry = Retry::new(OP);
        loop {
            let Some(old) = self.get_entity::<Rec<User>>(OP, &key).await? else {
                return Ok(false);
            };
            // The item and its name and secret entries, if `rev` is unchanged.
            let mut tx = Tx::default();
            let placed = tx.entity(Some(&old), None)?;
            match decide(&self.commit(OP, tx).await?, &placed) {
                Decided::Done => return Ok(true),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    // ---- tickets ----

    async fn put_ticket(&self, hash: &SecretHash, ticket: &Ticket) -> StoreResult<()> {
        self.put("put_ticket", items::ticket_item(hash, ticket)).await
    }

    async fn take_ticket(&self, hash: &SecretHash, now: Millis) -> StoreResult<Option<Ticket>> {
        // One DeleteItem returning the old item: of two concurrent takes,
        // only one gets it back.
        let old = self
            .delete_returning("take_ticket", &keys::ticket(hash.as_str()))
            .await?;
        match old {
            Some(item) => {
                let ticket = items::ticket_from_item(&item)?;
                Ok((ticket.expires_at > now).then_some(ticket))
            }
            None => Ok(None),
        }
    }

    // ---- pairing tokens ----

    async fn put_pairing_token(&self, hash: &SecretHash, token: &PairingToken) -> StoreResult<()> {
        self.put("put_pairing_token", items::pairing_token_item(hash, token))
            .await
    }

    async fn take_pairing_token(
        &self,
        hash: &SecretHash,
        now: Millis,
    ) -> StoreResult<Option<PairingToken>> {
        // As `take_ticket`: one DeleteItem returning the old item.
        let old = self
            .delete_returning("take_pairing_token", &keys::pairing_token(hash.as_str()))
            .await?;
        match old {
            Some(item) => {
                let token = items::pairing_token_from_item(&item)?;
                Ok((token.expires_at > now).then_some(token))
            }
            None => Ok(None),
        }
    }

    // ---- rate limits ----

    async fn count_attempt(
        &self,
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
                .value(":c_ws", items::n(window_start))
                .value(":c_limit", items::n(limit));
            let one_more = Update::new(item_key.clone(), room).add(COUNT, items::n(1));
            if self.update(OP, one_more).await?.is_some() {
                return Ok(true);
            }
            // No counter, or one of an earlier window: this window starts.
            let stale = Cond::new("attribute_not_exists(#c_pk) OR #c_ws < :c_ws")
                .name("#c_pk", PK)
                .name("#c_ws", WINDOW_START)
                .value(":c_ws", items::n(window_start));
            let first = items::counter_item(key, window_start, window_end);
            if self.put_if(OP, first, stale).await? {
                return Ok(true);
            }
            // Neither: the window is full, unless another attempt started
            // it between the two writes (then count again).
            if let Some(item) = self.get(OP, &item_key).await? {
                let a = items::Attrs::new(&item, "rate counter");
                let (start, count): (Millis, u32) = (a.n(WINDOW_START)?, a.n(COUNT)?);
                if start >= window_start && count >= limit {
                    return Ok(false);
                }
            }
            retry.again().await?;
        }
    }

    // ---- workers ----

    async fn create_pending_worker(
        &self,
        worker: &Worker,
        max_per_source: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        const OP: &str = "create_pending_worker";
        let Some(source) = &worker.source else {
            self.create_worker(worker).await?;
            return Ok(true);
        };
        let new = Rec::new(worker.clone());
        let source_key = keys::pending_source(source);
        let mut retry = Retry::new(OP);
        loop {
            // The source's record of its pending workers, and the worker,
            // in one transaction conditional on the record's revision: two
            // creations from one source cannot both take the last place.
            let old = self.get_entity::<SourceRecord>(OP, &source_key).await?;
            let mut pending = old.as_ref().map(|r| r.pending.clone()).unwrap_or_default();
            pending.retain(|_, expires_at| *expires_at > now);
            if pending.len() >= max_per_source as usize {
                // Some may have been approved, rejected or deleted since.
                let keys = pending.keys().map(|id| keys::worker(id)).collect();
                let still: BTreeSet<String> = self
                    .get_many::<Rec<Worker>>(OP, keys)
                    .await?
                    .into_iter()
                    .filter(|r| r.value.status == WorkerStatus::Pending && !r.value.pairing_expired(now))
                    .map(|r| r.value.id.to_string())
                    .collect();
                pending.retain(|id, _| still.contains(id));
            }
            if pending.len() >= max_per_source as usize {
                return Ok(false);
            }
            pending.insert(worker.id.to_string(), worker.pairing_expires_at.unwrap_or(now));
            let record = SourceRecord {
                source: source.clone(),
                pending,
                rev: old.as_ref().map_or(0, |r| r.rev),
            };
            let mut tx = Tx::default();
            let placed = tx.entity(None, Some(&new))?;
            tx.entity(old.as_ref(), Some(&record))?;
            let outcome = self.commit(OP, tx).await?;
            if outcome.failed(placed.item) {
                return Err(StoreError::Conflict(format!("{OP}: worker {} exists", worker.id)));
            }
            match decide(&outcome, &placed) {
                Decided::Done => return Ok(true),
                Decided::Conflict => {
                    return Err(StoreError::Conflict(format!("{OP}: the credential is taken")))
                }
                Decided::Retry => retry.again().await?,
            }
        }
    }

    async fn delete_expired_pending(&self, id: &WorkerId, now: Millis) -> StoreResult<bool> {
        const OP: &str = "delete_expired_pending";
        let key = keys::worker(id.as_str());
        let mut retry = Retry::new(OP);
        loop {
            let Some(old) = self.get_entity::<Rec<Worker>>(OP, &key).await? else {
                return Ok(false);
            };
            if !old.value.pairing_expired(now) {
                return Ok(false);
            }
            // The worker with its entries (credential, code, pending), if
            // nothing changed it since the read.
            let mut tx = Tx::default();
            let placed = tx.entity(Some(&old), None)?;
            match decide(&self.commit(OP, tx).await?, &placed) {
                Decided::Done => return Ok(true),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn create_worker(&self, worker: &Worker) -> StoreResult<()> {
        const OP: &str = "create_worker";
        if self.insert(OP, &Rec::new(worker.clone())).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{OP}: worker {} exists",
                worker.id
            )))
        }
    }

    async fn worker(&self, id: &WorkerId) -> StoreResult<Option<Worker>> {
        Ok(self
            .get_entity::<Rec<Worker>>("worker", &keys::worker(id.as_str()))
            .await?
            .map(|r| r.value))
    }

    async fn worker_by_credential(&self, hash: &SecretHash) -> StoreResult<Option<Worker>> {
        const OP: &str = "worker_by_credential";
        let entry = self
            .get(OP, &keys::worker_credential(hash.as_str()))
            .await?;
        self.worker_via(OP, entry).await
    }

    async fn worker_by_pairing_code(&self, code: &str) -> StoreResult<Option<Worker>> {
        const OP: &str = "worker_by_pairing_code";
        // Codes are random, so two may collide; the newest worker wins.
        let q = QuerySpec::partition(&keys::pairing_code_pk(code))
            .descending()
            .limit(1);
        let newest = self.query(OP, q).await?.into_iter().next();
        self.worker_via(OP, newest).await
    }

    async fn workers_of(&self, owner: &UserId) -> StoreResult<Vec<Worker>> {
        const OP: &str = "workers_of";
        let q = QuerySpec::prefix(&keys::user_pk(owner.as_str()), keys::WORKER_ENTRY);
        let ids = self.query_targets(OP, q).await?;
        let keys = ids.iter().map(|id| keys::worker(id)).collect();
        let workers = self.get_many::<Rec<Worker>>(OP, keys).await?;
        Ok(workers.into_iter().map(|r| r.value).collect())
    }

    async fn pending_workers(
        &self,
        now: Millis,
        after: Option<(Millis, &WorkerId)>,
        limit: u32,
    ) -> StoreResult<Vec<Worker>> {
        const OP: &str = "pending_workers";
        let q = match after {
            Some((created, id)) => {
                QuerySpec::after(keys::PENDING, &keys::pending_worker_sk(created, id.as_str()))
            }
            None => QuerySpec::partition(keys::PENDING),
        };
        let q = q
            .filter(
                "#f_exp > :f_now",
                &[("#f_exp", EXPIRES_AT)],
                vec![(":f_now", items::n(now))],
            )
            .limit(limit);
        let ids = self.query_targets(OP, q).await?;
        let keys = ids.iter().map(|id| keys::worker(id)).collect();
        let workers = self.get_many::<Rec<Worker>>(OP, keys).await?;
        Ok(workers
            .into_iter()
            .map(|r| r.value)
            .filter(|w| w.status == WorkerStatus::Pending && !w.pairing_expired(now))
            .collect())
    }

    async fn transition_worker(
        &self,
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
            let Some(old) = self.get_entity::<Rec<Worker>>(OP, &key).await? else {
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
            match self.replace(OP, &old, &new).await? {
                Decided::Done => return Ok(Some(new.value)),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn set_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
        now: Millis,
    ) -> StoreResult<()> {
        let u = Update::new(keys::worker(id.as_str()), Cond::exists())
            .set(CONNECTION, items::s(connection.as_str()))
            .set(LAST_SEEN, items::n(now));
        self.update("set_worker_connection", u).await.map(drop)
    }

    async fn clear_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
    ) -> StoreResult<bool> {
        let cond = Cond::new("#c_conn = :c_conn")
            .name("#c_conn", CONNECTION)
            .value(":c_conn", items::s(connection.as_str()));
        let u = Update::new(keys::worker(id.as_str()), cond).remove(CONNECTION);
        Ok(self.update("clear_worker_connection", u).await?.is_some())
    }

    async fn touch_worker(&self, id: &WorkerId, now: Millis) -> StoreResult<()> {
        let u =
            Update::new(keys::worker(id.as_str()), Cond::exists()).set(LAST_SEEN, items::n(now));
        self.update("touch_worker", u).await.map(drop)
    }

    async fn set_worker_profile(&self, id: &WorkerId, profile: &WorkerProfile) -> StoreResult<()> {
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
            .set_opt("machine", profile.machine.as_deref().map(items::s))
            .set_opt("name", profile.name.as_deref().map(items::s))
            .set_opt("workdir", profile.workdir.as_deref().map(items::s))
            .set_opt("version", profile.version.as_deref().map(items::s))
            .set_opt("models", models)
            .set_opt("default_model", default_model);
        self.update("set_worker_profile", u).await.map(drop)
    }

    async fn set_agent_state(&self, id: &WorkerId, report: &AgentReport) -> StoreResult<Option<Worker>> {
        // One conditional update: only a newer report replaces the stored one.
        let cond = Cond::new("attribute_exists(#c_pk) AND (attribute_not_exists(#c_at) OR #c_at < :c_at)")
            .name("#c_pk", PK)
            .name("#c_at", AGENT_AT)
            .value(":c_at", items::n(report.at));
        let mut u = Update::new(keys::worker(id.as_str()), cond)
            .set(AGENT_STATE, items::s(report.state.as_str()))
            .set(AGENT_AT, items::n(report.at));
        u = match &report.reason {
            Some(reason) => u.set(AGENT_REASON, items::s(reason.as_str())),
            None => u.remove(AGENT_REASON),
        };
        match self.update("set_agent_state", u).await? {
            Some(item) => Ok(Some(Rec::<Worker>::from_item(&item)?.value)),
            None => Ok(None),
        }
    }

    // ---- connections ----

    async fn put_connection(&self, conn: &Connection) -> StoreResult<()> {
        const OP: &str = "put_connection";
        let key = keys::connection(conn.id.as_str());
        let mut retry = Retry::new(OP);
        // A new id (every `$connect`): one transaction, no read.
        if self.insert(OP, &ConnRecord::new(conn.clone())).await? {
            return Ok(());
        }
        // The id exists: replace its fields and keep its watches, as
        // SQLite's upsert does.
        loop {
            let Some(old) = self.get_entity::<ConnRecord>(OP, &key).await? else {
                if self.insert(OP, &ConnRecord::new(conn.clone())).await? {
                    return Ok(());
                }
                retry.again().await?;
                continue;
            };
            let new = ConnRecord {
                conn: conn.clone(),
                ..old.clone()
            };
            match self.replace(OP, &old, &new).await? {
                Decided::Done => return Ok(()),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        Ok(self
            .get_entity::<ConnRecord>("connection", &keys::connection(id.as_str()))
            .await?
            .map(|r| r.conn))
    }

    async fn delete_connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        self.remove_connection("delete_connection", id, None).await
    }

    async fn purge_expired(&self, now: Millis) -> StoreResult<u64> {
        const OP: &str = "purge_expired";
        let mut purged = 0u64;
        for shard in 0..keys::EXPIRY_SHARDS {
            // The GSI is eventually consistent: what expired a moment ago is
            // purged next time.
            let q = QuerySpec {
                index: Some(EXPIRY_INDEX),
                key_cond: "#q_shard = :q_shard AND #q_exp <= :q_now".into(),
                names: vec![
                    ("#q_shard".into(), EXPIRY_SHARD.into()),
                    ("#q_exp".into(), EXPIRES_AT.into()),
                ],
                values: vec![
                    (":q_shard".into(), items::s(keys::expiry_shard_name(shard))),
                    (":q_now".into(), items::n(now)),
                ],
                filter: None,
                forward: true,
                limit: None,
            };
            for item in self.query(OP, q).await? {
                let key = items::key_of(&item)?;
                let expiring = [keys::TICKET_PREFIX, keys::PAIRING_TOKEN_PREFIX, keys::RATE_PREFIX];
                if expiring.iter().any(|prefix| key.pk.starts_with(prefix)) {
                    let cond = Cond::new("#c_exp <= :c_now")
                        .name("#c_exp", EXPIRES_AT)
                        .value(":c_now", items::n(now));
                    if self.delete_if(OP, &key, cond).await? {
                        purged += 1;
                    }
                } else if let Some(wid) = key
                    .pk
                    .strip_prefix(keys::WORKER_PREFIX)
                    .filter(|wid| key == keys::worker(wid))
                {
                    // A pending worker whose code expired, with its entries.
                    let id: WorkerId = parse_id("worker", wid)?;
                    if self.delete_expired_pending(&id, now).await? {
                        purged += 1;
                    }
                } else if let Some(cid) = key.pk.strip_prefix(keys::CONNECTION_PREFIX) {
                    let id: ConnectionId = parse_id("connection", cid)?;
                    let Some(conn) = self.remove_connection(OP, &id, Some(now)).await? else {
                        continue;
                    };
                    purged += 1;
                    if let Principal::Worker(wid) = &conn.principal {
                        let cond = Cond::new("#c_conn = :c_conn")
                            .name("#c_conn", CONNECTION)
                            .value(":c_conn", items::s(id.as_str()));
                        let u = Update::new(keys::worker(wid.as_str()), cond).remove(CONNECTION);
                        self.update(OP, u).await?;
                    }
                }
            }
        }
        Ok(purged)
    }

    async fn touch_connection(&self, id: &ConnectionId, now: Millis) -> StoreResult<()> {
        let u = Update::new(keys::connection(id.as_str()), Cond::exists())
            .set(LAST_SEEN, items::n(now));
        self.update("touch_connection", u).await.map(drop)
    }

    async fn user_connections(&self, user: &UserId, now: Millis) -> StoreResult<Vec<ConnectionId>> {
        let q = QuerySpec::prefix(&keys::user_pk(user.as_str()), keys::CONN_ENTRY).filter(
            "#f_exp > :f_now",
            &[("#f_exp", EXPIRES_AT)],
            vec![(":f_now", items::n(now))],
        );
        self.entries_to_ids("user_connections", "connection", q)
            .await
    }

    async fn set_connections_owner(&self, worker: &WorkerId, owner: &UserId) -> StoreResult<()> {
        const OP: &str = "set_connections_owner";
        let conns: Vec<ConnectionId> = self.worker_connections(worker).await?;
        for conn in conns {
            let u = Update::new(keys::connection(conn.as_str()), Cond::exists())
                .set(OWNER, items::s(owner.as_str()));
            self.update(OP, u).await?;
        }
        Ok(())
    }

    async fn worker_connections(&self, worker: &WorkerId) -> StoreResult<Vec<ConnectionId>> {
        let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::CONN_ENTRY);
        self.entries_to_ids("worker_connections", "connection", q)
            .await
    }

    async fn connection_count(&self, principal: &Principal, now: Millis) -> StoreResult<u32> {
        let pk = match principal {
            Principal::User(u) => keys::user_pk(u.as_str()),
            Principal::Worker(w) => keys::worker_pk(w.as_str()),
        };
        let q = QuerySpec::prefix(&pk, keys::CONN_ENTRY).filter(
            "#f_exp > :f_now",
            &[("#f_exp", EXPIRES_AT)],
            vec![(":f_now", items::n(now))],
        );
        self.count("connection_count", q).await
    }

    async fn watch(&self, session: &SessionId, conn: &ConnectionId) -> StoreResult<bool> {
        self.change_watch("watch", session, conn, true).await
    }

    async fn unwatch(&self, session: &SessionId, conn: &ConnectionId) -> StoreResult<()> {
        self.change_watch("unwatch", session, conn, false)
            .await
            .map(drop)
    }

    async fn watchers(&self, session: &SessionId) -> StoreResult<Vec<ConnectionId>> {
        let q = QuerySpec::prefix(&keys::session_pk(session.as_str()), keys::WATCH_ENTRY);
        self.entries_to_ids("watchers", "connection", q).await
    }

    // ---- sessions ----

    async fn insert_session(&self, session: &Session, max_live: u32) -> StoreResult<Capped<Session>> {
        const OP: &str = "insert_session";
        let new = Rec::new(session.clone());
        let mut retry = Retry::new(OP);
        loop {
            // The session, its entries and (if it is live) the owner's count
            // of live sessions, conditional on the count being below the cap.
            let mut tx = Tx::default();
            let placed = tx.entity(None, Some(&new))?;
            let counts = keys::user_counts(session.owner.as_str());
            let counted = (!session.status.is_closed())
                .then(|| tx.count(counts, LIVE_SESSIONS, 1, Some(max_live)));
            let outcome = self.commit(OP, tx).await?;
            if let Outcome::Done = outcome {
                return Ok(Inserted::New(session.clone()).into());
            }
            if outcome.failed(placed.item) || outcome.failed(counted) {
                // A stored id answers a retry whatever the count.
                if let Some(stored) = self.get_entity::<Rec<Session>>(OP, &new.key()).await? {
                    return Ok(Inserted::Existing(stored.value).into());
                }
                if outcome.failed(counted) {
                    return Ok(Capped::Full);
                }
            }
            retry.again().await?;
        }
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        Ok(self
            .get_entity::<Rec<Session>>("session", &keys::session(id.as_str()))
            .await?
            .map(|r| r.value))
    }

    async fn sessions_of(
        &self,
        owner: &UserId,
        worker: Option<&WorkerId>,
        before: Option<Millis>,
        limit: u32,
    ) -> StoreResult<Vec<Session>> {
        const OP: &str = "sessions_of";
        let pk = keys::user_pk(owner.as_str());
        let prefix = match worker {
            Some(w) => keys::owner_worker_session_prefix(w.as_str()),
            None => keys::SESSION_ENTRY.to_owned(),
        };
        // `<prefix><before>` sorts before every `<prefix><before>#<sid>`, so
        // the inclusive BETWEEN still excludes `before` itself.
        let q = match before {
            Some(b) => QuerySpec::between(&pk, &prefix, &format!("{prefix}{}", keys::time(b))),
            None => QuerySpec::prefix(&pk, &prefix),
        }
        .descending()
        .limit(limit);
        let ids = self.query_targets(OP, q).await?;
        let keys = ids.iter().map(|id| keys::session(id)).collect();
        let sessions = self.get_many::<Rec<Session>>(OP, keys).await?;
        Ok(sessions.into_iter().map(|r| r.value).collect())
    }

    async fn starting_sessions(&self, worker: &WorkerId) -> StoreResult<Vec<Session>> {
        const OP: &str = "starting_sessions";
        let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::STARTING_ENTRY);
        let ids = self.query_targets(OP, q).await?;
        let keys = ids.iter().map(|id| keys::session(id)).collect();
        let sessions = self.get_many::<Rec<Session>>(OP, keys).await?;
        Ok(sessions.into_iter().map(|r| r.value).collect())
    }

    async fn transition_session(
        &self,
        id: &SessionId,
        from: &[SessionStatus],
        to: SessionStatus,
        patch: &SessionPatch,
        now: Millis,
    ) -> StoreResult<Option<Session>> {
        const OP: &str = "transition_session";
        if from.is_empty() {
            return Ok(None);
        }
        let key = keys::session(id.as_str());
        let starting = SessionStatus::Starting;
        let closing = from.iter().any(|s| s.is_closed() != to.is_closed());
        if !from.contains(&starting) && to != starting && !closing {
            // The starting entry and the owner's count of live sessions stay
            // as they are: one conditional update.
            let statuses: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
            let u = Update::new(key, status_in(&statuses))
                .set(STATUS, items::s(to.as_str()))
                .set(UPDATED_AT, items::n(now))
                .set_opt(
                    "agent_session_id",
                    patch.agent_session_id.as_deref().map(items::s),
                )
                .set_opt("error", patch.error.as_deref().map(items::s));
            return match self.update(OP, u).await? {
                Some(item) => Ok(Some(Rec::<Session>::from_item(&item)?.value)),
                None => Ok(None),
            };
        }
        let mut retry = Retry::new(OP);
        loop {
            let Some(old) = self.get_entity::<Rec<Session>>(OP, &key).await? else {
                return Ok(None);
            };
            if !from.contains(&old.value.status) {
                return Ok(None);
            }
            let s = &old.value;
            let new = Rec {
                value: Session {
                    status: to,
                    agent_session_id: patch
                        .agent_session_id
                        .clone()
                        .or_else(|| s.agent_session_id.clone()),
                    error: patch.error.clone().or_else(|| s.error.clone()),
                    updated_at: now,
                    ..s.clone()
                },
                rev: old.rev,
            };
            let delta = i64::from(!to.is_closed()) - i64::from(!s.status.is_closed());
            let counts = keys::user_counts(s.owner.as_str());
            match self
                .replace_counted(OP, &old, &new, counts, LIVE_SESSIONS, delta)
                .await?
            {
                Decided::Done => return Ok(Some(new.value)),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn set_agent_title(&self, id: &SessionId, title: &str, now: Millis) -> StoreResult<Option<Session>> {
        // The title is in no entry: one conditional update of the item.
        let cond = Cond::new(
            "attribute_exists(#c_pk) AND (attribute_not_exists(#c_src) OR #c_src = :c_agent)",
        )
        .name("#c_pk", PK)
        .name("#c_src", TITLE_SOURCE)
        .value(":c_agent", items::s(TitleSource::Agent.as_str()));
        let u = Update::new(keys::session(id.as_str()), cond)
            .set(TITLE, items::s(title))
            .set(TITLE_SOURCE, items::s(TitleSource::Agent.as_str()))
            .set(UPDATED_AT, items::n(now));
        match self.update("set_agent_title", u).await? {
            Some(item) => Ok(Some(Rec::<Session>::from_item(&item)?.value)),
            None => Ok(None),
        }
    }

    // ---- messages ----

    async fn insert_message(&self, message: &Message, max_open: u32) -> StoreResult<Capped<Message>> {
        const OP: &str = "insert_message";
        let message_key = keys::message(message.id.as_str());
        let session_key = keys::session(message.session.as_str());
        let mut retry = Retry::new(OP);
        loop {
            if let Some(stored) = self.get_entity::<MessageRecord>(OP, &message_key).await? {
                return Ok(Inserted::Existing(stored.message).into());
            }
            let Some(session) = self.get_entity::<Rec<Session>>(OP, &session_key).await? else {
                return Err(StoreError::Conflict(format!(
                    "{OP}: session {} does not exist",
                    message.session
                )));
            };
            let number = session.value.message_count;
            let bumped = Rec {
                value: Session {
                    message_count: number + 1,
                    ..session.value.clone()
                },
                rev: session.rev,
            };
            let record = MessageRecord {
                message: Message {
                    number,
                    ..message.clone()
                },
                session_created: session.value.created_at,
                rev: 0,
            };
            // The count and the message in one transaction: the count moves
            // only if this message is stored, and only from what was read.
            // So does the owner's count of open messages, and only while it
            // is below the cap.
            let mut tx = Tx::default();
            tx.entity(Some(&session), Some(&bumped))?;
            tx.entity(None, Some(&record))?;
            let counts = keys::user_counts(message.owner.as_str());
            let counted = (!message.status.is_final())
                .then(|| tx.count(counts, OPEN_MESSAGES, 1, Some(max_open)));
            match self.commit(OP, tx).await? {
                Outcome::Done => return Ok(Inserted::New(record.message).into()),
                outcome if outcome.failed(counted) => {
                    // At the cap, unless a retry of this very message
                    // stored it meanwhile.
                    return Ok(
                        match self.get_entity::<MessageRecord>(OP, &message_key).await? {
                            Some(stored) => Inserted::Existing(stored.message).into(),
                            None => Capped::Full,
                        },
                    );
                }
                // Stored by a concurrent insert of the same id, or the count
                // moved: read again.
                Outcome::Cancelled(_) => retry.again().await?,
            }
        }
    }

    async fn message(&self, id: &MessageId) -> StoreResult<Option<Message>> {
        Ok(self
            .get_entity::<MessageRecord>("message", &keys::message(id.as_str()))
            .await?
            .map(|r| r.message))
    }

    async fn messages_of(
        &self,
        session: &SessionId,
        from: u32,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        const OP: &str = "messages_of";
        let q = QuerySpec::between(
            &keys::session_pk(session.as_str()),
            &keys::session_message_sk(from),
            &keys::session_message_sk(u32::MAX),
        )
        .limit(limit);
        let ids = self.query_targets(OP, q).await?;
        let keys = ids.iter().map(|id| keys::message(id)).collect();
        let messages = self.get_many::<MessageRecord>(OP, keys).await?;
        Ok(messages.into_iter().map(|r| r.message).collect())
    }

    async fn open_messages(&self, worker: &WorkerId) -> StoreResult<Vec<Message>> {
        const OP: &str = "open_messages";
        let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::OPEN_ENTRY);
        let ids = self.query_targets(OP, q).await?;
        let keys = ids.iter().map(|id| keys::message(id)).collect();
        let messages = self.get_many::<MessageRecord>(OP, keys).await?;
        Ok(messages.into_iter().map(|r| r.message).collect())
    }

    async fn transition_message(
        &self,
        id: &MessageId,
        from: &[MessageStatus],
        to: MessageStatus,
        patch: &MessagePatch,
        now: Millis,
    ) -> StoreResult<Option<Message>> {
        const OP: &str = "transition_message";
        if from.is_empty() {
            return Ok(None);
        }
        let key = keys::message(id.as_str());
        if from.iter().all(|s| s.is_final() == to.is_final()) {
            // The open entry and the owner's count of open messages stay as
            // they are: one conditional update.
            let statuses: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
            let u = Update::new(key, status_in(&statuses))
                .set(STATUS, items::s(to.as_str()))
                .set(UPDATED_AT, items::n(now))
                .set_opt("chunk_count", patch.chunk_count.map(items::n))
                .set_opt("error", patch.error.as_deref().map(items::s));
            return match self.update(OP, u).await? {
                Some(item) => Ok(Some(MessageRecord::from_item(&item)?.message)),
                None => Ok(None),
            };
        }
        let mut retry = Retry::new(OP);
        loop {
            let Some(old) = self.get_entity::<MessageRecord>(OP, &key).await? else {
                return Ok(None);
            };
            if !from.contains(&old.message.status) {
                return Ok(None);
            }
            let m = &old.message;
            let new = MessageRecord {
                message: Message {
                    status: to,
                    chunk_count: patch.chunk_count.or(m.chunk_count),
                    error: patch.error.clone().or_else(|| m.error.clone()),
                    updated_at: now,
                    ..m.clone()
                },
                ..old.clone()
            };
            // The open entry and the owner's count of open messages move
            // together.
            let delta = i64::from(!to.is_final()) - i64::from(!m.status.is_final());
            let counts = keys::user_counts(m.owner.as_str());
            match self
                .replace_counted(OP, &old, &new, counts, OPEN_MESSAGES, delta)
                .await?
            {
                Decided::Done => return Ok(Some(new.message)),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    // ---- chunks ----

    async fn insert_chunk(&self, chunk: &Chunk) -> StoreResult<Inserted<Chunk>> {
        const OP: &str = "insert_chunk";
        match self.put_if_absent(OP, items::chunk_item(chunk)?).await? {
            Ok(()) => Ok(Inserted::New(chunk.clone())),
            Err(Some(stored)) => Ok(Inserted::Existing(items::chunk_from_item(&stored)?)),
            Err(None) => {
                let key = keys::chunk(chunk.message.as_str(), chunk.seq);
                match self.get(OP, &key).await? {
                    Some(stored) => Ok(Inserted::Existing(items::chunk_from_item(&stored)?)),
                    None => Err(StoreError::Unavailable(format!(
                        "{OP}: chunk {} of {} was neither inserted nor found",
                        chunk.seq, chunk.message
                    ))),
                }
            }
        }
    }

    async fn chunks(&self, message: &MessageId, from: u32, limit: u32) -> StoreResult<Vec<Chunk>> {
        let q = QuerySpec::between(
            &keys::message_pk(message.as_str()),
            &keys::chunk_sk(from),
            &keys::chunk_sk(u32::MAX),
        )
        .limit(limit);
        self.query("chunks", q)
            .await?
            .iter()
            .map(items::chunk_from_item)
            .collect()
    }

    // ---- prompts ----

    async fn insert_prompt(&self, prompt: &Prompt) -> StoreResult<Inserted<Prompt>> {
        Ok(
            match self
                .insert_or_existing("insert_prompt", Rec::new(prompt.clone()))
                .await?
            {
                Inserted::New(r) => Inserted::New(r.value),
                Inserted::Existing(r) => Inserted::Existing(r.value),
            },
        )
    }

    async fn prompt(&self, id: &PromptId) -> StoreResult<Option<Prompt>> {
        Ok(self
            .get_entity::<Rec<Prompt>>("prompt", &keys::prompt(id.as_str()))
            .await?
            .map(|r| r.value))
    }

    async fn answer_prompt(
        &self,
        id: &PromptId,
        answer: &PromptAnswer,
    ) -> StoreResult<Option<Prompt>> {
        const OP: &str = "answer_prompt";
        let key = keys::prompt(id.as_str());
        let mut retry = Retry::new(OP);
        loop {
            let Some(old) = self.get_entity::<Rec<Prompt>>(OP, &key).await? else {
                return Ok(None);
            };
            if old.value.answer.is_some() {
                return Ok(None);
            }
            let new = Rec {
                value: Prompt {
                    answer: Some(answer.clone()),
                    ..old.value.clone()
                },
                rev: old.rev,
            };
            match self.replace(OP, &old, &new).await? {
                Decided::Done => return Ok(Some(new.value)),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn set_prompt_delivered(&self, id: &PromptId) -> StoreResult<()> {
        const OP: &str = "set_prompt_delivered";
        let key = keys::prompt(id.as_str());
        let mut retry = Retry::new(OP);
        loop {
            let Some(old) = self.get_entity::<Rec<Prompt>>(OP, &key).await? else {
                return Ok(());
            };
            if old.value.delivered {
                return Ok(());
            }
            let new = Rec {
                value: Prompt {
                    delivered: true,
                    ..old.value.clone()
                },
                rev: old.rev,
            };
            match self.replace(OP, &old, &new).await? {
                Decided::Done => return Ok(()),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn undelivered_prompts(&self, worker: &WorkerId) -> StoreResult<Vec<Prompt>> {
        const OP: &str = "undelivered_prompts";
        let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::UNDELIVERED_ENTRY);
        let ids = self.query_targets(OP, q).await?;
        let keys = ids.iter().map(|id| keys::prompt(id)).collect();
        let prompts = self.get_many::<Rec<Prompt>>(OP, keys).await?;
        Ok(prompts.into_iter().map(|r| r.value).collect())
    }
}
