//! Subagents: the child sessions opencode's `task` tool starts for a turn
//! (and their children), followed through their own events, told as
//! subagent chunks, read back after a dropped event stream, closed with
//! the turn.

use std::collections::HashMap;

use serde_json::Value;
use tether_domain::protocol::{ChunkBody, SubagentStatus, SubagentTool, ToolStatus};

use super::tools::tool_status;
use super::{Effects, Turn};

/// Longest description, tool summary or error a subagent chunk carries, in
/// characters: each such chunk stays small, whatever the subagent does.
const SUMMARY_MAX: usize = 300;

/// A subagent: an opencode child session working for this turn (opencode's
/// `task` tool starts one; its children's children count too).
#[derive(Debug)]
pub(super) struct Child {
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

impl Turn {
    /// The sessions of this turn's subagents, in the order they came.
    pub fn subagents(&self) -> Vec<String> {
        self.child_order.clone()
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
    pub(super) fn adopt(&mut self, info: &Value, fx: &mut Effects) {
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

    pub(super) fn new_child(&mut self, id: &str, parent: &str, agent: String, description: String) {
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
    pub(super) fn on_task(&mut self, owner: &str, part: &Value, fx: &mut Effects) {
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
    pub(super) fn on_child_event(&mut self, child: &str, event: &Value, fx: &mut Effects) {
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
    pub(super) fn on_child_tool(&mut self, child: &str, part: &Value, fx: &mut Effects) {
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
    pub(super) fn sync_child(&mut self, id: &str, fx: &mut Effects) {
        let Some(c) = self.children.get(id) else { return };
        if c.sent.as_ref() == Some(&c.header()) {
            return;
        }
        self.push_child(id, None, fx);
    }

    pub(super) fn push_child(&mut self, id: &str, tool: Option<SubagentTool>, fx: &mut Effects) {
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
