//! What the host serves to anyone who can reach its port.

use super::raw_http::request;
use crate::helpers::{Host, Mode, Server, UserClient};

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Paths that must not exist: API Gateway's Management API (with and
/// without a stage, the id as the SDK encodes it), health and debug routes
/// other servers ship, files a misconfigured server leaks, and unknown API
/// endpoints.
const ABSENT: [&str; 14] = [
    "/@connections/L0SM9cOFvHcCIhw%3D",
    "/@connections/L0SM9cOFvHcCIhw=",
    "/ws/@connections/L0SM9cOFvHcCIhw%3D",
    "/dev/@connections/L0SM9cOFvHcCIhw%3D",
    "/healthz",
    "/metrics",
    "/debug/pprof",
    "/admin",
    "/.env",
    "/tether.db",
    "/../tether.db",
    "/api",
    "/api/users",
    "/api/ticket/extra",
];

pub async fn only_the_ui_the_api_and_the_websocket_are_served(host: Host) {
    let server = Server::start(host, Mode::Sequential).await;
    for path in ABSENT {
        for method in METHODS {
            let res = request(server.addr, method, path, &[], "{}").await;
            assert_eq!(res.status, 404, "{method} {path}: {res:?}");
        }
    }
    // A cross-site form post (text/plain needs no preflight) to where the
    // Management API used to be changes nothing and is 404.
    let res = request(
        server.addr,
        "POST",
        "/@connections/L0SM9cOFvHcCIhw%3D",
        &[("Content-Type", "text/plain"), ("Origin", "https://evil.example")],
        r#"{"type":"session_start"}"#,
    )
    .await;
    assert_eq!(res.status, 404, "{res:?}");
    // What is served: the UI at `/` and its files (on AWS, CloudFront
    // serves the UI from S3: the Lambda tier has none).
    if host.serves_ui {
        let index = request(server.addr, "GET", "/", &[], "").await;
        assert_eq!(index.status, 200, "GET /: {index:?}");
        assert!(index.body.contains("<html") || index.body.contains("<!doctype"), "{index:?}");
        let manifest = request(server.addr, "GET", "/manifest.webmanifest", &[], "").await;
        assert_eq!(manifest.status, 200, "{manifest:?}");
    }
    // The UI's paths are not rewritten to the page: it routes in the fragment.
    let deep = request(server.addr, "GET", "/s/some-session", &[], "").await;
    assert_eq!(deep.status, 404, "{deep:?}");
    // `/ws` without a ticket or credential: refused, not upgraded.
    let ws = request(
        server.addr,
        "GET",
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        "",
    )
    .await;
    assert_eq!(ws.status, 401, "{ws:?}");
}

/// A connection id names a connection to push to: logs at `info` and above
/// never carry one whole. (The suite's servers log at `debug`; only the
/// lines of higher levels are checked.)
pub async fn connection_ids_are_not_logged_at_info(host: Host) {
    let server = Server::start(host, Mode::Sequential).await;
    let user = server.add_user("ada").await;
    let client = UserClient::connect(&server, &user).await;
    client.ping().await;
    drop(client);
    // A refused connection logs too.
    let _ = request(server.addr, "GET", "/ws?ticket=tkt_wrong", &[
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ], "")
    .await;
    let logs = server.logs();
    let checked: Vec<&str> = logs
        .lines()
        .filter(|l| [" INFO ", " WARN ", " ERROR "].iter().any(|level| l.contains(level)))
        .collect();
    assert!(
        checked.iter().any(|l| l.contains("connected")),
        "the connection is logged at info (without its id):\n{logs}"
    );
    for line in checked {
        assert!(
            !contains_connection_id(line),
            "a connection id in a log line above debug: {line}"
        );
    }
}

/// Whether `text` holds something shaped like a connection id: 15
/// characters of URL-safe base64 and a `=`.
fn contains_connection_id(text: &str) -> bool {
    let b = text.as_bytes();
    (15..b.len()).any(|end| {
        b[end] == b'='
            && b[end - 15..end]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
            && (end < 16 || !(b[end - 16].is_ascii_alphanumeric() || matches!(b[end - 16], b'-' | b'_')))
    })
}

#[test]
fn the_id_shape_is_recognised() {
    assert!(contains_connection_id("conn=L0SM9cOFvHcCIhw= connected"));
    assert!(!contains_connection_id("conn=L0SM… connected"));
    assert!(!contains_connection_id("a base64 blob aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ="));
}
