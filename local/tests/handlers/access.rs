//! Who may connect, and what each role and status may do.


use serde_json::json;
use tether_domain::protocol::ServerFrame;
use tether_domain::{Config, ErrorCode};

use crate::harness::*;

#[tokio::test]
async fn connect_refuses_what_it_must() {
    let h = Harness::new();
    let code = |r: Result<_, tether_domain::ApiError>| r.expect_err("refused").code;
    assert_eq!(code(h.domain.connect(request(None, None, None, T0)).await), ErrorCode::Unauthorized);
    assert_eq!(code(h.domain.connect(request(Some("ttk_nope"), None, None, T0)).await), ErrorCode::Unauthorized);
    assert_eq!(code(h.domain.connect(request(None, Some("twk_unknown"), None, T0)).await), ErrorCode::Unauthorized);
    assert_eq!(code(h.domain.connect(request(None, None, Some("9"), T0)).await), ErrorCode::UnsupportedVersion);

    // A ticket works once, and not after it expires.
    let (_, secret) = h.domain.add_user("ada", false, T0).await.expect("user");
    let t = h.domain.issue_ticket(Some(secret.expose()), T0).await.expect("ticket");
    assert!(h.domain.connect(request(Some(&t.ticket), None, None, T0)).await.is_ok());
    assert_eq!(code(h.domain.connect(request(Some(&t.ticket), None, None, T0)).await), ErrorCode::Unauthorized);
    let t = h.domain.issue_ticket(Some(secret.expose()), T0).await.expect("ticket");
    assert_eq!(
        code(h.domain.connect(request(Some(&t.ticket), None, None, t.expires_at + 1)).await),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        h.domain.issue_ticket(Some("tsk_wrong"), T0).await.expect_err("bad secret").code,
        ErrorCode::Unauthorized
    );
}

#[tokio::test]
async fn pairing_approve_and_revoke() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, credential) = h.worker(&owner).await;
    assert!(
        h.push.sent_to(&wconn).iter().any(|f| matches!(f, ServerFrame::PairingStatus { status, .. } if status.as_str() == "approved")),
        "the worker hears it was approved"
    );
    let machines = h.ok(&owner, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"][0]["workers"][0]["worker_id"], wid.as_str());
    assert_eq!(machines["machines"][0]["workers"][0]["online"], true);

    let pair = h.pair(&credential, SOURCE, None).await.expect("pair again");
    assert_eq!(pair.status.as_str(), "approved");
    assert_eq!(pair.code, None);

    h.ok(&owner, json!({"action": "worker_revoke", "worker_id": wid})).await;
    assert!(h.push.closed().contains(&wconn), "revoking closes the worker's connection");
    assert_eq!(h.connect_worker(&credential).await, Err(ErrorCode::WorkerNotApproved));
    assert_eq!(h.code(&wconn, json!({"action": "ping"})).await, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn pending_workers_may_not_work() {
    let h = Harness::new();
    let credential = "twk_pending_pending_pending_pending_1";
    let pair = h.pair(credential, SOURCE, None).await.expect("pair");
    let conn = h.connect_worker(credential).await.expect("pending connects");
    let hello = h.ok(&conn, json!({"action": "worker_hello"})).await;
    assert_eq!(hello["worker"]["status"], "pending");
    assert_eq!(
        h.code(&conn, json!({"action": "chunks", "message_id": "m1", "chunks": [text_chunk(0, "x")]})).await,
        ErrorCode::WorkerNotApproved
    );
    let owner = h.user("ada").await;
    assert_eq!(h.code(&owner, json!({"action": "pairing_approve", "code": "ZZZZ-ZZZZ"})).await, ErrorCode::NotFound);
    assert_eq!(h.code(&owner, json!({"action": "pairing_approve", "code": "?"})).await, ErrorCode::BadRequest);
    h.advance(Config::default().pairing_ttl_ms + 1);
    let code = pair.code.expect("code");
    assert_eq!(h.code(&owner, json!({"action": "pairing_approve", "code": code})).await, ErrorCode::Expired);
}

#[tokio::test]
async fn roles_are_enforced() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    assert_eq!(
        h.code(&owner, json!({"action": "chunks", "message_id": "m1", "chunks": [text_chunk(0, "x")]})).await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        h.code(&wconn, json!({"action": "session_start", "session_id": "s1", "worker_id": wid,
            "model": {"provider_id": "p", "model_id": "m"}})).await,
        ErrorCode::Forbidden
    );
    assert_eq!(h.code(&owner, json!({"action": "pairing_list"})).await, ErrorCode::Forbidden);
}
