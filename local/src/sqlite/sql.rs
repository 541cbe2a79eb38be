//! Every statement on a request path, by name, so that a test can check
//! each one's plan uses an index (statements are built once per process),
//! and the few ways the store runs one.

use std::sync::LazyLock;

use rusqlite::{Connection as SqlConn, OptionalExtension, Params, Row, Savepoint};
use tether_domain::auth::SecretHash;
use tether_domain::ids::{ConnectionId, UserId};
use tether_domain::model::Millis;
use tether_domain::store::{StoreError, StoreResult};

use super::db_err;
use super::rows::{
    to_json, CHUNK_COLS, CONNECTION_COLS, MESSAGE_COLS, PRINCIPAL_USER, PRINCIPAL_WORKER,
    PROMPT_COLS, SESSION_COLS, USER_COLS, WORKER_COLS,
};

macro_rules! query {
    ($name:ident, $($fmt:tt)*) => {
        pub(super) static $name: LazyLock<String> =
            LazyLock::new(|| format!($($fmt)*));
    };
}

query!(USER_BY_ID, "SELECT {USER_COLS} FROM users WHERE id = ?1");
query!(
    USER_BY_NAME,
    "SELECT {USER_COLS} FROM users WHERE name = ?1"
);
query!(
    USER_BY_SECRET,
    "SELECT {USER_COLS} FROM users WHERE secret_hash = ?1"
);
query!(DELETE_USER, "DELETE FROM users WHERE id = ?1");
query!(
    TAKE_TICKET,
    "DELETE FROM tickets WHERE hash = ?1 RETURNING user_id, user_secret, expires_at"
);
query!(
    WORKER_BY_ID,
    "SELECT {WORKER_COLS} FROM workers WHERE id = ?1"
);
query!(
    WORKER_BY_CREDENTIAL,
    "SELECT {WORKER_COLS} FROM workers WHERE credential_hash = ?1"
);
// Codes are random, so two live ones may collide; the newest wins.
query!(
    WORKER_BY_PAIRING_CODE,
    "SELECT {WORKER_COLS} FROM workers WHERE pairing_code = ?1 \
     ORDER BY created_at DESC, id DESC LIMIT 1"
);
query!(
    WORKERS_OF,
    "SELECT {WORKER_COLS} FROM workers WHERE owner = ?1 ORDER BY created_at, id"
);
// `(?2, ?3)` is the page's cursor; the first page passes the least
// time and an empty id.
query!(
    PENDING_WORKERS,
    "SELECT {WORKER_COLS} FROM workers \
     WHERE status = 'pending' AND (created_at, id) > (?2, ?3) AND pairing_expires_at > ?1 \
     ORDER BY created_at, id LIMIT ?4"
);
query!(
    PENDING_FROM_SOURCE,
    "SELECT COUNT(*) FROM workers \
     WHERE status = 'pending' AND source = ?1 AND pairing_expires_at > ?2"
);
query!(
    DELETE_EXPIRED_PENDING,
    "DELETE FROM workers WHERE id = ?1 AND status = 'pending' \
     AND (pairing_expires_at IS NULL OR pairing_expires_at <= ?2)"
);
query!(
    TAKE_PAIRING_TOKEN,
    "DELETE FROM pairing_tokens WHERE hash = ?1 RETURNING owner, owner_secret, expires_at"
);
// One statement, so of concurrent attempts at most `limit` (?4) per
// window are counted: a newer window starts the count again; an
// attempt of the stored window, or of an older one, adds one while
// under the limit; otherwise nothing changes (0 rows).
query!(
    COUNT_ATTEMPT,
    "INSERT INTO rate_limits (key, window_start, count, expires_at) VALUES (?1, ?2, 1, ?3) \
     ON CONFLICT (key) DO UPDATE SET \
     count = CASE WHEN excluded.window_start > rate_limits.window_start THEN 1 \
             ELSE rate_limits.count + 1 END, \
     window_start = MAX(rate_limits.window_start, excluded.window_start), \
     expires_at = MAX(rate_limits.expires_at, excluded.expires_at) \
     WHERE excluded.window_start > rate_limits.window_start OR rate_limits.count < ?4"
);
query!(
    TRANSITION_WORKER,
    "UPDATE workers SET status = ?3, pairing_code = NULL, pairing_expires_at = NULL, \
     owner = COALESCE(?4, owner), name = COALESCE(?5, name) \
     WHERE id = ?1 AND status = ?2 RETURNING {WORKER_COLS}"
);
query!(
    SET_WORKER_CONNECTION,
    "UPDATE workers SET connection = ?2, last_seen = ?3 WHERE id = ?1"
);
query!(
    CLEAR_WORKER_CONNECTION,
    "UPDATE workers SET connection = NULL WHERE id = ?1 AND connection = ?2"
);
query!(
    TOUCH_WORKER,
    "UPDATE workers SET last_seen = ?2 WHERE id = ?1"
);
query!(
    SET_WORKER_PROFILE,
    "UPDATE workers SET machine = COALESCE(?2, machine), name = COALESCE(?3, name), \
     workdir = COALESCE(?4, workdir), version = COALESCE(?5, version), \
     models = COALESCE(?6, models), default_model = COALESCE(?7, default_model) \
     WHERE id = ?1"
);
// Only a newer report replaces the stored one (?4 is its time).
query!(
    SET_AGENT_STATE,
    "UPDATE workers SET agent_state = ?2, agent_reason = ?3, agent_at = ?4 \
     WHERE id = ?1 AND (agent_at IS NULL OR agent_at < ?4) RETURNING {WORKER_COLS}"
);
query!(
    PUT_CONNECTION,
    "INSERT INTO connections ({CONNECTION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (id) DO UPDATE SET principal_kind = excluded.principal_kind, \
     principal_id = excluded.principal_id, owner = excluded.owner, \
     connected_at = excluded.connected_at, last_seen = excluded.last_seen, \
     expires_at = excluded.expires_at"
);
query!(
    CONNECTION_BY_ID,
    "SELECT {CONNECTION_COLS} FROM connections WHERE id = ?1"
);
query!(
    DELETE_CONNECTION,
    "DELETE FROM connections WHERE id = ?1 RETURNING {CONNECTION_COLS}"
);
query!(
    TOUCH_CONNECTION,
    "UPDATE connections SET last_seen = ?2 WHERE id = ?1"
);
query!(
    USER_CONNECTIONS,
    "SELECT id FROM connections \
     WHERE principal_kind = '{PRINCIPAL_USER}' AND principal_id = ?1 AND expires_at > ?2 \
     ORDER BY connected_at, id"
);
query!(
    SET_CONNECTIONS_OWNER,
    "UPDATE connections SET owner = ?2 \
     WHERE principal_kind = '{PRINCIPAL_WORKER}' AND principal_id = ?1"
);
query!(
    WORKER_CONNECTIONS,
    "SELECT id FROM connections \
     WHERE principal_kind = '{PRINCIPAL_WORKER}' AND principal_id = ?1 ORDER BY connected_at, id"
);
query!(
    COUNT_CONNECTIONS,
    "SELECT COUNT(*) FROM connections \
     WHERE principal_kind = ?1 AND principal_id = ?2 AND expires_at > ?3"
);
// The status lists repeat the conditions of the partial indexes
// `sessions_live` and `messages_open_by_owner`, so that the planner
// counts from them.
query!(
    COUNT_LIVE_SESSIONS,
    "SELECT COUNT(*) FROM sessions \
     WHERE owner = ?1 AND status IN ('starting', 'ready', 'busy')"
);
query!(
    COUNT_OPEN_MESSAGES,
    "SELECT COUNT(*) FROM messages \
     WHERE owner = ?1 AND status IN ('queued', 'dispatched', 'streaming')"
);
query!(
    CONNECTION_EXISTS,
    "SELECT EXISTS (SELECT 1 FROM connections WHERE id = ?1)"
);
query!(
    WATCH,
    "INSERT INTO watches (session, connection) VALUES (?1, ?2) \
     ON CONFLICT (session, connection) DO NOTHING"
);
query!(
    UNWATCH,
    "DELETE FROM watches WHERE session = ?1 AND connection = ?2"
);
query!(
    WATCHERS,
    "SELECT connection FROM watches WHERE session = ?1 ORDER BY connection"
);
query!(
    SESSION_BY_ID,
    "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
);
query!(
    INSERT_SESSION,
    "INSERT INTO sessions ({SESSION_COLS}) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
);
query!(
    SESSIONS_OF,
    "SELECT {SESSION_COLS} FROM sessions WHERE owner = ?1 AND created_at < ?2 \
     ORDER BY created_at DESC, id DESC LIMIT ?3"
);
query!(
    SESSIONS_OF_WORKER,
    "SELECT {SESSION_COLS} FROM sessions \
     WHERE owner = ?1 AND worker = ?2 AND created_at < ?3 \
     ORDER BY created_at DESC, id DESC LIMIT ?4"
);
query!(
    STARTING_SESSIONS,
    "SELECT {SESSION_COLS} FROM sessions WHERE worker = ?1 AND status = 'starting' \
     ORDER BY created_at, id"
);
// `from` is a JSON array of statuses, so one cached statement serves
// every from-set.
query!(
    TRANSITION_SESSION,
    "UPDATE sessions SET status = ?3, \
     agent_session_id = COALESCE(?4, agent_session_id), error = COALESCE(?5, error), \
     updated_at = ?6 \
     WHERE id = ?1 AND status IN (SELECT value FROM json_each(?2)) \
     RETURNING {SESSION_COLS}"
);
query!(
    SET_AGENT_TITLE,
    "UPDATE sessions SET title = ?2, title_source = 'agent', updated_at = ?3 \
     WHERE id = ?1 AND (title_source IS NULL OR title_source = 'agent') \
     RETURNING {SESSION_COLS}"
);
query!(
    BUMP_MESSAGE_COUNT,
    "UPDATE sessions SET message_count = message_count + 1 WHERE id = ?1 \
     RETURNING message_count - 1"
);
query!(
    MESSAGE_BY_ID,
    "SELECT {MESSAGE_COLS} FROM messages WHERE id = ?1"
);
query!(
    INSERT_MESSAGE,
    "INSERT INTO messages ({MESSAGE_COLS}) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
);
query!(
    MESSAGES_OF,
    "SELECT {MESSAGE_COLS} FROM messages WHERE session = ?1 AND number >= ?2 \
     ORDER BY number LIMIT ?3"
);
// The status list repeats the `messages_open` index's condition so the
// planner can use that partial index.
query!(
    OPEN_MESSAGES,
    "SELECT {cols} FROM messages AS m JOIN sessions AS s ON s.id = m.session \
     WHERE m.worker = ?1 AND m.status IN ('queued', 'dispatched', 'streaming') \
     ORDER BY s.created_at, s.id, m.number",
    cols = MESSAGE_COLS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
);
query!(
    TRANSITION_MESSAGE,
    "UPDATE messages SET status = ?3, chunk_count = COALESCE(?4, chunk_count), \
     error = COALESCE(?5, error), updated_at = ?6 \
     WHERE id = ?1 AND status IN (SELECT value FROM json_each(?2)) \
     RETURNING {MESSAGE_COLS}"
);
query!(
    INSERT_CHUNK,
    "INSERT INTO chunks ({CHUNK_COLS}) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (message, seq) DO NOTHING"
);
query!(
    CHUNK_BY_KEY,
    "SELECT {CHUNK_COLS} FROM chunks WHERE message = ?1 AND seq = ?2"
);
query!(
    CHUNKS,
    "SELECT {CHUNK_COLS} FROM chunks WHERE message = ?1 AND seq >= ?2 \
     ORDER BY seq LIMIT ?3"
);
query!(
    INSERT_PROMPT,
    "INSERT INTO prompts ({PROMPT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (id) DO NOTHING"
);
query!(
    PROMPT_BY_ID,
    "SELECT {PROMPT_COLS} FROM prompts WHERE id = ?1"
);
query!(
    ANSWER_PROMPT,
    "UPDATE prompts SET answer = ?2 WHERE id = ?1 AND answer IS NULL \
     RETURNING {PROMPT_COLS}"
);
query!(
    SET_PROMPT_DELIVERED,
    "UPDATE prompts SET delivered = 1 WHERE id = ?1"
);
query!(
    UNDELIVERED_PROMPTS,
    "SELECT {PROMPT_COLS} FROM prompts \
     WHERE worker = ?1 AND answer IS NOT NULL AND delivered = 0 \
     ORDER BY created_at, id"
);

