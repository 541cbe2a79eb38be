//! Checks only this adapter can make: connection settings and query plans.
//! The behaviour every store shares is in `tether_domain::testkit`.

use rusqlite::types::Value;
use rusqlite::ToSql;
use tether_domain::ids::UserId;
use tether_domain::model::{Session, Worker};

use super::sql;
use super::SqliteStore;

/// A database file left by an older Tether: the first `version` migrations,
/// and nothing of the store (the test writes its rows as that store did).
fn old_database(path: &std::path::Path, version: u32) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open raw");
    for step in &super::schema::MIGRATIONS[..version as usize] {
        conn.execute_batch(step).expect("an old schema");
    }
    conn.pragma_update(None, "user_version", version)
        .expect("its version");
    conn
}

/// Writes one row as an older store did: `row` is its columns and values.
fn insert_row(conn: &rusqlite::Connection, table: &str, row: &[(&str, &dyn ToSql)]) {
    let columns: Vec<&str> = row.iter().map(|(c, _)| *c).collect();
    let marks: Vec<String> = (1..=row.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns.join(", "),
        marks.join(", ")
    );
    let values: Vec<&dyn ToSql> = row.iter().map(|(_, v)| *v).collect();
    conn.execute(&sql, &values[..])
        .unwrap_or_else(|e| panic!("insert into {table}: {e}"));
}

/// An approved worker of `owner`, as the schemas before 5 stored one.
fn insert_old_worker(conn: &rusqlite::Connection, worker: &Worker, owner: &UserId) {
    insert_row(
        conn,
        "workers",
        &[
            ("id", &worker.id.as_str()),
            ("owner", &owner.as_str()),
            ("status", &"approved"),
            ("credential_hash", &worker.credential_hash.as_str()),
            ("machine", &"m"),
            ("name", &"w"),
            ("workdir", &"/w"),
            ("models", &"[]"),
            ("created_at", &worker.created_at),
        ],
    );
}

/// A ready session, as the schemas before 5 stored one (no title source).
fn insert_old_session(
    conn: &rusqlite::Connection,
    session: &Session,
    title: &str,
    message_count: u32,
) {
    let model = serde_json::to_string(&session.model).expect("model");
    insert_row(
        conn,
        "sessions",
        &[
            ("id", &session.id.as_str()),
            ("owner", &session.owner.as_str()),
            ("worker", &session.worker.as_str()),
            ("model", &model),
            ("title", &title),
            ("status", &"ready"),
            ("message_count", &message_count),
            ("created_at", &session.created_at),
            ("updated_at", &session.created_at),
        ],
    );
}

fn file_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("tether.db")).expect("open store");
    (dir, store)
}

#[test]
fn connection_is_durable_and_enforces_keys() {
    let (_dir, store) = file_store();
    store.with_connection(|conn| {
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        // 2 is FULL: the log is synced on every commit.
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("synchronous");
        assert_eq!(sync, 2);
        let fk: bool = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .expect("foreign_keys");
        assert!(fk);
        let timeout: i64 = conn
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .expect("busy_timeout");
        assert!(timeout > 0);
    });
}

/// Every request-path statement reads through an index: a plan step that
/// scans a whole table would make a request's cost grow with the history.
#[test]
fn request_queries_use_indexes() {
    let store = SqliteStore::open_in_memory().expect("open store");
    store.with_connection(|conn| {
        for (name, query) in sql::statements() {
            let mut st = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap_or_else(|e| panic!("{name} does not prepare: {e}"));
            let nulls = vec![Value::Null; st.parameter_count()];
            let plan: Vec<String> = st
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .and_then(|rows| rows.collect())
                .unwrap_or_else(|e| panic!("{name} has no plan: {e}"));
            for step in &plan {
                // `json_each` is the from-set of a transition, a handful of
                // values; a constant row is the outer query of `SELECT EXISTS`.
                let full_scan = step.starts_with("SCAN ")
                    && !step.contains(" USING ")
                    && !step.contains("json_each")
                    && step != "SCAN CONSTANT ROW";
                assert!(!full_scan, "{name} scans a table: {step}\nplan: {plan:#?}");
            }
            let paged = matches!(
                name,
                "SESSIONS_OF" | "SESSIONS_OF_WORKER" | "MESSAGES_OF" | "CHUNKS" | "PENDING_WORKERS"
            );
            if paged {
                assert!(
                    !plan.iter().any(|s| s.contains("TEMP B-TREE")),
                    "{name} sorts instead of reading in index order: {plan:#?}"
                );
            }
        }
    });
}

