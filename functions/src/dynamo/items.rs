//! Item mapping: each entity as its item and its entries (see
//! `infra/ACCESS_PATTERNS.md`, section 2). An attribute that does not decode
//! is reported as `Corrupt`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tether_domain::auth::SecretHash;
use tether_domain::ids::{IdError, UserId};
use tether_domain::model::{
    AgentState, Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Principal, Prompt,
    PromptKind, Session, SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
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

fn to_json<T: Serialize>(what: &str, value: &T) -> StoreResult<String> {
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

// ---------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------

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

fn entry(key: Key, target: &str) -> ItemBuilder {
    ItemBuilder::new(&key).s(TARGET, target)
}

fn plain(b: ItemBuilder) -> Entry {
    let item = b.build();
    Entry {
        key: key_of_built(&item),
        item,
        unique: false,
    }
}

fn unique(b: ItemBuilder) -> Entry {
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

// ---- users ----

impl Entity for Rec<User> {
    const WHAT: &'static str = "user";

    fn key(&self) -> Key {
        keys::user(self.value.id.as_str())
    }

    fn rev(&self) -> u64 {
        self.rev
    }

    fn to_item(&self, rev: u64) -> StoreResult<Item> {
        let u = &self.value;
        Ok(ItemBuilder::new(&self.key())
            .s("id", u.id.as_str())
            .s("name", u.name.as_str())
            .s("secret_hash", u.secret_hash.as_str())
            .b("admin", u.admin)
            .n("created_at", u.created_at)
            .n(REV, rev)
            .build())
    }

    fn from_item(item: &Item) -> StoreResult<Self> {
        let a = Attrs::new(item, Self::WHAT);
        Ok(Rec {
            value: User {
                id: a.id("id")?,
                name: a.s("name")?,
                secret_hash: SecretHash::from_stored(a.s("secret_hash")?),
                admin: a.b("admin")?,
                created_at: a.n("created_at")?,
            },
            rev: a.opt_n(REV)?.unwrap_or(0),
        })
    }

    fn entries(&self) -> Vec<Entry> {
        let u = &self.value;
        vec![
            unique(entry(keys::user_name(&u.name), u.id.as_str())),
            unique(entry(
                keys::user_secret(u.secret_hash.as_str()),
                u.id.as_str(),
            )),
        ]
    }
}

// ---- workers ----

impl Entity for Rec<Worker> {
    const WHAT: &'static str = "worker";

    fn key(&self) -> Key {
        keys::worker(self.value.id.as_str())
    }

    fn rev(&self) -> u64 {
        self.rev
    }

    fn to_item(&self, rev: u64) -> StoreResult<Item> {
        let w = &self.value;
        let key = self.key();
        let item = ItemBuilder::new(&key)
            .s("id", w.id.as_str())
            .opt_s(OWNER, w.owner.as_ref().map(UserId::as_str))
            .s(STATUS, w.status.as_str())
            .s("credential_hash", w.credential_hash.as_str())
            .s("machine", w.machine.as_str())
            .s("name", w.name.as_str())
            .s("workdir", w.workdir.as_str())
            .opt_s("pairing_code", w.pairing_code.as_deref())
            .opt_n("pairing_expires_at", w.pairing_expires_at)
            .opt_s(CONNECTION, w.connection.as_ref().map(|c| c.as_str()))
            .opt_n(LAST_SEEN, w.last_seen)
            .json("models", &w.models)?
            .opt_json("default_model", w.default_model.as_ref())?
            .opt_s("version", w.version.as_deref())
            .opt_s(AGENT_STATE, w.agent.as_ref().map(|a| a.state.as_str()))
            .opt_s(
                AGENT_REASON,
                w.agent.as_ref().and_then(|a| a.reason.as_deref()),
            )
            .opt_n(AGENT_AT, w.agent.as_ref().map(|a| a.at))
            .opt_s(SOURCE, w.source.as_deref())
            .n("created_at", w.created_at)
            .n(REV, rev);
        // A pending worker goes with its code: TTL deletes it, and the
        // purge finds it through the `expiry` index.
        Ok(match pending_expiry(w) {
            Some(expires_at) => item.expiry(&key, expires_at, true),
            None => item,
        }
        .build())
    }

    fn from_item(item: &Item) -> StoreResult<Self> {
        let a = Attrs::new(item, Self::WHAT);
        Ok(Rec {
            value: Worker {
                id: a.id("id")?,
                owner: a.opt_id(OWNER)?,
                status: a.parsed(STATUS, WorkerStatus::parse)?,
                credential_hash: SecretHash::from_stored(a.s("credential_hash")?),
                machine: a.s("machine")?,
                name: a.s("name")?,
                workdir: a.s("workdir")?,
                pairing_code: a.opt_s("pairing_code")?,
                pairing_expires_at: a.opt_n("pairing_expires_at")?,
                connection: a.opt_id(CONNECTION)?,
                last_seen: a.opt_n(LAST_SEEN)?,
                models: a.json("models")?,
                default_model: a.opt_json("default_model")?,
                version: a.opt_s("version")?,
                agent: a.agent()?,
                source: a.opt_s(SOURCE)?,
                created_at: a.n("created_at")?,
            },
            rev: a.opt_n(REV)?.unwrap_or(0),
        })
    }

    fn entries(&self) -> Vec<Entry> {
        let w = &self.value;
        let id = w.id.as_str();
        // A pending worker's entries expire with it (TTL only: the purge
        // deletes them with the worker).
        let expiring = |key: Key| {
            let b = entry(key.clone(), id);
            match pending_expiry(w) {
                Some(expires_at) => b.expiry(&key, expires_at, false),
                None => b,
            }
        };
        let mut out = vec![unique(expiring(keys::worker_credential(
            w.credential_hash.as_str(),
        )))];
        if let Some(owner) = &w.owner {
            out.push(plain(entry(
                keys::owner_worker(owner.as_str(), w.created_at, id),
                id,
            )));
        }
        if pending_expiry(w).is_some() {
            out.push(plain(expiring(keys::pending_worker(w.created_at, id))));
        }
        if let Some(code) = &w.pairing_code {
            out.push(plain(expiring(keys::pairing_code(code, w.created_at, id))));
        }
        out
    }
}

/// When a pending worker expires (with its code); `None` for any other.
fn pending_expiry(w: &Worker) -> Option<Millis> {
    (w.status == WorkerStatus::Pending)
        .then_some(w.pairing_expires_at)
        .flatten()
}

/// The pending workers one source address has, as `create_pending_worker`
/// last wrote them: worker id → when its code expires. Entries of workers
/// approved, rejected or expired since are dropped lazily (the next
/// creation from the source checks them), so the record stays as small as
/// the cap.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SourceRecord {
    pub source: String,
    pub pending: BTreeMap<String, Millis>,
    pub rev: u64,
}

impl Entity for SourceRecord {
    const WHAT: &'static str = "pending source";

    fn key(&self) -> Key {
        keys::pending_source(&self.source)
    }

    fn rev(&self) -> u64 {
        self.rev
    }

    fn to_item(&self, rev: u64) -> StoreResult<Item> {
        let key = self.key();
        let latest = self.pending.values().copied().max().unwrap_or(0);
        Ok(ItemBuilder::new(&key)
            .s(SOURCE, self.source.as_str())
            .json("pending", &self.pending)?
            .n(TTL, ttl_seconds(latest))
            .n(REV, rev)
            .build())
    }

    fn from_item(item: &Item) -> StoreResult<Self> {
        let a = Attrs::new(item, Self::WHAT);
        Ok(Self {
            source: a.s(SOURCE)?,
            pending: a.json("pending")?,
            rev: a.opt_n(REV)?.unwrap_or(0),
        })
    }

    fn entries(&self) -> Vec<Entry> {
        Vec::new()
    }
}

// ---- connections ----

const PRINCIPAL_USER: &str = "user";
const PRINCIPAL_WORKER: &str = "worker";

/// A connection record and the sessions it watches.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ConnRecord {
    pub conn: Connection,
    pub watching: BTreeSet<String>,
    pub rev: u64,
}

impl ConnRecord {
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
            watching: BTreeSet::new(),
            rev: 0,
        }
    }
}

