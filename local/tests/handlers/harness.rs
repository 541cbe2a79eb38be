//! The domain on an in-memory `SqliteStore`, with a recording push port
//! and a clock the test moves; users, workers and chats made through it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tether_domain::fakes::RecordingPush;
use tether_domain::handlers::ConnectRequest;
use tether_domain::ids::ConnectionId;
use tether_domain::protocol::{PairData, PairRequest, ServerFrame};
use tether_domain::testkit::Jitter;
use tether_domain::{ApiError, Config, Domain, ErrorCode};
use tether_local::sqlite::SqliteStore;

pub struct Harness {
    pub domain: Arc<Domain<Jitter<SqliteStore>, RecordingPush>>,
    pub push: RecordingPush,
    now: AtomicI64,
    ids: AtomicU64,
}

pub const T0: i64 = 1_764_000_000_000;
/// Where the harness's workers ask to pair from.
pub const SOURCE: &str = "192.0.2.1";

impl Harness {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
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

    pub fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn next(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::SeqCst)
    }

    pub fn conn(&self) -> ConnectionId {
        ConnectionId::parse(format!("conn{}=", self.next())).expect("valid id")
    }

    /// Sends a frame (adding an `id`), returns the reply.
    pub async fn send(&self, conn: &ConnectionId, mut body: Value) -> Result<Value, (ErrorCode, String)> {
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

    pub async fn ok(&self, conn: &ConnectionId, body: Value) -> Value {
        let action = body["action"].clone();
        self.send(conn, body)
            .await
            .unwrap_or_else(|e| panic!("{action} refused: {e:?}"))
    }

    pub async fn code(&self, conn: &ConnectionId, body: Value) -> ErrorCode {
        match self.send(conn, body).await {
            Ok(v) => panic!("expected an error, got {v}"),
            Err((code, _)) => code,
        }
    }

    pub async fn user(&self, name: &str) -> ConnectionId {
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
    pub async fn worker(&self, owner: &ConnectionId) -> (String, ConnectionId, String) {
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
    pub async fn pair(&self, credential: &str, source: &str, token: Option<&str>) -> Result<PairData, ApiError> {
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
    pub fn credential(&self) -> String {
        format!("twk_credential_for_tests_{:012}", self.next())
    }

    /// An admin's connection.
    pub async fn admin(&self, name: &str) -> ConnectionId {
        let (_, secret) = self.domain.add_user(name, true, self.now()).await.expect("add admin");
        self.connect_user(secret.expose()).await.expect("admin connects")
    }

    /// A ticket for a user secret, then a connection with it.
    pub async fn connect_user(&self, secret: &str) -> Result<ConnectionId, ErrorCode> {
        let ticket = self
            .domain
            .issue_ticket(Some(secret), self.now())
            .await
            .map_err(|e| e.code)?;
        self.redeem(&ticket.ticket).await
    }

    /// `$connect` with a ticket: the new connection, or the refusal's code.
    pub async fn redeem(&self, ticket: &str) -> Result<ConnectionId, ErrorCode> {
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

    pub async fn connect_worker(&self, credential: &str) -> Result<ConnectionId, ErrorCode> {
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
    pub async fn chat(&self, user: &ConnectionId, worker_id: &str, worker: &ConnectionId) -> (String, String) {
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

    pub async fn history(&self, user: &ConnectionId, sid: &str) -> Value {
        self.ok(user, json!({"action": "session_history", "session_id": sid})).await
    }
}

pub fn text_chunk(seq: u32, delta: &str) -> Value {
    json!({"seq": seq, "kind": "text", "part_id": "p1", "delta": delta})
}

pub fn seqs(history: &Value) -> Vec<u64> {
    history["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["seq"].as_u64().expect("seq"))
        .collect()
}

pub fn request(ticket: Option<&str>, bearer: Option<&str>, version: Option<&str>, now: i64) -> ConnectRequest {
    ConnectRequest {
        connection_id: ConnectionId::parse("x=").expect("id"),
        ticket: ticket.map(Into::into),
        bearer: bearer.map(Into::into),
        version: version.map(Into::into),
        now,
    }
}
