//! Scenario 7: a second user can neither see nor touch the first one's things.

use tether_domain::ids::{MessageId, SessionId};
use tether_domain::model::{MessageStatus, WorkerStatus};
use tether_domain::protocol::Request;
use tether_domain::ErrorCode;

use crate::helpers::*;

pub async fn second_user_isolation(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        user: mut alice,
        mut worker,
    } = paired(&server, "alice").await;
    let session = ready_session(&alice, &mut worker).await;
    alice.watch(&session, None).await;
    let (done, done_text) =
        exchange(&alice, &mut worker, &session, "Hi", &["Hello", " there"]).await;
    alice.follow_to_end(&done).await;

    // A message still running, for the abort attempt.
    let running = MessageId::random();
    alice.send_message(&session, &running, "Keep going").await;
    worker.dispatched(&running).await;
    worker.started(&running).await;
    worker.chunks(&running, &[(0, "Going")]).await;

    let before = alice.history(&session).await;

    let bob_account = server.add_user("bob").await;
    let mut bob = UserClient::connect(&server, &bob_account).await;
    let wid = worker.id().clone();

    let attempts: Vec<(&str, Request)> = vec![
        (
            "session_watch",
            Request::SessionWatch {
                session_id: session.clone(),
                after: None,
            },
        ),
        (
            "session_history",
            Request::SessionHistory {
                session_id: session.clone(),
                after: None,
            },
        ),
        (
            "message_send",
            Request::MessageSend {
                session_id: session.clone(),
                message_id: MessageId::random(),
                text: "Mine now".into(),
                model: None,
            },
        ),
        (
            "message_abort (running)",
            Request::MessageAbort {
                message_id: running.clone(),
            },
        ),
        (
            "message_abort (complete)",
            Request::MessageAbort {
                message_id: done.clone(),
            },
        ),
        (
            "worker_revoke",
            Request::WorkerRevoke {
                worker_id: wid.clone(),
            },
        ),
        (
            "session_start",
            Request::SessionStart {
                session_id: SessionId::random(),
                worker_id: wid.clone(),
                model: test_model(),
                title: None,
            },
        ),
        (
            "session_end",
            Request::SessionEnd {
                session_id: session.clone(),
            },
        ),
        (
            "session_unwatch",
            Request::SessionUnwatch {
                session_id: session.clone(),
            },
        ),
        (
            "session_list of the worker",
            Request::SessionList {
                worker_id: Some(wid.clone()),
                before: None,
                limit: None,
            },
        ),
    ];
    for (what, request) in attempts {
        let reply = bob.call(request).await;
        assert!(
            !reply.ok
                && reply.error.as_ref().map(|e| e.0.as_str()) == Some(ErrorCode::NotFound.as_str()),
            "bob's {what} on alice's things: expected not_found, got {}",
            reply.raw
        );
    }
    assert!(bob.machines().await.is_empty(), "bob has no machines");
    assert!(bob.sessions().await.is_empty(), "bob has no sessions");

    // Alice's things are as they were.
    let after = alice.history(&session).await;
    assert_eq!(
        after.messages, before.messages,
        "bob changed alice's messages"
    );
    assert_eq!(after.chunks, before.chunks, "bob changed alice's chunks");
    assert_eq!(after.session.status, before.session.status);
    let view = alice.worker_view(&wid).await;
    assert_eq!(view.status, WorkerStatus::Approved);
    assert!(view.online);
    assert_eq!(alice.sessions().await.len(), 1);

    // Alice's work goes on, and bob hears nothing of it.
    worker.chunks(&running, &[(1, " on")]).await;
    worker.complete(&running, 2).await;
    let followed = alice.follow_to_end(&running).await;
    assert_eq!(
        followed.last.map(|m| m.status),
        Some(MessageStatus::Complete)
    );
    let identity = worker.identity.clone();
    worker.close().await;
    alice.worker_updated(&wid, "offline", |w| !w.online).await;
    let worker = WorkerClient::connect(&server, &identity).await;
    worker.hello(&[]).await.ok();
    alice.worker_updated(&wid, "online", |w| w.online).await;

    let leaked = bob.received_events().await;
    assert!(leaked.is_empty(), "bob received alice's events: {leaked:?}");
    let history = alice.history(&session).await;
    assert_eq!(answer_text(&history.chunks, &done), done_text);
    assert_eq!(answer_text(&history.chunks, &running), "Going on");
}
