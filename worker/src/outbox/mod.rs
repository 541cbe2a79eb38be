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
mod tests;
