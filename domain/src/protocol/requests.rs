//! What a client sends: one frame per request, tagged by `action`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    AgentReport, ChunkIn, Cursor, ModelInfo, ModelRef, Outcome, PendingCursor, PromptAnswer,
};
use crate::error::{ApiError, ErrorCode};
use crate::ids::{MessageId, PromptId, RequestId, SessionId, WorkerId};
use crate::model::{AgentState, Millis};

/// Every action a client may send, tagged by `action`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields))]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // --- either role ---
    /// Keeps the connection alive and refreshes presence.
    Ping {},
    /// Who am I? Also returns the protocol version and timing hints.
    Me {},

    // --- users ---
    /// Machines and their workers, with presence.
    MachineList {},
    /// Pending pairings nobody has claimed (admins only), a page at a time,
    /// oldest first.
    PairingList {
        /// Where the page starts: the previous page's `next`.
        #[serde(default)]
        after: Option<PendingCursor>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Shows the worker behind a pairing code, before approving it.
    PairingLookup {
        code: String,
    },
    /// Approves a pending worker; it becomes the caller's.
    PairingApprove {
        code: String,
        #[serde(default)]
        name: Option<String>,
    },
    PairingReject {
        code: String,
    },
    /// Mints a one-time pairing token: a headless worker started with it
    /// (`tether-worker --token`) is approved for the caller at once.
    PairingTokenCreate {},
    /// Revokes an approved worker and disconnects it.
    WorkerRevoke {
        worker_id: WorkerId,
    },
    /// Starts a session on a worker with one of its models.
    SessionStart {
        session_id: SessionId,
        worker_id: WorkerId,
        model: ModelRef,
        #[serde(default)]
        title: Option<String>,
    },
    /// The caller's sessions, newest first.
    SessionList {
        #[serde(default)]
        worker_id: Option<WorkerId>,
        /// Only sessions created before this time (paging).
        #[serde(default)]
        before: Option<Millis>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Starts receiving a session's live events, and returns its history from `after`.
    SessionWatch {
        session_id: SessionId,
        #[serde(default)]
        after: Option<Cursor>,
    },
    SessionUnwatch {
        session_id: SessionId,
    },
    /// One page of a session's history from `after`.
    SessionHistory {
        session_id: SessionId,
        #[serde(default)]
        after: Option<Cursor>,
    },
    /// Ends a session: stops any running answer, drops queued messages.
    SessionEnd {
        session_id: SessionId,
    },
    /// Sends a message (queued if the worker is offline).
    MessageSend {
        session_id: SessionId,
        message_id: MessageId,
        text: String,
    },
    /// Stops an answer that is queued or running.
    MessageAbort {
        message_id: MessageId,
    },
    /// Answers a permission prompt or a question.
    PromptReply {
        prompt_id: PromptId,
        answer: PromptAnswer,
    },

    // --- workers ---
    /// A worker says who it is, what it offers and what it still holds.
    WorkerHello {
        #[serde(default)]
        machine: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        workdir: Option<String>,
        #[serde(default)]
        version: Option<String>,
        #[serde(default)]
        models: Vec<ModelInfo>,
        #[serde(default)]
        default_model: Option<ModelRef>,
        /// Messages the worker is still answering or holds unacknowledged chunks of.
        #[serde(default)]
        active_messages: Vec<MessageId>,
        /// Its agent's state, as `agent_state` reports it.
        #[serde(default)]
        agent: Option<AgentReport>,
    },
    /// The worker's agent changed state: installing, starting, ready or down.
    AgentState {
        state: AgentState,
        #[serde(default)]
        reason: Option<String>,
        at: Millis,
    },
    /// The agent gave one of this worker's sessions a title.
    SessionTitle {
        session_id: SessionId,
        title: String,
    },
    /// The agent session for `session_id` exists.
    SessionReady {
        session_id: SessionId,
        agent_session_id: String,
    },
    /// The agent session could not be created.
    SessionFailed {
        session_id: SessionId,
        error: String,
    },
    /// The worker has handed the message to its agent.
    MessageStarted {
        message_id: MessageId,
    },
    /// Pieces of an answer. Retries are harmless: each (message, seq) is stored once.
    Chunks {
        message_id: MessageId,
        chunks: Vec<ChunkIn>,
    },
    /// The answer ended. `chunk_count` is how many chunks it has (seqs 0..count).
    /// It carries no text: the host has the chunks, and an answer's text is
    /// its text chunks in seq order.
    MessageComplete {
        message_id: MessageId,
        outcome: Outcome,
        chunk_count: u32,
        #[serde(default)]
        error: Option<String>,
    },
    /// The worker has passed a prompt's answer to its agent.
    PromptDelivered {
        prompt_id: PromptId,
    },
}

impl Request {
    /// The route key of this request.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Ping {} => "ping",
            Self::Me {} => "me",
            Self::MachineList {} => "machine_list",
            Self::PairingList { .. } => "pairing_list",
            Self::PairingLookup { .. } => "pairing_lookup",
            Self::PairingApprove { .. } => "pairing_approve",
            Self::PairingReject { .. } => "pairing_reject",
            Self::PairingTokenCreate {} => "pairing_token_create",
            Self::WorkerRevoke { .. } => "worker_revoke",
            Self::SessionStart { .. } => "session_start",
            Self::SessionList { .. } => "session_list",
            Self::SessionWatch { .. } => "session_watch",
            Self::SessionUnwatch { .. } => "session_unwatch",
            Self::SessionHistory { .. } => "session_history",
            Self::SessionEnd { .. } => "session_end",
            Self::MessageSend { .. } => "message_send",
            Self::MessageAbort { .. } => "message_abort",
            Self::PromptReply { .. } => "prompt_reply",
            Self::WorkerHello { .. } => "worker_hello",
            Self::AgentState { .. } => "agent_state",
            Self::SessionTitle { .. } => "session_title",
            Self::SessionReady { .. } => "session_ready",
            Self::SessionFailed { .. } => "session_failed",
            Self::MessageStarted { .. } => "message_started",
            Self::Chunks { .. } => "chunks",
            Self::MessageComplete { .. } => "message_complete",
            Self::PromptDelivered { .. } => "prompt_delivered",
        }
    }
}

