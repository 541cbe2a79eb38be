//! Sessions, messages, chunks, prompts and history: the chat's rules.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use tether_domain::ids::MessageId;
use tether_domain::protocol::{ChunkView, ServerFrame};
use tether_domain::ErrorCode;
use tether_testsupport::helpers::answer_text;

use crate::harness::*;

#[tokio::test]
async fn the_chat_flow_streams_to_watchers_in_order() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::MessageDispatch { message_id, .. } if message_id.as_str() == mid)));
    h.ok(&wconn, json!({"action": "message_started", "message_id": mid})).await;
    h.push.take(&owner);
    for (seq, d) in ["Hel", "lo ", "there"].iter().enumerate() {
        let ack = h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(seq as u32, d)]})).await;
        assert_eq!(ack["stored"], json!([seq]));
    }
    let pushed: Vec<u32> = h
        .push
        .take(&owner)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Chunks { chunks, .. } => Some(chunks.into_iter().map(|c| c.seq).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(pushed, vec![0, 1, 2]);
    // A completion carries no text: the host has the chunks.
    let with_text = json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 3, "final_text": "Hello there"});
    match h.send(&wconn, with_text).await {
        Err((ErrorCode::BadRequest, why)) => assert!(why.contains("final_text"), "{why}"),
        other => panic!("a completion with text must be a bad_request, got {other:?}"),
    }
    assert_eq!(h.history(&owner, &sid).await["messages"][0]["status"], "streaming");
    let done = h
        .ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 3}))
        .await;
    assert_eq!(done["message"]["status"], "complete");
    let hist = h.history(&owner, &sid).await;
    assert_eq!(seqs(&hist), vec![0, 1, 2]);
    let chunks: Vec<ChunkView> = serde_json::from_value(hist["chunks"].clone()).expect("chunk views");
    let mid = MessageId::parse(mid.as_str()).expect("message id");
    assert_eq!(answer_text(&chunks, &mid), "Hello there");
    assert!(hist["messages"][0].get("final_text").is_none(), "{}", hist["messages"][0]);
    assert_eq!(hist["session"]["status"], "ready");
}

#[tokio::test]
async fn duplicates_and_reordering_store_each_chunk_once() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    // seq 2 before 0 and 1, all before message_started.
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(2, "c")]})).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a")]})).await;
    let hist = h.history(&owner, &sid).await;
    assert_eq!(seqs(&hist), vec![0, 2], "a reader sees the gap at 1");
    assert_eq!(hist["messages"][0]["status"], "streaming");
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(1, "b")]})).await;
    let ack = h
        .ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a"), text_chunk(1, "b"), text_chunk(2, "c")]}))
        .await;
    assert_eq!(ack["duplicate"], json!([0, 1, 2]));
    assert_eq!(ack["stored"], json!([]));
    assert_eq!(seqs(&h.history(&owner, &sid).await), vec![0, 1, 2]);
}

#[tokio::test]
async fn completion_rules() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a")]})).await;
    // The completion may overtake its last chunk.
    let complete = json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 2});
    h.ok(&wconn, complete.clone()).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(1, "b")]})).await;
    assert_eq!(
        h.code(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(2, "c")]})).await,
        ErrorCode::MessageFinal
    );
    h.ok(&wconn, complete).await;
    assert_eq!(
        h.code(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "failed", "chunk_count": 2})).await,
        ErrorCode::AlreadyComplete
    );
    let hist = h.history(&owner, &sid).await;
    assert_eq!(seqs(&hist), vec![0, 1]);
    assert_eq!(hist["messages"][0]["status"], "complete");
}

#[tokio::test]
async fn offline_queue_is_dispatched_on_hello() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, credential) = h.worker(&owner).await;
    let (sid, _) = h.chat(&owner, &wid, &wconn).await;
    h.domain.disconnect(&wconn, h.now()).await;
    let m = h.ok(&owner, json!({"action": "message_send", "session_id": sid, "message_id": "msg_q", "text": "later"})).await;
    assert_eq!(m["message"]["status"], "queued");
    let again = h.connect_worker(&credential).await.expect("reconnects");
    h.ok(&again, json!({"action": "worker_hello", "active_messages": []})).await;
    assert!(h
        .push
        .take(&again)
        .iter()
        .any(|f| matches!(f, ServerFrame::MessageDispatch { message_id, .. } if message_id.as_str() == "msg_q")));
}

