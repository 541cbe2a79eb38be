//! Handler scenarios: the domain's actions driven frame by frame against a
//! store, with a recording push port. [`handler_scenarios`] runs them all,
//! as [`super::store_contract`] runs the contract: each adapter's tests call
//! it with their store, so the same rules hold on SQLite and on DynamoDB.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::error::ErrorCode;
use crate::fakes::RecordingPush;
use crate::handlers::{Config, Domain};
use crate::ids::{ConnectionId, MessageId, SessionId};
use crate::model::{AgentState, Millis, TitleSource, User, Worker};
use crate::protocol::{ModelRef, ServerFrame, WorkerView};
use crate::store::Store;

use super::{panic_text, user, user_connection, worker, worker_connection, T0};

/// Runs every scenario, each on a fresh store from `make` and in its own
/// task, and panics listing the ones that failed.
pub async fn handler_scenarios<S, F, Fut>(mut make: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let mut failed: Vec<String> = Vec::new();
    macro_rules! run {
        ($($scenario:ident),* $(,)?) => {$(
            let store = make().await;
            if let Err(e) = tokio::spawn($scenario(store)).await {
                failed.push(format!("{}: {}", stringify!($scenario), panic_text(e)));
            }
        )*};
    }
    run!(
        the_agents_state_is_stored_and_announced_to_the_owner,
        bad_agent_reports_are_refused_and_change_nothing,
        the_agent_names_a_session_its_user_left_untitled,
        the_agent_does_not_rename_a_session_its_user_titled,
        a_worker_cannot_title_another_workers_session,
        bad_titles_are_refused_and_change_nothing,
        a_message_sent_for_another_model_is_stored_and_dispatched_with_it,
        a_message_for_a_model_the_worker_does_not_offer_is_refused_and_not_stored,
    );
    assert!(
        failed.is_empty(),
        "{} handler scenario(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// A domain over `S` with default settings, and what it pushed.
struct Bed<S: Store> {
    domain: Domain<S, RecordingPush>,
    push: RecordingPush,
    ids: AtomicU64,
}

impl<S: Store> Bed<S> {
    fn new(store: S) -> Self {
        let push = RecordingPush::default();
        Self {
            domain: Domain::new(store, push.clone(), Config::default()),
            push,
            ids: AtomicU64::new(0),
        }
    }

    fn store(&self) -> &S {
        &self.domain.store
    }

    /// Sends a frame (adding its `id`) at `now`; the reply's data or its
    /// error code.
    async fn send(&self, conn: &ConnectionId, mut frame: Value, now: Millis) -> Result<Value, ErrorCode> {
        let id = format!("s{}", self.ids.fetch_add(1, Ordering::Relaxed));
        frame["id"] = json!(id);
        match self.domain.handle_frame(conn, &frame.to_string(), now).await {
            ServerFrame::Reply { ok: true, data, .. } => Ok(data.unwrap_or(Value::Null)),
            ServerFrame::Reply { error: Some(e), .. } => Err(e.code),
            other => panic!("not a reply: {other:?}"),
        }
    }

    async fn ok(&self, conn: &ConnectionId, frame: Value, now: Millis) -> Value {
        let action = frame["action"].clone();
        self.send(conn, frame, now)
            .await
            .unwrap_or_else(|code| panic!("{action} refused: {}", code.as_str()))
    }

    async fn refused(&self, conn: &ConnectionId, frame: Value, now: Millis) -> ErrorCode {
        let action = frame["action"].clone();
        match self.send(conn, frame, now).await {
            Ok(data) => panic!("{action} was accepted: {data}"),
            Err(code) => code,
        }
    }

    /// A user with a browser connection.
    async fn user(&self, name: &str) -> (User, ConnectionId) {
        let u = user(name);
        self.store().create_user(&u).await.expect("create user");
        let conn = user_connection(&u.id, T0);
        self.store().put_connection(&conn).await.expect("put connection");
        (u, conn.id)
    }

    /// An approved worker of `owner`, connected (it has not said hello).
    async fn worker(&self, owner: &User) -> (Worker, ConnectionId) {
        let w = worker(&owner.id);
        self.store().create_worker(&w).await.expect("create worker");
        let conn = worker_connection(&w, T0);
        self.store().put_connection(&conn).await.expect("put connection");
        self.store()
            .set_worker_connection(&w.id, &conn.id, T0)
            .await
            .expect("presence");
        let w = self.store().worker(&w.id).await.expect("get").expect("exists");
        (w, conn.id)
    }

    /// Takes what was pushed to `conn`.
    fn pushed(&self, conn: &ConnectionId) -> Vec<ServerFrame> {
        self.push.take(conn)
    }

    /// Takes what was pushed to `conn` and keeps the worker views.
    fn worker_updates(&self, conn: &ConnectionId) -> Vec<WorkerView> {
        self.pushed(conn)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::WorkerUpdated { worker } => Some(worker),
                _ => None,
            })
            .collect()
    }

    /// Takes what was pushed to `conn` and keeps the sessions' titles.
    fn title_updates(&self, conn: &ConnectionId) -> Vec<(String, Option<TitleSource>)> {
        self.pushed(conn)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::SessionUpdated { session } => Some((session.title, session.title_source)),
                _ => None,
            })
            .collect()
    }

    /// `session_start` on `worker` from `user` (with `title` if given); its id.
    async fn start(&self, user: &ConnectionId, worker: &Worker, title: Option<&str>) -> SessionId {
        let id = SessionId::random();
        let mut frame = json!({
            "action": "session_start",
            "session_id": id,
            "worker_id": worker.id,
            "model": {"provider_id": "anthropic", "model_id": "claude-sonnet-4"},
        });
        if let Some(t) = title {
            frame["title"] = json!(t);
        }
        self.ok(user, frame, T0 + 1).await;
        id
    }

    async fn stored_agent(&self, worker: &Worker) -> Option<crate::protocol::AgentReport> {
        self.store().worker(&worker.id).await.expect("get").expect("exists").agent
    }
}