/// Every statement above, for the query-plan test.
#[cfg(test)]
pub(super) fn statements() -> Vec<(&'static str, &'static str)> {
    macro_rules! list {
        ($($name:ident),* $(,)?) => {
            vec![$((stringify!($name), $name.as_str())),*]
        };
    }
    list![
        USER_BY_ID,
        USER_BY_NAME,
        USER_BY_SECRET,
        DELETE_USER,
        TAKE_TICKET,
        WORKER_BY_ID,
        WORKER_BY_CREDENTIAL,
        WORKER_BY_PAIRING_CODE,
        WORKERS_OF,
        PENDING_WORKERS,
        PENDING_FROM_SOURCE,
        DELETE_EXPIRED_PENDING,
        TAKE_PAIRING_TOKEN,
        COUNT_ATTEMPT,
        TRANSITION_WORKER,
        SET_WORKER_CONNECTION,
        CLEAR_WORKER_CONNECTION,
        TOUCH_WORKER,
        SET_WORKER_PROFILE,
        SET_AGENT_STATE,
        PUT_CONNECTION,
        CONNECTION_BY_ID,
        DELETE_CONNECTION,
        TOUCH_CONNECTION,
        USER_CONNECTIONS,
        SET_CONNECTIONS_OWNER,
        WORKER_CONNECTIONS,
        COUNT_CONNECTIONS,
        COUNT_LIVE_SESSIONS,
        COUNT_OPEN_MESSAGES,
        CONNECTION_EXISTS,
        WATCH,
        UNWATCH,
        WATCHERS,
        SESSION_BY_ID,
        INSERT_SESSION,
        SESSIONS_OF,
        SESSIONS_OF_WORKER,
        STARTING_SESSIONS,
        TRANSITION_SESSION,
        SET_AGENT_TITLE,
        BUMP_MESSAGE_COUNT,
        MESSAGE_BY_ID,
        INSERT_MESSAGE,
        MESSAGES_OF,
        OPEN_MESSAGES,
        TRANSITION_MESSAGE,
        INSERT_CHUNK,
        CHUNK_BY_KEY,
        CHUNKS,
        INSERT_PROMPT,
        PROMPT_BY_ID,
        ANSWER_PROMPT,
        SET_PROMPT_DELIVERED,
        UNDELIVERED_PROMPTS,
    ]
}

