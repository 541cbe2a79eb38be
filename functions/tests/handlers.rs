//! The functions' handlers, fed API Gateway's own event JSON
//! (`tests/fixtures/`, in the shapes AWS sends for `$connect`, `$disconnect`,
//! a message route and an HTTP API route), against `DynamoStore` on moto and
//! a recording push port. The `$connect` and HTTP API fixtures came through
//! CloudFront: they carry its origin header (`X-Tether-Origin`) with
//! [`ORIGIN_SECRET`], the secret the deps are given.

mod support;

use std::path::Path;
use std::sync::Arc;

use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::encodings::Body;
use serde_json::{json, Value};
use tether_domain::auth::Secret;
use tether_domain::fakes::RecordingPush;
use tether_domain::ids::{ConnectionId, SessionId};
use tether_domain::model::WorkerStatus;
use tether_domain::store::Store;
use tether_functions::config::{OriginSecret, ORIGIN_HEADER};
use tether_domain::edge::now_millis;
use tether_functions::handlers::{self, Deps, HandlerError};
use tether_functions::push::{FixedPush, Origin};
use tether_functions::DynamoStore;

type TestDeps = Deps<DynamoStore, FixedPush<RecordingPush>>;

/// The connection ids of the fixtures.
const BROWSER: &str = "Cz7PEfQ2joECFlQ=";
const WORKER: &str = "Cz7QKdcVjoECE-w=";

/// The origin secret in the fixtures' `X-Tether-Origin` header (shaped as
/// the template derives it: the stack id's UUID and the table's name).
const ORIGIN_SECRET: &str = "5b0c7e40-9d1a-11f0-8c3e-0a58a9feac02.tether-Table-Q3ZP7W1K9XJ4";

async fn deps() -> TestDeps {
    deps_on(&support::client()).await
}

async fn deps_on(client: &aws_sdk_dynamodb::Client) -> TestDeps {
    let store = support::fresh_store(client).await;
    Deps::new(
        store,
        FixedPush(RecordingPush::default()),
        tether_domain::Config::default(),
    )
    .with_origin_secret(OriginSecret::new(ORIGIN_SECRET).expect("the fixtures' secret"))
}

fn recorded(deps: &TestDeps) -> &RecordingPush {
    &deps.pushes.0
}

fn conn(id: &str) -> ConnectionId {
    ConnectionId::parse(id).expect("connection id")
}

/// A fixture with some fields replaced (JSON pointers; missing parents are
/// made).
fn fixture(name: &str, changes: &[(&str, Value)]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut value: Value = serde_json::from_str(&text).expect("fixture JSON");
    for (pointer, new) in changes {
        set(&mut value, pointer, new.clone());
    }
    value
}

fn set(value: &mut Value, pointer: &str, new: Value) {
    let mut at = value;
    for part in pointer.trim_start_matches('/').split('/') {
        if at.is_null() {
            *at = json!({});
        }
        at = at
            .as_object_mut()
            .unwrap_or_else(|| panic!("{pointer}: not an object"))
            .entry(part.to_owned())
            .or_insert(Value::Null);
    }
    *at = new;
}

/// An event with its origin header replaced: none, or `value`. Handles both
/// shapes (a WebSocket event's `headers` and `multiValueHeaders`, an HTTP
/// API event's lower-case `headers`).
fn with_origin(mut event: Value, value: Option<&str>) -> Value {
    for (map, multi) in [("headers", false), ("multiValueHeaders", true)] {
        let Some(headers) = event.get_mut(map).and_then(Value::as_object_mut) else {
            continue;
        };
        let name = headers
            .keys()
            .find(|k| k.eq_ignore_ascii_case(ORIGIN_HEADER))
            .cloned()
            .unwrap_or_else(|| "X-Tether-Origin".to_owned());
        headers.remove(&name);
        if let Some(value) = value {
            headers.insert(name, if multi { json!([value]) } else { json!(value) });
        }
    }
    event
}

fn ws_event(value: Value) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(value).expect("a WebSocket event")
}

fn http_event(value: Value) -> ApiGatewayV2httpRequest {
    serde_json::from_value(value).expect("an HTTP API event")
}

fn body_json(body: &Option<Body>) -> Value {
    match body {
        Some(Body::Text(text)) => serde_json::from_str(text).expect("a JSON body"),
        other => panic!("expected a text body, got {other:?}"),
    }
}

