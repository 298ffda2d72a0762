//! Errors of the Kafka client, phrased so the user knows what to do next.

use std::fmt;

use kafka_protocol::ResponseError;

#[derive(Debug)]
pub enum ClientError {
    /// Could not open a TCP connection.
    Unreachable { addr: String, reason: String },
    /// The connection broke or timed out mid-conversation.
    Disconnected { addr: String, reason: String },
    /// The broker sent something we could not understand, or lacks an API we need.
    Protocol { addr: String, reason: String },
    /// The broker answered with an error code.
    Broker {
        context: String,
        code: i16,
        message: Option<String>,
    },
}

impl ClientError {
    pub fn broker(context: impl Into<String>, code: i16, message: Option<String>) -> Self {
        ClientError::Broker {
            context: context.into(),
            code,
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// Kafka's error code, when the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Kafka's name for an error code, e.g. `TOPIC_ALREADY_EXISTS`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_{c}"),
        Some(e) => {
            let camel = e.to_string();
            let mut out = String::new();
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

fn hint(code: i16) -> Option<&'static str> {
    Some(match code {
        3 => "check the name with `sluice topic list`",
        7 => "the broker is slow or overloaded; retry or raise --request-timeout-ms",
        10 => "the batch is larger than the broker's message.max.bytes; lower --batch-bytes",
        15 | 14 => "the group coordinator is starting up; retry in a moment",
        16 => "the broker is not this group's coordinator; retry",
        25 => "the group has no member with that id; it may have been removed",
        36 => "use --if-not-exists to ignore this",
        37 => "the partition count must be at least 1 (and can only grow)",
        40 => "check the config name and value with `sluice topic describe`",
        68 => "the group still has members; stop its consumers first",
        69 => "check the name with `sluice group list`",
        _ => return None,
    })
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { addr, reason } => write!(
                f,
                "no broker at {addr} — is `sluice server` running? ({reason}); \
                 use --bootstrap-server HOST:PORT or SLUICE_BOOTSTRAP to point elsewhere"
            ),
            ClientError::Disconnected { addr, reason } => {
                write!(f, "lost the connection to the broker at {addr}: {reason}")
            }
            ClientError::Protocol { addr, reason } => {
                write!(f, "unexpected answer from the broker at {addr}: {reason}")
            }
            ClientError::Broker {
                context,
                code,
                message,
            } => {
                write!(f, "{context}: {} (Kafka error {code})", error_name(*code))?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                if let Some(h) = hint(*code) {
                    write!(f, " — {h}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_look_like_kafkas() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        let e = ClientError::broker("create topic t", 36, None);
        assert!(e.to_string().contains("--if-not-exists"));
    }
}
