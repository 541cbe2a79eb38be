//! The in-process backend: the gateway's three route kinds call the domain
//! directly, the way the AWS host's Lambda functions call it per invocation.

use std::sync::Arc;

use tether_domain::edge::ConnectParts;
use tether_domain::store::Store;
use tether_domain::Domain;

use super::{Accept, Backend, ConnId, ConnectInfo, Hub, Millis, Refusal};

/// Runs the domain behind the gateway. Every message goes to
/// [`Domain::handle_frame`] (through `frame_edge`), which parses it, reads
/// its `action` and answers bad JSON and unknown actions itself: the
/// gateway needs no route for it, and a frame is parsed once.
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

impl<S: Store> Backend for DomainBackend<S> {
    const ROUTES_BY_ACTION: bool = false;

    async fn connect(&self, info: ConnectInfo) -> Result<Accept, Refusal> {
        let parts = ConnectParts {
            connection_id: info.connection_id.as_str(),
            ticket: info.query_param("ticket"),
            version: info.query_param("v"),
            authorization: info.authorization(),
            now: info.now,
        };
        self.domain
            .connect_edge(parts)
            .await
            .map(|()| Accept::default())
            .map_err(|refused| Refusal {
                status: refused.status,
                body: refused.body,
            })
    }

    async fn message(
        &self,
        conn: &ConnId,
        _route: &str,
        body: String,
        now: Millis,
    ) -> Option<String> {
        // The gateway answers binary frames itself.
        Some(
            self.domain
                .frame_edge(conn.as_str(), &body, false, now)
                .await,
        )
    }

    async fn disconnect(&self, conn: &ConnId, _status: u16, _reason: String, now: Millis) {
        self.domain.disconnect_edge(conn.as_str(), now).await;
    }
}
