//! A differential fuzzer against real PHP: the rule "the portal executes only what the proxy read
//! and recorded", checked on generated requests.
//!
//! `tests/php/portal_reader.php` runs under `php -S` as a stand-in portal that reads requests
//! with PHP's own request handling (`$_GET`, `$_POST`, `php://input`, `parse_url`, `parse_str`)
//! and logs what it read. Each generated request — header sets with duplicates and
//! `Connection`, bodies with NULs, empty pieces and odd bytes, batch commands of every shape, in
//! every transport — is sent twice, byte for byte: straight to that portal (what the client
//! meant, as PHP reads it) and through the proxy to the same portal. Then either the proxy
//! refused it and nothing changed, or:
//! - the portal read the forwarded call exactly as it read the direct one (every unwatched
//!   command, every parameter), and every change it made is the same change; and
//! - every change the portal made through the proxy is in the trail, as recorded.
//!
//! Bounded: `B24_PHP_DIFF_SECONDS` (default 40) and `B24_PHP_DIFF_CASES` (default 20000), seed
//! from `B24_PHP_DIFF_SEED` or fresh, printed either way. A counterexample is printed with its
//! seed and case number, so it can be replayed and kept as a named regression case below.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{get, raw, TestProxy};

const SECRET: &str = "s3cr3t-hook";

/// The PHP stand-in portal: a `php -S` process and the log it writes.
struct PhpPortal {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    seen: usize,
    _dir: tempfile::TempDir,
}

impl PhpPortal {
    fn start() -> PhpPortal {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("reader.log");
        std::fs::write(&log, "").expect("log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/php/portal_reader.php");
        let child = Command::new("php")
            .args(["-d", "display_errors=stderr", "-d", "log_errors=0", "-S"])
            .arg(addr.to_string())
            .arg(script)
            .env("PORTAL_READER_LOG", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php-cli must be installed for this test (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "php -S did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        PhpPortal {
            child,
            addr,
            log,
            seen: 0,
            _dir: dir,
        }
    }

    /// The readings logged since the last call.
    fn new_readings(&mut self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).expect("log");
        let lines: Vec<Value> = text
            .lines()
            .skip(self.seen)
            .map(|l| serde_json::from_str(l).expect("a JSON reading"))
            .collect();
        self.seen += lines.len();
        lines
    }
}

impl Drop for PhpPortal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One generated request.
#[derive(Debug, Clone)]
struct Case {
    verb: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let target = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        write!(
            out,
            "{} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            self.verb
        )
        .expect("write");
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        write!(
            out,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        )
        .expect("write");
        out.extend_from_slice(&self.body);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Generation

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &[&'a T]) -> &'a T {
    items[rng.gen_range(0..items.len())]
}

/// A query string from the pieces that matter to PHP's readers.
fn gen_query(rng: &mut StdRng, watched: bool) -> String {
    let names: &[&str] = if watched && rng.gen_bool(0.8) {
        &[
            "id",
            "id",
            "fields[title]",
            "fields[title]",
            "fields[typeIds][]",
            "fields[typeIds][0]",
            "fields[typeIds]",
        ]
    } else if watched {
        &[
            "fields[TYPE_IDS][]",
            "Fields[title]",
            "fields.title",
            "fields[typeIds",
            "fields%5BtypeIds%5D%5B%5D",
            "fields[ ]",
            "ID",
            "auth",
        ]
    } else {
        &[
            "filter[>ID]",
            "select[]",
            "order[ID]",
            "start",
            "a",
            "a[]",
            "a[x][y]",
            "b.c",
            " d",
            "e[",
            "f[ ]",
            "%61",
            "fields[title]",
            "0",
            "g[x[y]",
        ]
    };
    let values: &[&str] = if rng.gen_bool(0.7) {
        &[
            "5",
            "05",
            "14",
            "15",
            "x",
            "A%26B",
            "a+b",
            "%C3%A9",
            "2024-01-01T10:00:00",
        ]
    } else {
        &[
            " 5",
            "1e1",
            "",
            "%00",
            "%zz",
            "%",
            "$result[x]",
            "%24result[x]",
            "1:2",
            "%23",
            "\u{1}",
            "\u{7f}",
            "-3",
            "[]",
            "=",
        ]
    };
    let n = rng.gen_range(0..6);
    let mut parts: Vec<String> = (0..n)
        .map(|_| {
            let name = pick(rng, names);
            if rng.gen_bool(0.1) {
                name.to_owned()
            } else {
                format!("{name}={}", pick(rng, values))
            }
        })
        .collect();
    if rng.gen_bool(0.15) {
        parts.push(String::new());
    }
    parts.join("&")
}

/// A batch command string of any shape.
fn gen_command(rng: &mut StdRng) -> String {
    let usual: &[&str] = &[
        "crm.deal.list",
        "CRM.Deal.List",
        "user.current",
        "crm.automatedsolution.update",
        "Crm.AutomatedSolution.Update",
        "crm.automatedsolution.add",
        "crm.automatedsolution.delete",
        "crm.type.update",
        "crm.type.add",
        "crm.item.list",
    ];
    let odd: &[&str] = &[
        "crm.automatedsolution.update.json",
        "x:80",
        "http:crm.automatedsolution.update",
        "//portal/crm.automatedsolution.update",
        "/crm.deal.list",
        " crm.deal.list",
        "crm.deal.list\u{1}",
        "a:b@c:1",
        "",
    ];
    let method = if rng.gen_bool(0.85) {
        pick(rng, usual)
    } else {
        pick(rng, odd)
    };
    let watched = method.to_ascii_lowercase().contains("automatedsolution");
    let mut c = method.to_owned();
    if rng.gen_bool(0.85) {
        c.push('?');
        if watched && rng.gen_bool(0.7) {
            c.push_str("id=5&");
        }
        c.push_str(&gen_query(rng, watched));
    }
    if rng.gen_bool(0.1) {
        c.push('#');
        c.push_str(pick(rng, &["", "x", "&fields[typeIds][]=", "a:80", "b?c"]));
    }
    c
}

/// Percent-encodes a command for a form or query transport, sometimes leaving a byte raw.
fn outer_encode(rng: &mut StdRng, s: &str, sloppy: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'[' | b']');
        if keep || (sloppy && rng.gen_bool(0.2) && b > 0x20 && b < 0x7f) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What can stand in a request line: control characters and spaces percent-encoded.
fn printable(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b <= 0x20 || b >= 0x7f {
                format!("%{b:02X}")
            } else {
                (b as char).to_string()
            }
        })
        .collect()
}

