//! `sluice` as a command-line client: run it against a bootstrap address with a deadline (a
//! hung CLI fails the test instead of hanging it) and read what it printed.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::sluice_bin;

/// How long one CLI command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Panics with both outputs unless the command succeeded.
pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "sluice {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sluice --bootstrap-server <bootstrap> <args>` (stdin from `stdin`, else empty) and
/// returns its output; `SLUICE_BOOTSTRAP` and `SLUICE_ADMIN` from the test's environment are
/// not passed on.
pub fn cli<S: AsRef<std::ffi::OsStr>>(bootstrap: &str, args: &[S], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("--bootstrap-server")
        .arg(bootstrap)
        .args(args)
        .env_remove("SLUICE_BOOTSTRAP")
        .env_remove("SLUICE_ADMIN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sluice");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    wait_output(child, CLI_TIMEOUT)
}

/// Waits for `child` with a deadline (a hung CLI fails the test instead of hanging it).
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice CLI did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// A command's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
