//! What a SIEM consumes: `audit export --follow` (new events as they are committed, stopped by
//! SIGTERM), `--until`, `--format ocsf`, and `[audit.syslog]` — RFC 5424 over TCP with
//! octet-counting framing and over UDP, to loopback listeners started here, and a receiver that
//! is down, which must cost requests nothing (entries dropped and counted instead).

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::*;
use tokio::io::AsyncReadExt;

/// Longest wait for something a test expects (a line, an exit); never a fixed sleep.
const PATIENCE: Duration = Duration::from_secs(20);

async fn one_update(proxy: &TestProxy, title: &str) {
    let r = post_json(
        &proxy.hook_url(UPDATE),
        &format!(r#"{{"id":238,"fields":{{"title":"{title}"}}}}"#),
    )
    .await;
    assert_eq!(r.status, http::StatusCode::OK, "{:?}", r.body);
}

fn export_entries(proxy: &TestProxy) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["audit", "export", "--entries", "--config"])
        .arg(&proxy.config)
        .output()
        .expect("export");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Splits an RFC 5424 message into its header fields and the entry it carries.
fn parse_message(msg: &[u8]) -> (Vec<String>, String) {
    let text = std::str::from_utf8(msg).expect("utf-8");
    let (head, body) = text.split_once('\u{feff}').expect("BOM before MSG");
    let fields: Vec<String> = head.split(' ').map(str::to_owned).collect();
    (fields, body.to_owned())
}

fn check_header(fields: &[String]) {
    // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD ""
    assert!(
        fields[0].starts_with('<') && fields[0].ends_with(">1"),
        "{fields:?}"
    );
    let pri: u32 = fields[0][1..fields[0].len() - 2].parse().expect("PRI");
    assert_eq!(pri / 8, 13, "facility: log audit");
    assert!(
        fields[1].ends_with('Z') && fields[1].contains('T'),
        "{fields:?}"
    );
    assert_eq!(fields[2], "proxy-test");
    assert_eq!(fields[3], "b24-audit-proxy");
    assert!(fields[4].parse::<u32>().is_ok(), "PROCID");
    assert!(
        ["received", "completed"].contains(&fields[5].as_str()),
        "{fields:?}"
    );
    assert_eq!(fields[6], "-");
}

#[tokio::test]
async fn syslog_over_tcp_uses_octet_counting_and_carries_every_committed_entry() {
    let sim = sim().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let section = format!(
        "[audit.syslog]\naddress = \"{addr}\"\ntransport = \"tcp\"\nhostname = \"proxy-test\"\n"
    );
    let mut proxy = TestProxy::builder(sim.addr).extra(&section).start();
    one_update(&proxy, "HR via syslog").await;
    one_update(&proxy, "HR via syslog 2").await;

    let (mut conn, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the proxy connects")
        .expect("accept");
    let mut messages = Vec::new();
    let mut buf = Vec::new();
    while messages.len() < 4 {
        // Frames: "LEN SP MSG".
        if let Some(sp) = buf.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp])
                .expect("ascii")
                .parse()
                .expect("octet count");
            if buf.len() >= sp + 1 + len {
                messages.push(buf[sp + 1..sp + 1 + len].to_vec());
                buf.drain(..sp + 1 + len);
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, conn.read(&mut chunk))
            .await
            .expect("messages arrive")
            .expect("read");
        assert!(n > 0, "connection closed after {} messages", messages.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    let exported = export_entries(&proxy);
    assert_eq!(exported.len(), 4);
    for (msg, line) in messages.iter().zip(&exported) {
        let (fields, body) = parse_message(msg);
        check_header(&fields);
        assert_eq!(
            &body, line,
            "the message is the entry as export --entries writes it"
        );
    }
    eventually_async("the sent counter", PATIENCE, || async {
        proxy.metric("b24proxy_syslog_sent_total").await == Some(4.0)
    })
    .await;
    assert_eq!(
        proxy.metric("b24proxy_syslog_dropped_total").await,
        Some(0.0)
    );
    assert!(proxy.terminate().success());
}

#[tokio::test]
async fn syslog_over_udp_sends_one_datagram_per_entry() {
    let sim = sim().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = sock.local_addr().expect("addr");
    let section = format!(
        "[audit.syslog]\naddress = \"{addr}\"\ntransport = \"udp\"\nhostname = \"proxy-test\"\n"
    );
    let mut proxy = TestProxy::builder(sim.addr).extra(&section).start();
    one_update(&proxy, "HR via udp").await;
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let mut buf = vec![0u8; 65536];
        let n = tokio::time::timeout(PATIENCE, sock.recv(&mut buf))
            .await
            .expect("a datagram arrives")
            .expect("recv");
        let (fields, body) = parse_message(&buf[..n]);
        check_header(&fields);
        bodies.push(body);
    }
    assert_eq!(bodies, export_entries(&proxy));
    assert!(proxy.terminate().success());
}

