//! The relay connection: one outbound websocket to the Tether host, kept up
//! by itself. It reconnects with jittered exponential backoff, pings on a
//! heartbeat (API Gateway drops a connection idle for 10 minutes), gives up a
//! connection that has gone silent, and splits frames over 32 KB into
//! continuation frames (API Gateway's frame limit; its message limit is 128 KB).
//!
//! A network that drops packets without a reset (a laptop changing Wi-Fi, a
//! NAT that forgot the flow) leaves the socket looking open for minutes. The
//! relay does not wait for TCP to notice: every frame it sends is a request
//! the host answers, so once it has sent something and heard nothing for
//! [`RelayConfig::ack_timeout`], or a write has not gone out in that time, the
//! connection is given up and a new one made (the caller re-sends what was
//! not acknowledged). The heartbeat makes an idle connection send, so it is
//! checked the same way.
//!
//! It knows nothing of chunks or sessions: frames the caller sends while it
//! is down are dropped, and the caller re-sends what matters when it hears
//! [`RelayEvent::Connected`].
//!
//! `wss://` goes through the worker's one TLS configuration
//! ([`crate::tls::HostTls`]), and [`Relay::close`] ends it the way a host
//! should hear it: a normal close frame, not a dropped socket.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tether_domain::auth::Secret;
use tether_domain::protocol::{ServerFrame, MAX_FRAME_BYTES};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tracing::{debug, info, warn};

use crate::tls::HostTls;

/// What the relay tells its owner.
#[derive(Debug)]
pub enum RelayEvent {
    Connected,
    Disconnected,
    /// A frame from the host (boxed: frames are large beside the others).
    Frame(Box<ServerFrame>),
    /// The host refused the connection (`401` unknown credential, `403`
    /// rejected or revoked worker). The relay stops.
    Refused { status: u16, body: String },
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// `ws://…/ws` or `wss://…` (the `v` query is added here).
    pub url: String,
    pub credential: Secret,
    pub heartbeat: Duration,
    /// Give the connection up when something sent has had no answer, or a
    /// write has not completed, for this long.
    pub ack_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The trust for `wss://`: web PKI roots and `--ca-cert`.
    pub tls: HostTls,
}

/// How long [`Relay::close`] waits for the host to answer the close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Sends frames on the current connection.
#[derive(Clone)]
pub struct Relay {
    out: mpsc::UnboundedSender<String>,
    /// Set once, by [`Relay::close`]; the connection task watches it.
    stop: Arc<watch::Sender<bool>>,
}

impl Relay {
    /// Starts the connection task; events arrive on the returned receiver.
    pub fn start(config: RelayConfig) -> (Self, mpsc::UnboundedReceiver<RelayEvent>) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(run(config, out_rx, ev_tx, stop_rx));
        (
            Self {
                out: out_tx,
                stop: Arc::new(stop_tx),
            },
            ev_rx,
        )
    }

    /// Queues a frame for the current connection (dropped if it is down).
    pub fn send(&self, frame: String) {
        let _ = self.out.send(frame);
    }

    /// Ends the relay for good: a normal close frame on the connection if
    /// there is one, no reconnecting. Returns once the connection task has
    /// ended (or after a few seconds if the host does not answer).
    pub async fn close(&self) {
        self.stop.send_replace(true);
        // The task owns the frames' receiver: it is gone when the task is.
        if tokio::time::timeout(CLOSE_WAIT + Duration::from_secs(1), self.out.closed())
            .await
            .is_err()
        {
            warn!("the relay did not stop in time");
        }
    }
}

/// Resolves once [`Relay::close`] was called, or every [`Relay`] is gone
/// (nobody is left to send frames, so the connection is closed the same way).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// How one connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// Dropped, failed or closed by the host: reconnect.
    Lost,
    /// Closed by this worker ([`Relay::close`]): stop.
    Closed,
}

