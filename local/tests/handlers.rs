//! Domain handlers against the embedded store, with a recording push port:
//! the rules of each action, without sockets.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

use tether_domain::fakes::RecordingPush;
use tether_domain::testkit::Jitter;
use tether_domain::handlers::ConnectRequest;
use tether_domain::ids::{ConnectionId, MessageId};
use tether_domain::model::Principal;
use tether_domain::protocol::{ChunkBody, ChunkView, PairData, PairRequest, ServerFrame};
use tether_domain::store::Store as _;
use tether_domain::{ApiError, Config, Domain, ErrorCode};
use tether_local::sqlite::SqliteStore;

struct Harness {
    domain: Arc<Domain<Jitter<SqliteStore>, RecordingPush>>,
    push: RecordingPush,
    now: AtomicI64,
    ids: AtomicU64,
}

const T0: i64 = 1_764_000_000_000;
/// Where the harness's workers ask to pair from.
const SOURCE: &str = "192.0.2.1";

impl Harness {
    fn new() -> Self {
        Self::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        let push = RecordingPush::default();
        // Random pauses before each store call widen race windows, as
        // concurrent Lambdas over a networked store would.
        let store = Jitter::new(
            SqliteStore::open_in_memory().expect("in-memory store"),
            Duration::from_micros(300),
        );
        Self {
            domain: Arc::new(Domain::new(store, push.clone(), config)),
            push,
            now: AtomicI64::new(T0),
            ids: AtomicU64::new(0),
        }
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    fn next(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::SeqCst)
    }

    fn conn(&self) -> ConnectionId {
        ConnectionId::parse(format!("conn{}=", self.next())).expect("valid id")
    }

    /// Sends a frame (adding an `id`), returns the reply.
    async fn send(&self, conn: &ConnectionId, mut body: Value) -> Result<Value, (ErrorCode, String)> {
        let id = format!("r{}", self.next());
        body["id"] = json!(id);
        match self.domain.handle_frame(conn, &body.to_string(), self.now()).await {
            ServerFrame::Reply { id: got, ok: true, data, .. } => {
                assert_eq!(got.map(|i| i.into_string()), Some(id));
                Ok(data.unwrap_or(Value::Null))
            }
            ServerFrame::Reply { error: Some(e), .. } => Err((e.code, e.message)),
            other => panic!("not a reply: {other:?}"),
        }
    }

    async fn ok(&self, conn: &ConnectionId, body: Value) -> Value {
        let action = body["action"].clone();
        self.send(conn, body)
            .await
            .unwrap_or_else(|e| panic!("{action} refused: {e:?}"))
    }

    async fn code(&self, conn: &ConnectionId, body: Value) -> ErrorCode {
        match self.send(conn, body).await {
            Ok(v) => panic!("expected an error, got {v}"),
            Err((code, _)) => code,
        }
    }

    async fn user(&self, name: &str) -> ConnectionId {
        let (_, secret) = self.domain.add_user(name, false, self.now()).await.expect("add user");
        let ticket = self
            .domain
            .issue_ticket(Some(secret.expose()), self.now())
            .await
            .expect("ticket");
        let conn = self.conn();
        self.domain
            .connect(ConnectRequest {
                connection_id: conn.clone(),
                ticket: Some(ticket.ticket),
                bearer: None,
                version: Some("1".into()),
                now: self.now(),
            })
            .await
            .expect("user connects");
        conn
    }

    /// A worker paired to the owner behind `owner`, connected and hello'd.
    async fn worker(&self, owner: &ConnectionId) -> (String, ConnectionId, String) {
        let credential = format!("twk_credential_for_tests_{:012}", self.next());
        let pair = self.pair(&credential, SOURCE, None).await.expect("pair");
        let code = pair.code.expect("pending worker has a code");
        let conn = self.connect_worker(&credential).await.expect("pending worker connects");
        self.ok(owner, json!({"action": "pairing_approve", "code": code})).await;
        self.ok(
            &conn,
            json!({"action": "worker_hello", "machine": "laptop", "models": [
                {"provider_id": "p", "model_id": "m", "name": "M"}
            ]}),
        )
        .await;
        (pair.worker_id.into_string(), conn, credential)
    }

    /// `POST /api/pair` from `source` with `credential` (and a token).
    async fn pair(&self, credential: &str, source: &str, token: Option<&str>) -> Result<PairData, ApiError> {
        let request = PairRequest {
            machine: "laptop".into(),
            name: None,
            workdir: "/src/app".into(),
            token: token.map(Into::into),
        };
        let source = source.parse().expect("an address");
        self.domain.pair(Some(credential), Some(source), request, self.now()).await
    }

    /// A new credential (unknown to the host until it pairs).
    fn credential(&self) -> String {
        format!("twk_credential_for_tests_{:012}", self.next())
    }

    /// An admin's connection.
    async fn admin(&self, name: &str) -> ConnectionId {
        let (_, secret) = self.domain.add_user(name, true, self.now()).await.expect("add admin");
        self.connect_user(secret.expose()).await.expect("admin connects")
    }

    /// A ticket for a user secret, then a connection with it.
    async fn connect_user(&self, secret: &str) -> Result<ConnectionId, ErrorCode> {
        let ticket = self
            .domain
            .issue_ticket(Some(secret), self.now())
            .await
            .map_err(|e| e.code)?;
        self.redeem(&ticket.ticket).await
    }

    /// `$connect` with a ticket: the new connection, or the refusal's code.
    async fn redeem(&self, ticket: &str) -> Result<ConnectionId, ErrorCode> {
        let conn = self.conn();
        self.domain
            .connect(ConnectRequest {
                connection_id: conn.clone(),
                ticket: Some(ticket.into()),
                bearer: None,
                version: None,
                now: self.now(),
            })
            .await
            .map(|_| conn)
            .map_err(|e| e.code)
    }

    async fn connect_worker(&self, credential: &str) -> Result<ConnectionId, ErrorCode> {
        let conn = self.conn();
        self.domain
            .connect(ConnectRequest {
                connection_id: conn.clone(),
                ticket: None,
                bearer: Some(credential.into()),
                version: None,
                now: self.now(),
            })
            .await
            .map(|_| conn)
            .map_err(|e| e.code)
    }

    /// A ready, watched session with one message dispatched: (session, message).
    async fn chat(&self, user: &ConnectionId, worker_id: &str, worker: &ConnectionId) -> (String, String) {
        let sid = format!("ses_{}", self.next());
        let mid = format!("msg_{}", self.next());
        self.ok(user, json!({"action": "session_start", "session_id": sid, "worker_id": worker_id,
            "model": {"provider_id": "p", "model_id": "m"}})).await;
        self.ok(worker, json!({"action": "session_ready", "session_id": sid, "agent_session_id": "ag1"})).await;
        self.ok(user, json!({"action": "session_watch", "session_id": sid})).await;
        let m = self.ok(user, json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "hi"})).await;
        assert_eq!(m["message"]["status"], "dispatched");
        (sid, mid)
    }

    async fn history(&self, user: &ConnectionId, sid: &str) -> Value {
        self.ok(user, json!({"action": "session_history", "session_id": sid})).await
    }
}

