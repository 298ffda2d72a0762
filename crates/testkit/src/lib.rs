//! Test support shared by every crate's tests and benches: one way to run the real binary,
//! one raw Kafka client, one record-batch builder.
//!
//! Reading order:
//! - [`Server`] (`server.rs`): the real `sluice server` as a child process on loopback
//!   listeners bound to port 0; the ports are read back from its start banner, so no port
//!   is ever handed over in a race, and a restart reuses them with the same data directory.
//!   Also kill -9, SIGTERM/any signal, bounded waits, its log, and the CLI against it.
//! - [`cli`]: runs `sluice` as a command-line client with a deadline ([`cli::cli`],
//!   [`cli::wait_output`]).
//! - [`http`]: a plain-TCP `GET` for the admin endpoints (no curl on a fresh machine) and
//!   Prometheus text parsing.
//! - [`wire`]: the raw Kafka wire client: typed requests framed by
//!   `sluice_kafka_client::frame`, exact responses and error codes, and raw bytes for
//!   hostile tests; blocking ([`wire::Client`]) and on tokio ([`wire::AsyncClient`]).
//! - [`BatchBuilder`] / [`put_varint`]: storage's v2 record-batch builder, re-exported.
//! - [`Tmpfs`] (`tmpfs.rs`): a small or hole-punching filesystem for disk tests (root).
//!
//! The binary under test is `target/<profile>/sluice`, next to the test executables
//! (`cargo test --workspace` builds it; `cargo build -p sluice` before running one crate's
//! tests); `SLUICE_BIN` overrides the path. The server helpers panic with the server's log
//! when something goes wrong (the log is what explains a failure); the wire client returns
//! `io::Result`, since refusing or closing is often what a test expects.

pub mod cli;
pub mod http;
mod server;
mod tmpfs;
pub mod wire;

pub use server::{Server, sluice_bin};
pub use storage::batch_builder::{BatchBuilder, put_varint};
pub use tmpfs::Tmpfs;
