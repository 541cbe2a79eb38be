//! Messages, the chunks of their answers, and the prompts an answer asks.

use rusqlite::{params, Connection as SqlConn};
use tether_domain::ids::{MessageId, PromptId, SessionId, WorkerId};
use tether_domain::model::{Chunk, Message, MessageStatus, Millis, Prompt};
use tether_domain::protocol::PromptAnswer;
use tether_domain::store::{Capped, Inserted, MessagePatch, StoreError, StoreResult};

use super::rows::{chunk_row, message_row, prompt_row, to_json};
use super::sql::{self, all, commit, count, exec, immediate, one, opt_json, status_set};
use super::SqliteStore;

/// Stores a chunk once per (message, seq); a second put finds the first.
fn put_chunk(conn: &mut SqlConn, c: Chunk) -> StoreResult<Inserted<Chunk>> {
    const OP: &str = "insert_chunk";
    let body = to_json("chunk body", &c.body)?;
    let tx = immediate(conn, OP)?;
    let p = params![c.message.as_str(), c.seq, body, c.created_at];
    if exec(&tx, OP, &sql::INSERT_CHUNK, p)? == 1 {
        commit(tx, OP)?;
        return Ok(Inserted::New(c));
    }
    let key = params![c.message.as_str(), c.seq];
    match one(&tx, OP, &sql::CHUNK_BY_KEY, key, chunk_row)? {
        Some(stored) => Ok(Inserted::Existing(stored)),
        None => Err(StoreError::Unavailable(format!(
            "{OP}: chunk {} of {} was neither inserted nor found",
            c.seq, c.message
        ))),
    }
}

pub(super) async fn insert_message(
    store: &SqliteStore,
    message: &Message,
    max_open: u32,
) -> StoreResult<Capped<Message>> {
    let mut m = message.clone();
    store
        .run("insert_message", move |conn| {
            const OP: &str = "insert_message";
            let tx = immediate(conn, OP)?;
            if let Some(stored) = one(&tx, OP, &sql::MESSAGE_BY_ID, [m.id.as_str()], message_row)? {
                return Ok(Inserted::Existing(stored).into());
            }
            let bump = &sql::BUMP_MESSAGE_COUNT;
            m.number =
                one(&tx, OP, bump, [m.session.as_str()], |r| r.get(0))?.ok_or_else(|| {
                    StoreError::Conflict(format!("{OP}: session {} does not exist", m.session))
                })?;
            // Refused: dropping the transaction rolls the bump back.
            if !m.status.is_final()
                && count(&tx, OP, &sql::COUNT_OPEN_MESSAGES, [m.owner.as_str()])? >= max_open
            {
                return Ok(Capped::Full);
            }
            let model = opt_json("model", m.model.as_ref())?;
            let p = params![
                m.id.as_str(),
                m.session.as_str(),
                m.owner.as_str(),
                m.worker.as_str(),
                m.number,
                m.text,
                m.status.as_str(),
                m.chunk_count,
                m.error,
                m.created_at,
                m.updated_at,
                model
            ];
            exec(&tx, OP, &sql::INSERT_MESSAGE, p)?;
            commit(tx, OP)?;
            Ok(Inserted::New(m).into())
        })
        .await
}

pub(super) async fn message(store: &SqliteStore, id: &MessageId) -> StoreResult<Option<Message>> {
    let id = id.clone();
    store
        .run_read("message", move |conn| {
            one(
                conn,
                "message",
                &sql::MESSAGE_BY_ID,
                [id.as_str()],
                message_row,
            )
        })
        .await
}

pub(super) async fn messages_of(
    store: &SqliteStore,
    session: &SessionId,
    from: u32,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let session = session.clone();
    store
        .run_read("messages_of", move |conn| {
            let p = params![session.as_str(), from, limit];
            all(conn, "messages_of", &sql::MESSAGES_OF, p, message_row)
        })
        .await
}

pub(super) async fn open_messages(
    store: &SqliteStore,
    worker: &WorkerId,
) -> StoreResult<Vec<Message>> {
    let worker = worker.clone();
    store
        .run_read("open_messages", move |conn| {
            all(
                conn,
                "open_messages",
                &sql::OPEN_MESSAGES,
                [worker.as_str()],
                message_row,
            )
        })
        .await
}

