//! Each scenario starts its own host, worker, opencode and fake LLM.

use std::time::Duration;

use tether_domain::ids::{MessageId, SessionId, WorkerId};
use tether_domain::model::{AgentState, MessageStatus, SessionStatus, TitleSource};
use tether_domain::protocol::{
    ChunkBody, ModelRef, PermissionReply, PromptAnswer, Request, ServerFrame, SessionView, SubagentStatus, ToolStatus,
    WorkerView,
};

use super::support::{alive, eventually, Agentic, Proxy};
use crate::helpers::{answer_text, Followed, Host, Mode, Server, User, UserClient};

/// Generous bound for a whole scenario: opencode starts, fetches its
/// provider package on the very first run, and answers.
const LIMIT: Duration = Duration::from_secs(240);

fn fake_model() -> ModelRef {
    ModelRef {
        provider_id: "fake".into(),
        model_id: "fake-model".into(),
    }
}

fn new_id<T: std::str::FromStr>(prefix: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{n}_{}", std::process::id()).parse().expect("valid id")
}

/// What the fake LLM says for `[tokens n]`.
fn numbered_text(n: usize) -> String {
    (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
}

/// The text of an answer: its text deltas in seq order.
fn text_of(f: &Followed) -> String {
    let mut chunks = f.chunks.clone();
    chunks.sort_by_key(|c| c.seq);
    chunks
        .iter()
        .filter_map(|c| match &c.body {
            ChunkBody::Text { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

/// Every seq once, from 0, with no gap.
fn assert_whole(f: &Followed) {
    let mut seqs = f.seqs();
    seqs.sort_unstable();
    let expected: Vec<u32> = (0..seqs.len() as u32).collect();
    assert_eq!(seqs, expected, "each chunk exactly once, no gap");
    if let Some(count) = f.last.as_ref().and_then(|m| m.chunk_count) {
        assert_eq!(count as usize, seqs.len(), "chunk_count matches what arrived");
    }
}

/// Waits until the worker is online with the fake model; returns it.
async fn online_worker(user: &mut UserClient) -> WorkerView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let workers: Vec<WorkerView> = user.machines().await.into_iter().flat_map(|m| m.workers).collect();
        if let Some(w) = workers
            .into_iter()
            .find(|w| w.online && w.models.iter().any(|m| m.provider_id == "fake" && m.model_id == "fake-model"))
        {
            return w;
        }
        assert!(tokio::time::Instant::now() < deadline, "no worker came online with the fake model");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a session titled "agent" and waits until it is ready; watches it.
async fn ready_session(user: &mut UserClient, worker: &WorkerId) -> SessionId {
    ready_session_titled(user, worker, Some("agent")).await
}

/// Starts a session (titled `title`, or not) and waits until it is ready;
/// watches it.
async fn ready_session_titled(user: &mut UserClient, worker: &WorkerId, title: Option<&str>) -> SessionId {
    let session: SessionId = new_id("ses_");
    let view: SessionView = user
        .call(Request::SessionStart {
            session_id: session.clone(),
            worker_id: worker.clone(),
            model: fake_model(),
            title: title.map(Into::into),
        })
        .await
        .field("session");
    if view.status != SessionStatus::Ready {
        let s = session.clone();
        user.next_event("the session becoming ready", |e| {
            matches!(e, ServerFrame::SessionUpdated { session } if session.session_id == s && session.status == SessionStatus::Ready)
        })
        .await;
    }
    user.call(Request::SessionWatch {
        session_id: session.clone(),
        after: None,
    })
    .await
    .ok();
    session
}

async fn ask(user: &mut UserClient, session: &SessionId, text: &str) -> MessageId {
    let message: MessageId = new_id("msg_");
    user.send_message(session, &message, text).await;
    message
}

/// Waits for a chunk of `message` matching `pred`; returns it.
async fn chunk_where(
    user: &mut UserClient,
    message: &MessageId,
    what: &str,
    pred: impl Fn(&ChunkBody) -> bool,
    seen: &mut Followed,
) -> ChunkBody {
    loop {
        let m = message.clone();
        match user
            .next_event(what, |e| matches!(e, ServerFrame::Chunks { message_id, .. } if *message_id == m))
            .await
        {
            ServerFrame::Chunks { chunks, .. } => {
                let found = chunks.iter().find(|c| pred(&c.body)).map(|c| c.body.clone());
                seen.chunks.extend(chunks);
                if let Some(found) = found {
                    return found;
                }
            }
            _ => unreachable!(),
        }
    }
}

/// Waits for the answer's permission request: its prompt id and permission.
async fn permission_request(
    user: &mut UserClient,
    message: &MessageId,
    seen: &mut Followed,
) -> (tether_domain::ids::PromptId, String) {
    let is_request = |b: &ChunkBody| matches!(b, ChunkBody::PermissionRequest { .. });
    match chunk_where(user, message, "a permission request", is_request, seen).await {
        ChunkBody::PermissionRequest { prompt_id, permission, .. } => (prompt_id, permission),
        _ => unreachable!("chunk_where returns what matched"),
    }
}

async fn answer_permission(user: &mut UserClient, prompt_id: tether_domain::ids::PromptId, reply: PermissionReply) {
    user.call(Request::PromptReply {
        prompt_id,
        answer: PromptAnswer::Permission { reply },
    })
    .await
    .ok();
}

/// Follows an answer to its end, adding to what was seen of it already.
async fn finish(user: &mut UserClient, message: &MessageId, seen: Followed) -> Followed {
    user.follow_on(message, seen, true).await
}

/// Follows an answer from now to its end, whole.
async fn follow(user: &mut UserClient, message: &MessageId) -> Followed {
    user.follow_on(message, Followed::default(), true).await
}

async fn run(host: Host, name: &str, scenario: impl std::future::Future<Output = ()>) {
    // The host's set-up (the AWS-shaped tier starts its Lambda emulator and
    // moto here; the local one has none).
    (host.set_up)();
    if tokio::time::timeout(LIMIT, scenario).await.is_err() {
        panic!("scenario {name} did not finish within {LIMIT:?}");
    }
}

pub async fn streams_real_answers_and_a_second_message(host: Host) {
    run(host, "streams", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Sequential).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        let session = ready_session(&mut user, &worker.worker_id).await;

        let message = ask(&mut user, &session, "[tokens 300] [delay 4] please").await;
        let answer = follow(&mut user, &message).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert!(answer.statuses.contains(&MessageStatus::Streaming));
        assert_whole(&answer);
        let expected = numbered_text(300);
        assert_eq!(text_of(&answer), expected, "the streamed text is what the model said");
        // The completion carries no text: the host has the chunks.
        let history = user.history(&session).await;
        assert_eq!(answer_text(&history.chunks, &message), expected, "the stored answer is its text chunks");
        let text_chunks = answer
            .chunks
            .iter()
            .filter(|c| matches!(c.body, ChunkBody::Text { .. }))
            .count();
        assert!(text_chunks >= 3, "the answer arrived in pieces ({text_chunks} text chunks)");
        assert!(
            answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::Step { .. })),
            "token figures arrive as a step chunk"
        );

        let second = ask(&mut user, &session, "[think] [tokens 20] again").await;
        let answer = follow(&mut user, &second).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(text_of(&answer), numbered_text(20));
        assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::Reasoning { .. })));
        assert_whole(&answer);

        // The model fails once: the user is told opencode is trying again,
        // then the answer streams as usual.
        let third = ask(&mut user, &session, "[error 500 1] [retry-after 300] [tokens 5] once more").await;
        let answer = follow(&mut user, &third).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(text_of(&answer), numbered_text(5));
        let retries: Vec<u32> = answer
            .chunks
            .iter()
            .filter_map(|c| match &c.body {
                ChunkBody::Retry { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(retries, vec![1], "one retry notice");
        assert!(
            !answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::Error { .. })),
            "a retry that succeeds is no error"
        );
        assert_whole(&answer);
    })
    .await;
}

