//! The router: one frame from a connection, parsed, its caller identified,
//! and its action handed to the handler of its aggregate; exactly one
//! reply.

use tracing::{debug, instrument};

use crate::error::{ApiError, ErrorCode};
use crate::ids::{ConnectionId, UserId};
use crate::model::{Connection, Millis, Principal, Worker, WorkerStatus};
use crate::protocol::{AgentReport, ClientFrame, Reply, Request, ServerFrame};
use crate::push::Push;
use crate::store::{Store, WorkerProfile};

use super::Domain;

/// Who sent a frame, as its connection record says.
pub(crate) enum Caller {
    User {
        conn: Connection,
        user: UserId,
    },
    Worker {
        conn: Connection,
        worker: Box<Worker>,
    },
}

impl<S: Store, P: Push> Domain<S, P> {
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
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "this connection is not known; reconnect",
                )
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
            (_, Request::Ping {}) => Ok(Reply::Ping(self.ping(&caller, now).await?)),
            (_, Request::Me {}) => Ok(Reply::Me(self.me(&caller).await?)),
            (Caller::User { conn, user }, request) => {
                Box::pin(self.user_action(conn, user, request, now)).await
            }
            (Caller::Worker { conn, worker }, request) => {
                Box::pin(self.worker_action(conn, worker, request, now)).await
            }
        }
    }

    /// An action of a user (a browser connection).
    async fn user_action(
        &self,
        conn: &Connection,
        user: &UserId,
        request: Request,
        now: Millis,
    ) -> Result<Reply, ApiError> {
        Ok(match request {
            Request::MachineList {} => Reply::MachineList(self.machine_list(user, now).await?),
            Request::PairingList { after, limit } => {
                Reply::PairingList(self.pairing_list(user, after, limit, now).await?)
            }
            Request::PairingLookup { code } => {
                Reply::PairingLookup(self.pairing_lookup(user, &code, now).await?)
            }
            Request::PairingApprove { code, name } => {
                Reply::PairingApprove(self.pairing_decide(user, &code, name, true, now).await?)
            }
            Request::PairingReject { code } => {
                Reply::PairingReject(self.pairing_decide(user, &code, None, false, now).await?)
            }
            Request::PairingTokenCreate {} => {
                Reply::PairingTokenCreate(self.pairing_token_create(user, now).await?)
            }
            Request::WorkerRevoke { worker_id } => {
                Reply::WorkerRevoke(self.worker_revoke(user, &worker_id, now).await?)
            }
            Request::SessionStart {
                session_id,
                worker_id,
                model,
                title,
            } => Reply::SessionStart(
                self.session_start(user, session_id, &worker_id, model, title, now)
                    .await?,
            ),
            Request::SessionList {
                worker_id,
                before,
                limit,
            } => Reply::SessionList(
                self.session_list(user, worker_id, before, limit, now)
                    .await?,
            ),
            Request::SessionWatch { session_id, after } => Reply::SessionWatch(
                self.session_watch(conn, user, &session_id, after, now)
                    .await?,
            ),
            Request::SessionUnwatch { session_id } => {
                Reply::SessionUnwatch(self.session_unwatch(conn, user, &session_id).await?)
            }
            Request::SessionHistory { session_id, after } => {
                Reply::SessionHistory(self.session_history(user, &session_id, after, now).await?)
            }
            Request::SessionEnd { session_id } => {
                Reply::SessionEnd(self.session_end(user, &session_id, now).await?)
            }
            Request::MessageSend {
                session_id,
                message_id,
                text,
                model,
            } => Reply::MessageSend(
                self.message_send(user, &session_id, message_id, text, model, now)
                    .await?,
            ),
            Request::MessageAbort { message_id } => {
                Reply::MessageAbort(self.message_abort(user, &message_id, now).await?)
            }
            Request::PromptReply { prompt_id, answer } => {
                Reply::PromptReply(self.prompt_reply(user, &prompt_id, answer, now).await?)
            }
            _ => return Err(ApiError::forbidden("only workers may take this action")),
        })
    }

    /// An action of a worker. A worker waiting for approval may say hello
    /// and what its agent is doing (its owner sees that from the moment of
    /// approval), nothing else.
    async fn worker_action(
        &self,
        conn: &Connection,
        worker: &Worker,
        request: Request,
        now: Millis,
    ) -> Result<Reply, ApiError> {
        let before_approval = matches!(
            request,
            Request::WorkerHello { .. } | Request::AgentState { .. }
        );
        if !before_approval && worker.status != WorkerStatus::Approved {
            return Err(ApiError::new(
                ErrorCode::WorkerNotApproved,
                format!("this worker is {}", worker.status.as_str()),
            ));
        }
        Ok(match request {
            Request::WorkerHello {
                machine,
                name,
                workdir,
                version,
                models,
                default_model,
                active_messages,
                agent,
            } => {
                let profile = WorkerProfile {
                    machine,
                    name,
                    workdir,
                    version,
                    models,
                    default_model,
                };
                Reply::WorkerHello(
                    self.hello(conn, worker, profile, agent, active_messages, now)
                        .await?,
                )
            }
            Request::AgentState { state, reason, at } => {
                let report = AgentReport { state, reason, at };
                Reply::AgentState(self.agent_state(worker, report, now).await?)
            }
            Request::SessionReady {
                session_id,
                agent_session_id,
            } => Reply::SessionReady(
                self.session_ready(worker, &session_id, agent_session_id, now)
                    .await?,
            ),
            Request::SessionFailed { session_id, error } => {
                Reply::SessionFailed(self.session_failed(worker, &session_id, error, now).await?)
            }
            Request::SessionTitle { session_id, title } => {
                Reply::SessionTitle(self.session_title(worker, &session_id, &title, now).await?)
            }
            Request::MessageStarted { message_id } => {
                Reply::MessageStarted(self.message_started(worker, &message_id, now).await?)
            }
            Request::Chunks { message_id, chunks } => {
                Reply::Chunks(self.chunks(worker, &message_id, chunks, now).await?)
            }
            Request::MessageComplete {
                message_id,
                outcome,
                chunk_count,
                error,
            } => Reply::MessageComplete(
                self.complete(worker, &message_id, outcome, chunk_count, error, now)
                    .await?,
            ),
            Request::PromptDelivered { prompt_id } => {
                Reply::PromptDelivered(self.prompt_delivered(worker, &prompt_id).await?)
            }
            _ => return Err(ApiError::forbidden("only users may take this action")),
        })
    }
}

/// Trims a label a client sent and checks it is sensible.
pub(crate) fn clean_label(s: &str, what: &str, max: usize) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if s.len() > max {
        return Err(ApiError::bad_request(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} has control characters"
        )));
    }
    Ok(s.to_owned())
}

/// The first `max` characters of `s`.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
