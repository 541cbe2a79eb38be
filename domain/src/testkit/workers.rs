//! Workers: credentials, owners, pending ones, transitions, presence and
//! profiles.

use crate::ids::{ConnectionId, UserId, WorkerId};
use crate::model::{AgentState, Worker, WorkerStatus};
use crate::protocol::{AgentReport, ModelInfo, ModelRef};
use crate::store::{Store, WorkerProfile};

use super::{
    assert_conflict, model_info, one_wins, pending_worker, secret_hash, seed, user, worker, T0,
};

pub async fn worker_round_trip<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let full = Worker {
        connection: Some(ConnectionId::random()),
        last_seen: Some(T0 + 5),
        agent: Some(AgentReport {
            state: AgentState::Down,
            reason: Some("opencode exited (signal 9); restarting it".into()),
            at: T0 + 4,
        }),
        ..worker(&alice.id)
    };
    let pending = Worker {
        source: Some("2001:db8:1:2::/64".into()),
        ..pending_worker("KX7P-Q2MD", T0 + 60_000)
    };
    s.create_worker(&full).await.expect("create approved");
    s.create_worker(&pending).await.expect("create pending");

    assert_eq!(
        s.worker(&full.id).await.expect("worker"),
        Some(full.clone())
    );
    assert_eq!(
        s.worker(&pending.id).await.expect("worker"),
        Some(pending.clone())
    );
    assert_eq!(
        s.worker_by_credential(&full.credential_hash)
            .await
            .expect("by credential"),
        Some(full)
    );
    assert_eq!(
        s.worker_by_pairing_code("KX7P-Q2MD")
            .await
            .expect("by code"),
        Some(pending)
    );

    assert_eq!(s.worker(&WorkerId::random()).await.expect("worker"), None);
    assert_eq!(
        s.worker_by_credential(&secret_hash()).await.expect("cred"),
        None
    );
    assert_eq!(
        s.worker_by_pairing_code("AAAA-BBBB").await.expect("code"),
        None
    );
}

pub async fn worker_credential_is_unique<S: Store>(s: S) {
    let first = pending_worker("KX7P-Q2MD", T0 + 60_000);
    s.create_worker(&first).await.expect("create");
    let clash = Worker {
        credential_hash: first.credential_hash.clone(),
        ..pending_worker("ABCD-EFGH", T0 + 60_000)
    };
    assert_conflict(s.create_worker(&clash).await, "same credential hash");
    assert_eq!(s.worker(&clash.id).await.expect("worker"), None);
    assert_eq!(
        s.worker_by_credential(&first.credential_hash)
            .await
            .expect("by credential"),
        Some(first)
    );
}

pub async fn workers_of_owner<S: Store>(s: S) {
    let alice = user("alice");
    let bob = user("bob");
    s.create_user(&alice).await.expect("create alice");
    s.create_user(&bob).await.expect("create bob");
    let newer = Worker {
        created_at: T0 + 10,
        status: WorkerStatus::Revoked,
        ..worker(&alice.id)
    };
    let older = Worker {
        created_at: T0,
        ..worker(&alice.id)
    };
    let bobs = worker(&bob.id);
    let unowned = pending_worker("KX7P-Q2MD", T0 + 60_000);
    for w in [&newer, &bobs, &older, &unowned] {
        s.create_worker(w).await.expect("create");
    }

    assert_eq!(
        s.workers_of(&alice.id).await.expect("workers_of"),
        vec![older, newer],
        "any status, oldest first"
    );
    assert_eq!(s.workers_of(&bob.id).await.expect("workers_of"), vec![bobs]);
    assert!(s
        .workers_of(&UserId::random())
        .await
        .expect("none")
        .is_empty());
}

pub async fn pending_workers_unexpired<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let live = pending_worker("AAAA-AAAA", T0 + 1);
    let expired = pending_worker("BBBB-BBBB", T0);
    let approved = Worker {
        pairing_code: Some("CCCC-CCCC".into()),
        pairing_expires_at: Some(T0 + 60_000),
        ..worker(&alice.id)
    };
    for w in [&live, &expired, &approved] {
        s.create_worker(w).await.expect("create");
    }

    assert_eq!(
        s.pending_workers(T0, None, 10).await.expect("pending"),
        vec![live]
    );
    assert!(s
        .pending_workers(T0 + 1, None, 10)
        .await
        .expect("pending")
        .is_empty());
}

