//! The two HTTP endpoints' bodies: `POST /api/ticket` and `POST /api/pair`.

use serde::{Deserialize, Serialize};

use crate::ids::WorkerId;
use crate::model::{Millis, WorkerStatus};

/// `POST /api/ticket` reply: a one-use ticket for `?ticket=` on connect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct TicketData {
    pub ticket: String,
    pub expires_at: Millis,
}

/// `POST /api/pair` body: a new worker asks to be paired. Its credential goes
/// in the `Authorization: Bearer` header, never in the body or URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    pub machine: String,
    #[serde(default)]
    pub name: Option<String>,
    pub workdir: String,
    /// A pairing token its owner minted (`pairing_token_create`): the
    /// worker is approved for that owner at once, no code to type. In the
    /// body, never in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The token is a secret: it never shows in a log line.
impl std::fmt::Debug for PairRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairRequest")
            .field("machine", &self.machine)
            .field("name", &self.name)
            .field("workdir", &self.workdir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `POST /api/pair` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairData {
    pub worker_id: WorkerId,
    pub status: WorkerStatus,
    /// Set while pending: the code the owner approves.
    pub code: Option<String>,
    pub expires_at: Option<Millis>,
    /// Set once approved: the name of the user who approved the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}
