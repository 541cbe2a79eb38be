// The end-to-end scenarios, one `#[tokio::test]` per scenario and mode
// (`sequential::NAME`, `concurrent::NAME`). Included by `main.rs` here and by
// `local/testbed/tests/e2e_lambda/main.rs`, which runs the same list against the Lambda
// tier; each calls its crate's `before_scenario()` first.

macro_rules! scenarios {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sequential {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::before_scenario();
                    let mode = crate::helpers::Mode::Sequential;
                    crate::helpers::run(stringify!($name), mode, crate::$module::$name(mode)).await;
                }
            )*
        }
        mod concurrent {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::before_scenario();
                    let mode = crate::helpers::Mode::Concurrent;
                    crate::helpers::run(stringify!($name), mode, crate::$module::$name(mode)).await;
                }
            )*
        }
    };
}

scenarios! {
    pairing::pair_and_approve,
    pairing::pair_with_a_token,
    pairing::online_offline,
    pairing::presence_lapses,
    chat::chat_flow,
    chat::pipelined_burst,
    chat::offline_queue,
    resume::user_reconnect_catch_up,
    resume::worker_reconnect_resends_unacked,
    isolation::second_user_isolation,
    resume::sigkill_and_restart,
    resume::worker_gone_for_good,
    bad_input::bad_frames,
    bad_input::answer_rules,
    bad_input::refused_connections,
    bad_input::pairing_limits,
}
