//! Chunks: the pieces of an answer a worker sends, stored once per
//! (message, seq), acknowledged, and fanned out to the session's watchers.

use std::collections::HashSet;

use crate::error::{ApiError, ErrorCode};
use crate::ids::MessageId;
use crate::model::{Chunk, Millis, Worker};
use crate::protocol::{ChunkIn, ChunkView, ChunksAck, ServerFrame, MAX_FRAME_BYTES};
use crate::push::Push;
use crate::store::{Inserted, Store};

use super::views::{chunk_view, json};
use super::Domain;

/// Most chunks one `chunks` frame may carry.
const MAX_CHUNKS_PER_FRAME: usize = 256;

impl<S: Store, P: Push> Domain<S, P> {
    pub(crate) async fn chunks(
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
}

/// Groups chunk views so each pushed frame stays within API Gateway's frame size.
fn split_to_frames(chunks: Vec<ChunkView>) -> Vec<Vec<ChunkView>> {
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
