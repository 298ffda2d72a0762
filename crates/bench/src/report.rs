//! One result shape for every workload: named figures, printed as a table or as JSON.

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Ordered (name, value, unit) figures plus the settings that produced them.
pub struct Report {
    pub workload: String,
    pub settings: Map<String, Value>,
    figures: Vec<(String, f64, &'static str)>,
}

impl Report {
    pub fn new(workload: &str) -> Report {
        Report {
            workload: workload.to_string(),
            settings: Map::new(),
            figures: Vec::new(),
        }
    }

    pub fn setting(&mut self, name: &str, value: impl Into<Value>) {
        self.settings.insert(name.to_string(), value.into());
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push((name.to_string(), value, unit));
    }

    /// Latency percentiles of a histogram recorded in microseconds, reported in ms.
    pub fn latency(&mut self, prefix: &str, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            let ms = h.value_at_quantile(q) as f64 / 1000.0;
            self.figure(&format!("{prefix} {label}"), ms, "ms");
        }
        self.figure(&format!("{prefix} max"), h.max() as f64 / 1000.0, "ms");
    }

    pub fn print(&self, output: Output) {
        match output {
            Output::Json => {
                let figures: Map<String, Value> = self
                    .figures
                    .iter()
                    .map(|(n, v, u)| (n.clone(), json!({ "value": v, "unit": u })))
                    .collect();
                let doc = json!({
                    "workload": self.workload,
                    "settings": self.settings,
                    "figures": figures,
                });
                println!("{doc}");
            }
            Output::Table => {
                println!("== {}", self.workload);
                for (k, v) in &self.settings {
                    println!("  {k:<28} {v}");
                }
                for (name, value, unit) in &self.figures {
                    println!("  {name:<28} {value:>14.3} {unit}");
                }
            }
        }
    }
}
