//! End-to-end: `sluice server` itself — configuration errors and `--print-config`, the admin
//! endpoints, and graceful shutdown that loses nothing acknowledged.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::cli::{stderr, stdout, wait_output};
use testkit::http::{metric_sum, parse_metrics};
use testkit::{Server, sluice_bin};

fn server_cmd(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("server").args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(60))
}

#[test]
fn print_config_shows_effective_values_with_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(
        &file,
        "[storage]\ndir = \"/from/file\"\nflush = \"sync\"\n[topics]\nnum_partitions = 3\n",
    )
    .unwrap();
    let out = server_cmd(
        &[
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            "/from/flag",
            "--set",
            "log.retention.ms=1000",
            "--print-config",
        ],
        &[
            ("SLUICE_STORAGE_DIR", "/from/env"),
            ("SLUICE_TOPICS_NUM_PARTITIONS", "7"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let parsed: toml::Table = toml::from_str(&text).expect("print-config is TOML");
    assert_eq!(parsed["storage"]["dir"].as_str(), Some("/from/flag"));
    assert_eq!(parsed["storage"]["flush"].as_str(), Some("sync"));
    assert_eq!(parsed["topics"]["num_partitions"].as_integer(), Some(7));
    assert_eq!(
        parsed["topics"]["log_retention_ms"].as_integer(),
        Some(1000)
    );
    assert_eq!(parsed["kafka"]["listener"].as_str(), Some("0.0.0.0:9092"));
    assert_eq!(parsed["admin"]["listener"].as_str(), Some("0.0.0.0:8080"));
    assert!(text.contains("Kafka: auto.create.topics.enable"), "{text}");

    // Defaults alone are the zero-config ones.
    let out = server_cmd(&["--print-config"], &[]);
    let parsed: toml::Table = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(parsed["storage"]["dir"].as_str(), Some("./sluice-data"));
}

#[test]
fn config_errors_name_the_key_and_the_allowed_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[storage]\nsegmnt_bytes = 1048576\n").unwrap();
    let out = server_cmd(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("unknown configuration key `storage.segmnt_bytes`"),
        "{err}"
    );
    assert!(
        err.contains("storage.segment_bytes"),
        "suggests the right key: {err}"
    );

    std::fs::write(&file, "[nonsense]\nx = 1\n").unwrap();
    let out = server_cmd(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`nonsense`"), "{}", stderr(&out));

    let out = server_cmd(&["--set", "storage.segment_bytes=12"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("storage.segment_bytes"), "{err}");
    assert!(err.contains("1048576..=4294967296"), "{err}");

    let out = server_cmd(&[], &[("SLUICE_STORAGE_FLUSH", "sometimes")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("SLUICE_STORAGE_FLUSH") && err.contains("async, sync"),
        "{err}"
    );

    let out = server_cmd(&["--kafka-listener", "nowhere"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("kafka.listener"), "{}", stderr(&out));

    let out = server_cmd(&["--set", "no.such.key=1"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`no.such.key`"), "{}", stderr(&out));

    let out = server_cmd(&["--config", "/does/not/exist.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/does/not/exist.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn listener_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let other = tempfile::tempdir().unwrap();
    let out = server_cmd(
        &[
            "--data-dir",
            other.path().to_str().unwrap(),
            "--kafka-listener",
            &s.bootstrap(),
            "--amqp-listener",
            "127.0.0.1:0",
            "--admin-listener",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&s.bootstrap()) && err.contains("--kafka-listener"),
        "{err}"
    );
}

#[test]
fn one_server_per_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let out = server_cmd(
        &[
            "--data-dir",
            s.data_dir.to_str().unwrap(),
            "--kafka-listener",
            "127.0.0.1:0",
            "--amqp-listener",
            "127.0.0.1:0",
            "--admin-listener",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("in use by another sluice server"), "{err}");
    assert!(err.contains(&format!("pid {}", s.pid())), "{err}");
}

#[test]
fn metrics_and_health_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));

    let (code, body) = s.http_get("/health");
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime_seconds"].is_u64());
    assert!(h["data_dir"].as_str().unwrap().ends_with("data"), "{h}");
    assert_eq!(h["topics"], 0);

    let (code, before) = s.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(before.ends_with("# EOF\n"), "OpenMetrics terminator");
    // OpenMetrics parsers reject a family declared twice.
    let mut families: Vec<&str> = before
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let declared = families.len();
    families.sort_unstable();
    families.dedup();
    assert_eq!(
        families.len(),
        declared,
        "a metric family is declared twice"
    );
    let before = parse_metrics(&before);
    assert_eq!(
        metric_sum(&before, "sluice_topic_records_in_total", &["topic=\"m\""]),
        0.0
    );

    s.ok(&["topic", "create", "m", "--partitions", "2"]);
    let input: String = (0..100).map(|i| format!("r{i}\n")).collect();
    s.ok_stdin(&["produce", "m"], &input);
    s.ok(&["consume", "m", "--count", "100", "--group", "g"]);

    let (_, after) = s.http_get("/metrics");
    let after = parse_metrics(&after);
    assert_eq!(
        metric_sum(&after, "sluice_topic_records_in_total", &["topic=\"m\""]),
        100.0,
        "{after:?}"
    );
    assert!(metric_sum(&after, "sluice_topic_bytes_in_total", &["topic=\"m\""]) > 0.0);
    assert!(metric_sum(&after, "sluice_topic_records_out_total", &["topic=\"m\""]) >= 100.0);
    assert!(
        metric_sum(
            &after,
            "sluice_requests_total",
            &["protocol=\"kafka\"", "api=\"Produce\""]
        ) >= 1.0
    );
    assert!(
        metric_sum(
            &after,
            "sluice_request_duration_seconds_count",
            &["api=\"Fetch\""]
        ) >= 1.0
    );
    assert_eq!(metric_sum(&after, "sluice_partitions", &[]), 2.0);
    assert_eq!(metric_sum(&after, "sluice_topics", &[]), 1.0);
    assert!(after.iter().any(|(n, _)| n == "sluice_storage_segments"));
    assert!(after.iter().any(|(n, _)| n == "sluice_storage_bytes"));
    assert!(
        after
            .iter()
            .any(|(n, _)| n == "sluice_storage_fsyncs_total")
    );
    assert!(
        after
            .iter()
            .any(|(n, _)| n == "sluice_storage_fsync_seconds_count")
    );
    assert!(after.iter().any(|(n, _)| n == "sluice_uptime_seconds"));

    assert!(
        after
            .iter()
            .any(|(n, _)| n.starts_with("sluice_group_lag{") && n.contains("group=\"g\"")),
        "group lag exported: {after:?}"
    );

    let (_, body) = s.http_get("/health");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["topics"], 1);
    assert_eq!(h["partitions"], 2);
}

#[test]
fn json_logs_and_auto_create_switch() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(
        &dir.path().join("data"),
        &[
            "--log-format",
            "json",
            "--set",
            "auto.create.topics.enable=false",
        ],
    );
    let missing = s.cli_stdin(&["produce", "ghost"], "boo\n");
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(s.terminate().code(), Some(0));
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }

    // Default: producing to a new topic creates it.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok_stdin(&["produce", "fresh"], "hello\n");
    assert_eq!(s.ok(&["consume", "fresh", "--count", "1"]), "hello\n");
}

#[test]
fn a_second_signal_exits_at_once_and_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "t"]);
    s.ok_stdin(&["produce", "t"], "one\ntwo\n");
    s.signal(libc::SIGTERM);
    s.signal(libc::SIGTERM);
    let status = s.wait(Duration::from_secs(60));
    // Either the graceful path won the race (0) or the second signal cut it short (130).
    assert!(
        matches!(status.code(), Some(0) | Some(130)),
        "{status:?}; log:\n{}",
        s.log()
    );
    s.restart();
    assert_eq!(s.ok(&["consume", "t", "--count", "2"]), "one\ntwo\n");
}

