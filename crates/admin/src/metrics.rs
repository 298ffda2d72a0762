//! `GET /metrics`: the broker's registry, then storage samples, uptime and build info, in the
//! OpenMetrics text format Prometheus scrapes.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::{encode_eof, encode_registry};

use crate::AdminServer;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a sample only grows (counter) or goes up and down (gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleKind {
    Gauge,
    Counter,
    /// A summary without quantiles: `value` is the sum, this the count (e.g. fsync time).
    Summary {
        count: u64,
    },
}

/// One number sampled at scrape time, e.g. `sluice_storage_segments`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name without the `_total` suffix counters get.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: SampleKind,
    pub value: f64,
}

impl Sample {
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Sample {
            name,
            help,
            kind: SampleKind::Gauge,
            value,
        }
    }

    pub fn summary(name: &'static str, help: &'static str, sum: f64, count: u64) -> Self {
        Sample {
            name,
            help,
            kind: SampleKind::Summary { count },
            value: sum,
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Sample {
            name,
            help,
            kind: SampleKind::Counter,
            value,
        }
    }
}

/// Appends `samples` in OpenMetrics text (without the final `# EOF`).
pub(crate) fn encode_samples(out: &mut String, samples: &[Sample]) -> std::fmt::Result {
    for s in samples {
        let kind = match s.kind {
            SampleKind::Gauge => "gauge",
            SampleKind::Counter => "counter",
            SampleKind::Summary { .. } => "summary",
        };
        writeln!(out, "# HELP {} {}", s.name, s.help)?;
        writeln!(out, "# TYPE {} {kind}", s.name)?;
        match s.kind {
            SampleKind::Gauge => writeln!(out, "{} {}", s.name, format_value(s.value))?,
            SampleKind::Counter => writeln!(out, "{}_total {}", s.name, format_value(s.value))?,
            SampleKind::Summary { count } => {
                writeln!(out, "{}_sum {}", s.name, format_value(s.value))?;
                writeln!(out, "{}_count {count}", s.name)?;
            }
        }
    }
    Ok(())
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

pub(crate) fn render(server: &AdminServer) -> Result<String, std::fmt::Error> {
    server.broker.refresh_gauges();
    let mut out = String::with_capacity(16 * 1024);
    {
        let registry = server.broker.metrics().registry.lock();
        encode_registry(&mut out, &registry)?;
    }
    let mut samples = vec![Sample::gauge(
        "sluice_uptime_seconds",
        "Seconds since the server started",
        server.started.elapsed().as_secs_f64().floor(),
    )];
    if let Some(sampler) = &server.storage {
        samples.extend(sampler());
    }
    encode_samples(&mut out, &samples)?;
    writeln!(out, "# HELP sluice_build_info Build information")?;
    writeln!(out, "# TYPE sluice_build_info gauge")?;
    writeln!(
        out,
        "sluice_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )?;
    encode_eof(&mut out)?;
    Ok(out)
}

pub(crate) async fn handler(State(server): State<AdminServer>) -> Response {
    match render(&server) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_encode_as_openmetrics() {
        let mut out = String::new();
        encode_samples(
            &mut out,
            &[
                Sample::gauge("sluice_storage_segments", "Segments", 3.0),
                Sample::counter("sluice_storage_fsyncs", "Fsyncs", 10.0),
                Sample::summary("sluice_storage_fsync_seconds", "Time", 0.25, 4),
            ],
        )
        .unwrap();
        assert!(out.contains("# TYPE sluice_storage_segments gauge\nsluice_storage_segments 3\n"));
        assert!(out.contains("sluice_storage_fsyncs_total 10\n"));
        assert!(out.contains(
            "sluice_storage_fsync_seconds_sum 0.25\nsluice_storage_fsync_seconds_count 4\n"
        ));
    }
}
