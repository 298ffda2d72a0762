//! `sluice`: the one binary. `sluice server` runs the broker; every other subcommand is a
//! command-line client that talks to a broker (Sluice or Kafka) over the Kafka protocol, or
//! for AMQP queues, exchanges and bindings to a Sluice server's admin HTTP API.
//!
//! Where to look: `config/` (server configuration: every crate's keys gathered), `server.rs`
//! (wiring storage, broker and admin HTTP; signals), `doors.rs` (the front-door registry:
//! where a protocol plugs in), `amqp_admin.rs` (the AMQP door behind the admin API's
//! `/api/…`), `storage_cmd.rs` (`sluice storage check|repair`), `cli/` (the client
//! subcommands and their output, over the `kafka-client` crate, and for AMQP objects over
//! the admin HTTP API).

mod amqp_admin;
mod bench;
mod cli;
mod config;
mod data_dir_lock;
mod doors;
mod logging;
mod server;
mod storage_cmd;

use std::process::ExitCode;

use clap::Parser;

use cli::args::{Cli, Command};
use cli::exit::{EXIT_USAGE, exit_code_for};

fn main() -> ExitCode {
    // `sluice bench …` is the librdkafka load generator, a separate binary (see bench.rs).
    if std::env::args_os().nth(1).is_some_and(|a| a == "bench") {
        return bench::exec(std::env::args_os().skip(2));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" to clap but succeed for the user.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Storage(cmd) => storage_cmd::run(cmd).await,
            other => {
                let target = cli::Target {
                    bootstrap: cli.bootstrap_server,
                    admin: cli.admin,
                    output: cli.output,
                    request_timeout_ms: cli.request_timeout_ms,
                };
                cli::run(other, target).await
            }
        }
    });
    // Don't wait for lingering blocking tasks (e.g. a stdin reader) on the way out.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_for(&e) as u8)
        }
    }
}
