//! What the action handlers share: entity views, fan-out, history pages.

use tracing::{debug, info, warn};

use crate::error::ApiError;
use crate::ids::{ConnectionId, SessionId, UserId, WorkerId};
use crate::model::{
    Chunk, Message, MessageStatus, Millis, Session, SessionStatus, Transition, Worker, WorkerStatus,
};
use crate::protocol::{
    ChunkView, Cursor, HistoryPage, MachineView, MessageView, ServerFrame, SessionView, WorkerView,
};
use crate::push::{Push, PushError};
use crate::store::{SessionPatch, Store, StoreError};

use super::admin::Disconnected;
use super::Domain;

/// History pages stay well under API Gateway's 128 KB message limit.
const PAGE_BUDGET_BYTES: usize = 96 * 1024;
const PAGE_MESSAGES: u32 = 20;
const PAGE_CHUNKS: u32 = 200;
/// API Gateway's integration timeout bounds how long a `$connect` can run.
const CONNECT_GRACE_MS: i64 = 30_000;
/// Why an answer ended when its worker stayed away past the lease.
pub(crate) const WORKER_WENT_AWAY: &str =
    "the worker went away while answering (it has been offline too long); send the message again when it is back";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The detail goes to the log, not to the client.
        warn!(error = %e, "store failure");
        ApiError::new(crate::ErrorCode::Internal, "storage is unavailable; retry later")
    }
}

pub(crate) fn worker_view(w: &Worker, now: Millis, presence_timeout_ms: i64) -> WorkerView {
    WorkerView {
        worker_id: w.id.clone(),
        machine: w.machine.clone(),
        name: w.name.clone(),
        workdir: w.workdir.clone(),
        status: w.status,
        online: w.online(now, presence_timeout_ms),
        last_seen: w.last_seen,
        models: w.models.clone(),
        default_model: w.default_model.clone(),
        agent: w.agent.clone(),
        pairing_code: w.pairing_code.clone(),
        created_at: w.created_at,
    }
}

pub(crate) fn machines(workers: Vec<WorkerView>) -> Vec<MachineView> {
    let mut machines: Vec<MachineView> = Vec::new();
    for w in workers {
        match machines.iter_mut().find(|m| m.name == w.machine) {
            Some(m) => {
                m.online |= w.online;
                m.workers.push(w);
            }
            None => machines.push(MachineView {
                name: w.machine.clone(),
                online: w.online,
                workers: vec![w],
            }),
        }
    }
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    machines
}