pub async fn permission_approve_and_deny_and_file_edits(host: Host) {
    run(host, "permissions", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Sequential).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        let session = ready_session(&mut user, &worker.worker_id).await;

        // Approve: the tool runs and its output streams back.
        let message = ask(&mut user, &session, "[bash echo hello-from-tool]").await;
        let mut seen = Followed::default();
        let (prompt_id, permission) = permission_request(&mut user, &message, &mut seen).await;
        assert_eq!(permission, "bash");
        answer_permission(&mut user, prompt_id, PermissionReply::Once).await;
        let answer = finish(&mut user, &message, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_whole(&answer);
        let output: String = answer
            .chunks
            .iter()
            .filter_map(|c| match &c.body {
                ChunkBody::ToolOutput { delta, .. } => Some(delta.as_str()),
                _ => None,
            })
            .collect();
        assert!(output.contains("hello-from-tool"), "tool output streamed: {output:?}");
        assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::PermissionAnswer { reply: PermissionReply::Once, .. })));
        assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::ToolResult { status: ToolStatus::Completed, .. })));
        assert!(text_of(&answer).contains("hello-from-tool"), "the model saw the output");

        // Deny: the tool is refused and never runs.
        let message = ask(&mut user, &session, "[bash echo should-not-run]").await;
        let mut seen = Followed::default();
        let (prompt_id, _) = permission_request(&mut user, &message, &mut seen).await;
        answer_permission(&mut user, prompt_id, PermissionReply::Reject).await;
        let answer = finish(&mut user, &message, seen).await;
        assert!(answer.last.as_ref().is_some_and(|m| m.status.is_final()));
        assert!(!answer.chunks.iter().any(|c| matches!(&c.body, ChunkBody::ToolOutput { delta, .. } if delta.contains("should-not-run"))));
        assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::ToolResult { status: ToolStatus::Error, .. })));

        // A file the agent writes arrives as a file edit.
        let message = ask(&mut user, &session, "[write notes.txt hello world]").await;
        let answer = follow(&mut user, &message).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert!(
            answer.chunks.iter().any(|c| matches!(&c.body, ChunkBody::FileEdit { path, .. } if path.ends_with("notes.txt"))),
            "a file_edit chunk: {:?}",
            answer.chunks.iter().map(|c| c.body.kind()).collect::<Vec<_>>()
        );
        assert!(agent.workdir().join("notes.txt").is_file());
    })
    .await;
}

