//! Resource alarms, RabbitMQ's way: while the data directory's filesystem has less free
//! space than `amqp.disk_free_limit_bytes`, or the broker's resident memory is above
//! `amqp.memory_high_watermark_bytes`, connections that publish are blocked — told with
//! connection.blocked when they announced the `connection.blocked` capability, and not read
//! from until the alarm clears (connection.unblocked), so publishers wait in TCP instead of
//! filling the disk or memory. Connections that only consume keep going: their acks free
//! the very resources in question. The door's policy task checks every [`CHECK_EVERY`].

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

/// How often the free space and resident memory are looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What is short, or `None`.
pub type Alarm = Option<String>;

/// The limits checked.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Free bytes the data directory's filesystem must keep (0: not checked).
    pub disk_free: u64,
    /// Resident bytes the broker may use (0: not checked).
    pub memory: u64,
}

/// Free bytes for unprivileged writers on the filesystem holding `dir`.
fn disk_free(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// A `kB` line of a `/proc` file (`VmRSS:`, `MemTotal:`) in bytes.
fn proc_kb(file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// RabbitMQ's default memory high watermark: 40 % of physical memory.
pub fn default_memory_limit() -> u64 {
    proc_kb("/proc/meminfo", "MemTotal:").map_or(0, |total| total / 10 * 4)
}

/// What is short now, if anything.
pub fn check(dir: &Path, limits: Limits) -> Alarm {
    if limits.disk_free > 0
        && let Some(free) = disk_free(dir)
        && free < limits.disk_free
    {
        return Some(format!(
            "low on disk: {free} bytes free, below the limit of {}",
            limits.disk_free
        ));
    }
    if limits.memory > 0
        && let Some(rss) = proc_kb("/proc/self/status", "VmRSS:")
        && rss > limits.memory
    {
        return Some(format!(
            "low on memory: {rss} bytes resident, above the limit of {}",
            limits.memory
        ));
    }
    None
}

/// Publishes a new alarm state (logged when it changes).
pub fn update(sender: &watch::Sender<Alarm>, now: Alarm) {
    sender.send_if_modified(|current| {
        if *current == now {
            return false;
        }
        match &now {
            Some(reason) => {
                tracing::warn!(%reason, "resource alarm: publishing connections are blocked")
            }
            None => tracing::info!("resource alarm cleared: publishing connections unblocked"),
        }
        *current = now;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_cannot_be_met_raise_an_alarm_and_zero_turns_a_check_off() {
        let dir = std::env::temp_dir();
        let off = Limits {
            disk_free: 0,
            memory: 0,
        };
        assert_eq!(check(&dir, off), None);
        let disk = check(
            &dir,
            Limits {
                disk_free: u64::MAX,
                memory: 0,
            },
        );
        assert!(disk.unwrap().contains("disk"));
        let memory = check(
            &dir,
            Limits {
                disk_free: 0,
                memory: 1,
            },
        );
        assert!(memory.unwrap().contains("memory"));
        assert!(default_memory_limit() > 0);
    }

    #[test]
    fn a_change_is_published_once() {
        let (tx, mut rx) = watch::channel(None);
        rx.mark_unchanged();
        update(&tx, None);
        assert!(!rx.has_changed().unwrap());
        update(&tx, Some("low on disk".into()));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        update(&tx, Some("low on disk".into()));
        assert!(!rx.has_changed().unwrap());
    }
}
