//! The HTTP API in front of the HTTP function: `POST /api/ticket` and
//! `POST /api/pair` become `Invoke` calls with API Gateway's HTTP API event
//! (payload format 2.0), and the function's result becomes the response.
//! As on AWS, a method or path with no route gets 404 `{"message":"Not
//! Found"}` without invoking anything. Each event carries CloudFront's
//! origin header ([`LambdaBackend::add_origin_header`]), as on AWS where
//! CloudFront is in front.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Map, Value};
use tracing::warn;

use super::{request_time, LambdaBackend};
use tether_local::gateway::{now_millis, ConnId};

/// The HTTP API's routes (the `ROUTES` paths, `POST` only).
pub const ROUTES: [&str; 2] = ["/api/ticket", "/api/pair"];

/// `/api/ticket` and `/api/pair`, routed to the HTTP function.
pub fn routes(backend: LambdaBackend) -> Router {
    let mut router = Router::new();
    for path in ROUTES {
        router = router.route(path, any(invoke_route));
    }
    router.with_state(backend)
}

async fn invoke_route(
    State(backend): State<LambdaBackend>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return (
            StatusCode::NOT_FOUND,
            [(http::header::CONTENT_TYPE, "application/json")],
            r#"{"message":"Not Found"}"#,
        )
            .into_response();
    }
    let event = event(&backend, &method, &uri, &headers, &body, peer);
    match backend.invoke(&backend.functions().http, &event).await {
        Ok(result) => response(&result),
        Err(e) => {
            warn!(path = uri.path(), error = %e, "HTTP API invocation failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(http::header::CONTENT_TYPE, "application/json")],
                r#"{"message":"Internal Server Error"}"#,
            )
                .into_response()
        }
    }
}

/// The payload format 2.0 event of a request.
fn event(
    backend: &LambdaBackend,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    peer: SocketAddr,
) -> Value {
    let now = now_millis();
    let path = uri.path();
    let route_key = format!("{method} {path}");
    // HTTP API lower-cases header names and joins repeated ones with commas.
    let mut joined: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        match joined.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(value);
            }
            _ => {
                joined.insert(name.as_str().to_owned(), json!(value));
            }
        }
    }
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (body, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => {
            use base64::Engine as _;
            (base64::engine::general_purpose::STANDARD.encode(body), true)
        }
    };
    let api = backend.api();
    let request_id = ConnId::random();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": joined,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": api.api_id,
            "domainName": api.domain_name,
            "domainPrefix": api.api_id,
            "http": {
                "method": method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": request_id.as_str(),
            "routeKey": route_key,
            "stage": "$default",
            "time": request_time(now),
            "timeEpoch": now,
        },
        "isBase64Encoded": encoded,
    });
    if !body.is_empty() {
        event["body"] = json!(body);
    }
    backend.add_origin_header(&mut event, tether_functions::config::ORIGIN_HEADER);
    event
}

/// A payload format 2.0 result as an HTTP response.
fn response(result: &Value) -> Response {
    let status = result
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let body = match result.get("body") {
        Some(Value::String(s)) => {
            if result.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .unwrap_or_default()
            } else {
                s.clone().into_bytes()
            }
        }
        _ => Vec::new(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(headers) = result.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) else {
                continue;
            };
            response.headers_mut().insert(name, value);
        }
    }
    response
}
