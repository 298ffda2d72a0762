//! Sluice's AMQP 0-9-1 front door: sockets, framing (the `amq-protocol` codec) and the
//! mapping between AMQP's model — exchanges, bindings, queues, channels, consumers, delivery
//! tags — and the broker core's queue API (`Broker::declare_queue`, `queue_acquire`,
//! `queue_ack`/`nack`/`release`, `produce`). Holds no message state of its own: a queue's
//! messages and delivery state live in the broker; the door keeps only its topology
//! (exchanges, bindings: broker extension entries) and per-connection bookkeeping.
//!
//! Reading order:
//! - [`serve`] (`server.rs`) — the accept loop, connection limit, graceful shutdown.
//! - `connection.rs` — one connection: frame loop, channel open/close, heartbeats, the
//!   delivery pump, cleanup (release, exclusive queues). `handshake.rs` — start/tune/open
//!   and the login check; `vhost.rs` — vhosts (names local to a vhost ↔ the broker's
//!   internal names), users and the login and vhost-access rules.
//! - `codec.rs` — frames in and out; the size limit checked before allocation.
//! - `channel.rs` — one channel's state (publish in progress, consumers, unacked tags);
//!   `outbox.rs` — frames waiting to be written.
//! - `queue_methods.rs` (queue.*, exchange.*), `publish.rs` (basic.publish, returns,
//!   confirms), `confirm.rs` (confirms waiting for the disk while the connection reads on),
//!   `delivery.rs` (consume, qos, deliveries, get, ack/nack/reject).
//! - `tx.rs` (tx.select/commit/rollback: what a transactional channel holds); `stream.rs`
//!   (stream queues, `x-queue-type = stream`: consumers reading the log from their own
//!   offset).
//! - `topology.rs` — exchanges and bindings, saved and loaded; `routing.rs` — exchange
//!   kinds and the walk through exchange-to-exchange bindings and alternate exchanges;
//!   `message.rs` — message ↔ record; `door.rs` — what connections share (per-queue use:
//!   consumers, exclusive owners); `errors.rs` — reply codes.
//! - `alarm.rs` — resource alarms (free disk, resident memory): publishers blocked.
//! - [`AmqpConfig`] (`config.rs`) — listener settings and their config keys.
//! - [`DoorHandle`] (`manage.rs`) — the door's shared state, opened once and served with
//!   [`serve_handle`]; its management operations (queues, exchanges, bindings by vhost and
//!   name) back the admin HTTP API's `/api/…` (docs/http-api.md).
//!
//! Invariants callers and tests may rely on:
//! - A frame larger than the negotiated frame_max, or one `amq-protocol` cannot decode,
//!   closes that connection with 501 FRAME_ERROR and a log line naming the peer; it never
//!   panics and never affects other connections.
//! - Every message delivered and not acked when its channel or connection closes goes back
//!   to its queue and is delivered again with `redelivered` set.
//! - A publisher confirm is sent only after the message's store in every routed queue is
//!   acknowledged (durable when a queue's partition is `flush = sync`).
//! - Delivery tags are per channel, from 1, and name one (queue, offset) until settled.
//!
//! Not yet (issue 15): per-resource vhost permissions (issue 20).
//! See docs/protocol-mapping.md §AMQP.

mod alarm;
mod channel;
mod codec;
mod config;
mod confirm;
mod connection;
mod dead_letter;
mod delivery;
mod door;
pub mod errors;
mod handshake;
mod manage;
mod message;
mod outbox;
mod publish;
mod queue_methods;
mod routing;
mod server;
mod stream;
mod topology;
mod tx;
mod vhost;

pub use codec::{FrameError, PROTOCOL_HEADER, decode_frame, decode_protocol_header, encode_frame};
pub use config::{AmqpConfig, CONFIG_KEYS};
pub use manage::{
    BindingView, DoorHandle, ExchangeSpec, ExchangeView, ManageError, ManageErrorKind,
    ManageResult, QueueSpec, QueueView,
};
pub use message::{HEADER_EXCHANGE, HEADER_PROPERTIES, Message};
pub use server::{serve, serve_handle};

/// This door's protocol label (`/health`, the start banner, request metrics).
pub const PROTOCOL: &str = "amqp";
