//! What every scenario needs: a `tether serve` process on a fresh data
//! directory, users made with `tether user add`, a small HTTP client for
//! `/api/ticket` and `/api/pair`, and websocket clients for both roles.
//!
//! Every wait is bounded by [`WAIT`] and fails with a message naming what was
//! awaited and what arrived meanwhile.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tether_domain::auth::Secret;
use tether_domain::ids::{MessageId, RequestId, SessionId, WorkerId};
use tether_domain::model::{MessageStatus, WorkerStatus};
use tether_domain::protocol::{
    ChunkBody, ChunkIn, ChunkView, ChunksAck, ClientFrame, HistoryPage, MachineView, MessageView,
    ModelInfo, ModelRef, Outcome, PairData, Request, ServerFrame, SessionView, TicketData,
    WorkerView,
};
use tether_domain::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The bound on every single wait of the suite.
pub const WAIT: Duration = Duration::from_secs(30);
/// The bound on a whole scenario.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

/// How the server handles the frames of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One after another, in order (the default).
    Sequential,
    /// `--concurrent-frames`: each in its own task, so replies and effects may reorder.
    Concurrent,
}

/// Wall-clock milliseconds since the Unix epoch, as the server counts time.
pub fn now_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(since.as_millis()).expect("a sane clock")
}

/// Runs a scenario within [`SCENARIO_LIMIT`].
pub async fn run<F: std::future::Future<Output = ()>>(name: &str, mode: Mode, scenario: F) {
    if tokio::time::timeout(SCENARIO_LIMIT, scenario)
        .await
        .is_err()
    {
        panic!("scenario {name} ({mode:?}) did not finish within {SCENARIO_LIMIT:?}");
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A `tether serve` process on its own temporary data directory. Killed
/// (SIGKILL) when dropped; its log is printed when the test fails.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    mode: Mode,
    extra: Vec<String>,
    generation: u32,
    up: Option<UpLaunch>,
}

/// `tether up` instead of `tether serve`: the host with this machine's
/// worker, driving real opencode in `workdir`.
#[derive(Clone, Debug)]
pub struct UpLaunch {
    pub workdir: PathBuf,
    pub opencode: PathBuf,
    /// Extra environment (opencode's XDG directories, say).
    pub env: Vec<(String, String)>,
}

impl Server {
    /// A server on a fresh data directory.
    pub async fn start(mode: Mode) -> Self {
        Self::start_with(mode, &[]).await
    }

    /// A server on a fresh data directory, with extra `serve` flags.
    pub async fn start_with(mode: Mode, extra: &[&str]) -> Self {
        let root = tempfile::Builder::new()
            .prefix("tether-e2e-")
            .tempdir()
            .expect("create a temporary directory");
        std::fs::create_dir_all(root.path().join("data")).expect("create the data directory");
        let mut server = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            root,
            mode,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            generation: 0,
            up: None,
        };
        server.spawn().await;
        server
    }

    /// `tether up` on a fresh data directory, with extra flags.
    #[allow(dead_code, reason = "used by the agent suite, which shares this file")]
    pub async fn start_up(mode: Mode, up: UpLaunch, extra: &[&str]) -> Self {
        let root = tempfile::Builder::new()
            .prefix("tether-up-")
            .tempdir()
            .expect("create a temporary directory");
        std::fs::create_dir_all(root.path().join("data")).expect("create the data directory");
        let mut server = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            root,
            mode,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            generation: 0,
            up: Some(up),
        };
        server.spawn().await;
        server
    }

    /// The owner `tether up` made on its first start (its secret is printed once).
    #[allow(dead_code, reason = "used by the agent suite, which shares this file")]
    pub fn owner(&self) -> User {
        let stdout = std::fs::read_to_string(self.root.path().join("server-0.stdout")).unwrap_or_default();
        let secret = stdout
            .split_whitespace()
            .find(|t| t.starts_with("tsk_"))
            .unwrap_or_else(|| panic!("`tether up` printed no owner secret:\n{stdout}"))
            .to_owned();
        User {
            name: "owner".into(),
            secret,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The process id of the running server.
    #[allow(dead_code, reason = "used by the security suite, which shares this file")]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_path(&self, generation: u32) -> PathBuf {
        self.root.path().join(format!("server-{generation}.log"))
    }

    async fn spawn(&mut self) {
        let log_path = self.log_path(self.generation);
        let log = std::fs::File::create(&log_path).expect("create the server log");
        let mut cmd = Command::new(crate::TETHER_BIN);
        match &self.up {
            None => {
                cmd.arg("serve").arg("--bind").arg("127.0.0.1:0");
            }
            Some(up) => {
                cmd.arg("up")
                    .arg("--port")
                    .arg("0")
                    .arg("--dir")
                    .arg(&up.workdir)
                    .arg("--opencode")
                    .arg(&up.opencode);
            }
        }
        cmd.arg("--data-dir").arg(self.data_dir());
        if self.mode == Mode::Concurrent {
            cmd.arg("--concurrent-frames");
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // Settings come from the flags alone, whatever this environment holds.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TETHER_") {
                cmd.env_remove(&key);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        if let Some(up) = &self.up {
            cmd.envs(up.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        // The log is a file, printed when a test fails: plain text reads best.
        cmd.env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn `tether serve`");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = oneshot::channel::<Result<SocketAddr, String>>();
        let stdout_log = self
            .root
            .path()
            .join(format!("server-{}.stdout", self.generation));
        std::thread::spawn(move || read_stdout(stdout, tx, stdout_log));
        self.child = Some(child);
        let addr = match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(Ok(addr))) => addr,
            Ok(Ok(Err(why))) => panic!("`tether serve` did not start: {why}\n{}", self.logs()),
            Ok(Err(_)) => panic!("`tether serve` stdout reader vanished\n{}", self.logs()),
            Err(_) => panic!(
                "`tether serve` printed no `tether listening on http://…` line within {WAIT:?}\n{}",
                self.logs()
            ),
        };
        self.addr = addr;
    }

    /// Kills the process with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then a new process on the same data directory (on a new port).
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.generation += 1;
        self.spawn().await;
    }

    /// The logs of every process this server ran so far (the last 200 lines of each).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for generation in 0..=self.generation {
            for path in [
                self.log_path(generation),
                self.root.path().join(format!("server-{generation}.stdout")),
            ] {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(200);
                let _ = writeln!(
                    out,
                    "----- {} ({} lines) -----",
                    path.display(),
                    lines.len()
                );
                for line in &lines[start..] {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out
    }

    /// `tether user add NAME [--admin] --data-dir DIR`: the new user and its secret.
    pub async fn add_user(&self, name: &str) -> User {
        self.add_user_with(name, false).await
    }

    pub async fn add_user_with(&self, name: &str, admin: bool) -> User {
        let mut cmd = tokio::process::Command::new(crate::TETHER_BIN);
        cmd.arg("user").arg("add").arg(name);
        if admin {
            cmd.arg("--admin");
        }
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TETHER_") {
                cmd.env_remove(&key);
            }
        }
        let out = tokio::time::timeout(WAIT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("`tether user add {name}` did not finish within {WAIT:?}"))
            .expect("run `tether user add`");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "`tether user add {name}` failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let secret = stdout
            .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ';'))
            .find(|t| t.starts_with("tsk_"))
            .unwrap_or_else(|| {
                panic!("`tether user add {name}` printed no `tsk_…` secret:\nstdout: {stdout}\nstderr: {stderr}")
            })
            .to_owned();
        User {
            name: name.to_owned(),
            secret,
        }
    }

    /// `tether user ARGS… --data-dir DIR` as a process (`reset NAME`,
    /// `remove NAME`, …): its output, whatever its exit status.
    #[allow(dead_code, reason = "used by the revocation scenarios (security suite, Lambda tier)")]
    pub async fn user_command(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::new(crate::TETHER_BIN);
        cmd.arg("user")
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TETHER_") {
                cmd.env_remove(&key);
            }
        }
        tokio::time::timeout(WAIT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("`tether user {}` did not finish within {WAIT:?}", args.join(" ")))
            .unwrap_or_else(|e| panic!("run `tether user {}`: {e}", args.join(" ")))
    }

    /// `POST /api/ticket` for a user; panics unless it succeeds.
    pub async fn ticket(&self, user: &User) -> TicketData {
        let res = http_post(self.addr, "/api/ticket", Some(&user.secret), None).await;
        assert_eq!(
            res.status, 200,
            "POST /api/ticket for {}: {res:?}",
            user.name
        );
        res.parse()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== server logs ({}) =====\n{}",
                self.root.path().display(),
                self.logs()
            );
        }
    }
}

