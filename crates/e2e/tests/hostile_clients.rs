//! Issue 5: no client can break the broker. Each test points a misbehaving raw-TCP client at
//! the real binary and checks what a user would notice: that connection is dropped, the
//! broker's memory stays bounded, a well-behaved client keeps working, and the server log
//! has a line naming that client (its address) and what it did.
#![allow(unsafe_code)] // see the SAFETY comments

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::Server;

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// An ApiVersions v0 request frame (the smallest valid Kafka request).
fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    let client_id = b"hostile";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Reads one response frame; returns its correlation id.
fn read_response(stream: &mut TcpStream) -> std::io::Result<i32> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body)?;
    Ok(i32::from_be_bytes([body[0], body[1], body[2], body[3]]))
}

/// True once the peer has closed the connection (EOF or reset) within `timeout`.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

/// The server log line that mentions both `peer` (the bad client's address) and `what`,
/// waiting up to 10 s for it to be written.
fn log_line(server: &Server, peer: std::net::SocketAddr, what: &str) -> String {
    let peer = format!("peer={peer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if let Some(line) = log.lines().find(|l| l.contains(&peer) && l.contains(what)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with `{peer}` and `{what}`:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A well-behaved client still produces and reads back.
fn good_client_works(server: &Server, topic: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    producer
        .send(BaseRecord::<str, str>::to(topic).payload("still fine"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer
        .flush(Duration::from_secs(20))
        .expect("good client's produce is acknowledged");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("group.id", "probe")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(20))
        .unwrap();
    assert!(high >= 1);
}

#[test]
fn two_gib_length_prefix_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let pid = server.pid();
    let before = rss_mib(pid);
    let mut stream = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    let peer = stream.local_addr().unwrap();
    stream.write_all(&0x7fff_ffffi32.to_be_bytes()).unwrap();
    stream.write_all(&[0u8; 64]).unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)),
        "oversized frame closes the connection"
    );
    assert!(
        rss_mib(pid) < before + 64,
        "no 2 GiB allocation: {} -> {} MiB",
        before,
        rss_mib(pid)
    );
    good_client_works(&server, "after-oversized");
    let line = log_line(&server, peer, "closing Kafka connection");
    assert!(
        line.contains("reason=bad frame: frame of 2147483647 bytes exceeds the limit of 104857600"),
        "the log names the refused frame size: {line}"
    );
}

#[test]
fn garbage_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let mut bystander = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    let mut garbage = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    let peer = garbage.local_addr().unwrap();
    let mut frame = 24i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x77; 24]);
    garbage.write_all(&frame).unwrap();
    assert!(
        closed_within(&mut garbage, Duration::from_secs(5)),
        "garbage request closes its connection"
    );
    // The other connection, opened before, is untouched.
    bystander.write_all(&api_versions_frame(7)).unwrap();
    bystander
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_response(&mut bystander).unwrap(), 7);
    good_client_works(&server, "after-garbage");
    let line = log_line(&server, peer, "closing Kafka connection");
    assert!(line.contains("reason=unknown api key 30583"), "{line}");
}

#[test]
fn truncated_frame_and_stalled_client_do_not_block_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let mut stalled = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    let peer = stalled.local_addr().unwrap();
    stalled.write_all(&100i32.to_be_bytes()).unwrap();
    stalled.write_all(&[0u8; 10]).unwrap();
    // Half a frame sits on one connection while another client works normally.
    good_client_works(&server, "beside-stalled");
    // A client that disconnects mid-frame costs nothing either.
    drop(stalled);
    good_client_works(&server, "beside-stalled");
    let line = log_line(&server, peer, "closing Kafka connection");
    assert!(
        line.contains("reason=bad frame: connection closed mid-frame (10 of 100 bytes)"),
        "{line}"
    );
}

#[test]
fn client_that_never_reads_responses_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let pid = server.pid();
    let before = rss_mib(pid);
    let mut greedy = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    let peer = greedy.local_addr().unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Pipeline requests without ever reading: the broker must stop reading from this socket
    // once its responses back up, so our writes eventually block instead of its memory growing.
    let frame = api_versions_frame(1);
    let mut written = 0usize;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        match greedy.write_all(&frame) {
            Ok(()) => written += frame.len(),
            Err(_) => break,
        }
    }
    let after = rss_mib(pid);
    eprintln!("wrote {written} bytes of requests; broker RSS {before} -> {after} MiB");
    assert!(
        after < before + 128,
        "broker memory bounded: {before} -> {after} MiB"
    );
    good_client_works(&server, "beside-greedy");
    let line = log_line(&server, peer, "client is not reading its responses");
    assert!(line.contains("pausing reads from it"), "{line}");
}

#[test]
fn five_thousand_idle_connections_stay_cheap() {
    // The test process needs more than the default 1024 descriptors.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(20_000);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let wanted = 5000usize.min(limit.rlim_cur as usize - 200);
    let dir = tempfile::tempdir().unwrap();
    // All from 127.0.0.1: lift the per-IP limit (default 1000) above the test's count.
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("SLUICE_LIMITS_MAX_CONNECTIONS_PER_IP", "20000")],
    );
    let pid = server.pid();
    let before = rss_mib(pid);
    let mut idle = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        idle.push(TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap());
    }
    // Every one of them is still served.
    let last = idle.last_mut().unwrap();
    last.write_all(&api_versions_frame(42)).unwrap();
    last.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_response(last).unwrap(), 42);
    good_client_works(&server, "beside-idle");
    let after = rss_mib(pid);
    eprintln!("{wanted} idle connections: broker RSS {before} -> {after} MiB");
    assert!(
        after < before + 200,
        "{wanted} idle connections cost {} MiB",
        after - before
    );
}