fn text_chunk(seq: u32, delta: &str) -> Value {
    json!({"seq": seq, "kind": "text", "part_id": "p1", "delta": delta})
}

/// The text of an answer: its text deltas in seq order.
fn answer_text(chunks: &[ChunkView], message: &MessageId) -> String {
    let mut mine: Vec<&ChunkView> = chunks.iter().filter(|c| &c.message_id == message).collect();
    mine.sort_by_key(|c| c.seq);
    mine.iter()
        .filter_map(|c| match &c.body {
            ChunkBody::Text { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

fn seqs(history: &Value) -> Vec<u64> {
    history["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["seq"].as_u64().expect("seq"))
        .collect()
}

fn request(ticket: Option<&str>, bearer: Option<&str>, version: Option<&str>, now: i64) -> ConnectRequest {
    ConnectRequest {
        connection_id: ConnectionId::parse("x=").expect("id"),
        ticket: ticket.map(Into::into),
        bearer: bearer.map(Into::into),
        version: version.map(Into::into),
        now,
    }
}

/// The domain's shared handler scenarios (`testkit::handler_scenarios`:
/// the agent's state, titles from the agent), on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_handler_scenarios() {
    tether_domain::testkit::handler_scenarios(|| async {
        SqliteStore::open_in_memory().expect("in-memory store")
    })
    .await;
}

#[tokio::test]
async fn connect_refuses_what_it_must() {
    let h = Harness::new();
    let code = |r: Result<_, tether_domain::ApiError>| r.expect_err("refused").code;
    assert_eq!(code(h.domain.connect(request(None, None, None, T0)).await), ErrorCode::Unauthorized);
    assert_eq!(code(h.domain.connect(request(Some("ttk_nope"), None, None, T0)).await), ErrorCode::Unauthorized);
    assert_eq!(code(h.domain.connect(request(None, Some("twk_unknown"), None, T0)).await), ErrorCode::Unauthorized);
    assert_eq!(code(h.domain.connect(request(None, None, Some("9"), T0)).await), ErrorCode::UnsupportedVersion);

    // A ticket works once, and not after it expires.
    let (_, secret) = h.domain.add_user("ada", false, T0).await.expect("user");
    let t = h.domain.issue_ticket(Some(secret.expose()), T0).await.expect("ticket");
    assert!(h.domain.connect(request(Some(&t.ticket), None, None, T0)).await.is_ok());
    assert_eq!(code(h.domain.connect(request(Some(&t.ticket), None, None, T0)).await), ErrorCode::Unauthorized);
    let t = h.domain.issue_ticket(Some(secret.expose()), T0).await.expect("ticket");
    assert_eq!(
        code(h.domain.connect(request(Some(&t.ticket), None, None, t.expires_at + 1)).await),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        h.domain.issue_ticket(Some("tsk_wrong"), T0).await.expect_err("bad secret").code,
        ErrorCode::Unauthorized
    );
}

#[tokio::test]
async fn pairing_approve_and_revoke() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, credential) = h.worker(&owner).await;
    assert!(
        h.push.sent_to(&wconn).iter().any(|f| matches!(f, ServerFrame::PairingStatus { status, .. } if status.as_str() == "approved")),
        "the worker hears it was approved"
    );
    let machines = h.ok(&owner, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"][0]["workers"][0]["worker_id"], wid.as_str());
    assert_eq!(machines["machines"][0]["workers"][0]["online"], true);

    let pair = h.pair(&credential, SOURCE, None).await.expect("pair again");
    assert_eq!(pair.status.as_str(), "approved");
    assert_eq!(pair.code, None);

    h.ok(&owner, json!({"action": "worker_revoke", "worker_id": wid})).await;
    assert!(h.push.closed().contains(&wconn), "revoking closes the worker's connection");
    assert_eq!(h.connect_worker(&credential).await, Err(ErrorCode::WorkerNotApproved));
    assert_eq!(h.code(&wconn, json!({"action": "ping"})).await, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn pending_workers_may_not_work() {
    let h = Harness::new();
    let credential = "twk_pending_pending_pending_pending_1";
    let pair = h.pair(credential, SOURCE, None).await.expect("pair");
    let conn = h.connect_worker(credential).await.expect("pending connects");
    let hello = h.ok(&conn, json!({"action": "worker_hello"})).await;
    assert_eq!(hello["worker"]["status"], "pending");
    assert_eq!(
        h.code(&conn, json!({"action": "chunks", "message_id": "m1", "chunks": [text_chunk(0, "x")]})).await,
        ErrorCode::WorkerNotApproved
    );
    let owner = h.user("ada").await;
    assert_eq!(h.code(&owner, json!({"action": "pairing_approve", "code": "ZZZZ-ZZZZ"})).await, ErrorCode::NotFound);
    assert_eq!(h.code(&owner, json!({"action": "pairing_approve", "code": "?"})).await, ErrorCode::BadRequest);
    h.advance(Config::default().pairing_ttl_ms + 1);
    let code = pair.code.expect("code");
    assert_eq!(h.code(&owner, json!({"action": "pairing_approve", "code": code})).await, ErrorCode::Expired);
}

#[tokio::test]
async fn roles_are_enforced() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    assert_eq!(
        h.code(&owner, json!({"action": "chunks", "message_id": "m1", "chunks": [text_chunk(0, "x")]})).await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        h.code(&wconn, json!({"action": "session_start", "session_id": "s1", "worker_id": wid,
            "model": {"provider_id": "p", "model_id": "m"}})).await,
        ErrorCode::Forbidden
    );
    assert_eq!(h.code(&owner, json!({"action": "pairing_list"})).await, ErrorCode::Forbidden);
}

#[tokio::test]
async fn the_chat_flow_streams_to_watchers_in_order() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::MessageDispatch { message_id, .. } if message_id.as_str() == mid)));
    h.ok(&wconn, json!({"action": "message_started", "message_id": mid})).await;
    h.push.take(&owner);
    for (seq, d) in ["Hel", "lo ", "there"].iter().enumerate() {
        let ack = h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(seq as u32, d)]})).await;
        assert_eq!(ack["stored"], json!([seq]));
    }
    let pushed: Vec<u32> = h
        .push
        .take(&owner)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Chunks { chunks, .. } => Some(chunks.into_iter().map(|c| c.seq).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(pushed, vec![0, 1, 2]);
    // A completion carries no text: the host has the chunks.
    let with_text = json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 3, "final_text": "Hello there"});
    match h.send(&wconn, with_text).await {
        Err((ErrorCode::BadRequest, why)) => assert!(why.contains("final_text"), "{why}"),
        other => panic!("a completion with text must be a bad_request, got {other:?}"),
    }
    assert_eq!(h.history(&owner, &sid).await["messages"][0]["status"], "streaming");
    let done = h
        .ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 3}))
        .await;
    assert_eq!(done["message"]["status"], "complete");
    let hist = h.history(&owner, &sid).await;
    assert_eq!(seqs(&hist), vec![0, 1, 2]);
    let chunks: Vec<ChunkView> = serde_json::from_value(hist["chunks"].clone()).expect("chunk views");
    let mid = MessageId::parse(mid.as_str()).expect("message id");
    assert_eq!(answer_text(&chunks, &mid), "Hello there");
    assert!(hist["messages"][0].get("final_text").is_none(), "{}", hist["messages"][0]);
    assert_eq!(hist["session"]["status"], "ready");
}

