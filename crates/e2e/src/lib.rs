//! End-to-end tests (in `tests/`): the real `sluice` binary driven by real Kafka clients
//! (librdkafka via the `rdkafka` crate) and by the raw wire client, for what only a real
//! process shows: crashes and restarts, full and damaged disks, hostile clients, limits,
//! transactions. The harness they share with every other crate's tests is
//! `sluice-testkit` (`crates/testkit`); the interop scripts under `tests/interop/` drive the
//! same binary with other languages' clients.