enum Transport {
    Json,
    Form,
    Raw,
    Query,
}

fn gen_case(rng: &mut StdRng) -> Case {
    let credential = rng.gen_range(0..10);
    let prefix = if credential < 7 {
        format!("/rest/1/{SECRET}/")
    } else {
        "/rest/".to_owned()
    };
    let transport = match rng.gen_range(0..20) {
        0..=6 => Transport::Json,
        7..=13 => Transport::Form,
        14..=16 => Transport::Raw,
        _ => Transport::Query,
    };
    let kind = rng.gen_range(0..10);
    let (method, form_pairs, json_body) = match kind {
        0..=4 => gen_batch(rng),
        5..=7 => gen_single(rng),
        _ => gen_type_call(rng),
    };
    // Batch commands are raw strings to encode once more; other values are already encoded.
    let is_batch = kind <= 4;
    let value = |rng: &mut StdRng, v: &str, sloppy: bool| {
        if is_batch {
            outer_encode(rng, v, sloppy)
        } else {
            v.to_owned()
        }
    };
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut query = String::new();
    let mut body: Vec<u8> = Vec::new();
    let mut verb = "POST";
    match transport {
        Transport::Json => {
            body = json_body.into_bytes();
            // One request in five spells its Content-Type another way; most of those spellings
            // are refused (PHP and the portal read them differently), so they stay rare enough
            // for the run to keep exercising forwarding.
            let ct = if rng.gen_bool(0.8) {
                "application/json"
            } else {
                pick(
                    rng,
                    &[
                        "application/json; charset=utf-8",
                        "application/json;charset=UTF-8",
                        "application/json ; charset=utf-8",
                        "application/json, text/plain",
                        "Application/JSON",
                        "application/jsonp",
                        "text/json",
                    ],
                )
            };
            headers.push(("Content-Type".into(), ct.as_bytes().to_vec()));
        }
        Transport::Form | Transport::Raw => {
            let sloppy = rng.gen_bool(0.3);
            let text: Vec<String> = form_pairs
                .iter()
                .map(|(k, v)| format!("{}={}", outer_encode(rng, k, false), value(rng, v, sloppy)))
                .collect();
            body = text.join("&").into_bytes();
            let ct = match transport {
                Transport::Form if rng.gen_bool(0.8) => "application/x-www-form-urlencoded",
                Transport::Form => pick(
                    rng,
                    &[
                        "application/x-www-form-urlencoded; charset=UTF-8",
                        "application/x-www-form-urlencoded;charset=utf-8",
                        "Application/X-WWW-Form-Urlencoded",
                        "application/x-www-form-urlencoded,text/plain",
                        "application/x-www-form-urlencoded2",
                    ],
                ),
                _ if rng.gen_bool(0.8) => {
                    pick(rng, &["text/plain", "", "application/octet-stream"])
                }
                _ => pick(
                    rng,
                    &[
                        "multipart/form-data; boundary=x",
                        "text/plain; charset=utf-8",
                    ],
                ),
            };
            if !ct.is_empty() {
                headers.push(("Content-Type".into(), ct.as_bytes().to_vec()));
            }
        }
        Transport::Query => {
            verb = pick(rng, &["GET", "GET", "POST", "HEAD"]);
            query = form_pairs
                .iter()
                .map(|(k, v)| {
                    let v = value(rng, v, false);
                    format!("{}={}", outer_encode(rng, k, false), printable(&v))
                })
                .collect::<Vec<_>>()
                .join("&");
        }
    }
    match credential {
        7 => {
            if query.is_empty() {
                query = "auth=tok-1".into();
            } else {
                query.push_str("&auth=tok-1");
            }
        }
        8 => headers.push(("Authorization".into(), b"Bearer tok-1".to_vec())),
        9 if matches!(transport, Transport::Form | Transport::Raw) => {
            body.extend_from_slice(b"&auth=tok-1")
        }
        _ => {}
    }
    mutate_framing(rng, &mut headers, &mut body);
    Case {
        verb,
        path: format!("{prefix}{method}"),
        query,
        headers,
        body,
    }
}