/// The counts behind the per-user caps read just the rows they count
/// (partial indexes of live sessions and open messages), so their cost does
/// not grow with a user's history.
#[test]
fn cap_counts_read_their_own_indexes() {
    let store = SqliteStore::open_in_memory().expect("open store");
    store.with_connection(|conn| {
        for (query, index) in [
            (&*sql::COUNT_CONNECTIONS, "connections_by_principal"),
            (&*sql::COUNT_LIVE_SESSIONS, "sessions_live"),
            (&*sql::COUNT_OPEN_MESSAGES, "messages_open_by_owner"),
        ] {
            let mut st = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .expect("prepare");
            let nulls = vec![Value::Null; st.parameter_count()];
            let plan: Vec<String> = st
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .and_then(|rows| rows.collect())
                .expect("plan");
            assert!(
                plan.iter()
                    .any(|step| step.contains(&format!("COVERING INDEX {index} "))),
                "{query} does not count from {index}: {plan:#?}"
            );
        }
    });
}

/// A database of the first schema (foreign keys from workers, sessions and
/// tickets to users) migrates with its data; references into the rebuilt
/// tables still hold and are enforced; a user with workers and sessions can
/// then be removed.
#[tokio::test]
async fn the_first_schema_migrates_and_its_users_can_be_removed() {
    use tether_domain::auth::SecretHash;
    use tether_domain::store::{Store as _, StoreError};
    use tether_domain::testkit::{self, T0};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tether.db");
    let user = testkit::user("ada");
    let worker = testkit::worker(&user.id);
    let session = testkit::session(&user.id, &worker.id, T0);
    {
        let conn = old_database(&path, 1);
        conn.pragma_update(None, "foreign_keys", true)
            .expect("foreign keys");
        insert_row(
            &conn,
            "users",
            &[
                ("id", &user.id.as_str()),
                ("name", &user.name),
                ("secret_hash", &user.secret_hash.as_str()),
                ("admin", &false),
                ("created_at", &T0),
            ],
        );
        insert_row(
            &conn,
            "tickets",
            &[
                ("hash", &"t"),
                ("user_id", &user.id.as_str()),
                ("expires_at", &(T0 + 60_000)),
            ],
        );
        insert_old_worker(&conn, &worker, &user.id);
        insert_old_session(&conn, &session, "t", 0);
        // Schema 1 would not let this user go.
        assert!(conn
            .execute("DELETE FROM users WHERE id = ?1", [user.id.as_str()])
            .is_err());
    }

    let store = SqliteStore::open(&path).expect("migrate");
    let version: u32 = store.with_connection(|conn| {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version")
    });
    assert_eq!(version, super::SCHEMA_VERSION);
    let kept = store
        .worker(&worker.id)
        .await
        .expect("worker")
        .expect("kept");
    assert_eq!(
        (kept.owner.as_ref(), kept.status),
        (Some(&user.id), worker.status)
    );
    let kept = store
        .session(&session.id)
        .await
        .expect("session")
        .expect("kept");
    assert_eq!((&kept.owner, &kept.worker), (&user.id, &worker.id));
    // The old ticket had no secret hash: it went with the old table.
    assert_eq!(
        store
            .take_ticket(&SecretHash::from_stored("t"), T0)
            .await
            .expect("take"),
        None
    );
    // References into the rebuilt tables resolve, and are enforced.
    testkit::seed_message(&store, &kept, "after the migration").await;
    let orphan = testkit::session(&user.id, &tether_domain::ids::WorkerId::random(), T0);
    assert!(matches!(
        store.insert_session(&orphan, testkit::NO_CAP).await,
        Err(StoreError::Conflict(_))
    ));

    assert!(store.delete_user(&user.id).await.expect("remove"));
    assert!(store.worker(&worker.id).await.expect("worker").is_some());
    assert!(store.session(&session.id).await.expect("session").is_some());
    let fk: bool = store.with_connection(|conn| {
        conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .expect("foreign_keys")
    });
    assert!(fk, "foreign keys are enforced again after the migration");
}

