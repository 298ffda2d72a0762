//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4, same
//! as earliest here), latest tiered (-5, none here) and by timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::context::Ctx;
use crate::errors::{NONE, code_name, error_code};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub fn handle(ctx: &Ctx<'_>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let b = ctx.broker;
    // read_committed (v2+): "latest" is the last stable offset.
    let read_committed = ctx.version >= 2 && req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_leader_epoch(if ctx.version >= 4 { 0 } else { -1 });
                    let result: broker::Result<(i64, i64)> = match p.timestamp {
                        LATEST if read_committed => b
                            .last_stable_offset(&name, p.partition_index)
                            .map(|o| (o, -1)),
                        LATEST => b
                            .watermarks(&name, p.partition_index)
                            .map(|w| (w.high_watermark, -1)),
                        EARLIEST | EARLIEST_LOCAL => b
                            .watermarks(&name, p.partition_index)
                            .map(|w| (w.log_start, -1)),
                        LATEST_TIERED => b.watermarks(&name, p.partition_index).map(|_| (-1, -1)),
                        MAX_TIMESTAMP => b
                            .max_timestamp(&name, p.partition_index)
                            .map(|o| o.unwrap_or((-1, -1))),
                        ts if ts >= 0 => b
                            .offset_for_timestamp(&name, p.partition_index, ts)
                            .map(|o| o.unwrap_or((-1, -1))),
                        _ => Err(broker::BrokerError::InvalidRecord(
                            "invalid timestamp".into(),
                        )),
                    };
                    match result {
                        Ok((offset, ts)) => base
                            .with_error_code(NONE)
                            .with_offset(offset)
                            .with_timestamp(ts),
                        Err(e) => {
                            let code = error_code(&e);
                            b.metrics().observe_error(
                                crate::PROTOCOL,
                                "ListOffsets",
                                &code_name(code),
                            );
                            base.with_error_code(code)
                                .with_offset(-1)
                                .with_timestamp(-1)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