/// `$connect` of a browser with a ticket, at `at`.
async fn connect_browser(deps: &TestDeps, id: &str, ticket: &str, at: i64) -> ApiGatewayProxyResponse {
    let event = fixture(
        "connect-browser",
        &[
            ("/queryStringParameters/ticket", json!(ticket)),
            ("/multiValueQueryStringParameters/ticket", json!([ticket])),
            ("/requestContext/connectionId", json!(id)),
            ("/requestContext/connectedAt", json!(at)),
            ("/requestContext/requestTimeEpoch", json!(at)),
        ],
    );
    handlers::connect(ws_event(event), deps).await.expect("connect runs")
}

async fn connect_worker(deps: &TestDeps, id: &str, credential: &str) -> ApiGatewayProxyResponse {
    let header = format!("Bearer {credential}");
    let now = now_millis();
    let event = fixture(
        "connect-worker",
        &[
            ("/headers/Authorization", json!(header)),
            ("/multiValueHeaders/Authorization", json!([header])),
            ("/requestContext/connectionId", json!(id)),
            ("/requestContext/connectedAt", json!(now)),
            ("/requestContext/requestTimeEpoch", json!(now)),
        ],
    );
    handlers::connect(ws_event(event), deps).await.expect("connect runs")
}

/// One frame from a connection; its reply.
async fn send(deps: &TestDeps, id: &str, frame: Value) -> Value {
    let event = fixture(
        "message",
        &[
            ("/requestContext/connectionId", json!(id)),
            ("/requestContext/requestTimeEpoch", json!(now_millis())),
            ("/body", json!(frame.to_string())),
        ],
    );
    let response = handlers::message(ws_event(event), deps)
        .await
        .expect("message runs");
    assert_eq!(response.status_code, 200);
    body_json(&response.body)
}

/// A frame that must succeed; its reply's data.
async fn ok(deps: &TestDeps, id: &str, frame: Value) -> Value {
    let reply = send(deps, id, frame.clone()).await;
    assert_eq!(reply["ok"], json!(true), "{frame} got {reply}");
    assert_eq!(reply["id"], frame["id"]);
    reply["data"].clone()
}

async fn http(deps: &TestDeps, name: &str, changes: &[(&str, Value)]) -> ApiGatewayV2httpResponse {
    let mut changes = changes.to_vec();
    changes.push(("/requestContext/timeEpoch", json!(now_millis())));
    handlers::http(http_event(fixture(name, &changes)), deps)
        .await
        .expect("http runs")
}

async fn ticket(deps: &TestDeps, secret: &str) -> String {
    let response = http(
        deps,
        "http-ticket",
        &[("/headers/authorization", json!(format!("Bearer {secret}")))],
    )
    .await;
    assert_eq!(response.status_code, 200, "{:?}", response.body);
    assert_eq!(
        response.headers.get("cache-control").map(|v| v.to_str().ok()),
        Some(Some("no-store"))
    );
    body_json(&response.body)["ticket"]
        .as_str()
        .expect("a ticket")
        .to_owned()
}

async fn add_user(deps: &TestDeps, name: &str) -> Secret {
    let (_, secret) = deps
        .domain(Origin::default())
        .expect("domain")
        .add_user(name, true, now_millis())
        .await
        .expect("add user");
    secret
}

/// The `type`s of the frames pushed to a connection since the last look.
fn pushed(deps: &TestDeps, id: &str) -> Vec<Value> {
    recorded(deps)
        .take(&conn(id))
        .into_iter()
        .map(|f| serde_json::to_value(&f).expect("frame JSON"))
        .collect()
}

fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------

/// The domain's shared handler scenarios (`testkit::handler_scenarios`:
/// the agent's state, titles from the agent), on `DynamoStore`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_handler_scenarios() {
    let client = support::client();
    tether_domain::testkit::handler_scenarios(|| support::fresh_store(&client)).await;
}

