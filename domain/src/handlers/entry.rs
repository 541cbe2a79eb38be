//! The entry points a host calls: `$connect`, `$disconnect`, a frame, the two
//! HTTP endpoints and the admin commands.

use crate::auth::Secret;
use crate::error::ApiError;
use crate::ids::ConnectionId;
use crate::model::{Millis, Principal, User};
use crate::protocol::{PairData, PairRequest, ServerFrame, TicketData};
use crate::push::Push;
use crate::store::Store;

use super::{ConnectRequest, Domain};

impl<S: Store, P: Push> Domain<S, P> {
    /// `$connect`: authenticates and records the connection. An `Err` refuses
    /// the upgrade (HTTP status from [`crate::ErrorCode::http_status`]).
    pub async fn connect(&self, req: ConnectRequest) -> Result<Principal, ApiError> {
        let _ = req;
        Err(ApiError::new(crate::ErrorCode::Internal, "not yet"))
    }

    /// `$disconnect` (best effort: may never come, or come late).
    pub async fn disconnect(&self, conn: &ConnectionId, now: Millis) {
        let _ = (conn, now);
    }

    /// One frame from a connection: exactly one reply, pushes as side effects.
    pub async fn handle_frame(&self, conn: &ConnectionId, text: &str, now: Millis) -> ServerFrame {
        let _ = (conn, text, now);
        ServerFrame::err(None, ApiError::new(crate::ErrorCode::Internal, "not yet"))
    }

    /// `POST /api/ticket` with `Authorization: Bearer <user secret>`.
    pub async fn issue_ticket(&self, bearer: Option<&str>, now: Millis) -> Result<TicketData, ApiError> {
        let _ = (bearer, now);
        Err(ApiError::new(crate::ErrorCode::Internal, "not yet"))
    }

    /// `POST /api/pair` with `Authorization: Bearer <new worker credential>`.
    pub async fn pair(&self, bearer: Option<&str>, req: PairRequest, now: Millis) -> Result<PairData, ApiError> {
        let _ = (bearer, req, now);
        Err(ApiError::new(crate::ErrorCode::Internal, "not yet"))
    }

    /// Admin: creates a user and returns its secret (shown once).
    pub async fn add_user(&self, name: &str, admin: bool, now: Millis) -> Result<(User, Secret), ApiError> {
        let _ = (name, admin, now);
        Err(ApiError::new(crate::ErrorCode::Internal, "not yet"))
    }

    /// Admin: gives a user a new secret (the old one stops working).
    pub async fn reset_user_secret(&self, name: &str) -> Result<Secret, ApiError> {
        let _ = name;
        Err(ApiError::new(crate::ErrorCode::Internal, "not yet"))
    }
}
