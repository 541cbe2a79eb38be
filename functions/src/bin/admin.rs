//! `tether-admin`: users of a deployed Tether, from a machine with AWS
//! credentials (the standard AWS variables, profile and region).
//!
//! ```sh
//! tether-admin --table tether user add ada --admin   # prints the secret, once
//! tether-admin --table tether user list
//! tether-admin --table tether --management-endpoint https://API.execute-api.REGION.amazonaws.com/ws \
//!     user reset ada                                  # or: user remove ada
//! ```
//!
//! `reset` and `remove` end the user's access at once: the old secret and
//! the tickets issued under it stop working, and every open websocket of
//! the user (and, for `remove`, of the user's workers) is closed with the
//! Management API's `DeleteConnection`. That needs the WebSocket API's
//! Management API endpoint (the stack's `ManagementEndpoint` output) and
//! credentials allowed `execute-api:ManageConnections` on it.
//!
//! `infra/mint-user.sh` finds the table and the endpoint in the stack's
//! outputs and runs this.
//! `create-table` makes the table as the template declares it, for local
//! DynamoDB-compatible servers (the template creates it on AWS).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether_domain::handlers::Disconnected;
use tether_domain::store::Store as _;
use tether_domain::Domain;
use tether_domain::edge::now_millis;
use tether_functions::push::{ApiGatewayPush, NoPush};
use tether_functions::{DynamoStore, TableNames};

/// Manage the users of a Tether deployment on AWS.
#[derive(Debug, Parser)]
#[command(name = "tether-admin", version)]
struct Cli {
    /// The DynamoDB table (the stack's `TableName` output).
    #[arg(long, env = "TETHER_TABLE")]
    table: String,

    /// A DynamoDB endpoint other than AWS's (a local server).
    #[arg(long, env = "TETHER_DYNAMODB_ENDPOINT", value_name = "URL")]
    dynamodb_endpoint: Option<String>,

    /// The WebSocket API's Management API endpoint (the stack's
    /// `ManagementEndpoint` output, `https://{api-id}.execute-api.{region}.amazonaws.com/ws`),
    /// through which `user reset` and `user remove` close the user's open
    /// websockets. Required by those two.
    #[arg(long, env = "TETHER_MANAGEMENT_ENDPOINT", value_name = "URL")]
    management_endpoint: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Users: add, list, reset, remove.
    #[command(subcommand)]
    User(UserCommand),
    /// Create the table (as template.yaml declares it) if it does not exist.
    CreateTable,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user and print its secret (shown only this once).
    Add {
        name: String,
        /// May see and approve pairing requests nobody has claimed.
        #[arg(long)]
        admin: bool,
    },
    /// Give a user a new secret; the old one and its tickets stop working,
    /// and the user's open websockets are closed (needs --management-endpoint).
    Reset { name: String },
    /// Remove a user: the secret and its tickets stop working, the user's
    /// workers are revoked, and every open websocket of the user and of those
    /// workers is closed (needs --management-endpoint). The user's sessions and
    /// messages stay in the table; the name may be used again. The last admin
    /// cannot be removed.
    Remove { name: String },
    /// List users (never secrets).
    List,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let sdk = tether_functions::dynamo::sdk_config().await;
    let client = tether_functions::dynamo::client(&sdk, cli.dynamodb_endpoint.as_deref());
    let tables = TableNames { main: cli.table };
    if let Command::CreateTable = cli.command {
        DynamoStore::create_tables(&client, &tables)
            .await
            .map_err(|e| format!("creating {}: {e}", tables.main))?;
        println!("Table {} is ready.", tables.main);
        return Ok(());
    }
    let store = DynamoStore::new(client, tables);
    let Command::User(command) = cli.command else {
        return Ok(());
    };
    // Add and list reach no connection; reset and remove close some.
    let endpoint = cli.management_endpoint.as_deref();
    let config = tether_domain::Config::default();
    match command {
        UserCommand::Add { name, admin } => {
            let domain = Domain::new(store, NoPush, config);
            let (user, secret) = domain
                .add_user(&name, admin, now_millis())
                .await
                .map_err(|e| format!("cannot add user {name:?}: {}", e.message))?;
            println!("Created user \"{}\" ({}).", user.name, user.id);
            println!("  Secret: {}", secret.expose());
            println!("The secret is shown only this once. `tether-admin user reset {}` makes a new one.", user.name);
        }
        UserCommand::Reset { name } => {
            let domain = Domain::new(store, management_push(&sdk, endpoint)?, config);
            let reset = domain
                .reset_user_secret(&name, now_millis())
                .await
                .map_err(|e| format!("cannot reset the secret of {name:?}: {}", e.message))?;
            println!("New secret for \"{name}\": {}", reset.secret.expose());
            println!("The secret is shown only this once; the old one and its tickets no longer work.");
            println!("Closed {} open connection(s) of \"{name}\".", reset.browsers.closed);
            unclosed(&reset.browsers)?;
        }
        UserCommand::Remove { name } => {
            let domain = Domain::new(store, management_push(&sdk, endpoint)?, config);
            let removed = domain
                .remove_user(&name, now_millis())
                .await
                .map_err(|e| format!("cannot remove the user {name:?}: {}", e.message))?;
            println!(
                "Removed the user \"{name}\" ({}); their secret and tickets no longer work.",
                removed.user.id
            );
            println!(
                "Revoked {} worker(s); closed {} connection(s) of the user and {} of their workers.",
                removed.workers_revoked, removed.browsers.closed, removed.workers.closed
            );
            println!("Their sessions and messages stay in the table.");
            let mut all = removed.browsers;
            all.failed.extend(removed.workers.failed);
            unclosed(&all)?;
        }
        UserCommand::List => {
            let domain = Domain::new(store, NoPush, config);
            let users = domain
                .store
                .users()
                .await
                .map_err(|e| format!("reading users: {e}"))?;
            if users.is_empty() {
                println!("No users. `tether-admin user add NAME --admin` creates one.");
            }
            for u in users {
                println!(
                    "{}  {}  {}",
                    u.name,
                    u.id.as_str(),
                    if u.admin { "admin" } else { "user" }
                );
            }
        }
    }
    Ok(())
}

/// The push port on the WebSocket API's Management API, for the commands
/// that close connections.
fn management_push(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Result<ApiGatewayPush, String> {
    let endpoint = endpoint.map(str::trim).filter(|e| !e.is_empty()).ok_or(
        "this command closes the user's open websockets and needs the WebSocket API's \
         Management API endpoint: pass --management-endpoint URL (or set \
         TETHER_MANAGEMENT_ENDPOINT) to the stack's ManagementEndpoint output, \
         https://{api-id}.execute-api.{region}.amazonaws.com/ws",
    )?;
    let host = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| format!("--management-endpoint {endpoint:?} is not an https:// URL"))?;
    if host.is_empty() || host.starts_with('/') {
        return Err(format!("--management-endpoint {endpoint:?} has no host"));
    }
    let endpoint = endpoint.trim_end_matches('/');
    Ok(ApiGatewayPush::new(ApiGatewayPush::client(sdk, endpoint), 1))
}

/// Fails the command (after what it did was printed) if some connections
/// could not be closed: the operator must know.
fn unclosed(report: &Disconnected) -> Result<(), String> {
    match report.failed.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} connection(s) could not be closed ({first}); their records are deleted, so \
             they can no longer act or receive anything, and they end when idle",
            report.failed.len()
        )),
    }
}
