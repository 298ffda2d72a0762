//! The machine's limits as a broker meets them: page-cache writes, durable appends and
//! loopback TCP. Each broker benchmark is quoted as a ratio of these, measured in the same run.
#![allow(unsafe_code)] // see the SAFETY comments

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::report::Report;

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the scratch files (use the broker's data disk).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// MiB written by each source's sequential buffered-write test (over all its passes).
    #[arg(long, default_value_t = 1024)]
    write_mib: u64,
    /// Seconds per fdatasync block size.
    #[arg(long, default_value_t = 3)]
    sync_seconds: u64,
    /// Seconds of each source's loopback TCP test (over all its passes).
    #[arg(long, default_value_t = 3)]
    net_seconds: u64,
}

pub fn run(args: &Args) -> Result<Report> {
    let scratch = args
        .dir
        .join(format!("sluice-baseline-{}", std::process::id()));
    fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let result = measure(args, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn measure(args: &Args, scratch: &std::path::Path) -> Result<Report> {
    let mut report = Report::new("baseline");
    report.setting("dir", args.dir.display().to_string());
    report.setting("write_mib", args.write_mib);

    // Two sources for the copy tests: one 1 MiB buffer that stays in the CPU caches (the
    // best case), and a region larger than the last-level cache, as a broker meets them: it
    // writes request buffers that arrived from the network and sends log bytes from the page
    // cache, never the same cache-hot megabyte again. On a shared VM one pass can be several
    // times slower than the next (page reclaim, a neighbour's writeback), so each figure is
    // the best of `PASSES`, the two sources alternating.
    let hot = pattern(1 << 20);
    let region = pattern(REGION_BYTES);
    let mib = args.write_mib.div_ceil(PASSES).max(1);
    let (mut cached, mut durable, mut cold) = (0f64, 0f64, 0f64);
    for pass in 0..PASSES {
        let (c, d) = sequential_write(&scratch.join(format!("seq{pass}.dat")), mib, &hot)?;
        (cached, durable) = (cached.max(c), durable.max(d));
        let (c, _) = sequential_write(&scratch.join(format!("seqm{pass}.dat")), mib, &region)?;
        cold = cold.max(c);
    }
    report.figure("seq write (page cache)", cached, "MB/s");
    report.figure("seq write + fdatasync", durable, "MB/s");
    report.figure("seq write (page cache, from memory)", cold, "MB/s");

    for (label, block) in [("4KiB", 4096usize), ("64KiB", 65536), ("1MiB", 1 << 20)] {
        let path = scratch.join(format!("sync-{label}.dat"));
        let (rate, mbps, hist) = append_fdatasync(&path, block, args.sync_seconds)?;
        report.figure(&format!("fdatasync {label} rate"), rate, "syncs/s");
        report.figure(&format!("fdatasync {label}"), mbps, "MB/s");
        report.latency(&format!("fdatasync {label}"), &hist);
    }

    let secs = (args.net_seconds as f64 / PASSES as f64).max(0.5);
    let (mut net, mut net_cold) = (0f64, 0f64);
    for _ in 0..PASSES {
        net = net.max(loopback(secs, &hot, 1 << 20)?);
        net_cold = net_cold.max(loopback(secs, &region, SINK_BYTES)?);
    }
    report.figure("loopback tcp", net, "MB/s");
    report.figure("loopback tcp (from memory)", net_cold, "MB/s");
    Ok(report)
}

/// Passes of each copy test (page-cache write, loopback); the best is reported.
const PASSES: u64 = 3;

/// Bytes of the "from memory" source: 8× the 32 MiB L3 of this machine's CPUs, so every pass
/// streams from DRAM.
const REGION_BYTES: usize = 256 << 20;

/// The "from memory" reader's buffer: the size of the fetch responses `sluice bench consume`
/// asks for (librdkafka reads each response into a buffer of its size).
const SINK_BYTES: usize = 16 << 20;

/// Pseudo-random bytes (not compressible, unlike a repeating pattern).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// MB/s of `mib` buffered 1 MiB writes taken in turn from `source`, and of the same including
/// the final fdatasync.
fn sequential_write(path: &std::path::Path, mib: u64, source: &[u8]) -> Result<(f64, f64)> {
    let mut file = File::create(path)?;
    let mut blocks = source.chunks_exact(1 << 20).cycle();
    let start = Instant::now();
    for _ in 0..mib {
        file.write_all(blocks.next().context("source under 1 MiB")?)?;
    }
    let cached = start.elapsed();
    file.sync_data()?;
    let durable = start.elapsed();
    let mb = (mib << 20) as f64 / 1e6;
    Ok((mb / cached.as_secs_f64(), mb / durable.as_secs_f64()))
}

/// Appends `block` bytes then fdatasyncs, repeatedly, like a broker acking each write.
fn append_fdatasync(
    path: &std::path::Path,
    block: usize,
    seconds: u64,
) -> Result<(f64, f64, Histogram<u64>)> {
    let buf = pattern(block);
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut hist = Histogram::<u64>::new(3)?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut syncs = 0u64;
    while Instant::now() < deadline {
        file.write_all(&buf)?;
        let t = Instant::now();
        // SAFETY: fdatasync on a file descriptor we own.
        if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        hist.record(t.elapsed().as_micros() as u64)?;
        syncs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        syncs as f64 / secs,
        (syncs * block as u64) as f64 / 1e6 / secs,
        hist,
    ))
}

/// One TCP stream over 127.0.0.1: 1 MiB writes taken in turn from `source`, a reader on
/// another thread reading 1 MiB at a time into a `sink_bytes` buffer, in turn.
fn loopback(seconds: f64, source: &[u8], sink_bytes: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut sink = vec![1u8; sink_bytes];
        let mut total = 0u64;
        let mut at = 0;
        loop {
            match stream.read(&mut sink[at..at + (1 << 20)])? {
                0 => return Ok(total),
                n => total += n as u64,
            }
            at = (at + (1 << 20)) % sink_bytes;
        }
    });
    let mut stream = TcpStream::connect(addr)?;
    let mut blocks = source.chunks_exact(1 << 20).cycle();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        stream.write_all(blocks.next().context("source under 1 MiB")?)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let total = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    Ok(total as f64 / 1e6 / start.elapsed().as_secs_f64())
}
