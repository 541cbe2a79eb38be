//! The end-to-end scenarios: a host as a process, real websockets and HTTP.
//! Each is a `pub async fn(Host, Mode)`; [`e2e_scenarios!`](crate::e2e_scenarios)
//! makes two tests of each, one per [`Mode`](crate::helpers::Mode), every
//! run on a server process of its own.

pub mod bad_input;
pub mod chat;
pub mod isolation;
pub mod pairing;
pub mod resume;

/// One `#[tokio::test]` per scenario and mode (`sequential::NAME`,
/// `concurrent::NAME`), against `$host` (the path of a
/// [`Host`](crate::helpers::Host) constant, e.g. `crate::HOST`).
#[macro_export]
macro_rules! e2e_scenarios {
    ($host:path) => {
        $crate::e2e_scenarios!(@modes $host;
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
        );
    };
    (@modes $host:path; $($module:ident :: $name:ident),* $(,)?) => {
        mod sequential {
            $crate::e2e_scenarios!(@tests $host, Sequential; $($module::$name),*);
        }
        mod concurrent {
            $crate::e2e_scenarios!(@tests $host, Concurrent; $($module::$name),*);
        }
    };
    (@tests $host:path, $mode:ident; $($module:ident :: $name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let mode = $crate::helpers::Mode::$mode;
                let scenario = $crate::e2e::$module::$name($host, mode);
                $crate::helpers::Host::run($host, stringify!($name), mode, scenario).await;
            }
        )*
    };
}
