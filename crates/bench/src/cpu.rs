//! CPU seconds of a process, from /proc, so a run reports broker CPU per GB moved — a figure
//! that stays comparable when neighbours make wall-clock throughput noisy.
#![allow(unsafe_code)] // see the SAFETY comments

use std::fs;

/// utime + stime of `pid`, in seconds.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// The pid of a local `sluice` process, if exactly one runs (the broker under test).
pub fn find_local_broker() -> Option<u32> {
    let mut found = None;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_server = cmdline.split(|b| *b == 0).any(|arg| arg == b"server");
        if comm.trim() == "sluice" && is_server {
            if found.is_some() {
                return None;
            }
            found = Some(pid);
        }
    }
    found
}

/// Broker CPU over an interval: start with `begin`, finish with `seconds_since`.
pub struct CpuMeter {
    pid: Option<u32>,
    start: Option<f64>,
}

impl CpuMeter {
    pub fn begin(pid: Option<u32>) -> CpuMeter {
        let pid = pid.or_else(find_local_broker);
        CpuMeter {
            pid,
            start: pid.and_then(process_cpu_seconds),
        }
    }

    pub fn seconds_since(&self) -> Option<f64> {
        Some(process_cpu_seconds(self.pid?)? - self.start?)
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}
