//! Scenarios 5, 6 and 8: a user catching up after a reconnect, a worker
//! re-sending what was never acknowledged, and a server killed mid-answer.

use std::collections::BTreeMap;

use tether_domain::ids::MessageId;
use tether_domain::model::{MessageStatus, SessionStatus, WorkerStatus};
use tether_domain::protocol::{ChunkView, Cursor, HistoryPage};

use crate::helpers::*;

fn deltas(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("piece-{i} ")).collect()
}

/// Scenario 5: the user loses its connection mid-answer, the worker goes on, the user
/// reconnects and watches from its cursor: page plus live events give every
/// seq, without a gap.
pub async fn user_reconnect_catch_up(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "erin").await;
    let session = ready_session(&user, &mut worker).await;
    user.watch(&session, None).await;

    let message = MessageId::random();
    user.send_message(&session, &message, "Tell me a long story")
        .await;
    worker.dispatched(&message).await;
    worker.started(&message).await;
    let d = deltas(12);
    let frame = |from: u32, to: u32| {
        WorkerClient::chunks_request(
            &message,
            &(from..to)
                .map(|s| (s, d[s as usize].as_str()))
                .collect::<Vec<_>>(),
        )
    };

    // Seqs 0..4 in two pipelined frames; the user sees them.
    let a = worker.send(frame(0, 2)).await;
    let b = worker.send(frame(2, 4)).await;
    a.get().await.ok();
    b.get().await.ok();
    let before = user.chunks_until(&message, 0..4).await;

    // The user's connection is lost; the worker streams on.
    let account = user.user.clone();
    user.drop_abruptly().await;
    let a = worker.send(frame(4, 6)).await;
    let b = worker.send(frame(6, 8)).await;
    a.get().await.ok();
    b.get().await.ok();

    // Back, from the first seq it does not have, while the worker keeps going.
    let mut user = UserClient::connect(&server, &account).await;
    let mut first_missing = 0;
    while before.iter().any(|c| c.seq == first_missing) {
        first_missing += 1;
    }
    assert_eq!(first_missing, 4, "the user had seqs 0..4 before it left");
    let cursor = Cursor {
        message: 0,
        seq: first_missing,
    };
    let (page, ()) = tokio::join!(user.watch(&session, Some(cursor)), async {
        let a = worker.send(frame(8, 10)).await;
        let b = worker.send(frame(10, 12)).await;
        a.get().await.ok();
        b.get().await.ok();
    });
    check_page_from(&page, &message, cursor);
    assert_eq!(
        page.messages.first().map(|m| m.status),
        Some(MessageStatus::Streaming)
    );

    let full: String = d.concat();
    worker.complete(&message, 12).await;
    let live = user.follow_to_end(&message).await;
    assert_eq!(
        live.last.as_ref().map(|m| m.status),
        Some(MessageStatus::Complete)
    );
    assert!(
        live.chunks.iter().all(|c| c.seq >= 8),
        "live events after the watch carry only chunks stored after it (8..12), got seqs {:?}",
        live.seqs()
    );
    let mut live_seqs = live.seqs();
    live_seqs.sort_unstable();
    live_seqs.dedup();
    assert_eq!(
        live_seqs.len(),
        live.chunks.len(),
        "no chunk pushed twice: {:?}",
        live.seqs()
    );

    let mut all: BTreeMap<u32, ChunkView> = BTreeMap::new();
    for c in before.iter().chain(&page.chunks).chain(&live.chunks) {
        assert_eq!(c.message_id, message);
        if let Some(seen) = all.insert(c.seq, c.clone()) {
            assert_eq!(&seen, c, "two versions of seq {}", c.seq);
        }
    }
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>(),
        "before + page + live, deduplicated, cover every seq (page seqs {:?}, live seqs {:?})",
        page.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
        live.seqs()
    );
    let text: String = all
        .values()
        .map(|c| match &c.body {
            tether_domain::protocol::ChunkBody::Text { delta, .. } => delta.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(text, full);
}

/// A page read from `cursor` starts at it: nothing before it, no seq twice,
/// in (message, seq) order.
fn check_page_from(page: &HistoryPage, message: &MessageId, cursor: Cursor) {
    let numbers: BTreeMap<MessageId, u32> = page
        .messages
        .iter()
        .map(|m| (m.message_id.clone(), m.number))
        .collect();
    assert!(
        page.messages.iter().all(|m| m.number >= cursor.message),
        "the page starts at message {}: {:?}",
        cursor.message,
        page.messages
    );
    let keys: Vec<(u32, u32)> = page
        .chunks
        .iter()
        .map(|c| {
            let n = *numbers
                .get(&c.message_id)
                .unwrap_or_else(|| panic!("page chunk of a message not in the page: {c:?}"));
            (n, c.seq)
        })
        .collect();
    assert!(
        keys.iter().all(|k| *k >= (cursor.message, cursor.seq)),
        "the page holds no chunk before the cursor {cursor:?}: {keys:?}"
    );
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "page chunks in order, once each: {keys:?}"
    );
    assert!(
        page.chunks
            .iter()
            .any(|c| &c.message_id == message && c.seq == cursor.seq),
        "the page starts with the chunk at the cursor {cursor:?}: {keys:?}"
    );
}

