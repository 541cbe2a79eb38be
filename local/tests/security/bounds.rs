//! A slow or hostile client costs the host a bounded amount: a watcher that
//! stops reading is closed instead of buffered for, and connections that
//! never finish a request head are closed within the header timeout.

use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use futures_util::StreamExt as _;
use tether_domain::ids::MessageId;
use tether_domain::model::MessageStatus;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use tether_testsupport::helpers::{paired, ready_session, Mode, Server, WAIT};

/// What the worker streams while one watcher reads nothing.
const FED_BYTES: usize = 50 * 1024 * 1024;
/// The host's resident memory may grow by at most this much meanwhile
/// (the connection's queue cap is 4 MiB; the rest is the store's cache,
/// allocator slack and the frames in flight).
const RSS_GROWTH_BOUND: u64 = 32 * 1024 * 1024;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the host's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_and_the_host_stays_small() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let pid = server.pid().expect("pid");
    let mut pair = paired(&server, "ada").await;
    let session = ready_session(&pair.user, &mut pair.worker).await;

    // The slow watcher: a second socket of the same user that watches the
    // session, then never reads again.
    let ticket = server.ticket(&pair.user.user).await.ticket;
    let url = format!("ws://{}/ws?v=1&ticket={ticket}", server.addr);
    let (mut slow, _) = tokio_tungstenite::connect_async(url).await.expect("the slow watcher connects");
    let watch = serde_json::json!({"action": "session_watch", "id": "req_slow", "session_id": session});
    slow.send(Message::text(watch.to_string())).await.expect("send the watch");
    // Its reply arrives; nothing is read after it.
    let reply = tokio::time::timeout(WAIT, slow.next()).await.expect("reply in time");
    assert!(matches!(reply, Some(Ok(Message::Text(_)))), "{reply:?}");

    let message = MessageId::random();
    let sent = pair.user.send_message(&session, &message, "a long answer").await;
    assert_eq!(sent.status, MessageStatus::Dispatched);
    pair.worker.dispatched(&message).await;
    pair.worker.started(&message).await;

    let before = rss_bytes(pid);
    let mut peak = before;
    let delta = "x".repeat(12 * 1024);
    let frames = FED_BYTES / (2 * delta.len());
    let started = Instant::now();
    for i in 0..frames {
        let seq = u32::try_from(2 * i).expect("seq");
        let ack = pair
            .worker
            .chunks(&message, &[(seq, &delta), (seq + 1, &delta)])
            .await;
        assert_eq!(ack.stored.len(), 2, "frame {i}: {ack:?}");
        if i % 64 == 0 {
            peak = peak.max(rss_bytes(pid));
        }
    }
    peak = peak.max(rss_bytes(pid));
    let fed = started.elapsed();
    eprintln!(
        "fed {} MB in {fed:?}: host RSS {} MB before, {} MB at its peak",
        FED_BYTES >> 20,
        before >> 20,
        peak >> 20
    );
    assert!(
        peak.saturating_sub(before) < RSS_GROWTH_BOUND,
        "the host grew by {} MB while a watcher read nothing",
        peak.saturating_sub(before) >> 20
    );

    // Reading again, the watcher finds what the kernel buffered, then the
    // end: a close frame saying why, or the connection cut when even the
    // close frame could not be written.
    let mut received = 0usize;
    let ending = loop {
        match tokio::time::timeout(WAIT, slow.next()).await.expect("the socket ends in time") {
            Some(Ok(Message::Text(text))) => received += text.len(),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(
        received < FED_BYTES / 2,
        "the watcher was closed, not fed everything: {received} bytes"
    );
    if let Some(code) = ending {
        assert_eq!(code, 4008, "closed as too slow");
    }
    // The user's other socket and the worker are unharmed.
    pair.user.assert_usable("after the slow watcher").await;
    pair.worker.assert_usable("after the slow watcher").await;
}

/// Connections that never finish a request head (a slowloris attack, or
/// clients that connect and say nothing) are closed within the header
/// timeout, each of 300 of them.
#[tokio::test]
async fn half_open_connections_are_closed_within_the_header_timeout() {
    let server = Server::start_with(crate::HOST, Mode::Sequential, &["--header-read-timeout-secs", "1"]).await;
    let mut sockets = Vec::new();
    for i in 0..300 {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        if i % 2 == 0 {
            // Half a request head.
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        }
        sockets.push(tcp);
    }
    let started = Instant::now();
    let mut open = 0;
    for mut tcp in sockets {
        let mut buf = [0u8; 256];
        let left = Duration::from_secs(4).saturating_sub(started.elapsed());
        match tokio::time::timeout(left, read_to_close(&mut tcp, &mut buf)).await {
            Ok(()) => {}
            Err(_) => open += 1,
        }
    }
    assert_eq!(open, 0, "connections still open 4 s after a 1 s header timeout");
    // The host still serves.
    assert_eq!(
        tether_testsupport::security::raw_http::request(server.addr, "GET", "/", &[], "").await.status,
        200
    );
}

/// Reads until the peer closes (whatever it sent before: a 408, say).
async fn read_to_close(tcp: &mut TcpStream, buf: &mut [u8]) {
    loop {
        match tcp.read(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
