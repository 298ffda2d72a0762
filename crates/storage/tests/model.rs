//! Property test: random appends, reads, restarts (clean and not), truncations and
//! delete_records against a simple in-memory model. Offsets, order and bytes always agree, and
//! so do key lookups (per partition and across them, through a tiny hash index that rolls and
//! collides constantly) and time-range lookups.
mod kit;

use kit::*;
use proptest::prelude::*;
use sluice_storage::{PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

const PARTS: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    Append {
        p: u32,
        batches: Vec<(usize, usize)>,
    },
    Read {
        p: u32,
        at: u8,
        max: usize,
    },
    Restart {
        clean: bool,
    },
    Truncate {
        at: u8,
    },
    DeleteRecords {
        p: u32,
        at: u8,
    },
    Flush,
    LookupKey {
        p: u32,
        key: u8,
    },
    LookupKeys {
        key: u8,
    },
    TimeRange {
        p: u32,
        from: u8,
        len: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PARTS, prop::collection::vec((1usize..4, 0usize..700), 1..3))
            .prop_map(|(p, batches)| Op::Append { p, batches }),
        4 => (0..PARTS, any::<u8>(), 1usize..3000).prop_map(|(p, at, max)| Op::Read { p, at, max }),
        1 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
        1 => any::<u8>().prop_map(|at| Op::Truncate { at }),
        1 => (0..PARTS, any::<u8>()).prop_map(|(p, at)| Op::DeleteRecords { p, at }),
        1 => Just(Op::Flush),
        1 => (0..PARTS, 0u8..4).prop_map(|(p, key)| Op::LookupKey { p, key }),
        1 => (0u8..4).prop_map(|key| Op::LookupKeys { key }),
        1 => (0..PARTS, any::<u8>(), 0u8..8).prop_map(|(p, from, len)| Op::TimeRange { p, from, len }),
    ]
}

#[derive(Clone, Default)]
struct Part {
    /// (base offset, batch bytes with base offset set, record count); a batch's records all
    /// have the timestamp in its header.
    batches: Vec<(i64, Vec<u8>, usize)>,
    log_start: i64,
    log_end: i64,
}

struct Call {
    position: u64,
    p: u32,
    first_batch: usize,
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = 8 * 1024;
    c.cq_entries_per_file = 8;
    c.hash_index_slots = 3;
    c.hash_index_entries_per_file = 16;
    c.background = false;
    c
}

fn open(dir: &std::path::Path) -> Store {
    let s = Store::open(config(dir)).unwrap();
    for p in 0..PARTS {
        let cfg = PartitionConfig {
            retention_ms: None,
            ..Default::default()
        };
        s.configure_partition(PartitionId(p), cfg).unwrap();
    }
    s
}

fn check_offsets(s: &Store, model: &[Part]) {
    for (p, m) in model.iter().enumerate() {
        let o = s.offsets(PartitionId(p as u32)).unwrap();
        assert_eq!((o.log_start, o.log_end), (m.log_start, m.log_end), "p{p}");
    }
}

