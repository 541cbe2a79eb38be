//! The security suite's scenarios both hosts run (the rest of the suite,
//! `local/tests/security`, is the local host's own): what anyone who can
//! reach the port gets ([`exposure`]), and revocation ending access at
//! once ([`revocation`]). [`raw_http`] is their byte-exact HTTP client.

pub mod exposure;
pub mod raw_http;
pub mod revocation;

/// The [`exposure`] scenarios as `#[tokio::test]`s against `$host` (the
/// path of a [`Host`](crate::helpers::Host) constant, e.g. `crate::HOST`).
#[macro_export]
macro_rules! exposure_scenarios {
    ($host:path) => {
        $crate::security_tests!($host; exposure;
            only_the_ui_the_api_and_the_websocket_are_served,
            connection_ids_are_not_logged_at_info,
        );
    };
}

/// The [`revocation`] scenarios as `#[tokio::test]`s against `$host`.
#[macro_export]
macro_rules! revocation_scenarios {
    ($host:path) => {
        $crate::security_tests!($host; revocation;
            a_reset_closes_the_users_sockets_and_kills_their_tickets,
            a_removal_closes_the_users_and_their_workers_sockets,
        );
    };
}

/// One `#[tokio::test]` per `$name`, each setting `$host` up and awaiting
/// `security::$module::$name($host)`.
#[doc(hidden)]
#[macro_export]
macro_rules! security_tests {
    ($host:path; $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                ($host.set_up)();
                $crate::security::$module::$name($host).await;
            }
        )*
    };
}
