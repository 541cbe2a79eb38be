//! Actions of users (browser connections) and the two either role may take.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{MessageId, SessionId, UserId, WorkerId};
use crate::model::{
    Connection, Message, MessageStatus, Millis, Session, SessionStatus, TitleSource, Worker,
    WorkerStatus,
};
use crate::protocol::{
    Empty, MachineListData, MeData, MessageData, ModelRef, PingData, PromptAnswer, PromptReplyData,
    Reply, Request, Role, ServerFrame, SessionData, SessionListData, MAX_TEXT_BYTES,
    PROTOCOL_VERSION,
};
use crate::push::Push;
use crate::store::{Capped, Inserted, MessagePatch, SessionPatch, Store};

use super::entry::{clean_label, Caller};
use super::support::{machines, message_view, session_view, worker_view};
use super::Domain;

const MAX_TITLE_LEN: usize = 200;

impl<S: Store, P: Push> Domain<S, P> {
    pub(crate) async fn ping(&self, caller: &Caller, now: Millis) -> Result<PingData, ApiError> {
        match caller {
            Caller::User { conn, .. } => self.store.touch_connection(&conn.id, now).await?,
            Caller::Worker { conn, worker } => {
                self.store.touch_connection(&conn.id, now).await?;
                // A worker whose presence lapsed is back: say so.
                let was_online = worker.online(now, self.config.presence_timeout_ms);
                if worker.connection.as_ref() != Some(&conn.id) {
                    self.store
                        .set_worker_connection(&worker.id, &conn.id, now)
                        .await?;
                } else {
                    self.store.touch_worker(&worker.id, now).await?;
                }
                if !was_online && worker.status == WorkerStatus::Approved {
                    self.announce_worker(&worker.id, None, now).await;
                }
            }
        }
        Ok(PingData {
            now,
            heartbeat_ms: self.config.heartbeat_ms,
        })
    }

