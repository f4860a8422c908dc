//! The audited update path end to end: the real proxy binary on loopback in front of the portal
//! simulator, driven over HTTP. Each test checks the client's answer, what reached the
//! simulator, and the audit trail.

mod support;

use http::{Method, StatusCode};
use portal_sim::{Fault, FaultKind};
use serde_json::json;
use support::*;

fn updates_seen(sim: &portal_sim::SimHandle) -> usize {
    sim.sim
        .calls()
        .iter()
        .filter(|c| c.rest_method.as_deref() == Some(UPDATE))
        .count()
}

#[tokio::test]
async fn update_in_each_encoding_is_forwarded_and_audited() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let url = proxy.hook_url(UPDATE);

    let json_reply = post_json(&url, r#"{"id":238,"fields":{"title":"HR (json)"}}"#).await;
    assert_eq!(json_reply.status, StatusCode::OK, "{:?}", json_reply.body);
    assert_eq!(
        json_reply.json()["result"]["automatedSolution"]["title"],
        "HR (json)"
    );
    assert!(json_reply.event_id().is_some());

    let form = post_form(&url, "id=238&fields[typeIds][]=14&fields[typeIds][]=190").await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(sim.sim.solution(238).expect("238").type_ids, vec![14, 190]);

    let query = get(&format!(
        "{url}?id=238&fields%5Btitle%5D=HR%20(query)&fields[typeIds][0]=158"
    ))
    .await;
    assert_eq!(query.status, StatusCode::OK);

    let text_plain = send(
        Method::POST,
        &url,
        &[("content-type", "text/plain")],
        "id=238&fields[title]=HR+(raw)".to_owned(),
    )
    .await;
    assert_eq!(text_plain.status, StatusCode::OK);

    let oauth = post_json(
        &proxy.url("/rest/crm.automatedsolution.update.json"),
        &format!(r#"{{"id":267,"fields":{{"title":"Sales (oauth)"}},"auth":"{TOKEN}"}}"#),
    )
    .await;
    assert_eq!(oauth.status, StatusCode::OK, "{:?}", oauth.body);

    let bearer = send(
        Method::POST,
        &proxy.url("/rest/CRM.AutomatedSolution.Update"),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {TOKEN}")),
        ],
        r#"{"id":267,"fields":{"typeIds":[31,14]}}"#.to_owned(),
    )
    .await;
    assert_eq!(bearer.status, StatusCode::OK, "{:?}", bearer.body);

    let sol = sim.sim.solution(238).expect("238");
    assert_eq!(
        (sol.title.as_str(), sol.type_ids.as_slice()),
        ("HR (raw)", &[158][..])
    );
    assert_eq!(sim.sim.solution(267).expect("267").type_ids, vec![14, 31]);

    let events = proxy.export();
    assert_eq!(events.len(), 6);
    let first = &events[0];
    assert_eq!(first["id"], json_reply.event_id().expect("id").as_str());
    assert_eq!(first["method"], UPDATE);
    assert_eq!(first["solution_id"], 238);
    assert_eq!(
        first["before"],
        json!({"id":238,"title":"HR & Customer Success","typeIds":[14,158]})
    );
    assert_eq!(
        first["after"],
        json!({"id":238,"title":"HR (json)","typeIds":[14,158]})
    );
    assert_eq!(first["outcome"], "applied");
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["portal_status"], 200);
    assert_eq!(first["caller"]["auth"], "webhook");
    assert_eq!(first["caller"]["user_id"], "1");
    assert_eq!(
        first["caller"]["fingerprint"].as_str().map(str::len),
        Some(16)
    );
    assert_eq!(first["client_addr"], "127.0.0.1");
    assert_eq!(first["batch"], serde_json::Value::Null);
    assert_eq!(first["hash"].as_str().map(str::len), Some(64));
    // Each event's before is the previous event's after: the trail is a true history.
    assert_eq!(events[1]["before"], events[0]["after"]);
    assert_eq!(events[1]["request"]["encoding"], "form");
    assert_eq!(events[2]["request"]["encoding"], "query");
    assert_eq!(events[2]["request"]["http_method"], "GET");
    assert_eq!(events[4]["caller"]["auth"], "oauth");
    assert_eq!(events[5]["after"]["typeIds"], json!([14, 31]));
    // Two OAuth calls with the same token share a fingerprint; the webhook's differs.
    assert_eq!(
        events[4]["caller"]["fingerprint"],
        events[5]["caller"]["fingerprint"]
    );
    assert_ne!(
        events[4]["caller"]["fingerprint"],
        events[0]["caller"]["fingerprint"]
    );
}

