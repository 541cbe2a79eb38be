//! Open websockets per source address: the local gateway's bound on what
//! one address can hold, checked before `$connect` runs.
//!
//! Authentication bounds what a *principal* holds (the domain caps a user's,
//! a worker's and a pending worker's sockets), but anyone can ask to pair
//! and connect as a new pending worker, so without this one address could
//! open sockets without end. A slot is taken when the upgrade request
//! arrives (so handshakes still in `$connect` count) and given back when the
//! connection's `$disconnect` has run, or at once if `$connect` refused it.
//!
//! On AWS there is no such count: API Gateway keeps no per-address state we
//! could consult, and a store write per `$connect` to keep one would cost
//! every connection. Per-address limits there are the WAF's job (the
//! optional `WafRateLimit` rule in `template.yaml` limits the requests,
//! `$connect` upgrades included, of each source address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use tether_domain::handlers::source_key;

/// The client a request counts against: the TCP peer, except that a peer
/// on loopback with `X-Forwarded-For` is a TLS proxy on this machine (Caddy,
/// `tailscale serve`, nginx: see the README), which appends the address it
/// was reached from; that last entry is trusted, and nothing before it (a
/// client writes what it likes there). A remote peer's header is ignored:
/// anyone can send one. Websocket upgrades count against it here, pairing
/// requests in the domain's cap on pending workers per source (`host.rs`);
/// behind a proxy on another machine every client has the proxy's address,
/// and both count them all together.
pub(crate) fn client_address(peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !peer.is_loopback() {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

/// How many slots each source address holds, up to a cap. An address
/// counts as the domain's cap on pending workers counts it
/// ([`source_key`]): an IPv4 address as it is; an IPv6 address by its /64,
/// since one host usually holds a whole /64 and could otherwise pick a
/// fresh address per socket; an IPv4-mapped IPv6 address as its IPv4
/// address.
#[derive(Debug)]
pub(crate) struct PerAddress {
    /// 0: no cap.
    max: usize,
    held: Mutex<HashMap<String, usize>>,
}

impl PerAddress {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Every critical section is one map operation: a panic cannot leave
        // it half done, so poisoning is ignored.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for `ip`, or `None` if its address holds the cap.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = source_key(ip);
        let mut held = self.held();
        let count = held.entry(key.clone()).or_insert(0);
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: Arc::clone(self),
            key,
        })
    }

    /// The cap (0: none).
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Slots held by `ip`'s address.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.held().get(&source_key(ip)).copied().unwrap_or(0)
    }
}

/// One connection's slot; dropping it (also by a panic) gives it back.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    owner: Arc<PerAddress>,
    key: String,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held();
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Only addresses with open sockets stay in the map.
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_address_holds_at_most_the_cap_and_gets_slots_back() {
        let caps = Arc::new(PerAddress::new(2));
        let a = caps.enter(ip("192.0.2.1")).expect("first");
        let _b = caps.enter(ip("192.0.2.1")).expect("second");
        assert!(caps.enter(ip("192.0.2.1")).is_none(), "a third is refused");
        let _other = caps
            .enter(ip("192.0.2.2"))
            .expect("another address has its own");
        drop(a);
        let _c = caps
            .enter(ip("192.0.2.1"))
            .expect("a slot given back is free again");
        assert_eq!(caps.count(ip("192.0.2.1")), 2);
    }

    #[test]
    fn the_map_forgets_addresses_without_sockets() {
        let caps = Arc::new(PerAddress::new(1));
        drop(caps.enter(ip("192.0.2.1")).expect("slot"));
        assert!(caps.held().is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let caps = Arc::new(PerAddress::new(1));
        let _a = caps.enter(ip("2001:db8:1:2::1")).expect("first");
        assert!(
            caps.enter(ip("2001:db8:1:2:ffff::9")).is_none(),
            "the same /64 is the same source"
        );
        let _b = caps.enter(ip("2001:db8:1:3::1")).expect("another /64");
        let _c = caps.enter(ip("192.0.2.7")).expect("IPv4");
        assert!(
            caps.enter(ip("::ffff:192.0.2.7")).is_none(),
            "mapped IPv4 is that IPv4"
        );
    }

    #[test]
    fn only_a_proxy_on_this_machine_names_the_client() {
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", v.parse().expect("header"));
            }
            h
        };
        let proxied = headers(&["198.51.100.1, 203.0.113.9"]);
        assert_eq!(client_address(ip("127.0.0.1"), &proxied), ip("203.0.113.9"));
        assert_eq!(
            client_address(ip("::1"), &headers(&["198.51.100.1", "2001:db8::5"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            client_address(ip("192.0.2.4"), &proxied),
            ip("192.0.2.4"),
            "a remote peer's claim"
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&["junk"])),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn zero_means_no_cap() {
        let caps = Arc::new(PerAddress::new(0));
        let slots: Vec<_> = (0..500)
            .map(|_| caps.enter(ip("192.0.2.1")).expect("no cap"))
            .collect();
        assert_eq!(caps.count(ip("192.0.2.1")), 500);
        drop(slots);
        assert_eq!(caps.count(ip("192.0.2.1")), 0);
    }
}
