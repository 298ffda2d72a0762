//! Transactions over the wire, in process: FindCoordinator (transaction key), transactional
//! InitProducerId, AddPartitionsToTxn, transactional Produce, read_committed Fetch and
//! ListOffsets against the last stable offset, aborted-transaction lists, fencing,
//! AddOffsetsToTxn + TxnOffsetCommit + OffsetFetch require_stable, and the tooling APIs
//! (ListTransactions, DescribeTransactions, DescribeProducers).

use std::sync::Arc;

use broker::{Broker, BrokerConfig};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_frontend_kafka::{KafkaConfig, serve};
use testkit::wire::AsyncClient;
use tokio::sync::watch;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A transactional batch of `values` from (producer id, epoch) starting at `sequence`.
fn txn_batch(values: &[&str], producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: now_ms(),
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce(records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s("w"))))
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(s("t")))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

fn fetch(isolation: i8) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// (data values, control batch count) of a records field.
fn decode(records: Option<Bytes>) -> (Vec<String>, usize) {
    let mut buf = records.unwrap_or_default();
    let (mut values, mut controls) = (Vec::new(), 0);
    while buf.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut buf).unwrap();
        for r in set.records {
            if r.control {
                controls += 1;
            } else {
                values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    (values, controls)
}

fn latest(isolation: i8) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ])
}

fn add_partition(pid: i64, epoch: i16) -> AddPartitionsToTxnRequest {
    AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s("w")))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![0]),
        ])
}

fn end_txn(pid: i64, epoch: i16, commit: bool) -> EndTxnRequest {
    EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s("w")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit)
}

fn init(timeout_ms: i32) -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s("w"))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

fn offset_fetch() -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_require_stable(true)
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("in")))
                .with_partition_indexes(vec![0]),
        ]))
}

