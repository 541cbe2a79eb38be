//! The running host's control socket, and the push port the `tether user`
//! commands reach it through.
//!
//! `tether user reset` and `tether user remove` run in a process of their
//! own, on the same database as the running `tether serve` or `tether up`,
//! but the websockets they must close live in the host's [`Hub`]. So the
//! host listens on a Unix domain socket in its data directory,
//! [`CONTROL_FILE`], and the command's domain uses [`ControlPush`], whose
//! `disconnect` asks the host to close a connection. With no host running,
//! nothing is open, and `ControlPush` says so and closes nothing.
//!
//! **Trust boundary.** The socket is a file of mode 0600 inside the data
//! directory, which the host keeps at 0700: only the directory's owner
//! (and root) can connect, and the host also refuses a peer whose user id
//! is not the socket's owner. That owner can read and write the database
//! anyway, so the socket grants nothing new. Nothing on the network reaches
//! it: the HTTP listener serves no route to a connection (see `host`).
//!
//! **Protocol.** One request per line of JSON, one reply line each, on a
//! connection that may carry several in turn:
//!
//! ```text
//! → {"disconnect": ["L0SM9cOFvHcCIhw=", …]}
//! ← {"closed": 1, "gone": ["…"]}          (gone: not open in this host)
//! ← {"error": "…"}                          (a refused request)
//! ```
//!
//! Closing is all it does: no frame is pushed through it. **Bounds:** a
//! line is at most [`MAX_LINE`] bytes and names at most [`MAX_IDS`] ids;
//! at most [`MAX_CLIENTS`] clients at once; a client that sends no whole
//! line within [`IDLE`] is dropped.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tether_domain::ids::ConnectionId;
use tether_domain::push::{Push, PushError};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::gateway::{Hub, SERVER_CLOSE_CODE, SERVER_CLOSE_REASON};
use crate::sqlite::SqliteStore;

/// The control socket's file name inside the data directory.
pub const CONTROL_FILE: &str = "control.sock";
/// The longest request line accepted, newline included.
pub const MAX_LINE: usize = 32 * 1024;
/// The most connection ids one request may name.
pub const MAX_IDS: usize = 256;
/// The most clients served at once; more are turned away.
pub const MAX_CLIENTS: usize = 8;
/// How long a client may take to send a whole line.
pub const IDLE: Duration = Duration::from_secs(10);
/// How long a command waits for the host's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket of a data directory.
pub fn control_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTROL_FILE)
}

/// Where a host's store keeps its files: its data directory, where the
/// control socket goes. `None` for a store in memory (no socket then: no
/// other process can share its data).
pub trait DataDir {
    fn data_dir(&self) -> Option<&Path>;

    /// Forgets every connection record and every worker's presence. A host
    /// calls it once it holds the control socket: no other host serves the
    /// data then, so none of the recorded sockets is open, and the records
    /// of a previous process that was killed (its `$disconnect`s never ran)
    /// would otherwise count against the connection caps until they expire.
    fn forget_connections(
        &self,
    ) -> impl std::future::Future<Output = tether_domain::store::StoreResult<u64>> + Send;
}

impl DataDir for SqliteStore {
    fn data_dir(&self) -> Option<&Path> {
        // The parent of a bare file name is "": the current directory.
        let dir = self.path()?.parent()?;
        Some(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
    }

    fn forget_connections(
        &self,
    ) -> impl std::future::Future<Output = tether_domain::store::StoreResult<u64>> + Send {
        SqliteStore::forget_connections(self)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    disconnect: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default)]
    closed: usize,
    #[serde(default)]
    gone: Vec<String>,
}

// ---------------------------------------------------------------------------
// The host's side
// ---------------------------------------------------------------------------

/// The host's listener on [`CONTROL_FILE`]. Dropping it stops it and
/// removes the file.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlSocket {
    /// Listens on the control socket of `data_dir` (which the host made
    /// 0700), closing connections of `hub` on request. A socket file left
    /// by a host that died is replaced; one a live host answers on is not.
    pub async fn start(data_dir: &Path, hub: Hub) -> anyhow::Result<Self> {
        let path = control_path(data_dir);
        match UnixStream::connect(&path).await {
            Ok(_) => bail!(
                "another tether host is running on the data directory {} (its control socket \
                 {} answers); stop it first",
                data_dir.display(),
                path.display()
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(_) => std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))?,
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on the control socket {}", path.display()))?;
        let socket = Self {
            task: tokio::spawn(accept(listener, hub, owner_of(&path)?)),
            path,
        };
        // The directory is 0700 already; the file says so too.
        set_private(&socket.path)?;
        debug!(path = %socket.path.display(), "control socket listening");
        Ok(socket)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host's control socket beside its store, if the store lives in
    /// files.
    pub async fn start_for<S: DataDir>(store: &S, hub: Hub) -> anyhow::Result<Option<Self>> {
        match store.data_dir() {
            Some(dir) => Self::start(dir, hub).await.map(Some),
            None => Ok(None),
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                warn!(path = %self.path.display(), error = %e, "could not remove the control socket");
            }
        }
    }
}