#[tokio::test]
async fn duplicates_and_reordering_store_each_chunk_once() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    // seq 2 before 0 and 1, all before message_started.
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(2, "c")]})).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a")]})).await;
    let hist = h.history(&owner, &sid).await;
    assert_eq!(seqs(&hist), vec![0, 2], "a reader sees the gap at 1");
    assert_eq!(hist["messages"][0]["status"], "streaming");
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(1, "b")]})).await;
    let ack = h
        .ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a"), text_chunk(1, "b"), text_chunk(2, "c")]}))
        .await;
    assert_eq!(ack["duplicate"], json!([0, 1, 2]));
    assert_eq!(ack["stored"], json!([]));
    assert_eq!(seqs(&h.history(&owner, &sid).await), vec![0, 1, 2]);
}

#[tokio::test]
async fn completion_rules() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a")]})).await;
    // The completion may overtake its last chunk.
    let complete = json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 2});
    h.ok(&wconn, complete.clone()).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(1, "b")]})).await;
    assert_eq!(
        h.code(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(2, "c")]})).await,
        ErrorCode::MessageFinal
    );
    h.ok(&wconn, complete).await;
    assert_eq!(
        h.code(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "failed", "chunk_count": 2})).await,
        ErrorCode::AlreadyComplete
    );
    let hist = h.history(&owner, &sid).await;
    assert_eq!(seqs(&hist), vec![0, 1]);
    assert_eq!(hist["messages"][0]["status"], "complete");
}

#[tokio::test]
async fn offline_queue_is_dispatched_on_hello() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, credential) = h.worker(&owner).await;
    let (sid, _) = h.chat(&owner, &wid, &wconn).await;
    h.domain.disconnect(&wconn, h.now()).await;
    let m = h.ok(&owner, json!({"action": "message_send", "session_id": sid, "message_id": "msg_q", "text": "later"})).await;
    assert_eq!(m["message"]["status"], "queued");
    let again = h.connect_worker(&credential).await.expect("reconnects");
    h.ok(&again, json!({"action": "worker_hello", "active_messages": []})).await;
    assert!(h
        .push
        .take(&again)
        .iter()
        .any(|f| matches!(f, ServerFrame::MessageDispatch { message_id, .. } if message_id.as_str() == "msg_q")));
}

#[tokio::test]
async fn a_worker_that_lost_a_message_fails_it_on_hello() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, credential) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "message_started", "message_id": mid})).await;
    h.domain.disconnect(&wconn, h.now()).await;
    let again = h.connect_worker(&credential).await.expect("reconnects");
    h.ok(&again, json!({"action": "worker_hello", "active_messages": []})).await;
    let hist = h.history(&owner, &sid).await;
    assert_eq!(hist["messages"][0]["status"], "failed");
    assert_eq!(hist["session"]["status"], "ready", "the session stays usable");
}

#[tokio::test]
async fn other_users_see_nothing() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let bob = h.user("bob").await;
    let (wid, wconn, _) = h.worker(&ada).await;
    let (sid, mid) = h.chat(&ada, &wid, &wconn).await;
    for body in [
        json!({"action": "session_watch", "session_id": sid}),
        json!({"action": "session_history", "session_id": sid}),
        json!({"action": "session_end", "session_id": sid}),
        json!({"action": "message_send", "session_id": sid, "message_id": "msg_b", "text": "x"}),
        json!({"action": "message_abort", "message_id": mid}),
        json!({"action": "worker_revoke", "worker_id": wid}),
        json!({"action": "session_start", "session_id": "ses_b", "worker_id": wid, "model": {"provider_id": "p", "model_id": "m"}}),
        json!({"action": "session_list", "worker_id": wid}),
    ] {
        assert_eq!(h.code(&bob, body.clone()).await, ErrorCode::NotFound, "{body}");
    }
    assert_eq!(h.ok(&bob, json!({"action": "machine_list"})).await["machines"], json!([]));
    assert_eq!(h.ok(&bob, json!({"action": "session_list"})).await["sessions"], json!([]));
    let hist = h.history(&ada, &sid).await;
    assert_eq!(hist["session"]["status"], "ready");
    assert_eq!(hist["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn abort_and_end() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "message_started", "message_id": mid})).await;
    h.push.take(&wconn);
    h.ok(&owner, json!({"action": "message_abort", "message_id": mid})).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::MessageAbort { .. })));
    h.ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "aborted", "chunk_count": 0})).await;
    h.ok(&owner, json!({"action": "session_end", "session_id": sid})).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::SessionEnd { .. })));
    assert_eq!(
        h.code(&owner, json!({"action": "message_send", "session_id": sid, "message_id": "msg_late", "text": "x"})).await,
        ErrorCode::SessionClosed
    );
}

#[tokio::test]
async fn permission_prompts_reach_the_worker_once() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (_, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [
        {"seq": 0, "kind": "permission_request", "prompt_id": "per_1", "permission": "bash", "patterns": ["ls"]}
    ]}))
    .await;
    assert_eq!(
        h.code(&owner, json!({"action": "prompt_reply", "prompt_id": "per_1", "answer": {"kind": "question", "answers": []}})).await,
        ErrorCode::BadRequest
    );
    h.push.take(&wconn);
    h.ok(&owner, json!({"action": "prompt_reply", "prompt_id": "per_1", "answer": {"kind": "permission", "reply": "once"}})).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::PromptAnswer { .. })));
    assert_eq!(
        h.code(&owner, json!({"action": "prompt_reply", "prompt_id": "per_1", "answer": {"kind": "permission", "reply": "reject"}})).await,
        ErrorCode::AlreadyAnswered
    );
    // A prompt left open by an answer that ended can no longer be answered.
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [
        {"seq": 1, "kind": "permission_request", "prompt_id": "per_2", "permission": "bash", "patterns": ["rm"]}
    ]}))
    .await;
    h.ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "aborted", "chunk_count": 2})).await;
    assert_eq!(
        h.code(&owner, json!({"action": "prompt_reply", "prompt_id": "per_2", "answer": {"kind": "permission", "reply": "once"}})).await,
        ErrorCode::MessageFinal
    );
}

#[tokio::test]
async fn gone_watchers_are_dropped_and_do_not_fail_the_sender() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (_, mid) = h.chat(&owner, &wid, &wconn).await;
    h.push.set_gone(&owner);
    // A connection that answers gone while it may still be connecting
    // (API Gateway cannot post during `$connect`) keeps its record...
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a")]})).await;
    assert!(h.send(&owner, json!({"action": "ping"})).await.is_ok(), "a young connection is kept");
    // ...an older one is dropped.
    h.advance(31_000);
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(1, "b")]})).await;
    assert_eq!(h.code(&owner, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "its record is gone");
}

