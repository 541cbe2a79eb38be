//! Pairing: bound to whoever approves it.

use std::sync::Arc;

use serde_json::{json, Value};
use tether_domain::ids::ConnectionId;
use tether_domain::protocol::ServerFrame;
use tether_domain::store::Store as _;
use tether_domain::{Config, ErrorCode};

use crate::harness::*;

/// The pairing_status frames a connection was pushed: (status, approved_by).
fn pairing_statuses(h: &Harness, conn: &ConnectionId) -> Vec<(String, Option<String>)> {
    h.push
        .sent_to(conn)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::PairingStatus { status, approved_by } => Some((status.as_str().to_owned(), approved_by)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_worker_learns_who_approved_it() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let (_, wconn, credential) = h.worker(&ada).await;
    assert_eq!(
        pairing_statuses(&h, &wconn),
        vec![("approved".to_owned(), Some("ada".to_owned()))],
        "pushed with the approver's name"
    );
    let again = h.pair(&credential, SOURCE, None).await.expect("pair again");
    assert_eq!((again.status.as_str(), again.approved_by.as_deref()), ("approved", Some("ada")));

    // A rejection names nobody.
    let other = h.credential();
    let pending = h.pair(&other, SOURCE, None).await.expect("pair");
    let conn = h.connect_worker(&other).await.expect("pending connects");
    h.ok(&ada, json!({"action": "pairing_reject", "code": pending.code})).await;
    assert_eq!(pairing_statuses(&h, &conn), vec![("rejected".to_owned(), None)]);
    let refused = h.pair(&other, SOURCE, None).await.expect("pair after rejection");
    assert_eq!((refused.status.as_str(), refused.approved_by), ("rejected", None));

    // Approved while not connected, a worker hears no pairing_status: the
    // reply to its hello says who approved it.
    let absent = h.credential();
    let code = h.pair(&absent, SOURCE, None).await.expect("pair").code;
    h.ok(&ada, json!({"action": "pairing_approve", "code": code})).await;
    let conn = h.connect_worker(&absent).await.expect("connects approved");
    let hello = h.ok(&conn, json!({"action": "worker_hello"})).await;
    assert_eq!((hello["worker"]["status"].as_str(), hello["approved_by"].as_str()), (Some("approved"), Some("ada")));
}

/// Only a worker's owner, or an admin, may revoke it; anyone else's revoke
/// or reject of it is refused as `not_found` and changes nothing.
#[tokio::test]
async fn only_the_owner_or_an_admin_revokes_a_worker() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let bob = h.user("bob").await;
    let (wid, wconn, credential) = h.worker(&ada).await;
    let pending = h.credential();
    let code = h.pair(&pending, SOURCE, None).await.expect("pair").code.expect("code");

    assert_eq!(h.code(&bob, json!({"action": "worker_revoke", "worker_id": wid})).await, ErrorCode::NotFound);
    let missing = json!({"action": "worker_revoke", "worker_id": "wkr_nosuchworker"});
    let (code_missing, message_missing) = h.send(&bob, missing).await.expect_err("missing");
    let (code_other, message_other) = h
        .send(&bob, json!({"action": "worker_revoke", "worker_id": wid}))
        .await
        .expect_err("someone else's");
    assert_eq!((code_other, message_other), (code_missing, message_missing), "no tell-tale difference");
    // A pending worker is nobody's to revoke either.
    let pending_id = h.pair(&pending, SOURCE, None).await.expect("pair").worker_id;
    assert_eq!(
        h.code(&bob, json!({"action": "worker_revoke", "worker_id": pending_id})).await,
        ErrorCode::NotFound
    );
    assert!(!h.push.closed().contains(&wconn), "the worker's socket stays open");
    h.ok(&wconn, json!({"action": "ping"})).await;
    let view = h.ok(&ada, json!({"action": "machine_list"})).await;
    assert_eq!(view["machines"][0]["workers"][0]["status"], "approved");
    assert_eq!(h.pair(&credential, SOURCE, None).await.expect("pair").status.as_str(), "approved");
    // Its spent code rejects nothing.
    let approved_code = json!({"action": "pairing_reject", "code": code.clone()});
    h.ok(&bob, approved_code).await;
    assert_eq!(h.code(&bob, json!({"action": "pairing_reject", "code": code})).await, ErrorCode::NotFound);

    // An admin may, as may the owner.
    let root = h.admin("root").await;
    let revoked = h.ok(&root, json!({"action": "worker_revoke", "worker_id": wid})).await;
    assert_eq!(revoked["worker"]["status"], "revoked");
    assert!(h.push.closed().contains(&wconn), "revoking closes the worker's connection");
    assert_eq!(pairing_statuses(&h, &wconn).last(), Some(&("revoked".to_owned(), None)));
    let (wid2, _, _) = h.worker(&ada).await;
    let revoked = h.ok(&ada, json!({"action": "worker_revoke", "worker_id": wid2})).await;
    assert_eq!(revoked["worker"]["status"], "revoked");
}