#[tokio::test]
async fn a_worker_that_lost_a_message_fails_it_on_hello() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, credential) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "message_started", "message_id": mid})).await;
    h.domain.disconnect(&wconn, h.now()).await;
    let again = h.connect_worker(&credential).await.expect("reconnects");
    h.ok(&again, json!({"action": "worker_hello", "active_messages": []})).await;
    let hist = h.history(&owner, &sid).await;
    assert_eq!(hist["messages"][0]["status"], "failed");
    assert_eq!(hist["session"]["status"], "ready", "the session stays usable");
}

#[tokio::test]
async fn other_users_see_nothing() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let bob = h.user("bob").await;
    let (wid, wconn, _) = h.worker(&ada).await;
    let (sid, mid) = h.chat(&ada, &wid, &wconn).await;
    for body in [
        json!({"action": "session_watch", "session_id": sid}),
        json!({"action": "session_history", "session_id": sid}),
        json!({"action": "session_end", "session_id": sid}),
        json!({"action": "message_send", "session_id": sid, "message_id": "msg_b", "text": "x"}),
        json!({"action": "message_abort", "message_id": mid}),
        json!({"action": "worker_revoke", "worker_id": wid}),
        json!({"action": "session_start", "session_id": "ses_b", "worker_id": wid, "model": {"provider_id": "p", "model_id": "m"}}),
        json!({"action": "session_list", "worker_id": wid}),
    ] {
        assert_eq!(h.code(&bob, body.clone()).await, ErrorCode::NotFound, "{body}");
    }
    assert_eq!(h.ok(&bob, json!({"action": "machine_list"})).await["machines"], json!([]));
    assert_eq!(h.ok(&bob, json!({"action": "session_list"})).await["sessions"], json!([]));
    let hist = h.history(&ada, &sid).await;
    assert_eq!(hist["session"]["status"], "ready");
    assert_eq!(hist["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn abort_and_end() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "message_started", "message_id": mid})).await;
    h.push.take(&wconn);
    h.ok(&owner, json!({"action": "message_abort", "message_id": mid})).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::MessageAbort { .. })));
    h.ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "aborted", "chunk_count": 0})).await;
    h.ok(&owner, json!({"action": "session_end", "session_id": sid})).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::SessionEnd { .. })));
    assert_eq!(
        h.code(&owner, json!({"action": "message_send", "session_id": sid, "message_id": "msg_late", "text": "x"})).await,
        ErrorCode::SessionClosed
    );
}

#[tokio::test]
async fn permission_prompts_reach_the_worker_once() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (_, mid) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [
        {"seq": 0, "kind": "permission_request", "prompt_id": "per_1", "permission": "bash", "patterns": ["ls"]}
    ]}))
    .await;
    assert_eq!(
        h.code(&owner, json!({"action": "prompt_reply", "prompt_id": "per_1", "answer": {"kind": "question", "answers": []}})).await,
        ErrorCode::BadRequest
    );
    h.push.take(&wconn);
    h.ok(&owner, json!({"action": "prompt_reply", "prompt_id": "per_1", "answer": {"kind": "permission", "reply": "once"}})).await;
    assert!(h.push.take(&wconn).iter().any(|f| matches!(f, ServerFrame::PromptAnswer { .. })));
    assert_eq!(
        h.code(&owner, json!({"action": "prompt_reply", "prompt_id": "per_1", "answer": {"kind": "permission", "reply": "reject"}})).await,
        ErrorCode::AlreadyAnswered
    );
    // A prompt left open by an answer that ended can no longer be answered.
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [
        {"seq": 1, "kind": "permission_request", "prompt_id": "per_2", "permission": "bash", "patterns": ["rm"]}
    ]}))
    .await;
    h.ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "aborted", "chunk_count": 2})).await;
    assert_eq!(
        h.code(&owner, json!({"action": "prompt_reply", "prompt_id": "per_2", "answer": {"kind": "permission", "reply": "once"}})).await,
        ErrorCode::MessageFinal
    );
}

