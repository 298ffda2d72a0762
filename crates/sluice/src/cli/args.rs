//! Command-line grammar of the `sluice` binary (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    usage or configuration error (bad flag, unknown config key, invalid value)
  2    broker unreachable (connection refused, timed out, or dropped); for queue, exchange
       and binding commands, its admin API
  3    the broker answered with an error (e.g. topic already exists, unknown group or queue)
  4    consume: --count not reached before --timeout-ms
  5    storage check: damage found; storage repair: offsets would be lost (see --skip-damaged)
  130  server: stopped by a second SIGINT/SIGTERM without finishing the graceful shutdown";

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a message broker that speaks the Kafka protocol, and its command-line client",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Broker to talk to (host:port, comma-separated for several). Works with any Kafka broker.
    #[arg(
        long,
        short = 'b',
        global = true,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_server: String,

    /// Output style: human-readable tables, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Timeout for each request to the broker, in milliseconds.
    #[arg(long, global = true, default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// The server's admin HTTP API (host:port), which `queue`, `exchange` and `binding`
    /// commands use.
    #[arg(
        long,
        global = true,
        env = "SLUICE_ADMIN",
        value_name = "HOST:PORT",
        default_value = crate::cli::admin_http::DEFAULT_ADMIN
    )]
    pub admin: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker (zero configuration: data in ./sluice-data, Kafka on :9092, admin on :8080).
    Server(ServerArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce lines from stdin or a file, one record per line.
    Produce(ProduceArgs),
    /// Consume records and print them.
    Consume(ConsumeArgs),
    /// Inspect and manage consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Declare, list, describe, purge and delete AMQP queues (through the admin API, --admin).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Declare, list, describe and delete AMQP exchanges (through the admin API, --admin).
    #[command(subcommand)]
    Exchange(ExchangeCommand),
    /// Add, list and remove AMQP bindings (through the admin API, --admin).
    #[command(subcommand)]
    Binding(BindingCommand),
    /// Check or repair a stopped broker's data directory (damaged or missing files).
    #[command(subcommand)]
    Storage(StorageCommand),
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Read-only scan of every stored batch: what is damaged, which offsets are affected.
    /// Exit code 5 when damage is found.
    Check(StorageArgs),
    /// Rebuild consume queues, index and metadata from the commit log where they can be
    /// rebuilt; with --skip-damaged also give up what cannot, reporting exactly which
    /// offsets. Exit code 5 when offsets would be lost and --skip-damaged was not given.
    Repair {
        #[command(flatten)]
        args: StorageArgs,
        /// Give up damaged ranges (consumers then continue past them).
        #[arg(long)]
        skip_damaged: bool,
    },
}