pub async fn worker_transitions<S: Store>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let w = pending_worker("AAAA-AAAA", T0 + 1_000);
    s.create_worker(&w).await.expect("create");

    let refused = s
        .transition_worker(
            &w.id,
            WorkerStatus::Approved,
            WorkerStatus::Revoked,
            None,
            None,
        )
        .await
        .expect("wrong from");
    assert_eq!(refused, None);
    assert_eq!(
        s.worker(&w.id).await.expect("worker"),
        Some(w.clone()),
        "unchanged"
    );

    let approved = s
        .transition_worker(
            &w.id,
            WorkerStatus::Pending,
            WorkerStatus::Approved,
            Some(&alice.id),
            Some("renamed"),
        )
        .await
        .expect("approve")
        .expect("was pending");
    let expected = Worker {
        status: WorkerStatus::Approved,
        owner: Some(alice.id.clone()),
        name: "renamed".into(),
        pairing_code: None,
        pairing_expires_at: None,
        ..w.clone()
    };
    assert_eq!(approved, expected);
    assert_eq!(
        s.worker(&w.id).await.expect("worker"),
        Some(expected.clone())
    );
    assert_eq!(
        s.worker_by_pairing_code("AAAA-AAAA").await.expect("code"),
        None
    );

    // Without owner and name, both stay.
    let revoked = s
        .transition_worker(
            &w.id,
            WorkerStatus::Approved,
            WorkerStatus::Revoked,
            None,
            None,
        )
        .await
        .expect("revoke")
        .expect("was approved");
    assert_eq!(
        revoked,
        Worker {
            status: WorkerStatus::Revoked,
            ..expected
        }
    );

    let missing = s
        .transition_worker(
            &WorkerId::random(),
            WorkerStatus::Pending,
            WorkerStatus::Approved,
            None,
            None,
        )
        .await
        .expect("missing");
    assert_eq!(missing, None);
}

pub async fn concurrent_worker_transitions_have_one_winner<S: Store + Clone>(s: S) {
    let alice = user("alice");
    s.create_user(&alice).await.expect("create alice");
    let w = pending_worker("AAAA-AAAA", T0 + 1_000);
    s.create_worker(&w).await.expect("create");

    let won = one_wins(&s, 2, "transition", |s, i| {
        let (id, owner) = (w.id.clone(), alice.id.clone());
        let to = if i == 0 {
            WorkerStatus::Approved
        } else {
            WorkerStatus::Rejected
        };
        async move {
            s.transition_worker(&id, WorkerStatus::Pending, to, Some(&owner), None)
                .await
                .expect("transition")
        }
    })
    .await;
    let stored = s.worker(&w.id).await.expect("worker").expect("exists");
    assert_eq!(stored.status, won.status);
}

pub async fn worker_connection_and_presence<S: Store>(s: S) {
    let seed = seed(&s).await;
    let id = &seed.worker.id;
    let (old, new) = (ConnectionId::random(), ConnectionId::random());

    s.set_worker_connection(id, &old, T0 + 1)
        .await
        .expect("set old");
    s.set_worker_connection(id, &new, T0 + 2)
        .await
        .expect("set new");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.connection, Some(new.clone()));
    assert_eq!(w.last_seen, Some(T0 + 2));

    // The old connection's late $disconnect must not clear the new one.
    assert!(!s
        .clear_worker_connection(id, &old)
        .await
        .expect("clear old"));
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.connection, Some(new.clone()));

    assert!(s
        .clear_worker_connection(id, &new)
        .await
        .expect("clear new"));
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.connection, None);
    assert!(!s
        .clear_worker_connection(id, &new)
        .await
        .expect("clear twice"));

    s.touch_worker(id, T0 + 9).await.expect("touch");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(w.last_seen, Some(T0 + 9));
    assert_eq!(
        Worker {
            last_seen: None,
            ..w
        },
        seed.worker,
        "nothing else changed"
    );
}

pub async fn worker_profile_keeps_unsaid_fields<S: Store>(s: S) {
    let seed = seed(&s).await;
    let id = &seed.worker.id;

    let partial = WorkerProfile {
        name: Some("renamed".into()),
        ..WorkerProfile::default()
    };
    s.set_worker_profile(id, &partial)
        .await
        .expect("partial profile");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(
        w,
        Worker {
            name: "renamed".into(),
            ..seed.worker.clone()
        },
        "only the name changed; an empty model list keeps the stored one"
    );

    let other_model = ModelInfo {
        model_id: "gpt-5".into(),
        provider_id: "openai".into(),
        name: "GPT-5".into(),
        reasoning: None,
        context_limit: None,
    };
    let other_ref = ModelRef {
        provider_id: "openai".into(),
        model_id: "gpt-5".into(),
    };
    let full = WorkerProfile {
        machine: Some("server".into()),
        name: Some("ci".into()),
        workdir: Some("/srv/repo".into()),
        version: Some("0.2.0".into()),
        models: vec![other_model.clone(), model_info()],
        default_model: Some(other_ref.clone()),
    };
    s.set_worker_profile(id, &full).await.expect("full profile");
    let w = s.worker(id).await.expect("worker").expect("exists");
    assert_eq!(
        w,
        Worker {
            machine: "server".into(),
            name: "ci".into(),
            workdir: "/srv/repo".into(),
            version: Some("0.2.0".into()),
            models: vec![other_model, model_info()],
            default_model: Some(other_ref),
            ..seed.worker
        }
    );
}