/// Look-ups, approvals, rejections and token mints share one limit per user
/// and window, counted in the store; another user, or the next window, is
/// not affected.
#[tokio::test]
async fn pairing_attempts_are_rate_limited_per_user() {
    let h = Harness::new();
    let limit = Config::default().pairing_attempts;
    let ada = h.user("ada").await;
    let bob = h.user("bob").await;
    // Start at a window's beginning, so the whole test is in one window.
    h.advance(60_000 - h.now().rem_euclid(60_000));
    let credential = h.credential();
    let code = h.pair(&credential, SOURCE, None).await.expect("pair").code.expect("code");
    for i in 0..limit - 2 {
        let guess = json!({"action": "pairing_lookup", "code": format!("ZZZZ-ZZ{:02}", i % 8 + 2).replace('0', "Z").replace('1', "Y")});
        assert_eq!(h.code(&ada, guess).await, ErrorCode::NotFound, "guess {i}");
    }
    h.ok(&ada, json!({"action": "pairing_token_create"})).await;
    h.ok(&ada, json!({"action": "pairing_lookup", "code": code})).await;
    h.advance(1_000);
    for action in [
        json!({"action": "pairing_lookup", "code": code}),
        json!({"action": "pairing_approve", "code": code}),
        json!({"action": "pairing_reject", "code": code}),
        json!({"action": "pairing_token_create"}),
    ] {
        let (got, message) = h.send(&ada, action.clone()).await.expect_err("limited");
        assert_eq!(got, ErrorCode::RateLimited, "{action}");
        assert!(message.contains("try again in 59 s"), "says when: {message}");
    }
    // Nothing changed: the worker still waits, and another user is free.
    let looked = h.ok(&bob, json!({"action": "pairing_lookup", "code": code})).await;
    assert_eq!(looked["worker"]["status"], "pending");
    // The next window starts afresh.
    h.advance(59_000);
    let approved = h.ok(&ada, json!({"action": "pairing_approve", "code": code})).await;
    assert_eq!(approved["worker"]["status"], "approved");
}

#[tokio::test]
async fn pending_workers_are_capped_per_source_address() {
    let h = Harness::new();
    let cap = Config::default().pending_per_source;
    let ada = h.user("ada").await;
    let mut codes = Vec::new();
    let mut credentials = Vec::new();
    for _ in 0..cap {
        let c = h.credential();
        codes.push(h.pair(&c, "203.0.113.7", None).await.expect("under the cap").code.expect("code"));
        credentials.push(c);
    }
    let extra = h.credential();
    let refused = h.pair(&extra, "203.0.113.7", None).await.expect_err("over the cap");
    assert_eq!(refused.code, ErrorCode::TooManyPending);
    assert_eq!(refused.code.http_status(), 429);
    assert!(refused.message.contains("waiting for approval"), "{}", refused.message);
    assert_eq!(h.connect_worker(&extra).await, Err(ErrorCode::Unauthorized), "nothing was stored");
    // Pairing again with a waiting credential is no new worker.
    let again = h.pair(&credentials[0], "203.0.113.7", None).await.expect("same worker");
    assert_eq!(again.code.as_ref(), Some(&codes[0]));
    // Another address, even one IPv6 /64 apart, has its own cap; one /64 is one source.
    h.pair(&h.credential(), "198.51.100.1", None).await.expect("another address");
    for i in 0..cap {
        h.pair(&h.credential(), &format!("2001:db8:1:2::{:x}", i + 1), None).await.expect("first of the /64");
    }
    let same_net = h.pair(&h.credential(), "2001:db8:1:2:ffff::9", None).await.expect_err("the /64 is full");
    assert_eq!(same_net.code, ErrorCode::TooManyPending);
    h.pair(&h.credential(), "2001:db8:1:3::1", None).await.expect("the next /64");
    // A worker approved or rejected leaves the count.
    h.ok(&ada, json!({"action": "pairing_approve", "code": codes[1]})).await;
    h.pair(&extra, "203.0.113.7", None).await.expect("after an approval");
    assert_eq!(
        h.pair(&h.credential(), "203.0.113.7", None).await.expect_err("full again").code,
        ErrorCode::TooManyPending
    );
    // And so does one whose code expired.
    h.advance(Config::default().pairing_ttl_ms);
    h.pair(&h.credential(), "203.0.113.7", None).await.expect("after the codes expired");
}

