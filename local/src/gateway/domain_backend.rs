//! The in-process backend: the gateway's three route kinds call the domain
//! directly, the way the AWS host's Lambda functions call it per invocation.

use std::sync::Arc;

use tether_domain::ids::ConnectionId;
use tether_domain::protocol::{ErrorBody, ServerFrame};
use tether_domain::store::Store;
use tether_domain::{handlers::ConnectRequest, ApiError, Domain, ErrorCode};
use tracing::warn;

use super::{Accept, Backend, ConnId, ConnectInfo, Hub, Millis, Refusal};

/// Runs the domain behind the gateway. Every route goes to
/// [`Domain::handle_frame`], which answers bad JSON and unknown actions
/// itself, so `$default` needs no special case here.
pub struct DomainBackend<S> {
    domain: Arc<Domain<S, Hub>>,
}

impl<S> Clone for DomainBackend<S> {
    fn clone(&self) -> Self {
        Self {
            domain: self.domain.clone(),
        }
    }
}

impl<S: Store> DomainBackend<S> {
    pub fn new(domain: Arc<Domain<S, Hub>>) -> Self {
        Self { domain }
    }

    pub fn domain(&self) -> &Arc<Domain<S, Hub>> {
        &self.domain
    }
}

/// The domain's name for a gateway connection id.
fn domain_id(conn: &ConnId) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(conn.as_str()).map_err(|e| {
        // Only a mismatch between the id format the gateway mints and the
        // one the domain accepts gets here: a bug, not a client error.
        warn!(conn = %conn.redacted(), error = %e, "the domain refuses this connection id");
        ApiError::new(ErrorCode::Internal, "connection id not accepted")
    })
}

/// The JSON body of an HTTP error answer: `{"code","message"}`.
pub(crate) fn error_body(error: ApiError) -> String {
    let body = ErrorBody {
        code: error.code,
        message: error.message,
    };
    serde_json::to_string(&body).unwrap_or_else(|_| r#"{"code":"internal","message":""}"#.into())
}

impl<S: Store> Backend for DomainBackend<S> {
    async fn connect(&self, info: ConnectInfo) -> Result<Accept, Refusal> {
        let refuse = |error: ApiError| Refusal {
            status: error.code.http_status(),
            body: error_body(error),
        };
        let connection_id = domain_id(&info.connection_id).map_err(refuse)?;
        let request = ConnectRequest {
            connection_id,
            ticket: info.query_param("ticket").map(str::to_owned),
            bearer: info.bearer().map(str::to_owned),
            version: info.query_param("v").map(str::to_owned),
            now: info.now,
        };
        self.domain
            .connect(request)
            .await
            .map(|_| Accept::default())
            .map_err(refuse)
    }

    async fn message(
        &self,
        conn: &ConnId,
        _route: &str,
        body: String,
        now: Millis,
    ) -> Option<String> {
        let reply = match domain_id(conn) {
            Ok(id) => self.domain.handle_frame(&id, &body, now).await,
            Err(error) => ServerFrame::err(tether_domain::protocol::peek_request_id(&body), error),
        };
        Some(reply.to_json())
    }

    async fn disconnect(&self, conn: &ConnId, _status: u16, _reason: String, now: Millis) {
        if let Ok(id) = domain_id(conn) {
            self.domain.disconnect(&id, now).await;
        }
    }
}
