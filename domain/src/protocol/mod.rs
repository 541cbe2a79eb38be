//! The wire protocol, version [`PROTOCOL_VERSION`]: every JSON frame that
//! crosses the websocket, in one module. `docs/PROTOCOL.md` documents it with
//! an example of each frame, and `tests/protocol_doc.rs` checks that each
//! one parses.
//!
//! A client frame is a JSON object with `action` (the API Gateway route key),
//! `id` (the client's request id) and the action's fields. It gets exactly one
//! [`ServerFrame::Reply`] with the same `id`. Everything else the server sends
//! is an event, tagged by `type`.
//!
//! - `requests.rs`: what a client sends ([`Request`], one variant per action)
//!   and how a frame is parsed.
//! - `replies.rs`: the `data` of each action's reply.
//! - `events.rs`: what the server sends ([`ServerFrame`]): replies and events.
//! - `views.rs`: workers, sessions, messages and chunks as clients see them.
//! - `chunks.rs`: the pieces of an answer, and answers to prompts.
//! - `http.rs`: the bodies of `POST /api/ticket` and `POST /api/pair`.

/// The protocol version a client names with `?v=` when it connects.
pub const PROTOCOL_VERSION: u32 = 1;
/// API Gateway's limit on one websocket frame; the local gateway enforces it too.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's limit on one (possibly fragmented) websocket message.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Longest user message text accepted (it must fit a frame with its envelope).
pub const MAX_TEXT_BYTES: usize = 30 * 1024;
/// Longest reason a worker may give with its agent's state (`agent_state`).
pub const MAX_AGENT_REASON_BYTES: usize = 1000;
/// Longest session title the agent may give (`session_title`), in characters.
pub const MAX_AGENT_TITLE_CHARS: usize = 200;

mod chunks;
mod events;
mod http;
mod replies;
mod requests;
mod views;

pub use chunks::*;
pub use events::*;
pub use http::*;
pub use replies::*;
pub use requests::*;
pub use views::*;
