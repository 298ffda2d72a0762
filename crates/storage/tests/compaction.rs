//! Log compaction against a model: random keyed appends (with tombstones, keyless records
//! and committed or aborted transactions) into a compacted partition next to a plain one,
//! compaction passes, passes stopped part-way (as a kill would stop them) or before their
//! committing checkpoint, restarts, cleaner passes and the clock moving on. After every
//! step: every record served is the record appended at its offset; every key's latest
//! committed value is served; keyless committed records are never removed; after a pass,
//! the compacted range holds one record per key and no aborted data; the plain partition
//! loses nothing.
mod kit;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Clock, ManualClock};
use kit::*;
use proptest::prelude::*;
use sluice_storage::batch::BatchHeader;
use sluice_storage::batch_builder::BatchBuilder;
use sluice_storage::{Compaction, PartitionConfig, PartitionId, Store, StoreConfig, records};

const COMPACTED: PartitionId = PartitionId(0);
const PLAIN: PartitionId = PartitionId(1);
const DELETE_RETENTION_MS: i64 = 1_000;

/// One record as appended: key (None: keyless), value (None: tombstone).
type Rec = (Option<u8>, Option<Vec<u8>>);

#[derive(Clone, Debug)]
enum Op {
    Append { p: bool, recs: Vec<Rec> },
    Txn { recs: Vec<Rec>, commit: bool },
    Compact,
    CompactStopped { at: u8 },
    CompactUncommitted,
    Restart { clean: bool },
    Tick { ms: u16 },
    Clean,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        prop_oneof![1 => Just(None), 9 => (0u8..8).prop_map(Some)],
        prop_oneof![1 => Just(None), 5 => (1usize..200).prop_map(|n| Some(vec![b'x'; n]))],
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), prop::collection::vec(rec(), 1..6))
            .prop_map(|(p, recs)| Op::Append { p, recs }),
        2 => (prop::collection::vec(rec(), 1..4), any::<bool>())
            .prop_map(|(recs, commit)| Op::Txn { recs, commit }),
        3 => Just(Op::Compact),
        1 => any::<u8>().prop_map(|at| Op::CompactStopped { at }),
        1 => Just(Op::CompactUncommitted),
        1 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
        1 => (0u16..700).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::Clean),
    ]
}

/// A record of the model: what was appended at its offset.
#[derive(Clone, Debug)]
struct Model {
    key: Option<u8>,
    value: Option<Vec<u8>>,
    aborted: bool,
}

#[derive(Default)]
struct Part {
    /// Offset → data record (control records are not in it).
    recs: HashMap<i64, Model>,
    log_end: i64,
    /// Base offset of the partition's last batch.
    last_batch: i64,
}

fn config(dir: &std::path::Path, clock: &ManualClock) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = 16 * 1024;
    c.cq_entries_per_file = 8;
    c.background = false;
    c.clean_min_run_bytes = 4096;
    c.clock = Arc::new(clock.clone());
    c
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> Store {
    let s = Store::open(config(dir, clock)).unwrap();
    let compacted = PartitionConfig {
        retention_ms: None,
        compaction: Some(Compaction {
            min_dirty_ppm: 0,
            delete_retention_ms: DELETE_RETENTION_MS,
            ..Compaction::default()
        }),
        ..PartitionConfig::default()
    };
    s.configure_partition(COMPACTED, compacted).unwrap();
    let plain = PartitionConfig {
        retention_ms: None,
        ..PartitionConfig::default()
    };
    s.configure_partition(PLAIN, plain).unwrap();
    s
}

fn build(b: &mut BatchBuilder, recs: &[Rec], ts: i64) -> Vec<u8> {
    for (k, v) in recs {
        let key = k.map(|k| vec![b'k', k]);
        b.record(key.as_deref(), v.as_deref(), ts, &[]);
    }
    b.build()
}