pub async fn abort_and_end_session(host: Host) {
    run(host, "abort", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Concurrent).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        let session = ready_session(&mut user, &worker.worker_id).await;

        let message = ask(&mut user, &session, "[tokens 3000] [delay 10]").await;
        let mut seen = Followed::default();
        chunk_where(&mut user, &message, "some text", |b| matches!(b, ChunkBody::Text { .. }), &mut seen).await;
        user.call(Request::MessageAbort { message_id: message.clone() }).await.ok();
        let answer = finish(&mut user, &message, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Aborted));
        assert!(text_of(&answer).len() < numbered_text(3000).len(), "it stopped early");

        // Aborted while a tool call waits for permission: the call ends with
        // the answer (opencode tells it only after the turn is over).
        let waiting = ask(&mut user, &session, "[bash echo never] run it").await;
        let mut seen = Followed::default();
        let is_request = |b: &ChunkBody| matches!(b, ChunkBody::PermissionRequest { .. });
        chunk_where(&mut user, &waiting, "a permission request", is_request, &mut seen).await;
        user.call(Request::MessageAbort { message_id: waiting.clone() }).await.ok();
        let answer = finish(&mut user, &waiting, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Aborted));
        let results: Vec<(ToolStatus, Option<String>)> = answer
            .chunks
            .iter()
            .filter_map(|c| match &c.body {
                ChunkBody::ToolResult { status, error, .. } => Some((*status, error.clone())),
                _ => None,
            })
            .collect();
        // Its end is opencode's ("Tool execution aborted"), or the worker's
        // if opencode did not say it in time ("aborted").
        assert_eq!(results.len(), 1, "the waiting call ends, once: {results:?}");
        assert_eq!(results[0].0, ToolStatus::Error);
        assert!(results[0].1.as_deref().is_some_and(|e| e.contains("aborted")), "{results:?}");
        assert_whole(&answer);

        // The session is usable afterwards.
        let next = ask(&mut user, &session, "[tokens 10]").await;
        let answer = follow(&mut user, &next).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(text_of(&answer), numbered_text(10));

        // Ending the session stops a running answer.
        let running = ask(&mut user, &session, "[tokens 3000] [delay 10]").await;
        let mut seen = Followed::default();
        chunk_where(&mut user, &running, "some text", |b| matches!(b, ChunkBody::Text { .. }), &mut seen).await;
        let ended: SessionView = user
            .call(Request::SessionEnd { session_id: session.clone() })
            .await
            .field("session");
        assert_eq!(ended.status, SessionStatus::Ended);
        let answer = finish(&mut user, &running, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Aborted));
    })
    .await;
}

