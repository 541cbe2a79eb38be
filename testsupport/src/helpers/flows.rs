//! Flows several scenarios share: a paired worker, a ready session, a whole
//! exchange.

use tether_domain::ids::{MessageId, SessionId};
use tether_domain::model::{MessageStatus, WorkerStatus};
use tether_domain::protocol::{Request, ServerFrame, WorkerView};

use super::{pair, Server, UserClient, WorkerClient};

/// A user with a connected, approved worker that has said hello with models.
pub struct Paired {
    pub user: UserClient,
    pub worker: WorkerClient,
}

/// Makes a user, pairs a new worker to it and brings both online.
pub async fn paired(server: &Server, user_name: &str) -> Paired {
    let account = server.add_user(user_name).await;
    let mut user = UserClient::connect(server, &account).await;
    let identity = pair(
        server,
        &format!("{user_name}-laptop"),
        &format!("/home/{user_name}/project"),
    )
    .await;
    let mut worker = WorkerClient::connect(server, &identity).await;
    let hello = worker.hello(&[]).await;
    assert_eq!(
        hello.field::<WorkerView>("worker").status,
        WorkerStatus::Pending
    );
    let code = identity.code.clone().expect("a pairing code");
    user.call(Request::PairingApprove { code, name: None })
        .await
        .ok();
    worker
        .next_event("pairing_status approved", |e| {
            matches!(
                e,
                ServerFrame::PairingStatus {
                    status: WorkerStatus::Approved,
                    ..
                }
            )
        })
        .await;
    let hello = worker.hello(&[]).await;
    assert_eq!(
        hello.field::<WorkerView>("worker").status,
        WorkerStatus::Approved
    );
    let id = identity.worker_id.clone();
    user.worker_updated(&id, "online with models", |w| {
        w.online && !w.models.is_empty()
    })
    .await;
    Paired { user, worker }
}

/// Starts a session and has the worker make it ready.
pub async fn ready_session(user: &UserClient, worker: &mut WorkerClient) -> SessionId {
    let session = SessionId::random();
    let view = user.start_session(&session, worker.id()).await;
    assert_eq!(view.session_id, session);
    let s = session.clone();
    worker
        .next_event(
            "session_start",
            |e| matches!(e, ServerFrame::SessionStart { session_id, .. } if *session_id == s),
        )
        .await;
    let ready = worker.session_ready(&session).await;
    assert_eq!(ready.status, tether_domain::model::SessionStatus::Ready);
    session
}

/// Sends a message and has the worker answer it in full: dispatch,
/// `message_started`, one awaited `chunks` frame per two deltas, then
/// `message_complete`. Returns the message id and the answer's text.
pub async fn exchange(
    user: &UserClient,
    worker: &mut WorkerClient,
    session: &SessionId,
    text: &str,
    deltas: &[&str],
) -> (MessageId, String) {
    let message = MessageId::random();
    let sent = user.send_message(session, &message, text).await;
    assert_eq!(
        sent.status,
        MessageStatus::Dispatched,
        "the worker is online: {sent:?}"
    );
    worker.dispatched(&message).await;
    worker.started(&message).await;
    let mut seq = 0u32;
    for group in deltas.chunks(2) {
        let frame: Vec<(u32, &str)> = group
            .iter()
            .map(|d| {
                seq += 1;
                (seq - 1, *d)
            })
            .collect();
        let ack = worker.chunks(&message, &frame).await;
        let expected: Vec<u32> = frame.iter().map(|(s, _)| *s).collect();
        assert_eq!(ack.stored, expected, "fresh chunks are stored: {ack:?}");
        assert!(
            ack.duplicate.is_empty(),
            "fresh chunks are no duplicates: {ack:?}"
        );
    }
    let full: String = deltas.concat();
    let done = worker.complete(&message, seq).await;
    assert_eq!(done.status, MessageStatus::Complete);
    (message, full)
}
