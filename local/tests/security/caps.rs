//! Caps on what one principal or one address holds: open websockets per
//! user, per worker (one while pending) and per source address, a user's
//! live sessions and their messages waiting for an answer. Each refusal
//! carries its own code and leaves the state as it was, so the next call
//! within the cap works. The caps are set small with `tether serve`'s flags.

use std::time::Duration;

use tether_domain::ids::{MessageId, SessionId};
use tether_domain::model::MessageStatus;
use tether_domain::protocol::{Request, ServerFrame};
use tether_domain::ErrorCode;

use tether_testsupport::helpers::{
    assert_refused, open_ws, pair, paired, ready_session, Mode, Server, UserClient, WorkerClient,
    WorkerIdentity, WAIT,
};

/// Connects a worker, retrying while the server still counts a socket that
/// just closed (its `$disconnect` runs after the close handshake).
async fn connect_worker_soon(server: &Server, identity: &WorkerIdentity) -> WorkerClient {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match WorkerClient::try_connect(server, identity).await {
            Ok(worker) => return worker,
            Err(r) if tokio::time::Instant::now() < deadline => {
                r.assert(429, ErrorCode::TooManyConnections, "while the old socket ends");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(r) => panic!("the worker could not connect again: {r:?}"),
        }
    }
}

#[tokio::test]
async fn a_users_connection_past_the_cap_is_refused_with_its_code() {
    let server = Server::start_with(crate::HOST, Mode::Sequential, &["--max-user-connections", "3"]).await;
    let ada = server.add_user("ada").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(UserClient::connect(&server, &ada).await);
    }
    let ticket = server.ticket(&ada).await.ticket;
    assert_refused(
        UserClient::connect_with_ticket(&server, &ada, &ticket).await,
        429,
        ErrorCode::TooManyConnections,
        "a fourth socket of a user capped at three",
    );
    for user in &open {
        user.assert_usable("the refused fourth").await;
    }
    // Another user is not affected.
    let bob = server.add_user("bob").await;
    UserClient::connect(&server, &bob).await.assert_usable("ada's cap").await;

    // Closing one makes room (once its `$disconnect` has run).
    open.pop().expect("a socket").sock.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ticket = server.ticket(&ada).await.ticket;
        match UserClient::connect_with_ticket(&server, &ada, &ticket).await {
            Ok(user) => {
                user.assert_usable("a slot freed").await;
                break;
            }
            Err(r) if tokio::time::Instant::now() < deadline => {
                r.assert(429, ErrorCode::TooManyConnections, "while the closed socket ends");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(r) => panic!("no room after closing a socket: {r:?}"),
        }
    }
}

#[tokio::test]
async fn a_pending_worker_gets_one_socket() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let identity = pair(&server, "laptop", "/home/ada/project").await;
    let first = WorkerClient::connect(&server, &identity).await;
    assert_refused(
        WorkerClient::try_connect(&server, &identity).await,
        429,
        ErrorCode::TooManyConnections,
        "a second socket of a pending worker",
    );
    // The first is untouched: it still answers, as pending.
    let hello = first.hello(&[]).await;
    assert_eq!(hello.ok()["worker"]["status"], "pending", "{}", hello.raw);
    first.close().await;
    connect_worker_soon(&server, &identity)
        .await
        .assert_usable("the first closed")
        .await;
}

/// A SIGKILL leaves the records of the sockets it cut; a restarted host
/// forgets them (it serves the data alone), so they do not hold the caps.
#[tokio::test]
async fn after_a_crash_the_old_sockets_do_not_count() {
    let mut server = Server::start(crate::HOST, Mode::Sequential).await;
    let identity = pair(&server, "laptop", "/home/ada/project").await;
    let mut worker = WorkerClient::connect(&server, &identity).await;
    worker.hello(&[]).await;
    server.kill_and_restart().await;
    worker.wait_closed().await;
    drop(worker);
    let again = WorkerClient::try_connect(&server, &identity)
        .await
        .unwrap_or_else(|r| panic!("the pending worker is refused after a restart: {r:?}"));
    again.assert_usable("the restart").await;
}

