//! Contract checks of pairing's state: pending workers (paged, capped per
//! source, expiring), one-time pairing tokens, and the rate-limit counters
//! behind the pairing attempts' limit.

use crate::ids::WorkerId;
use crate::model::{Millis, PairingToken, User, Worker, WorkerStatus};
use crate::store::Store;

use super::{
    assert_conflict, one_wins, pending_worker, race, secret_hash, ticket, user, worker, HOUR, T0,
};

pub async fn pending_workers_page_in_order<S: Store>(s: S) {
    // Two share a creation time: the id breaks the tie.
    let mut made: Vec<Worker> = [T0, T0 + 5, T0 + 5, T0 + 9, T0 + 12]
        .iter()
        .map(|&created_at| Worker {
            created_at,
            ..pending_worker("AAAA-AAAA", T0 + HOUR)
        })
        .collect();
    for w in made.iter().rev() {
        s.create_worker(w).await.expect("create");
    }
    made.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));

    let first = s.pending_workers(T0, None, 2).await.expect("first page");
    assert_eq!(first, made[..2].to_vec(), "oldest first, at most the limit");
    let last = &first[1];
    let second = s
        .pending_workers(T0, Some((last.created_at, &last.id)), 2)
        .await
        .expect("second page");
    assert_eq!(second, made[2..4].to_vec(), "strictly after the cursor, ties by id");
    let last = &second[1];
    let third = s
        .pending_workers(T0, Some((last.created_at, &last.id)), 2)
        .await
        .expect("third page");
    assert_eq!(third, made[4..].to_vec());
}

/// A pending worker from `source` whose code expires at `expires_at`.
fn pending_from(source: &str, expires_at: Millis) -> Worker {
    Worker {
        source: Some(source.to_owned()),
        ..pending_worker(&crate::auth::pairing_code(), expires_at)
    }
}

pub async fn pending_workers_are_capped_per_source<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let a: Vec<Worker> = (0..3).map(|_| pending_from("203.0.113.7", T0 + HOUR)).collect();
    for w in &a {
        assert!(
            s.create_pending_worker(w, 3, T0).await.expect("create"),
            "under the cap"
        );
    }
    let fourth = pending_from("203.0.113.7", T0 + HOUR);
    assert!(
        !s.create_pending_worker(&fourth, 3, T0).await.expect("create"),
        "a fourth from one source is refused"
    );
    assert_eq!(s.worker(&fourth.id).await.expect("read"), None, "and not stored");
    let elsewhere = pending_from("198.51.100.1", T0 + HOUR);
    assert!(
        s.create_pending_worker(&elsewhere, 3, T0).await.expect("create"),
        "another source has its own cap"
    );
    let unsourced = pending_worker("BBBB-BBBB", T0 + HOUR);
    assert!(
        s.create_pending_worker(&unsourced, 0, T0).await.expect("create"),
        "a worker without a source has no cap"
    );
    assert_eq!(
        s.worker(&unsourced.id).await.expect("read"),
        Some(unsourced.clone())
    );

    // Approved or rejected, a worker leaves the count; so does an expired code.
    s.transition_worker(&a[0].id, WorkerStatus::Pending, WorkerStatus::Approved, Some(&alice.id), None)
        .await
        .expect("approve")
        .expect("was pending");
    assert!(s.create_pending_worker(&fourth, 3, T0).await.expect("create"), "after an approval");
    assert_eq!(
        s.worker(&fourth.id).await.expect("read"),
        Some(fourth.clone()),
        "stored whole, source and all"
    );
    let fifth = pending_from("203.0.113.7", T0 + 2 * HOUR);
    assert!(!s.create_pending_worker(&fifth, 3, T0 + 1).await.expect("create"), "full again");
    assert!(
        s.create_pending_worker(&fifth, 3, T0 + HOUR).await.expect("create"),
        "once the others' codes expired"
    );

    let clash = Worker {
        credential_hash: fifth.credential_hash.clone(),
        ..pending_from("192.0.2.1", T0 + HOUR)
    };
    assert_conflict(s.create_pending_worker(&clash, 3, T0).await, "same credential");
}

pub async fn concurrent_pending_creations_keep_the_cap<S: Store + Clone>(s: S) {
    let results = race(&s, 6, |s, _| async move {
        let w = pending_from("203.0.113.7", T0 + HOUR);
        s.create_pending_worker(&w, 3, T0).await.expect("create")
    })
    .await;
    let created = results.iter().filter(|r| **r).count();
    assert_eq!(created, 3, "exactly the cap is created: {results:?}");
    assert_eq!(s.pending_workers(T0, None, 10).await.expect("pending").len(), 3);
}

pub async fn expired_pending_workers_are_deleted<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let expired = pending_from("203.0.113.7", T0);
    let live = pending_from("203.0.113.7", T0 + 1);
    let approved = worker(&alice.id);
    for w in [&expired, &live, &approved] {
        s.create_worker(w).await.expect("create");
    }
    assert!(!s.delete_expired_pending(&live.id, T0).await.expect("delete"), "not expired");
    assert!(!s.delete_expired_pending(&approved.id, T0 + HOUR).await.expect("delete"), "not pending");
    assert!(!s.delete_expired_pending(&WorkerId::random(), T0).await.expect("delete"), "missing");
    assert!(s.delete_expired_pending(&expired.id, T0).await.expect("delete"));
    assert_eq!(s.worker(&expired.id).await.expect("read"), None);
    assert_eq!(
        s.worker_by_credential(&expired.credential_hash).await.expect("read"),
        None,
        "its credential is free"
    );
    let code = expired.pairing_code.clone().expect("a code");
    assert_eq!(s.worker_by_pairing_code(&code).await.expect("read"), None);
    assert_eq!(s.worker(&live.id).await.expect("read"), Some(live.clone()));
    assert_eq!(s.worker(&approved.id).await.expect("read"), Some(approved));

    // The credential pairs afresh, and counts against its source again.
    let again = Worker {
        credential_hash: expired.credential_hash.clone(),
        ..pending_from("203.0.113.7", T0 + HOUR)
    };
    assert!(s.create_pending_worker(&again, 2, T0).await.expect("create"));
    assert_eq!(
        s.worker_by_credential(&expired.credential_hash).await.expect("read"),
        Some(again)
    );
}

