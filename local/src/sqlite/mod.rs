//! `SqliteStore`: the store port on one SQLite file.
//!
//! One connection behind a mutex: the local host serves one person's
//! handful of browsers and workers, and a single writer makes every
//! conditional method atomic without retry loops. Each call runs on the
//! blocking pool, so a slow fsync never stalls the async executor.
//!
//! Durability: WAL with `synchronous=FULL` syncs the log on every commit, so
//! a write that returned `Ok` survives a killed process and a power cut.

mod port;
mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{ffi, Connection, ErrorCode};
use tether_domain::store::{StoreError, StoreResult};

pub use schema::SCHEMA_VERSION;

/// How long a statement waits for another process (an admin command run
/// while the server is up) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The store port on SQLite. Clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if absent) the database file at `path` and brings its
    /// schema up to date. The parent directory must exist.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn =
            Connection::open(path).map_err(|e| db_err(&format!("open {}", path.display()), e))?;
        let store = Self::setup(conn, Some(path.to_path_buf()))?;
        tracing::debug!(path = %path.display(), "opened store");
        Ok(store)
    }

    /// A private database that lives as long as the store (tests, dry runs).
    pub fn open_in_memory() -> StoreResult<Self> {
        let conn = Connection::open_in_memory().map_err(|e| db_err("open in memory", e))?;
        Self::setup(conn, None)
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    fn setup(mut conn: Connection, path: Option<PathBuf>) -> StoreResult<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| db_err("set busy timeout", e))?;
        // A database in memory has no log to put in WAL mode; it answers "memory".
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| db_err("set journal mode", e))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "database refused WAL journal mode (it is in {mode} mode)"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| db_err("set synchronous", e))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| db_err("enable foreign keys", e))?;
        // Watches are deleted with their connection by a cascade, so the
        // store is wrong without foreign keys; refuse a build that ignores them.
        let fk: bool = conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .map_err(|e| db_err("read foreign keys", e))?;
        if !fk {
            return Err(StoreError::Unavailable(
                "this SQLite build does not enforce foreign keys".into(),
            ));
        }
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path,
            }),
        })
    }

    /// Runs `f` with the connection on the blocking pool. The mutex is taken
    /// and released inside the blocking task, never held across an await.
    async fn run<T, F>(&self, op: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = inner.lock();
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("{op}: store task failed: {e}")))?;
        match &result {
            // A taken key is an answer for the caller, not a fault.
            Err(e @ StoreError::Conflict(_)) => tracing::debug!(op, error = %e, "store conflict"),
            Err(e) => tracing::warn!(op, error = %e, "store call failed"),
            Ok(_) => {}
        }
        result
    }

    /// Deletes every connection record (their watches go with them) and
    /// clears every worker's presence; returns how many records went. Only
    /// for a host that has just taken the database over (see
    /// `control::DataDir::forget_connections`).
    pub async fn forget_connections(&self) -> StoreResult<u64> {
        self.run("forget_connections", |conn| {
            let tx = conn
                .transaction()
                .map_err(|e| db_err("forget_connections", e))?;
            let gone = tx
                .execute("DELETE FROM connections", [])
                .map_err(|e| db_err("forget_connections", e))?;
            tx.execute(
                "UPDATE workers SET connection = NULL WHERE connection IS NOT NULL",
                [],
            )
            .map_err(|e| db_err("forget_connections", e))?;
            tx.commit().map_err(|e| db_err("forget_connections", e))?;
            Ok(gone as u64)
        })
        .await
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // A call panicked while holding the connection. Its
                // transaction rolled back as it unwound; if it panicked
                // between BEGIN and the transaction guard, undo that here so
                // later calls do not run inside a stale transaction.
                let guard = poisoned.into_inner();
                if !guard.is_autocommit() {
                    if let Err(e) = guard.execute_batch("ROLLBACK") {
                        tracing::error!(error = %e, "could not roll back after a panic");
                    }
                }
                tracing::warn!("store connection recovered after a panic");
                self.conn.clear_poison();
                guard
            }
        }
    }
}

/// Maps a SQLite error to the port's error kinds. A unique or foreign-key
/// violation is the caller's key clashing with stored data (`Conflict`); a
/// value that cannot be decoded is `Corrupt`; the rest is the backend failing.
fn db_err(op: &str, e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            match f.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    StoreError::Conflict(format!("{op}: {e}"))
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                    StoreError::Conflict(format!("{op}: a referenced record does not exist"))
                }
                _ => StoreError::Unavailable(format!("{op}: {e}")),
            }
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(format!("{op}: {e}")),
        _ => StoreError::Unavailable(format!("{op}: {e}")),
    }
}

#[cfg(test)]
mod tests;