#[tokio::test]
async fn what_is_forwarded_is_the_canonical_json_of_what_was_evaluated() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let r = get(&format!("{}?id=238&fields[typeIds][]=158&fields[typeIds][]=14&fields[typeIds][]=14&bx24_sdk_ver=2.2.0", proxy.hook_url("crm.automatedsolution.Update.json"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let call = sim
        .sim
        .calls()
        .into_iter()
        .find(|c| c.rest_method.as_deref() == Some(UPDATE))
        .expect("update reached the simulator");
    assert_eq!(call.http_method, "POST");
    assert_eq!(
        call.path,
        format!("/rest/{USER}/{SECRET}/crm.automatedsolution.update")
    );
    assert_eq!(call.query, "");
    let body: serde_json::Value = serde_json::from_slice(&call.body).expect("json body");
    assert_eq!(body, json!({"id":238,"fields":{"typeIds":[14,158]}}));
}

#[tokio::test]
async fn empty_type_ids_in_every_spelling_is_refused_and_nothing_changes() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let url = proxy.hook_url(UPDATE);
    let before = sim.sim.solutions();

    let json_spellings = [
        "[]",
        "null",
        "\"\"",
        "\"0\"",
        "[\"\"]",
        "[0]",
        "[\"abc\"]",
        "[-5]",
        "false",
        "[\"0x1A\"]",
        "[[]]",
        "[0, -1, \"x\"]",
    ];
    let mut refused = 0;
    for s in json_spellings {
        let r = post_json(&url, &format!(r#"{{"id":238,"fields":{{"typeIds":{s}}}}}"#)).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "typeIds = {s}: {:?}",
            r.body
        );
        let body = r.json();
        assert_eq!(body["error"], "POLICY_VIOLATION");
        let desc = body["error_description"].as_str().expect("description");
        assert!(desc.contains("deny_empty_type_ids"), "{desc}");
        let event = r.event_id().expect("denials carry the event id");
        assert!(desc.contains(&event), "{desc} names {event}");
        refused += 1;
    }
    for form in [
        "id=238&fields[typeIds][]=",
        "id=238&fields[typeIds]=",
        "id=238&fields[typeIds][]=0",
        "id=238&fields[typeIds][]=14&fields[typeIds]=",
        "id=238&fields%5BtypeIds%5D%5B%5D=abc",
    ] {
        let r = post_form(&url, form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}: {:?}", r.body);
        let q = get(&format!("{url}?{form}")).await;
        assert_eq!(q.status, StatusCode::FORBIDDEN, "GET {form}");
        refused += 2;
    }
    assert_eq!(
        updates_seen(&sim),
        0,
        "no refused update reached the portal"
    );
    assert_eq!(
        sim.sim.solutions(),
        before,
        "the simulator's state is untouched"
    );
    let events = proxy.export();
    assert_eq!(events.len(), refused);
    assert!(events
        .iter()
        .all(|e| e["outcome"] == "denied" && e["rule"] == "deny_empty_type_ids"));
    assert!(events
        .iter()
        .all(|e| e["before"]["typeIds"] == json!([14, 158])));

    // The metric counts each denial under its rule.
    let metrics = get(&format!("http://{}/metrics", proxy.admin)).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(&format!("b24proxy_policy_decisions_total{{decision=\"deny\",rule=\"deny_empty_type_ids\"}} {refused}")),
        "{text}"
    );
}

#[tokio::test]
async fn shadow_mode_records_but_allows() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("[policy]\nshadow = true\n")
        .start();
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":301,"fields":{"typeIds":[]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(sim.sim.solution(301).expect("301").type_ids.is_empty());
    let e = &proxy.export()[0];
    assert_eq!(
        (
            e["decision"].as_str(),
            e["rule"].as_str(),
            e["outcome"].as_str()
        ),
        (
            Some("would_deny"),
            Some("deny_empty_type_ids"),
            Some("applied")
        )
    );
}

#[tokio::test]
async fn portal_errors_on_the_snapshot_are_returned_as_is_and_nothing_is_forwarded() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let missing = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":9999,"fields":{"title":"x"}}"#,
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["error"], "NOT_FOUND");
    let bad_auth = post_json(
        &proxy.url(&format!("/rest/{USER}/wrong-secret/{UPDATE}")),
        r#"{"id":238,"fields":{"title":"x"}}"#,
    )
    .await;
    assert_eq!(bad_auth.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad_auth.json()["error"], "NO_AUTH_FOUND");
    assert_eq!(updates_seen(&sim), 0);
    assert!(
        proxy.export().is_empty(),
        "a refused read changes nothing and records no mutation"
    );
}

