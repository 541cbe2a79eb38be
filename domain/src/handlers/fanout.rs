//! Pushes: to a worker's connection, to every connection of a user, to
//! every connection watching a session, and the announcements of a
//! worker's, a session's and a message's changes. A push that finds its
//! connection gone drops the record (API Gateway may never deliver its
//! `$disconnect`).

use tracing::{debug, warn};

use crate::ids::{ConnectionId, SessionId, UserId, WorkerId};
use crate::model::{Message, Millis, Session, Worker};
use crate::protocol::ServerFrame;
use crate::push::{Push, PushError};
use crate::store::Store;

use super::views::{message_view, session_view, worker_view};
use super::Domain;

/// API Gateway's integration timeout bounds how long a `$connect` can run.
const CONNECT_GRACE_MS: i64 = 30_000;

impl<S: Store, P: Push> Domain<S, P> {
    /// Sends a frame to connections, dropping the records of gone ones
    /// (API Gateway may never deliver their `$disconnect`).
    pub(crate) async fn fan_out(&self, conns: &[ConnectionId], frame: &ServerFrame, now: Millis) {
        if !conns.is_empty() {
            self.fan_out_text(conns, &frame.to_json(), now).await;
        }
    }

    /// [`Domain::fan_out`] of a frame's JSON text.
    async fn fan_out_text(&self, conns: &[ConnectionId], text: &str, now: Millis) {
        for (conn, err) in self.push.send_many(conns, text).await {
            match err {
                PushError::Gone => self.drop_gone(&conn, now).await,
                PushError::Other(e) => {
                    warn!(connection_id = %conn.redacted(), error = %e, "push failed")
                }
            }
        }
    }

    /// Drops the record of a connection a push found gone. Fan-out targets
    /// browsers, which carry no presence, so the record is all. A connection
    /// whose `$connect` may still be running also answers gone (API Gateway
    /// cannot post to it yet): such a young record is kept.
    async fn drop_gone(&self, conn: &ConnectionId, now: Millis) {
        match self.store.connection(conn).await {
            Ok(Some(c)) if now - c.connected_at < CONNECT_GRACE_MS => {
                debug!(connection_id = %conn, "push to a connection still connecting; kept");
            }
            Ok(Some(_)) => {
                debug!(connection_id = %conn, "push to a gone connection; removing it");
                if let Err(e) = self.store.delete_connection(conn).await {
                    warn!(connection_id = %conn.redacted(), error = %e, "could not delete connection");
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(connection_id = %conn.redacted(), error = %e, "could not read connection")
            }
        }
    }

    /// Pushes to every browser connection of a user.
    pub(crate) async fn to_user(&self, user: &UserId, frame: &ServerFrame, now: Millis) {
        match self.store.user_connections(user, now).await {
            Ok(conns) => self.fan_out(&conns, frame, now).await,
            Err(e) => warn!(user_id = %user, error = %e, "could not list user connections"),
        }
    }

    /// Pushes to every connection watching a session.
    pub(crate) async fn to_watchers(&self, session: &SessionId, frame: &ServerFrame, now: Millis) {
        self.to_watchers_each(session, || vec![frame.to_json()], now)
            .await;
    }

    /// Pushes frames, as their JSON text, to every connection watching a
    /// session, in order. `frames` is called only if someone watches, so a
    /// session nobody watches costs no serialising.
    pub(crate) async fn to_watchers_each(
        &self,
        session: &SessionId,
        frames: impl FnOnce() -> Vec<String>,
        now: Millis,
    ) {
        let conns = match self.store.watchers(session).await {
            Ok(conns) if conns.is_empty() => return,
            Ok(conns) => conns,
            Err(e) => {
                warn!(session_id = %session, error = %e, "could not list watchers");
                return;
            }
        };
        for text in frames() {
            self.fan_out_text(&conns, &text, now).await;
        }
    }

    /// Pushes to a worker's live connection. False if it has none (or it is
    /// gone): the caller leaves the work queued for the worker's next hello.
    pub(crate) async fn to_worker(
        &self,
        worker: &Worker,
        frame: &ServerFrame,
        now: Millis,
    ) -> bool {
        let Some(conn) = &worker.connection else {
            return false;
        };
        match self.push.send(conn, &frame.to_json()).await {
            Ok(()) => true,
            Err(PushError::Gone) => {
                self.forget_connection(conn, now).await;
                false
            }
            Err(PushError::Other(e)) => {
                warn!(worker_id = %worker.id, error = %e, "push to worker failed");
                false
            }
        }
    }

    /// Tells a worker's owner that it changed (presence, models, status).
    /// Reads the worker afresh unless given.
    pub(crate) async fn announce_worker(
        &self,
        worker: &WorkerId,
        fresh: Option<&Worker>,
        now: Millis,
    ) {
        let loaded;
        let w = match fresh {
            Some(w) => w,
            None => match self.store.worker(worker).await {
                Ok(Some(w)) => {
                    loaded = w;
                    &loaded
                }
                _ => return,
            },
        };
        let Some(owner) = &w.owner else { return };
        let frame = ServerFrame::WorkerUpdated {
            worker: worker_view(w, now, self.config.presence_timeout_ms),
        };
        self.to_user(owner, &frame, now).await;
    }

    /// Announces a session's new state to its owner's connections.
    pub(crate) async fn announce_session(&self, session: &Session, now: Millis) {
        let frame = ServerFrame::SessionUpdated {
            session: session_view(session),
        };
        self.to_user(&session.owner, &frame, now).await;
    }

    /// Announces a message's new state to its session's watchers.
    pub(crate) async fn announce_message(&self, message: &Message, now: Millis) {
        let frame = ServerFrame::MessageUpdated {
            message: message_view(message),
        };
        self.to_watchers(&message.session, &frame, now).await;
    }
}
