//! One connection's life: the upgrade with `$connect`, the socket loop
//! (limits, routing, timers, pushes) and `$disconnect`.
//!
//! The upgrade is done by hand with hyper rather than with axum's
//! `WebSocketUpgrade` so the gateway owns the raw IO and can put a
//! [`FrameWatcher`] under tungstenite to see frame sizes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use tether_domain::protocol::{peek_request_id, ServerFrame};
use tether_domain::{ApiError, ErrorCode};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use super::addresses::AddressSlot;
use super::frames::{FrameSizes, FrameWatcher};
use super::hub::{Meta, Outbound, Outlet, TOO_SLOW_CLOSE_CODE, TOO_SLOW_CLOSE_REASON};
use super::{
    now_millis, route_key, Accept, Backend, ConnId, ConnectInfo, Refusal, Shared, DEFAULT_ROUTE,
};

/// How long to wait for the peer's half of a close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Messages of one connection received but not yet handled before the
/// gateway stops reading from it (backpressure on a flooding client).
const MAX_PENDING_FRAMES: usize = 64;

type Socket = WebSocketStream<FrameWatcher<TokioIo<hyper::upgrade::Upgraded>>>;

/// Counts accepted connections until their `$disconnect` has returned, so
/// a shutdown can wait for them.
#[derive(Default)]
pub(crate) struct LiveCount {
    count: AtomicUsize,
    zero: Notify,
}

impl LiveCount {
    fn enter(self: &Arc<Self>) -> LiveGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        LiveGuard(self.clone())
    }

    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub(crate) async fn wait_zero(&self) {
        loop {
            let zero = self.zero.notified();
            tokio::pin!(zero);
            // Registered before the check, so a decrement in between is seen.
            zero.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            zero.await;
        }
    }
}

/// Held by a connection's task; dropping it (even by a panic) uncounts it.
struct LiveGuard(Arc<LiveCount>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// The websocket endpoint: `$connect`, then `101` and the socket task, or
/// the refusal.
pub(crate) async fn upgrade<B: Backend>(shared: Arc<Shared<B>>, mut req: Request) -> Response {
    let key = match check_handshake(&req) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let now = now_millis();
    let source_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let headers = req.headers().clone();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = super::addresses::client_address(source_ip, &headers);
    let Some(address_slot) = shared.addresses.enter(client) else {
        info!(%client, "connect refused: too many connections from this address");
        return refusal_response(too_many_from_address(shared.addresses.max()));
    };
    let query = parse_query(req.uri().query().unwrap_or(""));
    let on_upgrade = hyper::upgrade::on(&mut req);

    let meta = Arc::new(Meta::new(
        now,
        source_ip,
        user_agent,
        shared.config.max_queued_bytes,
    ));
    let id = shared.hub.reserve(meta.clone());
    let info = ConnectInfo {
        connection_id: id.clone(),
        query,
        headers,
        source_ip,
        now,
    };
    // `$connect` and what follows run in their own task: if the client gives
    // up and hyper drops this handler, the connection must still either be
    // refused cleanly or get its `$disconnect`.
    let hub = shared.hub.clone();
    let admitted = tokio::spawn(admit(
        shared,
        id.clone(),
        meta,
        info,
        on_upgrade,
        address_slot,
    ))
    .await;
    match admitted {
        Ok(Ok(accept)) => switching_protocols(&key, accept),
        Ok(Err(refusal)) => refusal_response(refusal),
        Err(e) => {
            // `$connect` panicked: the id is free again, and no `$disconnect`
            // follows a connection that was never accepted.
            hub.remove(&id);
            warn!(conn = %id.redacted(), error = %e, "$connect task failed");
            refusal_response(Refusal {
                status: 500,
                body: r#"{"code":"internal","message":"connect failed"}"#.into(),
            })
        }
    }
}

/// The refusal of an upgrade from an address that holds its cap of sockets.
fn too_many_from_address(max: usize) -> Refusal {
    let error = ApiError::new(
        ErrorCode::TooManyConnections,
        format!("this address already has {max} open connections; close some and try again"),
    );
    Refusal {
        status: error.code.http_status(),
        body: super::error_body(error),
    }
}

/// Runs `$connect`; if accepted, opens the connection in the hub and
/// spawns the socket task, which takes over once hyper hands over the IO.
/// The task holds the connection's `address_slot` until its `$disconnect`
/// has run; a refusal gives it back at once.
async fn admit<B: Backend>(
    shared: Arc<Shared<B>>,
    id: ConnId,
    meta: Arc<Meta>,
    info: ConnectInfo,
    on_upgrade: hyper::upgrade::OnUpgrade,
    address_slot: AddressSlot,
) -> Result<Accept, Refusal> {
    let started = Instant::now();
    match shared.backend.connect(info).await {
        Ok(accept) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let tx = Outlet::new(tx, meta.clone());
            shared.hub.open(&id, tx.clone());
            info!(conn = %id.redacted(), "connected");
            let live = shared.live.enter();
            tokio::spawn(async move {
                let _live = live;
                let _address_slot = address_slot;
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let sizes = FrameSizes::default();
                        let io = FrameWatcher::new(TokioIo::new(upgraded), sizes.clone());
                        let limit = shared.config.hard_limit_bytes;
                        let config = WebSocketConfig::default()
                            .max_message_size(Some(limit))
                            .max_frame_size(Some(limit));
                        let ws =
                            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                        let conn = Conn {
                            shared,
                            id,
                            meta,
                            sizes,
                            tx,
                            started,
                        };
                        conn.run(ws, rx).await;
                    }
                    Err(e) => {
                        // The client left between `$connect` and the upgrade;
                        // the backend recorded the connection, so it must hear
                        // of its end.
                        debug!(conn = %id.redacted(), error = %e, "upgrade failed");
                        shared.hub.remove(&id);
                        shared
                            .backend
                            .disconnect(&id, 1006, "upgrade failed".into(), now_millis())
                            .await;
                    }
                }
            });
            Ok(accept)
        }
        Err(refusal) => {
            shared.hub.remove(&id);
            info!(conn = %id.redacted(), status = refusal.status, "connect refused");
            Err(refusal)
        }
    }
}