pub(super) type RowFn<T> = fn(&Row<'_>) -> rusqlite::Result<T>;

pub(super) fn one<T, P: Params>(
    conn: &SqlConn,
    op: &str,
    sql: &str,
    p: P,
    f: RowFn<T>,
) -> StoreResult<Option<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.query_row(p, f).optional())
        .map_err(|e| db_err(op, e))
}

pub(super) fn all<T, P: Params>(
    conn: &SqlConn,
    op: &str,
    sql: &str,
    p: P,
    f: RowFn<T>,
) -> StoreResult<Vec<T>> {
    let run = || -> rusqlite::Result<Vec<T>> {
        let mut st = conn.prepare_cached(sql)?;
        let rows = st.query_map(p, f)?;
        rows.collect()
    };
    run().map_err(|e| db_err(op, e))
}

/// The value of a `SELECT COUNT(*)`.
pub(super) fn count<P: Params>(conn: &SqlConn, op: &str, sql: &str, p: P) -> StoreResult<u32> {
    let n = one(conn, op, sql, p, |r| r.get::<_, i64>(0))?.unwrap_or(0);
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Runs a write; returns how many rows it changed.
pub(super) fn exec<P: Params>(conn: &SqlConn, op: &str, sql: &str, p: P) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(p))
        .map_err(|e| db_err(op, e))
}