impl Entity for ConnRecord {
    const WHAT: &'static str = "connection";

    fn key(&self) -> Key {
        keys::connection(self.conn.id.as_str())
    }

    fn rev(&self) -> u64 {
        self.rev
    }

    fn to_item(&self, rev: u64) -> StoreResult<Item> {
        let c = &self.conn;
        let key = self.key();
        let (kind, principal) = match &c.principal {
            Principal::User(u) => (PRINCIPAL_USER, u.as_str()),
            Principal::Worker(w) => (PRINCIPAL_WORKER, w.as_str()),
        };
        Ok(ItemBuilder::new(&key)
            .s("id", c.id.as_str())
            .s("principal_kind", kind)
            .s("principal_id", principal)
            .opt_s(OWNER, c.owner.as_ref().map(UserId::as_str))
            .n("connected_at", c.connected_at)
            .n(LAST_SEEN, c.last_seen)
            .expiry(&key, c.expires_at, true)
            .ss(WATCHING, &self.watching)
            .n(REV, rev)
            .build())
    }

    fn from_item(item: &Item) -> StoreResult<Self> {
        let a = Attrs::new(item, Self::WHAT);
        let principal = match a.s("principal_kind")?.as_str() {
            PRINCIPAL_USER => Principal::User(a.id("principal_id")?),
            PRINCIPAL_WORKER => Principal::Worker(a.id("principal_id")?),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "connection attribute principal_kind: unknown value {other:?}"
                )))
            }
        };
        Ok(Self {
            conn: Connection {
                id: a.id("id")?,
                principal,
                owner: a.opt_id(OWNER)?,
                connected_at: a.n("connected_at")?,
                last_seen: a.n(LAST_SEEN)?,
                expires_at: a.n(EXPIRES_AT)?,
            },
            watching: a.ss(WATCHING)?,
            rev: a.opt_n(REV)?.unwrap_or(0),
        })
    }

    fn entries(&self) -> Vec<Entry> {
        let c = &self.conn;
        let id = c.id.as_str();
        let principal = match &c.principal {
            Principal::User(u) => {
                let key = keys::user_connection(u.as_str(), id);
                entry(key.clone(), id).expiry(&key, c.expires_at, false)
            }
            Principal::Worker(w) => {
                // `expires_at` lets `connection_count` skip expired ones
                // (entries written before it was added are not counted).
                let key = keys::worker_connection(w.as_str(), id);
                entry(key.clone(), id).expiry(&key, c.expires_at, false)
            }
        };
        let mut out = vec![plain(principal)];
        out.extend(
            self.watching.iter().map(|sid| {
                plain(entry(keys::watch(sid, id), id).n(TTL, ttl_seconds(c.expires_at)))
            }),
        );
        out
    }
}