#[tokio::test]
async fn history_pages_resume_from_a_cursor() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    // About 200 KB of answer: more than one page.
    let big = "x".repeat(8000);
    for seq in 0..25u32 {
        h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(seq, &big)]})).await;
    }
    let mut cursor = Value::Null;
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = h.ok(&owner, json!({"action": "session_history", "session_id": sid, "after": cursor})).await;
        assert!(page.to_string().len() < 128 * 1024, "a page fits API Gateway's message limit");
        all.extend(seqs(&page));
        pages += 1;
        if page["next"].is_null() {
            break;
        }
        cursor = page["next"].clone();
    }
    assert!(pages > 1);
    assert_eq!(all, (0..25).collect::<Vec<u64>>());
    let page = h.ok(&owner, json!({"action": "session_history", "session_id": sid, "after": {"message": 0, "seq": 20}})).await;
    assert_eq!(seqs(&page), (20..25).collect::<Vec<u64>>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Chunk frames in any order, with any retries, handled concurrently:
    /// every seq stored once, history in order.
    #[test]
    fn any_order_any_retries_store_each_seq_once(
        order in Just((0u32..12).collect::<Vec<_>>()).prop_shuffle(),
        retries in proptest::collection::vec(0u32..12, 0..12),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let h = Arc::new(Harness::new());
            let owner = h.user("ada").await;
            let (wid, wconn, _) = h.worker(&owner).await;
            let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
            let mut tasks = Vec::new();
            for seq in order.into_iter().chain(retries) {
                let (h, wconn, mid) = (h.clone(), wconn.clone(), mid.clone());
                tasks.push(tokio::spawn(async move {
                    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(seq, "d")]})).await
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            let hist = h.history(&owner, &sid).await;
            assert_eq!(seqs(&hist), (0..12).collect::<Vec<u64>>());
        });
    }
}

/// `message_started` and `message_complete` handled at once (as concurrent
/// Lambdas may): the session never stays busy with nothing running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_start_and_completion_leave_the_session_ready() {
    let h = Arc::new(Harness::new());
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, first) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "message_complete", "message_id": first, "outcome": "complete", "chunk_count": 0})).await;
    for round in 0..40 {
        let mid = format!("msg_race_{round}");
        h.ok(&owner, json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "go"})).await;
        let start = {
            let (h, wconn, mid) = (h.clone(), wconn.clone(), mid.clone());
            tokio::spawn(async move { h.send(&wconn, json!({"action": "message_started", "message_id": mid})).await })
        };
        let complete = {
            let (h, wconn, mid) = (h.clone(), wconn.clone(), mid.clone());
            tokio::spawn(async move {
                h.ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 0})).await
            })
        };
        let _ = start.await.expect("task");
        complete.await.expect("task");
        let hist = h.history(&owner, &sid).await;
        assert_eq!(hist["session"]["status"], "ready", "round {round}");
    }
}

// ---- revocation: `tether user reset` and `tether user remove` ----

