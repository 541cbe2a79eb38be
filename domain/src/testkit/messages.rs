//! Messages: numbering, idempotent inserts, paging, open ones, transitions.

use crate::ids::{MessageId, SessionId};
use crate::model::{Message, MessageStatus};
use crate::protocol::ModelRef;
use crate::store::{Capped, Inserted, MessagePatch, Store, StoreError};

use super::{
    assert_existing, assert_new, message, one_wins, race, seed, seed_message, seed_session,
    session, sorted, worker, NO_CAP, T0,
};

/// A message whose session was never stored is refused (`Conflict`) and
/// leaves nothing behind.
pub async fn a_message_needs_its_session<S: Store>(s: S) {
    let seed = seed(&s).await;
    let unsaved = session(&seed.user.id, &seed.worker.id, T0);
    let result = s.insert_message(&message(&unsaved, "orphan"), NO_CAP).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert!(s
        .messages_of(&unsaved.id, 0, 10)
        .await
        .expect("list")
        .is_empty());
}

pub async fn message_numbering_and_idempotent_insert<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let other = seed_session(&s, &seed, T0 + 1).await;

    let mut stored = Vec::new();
    for text in ["one", "two", "three"] {
        // Whatever number the caller put in, the store assigns its own.
        let m = Message {
            number: 99,
            ..message(&sess, text)
        };
        let got = assert_new(s.insert_message(&m, NO_CAP).await.expect("insert"));
        assert_eq!(
            got,
            Message {
                number: got.number,
                ..m
            }
        );
        stored.push(got);
    }
    let numbers: Vec<u32> = stored.iter().map(|m| m.number).collect();
    assert_eq!(numbers, vec![0, 1, 2]);
    for m in &stored {
        assert_eq!(s.message(&m.id).await.expect("get"), Some(m.clone()));
    }
    // A message's own model is kept with it.
    let chosen = Message {
        model: Some(ModelRef {
            provider_id: "fake".into(),
            model_id: "other-model".into(),
        }),
        ..message(&sess, "four")
    };
    let got = assert_new(s.insert_message(&chosen, NO_CAP).await.expect("insert"));
    assert_eq!(got.model, chosen.model);
    assert_eq!(s.message(&got.id).await.expect("get"), Some(got.clone()));
    stored.push(got);
    assert_eq!(
        assert_new(
            s.insert_message(&message(&other, "elsewhere"), NO_CAP)
                .await
                .expect("insert")
        )
        .number,
        0,
        "numbering is per session"
    );

    let retry = Message {
        text: "changed".into(),
        ..stored[0].clone()
    };
    assert_eq!(
        assert_existing(
            s.insert_message(&retry, NO_CAP)
                .await
                .expect("insert again")
        ),
        stored[0]
    );
    let after = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, 4, "a retried insert does not count");
    assert_eq!(s.messages_of(&sess.id, 0, 10).await.expect("list"), stored);
    assert_eq!(
        s.message(&MessageId::random()).await.expect("missing"),
        None
    );
}

pub async fn concurrent_message_inserts_number_contiguously<S: Store + Clone>(s: S) {
    const N: usize = 20;
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;

    let results = race(&s, N, |s, i| {
        let m = message(&sess, &format!("message {i}"));
        async move { assert_new(s.insert_message(&m, NO_CAP).await.expect("insert")) }
    })
    .await;
    let numbers = sorted(results.iter().map(|m| m.number).collect());
    assert_eq!(
        numbers,
        (0..N as u32).collect::<Vec<_>>(),
        "distinct and contiguous"
    );

    let after = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, N as u32);
    let listed = s.messages_of(&sess.id, 0, 100).await.expect("list");
    assert_eq!(
        listed.iter().map(|m| m.number).collect::<Vec<_>>(),
        (0..N as u32).collect::<Vec<_>>()
    );
    for m in results {
        assert_eq!(listed[m.number as usize], m);
    }
}

pub async fn concurrent_inserts_of_one_message_store_it_once<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = message(&sess, "retried");

    let results = race(&s, 5, |s, _| {
        let m = m.clone();
        async move { s.insert_message(&m, NO_CAP).await.expect("insert") }
    })
    .await;
    let new = results
        .iter()
        .filter(|r| matches!(r, Capped::Done(Inserted::New(_))))
        .count();
    assert_eq!(new, 1, "stored once: {results:?}");
    for r in results {
        let Capped::Done(Inserted::New(got) | Inserted::Existing(got)) = r else {
            panic!("no cap, yet refused");
        };
        assert_eq!(got.number, 0);
    }
    let after = s.session(&sess.id).await.expect("get").expect("exists");
    assert_eq!(after.message_count, 1);
}

pub async fn messages_of_paging<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    for i in 0..5 {
        seed_message(&s, &sess, &format!("m{i}")).await;
    }
    let numbers = |v: Vec<Message>| v.into_iter().map(|m| m.number).collect::<Vec<_>>();

    assert_eq!(
        numbers(s.messages_of(&sess.id, 0, 10).await.expect("all")),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        numbers(s.messages_of(&sess.id, 2, 2).await.expect("page")),
        vec![2, 3]
    );
    assert_eq!(
        numbers(s.messages_of(&sess.id, 4, 10).await.expect("tail")),
        vec![4]
    );
    assert!(s
        .messages_of(&sess.id, 5, 10)
        .await
        .expect("past end")
        .is_empty());
    assert!(s
        .messages_of(&SessionId::random(), 0, 10)
        .await
        .expect("none")
        .is_empty());
}

