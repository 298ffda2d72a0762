//! End-to-end test support: runs the real `sluice` binary on loopback ports the OS picks
//! (read back from its startup banner, so no port is ever handed over in a race) in a
//! temporary data directory, so tests can drive it with real Kafka clients (librdkafka via
//! the `rdkafka` crate, and the interop scripts under `tests/interop/`).
//!
//! The binary is the one `cargo test --workspace` builds next to this crate's tests
//! (`target/<profile>/sluice`); `SLUICE_BIN` overrides the path.
#![allow(unsafe_code)] // see the SAFETY comments

use std::io;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the `sluice` binary under test.
pub fn sluice_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(path);
    }
    // This crate lives at <workspace>/crates/e2e; test binaries run from target/<profile>/deps.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("sluice");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p sluice` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A tmpfs mounted for the test's lifetime (a small disk to fill, or a filesystem known to
/// punch holes). Needs root, which CI has; unmounted (lazily) when dropped.
pub struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    pub fn mount(dir: &'a Path, size: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed: this test needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// A running `sluice server` child process.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub kafka_port: u16,
    pub admin_port: u16,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    log_path: PathBuf,
}

impl Server {
    /// Starts a server with built-in defaults except for the data directory and ports.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Starts a server with extra command-line arguments after `server`.
    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> Server {
        Self::start_with_env(data_dir, extra_args, &[])
    }

    /// Starts a server with extra arguments and `SLUICE_…` environment settings.
    pub fn start_with_env(data_dir: &Path, extra_args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut server = Server {
            child: None,
            data_dir: data_dir.to_path_buf(),
            // 0: the OS picks; the banner says which (a restart reuses them).
            kafka_port: 0,
            admin_port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: data_dir.with_extension("log"),
        };
        server.spawn();
        server
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let from = std::fs::metadata(&self.log_path).map_or(0, |m| m.len() as usize);
        let child = Command::new(sluice_bin())
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kafka-listener")
            .arg(format!("127.0.0.1:{}", self.kafka_port))
            .arg("--admin-listener")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(log.try_clone().expect("dup log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice server");
        self.child = Some(child);
        self.wait_ready(from, Duration::from_secs(60));
    }

    /// Blocks until the server prints its banner (`  kafka  <addr>`, `  admin  http://<addr>`
    /// on stdout, which goes to the log after `from`); learns the ports from it.
    fn wait_ready(&mut self, from: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let fresh = log.get(from..).unwrap_or_default();
            let port_of = |label: &str| {
                fresh.lines().find_map(|l| {
                    let rest = l.trim().strip_prefix(label)?.trim();
                    let addr = rest
                        .split_whitespace()
                        .next()?
                        .trim_start_matches("http://");
                    addr.rsplit(':').next()?.parse::<u16>().ok()
                })
            };
            if let (Some(k), Some(a)) = (port_of("kafka "), port_of("admin ")) {
                (self.kafka_port, self.admin_port) = (k, a);
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("sluice server exited early ({status}); log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "sluice server not ready after {timeout:?}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's combined stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the crash case. Waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> io::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| io::Error::other("not running"))?;
        // SAFETY: kill(2) on a pid we own and have not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait()
    }

    /// Starts the server again on the same ports and data directory.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate().expect("stop before restart");
        }
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
