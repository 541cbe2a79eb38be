//! The gateway alone, with a fake backend that records every call, accepts
//! or refuses `$connect`, and echoes each message back as its reply.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether_domain::ids::ConnectionId;
use tether_domain::push::{Push, PushError};
use tether_local::gateway::{
    Accept, Backend, ConnId, ConnectInfo, Gateway, GatewayConfig, Hub, Millis, Refusal,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Long enough for anything that should happen; tests wait on events, this
/// only bounds a failure.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Call {
    Connect(ConnectInfo),
    Message {
        conn: ConnId,
        route: String,
        body: String,
    },
    Disconnect {
        conn: ConnId,
        status: u16,
        reason: String,
    },
}

#[derive(Default)]
struct Behaviour {
    /// Refuse `$connect` with this status and body.
    refuse: Option<(u16, String)>,
    /// Hold `$connect` until this fires.
    hold_connect: Option<oneshot::Receiver<()>>,
    /// A message containing `"slow"` takes this long to handle.
    slow: Duration,
}

struct Fake {
    calls: mpsc::UnboundedSender<Call>,
    behaviour: Mutex<Behaviour>,
}

impl Backend for Fake {
    async fn connect(&self, info: ConnectInfo) -> Result<Accept, Refusal> {
        let _ = self.calls.send(Call::Connect(info));
        let (refuse, hold) = {
            let mut b = self.behaviour.lock().expect("lock");
            (b.refuse.clone(), b.hold_connect.take())
        };
        if let Some(hold) = hold {
            let _ = hold.await;
        }
        match refuse {
            Some((status, body)) => Err(Refusal { status, body }),
            None => Ok(Accept::default()),
        }
    }

    async fn message(
        &self,
        conn: &ConnId,
        route: &str,
        body: String,
        _now: Millis,
    ) -> Option<String> {
        let _ = self.calls.send(Call::Message {
            conn: conn.clone(),
            route: route.to_owned(),
            body: body.clone(),
        });
        if body.contains("slow") {
            let slow = self.behaviour.lock().expect("lock").slow;
            tokio::time::sleep(slow).await;
        }
        Some(json!({ "route": route, "len": body.len(), "head": head(&body) }).to_string())
    }

    async fn disconnect(&self, conn: &ConnId, status: u16, reason: String, _now: Millis) {
        let _ = self.calls.send(Call::Disconnect {
            conn: conn.clone(),
            status,
            reason,
        });
    }
}

