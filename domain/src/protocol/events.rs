//! What the server sends: the one reply to each request, and the events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChunkView, MessageView, ModelRef, PromptAnswer, SessionView, WorkerView};
use crate::error::{ApiError, ErrorCode};
use crate::ids::{MessageId, PromptId, RequestId, SessionId};
use crate::model::WorkerStatus;

/// The error half of a reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ErrorBody {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub code: ErrorCode,
    pub message: String,
}

/// Every frame the server sends, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The one reply to a request. `id` is absent only when the request's id
    /// could not be read.
    Reply {
        id: Option<RequestId>,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },

    // --- to users ---
    /// A worker changed: presence, pairing, models, its agent's state.
    WorkerUpdated { worker: WorkerView },
    /// A session changed status or title.
    SessionUpdated { session: SessionView },
    /// A message was stored or changed status (to watchers of its session).
    MessageUpdated { message: MessageView },
    /// New pieces of an answer, in seq order (to watchers of its session).
    Chunks {
        session_id: SessionId,
        message_id: MessageId,
        chunks: Vec<ChunkView>,
    },

    // --- to workers ---
    /// The worker's own pairing status changed (approved, rejected, revoked).
    PairingStatus {
        status: WorkerStatus,
        /// With `approved`: the name of the user who approved the worker
        /// (its owner from now on), for the worker to show.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approved_by: Option<String>,
    },
    /// Create the agent session for this session.
    SessionStart {
        session_id: SessionId,
        model: ModelRef,
        title: String,
    },
    /// Answer this message.
    MessageDispatch {
        session_id: SessionId,
        agent_session_id: Option<String>,
        message_id: MessageId,
        number: u32,
        text: String,
        model: ModelRef,
    },
    /// Stop answering this message.
    MessageAbort {
        session_id: SessionId,
        message_id: MessageId,
    },
    /// The session ended: stop it and forget it.
    SessionEnd { session_id: SessionId },
    /// The user answered a prompt.
    PromptAnswer {
        prompt_id: PromptId,
        session_id: SessionId,
        message_id: MessageId,
        answer: PromptAnswer,
    },
}

impl ServerFrame {
    pub fn ok(id: RequestId, data: Value) -> Self {
        Self::Reply {
            id: Some(id),
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    pub fn err(id: Option<RequestId>, error: ApiError) -> Self {
        Self::Reply {
            id,
            ok: false,
            data: None,
            error: Some(ErrorBody {
                code: error.code,
                message: error.message,
            }),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames serialize")
    }
}
