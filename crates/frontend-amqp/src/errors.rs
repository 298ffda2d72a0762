//! AMQP reply codes and the errors a handler returns: a channel error closes the channel,
//! a connection error the connection (both with a reply code and text, as RabbitMQ does).
//! The only place that maps broker errors to reply codes.

use broker::BrokerError;

pub const REPLY_SUCCESS: u16 = 200;
pub const CONNECTION_FORCED: u16 = 320;
pub const NO_ROUTE: u16 = 312;
pub const ACCESS_REFUSED: u16 = 403;
pub const NOT_FOUND: u16 = 404;
pub const RESOURCE_LOCKED: u16 = 405;
pub const PRECONDITION_FAILED: u16 = 406;
pub const FRAME_ERROR: u16 = 501;
pub const COMMAND_INVALID: u16 = 503;
pub const CHANNEL_ERROR: u16 = 504;
pub const UNEXPECTED_FRAME: u16 = 505;
pub const NOT_ALLOWED: u16 = 530;
pub const NOT_IMPLEMENTED: u16 = 540;
pub const INTERNAL_ERROR: u16 = 541;

/// Which scope an error closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// An error answered with channel.close or connection.close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpError {
    pub scope: Scope,
    pub code: u16,
    pub text: String,
    /// The method that failed (0, 0 when none).
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    pub fn channel(code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError {
            scope: Scope::Channel,
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    pub fn connection(code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError {
            scope: Scope::Connection,
            ..AmqpError::channel(code, text)
        }
    }

    /// Names the failed method (filled in by the dispatcher).
    pub fn at(mut self, class_id: u16, method_id: u16) -> AmqpError {
        if self.class_id == 0 {
            (self.class_id, self.method_id) = (class_id, method_id);
        }
        self
    }

    /// The reply text as sent: a short string, so at most 255 bytes.
    pub fn reply_text(&self) -> String {
        let text = format!("{} - {}", reply_name(self.code), self.text);
        truncate(&text, 255)
    }
}

/// The spec's name for a reply code, as RabbitMQ puts it at the start of reply texts.
fn reply_name(code: u16) -> &'static str {
    match code {
        REPLY_SUCCESS => "OK",
        CONNECTION_FORCED => "CONNECTION_FORCED",
        NO_ROUTE => "NO_ROUTE",
        ACCESS_REFUSED => "ACCESS_REFUSED",
        NOT_FOUND => "NOT_FOUND",
        RESOURCE_LOCKED => "RESOURCE_LOCKED",
        PRECONDITION_FAILED => "PRECONDITION_FAILED",
        FRAME_ERROR => "FRAME_ERROR",
        COMMAND_INVALID => "COMMAND_INVALID",
        CHANNEL_ERROR => "CHANNEL_ERROR",
        UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        NOT_ALLOWED => "NOT_ALLOWED",
        NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        _ => "INTERNAL_ERROR",
    }
}

/// The `api` label of a channel method in the request metrics (`class.method`).
pub fn method_name((class_id, method_id): (u16, u16)) -> &'static str {
    match (class_id, method_id) {
        (20, 20) => "channel.flow",
        (40, 10) => "exchange.declare",
        (40, 20) => "exchange.delete",
        (40, 30) => "exchange.bind",
        (40, 40) => "exchange.unbind",
        (50, 10) => "queue.declare",
        (50, 20) => "queue.bind",
        (50, 30) => "queue.purge",
        (50, 40) => "queue.delete",
        (50, 50) => "queue.unbind",
        (60, 10) => "basic.qos",
        (60, 20) => "basic.consume",
        (60, 30) => "basic.cancel",
        (60, 40) => "basic.publish",
        (60, 70) => "basic.get",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) | (60, 110) => "basic.recover",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (90, 10) => "tx.select",
        (90, 20) => "tx.commit",
        (90, 30) => "tx.rollback",
        _ => "other",
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A broker error as the AMQP error a client would get from RabbitMQ for the same cause.
pub fn from_broker(e: &BrokerError) -> AmqpError {
    match e {
        BrokerError::UnknownTopicOrPartition => AmqpError::channel(NOT_FOUND, "no such queue"),
        BrokerError::InvalidTopic(_)
        | BrokerError::InvalidConfig(_)
        | BrokerError::InvalidRecord(_)
        | BrokerError::MessageTooLarge { .. }
        | BrokerError::LimitReached(_) => AmqpError::channel(PRECONDITION_FAILED, e.to_string()),
        BrokerError::ShuttingDown => AmqpError::connection(CONNECTION_FORCED, e.to_string()),
        _ => AmqpError::connection(INTERNAL_ERROR, e.to_string()),
    }
}