// ---- sessions ----

impl Entity for Rec<Session> {
    const WHAT: &'static str = "session";

    fn key(&self) -> Key {
        keys::session(self.value.id.as_str())
    }

    fn rev(&self) -> u64 {
        self.rev
    }

    fn to_item(&self, rev: u64) -> StoreResult<Item> {
        let x = &self.value;
        Ok(ItemBuilder::new(&self.key())
            .s("id", x.id.as_str())
            .s(OWNER, x.owner.as_str())
            .s("worker", x.worker.as_str())
            .json("model", &x.model)?
            .s(TITLE, x.title.as_str())
            .opt_s(TITLE_SOURCE, x.title_source.map(TitleSource::as_str))
            .s(STATUS, x.status.as_str())
            .opt_s("agent_session_id", x.agent_session_id.as_deref())
            .opt_s("error", x.error.as_deref())
            .n("message_count", x.message_count)
            .n("created_at", x.created_at)
            .n(UPDATED_AT, x.updated_at)
            .n(REV, rev)
            .build())
    }

    fn from_item(item: &Item) -> StoreResult<Self> {
        let a = Attrs::new(item, Self::WHAT);
        Ok(Rec {
            value: Session {
                id: a.id("id")?,
                owner: a.id(OWNER)?,
                worker: a.id("worker")?,
                model: a.json("model")?,
                title: a.s(TITLE)?,
                title_source: a.opt_parsed(TITLE_SOURCE, TitleSource::parse)?,
                status: a.parsed(STATUS, SessionStatus::parse)?,
                agent_session_id: a.opt_s("agent_session_id")?,
                error: a.opt_s("error")?,
                message_count: a.n("message_count")?,
                created_at: a.n("created_at")?,
                updated_at: a.n(UPDATED_AT)?,
            },
            rev: a.opt_n(REV)?.unwrap_or(0),
        })
    }

