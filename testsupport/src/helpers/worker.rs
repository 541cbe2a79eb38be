//! The worker's side: pairing over HTTP, a worker connection, and the test
//! models and answers it speaks of.

use serde_json::json;
use tether_domain::auth::Secret;
use tether_domain::ids::{MessageId, SessionId, WorkerId};
use tether_domain::model::WorkerStatus;
use tether_domain::protocol::{
    ChunkBody, ChunkIn, ChunkView, ChunksAck, MessageView, ModelInfo, ModelRef, Outcome, PairData,
    Request, ServerFrame, SessionView,
};

use super::{http_post, open_ws, Refused, Reply, Server, Socket};

/// A worker's identity: its credential and what pairing told it.
#[derive(Clone, Debug)]
pub struct WorkerIdentity {
    pub credential: String,
    pub worker_id: WorkerId,
    pub code: Option<String>,
    pub machine: String,
    pub workdir: String,
}

/// `POST /api/pair` with a fresh random credential; panics unless it succeeds.
pub async fn pair(server: &Server, machine: &str, workdir: &str) -> WorkerIdentity {
    let credential = Secret::generate("twk_").expose().to_owned();
    let res = http_post(
        server.addr,
        "/api/pair",
        Some(&credential),
        Some(&json!({ "machine": machine, "workdir": workdir })),
    )
    .await;
    assert_eq!(res.status, 200, "POST /api/pair: {res:?}");
    let data: PairData = res.parse();
    assert_eq!(
        data.status,
        WorkerStatus::Pending,
        "a new worker is pending: {res:?}"
    );
    assert!(data.code.is_some(), "a pending worker gets a code: {res:?}");
    WorkerIdentity {
        credential,
        worker_id: data.worker_id,
        code: data.code,
        machine: machine.to_owned(),
        workdir: workdir.to_owned(),
    }
}

/// A worker process: connects with its credential as a Bearer header.
pub struct WorkerClient {
    pub sock: Socket,
    pub identity: WorkerIdentity,
}

impl std::ops::Deref for WorkerClient {
    type Target = Socket;
    fn deref(&self) -> &Socket {
        &self.sock
    }
}

impl std::ops::DerefMut for WorkerClient {
    fn deref_mut(&mut self) -> &mut Socket {
        &mut self.sock
    }
}

impl WorkerClient {
    /// Closes the socket with a close handshake.
    pub async fn close(self) {
        self.sock.close().await
    }

    /// Drops the connection without a close handshake.
    pub async fn drop_abruptly(self) {
        self.sock.drop_abruptly().await
    }
}

impl WorkerClient {
    pub async fn connect(server: &Server, identity: &WorkerIdentity) -> Self {
        Self::try_connect(server, identity)
            .await
            .unwrap_or_else(|r| panic!("worker {} could not connect: {r:?}", identity.worker_id))
    }

    pub async fn try_connect(server: &Server, identity: &WorkerIdentity) -> Result<Self, Refused> {
        let ws = open_ws(server.addr, "/ws", Some(&identity.credential)).await?;
        Ok(Self {
            sock: Socket::new(format!("worker {}", identity.worker_id), ws),
            identity: identity.clone(),
        })
    }

    pub fn id(&self) -> &WorkerId {
        &self.identity.worker_id
    }

    /// `worker_hello` with the test models and these active messages.
    pub async fn hello(&self, active: &[MessageId]) -> Reply {
        self.hello_with(test_models(), active).await
    }

    pub async fn hello_with(&self, models: Vec<ModelInfo>, active: &[MessageId]) -> Reply {
        let default_model = (!models.is_empty()).then(test_model);
        self.call(Request::WorkerHello {
            machine: Some(self.identity.machine.clone()),
            name: None,
            workdir: Some(self.identity.workdir.clone()),
            version: Some("e2e".into()),
            models,
            default_model,
            active_messages: active.to_vec(),
            agent: None,
        })
        .await
    }

    pub async fn session_ready(&self, session: &SessionId) -> SessionView {
        self.call(Request::SessionReady {
            session_id: session.clone(),
            agent_session_id: format!("agent-{session}"),
        })
        .await
        .field("session")
    }

    pub async fn started(&self, message: &MessageId) -> MessageView {
        self.call(Request::MessageStarted {
            message_id: message.clone(),
        })
        .await
        .field("message")
    }

    pub fn chunks_request(message: &MessageId, chunks: &[(u32, &str)]) -> Request {
        Request::Chunks {
            message_id: message.clone(),
            chunks: chunks
                .iter()
                .map(|(seq, delta)| text_chunk(*seq, delta))
                .collect(),
        }
    }

    /// One `chunks` frame; returns its acknowledgement.
    pub async fn chunks(&self, message: &MessageId, chunks: &[(u32, &str)]) -> ChunksAck {
        self.call(Self::chunks_request(message, chunks))
            .await
            .data_as()
    }

    /// A completion: how many chunks the answer has. It carries no text,
    /// the host has the chunks.
    pub fn complete_request(message: &MessageId, outcome: Outcome, chunk_count: u32) -> Request {
        Request::MessageComplete {
            message_id: message.clone(),
            outcome,
            chunk_count,
            error: None,
        }
    }

    pub async fn complete(&self, message: &MessageId, chunk_count: u32) -> MessageView {
        self.call(Self::complete_request(
            message,
            Outcome::Complete,
            chunk_count,
        ))
        .await
        .field("message")
    }

    /// Waits for a `message_dispatch` of this message.
    pub async fn dispatched(&mut self, message: &MessageId) -> ServerFrame {
        let m = message.clone();
        self.next_event(
            &format!("message_dispatch of {message}"),
            |e| matches!(e, ServerFrame::MessageDispatch { message_id, .. } if *message_id == m),
        )
        .await
    }
}

pub fn text_chunk(seq: u32, delta: &str) -> ChunkIn {
    ChunkIn {
        seq,
        body: ChunkBody::Text {
            part_id: "part-1".into(),
            delta: delta.to_owned(),
        },
    }
}

pub fn test_model() -> ModelRef {
    ModelRef {
        provider_id: "e2e".into(),
        model_id: "echo-1".into(),
    }
}

pub fn test_models() -> Vec<ModelInfo> {
    vec![ModelInfo {
        provider_id: "e2e".into(),
        model_id: "echo-1".into(),
        name: "Echo 1".into(),
        reasoning: Some(false),
        context_limit: Some(8192),
    }]
}

/// The text of an answer: its text deltas in seq order.
pub fn answer_text(chunks: &[ChunkView], message: &MessageId) -> String {
    let mut mine: Vec<&ChunkView> = chunks.iter().filter(|c| &c.message_id == message).collect();
    mine.sort_by_key(|c| c.seq);
    mine.iter()
        .filter_map(|c| match &c.body {
            ChunkBody::Text { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

/// The seqs of one message's chunks, in the order given.
pub fn seqs_of(chunks: &[ChunkView], message: &MessageId) -> Vec<u32> {
    chunks
        .iter()
        .filter(|c| &c.message_id == message)
        .map(|c| c.seq)
        .collect()
}