#[tokio::test]
async fn one_address_holds_at_most_its_cap_of_websockets() {
    let server =
        Server::start_with(crate::HOST, Mode::Sequential, &["--max-connections-per-address", "4"]).await;
    // A user and a worker (two sockets), and two more of the user's.
    let pair = paired(&server, "ada").await;
    let account = pair.user.user.clone();
    let second = UserClient::connect(&server, &account).await;
    let third = UserClient::connect(&server, &account).await;

    // The fifth is refused before `$connect` runs: its ticket is not used.
    let ticket = server.ticket(&account).await.ticket;
    assert_refused(
        UserClient::connect_with_ticket(&server, &account, &ticket).await,
        429,
        ErrorCode::TooManyConnections,
        "a fifth socket from one address capped at four",
    );
    assert_refused(
        open_ws(server.addr, "/ws", None).await,
        429,
        ErrorCode::TooManyConnections,
        "an anonymous upgrade from a full address (refused before authentication)",
    );
    assert_refused(
        WorkerClient::try_connect(&server, &pair.worker.identity).await,
        429,
        ErrorCode::TooManyConnections,
        "a worker's socket from a full address",
    );
    for sock in [&pair.user.sock, &pair.worker.sock, &second.sock, &third.sock] {
        sock.assert_usable("the refusals").await;
    }

    // A closed socket gives its slot back; the unused ticket still works.
    third.sock.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let fourth = loop {
        match UserClient::connect_with_ticket(&server, &account, &ticket).await {
            Ok(user) => break user,
            Err(r) if tokio::time::Instant::now() < deadline => {
                r.assert(429, ErrorCode::TooManyConnections, "while the closed socket ends");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(r) => panic!("no slot after closing a socket: {r:?}"),
        }
    };
    fourth.assert_usable("a slot freed").await;
}

#[tokio::test]
async fn sessions_past_the_cap_are_refused_and_change_nothing() {
    let server = Server::start_with(crate::HOST, Mode::Sequential, &["--max-live-sessions", "2"]).await;
    let mut pair = paired(&server, "ada").await;
    let first = ready_session(&pair.user, &mut pair.worker).await;
    ready_session(&pair.user, &mut pair.worker).await;

    let third = SessionId::random();
    let worker_id = pair.worker.id().clone();
    let start = |session: &SessionId| Request::SessionStart {
        session_id: session.clone(),
        worker_id: worker_id.clone(),
        model: tether_testsupport::helpers::test_model(),
        title: None,
    };
    pair.user
        .call(start(&third))
        .await
        .expect_err(ErrorCode::TooManySessions);
    let sessions = pair.user.sessions().await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions.iter().all(|s| s.session_id != third));
    // The worker was sent nothing for it.
    let events = pair.worker.received_events().await;
    assert!(
        !events.iter().any(|e| matches!(e, ServerFrame::SessionStart { session_id, .. } if *session_id == third)),
        "{events:?}"
    );

    // Ending one makes room.
    pair.user
        .call(Request::SessionEnd { session_id: first })
        .await
        .ok();
    pair.user.call(start(&third)).await.ok();
    pair.user
        .call(start(&SessionId::random()))
        .await
        .expect_err(ErrorCode::TooManySessions);
}

#[tokio::test]
async fn queued_messages_past_the_cap_are_refused_and_change_nothing() {
    let server = Server::start_with(crate::HOST, Mode::Sequential, &["--max-open-messages", "2"]).await;
    let mut pair = paired(&server, "ada").await;
    let session = ready_session(&pair.user, &mut pair.worker).await;
    let identity = pair.worker.identity.clone();
    // The worker goes away: messages queue.
    pair.worker.close().await;

    let queued = [MessageId::random(), MessageId::random()];
    for (i, id) in queued.iter().enumerate() {
        let m = pair.user.send_message(&session, id, &format!("while away {i}")).await;
        assert_eq!(m.status, MessageStatus::Queued);
    }
    let refused = MessageId::random();
    let send = |id: &MessageId| Request::MessageSend {
        session_id: session.clone(),
        message_id: id.clone(),
        text: "one too many".into(),
        model: None,
    };
    pair.user.call(send(&refused)).await.expect_err(ErrorCode::QueueFull);
    let history = pair.user.history(&session).await;
    assert_eq!(history.messages.len(), 2, "{:?}", history.messages);
    assert_eq!(history.session.message_count, 2);

    // Stopping one makes room; the queue is then exactly what was accepted.
    pair.user
        .call(Request::MessageAbort { message_id: queued[0].clone() })
        .await
        .ok();
    let m = pair.user.call(send(&refused)).await.field::<tether_domain::protocol::MessageView>("message");
    assert_eq!(m.status, MessageStatus::Queued);
    pair.user
        .call(send(&MessageId::random()))
        .await
        .expect_err(ErrorCode::QueueFull);

    let mut worker = connect_worker_soon(&server, &identity).await;
    worker.hello(&[]).await;
    worker.dispatched(&queued[1]).await;
    worker.dispatched(&refused).await;
}
