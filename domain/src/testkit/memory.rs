//! [`MemoryStore`]: the store port in memory, so that the domain's own tests
//! run the handler scenarios and the store contract without a database.
//!
//! One `std::sync::Mutex` over every table: each method locks once, does all
//! its reads and writes, and unlocks before it returns (no lock is held
//! across an `.await`), so every method is atomic and every conditional
//! write sees the state its condition was checked on. Orders and ties
//! follow `SqliteStore`'s queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::auth::SecretHash;
use crate::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use crate::model::{
    Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Principal, Prompt, Session,
    SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
use crate::protocol::{AgentReport, PromptAnswer};
use crate::store::{
    Capped, Inserted, MessagePatch, SessionPatch, Store, StoreError, StoreResult, WorkerProfile,
};

/// The store port on maps in memory. Clones share the tables.
#[derive(Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
}

#[derive(Default)]
struct Tables {
    users: HashMap<UserId, User>,
    tickets: HashMap<SecretHash, Ticket>,
    pairing_tokens: HashMap<SecretHash, PairingToken>,
    /// key → (window start, count, expires at)
    rate_limits: HashMap<String, (Millis, u32, Millis)>,
    workers: HashMap<WorkerId, Worker>,
    connections: HashMap<ConnectionId, Connection>,
    /// (session, connection)
    watches: BTreeSet<(SessionId, ConnectionId)>,
    sessions: HashMap<SessionId, Session>,
    messages: HashMap<MessageId, Message>,
    chunks: BTreeMap<(MessageId, u32), Chunk>,
    prompts: HashMap<PromptId, Prompt>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panicking check poisons the lock; the tables are still consistent
        // (every method finishes its writes before it can panic).
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tables {
    fn insert_worker(&mut self, w: &Worker) -> StoreResult<()> {
        if self.workers.contains_key(&w.id) {
            return Err(StoreError::Conflict(format!("worker {} exists", w.id)));
        }
        if self
            .workers
            .values()
            .any(|o| o.credential_hash == w.credential_hash)
        {
            return Err(StoreError::Conflict("worker credential taken".into()));
        }
        self.workers.insert(w.id.clone(), w.clone());
        Ok(())
    }

    fn delete_connection(&mut self, id: &ConnectionId) -> Option<Connection> {
        self.watches.retain(|(_, c)| c != id);
        self.connections.remove(id)
    }

    fn connection_ids<'a>(conns: impl Iterator<Item = &'a Connection>) -> Vec<ConnectionId> {
        let mut found: Vec<&Connection> = conns.collect();
        found.sort_by(|a, b| (a.connected_at, &a.id).cmp(&(b.connected_at, &b.id)));
        found.into_iter().map(|c| c.id.clone()).collect()
    }
}

/// Takes `key` out of `map`: what was stored, if it had not expired at `now`.
fn take_unexpired<K, V>(
    map: &mut HashMap<K, V>,
    key: &K,
    now: Millis,
    expires_at: fn(&V) -> Millis,
) -> Option<V>
where
    K: std::hash::Hash + Eq,
{
    map.remove(key).filter(|v| expires_at(v) > now)
}

