//! Scenarios 1 and 2: pairing a worker, and its presence.

use serde_json::json;
use tether_domain::model::WorkerStatus;
use tether_domain::auth::Secret;
use tether_domain::protocol::{MeData, PairData, Request, Role, ServerFrame, WorkerView};
use tether_domain::ErrorCode;

use crate::helpers::*;

/// Scenario 1: a worker pairs over HTTP, connects pending, its owner looks the code
/// up and approves it; the worker hears so, says hello with its models and
/// shows online in the owner's machine list.
pub async fn pair_and_approve(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let alice = server.add_user("alice").await;
    let mut user = UserClient::connect(&server, &alice).await;

    let identity = pair(&server, "alice-laptop", "/home/alice/tether").await;
    let code = identity.code.clone().expect("a pairing code");

    // Pairing again with the same credential keeps the code the owner may be typing.
    let again = http_post(
        server.addr,
        "/api/pair",
        Some(&identity.credential),
        Some(&json!({ "machine": "alice-laptop", "workdir": "/home/alice/tether" })),
    )
    .await;
    assert_eq!(again.status, 200, "POST /api/pair again: {again:?}");
    let again: PairData = again.parse();
    assert_eq!(again.worker_id, identity.worker_id);
    assert_eq!(again.status, WorkerStatus::Pending);
    assert_eq!(again.code.as_deref(), Some(code.as_str()));

    // The pending worker connects and says hello (without models yet).
    let mut worker = WorkerClient::connect(&server, &identity).await;
    let hello = worker.hello_with(Vec::new(), &[]).await;
    let view: WorkerView = hello.field("worker");
    assert_eq!(view.worker_id, identity.worker_id);
    assert_eq!(
        view.status,
        WorkerStatus::Pending,
        "hello of a pending worker: {}",
        hello.raw
    );
    assert!(
        !view.online,
        "a pending worker is not online: {}",
        hello.raw
    );
    let me: MeData = worker.call(Request::Me {}).await.data_as();
    assert_eq!(me.role, Role::Worker);
    assert_eq!(me.worker_id.as_ref(), Some(&identity.worker_id));
    assert_eq!(me.worker_status, Some(WorkerStatus::Pending));
    assert_eq!(me.pairing_code.as_deref(), Some(code.as_str()));

    // Nobody owns it yet.
    assert!(
        user.machines().await.is_empty(),
        "a pending worker is nobody's machine yet"
    );

    // The owner looks the code up (as typed: lower case, no dash) ...
    let typed = code.to_lowercase().replace('-', "");
    let looked: WorkerView = user
        .call(Request::PairingLookup { code: typed })
        .await
        .field("worker");
    assert_eq!(looked.worker_id, identity.worker_id);
    assert_eq!(looked.machine, "alice-laptop");
    assert_eq!(looked.workdir, "/home/alice/tether");
    assert_eq!(looked.status, WorkerStatus::Pending);

    // ... and approves it.
    let approved: WorkerView = user
        .call(Request::PairingApprove {
            code: code.clone(),
            name: Some("main".into()),
        })
        .await
        .field("worker");
    assert_eq!(approved.worker_id, identity.worker_id);
    assert_eq!(approved.status, WorkerStatus::Approved);
    assert_eq!(approved.name, "main");

    let status = worker
        .next_event("pairing_status approved", |e| {
            matches!(
                e,
                ServerFrame::PairingStatus {
                    status: WorkerStatus::Approved,
                    ..
                }
            )
        })
        .await;
    assert!(
        matches!(&status, ServerFrame::PairingStatus { approved_by: Some(by), .. } if by == "alice"),
        "the worker hears who approved it: {status:?}"
    );
    let id = identity.worker_id.clone();
    user.worker_updated(&id, "approved", |w| w.status == WorkerStatus::Approved)
        .await;

    // The code is spent.
    user.call(Request::PairingLookup { code: code.clone() })
        .await
        .expect_err(ErrorCode::NotFound);
    user.call(Request::PairingApprove { code, name: None })
        .await
        .expect_err(ErrorCode::NotFound);

    // Hello with models: the owner sees it online with them.
    let hello = worker.hello(&[]).await;
    let view: WorkerView = hello.field("worker");
    assert_eq!(
        view.status,
        WorkerStatus::Approved,
        "hello after approval: {}",
        hello.raw
    );
    let updated = user
        .worker_updated(&id, "online with models", |w| {
            w.online && !w.models.is_empty()
        })
        .await;
    assert_eq!(updated.models, test_models());
    assert_eq!(updated.default_model, Some(test_model()));

    let machines = user.machines().await;
    assert_eq!(machines.len(), 1, "one machine: {machines:?}");
    let machine = &machines[0];
    assert_eq!(machine.name, "alice-laptop");
    assert!(machine.online, "the machine is online: {machine:?}");
    assert_eq!(machine.workers.len(), 1);
    let w = &machine.workers[0];
    assert_eq!(w.worker_id, identity.worker_id);
    assert_eq!(w.status, WorkerStatus::Approved);
    assert!(w.online, "the worker is online: {w:?}");
    assert_eq!(w.name, "main", "the name given on approval stays: {w:?}");
    assert_eq!(w.models, test_models());
    assert!(
        w.pairing_code.is_none(),
        "an approved worker shows no code: {w:?}"
    );

    let me: MeData = worker.call(Request::Me {}).await.data_as();
    assert_eq!(me.worker_status, Some(WorkerStatus::Approved));

    // Pairing with an approved credential says so and hands out no code.
    let after = http_post(
        server.addr,
        "/api/pair",
        Some(&identity.credential),
        Some(&json!({ "machine": "alice-laptop", "workdir": "/home/alice/tether" })),
    )
    .await;
    assert_eq!(after.status, 200, "POST /api/pair when approved: {after:?}");
    let after: PairData = after.parse();
    assert_eq!(after.status, WorkerStatus::Approved);
    assert_eq!(after.code, None);
    assert_eq!(after.approved_by.as_deref(), Some("alice"), "and who approved it");
}

