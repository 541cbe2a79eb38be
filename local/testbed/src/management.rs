//! API Gateway's Management API (`execute-api:ManageConnections`) over the
//! hub, so code written for AWS (the SDK's `post_to_connection`,
//! `get_connection`, `delete_connection`) runs unchanged against the local
//! gateway:
//!
//! - `POST /@connections/{id}`: the raw body becomes one text frame.
//! - `GET /@connections/{id}`: `connectedAt`, `lastActiveAt`, `identity`.
//! - `DELETE /@connections/{id}`: closes the connection; `$disconnect` follows.
//!
//! Also under a stage prefix (`/{stage}/@connections/{id}`), as the SDK
//! calls it with an endpoint like `http://127.0.0.1:8787/dev`. The id arrives
//! percent-encoded (`=` as `%3D`); axum decodes it.
//!
//! Only the test bed serves it, on a listener of its own on loopback that
//! only the functions it starts are told of; SigV4 signatures are ignored.
//! The shipped `tether` binary has no such route: on AWS the Management API
//! takes IAM-signed calls only, and on the local host nothing outside the
//! process pushes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::{header, HeaderName, HeaderValue, StatusCode};
use tracing::debug;

use tether_local::gateway::{iso8601, Hub, SERVER_CLOSE_CODE, SERVER_CLOSE_REASON};

/// The header the AWS SDKs read to classify an error (a bare 410 is not
/// recognised as `GoneException`).
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";

/// The Management API routes, with and without a stage prefix.
pub fn routes(hub: Hub) -> Router {
    let methods = || {
        post(post_to_connection)
            .get(get_connection)
            .delete(delete_connection)
    };
    Router::new()
        .route("/@connections/{id}", methods())
        .route("/{stage}/@connections/{id}", methods())
        .with_state(hub)
}

type Params = Path<HashMap<String, String>>;

fn connection_id(params: &HashMap<String, String>) -> &str {
    params.get("id").map(String::as_str).unwrap_or("")
}

async fn post_to_connection(State(hub): State<Hub>, Path(params): Params, body: Bytes) -> Response {
    let id = connection_id(&params);
    if body.len() > tether_domain::protocol::MAX_MESSAGE_BYTES {
        return aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            Some("message is larger than 128 KB"),
        );
    }
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            Some("the local gateway sends text frames only; the body must be UTF-8"),
        );
    };
    match hub.send(id, text) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(_) => gone(id),
    }
}

async fn get_connection(State(hub): State<Hub>, Path(params): Params) -> Response {
    let id = connection_id(&params);
    let Some(status) = hub.status(id) else {
        return gone(id);
    };
    let body = serde_json::json!({
        "connectedAt": iso8601(status.connected_at),
        "lastActiveAt": iso8601(status.last_active_at),
        "identity": {
            "sourceIp": status.source_ip.to_string(),
            "userAgent": status.user_agent,
        },
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn delete_connection(State(hub): State<Hub>, Path(params): Params) -> Response {
    let id = connection_id(&params);
    match hub.close(id, SERVER_CLOSE_CODE, SERVER_CLOSE_REASON) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => gone(id),
    }
}

fn gone(id: &str) -> Response {
    debug!(conn = %id, "management call to a gone connection");
    aws_error(StatusCode::GONE, "GoneException", None)
}

/// An error as API Gateway shapes it: `{"message": ...}` and the error type header.
fn aws_error(status: StatusCode, error_type: &'static str, message: Option<&str>) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    response.headers_mut().insert(
        HeaderName::from_static(ERROR_TYPE_HEADER),
        HeaderValue::from_static(error_type),
    );
    response
}
