//! Chunks: stored once per (message, seq), read back in order.

use crate::model::Chunk;
use crate::protocol::ChunkBody;
use crate::store::{Inserted, Store};

use super::{assert_existing, assert_new, seed, seed_message, seed_session, text_chunk, T0};

/// `insert_chunks` answers each chunk of a frame as `insert_chunk` would,
/// in the frame's order: new ones stored, repeats found.
pub async fn a_frames_chunks_are_put_in_one_call<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let first = text_chunk(&m.id, 1, "first");
    assert_new(s.insert_chunk(&first).await.expect("insert"));
    let frame = vec![
        text_chunk(&m.id, 2, "b"),
        text_chunk(&m.id, 1, "again"),
        text_chunk(&m.id, 0, "a"),
    ];
    let answers = s.insert_chunks(&frame).await.expect("insert the frame");
    assert_eq!(answers.len(), 3);
    assert!(
        matches!(&answers[0], Inserted::New(c) if c == &frame[0]),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[1], Inserted::Existing(c) if c == &first),
        "the first write stays: {answers:?}"
    );
    assert!(
        matches!(&answers[2], Inserted::New(c) if c == &frame[2]),
        "{answers:?}"
    );
    let stored = s.chunks(&m.id, 0, 10).await.expect("all");
    assert_eq!(stored, vec![frame[2].clone(), first, frame[0].clone()]);
}

pub async fn chunks_idempotent_and_ordered<S: Store>(s: S) {
    let seed = seed(&s).await;
    let sess = seed_session(&s, &seed, T0).await;
    let m = seed_message(&s, &sess, "hello").await;
    let other = seed_message(&s, &sess, "other").await;

    let tool = Chunk {
        message: m.id.clone(),
        seq: 1,
        body: ChunkBody::ToolCall {
            part_id: "prt_2".into(),
            call_id: "call_1".into(),
            tool: "bash".into(),
            status: crate::protocol::ToolStatus::Running,
            input: serde_json::json!({"command": "ls", "nested": [1, {"a": null}]}),
            title: Some("List files".into()),
        },
        created_at: T0 + 1,
    };
    let c0 = text_chunk(&m.id, 0, "Hel");
    let c2 = text_chunk(&m.id, 2, "lo");
    for c in [&c2, &c0, &tool] {
        assert_eq!(&assert_new(s.insert_chunk(c).await.expect("insert")), c);
    }
    s.insert_chunk(&text_chunk(&other.id, 0, "x"))
        .await
        .expect("insert other");

    let retry = text_chunk(&m.id, 1, "a different body");
    assert_eq!(
        assert_existing(s.insert_chunk(&retry).await.expect("insert again")),
        tool,
        "the first write of a (message, seq) stays"
    );

    assert_eq!(
        s.chunks(&m.id, 0, 10).await.expect("all"),
        vec![c0, tool.clone(), c2.clone()],
        "seq order"
    );
    assert_eq!(s.chunks(&m.id, 1, 1).await.expect("page"), vec![tool]);
    assert_eq!(s.chunks(&m.id, 2, 10).await.expect("tail"), vec![c2]);
    assert!(s.chunks(&m.id, 3, 10).await.expect("past end").is_empty());
    assert_eq!(s.chunks(&other.id, 0, 10).await.expect("other").len(), 1);
}