fn head(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

struct Harness {
    addr: SocketAddr,
    hub: Hub,
    calls: mpsc::UnboundedReceiver<Call>,
}

/// A gateway on a free port, serving in the background.
async fn start(config: GatewayConfig, behaviour: Behaviour) -> Harness {
    let (tx, calls) = mpsc::unbounded_channel();
    let fake = Fake {
        calls: tx,
        behaviour: Mutex::new(behaviour),
    };
    let hub = Hub::new();
    let gateway = Gateway::new(fake, hub.clone(), config);
    let app = gateway.router("/ws");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    Harness { addr, hub, calls }
}

impl Harness {
    fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// Connects and returns the client with its connection id.
    async fn connect(&mut self) -> (Client, ConnId) {
        let (ws, _) = connect_async(self.url("?v=1")).await.expect("connect");
        match self.next_call().await {
            Call::Connect(info) => (ws, info.connection_id),
            other => panic!("expected $connect, got {other:?}"),
        }
    }

    async fn next_call(&mut self) -> Call {
        timeout(PATIENCE, self.calls.recv())
            .await
            .expect("a backend call in time")
            .expect("backend alive")
    }

    /// Skips message calls until the `$disconnect`.
    async fn disconnect_call(&mut self) -> (ConnId, u16, String) {
        loop {
            match self.next_call().await {
                Call::Disconnect {
                    conn,
                    status,
                    reason,
                } => return (conn, status, reason),
                Call::Message { .. } => {}
                other => panic!("expected $disconnect, got {other:?}"),
            }
        }
    }

    /// A raw HTTP/1.1 request; returns status, headers (lowercase names) and body.
    async fn http(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut stream = TcpStream::connect(self.addr).await.expect("tcp");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        timeout(PATIENCE, stream.read_to_end(&mut raw))
            .await
            .expect("response in time")
            .expect("read");
        let raw = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }
}

fn percent_encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The next text frame, as JSON.
async fn recv_json(ws: &mut Client) -> Value {
    loop {
        let msg = timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn recv_text(ws: &mut Client) -> String {
    let msg = timeout(PATIENCE, ws.next())
        .await
        .expect("a frame in time")
        .expect("socket open")
        .expect("no socket error");
    match msg {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Waits for the server's close frame and completes the close handshake;
/// returns the frame's code and reason.
async fn recv_close(ws: &mut Client) -> (u16, String) {
    let close = loop {
        let msg = timeout(PATIENCE, ws.next()).await.expect("a close in time");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.as_str().to_owned())
            }
            Some(Ok(Message::Close(None))) => break (1005, String::new()),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    finish_close(ws).await;
    close
}

/// Reads on after a close frame so the client sends its half of the close
/// handshake (tungstenite flushes it on the next read), until the stream ends.
async fn finish_close<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    timeout(PATIENCE, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await
    .expect("the socket ends after the close handshake");
}

/// A JSON request of about `size` bytes with request id `id`.
fn padded(id: &str, size: usize) -> String {
    let base = json!({ "action": "echo", "id": id, "pad": "" }).to_string();
    let pad = "x".repeat(size.saturating_sub(base.len()));
    json!({ "action": "echo", "id": id, "pad": pad }).to_string()
}

/// Sends `text` as one message in `pieces` fragments.
async fn send_fragmented(ws: &mut Client, text: &str, pieces: usize) {
    let bytes = text.as_bytes();
    let size = bytes.len().div_ceil(pieces);
    let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len());
        ws.send(Message::Frame(frame)).await.expect("send fragment");
    }
}

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

async fn roundtrip_works(ws: &mut Client) {
    ws.send(Message::text(r#"{"action":"ping","id":"after"}"#))
        .await
        .expect("send");
    let reply = recv_json(ws).await;
    assert_eq!(reply["route"], "ping", "socket still works: {reply}");
}

#[tokio::test]
async fn refused_connect_returns_its_status_and_no_upgrade() {
    let body = r#"{"code":"unauthorized","message":"no ticket"}"#;
    let mut h = start(
        GatewayConfig::default(),
        Behaviour {
            refuse: Some((401, body.into())),
            ..Default::default()
        },
    )
    .await;
    match connect_async(h.url("?ticket=nope")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
            let got = response.body().as_deref().map(String::from_utf8_lossy);
            assert_eq!(got.as_deref(), Some(body));
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    let Call::Connect(info) = h.next_call().await else {
        panic!("expected $connect");
    };
    assert_eq!(info.query_param("ticket"), Some("nope"));
    assert!(h.hub.is_empty(), "a refused connection leaves the hub");
    // No $disconnect for a connection that never was.
    assert!(timeout(Duration::from_millis(200), h.calls.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn connect_and_disconnect_run_once_each() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(h.url("?ticket=t%2B1&v=1"))
            .expect("request");
    request
        .headers_mut()
        .insert("authorization", "Bearer cred".parse().expect("header"));
    let (mut ws, _) = connect_async(request).await.expect("connect");
    let Call::Connect(info) = h.next_call().await else {
        panic!("expected $connect");
    };
    let id = info.connection_id.clone();
    assert_eq!(id.as_str().len(), 16);
    assert!(id.as_str().ends_with('='));
    assert_eq!(info.query_param("ticket"), Some("t+1"));
    assert_eq!(info.query_param("v"), Some("1"));
    assert_eq!(info.authorization(), Some(&b"Bearer cred"[..]));
    assert!(h.hub.is_open(id.as_str()));

    ws.close(None).await.expect("close");
    let (conn, status, _) = h.disconnect_call().await;
    assert_eq!(conn, id);
    assert_eq!(status, 1005, "a close frame without a code");
    assert!(!h.hub.is_open(id.as_str()));
    assert!(
        timeout(Duration::from_millis(200), h.calls.recv())
            .await
            .is_err(),
        "nothing after $disconnect"
    );
}

#[tokio::test]
async fn routes_on_action_or_default() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let (mut ws, id) = h.connect().await;
    for (text, route) in [
        (r#"{"action":"session_list","id":"1"}"#, "session_list"),
        (r#"{"id":"2"}"#, "$default"),
        ("not json at all", "$default"),
        (r#"{"action":7}"#, "$default"),
    ] {
        ws.send(Message::text(text)).await.expect("send");
        let reply = recv_json(&mut ws).await;
        assert_eq!(reply["route"], route, "{text}");
        match h.next_call().await {
            Call::Message {
                conn,
                route: r,
                body,
            } => {
                assert_eq!(conn, id);
                assert_eq!(r, route);
                assert_eq!(body, text);
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn binary_messages_get_an_error_and_the_socket_stays() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let (mut ws, _) = h.connect().await;
    ws.send(Message::binary(vec![1, 2, 3])).await.expect("send");
    let reply = recv_json(&mut ws).await;
    assert_eq!(reply["ok"], false);
    assert_eq!(error_code(&reply), "bad_json");
    roundtrip_works(&mut ws).await;
}

#[tokio::test]
async fn a_frame_over_32k_is_refused_and_the_socket_stays() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let (mut ws, _) = h.connect().await;
    ws.send(Message::text(padded("big", 33 * 1024)))
        .await
        .expect("send");
    let reply = recv_json(&mut ws).await;
    assert_eq!(reply["type"], "reply");
    assert_eq!(reply["id"], "big");
    assert_eq!(error_code(&reply), "frame_too_large");
    roundtrip_works(&mut ws).await;
    // The handler saw only the small message.
    match h.next_call().await {
        Call::Message { route, .. } => assert_eq!(route, "ping"),
        other => panic!("expected the ping, got {other:?}"),
    }
}

#[tokio::test]
async fn a_100k_message_in_four_frames_passes() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let (mut ws, _) = h.connect().await;
    let text = padded("frag", 100 * 1024);
    send_fragmented(&mut ws, &text, 4).await;
    let reply = recv_json(&mut ws).await;
    assert_eq!(reply["route"], "echo", "{reply}");
    assert_eq!(reply["len"], text.len());
    match h.next_call().await {
        Call::Message { body, .. } => assert_eq!(body, text),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_130k_message_is_refused_and_the_socket_stays() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let (mut ws, _) = h.connect().await;
    send_fragmented(&mut ws, &padded("huge", 130 * 1024), 5).await;
    let reply = recv_json(&mut ws).await;
    assert_eq!(reply["id"], "huge");
    assert_eq!(error_code(&reply), "message_too_large");
    roundtrip_works(&mut ws).await;
    match h.next_call().await {
        Call::Message { route, .. } => assert_eq!(route, "ping"),
        other => panic!("expected the ping, got {other:?}"),
    }
}

#[tokio::test]
async fn idle_connections_close() {
    let config = GatewayConfig {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let mut h = start(config, Behaviour::default()).await;
    let (mut ws, id) = h.connect().await;
    let started = tokio::time::Instant::now();
    assert_eq!(recv_close(&mut ws).await, (1001, "idle timeout".to_owned()));
    assert!(started.elapsed() >= Duration::from_millis(250));
    let (conn, status, reason) = h.disconnect_call().await;
    assert_eq!(
        (conn, status, reason.as_str()),
        (id.clone(), 1001, "idle timeout")
    );
    assert!(!h.hub.is_open(id.as_str()));
}

#[tokio::test]
async fn control_frames_are_answered_but_are_not_activity() {
    let config = GatewayConfig {
        idle_timeout: Duration::from_millis(400),
        ..Default::default()
    };
    let mut h = start(config, Behaviour::default()).await;
    let (ws, id) = h.connect().await;
    let (mut sink, mut stream) = ws.split();
    let pinger = tokio::spawn(async move {
        for i in 0u8..20 {
            if sink.send(Message::Ping(vec![i].into())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut pongs = 0;
    let close = loop {
        match timeout(PATIENCE, stream.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Pong(_))) => pongs += 1,
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.as_str().to_owned())
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    finish_close(&mut stream).await;
    pinger.abort();
    assert!(pongs > 0, "pings are answered");
    assert_eq!(close, (1001, "idle timeout".to_owned()));
    let (conn, status, reason) = h.disconnect_call().await;
    assert_eq!((conn, status, reason.as_str()), (id, 1001, "idle timeout"));
}

#[tokio::test]
async fn data_messages_keep_a_connection_alive_until_its_max_age() {
    let config = GatewayConfig {
        idle_timeout: Duration::from_millis(300),
        max_connection_age: Duration::from_millis(900),
        ..Default::default()
    };
    let mut h = start(config, Behaviour::default()).await;
    let (mut ws, id) = h.connect().await;
    let started = tokio::time::Instant::now();
    // A message every 100 ms keeps the idle timer from firing; the age cap
    // closes the connection anyway.
    let close = loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                let _ = ws.send(Message::text(r#"{"action":"ping"}"#)).await;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(Some(frame)))) => break (u16::from(frame.code), frame.reason.as_str().to_owned()),
                Some(Ok(Message::Text(_))) => {}
                other => panic!("unexpected {other:?}"),
            },
        }
    };
    finish_close(&mut ws).await;
    assert_eq!(close, (1001, "connection age".to_owned()));
    assert!(started.elapsed() >= Duration::from_millis(800));
    let (conn, status, reason) = h.disconnect_call().await;
    assert_eq!(
        (conn, status, reason.as_str()),
        (id, 1001, "connection age")
    );
}

#[tokio::test]
async fn pushes_to_unknown_or_connecting_ids_are_gone() {
    let (release, hold) = oneshot::channel();
    let mut h = start(
        GatewayConfig::default(),
        Behaviour {
            hold_connect: Some(hold),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        h.hub.send("nobody00000000A=", "x".into()),
        Err(tether_local::gateway::Gone)
    );
    let unknown = ConnectionId::parse("cnobody").expect("id");
    assert!(matches!(
        Push::send(&h.hub, &unknown, "x").await,
        Err(PushError::Gone)
    ));
    assert!(matches!(
        Push::disconnect(&h.hub, &unknown).await,
        Err(PushError::Gone)
    ));

    let url = h.url("");
    let client = tokio::spawn(async move { connect_async(url).await.map(|(ws, _)| ws) });
    let Call::Connect(info) = h.next_call().await else {
        panic!("expected $connect");
    };
    let id = info.connection_id;
    // `$connect` is still running: as on AWS, a push gets Gone.
    assert_eq!(
        h.hub.send(id.as_str(), "early".into()),
        Err(tether_local::gateway::Gone)
    );
    release.send(()).expect("release");
    let mut ws = client.await.expect("join").expect("connect");
    h.hub.send(id.as_str(), "now".into()).expect("open");
    assert_eq!(recv_text(&mut ws).await, "now");
}

/// The gateway's router has the websocket and nothing else: no Management
/// API reaches a connection over HTTP (the AWS-shaped test bed serves one on
/// a loopback listener of its own).
#[tokio::test]
async fn no_management_api_is_served() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let (mut ws, id) = h.connect().await;
    let path = format!("/@connections/{}", percent_encode(id.as_str()));
    for method in ["POST", "GET", "DELETE", "PUT", "PATCH"] {
        for path in [path.clone(), format!("/ws{path}"), format!("/dev{path}")] {
            let (status, _, _) = h.http(method, &path, r#"{"type":"hello"}"#).await;
            assert_eq!(status, 404, "{method} {path}");
        }
    }
    // Nothing reached the socket: the next thing it reads is its own echo.
    roundtrip_works(&mut ws).await;
}

#[tokio::test]
async fn hub_disconnect_closes_the_socket() {
    let mut h = start(GatewayConfig::default(), Behaviour::default()).await;
    let (mut ws, id) = h.connect().await;
    h.hub.close(id.as_str(), 1008, "revoked").expect("open");
    assert_eq!(recv_close(&mut ws).await, (1008, "revoked".to_owned()));
    let (conn, status, reason) = h.disconnect_call().await;
    assert_eq!(
        (conn, status, reason.as_str()),
        (id.clone(), 1008, "revoked")
    );
    assert_eq!(
        h.hub.send(id.as_str(), "x".into()),
        Err(tether_local::gateway::Gone)
    );
}

async fn first_two_replies(concurrent: bool) -> Vec<String> {
    let config = GatewayConfig {
        concurrent_frames: concurrent,
        ..Default::default()
    };
    let mut h = start(
        config,
        Behaviour {
            slow: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let (mut ws, _) = h.connect().await;
    ws.send(Message::text(r#"{"action":"slow","id":"1"}"#))
        .await
        .expect("send");
    ws.send(Message::text(r#"{"action":"fast","id":"2"}"#))
        .await
        .expect("send");
    let mut routes = Vec::new();
    for _ in 0..2 {
        let reply = recv_json(&mut ws).await;
        routes.push(reply["route"].as_str().unwrap_or("").to_owned());
    }
    routes
}

#[tokio::test]
async fn serial_mode_keeps_order() {
    assert_eq!(first_two_replies(false).await, ["slow", "fast"]);
}

#[tokio::test]
async fn concurrent_mode_handles_frames_in_parallel() {
    assert_eq!(first_two_replies(true).await, ["fast", "slow"]);
}
