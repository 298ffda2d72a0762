//! Exit codes (documented in `sluice --help`) and the mapping from errors to them.

use crate::cli::admin_http::AdminError;
use crate::config::ConfigError;
use kafka_client::ClientError;

pub const EXIT_USAGE: i32 = 1;
pub const EXIT_UNREACHABLE: i32 = 2;
pub const EXIT_BROKER_ERROR: i32 = 3;
pub const EXIT_TIMEOUT: i32 = 4;
pub const EXIT_DAMAGED: i32 = 5;
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// A mistake in how the command was invoked that clap cannot catch (e.g. a malformed
/// `--config key=value`).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

pub fn exit_code_for(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Unreachable { .. } | ClientError::Disconnected { .. } => {
                    EXIT_UNREACHABLE
                }
                ClientError::Protocol { .. } | ClientError::Broker { .. } => EXIT_BROKER_ERROR,
            };
        }
        if let Some(a) = cause.downcast_ref::<AdminError>() {
            return match a {
                AdminError::Unreachable { .. } => EXIT_UNREACHABLE,
                AdminError::Api { .. } => EXIT_BROKER_ERROR,
            };
        }
        if cause.downcast_ref::<ConfigError>().is_some()
            || cause.downcast_ref::<UsageError>().is_some()
        {
            return EXIT_USAGE;
        }
    }
    EXIT_USAGE
}
