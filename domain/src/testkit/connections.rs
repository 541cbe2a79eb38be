//! Connection records, their principals and owners, watches, and the purge
//! of what expired.

use crate::ids::{ConnectionId, SessionId};
use crate::model::Connection;
use crate::store::Store;

use super::{
    pending_worker, secret_hash, seed, sorted, ticket, user, user_connection, worker_connection,
    HOUR, T0,
};

pub async fn connection_round_trip<S: Store>(s: S) {
    let seed = seed(&s).await;
    let browser = user_connection(&seed.user.id, T0);
    let agent = worker_connection(&seed.worker, T0);
    s.put_connection(&browser).await.expect("put browser");
    s.put_connection(&agent).await.expect("put worker");

    assert_eq!(
        s.connection(&browser.id).await.expect("get"),
        Some(browser.clone())
    );
    assert_eq!(
        s.connection(&agent.id).await.expect("get"),
        Some(agent.clone())
    );

    s.touch_connection(&browser.id, T0 + 7)
        .await
        .expect("touch");
    let touched = Connection {
        last_seen: T0 + 7,
        ..browser.clone()
    };
    assert_eq!(
        s.connection(&browser.id).await.expect("get"),
        Some(touched.clone())
    );
    s.touch_connection(&ConnectionId::random(), T0)
        .await
        .expect("touch missing is a no-op");

    assert_eq!(
        s.delete_connection(&browser.id).await.expect("delete"),
        Some(touched)
    );
    assert_eq!(
        s.delete_connection(&browser.id)
            .await
            .expect("delete twice"),
        None
    );
    assert_eq!(s.connection(&browser.id).await.expect("get"), None);
    assert_eq!(s.connection(&agent.id).await.expect("get"), Some(agent));
}

pub async fn user_connections_filter<S: Store>(s: S) {
    let seed = seed(&s).await;
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let uid = &seed.user.id;

    let long = Connection {
        expires_at: T0 + 100,
        ..user_connection(uid, T0)
    };
    let short = Connection {
        expires_at: T0 + 50,
        ..user_connection(uid, T0)
    };
    let bobs = Connection {
        expires_at: T0 + 100,
        ..user_connection(&bob.id, T0)
    };
    // A worker connection owned by the user is not a browser of theirs.
    let agent = Connection {
        expires_at: T0 + 100,
        ..worker_connection(&seed.worker, T0)
    };
    for c in [&long, &short, &bobs, &agent] {
        s.put_connection(c).await.expect("put");
    }

    assert_eq!(
        sorted(s.user_connections(uid, T0).await.expect("at T0")),
        sorted(vec![long.id.clone(), short.id.clone()])
    );
    assert_eq!(
        s.user_connections(uid, T0 + 50).await.expect("later"),
        vec![long.id]
    );
    assert!(s
        .user_connections(uid, T0 + 100)
        .await
        .expect("all expired")
        .is_empty());
    assert_eq!(
        s.user_connections(&bob.id, T0).await.expect("bob"),
        vec![bobs.id]
    );
}

pub async fn worker_connections_and_owner<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let w = pending_worker("AAAA-AAAA", T0 + 1_000);
    let other = pending_worker("BBBB-BBBB", T0 + 1_000);
    s.create_worker(&w).await.expect("create");
    s.create_worker(&other).await.expect("create");
    let first = worker_connection(&w, T0);
    let second = worker_connection(&w, T0 + 1);
    let others = worker_connection(&other, T0);
    let browser = user_connection(&alice.id, T0);
    for c in [&first, &second, &others, &browser] {
        s.put_connection(c).await.expect("put");
    }

    assert_eq!(
        sorted(
            s.worker_connections(&w.id)
                .await
                .expect("worker_connections")
        ),
        sorted(vec![first.id.clone(), second.id.clone()])
    );

    s.set_connections_owner(&w.id, &alice.id)
        .await
        .expect("set owner");
    for c in [&first, &second] {
        let stored = s.connection(&c.id).await.expect("get").expect("exists");
        assert_eq!(stored.owner, Some(alice.id.clone()));
    }
    assert_eq!(s.connection(&others.id).await.expect("get"), Some(others));
    assert_eq!(s.connection(&browser.id).await.expect("get"), Some(browser));
}

