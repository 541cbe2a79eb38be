//! Chunks: the pieces of an answer a worker sends, stored once per
//! (message, seq), acknowledged, and fanned out to the session's watchers.

use std::collections::HashSet;

use crate::error::{ApiError, ErrorCode};
use crate::ids::MessageId;
use crate::model::{Chunk, Millis, Worker};
use crate::protocol::{ChunkIn, ChunkView, ChunksAck, ServerFrame, MAX_FRAME_BYTES};
use crate::push::Push;
use crate::store::{Inserted, Store};

use super::views::chunk_view;
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
            let empty = ServerFrame::Chunks {
                session_id: message.session.clone(),
                message_id: message.id.clone(),
                chunks: Vec::new(),
            };
            let frames = || chunk_frames(&empty.to_json(), &fresh);
            self.to_watchers_each(&message.session, frames, now).await;
        }
        Ok(ack)
    }
}

/// The JSON text of the `chunks` frames that carry `chunks`, in order, as
/// many in each as keep it within API Gateway's frame size. `empty` is the
/// text of the frame with no chunks. Each chunk is serialised once: its
/// text both sizes the frames and goes into one.
fn chunk_frames(empty: &str, chunks: &[ChunkView]) -> Vec<String> {
    // `chunks` is the frame's last field: its chunks go between the two.
    let (head, tail) = empty.split_at(empty.len() - "]}".len());
    assert!(
        head.ends_with('[') && tail == "]}",
        "a chunks frame ends with its chunks: {empty}"
    );
    let budget = MAX_FRAME_BYTES - 1024;
    let mut frames: Vec<String> = Vec::new();
    let mut used = 0;
    for c in chunks {
        let text = serde_json::to_string(c).expect("chunk views serialize");
        match frames.last_mut() {
            Some(frame) if used + text.len() <= budget => {
                used += text.len();
                frame.push(',');
                frame.push_str(&text);
            }
            _ => {
                used = text.len();
                frames.push(format!("{head}{text}"));
            }
        }
    }
    for frame in &mut frames {
        frame.push_str(tail);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MessageId, SessionId};
    use crate::protocol::ChunkBody;

    #[test]
    fn chunk_frames_are_the_frames_of_their_chunks_each_within_a_frame() {
        let (session_id, message_id) = (SessionId::random(), MessageId::random());
        let view = |seq: u32, len: usize| ChunkView {
            session_id: session_id.clone(),
            message_id: message_id.clone(),
            seq,
            body: ChunkBody::Text {
                part_id: "prt_1".into(),
                delta: "é\"x".repeat(len / 4),
            },
        };
        let chunks: Vec<ChunkView> = (0..40).map(|seq| view(seq, 3_000)).collect();
        let frame = |chunks: Vec<ChunkView>| ServerFrame::Chunks {
            session_id: session_id.clone(),
            message_id: message_id.clone(),
            chunks,
        };
        let frames = chunk_frames(&frame(Vec::new()).to_json(), &chunks);
        assert!(frames.len() > 1, "{} frames", frames.len());
        let mut seqs = Vec::new();
        for text in &frames {
            assert!(text.len() <= MAX_FRAME_BYTES, "{} bytes", text.len());
            let parsed: ServerFrame = serde_json::from_str(text).expect("a frame parses");
            let ServerFrame::Chunks { chunks: group, .. } = &parsed else {
                panic!("not a chunks frame: {text}");
            };
            seqs.extend(group.iter().map(|c| c.seq));
            assert_eq!(text, &frame(group.clone()).to_json());
        }
        assert_eq!(seqs, (0..40).collect::<Vec<_>>());
        let one = chunk_frames(&frame(Vec::new()).to_json(), &chunks[..1]);
        assert_eq!(one, vec![frame(chunks[..1].to_vec()).to_json()]);
    }
}
