//! The AWS-shaped backend: the gateway acting as API Gateway in front of
//! real Lambda functions (the `tether-functions` binaries) served by a
//! Lambda runtime emulator (`cargo lambda watch`), with DynamoDB on a
//! DynamoDB-compatible server. The test tier that runs the end-to-end
//! scenarios against the functions uses it.
//!
//! - [`LambdaBackend`] implements [`Backend`]: `$connect`, every message
//!   and `$disconnect` become `Invoke` calls (`POST
//!   /2015-03-31/functions/<name>/invocations`) carrying the event API
//!   Gateway sends (`requestContext` with `connectionId`, `connectedAt`,
//!   `requestTimeEpoch`, `routeKey`, `eventType`, `domainName`, `stage`, …;
//!   `queryStringParameters` and `headers` on `$connect`; `body` on
//!   messages). The functions push back through the test bed's Management
//!   API ([`crate::management`], on a loopback listener of its own).
//! - [`http_api`] does the same for the HTTP API's two routes, with the
//!   HTTP API's payload format 2.0.
//! - [`emulator`] starts `cargo lambda watch` for one host process and
//!   [`serve()`] runs the whole thing as `tether serve` does.
//!
//! As on AWS: a `$connect` answered with a non-2xx status refuses the
//! upgrade with that status and body; a message route's response body is
//! sent back on the socket (the `$default` route is two-way); a failed
//! invocation gives the client `{"message": "Internal server error", …}`.
//!
//! The test bed also plays CloudFront's part: on AWS, CloudFront adds the
//! origin secret in [`ORIGIN_HEADER`] to every request it forwards to the
//! APIs (overwriting one a client sends), and the functions refuse requests
//! without it. So the events of `$connect` and of the HTTP API carry the
//! secret the functions were given ([`LambdaBackend::new`]).

pub mod emulator;
pub mod http_api;
mod serve;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use tether_functions::config::ORIGIN_HEADER;
use tether_local::gateway::{iso8601, Accept, Backend, ConnId, ConnectInfo, Millis, Refusal};

pub use serve::{host_table, management_endpoint, serve, LambdaHost, MANAGEMENT_FILE};

/// The names of the functions behind each kind of route (the binaries'
/// names, which `cargo lambda watch` serves them by).
#[derive(Clone, Debug)]
pub struct Functions {
    pub connect: String,
    pub disconnect: String,
    /// Every other route (`$default` and any action).
    pub message: String,
    /// The HTTP API.
    pub http: String,
}

impl Default for Functions {
    fn default() -> Self {
        Self {
            connect: "tether-connect".into(),
            disconnect: "tether-disconnect".into(),
            message: "tether-message".into(),
            http: "tether-http".into(),
        }
    }
}

/// How API Gateway names itself in events.
#[derive(Clone, Debug)]
pub struct ApiIdentity {
    /// `requestContext.apiId`.
    pub api_id: String,
    /// `requestContext.domainName` (the gateway's `host:port`).
    pub domain_name: String,
    /// `requestContext.stage`.
    pub stage: String,
}

/// A failed `Invoke`: the emulator or the function failed, or took too long.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("invoking {function}: {source}")]
    Transport {
        function: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("invoking {function}: HTTP {status}: {body}")]
    Status {
        function: String,
        status: u16,
        body: String,
    },
    #[error("{function} failed: {body}")]
    Function { function: String, body: String },
    #[error("{function} answered with something other than JSON: {body}")]
    NotJson { function: String, body: String },
}

/// The Lambda backend. Cheap to clone.
#[derive(Clone)]
pub struct LambdaBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the Lambda runtime emulator.
    endpoint: String,
    functions: Functions,
    api: ApiIdentity,
    /// The origin secret CloudFront would add to the requests it forwards.
    origin_secret: String,
    /// API Gateway's integration timeout (29 s).
    timeout: Duration,
    /// `connectedAt` of live connections (every event carries it).
    connected_at: Mutex<HashMap<ConnId, Millis>>,
}

impl LambdaBackend {
    /// A backend invoking `functions` at `endpoint`, whose `$connect` and
    /// HTTP API events carry `origin_secret` as CloudFront's would (the
    /// functions' `TETHER_ORIGIN_SECRET`).
    pub fn new(
        endpoint: impl Into<String>,
        functions: Functions,
        api: ApiIdentity,
        origin_secret: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        install_crypto_provider();
        Self {
            inner: Arc::new(Inner {
                client: reqwest::Client::new(),
                endpoint: endpoint.into().trim_end_matches('/').to_owned(),
                functions,
                api,
                origin_secret: origin_secret.into(),
                timeout,
                connected_at: Mutex::default(),
            }),
        }
    }

    pub fn functions(&self) -> &Functions {
        &self.inner.functions
    }

    pub fn api(&self) -> &ApiIdentity {
        &self.inner.api
    }

