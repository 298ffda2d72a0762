//! `sluice consume TOPIC`: fetch from partition leaders and print records, alone (positions from
//! `--from`) or as a member of a consumer group (positions from committed offsets, committed
//! as records are printed).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use kafka_protocol::records::Record;
use serde_json::json;

use super::Ctx;
use super::args::{ConsumeArgs, OutputFormat, RecordFormat};
use super::exit::{EXIT_TIMEOUT, usage};
use kafka_client::consumer_group::{GroupMember, Offsets, fetch_offsets};
use kafka_client::ops::{
    EARLIEST, LATEST, PartitionInfo, fetch, list_offsets, topic_partitions, watermarks,
};
use kafka_client::{Client, ClientError};

/// Where to start reading a partition that has no committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

pub fn parse_from(args: &ConsumeArgs) -> anyhow::Result<StartFrom> {
    if let Some(o) = args.offset {
        return Ok(StartFrom::Offset(o));
    }
    if let Some(t) = args.timestamp {
        return Ok(StartFrom::Timestamp(t));
    }
    let s = args.from.trim();
    let (kind, arg) = match s.split_once([':', ' ', '=']) {
        Some((k, a)) => (k, Some(a.trim())),
        None => (s, None),
    };
    let num = |what: &str| -> anyhow::Result<i64> {
        arg.and_then(|a| a.parse().ok()).ok_or_else(|| {
            usage(format!(
                "--from {what} needs a number, e.g. --from {what}:42"
            ))
        })
    };
    match kind {
        "earliest" | "beginning" | "start" => Ok(StartFrom::Earliest),
        "latest" | "end" => Ok(StartFrom::Latest),
        "offset" => Ok(StartFrom::Offset(num("offset")?)),
        "timestamp" | "time" => Ok(StartFrom::Timestamp(num("timestamp")?)),
        _ => Err(usage(format!(
            "--from `{s}`: use earliest, latest, offset:N or timestamp:MS"
        ))),
    }
}

/// Record bytes as text (invalid UTF-8 replaced), `None` for a null key/value.
fn lossy(b: Option<&bytes::Bytes>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

pub fn format_record(
    topic: &str,
    partition: i32,
    r: &Record,
    format: RecordFormat,
    separator: &str,
) -> String {
    match format {
        RecordFormat::Value => lossy(r.value.as_ref()).unwrap_or_default(),
        RecordFormat::KeyValue => format!(
            "{}{separator}{}",
            lossy(r.key.as_ref()).unwrap_or_default(),
            lossy(r.value.as_ref()).unwrap_or_default()
        ),
        RecordFormat::Json => {
            // Fields in a fixed, readable order (serde_json maps sort keys).
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(lossy(v.as_ref()))))
                .collect();
            format!(
                "{{\"topic\":{},\"partition\":{partition},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":{}}}",
                json!(topic),
                r.offset,
                r.timestamp,
                json!(lossy(r.key.as_ref())),
                json!(lossy(r.value.as_ref())),
                serde_json::Value::Object(headers)
            )
        }
    }
}

struct Consumer {
    topic: String,
    format: RecordFormat,
    separator: String,
    /// partition → next offset to fetch.
    positions: BTreeMap<i32, i64>,
    /// partition → max bytes per fetch (grows when one batch does not fit).
    max_bytes: BTreeMap<i32, i32>,
    partitions: Vec<PartitionInfo>,
    printed: u64,
    count: Option<u64>,
}