    fn entries(&self) -> Vec<Entry> {
        let x = &self.value;
        let (id, owner, worker) = (x.id.as_str(), x.owner.as_str(), x.worker.as_str());
        let mut out = vec![
            plain(entry(keys::owner_session(owner, x.created_at, id), id)),
            plain(entry(
                keys::owner_worker_session(owner, worker, x.created_at, id),
                id,
            )),
        ];
        if x.status == SessionStatus::Starting {
            out.push(plain(entry(
                keys::starting_session(worker, x.created_at, id),
                id,
            )));
        }
        out
    }
}

// ---- messages ----

/// A message and its session's creation time (the open entry's sort key
/// needs it, and a transition knows only the message).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct MessageRecord {
    pub message: Message,
    pub session_created: Millis,
    pub rev: u64,
}

impl Entity for MessageRecord {
    const WHAT: &'static str = "message";

    fn key(&self) -> Key {
        keys::message(self.message.id.as_str())
    }

    fn rev(&self) -> u64 {
        self.rev
    }

    fn to_item(&self, rev: u64) -> StoreResult<Item> {
        let m = &self.message;
        Ok(ItemBuilder::new(&self.key())
            .s("id", m.id.as_str())
            .s("session", m.session.as_str())
            .s(OWNER, m.owner.as_str())
            .s("worker", m.worker.as_str())
            .n("number", m.number)
            .s("text", m.text.as_str())
            .s(STATUS, m.status.as_str())
            .opt_n("chunk_count", m.chunk_count)
            .opt_s("error", m.error.as_deref())
            .n("created_at", m.created_at)
            .n(UPDATED_AT, m.updated_at)
            .n("session_created", self.session_created)
            .n(REV, rev)
            .build())
    }

    fn from_item(item: &Item) -> StoreResult<Self> {
        let a = Attrs::new(item, Self::WHAT);
        Ok(Self {
            message: Message {
                id: a.id("id")?,
                session: a.id("session")?,
                owner: a.id(OWNER)?,
                worker: a.id("worker")?,
                number: a.n("number")?,
                text: a.s("text")?,
                status: a.parsed(STATUS, MessageStatus::parse)?,
                chunk_count: a.opt_n("chunk_count")?,
                error: a.opt_s("error")?,
                created_at: a.n("created_at")?,
                updated_at: a.n(UPDATED_AT)?,
            },
            session_created: a.n("session_created")?,
            rev: a.opt_n(REV)?.unwrap_or(0),
        })
    }

    fn entries(&self) -> Vec<Entry> {
        let m = &self.message;
        let (id, sid) = (m.id.as_str(), m.session.as_str());
        let mut out = vec![unique(entry(keys::session_message(sid, m.number), id))];
        if !m.status.is_final() {
            out.push(plain(entry(
                keys::open_message(m.worker.as_str(), self.session_created, sid, m.number),
                id,
            )));
        }
        out
    }
}

// ---- prompts ----

impl Entity for Rec<Prompt> {
    const WHAT: &'static str = "prompt";

    fn key(&self) -> Key {
        keys::prompt(self.value.id.as_str())
    }

    fn rev(&self) -> u64 {
        self.rev
    }

    fn to_item(&self, rev: u64) -> StoreResult<Item> {
        let p = &self.value;
        Ok(ItemBuilder::new(&self.key())
            .s("id", p.id.as_str())
            .s("session", p.session.as_str())
            .s("message", p.message.as_str())
            .s("worker", p.worker.as_str())
            .s(OWNER, p.owner.as_str())
            .s("kind", p.kind.as_str())
            .opt_json("answer", p.answer.as_ref())?
            .b("delivered", p.delivered)
            .n("created_at", p.created_at)
            .n(REV, rev)
            .build())
    }