#[tokio::test]
async fn a_browser_signs_in_with_a_ticket_and_its_frames_get_replies() {
    let deps = deps().await;
    let secret = add_user(&deps, "ada").await;
    let ticket = ticket(&deps, secret.expose()).await;

    let accepted = connect_browser(&deps, BROWSER, &ticket, now_millis()).await;
    assert_eq!(accepted.status_code, 200, "{:?}", accepted.body);
    let record = deps
        .store
        .connection(&conn(BROWSER))
        .await
        .expect("read")
        .expect("the connection is recorded");
    assert_eq!(record.id.as_str(), BROWSER);

    let me = ok(&deps, BROWSER, json!({"action": "me", "id": "r1"})).await;
    assert_eq!(me["user_name"], json!("ada"));
    assert_eq!(me["role"], json!("user"));

    // Every route goes to the same handler: an unknown action is answered.
    let reply = send(&deps, BROWSER, json!({"action": "fly", "id": "r2"})).await;
    assert_eq!(reply["ok"], json!(false));
    assert_eq!(reply["error"]["code"], json!("unknown_action"));
    let reply = send(&deps, BROWSER, json!("not an object")).await;
    assert_eq!(reply["error"]["code"], json!("bad_json"));
}

#[tokio::test]
async fn a_refused_connect_answers_with_the_status_of_its_error() {
    let deps = deps().await;
    let secret = add_user(&deps, "ada").await;
    let ticket = ticket(&deps, secret.expose()).await;
    assert_eq!(connect_browser(&deps, BROWSER, &ticket, now_millis()).await.status_code, 200);

    // A ticket is good once.
    let again = connect_browser(&deps, "Cz7QAAAAjoECAAA=", &ticket, now_millis()).await;
    assert_eq!(again.status_code, 401);
    assert_eq!(body_json(&again.body)["code"], json!("unauthorized"));
    assert!(deps
        .store
        .connection(&conn("Cz7QAAAAjoECAAA="))
        .await
        .expect("read")
        .is_none());

    // Neither a ticket nor a credential.
    let mut bare = fixture(
        "connect-browser",
        &[("/requestContext/requestTimeEpoch", json!(now_millis()))],
    );
    bare["queryStringParameters"] = json!({"v": "1"});
    bare["multiValueQueryStringParameters"] = json!({"v": ["1"]});
    let refused = handlers::connect(ws_event(bare), &deps).await.expect("runs");
    assert_eq!(refused.status_code, 401);

    // A protocol version the server does not speak.
    let fresh = ticket_for(&deps, &secret).await;
    let event = fixture(
        "connect-browser",
        &[
            ("/queryStringParameters/ticket", json!(fresh)),
            ("/queryStringParameters/v", json!("2")),
            ("/requestContext/requestTimeEpoch", json!(now_millis())),
        ],
    );
    let refused = handlers::connect(ws_event(event), &deps).await.expect("runs");
    assert_eq!(refused.status_code, 426);
    assert_eq!(body_json(&refused.body)["code"], json!("unsupported_version"));

    // An unknown worker credential, then a rejected worker.
    let credential = Secret::generate("twk_");
    let refused = connect_worker(&deps, WORKER, credential.expose()).await;
    assert_eq!(refused.status_code, 401);
    let paired = pair(&deps, credential.expose()).await;
    let worker = tether_domain::ids::WorkerId::parse(paired["worker_id"].as_str().expect("id"))
        .expect("worker id");
    deps.store
        .transition_worker(&worker, WorkerStatus::Pending, WorkerStatus::Rejected, None, None)
        .await
        .expect("reject")
        .expect("was pending");
    let refused = connect_worker(&deps, WORKER, credential.expose()).await;
    assert_eq!(refused.status_code, 403);
    assert_eq!(body_json(&refused.body)["code"], json!("worker_not_approved"));
}

