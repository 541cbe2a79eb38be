//! Scenarios 3 and 4: the chat flow, and messages queued for an offline worker.

use tether_domain::ids::{MessageId, SessionId};
use tether_domain::model::{MessageStatus, SessionStatus};
use tether_domain::protocol::{ChunkView, Request, ServerFrame, SessionView};
use tether_domain::ErrorCode;

use crate::helpers::*;

/// One message answered in full, checking every step on both sides.
async fn answer_checked(
    user: &mut UserClient,
    worker: &mut WorkerClient,
    session: &SessionId,
    number: u32,
    text: &str,
    frames: &[&[&str]],
) -> (MessageId, String, Vec<ChunkView>) {
    let message = MessageId::random();
    let sent = user.send_message(session, &message, text).await;
    assert_eq!(sent.message_id, message);
    assert_eq!(sent.number, number);
    assert_eq!(
        sent.status,
        MessageStatus::Dispatched,
        "the worker is online: {sent:?}"
    );

    match worker.dispatched(&message).await {
        ServerFrame::MessageDispatch {
            session_id,
            agent_session_id,
            number: n,
            text: t,
            model,
            ..
        } => {
            assert_eq!(session_id, *session);
            assert_eq!(
                agent_session_id.as_deref(),
                Some(format!("agent-{session}").as_str())
            );
            assert_eq!(n, number);
            assert_eq!(t, text);
            assert_eq!(model, test_model());
        }
        _ => unreachable!(),
    }
    let started = worker.started(&message).await;
    assert_eq!(started.status, MessageStatus::Streaming);

    // Several frames, each acknowledged before the next is sent.
    let mut seq = 0u32;
    let mut full = String::new();
    for frame in frames {
        let chunks: Vec<(u32, &str)> = frame
            .iter()
            .map(|d| {
                seq += 1;
                full.push_str(d);
                (seq - 1, *d)
            })
            .collect();
        let ack = worker.chunks(&message, &chunks).await;
        let want: Vec<u32> = chunks.iter().map(|(s, _)| *s).collect();
        assert_eq!(ack.stored, want, "ack of {chunks:?}");
        assert!(ack.duplicate.is_empty(), "ack of {chunks:?}: {ack:?}");
    }
    let count = seq;
    let done = worker.complete(&message, count).await;
    assert_eq!(done.status, MessageStatus::Complete);
    assert_eq!(done.chunk_count, Some(count));
    let stored = user.history(session).await;
    assert_eq!(stored.next, None, "a short session fits one page");
    assert_eq!(answer_text(&stored.chunks, &message), full, "the answer is its stored chunks");

    // The watcher saw every chunk once, in order, and each status.
    let followed = user.follow_to_end(&message).await;
    assert_eq!(
        followed.seqs(),
        (0..count).collect::<Vec<_>>(),
        "the watcher gets every seq once, in order"
    );
    assert_eq!(
        followed.statuses,
        vec![
            MessageStatus::Queued,
            MessageStatus::Dispatched,
            MessageStatus::Streaming,
            MessageStatus::Complete
        ],
        "message_updated statuses the watcher saw"
    );
    let last = followed.last.clone().expect("a final message_updated");
    assert_eq!(last.chunk_count, Some(count));
    assert_eq!(answer_text(&followed.chunks, &message), full, "the watcher has the whole answer");
    assert!(followed.chunks.iter().all(|c| c.session_id == *session));
    (message, full, followed.chunks)
}

