//! The real `sluice server` as a child process. Every listener binds port 0 and the ports
//! are read back from the start banner (`  kafka  <addr>`, `  amqp   <addr>`, `  admin  http://<addr>` on
//! stdout), so no port is ever picked here and handed over in a race; a restart binds the
//! ports the first start announced, on the same data directory.
#![allow(unsafe_code)] // kill(2) in `signal`; see its SAFETY comment

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{assert_success, cli};
use crate::http::http_get;

/// How long a start may take before the test fails with the server's log.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the `sluice` binary under test: `SLUICE_BIN`, else `target/<profile>/sluice`
/// next to the running test executable (which lives in `target/<profile>/deps`).
pub fn sluice_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(path);
    }
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

/// A running `sluice server`; killed (SIGKILL) when dropped.
///
/// Its stderr (the log) goes to `<data_dir>.log` and its stdout (the banner) to
/// `<data_dir>.stdout`, both appended across restarts; keep `data_dir` inside the test's
/// temporary directory so they go away with it.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub kafka_port: u16,
    pub admin_port: u16,
    /// The AMQP 0-9-1 listener's port.
    pub amqp_port: u16,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    log_path: PathBuf,
    stdout_path: PathBuf,
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

    /// Starts a server with extra arguments and environment settings (`SLUICE_…`; the
    /// test's own `RUST_LOG` is not passed on, so `log.level` applies unless set here).
    pub fn start_with_env(data_dir: &Path, extra_args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut server = Server {
            child: None,
            data_dir: data_dir.to_path_buf(),
            // 0: the OS picks; the banner says which (a restart reuses them).
            kafka_port: 0,
            admin_port: 0,
            amqp_port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: data_dir.with_extension("log"),
            stdout_path: data_dir.with_extension("stdout"),
        };
        server.spawn();
        server
    }

    /// The Kafka listener, `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// The AMQP listener, `127.0.0.1:<port>`.
    pub fn amqp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.amqp_port)
    }

    /// The admin listener, `127.0.0.1:<port>`.
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// `http://127.0.0.1:<admin port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr(), path)
    }

    fn spawn(&mut self) {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        };
        let from = std::fs::metadata(&self.stdout_path).map_or(0, |m| m.len() as usize);
        let child = Command::new(sluice_bin())
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kafka-listener")
            .arg(format!("127.0.0.1:{}", self.kafka_port))
            .arg("--admin-listener")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .arg("--amqp-listener")
            .arg(format!("127.0.0.1:{}", self.amqp_port))
            .args(&self.extra_args)
            .env_remove("RUST_LOG")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(open(&self.stdout_path)))
            .stderr(Stdio::from(open(&self.log_path)))
            .spawn()
            .expect("spawn sluice server");
        self.child = Some(child);
        self.wait_ready(from);
    }

    /// Blocks until the banner (stdout after byte `from`) names both listeners; learns the
    /// ports from it.
    fn wait_ready(&mut self, from: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
            let fresh = out.get(from..).unwrap_or_default();
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
            if let (Some(k), Some(a), Some(q)) =
                (port_of("kafka "), port_of("admin "), port_of("amqp "))
            {
                (self.kafka_port, self.admin_port, self.amqp_port) = (k, a, q);
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "sluice server exited early ({status}); log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sluice server not ready after {START_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr (its log) so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id of the running server (panics if it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Sends signal `sig` to the running server.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) takes no pointers; the pid is our own child, not yet reaped (we
        // hold its `Child`), so it cannot name another process.
        unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
    }

    /// SIGKILL: the crash case. Waits for the process to be gone; a no-op if not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit status of the graceful stop.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(STOP_TIMEOUT)
    }

    /// Waits for the server to exit by itself; kills it and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit in {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same ports and data directory (stopping it with
    /// SIGTERM first if it is still running).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }

    /// Runs a CLI command against this server (its Kafka listener and its admin API).
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.bootstrap(), &self.with_admin(args), None)
    }

    /// Runs a CLI command with `stdin` as its input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        cli(&self.bootstrap(), &self.with_admin(args), Some(stdin))
    }

    /// `--admin <admin addr>` before `args`.
    fn with_admin(&self, args: &[&str]) -> Vec<String> {
        let mut full = vec!["--admin".to_string(), self.admin_addr()];
        full.extend(args.iter().map(|a| a.to_string()));
        full
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Server::ok`] with `stdin` as the command's input.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli_stdin(args, stdin);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a CLI command with `-o json` and parses its stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.ok(&full);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// `GET path` on the admin listener: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin_addr(), path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
