//! Work of a worker that is not there. Nothing stays dispatched, streaming
//! or busy without a live worker: answers held by a worker gone past its
//! lease end `failed`, and an answer stopped while its worker is offline
//! ends here at once. No timer runs for this: the lease is applied when a
//! busy session is read or written to, so a worker that went away costs
//! nothing until someone looks (and then one query).

use tracing::info;

use crate::error::ApiError;
use crate::ids::{MessageId, WorkerId};
use crate::model::{Message, MessageStatus, Millis, Session, SessionStatus, Transition, Worker};
use crate::push::Push;
use crate::store::{MessagePatch, Store};

use super::Domain;

/// Why an answer ended when its worker stayed away past the lease.
pub(crate) const WORKER_WENT_AWAY: &str =
    "the worker went away while answering (it has been offline too long); send the message again when it is back";

impl<S: Store, P: Push> Domain<S, P> {
    /// Ends the answers a worker left dispatched or streaming when it has
    /// been offline past the lease, and readies their sessions. True if it
    /// ended any. Hosts have no timer for this: it runs when a busy session
    /// is read or written to, so a worker that went away costs nothing
    /// until someone looks (and then one query).
    pub(crate) async fn end_if_worker_gone(
        &self,
        worker: &Worker,
        now: Millis,
    ) -> Result<bool, ApiError> {
        if !worker.lease_lapsed(
            now,
            self.config.presence_timeout_ms,
            self.config.worker_lease_ms,
        ) {
            return Ok(false);
        }
        let mut ended = false;
        for m in self.store.open_messages(&worker.id).await? {
            if !Message::LEASE_LAPSED.applies_to(m.status) {
                continue;
            }
            if let Some(m) = self
                .end_here(&m.id, Message::LEASE_LAPSED, WORKER_WENT_AWAY, now)
                .await?
            {
                info!(worker_id = %worker.id, message_id = %m.id, "answer ended: its worker went away");
                ended = true;
            }
        }
        Ok(ended)
    }

    /// Ends an answer here, its worker not being there to: makes `end`
    /// with `why` (keeping the chunks stored so far), announces it and
    /// readies its session. `None` if it had moved on.
    pub(crate) async fn end_here(
        &self,
        message: &MessageId,
        end: Transition<MessageStatus>,
        why: &str,
        now: Millis,
    ) -> Result<Option<Message>, ApiError> {
        let patch = MessagePatch {
            error: Some(why.to_owned()),
            ..MessagePatch::default()
        };
        let Some(m) = self
            .store
            .transition_message(message, end.from, end.to, &patch, now)
            .await?
        else {
            return Ok(None);
        };
        self.announce_message(&m, now).await;
        self.settle_session(&m.worker, &m.session, now).await?;
        Ok(Some(m))
    }

    /// [`Domain::end_if_worker_gone`] for a busy session's worker; returns
    /// the session as it is now.
    pub(crate) async fn settle_if_worker_gone(
        &self,
        session: Session,
        now: Millis,
    ) -> Result<Session, ApiError> {
        if session.status != SessionStatus::Busy {
            return Ok(session);
        }
        let Some(worker) = self.store.worker(&session.worker).await? else {
            return Ok(session);
        };
        if !self.end_if_worker_gone(&worker, now).await? {
            return Ok(session);
        }
        Ok(self.store.session(&session.id).await?.unwrap_or(session))
    }

    /// Applies the worker lease to the busy sessions of a list, reading
    /// each of their workers once.
    pub(crate) async fn settle_busy(
        &self,
        mut sessions: Vec<Session>,
        now: Millis,
    ) -> Result<Vec<Session>, ApiError> {
        let mut checked: Vec<WorkerId> = Vec::new();
        for i in 0..sessions.len() {
            if sessions[i].status != SessionStatus::Busy || checked.contains(&sessions[i].worker) {
                continue;
            }
            checked.push(sessions[i].worker.clone());
            let Some(worker) = self.store.worker(&sessions[i].worker).await? else {
                continue;
            };
            if !self.end_if_worker_gone(&worker, now).await? {
                continue;
            }
            for s in sessions
                .iter_mut()
                .filter(|s| s.worker == worker.id && s.status == SessionStatus::Busy)
            {
                if let Some(fresh) = self.store.session(&s.id).await? {
                    *s = fresh;
                }
            }
        }
        Ok(sessions)
    }
}