/// Pairs a `tether worker` process with an admin user; returns its id.
async fn pair_worker(user: &mut UserClient) -> WorkerId {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = user.call(Request::PairingList { after: None, limit: None }).await;
        let pending: Vec<WorkerView> = reply.field("workers");
        if let Some(w) = pending.first() {
            let code = w.pairing_code.clone().expect("a pending worker shows its code");
            user.call(Request::PairingApprove { code, name: None }).await.ok();
            return w.worker_id.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker never asked to pair");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin(server: &Server) -> User {
    server.add_user_with("ada", true).await
}

pub async fn offline_queue_and_a_cut_connection(host: Host) {
    run(host, "offline", async {
        let agent = Agentic::new(host).await;
        let server = Server::start(host, Mode::Concurrent).await;
        let ada = admin(&server).await;
        let mut user = UserClient::connect(&server, &ada).await;
        let proxy = Proxy::start(server.addr).await;
        let mut worker = agent.worker(&format!("http://{}", proxy.addr));
        let worker_id = pair_worker(&mut user).await;
        let view = online_worker(&mut user).await;
        assert_eq!(view.worker_id, worker_id);
        let session = ready_session(&mut user, &worker_id).await;

        // Offline: the message waits, queued, and is answered when the worker is back.
        worker.kill();
        user.worker_updated(&worker_id, "the worker going offline", |w| !w.online).await;
        let message = ask(&mut user, &session, "[tokens 30]").await;
        let history = user.history(&session).await;
        assert_eq!(
            history.messages.iter().find(|m| m.message_id == message).map(|m| m.status),
            Some(MessageStatus::Queued)
        );
        let _worker = agent.worker(&format!("http://{}", proxy.addr));
        let answer = follow(&mut user, &message).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(text_of(&answer), numbered_text(30));

        // The worker's connection is cut mid-answer: the answer is whole, once.
        let message = ask(&mut user, &session, "[tokens 400] [delay 6]").await;
        let mut seen = Followed::default();
        chunk_where(&mut user, &message, "some text", |b| matches!(b, ChunkBody::Text { .. }), &mut seen).await;
        proxy.cut();
        let answer = finish(&mut user, &message, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_whole(&answer);
        assert_eq!(text_of(&answer), numbered_text(400));
        let history = user.history(&session).await;
        let stored: String = history
            .chunks
            .iter()
            .filter(|c| c.message_id == message)
            .filter_map(|c| match &c.body {
                ChunkBody::Text { delta, .. } => Some(delta.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(stored, numbered_text(400), "stored once, in order");
    })
    .await;
}

pub async fn a_killed_worker_or_opencode_leaves_a_clear_state(host: Host) {
    run(host, "crashes", async {
        let agent = Agentic::new(host).await;
        let server = Server::start(host, Mode::Sequential).await;
        let ada = admin(&server).await;
        let mut user = UserClient::connect(&server, &ada).await;
        let url = format!("http://{}", server.addr);
        let mut worker = agent.worker(&url);
        let worker_id = pair_worker(&mut user).await;
        online_worker(&mut user).await;
        let session = ready_session(&mut user, &worker_id).await;

        // The worker is killed mid-answer: opencode goes with it, the answer
        // ends failed when the worker is back, and the session goes on.
        let message = ask(&mut user, &session, "[tokens 3000] [delay 10]").await;
        let mut seen = Followed::default();
        chunk_where(&mut user, &message, "some text", |b| matches!(b, ChunkBody::Text { .. }), &mut seen).await;
        let opencode = agent.opencode_pid().expect("the worker wrote opencode's pid");
        worker.kill();
        eventually("opencode to die with its worker", Duration::from_secs(10), || !alive(opencode)).await;
        let _worker = agent.worker(&url);
        let answer = finish(&mut user, &message, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Failed));
        let next = ask(&mut user, &session, "[tokens 15]").await;
        let answer = follow(&mut user, &next).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(text_of(&answer), numbered_text(15));

        // opencode is killed mid-answer: the user sees an error for it, and
        // the next message works once the worker has restarted opencode.
        let message = ask(&mut user, &session, "[tokens 3000] [delay 10]").await;
        let mut seen = Followed::default();
        chunk_where(&mut user, &message, "some text", |b| matches!(b, ChunkBody::Text { .. }), &mut seen).await;
        let opencode = agent.opencode_pid().expect("opencode's pid");
        // SAFETY-free: a plain kill(1) of a process this test's worker started.
        let status = std::process::Command::new("kill").arg("-9").arg(opencode.to_string()).status();
        assert!(status.is_ok_and(|s| s.success()));
        let answer = finish(&mut user, &message, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Failed));
        assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::Error { .. })), "the user sees an error");
        // The owner sees opencode down, with why, then ready again.
        let is_state = |state: AgentState| {
            move |e: &ServerFrame| {
                matches!(e, ServerFrame::WorkerUpdated { worker } if worker.agent.as_ref().is_some_and(|a| a.state == state))
            }
        };
        let down = match user.next_event("the worker saying opencode is down", is_state(AgentState::Down)).await {
            ServerFrame::WorkerUpdated { worker } => worker.agent.expect("a report"),
            _ => unreachable!(),
        };
        assert_eq!(down.reason.as_deref(), Some("killed by signal 9; restarting it"));
        let since = down.at;
        let back = move |e: &ServerFrame| {
            matches!(e, ServerFrame::WorkerUpdated { worker }
                if worker.agent.as_ref().is_some_and(|a| a.state == AgentState::Ready && a.at > since))
        };
        user.next_event("the worker saying opencode is ready again", back).await;
        let next = ask(&mut user, &session, "[tokens 12]").await;
        let answer = follow(&mut user, &next).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(text_of(&answer), numbered_text(12));
    })
    .await;
}

