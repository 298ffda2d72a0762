//! The admin endpoints over real HTTP, against a real broker on a temporary store.

use std::sync::Arc;

use sluice_admin::{AdminServer, DoorListener, Listeners, Sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn metrics_health_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        storage::Store::open(storage::StoreConfig::new(dir.path().join("store"))).unwrap(),
    );
    let broker = broker::Broker::open(
        store,
        broker::BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        Arc::new(common::SystemClock),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AdminServer::new(
        broker.clone(),
        dir.path().to_path_buf(),
        Listeners {
            doors: vec![DoorListener {
                protocol: "kafka",
                address: "0.0.0.0:9092".parse().unwrap(),
                advertised: Some("127.0.0.1:9092".into()),
            }],
            admin: addr,
        },
    )
    .with_storage_sampler(Arc::new(|| {
        vec![
            Sample::gauge("sluice_storage_segments", "Segments", 2.0),
            Sample::summary("sluice_storage_fsync_seconds", "Fsync time", 0.5, 10),
        ]
    }));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sluice_admin::serve(listener, server, rx));

    let (code, head, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.contains("\nsluice_storage_segments 2\n"), "{body}");
    assert!(
        body.contains("sluice_storage_fsync_seconds_count 10\n"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE sluice_topics gauge"),
        "broker registry rendered: {body}"
    );
    assert!(body.contains("sluice_uptime_seconds"), "{body}");
    assert!(body.ends_with("# EOF\n"));
    assert_eq!(body.matches("# EOF").count(), 1);

    let (code, _, body) = get(addr, "/health").await;
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["topics"], 0);
    assert_eq!(h["admin_listener"], addr.to_string());
    assert_eq!(h["listeners"][0]["protocol"], "kafka");
    assert_eq!(h["listeners"][0]["address"], "0.0.0.0:9092");
    assert_eq!(h["listeners"][0]["advertised"], "127.0.0.1:9092");

    let (code, _, _) = get(addr, "/nope").await;
    assert_eq!(code, 404);

    broker.shutdown().await.unwrap();
    let (code, _, body) = get(addr, "/health").await;
    assert_eq!(code, 503);
    assert!(body.contains("shutting_down"), "{body}");

    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}
