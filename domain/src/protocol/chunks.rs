//! The pieces of an answer (chunks), how an answer ends, and a user's
//! answer to a prompt.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::PromptId;
use crate::model::{MessageStatus, Millis};

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
    ToolOutput {
        part_id: String,
        call_id: String,
        delta: String,
    },
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
    PermissionAnswer {
        prompt_id: PromptId,
        reply: PermissionReply,
    },
    /// The agent asks the user questions; answered with `prompt_reply`.
    Question {
        prompt_id: PromptId,
        questions: Value,
    },
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
    pub const fn status(self) -> MessageStatus {
        match self {
            Self::Complete => MessageStatus::Complete,
            Self::Failed => MessageStatus::Failed,
            Self::Aborted => MessageStatus::Aborted,
        }
    }
}
