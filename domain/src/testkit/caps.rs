//! Contract checks of the per-principal counts behind the domain's caps:
//! open connections, live sessions and open messages.

use crate::ids::{MessageId, SessionId};
use crate::model::{Connection, MessageStatus, Principal, SessionStatus};
use crate::store::{Capped, Inserted, MessagePatch, SessionPatch, Store};

use super::{
    assert_existing, assert_new, message, pending_worker, race, seed, seed_session, session,
    user, user_connection, worker, worker_connection, T0,
};

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

/// At most `cap` sessions of a user are not ended or failed: one more is
/// refused and stored nowhere, a retry of a stored one still gets it, and
/// ending or failing one frees a slot. Sessions of others and sessions
/// stored closed count against nothing.
pub async fn live_sessions_are_capped_per_user<S: Store>(s: S) {
    const CAP: u32 = 2;
    let seed = seed(&s).await;
    let (uid, wid) = (&seed.user.id, &seed.worker.id);
    let bob = user("bob");
    s.create_user(&bob).await.expect("create bob");
    let bobs_worker = worker(&bob.id);
    s.create_worker(&bobs_worker).await.expect("create bob's worker");

    let first = assert_new(s.insert_session(&session(uid, wid, T0), CAP).await.expect("1"));
    let mut second = session(uid, wid, T0 + 1);
    second.status = SessionStatus::Ready;
    let second = assert_new(s.insert_session(&second, CAP).await.expect("2"));

    let third = session(uid, wid, T0 + 2);
    assert_eq!(s.insert_session(&third, CAP).await.expect("3"), Capped::Full);
    assert_eq!(s.session(&third.id).await.expect("get"), None, "a refused session is not stored");
    assert_eq!(s.sessions_of(uid, None, None, 10).await.expect("list").len(), 2);
    assert_eq!(s.starting_sessions(wid).await.expect("starting"), vec![first.clone()]);
    // A retry of a stored session is answered whatever the count.
    assert_existing(s.insert_session(&first, CAP).await.expect("retry"));
    // Another user has slots of their own.
    assert_new(s.insert_session(&session(&bob.id, &bobs_worker.id, T0), CAP).await.expect("bob"));
    // A session stored closed takes no slot.
    let mut closed = session(uid, wid, T0 + 3);
    closed.status = SessionStatus::Ended;
    assert_new(s.insert_session(&closed, CAP).await.expect("closed"));

    let none = SessionPatch::default();
    let end = |id: &SessionId, from: &'static [SessionStatus], to| {
        let (s, none, id) = (&s, &none, id.clone());
        async move { s.transition_session(&id, from, to, none, T0 + 10).await.expect("end") }
    };
    // Ending (from a set that also names closed statuses) frees a slot.
    let both = &[SessionStatus::Ready, SessionStatus::Ended];
    assert!(end(&second.id, both, SessionStatus::Failed).await.is_some());
    assert_new(s.insert_session(&third, CAP).await.expect("after an end"));
    assert_eq!(s.insert_session(&session(uid, wid, T0 + 4), CAP).await.expect("full"), Capped::Full);
    // A closed session closing otherwise frees nothing more.
    assert!(end(&second.id, both, SessionStatus::Ended).await.is_none());
    assert!(end(&second.id, &[SessionStatus::Failed], SessionStatus::Ended).await.is_some());
    assert_eq!(s.insert_session(&session(uid, wid, T0 + 5), CAP).await.expect("full"), Capped::Full);
    // A start that fails frees one too; moving between live states does not.
    assert!(end(&third.id, &[SessionStatus::Starting], SessionStatus::Ready).await.is_some());
    assert!(end(&third.id, &[SessionStatus::Ready], SessionStatus::Busy).await.is_some());
    assert_eq!(s.insert_session(&session(uid, wid, T0 + 6), CAP).await.expect("full"), Capped::Full);
    assert!(end(&first.id, &[SessionStatus::Starting], SessionStatus::Failed).await.is_some());
    assert_new(s.insert_session(&session(uid, wid, T0 + 7), CAP).await.expect("after a failure"));
}

