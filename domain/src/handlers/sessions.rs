//! Sessions: started by a user on one of their workers, made ready (or
//! failed) by the worker once its agent session exists, titled, listed,
//! and ended. A session is busy while one of its answers runs.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{SessionId, UserId, WorkerId};
use crate::model::{
    Message, MessageStatus, Millis, Session, SessionStatus, TitleSource, Worker, WorkerStatus,
};
use crate::protocol::{ModelRef, ServerFrame, SessionData, SessionListData, MAX_AGENT_TITLE_CHARS};
use crate::push::Push;
use crate::store::{Capped, Inserted, SessionPatch, Store};

use super::entry::{clean_label, truncate_chars};
use super::views::session_view;
use super::Domain;

const MAX_TITLE_LEN: usize = 200;

impl<S: Store, P: Push> Domain<S, P> {
    /// `session_start`: a new session on one of the caller's approved
    /// workers, with one of its models; its worker is asked to start it.
    /// Starting the same session again answers as the first time did.
    pub(crate) async fn session_start(
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
            return Err(ApiError::new(
                ErrorCode::WorkerNotApproved,
                "this worker is not approved",
            ));
        }
        if model.provider_id.is_empty() || model.model_id.is_empty() {
            return Err(ApiError::bad_request(
                "model needs provider_id and model_id",
            ));
        }
        if !worker.models.is_empty() && !worker.offers(&model) {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "worker does not offer model {}/{}",
                    model.provider_id, model.model_id
                ),
            ));
        }
        let (title, title_source) = match title {
            Some(t) if !t.trim().is_empty() => (
                clean_label(&t, "title", MAX_TITLE_LEN)?,
                Some(TitleSource::User),
            ),
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
                self.to_worker(&worker, &start_frame(&s), now).await;
                self.announce_session(&s, now).await;
                Ok(SessionData {
                    session: session_view(&s),
                })
            }
            Capped::Done(Inserted::Existing(s)) => {
                if s.owner == session.owner
                    && s.worker == session.worker
                    && s.model == session.model
                {
                    Ok(SessionData {
                        session: session_view(&s),
                    })
                } else {
                    Err(ApiError::new(
                        ErrorCode::Conflict,
                        "this session id is taken",
                    ))
                }
            }
        }
    }

    /// `session_list`: the caller's sessions (of one worker, if named),
    /// newest first, a page at a time.
    pub(crate) async fn session_list(
        &self,
        user: &UserId,
        worker: Option<WorkerId>,
        before: Option<Millis>,
        limit: Option<u32>,
        now: Millis,
    ) -> Result<SessionListData, ApiError> {
        if let Some(w) = &worker {
            self.owned_worker(user, w).await?;
        }
        let limit = limit.unwrap_or(50).clamp(1, 200);
        let sessions = self
            .store
            .sessions_of(user, worker.as_ref(), before, limit)
            .await?;
        let sessions = self.settle_busy(sessions, now).await?;
        Ok(SessionListData {
            sessions: sessions.iter().map(session_view).collect(),
        })
    }

    /// `session_end`: ends a session, with its messages that have not reached
    /// the agent; its worker is told to stop it.
    pub(crate) async fn session_end(
        &self,
        user: &UserId,
        id: &SessionId,
        now: Millis,
    ) -> Result<SessionData, ApiError> {
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
            None => {
                return Ok(SessionData {
                    session: session_view(&session),
                })
            }
        };
        // Messages that never reached the agent end here; running ones end
        // when the worker reports them aborted, or here too if it is offline
        // (it hears of it when it is back, as for `message_abort`).
        self.end_pending(
            &session.worker,
            &session.id,
            MessageStatus::Aborted,
            "the session ended",
            now,
        )
        .await?;
        let worker = self.store.worker(&session.worker).await?;
        if !worker
            .as_ref()
            .is_some_and(|w| w.online(now, self.config.presence_timeout_ms))
        {
            for m in self.store.open_messages(&session.worker).await? {
                if m.session != session.id || !Message::STOPPED_OFFLINE.applies_to(m.status) {
                    continue;
                }
                let why = "the session ended while its worker was offline";
                self.end_here(&m.id, Message::STOPPED_OFFLINE, why, now)
                    .await?;
            }
        }
        if let Some(worker) = worker {
            let frame = ServerFrame::SessionEnd {
                session_id: session.id.clone(),
            };
            self.to_worker(&worker, &frame, now).await;
        }
        self.announce_session(&ended, now).await;
        Ok(SessionData {
            session: session_view(&ended),
        })
    }

    /// `session_ready`: the worker made the session's agent session; the
    /// messages sent meanwhile go out.
    pub(crate) async fn session_ready(
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
            .transition_session(
                &session.id,
                Session::AGENT_READY.from,
                Session::AGENT_READY.to,
                &patch,
                now,
            )
            .await?
        {
            Some(s) => s,
            None if session.agent_session_id.as_deref() == Some(agent_session_id.as_str())
                && !session.status.is_closed() =>
            {
                return Ok(SessionData {
                    session: session_view(&session),
                })
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
        Ok(SessionData {
            session: session_view(&ready),
        })
    }

    /// `session_failed`: the worker could not make (or keep) the agent
    /// session; the session fails, with its messages that were waiting.
    pub(crate) async fn session_failed(
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
            return Ok(SessionData {
                session: session_view(&session),
            });
        };
        self.end_pending(
            &worker.id,
            &failed.id,
            MessageStatus::Failed,
            "the session failed",
            now,
        )
        .await?;
        self.announce_session(&failed, now).await;
        Ok(SessionData {
            session: session_view(&failed),
        })
    }

    /// The agent titled one of this worker's sessions: the session takes it
    /// unless its user gave it a title.
    pub(crate) async fn session_title(
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
            return Ok(SessionData {
                session: session_view(&session),
            });
        }
        match self.store.set_agent_title(&session.id, &title, now).await? {
            Some(titled) => {
                self.announce_session(&titled, now).await;
                Ok(SessionData {
                    session: session_view(&titled),
                })
            }
            None => Ok(SessionData {
                session: session_view(&session),
            }),
        }
    }

    /// Asks a worker that said hello again to start the sessions it has
    /// not yet made ready (it ignores one it has).
    pub(crate) async fn resend_session_starts(
        &self,
        worker: &Worker,
        now: Millis,
    ) -> Result<(), ApiError> {
        for session in self.store.starting_sessions(&worker.id).await? {
            self.to_worker(worker, &start_frame(&session), now).await;
        }
        Ok(())
    }

    /// A busy session with no running answer is ready again. Each message
    /// writes its own status before it looks at the session's others, so
    /// of two racing messages at least one sees the other.
    pub(crate) async fn settle_session(
        &self,
        worker: &WorkerId,
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

    /// A session of the caller's; anyone else's is `not_found`.
    pub(crate) async fn owned_session(
        &self,
        user: &UserId,
        id: &SessionId,
    ) -> Result<Session, ApiError> {
        self.store
            .session(id)
            .await?
            .filter(|s| &s.owner == user)
            .ok_or_else(|| ApiError::not_found("session"))
    }

    /// A session on this worker; any other is `not_found`.
    async fn worker_session(&self, worker: &Worker, id: &SessionId) -> Result<Session, ApiError> {
        self.store
            .session(id)
            .await?
            .filter(|s| s.worker == worker.id)
            .ok_or_else(|| ApiError::not_found("session"))
    }
}

/// What a worker is sent to start a session's agent session.
fn start_frame(s: &Session) -> ServerFrame {
    ServerFrame::SessionStart {
        session_id: s.id.clone(),
        model: s.model.clone(),
        title: s.title.clone(),
    }
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
