//! The entry points a host calls: `$connect`, `$disconnect`, a frame and
//! `POST /api/ticket`. (`POST /api/pair` is in `pairing.rs`, the admin
//! commands in `admin.rs`.)

use tracing::{debug, info, instrument};

use crate::auth::Secret;
use crate::error::{ApiError, ErrorCode};
use crate::ids::{ConnectionId, UserId};
use crate::model::{Connection, Millis, Principal, Ticket, Worker, WorkerStatus};
use crate::protocol::{ClientFrame, Reply, Request, ServerFrame, TicketData, PROTOCOL_VERSION};
use crate::push::Push;
use crate::store::Store;

use super::{ConnectRequest, Domain};

/// Who sent a frame, as its connection record says.
pub(crate) enum Caller {
    User { conn: Connection, user: UserId },
    Worker { conn: Connection, worker: Box<Worker> },
}

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
            let taken = self.store.take_ticket(&secret.hash(), now).await?.ok_or_else(invalid_ticket)?;
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
            (Principal::Worker(worker.id.clone()), worker.owner.clone(), Some(worker))
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
            Some(_) => (self.config.max_worker_connections, "this worker already has"),
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

    /// One frame from a connection: exactly one reply, pushes as side effects.
    #[instrument(level = "debug", skip_all, fields(connection_id = %conn.redacted()))]
    pub async fn handle_frame(&self, conn: &ConnectionId, text: &str, now: Millis) -> ServerFrame {
        let frame = match ClientFrame::parse(text) {
            Ok(f) => f,
            Err(e) => return ServerFrame::err(e.id, e.error),
        };
        let id = frame.id.clone();
        match self.route(conn, frame.request, now).await {
            Ok(reply) => ServerFrame::ok(id, reply.to_value()),
            Err(e) => {
                debug!(code = e.code.as_str(), message = %e.message, "request refused");
                ServerFrame::err(Some(id), e)
            }
        }
    }

    async fn caller(&self, conn: &ConnectionId, now: Millis) -> Result<Caller, ApiError> {
        let (record, worker) = self
            .store
            .connection_and_worker(conn)
            .await?
            .filter(|(c, _)| c.expires_at > now)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "this connection is not known; reconnect")
            })?;
        match &record.principal {
            Principal::User(user) => Ok(Caller::User {
                user: user.clone(),
                conn: record,
            }),
            Principal::Worker(_) => {
                let worker = worker.ok_or_else(|| {
                    ApiError::new(ErrorCode::Unauthorized, "this worker no longer exists")
                })?;
                Ok(Caller::Worker {
                    worker: Box::new(worker),
                    conn: record,
                })
            }
        }
    }

    async fn route(
        &self,
        conn: &ConnectionId,
        request: Request,
        now: Millis,
    ) -> Result<Reply, ApiError> {
        let caller = self.caller(conn, now).await?;
        // The actions' futures are boxed: each holds its store calls' (the
        // DynamoDB SDK's are large), and a frame's whole future otherwise
        // sits on the caller's stack.
        match (&caller, request) {
            (_, Request::Ping {}) => self.ping(&caller, now).await.map(Reply::Ping),
            (_, Request::Me {}) => self.me(&caller).await.map(Reply::Me),
            (Caller::User { conn, user }, request) => {
                Box::pin(self.user_action(conn, user, request, now)).await
            }
            (Caller::Worker { conn, worker }, request) => {
                Box::pin(self.worker_action(conn, worker, request, now)).await
            }
        }
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
        let secret = bearer
            .and_then(Secret::from_client)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "send Authorization: Bearer <your secret>"))?;
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
}

/// The one answer to a ticket that does not open a connection: unknown,
/// used, expired, or of a secret that was reset or a user that was removed.
fn invalid_ticket() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "the ticket is unknown, used or expired")
}

/// Trims a label a client sent and checks it is sensible.
pub(crate) fn clean_label(s: &str, what: &str, max: usize) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if s.len() > max {
        return Err(ApiError::bad_request(format!("{what} is longer than {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} has control characters")));
    }
    Ok(s.to_owned())
}