fn set_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (mode 600)", path.display()))
}

/// The user id that owns the socket file: this process's.
fn owner_of(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .uid())
}

async fn accept(listener: UnixListener, hub: Hub, owner: u32) {
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                warn!(error = %e, "accepting on the control socket failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
            Ok(cred) => {
                warn!(uid = cred.uid(), "a control socket client of another user was refused");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "a control socket client without credentials was refused");
                continue;
            }
        }
        let Ok(permit) = Arc::clone(&clients).try_acquire_owned() else {
            warn!(max = MAX_CLIENTS, "too many control socket clients; one was turned away");
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            serve_client(stream, &hub).await;
            drop(permit);
        });
    }
}

/// Answers one client's requests, one line at a time, until it hangs up,
/// idles or oversteps a bound.
async fn serve_client(stream: UnixStream, hub: &Hub) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64);
        let read = tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut line)).await;
        let reply = match read {
            Err(_) => {
                debug!("control socket client idle; dropped");
                return;
            }
            Ok(Err(e)) => {
                debug!(error = %e, "control socket read failed");
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.last() != Some(&b'\n') => {
                // Cut at the bound (or at the end of input) without a newline.
                let reply = Reply {
                    error: Some(format!("a request is one line of at most {MAX_LINE} bytes")),
                    ..Reply::default()
                };
                let _ = write_reply(&mut write, &reply).await;
                return;
            }
            Ok(Ok(_)) => handle(&line, hub),
        };
        if write_reply(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

fn handle(line: &[u8], hub: &Hub) -> Reply {
    let request: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            return Reply {
                error: Some(format!("not a request: {e}")),
                ..Reply::default()
            }
        }
    };
    if request.disconnect.len() > MAX_IDS {
        return Reply {
            error: Some(format!("at most {MAX_IDS} connection ids per request")),
            ..Reply::default()
        };
    }
    let mut reply = Reply::default();
    for id in request.disconnect {
        if ConnectionId::parse(id.as_str()).is_err() {
            return Reply {
                error: Some("not a connection id".into()),
                ..Reply::default()
            };
        }
        match hub.close(&id, SERVER_CLOSE_CODE, SERVER_CLOSE_REASON) {
            Ok(()) => reply.closed += 1,
            Err(_) => reply.gone.push(id),
        }
    }
    info!(closed = reply.closed, gone = reply.gone.len(), "connections closed on request of the control socket");
    reply
}

async fn write_reply(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    text.push(b'\n');
    write.write_all(&text).await
}

// ---------------------------------------------------------------------------
// The command's side
// ---------------------------------------------------------------------------

/// The push port of a `tether user` command: closes connections through
/// the running host's control socket, and is a no-op when no host runs
/// (then no connection is open). Clones share one connection to the host.
///
/// It pushes no frames: the command's domain pushes only notices to
/// connections it is about to close (a revoked worker's `pairing_status`,
/// a removed user's `worker_updated`), so `send` drops them and says `Ok`.
/// (`Gone` would make the domain delete those connections' records before
/// it closes them, and then it could not find them to close.)
///
/// Each request opens a connection of its own (a local socket costs next
/// to nothing), so a command that pauses between two never finds its
/// connection dropped for idling.
#[derive(Clone, Debug)]
pub struct ControlPush {
    path: Arc<Path>,
    /// Set once no host was found: nothing is open, and it was said once.
    no_host: Arc<AtomicBool>,
}

