//! Entity builders: test values of every record, and seeds that store a
//! user, a worker, sessions and messages.

use std::fmt::Debug;

use crate::auth::{Secret, SecretHash};
use crate::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use crate::model::{
    Chunk, Connection, Message, MessageStatus, Millis, Principal, Prompt, PromptKind, Session,
    SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
use crate::protocol::{ChunkBody, ModelInfo, ModelRef, PermissionReply, PromptAnswer};
use crate::store::{Capped, Inserted, Store, StoreError};

/// A fixed "now" for tests (2023-11-14), far from 0 so that `T0 - x` stays
/// a plausible time.
pub const T0: Millis = 1_700_000_000_000;
/// How long test connections and tickets live.
pub const HOUR: Millis = 3_600_000;
/// The cap of an insert that must not be refused for its count.
pub const NO_CAP: u32 = u32::MAX;

/// The hash of a fresh random secret.
pub fn secret_hash() -> SecretHash {
    Secret::generate("tsk_").hash()
}

/// A non-admin user created at [`T0`].
pub fn user(name: &str) -> User {
    User {
        id: UserId::random(),
        name: name.to_owned(),
        secret_hash: secret_hash(),
        admin: false,
        created_at: T0,
    }
}

pub fn admin(name: &str) -> User {
    User {
        admin: true,
        ..user(name)
    }
}

/// A ticket of `user`, issued under the user's current secret.
pub fn ticket(user: &User, expires_at: Millis) -> Ticket {
    Ticket {
        user: user.id.clone(),
        user_secret: user.secret_hash.clone(),
        expires_at,
    }
}

pub fn model_ref() -> ModelRef {
    ModelRef {
        provider_id: "anthropic".into(),
        model_id: "claude-sonnet-4".into(),
    }
}

pub fn model_info() -> ModelInfo {
    ModelInfo {
        provider_id: "anthropic".into(),
        model_id: "claude-sonnet-4".into(),
        name: "Claude Sonnet 4".into(),
        reasoning: Some(true),
        context_limit: Some(200_000),
    }
}

/// An approved worker of `owner`, offline, with a model list.
pub fn worker(owner: &UserId) -> Worker {
    Worker {
        id: WorkerId::random(),
        owner: Some(owner.clone()),
        status: WorkerStatus::Approved,
        credential_hash: Secret::generate("twk_").hash(),
        machine: "devbox".into(),
        name: "main".into(),
        workdir: "/home/dev/project".into(),
        pairing_code: None,
        pairing_expires_at: None,
        connection: None,
        last_seen: None,
        models: vec![model_info()],
        default_model: Some(model_ref()),
        version: Some("0.1.0".into()),
        agent: None,
        source: None,
        created_at: T0,
    }
}

/// A worker waiting for its owner to type `code` before `expires_at`.
pub fn pending_worker(code: &str, expires_at: Millis) -> Worker {
    Worker {
        id: WorkerId::random(),
        owner: None,
        status: WorkerStatus::Pending,
        credential_hash: Secret::generate("twk_").hash(),
        machine: "laptop".into(),
        name: "default".into(),
        workdir: "/home/dev/other".into(),
        pairing_code: Some(code.to_owned()),
        pairing_expires_at: Some(expires_at),
        connection: None,
        last_seen: None,
        models: Vec::new(),
        default_model: None,
        version: None,
        agent: None,
        source: None,
        created_at: T0,
    }
}

/// A session in `starting`, with no messages.
pub fn session(owner: &UserId, worker: &WorkerId, created_at: Millis) -> Session {
    Session {
        id: SessionId::random(),
        owner: owner.clone(),
        worker: worker.clone(),
        model: model_ref(),
        title: "Test session".into(),
        title_source: Some(TitleSource::User),
        status: SessionStatus::Starting,
        agent_session_id: None,
        error: None,
        message_count: 0,
        created_at,
        updated_at: created_at,
    }
}

/// A queued message of `session`. Its `number` is left for the store to assign.
pub fn message(session: &Session, text: &str) -> Message {
    Message {
        id: MessageId::random(),
        session: session.id.clone(),
        owner: session.owner.clone(),
        worker: session.worker.clone(),
        number: 0,
        text: text.to_owned(),
        model: None,
        status: MessageStatus::Queued,
        chunk_count: None,
        error: None,
        created_at: session.created_at,
        updated_at: session.created_at,
    }
}

/// A text chunk of `message`.
pub fn text_chunk(message: &MessageId, seq: u32, delta: &str) -> Chunk {
    Chunk {
        message: message.clone(),
        seq,
        body: ChunkBody::Text {
            part_id: "prt_1".into(),
            delta: delta.to_owned(),
        },
        created_at: T0,
    }
}

/// An unanswered permission prompt raised while answering `message`.
pub fn prompt(message: &Message) -> Prompt {
    Prompt {
        id: PromptId::random(),
        session: message.session.clone(),
        message: message.id.clone(),
        worker: message.worker.clone(),
        owner: message.owner.clone(),
        kind: PromptKind::Permission,
        answer: None,
        delivered: false,
        created_at: T0,
    }
}

pub fn permission_answer(reply: PermissionReply) -> PromptAnswer {
    PromptAnswer::Permission { reply }
}

/// A browser connection of `user`, opened at `now`, expiring an hour later.
pub fn user_connection(user: &UserId, now: Millis) -> Connection {
    Connection {
        id: ConnectionId::random(),
        principal: Principal::User(user.clone()),
        owner: None,
        connected_at: now,
        last_seen: now,
        expires_at: now + HOUR,
    }
}

/// A connection of `worker`, opened at `now`, expiring an hour later.
pub fn worker_connection(worker: &Worker, now: Millis) -> Connection {
    Connection {
        id: ConnectionId::random(),
        principal: Principal::Worker(worker.id.clone()),
        owner: worker.owner.clone(),
        connected_at: now,
        last_seen: now,
        expires_at: now + HOUR,
    }
}

/// A user and an approved worker of theirs, stored.
#[derive(Clone, Debug)]
pub struct Seed {
    pub user: User,
    pub worker: Worker,
}

/// Stores a user named `alice` and an approved worker of hers.
pub async fn seed<S: Store>(store: &S) -> Seed {
    let user = user("alice");
    store.create_user(&user).await.expect("create seed user");
    let worker = worker(&user.id);
    store
        .create_worker(&worker)
        .await
        .expect("create seed worker");
    Seed { user, worker }
}

/// Stores a session of the seed's user on the seed's worker.
pub async fn seed_session<S: Store>(store: &S, seed: &Seed, created_at: Millis) -> Session {
    let s = session(&seed.user.id, &seed.worker.id, created_at);
    assert_new(
        store
            .insert_session(&s, NO_CAP)
            .await
            .expect("insert seed session"),
    );
    s
}

/// Stores a message in `session`; returns it with its assigned number.
pub async fn seed_message<S: Store>(store: &S, session: &Session, text: &str) -> Message {
    assert_new(
        store
            .insert_message(&message(session, text), NO_CAP)
            .await
            .expect("insert seed message"),
    )
}

/// The value of an insert (capped or not) that must have stored something.
pub fn assert_new<T: Debug>(inserted: impl Into<Capped<T>>) -> T {
    match inserted.into() {
        Capped::Done(Inserted::New(v)) => v,
        Capped::Done(Inserted::Existing(v)) => {
            panic!("expected a new record, found existing {v:?}")
        }
        Capped::Full => panic!("expected a new record, the cap refused it"),
    }
}

/// The value of an insert (capped or not) that must have found its key taken.
pub fn assert_existing<T: Debug>(inserted: impl Into<Capped<T>>) -> T {
    match inserted.into() {
        Capped::Done(Inserted::Existing(v)) => v,
        Capped::Done(Inserted::New(v)) => {
            panic!("expected the existing record, stored a new {v:?}")
        }
        Capped::Full => panic!("expected the existing record, the cap refused it"),
    }
}

pub(super) fn assert_conflict<T: Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

pub(super) fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
