//! One websocket connection: requests with unique ids, their replies, and
//! the queue of pushed events.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tether_domain::protocol::{ClientFrame, Request, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use super::reply::{read_loop, Incoming, PendingMap};
use super::upgrade::Ws;
use super::{request_id, Closed, PendingReply, Reply, WAIT};

/// One websocket connection: requests with unique ids whose replies are
/// matched by id, and a queue of pushed events.
pub struct Socket {
    pub label: String,
    sink: Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>,
    pending: PendingMap,
    inbox: mpsc::UnboundedReceiver<Incoming>,
    backlog: VecDeque<ServerFrame>,
    orphans: VecDeque<Reply>,
    closed: Option<Closed>,
    reader: JoinHandle<()>,
}

impl Socket {
    pub(super) fn new(label: impl Into<String>, ws: Ws) -> Self {
        let label = label.into();
        let (sink, stream) = ws.split();
        let pending: PendingMap = Arc::new(Mutex::new(HashMap::new()));
        let (tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(stream, pending.clone(), tx));
        Self {
            label,
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            pending,
            inbox,
            backlog: VecDeque::new(),
            orphans: VecDeque::new(),
            closed: None,
            reader,
        }
    }

    async fn write(&self, msg: Message) {
        let mut sink = self.sink.lock().await;
        tokio::time::timeout(WAIT, sink.send(msg))
            .await
            .unwrap_or_else(|_| panic!("{}: a send did not finish within {WAIT:?}", self.label))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.label));
    }

    /// Sends a request and returns its reply-to-be (for pipelining).
    pub async fn send(&self, request: Request) -> PendingReply {
        let frame = ClientFrame {
            id: request_id(),
            request,
        };
        self.send_text(frame.request.action(), frame.id.as_str(), frame.to_json())
            .await
    }

    /// Sends any text as one frame and registers `id` for its reply.
    pub async fn send_text(&self, action: &str, id: &str, text: String) -> PendingReply {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending map")
            .insert(id.to_owned(), (action.to_owned(), tx));
        self.write(Message::Text(text.into())).await;
        PendingReply {
            label: self.label.clone(),
            action: action.to_owned(),
            id: id.to_owned(),
            rx,
        }
    }

    /// Sends a request and awaits its reply.
    pub async fn call(&self, request: Request) -> Reply {
        self.send(request).await.get().await
    }

    pub async fn ping(&self) -> Reply {
        self.call(Request::Ping {}).await
    }

    /// Asserts the connection still answers.
    pub async fn assert_usable(&self, after: &str) {
        let reply = self.ping().await;
        assert!(
            reply.ok,
            "{}: `ping` after {after} was refused: {}",
            self.label, reply.raw
        );
    }

    /// Sends raw text as one frame and awaits its reply: the reply with
    /// `id` if the frame carries one the server can read, otherwise the next
    /// reply that has no readable id.
    pub async fn raw(&mut self, what: &str, text: String, id: Option<&str>) -> Reply {
        let pending = match id {
            Some(id) => Some(self.send_text(what, id, text).await),
            None => {
                self.write(Message::Text(text.into())).await;
                None
            }
        };
        self.await_raw_reply(what, pending).await
    }

    /// Sends one message as several websocket frames (fragments) of at most
    /// `fragment` bytes each, and awaits its reply as [`Self::raw`] does.
    pub async fn raw_fragmented(
        &mut self,
        what: &str,
        text: String,
        id: Option<&str>,
        fragment: usize,
    ) -> Reply {
        let (tx, rx) = oneshot::channel();
        if let Some(id) = id {
            self.pending
                .lock()
                .expect("pending map")
                .insert(id.to_owned(), (what.to_owned(), tx));
        }
        let bytes = text.into_bytes();
        let pieces: Vec<&[u8]> = bytes.chunks(fragment).collect();
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = Frame::message(piece.to_vec(), opcode, i + 1 == n);
            self.write(Message::Frame(frame)).await;
        }
        let pending = id.map(|id| PendingReply {
            label: self.label.clone(),
            action: what.to_owned(),
            id: id.to_owned(),
            rx,
        });
        self.await_raw_reply(what, pending).await
    }

    async fn await_raw_reply(&mut self, what: &str, pending: Option<PendingReply>) -> Reply {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut rx = pending.map(|p| p.rx);
        loop {
            if let Some(mut orphan) = self.orphans.pop_front() {
                orphan.action = what.to_owned();
                return orphan;
            }
            if let Some(closed) = &self.closed {
                panic!(
                    "{}: the connection ended ({closed:?}) before the reply to {what}",
                    self.label
                );
            }
            tokio::select! {
                reply = async { rx.as_mut().expect("checked").await }, if rx.is_some() => {
                    match reply {
                        Ok(mut reply) => { reply.action = what.to_owned(); return reply; }
                        Err(_) => { rx = None; }
                    }
                }
                incoming = self.inbox.recv() => self.take(incoming),
                _ = tokio::time::sleep_until(deadline) => {
                    panic!("{}: no reply to {what} within {WAIT:?}; {}", self.label, self.describe_backlog());
                }
            }
        }
    }

    fn take(&mut self, incoming: Option<Incoming>) {
        match incoming {
            Some(Incoming::Event(e)) => self.backlog.push_back(e),
            Some(Incoming::Orphan(r)) => self.orphans.push_back(r),
            Some(Incoming::Unparsed(text)) => panic!(
                "{}: the server sent a frame that is not a protocol frame: {text}",
                self.label
            ),
            Some(Incoming::Closed(c)) => self.closed = Some(c),
            None => {
                if self.closed.is_none() {
                    self.closed = Some(Closed {
                        code: None,
                        reason: String::new(),
                        error: Some("reader ended".into()),
                    });
                }
            }
        }
    }

    /// The first pushed event (queued or to come) that matches, removing it
    /// from the queue; events that do not match stay queued.
    pub async fn next_event<F>(&mut self, what: &str, pred: F) -> ServerFrame
    where
        F: Fn(&ServerFrame) -> bool,
    {
        self.next_event_within(what, WAIT, pred)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {what} within {WAIT:?}; {}",
                    self.label,
                    self.describe_backlog()
                )
            })
    }

    /// Like [`Self::next_event`] but `None` on timeout.
    pub async fn next_event_within<F>(
        &mut self,
        what: &str,
        within: Duration,
        pred: F,
    ) -> Option<ServerFrame>
    where
        F: Fn(&ServerFrame) -> bool,
    {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(closed) = &self.closed {
                panic!(
                    "{}: the connection ended ({closed:?}) while waiting for {what}; {}",
                    self.label,
                    self.describe_backlog()
                );
            }
            let incoming = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(incoming) => incoming,
                Err(_) => return None,
            };
            match incoming {
                Some(Incoming::Event(e)) if pred(&e) => return Some(e),
                other => self.take(other),
            }
        }
    }

    /// Discards every event received so far (after a ping round trip, so
    /// everything pushed before it has arrived).
    pub async fn drain_events(&mut self) {
        self.assert_usable("draining events").await;
        while let Ok(incoming) = self.inbox.try_recv() {
            self.take(Some(incoming));
        }
        self.backlog.clear();
    }

    /// Every event received so far, after a ping round trip (so everything
    /// pushed before it has arrived). They leave the queue.
    pub async fn received_events(&mut self) -> Vec<ServerFrame> {
        self.assert_usable("collecting events").await;
        while let Ok(incoming) = self.inbox.try_recv() {
            self.take(Some(incoming));
        }
        self.backlog.drain(..).collect()
    }

    /// Replies that matched no request sent (a second reply to one
    /// request, or one without a readable id), after a ping round trip.
    pub async fn stray_replies(&mut self) -> Vec<Reply> {
        self.assert_usable("collecting stray replies").await;
        while let Ok(incoming) = self.inbox.try_recv() {
            self.take(Some(incoming));
        }
        self.orphans.drain(..).collect()
    }

    /// Waits until the server closes the socket.
    pub async fn wait_closed(&mut self) -> Closed {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(c) = &self.closed {
                return c.clone();
            }
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(incoming) => self.take(incoming),
                Err(_) => panic!(
                    "{}: the server did not close the socket within {WAIT:?}",
                    self.label
                ),
            }
        }
    }

    /// Closes the socket with a close handshake and waits for it to end.
    pub async fn close(mut self) {
        {
            let mut sink = self.sink.lock().await;
            let _ = tokio::time::timeout(WAIT, sink.send(Message::Close(None))).await;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(incoming) => {
                    // Events after our close are of no interest.
                    if let Some(Incoming::Closed(c)) = incoming {
                        self.closed = Some(c);
                    } else if incoming.is_none() {
                        break;
                    }
                }
                Err(_) => panic!(
                    "{}: the close handshake did not finish within {WAIT:?}",
                    self.label
                ),
            }
        }
    }

    /// Drops the TCP connection without a close handshake (a crash, a lost
    /// network), leaving unread replies unread.
    pub async fn drop_abruptly(mut self) {
        self.reader.abort();
        let reader = std::mem::replace(&mut self.reader, tokio::spawn(async {}));
        // The reader task owned the read half: once it is gone, dropping
        // `self` drops the write half and with it the TCP stream.
        let _ = reader.await;
    }

    fn describe_backlog(&self) -> String {
        let mut s = format!("{} queued events", self.backlog.len());
        if !self.backlog.is_empty() {
            s.push_str(": ");
            for e in self.backlog.iter().take(30) {
                let _ = write!(s, "\n  {}", serde_json::to_string(e).unwrap_or_default());
            }
        }
        if let Some(c) = &self.closed {
            let _ = write!(s, "\n  (closed: {c:?})");
        }
        s
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