/// `url` with `v=1` in its query.
pub fn with_version(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}v={}", tether_domain::protocol::PROTOCOL_VERSION)
}

async fn run(
    config: RelayConfig,
    mut out: mpsc::UnboundedReceiver<String>,
    events: mpsc::UnboundedSender<RelayEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        // Closing while connecting drops the half-made connection: there is
        // no websocket yet to send a close frame on.
        let connected = tokio::select! {
            connected = connect(&config) => connected,
            () = stop_requested(&mut stop) => return,
        };
        match connected {
            Ok(ws) => {
                info!("connected to the host");
                if events.send(RelayEvent::Connected).is_err() {
                    return;
                }
                let served = serve(ws, &config, &mut out, &events, &mut stop).await;
                let _ = events.send(RelayEvent::Disconnected);
                if served == Served::Closed {
                    return;
                }
                // A connection that lived a while resets the backoff.
                if started.elapsed() > Duration::from_secs(30) {
                    attempt = 0;
                }
            }
            Err(ConnectError::Refused { status, body }) => {
                let _ = events.send(RelayEvent::Refused { status, body });
                return;
            }
            Err(ConnectError::Other(e)) => warn!(error = %e, "cannot reach the host"),
        }
        // Frames queued while down would go out of context on the next
        // connection; the owner re-sends what matters on `Connected`.
        while out.try_recv().is_ok() {}
        let delay = backoff(attempt, config.backoff_min, config.backoff_max);
        attempt = attempt.saturating_add(1);
        debug!(?delay, "reconnecting after a pause");
        tokio::select! {
            () = sleep(delay) => {}
            () = stop_requested(&mut stop) => return,
        }
        if events.is_closed() {
            return;
        }
    }
}

/// Full-jitter exponential backoff: a random delay up to min·2^attempt, capped.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min.saturating_mul(1u32 << attempt.min(16)).min(max);
    let floor = min / 2;
    let span = ceiling.saturating_sub(floor).as_millis() as u64;
    floor + Duration::from_millis(rand::rng().random_range(0..=span))
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `401` or `403`: the host will not take this credential.
    #[error("the host refused the connection ({status}): {body}")]
    Refused { status: u16, body: String },
    /// Anything else (unreachable, a certificate it does not trust, a
    /// timeout): worth trying again.
    #[error("{0}")]
    Other(String),
}

/// A websocket to the host.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One attempt to open the websocket, with the credential and `config.tls`.
/// [`Relay::start`] calls it in its loop; it is public so the TLS trust can
/// be tested without a whole worker.
pub async fn connect(config: &RelayConfig) -> Result<Ws, ConnectError> {
    let mut request = with_version(&config.url)
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("bad host URL: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", config.credential.expose()))
        .map_err(|_| ConnectError::Other("the credential is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", bearer);
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(1 << 20);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(config.tls.websocket_connector()),
    );
    match tokio::time::timeout(Duration::from_secs(20), connecting).await {
        Err(_) => Err(ConnectError::Other("timed out connecting".into())),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                Err(ConnectError::Refused {
                    status: status.as_u16(),
                    body,
                })
            } else {
                Err(ConnectError::Other(format!("host answered {status}: {body}")))
            }
        }
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
    }
}

