//! The event translator against recordings of real opencode 1.18 streams
//! (`fixtures/opencode/`, see its README): each scenario's events become the
//! chunks a user should see, and reconciling from opencode's message API
//! after a dropped stream adds exactly what was missing.

use std::path::PathBuf;

use serde_json::Value;
use tether_domain::protocol::{ChunkBody, PermissionReply, SubagentStatus, ToolStatus};
use tether_worker::opencode::Turn;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencode").join(name)
}

fn events(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(&format!("{name}.sse"))).expect("fixture");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect()
}

fn messages(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(&format!("{name}.messages.json"))).expect("fixture");
    serde_json::from_str(&text).expect("messages JSON")
}

/// The session of the recorded turn.
fn session(events: &[Value]) -> String {
    events
        .iter()
        .find_map(|e| Turn::event_session(e).map(str::to_owned))
        .expect("a session event")
}

struct Replay {
    chunks: Vec<ChunkBody>,
    idle: bool,
    turn: Turn,
}

fn replay(name: &str) -> Replay {
    let events = events(name);
    let mut turn = Turn::new(session(&events), 0);
    let mut chunks = Vec::new();
    let mut idle = false;
    for e in &events {
        // What the worker routes to the turn: its session's events and its
        // subagents' (child sessions, learnt as they are created).
        if !turn.claims(e) {
            continue;
        }
        let fx = turn.on_event(e);
        assert!(!idle || fx.chunks.is_empty(), "{name}: chunks after idle: {:?}", fx.chunks);
        chunks.extend(fx.chunks);
        idle |= fx.idle;
    }
    Replay { chunks, idle, turn }
}

fn text(chunks: &[ChunkBody]) -> String {
    chunks
        .iter()
        .filter_map(|c| match c {
            ChunkBody::Text { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

/// The final text opencode stored for the turn's assistant messages.
fn stored_text(name: &str) -> String {
    let mut out = Vec::new();
    for m in messages(name) {
        if m["info"]["role"].as_str() != Some("assistant") {
            continue;
        }
        for p in m["parts"].as_array().into_iter().flatten() {
            if p["type"].as_str() == Some("text") {
                out.push(p["text"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    out.join("\n\n")
}

#[test]
fn streamed_text_equals_what_opencode_stored() {
    let r = replay("text_tokens");
    assert!(r.idle, "the turn ends when opencode goes idle");
    let expected = stored_text("text_tokens");
    assert!(!expected.is_empty());
    assert_eq!(text(&r.chunks), expected);
    assert_eq!(r.turn.final_text(), expected);
    assert!(r.chunks.iter().filter(|c| matches!(c, ChunkBody::Text { .. })).count() > 1, "deltas, not one blob");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::Step { .. })));
    assert!(r.turn.error.is_none() && !r.turn.aborted);
}

#[test]
fn reasoning_streams_as_reasoning() {
    let r = replay("think");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::Reasoning { .. })));
    assert_eq!(text(&r.chunks), stored_text("think"), "reasoning is not mixed into the text");
}

#[test]
fn an_approved_bash_call_streams_permission_tool_state_and_output() {
    let r = replay("bash_approved");
    let kinds: Vec<&str> = r.chunks.iter().map(ChunkBody::kind).collect();
    let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("no {k} in {kinds:?}"));
    assert!(pos("tool_call") < pos("permission_request"));
    assert!(pos("permission_request") < pos("permission_answer"));
    assert!(pos("permission_answer") < pos("tool_result"));
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::PermissionAnswer { reply: PermissionReply::Once, .. })));
    let output: String = r
        .chunks
        .iter()
        .filter_map(|c| match c {
            ChunkBody::ToolOutput { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert!(output.contains("hi"), "output: {output:?}");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::ToolResult { status: ToolStatus::Completed, .. })));
    assert!(r.idle);
}

#[test]
fn a_rejected_bash_call_ends_in_error() {
    let r = replay("bash_rejected");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::PermissionAnswer { reply: PermissionReply::Reject, .. })));
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::ToolResult { status: ToolStatus::Error, .. })));
    assert!(!r.chunks.iter().any(|c| matches!(c, ChunkBody::ToolOutput { .. })));
}

