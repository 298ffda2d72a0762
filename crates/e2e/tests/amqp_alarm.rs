//! Issue 15: a publisher faster than the disk is stopped by connection.blocked, not by
//! losing messages. The broker's data directory is on a 64 MiB tmpfs with
//! `amqp.disk_free_limit_bytes` = 24 MB; filling the tmpfs past that limit blocks the
//! publishing connection (lapin sees connection.blocked, its next publish gets no confirm)
//! while a consumer connection keeps taking and acking messages; freeing the space unblocks
//! it and the held publish is confirmed and delivered. Needs root for `mount -t tmpfs` (CI
//! runs as root).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use testkit::{Server, Tmpfs};

const LIMIT: u64 = 24_000_000;

async fn connect(server: &Server) -> Connection {
    let uri = format!("amqp://guest:guest@{}/%2f", server.amqp_addr());
    Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {uri}: {e}; log:\n{}", server.log()))
}

fn free_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_alarm_blocks_publishers_and_not_consumers_until_space_comes_back() {
    tokio::time::timeout(Duration::from_secs(90), run())
        .await
        .expect("the test finishes within 90 s");
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    let _tmpfs = Tmpfs::mount(&mount, "64m");
    let limit = LIMIT.to_string();
    let server = Server::start_with(
        &mount.join("data"),
        &[
            "--set",
            &format!("amqp.disk_free_limit_bytes={limit}"),
            "--set",
            "storage.segment_bytes=4194304",
        ],
    );
    let publisher = connect(&server).await;
    let pch = publisher.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    pch.queue_declare("alarmed".into(), durable, FieldTable::default())
        .await
        .unwrap();
    let publish = {
        let pch = pch.clone();
        move |n: u32| {
            let pch = pch.clone();
            async move {
                pch.basic_publish(
                    "".into(),
                    "alarmed".into(),
                    BasicPublishOptions::default(),
                    format!("m{n}").as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap()
            }
        }
    };
    for n in 0..20 {
        assert!(publish(n).await.is_ack());
    }
    assert!(!publisher.status().blocked());

    // Fill the disk to below the limit.
    let filler = mount.join("filler");
    let room = free_bytes(&mount).saturating_sub(LIMIT / 2);
    std::fs::write(&filler, vec![1u8; room as usize]).unwrap();
    assert!(free_bytes(&mount) < LIMIT);
    until("the publisher is blocked", Duration::from_secs(10), || {
        publisher.status().blocked()
    })
    .await;
    assert!(server.log().contains("resource alarm"), "{}", server.log());
    // A publish now waits (lapin holds it while blocked; the broker would not read it
    // either): not confirmed while the alarm lasts.
    let mut held = tokio::spawn({
        let publish = publish.clone();
        async move { publish(100).await }
    });
    let early = tokio::time::timeout(Duration::from_millis(1500), &mut held).await;
    assert!(
        early.is_err(),
        "a publish was confirmed while blocked: {early:?}"
    );

    // A consumer on another connection is not blocked: it takes and acks the 20.
    let consumer = connect(&server).await;
    let cch = consumer.create_channel().await.unwrap();
    cch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut deliveries = cch
        .basic_consume(
            "alarmed".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut bodies = Vec::new();
    while bodies.len() < 20 {
        let d = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("the consumer is not held by the alarm")
            .unwrap()
            .unwrap();
        bodies.push(String::from_utf8(d.data.clone()).unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(bodies, (0..20).map(|n| format!("m{n}")).collect::<Vec<_>>());
    assert!(publisher.status().blocked());

    // Space comes back: unblocked, and the held publish is stored, confirmed and delivered.
    std::fs::remove_file(&filler).unwrap();
    until(
        "the publisher is unblocked",
        Duration::from_secs(10),
        || !publisher.status().blocked(),
    )
    .await;
    let confirm = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held publish is confirmed once unblocked")
        .unwrap();
    assert!(confirm.is_ack());
    let d = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .expect("the held publish is delivered")
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"m100");
}
