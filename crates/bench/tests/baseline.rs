//! `sluice-bench baseline` run as a user runs it: every machine figure the suite divides by
//! is printed, positive and finite, in the JSON document.

use std::process::Command;

#[test]
fn baseline_reports_cache_hot_and_from_memory_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["baseline", "--output", "json", "--write-mib", "6"])
        .args(["--sync-seconds", "1", "--net-seconds", "1", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let doc: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for figure in [
        "seq write (page cache)",
        "seq write (page cache, from memory)",
        "seq write + fdatasync",
        "fdatasync 1MiB",
        "fdatasync 64KiB max",
        "loopback tcp",
        "loopback tcp (from memory)",
    ] {
        let v = doc["figures"][figure]["value"].as_f64();
        assert!(
            v.is_some_and(|v| v.is_finite() && v > 0.0),
            "{figure}: {v:?} in {doc}"
        );
    }
    // Its scratch files are removed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