/// Header and body quirks: a second Content-Type, `Connection` naming one, NULs, empty pieces.
fn mutate_framing(rng: &mut StdRng, headers: &mut Vec<(String, Vec<u8>)>, body: &mut Vec<u8>) {
    if rng.gen_bool(0.08) {
        let second = pick(
            rng,
            &[
                "application/x-www-form-urlencoded",
                "text/plain",
                "application/json",
            ],
        );
        let at = rng.gen_range(0..=headers.len());
        headers.insert(at, ("Content-Type".into(), second.as_bytes().to_vec()));
    }
    if rng.gen_bool(0.08) {
        let named = pick(
            rng,
            &[
                "Content-Type",
                "content-length",
                "keep-alive, Content-Type",
                "Authorization",
            ],
        );
        headers.push(("Connection".into(), named.as_bytes().to_vec()));
    }
    if rng.gen_bool(0.04) {
        headers.push(("Content-Encoding".into(), b"identity".to_vec()));
    }
    if !body.is_empty() && rng.gen_bool(0.06) {
        let at = rng.gen_range(0..=body.len());
        body.insert(at, 0);
    }
    if !body.is_empty() && rng.gen_bool(0.06) {
        let at = rng.gen_range(0..=body.len());
        body.splice(at..at, b"&&".iter().copied());
    }
    if rng.gen_bool(0.04) {
        body.insert(0, b'\n');
    }
    if rng.gen_bool(0.03) {
        body.push(0xff);
    }
}

type Pairs = Vec<(String, String)>;

fn gen_batch(rng: &mut StdRng) -> (String, Pairs, String) {
    let n = rng.gen_range(1..5);
    let list = rng.gen_bool(0.25);
    let cmd_name = pick(rng, &["cmd", "cmd", "CMD", "Cmd"]);
    let mut pairs = Vec::new();
    let mut cmds = serde_json::Map::new();
    let mut list_cmds = Vec::new();
    // One unwatched read the snapshot never sends, so the forwarded batch is recognisable.
    let mut commands = vec!["crm.deal.list?start=0".to_owned()];
    commands.extend((0..n).map(|_| gen_command(rng)));
    for (i, c) in commands.iter().enumerate() {
        let key = if list {
            String::new()
        } else {
            pick(rng, &["u", "r", "x.y", "a b", "0", "k"]).to_owned() + &i.to_string()
        };
        pairs.push((format!("{cmd_name}[{key}]"), c.clone()));
        if list {
            list_cmds.push(json!(c));
        } else {
            cmds.insert(key, json!(c));
        }
    }
    let halt = pick(rng, &["0", "1", "false", "", "N"]);
    if rng.gen_bool(0.6) {
        pairs.push((pick(rng, &["halt", "HALT"]).to_owned(), halt.to_owned()));
    }
    let cmd_json = if list {
        json!(list_cmds)
    } else {
        Value::Object(cmds)
    };
    let mut body = json!({ cmd_name: cmd_json, "halt": halt });
    if rng.gen_bool(0.1) {
        body["start"] = json!(-1);
    }
    let mut text = body.to_string();
    if rng.gen_bool(0.05) {
        // A duplicate key, written by hand.
        text = text.replacen('{', "{\"halt\":1,", 1);
    }
    let method = pick(rng, &["batch", "batch", "Batch", "batch.json"]).to_owned();
    (method, pairs, text)
}

