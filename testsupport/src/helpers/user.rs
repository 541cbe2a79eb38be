//! The browser-like client: a ticket over HTTP, then a websocket.

use tether_domain::ids::{MessageId, SessionId, WorkerId};
use tether_domain::model::MessageStatus;
use tether_domain::protocol::{
    ChunkView, HistoryPage, MachineView, MessageView, Request, ServerFrame, SessionView, WorkerView,
};

use super::{open_ws, test_model, Refused, Server, Socket, User};

/// A browser-like client: a ticket over HTTP, then a websocket.
pub struct UserClient {
    pub sock: Socket,
    pub user: User,
}

impl std::ops::Deref for UserClient {
    type Target = Socket;
    fn deref(&self) -> &Socket {
        &self.sock
    }
}

impl std::ops::DerefMut for UserClient {
    fn deref_mut(&mut self) -> &mut Socket {
        &mut self.sock
    }
}

impl UserClient {
    /// Drops the connection without a close handshake.
    pub async fn drop_abruptly(self) {
        self.sock.drop_abruptly().await
    }
}

impl UserClient {
    /// A fresh ticket, then the websocket; panics if refused.
    pub async fn connect(server: &Server, user: &User) -> Self {
        let ticket = server.ticket(user).await;
        Self::connect_with_ticket(server, user, &ticket.ticket)
            .await
            .unwrap_or_else(|r| panic!("user {} could not connect: {r:?}", user.name))
    }

    pub async fn connect_with_ticket(
        server: &Server,
        user: &User,
        ticket: &str,
    ) -> Result<Self, Refused> {
        let ws = open_ws(server.addr, &format!("/ws?ticket={ticket}"), None).await?;
        Ok(Self {
            sock: Socket::new(format!("user {}", user.name), ws),
            user: user.clone(),
        })
    }

    pub async fn start_session(&self, session: &SessionId, worker: &WorkerId) -> SessionView {
        self.call(Request::SessionStart {
            session_id: session.clone(),
            worker_id: worker.clone(),
            model: test_model(),
            title: Some("e2e".into()),
        })
        .await
        .field("session")
    }

    pub async fn watch(
        &self,
        session: &SessionId,
        after: Option<tether_domain::protocol::Cursor>,
    ) -> HistoryPage {
        self.call(Request::SessionWatch {
            session_id: session.clone(),
            after,
        })
        .await
        .data_as()
    }

    pub async fn history(&self, session: &SessionId) -> HistoryPage {
        self.call(Request::SessionHistory {
            session_id: session.clone(),
            after: None,
        })
        .await
        .data_as()
    }

    pub async fn send_message(
        &self,
        session: &SessionId,
        message: &MessageId,
        text: &str,
    ) -> MessageView {
        self.call(Request::MessageSend {
            session_id: session.clone(),
            message_id: message.clone(),
            text: text.to_owned(),
            model: None,
        })
        .await
        .field("message")
    }

    pub async fn machines(&self) -> Vec<MachineView> {
        self.call(Request::MachineList {}).await.field("machines")
    }

    pub async fn sessions(&self) -> Vec<SessionView> {
        self.call(Request::SessionList {
            worker_id: None,
            before: None,
            limit: None,
        })
        .await
        .field("sessions")
    }

    /// The worker as `machine_list` shows it.
    pub async fn worker_view(&self, worker: &WorkerId) -> WorkerView {
        self.machines()
            .await
            .into_iter()
            .flat_map(|m| m.workers)
            .find(|w| &w.worker_id == worker)
            .unwrap_or_else(|| panic!("{}: machine_list does not show worker {worker}", self.label))
    }

    /// Waits for a `worker_updated` of this worker that matches.
    pub async fn worker_updated<F>(&mut self, worker: &WorkerId, what: &str, pred: F) -> WorkerView
    where
        F: Fn(&WorkerView) -> bool,
    {
        let worker = worker.clone();
        match self
            .next_event(&format!("worker_updated ({what})"), |e| {
                matches!(e, ServerFrame::WorkerUpdated { worker: w } if w.worker_id == worker && pred(w))
            })
            .await
        {
            ServerFrame::WorkerUpdated { worker } => worker,
            _ => unreachable!(),
        }
    }

    /// Reads this message's `chunks` and `message_updated` events until its
    /// answer is final: the chunks in arrival order and the statuses seen.
    pub async fn follow_to_end(&mut self, message: &MessageId) -> Followed {
        self.follow_on(message, Followed::default(), false).await
    }

    /// Like [`Self::follow_to_end`], adding to what was seen of the answer
    /// already; with `whole`, it also waits for every chunk the completion
    /// counted (frames may be handled out of order, so the completion can
    /// overtake the last chunks).
    pub async fn follow_on(
        &mut self,
        message: &MessageId,
        mut followed: Followed,
        whole: bool,
    ) -> Followed {
        loop {
            let m = message.clone();
            let event = self
                .next_event(
                    &format!("chunks or message_updated of {message}"),
                    |e| match e {
                        ServerFrame::Chunks { message_id, .. } => *message_id == m,
                        ServerFrame::MessageUpdated { message } => message.message_id == m,
                        _ => false,
                    },
                )
                .await;
            match event {
                ServerFrame::Chunks { chunks, .. } => followed.chunks.extend(chunks),
                ServerFrame::MessageUpdated { message } => {
                    let last = message.status.is_final();
                    let count = message.chunk_count.unwrap_or(0);
                    followed.statuses.push(message.status);
                    followed.last = Some(message);
                    if last {
                        let wanted = followed
                            .last
                            .as_ref()
                            .map(|v| v.message_id.clone())
                            .expect("just set");
                        while whole
                            && (0..count).any(|s| !followed.chunks.iter().any(|c| c.seq == s))
                        {
                            let m = wanted.clone();
                            let event = self
                                .next_event(
                                    &format!("the rest of the {count} chunks of {wanted}"),
                                    |e| matches!(e, ServerFrame::Chunks { message_id, .. } if *message_id == m),
                                )
                                .await;
                            if let ServerFrame::Chunks { chunks, .. } = event {
                                followed.chunks.extend(chunks);
                            }
                        }
                        return followed;
                    }
                }
                _ => unreachable!(),
            }
        }
    }

    /// Waits until `chunks` events have brought every seq in `seqs` of a message.
    pub async fn chunks_until(
        &mut self,
        message: &MessageId,
        seqs: std::ops::Range<u32>,
    ) -> Vec<ChunkView> {
        let mut got: Vec<ChunkView> = Vec::new();
        while !seqs.clone().all(|s| got.iter().any(|c| c.seq == s)) {
            let m = message.clone();
            match self
                .next_event(
                    &format!("chunks of {message} up to seq {}", seqs.end - 1),
                    |e| matches!(e, ServerFrame::Chunks { message_id, .. } if *message_id == m),
                )
                .await
            {
                ServerFrame::Chunks { chunks, .. } => got.extend(chunks),
                _ => unreachable!(),
            }
        }
        got
    }
}

/// What a watcher saw of one answer.
#[derive(Debug, Default)]
pub struct Followed {
    pub chunks: Vec<ChunkView>,
    pub statuses: Vec<MessageStatus>,
    pub last: Option<MessageView>,
}

impl Followed {
    pub fn seqs(&self) -> Vec<u32> {
        self.chunks.iter().map(|c| c.seq).collect()
    }
}
