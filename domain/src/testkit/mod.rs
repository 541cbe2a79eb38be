//! Helpers shared by adapters' tests: entity builders and the store contract
//! suite.
//!
//! [`store_contract`] runs every check against fresh stores from a factory
//! and reports all failing checks by name. Each check is also a `pub async
//! fn` of its own, so an adapter can run one while chasing a failure.
//!
//! The suite pins down what the [`Store`] trait promises and nothing more:
//! where the trait leaves an order open (watchers, same-millisecond ties),
//! results are compared as sets.

mod agent;
mod caps;
mod jitter;
mod pairing;
mod scenarios;
pub use agent::*;
pub use caps::*;
pub use jitter::Jitter;
pub use pairing::*;
pub use scenarios::*;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Barrier;

use crate::auth::{Secret, SecretHash};
use crate::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use crate::model::{
    AgentState, Chunk, Connection, Message, MessageStatus, Millis, Principal, Prompt, PromptKind,
    Session, SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
use crate::protocol::{
    AgentReport, ChunkBody, ModelInfo, ModelRef, PermissionReply, PromptAnswer,
};
use crate::store::{
    Capped, Inserted, MessagePatch, SessionPatch, Store, StoreError, WorkerProfile,
};

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

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
    assert_new(store.insert_session(&s, NO_CAP).await.expect("insert seed session"));
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

fn assert_conflict<T: Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

/// Runs every check, each on a fresh store from `make`, each in its own
/// task (so one failing check does not hide the others), and panics listing
/// the checks that failed.
pub async fn store_contract<S, F, Fut>(mut make: F)
where
    S: Store + Clone,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let mut failed: Vec<String> = Vec::new();
    let mut passed = 0usize;
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            let store = make().await;
            match tokio::spawn($check(store)).await {
                Ok(()) => passed += 1,
                Err(e) => failed.push(format!("{}: {}", stringify!($check), panic_text(e))),
            }
        )*};
    }
    run!(
        users_round_trip,
        user_name_and_secret_are_unique,
        user_secret_rotation,
        user_removal_frees_name_and_secret_and_keeps_the_rest,
        ticket_is_taken_once,
        expired_ticket_is_refused,
        concurrent_ticket_takes_have_one_winner,
        worker_round_trip,
        worker_credential_is_unique,
        workers_of_owner,
        pending_workers_unexpired,
        pending_workers_page_in_order,
        pending_workers_are_capped_per_source,
        concurrent_pending_creations_keep_the_cap,
        expired_pending_workers_are_deleted,
        pairing_token_is_taken_once,
        concurrent_pairing_token_takes_have_one_winner,
        attempts_are_counted_per_window,
        concurrent_attempts_keep_the_limit,
        purge_removes_expired_pairing_state,
        worker_transitions,
        concurrent_worker_transitions_have_one_winner,
        worker_connection_and_presence,
        worker_profile_keeps_unsaid_fields,
        connection_round_trip,
        user_connections_filter,
        worker_connections_and_owner,
        connection_count_counts_one_principals_unexpired_records,
        watches,
        watches_go_with_their_connection,
        purge_removes_only_what_expired,
        session_round_trip_and_idempotent_insert,
        sessions_of_order_filter_and_paging,
        starting_sessions,
        session_transitions,
        concurrent_session_transitions_have_one_winner,
        message_numbering_and_idempotent_insert,
        a_message_needs_its_session,
        concurrent_message_inserts_number_contiguously,
        concurrent_inserts_of_one_message_store_it_once,
        messages_of_paging,
        open_messages_order,
        message_transitions,
        concurrent_message_transitions_have_one_winner,
        chunks_idempotent_and_ordered,
        a_frames_chunks_are_put_in_one_call,
        prompts_idempotent_and_answered_once,
        concurrent_prompt_answers_have_one_winner,
        live_sessions_are_capped_per_user,
        concurrent_session_inserts_stay_within_the_cap,
        open_messages_are_capped_per_user,
        concurrent_message_inserts_stay_within_the_cap,
        agent_state_keeps_the_newest_report,
        concurrent_agent_reports_keep_the_newest,
        agent_titles_never_replace_the_users,
    );
    tracing::info!(passed, failed = failed.len(), "store contract");
    assert!(
        failed.is_empty(),
        "{} store contract check(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "panicked".into()
    }
}

/// Runs `n` copies of `op` at once (released together by a barrier) and
/// returns their results in task order.
async fn race<S, T, F, Fut>(store: &S, n: usize, op: F) -> Vec<T>
where
    S: Store + Clone,
    T: Send + 'static,
    F: Fn(S, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fut = op(store.clone(), i);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.expect("racing task panicked"));
    }
    out
}

// ---- users ----

pub async fn users_round_trip<S: Store>(s: S) {
    let bob = user("bob");
    let alice = admin("alice");
    s.create_user(&bob).await.expect("create bob");
    s.create_user(&alice).await.expect("create alice");

    assert_eq!(s.user(&bob.id).await.expect("user"), Some(bob.clone()));
    assert_eq!(s.user(&alice.id).await.expect("user"), Some(alice.clone()));
    assert_eq!(
        s.user_by_name("alice").await.expect("by name"),
        Some(alice.clone())
    );
    assert_eq!(
        s.user_by_secret(&bob.secret_hash).await.expect("by secret"),
        Some(bob.clone())
    );
    assert_eq!(
        s.users().await.expect("users"),
        vec![alice, bob],
        "users by name"
    );

    assert_eq!(s.user(&UserId::random()).await.expect("user"), None);
    assert_eq!(s.user_by_name("carol").await.expect("by name"), None);
    assert_eq!(
        s.user_by_secret(&secret_hash()).await.expect("by secret"),
        None
    );
}

pub async fn user_name_and_secret_are_unique<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");

    let same_name = user("alice");
    assert_conflict(s.create_user(&same_name).await, "same name");
    let same_secret = User {
        secret_hash: alice.secret_hash.clone(),
        ..user("bob")
    };
    assert_conflict(s.create_user(&same_secret).await, "same secret hash");

    assert_eq!(s.users().await.expect("users"), vec![alice.clone()]);
    assert_eq!(s.user(&same_name.id).await.expect("user"), None);
    assert_eq!(s.user(&same_secret.id).await.expect("user"), None);
    assert_eq!(
        s.user_by_secret(&alice.secret_hash)
            .await
            .expect("by secret"),
        Some(alice)
    );
}