fn pairing_token(user: &User, expires_at: Millis) -> PairingToken {
    PairingToken {
        owner: user.id.clone(),
        owner_secret: user.secret_hash.clone(),
        expires_at,
    }
}

pub async fn pairing_token_is_taken_once<S: Store>(s: S) {
    let alice = user("alice");
    let (live, late) = (secret_hash(), secret_hash());
    s.put_pairing_token(&live, &pairing_token(&alice, T0 + 1)).await.expect("put");
    s.put_pairing_token(&late, &pairing_token(&alice, T0)).await.expect("put");
    assert_eq!(
        s.take_pairing_token(&live, T0).await.expect("take"),
        Some(pairing_token(&alice, T0 + 1))
    );
    assert_eq!(s.take_pairing_token(&live, T0).await.expect("again"), None, "used");
    assert_eq!(s.take_pairing_token(&late, T0).await.expect("take"), None, "expired");
    assert_eq!(s.take_pairing_token(&secret_hash(), T0).await.expect("take"), None, "unknown");
    // A ticket is not a pairing token, nor the other way round.
    let hash = secret_hash();
    s.put_ticket(&hash, &ticket(&alice, T0 + HOUR)).await.expect("put ticket");
    assert_eq!(s.take_pairing_token(&hash, T0).await.expect("take"), None);
    assert!(s.take_ticket(&hash, T0).await.expect("ticket").is_some());
}

pub async fn concurrent_pairing_token_takes_have_one_winner<S: Store + Clone>(s: S) {
    let alice = user("alice");
    let hash = secret_hash();
    s.put_pairing_token(&hash, &pairing_token(&alice, T0 + HOUR)).await.expect("put");
    one_wins(&s, 8, "take", |s, _| {
        let hash = hash.clone();
        async move { s.take_pairing_token(&hash, T0).await.expect("take") }
    })
    .await;
}

pub async fn attempts_are_counted_per_window<S: Store>(s: S) {
    let (w1, w2) = (T0, T0 + 60_000);
    for i in 0..3 {
        assert!(s.count_attempt("pairing:a", w1, w2, 3).await.expect("count"), "attempt {i}");
    }
    assert!(!s.count_attempt("pairing:a", w1, w2, 3).await.expect("count"), "the fourth");
    assert!(!s.count_attempt("pairing:a", w1, w2, 3).await.expect("count"), "and the fifth");
    assert!(s.count_attempt("pairing:b", w1, w2, 3).await.expect("count"), "another key");
    // The next window starts from one.
    for i in 0..3 {
        assert!(s.count_attempt("pairing:a", w2, w2 + 60_000, 3).await.expect("count"), "next {i}");
    }
    assert!(!s.count_attempt("pairing:a", w2, w2 + 60_000, 3).await.expect("count"));
    // A late attempt of the earlier window counts against the newer one.
    assert!(!s.count_attempt("pairing:a", w1, w2, 3).await.expect("count"), "late");
    assert!(s.count_attempt("pairing:b", w1, w2, 3).await.expect("count"), "b's second");
}

pub async fn concurrent_attempts_keep_the_limit<S: Store + Clone>(s: S) {
    let results = race(&s, 10, |s, _| async move {
        s.count_attempt("pairing:a", T0, T0 + 60_000, 4).await.expect("count")
    })
    .await;
    assert_eq!(results.iter().filter(|r| **r).count(), 4, "{results:?}");
}

pub async fn purge_removes_expired_pairing_state<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let (old_token, new_token) = (secret_hash(), secret_hash());
    s.put_pairing_token(&old_token, &pairing_token(&alice, T0)).await.expect("put");
    s.put_pairing_token(&new_token, &pairing_token(&alice, T0 + HOUR)).await.expect("put");
    assert!(s.count_attempt("pairing:old", T0 - 60_000, T0, 1).await.expect("count"));
    assert!(s.count_attempt("pairing:new", T0, T0 + 60_000, 1).await.expect("count"));
    let expired = pending_from("203.0.113.7", T0);
    let live = pending_from("203.0.113.7", T0 + HOUR);
    let approved = worker(&alice.id);
    for w in [&expired, &live, &approved] {
        s.create_worker(w).await.expect("create");
    }

    let purged = s.purge_expired(T0).await.expect("purge");
    assert_eq!(purged, 3, "a token, a counter and a pending worker");
    assert_eq!(s.worker(&expired.id).await.expect("read"), None);
    assert_eq!(s.worker(&live.id).await.expect("read"), Some(live));
    assert_eq!(s.worker(&approved.id).await.expect("read"), Some(approved));
    assert!(s.take_pairing_token(&new_token, T0).await.expect("take").is_some());
    // The purged counter starts again; the live one is still full.
    assert!(s.count_attempt("pairing:old", T0 - 60_000, T0, 1).await.expect("count"));
    assert!(!s.count_attempt("pairing:new", T0, T0 + 60_000, 1).await.expect("count"));
}
