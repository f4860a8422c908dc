//! The real client libraries, unchanged, in front of the simulator through the proxy: the
//! official Python SDK `b24pysdk`, `fast-bitrix24` (PyPI) and the official JS SDK
//! `@bitrix24/b24jssdk` (its webhook client `B24Hook`). Each test starts the simulator and a
//! proxy, runs one scenario step of the SDK's script under `tests/sdk/` (one JSON line per step)
//! and checks both what the SDK saw and what the proxy recorded and the simulator executed.
//!
//! b24pysdk and B24Hook build `https://` URLs and cannot be told otherwise, so they talk to a
//! proxy serving TLS with a throw-away CA (`[server] tls_cert`/`tls_key`), trusted through
//! `REQUESTS_CA_BUNDLE` and `NODE_EXTRA_CA_CERTS`: their real https code paths, unchanged.
//! fast-bitrix24 takes any URL and talks plain HTTP to the proxy (protocol doc §3.2).
//!
//! The SDKs are installed by `scripts/test` into `tests/sdk/.venv` and `tests/sdk/node_modules`.
//! Everything talks to 127.0.0.1 only.

mod support;

use portal_sim::SimHandle;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::*;

/// One script run: a few calls on loopback plus the interpreter's start-up. The SDKs back off
/// for seconds on a 5xx; no scenario may trigger that, and a retry loop must fail, not hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    /// b24pysdk: typed calls (`client.crm.automatedsolution.update`), `client.call_batch`.
    B24Py,
    /// fast-bitrix24: `call(raw=True)` for single calls, `call()`/`call_batch()` for batches.
    FastBitrix24,
    /// @bitrix24/b24jssdk `B24Hook`: `actions.v2.call.make`, `actions.v2.batch.make`.
    B24Js,
}

impl Sdk {
    fn name(self) -> &'static str {
        match self {
            Sdk::B24Py => "b24pysdk",
            Sdk::FastBitrix24 => "fast-bitrix24",
            Sdk::B24Js => "b24jssdk",
        }
    }

    fn tls(self) -> bool {
        self != Sdk::FastBitrix24
    }

    /// The batch keys the script uses: b24pysdk and b24jssdk send the caller's names,
    /// fast-bitrix24 labels commands itself (`order0000000000`, ...).
    fn keys(self) -> [&'static str; 2] {
        match self {
            Sdk::FastBitrix24 => ["order0000000000", "order0000000001"],
            Sdk::B24Py | Sdk::B24Js => ["rename", "bind"],
        }
    }

    fn refused_key(self) -> &'static str {
        match self {
            Sdk::FastBitrix24 => "order0000000001",
            Sdk::B24Py | Sdk::B24Js => "unbind",
        }
    }

    /// The SDK's normal exception for a 403 answer.
    fn forbidden_error(self) -> &'static str {
        match self {
            Sdk::B24Py => "BitrixAPIForbidden",
            Sdk::FastBitrix24 => "ClientResponseError",
            Sdk::B24Js => "AjaxError",
        }
    }

    /// Batch requests one `batch_reads` step sends (fast-bitrix24 uses two helpers).
    fn read_batches(self) -> usize {
        match self {
            Sdk::FastBitrix24 => 2,
            Sdk::B24Py | Sdk::B24Js => 1,
        }
    }

    /// The script's interpreter and path; fails clearly when the SDK is not installed.
    fn command(self) -> Command {
        let dir = sdk_dir();
        let install = "run ./scripts/test (it installs them), or by hand:";
        match self {
            Sdk::B24Py | Sdk::FastBitrix24 => {
                let python = dir.join(".venv/bin/python");
                assert!(
                    python.exists(),
                    "{} is missing, so {} cannot run: {install} python3 -m venv tests/sdk/.venv && \
                     tests/sdk/.venv/bin/pip install -r tests/sdk/requirements.txt",
                    python.display(),
                    self.name()
                );
                let script = if self == Sdk::B24Py {
                    "pysdk_check.py"
                } else {
                    "fastb24_check.py"
                };
                let mut c = Command::new(python);
                // -I: no user site-packages or PYTHON* variables; -B: no __pycache__ in tests/sdk.
                c.arg("-I").arg("-B").arg(dir.join(script));
                c
            }
            Sdk::B24Js => {
                let sdk = dir.join("node_modules/@bitrix24/b24jssdk/package.json");
                assert!(
                    sdk.exists(),
                    "{} is missing, so b24jssdk cannot run: {install} npm ci --prefix tests/sdk",
                    sdk.display()
                );
                let mut c = Command::new("node");
                c.arg(dir.join("jssdk_check.mjs"));
                c
            }
        }
    }
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it, made with `openssl`.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = support::make_pki(dir.path(), "sdk");
    Pki {
        ca: p.ca,
        cert: p.cert,
        key: p.key,
        _dir: dir,
    }
}

