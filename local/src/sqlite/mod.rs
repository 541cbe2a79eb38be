//! `SqliteStore`: the store port on one SQLite file.
//!
//! Each connection is owned by a thread of its own. The writer takes every
//! write and every check-and-write as a job sent to it, so a single writer
//! makes every conditional method atomic without retry loops; on a database
//! file, plain reads go to a reader connection beside it (WAL lets it see
//! every committed write), so a read waits for no batch. No call blocks the
//! async executor or queues on a lock in the blocking pool.
//!
//! Each method of the port is in the file of its aggregate (`port.rs` maps
//! them), its statements in `sql.rs`, row mapping in `rows.rs`, the schema
//! and its migrations in `schema.rs`.
//!
//! **Group commit.** The writer takes every job waiting and runs them in one
//! transaction (up to [`MAX_BATCH`]), each in a savepoint where it needs
//! several statements to be atomic, then commits once and only then answers
//! them all. Under load one fsync serves many calls; alone, a call is
//! answered as soon as its own commit is done.
//!
//! Durability: WAL with `synchronous=FULL` syncs the log on every commit, and
//! no call is answered before the commit that holds it, so a write that
//! returned `Ok` survives a killed process and a power cut.

mod connections;
mod messages;
mod port;
mod rows;
mod schema;
mod sessions;
mod sql;
mod users;
mod workers;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{ffi, Connection, ErrorCode};
use tether_domain::store::{StoreError, StoreResult};

pub use schema::SCHEMA_VERSION;

/// How long a statement waits for another process (an admin command run
/// while the server is up) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Jobs one commit may hold at most: a bound on how long the first of them
/// waits for its answer behind the others.
const MAX_BATCH: usize = 128;

/// The store port on SQLite. Clones share its connections (the writer's
/// thread, and on a file the reader's), which end when the last clone is
/// dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Option<mpsc::Sender<Job>>,
    /// The reader's queue, for a database file (WAL lets it read beside the
    /// writer); a database in memory is one connection, and reads go to
    /// the writer.
    reads: Option<mpsc::Sender<Read>>,
    /// The reader's thread, then the writer's: joined when the store goes,
    /// so the connections are closed (and the WAL folded into the file)
    /// before the process can end.
    threads: Vec<std::thread::JoinHandle<()>>,
    path: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queues ends the threads once they have done what was
        // sent; the reader first, so the writer's connection closes last.
        self.reads = None;
        self.jobs = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a store thread panicked");
            }
        }
    }
}

/// A read for the reader thread: runs on its connection, outside any batch.
type Read = Box<dyn FnOnce(&Connection) + Send>;

