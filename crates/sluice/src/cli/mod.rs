//! The client subcommands: each connects to a broker over the Kafka protocol — or, for the
//! AMQP objects (`queue`, `exchange`, `binding`), to its admin HTTP API — does its work and
//! prints a table (or JSON with `--output json`).

pub mod admin_http;
pub mod args;
pub mod binding;
pub mod consume;
pub mod exchange;
pub mod exit;
pub mod group;
pub mod output;
pub mod produce;
pub mod queue;
pub mod topic;

use std::time::Duration;

use args::{Command, OutputFormat};

use kafka_client::Client;

/// What every client command needs.
pub struct Ctx {
    pub bootstrap: String,
    /// The admin HTTP API (host:port).
    pub admin: String,
    pub output: OutputFormat,
    pub timeout: Duration,
}

impl Ctx {
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.bootstrap, self.timeout).await?)
    }

    pub fn admin_client(&self) -> anyhow::Result<admin_http::AdminClient> {
        admin_http::AdminClient::new(&self.admin, self.timeout)
    }
}

/// Where the client commands connect, and how they answer.
pub struct Target {
    pub bootstrap: String,
    pub admin: String,
    pub output: OutputFormat,
    pub request_timeout_ms: u64,
}

pub async fn run(command: Command, target: Target) -> anyhow::Result<i32> {
    let ctx = Ctx {
        bootstrap: target.bootstrap,
        admin: target.admin,
        output: target.output,
        timeout: Duration::from_millis(target.request_timeout_ms.max(1)),
    };
    match command {
        Command::Topic(cmd) => topic::run(&ctx, cmd).await,
        Command::Produce(args) => produce::run(&ctx, args).await,
        Command::Consume(args) => consume::run(&ctx, args).await,
        Command::Group(cmd) => group::run(&ctx, cmd).await,
        Command::Queue(cmd) => queue::run(&ctx, cmd).await,
        Command::Exchange(cmd) => exchange::run(&ctx, cmd).await,
        Command::Binding(cmd) => binding::run(&ctx, cmd).await,
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

/// `--arg key=value` flags as a JSON object of declare arguments: integers and booleans
/// typed (the server keeps every value as its text, so `5` and `"5"` are the same setting).
pub fn arguments_json(
    args: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for a in args {
        let (k, v) = parse_kv(a, "--arg")?;
        let value = if let Ok(n) = v.parse::<i64>() {
            serde_json::Value::from(n)
        } else if let Ok(b) = v.parse::<bool>() {
            serde_json::Value::from(b)
        } else {
            serde_json::Value::from(v)
        };
        out.insert(k, value);
    }
    Ok(out)
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
