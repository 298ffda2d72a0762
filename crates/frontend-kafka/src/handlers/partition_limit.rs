//! `max_partitions_per_request` for Produce and Fetch.
//!
//! The first `limit` partitions of a request (in request order) are served; the rest are
//! answered with POLICY_VIOLATION, with an error message where the version has one, and
//! the request is logged once. Why not close the connection: Kafka clients resend a request
//! after a disconnect, so the same oversized request would loop until the client's
//! delivery timeout and the application would see a timeout instead of the reason.
//! POLICY_VIOLATION is not retriable, so the application gets the error at once.

use kafka_protocol::ResponseError;

use crate::context::Ctx;

/// The error code of a refused partition.
pub const CODE: i16 = ResponseError::PolicyViolation.code();

/// Counts a request's partitions against the limit.
pub struct PartitionLimit {
    limit: usize,
    total: usize,
}

impl PartitionLimit {
    pub fn new(ctx: &Ctx<'_>) -> Self {
        Self {
            limit: ctx.config.max_partitions_per_request.max(1),
            total: 0,
        }
    }

    /// Counts one more partition; false if it is over the limit.
    pub fn admit(&mut self) -> bool {
        self.total += 1;
        self.total <= self.limit
    }

    /// True if the request names more partitions than the limit.
    pub fn is_over(&self) -> bool {
        self.total > self.limit
    }

    /// Logs the request if it went over the limit.
    pub fn log_if_over(&self, ctx: &Ctx<'_>, api: &'static str) {
        if self.is_over() {
            tracing::warn!(peer = %ctx.peer, client_id = ctx.client_id, api, partitions = self.total, limit = self.limit, "request over the partition limit; refusing the partitions past the limit with POLICY_VIOLATION");
        }
    }

    /// The error message for a refused partition.
    pub fn message(&self) -> String {
        format!(
            "request names {} partitions; at most {} are served per request (limits.max_partitions_per_request)",
            self.total, self.limit
        )
    }
}
