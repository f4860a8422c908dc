//! `[broker]`: integrations hold proxy keys, the portal's webhook secret is only in the webhooks
//! file. The real binary in front of the simulator, keys made with the real `keys` command line;
//! each test checks what the client got, what reached the portal (the simulator's own record
//! of every request, with its path), and the trail.

mod support;

use http::{Method, StatusCode};
use portal_sim::SimHandle;
use std::path::Path;
use std::process::Command;
use support::*;

struct Brokered {
    sim: SimHandle,
    proxy: TestProxy,
    _dir: tempfile::TempDir,
}

/// A proxy with `[broker]` (and `require_keys` when asked), the simulator's webhook `1/sim-secret-1`
/// named `crm` in its webhooks file.
async fn brokered(require_keys: bool) -> Brokered {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("dir");
    let hooks = dir.path().join("webhooks.toml");
    std::fs::write(&hooks, format!("crm = \"{USER}/{SECRET}\"\n")).expect("webhooks");
    let proxy = TestProxy::builder(sim.addr)
        .dir(dir.path())
        .extra(&format!(
            "[broker]\nwebhooks_file = \"{}\"\nrequire_keys = {require_keys}\n",
            hooks.display()
        ))
        .start();
    Brokered {
        sim,
        proxy,
        _dir: dir,
    }
}