    pub(crate) async fn me(&self, caller: &Caller) -> Result<MeData, ApiError> {
        Ok(match caller {
            Caller::User { user, .. } => {
                let u = self
                    .store
                    .user(user)
                    .await?
                    .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "user no longer exists"))?;
                MeData {
                    protocol: PROTOCOL_VERSION,
                    role: Role::User,
                    user_id: Some(u.id),
                    user_name: Some(u.name),
                    worker_id: None,
                    worker_status: None,
                    pairing_code: None,
                    heartbeat_ms: self.config.heartbeat_ms,
                }
            }
            Caller::Worker { worker, .. } => MeData {
                protocol: PROTOCOL_VERSION,
                role: Role::Worker,
                user_id: None,
                user_name: None,
                worker_id: Some(worker.id.clone()),
                worker_status: Some(worker.status),
                pairing_code: worker.pairing_code.clone(),
                heartbeat_ms: self.config.heartbeat_ms,
            },
        })
    }

    pub(crate) async fn user_action(
        &self,
        conn: &Connection,
        user: &UserId,
        request: Request,
        now: Millis,
    ) -> Result<Reply, ApiError> {
        match request {
            Request::MachineList {} => self.machine_list(user, now).await.map(Reply::MachineList),
            Request::PairingList { after, limit } => {
                self.pairing_list(user, after, limit, now).await.map(Reply::PairingList)
            }
            Request::PairingLookup { code } => {
                self.pairing_lookup(user, &code, now).await.map(Reply::PairingLookup)
            }
            Request::PairingApprove { code, name } => {
                self.pairing_decide(user, &code, name, true, now).await.map(Reply::PairingApprove)
            }
            Request::PairingReject { code } => {
                self.pairing_decide(user, &code, None, false, now).await.map(Reply::PairingReject)
            }
            Request::PairingTokenCreate {} => {
                self.pairing_token_create(user, now).await.map(Reply::PairingTokenCreate)
            }
            Request::WorkerRevoke { worker_id } => {
                self.worker_revoke(user, &worker_id, now).await.map(Reply::WorkerRevoke)
            }
            Request::SessionStart {
                session_id,
                worker_id,
                model,
                title,
            } => self
                .session_start(user, session_id, &worker_id, model, title, now)
                .await
                .map(Reply::SessionStart),
            Request::SessionList {
                worker_id,
                before,
                limit,
            } => {
                if let Some(w) = &worker_id {
                    self.owned_worker(user, w).await?;
                }
                let limit = limit.unwrap_or(50).clamp(1, 200);
                let sessions = self
                    .store
                    .sessions_of(user, worker_id.as_ref(), before, limit)
                    .await?;
                let sessions = self.settle_busy(sessions, now).await?;
                let views: Vec<_> = sessions.iter().map(session_view).collect();
                Ok(Reply::SessionList(SessionListData { sessions: views }))
            }
            Request::SessionWatch { session_id, after } => {
                let session = self.owned_session(user, &session_id).await?;
                let session = self.settle_if_worker_gone(session, now).await?;
                // Watch first, then read: whatever the read misses is stored
                // later, and its fan-out finds this watch.
                if !self.store.watch(&session.id, &conn.id).await? {
                    return Err(ApiError::new(ErrorCode::Unauthorized, "this connection is gone; reconnect"));
                }
                let page = self.history_page(&session, after.unwrap_or_default()).await?;
                Ok(Reply::SessionWatch(page))
            }
            Request::SessionUnwatch { session_id } => {
                let session = self.owned_session(user, &session_id).await?;
                self.store.unwatch(&session.id, &conn.id).await?;
                Ok(Reply::SessionUnwatch(Empty {}))
            }
            Request::SessionHistory { session_id, after } => {
                let session = self.owned_session(user, &session_id).await?;
                let session = self.settle_if_worker_gone(session, now).await?;
                let page = self.history_page(&session, after.unwrap_or_default()).await?;
                Ok(Reply::SessionHistory(page))
            }
            Request::SessionEnd { session_id } => {
                self.session_end(user, &session_id, now).await.map(Reply::SessionEnd)
            }
            Request::MessageSend {
                session_id,
                message_id,
                text,
            } => self
                .message_send(user, &session_id, message_id, text, now)
                .await
                .map(Reply::MessageSend),
            Request::MessageAbort { message_id } => {
                self.message_abort(user, &message_id, now).await.map(Reply::MessageAbort)
            }
            Request::PromptReply { prompt_id, answer } => {
                let prompt = self
                    .store
                    .prompt(&prompt_id)
                    .await?
                    .filter(|p| &p.owner == user)
                    .ok_or_else(|| ApiError::not_found("prompt"))?;
                let fits = matches!(
                    (&answer, prompt.kind),
                    (PromptAnswer::Permission { .. }, crate::model::PromptKind::Permission)
                        | (
                            PromptAnswer::Question { .. } | PromptAnswer::QuestionRejected,
                            crate::model::PromptKind::Question
                        )
                );
                if !fits {
                    return Err(ApiError::bad_request("this answer does not fit the prompt's kind"));
                }
                // opencode keeps a prompt of an aborted answer open, and an
                // answer to it would run nothing: refuse it plainly.
                if self.store.message(&prompt.message).await?.is_some_and(|m| m.status.is_final()) {
                    return Err(ApiError::new(
                        ErrorCode::MessageFinal,
                        "the answer this prompt belongs to has ended",
                    ));
                }
                let answered = self
                    .store
                    .answer_prompt(&prompt.id, &answer)
                    .await?
                    .ok_or_else(|| ApiError::new(ErrorCode::AlreadyAnswered, "this prompt was already answered"))?;
                if let Some(worker) = self.store.worker(&answered.worker).await? {
                    let frame = ServerFrame::PromptAnswer {
                        prompt_id: answered.id.clone(),
                        session_id: answered.session.clone(),
                        message_id: answered.message.clone(),
                        answer,
                    };
                    self.to_worker(&worker, &frame, now).await;
                }
                Ok(Reply::PromptReply(PromptReplyData { prompt_id: answered.id }))
            }
            _ => Err(ApiError::forbidden("only workers may take this action")),
        }
    }

    async fn machine_list(&self, user: &UserId, now: Millis) -> Result<MachineListData, ApiError> {
        let workers = self.store.workers_of(user).await?;
        let views = workers
            .iter()
            .filter(|w| w.status != WorkerStatus::Rejected)
            .map(|w| worker_view(w, now, self.config.presence_timeout_ms))
            .collect();
        Ok(MachineListData { machines: machines(views) })
    }

    pub(crate) async fn owned_worker(&self, user: &UserId, id: &WorkerId) -> Result<Worker, ApiError> {
        self.store
            .worker(id)
            .await?
            .filter(|w| w.owner.as_ref() == Some(user))
            .ok_or_else(|| ApiError::not_found("worker"))
    }

    pub(crate) async fn owned_session(&self, user: &UserId, id: &SessionId) -> Result<Session, ApiError> {
        self.store
            .session(id)
            .await?
            .filter(|s| &s.owner == user)
            .ok_or_else(|| ApiError::not_found("session"))
    }

    async fn session_start(
        &self,
        user: &UserId,
        session_id: SessionId,
        worker_id: &WorkerId,
        model: ModelRef,
        title: Option<String>,
        now: Millis,
    ) -> Result<SessionData, ApiError> {
        let worker = self.owned_worker(user, worker_id).await?;
        if worker.status != WorkerStatus::Approved {
            return Err(ApiError::new(ErrorCode::WorkerNotApproved, "this worker is not approved"));
        }
        if model.provider_id.is_empty() || model.model_id.is_empty() {
            return Err(ApiError::bad_request("model needs provider_id and model_id"));
        }
        if !worker.models.is_empty()
            && !worker
                .models
                .iter()
                .any(|m| m.provider_id == model.provider_id && m.model_id == model.model_id)
        {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "worker does not offer model {}/{}",
                    model.provider_id, model.model_id
                ),
            ));
        }
        let (title, title_source) = match title {
            Some(t) if !t.trim().is_empty() => {
                (clean_label(&t, "title", MAX_TITLE_LEN)?, Some(TitleSource::User))
            }
            // The agent may name it later (`session_title`).
            _ => (String::new(), None),
        };
        let session = Session {
            id: session_id,
            owner: user.clone(),
            worker: worker.id.clone(),
            model,
            title,
            title_source,
            status: SessionStatus::Starting,
            agent_session_id: None,
            error: None,
            message_count: 0,
            created_at: now,
            updated_at: now,
        };
        let cap = self.config.max_live_sessions;
        match self.store.insert_session(&session, cap).await? {
            Capped::Full => Err(ApiError::new(
                ErrorCode::TooManySessions,
                format!("you have {cap} sessions open; end one to start another"),
            )),
            Capped::Done(Inserted::New(s)) => {
                let frame = ServerFrame::SessionStart {
                    session_id: s.id.clone(),
                    model: s.model.clone(),
                    title: s.title.clone(),
                };
                self.to_worker(&worker, &frame, now).await;
                self.announce_session(&s, now).await;
                Ok(SessionData { session: session_view(&s) })
            }
            Capped::Done(Inserted::Existing(s)) => {
                if s.owner == session.owner && s.worker == session.worker && s.model == session.model {
                    Ok(SessionData { session: session_view(&s) })
                } else {
                    Err(ApiError::new(ErrorCode::Conflict, "this session id is taken"))
                }
            }
        }
    }

    async fn session_end(&self, user: &UserId, id: &SessionId, now: Millis) -> Result<SessionData, ApiError> {
        let session = self.owned_session(user, id).await?;
        let ended = match self
            .store
            .transition_session(
                &session.id,
                Session::END.from,
                Session::END.to,
                &SessionPatch::default(),
                now,
            )
            .await?
        {
            Some(s) => s,
            // Ending twice is harmless.
            None => return Ok(SessionData { session: session_view(&session) }),
        };
        // Messages that never reached the agent end here; running ones end
        // when the worker reports them aborted, or here too if it is offline
        // (it hears of it when it is back, as for `message_abort`).
        self.end_pending(&session.worker, &session.id, MessageStatus::Aborted, "the session ended", now)
            .await?;
        let worker = self.store.worker(&session.worker).await?;
        if !worker.as_ref().is_some_and(|w| w.online(now, self.config.presence_timeout_ms)) {
            for m in self.store.open_messages(&session.worker).await? {
                if m.session != session.id || !Message::STOPPED_OFFLINE.applies_to(m.status) {
                    continue;
                }
                let why = "the session ended while its worker was offline";
                self.end_here(&m.id, Message::STOPPED_OFFLINE, why, now).await?;
            }
        }
        if let Some(worker) = worker {
            let frame = ServerFrame::SessionEnd {
                session_id: session.id.clone(),
            };
            self.to_worker(&worker, &frame, now).await;
        }
        self.announce_session(&ended, now).await;
        Ok(SessionData { session: session_view(&ended) })
    }

    async fn message_send(
        &self,
        user: &UserId,
        session_id: &SessionId,
        message_id: MessageId,
        text: String,
        now: Millis,
    ) -> Result<MessageData, ApiError> {
        if text.trim().is_empty() {
            return Err(ApiError::bad_request("text must not be empty"));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(ApiError::bad_request(format!(
                "text is longer than {MAX_TEXT_BYTES} bytes"
            )));
        }
        let session = self.owned_session(user, session_id).await?;
        if session.status.is_closed() {
            return Err(ApiError::new(
                ErrorCode::SessionClosed,
                format!("this session has {}", session.status.as_str()),
            ));
        }
        let worker = self
            .store
            .worker(&session.worker)
            .await?
            .ok_or_else(|| ApiError::not_found("worker"))?;
        if worker.status != WorkerStatus::Approved {
            return Err(ApiError::new(ErrorCode::WorkerNotApproved, "this session's worker is not approved"));
        }
        if session.status == SessionStatus::Busy {
            self.end_if_worker_gone(&worker, now).await?;
        }
        let message = Message {
            id: message_id,
            session: session.id.clone(),
            owner: user.clone(),
            worker: worker.id.clone(),
            number: 0,
            text,
            status: MessageStatus::Queued,
            chunk_count: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        let cap = self.config.max_open_messages;
        let stored = match self.store.insert_message(&message, cap).await? {
            Capped::Full => {
                return Err(ApiError::new(
                    ErrorCode::QueueFull,
                    format!(
                        "{cap} of your messages are waiting for an answer; wait for one to \
                         finish or stop one, then send again"
                    ),
                ))
            }
            Capped::Done(Inserted::New(m)) => m,
            Capped::Done(Inserted::Existing(m)) => {
                return if m.session == message.session && m.owner == message.owner && m.text == message.text {
                    Ok(MessageData { message: message_view(&m) })
                } else {
                    Err(ApiError::new(ErrorCode::Conflict, "this message id is taken"))
                };
            }
        };
        self.announce_message(&stored, now).await;
        let stored = self.dispatch(&worker, &session, stored, now).await?;
        Ok(MessageData { message: message_view(&stored) })
    }

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
        let frame = ServerFrame::MessageDispatch {
            session_id: session.id.clone(),
            agent_session_id: session.agent_session_id.clone(),
            message_id: message.id.clone(),
            number: message.number,
            text: message.text.clone(),
            model: session.model.clone(),
        };
        if !self.to_worker(worker, &frame, now).await {
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

    async fn message_abort(&self, user: &UserId, id: &MessageId, now: Millis) -> Result<MessageData, ApiError> {
        let message = self
            .store
            .message(id)
            .await?
            .filter(|m| &m.owner == user)
            .ok_or_else(|| ApiError::not_found("message"))?;
        if message.status.is_final() {
            return Ok(MessageData { message: message_view(&message) });
        }
        let worker = self.store.worker(&message.worker).await?;
        let offline = !worker
            .as_ref()
            .is_some_and(|w| w.online(now, self.config.presence_timeout_ms));
        if offline && Message::STOPPED_OFFLINE.applies_to(message.status) {
            // Nobody is there to stop it: it ends here, with the chunks the
            // host has. The worker, when it is back, hears of it in its
            // hello's reply and stops the agent.
            let why = "stopped while the worker was offline";
            let current = match self
                .end_here(&message.id, Message::STOPPED_OFFLINE, why, now)
                .await?
            {
                Some(m) => m,
                None => self.store.message(&message.id).await?.unwrap_or(message),
            };
            return Ok(MessageData { message: message_view(&current) });
        }
        let was_queued = message.status == MessageStatus::Queued;
        // Not yet with the agent: it ends here. The worker is told as well,
        // in case a dispatch is on its way.
        let patch = MessagePatch {
            chunk_count: Some(0),
            error: Some("aborted before it started".into()),
        };
        let abort = Message::end_unstarted(MessageStatus::Aborted);
        let current = match self
            .store
            .transition_message(&message.id, abort.from, abort.to, &patch, now)
            .await?
        {
            Some(m) => {
                self.announce_message(&m, now).await;
                m
            }
            None => self.store.message(&message.id).await?.unwrap_or(message),
        };
        // A worker told of a message it never got ignores the abort.
        if !was_queued || current.status == MessageStatus::Streaming {
            if let Some(worker) = worker {
                let frame = ServerFrame::MessageAbort {
                    session_id: current.session.clone(),
                    message_id: current.id.clone(),
                };
                self.to_worker(&worker, &frame, now).await;
            }
        }
        Ok(MessageData { message: message_view(&current) })
    }

    /// Applies the worker lease to the busy sessions of a list, reading
    /// each of their workers once.
    async fn settle_busy(&self, mut sessions: Vec<Session>, now: Millis) -> Result<Vec<Session>, ApiError> {
        let mut checked: Vec<WorkerId> = Vec::new();
        for i in 0..sessions.len() {
            if sessions[i].status != SessionStatus::Busy || checked.contains(&sessions[i].worker) {
                continue;
            }
            checked.push(sessions[i].worker.clone());
            let Some(worker) = self.store.worker(&sessions[i].worker).await? else { continue };
            if !self.end_if_worker_gone(&worker, now).await? {
                continue;
            }
            for s in sessions.iter_mut().filter(|s| s.worker == worker.id && s.status == SessionStatus::Busy) {
                if let Some(fresh) = self.store.session(&s.id).await? {
                    *s = fresh;
                }
            }
        }
        Ok(sessions)
    }
}
