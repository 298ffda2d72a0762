//! Client telemetry (KIP-714). GetTelemetrySubscriptions gives every client one
//! subscription: all its metrics, cumulative, uncompressed, every `telemetry_push_interval_ms`.
//! PushTelemetry carries them as OTLP `MetricsData` (protobuf); each client's latest values
//! are shown on `/metrics` as
//! `sluice_kafka_client_metric{client_id, client_instance_id, name, attributes}` — which a
//! Kafka broker does not do without a plugin.
//!
//! Bounded: at most [`MAX_CLIENTS`] clients and [`MAX_SERIES_PER_CLIENT`] series each are
//! kept (more are dropped and counted); a client silent for three push intervals is
//! forgotten with its series; a push larger than [`MAX_PUSH_BYTES`] is refused with
//! TELEMETRY_TOO_LARGE, one that does not decode with INVALID_RECORD.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse, PushTelemetryRequest,
    PushTelemetryResponse,
};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use uuid::Uuid;

use crate::context::s;

/// Clients whose metrics are kept at once.
pub const MAX_CLIENTS: usize = 1_000;
/// Series kept per client.
pub const MAX_SERIES_PER_CLIENT: usize = 500;
/// Largest push accepted (`telemetry_max_bytes` in the subscription).
pub const MAX_PUSH_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeriesLabels {
    client_id: String,
    client_instance_id: String,
    name: String,
    attributes: String,
}

struct Client {
    client_id: String,
    last_push_ms: i64,
    series: Vec<SeriesLabels>,
}

/// The telemetry state of one Kafka door.
pub struct Telemetry {
    push_interval_ms: i32,
    clients: Mutex<HashMap<Uuid, Client>>,
    next_id: AtomicU64,
    values: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    pushes: Counter,
    dropped: Counter,
}

impl Telemetry {
    pub fn new(push_interval_ms: i32) -> Telemetry {
        Telemetry {
            push_interval_ms: push_interval_ms.max(100),
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            values: Family::default(),
            pushes: Counter::default(),
            dropped: Counter::default(),
        }
    }

    /// Adds the telemetry metrics to `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "sluice_kafka_client_metric",
            "Latest value of each metric Kafka clients push (KIP-714)",
            self.values.clone(),
        );
        registry.register(
            "sluice_kafka_telemetry_pushes",
            "PushTelemetry requests accepted",
            self.pushes.clone(),
        );
        registry.register(
            "sluice_kafka_telemetry_series_dropped",
            "Client metric series not kept (client or series bound reached)",
            self.dropped.clone(),
        );
    }

    /// The subscription id: changes whenever what is asked of clients changes.
    fn subscription_id(&self) -> i32 {
        0x5100_0000 | (self.push_interval_ms & 0xFF_FFFF)
    }

    pub fn subscriptions(
        &self,
        req: &GetTelemetrySubscriptionsRequest,
        now_ms: i64,
    ) -> GetTelemetrySubscriptionsResponse {
        let id = if req.client_instance_id.is_nil() {
            // Unique per door and start: the time in the high half, a counter in the low.
            let n = self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Uuid::from_u128(((now_ms as u128) << 64) | u128::from(n))
        } else {
            req.client_instance_id
        };
        GetTelemetrySubscriptionsResponse::default()
            .with_client_instance_id(id)
            .with_subscription_id(self.subscription_id())
            .with_accepted_compression_types(Vec::new())
            .with_push_interval_ms(self.push_interval_ms)
            .with_telemetry_max_bytes(MAX_PUSH_BYTES as i32)
            .with_delta_temporality(false)
            // One empty prefix: every metric.
            .with_requested_metrics(vec![s("")])
    }

    pub fn push(
        &self,
        req: &PushTelemetryRequest,
        client_id: &str,
        now_ms: i64,
    ) -> PushTelemetryResponse {
        let code = match self.accept(req, client_id, now_ms) {
            Ok(()) => 0,
            Err(e) => e.code(),
        };
        PushTelemetryResponse::default().with_error_code(code)
    }

    fn accept(
        &self,
        req: &PushTelemetryRequest,
        client_id: &str,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if req.subscription_id != self.subscription_id() {
            return Err(ResponseError::UnknownSubscriptionId);
        }
        if req.compression_type != 0 {
            return Err(ResponseError::UnsupportedCompressionType);
        }
        if req.metrics.len() > MAX_PUSH_BYTES {
            return Err(ResponseError::TelemetryTooLarge);
        }
        let points = otlp::decode(&req.metrics).map_err(|_| ResponseError::InvalidRecord)?;
        self.pushes.inc();
        let mut clients = self.clients.lock();
        self.forget_silent(&mut clients, now_ms);
        if req.terminating {
            if let Some(c) = clients.remove(&req.client_instance_id) {
                self.remove_series(&c);
            }
            return Ok(());
        }
        if !clients.contains_key(&req.client_instance_id) && clients.len() >= MAX_CLIENTS {
            self.dropped.inc_by(points.len() as u64);
            return Ok(());
        }
        let c = clients
            .entry(req.client_instance_id)
            .or_insert_with(|| Client {
                client_id: client_id.to_string(),
                last_push_ms: now_ms,
                series: Vec::new(),
            });
        c.last_push_ms = now_ms;
        let instance = req.client_instance_id.to_string();
        for p in points {
            let labels = SeriesLabels {
                client_id: c.client_id.clone(),
                client_instance_id: instance.clone(),
                name: p.name,
                attributes: p.attributes,
            };
            if !c.series.contains(&labels) {
                if c.series.len() >= MAX_SERIES_PER_CLIENT {
                    self.dropped.inc();
                    continue;
                }
                c.series.push(labels.clone());
            }
            self.values.get_or_create(&labels).set(p.value);
        }
        Ok(())
    }

    fn forget_silent(&self, clients: &mut HashMap<Uuid, Client>, now_ms: i64) {
        let horizon = now_ms - 3 * i64::from(self.push_interval_ms);
        let silent: Vec<Uuid> = clients
            .iter()
            .filter(|(_, c)| c.last_push_ms < horizon)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            if let Some(c) = clients.remove(&id) {
                self.remove_series(&c);
            }
        }
    }

    fn remove_series(&self, c: &Client) {
        for l in &c.series {
            self.values.remove(l);
        }
    }
}