fn marker(pid: i64, commit: bool, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new()
        .producer(pid, 0, -1)
        .transactional()
        .control();
    let key = [0, 0, 0, u8::from(commit)];
    b.record(Some(&key), Some(&[0, 0, 0, 0, 0, 0]), ts, &[]);
    b.build()
}

/// Every batch of `p` from its log start: each one after the last (compaction leaves gaps).
fn read_with_gaps(s: &Store, p: PartitionId) -> Vec<bytes::Bytes> {
    let o = s.offsets(p).unwrap();
    let mut out = Vec::new();
    let mut off = o.log_start;
    while off < o.log_end {
        let r = s.read(p, off, 1 << 20).unwrap();
        assert!(
            !r.chunks.is_empty(),
            "{p}: nothing served at {off} < {}",
            o.log_end
        );
        for c in r.chunks {
            let h = BatchHeader::parse(&c).unwrap();
            assert!(
                h.last_offset() >= off,
                "{p}: batch ending {} served at {off}",
                h.last_offset()
            );
            off = h.last_offset() + 1;
            out.push(c);
        }
    }
    out
}

/// Every data record served from the start: (offset, key, value), and whether each came
/// from a control batch.
/// A served data record: offset, key, value.
type Served = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn served(s: &Store, p: PartitionId) -> Vec<Served> {
    let mut out = Vec::new();
    for chunk in read_with_gaps(s, p) {
        let h = BatchHeader::parse(&chunk).unwrap();
        h.verify_crc(0).unwrap();
        if h.is_control() {
            continue;
        }
        let data = records::records_bytes(&h, 1 << 24).unwrap();
        records::for_each_record(&h, &data, |r| {
            out.push((
                h.base_offset() + r.offset_delta as i64,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        })
        .unwrap();
    }
    out
}

fn key_bytes(k: Option<u8>) -> Option<Vec<u8>> {
    k.map(|k| vec![b'k', k])
}

/// The checks every step makes (module docs); `compacted`: a pass just completed.
fn check(s: &Store, model: &[Part; 2], compacted: bool) {
    for (p, m) in [(COMPACTED, &model[0]), (PLAIN, &model[1])] {
        let got = served(s, p);
        assert_eq!(s.offsets(p).unwrap().log_end, m.log_end, "{p} log end");
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "{p}: offsets ascend"
        );
        for (o, k, v) in &got {
            let want = m
                .recs
                .get(o)
                .unwrap_or_else(|| panic!("{p}: offset {o} served, never appended"));
            assert_eq!(
                (k, v),
                (&key_bytes(want.key), &want.value),
                "{p}: record at {o}"
            );
        }
        let have: std::collections::HashSet<i64> = got.iter().map(|r| r.0).collect();
        let mut latest: HashMap<u8, i64> = HashMap::new();
        for (o, r) in &m.recs {
            if r.aborted {
                continue;
            }
            match r.key {
                None => assert!(have.contains(o), "{p}: keyless record {o} removed"),
                Some(k) => {
                    let e = latest.entry(k).or_insert(*o);
                    *e = (*e).max(*o);
                }
            }
        }
        for (k, o) in latest {
            if m.recs[&o].value.is_some() || p == PLAIN {
                assert!(
                    have.contains(&o),
                    "{p}: latest value of key {k} (offset {o}) missing"
                );
            }
        }
        if p == PLAIN {
            let all = m.recs.values().filter(|r| !r.aborted).count();
            assert_eq!(got.len(), all, "the plain partition lost records");
        }
        if compacted && p == COMPACTED {
            let mut seen = std::collections::HashSet::new();
            for (o, k, _) in got.iter().filter(|r| r.0 < m.last_batch) {
                assert!(!m.recs[o].aborted, "aborted record {o} survived a pass");
                if let Some(k) = k {
                    assert!(
                        seen.insert(k.clone()),
                        "key {k:?} twice after a pass (at {o})"
                    );
                }
            }
        }
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut store = Some(open(dir.path(), &clock));
    let mut model: [Part; 2] = Default::default();
    let mut pid = 1000i64;
    for op in ops {
        let s = store.as_ref().unwrap();
        let now = clock.now_ms();
        let mut compacted = false;
        match op {
            Op::Append { p, recs } => {
                let (id, m) = if p {
                    (PLAIN, &mut model[1])
                } else {
                    (COMPACTED, &mut model[0])
                };
                let b = build(&mut BatchBuilder::new(), &recs, now);
                let a = rt.block_on(s.append(id, bm(&b))).unwrap();
                for (i, (k, v)) in recs.into_iter().enumerate() {
                    let model = Model {
                        key: k,
                        value: v,
                        aborted: false,
                    };
                    m.recs.insert(a.base_offset + i as i64, model);
                }
                m.last_batch = a.base_offset;
                m.log_end = a.last_offset + 1;
            }
            Op::Txn { recs, commit } => {
                pid += 1;
                let m = &mut model[0];
                let mut req = build(
                    &mut BatchBuilder::new().producer(pid, 0, 0).transactional(),
                    &recs,
                    now,
                );
                req.extend_from_slice(&marker(pid, commit, now));
                let a = rt.block_on(s.append(COMPACTED, bm(&req))).unwrap();
                for (i, (k, v)) in recs.iter().cloned().enumerate() {
                    let model = Model {
                        key: k,
                        value: v,
                        aborted: !commit,
                    };
                    m.recs.insert(a.base_offset + i as i64, model);
                }
                m.last_batch = a.last_offset;
                m.log_end = a.last_offset + 1;
            }
            Op::Compact => {
                s.compact().unwrap();
                compacted = true;
            }
            Op::CompactStopped { at } => {
                s.inject_compaction_fault(u64::from(at % 24) + 1);
                // Stopped unless it had fewer copies to make; then the store dies uncleanly.
                s.compact().unwrap();
                drop(store.take());
                store = Some(open(dir.path(), &clock));
            }
            Op::CompactUncommitted => {
                s.inject_compaction_fault(u64::MAX);
                s.compact().unwrap();
                drop(store.take());
                store = Some(open(dir.path(), &clock));
            }
            Op::Restart { clean } => {
                let s = store.take().unwrap();
                if clean {
                    s.close().unwrap();
                }
                drop(s);
                store = Some(open(dir.path(), &clock));
            }
            Op::Tick { ms } => clock.advance_ms(i64::from(ms)),
            Op::Clean => {
                s.enforce_retention().unwrap();
                s.clean().unwrap();
            }
        }
        check(store.as_ref().unwrap(), &model, compacted);
    }
    // The end: a committed pass survives a crash, and the cleaner frees what it replaced.
    let s = store.take().unwrap();
    s.compact().unwrap();
    check(&s, &model, true);
    drop(s);
    let s = open(dir.path(), &clock);
    check(&s, &model, false);
    s.enforce_retention().unwrap();
    s.clean().unwrap();
    check(&s, &model, false);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn compaction_keeps_every_keys_latest_value(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

/// Tombstones stay for `delete.retention.ms` after the pass that first keeps them, then a
/// pass removes them though nothing new was written; records keep their timestamps.
#[tokio::test]
async fn tombstones_go_after_their_delete_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let s = open(dir.path(), &clock);
    let t0 = clock.now_ms();
    let b = build(
        &mut BatchBuilder::new(),
        &[
            (Some(1), Some(b"a".to_vec())),
            (Some(2), Some(b"b".to_vec())),
            (Some(1), None),
        ],
        t0 - 5_000,
    );
    s.append(COMPACTED, bm(&b)).await.unwrap();
    let last = build(
        &mut BatchBuilder::new(),
        &[(Some(3), Some(b"c".to_vec()))],
        t0,
    );
    s.append(COMPACTED, bm(&last)).await.unwrap();
    assert_eq!(s.compact().unwrap().partitions, 1);
    let got = served(&s, COMPACTED);
    let keys: Vec<_> = got.iter().map(|r| (r.0, r.2.is_some())).collect();
    assert_eq!(
        keys,
        vec![(1, true), (2, false), (3, true)],
        "k1's tombstone kept"
    );
    // Rebased deltas: the rewritten batch still says when each record was produced.
    let first = read_with_gaps(&s, COMPACTED).remove(0);
    let h = BatchHeader::parse(&first).unwrap();
    let data = records::records_bytes(&h, 1 << 20).unwrap();
    records::for_each_record(&h, &data, |r| assert_eq!(r.timestamp, t0 - 5_000)).unwrap();
    assert_eq!(
        s.compact().unwrap().partitions,
        0,
        "nothing due before the horizon"
    );
    clock.advance_ms(DELETE_RETENTION_MS + 1);
    assert_eq!(
        s.compact().unwrap().partitions,
        1,
        "due once the horizon passed"
    );
    let keys: Vec<_> = served(&s, COMPACTED).iter().map(|r| r.0).collect();
    assert_eq!(keys, vec![1, 3]);
}

/// A transaction without its marker yet stops the cleanable range before its data: a
/// later abort still removes it, and nothing after it is compacted meanwhile.
#[tokio::test]
async fn an_open_transaction_is_not_compacted_past() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let s = open(dir.path(), &clock);
    let now = clock.now_ms();
    let plain = |k: u8, v: &[u8]| {
        build(
            &mut BatchBuilder::new(),
            &[(Some(k), Some(v.to_vec()))],
            now,
        )
    };
    s.append(COMPACTED, bm(&plain(1, b"old"))).await.unwrap();
    let txn = build(
        &mut BatchBuilder::new().producer(7, 0, 0).transactional(),
        &[(Some(1), Some(b"in-txn".to_vec()))],
        now,
    );
    s.append(COMPACTED, bm(&txn)).await.unwrap();
    s.append(COMPACTED, bm(&plain(2, b"x"))).await.unwrap();
    s.append(COMPACTED, bm(&plain(2, b"y"))).await.unwrap();
    s.append(COMPACTED, bm(&plain(3, b"z"))).await.unwrap();
    s.compact().unwrap();
    let got: Vec<_> = served(&s, COMPACTED).iter().map(|r| r.0).collect();
    assert_eq!(
        got,
        vec![0, 1, 2, 3, 4],
        "nothing at or after the open transaction goes"
    );
    s.append(COMPACTED, bm(&marker(7, false, now)))
        .await
        .unwrap();
    s.append(COMPACTED, bm(&plain(4, b"w"))).await.unwrap();
    s.compact().unwrap();
    let got: Vec<_> = served(&s, COMPACTED)
        .into_iter()
        .map(|r| (r.0, r.2.unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, b"old".to_vec()),
            (3, b"y".to_vec()),
            (4, b"z".to_vec()),
            (6, b"w".to_vec())
        ],
        "the aborted value is gone and k1 keeps its committed one"
    );
}

/// Compressed batches are rewritten in their codec and read back exactly.
#[tokio::test]
async fn compressed_batches_are_rewritten_in_their_codec() {
    for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let s = open(dir.path(), &clock);
        let recs: Vec<kit::Rec<'_>> = vec![
            (Some(b"a"), b"1", 10),
            (Some(b"b"), b"2", 11),
            (Some(b"a"), b"3", 12),
        ];
        s.append(COMPACTED, bm(&batch_with(codec, &recs)))
            .await
            .unwrap();
        s.append(COMPACTED, bm(&batch_with(codec, &[(Some(b"c"), b"4", 13)])))
            .await
            .unwrap();
        assert_eq!(s.compact().unwrap().records_removed, 1, "codec {codec}");
        let first = read_with_gaps(&s, COMPACTED).remove(0);
        let h = BatchHeader::parse(&first).unwrap();
        h.verify_crc(0).unwrap();
        assert_eq!(h.attributes() & 7, codec, "codec kept");
        assert_eq!((h.record_count(), h.last_offset_delta()), (2, 2));
        let got: Vec<_> = served(&s, COMPACTED)
            .into_iter()
            .map(|r| (r.0, r.2.unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![(1, b"2".to_vec()), (2, b"3".to_vec()), (3, b"4".to_vec())],
            "codec {codec}"
        );
    }
}

