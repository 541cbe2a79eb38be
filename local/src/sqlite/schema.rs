//! The schema, as an append-only list of migrations. `PRAGMA user_version`
//! records how many have been applied; a released step is never edited, a
//! change is a new step at the end.

use rusqlite::{Connection, TransactionBehavior};
use tether_domain::store::{StoreError, StoreResult};

use super::db_err;

/// Each step runs once, in order. Entity tables are `STRICT` so that a value
/// of the wrong type is refused on write instead of surfacing as a corrupt
/// row on a later read.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL UNIQUE,
    admin       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE tickets (
    hash       TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE workers (
    id                 TEXT PRIMARY KEY,
    owner              TEXT REFERENCES users (id),
    status             TEXT NOT NULL
                       CHECK (status IN ('pending', 'approved', 'rejected', 'revoked')),
    credential_hash    TEXT NOT NULL UNIQUE,
    machine            TEXT NOT NULL,
    name               TEXT NOT NULL,
    workdir            TEXT NOT NULL,
    pairing_code       TEXT,
    pairing_expires_at INTEGER,
    connection         TEXT,
    last_seen          INTEGER,
    models             TEXT NOT NULL,
    default_model      TEXT,
    version            TEXT,
    created_at         INTEGER NOT NULL
) STRICT;
CREATE INDEX workers_by_owner ON workers (owner, created_at, id);
CREATE INDEX workers_by_pairing_code ON workers (pairing_code)
    WHERE pairing_code IS NOT NULL;
CREATE INDEX workers_pending ON workers (pairing_expires_at)
    WHERE status = 'pending';

CREATE TABLE connections (
    id             TEXT PRIMARY KEY,
    principal_kind TEXT NOT NULL CHECK (principal_kind IN ('user', 'worker')),
    principal_id   TEXT NOT NULL,
    owner          TEXT,
    connected_at   INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX connections_by_principal
    ON connections (principal_kind, principal_id, expires_at);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL REFERENCES users (id),
    worker           TEXT NOT NULL REFERENCES workers (id),
    model            TEXT NOT NULL,
    title            TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('starting', 'ready', 'busy', 'ended', 'failed')),
    agent_session_id TEXT,
    error            TEXT,
    message_count    INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_owner ON sessions (owner, created_at, id);
CREATE INDEX sessions_by_owner_worker ON sessions (owner, worker, created_at, id);
CREATE INDEX sessions_starting ON sessions (worker, created_at, id)
    WHERE status = 'starting';

-- Watches are the live state of a connection: they go with it.
CREATE TABLE watches (
    session    TEXT NOT NULL,
    connection TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    PRIMARY KEY (session, connection)
) STRICT, WITHOUT ROWID;
CREATE INDEX watches_by_connection ON watches (connection);

CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    session       TEXT NOT NULL REFERENCES sessions (id),
    owner         TEXT NOT NULL,
    worker        TEXT NOT NULL,
    number        INTEGER NOT NULL,
    text          TEXT NOT NULL,
    status        TEXT NOT NULL
                  CHECK (status IN ('queued', 'dispatched', 'streaming',
                                    'complete', 'failed', 'aborted')),
    chunk_count   INTEGER,
    final_text    TEXT,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (session, number)
) STRICT;
-- Only open messages are indexed: they are few, and final ones are never
-- looked up by worker.
CREATE INDEX messages_open ON messages (worker)
    WHERE status IN ('queued', 'dispatched', 'streaming');

