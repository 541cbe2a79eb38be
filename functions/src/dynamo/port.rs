//! `impl Store for DynamoStore`: each method's operations are listed in
//! `infra/ACCESS_PATTERNS.md`, section 4, and are in the file of its
//! aggregate: `users.rs` (users, tickets), `workers.rs` (pairing tokens,
//! rate limits, workers), `connections.rs` (connections, watches, the
//! purge), `sessions.rs` and `messages.rs` (messages, chunks, prompts), as
//! in the SQLite store. Item mapping is in `items.rs`.

use tether_domain::auth::SecretHash;
use tether_domain::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use tether_domain::model::{
    Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Principal, Prompt, Session,
    SessionStatus, Ticket, User, Worker, WorkerStatus,
};
use tether_domain::protocol::{AgentReport, PromptAnswer};
use tether_domain::store::{
    Capped, Inserted, MessagePatch, SessionPatch, Store, StoreResult, WorkerProfile,
};

use super::{connections, messages, sessions, users, workers, DynamoStore};

impl Store for DynamoStore {
    // ---- users and tickets: users.rs ----

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        users::create_user(self, user).await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        users::user(self, id).await
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        users::user_by_name(self, name).await
    }

    async fn user_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<User>> {
        users::user_by_secret(self, hash).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        users::users(self).await
    }

    async fn set_user_secret(&self, id: &UserId, hash: &SecretHash) -> StoreResult<bool> {
        users::set_user_secret(self, id, hash).await
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        users::delete_user(self, id).await
    }

    async fn put_ticket(&self, hash: &SecretHash, ticket: &Ticket) -> StoreResult<()> {
        users::put_ticket(self, hash, ticket).await
    }

    async fn take_ticket(&self, hash: &SecretHash, now: Millis) -> StoreResult<Option<Ticket>> {
        users::take_ticket(self, hash, now).await
    }

    // ---- pairing tokens, rate limits, workers: workers.rs ----

    async fn put_pairing_token(&self, hash: &SecretHash, token: &PairingToken) -> StoreResult<()> {
        workers::put_pairing_token(self, hash, token).await
    }

    async fn take_pairing_token(
        &self,
        hash: &SecretHash,
        now: Millis,
    ) -> StoreResult<Option<PairingToken>> {
        workers::take_pairing_token(self, hash, now).await
    }

    async fn count_attempt(
        &self,
        key: &str,
        window_start: Millis,
        window_end: Millis,
        limit: u32,
    ) -> StoreResult<bool> {
        workers::count_attempt(self, key, window_start, window_end, limit).await
    }

    async fn create_pending_worker(
        &self,
        worker: &Worker,
        max_per_source: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        workers::create_pending_worker(self, worker, max_per_source, now).await
    }

    async fn delete_expired_pending(&self, id: &WorkerId, now: Millis) -> StoreResult<bool> {
        workers::delete_expired_pending(self, id, now).await
    }

    async fn create_worker(&self, worker: &Worker) -> StoreResult<()> {
        workers::create_worker(self, worker).await
    }

    async fn worker(&self, id: &WorkerId) -> StoreResult<Option<Worker>> {
        workers::worker(self, id).await
    }

    async fn worker_by_credential(&self, hash: &SecretHash) -> StoreResult<Option<Worker>> {
        workers::worker_by_credential(self, hash).await
    }

    async fn worker_by_pairing_code(&self, code: &str) -> StoreResult<Option<Worker>> {
        workers::worker_by_pairing_code(self, code).await
    }

    async fn workers_of(&self, owner: &UserId) -> StoreResult<Vec<Worker>> {
        workers::workers_of(self, owner).await
    }

    async fn pending_workers(
        &self,
        now: Millis,
        after: Option<(Millis, &WorkerId)>,
        limit: u32,
    ) -> StoreResult<Vec<Worker>> {
        workers::pending_workers(self, now, after, limit).await
    }

    async fn transition_worker(
        &self,
        id: &WorkerId,
        from: WorkerStatus,
        to: WorkerStatus,
        owner: Option<&UserId>,
        name: Option<&str>,
    ) -> StoreResult<Option<Worker>> {
        workers::transition_worker(self, id, from, to, owner, name).await
    }

    async fn set_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
        now: Millis,
    ) -> StoreResult<()> {
        workers::set_worker_connection(self, id, connection, now).await
    }

    async fn clear_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
    ) -> StoreResult<bool> {
        workers::clear_worker_connection(self, id, connection).await
    }

    async fn touch_worker(&self, id: &WorkerId, now: Millis) -> StoreResult<()> {
        workers::touch_worker(self, id, now).await
    }

    async fn set_worker_profile(&self, id: &WorkerId, profile: &WorkerProfile) -> StoreResult<()> {
        workers::set_worker_profile(self, id, profile).await
    }

    async fn set_agent_state(
        &self,
        id: &WorkerId,
        report: &AgentReport,
    ) -> StoreResult<Option<Worker>> {
        workers::set_agent_state(self, id, report).await
    }

    // ---- connections, watches, the purge: connections.rs ----

    async fn put_connection(&self, conn: &Connection) -> StoreResult<()> {
        connections::put_connection(self, conn).await
    }

    async fn connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        connections::connection(self, id).await
    }

    async fn delete_connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        connections::delete_connection(self, id).await
    }

    async fn purge_expired(&self, now: Millis) -> StoreResult<u64> {
        connections::purge_expired(self, now).await
    }

    async fn touch_connection(&self, id: &ConnectionId, now: Millis) -> StoreResult<()> {
        connections::touch_connection(self, id, now).await
    }

    async fn user_connections(&self, user: &UserId, now: Millis) -> StoreResult<Vec<ConnectionId>> {
        connections::user_connections(self, user, now).await
    }

    async fn set_connections_owner(&self, worker: &WorkerId, owner: &UserId) -> StoreResult<()> {
        connections::set_connections_owner(self, worker, owner).await
    }

    async fn worker_connections(&self, worker: &WorkerId) -> StoreResult<Vec<ConnectionId>> {
        connections::worker_connections(self, worker).await
    }

    async fn connection_count(&self, principal: &Principal, now: Millis) -> StoreResult<u32> {
        connections::connection_count(self, principal, now).await
    }

    async fn watch(&self, session: &SessionId, conn: &ConnectionId) -> StoreResult<bool> {
        connections::watch(self, session, conn).await
    }

    async fn unwatch(&self, session: &SessionId, conn: &ConnectionId) -> StoreResult<()> {
        connections::unwatch(self, session, conn).await
    }

    async fn watchers(&self, session: &SessionId) -> StoreResult<Vec<ConnectionId>> {
        connections::watchers(self, session).await
    }

    // ---- sessions: sessions.rs ----

    async fn insert_session(
        &self,
        session: &Session,
        max_live: u32,
    ) -> StoreResult<Capped<Session>> {
        sessions::insert_session(self, session, max_live).await
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        sessions::session(self, id).await
    }

    async fn sessions_of(
        &self,
        owner: &UserId,
        worker: Option<&WorkerId>,
        before: Option<Millis>,
        limit: u32,
    ) -> StoreResult<Vec<Session>> {
        sessions::sessions_of(self, owner, worker, before, limit).await
    }

    async fn starting_sessions(&self, worker: &WorkerId) -> StoreResult<Vec<Session>> {
        sessions::starting_sessions(self, worker).await
    }

    async fn transition_session(
        &self,
        id: &SessionId,
        from: &[SessionStatus],
        to: SessionStatus,
        patch: &SessionPatch,
        now: Millis,
    ) -> StoreResult<Option<Session>> {
        sessions::transition_session(self, id, from, to, patch, now).await
    }

    async fn set_agent_title(
        &self,
        id: &SessionId,
        title: &str,
        now: Millis,
    ) -> StoreResult<Option<Session>> {
        sessions::set_agent_title(self, id, title, now).await
    }

    // ---- messages, chunks, prompts: messages.rs ----

    async fn insert_message(
        &self,
        message: &Message,
        max_open: u32,
    ) -> StoreResult<Capped<Message>> {
        messages::insert_message(self, message, max_open).await
    }

    async fn message(&self, id: &MessageId) -> StoreResult<Option<Message>> {
        messages::message(self, id).await
    }

    async fn messages_of(
        &self,
        session: &SessionId,
        from: u32,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        messages::messages_of(self, session, from, limit).await
    }

    async fn open_messages(&self, worker: &WorkerId) -> StoreResult<Vec<Message>> {
        messages::open_messages(self, worker).await
    }

    async fn transition_message(
        &self,
        id: &MessageId,
        from: &[MessageStatus],
        to: MessageStatus,
        patch: &MessagePatch,
        now: Millis,
    ) -> StoreResult<Option<Message>> {
        messages::transition_message(self, id, from, to, patch, now).await
    }

    async fn insert_chunk(&self, chunk: &Chunk) -> StoreResult<Inserted<Chunk>> {
        messages::insert_chunk(self, chunk).await
    }

    async fn chunks(&self, message: &MessageId, from: u32, limit: u32) -> StoreResult<Vec<Chunk>> {
        messages::chunks(self, message, from, limit).await
    }

    async fn insert_prompt(&self, prompt: &Prompt) -> StoreResult<Inserted<Prompt>> {
        messages::insert_prompt(self, prompt).await
    }

    async fn prompt(&self, id: &PromptId) -> StoreResult<Option<Prompt>> {
        messages::prompt(self, id).await
    }

    async fn answer_prompt(
        &self,
        id: &PromptId,
        answer: &PromptAnswer,
    ) -> StoreResult<Option<Prompt>> {
        messages::answer_prompt(self, id, answer).await
    }

    async fn set_prompt_delivered(&self, id: &PromptId) -> StoreResult<()> {
        messages::set_prompt_delivered(self, id).await
    }

    async fn undelivered_prompts(&self, worker: &WorkerId) -> StoreResult<Vec<Prompt>> {
        messages::undelivered_prompts(self, worker).await
    }
}
