//! A websocket gateway with API Gateway's WebSocket semantics.
//!
//! Clients connect with an HTTP upgrade; the gateway mints a connection id,
//! runs `$connect` on a [`Backend`] before answering the upgrade, routes each
//! text message on its `action` field (for a backend that wants the route;
//! the domain reads it as it parses the frame), and runs `$disconnect`
//! exactly once when the socket ends, whoever ends it. The host pushes to a
//! connection by id through the [`Hub`], in process (the hub implements the
//! domain's `Push` port). Nothing here serves API Gateway's Management API:
//! on the local host nothing outside the process may reach a connection.
//! (The AWS-shaped test bed, `local/testbed`, which is not shipped, serves
//! one over the hub on a loopback listener of its own.)
//!
//! The backend is a trait rather than the domain itself because the
//! AWS-shaped test bed puts real Lambda functions, invoked over HTTP, behind
//! this same gateway. [`DomainBackend`] is the in-process backend the local
//! host uses.
//!
//! Limits mirror API Gateway: 32 KB per frame, 128 KB per message, an idle
//! timeout (10 min) and a maximum connection age (2 h). Unlike API Gateway,
//! a frame or message over the limit gets an error reply and the connection
//! stays open, so clients learn what they did wrong. Unlike API Gateway, it
//! also caps the websockets of one source address (`addresses.rs`).

mod addresses;
mod connection;
mod domain_backend;
mod frames;
mod hub;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, MethodRouter};
use axum::Router;
use http::HeaderMap;
use tether_domain::protocol::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};

pub(crate) use addresses::client_address;
pub use domain_backend::DomainBackend;
pub use hub::{
    ConnectionStatus, Gone, Hub, SERVER_CLOSE_CODE, SERVER_CLOSE_REASON, TOO_SLOW_CLOSE_CODE,
    TOO_SLOW_CLOSE_REASON,
};
pub(crate) use tether_domain::edge::error_body;
pub use tether_domain::edge::{iso8601, now_millis};

/// Milliseconds since the Unix epoch, as the domain counts time.
pub type Millis = tether_domain::model::Millis;

/// The route of a message that is not JSON or has no string `action`.
pub const DEFAULT_ROUTE: &str = "$default";

/// A connection id as the gateway mints it: 16 characters of URL-safe
/// base64 ending in `=`, like API Gateway's (e.g. `L0SM9cOFvHcCIhw=`), so
/// every path that carries one (notably the Management API's
/// `/@connections/{id}`, where `=` must be percent-encoded) is exercised
/// locally as it will be on AWS.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(Arc<str>);

impl ConnId {
    /// A fresh random id: 11 random bytes are 88 bits, which encode to 15
    /// base64 characters and one `=` of padding.
    pub fn random() -> Self {
        use base64::Engine as _;
        use rand::Rng as _;
        let mut bytes = [0u8; 11];
        rand::rng().fill(&mut bytes);
        Self(
            base64::engine::general_purpose::URL_SAFE
                .encode(bytes)
                .into(),
        )
    }

    /// Wraps an id received from outside (the test bed's Management API). It
    /// need not be valid: an unknown id is simply gone.
    pub fn from_string(s: impl Into<Arc<str>>) -> Self {
        Self(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as logs show it (its head only: an id is what a push names).
    pub fn redacted(&self) -> tether_domain::ids::Redacted<'_> {
        tether_domain::ids::Redacted(&self.0)
    }
}

// Lets the hub look ids up by `&str` (`Arc<str>` hashes as its `str`).
impl std::borrow::Borrow<str> for ConnId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnId({})", self.0)
    }
}

/// What the gateway knows of a connection attempt, for `$connect`.
#[derive(Clone)]
pub struct ConnectInfo {
    pub connection_id: ConnId,
    /// The query string's parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The upgrade request's headers (including `authorization`).
    pub headers: HeaderMap,
    pub source_ip: IpAddr,
    pub now: Millis,
}

// By hand, because query values (tickets) and some headers (the bearer
// credential) are secrets that must not reach a log through `{:?}`.
impl std::fmt::Debug for ConnectInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let query: Vec<&str> = self.query.iter().map(|(k, _)| k.as_str()).collect();
        let headers: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("ConnectInfo")
            .field("connection_id", &self.connection_id)
            .field("query_keys", &query)
            .field("header_names", &headers)
            .field("source_ip", &self.source_ip)
            .field("now", &self.now)
            .finish()
    }
}

