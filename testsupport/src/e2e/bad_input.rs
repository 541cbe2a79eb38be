//! Scenario 9: bad input gets an error reply with its stable code, the
//! connection stays usable, and nothing stored changes; refused connections
//! get an HTTP status and no upgrade.

use serde_json::json;
use tether_domain::auth::Secret;
use tether_domain::ids::{MessageId, SessionId, WorkerId};
use tether_domain::model::{MessageStatus, WorkerStatus};
use tether_domain::protocol::{
    ClientFrame, HistoryPage, ModelInfo, Outcome, PairData, Request, ServerFrame, SessionView,
    WorkerView, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES,
};
use tether_domain::ErrorCode;

use crate::helpers::*;

/// What a user can read of its stored state (presence aside).
#[derive(Debug, PartialEq)]
struct Snapshot {
    sessions: Vec<SessionView>,
    history: HistoryPage,
    workers: Vec<(WorkerId, WorkerStatus, String, Vec<ModelInfo>)>,
}

async fn snapshot(user: &UserClient, session: &SessionId) -> Snapshot {
    Snapshot {
        sessions: user.sessions().await,
        history: user.history(session).await,
        workers: user
            .machines()
            .await
            .into_iter()
            .flat_map(|m| m.workers)
            .map(|w| (w.worker_id, w.status, w.name, w.models))
            .collect(),
    }
}

/// Sends `text` as one frame and checks the error code, the echoed id (when
/// the frame has a readable one) and that the connection still answers.
async fn refused(sock: &mut Socket, what: &str, text: String, id: Option<&str>, code: ErrorCode) {
    let reply = sock.raw(what, text, id).await;
    reply.expect_err(code);
    assert_eq!(
        reply.id.as_deref(),
        id,
        "{what}: the reply's id: {}",
        reply.raw
    );
    sock.assert_usable(what).await;
}

/// Sends a request and checks the error code and that the connection still answers.
async fn refused_request(sock: &Socket, what: &str, request: Request, code: ErrorCode) {
    let reply = sock.call(request).await;
    assert!(
        !reply.ok && reply.error.as_ref().map(|e| e.0.as_str()) == Some(code.as_str()),
        "{what}: expected `{}`, got {}",
        code.as_str(),
        reply.raw
    );
    sock.assert_usable(what).await;
}

