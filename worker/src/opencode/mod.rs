//! opencode, driven through `opencode serve`: the child process, its HTTP
//! API and SSE event stream, and the translation of its events into chunks.
//! [`Opencode`] is what the agent loop asks of it; [`OpencodeClient`] does it.

pub mod client;
pub mod explain;
pub mod port;
pub mod process;
pub mod title;
pub mod translate;

pub use client::{Models, OpencodeClient};
pub use port::Opencode;
pub use process::OpencodeProcess;
pub use translate::Turn;