    /// CloudFront's part: sets the origin header in an event's `headers`
    /// (and `multiValueHeaders`, if it has them) under `name`, replacing
    /// whatever the client sent under that name in any case.
    /// `$connect` events spell it [`canonical_header_name`]'s way, HTTP API
    /// events in lower case.
    pub fn add_origin_header(&self, event: &mut Value, name: &str) {
        let secret = &self.inner.origin_secret;
        for (map, multi) in [("headers", false), ("multiValueHeaders", true)] {
            let Some(headers) = event.get_mut(map).and_then(Value::as_object_mut) else {
                continue;
            };
            headers.retain(|k, _| !k.eq_ignore_ascii_case(ORIGIN_HEADER));
            headers.insert(name.to_owned(), if multi { json!([secret]) } else { json!(secret) });
        }
    }

    /// One `Invoke` (`RequestResponse`) with an event; the function's result.
    pub async fn invoke(&self, function: &str, event: &Value) -> Result<Value, InvokeError> {
        self.invoke_within(function, event, self.inner.timeout).await
    }

    /// [`Self::invoke`] with its own time limit (a first, cold invocation
    /// under the emulator may build the function).
    pub async fn invoke_within(
        &self,
        function: &str,
        event: &Value,
        timeout: Duration,
    ) -> Result<Value, InvokeError> {
        let url = format!(
            "{}/2015-03-31/functions/{function}/invocations",
            self.inner.endpoint
        );
        let transport = |source| InvokeError::Transport {
            function: function.to_owned(),
            source,
        };
        let response = self
            .inner
            .client
            .post(url)
            .timeout(timeout)
            .json(event)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response.text().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            return Err(InvokeError::Status {
                function: function.to_owned(),
                status,
                body,
            });
        }
        if function_error {
            return Err(InvokeError::Function {
                function: function.to_owned(),
                body,
            });
        }
        serde_json::from_str(&body).map_err(|_| InvokeError::NotJson {
            function: function.to_owned(),
            body,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Millis>> {
        self.inner
            .connected_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// `requestContext` as API Gateway fills it for a WebSocket event.
    fn context(&self, conn: &ConnId, route: &str, event_type: &str, connected_at: Millis, now: Millis) -> Map<String, Value> {
        let request_id = ConnId::random();
        let mut ctx = Map::new();
        ctx.insert("routeKey".into(), json!(route));
        ctx.insert("eventType".into(), json!(event_type));
        ctx.insert("extendedRequestId".into(), json!(request_id.as_str()));
        ctx.insert("requestTime".into(), json!(request_time(now)));
        ctx.insert("messageDirection".into(), json!("IN"));
        ctx.insert("stage".into(), json!(self.inner.api.stage));
        ctx.insert("connectedAt".into(), json!(connected_at));
        ctx.insert("requestTimeEpoch".into(), json!(now));
        ctx.insert("requestId".into(), json!(request_id.as_str()));
        ctx.insert("domainName".into(), json!(self.inner.api.domain_name));
        ctx.insert("connectionId".into(), json!(conn.as_str()));
        ctx.insert("apiId".into(), json!(self.inner.api.api_id));
        ctx
    }
}

/// reqwest builds its (unused, here) rustls config even for plain HTTP, and
/// the workspace's rustls comes without a default provider: install ring's
/// (as the worker does). Harmless when one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// API Gateway's `requestTime`: `26/Nov/2024:10:17:47 +0000`.
pub fn request_time(ms: Millis) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `YYYY-MM-DDTHH:MM:SS.mmmZ`
    let iso = iso8601(ms);
    let month: usize = iso[5..7].parse().unwrap_or(1);
    format!(
        "{}/{}/{}:{} +0000",
        &iso[8..10],
        MONTHS[month.clamp(1, 12) - 1],
        &iso[0..4],
        &iso[11..19]
    )
}

/// Headers as API Gateway passes them: `headers` (a repeated header's last
/// value) and `multiValueHeaders` (all of them).
fn header_maps(headers: &http::HeaderMap) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        let name = canonical_header_name(name.as_str());
        single.insert(name.clone(), json!(value));
        match multi.get_mut(&name) {
            Some(Value::Array(values)) => values.push(json!(value)),
            _ => {
                multi.insert(name, json!([value]));
            }
        }
    }
    (Value::Object(single), Value::Object(multi))
}

