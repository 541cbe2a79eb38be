//! Entities and their state machines. These are what the store keeps; the
//! wire views of them live in [`crate::protocol`].

use serde::{Deserialize, Serialize};

use crate::auth::SecretHash;
use crate::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use crate::protocol::{AgentReport, ChunkBody, ModelInfo, ModelRef, Outcome, PromptAnswer};

/// Milliseconds since the Unix epoch. Handlers get `now` from their host
/// (API Gateway's `requestTimeEpoch` or the local clock), never read a clock.
pub type Millis = i64;

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub secret_hash: SecretHash,
    /// Admins see pairing requests nobody has claimed yet.
    pub admin: bool,
    pub created_at: Millis,
}

/// A one-use websocket ticket of a user (stored under its hash).
#[derive(Clone, Debug, PartialEq)]
pub struct Ticket {
    pub user: UserId,
    /// The user's secret hash when the ticket was issued. Redeeming checks
    /// the user still has it, so a reset secret takes its tickets with it.
    pub user_secret: SecretHash,
    pub expires_at: Millis,
}

/// A one-time pairing token of a user (stored under its hash): a headless
/// worker that presents it is approved for the user at once.
#[derive(Clone, Debug, PartialEq)]
pub struct PairingToken {
    pub owner: UserId,
    /// The owner's secret hash when the token was minted: a reset secret
    /// (or a removed user) takes the token with it, as with tickets.
    pub owner_secret: SecretHash,
    pub expires_at: Millis,
}

/// A change of status, made by the store as one check-and-write: from any
/// of `from` to `to`, or not at all. Of two racing changes of one record,
/// one happens and the other finds the status moved on. The changes there
/// are, named, are [`Session`]'s and [`Message`]'s associated constants
/// and functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition<S: 'static> {
    pub from: &'static [S],
    pub to: S,
}

impl<S: Copy + PartialEq> Transition<S> {
    /// Whether something in `status` can make this change.
    pub fn applies_to(&self, status: S) -> bool {
        self.from.contains(&status)
    }
}

/// A worker's place in pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Pending,
    Approved,
    Rejected,
    Revoked,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "revoked" => Self::Revoked,
            _ => return None,
        })
    }
}

/// What a worker's agent (opencode) is doing, as the worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// opencode is being installed (from npm; once per machine).
    Installing,
    /// opencode is starting.
    Starting,
    /// opencode runs; the worker's models are what it offers.
    Ready,
    /// opencode is not running (it crashed, could not start or install, or
    /// is being restarted); the report's reason says why.
    Down,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installing => "installing",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "installing" => Self::Installing,
            "starting" => Self::Starting,
            "ready" => Self::Ready,
            "down" => Self::Down,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    pub id: WorkerId,
    /// `None` until an owner approves the pairing.
    pub owner: Option<UserId>,
    pub status: WorkerStatus,
    pub credential_hash: SecretHash,
    /// The machine's name (hostname unless overridden).
    pub machine: String,
    /// A label for this worker on its machine.
    pub name: String,
    pub workdir: String,
    /// Current pairing code while pending.
    pub pairing_code: Option<String>,
    pub pairing_expires_at: Option<Millis>,
    /// The worker's live connection, if any.
    pub connection: Option<ConnectionId>,
    pub last_seen: Option<Millis>,
    pub models: Vec<ModelInfo>,
    pub default_model: Option<ModelRef>,
    pub version: Option<String>,
    /// What the worker last said of its agent; `None` until it says.
    pub agent: Option<AgentReport>,
    /// Where a pending worker asked to pair from (its address, or an IPv6
    /// address's /64), for the cap on pending workers per source. `None`
    /// for a worker that did not ask over the network.
    pub source: Option<String>,
    pub created_at: Millis,
}

impl Worker {
    /// Whether the worker offers `model` (one of the models it advertised).
    pub fn offers(&self, model: &ModelRef) -> bool {
        self.models
            .iter()
            .any(|m| m.provider_id == model.provider_id && m.model_id == model.model_id)
    }

    /// Pending with a code that has expired by `now`: as good as gone (the
    /// purge deletes it; pairing again starts afresh).
    pub fn pairing_expired(&self, now: Millis) -> bool {
        self.status == WorkerStatus::Pending && self.pairing_expires_at.is_none_or(|t| t <= now)
    }

    /// Online: approved, with a live connection that was heard from recently.
    pub fn online(&self, now: Millis, presence_timeout_ms: i64) -> bool {
        self.status == WorkerStatus::Approved
            && self.connection.is_some()
            && self.last_seen.is_some_and(|t| now - t <= presence_timeout_ms)
    }

