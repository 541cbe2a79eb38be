//! The worker's core: one task that owns all state and reacts to inputs
//! (frames from the host, opencode's events, results of opencode calls, a
//! clock tick). Keeping it in one place makes every ordering question a
//! question about one loop, and leaves slow work (HTTP calls to opencode) to
//! spawned tasks that report back as inputs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use tether_domain::ids::{MessageId, PromptId, RequestId, SessionId};
use tether_domain::model::{AgentState, WorkerStatus};
use tether_domain::protocol::{
    AgentReport, ChunkBody, ClientFrame, ModelRef, Outcome, PromptAnswer, Request, ServerFrame,
    SubagentStatus, MAX_AGENT_REASON_BYTES,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::opencode::{explain, title, Models, OpencodeClient, Turn};
use crate::outbox::{AfterError, Completion, Outbox};
use crate::relay::{Relay, RelayEvent};

/// What the worker says of itself in its hello.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub machine: String,
    pub name: String,
    pub workdir: String,
    pub version: String,
}

/// Everything the agent loop reacts to.
#[derive(Debug)]
pub enum Input {
    Relay(RelayEvent),
    /// opencode is being installed (it was nowhere to be found).
    OpencodeInstalling,
    /// opencode is being started.
    OpencodeStarting,
    /// opencode is (again) running.
    OpencodeUp(OpencodeClient, Models),
    /// opencode is not running, for the reason given (for people, without
    /// the word opencode: "exited with status 1; restarting it"); the
    /// worker tries again.
    OpencodeDown(String),
    /// opencode's event stream (re)connected.
    EventsUp,
    Event(Value),
    Done(Done),
    Tick,
}

/// Results of opencode calls made on the loop's behalf.
#[derive(Debug)]
pub enum Done {
    SessionCreated { session: SessionId, result: Result<String, String> },
    Prompted { message: MessageId, result: Result<(), String> },
    Answered { prompt: PromptId, result: Result<(), String> },
    Reconciled {
        message: MessageId,
        messages: Vec<Value>,
        permissions: Vec<Value>,
        questions: Vec<Value>,
        busy: bool,
        /// The turn's subagent sessions (parents first) and their messages.
        subagents: Vec<Value>,
        subagent_messages: Vec<(String, Vec<Value>)>,
    },
    /// An aborted turn waited long enough for opencode's last word on it.
    AbortSettled { message: MessageId },
}

/// How long an aborted turn waits, after opencode's first idle, for the
/// rest of what opencode says about it (the interrupted part's final state,
/// then a second idle; see the worker's opencode fixtures README).
const ABORT_SETTLE: Duration = Duration::from_secs(2);

/// At most this many subagent sessions are read back per turn after
/// opencode's event stream came back.
const MAX_SUBAGENTS: usize = 64;

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The owner rejected or revoked this worker.
    NotApproved(WorkerStatus),
    /// The host refused the credential.
    Refused(u16, String),
    /// Every input source closed.
    Closed,
}

struct Job {
    message: MessageId,
    text: String,
    model: ModelRef,
}

#[derive(Default)]
struct SessionState {
    agent_id: Option<String>,
    creating: bool,
    queue: VecDeque<Job>,
    active: Option<MessageId>,
    ended: bool,
    /// The opencode messages of the turns so far, whose late events the
    /// next turn must not take for its own.
    earlier_messages: HashSet<String>,
    /// The session's title as last known: the user's (from `session_start`)
    /// or the agent's.
    title: Option<String>,
    /// The host has been told `title` (or it is the user's own).
    title_told: bool,
}

/// The frame intervals a host may ask for: no faster than this (a busy
/// answer would be a frame per token) …
const MIN_FRAME_INTERVAL_MS: u64 = 10;
/// … and no slower than this (the stream would stutter).
const MAX_FRAME_INTERVAL_MS: u64 = 1_000;