/// A minimal reader of OTLP `MetricsData` (opentelemetry-proto `metrics/v1`): the number
/// data points of gauges and sums, each with its metric name and attributes. Histograms
/// and summaries are skipped.
pub mod otlp {
    /// One number data point.
    #[derive(Debug, PartialEq)]
    pub struct Point {
        pub name: String,
        /// `key=value` pairs, comma-separated, in the order sent.
        pub attributes: String,
        pub value: f64,
    }

    #[derive(Debug)]
    pub struct Malformed;

    /// A protobuf field: number and value.
    enum Value<'a> {
        Varint(u64),
        Fixed64(u64),
        Bytes(&'a [u8]),
        Fixed32,
    }

    struct Fields<'a>(&'a [u8]);

    impl<'a> Fields<'a> {
        fn varint(&mut self) -> Result<u64, Malformed> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&b, rest) = self.0.split_first().ok_or(Malformed)?;
                self.0 = rest;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(Malformed)
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
            if n > self.0.len() {
                return Err(Malformed);
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Ok(a)
        }

        fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, Malformed> {
            if self.0.is_empty() {
                return Ok(None);
            }
            let key = self.varint()?;
            let v = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => Value::Fixed64(u64::from_le_bytes(
                    self.take(8)?.try_into().map_err(|_| Malformed)?,
                )),
                2 => {
                    let n = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                    Value::Bytes(self.take(n)?)
                }
                5 => {
                    self.take(4)?;
                    Value::Fixed32
                }
                _ => return Err(Malformed),
            };
            Ok(Some((key >> 3, v)))
        }
    }

    /// Calls `f` for each length-delimited field numbered `number` of `msg`.
    fn each<'a>(
        msg: &'a [u8],
        number: u64,
        mut f: impl FnMut(&'a [u8]) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        let mut r = Fields(msg);
        while let Some((n, v)) = r.next_field()? {
            if let (true, Value::Bytes(b)) = (n == number, v) {
                f(b)?;
            }
        }
        Ok(())
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// `key=value` of a `KeyValue` (AnyValue: string, bool, int or double).
    fn key_value(kv: &[u8]) -> Result<String, Malformed> {
        let (mut key, mut value) = (String::new(), String::new());
        let mut r = Fields(kv);
        while let Some((n, v)) = r.next_field()? {
            match (n, v) {
                (1, Value::Bytes(b)) => key = text(b),
                (2, Value::Bytes(any)) => {
                    let mut a = Fields(any);
                    while let Some((m, x)) = a.next_field()? {
                        value = match (m, x) {
                            (1, Value::Bytes(b)) => text(b),
                            (2 | 3, Value::Varint(i)) => (i as i64).to_string(),
                            (4, Value::Fixed64(d)) => f64::from_bits(d).to_string(),
                            _ => continue,
                        };
                    }
                }
                _ => {}
            }
        }
        Ok(format!("{key}={value}"))
    }

    fn data_point(name: &str, dp: &[u8], out: &mut Vec<Point>) -> Result<(), Malformed> {
        let mut value = None;
        let mut attributes = Vec::new();
        let mut r = Fields(dp);
        while let Some((n, v)) = r.next_field()? {
            match (n, v) {
                (4, Value::Fixed64(d)) => value = Some(f64::from_bits(d)),
                (6, Value::Fixed64(i)) => value = Some(i as i64 as f64),
                (7, Value::Bytes(kv)) => attributes.push(key_value(kv)?),
                _ => {}
            }
        }
        if let Some(value) = value {
            out.push(Point {
                name: name.to_string(),
                attributes: attributes.join(","),
                value,
            });
        }
        Ok(())
    }

    fn metric(m: &[u8], out: &mut Vec<Point>) -> Result<(), Malformed> {
        let mut name = String::new();
        let mut numbers: Vec<&[u8]> = Vec::new();
        let mut r = Fields(m);
        while let Some((n, v)) = r.next_field()? {
            match (n, v) {
                (1, Value::Bytes(b)) => name = text(b),
                // Gauge (5) and Sum (7): repeated NumberDataPoint data_points = 1.
                (5 | 7, Value::Bytes(b)) => numbers.push(b),
                _ => {}
            }
        }
        for g in numbers {
            each(g, 1, |dp| data_point(&name, dp, out))?;
        }
        Ok(())
    }

    /// Every number data point of a `MetricsData`.
    pub fn decode(metrics_data: &[u8]) -> Result<Vec<Point>, Malformed> {
        let mut out = Vec::new();
        each(metrics_data, 1, |resource_metrics| {
            each(resource_metrics, 2, |scope_metrics| {
                each(scope_metrics, 2, |m| metric(m, &mut out))
            })
        })?;
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
            let mut key = (number << 3) | 2;
            loop {
                let b = (key & 0x7f) as u8;
                key >>= 7;
                out.push(if key == 0 { b } else { b | 0x80 });
                if key == 0 {
                    break;
                }
            }
            let mut n = bytes.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                out.push(if n == 0 { b } else { b | 0x80 });
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(bytes);
        }

        fn wrap(number: u64, bytes: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            field(&mut v, number, bytes);
            v
        }

        #[test]
        fn gauges_and_sums_are_read_with_their_attributes() {
            // NumberDataPoint: attributes (7) node.id="3", as_double (4) 2.5.
            let mut kv = wrap(1, b"node.id");
            kv.extend(wrap(2, &wrap(1, b"3")));
            let mut dp = wrap(7, &kv);
            dp.push((4 << 3) | 1);
            dp.extend_from_slice(&2.5f64.to_le_bytes());
            // An int point (6) of 7.
            let mut dp2 = vec![(6 << 3) | 1];
            dp2.extend_from_slice(&7i64.to_le_bytes());
            let mut gauge_metric = wrap(1, b"org.apache.kafka.producer.latency");
            gauge_metric.extend(wrap(5, &wrap(1, &dp)));
            let mut sum_metric = wrap(1, b"org.apache.kafka.producer.records");
            sum_metric.extend(wrap(7, &wrap(1, &dp2)));
            let mut scope = wrap(2, &gauge_metric);
            scope.extend(wrap(2, &sum_metric));
            let data = wrap(1, &wrap(2, &scope));
            let points = decode(&data).unwrap();
            assert_eq!(
                points,
                vec![
                    Point {
                        name: "org.apache.kafka.producer.latency".into(),
                        attributes: "node.id=3".into(),
                        value: 2.5
                    },
                    Point {
                        name: "org.apache.kafka.producer.records".into(),
                        attributes: String::new(),
                        value: 7.0
                    },
                ]
            );
            // Cut anywhere: refused, never a panic.
            for n in 0..data.len() {
                let _ = decode(&data[..n]);
            }
            assert!(decode(&[0x0a, 0x05, 1]).is_err());
        }
    }
}