pub async fn run(ctx: &Ctx, args: ConsumeArgs) -> anyhow::Result<i32> {
    let from = parse_from(&args)?;
    if args.group.is_some() && args.partition.is_some() {
        return Err(usage(
            "--partition cannot be combined with --group (the group assigns partitions)",
        ));
    }
    let mut client = ctx.client().await?;
    let all = topic_partitions(&mut client, &args.topic).await?;
    let mut consumer = Consumer {
        topic: args.topic.clone(),
        format: args.format.unwrap_or(if ctx.output == OutputFormat::Json {
            RecordFormat::Json
        } else {
            RecordFormat::Value
        }),
        separator: args.separator.clone(),
        positions: BTreeMap::new(),
        max_bytes: BTreeMap::new(),
        partitions: Vec::new(),
        printed: 0,
        count: args.count,
    };
    let mut member = match &args.group {
        Some(g) => Some(GroupMember::join(&mut client, g, vec![args.topic.clone()]).await?),
        None => None,
    };
    let wanted: Vec<PartitionInfo> = match (&member, args.partition) {
        (Some(m), _) => assigned(&all, m, &args.topic),
        (None, Some(p)) => {
            let only: Vec<PartitionInfo> =
                all.iter().filter(|i| i.partition == p).copied().collect();
            if only.is_empty() {
                return Err(usage(format!(
                    "topic {} has no partition {p} (it has {})",
                    args.topic,
                    all.len()
                )));
            }
            only
        }
        (None, None) => all.clone(),
    };
    consumer
        .start(&mut client, member.as_ref(), wanted, from)
        .await?;

    let timeout = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let stop = super::interrupted();
    tokio::pin!(stop);
    let outcome: anyhow::Result<i32> = loop {
        if consumer.done() {
            break Ok(0);
        }
        if let Some(t) = timeout
            && last_record.elapsed() >= t
        {
            break Ok(if consumer.count.is_some() {
                EXIT_TIMEOUT
            } else {
                0
            });
        }
        let wait_ms = timeout
            .map(|t| {
                t.saturating_sub(last_record.elapsed())
                    .as_millis()
                    .clamp(1, 500) as i32
            })
            .unwrap_or(500);
        let round = tokio::select! {
            r = consumer.fetch_round(&mut client, wait_ms) => r,
            _ = &mut stop => {
                // The fetch was abandoned mid-request: start the goodbye on fresh connections.
                client.reset_connections();
                break Ok(0);
            }
        };
        match round {
            Ok(0) => {}
            Ok(_) => {
                last_record = Instant::now();
                if let Some(m) = &member {
                    m.commit(&mut client, &consumer.commit_offsets()).await?;
                }
            }
            Err(e) => break Err(e),
        }
        if let Some(m) = member.as_mut()
            && m.heartbeat_if_due(&mut client).await?
        {
            m.commit(&mut client, &consumer.commit_offsets()).await.ok();
            m.rejoin(&mut client).await?;
            let parts = assigned(&all, m, &args.topic);
            consumer.start(&mut client, Some(m), parts, from).await?;
        }
    };
    if let Some(m) = &member {
        let _ = m.commit(&mut client, &consumer.commit_offsets()).await;
        let _ = m.leave(&mut client).await;
    }
    let _ = std::io::stdout().flush();
    if let Ok(code) = &outcome
        && *code == EXIT_TIMEOUT
    {
        eprintln!(
            "timed out after {} ms with {} of {} records",
            args.timeout_ms.unwrap_or(0),
            consumer.printed,
            consumer.count.unwrap_or(0)
        );
    }
    outcome
}

fn assigned(all: &[PartitionInfo], m: &GroupMember, topic: &str) -> Vec<PartitionInfo> {
    let mine = m.assignment.get(topic).cloned().unwrap_or_default();
    all.iter()
        .filter(|p| mine.contains(&p.partition))
        .copied()
        .collect()
}

impl Consumer {
    fn done(&self) -> bool {
        self.count.is_some_and(|c| self.printed >= c)
    }

    fn commit_offsets(&self) -> Offsets {
        self.positions
            .iter()
            .map(|(p, o)| ((self.topic.clone(), *p), *o))
            .collect()
    }

    /// Sets the starting position of each partition: committed offset if any, else `from`.
    async fn start(
        &mut self,
        client: &mut Client,
        member: Option<&GroupMember>,
        partitions: Vec<PartitionInfo>,
        from: StartFrom,
    ) -> anyhow::Result<()> {
        self.positions.clear();
        let committed = match member {
            Some(m) if !partitions.is_empty() => {
                let ask = BTreeMap::from([(
                    self.topic.clone(),
                    partitions.iter().map(|p| p.partition).collect(),
                )]);
                fetch_offsets(client, &m.group, Some(&ask)).await?
            }
            _ => Offsets::new(),
        };
        let need: Vec<PartitionInfo> = partitions
            .iter()
            .filter(|p| !committed.contains_key(&(self.topic.clone(), p.partition)))
            .copied()
            .collect();
        let resolved = match from {
            StartFrom::Offset(o) => need.iter().map(|p| (p.partition, o)).collect(),
            _ => self.resolve(client, &need, from).await?,
        };
        for p in &partitions {
            let pos = committed
                .get(&(self.topic.clone(), p.partition))
                .copied()
                .or_else(|| resolved.get(&p.partition).copied())
                .unwrap_or(0);
            self.positions.insert(p.partition, pos);
            self.max_bytes.entry(p.partition).or_insert(1024 * 1024);
        }
        self.partitions = partitions;
        Ok(())
    }