/// A call for the writer: runs on the connection inside the batch's
/// transaction (or not at all, given none), and gives back how to answer
/// its caller once the batch is committed (`Ok`) or not (`Err`, why).
type Job = Box<dyn FnOnce(Option<&mut Connection>) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

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
        // Under constant reads the log grows between the checkpoints that
        // reset it; this gives the space back when one does.
        conn.pragma_update(None, "journal_size_limit", 8 * 1024 * 1024)
            .map_err(|e| db_err("set journal size limit", e))?;
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
        let mut threads = Vec::new();
        let reads = match &path {
            Some(path) => {
                let (reads, thread) = start_reader(path)?;
                threads.push(thread);
                Some(reads)
            }
            None => None,
        };
        let (jobs, queue) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("tether-sqlite".into())
            .spawn(move || writer(conn, queue))
            .map_err(|e| StoreError::Unavailable(format!("start the store's writer: {e}")))?;
        threads.push(writer);
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                reads,
                threads,
                path,
            }),
        })
    }

    /// Runs `f` on the writer's connection, inside a batch's transaction,
    /// and answers once that transaction is committed. A call that fails
    /// leaves nothing behind: a single statement is atomic, and a call of
    /// several uses a savepoint (`sql::immediate`).
    async fn run<T, F>(&self, op: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "{op}: the store call panicked"
                    )))
                }),
                // Not run; the answer below says why.
                None => Err(StoreError::Unavailable(op.into())),
            };
            Box::new(move |committed: Result<(), String>| {
                let result = match committed {
                    Ok(()) => result,
                    // What it wrote, or read inside the batch, was not kept.
                    Err(why) => Err(StoreError::Unavailable(format!("{op}: {why}"))),
                };
                let _ = tx.send(result);
            })
        });
        let jobs = self
            .inner
            .jobs
            .as_ref()
            .expect("the queue lives as long as the store");
        jobs.send(job).map_err(|_| {
            StoreError::Unavailable(format!("{op}: the store's writer has stopped"))
        })?;
        let result = rx.await.map_err(|_| {
            StoreError::Unavailable(format!("{op}: the store's writer has stopped"))
        })?;
        match &result {
            // A taken key is an answer for the caller, not a fault.
            Err(e @ StoreError::Conflict(_)) => tracing::debug!(op, error = %e, "store conflict"),
            Err(e) => tracing::warn!(op, error = %e, "store call failed"),
            Ok(_) => {}
        }
        result
    }

    /// Runs a read. On a database file it goes to the reader's connection,
    /// which sees every committed write and waits for no batch or fsync: a
    /// caller that was answered for a write reads it back, since the writer
    /// answers only after its commit. In memory it runs on the writer.
    async fn run_read<T, F>(&self, op: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let Some(reads) = &self.inner.reads else {
            return self.run(op, move |conn| f(conn)).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let read: Read = Box::new(move |conn| {
            let result = catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "{op}: the store call panicked"
                )))
            });
            let _ = tx.send(result);
        });
        let stopped = || StoreError::Unavailable(format!("{op}: the store's reader has stopped"));
        reads.send(read).map_err(|_| stopped())?;
        let result = rx.await.map_err(|_| stopped())?;
        if let Err(e) = &result {
            tracing::warn!(op, error = %e, "store read failed");
        }
        result
    }

    /// Runs `f` on the connection and waits for it, from any thread (the
    /// adapter's own tests read settings and query plans this way).
    #[cfg(test)]
    fn with_connection<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn.expect("the batch began")));
            Box::new(|_| {})
        });
        let jobs = self
            .inner
            .jobs
            .as_ref()
            .expect("the queue lives as long as the store");
        jobs.send(job).expect("the writer runs");
        rx.recv().expect("the job ran")
    }

    /// Deletes every connection record (their watches go with them) and
    /// clears every worker's presence; returns how many records went. Only
    /// for a host that has just taken the database over (see
    /// `control::DataDir::forget_connections`).
    pub async fn forget_connections(&self) -> StoreResult<u64> {
        self.run("forget_connections", |conn| {
            let tx = conn
                .savepoint()
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

/// The writer thread: waits for a job, takes every other one waiting (up
/// to [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE … COMMIT`, then
/// answers them. Ends when every store handle is gone.
fn writer(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Another process (an admin command) may hold the file: BEGIN waits
        // up to the busy timeout for it.
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, jobs = batch.len(), "store batch refused");
            let why = format!("could not begin a transaction: {e}");
            for job in batch {
                job(None)(Err(why.clone()));
            }
            continue;
        }
        let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
        let mut aborted = false;
        for job in batch {
            if aborted {
                answers.push(job(None));
                continue;
            }
            answers.push(job(Some(&mut conn)));
            // A few errors (a full disk, an I/O error) make SQLite roll the
            // whole transaction back: what ran is lost, and what is left
            // must not run outside a transaction.
            aborted = conn.is_autocommit();
        }
        let committed = if aborted {
            tracing::warn!(jobs = answers.len(), "store batch rolled back by SQLite");
            Err("the write was rolled back".to_owned())
        } else {
            commit(&conn)
        };
        for answer in answers {
            answer(committed.clone());
        }
    }
}

/// Opens the reader's connection on the database file (refusing writes)
/// and starts its thread.
fn start_reader(path: &Path) -> StoreResult<(mpsc::Sender<Read>, std::thread::JoinHandle<()>)> {
    // Read-write at the file level but refusing writes: whichever of the two
    // connections closes last folds the WAL into the database file, which a
    // read-only connection could not.
    let conn = Connection::open(path)
        .map_err(|e| db_err(&format!("open {} to read", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_err("set busy timeout", e))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| db_err("make the reader read-only", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    let (reads, queue) = mpsc::channel::<Read>();
    let thread = std::thread::Builder::new()
        .name("tether-sqlite-read".into())
        .spawn(move || {
            while let Ok(read) = queue.recv() {
                read(&conn);
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("start the store's reader: {e}")))?;
    Ok((reads, thread))
}

/// Commits the writer's batch; on failure, rolls it back.
fn commit(conn: &Connection) -> Result<(), String> {
    {
        let committed = match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "store batch not committed");
                if !conn.is_autocommit() {
                    if let Err(e) = conn.execute_batch("ROLLBACK") {
                        tracing::error!(error = %e, "could not roll back a failed batch");
                    }
                }
                Err(format!("the write was not committed: {e}"))
            }
        };
        committed
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