/// A pending worker expires with its code: it cannot connect, its code is
/// `expired`, pairing again starts afresh, and the purge deletes it.
#[tokio::test]
async fn pending_workers_expire_with_their_code() {
    let h = Harness::new();
    let ada = h.user("ada").await;
    let credential = h.credential();
    let first = h.pair(&credential, SOURCE, None).await.expect("pair");
    let conn = h.connect_worker(&credential).await.expect("pending connects");
    h.advance(Config::default().pairing_ttl_ms);
    assert_eq!(h.connect_worker(&credential).await, Err(ErrorCode::Unauthorized), "expired: gone");
    let old = first.code.clone().expect("code");
    assert_eq!(h.code(&ada, json!({"action": "pairing_approve", "code": old})).await, ErrorCode::Expired);

    let second = h.pair(&credential, SOURCE, None).await.expect("pair afresh");
    assert_ne!(second.worker_id, first.worker_id, "a new pending worker");
    assert_ne!(second.code, first.code, "with a new code");
    assert_eq!(h.code(&ada, json!({"action": "pairing_lookup", "code": old})).await, ErrorCode::NotFound);
    assert_eq!(h.code(&conn, json!({"action": "ping"})).await, ErrorCode::Unauthorized, "the old one is gone");
    let new_conn = h.connect_worker(&credential).await.expect("the new one connects");
    h.ok(&ada, json!({"action": "pairing_approve", "code": second.code})).await;
    assert_eq!(pairing_statuses(&h, &new_conn), vec![("approved".to_owned(), Some("ada".to_owned()))]);

    // The purge deletes an expired pending worker.
    let forgotten = h.credential();
    let third = h.pair(&forgotten, "198.51.100.1", None).await.expect("pair");
    h.advance(Config::default().pairing_ttl_ms);
    let purged = h.domain.host_store().purge_expired(h.now()).await.expect("purge");
    assert!(purged >= 1, "purged {purged}");
    assert!(h.domain.host_store().worker(&third.worker_id).await.expect("read").is_none());
}

#[tokio::test]
async fn pairing_list_is_paged_and_fits_a_message() {
    let h = Harness::new();
    let root = h.admin("root").await;
    let ada = h.user("ada").await;
    assert_eq!(h.code(&ada, json!({"action": "pairing_list"})).await, ErrorCode::Forbidden);
    // Pending workers with the largest model lists a hello may carry.
    let models: Vec<Value> = (0..200)
        .map(|i| json!({"provider_id": format!("provider-{i:03}"), "model_id": format!("{i:03}-{}", "m".repeat(80)), "name": "x".repeat(20)}))
        .collect();
    let mut made = Vec::new();
    for i in 0..12 {
        let credential = h.credential();
        let pair = h.pair(&credential, &format!("198.51.100.{i}"), None).await.expect("pair");
        let conn = h.connect_worker(&credential).await.expect("connects");
        h.ok(&conn, json!({"action": "worker_hello", "models": models})).await;
        made.push(pair.worker_id.to_string());
        h.advance(1);
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let mut request = json!({"action": "pairing_list", "limit": 5});
        if !after.is_null() {
            request["after"] = after.clone();
        }
        let page = h.ok(&root, request).await;
        let size = page.to_string().len();
        assert!(size < 100 * 1024, "a page of {size} bytes fits API Gateway's 128 KB");
        let workers = page["workers"].as_array().expect("workers");
        assert!(!workers.is_empty() && workers.len() <= 5, "{} workers", workers.len());
        seen.extend(workers.iter().map(|w| w["worker_id"].as_str().expect("id").to_owned()));
        pages += 1;
        after = page["next"].clone();
        if after.is_null() {
            break;
        }
        assert!(pages < 20, "paging ends");
    }
    assert_eq!(seen, made, "every pending worker once, oldest first");
    assert!(pages >= 4, "the byte budget cut pages short of the limit: {pages} pages");
}