/// Scenario 6: the worker loses its connection before reading some acks, reconnects
/// and re-sends from the first unacknowledged seq: those already stored come
/// back as duplicates, and every chunk is stored once.
pub async fn worker_reconnect_resends_unacked(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "frank").await;
    let session = ready_session(&user, &mut worker).await;
    user.watch(&session, None).await;

    let message = MessageId::random();
    user.send_message(&session, &message, "Count to nine").await;
    worker.dispatched(&message).await;
    worker.started(&message).await;
    let d = deltas(9);
    let ack = worker
        .chunks(&message, &[(0, &d[0]), (1, &d[1]), (2, &d[2])])
        .await;
    assert_eq!(ack.stored, vec![0, 1, 2]);

    // Seqs 3, 4, 5 go out in three frames whose replies are never read.
    for s in 3..6u32 {
        let _unread = worker
            .send(WorkerClient::chunks_request(
                &message,
                &[(s, d[s as usize].as_str())],
            ))
            .await;
    }
    // They are stored (the watcher sees them); then the connection is lost.
    user.chunks_until(&message, 0..6).await;
    let identity = worker.identity.clone();
    worker.drop_abruptly().await;

    let worker = WorkerClient::connect(&server, &identity).await;
    let hello = worker.hello(std::slice::from_ref(&message)).await;
    hello.ok();
    let resend: Vec<(u32, &str)> = (3..9u32).map(|s| (s, d[s as usize].as_str())).collect();
    let ack = worker.chunks(&message, &resend).await;
    let (mut stored, mut duplicate) = (ack.stored.clone(), ack.duplicate.clone());
    stored.sort_unstable();
    duplicate.sort_unstable();
    assert_eq!(
        duplicate,
        vec![3, 4, 5],
        "re-sent seqs already stored are duplicates: {ack:?}"
    );
    assert_eq!(stored, vec![6, 7, 8], "new seqs are stored: {ack:?}");

    let full: String = d.concat();
    let done = worker.complete(&message, 9).await;
    assert_eq!(done.status, MessageStatus::Complete);
    let followed = user.follow_to_end(&message).await;
    assert!(
        !followed.statuses.contains(&MessageStatus::Failed),
        "a worker that lists the message as active keeps it: {:?}",
        followed.statuses
    );
    assert_eq!(
        followed.last.map(|m| m.status),
        Some(MessageStatus::Complete)
    );

    let history = user.history(&session).await;
    assert_eq!(
        seqs_of(&history.chunks, &message),
        (0..9).collect::<Vec<_>>(),
        "each seq stored once"
    );
    assert_eq!(answer_text(&history.chunks, &message), full);
    assert_eq!(history.messages[0].status, MessageStatus::Complete);
    assert_eq!(history.messages[0].chunk_count, Some(9));
    // The old connection's end did not take the new one's presence.
    let view = user.worker_view(worker.id()).await;
    assert!(view.online, "the reconnected worker is online: {view:?}");
}

