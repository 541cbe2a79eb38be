//! From opencode's events to chunks, for one turn (one of our messages).
//!
//! The translator keeps, for every part of the turn, what it has already
//! sent: text sent so far, a tool call's last status and how much of its
//! output went out. Live deltas append to it; a whole part (from
//! `message.part.updated`, or read back from opencode's message API after
//! its event stream dropped) is compared with it and only the difference
//! goes out. So live streaming and reconciliation are one mechanism, and
//! nothing is sent twice or lost.
//!
//! - `subagents`: the child sessions a turn's `task` calls start.
//! - `tools`: a tool call's part as chunks, and edits as file edits.

mod subagents;
mod tools;

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tether_domain::ids::PromptId;
use tether_domain::protocol::{ChunkBody, PermissionReply, ToolStatus, Usage};

use subagents::Child;
use tools::on_tool;

/// What an event meant for the turn, besides its chunks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    pub chunks: Vec<ChunkBody>,
    /// opencode reports the session idle: the turn is over.
    pub idle: bool,
}

#[derive(Debug)]
enum Part {
    Text { sent: String },
    Reasoning { sent: String },
    Tool(ToolPart),
    Other,
}

#[derive(Debug, Default)]
struct ToolPart {
    call_id: String,
    tool: String,
    status: Option<ToolStatus>,
    input: Value,
    title: Option<String>,
    output_sent: String,
    finished: bool,
}

/// One turn's translation state.
#[derive(Debug)]
pub struct Turn {
    session: String,
    /// When the prompt went out (opencode's clock is the same machine's).
    started_at: i64,
    user_messages: HashSet<String>,
    parts: HashMap<String, Part>,
    text_order: Vec<String>,
    prompts: HashSet<String>,
    answered: HashSet<String>,
    pub error: Option<String>,
    pub aborted: bool,
    /// opencode has shown this turn running; an idle before that is an
    /// echo of the previous turn's end, not this one's.
    pub started: bool,
    /// The highest retry attempt told (opencode repeats its status).
    retries: u32,
    /// opencode messages this turn has seen (user and assistant).
    seen: HashSet<String>,
    /// Messages of earlier turns of the session: their late events (after
    /// an abort opencode finishes the old message after the turn's first
    /// idle) are not this turn's.
    foreign: HashSet<String>,
    /// Subagents (child sessions) by session id, and in the order they came.
    children: HashMap<String, Child>,
    child_order: Vec<String>,
}

impl Turn {
    pub fn new(session: impl Into<String>, started_at: i64) -> Self {
        Self {
            session: session.into(),
            started_at,
            user_messages: HashSet::new(),
            parts: HashMap::new(),
            text_order: Vec::new(),
            prompts: HashSet::new(),
            answered: HashSet::new(),
            error: None,
            aborted: false,
            started: false,
            retries: 0,
            seen: HashSet::new(),
            foreign: HashSet::new(),
            children: HashMap::new(),
            child_order: Vec::new(),
        }
    }

    /// Whether `session` is this turn's: its own or one of its subagents'.
    pub fn owns(&self, session: &str) -> bool {
        session == self.session || self.children.contains_key(session)
    }

    /// Whether an event is this turn's to translate: one of a session it
    /// owns, or the creation (or update) of a child session under one.
    pub fn claims(&self, event: &Value) -> bool {
        if matches!(event["type"].as_str(), Some("session.created" | "session.updated"))
            && event["properties"]["info"]["parentID"]
                .as_str()
                .is_some_and(|parent| self.owns(parent))
        {
            return true;
        }
        Self::event_session(event).is_some_and(|s| self.owns(s))
    }

    /// When this turn's prompt went out (ms since the epoch, opencode's clock).
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// Ignores the events of these messages (an earlier turn's, see
    /// [`Turn::seen_messages`]).
    #[must_use]
    pub fn with_foreign(mut self, messages: HashSet<String>) -> Self {
        self.foreign = messages;
        self
    }

    /// The opencode messages this turn saw, for the session's next turn to
    /// ignore.
    pub fn seen_messages(&self) -> HashSet<String> {
        self.seen.iter().chain(&self.user_messages).cloned().collect()
    }

