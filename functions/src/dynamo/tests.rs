//! Checks only this adapter can make: items and their entries. The
//! behaviour every store shares is in `tether_domain::testkit`.

use tether_domain::auth::SecretHash;
use tether_domain::ids::UserId;
use tether_domain::model::{
    AgentState, Chunk, Connection, Message, MessageStatus, Millis, PairingToken, Principal, Prompt,
    PromptKind, Session, SessionStatus, Ticket, TitleSource, User, Worker, WorkerStatus,
};
use tether_domain::protocol::AgentReport;
use tether_domain::store::StoreError;

use super::codec::{n, s, ttl_seconds, Entity, Rec, COUNT, EXPIRES_AT, EXPIRY_SHARD, TTL};
use super::items::{
    chunk_from_item, chunk_item, counter_item, pairing_token_from_item, pairing_token_item,
    ticket_from_item, ticket_item, ConnRecord, MessageRecord, SourceRecord,
};
use tether_domain::ids::{ConnectionId, MessageId, PromptId, SessionId, WorkerId};
use tether_domain::protocol::{ChunkBody, ModelInfo, ModelRef, PromptAnswer};

const T0: Millis = 1_700_000_000_000;

fn model() -> ModelRef {
    ModelRef {
        provider_id: "anthropic".into(),
        model_id: "claude".into(),
    }
}

fn round_trip<E: Entity + PartialEq + std::fmt::Debug>(e: E) {
    let item = e.to_item(e.rev()).expect("encode");
    assert_eq!(E::from_item(&item).expect("decode"), e);
}

fn user() -> User {
    User {
        id: UserId::random(),
        name: "alice".into(),
        secret_hash: SecretHash::from_stored("h1"),
        admin: true,
        created_at: T0,
    }
}

fn worker(full: bool) -> Worker {
    Worker {
        id: WorkerId::random(),
        owner: full.then(UserId::random),
        status: WorkerStatus::Pending,
        credential_hash: SecretHash::from_stored("c1"),
        machine: "m".into(),
        name: "n".into(),
        workdir: "/w".into(),
        pairing_code: full.then(|| "AAAA-BBBB".into()),
        pairing_expires_at: full.then_some(T0 + 5),
        connection: full.then(ConnectionId::random),
        last_seen: full.then_some(T0 + 1),
        models: if full {
            vec![ModelInfo {
                provider_id: "p".into(),
                model_id: "m".into(),
                name: "M".into(),
                reasoning: None,
                context_limit: Some(7),
            }]
        } else {
            Vec::new()
        },
        default_model: full.then(model),
        version: full.then(|| "1".into()),
        agent: full.then(|| AgentReport {
            state: AgentState::Down,
            reason: Some("opencode exited".into()),
            at: T0 + 2,
        }),
        source: full.then(|| "203.0.113.7".into()),
        created_at: -5,
    }
}

#[test]
fn entities_round_trip() {
    round_trip(Rec {
        value: user(),
        rev: 3,
    });
    round_trip(Rec {
        value: worker(true),
        rev: 1,
    });
    round_trip(Rec {
        value: worker(false),
        rev: 0,
    });
    let conn = Connection {
        id: ConnectionId::random(),
        principal: Principal::Worker(WorkerId::random()),
        owner: Some(UserId::random()),
        connected_at: T0,
        last_seen: T0 + 1,
        expires_at: T0 + 2,
    };
    round_trip(ConnRecord {
        conn: conn.clone(),
        watching: ["a".to_owned(), "b".to_owned()].into(),
        rev: 4,
    });
    round_trip(ConnRecord::new(Connection {
        principal: Principal::User(UserId::random()),
        owner: None,
        ..conn
    }));
    let session = Session {
        id: SessionId::random(),
        owner: UserId::random(),
        worker: WorkerId::random(),
        model: model(),
        title: "t".into(),
        title_source: Some(TitleSource::Agent),
        status: SessionStatus::Busy,
        agent_session_id: Some("ses".into()),
        error: Some("e".into()),
        message_count: 3,
        created_at: T0,
        updated_at: T0 + 1,
    };
    round_trip(Rec {
        value: session,
        rev: 2,
    });
    let message = Message {
        id: MessageId::random(),
        session: SessionId::random(),
        owner: UserId::random(),
        worker: WorkerId::random(),
        number: 4,
        text: "hi".into(),
        model: Some(ModelRef {
            provider_id: "fake".into(),
            model_id: "other-model".into(),
        }),
        status: MessageStatus::Complete,
        chunk_count: Some(0),
        error: Some(String::new()),
        created_at: T0,
        updated_at: T0,
    };
    round_trip(MessageRecord {
        message,
        session_created: T0 - 1,
        rev: 9,
    });
    let prompt = Prompt {
        id: PromptId::random(),
        session: SessionId::random(),
        message: MessageId::random(),
        worker: WorkerId::random(),
        owner: UserId::random(),
        kind: PromptKind::Question,
        answer: Some(PromptAnswer::QuestionRejected),
        delivered: false,
        created_at: T0,
    };
    round_trip(Rec {
        value: prompt,
        rev: 1,
    });
}