fn agent_state(state: &str, reason: Option<&str>, at: Millis) -> Value {
    let mut frame = json!({"action": "agent_state", "state": state, "at": at});
    if let Some(r) = reason {
        frame["reason"] = json!(r);
    }
    frame
}

/// Installing, starting, ready (with the models, in a hello) and down, as
/// the worker says them: each is stored, in the worker's view and
/// announced to the owner's connections; a report older than the stored
/// one (frames reordered) changes nothing and is announced to nobody.
pub async fn the_agents_state_is_stored_and_announced_to_the_owner<S: Store>(s: S) {
    let bed = Bed::new(s);
    let (ada, browser) = bed.user("ada").await;
    let (w, agent) = bed.worker(&ada).await;
    let (_, other_browser) = bed.user("bob").await;
    // Before it says anything, nothing is known.
    let list = bed.ok(&browser, json!({"action": "machine_list"}), T0 + 1).await;
    assert!(list["machines"][0]["workers"][0].get("agent").is_none(), "{list}");

    let reply = bed.ok(&agent, agent_state("installing", None, T0 + 10), T0 + 10).await;
    assert_eq!(reply["worker"]["agent"]["state"], "installing", "{reply}");
    let seen = bed.worker_updates(&browser);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].agent.as_ref().map(|a| a.state), Some(AgentState::Installing));

    bed.ok(&agent, agent_state("starting", None, T0 + 20), T0 + 20).await;
    let seen = bed.worker_updates(&browser);
    assert_eq!(seen.iter().map(|w| w.agent.as_ref().map(|a| a.state)).collect::<Vec<_>>(), [Some(AgentState::Starting)]);

    // Ready comes with the models, in one hello.
    let hello = json!({
        "action": "worker_hello",
        "models": [{"provider_id": "fake", "model_id": "fake-model", "name": "Fake Model"}],
        "agent": {"state": "ready", "at": T0 + 30},
    });
    bed.ok(&agent, hello, T0 + 30).await;
    let seen = bed.worker_updates(&browser);
    let last = seen.last().expect("the hello is announced");
    assert_eq!(last.agent.as_ref().map(|a| a.state), Some(AgentState::Ready));
    assert_eq!(last.models.len(), 1);
    assert_eq!(last.models[0].model_id, "fake-model");

    // A late `starting` (sent before the hello, handled after it).
    let reply = bed.ok(&agent, agent_state("starting", None, T0 + 25), T0 + 31).await;
    assert_eq!(reply["worker"]["agent"]["state"], "ready", "the newer state stands: {reply}");
    assert_eq!(bed.stored_agent(&w).await.map(|a| a.state), Some(AgentState::Ready));
    assert!(bed.worker_updates(&browser).is_empty(), "a stale report is not announced");

    let why = "opencode exited (status 1); restarting it";
    bed.ok(&agent, agent_state("down", Some(why), T0 + 40), T0 + 40).await;
    let stored = bed.stored_agent(&w).await.expect("a report");
    assert_eq!((stored.state, stored.reason.as_deref(), stored.at), (AgentState::Down, Some(why), T0 + 40));
    let seen = bed.worker_updates(&browser);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].agent.as_ref().and_then(|a| a.reason.as_deref()), Some(why));
    let list = bed.ok(&browser, json!({"action": "machine_list"}), T0 + 41).await;
    assert_eq!(list["machines"][0]["workers"][0]["agent"]["state"], "down", "{list}");
    assert_eq!(list["machines"][0]["workers"][0]["agent"]["reason"], why);

    // The same state again (a reconnect's repeat) is stored, not announced.
    bed.ok(&agent, agent_state("down", Some(why), T0 + 41), T0 + 41).await;
    assert!(bed.worker_updates(&browser).is_empty());
    assert!(bed.pushed(&other_browser).is_empty(), "another user hears nothing");
}

