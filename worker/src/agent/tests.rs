//! The agent loop on recordings of real opencode 1.18 streams
//! (`worker/tests/fixtures/opencode/`, see its README). A fake opencode
//! replays a recording once prompted, stopping where the recorded user acted
//! (answered a permission or a question, aborted) until the loop asks the
//! same of it; the tests play the host: they read the frames the loop sends
//! and acknowledge them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tether_domain::ids::{MessageId, PromptId, RequestId, SessionId};
use tether_domain::model::AgentState;
use tether_domain::protocol::{
    ChunkBody, ChunkIn, ClientFrame, ModelRef, Outcome, PermissionReply, PromptAnswer, Request, ServerFrame,
};
use tokio::sync::mpsc;

use super::{now, Agent, Input, Profile};
use crate::opencode::{Models, Opencode};
use crate::relay::RelayEvent;

/// The host's frame interval in these tests (the local host's).
const FRAME_INTERVAL: Duration = Duration::from_millis(25);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencode").join(name)
}

/// A recording's events and the messages opencode stored for it, moved to
/// the present: the loop takes messages older than its turn for an earlier
/// turn's.
fn recording(name: &str) -> (Vec<Value>, Vec<Value>) {
    let text = std::fs::read_to_string(fixture(&format!("{name}.sse"))).expect("fixture");
    let mut events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    let mut messages = stored_messages(name);
    let start = events
        .iter()
        .find_map(|e| e["properties"]["info"]["time"]["created"].as_i64())
        .expect("a created time");
    let shift = super::now_ms() + 1_000 - start;
    for v in events.iter_mut().chain(&mut messages) {
        shift_times(v, shift);
    }
    (events, messages)
}

/// What `GET /session/{id}/message` gave after the recorded turn.
fn stored_messages(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(&format!("{name}.messages.json"))).expect("fixture");
    serde_json::from_str(&text).expect("messages JSON")
}

/// Adds `shift` to every time in `v` (the numbers in its `time` objects).
fn shift_times(v: &mut Value, shift: i64) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), value) {
                    ("time", Value::Object(times)) => {
                        for t in times.values_mut() {
                            if let Some(n) = t.as_i64() {
                                *t = json!(n + shift);
                            }
                        }
                    }
                    (_, value) => shift_times(value, shift),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| shift_times(i, shift)),
        _ => {}
    }
}

