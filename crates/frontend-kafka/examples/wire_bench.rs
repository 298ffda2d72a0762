//! Front-door benchmark over loopback with the Kafka wire protocol (kafka-protocol's client
//! encoding, no client library in the way): produce throughput, consume throughput and
//! long-poll fetch latency, against an in-process broker on a fresh store.
//!
//! `cargo run --release -p sluice-frontend-kafka --example wire_bench -- [MiB] [dir]`

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, NewTopic};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_frontend_kafka::{KafkaConfig, serve};
use testkit::wire::AsyncClient;

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 64;
const PIPELINE: usize = 16;

fn batch(n: usize) -> Bytes {
    let value = Bytes::from(vec![b'x'; RECORD_BYTES]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut b = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut b,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    b.freeze()
}

fn produce(records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("bench")))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

fn fetch(offset: i64, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("bench")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max_bytes),
                ]),
        ])
}

/// Offset after the last record in a fetched records blob.
fn next_offset(records: &Bytes) -> Option<i64> {
    let mut b = records.clone();
    let mut next = None;
    while b.remaining() >= 61 {
        let base = i64::from_be_bytes(b[0..8].try_into().ok()?);
        let len = i32::from_be_bytes(b[8..12].try_into().ok()?) as usize;
        let last_delta = i32::from_be_bytes(b[23..27].try_into().ok()?) as i64;
        if b.remaining() < 12 + len {
            break;
        }
        next = Some(base + last_delta + 1);
        b.advance(12 + len);
    }
    next
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let dir = args.next().map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let store =
        Arc::new(storage::Store::open(storage::StoreConfig::new(dir.join("store"))).unwrap());
    let b = Broker::open(
        store,
        BrokerConfig {
            data_dir: dir.clone(),
            ..BrokerConfig::default()
        },
        Arc::new(common::SystemClock),
    )
    .unwrap();
    b.create_topic(
        NewTopic {
            name: "bench".into(),
            partitions: Some(1),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(
        listener,
        b.clone(),
        KafkaConfig {
            advertised_port: addr.port(),
            ..KafkaConfig::default()
        },
        rx,
    ));

    // Produce: pipelined requests of one 64-record batch each.
    let one = batch(RECORDS_PER_BATCH);
    let requests = mib * 1024 * 1024 / (RECORD_BYTES * RECORDS_PER_BATCH);
    let mut c = AsyncClient::connect(addr).await.unwrap();
    let t = Instant::now();
    let mut inflight = VecDeque::with_capacity(PIPELINE);
    for _ in 0..requests {
        inflight.push_back(c.send(&produce(one.clone()), 9).await.unwrap());
        if inflight.len() == PIPELINE {
            let corr = inflight.pop_front().unwrap();
            let r = c.recv::<ProduceRequest>(corr, 9).await.unwrap();
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        }
    }
    for corr in inflight {
        c.recv::<ProduceRequest>(corr, 9).await.unwrap();
    }
    let produce_s = t.elapsed().as_secs_f64();
    let records = requests * RECORDS_PER_BATCH;
    let bytes = (requests * one.len()) as f64;
    println!(
        "produce: {records} x {RECORD_BYTES} B records in {produce_s:.2} s = {:.0} records/s, {:.0} MiB/s (acks=1, {RECORDS_PER_BATCH}/batch, {PIPELINE} in flight)",
        records as f64 / produce_s,
        bytes / produce_s / 1048576.0
    );

    // Consume: sequential fetches of up to 8 MiB.
    let t = Instant::now();
    let mut offset = 0i64;
    let mut got = 0usize;
    while offset < records as i64 {
        let r = c.call(&fetch(offset, 500, 8 << 20), 12).await.unwrap();
        let recs = r.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        got += recs.len();
        offset = next_offset(&recs).unwrap_or(offset);
    }
    let consume_s = t.elapsed().as_secs_f64();
    println!(
        "consume: {records} records in {consume_s:.2} s = {:.0} records/s, {:.0} MiB/s (8 MiB fetches)",
        records as f64 / consume_s,
        got as f64 / consume_s / 1048576.0
    );

    // Long-poll latency: a consumer parked at the end; one producer record wakes it.
    let mut consumer = AsyncClient::connect(addr).await.unwrap();
    let small = batch(1);
    let mut lat = Vec::new();
    for _ in 0..200 {
        let parked = consumer
            .send(&fetch(offset, 5_000, 1 << 20), 12)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t = Instant::now();
        let produced = c.send(&produce(small.clone()), 9).await.unwrap();
        let r = consumer.recv::<FetchRequest>(parked, 12).await.unwrap();
        lat.push(t.elapsed());
        c.recv::<ProduceRequest>(produced, 9).await.unwrap();
        let recs = r.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        offset = next_offset(&recs).unwrap_or(offset + 1);
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
    println!(
        "long-poll fetch latency (produce sent -> fetch response received, 200 samples): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let _ = stop.send(true);
    server.await.unwrap().unwrap();
    b.shutdown().await.unwrap();
}