impl ConnectInfo {
    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Authorization` header's value.
    pub fn authorization(&self) -> Option<&[u8]> {
        self.headers
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes)
    }
}

/// `$connect` accepted the connection.
#[derive(Clone, Debug, Default)]
pub struct Accept {
    /// A subprotocol to echo in `Sec-WebSocket-Protocol` (browsers fail the
    /// handshake unless one they offered is echoed).
    pub subprotocol: Option<String>,
}

/// `$connect` refused the connection: the upgrade is answered with this
/// status and body instead of `101`.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: u16,
    /// A JSON body.
    pub body: String,
}

/// What sits behind the gateway: the three kinds of route invocation.
pub trait Backend: Send + Sync + 'static {
    /// `$connect`, run before the upgrade is answered. While it runs, pushes
    /// to the new id fail with [`Gone`], as on AWS.
    fn connect(&self, info: ConnectInfo) -> impl Future<Output = Result<Accept, Refusal>> + Send;

    /// Whether [`Backend::message`] is given each message's route. A
    /// backend that reads the message itself says no: the gateway then
    /// does not parse every message to find its `action`, and routes it to
    /// [`DEFAULT_ROUTE`], the one message route such a backend has (as the
    /// AWS host has in `template.yaml`).
    const ROUTES_BY_ACTION: bool = true;

    /// One text message, routed on its `action` (or [`DEFAULT_ROUTE`]; see
    /// [`Backend::ROUTES_BY_ACTION`]). Returns the reply to send back on
    /// the same socket, if any.
    fn message(
        &self,
        conn: &ConnId,
        route: &str,
        body: String,
        now: Millis,
    ) -> impl Future<Output = Option<String>> + Send;

    /// `$disconnect`, once per accepted connection, after the connection has
    /// left the hub. `status` is the websocket close code (1006 when the
    /// socket was lost without one).
    fn disconnect(
        &self,
        conn: &ConnId,
        status: u16,
        reason: String,
        now: Millis,
    ) -> impl Future<Output = ()> + Send;
}

/// Timers, limits and dispatch of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// A connection that sends no data message for this long is closed
    /// (1001, "idle timeout"). Control frames do not count, as on AWS.
    pub idle_timeout: Duration,
    /// A connection is closed this long after it was made (1001, "connection age").
    pub max_connection_age: Duration,
    /// `false`: a connection's messages are handled one after another, in
    /// order. `true`: each in its own task, so replies and effects may
    /// reorder, as with API Gateway and Lambda.
    pub concurrent_frames: bool,
    /// Largest frame payload accepted; a larger one gets a `frame_too_large` reply.
    pub max_frame_bytes: usize,
    /// Largest message accepted; a larger one gets a `message_too_large` reply.
    pub max_message_bytes: usize,
    /// Beyond this (frame or message) the socket is closed with 1009: the
    /// gateway must buffer a message to answer it, and this bounds that.
    pub hard_limit_bytes: usize,
    /// The most a connection's frames not yet written to its socket may
    /// add up to; past it the connection is closed as too slow (4008).
    pub max_queued_bytes: usize,
    /// A write to a socket that takes longer ends the connection (a client
    /// that stopped reading, or a dead network). It also bounds how long
    /// the idle and age timers can be kept from firing.
    pub write_timeout: Duration,
    /// The most websockets (open, or still in `$connect`) one source
    /// address may hold; one more is refused with 429
    /// `too_many_connections` before `$connect` runs. An IPv6 address
    /// counts by its /64; behind a proxy on this machine, the address in
    /// its `X-Forwarded-For` counts (`addresses::client_address`). 0: no cap.
    pub max_connections_per_address: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10 * 60),
            max_connection_age: Duration::from_secs(2 * 3600),
            concurrent_frames: false,
            max_frame_bytes: MAX_FRAME_BYTES,
            max_message_bytes: MAX_MESSAGE_BYTES,
            hard_limit_bytes: 1024 * 1024,
            // 32 of the largest messages: a reconnect catches up for less.
            max_queued_bytes: 4 * 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            // Tabs and workers of a household or a small team behind one
            // address fit; one address opening sockets without end does not.
            max_connections_per_address: 64,
        }
    }
}

/// The gateway: a backend, the hub of its connections and its settings.
/// Cheap to clone.
pub struct Gateway<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for Gateway<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

pub(crate) struct Shared<B> {
    pub(crate) backend: B,
    pub(crate) hub: Hub,
    pub(crate) config: GatewayConfig,
    /// Accepted connections whose `$disconnect` has not finished.
    pub(crate) live: Arc<connection::LiveCount>,
    /// Websockets held per source address.
    pub(crate) addresses: Arc<addresses::PerAddress>,
}

impl<B: Backend> Gateway<B> {
    pub fn new(backend: B, hub: Hub, config: GatewayConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                backend,
                hub,
                addresses: Arc::new(addresses::PerAddress::new(
                    config.max_connections_per_address,
                )),
                config,
                live: Arc::default(),
            }),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// Closes every connection with 1001 "going away" and waits, at most
    /// `grace`, until each has run its `$disconnect`. True if all did.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.shared.hub.close_all(1001, "server shutting down");
        tokio::time::timeout(grace, self.shared.live.wait_zero())
            .await
            .is_ok()
    }

    /// Accepted connections whose `$disconnect` has not finished yet.
    pub fn live_connections(&self) -> usize {
        self.shared.live.get()
    }

    /// The websocket endpoint, to mount at any path.
    pub fn websocket(&self) -> MethodRouter {
        let shared = self.shared.clone();
        any(move |req: axum::extract::Request| connection::upgrade(shared.clone(), req))
    }

    /// A router with only the websocket endpoint, at `ws_path`.
    ///
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
    /// so `$connect` sees the client's address.
    pub fn router(&self, ws_path: &str) -> Router {
        Router::new().route(ws_path, self.websocket())
    }
}

/// The route key of a message: its `action` when it is a JSON object with a
/// string `action`, else [`DEFAULT_ROUTE`] (API Gateway's
/// `$request.body.action` selection with a `$default` route).
pub fn route_key(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut map)) => match map.remove("action") {
            Some(serde_json::Value::String(action)) => action,
            _ => DEFAULT_ROUTE.to_owned(),
        },
        _ => DEFAULT_ROUTE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_api_gateway_ids() {
        let a = ConnId::random();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().ends_with('='));
        assert_ne!(a, ConnId::random());
    }

    #[test]
    fn routes_on_string_action_only() {
        assert_eq!(route_key(r#"{"action":"ping","id":"1"}"#), "ping");
        assert_eq!(route_key(r#"{"id":"1"}"#), DEFAULT_ROUTE);
        assert_eq!(route_key(r#"{"action":5}"#), DEFAULT_ROUTE);
        assert_eq!(route_key(r#"["action"]"#), DEFAULT_ROUTE);
        assert_eq!(route_key("not json"), DEFAULT_ROUTE);
    }
}
