//! `impl Store for SqliteStore`: one statement (or one short transaction)
//! per method. Arguments are copied into owned values first because each
//! call runs on the blocking pool.

use rusqlite::{params, Connection as SqlConn, OptionalExtension, Params, Row, Savepoint};
use tether_domain::auth::SecretHash;
use tether_domain::ids::{ConnectionId, MessageId, PromptId, SessionId, UserId, WorkerId};
use tether_domain::model::{
    Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Prompt, Session,
    SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
use tether_domain::protocol::{AgentReport, PromptAnswer};
use tether_domain::store::{
    Capped, Inserted, MessagePatch, SessionPatch, Store, StoreError, StoreResult, WorkerProfile,
};

use super::rows::{
    chunk_row, connection_row, message_row, principal_cols, prompt_row, session_row, to_json,
    user_row, worker_row, USER_COLS, WORKER_COLS,
};
use super::{db_err, SqliteStore};

/// Every query on a request path, by name, so that a test can check each
/// one's plan uses an index. Statements are built once per process.
pub(super) mod sql {
    use std::sync::LazyLock;

    use super::super::rows::{
        CHUNK_COLS, CONNECTION_COLS, MESSAGE_COLS, PRINCIPAL_USER, PRINCIPAL_WORKER, PROMPT_COLS,
        SESSION_COLS, USER_COLS, WORKER_COLS,
    };

    macro_rules! query {
        ($name:ident, $($fmt:tt)*) => {
            pub(in super::super) static $name: LazyLock<String> =
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
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
    pub(in super::super) fn all() -> Vec<(&'static str, &'static str)> {
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
}

/// `before = None` pages from the newest session.
const NO_UPPER_BOUND: Millis = Millis::MAX;

type RowFn<T> = fn(&Row<'_>) -> rusqlite::Result<T>;

fn one<T, P: Params>(
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

fn all<T, P: Params>(
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
fn count<P: Params>(conn: &SqlConn, op: &str, sql: &str, p: P) -> StoreResult<u32> {
    let n = one(conn, op, sql, p, |r| r.get::<_, i64>(0))?.unwrap_or(0);
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Runs a write; returns how many rows it changed.
fn exec<P: Params>(conn: &SqlConn, op: &str, sql: &str, p: P) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(p))
        .map_err(|e| db_err(op, e))
}

/// Makes what follows atomic: a savepoint inside the writer's batch
/// transaction (see `SqliteStore::run`), released by [`commit`] and rolled
/// back if dropped, as when the call returns an error.
fn immediate<'c>(conn: &'c mut SqlConn, op: &str) -> StoreResult<Savepoint<'c>> {
    conn.savepoint().map_err(|e| db_err(op, e))
}

fn commit(tx: Savepoint<'_>, op: &str) -> StoreResult<()> {
    tx.commit().map_err(|e| db_err(op, e))
}

/// Stores a chunk once per (message, seq); a second put finds the first.
fn put_chunk(conn: &mut SqlConn, c: Chunk) -> StoreResult<Inserted<Chunk>> {
    const OP: &str = "insert_chunk";
    let body = to_json("chunk body", &c.body)?;
    let tx = immediate(conn, OP)?;
    let p = params![c.message.as_str(), c.seq, body, c.created_at];
    if exec(&tx, OP, &sql::INSERT_CHUNK, p)? == 1 {
        commit(tx, OP)?;
        return Ok(Inserted::New(c));
    }
    let key = params![c.message.as_str(), c.seq];
    match one(&tx, OP, &sql::CHUNK_BY_KEY, key, chunk_row)? {
        Some(stored) => Ok(Inserted::Existing(stored)),
        None => Err(StoreError::Unavailable(format!(
            "{OP}: chunk {} of {} was neither inserted nor found",
            c.seq, c.message
        ))),
    }
}

fn connection_id(row: &Row<'_>) -> rusqlite::Result<String> {
    row.get(0)
}

fn parse_connection_ids(ids: Vec<String>) -> StoreResult<Vec<ConnectionId>> {
    ids.into_iter()
        .map(|s| {
            ConnectionId::parse(s).map_err(|e| StoreError::Corrupt(format!("connection id: {e}")))
        })
        .collect()
}

/// A from-set as the JSON array the transition statements read.
fn status_set<T: Copy>(from: &[T], as_str: fn(T) -> &'static str) -> StoreResult<String> {
    to_json(
        "status set",
        &from.iter().map(|s| as_str(*s)).collect::<Vec<_>>(),
    )
}

fn opt_json<T: serde::Serialize>(what: &str, value: Option<&T>) -> StoreResult<Option<String>> {
    value.map(|v| to_json(what, v)).transpose()
}

/// Inserts a worker row; a taken credential hash is a `Conflict`.
fn insert_worker(conn: &SqlConn, w: &Worker) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO workers ({WORKER_COLS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
         ?17, ?18, ?19)"
    );
    let agent = w.agent.as_ref();
    let p = params![
        w.id.as_str(),
        w.owner.as_ref().map(UserId::as_str),
        w.status.as_str(),
        w.credential_hash.as_str(),
        w.machine,
        w.name,
        w.workdir,
        w.pairing_code,
        w.pairing_expires_at,
        w.connection.as_ref().map(ConnectionId::as_str),
        w.last_seen,
        to_json("models", &w.models)?,
        opt_json("default model", w.default_model.as_ref())?,
        w.version,
        w.created_at,
        w.source,
        agent.map(|a| a.state.as_str()),
        agent.and_then(|a| a.reason.as_deref()),
        agent.map(|a| a.at),
    ];
    exec(conn, "create_worker", &sql, p).map(drop)
}

impl Store for SqliteStore {
    // ---- users ----

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let u = user.clone();
        self.run("create_user", move |conn| {
            let sql = format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)");
            let p = params![
                u.id.as_str(),
                u.name,
                u.secret_hash.as_str(),
                u.admin,
                u.created_at
            ];
            exec(conn, "create_user", &sql, p).map(drop)
        })
        .await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let id = id.clone();
        self.run_read("user", move |conn| {
            one(conn, "user", &sql::USER_BY_ID, [id.as_str()], user_row)
        })
        .await
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        let name = name.to_owned();
        self.run_read("user_by_name", move |conn| {
            one(conn, "user_by_name", &sql::USER_BY_NAME, [name], user_row)
        })
        .await
    }

    async fn user_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<User>> {
        let hash = hash.clone();
        self.run_read("user_by_secret", move |conn| {
            one(
                conn,
                "user_by_secret",
                &sql::USER_BY_SECRET,
                [hash.as_str()],
                user_row,
            )
        })
        .await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.run_read("users", move |conn| {
            let sql = format!("SELECT {USER_COLS} FROM users ORDER BY name");
            all(conn, "users", &sql, [], user_row)
        })
        .await
    }

    async fn set_user_secret(&self, id: &UserId, hash: &SecretHash) -> StoreResult<bool> {
        let (id, hash) = (id.clone(), hash.clone());
        self.run("set_user_secret", move |conn| {
            let sql = "UPDATE users SET secret_hash = ?2 WHERE id = ?1";
            Ok(exec(conn, "set_user_secret", sql, [id.as_str(), hash.as_str()])? == 1)
        })
        .await
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        let id = id.clone();
        self.run("delete_user", move |conn| {
            Ok(exec(conn, "delete_user", &sql::DELETE_USER, [id.as_str()])? == 1)
        })
        .await
    }

    // ---- tickets ----

    async fn put_ticket(&self, hash: &SecretHash, ticket: &Ticket) -> StoreResult<()> {
        let (hash, t) = (hash.clone(), ticket.clone());
        self.run("put_ticket", move |conn| {
            let sql = "INSERT INTO tickets (hash, user_id, user_secret, expires_at) \
                       VALUES (?1, ?2, ?3, ?4) \
                       ON CONFLICT (hash) DO UPDATE SET user_id = excluded.user_id, \
                       user_secret = excluded.user_secret, expires_at = excluded.expires_at";
            let p = params![
                hash.as_str(),
                t.user.as_str(),
                t.user_secret.as_str(),
                t.expires_at
            ];
            exec(conn, "put_ticket", sql, p).map(drop)
        })
        .await
    }

    async fn take_ticket(&self, hash: &SecretHash, now: Millis) -> StoreResult<Option<Ticket>> {
        let hash = hash.clone();
        self.run("take_ticket", move |conn| {
            // One DELETE ... RETURNING: of two concurrent takes, only one
            // gets the row back.
            let taken: Option<(String, String, Millis)> = one(
                conn,
                "take_ticket",
                &sql::TAKE_TICKET,
                [hash.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            match taken {
                Some((user, user_secret, expires_at)) if expires_at > now => {
                    let user = UserId::parse(user)
                        .map_err(|e| StoreError::Corrupt(format!("ticket user: {e}")))?;
                    Ok(Some(Ticket {
                        user,
                        user_secret: SecretHash::from_stored(user_secret),
                        expires_at,
                    }))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    // ---- workers ----

    async fn put_pairing_token(&self, hash: &SecretHash, token: &PairingToken) -> StoreResult<()> {
        let (hash, t) = (hash.clone(), token.clone());
        self.run("put_pairing_token", move |conn| {
            let sql = "INSERT INTO pairing_tokens (hash, owner, owner_secret, expires_at) \
                       VALUES (?1, ?2, ?3, ?4) \
                       ON CONFLICT (hash) DO UPDATE SET owner = excluded.owner, \
                       owner_secret = excluded.owner_secret, expires_at = excluded.expires_at";
            let p = params![
                hash.as_str(),
                t.owner.as_str(),
                t.owner_secret.as_str(),
                t.expires_at
            ];
            exec(conn, "put_pairing_token", sql, p).map(drop)
        })
        .await
    }

    async fn take_pairing_token(
        &self,
        hash: &SecretHash,
        now: Millis,
    ) -> StoreResult<Option<PairingToken>> {
        let hash = hash.clone();
        self.run("take_pairing_token", move |conn| {
            // One DELETE ... RETURNING, as `take_ticket`.
            let taken: Option<(String, String, Millis)> = one(
                conn,
                "take_pairing_token",
                &sql::TAKE_PAIRING_TOKEN,
                [hash.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            match taken {
                Some((owner, owner_secret, expires_at)) if expires_at > now => {
                    let owner = UserId::parse(owner)
                        .map_err(|e| StoreError::Corrupt(format!("pairing token owner: {e}")))?;
                    Ok(Some(PairingToken {
                        owner,
                        owner_secret: SecretHash::from_stored(owner_secret),
                        expires_at,
                    }))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    async fn count_attempt(
        &self,
        key: &str,
        window_start: Millis,
        window_end: Millis,
        limit: u32,
    ) -> StoreResult<bool> {
        let key = key.to_owned();
        self.run("count_attempt", move |conn| {
            let p = params![key, window_start, window_end, limit];
            Ok(exec(conn, "count_attempt", &sql::COUNT_ATTEMPT, p)? == 1)
        })
        .await
    }

    // ---- workers ----

    async fn create_worker(&self, worker: &Worker) -> StoreResult<()> {
        let w = worker.clone();
        self.run("create_worker", move |conn| insert_worker(conn, &w))
            .await
    }

    async fn create_pending_worker(
        &self,
        worker: &Worker,
        max_per_source: u32,
        now: Millis,
    ) -> StoreResult<bool> {
        let w = worker.clone();
        self.run("create_pending_worker", move |conn| {
            // Count and insert in one transaction: the connection's single
            // writer makes the cap hold against concurrent pairings.
            let tx = immediate(conn, "create_pending_worker")?;
            if let Some(source) = &w.source {
                let pending: u32 = one(
                    &tx,
                    "create_pending_worker",
                    &sql::PENDING_FROM_SOURCE,
                    params![source, now],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
                if pending >= max_per_source {
                    return Ok(false);
                }
            }
            insert_worker(&tx, &w)?;
            commit(tx, "create_pending_worker")?;
            Ok(true)
        })
        .await
    }

    async fn delete_expired_pending(&self, id: &WorkerId, now: Millis) -> StoreResult<bool> {
        let id = id.clone();
        self.run("delete_expired_pending", move |conn| {
            let p = params![id.as_str(), now];
            Ok(exec(
                conn,
                "delete_expired_pending",
                &sql::DELETE_EXPIRED_PENDING,
                p,
            )? == 1)
        })
        .await
    }

    async fn worker(&self, id: &WorkerId) -> StoreResult<Option<Worker>> {
        let id = id.clone();
        self.run_read("worker", move |conn| {
            one(
                conn,
                "worker",
                &sql::WORKER_BY_ID,
                [id.as_str()],
                worker_row,
            )
        })
        .await
    }

    async fn worker_by_credential(&self, hash: &SecretHash) -> StoreResult<Option<Worker>> {
        let hash = hash.clone();
        self.run_read("worker_by_credential", move |conn| {
            let sql = &sql::WORKER_BY_CREDENTIAL;
            one(
                conn,
                "worker_by_credential",
                sql,
                [hash.as_str()],
                worker_row,
            )
        })
        .await
    }

    async fn worker_by_pairing_code(&self, code: &str) -> StoreResult<Option<Worker>> {
        let code = code.to_owned();
        self.run_read("worker_by_pairing_code", move |conn| {
            let sql = &sql::WORKER_BY_PAIRING_CODE;
            one(conn, "worker_by_pairing_code", sql, [code], worker_row)
        })
        .await
    }

    async fn workers_of(&self, owner: &UserId) -> StoreResult<Vec<Worker>> {
        let owner = owner.clone();
        self.run_read("workers_of", move |conn| {
            all(
                conn,
                "workers_of",
                &sql::WORKERS_OF,
                [owner.as_str()],
                worker_row,
            )
        })
        .await
    }

    async fn pending_workers(
        &self,
        now: Millis,
        after: Option<(Millis, &WorkerId)>,
        limit: u32,
    ) -> StoreResult<Vec<Worker>> {
        let (after_time, after_id) = match after {
            Some((t, id)) => (t, id.as_str().to_owned()),
            None => (Millis::MIN, String::new()),
        };
        self.run_read("pending_workers", move |conn| {
            let p = params![now, after_time, after_id, limit];
            all(
                conn,
                "pending_workers",
                &sql::PENDING_WORKERS,
                p,
                worker_row,
            )
        })
        .await
    }

    async fn transition_worker(
        &self,
        id: &WorkerId,
        from: WorkerStatus,
        to: WorkerStatus,
        owner: Option<&UserId>,
        name: Option<&str>,
    ) -> StoreResult<Option<Worker>> {
        let id = id.clone();
        let owner = owner.cloned();
        let name = name.map(str::to_owned);
        self.run("transition_worker", move |conn| {
            let p = params![
                id.as_str(),
                from.as_str(),
                to.as_str(),
                owner.as_ref().map(UserId::as_str),
                name
            ];
            one(
                conn,
                "transition_worker",
                &sql::TRANSITION_WORKER,
                p,
                worker_row,
            )
        })
        .await
    }

    async fn set_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
        now: Millis,
    ) -> StoreResult<()> {
        let (id, connection) = (id.clone(), connection.clone());
        self.run("set_worker_connection", move |conn| {
            let p = params![id.as_str(), connection.as_str(), now];
            exec(
                conn,
                "set_worker_connection",
                &sql::SET_WORKER_CONNECTION,
                p,
            )
            .map(drop)
        })
        .await
    }

    async fn clear_worker_connection(
        &self,
        id: &WorkerId,
        connection: &ConnectionId,
    ) -> StoreResult<bool> {
        let (id, connection) = (id.clone(), connection.clone());
        self.run("clear_worker_connection", move |conn| {
            let p = [id.as_str(), connection.as_str()];
            Ok(exec(
                conn,
                "clear_worker_connection",
                &sql::CLEAR_WORKER_CONNECTION,
                p,
            )? == 1)
        })
        .await
    }

    async fn touch_worker(&self, id: &WorkerId, now: Millis) -> StoreResult<()> {
        let id = id.clone();
        self.run("touch_worker", move |conn| {
            exec(
                conn,
                "touch_worker",
                &sql::TOUCH_WORKER,
                params![id.as_str(), now],
            )
            .map(drop)
        })
        .await
    }

    async fn set_worker_profile(&self, id: &WorkerId, profile: &WorkerProfile) -> StoreResult<()> {
        let id = id.clone();
        let w = profile.clone();
        self.run("set_worker_profile", move |conn| {
            // An empty list means the hello named no models, not that the
            // worker has none: keep what is stored.
            let models = (!w.models.is_empty()).then_some(&w.models);
            let p = params![
                id.as_str(),
                w.machine,
                w.name,
                w.workdir,
                w.version,
                opt_json("models", models)?,
                opt_json("default model", w.default_model.as_ref())?
            ];
            exec(conn, "set_worker_profile", &sql::SET_WORKER_PROFILE, p).map(drop)
        })
        .await
    }

    async fn set_agent_state(&self, id: &WorkerId, report: &AgentReport) -> StoreResult<Option<Worker>> {
        let id = id.clone();
        let r = report.clone();
        self.run("set_agent_state", move |conn| {
            let p = params![id.as_str(), r.state.as_str(), r.reason, r.at];
            one(conn, "set_agent_state", &sql::SET_AGENT_STATE, p, worker_row)
        })
        .await
    }

    // ---- connections ----

    async fn put_connection(&self, connection: &Connection) -> StoreResult<()> {
        let c = connection.clone();
        self.run("put_connection", move |conn| {
            let (kind, principal) = principal_cols(&c.principal);
            let p = params![
                c.id.as_str(),
                kind,
                principal,
                c.owner.as_ref().map(UserId::as_str),
                c.connected_at,
                c.last_seen,
                c.expires_at
            ];
            exec(conn, "put_connection", &sql::PUT_CONNECTION, p).map(drop)
        })
        .await
    }

    async fn connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        let id = id.clone();
        self.run_read("connection", move |conn| {
            one(
                conn,
                "connection",
                &sql::CONNECTION_BY_ID,
                [id.as_str()],
                connection_row,
            )
        })
        .await
    }

    async fn connection_and_worker(&self, id: &ConnectionId) -> StoreResult<Option<(Connection, Option<Worker>)>> {
        let id = id.clone();
        // One trip to the reader for both.
        self.run_read("connection_and_worker", move |conn| {
            let Some(c) = one(conn, "connection", &sql::CONNECTION_BY_ID, [id.as_str()], connection_row)? else {
                return Ok(None);
            };
            let worker = match &c.principal {
                tether_domain::model::Principal::Worker(w) => one(conn, "worker", &sql::WORKER_BY_ID, [w.as_str()], worker_row)?,
                tether_domain::model::Principal::User(_) => None,
            };
            Ok(Some((c, worker)))
        })
        .await
    }

    async fn delete_connection(&self, id: &ConnectionId) -> StoreResult<Option<Connection>> {
        let id = id.clone();
        // The watches go with it by the foreign key's cascade, in the same
        // statement.
        self.run("delete_connection", move |conn| {
            let sql = &sql::DELETE_CONNECTION;
            one(
                conn,
                "delete_connection",
                sql,
                [id.as_str()],
                connection_row,
            )
        })
        .await
    }

    async fn purge_expired(&self, now: Millis) -> StoreResult<u64> {
        self.run("purge_expired", move |conn| {
            let tx = immediate(conn, "purge_expired")?;
            let tickets = tx
                .execute("DELETE FROM tickets WHERE expires_at <= ?1", [now])
                .map_err(|e| db_err("purge_expired", e))?;
            let connections = tx
                .execute("DELETE FROM connections WHERE expires_at <= ?1", [now])
                .map_err(|e| db_err("purge_expired", e))?;
            let mut pairing = 0;
            for sql in [
                "DELETE FROM pairing_tokens WHERE expires_at <= ?1",
                "DELETE FROM rate_limits WHERE expires_at <= ?1",
                // A pending worker's code expired: it is gone for good (the
                // same credential pairs afresh). It has no sessions.
                "DELETE FROM workers WHERE status = 'pending' \
                 AND (pairing_expires_at IS NULL OR pairing_expires_at <= ?1)",
            ] {
                pairing += tx
                    .execute(sql, [now])
                    .map_err(|e| db_err("purge_expired", e))?;
            }
            tx.execute(
                "UPDATE workers SET connection = NULL WHERE connection IS NOT NULL \
                 AND connection NOT IN (SELECT id FROM connections)",
                [],
            )
            .map_err(|e| db_err("purge_expired", e))?;
            tx.commit().map_err(|e| db_err("purge_expired", e))?;
            Ok((tickets + connections + pairing) as u64)
        })
        .await
    }

    async fn touch_connection(&self, id: &ConnectionId, now: Millis) -> StoreResult<()> {
        let id = id.clone();
        self.run("touch_connection", move |conn| {
            let p = params![id.as_str(), now];
            exec(conn, "touch_connection", &sql::TOUCH_CONNECTION, p).map(drop)
        })
        .await
    }

    async fn user_connections(&self, user: &UserId, now: Millis) -> StoreResult<Vec<ConnectionId>> {
        let user = user.clone();
        self.run_read("user_connections", move |conn| {
            let p = params![user.as_str(), now];
            parse_connection_ids(all(
                conn,
                "user_connections",
                &sql::USER_CONNECTIONS,
                p,
                connection_id,
            )?)
        })
        .await
    }

    async fn set_connections_owner(&self, worker: &WorkerId, owner: &UserId) -> StoreResult<()> {
        let (worker, owner) = (worker.clone(), owner.clone());
        self.run("set_connections_owner", move |conn| {
            let p = [worker.as_str(), owner.as_str()];
            exec(
                conn,
                "set_connections_owner",
                &sql::SET_CONNECTIONS_OWNER,
                p,
            )
            .map(drop)
        })
        .await
    }

    async fn worker_connections(&self, worker: &WorkerId) -> StoreResult<Vec<ConnectionId>> {
        let worker = worker.clone();
        self.run_read("worker_connections", move |conn| {
            parse_connection_ids(all(
                conn,
                "worker_connections",
                &sql::WORKER_CONNECTIONS,
                [worker.as_str()],
                connection_id,
            )?)
        })
        .await
    }

    async fn connection_count(
        &self,
        principal: &tether_domain::model::Principal,
        now: Millis,
    ) -> StoreResult<u32> {
        let (kind, id) = principal_cols(principal);
        self.run("connection_count", move |conn| {
            let p = params![kind, id, now];
            count(conn, "connection_count", &sql::COUNT_CONNECTIONS, p)
        })
        .await
    }

    async fn watch(&self, session: &SessionId, connection: &ConnectionId) -> StoreResult<bool> {
        let (session, c) = (session.clone(), connection.clone());
        self.run("watch", move |conn| {
            let tx = immediate(conn, "watch")?;
            let exists = one(&tx, "watch", &sql::CONNECTION_EXISTS, [c.as_str()], |r| {
                r.get::<_, bool>(0)
            })?;
            if exists != Some(true) {
                return Ok(false);
            }
            exec(&tx, "watch", &sql::WATCH, [session.as_str(), c.as_str()])?;
            commit(tx, "watch")?;
            Ok(true)
        })
        .await
    }

    async fn unwatch(&self, session: &SessionId, connection: &ConnectionId) -> StoreResult<()> {
        let (session, c) = (session.clone(), connection.clone());
        self.run("unwatch", move |conn| {
            exec(
                conn,
                "unwatch",
                &sql::UNWATCH,
                [session.as_str(), c.as_str()],
            )
            .map(drop)
        })
        .await
    }

    async fn watchers(&self, session: &SessionId) -> StoreResult<Vec<ConnectionId>> {
        let session = session.clone();
        self.run_read("watchers", move |conn| {
            let p = [session.as_str()];
            parse_connection_ids(all(conn, "watchers", &sql::WATCHERS, p, connection_id)?)
        })
        .await
    }

    // ---- sessions ----

    async fn insert_session(
        &self,
        session: &Session,
        max_live: u32,
    ) -> StoreResult<Capped<Session>> {
        let s = session.clone();
        self.run("insert_session", move |conn| {
            let model = to_json("model", &s.model)?;
            // One writer at a time from here: the count holds until commit.
            let tx = immediate(conn, "insert_session")?;
            let by_id = &sql::SESSION_BY_ID;
            if let Some(stored) = one(&tx, "insert_session", by_id, [s.id.as_str()], session_row)? {
                return Ok(Inserted::Existing(stored).into());
            }
            if !s.status.is_closed() {
                let live = &sql::COUNT_LIVE_SESSIONS;
                if count(&tx, "insert_session", live, [s.owner.as_str()])? >= max_live {
                    return Ok(Capped::Full);
                }
            }
            let p = params![
                s.id.as_str(),
                s.owner.as_str(),
                s.worker.as_str(),
                model,
                s.title,
                s.status.as_str(),
                s.agent_session_id,
                s.error,
                s.message_count,
                s.created_at,
                s.updated_at,
                s.title_source.map(TitleSource::as_str)
            ];
            exec(&tx, "insert_session", &sql::INSERT_SESSION, p)?;
            commit(tx, "insert_session")?;
            Ok(Inserted::New(s).into())
        })
        .await
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        let id = id.clone();
        self.run_read("session", move |conn| {
            one(
                conn,
                "session",
                &sql::SESSION_BY_ID,
                [id.as_str()],
                session_row,
            )
        })
        .await
    }

    async fn sessions_of(
        &self,
        owner: &UserId,
        worker: Option<&WorkerId>,
        before: Option<Millis>,
        limit: u32,
    ) -> StoreResult<Vec<Session>> {
        let owner = owner.clone();
        let worker = worker.cloned();
        let before = before.unwrap_or(NO_UPPER_BOUND);
        self.run_read("sessions_of", move |conn| match &worker {
            Some(w) => {
                let p = params![owner.as_str(), w.as_str(), before, limit];
                all(
                    conn,
                    "sessions_of",
                    &sql::SESSIONS_OF_WORKER,
                    p,
                    session_row,
                )
            }
            None => {
                let p = params![owner.as_str(), before, limit];
                all(conn, "sessions_of", &sql::SESSIONS_OF, p, session_row)
            }
        })
        .await
    }

    async fn starting_sessions(&self, worker: &WorkerId) -> StoreResult<Vec<Session>> {
        let worker = worker.clone();
        self.run_read("starting_sessions", move |conn| {
            let p = [worker.as_str()];
            all(
                conn,
                "starting_sessions",
                &sql::STARTING_SESSIONS,
                p,
                session_row,
            )
        })
        .await
    }

    async fn transition_session(
        &self,
        id: &SessionId,
        from: &[SessionStatus],
        to: SessionStatus,
        patch: &SessionPatch,
        now: Millis,
    ) -> StoreResult<Option<Session>> {
        let id = id.clone();
        let from = status_set(from, SessionStatus::as_str)?;
        let patch = patch.clone();
        self.run("transition_session", move |conn| {
            let p = params![
                id.as_str(),
                from,
                to.as_str(),
                patch.agent_session_id,
                patch.error,
                now
            ];
            one(
                conn,
                "transition_session",
                &sql::TRANSITION_SESSION,
                p,
                session_row,
            )
        })
        .await
    }

    async fn set_agent_title(&self, id: &SessionId, title: &str, now: Millis) -> StoreResult<Option<Session>> {
        let id = id.clone();
        let title = title.to_owned();
        self.run("set_agent_title", move |conn| {
            let p = params![id.as_str(), title, now];
            one(conn, "set_agent_title", &sql::SET_AGENT_TITLE, p, session_row)
        })
        .await
    }

    // ---- messages ----

    async fn insert_message(
        &self,
        message: &Message,
        max_open: u32,
    ) -> StoreResult<Capped<Message>> {
        let mut m = message.clone();
        self.run("insert_message", move |conn| {
            const OP: &str = "insert_message";
            let tx = immediate(conn, OP)?;
            if let Some(stored) = one(&tx, OP, &sql::MESSAGE_BY_ID, [m.id.as_str()], message_row)? {
                return Ok(Inserted::Existing(stored).into());
            }
            let bump = &sql::BUMP_MESSAGE_COUNT;
            m.number =
                one(&tx, OP, bump, [m.session.as_str()], |r| r.get(0))?.ok_or_else(|| {
                    StoreError::Conflict(format!("{OP}: session {} does not exist", m.session))
                })?;
            // Refused: dropping the transaction rolls the bump back.
            if !m.status.is_final()
                && count(&tx, OP, &sql::COUNT_OPEN_MESSAGES, [m.owner.as_str()])? >= max_open
            {
                return Ok(Capped::Full);
            }
            let p = params![
                m.id.as_str(),
                m.session.as_str(),
                m.owner.as_str(),
                m.worker.as_str(),
                m.number,
                m.text,
                m.status.as_str(),
                m.chunk_count,
                m.error,
                m.created_at,
                m.updated_at
            ];
            exec(&tx, OP, &sql::INSERT_MESSAGE, p)?;
            commit(tx, OP)?;
            Ok(Inserted::New(m).into())
        })
        .await
    }

    async fn message(&self, id: &MessageId) -> StoreResult<Option<Message>> {
        let id = id.clone();
        self.run_read("message", move |conn| {
            one(
                conn,
                "message",
                &sql::MESSAGE_BY_ID,
                [id.as_str()],
                message_row,
            )
        })
        .await
    }

    async fn messages_of(
        &self,
        session: &SessionId,
        from: u32,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let session = session.clone();
        self.run_read("messages_of", move |conn| {
            let p = params![session.as_str(), from, limit];
            all(conn, "messages_of", &sql::MESSAGES_OF, p, message_row)
        })
        .await
    }

    async fn open_messages(&self, worker: &WorkerId) -> StoreResult<Vec<Message>> {
        let worker = worker.clone();
        self.run_read("open_messages", move |conn| {
            all(
                conn,
                "open_messages",
                &sql::OPEN_MESSAGES,
                [worker.as_str()],
                message_row,
            )
        })
        .await
    }

    async fn transition_message(
        &self,
        id: &MessageId,
        from: &[MessageStatus],
        to: MessageStatus,
        patch: &MessagePatch,
        now: Millis,
    ) -> StoreResult<Option<Message>> {
        let id = id.clone();
        let from = status_set(from, MessageStatus::as_str)?;
        let patch = patch.clone();
        self.run("transition_message", move |conn| {
            let p = params![
                id.as_str(),
                from,
                to.as_str(),
                patch.chunk_count,
                patch.error,
                now
            ];
            one(
                conn,
                "transition_message",
                &sql::TRANSITION_MESSAGE,
                p,
                message_row,
            )
        })
        .await
    }

    // ---- chunks ----

    async fn insert_chunk(&self, chunk: &Chunk) -> StoreResult<Inserted<Chunk>> {
        let c = chunk.clone();
        self.run("insert_chunk", move |conn| put_chunk(conn, c)).await
    }

    async fn insert_chunks(&self, chunks: &[Chunk]) -> StoreResult<Vec<Inserted<Chunk>>> {
        let chunks = chunks.to_vec();
        // One job for the frame: its chunks share the writer's batch anyway,
        // and this takes one trip to the writer instead of one per chunk.
        self.run("insert_chunks", move |conn| {
            chunks.into_iter().map(|c| put_chunk(conn, c)).collect()
        })
        .await
    }

    async fn chunks(&self, message: &MessageId, from: u32, limit: u32) -> StoreResult<Vec<Chunk>> {
        let message = message.clone();
        self.run_read("chunks", move |conn| {
            all(
                conn,
                "chunks",
                &sql::CHUNKS,
                params![message.as_str(), from, limit],
                chunk_row,
            )
        })
        .await
    }

    // ---- prompts ----

    async fn insert_prompt(&self, prompt: &Prompt) -> StoreResult<Inserted<Prompt>> {
        let pr = prompt.clone();
        self.run("insert_prompt", move |conn| {
            const OP: &str = "insert_prompt";
            let answer = opt_json("prompt answer", pr.answer.as_ref())?;
            let tx = immediate(conn, OP)?;
            let p = params![
                pr.id.as_str(),
                pr.session.as_str(),
                pr.message.as_str(),
                pr.worker.as_str(),
                pr.owner.as_str(),
                pr.kind.as_str(),
                answer,
                pr.delivered,
                pr.created_at
            ];
            if exec(&tx, OP, &sql::INSERT_PROMPT, p)? == 1 {
                commit(tx, OP)?;
                return Ok(Inserted::New(pr));
            }
            match one(&tx, OP, &sql::PROMPT_BY_ID, [pr.id.as_str()], prompt_row)? {
                Some(stored) => Ok(Inserted::Existing(stored)),
                None => Err(StoreError::Unavailable(format!(
                    "{OP}: prompt {} was neither inserted nor found",
                    pr.id
                ))),
            }
        })
        .await
    }

    async fn prompt(&self, id: &PromptId) -> StoreResult<Option<Prompt>> {
        let id = id.clone();
        self.run_read("prompt", move |conn| {
            one(
                conn,
                "prompt",
                &sql::PROMPT_BY_ID,
                [id.as_str()],
                prompt_row,
            )
        })
        .await
    }

    async fn answer_prompt(
        &self,
        id: &PromptId,
        answer: &PromptAnswer,
    ) -> StoreResult<Option<Prompt>> {
        let id = id.clone();
        let answer = to_json("prompt answer", answer)?;
        self.run("answer_prompt", move |conn| {
            let p = [id.as_str(), answer.as_str()];
            one(conn, "answer_prompt", &sql::ANSWER_PROMPT, p, prompt_row)
        })
        .await
    }

    async fn set_prompt_delivered(&self, id: &PromptId) -> StoreResult<()> {
        let id = id.clone();
        self.run("set_prompt_delivered", move |conn| {
            let p = [id.as_str()];
            exec(conn, "set_prompt_delivered", &sql::SET_PROMPT_DELIVERED, p).map(drop)
        })
        .await
    }

    async fn undelivered_prompts(&self, worker: &WorkerId) -> StoreResult<Vec<Prompt>> {
        let worker = worker.clone();
        self.run_read("undelivered_prompts", move |conn| {
            let p = [worker.as_str()];
            all(
                conn,
                "undelivered_prompts",
                &sql::UNDELIVERED_PROMPTS,
                p,
                prompt_row,
            )
        })
        .await
    }
}
