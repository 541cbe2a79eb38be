//! A user's side of pairing: looking a code up, approving or rejecting
//! it, minting a pairing token, the admins' list of unclaimed pairings, and
//! revoking a worker. Each code look-up, decision and token counts against
//! the user's pairing attempts (see `pairing.rs` for what that gives a code
//! guesser).

use tracing::info;

use crate::auth::{self, Secret};
use crate::error::{ApiError, ErrorCode};
use crate::ids::{UserId, WorkerId};
use crate::model::{Millis, PairingToken, User, Worker, WorkerStatus};
use crate::protocol::{PairingListData, PairingTokenData, PendingCursor, ServerFrame, WorkerData};
use crate::push::Push;
use crate::store::Store;

use super::admin::Disconnected;
use super::entry::clean_label;
use super::pairing::MAX_NAME_LEN;
use super::views::{json, worker_view};
use super::Domain;

/// Most pending workers one `pairing_list` page holds.
const PENDING_PAGE: u32 = 50;
/// A `pairing_list` page stays well under API Gateway's 128 KB message
/// limit: views are added while they fit this many bytes (a view is at
/// most about 34 KB: a hello's model list fits one 32 KB frame).
const PENDING_PAGE_BYTES: usize = 96 * 1024;

impl<S: Store, P: Push> Domain<S, P> {
    /// The caller's own record (it may have been removed since connecting).
    async fn caller_user(&self, user: &UserId) -> Result<User, ApiError> {
        self.store
            .user(user)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "user no longer exists"))
    }

    /// Counts one pairing attempt of `user` (a code looked up, approved or
    /// rejected, a token minted): `rate_limited`, saying when to retry, past
    /// [`crate::Config::pairing_attempts`] per window.
    async fn pairing_attempt(&self, user: &UserId, now: Millis) -> Result<(), ApiError> {
        let window = self.config.pairing_window_ms.max(1);
        let start = now - now.rem_euclid(window);
        let end = start + window;
        let key = format!("pairing:{user}");
        if self
            .store
            .count_attempt(&key, start, end, self.config.pairing_attempts)
            .await?
        {
            return Ok(());
        }
        let secs = (end - now + 999) / 1000;
        info!(user_id = %user, "pairing attempts rate-limited");
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many pairing attempts (at most {} a minute); try again in {secs} s",
                self.config.pairing_attempts
            ),
        ))
    }

    /// `pairing_list` (admins only): a page of pending workers with
    /// unexpired codes, oldest first.
    pub(crate) async fn pairing_list(
        &self,
        user: &UserId,
        after: Option<PendingCursor>,
        limit: Option<u32>,
        now: Millis,
    ) -> Result<PairingListData, ApiError> {
        if !self.caller_user(user).await?.admin {
            return Err(ApiError::forbidden(
                "only admins see unclaimed pairings; approve a worker with its code",
            ));
        }
        let limit = limit.unwrap_or(PENDING_PAGE).clamp(1, PENDING_PAGE);
        // One more than the page, to know whether another page follows.
        let pending = self
            .store
            .pending_workers(
                now,
                after.as_ref().map(|c| (c.created_at, &c.worker_id)),
                limit + 1,
            )
            .await?;
        let mut page = PairingListData {
            workers: Vec::new(),
            next: None,
        };
        let mut used = 0usize;
        for (i, w) in pending.iter().enumerate() {
            let view = worker_view(w, now, self.config.presence_timeout_ms);
            let size = json(&view).to_string().len();
            if i as u32 == limit || (used + size > PENDING_PAGE_BYTES && !page.workers.is_empty()) {
                page.next = page.workers.last().map(|v| PendingCursor {
                    created_at: v.created_at,
                    worker_id: v.worker_id.clone(),
                });
                break;
            }
            used += size;
            page.workers.push(view);
        }
        Ok(page)
    }

    /// `pairing_lookup`: the worker behind a code, before deciding.
    pub(crate) async fn pairing_lookup(
        &self,
        user: &UserId,
        code: &str,
        now: Millis,
    ) -> Result<WorkerData, ApiError> {
        self.pairing_attempt(user, now).await?;
        let w = self.pending_by_code(code, now).await?;
        Ok(WorkerData {
            worker: worker_view(&w, now, self.config.presence_timeout_ms),
        })
    }

    async fn pending_by_code(&self, code: &str, now: Millis) -> Result<Worker, ApiError> {
        let code = auth::normalize_code(code).ok_or_else(|| {
            ApiError::bad_request("a pairing code is 8 letters or digits, like KX7P-Q2MD")
        })?;
        let worker = self
            .store
            .worker_by_pairing_code(&code)
            .await?
            .filter(|w| w.status == WorkerStatus::Pending)
            .ok_or_else(|| ApiError::not_found("pairing code"))?;
        if worker.pairing_expired(now) {
            return Err(ApiError::new(
                ErrorCode::Expired,
                "this pairing code has expired; restart the worker for a new one",
            ));
        }
        Ok(worker)
    }

    /// `pairing_approve` / `pairing_reject` of a code.
    pub(crate) async fn pairing_decide(
        &self,
        user: &UserId,
        code: &str,
        name: Option<String>,
        approve: bool,
        now: Millis,
    ) -> Result<WorkerData, ApiError> {
        self.pairing_attempt(user, now).await?;
        let worker = self.pending_by_code(code, now).await?;
        let name = name
            .map(|n| clean_label(&n, "name", MAX_NAME_LEN))
            .transpose()?;
        let by = self.caller_user(user).await?;
        let to = if approve {
            WorkerStatus::Approved
        } else {
            WorkerStatus::Rejected
        };
        let updated = self
            .decide_pending(&worker.id, to, &by, name.as_deref(), now)
            .await?
            .ok_or_else(|| ApiError::not_found("pairing code"))?;
        Ok(WorkerData {
            worker: worker_view(&updated, now, self.config.presence_timeout_ms),
        })
    }

    /// `pairing_token_create`: a one-time token that pairs a headless
    /// worker to the caller, shown once and kept hashed.
    pub(crate) async fn pairing_token_create(
        &self,
        user: &UserId,
        now: Millis,
    ) -> Result<PairingTokenData, ApiError> {
        self.pairing_attempt(user, now).await?;
        let owner = self.caller_user(user).await?;
        let token = Secret::generate("tpt_");
        let expires_at = now + self.config.pairing_token_ttl_ms;
        let record = PairingToken {
            owner: owner.id,
            owner_secret: owner.secret_hash,
            expires_at,
        };
        self.store.put_pairing_token(&token.hash(), &record).await?;
        Ok(PairingTokenData {
            token: token.expose().to_owned(),
            expires_at,
        })
    }

    /// `worker_revoke`: by the worker's owner or an admin. Anyone else gets
    /// `not_found`, as for anything of someone else's, and nothing changes.
    pub(crate) async fn worker_revoke(
        &self,
        user: &UserId,
        worker_id: &WorkerId,
        now: Millis,
    ) -> Result<WorkerData, ApiError> {
        let worker = self
            .store
            .worker(worker_id)
            .await?
            .ok_or_else(|| ApiError::not_found("worker"))?;
        if worker.owner.as_ref() != Some(user) && !self.caller_user(user).await?.admin {
            return Err(ApiError::not_found("worker"));
        }
        let updated = match self.revoke(&worker.id).await? {
            Some(w) => w,
            None if worker.status == WorkerStatus::Revoked => worker,
            None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidState,
                    "this worker is not approved",
                ))
            }
        };
        if updated.owner.as_ref() != Some(user) {
            info!(worker_id = %updated.id, admin = %user, "an admin revoked another user's worker");
        }
        // What the port could not close can do nothing more: its record is gone.
        self.disconnect_revoked(&updated.id, now).await?;
        self.announce_worker(&updated.id, None, now).await;
        Ok(WorkerData {
            worker: worker_view(&updated, now, self.config.presence_timeout_ms),
        })
    }

    /// Revokes an approved worker: the revoked record, or `None` if it was
    /// not approved.
    pub(crate) async fn revoke(&self, worker: &WorkerId) -> Result<Option<Worker>, ApiError> {
        let (from, to) = (WorkerStatus::Approved, WorkerStatus::Revoked);
        Ok(self
            .store
            .transition_worker(worker, from, to, None, None)
            .await?)
    }

    /// Tells a revoked worker's connections so, and closes them.
    pub(crate) async fn disconnect_revoked(
        &self,
        worker: &WorkerId,
        now: Millis,
    ) -> Result<Disconnected, ApiError> {
        let conns = self.store.worker_connections(worker).await?;
        let frame = ServerFrame::PairingStatus {
            status: WorkerStatus::Revoked,
            approved_by: None,
        };
        self.fan_out(&conns, &frame, now).await;
        Ok(self.close_connections(&conns, now).await)
    }
}