fn read_stdout(
    stdout: std::process::ChildStdout,
    tx: oneshot::Sender<Result<SocketAddr, String>>,
    copy_to: PathBuf,
) {
    use std::io::Write as _;
    let mut copy = std::fs::File::create(copy_to).ok();
    let mut tx = Some(tx);
    let reader = BufReader::new(stdout);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(f) = copy.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        let rest = line
            .split("listening on http://")
            .nth(1)
            .or_else(|| line.split("listening on https://").nth(1));
        if let Some(rest) = rest {
            let token = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/');
            if let Some(tx) = tx.take() {
                let parsed = token
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("cannot parse the address in {line:?}: {e}"));
                let _ = tx.send(parsed);
            }
        }
    }
    if let Some(tx) = tx.take() {
        let _ = tx.send(Err("the process closed its stdout (exited?)".into()));
    }
}

/// A user made with `tether user add`.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub secret: String,
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("HTTP body is not JSON ({e}): {:?}", self.body))
    }

    pub fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.json())
            .unwrap_or_else(|e| panic!("unexpected HTTP body ({e}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 POST (plain TCP, `Connection: close`).
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> HttpResponse {
    http_post_with(addr, path, bearer, body, &[]).await
}

/// [`http_post`] with more headers (e.g. `X-Forwarded-For`, as a proxy on
/// the host's machine sends it).
pub async fn http_post_with(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let fut = async {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(token) = bearer {
            let _ = write!(req, "Authorization: Bearer {token}\r\n");
        }
        for (name, value) in headers {
            let _ = write!(req, "{name}: {value}\r\n");
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let mut stream = TcpStream::connect(addr).await.expect("connect for HTTP");
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write the HTTP request");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .expect("read the HTTP response");
        parse_http_response(&raw)
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("POST {path} got no response within {WAIT:?}"))
}

fn parse_http_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("malformed HTTP status line: {status_line:?}"));
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size =
                usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    HttpResponse { status, body }
}

// ---------------------------------------------------------------------------
// Websocket plumbing shared by both roles
// ---------------------------------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An upgrade the server refused: its HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Refused {
    /// Asserts the status, and the error code of the JSON body when the
    /// body came with the response head (the websocket client keeps only
    /// what arrived with it).
    pub fn assert(&self, status: u16, code: ErrorCode, what: &str) {
        assert_eq!(self.status, status, "{what}: refused with {self:?}");
        if !self.body.trim().is_empty() {
            let body: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| {
                panic!(
                    "{what}: the refusal body is not JSON ({e}): {:?}",
                    self.body
                )
            });
            assert_eq!(
                body.get("code").and_then(Value::as_str),
                Some(code.as_str()),
                "{what}: the refusal body: {}",
                self.body
            );
        }
    }
}

