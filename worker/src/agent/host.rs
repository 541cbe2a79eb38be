//! The host's side of the loop: the hello and the agent's state, titles,
//! and what each frame from the host asks.

use std::time::Duration;

use tether_domain::ids::{MessageId, SessionId};
use tether_domain::model::{AgentState, WorkerStatus};
use tether_domain::protocol::{AgentReport, Outcome, PromptAnswer, Request, ServerFrame, MAX_AGENT_REASON_BYTES};
use tracing::{debug, info, warn};

use super::turns::Job;
use super::{now, now_ms, Agent, Done, Exit, MAX_FRAME_INTERVAL_MS, MIN_FRAME_INTERVAL_MS};
use crate::opencode::{explain, title, Opencode};
use crate::outbox::AfterError;

impl<O: Opencode> Agent<O> {
    pub(super) fn hello(&mut self) {
        // Every message this worker holds in any form: queued here, running,
        // or with output not yet acknowledged. The host fails a streaming
        // message that is not listed, and frames may be handled out of order,
        // so a message must be listed from the moment it is taken.
        let mut active: Vec<MessageId> = self.outboxes.keys().cloned().collect();
        active.extend(self.turns.keys().cloned());
        for state in self.sessions.values() {
            active.extend(state.queue.iter().map(|j| j.message.clone()));
        }
        active.sort();
        active.dedup();
        let request = Request::WorkerHello {
            machine: Some(self.profile.machine.clone()),
            name: Some(self.profile.name.clone()),
            workdir: Some(self.profile.workdir.clone()),
            version: Some(self.profile.version.clone()),
            models: self.models.models.clone(),
            default_model: self.models.default.clone(),
            active_messages: active,
            agent: Some(self.agent.clone()),
        };
        self.send(request);
    }

    /// A report of `state` later than the last one (by at least a
    /// millisecond, so the host never takes it for a repeat).
    pub(super) fn next_report(&self, state: AgentState, reason: Option<String>) -> AgentReport {
        AgentReport {
            state,
            reason: reason
                .map(|r| title::one_line_within(&r, MAX_AGENT_REASON_BYTES))
                .filter(|r| !r.is_empty()),
            at: now_ms().max(self.agent.at + 1),
        }
    }

    /// The agent's state changed: tell the host (a worker not connected
    /// says it in its next hello).
    pub(super) fn report_agent(&mut self, state: AgentState, reason: Option<String>) {
        self.agent = self.next_report(state, reason);
        info!(state = state.as_str(), reason = self.agent.reason.as_deref().unwrap_or(""), "agent state");
        self.send(Request::AgentState {
            state,
            reason: self.agent.reason.clone(),
            at: self.agent.at,
        });
    }

    /// Tells the host the titles it has not heard (once connected).
    pub(super) fn tell_titles(&mut self) {
        if !self.connected {
            return;
        }
        let mut told = Vec::new();
        for (id, state) in &mut self.sessions {
            if let (Some(t), false) = (&state.title, state.title_told) {
                state.title_told = true;
                told.push((id.clone(), t.clone()));
            }
        }
        for (session_id, title) in told {
            debug!(session_id = %session_id, "the agent titled a session");
            self.send(Request::SessionTitle { session_id, title });
        }
    }

    /// opencode titled a session: if it is one of ours with another title,
    /// the host hears of it.
    pub(super) fn on_title(&mut self, agent_session: &str, title: String) {
        let Some(state) = self
            .sessions
            .values_mut()
            .find(|s| s.agent_id.as_deref() == Some(agent_session))
        else {
            return;
        };
        if state.title.as_deref() == Some(title.as_str()) {
            return;
        }
        state.title = Some(title);
        state.title_told = false;
        self.tell_titles();
    }