#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut store = Some(open(dir.path()));
    let mut model = vec![Part::default(); PARTS as usize];
    let mut calls: Vec<Call> = Vec::new();
    let mut ts = 0i64;
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Append { p, batches } => {
                let m = &mut model[p as usize];
                let mut req = Vec::new();
                let mut pending = Vec::new();
                let mut next = m.log_end;
                for (n, vlen) in batches {
                    ts += 1;
                    let b = batch(n, vlen, ts);
                    req.extend_from_slice(&b);
                    pending.push((next, with_base(b, next), n));
                    next += n as i64;
                }
                let position = s.stats().write_position;
                let a = rt.block_on(s.append(PartitionId(p), bm(&req))).unwrap();
                assert_eq!((a.base_offset, a.last_offset), (m.log_end, next - 1));
                calls.push(Call {
                    position,
                    p,
                    first_batch: m.batches.len(),
                });
                m.batches.extend(pending);
                m.log_end = next;
            }
            Op::Read { p, at, max } => {
                let m = &model[p as usize];
                let span = (m.log_end - m.log_start + 1) as u64;
                let off = m.log_start + (at as u64 * span / 256) as i64;
                let r = s.read(PartitionId(p), off, max).unwrap();
                assert_eq!(
                    (r.log_start_offset, r.high_watermark),
                    (m.log_start, m.log_end)
                );
                let mut want: Vec<&[u8]> = Vec::new();
                let mut total = 0;
                for (base, b, n) in &m.batches {
                    if off >= base + *n as i64 {
                        continue;
                    }
                    if !want.is_empty() && total + b.len() > max {
                        break;
                    }
                    total += b.len();
                    want.push(b);
                    if total >= max {
                        break;
                    }
                }
                let got: Vec<&[u8]> = r.chunks.iter().map(|c| &c[..]).collect();
                assert_eq!(got, want, "read p{p} at {off} max {max}");
                let beyond = s.read(PartitionId(p), m.log_end + 1, max);
                assert!(matches!(beyond, Err(StorageError::OffsetOutOfRange { .. })));
            }
            Op::Restart { clean } => {
                let s = store.take().unwrap();
                if clean {
                    s.close().unwrap();
                }
                drop(s);
                store = Some(open(dir.path()));
            }
            Op::Truncate { at } => {
                if calls.is_empty() {
                    continue;
                }
                let k = at as usize % calls.len();
                s.truncate_to(calls[k].position).unwrap();
                for c in calls.drain(k..).rev() {
                    let m = &mut model[c.p as usize];
                    // The new end is the first dropped batch still live (batches wholly below
                    // the log start are already gone and do not move it).
                    let live = m.batches[c.first_batch..]
                        .iter()
                        .find(|(base, _, n)| base + *n as i64 > m.log_start)
                        .map(|(base, _, _)| *base);
                    if let Some(end) = live {
                        m.log_end = end;
                        m.log_start = m.log_start.min(end);
                    }
                    m.batches.truncate(c.first_batch);
                }
            }
            Op::DeleteRecords { p, at } => {
                let m = &mut model[p as usize];
                let span = (m.log_end - m.log_start + 1) as u64;
                let before = m.log_start + (at as u64 * span / 256) as i64;
                let got = s.delete_records(PartitionId(p), before).unwrap();
                m.log_start = m.log_start.max(before);
                assert_eq!(got, m.log_start);
            }
            Op::Flush => s.flush().unwrap(),
            Op::LookupKey { p, key } => {
                let m = &model[p as usize];
                let want: Vec<i64> = m
                    .batches
                    .iter()
                    .filter(|(_, _, n)| (key as usize) < *n)
                    .map(|(base, _, _)| base + key as i64)
                    .filter(|o| *o >= m.log_start)
                    .collect();
                let got = s
                    .lookup_key(PartitionId(p), format!("k{key}").as_bytes())
                    .unwrap();
                assert_eq!(got, want, "lookup k{key} in p{p}");
            }
            Op::LookupKeys { key } => {
                let mut want = Vec::new();
                for (p, m) in model.iter().enumerate() {
                    want.extend(
                        m.batches
                            .iter()
                            .filter(|(_, _, n)| (key as usize) < *n)
                            .map(|(base, _, _)| base + key as i64)
                            .filter(|o| *o >= m.log_start)
                            .map(|o| (PartitionId(p as u32), o)),
                    );
                }
                let all: Vec<PartitionId> = (0..PARTS).map(PartitionId).collect();
                let got = s.lookup_keys(&all, format!("k{key}").as_bytes()).unwrap();
                assert_eq!(got, want, "lookup k{key} everywhere");
            }
            Op::TimeRange { p, from, len } => {
                let m = &model[p as usize];
                let from = from as i64 % (ts + 2);
                let to = from + len as i64;
                let mut want = Vec::new();
                for (base, b, n) in &m.batches {
                    let t = i64::from_be_bytes(b[27..35].try_into().unwrap());
                    if t >= from && t <= to {
                        want.extend((*base..base + *n as i64).filter(|o| *o >= m.log_start));
                    }
                }
                let got = s.lookup_time_range(PartitionId(p), from, to).unwrap();
                assert_eq!(got, want, "time range [{from}, {to}] in p{p}");
            }
        }
        check_offsets(store.as_ref().unwrap(), &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn store_agrees_with_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