/// Every route key, for gateways that route on `action` (the AWS template
/// declares one route per entry).
pub const ACTIONS: &[&str] = &[
    "ping",
    "me",
    "machine_list",
    "pairing_list",
    "pairing_lookup",
    "pairing_approve",
    "pairing_reject",
    "pairing_token_create",
    "worker_revoke",
    "session_start",
    "session_list",
    "session_watch",
    "session_unwatch",
    "session_history",
    "session_end",
    "message_send",
    "message_abort",
    "prompt_reply",
    "worker_hello",
    "agent_state",
    "session_title",
    "session_ready",
    "session_failed",
    "message_started",
    "chunks",
    "message_complete",
    "prompt_delivered",
];

/// A parsed client frame.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientFrame {
    pub id: RequestId,
    pub request: Request,
}

/// Why a frame could not be parsed, with the request id when one was readable.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameError {
    pub id: Option<RequestId>,
    pub error: ApiError,
}

impl ClientFrame {
    /// Parses a frame in steps so each kind of mistake gets its own code:
    /// not JSON → `bad_json`; no or unknown `action` → `unknown_action`;
    /// missing `id` or bad fields → `bad_request`.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
            id: None,
            error: ApiError::new(ErrorCode::BadJson, format!("frame is not valid JSON: {e}")),
        })?;
        let Value::Object(mut map) = value else {
            return Err(FrameError {
                id: None,
                error: ApiError::new(ErrorCode::BadJson, "frame must be a JSON object"),
            });
        };
        let id = match map.remove("id") {
            Some(Value::String(s)) => RequestId::parse(s).map_err(|e| FrameError {
                id: None,
                error: ApiError::new(ErrorCode::BadRequest, format!("bad `id`: {e}")),
            })?,
            Some(_) => {
                return Err(FrameError {
                    id: None,
                    error: ApiError::new(ErrorCode::BadRequest, "`id` must be a string"),
                })
            }
            None => {
                return Err(FrameError {
                    id: None,
                    error: ApiError::new(ErrorCode::BadRequest, "frame has no `id`"),
                })
            }
        };
        let action = match map.get("action") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(FrameError {
                    id: Some(id),
                    error: ApiError::new(ErrorCode::UnknownAction, "frame has no string `action`"),
                })
            }
        };
        if !ACTIONS.contains(&action.as_str()) {
            return Err(FrameError {
                id: Some(id),
                error: ApiError::new(
                    ErrorCode::UnknownAction,
                    format!("unknown action `{}`", truncate(&action, 64)),
                ),
            });
        }
        let request: Request =
            serde_json::from_value(Value::Object(map)).map_err(|e| FrameError {
                id: Some(id.clone()),
                error: ApiError::new(ErrorCode::BadRequest, format!("bad `{action}` frame: {e}")),
            })?;
        Ok(Self { id, request })
    }

    /// The JSON text of this frame (what a client sends).
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.request).expect("requests serialize");
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), Value::String(self.id.as_str().into()));
        }
        value.to_string()
    }
}

/// Reads just the request id of a frame, for error replies to frames that
/// are refused before parsing (too large).
pub fn peek_request_id(text: &str) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let IdOnly { id } = serde_json::from_str(text).ok()?;
    RequestId::parse(id).ok()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
