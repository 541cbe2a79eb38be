//! The offline queue: a message goes to its worker when the worker can
//! take it (connected, its session ready), and waits, queued, otherwise.
//! When a worker says hello again, it is sent what waited, again what may
//! not have reached it, and told to stop what ended here while it was away.

use std::collections::HashSet;

use crate::error::ApiError;
use crate::ids::MessageId;
use crate::model::{Message, MessageStatus, Millis, Session, Worker};
use crate::protocol::ServerFrame;
use crate::push::Push;
use crate::store::{MessagePatch, Store};

use super::messages::abort_frame;
use super::Domain;

/// A hello names the answers its worker is running; at most this many are
/// looked up (a worker runs one per session, and far fewer at once).
const MAX_ACTIVE_CHECKED: usize = 64;

/// What a worker's hello did with its open messages, for the log.
pub(crate) struct Resumed {
    /// Sent (again) to the worker.
    pub dispatched: u32,
    /// Running when the worker went, and no longer running on it.
    pub failed: u32,
    /// Ended here while the worker was away, and still running on it.
    pub stopped: u32,
}

impl<S: Store, P: Push> Domain<S, P> {
    /// Pushes a queued message to its worker if the session is ready and the
    /// worker connected; marks it dispatched. Otherwise it stays queued for
    /// the worker's next hello or the session's `session_ready`.
    pub(crate) async fn dispatch(
        &self,
        worker: &Worker,
        session: &Session,
        message: Message,
        now: Millis,
    ) -> Result<Message, ApiError> {
        if !session.status.takes_messages()
            || worker.connection.is_none()
            || !message.status.is_pending()
        {
            return Ok(message);
        }
        if !self
            .to_worker(worker, &dispatch_frame(session, &message), now)
            .await
        {
            return Ok(message);
        }
        match self
            .store
            .transition_message(
                &message.id,
                Message::DISPATCH.from,
                Message::DISPATCH.to,
                &MessagePatch::default(),
                now,
            )
            .await?
        {
            Some(m) => {
                self.announce_message(&m, now).await;
                Ok(m)
            }
            // Already dispatched, started or aborted meanwhile.
            None => Ok(self.store.message(&message.id).await?.unwrap_or(message)),
        }
    }

    /// A worker said hello again: the messages it lost (running when it
    /// went, and no longer running on it) fail; the queued ones go out, and
    /// the dispatched ones again (the push may have been lost; the worker
    /// ignores a message it already has); answers that ended here while it
    /// was away (aborted by the user, or past the lease) and that it still
    /// runs are stopped. `active` are the answers it says it is running.
    pub(crate) async fn resume_messages(
        &self,
        worker: &Worker,
        active: Vec<MessageId>,
        now: Millis,
    ) -> Result<Resumed, ApiError> {
        let active: HashSet<MessageId> = active.into_iter().collect();
        let mut sessions: Vec<Session> = Vec::new();
        let mut resumed = Resumed {
            dispatched: 0,
            failed: 0,
            stopped: 0,
        };
        let open_messages = self.store.open_messages(&worker.id).await?;
        let open: HashSet<MessageId> = open_messages.iter().map(|m| m.id.clone()).collect();
        for message in open_messages {
            match message.status {
                MessageStatus::Streaming if !active.contains(&message.id) => {
                    // The worker lost it (crashed or restarted): end it plainly.
                    let patch = MessagePatch {
                        error: Some("the worker stopped while answering".into()),
                        ..MessagePatch::default()
                    };
                    if let Some(m) = self
                        .store
                        .transition_message(
                            &message.id,
                            Message::LOST.from,
                            Message::LOST.to,
                            &patch,
                            now,
                        )
                        .await?
                    {
                        resumed.failed += 1;
                        self.announce_message(&m, now).await;
                        self.settle_session(&m.worker, &m.session, now).await?;
                    }
                }
                MessageStatus::Queued | MessageStatus::Dispatched => {
                    let session = match sessions.iter().find(|s| s.id == message.session) {
                        Some(s) => s.clone(),
                        None => {
                            let Some(s) = self.store.session(&message.session).await? else {
                                continue;
                            };
                            sessions.push(s.clone());
                            s
                        }
                    };
                    // Dispatched but not started: the push may have been lost; send again
                    // (the worker ignores a message it already has).
                    if message.status == MessageStatus::Dispatched {
                        if session.status.takes_messages()
                            && self
                                .to_worker(worker, &dispatch_frame(&session, &message), now)
                                .await
                        {
                            resumed.dispatched += 1;
                        }
                    } else if self.dispatch(worker, &session, message, now).await?.status
                        == MessageStatus::Dispatched
                    {
                        resumed.dispatched += 1;
                    }
                }
                _ => {}
            }
        }
        // Answers the worker is still running that ended here while it was
        // away (aborted by the user, or past the lease): stop them.
        for id in active
            .iter()
            .filter(|id| !open.contains(id))
            .take(MAX_ACTIVE_CHECKED)
        {
            let Some(m) = self
                .store
                .message(id)
                .await?
                .filter(|m| m.worker == worker.id)
            else {
                continue;
            };
            if m.status.is_final() && self.to_worker(worker, &abort_frame(&m), now).await {
                resumed.stopped += 1;
            }
        }
        Ok(resumed)
    }
}

/// What a worker is sent to answer a message.
fn dispatch_frame(session: &Session, message: &Message) -> ServerFrame {
    ServerFrame::MessageDispatch {
        session_id: session.id.clone(),
        agent_session_id: session.agent_session_id.clone(),
        message_id: message.id.clone(),
        number: message.number,
        text: message.text.clone(),
        model: message.model.clone().unwrap_or_else(|| session.model.clone()),
    }
}
