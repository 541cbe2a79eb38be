//! The functions' handlers: plain `async fn(event, &Deps)`, one per kind of
//! invocation, testable without Lambda. Each turns an API Gateway event into
//! one call of the domain and the domain's answer into API Gateway's
//! response shape; nothing else.
//!
//! ## CloudFront is the only way in
//!
//! Both APIs also answer on their own `execute-api` endpoints, which
//! CloudFront forwards to (a custom domain could turn them off, but it is
//! as reachable as they are). So CloudFront adds a secret header to every
//! request it forwards ([`ORIGIN_HEADER`], template.yaml), and the two
//! handlers that take requests from outside, [`connect`] and [`http`],
//! refuse any request without the right value with 403 before reading
//! anything else, and change nothing. [`message`] and [`disconnect`] need no
//! check: API Gateway invokes them only for a connection whose `$connect`
//! passed.

use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
    ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext,
};
use std::net::IpAddr;

use aws_lambda_events::encodings::Body;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::HeaderMap;
use tether_domain::edge::{error_body, now_millis, ConnectParts, HttpRequest, HTTP_HEADERS};
use tether_domain::model::Millis;
use tether_domain::store::Store;
use tether_domain::{ApiError, Domain, ErrorCode};
use tracing::{debug, info};

use crate::config::{OriginSecret, ORIGIN_HEADER};
use crate::push::{NoEndpoint, Origin, PushSource};

/// What every invocation of a function shares, built once per cold start:
/// the store (its client inside), where pushes go, the domain's settings,
/// and CloudFront's origin secret.
pub struct Deps<S, P> {
    pub store: S,
    pub pushes: P,
    pub config: tether_domain::Config,
    /// The secret CloudFront sends in [`ORIGIN_HEADER`]. Without one,
    /// [`connect`] and [`http`] refuse every request (the runtime gives the
    /// secret to those two functions, and cannot start them without it).
    pub origin_secret: Option<OriginSecret>,
}