pub async fn user_secret_rotation<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let fresh = secret_hash();

    assert!(s.set_user_secret(&alice.id, &fresh).await.expect("rotate"));
    assert_eq!(
        s.user_by_secret(&alice.secret_hash).await.expect("old"),
        None
    );
    let found = s
        .user_by_secret(&fresh)
        .await
        .expect("new")
        .expect("found by new secret");
    assert_eq!(found.id, alice.id);
    assert_eq!(found.secret_hash, fresh);

    assert!(!s
        .set_user_secret(&UserId::random(), &secret_hash())
        .await
        .expect("rotate missing"));
}

/// Removing a user deletes the user's record only: the name and secret no
/// longer resolve and may be taken again; the user's workers, sessions,
/// connection records and tickets stay (the domain refuses what needs
/// the user).
pub async fn user_removal_frees_name_and_secret_and_keeps_the_rest<S: Store>(s: S) {
    let seed = seed(&s).await;
    let alice = seed.user.clone();
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let session = seed_session(&s, &seed, T0).await;
    let message = seed_message(&s, &session, "hello").await;
    let browser = user_connection(&alice.id, T0);
    s.put_connection(&browser).await.expect("connection");
    let hash = secret_hash();
    let issued = ticket(&alice, T0 + 30_000);
    s.put_ticket(&hash, &issued).await.expect("ticket");

    assert!(s.delete_user(&alice.id).await.expect("delete"));
    assert_eq!(s.user(&alice.id).await.expect("user"), None);
    assert_eq!(s.user_by_name("alice").await.expect("by name"), None);
    assert_eq!(s.user_by_secret(&alice.secret_hash).await.expect("by secret"), None);
    assert_eq!(s.users().await.expect("users"), vec![bob.clone()]);
    assert!(!s.delete_user(&alice.id).await.expect("delete again"), "gone already");
    assert!(!s.delete_user(&UserId::random()).await.expect("delete unknown"));
    assert!(!s.set_user_secret(&alice.id, &secret_hash()).await.expect("rotate removed"));
    assert_eq!(s.user(&bob.id).await.expect("bob"), Some(bob.clone()));

    // What refers to her stays.
    assert_eq!(s.worker(&seed.worker.id).await.expect("worker"), Some(seed.worker.clone()));
    assert_eq!(s.workers_of(&alice.id).await.expect("workers"), vec![seed.worker.clone()]);
    assert_eq!(s.session(&session.id).await.expect("session").map(|x| x.id), Some(session.id.clone()));
    assert_eq!(s.message(&message.id).await.expect("message"), Some(message.clone()));
    assert_eq!(
        s.user_connections(&alice.id, T0).await.expect("connections"),
        vec![browser.id.clone()]
    );
    assert_eq!(s.take_ticket(&hash, T0).await.expect("take"), Some(issued));

    // Her name and her old secret hash are free for a new user (a new id).
    let again = User {
        secret_hash: alice.secret_hash.clone(),
        ..user("alice")
    };
    s.create_user(&again).await.expect("the name is free again");
    assert_eq!(s.user_by_name("alice").await.expect("by name"), Some(again.clone()));
    assert_eq!(
        s.user_by_secret(&alice.secret_hash).await.expect("by secret"),
        Some(again.clone())
    );
    assert_eq!(s.user(&alice.id).await.expect("old id"), None);
    assert_eq!(s.users().await.expect("users"), vec![again, bob]);
}

// ---- tickets ----

pub async fn ticket_is_taken_once<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let hash = secret_hash();
    let issued = ticket(&alice, T0 + 30_000);
    s.put_ticket(&hash, &issued).await.expect("put");

    // The whole ticket comes back: its user, the secret it was issued
    // under and its expiry.
    assert_eq!(s.take_ticket(&hash, T0).await.expect("take"), Some(issued));
    let ticket = hash;
    assert_eq!(s.take_ticket(&ticket, T0).await.expect("retake"), None);
    assert_eq!(
        s.take_ticket(&secret_hash(), T0).await.expect("unknown"),
        None
    );
}

pub async fn expired_ticket_is_refused<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let ticket = secret_hash();
    s.put_ticket(&ticket, &self::ticket(&alice, T0)).await.expect("put");

    // Expiry is exclusive: at `expires_at` the ticket is already dead.
    assert_eq!(
        s.take_ticket(&ticket, T0).await.expect("take at expiry"),
        None
    );
    // ... and the refused take consumed it.
    assert_eq!(
        s.take_ticket(&ticket, T0 - 1).await.expect("take again"),
        None
    );
}

pub async fn concurrent_ticket_takes_have_one_winner<S: Store + Clone>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let ticket = secret_hash();
    s.put_ticket(&ticket, &self::ticket(&alice, T0 + 30_000))
        .await
        .expect("put");

    let results = race(&s, 10, |s, _| {
        let ticket = ticket.clone();
        async move { s.take_ticket(&ticket, T0).await.expect("take") }
    })
    .await;
    let winners: Vec<_> = results.into_iter().flatten().map(|t| t.user).collect();
    assert_eq!(winners, vec![alice.id], "exactly one take wins");
}

// ---- workers ----

pub async fn worker_round_trip<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let full = Worker {
        connection: Some(ConnectionId::random()),
        last_seen: Some(T0 + 5),
        agent: Some(AgentReport {
            state: AgentState::Down,
            reason: Some("opencode exited (signal 9); restarting it".into()),
            at: T0 + 4,
        }),
        ..worker(&alice.id)
    };
    let pending = Worker {
        source: Some("2001:db8:1:2::/64".into()),
        ..pending_worker("KX7P-Q2MD", T0 + 60_000)
    };
    s.create_worker(&full).await.expect("create approved");
    s.create_worker(&pending).await.expect("create pending");

    assert_eq!(
        s.worker(&full.id).await.expect("worker"),
        Some(full.clone())
    );
    assert_eq!(
        s.worker(&pending.id).await.expect("worker"),
        Some(pending.clone())
    );
    assert_eq!(
        s.worker_by_credential(&full.credential_hash)
            .await
            .expect("by credential"),
        Some(full)
    );
    assert_eq!(
        s.worker_by_pairing_code("KX7P-Q2MD")
            .await
            .expect("by code"),
        Some(pending)
    );

    assert_eq!(s.worker(&WorkerId::random()).await.expect("worker"), None);
    assert_eq!(
        s.worker_by_credential(&secret_hash()).await.expect("cred"),
        None
    );
    assert_eq!(
        s.worker_by_pairing_code("AAAA-BBBB").await.expect("code"),
        None
    );
}

pub async fn worker_credential_is_unique<S: Store>(s: S) {
    let first = pending_worker("KX7P-Q2MD", T0 + 60_000);
    s.create_worker(&first).await.expect("create");
    let clash = Worker {
        credential_hash: first.credential_hash.clone(),
        ..pending_worker("ABCD-EFGH", T0 + 60_000)
    };
    assert_conflict(s.create_worker(&clash).await, "same credential hash");
    assert_eq!(s.worker(&clash.id).await.expect("worker"), None);
    assert_eq!(
        s.worker_by_credential(&first.credential_hash)
            .await
            .expect("by credential"),
        Some(first)
    );
}

