//! End-to-end: the real `sluice` binary as server and as CLI — topic, produce, consume and
//! group commands, output formats and exit codes.
#![allow(unsafe_code)] // see the SAFETY comments

use std::time::{SystemTime, UNIX_EPOCH};

use testkit::Server;
use testkit::cli::{stderr, stdout};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn topic_create_list_describe_alter_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));

    let out = s.ok(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "3",
        "--config",
        "retention.ms=3600000",
    ]);
    assert!(
        out.contains("created topic orders with 3 partitions"),
        "{out}"
    );

    // Creating it again is a broker error (exit 3) that says what to do...
    let again = s.cli(&["topic", "create", "orders"]);
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("--if-not-exists"),
        "{}",
        stderr(&again)
    );
    // ...unless asked to tolerate it.
    s.ok(&["topic", "create", "orders", "--if-not-exists"]);
    s.ok(&["topic", "create", "payments"]);

    let table = s.ok(&["topic", "list"]);
    assert!(table.starts_with("TOPIC"), "{table}");
    assert!(
        table.contains("orders") && table.contains("payments"),
        "{table}"
    );
    let list = s.json(&["topic", "list"]);
    let orders = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "orders")
        .expect("orders listed");
    assert_eq!(orders["partitions"], 3);

    let d = s.json(&["topic", "describe", "orders"]);
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    let retention = d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .expect("retention.ms described");
    assert_eq!(retention["value"], "3600000");
    assert_eq!(retention["overridden"], true);
    let human = s.ok(&["topic", "describe", "orders"]);
    assert!(
        human.contains("PARTITION") && human.contains("retention.ms"),
        "{human}"
    );

    s.ok(&[
        "topic",
        "alter",
        "orders",
        "--partitions",
        "5",
        "--config",
        "retention.ms=7200000",
    ]);
    let d = s.json(&["topic", "describe", "orders"]);
    assert_eq!(d["partitions"].as_array().unwrap().len(), 5);
    let retention = d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .unwrap()
        .clone();
    assert_eq!(retention["value"], "7200000");

    let nothing = s.cli(&["topic", "alter", "orders"]);
    assert_eq!(nothing.status.code(), Some(1), "usage error");

    let out = s.ok(&["topic", "delete", "payments"]);
    assert!(out.contains("deleted topic payments"), "{out}");
    let list = s.json(&["topic", "list"]);
    assert!(!list.to_string().contains("payments"), "{list}");
    let missing = s.cli(&["topic", "delete", "payments"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(stderr(&missing).contains("UNKNOWN_TOPIC_OR_PARTITION"));
    s.ok(&["topic", "delete", "payments", "--if-exists"]);
    let missing = s.cli(&["topic", "describe", "nope"]);
    assert_eq!(missing.status.code(), Some(3));
}

#[test]
fn produce_stdin_and_consume_in_every_format_and_start_position() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "events", "--partitions", "1"]);

    let before = now_ms();
    let input: String = (0..10).map(|i| format!("k{i}:value {i}\n")).collect();
    let out = s.cli_stdin(
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--header",
            "source=test",
            "--header",
            "n=1",
        ],
        &input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("produced 10 records"),
        "{}",
        stderr(&out)
    );

    let values = s.ok(&["consume", "events", "--from", "earliest", "--count", "10"]);
    let expected: Vec<String> = (0..10).map(|i| format!("value {i}")).collect();
    assert_eq!(values.lines().collect::<Vec<_>>(), expected);

    let kv = s.ok(&[
        "consume",
        "events",
        "--count",
        "2",
        "--format",
        "key-value",
        "--separator",
        "=",
    ]);
    assert_eq!(kv, "k0=value 0\nk1=value 1\n");

    let json = s.ok(&["consume", "events", "--count", "1", "--format", "json"]);
    let rec: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(rec["topic"], "events");
    assert_eq!(rec["partition"], 0);
    assert_eq!(rec["offset"], 0);
    assert_eq!(rec["key"], "k0");
    assert_eq!(rec["value"], "value 0");
    assert_eq!(rec["headers"]["source"], "test");
    assert_eq!(rec["headers"]["n"], "1");
    assert!(rec["timestamp"].as_i64().unwrap() >= before - 1000);

    // From an offset, both spellings.
    let from7 = s.ok(&["consume", "events", "--from", "offset:7", "--count", "3"]);
    assert_eq!(from7, "value 7\nvalue 8\nvalue 9\n");
    let from8 = s.ok(&["consume", "events", "--offset", "8", "--count", "2"]);
    assert_eq!(from8, "value 8\nvalue 9\n");

    // From a timestamp: records produced after `mark` only.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mark = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.ok_stdin(&["produce", "events"], "late 1\nlate 2\n");
    let late = s.ok(&[
        "consume",
        "events",
        "--timestamp",
        &mark.to_string(),
        "--count",
        "2",
    ]);
    assert_eq!(late, "late 1\nlate 2\n");
    let late = s.ok(&[
        "consume",
        "events",
        "--from",
        &format!("timestamp:{mark}"),
        "--count",
        "2",
    ]);
    assert_eq!(late, "late 1\nlate 2\n");

    // From latest: nothing new arrives, so the timeout ends it; with --count unmet that is
    // exit code 4, without --count it is success.
    let none = s.cli(&[
        "consume",
        "events",
        "--from",
        "latest",
        "--count",
        "1",
        "--timeout-ms",
        "700",
    ]);
    assert_eq!(none.status.code(), Some(4), "{}", stderr(&none));
    assert_eq!(stdout(&none), "");
    let all = s.ok(&["consume", "events", "--timeout-ms", "1500"]);
    assert_eq!(all.lines().count(), 12);

    // Past the end: the consumer says so and waits at the end instead of replaying.
    let past = s.cli(&[
        "consume",
        "events",
        "--offset",
        "999",
        "--timeout-ms",
        "800",
    ]);
    assert!(past.status.success(), "{}", stderr(&past));
    assert_eq!(stdout(&past), "");
    assert!(stderr(&past).contains("out of range"), "{}", stderr(&past));

    // --output json makes JSON lines the default record format.
    let json_lines = s.ok(&["-o", "json", "consume", "events", "--count", "2"]);
    for line in json_lines.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["topic"], "events");
    }
}