/// A lost checkpoint (damage, not a crash: it is replaced atomically) makes the open replay
/// the whole log: the commit marker of a pass lets it adopt the compacted partition, even
/// after the cleaner freed the records the pass replaced.
#[tokio::test]
async fn a_replay_without_checkpoint_adopts_committed_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let s = open(dir.path(), &clock);
    let now = clock.now_ms();
    let mut want = Vec::new();
    for round in 0..40u8 {
        let recs: Vec<Rec> = (0..8u8)
            .map(|k| (Some(k), Some(vec![round; 300])))
            .collect();
        let b = build(&mut BatchBuilder::new(), &recs, now);
        s.append(COMPACTED, bm(&b)).await.unwrap();
        // The plain partition interleaves now and then, so segments hold both (and the
        // replaced runs between its batches are long enough to free).
        if round % 4 == 0 {
            s.append(PLAIN, bm(&b)).await.unwrap();
        }
    }
    s.compact().unwrap();
    s.enforce_retention().unwrap();
    assert!(
        s.clean().unwrap().bytes_punched > 0,
        "the cleaner freed the replaced records"
    );
    let tail = build(
        &mut BatchBuilder::new(),
        &[(Some(9), Some(b"after".to_vec()))],
        now,
    );
    s.append(COMPACTED, bm(&tail)).await.unwrap();
    want.extend(served(&s, COMPACTED));
    let plain = served(&s, PLAIN);
    s.close().unwrap();
    drop(s);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let s = open(dir.path(), &clock);
    assert_eq!(
        served(&s, COMPACTED),
        want,
        "the compacted partition as it was"
    );
    assert_eq!(served(&s, PLAIN), plain);
    assert_eq!(
        want.len(),
        8 + 8 + 1,
        "the last batch's 8, the compacted 8, one after"
    );
}

