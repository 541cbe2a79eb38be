//! Sessions.

use tether_domain::ids::{SessionId, UserId, WorkerId};
use tether_domain::model::{Millis, Session, SessionStatus, TitleSource};
use tether_domain::store::{Capped, Inserted, SessionPatch, StoreResult};

use super::codec::{self, Entity, Rec, LIVE_SESSIONS, PK, STATUS, TITLE, TITLE_SOURCE, UPDATED_AT};
use super::keys;
use super::ops::{QuerySpec, Update};
use super::tx::{status_in, Cond, Decided, Outcome, Tx};
use super::{DynamoStore, Retry};

pub(super) async fn insert_session(
    store: &DynamoStore,
    session: &Session,
    max_live: u32,
) -> StoreResult<Capped<Session>> {
    const OP: &str = "insert_session";
    let new = Rec::new(session.clone());
    let mut retry = Retry::new(OP);
    loop {
        // The session, its entries and (if it is live) the owner's count
        // of live sessions, conditional on the count being below the cap.
        let mut tx = Tx::default();
        let placed = tx.entity(None, Some(&new))?;
        let counts = keys::user_counts(session.owner.as_str());
        let counted = (!session.status.is_closed())
            .then(|| tx.count(counts, LIVE_SESSIONS, 1, Some(max_live)));
        let outcome = store.commit(OP, tx).await?;
        if let Outcome::Done = outcome {
            return Ok(Inserted::New(session.clone()).into());
        }
        if outcome.failed(placed.item) || outcome.failed(counted) {
            // A stored id answers a retry whatever the count.
            if let Some(stored) = store.get_entity::<Rec<Session>>(OP, &new.key()).await? {
                return Ok(Inserted::Existing(stored.value).into());
            }
            if outcome.failed(counted) {
                return Ok(Capped::Full);
            }
        }
        retry.again().await?;
    }
}

pub(super) async fn session(store: &DynamoStore, id: &SessionId) -> StoreResult<Option<Session>> {
    Ok(store
        .get_entity::<Rec<Session>>("session", &keys::session(id.as_str()))
        .await?
        .map(|r| r.value))
}

pub(super) async fn sessions_of(
    store: &DynamoStore,
    owner: &UserId,
    worker: Option<&WorkerId>,
    before: Option<Millis>,
    limit: u32,
) -> StoreResult<Vec<Session>> {
    const OP: &str = "sessions_of";
    let pk = keys::user_pk(owner.as_str());
    let prefix = match worker {
        Some(w) => keys::owner_worker_session_prefix(w.as_str()),
        None => keys::SESSION_ENTRY.to_owned(),
    };
    // `<prefix><before>` sorts before every `<prefix><before>#<sid>`, so
    // the inclusive BETWEEN still excludes `before` itself.
    let q = match before {
        Some(b) => QuerySpec::between(&pk, &prefix, &format!("{prefix}{}", keys::time(b))),
        None => QuerySpec::prefix(&pk, &prefix),
    }
    .descending()
    .limit(limit);
    let ids = store.query_targets(OP, q).await?;
    let keys = ids.iter().map(|id| keys::session(id)).collect();
    let sessions = store.get_many::<Rec<Session>>(OP, keys).await?;
    Ok(sessions.into_iter().map(|r| r.value).collect())
}

pub(super) async fn starting_sessions(
    store: &DynamoStore,
    worker: &WorkerId,
) -> StoreResult<Vec<Session>> {
    const OP: &str = "starting_sessions";
    let q = QuerySpec::prefix(&keys::worker_pk(worker.as_str()), keys::STARTING_ENTRY);
    let ids = store.query_targets(OP, q).await?;
    let keys = ids.iter().map(|id| keys::session(id)).collect();
    let sessions = store.get_many::<Rec<Session>>(OP, keys).await?;
    Ok(sessions.into_iter().map(|r| r.value).collect())
}

pub(super) async fn transition_session(
    store: &DynamoStore,
    id: &SessionId,
    from: &[SessionStatus],
    to: SessionStatus,
    patch: &SessionPatch,
    now: Millis,
) -> StoreResult<Option<Session>> {
    const OP: &str = "transition_session";
    if from.is_empty() {
        return Ok(None);
    }
    let key = keys::session(id.as_str());
    let starting = SessionStatus::Starting;
    let closing = from.iter().any(|s| s.is_closed() != to.is_closed());
    if !from.contains(&starting) && to != starting && !closing {
        // The starting entry and the owner's count of live sessions stay
        // as they are: one conditional update.
        let statuses: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        let u = Update::new(key, status_in(&statuses))
            .set(STATUS, codec::s(to.as_str()))
            .set(UPDATED_AT, codec::n(now))
            .set_opt(
                "agent_session_id",
                patch.agent_session_id.as_deref().map(codec::s),
            )
            .set_opt("error", patch.error.as_deref().map(codec::s));
        return match store.update(OP, u).await? {
            Some(item) => Ok(Some(Rec::<Session>::from_item(&item)?.value)),
            None => Ok(None),
        };
    }
    let mut retry = Retry::new(OP);
    loop {
        let Some(old) = store.get_entity::<Rec<Session>>(OP, &key).await? else {
            return Ok(None);
        };
        if !from.contains(&old.value.status) {
            return Ok(None);
        }
        let s = &old.value;
        let new = Rec {
            value: Session {
                status: to,
                agent_session_id: patch
                    .agent_session_id
                    .clone()
                    .or_else(|| s.agent_session_id.clone()),
                error: patch.error.clone().or_else(|| s.error.clone()),
                updated_at: now,
                ..s.clone()
            },
            rev: old.rev,
        };
        let delta = i64::from(!to.is_closed()) - i64::from(!s.status.is_closed());
        let counts = keys::user_counts(s.owner.as_str());
        match store
            .replace_counted(OP, &old, &new, counts, LIVE_SESSIONS, delta)
            .await?
        {
            Decided::Done => return Ok(Some(new.value)),
            Decided::Retry | Decided::Conflict => retry.again().await?,
        }
    }
}

pub(super) async fn set_agent_title(
    store: &DynamoStore,
    id: &SessionId,
    title: &str,
    now: Millis,
) -> StoreResult<Option<Session>> {
    // The title is in no entry: one conditional update of the item.
    let cond = Cond::new(
        "attribute_exists(#c_pk) AND (attribute_not_exists(#c_src) OR #c_src = :c_agent)",
    )
    .name("#c_pk", PK)
    .name("#c_src", TITLE_SOURCE)
    .value(":c_agent", codec::s(TitleSource::Agent.as_str()));
    let u = Update::new(keys::session(id.as_str()), cond)
        .set(TITLE, codec::s(title))
        .set(TITLE_SOURCE, codec::s(TitleSource::Agent.as_str()))
        .set(UPDATED_AT, codec::n(now));
    match store.update("set_agent_title", u).await? {
        Some(item) => Ok(Some(Rec::<Session>::from_item(&item)?.value)),
        None => Ok(None),
    }
}
