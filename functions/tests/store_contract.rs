//! `DynamoStore` against the store contract on moto's DynamoDB, plus what
//! only this adapter has: its table definition, connections with many
//! watches, large items.
//!
//! Moto: `TETHER_MOTO_URL` names a running server (shared with other test
//! binaries; every check uses tables of its own, so none resets it).
//! Otherwise this binary starts `moto_server` on a free loopback port, from
//! `$TETHER_MOTO_BIN`, `$HOME/.cache/tether/venv/bin/moto_server` or `PATH`,
//! and the server goes when the test process does. No moto is a failure,
//! never a skip: `scripts/test` installs it (`scripts/install-moto`).
//!
//! Requests go to moto one at a time (see [`OneAtATime`]): moto serves
//! requests on threads without a lock, and its transactions are not
//! isolated (a cancelled one restores a copy of the whole table, undoing
//! what other requests wrote meanwhile). DynamoDB makes each request
//! atomic, and one-at-a-time requests are exactly that; the contract's
//! races still interleave their requests.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_dynamodb::types::{KeyType, ProjectionType, TimeToLiveStatus};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tether_domain::ids::SessionId;
use tether_domain::model::{Connection, Message, MessageStatus};
use tether_domain::store::{MessagePatch, Store, StoreError};
use tether_domain::testkit::{self, T0};
use tether_functions::dynamo::{https_client, TABLE};
use tether_functions::{DynamoStore, TableNames};

// ---------------------------------------------------------------------------
// Moto
// ---------------------------------------------------------------------------

/// The moto server of this process: started once, gone with the process.
struct Moto {
    url: String,
    /// Holds the watchdog's stdin open; when the process exits, the pipe
    /// closes and the watchdog kills the server.
    _watchdog: Option<(Child, ChildStdin)>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

fn moto_url() -> &'static str {
    &MOTO.get_or_init(start_moto).url
}

fn find_moto() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TETHER_MOTO_BIN") {
        return Some(PathBuf::from(bin));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = Path::new(&home).join(".cache/tether/venv/bin/moto_server");
        if venv.is_file() {
            return Some(venv);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
}

fn start_moto() -> Moto {
    if let Ok(url) = std::env::var("TETHER_MOTO_URL") {
        return Moto {
            url,
            _watchdog: None,
        };
    }
    let bin = find_moto().filter(|b| b.is_file()).unwrap_or_else(|| {
        panic!(
            "moto_server not found (looked at $TETHER_MOTO_BIN, \
             $HOME/.cache/tether/venv/bin/moto_server and PATH): run scripts/test, \
             which installs it with scripts/install-moto, or set TETHER_MOTO_URL \
             to a running moto server"
        )
    });
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port();
    let log = std::env::temp_dir().join(format!("tether-moto-{port}.log"));
    // The watchdog shell runs the server and kills it once its stdin (held
    // by this process) closes, whichever way this process ends.
    // The watchdog shell runs the server, kills it once its stdin (held by
    // this process) closes, whichever way this process ends, and exits if
    // the server dies first.
    // (A background list reads /dev/null unless told otherwise: hence fd 3.)
    let script = r#"bin=$1; port=$2; log=$3
exec 3<&0
"$bin" -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
server=$!
trap 'kill "$server" 2>/dev/null' EXIT
(cat <&3 >/dev/null; kill "$server" 2>/dev/null) &
wait "$server"
"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&bin)
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdin = child.stdin.take().expect("watchdog stdin");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let mut text = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
            panic!(
                "{} did not start listening on port {port}; its log ({}):\n{text}",
                bin.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The log matters only when the server fails to start; moto keeps
    // writing to the unlinked file until it exits.
    let _ = std::fs::remove_file(&log);
    Moto {
        url: format!("http://127.0.0.1:{port}"),
        _watchdog: Some((child, stdin)),
    }
}

// ---------------------------------------------------------------------------
// A client that sends one request at a time
// ---------------------------------------------------------------------------

/// Shared by every client of this process, so that all requests to moto
/// are serialised.
static TURN: LazyLock<Arc<tokio::sync::Mutex<()>>> =
    LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));

/// Wraps the store's own HTTP client; each request waits for its turn and
/// holds it until the response arrives (moto answers after it has applied
/// the request in full).
#[derive(Debug)]
struct OneAtATime {
    inner: SharedHttpClient,
}

impl HttpClient for OneAtATime {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(OneAtATimeConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct OneAtATimeConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for OneAtATimeConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            let _turn = Arc::clone(&TURN).lock_owned().await;
            inner.call(request).await
        })
    }
}

fn client() -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(moto_url())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .http_client(SharedHttpClient::new(OneAtATime {
            inner: https_client(),
        }))
        .build();
    Client::from_conf(config)
}

/// Table names no other check or test binary uses.
fn fresh_names() -> TableNames {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tag = tether_domain::auth::random_base32(8);
    TableNames::with_prefix(&format!("t{}-{tag}-{n}-", std::process::id()))
}

async fn fresh_store(client: &Client) -> DynamoStore {
    let names = fresh_names();
    DynamoStore::create_tables(client, &names)
        .await
        .expect("create tables");
    DynamoStore::new(client.clone(), names)
}

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
async fn a_message_needs_its_session() {
    let store = fresh_store(&client()).await;
    let seed = testkit::seed(&store).await;
    let unsaved = testkit::session(&seed.user.id, &seed.worker.id, T0);
    let result = store
        .insert_message(&testkit::message(&unsaved, "orphan"))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert!(store
        .messages_of(&unsaved.id, 0, 10)
        .await
        .expect("list")
        .is_empty());
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
    // The protocol's limits: 30 KB of text, a 128 KB completion frame.
    let m = Message {
        text: "x".repeat(30 * 1024),
        ..testkit::message(&session, "")
    };
    let m = testkit::assert_new(store.insert_message(&m).await.expect("insert"));
    let patch = MessagePatch {
        chunk_count: Some(1),
        final_text: Some("y".repeat(128 * 1024)),
        error: None,
    };
    let done = store
        .transition_message(
            &m.id,
            &[MessageStatus::Queued],
            MessageStatus::Complete,
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
