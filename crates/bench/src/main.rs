//! `sluice-bench` (run as `sluice bench …`): what a real Kafka client sees from a broker, and
//! what this machine can do at best, so every result can be quoted as a fraction of the
//! machine.
//!
//! - `baseline`: sequential buffered write, append + fdatasync at 4 KiB / 64 KiB / 1 MiB,
//!   loopback TCP — the limits a broker meets (like Redpanda's `rpk iotune`).
//! - `produce`, `consume`, `e2e`: librdkafka clients against any Kafka-protocol broker.
//! - `amqp`: lapin publishers and consumers against any AMQP 0-9-1 broker (Sluice or
//!   RabbitMQ): durable/confirmed, transient and fan-out scenarios.

mod amqp;
mod baseline;
mod cpu;
mod delay;
mod load;
mod report;

pub(crate) use baseline::pattern as baseline_pattern;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice bench",
    version,
    about = "Measure the machine and a Kafka-protocol or AMQP broker"
)]
struct Cli {
    /// Print the result as one JSON object instead of a table.
    #[arg(long, value_enum, default_value = "table", global = true)]
    output: report::Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Disk and loopback limits of this machine.
    Baseline(baseline::Args),
    /// Producer throughput and acknowledgement latency.
    Produce(load::ProduceArgs),
    /// Consumer catch-up throughput.
    Consume(load::ConsumeArgs),
    /// End-to-end latency (producer timestamp in the payload to consumer) at a fixed rate.
    E2e(load::E2eArgs),
    /// AMQP 0-9-1 publishers and consumers (lapin): messages/s end to end.
    Amqp(amqp::AmqpArgs),
    /// Scheduled messages (an x-delayed-message exchange), all due at once: how late they
    /// become visible.
    Delay(delay::DelayArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Baseline(args) => baseline::run(&args),
        Command::Produce(args) => load::produce(&args),
        Command::Consume(args) => load::consume(&args),
        Command::E2e(args) => load::e2e(&args),
        Command::Amqp(args) => amqp::run(&args),
        Command::Delay(args) => delay::run(&args),
    };
    match result {
        Ok(report) => report.print(cli.output),
        Err(e) => {
            eprintln!("sluice bench: {e:#}");
            std::process::exit(1);
        }
    }
}