    /// Whether events of this message are this turn's; notes it as seen.
    fn take(&mut self, message: Option<&str>) -> bool {
        let Some(id) = message else { return true };
        if self.foreign.contains(id) {
            return false;
        }
        if !self.seen.contains(id) {
            self.seen.insert(id.to_owned());
        }
        true
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    /// Ends every tool call still pending or running, as failed with
    /// `why`: the turn is over (aborted, failed, or opencode gone), and
    /// opencode tells a tool's end only after the turn's first idle, if at
    /// all. Once per tool; in part order.
    pub fn close_open_tools(&mut self, why: &str) -> Vec<ChunkBody> {
        let mut open: Vec<(&String, &mut ToolPart)> = self
            .parts
            .iter_mut()
            .filter_map(|(id, p)| match p {
                Part::Tool(t) if !t.finished && t.status.is_some() => Some((id, t)),
                _ => None,
            })
            .collect();
        open.sort_by(|a, b| a.0.cmp(b.0));
        open.into_iter()
            .map(|(id, t)| {
                t.finished = true;
                t.status = Some(ToolStatus::Error);
                ChunkBody::ToolResult {
                    part_id: id.clone(),
                    call_id: t.call_id.clone(),
                    status: ToolStatus::Error,
                    error: Some(why.to_owned()),
                    metadata: serde_json::json!({ "interrupted": true }),
                }
            })
            .collect()
    }

    /// The answer's text: its text parts in order.
    pub fn final_text(&self) -> String {
        let texts: Vec<&str> = self
            .text_order
            .iter()
            .filter_map(|id| match self.parts.get(id) {
                Some(Part::Text { sent }) if !sent.is_empty() => Some(sent.as_str()),
                _ => None,
            })
            .collect();
        texts.join("\n\n")
    }

    /// The session id an event is about, if any.
    pub fn event_session(event: &Value) -> Option<&str> {
        let p = &event["properties"];
        p["sessionID"]
            .as_str()
            .or_else(|| p["info"]["sessionID"].as_str())
            .or_else(|| p["part"]["sessionID"].as_str())
    }

    /// One event of this turn's session.
    pub fn on_event(&mut self, event: &Value) -> Effects {
        let mut fx = Effects::default();
        let p = &event["properties"];
        let kind = event["type"].as_str().unwrap_or_default();
        if matches!(kind, "session.created" | "session.updated") {
            self.adopt(&p["info"], &mut fx);
            return fx;
        }
        if let Some(child) = Self::event_session(event).filter(|s| *s != self.session && self.children.contains_key(*s)) {
            let child = child.to_owned();
            self.on_child_event(&child, event, &mut fx);
            return fx;
        }
        match kind {
            "message.updated" => self.on_message_info(&p["info"], &mut fx),
            "message.part.delta" => {
                if !self.take(p["messageID"].as_str())
                    || self.user_messages.contains(p["messageID"].as_str().unwrap_or_default())
                {
                    return fx;
                }
                if p["field"].as_str().is_some_and(|f| f != "text") {
                    return fx;
                }
                let (Some(part_id), Some(delta)) = (p["partID"].as_str(), p["delta"].as_str()) else {
                    return fx;
                };
                self.on_delta(part_id, delta, &mut fx);
            }
            "message.part.updated" => self.on_part(&p["part"], &mut fx),
            "permission.asked" => self.on_permission(p, &mut fx),
            "permission.replied" => self.on_permission_replied(p, &mut fx),
            "question.asked" => self.on_question(p, &mut fx),
            "question.replied" | "question.rejected" => self.on_question_answered(p, &mut fx),
            "session.error" => self.on_error(&p["error"], &mut fx),
            "session.idle" => fx.idle = self.started,
            "session.status" => match p["status"]["type"].as_str() {
                Some("idle") => fx.idle = self.started,
                Some("retry") => {
                    self.started = true;
                    self.on_retry(&p["status"], &mut fx);
                }
                Some(_) => self.started = true,
                None => {}
            },
            _ => {}
        }
        fx
    }

    fn on_permission_replied(&mut self, p: &Value, fx: &mut Effects) {
        let id = p["requestID"].as_str().unwrap_or_default();
        let reply = match p["reply"].as_str() {
            Some("once") => PermissionReply::Once,
            Some("always") => PermissionReply::Always,
            _ => PermissionReply::Reject,
        };
        if let Ok(prompt_id) = PromptId::parse(id) {
            if self.answered.insert(id.to_owned()) {
                fx.chunks.push(ChunkBody::PermissionAnswer { prompt_id, reply });
            }
        }
    }

    fn on_question_answered(&mut self, p: &Value, fx: &mut Effects) {
        let id = p["requestID"].as_str().unwrap_or_default();
        let answers = p["answers"].as_array().map(|a| {
            a.iter()
                .map(|q| {
                    q.as_array()
                        .map(|l| l.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default()
                })
                .collect()
        });
        if let Ok(prompt_id) = PromptId::parse(id) {
            if self.answered.insert(id.to_owned()) {
                fx.chunks.push(ChunkBody::QuestionAnswer { prompt_id, answers });
            }
        }
    }

    fn on_message_info(&mut self, info: &Value, fx: &mut Effects) {
        let Some(id) = info["id"].as_str() else { return };
        if self.foreign.contains(id) {
            return;
        }
        // Older than this turn's prompt and not an answer to it: an earlier
        // turn's message (the slack in `started_at` covers clock rounding).
        let created = info["time"]["created"].as_i64().unwrap_or(i64::MAX);
        let parent_is_ours = info["parentID"]
            .as_str()
            .is_some_and(|parent| self.user_messages.contains(parent));
        if created < self.started_at && !parent_is_ours {
            self.foreign.insert(id.to_owned());
            return;
        }
        self.take(Some(id));
        if info["role"].as_str() == Some("user") {
            self.user_messages.insert(id.to_owned());
            return;
        }
        self.started = true;
        if let Some(err) = info.get("error").filter(|e| !e.is_null()) {
            self.on_error(err, fx);
        }
    }

    /// opencode will call the model again (`{attempt, message, next}`):
    /// told once per attempt, so the user sees why nothing streams.
    fn on_retry(&mut self, status: &Value, fx: &mut Effects) {
        let attempt = status["attempt"]
            .as_u64()
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(self.retries + 1);
        if attempt <= self.retries {
            return;
        }
        self.retries = attempt;
        fx.chunks.push(ChunkBody::Retry {
            attempt,
            message: status["message"].as_str().unwrap_or("the model call failed").to_owned(),
            next_at: status["next"].as_i64(),
        });
    }

    fn on_error(&mut self, err: &Value, fx: &mut Effects) {
        let name = err["name"].as_str().unwrap_or("Error");
        if name == "MessageAbortedError" {
            self.aborted = true;
            return;
        }
        let message = err["data"]["message"]
            .as_str()
            .or_else(|| err["message"].as_str())
            .unwrap_or(name)
            .to_owned();
        if self.error.as_deref() != Some(message.as_str()) {
            fx.chunks.push(ChunkBody::Error {
                message: message.clone(),
            });
            self.error = Some(message);
        }
    }

    fn on_delta(&mut self, part_id: &str, delta: &str, fx: &mut Effects) {
        self.started = true;
        let part = self.parts.entry(part_id.to_owned()).or_insert_with(|| Part::Text {
            sent: String::new(),
        });
        match part {
            Part::Text { sent } => {
                if sent.is_empty() && !self.text_order.iter().any(|p| p == part_id) {
                    self.text_order.push(part_id.to_owned());
                }
                sent.push_str(delta);
                fx.chunks.push(ChunkBody::Text {
                    part_id: part_id.to_owned(),
                    delta: delta.to_owned(),
                });
            }
            Part::Reasoning { sent } => {
                sent.push_str(delta);
                fx.chunks.push(ChunkBody::Reasoning {
                    part_id: part_id.to_owned(),
                    delta: delta.to_owned(),
                });
            }
            _ => {}
        }
    }

    /// A whole part, live or read back: send what was not sent yet.
    fn on_part(&mut self, part: &Value, fx: &mut Effects) {
        let (Some(id), Some(kind)) = (part["id"].as_str(), part["type"].as_str()) else {
            return;
        };
        if !self.take(part["messageID"].as_str())
            || self.user_messages.contains(part["messageID"].as_str().unwrap_or_default())
        {
            return;
        }
        match kind {
            "text" => {
                if part["synthetic"].as_bool() == Some(true) || part["ignored"].as_bool() == Some(true) {
                    return;
                }
                if !self.text_order.iter().any(|p| p == id) {
                    self.text_order.push(id.to_owned());
                }
                let entry = self.parts.entry(id.to_owned()).or_insert_with(|| Part::Text { sent: String::new() });
                if let Part::Text { sent } = entry {
                    catch_up(sent, part["text"].as_str().unwrap_or_default(), |d| ChunkBody::Text {
                        part_id: id.to_owned(),
                        delta: d,
                    }, fx);
                }
            }
            "reasoning" => {
                let entry = self
                    .parts
                    .entry(id.to_owned())
                    .or_insert_with(|| Part::Reasoning { sent: String::new() });
                if let Part::Text { sent } = entry {
                    // A delta arrived before we knew the part's kind.
                    *entry = Part::Reasoning { sent: std::mem::take(sent) };
                }
                if let Part::Reasoning { sent } = entry {
                    catch_up(sent, part["text"].as_str().unwrap_or_default(), |d| ChunkBody::Reasoning {
                        part_id: id.to_owned(),
                        delta: d,
                    }, fx);
                }
            }
            "tool" => {
                let entry = self
                    .parts
                    .entry(id.to_owned())
                    .or_insert_with(|| Part::Tool(ToolPart::default()));
                if let Part::Tool(tool) = entry {
                    on_tool(id, tool, part, fx);
                }
                if part["tool"].as_str() == Some("task") {
                    let session = self.session.clone();
                    self.on_task(&session, part, fx);
                }
            }
            "step-finish" => {
                if self.parts.contains_key(id) {
                    return;
                }
                self.parts.insert(id.to_owned(), Part::Other);
                let t = &part["tokens"];
                fx.chunks.push(ChunkBody::Step {
                    reason: part["reason"].as_str().unwrap_or_default().to_owned(),
                    usage: Usage {
                        input: t["input"].as_u64().unwrap_or(0),
                        output: t["output"].as_u64().unwrap_or(0),
                        reasoning: t["reasoning"].as_u64().unwrap_or(0),
                        cache_read: t["cache"]["read"].as_u64().unwrap_or(0),
                        cache_write: t["cache"]["write"].as_u64().unwrap_or(0),
                        cost: part["cost"].as_f64().unwrap_or(0.0),
                    },
                });
            }
            _ => {
                self.parts.entry(id.to_owned()).or_insert(Part::Other);
            }
        }
    }

    fn on_permission(&mut self, p: &Value, fx: &mut Effects) {
        let Some(id) = p["id"].as_str() else { return };
        let Ok(prompt_id) = PromptId::parse(id) else { return };
        if !self.prompts.insert(id.to_owned()) {
            return;
        }
        fx.chunks.push(ChunkBody::PermissionRequest {
            prompt_id,
            permission: p["permission"].as_str().unwrap_or_default().to_owned(),
            patterns: p["patterns"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            metadata: p["metadata"].clone(),
            call_id: p["tool"]["callID"].as_str().map(str::to_owned),
        });
    }

    fn on_question(&mut self, p: &Value, fx: &mut Effects) {
        let Some(id) = p["id"].as_str() else { return };
        let Ok(prompt_id) = PromptId::parse(id) else { return };
        if !self.prompts.insert(id.to_owned()) {
            return;
        }
        fx.chunks.push(ChunkBody::Question {
            prompt_id,
            questions: p["questions"].clone(),
        });
    }

    /// Reconciles with opencode's stored messages (after the event stream
    /// dropped): parts of this turn's assistant messages are compared with
    /// what was sent. Returns the missing chunks.
    pub fn reconcile_messages(&mut self, messages: &[Value]) -> Vec<ChunkBody> {
        let mut fx = Effects::default();
        for m in messages {
            let info = &m["info"];
            let created = info["time"]["created"].as_i64().unwrap_or(0);
            if info["role"].as_str() == Some("user") {
                if created >= self.started_at {
                    if let Some(id) = info["id"].as_str() {
                        self.user_messages.insert(id.to_owned());
                    }
                }
                continue;
            }
            let ours = info["parentID"]
                .as_str()
                .is_some_and(|parent| self.user_messages.contains(parent))
                || created >= self.started_at;
            if !ours {
                continue;
            }
            self.on_message_info(info, &mut fx);
            for part in m["parts"].as_array().into_iter().flatten() {
                self.on_part(part, &mut fx);
            }
        }
        fx.chunks
    }

    /// Reconciles with opencode's pending prompts (permissions or questions).
    pub fn reconcile_prompts(&mut self, permissions: &[Value], questions: &[Value]) -> Vec<ChunkBody> {
        let mut fx = Effects::default();
        let ours = |v: &Value| v["sessionID"].as_str().is_some_and(|s| self.owns(s));
        let permissions: Vec<&Value> = permissions.iter().filter(|p| ours(p)).collect();
        let questions: Vec<&Value> = questions.iter().filter(|q| ours(q)).collect();
        for p in permissions {
            self.on_permission(p, &mut fx);
        }
        for q in questions {
            self.on_question(q, &mut fx);
        }
        fx.chunks
    }
}

/// Sends the part of `full` beyond what was `sent`. If the agent rewrote
/// text already sent (rare), nothing is taken back: the stored answer keeps
/// what streamed, and the completion's final text has the agent's version.
fn catch_up(sent: &mut String, full: &str, make: impl Fn(String) -> ChunkBody, fx: &mut Effects) {
    if full.len() > sent.len() && full.starts_with(sent.as_str()) {
        let rest = full[sent.len()..].to_owned();
        sent.push_str(&rest);
        fx.chunks.push(make(rest));
    }
}
