//! `sluice produce TOPIC`: one record per input line, batched per partition, sent to each
//! partition's leader. Prints how many records the broker acknowledged, also when it fails
//! part way, so a caller knows exactly what is durable.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use kafka_protocol::messages::{
    ProduceRequest,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::records::Compression;
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::args::{CompressionArg, InputFormat, OutputFormat, ProduceArgs};
use super::exit::usage;
use super::{Ctx, parse_kv};
use kafka_client::ops::{PartitionInfo, partitions_in};
use kafka_client::records::{OutRecord, encode_batch, partition_for_key};
use kafka_client::{Client, ClientError, topic_name};

/// Retriable produce errors: leadership moved or the topic is still being created.
const RETRIABLE: &[i16] = &[3, 5, 6, 7, 13];
const MAX_ATTEMPTS: u32 = 5;

struct Producer {
    topic: String,
    acks: i16,
    compression: Compression,
    partitions: Vec<PartitionInfo>,
    pending: BTreeMap<i32, Vec<OutRecord>>,
    pending_records: usize,
    pending_bytes: usize,
    sticky: usize,
    /// Records the broker confirmed (acks=1/all).
    acked: u64,
    acked_bytes: u64,
    /// Records written with acks=0 (no confirmation exists).
    unconfirmed: u64,
    /// partition → (first offset, last offset) acknowledged.
    offsets: BTreeMap<i32, (i64, i64)>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn parse_acks(s: &str) -> anyhow::Result<i16> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" | "leader" => Ok(1),
        "0" | "none" => Ok(0),
        other => Err(usage(format!("--acks `{other}` must be all, -1, 1 or 0"))),
    }
}

fn compression(c: CompressionArg) -> Compression {
    match c {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    }
}

/// One record from a JSON input line, in the shape `consume --format json` prints:
/// `{"key": "k", "value": "v", "headers": {"h": "x"}, "partition": 0, "timestamp": 1700000000000}`
/// (every field optional; other fields such as topic and offset are ignored).
pub fn parse_json_record(text: &str) -> anyhow::Result<(OutRecord, Option<i32>)> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("not JSON ({e})"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("expected a JSON object"))?;
    let bytes_of = |field: &str| -> anyhow::Result<Option<Bytes>> {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(Bytes::copy_from_slice(s.as_bytes()))),
            // Any other JSON value is sent as its JSON text.
            Some(other) => Ok(Some(Bytes::from(other.to_string()))),
        }
    };
    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(h)) => {
            for (k, v) in h {
                let value = match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
                    other => Some(Bytes::from(other.to_string())),
                };
                headers.push((k.clone(), value));
            }
        }
        Some(_) => anyhow::bail!("\"headers\" must be an object"),
    }
    let partition = match obj.get("partition") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| anyhow::anyhow!("\"partition\" must be an integer"))?,
        ),
    };
    let timestamp_ms = match obj.get("timestamp") {
        None | Some(serde_json::Value::Null) => now_ms(),
        Some(t) => t
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("\"timestamp\" must be milliseconds since the epoch"))?,
    };
    Ok((
        OutRecord {
            key: bytes_of("key")?,
            value: bytes_of("value")?,
            headers,
            timestamp_ms,
        },
        partition,
    ))
}

/// Splits an input line into key and value.
pub fn split_line(line: &str, separator: Option<&str>) -> (Option<Bytes>, Bytes) {
    match separator.and_then(|sep| line.split_once(sep)) {
        Some((k, v)) => (
            Some(Bytes::copy_from_slice(k.as_bytes())),
            Bytes::copy_from_slice(v.as_bytes()),
        ),
        None => (None, Bytes::copy_from_slice(line.as_bytes())),
    }
}

