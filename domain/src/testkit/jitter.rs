//! A store wrapper that pauses for a random moment before every call, so
//! that concurrent handlers interleave in many more ways than a fast store
//! allows. Handler races that need an unlucky schedule show up in tests.

use std::time::Duration;

use rand::Rng;

use crate::auth::SecretHash;
use crate::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use crate::model::{
    Chunk, Connection, Message, MessageStatus, Millis, Prompt, Session, SessionStatus, Ticket,
    User, Worker, WorkerStatus,
};
use crate::protocol::{AgentReport, PromptAnswer};
use crate::store::{
    Capped, Inserted, MessagePatch, SessionPatch, Store, StoreResult, WorkerProfile,
};

/// Wraps a store; each call first sleeps 0 to `max_pause` (or just yields).
#[derive(Clone)]
pub struct Jitter<S> {
    inner: S,
    max_pause: Duration,
}

impl<S: Store> Jitter<S> {
    pub fn new(inner: S, max_pause: Duration) -> Self {
        Self { inner, max_pause }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn pause(&self) {
        let micros = self.max_pause.as_micros() as u64;
        let pick = rand::rng().random_range(0..=micros);
        if pick < micros / 4 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(pick)).await;
        }
    }
}

impl<S: Store> Store for Jitter<S> {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.pause().await;
        self.inner.create_user(user).await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        self.pause().await;
        self.inner.user(id).await
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        self.pause().await;
        self.inner.user_by_name(name).await
    }

    async fn user_by_secret(&self, hash: &SecretHash,) -> StoreResult<Option<User>> {
        self.pause().await;
        self.inner.user_by_secret(hash).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.pause().await;
        self.inner.users().await
    }

    async fn set_user_secret(&self, id: &UserId, hash: &SecretHash,) -> StoreResult<bool> {
        self.pause().await;
        self.inner.set_user_secret(id, hash).await
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        self.pause().await;
        self.inner.delete_user(id).await
    }

    async fn put_ticket(&self, hash: &SecretHash, ticket: &Ticket) -> StoreResult<()> {
        self.pause().await;
        self.inner.put_ticket(hash, ticket).await
    }

    async fn take_ticket(&self, hash: &SecretHash, now: Millis,) -> StoreResult<Option<Ticket>> {
        self.pause().await;
        self.inner.take_ticket(hash, now).await
    }

    async fn put_pairing_token(&self, hash: &SecretHash, token: &crate::model::PairingToken) -> StoreResult<()> {
        self.pause().await;
        self.inner.put_pairing_token(hash, token).await
    }

    async fn take_pairing_token(&self, hash: &SecretHash, now: Millis) -> StoreResult<Option<crate::model::PairingToken>> {
        self.pause().await;
        self.inner.take_pairing_token(hash, now).await
    }

    async fn count_attempt(&self, key: &str, window_start: Millis, window_end: Millis, limit: u32) -> StoreResult<bool> {
        self.pause().await;
        self.inner.count_attempt(key, window_start, window_end, limit).await
    }

    async fn create_worker(&self, worker: &Worker) -> StoreResult<()> {
        self.pause().await;
        self.inner.create_worker(worker).await
    }

    async fn create_pending_worker(&self, worker: &Worker, max_per_source: u32, now: Millis) -> StoreResult<bool> {
        self.pause().await;
        self.inner.create_pending_worker(worker, max_per_source, now).await
    }

    async fn delete_expired_pending(&self, id: &WorkerId, now: Millis) -> StoreResult<bool> {
        self.pause().await;
        self.inner.delete_expired_pending(id, now).await
    }

    async fn worker(&self, id: &WorkerId) -> StoreResult<Option<Worker>> {
        self.pause().await;
        self.inner.worker(id).await
    }

    async fn worker_by_credential(&self, hash: &SecretHash,) -> StoreResult<Option<Worker>> {
        self.pause().await;
        self.inner.worker_by_credential(hash).await
    }

    async fn worker_by_pairing_code(&self, code: &str,) -> StoreResult<Option<Worker>> {
        self.pause().await;
        self.inner.worker_by_pairing_code(code).await
    }

    async fn workers_of(&self, owner: &UserId) -> StoreResult<Vec<Worker>> {
        self.pause().await;
        self.inner.workers_of(owner).await
    }

    async fn pending_workers(&self, now: Millis, after: Option<(Millis, &WorkerId)>, limit: u32) -> StoreResult<Vec<Worker>> {
        self.pause().await;
        self.inner.pending_workers(now, after, limit).await
    }

    async fn transition_worker(&self, id: &WorkerId, from: WorkerStatus, to: WorkerStatus, owner: Option<&UserId>, name: Option<&str>,) -> StoreResult<Option<Worker>> {
        self.pause().await;
        self.inner.transition_worker(id, from, to, owner, name).await
    }

    async fn set_worker_connection(&self, id: &WorkerId, connection: &ConnectionId, now: Millis,) -> StoreResult<()> {
        self.pause().await;
        self.inner.set_worker_connection(id, connection, now).await
    }

    async fn clear_worker_connection(&self, id: &WorkerId, connection: &ConnectionId,) -> StoreResult<bool> {
        self.pause().await;
        self.inner.clear_worker_connection(id, connection).await
    }

    async fn touch_worker(&self, id: &WorkerId, now: Millis) -> StoreResult<()> {
        self.pause().await;
        self.inner.touch_worker(id, now).await
    }

    async fn set_worker_profile(&self, id: &WorkerId, profile: &WorkerProfile,) -> StoreResult<()> {
        self.pause().await;
        self.inner.set_worker_profile(id, profile).await
    }

    async fn set_agent_state(&self, id: &WorkerId, report: &AgentReport) -> StoreResult<Option<Worker>> {
        self.pause().await;
        self.inner.set_agent_state(id, report).await
    }

    async fn set_agent_title(&self, id: &SessionId, title: &str, now: Millis) -> StoreResult<Option<Session>> {
        self.pause().await;
        self.inner.set_agent_title(id, title, now).await
    }

    async fn put_connection(&self, conn: &Connection) -> StoreResult<()> {
        self.pause().await;
        self.inner.put_connection(conn).await
    }

    async fn connection(&self, id: &ConnectionId,) -> StoreResult<Option<Connection>> {
        self.pause().await;
        self.inner.connection(id).await
    }

    async fn delete_connection(&self, id: &ConnectionId,) -> StoreResult<Option<Connection>> {
        self.pause().await;
        self.inner.delete_connection(id).await
    }

    async fn touch_connection(&self, id: &ConnectionId, now: Millis,) -> StoreResult<()> {
        self.pause().await;
        self.inner.touch_connection(id, now).await
    }

    async fn user_connections(&self, user: &UserId, now: Millis,) -> StoreResult<Vec<ConnectionId>> {
        self.pause().await;
        self.inner.user_connections(user, now).await
    }

    async fn set_connections_owner(&self, worker: &WorkerId, owner: &UserId,) -> StoreResult<()> {
        self.pause().await;
        self.inner.set_connections_owner(worker, owner).await
    }

    async fn worker_connections(&self, worker: &WorkerId,) -> StoreResult<Vec<ConnectionId>> {
        self.pause().await;
        self.inner.worker_connections(worker).await
    }

    async fn connection_count(&self, principal: &crate::model::Principal, now: Millis) -> StoreResult<u32> {
        self.pause().await;
        self.inner.connection_count(principal, now).await
    }

    async fn watch(&self, session: &SessionId, conn: &ConnectionId,) -> StoreResult<bool> {
        self.pause().await;
        self.inner.watch(session, conn).await
    }

    async fn unwatch(&self, session: &SessionId, conn: &ConnectionId,) -> StoreResult<()> {
        self.pause().await;
        self.inner.unwatch(session, conn).await
    }

    async fn watchers(&self, session: &SessionId,) -> StoreResult<Vec<ConnectionId>> {
        self.pause().await;
        self.inner.watchers(session).await
    }

    async fn insert_session(&self, session: &Session, max_live: u32) -> StoreResult<Capped<Session>> {
        self.pause().await;
        self.inner.insert_session(session, max_live).await
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.pause().await;
        self.inner.session(id).await
    }

    async fn sessions_of(&self, owner: &UserId, worker: Option<&WorkerId>, before: Option<Millis>, limit: u32,) -> StoreResult<Vec<Session>> {
        self.pause().await;
        self.inner.sessions_of(owner, worker, before, limit).await
    }

    async fn starting_sessions(&self, worker: &WorkerId,) -> StoreResult<Vec<Session>> {
        self.pause().await;
        self.inner.starting_sessions(worker).await
    }

    async fn transition_session(&self, id: &SessionId, from: &[SessionStatus], to: SessionStatus, patch: &SessionPatch, now: Millis,) -> StoreResult<Option<Session>> {
        self.pause().await;
        self.inner.transition_session(id, from, to, patch, now).await
    }

    async fn insert_message(&self, message: &Message, max_open: u32) -> StoreResult<Capped<Message>> {
        self.pause().await;
        self.inner.insert_message(message, max_open).await
    }

    async fn message(&self, id: &MessageId) -> StoreResult<Option<Message>> {
        self.pause().await;
        self.inner.message(id).await
    }

    async fn messages_of(&self, session: &SessionId, from: u32, limit: u32,) -> StoreResult<Vec<Message>> {
        self.pause().await;
        self.inner.messages_of(session, from, limit).await
    }

    async fn open_messages(&self, worker: &WorkerId,) -> StoreResult<Vec<Message>> {
        self.pause().await;
        self.inner.open_messages(worker).await
    }

    async fn transition_message(&self, id: &MessageId, from: &[MessageStatus], to: MessageStatus, patch: &MessagePatch, now: Millis,) -> StoreResult<Option<Message>> {
        self.pause().await;
        self.inner.transition_message(id, from, to, patch, now).await
    }

    async fn insert_chunk(&self, chunk: &Chunk) -> StoreResult<Inserted<Chunk>> {
        self.pause().await;
        self.inner.insert_chunk(chunk).await
    }

    async fn chunks(&self, message: &MessageId, from: u32, limit: u32,) -> StoreResult<Vec<Chunk>> {
        self.pause().await;
        self.inner.chunks(message, from, limit).await
    }

    async fn insert_prompt(&self, prompt: &Prompt) -> StoreResult<Inserted<Prompt>> {
        self.pause().await;
        self.inner.insert_prompt(prompt).await
    }

    async fn prompt(&self, id: &PromptId) -> StoreResult<Option<Prompt>> {
        self.pause().await;
        self.inner.prompt(id).await
    }

    async fn answer_prompt(&self, id: &PromptId, answer: &PromptAnswer,) -> StoreResult<Option<Prompt>> {
        self.pause().await;
        self.inner.answer_prompt(id, answer).await
    }

    async fn set_prompt_delivered(&self, id: &PromptId) -> StoreResult<()> {
        self.pause().await;
        self.inner.set_prompt_delivered(id).await
    }

    async fn purge_expired(&self, now: Millis) -> StoreResult<u64> {
        self.pause().await;
        self.inner.purge_expired(now).await
    }

    async fn undelivered_prompts(&self, worker: &WorkerId,) -> StoreResult<Vec<Prompt>> {
        self.pause().await;
        self.inner.undelivered_prompts(worker).await
    }
}
