//! Users and the tickets that let a browser connect as one.

use tether_domain::auth::SecretHash;
use tether_domain::ids::UserId;
use tether_domain::model::{Millis, Ticket, User};
use tether_domain::store::{StoreError, StoreResult};

use super::codec::{self, Rec};
use super::items;
use super::keys::{self, Key};
use super::ops::QuerySpec;
use super::tx::{decide, Decided, Tx};
use super::{DynamoStore, Retry};

impl DynamoStore {
    async fn user_via(&self, op: &'static str, entry: &Key) -> StoreResult<Option<User>> {
        let Some(item) = self.get(op, entry).await? else {
            return Ok(None);
        };
        let uid = codec::target_of(&item)?;
        Ok(self
            .get_entity::<Rec<User>>(op, &keys::user(&uid))
            .await?
            .map(|r| r.value))
    }
}

pub(super) async fn create_user(store: &DynamoStore, user: &User) -> StoreResult<()> {
    const OP: &str = "create_user";
    let new = Rec::new(user.clone());
    store.create(OP, &new, "user", user.id.as_str()).await
}

pub(super) async fn user(store: &DynamoStore, id: &UserId) -> StoreResult<Option<User>> {
    Ok(store
        .get_entity::<Rec<User>>("user", &keys::user(id.as_str()))
        .await?
        .map(|r| r.value))
}

pub(super) async fn user_by_name(store: &DynamoStore, name: &str) -> StoreResult<Option<User>> {
    let user = store
        .user_via("user_by_name", &keys::user_name(name))
        .await?;
    Ok(user.filter(|u| u.name == name))
}

pub(super) async fn user_by_secret(
    store: &DynamoStore,
    hash: &SecretHash,
) -> StoreResult<Option<User>> {
    let entry = keys::user_secret(hash.as_str());
    let user = store.user_via("user_by_secret", &entry).await?;
    // A rotation between the two reads leaves the entry behind.
    Ok(user.filter(|u| u.secret_hash == *hash))
}

pub(super) async fn users(store: &DynamoStore) -> StoreResult<Vec<User>> {
    const OP: &str = "users";
    let ids = store
        .query_targets(OP, QuerySpec::partition(keys::USERNAMES))
        .await?;
    let keys = ids.iter().map(|id| keys::user(id)).collect();
    let users = store.get_many::<Rec<User>>(OP, keys).await?;
    Ok(users.into_iter().map(|r| r.value).collect())
}

pub(super) async fn set_user_secret(
    store: &DynamoStore,
    id: &UserId,
    hash: &SecretHash,
) -> StoreResult<bool> {
    const OP: &str = "set_user_secret";
    let key = keys::user(id.as_str());
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<Rec<User>>(OP, &key).await? else {
            return Ok(false);
        };
        if old.value.secret_hash == *hash {
            return Ok(true);
        }
        let new = Rec {
            value: User {
                secret_hash: hash.clone(),
                ..old.value.clone()
            },
            rev: old.rev,
        };
        match store.replace(OP, &old, &new).await? {
            Decided::Done => return Ok(true),
            Decided::Conflict => {
                return Err(StoreError::Conflict(format!(
                    "{OP}: the secret hash belongs to another user"
                )))
            }
            Decided::Retry => retry.again().await?,
        }
    }
}

pub(super) async fn delete_user(store: &DynamoStore, id: &UserId) -> StoreResult<bool> {
    const OP: &str = "delete_user";
    let key = keys::user(id.as_str());
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<Rec<User>>(OP, &key).await? else {
            return Ok(false);
        };
        // The item and its name and secret entries, if `rev` is unchanged.
        let mut tx = Tx::default();
        let placed = tx.entity(Some(&old), None)?;
        match decide(&store.commit(OP, tx).await?, &placed) {
            Decided::Done => return Ok(true),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn put_ticket(
    store: &DynamoStore,
    hash: &SecretHash,
    ticket: &Ticket,
) -> StoreResult<()> {
    store
        .put("put_ticket", items::ticket_item(hash, ticket))
        .await
}

pub(super) async fn take_ticket(
    store: &DynamoStore,
    hash: &SecretHash,
    now: Millis,
) -> StoreResult<Option<Ticket>> {
    let key = keys::ticket(hash.as_str());
    let expires_at = |t: &Ticket| t.expires_at;
    store
        .take(
            "take_ticket",
            &key,
            items::ticket_from_item,
            expires_at,
            now,
        )
        .await
}