/// A reset takes the old secret's outstanding tickets with it and closes
/// every open socket of the user, and only theirs.
#[tokio::test]
async fn a_reset_ends_the_users_access_at_once() {
    let h = Harness::new();
    let (_, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let tab = h.connect_user(secret.expose()).await.expect("first tab");
    let phone = h.connect_user(secret.expose()).await.expect("second tab");
    let gone = h.connect_user(secret.expose()).await.expect("a tab that went away");
    h.push.set_gone(&gone);
    let unredeemed = h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket");
    let bob = h.user("bob").await;

    let reset = h.domain.reset_user_secret("ada", h.now()).await.expect("reset");
    assert_eq!(reset.browsers.closed, 2, "both open tabs closed; the gone one is not counted");
    assert!(reset.browsers.failed.is_empty());
    let closed = h.push.closed();
    for conn in [&tab, &phone] {
        assert!(closed.contains(conn), "{conn:?} is closed through the push port");
        assert_eq!(h.code(conn, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "its record is gone");
    }
    assert!(!closed.contains(&bob), "another user's socket stays open");
    h.ok(&bob, json!({"action": "ping"})).await;

    // The ticket issued under the old secret is refused as an unknown one
    // is, and leaves no connection record behind.
    let old = h.domain.connect(request(Some(&unredeemed.ticket), None, None, h.now())).await.expect_err("old");
    let unknown = h.domain.connect(request(Some("ttk_unknown"), None, None, h.now())).await.expect_err("unknown");
    assert_eq!(old.code, ErrorCode::Unauthorized);
    assert_eq!((old.code, old.message), (unknown.code, unknown.message), "no tell-tale difference");
    let x = ConnectionId::parse("x=").expect("id");
    assert_eq!(h.code(&x, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "no record of it");
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::Unauthorized), "the old secret");

    let fresh = h.connect_user(reset.secret.expose()).await.expect("the new secret works");
    let me = h.ok(&fresh, json!({"action": "me"})).await;
    assert_eq!(me["user_name"], "ada");
}

/// A removal revokes the user's workers (closing their sockets as
/// `worker_revoke` does), refuses their tickets and secret, closes their
/// sockets, and frees the name: a new user of that name sees nothing of
/// the old one's.
#[tokio::test]
async fn removing_a_user_revokes_their_workers_and_closes_everything() {
    let h = Harness::new();
    let (_, admin) = h.domain.add_user("root", true, h.now()).await.expect("root");
    let (_, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let tab = h.connect_user(secret.expose()).await.expect("tab");
    let (wid, wconn, credential) = h.worker(&tab).await;
    let (sid, _) = h.chat(&tab, &wid, &wconn).await;
    let second = h.connect_user(secret.expose()).await.expect("second tab");
    let unredeemed = h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket");
    let root = h.connect_user(admin.expose()).await.expect("root's tab");

    let removed = h.domain.remove_user("ada", h.now()).await.expect("remove");
    assert_eq!(removed.user.name, "ada");
    assert_eq!(removed.workers_revoked, 1);
    assert_eq!(removed.browsers.closed, 2);
    assert_eq!(removed.workers.closed, 1);
    let closed = h.push.closed();
    for conn in [&tab, &second, &wconn] {
        assert!(closed.contains(conn), "{conn:?} is closed");
        assert_eq!(h.code(conn, json!({"action": "ping"})).await, ErrorCode::Unauthorized);
    }
    assert!(
        h.push.sent_to(&wconn).iter().any(|f| matches!(f, ServerFrame::PairingStatus { status, .. } if status.as_str() == "revoked")),
        "the worker hears it was revoked before it is closed"
    );
    assert!(!closed.contains(&root));
    h.ok(&root, json!({"action": "ping"})).await;

    assert_eq!(h.redeem(&unredeemed.ticket).await, Err(ErrorCode::Unauthorized), "her ticket");
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::Unauthorized), "her secret");
    assert_eq!(h.connect_worker(&credential).await, Err(ErrorCode::WorkerNotApproved), "her worker");
    assert_eq!(
        h.domain.remove_user("ada", h.now()).await.expect_err("twice").code,
        ErrorCode::NotFound
    );

    // The name is free again; the new ada is someone else.
    let (again, secret) = h.domain.add_user("ada", false, h.now()).await.expect("the name again");
    assert_ne!(again.id, removed.user.id);
    let tab = h.connect_user(secret.expose()).await.expect("new ada");
    let machines = h.ok(&tab, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"], json!([]));
    assert_eq!(h.code(&tab, json!({"action": "session_history", "session_id": sid})).await, ErrorCode::NotFound);
}

#[tokio::test]
async fn the_last_admin_is_not_removed() {
    let h = Harness::new();
    h.domain.add_user("root", true, h.now()).await.expect("root");
    h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let refused = h.domain.remove_user("root", h.now()).await.expect_err("last admin");
    assert_eq!(refused.code, ErrorCode::InvalidState);
    assert!(refused.message.contains("last admin"), "{}", refused.message);
    h.domain.add_user("second", true, h.now()).await.expect("another admin");
    h.domain.remove_user("root", h.now()).await.expect("no longer the last");
    assert_eq!(
        h.domain.remove_user("second", h.now()).await.expect_err("last again").code,
        ErrorCode::InvalidState
    );
    h.domain.remove_user("ada", h.now()).await.expect("a user who is not an admin");
}

#[tokio::test]
async fn unknown_users_are_not_found() {
    let h = Harness::new();
    assert_eq!(h.domain.reset_user_secret("nobody", h.now()).await.expect_err("reset").code, ErrorCode::NotFound);
    assert_eq!(h.domain.remove_user("nobody", h.now()).await.expect_err("remove").code, ErrorCode::NotFound);
}

/// A `$connect` racing a reset (random store pauses interleave them many
/// ways) never leaves a usable connection: either the ticket is refused or
/// the reset finds the connection and closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_racing_a_reset_leaves_no_usable_connection() {
    let h = Arc::new(Harness::new());
    let (_, mut secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    for round in 0..40 {
        let ticket = h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket");
        let connect = {
            let h = h.clone();
            tokio::spawn(async move { h.redeem(&ticket.ticket).await })
        };
        let reset = {
            let h = h.clone();
            tokio::spawn(async move { h.domain.reset_user_secret("ada", h.now()).await.expect("reset") })
        };
        let connected = connect.await.expect("task");
        secret = reset.await.expect("task").secret;
        if let Ok(conn) = connected {
            assert_eq!(
                h.code(&conn, json!({"action": "ping"})).await,
                ErrorCode::Unauthorized,
                "round {round}: a connection of the old secret outlived the reset"
            );
        }
    }
}


// ---- caps: connections, live sessions, messages waiting for an answer ----

/// Small caps, so the tests reach them quickly.
fn small_caps() -> Config {
    Config {
        max_user_connections: 3,
        max_live_sessions: 2,
        max_open_messages: 2,
        ..Config::default()
    }
}

/// A user at the cap of open connections is refused another with
/// `too_many_connections`; the refusal leaves no record behind; closing one
/// (or its record expiring) lets the next one in.
#[tokio::test]
async fn a_users_connections_are_capped() {
    let h = Harness::with_config(small_caps());
    let (ada, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let ada = Principal::User(ada.id);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(h.connect_user(secret.expose()).await.expect("within the cap"));
    }
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::TooManyConnections));
    assert_eq!(h.domain.host_store().connection_count(&ada, h.now()).await.expect("count"), 3, "the refused one left no record");
    for conn in &open {
        h.ok(conn, json!({"action": "ping"})).await;
    }
    // Another user has connections of their own.
    h.user("bob").await;

    h.domain.disconnect(&open[0], h.now()).await;
    let again = h.connect_user(secret.expose()).await.expect("a closed one frees a slot");
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::TooManyConnections));
    // Records whose `$disconnect` never came stop counting when they expire.
    h.advance(Config::default().connection_ttl_ms);
    h.connect_user(secret.expose()).await.expect("expired records do not count");
    assert_eq!(h.code(&again, json!({"action": "ping"})).await, ErrorCode::Unauthorized);
}

/// A pending worker holds one socket and an approved one two (a reconnect
/// racing the old socket's end); a refused socket changes neither the
/// records nor the worker's presence.
#[tokio::test]
async fn a_workers_sockets_are_capped_one_while_pending() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let credential = "twk_capped_capped_capped_capped_capped_1";
    let pair = h.pair(credential, SOURCE, None).await.expect("pair");
    let worker = Principal::Worker(pair.worker_id.clone());
    let first = h.connect_worker(credential).await.expect("the pending worker connects");
    assert_eq!(h.connect_worker(credential).await, Err(ErrorCode::TooManyConnections));
    assert_eq!(h.domain.host_store().connection_count(&worker, h.now()).await.expect("count"), 1);
    let stored = h.domain.host_store().worker(&pair.worker_id).await.expect("get").expect("worker");
    assert_eq!(stored.connection.as_ref(), Some(&first), "the refusal left its presence alone");
    h.ok(&first, json!({"action": "worker_hello"})).await;

    h.ok(&owner, json!({"action": "pairing_approve", "code": pair.code.expect("code")})).await;
    let second = h.connect_worker(credential).await.expect("an approved worker has two");
    assert_eq!(h.connect_worker(credential).await, Err(ErrorCode::TooManyConnections));
    let stored = h.domain.host_store().worker(&pair.worker_id).await.expect("get").expect("worker");
    assert_eq!(stored.connection.as_ref(), Some(&second));
    h.domain.disconnect(&first, h.now()).await;
    h.connect_worker(credential).await.expect("a closed one frees a slot");
}

/// Concurrent connects of one user (random store pauses interleave them)
/// never leave more than the cap open: each counts after recording itself.
/// (More at once than the cap has room for may all be refused, when each
/// counts the others' records; their retries get in, as the end shows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_never_pass_the_cap() {
    let h = Arc::new(Harness::with_config(small_caps()));
    let (ada, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let ada = Principal::User(ada.id);
    for round in 0..10 {
        let mut tickets = Vec::new();
        for _ in 0..8 {
            tickets.push(h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket").ticket);
        }
        let tasks: Vec<_> = tickets
            .into_iter()
            .map(|t| {
                let h = h.clone();
                tokio::spawn(async move { h.redeem(&t).await })
            })
            .collect();
        let mut kept = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(conn) => kept.push(conn),
                Err(code) => assert_eq!(code, ErrorCode::TooManyConnections, "round {round}"),
            }
        }
        assert!(kept.len() <= 3, "round {round}: {} kept", kept.len());
        let count = h.domain.host_store().connection_count(&ada, h.now()).await.expect("count");
        assert_eq!(count as usize, kept.len(), "round {round}: only the kept ones have records");
        for conn in &kept {
            h.domain.disconnect(conn, h.now()).await;
        }
    }
    // The refused left nothing behind: the cap is there to fill.
    for _ in 0..3 {
        h.connect_user(secret.expose()).await.expect("within the cap");
    }
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::TooManyConnections));
}

