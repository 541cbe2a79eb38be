//! End-to-end tests: `tether serve` as a process, real websockets and HTTP.
//!
//! Every scenario runs twice, each time on its own server process: once with
//! the frames of a connection handled in order, once with
//! `--concurrent-frames` (handled concurrently, so replies and effects may
//! reorder, as with API Gateway and Lambda).

mod bad_input;
mod chat;
mod helpers;
mod isolation;
mod pairing;
mod resume;

/// One `#[tokio::test]` per scenario and mode: `sequential::NAME` and
/// `concurrent::NAME`.
macro_rules! scenarios {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sequential {
            $(
                #[tokio::test]
                async fn $name() {
                    let mode = crate::helpers::Mode::Sequential;
                    crate::helpers::run(stringify!($name), mode, crate::$module::$name(mode)).await;
                }
            )*
        }
        mod concurrent {
            $(
                #[tokio::test]
                async fn $name() {
                    let mode = crate::helpers::Mode::Concurrent;
                    crate::helpers::run(stringify!($name), mode, crate::$module::$name(mode)).await;
                }
            )*
        }
    };
}

scenarios! {
    pairing::pair_and_approve,
    pairing::online_offline,
    pairing::presence_lapses,
    chat::chat_flow,
    chat::pipelined_burst,
    chat::offline_queue,
    resume::user_reconnect_catch_up,
    resume::worker_reconnect_resends_unacked,
    isolation::second_user_isolation,
    resume::sigkill_and_restart,
    bad_input::bad_frames,
    bad_input::answer_rules,
    bad_input::refused_connections,
}