#[tokio::test]
async fn gone_watchers_are_dropped_and_do_not_fail_the_sender() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (_, mid) = h.chat(&owner, &wid, &wconn).await;
    h.push.set_gone(&owner);
    // A connection that answers gone while it may still be connecting
    // (API Gateway cannot post during `$connect`) keeps its record...
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(0, "a")]})).await;
    assert!(h.send(&owner, json!({"action": "ping"})).await.is_ok(), "a young connection is kept");
    // ...an older one is dropped.
    h.advance(31_000);
    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(1, "b")]})).await;
    assert_eq!(h.code(&owner, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "its record is gone");
}

#[tokio::test]
async fn history_pages_resume_from_a_cursor() {
    let h = Harness::new();
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
    // About 200 KB of answer: more than one page.
    let big = "x".repeat(8000);
    for seq in 0..25u32 {
        h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(seq, &big)]})).await;
    }
    let mut cursor = Value::Null;
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = h.ok(&owner, json!({"action": "session_history", "session_id": sid, "after": cursor})).await;
        assert!(page.to_string().len() < 128 * 1024, "a page fits API Gateway's message limit");
        all.extend(seqs(&page));
        pages += 1;
        if page["next"].is_null() {
            break;
        }
        cursor = page["next"].clone();
    }
    assert!(pages > 1);
    assert_eq!(all, (0..25).collect::<Vec<u64>>());
    let page = h.ok(&owner, json!({"action": "session_history", "session_id": sid, "after": {"message": 0, "seq": 20}})).await;
    assert_eq!(seqs(&page), (20..25).collect::<Vec<u64>>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Chunk frames in any order, with any retries, handled concurrently:
    /// every seq stored once, history in order.
    #[test]
    fn any_order_any_retries_store_each_seq_once(
        order in Just((0u32..12).collect::<Vec<_>>()).prop_shuffle(),
        retries in proptest::collection::vec(0u32..12, 0..12),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let h = Arc::new(Harness::new());
            let owner = h.user("ada").await;
            let (wid, wconn, _) = h.worker(&owner).await;
            let (sid, mid) = h.chat(&owner, &wid, &wconn).await;
            let mut tasks = Vec::new();
            for seq in order.into_iter().chain(retries) {
                let (h, wconn, mid) = (h.clone(), wconn.clone(), mid.clone());
                tasks.push(tokio::spawn(async move {
                    h.ok(&wconn, json!({"action": "chunks", "message_id": mid, "chunks": [text_chunk(seq, "d")]})).await
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            let hist = h.history(&owner, &sid).await;
            assert_eq!(seqs(&hist), (0..12).collect::<Vec<u64>>());
        });
    }
}

/// `message_started` and `message_complete` handled at once (as concurrent
/// Lambdas may): the session never stays busy with nothing running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_start_and_completion_leave_the_session_ready() {
    let h = Arc::new(Harness::new());
    let owner = h.user("ada").await;
    let (wid, wconn, _) = h.worker(&owner).await;
    let (sid, first) = h.chat(&owner, &wid, &wconn).await;
    h.ok(&wconn, json!({"action": "message_complete", "message_id": first, "outcome": "complete", "chunk_count": 0})).await;
    for round in 0..40 {
        let mid = format!("msg_race_{round}");
        h.ok(&owner, json!({"action": "message_send", "session_id": sid, "message_id": mid, "text": "go"})).await;
        let start = {
            let (h, wconn, mid) = (h.clone(), wconn.clone(), mid.clone());
            tokio::spawn(async move { h.send(&wconn, json!({"action": "message_started", "message_id": mid})).await })
        };
        let complete = {
            let (h, wconn, mid) = (h.clone(), wconn.clone(), mid.clone());
            tokio::spawn(async move {
                h.ok(&wconn, json!({"action": "message_complete", "message_id": mid, "outcome": "complete", "chunk_count": 0})).await
            })
        };
        let _ = start.await.expect("task");
        complete.await.expect("task");
        let hist = h.history(&owner, &sid).await;
        assert_eq!(hist["session"]["status"], "ready", "round {round}");
    }
}