fn gen_single(rng: &mut StdRng) -> (String, Pairs, String) {
    let method = pick(
        rng,
        &[
            "crm.automatedsolution.update",
            "crm.automatedsolution.Update.json",
            "crm.automatedsolution.add",
            "crm.automatedsolution.delete",
        ],
    )
    .to_owned();
    let q = if rng.gen_bool(0.7) {
        format!(
            "id={}&{}",
            pick(rng, &["5", "7", "05"]),
            gen_query(rng, true)
        )
    } else {
        gen_query(rng, true)
    };
    let pairs = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let id = pick(
        rng,
        &[
            "5", "\"5\"", "\"05\"", "5.0", "null", "\"1e1\"", "7", "true",
        ],
    );
    let title = pick(rng, &["\"x\"", "\"A&B\"", "5", "null", "[\"a\"]"]);
    let type_ids = pick(
        rng,
        &[
            "[14]",
            "[]",
            "[\"14\",\"15\"]",
            "\"14\"",
            "null",
            "[0]",
            "{\"1\":3}",
            "[\"\"]",
        ],
    );
    let mut fields = vec![];
    if rng.gen_bool(0.7) {
        fields.push(format!("\"title\":{title}"));
    }
    if rng.gen_bool(0.7) {
        fields.push(format!(
            "\"{}\":{type_ids}",
            pick(rng, &["typeIds", "typeIds", "TYPE_IDS", "typeids"])
        ));
    }
    let body = format!("{{\"id\":{id},\"fields\":{{{}}}}}", fields.join(","));
    (method, pairs, body)
}

fn gen_type_call(rng: &mut StdRng) -> (String, Pairs, String) {
    let method = pick(rng, &["crm.type.update", "crm.type.add", "CRM.TYPE.UPDATE"]).to_owned();
    let key = pick(
        rng,
        &[
            "title",
            "title",
            "customSectionId",
            "CUSTOM_SECTION_ID",
            "isExternal",
            "code",
        ],
    );
    let value = pick(rng, &["3", "x", "Y", ""]);
    let pairs = vec![
        ("id".to_owned(), "3".to_owned()),
        (format!("fields[{key}]"), value.to_owned()),
        ("entityTypeId".to_owned(), "1030".to_owned()),
    ];
    let body = json!({"id": 3, "fields": {key: value}, "entityTypeId": 1030}).to_string();
    (method, pairs, body)
}

// ---------------------------------------------------------------------------------------------
// Checking

/// Reads the proxy sends on its own (snapshots, owner look-ups, identity): never a forward.
fn is_internal(r: &Value) -> bool {
    let read_only = |m: &str| {
        matches!(
            m,
            "crm.automatedsolution.get" | "crm.automatedsolution.list" | "user.current"
        )
    };
    match r["method"].as_str() {
        Some("batch") => r["commands"].as_array().is_some_and(|cmds| {
            cmds.iter().all(|c| {
                c["method"]
                    .as_str()
                    .is_some_and(|m| read_only(&m.to_ascii_lowercase()))
            })
        }),
        Some(m) => read_only(m),
        None => false,
    }
}

fn without_credentials(params: &Value) -> Value {
    let mut p = params.clone();
    if let Value::Object(m) = &mut p {
        for k in ["auth", "access_token", "aplogin", "ap"] {
            m.remove(k);
        }
        let batch_keys: Vec<String> = m
            .keys()
            .filter(|k| k.eq_ignore_ascii_case("cmd") || k.eq_ignore_ascii_case("halt"))
            .cloned()
            .collect();
        for k in batch_keys {
            m.remove(&k);
        }
    }
    p
}

