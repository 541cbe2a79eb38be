//! The `data` of each action's reply: [`Reply`], one variant per action,
//! each a type of its own. The browser's map of them (`ReplyData`) is
//! generated from the same list, so a reply's shape is written once.

use serde::{Deserialize, Serialize};
use strum::VariantNames;

use super::{HistoryPage, MachineView, MessageView, Request, SessionView, WorkerView};
use crate::ids::{PromptId, UserId, WorkerId};
use crate::model::{Millis, WorkerStatus};

/// Declares [`Reply`] and, for the browser, `ReplyData`, from one list of
/// actions (named as their [`Request`] variants) and the types of their
/// replies: those either role may send, a user's, and a worker's.
macro_rules! replies {
    (
        either { $($either:ident => $either_data:ty,)* }
        users { $($user:ident => $user_data:ty,)* }
        workers { $($worker:ident => $worker_data:ty,)* }
    ) => {
        /// The `data` of a successful reply: the variant of the request's
        /// action, serialised as its data alone.
        #[derive(Clone, Debug, PartialEq, Serialize, VariantNames)]
        #[serde(untagged)]
        #[strum(serialize_all = "snake_case")]
        pub enum Reply {
            $($either($either_data),)*
            $($user($user_data),)*
            $($worker($worker_data),)*
        }

        /// What each action a browser may send gets back in its reply's
        /// `data`, by action.
        // Only its TypeScript declaration is used: the web UI's requests
        // are typed by it.
        #[cfg(feature = "ts")]
        #[derive(ts_rs::TS)]
        #[ts(rename_all = "snake_case")]
        #[allow(non_snake_case)]
        pub struct ReplyData {
            $(pub $either: $either_data,)*
            $(pub $user: $user_data,)*
        }
    };
}

replies! {
    either {
        Ping => PingData,
        Me => MeData,
    }
    users {
        MachineList => MachineListData,
        PairingList => PairingListData,
        PairingLookup => WorkerData,
        PairingApprove => WorkerData,
        PairingReject => WorkerData,
        PairingTokenCreate => PairingTokenData,
        WorkerRevoke => WorkerData,
        SessionStart => SessionData,
        SessionList => SessionListData,
        SessionWatch => HistoryPage,
        SessionUnwatch => Empty,
        SessionHistory => HistoryPage,
        SessionEnd => SessionData,
        MessageSend => MessageData,
        MessageAbort => MessageData,
        PromptReply => PromptReplyData,
    }
    workers {
        WorkerHello => HelloData,
        AgentState => WorkerData,
        SessionTitle => SessionData,
        SessionReady => SessionData,
        SessionFailed => SessionData,
        MessageStarted => MessageData,
        Chunks => ChunksAck,
        MessageComplete => MessageData,
        PromptDelivered => Empty,
    }
}

// Every action has a reply, declared in the order of the requests.
const _: () = assert!(
    same_names(Reply::VARIANTS, Request::VARIANTS),
    "Reply must have one variant per Request variant, in the same order"
);

const fn same_names(a: &[&str], b: &[&str]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        let (x, y) = (a[i].as_bytes(), b[i].as_bytes());
        if x.len() != y.len() {
            return false;
        }
        let mut j = 0;
        while j < x.len() {
            if x[j] != y[j] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

impl Reply {
    /// The reply's `data` as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("replies serialize")
    }
}

/// Data of a reply that carries nothing (`session_unwatch`,
/// `prompt_delivered`): `{}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Empty {}

/// Data of a `ping` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PingData {
    /// The host's clock.
    pub now: Millis,
    /// How often the client should ping.
    pub heartbeat_ms: i64,
}

/// Data of a `machine_list` reply: the caller's machines, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MachineListData {
    pub machines: Vec<MachineView>,
}

/// Data of a reply about one worker: `pairing_lookup`, `pairing_approve`,
/// `pairing_reject`, `worker_revoke` and `agent_state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct WorkerData {
    pub worker: WorkerView,
}

/// Data of a reply about one session: `session_start`, `session_end`, and
/// the worker's `session_ready`, `session_failed` and `session_title`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SessionData {
    pub session: SessionView,
}

/// Data of a `session_list` reply: the caller's sessions, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SessionListData {
    pub sessions: Vec<SessionView>,
}

/// Data of a reply about one message: `message_send`, `message_abort`,
/// and the worker's `message_started` and `message_complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MessageData {
    pub message: MessageView,
}

/// Data of a `prompt_reply` reply: the prompt answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PromptReplyData {
    pub prompt_id: PromptId,
}

/// Data of a `worker_hello` reply: the worker as its owner sees it, and
/// how often to ping; once it is approved, also who approved it and how
/// often to send a streaming answer's chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HelloData {
    pub worker: WorkerView,
    pub heartbeat_ms: i64,
    /// Absent while the worker waits for approval.
    #[serde(flatten)]
    pub approved: Option<HelloApproved>,
}

/// What a `worker_hello` reply adds once the worker is approved. Who
/// approved it is here as well as in `pairing_status`: a worker approved
/// while it was not connected never got that.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HelloApproved {
    /// The name of its owner (`null` if the owner is gone).
    pub approved_by: Option<String>,
    /// How often to send a streaming answer's chunk frames.
    pub frame_interval_ms: i64,
}

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::WorkerStatus;

    fn worker() -> WorkerView {
        WorkerView {
            worker_id: WorkerId::random(),
            machine: "m".into(),
            name: "w".into(),
            workdir: "/w".into(),
            status: WorkerStatus::Pending,
            online: true,
            last_seen: None,
            models: Vec::new(),
            default_model: None,
            agent: None,
            pairing_code: None,
            created_at: 0,
        }
    }

    #[test]
    fn a_hello_reply_names_who_approved_the_worker_only_once_it_is_approved() {
        let waiting = HelloData {
            worker: worker(),
            heartbeat_ms: 60_000,
            approved: None,
        };
        let keys = |r: &HelloData| {
            let value = Reply::WorkerHello(r.clone()).to_value();
            value
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
        };
        assert_eq!(
            keys(&waiting),
            Some(vec!["heartbeat_ms".into(), "worker".into()])
        );
        let approved = HelloData {
            approved: Some(HelloApproved {
                approved_by: None,
                frame_interval_ms: 25,
            }),
            ..waiting
        };
        let value = Reply::WorkerHello(approved.clone()).to_value();
        assert_eq!(
            (&value["approved_by"], &value["frame_interval_ms"]),
            (&json!(null), &json!(25))
        );
        let back: HelloData = serde_json::from_value(value).expect("a hello reply parses");
        assert_eq!(back, approved);
    }

    #[test]
    fn a_reply_is_its_data_alone() {
        assert_eq!(Reply::SessionUnwatch(Empty {}).to_value(), json!({}));
        let ping = PingData {
            now: 5,
            heartbeat_ms: 60_000,
        };
        assert_eq!(
            Reply::Ping(ping).to_value(),
            json!({ "now": 5, "heartbeat_ms": 60_000 })
        );
    }
}