/// An unknown state, an oversized or multi-line reason, a negative time:
/// each refused with `bad_request`; a user may not report a worker's state
/// (`forbidden`). None changes what is stored or is announced.
pub async fn bad_agent_reports_are_refused_and_change_nothing<S: Store>(s: S) {
    let bed = Bed::new(s);
    let (ada, browser) = bed.user("ada").await;
    let (w, agent) = bed.worker(&ada).await;
    bed.ok(&agent, agent_state("ready", None, T0 + 10), T0 + 10).await;
    bed.pushed(&browser);
    let before = bed.stored_agent(&w).await;
    assert!(before.is_some());

    let long = "x".repeat(crate::protocol::MAX_AGENT_REASON_BYTES + 1);
    let bad = [
        agent_state("sleeping", None, T0 + 20),
        agent_state("down", Some(&long), T0 + 20),
        agent_state("down", Some("two\nlines"), T0 + 20),
        agent_state("down", Some("why"), -1),
        json!({"action": "agent_state", "state": "down", "reason": "no time"}),
        json!({"action": "agent_state", "state": "down", "at": T0 + 20, "worker_id": w.id}),
    ];
    for frame in bad {
        let code = bed.refused(&agent, frame.clone(), T0 + 20).await;
        assert_eq!(code, ErrorCode::BadRequest, "{frame}");
    }
    let hello = json!({"action": "worker_hello", "agent": {"state": "down", "reason": long, "at": T0 + 20}});
    assert_eq!(bed.refused(&agent, hello, T0 + 20).await, ErrorCode::BadRequest);
    assert_eq!(
        bed.refused(&browser, agent_state("down", Some("a user says so"), T0 + 20), T0 + 20).await,
        ErrorCode::Forbidden
    );
    assert_eq!(bed.stored_agent(&w).await, before, "nothing changed");
    assert!(bed.pushed(&browser).is_empty(), "nothing announced");

    // Exactly at the bound is fine.
    let at_bound = "y".repeat(crate::protocol::MAX_AGENT_REASON_BYTES);
    bed.ok(&agent, agent_state("down", Some(&at_bound), T0 + 30), T0 + 30).await;
    assert_eq!(bed.stored_agent(&w).await.and_then(|a| a.reason), Some(at_bound));
}

