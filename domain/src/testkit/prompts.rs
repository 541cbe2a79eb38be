//! Prompts: stored once, answered once, delivered.

use crate::ids::PromptId;
use crate::model::{Prompt, PromptKind};
use crate::protocol::{PermissionReply, PromptAnswer};
use crate::store::Store;

use super::{
    assert_existing, assert_new, one_wins, permission_answer, prompt, seed, seed_message,
    seed_session, session, worker, NO_CAP, T0,
};

pub async fn prompts_idempotent_and_answered_once<S: Store>(s: S) {
    let seed = seed(&s).await;
    let other_worker = worker(&seed.user.id);
    s.create_worker(&other_worker).await.expect("create worker");
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let elsewhere_sess = session(&seed.user.id, &other_worker.id, T0);
    s.insert_session(&elsewhere_sess, NO_CAP)
        .await
        .expect("insert");
    let elsewhere_msg = seed_message(&s, &elsewhere_sess, "hi").await;

    let asked = prompt(&m);
    assert_eq!(
        assert_new(s.insert_prompt(&asked).await.expect("insert")),
        asked
    );
    let retry = Prompt {
        kind: PromptKind::Question,
        ..asked.clone()
    };
    assert_eq!(
        assert_existing(s.insert_prompt(&retry).await.expect("insert again")),
        asked
    );
    assert_eq!(s.prompt(&asked.id).await.expect("get"), Some(asked.clone()));
    assert_eq!(s.prompt(&PromptId::random()).await.expect("missing"), None);

    let once = permission_answer(PermissionReply::Once);
    let answered = s
        .answer_prompt(&asked.id, &once)
        .await
        .expect("answer")
        .expect("was unanswered");
    let expected = Prompt {
        answer: Some(once.clone()),
        ..asked.clone()
    };
    assert_eq!(answered, expected);
    assert_eq!(
        s.answer_prompt(&asked.id, &permission_answer(PermissionReply::Reject))
            .await
            .expect("answer twice"),
        None
    );
    assert_eq!(
        s.prompt(&asked.id).await.expect("get"),
        Some(expected.clone())
    );
    assert_eq!(
        s.answer_prompt(&PromptId::random(), &once)
            .await
            .expect("answer missing"),
        None
    );

    // Only answered, undelivered prompts of this worker are pending delivery.
    let unanswered = prompt(&m);
    let question = Prompt {
        kind: PromptKind::Question,
        answer: Some(PromptAnswer::Question {
            answers: vec![vec!["yes".into()], vec![]],
        }),
        created_at: T0 + 1,
        ..prompt(&m)
    };
    let delivered = Prompt {
        answer: Some(once.clone()),
        delivered: true,
        ..prompt(&m)
    };
    let other = Prompt {
        answer: Some(PromptAnswer::QuestionRejected),
        ..prompt(&elsewhere_msg)
    };
    for p in [&unanswered, &question, &delivered, &other] {
        assert_new(s.insert_prompt(p).await.expect("insert"));
    }
    assert_eq!(
        s.prompt(&question.id).await.expect("get"),
        Some(question.clone())
    );

    assert_eq!(
        sorted_prompts(
            s.undelivered_prompts(&seed.worker.id)
                .await
                .expect("undelivered")
        ),
        sorted_prompts(vec![expected, question.clone()])
    );
    s.set_prompt_delivered(&asked.id).await.expect("deliver");
    assert!(
        s.prompt(&asked.id)
            .await
            .expect("get")
            .expect("exists")
            .delivered
    );
    assert_eq!(
        s.undelivered_prompts(&seed.worker.id)
            .await
            .expect("undelivered"),
        vec![question]
    );
    assert_eq!(
        s.undelivered_prompts(&other_worker.id)
            .await
            .expect("other worker"),
        vec![other]
    );
}

fn sorted_prompts(mut v: Vec<Prompt>) -> Vec<Prompt> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

pub async fn concurrent_prompt_answers_have_one_winner<S: Store + Clone>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let asked = prompt(&m);
    s.insert_prompt(&asked).await.expect("insert");

    let won = one_wins(&s, 2, "answer", |s, i| {
        let id = asked.id.clone();
        let reply = if i == 0 {
            PermissionReply::Always
        } else {
            PermissionReply::Reject
        };
        async move {
            s.answer_prompt(&id, &permission_answer(reply))
                .await
                .expect("answer")
        }
    })
    .await;
    assert_eq!(s.prompt(&asked.id).await.expect("get"), Some(won));
}
