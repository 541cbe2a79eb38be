//! The relay connection: one outbound websocket to the Tether host, kept up
//! by itself. It reconnects with jittered exponential backoff, pings on a
//! heartbeat (API Gateway drops a connection idle for 10 minutes), gives up a
//! connection that has gone silent, and splits frames over 32 KB into
//! continuation frames (API Gateway's frame limit; its message limit is 128 KB).
//!
//! It knows nothing of chunks or sessions: frames the caller sends while it
//! is down are dropped, and the caller re-sends what matters when it hears
//! [`RelayEvent::Connected`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tether_domain::auth::Secret;
use tether_domain::protocol::{ServerFrame, MAX_FRAME_BYTES};
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tracing::{debug, info, warn};

/// What the relay tells its owner.
#[derive(Debug)]
pub enum RelayEvent {
    Connected,
    Disconnected,
    Frame(ServerFrame),
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
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// Sends frames on the current connection.
#[derive(Clone)]
pub struct Relay {
    out: mpsc::UnboundedSender<String>,
}

impl Relay {
    /// Starts the connection task; events arrive on the returned receiver.
    pub fn start(config: RelayConfig) -> (Self, mpsc::UnboundedReceiver<RelayEvent>) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(config, out_rx, ev_tx));
        (Self { out: out_tx }, ev_rx)
    }

    /// Queues a frame for the current connection (dropped if it is down).
    pub fn send(&self, frame: String) {
        let _ = self.out.send(frame);
    }
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
) {
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        match connect(&config).await {
            Ok(ws) => {
                info!("connected to the host");
                if events.send(RelayEvent::Connected).is_err() {
                    return;
                }
                serve(ws, &config, &mut out, &events).await;
                let _ = events.send(RelayEvent::Disconnected);
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
        sleep(delay).await;
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

enum ConnectError {
    Refused { status: u16, body: String },
    Other(String),
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(config: &RelayConfig) -> Result<Ws, ConnectError> {
    let mut request = with_version(&config.url)
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("bad host URL: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", config.credential.expose()))
        .map_err(|_| ConnectError::Other("the credential is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", bearer);
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(1 << 20);
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
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
) {
    let (mut sink, mut stream) = ws.split();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.reset();
    let silence_limit = config.heartbeat * 2 + Duration::from_secs(10);
    let mut last_heard = Instant::now();
    let mut pings: u64 = 0;
    loop {
        tokio::select! {
            frame = out.recv() => {
                let Some(frame) = frame else { return };
                if let Err(e) = send_text(&mut sink, frame).await {
                    warn!(error = %e, "send failed; reconnecting");
                    return;
                }
            }
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(frame) => {
                            if events.send(RelayEvent::Frame(frame)).is_err() {
                                return;
                            }
                        }
                        Err(e) => warn!(error = %e, "unreadable frame from the host"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        info!(?frame, "the host closed the connection");
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        warn!(error = %e, "connection error; reconnecting");
                        return;
                    }
                    None => return,
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silence_limit {
                    warn!("the host has been silent too long; reconnecting");
                    return;
                }
                pings += 1;
                let ping = format!(r#"{{"action":"ping","id":"hb-{pings}"}}"#);
                if send_text(&mut sink, ping).await.is_err() {
                    return;
                }
            }
        }
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