    /// Offline for longer than `lease_ms`: gone, as far as its answers go.
    /// A worker whose connection ended was last there when it was last
    /// seen; one whose connection went silent, when its presence lapsed.
    pub fn lease_lapsed(&self, now: Millis, presence_timeout_ms: i64, lease_ms: i64) -> bool {
        if self.online(now, presence_timeout_ms) {
            return false;
        }
        let Some(seen) = self.last_seen else { return true };
        let offline_since = if self.connection.is_some() { seen + presence_timeout_ms } else { seen };
        now - offline_since > lease_ms
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Stored; the worker has not created its agent session yet.
    Starting,
    /// The agent session exists and nothing is running.
    Ready,
    /// An answer is being produced.
    Busy,
    Ended,
    Failed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Busy => "busy",
            Self::Ended => "ended",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => Self::Starting,
            "ready" => Self::Ready,
            "busy" => Self::Busy,
            "ended" => Self::Ended,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn is_closed(self) -> bool {
        matches!(self, Self::Ended | Self::Failed)
    }

    /// Its agent session exists and it is not closed: its worker may be
    /// sent its messages.
    pub fn takes_messages(self) -> bool {
        matches!(self, Self::Ready | Self::Busy)
    }

    /// Every status but the closed ones.
    pub const LIVE: &'static [Self] = &[Self::Starting, Self::Ready, Self::Busy];
}

/// Who gave a session its title.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TitleSource {
    /// The user, at `session_start`: the agent never changes it.
    User,
    /// The agent (opencode names a session after its first message).
    Agent,
}

impl TitleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user" => Self::User,
            "agent" => Self::Agent,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub owner: UserId,
    pub worker: WorkerId,
    pub model: ModelRef,
    pub title: String,
    /// Who gave `title`; `None` while it is empty.
    pub title_source: Option<TitleSource>,
    pub status: SessionStatus,
    /// The agent's own id for this session (opencode's `ses_…`).
    pub agent_session_id: Option<String>,
    pub error: Option<String>,
    /// Messages stored so far; the next message gets this number.
    pub message_count: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Session {
    /// Its worker created the agent session (`session_ready`).
    pub const AGENT_READY: Transition<SessionStatus> = Transition {
        from: &[SessionStatus::Starting],
        to: SessionStatus::Ready,
    };
    /// One of its answers started.
    pub const ANSWER_STARTED: Transition<SessionStatus> = Transition {
        from: &[SessionStatus::Ready],
        to: SessionStatus::Busy,
    };
    /// None of its answers runs any more.
    pub const ANSWERS_DONE: Transition<SessionStatus> = Transition {
        from: &[SessionStatus::Busy],
        to: SessionStatus::Ready,
    };
    /// Its user ended it (`session_end`).
    pub const END: Transition<SessionStatus> = Transition {
        from: SessionStatus::LIVE,
        to: SessionStatus::Ended,
    };
    /// Its agent session could not be made or kept (`session_failed`).
    pub const FAIL: Transition<SessionStatus> = Transition {
        from: SessionStatus::LIVE,
        to: SessionStatus::Failed,
    };
}

/// The state of one message's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Stored; its worker has not been sent it (offline, or the session is starting).
    Queued,
    /// Pushed to the worker; not yet started.
    Dispatched,
    /// The agent is answering.
    Streaming,
    Complete,
    Failed,
    Aborted,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::Streaming => "streaming",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "dispatched" => Self::Dispatched,
            "streaming" => Self::Streaming,
            "complete" => Self::Complete,
            "failed" => Self::Failed,
            "aborted" => Self::Aborted,
            _ => return None,
        })
    }

    /// Complete, failed or aborted: no more chunks beyond the final count.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Aborted)
    }

    /// Waiting for the worker: to be pushed again when it says hello.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Dispatched)
    }

    /// Not yet with the agent: queued or dispatched.
    pub const PENDING: &'static [Self] = &[Self::Queued, Self::Dispatched];
    /// Every status but the final ones.
    pub const OPEN: &'static [Self] = &[Self::Queued, Self::Dispatched, Self::Streaming];
}

/// One user message and the agent's answer to it. The answer is the
/// message's chunks, in `seq` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub session: SessionId,
    pub owner: UserId,
    pub worker: WorkerId,
    /// Position in the session, from 0.
    pub number: u32,
    pub text: String,
    /// The model chosen for this message; `None`: the session's.
    pub model: Option<ModelRef>,
    pub status: MessageStatus,
    /// Set when final: how many chunks the answer has (seqs `0..chunk_count`).
    pub chunk_count: Option<u32>,
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Message {
    /// Pushed to its worker.
    pub const DISPATCH: Transition<MessageStatus> = Transition {
        from: &[MessageStatus::Queued],
        to: MessageStatus::Dispatched,
    };
    /// The agent started answering (`message_started`, or chunks that
    /// overtook it).
    pub const START: Transition<MessageStatus> = Transition {
        from: MessageStatus::PENDING,
        to: MessageStatus::Streaming,
    };
    /// Its worker came back without it (crashed or restarted while
    /// answering): it failed.
    pub const LOST: Transition<MessageStatus> = Transition {
        from: &[MessageStatus::Streaming],
        to: MessageStatus::Failed,
    };
    /// Stopped while its worker is offline (by its user, or its session's
    /// end): it ends here, with the chunks stored so far.
    pub const STOPPED_OFFLINE: Transition<MessageStatus> = Transition {
        from: &[MessageStatus::Streaming],
        to: MessageStatus::Aborted,
    };
    /// Its worker stayed away past the lease while it was dispatched or
    /// running: it failed.
    pub const LEASE_LAPSED: Transition<MessageStatus> = Transition {
        from: &[MessageStatus::Dispatched, MessageStatus::Streaming],
        to: MessageStatus::Failed,
    };

    /// Ends it before it reached the agent, as `to` (aborted by its user or
    /// its session's end, failed with its session).
    pub const fn end_unstarted(to: MessageStatus) -> Transition<MessageStatus> {
        Transition {
            from: MessageStatus::PENDING,
            to,
        }
    }

    /// Its worker reports how it ended. (An answer may end before it
    /// started: a completion can overtake `message_started`.)
    pub const fn finish(outcome: Outcome) -> Transition<MessageStatus> {
        Transition {
            from: MessageStatus::OPEN,
            to: outcome.status(),
        }
    }
}