pub struct Agent {
    relay: Relay,
    inputs: mpsc::UnboundedSender<Input>,
    profile: Profile,
    models: Models,
    /// What the worker last said of its agent (the host keeps the newest).
    agent: AgentReport,
    client: Option<OpencodeClient>,
    connected: bool,
    sessions: HashMap<SessionId, SessionState>,
    turns: HashMap<MessageId, (SessionId, Turn)>,
    /// Aborted turns past their first idle, waiting for opencode's last
    /// word: whether a message or part update came since.
    settling: HashMap<MessageId, bool>,
    outboxes: HashMap<MessageId, Outbox>,
    /// The host's frame interval (its hello reply's `frame_interval_ms`).
    frame_interval: Duration,
    taken: HashSet<MessageId>,
    next_id: u64,
    /// Chunk frames sent over the worker's life (for figures and tests).
    pub frames_sent: u64,
}

/// Resolves at `deadline`; never without one.
async fn wake_at(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The loop's clock: tokio's, so that tests with paused time drive it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Agent {
    /// `first`: the agent's state before the supervisor reports
    /// (`installing` when opencode was nowhere, else `starting`).
    pub fn new(relay: Relay, inputs: mpsc::UnboundedSender<Input>, profile: Profile, first: AgentState) -> Self {
        Self {
            relay,
            inputs,
            profile,
            models: Models::default(),
            agent: AgentReport {
                state: first,
                reason: None,
                at: now_ms(),
            },
            client: None,
            connected: false,
            sessions: HashMap::new(),
            turns: HashMap::new(),
            settling: HashMap::new(),
            outboxes: HashMap::new(),
            frame_interval: crate::outbox::MIN_INTERVAL,
            taken: HashSet::new(),
            next_id: 0,
            frames_sent: 0,
        }
    }

    /// Runs until the worker must stop. Between inputs it sleeps until the
    /// outboxes' earliest deadline (a held delta, a retry), looked up again
    /// after every input: an idle worker does not wake, and a delta goes out
    /// when its deadline comes, not at the next tick of a clock.
    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) -> Exit {
        loop {
            let deadline = self.next_deadline();
            let input = tokio::select! {
                input = inputs.recv() => match input {
                    Some(i) => i,
                    None => return Exit::Closed,
                },
                () = wake_at(deadline) => Input::Tick,
            };
            if let Some(exit) = self.handle(input) {
                return exit;
            }
        }
    }

    /// When the outboxes next need a look (none while disconnected: the
    /// connection's return sends everything).
    fn next_deadline(&self) -> Option<Instant> {
        if !self.connected {
            return None;
        }
        self.outboxes.values().filter_map(Outbox::next_deadline).min()
    }

    fn request_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId::parse(format!("w{}", self.next_id)).expect("generated ids are valid")
    }

    fn send(&mut self, request: Request) {
        if !self.connected {
            return;
        }
        let frame = ClientFrame {
            id: self.request_id(),
            request,
        };
        self.relay.send(frame.to_json());
    }

    fn spawn(&self, work: impl std::future::Future<Output = Done> + Send + 'static) {
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let done = work.await;
            let _ = inputs.send(Input::Done(done));
        });
    }

    /// One input. Returns `Some` when the worker must stop.
    pub fn handle(&mut self, input: Input) -> Option<Exit> {
        match input {
            Input::Relay(RelayEvent::Connected) => {
                self.connected = true;
                self.hello();
                self.tell_titles();
                self.flush(true);
            }
            Input::Relay(RelayEvent::Disconnected) => {
                self.connected = false;
                for ob in self.outboxes.values_mut() {
                    ob.on_disconnect();
                }
            }
            Input::Relay(RelayEvent::Refused { status, body }) => return Some(Exit::Refused(status, body)),
            Input::Relay(RelayEvent::Frame(frame)) => return self.on_frame(*frame),
            Input::OpencodeInstalling => self.report_agent(AgentState::Installing, None),
            Input::OpencodeStarting => self.report_agent(AgentState::Starting, None),
            Input::OpencodeUp(client, models) => {
                info!(models = models.models.len(), "opencode is ready");
                self.client = Some(client);
                self.models = models;
                // The hello says it, with the models: one frame.
                self.agent = self.next_report(AgentState::Ready, None);
                if self.connected {
                    self.hello();
                }
                // Sessions waiting for opencode can go on.
                let waiting: Vec<SessionId> = self.sessions.keys().cloned().collect();
                for s in waiting {
                    self.try_start(&s);
                }
            }
            Input::OpencodeDown(reason) => {
                self.client = None;
                self.report_agent(AgentState::Down, Some(reason));
                let active: Vec<MessageId> = self.turns.keys().cloned().collect();
                for m in active {
                    if let Some((_, turn)) = self.turns.get_mut(&m) {
                        turn.error = Some("opencode stopped while answering; it is being restarted".into());
                    }
                    self.push_chunk(&m, ChunkBody::Error {
                        message: "opencode stopped while answering; it is being restarted".into(),
                    });
                    self.finish(&m);
                }
            }
            Input::EventsUp => self.reconcile_all(),
            Input::Event(event) => self.on_event(&event),
            Input::Done(done) => self.on_done(done),
            Input::Tick => self.flush(false),
        }
        None
    }

    fn hello(&mut self) {
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
    fn next_report(&self, state: AgentState, reason: Option<String>) -> AgentReport {
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
    fn report_agent(&mut self, state: AgentState, reason: Option<String>) {
        self.agent = self.next_report(state, reason);
        info!(state = state.as_str(), reason = self.agent.reason.as_deref().unwrap_or(""), "agent state");
        self.send(Request::AgentState {
            state,
            reason: self.agent.reason.clone(),
            at: self.agent.at,
        });
    }

    /// Tells the host the titles it has not heard (once connected).
    fn tell_titles(&mut self) {
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
    fn on_title(&mut self, agent_session: &str, title: String) {
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

    fn on_frame(&mut self, frame: ServerFrame) -> Option<Exit> {
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

    fn session_start(&mut self, session: SessionId, title: String) {
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

    /// Starts the next queued message of a session if nothing runs there.
    fn try_start(&mut self, session: &SessionId) {
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

    fn abort(&mut self, session: &SessionId, message: &MessageId) {
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
    fn end_unstarted(&mut self, message: &MessageId, outcome: Outcome, why: &str) {
        let mut ob = Outbox::new(message.clone());
        ob.complete(Completion {
            outcome,
            error: Some(why.to_owned()),
        });
        self.outboxes.insert(message.clone(), ob);
        self.flush(true);
    }

    fn on_done(&mut self, done: Done) {
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

    fn on_event(&mut self, event: &Value) {
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

    fn push_chunk(&mut self, message: &MessageId, body: ChunkBody) {
        if let Some(ob) = self.outboxes.get_mut(message) {
            ob.push(body, now());
        }
    }

    /// The turn is over: decide its outcome and start the session's next message.
    fn finish(&mut self, message: &MessageId) {
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

    /// After opencode's event stream came back: read what was missed.
    fn reconcile_all(&mut self) {
        let Some(client) = self.client.clone() else { return };
        for (message, (_, turn)) in &self.turns {
            let (client, message, agent) = (client.clone(), message.clone(), turn.session().to_owned());
            let (known, since) = (turn.subagents(), turn.started_at());
            self.spawn(async move {
                let (subagents, subagent_messages) = read_subagents(&client, &agent, known, since).await;
                let messages = client.messages(&agent).await.unwrap_or_default();
                let permissions = client.permissions().await.unwrap_or_default();
                let questions = client.questions().await.unwrap_or_default();
                let busy = client
                    .busy_sessions()
                    .await
                    .map(|b| b.contains(&agent))
                    .unwrap_or(true);
                Done::Reconciled {
                    message,
                    messages,
                    permissions,
                    questions,
                    busy,
                    subagents,
                    subagent_messages,
                }
            });
        }
    }

    /// Sends what the outboxes have ready; drops the finished ones.
    fn flush(&mut self, _force: bool) {
        if !self.connected {
            return;
        }
        let at = now();
        let mut frames = Vec::new();
        let mut next = self.next_id;
        for ob in self.outboxes.values_mut() {
            let before = ob.frames_sent();
            frames.extend(ob.frames(at, || {
                next += 1;
                RequestId::parse(format!("w{next}")).expect("generated ids are valid")
            }));
            self.frames_sent += ob.frames_sent() - before;
        }
        self.next_id = next;
        for f in frames {
            self.relay.send(f.to_json());
        }
        self.outboxes.retain(|_, ob| !ob.is_done());
    }
}

/// Reads a turn's subagents back from opencode: the child sessions under
/// `root`, breadth first (parents before children), those the turn knew
/// (`known`) or that started with it (not before `since`; older ones are
/// earlier turns'), with their messages. At most [`MAX_SUBAGENTS`].
async fn read_subagents(
    client: &OpencodeClient,
    root: &str,
    known: Vec<String>,
    since: i64,
) -> (Vec<Value>, Vec<(String, Vec<Value>)>) {
    let known: HashSet<String> = known.into_iter().collect();
    let mut queue = VecDeque::from([root.to_owned()]);
    let mut seen: HashSet<String> = HashSet::from([root.to_owned()]);
    let mut sessions = Vec::new();
    while let Some(parent) = queue.pop_front() {
        for child in client.children(&parent).await.unwrap_or_default() {
            let Some(id) = child["id"].as_str().map(str::to_owned) else { continue };
            let recent = child["time"]["created"].as_i64().is_some_and(|t| t >= since);
            if sessions.len() >= MAX_SUBAGENTS || !(recent || known.contains(&id)) || !seen.insert(id.clone()) {
                continue;
            }
            queue.push_back(id);
            sessions.push(child);
        }
    }
    let mut messages = Vec::new();
    for info in &sessions {
        if let Some(id) = info["id"].as_str() {
            messages.push((id.to_owned(), client.messages(id).await.unwrap_or_default()));
        }
    }
    (sessions, messages)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A stand-in for opencode's HTTP API: answers GETs of the paths it
    /// knows with their JSON (`[]` for others), and counts the requests.
    async fn fake_opencode(routes: HashMap<String, Value>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (routes, log) = (routes.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    log.lock().expect("log").push(path.clone());
                    let body = routes.get(&path).cloned().unwrap_or_else(|| json!([])).to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn session(id: &str, parent: &str, created: i64) -> Value {
        json!({ "id": id, "parentID": parent, "title": format!("{id} (@general subagent)"), "time": { "created": created } })
    }

    /// After the event stream dropped, the worker reads the turn's session
    /// tree: children of children, parents first, with their messages;
    /// not an earlier turn's children (older than the turn) unless the turn
    /// knew them, and nothing below those.
    #[tokio::test]
    async fn the_session_tree_is_read_back_breadth_first() {
        let routes = HashMap::from([
            (
                "/session/root/children".to_owned(),
                json!([session("old", "root", 10), session("a", "root", 2000), session("resumed", "root", 20)]),
            ),
            ("/session/a/children".to_owned(), json!([session("a1", "a", 2100)])),
            ("/session/old/children".to_owned(), json!([session("old1", "old", 30)])),
            ("/session/a1/message".to_owned(), json!([{ "info": { "role": "assistant" }, "parts": [] }])),
        ]);
        let (base, seen) = fake_opencode(routes).await;
        // As `run` does at start (reqwest's TLS needs a provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = OpencodeClient::new(&base, "pw").expect("client");
        let (sessions, messages) = read_subagents(&client, "root", vec!["resumed".into()], 1000).await;
        let ids: Vec<&str> = sessions.iter().filter_map(|s| s["id"].as_str()).collect();
        assert_eq!(ids, ["a", "resumed", "a1"]);
        let read: Vec<(&str, usize)> = messages.iter().map(|(id, m)| (id.as_str(), m.len())).collect();
        assert_eq!(read, [("a", 0), ("resumed", 0), ("a1", 1)]);
        let asked = seen.lock().expect("log").clone();
        assert!(!asked.iter().any(|p| p.starts_with("/session/old")), "nothing of the earlier turn's: {asked:?}");
    }
}
