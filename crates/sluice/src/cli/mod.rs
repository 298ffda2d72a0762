//! The client subcommands: each connects to a broker over the Kafka protocol, does its work and
//! prints a table (or JSON with `--output json`).

pub mod args;
pub mod consume;
pub mod exit;
pub mod group;
pub mod output;
pub mod produce;
pub mod topic;

use std::time::Duration;

use args::{Command, OutputFormat};

use kafka_client::Client;

/// What every client command needs.
pub struct Ctx {
    pub bootstrap: String,
    pub output: OutputFormat,
    pub timeout: Duration,
}

impl Ctx {
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.bootstrap, self.timeout).await?)
    }
}

pub async fn run(
    command: Command,
    bootstrap: String,
    output: OutputFormat,
    request_timeout_ms: u64,
) -> anyhow::Result<i32> {
    let ctx = Ctx {
        bootstrap,
        output,
        timeout: Duration::from_millis(request_timeout_ms.max(1)),
    };
    match command {
        Command::Topic(cmd) => topic::run(&ctx, cmd).await,
        Command::Produce(args) => produce::run(&ctx, args).await,
        Command::Consume(args) => consume::run(&ctx, args).await,
        Command::Group(cmd) => group::run(&ctx, cmd).await,
        Command::Server(_) | Command::Storage(_) => unreachable!("handled by main"),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, so long-running commands can finish cleanly.
pub async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let on_term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = on_term => {}
    }
}

/// Splits `key=value`.
pub fn parse_kv(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(exit::usage(format!(
            "{what} `{s}` must look like key=value"
        ))),
    }
}
