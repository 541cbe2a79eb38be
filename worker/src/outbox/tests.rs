//! The outbox on a clock of the tests' own: pacing, coalescing, acks,
//! re-sending and retries.

use super::*;
use tether_domain::ErrorCode;

fn text(d: &str) -> ChunkBody {
    ChunkBody::Text { part_id: "p".into(), delta: d.into() }
}

struct Ids(u32);
impl Ids {
    fn next(&mut self) -> RequestId {
        self.0 += 1;
        RequestId::parse(format!("r{}", self.0)).unwrap()
    }
}

fn seqs(frame: &ClientFrame) -> Vec<u32> {
    match &frame.request {
        Request::Chunks { chunks, .. } => chunks.iter().map(|c| c.seq).collect(),
        _ => vec![],
    }
}

#[test]
fn first_delta_goes_at_once_then_deltas_coalesce_until_ack_and_interval() {
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    ob.push(text("a"), t0);
    let f = ob.frames(t0, || ids.next());
    assert_eq!(f.len(), 1, "the first delta goes out at once");
    for i in 0..50 {
        ob.push(text("b"), t0 + Duration::from_millis(i));
        assert!(ob.frames(t0 + Duration::from_millis(i), || ids.next()).is_empty());
    }
    ob.on_ok(&f[0].id);
    // Acked, but the last frame left under 100 ms ago: still waiting.
    assert!(ob.frames(t0 + Duration::from_millis(60), || ids.next()).is_empty());
    let f = ob.frames(t0 + Duration::from_millis(101), || ids.next());
    assert_eq!(f.len(), 1);
    match &f[0].request {
        Request::Chunks { chunks, .. } => {
            assert_eq!(chunks.len(), 1, "50 deltas became one chunk");
            assert_eq!(chunks[0].body, text(&"b".repeat(50)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_hosts_interval_sets_the_pace_and_acknowledgements_hold_the_rest() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap()).with_interval(Duration::from_millis(25));
    ob.push(text("a"), t0);
    let first = ob.frames(t0, || ids.next());
    assert_eq!(first.len(), 1, "the first delta goes out at once");
    ob.push(text("b"), ms(5));
    ob.on_ok(&first[0].id);
    assert!(ob.frames(ms(20), || ids.next()).is_empty(), "acked, but within the interval");
    assert_eq!(ob.next_deadline(), Some(ms(25)), "it says when to look again");
    let second = ob.frames(ms(25), || ids.next());
    assert_eq!(second.len(), 1, "a fast host gets a frame every 25 ms");
    // A slow host: the frame is not acknowledged, so deltas wait for it
    // up to the hold (100 ms from the oldest), then go out as one.
    for i in 30..120 {
        ob.push(text("c"), ms(i));
    }
    assert!(ob.frames(ms(120), || ids.next()).is_empty(), "held behind the unacked frame");
    let third = ob.frames(ms(130), || ids.next());
    assert_eq!(third.len(), 1, "past the hold it goes, unacked or not");
    match &third[0].request {
        Request::Chunks { chunks, .. } => assert_eq!(chunks[0].body, text(&"c".repeat(90)), "one batch"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unacked_frame_does_not_hold_back_deltas_past_the_interval() {
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    ob.push(text("a"), t0);
    assert_eq!(ob.frames(t0, || ids.next()).len(), 1);
    ob.push(text("b"), t0 + Duration::from_millis(10));
    assert!(ob.frames(t0 + Duration::from_millis(50), || ids.next()).is_empty());
    assert_eq!(ob.frames(t0 + Duration::from_millis(111), || ids.next()).len(), 1);
}

#[test]
fn big_batches_flush_and_split_to_fit_frames() {
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    ob.push(text("a"), t0);
    ob.frames(t0, || ids.next());
    ob.push(text(&"é".repeat(40_000)), t0);
    let frames = ob.frames(t0, || ids.next());
    assert!(!frames.is_empty(), "a large batch goes at once");
    let mut total = String::new();
    for f in &frames {
        assert!(f.to_json().len() <= 32 * 1024, "frame fits API Gateway");
        if let Request::Chunks { chunks, .. } = &f.request {
            for c in chunks {
                if let ChunkBody::Text { delta, .. } = &c.body {
                    assert!(delta.len() <= MAX_DELTA_BYTES);
                    total.push_str(delta);
                }
            }
        }
    }
    assert_eq!(total, "é".repeat(40_000));
}

#[test]
fn unacked_chunks_are_resent_after_a_disconnect_and_completion_waits_for_nothing() {
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    ob.push(text("a"), t0);
    let first = ob.frames(t0, || ids.next());
    ob.push(ChunkBody::Error { message: "x".into() }, t0);
    let t1 = t0 + Duration::from_millis(200);
    let second = ob.frames(t1, || ids.next());
    assert_eq!(seqs(&second[0]), vec![1]);
    ob.on_ok(&first[0].id);
    ob.on_disconnect();
    ob.complete(Completion { outcome: Outcome::Complete, error: None });
    let again = ob.frames(t1, || ids.next());
    assert_eq!(seqs(&again[0]), vec![1], "only the unacked chunk goes again");
    let Request::MessageComplete { chunk_count, .. } = &again[1].request else { panic!("completion") };
    assert_eq!(*chunk_count, 2);
    assert!(!ob.is_done());
    ob.on_ok(&again[0].id);
    ob.on_ok(&again[1].id);
    assert!(ob.is_done());
}

#[test]
fn final_errors_abandon_and_others_retry() {
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    ob.push(text("a"), t0);
    let f = ob.frames(t0, || ids.next());
    assert_eq!(ob.on_error(&f[0].id, ErrorCode::Internal, t0), AfterError::Retry);
    let later = t0 + RETRY_MIN;
    let f = ob.frames(later, || ids.next());
    assert_eq!(seqs(&f[0]), vec![0], "retried");
    assert_eq!(ob.on_error(&f[0].id, ErrorCode::MessageFinal, later), AfterError::Abandon);
    for code in [ErrorCode::MessageTooLarge, ErrorCode::FrameTooLarge, ErrorCode::BadRequest, ErrorCode::SessionClosed] {
        let mut ob = Outbox::new(MessageId::parse("m").unwrap());
        ob.push(text("a"), t0);
        let f = ob.frames(t0, || ids.next());
        assert_eq!(ob.on_error(&f[0].id, code, t0), AfterError::Abandon, "{code:?}");
        assert!(ob.frames(t0 + RETRY_MAX, || ids.next()).is_empty(), "{code:?} is never re-sent");
    }
}

#[test]
fn retries_back_off_and_an_ok_resets_them() {
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    ob.push(text("a"), t0);
    let mut now = t0;
    let mut waits = Vec::new();
    let mut f = ob.frames(now, || ids.next());
    for _ in 0..8 {
        ob.on_error(&f[0].id, ErrorCode::Internal, now);
        // Nothing goes out before the delay; the frame does after it.
        let due = ob.next_deadline().expect("a retry time");
        assert!(ob.frames(due - Duration::from_millis(1), || ids.next()).is_empty());
        waits.push(due - now);
        now = due;
        f = ob.frames(now, || ids.next());
        assert_eq!(seqs(&f[0]), vec![0]);
        assert_eq!(ob.next_deadline(), None, "re-sent: nothing waits on the clock");
    }
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, vec![250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    ob.on_ok(&f[0].id);
    ob.push(text("b"), now);
    let now = now + MIN_INTERVAL;
    let f = ob.frames(now, || ids.next());
    ob.on_error(&f[0].id, ErrorCode::Internal, now);
    assert_eq!(ob.next_deadline(), Some(now + RETRY_MIN), "an ok starts the delays over");
}

#[test]
fn the_completion_is_small_however_long_the_answer() {
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    // 300 KB of answer, then a long error.
    for _ in 0..300 {
        ob.push(text(&"x".repeat(1024)), t0);
    }
    ob.complete(Completion {
        outcome: Outcome::Failed,
        error: Some("é".repeat(10_000)),
    });
    let frames = ob.frames(t0, || ids.next());
    let largest = frames.iter().map(|f| f.to_json().len()).max().unwrap_or(0);
    assert!(largest <= FRAME_BUDGET + 1024, "every frame fits: {largest} bytes");
    let completion = frames.last().expect("frames");
    match &completion.request {
        Request::MessageComplete { error, chunk_count, .. } => {
            let size = completion.to_json().len();
            assert!(size <= MAX_ERROR_BYTES + 512, "no answer text in the completion: {size} bytes");
            assert!(error.as_ref().is_some_and(|e| e.len() <= MAX_ERROR_BYTES), "clipped error");
            assert!(*chunk_count >= 25, "{chunk_count} chunks for 300 KB");
        }
        other => panic!("expected the completion last, got {other:?}"),
    }
    assert!(frames.len() <= 16, "{} frames for 300 KB", frames.len());
}

#[test]
fn frames_per_second_stay_low_however_fast_deltas_come() {
    // 10,000 one-token deltas over 2 s, acked after 1 ms each.
    let t0 = Instant::now();
    let mut ids = Ids(0);
    let mut ob = Outbox::new(MessageId::parse("m").unwrap());
    let mut frames = 0;
    let mut in_flight: Vec<(Instant, RequestId)> = Vec::new();
    for i in 0..10_000u64 {
        let now = t0 + Duration::from_micros(i * 200);
        in_flight.retain(|(sent, id)| {
            if now.duration_since(*sent) >= Duration::from_millis(1) {
                ob.on_ok(id);
                false
            } else {
                true
            }
        });
        ob.push(text("tok "), now);
        for f in ob.frames(now, || ids.next()) {
            frames += 1;
            in_flight.push((now, f.id));
        }
    }
    assert!(frames <= 22, "2 s of streaming took {frames} frames");
}

#[test]
fn split_str_respects_char_boundaries() {
    let s = "aé😀".repeat(10);
    for piece in split_str(&s, 5) {
        assert!(piece.len() <= 5);
    }
    assert_eq!(split_str(&s, 5).concat(), s);
    assert_eq!(split_str("", 5), vec![""]);
}
