//! Checks only this adapter can make: connection settings and query plans.
//! The behaviour every store shares is in `tether_domain::testkit`.

use rusqlite::types::Value;

use super::port::sql;
use super::SqliteStore;

fn file_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("tether.db")).expect("open store");
    (dir, store)
}

#[test]
fn connection_is_durable_and_enforces_keys() {
    let (_dir, store) = file_store();
    let conn = store.inner.lock();
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
}

/// Every request-path statement reads through an index: a plan step that
/// scans a whole table would make a request's cost grow with the history.
#[test]
fn request_queries_use_indexes() {
    let store = SqliteStore::open_in_memory().expect("open store");
    let conn = store.inner.lock();
    for (name, query) in sql::all() {
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
            "SESSIONS_OF" | "SESSIONS_OF_WORKER" | "MESSAGES_OF" | "CHUNKS"
        );
        if paged {
            assert!(
                !plan.iter().any(|s| s.contains("TEMP B-TREE")),
                "{name} sorts instead of reading in index order: {plan:#?}"
            );
        }
    }
}
