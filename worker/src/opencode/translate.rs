//! From opencode's events to chunks, for one turn (one of our messages).
//!
//! The translator keeps, for every part of the turn, what it has already
//! sent: text sent so far, a tool call's last status and how much of its
//! output went out. Live deltas append to it; a whole part (from
//! `message.part.updated`, or read back from opencode's message API after
//! its event stream dropped) is compared with it and only the difference
//! goes out. So live streaming and reconciliation are one mechanism, and
//! nothing is sent twice or lost.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tether_domain::ids::PromptId;
use tether_domain::protocol::{ChunkBody, PermissionReply, SubagentStatus, SubagentTool, ToolStatus, Usage};

/// Longest description, tool summary or error a subagent chunk carries, in
/// characters: each such chunk stays small, whatever the subagent does.
const SUMMARY_MAX: usize = 300;

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

/// A subagent: an opencode child session working for this turn (opencode's
/// `task` tool starts one; its children's children count too).
#[derive(Debug)]
struct Child {
    /// The session it works for: the turn's, or another child's.
    parent: String,
    /// The `task` call that started it.
    call_id: Option<String>,
    agent: String,
    description: String,
    status: SubagentStatus,
    error: Option<String>,
    /// What the last subagent chunk said of it.
    sent: Option<Header>,
    /// Its tool calls by part id: the status and summary last sent.
    tools: HashMap<String, (ToolStatus, String)>,
}

type Header = (Option<String>, String, String, SubagentStatus, Option<String>);

impl Child {
    fn header(&self) -> Header {
        (
            self.call_id.clone(),
            self.agent.clone(),
            self.description.clone(),
            self.status,
            self.error.clone(),
        )
    }
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

    /// The sessions of this turn's subagents, in the order they came.
    pub fn subagents(&self) -> Vec<String> {
        self.child_order.clone()
    }

    /// When this turn's prompt went out (ms since the epoch, opencode's clock).
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// Ends every subagent still running, with the turn (once each): they
    /// cannot run on once the answer is over.
    pub fn close_subagents(&mut self, status: SubagentStatus, why: &str) -> Vec<ChunkBody> {
        let mut fx = Effects::default();
        for id in self.child_order.clone() {
            if let Some(c) = self.children.get_mut(&id) {
                if c.status == SubagentStatus::Running {
                    c.status = status;
                    if status != SubagentStatus::Completed {
                        c.error = Some(why.to_owned());
                    }
                }
            }
            self.sync_child(&id, &mut fx);
        }
        fx.chunks
    }

    /// A child session under one this turn owns (from `session.created`,
    /// `session.updated` or `GET /session/{id}/children`): adopted unless it
    /// is older than the turn (an earlier turn's subagent).
    fn adopt(&mut self, info: &Value, fx: &mut Effects) {
        let (Some(id), Some(parent)) = (info["id"].as_str(), info["parentID"].as_str()) else {
            return;
        };
        if id == self.session || !self.owns(parent) {
            return;
        }
        if !self.children.contains_key(id) {
            if info["time"]["created"].as_i64().unwrap_or(i64::MAX) < self.started_at {
                return;
            }
            let (description, agent) = split_title(info["title"].as_str().unwrap_or_default());
            self.new_child(id, parent, agent, description);
        }
        self.sync_child(id, fx);
    }

    fn new_child(&mut self, id: &str, parent: &str, agent: String, description: String) {
        self.children.insert(
            id.to_owned(),
            Child {
                parent: parent.to_owned(),
                call_id: None,
                agent,
                description,
                status: SubagentStatus::Running,
                error: None,
                sent: None,
                tools: HashMap::new(),
            },
        );
        self.child_order.push(id.to_owned());
    }

    /// A `task` tool part of a session this turn owns: the subagent it runs
    /// (`metadata.sessionId`), its agent and description, and its end.
    fn on_task(&mut self, owner: &str, part: &Value, fx: &mut Effects) {
        let state = &part["state"];
        let Some(id) = state["metadata"]["sessionId"].as_str() else { return };
        if id == self.session {
            return;
        }
        if !self.children.contains_key(id) {
            self.new_child(id, owner, String::new(), String::new());
        }
        let Some(c) = self.children.get_mut(id) else { return };
        if let Some(call) = part["callID"].as_str() {
            c.call_id = Some(call.to_owned());
        }
        let input = &state["input"];
        if let Some(agent) = input["subagent_type"].as_str().filter(|a| !a.is_empty()) {
            c.agent = bounded(agent, 64);
        }
        if let Some(d) = input["description"].as_str().filter(|d| !d.is_empty()) {
            c.description = bounded(d, SUMMARY_MAX);
        }
        match state["status"].as_str() {
            Some("completed") if c.status == SubagentStatus::Running => c.status = SubagentStatus::Completed,
            Some("error") if matches!(c.status, SubagentStatus::Running | SubagentStatus::Completed) => {
                let error = state["error"].as_str().unwrap_or("the subagent failed");
                c.status = if error.to_lowercase().contains("aborted") {
                    SubagentStatus::Aborted
                } else {
                    SubagentStatus::Error
                };
                c.error = Some(bounded(error, SUMMARY_MAX));
            }
            _ => {}
        }
        self.sync_child(id, fx);
    }