/// `session_start` past the cap of live sessions is refused with
/// `too_many_sessions`, stores nothing and tells nobody; a retry of a
/// stored one is still answered; ending a session frees a slot.
#[tokio::test]
async fn live_sessions_are_capped_and_ending_one_frees_a_slot() {
    let h = Harness::with_config(small_caps());
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let start = |sid: &str| json!({"action": "session_start", "session_id": sid, "worker_id": wid,
        "model": {"provider_id": "p", "model_id": "m"}});
    h.ok(&owner, start("ses_cap_1")).await;
    h.ok(&owner, start("ses_cap_2")).await;
    h.push.take(&owner);
    h.push.take(&wconn);

    let (code, message) = h.send(&owner, start("ses_cap_3")).await.expect_err("over the cap");
    assert_eq!(code, ErrorCode::TooManySessions);
    assert!(message.contains('2'), "the message says the cap: {message}");
    assert!(h.push.take(&wconn).is_empty(), "the worker was told nothing");
    assert!(h.push.take(&owner).is_empty(), "nothing was announced");
    let list = h.ok(&owner, json!({"action": "session_list"})).await;
    assert_eq!(list["sessions"].as_array().expect("sessions").len(), 2);
    assert_eq!(h.code(&owner, json!({"action": "session_history", "session_id": "ses_cap_3"})).await, ErrorCode::NotFound);
    // A retry of a stored start is answered as before.
    h.ok(&owner, start("ses_cap_1")).await;

    h.ok(&owner, json!({"action": "session_end", "session_id": "ses_cap_1"})).await;
    h.ok(&owner, start("ses_cap_3")).await;
    assert_eq!(h.code(&owner, start("ses_cap_4")).await, ErrorCode::TooManySessions);
}

/// `message_send` past the cap of messages waiting for an answer (queued
/// here: the sessions are still starting) is refused with `queue_full`,
/// across sessions, and stores nothing; a retry of a stored message is
/// answered; an abort or an answer frees a slot.
#[tokio::test]
async fn messages_waiting_for_an_answer_are_capped() {
    let h = Harness::with_config(small_caps());
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    for sid in ["ses_q1", "ses_q2"] {
        h.ok(&owner, json!({"action": "session_start", "session_id": sid, "worker_id": wid,
            "model": {"provider_id": "p", "model_id": "m"}})).await;
    }
    let send = |sid: &str, mid: &str| json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "hi"});
    let m = h.ok(&owner, send("ses_q1", "msg_q1")).await;
    assert_eq!(m["message"]["status"], "queued");
    h.ok(&owner, send("ses_q1", "msg_q2")).await;
    h.push.take(&wconn);

    let (code, message) = h.send(&owner, send("ses_q2", "msg_q3")).await.expect_err("over the cap");
    assert_eq!(code, ErrorCode::QueueFull);
    assert!(message.contains('2'), "the message says the cap: {message}");
    let hist = h.history(&owner, "ses_q2").await;
    assert_eq!(hist["messages"].as_array().expect("messages").len(), 0);
    assert_eq!(hist["session"]["message_count"], 0, "the refused message took no number");
    assert_eq!(h.code(&owner, json!({"action": "message_abort", "message_id": "msg_q3"})).await, ErrorCode::NotFound);
    h.ok(&owner, send("ses_q1", "msg_q1")).await;

    h.ok(&owner, json!({"action": "message_abort", "message_id": "msg_q1"})).await;
    h.ok(&owner, send("ses_q2", "msg_q3")).await;
    assert_eq!(h.code(&owner, send("ses_q2", "msg_q4")).await, ErrorCode::QueueFull);

    // Dispatched and answered: the answer's end frees its slot.
    h.ok(&wconn, json!({"action": "session_ready", "session_id": "ses_q1", "agent_session_id": "ag1"})).await;
    h.ok(&wconn, json!({"action": "message_started", "message_id": "msg_q2"})).await;
    assert_eq!(h.code(&owner, send("ses_q2", "msg_q4")).await, ErrorCode::QueueFull, "streaming still waits");
    h.ok(&wconn, json!({"action": "message_complete", "message_id": "msg_q2", "outcome": "complete", "chunk_count": 0})).await;
    h.ok(&owner, send("ses_q2", "msg_q4")).await;
}

// ---------------------------------------------------------------------------
// Pairing: bound to whoever approves it
// ---------------------------------------------------------------------------

/// The pairing_status frames a connection was pushed: (status, approved_by).
fn pairing_statuses(h: &Harness, conn: &ConnectionId) -> Vec<(String, Option<String>)> {
    h.push
        .sent_to(conn)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::PairingStatus { status, approved_by } => Some((status.as_str().to_owned(), approved_by)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_worker_learns_who_approved_it() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let (_, wconn, credential) = h.worker(&ada).await;
    assert_eq!(
        pairing_statuses(&h, &wconn),
        vec![("approved".to_owned(), Some("ada".to_owned()))],
        "pushed with the approver's name"
    );
    let again = h.pair(&credential, SOURCE, None).await.expect("pair again");
    assert_eq!((again.status.as_str(), again.approved_by.as_deref()), ("approved", Some("ada")));

    // A rejection names nobody.
    let other = h.credential();
    let pending = h.pair(&other, SOURCE, None).await.expect("pair");
    let conn = h.connect_worker(&other).await.expect("pending connects");
    h.ok(&ada, json!({"action": "pairing_reject", "code": pending.code})).await;
    assert_eq!(pairing_statuses(&h, &conn), vec![("rejected".to_owned(), None)]);
    let refused = h.pair(&other, SOURCE, None).await.expect("pair after rejection");
    assert_eq!((refused.status.as_str(), refused.approved_by), ("rejected", None));

    // Approved while not connected, a worker hears no pairing_status: the
    // reply to its hello says who approved it.
    let absent = h.credential();
    let code = h.pair(&absent, SOURCE, None).await.expect("pair").code;
    h.ok(&ada, json!({"action": "pairing_approve", "code": code})).await;
    let conn = h.connect_worker(&absent).await.expect("connects approved");
    let hello = h.ok(&conn, json!({"action": "worker_hello"})).await;
    assert_eq!((hello["worker"]["status"].as_str(), hello["approved_by"].as_str()), (Some("approved"), Some("ada")));
}

/// Only a worker's owner, or an admin, may revoke it; anyone else's revoke
/// or reject of it is refused as `not_found` and changes nothing.
#[tokio::test]
async fn only_the_owner_or_an_admin_revokes_a_worker() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let bob = h.user("bob").await;
    let (wid, wconn, credential) = h.worker(&ada).await;
    let pending = h.credential();
    let code = h.pair(&pending, SOURCE, None).await.expect("pair").code.expect("code");

    assert_eq!(h.code(&bob, json!({"action": "worker_revoke", "worker_id": wid})).await, ErrorCode::NotFound);
    let missing = json!({"action": "worker_revoke", "worker_id": "wkr_nosuchworker"});
    let (code_missing, message_missing) = h.send(&bob, missing).await.expect_err("missing");
    let (code_other, message_other) = h
        .send(&bob, json!({"action": "worker_revoke", "worker_id": wid}))
        .await
        .expect_err("someone else's");
    assert_eq!((code_other, message_other), (code_missing, message_missing), "no tell-tale difference");
    // A pending worker is nobody's to revoke either.
    let pending_id = h.pair(&pending, SOURCE, None).await.expect("pair").worker_id;
    assert_eq!(
        h.code(&bob, json!({"action": "worker_revoke", "worker_id": pending_id})).await,
        ErrorCode::NotFound
    );
    assert!(!h.push.closed().contains(&wconn), "the worker's socket stays open");
    h.ok(&wconn, json!({"action": "ping"})).await;
    let view = h.ok(&ada, json!({"action": "machine_list"})).await;
    assert_eq!(view["machines"][0]["workers"][0]["status"], "approved");
    assert_eq!(h.pair(&credential, SOURCE, None).await.expect("pair").status.as_str(), "approved");
    // Its spent code rejects nothing.
    let approved_code = json!({"action": "pairing_reject", "code": code.clone()});
    h.ok(&bob, approved_code).await;
    assert_eq!(h.code(&bob, json!({"action": "pairing_reject", "code": code})).await, ErrorCode::NotFound);

    // An admin may, as may the owner.
    let root = h.admin("root").await;
    let revoked = h.ok(&root, json!({"action": "worker_revoke", "worker_id": wid})).await;
    assert_eq!(revoked["worker"]["status"], "revoked");
    assert!(h.push.closed().contains(&wconn), "revoking closes the worker's connection");
    assert_eq!(pairing_statuses(&h, &wconn).last(), Some(&("revoked".to_owned(), None)));
    let (wid2, _, _) = h.worker(&ada).await;
    let revoked = h.ok(&ada, json!({"action": "worker_revoke", "worker_id": wid2})).await;
    assert_eq!(revoked["worker"]["status"], "revoked");
}

