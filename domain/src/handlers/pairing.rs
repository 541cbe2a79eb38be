//! Pairing: a worker asks to be paired (`POST /api/pair`), a user approves
//! it, and from then on it is that user's. Two ways to approve:
//!
//! - **A code.** A new worker gets a short code and prints it; a signed-in
//!   user looks it up and approves it (or rejects it).
//! - **A token,** for a headless machine. The user mints a one-time token
//!   (`pairing_token_create`) and starts the worker with it; the worker's
//!   `POST /api/pair` carries it and is approved for the token's owner at
//!   once, no code to type. The token is consumed by that request.
//!
//! Either way the worker learns who approved it (`pairing_status`, or the
//! pair reply of an approved worker), so the person at the machine sees
//! whose it became. Only the owner, or an admin, may revoke it.
//!
//! **Guessing codes.** A code is 8 characters of a 31-letter alphabet:
//! 31^8 ≈ 8.5 × 10^11 codes (about 39.6 bits). Only signed-in users can
//! look codes up, each at most [`crate::Config::pairing_attempts`] (10)
//! look-ups, approvals, rejections and token mints per
//! [`crate::Config::pairing_window_ms`] (a minute), counted in the store so
//! that the limit holds across Lambdas: 14,400 guesses a day per account. A
//! code lives 15 minutes, and at most [`crate::Config::pending_per_source`]
//! (3) pending workers exist per source address. Even with 1,000 live codes
//! at all times, one guess hits with probability 1.2 × 10^-9, and an
//! account needs about 5.9 × 10^7 guesses, some 160 years at that rate, to
//! expect one hit. A fixed window lets a burst of twice the limit through at
//! a window's edge, which changes none of this.
//!
//! **Pending workers expire** with their code: reads ignore them (a lookup
//! answers `expired`, the admins' list leaves them out, the cap does not
//! count them), the local host's purge and DynamoDB's TTL delete them, and
//! the same credential pairing again starts afresh.

use std::net::IpAddr;

use tracing::info;

use crate::auth::{self, Secret};
use crate::error::{ApiError, ErrorCode};
use crate::ids::{UserId, WorkerId};
use crate::model::{Millis, PairingToken, User, Worker, WorkerStatus};
use crate::protocol::{PairData, PairRequest, ServerFrame};
use crate::push::Push;
use crate::store::{Store, StoreError};

use super::entry::clean_label;
use super::Domain;

pub(super) const MAX_NAME_LEN: usize = 128;
const MAX_PATH_LEN: usize = 1024;

/// The key the per-source cap counts under: an IPv4 address as it is, an
/// IPv6 address by its /64 (one customer's whole allocation, where every
/// host picks addresses freely), an IPv4-mapped IPv6 address as IPv4.
pub fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

/// The one answer to a token that approves nothing.
fn invalid_token() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "this pairing token is unknown, used or expired; mint a new one in Tether \
         (Machines, Pair a headless machine)",
    )
}