/// Everything a client can send straight to the APIs' `execute-api`
/// endpoints, bypassing CloudFront, is refused with 403 before the handler
/// reads or writes anything; the very same requests with CloudFront's
/// header then pass (so the refusals used up no ticket, paired no worker).
#[tokio::test]
async fn only_requests_through_cloudfront_get_in() {
    let tap = Arc::new(support::Tap::default());
    let deps = deps_on(&support::tapped_client(tap.clone())).await;
    let secret = add_user(&deps, "ada").await;
    let ticket = ticket(&deps, secret.expose()).await;
    let credential = Secret::generate("twk_");
    let user_bearer = format!("Bearer {}", secret.expose());
    let worker_bearer = format!("Bearer {}", credential.expose());
    let now = now_millis();
    tap.take();

    let wrong = ORIGIN_SECRET.replace('5', "6");
    let padded = format!("{ORIGIN_SECRET} ");
    let repeated = format!("{ORIGIN_SECRET},{ORIGIN_SECRET}");
    let cases: [(&str, Option<&str>); 6] = [
        ("no origin header", None),
        ("an empty one", Some("")),
        ("a wrong secret of the same length", Some(wrong.as_str())),
        ("the secret with more after it", Some(padded.as_str())),
        ("the secret twice, as HTTP API joins a repeated header", Some(repeated.as_str())),
        ("a prefix of the secret", Some(&ORIGIN_SECRET[..32])),
    ];
    for (case, origin) in cases {
        let forbidden = |status: i64, body: &Option<Body>| {
            assert_eq!(status, 403, "{case}: {body:?}");
            let body = body_json(body);
            assert_eq!(body["code"], json!("forbidden"), "{case}");
            assert!(body["message"].as_str().is_some_and(|m| m.contains("CloudFront")), "{case}: {body}");
        };
        let browser = fixture(
            "connect-browser",
            &[
                ("/queryStringParameters/ticket", json!(ticket)),
                ("/multiValueQueryStringParameters/ticket", json!([ticket])),
                ("/requestContext/connectionId", json!(BROWSER)),
                ("/requestContext/connectedAt", json!(now)),
                ("/requestContext/requestTimeEpoch", json!(now)),
            ],
        );
        let r = handlers::connect(ws_event(with_origin(browser, origin)), &deps)
            .await
            .expect("connect runs");
        forbidden(r.status_code, &r.body);

        let worker = fixture(
            "connect-worker",
            &[
                ("/headers/Authorization", json!(worker_bearer)),
                ("/multiValueHeaders/Authorization", json!([worker_bearer])),
                ("/requestContext/requestTimeEpoch", json!(now)),
            ],
        );
        let r = handlers::connect(ws_event(with_origin(worker, origin)), &deps)
            .await
            .expect("connect runs");
        forbidden(r.status_code, &r.body);

        for (name, bearer) in [("http-ticket", &user_bearer), ("http-pair", &worker_bearer)] {
            let event = fixture(
                name,
                &[
                    ("/headers/authorization", json!(bearer)),
                    ("/requestContext/timeEpoch", json!(now)),
                ],
            );
            let r = handlers::http(http_event(with_origin(event, origin)), &deps)
                .await
                .expect("http runs");
            forbidden(r.status_code, &r.body);
            assert_eq!(
                r.headers.get("cache-control").map(|v| v.to_str().ok()),
                Some(Some("no-store")),
                "{case}"
            );
        }
        // Any other path too (API Gateway would answer 404 before the
        // function; the function still answers 403 first).
        let other = fixture(
            "http-ticket",
            &[("/rawPath", json!("/api/other")), ("/requestContext/http/path", json!("/api/other"))],
        );
        let r = handlers::http(http_event(with_origin(other, origin)), &deps)
            .await
            .expect("http runs");
        forbidden(r.status_code, &r.body);

        let calls = tap.take();
        assert!(calls.is_empty(), "{case}: DynamoDB was called: {:?}", calls.iter().map(|(op, _)| op).collect::<Vec<_>>());
        assert!(pushed(&deps, BROWSER).is_empty() && pushed(&deps, WORKER).is_empty(), "{case}");
    }
    assert!(deps.store.connection(&conn(BROWSER)).await.expect("read").is_none());

    // The same requests through CloudFront: the ticket is still good, the
    // credential still unknown (so it pairs now, as a new worker).
    assert_eq!(connect_browser(&deps, BROWSER, &ticket, now_millis()).await.status_code, 200);
    assert_eq!(connect_worker(&deps, WORKER, credential.expose()).await.status_code, 401);
    let paired = pair(&deps, credential.expose()).await;
    assert_eq!(paired["status"], json!("pending"));
    assert_eq!(connect_worker(&deps, WORKER, credential.expose()).await.status_code, 200);
    ticket_for(&deps, &secret).await;
}

/// Deps without an origin secret (a function the runtime would not have
/// started) let nothing in, not even CloudFront's requests.
#[tokio::test]
async fn without_an_origin_secret_nothing_gets_in() {
    let store = support::fresh_store(&support::client()).await;
    let deps: TestDeps = Deps::new(
        store,
        FixedPush(RecordingPush::default()),
        tether_domain::Config::default(),
    );
    let r = handlers::connect(ws_event(fixture("connect-browser", &[])), &deps)
        .await
        .expect("runs");
    assert_eq!(r.status_code, 403);
    let r = handlers::http(http_event(fixture("http-ticket", &[])), &deps)
        .await
        .expect("runs");
    assert_eq!(r.status_code, 403);
}

async fn ticket_for(deps: &TestDeps, secret: &Secret) -> String {
    ticket(deps, secret.expose()).await
}

