//! One answer's outgoing chunks: numbering, coalescing, acknowledgement and
//! re-sending. Pure logic, driven by the caller's clock, so it is tested
//! without sockets.
//!
//! Coalescing: the first delta of a burst goes out at once. After that,
//! deltas accumulate and go out together when nothing is in flight and the
//! last frame left at least the frame interval ago, when the oldest waiting
//! delta is [`MAX_HOLD`] old (or the interval, if longer), or when the batch
//! nears the frame limit. The host sets the interval (its hello reply's
//! `frame_interval_ms`: short on a local host, [`MIN_INTERVAL`] on AWS,
//! where each frame is an invocation), and acknowledgements pace the rest: a
//! slow host gets bigger batches, not more frames. Frames per answer grow
//! with its duration, not with its token count.
//!
//! No frame grows with the answer: the completion carries the chunk count,
//! never the text (the host has the chunks), and its error is clipped. An
//! error reply that a retry cannot change (too large, malformed, final) drops
//! what it refused; any other error is retried after a delay that doubles
//! up to [`RETRY_MAX`], so a host that keeps refusing is not hammered.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tether_domain::ids::{MessageId, RequestId};
use tether_domain::protocol::{ChunkBody, ChunkIn, ClientFrame, Outcome, Request};

/// The frame interval until the host says otherwise: least time between two
/// chunk frames of one answer (except size flushes).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest a delta waits behind a frame the host has not acknowledged.
pub const MAX_HOLD: Duration = Duration::from_millis(100);
/// A batch this large goes out at once.
pub const FLUSH_BYTES: usize = 20 * 1024;
/// Budget for one chunk frame's JSON (API Gateway's frame limit is 32 KB).
pub const FRAME_BUDGET: usize = 28 * 1024;
/// Longest delta in one chunk; longer text is split over several chunks.
pub const MAX_DELTA_BYTES: usize = 12 * 1024;
/// Longest error text a completion carries.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;
/// The first wait before re-sending what the host refused with an error a
/// retry may change; it doubles with each refusal in a row.
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest such wait.
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// How an answer ended, as the worker will report it.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub outcome: Outcome,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum CompletionState {
    Open,
    /// Decided; sent once everything before it is numbered.
    Ready(Completion),
    InFlight(Completion, RequestId),
    Acked,
}

/// What the caller should do after an error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterError {
    /// Send again later (after a reconnect or the next flush).
    Retry,
    /// The server will take nothing more for this answer: drop it.
    Abandon,
}

pub struct Outbox {
    message: MessageId,
    next_seq: u32,
    pending: Vec<ChunkBody>,
    pending_bytes: usize,
    pending_since: Option<Instant>,
    last_sent: Option<Instant>,
    /// Numbered chunks the server has not acknowledged.
    unacked: BTreeMap<u32, ChunkIn>,
    /// Of those, the ones not sent on the current connection.
    unsent: Vec<u32>,
    in_flight: HashMap<RequestId, Vec<u32>>,
    completion: CompletionState,
    frames_sent: u64,
    /// Nothing is re-sent before this (after a retriable error reply).
    retry_at: Option<Instant>,
    /// The wait after the next retriable error.
    retry_delay: Duration,
    /// Least time between two frames (the host's frame interval).
    interval: Duration,
}

impl Outbox {
    pub fn new(message: MessageId) -> Self {
        Self {
            message,
            next_seq: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
            last_sent: None,
            unacked: BTreeMap::new(),
            unsent: Vec::new(),
            in_flight: HashMap::new(),
            completion: CompletionState::Open,
            frames_sent: 0,
            retry_at: None,
            retry_delay: RETRY_MIN,
            interval: MIN_INTERVAL,
        }
    }

    pub fn message(&self) -> &MessageId {
        &self.message
    }

    /// Chunk frames sent so far (re-sends included).
    pub fn frames_sent(&self) -> u64 {
        self.frames_sent
    }

    /// Chunks numbered so far.
    pub fn chunk_count(&self) -> u32 {
        self.next_seq
    }

    /// Everything acknowledged, completion included.
    pub fn is_done(&self) -> bool {
        self.completion == CompletionState::Acked && self.unacked.is_empty() && self.pending.is_empty()
    }

    /// The answer has a decided outcome (sent or not).
    pub fn is_completed(&self) -> bool {
        self.completion != CompletionState::Open
    }

