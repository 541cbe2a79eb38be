//! Connections, the sessions they watch, and the purge of expired records.

use std::collections::BTreeSet;
use std::str::FromStr;

use tether_domain::ids::{ConnectionId, IdError, SessionId, UserId, WorkerId};
use tether_domain::model::{Connection, Millis, Principal};
use tether_domain::store::{Store, StoreError, StoreResult};

use super::codec::{self, CONNECTION, EXPIRES_AT, EXPIRY_SHARD, LAST_SEEN, OWNER};
use super::items::ConnRecord;
use super::keys;
use super::ops::{QuerySpec, Update};
use super::schema::EXPIRY_INDEX;
use super::tx::{decide, Cond, Decided, Tx};
use super::{DynamoStore, Retry};

/// At most this many watches go in one transaction (a transaction holds at
/// most 100 actions; the record and its principal entry take two).
const MAX_TX_WATCHES: usize = 90;

fn parse_id<T: FromStr<Err = IdError>>(what: &str, s: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what} id {s:?}: {e}")))
}

fn parse_ids<T: FromStr<Err = IdError>>(what: &str, ids: Vec<String>) -> StoreResult<Vec<T>> {
    ids.iter().map(|s| parse_id(what, s)).collect()
}

impl DynamoStore {
    async fn entries_to_ids<T: FromStr<Err = IdError>>(
        &self,
        op: &'static str,
        what: &str,
        q: QuerySpec,
    ) -> StoreResult<Vec<T>> {
        parse_ids(what, self.query_targets(op, q).await?)
    }