/// Asserts that a connection attempt was refused with this status and code.
pub fn assert_refused<T>(attempt: Result<T, Refused>, status: u16, code: ErrorCode, what: &str) {
    match attempt {
        Ok(_) => panic!("{what}: the connection was accepted; expected HTTP {status}"),
        Err(r) => r.assert(status, code, what),
    }
}

/// Opens a websocket; `Err` carries the HTTP status of a refused upgrade.
pub async fn open_ws(
    addr: SocketAddr,
    path_and_query: &str,
    bearer: Option<&str>,
) -> Result<Ws, Refused> {
    let url = format!("ws://{addr}{path_and_query}");
    let mut request = url
        .as_str()
        .into_client_request()
        .expect("a websocket request");
    if let Some(token) = bearer {
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
    }
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("websocket connect to {url} did not finish within {WAIT:?}"));
    match attempt {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(Refused {
                status: response.status().as_u16(),
                body,
            })
        }
        Err(e) => panic!("websocket connect to {url} failed without an HTTP status: {e}"),
    }
}

/// The one reply to a request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The action the request named (for messages).
    pub action: String,
    pub id: Option<String>,
    pub ok: bool,
    pub data: Value,
    /// `(code, message)` of an error reply.
    pub error: Option<(String, String)>,
    pub raw: String,
}

impl Reply {
    fn from_value(raw: &str, v: &Value) -> Self {
        Self {
            action: String::new(),
            id: v.get("id").and_then(Value::as_str).map(str::to_owned),
            ok: v.get("ok").and_then(Value::as_bool).unwrap_or(false),
            data: v.get("data").cloned().unwrap_or(Value::Null),
            error: v.get("error").map(|e| {
                (
                    e.get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                )
            }),
            raw: raw.to_owned(),
        }
    }

    /// The data of a successful reply; panics with the error otherwise.
    pub fn ok(&self) -> &Value {
        assert!(
            self.ok && self.error.is_none(),
            "`{}` was refused: {}",
            self.action,
            self.raw
        );
        &self.data
    }

    /// The whole data, typed.
    pub fn data_as<T: DeserializeOwned>(&self) -> T {
        let data = self.ok().clone();
        serde_json::from_value(data).unwrap_or_else(|e| {
            panic!(
                "`{}` reply data has an unexpected shape ({e}): {}",
                self.action, self.raw
            )
        })
    }

    /// One field of the data, typed.
    pub fn field<T: DeserializeOwned>(&self, key: &str) -> T {
        let value = self
            .ok()
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("`{}` reply has no `{key}`: {}", self.action, self.raw));
        serde_json::from_value(value).unwrap_or_else(|e| {
            panic!(
                "`{}` reply `{key}` has an unexpected shape ({e}): {}",
                self.action, self.raw
            )
        })
    }

    /// Asserts an error reply with this stable code.
    pub fn expect_err(&self, code: ErrorCode) -> &Self {
        match &self.error {
            Some((got, _)) if !self.ok && got == code.as_str() => self,
            _ => panic!(
                "`{}`: expected an error reply with code `{}`, got: {}",
                self.action,
                code.as_str(),
                self.raw
            ),
        }
    }
}

/// Why and how a socket ended.
#[derive(Clone, Debug)]
pub struct Closed {
    /// The close code the server sent, if it sent a close frame.
    pub code: Option<u16>,
    pub reason: String,
    /// A transport error that ended the socket instead.
    pub error: Option<String>,
}

enum Incoming {
    Event(ServerFrame),
    /// A reply whose id was unreadable (or matched no request).
    Orphan(Reply),
    /// A frame that does not parse as a server frame.
    Unparsed(String),
    Closed(Closed),
}

type PendingMap = Arc<Mutex<HashMap<String, (String, oneshot::Sender<Reply>)>>>;

/// A reply on its way.
pub struct PendingReply {
    label: String,
    action: String,
    id: String,
    rx: oneshot::Receiver<Reply>,
}