    pub(super) fn on_frame(&mut self, frame: ServerFrame) -> Option<Exit> {
        match frame {
            ServerFrame::Reply { id: None, .. } => {}
            ServerFrame::Reply {
                ok: true,
                data: Some(data),
                ..
            } if data.get("frame_interval_ms").is_some() => {
                // The hello's reply: how often this host wants chunk frames.
                if let Some(ms) = data["frame_interval_ms"].as_u64() {
                    self.frame_interval = Duration::from_millis(ms.clamp(MIN_FRAME_INTERVAL_MS, MAX_FRAME_INTERVAL_MS));
                    for ob in self.outboxes.values_mut() {
                        ob.set_interval(self.frame_interval);
                    }
                }
            }
            ServerFrame::Reply { id: Some(id), ok, error, .. } => {
                if let Some(ob) = self.outboxes.values_mut().find(|ob| ob.owns(&id)) {
                    if ok {
                        ob.on_ok(&id);
                    } else if let Some(e) = error {
                        if ob.on_error(&id, e.code, now()) == AfterError::Abandon {
                            warn!(message_id = %ob.message(), code = e.code.as_str(), message = %e.message, "the host refused this answer's chunks");
                        }
                    }
                    self.flush(false);
                } else if let Some(e) = error {
                    debug!(request_id = %id, code = e.code.as_str(), message = %e.message, "request refused");
                }
            }
            // Who approved it is the run loop's to show and keep (run.rs).
            ServerFrame::PairingStatus { status, .. } => match status {
                WorkerStatus::Approved => self.hello(),
                WorkerStatus::Rejected | WorkerStatus::Revoked => return Some(Exit::NotApproved(status)),
                WorkerStatus::Pending => {}
            },
            ServerFrame::SessionStart { session_id, title, .. } => self.session_start(session_id, title),
            ServerFrame::MessageDispatch {
                session_id,
                agent_session_id,
                message_id,
                text,
                model,
                ..
            } => {
                if !self.taken.insert(message_id.clone()) {
                    debug!(message_id = %message_id, "dispatch repeated; already taken");
                    return None;
                }
                let state = self.sessions.entry(session_id.clone()).or_default();
                if state.agent_id.is_none() {
                    state.agent_id = agent_session_id;
                }
                state.queue.push_back(Job {
                    message: message_id,
                    text,
                    model,
                });
                self.try_start(&session_id);
            }
            ServerFrame::MessageAbort { session_id, message_id } => self.abort(&session_id, &message_id),
            ServerFrame::SessionEnd { session_id } => {
                let active = self.sessions.get(&session_id).and_then(|s| s.active.clone());
                if let Some(state) = self.sessions.get_mut(&session_id) {
                    state.ended = true;
                }
                let queued: Vec<MessageId> = self
                    .sessions
                    .get_mut(&session_id)
                    .map(|s| s.queue.drain(..).map(|j| j.message).collect())
                    .unwrap_or_default();
                for m in queued {
                    self.end_unstarted(&m, Outcome::Aborted, "the session ended");
                }
                if let Some(m) = active {
                    self.abort(&session_id, &m);
                } else {
                    self.sessions.remove(&session_id);
                }
            }
            ServerFrame::PromptAnswer { prompt_id, answer, .. } => {
                // Without opencode the answer waits: the host pushes it
                // again on the next hello, until it is delivered.
                if let Some(client) = self.client.clone() {
                    let prompt = prompt_id.clone();
                    self.spawn(async move {
                        let result = match &answer {
                            PromptAnswer::Permission { reply } => client.reply_permission(prompt.as_str(), *reply).await,
                            PromptAnswer::Question { answers } => client.reply_question(prompt.as_str(), answers).await,
                            PromptAnswer::QuestionRejected => client.reject_question(prompt.as_str()).await,
                        };
                        Done::Answered {
                            prompt,
                            result: result.map_err(|e| format!("{e:#}")),
                        }
                    });
                }
            }
            ServerFrame::WorkerUpdated { .. }
            | ServerFrame::SessionUpdated { .. }
            | ServerFrame::MessageUpdated { .. }
            | ServerFrame::Chunks { .. } => {}
        }
        None
    }

    pub(super) fn session_start(&mut self, session: SessionId, title: String) {
        let state = self.sessions.entry(session.clone()).or_default();
        if !title.is_empty() && state.title.is_none() {
            // The user's: opencode echoes it back, and that is no news.
            state.title = Some(title.clone());
            state.title_told = true;
        }
        if let Some(agent) = state.agent_id.clone() {
            self.send(Request::SessionReady {
                session_id: session,
                agent_session_id: agent,
            });
            return;
        }
        if state.creating {
            return;
        }
        let Some(client) = self.client.clone() else {
            // opencode is starting; the host pushes this again on our next hello.
            return;
        };
        state.creating = true;
        self.spawn(async move {
            let result = client.create_session(&title).await.map_err(|e| {
                warn!(error = format!("{e:#}"), "creating the agent session failed");
                explain::for_people("start an opencode session", &e)
            });
            Done::SessionCreated { session, result }
        });
    }
}