#[test]
fn writes_and_edits_become_file_edits() {
    let r = replay("write");
    assert!(
        r.chunks.iter().any(|c| matches!(c, ChunkBody::FileEdit { path, diff, .. } if path.ends_with("hello.txt") && diff.contains("+hi there"))),
        "{:?}",
        r.chunks.iter().map(ChunkBody::kind).collect::<Vec<_>>()
    );
    let r = replay("edit");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::FileEdit { path, additions: 1, deletions: 1, .. } if path.ends_with("hello.txt"))));
}

#[test]
fn questions_and_their_answers() {
    let r = replay("question");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::Question { .. })));
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::QuestionAnswer { answers: Some(_), .. })));
}

#[test]
fn abort_and_errors_are_told_apart() {
    let r = replay("abort_hang");
    assert!(r.turn.aborted, "an aborted turn");
    assert!(r.turn.error.is_none());
    assert!(r.idle);
    let r = replay("error_500");
    assert!(r.turn.error.is_some(), "a failed turn");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::Error { .. })));
    assert!(r.idle);
}

/// An aborted turn's tool calls end with it (opencode tells their end only
/// after the first idle); a finished turn has none open.
#[test]
fn open_tools_close_once_when_the_turn_ends() {
    // The worker ends the turn at the first idle: replay up to there.
    let events = events("abort_permission");
    let mut turn = Turn::new(session(&events), 0);
    for e in &events {
        if Turn::event_session(e) == Some(turn.session()) && turn.on_event(e).idle {
            break;
        }
    }
    assert!(turn.aborted);
    let closed = turn.close_open_tools("aborted");
    assert_eq!(closed.len(), 1, "the bash call waiting for permission: {closed:?}");
    match &closed[0] {
        ChunkBody::ToolResult { status, error, .. } => {
            assert_eq!(*status, ToolStatus::Error);
            assert_eq!(error.as_deref(), Some("aborted"));
        }
        other => panic!("not a tool result: {other:?}"),
    }
    assert!(turn.close_open_tools("aborted").is_empty(), "once");
    let mut done = replay("bash_approved");
    assert!(done.turn.close_open_tools("x").is_empty(), "a completed tool stays completed");
}

/// What opencode sends about an aborted turn after its first idle (the old
/// message's last part update, its error, a second idle) is not the next
/// turn's: no chunks, no abort, no end for it.
#[test]
fn an_earlier_turns_late_events_are_not_the_next_turns() {
    for name in ["abort_permission", "abort_hang"] {
        let events = events(name);
        let session = session(&events);
        let mine: Vec<&Value> = events.iter().filter(|e| Turn::event_session(e) == Some(session.as_str())).collect();
        let mut first = Turn::new(session.clone(), 0);
        let mut rest = mine.iter();
        for e in rest.by_ref() {
            if first.on_event(e).idle {
                break;
            }
        }
        let late: Vec<&&Value> = rest.collect();
        assert!(!late.is_empty(), "{name}: opencode sends more after the first idle");
        let mut next = Turn::new(session.clone(), 0).with_foreign(first.seen_messages());
        for e in late {
            let fx = next.on_event(e);
            assert!(fx.chunks.is_empty(), "{name}: {:?} became chunks of the next turn: {:?}", e["type"], fx.chunks);
            assert!(!fx.idle, "{name}: the old turn's idle ended the next one");
        }
        assert!(!next.aborted && next.error.is_none(), "{name}: the next turn took the old error");
    }
}