/// Scenario 3: session start, two messages streamed and completed, session end, and
/// the history of it all.
pub async fn chat_flow(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "carol").await;

    let session = SessionId::random();
    let started = user.start_session(&session, worker.id()).await;
    assert_eq!(started.status, SessionStatus::Starting);
    assert_eq!(started.worker_id, *worker.id());
    assert_eq!(started.model, test_model());
    let s = session.clone();
    match worker
        .next_event(
            "session_start",
            |e| matches!(e, ServerFrame::SessionStart { session_id, .. } if *session_id == s),
        )
        .await
    {
        ServerFrame::SessionStart { model, title, .. } => {
            assert_eq!(model, test_model());
            assert_eq!(title, "e2e");
        }
        _ => unreachable!(),
    }
    let ready = worker.session_ready(&session).await;
    assert_eq!(ready.status, SessionStatus::Ready);
    let s = session.clone();
    user.next_event("session_updated ready", |e| {
        matches!(e, ServerFrame::SessionUpdated { session: v } if v.session_id == s && v.status == SessionStatus::Ready)
    })
    .await;

    let page = user.watch(&session, None).await;
    assert_eq!(page.session.session_id, session);
    assert_eq!(page.session.status, SessionStatus::Ready);
    assert!(
        page.messages.is_empty() && page.chunks.is_empty(),
        "a new session has no history: {page:?}"
    );
    assert_eq!(page.next, None);

    let (first, first_text, first_chunks) = answer_checked(
        &mut user,
        &mut worker,
        &session,
        0,
        "What is six times seven?",
        &[&["Six ", "times "], &["seven "], &["is ", "forty-two", "."]],
    )
    .await;
    let (second, second_text, second_chunks) = answer_checked(
        &mut user,
        &mut worker,
        &session,
        1,
        "And six times eight?",
        &[&["Forty-"], &["eight", "."], &[" Easy."]],
    )
    .await;

    // Ending the session.
    let ended: SessionView = user
        .call(Request::SessionEnd {
            session_id: session.clone(),
        })
        .await
        .field("session");
    assert_eq!(ended.status, SessionStatus::Ended);
    let s = session.clone();
    worker
        .next_event(
            "session_end",
            |e| matches!(e, ServerFrame::SessionEnd { session_id } if *session_id == s),
        )
        .await;
    let s = session.clone();
    user.next_event("session_updated ended", |e| {
        matches!(e, ServerFrame::SessionUpdated { session: v } if v.session_id == s && v.status == SessionStatus::Ended)
    })
    .await;
    let late = MessageId::random();
    user.call(Request::MessageSend {
        session_id: session.clone(),
        message_id: late.clone(),
        text: "Still there?".into(),
        model: None,
    })
    .await
    .expect_err(ErrorCode::SessionClosed);

    // The list and the history.
    let sessions = user.sessions().await;
    assert_eq!(sessions.len(), 1, "session_list: {sessions:?}");
    let listed = &sessions[0];
    assert_eq!(listed.session_id, session);
    assert_eq!(listed.status, SessionStatus::Ended);
    assert_eq!(listed.message_count, 2);

    let history = user.history(&session).await;
    assert_eq!(history.next, None, "two short answers fit one page");
    assert_eq!(history.session.status, SessionStatus::Ended);
    let ids: Vec<_> = history
        .messages
        .iter()
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(
        ids,
        vec![first.clone(), second.clone()],
        "both messages, in order; not the refused one"
    );
    for (m, number, text, answer) in [
        (
            &history.messages[0],
            0,
            "What is six times seven?",
            &first_text,
        ),
        (
            &history.messages[1],
            1,
            "And six times eight?",
            &second_text,
        ),
    ] {
        assert_eq!(m.number, number);
        assert_eq!(m.text, text);
        assert_eq!(m.status, MessageStatus::Complete);
        assert_eq!(answer_text(&history.chunks, &m.message_id), *answer);
    }
    assert_eq!(history.messages[0].chunk_count, Some(6));
    assert_eq!(history.messages[1].chunk_count, Some(4));
    assert_eq!(seqs_of(&history.chunks, &first), (0..6).collect::<Vec<_>>());
    assert_eq!(
        seqs_of(&history.chunks, &second),
        (0..4).collect::<Vec<_>>()
    );
    let order: Vec<_> = history
        .chunks
        .iter()
        .map(|c| c.message_id.clone())
        .collect();
    assert!(
        order.iter().position(|m| *m == second) > order.iter().rposition(|m| *m == first),
        "chunks are in (message, seq) order"
    );
    assert_eq!(answer_text(&history.chunks, &first), first_text);
    assert_eq!(answer_text(&history.chunks, &second), second_text);
    // What was streamed is what is stored.
    let stored_first: Vec<ChunkView> = history
        .chunks
        .iter()
        .filter(|c| c.message_id == first)
        .cloned()
        .collect();
    let stored_second: Vec<ChunkView> = history
        .chunks
        .iter()
        .filter(|c| c.message_id == second)
        .cloned()
        .collect();
    assert_eq!(stored_first, first_chunks);
    assert_eq!(stored_second, second_chunks);
}

/// Scenario 4: messages sent while the worker is offline are queued and dispatched
/// when it says hello; a session started while it is offline starts then.
pub async fn offline_queue(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "dan").await;
    let session = ready_session(&user, &mut worker).await;
    user.watch(&session, None).await;
    let identity = worker.identity.clone();
    let id = identity.worker_id.clone();

    user.drain_events().await;
    worker.close().await;
    user.worker_updated(&id, "offline", |w| !w.online).await;

    // A message to the ready session waits.
    let queued = MessageId::random();
    let sent = user.send_message(&session, &queued, "Are you there?").await;
    assert_eq!(
        sent.status,
        MessageStatus::Queued,
        "the worker is offline: {sent:?}"
    );
    let q = queued.clone();
    user.next_event("message_updated queued", |e| {
        matches!(e, ServerFrame::MessageUpdated { message } if message.message_id == q && message.status == MessageStatus::Queued)
    })
    .await;

    // A session started now stays starting, and its message waits too.
    let later = SessionId::random();
    let view = user.start_session(&later, &id).await;
    assert_eq!(view.status, SessionStatus::Starting);
    let waiting = MessageId::random();
    let sent = user
        .send_message(&later, &waiting, "Hello, new session")
        .await;
    assert_eq!(sent.status, MessageStatus::Queued);

    // Back: hello brings the session start and the queued message.
    let mut worker = WorkerClient::connect(&server, &identity).await;
    worker.hello(&[]).await.ok();
    match worker.dispatched(&queued).await {
        ServerFrame::MessageDispatch {
            session_id,
            text,
            number,
            ..
        } => {
            assert_eq!(session_id, session);
            assert_eq!(text, "Are you there?");
            assert_eq!(number, 0);
        }
        _ => unreachable!(),
    }
    let l = later.clone();
    worker
        .next_event(
            "session_start of the session started while offline",
            |e| matches!(e, ServerFrame::SessionStart { session_id, .. } if *session_id == l),
        )
        .await;

    worker.started(&queued).await;
    let ack = worker.chunks(&queued, &[(0, "Yes, "), (1, "I am.")]).await;
    assert_eq!(ack.stored, vec![0, 1]);
    worker.complete(&queued, 2).await;
    let followed = user.follow_to_end(&queued).await;
    assert_eq!(followed.seqs(), vec![0, 1]);
    assert_eq!(
        followed.statuses,
        vec![
            MessageStatus::Dispatched,
            MessageStatus::Streaming,
            MessageStatus::Complete
        ]
    );

    // The new session gets ready and its waiting message goes out.
    worker.session_ready(&later).await;
    worker.dispatched(&waiting).await;
    worker.started(&waiting).await;
    worker.chunks(&waiting, &[(0, "Hi.")]).await;
    worker.complete(&waiting, 1).await;

    let history = user.history(&session).await;
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].status, MessageStatus::Complete);
    assert_eq!(answer_text(&history.chunks, &queued), "Yes, I am.");
    let history = user.history(&later).await;
    assert_eq!(history.session.status, SessionStatus::Ready);
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].status, MessageStatus::Complete);
    assert_eq!(answer_text(&history.chunks, &waiting), "Hi.");
}

