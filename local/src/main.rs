//! `tether`: runs the local host and manages its users (see
//! [`tether_local::app`]).

use std::process::ExitCode;

use clap::Parser as _;
use tether_local::app;
use tether_local::cli::Cli;

fn main() -> ExitCode {
    app::main_with(Cli::parse(), app::run)
}
