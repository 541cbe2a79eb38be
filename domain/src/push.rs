//! The push port: send a frame to a connection by id, or close it. The
//! local gateway's hub and API Gateway's Management API implement it.

use std::future::Future;

use crate::ids::ConnectionId;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The connection no longer exists (API Gateway's 410 Gone).
    #[error("connection gone")]
    Gone,
    #[error("push failed: {0}")]
    Other(String),
}

pub trait Push: Send + Sync + 'static {
    /// Sends one text frame to a connection.
    fn send(
        &self,
        conn: &ConnectionId,
        frame: &str,
    ) -> impl Future<Output = Result<(), PushError>> + Send;
    /// Sends one frame to many connections; returns the failures. Adapters
    /// that pay a round trip per send (API Gateway) override this to send
    /// concurrently.
    fn send_many(
        &self,
        conns: &[ConnectionId],
        frame: &str,
    ) -> impl Future<Output = Vec<(ConnectionId, PushError)>> + Send {
        async move {
            let mut failed = Vec::new();
            for conn in conns {
                if let Err(e) = self.send(conn, frame).await {
                    failed.push((conn.clone(), e));
                }
            }
            failed
        }
    }
    /// Closes a connection (its `$disconnect` follows).
    fn disconnect(&self, conn: &ConnectionId) -> impl Future<Output = Result<(), PushError>> + Send;
}