impl PendingReply {
    pub async fn get(self) -> Reply {
        match tokio::time::timeout(WAIT, self.rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => panic!(
                "{}: the connection ended before the reply to `{}` ({})",
                self.label, self.action, self.id
            ),
            Err(_) => panic!(
                "{}: no reply to `{}` ({}) within {WAIT:?}",
                self.label, self.action, self.id
            ),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh request id, unique within the test process.
pub fn request_id() -> RequestId {
    RequestId::parse(format!("req_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)))
        .expect("a request id")
}

/// One websocket connection: requests with unique ids whose replies are
/// matched by id, and a queue of pushed events.
pub struct Socket {
    pub label: String,
    sink: Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>,
    pending: PendingMap,
    inbox: mpsc::UnboundedReceiver<Incoming>,
    backlog: VecDeque<ServerFrame>,
    orphans: VecDeque<Reply>,
    closed: Option<Closed>,
    reader: JoinHandle<()>,
}

impl Socket {
    fn new(label: impl Into<String>, ws: Ws) -> Self {
        let label = label.into();
        let (sink, stream) = ws.split();
        let pending: PendingMap = Arc::new(Mutex::new(HashMap::new()));
        let (tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(stream, pending.clone(), tx));
        Self {
            label,
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            pending,
            inbox,
            backlog: VecDeque::new(),
            orphans: VecDeque::new(),
            closed: None,
            reader,
        }
    }

    async fn write(&self, msg: Message) {
        let mut sink = self.sink.lock().await;
        tokio::time::timeout(WAIT, sink.send(msg))
            .await
            .unwrap_or_else(|_| panic!("{}: a send did not finish within {WAIT:?}", self.label))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.label));
    }

    /// Sends a request and returns its reply-to-be (for pipelining).
    pub async fn send(&self, request: Request) -> PendingReply {
        let frame = ClientFrame {
            id: request_id(),
            request,
        };
        self.send_text(frame.request.action(), frame.id.as_str(), frame.to_json())
            .await
    }

    /// Sends any text as one frame and registers `id` for its reply.
    pub async fn send_text(&self, action: &str, id: &str, text: String) -> PendingReply {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending map")
            .insert(id.to_owned(), (action.to_owned(), tx));
        self.write(Message::Text(text.into())).await;
        PendingReply {
            label: self.label.clone(),
            action: action.to_owned(),
            id: id.to_owned(),
            rx,
        }
    }

    /// Sends a request and awaits its reply.
    pub async fn call(&self, request: Request) -> Reply {
        self.send(request).await.get().await
    }

    pub async fn ping(&self) -> Reply {
        self.call(Request::Ping {}).await
    }

    /// Asserts the connection still answers.
    pub async fn assert_usable(&self, after: &str) {
        let reply = self.ping().await;
        assert!(
            reply.ok,
            "{}: `ping` after {after} was refused: {}",
            self.label, reply.raw
        );
    }

    /// Sends raw text as one frame and awaits its reply: the reply with
    /// `id` if the frame carries one the server can read, otherwise the next
    /// reply that has no readable id.
    pub async fn raw(&mut self, what: &str, text: String, id: Option<&str>) -> Reply {
        let pending = match id {
            Some(id) => Some(self.send_text(what, id, text).await),
            None => {
                self.write(Message::Text(text.into())).await;
                None
            }
        };
        self.await_raw_reply(what, pending).await
    }

    /// Sends one message as several websocket frames (fragments) of at most
    /// `fragment` bytes each, and awaits its reply as [`Self::raw`] does.
    pub async fn raw_fragmented(
        &mut self,
        what: &str,
        text: String,
        id: Option<&str>,
        fragment: usize,
    ) -> Reply {
        let (tx, rx) = oneshot::channel();
        if let Some(id) = id {
            self.pending
                .lock()
                .expect("pending map")
                .insert(id.to_owned(), (what.to_owned(), tx));
        }
        let bytes = text.into_bytes();
        let pieces: Vec<&[u8]> = bytes.chunks(fragment).collect();
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = Frame::message(piece.to_vec(), opcode, i + 1 == n);
            self.write(Message::Frame(frame)).await;
        }
        let pending = id.map(|id| PendingReply {
            label: self.label.clone(),
            action: what.to_owned(),
            id: id.to_owned(),
            rx,
        });
        self.await_raw_reply(what, pending).await
    }

    async fn await_raw_reply(&mut self, what: &str, pending: Option<PendingReply>) -> Reply {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut rx = pending.map(|p| p.rx);
        loop {
            if let Some(mut orphan) = self.orphans.pop_front() {
                orphan.action = what.to_owned();
                return orphan;
            }
            if let Some(closed) = &self.closed {
                panic!(
                    "{}: the connection ended ({closed:?}) before the reply to {what}",
                    self.label
                );
            }
            tokio::select! {
                reply = async { rx.as_mut().expect("checked").await }, if rx.is_some() => {
                    match reply {
                        Ok(mut reply) => { reply.action = what.to_owned(); return reply; }
                        Err(_) => { rx = None; }
                    }
                }
                incoming = self.inbox.recv() => self.take(incoming),
                _ = tokio::time::sleep_until(deadline) => {
                    panic!("{}: no reply to {what} within {WAIT:?}; {}", self.label, self.describe_backlog());
                }
            }
        }
    }

    fn take(&mut self, incoming: Option<Incoming>) {
        match incoming {
            Some(Incoming::Event(e)) => self.backlog.push_back(e),
            Some(Incoming::Orphan(r)) => self.orphans.push_back(r),
            Some(Incoming::Unparsed(text)) => panic!(
                "{}: the server sent a frame that is not a protocol frame: {text}",
                self.label
            ),
            Some(Incoming::Closed(c)) => self.closed = Some(c),
            None => {
                if self.closed.is_none() {
                    self.closed = Some(Closed {
                        code: None,
                        reason: String::new(),
                        error: Some("reader ended".into()),
                    });
                }
            }
        }
    }

    /// The first pushed event (queued or to come) that matches, removing it
    /// from the queue; events that do not match stay queued.
    pub async fn next_event<F>(&mut self, what: &str, pred: F) -> ServerFrame
    where
        F: Fn(&ServerFrame) -> bool,
    {
        self.next_event_within(what, WAIT, pred)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {what} within {WAIT:?}; {}",
                    self.label,
                    self.describe_backlog()
                )
            })
    }

    /// Like [`Self::next_event`] but `None` on timeout.
    pub async fn next_event_within<F>(
        &mut self,
        what: &str,
        within: Duration,
        pred: F,
    ) -> Option<ServerFrame>
    where
        F: Fn(&ServerFrame) -> bool,
    {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(closed) = &self.closed {
                panic!(
                    "{}: the connection ended ({closed:?}) while waiting for {what}; {}",
                    self.label,
                    self.describe_backlog()
                );
            }
            let incoming = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(incoming) => incoming,
                Err(_) => return None,
            };
            match incoming {
                Some(Incoming::Event(e)) if pred(&e) => return Some(e),
                other => self.take(other),
            }
        }
    }

    /// Discards every event received so far (after a ping round trip, so
    /// everything pushed before it has arrived).
    pub async fn drain_events(&mut self) {
        self.assert_usable("draining events").await;
        while let Ok(incoming) = self.inbox.try_recv() {
            self.take(Some(incoming));
        }
        self.backlog.clear();
    }

    /// Every event received so far, after a ping round trip (so everything
    /// pushed before it has arrived). They leave the queue.
    pub async fn received_events(&mut self) -> Vec<ServerFrame> {
        self.assert_usable("collecting events").await;
        while let Ok(incoming) = self.inbox.try_recv() {
            self.take(Some(incoming));
        }
        self.backlog.drain(..).collect()
    }

    /// Replies that matched no request sent (a second reply to one
    /// request, or one without a readable id), after a ping round trip.
    pub async fn stray_replies(&mut self) -> Vec<Reply> {
        self.assert_usable("collecting stray replies").await;
        while let Ok(incoming) = self.inbox.try_recv() {
            self.take(Some(incoming));
        }
        self.orphans.drain(..).collect()
    }

    /// Waits until the server closes the socket.
    pub async fn wait_closed(&mut self) -> Closed {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(c) = &self.closed {
                return c.clone();
            }
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(incoming) => self.take(incoming),
                Err(_) => panic!(
                    "{}: the server did not close the socket within {WAIT:?}",
                    self.label
                ),
            }
        }
    }

    /// Closes the socket with a close handshake and waits for it to end.
    pub async fn close(mut self) {
        {
            let mut sink = self.sink.lock().await;
            let _ = tokio::time::timeout(WAIT, sink.send(Message::Close(None))).await;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(incoming) => {
                    // Events after our close are of no interest.
                    if let Some(Incoming::Closed(c)) = incoming {
                        self.closed = Some(c);
                    } else if incoming.is_none() {
                        break;
                    }
                }
                Err(_) => panic!(
                    "{}: the close handshake did not finish within {WAIT:?}",
                    self.label
                ),
            }
        }
    }

    /// Drops the TCP connection without a close handshake (a crash, a lost
    /// network), leaving unread replies unread.
    pub async fn drop_abruptly(mut self) {
        self.reader.abort();
        let reader = std::mem::replace(&mut self.reader, tokio::spawn(async {}));
        // The reader task owned the read half: once it is gone, dropping
        // `self` drops the write half and with it the TCP stream.
        let _ = reader.await;
    }

    fn describe_backlog(&self) -> String {
        let mut s = format!("{} queued events", self.backlog.len());
        if !self.backlog.is_empty() {
            s.push_str(": ");
            for e in self.backlog.iter().take(30) {
                let _ = write!(s, "\n  {}", serde_json::to_string(e).unwrap_or_default());
            }
        }
        if let Some(c) = &self.closed {
            let _ = write!(s, "\n  (closed: {c:?})");
        }
        s
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    pending: PendingMap,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let mut closed = Closed {
        code: None,
        reason: String::new(),
        error: None,
    };
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                let text = text.as_str();
                let value: Value = match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(_) => {
                        let _ = tx.send(Incoming::Unparsed(text.to_owned()));
                        continue;
                    }
                };
                if value.get("type").and_then(Value::as_str) == Some("reply") {
                    let mut reply = Reply::from_value(text, &value);
                    let waiter = reply
                        .id
                        .as_ref()
                        .and_then(|id| pending.lock().expect("pending map").remove(id));
                    match waiter {
                        Some((action, waiter)) => {
                            reply.action = action;
                            let _ = waiter.send(reply);
                        }
                        None => {
                            let _ = tx.send(Incoming::Orphan(reply));
                        }
                    }
                    continue;
                }
                match serde_json::from_value::<ServerFrame>(value) {
                    Ok(frame) => {
                        let _ = tx.send(Incoming::Event(frame));
                    }
                    Err(e) => {
                        let _ = tx.send(Incoming::Unparsed(format!("{text} ({e})")));
                    }
                }
            }
            Ok(Message::Binary(b)) => {
                let _ = tx.send(Incoming::Unparsed(format!(
                    "a binary frame of {} bytes",
                    b.len()
                )));
            }
            Ok(Message::Close(frame)) => {
                if let Some(f) = frame {
                    closed.code = Some(u16::from(f.code));
                    closed.reason = f.reason.to_string();
                }
            }
            Ok(_) => {}
            Err(e) => {
                closed.error = Some(e.to_string());
                break;
            }
        }
    }
    pending.lock().expect("pending map").clear();
    let _ = tx.send(Incoming::Closed(closed));
}

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------

