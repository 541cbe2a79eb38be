//! Actions of workers.

use std::collections::HashSet;

use tracing::info;

use crate::error::{ApiError, ErrorCode};
use crate::ids::{MessageId, SessionId};
use crate::model::{
    AgentState, Chunk, Connection, Message, MessageStatus, Millis, Prompt, PromptKind, Session,
    TitleSource, Worker, WorkerStatus,
};
use crate::protocol::{
    AgentReport, ChunkBody, ChunkIn, ChunksAck, Empty, HelloApproved, HelloData, MessageData,
    Outcome, Reply, Request, ServerFrame, SessionData, WorkerData, MAX_AGENT_REASON_BYTES,
    MAX_AGENT_TITLE_CHARS, MAX_FRAME_BYTES,
};
use crate::push::Push;
use crate::store::{Inserted, MessagePatch, SessionPatch, Store, WorkerProfile};

use super::entry::clean_label;
use super::support::{chunk_view, json, message_view, session_view, worker_view};
use super::Domain;

/// Most chunks one `chunks` frame may carry.
const MAX_CHUNKS_PER_FRAME: usize = 256;
/// A hello names the answers its worker is running; at most this many are
/// looked up (a worker runs one per session, and far fewer at once).
const MAX_ACTIVE_CHECKED: usize = 64;

impl<S: Store, P: Push> Domain<S, P> {
    pub(crate) async fn worker_action(
        &self,
        conn: &Connection,
        worker: &Worker,
        request: Request,
        now: Millis,
    ) -> Result<Reply, ApiError> {
        if let Request::WorkerHello {
            machine,
            name,
            workdir,
            version,
            models,
            default_model,
            active_messages,
            agent,
        } = request
        {
            let profile = WorkerProfile {
                machine: machine.map(|m| clean_label(&m, "machine", 128)).transpose()?,
                name: name.map(|n| clean_label(&n, "name", 128)).transpose()?,
                workdir: workdir.map(|w| clean_label(&w, "workdir", 1024)).transpose()?,
                version: version.map(|v| clean_label(&v, "version", 64)).transpose()?,
                models,
                default_model,
            };
            let agent = agent
                .map(|a| agent_report(a.state, a.reason, a.at))
                .transpose()?;
            return self
                .hello(conn, worker, profile, agent, active_messages, now)
                .await
                .map(Reply::WorkerHello);
        }
        // A worker waiting for approval may say this too: its owner sees it
        // from the moment of approval.
        if let Request::AgentState { state, reason, at } = request {
            let report = agent_report(state, reason, at)?;
            return self.agent_state(worker, report, now).await.map(Reply::AgentState);
        }
        if worker.status != WorkerStatus::Approved {
            return Err(ApiError::new(
                ErrorCode::WorkerNotApproved,
                format!("this worker is {}", worker.status.as_str()),
            ));
        }
        match request {
            Request::SessionReady {
                session_id,
                agent_session_id,
            } => self
                .session_ready(worker, &session_id, agent_session_id, now)
                .await
                .map(Reply::SessionReady),
            Request::SessionFailed { session_id, error } => self
                .session_failed(worker, &session_id, error, now)
                .await
                .map(Reply::SessionFailed),
            Request::SessionTitle { session_id, title } => self
                .session_title(worker, &session_id, &title, now)
                .await
                .map(Reply::SessionTitle),
            Request::MessageStarted { message_id } => {
                let message = self.worker_message(worker, &message_id).await?;
                let m = self.start_message(&message, now).await?;
                Ok(Reply::MessageStarted(MessageData { message: message_view(&m) }))
            }
            Request::Chunks { message_id, chunks } => {
                self.chunks(worker, &message_id, chunks, now).await.map(Reply::Chunks)
            }
            Request::MessageComplete {
                message_id,
                outcome,
                chunk_count,
                error,
            } => self
                .complete(worker, &message_id, outcome, chunk_count, error, now)
                .await
                .map(Reply::MessageComplete),
            Request::PromptDelivered { prompt_id } => {
                let prompt = self
                    .store
                    .prompt(&prompt_id)
                    .await?
                    .filter(|p| p.worker == worker.id)
                    .ok_or_else(|| ApiError::not_found("prompt"))?;
                self.store.set_prompt_delivered(&prompt.id).await?;
                Ok(Reply::PromptDelivered(Empty {}))
            }
            _ => Err(ApiError::forbidden("only users may take this action")),
        }
    }

