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

use crate::client::Client;

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
        Command::Server(_) => unreachable!("handled by main"),
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