impl ControlPush {
    /// The port for the host of `data_dir`. Nothing is opened until a
    /// connection is to be closed.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: control_path(data_dir).into(),
            no_host: Arc::default(),
        }
    }

    async fn request(&self, ids: &[ConnectionId]) -> Result<Reply, PushError> {
        let all_gone = || Reply {
            gone: ids.iter().map(|id| id.as_str().to_owned()).collect(),
            ..Reply::default()
        };
        if self.no_host.load(Ordering::Relaxed) {
            return Ok(all_gone());
        }
        let stream = match UnixStream::connect(&self.path).await {
            Ok(stream) => stream,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                if !self.no_host.swap(true, Ordering::Relaxed) {
                    info!(
                        "no tether host is running on this data directory, so no connection \
                         is open: there is nothing to close"
                    );
                }
                return Ok(all_gone());
            }
            Err(e) => {
                return Err(PushError::Other(format!(
                    "cannot reach the host's control socket {}: {e}",
                    self.path.display()
                )))
            }
        };
        let request = Request {
            disconnect: ids.iter().map(|id| id.as_str().to_owned()).collect(),
        };
        let exchange = async {
            let mut stream = BufReader::new(stream);
            let mut line = serde_json::to_vec(&request).map_err(std::io::Error::other)?;
            line.push(b'\n');
            stream.get_mut().write_all(&line).await?;
            let mut answer = String::new();
            stream.read_line(&mut answer).await?;
            serde_json::from_str::<Reply>(&answer).map_err(std::io::Error::other)
        };
        let reply = match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(PushError::Other(format!("the host's control socket: {e}"))),
            Err(_) => {
                return Err(PushError::Other(format!(
                    "the host did not answer on its control socket within {CLIENT_TIMEOUT:?}"
                )))
            }
        };
        match reply.error {
            Some(e) => Err(PushError::Other(format!("the host refused: {e}"))),
            None => Ok(reply),
        }
    }
}

impl Push for ControlPush {
    async fn send(&self, conn: &ConnectionId, _frame: &str) -> Result<(), PushError> {
        debug!(connection_id = %conn.redacted(), "a notice to a connection about to close is dropped");
        Ok(())
    }

    async fn disconnect(&self, conn: &ConnectionId) -> Result<(), PushError> {
        let reply = self.request(std::slice::from_ref(conn)).await?;
        if reply.closed == 1 {
            Ok(())
        } else {
            Err(PushError::Gone)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ConnectionId {
        ConnectionId::parse(s).expect("id")
    }

    async fn raw(path: &Path, text: &[u8]) -> String {
        let mut stream = UnixStream::connect(path).await.expect("connect");
        stream.write_all(text).await.expect("write");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("read");
        line
    }

    #[tokio::test]
    async fn without_a_host_nothing_is_open() {
        let dir = tempfile::tempdir().expect("dir");
        let push = ControlPush::new(dir.path());
        assert!(matches!(push.disconnect(&id("abc=")).await, Err(PushError::Gone)));
        assert!(push.send(&id("abc="), "{}").await.is_ok());
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().expect("dir");
        // A socket file nobody listens on, as a killed host leaves it.
        drop(std::os::unix::net::UnixListener::bind(control_path(dir.path())).expect("bind"));
        let socket = ControlSocket::start(dir.path(), Hub::new()).await.expect("start");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(socket.path()).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = ControlSocket::start(dir.path(), Hub::new()).await;
        assert!(second.is_err(), "a second host on one data directory is refused");
        let path = socket.path().to_owned();
        drop(socket);
        assert!(!path.exists(), "stopping removes the socket");
    }

    #[tokio::test]
    async fn unknown_ids_are_gone_and_bounds_hold() {
        let dir = tempfile::tempdir().expect("dir");
        let socket = ControlSocket::start(dir.path(), Hub::new()).await.expect("start");
        let push = ControlPush::new(dir.path());
        // Twice over one connection.
        for _ in 0..2 {
            assert!(matches!(push.disconnect(&id("L0SM9cOFvHcCIhw=")).await, Err(PushError::Gone)));
        }
        let reply = raw(socket.path(), b"{\"disconnect\": [\"a=\", \"b=\"]}\n").await;
        assert_eq!(reply.trim(), r#"{"closed":0,"gone":["a=","b="]}"#);
        let many: Vec<String> = (0..=MAX_IDS).map(|i| format!("c{i}=")).collect();
        let line = format!("{}\n", serde_json::json!({ "disconnect": many }));
        assert!(raw(socket.path(), line.as_bytes()).await.contains("at most"));
        let long = vec![b' '; MAX_LINE + 10];
        assert!(raw(socket.path(), &long).await.contains("one line"));
        assert!(raw(socket.path(), b"{\"send\": 1}\n").await.contains("not a request"));
        assert!(raw(socket.path(), b"{\"disconnect\": [\"no spaces\"]}\n")
            .await
            .contains("not a connection id"));
    }
}
