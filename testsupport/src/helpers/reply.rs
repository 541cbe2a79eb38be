//! Replies: each matched to its request by id, as the reader of a socket
//! routes them; what is not a reply goes to the socket's queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tether_domain::ids::RequestId;
use tether_domain::protocol::ServerFrame;
use tether_domain::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::upgrade::Ws;
use super::WAIT;

/// The one reply to a request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The action the request named (for messages).
    pub action: String,
    pub id: Option<String>,
    pub ok: bool,
    pub data: Value,
    /// `(code, message)` of an error reply.
    pub error: Option<(String, String)>,
    pub raw: String,
}

impl Reply {
    pub(super) fn from_value(raw: &str, v: &Value) -> Self {
        Self {
            action: String::new(),
            id: v.get("id").and_then(Value::as_str).map(str::to_owned),
            ok: v.get("ok").and_then(Value::as_bool).unwrap_or(false),
            data: v.get("data").cloned().unwrap_or(Value::Null),
            error: v.get("error").map(|e| {
                (
                    e.get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                )
            }),
            raw: raw.to_owned(),
        }
    }

    /// The data of a successful reply; panics with the error otherwise.
    pub fn ok(&self) -> &Value {
        assert!(
            self.ok && self.error.is_none(),
            "`{}` was refused: {}",
            self.action,
            self.raw
        );
        &self.data
    }

    /// The whole data, typed.
    pub fn data_as<T: DeserializeOwned>(&self) -> T {
        let data = self.ok().clone();
        serde_json::from_value(data).unwrap_or_else(|e| {
            panic!(
                "`{}` reply data has an unexpected shape ({e}): {}",
                self.action, self.raw
            )
        })
    }

    /// One field of the data, typed.
    pub fn field<T: DeserializeOwned>(&self, key: &str) -> T {
        let value = self
            .ok()
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("`{}` reply has no `{key}`: {}", self.action, self.raw));
        serde_json::from_value(value).unwrap_or_else(|e| {
            panic!(
                "`{}` reply `{key}` has an unexpected shape ({e}): {}",
                self.action, self.raw
            )
        })
    }

    /// Asserts an error reply with this stable code.
    pub fn expect_err(&self, code: ErrorCode) -> &Self {
        match &self.error {
            Some((got, _)) if !self.ok && got == code.as_str() => self,
            _ => panic!(
                "`{}`: expected an error reply with code `{}`, got: {}",
                self.action,
                code.as_str(),
                self.raw
            ),
        }
    }
}

/// Why and how a socket ended.
#[derive(Clone, Debug)]
pub struct Closed {
    /// The close code the server sent, if it sent a close frame.
    pub code: Option<u16>,
    pub reason: String,
    /// A transport error that ended the socket instead.
    pub error: Option<String>,
}

pub(super) enum Incoming {
    Event(ServerFrame),
    /// A reply whose id was unreadable (or matched no request).
    Orphan(Reply),
    /// A frame that does not parse as a server frame.
    Unparsed(String),
    Closed(Closed),
}

pub(super) type PendingMap = Arc<Mutex<HashMap<String, (String, oneshot::Sender<Reply>)>>>;

/// A reply on its way.
pub struct PendingReply {
    pub(super) label: String,
    pub(super) action: String,
    pub(super) id: String,
    pub(super) rx: oneshot::Receiver<Reply>,
}

impl PendingReply {
    pub async fn get(self) -> Reply {
        match tokio::time::timeout(WAIT, self.rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => panic!(
                "{}: the connection ended before the reply to `{}` ({})",
                self.label, self.action, self.id
            ),
            Err(_) => panic!(
                "{}: no reply to `{}` ({}) within {WAIT:?}",
                self.label, self.action, self.id
            ),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh request id, unique within the test process.
pub fn request_id() -> RequestId {
    RequestId::parse(format!("req_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)))
        .expect("a request id")
}

pub(super) async fn read_loop(
    mut stream: SplitStream<Ws>,
    pending: PendingMap,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let mut closed = Closed {
        code: None,
        reason: String::new(),
        error: None,
    };
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                let text = text.as_str();
                let value: Value = match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(_) => {
                        let _ = tx.send(Incoming::Unparsed(text.to_owned()));
                        continue;
                    }
                };
                if value.get("type").and_then(Value::as_str) == Some("reply") {
                    let mut reply = Reply::from_value(text, &value);
                    let waiter = reply
                        .id
                        .as_ref()
                        .and_then(|id| pending.lock().expect("pending map").remove(id));
                    match waiter {
                        Some((action, waiter)) => {
                            reply.action = action;
                            let _ = waiter.send(reply);
                        }
                        None => {
                            let _ = tx.send(Incoming::Orphan(reply));
                        }
                    }
                    continue;
                }
                match serde_json::from_value::<ServerFrame>(value) {
                    Ok(frame) => {
                        let _ = tx.send(Incoming::Event(frame));
                    }
                    Err(e) => {
                        let _ = tx.send(Incoming::Unparsed(format!("{text} ({e})")));
                    }
                }
            }
            Ok(Message::Binary(b)) => {
                let _ = tx.send(Incoming::Unparsed(format!(
                    "a binary frame of {} bytes",
                    b.len()
                )));
            }
            Ok(Message::Close(frame)) => {
                if let Some(f) = frame {
                    closed.code = Some(u16::from(f.code));
                    closed.reason = f.reason.to_string();
                }
            }
            Ok(_) => {}
            Err(e) => {
                closed.error = Some(e.to_string());
                break;
            }
        }
    }
    pending.lock().expect("pending map").clear();
    let _ = tx.send(Incoming::Closed(closed));
}
