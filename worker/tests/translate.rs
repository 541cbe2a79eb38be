//! The event translator against recordings of real opencode 1.18 streams
//! (`fixtures/opencode/`, see its README): each scenario's events become the
//! chunks a user should see, and reconciling from opencode's message API
//! after a dropped stream adds exactly what was missing.

use std::path::PathBuf;

use serde_json::Value;
use tether_domain::protocol::{ChunkBody, PermissionReply, ToolStatus};
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
        if Turn::event_session(e) != Some(turn.session()) {
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
