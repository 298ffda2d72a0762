//! Fetch with long polling: answer when `min_bytes` are available, or at `max_wait_ms`,
//! woken by appends (the store's append counter), not by a timer loop. Incremental fetch
//! sessions (KIP-227, `fetch_session.rs`): a session's requests name only partitions whose
//! position changed, and its responses carry only partitions with something new.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};

use crate::context::{Ctx, topic_name};
use crate::errors::{NONE, code_name, error_code};
use crate::fetch_session::{SessionKey, SessionPartition, SessionUse};
use crate::handlers::partition_limit::{self, PartitionLimit};
use crate::segmented;

struct Wanted {
    wire_name: String,
    topic_id: uuid::Uuid,
    name: Option<String>,
    partitions: Vec<(i32, i64, i32)>,
    /// Partitions past `max_partitions_per_request` (always the request's tail).
    refused: Vec<i32>,
}

/// For an incremental session request: per partition of `wanted` (same order), whether the
/// request named it (always answered) and the watermarks last sent for it.
type SessionView = HashMap<SessionKey, (bool, Option<(i64, i64, i64)>)>;

/// A Fetch response and, in encode order, the storage chunks each placeholder records
/// field stands for (see `segmented.rs`).
pub type FetchReply = (FetchResponse, Vec<Vec<Bytes>>);

pub async fn handle(ctx: &Ctx<'_>, req: FetchRequest) -> FetchReply {
    let session = if ctx.version >= 7 {
        ctx.sessions.begin(req.session_id, req.session_epoch)
    } else {
        Ok(SessionUse::None)
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            ctx.broker
                .metrics()
                .observe_error(crate::PROTOCOL, "Fetch", &code_name(e.code()));
            let resp = FetchResponse::default().with_error_code(e.code());
            return (resp, Vec::new());
        }
    };
    let wait_ms = (req.max_wait_ms.max(0) as u64).min(ctx.config.max_fetch_wait_ms);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if ctx.version >= 3 {
        req.max_bytes.max(0) as usize
    } else {
        usize::MAX
    }
    .min(ctx.config.max_fetch_response_bytes);
    // read_committed (v4+): data only below the last stable offset, with the aborted
    // transactions in range.
    let read_committed = ctx.version >= 4 && req.isolation_level == 1;
    let (wanted, view) = match &session {
        SessionUse::Incremental { id } => match session_wanted(ctx, *id, &req) {
            Ok(w) => w,
            Err(e) => {
                return (
                    FetchResponse::default().with_error_code(e.code()),
                    Vec::new(),
                );
            }
        },
        _ => (requested(ctx, &req), SessionView::new()),
    };
    drop(req);
    let mut reply = poll(ctx, &wanted, wait_ms, min_bytes, max_bytes, read_committed).await;
    match session {
        SessionUse::None => {}
        SessionUse::Open => {
            let id = ctx.sessions.open(session_partitions(&wanted, &reply.0));
            reply.0.session_id = id;
        }
        SessionUse::Incremental { id } => {
            let sent = keep_changed(&mut reply.0, &view);
            ctx.sessions.sent(id, &sent);
            reply.0.session_id = id;
        }
    }
    reply
}

/// The partitions a full request names (within the per-request partition limit).
fn requested(ctx: &Ctx<'_>, req: &FetchRequest) -> Vec<Wanted> {
    let mut limit = PartitionLimit::new(ctx);
    let wanted = req
        .topics
        .iter()
        .map(|t| {
            let (admitted, refused): (Vec<_>, Vec<_>) =
                t.partitions.iter().partition(|_| limit.admit());
            Wanted {
                wire_name: t.topic.0.to_string(),
                topic_id: t.topic_id,
                name: topic_name_of(ctx, &t.topic.0, t.topic_id),
                partitions: admitted
                    .iter()
                    .map(|p| (p.partition, p.fetch_offset, p.partition_max_bytes))
                    .collect(),
                refused: refused.iter().map(|p| p.partition).collect(),
            }
        })
        .collect();
    limit.log_if_over(ctx, "Fetch");
    wanted
}

fn topic_name_of(ctx: &Ctx<'_>, wire: &str, id: uuid::Uuid) -> Option<String> {
    if ctx.version >= 13 {
        ctx.broker.topic_name_by_id(id.as_u128())
    } else {
        Some(wire.to_string())
    }
}