/// Scenario 1b: a headless machine pairs with a token its owner minted: no
/// code, approved for her at once; the token works once, and a second user
/// can neither reject nor revoke her worker, while an admin can revoke it.
pub async fn pair_with_a_token(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let alice = server.add_user("alice").await;
    let mut user = UserClient::connect(&server, &alice).await;
    let minted = user.call(Request::PairingTokenCreate {}).await;
    let token: String = minted.field("token");
    assert!(token.starts_with("tpt_"), "{}", minted.raw);

    let credential = Secret::generate("twk_").expose().to_owned();
    let body = json!({"machine": "buildbox", "workdir": "/srv/app", "token": token});
    let res = http_post(server.addr, "/api/pair", Some(&credential), Some(&body)).await;
    assert_eq!(res.status, 200, "POST /api/pair with a token: {res:?}");
    let paired: PairData = res.parse();
    assert_eq!(paired.status, WorkerStatus::Approved, "no code to type: {res:?}");
    assert_eq!(paired.code, None);
    assert_eq!(paired.approved_by.as_deref(), Some("alice"));
    let identity = WorkerIdentity {
        credential: credential.clone(),
        worker_id: paired.worker_id.clone(),
        code: None,
        machine: "buildbox".into(),
        workdir: "/srv/app".into(),
    };
    let worker = WorkerClient::connect(&server, &identity).await;
    let view: WorkerView = worker.hello(&[]).await.field("worker");
    assert_eq!(view.status, WorkerStatus::Approved);
    user.worker_updated(&identity.worker_id, "online", |w| w.online).await;

    // The token is spent: another machine gets nothing with it.
    let thief = Secret::generate("twk_").expose().to_owned();
    let again = http_post(server.addr, "/api/pair", Some(&thief), Some(&body)).await;
    assert_eq!(again.status, 401, "a used token: {again:?}");
    assert_eq!(again.json()["code"], "unauthorized");
    let stolen = WorkerIdentity {
        credential: thief,
        worker_id: identity.worker_id.clone(),
        code: None,
        machine: "buildbox".into(),
        workdir: "/srv/app".into(),
    };
    assert_refused(
        WorkerClient::try_connect(&server, &stolen).await,
        401,
        ErrorCode::Unauthorized,
        "no worker was made for the used token",
    );

    // Bob can neither revoke it nor reject it; an admin can revoke it.
    let bob_account = server.add_user("bob").await;
    let bob = UserClient::connect(&server, &bob_account).await;
    bob.call(Request::WorkerRevoke {
        worker_id: identity.worker_id.clone(),
    })
    .await
    .expect_err(ErrorCode::NotFound);
    assert!(user.worker_view(&identity.worker_id).await.online, "untouched");
    worker.assert_usable("another user's revoke").await;
    let root_account = server.add_user_with("root", true).await;
    let root = UserClient::connect(&server, &root_account).await;
    let revoked: WorkerView = root
        .call(Request::WorkerRevoke {
            worker_id: identity.worker_id.clone(),
        })
        .await
        .field("worker");
    assert_eq!(revoked.status, WorkerStatus::Revoked);
    user.worker_updated(&identity.worker_id, "revoked by an admin", |w| {
        w.status == WorkerStatus::Revoked
    })
    .await;
}

