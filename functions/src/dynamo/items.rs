//! Item mapping: each entity as its item and its entries (see
//! `infra/ACCESS_PATTERNS.md`, section 2), and the plain items (tickets,
//! pairing tokens, rate counters, chunks) that have no entries.

use std::collections::{BTreeMap, BTreeSet};

use tether_domain::auth::SecretHash;
use tether_domain::ids::UserId;
use tether_domain::model::{
    Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Principal, PrincipalKind,
    Prompt, PromptKind, Session, SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
use tether_domain::store::{StoreError, StoreResult};

use super::codec::{
    entry, plain, ttl_seconds, unique, Attrs, Entity, Entry, Item, ItemBuilder, Rec, AGENT_AT,
    AGENT_REASON, AGENT_STATE, CONNECTION, COUNT, EXPIRES_AT, LAST_SEEN, OWNER, REV, SOURCE,
    STATUS, TITLE, TITLE_SOURCE, TTL, UPDATED_AT, WATCHING, WINDOW_START,
};
use super::keys::{self, Key};

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

const PRINCIPAL_USER: &str = PrincipalKind::User.as_str();
const PRINCIPAL_WORKER: &str = PrincipalKind::Worker.as_str();

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
            .opt_json("model", m.model.as_ref())?
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
                model: a.opt_json("model")?,
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