fn keys(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("keys runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keys create`; the webhook path it printed last (`/rest/1/KEY/`).
fn create_key(b: &Brokered, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "--name", name, "--webhook", "crm"];
    args.extend_from_slice(extra);
    let (ok, out, err) = keys(&b.proxy.config, &args);
    assert!(ok, "{out}{err}");
    let path = out.lines().last().expect("a last line").to_owned();
    assert!(
        path.starts_with(&format!("/rest/{USER}/")) && path.ends_with('/'),
        "{out}"
    );
    path
}

fn url(b: &Brokered, hook_path: &str, method: &str) -> String {
    format!("http://{}{hook_path}{method}", b.proxy.proxy)
}

/// Every path that reached the simulator carried the real secret, never a key.
fn portal_saw_only_the_real_secret(b: &Brokered, key_path: &str) {
    let calls = b.sim.sim.calls();
    assert!(!calls.is_empty());
    for c in calls {
        assert!(
            !c.path.contains(key_path.trim_end_matches('/')),
            "{}",
            c.path
        );
        if c.path.starts_with(&format!("/rest/{USER}/")) {
            assert!(c.path.contains(SECRET), "{}", c.path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_does_everything_the_webhook_did_and_the_trail_names_it() {
    let b = brokered(false).await;
    let key = create_key(&b, "deals-sync", &[]);

    // Pass-through in the lane, pass-through through hyper (chunked), an inspected batch, an
    // audited update.
    let list = get(&url(&b, &key, "crm.deal.list")).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let chunked = raw(
        b.proxy.proxy,
        format!(
            "POST {key}crm.deal.list HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\
             Content-Type: application/json\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(
        chunked.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&chunked)
    );
    let batch = post_json(
        &url(&b, &key, "batch"),
        r#"{"halt":0,"cmd":{"a":"crm.deal.list","b":"user.current"}}"#,
    )
    .await;
    assert_eq!(batch.status, StatusCode::OK, "{:?}", batch.body);
    let update = post_json(
        &url(&b, &key, UPDATE),
        r#"{"id":238,"fields":{"title":"Via key"}}"#,
    )
    .await;
    assert_eq!(update.status, StatusCode::OK, "{:?}", update.body);
    assert_eq!(b.sim.sim.solution(238).expect("238").title, "Via key");
    portal_saw_only_the_real_secret(&b, &key);

    let events = b.proxy.export();
    let e = events
        .iter()
        .find(|e| e["method"] == UPDATE)
        .expect("update event");
    assert_eq!(e["caller"]["integration"], "deals-sync");
    assert_eq!(e["caller"]["user_id"], USER);
    // The key change is itself in the chain, with the key's fingerprint and never the key.
    let created = events
        .iter()
        .find(|e| e["method"] == "proxy.keys.create")
        .expect("key event");
    assert_eq!(created["request"]["params"]["name"], "deals-sync");
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&b.proxy.config)
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The real secret still works while keys are optional (the portal's own behaviour).
    let direct = get(&b.proxy.hook_url("crm.deal.list")).await;
    assert_eq!(direct.status, StatusCode::OK);

    // Neither the key nor the secret is in the log, the database or `keys list`.
    let secret_key = key.trim_end_matches('/').rsplit('/').next().expect("key");
    let (ok, listed, _) = keys(&b.proxy.config, &["list"]);
    assert!(
        ok && listed.contains("deals-sync") && !listed.contains(secret_key),
        "{listed}"
    );
    let db = std::fs::read(b.proxy.db_path()).expect("db");
    for needle in [secret_key, SECRET] {
        assert!(
            find(&db, needle.as_bytes()).is_none(),
            "{needle} in the database"
        );
        assert!(!b.proxy.log().contains(needle), "{needle} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_its_scope_is_refused_and_nothing_is_forwarded() {
    let b = brokered(false).await;
    let key = create_key(
        &b,
        "hr-only",
        &[
            "--methods",
            "crm.deal.*,crm.automatedsolution.*",
            "--solutions",
            "238",
        ],
    );
    let before = b.sim.sim.calls().len();

    let other_method = get(&url(&b, &key, "user.current")).await;
    assert_eq!(
        other_method.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        other_method.body
    );
    assert_eq!(other_method.json()["error"], "insufficient_scope");
    let batch = post_json(
        &url(&b, &key, "batch"),
        r#"{"cmd":{"a":"crm.deal.list","b":"user.current"}}"#,
    )
    .await;
    assert_eq!(batch.status, StatusCode::FORBIDDEN, "{:?}", batch.body);
    let other_workplace = post_json(
        &url(&b, &key, UPDATE),
        r#"{"id":267,"fields":{"title":"Not mine"}}"#,
    )
    .await;
    assert_eq!(
        other_workplace.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        other_workplace.body
    );
    assert_eq!(other_workplace.json()["error"], "POLICY_VIOLATION");
    let add = post_json(
        &url(&b, &key, "crm.automatedsolution.add"),
        r#"{"fields":{"title":"New","typeIds":[14]}}"#,
    )
    .await;
    assert_eq!(add.status, StatusCode::FORBIDDEN, "{:?}", add.body);
    // Only the snapshot reads of the audited attempts reached the portal (a read, or reads
    // bundled into one batch): no change did.
    assert!(b.sim.sim.executed_mutations().is_empty());
    let read = [
        "crm.automatedsolution.get",
        "crm.automatedsolution.list",
        "batch",
    ];
    assert!(
        b.sim.sim.calls()[before..]
            .iter()
            .all(|c| read.contains(&c.rest_method.as_deref().unwrap_or(""))),
        "{:?}",
        b.sim.sim.calls()[before..]
            .iter()
            .map(|c| c.rest_method.clone())
            .collect::<Vec<_>>()
    );
    let denied = b
        .proxy
        .export()
        .into_iter()
        .find(|e| e["solution_id"] == 267)
        .expect("denied event");
    assert_eq!(denied["rule"], "key_scope");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["caller"]["integration"], "hr-only");

    let mine = post_json(
        &url(&b, &key, UPDATE),
        r#"{"id":238,"fields":{"title":"Mine"}}"#,
    )
    .await;
    assert_eq!(mine.status, StatusCode::OK, "{:?}", mine.body);
    let deals = get(&url(&b, &key, "crm.deal.list")).await;
    assert_eq!(deals.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_keys_only_a_live_key_passes_and_changes_take_effect_at_once() {
    let b = brokered(true).await;
    let before = b.sim.sim.calls().len();
    for (method, url, body) in [
        (Method::GET, b.proxy.hook_url("crm.deal.list"), ""),
        (
            Method::POST,
            b.proxy.hook_url(UPDATE),
            r#"{"id":238,"fields":{"title":"x"}}"#,
        ),
        (
            Method::POST,
            b.proxy.url(&format!("/rest/{UPDATE}")),
            &*format!(
                r#"{{"id":238,"fields":{{"title":"x"}},"aplogin":"{USER}","ap":"{SECRET}"}}"#
            ),
        ),
    ] {
        let r = send(
            method,
            &url,
            &[("content-type", "application/json")],
            body.to_owned(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{url}: {:?}", r.body);
        assert_eq!(r.json()["error"], "NO_AUTH_FOUND");
    }
    assert_eq!(b.sim.sim.calls().len(), before, "nothing was forwarded");

    let key = create_key(&b, "ci", &[]);
    assert_eq!(
        get(&url(&b, &key, "crm.deal.list")).await.status,
        StatusCode::OK
    );
    // The same key under another user id is not that key.
    let other_user = key.replacen(&format!("/rest/{USER}/"), "/rest/2/", 1);
    assert_eq!(
        get(&url(&b, &other_user, "crm.deal.list")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Rotation with a grace period: both work; without one, the old key stops at once.
    let (ok, out, err) = keys(&b.proxy.config, &["rotate", "ci", "--grace", "10m"]);
    assert!(ok, "{out}{err}");
    let new_key = out.lines().last().expect("path").to_owned();
    for k in [&key, &new_key] {
        assert_eq!(
            get(&url(&b, k, "crm.deal.list")).await.status,
            StatusCode::OK
        );
    }
    let (ok, out, err) = keys(&b.proxy.config, &["rotate", "ci"]);
    assert!(ok, "{out}{err}");
    let newest = out.lines().last().expect("path").to_owned();
    for (k, want) in [
        (&key, StatusCode::UNAUTHORIZED),
        (&new_key, StatusCode::UNAUTHORIZED),
        (&newest, StatusCode::OK),
    ] {
        assert_eq!(get(&url(&b, k, "crm.deal.list")).await.status, want, "{k}");
    }

    let (ok, out, err) = keys(&b.proxy.config, &["revoke", "ci"]);
    assert!(ok, "{out}{err}");
    let revoked = post_json(
        &url(&b, &newest, UPDATE),
        r#"{"id":238,"fields":{"title":"y"}}"#,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&url(&b, &newest, "crm.deal.list")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_ne!(b.sim.sim.solution(238).expect("238").title, "y");

    let methods: Vec<String> = b
        .proxy
        .export()
        .iter()
        .filter_map(|e| e["method"].as_str().map(str::to_owned))
        .filter(|m| m.starts_with("proxy.keys."))
        .collect();
    assert_eq!(
        methods,
        [
            "proxy.keys.create",
            "proxy.keys.rotate",
            "proxy.keys.rotate",
            "proxy.keys.revoke"
        ]
    );
    let listed = keys(&b.proxy.config, &["list"]).1;
    assert!(listed.contains("revoked"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_override_the_rules_it_was_given_with_a_recorded_reason() {
    let b = brokered(false).await;
    let automation = create_key(&b, "unbinder", &["--may-override", "deny_empty_type_ids"]);
    let other = create_key(&b, "deleter", &["--may-override", "deny_delete"]);
    let unbind = r#"{"id":267,"fields":{"typeIds":[]}}"#;
    let reason = (
        "x-audit-override-reason",
        "CHG-1234: retire the Sales workplace",
    );
    let json_type = ("content-type", "application/json");

    // Without the header, or with a key that may override another rule: refused as usual.
    let plain = post_json(&url(&b, &automation, UPDATE), unbind).await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN, "{:?}", plain.body);
    let wrong_rule = send(
        Method::POST,
        &url(&b, &other, UPDATE),
        &[json_type, reason],
        unbind.to_owned(),
    )
    .await;
    assert_eq!(
        wrong_rule.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        wrong_rule.body
    );
    assert!(b.sim.sim.executed_mutations().is_empty());

    let allowed = send(
        Method::POST,
        &url(&b, &automation, UPDATE),
        &[json_type, reason],
        unbind.to_owned(),
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{:?}", allowed.body);
    assert!(b.sim.sim.solution(267).expect("267").type_ids.is_empty());
    let id = allowed.event_id().expect("event");
    let e = b
        .proxy
        .export()
        .into_iter()
        .find(|e| e["id"] == id.as_str())
        .expect("event");
    assert_eq!(e["decision"], "override");
    assert_eq!(e["rule"], "deny_empty_type_ids");
    assert_eq!(e["override_reason"], reason.1);
    assert_eq!(e["caller"]["integration"], "unbinder");
    assert_eq!(e["outcome"], "applied");
    // Only configurable rules can be given.
    let (ok, _, err) = keys(
        &b.proxy.config,
        &[
            "create",
            "--name",
            "x",
            "--webhook",
            "crm",
            "--may-override",
            "key_scope",
        ],
    );
    assert!(!ok && err.contains("not a policy rule"), "{err}");
    assert_eq!(
        b.proxy
            .metric(
                r#"b24proxy_policy_decisions_total{decision="override",rule="deny_empty_type_ids"}"#
            )
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_and_show_name_the_integration() {
    let b = brokered(false).await;
    let key = create_key(&b, "crm-sync", &[]);
    let r = post_json(
        &url(&b, &key, UPDATE),
        r#"{"id":238,"fields":{"title":"Listed"}}"#,
    )
    .await;
    let id = r.event_id().expect("event");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&b.proxy.config)
            .output()
            .expect("audit runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["audit", "list"]).contains("crm-sync (webhook:1)"));
    assert!(run(&["audit", "show", &id]).contains("integration crm-sync"));
}