#[test]
fn plain_items_round_trip() {
    let chunk = Chunk {
        message: MessageId::random(),
        seq: 7,
        body: ChunkBody::Text {
            part_id: "p".into(),
            delta: "d".into(),
        },
        created_at: T0,
    };
    let item = chunk_item(&chunk).expect("encode");
    assert_eq!(chunk_from_item(&item).expect("decode"), chunk);
    let ticket = Ticket {
        user: UserId::random(),
        user_secret: SecretHash::from_stored("s"),
        expires_at: T0,
    };
    let item = ticket_item(&SecretHash::from_stored("t"), &ticket);
    assert_eq!(ticket_from_item(&item).expect("decode"), ticket);
}

#[test]
fn entries_follow_state() {
    let mut w = Rec::new(worker(true));
    let all: Vec<String> = w.entries().iter().map(|e| e.key.pk.clone()).collect();
    assert_eq!(all.len(), 4, "{all:?}");
    w.value.status = WorkerStatus::Approved;
    w.value.pairing_code = None;
    assert_eq!(w.entries().len(), 2, "credential and owner");
    assert!(w.entries()[0].unique);
}

#[test]
fn a_pending_worker_expires_with_its_code() {
    let pending = Rec::new(Worker {
        owner: None,
        ..worker(true)
    });
    let item = pending.to_item(1).expect("encode");
    assert_eq!(item.get(TTL), Some(&n(ttl_seconds(T0 + 5))));
    assert!(item.contains_key(EXPIRY_SHARD), "the purge finds it");
    for e in pending.entries() {
        assert_eq!(
            e.item.get(TTL),
            Some(&n(ttl_seconds(T0 + 5))),
            "{:?}",
            e.key
        );
        assert!(!e.item.contains_key(EXPIRY_SHARD), "{:?}", e.key);
    }
    let approved = Rec::new(Worker {
        status: WorkerStatus::Approved,
        pairing_code: None,
        pairing_expires_at: None,
        ..worker(true)
    });
    let item = approved.to_item(2).expect("encode");
    assert!(!item.contains_key(TTL) && !item.contains_key(EXPIRY_SHARD));
    assert!(approved.entries().iter().all(|e| !e.item.contains_key(TTL)));

    let source = SourceRecord {
        source: "2001:db8::/64".into(),
        pending: [("wkr_a".to_owned(), T0), ("wkr_b".to_owned(), T0 + 9)].into(),
        rev: 4,
    };
    round_trip(source.clone());
    let item = source.to_item(4).expect("encode");
    assert_eq!(
        item.get(TTL),
        Some(&n(ttl_seconds(T0 + 9))),
        "outlives its last worker"
    );
}

#[test]
fn pairing_tokens_and_counters_expire() {
    let token = PairingToken {
        owner: UserId::random(),
        owner_secret: SecretHash::from_stored("s"),
        expires_at: T0,
    };
    let item = pairing_token_item(&SecretHash::from_stored("h"), &token);
    assert_eq!(pairing_token_from_item(&item).expect("decode"), token);
    assert!(item.contains_key(TTL) && item.contains_key(EXPIRY_SHARD));
    let counter = counter_item("pairing:usr_1", T0, T0 + 60_000);
    assert_eq!(counter.get(COUNT), Some(&n(1)));
    assert_eq!(counter.get(EXPIRES_AT), Some(&n(T0 + 60_000)));
    assert!(counter.contains_key(TTL) && counter.contains_key(EXPIRY_SHARD));
}

#[test]
fn ttl_rounds_up_to_seconds() {
    assert_eq!(ttl_seconds(1_000), 1);
    assert_eq!(ttl_seconds(1_001), 2);
    assert_eq!(ttl_seconds(0), 0);
    assert_eq!(ttl_seconds(-1), 0);
}

/// Messages written before completions stopped carrying text may still
/// have a `final_text` attribute: it is read past, and never written.
#[test]
fn a_message_item_with_an_old_final_text_reads_without_it() {
    let record = MessageRecord {
        message: Message {
            id: MessageId::random(),
            session: SessionId::random(),
            owner: UserId::random(),
            worker: WorkerId::random(),
            number: 0,
            text: "hi".into(),
            model: None,
            status: MessageStatus::Complete,
            chunk_count: Some(2),
            error: None,
            created_at: T0,
            updated_at: T0 + 1,
        },
        session_created: T0 - 1,
        rev: 3,
    };
    let mut item = record.to_item(3).expect("encode");
    assert!(!item.contains_key("final_text"), "not written");
    item.insert("final_text".into(), s("Hello there"));
    assert_eq!(MessageRecord::from_item(&item).expect("decode"), record);
}

#[test]
fn a_corrupt_attribute_is_reported() {
    let mut item = Rec::new(user()).to_item(1).expect("encode");
    item.insert("admin".into(), s("yes"));
    match Rec::<User>::from_item(&item) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("admin"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