/// Calls made together share one commit (the writer's batch) without
/// sharing a fate: in one burst, a clashing insert is refused and the
/// others are kept, each chunk exactly once, and every answer came after
/// its commit (a fresh store on the same file sees them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_calls_commits_together_and_fails_apart() {
    use tether_domain::store::{Inserted, Store as _, StoreError};
    use tether_domain::testkit;

    let (dir, store) = file_store();
    let seed = testkit::seed(&store).await;
    let session = testkit::seed_session(&store, &seed, testkit::T0).await;
    let message = testkit::seed_message(&store, &session, "burst").await;
    let mut calls = Vec::new();
    for seq in 0..300u32 {
        let (store, id) = (store.clone(), message.id.clone());
        calls.push(tokio::spawn(async move {
            // Each seq twice: the second insert of a seq finds the first.
            let chunk = testkit::text_chunk(&id, seq % 150, "x");
            matches!(
                store.insert_chunk(&chunk).await.expect("insert"),
                Inserted::New(_)
            )
        }));
    }
    let clashes: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.create_user(&testkit::user("same-name")).await })
        })
        .collect();
    let mut fresh = 0;
    for call in calls {
        fresh += u32::from(call.await.expect("task"));
    }
    assert_eq!(fresh, 150, "each seq stored once");
    let mut created = 0;
    for clash in clashes {
        match clash.await.expect("task") {
            Ok(()) => created += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("a clash is a conflict, not {e}"),
        }
    }
    assert_eq!(created, 1, "one user of the name");
    drop(store);
    let reopened = SqliteStore::open(&dir.path().join("tether.db")).expect("reopen");
    let kept = reopened
        .chunks(&message.id, 0, 1_000)
        .await
        .expect("chunks");
    assert_eq!(kept.len(), 150);
    assert!(reopened
        .user_by_name("same-name")
        .await
        .expect("read")
        .is_some());
}