/// The simulator, a proxy in front of it (TLS for the SDKs that need https) and the SDK.
struct Harness {
    sdk: Sdk,
    sim: SimHandle,
    proxy: TestProxy,
    pki: Option<Pki>,
    /// What the SDK is given as `USER_ID/SECRET`: the webhook, or a proxy key in its place.
    webhook: String,
    _dir: tempfile::TempDir,
}

async fn harness(sdk: Sdk) -> Harness {
    harness_with(sdk, false).await
}

/// With `brokered`, the proxy holds the webhook (`[broker]`, `require_keys`) and the SDK only
/// a proxy key made with `keys create`.
async fn harness_with(sdk: Sdk, brokered: bool) -> Harness {
    let sim = sim().await;
    let pki = sdk.tls().then(make_pki);
    let dir = tempfile::tempdir().expect("dir");
    let mut extra = pki.as_ref().map_or_else(String::new, |p| {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            p.cert.display(),
            p.key.display()
        )
    });
    if brokered {
        let hooks = dir.path().join("webhooks.toml");
        std::fs::write(&hooks, format!("portal = \"{USER}/{SECRET}\"\n")).expect("webhooks");
        extra.push_str(&format!(
            "[broker]\nwebhooks_file = \"{}\"\nrequire_keys = true\n",
            hooks.display()
        ));
    }
    let proxy = TestProxy::builder(sim.addr)
        .dir(dir.path())
        .extra(&extra)
        .start();
    let webhook = if brokered {
        let out = Command::new(BIN)
            .args([
                "keys",
                "create",
                "--name",
                sdk.name(),
                "--webhook",
                "portal",
                "--config",
            ])
            .arg(&proxy.config)
            .output()
            .expect("keys create");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = text.lines().last().expect("the key's path").to_owned();
        path.trim_start_matches("/rest/")
            .trim_end_matches('/')
            .to_owned()
    } else {
        format!("{USER}/{SECRET}")
    };
    Harness {
        sdk,
        sim,
        proxy,
        pki,
        webhook,
        _dir: dir,
    }
}

impl Harness {
    /// Runs one scenario step of the SDK's script and returns its JSON line.
    async fn run(&self, step: &'static str) -> Value {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        let mut cmd = self.sdk.command();
        cmd.arg(step)
            .current_dir(sdk_dir())
            .env("B24_BASE_URL", format!("{scheme}://{}", self.proxy.proxy))
            .env("B24_WEBHOOK", &self.webhook)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        // Loopback only: no proxy from the environment, no CA bundle but the test's.
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "B24_CA_FILE",
            "B24_PLAIN_HTTP_OVERRIDE",
        ] {
            cmd.env_remove(var);
        }
        if let Some(pki) = &self.pki {
            cmd.env("B24_CA_FILE", &pki.ca)
                .env("REQUESTS_CA_BUNDLE", &pki.ca)
                .env("NODE_EXTRA_CA_CERTS", &pki.ca);
        }
        let what = format!("{} {step}", self.sdk.name());
        tokio::task::spawn_blocking(move || run_script(cmd, &what, step))
            .await
            .expect("script runner")
    }

    fn events(&self) -> Vec<Value> {
        self.proxy.export()
    }

    fn solution(&self, id: i64) -> (String, Vec<i64>) {
        let s = self.sim.sim.solution(id).expect("workplace exists");
        (s.title, s.type_ids)
    }
}

/// Runs `cmd` to completion within [`SCRIPT_TIMEOUT`] (killed after it) and returns the JSON
/// line of `step`; fails with the script's output if it exits non-zero or prints no such line.
fn run_script(mut cmd: Command, what: &str, step: &str) -> Value {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
    // The pipe closes when the script exits: that is the end of the run, or the timeout is.
    let out = match stdout.recv_timeout(SCRIPT_TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr
                .recv_timeout(Duration::from_secs(2))
                .unwrap_or_default();
            panic!(
                "{what} did not finish within {SCRIPT_TIMEOUT:?} (a retry loop or backoff?); stderr:\n{err}"
            );
        }
    };
    let status = child.wait().expect("wait");
    let err = stderr
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    assert!(
        status.success(),
        "{what} exited with {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    out.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["step"] == step)
        .unwrap_or_else(|| panic!("{what} printed no result line\nstdout:\n{out}\nstderr:\n{err}"))
}