pub async fn watches<S: Store>(s: S) {
    let seed = seed(&s).await;
    let a = user_connection(&seed.user.id, T0);
    let b = user_connection(&seed.user.id, T0);
    s.put_connection(&a).await.expect("put");
    s.put_connection(&b).await.expect("put");
    let (session, other) = (SessionId::random(), SessionId::random());

    assert!(s.watch(&session, &a.id).await.expect("watch"));
    assert!(s.watch(&session, &b.id).await.expect("watch"));
    assert!(s.watch(&session, &a.id).await.expect("watch again"));
    assert!(s.watch(&other, &b.id).await.expect("watch other"));
    assert!(!s
        .watch(&session, &ConnectionId::random())
        .await
        .expect("watch by a ghost"));

    assert_eq!(
        sorted(s.watchers(&session).await.expect("watchers")),
        sorted(vec![a.id.clone(), b.id.clone()]),
        "each connection once"
    );

    s.unwatch(&session, &b.id).await.expect("unwatch");
    s.unwatch(&session, &ConnectionId::random())
        .await
        .expect("unwatch missing");
    assert_eq!(s.watchers(&session).await.expect("watchers"), vec![a.id]);
    assert_eq!(s.watchers(&other).await.expect("watchers"), vec![b.id]);
    assert!(s
        .watchers(&SessionId::random())
        .await
        .expect("none")
        .is_empty());
}

pub async fn watches_go_with_their_connection<S: Store>(s: S) {
    let seed = seed(&s).await;
    let gone = user_connection(&seed.user.id, T0);
    let stays = user_connection(&seed.user.id, T0);
    s.put_connection(&gone).await.expect("put");
    s.put_connection(&stays).await.expect("put");
    let (one, two) = (SessionId::random(), SessionId::random());
    for (session, conn) in [(&one, &gone), (&two, &gone), (&one, &stays)] {
        assert!(s.watch(session, &conn.id).await.expect("watch"));
    }

    s.delete_connection(&gone.id).await.expect("delete");
    assert_eq!(s.watchers(&one).await.expect("watchers"), vec![stays.id]);
    assert!(s.watchers(&two).await.expect("watchers").is_empty());

    // A connection id coming back does not bring its watches back.
    s.put_connection(&gone).await.expect("put again");
    assert!(s.watchers(&two).await.expect("watchers").is_empty());
}

pub async fn purge_removes_only_what_expired<S: Store>(s: S) {
    let seed = seed(&s).await;
    let (old, fresh) = (secret_hash(), secret_hash());
    s.put_ticket(&old, &ticket(&seed.user, T0))
        .await
        .expect("put");
    s.put_ticket(&fresh, &ticket(&seed.user, T0 + 2 * HOUR))
        .await
        .expect("put");
    let stale = user_connection(&seed.user.id, T0 - 2 * HOUR);
    let live = user_connection(&seed.user.id, T0);
    let stale_worker = worker_connection(&seed.worker, T0 - 2 * HOUR);
    for c in [&stale, &live, &stale_worker] {
        s.put_connection(c).await.expect("put connection");
    }
    s.set_worker_connection(&seed.worker.id, &stale_worker.id, T0 - 2 * HOUR)
        .await
        .expect("presence");
    let session = SessionId::random();
    assert!(s.watch(&session, &stale.id).await.expect("watch"));
    assert!(s.watch(&session, &live.id).await.expect("watch"));

    let purged = s.purge_expired(T0 + 1).await.expect("purge");
    assert_eq!(purged, 3, "one ticket and two connections");
    assert!(s.connection(&stale.id).await.expect("read").is_none());
    assert!(s.connection(&live.id).await.expect("read").is_some());
    assert_eq!(s.watchers(&session).await.expect("watchers"), vec![live.id]);
    assert_eq!(
        s.take_ticket(&fresh, T0 + 1).await.expect("take"),
        Some(ticket(&seed.user, T0 + 2 * HOUR))
    );
    let worker = s
        .worker(&seed.worker.id)
        .await
        .expect("read")
        .expect("worker");
    assert_eq!(worker.connection, None, "presence left with its connection");
}
