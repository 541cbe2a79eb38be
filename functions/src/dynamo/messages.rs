//! Messages, the chunks of their answers, and the prompts an answer asks.

use tether_domain::ids::{MessageId, PromptId, SessionId, WorkerId};
use tether_domain::model::{Chunk, Message, MessageStatus, Millis, Prompt, Session};
use tether_domain::protocol::PromptAnswer;
use tether_domain::store::{Capped, Inserted, MessagePatch, StoreError, StoreResult};

use super::codec::{self, Entity, Rec, OPEN_MESSAGES, STATUS, UPDATED_AT};
use super::items::{self, MessageRecord};
use super::keys;
use super::ops::{QuerySpec, Update};
use super::tx::{status_in, Decided, Outcome, Tx};
use super::{DynamoStore, Retry};

pub(super) async fn insert_message(
    store: &DynamoStore,
    message: &Message,
    max_open: u32,
) -> StoreResult<Capped<Message>> {
    const OP: &str = "insert_message";
    let message_key = keys::message(message.id.as_str());
    let session_key = keys::session(message.session.as_str());
    let mut retry = Retry::new(OP);
    loop {
        if let Some(stored) = store.get_entity::<MessageRecord>(OP, &message_key).await? {
            return Ok(Inserted::Existing(stored.message).into());
        }
        let Some(session) = store.get_entity::<Rec<Session>>(OP, &session_key).await? else {
            return Err(StoreError::Conflict(format!(
                "{OP}: session {} does not exist",
                message.session
            )));
        };
        let number = session.value.message_count;
        let bumped = Rec {
            value: Session {
                message_count: number + 1,
                ..session.value.clone()
            },
            rev: session.rev,
        };
        let record = MessageRecord {
            message: Message {
                number,
                ..message.clone()
            },
            session_created: session.value.created_at,
            rev: 0,
        };
        // The count and the message in one transaction: the count moves
        // only if this message is stored, and only from what was read.
        // So does the owner's count of open messages, and only while it
        // is below the cap.
        let mut tx = Tx::default();
        tx.entity(Some(&session), Some(&bumped))?;
        tx.entity(None, Some(&record))?;
        let counts = keys::user_counts(message.owner.as_str());
        let counted = (!message.status.is_final())
            .then(|| tx.count(counts, OPEN_MESSAGES, 1, Some(max_open)));
        match store.commit(OP, tx).await? {
            Outcome::Done => return Ok(Inserted::New(record.message).into()),
            outcome if outcome.failed(counted) => {
                // At the cap, unless a retry of this very message
                // stored it meanwhile.
                return Ok(
                    match store.get_entity::<MessageRecord>(OP, &message_key).await? {
                        Some(stored) => Inserted::Existing(stored.message).into(),
                        None => Capped::Full,
                    },
                );
            }
            // Stored by a concurrent insert of the same id, or the count
            // moved: read again.
            Outcome::Cancelled(_) => retry.again().await?,
        }
    }
}

pub(super) async fn message(store: &DynamoStore, id: &MessageId) -> StoreResult<Option<Message>> {
    Ok(store
        .get_entity::<MessageRecord>("message", &keys::message(id.as_str()))
        .await?
        .map(|r| r.message))
}

pub(super) async fn messages_of(
    store: &DynamoStore,
    session: &SessionId,
    from: u32,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    const OP: &str = "messages_of";
    let q = QuerySpec::between(
        &keys::session_pk(session.as_str()),
        &keys::session_message_sk(from),
        &keys::session_message_sk(u32::MAX),
    )
    .limit(limit);
    let ids = store.query_targets(OP, q).await?;
    let keys = ids.iter().map(|id| keys::message(id)).collect();
    let messages = store.get_many::<MessageRecord>(OP, keys).await?;
    Ok(messages.into_iter().map(|r| r.message).collect())
}

pub(super) async fn open_messages(
    store: &DynamoStore,
    worker: &WorkerId,
) -> StoreResult<Vec<Message>> {
    const OP: &str = "open_messages";
    let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::OPEN_ENTRY);
    let ids = store.query_targets(OP, q).await?;
    let keys = ids.iter().map(|id| keys::message(id)).collect();
    let messages = store.get_many::<MessageRecord>(OP, keys).await?;
    Ok(messages.into_iter().map(|r| r.message).collect())
}

