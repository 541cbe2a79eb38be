//! Workers: pairing tokens, the rate limits on pairing, and the workers
//! themselves (pending, approved, their presence and what they report).

use rusqlite::{params, Connection as SqlConn};
use tether_domain::auth::SecretHash;
use tether_domain::ids::{ConnectionId, UserId, WorkerId};
use tether_domain::model::{Millis, PairingToken, Worker, WorkerStatus};
use tether_domain::protocol::AgentReport;
use tether_domain::store::{StoreResult, WorkerProfile};

use super::rows::{to_json, worker_row, WORKER_COLS};
use super::sql::{self, all, commit, exec, immediate, one, opt_json, take_unexpired};
use super::SqliteStore;

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

pub(super) async fn put_pairing_token(
    store: &SqliteStore,
    hash: &SecretHash,
    token: &PairingToken,
) -> StoreResult<()> {
    let (hash, t) = (hash.clone(), token.clone());
    store
        .run("put_pairing_token", move |conn| {
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

pub(super) async fn take_pairing_token(
    store: &SqliteStore,
    hash: &SecretHash,
    now: Millis,
) -> StoreResult<Option<PairingToken>> {
    let hash = hash.clone();
    store
        .run("take_pairing_token", move |conn| {
            let taken = take_unexpired(
                conn,
                "take_pairing_token",
                &sql::TAKE_PAIRING_TOKEN,
                &hash,
                now,
                "pairing token owner",
            )?;
            Ok(taken.map(|(owner, owner_secret, expires_at)| PairingToken {
                owner,
                owner_secret,
                expires_at,
            }))
        })
        .await
}

pub(super) async fn count_attempt(
    store: &SqliteStore,
    key: &str,
    window_start: Millis,
    window_end: Millis,
    limit: u32,
) -> StoreResult<bool> {
    let key = key.to_owned();
    store
        .run("count_attempt", move |conn| {
            let p = params![key, window_start, window_end, limit];
            Ok(exec(conn, "count_attempt", &sql::COUNT_ATTEMPT, p)? == 1)
        })
        .await
}

pub(super) async fn create_worker(store: &SqliteStore, worker: &Worker) -> StoreResult<()> {
    let w = worker.clone();
    store
        .run("create_worker", move |conn| insert_worker(conn, &w))
        .await
}

pub(super) async fn create_pending_worker(
    store: &SqliteStore,
    worker: &Worker,
    max_per_source: u32,
    now: Millis,
) -> StoreResult<bool> {
    let w = worker.clone();
    store
        .run("create_pending_worker", move |conn| {
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

pub(super) async fn delete_expired_pending(
    store: &SqliteStore,
    id: &WorkerId,
    now: Millis,
) -> StoreResult<bool> {
    let id = id.clone();
    store
        .run("delete_expired_pending", move |conn| {
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

pub(super) async fn worker(store: &SqliteStore, id: &WorkerId) -> StoreResult<Option<Worker>> {
    let id = id.clone();
    store
        .run_read("worker", move |conn| {
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

pub(super) async fn worker_by_credential(
    store: &SqliteStore,
    hash: &SecretHash,
) -> StoreResult<Option<Worker>> {
    let hash = hash.clone();
    store
        .run_read("worker_by_credential", move |conn| {
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

pub(super) async fn worker_by_pairing_code(
    store: &SqliteStore,
    code: &str,
) -> StoreResult<Option<Worker>> {
    let code = code.to_owned();
    store
        .run_read("worker_by_pairing_code", move |conn| {
            let sql = &sql::WORKER_BY_PAIRING_CODE;
            one(conn, "worker_by_pairing_code", sql, [code], worker_row)
        })
        .await
}

pub(super) async fn workers_of(store: &SqliteStore, owner: &UserId) -> StoreResult<Vec<Worker>> {
    let owner = owner.clone();
    store
        .run_read("workers_of", move |conn| {
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

pub(super) async fn pending_workers(
    store: &SqliteStore,
    now: Millis,
    after: Option<(Millis, &WorkerId)>,
    limit: u32,
) -> StoreResult<Vec<Worker>> {
    let (after_time, after_id) = match after {
        Some((t, id)) => (t, id.as_str().to_owned()),
        None => (Millis::MIN, String::new()),
    };
    store
        .run_read("pending_workers", move |conn| {
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

pub(super) async fn transition_worker(
    store: &SqliteStore,
    id: &WorkerId,
    from: WorkerStatus,
    to: WorkerStatus,
    owner: Option<&UserId>,
    name: Option<&str>,
) -> StoreResult<Option<Worker>> {
    let id = id.clone();
    let owner = owner.cloned();
    let name = name.map(str::to_owned);
    store
        .run("transition_worker", move |conn| {
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

pub(super) async fn set_worker_connection(
    store: &SqliteStore,
    id: &WorkerId,
    connection: &ConnectionId,
    now: Millis,
) -> StoreResult<()> {
    let (id, connection) = (id.clone(), connection.clone());
    store
        .run("set_worker_connection", move |conn| {
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

pub(super) async fn clear_worker_connection(
    store: &SqliteStore,
    id: &WorkerId,
    connection: &ConnectionId,
) -> StoreResult<bool> {
    let (id, connection) = (id.clone(), connection.clone());
    store
        .run("clear_worker_connection", move |conn| {
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

pub(super) async fn touch_worker(
    store: &SqliteStore,
    id: &WorkerId,
    now: Millis,
) -> StoreResult<()> {
    let id = id.clone();
    store
        .run("touch_worker", move |conn| {
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

pub(super) async fn set_worker_profile(
    store: &SqliteStore,
    id: &WorkerId,
    profile: &WorkerProfile,
) -> StoreResult<()> {
    let id = id.clone();
    let w = profile.clone();
    store
        .run("set_worker_profile", move |conn| {
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

pub(super) async fn set_agent_state(
    store: &SqliteStore,
    id: &WorkerId,
    report: &AgentReport,
) -> StoreResult<Option<Worker>> {
    let id = id.clone();
    let r = report.clone();
    store
        .run("set_agent_state", move |conn| {
            let p = params![id.as_str(), r.state.as_str(), r.reason, r.at];
            one(
                conn,
                "set_agent_state",
                &sql::SET_AGENT_STATE,
                p,
                worker_row,
            )
        })
        .await
}