#[test]
fn sigterm_is_graceful_and_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "durable", "--partitions", "1"]);
    let file = dir.path().join("input.txt");
    let n = 200_000;
    let body: String = (0..n).map(|i| format!("msg-{i}\n")).collect();
    std::fs::write(&file, body).unwrap();

    // Produce in small batches so the producer is mid-stream when the signal lands.
    let producer = Command::new(sluice_bin())
        .args([
            "--bootstrap-server",
            &s.bootstrap(),
            "-o",
            "json",
            "produce",
            "durable",
            "--file",
            file.to_str().unwrap(),
            "--batch-size",
            "200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some records are in, then SIGTERM the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = s.http_get("/metrics");
        let m = parse_metrics(&m);
        if metric_sum(&m, "sluice_topic_records_in_total", &["topic=\"durable\""]) >= 2000.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "producer made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = s.terminate();
    assert_eq!(status.code(), Some(0), "graceful exit; log:\n{}", s.log());
    assert!(s.log().contains("shutdown complete"), "{}", s.log());

    let out = wait_output(producer, Duration::from_secs(60));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("producer report ({e}): {} / {}", stdout(&out), stderr(&out)));
    let acked = report["acknowledged"].as_u64().unwrap();
    eprintln!("acknowledged before shutdown: {acked} of {n}; producer: {report}");
    assert!(acked >= 2000, "{report}");

    // Restart on the same data: every acknowledged record is there, in order.
    s.restart();
    let got = s.ok(&[
        "consume",
        "durable",
        "--count",
        &acked.to_string(),
        "--timeout-ms",
        "20000",
    ]);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len() as u64, acked);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("msg-{i}"), "record {i}");
    }
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn sigint_is_graceful_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"));
    s.ok_stdin(&["produce", "t"], "kept\n");
    s.signal(libc::SIGINT);
    let status = s.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", s.log());
    assert!(s.log().contains("signal=\"SIGINT\""), "{}", s.log());
    s.restart();
    assert_eq!(s.ok(&["consume", "t", "--count", "1"]), "kept\n");
}