/// A browser-like client: a ticket over HTTP, then a websocket.
pub struct UserClient {
    pub sock: Socket,
    pub user: User,
}

impl std::ops::Deref for UserClient {
    type Target = Socket;
    fn deref(&self) -> &Socket {
        &self.sock
    }
}

impl std::ops::DerefMut for UserClient {
    fn deref_mut(&mut self) -> &mut Socket {
        &mut self.sock
    }
}

impl UserClient {
    /// Drops the connection without a close handshake.
    pub async fn drop_abruptly(self) {
        self.sock.drop_abruptly().await
    }
}

impl UserClient {
    /// A fresh ticket, then the websocket; panics if refused.
    pub async fn connect(server: &Server, user: &User) -> Self {
        let ticket = server.ticket(user).await;
        Self::connect_with_ticket(server, user, &ticket.ticket)
            .await
            .unwrap_or_else(|r| panic!("user {} could not connect: {r:?}", user.name))
    }

    pub async fn connect_with_ticket(
        server: &Server,
        user: &User,
        ticket: &str,
    ) -> Result<Self, Refused> {
        let ws = open_ws(server.addr, &format!("/ws?ticket={ticket}"), None).await?;
        Ok(Self {
            sock: Socket::new(format!("user {}", user.name), ws),
            user: user.clone(),
        })
    }