/// opencode names a session after its first message (it asks the model,
/// which the fake answers with that message's first line): where the user
/// gave no title, the title reaches the host and every tab of the owner,
/// and the session list. A subagent's child session, titled by opencode
/// too, changes nothing; a session the user titled keeps its title.
pub async fn the_title_opencode_makes_reaches_the_host(host: Host) {
    run(host, "titles", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Concurrent).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        assert_eq!(
            worker.agent.as_ref().map(|a| a.state),
            Some(AgentState::Ready),
            "a worker with its models says its opencode is ready"
        );

        let untitled = ready_session_titled(&mut user, &worker.worker_id, None).await;
        let message = ask(&mut user, &untitled, "Fix the parser tests\n[tokens 3]").await;
        let s = untitled.clone();
        let titled = match user
            .next_event("the session's title from opencode", |e| {
                matches!(e, ServerFrame::SessionUpdated { session } if session.session_id == s && session.title_source.is_some())
            })
            .await
        {
            ServerFrame::SessionUpdated { session } => session,
            _ => unreachable!(),
        };
        assert_eq!(titled.title, "Fix the parser tests");
        assert_eq!(titled.title_source, Some(TitleSource::Agent));
        let answer = follow(&mut user, &message).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));

        let delegated = ask(&mut user, &untitled, r#"[subagent "Say hello" [tokens 2]]"#).await;
        let answer = follow(&mut user, &delegated).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(subagents_of(&answer).len(), 1, "a subagent ran, in a child session");

        let users = ready_session(&mut user, &worker.worker_id).await;
        let other = ask(&mut user, &users, "Something else entirely [tokens 2]").await;
        let answer = follow(&mut user, &other).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));

        let listed = user.sessions().await;
        let title_of = |id: &SessionId| {
            let s = listed.iter().find(|s| &s.session_id == id).expect("listed");
            (s.title.clone(), s.title_source)
        };
        assert_eq!(
            title_of(&untitled),
            ("Fix the parser tests".to_owned(), Some(TitleSource::Agent)),
            "the subagent's own title went nowhere"
        );
        assert_eq!(title_of(&users), ("agent".to_owned(), Some(TitleSource::User)));
    })
    .await;
}