/// Scenario 3b: a worker that does not wait for replies: `message_started`, eight
/// `chunks` frames and `message_complete` sent in one burst, three times.
/// Each request gets exactly one reply, every chunk is stored and pushed
/// once, and the session is ready again after each answer. (With
/// `--concurrent-frames` the frames are handled in any order.)
pub async fn pipelined_burst(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired {
        mut user,
        mut worker,
    } = paired(&server, "olga").await;
    let session = ready_session(&user, &mut worker).await;
    user.watch(&session, None).await;

    for round in 0..3u32 {
        let message = MessageId::random();
        user.send_message(&session, &message, &format!("burst {round}"))
            .await;
        worker.dispatched(&message).await;
        let deltas: Vec<String> = (0..16).map(|i| format!("r{round}c{i} ")).collect();
        let full: String = deltas.concat();

        let mut pending = vec![
            worker
                .send(Request::MessageStarted {
                    message_id: message.clone(),
                })
                .await,
        ];
        for f in 0..8u32 {
            let frame: Vec<(u32, &str)> = (2 * f..2 * f + 2)
                .map(|s| (s, deltas[s as usize].as_str()))
                .collect();
            pending.push(
                worker
                    .send(WorkerClient::chunks_request(&message, &frame))
                    .await,
            );
        }
        pending.push(
            worker
                .send(WorkerClient::complete_request(
                    &message,
                    tether_domain::protocol::Outcome::Complete,
                    16,
                ))
                .await,
        );
        let mut stored = Vec::new();
        for p in pending {
            let reply = p.get().await;
            let data = reply.ok().clone();
            if reply.action == "chunks" {
                let ack: tether_domain::protocol::ChunksAck = reply.data_as();
                assert!(
                    ack.duplicate.is_empty(),
                    "round {round}: nothing was sent twice: {}",
                    reply.raw
                );
                stored.extend(ack.stored);
            } else {
                assert!(
                    data.get("message").is_some(),
                    "round {round}: {}",
                    reply.raw
                );
            }
        }
        stored.sort_unstable();
        assert_eq!(
            stored,
            (0..16).collect::<Vec<_>>(),
            "round {round}: every seq stored once"
        );

        // The watcher gets every chunk once and the completion, in whatever order.
        let seen = user.chunks_until(&message, 0..16).await;
        let mut seqs: Vec<u32> = seen.iter().map(|c| c.seq).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (0..16).collect::<Vec<_>>(),
            "round {round}: each chunk pushed once"
        );
        let m = message.clone();
        user.next_event("message_updated complete", |e| {
            matches!(e, ServerFrame::MessageUpdated { message } if message.message_id == m && message.status == MessageStatus::Complete)
        })
        .await;

        let history = user.history(&session).await;
        assert_eq!(
            seqs_of(&history.chunks, &message),
            (0..16).collect::<Vec<_>>()
        );
        assert_eq!(answer_text(&history.chunks, &message), full);
        let stored_message = history
            .messages
            .iter()
            .find(|m| m.message_id == message)
            .expect("the message is in the history");
        assert_eq!(stored_message.status, MessageStatus::Complete);
        assert_eq!(
            history.session.status,
            SessionStatus::Ready,
            "round {round}: with no answer running the session is ready again: {:?}",
            history.session
        );
    }
    let strays = worker.stray_replies().await;
    assert!(
        strays.is_empty(),
        "replies that answer no request: {strays:?}"
    );
    let strays = user.stray_replies().await;
    assert!(
        strays.is_empty(),
        "replies that answer no request: {strays:?}"
    );
}