pub async fn workers_of_owner<S: Store>(s: S) {
    let alice = user("alice");
    let bob = user("bob");
    s.create_user(&alice).await.expect("create alice");
    s.create_user(&bob).await.expect("create bob");
    let newer = Worker {
        created_at: T0 + 10,
        status: WorkerStatus::Revoked,
        ..worker(&alice.id)
    };
    let older = Worker {
        created_at: T0,
        ..worker(&alice.id)
    };
    let bobs = worker(&bob.id);
    let unowned = pending_worker("KX7P-Q2MD", T0 + 60_000);
    for w in [&newer, &bobs, &older, &unowned] {
        s.create_worker(w).await.expect("create");
    }

    assert_eq!(
        s.workers_of(&alice.id).await.expect("workers_of"),
        vec![older, newer],
        "any status, oldest first"
    );
    assert_eq!(s.workers_of(&bob.id).await.expect("workers_of"), vec![bobs]);
    assert!(s
        .workers_of(&UserId::random())
        .await
        .expect("none")
        .is_empty());
}

pub async fn pending_workers_unexpired<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let live = pending_worker("AAAA-AAAA", T0 + 1);
    let expired = pending_worker("BBBB-BBBB", T0);
    let approved = Worker {
        pairing_code: Some("CCCC-CCCC".into()),
        pairing_expires_at: Some(T0 + 60_000),
        ..worker(&alice.id)
    };
    for w in [&live, &expired, &approved] {
        s.create_worker(w).await.expect("create");
    }

    assert_eq!(s.pending_workers(T0, None, 10).await.expect("pending"), vec![live]);
    assert!(s.pending_workers(T0 + 1, None, 10).await.expect("pending").is_empty());
}

pub async fn worker_transitions<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let w = pending_worker("AAAA-AAAA", T0 + 1_000);
    s.create_worker(&w).await.expect("create");

    let refused = s
        .transition_worker(
            &w.id,
            WorkerStatus::Approved,
            WorkerStatus::Revoked,
            None,
            None,
        )
        .await
        .expect("wrong from");
    assert_eq!(refused, None);
    assert_eq!(
        s.worker(&w.id).await.expect("worker"),
        Some(w.clone()),
        "unchanged"
    );

    let approved = s
        .transition_worker(
            &w.id,
            WorkerStatus::Pending,
            WorkerStatus::Approved,
            Some(&alice.id),
            Some("renamed"),
        )
        .await
        .expect("approve")
        .expect("was pending");
    let expected = Worker {
        status: WorkerStatus::Approved,
        owner: Some(alice.id.clone()),
        name: "renamed".into(),
        pairing_code: None,
        pairing_expires_at: None,
        ..w.clone()
    };
    assert_eq!(approved, expected);
    assert_eq!(
        s.worker(&w.id).await.expect("worker"),
        Some(expected.clone())
    );
    assert_eq!(
        s.worker_by_pairing_code("AAAA-AAAA").await.expect("code"),
        None
    );

    // Without owner and name, both stay.
    let revoked = s
        .transition_worker(
            &w.id,
            WorkerStatus::Approved,
            WorkerStatus::Revoked,
            None,
            None,
        )
        .await
        .expect("revoke")
        .expect("was approved");
    assert_eq!(
        revoked,
        Worker {
            status: WorkerStatus::Revoked,
            ..expected
        }
    );

    let missing = s
        .transition_worker(
            &WorkerId::random(),
            WorkerStatus::Pending,
            WorkerStatus::Approved,
            None,
            None,
        )
        .await
        .expect("missing");
    assert_eq!(missing, None);
}

pub async fn concurrent_worker_transitions_have_one_winner<S: Store + Clone>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let w = pending_worker("AAAA-AAAA", T0 + 1_000);
    s.create_worker(&w).await.expect("create");

    let results = race(&s, 2, |s, i| {
        let (id, owner) = (w.id.clone(), alice.id.clone());
        let to = if i == 0 {
            WorkerStatus::Approved
        } else {
            WorkerStatus::Rejected
        };
        async move {
            s.transition_worker(&id, WorkerStatus::Pending, to, Some(&owner), None)
                .await
                .expect("transition")
        }
    })
    .await;
    let winners: Vec<Worker> = results.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one transition wins: {winners:?}");
    let stored = s.worker(&w.id).await.expect("worker").expect("exists");
    assert_eq!(stored.status, winners[0].status);
}

pub async fn worker_connection_and_presence<S: Store>(s: S) {
    let seed = seed(&s).await;
    let id = &seed.worker.id;
    let (old, new) = (ConnectionId::random(), ConnectionId::random());

    s.set_worker_connection(id, &old, T0 + 1)
        .await
        .expect("set old");
    s.set_worker_connection(id, &new, T0 + 2)
        .await
        .expect("set new");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.connection, Some(new.clone()));
    assert_eq!(w.last_seen, Some(T0 + 2));

    // The old connection's late $disconnect must not clear the new one.
    assert!(!s
        .clear_worker_connection(id, &old)
        .await
        .expect("clear old"));
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.connection, Some(new.clone()));

    assert!(s
        .clear_worker_connection(id, &new)
        .await
        .expect("clear new"));
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.connection, None);
    assert!(!s
        .clear_worker_connection(id, &new)
        .await
        .expect("clear twice"));

    s.touch_worker(id, T0 + 9).await.expect("touch");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.last_seen, Some(T0 + 9));
    assert_eq!(
        Worker {
            last_seen: None,
            ..w
        },
        seed.worker,
        "nothing else changed"
    );
}

pub async fn worker_profile_keeps_unsaid_fields<S: Store>(s: S) {
    let seed = seed(&s).await;
    let id = &seed.worker.id;

    let partial = WorkerProfile {
        name: Some("renamed".into()),
        ..WorkerProfile::default()
    };
    s.set_worker_profile(id, &partial)
        .await
        .expect("partial profile");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(
        w,
        Worker {
            name: "renamed".into(),
            ..seed.worker.clone()
        },
        "only the name changed; an empty model list keeps the stored one"
    );

    let other_model = ModelInfo {
        model_id: "gpt-5".into(),
        provider_id: "openai".into(),
        name: "GPT-5".into(),
        reasoning: None,
        context_limit: None,
    };
    let other_ref = ModelRef {
        provider_id: "openai".into(),
        model_id: "gpt-5".into(),
    };
    let full = WorkerProfile {
        machine: Some("server".into()),
        name: Some("ci".into()),
        workdir: Some("/srv/repo".into()),
        version: Some("0.2.0".into()),
        models: vec![other_model.clone(), model_info()],
        default_model: Some(other_ref.clone()),
    };
    s.set_worker_profile(id, &full).await.expect("full profile");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(
        w,
        Worker {
            machine: "server".into(),
            name: "ci".into(),
            workdir: "/srv/repo".into(),
            version: Some("0.2.0".into()),
            models: vec![other_model, model_info()],
            default_model: Some(other_ref),
            ..seed.worker
        }
    );
}