impl<S: Store, P: Push> Domain<S, P> {
    /// `POST /api/pair` with `Authorization: Bearer <credential>`: a new
    /// worker (its credential is unknown) becomes pending with a pairing
    /// code, or approved at once with a pairing token; a pending one keeps
    /// its code while it is valid (or is approved with a token); an
    /// approved one learns who approved it. The credential is chosen by the
    /// worker and never leaves it again but as this header, so nothing
    /// secret is ever sent back.
    ///
    /// `source` is the address the request came from, as the host judges
    /// it (`None`: a caller in this process, such as `tether up`, which no
    /// cap applies to). At most [`crate::Config::pending_per_source`]
    /// pending workers exist per source.
    pub async fn pair(
        &self,
        bearer: Option<&str>,
        source: Option<IpAddr>,
        req: PairRequest,
        now: Millis,
    ) -> Result<PairData, ApiError> {
        let secret = bearer.and_then(Secret::from_client).ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "send Authorization: Bearer <new credential>")
        })?;
        if secret.expose().len() < 32 {
            return Err(ApiError::bad_request("the credential must be at least 32 characters"));
        }
        let machine = clean_label(&req.machine, "machine", MAX_NAME_LEN)?;
        let workdir = clean_label(&req.workdir, "workdir", MAX_PATH_LEN)?;
        let name = match &req.name {
            Some(n) => clean_label(n, "name", MAX_NAME_LEN)?,
            None => default_worker_name(&workdir),
        };
        let token = match &req.token {
            Some(t) => Some(Secret::from_client(t.as_str()).ok_or_else(invalid_token)?),
            None => None,
        };
        let hash = secret.hash();
        if let Some(worker) = self.store.worker_by_credential(&hash).await? {
            if !worker.pairing_expired(now) {
                return self.pair_known(worker, token.as_ref(), now).await;
            }
            // Its code expired: it is gone but for the purge. Pair afresh.
            self.store.delete_expired_pending(&worker.id, now).await?;
        }
        let mut worker = Worker {
            id: WorkerId::random(),
            owner: None,
            status: WorkerStatus::Pending,
            credential_hash: hash.clone(),
            machine,
            name,
            workdir,
            pairing_code: None,
            pairing_expires_at: None,
            connection: None,
            last_seen: None,
            models: Vec::new(),
            default_model: None,
            version: None,
            agent: None,
            source: source.map(source_key),
            created_at: now,
        };
        if let Some(token) = &token {
            return self.pair_new_with_token(worker, token, now).await;
        }
        let code = auth::pairing_code();
        let expires_at = now + self.config.pairing_ttl_ms;
        worker.pairing_code = Some(code.clone());
        worker.pairing_expires_at = Some(expires_at);
        match self
            .store
            .create_pending_worker(&worker, self.config.pending_per_source, now)
            .await
        {
            Ok(true) => {
                info!(worker_id = %worker.id, "new worker waiting for approval");
                Ok(PairData {
                    worker_id: worker.id,
                    status: WorkerStatus::Pending,
                    code: Some(code),
                    expires_at: Some(expires_at),
                    approved_by: None,
                })
            }
            Ok(false) => {
                info!(source = ?worker.source, "pairing refused: too many pending workers from one source");
                Err(ApiError::new(
                    ErrorCode::TooManyPending,
                    format!(
                        "{} workers from this address are waiting for approval already; approve \
                         or reject one, or try again when a code expires (codes last {} minutes)",
                        self.config.pending_per_source,
                        self.config.pairing_ttl_ms / 60_000
                    ),
                ))
            }
            // The same credential pairing twice at once: answer as the other did.
            Err(StoreError::Conflict(_)) => match self.store.worker_by_credential(&hash).await? {
                Some(w) => self.pair_reply(w).await,
                None => Err(ApiError::new(ErrorCode::Conflict, "this credential is pairing already; try again")),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// A known credential pairing again: its status, its valid code, or
    /// (pending, with a token) its approval.
    async fn pair_known(
        &self,
        worker: Worker,
        token: Option<&Secret>,
        now: Millis,
    ) -> Result<PairData, ApiError> {
        match (worker.status, token) {
            (WorkerStatus::Pending, Some(token)) => {
                self.approve_pending_with_token(worker, token, now).await
            }
            // A token is ignored once paired: a worker restarted with the
            // same `--token` (a service's unit file) just starts.
            _ => self.pair_reply(worker).await,
        }
    }

    /// What a worker learns of itself: its code while pending (kept while
    /// valid: the owner may be typing it), who approved it, or its refusal.
    async fn pair_reply(&self, worker: Worker) -> Result<PairData, ApiError> {
        match worker.status {
            WorkerStatus::Pending => Ok(PairData {
                worker_id: worker.id,
                status: WorkerStatus::Pending,
                code: worker.pairing_code,
                expires_at: worker.pairing_expires_at,
                approved_by: None,
            }),
            WorkerStatus::Approved => Ok(PairData {
                approved_by: self.user_name(worker.owner.as_ref()).await?,
                worker_id: worker.id,
                status: WorkerStatus::Approved,
                code: None,
                expires_at: None,
            }),
            status => Ok(PairData {
                worker_id: worker.id,
                status,
                code: None,
                expires_at: None,
                approved_by: None,
            }),
        }
    }

    /// Consumes a pairing token: its owner, if the token was valid and the
    /// owner still has the secret it was minted under.
    async fn take_token(&self, token: &Secret, now: Millis) -> Result<(User, PairingToken), ApiError> {
        let record = self
            .store
            .take_pairing_token(&token.hash(), now)
            .await?
            .ok_or_else(invalid_token)?;
        match self.store.user(&record.owner).await? {
            Some(owner) if owner.secret_hash == record.owner_secret => Ok((owner, record)),
            _ => Err(invalid_token()),
        }
    }

    /// Puts back a token taken for a pairing that then did not happen (the
    /// store failed, or the worker changed meanwhile), so that it is spent
    /// only by a pairing.
    async fn restore_token(&self, token: &Secret, record: &PairingToken) {
        if let Err(e) = self.store.put_pairing_token(&token.hash(), record).await {
            tracing::warn!(error = %e, "could not put back an unspent pairing token");
        }
    }

    async fn pair_new_with_token(
        &self,
        worker: Worker,
        token: &Secret,
        now: Millis,
    ) -> Result<PairData, ApiError> {
        let (owner, record) = self.take_token(token, now).await?;
        let worker = Worker {
            owner: Some(owner.id.clone()),
            status: WorkerStatus::Approved,
            ..worker
        };
        if let Err(e) = self.store.create_worker(&worker).await {
            self.restore_token(token, &record).await;
            return Err(match e {
                StoreError::Conflict(_) => {
                    ApiError::new(ErrorCode::Conflict, "this credential is pairing already; try again")
                }
                e => e.into(),
            });
        }
        info!(worker_id = %worker.id, owner = %owner.id, "worker paired with a token");
        self.announce_worker(&worker.id, Some(&worker), now).await;
        Ok(PairData {
            worker_id: worker.id,
            status: WorkerStatus::Approved,
            code: None,
            expires_at: None,
            approved_by: Some(owner.name),
        })
    }

    async fn approve_pending_with_token(
        &self,
        worker: Worker,
        token: &Secret,
        now: Millis,
    ) -> Result<PairData, ApiError> {
        let (owner, record) = self.take_token(token, now).await?;
        let Some(updated) = self
            .decide_pending(&worker.id, WorkerStatus::Approved, &owner, None, now)
            .await?
        else {
            // Approved or rejected by code meanwhile: the token stays unspent.
            self.restore_token(token, &record).await;
            let current = self.store.worker(&worker.id).await?.ok_or_else(|| ApiError::not_found("worker"))?;
            return self.pair_reply(current).await;
        };
        info!(worker_id = %updated.id, owner = %owner.id, "pending worker paired with a token");
        Ok(PairData {
            worker_id: updated.id,
            status: WorkerStatus::Approved,
            code: None,
            expires_at: None,
            approved_by: Some(owner.name),
        })
    }

    /// Decides a pending worker: approved for `by` (optionally renamed), or
    /// rejected (and disconnected). Its connections hear the decision (and
    /// who approved it). `None` if it was no longer pending.
    pub(super) async fn decide_pending(
        &self,
        worker: &WorkerId,
        to: WorkerStatus,
        by: &User,
        name: Option<&str>,
        now: Millis,
    ) -> Result<Option<Worker>, ApiError> {
        let approve = to == WorkerStatus::Approved;
        let Some(updated) = self
            .store
            .transition_worker(worker, WorkerStatus::Pending, to, approve.then_some(&by.id), name)
            .await?
        else {
            return Ok(None);
        };
        let conns = self.store.worker_connections(worker).await?;
        let frame = ServerFrame::PairingStatus {
            status: to,
            approved_by: approve.then(|| by.name.clone()),
        };
        self.fan_out(&conns, &frame, now).await;
        if approve {
            self.store.set_connections_owner(worker, &by.id).await?;
            self.announce_worker(&updated.id, Some(&updated), now).await;
        } else {
            for conn in &conns {
                let _ = self.push.disconnect(conn).await;
                self.forget_connection(conn, now).await;
            }
        }
        Ok(Some(updated))
    }

    /// The name of a worker's owner (who approved it).
    pub(crate) async fn user_name(&self, owner: Option<&UserId>) -> Result<Option<String>, ApiError> {
        Ok(match owner {
            Some(id) => self.store.user(id).await?.map(|u| u.name),
            None => None,
        })
    }
}

fn default_worker_name(workdir: &str) -> String {
    workdir
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("worker")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_addresses_or_ipv6_prefixes() {
        let key = |s: &str| source_key(s.parse().expect("an address"));
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff::1"),
            key("2001:db8:1:2::9"),
            "one /64 is one source"
        );
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }
}
