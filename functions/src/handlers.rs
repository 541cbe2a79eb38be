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
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Method};
use tether_domain::handlers::ConnectRequest;
use tether_domain::ids::ConnectionId;
use tether_domain::model::Millis;
use tether_domain::protocol::{peek_request_id, ErrorBody, PairRequest, ServerFrame};
use tether_domain::store::Store;
use tether_domain::{ApiError, Domain, ErrorCode};
use tracing::{debug, info, warn};

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
        return Ok(refusal(not_through_cloudfront()));
    }
    let ctx = &event.request_context;
    let connection = connection_id(ctx)?;
    let request = match connection {
        Ok(connection_id) => ConnectRequest {
            connection_id,
            ticket: event.query_string_parameters.first("ticket").map(str::to_owned),
            bearer: bearer_token(&event.headers).map(str::to_owned),
            version: event.query_string_parameters.first("v").map(str::to_owned),
            now: request_time(ctx),
        },
        Err(error) => return Ok(refusal(error)),
    };
    let domain = deps.domain(origin(ctx))?;
    match domain.connect(request).await {
        Ok(principal) => {
            info!(?principal, "connected");
            Ok(ws_response(200, None))
        }
        Err(error) => {
            debug!(code = error.code.as_str(), "connection refused");
            Ok(refusal(error))
        }
    }
}

/// `$disconnect` (best effort: API Gateway may never send it).
pub async fn disconnect<S: Store + Clone, P: PushSource>(
    event: ApiGatewayWebsocketProxyRequest,
    deps: &Deps<S, P>,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let ctx = &event.request_context;
    if let Ok(connection) = connection_id(ctx)? {
        debug!(
            status = ?ctx.disconnect_status_code,
            reason = ?ctx.disconnect_reason,
            "disconnected"
        );
        deps.domain(origin(ctx))?
            .disconnect(&connection, request_time(ctx))
            .await;
    }
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
    let body = event.body.unwrap_or_default();
    let reply = if event.is_base64_encoded {
        // A binary frame, as the local gateway answers it.
        ServerFrame::err(
            None,
            ApiError::new(ErrorCode::BadJson, "binary frames are not supported"),
        )
    } else {
        match connection_id(ctx)? {
            Ok(connection) => {
                debug!(route = ?ctx.route_key, "frame");
                deps.domain(origin(ctx))?
                    .handle_frame(&connection, &body, request_time(ctx))
                    .await
            }
            Err(error) => ServerFrame::err(peek_request_id(&body), error),
        }
    };
    Ok(ws_response(200, Some(reply.to_json())))
}

/// The connection id of an event. The two results keep two failures apart:
/// no id at all is a broken event (the function fails); an id the domain
/// does not accept is answered like any other refusal.
fn connection_id(
    ctx: &ApiGatewayWebsocketProxyRequestContext,
) -> Result<Result<ConnectionId, ApiError>, HandlerError> {
    let raw = ctx
        .connection_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or(HandlerError::MissingField("requestContext.connectionId"))?;
    Ok(ConnectionId::parse(raw).map_err(|e| {
        // API Gateway's ids are 16 base64 characters: a mismatch with what
        // the domain accepts is a bug, not a client error.
        warn!(connection_id = %tether_domain::ids::Redacted(raw), error = %e, "the domain refuses this connection id");
        ApiError::new(ErrorCode::Internal, "connection id not accepted")
    }))
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

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Millis::try_from(since.as_millis()).unwrap_or(Millis::MAX)
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

/// A refused `$connect`: the error code's status and `{"code","message"}`.
fn refusal(error: ApiError) -> ApiGatewayProxyResponse {
    let status = error.code.http_status();
    ws_response(status, Some(error_body(error)))
}

/// `{"code","message"}`, the body of every HTTP error answer.
fn error_body(error: ApiError) -> String {
    let body = ErrorBody {
        code: error.code,
        message: error.message,
    };
    serde_json::to_string(&body).unwrap_or_else(|_| r#"{"code":"internal","message":""}"#.into())
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case, as RFC 7235 says).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
    let method = &ctx.http.method;
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
    let bearer = bearer_token(&event.headers);
    let answer = match (method, path) {
        (&Method::POST, "/api/ticket") => domain
            .issue_ticket(bearer, now)
            .await
            .map(|ticket| json_text(&ticket)),
        (&Method::POST, "/api/pair") => match body_text(&event) {
            Ok(body) => match serde_json::from_str::<PairRequest>(&body) {
                Ok(request) => domain
                    .pair(bearer, source_address(&event), request, now)
                    .await
                    .map(|data| json_text(&data)),
                Err(e) => Err(ApiError::bad_request(format!("bad pairing request: {e}"))),
            },
            Err(e) => Err(e),
        },
        (_, "/api/ticket" | "/api/pair") => {
            return Ok(http_response(
                405,
                error_body(ApiError::bad_request(format!("{path} takes POST"))),
            ))
        }
        _ => Err(ApiError::not_found("endpoint")),
    };
    Ok(match answer {
        Ok(body) => http_response(200, body),
        Err(error) => {
            if error.code == ErrorCode::Internal {
                warn!(message = %error.message, "internal error");
            }
            http_response(error.code.http_status(), error_body(error))
        }
    })
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

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The request body as text (API Gateway base64-encodes bodies it takes
/// for binary).
fn body_text(event: &ApiGatewayV2httpRequest) -> Result<String, ApiError> {
    let body = event.body.clone().unwrap_or_default();
    if !event.is_base64_encoded {
        return Ok(body);
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::bad_request("the body is not UTF-8 JSON"))
}

fn http_response(status: u16, body: String) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
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

    #[test]
    fn bearer_needs_the_scheme() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&h), None);
    }
}
