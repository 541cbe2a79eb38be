//! Contract checks of the per-principal counts behind the domain's caps.

use crate::model::{Connection, Principal};
use crate::store::Store;

use super::{pending_worker, seed, user, user_connection, worker_connection, T0};

/// Unexpired records of one principal count, whatever else is stored.
pub async fn connection_count_counts_one_principals_unexpired_records<S: Store>(s: S) {
    let seed = seed(&s).await;
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let alice = Principal::User(seed.user.id.clone());
    let agent = Principal::Worker(seed.worker.id.clone());
    let pending = pending_worker("CCCC-CCCC", T0 + 1_000);
    s.create_worker(&pending).await.expect("create pending");

    let at = |c: Connection, expires_at| Connection { expires_at, ..c };
    for c in [
        at(user_connection(&seed.user.id, T0), T0 + 100),
        at(user_connection(&seed.user.id, T0), T0 + 50),
        at(user_connection(&seed.user.id, T0), T0 - 1),
        at(user_connection(&bob.id, T0), T0 + 100),
        // The user's worker's sockets are the worker's, not the user's.
        at(worker_connection(&seed.worker, T0), T0 + 100),
        at(worker_connection(&seed.worker, T0), T0 + 50),
        at(worker_connection(&pending, T0), T0 + 100),
    ] {
        s.put_connection(&c).await.expect("put");
    }
    let count = |p: Principal, now| {
        let s = &s;
        async move { s.connection_count(&p, now).await.expect("count") }
    };
    assert_eq!(count(alice.clone(), T0).await, 2, "the expired one is not counted");
    assert_eq!(count(alice.clone(), T0 + 50).await, 1);
    assert_eq!(count(alice.clone(), T0 + 100).await, 0);
    assert_eq!(count(Principal::User(bob.id.clone()), T0).await, 1);
    assert_eq!(count(agent.clone(), T0).await, 2);
    assert_eq!(count(agent.clone(), T0 + 50).await, 1);
    assert_eq!(count(Principal::Worker(pending.id.clone()), T0).await, 1);

    // A deleted record no longer counts.
    let extra = at(user_connection(&seed.user.id, T0), T0 + 100);
    s.put_connection(&extra).await.expect("put");
    assert_eq!(count(alice.clone(), T0).await, 3);
    s.delete_connection(&extra.id).await.expect("delete");
    assert_eq!(count(alice, T0).await, 2);
}