async fn pair(deps: &TestDeps, credential: &str) -> Value {
    let response = http(
        deps,
        "http-pair",
        &[("/headers/authorization", json!(format!("Bearer {credential}")))],
    )
    .await;
    assert_eq!(response.status_code, 200, "{:?}", response.body);
    body_json(&response.body)
}

#[tokio::test]
async fn a_worker_pairs_and_streams_to_its_watchers_and_a_gone_watcher_is_dropped() {
    let deps = deps().await;
    let secret = add_user(&deps, "ada").await;
    let t = ticket(&deps, secret.expose()).await;
    assert_eq!(connect_browser(&deps, BROWSER, &t, now_millis()).await.status_code, 200);

    // Pairing: POST /api/pair, connect as a pending worker, approve.
    let credential = Secret::generate("twk_");
    let paired = pair(&deps, credential.expose()).await;
    assert_eq!(paired["status"], json!("pending"));
    let code = paired["code"].as_str().expect("a code").to_owned();
    let worker_id = paired["worker_id"].as_str().expect("an id").to_owned();
    assert_eq!(connect_worker(&deps, WORKER, credential.expose()).await.status_code, 200);
    ok(&deps, BROWSER, json!({"action": "pairing_approve", "id": "r1", "code": code})).await;
    let to_worker = pushed(&deps, WORKER);
    assert_eq!(types(&to_worker), ["pairing_status"], "{to_worker:?}");
    assert_eq!(to_worker[0]["status"], json!("approved"));

    let model = json!({"provider_id": "fake", "model_id": "m1"});
    ok(
        &deps,
        WORKER,
        json!({
            "action": "worker_hello", "id": "w1", "machine": "laptop", "name": "app",
            "workdir": "/home/ada/src/app", "version": "0.1.0",
            "models": [{"provider_id": "fake", "model_id": "m1", "name": "M1"}],
            "default_model": model, "active_messages": []
        }),
    )
    .await;

    // A session, watched, and a message dispatched to the worker.
    let session = SessionId::random();
    ok(
        &deps,
        BROWSER,
        json!({"action": "session_start", "id": "r2", "session_id": session, "worker_id": worker_id, "model": model}),
    )
    .await;
    assert!(types(&pushed(&deps, WORKER)).contains(&"session_start".to_owned()));
    ok(
        &deps,
        WORKER,
        json!({"action": "session_ready", "id": "w2", "session_id": session, "agent_session_id": "ses_agent1"}),
    )
    .await;
    ok(&deps, BROWSER, json!({"action": "session_watch", "id": "r3", "session_id": session})).await;
    ok(
        &deps,
        BROWSER,
        json!({"action": "message_send", "id": "r4", "session_id": session, "message_id": "msg_a1", "text": "hello"}),
    )
    .await;
    assert!(types(&pushed(&deps, WORKER)).contains(&"message_dispatch".to_owned()));
    ok(&deps, WORKER, json!({"action": "message_started", "id": "w3", "message_id": "msg_a1"})).await;

    // A second tab watches too; it connected a minute ago and is gone now
    // (API Gateway would answer 410 and never send its `$disconnect`).
    let tab = "Cz7RzzzzjoECZZZ=";
    let t2 = ticket(&deps, secret.expose()).await;
    let a_minute_ago = now_millis() - 60_000;
    assert_eq!(connect_browser(&deps, tab, &t2, a_minute_ago).await.status_code, 200);
    ok(&deps, tab, json!({"action": "session_watch", "id": "r5", "session_id": session})).await;
    recorded(&deps).set_gone(&conn(tab));
    pushed(&deps, BROWSER);

    let ack = ok(
        &deps,
        WORKER,
        json!({"action": "chunks", "id": "w4", "message_id": "msg_a1", "chunks": [
            {"seq": 0, "kind": "text", "part_id": "p1", "delta": "Hel"},
            {"seq": 1, "kind": "text", "part_id": "p1", "delta": "lo"}
        ]}),
    )
    .await;
    assert_eq!(ack, json!({"stored": [0, 1], "duplicate": []}));
    let seen = pushed(&deps, BROWSER);
    let chunks: Vec<&Value> = seen.iter().filter(|f| f["type"] == json!("chunks")).collect();
    assert_eq!(chunks.len(), 1, "{seen:?}");
    assert_eq!(chunks[0]["chunks"][1]["delta"], json!("lo"));
    // The gone tab cost nothing but its record.
    assert!(deps.store.connection(&conn(tab)).await.expect("read").is_none());
    assert_eq!(
        deps.store.watchers(&session).await.expect("watchers"),
        vec![conn(BROWSER)]
    );

    // A retry is harmless.
    let ack = ok(
        &deps,
        WORKER,
        json!({"action": "chunks", "id": "w5", "message_id": "msg_a1", "chunks": [
            {"seq": 1, "kind": "text", "part_id": "p1", "delta": "lo"}
        ]}),
    )
    .await;
    assert_eq!(ack, json!({"stored": [], "duplicate": [1]}));
    // A completion carries no text (the host has the chunks): one that
    // does is refused and changes nothing.
    let refused = send(
        &deps,
        WORKER,
        json!({"action": "message_complete", "id": "w6", "message_id": "msg_a1", "outcome": "complete", "chunk_count": 2, "final_text": "Hello"}),
    )
    .await;
    assert_eq!(refused["error"]["code"], json!("bad_request"), "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("final_text")), "{refused}");
    let done = ok(
        &deps,
        WORKER,
        json!({"action": "message_complete", "id": "w7", "message_id": "msg_a1", "outcome": "complete", "chunk_count": 2}),
    )
    .await;
    assert_eq!(done["message"]["status"], json!("complete"));
    assert_eq!(done["message"]["chunk_count"], json!(2));
    assert!(done["message"].get("final_text").is_none(), "{done}");

    // `$disconnect` forgets the connection: its next frame is refused.
    let event = fixture(
        "disconnect",
        &[
            ("/requestContext/connectionId", json!(BROWSER)),
            ("/requestContext/requestTimeEpoch", json!(now_millis())),
        ],
    );
    let response = handlers::disconnect(ws_event(event), &deps).await.expect("runs");
    assert_eq!(response.status_code, 200);
    assert!(deps.store.connection(&conn(BROWSER)).await.expect("read").is_none());
    let reply = send(&deps, BROWSER, json!({"action": "ping", "id": "r6"})).await;
    assert_eq!(reply["error"]["code"], json!("unauthorized"));
}

#[tokio::test]
async fn odd_frames_and_broken_events() {
    let deps = deps().await;

    // A binary frame.
    let event = fixture(
        "message",
        &[("/isBase64Encoded", json!(true)), ("/body", json!("AAEC"))],
    );
    let response = handlers::message(ws_event(event), &deps).await.expect("runs");
    assert_eq!(body_json(&response.body)["error"]["code"], json!("bad_json"));

    // A frame from a connection nobody knows.
    let reply = send(&deps, BROWSER, json!({"action": "ping", "id": "r1"})).await;
    assert_eq!(reply["error"]["code"], json!("unauthorized"));
    assert_eq!(reply["id"], json!("r1"));

    // An event without a connection id is not API Gateway's: the invocation fails.
    let mut event = fixture("message", &[]);
    event["requestContext"]
        .as_object_mut()
        .expect("context")
        .remove("connectionId");
    let result = handlers::message(ws_event(event), &deps).await;
    assert!(
        matches!(result, Err(HandlerError::MissingField(_))),
        "{result:?}"
    );

    // `$disconnect` of a connection never recorded is harmless.
    let event = fixture("disconnect", &[("/requestContext/connectionId", json!("Cz7Q0000joEC000="))]);
    assert_eq!(
        handlers::disconnect(ws_event(event), &deps).await.expect("runs").status_code,
        200
    );
}

#[tokio::test]
async fn the_http_api_answers_only_its_two_routes() {
    let deps = deps().await;
    let no_auth = http(&deps, "http-ticket", &[("/headers/authorization", json!(""))]).await;
    assert_eq!(no_auth.status_code, 401);
    assert_eq!(body_json(&no_auth.body)["code"], json!("unauthorized"));

    let get = http(&deps, "http-ticket", &[("/requestContext/http/method", json!("GET"))]).await;
    assert_eq!(get.status_code, 405);

    let elsewhere = http(
        &deps,
        "http-ticket",
        &[
            ("/rawPath", json!("/api/other")),
            ("/requestContext/http/path", json!("/api/other")),
        ],
    )
    .await;
    assert_eq!(elsewhere.status_code, 404);

    let credential = Secret::generate("twk_");
    let bad = http(
        &deps,
        "http-pair",
        &[
            ("/headers/authorization", json!(format!("Bearer {}", credential.expose()))),
            ("/body", json!("{\"machine\": 5}")),
        ],
    )
    .await;
    assert_eq!(bad.status_code, 400);
    assert_eq!(body_json(&bad.body)["code"], json!("bad_request"));

    // Base64 bodies (API Gateway encodes what it takes for binary).
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD
        .encode(r#"{"machine":"laptop","workdir":"/srv/app"}"#);
    let encoded = http(
        &deps,
        "http-pair",
        &[
            ("/headers/authorization", json!(format!("Bearer {}", credential.expose()))),
            ("/body", json!(body)),
            ("/isBase64Encoded", json!(true)),
        ],
    )
    .await;
    assert_eq!(encoded.status_code, 200, "{:?}", encoded.body);
    assert_eq!(body_json(&encoded.body)["status"], json!("pending"));
}

// ---------------------------------------------------------------------------
// What one answer costs (printed for infra/COST.md; bounds checked)
// ---------------------------------------------------------------------------

/// DynamoDB's size of an item in DynamoDB JSON: names plus values.
fn item_size(item: &serde_json::Map<String, Value>) -> usize {
    item.iter().map(|(name, v)| name.len() + value_size(v)).sum()
}

fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), inner) {
        ("S" | "B", Value::String(s)) => s.len(),
        ("N", Value::String(n)) => n.len().div_ceil(2) + 1,
        ("SS" | "NS" | "BS", Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or(0, str::len)).sum()
        }
        ("M", Value::Object(m)) => 3 + item_size(m),
        ("L", Value::Array(items)) => 3 + items.iter().map(value_size).sum::<usize>(),
        _ => 1,
    }
}