    /// A worker (re)connected: store its profile, then push it everything it
    /// is owed: sessions to start, messages to answer, answers to prompts.
    async fn hello(
        &self,
        conn: &Connection,
        worker: &Worker,
        profile: WorkerProfile,
        agent: Option<AgentReport>,
        active: Vec<MessageId>,
        now: Millis,
    ) -> Result<HelloData, ApiError> {
        self.store.set_worker_profile(&worker.id, &profile).await?;
        if let Some(report) = &agent {
            // A report older than the stored one changes nothing.
            self.store.set_agent_state(&worker.id, report).await?;
        }
        self.store
            .set_worker_connection(&worker.id, &conn.id, now)
            .await?;
        let worker = self
            .store
            .worker(&worker.id)
            .await?
            .ok_or_else(|| ApiError::not_found("worker"))?;
        if worker.status != WorkerStatus::Approved {
            return Ok(HelloData {
                worker: worker_view(&worker, now, self.config.presence_timeout_ms),
                heartbeat_ms: self.config.heartbeat_ms,
                approved: None,
            });
        }
        self.announce_worker(&worker.id, Some(&worker), now).await;

        for session in self.store.starting_sessions(&worker.id).await? {
            let frame = ServerFrame::SessionStart {
                session_id: session.id.clone(),
                model: session.model.clone(),
                title: session.title.clone(),
            };
            self.to_worker(&worker, &frame, now).await;
        }
        let active: HashSet<MessageId> = active.into_iter().collect();
        let mut sessions: Vec<Session> = Vec::new();
        let (mut dispatched, mut failed) = (0u32, 0u32);
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
                        .transition_message(&message.id, Message::LOST.from, Message::LOST.to, &patch, now)
                        .await?
                    {
                        failed += 1;
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
                        let frame = ServerFrame::MessageDispatch {
                            session_id: session.id.clone(),
                            agent_session_id: session.agent_session_id.clone(),
                            message_id: message.id.clone(),
                            number: message.number,
                            text: message.text.clone(),
                            model: session.model.clone(),
                        };
                        if session.status.takes_messages()
                            && self.to_worker(&worker, &frame, now).await
                        {
                            dispatched += 1;
                        }
                    } else if self.dispatch(&worker, &session, message, now).await?.status
                        == MessageStatus::Dispatched
                    {
                        dispatched += 1;
                    }
                }
                _ => {}
            }
        }
        // Answers the worker is still running that ended here while it was
        // away (aborted by the user, or past the lease): stop them.
        let mut stopped = 0u32;
        for id in active.iter().filter(|id| !open.contains(id)).take(MAX_ACTIVE_CHECKED) {
            let Some(m) = self.store.message(id).await?.filter(|m| m.worker == worker.id) else {
                continue;
            };
            if m.status.is_final() {
                let frame = ServerFrame::MessageAbort {
                    session_id: m.session.clone(),
                    message_id: m.id.clone(),
                };
                if self.to_worker(&worker, &frame, now).await {
                    stopped += 1;
                }
            }
        }
        let mut prompts = 0u32;
        for prompt in self.store.undelivered_prompts(&worker.id).await? {
            if let Some(answer) = prompt.answer.clone() {
                let frame = ServerFrame::PromptAnswer {
                    prompt_id: prompt.id.clone(),
                    session_id: prompt.session.clone(),
                    message_id: prompt.message.clone(),
                    answer,
                };
                if self.to_worker(&worker, &frame, now).await {
                    prompts += 1;
                }
            }
        }
        info!(worker_id = %worker.id, dispatched, failed, stopped, prompts, "worker hello");
        // Who approved it, also here: a worker approved while it was not
        // connected never got its `pairing_status`.
        Ok(HelloData {
            worker: worker_view(&worker, now, self.config.presence_timeout_ms),
            heartbeat_ms: self.config.heartbeat_ms,
            approved: Some(HelloApproved {
                approved_by: self.user_name(worker.owner.as_ref()).await?,
                frame_interval_ms: self.config.frame_interval_ms,
            }),
        })
    }

    /// The worker's agent changed state: store it (unless a newer report is
    /// stored already) and tell the owner.
    async fn agent_state(&self, worker: &Worker, report: AgentReport, now: Millis) -> Result<WorkerData, ApiError> {
        let current = match self.store.set_agent_state(&worker.id, &report).await? {
            Some(updated) => {
                let same = worker
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.state == report.state && a.reason == report.reason);
                if !same && updated.status == WorkerStatus::Approved {
                    self.announce_worker(&updated.id, Some(&updated), now).await;
                }
                info!(worker_id = %updated.id, state = report.state.as_str(), "agent state");
                updated
            }
            // Older than what is stored (frames handled out of order): the
            // newer state stands.
            None => self
                .store
                .worker(&worker.id)
                .await?
                .ok_or_else(|| ApiError::not_found("worker"))?,
        };
        Ok(WorkerData { worker: worker_view(&current, now, self.config.presence_timeout_ms) })
    }

    /// The agent titled one of this worker's sessions: the session takes it
    /// unless its user gave it a title.
    async fn session_title(
        &self,
        worker: &Worker,
        id: &SessionId,
        title: &str,
        now: Millis,
    ) -> Result<SessionData, ApiError> {
        let title = clean_agent_title(title)?;
        let session = self.worker_session(worker, id).await?;
        let unchanged = match session.title_source {
            Some(TitleSource::User) => true,
            Some(TitleSource::Agent) => session.title == title,
            None => false,
        };
        if unchanged {
            return Ok(SessionData { session: session_view(&session) });
        }
        match self.store.set_agent_title(&session.id, &title, now).await? {
            Some(titled) => {
                self.announce_session(&titled, now).await;
                Ok(SessionData { session: session_view(&titled) })
            }
            None => Ok(SessionData { session: session_view(&session) }),
        }
    }

    async fn worker_session(&self, worker: &Worker, id: &SessionId) -> Result<Session, ApiError> {
        self.store
            .session(id)
            .await?
            .filter(|s| s.worker == worker.id)
            .ok_or_else(|| ApiError::not_found("session"))
    }

    async fn worker_message(&self, worker: &Worker, id: &MessageId) -> Result<Message, ApiError> {
        self.store
            .message(id)
            .await?
            .filter(|m| m.worker == worker.id)
            .ok_or_else(|| ApiError::not_found("message"))
    }

    async fn session_ready(
        &self,
        worker: &Worker,
        id: &SessionId,
        agent_session_id: String,
        now: Millis,
    ) -> Result<SessionData, ApiError> {
        let agent_session_id = clean_label(&agent_session_id, "agent_session_id", 256)?;
        let session = self.worker_session(worker, id).await?;
        let patch = SessionPatch {
            agent_session_id: Some(agent_session_id.clone()),
            error: None,
        };
        let ready = match self
            .store
            .transition_session(&session.id, Session::AGENT_READY.from, Session::AGENT_READY.to, &patch, now)
            .await?
        {
            Some(s) => s,
            None if session.agent_session_id.as_deref() == Some(agent_session_id.as_str())
                && !session.status.is_closed() =>
            {
                return Ok(SessionData { session: session_view(&session) })
            }
            None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidState,
                    format!("this session is {}", session.status.as_str()),
                ))
            }
        };
        self.announce_session(&ready, now).await;
        // Messages sent while the session was starting go out now, in order.
        for message in self.store.open_messages(&worker.id).await? {
            if message.session == ready.id && message.status == MessageStatus::Queued {
                self.dispatch(worker, &ready, message, now).await?;
            }
        }
        Ok(SessionData { session: session_view(&ready) })
    }

    async fn session_failed(
        &self,
        worker: &Worker,
        id: &SessionId,
        error: String,
        now: Millis,
    ) -> Result<SessionData, ApiError> {
        let session = self.worker_session(worker, id).await?;
        let patch = SessionPatch {
            agent_session_id: None,
            error: Some(truncate_chars(&error, 2000)),
        };
        let failed = self
            .store
            .transition_session(
                &session.id,
                Session::FAIL.from,
                Session::FAIL.to,
                &patch,
                now,
            )
            .await?;
        let Some(failed) = failed else {
            return Ok(SessionData { session: session_view(&session) });
        };
        self.end_pending(&worker.id, &failed.id, MessageStatus::Failed, "the session failed", now)
            .await?;
        self.announce_session(&failed, now).await;
        Ok(SessionData { session: session_view(&failed) })
    }

    /// Marks a message streaming (idempotent) and its session busy.
    async fn start_message(&self, message: &Message, now: Millis) -> Result<Message, ApiError> {
        match self
            .store
            .transition_message(
                &message.id,
                Message::START.from,
                Message::START.to,
                &MessagePatch::default(),
                now,
            )
            .await?
        {
            Some(m) => {
                self.announce_message(&m, now).await;
                if let Some(s) = self
                    .store
                    .transition_session(
                        &m.session,
                        Session::ANSWER_STARTED.from,
                        Session::ANSWER_STARTED.to,
                        &SessionPatch::default(),
                        now,
                    )
                    .await?
                {
                    self.announce_session(&s, now).await;
                    // A completion handled between our two writes saw the
                    // session ready and left it; look again so it cannot
                    // stay busy with nothing running.
                    let current = self.store.message(&m.id).await?;
                    if current.is_some_and(|c| c.status.is_final()) {
                        self.settle_session(&m.worker, &m.session, now).await?;
                    }
                }
                Ok(m)
            }
            None => {
                let current = self
                    .store
                    .message(&message.id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("message"))?;
                if current.status == MessageStatus::Streaming || current.status.is_final() {
                    Ok(current)
                } else {
                    Err(ApiError::new(ErrorCode::InvalidState, "the message cannot start"))
                }
            }
        }
    }

    async fn chunks(
        &self,
        worker: &Worker,
        message_id: &MessageId,
        chunks: Vec<ChunkIn>,
        now: Millis,
    ) -> Result<ChunksAck, ApiError> {
        if chunks.is_empty() {
            return Err(ApiError::bad_request("chunks must not be empty"));
        }
        if chunks.len() > MAX_CHUNKS_PER_FRAME {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_CHUNKS_PER_FRAME} chunks per frame"
            )));
        }
        let mut seen = HashSet::new();
        if !chunks.iter().all(|c| seen.insert(c.seq)) {
            return Err(ApiError::bad_request("a seq appears twice in one frame"));
        }
        let mut message = self.worker_message(worker, message_id).await?;
        // A final answer takes only the chunks it counted (they may arrive
        // after the completion when frames are handled out of order).
        if message.status.is_final() {
            let count = message.chunk_count.unwrap_or(0);
            if let Some(c) = chunks.iter().find(|c| c.seq >= count) {
                return Err(ApiError::new(
                    ErrorCode::MessageFinal,
                    format!(
                        "the answer is {} with {count} chunks; seq {} is beyond it",
                        message.status.as_str(),
                        c.seq
                    ),
                ));
            }
        } else if message.status.is_pending() {
            // Chunks overtook `message_started`.
            message = self.start_message(&message, now).await?;
        }
        let mut ack = ChunksAck {
            stored: Vec::new(),
            duplicate: Vec::new(),
        };
        let mut fresh = Vec::new();
        let chunks: Vec<Chunk> = chunks
            .into_iter()
            .map(|c| Chunk {
                message: message.id.clone(),
                seq: c.seq,
                body: c.body,
                created_at: now,
            })
            .collect();
        for inserted in self.store.insert_chunks(&chunks).await? {
            match inserted {
                Inserted::New(stored) => {
                    self.record_prompt(&message, &stored, now).await?;
                    ack.stored.push(stored.seq);
                    fresh.push(chunk_view(&message.session, &stored));
                }
                Inserted::Existing(stored) => ack.duplicate.push(stored.seq),
            }
        }
        if !fresh.is_empty() {
            fresh.sort_by_key(|c| c.seq);
            // One frame per watcher when it fits; split otherwise.
            for group in split_to_frames(fresh) {
                let frame = ServerFrame::Chunks {
                    session_id: message.session.clone(),
                    message_id: message.id.clone(),
                    chunks: group,
                };
                self.to_watchers(&message.session, &frame, now).await;
            }
        }
        Ok(ack)
    }

    /// A permission request or question chunk opens a prompt the user answers.
    async fn record_prompt(&self, message: &Message, chunk: &Chunk, now: Millis) -> Result<(), ApiError> {
        let (id, kind) = match &chunk.body {
            ChunkBody::PermissionRequest { prompt_id, .. } => (prompt_id, PromptKind::Permission),
            ChunkBody::Question { prompt_id, .. } => (prompt_id, PromptKind::Question),
            _ => return Ok(()),
        };
        let prompt = Prompt {
            id: id.clone(),
            session: message.session.clone(),
            message: message.id.clone(),
            worker: message.worker.clone(),
            owner: message.owner.clone(),
            kind,
            answer: None,
            delivered: false,
            created_at: now,
        };
        self.store.insert_prompt(&prompt).await?;
        Ok(())
    }

    async fn complete(
        &self,
        worker: &Worker,
        message_id: &MessageId,
        outcome: Outcome,
        chunk_count: u32,
        error: Option<String>,
        now: Millis,
    ) -> Result<MessageData, ApiError> {
        let message = self.worker_message(worker, message_id).await?;
        let finish = Message::finish(outcome);
        let status = finish.to;
        if message.status.is_final() {
            return if message.status == status && message.chunk_count == Some(chunk_count) {
                // A retry of the same completion.
                Ok(MessageData { message: message_view(&message) })
            } else {
                Err(ApiError::new(
                    ErrorCode::AlreadyComplete,
                    format!("this answer is already {}", message.status.as_str()),
                ))
            };
        }
        if !self.store.chunks(&message.id, chunk_count, 1).await?.is_empty() {
            return Err(ApiError::bad_request(
                "chunk_count is below the seq of a stored chunk",
            ));
        }
        let patch = MessagePatch {
            chunk_count: Some(chunk_count),
            error: error.map(|e| truncate_chars(&e, 2000)),
        };
        let done = match self
            .store
            .transition_message(
                &message.id,
                finish.from,
                finish.to,
                &patch,
                now,
            )
            .await?
        {
            Some(m) => m,
            None => {
                // A concurrent completion won; judge against it.
                let current = self.worker_message(worker, message_id).await?;
                return if current.status == status && current.chunk_count == Some(chunk_count) {
                    Ok(MessageData { message: message_view(&current) })
                } else {
                    Err(ApiError::new(ErrorCode::AlreadyComplete, "this answer is already final"))
                };
            }
        };
        self.announce_message(&done, now).await;
        self.settle_session(&done.worker, &done.session, now).await?;
        Ok(MessageData { message: message_view(&done) })
    }
}

