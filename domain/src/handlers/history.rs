//! Reading a session: watching it (its live events, after its history
//! from a cursor), and its history a page at a time, with no gap and no
//! duplicate between the two.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{SessionId, UserId};
use crate::model::{Connection, Millis, Session};
use crate::protocol::{Cursor, Empty, HistoryPage};
use crate::push::Push;
use crate::store::Store;

use super::views::{chunk_view, json, message_view, session_view};
use super::Domain;

/// History pages stay well under API Gateway's 128 KB message limit.
const PAGE_BUDGET_BYTES: usize = 96 * 1024;
const PAGE_MESSAGES: u32 = 20;
const PAGE_CHUNKS: u32 = 200;

impl<S: Store, P: Push> Domain<S, P> {
    /// `session_watch`: from now on the connection receives the session's
    /// events; the reply is its history from `after`.
    pub(crate) async fn session_watch(
        &self,
        conn: &Connection,
        user: &UserId,
        id: &SessionId,
        after: Option<Cursor>,
        now: Millis,
    ) -> Result<HistoryPage, ApiError> {
        let session = self.session_to_read(user, id, now).await?;
        // Watch first, then read: whatever the read misses is stored
        // later, and its fan-out finds this watch.
        if !self.store.watch(&session.id, &conn.id).await? {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this connection is gone; reconnect",
            ));
        }
        self.history_page(&session, after.unwrap_or_default()).await
    }

    /// `session_unwatch`: the connection stops receiving the session's events.
    pub(crate) async fn session_unwatch(
        &self,
        conn: &Connection,
        user: &UserId,
        id: &SessionId,
    ) -> Result<Empty, ApiError> {
        let session = self.owned_session(user, id).await?;
        self.store.unwatch(&session.id, &conn.id).await?;
        Ok(Empty {})
    }

    /// `session_history`: one page of the session's history from `after`.
    pub(crate) async fn session_history(
        &self,
        user: &UserId,
        id: &SessionId,
        after: Option<Cursor>,
        now: Millis,
    ) -> Result<HistoryPage, ApiError> {
        let session = self.session_to_read(user, id, now).await?;
        self.history_page(&session, after.unwrap_or_default()).await
    }

    /// A session of the caller's, to read: with the lease applied first, so
    /// that an answer whose worker has gone away shows as ended.
    async fn session_to_read(
        &self,
        user: &UserId,
        id: &SessionId,
        now: Millis,
    ) -> Result<Session, ApiError> {
        let session = self.owned_session(user, id).await?;
        self.settle_if_worker_gone(session, now).await
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
                let mut seq = if m.number == after.message {
                    after.seq
                } else {
                    0
                };
                let view = message_view(&m);
                let size = json(&view).to_string().len();
                if used + size > PAGE_BUDGET_BYTES && !page.messages.is_empty() {
                    page.next = Some(Cursor {
                        message: m.number,
                        seq,
                    });
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
                            page.next = Some(Cursor {
                                message: m.number,
                                seq: c.seq,
                            });
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
