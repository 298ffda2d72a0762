//! The machine's limits as a broker meets them: page-cache writes, durable appends and
//! loopback TCP. Each broker benchmark is quoted as a ratio of these, measured in the same run.

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
    /// MiB written by the sequential buffered-write test.
    #[arg(long, default_value_t = 1024)]
    write_mib: u64,
    /// Seconds per fdatasync block size.
    #[arg(long, default_value_t = 3)]
    sync_seconds: u64,
    /// Seconds of the loopback TCP test.
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

    let (cached, durable) = sequential_write(&scratch.join("seq.dat"), args.write_mib)?;
    report.figure("seq write (page cache)", cached, "MB/s");
    report.figure("seq write + fdatasync", durable, "MB/s");

    for (label, block) in [("4KiB", 4096usize), ("64KiB", 65536), ("1MiB", 1 << 20)] {
        let path = scratch.join(format!("sync-{label}.dat"));
        let (rate, mbps, hist) = append_fdatasync(&path, block, args.sync_seconds)?;
        report.figure(&format!("fdatasync {label} rate"), rate, "syncs/s");
        report.figure(&format!("fdatasync {label}"), mbps, "MB/s");
        report.latency(&format!("fdatasync {label}"), &hist);
    }

    report.figure("loopback tcp", loopback(args.net_seconds)?, "MB/s");
    Ok(report)
}

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

/// MB/s of buffered 1 MiB writes, and of the same including the final fdatasync.
fn sequential_write(path: &std::path::Path, mib: u64) -> Result<(f64, f64)> {
    let buf = pattern(1 << 20);
    let mut file = File::create(path)?;
    let start = Instant::now();
    for _ in 0..mib {
        file.write_all(&buf)?;
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

/// One TCP stream over 127.0.0.1, 1 MiB writes, reader draining on another thread.
fn loopback(seconds: u64) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let mut stream = TcpStream::connect(addr)?;
    let buf = pattern(1 << 20);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        stream.write_all(&buf)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let total = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    Ok(total as f64 / 1e6 / start.elapsed().as_secs_f64())
}