#[test]
fn produce_file_with_each_compression_and_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "bulk", "--partitions", "4"]);
    let file = dir.path().join("lines.txt");
    let body: String = (0..2000)
        .map(|i| format!("key{}\tline {i}\n", i % 50))
        .collect();
    std::fs::write(&file, body).unwrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let out = s.json(&[
            "produce",
            "bulk",
            "--file",
            file.to_str().unwrap(),
            "--key-separator",
            "\t",
            "--compression",
            codec,
            "--batch-size",
            "300",
        ]);
        assert_eq!(out["acknowledged"], 2000, "{codec}: {out}");
        assert!(out["error"].is_null(), "{codec}: {out}");
    }
    let d = s.json(&["topic", "describe", "bulk"]);
    let total: i64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["records"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 10_000);
    // Keys hash to partitions like Kafka's partitioner: each key lives in one partition.
    let all = s.ok(&["consume", "bulk", "--count", "10000", "--format", "json"]);
    let mut home = std::collections::HashMap::new();
    for line in all.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = r["key"].as_str().unwrap().to_string();
        let p = r["partition"].as_i64().unwrap();
        assert_eq!(*home.entry(key).or_insert(p), p, "a key spans partitions");
    }
    assert_eq!(home.len(), 50);
    // An explicit partition.
    s.ok_stdin(
        &["produce", "bulk", "--partition", "2", "--acks", "1"],
        "pinned\n",
    );
    let pinned = s.ok(&[
        "consume",
        "bulk",
        "--partition",
        "2",
        "--from",
        "latest",
        "--timeout-ms",
        "300",
    ]);
    assert_eq!(pinned, "", "latest starts after the pinned record");
    let d = s.json(&["topic", "describe", "bulk"]);
    let p2 = &d["partitions"][2];
    let end = p2["log_end_offset"].as_i64().unwrap();
    let last = s.ok(&[
        "consume",
        "bulk",
        "--partition",
        "2",
        "--offset",
        &(end - 1).to_string(),
        "--count",
        "1",
    ]);
    assert_eq!(last, "pinned\n");
}

