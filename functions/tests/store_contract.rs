//! `DynamoStore` against the store contract on moto's DynamoDB, plus what
//! only this adapter has: its table definition, connections with many
//! watches, large items. Moto and its one-request-at-a-time client are in
//! `support` (shared with the handler tests).

mod support;

use std::time::Instant;

use aws_sdk_dynamodb::types::{KeyType, ProjectionType, TimeToLiveStatus};
use tether_domain::ids::SessionId;
use tether_domain::model::{Connection, Message, MessageStatus};
use tether_domain::store::{MessagePatch, Store};
use tether_domain::testkit::{self, T0};
use tether_functions::dynamo::TABLE;
use tether_functions::DynamoStore;

use support::{client, fresh_names, fresh_store};

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// Several worker threads, so the concurrency checks race for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract() {
    let client = client();
    let started = Instant::now();
    testkit::store_contract(|| fresh_store(&client)).await;
    eprintln!("store contract on moto: {:?}", started.elapsed());
}

#[tokio::test]
async fn tables_match_their_definition_and_creating_again_is_harmless() {
    let client = client();
    let names = fresh_names();
    DynamoStore::create_tables(&client, &names)
        .await
        .expect("create");
    DynamoStore::create_tables(&client, &names)
        .await
        .expect("create again");

    let table = client
        .describe_table()
        .table_name(&names.main)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let keys: Vec<(String, KeyType)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (TABLE.hash_key.to_owned(), KeyType::Hash),
            (TABLE.range_key.to_owned(), KeyType::Range)
        ]
    );
    let gsis = table.global_secondary_indexes();
    assert_eq!(gsis.len(), 1, "{gsis:?}");
    assert_eq!(gsis[0].index_name(), Some(TABLE.gsi_name));
    let gsi_keys: Vec<&str> = gsis[0]
        .key_schema()
        .iter()
        .map(|k| k.attribute_name())
        .collect();
    assert_eq!(gsi_keys, vec![TABLE.gsi_hash_key, TABLE.gsi_range_key]);
    assert_eq!(
        gsis[0].projection().and_then(|p| p.projection_type()),
        Some(&ProjectionType::KeysOnly)
    );

    let ttl = client
        .describe_time_to_live()
        .table_name(&names.main)
        .send()
        .await
        .expect("ttl")
        .time_to_live_description
        .expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some(TABLE.ttl_attribute));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}

#[tokio::test]
async fn a_connection_with_more_watches_than_a_transaction_holds_goes_whole() {
    let store = fresh_store(&client()).await;
    let seed = testkit::seed(&store).await;
    let conn = testkit::user_connection(&seed.user.id, T0);
    let other = testkit::user_connection(&seed.user.id, T0);
    store.put_connection(&conn).await.expect("put");
    store.put_connection(&other).await.expect("put");
    let sessions: Vec<SessionId> = (0..230).map(|_| SessionId::random()).collect();
    for s in &sessions {
        assert!(store.watch(s, &conn.id).await.expect("watch"));
    }
    assert!(store.watch(&sessions[7], &other.id).await.expect("watch"));

    assert_eq!(
        store.delete_connection(&conn.id).await.expect("delete"),
        Some(conn.clone())
    );
    for s in &sessions {
        let expected = if s == &sessions[7] {
            vec![other.id.clone()]
        } else {
            Vec::new()
        };
        assert_eq!(store.watchers(s).await.expect("watchers"), expected);
    }
    assert_eq!(
        store
            .user_connections(&seed.user.id, T0)
            .await
            .expect("list"),
        vec![other.id.clone()]
    );
}

#[tokio::test]
async fn putting_a_connection_again_keeps_its_watches() {
    let store = fresh_store(&client()).await;
    let seed = testkit::seed(&store).await;
    let conn = testkit::user_connection(&seed.user.id, T0);
    store.put_connection(&conn).await.expect("put");
    let session = SessionId::random();
    assert!(store.watch(&session, &conn.id).await.expect("watch"));

    let again = Connection {
        last_seen: T0 + 5,
        expires_at: T0 + 10,
        ..conn.clone()
    };
    store.put_connection(&again).await.expect("put again");
    assert_eq!(
        store.connection(&conn.id).await.expect("get"),
        Some(again.clone())
    );
    assert_eq!(
        store.watchers(&session).await.expect("watchers"),
        vec![conn.id.clone()],
        "as SQLite's upsert: the watches stay"
    );
    assert!(store
        .user_connections(&seed.user.id, T0 + 10)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn the_largest_message_fits_in_an_item() {
    let store = fresh_store(&client()).await;
    let seed = testkit::seed(&store).await;
    let session = testkit::seed_session(&store, &seed, T0).await;
    // The protocol's limits: 30 KB of text, and an error the host cuts to
    // 2,000 characters (4 bytes each at most). The answer is in its chunks.
    let m = Message {
        text: "x".repeat(30 * 1024),
        ..testkit::message(&session, "")
    };
    let m = testkit::assert_new(store.insert_message(&m, testkit::NO_CAP).await.expect("insert"));
    let patch = MessagePatch {
        chunk_count: Some(1),
        error: Some("𝄞".repeat(2000)),
    };
    let done = store
        .transition_message(
            &m.id,
            &[MessageStatus::Queued],
            MessageStatus::Failed,
            &patch,
            T0 + 1,
        )
        .await
        .expect("complete")
        .expect("was queued");
    assert_eq!(store.message(&m.id).await.expect("get"), Some(done));
    assert!(store
        .open_messages(&seed.worker.id)
        .await
        .expect("open")
        .is_empty());
}