impl Store for MemoryStore {
    // ---- users ----

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut t = self.tables();
        let taken = t
            .users
            .values()
            .any(|u| u.id == user.id || u.name == user.name || u.secret_hash == user.secret_hash);
        if taken {
            return Err(StoreError::Conflict(format!("user {} taken", user.name)));
        }
        t.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        Ok(self.tables().users.get(id).cloned())
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        Ok(self
            .tables()
            .users
            .values()
            .find(|u| u.name == name)
            .cloned())
    }

    async fn user_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<User>> {
        let t = self.tables();
        Ok(t.users.values().find(|u| &u.secret_hash == hash).cloned())
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let mut users: Vec<User> = self.tables().users.values().cloned().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    async fn set_user_secret(&self, id: &UserId, hash: &SecretHash) -> StoreResult<bool> {
        let mut t = self.tables();
        if t.users
            .values()
            .any(|u| &u.secret_hash == hash && &u.id != id)
        {
            return Err(StoreError::Conflict("user secret taken".into()));
        }
        Ok(t.users
            .get_mut(id)
            .map(|u| u.secret_hash = hash.clone())
            .is_some())
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        Ok(self.tables().users.remove(id).is_some())
    }

    // ---- tickets and pairing tokens ----

    async fn put_ticket(&self, hash: &SecretHash, ticket: &Ticket) -> StoreResult<()> {
        self.tables().tickets.insert(hash.clone(), ticket.clone());
        Ok(())
    }

    async fn take_ticket(&self, hash: &SecretHash, now: Millis) -> StoreResult<Option<Ticket>> {
        let mut t = self.tables();
        Ok(take_unexpired(&mut t.tickets, hash, now, |t| t.expires_at))
    }

    async fn put_pairing_token(&self, hash: &SecretHash, token: &PairingToken) -> StoreResult<()> {
        self.tables()
            .pairing_tokens
            .insert(hash.clone(), token.clone());
        Ok(())
    }

    async fn take_pairing_token(
        &self,
        hash: &SecretHash,
        now: Millis,
    ) -> StoreResult<Option<PairingToken>> {
        let mut t = self.tables();
        Ok(take_unexpired(&mut t.pairing_tokens, hash, now, |t| {
            t.expires_at
        }))
    }

    async fn count_attempt(
        &self,
        key: &str,
        window_start: Millis,
        window_end: Millis,
        limit: u32,
    ) -> StoreResult<bool> {
        let mut t = self.tables();
        let Some((start, count, expires_at)) = t.rate_limits.get_mut(key) else {
            t.rate_limits
                .insert(key.to_owned(), (window_start, 1, window_end));
            return Ok(true);
        };
        if window_start > *start {
            (*start, *count) = (window_start, 1);
        } else if *count < limit {
            *count += 1;
        } else {
            return Ok(false);
        }
        *expires_at = (*expires_at).max(window_end);
        Ok(true)
    }

    // ---- workers ----

    async fn create_worker(&self, worker: &Worker) -> StoreResult<()> {
        self.tables().insert_worker(worker)
    }

    async fn create_pending_worker(
        &self,
        worker: &Worker,
        max_per_source: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut t = self.tables();
        if let Some(source) = &worker.source {
            let pending = t.workers.values().filter(|w| {
                w.status == WorkerStatus::Pending
                    && w.source.as_ref() == Some(source)
                    && w.pairing_expires_at.is_some_and(|at| at > now)
            });
            if pending.count() >= max_per_source as usize {
                return Ok(false);
            }
        }
        t.insert_worker(worker)?;
        Ok(true)
    }

    async fn delete_expired_pending(&self, id: &WorkerId, now: Millis) -> StoreResult<bool> {
        let mut t = self.tables();
        if !t.workers.get(id).is_some_and(|w| w.pairing_expired(now)) {
            return Ok(false);
        }
        Ok(t.workers.remove(id).is_some())
    }

    async fn worker(&self, id: &WorkerId) -> StoreResult<Option<Worker>> {
        Ok(self.tables().workers.get(id).cloned())
    }

    async fn worker_by_credential(&self, hash: &SecretHash) -> StoreResult<Option<Worker>> {
        let t = self.tables();
        Ok(t.workers
            .values()
            .find(|w| &w.credential_hash == hash)
            .cloned())
    }

    async fn worker_by_pairing_code(&self, code: &str) -> StoreResult<Option<Worker>> {
        let t = self.tables();
        let with_code = t
            .workers
            .values()
            .filter(|w| w.pairing_code.as_deref() == Some(code));
        Ok(with_code
            .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .cloned())
    }

    async fn workers_of(&self, owner: &UserId) -> StoreResult<Vec<Worker>> {
        let t = self.tables();
        let mut found: Vec<Worker> = t
            .workers
            .values()
            .filter(|w| w.owner.as_ref() == Some(owner))
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    async fn pending_workers(
        &self,
        now: Millis,
        after: Option<(Millis, &WorkerId)>,
        limit: u32,
    ) -> StoreResult<Vec<Worker>> {
        let t = self.tables();
        let mut found: Vec<Worker> = t
            .workers
            .values()
            .filter(|w| w.status == WorkerStatus::Pending)
            .filter(|w| w.pairing_expires_at.is_some_and(|at| at > now))
            .filter(|w| after.is_none_or(|(at, id)| (w.created_at, &w.id) > (at, id)))
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn transition_worker(
        &self,
        id: &WorkerId,
        from: WorkerStatus,
        to: WorkerStatus,
        owner: Option<&UserId>,
        name: Option<&str>,
    ) -> StoreResult<Option<Worker>> {
        let mut t = self.tables();
        let Some(w) = t.workers.get_mut(id).filter(|w| w.status == from) else {
            return Ok(None);
        };
        w.status = to;
        w.pairing_code = None;
        w.pairing_expires_at = None;
        if let Some(owner) = owner {
            w.owner = Some(owner.clone());
        }
        if let Some(name) = name {
            w.name = name.to_owned();
        }
        Ok(Some(w.clone()))
    }

    async fn set_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
        now: Millis,
    ) -> StoreResult<()> {
        if let Some(w) = self.tables().workers.get_mut(id) {
            w.connection = Some(connection.clone());
            w.last_seen = Some(now);
        }
        Ok(())
    }

    async fn clear_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
    ) -> StoreResult<bool> {
        let mut t = self.tables();
        let Some(w) = t
            .workers
            .get_mut(id)
            .filter(|w| w.connection.as_ref() == Some(connection))
        else {
            return Ok(false);
        };
        w.connection = None;
        Ok(true)
    }

    async fn touch_worker(&self, id: &WorkerId, now: Millis) -> StoreResult<()> {
        if let Some(w) = self.tables().workers.get_mut(id) {
            w.last_seen = Some(now);
        }
        Ok(())
    }

    async fn set_worker_profile(&self, id: &WorkerId, profile: &WorkerProfile) -> StoreResult<()> {
        let mut t = self.tables();
        let Some(w) = t.workers.get_mut(id) else {
            return Ok(());
        };
        let p = profile.clone();
        for (field, given) in [
            (&mut w.machine, p.machine),
            (&mut w.name, p.name),
            (&mut w.workdir, p.workdir),
        ] {
            if let Some(given) = given {
                *field = given;
            }
        }
        if p.version.is_some() {
            w.version = p.version;
        }
        if !p.models.is_empty() {
            w.models = p.models;
        }
        if p.default_model.is_some() {
            w.default_model = p.default_model;
        }
        Ok(())
    }

    async fn set_agent_state(
        &self,
        id: &WorkerId,
        report: &AgentReport,
    ) -> StoreResult<Option<Worker>> {
        let mut t = self.tables();
        let newer = |w: &&mut Worker| w.agent.as_ref().is_none_or(|a| a.at < report.at);
        let Some(w) = t.workers.get_mut(id).filter(newer) else {
            return Ok(None);
        };
        w.agent = Some(report.clone());
        Ok(Some(w.clone()))
    }

    // ---- connections ----

    async fn put_connection(&self, conn: &Connection) -> StoreResult<()> {
        self.tables()
            .connections
            .insert(conn.id.clone(), conn.clone());
        Ok(())
    }

    async fn connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        Ok(self.tables().connections.get(id).cloned())
    }

    async fn delete_connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        Ok(self.tables().delete_connection(id))
    }

    async fn touch_connection(&self, id: &ConnectionId, now: Millis) -> StoreResult<()> {
        if let Some(c) = self.tables().connections.get_mut(id) {
            c.last_seen = now;
        }
        Ok(())
    }

    async fn user_connections(&self, user: &UserId, now: Millis) -> StoreResult<Vec<ConnectionId>> {
        let t = self.tables();
        let principal = Principal::User(user.clone());
        let mine = t.connections.values();
        Ok(Tables::connection_ids(mine.filter(|c| {
            c.principal == principal && c.expires_at > now
        })))
    }

    async fn set_connections_owner(&self, worker: &WorkerId, owner: &UserId) -> StoreResult<()> {
        let principal = Principal::Worker(worker.clone());
        for c in self.tables().connections.values_mut() {
            if c.principal == principal {
                c.owner = Some(owner.clone());
            }
        }
        Ok(())
    }

    async fn worker_connections(&self, worker: &WorkerId) -> StoreResult<Vec<ConnectionId>> {
        let t = self.tables();
        let principal = Principal::Worker(worker.clone());
        Ok(Tables::connection_ids(
            t.connections.values().filter(|c| c.principal == principal),
        ))
    }

    async fn connection_count(&self, principal: &Principal, now: Millis) -> StoreResult<u32> {
        let t = self.tables();
        let live = t.connections.values();
        let n = live
            .filter(|c| &c.principal == principal && c.expires_at > now)
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn watch(&self, session: &SessionId, conn: &ConnectionId) -> StoreResult<bool> {
        let mut t = self.tables();
        if !t.connections.contains_key(conn) {
            return Ok(false);
        }
        t.watches.insert((session.clone(), conn.clone()));
        Ok(true)
    }

    async fn unwatch(&self, session: &SessionId, conn: &ConnectionId) -> StoreResult<()> {
        self.tables()
            .watches
            .remove(&(session.clone(), conn.clone()));
        Ok(())
    }

    async fn watchers(&self, session: &SessionId) -> StoreResult<Vec<ConnectionId>> {
        let t = self.tables();
        let of_session = t.watches.iter().filter(|(s, _)| s == session);
        Ok(of_session.map(|(_, c)| c.clone()).collect())
    }

    // ---- sessions ----

    async fn insert_session(
        &self,
        session: &Session,
        max_live: u32,
    ) -> StoreResult<Capped<Session>> {
        let mut t = self.tables();
        if let Some(stored) = t.sessions.get(&session.id) {
            return Ok(Inserted::Existing(stored.clone()).into());
        }
        if !session.status.is_closed() {
            let sessions = t.sessions.values();
            let live = sessions.filter(|s| s.owner == session.owner && !s.status.is_closed());
            if live.count() >= max_live as usize {
                return Ok(Capped::Full);
            }
        }
        t.sessions.insert(session.id.clone(), session.clone());
        Ok(Inserted::New(session.clone()).into())
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        Ok(self.tables().sessions.get(id).cloned())
    }

    async fn sessions_of(
        &self,
        owner: &UserId,
        worker: Option<&WorkerId>,
        before: Option<Millis>,
        limit: u32,
    ) -> StoreResult<Vec<Session>> {
        let t = self.tables();
        let mut found: Vec<Session> = t
            .sessions
            .values()
            .filter(|s| &s.owner == owner && worker.is_none_or(|w| &s.worker == w))
            .filter(|s| before.is_none_or(|b| s.created_at < b))
            .cloned()
            .collect();
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn starting_sessions(&self, worker: &WorkerId) -> StoreResult<Vec<Session>> {
        let t = self.tables();
        let mut found: Vec<Session> = t
            .sessions
            .values()
            .filter(|s| &s.worker == worker && s.status == SessionStatus::Starting)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    async fn transition_session(
        &self,
        id: &SessionId,
        from: &[SessionStatus],
        to: SessionStatus,
        patch: &SessionPatch,
        now: Millis,
    ) -> StoreResult<Option<Session>> {
        let mut t = self.tables();
        let Some(s) = t.sessions.get_mut(id).filter(|s| from.contains(&s.status)) else {
            return Ok(None);
        };
        s.status = to;
        if let Some(agent_session_id) = &patch.agent_session_id {
            s.agent_session_id = Some(agent_session_id.clone());
        }
        if let Some(error) = &patch.error {
            s.error = Some(error.clone());
        }
        s.updated_at = now;
        Ok(Some(s.clone()))
    }

    async fn set_agent_title(
        &self,
        id: &SessionId,
        title: &str,
        now: Millis,
    ) -> StoreResult<Option<Session>> {
        let mut t = self.tables();
        let untitled_by_user = |s: &&mut Session| s.title_source != Some(TitleSource::User);
        let Some(s) = t.sessions.get_mut(id).filter(untitled_by_user) else {
            return Ok(None);
        };
        s.title = title.to_owned();
        s.title_source = Some(TitleSource::Agent);
        s.updated_at = now;
        Ok(Some(s.clone()))
    }

    // ---- messages ----

    async fn insert_message(
        &self,
        message: &Message,
        max_open: u32,
    ) -> StoreResult<Capped<Message>> {
        let mut t = self.tables();
        if let Some(stored) = t.messages.get(&message.id) {
            return Ok(Inserted::Existing(stored.clone()).into());
        }
        let Some(number) = t.sessions.get(&message.session).map(|s| s.message_count) else {
            let why = format!("insert_message: session {} does not exist", message.session);
            return Err(StoreError::Conflict(why));
        };
        if !message.status.is_final() {
            let messages = t.messages.values();
            let open = messages.filter(|m| m.owner == message.owner && !m.status.is_final());
            if open.count() >= max_open as usize {
                return Ok(Capped::Full);
            }
        }
        if let Some(s) = t.sessions.get_mut(&message.session) {
            s.message_count += 1;
        }
        let stored = Message {
            number,
            ..message.clone()
        };
        t.messages.insert(stored.id.clone(), stored.clone());
        Ok(Inserted::New(stored).into())
    }

    async fn message(&self, id: &MessageId) -> StoreResult<Option<Message>> {
        Ok(self.tables().messages.get(id).cloned())
    }

    async fn messages_of(
        &self,
        session: &SessionId,
        from: u32,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let t = self.tables();
        let mut found: Vec<Message> = t
            .messages
            .values()
            .filter(|m| &m.session == session && m.number >= from)
            .cloned()
            .collect();
        found.sort_by_key(|m| m.number);
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn open_messages(&self, worker: &WorkerId) -> StoreResult<Vec<Message>> {
        let t = self.tables();
        let mut found: Vec<(Millis, SessionId, Message)> = t
            .messages
            .values()
            .filter(|m| &m.worker == worker && !m.status.is_final())
            .filter_map(|m| {
                let s = t.sessions.get(&m.session)?;
                Some((s.created_at, s.id.clone(), m.clone()))
            })
            .collect();
        found.sort_by(|a, b| (a.0, &a.1, a.2.number).cmp(&(b.0, &b.1, b.2.number)));
        Ok(found.into_iter().map(|(_, _, m)| m).collect())
    }

    async fn transition_message(
        &self,
        id: &MessageId,
        from: &[MessageStatus],
        to: MessageStatus,
        patch: &MessagePatch,
        now: Millis,
    ) -> StoreResult<Option<Message>> {
        let mut t = self.tables();
        let Some(m) = t.messages.get_mut(id).filter(|m| from.contains(&m.status)) else {
            return Ok(None);
        };
        m.status = to;
        if let Some(chunk_count) = patch.chunk_count {
            m.chunk_count = Some(chunk_count);
        }
        if let Some(error) = &patch.error {
            m.error = Some(error.clone());
        }
        m.updated_at = now;
        Ok(Some(m.clone()))
    }

    // ---- chunks ----

    async fn insert_chunk(&self, chunk: &Chunk) -> StoreResult<Inserted<Chunk>> {
        let mut t = self.tables();
        let key = (chunk.message.clone(), chunk.seq);
        if let Some(stored) = t.chunks.get(&key) {
            return Ok(Inserted::Existing(stored.clone()));
        }
        t.chunks.insert(key, chunk.clone());
        Ok(Inserted::New(chunk.clone()))
    }

    async fn chunks(&self, message: &MessageId, from: u32, limit: u32) -> StoreResult<Vec<Chunk>> {
        let t = self.tables();
        let range = t
            .chunks
            .range((message.clone(), from)..=(message.clone(), u32::MAX));
        Ok(range.take(limit as usize).map(|(_, c)| c.clone()).collect())
    }

    // ---- prompts ----

    async fn insert_prompt(&self, prompt: &Prompt) -> StoreResult<Inserted<Prompt>> {
        let mut t = self.tables();
        if let Some(stored) = t.prompts.get(&prompt.id) {
            return Ok(Inserted::Existing(stored.clone()));
        }
        t.prompts.insert(prompt.id.clone(), prompt.clone());
        Ok(Inserted::New(prompt.clone()))
    }

    async fn prompt(&self, id: &PromptId) -> StoreResult<Option<Prompt>> {
        Ok(self.tables().prompts.get(id).cloned())
    }

    async fn answer_prompt(
        &self,
        id: &PromptId,
        answer: &PromptAnswer,
    ) -> StoreResult<Option<Prompt>> {
        let mut t = self.tables();
        let Some(p) = t.prompts.get_mut(id).filter(|p| p.answer.is_none()) else {
            return Ok(None);
        };
        p.answer = Some(answer.clone());
        Ok(Some(p.clone()))
    }

    async fn set_prompt_delivered(&self, id: &PromptId) -> StoreResult<()> {
        if let Some(p) = self.tables().prompts.get_mut(id) {
            p.delivered = true;
        }
        Ok(())
    }

    async fn purge_expired(&self, now: Millis) -> StoreResult<u64> {
        let mut t = self.tables();
        let before = t.tickets.len() + t.pairing_tokens.len() + t.rate_limits.len();
        t.tickets.retain(|_, ticket| ticket.expires_at > now);
        t.pairing_tokens.retain(|_, token| token.expires_at > now);
        t.rate_limits
            .retain(|_, (_, _, expires_at)| *expires_at > now);
        let mut purged = before - (t.tickets.len() + t.pairing_tokens.len() + t.rate_limits.len());
        let expired: Vec<ConnectionId> = t
            .connections
            .values()
            .filter(|c| c.expires_at <= now)
            .map(|c| c.id.clone())
            .collect();
        for id in &expired {
            t.delete_connection(id);
        }
        let workers = t.workers.len();
        t.workers.retain(|_, w| !w.pairing_expired(now));
        purged += expired.len() + (workers - t.workers.len());
        let Tables {
            workers,
            connections,
            ..
        } = &mut *t;
        for w in workers.values_mut() {
            if w.connection
                .as_ref()
                .is_some_and(|c| !connections.contains_key(c))
            {
                w.connection = None;
            }
        }
        Ok(purged as u64)
    }

    async fn undelivered_prompts(&self, worker: &WorkerId) -> StoreResult<Vec<Prompt>> {
        let t = self.tables();
        let mut found: Vec<Prompt> = t
            .prompts
            .values()
            .filter(|p| &p.worker == worker && p.answer.is_some() && !p.delivered)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        super::super::store_contract(|| async { MemoryStore::new() }).await;
    }

    #[tokio::test]
    async fn runs_the_handler_scenarios() {
        super::super::handler_scenarios(|| async { MemoryStore::new() }).await;
    }
}
