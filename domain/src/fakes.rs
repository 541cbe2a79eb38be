//! A push port that records what it sends, for handler tests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::ids::ConnectionId;
use crate::protocol::ServerFrame;
use crate::push::{Push, PushError};

/// Records every frame pushed, per connection. Connections marked gone
/// (or closed) answer `Gone`, like API Gateway's 410.
#[derive(Clone, Default)]
pub struct RecordingPush {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    sent: Vec<(ConnectionId, ServerFrame)>,
    gone: HashSet<ConnectionId>,
    closed: Vec<ConnectionId>,
}

impl RecordingPush {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test poisons the lock; the data is still what it was.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frames sent to one connection so far, oldest first.
    pub fn sent_to(&self, conn: &ConnectionId) -> Vec<ServerFrame> {
        self.lock()
            .sent
            .iter()
            .filter(|(c, _)| c == conn)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Takes (and forgets) the frames sent to one connection.
    pub fn take(&self, conn: &ConnectionId) -> Vec<ServerFrame> {
        let mut inner = self.lock();
        let (mine, rest): (Vec<_>, Vec<_>) = inner.sent.drain(..).partition(|(c, _)| c == conn);
        inner.sent = rest;
        mine.into_iter().map(|(_, f)| f).collect()
    }

    /// From now on, pushes to `conn` fail with `Gone`.
    pub fn set_gone(&self, conn: &ConnectionId) {
        self.lock().gone.insert(conn.clone());
    }

    /// Connections closed through the port.
    pub fn closed(&self) -> Vec<ConnectionId> {
        self.lock().closed.clone()
    }
}

impl Push for RecordingPush {
    async fn send(&self, conn: &ConnectionId, frame: &str) -> Result<(), PushError> {
        let parsed: ServerFrame = serde_json::from_str(frame)
            .map_err(|e| PushError::Other(format!("pushed frame does not parse: {e}")))?;
        let mut inner = self.lock();
        if inner.gone.contains(conn) {
            return Err(PushError::Gone);
        }
        inner.sent.push((conn.clone(), parsed));
        Ok(())
    }

    async fn disconnect(&self, conn: &ConnectionId) -> Result<(), PushError> {
        let mut inner = self.lock();
        // As API Gateway's `DeleteConnection`: 410 for one already gone.
        if inner.gone.contains(conn) {
            return Err(PushError::Gone);
        }
        inner.closed.push(conn.clone());
        inner.gone.insert(conn.clone());
        Ok(())
    }
}
