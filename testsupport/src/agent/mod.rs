//! The worker with real opencode, end to end: a scripted fake LLM (the only
//! stand-in), real `opencode serve`, the real worker and host, and a
//! browser-like client speaking the protocol over real websockets. Each
//! scenario (a `pub async fn(Host)`) starts its own host, worker, opencode
//! and fake LLM; [`support`] holds what they need beyond the protocol
//! helpers.

mod scenarios;
pub mod support;

pub use scenarios::*;

/// The agent scenarios as `#[tokio::test]`s (on two worker threads) against
/// `$host` (the path of a [`Host`](crate::helpers::Host) constant, e.g.
/// `crate::HOST`); each sets the host up first.
#[macro_export]
macro_rules! agent_scenarios {
    ($host:path) => {
        $crate::agent_scenarios!(@tests $host;
            streams_real_answers_and_a_second_message,
            permission_approve_and_deny_and_file_edits,
            abort_and_end_session,
            offline_queue_and_a_cut_connection,
            a_killed_worker_or_opencode_leaves_a_clear_state,
            the_title_opencode_makes_reaches_the_host,
            three_workers_on_one_machine_stay_apart,
            a_silent_network_drop_stalls_an_answer_for_seconds_only,
            a_300_kb_answer_completes_exact,
            a_subagents_permission_approved_through_the_protocol,
            a_subagents_permission_denied_through_the_protocol,
            a_message_sent_for_another_model_reaches_it,
        );
    };
    (@tests $host:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::agent::$name($host).await;
            }
        )*
    };
}