/// Scenario 9a: malformed, unknown, ill-typed, oversized and misaddressed frames.
pub async fn bad_frames(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "heidi").await;
    let session = ready_session(&user, &mut worker).await;
    user.watch(&session, None).await;
    let (done, _) = exchange(&user, &mut worker, &session, "Hello", &["Hi", "!"]).await;
    user.follow_to_end(&done).await;
    let before = snapshot(&user, &session).await;
    user.drain_events().await;
    let s = session.as_str().to_owned();

    // Not JSON, not an object.
    refused(
        &mut user,
        "malformed JSON",
        r#"{"action":"ping","id":"raw-1""#.into(),
        None,
        ErrorCode::BadJson,
    )
    .await;
    refused(
        &mut user,
        "plain text",
        "hello there".into(),
        None,
        ErrorCode::BadJson,
    )
    .await;
    refused(
        &mut user,
        "a JSON array",
        r#"["ping"]"#.into(),
        None,
        ErrorCode::BadJson,
    )
    .await;
    refused(
        &mut worker,
        "malformed JSON (worker)",
        "{".into(),
        None,
        ErrorCode::BadJson,
    )
    .await;

    // Unknown or missing action.
    refused(
        &mut user,
        "an unknown action",
        json!({"action": "teleport", "id": "raw-2"}).to_string(),
        Some("raw-2"),
        ErrorCode::UnknownAction,
    )
    .await;
    refused(
        &mut user,
        "no action",
        json!({"id": "raw-3", "session_id": s}).to_string(),
        Some("raw-3"),
        ErrorCode::UnknownAction,
    )
    .await;
    refused(
        &mut worker,
        "a numeric action",
        json!({"action": 7, "id": "raw-4"}).to_string(),
        Some("raw-4"),
        ErrorCode::UnknownAction,
    )
    .await;

    // Missing and wrong-typed fields, and bad ids.
    refused(
        &mut user,
        "message_send without message_id and text",
        json!({"action": "message_send", "id": "raw-5", "session_id": s}).to_string(),
        Some("raw-5"),
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut user,
        "message_send with a numeric message_id",
        json!({"action": "message_send", "id": "raw-6", "session_id": s, "message_id": 42, "text": "hi"}).to_string(),
        Some("raw-6"),
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut user,
        "session_history with a string cursor",
        json!({"action": "session_history", "id": "raw-7", "session_id": s, "after": {"message": "zero", "seq": 0}}).to_string(),
        Some("raw-7"),
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut user,
        "message_send with a malformed message id",
        json!({"action": "message_send", "id": "raw-8", "session_id": s, "message_id": "has spaces", "text": "hi"}).to_string(),
        Some("raw-8"),
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut worker,
        "chunks with a string seq",
        json!({"action": "chunks", "id": "raw-9", "message_id": done.as_str(),
               "chunks": [{"seq": "one", "kind": "text", "part_id": "p", "delta": "x"}]})
        .to_string(),
        Some("raw-9"),
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut worker,
        "chunks with an unknown kind",
        json!({"action": "chunks", "id": "raw-10", "message_id": done.as_str(),
               "chunks": [{"seq": 9, "kind": "telepathy"}]})
        .to_string(),
        Some("raw-10"),
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut user,
        "a frame without id",
        json!({"action": "ping"}).to_string(),
        None,
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut user,
        "a numeric id",
        json!({"action": "ping", "id": 12}).to_string(),
        None,
        ErrorCode::BadRequest,
    )
    .await;
    refused(
        &mut user,
        "an id with spaces",
        json!({"action": "ping", "id": "not an id"}).to_string(),
        None,
        ErrorCode::BadRequest,
    )
    .await;
    refused_request(
        &user,
        "message_send with blank text",
        Request::MessageSend {
            session_id: session.clone(),
            message_id: MessageId::random(),
            text: "   ".into(),
            model: None,
        },
        ErrorCode::BadRequest,
    )
    .await;

    // A frame over 32 KB.
    let big_text = "x".repeat(MAX_FRAME_BYTES + 8 * 1024);
    let big = json!({"action": "message_send", "id": "raw-11", "session_id": s,
                     "message_id": "msg_too_big", "text": big_text})
    .to_string();
    let reply = user.raw("a 40 KB frame", big, Some("raw-11")).await;
    reply.expect_err(ErrorCode::FrameTooLarge);
    user.assert_usable("a 40 KB frame").await;

    // A message over 128 KB sent as fragments of 30 KB (each frame within the limit).
    let huge_text = "y".repeat(MAX_MESSAGE_BYTES + 12 * 1024);
    let huge = json!({"action": "message_send", "id": "raw-12", "session_id": s,
                      "message_id": "msg_too_huge", "text": huge_text})
    .to_string();
    let reply = user
        .raw_fragmented(
            "a 140 KB message in 30 KB fragments",
            huge,
            Some("raw-12"),
            30 * 1024,
        )
        .await;
    reply.expect_err(ErrorCode::MessageTooLarge);
    user.assert_usable("a 140 KB fragmented message").await;

    // A small message in fragments is one message.
    let ping = json!({"action": "ping", "id": "raw-13"}).to_string();
    let reply = user
        .raw_fragmented("a ping in 5-byte fragments", ping, Some("raw-13"), 5)
        .await;
    assert!(reply.ok, "a fragmented ping: {}", reply.raw);
    assert_eq!(reply.id.as_deref(), Some("raw-13"));

    // Ids that do not exist.
    let nobody_session = SessionId::random();
    let nobody_message = MessageId::random();
    let nobody_worker = WorkerId::random();
    for (what, request) in [
        (
            "session_watch",
            Request::SessionWatch {
                session_id: nobody_session.clone(),
                after: None,
            },
        ),
        (
            "session_history",
            Request::SessionHistory {
                session_id: nobody_session.clone(),
                after: None,
            },
        ),
        (
            "message_send",
            Request::MessageSend {
                session_id: nobody_session.clone(),
                message_id: MessageId::random(),
                text: "hello?".into(),
                model: None,
            },
        ),
        (
            "message_abort",
            Request::MessageAbort {
                message_id: nobody_message.clone(),
            },
        ),
        (
            "worker_revoke",
            Request::WorkerRevoke {
                worker_id: nobody_worker.clone(),
            },
        ),
        (
            "session_start",
            Request::SessionStart {
                session_id: SessionId::random(),
                worker_id: nobody_worker.clone(),
                model: test_model(),
                title: None,
            },
        ),
        (
            "pairing_lookup",
            Request::PairingLookup {
                code: "ABCD-EFGH".into(),
            },
        ),
    ] {
        refused_request(
            &user,
            &format!("user {what} of an unknown id"),
            request,
            ErrorCode::NotFound,
        )
        .await;
    }
    for (what, request) in [
        (
            "message_started",
            Request::MessageStarted {
                message_id: nobody_message.clone(),
            },
        ),
        (
            "chunks",
            WorkerClient::chunks_request(&nobody_message, &[(0, "x")]),
        ),
        (
            "message_complete",
            WorkerClient::complete_request(&nobody_message, Outcome::Complete, 0),
        ),
        (
            "session_ready",
            Request::SessionReady {
                session_id: nobody_session.clone(),
                agent_session_id: "agent".into(),
            },
        ),
    ] {
        refused_request(
            &worker,
            &format!("worker {what} of an unknown id"),
            request,
            ErrorCode::NotFound,
        )
        .await;
    }

    // Each role keeps to its actions.
    refused_request(
        &user,
        "a user sending chunks",
        WorkerClient::chunks_request(&done, &[(5, "forged")]),
        ErrorCode::Forbidden,
    )
    .await;
    refused_request(
        &user,
        "a user completing a message",
        WorkerClient::complete_request(&done, Outcome::Failed, 9),
        ErrorCode::Forbidden,
    )
    .await;
    refused_request(
        &worker,
        "a worker starting a session",
        Request::SessionStart {
            session_id: SessionId::random(),
            worker_id: worker.id().clone(),
            model: test_model(),
            title: None,
        },
        ErrorCode::Forbidden,
    )
    .await;
    refused_request(
        &worker,
        "a worker sending a message",
        Request::MessageSend {
            session_id: session.clone(),
            message_id: MessageId::random(),
            text: "from the worker".into(),
            model: None,
        },
        ErrorCode::Forbidden,
    )
    .await;

    // Nothing changed, and nothing was announced.
    let after = snapshot(&user, &session).await;
    assert_eq!(after, before, "bad input changed stored state");
    let events = user.received_events().await;
    let changes: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ServerFrame::MessageUpdated { .. }
                    | ServerFrame::Chunks { .. }
                    | ServerFrame::SessionUpdated { .. }
            )
        })
        .collect();
    assert!(changes.is_empty(), "bad input caused pushes: {changes:?}");
}

