//! The wire protocol, version [`PROTOCOL_VERSION`]: every JSON frame that
//! crosses the websocket, in one place. `docs/PROTOCOL.md` documents it with
//! an example of each frame; `tests/fixtures/` holds those examples and a
//! test checks that each one parses.
//!
//! A client frame is a JSON object with `action` (the API Gateway route key),
//! `id` (the client's request id) and the action's fields. It gets exactly one
//! [`ServerFrame::Reply`] with the same `id`. Everything else the server sends
//! is an event, tagged by `type`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::ids::{MessageId, PromptId, RequestId, SessionId, UserId, WorkerId};
use crate::model::{AgentState, Millis, MessageStatus, SessionStatus, TitleSource, WorkerStatus};

/// The protocol version a client names with `?v=` when it connects.
pub const PROTOCOL_VERSION: u32 = 1;
/// API Gateway's limit on one websocket frame; the local gateway enforces it too.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's limit on one (possibly fragmented) websocket message.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Longest user message text accepted (it must fit a frame with its envelope).
pub const MAX_TEXT_BYTES: usize = 30 * 1024;
/// Longest reason a worker may give with its agent's state (`agent_state`).
pub const MAX_AGENT_REASON_BYTES: usize = 1000;
/// Longest session title the agent may give (`session_title`), in characters.
pub const MAX_AGENT_TITLE_CHARS: usize = 200;

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

/// A user's answer to a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PromptAnswer {
    /// Answer to a permission prompt.
    Permission { reply: PermissionReply },
    /// Answer to a question: one list of chosen labels per question.
    Question { answers: Vec<Vec<String>> },
    /// The user declined to answer a question.
    QuestionRejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum PermissionReply {
    Once,
    Always,
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    Pending,
    Running,
    Completed,
    Error,
}

/// Token and cost figures of one agent step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Usage {
    #[serde(default)]
    pub input: u64,
    #[serde(default)]
    pub output: u64,
    #[serde(default)]
    pub reasoning: u64,
    #[serde(default)]
    pub cache_read: u64,
    #[serde(default)]
    pub cache_write: u64,
    #[serde(default)]
    pub cost: f64,
}

/// What one chunk of an answer says. Text-like kinds carry deltas to append
/// to the part named by `part_id`; the others carry a whole state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChunkBody {
    /// Answer text to append to part `part_id`.
    Text { part_id: String, delta: String },
    /// Reasoning text to append to part `part_id`.
    Reasoning { part_id: String, delta: String },
    /// A tool call's new state (pending, running, or its final state).
    ToolCall {
        part_id: String,
        call_id: String,
        tool: String,
        status: ToolStatus,
        #[serde(default)]
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    /// Output of a tool call, appended in order (large outputs span chunks).
    ToolOutput { part_id: String, call_id: String, delta: String },
    /// A tool call finished: `completed` or `error`.
    ToolResult {
        part_id: String,
        call_id: String,
        status: ToolStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default)]
        metadata: Value,
    },
    /// A file the agent changed, as a unified diff.
    FileEdit {
        path: String,
        diff: String,
        #[serde(default)]
        additions: u32,
        #[serde(default)]
        deletions: u32,
    },
    /// The agent asks leave to use a tool; answered with `prompt_reply`.
    PermissionRequest {
        prompt_id: PromptId,
        permission: String,
        #[serde(default)]
        patterns: Vec<String>,
        #[serde(default)]
        metadata: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
    },
    /// How a permission prompt was answered (by whom it was answered is the user).
    PermissionAnswer { prompt_id: PromptId, reply: PermissionReply },
    /// The agent asks the user questions; answered with `prompt_reply`.
    Question { prompt_id: PromptId, questions: Value },
    /// How a question was answered.
    QuestionAnswer {
        prompt_id: PromptId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answers: Option<Vec<Vec<String>>>,
    },
    /// One agent step ended, with its figures.
    Step {
        #[serde(default)]
        reason: String,
        #[serde(default)]
        usage: Usage,
    },
    /// The model call failed and the agent will try again (opencode
    /// retries rate limits and server errors for a minute or more): the
    /// answer is still running. `next_at` is when the next attempt starts.
    Retry {
        attempt: u32,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_at: Option<Millis>,
    },
    /// Something went wrong while answering.
    Error { message: String },
    /// A subagent working for this answer (opencode's `task` tool runs one
    /// in a child session): its state, sent when it starts, when its status
    /// changes, and with each change of one of its tool calls (`tool`).
    /// The latest chunk of a `subagent_id` holds its current state; its
    /// prompts come as this answer's `permission_request` and `question`.
    Subagent {
        subagent_id: String,
        /// The `task` call that started it, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// The subagent it works for, if not the answer's own agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_id: Option<String>,
        #[serde(default)]
        agent: String,
        #[serde(default)]
        description: String,
        status: SubagentStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool: Option<SubagentTool>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum SubagentStatus {
    Running,
    Completed,
    Error,
    Aborted,
}

/// One tool call of a subagent, as a short summary (`title`: at most a few
/// hundred characters); keyed by `part_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SubagentTool {
    pub part_id: String,
    pub call_id: String,
    pub tool: String,
    pub status: ToolStatus,
    #[serde(default)]
    pub title: String,
}