/// The direct reading and the one through the proxy mean the same.
fn same_meaning(direct: &Value, forwarded: &Value) -> Result<(), String> {
    if direct["method"] != forwarded["method"] {
        return Err(format!(
            "method: {} vs {}",
            direct["method"], forwarded["method"]
        ));
    }
    if direct["changes"] != forwarded["changes"] {
        return Err(format!(
            "changes: {} vs {}",
            direct["changes"], forwarded["changes"]
        ));
    }
    if direct["method"] == "batch" {
        if direct["halt"] != forwarded["halt"] {
            return Err("halt differs".into());
        }
        let (Some(d), Some(f)) = (
            direct["commands"].as_array(),
            forwarded["commands"].as_array(),
        ) else {
            return Err("no commands".into());
        };
        if d.len() != f.len() {
            return Err(format!("{} commands vs {}", d.len(), f.len()));
        }
        for (dc, fc) in d.iter().zip(f) {
            let changes = dc["method"]
                .as_str()
                .is_some_and(|m| m.to_ascii_lowercase().contains("automatedsolution."));
            let lower = |c: &Value| c["method"].as_str().map(str::to_ascii_lowercase);
            let same_method = if changes {
                lower(dc) == lower(fc)
            } else {
                dc["method"] == fc["method"]
            };
            if dc["key"] != fc["key"] || !same_method {
                return Err(format!("command {dc} vs {fc}"));
            }
            // A watched command leaves in canonical form: its change is compared above.
            if !changes && dc["params"] != fc["params"] {
                return Err(format!("command {} params: {dc} vs {fc}", dc["key"]));
            }
        }
    } else if !direct["method"]
        .as_str()
        .is_some_and(|m| m.contains("automatedsolution."))
        && direct["params"] != forwarded["params"]
    {
        return Err("params differ".into());
    }
    let (dp, fp) = (
        without_credentials(&direct["params"]),
        without_credentials(&forwarded["params"]),
    );
    if direct["method"] == "batch" && dp != fp {
        return Err(format!("batch parameters: {dp} vs {fp}"));
    }
    Ok(())
}

