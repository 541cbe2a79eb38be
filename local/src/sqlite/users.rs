//! Users and the tickets that let a browser connect as one.

use rusqlite::params;
use tether_domain::auth::SecretHash;
use tether_domain::ids::UserId;
use tether_domain::model::{Millis, Ticket, User};
use tether_domain::store::StoreResult;

use super::rows::{user_row, USER_COLS};
use super::sql::{self, all, exec, one, take_unexpired};
use super::SqliteStore;

pub(super) async fn create_user(store: &SqliteStore, user: &User) -> StoreResult<()> {
    let u = user.clone();
    store
        .run("create_user", move |conn| {
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

pub(super) async fn user(store: &SqliteStore, id: &UserId) -> StoreResult<Option<User>> {
    let id = id.clone();
    store
        .run_read("user", move |conn| {
            one(conn, "user", &sql::USER_BY_ID, [id.as_str()], user_row)
        })
        .await
}

pub(super) async fn user_by_name(store: &SqliteStore, name: &str) -> StoreResult<Option<User>> {
    let name = name.to_owned();
    store
        .run_read("user_by_name", move |conn| {
            one(conn, "user_by_name", &sql::USER_BY_NAME, [name], user_row)
        })
        .await
}

pub(super) async fn user_by_secret(
    store: &SqliteStore,
    hash: &SecretHash,
) -> StoreResult<Option<User>> {
    let hash = hash.clone();
    store
        .run_read("user_by_secret", move |conn| {
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

pub(super) async fn users(store: &SqliteStore) -> StoreResult<Vec<User>> {
    store
        .run_read("users", move |conn| {
            let sql = format!("SELECT {USER_COLS} FROM users ORDER BY name");
            all(conn, "users", &sql, [], user_row)
        })
        .await
}

pub(super) async fn set_user_secret(
    store: &SqliteStore,
    id: &UserId,
    hash: &SecretHash,
) -> StoreResult<bool> {
    let (id, hash) = (id.clone(), hash.clone());
    store
        .run("set_user_secret", move |conn| {
            let sql = "UPDATE users SET secret_hash = ?2 WHERE id = ?1";
            Ok(exec(conn, "set_user_secret", sql, [id.as_str(), hash.as_str()])? == 1)
        })
        .await
}

pub(super) async fn delete_user(store: &SqliteStore, id: &UserId) -> StoreResult<bool> {
    let id = id.clone();
    store
        .run("delete_user", move |conn| {
            Ok(exec(conn, "delete_user", &sql::DELETE_USER, [id.as_str()])? == 1)
        })
        .await
}

pub(super) async fn put_ticket(
    store: &SqliteStore,
    hash: &SecretHash,
    ticket: &Ticket,
) -> StoreResult<()> {
    let (hash, t) = (hash.clone(), ticket.clone());
    store
        .run("put_ticket", move |conn| {
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

pub(super) async fn take_ticket(
    store: &SqliteStore,
    hash: &SecretHash,
    now: Millis,
) -> StoreResult<Option<Ticket>> {
    let hash = hash.clone();
    store
        .run("take_ticket", move |conn| {
            let taken = take_unexpired(
                conn,
                "take_ticket",
                &sql::TAKE_TICKET,
                &hash,
                now,
                "ticket user",
            )?;
            Ok(taken.map(|(user, user_secret, expires_at)| Ticket {
                user,
                user_secret,
                expires_at,
            }))
        })
        .await
}
