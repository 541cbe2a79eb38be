//! Helpers shared by adapters' tests: entity builders and the store contract
//! suite.
//!
//! [`store_contract`] runs every check against fresh stores from a factory
//! and reports all failing checks by name. Each check is also a `pub async
//! fn` of its own, so an adapter can run one while chasing a failure.
//!
//! The suite pins down what the [`Store`] trait promises and nothing more:
//! where the trait leaves an order open (watchers, same-millisecond ties),
//! results are compared as sets.
//!
//! One file per concern:
//!
//! - `builders`: test values of every record, and seeds that store them;
//! - the contract's checks by aggregate: `users` (and tickets), `pairing`,
//!   `workers`, `connections` (and watches), `sessions`, `messages`,
//!   `chunks`, `prompts`, `caps`, `agent`;
//! - [`handler_scenarios`]: the handlers driven against a store;
//! - [`Jitter`]: a store wrapper that pauses at random, so races show;
//! - [`MemoryStore`]: the store port in memory, which the domain's own
//!   tests run the contract and the handler scenarios against.

mod agent;
mod builders;
mod caps;
mod chunks;
mod connections;
mod jitter;
mod memory;
mod messages;
mod pairing;
mod prompts;
mod scenarios;
mod sessions;
mod users;
mod workers;
pub use agent::*;
pub use builders::*;
pub use caps::*;
pub use chunks::*;
pub use connections::*;
pub use jitter::Jitter;
pub use memory::MemoryStore;
pub use messages::*;
pub use pairing::*;
pub use prompts::*;
pub use scenarios::*;
pub use sessions::*;
pub use users::*;
pub use workers::*;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Barrier;

use crate::store::Store;

/// Runs every check, each on a fresh store from `make`, each in its own
/// task (so one failing check does not hide the others), and panics listing
/// the checks that failed.
pub async fn store_contract<S, F, Fut>(mut make: F)
where
    S: Store + Clone,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let mut failed: Vec<String> = Vec::new();
    let mut passed = 0usize;
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            let store = make().await;
            match tokio::spawn($check(store)).await {
                Ok(()) => passed += 1,
                Err(e) => failed.push(format!("{}: {}", stringify!($check), panic_text(e))),
            }
        )*};
    }
    run!(
        users_round_trip,
        user_name_and_secret_are_unique,
        user_secret_rotation,
        user_removal_frees_name_and_secret_and_keeps_the_rest,
        ticket_is_taken_once,
        expired_ticket_is_refused,
        concurrent_ticket_takes_have_one_winner,
        worker_round_trip,
        worker_credential_is_unique,
        workers_of_owner,
        pending_workers_unexpired,
        pending_workers_page_in_order,
        pending_workers_are_capped_per_source,
        concurrent_pending_creations_keep_the_cap,
        expired_pending_workers_are_deleted,
        pairing_token_is_taken_once,
        concurrent_pairing_token_takes_have_one_winner,
        attempts_are_counted_per_window,
        concurrent_attempts_keep_the_limit,
        purge_removes_expired_pairing_state,
        worker_transitions,
        concurrent_worker_transitions_have_one_winner,
        worker_connection_and_presence,
        worker_profile_keeps_unsaid_fields,
        connection_round_trip,
        user_connections_filter,
        worker_connections_and_owner,
        connection_count_counts_one_principals_unexpired_records,
        watches,
        watches_go_with_their_connection,
        purge_removes_only_what_expired,
        session_round_trip_and_idempotent_insert,
        sessions_of_order_filter_and_paging,
        starting_sessions,
        session_transitions,
        concurrent_session_transitions_have_one_winner,
        message_numbering_and_idempotent_insert,
        a_message_needs_its_session,
        concurrent_message_inserts_number_contiguously,
        concurrent_inserts_of_one_message_store_it_once,
        messages_of_paging,
        open_messages_order,
        message_transitions,
        concurrent_message_transitions_have_one_winner,
        chunks_idempotent_and_ordered,
        a_frames_chunks_are_put_in_one_call,
        prompts_idempotent_and_answered_once,
        concurrent_prompt_answers_have_one_winner,
        live_sessions_are_capped_per_user,
        concurrent_session_inserts_stay_within_the_cap,
        open_messages_are_capped_per_user,
        concurrent_message_inserts_stay_within_the_cap,
        agent_state_keeps_the_newest_report,
        concurrent_agent_reports_keep_the_newest,
        agent_titles_never_replace_the_users,
    );
    tracing::info!(passed, failed = failed.len(), "store contract");
    assert!(
        failed.is_empty(),
        "{} store contract check(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

pub(super) fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "panicked".into()
    }
}

/// Runs `n` copies of `op` at once (released together by a barrier) and
/// returns their results in task order.
pub(super) async fn race<S, T, F, Fut>(store: &S, n: usize, op: F) -> Vec<T>
where
    S: Store + Clone,
    T: Send + 'static,
    F: Fn(S, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fut = op(store.clone(), i);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.expect("racing task panicked"));
    }
    out
}

/// Races `n` writers of which at most one may see its condition hold
/// (released together, as [`race`] does) and asserts that exactly one won:
/// `op` answers `Some` for a win. Returns what the winner got.
pub(super) async fn one_wins<S, T, F, Fut>(store: &S, n: usize, what: &str, op: F) -> T
where
    S: Store + Clone,
    T: Debug + Send + 'static,
    F: Fn(S, usize) -> Fut,
    Fut: Future<Output = Option<T>> + Send + 'static,
{
    let mut winners: Vec<T> = race(store, n, op).await.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one {what} wins: {winners:?}");
    winners.pop().expect("one winner")
}