    /// An event of a subagent's session: its prompts are the turn's, its
    /// tool calls show in its chunks; its text, steps and idles are its own
    /// business (its result reaches the answer through the `task` call).
    fn on_child_event(&mut self, child: &str, event: &Value, fx: &mut Effects) {
        let p = &event["properties"];
        match event["type"].as_str().unwrap_or_default() {
            "permission.asked" => self.on_permission(p, fx),
            "permission.replied" => self.on_permission_replied(p, fx),
            "question.asked" => self.on_question(p, fx),
            "question.replied" | "question.rejected" => self.on_question_answered(p, fx),
            "message.part.updated" if p["part"]["type"].as_str() == Some("tool") => {
                self.on_child_tool(child, &p["part"], fx);
            }
            "session.error" => {
                let err = &p["error"];
                if let Some(c) = self.children.get_mut(child) {
                    if c.status == SubagentStatus::Running {
                        if err["name"].as_str() == Some("MessageAbortedError") {
                            c.status = SubagentStatus::Aborted;
                        } else {
                            c.status = SubagentStatus::Error;
                            let message = err["data"]["message"]
                                .as_str()
                                .or_else(|| err["message"].as_str())
                                .or_else(|| err["name"].as_str())
                                .unwrap_or("the subagent failed");
                            c.error = Some(bounded(message, SUMMARY_MAX));
                        }
                    }
                }
                self.sync_child(child, fx);
            }
            _ => {}
        }
    }

    /// One of a subagent's tool calls, live or read back: a chunk when its
    /// status or summary changed.
    fn on_child_tool(&mut self, child: &str, part: &Value, fx: &mut Effects) {
        let Some(part_id) = part["id"].as_str() else { return };
        if part["tool"].as_str() == Some("task") {
            self.on_task(child, part, fx);
        }
        let state = &part["state"];
        let status = tool_status(state["status"].as_str().unwrap_or("pending"));
        let input = &state["input"];
        if status == ToolStatus::Pending && input.as_object().is_none_or(|o| o.is_empty()) {
            return;
        }
        let title = bounded(&summary(state), SUMMARY_MAX);
        let Some(c) = self.children.get_mut(child) else { return };
        if c.tools.get(part_id).is_some_and(|(s, t)| *s == status && *t == title) {
            return;
        }
        // A finished call stays finished (a late running update is stale).
        if c.tools.get(part_id).is_some_and(|(s, _)| matches!(s, ToolStatus::Completed | ToolStatus::Error)) {
            return;
        }
        c.tools.insert(part_id.to_owned(), (status, title.clone()));
        let tool = SubagentTool {
            part_id: part_id.to_owned(),
            call_id: part["callID"].as_str().unwrap_or_default().to_owned(),
            tool: bounded(part["tool"].as_str().unwrap_or_default(), 64),
            status,
            title,
        };
        self.push_child(child, Some(tool), fx);
    }

    /// A chunk for a subagent if what it says of it changed.
    fn sync_child(&mut self, id: &str, fx: &mut Effects) {
        let Some(c) = self.children.get(id) else { return };
        if c.sent.as_ref() == Some(&c.header()) {
            return;
        }
        self.push_child(id, None, fx);
    }

    fn push_child(&mut self, id: &str, tool: Option<SubagentTool>, fx: &mut Effects) {
        let session = self.session.clone();
        let Some(c) = self.children.get_mut(id) else { return };
        c.sent = Some(c.header());
        fx.chunks.push(ChunkBody::Subagent {
            subagent_id: id.to_owned(),
            call_id: c.call_id.clone(),
            parent_id: (c.parent != session).then(|| c.parent.clone()),
            agent: c.agent.clone(),
            description: c.description.clone(),
            status: c.status,
            error: c.error.clone(),
            tool,
        });
    }

