//! Entities as clients see them: workers, machines, sessions, messages,
//! chunks, and a page of a session's history.

use serde::{Deserialize, Serialize};

use super::ChunkBody;
use crate::ids::{MessageId, SessionId, WorkerId};
use crate::model::{AgentState, MessageStatus, Millis, SessionStatus, TitleSource, WorkerStatus};

/// A model, as the agent names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ModelRef {
    pub provider_id: String,
    pub model_id: String,
}

/// A model a worker offers, as advertised in its hello.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ModelInfo {
    pub provider_id: String,
    pub model_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_limit: Option<u64>,
}

/// What a worker says of its agent (opencode): its state, why (for `down`,
/// a sentence a person reads; otherwise optional detail), and when the
/// worker saw it, by the worker's clock. A report older than the stored one
/// changes nothing, so frames handled out of order cannot turn a newer state
/// back into an older one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct AgentReport {
    pub state: AgentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: Millis,
}

/// Where a reader resumes a session's history: message `message` (its number
/// in the session), chunk `seq` of it. Everything at or after it is resent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Cursor {
    pub message: u32,
    pub seq: u32,
}

/// A worker as its owner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct WorkerView {
    pub worker_id: WorkerId,
    pub machine: String,
    pub name: String,
    pub workdir: String,
    pub status: WorkerStatus,
    pub online: bool,
    pub last_seen: Option<Millis>,
    pub models: Vec<ModelInfo>,
    pub default_model: Option<ModelRef>,
    /// What the worker last said of its agent (absent until it says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    pub created_at: Millis,
}

/// A machine: the workers its owner runs on one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MachineView {
    pub name: String,
    pub online: bool,
    pub workers: Vec<WorkerView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SessionView {
    pub session_id: SessionId,
    pub worker_id: WorkerId,
    pub model: ModelRef,
    pub title: String,
    /// Who gave the title: the user at `session_start`, or the agent later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_source: Option<TitleSource>,
    pub status: SessionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub message_count: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A user message and the state of its answer. The answer's text is not here:
/// it is the message's text chunks, in seq order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MessageView {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub number: u32,
    pub text: String,
    /// The model chosen for this message, if not the session's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    pub status: MessageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A stored chunk as readers receive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChunkView {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub seq: u32,
    #[serde(flatten)]
    pub body: ChunkBody,
}

/// One page of a session's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HistoryPage {
    pub session: SessionView,
    /// Messages from the cursor's message on, in order.
    pub messages: Vec<MessageView>,
    /// Chunks from the cursor on, in (message, seq) order.
    pub chunks: Vec<ChunkView>,
    /// Where the next page starts; `None` when this page reaches the end.
    pub next: Option<Cursor>,
}