#[tokio::test]
async fn portal_error_after_execution_records_the_real_after_state() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    // The portal's update sets bindings even when it then reports an error (docs/protocol.md,
    // Workplace updates).
    sim.sim.push_fault(applied_then_refused());
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[14]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "BX_EMPTY_REQUIRED");
    let e = &proxy.export()[0];
    assert_eq!(e["outcome"], "rejected_by_portal");
    assert_eq!(e["portal_error"], "BX_EMPTY_REQUIRED");
    assert_eq!(e["portal_status"], 400);
    assert_eq!(
        e["after"]["typeIds"],
        json!([14]),
        "re-read after the error shows the change"
    );
}

#[tokio::test]
async fn ambiguous_watched_calls_are_refused_with_400_and_not_forwarded() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let url = proxy.hook_url(UPDATE);
    let cases: Vec<(Method, &str, &str, &str)> = vec![
        (
            Method::POST,
            "application/json",
            r#"{"id":238,"fields":{"typeIds":[14],"typeIds":[]}}"#,
            "AMBIGUOUS_PARAMETER",
        ),
        (
            Method::POST,
            "application/json",
            r#"{"id":238,"fields":{"typeIds":[14],"TYPE_IDS":[]}}"#,
            "AMBIGUOUS_PARAMETER",
        ),
        (
            Method::POST,
            "application/json",
            r#"{"id":"1e1","fields":{"title":"x"}}"#,
            "INVALID_PARAMETER",
        ),
        (
            Method::POST,
            "application/json",
            r#"{"id":238,"fields":{"typeIds":[]}"#,
            "INVALID_REQUEST_BODY",
        ),
        (
            Method::POST,
            "Application/JSON",
            r#"{"id":238,"fields":{"typeIds":[14]}}"#,
            "UNSUPPORTED_ENCODING",
        ),
        (
            Method::POST,
            "text/plain",
            r#"{"id":238,"fields":{"typeIds":[14]}}"#,
            "UNSUPPORTED_ENCODING",
        ),
        (
            Method::PUT,
            "application/json",
            r#"{"id":238}"#,
            "UNSUPPORTED_ENCODING",
        ),
        (
            Method::POST,
            "application/json",
            r#"{"id":238,"fields":{"title":"x"},"auth":"t"}"#,
            "AMBIGUOUS_CREDENTIALS",
        ),
    ];
    for (method, ct, body, code) in cases {
        let r = send(
            method.clone(),
            &url,
            &[("content-type", ct)],
            body.to_owned(),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {ct} {body}");
        assert_eq!(r.json()["error"], code, "{body}: {}", r.json());
    }
    let many: String = (0..600).map(|i| format!("x{i}=1&")).collect();
    let r = post_form(&url, &format!("{many}id=238&fields[typeIds][]=")).await;
    assert_eq!(r.json()["error"], "TOO_MANY_PARAMETERS");
    assert_eq!(updates_seen(&sim), 0);
}

#[tokio::test]
async fn non_canonical_paths_are_refused_outright() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    for path in [
        format!("/rest//{USER}/{SECRET}/{UPDATE}"),
        format!("/rest/x/../{USER}/{SECRET}/{UPDATE}"),
        format!("/rest/{USER}%2F{SECRET}%2F{UPDATE}"),
        format!("/rest/{USER}/{SECRET}/{UPDATE}/index.php"),
        "/rest/a/b?method=crm.automatedsolution.update".to_owned(),
        format!("/rest/{USER}/{SECRET}/crm.deal.list/./"),
    ] {
        let r = post_json(&proxy.url(&path), r#"{"id":238,"fields":{"typeIds":[]}}"#).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.json()["error"], "NON_CANONICAL_PATH", "{path}");
    }
    let outside = get(&proxy.url("/bitrix/services/main/ajax.php")).await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    assert!(sim.sim.calls().is_empty(), "nothing reached the portal");
}