/// Several projects on one machine, as people use it: three workers of one
/// user share the machine's state directory, each with its own project and
/// opencode. Answers alternate between them; none fails, and no worker ever
/// stops another's opencode.
pub async fn three_workers_on_one_machine_stay_apart(host: Host) {
    run(host, "three workers", async {
        let agent = Agentic::new(host).await;
        let server = Server::start(host, Mode::Sequential).await;
        let ada = admin(&server).await;
        let mut user = UserClient::connect(&server, &ada).await;
        let url = format!("http://{}", server.addr);
        let mut workers = Vec::new();
        let mut sessions = Vec::new();
        for name in ["alpha", "beta", "gamma"] {
            let project = agent.project(name);
            workers.push(agent.worker_in(&url, &project));
            let worker_id = pair_worker(&mut user).await;
            online(&mut user, &worker_id).await;
            sessions.push(ready_session(&mut user, &worker_id).await);
        }
        let pids = agent.opencode_pids();
        assert_eq!(pids.len(), 3, "one opencode per worker: {pids:?}");
        for round in 0..6 {
            for (i, session) in sessions.iter().enumerate() {
                let n = 5 + round + i;
                let message = ask(&mut user, session, &format!("[tokens {n}]")).await;
                let answer = follow(&mut user, &message).await;
                assert_eq!(
                    answer.last.as_ref().map(|m| m.status),
                    Some(MessageStatus::Complete),
                    "round {round}, worker {i}"
                );
                assert_eq!(text_of(&answer), numbered_text(n));
            }
        }
        assert_eq!(agent.opencode_pids(), pids, "no opencode was restarted");
        assert!(pids.iter().all(|pid| alive(*pid)), "every opencode still runs");
        drop(workers);
    })
    .await;
}