/// Scenario 2: a worker that disconnects (closing, or losing its connection) goes
/// offline for its owner, and comes back online when it reconnects.
pub async fn online_offline(host: Host, mode: Mode) {
    let server = Server::start(host, mode).await;
    let Paired { mut user, worker } = paired(&server, "bob").await;
    let identity = worker.identity.clone();
    let id = identity.worker_id.clone();
    assert!(user.worker_view(&id).await.online);

    // A clean close.
    user.drain_events().await;
    worker.close().await;
    let off = user
        .worker_updated(&id, "offline after close", |w| !w.online)
        .await;
    assert_eq!(off.status, WorkerStatus::Approved);
    let view = user.worker_view(&id).await;
    assert!(!view.online, "machine_list after close: {view:?}");
    assert!(
        !user.machines().await[0].online,
        "the machine is offline too"
    );

    // Back.
    user.drain_events().await;
    let worker = WorkerClient::connect(&server, &identity).await;
    worker.hello(&[]).await.ok();
    user.worker_updated(&id, "online after reconnect", |w| w.online)
        .await;
    assert!(
        user.worker_view(&id).await.online,
        "machine_list after reconnect"
    );
    assert!(
        user.machines().await[0].online,
        "the machine is online again"
    );

    // A lost connection (no close handshake).
    user.drain_events().await;
    worker.drop_abruptly().await;
    user.worker_updated(&id, "offline after a lost connection", |w| !w.online)
        .await;
    assert!(
        !user.worker_view(&id).await.online,
        "machine_list after a lost connection"
    );

    // Back again.
    user.drain_events().await;
    let worker = WorkerClient::connect(&server, &identity).await;
    worker.hello(&[]).await.ok();
    user.worker_updated(&id, "online after the second reconnect", |w| w.online)
        .await;
    assert!(user.worker_view(&id).await.online);
    worker.assert_usable("reconnecting").await;
}

/// Scenario 2b: presence lapses: a worker not heard from for the presence timeout
/// shows offline though its socket is open; its next ping brings it back,
/// and its owner hears so.
pub async fn presence_lapses(host: Host, mode: Mode) {
    let server = Server::start_with(host, mode, &["--presence-timeout-secs", "1"]).await;
    let Paired { mut user, worker } = paired(&server, "nina").await;
    let id = worker.id().clone();
    assert!(
        user.worker_view(&id).await.online,
        "online right after hello"
    );

    // Silent past the timeout (time itself is what is awaited here).
    tokio::time::sleep(std::time::Duration::from_millis(1_400)).await;
    let view = user.worker_view(&id).await;
    assert!(
        !view.online,
        "a worker silent past the presence timeout is offline: {view:?}"
    );

    user.drain_events().await;
    worker.assert_usable("the presence timeout").await;
    user.worker_updated(&id, "online after a ping", |w| w.online)
        .await;
    assert!(
        user.worker_view(&id).await.online,
        "machine_list after the ping"
    );
}
