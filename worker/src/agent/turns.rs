//! Sessions and their turns: a queue of messages per session, one running
//! at a time; opencode's events and the results of its calls; how a turn
//! ends (its outcome, its open tools and subagents closed) and what starts
//! next.

use std::collections::{HashSet, VecDeque};

use serde_json::Value;
use tether_domain::ids::{MessageId, SessionId};
use tether_domain::protocol::{ChunkBody, ModelRef, Outcome, Request, SubagentStatus};
use tracing::{info, warn};

use super::{now, now_ms, Agent, Done, ABORT_SETTLE};
use crate::opencode::{explain, title, Opencode, Turn};
use crate::outbox::{Completion, Outbox};

/// A message waiting for its session's turn.
pub(super) struct Job {
    pub(super) message: MessageId,
    pub(super) text: String,
    pub(super) model: ModelRef,
}

#[derive(Default)]
pub(super) struct SessionState {
    pub(super) agent_id: Option<String>,
    pub(super) creating: bool,
    pub(super) queue: VecDeque<Job>,
    pub(super) active: Option<MessageId>,
    pub(super) ended: bool,
    /// The opencode messages of the turns so far, whose late events the
    /// next turn must not take for its own.
    pub(super) earlier_messages: HashSet<String>,
    /// The session's title as last known: the user's (from `session_start`)
    /// or the agent's.
    pub(super) title: Option<String>,
    /// The host has been told `title` (or it is the user's own).
    pub(super) title_told: bool,
}

impl<O: Opencode> Agent<O> {
    /// Starts the next queued message of a session if nothing runs there.
    pub(super) fn try_start(&mut self, session: &SessionId) {
        let Some(client) = self.client.clone() else { return };
        let Some(state) = self.sessions.get_mut(session) else { return };
        if state.active.is_some() || state.creating {
            return;
        }
        let Some(agent) = state.agent_id.clone() else { return };
        let Some(job) = state.queue.pop_front() else { return };
        state.active = Some(job.message.clone());
        let turn = Turn::new(agent.clone(), now_ms() - 1000).with_foreign(state.earlier_messages.clone());
        self.turns.insert(job.message.clone(), (session.clone(), turn));
        self.outboxes
            .insert(job.message.clone(), Outbox::new(job.message.clone()).with_interval(self.frame_interval));
        self.send(Request::MessageStarted {
            message_id: job.message.clone(),
        });
        let message = job.message.clone();
        self.spawn(async move {
            // The agent session survives opencode restarts on disk; if it is
            // gone (another machine's data dir), a new one takes its place.
            let result = match client.session_exists(&agent).await {
                Ok(true) => client.prompt(&agent, &job.model, &job.text).await,
                Ok(false) => Err(anyhow::anyhow!(
                    "opencode no longer has this session's history (its data was removed)"
                )),
                Err(e) => Err(e),
            };
            Done::Prompted {
                message,
                result: result.map_err(|e| {
                    warn!(error = format!("{e:#}"), "sending the prompt to opencode failed");
                    explain::for_people("send your message to opencode", &e)
                }),
            }
        });
    }

    pub(super) fn abort(&mut self, session: &SessionId, message: &MessageId) {
        let active = self.sessions.get(session).and_then(|s| s.active.clone());
        if active.as_ref() == Some(message) {
            if let Some((_, turn)) = self.turns.get_mut(message) {
                turn.aborted = true;
                let agent = turn.session().to_owned();
                if let Some(client) = self.client.clone() {
                    tokio::spawn(async move {
                        if let Err(e) = client.abort(&agent).await {
                            warn!(error = %e, "abort failed");
                        }
                    });
                }
            }
            return;
        }
        let queued = self
            .sessions
            .get_mut(session)
            .and_then(|s| s.queue.iter().position(|j| &j.message == message).map(|i| s.queue.remove(i)));
        if queued.is_some() {
            self.end_unstarted(message, Outcome::Aborted, "aborted before it started");
        }
    }

    /// Ends a message that never reached opencode.
    pub(super) fn end_unstarted(&mut self, message: &MessageId, outcome: Outcome, why: &str) {
        let mut ob = Outbox::new(message.clone());
        ob.complete(Completion {
            outcome,
            error: Some(why.to_owned()),
        });
        self.outboxes.insert(message.clone(), ob);
        self.flush(true);
    }