    /// Adds a chunk, merging it into the last waiting one when both append
    /// to the same part.
    pub fn push(&mut self, body: ChunkBody, now: Instant) {
        if self.is_completed() {
            tracing::debug!(message_id = %self.message, "chunk after completion dropped");
            return;
        }
        let added = delta_len(&body).unwrap_or_else(|| approx_size(&body));
        if let Some(last) = self.pending.last_mut() {
            if merge(last, &body) {
                self.pending_bytes += added;
                return;
            }
        }
        self.pending.push(body);
        self.pending_bytes += added;
        self.pending_since.get_or_insert(now);
    }

    /// Decides the answer's outcome; it goes out after the chunks before it.
    pub fn complete(&mut self, completion: Completion) {
        if self.completion == CompletionState::Open {
            self.completion = CompletionState::Ready(completion);
        }
    }

    /// This outbox with the host's frame interval.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Takes a new frame interval (a host's hello reply).
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// How long a delta may wait behind an unacknowledged frame.
    fn hold(&self) -> Duration {
        self.interval.max(MAX_HOLD)
    }

    fn should_flush(&self, now: Instant) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        if self.pending_bytes >= FLUSH_BYTES || self.is_completed() {
            return true;
        }
        let quiet = self.last_sent.is_none_or(|t| now.duration_since(t) >= self.interval);
        let waited = self
            .pending_since
            .is_some_and(|t| now.duration_since(t) >= self.hold());
        (self.in_flight.is_empty() && quiet) || waited
    }

    /// Frames to send now, each with its request id (registered as in flight).
    pub fn frames(&mut self, now: Instant, mut new_id: impl FnMut() -> RequestId) -> Vec<ClientFrame> {
        match self.retry_at {
            Some(t) if now < t => return Vec::new(),
            // Passed: no longer a deadline (the caller sleeps until the next).
            Some(_) => self.retry_at = None,
            None => {}
        }
        if self.should_flush(now) {
            for body in std::mem::take(&mut self.pending) {
                for piece in split(body) {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.unacked.insert(seq, ChunkIn { seq, body: piece });
                    self.unsent.push(seq);
                }
            }
            self.pending_bytes = 0;
            self.pending_since = None;
        }
        let mut frames = Vec::new();
        if !self.unsent.is_empty() {
            let mut group: Vec<ChunkIn> = Vec::new();
            let mut used = 0;
            let unsent = std::mem::take(&mut self.unsent);
            for seq in unsent {
                let Some(chunk) = self.unacked.get(&seq).cloned() else { continue };
                let size = serde_json::to_string(&chunk).map(|s| s.len()).unwrap_or(FRAME_BUDGET);
                if !group.is_empty() && used + size > FRAME_BUDGET {
                    frames.push(self.chunk_frame(std::mem::take(&mut group), new_id()));
                    used = 0;
                }
                used += size;
                group.push(chunk);
            }
            if !group.is_empty() {
                frames.push(self.chunk_frame(group, new_id()));
            }
            self.last_sent = Some(now);
        }
        if let CompletionState::Ready(c) = &self.completion {
            if self.pending.is_empty() {
                let c = c.clone();
                let id = new_id();
                frames.push(ClientFrame {
                    id: id.clone(),
                    request: Request::MessageComplete {
                        message_id: self.message.clone(),
                        outcome: c.outcome,
                        chunk_count: self.next_seq,
                        error: c.error.as_deref().map(clip_error),
                    },
                });
                self.completion = CompletionState::InFlight(c, id);
            }
        }
        frames
    }

    fn chunk_frame(&mut self, chunks: Vec<ChunkIn>, id: RequestId) -> ClientFrame {
        self.in_flight.insert(id.clone(), chunks.iter().map(|c| c.seq).collect());
        self.frames_sent += 1;
        ClientFrame {
            id,
            request: Request::Chunks {
                message_id: self.message.clone(),
                chunks,
            },
        }
    }

    /// Whether a reply id belongs to this outbox.
    pub fn owns(&self, id: &RequestId) -> bool {
        self.in_flight.contains_key(id)
            || matches!(&self.completion, CompletionState::InFlight(_, i) if i == id)
    }

    /// An ok reply to one of this outbox's frames.
    pub fn on_ok(&mut self, id: &RequestId) {
        self.retry_at = None;
        self.retry_delay = RETRY_MIN;
        if let Some(seqs) = self.in_flight.remove(id) {
            for seq in seqs {
                self.unacked.remove(&seq);
            }
        } else if matches!(&self.completion, CompletionState::InFlight(_, i) if i == id) {
            self.completion = CompletionState::Acked;
        }
    }

    /// An error reply to one of this outbox's frames, at `now`.
    pub fn on_error(&mut self, id: &RequestId, code: tether_domain::ErrorCode, now: Instant) -> AfterError {
        use tether_domain::ErrorCode as C;
        // What sending the same frame again cannot change.
        let abandon = matches!(
            code,
            C::NotFound
                | C::MessageFinal
                | C::AlreadyComplete
                | C::Forbidden
                | C::BadRequest
                | C::BadJson
                | C::UnknownAction
                | C::FrameTooLarge
                | C::MessageTooLarge
                | C::SessionClosed
                | C::Conflict
        );
        if !abandon && self.owns(id) {
            self.retry_at = Some(now + self.retry_delay);
            self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
        }
        if let Some(seqs) = self.in_flight.remove(id) {
            if abandon {
                for seq in seqs {
                    self.unacked.remove(&seq);
                }
            } else {
                self.unsent.extend(seqs);
                self.unsent.sort_unstable();
            }
        } else if let CompletionState::InFlight(c, i) = &self.completion {
            if i == id {
                self.completion = if abandon {
                    CompletionState::Acked
                } else {
                    CompletionState::Ready(c.clone())
                };
            }
        }
        if abandon {
            AfterError::Abandon
        } else {
            AfterError::Retry
        }
    }

    /// The connection dropped: nothing is in flight any more; everything
    /// unacknowledged goes again on the next connection.
    pub fn on_disconnect(&mut self) {
        // A new connection gets everything at once.
        self.retry_at = None;
        self.in_flight.clear();
        self.unsent = self.unacked.keys().copied().collect();
        if let CompletionState::InFlight(c, _) = &self.completion {
            self.completion = CompletionState::Ready(c.clone());
        }
    }

    /// When the caller should look again, if something waits on the clock.
    pub fn next_deadline(&self) -> Option<Instant> {
        let quiet = match (self.in_flight.is_empty(), self.last_sent) {
            (true, Some(t)) => Some(t + self.interval),
            _ => None,
        };
        let held = self.pending_since.map(|t| t + self.hold());
        // Only waiting deltas need a look; whichever comes first lets them go.
        let coalescing = match (quiet, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (_, b) => b,
        };
        match (coalescing, self.retry_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// An error text cut to [`MAX_ERROR_BYTES`] at a character boundary.
fn clip_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_BYTES - "…".len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn delta_len(body: &ChunkBody) -> Option<usize> {
    match body {
        ChunkBody::Text { delta, .. }
        | ChunkBody::Reasoning { delta, .. }
        | ChunkBody::ToolOutput { delta, .. } => Some(delta.len()),
        _ => None,
    }
}

fn approx_size(body: &ChunkBody) -> usize {
    serde_json::to_string(body).map(|s| s.len()).unwrap_or(1024)
}

/// Appends `next` to `last` when both are deltas of the same part.
fn merge(last: &mut ChunkBody, next: &ChunkBody) -> bool {
    match (last, next) {
        (ChunkBody::Text { part_id: a, delta }, ChunkBody::Text { part_id: b, delta: d })
        | (ChunkBody::Reasoning { part_id: a, delta }, ChunkBody::Reasoning { part_id: b, delta: d })
            if a == b && delta.len() + d.len() <= MAX_DELTA_BYTES =>
        {
            delta.push_str(d);
            true
        }
        (
            ChunkBody::ToolOutput { part_id: a, call_id: ca, delta },
            ChunkBody::ToolOutput { part_id: b, call_id: cb, delta: d },
        ) if a == b && ca == cb && delta.len() + d.len() <= MAX_DELTA_BYTES => {
            delta.push_str(d);
            true
        }
        _ => false,
    }
}

/// Splits a delta longer than [`MAX_DELTA_BYTES`] into ordered pieces.
fn split(body: ChunkBody) -> Vec<ChunkBody> {
    let Some(len) = delta_len(&body) else { return vec![body] };
    if len <= MAX_DELTA_BYTES {
        return vec![body];
    }
    let (make, text): (Box<dyn Fn(String) -> ChunkBody>, String) = match body {
        ChunkBody::Text { part_id, delta } => (Box::new(move |d| ChunkBody::Text { part_id: part_id.clone(), delta: d }), delta),
        ChunkBody::Reasoning { part_id, delta } => (
            Box::new(move |d| ChunkBody::Reasoning { part_id: part_id.clone(), delta: d }),
            delta,
        ),
        ChunkBody::ToolOutput { part_id, call_id, delta } => (
            Box::new(move |d| ChunkBody::ToolOutput {
                part_id: part_id.clone(),
                call_id: call_id.clone(),
                delta: d,
            }),
            delta,
        ),
        other => return vec![other],
    };
    split_str(&text, MAX_DELTA_BYTES).into_iter().map(|s| make(s.to_owned())).collect()
}

/// Cuts a string into pieces of at most `max` bytes, on char boundaries.
pub fn split_str(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
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
}
