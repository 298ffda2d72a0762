//! Prometheus metrics of the broker and its front doors. The admin server renders
//! `registry` at `/metrics` (calling [`crate::Broker::refresh_gauges`] first).

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(String, String)>;

fn request_histogram() -> Histogram {
    // 100 µs .. ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Every metric family Sluice exports, and the registry holding them.
pub struct BrokerMetrics {
    pub registry: Mutex<Registry>,
    /// `sluice_requests_total{protocol,api}`
    pub requests: Family<Labels, Counter>,
    /// `sluice_request_errors_total{protocol,api,error}`
    pub request_errors: Family<Labels, Counter>,
    /// `sluice_request_duration_seconds{protocol,api}`
    pub request_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// `sluice_connections_open` (open now; a gauge may not share the counter's family name)
    pub connections: Gauge,
    /// `sluice_connections_total` (accepted since start)
    pub connections_total: Counter,
    /// `sluice_topic_bytes_in_total{topic}`
    pub topic_bytes_in: Family<Labels, Counter>,
    /// `sluice_topic_records_in_total{topic}`
    pub topic_records_in: Family<Labels, Counter>,
    /// `sluice_topic_bytes_out_total{topic}`
    pub topic_bytes_out: Family<Labels, Counter>,
    /// `sluice_topic_records_out_total{topic}`
    pub topic_records_out: Family<Labels, Counter>,
    /// `sluice_partitions`
    pub partitions: Gauge,
    /// `sluice_topics`
    pub topics: Gauge,
    /// `sluice_groups`
    pub groups: Gauge,
    /// `sluice_group_lag{group,topic,partition}` (refreshed by `Broker::refresh_gauges`)
    pub group_lag: Family<Labels, Gauge>,
    /// `sluice_queue_messages_ready{queue}` (refreshed by `Broker::refresh_gauges`)
    pub queue_ready: Family<Labels, Gauge>,
    /// `sluice_queue_messages_unacked{queue}` (refreshed by `Broker::refresh_gauges`)
    pub queue_unacked: Family<Labels, Gauge>,
    /// `sluice_queue_consumers{queue}`: consumers holding messages (refreshed at scrape)
    pub queue_consumers: Family<Labels, Gauge>,
    /// `sluice_queue_delivered_total{queue}` (redeliveries included)
    pub queue_delivered: Family<Labels, Counter>,
    /// `sluice_queue_acked_total{queue}`
    pub queue_acked: Family<Labels, Counter>,
    /// `sluice_queue_returned_total{queue}`: nacked with requeue, or released
    pub queue_returned: Family<Labels, Counter>,
    /// `sluice_queue_published_total{queue}`: messages stored through `Broker::queue_publish`
    pub queue_published: Family<Labels, Counter>,
    /// `sluice_queue_consumers_subscribed{queue}`: consumers subscribed now (an AMQP
    /// basic.consume), whether or not they hold messages; kept by the door that has them
    pub queue_subscribed: Family<Labels, Gauge>,
    /// `sluice_queue_messages_scheduled{queue}`: delayed or retrying messages not yet due
    /// (refreshed at scrape)
    pub queue_scheduled: Family<Labels, Gauge>,
    /// `sluice_queue_dead_lettered_total{queue,reason}`: messages settled dead (rejected,
    /// expired, maxlen, delivery_limit), dead-lettered or dropped
    pub queue_dead: Family<Labels, Counter>,
}

impl std::fmt::Debug for BrokerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerMetrics").finish_non_exhaustive()
    }
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            request_errors: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram as fn() -> Histogram),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            topic_bytes_in: Family::default(),
            topic_records_in: Family::default(),
            topic_bytes_out: Family::default(),
            topic_records_out: Family::default(),
            partitions: Gauge::default(),
            topics: Gauge::default(),
            groups: Gauge::default(),
            group_lag: Family::default(),
            queue_ready: Family::default(),
            queue_unacked: Family::default(),
            queue_consumers: Family::default(),
            queue_delivered: Family::default(),
            queue_acked: Family::default(),
            queue_returned: Family::default(),
            queue_published: Family::default(),
            queue_subscribed: Family::default(),
            queue_scheduled: Family::default(),
            queue_dead: Family::default(),
        };
        {
            let mut r = m.registry.lock();
            r.register(
                "sluice_requests",
                "Requests handled, by API",
                m.requests.clone(),
            );
            r.register(
                "sluice_request_errors",
                "Requests or partitions answered with an error, by API and error",
                m.request_errors.clone(),
            );
            r.register(
                "sluice_request_duration_seconds",
                "Request handling time, by API",
                m.request_duration.clone(),
            );
            r.register(
                "sluice_connections_open",
                "Open client connections",
                m.connections.clone(),
            );
            r.register(
                "sluice_connections",
                "Client connections accepted",
                m.connections_total.clone(),
            );
            r.register(
                "sluice_topic_bytes_in",
                "Record batch bytes appended, by topic",
                m.topic_bytes_in.clone(),
            );
            r.register(
                "sluice_topic_records_in",
                "Records appended, by topic",
                m.topic_records_in.clone(),
            );
            r.register(
                "sluice_topic_bytes_out",
                "Record batch bytes served to consumers, by topic",
                m.topic_bytes_out.clone(),
            );
            r.register(
                "sluice_topic_records_out",
                "Records served to consumers, by topic",
                m.topic_records_out.clone(),
            );
            r.register("sluice_partitions", "Partitions", m.partitions.clone());
            r.register("sluice_topics", "Topics", m.topics.clone());
            r.register("sluice_groups", "Consumer groups", m.groups.clone());
            r.register(
                "sluice_group_lag",
                "High watermark minus committed offset",
                m.group_lag.clone(),
            );
            m.register_queue_families(&mut r);
        }
        m
    }

    /// The per-queue families (`sluice_queue_*`).
    fn register_queue_families(&self, r: &mut Registry) {
        r.register(
            "sluice_queue_messages_ready",
            "Messages ready for delivery, by queue",
            self.queue_ready.clone(),
        );
        r.register(
            "sluice_queue_messages_unacked",
            "Messages delivered and not yet acknowledged, by queue",
            self.queue_unacked.clone(),
        );
        r.register(
            "sluice_queue_consumers",
            "Consumers holding unacknowledged messages, by queue",
            self.queue_consumers.clone(),
        );
        r.register(
            "sluice_queue_delivered",
            "Deliveries (redeliveries included), by queue",
            self.queue_delivered.clone(),
        );
        r.register(
            "sluice_queue_acked",
            "Messages acknowledged, by queue",
            self.queue_acked.clone(),
        );
        r.register(
            "sluice_queue_returned",
            "Messages returned for redelivery (nack with requeue, release), by queue",
            self.queue_returned.clone(),
        );
        r.register(
            "sluice_queue_published",
            "Messages stored in the queue by publishes, by queue",
            self.queue_published.clone(),
        );
        r.register(
            "sluice_queue_consumers_subscribed",
            "Consumers subscribed to the queue, holding messages or not, by queue",
            self.queue_subscribed.clone(),
        );
        r.register(
            "sluice_queue_messages_scheduled",
            "Delayed or retrying messages not yet due, by queue",
            self.queue_scheduled.clone(),
        );
        r.register(
            "sluice_queue_dead_lettered",
            "Messages settled dead (dead-lettered, or dropped without a target), by queue and reason",
            self.queue_dead.clone(),
        );
    }

    /// Counts one request of `api` on the front door speaking `protocol` ("kafka", later
    /// "amqp", …), and its duration.
    pub fn observe_request(&self, protocol: &'static str, api: &'static str, seconds: f64) {
        let labels = vec![
            ("protocol".to_string(), protocol.to_string()),
            ("api".to_string(), api.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Counts one error answered to `api` on the front door speaking `protocol`.
    pub fn observe_error(&self, protocol: &'static str, api: &'static str, error: &str) {
        let labels = vec![
            ("protocol".to_string(), protocol.to_string()),
            ("api".to_string(), api.to_string()),
            ("error".to_string(), error.to_string()),
        ];
        self.request_errors.get_or_create(&labels).inc();
    }

    pub fn topic_counters(&self, topic: &str) -> TopicCounters {
        let l = vec![("topic".to_string(), topic.to_string())];
        TopicCounters {
            bytes_in: self.topic_bytes_in.get_or_create_owned(&l),
            records_in: self.topic_records_in.get_or_create_owned(&l),
            bytes_out: self.topic_bytes_out.get_or_create_owned(&l),
            records_out: self.topic_records_out.get_or_create_owned(&l),
        }
    }

    pub fn forget_topic(&self, topic: &str) {
        let l = vec![("topic".to_string(), topic.to_string())];
        self.topic_bytes_in.remove(&l);
        self.topic_records_in.remove(&l);
        self.topic_bytes_out.remove(&l);
        self.topic_records_out.remove(&l);
    }
}

/// Per-topic counter handles, cached in the topic so the hot path does not allocate labels.
#[derive(Clone, Debug, Default)]
pub struct TopicCounters {
    pub bytes_in: Counter,
    pub records_in: Counter,
    pub bytes_out: Counter,
    pub records_out: Counter,
}

impl BrokerMetrics {
    /// Counts one message stored in queue `queue` by a publish.
    /// Counts `n` messages of `queue` settled dead for `reason`.
    pub fn count_dead(&self, queue: &str, reason: &str, n: u64) {
        let mut labels = queue_labels(queue);
        labels.push(("reason".to_string(), reason.to_string()));
        self.queue_dead.get_or_create(&labels).inc_by(n);
    }

    pub fn count_published(&self, queue: &str) {
        self.queue_published
            .get_or_create(&queue_labels(queue))
            .inc();
    }

    /// Sets how many consumers are subscribed to `queue` (`None`: the queue went, its
    /// series too).
    pub fn set_subscribed(&self, queue: &str, consumers: Option<u32>) {
        let labels = queue_labels(queue);
        match consumers {
            Some(n) => {
                self.queue_subscribed
                    .get_or_create(&labels)
                    .set(i64::from(n));
            }
            None => {
                self.queue_subscribed.remove(&labels);
            }
        }
    }

    /// The per-queue counters of `queue` since the start: (published, delivered, acked,
    /// returned). Reading creates no series.
    pub fn queue_totals(&self, queue: &str) -> QueueTotals {
        let labels = queue_labels(queue);
        let read = |f: &Family<Labels, Counter>| f.get(&labels).map_or(0, |c| c.get());
        QueueTotals {
            published: read(&self.queue_published),
            delivered: read(&self.queue_delivered),
            acked: read(&self.queue_acked),
            returned: read(&self.queue_returned),
            dead_lettered: ["rejected", "expired", "maxlen", "delivery_limit"]
                .iter()
                .map(|reason| {
                    let mut l = labels.clone();
                    l.push(("reason".to_string(), reason.to_string()));
                    self.queue_dead.get(&l).map_or(0, |c| c.get())
                })
                .sum(),
        }
    }
}

/// A queue's counters since the broker started (see [`BrokerMetrics::queue_totals`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub returned: u64,
    /// Settled dead (dead-lettered, or dropped without a target), every reason.
    pub dead_lettered: u64,
}

/// The label set of one queue's metrics.
pub fn queue_labels(queue: &str) -> Labels {
    vec![("queue".to_string(), queue.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_unique_in_the_exposition() {
        let m = BrokerMetrics::new();
        m.observe_request("kafka", "Produce", 0.001);
        m.connections.inc();
        m.connections_total.inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry.lock()).unwrap();
        let types: Vec<&str> = out.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut names: Vec<&str> = types
            .iter()
            .map(|l| l.split_whitespace().nth(2).unwrap())
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate families in:\n{out}");
        assert!(out.contains("sluice_connections_total 1"), "{out}");
        assert!(out.contains("sluice_connections_open 1"), "{out}");
        assert!(
            out.contains("sluice_requests_total{protocol=\"kafka\",api=\"Produce\"} 1"),
            "{out}"
        );
    }
}