    pub(super) fn on_done(&mut self, done: Done) {
        match done {
            Done::SessionCreated { session, result } => {
                let Some(state) = self.sessions.get_mut(&session) else { return };
                state.creating = false;
                match result {
                    Ok(agent) => {
                        state.agent_id = Some(agent.clone());
                        self.send(Request::SessionReady {
                            session_id: session.clone(),
                            agent_session_id: agent,
                        });
                        self.try_start(&session);
                    }
                    Err(error) => {
                        warn!(session_id = %session, %error, "could not create the agent session");
                        self.sessions.remove(&session);
                        self.send(Request::SessionFailed {
                            session_id: session,
                            error,
                        });
                    }
                }
            }
            Done::Prompted { message, result } => {
                if let Err(error) = result {
                    warn!(message_id = %message, %error, "prompt failed");
                    if let Some((_, turn)) = self.turns.get_mut(&message) {
                        turn.error = Some(error.clone());
                    }
                    self.push_chunk(&message, ChunkBody::Error { message: error });
                    self.finish(&message);
                }
            }
            Done::Answered { prompt, result } => match result {
                Ok(()) => self.send(Request::PromptDelivered { prompt_id: prompt }),
                Err(error) => {
                    // Answered already (a repeat after a reconnect) or gone:
                    // either way there is nothing left to deliver.
                    warn!(prompt_id = %prompt, %error, "answer not taken by opencode");
                    self.send(Request::PromptDelivered { prompt_id: prompt });
                }
            },
            Done::AbortSettled { message } => {
                if self.settling.contains_key(&message) {
                    self.finish(&message);
                }
            }
            Done::Reconciled {
                message,
                messages,
                permissions,
                questions,
                busy,
                subagents,
                subagent_messages,
            } => {
                let Some((_, turn)) = self.turns.get_mut(&message) else { return };
                let mut chunks = turn.reconcile_subagents(&subagents, &subagent_messages);
                chunks.extend(turn.reconcile_messages(&messages));
                chunks.extend(turn.reconcile_prompts(&permissions, &questions));
                let finished = !busy && turn.started;
                for c in chunks {
                    self.push_chunk(&message, c);
                }
                if finished {
                    self.finish(&message);
                }
            }
        }
    }

    pub(super) fn on_event(&mut self, event: &Value) {
        if let Some((agent_session, title)) = title::from_event(event) {
            self.on_title(agent_session, title);
        }
        // The turn whose session this is, or one of whose subagents' (a
        // child session, or a new child of one of its sessions).
        let Some(message) = self
            .turns
            .iter()
            .find(|(_, (_, t))| t.claims(event))
            .map(|(m, _)| m.clone())
        else {
            return;
        };
        let Some((_, turn)) = self.turns.get_mut(&message) else { return };
        let fx = turn.on_event(event);
        let aborted = turn.aborted;
        for c in fx.chunks {
            self.push_chunk(&message, c);
        }
        let update = matches!(
            event["type"].as_str(),
            Some("message.updated" | "message.part.updated")
        );
        let settled = match self.settling.get_mut(&message) {
            Some(updated) => {
                *updated |= update;
                fx.idle && *updated
            }
            None => false,
        };
        if settled {
            self.finish(&message);
        } else if fx.idle && !self.settling.contains_key(&message) {
            if aborted {
                self.settling.insert(message.clone(), false);
                // opencode sends the interrupted part's final state (the
                // text it had, the tool's end) after this first idle, then
                // idles again: take that too, within a bound.
                let settled = message.clone();
                self.spawn(async move {
                    tokio::time::sleep(ABORT_SETTLE).await;
                    Done::AbortSettled { message: settled }
                });
            } else {
                self.finish(&message);
            }
        }
        self.flush(false);
    }

    pub(super) fn push_chunk(&mut self, message: &MessageId, body: ChunkBody) {
        if let Some(ob) = self.outboxes.get_mut(message) {
            ob.push(body, now());
        }
    }

    /// The turn is over: decide its outcome and start the session's next message.
    pub(super) fn finish(&mut self, message: &MessageId) {
        self.settling.remove(message);
        let Some((session, mut turn)) = self.turns.remove(message) else { return };
        let outcome = if turn.aborted {
            Outcome::Aborted
        } else if turn.error.is_some() {
            Outcome::Failed
        } else {
            Outcome::Complete
        };
        let why = match outcome {
            Outcome::Aborted => "aborted",
            Outcome::Failed => "the answer failed",
            Outcome::Complete => "the answer ended first",
        };
        let mut closing = turn.close_open_tools(why);
        let subagents = match outcome {
            Outcome::Aborted => SubagentStatus::Aborted,
            Outcome::Failed => SubagentStatus::Error,
            Outcome::Complete => SubagentStatus::Completed,
        };
        closing.extend(turn.close_subagents(subagents, why));
        for c in closing {
            self.push_chunk(message, c);
        }
        // The host has the chunks: the completion carries no text.
        if let Some(ob) = self.outboxes.get_mut(message) {
            ob.complete(Completion {
                outcome,
                error: turn.error.clone(),
            });
        }
        info!(message_id = %message, ?outcome, "answer finished");
        let ended = match self.sessions.get_mut(&session) {
            Some(state) => {
                state.active = None;
                state.earlier_messages.extend(turn.seen_messages());
                state.ended
            }
            None => false,
        };
        if ended {
            self.sessions.remove(&session);
        } else {
            self.try_start(&session);
        }
        self.flush(true);
    }
}
