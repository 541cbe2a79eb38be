//! Entities as clients see them: the protocol's views of the model's
//! records.

use crate::ids::SessionId;
use crate::model::{Chunk, Message, Millis, Session, Worker};
use crate::protocol::{ChunkView, MachineView, MessageView, SessionView, WorkerView};

pub(crate) fn worker_view(w: &Worker, now: Millis, presence_timeout_ms: i64) -> WorkerView {
    WorkerView {
        worker_id: w.id.clone(),
        machine: w.machine.clone(),
        name: w.name.clone(),
        workdir: w.workdir.clone(),
        status: w.status,
        online: w.online(now, presence_timeout_ms),
        last_seen: w.last_seen,
        models: w.models.clone(),
        default_model: w.default_model.clone(),
        agent: w.agent.clone(),
        pairing_code: w.pairing_code.clone(),
        created_at: w.created_at,
    }
}

pub(crate) fn machines(workers: Vec<WorkerView>) -> Vec<MachineView> {
    let mut machines: Vec<MachineView> = Vec::new();
    for w in workers {
        match machines.iter_mut().find(|m| m.name == w.machine) {
            Some(m) => {
                m.online |= w.online;
                m.workers.push(w);
            }
            None => machines.push(MachineView {
                name: w.machine.clone(),
                online: w.online,
                workers: vec![w],
            }),
        }
    }
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    machines
}

pub(crate) fn session_view(s: &Session) -> SessionView {
    SessionView {
        session_id: s.id.clone(),
        worker_id: s.worker.clone(),
        model: s.model.clone(),
        title: s.title.clone(),
        title_source: s.title_source,
        status: s.status,
        error: s.error.clone(),
        message_count: s.message_count,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

pub(crate) fn message_view(m: &Message) -> MessageView {
    MessageView {
        session_id: m.session.clone(),
        message_id: m.id.clone(),
        number: m.number,
        text: m.text.clone(),
        model: m.model.clone(),
        status: m.status,
        chunk_count: m.chunk_count,
        error: m.error.clone(),
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

pub(crate) fn chunk_view(session: &SessionId, c: &Chunk) -> ChunkView {
    ChunkView {
        session_id: session.clone(),
        message_id: c.message.clone(),
        seq: c.seq,
        body: c.body.clone(),
    }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("protocol types serialize")
}