fn assert_no_crash(sdk: Sdk, out: &Value) {
    assert_eq!(
        out["crashed"],
        false,
        "{} raised something other than its normal API error: {out:#}",
        sdk.name()
    );
}

/// Batch requests that reached the simulator with an update among their commands.
fn batches_with_updates(sim: &SimHandle) -> usize {
    sim.sim
        .calls()
        .iter()
        .filter(|c| c.rest_method.as_deref() == Some("batch"))
        .filter(|c| {
            let text = format!("{} {}", c.query, String::from_utf8_lossy(&c.body));
            text.to_ascii_lowercase().contains(UPDATE)
        })
        .count()
}

// ---- the scenarios ------------------------------------------------------------------------

/// A single update through the SDK's ordinary call: forwarded, applied, audited.
async fn single_update(sdk: Sdk) {
    let h = harness(sdk).await;
    let out = h.run("single_update").await;
    assert_no_crash(sdk, &out);
    let title = format!("HR ({})", sdk.name());
    let expected = json!({"id": 238, "title": title, "typeIds": [14, 158, 190]});
    assert_eq!(out["ok"], true, "{out:#}");
    assert_eq!(out["result"]["automatedSolution"], expected, "{out:#}");

    assert_eq!(h.solution(238), (title.clone(), vec![14, 158, 190]));
    assert_eq!(executed(&h.sim, UPDATE), 1);
    let events = h.events();
    assert_eq!(events.len(), 1, "one audited event: {events:#?}");
    let e = &events[0];
    assert_eq!(e["method"], UPDATE);
    assert_eq!(e["solution_id"], 238);
    assert_eq!(e["decision"], "allow");
    assert_eq!(e["outcome"], "applied", "{e:#}");
    assert_eq!(e["portal_status"], 200);
    assert_eq!(e["caller"]["auth"], "webhook");
    assert_eq!(e["caller"]["user_id"], USER);
    assert_eq!(e["batch"], Value::Null);
    assert_eq!(e["request"]["params"]["id"], 238);
    assert_eq!(
        e["request"]["params"]["fields"],
        json!({"title": title, "typeIds": [14, 158, 190]})
    );
    assert_eq!(
        e["before"],
        json!({"id": 238, "title": "HR & Customer Success", "typeIds": [14, 158]})
    );
    assert_eq!(e["after"], expected);
}

/// The SDK's batch helper over harmless reads: passed through, nothing audited.
async fn batch_reads(sdk: Sdk) {
    let h = harness(sdk).await;
    let out = h.run("batch_reads").await;
    assert_no_crash(sdk, &out);
    assert_eq!(out["ok"], true, "{out:#}");
    assert_eq!(
        out["solution"],
        json!({"id": 238, "title": "HR & Customer Success", "typeIds": [14, 158]}),
        "{out:#}"
    );
    assert_eq!(out["deal_count"], 50, "a full first page of deals: {out:#}");
    assert_eq!(out["user_id"], USER, "{out:#}");
    if sdk == Sdk::FastBitrix24 {
        assert_eq!(
            out["gets"],
            json!([
                {"id": 238, "title": "HR & Customer Success", "typeIds": [14, 158]},
                {"id": 267, "title": "Sales", "typeIds": [31]},
            ]),
            "{out:#}"
        );
    }
    assert_eq!(calls_of(&h.sim, "batch"), sdk.read_batches());
    assert!(h.sim.sim.executed_mutations().is_empty());
    assert!(h.events().is_empty(), "reads are not audited");
}

