//! The hub: every live connection by id, with the channel to its socket.
//!
//! A connection enters the hub when its `$connect` starts (so ids stay
//! unique) but accepts pushes only once `$connect` has accepted it, as on
//! AWS, where posting to a connection during its `$connect` gives 410. It
//! leaves the hub before its `$disconnect` runs, so from then on pushes to it
//! are [`Gone`].

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tether_domain::ids::ConnectionId;
use tether_domain::push::{Push, PushError};
use tokio::sync::mpsc;

use super::{ConnId, Millis};

/// The connection does not exist, is closed, or is still in `$connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection gone")]
pub struct Gone;

/// What the Management API's `GET @connections/{id}` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub connected_at: Millis,
    /// When the client last sent a data message (control frames do not count).
    pub last_active_at: Millis,
    pub source_ip: IpAddr,
    pub user_agent: Option<String>,
}

/// What a connection's task writes to its socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(String),
    Close { code: u16, reason: String },
}

/// Facts about a connection shared between the hub and its task.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) connected_at: Millis,
    pub(crate) last_active: AtomicI64,
    pub(crate) source_ip: IpAddr,
    pub(crate) user_agent: Option<String>,
}

impl Meta {
    pub(crate) fn new(now: Millis, source_ip: IpAddr, user_agent: Option<String>) -> Self {
        Self {
            connected_at: now,
            last_active: AtomicI64::new(now),
            source_ip,
            user_agent,
        }
    }

    pub(crate) fn touch(&self, now: Millis) {
        self.last_active.fetch_max(now, Ordering::Relaxed);
    }
}

struct Slot {
    meta: Arc<Meta>,
    /// `None` while `$connect` runs.
    tx: Option<mpsc::UnboundedSender<Outbound>>,
}

#[derive(Default)]
struct Inner {
    slots: Mutex<HashMap<ConnId, Slot>>,
}

/// The connections of one gateway. Cheap to clone; clones share the map.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.len())
            .finish()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<ConnId, Slot>> {
        // A panic while holding this lock leaves the map consistent (every
        // critical section is a single map operation), so poisoning is ignored.
        self.inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mints an id no live or connecting connection has, and holds it for a
    /// connection whose `$connect` is about to run.
    pub(crate) fn reserve(&self, meta: Arc<Meta>) -> ConnId {
        let mut slots = self.slots();
        loop {
            let id = ConnId::random();
            if !slots.contains_key(&id) {
                slots.insert(id.clone(), Slot { meta, tx: None });
                return id;
            }
        }
    }

    /// `$connect` accepted: pushes to `id` now reach its socket.
    pub(crate) fn open(&self, id: &ConnId, tx: mpsc::UnboundedSender<Outbound>) {
        if let Some(slot) = self.slots().get_mut(id) {
            slot.tx = Some(tx);
        }
    }

    /// Removes a connection; true if it was there.
    pub(crate) fn remove(&self, id: &ConnId) -> bool {
        self.slots().remove(id).is_some()
    }

    fn with_sender<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mpsc::UnboundedSender<Outbound>) -> T,
    ) -> Result<T, Gone> {
        let slots = self.slots();
        let tx = slots
            .get(id)
            .and_then(|slot| slot.tx.as_ref())
            .ok_or(Gone)?;
        Ok(f(tx))
    }

    /// Queues one text frame for a connection. `Ok` means accepted for
    /// delivery, as API Gateway's 200 does, not that the client has read it.
    pub fn send(&self, id: &str, text: String) -> Result<(), Gone> {
        self.with_sender(id, |tx| tx.send(Outbound::Text(text)).map_err(|_| Gone))?
    }

    /// Closes a connection with a close code; its `$disconnect` follows.
    pub fn close(&self, id: &str, code: u16, reason: &str) -> Result<(), Gone> {
        self.with_sender(id, |tx| {
            tx.send(Outbound::Close {
                code,
                reason: reason.to_owned(),
            })
            .map_err(|_| Gone)
        })?
    }

    /// A connection's status, if it is open.
    pub fn status(&self, id: &str) -> Option<ConnectionStatus> {
        let slots = self.slots();
        let slot = slots.get(id)?;
        slot.tx.as_ref()?;
        Some(ConnectionStatus {
            connected_at: slot.meta.connected_at,
            last_active_at: slot.meta.last_active.load(Ordering::Relaxed),
            source_ip: slot.meta.source_ip,
            user_agent: slot.meta.user_agent.clone(),
        })
    }

    /// Whether `id` is open (accepted and not yet closed).
    pub fn is_open(&self, id: &str) -> bool {
        self.with_sender(id, |_| ()).is_ok()
    }

    /// Connections in the hub, including those still in `$connect`.
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every open connection to close (on shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for slot in self.slots().values() {
            if let Some(tx) = &slot.tx {
                let _ = tx.send(Outbound::Close {
                    code,
                    reason: reason.to_owned(),
                });
            }
        }
    }
}

/// The close code of a disconnect the server asks for (the domain's
/// `Push::disconnect` and `DELETE @connections`): the same on both paths,
/// since the AWS host disconnects through `DELETE @connections`.
pub const SERVER_CLOSE_CODE: u16 = 1000;
/// Its close reason.
pub const SERVER_CLOSE_REASON: &str = "disconnected by the server";

impl Push for Hub {
    fn send(
        &self,
        conn: &ConnectionId,
        frame: &str,
    ) -> impl Future<Output = Result<(), PushError>> + Send {
        let result =
            Hub::send(self, conn.as_str(), frame.to_owned()).map_err(|Gone| PushError::Gone);
        std::future::ready(result)
    }

    fn disconnect(
        &self,
        conn: &ConnectionId,
    ) -> impl Future<Output = Result<(), PushError>> + Send {
        let result = self
            .close(conn.as_str(), SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
            .map_err(|Gone| PushError::Gone);
        std::future::ready(result)
    }
}
