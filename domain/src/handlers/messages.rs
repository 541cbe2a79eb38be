//! Messages and the state of their answers: sent by a user, started by the
//! worker, completed (as the worker reports) or aborted. How a message gets
//! to its worker is `dispatch.rs`'s.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{MessageId, SessionId, UserId, WorkerId};
use crate::model::{Message, MessageStatus, Millis, Session, SessionStatus, Worker, WorkerStatus};
use crate::protocol::{MessageData, ModelRef, Outcome, ServerFrame, MAX_TEXT_BYTES};
use crate::push::Push;
use crate::store::{Capped, Inserted, MessagePatch, SessionPatch, Store};

use super::entry::truncate_chars;
use super::views::message_view;
use super::Domain;

impl<S: Store, P: Push> Domain<S, P> {
    /// `message_send`: stores a message (once per id) and dispatches it if
    /// its worker can take it now; otherwise it waits, queued.
    pub(crate) async fn message_send(
        &self,
        user: &UserId,
        session_id: &SessionId,
        message_id: MessageId,
        text: String,
        model: Option<ModelRef>,
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
            return Err(ApiError::new(
                ErrorCode::WorkerNotApproved,
                "this session's worker is not approved",
            ));
        }
        // Only a model the worker offers (so the stored one is as bounded as
        // the worker's list); the session's own is no choice at all.
        let model = model.filter(|m| *m != session.model);
        if let Some(m) = &model {
            if !worker.offers(m) {
                return Err(ApiError::new(
                    ErrorCode::UnknownModel,
                    format!(
                        "this session's worker does not offer model {}/{}",
                        truncate_chars(&m.provider_id, 64),
                        truncate_chars(&m.model_id, 64)
                    ),
                ));
            }
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
            model,
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
                return if m.session == message.session
                    && m.owner == message.owner
                    && m.text == message.text
                    && m.model == message.model
                {
                    Ok(MessageData {
                        message: message_view(&m),
                    })
                } else {
                    Err(ApiError::new(
                        ErrorCode::Conflict,
                        "this message id is taken",
                    ))
                };
            }
        };
        self.announce_message(&stored, now).await;
        let stored = self.dispatch(&worker, &session, stored, now).await?;
        Ok(MessageData {
            message: message_view(&stored),
        })
    }

    /// `message_abort`: stops an answer. One that has not reached the agent
    /// ends here; a running one ends when its worker says so, or here if
    /// its worker is offline.
    pub(crate) async fn message_abort(
        &self,
        user: &UserId,
        id: &MessageId,
        now: Millis,
    ) -> Result<MessageData, ApiError> {
        let message = self
            .store
            .message(id)
            .await?
            .filter(|m| &m.owner == user)
            .ok_or_else(|| ApiError::not_found("message"))?;
        if message.status.is_final() {
            return Ok(MessageData {
                message: message_view(&message),
            });
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
            return Ok(MessageData {
                message: message_view(&current),
            });
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
                self.to_worker(&worker, &abort_frame(&current), now).await;
            }
        }
        Ok(MessageData {
            message: message_view(&current),
        })
    }

    /// `message_started`: the worker handed a message to its agent.
    pub(crate) async fn message_started(
        &self,
        worker: &Worker,
        id: &MessageId,
        now: Millis,
    ) -> Result<MessageData, ApiError> {
        let message = self.worker_message(worker, id).await?;
        let m = self.start_message(&message, now).await?;
        Ok(MessageData {
            message: message_view(&m),
        })
    }

    /// Marks a message streaming (idempotent) and its session busy.
    pub(crate) async fn start_message(
        &self,
        message: &Message,
        now: Millis,
    ) -> Result<Message, ApiError> {
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
                    Err(ApiError::new(
                        ErrorCode::InvalidState,
                        "the message cannot start",
                    ))
                }
            }
        }
    }

    /// `message_complete`: the worker says how an answer ended and how many
    /// chunks it has; a retry of the same completion answers the same.
    pub(crate) async fn complete(
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
                Ok(MessageData {
                    message: message_view(&message),
                })
            } else {
                Err(ApiError::new(
                    ErrorCode::AlreadyComplete,
                    format!("this answer is already {}", message.status.as_str()),
                ))
            };
        }
        if !self
            .store
            .chunks(&message.id, chunk_count, 1)
            .await?
            .is_empty()
        {
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
            .transition_message(&message.id, finish.from, finish.to, &patch, now)
            .await?
        {
            Some(m) => m,
            None => {
                // A concurrent completion won; judge against it.
                let current = self.worker_message(worker, message_id).await?;
                return if current.status == status && current.chunk_count == Some(chunk_count) {
                    Ok(MessageData {
                        message: message_view(&current),
                    })
                } else {
                    Err(ApiError::new(
                        ErrorCode::AlreadyComplete,
                        "this answer is already final",
                    ))
                };
            }
        };
        self.announce_message(&done, now).await;
        self.settle_session(&done.worker, &done.session, now)
            .await?;
        Ok(MessageData {
            message: message_view(&done),
        })
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

    /// A message on this worker; any other is `not_found`.
    pub(crate) async fn worker_message(
        &self,
        worker: &Worker,
        id: &MessageId,
    ) -> Result<Message, ApiError> {
        self.store
            .message(id)
            .await?
            .filter(|m| m.worker == worker.id)
            .ok_or_else(|| ApiError::not_found("message"))
    }
}

/// What a worker is sent to stop answering a message.
pub(super) fn abort_frame(message: &Message) -> ServerFrame {
    ServerFrame::MessageAbort {
        session_id: message.session.clone(),
        message_id: message.id.clone(),
    }
}
