//! The test bed's Management API over a gateway's hub: what the functions
//! push through, as they would through API Gateway's.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tether_local::gateway::{
    Accept, Backend, ConnId, ConnectInfo, Gateway, GatewayConfig, Hub, Millis, Refusal,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(10);

/// Accepts every connection and reports its id; answers nothing.
struct Accepting(mpsc::UnboundedSender<ConnId>);

impl Backend for Accepting {
    async fn connect(&self, info: ConnectInfo) -> Result<Accept, Refusal> {
        let _ = self.0.send(info.connection_id);
        Ok(Accept::default())
    }
    async fn message(&self, _: &ConnId, _: &str, _: String, _: Millis) -> Option<String> {
        None
    }
    async fn disconnect(&self, _: &ConnId, _: u16, _: String, _: Millis) {}
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .expect("serve");
    });
    addr
}

#[tokio::test]
async fn posts_gets_and_deletes_through_the_hub() {
    tether_testbed::lambda::install_crypto_provider();
    let (tx, mut ids) = mpsc::unbounded_channel();
    let gateway = Gateway::new(Accepting(tx), Hub::new(), GatewayConfig::default());
    let clients = serve(gateway.router("/ws")).await;
    let management = serve(tether_testbed::management::routes(gateway.hub().clone())).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{clients}/ws"))
        .await
        .expect("connect");
    let id = timeout(PATIENCE, ids.recv()).await.expect("$connect").expect("id");
    // `=` must be percent-encoded in the path, as the SDK sends it.
    let encoded = id.as_str().replace('=', "%3D");
    let http = reqwest::Client::new();
    let url = |stage: &str| format!("http://{management}{stage}/@connections/{encoded}");

    let posted = http.post(url("")).body("hello").send().await.expect("POST");
    assert_eq!(posted.status(), 200);
    let staged = http.post(url("/ws")).body("second").send().await.expect("POST");
    assert_eq!(staged.status(), 200);
    for expected in ["hello", "second"] {
        let frame = timeout(PATIENCE, ws.next()).await.expect("a frame").expect("open");
        assert_eq!(frame.expect("frame"), Message::text(expected));
    }

    let got: Value = http
        .get(url("/ws"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert!(got["connectedAt"].as_str().is_some_and(|s| s.ends_with('Z')), "{got}");
    assert_eq!(got["identity"]["sourceIp"], "127.0.0.1");

    let deleted = http.delete(url("")).send().await.expect("DELETE");
    assert_eq!(deleted.status(), 204);
    let closed = timeout(PATIENCE, ws.next()).await.expect("a close").expect("open");
    assert!(matches!(closed, Ok(Message::Close(Some(ref f))) if u16::from(f.code) == 1000), "{closed:?}");
    // Answer the close (reading on sends tungstenite's half of the
    // handshake), then wait until the gateway has let the connection go.
    while let Ok(Some(_)) = timeout(PATIENCE, ws.next()).await {}
    let hub = gateway.hub().clone();
    let deadline = std::time::Instant::now() + PATIENCE;
    while hub.is_open(id.as_str()) {
        assert!(std::time::Instant::now() < deadline, "the connection stayed open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for method in [reqwest::Method::POST, reqwest::Method::GET, reqwest::Method::DELETE] {
        let gone = http.request(method.clone(), url("")).send().await.expect("call");
        assert_eq!(gone.status(), 410, "{method}");
        assert_eq!(
            gone.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()),
            Some("GoneException")
        );
    }
}
