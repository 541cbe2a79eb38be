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
    /// Closes a connection (its `$disconnect` follows).
    fn disconnect(&self, conn: &ConnectionId) -> impl Future<Output = Result<(), PushError>> + Send;
}
