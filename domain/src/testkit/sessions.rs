//! Sessions: idempotent inserts, listing and paging, transitions.

use crate::ids::{SessionId, WorkerId};
use crate::model::{Millis, Session, SessionStatus};
use crate::store::{SessionPatch, Store};

use super::{
    assert_existing, assert_new, one_wins, seed, seed_session, session, sorted, user, worker,
    NO_CAP, T0,
};

pub async fn session_round_trip_and_idempotent_insert<S: Store>(s: S) {
    let seed = seed(&s).await;
    let original = Session {
        agent_session_id: Some("ses_agent".into()),
        status: SessionStatus::Ready,
        ..session(&seed.user.id, &seed.worker.id, T0)
    };
    assert_eq!(
        assert_new(s.insert_session(&original, NO_CAP).await.expect("insert")),
        original
    );
    assert_eq!(
        s.session(&original.id).await.expect("get"),
        Some(original.clone())
    );

    let retry = Session {
        title: "another title".into(),
        status: SessionStatus::Starting,
        ..original.clone()
    };
    assert_eq!(
        assert_existing(
            s.insert_session(&retry, NO_CAP)
                .await
                .expect("insert again")
        ),
        original
    );
    assert_eq!(
        s.session(&original.id).await.expect("get"),
        Some(original.clone())
    );
    assert_eq!(
        s.sessions_of(&seed.user.id, None, None, 10)
            .await
            .expect("list"),
        vec![original],
        "stored once"
    );
    assert_eq!(
        s.session(&SessionId::random()).await.expect("missing"),
        None
    );
}

pub async fn sessions_of_order_filter_and_paging<S: Store>(s: S) {
    let seed = seed(&s).await;
    let uid = &seed.user.id;
    let second_worker = worker(uid);
    s.create_worker(&second_worker)
        .await
        .expect("create worker");
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let bobs_worker = worker(&bob.id);
    s.create_worker(&bobs_worker).await.expect("create worker");

    // Inserted out of order; times 1..=5, the odd ones on the second worker.
    let mut made = Vec::new();
    for t in [3, 1, 5, 2, 4] {
        let w = if t % 2 == 1 {
            &second_worker.id
        } else {
            &seed.worker.id
        };
        let sess = session(uid, w, T0 + t);
        s.insert_session(&sess, NO_CAP).await.expect("insert");
        made.push(sess);
    }
    let bobs = session(&bob.id, &bobs_worker.id, T0 + 3);
    s.insert_session(&bobs, NO_CAP).await.expect("insert");

    let times = |v: Vec<Session>| v.into_iter().map(|x| x.created_at - T0).collect::<Vec<_>>();
    let list = |w: Option<WorkerId>, before: Option<Millis>, limit: u32| {
        let s = &s;
        async move {
            s.sessions_of(uid, w.as_ref(), before, limit)
                .await
                .expect("sessions_of")
        }
    };

    let all = list(None, None, 10).await;
    assert!(all.iter().all(|x| &x.owner == uid), "only the owner's");
    assert_eq!(times(all), vec![5, 4, 3, 2, 1], "newest first");
    assert_eq!(times(list(None, None, 2).await), vec![5, 4], "limit");
    assert_eq!(
        times(list(None, Some(T0 + 4), 2).await),
        vec![3, 2],
        "before is strict"
    );
    assert_eq!(
        times(list(None, Some(T0 + 1), 10).await),
        Vec::<Millis>::new()
    );
    assert_eq!(
        times(list(Some(second_worker.id.clone()), None, 10).await),
        vec![5, 3, 1],
        "one worker"
    );
    assert_eq!(
        times(list(Some(second_worker.id.clone()), Some(T0 + 5), 1).await),
        vec![3]
    );
    assert_eq!(
        times(list(Some(seed.worker.id.clone()), None, 10).await),
        vec![4, 2]
    );
    assert!(list(Some(bobs_worker.id.clone()), None, 10)
        .await
        .is_empty());
    assert_eq!(
        s.sessions_of(&bob.id, None, None, 10).await.expect("bob"),
        vec![bobs]
    );

    // Sessions created in the same millisecond are all listed.
    let twin_a = session(&bob.id, &bobs_worker.id, T0 + 9);
    let twin_b = session(&bob.id, &bobs_worker.id, T0 + 9);
    s.insert_session(&twin_a, NO_CAP).await.expect("insert");
    s.insert_session(&twin_b, NO_CAP).await.expect("insert");
    let ids: Vec<_> = s
        .sessions_of(&bob.id, None, None, 2)
        .await
        .expect("bob")
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(sorted(ids), sorted(vec![twin_a.id, twin_b.id]));
}

