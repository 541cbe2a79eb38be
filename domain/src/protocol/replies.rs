//! The `data` of each action's reply.

use serde::{Deserialize, Serialize};

use super::WorkerView;
use crate::ids::{UserId, WorkerId};
use crate::model::{Millis, WorkerStatus};

/// Data of a `me` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MeData {
    pub protocol: u32,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_status: Option<WorkerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    /// How often the client should ping.
    pub heartbeat_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Worker,
}

/// Data of the reply to `chunks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChunksAck {
    /// Seqs stored by this frame.
    pub stored: Vec<u32>,
    /// Seqs that were already stored (a retry): acknowledged again, stored once.
    pub duplicate: Vec<u32>,
}

/// Where a page of `pairing_list` starts: after this pending worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PendingCursor {
    pub created_at: Millis,
    pub worker_id: WorkerId,
}

/// Data of a `pairing_list` reply: a page of pending workers, oldest
/// first, and where the next page starts (`None` at the end). A page stays
/// well under API Gateway's 128 KB message limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairingListData {
    pub workers: Vec<WorkerView>,
    pub next: Option<PendingCursor>,
}

/// Data of a `pairing_token_create` reply: the token, shown once (the
/// server keeps only its hash), and when it stops working.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairingTokenData {
    pub token: String,
    pub expires_at: Millis,
}

impl std::fmt::Debug for PairingTokenData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingTokenData")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