// ---- connections ----

pub async fn connection_round_trip<S: Store>(s: S) {
    let seed = seed(&s).await;
    let browser = user_connection(&seed.user.id, T0);
    let agent = worker_connection(&seed.worker, T0);
    s.put_connection(&browser).await.expect("put browser");
    s.put_connection(&agent).await.expect("put worker");

    assert_eq!(
        s.connection(&browser.id).await.expect("get"),
        Some(browser.clone())
    );
    assert_eq!(
        s.connection(&agent.id).await.expect("get"),
        Some(agent.clone())
    );

    s.touch_connection(&browser.id, T0 + 7)
        .await
        .expect("touch");
    let touched = Connection {
        last_seen: T0 + 7,
        ..browser.clone()
    };
    assert_eq!(
        s.connection(&browser.id).await.expect("get"),
        Some(touched.clone())
    );
    s.touch_connection(&ConnectionId::random(), T0)
        .await
        .expect("touch missing is a no-op");

    assert_eq!(
        s.delete_connection(&browser.id).await.expect("delete"),
        Some(touched)
    );
    assert_eq!(
        s.delete_connection(&browser.id)
            .await
            .expect("delete twice"),
        None
    );
    assert_eq!(s.connection(&browser.id).await.expect("get"), None);
    assert_eq!(s.connection(&agent.id).await.expect("get"), Some(agent));
}

pub async fn user_connections_filter<S: Store>(s: S) {
    let seed = seed(&s).await;
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let uid = &seed.user.id;

    let long = Connection {
        expires_at: T0 + 100,
        ..user_connection(uid, T0)
    };
    let short = Connection {
        expires_at: T0 + 50,
        ..user_connection(uid, T0)
    };
    let bobs = Connection {
        expires_at: T0 + 100,
        ..user_connection(&bob.id, T0)
    };
    // A worker connection owned by the user is not a browser of theirs.
    let agent = Connection {
        expires_at: T0 + 100,
        ..worker_connection(&seed.worker, T0)
    };
    for c in [&long, &short, &bobs, &agent] {
        s.put_connection(c).await.expect("put");
    }

    assert_eq!(
        sorted(s.user_connections(uid, T0).await.expect("at T0")),
        sorted(vec![long.id.clone(), short.id.clone()])
    );
    assert_eq!(
        s.user_connections(uid, T0 + 50).await.expect("later"),
        vec![long.id]
    );
    assert!(s
        .user_connections(uid, T0 + 100)
        .await
        .expect("all expired")
        .is_empty());
    assert_eq!(
        s.user_connections(&bob.id, T0).await.expect("bob"),
        vec![bobs.id]
    );
}

pub async fn worker_connections_and_owner<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let w = pending_worker("AAAA-AAAA", T0 + 1_000);
    let other = pending_worker("BBBB-BBBB", T0 + 1_000);
    s.create_worker(&w).await.expect("create");
    s.create_worker(&other).await.expect("create");
    let first = worker_connection(&w, T0);
    let second = worker_connection(&w, T0 + 1);
    let others = worker_connection(&other, T0);
    let browser = user_connection(&alice.id, T0);
    for c in [&first, &second, &others, &browser] {
        s.put_connection(c).await.expect("put");
    }

    assert_eq!(
        sorted(
            s.worker_connections(&w.id)
                .await
                .expect("worker_connections")
        ),
        sorted(vec![first.id.clone(), second.id.clone()])
    );

    s.set_connections_owner(&w.id, &alice.id)
        .await
        .expect("set owner");
    for c in [&first, &second] {
        let stored = s.connection(&c.id).await.expect("get").expect("exists");
        assert_eq!(stored.owner, Some(alice.id.clone()));
    }
    assert_eq!(s.connection(&others.id).await.expect("get"), Some(others));
    assert_eq!(s.connection(&browser.id).await.expect("get"), Some(browser));
}

pub async fn watches<S: Store>(s: S) {
    let seed = seed(&s).await;
    let a = user_connection(&seed.user.id, T0);
    let b = user_connection(&seed.user.id, T0);
    s.put_connection(&a).await.expect("put");
    s.put_connection(&b).await.expect("put");
    let (session, other) = (SessionId::random(), SessionId::random());

    assert!(s.watch(&session, &a.id).await.expect("watch"));
    assert!(s.watch(&session, &b.id).await.expect("watch"));
    assert!(s.watch(&session, &a.id).await.expect("watch again"));
    assert!(s.watch(&other, &b.id).await.expect("watch other"));
    assert!(!s
        .watch(&session, &ConnectionId::random())
        .await
        .expect("watch by a ghost"));

    assert_eq!(
        sorted(s.watchers(&session).await.expect("watchers")),
        sorted(vec![a.id.clone(), b.id.clone()]),
        "each connection once"
    );

    s.unwatch(&session, &b.id).await.expect("unwatch");
    s.unwatch(&session, &ConnectionId::random())
        .await
        .expect("unwatch missing");
    assert_eq!(s.watchers(&session).await.expect("watchers"), vec![a.id]);
    assert_eq!(s.watchers(&other).await.expect("watchers"), vec![b.id]);
    assert!(s
        .watchers(&SessionId::random())
        .await
        .expect("none")
        .is_empty());
}

pub async fn watches_go_with_their_connection<S: Store>(s: S) {
    let seed = seed(&s).await;
    let gone = user_connection(&seed.user.id, T0);
    let stays = user_connection(&seed.user.id, T0);
    s.put_connection(&gone).await.expect("put");
    s.put_connection(&stays).await.expect("put");
    let (one, two) = (SessionId::random(), SessionId::random());
    for (session, conn) in [(&one, &gone), (&two, &gone), (&one, &stays)] {
        assert!(s.watch(session, &conn.id).await.expect("watch"));
    }

    s.delete_connection(&gone.id).await.expect("delete");
    assert_eq!(s.watchers(&one).await.expect("watchers"), vec![stays.id]);
    assert!(s.watchers(&two).await.expect("watchers").is_empty());

    // A connection id coming back does not bring its watches back.
    s.put_connection(&gone).await.expect("put again");
    assert!(s.watchers(&two).await.expect("watchers").is_empty());
}