/// A session started without a title takes the agent's, which every
/// connection of its owner hears of, and the session list shows.
pub async fn the_agent_names_a_session_its_user_left_untitled<S: Store>(s: S) {
    let bed = Bed::new(s);
    let (ada, browser) = bed.user("ada").await;
    let (w, agent) = bed.worker(&ada).await;
    let sid = bed.start(&browser, &w, None).await;
    let stored = bed.store().session(&sid).await.expect("get").expect("exists");
    assert_eq!((stored.title.as_str(), stored.title_source), ("", None));
    bed.pushed(&browser);

    let reply = bed
        .ok(&agent, json!({"action": "session_title", "session_id": sid, "title": "  Fix the parser "}), T0 + 50)
        .await;
    assert_eq!(reply["session"]["title"], "Fix the parser", "{reply}");
    assert_eq!(reply["session"]["title_source"], "agent");
    let stored = bed.store().session(&sid).await.expect("get").expect("exists");
    assert_eq!((stored.title.as_str(), stored.title_source), ("Fix the parser", Some(TitleSource::Agent)));
    assert_eq!(stored.updated_at, T0 + 50);
    assert_eq!(
        bed.title_updates(&browser),
        [("Fix the parser".to_owned(), Some(TitleSource::Agent))]
    );

    // The same title again changes nothing and is not announced; a new one is.
    bed.ok(&agent, json!({"action": "session_title", "session_id": sid, "title": "Fix the parser"}), T0 + 51).await;
    assert!(bed.title_updates(&browser).is_empty());
    bed.ok(&agent, json!({"action": "session_title", "session_id": sid, "title": "Fix the lexer"}), T0 + 52).await;
    assert_eq!(bed.title_updates(&browser), [("Fix the lexer".to_owned(), Some(TitleSource::Agent))]);

    let list = bed.ok(&browser, json!({"action": "session_list"}), T0 + 53).await;
    assert_eq!(list["sessions"][0]["title"], "Fix the lexer", "{list}");
}

/// A title the user gave at `session_start` stays: the agent's is taken
/// (the worker cannot know whose title opencode echoes) and dropped.
pub async fn the_agent_does_not_rename_a_session_its_user_titled<S: Store>(s: S) {
    let bed = Bed::new(s);
    let (ada, browser) = bed.user("ada").await;
    let (w, agent) = bed.worker(&ada).await;
    let sid = bed.start(&browser, &w, Some("Mine")).await;
    let before = bed.store().session(&sid).await.expect("get").expect("exists");
    assert_eq!(before.title_source, Some(TitleSource::User));
    bed.pushed(&browser);

    let reply = bed
        .ok(&agent, json!({"action": "session_title", "session_id": sid, "title": "The agent's"}), T0 + 50)
        .await;
    assert_eq!(reply["session"]["title"], "Mine", "{reply}");
    assert_eq!(bed.store().session(&sid).await.expect("get"), Some(before), "unchanged");
    assert!(bed.title_updates(&browser).is_empty(), "nothing announced");
}

/// A worker may title only its own sessions: another worker's (of the same
/// owner, or of someone else) is `not_found`, and stays as it was.
pub async fn a_worker_cannot_title_another_workers_session<S: Store>(s: S) {
    let bed = Bed::new(s);
    let (ada, browser) = bed.user("ada").await;
    let (mine, _) = bed.worker(&ada).await;
    let (_, sibling) = bed.worker(&ada).await;
    let (bob, _) = bed.user("bob").await;
    let (_, stranger) = bed.worker(&bob).await;
    let sid = bed.start(&browser, &mine, None).await;
    let before = bed.store().session(&sid).await.expect("get").expect("exists");
    bed.pushed(&browser);

    for intruder in [&sibling, &stranger] {
        let frame = json!({"action": "session_title", "session_id": sid, "title": "Hijacked"});
        assert_eq!(bed.refused(intruder, frame, T0 + 50).await, ErrorCode::NotFound);
    }
    // Nor may a user pose as the worker.
    let frame = json!({"action": "session_title", "session_id": sid, "title": "Mine now"});
    assert_eq!(bed.refused(&browser, frame, T0 + 50).await, ErrorCode::Forbidden);
    assert_eq!(bed.store().session(&sid).await.expect("get"), Some(before));
    assert!(bed.title_updates(&browser).is_empty());
}

/// An empty, oversized or multi-line title is `bad_request` and changes
/// nothing; the bound counts characters.
pub async fn bad_titles_are_refused_and_change_nothing<S: Store>(s: S) {
    let bed = Bed::new(s);
    let (ada, browser) = bed.user("ada").await;
    let (w, agent) = bed.worker(&ada).await;
    let sid = bed.start(&browser, &w, None).await;
    let before = bed.store().session(&sid).await.expect("get").expect("exists");
    bed.pushed(&browser);
    let max = crate::protocol::MAX_AGENT_TITLE_CHARS;
    for title in ["", "   ", "two\nlines", "tab\there", &"é".repeat(max + 1)] {
        let frame = json!({"action": "session_title", "session_id": sid, "title": title});
        assert_eq!(bed.refused(&agent, frame, T0 + 50).await, ErrorCode::BadRequest, "{title:?}");
    }
    let frame = json!({"action": "session_title", "session_id": sid});
    assert_eq!(bed.refused(&agent, frame, T0 + 50).await, ErrorCode::BadRequest);
    assert_eq!(bed.store().session(&sid).await.expect("get"), Some(before));
    assert!(bed.title_updates(&browser).is_empty());

    let longest = "é".repeat(max);
    let frame = json!({"action": "session_title", "session_id": sid, "title": longest});
    let reply = bed.ok(&agent, frame, T0 + 51).await;
    assert_eq!(reply["session"]["title"], longest, "{max} characters fit");
}