/// opencode's retries of a failing model call are told once per attempt,
/// in order, before the answer (or the error) that follows them.
#[test]
fn retries_are_told_once_per_attempt() {
    let attempts = |r: &Replay| -> Vec<u32> {
        r.chunks
            .iter()
            .filter_map(|c| match c {
                ChunkBody::Retry { attempt, message, next_at } => {
                    assert!(message.contains("scripted error 500"), "{message}");
                    assert!(next_at.is_some(), "when the next attempt starts");
                    Some(*attempt)
                }
                _ => None,
            })
            .collect()
    };
    let once = replay("error_retry_once");
    assert_eq!(attempts(&once), vec![1]);
    assert!(once.turn.error.is_none(), "the retry succeeded");
    let first_text = once.chunks.iter().position(|c| matches!(c, ChunkBody::Text { .. }));
    let retry = once.chunks.iter().position(|c| matches!(c, ChunkBody::Retry { .. }));
    assert!(retry < first_text && first_text.is_some(), "the retry before the answer");
    assert_eq!(text(&once.chunks), stored_text("error_retry_once"));

    let failed = replay("error_500");
    let seen = attempts(&failed);
    assert!(seen.len() >= 2, "several attempts: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "each attempt once, in order: {seen:?}");
    let error = failed.chunks.iter().position(|c| matches!(c, ChunkBody::Error { .. }));
    let last_retry = failed.chunks.iter().rposition(|c| matches!(c, ChunkBody::Retry { .. }));
    assert!(last_retry < error, "the error after the retries");
}

/// The event stream drops half-way; reading opencode's messages afterwards
/// adds exactly the rest.
#[test]
fn reconciling_after_a_dropped_stream_completes_the_answer_once() {
    for name in ["text_tokens", "bash_approved", "think", "write"] {
        let all = events(name);
        let session = session(&all);
        let mine: Vec<&Value> = all.iter().filter(|e| Turn::event_session(e) == Some(session.as_str())).collect();
        let full = replay(name);
        for cut in [mine.len() / 3, mine.len() / 2, mine.len() * 3 / 4] {
            let mut turn = Turn::new(session.clone(), 0);
            let mut chunks = Vec::new();
            for e in &mine[..cut] {
                chunks.extend(turn.on_event(e).chunks);
            }
            chunks.extend(turn.reconcile_messages(&messages(name)));
            assert_eq!(text(&chunks), text(&full.chunks), "{name} cut at {cut}: text");
            assert_eq!(turn.final_text(), full.turn.final_text(), "{name} cut at {cut}: final text");
            let results = |cs: &[ChunkBody]| cs.iter().filter(|c| matches!(c, ChunkBody::ToolResult { .. })).count();
            assert_eq!(results(&chunks), results(&full.chunks), "{name} cut at {cut}: tool results once");
        }
    }
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    serde_json::from_str(&text).expect("JSON")
}

/// A subagent's state as the chunks tell it: the latest header, and each
/// tool call's latest status and summary, by part id.
#[derive(Debug, Default, PartialEq)]
struct SubagentView {
    call_id: Option<String>,
    agent: String,
    description: String,
    status: Option<SubagentStatus>,
    error: Option<String>,
    tools: std::collections::BTreeMap<String, (String, ToolStatus, String)>,
    chunks: usize,
}

fn subagents(chunks: &[ChunkBody]) -> std::collections::BTreeMap<String, SubagentView> {
    let mut out: std::collections::BTreeMap<String, SubagentView> = Default::default();
    for c in chunks {
        if let ChunkBody::Subagent { subagent_id, call_id, agent, description, status, error, tool, .. } = c {
            let v = out.entry(subagent_id.clone()).or_default();
            v.call_id = call_id.clone();
            v.agent = agent.clone();
            v.description = description.clone();
            v.status = Some(*status);
            v.error = error.clone();
            v.chunks += 1;
            if let Some(t) = tool {
                v.tools.insert(t.part_id.clone(), (t.tool.clone(), t.status, t.title.clone()));
            }
        }
    }
    out
}

/// The parent's `task` call of the recording.
fn task_call(chunks: &[ChunkBody]) -> String {
    chunks
        .iter()
        .find_map(|c| match c {
            ChunkBody::ToolCall { tool, call_id, .. } if tool == "task" => Some(call_id.clone()),
            _ => None,
        })
        .expect("a task call")
}

fn child_id(name: &str) -> String {
    json(&format!("{name}.children.json"))[0]["id"].as_str().expect("a child").to_owned()
}

/// A subagent's bash call asks permission: the request reaches the answer
/// (addressed by opencode's request id, which the reply uses), the answer
/// comes back, the subagent's tool calls and end show as subagent chunks,
/// its result reaches the parent through the task call, and the turn ends
/// only when the parent goes idle (not at the subagent's idle).
#[test]
fn a_subagents_permission_and_work_reach_the_answer() {
    let r = replay("subagent_approved");
    let child = child_id("subagent_approved");
    let asked = json("subagent_approved.permission.json");
    assert_eq!(asked[0]["sessionID"].as_str(), Some(child.as_str()), "the child asked, not the parent");
    let per = asked[0]["id"].as_str().unwrap();
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::PermissionRequest { prompt_id, permission, .. } if prompt_id.as_str() == per && permission == "bash")));
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::PermissionAnswer { prompt_id, reply: PermissionReply::Once } if prompt_id.as_str() == per)));

    let subs = subagents(&r.chunks);
    assert_eq!(subs.keys().collect::<Vec<_>>(), vec![&child], "one subagent: {subs:?}");
    let s = &subs[&child];
    assert_eq!(s.agent, "general");
    assert_eq!(s.description, "Say hi");
    assert_eq!(s.status, Some(SubagentStatus::Completed));
    assert_eq!(s.call_id.as_deref(), Some(task_call(&r.chunks).as_str()));
    assert!(s.error.is_none());
    let tools: Vec<_> = s.tools.values().collect();
    assert_eq!(tools, vec![&("bash".to_owned(), ToolStatus::Completed, "echo hi".to_owned())]);
    // The first subagent chunk comes as the child is created, running.
    let first = r.chunks.iter().find(|c| matches!(c, ChunkBody::Subagent { .. })).unwrap();
    assert!(matches!(first, ChunkBody::Subagent { status: SubagentStatus::Running, agent, .. } if agent == "general"));
    // The request comes after the subagent is shown.
    let pos = |pred: &dyn Fn(&ChunkBody) -> bool| r.chunks.iter().position(pred).unwrap();
    assert!(pos(&|c| matches!(c, ChunkBody::Subagent { .. })) < pos(&|c| matches!(c, ChunkBody::PermissionRequest { .. })));

    // The subagent's text is its own; the answer's is the parent's, which
    // reports what the subagent's command printed.
    assert_eq!(text(&r.chunks), stored_text("subagent_approved"));
    assert!(text(&r.chunks).contains("Ran it. hi"), "{}", text(&r.chunks));
    let task_output: String = r
        .chunks
        .iter()
        .filter_map(|c| match c {
            ChunkBody::ToolOutput { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert!(task_output.contains("<task_result>\nRan it. hi"), "{task_output:?}");
    assert!(r.idle);
    assert!(r.turn.error.is_none() && !r.turn.aborted);
    // Every subagent chunk is small, whatever the subagent does.
    for c in &r.chunks {
        if matches!(c, ChunkBody::Subagent { .. }) {
            assert!(serde_json::to_string(c).unwrap().len() < 2048);
        }
    }
}

/// The idle of the subagent's session does not end the turn.
#[test]
fn the_subagents_idle_is_not_the_turns() {
    let all = events("subagent_approved");
    let child = child_id("subagent_approved");
    let mut turn = Turn::new(session(&all), 0);
    let mut ended_at = None;
    for (i, e) in all.iter().enumerate() {
        if turn.claims(e) && turn.on_event(e).idle && ended_at.is_none() {
            ended_at = Some(i);
        }
    }
    let child_idle = all
        .iter()
        .position(|e| e["type"] == "session.idle" && Turn::event_session(e) == Some(child.as_str()))
        .expect("the child idles");
    assert!(ended_at.expect("the turn ends") > child_idle);
    assert_eq!(Turn::event_session(&all[ended_at.unwrap()]), Some(session(&all).as_str()));
}

/// Denied: the subagent's bash call is refused, the subagent ends in error,
/// and the parent's answer still completes.
#[test]
fn a_denied_subagent_permission_ends_the_subagent_not_the_answer() {
    let r = replay("subagent_rejected");
    let child = child_id("subagent_rejected");
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::PermissionAnswer { reply: PermissionReply::Reject, .. })));
    let s = &subagents(&r.chunks)[&child];
    assert_eq!(s.status, Some(SubagentStatus::Error));
    assert!(s.error.as_deref().is_some_and(|e| e.contains("rejected permission")), "{:?}", s.error);
    assert_eq!(s.tools.values().map(|t| t.1).collect::<Vec<_>>(), vec![ToolStatus::Error]);
    assert!(r.chunks.iter().any(|c| matches!(c, ChunkBody::ToolResult { status: ToolStatus::Error, .. })), "the task call failed");
    assert_eq!(text(&r.chunks), stored_text("subagent_rejected"));
    assert!(r.idle && r.turn.error.is_none(), "the answer completes");
}