pub async fn purge_removes_only_what_expired<S: Store>(s: S) {
    let seed = seed(&s).await;
    let (old, fresh) = (secret_hash(), secret_hash());
    s.put_ticket(&old, &ticket(&seed.user, T0)).await.expect("put");
    s.put_ticket(&fresh, &ticket(&seed.user, T0 + 2 * HOUR)).await.expect("put");
    let stale = user_connection(&seed.user.id, T0 - 2 * HOUR);
    let live = user_connection(&seed.user.id, T0);
    let stale_worker = worker_connection(&seed.worker, T0 - 2 * HOUR);
    for c in [&stale, &live, &stale_worker] {
        s.put_connection(c).await.expect("put connection");
    }
    s.set_worker_connection(&seed.worker.id, &stale_worker.id, T0 - 2 * HOUR)
        .await
        .expect("presence");
    let session = SessionId::random();
    assert!(s.watch(&session, &stale.id).await.expect("watch"));
    assert!(s.watch(&session, &live.id).await.expect("watch"));

    let purged = s.purge_expired(T0 + 1).await.expect("purge");
    assert_eq!(purged, 3, "one ticket and two connections");
    assert!(s.connection(&stale.id).await.expect("read").is_none());
    assert!(s.connection(&live.id).await.expect("read").is_some());
    assert_eq!(s.watchers(&session).await.expect("watchers"), vec![live.id]);
    assert_eq!(
        s.take_ticket(&fresh, T0 + 1).await.expect("take"),
        Some(ticket(&seed.user, T0 + 2 * HOUR))
    );
    let worker = s.worker(&seed.worker.id).await.expect("read").expect("worker");
    assert_eq!(worker.connection, None, "presence left with its connection");
}

// ---- sessions ----

pub async fn session_round_trip_and_idempotent_insert<S: Store>(s: S) {
    let seed = seed(&s).await;
    let original = Session {
        agent_session_id: Some("ses_agent".into()),
        status: SessionStatus::Ready,
        ..session(&seed.user.id, &seed.worker.id, T0)
    };
    assert_eq!(
        assert_new(s.insert_session(&original, NO_CAP).await.expect("insert")),
        original
    );
    assert_eq!(
        s.session(&original.id).await.expect("get"),
        Some(original.clone())
    );

    let retry = Session {
        title: "another title".into(),
        status: SessionStatus::Starting,
        ..original.clone()
    };
    assert_eq!(
        assert_existing(s.insert_session(&retry, NO_CAP).await.expect("insert again")),
        original
    );
    assert_eq!(
        s.session(&original.id).await.expect("get"),
        Some(original.clone())
    );
    assert_eq!(
        s.sessions_of(&seed.user.id, None, None, 10)
            .await
            .expect("list"),
        vec![original],
        "stored once"
    );
    assert_eq!(
        s.session(&SessionId::random()).await.expect("missing"),
        None
    );
}

pub async fn sessions_of_order_filter_and_paging<S: Store>(s: S) {
    let seed = seed(&s).await;
    let uid = &seed.user.id;
    let second_worker = worker(uid);
    s.create_worker(&second_worker)
        .await
        .expect("create worker");
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let bobs_worker = worker(&bob.id);
    s.create_worker(&bobs_worker).await.expect("create worker");

    // Inserted out of order; times 1..=5, the odd ones on the second worker.
    let mut made = Vec::new();
    for t in [3, 1, 5, 2, 4] {
        let w = if t % 2 == 1 {
            &second_worker.id
        } else {
            &seed.worker.id
        };
        let sess = session(uid, w, T0 + t);
        s.insert_session(&sess, NO_CAP).await.expect("insert");
        made.push(sess);
    }
    let bobs = session(&bob.id, &bobs_worker.id, T0 + 3);
    s.insert_session(&bobs, NO_CAP).await.expect("insert");

    let times = |v: Vec<Session>| v.into_iter().map(|x| x.created_at - T0).collect::<Vec<_>>();
    let list = |w: Option<WorkerId>, before: Option<Millis>, limit: u32| {
        let s = &s;
        async move {
            s.sessions_of(uid, w.as_ref(), before, limit)
                .await
                .expect("sessions_of")
        }
    };

    let all = list(None, None, 10).await;
    assert!(all.iter().all(|x| &x.owner == uid), "only the owner's");
    assert_eq!(times(all), vec![5, 4, 3, 2, 1], "newest first");
    assert_eq!(times(list(None, None, 2).await), vec![5, 4], "limit");
    assert_eq!(
        times(list(None, Some(T0 + 4), 2).await),
        vec![3, 2],
        "before is strict"
    );
    assert_eq!(
        times(list(None, Some(T0 + 1), 10).await),
        Vec::<Millis>::new()
    );
    assert_eq!(
        times(list(Some(second_worker.id.clone()), None, 10).await),
        vec![5, 3, 1],
        "one worker"
    );
    assert_eq!(
        times(list(Some(second_worker.id.clone()), Some(T0 + 5), 1).await),
        vec![3]
    );
    assert_eq!(
        times(list(Some(seed.worker.id.clone()), None, 10).await),
        vec![4, 2]
    );
    assert!(list(Some(bobs_worker.id.clone()), None, 10)
        .await
        .is_empty());
    assert_eq!(
        s.sessions_of(&bob.id, None, None, 10).await.expect("bob"),
        vec![bobs]
    );

    // Sessions created in the same millisecond are all listed.
    let twin_a = session(&bob.id, &bobs_worker.id, T0 + 9);
    let twin_b = session(&bob.id, &bobs_worker.id, T0 + 9);
    s.insert_session(&twin_a, NO_CAP).await.expect("insert");
    s.insert_session(&twin_b, NO_CAP).await.expect("insert");
    let ids: Vec<_> = s
        .sessions_of(&bob.id, None, None, 2)
        .await
        .expect("bob")
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(sorted(ids), sorted(vec![twin_a.id, twin_b.id]));
}

pub async fn starting_sessions<S: Store>(s: S) {
    let seed = seed(&s).await;
    let other = worker(&seed.user.id);
    s.create_worker(&other).await.expect("create worker");
    let (uid, wid) = (&seed.user.id, &seed.worker.id);

    let later = session(uid, wid, T0 + 2);
    let earlier = session(uid, wid, T0 + 1);
    let ready = Session {
        status: SessionStatus::Ready,
        ..session(uid, wid, T0)
    };
    let elsewhere = session(uid, &other.id, T0);
    for sess in [&later, &earlier, &ready, &elsewhere] {
        s.insert_session(sess, NO_CAP).await.expect("insert");
    }

    assert_eq!(
        s.starting_sessions(wid).await.expect("starting"),
        vec![earlier.clone(), later],
        "oldest first"
    );
    s.transition_session(
        &earlier.id,
        &[SessionStatus::Starting],
        SessionStatus::Failed,
        &SessionPatch::default(),
        T0 + 3,
    )
    .await
    .expect("fail");
    assert_eq!(s.starting_sessions(wid).await.expect("starting").len(), 1);
    assert_eq!(
        s.starting_sessions(&other.id).await.expect("other"),
        vec![elsewhere]
    );
}

