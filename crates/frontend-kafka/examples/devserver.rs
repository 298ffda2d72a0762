//! A tiny broker for manual checks with real clients:
//! `cargo run -p sluice-frontend-kafka --example devserver -- 19092 /tmp/sluice-dev`
//! then `kcat -b 127.0.0.1:19092 -L`.

use std::sync::Arc;

use broker::{Broker, BrokerConfig};
use sluice_frontend_kafka::{KafkaConfig, serve};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(19092);
    let dir = args.next().unwrap_or_else(|| "/tmp/sluice-dev".into());
    let delay: u64 = std::env::var("SLUICE_REBALANCE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let store = Arc::new(storage::Store::open(storage::StoreConfig::new(format!(
        "{dir}/store"
    )))?);
    let config = BrokerConfig {
        data_dir: dir.clone().into(),
        ..BrokerConfig::default()
    };
    let broker = Broker::open(store, config, Arc::new(common::SystemClock))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let kafka = KafkaConfig {
        advertised_port: port,
        coordinator: kafka_coord::CoordConfig {
            group_initial_rebalance_delay_ms: delay,
            ..kafka_coord::CoordConfig::default()
        },
        ..KafkaConfig::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, broker.clone(), kafka, rx));
    eprintln!("devserver on 127.0.0.1:{port}, data in {dir}");
    tokio::signal::ctrl_c().await?;
    let _ = tx.send(true);
    server.await??;
    broker.shutdown().await?;
    Ok(())
}