/// The event stream drops mid-turn; reading opencode back afterwards (the
/// session's children, their messages, the parent's messages, pending
/// prompts) gives the same answer, subagent and prompts once.
#[test]
fn reconciling_a_subagent_turn_after_a_dropped_stream() {
    for name in ["subagent_approved", "subagent_rejected"] {
        let all = events(name);
        let root = session(&all);
        let full = replay(name);
        let child = child_id(name);
        let children = json(&format!("{name}.children.json"));
        let child_messages = vec![(child.clone(), json(&format!("{name}.child_messages.json")).as_array().unwrap().clone())];
        let mut probe = Turn::new(root.clone(), 0);
        let mine: Vec<&Value> = all.iter().filter(|e| probe.claims(e) && { probe.on_event(e); true }).collect();
        for cut in [mine.len() / 5, mine.len() / 3, mine.len() / 2, mine.len() * 3 / 4] {
            let mut turn = Turn::new(root.clone(), 0);
            let mut chunks = Vec::new();
            for e in &mine[..cut] {
                if turn.claims(e) {
                    chunks.extend(turn.on_event(e).chunks);
                }
            }
            chunks.extend(turn.reconcile_subagents(&children.as_array().unwrap().clone(), &child_messages));
            chunks.extend(turn.reconcile_messages(&messages(name)));
            // What `GET /permission` would list now: nothing pending any more.
            chunks.extend(turn.reconcile_prompts(&[], &[]));
            let (got, want) = (subagents(&chunks), subagents(&full.chunks));
            assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name} cut at {cut}");
            let (g, w) = (&got[&child], &want[&child]);
            assert_eq!((&g.agent, &g.description, g.status, &g.call_id, &g.tools), (&w.agent, &w.description, w.status, &w.call_id, &w.tools), "{name} cut at {cut}");
            assert_eq!(text(&chunks), text(&full.chunks), "{name} cut at {cut}: text");
            let results = |cs: &[ChunkBody]| cs.iter().filter(|c| matches!(c, ChunkBody::ToolResult { .. })).count();
            assert_eq!(results(&chunks), results(&full.chunks), "{name} cut at {cut}: tool results once");
        }
    }
}

