//! Issue 5, disk full: the data directory sits on a small tmpfs. Produce fills it; the
//! producer gets KAFKA_STORAGE_ERROR, the broker stays up, consumers keep reading what is
//! stored, and once space is freed (topic delete) produce works again — with every record
//! stored before intact. Needs root for `mount -t tmpfs` (CI runs as root).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use testkit::{Server, Tmpfs};

const TIMEOUT: Duration = Duration::from_secs(30);

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

fn read_all(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "disk-full-reader")
        .create()
        .unwrap();
    let (_, high) = c.fetch_watermarks(topic, 0, TIMEOUT).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while (out.len() as i64) < high && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.expect("fetch").payload().unwrap_or_default().to_vec());
        }
    }
    out
}

#[test]
fn full_disk_refuses_produce_keeps_serving_and_recovers_after_topic_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mount_dir = dir.path().join("small");
    let _tmpfs = Tmpfs::mount(&mount_dir, "24m");
    let server = Server::start_with_env(
        &mount_dir.join("data"),
        &[],
        &[("SLUICE_STORAGE_SEGMENT_BYTES", "1048576")],
    );
    let bootstrap = server.bootstrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    rt.block_on(async {
        let topics = [
            NewTopic::new("keep", 1, TopicReplication::Fixed(1)),
            NewTopic::new("filler", 1, TopicReplication::Fixed(1)),
        ];
        for r in admin.create_topics(&topics, &opts).await.unwrap() {
            r.unwrap();
        }
    });
    let p = producer(&bootstrap);
    let kept: Vec<Vec<u8>> = (0..20).map(|i| format!("keep-{i}").into_bytes()).collect();
    rt.block_on(async {
        for v in &kept {
            p.send(FutureRecord::<(), _>::to("keep").payload(v), TIMEOUT)
                .await
                .unwrap_or_else(|(e, _)| panic!("produce before full: {e}"));
        }
    });

    // Fill the disk: 64 KiB records until the broker refuses.
    let blob = vec![0x5au8; 64 * 1024];
    let mut refused = None;
    rt.block_on(async {
        for i in 0..2000 {
            match p
                .send(FutureRecord::<(), _>::to("filler").payload(&blob), TIMEOUT)
                .await
            {
                Ok(_) => {}
                Err((e, _)) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
    });
    let (accepted, error) = refused.expect("a 24 MiB disk fills before 128 MiB are accepted");
    eprintln!("disk full after {accepted} records: {error}");
    assert!(
        matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError)
        ),
        "produce on a full disk gets KAFKA_STORAGE_ERROR, got {error:?}"
    );
    assert!(
        server.log().to_lowercase().contains("no space")
            || server.log().to_lowercase().contains("disk full"),
        "the broker logs why:\n{}",
        server.log()
    );

    // Still up, and what was stored is served intact.
    assert_eq!(read_all(&bootstrap, "keep"), kept);

    // Free space by deleting the filler topic; produce works again.
    rt.block_on(async {
        for r in admin.delete_topics(&["filler"], &opts).await.unwrap() {
            r.unwrap();
        }
    });
    let mut after = kept.clone();
    rt.block_on(async {
        let mut ok = false;
        for attempt in 0..50 {
            let v = format!("after-{attempt}").into_bytes();
            if p.send(FutureRecord::<(), _>::to("keep").payload(&v), TIMEOUT)
                .await
                .is_ok()
            {
                after.push(v);
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(ok, "produce succeeds again once the space is freed");
    });
    assert_eq!(
        read_all(&bootstrap, "keep"),
        after,
        "nothing stored before was damaged"
    );
}
