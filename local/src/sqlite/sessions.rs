//! Sessions.

use rusqlite::params;
use tether_domain::ids::{SessionId, UserId, WorkerId};
use tether_domain::model::{Millis, Session, SessionStatus, TitleSource};
use tether_domain::store::{Capped, Inserted, SessionPatch, StoreResult};

use super::rows::{session_row, to_json};
use super::sql::{self, all, commit, count, exec, immediate, one, status_set};
use super::SqliteStore;

/// `before = None` pages from the newest session.
const NO_UPPER_BOUND: Millis = Millis::MAX;

pub(super) async fn insert_session(
    store: &SqliteStore,
    session: &Session,
    max_live: u32,
) -> StoreResult<Capped<Session>> {
    let s = session.clone();
    store
        .run("insert_session", move |conn| {
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

pub(super) async fn session(store: &SqliteStore, id: &SessionId) -> StoreResult<Option<Session>> {
    let id = id.clone();
    store
        .run_read("session", move |conn| {
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

pub(super) async fn sessions_of(
    store: &SqliteStore,
    owner: &UserId,
    worker: Option<&WorkerId>,
    before: Option<Millis>,
    limit: u32,
) -> StoreResult<Vec<Session>> {
    let owner = owner.clone();
    let worker = worker.cloned();
    let before = before.unwrap_or(NO_UPPER_BOUND);
    store
        .run_read("sessions_of", move |conn| match &worker {
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

pub(super) async fn starting_sessions(
    store: &SqliteStore,
    worker: &WorkerId,
) -> StoreResult<Vec<Session>> {
    let worker = worker.clone();
    store
        .run_read("starting_sessions", move |conn| {
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

pub(super) async fn transition_session(
    store: &SqliteStore,
    id: &SessionId,
    from: &[SessionStatus],
    to: SessionStatus,
    patch: &SessionPatch,
    now: Millis,
) -> StoreResult<Option<Session>> {
    let id = id.clone();
    let from = status_set(from, SessionStatus::as_str)?;
    let patch = patch.clone();
    store
        .run("transition_session", move |conn| {
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

pub(super) async fn set_agent_title(
    store: &SqliteStore,
    id: &SessionId,
    title: &str,
    now: Millis,
) -> StoreResult<Option<Session>> {
    let id = id.clone();
    let title = title.to_owned();
    store
        .run("set_agent_title", move |conn| {
            let p = params![id.as_str(), title, now];
            one(
                conn,
                "set_agent_title",
                &sql::SET_AGENT_TITLE,
                p,
                session_row,
            )
        })
        .await
}