CREATE TABLE chunks (
    message    TEXT NOT NULL REFERENCES messages (id),
    seq        INTEGER NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE prompts (
    id         TEXT PRIMARY KEY,
    session    TEXT NOT NULL REFERENCES sessions (id),
    message    TEXT NOT NULL REFERENCES messages (id),
    worker     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('permission', 'question')),
    answer     TEXT,
    delivered  INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX prompts_undelivered ON prompts (worker, created_at, id)
    WHERE answer IS NOT NULL AND delivered = 0;
"#,
    // 2: a user can be removed while their workers, sessions and tickets
    // stay (so nothing references `users` any more), and a ticket records
    // the secret hash it was issued under (a reset secret takes its tickets
    // with it). Tables are rebuilt the way SQLite changes a constraint
    // (https://sqlite.org/lang_altertable.html#otheralter), with foreign
    // keys off (see `migrate`). Outstanding tickets, a minute's worth at
    // most, are dropped: they carry no secret hash.
    r#"
DROP TABLE tickets;
CREATE TABLE tickets (
    hash        TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    user_secret TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE workers_v2 (
    id                 TEXT PRIMARY KEY,
    owner              TEXT,
    status             TEXT NOT NULL
                       CHECK (status IN ('pending', 'approved', 'rejected', 'revoked')),
    credential_hash    TEXT NOT NULL UNIQUE,
    machine            TEXT NOT NULL,
    name               TEXT NOT NULL,
    workdir            TEXT NOT NULL,
    pairing_code       TEXT,
    pairing_expires_at INTEGER,
    connection         TEXT,
    last_seen          INTEGER,
    models             TEXT NOT NULL,
    default_model      TEXT,
    version            TEXT,
    created_at         INTEGER NOT NULL
) STRICT;
INSERT INTO workers_v2 (id, owner, status, credential_hash, machine, name, workdir,
                        pairing_code, pairing_expires_at, connection, last_seen, models,
                        default_model, version, created_at)
    SELECT id, owner, status, credential_hash, machine, name, workdir,
           pairing_code, pairing_expires_at, connection, last_seen, models,
           default_model, version, created_at
    FROM workers;
DROP TABLE workers;
ALTER TABLE workers_v2 RENAME TO workers;
CREATE INDEX workers_by_owner ON workers (owner, created_at, id);
CREATE INDEX workers_by_pairing_code ON workers (pairing_code)
    WHERE pairing_code IS NOT NULL;
CREATE INDEX workers_pending ON workers (pairing_expires_at)
    WHERE status = 'pending';

CREATE TABLE sessions_v2 (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    worker           TEXT NOT NULL REFERENCES workers (id),
    model            TEXT NOT NULL,
    title            TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('starting', 'ready', 'busy', 'ended', 'failed')),
    agent_session_id TEXT,
    error            TEXT,
    message_count    INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
INSERT INTO sessions_v2 (id, owner, worker, model, title, status, agent_session_id, error,
                         message_count, created_at, updated_at)
    SELECT id, owner, worker, model, title, status, agent_session_id, error,
           message_count, created_at, updated_at
    FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_v2 RENAME TO sessions;
CREATE INDEX sessions_by_owner ON sessions (owner, created_at, id);
CREATE INDEX sessions_by_owner_worker ON sessions (owner, worker, created_at, id);
CREATE INDEX sessions_starting ON sessions (worker, created_at, id)
    WHERE status = 'starting';
"#,
    // 3: pairing is bounded. A pending worker records the address it asked
    // from (at most a few pending per address), the admins' list of pending
    // workers is paged in age order, a user's pairing attempts are counted
    // per minute, and a headless worker pairs with a one-time token (kept
    // hashed, as tickets are).
    r#"
ALTER TABLE workers ADD COLUMN source TEXT;
CREATE INDEX workers_pending_by_source ON workers (source, pairing_expires_at)
    WHERE status = 'pending';
CREATE INDEX workers_pending_by_age ON workers (created_at, id)
    WHERE status = 'pending';

CREATE TABLE pairing_tokens (
    hash         TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    owner_secret TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE rate_limits (
    key          TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#,
    // 4: the counts behind the per-user caps (live sessions, messages
    // waiting for an answer) read partial indexes of just what they count,
    // so a count costs the rows it counts, never the history (with
    // `status` in the index, it reads no table row).
    r#"
CREATE INDEX sessions_live ON sessions (owner, status)
    WHERE status IN ('starting', 'ready', 'busy');
CREATE INDEX messages_open_by_owner ON messages (owner, status)
    WHERE status IN ('queued', 'dispatched', 'streaming');
"#,
    // 5: a worker's last report of its agent (opencode installing,
    // starting, ready or down, why, and when by the worker's clock, which
    // orders reports), and where a session's title came from: its user at
    // `session_start` (kept) or its agent later. Titles stored before this
    // step were all given by users.
    r#"
ALTER TABLE workers ADD COLUMN agent_state TEXT
    CHECK (agent_state IN ('installing', 'starting', 'ready', 'down'));
ALTER TABLE workers ADD COLUMN agent_reason TEXT;
ALTER TABLE workers ADD COLUMN agent_at INTEGER;
ALTER TABLE sessions ADD COLUMN title_source TEXT
    CHECK (title_source IN ('user', 'agent'));
UPDATE sessions SET title_source = 'user' WHERE title <> '';
"#,
    // 6: a message no longer keeps its answer's text: the answer is its
    // chunks (the text ones, in seq order), which the store already has.
    // The column is in no index or constraint, so SQLite (3.35+) drops it
    // in place; text kept by earlier versions goes with it.
    r#"
ALTER TABLE messages DROP COLUMN final_text;
"#,
    // 7: the model a message was sent for, if not its session's (JSON
    // `{provider_id, model_id}`); messages stored before had none.
    r#"
ALTER TABLE messages ADD COLUMN model TEXT;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`] in one transaction, so a
/// crash mid-way leaves the previous version intact.
///
/// Foreign keys are off while the steps run (a rebuilt table is dropped
/// and its copy renamed, which enforcement would refuse or cascade), and
/// on again afterwards whatever happened; `PRAGMA foreign_keys` can only
/// change outside a transaction. Before committing, `foreign_key_check`
/// proves the steps left every reference intact.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(|e| db_err("disable foreign keys for migration", e))?;
    let result = migrate_steps(conn);
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(|e| db_err("enable foreign keys after migration", e))?;
    result
}

fn migrate_steps(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_err("begin migration", e))?;
    let current: u32 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| db_err("read schema version", e))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this build's {SCHEMA_VERSION}"
        )));
    }
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(step)
            .map_err(|e| db_err(&format!("migration {}", index + 1), e))?;
    }
    let broken: Vec<String> = tx
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut st| {
            st.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(|e| db_err("check references after migration", e))?;
    if !broken.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "migration left broken references in {}",
            broken.join(", ")
        )));
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| db_err("write schema version", e))?;
    tx.commit().map_err(|e| db_err("commit migration", e))?;
    tracing::info!(from = current, to = SCHEMA_VERSION, "migrated store schema");
    Ok(())
}