    pub async fn start_session(&self, session: &SessionId, worker: &WorkerId) -> SessionView {
        self.call(Request::SessionStart {
            session_id: session.clone(),
            worker_id: worker.clone(),
            model: test_model(),
            title: Some("e2e".into()),
        })
        .await
        .field("session")
    }

    pub async fn watch(
        &self,
        session: &SessionId,
        after: Option<tether_domain::protocol::Cursor>,
    ) -> HistoryPage {
        self.call(Request::SessionWatch {
            session_id: session.clone(),
            after,
        })
        .await
        .data_as()
    }

    pub async fn history(&self, session: &SessionId) -> HistoryPage {
        self.call(Request::SessionHistory {
            session_id: session.clone(),
            after: None,
        })
        .await
        .data_as()
    }

    pub async fn send_message(
        &self,
        session: &SessionId,
        message: &MessageId,
        text: &str,
    ) -> MessageView {
        self.call(Request::MessageSend {
            session_id: session.clone(),
            message_id: message.clone(),
            text: text.to_owned(),
        })
        .await
        .field("message")
    }

    pub async fn machines(&self) -> Vec<MachineView> {
        self.call(Request::MachineList {}).await.field("machines")
    }

    pub async fn sessions(&self) -> Vec<SessionView> {
        self.call(Request::SessionList {
            worker_id: None,
            before: None,
            limit: None,
        })
        .await
        .field("sessions")
    }

    /// The worker as `machine_list` shows it.
    pub async fn worker_view(&self, worker: &WorkerId) -> WorkerView {
        self.machines()
            .await
            .into_iter()
            .flat_map(|m| m.workers)
            .find(|w| &w.worker_id == worker)
            .unwrap_or_else(|| panic!("{}: machine_list does not show worker {worker}", self.label))
    }

    /// Waits for a `worker_updated` of this worker that matches.
    pub async fn worker_updated<F>(&mut self, worker: &WorkerId, what: &str, pred: F) -> WorkerView
    where
        F: Fn(&WorkerView) -> bool,
    {
        let worker = worker.clone();
        match self
            .next_event(&format!("worker_updated ({what})"), |e| {
                matches!(e, ServerFrame::WorkerUpdated { worker: w } if w.worker_id == worker && pred(w))
            })
            .await
        {
            ServerFrame::WorkerUpdated { worker } => worker,
            _ => unreachable!(),
        }
    }

    /// Reads this message's `chunks` and `message_updated` events until its
    /// answer is final: the chunks in arrival order and the statuses seen.
    pub async fn follow_to_end(&mut self, message: &MessageId) -> Followed {
        self.follow_on(message, Followed::default(), false).await
    }

    /// Like [`Self::follow_to_end`], adding to what was seen of the answer
    /// already; with `whole`, it also waits for every chunk the completion
    /// counted (frames may be handled out of order, so the completion can
    /// overtake the last chunks).
    pub async fn follow_on(&mut self, message: &MessageId, mut followed: Followed, whole: bool) -> Followed {
        loop {
            let m = message.clone();
            let event = self
                .next_event(
                    &format!("chunks or message_updated of {message}"),
                    |e| match e {
                        ServerFrame::Chunks { message_id, .. } => *message_id == m,
                        ServerFrame::MessageUpdated { message } => message.message_id == m,
                        _ => false,
                    },
                )
                .await;
            match event {
                ServerFrame::Chunks { chunks, .. } => followed.chunks.extend(chunks),
                ServerFrame::MessageUpdated { message } => {
                    let last = message.status.is_final();
                    let count = message.chunk_count.unwrap_or(0);
                    followed.statuses.push(message.status);
                    followed.last = Some(message);
                    if last {
                        let wanted = followed.last.as_ref().map(|v| v.message_id.clone()).expect("just set");
                        while whole && (0..count).any(|s| !followed.chunks.iter().any(|c| c.seq == s)) {
                            let m = wanted.clone();
                            let event = self
                                .next_event(
                                    &format!("the rest of the {count} chunks of {wanted}"),
                                    |e| matches!(e, ServerFrame::Chunks { message_id, .. } if *message_id == m),
                                )
                                .await;
                            if let ServerFrame::Chunks { chunks, .. } = event {
                                followed.chunks.extend(chunks);
                            }
                        }
                        return followed;
                    }
                }
                _ => unreachable!(),
            }
        }
    }