/// One piece of an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub message: MessageId,
    pub seq: u32,
    pub body: ChunkBody,
    pub created_at: Millis,
}

/// A question put to the user: a permission prompt or the `question` tool.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub id: PromptId,
    pub session: SessionId,
    pub message: MessageId,
    pub worker: WorkerId,
    pub owner: UserId,
    pub kind: PromptKind,
    pub answer: Option<PromptAnswer>,
    /// The worker has acknowledged the answer (or nothing is left to deliver).
    pub delivered: bool,
    pub created_at: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    Permission,
    Question,
}

impl PromptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permission => "permission",
            Self::Question => "question",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "permission" => Self::Permission,
            "question" => Self::Question,
            _ => return None,
        })
    }
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    User(UserId),
    Worker(WorkerId),
}

/// A principal's kind, as the stores name it beside its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    Worker,
}

impl PrincipalKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Worker => "worker",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub id: ConnectionId,
    pub principal: Principal,
    /// For a worker connection: its owner, once approved.
    pub owner: Option<UserId>,
    pub connected_at: Millis,
    pub last_seen: Millis,
    /// After this the record is stale whatever happened ($disconnect is best effort).
    pub expires_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(connection: bool, last_seen: Option<Millis>) -> Worker {
        Worker {
            id: WorkerId::random(),
            owner: Some(UserId::random()),
            status: WorkerStatus::Approved,
            credential_hash: SecretHash::from_stored("h"),
            machine: "m".into(),
            name: "w".into(),
            workdir: "/w".into(),
            pairing_code: None,
            pairing_expires_at: None,
            connection: connection.then(ConnectionId::random),
            last_seen,
            models: Vec::new(),
            default_model: None,
            version: None,
            agent: None,
            source: None,
            created_at: 0,
        }
    }

    #[test]
    fn transitions_leave_only_open_statuses_and_change_them() {
        let sessions = [
            Session::AGENT_READY,
            Session::ANSWER_STARTED,
            Session::ANSWERS_DONE,
            Session::END,
            Session::FAIL,
        ];
        for t in sessions {
            assert!(t.from.iter().all(|s| !s.is_closed() && *s != t.to), "{t:?}");
        }
        let ends = [MessageStatus::Complete, MessageStatus::Failed, MessageStatus::Aborted];
        let messages = [
            Message::DISPATCH,
            Message::START,
            Message::LOST,
            Message::STOPPED_OFFLINE,
            Message::LEASE_LAPSED,
        ];
        let messages = messages
            .into_iter()
            .chain(ends.map(Message::end_unstarted))
            .chain([Outcome::Complete, Outcome::Failed, Outcome::Aborted].map(Message::finish));
        for t in messages {
            assert!(t.from.iter().all(|s| !s.is_final() && *s != t.to), "{t:?}");
        }
    }

    const PRESENCE: i64 = 150;
    const LEASE: i64 = 120;

    #[test]
    fn the_lease_counts_from_when_the_worker_went_offline() {
        // Connected and heard from: never lapsed, however long ago it started.
        assert!(!worker(true, Some(1_000)).lease_lapsed(1_100, PRESENCE, LEASE));
        // Its connection ended when it was last seen: lapsed a lease later.
        let gone = worker(false, Some(1_000));
        assert!(!gone.lease_lapsed(1_000 + LEASE, PRESENCE, LEASE));
        assert!(gone.lease_lapsed(1_000 + LEASE + 1, PRESENCE, LEASE));
        // Its connection went silent: offline once presence lapses, then a lease.
        let silent = worker(true, Some(1_000));
        assert!(!silent.lease_lapsed(1_000 + PRESENCE + LEASE, PRESENCE, LEASE));
        assert!(silent.lease_lapsed(1_000 + PRESENCE + LEASE + 1, PRESENCE, LEASE));
        // Never seen at all: nothing to wait for.
        assert!(worker(false, None).lease_lapsed(0, PRESENCE, LEASE));
    }
}
