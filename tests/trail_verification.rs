//! Independent verification: `scripts/verify-trail` (Python standard library only) over
//! `audit export --entries` must reach the same verdict as `audit verify` over the database,
//! on the same trails — intact, tampered in every way the chain is meant to catch, pruned,
//! written partly in the legacy canonical form, and with heads signed by the proxy's Ed25519
//! key (checked by the script's pure-Python RFC 8032 verifier).
//!
//! Trails are made by the real proxy in front of the simulator, copied with `audit backup`, and
//! tampered with directly in SQLite (the append-only triggers dropped first, as an attacker with
//! the file would).

mod support;

use b24_audit_proxy::audit::chain::{canonical_json_v1, entry_hash, GENESIS};
use rusqlite::{params, Connection};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `(exit code, first line of stdout, stderr)` of the proxy binary.
fn bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config for the `audit` commands over `db`.
fn config_for(dir: &Path, db: &Path) -> PathBuf {
    let path = dir.join(format!(
        "{}.toml",
        db.file_name().and_then(|n| n.to_str()).unwrap_or("db")
    ));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
             [audit]\ndatabase = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            db.display()
        ),
    )
    .expect("config");
    path
}

struct Verdicts {
    rust: (i32, String),
    python: (i32, String),
}

impl Verdicts {
    /// Both verifiers agree: same exit code, same one-line verdict.
    fn agree(&self) -> &Self {
        assert_eq!(
            self.rust, self.python,
            "audit verify and scripts/verify-trail disagree"
        );
        self
    }

    fn ok(&self) -> &Self {
        self.agree();
        assert_eq!(self.rust.0, 0, "{}", self.rust.1);
        assert!(self.rust.1.starts_with("ok: "), "{}", self.rust.1);
        self
    }

    fn failed(&self, needle: &str) -> &Self {
        self.agree();
        assert_eq!(self.rust.0, 1, "{}", self.rust.1);
        assert!(
            self.rust.1.starts_with("FAILED: ") && self.rust.1.contains(needle),
            "expected a failure mentioning {needle:?}, got {:?}",
            self.rust.1
        );
        self
    }
}

/// Runs both verifiers over `db`: `audit verify` on the database, the script on its export.
fn verdicts(dir: &Path, db: &Path, extra: &[&str]) -> Verdicts {
    let config = config_for(dir, db);
    let config = config.to_str().expect("path");
    let mut args = vec!["audit", "verify", "--config", config];
    args.extend_from_slice(extra);
    let (code, out, err) = bin(&args);
    assert!(code == 0 || code == 1, "audit verify: {code} {out} {err}");
    let rust = (code, out.lines().next().unwrap_or("").to_owned());

    let (code, export, err) = bin(&["audit", "export", "--entries", "--config", config]);
    assert_eq!(code, 0, "export --entries: {err}");
    let file = dir.join(format!(
        "{}.jsonl",
        db.file_name().and_then(|n| n.to_str()).unwrap_or("db")
    ));
    std::fs::write(&file, export).expect("export file");
    let out = Command::new("python3")
        .arg(repo("scripts/verify-trail"))
        .arg(&file)
        .args(extra)
        .output()
        .expect("python3 runs (scripts/test installs it)");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "verify-trail: {code} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = (
        code,
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
    );
    Verdicts { rust, python }
}