/// Waits until the worker `id` is online with the fake model.
async fn online(user: &mut UserClient, id: &WorkerId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let online = user
            .machines()
            .await
            .into_iter()
            .flat_map(|m| m.workers)
            .any(|w| w.worker_id == *id && w.online && !w.models.is_empty());
        if online {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker {id} never came online");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The network drops the worker's packets mid-answer without a reset (a
/// proxy that stops forwarding and closes nothing). With default settings
/// the worker notices within its ack timeout, reconnects and re-sends, and
/// the answer resumes within 20 s and ends exact.
pub async fn a_silent_network_drop_stalls_an_answer_for_seconds_only(host: Host) {
    run(host, "silent drop", async {
        let agent = Agentic::new(host).await;
        let server = Server::start(host, Mode::Sequential).await;
        let ada = admin(&server).await;
        let mut user = UserClient::connect(&server, &ada).await;
        let proxy = Proxy::start(server.addr).await;
        let _worker = agent.worker_with_defaults(&format!("http://{}", proxy.addr));
        let worker_id = pair_worker(&mut user).await;
        online(&mut user, &worker_id).await;
        let session = ready_session(&mut user, &worker_id).await;

        let message = ask(&mut user, &session, "[tokens 1500] [delay 10]").await;
        let mut seen = Followed::default();
        chunk_where(&mut user, &message, "some text", |b| matches!(b, ChunkBody::Text { .. }), &mut seen).await;
        proxy.freeze();
        let frozen = std::time::Instant::now();
        let before = seen.chunks.len();
        chunk_where(&mut user, &message, "text after the drop", |b| matches!(b, ChunkBody::Text { .. }), &mut seen)
            .await;
        let stall = frozen.elapsed();
        eprintln!("silent drop: the answer stalled {stall:?} ({before} chunks before it)");
        assert!(stall < Duration::from_secs(20), "the answer resumed after {stall:?}");
        let answer = finish(&mut user, &message, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_whole(&answer);
        assert_eq!(text_of(&answer), numbered_text(1500));
    })
    .await;
}

/// An answer far over API Gateway's 128 KB message limit completes, exact:
/// it travels as bounded chunk frames, and the completion carries only the
/// chunk count.
pub async fn a_300_kb_answer_completes_exact(host: Host) {
    run(host, "300 KB", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Sequential).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        let session = ready_session(&mut user, &worker.worker_id).await;
        let tokens = 46_000;
        let started = std::time::Instant::now();
        // A hundred tokens per delta: 460 events through opencode, not 46,000.
        let message = ask(&mut user, &session, &format!("[tokens {tokens}] [burst 100] [delay 1]")).await;
        let answer = follow(&mut user, &message).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_whole(&answer);
        let text = text_of(&answer);
        assert!(text.len() > 300_000, "{} bytes", text.len());
        assert_eq!(text, numbered_text(tokens));
        let chunks = answer.chunks.len();
        eprintln!(
            "300 KB answer: {} bytes in {chunks} chunks, {:?}",
            text.len(),
            started.elapsed()
        );
        assert!(chunks <= 400, "{chunks} chunks for {} bytes", text.len());
    })
    .await;
}

/// A subagent of the answer as its chunks tell it (in seq order): the
/// latest status and error, agent, description, and each tool call's
/// latest (tool, status, summary).
struct SubagentSeen {
    agent: String,
    description: String,
    status: SubagentStatus,
    error: Option<String>,
    tools: Vec<(String, ToolStatus, String)>,
}

fn subagents_of(f: &Followed) -> Vec<(String, SubagentSeen)> {
    let mut chunks = f.chunks.clone();
    chunks.sort_by_key(|c| c.seq);
    let mut out: Vec<(String, SubagentSeen)> = Vec::new();
    let mut tools: std::collections::HashMap<(String, String), usize> = Default::default();
    for c in &chunks {
        let ChunkBody::Subagent { subagent_id, agent, description, status, error, tool, .. } = &c.body else {
            continue;
        };
        let i = match out.iter().position(|(id, _)| id == subagent_id) {
            Some(i) => i,
            None => {
                out.push((
                    subagent_id.clone(),
                    SubagentSeen {
                        agent: String::new(),
                        description: String::new(),
                        status: *status,
                        error: None,
                        tools: Vec::new(),
                    },
                ));
                out.len() - 1
            }
        };
        let s = &mut out[i].1;
        s.agent = agent.clone();
        s.description = description.clone();
        s.status = *status;
        s.error = error.clone();
        if let Some(t) = tool {
            let entry = (t.tool.clone(), t.status, t.title.clone());
            match tools.get(&(subagent_id.clone(), t.part_id.clone())) {
                Some(&j) => s.tools[j] = entry,
                None => {
                    tools.insert((subagent_id.clone(), t.part_id.clone()), s.tools.len());
                    s.tools.push(entry);
                }
            }
        }
    }
    out
}

/// The output of the answer's own tool calls, in seq order.
fn tool_output_of(f: &Followed) -> String {
    let mut chunks = f.chunks.clone();
    chunks.sort_by_key(|c| c.seq);
    chunks
        .iter()
        .filter_map(|c| match &c.body {
            ChunkBody::ToolOutput { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

/// The agent hands the work to a subagent (opencode's task tool, a child
/// session) whose bash call asks permission: the request reaches the user
/// in the answer, the approval reaches opencode, the subagent's work shows
/// as subagent chunks, and its command's output comes back into the answer.
pub async fn a_subagents_permission_approved_through_the_protocol(host: Host) {
    run(host, "subagent approved", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Sequential).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        let session = ready_session(&mut user, &worker.worker_id).await;

        let message = ask(&mut user, &session, r#"[subagent "Say hello" [bash echo subagent-was-here]]"#).await;
        let mut seen = Followed::default();
        let (prompt_id, permission) = permission_request(&mut user, &message, &mut seen).await;
        assert_eq!(permission, "bash");
        let running = subagents_of(&seen);
        assert_eq!(running.len(), 1, "the subagent shows before its request");
        assert_eq!(running[0].1.status, SubagentStatus::Running);
        answer_permission(&mut user, prompt_id, PermissionReply::Once).await;
        let answer = finish(&mut user, &message, seen).await;

        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_whole(&answer);
        let subagents = subagents_of(&answer);
        assert_eq!(subagents.len(), 1, "one subagent");
        let s = &subagents[0].1;
        assert_eq!((s.agent.as_str(), s.description.as_str()), ("general", "Say hello"));
        assert_eq!(s.status, SubagentStatus::Completed, "error: {:?}", s.error);
        assert_eq!(
            s.tools,
            vec![("bash".to_owned(), ToolStatus::Completed, "echo subagent-was-here".to_owned())]
        );
        assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::PermissionAnswer { reply: PermissionReply::Once, .. })));
        assert!(tool_output_of(&answer).contains("subagent-was-here"), "the task's result: {:?}", tool_output_of(&answer));
        assert!(text_of(&answer).contains("subagent-was-here"), "the agent saw it: {:?}", text_of(&answer));
    })
    .await;
}

/// Denied: the subagent's command is refused and never runs; the subagent
/// ends in error, and the answer still completes. Then aborted while the
/// subagent waits: the answer and the subagent end aborted, and the next
/// answer is not troubled by them.
pub async fn a_subagents_permission_denied_through_the_protocol(host: Host) {
    run(host, "subagent denied", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Concurrent).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        let session = ready_session(&mut user, &worker.worker_id).await;

        let message = ask(&mut user, &session, "[subagent [bash echo should-not-run > ran.txt]]").await;
        let mut seen = Followed::default();
        let (prompt_id, _) = permission_request(&mut user, &message, &mut seen).await;
        answer_permission(&mut user, prompt_id, PermissionReply::Reject).await;
        let answer = finish(&mut user, &message, seen).await;

        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_whole(&answer);
        assert!(answer.chunks.iter().any(|c| matches!(c.body, ChunkBody::PermissionAnswer { reply: PermissionReply::Reject, .. })));
        let subagents = subagents_of(&answer);
        assert_eq!(subagents.len(), 1, "one subagent");
        let s = &subagents[0].1;
        assert_eq!(s.status, SubagentStatus::Error);
        assert!(s.error.as_deref().is_some_and(|e| e.contains("rejected")), "{:?}", s.error);
        assert_eq!(s.tools.iter().map(|t| t.1).collect::<Vec<_>>(), vec![ToolStatus::Error], "the refused call");
        assert!(!agent.workdir().join("ran.txt").exists(), "the command never ran");
        assert!(text_of(&answer).contains("rejected"), "the agent was told: {:?}", text_of(&answer));

        // Aborted while the subagent's call waits for permission: the answer
        // ends aborted, and the subagent with it.
        let waiting = ask(&mut user, &session, "[subagent [bash echo never > never.txt]]").await;
        let mut seen = Followed::default();
        permission_request(&mut user, &waiting, &mut seen).await;
        user.call(Request::MessageAbort { message_id: waiting.clone() }).await.ok();
        let answer = finish(&mut user, &waiting, seen).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Aborted));
        assert_whole(&answer);
        let subagents = subagents_of(&answer);
        assert_eq!(subagents.len(), 1, "one subagent");
        assert_eq!(subagents[0].1.status, SubagentStatus::Aborted, "{:?}", subagents[0].1.error);
        assert!(!agent.workdir().join("never.txt").exists());

        // The session goes on.
        let next = ask(&mut user, &session, "[tokens 5]").await;
        let answer = follow(&mut user, &next).await;
        assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
        assert_eq!(text_of(&answer), numbered_text(5));
        assert!(subagents_of(&answer).is_empty(), "the earlier subagent is not this answer's");
    })
    .await;
}