fn units(bytes: usize, unit: usize) -> u64 {
    bytes.max(1).div_ceil(unit) as u64
}

/// Write units of an item write: its size in 1 KB units (an update counts
/// the values it writes, at least one unit: the items updated here are small).
fn write_units(kind: &str, body: &Value) -> u64 {
    match kind {
        "Put" => body["Item"].as_object().map_or(1, |i| units(item_size(i), 1024)),
        "Update" => body["ExpressionAttributeValues"]
            .as_object()
            .map_or(1, |v| units(item_size(v), 1024)),
        _ => 1,
    }
}

/// Capacity of the recorded calls: (calls per operation, WRU, RRU), with
/// strongly consistent reads of items under 4 KB and transactional writes
/// at twice the units.
fn capacity(calls: &[(String, Vec<u8>)]) -> (std::collections::BTreeMap<String, u64>, u64, u64) {
    let mut ops = std::collections::BTreeMap::new();
    let (mut wru, mut rru) = (0, 0);
    for (op, body) in calls {
        *ops.entry(op.clone()).or_insert(0) += 1;
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match op.as_str() {
            "PutItem" => wru += write_units("Put", &body),
            "UpdateItem" => wru += write_units("Update", &body),
            "DeleteItem" => wru += 1,
            "TransactWriteItems" => {
                for action in body["TransactItems"].as_array().into_iter().flatten() {
                    let (kind, inner) = action
                        .as_object()
                        .and_then(|o| o.iter().next())
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .unwrap_or(("", Value::Null));
                    wru += 2 * write_units(kind, &inner);
                }
            }
            "GetItem" | "Query" => rru += 1,
            "BatchGetItem" => {
                for table in body["RequestItems"].as_object().into_iter().flatten() {
                    rru += table.1["Keys"].as_array().map_or(0, |k| k.len() as u64);
                }
            }
            _ => {}
        }
    }
    (ops, wru, rru)
}

