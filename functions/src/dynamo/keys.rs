//! Item keys: every `pk`/`sk` the store writes is built here (see
//! `infra/ACCESS_PATTERNS.md`, section 2).
//!
//! In sort keys, times are 20 digits and `u32`s 10 digits, so that byte
//! order is numeric order. Ids never contain `#`, and every character an id
//! may hold sorts after `#`, so `<a>#<b>` orders like the tuple `(a, b)`.

use tether_domain::model::Millis;

/// A `(pk, sk)` pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
}

/// A time as 20 digits whose byte order is numeric order: the `i64` with
/// its sign bit flipped (offset binary), so negative times sort too.
pub(super) fn time(t: Millis) -> String {
    format!("{:020}", (t as u64) ^ (1 << 63))
}

/// A message number or chunk seq as 10 digits.
pub(super) fn num(n: u32) -> String {
    format!("{n:010}")
}

/// How many shards the `expiry` GSI's hash key spreads over.
pub(super) const EXPIRY_SHARDS: u32 = 4;

/// The `expiry` GSI shard of an item: a stable hash (FNV-1a) of its `pk`.
pub(super) fn expiry_shard(pk: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in pk.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    expiry_shard_name(h % EXPIRY_SHARDS)
}

pub(super) fn expiry_shard_name(shard: u32) -> String {
    format!("EXP#{shard}")
}

// ---- entities ----

pub(super) fn user(uid: &str) -> Key {
    Key::new(format!("USER#{uid}"), "USER")
}

pub(super) fn ticket(hash: &str) -> Key {
    Key::new(format!("TICKET#{hash}"), "TICKET")
}

pub(super) const TICKET_PREFIX: &str = "TICKET#";

pub(super) fn pairing_token(hash: &str) -> Key {
    Key::new(format!("{PAIRING_TOKEN_PREFIX}{hash}"), "PAIRTOKEN")
}

pub(super) const PAIRING_TOKEN_PREFIX: &str = "PAIRTOKEN#";

/// A rate-limit counter (`count_attempt`).
pub(super) fn rate_counter(key: &str) -> Key {
    Key::new(format!("{RATE_PREFIX}{key}"), "RATE")
}

pub(super) const RATE_PREFIX: &str = "RATE#";

/// The pending workers of one source address (`create_pending_worker`).
pub(super) fn pending_source(source: &str) -> Key {
    Key::new(format!("PENDINGSRC#{source}"), "PENDINGSRC")
}

pub(super) const WORKER_PREFIX: &str = "WORKER#";

pub(super) fn worker(wid: &str) -> Key {
    Key::new(format!("WORKER#{wid}"), "WORKER")
}

pub(super) fn connection(cid: &str) -> Key {
    Key::new(format!("CONN#{cid}"), "CONN")
}

pub(super) const CONNECTION_PREFIX: &str = "CONN#";

pub(super) fn session(sid: &str) -> Key {
    Key::new(format!("SESSION#{sid}"), "SESSION")
}

pub(super) fn message(mid: &str) -> Key {
    Key::new(format!("MESSAGE#{mid}"), "MESSAGE")
}

pub(super) fn chunk(mid: &str, seq: u32) -> Key {
    Key::new(format!("MESSAGE#{mid}"), format!("CHUNK#{}", num(seq)))
}

pub(super) fn chunk_sk(seq: u32) -> String {
    format!("CHUNK#{}", num(seq))
}

pub(super) fn prompt(pid: &str) -> Key {
    Key::new(format!("PROMPT#{pid}"), "PROMPT")
}

/// A user's counters of what the per-user caps limit (live sessions, open
/// messages): one item in the user's partition, changed in the same
/// transaction as what it counts.
pub(super) fn user_counts(uid: &str) -> Key {
    Key::new(user_pk(uid), "COUNTS")
}

// ---- entries ----

/// All user-name entries live in one partition, in name order.
pub(super) const USERNAMES: &str = "USERNAMES";

pub(super) fn user_name(name: &str) -> Key {
    Key::new(USERNAMES, name)
}

pub(super) fn user_secret(hash: &str) -> Key {
    Key::new(format!("USERSECRET#{hash}"), "USERSECRET")
}

pub(super) fn worker_credential(hash: &str) -> Key {
    Key::new(format!("WORKERCRED#{hash}"), "WORKERCRED")
}

pub(super) fn owner_worker(uid: &str, created: Millis, wid: &str) -> Key {
    Key::new(
        format!("USER#{uid}"),
        format!("WORKER#{}#{wid}", time(created)),
    )
}

pub(super) const PENDING: &str = "PENDING";

pub(super) fn pending_worker(created: Millis, wid: &str) -> Key {
    Key::new(PENDING, pending_worker_sk(created, wid))
}

pub(super) fn pending_worker_sk(created: Millis, wid: &str) -> String {
    format!("{}#{wid}", time(created))
}

pub(super) fn pairing_code_pk(code: &str) -> String {
    format!("PAIRCODE#{code}")
}