/// The trail's events recorded since `cursor`, once each has its outcome.
async fn new_events(proxy: &TestProxy, cursor: &mut i64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&format!(
            "http://{}/v1/events?cursor={cursor}&limit=200",
            proxy.admin
        ))
        .await
        .json();
        let events = r["events"].as_array().cloned().unwrap_or_default();
        if events.iter().all(|e| !e["outcome"].is_null()) || Instant::now() > deadline {
            if let Some(last) = events.last().and_then(|e| e["cursor"].as_i64()) {
                *cursor = last;
            }
            return events;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every change the portal made is an event in the trail with the same effect.
fn trail_matches(changes: &[Value], events: &[Value]) -> Result<(), String> {
    let forwarded: Vec<&Value> = events.iter().filter(|e| e["outcome"] != "denied").collect();
    if forwarded.len() != changes.len() {
        return Err(format!(
            "{} changes executed, {} forwarded events in the trail",
            changes.len(),
            forwarded.len()
        ));
    }
    for (c, e) in changes.iter().zip(forwarded) {
        let req = &e["request"]["params"];
        let method = c["method"].as_str().unwrap_or_default();
        let ok = e["method"] == c["method"]
            && (method.ends_with(".add") || req.get("id") == c.get("id"))
            && (method.ends_with(".delete")
                || (req["fields"].get("title").unwrap_or(&Value::Null) == &c["title"]
                    && req["fields"].get("typeIds").unwrap_or(&Value::Null) == &c["typeIds"]
                    && c["other_fields"] == json!([])));
        if !ok {
            return Err(format!("portal did {c}, trail says {req}"));
        }
    }
    Ok(())
}

struct Tally {
    refusals: std::collections::BTreeMap<String, usize>,
    tried: usize,
    forwarded: usize,
    changes: usize,
}

async fn check_case(
    portal: &mut PhpPortal,
    proxy: &TestProxy,
    cursor: &mut i64,
    case: &Case,
    tally: &mut Tally,
) -> Result<(), String> {
    let bytes = case.bytes();
    raw(portal.addr, &bytes).await;
    let direct = portal.new_readings().pop();
    let answer = raw(proxy.proxy, &bytes).await;
    let through = portal.new_readings();
    let events = new_events(proxy, cursor).await;
    tally.tried += 1;
    let changes: Vec<Value> = through
        .iter()
        .flat_map(|r| r["changes"].as_array().cloned().unwrap_or_default())
        .collect();
    trail_matches(&changes, &events)?;
    let forwards: Vec<&Value> = through.iter().filter(|r| !is_internal(r)).collect();
    match forwards.as_slice() {
        [] => {
            let text = String::from_utf8_lossy(&answer);
            let code = text
                .split("\"error\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("(no envelope)");
            let seen = tally.refusals.entry(code.to_owned()).or_default();
            *seen += 1;
            if *seen <= 3 && std::env::var_os("B24_PHP_DIFF_VERBOSE").is_some() {
                println!(
                    "refused {code}: {:?}\n  -> {:?}",
                    String::from_utf8_lossy(&bytes),
                    text.lines().last()
                );
            }
            Ok(())
        }
        [f] => {
            tally.forwarded += 1;
            tally.changes += changes.len();
            let d = direct.ok_or("PHP read nothing sent directly, the proxy forwarded it")?;
            same_meaning(&d, f).map_err(|e| format!("{e}\n  direct:    {d}\n  forwarded: {f}"))
        }
        many => Err(format!("{} forwards for one request", many.len())),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counterexamples the fuzzer found, each kept as a named case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regressions_found_by_the_fuzzer() {
    let mut portal = PhpPortal::start();
    let proxy = TestProxy::builder(portal.addr).start();
    let json = |body: &str| Case {
        verb: "POST",
        path: format!("/rest/1/{SECRET}/batch"),
        query: String::new(),
        headers: vec![("Content-Type".into(), b"application/json".to_vec())],
        body: body.as_bytes().to_vec(),
    };
    let cases = [
        // Against the previous main: parse_url reads scheme `http` and path
        // `crm.automatedsolution.update`, so the portal ran an update the proxy forwarded as an
        // unwatched command (a change with no audit event).
        (
            "a command with a scheme",
            false,
            json(
                r#"{"cmd":["crm.deal.list?start=0","http:crm.automatedsolution.update?id=5&fields[typeIds][0]=05"]}"#,
            ),
        ),
        // Against the previous main: top-level batch parameters were dropped from the rebuilt
        // batch.
        (
            "top-level parameters of a batch",
            true,
            json(r#"{"cmd":{"a":"crm.deal.list?start=0"},"start":-1,"select":[""]}"#),
        ),
        // `if ($query)` in the portal's batch: "0" is false to PHP, so `m?0` has no parameters.
        (
            "a command query of 0",
            true,
            json(r#"{"cmd":{"a":"crm.deal.list?start=0","b":"crm.type.update?0"}}"#),
        ),
    ];
    let mut cursor = 0;
    let mut tally = Tally {
        refusals: Default::default(),
        tried: 0,
        forwarded: 0,
        changes: 0,
    };
    for (name, forwarded, case) in cases {
        let before = tally.forwarded;
        if let Err(e) = check_case(&mut portal, &proxy, &mut cursor, &case, &mut tally).await {
            panic!("{name}: {e}");
        }
        assert_eq!(tally.forwarded > before, forwarded, "{name}: forwarded?");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_reads_exactly_what_the_proxy_read_and_recorded() {
    let mut portal = PhpPortal::start();
    let proxy = TestProxy::builder(portal.addr).start();
    let seed: u64 = env_or("B24_PHP_DIFF_SEED", rand::random());
    let seconds: u64 = env_or("B24_PHP_DIFF_SECONDS", 40);
    let max_cases: usize = env_or("B24_PHP_DIFF_CASES", 20_000);
    println!("php differential: seed {seed}, {seconds} s, at most {max_cases} cases");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cursor = 0;
    let mut tally = Tally {
        refusals: Default::default(),
        tried: 0,
        forwarded: 0,
        changes: 0,
    };
    let started = Instant::now();
    let mut n = 0;
    while n < max_cases && started.elapsed() < Duration::from_secs(seconds) {
        let case = gen_case(&mut rng);
        if let Err(e) = check_case(&mut portal, &proxy, &mut cursor, &case, &mut tally).await {
            panic!(
                "seed {seed}, case {n}: {e}\n  request: {:?}",
                String::from_utf8_lossy(&case.bytes())
            );
        }
        n += 1;
    }
    println!(
        "php differential: {} requests tried, {} forwarded ({} changes executed and audited), {} refused",
        tally.tried,
        tally.forwarded,
        tally.changes,
        tally.tried - tally.forwarded
    );
    println!("php differential: refusals by code {:?}", tally.refusals);
    assert!(tally.tried > 50, "the run was too short to mean anything");
    assert!(
        tally.forwarded * 4 > tally.tried,
        "most requests were refused: the generator no longer exercises forwarding"
    );
}