/// An invocation the handlers cannot serve: the event lacks what API
/// Gateway always sends, or no push endpoint is known. The function fails
/// (API Gateway answers 500); a client's mistake never gets here.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the event has no {0}")]
    MissingField(&'static str),
    #[error(transparent)]
    NoEndpoint(#[from] NoEndpoint),
}

impl<S: Store + Clone, P: PushSource> Deps<S, P> {
    /// Deps without an origin secret: enough for `$disconnect` and the
    /// message route; [`connect`] and [`http`] refuse everything until
    /// [`Self::with_origin_secret`] gives them one.
    pub fn new(store: S, pushes: P, config: tether_domain::Config) -> Self {
        Self {
            store,
            pushes,
            config,
            origin_secret: None,
        }
    }

    /// The domain for one invocation: the shared store and the push port
    /// of the API the event came through. Cheap (clones of handles).
    pub fn domain(&self, origin: Origin<'_>) -> Result<Domain<S, P::Push>, HandlerError> {
        Ok(Domain::new(
            self.store.clone(),
            self.pushes.push_for(origin)?,
            self.config.clone(),
        ))
    }
}

impl<S, P> Deps<S, P> {
    /// The same deps, accepting requests that carry `secret`.
    pub fn with_origin_secret(mut self, secret: OriginSecret) -> Self {
        self.origin_secret = Some(secret);
        self
    }

    /// Whether a request came through CloudFront: exactly one
    /// [`ORIGIN_HEADER`], whose value is the origin secret (compared in
    /// constant time). Never logs the value.
    pub fn through_cloudfront(&self, headers: &HeaderMap) -> bool {
        let Some(secret) = &self.origin_secret else {
            return false;
        };
        let mut values = headers.get_all(ORIGIN_HEADER).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().is_ok_and(|v| secret.matches(v)),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------
// The WebSocket API
// ---------------------------------------------------------------------------

/// `$connect`: authenticates (`?ticket=` for browsers, `Authorization:
/// Bearer` for workers, `?v=` for the protocol version) and records the
/// connection. 200 accepts the upgrade; a refusal answers with the status
/// of its error code and `{"code","message"}`. A request that did not come
/// through CloudFront is refused first (403 `forbidden`), touching nothing.
///
/// The domain caps the open sockets of each user and worker (429
/// `too_many_connections`). Unlike the local gateway, nothing here caps the
/// sockets of one source address: that would take a store write per
/// `$connect` to count, and API Gateway keeps no such count we could ask.
/// Per-address limits on AWS are the WAF's job (`WafRateLimit` in
/// `template.yaml` limits each address's requests, upgrades included),
/// with the stage's `$connect` throttle over all clients together.
pub async fn connect<S: Store + Clone, P: PushSource>(
    event: ApiGatewayWebsocketProxyRequest,
    deps: &Deps<S, P>,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    if !deps.through_cloudfront(&event.headers) {
        info!("connection refused: not through CloudFront");
        let error = not_through_cloudfront();
        return Ok(ws_response(error.code.http_status(), Some(error_body(error))));
    }
    let ctx = &event.request_context;
    let connection = raw_connection_id(ctx)?;
    let parts = ConnectParts {
        connection_id: connection,
        ticket: event.query_string_parameters.first("ticket"),
        version: event.query_string_parameters.first("v"),
        authorization: authorization(&event.headers),
        now: request_time(ctx),
    };
    Ok(match deps.domain(origin(ctx))?.connect_edge(parts).await {
        Ok(()) => ws_response(200, None),
        Err(refused) => ws_response(refused.status, Some(refused.body)),
    })
}

/// `$disconnect` (best effort: API Gateway may never send it).
pub async fn disconnect<S: Store + Clone, P: PushSource>(
    event: ApiGatewayWebsocketProxyRequest,
    deps: &Deps<S, P>,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let ctx = &event.request_context;
    let connection = raw_connection_id(ctx)?;
    debug!(
        status = ?ctx.disconnect_status_code,
        reason = ?ctx.disconnect_reason,
        "disconnected"
    );
    deps.domain(origin(ctx))?
        .disconnect_edge(connection, request_time(ctx))
        .await;
    Ok(ws_response(200, None))
}

/// Every other route (the actions and `$default`): one frame, one reply.
/// The reply is the integration response, which API Gateway sends back on
/// the socket because the route is two-way (a `$default` route response);
/// pushes to other connections go through the Management API.
pub async fn message<S: Store + Clone, P: PushSource>(
    event: ApiGatewayWebsocketProxyRequest,
    deps: &Deps<S, P>,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let ctx = &event.request_context;
    let connection = raw_connection_id(ctx)?;
    let body = event.body.unwrap_or_default();
    debug!(route = ?ctx.route_key, "frame");
    // A binary frame comes base64-encoded; it is answered as the local
    // gateway answers it.
    let reply = deps
        .domain(origin(ctx))?
        .frame_edge(connection, &body, event.is_base64_encoded, request_time(ctx))
        .await;
    Ok(ws_response(200, Some(reply)))
}

/// The connection id of an event: API Gateway always sends one, so an
/// event without it is broken (the function fails).
fn raw_connection_id(ctx: &ApiGatewayWebsocketProxyRequestContext) -> Result<&str, HandlerError> {
    ctx.connection_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or(HandlerError::MissingField("requestContext.connectionId"))
}

/// The `Authorization` header's value.
fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(AUTHORIZATION).map(HeaderValue::as_bytes)
}

fn origin(ctx: &ApiGatewayWebsocketProxyRequestContext) -> Origin<'_> {
    Origin {
        domain_name: ctx.domain_name.as_deref(),
        stage: ctx.stage.as_deref(),
    }
}

/// When API Gateway received the request (the clock of every handler
/// decision), or this machine's clock if the event has no time.
fn request_time(ctx: &ApiGatewayWebsocketProxyRequestContext) -> Millis {
    if ctx.request_time_epoch > 0 {
        ctx.request_time_epoch
    } else {
        now_millis()
    }
}

fn ws_response(status: u16, body: Option<String>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status);
    if body.is_some() {
        response
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response.body = body.map(Body::Text);
    response
}

/// The refusal of a request without CloudFront's origin header.
fn not_through_cloudfront() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "this API takes requests through its CloudFront distribution only",
    )
}

// ---------------------------------------------------------------------------
// The HTTP API
// ---------------------------------------------------------------------------

/// The HTTP API's routes (`POST /api/ticket`, `POST /api/pair`), on API
/// Gateway's HTTP API with payload format 2.0. Answers are JSON and never
/// cached (tickets and pairing codes are credentials). Any request that did
/// not come through CloudFront gets 403 `forbidden` first, touching nothing.
pub async fn http<S: Store + Clone, P: PushSource>(
    event: ApiGatewayV2httpRequest,
    deps: &Deps<S, P>,
) -> Result<ApiGatewayV2httpResponse, HandlerError> {
    if !deps.through_cloudfront(&event.headers) {
        info!("request refused: not through CloudFront");
        let error = not_through_cloudfront();
        return Ok(http_response(error.code.http_status(), error_body(error)));
    }
    let ctx = &event.request_context;
    let now = if ctx.time_epoch > 0 {
        ctx.time_epoch
    } else {
        now_millis()
    };
    let path = ctx
        .http
        .path
        .as_deref()
        .or(event.raw_path.as_deref())
        .unwrap_or("");
    let domain = deps.domain(Origin {
        domain_name: ctx.domain_name.as_deref(),
        stage: ctx.stage.as_deref(),
    })?;
    let body = match body_bytes(&event) {
        Ok(body) => body,
        Err(error) => return Ok(http_response(error.code.http_status(), error_body(error))),
    };
    let answer = domain
        .http(HttpRequest {
            method: ctx.http.method.as_str(),
            path,
            authorization: authorization(&event.headers),
            source: source_address(&event),
            body: &body,
            now,
        })
        .await;
    Ok(http_response(answer.status, answer.body))
}