pub(super) async fn transition_message(
    store: &SqliteStore,
    id: &MessageId,
    from: &[MessageStatus],
    to: MessageStatus,
    patch: &MessagePatch,
    now: Millis,
) -> StoreResult<Option<Message>> {
    let id = id.clone();
    let from = status_set(from, MessageStatus::as_str)?;
    let patch = patch.clone();
    store
        .run("transition_message", move |conn| {
            let p = params![
                id.as_str(),
                from,
                to.as_str(),
                patch.chunk_count,
                patch.error,
                now
            ];
            one(
                conn,
                "transition_message",
                &sql::TRANSITION_MESSAGE,
                p,
                message_row,
            )
        })
        .await
}

pub(super) async fn insert_chunk(
    store: &SqliteStore,
    chunk: &Chunk,
) -> StoreResult<Inserted<Chunk>> {
    let c = chunk.clone();
    store
        .run("insert_chunk", move |conn| put_chunk(conn, c))
        .await
}

pub(super) async fn insert_chunks(
    store: &SqliteStore,
    chunks: &[Chunk],
) -> StoreResult<Vec<Inserted<Chunk>>> {
    let chunks = chunks.to_vec();
    // One job for the frame: its chunks share the writer's batch anyway,
    // and this takes one trip to the writer instead of one per chunk.
    store
        .run("insert_chunks", move |conn| {
            chunks.into_iter().map(|c| put_chunk(conn, c)).collect()
        })
        .await
}

pub(super) async fn chunks(
    store: &SqliteStore,
    message: &MessageId,
    from: u32,
    limit: u32,
) -> StoreResult<Vec<Chunk>> {
    let message = message.clone();
    store
        .run_read("chunks", move |conn| {
            all(
                conn,
                "chunks",
                &sql::CHUNKS,
                params![message.as_str(), from, limit],
                chunk_row,
            )
        })
        .await
}

pub(super) async fn insert_prompt(
    store: &SqliteStore,
    prompt: &Prompt,
) -> StoreResult<Inserted<Prompt>> {
    let pr = prompt.clone();
    store
        .run("insert_prompt", move |conn| {
            const OP: &str = "insert_prompt";
            let answer = opt_json("prompt answer", pr.answer.as_ref())?;
            let tx = immediate(conn, OP)?;
            let p = params![
                pr.id.as_str(),
                pr.session.as_str(),
                pr.message.as_str(),
                pr.worker.as_str(),
                pr.owner.as_str(),
                pr.kind.as_str(),
                answer,
                pr.delivered,
                pr.created_at
            ];
            if exec(&tx, OP, &sql::INSERT_PROMPT, p)? == 1 {
                commit(tx, OP)?;
                return Ok(Inserted::New(pr));
            }
            match one(&tx, OP, &sql::PROMPT_BY_ID, [pr.id.as_str()], prompt_row)? {
                Some(stored) => Ok(Inserted::Existing(stored)),
                None => Err(StoreError::Unavailable(format!(
                    "{OP}: prompt {} was neither inserted nor found",
                    pr.id
                ))),
            }
        })
        .await
}

pub(super) async fn prompt(store: &SqliteStore, id: &PromptId) -> StoreResult<Option<Prompt>> {
    let id = id.clone();
    store
        .run_read("prompt", move |conn| {
            one(
                conn,
                "prompt",
                &sql::PROMPT_BY_ID,
                [id.as_str()],
                prompt_row,
            )
        })
        .await
}

pub(super) async fn answer_prompt(
    store: &SqliteStore,
    id: &PromptId,
    answer: &PromptAnswer,
) -> StoreResult<Option<Prompt>> {
    let id = id.clone();
    let answer = to_json("prompt answer", answer)?;
    store
        .run("answer_prompt", move |conn| {
            let p = [id.as_str(), answer.as_str()];
            one(conn, "answer_prompt", &sql::ANSWER_PROMPT, p, prompt_row)
        })
        .await
}

pub(super) async fn set_prompt_delivered(store: &SqliteStore, id: &PromptId) -> StoreResult<()> {
    let id = id.clone();
    store
        .run("set_prompt_delivered", move |conn| {
            let p = [id.as_str()];
            exec(conn, "set_prompt_delivered", &sql::SET_PROMPT_DELIVERED, p).map(drop)
        })
        .await
}

pub(super) async fn undelivered_prompts(
    store: &SqliteStore,
    worker: &WorkerId,
) -> StoreResult<Vec<Prompt>> {
    let worker = worker.clone();
    store
        .run_read("undelivered_prompts", move |conn| {
            let p = [worker.as_str()];
            all(
                conn,
                "undelivered_prompts",
                &sql::UNDELIVERED_PROMPTS,
                p,
                prompt_row,
            )
        })
        .await
}