pub async fn run(ctx: &Ctx, args: ProduceArgs) -> anyhow::Result<i32> {
    let acks = parse_acks(&args.acks)?;
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|h| parse_kv(h, "--header").map(|(k, v)| (k, Some(Bytes::from(v)))))
        .collect::<anyhow::Result<_>>()?;
    if args.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1"));
    }
    let mut client = ctx.client().await?;
    let partitions = resolve_partitions(&mut client, &args.topic).await?;
    if let Some(p) = args.partition
        && !partitions.iter().any(|i| i.partition == p)
    {
        return Err(usage(format!(
            "topic {} has no partition {p} (it has {})",
            args.topic,
            partitions.len()
        )));
    }
    let mut producer = Producer {
        topic: args.topic.clone(),
        acks,
        compression: compression(args.compression),
        partitions,
        pending: BTreeMap::new(),
        pending_records: 0,
        pending_bytes: 0,
        sticky: 0,
        acked: 0,
        acked_bytes: 0,
        unconfirmed: 0,
        offsets: BTreeMap::new(),
    };

    let (reader, progress): (Box<dyn AsyncBufRead + Unpin + Send>, Option<ProgressBar>) =
        match &args.file {
            Some(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| usage(format!("cannot open {}: {e}", path.display())))?;
                let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
                let bar = ProgressBar::new(len);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                (Box::new(BufReader::new(file)), Some(bar))
            }
            None => {
                if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    eprintln!("type records, one per line; Ctrl-D sends the rest and exits");
                }
                (Box::new(BufReader::new(tokio::io::stdin())), None)
            }
        };

    let result = pump(
        &mut client,
        &mut producer,
        &args,
        &headers,
        reader,
        progress.as_ref(),
    )
    .await;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    report(ctx.output, &producer, result.as_ref().err());
    result.map(|_| 0)
}