/// The headless flow: a token minted by ada pairs a new worker as hers at
/// once; the token works once; an unknown, used or expired token, or one of
/// a reset secret, changes nothing.
#[tokio::test]
async fn a_pairing_token_approves_a_headless_worker_once() {
    let h = Harness::new();
    let (_, ada_secret) = h.domain.add_user("ada", false, h.now()).await.expect("ada");
    let ada = h.connect_user(ada_secret.expose()).await.expect("ada connects");
    let minted = h.ok(&ada, json!({"action": "pairing_token_create"})).await;
    let token = minted["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("tpt_"), "{token}");
    assert_eq!(minted["expires_at"], h.now() + Config::default().pairing_token_ttl_ms);

    let credential = h.credential();
    let paired = h.pair(&credential, SOURCE, Some(&token)).await.expect("paired with the token");
    assert_eq!((paired.status.as_str(), paired.approved_by.as_deref()), ("approved", Some("ada")));
    assert_eq!(paired.code, None);
    let machines = h.ok(&ada, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"][0]["workers"][0]["worker_id"], paired.worker_id.as_str());
    let conn = h.connect_worker(&credential).await.expect("connects approved");
    h.ok(&conn, json!({"action": "worker_hello"})).await;
    // Started again with the same (now used) token: it just starts.
    let restarted = h.pair(&credential, SOURCE, Some(&token)).await.expect("restart");
    assert_eq!(restarted.status.as_str(), "approved");

    // The used token pairs nothing else.
    let thief = h.credential();
    let used = h.pair(&thief, SOURCE, Some(&token)).await.expect_err("used");
    assert_eq!(used.code, ErrorCode::Unauthorized);
    assert!(used.message.contains("unknown, used or expired"), "{}", used.message);
    assert_eq!(h.connect_worker(&thief).await, Err(ErrorCode::Unauthorized), "no worker was made");
    let unknown = h.pair(&thief, SOURCE, Some("tpt_unknown")).await.expect_err("unknown");
    assert_eq!((unknown.code, unknown.message), (used.code, used.message.clone()));

    // An expired one.
    let late = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    h.advance(Config::default().pairing_token_ttl_ms);
    assert_eq!(h.pair(&thief, SOURCE, Some(&late)).await.expect_err("expired").code, ErrorCode::Unauthorized);

    // One of a secret reset since.
    let ada = h.connect_user(ada_secret.expose()).await.expect("ada again");
    let orphan = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    let reset = h.domain.reset_user_secret("ada", h.now()).await.expect("reset");
    assert_eq!(h.pair(&thief, SOURCE, Some(&orphan)).await.expect_err("reset").code, ErrorCode::Unauthorized);
    assert_eq!(h.connect_worker(&thief).await, Err(ErrorCode::Unauthorized), "still nothing made");

    // A worker already waiting with a code is approved by a token too, and hears so.
    let ada = h.connect_user(reset.secret.expose()).await.expect("ada, new secret");
    let waiting = h.credential();
    h.pair(&waiting, SOURCE, None).await.expect("pending");
    let wconn = h.connect_worker(&waiting).await.expect("pending connects");
    let fresh = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    let approved = h.pair(&waiting, SOURCE, Some(&fresh)).await.expect("approved by token");
    assert_eq!(approved.approved_by.as_deref(), Some("ada"));
    assert_eq!(pairing_statuses(&h, &wconn), vec![("approved".to_owned(), Some("ada".to_owned()))]);
}

/// Many workers racing to spend one token: exactly one is paired.
#[tokio::test]
async fn a_pairing_token_is_spent_once_under_races() {
    let h = Arc::new(Harness::new());
    let ada = h.user("ada").await;
    let token = h.ok(&ada, json!({"action": "pairing_token_create"})).await["token"].as_str().expect("t").to_owned();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (h, token) = (Arc::clone(&h), token.clone());
            tokio::spawn(async move {
                let credential = h.credential();
                h.pair(&credential, SOURCE, Some(&token)).await.is_ok()
            })
        })
        .collect();
    let mut paired = 0;
    for t in tasks {
        paired += usize::from(t.await.expect("task"));
    }
    assert_eq!(paired, 1, "one token, one worker");
    let machines = h.ok(&ada, json!({"action": "machine_list"})).await;
    assert_eq!(machines["machines"][0]["workers"].as_array().map(Vec::len), Some(1));
}