#[test]
fn consumer_group_consume_describe_reset_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "jobs", "--partitions", "2"]);
    let input: String = (0..20).map(|i| format!("{}:job {i}\n", i % 4)).collect();
    s.ok_stdin(&["produce", "jobs", "--key-separator", ":"], &input);

    let first = s.ok(&["consume", "jobs", "--group", "workers", "--count", "8"]);
    assert_eq!(first.lines().count(), 8, "{first}");
    // The group resumes where it stopped: the other 12 come next, none repeated.
    let rest = s.ok(&[
        "consume",
        "jobs",
        "--group",
        "workers",
        "--count",
        "12",
        "--timeout-ms",
        "10000",
    ]);
    let mut seen: Vec<&str> = first.lines().chain(rest.lines()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "first: {first}\nrest: {rest}");

    let groups = s.json(&["group", "list"]);
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "workers"),
        "{groups}"
    );
    let table = s.ok(&["group", "list"]);
    assert!(table.contains("workers"), "{table}");

    let d = s.json(&["group", "describe", "workers"]);
    assert_eq!(d["total_lag"], 0, "{d}");
    assert_eq!(d["partitions"].as_array().unwrap().len(), 2, "{d}");

    // Three more records: lag 3.
    s.ok_stdin(&["produce", "jobs", "--partition", "0"], "a\nb\nc\n");
    let d = s.json(&["group", "describe", "workers"]);
    assert_eq!(d["total_lag"], 3, "{d}");
    let human = s.ok(&["group", "describe", "workers"]);
    assert!(
        human.contains("LAG") && human.contains("Total lag: 3"),
        "{human}"
    );

    // Dry run changes nothing.
    let dry = s.ok(&["group", "reset-offsets", "workers", "--to-earliest"]);
    assert!(dry.contains("dry run"), "{dry}");
    assert_eq!(s.json(&["group", "describe", "workers"])["total_lag"], 3);
    let plan = s.json(&["group", "reset-offsets", "workers", "--to-earliest"]);
    assert_eq!(plan["executed"], false);
    assert!(
        plan["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["new_offset"] == 0)
    );
    // Execute.
    s.ok(&[
        "group",
        "reset-offsets",
        "workers",
        "--topic",
        "jobs",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(s.json(&["group", "describe", "workers"])["total_lag"], 23);
    s.ok(&[
        "group",
        "reset-offsets",
        "workers",
        "--to-latest",
        "--execute",
    ]);
    assert_eq!(s.json(&["group", "describe", "workers"])["total_lag"], 0);
    s.ok(&[
        "group",
        "reset-offsets",
        "workers",
        "--to-offset",
        "1",
        "--execute",
    ]);
    let d = s.json(&["group", "describe", "workers"]);
    assert!(
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["committed_offset"] == 1),
        "{d}"
    );
    s.ok(&[
        "group",
        "reset-offsets",
        "workers",
        "--to-datetime",
        "2000-01-01T00:00:00Z",
        "--execute",
    ]);
    assert_eq!(s.json(&["group", "describe", "workers"])["total_lag"], 23);

    let out = s.ok(&["group", "delete", "workers"]);
    assert!(out.contains("deleted group workers"), "{out}");
    let gone = s.cli(&["group", "describe", "workers"]);
    assert_eq!(gone.status.code(), Some(3), "{}", stdout(&gone));
}

#[test]
fn bootstrap_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let out = std::process::Command::new(testkit::sluice_bin())
        .args(["topic", "create", "via-env"])
        .env("SLUICE_BOOTSTRAP", s.bootstrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.ok(&["topic", "list"]).contains("via-env"));
}

#[test]
fn unreachable_broker_exits_2_with_a_hint() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = testkit::cli::cli(&format!("127.0.0.1:{port}"), &["topic", "list"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no broker at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("sluice server"), "{err}");
}

#[test]
fn usage_errors_exit_1_and_help_documents_exit_codes() {
    let out = testkit::cli::cli("127.0.0.1:1", &["topic", "frobnicate"], None);
    assert_eq!(out.status.code(), Some(1));
    let help = testkit::cli::cli("127.0.0.1:1", &["--help"], None);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Exit codes:"), "{}", stdout(&help));
    assert!(stdout(&help).contains("broker unreachable"));
}

