//! What a client sends: one frame per request, tagged by `action`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strum::{IntoStaticStr, VariantNames};

use super::{
    AgentReport, ChunkIn, Cursor, ModelInfo, ModelRef, Outcome, PendingCursor, PromptAnswer,
};
use crate::error::{ApiError, ErrorCode};
use crate::ids::{MessageId, PromptId, RequestId, SessionId, WorkerId};
use crate::model::{AgentState, Millis};

/// Every action a client may send, tagged by `action`. The route keys
/// ([`ACTIONS`]) are derived from the variants' names, as the tags are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, VariantNames, IntoStaticStr)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields))]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[strum(serialize_all = "snake_case")]
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
        /// The model for this message only; one the session's worker
        /// offers. Without it, the session's model answers.
        #[serde(default)]
        model: Option<ModelRef>,
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
        self.into()
    }
}

/// Every route key: what a frame's `action` may be. A gateway routes every
/// frame to one handler (API Gateway's `$default` route), and a frame whose
/// `action` is not here is refused as `unknown_action` before its fields
/// are read.
pub const ACTIONS: &[&str] = Request::VARIANTS;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_key_is_a_tag_serde_reads() {
        for action in ACTIONS {
            let frame = serde_json::json!({ "action": action });
            if let Err(e) = serde_json::from_value::<Request>(frame) {
                let e = e.to_string();
                assert!(!e.contains("unknown variant"), "{action}: {e}");
            }
        }
    }
}