#[tokio::test]
async fn batch_with_a_violating_command_is_refused_whole_and_others_pass() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let url = proxy.hook_url("batch");
    let watched = post_json(&url, r#"{"halt":0,"cmd":{"a":"crm.deal.list","u":"CRM.AutomatedSolution.Update?id=238&fields[typeIds][]="}}"#).await;
    assert_eq!(watched.status, StatusCode::FORBIDDEN);
    assert_eq!(watched.json()["error"], "POLICY_VIOLATION");
    assert!(watched.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("'u'")));
    let q = get(&format!("{url}?cmd[0]=batch%3Fcmd%5Bx%5D%3Dcrm.deal.list")).await;
    assert_eq!(q.json()["error"], "BATCH_NESTED");
    assert_eq!(updates_seen(&sim), 0);
    assert!(
        !sim.sim
            .calls()
            .iter()
            .any(|c| c.rest_method.as_deref() == Some("crm.deal.list")),
        "nothing of a refused batch runs"
    );

    let plain = post_json(
        &url,
        r#"{"halt":0,"cmd":{"d":"crm.deal.list?start=0","me":"user.current"}}"#,
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK, "{:?}", plain.body);
    assert!(plain.json()["result"]["result"]["me"].is_object());
}

#[tokio::test]
async fn body_over_the_cap_is_refused_with_413() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("max_body_bytes = 1024\n")
        .start();
    let big = format!(
        r#"{{"id":238,"fields":{{"title":"{}"}}}}"#,
        "x".repeat(4096)
    );
    let r = post_json(&proxy.hook_url(UPDATE), &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "REQUEST_TOO_LARGE");
    assert_eq!(updates_seen(&sim), 0);
}

#[tokio::test]
async fn restart_reconciles_an_intent_whose_outcome_was_never_seen() {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = TestProxy::builder(sim.addr).dir(dir.path()).start();
    // The portal executes the update but does not answer until long after the kill.
    sim.sim.push_fault(Fault {
        method: Some(UPDATE.into()),
        times: 1,
        kind: FaultKind::Delay(std::time::Duration::from_secs(30)),
    });
    let url = proxy.hook_url(UPDATE);
    let pending = tokio::spawn(async move {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .body(b24_audit_proxy::body::ProxyBody::bytes(
                r#"{"id":238,"fields":{"title":"mid-flight"}}"#,
            ))
            .expect("request");
        client().request(req).await.is_ok()
    });
    eventually("the update reached the portal", || updates_seen(&sim) == 1).await;
    proxy.kill();
    assert!(
        !pending.await.expect("task"),
        "the client saw the connection drop"
    );

    let proxy = TestProxy::builder(sim.addr).dir(dir.path()).start();
    let events = proxy.export();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["outcome"], "unknown");
    assert!(proxy.log().contains("reconciled"), "{}", proxy.log());
    assert_eq!(
        sim.sim.solution(238).expect("238").title,
        "mid-flight",
        "it did execute"
    );
}

#[tokio::test]
async fn unwatched_calls_pass_through_byte_for_byte() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-portal: 1\r\ncontent-length: 28\r\n\r\n{\"result\":[1,2,3],\"t\":\"\xc3\xa9\x01\"}";
    let upstream = FixedUpstream::start(ANSWER).await;
    let proxy = TestProxy::builder(upstream.addr).start();
    let body = "{\"filter\":{\">ID\":1},\"odd\":\"a&b=c%zz\u{0}\"}";
    let request = format!(
        "POST /rest/{USER}/{SECRET}/crm.deal.list?start=50&x=%2F HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\nx-request-id: abc\r\nconnection: close, x-hop\r\nx-hop: drop-me\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = raw(proxy.proxy, request.as_bytes()).await;
    let split = find(&reply, b"\r\n\r\n").expect("head") + 4;
    assert_eq!(
        &reply[split..],
        &ANSWER[find(ANSWER, b"\r\n\r\n").expect("head") + 4..]
    );
    let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    assert!(head.contains("x-portal: 1"), "{head}");

    let got = upstream.received.lock().expect("lock")[0].clone();
    let got_split = find(&got, b"\r\n\r\n").expect("head") + 4;
    assert_eq!(&got[got_split..], body.as_bytes(), "request body unchanged");
    let got_head = String::from_utf8_lossy(&got[..got_split]).to_ascii_lowercase();
    assert!(
        got_head.starts_with(&format!(
            "post /rest/{USER}/{SECRET}/crm.deal.list?start=50&x=%2f http/1.1"
        )),
        "{got_head}"
    );
    assert!(got_head.contains("x-request-id: abc"));
    assert!(
        got_head.contains(&format!("host: {}", upstream.addr)),
        "{got_head}"
    );
    assert!(
        !got_head.contains("x-hop"),
        "headers named in Connection are stripped: {got_head}"
    );
}

#[tokio::test]
async fn upstream_down_gives_502_never_2xx() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let proxy = TestProxy::builder(port).start();
    let r = get(&proxy.hook_url("crm.deal.list")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "UPSTREAM_UNAVAILABLE");
    let w = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"x"}}"#,
    )
    .await;
    assert_eq!(
        w.status,
        StatusCode::BAD_GATEWAY,
        "a failed snapshot forwards nothing"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_database_logs_or_metrics() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("[log]\nformat = \"json\"\nlevel = \"debug\"\n")
        .start();
    post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"a"}}"#,
    )
    .await;
    post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[]}}"#,
    )
    .await;
    post_json(
        &proxy.url("/rest/crm.automatedsolution.update"),
        &format!(r#"{{"id":267,"fields":{{"title":"b"}},"auth":"{TOKEN}"}}"#),
    )
    .await;
    get(&proxy.url(&format!("/rest/crm.deal.list?auth={TOKEN}"))).await;
    get(&proxy.hook_url("crm.deal.list")).await;
    let metrics = get(&format!("http://{}/metrics", proxy.admin)).await;
    let export = serde_json::to_string(&proxy.export()).expect("json");
    let files = all_files(&proxy.dir);
    for secret in [SECRET, TOKEN] {
        assert!(
            find(&files, secret.as_bytes()).is_none(),
            "{secret} found in the proxy's files"
        );
        assert!(!export.contains(secret));
        assert!(!String::from_utf8_lossy(&metrics.body).contains(secret));
    }
    assert!(
        proxy.log().contains("/rest/1/***/crm.deal.list"),
        "access lines are written, redacted"
    );
}