/// The SDK's batch helper with two watched updates: each command audited and applied.
async fn batch_updates(sdk: Sdk) {
    let h = harness(sdk).await;
    let out = h.run("batch_updates").await;
    assert_no_crash(sdk, &out);
    assert_eq!(out["ok"], true, "{out:#}");
    let title = format!("HR ({} batch)", sdk.name());
    let renamed = json!({"id": 238, "title": title, "typeIds": [14, 158]});
    let bound = json!({"id": 301, "title": "Support", "typeIds": [172, 190]});
    match sdk {
        // fast-bitrix24's call() returns the per-command results as a list, in order.
        Sdk::FastBitrix24 => assert_eq!(out["result"], json!([renamed, bound]), "{out:#}"),
        Sdk::B24Py | Sdk::B24Js => {
            assert_eq!(
                out["result"]["rename"]["automatedSolution"], renamed,
                "{out:#}"
            );
            assert_eq!(out["result"]["bind"]["automatedSolution"], bound, "{out:#}");
        }
    }

    assert_eq!(h.solution(238), (title.clone(), vec![14, 158]));
    assert_eq!(h.solution(301), ("Support".to_owned(), vec![172, 190]));
    assert_eq!(executed(&h.sim, UPDATE), 2);
    let events = h.events();
    assert_eq!(
        events.len(),
        2,
        "one audited event per command: {events:#?}"
    );
    let [rename_key, bind_key] = sdk.keys();
    let by_key = |key: &str| {
        events
            .iter()
            .find(|e| e["batch"]["key"] == key)
            .unwrap_or_else(|| panic!("no event for batch key {key}: {events:#?}"))
    };
    let (rename, bind) = (by_key(rename_key), by_key(bind_key));
    assert_eq!(rename["batch"]["id"], bind["batch"]["id"], "one batch");
    for (e, id, after) in [(rename, 238, &renamed), (bind, 301, &bound)] {
        assert_eq!(e["method"], UPDATE);
        assert_eq!(e["solution_id"], id);
        assert_eq!(e["decision"], "allow");
        assert_eq!(e["outcome"], "applied", "{e:#}");
        assert_eq!(e["caller"]["user_id"], USER);
        assert_eq!(&e["after"], after);
    }
    assert_eq!(
        bind["before"],
        json!({"id": 301, "title": "Support", "typeIds": [172]})
    );
}

/// A batch with a command that would unbind every smart process: refused whole (403 naming
/// the command's key), surfaced as the SDK's normal API error, nothing forwarded, one attempt.
async fn batch_refused(sdk: Sdk) {
    let h = harness(sdk).await;
    let out = h.run("batch_refused").await;
    assert_no_crash(sdk, &out);
    assert_eq!(out["raised"], true, "the SDK reports the refusal: {out:#}");
    assert_eq!(out["error"]["api_error"], true, "{out:#}");
    assert_eq!(out["error"]["type"], sdk.forbidden_error(), "{out:#}");
    assert_eq!(out["error"]["status"], 403, "{out:#}");
    if sdk != Sdk::FastBitrix24 {
        assert_eq!(out["error"]["code"], "POLICY_VIOLATION", "{out:#}");
        let description = out["error"]["description"].as_str().unwrap_or_default();
        assert!(
            description.contains(sdk.refused_key()),
            "the refusal names the command {}: {out:#}",
            sdk.refused_key()
        );
    }

    assert_eq!(
        h.solution(238),
        ("HR & Customer Success".to_owned(), vec![14, 158]),
        "the harmless command of a refused batch is not applied either"
    );
    assert_eq!(h.solution(267), ("Sales".to_owned(), vec![31]));
    // The proxy may read its snapshots with a batch of gets; no update may reach the portal.
    assert_eq!(batches_with_updates(&h.sim), 0, "nothing forwarded");
    assert_eq!(executed(&h.sim, UPDATE), 0);
    let events = h.events();
    assert!(
        events.iter().all(|e| e["outcome"] != "applied"),
        "{events:#?}"
    );
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e["decision"] == "deny" && e["solution_id"] == 267)
        .collect();
    assert_eq!(
        denied.len(),
        1,
        "exactly one attempt, no retry: {events:#?}"
    );
    assert_eq!(denied[0]["outcome"], "denied");
    assert_eq!(denied[0]["batch"]["key"], sdk.refused_key());
}