/// Scenario 8: the server is killed (SIGKILL) with one answer complete and another
/// mid-stream; restarted on the same data, everything acknowledged is there
/// and the worker finishes the answer.
pub async fn sigkill_and_restart(host: Host, mode: Mode) {
    let mut server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "grace").await;
    let session = ready_session(&user, &mut worker).await;
    user.watch(&session, None).await;

    let (first, first_text) = exchange(
        &user,
        &mut worker,
        &session,
        "First",
        &["One, ", "two, ", "three."],
    )
    .await;
    user.follow_to_end(&first).await;

    let second = MessageId::random();
    user.send_message(&session, &second, "Second").await;
    worker.dispatched(&second).await;
    worker.started(&second).await;
    let d = deltas(6);
    assert_eq!(
        worker
            .chunks(&second, &[(0, &d[0]), (1, &d[1])])
            .await
            .stored,
        vec![0, 1]
    );
    assert_eq!(
        worker
            .chunks(&second, &[(2, &d[2]), (3, &d[3])])
            .await
            .stored,
        vec![2, 3]
    );
    user.chunks_until(&second, 0..4).await;

    let account = user.user.clone();
    let identity = worker.identity.clone();
    server.kill_and_restart().await;
    user.wait_closed().await;
    worker.wait_closed().await;
    drop(user);
    drop(worker);

    // Both come back with what they had: a credential and a secret.
    let worker = WorkerClient::connect(&server, &identity).await;
    let hello = worker.hello(std::slice::from_ref(&second)).await;
    assert_eq!(
        hello
            .field::<tether_domain::protocol::WorkerView>("worker")
            .status,
        WorkerStatus::Approved
    );
    let mut user = UserClient::connect(&server, &account).await;

    let sessions = user.sessions().await;
    assert_eq!(sessions.len(), 1, "the session survived: {sessions:?}");
    assert_eq!(sessions[0].session_id, session);
    assert_eq!(sessions[0].message_count, 2);
    assert_eq!(sessions[0].status, SessionStatus::Busy);
    let view = user.worker_view(worker.id()).await;
    assert!(
        view.online && view.status == WorkerStatus::Approved,
        "{view:?}"
    );

    let page = user.watch(&session, None).await;
    assert_eq!(page.messages.len(), 2, "{:?}", page.messages);
    let (m1, m2) = (&page.messages[0], &page.messages[1]);
    assert_eq!(
        (m1.message_id.clone(), m1.status),
        (first.clone(), MessageStatus::Complete)
    );
    assert_eq!(m1.chunk_count, Some(3));
    assert_eq!(
        (m2.message_id.clone(), m2.status),
        (second.clone(), MessageStatus::Streaming)
    );
    assert_eq!(seqs_of(&page.chunks, &first), vec![0, 1, 2]);
    assert_eq!(answer_text(&page.chunks, &first), first_text);
    assert_eq!(
        seqs_of(&page.chunks, &second),
        vec![0, 1, 2, 3],
        "every acknowledged chunk survived"
    );
    assert_eq!(answer_text(&page.chunks, &second), d[..4].concat());

    // The worker finishes; the user sees it.
    let ack = worker.chunks(&second, &[(4, &d[4]), (5, &d[5])]).await;
    assert_eq!(ack.stored, vec![4, 5]);
    let full: String = d.concat();
    worker.complete(&second, 6).await;
    let followed = user.follow_to_end(&second).await;
    assert_eq!(followed.seqs(), vec![4, 5]);
    assert_eq!(
        followed.last.map(|m| m.status),
        Some(MessageStatus::Complete)
    );

    let history = user.history(&session).await;
    assert_eq!(
        seqs_of(&history.chunks, &second),
        (0..6).collect::<Vec<_>>()
    );
    assert_eq!(answer_text(&history.chunks, &second), full);
    assert_eq!(history.session.status, SessionStatus::Ready);
}

