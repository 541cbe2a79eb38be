//! Connections, the sessions they watch, and the purge of expired records.

use rusqlite::params;
use tether_domain::ids::{ConnectionId, SessionId, UserId, WorkerId};
use tether_domain::model::{Connection, Millis, Worker};
use tether_domain::store::StoreResult;

use super::rows::{connection_row, principal_cols, worker_row};
use super::sql::{
    self, all, commit, connection_id, count, exec, immediate, one, parse_connection_ids,
};
use super::{db_err, SqliteStore};

pub(super) async fn put_connection(
    store: &SqliteStore,
    connection: &Connection,
) -> StoreResult<()> {
    let c = connection.clone();
    store
        .run("put_connection", move |conn| {
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

pub(super) async fn connection(
    store: &SqliteStore,
    id: &ConnectionId,
) -> StoreResult<Option<Connection>> {
    let id = id.clone();
    store
        .run_read("connection", move |conn| {
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

pub(super) async fn connection_and_worker(
    store: &SqliteStore,
    id: &ConnectionId,
) -> StoreResult<Option<(Connection, Option<Worker>)>> {
    let id = id.clone();
    // One trip to the reader for both.
    store
        .run_read("connection_and_worker", move |conn| {
            let Some(c) = one(
                conn,
                "connection",
                &sql::CONNECTION_BY_ID,
                [id.as_str()],
                connection_row,
            )?
            else {
                return Ok(None);
            };
            let worker = match &c.principal {
                tether_domain::model::Principal::Worker(w) => {
                    one(conn, "worker", &sql::WORKER_BY_ID, [w.as_str()], worker_row)?
                }
                tether_domain::model::Principal::User(_) => None,
            };
            Ok(Some((c, worker)))
        })
        .await
}

pub(super) async fn delete_connection(
    store: &SqliteStore,
    id: &ConnectionId,
) -> StoreResult<Option<Connection>> {
    let id = id.clone();
    // The watches go with it by the foreign key's cascade, in the same
    // statement.
    store
        .run("delete_connection", move |conn| {
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

pub(super) async fn purge_expired(store: &SqliteStore, now: Millis) -> StoreResult<u64> {
    store
        .run("purge_expired", move |conn| {
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

pub(super) async fn touch_connection(
    store: &SqliteStore,
    id: &ConnectionId,
    now: Millis,
) -> StoreResult<()> {
    let id = id.clone();
    store
        .run("touch_connection", move |conn| {
            let p = params![id.as_str(), now];
            exec(conn, "touch_connection", &sql::TOUCH_CONNECTION, p).map(drop)
        })
        .await
}

pub(super) async fn user_connections(
    store: &SqliteStore,
    user: &UserId,
    now: Millis,
) -> StoreResult<Vec<ConnectionId>> {
    let user = user.clone();
    store
        .run_read("user_connections", move |conn| {
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

pub(super) async fn set_connections_owner(
    store: &SqliteStore,
    worker: &WorkerId,
    owner: &UserId,
) -> StoreResult<()> {
    let (worker, owner) = (worker.clone(), owner.clone());
    store
        .run("set_connections_owner", move |conn| {
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

pub(super) async fn worker_connections(
    store: &SqliteStore,
    worker: &WorkerId,
) -> StoreResult<Vec<ConnectionId>> {
    let worker = worker.clone();
    store
        .run_read("worker_connections", move |conn| {
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

pub(super) async fn connection_count(
    store: &SqliteStore,
    principal: &tether_domain::model::Principal,
    now: Millis,
) -> StoreResult<u32> {
    let (kind, id) = principal_cols(principal);
    store
        .run("connection_count", move |conn| {
            let p = params![kind, id, now];
            count(conn, "connection_count", &sql::COUNT_CONNECTIONS, p)
        })
        .await
}

pub(super) async fn watch(
    store: &SqliteStore,
    session: &SessionId,
    connection: &ConnectionId,
) -> StoreResult<bool> {
    let (session, c) = (session.clone(), connection.clone());
    store
        .run("watch", move |conn| {
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

pub(super) async fn unwatch(
    store: &SqliteStore,
    session: &SessionId,
    connection: &ConnectionId,
) -> StoreResult<()> {
    let (session, c) = (session.clone(), connection.clone());
    store
        .run("unwatch", move |conn| {
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

pub(super) async fn watchers(
    store: &SqliteStore,
    session: &SessionId,
) -> StoreResult<Vec<ConnectionId>> {
    let session = session.clone();
    store
        .run_read("watchers", move |conn| {
            let p = [session.as_str()];
            parse_connection_ids(all(conn, "watchers", &sql::WATCHERS, p, connection_id)?)
        })
        .await
}
