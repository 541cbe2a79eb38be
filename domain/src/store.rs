//! The store port: every read and write the handlers make, one method per
//! access pattern (see `docs/STORAGE.md`). Adapters: `SqliteStore` (local
//! host) and `DynamoStore` (AWS host).
//!
//! Contract every adapter keeps (checked by `testkit::store_contract`):
//! - Conditional methods (`transition_*`, `insert_*`, `take_ticket`, …) are
//!   atomic: of two concurrent callers at most one sees its condition hold.
//! - A write that returned `Ok` survives a crash of the process.
//! - Reads see every write that returned before they started (strong reads).

use std::future::Future;

use crate::auth::SecretHash;
use crate::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use crate::model::{
    Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Prompt, Session,
    SessionStatus, Ticket, User, Worker, WorkerStatus,
};
use crate::protocol::{AgentReport, ModelInfo, ModelRef, PromptAnswer};

/// Infrastructure failures. Client mistakes are not store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (user name, credential hash).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed or could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What an idempotent insert did.
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted<T> {
    /// Stored now; carries the stored value (with store-assigned fields).
    New(T),
    /// The key existed; carries what is stored under it.
    Existing(T),
}

/// What an insert under a per-user cap did.
#[derive(Clone, Debug, PartialEq)]
pub enum Capped<T> {
    /// Stored now, or stored before under that id (a retry, whatever the
    /// count): as [`Inserted`].
    Done(Inserted<T>),
    /// Not stored: the owner already holds as many as the cap allows.
    Full,
}

impl<T> From<Inserted<T>> for Capped<T> {
    fn from(inserted: Inserted<T>) -> Self {
        Self::Done(inserted)
    }
}

/// Fields a message transition may set (each only if `Some`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessagePatch {
    pub chunk_count: Option<u32>,
    pub error: Option<String>,
}

/// Fields a session transition may set (each only if `Some`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionPatch {
    pub agent_session_id: Option<String>,
    pub error: Option<String>,
}

/// What a worker says of itself in its hello.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerProfile {
    pub machine: Option<String>,
    pub name: Option<String>,
    pub workdir: Option<String>,
    pub version: Option<String>,
    pub models: Vec<ModelInfo>,
    pub default_model: Option<ModelRef>,
}