    /// Deletes a connection record with its entries and watches; with
    /// `expired_at`, only if it had expired by then. Returns what was stored.
    async fn remove_connection(
        &self,
        op: &'static str,
        id: &ConnectionId,
        expired_at: Option<Millis>,
    ) -> StoreResult<Option<Connection>> {
        let key = keys::connection(id.as_str());
        let mut retry = Retry::new(op);
        loop {
            let Some(old) = self.get_entity::<ConnRecord>(op, &key).await? else {
                return Ok(None);
            };
            if expired_at.is_some_and(|now| old.conn.expires_at > now) {
                return Ok(None);
            }
            if old.watching.len() > MAX_TX_WATCHES {
                // Too many watches for one transaction: shed some first.
                let shed = ConnRecord {
                    watching: old.watching.iter().skip(MAX_TX_WATCHES).cloned().collect(),
                    ..old.clone()
                };
                if let Decided::Retry | Decided::Conflict = self.replace(op, &old, &shed).await? {
                    retry.again().await?;
                }
                continue;
            }
            let mut tx = Tx::default();
            let placed = tx.entity(Some(&old), None)?;
            match decide(&self.commit(op, tx).await?, &placed) {
                Decided::Done => return Ok(Some(old.conn)),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }

    async fn change_watch(
        &self,
        op: &'static str,
        session: &SessionId,
        conn: &ConnectionId,
        add: bool,
    ) -> StoreResult<bool> {
        let key = keys::connection(conn.as_str());
        let sid = session.as_str().to_owned();
        let mut retry = Retry::new(op);
        loop {
            let Some(old) = self.get_entity::<ConnRecord>(op, &key).await? else {
                if !add {
                    // No record: make sure no stray watch item outlives it.
                    let watch = keys::watch(session.as_str(), conn.as_str());
                    self.delete_if(op, &watch, Cond::none()).await?;
                }
                return Ok(false);
            };
            if old.watching.contains(&sid) == add {
                return Ok(true);
            }
            let mut watching: BTreeSet<String> = old.watching.clone();
            if add {
                watching.insert(sid.clone());
            } else {
                watching.remove(&sid);
            }
            let new = ConnRecord {
                watching,
                ..old.clone()
            };
            match self.replace(op, &old, &new).await? {
                Decided::Done => return Ok(true),
                Decided::Retry | Decided::Conflict => retry.again().await?,
            }
        }
    }
}

pub(super) async fn put_connection(store: &DynamoStore, conn: &Connection) -> StoreResult<()> {
    const OP: &str = "put_connection";
    let key = keys::connection(conn.id.as_str());
    let mut retry = Retry::new(OP);
    // A new id (every `$connect`): one transaction, no read.
    if store.insert(OP, &ConnRecord::new(conn.clone())).await? {
        return Ok(());
    }
    // The id exists: replace its fields and keep its watches, as
    // SQLite's upsert does.
    loop {
        let Some(old) = store.get_entity::<ConnRecord>(OP, &key).await? else {
            if store.insert(OP, &ConnRecord::new(conn.clone())).await? {
                return Ok(());
            }
            retry.again().await?;
            continue;
        };
        let new = ConnRecord {
            conn: conn.clone(),
            ..old.clone()
        };
        match store.replace(OP, &old, &new).await? {
            Decided::Done => return Ok(()),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn connection(
    store: &DynamoStore,
    id: &ConnectionId,
) -> StoreResult<Option<Connection>> {
    Ok(store
        .get_entity::<ConnRecord>("connection", &keys::connection(id.as_str()))
        .await?
        .map(|r| r.conn))
}

pub(super) async fn delete_connection(
    store: &DynamoStore,
    id: &ConnectionId,
) -> StoreResult<Option<Connection>> {
    store.remove_connection("delete_connection", id, None).await
}

pub(super) async fn purge_expired(store: &DynamoStore, now: Millis) -> StoreResult<u64> {
    const OP: &str = "purge_expired";
    let mut purged = 0u64;
    for shard in 0..keys::EXPIRY_SHARDS {
        // The GSI is eventually consistent: what expired a moment ago is
        // purged next time.
        let q = QuerySpec {
            index: Some(EXPIRY_INDEX),
            key_cond: "#q_shard = :q_shard AND #q_exp <= :q_now".into(),
            names: vec![
                ("#q_shard".into(), EXPIRY_SHARD.into()),
                ("#q_exp".into(), EXPIRES_AT.into()),
            ],
            values: vec![
                (":q_shard".into(), codec::s(keys::expiry_shard_name(shard))),
                (":q_now".into(), codec::n(now)),
            ],
            filter: None,
            forward: true,
            limit: None,
        };
        for item in store.query(OP, q).await? {
            let key = codec::key_of(&item)?;
            let expiring = [
                keys::TICKET_PREFIX,
                keys::PAIRING_TOKEN_PREFIX,
                keys::RATE_PREFIX,
            ];
            if expiring.iter().any(|prefix| key.pk.starts_with(prefix)) {
                let cond = Cond::new("#c_exp <= :c_now")
                    .name("#c_exp", EXPIRES_AT)
                    .value(":c_now", codec::n(now));
                if store.delete_if(OP, &key, cond).await? {
                    purged += 1;
                }
            } else if let Some(wid) = key
                .pk
                .strip_prefix(keys::WORKER_PREFIX)
                .filter(|wid| key == keys::worker(wid))
            {
                // A pending worker whose code expired, with its entries.
                let id: WorkerId = parse_id("worker", wid)?;
                if store.delete_expired_pending(&id, now).await? {
                    purged += 1;
                }
            } else if let Some(cid) = key.pk.strip_prefix(keys::CONNECTION_PREFIX) {
                let id: ConnectionId = parse_id("connection", cid)?;
                let Some(conn) = store.remove_connection(OP, &id, Some(now)).await? else {
                    continue;
                };
                purged += 1;
                if let Principal::Worker(wid) = &conn.principal {
                    let cond = Cond::new("#c_conn = :c_conn")
                        .name("#c_conn", CONNECTION)
                        .value(":c_conn", codec::s(id.as_str()));
                    let u = Update::new(keys::worker(wid.as_str()), cond).remove(CONNECTION);
                    store.update(OP, u).await?;
                }
            }
        }
    }
    Ok(purged)
}

pub(super) async fn touch_connection(
    store: &DynamoStore,
    id: &ConnectionId,
    now: Millis,
) -> StoreResult<()> {
    let u =
        Update::new(keys::connection(id.as_str()), Cond::exists()).set(LAST_SEEN, codec::n(now));
    store.update("touch_connection", u).await.map(drop)
}

pub(super) async fn user_connections(
    store: &DynamoStore,
    user: &UserId,
    now: Millis,
) -> StoreResult<Vec<ConnectionId>> {
    let q = QuerySpec::prefix(&keys::user_pk(user.as_str()), keys::CONN_ENTRY).filter(
        "#f_exp > :f_now",
        &[("#f_exp", EXPIRES_AT)],
        vec![(":f_now", codec::n(now))],
    );
    store
        .entries_to_ids("user_connections", "connection", q)
        .await
}

pub(super) async fn set_connections_owner(
    store: &DynamoStore,
    worker: &WorkerId,
    owner: &UserId,
) -> StoreResult<()> {
    const OP: &str = "set_connections_owner";
    let conns: Vec<ConnectionId> = store.worker_connections(worker).await?;
    for conn in conns {
        let u = Update::new(keys::connection(conn.as_str()), Cond::exists())
            .set(OWNER, codec::s(owner.as_str()));
        store.update(OP, u).await?;
    }
    Ok(())
}

pub(super) async fn worker_connections(
    store: &DynamoStore,
    worker: &WorkerId,
) -> StoreResult<Vec<ConnectionId>> {
    let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::CONN_ENTRY);
    store
        .entries_to_ids("worker_connections", "connection", q)
        .await
}

pub(super) async fn connection_count(
    store: &DynamoStore,
    principal: &Principal,
    now: Millis,
) -> StoreResult<u32> {
    let pk = match principal {
        Principal::User(u) => keys::user_pk(u.as_str()),
        Principal::Worker(w) => keys::worker_pk(w.as_str()),
    };
    let q = QuerySpec::prefix(&pk, keys::CONN_ENTRY).filter(
        "#f_exp > :f_now",
        &[("#f_exp", EXPIRES_AT)],
        vec![(":f_now", codec::n(now))],
    );
    store.count("connection_count", q).await
}

pub(super) async fn watch(
    store: &DynamoStore,
    session: &SessionId,
    conn: &ConnectionId,
) -> StoreResult<bool> {
    store.change_watch("watch", session, conn, true).await
}

pub(super) async fn unwatch(
    store: &DynamoStore,
    session: &SessionId,
    conn: &ConnectionId,
) -> StoreResult<()> {
    store
        .change_watch("unwatch", session, conn, false)
        .await
        .map(drop)
}

pub(super) async fn watchers(
    store: &DynamoStore,
    session: &SessionId,
) -> StoreResult<Vec<ConnectionId>> {
    let q = QuerySpec::prefix(&keys::session_pk(session.as_str()), keys::WATCH_ENTRY);
    store.entries_to_ids("watchers", "connection", q).await
}