pub(crate) fn session_view(s: &Session) -> SessionView {
    SessionView {
        session_id: s.id.clone(),
        worker_id: s.worker.clone(),
        model: s.model.clone(),
        title: s.title.clone(),
        title_source: s.title_source,
        status: s.status,
        error: s.error.clone(),
        message_count: s.message_count,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

pub(crate) fn message_view(m: &Message) -> MessageView {
    MessageView {
        session_id: m.session.clone(),
        message_id: m.id.clone(),
        number: m.number,
        text: m.text.clone(),
        status: m.status,
        chunk_count: m.chunk_count,
        error: m.error.clone(),
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

pub(crate) fn chunk_view(session: &SessionId, c: &Chunk) -> ChunkView {
    ChunkView {
        session_id: session.clone(),
        message_id: c.message.clone(),
        seq: c.seq,
        body: c.body.clone(),
    }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("protocol types serialize")
}

impl<S: Store, P: Push> Domain<S, P> {
    /// Sends a frame to connections, dropping the records of gone ones
    /// (API Gateway may never deliver their `$disconnect`).
    pub(crate) async fn fan_out(&self, conns: &[ConnectionId], frame: &ServerFrame, now: Millis) {
        if conns.is_empty() {
            return;
        }
        let text = frame.to_json();
        for (conn, err) in self.push.send_many(conns, &text).await {
            match err {
                PushError::Gone => self.drop_gone(&conn, now).await,
                PushError::Other(e) => warn!(connection_id = %conn.redacted(), error = %e, "push failed"),
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
            Err(e) => warn!(connection_id = %conn.redacted(), error = %e, "could not read connection"),
        }
    }

    /// Removes a connection record and, for a worker, its presence.
    pub(crate) async fn forget_connection(&self, conn: &ConnectionId, now: Millis) {
        let removed = match self.store.delete_connection(conn).await {
            Ok(c) => c,
            Err(e) => {
                warn!(connection_id = %conn.redacted(), error = %e, "could not delete connection");
                return;
            }
        };
        if let Some(crate::model::Connection {
            principal: crate::model::Principal::Worker(worker),
            ..
        }) = removed
        {
            // A worker that was there until now was last seen now: its
            // lease counts from here, not from its last heartbeat. (One
            // whose connection had gone silent keeps its older time.)
            let was_online = match self.store.worker(&worker).await {
                Ok(w) => w.is_some_and(|w| w.online(now, self.config.presence_timeout_ms)),
                Err(_) => false,
            };
            match self.store.clear_worker_connection(&worker, conn).await {
                Ok(true) => {
                    if was_online {
                        if let Err(e) = self.store.touch_worker(&worker, now).await {
                            warn!(worker_id = %worker, error = %e, "could not record when it left");
                        }
                    }
                    self.announce_worker(&worker, None, now).await
                }
                Ok(false) => {}
                Err(e) => warn!(worker_id = %worker, error = %e, "could not clear presence"),
            }
        }
    }

    /// Closes connections through the push port and deletes their records
    /// (so that one the port could not close can do nothing more). A
    /// connection already gone is neither closed nor failed.
    pub(crate) async fn close_connections(&self, conns: &[ConnectionId], now: Millis) -> Disconnected {
        let mut done = Disconnected::default();
        for conn in conns {
            match self.push.disconnect(conn).await {
                Ok(()) => done.closed += 1,
                Err(PushError::Gone) => {}
                Err(PushError::Other(e)) => {
                    warn!(connection_id = %conn.redacted(), error = %e, "could not close a connection");
                    done.failed.push(e);
                }
            }
            self.forget_connection(conn, now).await;
        }
        done
    }

    /// Tells a revoked worker's connections so, and closes them.
    pub(crate) async fn disconnect_revoked(&self, worker: &WorkerId, now: Millis) -> Result<Disconnected, ApiError> {
        let conns = self.store.worker_connections(worker).await?;
        let frame = ServerFrame::PairingStatus {
            status: WorkerStatus::Revoked,
            approved_by: None,
        };
        self.fan_out(&conns, &frame, now).await;
        Ok(self.close_connections(&conns, now).await)
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
        match self.store.watchers(session).await {
            Ok(conns) => self.fan_out(&conns, frame, now).await,
            Err(e) => warn!(session_id = %session, error = %e, "could not list watchers"),
        }
    }

    /// Pushes to a worker's live connection. False if it has none (or it is
    /// gone): the caller leaves the work queued for the worker's next hello.
    pub(crate) async fn to_worker(&self, worker: &Worker, frame: &ServerFrame, now: Millis) -> bool {
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
    pub(crate) async fn announce_worker(&self, worker: &WorkerId, fresh: Option<&Worker>, now: Millis) {
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

    /// Ends a session's messages that have not reached the agent (queued or
    /// dispatched) with `status` and `why`.
    pub(crate) async fn end_pending(
        &self,
        worker: &WorkerId,
        session: &SessionId,
        status: MessageStatus,
        why: &str,
        now: Millis,
    ) -> Result<(), ApiError> {
        use crate::store::MessagePatch;
        for m in self.store.open_messages(worker).await? {
            if &m.session != session || !m.status.is_pending() {
                continue;
            }
            let patch = MessagePatch {
                chunk_count: Some(0),
                error: Some(why.to_owned()),
            };
            let end = Message::end_unstarted(status);
            if let Some(m) = self
                .store
                .transition_message(&m.id, end.from, end.to, &patch, now)
                .await?
            {
                self.announce_message(&m, now).await;
            }
        }
        Ok(())
    }

    /// A busy session with no running answer is ready again. Each message
    /// writes its own status before it looks at the session's others, so
    /// of two racing messages at least one sees the other.
    pub(crate) async fn settle_session(
        &self,
        worker: &crate::ids::WorkerId,
        session: &SessionId,
        now: Millis,
    ) -> Result<(), ApiError> {
        let running = self
            .store
            .open_messages(worker)
            .await?
            .iter()
            .any(|m| &m.session == session && m.status == MessageStatus::Streaming);
        if running {
            return Ok(());
        }
        if let Some(s) = self
            .store
            .transition_session(
                session,
                Session::ANSWERS_DONE.from,
                Session::ANSWERS_DONE.to,
                &SessionPatch::default(),
                now,
            )
            .await?
        {
            self.announce_session(&s, now).await;
        }
        Ok(())
    }

    /// Ends the answers a worker left dispatched or streaming when it has
    /// been offline past the lease, and readies their sessions. True if it
    /// ended any. Hosts have no timer for this: it runs when a busy session
    /// is read or written to, so a worker that went away costs nothing
    /// until someone looks (and then one query).
    pub(crate) async fn end_if_worker_gone(&self, worker: &Worker, now: Millis) -> Result<bool, ApiError> {
        if !worker.lease_lapsed(now, self.config.presence_timeout_ms, self.config.worker_lease_ms) {
            return Ok(false);
        }
        let mut ended = false;
        for m in self.store.open_messages(&worker.id).await? {
            if !Message::LEASE_LAPSED.applies_to(m.status) {
                continue;
            }
            if let Some(m) = self.end_here(&m.id, Message::LEASE_LAPSED, WORKER_WENT_AWAY, now).await? {
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
        message: &crate::ids::MessageId,
        end: Transition<MessageStatus>,
        why: &str,
        now: Millis,
    ) -> Result<Option<Message>, ApiError> {
        let patch = crate::store::MessagePatch {
            error: Some(why.to_owned()),
            ..crate::store::MessagePatch::default()
        };
        let Some(m) = self.store.transition_message(message, end.from, end.to, &patch, now).await? else {
            return Ok(None);
        };
        self.announce_message(&m, now).await;
        self.settle_session(&m.worker, &m.session, now).await?;
        Ok(Some(m))
    }

    /// [`Domain::end_if_worker_gone`] for a busy session's worker; returns
    /// the session as it is now.
    pub(crate) async fn settle_if_worker_gone(&self, session: Session, now: Millis) -> Result<Session, ApiError> {
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

    /// One page of history from `after`, within [`PAGE_BUDGET_BYTES`].
    pub(crate) async fn history_page(
        &self,
        session: &Session,
        after: Cursor,
    ) -> Result<HistoryPage, ApiError> {
        let mut page = HistoryPage {
            session: session_view(session),
            messages: Vec::new(),
            chunks: Vec::new(),
            next: None,
        };
        let mut used = 0usize;
        let mut number = after.message;
        'messages: loop {
            let batch = self
                .store
                .messages_of(&session.id, number, PAGE_MESSAGES)
                .await?;
            let batch_len = batch.len();
            for m in batch {
                let mut seq = if m.number == after.message { after.seq } else { 0 };
                let view = message_view(&m);
                let size = json(&view).to_string().len();
                if used + size > PAGE_BUDGET_BYTES && !page.messages.is_empty() {
                    page.next = Some(Cursor { message: m.number, seq });
                    break 'messages;
                }
                used += size;
                page.messages.push(view);
                loop {
                    let chunks = self.store.chunks(&m.id, seq, PAGE_CHUNKS).await?;
                    let n = chunks.len();
                    for c in chunks {
                        let view = chunk_view(&session.id, &c);
                        let size = json(&view).to_string().len();
                        if used + size > PAGE_BUDGET_BYTES {
                            page.next = Some(Cursor { message: m.number, seq: c.seq });
                            break 'messages;
                        }
                        used += size;
                        seq = c.seq + 1;
                        page.chunks.push(view);
                    }
                    if n < PAGE_CHUNKS as usize {
                        break;
                    }
                }
                number = m.number + 1;
            }
            if batch_len < PAGE_MESSAGES as usize {
                break;
            }
        }
        Ok(page)
    }
}