    fn from_item(item: &Item) -> StoreResult<Self> {
        let a = Attrs::new(item, Self::WHAT);
        Ok(Rec {
            value: Prompt {
                id: a.id("id")?,
                session: a.id("session")?,
                message: a.id("message")?,
                worker: a.id("worker")?,
                owner: a.id(OWNER)?,
                kind: a.parsed("kind", PromptKind::parse)?,
                answer: a.opt_json("answer")?,
                delivered: a.b("delivered")?,
                created_at: a.n("created_at")?,
            },
            rev: a.opt_n(REV)?.unwrap_or(0),
        })
    }

    fn entries(&self) -> Vec<Entry> {
        let p = &self.value;
        if p.answer.is_some() && !p.delivered {
            let id = p.id.as_str();
            vec![plain(entry(
                keys::undelivered_prompt(p.worker.as_str(), p.created_at, id),
                id,
            ))]
        } else {
            Vec::new()
        }
    }
}

// ---------------------------------------------------------------------------
// Plain items
// ---------------------------------------------------------------------------

pub(super) fn ticket_item(hash: &SecretHash, ticket: &Ticket) -> Item {
    let key = keys::ticket(hash.as_str());
    ItemBuilder::new(&key)
        .s("user", ticket.user.as_str())
        .s("user_secret", ticket.user_secret.as_str())
        .expiry(&key, ticket.expires_at, true)
        .build()
}

/// A ticket read back. One written before tickets carried the secret hash
/// (a minute's worth, at an upgrade) reads with an empty one, which no
/// user has: it is refused.
pub(super) fn ticket_from_item(item: &Item) -> StoreResult<Ticket> {
    let a = Attrs::new(item, "ticket");
    Ok(Ticket {
        user: a.id("user")?,
        user_secret: SecretHash::from_stored(a.opt_s("user_secret")?.unwrap_or_default()),
        expires_at: a.n(EXPIRES_AT)?,
    })
}

pub(super) fn pairing_token_item(hash: &SecretHash, token: &PairingToken) -> Item {
    let key = keys::pairing_token(hash.as_str());
    ItemBuilder::new(&key)
        .s(OWNER, token.owner.as_str())
        .s("owner_secret", token.owner_secret.as_str())
        .expiry(&key, token.expires_at, true)
        .build()
}

pub(super) fn pairing_token_from_item(item: &Item) -> StoreResult<PairingToken> {
    let a = Attrs::new(item, "pairing token");
    Ok(PairingToken {
        owner: a.id(OWNER)?,
        owner_secret: SecretHash::from_stored(a.s("owner_secret")?),
        expires_at: a.n(EXPIRES_AT)?,
    })
}

/// A rate-limit counter starting a window with one attempt.
pub(super) fn counter_item(key: &str, window_start: Millis, window_end: Millis) -> Item {
    let key = keys::rate_counter(key);
    ItemBuilder::new(&key)
        .n(WINDOW_START, window_start)
        .n(COUNT, 1)
        .expiry(&key, window_end, true)
        .n(REV, 1)
        .build()
}

pub(super) fn chunk_item(c: &Chunk) -> StoreResult<Item> {
    Ok(ItemBuilder::new(&keys::chunk(c.message.as_str(), c.seq))
        .s("message", c.message.as_str())
        .n("seq", c.seq)
        .json("body", &c.body)?
        .n("created_at", c.created_at)
        .build())
}