/// A worker gone for good mid-answer (killed, its machine off): aborting
/// one of its answers ends it at once, as does ending another's session;
/// the lease ends the third; the sessions take messages again, and when
/// the worker does come back it is told to stop all three and may add
/// nothing to them.
pub async fn worker_gone_for_good(host: Host, mode: Mode) {
    use tether_domain::protocol::{MessageView, Request, ServerFrame};
    use tether_domain::ErrorCode;
    let server = Server::start_with(host, mode, &["--worker-lease-secs", "1"]).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "gwen").await;
    let first = ready_session(&user, &mut worker).await;
    let second = ready_session(&user, &mut worker).await;
    let third = ready_session(&user, &mut worker).await;
    user.watch(&first, None).await;
    user.watch(&second, None).await;
    let (m1, m2, m4) = (MessageId::random(), MessageId::random(), MessageId::random());
    let d = deltas(4);
    for (session, message) in [(&first, &m1), (&second, &m2), (&third, &m4)] {
        user.send_message(session, message, "Answer slowly").await;
        worker.dispatched(message).await;
        worker.started(message).await;
        let ack = worker.chunks(message, &[(0, &d[0]), (1, &d[1])]).await;
        assert_eq!(ack.stored, vec![0, 1]);
    }
    let identity = worker.identity.clone();
    let id = worker.id().clone();
    worker.drop_abruptly().await;
    user.worker_updated(&id, "offline", |w| !w.online).await;

    // Nobody is there to stop the first answer: the abort ends it here.
    let aborted: MessageView = user
        .call(Request::MessageAbort {
            message_id: m1.clone(),
        })
        .await
        .field("message");
    assert_eq!(aborted.status, MessageStatus::Aborted, "{aborted:?}");
    let history = user.history(&first).await;
    assert_eq!(history.session.status, SessionStatus::Ready, "{:?}", history.session);
    assert_eq!(
        answer_text(&history.chunks, &m1),
        d[..2].concat(),
        "the chunks it had are kept"
    );

    // Ending a session ends its running answer too.
    user.call(Request::SessionEnd {
        session_id: third.clone(),
    })
    .await
    .ok();
    let history = user.history(&third).await;
    assert_eq!(history.session.status, SessionStatus::Ended);
    assert_eq!(history.messages[0].status, MessageStatus::Aborted, "{:?}", history.messages[0]);

    // The second is left alone: past the lease (time itself is awaited
    // here), the next look at the session ends it.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let listed = user.sessions().await;
    let view = listed
        .iter()
        .find(|s| s.session_id == second)
        .expect("the session is listed");
    assert_eq!(view.status, SessionStatus::Ready, "session_list applies the lease: {view:?}");
    let history = user.history(&second).await;
    let ended = &history.messages[0];
    assert_eq!(ended.status, MessageStatus::Failed, "{ended:?}");
    assert!(
        ended.error.as_deref().is_some_and(|e| e.contains("went away")),
        "says why: {ended:?}"
    );
    assert_eq!(answer_text(&history.chunks, &m2), d[..2].concat());
    let m = m2.clone();
    user.next_event("message_updated (failed)", |e| {
        matches!(e, ServerFrame::MessageUpdated { message } if message.message_id == m && message.status == MessageStatus::Failed)
    })
    .await;

    // The session takes a new message, queued for the worker's return.
    let m3 = MessageId::random();
    let queued = user.send_message(&second, &m3, "Are you back?").await;
    assert_eq!(queued.status, MessageStatus::Queued);

    // Back, still running both: it is told to stop them, what it still
    // sends of them is refused, and the new message reaches it.
    let mut worker = WorkerClient::connect(&server, &identity).await;
    let hello = worker.hello(&[m1.clone(), m2.clone(), m4.clone()]).await;
    // The host says how often it wants chunk frames (the local default).
    assert_eq!(hello.ok()["frame_interval_ms"], 25, "{:?}", hello.ok());
    for m in [&m1, &m2, &m4] {
        worker
            .next_event(&format!("message_abort of {m}"), |e| {
                matches!(e, ServerFrame::MessageAbort { message_id, .. } if message_id == m)
            })
            .await;
    }
    worker
        .send(WorkerClient::chunks_request(&m2, &[(2, &d[2])]))
        .await
        .get()
        .await
        .expect_err(ErrorCode::MessageFinal);
    worker.dispatched(&m3).await;
}