/// An incremental request applied to its session: every partition of the session to fetch,
/// grouped by topic, and what the response filter needs to know of each.
fn session_wanted(
    ctx: &Ctx<'_>,
    id: i32,
    req: &FetchRequest,
) -> Result<(Vec<Wanted>, SessionView), crate::fetch_session::SessionError> {
    let named: Vec<(SessionKey, i64, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                let key = (t.topic.0.to_string(), t.topic_id, p.partition);
                (key, p.fetch_offset, p.partition_max_bytes)
            })
        })
        .collect();
    let forgotten: Vec<SessionKey> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.0.to_string(), t.topic_id, *p))
        })
        .collect();
    let limit = ctx.config.max_partitions_per_request;
    let (all, refused) = ctx.sessions.update(id, &named, &forgotten, limit)?;
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut view = SessionView::new();
    for ((wire, topic_id, index), part, was_named) in all {
        let w = topic_entry(ctx, &mut wanted, &wire, topic_id);
        w.partitions
            .push((index, part.fetch_offset, part.max_bytes));
        view.insert((wire, topic_id, index), (was_named, part.last_sent));
    }
    for (wire, topic_id, index) in refused {
        topic_entry(ctx, &mut wanted, &wire, topic_id)
            .refused
            .push(index);
    }
    Ok((wanted, view))
}

/// The entry of topic (`wire`, `topic_id`) in `wanted`, added if missing.
fn topic_entry<'w>(
    ctx: &Ctx<'_>,
    wanted: &'w mut Vec<Wanted>,
    wire: &str,
    topic_id: uuid::Uuid,
) -> &'w mut Wanted {
    let at = wanted
        .iter()
        .position(|w| w.wire_name == wire && w.topic_id == topic_id);
    match at {
        Some(i) => &mut wanted[i],
        None => {
            wanted.push(Wanted {
                name: topic_name_of(ctx, wire, topic_id),
                wire_name: wire.to_string(),
                topic_id,
                partitions: Vec::new(),
                refused: Vec::new(),
            });
            wanted.last_mut().expect("just pushed")
        }
    }
}

