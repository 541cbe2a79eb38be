//! Revocation ends access at once. `tether user reset NAME` and `tether
//! user remove NAME`, run as processes of their own while the host serves,
//! close every open websocket of the user (and, for `remove`, of the user's
//! workers) within a second of the command finishing; a ticket issued
//! under the old secret is refused at `/ws`; the old secret gets no new
//! ticket. The local host closes them through its control socket; the
//! Lambda tier (which includes this file) with `DeleteConnection` on its
//! Management API, as `tether-admin` does on AWS.

use std::time::{Duration, Instant};

use tether_domain::protocol::Request;
use tether_domain::ErrorCode;

use crate::helpers::{
    assert_refused, http_post, paired, run, Host, Mode, Paired, Server, Socket, User, UserClient,
    WorkerClient,
};

/// How soon after the command finishes every socket must be closed.
const AT_ONCE: Duration = Duration::from_secs(1);
/// The close code of a disconnect the server asks for.
const SERVER_CLOSE: u16 = 1000;

pub async fn a_reset_closes_the_users_sockets_and_kills_their_tickets(host: Host) {
    run("reset", Mode::Sequential, reset_ends_access(host, Mode::Sequential)).await;
}

pub async fn a_removal_closes_the_users_and_their_workers_sockets(host: Host) {
    run("remove", Mode::Sequential, remove_ends_access(host, Mode::Sequential)).await;
}

/// `tether user ARGS…`, which must succeed; its standard output.
async fn user_command(server: &Server, args: &[&str]) -> String {
    let out = server.user_command(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`tether user {}` failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        args.join(" "),
        out.status
    );
    stdout
}

/// Waits for each socket to be closed by the server and asserts it was,
/// within [`AT_ONCE`] of `finished` (a socket closed before the command
/// finished counts as at once). Returns the slowest, for the log.
async fn all_closed_at_once(finished: Instant, sockets: &mut [&mut Socket]) -> Duration {
    let mut slowest = Duration::ZERO;
    let deadline = tokio::time::Instant::from_std(finished + AT_ONCE);
    for sock in sockets.iter_mut() {
        let label = sock.label.clone();
        let closed = tokio::time::timeout_at(deadline, sock.wait_closed())
            .await
            .unwrap_or_else(|_| panic!("{label}: still open {AT_ONCE:?} after the command finished"));
        let took = finished.elapsed();
        assert_eq!(
            closed.code,
            Some(SERVER_CLOSE),
            "{}: closed by the server: {closed:?}",
            sock.label
        );
        assert!(
            took <= AT_ONCE,
            "{}: closed {took:?} after the command finished (at most {AT_ONCE:?})",
            sock.label
        );
        slowest = slowest.max(took);
    }
    slowest
}

/// A ticket the old secret got, redeemed after the revocation: 401.
async fn old_ticket_refused(server: &Server, user: &User, ticket: &str) {
    assert_refused(
        UserClient::connect_with_ticket(server, user, ticket).await,
        401,
        ErrorCode::Unauthorized,
        "a ticket issued under the old secret",
    );
    let res = http_post(server.addr, "/api/ticket", Some(&user.secret), None).await;
    assert_eq!(res.status, 401, "POST /api/ticket with the old secret: {res:?}");
}

pub async fn reset_ends_access(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let ada = server.add_user("ada").await;
    let bob = server.add_user("bob").await;
    let mut tab = UserClient::connect(&server, &ada).await;
    let mut phone = UserClient::connect(&server, &ada).await;
    tab.assert_usable("connecting").await;
    phone.assert_usable("connecting").await;
    let unredeemed = server.ticket(&ada).await;
    let other = UserClient::connect(&server, &bob).await;

    let stdout = user_command(&server, &["reset", "ada"]).await;
    let finished = Instant::now();
    let slowest = all_closed_at_once(finished, &mut [&mut tab.sock, &mut phone.sock]).await;
    eprintln!("reset: both sockets of ada closed within {slowest:?} of the command finishing");
    assert!(stdout.contains("Closed 2 open connection(s)"), "{stdout}");

    old_ticket_refused(&server, &ada, &unredeemed.ticket).await;
    other.assert_usable("another user's reset").await;
    let secret = stdout
        .split_whitespace()
        .find(|t| t.starts_with("tsk_"))
        .unwrap_or_else(|| panic!("`tether user reset` printed no new secret: {stdout}"))
        .to_owned();
    let renewed = User {
        name: ada.name.clone(),
        secret,
    };
    let again = UserClient::connect(&server, &renewed).await;
    again.assert_usable("signing in with the new secret").await;
}

pub async fn remove_ends_access(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let root = server.add_user_with("root", true).await;
    let Paired {
        user: mut tab,
        mut worker,
    } = paired(&server, "ada").await;
    let ada = tab.user.clone();
    let mut phone = UserClient::connect(&server, &ada).await;
    phone.assert_usable("connecting").await;
    let unredeemed = server.ticket(&ada).await;
    let admin = UserClient::connect(&server, &root).await;

    let stdout = user_command(&server, &["remove", "ada"]).await;
    let finished = Instant::now();
    let slowest = all_closed_at_once(
        finished,
        &mut [&mut tab.sock, &mut phone.sock, &mut worker.sock],
    )
    .await;
    eprintln!("remove: ada's two sockets and her worker's closed within {slowest:?} of the command finishing");
    assert!(stdout.contains("Revoked 1 worker(s)"), "{stdout}");

    old_ticket_refused(&server, &ada, &unredeemed.ticket).await;
    assert_refused(
        WorkerClient::try_connect(&server, &worker.identity).await,
        403,
        ErrorCode::WorkerNotApproved,
        "the removed user's worker reconnecting",
    );
    admin.assert_usable("another user's removal").await;

    // The last admin stays, with a clear message.
    let refused = server.user_command(&["remove", "root"]).await;
    assert!(!refused.status.success(), "removing the last admin must fail");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("last admin"), "{stderr}");

    // The name is free again, for someone who sees nothing of the old ada.
    let new_ada = server.add_user("ada").await;
    let fresh = UserClient::connect(&server, &new_ada).await;
    let machines = fresh.call(Request::MachineList {}).await;
    assert_eq!(machines.ok()["machines"], serde_json::json!([]), "{}", machines.raw);
}
