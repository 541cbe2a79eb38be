//! The push port on API Gateway's Management API.
//!
//! [`ApiGatewayPush`] posts a frame with `PostToConnection` and closes a
//! connection with `DeleteConnection`. A 410 (`GoneException`) becomes
//! [`PushError::Gone`]: the domain then drops the stale connection record,
//! and the request that caused the push carries on. Fan-out
//! ([`Push::send_many`]) posts to up to `concurrency` connections at once,
//! since each post is an HTTPS round trip.
//!
//! The endpoint is the API's own: `https://{domainName}/{stage}` from the
//! event (so one function needs no configuration to reach the API that
//! invoked it), unless `TETHER_MANAGEMENT_ENDPOINT` fixes it (local
//! emulation, custom domain names). [`ManagementApi`] builds one client per
//! endpoint and keeps it for the life of the process.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::config::timeout::TimeoutConfig;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use tether_domain::ids::ConnectionId;
use tether_domain::push::{Push, PushError};
use tracing::{debug, warn};

/// The error code API Gateway gives a connection that no longer exists.
const GONE: &str = "GoneException";

/// A bound on one Management API call, retries included: a push must not
/// eat the route's 29 s integration timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The push port on one Management API endpoint. Clones share the client.
#[derive(Clone, Debug)]
pub struct ApiGatewayPush {
    client: Client,
    concurrency: usize,
}

impl ApiGatewayPush {
    /// A push port over a Management API client; `concurrency` (at least 1)
    /// bounds the posts in flight of one fan-out.
    pub fn new(client: Client, concurrency: usize) -> Self {
        Self {
            client,
            concurrency: concurrency.max(1),
        }
    }

    /// A client for `endpoint` (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`
    /// or a local gateway's `http://127.0.0.1:PORT/{stage}`).
    pub fn client(sdk: &SdkConfig, endpoint: &str) -> Client {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .build();
        Client::from_conf(config)
    }
}

/// Maps a Management API failure onto the port: 410 is `Gone` (whether or
/// not the response names `GoneException`: the SDK classifies a 410 only
/// by its `x-amzn-ErrorType` header), anything else is `Other`.
fn push_error<E>(op: &str, conn: &ConnectionId, e: SdkError<E, HttpResponse>) -> PushError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let gone = status == Some(410) || e.as_service_error().and_then(|s| s.code()) == Some(GONE);
    if gone {
        debug!(connection_id = %conn, op, "connection gone");
        return PushError::Gone;
    }
    let message = format!("{op}: {}", DisplayErrorContext(&e));
    warn!(connection_id = %conn.redacted(), error = %message, "management API call failed");
    PushError::Other(message)
}

impl ApiGatewayPush {
    async fn send_to(&self, conn: ConnectionId, frame: &str) -> (ConnectionId, Result<(), PushError>) {
        let result = self.send(&conn, frame).await;
        (conn, result)
    }
}

impl Push for ApiGatewayPush {
    async fn send(&self, conn: &ConnectionId, frame: &str) -> Result<(), PushError> {
        self.client
            .post_to_connection()
            .connection_id(conn.as_str())
            .data(Blob::new(frame.as_bytes()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| push_error("PostToConnection", conn, e))
    }

    async fn send_many(&self, conns: &[ConnectionId], frame: &str) -> Vec<(ConnectionId, PushError)> {
        // At most `concurrency` posts in flight; a finished one makes room.
        let mut failed = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut next = conns.iter();
        loop {
            while in_flight.len() < self.concurrency {
                let Some(conn) = next.next() else { break };
                in_flight.push(self.send_to(conn.clone(), frame));
            }
            match in_flight.next().await {
                Some((conn, Err(e))) => failed.push((conn, e)),
                Some((_, Ok(()))) => {}
                None => break,
            }
        }
        failed
    }

    async fn disconnect(&self, conn: &ConnectionId) -> Result<(), PushError> {
        self.client
            .delete_connection()
            .connection_id(conn.as_str())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| push_error("DeleteConnection", conn, e))
    }
}

/// Where an invocation came from: the API's domain name and stage, as its
/// event's `requestContext` says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Origin<'a> {
    pub domain_name: Option<&'a str>,
    pub stage: Option<&'a str>,
}

/// Makes the push port for an invocation. The AWS host's is
/// [`ManagementApi`]; tests pass a recording port through [`FixedPush`].
pub trait PushSource: Send + Sync + 'static {
    type Push: Push;
    fn push_for(&self, origin: Origin<'_>) -> Result<Self::Push, NoEndpoint>;
}