/// `sec-websocket-key` → `Sec-WebSocket-Key`, as API Gateway spells the
/// headers of a `$connect` (the functions must not care).
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| match part {
            "websocket" => "WebSocket".to_owned(),
            _ => {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn query_maps(query: &[(String, String)]) -> (Value, Value) {
    if query.is_empty() {
        return (Value::Null, Value::Null);
    }
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (k, v) in query {
        single.insert(k.clone(), json!(v));
        match multi.get_mut(k) {
            Some(Value::Array(values)) => values.push(json!(v)),
            _ => {
                multi.insert(k.clone(), json!([v]));
            }
        }
    }
    (Value::Object(single), Value::Object(multi))
}

/// What API Gateway sends a client whose message's integration failed.
fn internal_error(conn: &ConnId) -> String {
    json!({
        "message": "Internal server error",
        "connectionId": conn.as_str(),
        "requestId": ConnId::random().as_str(),
    })
    .to_string()
}

/// The body of a proxy integration's response, as text.
fn response_body(response: &Value) -> Option<String> {
    match response.get("body")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn response_status(response: &Value) -> u16 {
    response
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(200)
}

impl Backend for LambdaBackend {
    async fn connect(&self, info: ConnectInfo) -> Result<Accept, Refusal> {
        let (headers, multi_headers) = header_maps(&info.headers);
        let (query, multi_query) = query_maps(&info.query);
        let mut ctx = self.context(&info.connection_id, "$connect", "CONNECT", info.now, info.now);
        let user_agent = info
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        ctx.insert(
            "identity".into(),
            json!({"sourceIp": info.source_ip.to_string(), "userAgent": user_agent}),
        );
        let mut event = json!({
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "requestContext": ctx,
            "isBase64Encoded": false,
        });
        self.add_origin_header(&mut event, &canonical_header_name(ORIGIN_HEADER));
        let function = &self.inner.functions.connect;
        match self.invoke(function, &event).await {
            Ok(response) => {
                let status = response_status(&response);
                if (200..300).contains(&status) {
                    self.lock().insert(info.connection_id.clone(), info.now);
                    let subprotocol = response
                        .get("headers")
                        .and_then(|h| {
                            h.as_object()?
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
                                .and_then(|(_, v)| v.as_str())
                        })
                        .map(str::to_owned);
                    Ok(Accept { subprotocol })
                } else {
                    Err(Refusal {
                        status,
                        body: response_body(&response).unwrap_or_default(),
                    })
                }
            }
            Err(e) => {
                warn!(conn = %info.connection_id, error = %e, "$connect failed");
                Err(Refusal {
                    status: 500,
                    body: json!({"message": "Internal server error"}).to_string(),
                })
            }
        }
    }

    async fn message(&self, conn: &ConnId, route: &str, body: String, now: Millis) -> Option<String> {
        let connected_at = self.lock().get(conn).copied().unwrap_or(now);
        let mut ctx = self.context(conn, route, "MESSAGE", connected_at, now);
        ctx.insert("messageId".into(), json!(ConnId::random().as_str()));
        let event = json!({
            "requestContext": ctx,
            "body": body,
            "isBase64Encoded": false,
        });
        // Every route but the two lifecycle ones goes to the message function.
        let function = &self.inner.functions.message;
        match self.invoke(function, &event).await {
            Ok(response) => response_body(&response),
            Err(e) => {
                warn!(conn = %conn, route, error = %e, "message route failed");
                Some(internal_error(conn))
            }
        }
    }

    async fn disconnect(&self, conn: &ConnId, status: u16, reason: String, now: Millis) {
        let connected_at = self.lock().remove(conn).unwrap_or(now);
        let mut ctx = self.context(conn, "$disconnect", "DISCONNECT", connected_at, now);
        ctx.insert("disconnectStatusCode".into(), json!(status));
        ctx.insert("disconnectReason".into(), json!(reason));
        let event = json!({
            "headers": {"Host": self.inner.api.domain_name},
            "multiValueHeaders": {"Host": [self.inner.api.domain_name]},
            "requestContext": ctx,
            "isBase64Encoded": false,
        });
        match self.invoke(&self.inner.functions.disconnect, &event).await {
            Ok(_) => debug!(conn = %conn, "$disconnect done"),
            Err(e) => warn!(conn = %conn, error = %e, "$disconnect failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_time_is_api_gateways_format() {
        assert_eq!(request_time(1_732_616_267_185), "26/Nov/2024:10:17:47 +0000");
        assert_eq!(request_time(0), "01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn the_origin_header_replaces_the_clients() {
        let backend = LambdaBackend::new(
            "http://127.0.0.1:9",
            Functions::default(),
            ApiIdentity {
                api_id: "local".into(),
                domain_name: "127.0.0.1:1".into(),
                stage: "ws".into(),
            },
            "the-secret",
            Duration::from_secs(1),
        );
        // A $connect: canonical names, both maps; a forged value is replaced.
        let mut event = json!({
            "headers": {"Host": "h", "X-Tether-Origin": "forged"},
            "multiValueHeaders": {"Host": ["h"], "x-tether-origin": ["forged", "twice"]},
        });
        backend.add_origin_header(&mut event, &canonical_header_name(ORIGIN_HEADER));
        assert_eq!(event["headers"], json!({"Host": "h", "X-Tether-Origin": "the-secret"}));
        assert_eq!(event["multiValueHeaders"], json!({"Host": ["h"], "X-Tether-Origin": ["the-secret"]}));
        // An HTTP API event: lower-case names.
        let mut event = json!({"headers": {"host": "h", "x-tether-origin": "forged"}});
        backend.add_origin_header(&mut event, ORIGIN_HEADER);
        assert_eq!(event["headers"], json!({"host": "h", "x-tether-origin": "the-secret"}));
    }

    #[test]
    fn header_names_are_spelled_as_api_gateway_does() {
        assert_eq!(canonical_header_name("sec-websocket-key"), "Sec-WebSocket-Key");
        assert_eq!(canonical_header_name("authorization"), "Authorization");
        assert_eq!(canonical_header_name("x-forwarded-for"), "X-Forwarded-For");
    }
}