pub async fn session_transitions<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let id = &sess.id;
    let patch = SessionPatch {
        agent_session_id: Some("ses_agent".into()),
        error: None,
    };

    let ready = s
        .transition_session(
            id,
            &[SessionStatus::Starting],
            SessionStatus::Ready,
            &patch,
            T0 + 1,
        )
        .await
        .expect("ready")
        .expect("was starting");
    let expected = Session {
        status: SessionStatus::Ready,
        agent_session_id: Some("ses_agent".into()),
        updated_at: T0 + 1,
        ..sess.clone()
    };
    assert_eq!(ready, expected);
    assert_eq!(s.session(id).await.expect("get"), Some(expected.clone()));

    let refused = s
        .transition_session(
            id,
            &[SessionStatus::Starting],
            SessionStatus::Failed,
            &patch,
            T0 + 2,
        )
        .await
        .expect("refused");
    assert_eq!(refused, None);
    assert_eq!(
        s.session(id).await.expect("get"),
        Some(expected.clone()),
        "unchanged"
    );
    let nothing = s
        .transition_session(
            id,
            &[],
            SessionStatus::Ended,
            &SessionPatch::default(),
            T0 + 2,
        )
        .await
        .expect("empty from-set");
    assert_eq!(nothing, None);

    // Any status of the from-set will do; an empty patch keeps the fields.
    let busy = s
        .transition_session(
            id,
            &[SessionStatus::Busy, SessionStatus::Ready],
            SessionStatus::Busy,
            &SessionPatch::default(),
            T0 + 3,
        )
        .await
        .expect("busy")
        .expect("was ready");
    assert_eq!(
        busy,
        Session {
            status: SessionStatus::Busy,
            updated_at: T0 + 3,
            ..expected.clone()
        }
    );

    let failed = s
        .transition_session(
            id,
            &[SessionStatus::Busy],
            SessionStatus::Failed,
            &SessionPatch {
                agent_session_id: None,
                error: Some("agent crashed".into()),
            },
            T0 + 4,
        )
        .await
        .expect("failed")
        .expect("was busy");
    assert_eq!(
        failed,
        Session {
            status: SessionStatus::Failed,
            error: Some("agent crashed".into()),
            updated_at: T0 + 4,
            ..expected
        }
    );
    let missing = s
        .transition_session(
            &SessionId::random(),
            &[SessionStatus::Starting],
            SessionStatus::Ready,
            &patch,
            T0,
        )
        .await
        .expect("missing");
    assert_eq!(missing, None);
}

pub async fn concurrent_session_transitions_have_one_winner<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;

    let results = race(&s, 2, |s, i| {
        let id = sess.id.clone();
        let to = if i == 0 {
            SessionStatus::Ready
        } else {
            SessionStatus::Failed
        };
        async move {
            s.transition_session(
                &id,
                &[SessionStatus::Starting],
                to,
                &SessionPatch::default(),
                T0 + 1,
            )
            .await
            .expect("transition")
        }
    })
    .await;
    let winners: Vec<Session> = results.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one transition wins: {winners:?}");
    let stored = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(stored, winners[0]);
}

// ---- messages ----

/// A message whose session was never stored is refused (`Conflict`) and
/// leaves nothing behind.
pub async fn a_message_needs_its_session<S: Store>(s: S) {
    let seed = seed(&s).await;
    let unsaved = session(&seed.user.id, &seed.worker.id, T0);
    let result = s.insert_message(&message(&unsaved, "orphan"), NO_CAP).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert!(s.messages_of(&unsaved.id, 0, 10).await.expect("list").is_empty());
}

pub async fn message_numbering_and_idempotent_insert<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let other = seed_session(&s, &seed, T0 + 1).await;

    let mut stored = Vec::new();
    for text in ["one", "two", "three"] {
        // Whatever number the caller put in, the store assigns its own.
        let m = Message {
            number: 99,
            ..message(&sess, text)
        };
        let got = assert_new(s.insert_message(&m, NO_CAP).await.expect("insert"));
        assert_eq!(
            got,
            Message {
                number: got.number,
                ..m
            }
        );
        stored.push(got);
    }
    let numbers: Vec<u32> = stored.iter().map(|m| m.number).collect();
    assert_eq!(numbers, vec![0, 1, 2]);
    for m in &stored {
        assert_eq!(s.message(&m.id).await.expect("get"), Some(m.clone()));
    }
    assert_eq!(
        assert_new(
            s.insert_message(&message(&other, "elsewhere"), NO_CAP)
                .await
                .expect("insert")
        )
        .number,
        0,
        "numbering is per session"
    );

    let retry = Message {
        text: "changed".into(),
        ..stored[0].clone()
    };
    assert_eq!(
        assert_existing(s.insert_message(&retry, NO_CAP).await.expect("insert again")),
        stored[0]
    );
    let after = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, 3, "a retried insert does not count");
    assert_eq!(s.messages_of(&sess.id, 0, 10).await.expect("list"), stored);
    assert_eq!(
        s.message(&MessageId::random()).await.expect("missing"),
        None
    );
}

pub async fn concurrent_message_inserts_number_contiguously<S: Store + Clone>(s: S) {
    const N: usize = 20;
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;

    let results = race(&s, N, |s, i| {
        let m = message(&sess, &format!("message {i}"));
        async move { assert_new(s.insert_message(&m, NO_CAP).await.expect("insert")) }
    })
    .await;
    let numbers = sorted(results.iter().map(|m| m.number).collect());
    assert_eq!(
        numbers,
        (0..N as u32).collect::<Vec<_>>(),
        "distinct and contiguous"
    );

    let after = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, N as u32);
    let listed = s.messages_of(&sess.id, 0, 100).await.expect("list");
    assert_eq!(
        listed.iter().map(|m| m.number).collect::<Vec<_>>(),
        (0..N as u32).collect::<Vec<_>>()
    );
    for m in results {
        assert_eq!(listed[m.number as usize], m);
    }
}