/// The stream drops before the subagent was seen, while its bash call
/// waits: reading the session tree back adopts the child, and its pending
/// permission (`GET /permission`) reaches the answer, once.
#[test]
fn a_pending_subagent_permission_is_read_back_after_a_reconnect() {
    let name = "subagent_approved";
    let all = events(name);
    let root = session(&all);
    let child = child_id(name);
    let mut turn = Turn::new(root.clone(), 0);
    let mut chunks = Vec::new();
    for e in &all {
        if e["type"] == "session.created" && e["properties"]["info"]["parentID"].is_string() {
            break; // the stream drops here
        }
        if turn.claims(e) {
            chunks.extend(turn.on_event(e).chunks);
        }
    }
    assert!(turn.subagents().is_empty());
    let permissions = json(&format!("{name}.permission.json"));
    // Not adopted yet: a pending request of some other session is not ours.
    assert!(turn.reconcile_prompts(permissions.as_array().unwrap(), &[]).is_empty());
    let children = json(&format!("{name}.children.json"));
    let adopted = turn.reconcile_subagents(children.as_array().unwrap(), &[(child.clone(), Vec::new())]);
    assert!(matches!(&adopted[..], [ChunkBody::Subagent { subagent_id, status: SubagentStatus::Running, agent, description, .. }]
        if *subagent_id == child && agent == "general" && description == "Say hi"), "{adopted:?}");
    assert_eq!(turn.subagents(), vec![child.clone()]);
    let prompts = turn.reconcile_prompts(permissions.as_array().unwrap(), &[]);
    assert!(matches!(&prompts[..], [ChunkBody::PermissionRequest { prompt_id, .. }] if prompt_id.as_str() == permissions[0]["id"].as_str().unwrap()), "{prompts:?}");
    assert!(turn.reconcile_prompts(permissions.as_array().unwrap(), &[]).is_empty(), "once");
    // Live events after the reconnect belong to the turn now.
    let replied = all.iter().find(|e| e["type"] == "permission.replied").unwrap();
    assert!(turn.claims(replied));
    assert!(matches!(&turn.on_event(replied).chunks[..], [ChunkBody::PermissionAnswer { .. }]));
}

/// A child session older than the turn is an earlier turn's subagent: not
/// adopted when the tree is read back.
#[test]
fn an_earlier_turns_subagent_is_not_adopted() {
    let name = "subagent_approved";
    let children = json(&format!("{name}.children.json"));
    let created = children[0]["time"]["created"].as_i64().unwrap();
    let mut turn = Turn::new(session(&events(name)), created + 60_000);
    assert!(turn.reconcile_subagents(children.as_array().unwrap(), &[]).is_empty());
    assert!(turn.subagents().is_empty());
    let permissions = json(&format!("{name}.permission.json"));
    assert!(turn.reconcile_prompts(permissions.as_array().unwrap(), &[]).is_empty());
}