#[derive(Args, Debug)]
pub struct StorageArgs {
    /// The server's data directory (storage.dir; default ./sluice-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// The server's TOML configuration file, if it has one.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug, Default)]
#[command(after_help = "\
Configuration precedence: flags > SLUICE_* environment variables > --config file > defaults.
Every key of `--print-config` can be set with --set section.key=value (Kafka names such as
log.retention.ms are accepted too) or with SLUICE_SECTION_KEY, e.g. SLUICE_STORAGE_DIR.")]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Data directory (storage.dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Kafka listener address (kafka.listener).
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_listener: Option<String>,
    /// Host advertised to Kafka clients (kafka.advertised_host).
    #[arg(long, value_name = "HOST")]
    pub advertised_host: Option<String>,
    /// Port advertised to Kafka clients (kafka.advertised_port).
    #[arg(long, value_name = "PORT")]
    pub advertised_port: Option<String>,
    /// AMQP 0-9-1 listener address (amqp.listener).
    #[arg(long, value_name = "HOST:PORT")]
    pub amqp_listener: Option<String>,
    /// Admin/metrics HTTP listener address (admin.listener).
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_listener: Option<String>,
    /// Flush policy: async or sync (storage.flush).
    #[arg(long, value_name = "MODE")]
    pub flush: Option<String>,
    /// Log format: human or json (log.format).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log level or filter directive (log.level).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Set any configuration key: --set storage.segment_bytes=1048576 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Name of the new topic.
        topic: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// Topic config, e.g. --config retention.ms=60000 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Describe topics: partitions, leaders, offsets and configs.
    Describe {
        /// Topics to describe.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Add partitions or change topic configs.
    Alter {
        /// Topic to change.
        topic: String,
        /// New total number of partitions (can only grow).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Set a topic config (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Remove a topic config override, back to the default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete topics.
    Delete {
        /// Topics to delete.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Succeed if a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

/// The vhost an AMQP object lives in (`/` unless told).
#[derive(Args, Debug, Clone)]
pub struct VhostArg {
    /// Virtual host (amqp.vhosts lists the served ones).
    #[arg(long, default_value = "/")]
    pub vhost: String,
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List queues with their ready and unacknowledged messages and consumers.
    List {
        /// Only this vhost's queues (default: every vhost's).
        #[arg(long)]
        vhost: Option<String>,
    },
    /// Declare a queue (durable unless --transient); succeeds if it exists alike.
    Declare {
        /// Name of the queue.
        name: String,
        #[command(flatten)]
        vhost: VhostArg,
        /// Not durable: deleted when the server restarts.
        #[arg(long)]
        transient: bool,
        /// Deleted when its last consumer goes.
        #[arg(long)]
        auto_delete: bool,
        /// Queue argument, e.g. --arg x-message-ttl=60000 (repeatable).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// Show a queue: flags, arguments and policy, ready and unacknowledged messages,
    /// consumers, counters and bindings.
    Describe {
        /// Name of the queue.
        name: String,
        #[command(flatten)]
        vhost: VhostArg,
    },
    /// Drop a queue's ready messages (unacknowledged ones stay with their consumers).
    Purge {
        /// Name of the queue.
        name: String,
        #[command(flatten)]
        vhost: VhostArg,
    },
    /// Delete a queue with its messages and bindings (its consumers are cancelled).
    Delete {
        /// Name of the queue.
        name: String,
        #[command(flatten)]
        vhost: VhostArg,
        /// Refuse if the queue has consumers.
        #[arg(long)]
        if_unused: bool,
        /// Refuse if the queue holds messages.
        #[arg(long)]
        if_empty: bool,
        /// Succeed if the queue does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    pub fn name(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ExchangeCommand {
    /// List exchanges, built-in ones included.
    List {
        /// Only this vhost's exchanges (default: every vhost's).
        #[arg(long)]
        vhost: Option<String>,
    },
    /// Declare an exchange (durable unless --transient); succeeds if it exists alike.
    Declare {
        /// Name of the exchange.
        name: String,
        /// How it routes.
        #[arg(long = "type", short = 't', value_enum, default_value_t = ExchangeType::Direct)]
        kind: ExchangeType,
        #[command(flatten)]
        vhost: VhostArg,
        /// Not durable: deleted when the server restarts.
        #[arg(long)]
        transient: bool,
        /// Deleted when its last binding (as a source) goes.
        #[arg(long)]
        auto_delete: bool,
        /// Clients may not publish to it; only exchange-to-exchange bindings feed it.
        #[arg(long)]
        internal: bool,
        /// Where messages it routes nowhere go.
        #[arg(long, value_name = "EXCHANGE")]
        alternate_exchange: Option<String>,
    },
    /// Show an exchange and its bindings (from it and to it).
    Describe {
        /// Name of the exchange.
        name: String,
        #[command(flatten)]
        vhost: VhostArg,
    },
    /// Delete an exchange with its bindings.
    Delete {
        /// Name of the exchange.
        name: String,
        #[command(flatten)]
        vhost: VhostArg,
        /// Refuse if it is the source of a binding.
        #[arg(long)]
        if_unused: bool,
        /// Succeed if the exchange does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationType {
    Queue,
    Exchange,
}

/// One binding: source exchange, destination, routing key, arguments.
#[derive(Args, Debug)]
pub struct BindingArgs {
    /// The exchange messages come from.
    pub source: String,
    /// The queue (or with --destination-type exchange, the exchange) they go to.
    pub destination: String,
    /// Routing key (a pattern for topic exchanges).
    #[arg(long, short = 'k', default_value = "")]
    pub routing_key: String,
    /// What the destination is.
    #[arg(long, value_enum, default_value_t = DestinationType::Queue)]
    pub destination_type: DestinationType,
    /// Binding argument, e.g. --arg x-match=any for a headers exchange (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub vhost: VhostArg,
}

#[derive(Subcommand, Debug)]
pub enum BindingCommand {
    /// List bindings.
    List {
        /// Only this vhost's bindings (default: every vhost's).
        #[arg(long)]
        vhost: Option<String>,
    },
    /// Bind a queue (or an exchange) to an exchange; succeeds if the binding exists.
    Add(BindingArgs),
    /// Remove a binding (same source, destination, routing key and arguments as added).
    Remove(BindingArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// One record per line; the value is the line (or key + value with --key-separator).
    Line,
    /// One JSON object per line.
    Json,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write (created on first use if the broker auto-creates topics).
    pub topic: String,
    /// Read lines from this file instead of stdin (shows a progress bar).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Split each line into key and value at the first occurrence of this separator.
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
    /// Header to add to every record, e.g. --header source=cli (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Write every record to this partition (default: by key hash, else round-robin per batch).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements: 0 (none), 1 (leader), all (-1).
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Compression codec for record batches.
    #[arg(long, short = 'z', value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Most records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Most bytes per batch (before compression).
    #[arg(long, default_value_t = 512 * 1024)]
    pub batch_bytes: usize,
    /// Input lines: plain text (see --key-separator), or JSON objects as `consume --format
    /// json` prints them (key, value, headers, partition, timestamp).
    #[arg(long, value_enum, default_value_t = InputFormat::Line)]
    pub input: InputFormat,
    /// Send what is batched when the input pauses this long (ms).
    #[arg(long, default_value_t = 100)]
    pub linger_ms: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// The value only.
    Value,
    /// key<TAB>value (see --separator).
    KeyValue,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Where to start without a committed offset: earliest, latest, offset:N or timestamp:MS
    /// (milliseconds since the epoch).
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Start at this offset (same as --from offset:N).
    #[arg(long, conflicts_with = "timestamp")]
    pub offset: Option<i64>,
    /// Start at the first record with a timestamp >= this (ms since epoch).
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Consume as a member of this consumer group (commits offsets).
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Exit after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Exit when no record arrives for this long (ms).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Output format per record [default: value; json with --output json].
    #[arg(long, short = 'F', value_enum)]
    pub format: Option<RecordFormat>,
    /// Separator between key and value for --format key-value.
    #[arg(long, default_value = "\t")]
    pub separator: String,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's state, members, and per-partition committed offset, end offset and lag.
    Describe {
        /// Consumer group to describe.
        group: String,
    },
    /// Move a group's committed offsets. Dry run unless --execute; the group must be empty.
    ResetOffsets(ResetOffsetsArgs),
    /// Delete consumer groups (they must have no active members).
    Delete {
        /// Consumer groups to delete.
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_datetime", "to_offset"])))]
pub struct ResetOffsetsArgs {
    /// Consumer group whose offsets to move.
    pub group: String,
    /// Topic to reset (repeatable; default: every topic the group has offsets for).
    #[arg(long = "topic", short = 't')]
    pub topics: Vec<String>,
    /// Move to the log start offset of each partition.
    #[arg(long)]
    pub to_earliest: bool,
    /// Move to the log end offset of each partition (skip everything there now).
    #[arg(long)]
    pub to_latest: bool,
    /// RFC 3339 time (2026-11-21T12:00:00Z) or milliseconds since epoch.
    #[arg(long, value_name = "DATETIME")]
    pub to_datetime: Option<String>,
    /// Move to this offset (clamped to each partition's log start..end).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// Apply the new offsets (without it, only show them).
    #[arg(long)]
    pub execute: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_common_commands() {
        let cli = Cli::try_parse_from([
            "sluice",
            "produce",
            "t",
            "--key-separator",
            ":",
            "--header",
            "a=b",
            "--compression",
            "zstd",
        ])
        .unwrap();
        match cli.command {
            Command::Produce(p) => {
                assert_eq!(p.key_separator.as_deref(), Some(":"));
                assert_eq!(p.compression, CompressionArg::Zstd);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "sluice",
            "-o",
            "json",
            "group",
            "reset-offsets",
            "g",
            "--to-offset",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert!(
            Cli::try_parse_from(["sluice", "group", "reset-offsets", "g"]).is_err(),
            "a target is required"
        );
    }

    #[test]
    fn parses_amqp_object_commands() {
        let cli = Cli::try_parse_from([
            "sluice",
            "--admin",
            "127.0.0.1:18080",
            "queue",
            "declare",
            "orders",
            "--vhost",
            "dev",
            "--arg",
            "x-message-ttl=60000",
        ])
        .unwrap();
        assert_eq!(cli.admin, "127.0.0.1:18080");
        match cli.command {
            Command::Queue(QueueCommand::Declare {
                name, vhost, args, ..
            }) => {
                assert_eq!((name.as_str(), vhost.vhost.as_str()), ("orders", "dev"));
                assert_eq!(args, ["x-message-ttl=60000"]);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "sluice", "binding", "add", "logs", "errors", "-k", "*.error",
        ])
        .unwrap();
        match cli.command {
            Command::Binding(BindingCommand::Add(b)) => {
                assert_eq!(b.vhost.vhost, "/", "the default vhost");
                assert_eq!(b.destination_type, DestinationType::Queue);
                assert_eq!(b.routing_key, "*.error");
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["sluice", "exchange", "declare", "logs", "-t", "topic"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Exchange(ExchangeCommand::Declare {
                kind: ExchangeType::Topic,
                ..
            })
        ));
    }
}