/// Racing inserts of different sessions of one user: exactly the cap are
/// stored.
pub async fn concurrent_session_inserts_stay_within_the_cap<S: Store + Clone>(s: S) {
    const CAP: u32 = 3;
    let seed = seed(&s).await;
    let (uid, wid) = (seed.user.id.clone(), seed.worker.id.clone());
    let results = race(&s, 8, |s, i| {
        let sess = session(&uid, &wid, T0 + i as i64);
        async move { s.insert_session(&sess, CAP).await.expect("insert") }
    })
    .await;
    let stored = results
        .iter()
        .filter(|r| matches!(r, Capped::Done(Inserted::New(_))))
        .count();
    assert_eq!(stored, CAP as usize, "{results:?}");
    assert_eq!(
        s.sessions_of(&uid, None, None, 20).await.expect("list").len(),
        CAP as usize
    );
}

/// At most `cap` messages of a user (across sessions) are not final: one
/// more is refused and leaves no trace (its session's count stays), a retry
/// of a stored one still gets it, dispatching frees nothing, and a final
/// state (complete, failed, aborted) frees a slot.
pub async fn open_messages_are_capped_per_user<S: Store>(s: S) {
    const CAP: u32 = 2;
    let seed = seed(&s).await;
    let a = seed_session(&s, &seed, T0).await;
    let b = seed_session(&s, &seed, T0 + 1).await;

    let first = assert_new(s.insert_message(&message(&a, "one"), CAP).await.expect("1"));
    let second = assert_new(s.insert_message(&message(&b, "two"), CAP).await.expect("2"));
    let refused = message(&a, "three");
    assert_eq!(s.insert_message(&refused, CAP).await.expect("3"), Capped::Full);
    assert_eq!(s.message(&refused.id).await.expect("get"), None, "a refused message is not stored");
    let after = s.session(&a.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, 1, "a refused message takes no number");
    assert_eq!(s.open_messages(&seed.worker.id).await.expect("open").len(), 2);
    assert_existing(s.insert_message(&first, CAP).await.expect("retry"));
    // A message stored final takes no slot.
    let mut done = message(&b, "already answered");
    done.status = MessageStatus::Complete;
    done.chunk_count = Some(0);
    assert_new(s.insert_message(&done, CAP).await.expect("final"));

    let none = MessagePatch::default();
    let step = |id: &MessageId, from: &'static [MessageStatus], to| {
        let (s, none, id) = (&s, &none, id.clone());
        async move { s.transition_message(&id, from, to, none, T0 + 10).await.expect("step") }
    };
    // Dispatched and streaming still wait for their answer.
    assert!(step(&first.id, &[MessageStatus::Queued], MessageStatus::Dispatched).await.is_some());
    assert!(step(&first.id, &[MessageStatus::Dispatched], MessageStatus::Streaming).await.is_some());
    assert_eq!(s.insert_message(&refused, CAP).await.expect("full"), Capped::Full);
    // An answer that completes frees a slot.
    assert!(step(&first.id, &[MessageStatus::Streaming], MessageStatus::Complete).await.is_some());
    assert_new(s.insert_message(&refused, CAP).await.expect("after a completion"));
    assert_eq!(s.insert_message(&message(&a, "four"), CAP).await.expect("full"), Capped::Full);
    // So does an abort (from a set that also names final statuses); a final
    // message moving on frees nothing more.
    let either = &[MessageStatus::Queued, MessageStatus::Failed];
    assert!(step(&second.id, either, MessageStatus::Aborted).await.is_some());
    assert!(step(&second.id, either, MessageStatus::Aborted).await.is_none());
    assert!(step(&second.id, &[MessageStatus::Aborted], MessageStatus::Failed).await.is_some());
    assert_new(s.insert_message(&message(&a, "five"), CAP).await.expect("after an abort"));
    assert_eq!(s.insert_message(&message(&b, "six"), CAP).await.expect("full"), Capped::Full);
}

/// Racing inserts of different messages of one user: exactly the cap are
/// stored, numbered without a gap.
pub async fn concurrent_message_inserts_stay_within_the_cap<S: Store + Clone>(s: S) {
    const CAP: u32 = 2;
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let results = race(&s, 6, |s, i| {
        let m = message(&sess, &format!("message {i}"));
        async move { s.insert_message(&m, CAP).await.expect("insert") }
    })
    .await;
    let mut numbers: Vec<u32> = results
        .iter()
        .filter_map(|r| match r {
            Capped::Done(Inserted::New(m)) => Some(m.number),
            _ => None,
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![0, 1], "{results:?}");
    let after = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, CAP);
}
