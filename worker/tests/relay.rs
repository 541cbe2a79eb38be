//! The relay gives up a connection the network dropped without a reset: a
//! host that takes frames and answers nothing (as a black-holed route
//! looks from the worker) is left after the ack timeout, and a new
//! connection is made.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tether_domain::auth::Secret;
use tether_worker::relay::{Relay, RelayConfig, RelayEvent};
use tether_worker::tls::HostTls;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

async fn next(events: &mut mpsc::UnboundedReceiver<RelayEvent>) -> RelayEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("the relay runs")
}

#[tokio::test]
async fn an_unanswered_frame_makes_the_relay_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The host: the first connection swallows everything; later ones
    // answer each frame with a reply.
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel::<usize>();
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((tcp, _)) = listener.accept().await {
            n += 1;
            let _ = accepted_tx.send(n);
            let answering = n > 1;
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                while let Some(Ok(frame)) = ws.next().await {
                    if answering && frame.is_text() {
                        let reply = r#"{"type":"reply","id":"x","ok":true,"data":{}}"#;
                        if ws.send(Message::text(reply)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let config = RelayConfig {
        url: format!("ws://127.0.0.1:{port}/ws"),
        credential: Secret::generate("twk_"),
        heartbeat: Duration::from_secs(60),
        ack_timeout: Duration::from_millis(400),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(100),
        tls: HostTls::new(None).expect("TLS config"),
    };
    let (relay, mut events) = Relay::start(config);
    assert!(matches!(next(&mut events).await, RelayEvent::Connected));
    assert_eq!(accepted.recv().await, Some(1));
    let sent = Instant::now();
    relay.send(r#"{"action":"ping","id":"p1"}"#.to_owned());
    assert!(matches!(next(&mut events).await, RelayEvent::Disconnected));
    let gave_up = sent.elapsed();
    assert!(
        gave_up >= Duration::from_millis(400) && gave_up < Duration::from_secs(3),
        "gave the silent connection up after {gave_up:?}"
    );
    assert!(matches!(next(&mut events).await, RelayEvent::Connected));
    assert_eq!(accepted.recv().await, Some(2));
    // An answered frame keeps the new connection.
    relay.send(r#"{"action":"ping","id":"p2"}"#.to_owned());
    match next(&mut events).await {
        RelayEvent::Frame(_) => {}
        other => panic!("expected the reply, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(events.try_recv().is_err(), "no reconnect while answered");
}