pub async fn open_messages_order<S: Store>(s: S) {
    let seed = seed(&s).await;
    let other = worker(&seed.user.id);
    s.create_worker(&other).await.expect("create worker");

    // `newer` is stored first, so only the creation times give the order.
    let newer = seed_session(&s, &seed, T0 + 10).await;
    let older = seed_session(&s, &seed, T0 + 5).await;
    let elsewhere = session(&seed.user.id, &other.id, T0);
    s.insert_session(&elsewhere, NO_CAP).await.expect("insert");

    let n0 = seed_message(&s, &newer, "n0").await;
    let n1 = seed_message(&s, &newer, "n1").await;
    let o0 = seed_message(&s, &older, "o0").await;
    let o1 = seed_message(&s, &older, "o1").await;
    let o2 = seed_message(&s, &older, "o2").await;
    let o3 = seed_message(&s, &older, "o3").await;
    seed_message(&s, &elsewhere, "e0").await;

    let to = |m: &Message, status: MessageStatus| {
        let (s, id) = (&s, m.id.clone());
        async move {
            s.transition_message(
                &id,
                &[MessageStatus::Queued],
                status,
                &MessagePatch::default(),
                T0,
            )
            .await
            .expect("transition")
            .expect("was queued")
        }
    };
    to(&n1, MessageStatus::Complete).await;
    let o0 = to(&o0, MessageStatus::Dispatched).await;
    let o1 = to(&o1, MessageStatus::Streaming).await;
    to(&o2, MessageStatus::Failed).await;
    to(&o3, MessageStatus::Aborted).await;

    assert_eq!(
        s.open_messages(&seed.worker.id).await.expect("open"),
        vec![o0, o1, n0],
        "not final; by session creation, then number"
    );
}

pub async fn message_transitions<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let none = MessagePatch::default();

    let refused = s
        .transition_message(
            &m.id,
            &[MessageStatus::Dispatched],
            MessageStatus::Streaming,
            &none,
            T0 + 1,
        )
        .await
        .expect("refused");
    assert_eq!(refused, None);
    assert_eq!(
        s.message(&m.id).await.expect("get"),
        Some(m.clone()),
        "unchanged"
    );

    let dispatched = s
        .transition_message(
            &m.id,
            &[MessageStatus::Queued],
            MessageStatus::Dispatched,
            &none,
            T0 + 1,
        )
        .await
        .expect("dispatch")
        .expect("was queued");
    assert_eq!(
        dispatched,
        Message {
            status: MessageStatus::Dispatched,
            updated_at: T0 + 1,
            ..m.clone()
        }
    );

    let streaming = s
        .transition_message(
            &m.id,
            &[MessageStatus::Queued, MessageStatus::Dispatched],
            MessageStatus::Streaming,
            &none,
            T0 + 2,
        )
        .await
        .expect("stream")
        .expect("was dispatched");
    assert_eq!(streaming.status, MessageStatus::Streaming);

    let patch = MessagePatch {
        chunk_count: Some(3),
        error: None,
    };
    let complete = s
        .transition_message(
            &m.id,
            &[MessageStatus::Streaming],
            MessageStatus::Complete,
            &patch,
            T0 + 3,
        )
        .await
        .expect("complete")
        .expect("was streaming");
    let expected = Message {
        status: MessageStatus::Complete,
        chunk_count: Some(3),
        updated_at: T0 + 3,
        ..m.clone()
    };
    assert_eq!(complete, expected);
    assert_eq!(s.message(&m.id).await.expect("get"), Some(expected));

    let failed_patch = MessagePatch {
        chunk_count: Some(0),
        error: Some("worker lost".into()),
    };
    let other = seed_message(&s, &sess, "second").await;
    let failed = s
        .transition_message(
            &other.id,
            &[MessageStatus::Queued],
            MessageStatus::Failed,
            &failed_patch,
            T0 + 4,
        )
        .await
        .expect("fail")
        .expect("was queued");
    assert_eq!(failed.error.as_deref(), Some("worker lost"));
    assert_eq!(failed.chunk_count, Some(0));
    assert_eq!(
        failed,
        Message {
            status: MessageStatus::Failed,
            chunk_count: Some(0),
            error: Some("worker lost".into()),
            updated_at: T0 + 4,
            ..other.clone()
        }
    );

    let missing = s
        .transition_message(
            &MessageId::random(),
            &[MessageStatus::Queued],
            MessageStatus::Dispatched,
            &none,
            T0,
        )
        .await
        .expect("missing");
    assert_eq!(missing, None);
}

pub async fn concurrent_message_transitions_have_one_winner<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;

    let won = one_wins(&s, 2, "transition", |s, i| {
        let id = m.id.clone();
        let to = if i == 0 {
            MessageStatus::Complete
        } else {
            MessageStatus::Aborted
        };
        async move {
            s.transition_message(
                &id,
                &[MessageStatus::Queued],
                to,
                &MessagePatch::default(),
                T0 + 1,
            )
            .await
            .expect("transition")
        }
    })
    .await;
    assert_eq!(s.message(&m.id).await.expect("get"), Some(won));
}
