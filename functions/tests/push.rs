//! `ApiGatewayPush` against a stand-in Management API: the wire calls, 410
//! as `Gone` (with and without API Gateway's error type header), other
//! failures, and the bound on a fan-out's posts in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::config::{
    BehaviorVersion, Credentials, Region, SharedCredentialsProvider,
};
use tether_domain::ids::ConnectionId;
use tether_domain::push::{Push, PushError};
use tether_functions::dynamo::https_client;
use tether_functions::ApiGatewayPush;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the stand-in saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, String, String)>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// A Management API that answers by connection id: `gone…` 410 with
/// `x-amzn-ErrorType: GoneException`, `bare…` 410 without it, `boom…` 500,
/// anything else 200 (204 for DELETE), each after `delay`.
async fn stand_in(delay: Duration) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let seen = shared.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_owned();
                    let path = parts.next().unwrap_or("").to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if read.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let id = path.rsplit('/').next().unwrap_or("").to_owned();
                    seen.requests.lock().expect("lock").push((
                        method.clone(),
                        path.clone(),
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    let (status, extra, body) = if id.starts_with("gone") {
                        ("410 Gone", "x-amzn-ErrorType: GoneException\r\n", r#"{"message":null}"#)
                    } else if id.starts_with("bare") {
                        ("410 Gone", "", r#"{"message":null}"#)
                    } else if id.starts_with("boom") {
                        ("500 Internal Server Error", "", r#"{"message":"Internal server error"}"#)
                    } else if method == "DELETE" {
                        ("204 No Content", "", "")
                    } else {
                        ("200 OK", "", "")
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if write.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/ws"), seen)
}

fn sdk() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "tests",
        )))
        .http_client(https_client())
        .build()
}

fn id(s: &str) -> ConnectionId {
    ConnectionId::parse(s).expect("connection id")
}

#[tokio::test]
async fn posts_deletes_and_classifies_failures() {
    let (endpoint, seen) = stand_in(Duration::ZERO).await;
    let push = ApiGatewayPush::new(ApiGatewayPush::client(&sdk(), &endpoint), 16);

    push.send(&id("L0SM9cOFvHcCIhw="), r#"{"type":"x"}"#)
        .await
        .expect("posted");
    assert!(matches!(push.send(&id("gone1"), "{}").await, Err(PushError::Gone)));
    assert!(matches!(push.send(&id("bare1"), "{}").await, Err(PushError::Gone)));
    assert!(matches!(push.send(&id("boom1"), "{}").await, Err(PushError::Other(_))));
    push.disconnect(&id("L0SM9cOFvHcCIhw=")).await.expect("deleted");
    assert!(matches!(push.disconnect(&id("gone2")).await, Err(PushError::Gone)));

    let requests = seen.requests.lock().expect("lock").clone();
    assert_eq!(
        requests[0],
        (
            "POST".to_owned(),
            "/ws/@connections/L0SM9cOFvHcCIhw%3D".to_owned(),
            r#"{"type":"x"}"#.to_owned()
        )
    );
    // A 410 is final; a 500 is retried (the SDK's standard retries).
    let count = |path: &str| requests.iter().filter(|(_, p, _)| p.ends_with(path)).count();
    assert_eq!(count("/gone1"), 1);
    assert!(count("/boom1") > 1, "{requests:?}");
    assert!(requests
        .iter()
        .any(|(m, p, _)| m == "DELETE" && p == "/ws/@connections/L0SM9cOFvHcCIhw%3D"));
}

#[tokio::test]
async fn a_fan_out_runs_concurrently_within_its_bound_and_returns_the_failures() {
    let (endpoint, seen) = stand_in(Duration::from_millis(40)).await;
    let push = ApiGatewayPush::new(ApiGatewayPush::client(&sdk(), &endpoint), 16);
    let conns: Vec<ConnectionId> = (0..40)
        .map(|i| id(&if i % 10 == 3 { format!("gone{i}") } else { format!("c{i}") }))
        .collect();

    let started = std::time::Instant::now();
    let failed = push.send_many(&conns, "{}").await;
    let took = started.elapsed();

    let mut gone: Vec<&str> = failed
        .iter()
        .map(|(c, e)| {
            assert!(matches!(e, PushError::Gone), "{e}");
            c.as_str()
        })
        .collect();
    gone.sort_unstable();
    assert_eq!(gone, ["gone13", "gone23", "gone3", "gone33"]);
    let most = seen.most_in_flight.load(Ordering::SeqCst);
    assert!(most <= 16, "{most} posts in flight");
    assert!(most >= 8, "only {most} posts in flight: not concurrent");
    // 40 posts of 40 ms each, 16 at a time: about 3 rounds, not 40.
    assert!(took < Duration::from_millis(40 * 20), "{took:?}");
    let per_id: HashMap<String, usize> =
        seen.requests
            .lock()
            .expect("lock")
            .iter()
            .fold(HashMap::new(), |mut m, (_, p, _)| {
                *m.entry(p.clone()).or_default() += 1;
                m
            });
    assert_eq!(per_id.len(), 40);
}