async fn pump(
    client: &mut Client,
    producer: &mut Producer,
    args: &ProduceArgs,
    headers: &[(String, Option<Bytes>)],
    mut reader: Box<dyn AsyncBufRead + Unpin + Send>,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<()> {
    let linger = Duration::from_millis(args.linger_ms);
    let mut line = String::new();
    let mut line_no: u64 = 0;
    loop {
        line.clear();
        // With records waiting, send them if the input pauses for `linger` (a person typing,
        // a slow pipe). read_line keeps partial input in `line` when the wait times out.
        let n = loop {
            if producer.pending_records == 0 {
                break reader.read_line(&mut line).await?;
            }
            match tokio::time::timeout(linger, reader.read_line(&mut line)).await {
                Ok(r) => break r?,
                Err(_) => producer.flush(client).await?,
            }
        };
        if n == 0 && line.is_empty() {
            break;
        }
        if let Some(bar) = progress {
            bar.inc(n as u64);
        }
        line_no += 1;
        let text = line.strip_suffix('\n').unwrap_or(&line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let (record, explicit) = match args.input {
            InputFormat::Line => {
                let (key, value) = split_line(text, args.key_separator.as_deref());
                let record = OutRecord {
                    key,
                    value: Some(value),
                    headers: headers.to_vec(),
                    timestamp_ms: now_ms(),
                };
                (record, args.partition)
            }
            InputFormat::Json => {
                if text.trim().is_empty() {
                    continue;
                }
                let (mut record, partition) = parse_json_record(text)
                    .map_err(|e| usage(format!("input line {line_no}: {e}")))?;
                record.headers.extend(headers.iter().cloned());
                (record, partition.or(args.partition))
            }
        };
        if let Some(p) = explicit
            && !producer.partitions.iter().any(|i| i.partition == p)
        {
            return Err(usage(format!(
                "input line {line_no}: topic {} has no partition {p}",
                producer.topic
            )));
        }
        let partition = producer.choose_partition(explicit, record.key.as_deref());
        let size = record.value.as_ref().map_or(0, |v| v.len())
            + record.key.as_ref().map_or(0, |k| k.len())
            + 16;
        producer.pending.entry(partition).or_default().push(record);
        producer.pending_records += 1;
        producer.pending_bytes += size;
        if producer.pending_records >= args.batch_size || producer.pending_bytes >= args.batch_bytes
        {
            producer.flush(client).await?;
            if let Some(bar) = progress {
                bar.set_message(format!("{} acknowledged", producer.acked));
            }
        }
    }
    producer.flush(client).await
}

async fn resolve_partitions(
    client: &mut Client,
    topic: &str,
) -> anyhow::Result<Vec<PartitionInfo>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        // allow_auto_create: producing to a new topic creates it where the broker allows.
        let md = client.metadata(Some(&[topic.to_string()]), true).await?;
        match partitions_in(&md, topic) {
            Ok(ps) if !ps.is_empty() && ps.iter().all(|p| p.leader >= 0) => return Ok(ps),
            Ok(_) if attempt < MAX_ATTEMPTS => {}
            Err(e) if attempt < MAX_ATTEMPTS && matches!(e.code(), Some(3 | 5)) => {}
            Err(e) => return Err(e.into()),
            Ok(_) => {
                return Err(anyhow::anyhow!(
                    "topic {topic} has no partitions with a leader"
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
    }
}

impl Producer {
    fn choose_partition(&mut self, explicit: Option<i32>, key: Option<&[u8]>) -> i32 {
        if let Some(p) = explicit {
            return p;
        }
        let n = self.partitions.len().max(1);
        match key {
            Some(k) => partition_for_key(k, n as i32),
            None => self.partitions[self.sticky % n].partition,
        }
    }

    /// Sends every pending batch and waits for the acknowledgements.
    async fn flush(&mut self, client: &mut Client) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batches: BTreeMap<i32, (Vec<OutRecord>, Bytes)> = BTreeMap::new();
        for (p, records) in std::mem::take(&mut self.pending) {
            let bytes = encode_batch(&records, self.compression)?;
            batches.insert(p, (records, bytes));
        }
        self.pending_records = 0;
        self.pending_bytes = 0;
        self.sticky = self.sticky.wrapping_add(1);
        let mut attempt = 0;
        while !batches.is_empty() {
            attempt += 1;
            let failed = self.send(client, &batches).await?;
            batches.retain(|p, _| failed.iter().any(|(fp, _, _)| fp == p));
            if let Some((p, code, message)) = failed.first().cloned() {
                if attempt >= MAX_ATTEMPTS || !RETRIABLE.contains(&code) {
                    return Err(ClientError::broker(
                        format!("produce to {}/{p}", self.topic),
                        code,
                        message,
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                let md = client
                    .metadata(Some(std::slice::from_ref(&self.topic)), false)
                    .await?;
                if let Ok(ps) = partitions_in(&md, &self.topic)
                    && !ps.is_empty()
                {
                    self.partitions = ps;
                }
            }
        }
        Ok(())
    }

    /// One ProduceRequest per leader; returns the partitions that failed.
    async fn send(
        &mut self,
        client: &mut Client,
        batches: &BTreeMap<i32, (Vec<OutRecord>, Bytes)>,
    ) -> anyhow::Result<Vec<(i32, i16, Option<String>)>> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in batches.keys() {
            let leader = self
                .partitions
                .iter()
                .find(|i| i.partition == *p)
                .map(|i| i.leader)
                .unwrap_or(-1);
            by_leader.entry(leader).or_default().push(*p);
        }
        let mut failed = Vec::new();
        for (leader, ps) in by_leader {
            if leader < 0 {
                failed.extend(ps.iter().map(|p| (*p, 5, None)));
                continue;
            }
            let mut topic = TopicProduceData::default();
            topic.name = topic_name(&self.topic);
            topic.partition_data = ps
                .iter()
                .map(|p| {
                    let mut d = PartitionProduceData::default();
                    d.index = *p;
                    d.records = Some(batches[p].1.clone());
                    d
                })
                .collect();
            let mut request = ProduceRequest::default();
            request.acks = self.acks;
            request.timeout_ms = 30_000;
            request.topic_data = vec![topic];
            let conn = client.node(leader).await?;
            if self.acks == 0 {
                conn.send_no_response(&request).await?;
                for p in &ps {
                    self.unconfirmed += batches[p].0.len() as u64;
                }
                continue;
            }
            let (response, _) = conn.send(&request).await?;
            for t in response.responses {
                for pr in t.partition_responses {
                    let Some((records, bytes)) = batches.get(&pr.index) else {
                        continue;
                    };
                    if pr.error_code != 0 {
                        failed.push((
                            pr.index,
                            pr.error_code,
                            pr.error_message.map(|m| m.to_string()),
                        ));
                        continue;
                    }
                    let n = records.len() as u64;
                    self.acked += n;
                    self.acked_bytes += bytes.len() as u64;
                    let last = pr.base_offset + n as i64 - 1;
                    self.offsets
                        .entry(pr.index)
                        .and_modify(|e| e.1 = last)
                        .or_insert((pr.base_offset, last));
                }
            }
        }
        Ok(failed)
    }
}

fn report(output: OutputFormat, p: &Producer, error: Option<&anyhow::Error>) {
    if output == OutputFormat::Json {
        let value = json!({
            "topic": p.topic,
            "acknowledged": p.acked,
            "bytes": p.acked_bytes,
            "sent_without_acks": p.unconfirmed,
            "partitions": p.offsets.iter().map(|(part, (first, last))| json!({
                "partition": part, "first_offset": first, "last_offset": last
            })).collect::<Vec<_>>(),
            "error": error.map(|e| format!("{e:#}")),
        });
        crate::outln!("{value}");
    } else if p.unconfirmed > 0 {
        eprintln!(
            "sent {} record{} to {} with acks=0 (the broker does not confirm them){}",
            p.unconfirmed,
            if p.unconfirmed == 1 { "" } else { "s" },
            p.topic,
            if error.is_some() {
                " before the error"
            } else {
                ""
            }
        );
    } else if error.is_some() {
        eprintln!(
            "acknowledged {} record{} to {} before the error",
            p.acked,
            if p.acked == 1 { "" } else { "s" },
            p.topic
        );
    } else {
        let parts: Vec<String> = p
            .offsets
            .iter()
            .map(|(part, (first, last))| format!("{part}:{first}..={last}"))
            .collect();
        eprintln!(
            "produced {} record{} to {}{}",
            p.acked,
            if p.acked == 1 { "" } else { "s" },
            p.topic,
            if parts.is_empty() {
                String::new()
            } else {
                format!(" (offsets {})", parts.join(" "))
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_first_separator() {
        assert_eq!(
            split_line("k:v:w", Some(":")),
            (Some(Bytes::from_static(b"k")), Bytes::from_static(b"v:w"))
        );
        assert_eq!(
            split_line("plain", Some(":")),
            (None, Bytes::from_static(b"plain"))
        );
        assert_eq!(split_line("a:b", None), (None, Bytes::from_static(b"a:b")));
    }

    #[test]
    fn json_lines_round_trip_consume_output() {
        let (r, p) = parse_json_record(
            r#"{"topic":"t","partition":2,"offset":5,"timestamp":17,"key":"k","value":"v","headers":{"a":"b","n":null}}"#,
        )
        .unwrap();
        assert_eq!(p, Some(2));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(r.timestamp_ms, 17);
        assert_eq!(r.headers.len(), 2);
        let (r, p) = parse_json_record(r#"{"value":{"nested":1}}"#).unwrap();
        assert_eq!(p, None);
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&br#"{"nested":1}"#[..]));
        assert!(parse_json_record("[1]").is_err());
        assert!(parse_json_record(r#"{"partition":"x"}"#).is_err());
    }

    #[test]
    fn acks_accept_kafka_spellings() {
        assert_eq!(parse_acks("all").unwrap(), -1);
        assert_eq!(parse_acks("1").unwrap(), 1);
        assert!(parse_acks("2").is_err());
    }
}