/// A verified copy of `db` at `dir/name` (made with `audit backup`), to tamper with.
fn copy(dir: &Path, db: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    let config = config_for(dir, db);
    let (code, out, err) = bin(&[
        "audit",
        "backup",
        "--config",
        config.to_str().expect("path"),
        "--to",
        to.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "backup: {out} {err}");
    to
}

/// Opens a copy for tampering: the append-only triggers are an obstacle only for honest code.
fn tamper(db: &Path) -> Connection {
    let c = Connection::open(db).expect("open copy");
    c.execute_batch("DROP TRIGGER audit_entries_no_update; DROP TRIGGER audit_entries_no_delete;")
        .expect("drop triggers");
    c
}

/// Recomputes every hash from entry `from` on, as an attacker without the signing key would to
/// hide a change — signed heads included: each is made to name its new predecessor (its
/// signature, which the attacker cannot make, stays as it was).
fn rechain(c: &Connection, from: i64) {
    let rows: Vec<(i64, String)> = c
        .prepare("SELECT seq, payload FROM audit_entries WHERE seq >= ?1 ORDER BY seq")
        .expect("prep")
        .query_map([from], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut prev: String = c
        .query_row(
            "SELECT hash FROM audit_entries WHERE seq = ?1",
            [from - 1],
            |r| r.get(0),
        )
        .unwrap_or_else(|_| GENESIS.to_owned());
    for (seq, mut payload) in rows {
        let mut v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        if v["kind"] == "signed_head" {
            v["signed_hash"] = json!(prev);
            payload = b24_audit_proxy::audit::chain::canonical_json(&v);
        }
        let hash = entry_hash(&prev, &payload);
        c.execute(
            "UPDATE audit_entries SET prev_hash = ?1, hash = ?2, payload = ?3 WHERE seq = ?4",
            params![prev, hash, payload, seq],
        )
        .expect("rechain");
        prev = hash;
    }
}

fn payload(c: &Connection, seq: i64) -> serde_json::Value {
    let text: String = c
        .query_row(
            "SELECT payload FROM audit_entries WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .expect("payload");
    serde_json::from_str(&text).expect("json")
}

fn seq_of_kind(c: &Connection, kind: &str) -> Vec<i64> {
    c.prepare("SELECT seq FROM audit_entries WHERE kind = ?1 ORDER BY seq")
        .expect("prep")
        .query_map([kind], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn head(db: &Path) -> (i64, String) {
    Connection::open(db)
        .expect("open")
        .query_row(
            "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("head")
}

/// Serves a few audited calls (allowed and denied) with the proxy, then stops it cleanly.
async fn serve_some_calls(dir: &Path, sim: &portal_sim::SimHandle, audit: &str, n: usize) {
    let mut proxy = TestProxy::builder(sim.addr).dir(dir).audit(audit).start();
    let url = proxy.hook_url(UPDATE);
    for i in 0..n {
        let r = post_json(
            &url,
            &format!(r#"{{"id":238,"fields":{{"title":"HR {i} — «ü» 😀"}}}}"#),
        )
        .await;
        assert_eq!(r.status, http::StatusCode::OK, "{:?}", r.body);
    }
    let denied = post_json(&url, r#"{"id":267,"fields":{"typeIds":[]}}"#).await;
    assert_eq!(denied.status, http::StatusCode::FORBIDDEN);
    assert!(proxy.terminate().success(), "{}", proxy.log());
}

#[tokio::test]
async fn both_verifiers_agree_on_intact_and_tampered_trails() {
    let sim = sim().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    serve_some_calls(dir, &sim, "", 3).await;
    let db = dir.join("audit.db");
    verdicts(dir, &db, &[]).ok();

    // A payload edited in place: its own hash no longer matches.
    let altered = copy(dir, &db, "altered.db");
    let c = tamper(&altered);
    let mut p = payload(&c, 3);
    p["decision"] = json!("deny");
    c.execute(
        "UPDATE audit_entries SET payload = ?1 WHERE seq = 3",
        [b24_audit_proxy::audit::chain::canonical_json(&p)],
    )
    .expect("edit");
    drop(c);
    verdicts(dir, &altered, &[]).failed("entry 3 was altered: its payload does not match its hash");
    // A trail that does not verify is not backed up as if it did.
    let refused = dir.join("altered-backup.db");
    let (code, out, _) = bin(&[
        "audit",
        "backup",
        "--config",
        config_for(dir, &altered).to_str().expect("path"),
        "--to",
        refused.to_str().expect("path"),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify"), "{out}");
    assert!(!refused.exists());

    // The same edit with its hash recomputed: the next entry no longer links to it.
    let rehashed = copy(dir, &db, "rehashed.db");
    let c = tamper(&rehashed);
    c.execute(
        "UPDATE audit_entries SET payload = ?1 WHERE seq = 3",
        [b24_audit_proxy::audit::chain::canonical_json(&p)],
    )
    .expect("edit");
    let prev: String = c
        .query_row(
            "SELECT prev_hash FROM audit_entries WHERE seq = 3",
            [],
            |r| r.get(0),
        )
        .expect("prev");
    let text: String = c
        .query_row("SELECT payload FROM audit_entries WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .expect("payload");
    c.execute(
        "UPDATE audit_entries SET hash = ?1 WHERE seq = 3",
        [entry_hash(&prev, &text)],
    )
    .expect("rehash");
    drop(c);
    verdicts(dir, &rehashed, &[])
        .failed("entry 4 was altered: it does not link to the entry before it");

    // A payload that is not in its canonical form (whitespace), hashed consistently.
    let spaced = copy(dir, &db, "spaced.db");
    let c = tamper(&spaced);
    let text: String = c
        .query_row("SELECT payload FROM audit_entries WHERE seq = 2", [], |r| {
            r.get(0)
        })
        .expect("payload");
    c.execute(
        "UPDATE audit_entries SET payload = ?1 WHERE seq = 2",
        [text.replacen(':', ": ", 1)],
    )
    .expect("edit");
    rechain(&c, 2);
    drop(c);
    verdicts(dir, &spaced, &[]).failed("entry 2 was altered: its payload is not in canonical form");

    // JSON that only a lax parser takes, or that names a member twice, hashed consistently.
    for (name, edit, verdict) in [
        (
            "nan.db",
            "NaN",
            "entry 2 was altered: its payload is not JSON",
        ),
        (
            "huge.db",
            "1e400",
            "entry 2 was altered: its payload is not JSON",
        ),
        (
            "dup.db",
            "dup",
            "entry 2 was altered: its payload is not in canonical form",
        ),
    ] {
        let copy_db = copy(dir, &db, name);
        let c = tamper(&copy_db);
        let text: String = c
            .query_row("SELECT payload FROM audit_entries WHERE seq = 2", [], |r| {
                r.get(0)
            })
            .expect("payload");
        let edited = match edit {
            "dup" => format!("{{\"kind\":\"completed\",{}", &text[1..]),
            number => text.replacen("\"seq\":2", &format!("\"seq\":2,\"x\":{number}"), 1),
        };
        assert_ne!(edited, text);
        c.execute(
            "UPDATE audit_entries SET payload = ?1 WHERE seq = 2",
            [edited],
        )
        .expect("edit");
        rechain(&c, 2);
        drop(c);
        verdicts(dir, &copy_db, &[]).failed(verdict);
    }

    // A deleted entry.
    let deleted = copy(dir, &db, "deleted.db");
    let c = tamper(&deleted);
    c.execute("DELETE FROM audit_entries WHERE seq = 4", [])
        .expect("delete");
    drop(c);
    verdicts(dir, &deleted, &[]).failed("entries 4..4 are missing (next entry is 5)");

    // Two entries swapped (each row keeps its position, takes the other's content).
    let swapped = copy(dir, &db, "swapped.db");
    let c = tamper(&swapped);
    c.execute_batch(
        "UPDATE audit_entries SET seq = -3 WHERE seq = 3; \
         UPDATE audit_entries SET seq = 3 WHERE seq = 4; \
         UPDATE audit_entries SET seq = 4 WHERE seq = -3;",
    )
    .expect("swap");
    drop(c);
    verdicts(dir, &swapped, &[])
        .failed("entry 3 was altered: it does not link to the entry before it");

    // The newest entries cut off: undetectable from the trail alone, caught against a head
    // recorded earlier.
    let (_, full_head) = head(&db);
    let truncated = copy(dir, &db, "truncated.db");
    let c = tamper(&truncated);
    c.execute("DELETE FROM audit_entries WHERE seq > 4", [])
        .expect("truncate");
    drop(c);
    verdicts(dir, &truncated, &[]).ok();
    verdicts(dir, &truncated, &["--head", &full_head]).failed("is not in the trail");
    verdicts(dir, &db, &["--head", &full_head]).ok();
}

#[tokio::test]
async fn both_verifiers_agree_on_pruned_trails() {
    let sim = sim().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    serve_some_calls(dir, &sim, "", 2).await;
    let db = dir.join("audit.db");
    let config = dir.join("proxy.toml");
    let (code, out, err) = bin(&[
        "audit",
        "prune",
        "--config",
        config.to_str().expect("path"),
        "--before",
        "2999-01-01",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    serve_some_calls(dir, &sim, "", 2).await;
    let v = verdicts(dir, &db, &[]);
    v.ok();
    assert!(v.rust.1.contains("pruned"), "{}", v.rust.1);
    let (_, full_head) = head(&db);

    // Truncated after the checkpoint: caught against the later head.
    let truncated = copy(dir, &db, "truncated.db");
    let c = tamper(&truncated);
    let checkpoint = seq_of_kind(&c, "checkpoint")[0];
    c.execute("DELETE FROM audit_entries WHERE seq > ?1", [checkpoint + 1])
        .expect("truncate");
    drop(c);
    verdicts(dir, &truncated, &["--head", &full_head]).failed("is not in the trail");

    // The checkpoint removed: nothing explains where the remaining chain starts.
    let no_checkpoint = copy(dir, &db, "no-checkpoint.db");
    let c = tamper(&no_checkpoint);
    c.execute("DELETE FROM audit_entries WHERE seq = ?1", [checkpoint])
        .expect("delete");
    drop(c);
    verdicts(dir, &no_checkpoint, &[]).failed("are missing");

    // An entry the checkpoint vouches for, deleted after it (the first one kept).
    let first_gone = copy(dir, &db, "first-gone.db");
    let c = tamper(&first_gone);
    let first: i64 = c
        .query_row("SELECT MIN(seq) FROM audit_entries", [], |r| r.get(0))
        .expect("min");
    c.execute("DELETE FROM audit_entries WHERE seq = ?1", [first])
        .expect("delete");
    drop(c);
    verdicts(dir, &first_gone, &[]).failed("are missing");
}

#[tokio::test]
async fn signed_heads_are_made_by_rust_and_checked_by_both() {
    let sim = sim().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let key = dir.join("keys/head.key");
    let (code, out, err) = bin(&["audit", "keygen", "--out", key.to_str().expect("path")]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("BEGIN PUBLIC KEY"), "{out}");
    let public = dir.join("keys/head.key.pub");
    let public_arg = public.to_str().expect("path");
    let audit = format!("signing_key_file = \"{}\"", key.display());

    // Two runs: each stop signs the head; the second start finds it signed and adds nothing.
    serve_some_calls(dir, &sim, &audit, 2).await;
    serve_some_calls(dir, &sim, &audit, 1).await;
    let db = dir.join("audit.db");
    let c = Connection::open(&db).expect("open");
    let signed = seq_of_kind(&c, "signed_head");
    assert_eq!(signed.len(), 2, "one signed head per clean stop");
    assert_eq!(
        Some(&head(&db).0),
        signed.last(),
        "the trail ends with the shutdown signature"
    );
    assert_eq!(payload(&c, signed[1])["reason"], "shutdown");
    drop(c);

    let v = verdicts(dir, &db, &["--public-key", public_arg]);
    v.ok();
    assert!(v.rust.1.contains("2 signed heads verify"), "{}", v.rust.1);
    let unchecked = verdicts(dir, &db, &[]);
    unchecked.ok();
    assert!(unchecked.rust.1.contains("signatures not checked"));

    // Rewriting the trail without the key: an edit before a signed head, every hash after it
    // recomputed. The chain alone verifies; the signature does not.
    let forged = copy(dir, &db, "forged.db");
    let c = tamper(&forged);
    let mut p = payload(&c, 2);
    p["outcome"] = json!("denied");
    c.execute(
        "UPDATE audit_entries SET payload = ?1, outcome = 'denied' WHERE seq = 2",
        [b24_audit_proxy::audit::chain::canonical_json(&p)],
    )
    .expect("edit");
    rechain(&c, 2);
    drop(c);
    verdicts(dir, &forged, &[]).ok();
    verdicts(dir, &forged, &["--public-key", public_arg]).failed(&format!(
        "entry {} was altered: its signature does not verify",
        signed[0]
    ));

    // Checked against another key.
    let other = dir.join("other.key");
    assert_eq!(
        bin(&["audit", "keygen", "--out", other.to_str().expect("path")]).0,
        0
    );
    let other_pub = format!("{}.pub", other.display());
    verdicts(dir, &db, &["--public-key", &other_pub]).failed("not with the given public key");

    // The signed heads cut off with the newest entries: a copy of the last signed head taken
    // from the log (its signature checkable by anyone with the public key) catches it.
    let (_, signed_head) = head(&db);
    let truncated = copy(dir, &db, "truncated.db");
    let c = tamper(&truncated);
    c.execute("DELETE FROM audit_entries WHERE seq >= ?1", [signed[1]])
        .expect("truncate");
    drop(c);
    let v = verdicts(dir, &truncated, &["--public-key", public_arg]);
    v.ok();
    assert!(v.rust.1.contains("entries after it"), "{}", v.rust.1);
    verdicts(
        dir,
        &truncated,
        &["--public-key", public_arg, "--head", &signed_head],
    )
    .failed("is not in the trail");
    let all_gone = copy(dir, &db, "unsigned.db");
    let c = tamper(&all_gone);
    c.execute("DELETE FROM audit_entries WHERE seq >= ?1", [signed[0]])
        .expect("truncate");
    drop(c);
    verdicts(dir, &all_gone, &["--public-key", public_arg]).failed("holds no signed head");
}

#[tokio::test]
async fn legacy_entries_still_verify_beside_rfc_8785_ones() {
    // A trail begun by an earlier version (form 1: no "v", keys by UTF-8 bytes, serde_json
    // numbers), with what the two forms write differently: a double and a key outside the BMP.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let db = dir.join("audit.db");
    {
        let mut c = Connection::open(&db).expect("create");
        c.execute_batch("PRAGMA journal_mode = WAL").expect("wal");
        b24_audit_proxy::audit::migrate::apply(&mut c).expect("schema");
        let mut prev = GENESIS.to_owned();
        for seq in 1..=2i64 {
            let kind = if seq == 1 { "received" } else { "completed" };
            let mut p = json!({
                "seq": seq, "time": "2026-01-05T10:00:00.000Z", "event_id": "legacy-1",
                "kind": kind, "method": UPDATE, "solution_id": 238,
                "before": {"ratio": 1.5, "big": 1e21, "\u{fb33}": 1, "\u{1f600}": 2},
            });
            if seq == 2 {
                p["outcome"] = json!("applied");
            }
            let text = canonical_json_v1(&p);
            let hash = entry_hash(&prev, &text);
            c.execute(
                "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
                 VALUES (?1, 'legacy-1', ?2, '2026-01-05T10:00:00.000Z', ?3, 238, ?4, ?5, ?6, ?7)",
                params![seq, kind, UPDATE, if seq == 2 { Some("applied") } else { None }, text, prev, hash],
            )
            .expect("insert");
            prev = hash;
        }
    }
    verdicts(dir, &db, &[]).ok();
    let sim = sim().await;
    serve_some_calls(dir, &sim, "", 1).await;
    let c = Connection::open(&db).expect("open");
    assert!(payload(&c, 1).get("v").is_none());
    assert_eq!(payload(&c, 3)["v"], 2, "new entries are written in form 2");
    drop(c);
    let v = verdicts(dir, &db, &[]);
    v.ok();
    assert!(v.rust.1.starts_with("ok: 6 entries verify"), "{}", v.rust.1);
}

/// A small deterministic generator, so a failure is reproducible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11 ^ self.0 << 53
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn text(&mut self) -> String {
        // What RFC 8785 treats specially: quotes, backslash, every control character, DEL,
        // non-ASCII in and above the BMP (U+E000..U+FFFF sorts after surrogate pairs in UTF-16).
        const PIECES: [&str; 16] = [
            "a", "Z", "\"", "\\", "/", "\u{0}", "\u{8}", "\t", "\n", "\u{1f}", "\u{7f}", "é",
            "\u{2028}", "\u{fb33}", "\u{ffff}", "😀",
        ];
        (0..self.below(5)).map(|_| PIECES[self.below(16)]).collect()
    }

    fn number(&mut self) -> serde_json::Value {
        match self.below(4) {
            0 => json!(self.next() as i64 >> self.below(64)),
            1 => json!((1u64 << 53) - 1 + self.below(3) as u64),
            _ => loop {
                // Any finite double, spread over every exponent.
                let x = f64::from_bits(self.next());
                if x.is_finite() {
                    break json!(x);
                }
            },
        }
    }

    fn value(&mut self, depth: usize) -> serde_json::Value {
        match if depth == 0 {
            self.below(4)
        } else {
            self.below(6)
        } {
            0 => json!(null),
            1 => json!(self.below(2) == 0),
            2 => self.number(),
            3 => json!(self.text()),
            4 => serde_json::Value::Array(
                (0..self.below(4)).map(|_| self.value(depth - 1)).collect(),
            ),
            _ => serde_json::Value::Object(
                (0..self.below(5))
                    .map(|_| (self.text(), self.value(depth - 1)))
                    .collect(),
            ),
        }
    }
}

#[test]
fn rust_and_python_write_the_same_rfc_8785_text_for_random_values() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("values.jsonl");
    let mut rng = Lcg(0x5eed);
    let values: Vec<serde_json::Value> = (0..2000).map(|_| rng.value(3)).collect();
    let lines: Vec<String> = values
        .iter()
        .map(|v| serde_json::to_string(v).expect("json"))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    let script = r#"
import importlib.machinery, importlib.util, json, sys
loader = importlib.machinery.SourceFileLoader("verify_trail", sys.argv[1])
spec = importlib.util.spec_from_loader("verify_trail", loader)
vt = importlib.util.module_from_spec(spec)
loader.exec_module(vt)
with open(sys.argv[2], encoding="utf-8") as f:
    for line in f:
        sys.stdout.write(vt.canonical(json.loads(line), 2) + "\n")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(repo("scripts/verify-trail"))
        .arg(&input)
        .env("PYTHONIOENCODING", "utf-8")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = String::from_utf8(out.stdout).expect("utf-8");
    let mut n = 0;
    for ((value, line), py) in values.iter().zip(&lines).zip(python.lines()) {
        assert_eq!(
            b24_audit_proxy::audit::chain::canonical_json(value),
            py,
            "for {line}"
        );
        n += 1;
    }
    assert_eq!(n, values.len(), "one answer per value");
}

#[tokio::test]
async fn heads_are_signed_every_interval_while_serving_and_idle_adds_nothing() {
    let sim = sim().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let key = dir.join("head.key");
    assert_eq!(
        bin(&["audit", "keygen", "--out", key.to_str().expect("path")]).0,
        0
    );
    let audit = format!(
        "signing_key_file = \"{}\"\nhead_log_interval = \"100ms\"",
        key.display()
    );
    let mut proxy = TestProxy::builder(sim.addr).dir(dir).audit(&audit).start();
    let db = proxy.db_path();
    let signed = |db: &Path| -> Vec<(i64, i64, String)> {
        let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
        let mut stmt = c
            .prepare(
                "SELECT seq, payload FROM audit_entries WHERE kind = 'signed_head' ORDER BY seq",
            )
            .expect("prep");
        let rows: Vec<(i64, i64, String)> = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .expect("query")
            .map(|r| {
                let (seq, p) = r.expect("row");
                let v: serde_json::Value = serde_json::from_str(&p).expect("json");
                (
                    seq,
                    v["signed_seq"].as_i64().unwrap_or(-1),
                    v["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        rows
    };
    let url = proxy.hook_url(UPDATE);
    let entries = |db: &Path| head(db).0;
    for round in 1..=2i64 {
        let r = post_json(
            &url,
            &format!(r#"{{"id":238,"fields":{{"title":"round {round}"}}}}"#),
        )
        .await;
        assert_eq!(r.status, http::StatusCode::OK);
        // The call's intent and outcome are in; the next tick signs what it finds.
        eventually("the interval signs the new head", || {
            let s = signed(&db);
            s.len() as i64 >= round
                && s.last().is_some_and(|(seq, signed_seq, reason)| {
                    *seq == entries(&db) && *signed_seq == seq - 1 && reason == "interval"
                })
        })
        .await;
    }
    // Idle: the head is a signed head, so the ticks that follow add nothing.
    // Each tick logs the head ("Chain head", as opposed to "Chain head signed").
    let ticks = |p: &TestProxy| {
        let log = p.log();
        log.matches("Chain head").count() - log.matches("Chain head signed").count()
    };
    let (before, seen) = (entries(&db), ticks(&proxy));
    eventually("three more ticks", || ticks(&proxy) >= seen + 3).await;
    assert_eq!(entries(&db), before, "an idle proxy signs nothing new");
    // Never two signatures in a row: a signed head always signs something new.
    let s = signed(&db);
    assert!(s.windows(2).all(|w| w[1].0 > w[0].0 + 1), "{s:?}");
    let public = format!("{}.pub", key.display());
    let v = verdicts(dir, &db, &["--public-key", &public]);
    v.ok();
    assert!(v.rust.1.contains("2 signed heads verify"), "{}", v.rust.1);
    // The admin API checks the signatures with the proxy's own public key.
    let api = get(&format!("http://{}/v1/chain/verify", proxy.admin))
        .await
        .json();
    assert_eq!(api["ok"], true, "{api}");
    assert_eq!(api["signatures_checked"], true, "{api}");
    assert_eq!(api["signed_heads"], 2, "{api}");
    assert!(proxy.terminate().success());
    assert_eq!(
        signed(&db).len(),
        2,
        "the head was already signed at shutdown"
    );
}
