//! The worker's core: one task that owns all state and reacts to inputs
//! (frames from the host, opencode's events, results of opencode calls, a
//! deadline of its outboxes). Keeping it in one place makes every ordering
//! question a question about one loop, and leaves slow work (HTTP calls to
//! opencode) to spawned tasks that report back as inputs.
//!
//! It reaches the outside through two seams: the frames it sends go to an
//! outbound channel (which [`crate::run`] drains onto the relay), and what it
//! asks of opencode goes through the [`Opencode`] trait. Its tests drive it
//! with recorded opencode event streams and read the frames it sends.
//!
//! - `host`: the host's frames, the hello, the agent's state and titles.
//! - `turns`: sessions and their queued messages, one running turn each,
//!   opencode's events and results, how a turn ends.
//! - `reconcile`: reading back what a dropped event stream missed.

mod host;
mod reconcile;
#[cfg(test)]
mod tests;
mod turns;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use tether_domain::ids::{MessageId, PromptId, RequestId, SessionId};
use tether_domain::model::{AgentState, WorkerStatus};
use tether_domain::protocol::{AgentReport, ChunkBody, ClientFrame, Request};
use tokio::sync::mpsc;
use tracing::info;

use crate::opencode::{Models, Opencode, OpencodeClient, Turn};
use crate::outbox::Outbox;
use crate::relay::RelayEvent;
use turns::SessionState;

/// What the worker says of itself in its hello.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub machine: String,
    pub name: String,
    pub workdir: String,
    pub version: String,
}

/// Everything the agent loop reacts to (`O`: its opencode).
#[derive(Debug)]
pub enum Input<O = OpencodeClient> {
    Relay(RelayEvent),
    /// opencode is being installed (it was nowhere to be found).
    OpencodeInstalling,
    /// opencode is being started.
    OpencodeStarting,
    /// opencode is (again) running.
    OpencodeUp(O, Models),
    /// opencode is not running, for the reason given (for people, without
    /// the word opencode: "exited with status 1; restarting it"); the
    /// worker tries again.
    OpencodeDown(String),
    /// opencode's event stream (re)connected.
    EventsUp,
    Event(Value),
    Done(Done),
    /// An outbox's deadline came.
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

/// The frame intervals a host may ask for: no faster than this (a busy
/// answer would be a frame per token) …
const MIN_FRAME_INTERVAL_MS: u64 = 10;
/// … and no slower than this (the stream would stutter).
const MAX_FRAME_INTERVAL_MS: u64 = 1_000;

pub struct Agent<O = OpencodeClient> {
    /// Where its frames go (to the host, once connected).
    outbound: mpsc::UnboundedSender<ClientFrame>,
    inputs: mpsc::UnboundedSender<Input<O>>,
    profile: Profile,
    models: Models,
    /// What the worker last said of its agent (the host keeps the newest).
    agent: AgentReport,
    client: Option<O>,
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

impl<O: Opencode> Agent<O> {
    /// `outbound`: where the frames for the host go; `inputs`: the loop's
    /// own inputs (results of the work it spawns come back there); `first`:
    /// the agent's state before the supervisor reports (`installing` when
    /// opencode was nowhere, else `starting`).
    pub fn new(
        outbound: mpsc::UnboundedSender<ClientFrame>,
        inputs: mpsc::UnboundedSender<Input<O>>,
        profile: Profile,
        first: AgentState,
    ) -> Self {
        Self {
            outbound,
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
    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input<O>>) -> Exit {
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
        self.emit(frame);
    }

    /// A frame for the host (dropped if the run loop is gone: so is the
    /// worker).
    fn emit(&self, frame: ClientFrame) {
        let _ = self.outbound.send(frame);
    }

    fn spawn(&self, work: impl std::future::Future<Output = Done> + Send + 'static) {
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let done = work.await;
            let _ = inputs.send(Input::Done(done));
        });
    }

    /// One input. Returns `Some` when the worker must stop.
    pub fn handle(&mut self, input: Input<O>) -> Option<Exit> {
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
            self.emit(f);
        }
        self.outboxes.retain(|_, ob| !ob.is_done());
    }
}