/// Look-ups, approvals, rejections and token mints share one limit per user
/// and window, counted in the store; another user, or the next window, is
/// not affected.
#[tokio::test]
async fn pairing_attempts_are_rate_limited_per_user() {
    let h = Harness::new();
    let limit = Config::default().pairing_attempts;
    let ada = h.user("ada").await;
    let bob = h.user("bob").await;
    // Start at a window's beginning, so the whole test is in one window.
    h.advance(60_000 - h.now().rem_euclid(60_000));
    let credential = h.credential();
    let code = h.pair(&credential, SOURCE, None).await.expect("pair").code.expect("code");
    for i in 0..limit - 2 {
        let guess = json!({"action": "pairing_lookup", "code": format!("ZZZZ-ZZ{:02}", i % 8 + 2).replace('0', "Z").replace('1', "Y")});
        assert_eq!(h.code(&ada, guess).await, ErrorCode::NotFound, "guess {i}");
    }
    h.ok(&ada, json!({"action": "pairing_token_create"})).await;
    h.ok(&ada, json!({"action": "pairing_lookup", "code": code})).await;
    h.advance(1_000);
    for action in [
        json!({"action": "pairing_lookup", "code": code}),
        json!({"action": "pairing_approve", "code": code}),
        json!({"action": "pairing_reject", "code": code}),
        json!({"action": "pairing_token_create"}),
    ] {
        let (got, message) = h.send(&ada, action.clone()).await.expect_err("limited");
        assert_eq!(got, ErrorCode::RateLimited, "{action}");
        assert!(message.contains("try again in 59 s"), "says when: {message}");
    }
    // Nothing changed: the worker still waits, and another user is free.
    let looked = h.ok(&bob, json!({"action": "pairing_lookup", "code": code})).await;
    assert_eq!(looked["worker"]["status"], "pending");
    // The next window starts afresh.
    h.advance(59_000);
    let approved = h.ok(&ada, json!({"action": "pairing_approve", "code": code})).await;
    assert_eq!(approved["worker"]["status"], "approved");
}

#[tokio::test]
async fn pending_workers_are_capped_per_source_address() {
    let h = Harness::new();
    let cap = Config::default().pending_per_source;
    let ada = h.user("ada").await;
    let mut codes = Vec::new();
    let mut credentials = Vec::new();
    for _ in 0..cap {
        let c = h.credential();
        codes.push(h.pair(&c, "203.0.113.7", None).await.expect("under the cap").code.expect("code"));
        credentials.push(c);
    }
    let extra = h.credential();
    let refused = h.pair(&extra, "203.0.113.7", None).await.expect_err("over the cap");
    assert_eq!(refused.code, ErrorCode::TooManyPending);
    assert_eq!(refused.code.http_status(), 429);
    assert!(refused.message.contains("waiting for approval"), "{}", refused.message);
    assert_eq!(h.connect_worker(&extra).await, Err(ErrorCode::Unauthorized), "nothing was stored");
    // Pairing again with a waiting credential is no new worker.
    let again = h.pair(&credentials[0], "203.0.113.7", None).await.expect("same worker");
    assert_eq!(again.code.as_ref(), Some(&codes[0]));
    // Another address, even one IPv6 /64 apart, has its own cap; one /64 is one source.
    h.pair(&h.credential(), "198.51.100.1", None).await.expect("another address");
    for i in 0..cap {
        h.pair(&h.credential(), &format!("2001:db8:1:2::{:x}", i + 1), None).await.expect("first of the /64");
    }
    let same_net = h.pair(&h.credential(), "2001:db8:1:2:ffff::9", None).await.expect_err("the /64 is full");
    assert_eq!(same_net.code, ErrorCode::TooManyPending);
    h.pair(&h.credential(), "2001:db8:1:3::1", None).await.expect("the next /64");
    // A worker approved or rejected leaves the count.
    h.ok(&ada, json!({"action": "pairing_approve", "code": codes[1]})).await;
    h.pair(&extra, "203.0.113.7", None).await.expect("after an approval");
    assert_eq!(
        h.pair(&h.credential(), "203.0.113.7", None).await.expect_err("full again").code,
        ErrorCode::TooManyPending
    );
    // And so does one whose code expired.
    h.advance(Config::default().pairing_ttl_ms);
    h.pair(&h.credential(), "203.0.113.7", None).await.expect("after the codes expired");
}