pub(super) fn chunk_from_item(item: &Item) -> StoreResult<Chunk> {
    let a = Attrs::new(item, "chunk");
    Ok(Chunk {
        message: a.id("message")?,
        seq: a.n("seq")?,
        body: a.json("body")?,
        created_at: a.n("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_domain::ids::{ConnectionId, MessageId, PromptId, SessionId, WorkerId};
    use tether_domain::protocol::{ChunkBody, ModelInfo, ModelRef, PromptAnswer};

    const T0: Millis = 1_700_000_000_000;

    fn model() -> ModelRef {
        ModelRef {
            provider_id: "anthropic".into(),
            model_id: "claude".into(),
        }
    }

    fn round_trip<E: Entity + PartialEq + std::fmt::Debug>(e: E) {
        let item = e.to_item(e.rev()).expect("encode");
        assert_eq!(E::from_item(&item).expect("decode"), e);
    }

    fn user() -> User {
        User {
            id: UserId::random(),
            name: "alice".into(),
            secret_hash: SecretHash::from_stored("h1"),
            admin: true,
            created_at: T0,
        }
    }

    fn worker(full: bool) -> Worker {
        Worker {
            id: WorkerId::random(),
            owner: full.then(UserId::random),
            status: WorkerStatus::Pending,
            credential_hash: SecretHash::from_stored("c1"),
            machine: "m".into(),
            name: "n".into(),
            workdir: "/w".into(),
            pairing_code: full.then(|| "AAAA-BBBB".into()),
            pairing_expires_at: full.then_some(T0 + 5),
            connection: full.then(ConnectionId::random),
            last_seen: full.then_some(T0 + 1),
            models: if full {
                vec![ModelInfo {
                    provider_id: "p".into(),
                    model_id: "m".into(),
                    name: "M".into(),
                    reasoning: None,
                    context_limit: Some(7),
                }]
            } else {
                Vec::new()
            },
            default_model: full.then(model),
            version: full.then(|| "1".into()),
            agent: full.then(|| AgentReport {
                state: AgentState::Down,
                reason: Some("opencode exited".into()),
                at: T0 + 2,
            }),
            source: full.then(|| "203.0.113.7".into()),
            created_at: -5,
        }
    }

    #[test]
    fn entities_round_trip() {
        round_trip(Rec {
            value: user(),
            rev: 3,
        });
        round_trip(Rec {
            value: worker(true),
            rev: 1,
        });
        round_trip(Rec {
            value: worker(false),
            rev: 0,
        });
        let conn = Connection {
            id: ConnectionId::random(),
            principal: Principal::Worker(WorkerId::random()),
            owner: Some(UserId::random()),
            connected_at: T0,
            last_seen: T0 + 1,
            expires_at: T0 + 2,
        };
        round_trip(ConnRecord {
            conn: conn.clone(),
            watching: ["a".to_owned(), "b".to_owned()].into(),
            rev: 4,
        });
        round_trip(ConnRecord::new(Connection {
            principal: Principal::User(UserId::random()),
            owner: None,
            ..conn
        }));
        let session = Session {
            id: SessionId::random(),
            owner: UserId::random(),
            worker: WorkerId::random(),
            model: model(),
            title: "t".into(),
            title_source: Some(TitleSource::Agent),
            status: SessionStatus::Busy,
            agent_session_id: Some("ses".into()),
            error: Some("e".into()),
            message_count: 3,
            created_at: T0,
            updated_at: T0 + 1,
        };
        round_trip(Rec {
            value: session,
            rev: 2,
        });
        let message = Message {
            id: MessageId::random(),
            session: SessionId::random(),
            owner: UserId::random(),
            worker: WorkerId::random(),
            number: 4,
            text: "hi".into(),
            status: MessageStatus::Complete,
            chunk_count: Some(0),
            error: Some(String::new()),
            created_at: T0,
            updated_at: T0,
        };
        round_trip(MessageRecord {
            message,
            session_created: T0 - 1,
            rev: 9,
        });
        let prompt = Prompt {
            id: PromptId::random(),
            session: SessionId::random(),
            message: MessageId::random(),
            worker: WorkerId::random(),
            owner: UserId::random(),
            kind: PromptKind::Question,
            answer: Some(PromptAnswer::QuestionRejected),
            delivered: false,
            created_at: T0,
        };
        round_trip(Rec {
            value: prompt,
            rev: 1,
        });
    }

    #[test]
    fn plain_items_round_trip() {
        let chunk = Chunk {
            message: MessageId::random(),
            seq: 7,
            body: ChunkBody::Text {
                part_id: "p".into(),
                delta: "d".into(),
            },
            created_at: T0,
        };
        let item = chunk_item(&chunk).expect("encode");
        assert_eq!(chunk_from_item(&item).expect("decode"), chunk);
        let ticket = Ticket {
            user: UserId::random(),
            user_secret: SecretHash::from_stored("s"),
            expires_at: T0,
        };
        let item = ticket_item(&SecretHash::from_stored("t"), &ticket);
        assert_eq!(ticket_from_item(&item).expect("decode"), ticket);
    }

    #[test]
    fn entries_follow_state() {
        let mut w = Rec::new(worker(true));
        let all: Vec<String> = w.entries().iter().map(|e| e.key.pk.clone()).collect();
        assert_eq!(all.len(), 4, "{all:?}");
        w.value.status = WorkerStatus::Approved;
        w.value.pairing_code = None;
        assert_eq!(w.entries().len(), 2, "credential and owner");
        assert!(w.entries()[0].unique);
    }

    #[test]
    fn a_pending_worker_expires_with_its_code() {
        let pending = Rec::new(Worker {
            owner: None,
            ..worker(true)
        });
        let item = pending.to_item(1).expect("encode");
        assert_eq!(item.get(TTL), Some(&n(ttl_seconds(T0 + 5))));
        assert!(item.contains_key(EXPIRY_SHARD), "the purge finds it");
        for e in pending.entries() {
            assert_eq!(
                e.item.get(TTL),
                Some(&n(ttl_seconds(T0 + 5))),
                "{:?}",
                e.key
            );
            assert!(!e.item.contains_key(EXPIRY_SHARD), "{:?}", e.key);
        }
        let approved = Rec::new(Worker {
            status: WorkerStatus::Approved,
            pairing_code: None,
            pairing_expires_at: None,
            ..worker(true)
        });
        let item = approved.to_item(2).expect("encode");
        assert!(!item.contains_key(TTL) && !item.contains_key(EXPIRY_SHARD));
        assert!(approved.entries().iter().all(|e| !e.item.contains_key(TTL)));

        let source = SourceRecord {
            source: "2001:db8::/64".into(),
            pending: [("wkr_a".to_owned(), T0), ("wkr_b".to_owned(), T0 + 9)].into(),
            rev: 4,
        };
        round_trip(source.clone());
        let item = source.to_item(4).expect("encode");
        assert_eq!(
            item.get(TTL),
            Some(&n(ttl_seconds(T0 + 9))),
            "outlives its last worker"
        );
    }

    #[test]
    fn pairing_tokens_and_counters_expire() {
        let token = PairingToken {
            owner: UserId::random(),
            owner_secret: SecretHash::from_stored("s"),
            expires_at: T0,
        };
        let item = pairing_token_item(&SecretHash::from_stored("h"), &token);
        assert_eq!(pairing_token_from_item(&item).expect("decode"), token);
        assert!(item.contains_key(TTL) && item.contains_key(EXPIRY_SHARD));
        let counter = counter_item("pairing:usr_1", T0, T0 + 60_000);
        assert_eq!(counter.get(COUNT), Some(&n(1)));
        assert_eq!(counter.get(EXPIRES_AT), Some(&n(T0 + 60_000)));
        assert!(counter.contains_key(TTL) && counter.contains_key(EXPIRY_SHARD));
    }

    #[test]
    fn ttl_rounds_up_to_seconds() {
        assert_eq!(ttl_seconds(1_000), 1);
        assert_eq!(ttl_seconds(1_001), 2);
        assert_eq!(ttl_seconds(0), 0);
        assert_eq!(ttl_seconds(-1), 0);
    }

    /// Messages written before completions stopped carrying text may still
    /// have a `final_text` attribute: it is read past, and never written.
    #[test]
    fn a_message_item_with_an_old_final_text_reads_without_it() {
        let record = MessageRecord {
            message: Message {
                id: MessageId::random(),
                session: SessionId::random(),
                owner: UserId::random(),
                worker: WorkerId::random(),
                number: 0,
                text: "hi".into(),
                status: MessageStatus::Complete,
                chunk_count: Some(2),
                error: None,
                created_at: T0,
                updated_at: T0 + 1,
            },
            session_created: T0 - 1,
            rev: 3,
        };
        let mut item = record.to_item(3).expect("encode");
        assert!(!item.contains_key("final_text"), "not written");
        item.insert("final_text".into(), s("Hello there"));
        assert_eq!(MessageRecord::from_item(&item).expect("decode"), record);
    }

    #[test]
    fn a_corrupt_attribute_is_reported() {
        let mut item = Rec::new(user()).to_item(1).expect("encode");
        item.insert("admin".into(), s("yes"));
        match Rec::<User>::from_item(&item) {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains("admin"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