pub async fn starting_sessions<S: Store>(s: S) {
    let seed = seed(&s).await;
    let other = worker(&seed.user.id);
    s.create_worker(&other).await.expect("create worker");
    let (uid, wid) = (&seed.user.id, &seed.worker.id);

    let later = session(uid, wid, T0 + 2);
    let earlier = session(uid, wid, T0 + 1);
    let ready = Session {
        status: SessionStatus::Ready,
        ..session(uid, wid, T0)
    };
    let elsewhere = session(uid, &other.id, T0);
    for sess in [&later, &earlier, &ready, &elsewhere] {
        s.insert_session(sess, NO_CAP).await.expect("insert");
    }

    assert_eq!(
        s.starting_sessions(wid).await.expect("starting"),
        vec![earlier.clone(), later],
        "oldest first"
    );
    s.transition_session(
        &earlier.id,
        &[SessionStatus::Starting],
        SessionStatus::Failed,
        &SessionPatch::default(),
        T0 + 3,
    )
    .await
    .expect("fail");
    assert_eq!(s.starting_sessions(wid).await.expect("starting").len(), 1);
    assert_eq!(
        s.starting_sessions(&other.id).await.expect("other"),
        vec![elsewhere]
    );
}

pub async fn session_transitions<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let id = &sess.id;
    let patch = SessionPatch {
        agent_session_id: Some("ses_agent".into()),
        error: None,
    };

    let ready = s
        .transition_session(
            id,
            &[SessionStatus::Starting],
            SessionStatus::Ready,
            &patch,
            T0 + 1,
        )
        .await
        .expect("ready")
        .expect("was starting");
    let expected = Session {
        status: SessionStatus::Ready,
        agent_session_id: Some("ses_agent".into()),
        updated_at: T0 + 1,
        ..sess.clone()
    };
    assert_eq!(ready, expected);
    assert_eq!(s.session(id).await.expect("get"), Some(expected.clone()));

    let refused = s
        .transition_session(
            id,
            &[SessionStatus::Starting],
            SessionStatus::Failed,
            &patch,
            T0 + 2,
        )
        .await
        .expect("refused");
    assert_eq!(refused, None);
    assert_eq!(
        s.session(id).await.expect("get"),
        Some(expected.clone()),
        "unchanged"
    );
    let nothing = s
        .transition_session(
            id,
            &[],
            SessionStatus::Ended,
            &SessionPatch::default(),
            T0 + 2,
        )
        .await
        .expect("empty from-set");
    assert_eq!(nothing, None);

    // Any status of the from-set will do; an empty patch keeps the fields.
    let busy = s
        .transition_session(
            id,
            &[SessionStatus::Busy, SessionStatus::Ready],
            SessionStatus::Busy,
            &SessionPatch::default(),
            T0 + 3,
        )
        .await
        .expect("busy")
        .expect("was ready");
    assert_eq!(
        busy,
        Session {
            status: SessionStatus::Busy,
            updated_at: T0 + 3,
            ..expected.clone()
        }
    );

    let failed = s
        .transition_session(
            id,
            &[SessionStatus::Busy],
            SessionStatus::Failed,
            &SessionPatch {
                agent_session_id: None,
                error: Some("agent crashed".into()),
            },
            T0 + 4,
        )
        .await
        .expect("failed")
        .expect("was busy");
    assert_eq!(
        failed,
        Session {
            status: SessionStatus::Failed,
            error: Some("agent crashed".into()),
            updated_at: T0 + 4,
            ..expected
        }
    );
    let missing = s
        .transition_session(
            &SessionId::random(),
            &[SessionStatus::Starting],
            SessionStatus::Ready,
            &patch,
            T0,
        )
        .await
        .expect("missing");
    assert_eq!(missing, None);
}

pub async fn concurrent_session_transitions_have_one_winner<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;

    let won = one_wins(&s, 2, "transition", |s, i| {
        let id = sess.id.clone();
        let to = if i == 0 {
            SessionStatus::Ready
        } else {
            SessionStatus::Failed
        };
        async move {
            s.transition_session(
                &id,
                &[SessionStatus::Starting],
                to,
                &SessionPatch::default(),
                T0 + 1,
            )
            .await
            .expect("transition")
        }
    })
    .await;
    let stored = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(stored, won);
}