/// One phase of an answer: what the backend did for it.
struct Phase {
    name: &'static str,
    frames: u64,
    ops: std::collections::BTreeMap<String, u64>,
    wru: u64,
    rru: u64,
    pushes: u64,
}

fn phase(name: &'static str, frames: u64, tap: &support::Tap, deps: &TestDeps, conns: &[&str]) -> Phase {
    let (ops, wru, rru) = capacity(&tap.take());
    let pushes = conns.iter().map(|c| pushed(deps, c).len() as u64).sum();
    Phase { name, frames, ops, wru, rru, pushes }
}

#[tokio::test]
async fn what_one_streamed_answer_costs() {
    let tap = Arc::new(support::Tap::default());
    let deps = deps_on(&support::tapped_client(tap.clone())).await;
    let conns = [BROWSER, WORKER];

    // Set up (not counted): a signed-in browser watching a session on a
    // paired, online worker.
    let secret = add_user(&deps, "ada").await;
    let t = ticket(&deps, secret.expose()).await;
    assert_eq!(connect_browser(&deps, BROWSER, &t, now_millis()).await.status_code, 200);
    let credential = Secret::generate("twk_");
    let paired = pair(&deps, credential.expose()).await;
    assert_eq!(connect_worker(&deps, WORKER, credential.expose()).await.status_code, 200);
    ok(&deps, BROWSER, json!({"action": "pairing_approve", "id": "s1", "code": paired["code"]})).await;
    let model = json!({"provider_id": "fake", "model_id": "m1"});
    ok(&deps, WORKER, json!({
        "action": "worker_hello", "id": "s2", "machine": "laptop", "name": "app", "workdir": "/w",
        "version": "0.1.0", "models": [{"provider_id": "fake", "model_id": "m1", "name": "M1"}],
        "default_model": model, "active_messages": []
    })).await;
    let session = SessionId::random();
    ok(&deps, BROWSER, json!({"action": "session_start", "id": "s3", "session_id": session, "worker_id": paired["worker_id"], "model": model})).await;
    ok(&deps, WORKER, json!({"action": "session_ready", "id": "s4", "session_id": session, "agent_session_id": "a1"})).await;
    ok(&deps, BROWSER, json!({"action": "session_watch", "id": "s5", "session_id": session})).await;
    tap.take();
    for c in conns {
        pushed(&deps, c);
    }

    // The answer.
    let mut phases = Vec::new();
    ok(&deps, BROWSER, json!({"action": "message_send", "id": "m1", "session_id": session, "message_id": "msg_c1", "text": "Why does the test hang?"})).await;
    phases.push(phase("message_send (browser)", 1, &tap, &deps, &conns));
    ok(&deps, WORKER, json!({"action": "message_started", "id": "m2", "message_id": "msg_c1"})).await;
    phases.push(phase("message_started (worker)", 1, &tap, &deps, &conns));
    const FRAMES: u32 = 20;
    // About 5 tokens (20 bytes) per frame: 1,000 tokens at 10 frames a second.
    for seq in 0..FRAMES {
        ok(&deps, WORKER, json!({"action": "chunks", "id": format!("c{seq}"), "message_id": "msg_c1",
            "chunks": [{"seq": seq, "kind": "text", "part_id": "p1", "delta": "word word word word "}]})).await;
    }
    phases.push(phase("chunks (worker), per frame", u64::from(FRAMES), &tap, &deps, &conns));
    ok(&deps, WORKER, json!({"action": "message_complete", "id": "m3", "message_id": "msg_c1",
        "outcome": "complete", "chunk_count": FRAMES})).await;
    phases.push(phase("message_complete (worker)", 1, &tap, &deps, &conns));
    ok(&deps, WORKER, json!({"action": "ping", "id": "p1"})).await;
    phases.push(phase("ping (worker heartbeat)", 1, &tap, &deps, &conns));
    ok(&deps, BROWSER, json!({"action": "ping", "id": "p2"})).await;
    phases.push(phase("ping (browser heartbeat)", 1, &tap, &deps, &conns));

    eprintln!("\nper frame (1 browser watching; each frame also gets 1 reply):");
    eprintln!("{:<28} {:>6} {:>6} {:>7}  dynamodb calls", "phase", "WRU", "RRU", "pushes");
    for p in &phases {
        let per = |n: u64| n as f64 / p.frames as f64;
        let ops: Vec<String> = p
            .ops
            .iter()
            .map(|(op, n)| format!("{op} {}", per(*n)))
            .collect();
        eprintln!(
            "{:<28} {:>6.1} {:>6.1} {:>7.1}  {}",
            p.name,
            per(p.wru),
            per(p.rru),
            per(p.pushes),
            ops.join(", ")
        );
    }

    // The hot path stays small: one conditional put per chunk, a handful of
    // strongly consistent reads, one push per watcher.
    let chunks = &phases[2];
    assert_eq!(chunks.ops.get("PutItem").copied(), Some(u64::from(FRAMES)));
    assert_eq!(chunks.wru, u64::from(FRAMES), "one write unit per chunk frame");
    assert!(chunks.rru <= 5 * u64::from(FRAMES), "{} read units", chunks.rru);
    assert_eq!(chunks.pushes, u64::from(FRAMES), "one push per frame to the one watcher");
}