/// A byte damaged on disk after the write (reads skip the CRC of an entry already checked)
/// stops a pass over its partition: nothing is rewritten with a fresh CRC around it, the
/// records stay as they were, and a read still reports the damage.
#[tokio::test]
async fn a_damaged_batch_stops_compaction_instead_of_being_rewritten() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let s = open(dir.path(), &clock);
    let now = clock.now_ms();
    let recs: Vec<Rec> = (0..8u8)
        .map(|k| (Some(k % 2), Some(vec![k; 100])))
        .collect();
    s.append(COMPACTED, bm(&build(&mut BatchBuilder::new(), &recs, now)))
        .await
        .unwrap();
    let last = build(
        &mut BatchBuilder::new(),
        &[(Some(9), Some(b"z".to_vec()))],
        now,
    );
    s.append(COMPACTED, bm(&last)).await.unwrap();
    s.flush().unwrap();
    // The first entry is at byte 0 of the first segment: flip a byte of its records.
    let (_, path) = segment_files(dir.path()).remove(0);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 16 + 120).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], 16 + 120).unwrap();
    let pass = s.compact().unwrap();
    assert_eq!(pass.partitions, 0, "the damaged partition was compacted");
    assert_eq!(pass.bytes_written, 0);
    drop(s);
    // Reopened (nothing checked yet): the damaged batch is still there and refused.
    let s = open(dir.path(), &clock);
    assert!(
        s.read(COMPACTED, 0, 1 << 20).is_err(),
        "the damage is reported on read"
    );
}
