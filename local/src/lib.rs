//! # tether-local
//!
//! The embedded host: everything Tether needs in one process, no AWS account.
//!
//! - [`sqlite`]: `SqliteStore`, the store port on SQLite (WAL, synchronous
//!   commits, migrations).
//! - [`gateway`]: a websocket gateway with API Gateway's semantics
//!   (connection ids, `$connect`/`$disconnect`, routing on `action`, push by
//!   connection id with 410-like `Gone`, frame and message size limits, idle
//!   timeout and maximum connection age).
//! - [`host`]: wires store, domain and gateway into the HTTP server that
//!   `tether up` and `tether serve` run.
//! - [`control`]: the running host's control socket (a Unix socket in the
//!   data directory), through which `tether user reset|remove` close the
//!   revoked user's websockets.
//! - [`listen`]: the HTTP(S) listener: rustls with certificates read again
//!   when they change, header-read and handshake timeouts.
//! - [`cli`] and [`app`]: the `tether` command line and what each command
//!   does (a library, so the AWS-shaped test bed runs the same commands).

pub mod app;
pub mod cli;
pub mod control;
pub mod gateway;
pub mod host;
pub mod listen;
pub mod sqlite;