/// Makes what follows atomic: a savepoint inside the writer's batch
/// transaction (see `SqliteStore::run`), released by [`commit`] and rolled
/// back if dropped, as when the call returns an error.
pub(super) fn immediate<'c>(conn: &'c mut SqlConn, op: &str) -> StoreResult<Savepoint<'c>> {
    conn.savepoint().map_err(|e| db_err(op, e))
}

pub(super) fn commit(tx: Savepoint<'_>, op: &str) -> StoreResult<()> {
    tx.commit().map_err(|e| db_err(op, e))
}

/// Consumes the row of a secret's hash (a ticket, a pairing token): one
/// `DELETE … RETURNING` of its user, the user's secret hash and its expiry,
/// so of two concurrent takes only one gets the row back. `Some` if it had
/// not expired at `now`; `what` names the user in an error.
pub(super) fn take_unexpired(
    conn: &SqlConn,
    op: &str,
    sql: &str,
    hash: &SecretHash,
    now: Millis,
    what: &str,
) -> StoreResult<Option<(UserId, SecretHash, Millis)>> {
    let taken: Option<(String, String, Millis)> = one(conn, op, sql, [hash.as_str()], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    match taken {
        Some((user, secret, expires_at)) if expires_at > now => {
            let user =
                UserId::parse(user).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
            Ok(Some((user, SecretHash::from_stored(secret), expires_at)))
        }
        _ => Ok(None),
    }
}

pub(super) fn connection_id(row: &Row<'_>) -> rusqlite::Result<String> {
    row.get(0)
}

pub(super) fn parse_connection_ids(ids: Vec<String>) -> StoreResult<Vec<ConnectionId>> {
    ids.into_iter()
        .map(|s| {
            ConnectionId::parse(s).map_err(|e| StoreError::Corrupt(format!("connection id: {e}")))
        })
        .collect()
}

/// A from-set as the JSON array the transition statements read.
pub(super) fn status_set<T: Copy>(
    from: &[T],
    as_str: fn(T) -> &'static str,
) -> StoreResult<String> {
    to_json(
        "status set",
        &from.iter().map(|s| as_str(*s)).collect::<Vec<_>>(),
    )
}

pub(super) fn opt_json<T: serde::Serialize>(
    what: &str,
    value: Option<&T>,
) -> StoreResult<Option<String>> {
    value.map(|v| to_json(what, v)).transpose()
}