/// Groups chunk views so each pushed frame stays within API Gateway's frame size.
fn split_to_frames(chunks: Vec<crate::protocol::ChunkView>) -> Vec<Vec<crate::protocol::ChunkView>> {
    let budget = MAX_FRAME_BYTES - 1024;
    let mut groups: Vec<Vec<_>> = Vec::new();
    let mut used = 0;
    for c in chunks {
        let size = json(&c).to_string().len();
        match groups.last_mut() {
            Some(g) if used + size <= budget => {
                used += size;
                g.push(c);
            }
            _ => {
                used = size;
                groups.push(vec![c]);
            }
        }
    }
    groups
}

/// Checks what a worker says of its agent: a reason is trimmed (blank is
/// none), at most [`MAX_AGENT_REASON_BYTES`], one line; the time is not
/// negative.
fn agent_report(state: AgentState, reason: Option<String>, at: Millis) -> Result<AgentReport, ApiError> {
    if at < 0 {
        return Err(ApiError::bad_request("at must not be negative"));
    }
    let reason = match reason {
        Some(r) if !r.trim().is_empty() => Some(clean_label(&r, "reason", MAX_AGENT_REASON_BYTES)?),
        _ => None,
    };
    Ok(AgentReport { state, reason, at })
}

/// Checks a title the agent made: trimmed, not empty, at most
/// [`MAX_AGENT_TITLE_CHARS`] characters, one line.
fn clean_agent_title(title: &str) -> Result<String, ApiError> {
    let title = title.trim();
    if title.chars().count() > MAX_AGENT_TITLE_CHARS {
        return Err(ApiError::bad_request(format!(
            "title is longer than {MAX_AGENT_TITLE_CHARS} characters"
        )));
    }
    clean_label(title, "title", MAX_AGENT_TITLE_CHARS * 4)
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