    async fn resolve(
        &mut self,
        client: &mut Client,
        partitions: &[PartitionInfo],
        from: StartFrom,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ts = match from {
            StartFrom::Earliest => EARLIEST,
            StartFrom::Latest => LATEST,
            StartFrom::Timestamp(t) => t,
            StartFrom::Offset(o) => {
                return Ok(partitions.iter().map(|p| (p.partition, o)).collect());
            }
        };
        let found = list_offsets(client, &self.topic, partitions, |_| ts).await?;
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for p in partitions {
            match found.get(&p.partition).copied().flatten() {
                Some((o, _)) => {
                    out.insert(p.partition, o);
                }
                None => missing.push(*p),
            }
        }
        // No record at or after the timestamp: start at the end.
        if !missing.is_empty() {
            let ends = list_offsets(client, &self.topic, &missing, |_| LATEST).await?;
            for p in missing {
                let end = ends.get(&p.partition).copied().flatten().map_or(0, |x| x.0);
                out.insert(p.partition, end);
            }
        }
        Ok(out)
    }

    /// One fetch per leader; prints what arrived. Returns the number of records printed.
    async fn fetch_round(&mut self, client: &mut Client, wait_ms: i32) -> anyhow::Result<u64> {
        if self.partitions.is_empty() {
            tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
            return Ok(0);
        }
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64, i32)>> = BTreeMap::new();
        for p in &self.partitions {
            by_leader.entry(p.leader).or_default().push((
                p.partition,
                self.positions[&p.partition],
                self.max_bytes[&p.partition],
            ));
        }
        let mut printed = 0;
        let stdout = std::io::stdout();
        for (leader, wants) in by_leader {
            let results = fetch(client, leader, &self.topic, &wants, wait_ms).await?;
            let mut out = stdout.lock();
            for f in results {
                // Only partitions we asked for (a confused broker must not crash us).
                let Some(&pos) = self.positions.get(&f.partition) else {
                    continue;
                };
                match f.error_code {
                    0 => {}
                    1 => {
                        // OFFSET_OUT_OF_RANGE: before the log start (deleted by retention)
                        // or past the end: move to the nearest valid offset.
                        let info: Vec<PartitionInfo> = self
                            .partitions
                            .iter()
                            .filter(|p| p.partition == f.partition)
                            .copied()
                            .collect();
                        drop(out);
                        let marks = watermarks(client, &self.topic, &info).await?;
                        if let Some(&(start, end)) = marks.get(&f.partition) {
                            let moved = pos.clamp(start, end);
                            eprintln!(
                                "offset {pos} of {}/{} is out of range {start}..{end}; continuing at {moved}",
                                self.topic, f.partition
                            );
                            self.positions.insert(f.partition, moved);
                        }
                        out = stdout.lock();
                        continue;
                    }
                    code => {
                        return Err(ClientError::broker(
                            format!("fetch {}/{}", self.topic, f.partition),
                            code,
                            None,
                        )
                        .into());
                    }
                }
                let mut advanced = false;
                for r in f.records.iter().filter(|r| r.offset >= pos) {
                    if self.done() {
                        break;
                    }
                    let line =
                        format_record(&self.topic, f.partition, r, self.format, &self.separator);
                    if writeln!(out, "{line}").is_err() {
                        // stdout closed (e.g. piped into `head`): stop quietly.
                        self.count = Some(self.printed);
                        return Ok(printed);
                    }
                    self.printed += 1;
                    printed += 1;
                    self.positions.insert(f.partition, r.offset + 1);
                    advanced = true;
                }
                if !advanced && f.records.is_empty() && f.raw_bytes > 0 && pos < f.high_watermark {
                    // A batch bigger than max_bytes came back cut: ask for more next time.
                    let mb = self.max_bytes.entry(f.partition).or_insert(1024 * 1024);
                    *mb = mb.saturating_mul(2).min(256 * 1024 * 1024);
                }
            }
            let _ = out.flush();
        }
        Ok(printed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ConsumeArgs {
        let mut argv = vec!["sluice", "consume", "t"];
        argv.extend_from_slice(extra);
        match crate::cli::args::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::args::Command::Consume(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn from_accepts_every_spelling() {
        assert_eq!(parse_from(&args(&[])).unwrap(), StartFrom::Earliest);
        assert_eq!(
            parse_from(&args(&["--from", "latest"])).unwrap(),
            StartFrom::Latest
        );
        assert_eq!(
            parse_from(&args(&["--from", "offset:7"])).unwrap(),
            StartFrom::Offset(7)
        );
        assert_eq!(
            parse_from(&args(&["--from", "timestamp 9"])).unwrap(),
            StartFrom::Timestamp(9)
        );
        assert_eq!(
            parse_from(&args(&["--offset", "3"])).unwrap(),
            StartFrom::Offset(3)
        );
        assert!(parse_from(&args(&["--from", "sometime"])).is_err());
    }
}