/// Scenario 9b: the rules of an answer: no chunk beyond a final count, one
/// completion (identical retries are fine), duplicates acknowledged once,
/// chunks out of order stored in order, a fragmented message over 32 KB.
pub async fn answer_rules(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "ivan").await;
    let session = ready_session(&user, &mut worker).await;
    user.watch(&session, None).await;
    let (done, done_text) = exchange(&user, &mut worker, &session, "abc", &["a", "b", "c"]).await;
    user.follow_to_end(&done).await;

    refused_request(
        &worker,
        "a chunk beyond the count of a complete answer",
        WorkerClient::chunks_request(&done, &[(3, "d")]),
        ErrorCode::MessageFinal,
    )
    .await;
    refused_request(
        &worker,
        "chunks straddling the count of a complete answer",
        WorkerClient::chunks_request(&done, &[(2, "c"), (7, "h")]),
        ErrorCode::MessageFinal,
    )
    .await;
    let ack = worker.chunks(&done, &[(1, "b")]).await;
    assert_eq!(
        (ack.stored.clone(), ack.duplicate.clone()),
        (vec![], vec![1]),
        "a late retry within the count: {ack:?}"
    );

    refused_request(
        &worker,
        "a second completion with another outcome",
        WorkerClient::complete_request(&done, Outcome::Failed, 3),
        ErrorCode::AlreadyComplete,
    )
    .await;
    refused_request(
        &worker,
        "a second completion with another count",
        WorkerClient::complete_request(&done, Outcome::Complete, 4),
        ErrorCode::AlreadyComplete,
    )
    .await;
    let retry = worker
        .call(WorkerClient::complete_request(&done, Outcome::Complete, 3))
        .await;
    let retried: tether_domain::protocol::MessageView = retry.field("message");
    assert_eq!(retried.status, MessageStatus::Complete);
    assert_eq!(retried.chunk_count, Some(3));

    let history = user.history(&session).await;
    assert_eq!(seqs_of(&history.chunks, &done), vec![0, 1, 2]);
    assert_eq!(answer_text(&history.chunks, &done), done_text);
    assert_eq!(done_text, "abc");
    assert_eq!(history.messages[0].status, MessageStatus::Complete);
    assert_eq!(history.messages[0].chunk_count, Some(3));

    // Duplicates and order.
    let message = MessageId::random();
    user.send_message(&session, &message, "out of order").await;
    worker.dispatched(&message).await;
    worker.started(&message).await;
    let ack = worker.chunks(&message, &[(0, "zero ")]).await;
    assert_eq!(ack.stored, vec![0]);
    let ack = worker.chunks(&message, &[(0, "zero ")]).await;
    assert_eq!(
        (ack.stored.clone(), ack.duplicate.clone()),
        (vec![], vec![0]),
        "a duplicate chunk: {ack:?}"
    );
    let ack = worker.chunks(&message, &[(2, "two ")]).await;
    assert_eq!(ack.stored, vec![2], "seq 2 before seq 1");
    let ack = worker.chunks(&message, &[(1, "one ")]).await;
    assert_eq!(ack.stored, vec![1], "seq 1 after seq 2");
    refused_request(
        &worker,
        "one seq twice in a frame",
        WorkerClient::chunks_request(&message, &[(3, "x"), (3, "y")]),
        ErrorCode::BadRequest,
    )
    .await;

    // A valid 40 KB message, sent as three fragments, each under 32 KB.
    let big_a = "A".repeat(20 * 1024);
    let big_b = "B".repeat(20 * 1024);
    let frame = ClientFrame {
        id: tether_domain::ids::RequestId::parse("raw-frag-chunks").expect("an id"),
        request: WorkerClient::chunks_request(&message, &[(3, &big_a), (4, &big_b)]),
    };
    let text = frame.to_json();
    assert!(
        text.len() > MAX_FRAME_BYTES,
        "the message is over one frame's limit"
    );
    let reply = worker
        .raw_fragmented(
            "a 40 KB chunks message in 15 KB fragments",
            text,
            Some("raw-frag-chunks"),
            15 * 1024,
        )
        .await;
    let ack: tether_domain::protocol::ChunksAck = reply.data_as();
    assert_eq!(
        ack.stored,
        vec![3, 4],
        "the fragmented message was handled whole: {}",
        reply.raw
    );

    // Its completion carries no text (the host has the chunks): a small
    // frame, fragmented all the same, which the gateway reassembles too.
    let full = format!("zero one two {big_a}{big_b}");
    let frame = ClientFrame {
        id: tether_domain::ids::RequestId::parse("raw-frag-complete").expect("an id"),
        request: WorkerClient::complete_request(&message, Outcome::Complete, 5),
    };
    let text = frame.to_json();
    assert!(text.len() < 1024, "a completion is small: {text}");
    let reply = worker
        .raw_fragmented(
            "a message_complete in 32-byte fragments",
            text,
            Some("raw-frag-complete"),
            32,
        )
        .await;
    let completed: tether_domain::protocol::MessageView = reply.field("message");
    assert_eq!(completed.status, MessageStatus::Complete);
    assert_eq!(completed.chunk_count, Some(5));
    let followed = user.follow_to_end(&message).await;
    let mut seqs = followed.seqs();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        vec![0, 1, 2, 3, 4],
        "each stored chunk pushed once, duplicates not at all"
    );
    assert_eq!(
        followed.last.map(|m| m.status),
        Some(MessageStatus::Complete)
    );

    let history = user.history(&session).await;
    assert_eq!(
        seqs_of(&history.chunks, &message),
        vec![0, 1, 2, 3, 4],
        "history in seq order, once each"
    );
    assert_eq!(answer_text(&history.chunks, &message), full);
}