/// The store port. Methods return `impl Future + Send` so that handlers stay
/// generic (each binary knows its store at compile time) and spawnable.
pub trait Store: Send + Sync + 'static {
    // ---- users ----
    /// Creates a user; `Conflict` if the name or secret hash is taken.
    fn create_user(&self, user: &User) -> impl Future<Output = StoreResult<()>> + Send;
    fn user(&self, id: &UserId) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    fn user_by_name(&self, name: &str) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    fn user_by_secret(
        &self,
        hash: &SecretHash,
    ) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// All users, by name (admin commands only; never on a request path).
    fn users(&self) -> impl Future<Output = StoreResult<Vec<User>>> + Send;
    /// Replaces a user's secret; false if there is no such user.
    fn set_user_secret(
        &self,
        id: &UserId,
        hash: &SecretHash,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Deletes a user's record (admin commands only): its id, name and
    /// secret no longer resolve, and the name may be taken again. What
    /// refers to the user (workers, sessions, messages, connections,
    /// tickets) stays. False if there is no such user.
    fn delete_user(&self, id: &UserId) -> impl Future<Output = StoreResult<bool>> + Send;

    // ---- tickets ----
    /// Stores a ticket under `hash` (a second put of the hash replaces it).
    fn put_ticket(
        &self,
        hash: &SecretHash,
        ticket: &Ticket,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Consumes a ticket: returns it if it existed and had not expired at
    /// `now`, and deletes it either way. Two concurrent takes: one wins.
    fn take_ticket(
        &self,
        hash: &SecretHash,
        now: Millis,
    ) -> impl Future<Output = StoreResult<Option<Ticket>>> + Send;

    // ---- pairing tokens ----
    /// Stores a pairing token under `hash`.
    fn put_pairing_token(
        &self,
        hash: &SecretHash,
        token: &PairingToken,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Consumes a pairing token, as [`Store::take_ticket`] does a ticket:
    /// returns it if it existed and had not expired at `now`, and deletes it
    /// either way. Two concurrent takes: one wins.
    fn take_pairing_token(
        &self,
        hash: &SecretHash,
        now: Millis,
    ) -> impl Future<Output = StoreResult<Option<PairingToken>>> + Send;

    // ---- rate limits ----
    /// Counts one attempt against `key` in the fixed window that starts at
    /// `window_start` and ends at `window_end`, unless `limit` attempts are
    /// counted in it already. True if counted, false if the limit is
    /// reached. A counter of an earlier window starts again from one; an
    /// attempt of an earlier window than the stored one counts against the
    /// stored one. Atomic: of concurrent attempts, at most `limit` per window
    /// are counted. The counter may be deleted once `window_end` has passed.
    fn count_attempt(
        &self,
        key: &str,
        window_start: Millis,
        window_end: Millis,
        limit: u32,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    // ---- workers ----
    /// Creates a worker; `Conflict` if its credential hash is taken.
    fn create_worker(&self, worker: &Worker) -> impl Future<Output = StoreResult<()>> + Send;
    /// Creates a pending worker (with a pairing code and its expiry) unless
    /// `max_per_source` pending workers of the same `source` have unexpired
    /// codes at `now`: true if created, false if the source is at its cap.
    /// Atomic: concurrent creations from one source never exceed the cap.
    /// A worker without a source is created without a cap. `Conflict` if
    /// its credential hash is taken.
    fn create_pending_worker(
        &self,
        worker: &Worker,
        max_per_source: u32,
        now: Millis,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Deletes a worker that is pending with a code expired at `now` (its
    /// credential may then pair afresh); false if it is anything else.
    fn delete_expired_pending(
        &self,
        id: &WorkerId,
        now: Millis,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn worker(&self, id: &WorkerId) -> impl Future<Output = StoreResult<Option<Worker>>> + Send;
    fn worker_by_credential(
        &self,
        hash: &SecretHash,
    ) -> impl Future<Output = StoreResult<Option<Worker>>> + Send;
    fn worker_by_pairing_code(
        &self,
        code: &str,
    ) -> impl Future<Output = StoreResult<Option<Worker>>> + Send;
    /// An owner's workers (any status), oldest first.
    fn workers_of(&self, owner: &UserId) -> impl Future<Output = StoreResult<Vec<Worker>>> + Send;
    /// Pending workers whose pairing code has not expired at `now`, oldest
    /// first (by `created_at`, then id), after `(created_at, id)` when
    /// given, at most `limit`.
    fn pending_workers(
        &self,
        now: Millis,
        after: Option<(Millis, &WorkerId)>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<Worker>>> + Send;
    /// Moves a worker from `from` to `to`, clearing its pairing code; sets
    /// `owner` and `name` when given. Returns the updated worker, or `None`
    /// if its status was not `from`.
    fn transition_worker(
        &self,
        id: &WorkerId,
        from: WorkerStatus,
        to: WorkerStatus,
        owner: Option<&UserId>,
        name: Option<&str>,
    ) -> impl Future<Output = StoreResult<Option<Worker>>> + Send;
    /// Records the worker's live connection and `last_seen = now`.
    fn set_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
        now: Millis,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Clears the worker's connection if it is still `connection` (a newer
    /// connection may have replaced it). True if cleared.
    fn clear_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// `last_seen = now`.
    fn touch_worker(&self, id: &WorkerId, now: Millis)
        -> impl Future<Output = StoreResult<()>> + Send;
    /// Stores what the worker said in its hello (fields given as `Some` or non-empty).
    fn set_worker_profile(
        &self,
        id: &WorkerId,
        profile: &WorkerProfile,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Stores what the worker says of its agent if none is stored or the
    /// stored report is older (its `at` is less than `report.at`). Returns
    /// the updated worker, or `None` if the report is not newer (a late
    /// frame, a retry) or the worker does not exist. Atomic: of racing
    /// reports the newest is what stays.
    fn set_agent_state(
        &self,
        id: &WorkerId,
        report: &AgentReport,
    ) -> impl Future<Output = StoreResult<Option<Worker>>> + Send;

    // ---- connections ----
    fn put_connection(&self, conn: &Connection) -> impl Future<Output = StoreResult<()>> + Send;
    fn connection(
        &self,
        id: &ConnectionId,
    ) -> impl Future<Output = StoreResult<Option<Connection>>> + Send;
    /// A connection and, for a worker's, the worker: what every frame reads
    /// first. One call where the store can make it one (SQLite); the
    /// default reads the two in turn.
    fn connection_and_worker(
        &self,
        id: &ConnectionId,
    ) -> impl Future<Output = StoreResult<Option<(Connection, Option<Worker>)>>> + Send {
        async move {
            let Some(conn) = self.connection(id).await? else {
                return Ok(None);
            };
            let worker = match &conn.principal {
                crate::model::Principal::Worker(w) => self.worker(w).await?,
                crate::model::Principal::User(_) => None,
            };
            Ok(Some((conn, worker)))
        }
    }
    /// Deletes a connection and its watches; returns what was stored.
    fn delete_connection(
        &self,
        id: &ConnectionId,
    ) -> impl Future<Output = StoreResult<Option<Connection>>> + Send;
    /// `last_seen = now` (no-op if the connection is gone).
    fn touch_connection(
        &self,
        id: &ConnectionId,
        now: Millis,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A user's browser connections (not its workers'), unexpired at `now`.
    fn user_connections(
        &self,
        user: &UserId,
        now: Millis,
    ) -> impl Future<Output = StoreResult<Vec<ConnectionId>>> + Send;
    /// Sets the owner recorded on a worker's connections (after approval).
    fn set_connections_owner(
        &self,
        worker: &WorkerId,
        owner: &UserId,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Connections of a worker (to disconnect it on revoke).
    fn worker_connections(
        &self,
        worker: &WorkerId,
    ) -> impl Future<Output = StoreResult<Vec<ConnectionId>>> + Send;
    /// How many connection records of `principal` (a user's browsers, or
    /// one worker's) are unexpired at `now`. `$connect` counts after it has
    /// recorded its own, so that of concurrent connects at most the cap are
    /// kept (strong reads: each sees every record put before it counted).
    fn connection_count(
        &self,
        principal: &crate::model::Principal,
        now: Millis,
    ) -> impl Future<Output = StoreResult<u32>> + Send;
    /// Adds a watch; false if the connection no longer exists.
    fn watch(
        &self,
        session: &SessionId,
        conn: &ConnectionId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn unwatch(
        &self,
        session: &SessionId,
        conn: &ConnectionId,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Connections watching a session.
    fn watchers(
        &self,
        session: &SessionId,
    ) -> impl Future<Output = StoreResult<Vec<ConnectionId>>> + Send;

    // ---- sessions ----
    /// Stores a session unless its owner already has `max_live` sessions
    /// that are not ended or failed (a session stored ended or failed counts
    /// against nothing). If the id exists, returns what is stored, whatever
    /// the count. Atomic: concurrent inserts never pass the cap.
    fn insert_session(
        &self,
        session: &Session,
        max_live: u32,
    ) -> impl Future<Output = StoreResult<Capped<Session>>> + Send;
    fn session(&self, id: &SessionId)
        -> impl Future<Output = StoreResult<Option<Session>>> + Send;
    /// An owner's sessions, newest first, optionally of one worker, created
    /// strictly before `before`.
    fn sessions_of(
        &self,
        owner: &UserId,
        worker: Option<&WorkerId>,
        before: Option<Millis>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<Session>>> + Send;
    /// A worker's sessions in status `starting`, oldest first.
    fn starting_sessions(
        &self,
        worker: &WorkerId,
    ) -> impl Future<Output = StoreResult<Vec<Session>>> + Send;
    /// Moves a session to `to` if its status is one of `from`, applying `patch`
    /// and `updated_at = now`. Returns the updated session, or `None`.
    fn transition_session(
        &self,
        id: &SessionId,
        from: &[SessionStatus],
        to: SessionStatus,
        patch: &SessionPatch,
        now: Millis,
    ) -> impl Future<Output = StoreResult<Option<Session>>> + Send;

    /// Gives a session the title its agent made, with `title_source =
    /// agent` and `updated_at = now`, unless the user gave it its title
    /// (`title_source` is `user`). Returns the updated session, or `None` if
    /// the user's title stands or the session does not exist. Atomic.
    fn set_agent_title(
        &self,
        id: &SessionId,
        title: &str,
        now: Millis,
    ) -> impl Future<Output = StoreResult<Option<Session>>> + Send;

    // ---- messages ----
    /// Stores a message, assigning `number` = the session's message count
    /// (and bumping it), unless its owner already has `max_open` messages
    /// that are not final (queued, dispatched or streaming; a message stored
    /// final counts against nothing). If the id exists, returns what is
    /// stored, whatever the count. Atomic: concurrent inserts never pass
    /// the cap. A missing session is `Conflict`.
    fn insert_message(
        &self,
        message: &Message,
        max_open: u32,
    ) -> impl Future<Output = StoreResult<Capped<Message>>> + Send;
    fn message(&self, id: &MessageId)
        -> impl Future<Output = StoreResult<Option<Message>>> + Send;
    /// A session's messages with `number >= from`, in order.
    fn messages_of(
        &self,
        session: &SessionId,
        from: u32,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<Message>>> + Send;
    /// A worker's messages that are not final, by session creation then number.
    fn open_messages(
        &self,
        worker: &WorkerId,
    ) -> impl Future<Output = StoreResult<Vec<Message>>> + Send;
    /// Moves a message to `to` if its status is one of `from`, applying
    /// `patch` and `updated_at = now`. Returns the updated message, or `None`.
    fn transition_message(
        &self,
        id: &MessageId,
        from: &[MessageStatus],
        to: MessageStatus,
        patch: &MessagePatch,
        now: Millis,
    ) -> impl Future<Output = StoreResult<Option<Message>>> + Send;

    // ---- chunks ----
    /// Stores a chunk once per (message, seq). A second put of the same key
    /// changes nothing and returns `Existing` with the first one.
    fn insert_chunk(&self, chunk: &Chunk)
        -> impl Future<Output = StoreResult<Inserted<Chunk>>> + Send;
    /// [`Store::insert_chunk`] for each of a frame's chunks, in order, with
    /// one answer each. A store that can make it one call does (SQLite: one
    /// job of its writer); the default makes one call per chunk. An error
    /// may leave the chunks before it stored: each is a retry-safe put.
    fn insert_chunks(
        &self,
        chunks: &[Chunk],
    ) -> impl Future<Output = StoreResult<Vec<Inserted<Chunk>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(chunks.len());
            for c in chunks {
                out.push(self.insert_chunk(c).await?);
            }
            Ok(out)
        }
    }
    /// A message's chunks with `seq >= from`, in seq order.
    fn chunks(
        &self,
        message: &MessageId,
        from: u32,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<Chunk>>> + Send;

    // ---- prompts ----
    fn insert_prompt(&self, prompt: &Prompt)
        -> impl Future<Output = StoreResult<Inserted<Prompt>>> + Send;
    fn prompt(&self, id: &PromptId) -> impl Future<Output = StoreResult<Option<Prompt>>> + Send;
    /// Records the answer if the prompt has none yet; returns the updated
    /// prompt, or `None` if it was already answered (or does not exist).
    fn answer_prompt(
        &self,
        id: &PromptId,
        answer: &PromptAnswer,
    ) -> impl Future<Output = StoreResult<Option<Prompt>>> + Send;
    fn set_prompt_delivered(&self, id: &PromptId)
        -> impl Future<Output = StoreResult<()>> + Send;
    /// Maintenance, never on a request path: deletes expired tickets,
    /// pairing tokens, rate-limit counters, pending workers whose code
    /// expired, and connection records (with their watches), and clears
    /// worker presence that points at a deleted connection. Returns how
    /// many records went. DynamoDB's TTL does this on AWS.
    fn purge_expired(&self, now: Millis) -> impl Future<Output = StoreResult<u64>> + Send;

    /// A worker's answered prompts not yet delivered.
    fn undelivered_prompts(
        &self,
        worker: &WorkerId,
    ) -> impl Future<Output = StoreResult<Vec<Prompt>>> + Send;
}