/// A single update with an empty `typeIds`: 403 POLICY_VIOLATION, surfaced as the SDK's normal
/// API error — not retried, not a crash — and nothing forwarded.
async fn empty_type_ids(sdk: Sdk) {
    let h = harness(sdk).await;
    let out = h.run("empty_type_ids").await;
    assert_no_crash(sdk, &out);
    assert_eq!(out["raised"], true, "the SDK reports the refusal: {out:#}");
    assert_eq!(out["error"]["api_error"], true, "{out:#}");
    assert_eq!(out["error"]["type"], sdk.forbidden_error(), "{out:#}");
    assert_eq!(out["error"]["status"], 403, "{out:#}");
    let events = h.events();
    assert_eq!(
        events.len(),
        1,
        "exactly one attempt reached the proxy (one denied event each): {events:#?}"
    );
    let e = &events[0];
    assert_eq!(e["method"], UPDATE);
    assert_eq!(e["solution_id"], 267);
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["rule"], "deny_empty_type_ids");
    assert_eq!(e["outcome"], "denied");
    match sdk {
        // fast-bitrix24 ignores an `error` body on HTTP 200 but raises aiohttp's
        // ClientResponseError on a non-2xx answer. It carries the status and the reason
        // phrase only, not the body, so POLICY_VIOLATION is visible in the trail, not to it.
        Sdk::FastBitrix24 => assert_eq!(out["error"]["message"], "Forbidden", "{out:#}"),
        Sdk::B24Py | Sdk::B24Js => {
            assert_eq!(out["error"]["code"], "POLICY_VIOLATION", "{out:#}");
            let description = out["error"]["description"].as_str().unwrap_or_default();
            let id = e["id"].as_str().expect("event id");
            assert!(
                description.contains(id),
                "the description names the audit event {id}: {out:#}"
            );
        }
    }
    assert_eq!(calls_of(&h.sim, UPDATE), 0, "nothing forwarded");
    assert_eq!(h.solution(267), ("Sales".to_owned(), vec![31]));
}

/// The SDK holding only a proxy key (`require_keys` on): its single call, its batch of reads
/// and its batch of updates all work, each change is recorded under the key's name, and every
/// request the portal got carried the real webhook.
async fn brokered(sdk: Sdk) {
    let h = harness_with(sdk, true).await;
    assert!(!h.webhook.contains(SECRET));
    for step in ["single_update", "batch_reads", "batch_updates"] {
        let out = h.run(step).await;
        assert_no_crash(sdk, &out);
        assert_eq!(out["ok"], true, "{step} with a proxy key: {out:#}");
    }
    assert_eq!(
        executed(&h.sim, UPDATE),
        3,
        "one single update, two in the batch"
    );
    let events = h.events();
    let changes: Vec<&Value> = events.iter().filter(|e| e["method"] == UPDATE).collect();
    assert_eq!(changes.len(), 3, "{events:#?}");
    for e in changes {
        assert_eq!(e["caller"]["integration"], sdk.name(), "{e:#}");
        assert_eq!(e["caller"]["user_id"], USER);
        assert_eq!(e["outcome"], "applied");
    }
    let key = h.webhook.split('/').nth(1).expect("key");
    for c in h.sim.sim.calls() {
        assert!(
            !c.path.contains(key),
            "the key reached the portal: {}",
            c.path
        );
    }
}

// ---- b24pysdk ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24pysdk_works_unchanged_with_a_proxy_key() {
    brokered(Sdk::B24Py).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24pysdk_single_update_is_audited_and_applied() {
    single_update(Sdk::B24Py).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24pysdk_batch_of_reads_passes_through() {
    batch_reads(Sdk::B24Py).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24pysdk_batch_of_updates_is_audited_per_command() {
    batch_updates(Sdk::B24Py).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24pysdk_batch_with_empty_type_ids_is_refused_whole() {
    batch_refused(Sdk::B24Py).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24pysdk_empty_type_ids_is_its_normal_api_error_without_retry() {
    empty_type_ids(Sdk::B24Py).await;
}

// ---- fast-bitrix24 -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_bitrix24_works_unchanged_with_a_proxy_key() {
    brokered(Sdk::FastBitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_bitrix24_single_update_is_audited_and_applied() {
    single_update(Sdk::FastBitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_bitrix24_batch_of_reads_passes_through() {
    batch_reads(Sdk::FastBitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_bitrix24_batch_of_updates_is_audited_per_command() {
    batch_updates(Sdk::FastBitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_bitrix24_batch_with_empty_type_ids_is_refused_whole() {
    batch_refused(Sdk::FastBitrix24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_bitrix24_raises_on_the_403_without_retry() {
    empty_type_ids(Sdk::FastBitrix24).await;
}

// ---- @bitrix24/b24jssdk --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24jssdk_works_unchanged_with_a_proxy_key() {
    brokered(Sdk::B24Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24jssdk_single_update_is_audited_and_applied() {
    single_update(Sdk::B24Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24jssdk_batch_of_reads_passes_through() {
    batch_reads(Sdk::B24Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24jssdk_batch_of_updates_is_audited_per_command() {
    batch_updates(Sdk::B24Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24jssdk_batch_with_empty_type_ids_is_refused_whole() {
    batch_refused(Sdk::B24Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24jssdk_empty_type_ids_is_its_normal_api_error_without_retry() {
    empty_type_ids(Sdk::B24Js).await;
}
