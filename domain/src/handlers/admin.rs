//! The admin commands: a user is added, given a new secret, or removed.
//!
//! A reset or a removal ends the user's access at once, whichever host runs
//! it: the tickets issued under the old secret stop working (a ticket
//! carries the secret hash it was issued under, and `$connect` compares it
//! with the user's current one), and every open socket of the user is
//! closed through the push port. A removal also revokes the user's workers
//! and closes theirs. The user's sessions and messages stay in the store;
//! nothing reaches them without the user.

use tracing::warn;

use crate::auth::Secret;
use crate::error::{ApiError, ErrorCode};
use crate::ids::UserId;
use crate::model::{Millis, User, WorkerStatus};
use crate::push::Push;
use crate::store::{Store, StoreError};

use super::entry::clean_label;
use super::Domain;

/// What closing a set of connections came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnected {
    /// Connections the push port closed.
    pub closed: usize,
    /// Why the push port could not close some. Their records are deleted
    /// all the same, so they can neither act nor be pushed to, but such a
    /// socket may stay open until it idles out.
    pub failed: Vec<String>,
}

impl Disconnected {
    fn merge(&mut self, other: Disconnected) {
        self.closed += other.closed;
        self.failed.extend(other.failed);
    }
}

/// A user's new secret (to show once), and the sockets the reset closed.
#[derive(Debug)]
pub struct Reset {
    pub secret: Secret,
    pub browsers: Disconnected,
}

/// A removed user, and what the removal ended.
#[derive(Debug)]
pub struct Removed {
    /// The record as it was.
    pub user: User,
    /// Workers of the user that were approved and are now revoked.
    pub workers_revoked: usize,
    /// The user's browser connections.
    pub browsers: Disconnected,
    /// The connections of the user's workers.
    pub workers: Disconnected,
}

const MAX_USER_NAME_LEN: usize = 64;