pub(super) fn pairing_code(code: &str, created: Millis, wid: &str) -> Key {
    Key::new(pairing_code_pk(code), format!("{}#{wid}", time(created)))
}

pub(super) fn user_pk(uid: &str) -> String {
    format!("USER#{uid}")
}

pub(super) fn worker_pk(wid: &str) -> String {
    format!("WORKER#{wid}")
}

pub(super) fn session_pk(sid: &str) -> String {
    format!("SESSION#{sid}")
}

pub(super) fn message_pk(mid: &str) -> String {
    format!("MESSAGE#{mid}")
}

/// Sort-key prefixes of the entries in a user's, worker's or session's
/// partition.
pub(super) const WORKER_ENTRY: &str = "WORKER#";
pub(super) const CONN_ENTRY: &str = "CONN#";
pub(super) const WATCH_ENTRY: &str = "WATCH#";
pub(super) const SESSION_ENTRY: &str = "SESSION#";
pub(super) const STARTING_ENTRY: &str = "STARTING#";
pub(super) const OPEN_ENTRY: &str = "OPEN#";
pub(super) const UNDELIVERED_ENTRY: &str = "UNDELIVERED#";
pub(super) const MESSAGE_ENTRY: &str = "MESSAGE#";

pub(super) fn user_connection(uid: &str, cid: &str) -> Key {
    Key::new(user_pk(uid), format!("{CONN_ENTRY}{cid}"))
}

pub(super) fn worker_connection(wid: &str, cid: &str) -> Key {
    Key::new(worker_pk(wid), format!("{CONN_ENTRY}{cid}"))
}

pub(super) fn watch(sid: &str, cid: &str) -> Key {
    Key::new(session_pk(sid), format!("{WATCH_ENTRY}{cid}"))
}

pub(super) fn owner_session(uid: &str, created: Millis, sid: &str) -> Key {
    Key::new(
        user_pk(uid),
        format!("{SESSION_ENTRY}{}#{sid}", time(created)),
    )
}

pub(super) fn owner_worker_session_prefix(wid: &str) -> String {
    format!("WORKERSESSION#{wid}#")
}

pub(super) fn owner_worker_session(uid: &str, wid: &str, created: Millis, sid: &str) -> Key {
    Key::new(
        user_pk(uid),
        format!(
            "{}{}#{sid}",
            owner_worker_session_prefix(wid),
            time(created)
        ),
    )
}

pub(super) fn starting_session(wid: &str, created: Millis, sid: &str) -> Key {
    Key::new(
        worker_pk(wid),
        format!("{STARTING_ENTRY}{}#{sid}", time(created)),
    )
}

pub(super) fn session_message(sid: &str, number: u32) -> Key {
    Key::new(session_pk(sid), format!("{MESSAGE_ENTRY}{}", num(number)))
}

pub(super) fn session_message_sk(number: u32) -> String {
    format!("{MESSAGE_ENTRY}{}", num(number))
}

pub(super) fn open_message(wid: &str, session_created: Millis, sid: &str, number: u32) -> Key {
    Key::new(
        worker_pk(wid),
        format!(
            "{OPEN_ENTRY}{}#{sid}#{}",
            time(session_created),
            num(number)
        ),
    )
}

pub(super) fn undelivered_prompt(wid: &str, created: Millis, pid: &str) -> Key {
    Key::new(
        worker_pk(wid),
        format!("{UNDELIVERED_ENTRY}{}#{pid}", time(created)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_numerically() {
        let times = [
            i64::MIN,
            -1_000,
            -1,
            0,
            1,
            999,
            1_000,
            1_700_000_000_000,
            i64::MAX,
        ];
        let keys: Vec<String> = times.iter().map(|t| time(*t)).collect();
        assert!(keys.iter().all(|k| k.len() == 20), "{keys:?}");
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
    }

    #[test]
    fn numbers_sort_numerically() {
        let keys: Vec<String> = [0, 9, 10, 4_294_967_295].iter().map(|n| num(*n)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
        assert_eq!(num(u32::MAX).len(), 10);
    }

    #[test]
    fn separator_sorts_before_every_id_character() {
        // ids.rs: letters, digits, '_', '-', '.', ':' and '='.
        for c in "-.:=_09AZaz".chars() {
            assert!('#' < c, "{c}");
        }
        // So a shorter id sorts first, as in SQL's ORDER BY id.
        assert!("x#abc#1" < "x#abcd#0");
    }

    #[test]
    fn expiry_shards_are_stable_and_in_range() {
        let shard = expiry_shard("CONN#abc=");
        assert_eq!(shard, expiry_shard("CONN#abc="));
        let names: Vec<String> = (0..EXPIRY_SHARDS).map(expiry_shard_name).collect();
        assert!(names.contains(&shard));
        let spread: std::collections::HashSet<String> = (0..64)
            .map(|i| expiry_shard(&format!("CONN#{i}")))
            .collect();
        assert_eq!(spread.len(), EXPIRY_SHARDS as usize);
    }
}