#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
#[tokio::test]
async fn transactions_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        storage::Store::open(storage::StoreConfig::new(dir.path().join("store"))).unwrap(),
    );
    let cfg = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let broker = Broker::open(store, cfg, Arc::new(common::SystemClock)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let kafka = KafkaConfig {
        advertised_port: addr.port(),
        ..KafkaConfig::default()
    };
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, broker.clone(), kafka, rx));
    let mut c = AsyncClient::connect(addr).await.unwrap();
    for (name, parts) in [("t", 1), ("in", 1)] {
        let r = c
            .call(
                &CreateTopicsRequest::default().with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(TopicName(s(name)))
                        .with_num_partitions(parts)
                        .with_replication_factor(1),
                ]),
                7,
            )
            .await
            .unwrap();
        assert_eq!(r.topics[0].error_code, 0);
    }

    // The transaction coordinator is this node.
    let fc = c
        .call(
            &FindCoordinatorRequest::default()
                .with_key(s("w"))
                .with_key_type(1),
            3,
        )
        .await
        .unwrap();
    assert_eq!((fc.error_code, fc.port), (0, i32::from(addr.port())));

    let bad = c.call(&init(0), 4).await.unwrap();
    assert_eq!(
        bad.error_code,
        ResponseError::InvalidTransactionTimeout.code()
    );
    let ip = c.call(&init(60_000), 4).await.unwrap();
    assert_eq!(ip.error_code, 0);
    let (pid, epoch) = (ip.producer_id.0, ip.producer_epoch);
    assert!(pid >= 0);

    // A partition outside the transaction refuses transactional batches.
    let r = c
        .call(&produce(txn_batch(&["x"], pid, epoch, 0)), 9)
        .await
        .unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidTxnState.code()
    );
    let ap = c.call(&add_partition(pid, epoch), 3).await.unwrap();
    assert_eq!(
        ap.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    let r = c
        .call(&produce(txn_batch(&["a1", "a2"], pid, epoch, 0)), 9)
        .await
        .unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);

    // Open: invisible to read_committed, LSO 0, HW 2.
    let f = c.call(&fetch(1), 11).await.unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (2, 0));
    assert_eq!(decode(p.records.clone()).0, Vec::<String>::new());
    let f = c.call(&fetch(0), 11).await.unwrap();
    assert_eq!(
        decode(f.responses[0].partitions[0].records.clone()).0,
        ["a1", "a2"]
    );
    let lo = c.call(&latest(1), 5).await.unwrap();
    assert_eq!(lo.topics[0].partitions[0].offset, 0);
    let lo = c.call(&latest(0), 5).await.unwrap();
    assert_eq!(lo.topics[0].partitions[0].offset, 2);

    // Tooling sees the open transaction.
    let lt = c
        .call(&ListTransactionsRequest::default(), 0)
        .await
        .unwrap();
    assert!(
        lt.transaction_states
            .iter()
            .any(|t| t.transactional_id.0.as_str() == "w"
                && t.producer_id.0 == pid
                && t.transaction_state.as_str() == "Ongoing")
    );
    let dt = c
        .call(
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("w")), TransactionalId(s("nope"))]),
            0,
        )
        .await
        .unwrap();
    assert_eq!(dt.transaction_states[0].error_code, 0);
    assert_eq!(
        dt.transaction_states[0].transaction_state.as_str(),
        "Ongoing"
    );
    assert_eq!(dt.transaction_states[0].topics[0].partitions, vec![0]);
    assert_eq!(
        dt.transaction_states[1].error_code,
        ResponseError::TransactionalIdNotFound.code()
    );
    let dp = c
        .call(
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0]),
            ]),
            0,
        )
        .await
        .unwrap();
    let producers = &dp.topics[0].partitions[0].active_producers;
    assert_eq!(producers.len(), 1);
    assert_eq!(
        (
            producers[0].producer_id.0,
            producers[0].last_sequence,
            producers[0].current_txn_start_offset
        ),
        (pid, 1, 0)
    );

    // Abort: the marker lands at 2, read_committed gets the records plus the aborted list.
    let e = c.call(&end_txn(pid, epoch, false), 3).await.unwrap();
    assert_eq!(e.error_code, 0);
    let f = c.call(&fetch(1), 11).await.unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (3, 3));
    let aborted = p.aborted_transactions.clone().unwrap_or_default();
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (aborted[0].producer_id.0, aborted[0].first_offset),
        (pid, 0)
    );
    assert_eq!(decode(p.records.clone()).1, 1, "one abort marker");

    // Offsets inside a transaction: invisible (unstable) until the commit.
    let ap = c.call(&add_partition(pid, epoch), 3).await.unwrap();
    assert_eq!(
        ap.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    let ao = c
        .call(
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("w")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(s("g"))),
            3,
        )
        .await
        .unwrap();
    assert_eq!(ao.error_code, 0);
    let toc = c
        .call(
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("w")))
                .with_group_id(GroupId(s("g")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_generation_id(-1)
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("in")))
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(42),
                        ]),
                ]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(toc.topics[0].partitions[0].error_code, 0);
    let of = c.call(&offset_fetch(), 7).await.unwrap();
    assert_eq!(
        of.topics[0].partitions[0].error_code,
        ResponseError::UnstableOffsetCommit.code()
    );
    let r = c
        .call(&produce(txn_batch(&["c1"], pid, epoch, 2)), 9)
        .await
        .unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let e = c.call(&end_txn(pid, epoch, true), 3).await.unwrap();
    assert_eq!(e.error_code, 0);
    // A retried EndTxn is answered with success.
    assert_eq!(
        c.call(&end_txn(pid, epoch, true), 3)
            .await
            .unwrap()
            .error_code,
        0
    );
    let of = c.call(&offset_fetch(), 7).await.unwrap();
    assert_eq!(
        (
            of.topics[0].partitions[0].error_code,
            of.topics[0].partitions[0].committed_offset
        ),
        (0, 42)
    );
    let f = c.call(&fetch(1), 11).await.unwrap();
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.last_stable_offset, 5);
    assert_eq!(
        decode(p.records.clone()),
        (vec!["a1".into(), "a2".into(), "c1".into()], 2)
    );

    // A second InitProducerId fences the first producer everywhere.
    let ip2 = c.call(&init(60_000), 4).await.unwrap();
    assert_eq!((ip2.producer_id.0, ip2.producer_epoch), (pid, epoch + 1));
    let ap = c.call(&add_partition(pid, epoch), 3).await.unwrap();
    assert_eq!(
        ap.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        ResponseError::ProducerFenced.code()
    );
    assert_eq!(
        c.call(&end_txn(pid, epoch, true), 3)
            .await
            .unwrap()
            .error_code,
        ResponseError::ProducerFenced.code()
    );
    let r = c
        .call(&produce(txn_batch(&["z"], pid, epoch, 3)), 9)
        .await
        .unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidProducerEpoch.code()
    );

    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    broker.shutdown().await.unwrap();
}