/// The address a request came from, for the cap on pending workers per
/// source. A request reaches us through CloudFront, which appends the
/// viewer's address to `X-Forwarded-For` (after whatever the viewer wrote
/// there itself), then through the HTTP API, which appends the address it
/// was reached from, CloudFront's, also given as `requestContext.http.
/// sourceIp`. So the entry trusted is the last one that is not that hop:
/// the viewer's address as CloudFront saw it. The first entry, which guides
/// often read, is whatever the client wrote: a worker could dodge the cap
/// with one made-up address per request. `sourceIp` itself is one of
/// CloudFront's edge servers, shared by every viewer near it. Without the
/// header (a request not through CloudFront, refused before this), it is
/// `sourceIp`.
fn source_address(event: &ApiGatewayV2httpRequest) -> Option<IpAddr> {
    let hop: Option<IpAddr> = event
        .request_context
        .http
        .source_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok());
    let forwarded: Vec<IpAddr> = event
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|entry| entry.trim().parse().ok())
        .collect::<Option<Vec<IpAddr>>>()
        .unwrap_or_default();
    let mut entries = forwarded.iter().rev().peekable();
    if entries.peek().copied() == hop.as_ref() {
        entries.next();
    }
    entries.next().copied().or(hop)
}

/// The request body (API Gateway base64-encodes bodies it takes for binary).
fn body_bytes(event: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, ApiError> {
    let body = event.body.as_deref().unwrap_or_default();
    if !event.is_base64_encoded {
        return Ok(body.as_bytes().to_vec());
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| ApiError::bad_request("the body is not valid base64"))
}

fn http_response(status: u16, body: String) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    for (name, value) in HTTP_HEADERS {
        response.headers.insert(name, HeaderValue::from_static(value));
    }
    response.body = Some(Body::Text(body));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-origin";

    fn deps(secret: Option<&str>) -> Deps<(), ()> {
        Deps {
            store: (),
            pushes: (),
            config: tether_domain::Config::default(),
            origin_secret: secret.map(|s| OriginSecret::new(s).expect("secret")),
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ORIGIN_HEADER, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn only_the_one_right_origin_header_passes() {
        let d = deps(Some(SECRET));
        assert!(d.through_cloudfront(&headers(&[SECRET])));
        assert!(!d.through_cloudfront(&headers(&[])));
        assert!(!d.through_cloudfront(&headers(&["wrong"])));
        assert!(!d.through_cloudfront(&headers(&[SECRET, SECRET])));
        assert!(!d.through_cloudfront(&headers(&["wrong", SECRET])));
        // Header names are case-insensitive (API Gateway keeps the client's case).
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_static("x-tether-origin"),
            HeaderValue::from_static(SECRET),
        );
        assert!(d.through_cloudfront(&h));
        // No secret configured: nothing passes.
        assert!(!deps(None).through_cloudfront(&headers(&[SECRET])));
    }

    #[test]
    fn the_pairing_source_is_the_address_cloudfront_saw() {
        let event = |source_ip: &str, forwarded: Option<&str>| {
            let mut e = ApiGatewayV2httpRequest::default();
            e.request_context.http.source_ip = Some(source_ip.to_owned());
            if let Some(f) = forwarded {
                e.headers.insert("x-forwarded-for", HeaderValue::from_str(f).expect("header"));
            }
            e
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("an address"));
        // CloudFront appended the viewer, the HTTP API its own peer.
        assert_eq!(
            source_address(&event("130.176.1.2", Some("203.0.113.7, 130.176.1.2"))),
            ip("203.0.113.7")
        );
        // What the viewer wrote itself comes first and counts for nothing.
        assert_eq!(
            source_address(&event("130.176.1.2", Some("1.2.3.4, 5.6.7.8, 203.0.113.7, 130.176.1.2"))),
            ip("203.0.113.7")
        );
        // Were the API's hop not appended, the last entry is CloudFront's.
        assert_eq!(
            source_address(&event("130.176.1.2", Some("9.9.9.9, 2001:db8::1"))),
            ip("2001:db8::1")
        );
        // No header, or one that does not parse: the peer.
        assert_eq!(source_address(&event("198.51.100.3", None)), ip("198.51.100.3"));
        assert_eq!(
            source_address(&event("198.51.100.3", Some("junk, 203.0.113.7"))),
            ip("198.51.100.3")
        );
    }
}
