//! Prompts: a permission request or a question of the agent, opened by its
//! chunk, answered by the user (`prompt_reply`), and delivered to the
//! worker (`prompt_delivered`), again after a hello until it is.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{PromptId, UserId};
use crate::model::{Chunk, Message, Millis, Prompt, PromptKind, Worker};
use crate::protocol::{ChunkBody, Empty, PromptAnswer, PromptReplyData, ServerFrame};
use crate::push::Push;
use crate::store::Store;

use super::Domain;

impl<S: Store, P: Push> Domain<S, P> {
    /// `prompt_reply`: the user answers a prompt of theirs; its worker is
    /// sent the answer.
    pub(crate) async fn prompt_reply(
        &self,
        user: &UserId,
        id: &PromptId,
        answer: PromptAnswer,
        now: Millis,
    ) -> Result<PromptReplyData, ApiError> {
        let prompt = self
            .store
            .prompt(id)
            .await?
            .filter(|p| &p.owner == user)
            .ok_or_else(|| ApiError::not_found("prompt"))?;
        let fits = matches!(
            (&answer, prompt.kind),
            (PromptAnswer::Permission { .. }, PromptKind::Permission)
                | (
                    PromptAnswer::Question { .. } | PromptAnswer::QuestionRejected,
                    PromptKind::Question
                )
        );
        if !fits {
            return Err(ApiError::bad_request(
                "this answer does not fit the prompt's kind",
            ));
        }
        // opencode keeps a prompt of an aborted answer open, and an
        // answer to it would run nothing: refuse it plainly.
        if self
            .store
            .message(&prompt.message)
            .await?
            .is_some_and(|m| m.status.is_final())
        {
            return Err(ApiError::new(
                ErrorCode::MessageFinal,
                "the answer this prompt belongs to has ended",
            ));
        }
        let answered = self
            .store
            .answer_prompt(&prompt.id, &answer)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::AlreadyAnswered,
                    "this prompt was already answered",
                )
            })?;
        if let Some(worker) = self.store.worker(&answered.worker).await? {
            self.to_worker(&worker, &answer_frame(&answered, answer), now)
                .await;
        }
        Ok(PromptReplyData {
            prompt_id: answered.id,
        })
    }

    /// `prompt_delivered`: the worker passed a prompt's answer to its agent.
    pub(crate) async fn prompt_delivered(
        &self,
        worker: &Worker,
        id: &PromptId,
    ) -> Result<Empty, ApiError> {
        let prompt = self
            .store
            .prompt(id)
            .await?
            .filter(|p| p.worker == worker.id)
            .ok_or_else(|| ApiError::not_found("prompt"))?;
        self.store.set_prompt_delivered(&prompt.id).await?;
        Ok(Empty {})
    }

    /// A permission request or question chunk opens a prompt the user answers.
    pub(crate) async fn record_prompt(
        &self,
        message: &Message,
        chunk: &Chunk,
        now: Millis,
    ) -> Result<(), ApiError> {
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

    /// Sends a worker that said hello again the answers it has not
    /// acknowledged; returns how many went.
    pub(crate) async fn resend_prompt_answers(
        &self,
        worker: &Worker,
        now: Millis,
    ) -> Result<u32, ApiError> {
        let mut sent = 0u32;
        for prompt in self.store.undelivered_prompts(&worker.id).await? {
            if let Some(answer) = prompt.answer.clone() {
                if self
                    .to_worker(worker, &answer_frame(&prompt, answer), now)
                    .await
                {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    }
}

/// What a worker is sent with a prompt's answer.
fn answer_frame(prompt: &Prompt, answer: PromptAnswer) -> ServerFrame {
    ServerFrame::PromptAnswer {
        prompt_id: prompt.id.clone(),
        session_id: prompt.session.clone(),
        message_id: prompt.message.clone(),
        answer,
    }
}