pub async fn concurrent_inserts_of_one_message_store_it_once<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = message(&sess, "retried");

    let results = race(&s, 5, |s, _| {
        let m = m.clone();
        async move { s.insert_message(&m, NO_CAP).await.expect("insert") }
    })
    .await;
    let new = results
        .iter()
        .filter(|r| matches!(r, Capped::Done(Inserted::New(_))))
        .count();
    assert_eq!(new, 1, "stored once: {results:?}");
    for r in results {
        let Capped::Done(Inserted::New(got) | Inserted::Existing(got)) = r else {
            panic!("no cap, yet refused");
        };
        assert_eq!(got.number, 0);
    }
    let after = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, 1);
}

pub async fn messages_of_paging<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    for i in 0..5 {
        seed_message(&s, &sess, &format!("m{i}")).await;
    }
    let numbers = |v: Vec<Message>| v.into_iter().map(|m| m.number).collect::<Vec<_>>();

    assert_eq!(
        numbers(s.messages_of(&sess.id, 0, 10).await.expect("all")),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        numbers(s.messages_of(&sess.id, 2, 2).await.expect("page")),
        vec![2, 3]
    );
    assert_eq!(
        numbers(s.messages_of(&sess.id, 4, 10).await.expect("tail")),
        vec![4]
    );
    assert!(s
        .messages_of(&sess.id, 5, 10)
        .await
        .expect("past end")
        .is_empty());
    assert!(s
        .messages_of(&SessionId::random(), 0, 10)
        .await
        .expect("none")
        .is_empty());
}

pub async fn open_messages_order<S: Store>(s: S) {
    let seed = seed(&s).await;
    let other = worker(&seed.user.id);
    s.create_worker(&other).await.expect("create worker");

    // `newer` is stored first, so only the creation times give the order.
    let newer = seed_session(&s, &seed, T0 + 10).await;
    let older = seed_session(&s, &seed, T0 + 5).await;
    let elsewhere = session(&seed.user.id, &other.id, T0);
    s.insert_session(&elsewhere, NO_CAP).await.expect("insert");

    let n0 = seed_message(&s, &newer, "n0").await;
    let n1 = seed_message(&s, &newer, "n1").await;
    let o0 = seed_message(&s, &older, "o0").await;
    let o1 = seed_message(&s, &older, "o1").await;
    let o2 = seed_message(&s, &older, "o2").await;
    let o3 = seed_message(&s, &older, "o3").await;
    seed_message(&s, &elsewhere, "e0").await;

    let to = |m: &Message, status: MessageStatus| {
        let (s, id) = (&s, m.id.clone());
        async move {
            s.transition_message(
                &id,
                &[MessageStatus::Queued],
                status,
                &MessagePatch::default(),
                T0,
            )
            .await
            .expect("transition")
            .expect("was queued")
        }
    };
    to(&n1, MessageStatus::Complete).await;
    let o0 = to(&o0, MessageStatus::Dispatched).await;
    let o1 = to(&o1, MessageStatus::Streaming).await;
    to(&o2, MessageStatus::Failed).await;
    to(&o3, MessageStatus::Aborted).await;

    assert_eq!(
        s.open_messages(&seed.worker.id).await.expect("open"),
        vec![o0, o1, n0],
        "not final; by session creation, then number"
    );
}

pub async fn message_transitions<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let none = MessagePatch::default();

    let refused = s
        .transition_message(
            &m.id,
            &[MessageStatus::Dispatched],
            MessageStatus::Streaming,
            &none,
            T0 + 1,
        )
        .await
        .expect("refused");
    assert_eq!(refused, None);
    assert_eq!(
        s.message(&m.id).await.expect("get"),
        Some(m.clone()),
        "unchanged"
    );

    let dispatched = s
        .transition_message(
            &m.id,
            &[MessageStatus::Queued],
            MessageStatus::Dispatched,
            &none,
            T0 + 1,
        )
        .await
        .expect("dispatch")
        .expect("was queued");
    assert_eq!(
        dispatched,
        Message {
            status: MessageStatus::Dispatched,
            updated_at: T0 + 1,
            ..m.clone()
        }
    );

    let streaming = s
        .transition_message(
            &m.id,
            &[MessageStatus::Queued, MessageStatus::Dispatched],
            MessageStatus::Streaming,
            &none,
            T0 + 2,
        )
        .await
        .expect("stream")
        .expect("was dispatched");
    assert_eq!(streaming.status, MessageStatus::Streaming);

    let patch = MessagePatch {
        chunk_count: Some(3),
        error: None,
    };
    let complete = s
        .transition_message(
            &m.id,
            &[MessageStatus::Streaming],
            MessageStatus::Complete,
            &patch,
            T0 + 3,
        )
        .await
        .expect("complete")
        .expect("was streaming");
    let expected = Message {
        status: MessageStatus::Complete,
        chunk_count: Some(3),
        updated_at: T0 + 3,
        ..m.clone()
    };
    assert_eq!(complete, expected);
    assert_eq!(s.message(&m.id).await.expect("get"), Some(expected));

    let failed_patch = MessagePatch {
        chunk_count: Some(0),
        error: Some("worker lost".into()),
    };
    let other = seed_message(&s, &sess, "second").await;
    let failed = s
        .transition_message(
            &other.id,
            &[MessageStatus::Queued],
            MessageStatus::Failed,
            &failed_patch,
            T0 + 4,
        )
        .await
        .expect("fail")
        .expect("was queued");
    assert_eq!(failed.error.as_deref(), Some("worker lost"));
    assert_eq!(failed.chunk_count, Some(0));
    assert_eq!(
        failed,
        Message {
            status: MessageStatus::Failed,
            chunk_count: Some(0),
            error: Some("worker lost".into()),
            updated_at: T0 + 4,
            ..other.clone()
        }
    );

    let missing = s
        .transition_message(
            &MessageId::random(),
            &[MessageStatus::Queued],
            MessageStatus::Dispatched,
            &none,
            T0,
        )
        .await
        .expect("missing");
    assert_eq!(missing, None);
}

pub async fn concurrent_message_transitions_have_one_winner<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;

    let results = race(&s, 2, |s, i| {
        let id = m.id.clone();
        let to = if i == 0 {
            MessageStatus::Complete
        } else {
            MessageStatus::Aborted
        };
        async move {
            s.transition_message(
                &id,
                &[MessageStatus::Queued],
                to,
                &MessagePatch::default(),
                T0 + 1,
            )
            .await
            .expect("transition")
        }
    })
    .await;
    let winners: Vec<Message> = results.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one transition wins: {winners:?}");
    assert_eq!(
        s.message(&m.id).await.expect("get"),
        Some(winners[0].clone())
    );
}

// ---- chunks ----

