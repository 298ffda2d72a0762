//! What scheduled messages cost in memory (issue 16: 10 M scheduled over a year within
//! 128 MiB RSS for the whole broker). Measured with a counting global allocator, so the
//! numbers are the heap bytes really held, not estimates. The tests in this file run one at
//! a time (a lock), since the allocator counts the whole process.

// The counting allocator is the one unsafe thing here; each block says why it is sound.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_queues::{Acquire, ConsumerId, QueueConfig, QueueState, Record};

/// Live heap bytes (requested sizes) and the peak since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

struct Counting;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged, so it upholds `GlobalAlloc`'s contract exactly as `System` does; the counters
// are plain atomics and never touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller guarantees a non-zero-sized layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller guarantees `ptr` came from this allocator
        // (that is, from `System`) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller guarantees `ptr`/`layout` came from this
        // allocator and `new_size` is valid for the layout's alignment.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

const YEAR: i64 = 365 * 24 * 3_600 * 1_000;
const NOW: i64 = 1_700_000_000_000;

/// xorshift: the same "random" due times every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` messages published one after the other, each due at a random time in the next year;
/// the records are drained (and dropped: the broker persists them) every 1,000 schedules.
fn schedule_spread(n: i64) -> QueueState {
    let mut q = QueueState::new(QueueConfig::default(), 0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for o in 0..n {
        q.schedule(o, NOW + 1 + rng.below(YEAR as u64) as i64)
            .unwrap();
        if o % 1_000 == 0 {
            q.drain_records();
        }
    }
    q.drain_records();
    q
}

#[test]
fn ten_million_offsets_scheduled_over_a_year_cost_under_ten_bytes_each() {
    let _serial = SERIAL.lock().unwrap();
    let n = 10_000_000i64;
    let before = live();
    let q = schedule_spread(n);
    let bytes = live() - before;
    let per = bytes as f64 / n as f64;
    let estimate = q.timer_footprint();
    eprintln!(
        "10 M scheduled over a year: {bytes} heap bytes, {per:.2} per offset \
         ({} buckets; the index's own estimate {} bytes)",
        estimate.buckets, estimate.heap_bytes
    );
    assert_eq!(q.scheduled(), n as u64);
    assert!(per <= 10.0, "{per:.2} bytes per scheduled offset");
    // The estimate the index reports (for metrics) is within 10 % of the truth.
    let ratio = estimate.heap_bytes as f64 / bytes as f64;
    assert!((0.9..=1.1).contains(&ratio), "estimate off: {ratio:.3}");
}

#[test]
fn the_steady_state_cost_includes_the_gaps_released_messages_leave() {
    // Half a year in: half of the scheduled messages were released, delivered and acked in
    // due order, so settled runs interleave with the still-scheduled offsets. The index
    // stays compact, and so do the gaps (`RangeSet` chunks: a bitmap at worst).
    let _serial = SERIAL.lock().unwrap();
    let n = 1_000_000i64;
    let before = live();
    let mut q = schedule_spread(n);
    let scheduled_only = live() - before;
    let mut now = NOW;
    while now < NOW + YEAR / 2 {
        now += YEAR / 1_000;
        q.release_due(now);
        let got = q.acquire(&Acquire::new(ConsumerId(1), u32::MAX, n, now).max_scan(u32::MAX));
        let offsets: Vec<i64> = got.deliveries.iter().map(|d| d.offset).collect();
        q.ack(ConsumerId(1), &offsets).unwrap();
        q.drain_records();
    }
    q.check_invariants().unwrap();
    let bytes = live() - before;
    let left = q.scheduled();
    let footprint = q.footprint();
    eprintln!(
        "1 M scheduled, {left} left after half a year: {bytes} heap bytes, {:.2} per \
         scheduled offset ({:.2} with nothing released); {} settled ranges",
        bytes as f64 / left as f64,
        scheduled_only as f64 / n as f64,
        footprint.settled_ranges
    );
    assert!(left > 450_000 && left < 550_000);
    let index = q.timer_footprint().heap_bytes as f64 / left as f64;
    assert!(index <= 10.0, "index {index:.2} bytes per offset");
    let all = bytes as f64 / left as f64;
    assert!(
        all <= 12.0,
        "whole state {all:.2} bytes per scheduled offset"
    );
}

#[test]
fn a_snapshot_of_a_million_scheduled_offsets_and_its_recovery_stay_small() {
    let _serial = SERIAL.lock().unwrap();
    let n = 1_000_000i64;
    let mut q = schedule_spread(n);
    let before = live();
    reset_peak();
    q.write_snapshot();
    let records: Vec<Record> = q.drain_records();
    let snapshot_peak = peak() - before;
    drop(q);
    let bytes: Vec<Vec<u8>> = records.iter().map(Record::to_bytes).collect();
    let encoded: usize = bytes.iter().map(Vec::len).sum();
    drop(records);
    let before = live();
    reset_peak();
    let r = QueueState::recover_encoded(QueueConfig::default(), bytes.iter().map(Vec::as_slice))
        .unwrap();
    let held = live() - before;
    let transient = peak() - before;
    eprintln!(
        "recovering 1 M scheduled from a {encoded}-byte snapshot (taking it peaked at {:.2} \
         bytes per offset): holds {:.2} bytes per offset, peaks at {:.2}",
        snapshot_peak as f64 / n as f64,
        held as f64 / n as f64,
        transient as f64 / n as f64
    );
    assert!(encoded as f64 / n as f64 <= 8.0, "snapshot {encoded} bytes");
    assert!(snapshot_peak as f64 / n as f64 <= 10.0);
    assert_eq!(r.scheduled(), n as u64);
    assert!(held as f64 / n as f64 <= 10.0);
    // Decoding one record at a time into the index: no more than what is kept, and a bit.
    assert!(transient as f64 / n as f64 <= 12.0);
}