async fn serve(
    ws: Ws,
    config: &RelayConfig,
    out: &mut mpsc::UnboundedReceiver<String>,
    events: &mpsc::UnboundedSender<RelayEvent>,
    stop: &mut watch::Receiver<bool>,
) -> Served {
    let (mut sink, mut stream) = ws.split();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.reset();
    let silence_limit = config.heartbeat * 2 + Duration::from_secs(10);
    let mut last_heard = Instant::now();
    // When the oldest frame sent since the host was last heard went out.
    let mut unanswered_since: Option<Instant> = None;
    let mut pings: u64 = 0;
    loop {
        let answer_due = unanswered_since.map(|sent| sent + config.ack_timeout);
        tokio::select! {
            frame = out.recv() => {
                let Some(frame) = frame else { return Served::Lost };
                match tokio::time::timeout(config.ack_timeout, send_text(&mut sink, frame)).await {
                    Ok(Ok(())) => {
                        unanswered_since.get_or_insert_with(Instant::now);
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "send failed; reconnecting");
                        return Served::Lost;
                    }
                    Err(_) => {
                        warn!(timeout = ?config.ack_timeout, "a write to the host stalled; reconnecting");
                        return Served::Lost;
                    }
                }
            }
            () = sleep_until_some(answer_due) => {
                warn!(
                    timeout = ?config.ack_timeout,
                    "the host has not answered what was sent; reconnecting"
                );
                return Served::Lost;
            }
            incoming = stream.next() => {
                last_heard = Instant::now();
                unanswered_since = None;
                match incoming {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(frame) => {
                            if events.send(RelayEvent::Frame(Box::new(frame))).is_err() {
                                return Served::Lost;
                            }
                        }
                        Err(e) => warn!(error = %e, "unreadable frame from the host"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        info!(?frame, "the host closed the connection");
                        return Served::Lost;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        warn!(error = %e, "connection error; reconnecting");
                        return Served::Lost;
                    }
                    None => return Served::Lost,
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silence_limit {
                    warn!("the host has been silent too long; reconnecting");
                    return Served::Lost;
                }
                pings += 1;
                let ping = format!(r#"{{"action":"ping","id":"hb-{pings}"}}"#);
                match tokio::time::timeout(config.ack_timeout, send_text(&mut sink, ping)).await {
                    Ok(Ok(())) => {
                        unanswered_since.get_or_insert_with(Instant::now);
                    }
                    _ => return Served::Lost,
                }
            }
            () = stop_requested(stop) => {
                close_normally(&mut sink, &mut stream).await;
                return Served::Closed;
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The closing handshake from this side: a normal close frame, then what
/// the host still says until its own close frame (or [`CLOSE_WAIT`]), so it
/// sees a worker that left rather than one that dropped.
async fn close_normally<Si, St>(sink: &mut Si, stream: &mut St)
where
    Si: SinkExt<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    St: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "the worker is stopping".into(),
    };
    if let Err(e) = sink.send(Message::Close(Some(frame))).await {
        warn!(error = %e, "could not send the close frame");
        return;
    }
    let answered = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    match answered {
        Ok(()) => info!("closed the connection to the host"),
        Err(_) => warn!("the host did not answer the close frame in time"),
    }
}

/// Sends a text message, as continuation frames when it exceeds one frame.
async fn send_text<S>(sink: &mut S, text: String) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: SinkExt<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let limit = MAX_FRAME_BYTES - 1024;
    if text.len() <= limit {
        return sink.send(Message::Text(text.into())).await;
    }
    let bytes = Bytes::from(text.into_bytes());
    let mut offset = 0;
    let mut first = true;
    while offset < bytes.len() {
        let end = (offset + limit).min(bytes.len());
        let fin = end == bytes.len();
        let opcode = if first { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
        sink.feed(Message::Frame(Frame::message(bytes.slice(offset..end), opcode, fin)))
            .await?;
        offset = end;
        first = false;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(30));
        for attempt in 0..40 {
            let d = backoff(attempt, min, max);
            assert!(d >= min / 2 && d <= max, "attempt {attempt}: {d:?}");
        }
        let late: Vec<_> = (0..20).map(|_| backoff(10, min, max)).collect();
        assert!(late.iter().any(|d| *d > Duration::from_secs(5)), "grows: {late:?}");
        assert!(late.windows(2).any(|w| w[0] != w[1]), "jittered");
    }

    #[test]
    fn the_version_is_added_to_the_url() {
        assert_eq!(with_version("ws://h/ws"), "ws://h/ws?v=1");
        assert_eq!(with_version("wss://h/prod?x=1"), "wss://h/prod?x=1&v=1");
    }
}
