//! Each kind of malformed frame gets its own stable code.

use tether_domain::protocol::{peek_request_id, ClientFrame, Request};
use tether_domain::ErrorCode;

fn code(text: &str) -> ErrorCode {
    ClientFrame::parse(text).expect_err("must be refused").error.code
}

#[test]
fn malformed_frames_get_stable_codes() {
    assert_eq!(code("{not json"), ErrorCode::BadJson);
    assert_eq!(code("[1,2]"), ErrorCode::BadJson);
    assert_eq!(code(r#"{"action":"ping"}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"action":"ping","id":7}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"id":"r1"}"#), ErrorCode::UnknownAction);
    assert_eq!(code(r#"{"id":"r1","action":"fly"}"#), ErrorCode::UnknownAction);
    assert_eq!(code(r#"{"id":"r1","action":"message_send","session_id":"s"}"#), ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"id":"r1","action":"message_send","session_id":"s","message_id":"m","text":5}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"id":"r1","action":"session_watch","session_id":"bad id"}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(code(r#"{"id":"r1","action":"ping","extra":1}"#), ErrorCode::BadRequest);
}

#[test]
fn the_request_id_is_kept_when_readable() {
    let err = ClientFrame::parse(r#"{"id":"r9","action":"fly"}"#).expect_err("unknown");
    assert_eq!(err.id.map(|i| i.into_string()), Some("r9".to_owned()));
    assert_eq!(peek_request_id(r#"{"id":"r3","x":1}"#).map(|i| i.into_string()), Some("r3".into()));
    assert_eq!(peek_request_id("nope"), None);
}

#[test]
fn a_valid_frame_parses() {
    let f = ClientFrame::parse(r#"{"id":"r1","action":"ping"}"#).expect("valid");
    assert_eq!(f.request, Request::Ping {});
}

/// A completion carries no text: the host has the chunks. A worker that
/// still sends `final_text` is told so, not silently trimmed.
#[test]
fn a_completion_with_final_text_is_refused() {
    let frame = r#"{"id":"w9","action":"message_complete","message_id":"msg_1","outcome":"complete","chunk_count":2,"final_text":"Hello"}"#;
    let err = ClientFrame::parse(frame).expect_err("must be refused");
    assert_eq!(err.error.code, ErrorCode::BadRequest);
    assert!(err.error.message.contains("final_text"), "{}", err.error.message);
    assert_eq!(err.id.map(|i| i.into_string()), Some("w9".to_owned()));
    let without = frame.replace(r#","final_text":"Hello""#, "");
    let ok = ClientFrame::parse(&without).expect("valid without it");
    assert!(matches!(ok.request, Request::MessageComplete { chunk_count: 2, .. }));
}
