//! Items attribute by attribute: the attribute names used in expressions
//! as well as in items, an item's builder and its typed reader (a value
//! that does not decode is `Corrupt`), and what every entity is: one item
//! plus entries, at a revision.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tether_domain::ids::IdError;
use tether_domain::model::{AgentState, Millis};
use tether_domain::protocol::AgentReport;
use tether_domain::store::{StoreError, StoreResult};

use super::keys::{self, Key};

pub(super) type Item = HashMap<String, AttributeValue>;

// Attribute names used in expressions as well as in items.
pub(super) const PK: &str = "pk";
pub(super) const SK: &str = "sk";
pub(super) const REV: &str = "rev";
pub(super) const TTL: &str = "ttl";
pub(super) const EXPIRES_AT: &str = "expires_at";
pub(super) const EXPIRY_SHARD: &str = "expiry_shard";
/// The id an entry points at.
pub(super) const TARGET: &str = "target";
pub(super) const STATUS: &str = "status";
pub(super) const UPDATED_AT: &str = "updated_at";
pub(super) const LAST_SEEN: &str = "last_seen";
pub(super) const CONNECTION: &str = "connection";
pub(super) const OWNER: &str = "owner";
pub(super) const WATCHING: &str = "watching";
/// On a user's counters item: sessions not ended or failed.
pub(super) const LIVE_SESSIONS: &str = "live_sessions";
/// On a user's counters item: messages not final.
pub(super) const OPEN_MESSAGES: &str = "open_messages";
pub(super) const SOURCE: &str = "source";
/// On a worker: its agent's last reported state, the reason given, and
/// when (by the worker's clock; a newer report replaces an older one).
pub(super) const AGENT_STATE: &str = "agent_state";
pub(super) const AGENT_REASON: &str = "agent_reason";
pub(super) const AGENT_AT: &str = "agent_at";
/// On a session: who gave its title (`user` or `agent`; absent: nobody).
pub(super) const TITLE: &str = "title";
pub(super) const TITLE_SOURCE: &str = "title_source";
pub(super) const WINDOW_START: &str = "window_start";
pub(super) const COUNT: &str = "count";

/// DynamoDB's TTL attribute: epoch seconds, rounded up so that the item
/// outlives its `expires_at`.
pub(super) fn ttl_seconds(expires_at: Millis) -> i64 {
    expires_at.div_euclid(1000) + i64::from(expires_at.rem_euclid(1000) != 0)
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn to_json<T: Serialize>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("encode {what}: {e}")))
}

/// Builds an item attribute by attribute; `None` and empty sets are left out.
pub(super) struct ItemBuilder(Item);

impl ItemBuilder {
    pub fn new(key: &Key) -> Self {
        let mut item = Item::new();
        item.insert(PK.into(), s(key.pk.as_str()));
        item.insert(SK.into(), s(key.sk.as_str()));
        Self(item)
    }

    pub fn s(mut self, name: &str, v: impl Into<String>) -> Self {
        self.0.insert(name.into(), s(v));
        self
    }

    pub fn opt_s(self, name: &str, v: Option<impl Into<String>>) -> Self {
        match v {
            Some(v) => self.s(name, v),
            None => self,
        }
    }

    pub fn n(mut self, name: &str, v: impl Display) -> Self {
        self.0.insert(name.into(), n(v));
        self
    }

    pub fn opt_n(self, name: &str, v: Option<impl Display>) -> Self {
        match v {
            Some(v) => self.n(name, v),
            None => self,
        }
    }

    pub fn b(mut self, name: &str, v: bool) -> Self {
        self.0.insert(name.into(), AttributeValue::Bool(v));
        self
    }

    /// A string set; DynamoDB has no empty sets, so an empty one is left out.
    pub fn ss(mut self, name: &str, v: &BTreeSet<String>) -> Self {
        if !v.is_empty() {
            self.0
                .insert(name.into(), AttributeValue::Ss(v.iter().cloned().collect()));
        }
        self
    }

    pub fn json<T: Serialize>(self, name: &str, v: &T) -> StoreResult<Self> {
        let text = to_json(name, v)?;
        Ok(self.s(name, text))
    }

    pub fn opt_json<T: Serialize>(self, name: &str, v: Option<&T>) -> StoreResult<Self> {
        match v {
            Some(v) => self.json(name, v),
            None => Ok(self),
        }
    }

    /// `expires_at`, its `ttl`, and (for records purge must find) the
    /// `expiry` GSI shard.
    pub fn expiry(self, key: &Key, expires_at: Millis, indexed: bool) -> Self {
        let b = self
            .n(EXPIRES_AT, expires_at)
            .n(TTL, ttl_seconds(expires_at));
        if indexed {
            b.s(EXPIRY_SHARD, keys::expiry_shard(&key.pk))
        } else {
            b
        }
    }

    pub fn build(self) -> Item {
        self.0
    }
}

/// Reads typed attributes out of an item.
pub(super) struct Attrs<'a> {
    item: &'a Item,
    what: &'static str,
}

impl<'a> Attrs<'a> {
    pub fn new(item: &'a Item, what: &'static str) -> Self {
        Self { item, what }
    }

    fn bad(&self, name: &str, why: impl Display) -> StoreError {
        StoreError::Corrupt(format!("{} attribute {name}: {why}", self.what))
    }

