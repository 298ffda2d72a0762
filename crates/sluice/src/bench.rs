//! `sluice bench …` runs `sluice-bench`, the load generator built on librdkafka. It is a
//! separate binary so that librdkafka (a C build) stays out of the broker's dependency tree;
//! it is looked up next to this executable, then on `PATH`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const BENCH_BIN: &str = "sluice-bench";

fn locate() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(BENCH_BIN)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(BENCH_BIN))
}

/// Replaces this process with `sluice-bench <args>`; returns only if that fails.
pub fn exec(args: impl Iterator<Item = OsString>) -> ExitCode {
    let bin = locate();
    let err = Command::new(&bin).args(args).exec();
    eprintln!(
        "error: cannot run {} ({err}); build it with `cargo build --release -p sluice-bench`",
        bin.display()
    );
    ExitCode::from(crate::cli::exit::EXIT_USAGE as u8)
}