/// Scenario 9c: who may not connect or act: a pending worker, a revoked worker,
/// reused and expired tickets, unknown credentials.
pub async fn refused_connections(host: Host, mode: Mode) {
    // A second server whose tickets live one second; its ticket is taken
    // first so the wait for its expiry overlaps the rest.
    let short = Server::start_with(host, mode, &["--ticket-ttl-secs", "1"]).await;
    let judy = short.add_user("judy").await;
    let asked_at = now_millis();
    let expiring = short.ticket(&judy).await;
    assert!(
        expiring.expires_at - asked_at <= 1_500,
        "--ticket-ttl-secs 1 gives a ticket that expires within a second: {expiring:?}, asked at {asked_at}"
    );

    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "kate").await;
    let session = ready_session(&user, &mut worker).await;
    let message = MessageId::random();
    user.send_message(&session, &message, "hello").await;
    worker.dispatched(&message).await;
    worker.started(&message).await;

    // A pending worker may say hello and ping, nothing more.
    let stranger = pair(&server, "stranger", "/tmp/elsewhere").await;
    let pending = WorkerClient::connect(&server, &stranger).await;
    let hello: WorkerView = pending.hello(&[]).await.field("worker");
    assert_eq!(hello.status, WorkerStatus::Pending);
    refused_request(
        &pending,
        "a pending worker sending chunks",
        WorkerClient::chunks_request(&message, &[(0, "sneaky")]),
        ErrorCode::WorkerNotApproved,
    )
    .await;
    refused_request(
        &pending,
        "a pending worker readying a session",
        Request::SessionReady {
            session_id: session.clone(),
            agent_session_id: "agent".into(),
        },
        ErrorCode::WorkerNotApproved,
    )
    .await;
    refused_request(
        &pending,
        "a pending worker completing a message",
        WorkerClient::complete_request(&message, Outcome::Complete, 0),
        ErrorCode::WorkerNotApproved,
    )
    .await;
    let history = user.history(&session).await;
    assert!(
        history.chunks.is_empty(),
        "nothing stored from a pending worker: {:?}",
        history.chunks
    );
    assert_eq!(history.messages[0].status, MessageStatus::Streaming);

    // A rejected worker is disconnected and may not come back.
    let mut pending = pending;
    user.call(Request::PairingReject {
        code: stranger.code.clone().expect("a code"),
    })
    .await
    .ok();
    pending
        .next_event("pairing_status rejected", |e| {
            matches!(
                e,
                ServerFrame::PairingStatus {
                    status: WorkerStatus::Rejected,
                    ..
                }
            )
        })
        .await;
    pending.wait_closed().await;
    let again = WorkerClient::try_connect(&server, &stranger).await;
    assert_refused(
        again,
        403,
        ErrorCode::WorkerNotApproved,
        "a rejected worker reconnecting",
    );

    // A revoked worker is disconnected and refused with 403.
    let wid = worker.id().clone();
    let identity = worker.identity.clone();
    let revoked: WorkerView = user
        .call(Request::WorkerRevoke {
            worker_id: wid.clone(),
        })
        .await
        .field("worker");
    assert_eq!(revoked.status, WorkerStatus::Revoked);
    worker
        .next_event("pairing_status revoked", |e| {
            matches!(
                e,
                ServerFrame::PairingStatus {
                    status: WorkerStatus::Revoked,
                    ..
                }
            )
        })
        .await;
    worker.wait_closed().await;
    user.worker_updated(&wid, "revoked and offline", |w| {
        w.status == WorkerStatus::Revoked && !w.online
    })
    .await;
    let again = WorkerClient::try_connect(&server, &identity).await;
    assert_refused(
        again,
        403,
        ErrorCode::WorkerNotApproved,
        "a revoked worker reconnecting",
    );
    let paired_again = http_post(
        server.addr,
        "/api/pair",
        Some(&identity.credential),
        Some(&json!({"machine": identity.machine, "workdir": identity.workdir})),
    )
    .await;
    assert_eq!(
        paired_again.status, 200,
        "POST /api/pair with a revoked credential: {paired_again:?}"
    );
    let paired_again: PairData = paired_again.parse();
    assert_eq!(paired_again.status, WorkerStatus::Revoked);
    assert_eq!(paired_again.code, None);
    refused_request(
        &user,
        "a session on a revoked worker",
        Request::SessionStart {
            session_id: SessionId::random(),
            worker_id: wid.clone(),
            model: test_model(),
            title: None,
        },
        ErrorCode::WorkerNotApproved,
    )
    .await;
    refused_request(
        &user,
        "a message to a revoked worker's session",
        Request::MessageSend {
            session_id: session.clone(),
            message_id: MessageId::random(),
            text: "anyone?".into(),
            model: None,
        },
        ErrorCode::WorkerNotApproved,
    )
    .await;
    let view = user.worker_view(&wid).await;
    assert_eq!(view.status, WorkerStatus::Revoked);
    assert!(!view.online);

    // Tickets are single use.
    let account = user.user.clone();
    let ticket = server.ticket(&account).await;
    let first = UserClient::connect_with_ticket(&server, &account, &ticket.ticket).await;
    let first = first.unwrap_or_else(|r| panic!("a fresh ticket was refused: {r:?}"));
    first.assert_usable("connecting with a fresh ticket").await;
    let reused = UserClient::connect_with_ticket(&server, &account, &ticket.ticket).await;
    assert_refused(reused, 401, ErrorCode::Unauthorized, "a reused ticket");

    // Unknown or missing credentials.
    let none = open_ws(server.addr, "/ws", None).await;
    assert_refused(
        none,
        401,
        ErrorCode::Unauthorized,
        "no ticket and no credential",
    );
    let bogus = open_ws(server.addr, "/ws?ticket=ttk_not-a-real-ticket", None).await;
    assert_refused(bogus, 401, ErrorCode::Unauthorized, "an unknown ticket");
    let unknown = Secret::generate("twk_");
    let stranger_bearer = open_ws(server.addr, "/ws", Some(unknown.expose())).await;
    assert_refused(
        stranger_bearer,
        401,
        ErrorCode::Unauthorized,
        "an unknown worker credential",
    );
    let no_secret = http_post(server.addr, "/api/ticket", None, None).await;
    assert_eq!(
        no_secret.status, 401,
        "POST /api/ticket without a secret: {no_secret:?}"
    );
    let bad_secret = http_post(server.addr, "/api/ticket", Some("tsk_wrong"), None).await;
    assert_eq!(
        bad_secret.status, 401,
        "POST /api/ticket with a wrong secret: {bad_secret:?}"
    );
    let short_credential = http_post(
        server.addr,
        "/api/pair",
        Some("too-short"),
        Some(&json!({"machine": "m", "workdir": "/w"})),
    )
    .await;
    assert_eq!(
        short_credential.status, 400,
        "POST /api/pair with a short credential: {short_credential:?}"
    );

    // The one-second ticket, once expired, is refused; a fresh one works.
    let left = (expiring.expires_at - now_millis()).max(0) as u64;
    tokio::time::sleep(std::time::Duration::from_millis(left + 300)).await;
    let expired = UserClient::connect_with_ticket(&short, &judy, &expiring.ticket).await;
    assert_refused(expired, 401, ErrorCode::Unauthorized, "an expired ticket");
    let fresh = UserClient::connect(&short, &judy).await;
    fresh.assert_usable("connecting with a fresh ticket").await;
}

