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
use tether_domain::edge::now_millis;
use tether_domain::handlers::{Operator, UserCommand as DomainUserCommand};
use tether_domain::Domain;
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
    let op = Operator {
        program: "tether-admin",
        kept_in: "the table",
    };
    let report = match command {
        // Add and list reach no connection.
        UserCommand::Add { name, admin } => {
            Domain::new(store, NoPush, config)
                .user_command(DomainUserCommand::Add { name: &name, admin }, op, now_millis())
                .await
        }
        UserCommand::List => {
            Domain::new(store, NoPush, config)
                .user_command(DomainUserCommand::List, op, now_millis())
                .await
        }
        UserCommand::Reset { name } => {
            Domain::new(store, management_push(&sdk, endpoint)?, config)
                .user_command(DomainUserCommand::Reset { name: &name }, op, now_millis())
                .await
        }
        UserCommand::Remove { name } => {
            Domain::new(store, management_push(&sdk, endpoint)?, config)
                .user_command(DomainUserCommand::Remove { name: &name }, op, now_millis())
                .await
        }
    }
    .map_err(|e| e.message)?;
    for line in &report.lines {
        println!("{line}");
    }
    match report.unclosed {
        Some(why) => Err(why),
        None => Ok(()),
    }
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