/// The event names no API to push through and no endpoint is configured.
#[derive(Debug, thiserror::Error)]
#[error("no Management API endpoint: the event has no {0} and TETHER_MANAGEMENT_ENDPOINT is unset")]
pub struct NoEndpoint(&'static str);

/// The Management API clients of a function: a fixed endpoint, or one
/// client per `https://{domainName}/{stage}` met (in practice one: a
/// function serves one API stage), each built once.
#[derive(Debug)]
pub struct ManagementApi {
    sdk: SdkConfig,
    concurrency: usize,
    fixed: Option<ApiGatewayPush>,
    by_origin: Mutex<HashMap<String, ApiGatewayPush>>,
}

impl ManagementApi {
    pub fn new(sdk: SdkConfig, fixed_endpoint: Option<&str>, concurrency: usize) -> Self {
        let fixed = fixed_endpoint
            .map(|endpoint| ApiGatewayPush::new(ApiGatewayPush::client(&sdk, endpoint), concurrency));
        Self {
            sdk,
            concurrency,
            fixed,
            by_origin: Mutex::default(),
        }
    }

    /// The endpoint of an origin: `https://{domainName}/{stage}`.
    pub fn endpoint_of(origin: Origin<'_>) -> Result<String, NoEndpoint> {
        let domain = origin
            .domain_name
            .filter(|d| !d.is_empty())
            .ok_or(NoEndpoint("requestContext.domainName"))?;
        let stage = origin
            .stage
            .filter(|s| !s.is_empty())
            .ok_or(NoEndpoint("requestContext.stage"))?;
        Ok(format!("https://{domain}/{stage}"))
    }
}

impl PushSource for ManagementApi {
    type Push = ApiGatewayPush;

    fn push_for(&self, origin: Origin<'_>) -> Result<ApiGatewayPush, NoEndpoint> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let endpoint = Self::endpoint_of(origin)?;
        // A poisoned map still holds good clients.
        let mut clients = self.by_origin.lock().unwrap_or_else(|p| p.into_inner());
        let push = clients.entry(endpoint).or_insert_with_key(|endpoint| {
            debug!(endpoint, "management API client");
            ApiGatewayPush::new(ApiGatewayPush::client(&self.sdk, endpoint), self.concurrency)
        });
        Ok(push.clone())
    }
}

/// One push port for every invocation (tests: a recording port).
#[derive(Clone, Debug, Default)]
pub struct FixedPush<P>(pub P);

impl<P: Push + Clone> PushSource for FixedPush<P> {
    type Push = P;

    fn push_for(&self, _origin: Origin<'_>) -> Result<P, NoEndpoint> {
        Ok(self.0.clone())
    }
}

/// The push port of a function that never pushes (the HTTP API's: tickets
/// and pairing reach no connection). A push through it fails, loudly.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPush;

impl Push for NoPush {
    async fn send(&self, conn: &ConnectionId, _frame: &str) -> Result<(), PushError> {
        warn!(connection_id = %conn.redacted(), "this function cannot push");
        Err(PushError::Other("this function has no push port".into()))
    }

    async fn disconnect(&self, conn: &ConnectionId) -> Result<(), PushError> {
        warn!(connection_id = %conn.redacted(), "this function cannot disconnect");
        Err(PushError::Other("this function has no push port".into()))
    }
}

impl PushSource for NoPush {
    type Push = NoPush;

    fn push_for(&self, _origin: Origin<'_>) -> Result<NoPush, NoEndpoint> {
        Ok(NoPush)
    }
}

/// Shares a source between owners (the AWS host builds one per process).
impl<T: PushSource> PushSource for Arc<T> {
    type Push = T::Push;

    fn push_for(&self, origin: Origin<'_>) -> Result<T::Push, NoEndpoint> {
        (**self).push_for(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_api_stage() {
        let origin = Origin {
            domain_name: Some("abc123.execute-api.eu-west-1.amazonaws.com"),
            stage: Some("ws"),
        };
        assert_eq!(
            ManagementApi::endpoint_of(origin).expect("endpoint"),
            "https://abc123.execute-api.eu-west-1.amazonaws.com/ws"
        );
        assert!(ManagementApi::endpoint_of(Origin {
            domain_name: None,
            stage: Some("ws")
        })
        .is_err());
        assert!(ManagementApi::endpoint_of(Origin {
            domain_name: Some("x"),
            stage: Some("")
        })
        .is_err());
    }
}
