//! Revocation: `tether user reset` and `tether user remove`.

use std::sync::Arc;

use serde_json::json;
use tether_domain::ids::ConnectionId;
use tether_domain::protocol::ServerFrame;
use tether_domain::ErrorCode;

use crate::harness::*;

/// A reset takes the old secret's outstanding tickets with it and closes
/// every open socket of the user, and only theirs.
#[tokio::test]
async fn a_reset_ends_the_users_access_at_once() {
    let h = Harness::new();
    let (_, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let tab = h.connect_user(secret.expose()).await.expect("first tab");
    let phone = h.connect_user(secret.expose()).await.expect("second tab");
    let gone = h.connect_user(secret.expose()).await.expect("a tab that went away");
    h.push.set_gone(&gone);
    let unredeemed = h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket");
    let bob = h.user("bob").await;

    let reset = h.domain.reset_user_secret("ada", h.now()).await.expect("reset");
    assert_eq!(reset.browsers.closed, 2, "both open tabs closed; the gone one is not counted");
    assert!(reset.browsers.failed.is_empty());
    let closed = h.push.closed();
    for conn in [&tab, &phone] {
        assert!(closed.contains(conn), "{conn:?} is closed through the push port");
        assert_eq!(h.code(conn, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "its record is gone");
    }
    assert!(!closed.contains(&bob), "another user's socket stays open");
    h.ok(&bob, json!({"action": "ping"})).await;

    // The ticket issued under the old secret is refused as an unknown one
    // is, and leaves no connection record behind.
    let old = h.domain.connect(request(Some(&unredeemed.ticket), None, None, h.now())).await.expect_err("old");
    let unknown = h.domain.connect(request(Some("ttk_unknown"), None, None, h.now())).await.expect_err("unknown");
    assert_eq!(old.code, ErrorCode::Unauthorized);
    assert_eq!((old.code, old.message), (unknown.code, unknown.message), "no tell-tale difference");
    let x = ConnectionId::parse("x=").expect("id");
    assert_eq!(h.code(&x, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "no record of it");
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::Unauthorized), "the old secret");

    let fresh = h.connect_user(reset.secret.expose()).await.expect("the new secret works");
    let me = h.ok(&fresh, json!({"action": "me"})).await;
    assert_eq!(me["user_name"], "ada");
}

/// A removal revokes the user's workers (closing their sockets as
/// `worker_revoke` does), refuses their tickets and secret, closes their
/// sockets, and frees the name: a new user of that name sees nothing of
/// the old one's.
#[tokio::test]
async fn removing_a_user_revokes_their_workers_and_closes_everything() {
    let h = Harness::new();
    let (_, admin) = h.domain.add_user("root", true, h.now()).await.expect("root");
    let (_, secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let tab = h.connect_user(secret.expose()).await.expect("tab");
    let (wid, wconn, credential) = h.worker(&tab).await;
    let (sid, _) = h.chat(&tab, &wid, &wconn).await;
    let second = h.connect_user(secret.expose()).await.expect("second tab");
    let unredeemed = h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket");
    let root = h.connect_user(admin.expose()).await.expect("root's tab");

    let removed = h.domain.remove_user("ada", h.now()).await.expect("remove");
    assert_eq!(removed.user.name, "ada");
    assert_eq!(removed.workers_revoked, 1);
    assert_eq!(removed.browsers.closed, 2);
    assert_eq!(removed.workers.closed, 1);
    let closed = h.push.closed();
    for conn in [&tab, &second, &wconn] {
        assert!(closed.contains(conn), "{conn:?} is closed");
        assert_eq!(h.code(conn, json!({"action": "ping"})).await, ErrorCode::Unauthorized);
    }
    assert!(
        h.push.sent_to(&wconn).iter().any(|f| matches!(f, ServerFrame::PairingStatus { status, .. } if status.as_str() == "revoked")),
        "the worker hears it was revoked before it is closed"
    );
    assert!(!closed.contains(&root));
    h.ok(&root, json!({"action": "ping"})).await;

    assert_eq!(h.redeem(&unredeemed.ticket).await, Err(ErrorCode::Unauthorized), "her ticket");
    assert_eq!(h.connect_user(secret.expose()).await, Err(ErrorCode::Unauthorized), "her secret");
    assert_eq!(h.connect_worker(&credential).await, Err(ErrorCode::WorkerNotApproved), "her worker");
    assert_eq!(
        h.domain.remove_user("ada", h.now()).await.expect_err("twice").code,
        ErrorCode::NotFound
    );

    // The name is free again; the new ada is someone else.
    let (again, secret) = h.domain.add_user("ada", false, h.now()).await.expect("the name again");
    assert_ne!(again.id, removed.user.id);
    let tab = h.connect_user(secret.expose()).await.expect("new ada");
    let machines = h.ok(&tab, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"], json!([]));
    assert_eq!(h.code(&tab, json!({"action": "session_history", "session_id": sid})).await, ErrorCode::NotFound);
}

#[tokio::test]
async fn the_last_admin_is_not_removed() {
    let h = Harness::new();
    h.domain.add_user("root", true, h.now()).await.expect("root");
    h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let refused = h.domain.remove_user("root", h.now()).await.expect_err("last admin");
    assert_eq!(refused.code, ErrorCode::InvalidState);
    assert!(refused.message.contains("last admin"), "{}", refused.message);
    h.domain.add_user("second", true, h.now()).await.expect("another admin");
    h.domain.remove_user("root", h.now()).await.expect("no longer the last");
    assert_eq!(
        h.domain.remove_user("second", h.now()).await.expect_err("last again").code,
        ErrorCode::InvalidState
    );
    h.domain.remove_user("ada", h.now()).await.expect("a user who is not an admin");
}

#[tokio::test]
async fn unknown_users_are_not_found() {
    let h = Harness::new();
    assert_eq!(h.domain.reset_user_secret("nobody", h.now()).await.expect_err("reset").code, ErrorCode::NotFound);
    assert_eq!(h.domain.remove_user("nobody", h.now()).await.expect_err("remove").code, ErrorCode::NotFound);
}

/// A `$connect` racing a reset (random store pauses interleave them many
/// ways) never leaves a usable connection: either the ticket is refused or
/// the reset finds the connection and closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_racing_a_reset_leaves_no_usable_connection() {
    let h = Arc::new(Harness::new());
    let (_, mut secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    for round in 0..40 {
        let ticket = h.domain.issue_ticket(Some(secret.expose()), h.now()).await.expect("ticket");
        let connect = {
            let h = h.clone();
            tokio::spawn(async move { h.redeem(&ticket.ticket).await })
        };
        let reset = {
            let h = h.clone();
            tokio::spawn(async move { h.domain.reset_user_secret("ada", h.now()).await.expect("reset") })
        };
        let connected = connect.await.expect("task");
        secret = reset.await.expect("task").secret;
        if let Ok(conn) = connected {
            assert_eq!(
                h.code(&conn, json!({"action": "ping"})).await,
                ErrorCode::Unauthorized,
                "round {round}: a connection of the old secret outlived the reset"
            );
        }
    }
}
