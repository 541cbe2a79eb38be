//! Users and their tickets: unique names and secrets, rotation, removal,
//! tickets taken once.

use crate::ids::UserId;
use crate::model::User;
use crate::store::Store;

use super::{
    admin, assert_conflict, one_wins, secret_hash, seed, seed_message, seed_session, ticket, user,
    user_connection, T0,
};

pub async fn users_round_trip<S: Store>(s: S) {
    let bob = user("bob");
    let alice = admin("alice");
    s.create_user(&bob).await.expect("create bob");
    s.create_user(&alice).await.expect("create alice");

    assert_eq!(s.user(&bob.id).await.expect("user"), Some(bob.clone()));
    assert_eq!(s.user(&alice.id).await.expect("user"), Some(alice.clone()));
    assert_eq!(
        s.user_by_name("alice").await.expect("by name"),
        Some(alice.clone())
    );
    assert_eq!(
        s.user_by_secret(&bob.secret_hash).await.expect("by secret"),
        Some(bob.clone())
    );
    assert_eq!(
        s.users().await.expect("users"),
        vec![alice, bob],
        "users by name"
    );

    assert_eq!(s.user(&UserId::random()).await.expect("user"), None);
    assert_eq!(s.user_by_name("carol").await.expect("by name"), None);
    assert_eq!(
        s.user_by_secret(&secret_hash()).await.expect("by secret"),
        None
    );
}

pub async fn user_name_and_secret_are_unique<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");

    let same_name = user("alice");
    assert_conflict(s.create_user(&same_name).await, "same name");
    let same_secret = User {
        secret_hash: alice.secret_hash.clone(),
        ..user("bob")
    };
    assert_conflict(s.create_user(&same_secret).await, "same secret hash");

    assert_eq!(s.users().await.expect("users"), vec![alice.clone()]);
    assert_eq!(s.user(&same_name.id).await.expect("user"), None);
    assert_eq!(s.user(&same_secret.id).await.expect("user"), None);
    assert_eq!(
        s.user_by_secret(&alice.secret_hash)
            .await
            .expect("by secret"),
        Some(alice)
    );
}

pub async fn user_secret_rotation<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let fresh = secret_hash();

    assert!(s.set_user_secret(&alice.id, &fresh).await.expect("rotate"));
    assert_eq!(
        s.user_by_secret(&alice.secret_hash).await.expect("old"),
        None
    );
    let found = s
        .user_by_secret(&fresh)
        .await
        .expect("new")
        .expect("found by new secret");
    assert_eq!(found.id, alice.id);
    assert_eq!(found.secret_hash, fresh);

    assert!(!s
        .set_user_secret(&UserId::random(), &secret_hash())
        .await
        .expect("rotate missing"));
}

/// Removing a user deletes the user's record only: the name and secret no
/// longer resolve and may be taken again; the user's workers, sessions,
/// connection records and tickets stay (the domain refuses what needs
/// the user).
pub async fn user_removal_frees_name_and_secret_and_keeps_the_rest<S: Store>(s: S) {
    let seed = seed(&s).await;
    let alice = seed.user.clone();
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let session = seed_session(&s, &seed, T0).await;
    let message = seed_message(&s, &session, "hello").await;
    let browser = user_connection(&alice.id, T0);
    s.put_connection(&browser).await.expect("connection");
    let hash = secret_hash();
    let issued = ticket(&alice, T0 + 30_000);
    s.put_ticket(&hash, &issued).await.expect("ticket");

    assert!(s.delete_user(&alice.id).await.expect("delete"));
    assert_eq!(s.user(&alice.id).await.expect("user"), None);
    assert_eq!(s.user_by_name("alice").await.expect("by name"), None);
    assert_eq!(
        s.user_by_secret(&alice.secret_hash)
            .await
            .expect("by secret"),
        None
    );
    assert_eq!(s.users().await.expect("users"), vec![bob.clone()]);
    assert!(
        !s.delete_user(&alice.id).await.expect("delete again"),
        "gone already"
    );
    assert!(!s
        .delete_user(&UserId::random())
        .await
        .expect("delete unknown"));
    assert!(!s
        .set_user_secret(&alice.id, &secret_hash())
        .await
        .expect("rotate removed"));
    assert_eq!(s.user(&bob.id).await.expect("bob"), Some(bob.clone()));

    // What refers to her stays.
    assert_eq!(
        s.worker(&seed.worker.id).await.expect("worker"),
        Some(seed.worker.clone())
    );
    assert_eq!(
        s.workers_of(&alice.id).await.expect("workers"),
        vec![seed.worker.clone()]
    );
    assert_eq!(
        s.session(&session.id).await.expect("session").map(|x| x.id),
        Some(session.id.clone())
    );
    assert_eq!(
        s.message(&message.id).await.expect("message"),
        Some(message.clone())
    );
    assert_eq!(
        s.user_connections(&alice.id, T0)
            .await
            .expect("connections"),
        vec![browser.id.clone()]
    );
    assert_eq!(s.take_ticket(&hash, T0).await.expect("take"), Some(issued));

    // Her name and her old secret hash are free for a new user (a new id).
    let again = User {
        secret_hash: alice.secret_hash.clone(),
        ..user("alice")
    };
    s.create_user(&again).await.expect("the name is free again");
    assert_eq!(
        s.user_by_name("alice").await.expect("by name"),
        Some(again.clone())
    );
    assert_eq!(
        s.user_by_secret(&alice.secret_hash)
            .await
            .expect("by secret"),
        Some(again.clone())
    );
    assert_eq!(s.user(&alice.id).await.expect("old id"), None);
    assert_eq!(s.users().await.expect("users"), vec![again, bob]);
}

// ---- tickets ----

pub async fn ticket_is_taken_once<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let hash = secret_hash();
    let issued = ticket(&alice, T0 + 30_000);
    s.put_ticket(&hash, &issued).await.expect("put");

    // The whole ticket comes back: its user, the secret it was issued
    // under and its expiry.
    assert_eq!(s.take_ticket(&hash, T0).await.expect("take"), Some(issued));
    let ticket = hash;
    assert_eq!(s.take_ticket(&ticket, T0).await.expect("retake"), None);
    assert_eq!(
        s.take_ticket(&secret_hash(), T0).await.expect("unknown"),
        None
    );
}

pub async fn expired_ticket_is_refused<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let ticket = secret_hash();
    s.put_ticket(&ticket, &super::ticket(&alice, T0))
        .await
        .expect("put");

    // Expiry is exclusive: at `expires_at` the ticket is already dead.
    assert_eq!(
        s.take_ticket(&ticket, T0).await.expect("take at expiry"),
        None
    );
    // ... and the refused take consumed it.
    assert_eq!(
        s.take_ticket(&ticket, T0 - 1).await.expect("take again"),
        None
    );
}

pub async fn concurrent_ticket_takes_have_one_winner<S: Store + Clone>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let ticket = secret_hash();
    s.put_ticket(&ticket, &super::ticket(&alice, T0 + 30_000))
        .await
        .expect("put");

    let won = one_wins(&s, 10, "take", |s, _| {
        let ticket = ticket.clone();
        async move { s.take_ticket(&ticket, T0).await.expect("take") }
    })
    .await;
    assert_eq!(won.user, alice.id);
}
