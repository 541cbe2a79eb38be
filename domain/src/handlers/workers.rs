//! A worker's presence and profile: its hello (after which it is sent
//! everything it is owed, by the aggregates that owe it), what it says of
//! its agent, and the machine list its owner sees.

use tracing::info;

use crate::error::ApiError;
use crate::ids::{MessageId, UserId, WorkerId};
use crate::model::{Connection, Millis, Worker, WorkerStatus};
use crate::protocol::{
    AgentReport, HelloApproved, HelloData, MachineListData, WorkerData, MAX_AGENT_REASON_BYTES,
};
use crate::push::Push;
use crate::store::{Store, WorkerProfile};

use super::entry::clean_label;
use super::views::{machines, worker_view};
use super::Domain;

impl<S: Store, P: Push> Domain<S, P> {
    /// A worker (re)connected: store its profile, then push it everything it
    /// is owed: sessions to start, messages to answer, answers to prompts.
    pub(crate) async fn hello(
        &self,
        conn: &Connection,
        worker: &Worker,
        profile: WorkerProfile,
        agent: Option<AgentReport>,
        active: Vec<MessageId>,
        now: Millis,
    ) -> Result<HelloData, ApiError> {
        let profile = clean_profile(profile)?;
        let agent = agent.map(checked_report).transpose()?;
        // The agent's state before its models: a reader between the two
        // writes may see `ready` without the models yet, never the models
        // beside a stale `starting` (a client offers sessions by the models).
        if let Some(report) = &agent {
            // A report older than the stored one changes nothing.
            self.store.set_agent_state(&worker.id, report).await?;
        }
        self.store.set_worker_profile(&worker.id, &profile).await?;
        self.store
            .set_worker_connection(&worker.id, &conn.id, now)
            .await?;
        let worker = self
            .store
            .worker(&worker.id)
            .await?
            .ok_or_else(|| ApiError::not_found("worker"))?;
        if worker.status != WorkerStatus::Approved {
            return Ok(HelloData {
                worker: worker_view(&worker, now, self.config.presence_timeout_ms),
                heartbeat_ms: self.config.heartbeat_ms,
                approved: None,
            });
        }
        self.announce_worker(&worker.id, Some(&worker), now).await;
        self.resend_session_starts(&worker, now).await?;
        let resumed = self.resume_messages(&worker, active, now).await?;
        let prompts = self.resend_prompt_answers(&worker, now).await?;
        info!(
            worker_id = %worker.id,
            dispatched = resumed.dispatched,
            failed = resumed.failed,
            stopped = resumed.stopped,
            prompts,
            "worker hello"
        );
        // Who approved it, also here: a worker approved while it was not
        // connected never got its `pairing_status`.
        Ok(HelloData {
            worker: worker_view(&worker, now, self.config.presence_timeout_ms),
            heartbeat_ms: self.config.heartbeat_ms,
            approved: Some(HelloApproved {
                approved_by: self.user_name(worker.owner.as_ref()).await?,
                frame_interval_ms: self.config.frame_interval_ms,
            }),
        })
    }

    /// The worker's agent changed state: store it (unless a newer report is
    /// stored already) and tell the owner.
    pub(crate) async fn agent_state(
        &self,
        worker: &Worker,
        report: AgentReport,
        now: Millis,
    ) -> Result<WorkerData, ApiError> {
        let report = checked_report(report)?;
        let current = match self.store.set_agent_state(&worker.id, &report).await? {
            Some(updated) => {
                let same = worker
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.state == report.state && a.reason == report.reason);
                if !same && updated.status == WorkerStatus::Approved {
                    self.announce_worker(&updated.id, Some(&updated), now).await;
                }
                info!(worker_id = %updated.id, state = report.state.as_str(), "agent state");
                updated
            }
            // Older than what is stored (frames handled out of order): the
            // newer state stands.
            None => self
                .store
                .worker(&worker.id)
                .await?
                .ok_or_else(|| ApiError::not_found("worker"))?,
        };
        Ok(WorkerData {
            worker: worker_view(&current, now, self.config.presence_timeout_ms),
        })
    }

    /// `machine_list`: the caller's workers (but the rejected), by machine.
    pub(crate) async fn machine_list(
        &self,
        user: &UserId,
        now: Millis,
    ) -> Result<MachineListData, ApiError> {
        let workers = self.store.workers_of(user).await?;
        let views = workers
            .iter()
            .filter(|w| w.status != WorkerStatus::Rejected)
            .map(|w| worker_view(w, now, self.config.presence_timeout_ms))
            .collect();
        Ok(MachineListData {
            machines: machines(views),
        })
    }

    /// A worker of the caller's; anyone else's is `not_found`.
    pub(crate) async fn owned_worker(
        &self,
        user: &UserId,
        id: &WorkerId,
    ) -> Result<Worker, ApiError> {
        self.store
            .worker(id)
            .await?
            .filter(|w| w.owner.as_ref() == Some(user))
            .ok_or_else(|| ApiError::not_found("worker"))
    }
}

/// Checks the labels of a hello's profile (each trimmed, one line, not too
/// long); the models are taken as they are.
fn clean_profile(p: WorkerProfile) -> Result<WorkerProfile, ApiError> {
    Ok(WorkerProfile {
        machine: p
            .machine
            .map(|m| clean_label(&m, "machine", 128))
            .transpose()?,
        name: p.name.map(|n| clean_label(&n, "name", 128)).transpose()?,
        workdir: p
            .workdir
            .map(|w| clean_label(&w, "workdir", 1024))
            .transpose()?,
        version: p
            .version
            .map(|v| clean_label(&v, "version", 64))
            .transpose()?,
        models: p.models,
        default_model: p.default_model,
    })
}

/// Checks what a worker says of its agent: a reason is trimmed (blank is
/// none), at most [`MAX_AGENT_REASON_BYTES`], one line; the time is not
/// negative.
fn checked_report(report: AgentReport) -> Result<AgentReport, ApiError> {
    let AgentReport { state, reason, at } = report;
    if at < 0 {
        return Err(ApiError::bad_request("at must not be negative"));
    }
    let reason = match reason {
        Some(r) if !r.trim().is_empty() => Some(clean_label(&r, "reason", MAX_AGENT_REASON_BYTES)?),
        _ => None,
    };
    Ok(AgentReport { state, reason, at })
}