/// `bed`'s worker offers a second model (`fake/other-model`), as a hello
/// says; the session on it (model `anthropic/claude-sonnet-4`) is ready.
async fn two_models<S: Store>(bed: &Bed<S>) -> (ConnectionId, ConnectionId, SessionId) {
    let (ada, browser) = bed.user("ada").await;
    let (w, agent) = bed.worker(&ada).await;
    let models = json!([
        {"provider_id": "anthropic", "model_id": "claude-sonnet-4", "name": "Claude Sonnet 4"},
        {"provider_id": "fake", "model_id": "other-model", "name": "Other"},
    ]);
    bed.ok(&agent, json!({"action": "worker_hello", "models": models}), T0).await;
    let sid = bed.start(&browser, &w, None).await;
    bed.ok(
        &agent,
        json!({"action": "session_ready", "session_id": sid, "agent_session_id": "ses_1"}),
        T0 + 2,
    )
    .await;
    bed.pushed(&agent);
    (browser, agent, sid)
}

/// A message sent for another of the worker's models keeps it (stored, in
/// its view) and its worker is told to answer with it; a message without
/// one is answered by the session's model and names none.
pub async fn a_message_sent_for_another_model_is_stored_and_dispatched_with_it<S: Store>(s: S) {
    let bed = Bed::new(s);
    let (browser, agent, sid) = two_models(&bed).await;
    let other = ModelRef { provider_id: "fake".into(), model_id: "other-model".into() };
    let mid = MessageId::random();
    let reply = bed
        .ok(
            &browser,
            json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "hi",
                   "model": {"provider_id": "fake", "model_id": "other-model"}}),
            T0 + 3,
        )
        .await;
    assert_eq!(reply["message"]["model"]["model_id"], "other-model", "{reply}");
    let stored = bed.store().message(&mid).await.expect("get").expect("stored");
    assert_eq!(stored.model, Some(other.clone()));
    let dispatched: Vec<ModelRef> = bed
        .pushed(&agent)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::MessageDispatch { model, .. } => Some(model),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, [other]);

    // Without a model (or naming the session's own), the session's answers.
    let session_model = ModelRef { provider_id: "anthropic".into(), model_id: "claude-sonnet-4".into() };
    for (i, model) in [None, Some(json!(session_model))].into_iter().enumerate() {
        let mid = MessageId::random();
        let mut frame = json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "more"});
        if let Some(m) = model {
            frame["model"] = m;
        }
        let reply = bed.ok(&browser, frame, T0 + 4 + i as Millis).await;
        assert!(reply["message"].get("model").is_none(), "{reply}");
        let stored = bed.store().message(&mid).await.expect("get").expect("stored");
        assert_eq!(stored.model, None);
    }
}

/// A model the session's worker does not offer is `unknown_model`, and
/// nothing is stored or sent.
pub async fn a_message_for_a_model_the_worker_does_not_offer_is_refused_and_not_stored<S: Store>(
    s: S,
) {
    let bed = Bed::new(s);
    let (browser, agent, sid) = two_models(&bed).await;
    let long = "m".repeat(10_000);
    for model in [
        json!({"provider_id": "fake", "model_id": "nope"}),
        json!({"provider_id": "other", "model_id": "other-model"}),
        json!({"provider_id": "", "model_id": ""}),
        json!({"provider_id": long, "model_id": long}),
    ] {
        let mid = MessageId::random();
        let code = bed
            .refused(
                &browser,
                json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "hi",
                       "model": model}),
                T0 + 3,
            )
            .await;
        assert_eq!(code, ErrorCode::UnknownModel);
        assert_eq!(bed.store().message(&mid).await.expect("get"), None);
    }
    let session = bed.store().session(&sid).await.expect("get").expect("exists");
    assert_eq!(session.message_count, 0);
    assert!(bed.pushed(&agent).is_empty(), "nothing dispatched");
}
