//! # tether-worker
//!
//! Runs on a laptop or workstation, keeps an outbound websocket to a Tether
//! host, and drives opencode in its working directory.
//!
//! - [`relay`]: the websocket to the host: reconnects, heartbeats, large frames.
//! - [`outbox`]: one answer's chunks: numbering, coalescing, acks, re-sending.
//! - [`opencode`]: the `opencode serve` child, its HTTP API and event stream,
//!   and the translation of its events into chunks.
//! - [`agent`]: the loop that ties them together.
//! - [`pairing`]: first run: the credential, the pairing code, its QR code.
//! - [`run`]: the worker as a whole, for the binary and for `tether up`.
//! - [`tls`]: how the worker may reach its host: the plain-text rule and the
//!   certificates it trusts (`--insecure`, `--ca-cert`).

pub mod agent;
pub mod cli;
pub mod opencode;
pub mod outbox;
pub mod pairing;
pub mod relay;
pub mod run;
pub mod tls;
