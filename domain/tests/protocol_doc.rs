//! Every JSON example in docs/PROTOCOL.md parses as the frame it shows, and
//! every action and event has an example: the document cannot drift from the
//! types.

use std::collections::BTreeSet;

use serde_json::Value;
use tether_domain::protocol::{ClientFrame, PairData, PairRequest, ServerFrame, ACTIONS};
use tether_domain::ErrorCode;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

fn json_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```json") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.push(current.take().unwrap_or_default()),
            (Some(buf), _) => {
                buf.push_str(line);
                buf.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_example_parses_and_round_trips() {
    let blocks = json_blocks();
    assert!(blocks.len() > 30, "expected the document's examples, found {}", blocks.len());
    let mut actions = BTreeSet::new();
    let mut events = BTreeSet::new();
    for block in &blocks {
        let value: Value = serde_json::from_str(block)
            .unwrap_or_else(|e| panic!("example is not JSON ({e}):\n{block}"));
        if value.get("action").is_some() {
            let frame = ClientFrame::parse(block)
                .unwrap_or_else(|e| panic!("client example does not parse: {e:?}\n{block}"));
            let again = ClientFrame::parse(&frame.to_json()).expect("round trip");
            assert_eq!(frame, again);
            actions.insert(frame.request.action().to_owned());
        } else if let Some(t) = value.get("type").and_then(Value::as_str) {
            let frame: ServerFrame = serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("server example does not parse: {e}\n{block}"));
            let again: ServerFrame = serde_json::from_str(&frame.to_json()).expect("round trip");
            assert_eq!(frame, again);
            events.insert(t.to_owned());
        } else if value.get("machine").is_some() {
            serde_json::from_value::<PairRequest>(value).expect("pair request example");
        } else if value.get("worker_id").is_some() {
            serde_json::from_value::<PairData>(value).expect("pair reply example");
        } else {
            panic!("example of unknown kind:\n{block}");
        }
    }
    let missing: Vec<_> = ACTIONS.iter().filter(|a| !actions.contains(**a)).collect();
    assert!(missing.is_empty(), "actions without an example: {missing:?}");
    let all_events = [
        "reply",
        "worker_updated",
        "session_updated",
        "message_updated",
        "chunks",
        "pairing_status",
        "session_start",
        "message_dispatch",
        "message_abort",
        "session_end",
        "prompt_answer",
    ];
    let missing: Vec<_> = all_events.iter().filter(|e| !events.contains(**e)).collect();
    assert!(missing.is_empty(), "events without an example: {missing:?}");
}

/// The table of error codes lists exactly the codes there are.
#[test]
fn the_error_table_lists_every_code() {
    let table = DOC
        .split("### Error codes")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("an \"### Error codes\" section");
    let mut listed = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for code in first.split('`').skip(1).step_by(2) {
            let parsed: ErrorCode = serde_json::from_value(Value::String(code.to_owned()))
                .unwrap_or_else(|e| panic!("the table lists `{code}`, which is no code ({e})"));
            listed.insert(parsed.as_str());
        }
    }
    let missing: Vec<_> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !listed.contains(c))
        .collect();
    assert!(missing.is_empty(), "codes missing from the table: {missing:?}");
}

#[test]
fn every_chunk_kind_has_an_example() {
    let mut kinds = BTreeSet::new();
    for block in json_blocks() {
        if let Ok(ClientFrame {
            request: tether_domain::protocol::Request::Chunks { chunks, .. },
            ..
        }) = ClientFrame::parse(&block)
        {
            kinds.extend(chunks.iter().map(|c| c.body.kind()));
        }
    }
    for kind in [
        "text",
        "reasoning",
        "tool_call",
        "tool_output",
        "tool_result",
        "file_edit",
        "permission_request",
        "permission_answer",
        "question",
        "question_answer",
        "step",
        "retry",
        "error",
        "subagent",
    ] {
        assert!(kinds.contains(kind), "chunk kind {kind} has no example");
    }
}