/// A pending worker expires with its code: it cannot connect, its code is
/// `expired`, pairing again starts afresh, and the purge deletes it.
#[tokio::test]
async fn pending_workers_expire_with_their_code() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let credential = h.credential();
    let first = h.pair(&credential, SOURCE, None).await.expect("pair");
    let conn = h.connect_worker(&credential).await.expect("pending connects");
    h.advance(Config::default().pairing_ttl_ms);
    assert_eq!(h.connect_worker(&credential).await, Err(ErrorCode::Unauthorized), "expired: gone");
    let old = first.code.clone().expect("code");
    assert_eq!(h.code(&ada, json!({"action": "pairing_approve", "code": old})).await, ErrorCode::Expired);

    let second = h.pair(&credential, SOURCE, None).await.expect("pair afresh");
    assert_ne!(second.worker_id, first.worker_id, "a new pending worker");
    assert_ne!(second.code, first.code, "with a new code");
    assert_eq!(h.code(&ada, json!({"action": "pairing_lookup", "code": old})).await, ErrorCode::NotFound);
    assert_eq!(h.code(&conn, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "the old one is gone");
    let new_conn = h.connect_worker(&credential).await.expect("the new one connects");
    h.ok(&ada, json!({"action": "pairing_approve", "code": second.code})).await;
    assert_eq!(pairing_statuses(&h, &new_conn), vec![("approved".to_owned(), Some("ada".to_owned()))]);

    // The purge deletes an expired pending worker.
    let forgotten = h.credential();
    let third = h.pair(&forgotten, "198.51.100.1", None).await.expect("pair");
    h.advance(Config::default().pairing_ttl_ms);
    let purged = h.domain.host_store().purge_expired(h.now()).await.expect("purge");
    assert!(purged >= 1, "purged {purged}");
    assert!(h.domain.host_store().worker(&third.worker_id).await.expect("read").is_none());
}

#[tokio::test]
async fn pairing_list_is_paged_and_fits_a_message() {
    let h = Harness::new();
    let root = h.admin("root").await;
    let ada = h.user("ada").await;
    assert_eq!(h.code(&ada, json!({"action": "pairing_list"})).await, ErrorCode::Forbidden);
    // Pending workers with the largest model lists a hello may carry.
    let models: Vec<Value> = (0..200)
        .map(|i| json!({"provider_id": format!("provider-{i:03}"), "model_id": format!("{i:03}-{}", "m".repeat(80)), "name": "x".repeat(20)}))
        .collect();
    let mut made = Vec::new();
    for i in 0..12 {
        let credential = h.credential();
        let pair = h.pair(&credential, &format!("198.51.100.{i}"), None).await.expect("pair");
        let conn = h.connect_worker(&credential).await.expect("connects");
        h.ok(&conn, json!({"action": "worker_hello", "models": models})).await;
        made.push(pair.worker_id.to_string());
        h.advance(1);
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let mut request = json!({"action": "pairing_list", "limit": 5});
        if !after.is_null() {
            request["after"] = after.clone();
        }
        let page = h.ok(&root, request).await;
        let size = page.to_string().len();
        assert!(size < 100 * 1024, "a page of {size} bytes fits API Gateway's 128 KB");
        let workers = page["workers"].as_array().expect("workers");
        assert!(!workers.is_empty() && workers.len() <= 5, "{} workers", workers.len());
        seen.extend(workers.iter().map(|w| w["worker_id"].as_str().expect("id").to_owned()));
        pages += 1;
        after = page["next"].clone();
        if after.is_null() {
            break;
        }
        assert!(pages < 20, "paging ends");
    }
    assert_eq!(seen, made, "every pending worker once, oldest first");
    assert!(pages >= 4, "the byte budget cut pages short of the limit: {pages} pages");
}

/// The headless flow: a token minted by ada pairs a new worker as hers at
/// once; the token works once; an unknown, used or expired token, or one of
/// a reset secret, changes nothing.
#[tokio::test]
async fn a_pairing_token_approves_a_headless_worker_once() {
    let h = Harness::new();
    let (_, ada_secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let ada = h.connect_user(ada_secret.expose()).await.expect("ada connects");
    let minted = h.ok(&ada, json!({"action": "pairing_token_create"})).await;
    let token = minted["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("tpt_"), "{token}");
    assert_eq!(minted["expires_at"], h.now() + Config::default().pairing_token_ttl_ms);

    let credential = h.credential();
    let paired = h.pair(&credential, SOURCE, Some(&token)).await.expect("paired with the token");
    assert_eq!((paired.status.as_str(), paired.approved_by.as_deref()), ("approved", Some("ada")));
    assert_eq!(paired.code, None);
    let machines = h.ok(&ada, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"][0]["workers"][0]["worker_id"], paired.worker_id.as_str());
    let conn = h.connect_worker(&credential).await.expect("connects approved");
    h.ok(&conn, json!({"action": "worker_hello"})).await;
    // Started again with the same (now used) token: it just starts.
    let restarted = h.pair(&credential, SOURCE, Some(&token)).await.expect("restart");
    assert_eq!(restarted.status.as_str(), "approved");

    // The used token pairs nothing else.
    let thief = h.credential();
    let used = h.pair(&thief, SOURCE, Some(&token)).await.expect_err("used");
    assert_eq!(used.code, ErrorCode::Unauthorized);
    assert!(used.message.contains("unknown, used or expired"), "{}", used.message);
    assert_eq!(h.connect_worker(&thief).await, Err(ErrorCode::Unauthorized), "no worker was made");
    let unknown = h.pair(&thief, SOURCE, Some("tpt_unknown")).await.expect_err("unknown");
    assert_eq!((unknown.code, unknown.message), (used.code, used.message.clone()));

    // An expired one.
    let late = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    h.advance(Config::default().pairing_token_ttl_ms);
    assert_eq!(h.pair(&thief, SOURCE, Some(&late)).await.expect_err("expired").code, ErrorCode::Unauthorized);

    // One of a secret reset since.
    let ada = h.connect_user(ada_secret.expose()).await.expect("ada again");
    let orphan = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    let reset = h.domain.reset_user_secret("ada", h.now()).await.expect("reset");
    assert_eq!(h.pair(&thief, SOURCE, Some(&orphan)).await.expect_err("reset").code, ErrorCode::Unauthorized);
    assert_eq!(h.connect_worker(&thief).await, Err(ErrorCode::Unauthorized), "still nothing made");

    // A worker already waiting with a code is approved by a token too, and hears so.
    let ada = h.connect_user(reset.secret.expose()).await.expect("ada, new secret");
    let waiting = h.credential();
    h.pair(&waiting, SOURCE, None).await.expect("pending");
    let wconn = h.connect_worker(&waiting).await.expect("pending connects");
    let fresh = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    let approved = h.pair(&waiting, SOURCE, Some(&fresh)).await.expect("approved by token");
    assert_eq!(approved.approved_by.as_deref(), Some("ada"));
    assert_eq!(pairing_statuses(&h, &wconn), vec![("approved".to_owned(), Some("ada".to_owned()))]);
}

/// Many workers racing to spend one token: exactly one is paired.
#[tokio::test]
async fn a_pairing_token_is_spent_once_under_races() {
    let h = Arc::new(Harness::new());
    let ada = h.user("ada").await;
    let token = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (h, token) = (Arc::clone(&h), token.clone());
            tokio::spawn(async move {
                let credential = h.credential();
                h.pair(&credential, SOURCE, Some(&token)).await.is_ok()
            })
        })
        .collect();
    let mut paired = 0;
    for t in tasks {
        paired += usize::from(t.await.expect("task"));
    }
    assert_eq!(paired, 1, "one token, one worker");
    let machines = h.ok(&ada, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"][0]["workers"].as_array().map(Vec::len), Some(1));
}