    fn get(&self, name: &str) -> Option<&'a AttributeValue> {
        self.item
            .get(name)
            .filter(|v| !matches!(v, AttributeValue::Null(_)))
    }

    pub fn opt_s(&self, name: &str) -> StoreResult<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(other) => Err(self.bad(name, format!("expected a string, found {other:?}"))),
        }
    }

    pub fn s(&self, name: &str) -> StoreResult<String> {
        self.opt_s(name)?.ok_or_else(|| self.bad(name, "missing"))
    }

    pub fn opt_n<T: FromStr>(&self, name: &str) -> StoreResult<Option<T>>
    where
        T::Err: Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|e| self.bad(name, e)),
            Some(other) => Err(self.bad(name, format!("expected a number, found {other:?}"))),
        }
    }

    pub fn n<T: FromStr>(&self, name: &str) -> StoreResult<T>
    where
        T::Err: Display,
    {
        self.opt_n(name)?.ok_or_else(|| self.bad(name, "missing"))
    }

    pub fn b(&self, name: &str) -> StoreResult<bool> {
        match self.get(name) {
            Some(AttributeValue::Bool(v)) => Ok(*v),
            None => Err(self.bad(name, "missing")),
            Some(other) => Err(self.bad(name, format!("expected a boolean, found {other:?}"))),
        }
    }

    pub fn ss(&self, name: &str) -> StoreResult<BTreeSet<String>> {
        match self.get(name) {
            None => Ok(BTreeSet::new()),
            Some(AttributeValue::Ss(v)) => Ok(v.iter().cloned().collect()),
            Some(other) => Err(self.bad(name, format!("expected a string set, found {other:?}"))),
        }
    }

    pub fn id<T: FromStr<Err = IdError>>(&self, name: &str) -> StoreResult<T> {
        self.s(name)?.parse().map_err(|e| self.bad(name, e))
    }

    pub fn opt_id<T: FromStr<Err = IdError>>(&self, name: &str) -> StoreResult<Option<T>> {
        self.opt_s(name)?
            .map(|v| v.parse().map_err(|e| self.bad(name, e)))
            .transpose()
    }

    pub fn json<T: DeserializeOwned>(&self, name: &str) -> StoreResult<T> {
        let text = self.s(name)?;
        serde_json::from_str(&text).map_err(|e| self.bad(name, e))
    }

    pub fn opt_json<T: DeserializeOwned>(&self, name: &str) -> StoreResult<Option<T>> {
        self.opt_s(name)?
            .map(|text| serde_json::from_str(&text).map_err(|e| self.bad(name, e)))
            .transpose()
    }

    pub fn parsed<T>(&self, name: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
        let v = self.s(name)?;
        parse(&v).ok_or_else(|| self.bad(name, format!("unknown value {v:?}")))
    }

    pub fn opt_parsed<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Option<T>,
    ) -> StoreResult<Option<T>> {
        self.opt_s(name)?
            .map(|v| parse(&v).ok_or_else(|| self.bad(name, format!("unknown value {v:?}"))))
            .transpose()
    }

    /// A worker's agent report: its three attributes all absent, or a
    /// state and a time (and maybe a reason).
    pub fn agent(&self) -> StoreResult<Option<AgentReport>> {
        let Some(state) = self.opt_parsed(AGENT_STATE, AgentState::parse)? else {
            return Ok(None);
        };
        Ok(Some(AgentReport {
            state,
            reason: self.opt_s(AGENT_REASON)?,
            at: self.n(AGENT_AT)?,
        }))
    }
}

/// The key of an item read back from the table.
pub(super) fn key_of(item: &Item) -> StoreResult<Key> {
    let a = Attrs::new(item, "item");
    Ok(Key::new(a.s(PK)?, a.s(SK)?))
}

/// The id an entry points at.
pub(super) fn target_of(item: &Item) -> StoreResult<String> {
    Attrs::new(item, "entry").s(TARGET)
}

/// A secondary item that exists exactly while its entity is in some state,
/// written in the same transaction as the entity.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Entry {
    pub key: Key,
    pub item: Item,
    /// Its key is a uniqueness constraint: it is put only if absent, and a
    /// clash is the caller's `Conflict`.
    pub unique: bool,
}

pub(super) fn entry(key: Key, target: &str) -> ItemBuilder {
    ItemBuilder::new(&key).s(TARGET, target)
}

pub(super) fn plain(b: ItemBuilder) -> Entry {
    let item = b.build();
    Entry {
        key: key_of_built(&item),
        item,
        unique: false,
    }
}

pub(super) fn unique(b: ItemBuilder) -> Entry {
    Entry {
        unique: true,
        ..plain(b)
    }
}

fn key_of_built(item: &Item) -> Key {
    let get = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    };
    Key::new(get(PK), get(SK))
}

/// Something stored as one item plus entries, guarded by a revision number
/// that every write bumps.
pub(super) trait Entity: Sized {
    /// For error messages.
    const WHAT: &'static str;
    fn key(&self) -> Key;
    /// The revision this value was read at (0 for a value not yet stored).
    fn rev(&self) -> u64;
    /// The item, stamped with revision `rev`.
    fn to_item(&self, rev: u64) -> StoreResult<Item>;
    fn from_item(item: &Item) -> StoreResult<Self>;
    fn entries(&self) -> Vec<Entry>;
}

/// A stored value and the revision it was read at.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Rec<T> {
    pub value: T,
    pub rev: u64,
}

impl<T> Rec<T> {
    pub fn new(value: T) -> Self {
        Self { value, rev: 0 }
    }
}