/// A message sent for the worker's other model is answered by it, and the
/// next one, sent without a model, by the session's again: the fake LLM
/// sees each request with its model's id.
pub async fn a_message_sent_for_another_model_reaches_it(host: Host) {
    run(host, "another model", async {
        let agent = Agentic::new(host).await;
        let server = agent.up(Mode::Sequential).await;
        let mut user = UserClient::connect(&server, &server.owner()).await;
        let worker = online_worker(&mut user).await;
        let other = ModelRef {
            provider_id: "fake".into(),
            model_id: "other-model".into(),
        };
        assert!(
            worker.models.iter().any(|m| m.provider_id == other.provider_id && m.model_id == other.model_id),
            "the worker offers the second model: {:?}",
            worker.models
        );
        let session = ready_session(&mut user, &worker.worker_id).await;

        let mut asked = Vec::new();
        for (marker, model) in [("first-marker", None), ("second-marker", Some(other.clone())), ("third-marker", None)] {
            let message: MessageId = new_id("msg_");
            let view: tether_domain::protocol::MessageView = user
                .call(Request::MessageSend {
                    session_id: session.clone(),
                    message_id: message.clone(),
                    text: format!("[tokens 3] {marker}"),
                    model: model.clone(),
                })
                .await
                .field("message");
            assert_eq!(view.model, model);
            let answer = follow(&mut user, &message).await;
            assert_eq!(answer.last.as_ref().map(|m| m.status), Some(MessageStatus::Complete));
            asked.push(marker);
        }

        // The request that answers a marker is the first to carry it (later
        // ones carry it as history).
        let completions = agent.completions();
        let model_for = |marker: &str| -> String {
            completions
                .iter()
                .filter(|c| c["messages"].to_string().contains(marker))
                .filter(|c| !c["messages"].to_string().contains("title generator"))
                .filter(|c| {
                    let later = asked.iter().skip_while(|m| **m != marker).skip(1);
                    !later.clone().any(|m| c["messages"].to_string().contains(m))
                })
                .map(|c| c["model"].as_str().unwrap_or_default().to_owned())
                .next()
                .unwrap_or_else(|| panic!("no request answered {marker}"))
        };
        assert_eq!(model_for("first-marker"), "fake-model");
        assert_eq!(model_for("second-marker"), "other-model");
        assert_eq!(model_for("third-marker"), "fake-model", "the session's model again");
    })
    .await;
}