/// A database of schema 4 migrates to where titles come from: a session
/// with a title had it from its user (nothing else gave titles then), one
/// without has none; no worker has an agent state until it reports one.
#[tokio::test]
async fn sessions_titled_before_schema_5_keep_their_titles_as_the_users() {
    use tether_domain::model::TitleSource;
    use tether_domain::store::Store as _;
    use tether_domain::testkit::{self, T0};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tether.db");
    let user = testkit::user("ada");
    let worker = testkit::worker(&user.id);
    let titled = testkit::session(&user.id, &worker.id, T0);
    let untitled = testkit::session(&user.id, &worker.id, T0 + 1);
    {
        let conn = old_database(&path, 4);
        insert_old_worker(&conn, &worker, &user.id);
        insert_old_session(&conn, &titled, "Fix the parser", 0);
        insert_old_session(&conn, &untitled, "", 0);
    }

    let store = SqliteStore::open(&path).expect("migrate");
    let kept = store.session(&titled.id).await.expect("get").expect("kept");
    assert_eq!(
        (kept.title.as_str(), kept.title_source),
        ("Fix the parser", Some(TitleSource::User))
    );
    let kept = store
        .session(&untitled.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!((kept.title.as_str(), kept.title_source), ("", None));
    let named = store
        .set_agent_title(&untitled.id, "Named by the agent", T0 + 9)
        .await
        .expect("title")
        .expect("an untitled session takes the agent's title");
    assert_eq!(named.title_source, Some(TitleSource::Agent));
    assert_eq!(
        store
            .set_agent_title(&titled.id, "Renamed", T0 + 9)
            .await
            .expect("title"),
        None,
        "a title from before stays"
    );
    assert_eq!(
        store
            .worker(&worker.id)
            .await
            .expect("get")
            .expect("kept")
            .agent,
        None
    );
}

/// With a reader beside the writer, closing the store still folds the WAL
/// into the database file, as one connection did, before the drop returns.
#[tokio::test]
async fn closing_the_store_folds_the_wal_into_the_file() {
    use tether_domain::store::Store as _;
    use tether_domain::testkit;

    let (dir, store) = file_store();
    testkit::seed(&store).await;
    assert!(
        store.users().await.expect("read").len() == 1,
        "read through the reader"
    );
    drop(store);
    // At once: dropping the store joins its threads, so a process that ends
    // right after (a signal, `main` returning) leaves no WAL behind.
    let wal = dir.path().join("tether.db-wal");
    assert!(
        !wal.exists(),
        "the WAL is folded and removed when the store closes"
    );
}

/// A database of schema 5, whose messages kept their answer's text in
/// `final_text`, migrates: the column is gone, every message and chunk is
/// kept as it was, the answer still reads from its chunks, and messages are
/// written and completed as before.
#[tokio::test]
async fn messages_that_kept_their_final_text_migrate_to_schema_6() {
    use tether_domain::model::{Message, MessageStatus};
    use tether_domain::store::{MessagePatch, Store as _};
    use tether_domain::testkit::{self, T0};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tether.db");
    let user = testkit::user("ada");
    let worker = testkit::worker(&user.id);
    let session = testkit::session(&user.id, &worker.id, T0);
    let answered = Message {
        status: MessageStatus::Complete,
        chunk_count: Some(2),
        updated_at: T0 + 5,
        ..testkit::message(&session, "why does it hang?")
    };
    let chunks = [
        testkit::text_chunk(&answered.id, 0, "It hangs because "),
        testkit::text_chunk(&answered.id, 1, "the socket stays open."),
    ];
    let failed = Message {
        number: 1,
        status: MessageStatus::Failed,
        chunk_count: Some(0),
        error: Some("worker lost".into()),
        ..testkit::message(&session, "and now?")
    };
    {
        let conn = old_database(&path, 5);
        insert_old_worker(&conn, &worker, &user.id);
        insert_old_session(&conn, &session, "", 2);
        for (m, final_text) in [
            (&answered, Some("It hangs because the socket stays open.")),
            (&failed, None),
        ] {
            insert_row(
                &conn,
                "messages",
                &[
                    ("id", &m.id.as_str()),
                    ("session", &m.session.as_str()),
                    ("owner", &m.owner.as_str()),
                    ("worker", &m.worker.as_str()),
                    ("number", &m.number),
                    ("text", &m.text),
                    ("status", &m.status.as_str()),
                    ("chunk_count", &m.chunk_count),
                    ("final_text", &final_text),
                    ("error", &m.error),
                    ("created_at", &m.created_at),
                    ("updated_at", &m.updated_at),
                ],
            );
        }
        for c in &chunks {
            let body = serde_json::to_string(&c.body).expect("body");
            insert_row(
                &conn,
                "chunks",
                &[
                    ("message", &c.message.as_str()),
                    ("seq", &c.seq),
                    ("body", &body),
                    ("created_at", &c.created_at),
                ],
            );
        }
    }

    let store = SqliteStore::open(&path).expect("migrate");
    let (version, columns) = store.with_connection(|conn| {
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('messages')")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .expect("columns");
        (version, columns)
    });
    assert_eq!(version, super::SCHEMA_VERSION);
    assert!(version >= 6);
    assert!(
        !columns.iter().any(|c| c == "final_text"),
        "columns: {columns:?}"
    );
    assert_eq!(
        store.message(&answered.id).await.expect("get"),
        Some(answered.clone())
    );
    assert_eq!(
        store.message(&failed.id).await.expect("get"),
        Some(failed.clone())
    );
    assert_eq!(
        store.messages_of(&session.id, 0, 10).await.expect("list"),
        vec![answered.clone(), failed.clone()]
    );
    assert_eq!(
        store.chunks(&answered.id, 0, 10).await.expect("chunks"),
        chunks.to_vec()
    );

    // Writes go on as before.
    let next = testkit::seed_message(&store, &session, "one more").await;
    let done = store
        .transition_message(
            &next.id,
            &[MessageStatus::Queued],
            MessageStatus::Complete,
            &MessagePatch {
                chunk_count: Some(0),
                error: None,
            },
            T0 + 9,
        )
        .await
        .expect("complete")
        .expect("was queued");
    assert_eq!(
        done,
        Message {
            status: MessageStatus::Complete,
            chunk_count: Some(0),
            updated_at: T0 + 9,
            ..next
        }
    );
}