/// An answer that ends while a subagent still runs ends it too, once.
#[test]
fn subagents_end_with_the_turn() {
    let name = "subagent_approved";
    let all = events(name);
    let mut turn = Turn::new(session(&all), 0);
    for e in &all {
        if e["type"] == "permission.asked" {
            break;
        }
        if turn.claims(e) {
            turn.on_event(e);
        }
    }
    let closed = turn.close_subagents(SubagentStatus::Aborted, "aborted");
    assert!(matches!(&closed[..], [ChunkBody::Subagent { status: SubagentStatus::Aborted, error: Some(_), .. }]), "{closed:?}");
    assert!(turn.close_subagents(SubagentStatus::Aborted, "aborted").is_empty(), "once");
}

/// A subagent's question is the answer's, like its permissions. (opencode
/// 1.18's `general` subagent has no question tool, so no recording has one:
/// this event is the recorded child's, with a question's shape from the
/// `question` fixture.)
#[test]
fn a_subagents_question_reaches_the_answer() {
    let all = events("subagent_approved");
    let child = child_id("subagent_approved");
    let mut turn = Turn::new(session(&all), 0);
    for e in &all {
        if e["type"] == "permission.asked" {
            break;
        }
        if turn.claims(e) {
            turn.on_event(e);
        }
    }
    let asked = serde_json::json!({"type": "question.asked", "properties": {
        "id": "que_child1", "sessionID": child,
        "questions": [{"question": "Which color do you prefer?", "header": "Color", "options": [{"label": "Blue"}, {"label": "Red"}]}],
    }});
    assert!(turn.claims(&asked));
    assert!(matches!(&turn.on_event(&asked).chunks[..], [ChunkBody::Question { prompt_id, .. }] if prompt_id.as_str() == "que_child1"));
    let replied = serde_json::json!({"type": "question.replied", "properties": {"sessionID": child, "requestID": "que_child1", "answers": [["Red"]]}});
    assert!(matches!(&turn.on_event(&replied).chunks[..], [ChunkBody::QuestionAnswer { answers: Some(a), .. }] if a == &vec![vec!["Red".to_owned()]]));
    // Read back after a reconnect: once.
    let pending = [serde_json::json!({"id": "que_child2", "sessionID": child, "questions": []})];
    assert_eq!(turn.reconcile_prompts(&[], &pending).len(), 1);
    assert!(turn.reconcile_prompts(&[], &pending).is_empty());
}

/// A subagent's own subagents (a custom agent may allow `task`) are the
/// turn's too, recursively; their chunks name the subagent they work for.
#[test]
fn a_subagents_subagents_are_followed() {
    let all = events("subagent_approved");
    let root = session(&all);
    let child = child_id("subagent_approved");
    let mut turn = Turn::new(root, 0);
    for e in &all {
        if e["type"] == "permission.asked" {
            break;
        }
        if turn.claims(e) {
            turn.on_event(e);
        }
    }
    let created = serde_json::json!({"type": "session.created", "properties": {"sessionID": "ses_grandchild", "info": {
        "id": "ses_grandchild", "parentID": child, "title": "Dig deeper (@explore subagent)", "time": {"created": 1}}}});
    assert!(turn.claims(&created));
    let fx = turn.on_event(&created);
    assert!(matches!(&fx.chunks[..], [ChunkBody::Subagent { subagent_id, parent_id: Some(p), agent, description, status: SubagentStatus::Running, .. }]
        if subagent_id == "ses_grandchild" && *p == child && agent == "explore" && description == "Dig deeper"), "{:?}", fx.chunks);
    let asked = serde_json::json!({"type": "permission.asked", "properties": {"id": "per_grand", "sessionID": "ses_grandchild", "permission": "bash", "patterns": ["ls"]}});
    assert!(turn.claims(&asked));
    assert!(matches!(&turn.on_event(&asked).chunks[..], [ChunkBody::PermissionRequest { .. }]));
    // Its idle is not the turn's.
    let idle = serde_json::json!({"type": "session.idle", "properties": {"sessionID": "ses_grandchild"}});
    assert!(!turn.on_event(&idle).idle);
    assert_eq!(turn.subagents(), vec![child, "ses_grandchild".to_owned()]);
}
