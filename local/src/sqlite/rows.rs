//! Row mapping. Each `*_COLS` list is the column order its `*_row` reads;
//! a value that does not decode becomes a conversion error, which the store
//! reports as `Corrupt`.

use std::error::Error as StdError;

use rusqlite::types::Type;
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tether_domain::auth::SecretHash;
use tether_domain::ids::IdError;
use tether_domain::model::{
    AgentState, Chunk, Connection, Message, MessageStatus, Principal, PrincipalKind, Prompt, PromptKind, Session,
    SessionStatus, TitleSource, User, Worker, WorkerStatus,
};
use tether_domain::protocol::AgentReport;
use tether_domain::store::{StoreError, StoreResult};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

fn bad(idx: usize, e: impl Into<BoxError>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into())
}

fn id<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr<Err = IdError>,
{
    let s: String = row.get(idx)?;
    s.parse().map_err(|e| bad(idx, e))
}

fn opt_id<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T: std::str::FromStr<Err = IdError>,
{
    let s: Option<String> = row.get(idx)?;
    s.map(|s| s.parse().map_err(|e| bad(idx, e))).transpose()
}

fn json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| bad(idx, e))
}

fn opt_json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| bad(idx, e)))
        .transpose()
}

fn enum_col<T>(row: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    parse(&s).ok_or_else(|| bad(idx, format!("unknown value {s:?}")))
}

fn opt_enum_col<T>(
    row: &Row<'_>,
    idx: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| parse(&s).ok_or_else(|| bad(idx, format!("unknown value {s:?}"))))
        .transpose()
}

/// A worker's agent report from its three columns (state, reason, at),
/// starting at `idx`: all absent, or a state and a time.
fn agent_cols(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<AgentReport>> {
    let Some(state) = opt_enum_col(row, idx, AgentState::parse)? else {
        return Ok(None);
    };
    let at: Option<i64> = row.get(idx + 2)?;
    let at = at.ok_or_else(|| bad(idx + 2, "an agent state without its time"))?;
    Ok(Some(AgentReport {
        state,
        reason: row.get(idx + 1)?,
        at,
    }))
}

/// Encodes a value for a JSON column.
pub(super) fn to_json<T: Serialize>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("encode {what}: {e}")))
}

pub(super) const USER_COLS: &str = "id, name, secret_hash, admin, created_at";

pub(super) fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: id(row, 0)?,
        name: row.get(1)?,
        secret_hash: SecretHash::from_stored(row.get::<_, String>(2)?),
        admin: row.get(3)?,
        created_at: row.get(4)?,
    })
}

pub(super) const WORKER_COLS: &str = "id, owner, status, credential_hash, machine, name, \
     workdir, pairing_code, pairing_expires_at, connection, last_seen, models, default_model, \
     version, created_at, source, agent_state, agent_reason, agent_at";

pub(super) fn worker_row(row: &Row<'_>) -> rusqlite::Result<Worker> {
    Ok(Worker {
        id: id(row, 0)?,
        owner: opt_id(row, 1)?,
        status: enum_col(row, 2, WorkerStatus::parse)?,
        credential_hash: SecretHash::from_stored(row.get::<_, String>(3)?),
        machine: row.get(4)?,
        name: row.get(5)?,
        workdir: row.get(6)?,
        pairing_code: row.get(7)?,
        pairing_expires_at: row.get(8)?,
        connection: opt_id(row, 9)?,
        last_seen: row.get(10)?,
        models: json(row, 11)?,
        default_model: opt_json(row, 12)?,
        version: row.get(13)?,
        agent: agent_cols(row, 16)?,
        source: row.get(15)?,
        created_at: row.get(14)?,
    })
}

pub(super) const CONNECTION_COLS: &str =
    "id, principal_kind, principal_id, owner, connected_at, last_seen, expires_at";

pub(super) const PRINCIPAL_USER: &str = PrincipalKind::User.as_str();
pub(super) const PRINCIPAL_WORKER: &str = PrincipalKind::Worker.as_str();

/// A principal as its (kind, id) columns.
pub(super) fn principal_cols(p: &Principal) -> (&'static str, String) {
    match p {
        Principal::User(u) => (PRINCIPAL_USER, u.as_str().to_owned()),
        Principal::Worker(w) => (PRINCIPAL_WORKER, w.as_str().to_owned()),
    }
}

pub(super) fn connection_row(row: &Row<'_>) -> rusqlite::Result<Connection> {
    let kind: String = row.get(1)?;
    let principal = match kind.as_str() {
        PRINCIPAL_USER => Principal::User(id(row, 2)?),
        PRINCIPAL_WORKER => Principal::Worker(id(row, 2)?),
        other => return Err(bad(1, format!("unknown principal kind {other:?}"))),
    };
    Ok(Connection {
        id: id(row, 0)?,
        principal,
        owner: opt_id(row, 3)?,
        connected_at: row.get(4)?,
        last_seen: row.get(5)?,
        expires_at: row.get(6)?,
    })
}

pub(super) const SESSION_COLS: &str = "id, owner, worker, model, title, status, \
     agent_session_id, error, message_count, created_at, updated_at, title_source";

pub(super) fn session_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: id(row, 0)?,
        owner: id(row, 1)?,
        worker: id(row, 2)?,
        model: json(row, 3)?,
        title: row.get(4)?,
        title_source: opt_enum_col(row, 11, TitleSource::parse)?,
        status: enum_col(row, 5, SessionStatus::parse)?,
        agent_session_id: row.get(6)?,
        error: row.get(7)?,
        message_count: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

pub(super) const MESSAGE_COLS: &str = "id, session, owner, worker, number, text, status, \
     chunk_count, error, created_at, updated_at, model";

pub(super) fn message_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: id(row, 0)?,
        session: id(row, 1)?,
        owner: id(row, 2)?,
        worker: id(row, 3)?,
        number: row.get(4)?,
        text: row.get(5)?,
        status: enum_col(row, 6, MessageStatus::parse)?,
        chunk_count: row.get(7)?,
        error: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        model: opt_json(row, 11)?,
    })
}

pub(super) const CHUNK_COLS: &str = "message, seq, body, created_at";

pub(super) fn chunk_row(row: &Row<'_>) -> rusqlite::Result<Chunk> {
    Ok(Chunk {
        message: id(row, 0)?,
        seq: row.get(1)?,
        body: json(row, 2)?,
        created_at: row.get(3)?,
    })
}

pub(super) const PROMPT_COLS: &str =
    "id, session, message, worker, owner, kind, answer, delivered, created_at";

pub(super) fn prompt_row(row: &Row<'_>) -> rusqlite::Result<Prompt> {
    Ok(Prompt {
        id: id(row, 0)?,
        session: id(row, 1)?,
        message: id(row, 2)?,
        worker: id(row, 3)?,
        owner: id(row, 4)?,
        kind: enum_col(row, 5, PromptKind::parse)?,
        answer: opt_json(row, 6)?,
        delivered: row.get(7)?,
        created_at: row.get(8)?,
    })
}
