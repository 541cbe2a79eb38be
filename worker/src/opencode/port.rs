//! What the agent loop asks of opencode, as a trait: [`super::OpencodeClient`]
//! is the real one (HTTP to `opencode serve`); the agent's tests replay
//! recorded event streams through a fake. opencode's events do not come
//! through here: the supervisor (`crate::run`) pumps them into the loop.

use std::future::Future;

use serde_json::Value;
use tether_domain::protocol::{ModelRef, PermissionReply};

/// One opencode, shared by the tasks the agent loop spawns (hence cheap to
/// clone and `Send`). Errors are for logs and, through
/// [`super::explain`], for people.
pub trait Opencode: Clone + Send + Sync + 'static {
    /// Creates a session; returns its id.
    fn create_session(&self, title: &str) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// Whether a session exists (it survives opencode restarts on disk).
    fn session_exists(&self, id: &str) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Sends a prompt; the answer arrives on the event stream.
    fn prompt(&self, session: &str, model: &ModelRef, text: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Stops a session's running answer.
    fn abort(&self, session: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn reply_permission(&self, id: &str, reply: PermissionReply) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn reply_question(&self, id: &str, answers: &[Vec<String>]) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn reject_question(&self, id: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A session's messages with their parts.
    fn messages(&self, session: &str) -> impl Future<Output = anyhow::Result<Vec<Value>>> + Send;

    /// A session's child sessions (its subagents').
    fn children(&self, session: &str) -> impl Future<Output = anyhow::Result<Vec<Value>>> + Send;

    /// Pending permission requests of every session.
    fn permissions(&self) -> impl Future<Output = anyhow::Result<Vec<Value>>> + Send;

    /// Pending questions of every session.
    fn questions(&self) -> impl Future<Output = anyhow::Result<Vec<Value>>> + Send;

    /// Busy sessions (idle ones are left out).
    fn busy_sessions(&self) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;
}
