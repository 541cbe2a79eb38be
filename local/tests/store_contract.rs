//! `SqliteStore` against the store contract, in memory and on disk, plus
//! what only a file can show: data outlives the store, and reopening does
//! not migrate twice.

use std::sync::atomic::{AtomicUsize, Ordering};

use tether_domain::model::{MessageStatus, Session, SessionStatus};
use tether_domain::protocol::PermissionReply;
use tether_domain::store::{MessagePatch, SessionPatch, Store, StoreError};
use tether_domain::testkit::{self, T0};
use tether_local::sqlite::{SqliteStore, SCHEMA_VERSION};

// Several worker threads, so the concurrency checks really race on the
// store's blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_in_memory() {
    testkit::store_contract(|| async {
        SqliteStore::open_in_memory().expect("open in-memory store")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_on_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = AtomicUsize::new(0);
    testkit::store_contract(|| {
        let path = dir
            .path()
            .join(format!("store-{}.db", n.fetch_add(1, Ordering::Relaxed)));
        async move { SqliteStore::open(&path).expect("open file store") }
    })
    .await;
}

fn user_version(path: &std::path::Path) -> u32 {
    let conn = rusqlite::Connection::open(path).expect("open raw");
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

#[tokio::test]
async fn writes_outlive_the_store_and_reopening_keeps_the_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tether.db");

    let store = SqliteStore::open(&path).expect("open");
    assert_eq!(store.path(), Some(path.as_path()));
    let seed = testkit::seed(&store).await;
    let session = testkit::seed_session(&store, &seed, T0).await;
    let ready = store
        .transition_session(
            &session.id,
            &[SessionStatus::Starting],
            SessionStatus::Ready,
            &SessionPatch {
                agent_session_id: Some("ses_agent".into()),
                error: None,
            },
            T0 + 1,
        )
        .await
        .expect("transition")
        .expect("was starting");
    let first = testkit::seed_message(&store, &session, "first").await;
    let second = testkit::seed_message(&store, &session, "second").await;
    let streaming = store
        .transition_message(
            &second.id,
            &[MessageStatus::Queued],
            MessageStatus::Streaming,
            &MessagePatch::default(),
            T0 + 2,
        )
        .await
        .expect("transition")
        .expect("was queued");
    let chunk = testkit::text_chunk(&first.id, 0, "hello");
    store.insert_chunk(&chunk).await.expect("chunk");
    let prompt = testkit::prompt(&second);
    store.insert_prompt(&prompt).await.expect("prompt");
    let answered = store
        .answer_prompt(
            &prompt.id,
            &testkit::permission_answer(PermissionReply::Always),
        )
        .await
        .expect("answer")
        .expect("was unanswered");
    let browser = testkit::user_connection(&seed.user.id, T0);
    store.put_connection(&browser).await.expect("connection");
    assert!(store.watch(&session.id, &browser.id).await.expect("watch"));
    let ticket = testkit::secret_hash();
    let issued = testkit::ticket(&seed.user, T0 + 30_000);
    store.put_ticket(&ticket, &issued).await.expect("ticket");
    drop(store);

    assert_eq!(user_version(&path), SCHEMA_VERSION);
    for _ in 0..2 {
        let reopened = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            reopened.user(&seed.user.id).await.expect("user"),
            Some(seed.user.clone())
        );
        assert_eq!(
            reopened.worker(&seed.worker.id).await.expect("worker"),
            Some(seed.worker.clone())
        );
        assert_eq!(
            reopened.session(&session.id).await.expect("session"),
            Some(Session {
                message_count: 2,
                ..ready.clone()
            })
        );
        assert_eq!(
            reopened
                .messages_of(&session.id, 0, 10)
                .await
                .expect("messages"),
            vec![first.clone(), streaming.clone()]
        );
        assert_eq!(
            reopened.open_messages(&seed.worker.id).await.expect("open"),
            vec![first.clone(), streaming.clone()]
        );
        assert_eq!(
            reopened.chunks(&first.id, 0, 10).await.expect("chunks"),
            vec![chunk.clone()]
        );
        assert_eq!(
            reopened
                .undelivered_prompts(&seed.worker.id)
                .await
                .expect("prompts"),
            vec![answered.clone()]
        );
        assert_eq!(
            reopened.watchers(&session.id).await.expect("watchers"),
            vec![browser.id.clone()]
        );
        drop(reopened);
        assert_eq!(
            user_version(&path),
            SCHEMA_VERSION,
            "reopening migrates nothing"
        );
    }

    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        reopened.take_ticket(&ticket, T0).await.expect("take"),
        Some(issued)
    );
    drop(reopened);
    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        reopened.take_ticket(&ticket, T0).await.expect("take"),
        None,
        "a take is durable too"
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tether.db");
    drop(SqliteStore::open(&path).expect("create"));
    {
        let conn = rusqlite::Connection::open(&path).expect("open raw");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump version");
    }
    match SqliteStore::open(&path) {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected the newer schema to be refused, got {other:?}"),
    }
}