impl ChunkBody {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Reasoning { .. } => "reasoning",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolOutput { .. } => "tool_output",
            Self::ToolResult { .. } => "tool_result",
            Self::FileEdit { .. } => "file_edit",
            Self::PermissionRequest { .. } => "permission_request",
            Self::PermissionAnswer { .. } => "permission_answer",
            Self::Question { .. } => "question",
            Self::QuestionAnswer { .. } => "question_answer",
            Self::Step { .. } => "step",
            Self::Retry { .. } => "retry",
            Self::Error { .. } => "error",
            Self::Subagent { .. } => "subagent",
        }
    }
}

/// A chunk as a worker sends it: its `seq` within the message and its body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChunkIn {
    pub seq: u32,
    #[serde(flatten)]
    pub body: ChunkBody,
}

/// How an answer ended, as the worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Complete,
    Failed,
    Aborted,
}

impl Outcome {
    pub fn status(self) -> MessageStatus {
        match self {
            Self::Complete => MessageStatus::Complete,
            Self::Failed => MessageStatus::Failed,
            Self::Aborted => MessageStatus::Aborted,
        }
    }
}

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
    PairingLookup { code: String },
    /// Approves a pending worker; it becomes the caller's.
    PairingApprove {
        code: String,
        #[serde(default)]
        name: Option<String>,
    },
    PairingReject { code: String },
    /// Mints a one-time pairing token: a headless worker started with it
    /// (`tether-worker --token`) is approved for the caller at once.
    PairingTokenCreate {},
    /// Revokes an approved worker and disconnects it.
    WorkerRevoke { worker_id: WorkerId },
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
    SessionUnwatch { session_id: SessionId },
    /// One page of a session's history from `after`.
    SessionHistory {
        session_id: SessionId,
        #[serde(default)]
        after: Option<Cursor>,
    },
    /// Ends a session: stops any running answer, drops queued messages.
    SessionEnd { session_id: SessionId },
    /// Sends a message (queued if the worker is offline).
    MessageSend {
        session_id: SessionId,
        message_id: MessageId,
        text: String,
    },
    /// Stops an answer that is queued or running.
    MessageAbort { message_id: MessageId },
    /// Answers a permission prompt or a question.
    PromptReply { prompt_id: PromptId, answer: PromptAnswer },

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
    SessionTitle { session_id: SessionId, title: String },
    /// The agent session for `session_id` exists.
    SessionReady {
        session_id: SessionId,
        agent_session_id: String,
    },
    /// The agent session could not be created.
    SessionFailed { session_id: SessionId, error: String },
    /// The worker has handed the message to its agent.
    MessageStarted { message_id: MessageId },
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
    PromptDelivered { prompt_id: PromptId },
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
        let request: Request = serde_json::from_value(Value::Object(map)).map_err(|e| FrameError {
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

/// Data of a `me` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MeData {
    pub protocol: u32,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_status: Option<WorkerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    /// How often the client should ping.
    pub heartbeat_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Worker,
}

/// Data of the reply to `chunks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChunksAck {
    /// Seqs stored by this frame.
    pub stored: Vec<u32>,
    /// Seqs that were already stored (a retry): acknowledged again, stored once.
    pub duplicate: Vec<u32>,
}

/// `POST /api/ticket` reply: a one-use ticket for `?ticket=` on connect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct TicketData {
    pub ticket: String,
    pub expires_at: Millis,
}

/// `POST /api/pair` body: a new worker asks to be paired. Its credential goes
/// in the `Authorization: Bearer` header, never in the body or URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    pub machine: String,
    #[serde(default)]
    pub name: Option<String>,
    pub workdir: String,
    /// A pairing token its owner minted (`pairing_token_create`): the
    /// worker is approved for that owner at once, no code to type. In the
    /// body, never in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The token is a secret: it never shows in a log line.
impl std::fmt::Debug for PairRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairRequest")
            .field("machine", &self.machine)
            .field("name", &self.name)
            .field("workdir", &self.workdir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `POST /api/pair` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairData {
    pub worker_id: WorkerId,
    pub status: WorkerStatus,
    /// Set while pending: the code the owner approves.
    pub code: Option<String>,
    pub expires_at: Option<Millis>,
    /// Set once approved: the name of the user who approved the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// Where a page of `pairing_list` starts: after this pending worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PendingCursor {
    pub created_at: Millis,
    pub worker_id: WorkerId,
}

/// Data of a `pairing_list` reply: a page of pending workers, oldest
/// first, and where the next page starts (`None` at the end). A page stays
/// well under API Gateway's 128 KB message limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairingListData {
    pub workers: Vec<WorkerView>,
    pub next: Option<PendingCursor>,
}

/// Data of a `pairing_token_create` reply: the token, shown once (the
/// server keeps only its hash), and when it stops working.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairingTokenData {
    pub token: String,
    pub expires_at: Millis,
}

impl std::fmt::Debug for PairingTokenData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingTokenData")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