pub(super) async fn transition_message(
    store: &DynamoStore,
    id: &MessageId,
    from: &[MessageStatus],
    to: MessageStatus,
    patch: &MessagePatch,
    now: Millis,
) -> StoreResult<Option<Message>> {
    const OP: &str = "transition_message";
    if from.is_empty() {
        return Ok(None);
    }
    let key = keys::message(id.as_str());
    if from.iter().all(|s| s.is_final() == to.is_final()) {
        // The open entry and the owner's count of open messages stay as
        // they are: one conditional update.
        let statuses: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        let u = Update::new(key, status_in(&statuses))
            .set(STATUS, codec::s(to.as_str()))
            .set(UPDATED_AT, codec::n(now))
            .set_opt("chunk_count", patch.chunk_count.map(codec::n))
            .set_opt("error", patch.error.as_deref().map(codec::s));
        return match store.update(OP, u).await? {
            Some(item) => Ok(Some(MessageRecord::from_item(&item)?.message)),
            None => Ok(None),
        };
    }
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<MessageRecord>(OP, &key).await? else {
            return Ok(None);
        };
        if !from.contains(&old.message.status) {
            return Ok(None);
        }
        let m = &old.message;
        let new = MessageRecord {
            message: Message {
                status: to,
                chunk_count: patch.chunk_count.or(m.chunk_count),
                error: patch.error.clone().or_else(|| m.error.clone()),
                updated_at: now,
                ..m.clone()
            },
            ..old.clone()
        };
        // The open entry and the owner's count of open messages move
        // together.
        let delta = i64::from(!to.is_final()) - i64::from(!m.status.is_final());
        let counts = keys::user_counts(m.owner.as_str());
        match store
            .replace_counted(OP, &old, &new, counts, OPEN_MESSAGES, delta)
            .await?
        {
            Decided::Done => return Ok(Some(new.message)),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn insert_chunk(
    store: &DynamoStore,
    chunk: &Chunk,
) -> StoreResult<Inserted<Chunk>> {
    const OP: &str = "insert_chunk";
    match store.put_if_absent(OP, items::chunk_item(chunk)?).await? {
        Ok(()) => Ok(Inserted::New(chunk.clone())),
        Err(Some(stored)) => Ok(Inserted::Existing(items::chunk_from_item(&stored)?)),
        Err(None) => {
            let key = keys::chunk(chunk.message.as_str(), chunk.seq);
            match store.get(OP, &key).await? {
                Some(stored) => Ok(Inserted::Existing(items::chunk_from_item(&stored)?)),
                None => Err(StoreError::Unavailable(format!(
                    "{OP}: chunk {} of {} was neither inserted nor found",
                    chunk.seq, chunk.message
                ))),
            }
        }
    }
}

pub(super) async fn chunks(
    store: &DynamoStore,
    message: &MessageId,
    from: u32,
    limit: u32,
) -> StoreResult<Vec<Chunk>> {
    let q = QuerySpec::between(
        &keys::message_pk(message.as_str()),
        &keys::chunk_sk(from),
        &keys::chunk_sk(u32::MAX),
    )
    .limit(limit);
    store
        .query("chunks", q)
        .await?
        .iter()
        .map(items::chunk_from_item)
        .collect()
}

pub(super) async fn insert_prompt(
    store: &DynamoStore,
    prompt: &Prompt,
) -> StoreResult<Inserted<Prompt>> {
    Ok(
        match store
            .insert_or_existing("insert_prompt", Rec::new(prompt.clone()))
            .await?
        {
            Inserted::New(r) => Inserted::New(r.value),
            Inserted::Existing(r) => Inserted::Existing(r.value),
        },
    )
}

pub(super) async fn prompt(store: &DynamoStore, id: &PromptId) -> StoreResult<Option<Prompt>> {
    Ok(store
        .get_entity::<Rec<Prompt>>("prompt", &keys::prompt(id.as_str()))
        .await?
        .map(|r| r.value))
}

pub(super) async fn answer_prompt(
    store: &DynamoStore,
    id: &PromptId,
    answer: &PromptAnswer,
) -> StoreResult<Option<Prompt>> {
    const OP: &str = "answer_prompt";
    let key = keys::prompt(id.as_str());
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<Rec<Prompt>>(OP, &key).await? else {
            return Ok(None);
        };
        if old.value.answer.is_some() {
            return Ok(None);
        }
        let new = Rec {
            value: Prompt {
                answer: Some(answer.clone()),
                ..old.value.clone()
            },
            rev: old.rev,
        };
        match store.replace(OP, &old, &new).await? {
            Decided::Done => return Ok(Some(new.value)),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn set_prompt_delivered(store: &DynamoStore, id: &PromptId) -> StoreResult<()> {
    const OP: &str = "set_prompt_delivered";
    let key = keys::prompt(id.as_str());
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<Rec<Prompt>>(OP, &key).await? else {
            return Ok(());
        };
        if old.value.delivered {
            return Ok(());
        }
        let new = Rec {
            value: Prompt {
                delivered: true,
                ..old.value.clone()
            },
            rev: old.rev,
        };
        match store.replace(OP, &old, &new).await? {
            Decided::Done => return Ok(()),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn undelivered_prompts(
    store: &DynamoStore,
    worker: &WorkerId,
) -> StoreResult<Vec<Prompt>> {
    const OP: &str = "undelivered_prompts";
    let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::UNDELIVERED_ENTRY);
    let ids = store.query_targets(OP, q).await?;
    let keys = ids.iter().map(|id| keys::prompt(id)).collect();
    let prompts = store.get_many::<Rec<Prompt>>(OP, keys).await?;
    Ok(prompts.into_iter().map(|r| r.value).collect())
}
