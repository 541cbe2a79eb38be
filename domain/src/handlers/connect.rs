//! A connection's life: `$connect` (who it is, within the caps),
//! `$disconnect`, `ping` and `me`, and `POST /api/ticket`, the user's way
//! to a `$connect`. A gone connection's record, and a worker's presence,
//! are forgotten here.

use tracing::{debug, info, instrument, warn};

use crate::auth::Secret;
use crate::error::{ApiError, ErrorCode};
use crate::ids::ConnectionId;
use crate::model::{Connection, Millis, Principal, Ticket, Worker, WorkerStatus};
use crate::protocol::{MeData, PingData, Role, TicketData, PROTOCOL_VERSION};
use crate::push::{Push, PushError};
use crate::store::Store;

use super::admin::Disconnected;
use super::entry::Caller;
use super::{ConnectRequest, Domain};

impl<S: Store, P: Push> Domain<S, P> {
    /// `$connect`: authenticates and records the connection. An `Err` refuses
    /// the upgrade (HTTP status from [`ErrorCode::http_status`]).
    #[instrument(level = "debug", skip_all, fields(connection_id = %req.connection_id.redacted()))]
    pub async fn connect(&self, req: ConnectRequest) -> Result<Principal, ApiError> {
        if let Some(v) = &req.version {
            if v != &PROTOCOL_VERSION.to_string() {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
                ));
            }
        }
        let now = req.now;
        let mut ticket = None;
        let (principal, owner, worker) = if let Some(presented) = req.ticket {
            let secret = Secret::from_client(presented)
                .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "empty ticket"))?;
            let taken = self
                .store
                .take_ticket(&secret.hash(), now)
                .await?
                .ok_or_else(invalid_ticket)?;
            let user = taken.user.clone();
            ticket = Some(taken);
            (Principal::User(user.clone()), Some(user), None)
        } else if let Some(bearer) = req.bearer {
            let worker = self.worker_by_bearer(&bearer).await?;
            if worker.pairing_expired(now) {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "this worker's pairing code expired before anyone approved it; pair again",
                ));
            }
            match worker.status {
                WorkerStatus::Pending | WorkerStatus::Approved => {}
                WorkerStatus::Rejected | WorkerStatus::Revoked => {
                    return Err(ApiError::new(
                        ErrorCode::WorkerNotApproved,
                        format!("this worker was {}; pair it again", worker.status.as_str()),
                    ))
                }
            }
            (
                Principal::Worker(worker.id.clone()),
                worker.owner.clone(),
                Some(worker),
            )
        } else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "connect with ?ticket= (users) or an Authorization: Bearer credential (workers)",
            ));
        };
        let conn = Connection {
            id: req.connection_id.clone(),
            principal: principal.clone(),
            owner,
            connected_at: now,
            last_seen: now,
            expires_at: now + self.config.connection_ttl_ms,
        };
        self.store.put_connection(&conn).await?;
        if let Some(ticket) = &ticket {
            self.check_ticket_user(ticket, &conn.id).await?;
        }
        let (cap, whose) = match &worker {
            None => (self.config.max_user_connections, "you already have"),
            Some(w) if w.status == WorkerStatus::Pending => (
                self.config.max_pending_worker_connections,
                "this worker is waiting for approval and already has",
            ),
            Some(_) => (
                self.config.max_worker_connections,
                "this worker already has",
            ),
        };
        self.check_connection_cap(&conn, cap, whose, now).await?;
        if let Some(worker) = worker {
            self.store
                .set_worker_connection(&worker.id, &conn.id, now)
                .await?;
            if worker.status == WorkerStatus::Approved {
                self.announce_worker(&worker.id, None, now).await;
            }
        }
        debug!(?principal, "connected");
        Ok(principal)
    }

    /// A ticket is good only while its user exists and still has the secret
    /// it was issued under: a reset or a removal takes every outstanding
    /// ticket with it. Checked after the connection is recorded, so that a
    /// reset or removal racing this `$connect` either is seen here or,
    /// running after this read, finds the connection record to close. A
    /// refused ticket looks like an unknown one.
    async fn check_ticket_user(
        &self,
        ticket: &Ticket,
        conn: &ConnectionId,
    ) -> Result<(), ApiError> {
        let current = self.store.user(&ticket.user).await?;
        if current.is_some_and(|u| u.secret_hash == ticket.user_secret) {
            return Ok(());
        }
        info!(user_id = %ticket.user, "a ticket of a reset or removed secret was refused");
        self.store.delete_connection(conn).await?;
        Err(invalid_ticket())
    }

    /// Keeps at most `cap` open connections per principal. Counted after
    /// this connection is recorded: each of several concurrent `$connect`s
    /// counts every record put before its count, so the last of the kept
    /// ones to count saw all the others, and more than `cap` are never kept.
    /// At the edge two racing connects may both be refused; a retry gets in.
    /// A refused connection's record is deleted again, so the refusal
    /// changes nothing (a user's ticket is used up, as every ticket is).
    async fn check_connection_cap(
        &self,
        conn: &Connection,
        cap: u32,
        whose: &str,
        now: Millis,
    ) -> Result<(), ApiError> {
        let open = self.store.connection_count(&conn.principal, now).await?;
        if open <= cap {
            return Ok(());
        }
        info!(principal = ?conn.principal, open, cap, "connection refused: too many open");
        self.store.delete_connection(&conn.id).await?;
        Err(ApiError::new(
            ErrorCode::TooManyConnections,
            format!(
                "{whose} {cap} open connection{}; close one, or wait a moment for one that \
                 dropped to be noticed, and try again",
                if cap == 1 { "" } else { "s" }
            ),
        ))
    }

    /// `$disconnect` (best effort: may never come, or come late).
    #[instrument(level = "debug", skip_all, fields(connection_id = %conn.redacted()))]
    pub async fn disconnect(&self, conn: &ConnectionId, now: Millis) {
        self.forget_connection(conn, now).await;
    }

    async fn worker_by_bearer(&self, bearer: &str) -> Result<Worker, ApiError> {
        let secret = Secret::from_client(bearer)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "empty credential"))?;
        self.store
            .worker_by_credential(&secret.hash())
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown worker credential"))
    }

    /// `POST /api/ticket` with `Authorization: Bearer <user secret>`: a
    /// one-use ticket for the websocket URL, valid for `ticket_ttl_ms`.
    pub async fn issue_ticket(
        &self,
        bearer: Option<&str>,
        now: Millis,
    ) -> Result<TicketData, ApiError> {
        let secret = bearer.and_then(Secret::from_client).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "send Authorization: Bearer <your secret>",
            )
        })?;
        let user = self
            .store
            .user_by_secret(&secret.hash())
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown secret"))?;
        let ticket = Secret::generate("ttk_");
        let expires_at = now + self.config.ticket_ttl_ms;
        let record = Ticket {
            user: user.id,
            user_secret: user.secret_hash,
            expires_at,
        };
        self.store.put_ticket(&ticket.hash(), &record).await?;
        Ok(TicketData {
            ticket: ticket.expose().to_owned(),
            expires_at,
        })
    }

    pub(crate) async fn ping(&self, caller: &Caller, now: Millis) -> Result<PingData, ApiError> {
        match caller {
            Caller::User { conn, .. } => self.store.touch_connection(&conn.id, now).await?,
            Caller::Worker { conn, worker } => {
                self.store.touch_connection(&conn.id, now).await?;
                // A worker whose presence lapsed is back: say so.
                let was_online = worker.online(now, self.config.presence_timeout_ms);
                if worker.connection.as_ref() != Some(&conn.id) {
                    self.store
                        .set_worker_connection(&worker.id, &conn.id, now)
                        .await?;
                } else {
                    self.store.touch_worker(&worker.id, now).await?;
                }
                if !was_online && worker.status == WorkerStatus::Approved {
                    self.announce_worker(&worker.id, None, now).await;
                }
            }
        }
        Ok(PingData {
            now,
            heartbeat_ms: self.config.heartbeat_ms,
        })
    }

    pub(crate) async fn me(&self, caller: &Caller) -> Result<MeData, ApiError> {
        Ok(match caller {
            Caller::User { user, .. } => {
                let u = self.store.user(user).await?.ok_or_else(|| {
                    ApiError::new(ErrorCode::Unauthorized, "user no longer exists")
                })?;
                MeData {
                    protocol: PROTOCOL_VERSION,
                    role: Role::User,
                    user_id: Some(u.id),
                    user_name: Some(u.name),
                    worker_id: None,
                    worker_status: None,
                    pairing_code: None,
                    heartbeat_ms: self.config.heartbeat_ms,
                }
            }
            Caller::Worker { worker, .. } => MeData {
                protocol: PROTOCOL_VERSION,
                role: Role::Worker,
                user_id: None,
                user_name: None,
                worker_id: Some(worker.id.clone()),
                worker_status: Some(worker.status),
                pairing_code: worker.pairing_code.clone(),
                heartbeat_ms: self.config.heartbeat_ms,
            },
        })
    }

    /// Removes a connection record and, for a worker, its presence.
    pub(crate) async fn forget_connection(&self, conn: &ConnectionId, now: Millis) {
        let removed = match self.store.delete_connection(conn).await {
            Ok(c) => c,
            Err(e) => {
                warn!(connection_id = %conn.redacted(), error = %e, "could not delete connection");
                return;
            }
        };
        if let Some(Connection {
            principal: Principal::Worker(worker),
            ..
        }) = removed
        {
            // A worker that was there until now was last seen now: its
            // lease counts from here, not from its last heartbeat. (One
            // whose connection had gone silent keeps its older time.)
            let was_online = match self.store.worker(&worker).await {
                Ok(w) => w.is_some_and(|w| w.online(now, self.config.presence_timeout_ms)),
                Err(_) => false,
            };
            match self.store.clear_worker_connection(&worker, conn).await {
                Ok(true) => {
                    if was_online {
                        if let Err(e) = self.store.touch_worker(&worker, now).await {
                            warn!(worker_id = %worker, error = %e, "could not record when it left");
                        }
                    }
                    self.announce_worker(&worker, None, now).await
                }
                Ok(false) => {}
                Err(e) => warn!(worker_id = %worker, error = %e, "could not clear presence"),
            }
        }
    }

    /// Closes connections through the push port and deletes their records
    /// (so that one the port could not close can do nothing more). A
    /// connection already gone is neither closed nor failed.
    pub(crate) async fn close_connections(
        &self,
        conns: &[ConnectionId],
        now: Millis,
    ) -> Disconnected {
        let mut done = Disconnected::default();
        for conn in conns {
            match self.push.disconnect(conn).await {
                Ok(()) => done.closed += 1,
                Err(PushError::Gone) => {}
                Err(PushError::Other(e)) => {
                    warn!(connection_id = %conn.redacted(), error = %e, "could not close a connection");
                    done.failed.push(e);
                }
            }
            self.forget_connection(conn, now).await;
        }
        done
    }
}

/// The one answer to a ticket that does not open a connection: unknown,
/// used, expired, or of a secret that was reset or a user that was removed.
fn invalid_ticket() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "the ticket is unknown, used or expired",
    )
}
