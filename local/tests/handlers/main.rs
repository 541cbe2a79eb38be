//! Domain handlers against the embedded store, with a recording push port:
//! the rules of each action, without sockets. One module per concern:
//!
//! - [`harness`]: the domain on an in-memory `SqliteStore` (with random
//!   pauses, so races show), and users, workers and chats made through it;
//! - [`access`]: who may connect and do what;
//! - [`chat`]: sessions, messages, chunks, prompts and history;
//! - [`revocation`]: `tether user reset` and `tether user remove`;
//! - [`caps`]: connections, live sessions, messages waiting for an answer;
//! - [`pairing`]: bound to whoever approves it.

mod access;
mod caps;
mod chat;
mod harness;
mod pairing;
mod revocation;

use tether_local::sqlite::SqliteStore;

/// The domain's shared handler scenarios (`testkit::handler_scenarios`:
/// the agent's state, titles from the agent), on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_handler_scenarios() {
    tether_domain::testkit::handler_scenarios(|| async {
        SqliteStore::open_in_memory().expect("in-memory store")
    })
    .await;
}