#[test]
fn two_group_members_split_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "shared", "--partitions", "4"]);
    let spawn = || {
        std::process::Command::new(testkit::sluice_bin())
            .args([
                "--bootstrap-server",
                &s.bootstrap(),
                "consume",
                "shared",
                "--group",
                "pair",
                "--from",
                "latest",
                "--timeout-ms",
                "15000",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    // Wait until both are members with two partitions each.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = s.cli(&["-o", "json", "group", "describe", "pair"]);
        let d: serde_json::Value = if out.status.success() {
            serde_json::from_slice(&out.stdout).unwrap()
        } else {
            serde_json::Value::Null
        };
        let owners: std::collections::HashSet<String> = d["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["member_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if d["members"].as_array().map(Vec::len) == Some(2) && owners.len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "group never settled: {d}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let input: String = (0..400).map(|i| format!("key{i}:v{i}\n")).collect();
    s.ok_stdin(&["produce", "shared", "--key-separator", ":"], &input);
    let out_a = testkit::cli::wait_output(a, std::time::Duration::from_secs(60));
    let out_b = testkit::cli::wait_output(b, std::time::Duration::from_secs(60));
    let (la, lb) = (stdout(&out_a), stdout(&out_b));
    assert!(!la.is_empty() && !lb.is_empty(), "both members got records");
    let mut all: Vec<&str> = la.lines().chain(lb.lines()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 400);
    assert_eq!(s.json(&["group", "describe", "pair"])["total_lag"], 0);
}

#[test]
fn sigterm_stops_a_group_consumer_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "calm", "--partitions", "1"]);
    s.ok_stdin(&["produce", "calm"], "1\n2\n3\n4\n5\n");
    let consumer = std::process::Command::new(testkit::sluice_bin())
        .args([
            "--bootstrap-server",
            &s.bootstrap(),
            "consume",
            "calm",
            "--group",
            "calm-g",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = s.cli(&["-o", "json", "group", "describe", "calm-g"]);
        if out.status.success() {
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if d["partitions"][0]["committed_offset"] == 5 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "consumer never committed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // An active group's offsets cannot be moved, or deleted.
    let busy = s.cli(&[
        "group",
        "reset-offsets",
        "calm-g",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(busy.status.code(), Some(3), "{}", stderr(&busy));
    assert!(stderr(&busy).contains("member"), "{}", stderr(&busy));
    let busy = s.cli(&["group", "delete", "calm-g"]);
    assert_eq!(busy.status.code(), Some(3), "{}", stderr(&busy));
    assert!(
        stderr(&busy).contains("NON_EMPTY_GROUP"),
        "{}",
        stderr(&busy)
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(consumer.id() as libc::pid_t, libc::SIGTERM) };
    let out = testkit::cli::wait_output(consumer, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n2\n3\n4\n5\n");
    // It left the group instead of waiting out its session.
    let d = s.json(&["group", "describe", "calm-g"]);
    assert_eq!(d["members"].as_array().unwrap().len(), 0, "{d}");
    assert_eq!(d["total_lag"], 0);
}

#[test]
fn produce_sends_each_line_when_the_input_pauses() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "live"]);
    let mut producer = std::process::Command::new(testkit::sluice_bin())
        .args(["--bootstrap-server", &s.bootstrap(), "produce", "live"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    writeln!(stdin, "first").unwrap();
    stdin.flush().unwrap();
    // Readable while the producer is still running (its stdin is open).
    let got = s.ok(&["consume", "live", "--count", "1", "--timeout-ms", "10000"]);
    assert_eq!(got, "first\n");
    writeln!(stdin, "second").unwrap();
    drop(stdin);
    let out = testkit::cli::wait_output(producer, std::time::Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.ok(&["consume", "live", "--count", "2"]),
        "first\nsecond\n"
    );
}

#[test]
fn consume_json_pipes_into_produce_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    s.ok(&["topic", "create", "src", "--partitions", "3"]);
    s.ok(&["topic", "create", "dst", "--partitions", "3"]);
    let input: String = (0..30).map(|i| format!("k{i}|v{i}\n")).collect();
    s.ok_stdin(
        &[
            "produce",
            "src",
            "--key-separator",
            "|",
            "--header",
            "origin=src",
        ],
        &input,
    );
    let dump = s.ok(&["consume", "src", "--count", "30", "--format", "json"]);
    s.ok_stdin(&["produce", "dst", "--input", "json"], &dump);
    let copy = s.ok(&["consume", "dst", "--count", "30", "--format", "json"]);
    let strip = |text: &str| {
        let mut v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| {
                let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
                r.as_object_mut().unwrap().remove("topic");
                r
            })
            .collect();
        v.sort_by_key(|r| r["key"].as_str().unwrap().to_string());
        v
    };
    // Same key, value, headers, partition, offset and timestamp.
    assert_eq!(strip(&dump), strip(&copy));
    let bad = s.cli_stdin(
        &["produce", "dst", "--input", "json"],
        "{\"value\":1}\nnot json\n",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("input line 2"), "{}", stderr(&bad));
}
