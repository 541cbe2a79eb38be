//! Caps: connections, live sessions, messages waiting for an answer.

use std::sync::Arc;

use serde_json::json;
use tether_domain::model::Principal;
use tether_domain::store::Store as _;
use tether_domain::{Config, ErrorCode};

use crate::harness::*;

/// Small caps, so the tests reach them quickly.
fn small_caps() -> Config {
    Config {
        max_user_connections: 3,
        max_live_sessions: 2,
        max_open_messages: 2,
        ..Config::default()
    }
}

/// A user at the cap of open connections is refused another with
/// `too_many_connections`; the refusal leaves no record behind; closing one
/// (or its record expiring) lets the next one in.
#[tokio::test]
async fn a_users_connections_are_capped() {
    let h = Harness::with_config(small_caps());
    let (ada, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let ada = Principal::User(ada.id);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(h.connect_user(secret.expose()).await.expect("within the cap"));
    }
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::TooManyConnections));
    assert_eq!(h.domain.host_store().connection_count(&ada, h.now()).await.expect("count"), 3, "the refused one left no record");
    for conn in &open {
        h.ok(conn, json!({"action": "ping"})).await;
    }
    // Another user has connections of their own.
    h.user("bob").await;

    h.domain.disconnect(&open[0], h.now()).await;
    let again = h.connect_user(secret.expose()).await.expect("a closed one frees a slot");
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::TooManyConnections));
    // Records whose `$disconnect` never came stop counting when they expire.
    h.advance(Config::default().connection_ttl_ms);
    h.connect_user(secret.expose()).await.expect("expired records do not count");
    assert_eq!(h.code(&again, json!({"action": "ping"})).await, ErrorCode::Unauthorized);
}

/// A pending worker holds one socket and an approved one two (a reconnect
/// racing the old socket's end); a refused socket changes neither the
/// records nor the worker's presence.
#[tokio::test]
async fn a_workers_sockets_are_capped_one_while_pending() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let credential = "twk_capped_capped_capped_capped_capped_1";
    let pair = h.pair(credential, SOURCE, None).await.expect("pair");
    let worker = Principal::Worker(pair.worker_id.clone());
    let first = h.connect_worker(credential).await.expect("the pending worker connects");
    assert_eq!(h.connect_worker(credential).await, Err(ErrorCode::TooManyConnections));
    assert_eq!(h.domain.host_store().connection_count(&worker, h.now()).await.expect("count"), 1);
    let stored = h.domain.host_store().worker(&pair.worker_id).await.expect("get").expect("worker");
    assert_eq!(stored.connection.as_ref(), Some(&first), "the refusal left its presence alone");
    h.ok(&first, json!({"action": "worker_hello"})).await;

    h.ok(&owner, json!({"action": "pairing_approve", "code": pair.code.expect("code")})).await;
    let second = h.connect_worker(credential).await.expect("an approved worker has two");
    assert_eq!(h.connect_worker(credential).await, Err(ErrorCode::TooManyConnections));
    let stored = h.domain.host_store().worker(&pair.worker_id).await.expect("get").expect("worker");
    assert_eq!(stored.connection.as_ref(), Some(&second));
    h.domain.disconnect(&first, h.now()).await;
    h.connect_worker(credential).await.expect("a closed one frees a slot");
}

/// Concurrent connects of one user (random store pauses interleave them)
/// never leave more than the cap open: each counts after recording itself.
/// (More at once than the cap has room for may all be refused, when each
/// counts the others' records; their retries get in, as the end shows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_never_pass_the_cap() {
    let h = Arc::new(Harness::with_config(small_caps()));
    let (ada, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let ada = Principal::User(ada.id);
    for round in 0..10 {
        let mut tickets = Vec::new();
        for _ in 0..8 {
            tickets.push(h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket").ticket);
        }
        let tasks: Vec<_> = tickets
            .into_iter()
            .map(|t| {
                let h = h.clone();
                tokio::spawn(async move { h.redeem(&t).await })
            })
            .collect();
        let mut kept = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(conn) => kept.push(conn),
                Err(code) => assert_eq!(code, ErrorCode::TooManyConnections, "round {round}"),
            }
        }
        assert!(kept.len() <= 3, "round {round}: {} kept", kept.len());
        let count = h.domain.host_store().connection_count(&ada, h.now()).await.expect("count");
        assert_eq!(count as usize, kept.len(), "round {round}: only the kept ones have records");
        for conn in &kept {
            h.domain.disconnect(conn, h.now()).await;
        }
    }
    // The refused left nothing behind: the cap is there to fill.
    for _ in 0..3 {
        h.connect_user(secret.expose()).await.expect("within the cap");
    }
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::TooManyConnections));
}