/// `insert_chunks` answers each chunk of a frame as `insert_chunk` would,
/// in the frame's order: new ones stored, repeats found.
pub async fn a_frames_chunks_are_put_in_one_call<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let first = text_chunk(&m.id, 1, "first");
    assert_new(s.insert_chunk(&first).await.expect("insert"));
    let frame = vec![
        text_chunk(&m.id, 2, "b"),
        text_chunk(&m.id, 1, "again"),
        text_chunk(&m.id, 0, "a"),
    ];
    let answers = s.insert_chunks(&frame).await.expect("insert the frame");
    assert_eq!(answers.len(), 3);
    assert!(matches!(&answers[0], Inserted::New(c) if c == &frame[0]), "{answers:?}");
    assert!(matches!(&answers[1], Inserted::Existing(c) if c == &first), "the first write stays: {answers:?}");
    assert!(matches!(&answers[2], Inserted::New(c) if c == &frame[2]), "{answers:?}");
    let stored = s.chunks(&m.id, 0, 10).await.expect("all");
    assert_eq!(stored, vec![frame[2].clone(), first, frame[0].clone()]);
}

pub async fn chunks_idempotent_and_ordered<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let other = seed_message(&s, &sess, "other").await;

    let tool = Chunk {
        message: m.id.clone(),
        seq: 1,
        body: ChunkBody::ToolCall {
            part_id: "prt_2".into(),
            call_id: "call_1".into(),
            tool: "bash".into(),
            status: crate::protocol::ToolStatus::Running,
            input: serde_json::json!({"command": "ls", "nested": [1, {"a": null}]}),
            title: Some("List files".into()),
        },
        created_at: T0 + 1,
    };
    let c0 = text_chunk(&m.id, 0, "Hel");
    let c2 = text_chunk(&m.id, 2, "lo");
    for c in [&c2, &c0, &tool] {
        assert_eq!(&assert_new(s.insert_chunk(c).await.expect("insert")), c);
    }
    s.insert_chunk(&text_chunk(&other.id, 0, "x"))
        .await
        .expect("insert other");

    let retry = text_chunk(&m.id, 1, "a different body");
    assert_eq!(
        assert_existing(s.insert_chunk(&retry).await.expect("insert again")),
        tool,
        "the first write of a (message, seq) stays"
    );

    assert_eq!(
        s.chunks(&m.id, 0, 10).await.expect("all"),
        vec![c0, tool.clone(), c2.clone()],
        "seq order"
    );
    assert_eq!(s.chunks(&m.id, 1, 1).await.expect("page"), vec![tool]);
    assert_eq!(s.chunks(&m.id, 2, 10).await.expect("tail"), vec![c2]);
    assert!(s.chunks(&m.id, 3, 10).await.expect("past end").is_empty());
    assert_eq!(s.chunks(&other.id, 0, 10).await.expect("other").len(), 1);
}

// ---- prompts ----

pub async fn prompts_idempotent_and_answered_once<S: Store>(s: S) {
    let seed = seed(&s).await;
    let other_worker = worker(&seed.user.id);
    s.create_worker(&other_worker).await.expect("create worker");
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let elsewhere_sess = session(&seed.user.id, &other_worker.id, T0);
    s.insert_session(&elsewhere_sess, NO_CAP).await.expect("insert");
    let elsewhere_msg = seed_message(&s, &elsewhere_sess, "hi").await;

    let asked = prompt(&m);
    assert_eq!(
        assert_new(s.insert_prompt(&asked).await.expect("insert")),
        asked
    );
    let retry = Prompt {
        kind: PromptKind::Question,
        ..asked.clone()
    };
    assert_eq!(
        assert_existing(s.insert_prompt(&retry).await.expect("insert again")),
        asked
    );
    assert_eq!(s.prompt(&asked.id).await.expect("get"), Some(asked.clone()));
    assert_eq!(s.prompt(&PromptId::random()).await.expect("missing"), None);

    let once = permission_answer(PermissionReply::Once);
    let answered = s
        .answer_prompt(&asked.id, &once)
        .await
        .expect("answer")
        .expect("was unanswered");
    let expected = Prompt {
        answer: Some(once.clone()),
        ..asked.clone()
    };
    assert_eq!(answered, expected);
    assert_eq!(
        s.answer_prompt(&asked.id, &permission_answer(PermissionReply::Reject))
            .await
            .expect("answer twice"),
        None
    );
    assert_eq!(
        s.prompt(&asked.id).await.expect("get"),
        Some(expected.clone())
    );
    assert_eq!(
        s.answer_prompt(&PromptId::random(), &once)
            .await
            .expect("answer missing"),
        None
    );

    // Only answered, undelivered prompts of this worker are pending delivery.
    let unanswered = prompt(&m);
    let question = Prompt {
        kind: PromptKind::Question,
        answer: Some(PromptAnswer::Question {
            answers: vec![vec!["yes".into()], vec![]],
        }),
        created_at: T0 + 1,
        ..prompt(&m)
    };
    let delivered = Prompt {
        answer: Some(once.clone()),
        delivered: true,
        ..prompt(&m)
    };
    let other = Prompt {
        answer: Some(PromptAnswer::QuestionRejected),
        ..prompt(&elsewhere_msg)
    };
    for p in [&unanswered, &question, &delivered, &other] {
        assert_new(s.insert_prompt(p).await.expect("insert"));
    }
    assert_eq!(
        s.prompt(&question.id).await.expect("get"),
        Some(question.clone())
    );

    assert_eq!(
        sorted_prompts(
            s.undelivered_prompts(&seed.worker.id)
                .await
                .expect("undelivered")
        ),
        sorted_prompts(vec![expected, question.clone()])
    );
    s.set_prompt_delivered(&asked.id).await.expect("deliver");
    assert!(
        s.prompt(&asked.id)
            .await
            .expect("get")
            .expect("exists")
            .delivered
    );
    assert_eq!(
        s.undelivered_prompts(&seed.worker.id)
            .await
            .expect("undelivered"),
        vec![question]
    );
    assert_eq!(
        s.undelivered_prompts(&other_worker.id)
            .await
            .expect("other worker"),
        vec![other]
    );
}

fn sorted_prompts(mut v: Vec<Prompt>) -> Vec<Prompt> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

pub async fn concurrent_prompt_answers_have_one_winner<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let asked = prompt(&m);
    s.insert_prompt(&asked).await.expect("insert");

    let results = race(&s, 2, |s, i| {
        let id = asked.id.clone();
        let reply = if i == 0 {
            PermissionReply::Always
        } else {
            PermissionReply::Reject
        };
        async move {
            s.answer_prompt(&id, &permission_answer(reply))
                .await
                .expect("answer")
        }
    })
    .await;
    let winners: Vec<Prompt> = results.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one answer wins: {winners:?}");
    assert_eq!(
        s.prompt(&asked.id).await.expect("get"),
        Some(winners[0].clone())
    );
}