#[test]
fn bad_config_exits_78_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[audit]\ndatabase = \"a.db\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    for cmd in ["check-config", "serve"] {
        let out = std::process::Command::new(BIN)
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(78), "{cmd}: EX_CONFIG");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("lisen"), "{err}");
    }
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, include_str!("../config/b24-audit-proxy.example.toml")).expect("write");
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&ok)
        .output()
        .expect("runs");
    assert!(out.status.success());
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let sim = sim().await;
    let mut proxy = TestProxy::builder(sim.addr).start();
    assert_eq!(
        post_json(
            &proxy.hook_url(UPDATE),
            r#"{"id":238,"fields":{"title":"t"}}"#
        )
        .await
        .status,
        StatusCode::OK
    );
    let status = proxy.terminate();
    assert!(status.success(), "{status:?}: {}", proxy.log());
    assert_eq!(proxy.export()[0]["outcome"], "applied");
}

#[tokio::test]
async fn add_and_delete_are_audited_too() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let add = post_json(
        &proxy.hook_url("crm.automatedsolution.add"),
        r#"{"fields":{"title":"Legal","typeIds":[190]}}"#,
    )
    .await;
    assert_eq!(add.status, StatusCode::OK, "{:?}", add.body);
    let new_id = add.json()["result"]["automatedSolution"]["id"]
        .as_i64()
        .expect("new id");
    let empty_add = post_json(
        &proxy.hook_url("crm.automatedsolution.add"),
        r#"{"fields":{"title":"Empty","typeIds":[]}}"#,
    )
    .await;
    assert_eq!(empty_add.status, StatusCode::FORBIDDEN);

    // Delete is refused by the portal while types are bound; the trail says so.
    let refused = post_json(
        &proxy.hook_url("crm.automatedsolution.delete"),
        &format!(r#"{{"id":{new_id}}}"#),
    )
    .await;
    assert_eq!(refused.json()["error"], "HAS_BOUND_TYPES");
    sim.sim.insert_solution("Scratch", &[]);
    let scratch = sim
        .sim
        .solutions()
        .into_iter()
        .find(|s| s.title == "Scratch")
        .expect("scratch");
    let deleted = post_form(
        &proxy.hook_url("crm.automatedsolution.delete"),
        &format!("id={}", scratch.id),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
    assert!(sim.sim.solution(scratch.id).is_none());

    let events = proxy.export();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["method"], "crm.automatedsolution.add");
    assert_eq!(events[0]["before"], serde_json::Value::Null);
    assert_eq!(
        events[0]["solution_id"], new_id,
        "an add is filed under the id it created"
    );
    assert_eq!(events[0]["after"]["typeIds"], json!([190]));
    assert_eq!(events[1]["outcome"], "denied");
    assert_eq!(events[2]["outcome"], "rejected_by_portal");
    assert_eq!(events[2]["after"]["id"], new_id, "re-read: still there");
    assert_eq!(events[3]["method"], "crm.automatedsolution.delete");
    assert_eq!(
        events[3]["before"]["title"], "Scratch",
        "the deleted state is kept"
    );
    assert_eq!(events[3]["after"], serde_json::Value::Null);
    assert_eq!(events[3]["outcome"], "applied");
}