/// Scenario 10b: pairing is bounded. A user's pairing attempts (code
/// look-ups, approvals, rejections, tokens minted) are limited per minute,
/// refused with `rate_limited` saying when to retry, counted in the store
/// (so across every Lambda on AWS); another user is not affected. One
/// source address may have 3 workers waiting for approval; a fourth gets
/// 429 `too_many_pending`, another address is free, and an address a
/// client writes into `X-Forwarded-For` itself does not count.
pub async fn pairing_limits(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let ada_account = server.add_user("ada").await;
    let ada = UserClient::connect(&server, &ada_account).await;
    // Codes nobody holds. The limit is per fixed minute: should the
    // attempts straddle a minute's end, a few more get through first.
    let mut allowed = 0;
    let refused = loop {
        let guess = format!("ZZZZ-{:04}", 2222 + allowed).replace(['0', '1'], "Z");
        let reply = ada.call(Request::PairingLookup { code: guess }).await;
        match &reply.error {
            Some((code, _)) if code == ErrorCode::NotFound.as_str() => allowed += 1,
            _ => break reply,
        }
        assert!(allowed <= 20, "no limit after {allowed} look-ups");
    };
    refused.expect_err(ErrorCode::RateLimited);
    let message = &refused.error.as_ref().expect("error").1;
    assert!(message.contains("try again in"), "says when: {message}");
    assert!(allowed >= 10, "10 a minute are allowed, {allowed} were");
    ada.call(Request::PairingTokenCreate {})
        .await
        .expect_err(ErrorCode::RateLimited);
    let bob_account = server.add_user("bob").await;
    let bob = UserClient::connect(&server, &bob_account).await;
    bob.call(Request::PairingLookup {
        code: "ZZZZ-ZZZZ".into(),
    })
    .await
    .expect_err(ErrorCode::NotFound);

    // Workers asking to pair, as a proxy on the host's machine forwards
    // them: the last X-Forwarded-For entry is the proxy's own hop.
    let body = json!({"machine": "m", "workdir": "/w"});
    let ask = |from: &'static str| {
        let credential = Secret::generate("twk_").expose().to_owned();
        let body = body.clone();
        let addr = server.addr;
        async move {
            http_post_with(addr, "/api/pair", Some(&credential), Some(&body), &[("X-Forwarded-For", from)]).await
        }
    };
    for i in 0..3 {
        let res = ask("203.0.113.7").await;
        assert_eq!(res.status, 200, "pending worker {i}: {res:?}");
    }
    let fourth = ask("203.0.113.7").await;
    assert_eq!(fourth.status, 429, "a fourth from one address: {fourth:?}");
    assert_eq!(fourth.json()["code"], "too_many_pending");
    let forged = ask("198.51.100.9, 203.0.113.7").await;
    assert_eq!(forged.status, 429, "a made-up earlier entry does not help: {forged:?}");
    let elsewhere = ask("198.51.100.9").await;
    assert_eq!(elsewhere.status, 200, "another address: {elsewhere:?}");
}