impl<S: Store, P: Push> Domain<S, P> {
    /// Admin: creates a user and returns its secret (shown once).
    pub async fn add_user(
        &self,
        name: &str,
        admin: bool,
        now: Millis,
    ) -> Result<(User, Secret), ApiError> {
        let name = clean_label(name, "user name", MAX_USER_NAME_LEN)?;
        if self.store.user_by_name(&name).await?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, format!("user {name} exists")));
        }
        let secret = Secret::generate("tsk_");
        let user = User {
            id: UserId::random(),
            name,
            secret_hash: secret.hash(),
            admin,
            created_at: now,
        };
        match self.store.create_user(&user).await {
            Ok(()) => Ok((user, secret)),
            Err(StoreError::Conflict(_)) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("user {} exists", user.name),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Admin: gives a user a new secret. The old one stops working, and so
    /// do the tickets issued under it; every open socket of the user is
    /// closed (a browser signs in again with the new secret).
    pub async fn reset_user_secret(&self, name: &str, now: Millis) -> Result<Reset, ApiError> {
        let user = self.user_named(name).await?;
        let secret = Secret::generate("tsk_");
        if !self.store.set_user_secret(&user.id, &secret.hash()).await? {
            return Err(ApiError::not_found("user"));
        }
        warn!(user_id = %user.id, "user secret reset");
        let browsers = self.close_user_connections(&user.id, now).await?;
        Ok(Reset { secret, browsers })
    }

    /// Admin: removes a user. Their workers are revoked (and disconnected,
    /// as `worker_revoke` does), their record deleted (their secret and
    /// tickets stop working; the name may be used again), and their open
    /// sockets closed. Their sessions and messages stay in the store. The
    /// last admin is not removed.
    ///
    /// Workers are revoked before the record goes, so a failure part-way
    /// leaves a user that the same command, run again, finds and finishes.
    /// A pairing the user's browser approves meanwhile is caught by a second
    /// pass once the browser is closed.
    pub async fn remove_user(&self, name: &str, now: Millis) -> Result<Removed, ApiError> {
        let user = self.user_named(name).await?;
        if user.admin {
            // Two removals of the last two admins at the same moment could
            // both pass this; admin commands are run by hand, one at a time.
            let admins = self.store.users().await?.iter().filter(|u| u.admin).count();
            if admins <= 1 {
                return Err(ApiError::new(
                    ErrorCode::InvalidState,
                    format!(
                        "{} is the last admin; add another admin before removing this one",
                        user.name
                    ),
                ));
            }
        }
        let (mut workers_revoked, mut workers) = self.revoke_workers_of(&user.id, now).await?;
        if !self.store.delete_user(&user.id).await? {
            return Err(ApiError::not_found("user"));
        }
        warn!(user_id = %user.id, "user removed");
        let browsers = self.close_user_connections(&user.id, now).await?;
        let (late, late_sockets) = self.revoke_workers_of(&user.id, now).await?;
        workers_revoked += late;
        workers.merge(late_sockets);
        Ok(Removed {
            user,
            workers_revoked,
            browsers,
            workers,
        })
    }

    async fn user_named(&self, name: &str) -> Result<User, ApiError> {
        self.store
            .user_by_name(name)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))
    }

    /// Closes every browser connection of a user and deletes their records.
    async fn close_user_connections(
        &self,
        user: &UserId,
        now: Millis,
    ) -> Result<Disconnected, ApiError> {
        let conns = self.store.user_connections(user, now).await?;
        Ok(self.close_connections(&conns, now).await)
    }

    /// Revokes a user's approved workers and closes the connections of all
    /// their workers. Returns how many it revoked.
    async fn revoke_workers_of(
        &self,
        user: &UserId,
        now: Millis,
    ) -> Result<(usize, Disconnected), ApiError> {
        let mut revoked = 0;
        let mut sockets = Disconnected::default();
        for worker in self.store.workers_of(user).await? {
            let now_revoked =
                worker.status == WorkerStatus::Approved && self.revoke(&worker.id).await?.is_some();
            // An owned worker is approved or revoked. One revoked before has
            // no connection left, normally; one revoked by someone else a
            // moment ago may still have.
            sockets.merge(self.disconnect_revoked(&worker.id, now).await?);
            if now_revoked {
                revoked += 1;
                self.announce_worker(&worker.id, None, now).await;
            }
        }
        Ok((revoked, sockets))
    }
}

/// A user command of an operator's command line (`tether user …` on the
/// local host, `tether-admin user …` on AWS): one runner for both, so the
/// two say the same things.
#[derive(Clone, Copy, Debug)]
pub enum UserCommand<'a> {
    Add { name: &'a str, admin: bool },
    List,
    Reset { name: &'a str },
    Remove { name: &'a str },
}

/// How a command line names itself, and where it keeps conversations, for
/// its messages (`tether` and "the database"; `tether-admin` and "the table").
#[derive(Clone, Copy, Debug)]
pub struct Operator<'a> {
    pub program: &'a str,
    pub kept_in: &'a str,
}

/// What a user command did: the lines to print, and, if some connections
/// could not be closed, why (the command then fails, after printing).
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub unclosed: Option<String>,
}

impl Report {
    fn unclosed(mut self, report: &Disconnected) -> Self {
        self.unclosed = report.failed.first().map(|first| {
            format!(
                "{} connection(s) could not be closed ({first}); their records are deleted, so \
                 they can no longer act or receive anything, and they end when idle",
                report.failed.len()
            )
        });
        self
    }
}

impl<S: Store, P: Push> Domain<S, P> {
    /// Approves a pending worker for the first admin, as `tether up` does
    /// for its own machine's worker (the person running it is the owner).
    /// Returns the admin's name, or `None` if there is no admin yet or the
    /// worker was not pending.
    pub async fn approve_for_first_admin(&self, worker: &crate::ids::WorkerId) -> Result<Option<String>, ApiError> {
        let Some(owner) = self.store.users().await?.into_iter().find(|u| u.admin) else {
            return Ok(None);
        };
        let approved = self
            .store
            .transition_worker(worker, WorkerStatus::Pending, WorkerStatus::Approved, Some(&owner.id), None)
            .await?;
        Ok(approved.map(|_| owner.name))
    }