/// Checks that the request is a websocket handshake we can answer; returns
/// its `Sec-WebSocket-Key`.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn check_handshake(req: &Request) -> Result<HeaderValue, Response> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    let bad = |status: StatusCode, message: &str| {
        let body = serde_json::json!({ "code": "bad_request", "message": message }).to_string();
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if status == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    };
    if req.method() != http::Method::GET {
        return Err(bad(
            StatusCode::METHOD_NOT_ALLOWED,
            "websocket handshakes use GET",
        ));
    }
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(bad(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint only speaks websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(bad(
            StatusCode::UPGRADE_REQUIRED,
            "websocket version 13 is required",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or_else(|| bad(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"))
}

fn switching_protocols(key: &HeaderValue, accept: Accept) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(protocol) = accept.subprotocol {
        builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    builder.body(Body::empty()).unwrap_or_else(|e| {
        // Only a subprotocol with characters illegal in a header gets here.
        warn!(error = %e, "bad upgrade response");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

fn refusal_response(refusal: Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        refusal.body,
    )
        .into_response()
}

/// The pairs of a query string, `application/x-www-form-urlencoded`.
fn parse_query(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A live connection's task state.
struct Conn<B> {
    shared: Arc<Shared<B>>,
    id: ConnId,
    meta: Arc<Meta>,
    sizes: FrameSizes,
    /// For replies: they go through the same queue as pushes, so the socket
    /// has one writer.
    tx: Outlet,
    /// When `$connect` started: the connection's age counts from there.
    started: Instant,
}

/// How a connection ended: its close code and reason.
struct Ending {
    code: u16,
    reason: String,
}

impl Ending {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Where a connection's messages go to be handled.
enum Dispatch {
    /// One task handles them in order.
    Serial {
        queue: mpsc::Sender<(String, String)>,
        worker: tokio::task::JoinHandle<()>,
    },
    /// Each in its own task; the semaphore bounds how many run at once.
    Concurrent { slots: Arc<Semaphore> },
}

impl<B: Backend> Conn<B> {
    async fn run(self, ws: Socket, mut rx: mpsc::UnboundedReceiver<Outbound>) {
        let config = &self.shared.config;
        let (mut sink, mut stream) = ws.split();
        let mut dispatch = self.dispatcher();
        let idle = tokio::time::sleep(config.idle_timeout);
        let age = sleep_until(self.started + config.max_connection_age);
        tokio::pin!(idle, age);

        let ending = loop {
            tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        idle.as_mut().reset(Instant::now() + config.idle_timeout);
                        self.meta.touch(now_millis());
                        let largest_frame = self.sizes.pop();
                        self.on_text(text.as_str(), largest_frame, &mut dispatch).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        idle.as_mut().reset(Instant::now() + config.idle_timeout);
                        self.meta.touch(now_millis());
                        self.sizes.pop();
                        self.reply_error(None, ErrorCode::BadJson, "binary frames are not supported");
                    }
                    // tungstenite answers pings itself; like API Gateway, control
                    // frames do not keep a connection from idling out.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        let ending = match frame {
                            Some(f) => Ending::new(u16::from(f.code), f.reason.as_str()),
                            None => Ending::new(1005, ""),
                        };
                        // Keep reading so tungstenite sends its half of the
                        // close handshake; the stream ends after it.
                        drain(&mut stream).await;
                        break ending;
                    }
                    Some(Err(WsError::Capacity(e))) => {
                        debug!(conn = %self.id.redacted(), error = %e, "message over the hard limit");
                        let _ = close(&mut sink, 1009, "message too big").await;
                        drain(&mut stream).await;
                        break Ending::new(1009, "message too big");
                    }
                    Some(Err(e)) => {
                        debug!(conn = %self.id.redacted(), error = %e, "socket error");
                        break Ending::new(1006, e.to_string());
                    }
                    None => break Ending::new(1006, "connection lost"),
                },
                outbound = rx.recv() => match outbound {
                    Some(Outbound::Text(text)) => {
                        let len = text.len();
                        let written =
                            tokio::time::timeout(config.write_timeout, sink.send(Message::text(text))).await;
                        self.meta.written(len);
                        match written {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                debug!(conn = %self.id.redacted(), error = %e, "write failed");
                                break Ending::new(1006, e.to_string());
                            }
                            Err(_) => {
                                // The socket takes nothing: no close frame
                                // would get through either.
                                debug!(conn = %self.id.redacted(), "write timed out");
                                break Ending::new(TOO_SLOW_CLOSE_CODE, "write timed out");
                            }
                        }
                    }
                    Some(Outbound::Close { code, reason }) => {
                        let _ = close(&mut sink, code, &reason).await;
                        drain(&mut stream).await;
                        break Ending::new(code, reason);
                    }
                    // Unreachable while `self.tx` lives; ends the loop if not.
                    None => break Ending::new(1011, "outbound queue closed"),
                },
                () = self.meta.overflow.notified() => {
                    debug!(conn = %self.id.redacted(), "outbound queue full");
                    let _ = close(&mut sink, TOO_SLOW_CLOSE_CODE, TOO_SLOW_CLOSE_REASON).await;
                    break Ending::new(TOO_SLOW_CLOSE_CODE, TOO_SLOW_CLOSE_REASON);
                }
                () = &mut idle => {
                    let _ = close(&mut sink, 1001, "idle timeout").await;
                    drain(&mut stream).await;
                    break Ending::new(1001, "idle timeout");
                }
                () = &mut age => {
                    let _ = close(&mut sink, 1001, "connection age").await;
                    drain(&mut stream).await;
                    break Ending::new(1001, "connection age");
                }
            }
        };

        // Out of the hub first, so pushes from here on (including from the
        // messages still being handled) get `Gone`.
        self.shared.hub.remove(&self.id);
        if let Dispatch::Serial { queue, worker } = dispatch {
            // Messages already received are still handled, and before
            // `$disconnect`, so a serial connection's events stay in order.
            drop(queue);
            if let Err(e) = worker.await {
                warn!(conn = %self.id.redacted(), error = %e, "message task failed");
            }
        }
        info!(conn = %self.id.redacted(), status = ending.code, reason = %ending.reason, "disconnected");
        self.shared
            .backend
            .disconnect(&self.id, ending.code, ending.reason, now_millis())
            .await;
    }

    fn dispatcher(&self) -> Dispatch {
        if self.shared.config.concurrent_frames {
            return Dispatch::Concurrent {
                slots: Arc::new(Semaphore::new(MAX_PENDING_FRAMES)),
            };
        }
        let (queue, mut pending) = mpsc::channel::<(String, String)>(MAX_PENDING_FRAMES);
        let shared = self.shared.clone();
        let id = self.id.clone();
        let tx = self.tx.clone();
        let worker = tokio::spawn(async move {
            while let Some((route, body)) = pending.recv().await {
                handle(&shared, &id, &tx, route, body).await;
            }
        });
        Dispatch::Serial { queue, worker }
    }

    async fn on_text(&self, text: &str, largest_frame: u64, dispatch: &mut Dispatch) {
        let config = &self.shared.config;
        if largest_frame > config.max_frame_bytes as u64 {
            debug!(conn = %self.id.redacted(), bytes = largest_frame, "frame too large");
            let message = format!(
                "a websocket frame may carry at most {} bytes; split larger messages into frames",
                config.max_frame_bytes
            );
            self.reply_error(peek_request_id(text), ErrorCode::FrameTooLarge, &message);
            return;
        }
        if text.len() > config.max_message_bytes {
            debug!(conn = %self.id.redacted(), bytes = text.len(), "message too large");
            let message = format!(
                "a message may be at most {} bytes",
                config.max_message_bytes
            );
            self.reply_error(peek_request_id(text), ErrorCode::MessageTooLarge, &message);
            return;
        }
        // The domain parses the frame, `action` and all: a backend that
        // routes itself gets no route, and its frames are parsed once.
        let route = if B::ROUTES_BY_ACTION {
            route_key(text)
        } else {
            DEFAULT_ROUTE.to_owned()
        };
        let body = text.to_owned();
        match dispatch {
            Dispatch::Serial { queue, .. } => {
                // Waits when the queue is full, which stops reading from this
                // client until its backlog drains.
                if queue.send((route, body)).await.is_err() {
                    warn!(conn = %self.id.redacted(), "message task ended early");
                }
            }
            Dispatch::Concurrent { slots } => {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let shared = self.shared.clone();
                let id = self.id.clone();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    handle(&shared, &id, &tx, route, body).await;
                    drop(permit);
                });
            }
        }
    }

    fn reply_error(
        &self,
        id: Option<tether_domain::ids::RequestId>,
        code: ErrorCode,
        message: &str,
    ) {
        let frame = ServerFrame::err(id, ApiError::new(code, message)).to_json();
        // Fails only once the connection is ending; the reply is moot then.
        let _ = self.tx.text(frame);
    }
}

/// Invokes the backend for one message and queues its reply.
async fn handle<B: Backend>(
    shared: &Shared<B>,
    id: &ConnId,
    tx: &Outlet,
    route: String,
    body: String,
) {
    debug!(conn = %id.redacted(), route = %route, "message");
    if let Some(reply) = shared.backend.message(id, &route, body, now_millis()).await {
        // The socket may have closed meanwhile; the reply is dropped then,
        // as API Gateway drops a reply to a gone connection.
        // A reply that does not fit the queue is dropped with the
        // connection, which the overflow has closed.
        let _ = tx.text(reply);
    }
}

/// Sends a close frame, giving up after [`CLOSE_GRACE`] (a client that
/// reads nothing would otherwise hold the task for ever).
async fn close<S>(sink: &mut S, code: u16, reason: &str) -> Result<(), WsError>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    match tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await {
        Ok(result) => result,
        Err(_) => Err(WsError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "close frame not written in time",
        ))),
    }
}

/// Reads until the peer's side of the close handshake is done (or a grace
/// period passes), discarding what arrives.
async fn drain<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_strings() {
        assert_eq!(
            parse_query("ticket=a%2Bb%3D&v=1&flag&x=a+b"),
            vec![
                ("ticket".into(), "a+b=".into()),
                ("v".into(), "1".into()),
                ("flag".into(), String::new()),
                ("x".into(), "a b".into()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