/// `session_start` past the cap of live sessions is refused with
/// `too_many_sessions`, stores nothing and tells nobody; a retry of a
/// stored one is still answered; ending a session frees a slot.
#[tokio::test]
async fn live_sessions_are_capped_and_ending_one_frees_a_slot() {
    let h = Harness::with_config(small_caps());
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let start = |sid: &str| json!({"action": "session_start", "session_id": sid, "worker_id": wid,
        "model": {"provider_id": "p", "model_id": "m"}});
    h.ok(&owner, start("ses_cap_1")).await;
    h.ok(&owner, start("ses_cap_2")).await;
    h.push.take(&owner);
    h.push.take(&wconn);

    let (code, message) = h.send(&owner, start("ses_cap_3")).await.expect_err("over the cap");
    assert_eq!(code, ErrorCode::TooManySessions);
    assert!(message.contains('2'), "the message says the cap: {message}");
    assert!(h.push.take(&wconn).is_empty(), "the worker was told nothing");
    assert!(h.push.take(&owner).is_empty(), "nothing was announced");
    let list = h.ok(&owner, json!({"action": "session_list"})).await;
    assert_eq!(list["sessions"].as_array().expect("sessions").len(), 2);
    assert_eq!(h.code(&owner, json!({"action": "session_history", "session_id": "ses_cap_3"})).await, ErrorCode::NotFound);
    // A retry of a stored start is answered as before.
    h.ok(&owner, start("ses_cap_1")).await;

    h.ok(&owner, json!({"action": "session_end", "session_id": "ses_cap_1"})).await;
    h.ok(&owner, start("ses_cap_3")).await;
    assert_eq!(h.code(&owner, start("ses_cap_4")).await, ErrorCode::TooManySessions);
}

/// `message_send` past the cap of messages waiting for an answer (queued
/// here: the sessions are still starting) is refused with `queue_full`,
/// across sessions, and stores nothing; a retry of a stored message is
/// answered; an abort or an answer frees a slot.
#[tokio::test]
async fn messages_waiting_for_an_answer_are_capped() {
    let h = Harness::with_config(small_caps());
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    for sid in ["ses_q1", "ses_q2"] {
        h.ok(&owner, json!({"action": "session_start", "session_id": sid, "worker_id": wid,
            "model": {"provider_id": "p", "model_id": "m"}})).await;
    }
    let send = |sid: &str, mid: &str| json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "hi"});
    let m = h.ok(&owner, send("ses_q1", "msg_q1")).await;
    assert_eq!(m["message"]["status"], "queued");
    h.ok(&owner, send("ses_q1", "msg_q2")).await;
    h.push.take(&wconn);

    let (code, message) = h.send(&owner, send("ses_q2", "msg_q3")).await.expect_err("over the cap");
    assert_eq!(code, ErrorCode::QueueFull);
    assert!(message.contains('2'), "the message says the cap: {message}");
    let hist = h.history(&owner, "ses_q2").await;
    assert_eq!(hist["messages"].as_array().expect("messages").len(), 0);
    assert_eq!(hist["session"]["message_count"], 0, "the refused message took no number");
    assert_eq!(h.code(&owner, json!({"action": "message_abort", "message_id": "msg_q3"})).await, ErrorCode::NotFound);
    h.ok(&owner, send("ses_q1", "msg_q1")).await;

    h.ok(&owner, json!({"action": "message_abort", "message_id": "msg_q1"})).await;
    h.ok(&owner, send("ses_q2", "msg_q3")).await;
    assert_eq!(h.code(&owner, send("ses_q2", "msg_q4")).await, ErrorCode::QueueFull);

    // Dispatched and answered: the answer's end frees its slot.
    h.ok(&wconn, json!({"action": "session_ready", "session_id": "ses_q1", "agent_session_id": "ag1"})).await;
    h.ok(&wconn, json!({"action": "message_started", "message_id": "msg_q2"})).await;
    assert_eq!(h.code(&owner, send("ses_q2", "msg_q4")).await, ErrorCode::QueueFull, "streaming still waits");
    h.ok(&wconn, json!({"action": "message_complete", "message_id": "msg_q2", "outcome": "complete", "chunk_count": 0})).await;
    h.ok(&owner, send("ses_q2", "msg_q4")).await;
}