    /// Reconciles with opencode's session tree after the event stream
    /// dropped: `sessions` are child sessions (`GET /session/{id}/children`,
    /// parents before their children), `messages` each child's messages.
    /// Adopts the new ones and sends what changed of their tool calls.
    pub fn reconcile_subagents(&mut self, sessions: &[Value], messages: &[(String, Vec<Value>)]) -> Vec<ChunkBody> {
        let mut fx = Effects::default();
        for info in sessions {
            self.adopt(info, &mut fx);
        }
        for (child, list) in messages {
            if !self.children.contains_key(child) {
                continue;
            }
            for m in list {
                if m["info"]["role"].as_str() != Some("assistant") {
                    continue;
                }
                for part in m["parts"].as_array().into_iter().flatten() {
                    if part["type"].as_str() == Some("tool") {
                        self.on_child_tool(child, part, &mut fx);
                    }
                }
            }
        }
        fx.chunks
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

/// A child session's title is `DESCRIPTION (@AGENT subagent)`: its
/// description and agent, until the `task` call tells them.
fn split_title(title: &str) -> (String, String) {
    if let Some(rest) = title.strip_suffix(" subagent)") {
        if let Some(at) = rest.rfind(" (@") {
            return (bounded(&rest[..at], SUMMARY_MAX), bounded(&rest[at + 3..], 64));
        }
    }
    (bounded(title, SUMMARY_MAX), String::new())
}

/// A tool call in a line: its title, else the gist of its input.
fn summary(state: &Value) -> String {
    let input = &state["input"];
    state["title"]
        .as_str()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            ["command", "filePath", "path", "pattern", "url", "description", "query"]
                .iter()
                .find_map(|k| input[*k].as_str())
        })
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// At most `max` characters of `s` (an ellipsis marks a cut).
fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
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

fn tool_status(s: &str) -> ToolStatus {
    match s {
        "running" => ToolStatus::Running,
        "completed" => ToolStatus::Completed,
        "error" => ToolStatus::Error,
        _ => ToolStatus::Pending,
    }
}

fn on_tool(part_id: &str, tool: &mut ToolPart, part: &Value, fx: &mut Effects) {
    if tool.finished {
        return;
    }
    let state = &part["state"];
    let status = tool_status(state["status"].as_str().unwrap_or("pending"));
    tool.call_id = part["callID"].as_str().unwrap_or_default().to_owned();
    tool.tool = part["tool"].as_str().unwrap_or_default().to_owned();
    let input = state["input"].clone();
    let title = state["title"].as_str().map(str::to_owned);
    let changed = tool.status != Some(status) || tool.input != input || tool.title != title;
    if changed && !(status == ToolStatus::Pending && input.as_object().is_none_or(|o| o.is_empty()) && tool.status.is_some()) {
        tool.status = Some(status);
        tool.input = input.clone();
        tool.title = title.clone();
        fx.chunks.push(ChunkBody::ToolCall {
            part_id: part_id.to_owned(),
            call_id: tool.call_id.clone(),
            tool: tool.tool.clone(),
            status,
            input,
            title,
        });
    }
    // Output streams in `metadata.output` while running and lands in
    // `output` when completed.
    let output = match status {
        ToolStatus::Completed => state["output"].as_str(),
        _ => state["metadata"]["output"].as_str(),
    };
    if let Some(out) = output {
        if out.len() > tool.output_sent.len() && out.starts_with(tool.output_sent.as_str()) {
            let rest = out[tool.output_sent.len()..].to_owned();
            tool.output_sent.push_str(&rest);
            fx.chunks.push(ChunkBody::ToolOutput {
                part_id: part_id.to_owned(),
                call_id: tool.call_id.clone(),
                delta: rest,
            });
        }
    }
    if matches!(status, ToolStatus::Completed | ToolStatus::Error) {
        tool.finished = true;
        if let Some(edit) = file_edit(&tool.tool, state) {
            fx.chunks.push(edit);
        }
        fx.chunks.push(ChunkBody::ToolResult {
            part_id: part_id.to_owned(),
            call_id: tool.call_id.clone(),
            status,
            error: state["error"].as_str().map(str::to_owned),
            metadata: state["metadata"].clone(),
        });
    }
}

/// A completed edit or write becomes a file edit with its diff.
fn file_edit(tool: &str, state: &Value) -> Option<ChunkBody> {
    if state["status"].as_str() != Some("completed") {
        return None;
    }
    let meta = &state["metadata"];
    let input = &state["input"];
    let path = meta["filediff"]["file"]
        .as_str()
        .or_else(|| meta["filepath"].as_str())
        .or_else(|| input["filePath"].as_str())
        .or_else(|| input["path"].as_str())?
        .to_owned();
    match tool {
        "edit" | "write" | "patch" | "multiedit" => {}
        _ => return None,
    }
    let diff = meta["diff"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            // A new file: its whole content as additions.
            input["content"].as_str().map(|c| {
                let lines: Vec<String> = c.lines().map(|l| format!("+{l}")).collect();
                format!("--- /dev/null\n+++ {path}\n@@ -0,0 +1,{} @@\n{}\n", lines.len(), lines.join("\n"))
            })
        })?;
    let additions = meta["filediff"]["additions"]
        .as_u64()
        .unwrap_or_else(|| diff.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count() as u64) as u32;
    let deletions = meta["filediff"]["deletions"]
        .as_u64()
        .unwrap_or_else(|| diff.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).count() as u64) as u32;
    Some(ChunkBody::FileEdit {
        path,
        diff,
        additions,
        deletions,
    })
}