    /// Waits until `chunks` events have brought every seq in `seqs` of a message.
    pub async fn chunks_until(
        &mut self,
        message: &MessageId,
        seqs: std::ops::Range<u32>,
    ) -> Vec<ChunkView> {
        let mut got: Vec<ChunkView> = Vec::new();
        while !seqs.clone().all(|s| got.iter().any(|c| c.seq == s)) {
            let m = message.clone();
            match self
                .next_event(
                    &format!("chunks of {message} up to seq {}", seqs.end - 1),
                    |e| matches!(e, ServerFrame::Chunks { message_id, .. } if *message_id == m),
                )
                .await
            {
                ServerFrame::Chunks { chunks, .. } => got.extend(chunks),
                _ => unreachable!(),
            }
        }
        got
    }
}

/// What a watcher saw of one answer.
#[derive(Debug, Default)]
pub struct Followed {
    pub chunks: Vec<ChunkView>,
    pub statuses: Vec<MessageStatus>,
    pub last: Option<MessageView>,
}

impl Followed {
    pub fn seqs(&self) -> Vec<u32> {
        self.chunks.iter().map(|c| c.seq).collect()
    }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

/// A worker's identity: its credential and what pairing told it.
#[derive(Clone, Debug)]
pub struct WorkerIdentity {
    pub credential: String,
    pub worker_id: WorkerId,
    pub code: Option<String>,
    pub machine: String,
    pub workdir: String,
}

/// `POST /api/pair` with a fresh random credential; panics unless it succeeds.
pub async fn pair(server: &Server, machine: &str, workdir: &str) -> WorkerIdentity {
    let credential = Secret::generate("twk_").expose().to_owned();
    let res = http_post(
        server.addr,
        "/api/pair",
        Some(&credential),
        Some(&json!({ "machine": machine, "workdir": workdir })),
    )
    .await;
    assert_eq!(res.status, 200, "POST /api/pair: {res:?}");
    let data: PairData = res.parse();
    assert_eq!(
        data.status,
        WorkerStatus::Pending,
        "a new worker is pending: {res:?}"
    );
    assert!(data.code.is_some(), "a pending worker gets a code: {res:?}");
    WorkerIdentity {
        credential,
        worker_id: data.worker_id,
        code: data.code,
        machine: machine.to_owned(),
        workdir: workdir.to_owned(),
    }
}

/// A worker process: connects with its credential as a Bearer header.
pub struct WorkerClient {
    pub sock: Socket,
    pub identity: WorkerIdentity,
}

impl std::ops::Deref for WorkerClient {
    type Target = Socket;
    fn deref(&self) -> &Socket {
        &self.sock
    }
}

impl std::ops::DerefMut for WorkerClient {
    fn deref_mut(&mut self) -> &mut Socket {
        &mut self.sock
    }
}

impl WorkerClient {
    /// Closes the socket with a close handshake.
    pub async fn close(self) {
        self.sock.close().await
    }

    /// Drops the connection without a close handshake.
    pub async fn drop_abruptly(self) {
        self.sock.drop_abruptly().await
    }
}

impl WorkerClient {
    pub async fn connect(server: &Server, identity: &WorkerIdentity) -> Self {
        Self::try_connect(server, identity)
            .await
            .unwrap_or_else(|r| panic!("worker {} could not connect: {r:?}", identity.worker_id))
    }

    pub async fn try_connect(server: &Server, identity: &WorkerIdentity) -> Result<Self, Refused> {
        let ws = open_ws(server.addr, "/ws", Some(&identity.credential)).await?;
        Ok(Self {
            sock: Socket::new(format!("worker {}", identity.worker_id), ws),
            identity: identity.clone(),
        })
    }

    pub fn id(&self) -> &WorkerId {
        &self.identity.worker_id
    }

    /// `worker_hello` with the test models and these active messages.
    pub async fn hello(&self, active: &[MessageId]) -> Reply {
        self.hello_with(test_models(), active).await
    }

    pub async fn hello_with(&self, models: Vec<ModelInfo>, active: &[MessageId]) -> Reply {
        let default_model = (!models.is_empty()).then(test_model);
        self.call(Request::WorkerHello {
            machine: Some(self.identity.machine.clone()),
            name: None,
            workdir: Some(self.identity.workdir.clone()),
            version: Some("e2e".into()),
            models,
            default_model,
            active_messages: active.to_vec(),
            agent: None,
        })
        .await
    }

    pub async fn session_ready(&self, session: &SessionId) -> SessionView {
        self.call(Request::SessionReady {
            session_id: session.clone(),
            agent_session_id: format!("agent-{session}"),
        })
        .await
        .field("session")
    }

    pub async fn started(&self, message: &MessageId) -> MessageView {
        self.call(Request::MessageStarted {
            message_id: message.clone(),
        })
        .await
        .field("message")
    }

    pub fn chunks_request(message: &MessageId, chunks: &[(u32, &str)]) -> Request {
        Request::Chunks {
            message_id: message.clone(),
            chunks: chunks
                .iter()
                .map(|(seq, delta)| text_chunk(*seq, delta))
                .collect(),
        }
    }

    /// One `chunks` frame; returns its acknowledgement.
    pub async fn chunks(&self, message: &MessageId, chunks: &[(u32, &str)]) -> ChunksAck {
        self.call(Self::chunks_request(message, chunks))
            .await
            .data_as()
    }

    /// A completion: how many chunks the answer has. It carries no text,
    /// the host has the chunks.
    pub fn complete_request(message: &MessageId, outcome: Outcome, chunk_count: u32) -> Request {
        Request::MessageComplete {
            message_id: message.clone(),
            outcome,
            chunk_count,
            error: None,
        }
    }

