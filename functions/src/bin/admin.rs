//! `tether-admin`: users of a deployed Tether, from a machine with AWS
//! credentials (the standard AWS variables, profile and region).
//!
//! ```sh
//! tether-admin --table tether user add ada --admin   # prints the secret, once
//! tether-admin --table tether user reset ada
//! tether-admin --table tether user list
//! ```
//!
//! `infra/mint-user.sh` finds the table in the stack's outputs and runs this.
//! `create-table` makes the table as the template declares it, for local
//! DynamoDB-compatible servers (the template creates it on AWS).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether_domain::store::Store as _;
use tether_domain::Domain;
use tether_functions::handlers::now_millis;
use tether_functions::push::NoPush;
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

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Users: add, reset, list.
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
    /// Give a user a new secret; the old one stops working.
    Reset { name: String },
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
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(tether_functions::dynamo::https_client())
        .load()
        .await;
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&sdk);
    if let Some(endpoint) = &cli.dynamodb_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    let client = aws_sdk_dynamodb::Client::from_conf(builder.build());
    let tables = TableNames { main: cli.table };
    if let Command::CreateTable = cli.command {
        DynamoStore::create_tables(&client, &tables)
            .await
            .map_err(|e| format!("creating {}: {e}", tables.main))?;
        println!("Table {} is ready.", tables.main);
        return Ok(());
    }
    let store = DynamoStore::new(client, tables);
    let domain = Domain::new(store, NoPush, tether_domain::Config::default());
    let Command::User(command) = cli.command else {
        return Ok(());
    };
    match command {
        UserCommand::Add { name, admin } => {
            let (user, secret) = domain
                .add_user(&name, admin, now_millis())
                .await
                .map_err(|e| format!("cannot add user {name:?}: {}", e.message))?;
            println!("Created user \"{}\" ({}).", user.name, user.id);
            println!("  Secret: {}", secret.expose());
            println!("The secret is shown only this once. `tether-admin user reset {}` makes a new one.", user.name);
        }
        UserCommand::Reset { name } => {
            let secret = domain
                .reset_user_secret(&name)
                .await
                .map_err(|e| format!("cannot reset the secret of {name:?}: {}", e.message))?;
            println!("New secret for \"{name}\": {}", secret.expose());
            println!("The secret is shown only this once; the old one no longer works.");
        }
        UserCommand::List => {
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