#[tokio::test]
async fn a_syslog_receiver_that_is_down_never_blocks_or_fails_a_request() {
    let sim = sim().await;
    // A port with nothing listening on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let section = format!("[audit.syslog]\naddress = \"{addr}\"\nqueue_capacity = 1\n");
    let mut proxy = TestProxy::builder(sim.addr).extra(&section).start();
    for i in 0..4 {
        one_update(&proxy, &format!("HR while syslog is down {i}")).await;
    }
    // 8 entries: at most one held by the sender and one in the queue; the rest are dropped.
    eventually_async("drops are counted", PATIENCE, || async {
        proxy.metric("b24proxy_syslog_dropped_total").await >= Some(6.0)
    })
    .await;
    assert_eq!(proxy.metric("b24proxy_syslog_sent_total").await, Some(0.0));
    assert_eq!(export_entries(&proxy).len(), 8, "the trail has every entry");
    assert!(proxy.terminate().success(), "{}", proxy.log());
}

/// A running `audit export` whose stdout lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(proxy: &TestProxy, args: &[&str]) -> Follower {
        let mut child = Command::new(BIN)
            .args(["audit", "export", "--config"])
            .arg(&proxy.config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("export --follow starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(PATIENCE).expect("a line arrives");
        serde_json::from_str(&line).expect("a JSON line")
    }

    /// Waits (bounded) for the process to exit by itself.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "the follower did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_exit()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn follow_streams_events_as_they_are_committed_until_sigterm() {
    let sim = sim().await;
    let mut proxy = TestProxy::builder(sim.addr).start();
    one_update(&proxy, "before following").await;

    let mut events = Follower::start(&proxy, &["--follow", "--poll-interval", "50ms"]);
    let mut ocsf = Follower::start(
        &proxy,
        &["--follow", "--format", "ocsf", "--poll-interval", "50ms"],
    );
    let mut entries = Follower::start(
        &proxy,
        &["--follow", "--entries", "--poll-interval", "50ms"],
    );
    let first = events.next();
    assert_eq!(
        first["request"]["params"]["fields"]["title"],
        "before following"
    );
    assert_eq!(first["outcome"], "applied");
    assert_eq!(entries.next()["seq"], 1);
    assert_eq!(entries.next()["seq"], 2);

    one_update(&proxy, "while following").await;
    let second = events.next();
    assert_eq!(
        second["request"]["params"]["fields"]["title"],
        "while following"
    );
    assert_eq!(entries.next()["seq"], 3);
    assert_eq!(entries.next()["seq"], 4);
    for expected in ["before following", "while following"] {
        let o = ocsf.next();
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["activity_id"], 3, "update");
        assert_eq!(o["status_id"], 1, "success");
        assert_eq!(o["api"]["operation"], UPDATE);
        assert_eq!(
            o["unmapped"]["request"]["params"]["fields"]["title"],
            expected
        );
    }
    for f in [&mut events, &mut ocsf, &mut entries] {
        assert!(f.terminate().success(), "stops cleanly on SIGTERM");
    }
    assert!(proxy.terminate().success());
}

#[tokio::test]
async fn until_bounds_an_export_and_ends_a_follow() {
    let sim = sim().await;
    let mut proxy = TestProxy::builder(sim.addr).start();
    one_update(&proxy, "early").await;
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["audit", "export", "--config"])
            .arg(&proxy.config)
            .args(args)
            .output()
            .expect("export");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8").lines().count()
    };
    assert_eq!(run(&["--until", "2000-01-01"]), 0);
    assert_eq!(run(&["--until", "2999-01-01"]), 1);
    assert_eq!(run(&["--entries", "--until", "2000-01-01"]), 0);
    // A follow whose --until has passed writes what is there and stops by itself.
    let mut f = Follower::start(
        &proxy,
        &[
            "--follow",
            "--until",
            "2000-01-01",
            "--poll-interval",
            "50ms",
        ],
    );
    assert!(f.wait_exit().success());
    let mut f = Follower::start(&proxy, &["--follow", "--until", "2999-01-01T00:00:00Z"]);
    assert_eq!(f.next()["request"]["params"]["fields"]["title"], "early");
    assert!(f.terminate().success());
    assert!(proxy.terminate().success());
}
