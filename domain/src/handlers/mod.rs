//! Handlers: plain async functions from (connection, frame, now) to a reply,
//! one file per aggregate.
//!
//! - `entry.rs`: the router: a frame's caller, and its action to its handler.
//! - `connect.rs`: `$connect`, `$disconnect`, `ping`, `me`, `POST /api/ticket`.
//! - `pairing.rs`: `POST /api/pair`: a worker asks to be paired, with a code or a token.
//! - `approvals.rs`: a user looks a code up, approves or rejects it, revokes a worker.
//! - `workers.rs`: a worker's hello, its agent's state, the machine list.
//! - `sessions.rs`: starting, listing, titling and ending sessions.
//! - `messages.rs`: sending, starting, completing and aborting messages.
//! - `dispatch.rs`: the offline queue: messages to their worker when it can take them.
//! - `chunks.rs`: the pieces of an answer, stored once and fanned out.
//! - `prompts.rs`: the agent's questions, answered by the user.
//! - `history.rs`: watching a session, and its history a page at a time.
//! - `lease.rs`: the work of a worker that is not there.
//! - `fanout.rs`: pushes to workers, users and a session's watchers.
//! - `views.rs`: the protocol's views of the model's records.
//! - `admin.rs`: the admin commands (add, reset, remove a user).

use tracing::warn;

use crate::error::{ApiError, ErrorCode};
use crate::push::Push;
use crate::store::{Store, StoreError};

/// Timing and limits of the domain, set by each host.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a `POST /api/ticket` ticket stays valid.
    pub ticket_ttl_ms: i64,
    /// How long a pairing code stays valid.
    pub pairing_ttl_ms: i64,
    /// How often clients should ping.
    pub heartbeat_ms: i64,
    /// A worker not heard from for this long is offline.
    pub presence_timeout_ms: i64,
    /// A worker offline for longer than this has gone away: the answers it
    /// left dispatched or streaming end `failed`, and their sessions take
    /// new messages again. Applied when a busy session is next read or
    /// written to (no timer, so it costs nothing while nobody looks).
    pub worker_lease_ms: i64,
    /// How often a worker sends a streaming answer's chunk frames (told in
    /// its hello's reply; acknowledgements pace it further). Each frame is
    /// a handler call: on AWS an invocation, so longer there; a local host
    /// takes a short one for a livelier stream.
    pub frame_interval_ms: i64,
    /// A connection record expires this long after it was made (API Gateway's 2 h cap, plus slack).
    pub connection_ttl_ms: i64,
    /// Open websockets one user may have (browser tabs and devices). More
    /// are refused at `$connect` with `too_many_connections`.
    pub max_user_connections: u32,
    /// Open websockets one approved worker may have: more than one, so that
    /// a reconnect racing the old socket's end (whose `$disconnect` may come
    /// late, or never) is not refused.
    pub max_worker_connections: u32,
    /// Open websockets of a worker waiting for approval.
    pub max_pending_worker_connections: u32,
    /// Sessions one user may have that are not ended or failed; more are
    /// refused with `too_many_sessions`.
    pub max_live_sessions: u32,
    /// Messages of one user, across their sessions, that may wait for an
    /// answer (queued, dispatched or streaming); more are refused with
    /// `queue_full`. This bounds the offline queue while a worker is away,
    /// and what a worker is sent to hold while it is busy.
    pub max_open_messages: u32,
    /// Pairing-code look-ups, approvals and rejections, and pairing tokens
    /// minted, that one user may make per [`Config::pairing_window_ms`]
    /// (see `handlers/pairing.rs` for what this gives a code guesser).
    pub pairing_attempts: u32,
    /// The fixed window of [`Config::pairing_attempts`].
    pub pairing_window_ms: i64,
    /// Workers that one source address may have waiting for approval at once.
    pub pending_per_source: u32,
    /// How long a pairing token (a headless worker's way in) stays valid.
    pub pairing_token_ttl_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ticket_ttl_ms: 60_000,
            pairing_ttl_ms: 15 * 60_000,
            heartbeat_ms: 60_000,
            presence_timeout_ms: 150_000,
            worker_lease_ms: 120_000,
            frame_interval_ms: 100,
            connection_ttl_ms: 2 * 3_600_000 + 10 * 60_000,
            // Limits a real user never meets, each one a bound on what a
            // hostile or broken client can make the host keep.
            max_user_connections: 32,
            max_worker_connections: 2,
            max_pending_worker_connections: 1,
            // Ending a session is optional in the UI, so a user who starts one
            // per task keeps hundreds open: the cap is far above that.
            max_live_sessions: 1_000,
            max_open_messages: 100,
            pairing_attempts: 10,
            pairing_window_ms: 60_000,
            pending_per_source: 3,
            pairing_token_ttl_ms: 10 * 60_000,
        }
    }
}

/// The domain with its two ports. Cheap to share: hosts wrap it in an `Arc`.
pub struct Domain<S, P> {
    pub(crate) store: S,
    pub(crate) push: P,
    pub config: Config,
}

impl<S: Store, P: Push> Domain<S, P> {
    pub fn new(store: S, push: P, config: Config) -> Self {
        Self {
            store,
            push,
            config,
        }
    }

    /// The push port, for the host that made it (its gateway delivers
    /// through the same hub).
    pub fn push(&self) -> &P {
        &self.push
    }

    /// The store, for the host's own upkeep of what it owns beyond the
    /// port (a local host's data directory, its records of an earlier
    /// run). Users, workers and conversations change only through the
    /// domain's methods.
    pub fn host_store(&self) -> &S {
        &self.store
    }

    /// Deletes what has expired (tickets, connection records, pairing
    /// leftovers); returns how many records went.
    pub async fn purge_expired(&self, now: crate::model::Millis) -> Result<u64, crate::ApiError> {
        Ok(self.store.purge_expired(now).await?)
    }
}

pub use admin::{Disconnected, Operator, Removed, Report, Reset, UserCommand};
pub use pairing::source_key;

/// What a gateway knows of a connection attempt (`$connect`).
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    pub connection_id: crate::ids::ConnectionId,
    /// `?ticket=` from the URL (users: a one-use, short-lived ticket).
    pub ticket: Option<String>,
    /// The token of an `Authorization: Bearer` header (workers: their credential).
    pub bearer: Option<String>,
    /// `?v=` from the URL: the protocol version the client speaks (default 1).
    pub version: Option<String>,
    pub now: crate::model::Millis,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The detail goes to the log, not to the client.
        warn!(error = %e, "store failure");
        ApiError::new(ErrorCode::Internal, "storage is unavailable; retry later")
    }
}

mod admin;
mod approvals;
mod chunks;
mod connect;
mod dispatch;
mod entry;
mod fanout;
mod history;
mod lease;
mod messages;
mod pairing;
mod prompts;
mod sessions;
mod views;
mod workers;
