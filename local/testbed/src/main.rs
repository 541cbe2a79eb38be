//! `tether-testbed`: the `tether` commands on the AWS-shaped tier.
//!
//! `serve` puts the gateway in front of the real Lambda functions under
//! `cargo lambda watch`, with DynamoDB on the tier's server; `up` does the
//! same after making the owner and this machine's worker in that host's
//! table; `user` manages the users in the table (`reset` and `remove` close
//! the user's websockets with the Management API's `DeleteConnection`, as
//! `tether-admin` does on AWS, through the running host's endpoint); `worker`
//! is a plain worker.
//! The tier's settings: the JSON file named by `LAMBDA_TIER_CONFIG`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tether_domain::Domain;
use tether_functions::{DynamoStore, TableNames};
use tether_local::app;
use tether_local::cli::{self, Cli, Command, FileConfig};
use tether_local::control::ControlPush;
use tether_local::gateway::Hub;
use tether_testbed::lambda::emulator::{table_of, TierConfig};
use tether_testbed::lambda::{self, LambdaHost};
use tokio::net::TcpListener;

/// The variable naming the tier's settings file.
const TIER_VAR: &str = "LAMBDA_TIER_CONFIG";

fn main() -> ExitCode {
    app::main_with(Cli::parse(), run)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let tier = std::env::var_os(TIER_VAR)
        .with_context(|| format!("{TIER_VAR} must name the tier's settings file"))?;
    let tier = TierConfig::load(Path::new(&tier))?;
    let file = FileConfig::load(cli.config.as_deref())?;
    let data_dir = cli::data_dir(&cli, &file)?;
    match &cli.command {
        Command::Serve(args) => {
            let gateway = args.tuning.gateway(&file);
            let domain = args.tuning.domain(&file, &gateway);
            let listener = app::bind(cli::serve_addr(args, &file)).await?;
            let host = LambdaHost {
                data_dir,
                tier,
                gateway,
                domain,
            };
            let (_, table) = lambda::host_table(&host).await?;
            serve(host, table, listener).await
        }
        Command::User(command) => {
            let table = table_of(&data_dir, false)?;
            let store = DynamoStore::new(tier.dynamodb(), TableNames { main: table });
            let config = tether_domain::Config::default();
            let done = match lambda::management_endpoint(&data_dir)? {
                Some(endpoint) => {
                    let push = tier.management_push(&endpoint);
                    app::user_with(command, &Domain::new(store, push, config)).await
                }
                // No host runs here, so no websocket is open: the local
                // port finds no host either and closes nothing.
                None => {
                    let push = ControlPush::new(&data_dir);
                    app::user_with(command, &Domain::new(store, push, config)).await
                }
            };
            done.context("on the Lambda tier's table")
        }
        Command::Up(args) => {
            // As `tether up`, with the host's table on the tier's DynamoDB:
            // the owner and this machine's worker are made there before the
            // functions start.
            let gateway = args.tuning.gateway(&file);
            let domain = args.tuning.domain(&file, &gateway);
            let listener = app::bind(cli::up_addr(args, &file)).await?;
            let url = app::url_of(&listener)?;
            let host = LambdaHost {
                data_dir: data_dir.clone(),
                tier,
                gateway,
                domain,
            };
            let (client, table) = lambda::host_table(&host).await?;
            let store = DynamoStore::new(client, table.clone());
            let local = Domain::new(store, Hub::new(), host.domain.clone());
            app::first_start(&local, &url).await?;
            app::start_local_worker(args, &data_dir, &url, &local).await?;
            serve(host, table, listener).await
        }
        // A worker is a client: the tier changes nothing for it.
        Command::Worker(args) => app::worker(args).await,
    }
}

/// Serves the Lambda host until a signal stops it.
async fn serve(host: LambdaHost, table: TableNames, listener: TcpListener) -> anyhow::Result<()> {
    lambda::serve(
        host,
        table,
        listener,
        // The line tests (and people) wait for, once every function has
        // answered once.
        |addr| println!("tether listening on http://{addr}"),
        app::shutdown_signal(),
    )
    .await
}