/// Waits (long poll) until `min_bytes` are ready, the wait ends or shutdown starts; returns
/// the reply over every wanted partition.
async fn poll(
    ctx: &Ctx<'_>,
    wanted: &[Wanted],
    wait_ms: u64,
    min_bytes: usize,
    max_bytes: usize,
    read_committed: bool,
) -> FetchReply {
    let mut appends = ctx.broker.subscribe_appends();
    let mut shutdown = ctx.shutdown.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut seen_marks: Option<Vec<Option<i64>>> = None;
    loop {
        appends.borrow_and_update();
        // Woken by an append elsewhere: if none of our partitions moved, keep waiting
        // without building a response.
        let marks = high_watermarks(ctx, wanted);
        if seen_marks.as_ref() == Some(&marks)
            && tokio::time::Instant::now() < deadline
            && !*shutdown.borrow()
        {
            tokio::select! {
                changed = appends.changed() => {
                    if changed.is_err() {
                        seen_marks = None;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        seen_marks = Some(marks);
        let (pass, bytes, any_error) = read_all(ctx, wanted, max_bytes, read_committed);
        let expired = tokio::time::Instant::now() >= deadline;
        if bytes >= min_bytes.max(1) || any_error || expired || *shutdown.borrow() {
            count_out(ctx, &pass);
            return pass.reply;
        }
        tokio::select! {
            changed = appends.changed() => {
                if changed.is_err() {
                    count_out(ctx, &pass);
                    return pass.reply;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// (high watermark, last stable offset, log start) of a response partition.
fn marks_of(p: &PartitionData) -> (i64, i64, i64) {
    (p.high_watermark, p.last_stable_offset, p.log_start_offset)
}

/// The partitions a new session holds: each wanted partition with the watermarks the full
/// response just sent.
fn session_partitions(
    wanted: &[Wanted],
    resp: &FetchResponse,
) -> Vec<(SessionKey, SessionPartition)> {
    let mut out = Vec::new();
    for (w, t) in wanted.iter().zip(&resp.responses) {
        for &(index, offset, max_bytes) in &w.partitions {
            let sent = t
                .partitions
                .iter()
                .find(|p| p.partition_index == index)
                .map(marks_of);
            let part = SessionPartition {
                fetch_offset: offset,
                max_bytes,
                last_sent: sent,
            };
            out.push(((w.wire_name.clone(), w.topic_id, index), part));
        }
    }
    out
}

/// Drops from an incremental response the partitions with nothing new (no records, no
/// error, the same watermarks as last sent, not named by the request); returns what was
/// sent per partition.
fn keep_changed(
    resp: &mut FetchResponse,
    view: &SessionView,
) -> Vec<(SessionKey, (i64, i64, i64))> {
    let mut sent = Vec::new();
    for t in &mut resp.responses {
        let wire = t.topic.0.to_string();
        t.partitions.retain(|p| {
            let key = (wire.clone(), t.topic_id, p.partition_index);
            let (named, last) = view.get(&key).copied().unwrap_or((true, None));
            let has_records = p.records.as_ref().is_some_and(|r| !r.is_empty());
            let keep = named || has_records || p.error_code != NONE || last != Some(marks_of(p));
            if keep {
                sent.push((key, marks_of(p)));
            }
            keep
        });
    }
    resp.responses.retain(|t| !t.partitions.is_empty());
    sent
}

/// High watermark of every wanted partition (None where it cannot be read).
fn high_watermarks(ctx: &Ctx<'_>, wanted: &[Wanted]) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for t in wanted {
        for &(index, _, _) in &t.partitions {
            out.push(
                t.name
                    .as_ref()
                    .and_then(|n| ctx.broker.watermarks(n, index).ok())
                    .map(|w| w.high_watermark),
            );
        }
    }
    out
}

/// One read of every partition: the reply and what it would send, per topic.
struct Pass {
    reply: FetchReply,
    sent: Vec<(String, u64, u64)>,
}

fn count_out(ctx: &Ctx<'_>, pass: &Pass) {
    for (topic, bytes, records) in &pass.sent {
        ctx.broker.count_fetched(topic, *bytes, *records);
    }
    for t in &pass.reply.0.responses {
        for p in &t.partitions {
            if p.error_code != NONE {
                ctx.broker.metrics().observe_error(
                    crate::PROTOCOL,
                    "Fetch",
                    &code_name(p.error_code),
                );
            }
        }
    }
}

/// One pass over every requested partition. Returns (response, record bytes, any error).
fn read_all(
    ctx: &Ctx<'_>,
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
) -> (Pass, usize, bool) {
    let mut splices = Vec::new();
    let mut sent: Vec<(String, u64, u64)> = Vec::new();
    let mut remaining = max_bytes;
    let mut total = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(wanted.len());
    for t in wanted {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for &(index, offset, part_max) in &t.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let Some(name) = &t.name else {
                any_error = true;
                parts.push(pd.with_error_code(ResponseError::UnknownTopicId.code()));
                continue;
            };
            let budget = (part_max.max(0) as usize).min(remaining);
            match ctx
                .coord
                .fetch_isolated(name, index, offset, budget, read_committed)
            {
                Ok(iso) => {
                    let f = iso.fetched;
                    let aborted = iso
                        .aborted
                        .into_iter()
                        .map(|(producer_id, first_offset)| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(producer_id))
                                .with_first_offset(first_offset)
                        })
                        .collect();
                    // Only the first non-empty partition may exceed the budget (one
                    // oversized batch, so consumers always progress).
                    let keep = f.bytes > 0 && (total == 0 || f.bytes <= remaining);
                    pd = pd
                        .with_error_code(NONE)
                        .with_high_watermark(f.high_watermark)
                        .with_last_stable_offset(iso.last_stable_offset)
                        .with_log_start_offset(if ctx.version >= 5 {
                            f.log_start_offset
                        } else {
                            -1
                        })
                        .with_aborted_transactions(Some(aborted));
                    if keep {
                        sent.push((name.clone(), f.bytes as u64, f.records));
                        total += f.bytes;
                        remaining = remaining.saturating_sub(f.bytes);
                        pd = pd.with_records(Some(match segmented::placeholder(f.bytes) {
                            Some(p) => {
                                splices.push(f.chunks);
                                p
                            }
                            None => concat(f.chunks, f.bytes),
                        }));
                    } else {
                        pd = pd.with_records(Some(Bytes::new()));
                    }
                }
                Err(e) => {
                    any_error = true;
                    let code = error_code(&e);
                    if let kafka_coord::CoordError::Broker(
                        broker::BrokerError::OffsetOutOfRange {
                            log_start, log_end, ..
                        },
                    ) = e
                    {
                        pd = pd
                            .with_high_watermark(log_end)
                            .with_last_stable_offset(log_end)
                            .with_log_start_offset(if ctx.version >= 5 { log_start } else { -1 });
                    }
                    pd = pd.with_error_code(code).with_records(Some(Bytes::new()));
                }
            }
            parts.push(pd);
        }
        for &index in &t.refused {
            any_error = true;
            parts.push(
                PartitionData::default()
                    .with_partition_index(index)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_error_code(partition_limit::CODE)
                    .with_records(Some(Bytes::new())),
            );
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic_name(if ctx.version >= 13 {
                    String::new()
                } else {
                    t.wire_name.clone()
                }))
                .with_topic_id(t.topic_id)
                .with_partitions(parts),
        );
    }
    let resp = FetchResponse::default()
        .with_error_code(NONE)
        .with_session_id(0)
        .with_responses(topics);
    (
        Pass {
            reply: (resp, splices),
            sent,
        },
        total,
        any_error,
    )
}

/// One `Bytes` for the records field: no copy when storage returned a single chunk.
fn concat(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(total);
    for c in chunks {
        buf.extend_from_slice(&c);
    }
    buf.freeze()
}
