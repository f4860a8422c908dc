//! The compliance trail: tamper evidence (`audit verify`, `--head`), retention (`audit prune`),
//! queries (`audit list`/`show`, the admin API with its token), identity for both auth forms,
//! and `revert` round trips — each through the real binary in front of the simulator.

mod support;

use http::{Method, StatusCode};
use rusqlite::Connection;
use serde_json::{json, Value};
use std::process::Command;
use support::*;

fn cli(proxy: &TestProxy, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&proxy.config)
        .output()
        .expect("cli runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A few events: two applied updates, one denial.
async fn some_events(proxy: &TestProxy) {
    for body in [
        r#"{"id":238,"fields":{"title":"A"}}"#,
        r#"{"id":238,"fields":{"typeIds":[14]}}"#,
        r#"{"id":267,"fields":{"typeIds":[]}}"#,
    ] {
        post_json(&proxy.hook_url(UPDATE), body).await;
    }
}

/// Opens the trail with the append-only triggers removed, as an attacker with file access would.
fn tamper(proxy: &TestProxy) -> Connection {
    let c = Connection::open(proxy.dir.join("audit.db")).expect("open");
    c.execute_batch("DROP TRIGGER audit_entries_no_update; DROP TRIGGER audit_entries_no_delete;")
        .expect("drop triggers");
    c
}

#[tokio::test]
async fn verify_passes_on_an_untouched_trail_and_names_each_kind_of_tampering() {
    let sim = sim().await;
    let mut proxy = TestProxy::builder(sim.addr).start();
    some_events(&proxy).await;
    let (code, out, _) = cli(&proxy, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 6 entries verify"), "{out}");
    let head = out.rsplit("head ").next().expect("head").trim().to_owned();
    proxy.terminate();

    // The append-only triggers stop ordinary writes.
    let plain = Connection::open(proxy.dir.join("audit.db")).expect("open");
    assert!(plain
        .execute("UPDATE audit_entries SET payload = '{}' WHERE seq = 2", [])
        .is_err());
    assert!(plain
        .execute("DELETE FROM audit_entries WHERE seq = 2", [])
        .is_err());
    drop(plain);

    let db = tamper(&proxy);
    let original: String = db
        .query_row("SELECT payload FROM audit_entries WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .expect("row");

    // 1. An altered payload.
    db.execute(
        "UPDATE audit_entries SET payload = replace(payload, '\"A\"', '\"B\"') WHERE seq = 3",
        [],
    )
    .expect("alter");
    let (code, out, _) = cli(&proxy, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("entry 3 was altered"), "{out}");
    db.execute(
        "UPDATE audit_entries SET payload = ?1 WHERE seq = 3",
        [&original],
    )
    .expect("restore");
    assert_eq!(cli(&proxy, &["audit", "verify"]).0, 0, "restored");

    // 2. A column that says something else than the hashed payload.
    db.execute(
        "UPDATE audit_entries SET outcome = 'denied' WHERE seq = 2",
        [],
    )
    .expect("alter column");
    let (code, out, _) = cli(&proxy, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("entry 2 was altered: its outcome column"),
        "{out}"
    );
    db.execute(
        "UPDATE audit_entries SET outcome = 'applied' WHERE seq = 2",
        [],
    )
    .expect("restore");

    // 3. Two rows swapped (reordered).
    db.execute_batch(
        "UPDATE audit_entries SET seq = -4 WHERE seq = 4;
         UPDATE audit_entries SET seq = 4 WHERE seq = 3;
         UPDATE audit_entries SET seq = 3 WHERE seq = -4;",
    )
    .expect("swap");
    let (code, out, _) = cli(&proxy, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("entry 3 was altered"), "{out}");
    db.execute_batch(
        "UPDATE audit_entries SET seq = -4 WHERE seq = 4;
         UPDATE audit_entries SET seq = 4 WHERE seq = 3;
         UPDATE audit_entries SET seq = 3 WHERE seq = -4;",
    )
    .expect("swap back");
    assert_eq!(cli(&proxy, &["audit", "verify"]).0, 0);

    // 4. A deleted row in the middle.
    db.execute("DELETE FROM audit_entries WHERE seq = 4", [])
        .expect("delete");
    let (code, out, _) = cli(&proxy, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("entries 4..4 are missing"), "{out}");
    // The head printed before the tampering is no longer the trail's head, but still in it.
    assert_eq!(head.len(), 64);
}

#[tokio::test]
async fn a_recorded_head_proves_the_newest_entries_were_not_cut_off() {
    let sim = sim().await;
    let mut proxy = TestProxy::builder(sim.addr).start();
    some_events(&proxy).await;
    let head = get(&format!("http://{}/v1/chain/head", proxy.admin))
        .await
        .json();
    assert_eq!(head["seq"], 6);
    let hash = head["hash"].as_str().expect("hash").to_owned();
    assert_eq!(cli(&proxy, &["audit", "verify", "--head", &hash]).0, 0);
    proxy.terminate();

    let db = tamper(&proxy);
    db.execute("DELETE FROM audit_entries WHERE seq >= 5", [])
        .expect("truncate");
    assert_eq!(
        cli(&proxy, &["audit", "verify"]).0,
        0,
        "without the head, a cut tail is undetectable"
    );
    let (code, out, _) = cli(&proxy, &["audit", "verify", "--head", &hash]);
    assert_eq!(code, 1);
    assert!(out.contains("is not in the trail"), "{out}");
}

#[tokio::test]
async fn prune_keeps_the_chain_verifiable() {
    let sim = sim().await;
    let mut proxy = TestProxy::builder(sim.addr).start();
    some_events(&proxy).await;
    // A cut strictly after the last entry's millisecond.
    let last: String = Connection::open(proxy.dir.join("audit.db"))
        .expect("open")
        .query_row("SELECT MAX(time) FROM audit_entries", [], |r| r.get(0))
        .expect("time");
    let cut = loop {
        let now = b24_audit_proxy::audit::now_rfc3339();
        if now > last {
            break now;
        }
        std::thread::yield_now();
    };
    post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":301,"fields":{"title":"later"}}"#,
    )
    .await;
    let head = get(&format!("http://{}/v1/chain/head", proxy.admin))
        .await
        .json();

    // Prune while the proxy runs: its writer chains after the checkpoint.
    let (code, out, err) = cli(&proxy, &["audit", "prune", "--before", &cut]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("pruned 6 entries (through entry 6); checkpoint is entry 9"),
        "{out}"
    );
    post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":301,"fields":{"title":"after prune"}}"#,
    )
    .await;

    let (code, out, _) = cli(
        &proxy,
        &[
            "audit",
            "verify",
            "--head",
            head["hash"].as_str().expect("hash"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("entries up to 6 pruned"), "{out}");
    let events = proxy.export();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1]["request"]["params"]["fields"]["title"],
        "after prune"
    );

    // Deleting the remaining oldest rows without a checkpoint is still caught.
    proxy.terminate();
    let db = tamper(&proxy);
    db.execute("DELETE FROM audit_entries WHERE seq = 7", [])
        .expect("delete");
    let (code, out, _) = cli(&proxy, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("missing"), "{out}");
}

#[tokio::test]
async fn identity_is_recorded_for_both_auth_forms() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("trusted_proxies = [\"127.0.0.1\"]\n")
        .start();
    post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"hook"}}"#,
    )
    .await;
    for title in ["oauth-1", "oauth-2"] {
        let r = send(
            Method::POST,
            &proxy.url("/rest/crm.automatedsolution.update"),
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
            format!(r#"{{"id":238,"fields":{{"title":"{title}"}},"auth":"{TOKEN}"}}"#),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let events = proxy.export();
    assert_eq!(
        events[0]["caller"],
        json!({"auth":"webhook","user_id":"1","fingerprint":events[0]["caller"]["fingerprint"]})
    );
    assert_eq!(events[0]["client_addr"], "127.0.0.1");
    assert_eq!(events[1]["caller"]["auth"], "oauth");
    assert_eq!(
        events[1]["caller"]["user_id"], "1",
        "resolved with user.current"
    );
    assert_eq!(
        events[1]["client_addr"], "203.0.113.7",
        "X-Forwarded-For from a trusted proxy"
    );
    let lookups = sim
        .sim
        .calls()
        .iter()
        .filter(|c| c.rest_method.as_deref() == Some("user.current"))
        .count();
    assert_eq!(lookups, 1, "the token's user is cached");
}

#[tokio::test]
async fn list_show_and_the_api_answer_who_changed_what() {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), "s3cret-admin-token\n").expect("token");
    let token_file = dir.path().join("token");
    let proxy = TestProxy::builder(sim.addr)
        .extra(&format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ))
        .start();
    some_events(&proxy).await;

    let (code, out, _) = cli(&proxy, &["audit", "list", "--solution", "238", "--json"]);
    assert_eq!(code, 0);
    let listed: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.len(), 2);
    let (_, table, _) = cli(&proxy, &["audit", "list", "--outcome", "denied"]);
    assert!(table.contains("deny (deny_empty_type_ids)"), "{table}");
    assert_eq!(
        table.lines().count(),
        5,
        "header, rule, one row, blank, chain: {table}"
    );
    assert!(table.contains("chain: ok, 6 entries verify"), "{table}");
    let (_, none, _) = cli(&proxy, &["audit", "list", "--caller", "999", "--json"]);
    assert_eq!(none.trim(), "[]");

    let id = listed[1]["id"].as_str().expect("id");
    let (code, shown, _) = cli(&proxy, &["audit", "show", id]);
    assert_eq!(code, 0);
    assert!(shown.contains("unbound       - 158"), "{shown}");
    assert!(shown.contains("ok: the chain verifies"), "{shown}");
    assert!(
        shown.contains(&format!("b24-audit-proxy revert {id}")),
        "{shown}"
    );

    let api = |path: &str| format!("http://{}{path}", proxy.admin);
    assert_eq!(
        get(&api("/v1/events")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong = send(
        Method::GET,
        &api("/v1/events"),
        &[("authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let auth = [("authorization", "Bearer s3cret-admin-token")];
    let page1 = send(Method::GET, &api("/v1/events?limit=2"), &auth, "")
        .await
        .json();
    assert_eq!(page1["events"].as_array().map(Vec::len), Some(2));
    let cursor = page1["next_cursor"].as_i64().expect("more pages");
    let page2 = send(
        Method::GET,
        &api(&format!("/v1/events?limit=2&cursor={cursor}")),
        &auth,
        "",
    )
    .await
    .json();
    assert_eq!(page2["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["next_cursor"], Value::Null);
    let denied = send(
        Method::GET,
        &api("/v1/events?outcome=denied&solution_id=267"),
        &auth,
        "",
    )
    .await
    .json();
    assert_eq!(denied["events"][0]["rule"], "deny_empty_type_ids");
    let one = send(Method::GET, &api(&format!("/v1/events/{id}")), &auth, "")
        .await
        .json();
    assert_eq!(one["diff"]["type_ids_removed"], json!([158]));
    assert_eq!(one["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(one["revert"]["possible"], true);
    let head = send(Method::GET, &api("/v1/chain/head"), &auth, "")
        .await
        .json();
    let verify = send(Method::GET, &api("/v1/chain/verify"), &auth, "")
        .await
        .json();
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["head_hash"], head["hash"]);
    let missing = send(Method::GET, &api("/v1/events/nope"), &auth, "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Metrics and health stay open for scrapers and probes.
    assert_eq!(get(&api("/metrics")).await.status, StatusCode::OK);
    assert!(!proxy.log().contains("s3cret-admin-token"));
}

/// A config for the CLI that names the running proxy's real port (tests listen on port 0).
fn cli_config(proxy: &TestProxy, hook_file: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&proxy.config).expect("config");
    let text = text.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", proxy.proxy),
        1,
    );
    let path = proxy.dir.join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "{text}\n[revert]\nwebhook_file = \"{}\"\n",
            hook_file.display()
        ),
    )
    .expect("write");
    path
}

// Multi-threaded: the CLI runs blocking while the in-process simulator must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_restores_the_before_state_through_the_audited_path() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let hook = proxy.dir.join("service-hook");
    std::fs::write(&hook, format!("{USER}/{SECRET}\n")).expect("hook");
    let config = cli_config(&proxy, &hook);
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let original = sim.sim.solution(238).expect("238");
    let changed = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"Oops","typeIds":[14]}}"#,
    )
    .await;
    let event = changed.event_id().expect("event");

    let (code, dry, _) = run(&["revert", &event]);
    assert_eq!(code, Some(0));
    assert!(
        dry.contains(r#""typeIds":[14,158]"#) && dry.contains("not sent"),
        "{dry}"
    );
    assert_eq!(
        sim.sim.solution(238).expect("238").title,
        "Oops",
        "a dry run changes nothing"
    );

    let (code, out, err) = run(&["revert", &event, "--apply"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let restored = sim.sim.solution(238).expect("238");
    assert_eq!(
        (restored.title, restored.type_ids),
        (original.title.clone(), original.type_ids.clone())
    );
    let events = proxy.export();
    let revert = events.last().expect("revert event");
    assert_eq!(revert["reverts"], event.as_str());
    assert_eq!(revert["outcome"], "applied");
    assert_eq!(revert["after"]["typeIds"], json!([14, 158]));

    // Someone changes the workplace again: reverting the first event now would undo that too.
    post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"Newer"}}"#,
    )
    .await;
    let (code, _, err) = run(&["revert", &event, "--apply"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("changed since event"), "{err}");
    assert_eq!(sim.sim.solution(238).expect("238").title, "Newer");
    let (code, _, err) = run(&["revert", &event, "--apply", "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(sim.sim.solution(238).expect("238").title, original.title);

    // A denied event changed nothing.
    let denied = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":267,"fields":{"typeIds":[]}}"#,
    )
    .await;
    let (code, _, err) = run(&["revert", &denied.event_id().expect("id")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to revert"), "{err}");
}