/// The text opencode stored for the recorded turn's assistant messages.
fn stored_text(name: &str) -> String {
    let mut out = Vec::new();
    for m in stored_messages(name).iter().filter(|m| m["info"]["role"] == "assistant") {
        for p in m["parts"].as_array().into_iter().flatten().filter(|p| p["type"] == "text") {
            out.push(p["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    out.join("\n\n")
}

/// Where the recorded user acted: the event that follows from it is held
/// back until the loop does the same.
fn gate(event: &Value) -> Option<&'static str> {
    match event["type"].as_str()? {
        "permission.replied" => Some("reply_permission"),
        "question.replied" => Some("reply_question"),
        "question.rejected" => Some("reject_question"),
        "session.error" if event["properties"]["error"]["name"] == "MessageAbortedError" => Some("abort"),
        _ => None,
    }
}

/// opencode replaying one recording.
#[derive(Clone)]
struct FakeOpencode(Arc<Mutex<Replay>>);

struct Replay {
    session: String,
    events: VecDeque<Value>,
    /// What opencode stored (its messages API's answer).
    messages: Vec<Value>,
    /// Where the events go: the loop's inputs.
    inputs: mpsc::UnboundedSender<Input<FakeOpencode>>,
    /// What the loop asked, in order ("prompt", "abort ses_…", …).
    calls: Vec<String>,
}

impl FakeOpencode {
    fn new(name: &str, inputs: mpsc::UnboundedSender<Input<FakeOpencode>>) -> Self {
        let (events, messages) = recording(name);
        let session = events
            .iter()
            .find(|e| e["type"] == "session.created")
            .and_then(|e| e["properties"]["sessionID"].as_str())
            .expect("a session")
            .to_owned();
        Self(Arc::new(Mutex::new(Replay {
            session,
            events: events.into(),
            messages,
            inputs,
            calls: Vec::new(),
        })))
    }

    fn session(&self) -> String {
        self.0.lock().expect("replay").session.clone()
    }

    /// The event stream drops after `kept` more events: the rest are lost.
    fn drop_stream_after(&self, kept: usize) {
        self.0.lock().expect("replay").events.truncate(kept);
    }

    fn calls(&self) -> Vec<String> {
        self.0.lock().expect("replay").calls.clone()
    }

    /// Records the call `call` and, if the next held-back event follows
    /// from it (or `call` is the prompt), replays up to the next gate.
    fn called(&self, call: String) {
        let mut replay = self.0.lock().expect("replay");
        let kind = call.split_whitespace().next().unwrap_or_default().to_owned();
        replay.calls.push(call);
        let opens = kind == "prompt" || replay.events.front().and_then(gate) == Some(kind.as_str());
        if !opens {
            return;
        }
        let mut first = true;
        while let Some(event) = replay.events.front() {
            if !first && gate(event).is_some() {
                break;
            }
            first = false;
            let event = replay.events.pop_front().expect("an event");
            let _ = replay.inputs.send(Input::Event(event));
        }
    }
}

impl Opencode for FakeOpencode {
    async fn create_session(&self, _title: &str) -> anyhow::Result<String> {
        Ok(self.session())
    }

    async fn session_exists(&self, id: &str) -> anyhow::Result<bool> {
        Ok(id == self.session())
    }

    async fn prompt(&self, session: &str, _model: &ModelRef, _text: &str) -> anyhow::Result<()> {
        self.called(format!("prompt {session}"));
        Ok(())
    }

    async fn abort(&self, session: &str) -> anyhow::Result<()> {
        self.called(format!("abort {session}"));
        Ok(())
    }

    async fn reply_permission(&self, id: &str, reply: PermissionReply) -> anyhow::Result<()> {
        self.called(format!("reply_permission {id} {reply:?}"));
        Ok(())
    }

    async fn reply_question(&self, id: &str, answers: &[Vec<String>]) -> anyhow::Result<()> {
        self.called(format!("reply_question {id} {answers:?}"));
        Ok(())
    }

    async fn reject_question(&self, id: &str) -> anyhow::Result<()> {
        self.called(format!("reject_question {id}"));
        Ok(())
    }

    async fn messages(&self, session: &str) -> anyhow::Result<Vec<Value>> {
        let replay = self.0.lock().expect("replay");
        Ok(if session == replay.session { replay.messages.clone() } else { Vec::new() })
    }

    async fn children(&self, _session: &str) -> anyhow::Result<Vec<Value>> {
        Ok(Vec::new())
    }

    async fn permissions(&self) -> anyhow::Result<Vec<Value>> {
        Ok(Vec::new())
    }

    async fn questions(&self) -> anyhow::Result<Vec<Value>> {
        Ok(Vec::new())
    }

    async fn busy_sessions(&self) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// The host's side: a running loop with the fake opencode up, connected,
/// its hello answered.
struct Host {
    inputs: mpsc::UnboundedSender<Input<FakeOpencode>>,
    frames: mpsc::UnboundedReceiver<ClientFrame>,
    opencode: FakeOpencode,
    session: SessionId,
    /// The message the host sends (one per test).
    message: MessageId,
}

/// What the host heard of one answer.
#[derive(Debug, Default)]
struct Answer {
    chunks: Vec<ChunkIn>,
    /// Chunk frames.
    frames: usize,
    /// How it ended: its outcome, chunk count and error.
    completion: Option<(Outcome, u32, Option<String>)>,
    /// The user's answers to its prompts that reached opencode.
    delivered: Vec<PromptId>,
}

impl Answer {
    fn text(&self) -> String {
        self.chunks
            .iter()
            .filter_map(|c| match &c.body {
                ChunkBody::Text { delta, .. } => Some(delta.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl Host {
    async fn start(recording: &str) -> Self {
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let (outbound, frames) = mpsc::unbounded_channel();
        let opencode = FakeOpencode::new(recording, inputs.clone());
        let agent = Agent::new(outbound, inputs.clone(), Profile::default(), AgentState::Starting);
        tokio::spawn(agent.run(inputs_rx));
        let mut host = Self {
            inputs,
            frames,
            opencode: opencode.clone(),
            session: SessionId::parse("s1").expect("id"),
            message: MessageId::parse("m1").expect("id"),
        };
        host.input(Input::OpencodeUp(opencode, Models::default()));
        host.input(Input::Relay(RelayEvent::Connected));
        let hello = host.next().await;
        assert!(matches!(hello.request, Request::WorkerHello { .. }), "{hello:?}");
        let interval = FRAME_INTERVAL.as_millis() as u64;
        host.tell(ServerFrame::ok(hello.id, json!({ "frame_interval_ms": interval })));
        host
    }

    fn input(&self, input: Input<FakeOpencode>) {
        self.inputs.send(input).expect("the loop runs");
    }

    fn tell(&self, frame: ServerFrame) {
        self.input(Input::Relay(RelayEvent::Frame(Box::new(frame))));
    }

    fn ack(&self, id: RequestId) {
        self.tell(ServerFrame::Reply {
            id: Some(id),
            ok: true,
            data: None,
            error: None,
        });
    }

    async fn next(&mut self) -> ClientFrame {
        tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
            .await
            .expect("a frame within 10 s")
            .expect("the loop runs")
    }

    /// The next frame that is not `skipped` (titles, the agent's state).
    async fn next_but(&mut self, skipped: fn(&Request) -> bool) -> ClientFrame {
        loop {
            let frame = self.next().await;
            if !skipped(&frame.request) {
                return frame;
            }
        }
    }

    /// Starts the session and sends it the message, as the host does;
    /// returns once the loop says the message started.
    async fn dispatch(&mut self) {
        let model = ModelRef {
            provider_id: "fake".into(),
            model_id: "m".into(),
        };
        self.tell(ServerFrame::SessionStart {
            session_id: self.session.clone(),
            model: model.clone(),
            title: "A test".into(),
        });
        let ready = self.next().await;
        let Request::SessionReady { session_id, agent_session_id } = ready.request else {
            panic!("session_ready first: {ready:?}");
        };
        assert_eq!((session_id, agent_session_id), (self.session.clone(), self.opencode.session()));
        self.tell(ServerFrame::MessageDispatch {
            session_id: self.session.clone(),
            agent_session_id: Some(self.opencode.session()),
            message_id: self.message.clone(),
            number: 1,
            text: "hi".into(),
            model,
        });
        let started = self.next().await;
        assert_eq!(started.request, Request::MessageStarted { message_id: self.message.clone() });
    }

    /// The user's answer to one of the message's prompts.
    fn answer_prompt(&self, prompt_id: PromptId, answer: PromptAnswer) {
        self.tell(ServerFrame::PromptAnswer {
            prompt_id,
            session_id: self.session.clone(),
            message_id: self.message.clone(),
            answer,
        });
    }

    /// Reads the answer's frames, acknowledging each, until its completion
    /// or until a frame with a chunk `until` picks (then returns that
    /// chunk's body).
    async fn read(&mut self, answer: &mut Answer, until: impl Fn(&ChunkBody) -> bool) -> Option<ChunkBody> {
        while answer.completion.is_none() {
            let frame = self.next_but(|r| matches!(r, Request::SessionTitle { .. })).await;
            match frame.request {
                Request::PromptDelivered { prompt_id } => answer.delivered.push(prompt_id),
                Request::Chunks { chunks, .. } => {
                    self.ack(frame.id);
                    answer.frames += 1;
                    let mut picked = None;
                    for c in chunks {
                        assert_eq!(c.seq as usize, answer.chunks.len(), "chunks in order, none twice");
                        if picked.is_none() && until(&c.body) {
                            picked = Some(c.body.clone());
                        }
                        answer.chunks.push(c);
                    }
                    if picked.is_some() {
                        return picked;
                    }
                }
                Request::MessageComplete {
                    outcome,
                    chunk_count,
                    error,
                    ..
                } => {
                    self.ack(frame.id);
                    answer.completion = Some((outcome, chunk_count, error));
                }
                other => panic!("an answer's frame: {other:?}"),
            }
        }
        None
    }

    /// The whole answer, from here to its completion.
    async fn answer(&mut self, answer: &mut Answer) {
        self.read(answer, |_| false).await;
    }
}

/// A recorded answer reaches the host as numbered chunks, in order, each
/// once, and the text the user reads is the text opencode stored; then the
/// completion counts them.
#[tokio::test]
async fn an_answer_reaches_the_host_in_order_then_completes() {
    let mut host = Host::start("text_tokens").await;
    host.dispatch().await;
    let mut answer = Answer::default();
    host.answer(&mut answer).await;
    let expected = stored_text("text_tokens");
    assert!(!expected.is_empty());
    assert_eq!(answer.text(), expected);
    let (outcome, count, error) = answer.completion.clone().expect("completed");
    assert_eq!((outcome, count as usize, error), (Outcome::Complete, answer.chunks.len(), None));
    assert!(answer.frames < answer.chunks.len(), "deltas coalesce: {} frames, {} chunks", answer.frames, answer.chunks.len());
    assert_eq!(host.opencode.calls(), [format!("prompt {}", host.opencode.session())]);
}

/// The user stops an answer mid-text: opencode is asked to abort its
/// session, what it said until then stays, and the answer ends aborted.
#[tokio::test]
async fn an_abort_stops_opencode_and_the_answer_ends_aborted() {
    let mut host = Host::start("abort_hang").await;
    host.dispatch().await;
    let mut answer = Answer::default();
    let text = host.read(&mut answer, |c| matches!(c, ChunkBody::Text { .. })).await;
    assert!(text.is_some(), "some text first");
    host.tell(ServerFrame::MessageAbort {
        session_id: host.session.clone(),
        message_id: host.message.clone(),
    });
    host.answer(&mut answer).await;
    let (outcome, _, _) = answer.completion.clone().expect("completed");
    assert_eq!(outcome, Outcome::Aborted);
    assert_eq!(answer.text(), "Working on it");
    let session = host.opencode.session();
    assert_eq!(host.opencode.calls(), [format!("prompt {session}"), format!("abort {session}")]);
}

/// A permission opencode asks for reaches the host as a prompt; the user's
/// answer goes to opencode, its delivery is told, and the answer goes on.
#[tokio::test]
async fn a_permission_is_asked_answered_and_the_answer_goes_on() {
    let mut host = Host::start("bash_approved").await;
    host.dispatch().await;
    let mut answer = Answer::default();
    let asked = host
        .read(&mut answer, |c| matches!(c, ChunkBody::PermissionRequest { .. }))
        .await;
    let Some(ChunkBody::PermissionRequest { prompt_id, permission, .. }) = asked else {
        panic!("a permission request: {answer:?}");
    };
    assert_eq!(permission, "bash");
    host.answer_prompt(prompt_id.clone(), PromptAnswer::Permission { reply: PermissionReply::Once });
    host.answer(&mut answer).await;
    assert_eq!(answer.completion.as_ref().map(|c| c.0), Some(Outcome::Complete));
    // Told once opencode took it: before or after the answer's end.
    if answer.delivered.is_empty() {
        let delivered = host.next_but(|r| matches!(r, Request::SessionTitle { .. })).await;
        assert_eq!(delivered.request, Request::PromptDelivered { prompt_id: prompt_id.clone() });
    } else {
        assert_eq!(answer.delivered, std::slice::from_ref(&prompt_id));
    }
    assert!(answer.chunks.iter().any(|c| matches!(&c.body,
        ChunkBody::PermissionAnswer { prompt_id: p, reply: PermissionReply::Once } if *p == prompt_id)));
    assert!(answer.chunks.iter().any(|c| matches!(&c.body, ChunkBody::ToolOutput { .. } | ChunkBody::ToolResult { .. })));
    let calls = host.opencode.calls();
    assert_eq!(calls.get(1), Some(&format!("reply_permission {} Once", prompt_id.as_str())), "{calls:?}");
}

/// A question opencode asks reaches the host; the user's choice goes to
/// opencode as it was given, and the answer ends complete.
#[tokio::test]
async fn a_question_is_asked_and_its_answer_reaches_opencode() {
    let mut host = Host::start("question").await;
    host.dispatch().await;
    let mut answer = Answer::default();
    let asked = host.read(&mut answer, |c| matches!(c, ChunkBody::Question { .. })).await;
    let Some(ChunkBody::Question { prompt_id, .. }) = asked else {
        panic!("a question: {answer:?}");
    };
    host.answer_prompt(prompt_id.clone(), PromptAnswer::Question { answers: vec![vec!["Blue".into()]] });
    host.answer(&mut answer).await;
    assert_eq!(answer.completion.as_ref().map(|c| c.0), Some(Outcome::Complete));
    assert!(answer.chunks.iter().any(|c| matches!(&c.body,
        ChunkBody::QuestionAnswer { prompt_id: p, answers: Some(_) } if *p == prompt_id)));
    let calls = host.opencode.calls();
    assert_eq!(calls.get(1), Some(&format!("reply_question {} [[\"Blue\"]]", prompt_id.as_str())), "{calls:?}");
}

/// opencode's event stream drops mid-answer: once it is back, the loop
/// reads the turn from opencode's API, and the host gets the rest of the
/// text, once, and the completion.
#[tokio::test]
async fn a_dropped_event_stream_is_made_up_from_what_opencode_stored() {
    let mut host = Host::start("text_tokens").await;
    host.opencode.drop_stream_after(20);
    host.dispatch().await;
    let mut answer = Answer::default();
    host.read(&mut answer, |c| matches!(c, ChunkBody::Text { .. })).await;
    host.input(Input::EventsUp);
    host.answer(&mut answer).await;
    assert_eq!(answer.text(), stored_text("text_tokens"));
    assert_eq!(answer.completion.as_ref().map(|c| c.0), Some(Outcome::Complete));
}

/// The model's error ends the answer failed, with opencode's reason.
#[tokio::test]
async fn a_model_error_ends_the_answer_failed() {
    let mut host = Host::start("error_500").await;
    host.dispatch().await;
    let mut answer = Answer::default();
    host.answer(&mut answer).await;
    let (outcome, _, error) = answer.completion.clone().expect("completed");
    assert_eq!(outcome, Outcome::Failed);
    assert!(error.is_some_and(|e| e.contains("scripted error 500")));
    assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::Error { .. })));
}

/// The loop wakes for its outboxes only when one has a deadline: none
/// while idle or disconnected; a delta held behind a frame is due when its
/// outbox says.
#[tokio::test]
async fn the_loop_sleeps_until_an_outbox_deadline() {
    let (inputs, _inputs_rx) = mpsc::unbounded_channel::<Input<FakeOpencode>>();
    let (outbound, _frames) = mpsc::unbounded_channel();
    let opencode = FakeOpencode::new("text_tokens", inputs.clone());
    let mut agent = Agent::new(outbound, inputs, Profile::default(), AgentState::Starting);
    agent.handle(Input::OpencodeUp(opencode, Models::default()));
    assert_eq!(agent.next_deadline(), None, "idle and disconnected");
    agent.handle(Input::Relay(RelayEvent::Connected));
    assert_eq!(agent.next_deadline(), None, "idle");

    let message = MessageId::parse("m1").expect("id");
    let outbox = crate::outbox::Outbox::new(message.clone()).with_interval(FRAME_INTERVAL);
    agent.outboxes.insert(message.clone(), outbox);
    let delta = |d: &str| ChunkBody::Text {
        part_id: "p".into(),
        delta: d.into(),
    };
    agent.push_chunk(&message, delta("a"));
    agent.flush(false);
    agent.push_chunk(&message, delta("b"));
    let due = agent.next_deadline().expect("a held delta");
    assert_eq!(due, agent.outboxes[&message].next_deadline().expect("the outbox's"));
    assert!(due > now() && due <= now() + crate::outbox::MAX_HOLD, "{:?} from now", due - now());

    agent.handle(Input::Relay(RelayEvent::Disconnected));
    assert_eq!(agent.next_deadline(), None, "disconnected: the connection's return sends it");
}