    pub async fn complete(&self, message: &MessageId, chunk_count: u32) -> MessageView {
        self.call(Self::complete_request(message, Outcome::Complete, chunk_count))
            .await
            .field("message")
    }

    /// Waits for a `message_dispatch` of this message.
    pub async fn dispatched(&mut self, message: &MessageId) -> ServerFrame {
        let m = message.clone();
        self.next_event(
            &format!("message_dispatch of {message}"),
            |e| matches!(e, ServerFrame::MessageDispatch { message_id, .. } if *message_id == m),
        )
        .await
    }
}

pub fn text_chunk(seq: u32, delta: &str) -> ChunkIn {
    ChunkIn {
        seq,
        body: ChunkBody::Text {
            part_id: "part-1".into(),
            delta: delta.to_owned(),
        },
    }
}

pub fn test_model() -> ModelRef {
    ModelRef {
        provider_id: "e2e".into(),
        model_id: "echo-1".into(),
    }
}

pub fn test_models() -> Vec<ModelInfo> {
    vec![ModelInfo {
        provider_id: "e2e".into(),
        model_id: "echo-1".into(),
        name: "Echo 1".into(),
        reasoning: Some(false),
        context_limit: Some(8192),
    }]
}

/// The text of an answer: its text deltas in seq order.
pub fn answer_text(chunks: &[ChunkView], message: &MessageId) -> String {
    let mut mine: Vec<&ChunkView> = chunks.iter().filter(|c| &c.message_id == message).collect();
    mine.sort_by_key(|c| c.seq);
    mine.iter()
        .filter_map(|c| match &c.body {
            ChunkBody::Text { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

/// The seqs of one message's chunks, in the order given.
pub fn seqs_of(chunks: &[ChunkView], message: &MessageId) -> Vec<u32> {
    chunks
        .iter()
        .filter(|c| &c.message_id == message)
        .map(|c| c.seq)
        .collect()
}

// ---------------------------------------------------------------------------
// Flows several scenarios share
// ---------------------------------------------------------------------------

/// A user with a connected, approved worker that has said hello with models.
pub struct Paired {
    pub user: UserClient,
    pub worker: WorkerClient,
}

/// Makes a user, pairs a new worker to it and brings both online.
pub async fn paired(server: &Server, user_name: &str) -> Paired {
    let account = server.add_user(user_name).await;
    let mut user = UserClient::connect(server, &account).await;
    let identity = pair(
        server,
        &format!("{user_name}-laptop"),
        &format!("/home/{user_name}/project"),
    )
    .await;
    let mut worker = WorkerClient::connect(server, &identity).await;
    let hello = worker.hello(&[]).await;
    assert_eq!(
        hello.field::<WorkerView>("worker").status,
        WorkerStatus::Pending
    );
    let code = identity.code.clone().expect("a pairing code");
    user.call(Request::PairingApprove { code, name: None })
        .await
        .ok();
    worker
        .next_event("pairing_status approved", |e| {
            matches!(
                e,
                ServerFrame::PairingStatus {
                    status: WorkerStatus::Approved,
                    ..
                }
            )
        })
        .await;
    let hello = worker.hello(&[]).await;
    assert_eq!(
        hello.field::<WorkerView>("worker").status,
        WorkerStatus::Approved
    );
    let id = identity.worker_id.clone();
    user.worker_updated(&id, "online with models", |w| {
        w.online && !w.models.is_empty()
    })
    .await;
    Paired { user, worker }
}

/// Starts a session and has the worker make it ready.
pub async fn ready_session(user: &UserClient, worker: &mut WorkerClient) -> SessionId {
    let session = SessionId::random();
    let view = user.start_session(&session, worker.id()).await;
    assert_eq!(view.session_id, session);
    let s = session.clone();
    worker
        .next_event(
            "session_start",
            |e| matches!(e, ServerFrame::SessionStart { session_id, .. } if *session_id == s),
        )
        .await;
    let ready = worker.session_ready(&session).await;
    assert_eq!(ready.status, tether_domain::model::SessionStatus::Ready);
    session
}

/// Sends a message and has the worker answer it in full: dispatch,
/// `message_started`, one awaited `chunks` frame per two deltas, then
/// `message_complete`. Returns the message id and the answer's text.
pub async fn exchange(
    user: &UserClient,
    worker: &mut WorkerClient,
    session: &SessionId,
    text: &str,
    deltas: &[&str],
) -> (MessageId, String) {
    let message = MessageId::random();
    let sent = user.send_message(session, &message, text).await;
    assert_eq!(
        sent.status,
        MessageStatus::Dispatched,
        "the worker is online: {sent:?}"
    );
    worker.dispatched(&message).await;
    worker.started(&message).await;
    let mut seq = 0u32;
    for group in deltas.chunks(2) {
        let frame: Vec<(u32, &str)> = group
            .iter()
            .map(|d| {
                seq += 1;
                (seq - 1, *d)
            })
            .collect();
        let ack = worker.chunks(&message, &frame).await;
        let expected: Vec<u32> = frame.iter().map(|(s, _)| *s).collect();
        assert_eq!(ack.stored, expected, "fresh chunks are stored: {ack:?}");
        assert!(
            ack.duplicate.is_empty(),
            "fresh chunks are no duplicates: {ack:?}"
        );
    }
    let full: String = deltas.concat();
    let done = worker.complete(&message, seq).await;
    assert_eq!(done.status, MessageStatus::Complete);
    (message, full)
}