    /// Whether the store has no user yet (a fresh install).
    pub async fn no_users(&self) -> Result<bool, ApiError> {
        Ok(self.store.users().await?.is_empty())
    }

    /// Runs a user command. The secret a command makes is in its lines:
    /// they go to the operator's terminal, never to a log.
    pub async fn user_command(&self, command: UserCommand<'_>, op: Operator<'_>, now: Millis) -> Result<Report, ApiError> {
        let what = match command {
            UserCommand::Add { name, .. } => format!("cannot add user {name:?}"),
            UserCommand::List => "cannot list users".into(),
            UserCommand::Reset { name } => format!("cannot reset the secret of {name:?}"),
            UserCommand::Remove { name } => format!("cannot remove the user {name:?}"),
        };
        self.run_user_command(command, op, now).await.map_err(|mut e| {
            e.message = format!("{what}: {}", e.message);
            e
        })
    }

    async fn run_user_command(&self, command: UserCommand<'_>, op: Operator<'_>, now: Millis) -> Result<Report, ApiError> {
        let program = op.program;
        let mut lines = Vec::new();
        match command {
            UserCommand::Add { name, admin } => {
                let (user, secret) = self.add_user(name, admin, now).await?;
                lines.push(format!("Created user \"{}\" ({}).", user.name, user.id));
                lines.push(format!("  Secret: {}", secret.expose()));
                lines.push(format!(
                    "The secret is shown only this once. `{program} user reset {}` makes a new one.",
                    user.name
                ));
                Ok(Report { lines, unclosed: None })
            }
            UserCommand::List => {
                let users = self.store.users().await?;
                if users.is_empty() {
                    lines.push(format!("No users. `{program} user add NAME --admin` creates one."));
                    return Ok(Report { lines, unclosed: None });
                }
                let width = users.iter().map(|u| u.name.chars().count()).max().unwrap_or(4).max(4);
                lines.push(format!("{:width$}  {:28}  {:5}  CREATED", "NAME", "ID", "ADMIN"));
                for u in users {
                    lines.push(format!(
                        "{:width$}  {:28}  {:5}  {}",
                        u.name,
                        u.id.as_str(),
                        if u.admin { "yes" } else { "no" },
                        crate::edge::iso8601(u.created_at)
                    ));
                }
                Ok(Report { lines, unclosed: None })
            }
            UserCommand::Reset { name } => {
                let reset = self.reset_user_secret(name, now).await?;
                lines.push(format!("New secret for \"{name}\": {}", reset.secret.expose()));
                lines.push(
                    "The secret is shown only this once; the old one and its sign-in tickets no longer work."
                        .into(),
                );
                lines.push(format!("Closed {} open connection(s) of \"{name}\".", reset.browsers.closed));
                Ok(Report { lines, unclosed: None }.unclosed(&reset.browsers))
            }
            UserCommand::Remove { name } => {
                let removed = self.remove_user(name, now).await?;
                lines.push(format!(
                    "Removed the user \"{name}\" ({}); their secret and sign-in tickets no longer work.",
                    removed.user.id
                ));
                lines.push(format!(
                    "Revoked {} worker(s); closed {} connection(s) of the user and {} of their workers.",
                    removed.workers_revoked, removed.browsers.closed, removed.workers.closed
                ));
                lines.push(format!("Their sessions and messages stay in {}.", op.kept_in));
                let mut all = removed.browsers;
                all.merge(removed.workers);
                Ok(Report { lines, unclosed: None }.unclosed(&all))
            }
        }
    }
}
