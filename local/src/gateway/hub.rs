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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tether_domain::ids::ConnectionId;
use tether_domain::push::{Push, PushError};
use tokio::sync::{mpsc, Notify};

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
    /// Bytes of text frames queued for the socket and not yet written.
    pub(crate) queued_bytes: AtomicUsize,
    /// The most [`Self::queued_bytes`] may reach; a push past it ends the
    /// connection (see [`Hub::send`]).
    pub(crate) max_queued_bytes: usize,
    /// Set (and notified) when a push found the queue full.
    pub(crate) overflowed: AtomicBool,
    pub(crate) overflow: Notify,
}

impl Meta {
    pub(crate) fn new(
        now: Millis,
        source_ip: IpAddr,
        user_agent: Option<String>,
        max_queued_bytes: usize,
    ) -> Self {
        Self {
            connected_at: now,
            last_active: AtomicI64::new(now),
            source_ip,
            user_agent,
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
        }
    }

    /// Counts `len` bytes in, unless that passes the cap: then the
    /// connection is marked overflowed and its task told.
    fn admit(&self, len: usize) -> bool {
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) <= self.max_queued_bytes {
            return true;
        }
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.overflowed.store(true, Ordering::Release);
        self.overflow.notify_one();
        false
    }

    /// `len` bytes left the queue (written, or dropped with the socket).
    pub(crate) fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    pub(crate) fn touch(&self, now: Millis) {
        self.last_active.fetch_max(now, Ordering::Relaxed);
    }
}

/// The sending end of a connection's queue. Every text frame (pushes and
/// replies alike) is counted against the connection's byte cap here, and
/// counted out by the socket task when written.
#[derive(Clone, Debug)]
pub(crate) struct Outlet {
    tx: mpsc::UnboundedSender<Outbound>,
    meta: Arc<Meta>,
}

impl Outlet {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Outbound>, meta: Arc<Meta>) -> Self {
        Self { tx, meta }
    }

    /// Queues a text frame, unless the queue is full (see [`Hub::send`]).
    pub(crate) fn text(&self, text: String) -> Result<(), Gone> {
        if self.meta.overflowed.load(Ordering::Acquire) || !self.meta.admit(text.len()) {
            return Err(Gone);
        }
        let len = text.len();
        self.tx.send(Outbound::Text(text)).map_err(|_| {
            self.meta.written(len);
            Gone
        })
    }

    /// Queues a close.
    pub(crate) fn close(&self, code: u16, reason: &str) -> Result<(), Gone> {
        self.tx
            .send(Outbound::Close {
                code,
                reason: reason.to_owned(),
            })
            .map_err(|_| Gone)
    }
}

struct Slot {
    meta: Arc<Meta>,
    /// `None` while `$connect` runs.
    tx: Option<Outlet>,
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
    pub(crate) fn open(&self, id: &ConnId, tx: Outlet) {
        if let Some(slot) = self.slots().get_mut(id) {
            slot.tx = Some(tx);
        }
    }

    /// Removes a connection; true if it was there.
    pub(crate) fn remove(&self, id: &ConnId) -> bool {
        self.slots().remove(id).is_some()
    }

    fn with_sender<T>(&self, id: &str, f: impl FnOnce(&Outlet) -> T) -> Result<T, Gone> {
        let slots = self.slots();
        let tx = slots
            .get(id)
            .and_then(|slot| slot.tx.as_ref())
            .ok_or(Gone)?;
        Ok(f(tx))
    }

    /// Queues one text frame for a connection. `Ok` means accepted for
    /// delivery, as API Gateway's 200 does, not that the client has read it.
    ///
    /// A client that stops reading must not make the host hold everything
    /// sent to it: when the frames queued for a connection would pass its
    /// byte cap, this push is dropped, the connection is closed (4008, "too
    /// slow") and this and later pushes get `Gone`. The client catches up
    /// from its cursor when it reconnects.
    pub fn send(&self, id: &str, text: String) -> Result<(), Gone> {
        self.with_sender(id, |outlet| outlet.text(text))?
    }

    /// Closes a connection with a close code; its `$disconnect` follows.
    pub fn close(&self, id: &str, code: u16, reason: &str) -> Result<(), Gone> {
        self.with_sender(id, |outlet| outlet.close(code, reason))?
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
            if let Some(outlet) = &slot.tx {
                let _ = outlet.close(code, reason);
            }
        }
    }
}

/// The close code of a connection that read too slowly: its queue passed
/// its byte cap (`GatewayConfig::max_queued_bytes`) or a write stalled past
/// `GatewayConfig::write_timeout`. Clients reconnect and catch up.
pub const TOO_SLOW_CLOSE_CODE: u16 = 4008;
/// Its close reason.
pub const TOO_SLOW_CLOSE_REASON: &str = "too slow: reconnect and catch up";

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
