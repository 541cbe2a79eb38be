//! Contract checks of what a worker says of its agent: the agent's state
//! (the newest report stays, whatever order reports arrive in) and the
//! titles the agent gives sessions (never over the user's own).

use crate::ids::{SessionId, WorkerId};
use crate::model::{AgentState, SessionStatus, TitleSource, Worker, WorkerStatus};
use crate::protocol::AgentReport;
use crate::store::{SessionPatch, Store, WorkerProfile};

use super::{assert_new, race, seed, session, NO_CAP, T0};

fn report(state: AgentState, at: i64) -> AgentReport {
    AgentReport {
        state,
        reason: None,
        at,
    }
}

/// A report is stored when it is newer than the stored one (or none is
/// stored), and changes nothing else; an older or equal one changes
/// nothing. The report stays through the worker's other writes.
pub async fn agent_state_keeps_the_newest_report<S: Store>(s: S) {
    let seed = seed(&s).await;
    let id = &seed.worker.id;
    assert_eq!(s.worker(id).await.expect("get").expect("exists").agent, None);

    let starting = report(AgentState::Starting, T0 + 10);
    let stored = s.set_agent_state(id, &starting).await.expect("set").expect("stored");
    assert_eq!(stored.agent.as_ref(), Some(&starting));
    assert_eq!(
        stored,
        Worker {
            agent: Some(starting.clone()),
            ..seed.worker.clone()
        },
        "nothing else changes"
    );

    let older = AgentReport {
        reason: Some("late".into()),
        ..report(AgentState::Installing, T0 + 5)
    };
    assert_eq!(s.set_agent_state(id, &older).await.expect("set"), None, "older");
    let same_time = report(AgentState::Ready, T0 + 10);
    assert_eq!(s.set_agent_state(id, &same_time).await.expect("set"), None, "as old");
    assert_eq!(s.worker(id).await.expect("get").expect("exists").agent, Some(starting));

    let down = AgentReport {
        reason: Some("opencode exited (status 1); restarting it".into()),
        ..report(AgentState::Down, T0 + 20)
    };
    let stored = s.set_agent_state(id, &down).await.expect("set").expect("newer");
    assert_eq!(stored.agent.as_ref(), Some(&down));
    // A report without a reason clears the one before.
    let ready = report(AgentState::Ready, T0 + 30);
    let stored = s.set_agent_state(id, &ready).await.expect("set").expect("newer");
    assert_eq!(stored.agent.as_ref(), Some(&ready), "the old reason is gone");

    assert_eq!(
        s.set_agent_state(&WorkerId::random(), &report(AgentState::Ready, T0)).await.expect("set"),
        None,
        "no such worker"
    );

    // The worker's other writes keep it.
    s.set_worker_profile(
        id,
        &WorkerProfile {
            version: Some("0.2.0".into()),
            ..WorkerProfile::default()
        },
    )
    .await
    .expect("profile");
    s.touch_worker(id, T0 + 40).await.expect("touch");
    let revoked = s
        .transition_worker(id, WorkerStatus::Approved, WorkerStatus::Revoked, None, None)
        .await
        .expect("revoke")
        .expect("was approved");
    assert_eq!(revoked.agent.as_ref(), Some(&ready));
    assert_eq!(s.worker(id).await.expect("get").expect("exists").agent, Some(ready));
}

/// Racing reports: the newest is what stays.
pub async fn concurrent_agent_reports_keep_the_newest<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let id = seed.worker.id.clone();
    let states = [AgentState::Installing, AgentState::Starting, AgentState::Ready, AgentState::Down];
    race(&s, 8, |s, i| {
        let (id, r) = (id.clone(), report(states[i % 4], T0 + i as i64));
        async move { s.set_agent_state(&id, &r).await.expect("set") }
    })
    .await;
    let stored = s.worker(&id).await.expect("get").expect("exists");
    assert_eq!(stored.agent, Some(report(states[7 % 4], T0 + 7)));
}

/// The agent's title replaces an empty or agent-given title, never the
/// user's; it stays through the session's transitions.
pub async fn agent_titles_never_replace_the_users<S: Store>(s: S) {
    let seed = seed(&s).await;
    let untitled = assert_new(
        s.insert_session(
            &crate::model::Session {
                title: String::new(),
                title_source: None,
                ..session(&seed.user.id, &seed.worker.id, T0)
            },
            NO_CAP,
        )
        .await
        .expect("insert"),
    );
    assert_eq!(s.session(&untitled.id).await.expect("get"), Some(untitled.clone()), "round trip");

    let titled = s
        .set_agent_title(&untitled.id, "Fix the parser", T0 + 5)
        .await
        .expect("title")
        .expect("untitled takes it");
    assert_eq!(titled.title, "Fix the parser");
    assert_eq!(titled.title_source, Some(TitleSource::Agent));
    assert_eq!(titled.updated_at, T0 + 5);
    assert_eq!(
        titled,
        crate::model::Session {
            title: "Fix the parser".into(),
            title_source: Some(TitleSource::Agent),
            updated_at: T0 + 5,
            ..untitled.clone()
        },
        "nothing else changes"
    );
    let again = s
        .set_agent_title(&untitled.id, "Fix the parser's errors", T0 + 6)
        .await
        .expect("title")
        .expect("the agent's own title may change");
    assert_eq!(again.title, "Fix the parser's errors");

    // Through its transitions, closing ones included.
    let none = SessionPatch::default();
    for (from, to) in [
        (SessionStatus::Starting, SessionStatus::Ready),
        (SessionStatus::Ready, SessionStatus::Busy),
        (SessionStatus::Busy, SessionStatus::Ended),
    ] {
        let moved = s
            .transition_session(&untitled.id, &[from], to, &none, T0 + 7)
            .await
            .expect("transition")
            .expect("moved");
        assert_eq!(
            (moved.title.as_str(), moved.title_source),
            ("Fix the parser's errors", Some(TitleSource::Agent))
        );
    }

    let users = assert_new(
        s.insert_session(&session(&seed.user.id, &seed.worker.id, T0 + 1), NO_CAP)
            .await
            .expect("insert"),
    );
    assert_eq!(users.title_source, Some(TitleSource::User));
    assert_eq!(
        s.set_agent_title(&users.id, "Something else", T0 + 8).await.expect("title"),
        None,
        "the user's title stands"
    );
    assert_eq!(s.session(&users.id).await.expect("get"), Some(users));
    assert_eq!(
        s.set_agent_title(&SessionId::random(), "Nothing", T0).await.expect("title"),
        None,
        "no such session"
    );
}
