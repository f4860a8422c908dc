//! The portal simulator over real HTTP on 127.0.0.1: encodings, the spellings that unbind every
//! smart process, stealing, delete refusal, batch with back-references, auth, errors, every fault
//! kind, h2c, keep-alive and the `/_sim/` control surface.
//!
//! Requests are written by hand on a `TcpStream` by `support::exchange` (so faults that break
//! the connection can be observed byte by byte); h2c and keep-alive use hyper's client
//! connections.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portal_sim::{spawn, FaultKind, SimHandle, SimOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{exchange, fault, RawReply, UPDATE};
use tokio::net::TcpStream;

const HOOK: &str = "/rest/1/sim-secret-1";
const TOKEN: &str = "sim-oauth-token-1";

async fn start() -> SimHandle {
    spawn("127.0.0.1:0".parse().expect("addr"), SimOptions::default())
        .await
        .expect("simulator starts")
}

/// One request on a fresh connection to the simulator (see [`exchange`]).
async fn raw(
    h: &SimHandle,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawReply {
    exchange(h.addr, method, target, headers, body).await
}

async fn post_json(h: &SimHandle, target: &str, body: Value) -> RawReply {
    raw(
        h,
        "POST",
        target,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

async fn post_form(h: &SimHandle, target: &str, body: &str) -> RawReply {
    raw(
        h,
        "POST",
        target,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await
}

fn update_url() -> String {
    format!("{HOOK}/crm.automatedsolution.update")
}

fn types(h: &SimHandle, id: i64) -> Option<Vec<i64>> {
    h.sim.solution(id).map(|s| s.type_ids)
}

#[tokio::test]
async fn update_as_json_answers_the_portal_envelope() {
    let h = start().await;
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 238, "fields": {"typeIds": [14]}}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let v = r.json();
    assert_eq!(
        v["result"],
        json!({"automatedSolution": {"id": 238, "title": "HR & Customer Success", "typeIds": [14]}})
    );
    for k in b24_rest::envelope::TIME_KEYS_SDKS_REQUIRE {
        assert!(v["time"].get(k).is_some(), "time.{k}");
    }
    let m = h.sim.executed_mutations();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].method, "crm.automatedsolution.update");
    assert_eq!(
        m[0].before.as_ref().map(|s| s.type_ids.clone()),
        Some(vec![14, 158])
    );
    assert_eq!(
        m[0].after.as_ref().map(|s| s.type_ids.clone()),
        Some(vec![14])
    );
    h.shutdown().await;
}

#[tokio::test]
async fn update_as_form_keeps_missing_fields() {
    let h = start().await;
    let r = post_form(&h, &update_url(), "id=238&fields[title]=Renamed+%26+Co").await;
    assert_eq!(r.status, 200);
    let s = h.sim.solution(238).expect("exists");
    assert_eq!(
        (s.title.as_str(), s.type_ids),
        ("Renamed & Co", vec![14, 158])
    );
    h.shutdown().await;
}

#[tokio::test]
async fn update_as_get_query_runs() {
    let h = start().await;
    let target = format!("{}?id=%20238&fields%5BtypeIds%5D%5B%5D=158", update_url());
    let r = raw(&h, "GET", &target, &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, 238), Some(vec![158]));
    h.shutdown().await;
}

/// Protocol §5.2 step 4 and §7 items 9, 10, 12, 13: every one of these unbinds everything.
#[tokio::test]
async fn every_empty_type_ids_spelling_unbinds_everything() {
    let h = start().await;
    let json_spellings = [
        json!({"typeIds": []}),
        json!({"typeIds": null}),
        json!({"typeIds": ""}),
        json!({"typeIds": "0"}),
        json!({"typeIds": [""]}),
        json!({"typeIds": [0]}),
        json!({"typeIds": ["abc"]}),
        json!({"typeIds": [-5]}),
        json!({"typeIds": false}),
        json!({"typeIds": ["0x1A"]}),
        json!({"typeIds": [[]]}),
        json!({"typeIds": [14], "TYPE_IDS": []}),
    ];
    for fields in json_spellings {
        let w = h.sim.insert_solution("W", &[14, 158]);
        let r = post_json(&h, &update_url(), json!({"id": w.id, "fields": fields})).await;
        assert_eq!(r.status, 200, "{fields}");
        assert_eq!(types(&h, w.id), Some(vec![]), "{fields}");
    }
    let form_spellings = [
        "fields[typeIds][]=",
        "fields[typeIds]=",
        "fields[typeIds][]=14&fields[typeIds]=",
        "fields%5BtypeIds%5D%5B%5D=",
        "fields[typeIds][]=%00",
    ];
    for form in form_spellings {
        let w = h.sim.insert_solution("W", &[14, 158]);
        let r = post_form(&h, &update_url(), &format!("id={}&{form}", w.id)).await;
        assert_eq!(r.status, 200, "{form}");
        assert_eq!(types(&h, w.id), Some(vec![]), "{form}");
    }
    // A JSON-looking body without application/json is a form to the portal.
    let w = h.sim.insert_solution("W", &[14, 158]);
    let body = format!(
        r#"{{"id":{},"x":"&id={}&fields[typeIds][]=\"}}"}}"#,
        w.id, w.id
    );
    let r = raw(
        &h,
        "POST",
        &update_url(),
        &[("Content-Type", "Application/JSON")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, w.id), Some(vec![]));
    // Invalid JSON is an empty body: the query alone runs.
    let w = h.sim.insert_solution("W", &[14, 158]);
    let target = format!("{}?id={}&fields[typeIds]=", update_url(), w.id);
    let r = raw(
        &h,
        "POST",
        &target,
        &[("Content-Type", "application/json")],
        b"{not json",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, w.id), Some(vec![]));
    // Through a batch back-reference to an error that was never recorded.
    let w = h.sim.insert_solution("W", &[14, 158]);
    let cmd = format!(
        "crm.automatedsolution.update?id={}&fields[typeIds]=$error[x]",
        w.id
    );
    let r = post_json(&h, &format!("{HOOK}/batch"), json!({"cmd": {"u": cmd}})).await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, w.id), Some(vec![]));
    h.shutdown().await;
}

#[tokio::test]
async fn binding_steals_from_another_workplace() {
    let h = start().await;
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 267, "fields": {"typeIds": [31, "14"]}}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, 267), Some(vec![14, 31]));
    assert_eq!(types(&h, 238), Some(vec![158]));
    // add steals too.
    let r = post_json(
        &h,
        &format!("{HOOK}/crm.automatedsolution.add"),
        json!({"fields": {"title": "New", "typeIds": [158, 190]}}),
    )
    .await;
    assert_eq!(
        r.json()["result"]["automatedSolution"]["typeIds"],
        json!([158, 190])
    );
    assert_eq!(types(&h, 238), Some(vec![]));
    h.shutdown().await;
}

#[tokio::test]
async fn delete_is_refused_while_types_are_bound() {
    let h = start().await;
    let del = format!("{HOOK}/crm.automatedsolution.delete");
    let r = post_json(&h, &del, json!({"id": 301})).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("HAS_BOUND_TYPES"))
    );
    assert!(h.sim.solution(301).is_some());
    post_json(
        &h,
        &update_url(),
        json!({"id": 301, "fields": {"typeIds": []}}),
    )
    .await;
    let r = post_json(&h, &del, json!({"id": "301"})).await;
    assert_eq!((r.status, r.json()["result"].clone()), (200, Value::Null));
    assert!(h.sim.solution(301).is_none());
    let r = post_json(
        &h,
        &format!("{HOOK}/crm.automatedsolution.get"),
        json!({"id": 301}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("NOT_FOUND"))
    );
    let kinds: Vec<String> = h
        .sim
        .executed_mutations()
        .into_iter()
        .map(|m| m.method)
        .collect();
    assert_eq!(
        kinds,
        [
            "crm.automatedsolution.update",
            "crm.automatedsolution.delete"
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn update_of_a_missing_workplace_is_a_400_not_found() {
    let h = start().await;
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 9999, "fields": {"typeIds": []}}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("NOT_FOUND"))
    );
    let r = post_json(
        &h,
        &update_url(),
        json!({"ID": 238, "fields": {"typeIds": []}}),
    )
    .await;
    assert_eq!((r.status, r.json()["error"].clone()), (400, json!(100)));
    assert_eq!(types(&h, 238), Some(vec![14, 158]));
    assert!(h.sim.executed_mutations().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn batch_with_back_reference() {
    let h = start().await;
    let body = json!({
        "HALT": 0,
        "Cmd": {
            "lst": "crm.automatedsolution.list?filter[id]=301",
            "u": "CRM.AutomatedSolution.Update?id=238&fields[typeIds]=$result[lst][automatedSolutions][0][typeIds]",
            "bad": "crm.automatedsolution.get?id=1#&ignored=1",
        }
    });
    let r = post_json(&h, &format!("{HOOK}/batch"), body).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["result"]["result"]["u"]["automatedSolution"]["typeIds"],
        json!([172])
    );
    assert_eq!(v["result"]["result_total"], json!({"lst": 1}));
    assert_eq!(v["result"]["result_next"], json!([]));
    assert_eq!(v["result"]["result_error"]["bad"]["error"], "NOT_FOUND");
    assert!(v["result"]["result_time"]["u"]["duration"].is_number());
    assert_eq!(types(&h, 238), Some(vec![172]));
    assert_eq!(types(&h, 301), Some(vec![]));

    // Form-encoded batch: each command encoded twice.
    let form =
        "cmd%5Ba%5D=crm.automatedsolution.update%3Fid%3D267%26fields%5BtypeIds%5D%5B%5D%3D&halt=0";
    let r = post_form(&h, &format!("{HOOK}/batch"), form).await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, 267), Some(vec![]));
    h.shutdown().await;
}

#[tokio::test]
async fn oauth_and_webhook_auth() {
    let h = start().await;
    let bearer = format!("Bearer {TOKEN}");
    let cases: Vec<RawReply> = vec![
        raw(
            &h,
            "GET",
            "/rest/user.current",
            &[("Authorization", &bearer)],
            b"",
        )
        .await,
        post_json(&h, "/rest/user.current.json", json!({"auth": TOKEN})).await,
        raw(
            &h,
            "GET",
            &format!("/rest/user.current?access_token={TOKEN}"),
            &[],
            b"",
        )
        .await,
        raw(
            &h,
            "GET",
            "/rest/profile?aplogin=1&ap=sim-secret-1",
            &[],
            b"",
        )
        .await,
        raw(&h, "GET", &format!("{HOOK}/user.current/"), &[], b"").await,
    ];
    for r in cases {
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(
            (v["result"]["ID"].clone(), v["result"]["ADMIN"].clone()),
            (json!("1"), json!(true))
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn bad_auth_is_401_and_executes_nothing() {
    let h = start().await;
    let body = json!({"id": 238, "fields": {"typeIds": []}});
    for target in [
        "/rest/1/wrong-secret/crm.automatedsolution.update".to_owned(),
        "/rest/2/sim-secret-1/crm.automatedsolution.update".to_owned(),
        "/rest/crm.automatedsolution.update?auth=nope".to_owned(),
        "/rest/crm.automatedsolution.update".to_owned(),
    ] {
        let r = post_json(&h, &target, body.clone()).await;
        assert_eq!(r.status, 401, "{target}");
        assert_eq!(
            r.json(),
            json!({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
        );
    }
    assert_eq!(types(&h, 238), Some(vec![14, 158]));
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_method_is_404_and_outside_rest_too() {
    let h = start().await;
    let r = raw(
        &h,
        "GET",
        &format!("{HOOK}/crm.automatedsolution.nope"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("ERROR_METHOD_NOT_FOUND"))
    );
    let r = raw(&h, "GET", "/elsewhere", &[], b"").await;
    assert_eq!(r.status, 404);
    let r = post_json(
        &h,
        "/rest/api/1/sim-secret-1/crm.automatedsolution.update",
        json!({"id": 238}),
    )
    .await;
    assert_eq!(r.status, 404);
    let methods: Vec<Option<String>> = h.sim.calls().into_iter().map(|c| c.rest_method).collect();
    assert_eq!(
        methods,
        [
            Some("crm.automatedsolution.nope".to_owned()),
            None,
            Some("crm.automatedsolution.update".to_owned())
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn path_and_method_spellings_reach_the_method() {
    let h = start().await;
    let w = |h: &SimHandle| h.sim.insert_solution("W", &[14]).id;
    let id = w(&h);
    let target = "/rest//1/./x/../sim-secret-1/CRM.AutomatedSolution.%55pdate.JSON/";
    let r = post_json(&h, target, json!({"id": id, "fields": {"typeIds": []}})).await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, id), Some(vec![]));
    // No template matches /rest/a/b/c/d: method and webhook come from the form.
    let id = w(&h);
    let form = format!(
        "method=crm.automatedsolution.update&aplogin=1&ap=sim-secret-1&id={id}&fields[typeIds][]="
    );
    let r = post_form(&h, "/rest/a/b/c/d", &form).await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, id), Some(vec![]));
    assert_eq!(
        h.sim
            .calls()
            .last()
            .and_then(|c| c.rest_method.clone())
            .as_deref(),
        Some("crm.automatedsolution.update")
    );
    // Multipart.
    let id = w(&h);
    let mp = format!(
        "--B\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\n{id}\r\n--B\r\nContent-Disposition: form-data; name=\"fields[typeIds][]\"\r\n\r\n\r\n--B--\r\n"
    );
    let r = raw(
        &h,
        "POST",
        &update_url(),
        &[("Content-Type", "multipart/form-data; boundary=B")],
        mp.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(types(&h, id), Some(vec![]));
    h.shutdown().await;
}

#[tokio::test]
async fn xml_transport() {
    let h = start().await;
    let r = raw(
        &h,
        "GET",
        &format!("{HOOK}/crm.automatedsolution.get.xml?id=267"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/xml; charset=utf-8"));
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("<response><result><automatedSolution><id>267</id><title>Sales</title><typeIds><item>31</item></typeIds>"), "{text}");
    h.shutdown().await;
}

#[tokio::test]
async fn lists_page_by_fifty() {
    let h = start().await;
    let r = raw(&h, "GET", &format!("{HOOK}/crm.deal.list"), &[], b"").await;
    let v = r.json();
    assert_eq!(
        (
            v["result"].as_array().map(Vec::len),
            v["total"].clone(),
            v["next"].clone()
        ),
        (Some(50), json!(120), json!(50))
    );
    let v = raw(
        &h,
        "GET",
        &format!("{HOOK}/crm.deal.list?start=100"),
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(
        (v["result"].as_array().map(Vec::len), v.get("next")),
        (Some(20), None)
    );
    let v = raw(&h, "GET", &format!("{HOOK}/crm.deal.get?ID=7"), &[], b"")
        .await
        .json();
    assert_eq!(v["result"]["TITLE"], "Deal #7");
    let v = raw(
        &h,
        "GET",
        &format!("{HOOK}/crm.automatedsolution.list?order[title]=DESC&filter[%25title]=s"),
        &[],
        b"",
    )
    .await
    .json();
    let ids: Vec<Value> = v["result"]["automatedSolutions"]
        .as_array()
        .map(|a| a.iter().map(|s| s["id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [json!(301), json!(267), json!(238)]);
    assert_eq!(v["total"], 3);
    let v = raw(
        &h,
        "GET",
        &format!("{HOOK}/crm.automatedsolution.fields"),
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(v["result"]["typeIds"]["type"], "crm_dynamic_type");
    h.shutdown().await;
}

#[tokio::test]
async fn fault_status_answers_without_executing() {
    let h = start().await;
    h.sim.push_fault(fault(
        UPDATE,
        FaultKind::Status {
            status: 503,
            code: "QUERY_LIMIT_EXCEEDED".into(),
            description: "Too many requests".into(),
        },
    ));
    // Other methods do not consume it.
    assert_eq!(
        raw(&h, "GET", &format!("{HOOK}/user.current"), &[], b"")
            .await
            .status,
        200
    );
    let body = json!({"id": 238, "fields": {"typeIds": []}});
    let r = post_json(&h, &update_url(), body.clone()).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json(),
        json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
    );
    assert_eq!(types(&h, 238), Some(vec![14, 158]));
    // Used up: the next one executes.
    assert_eq!(post_json(&h, &update_url(), body).await.status, 200);
    assert_eq!(types(&h, 238), Some(vec![]));
    h.shutdown().await;
}

#[tokio::test]
async fn fault_error_after_execute_changes_state_anyway() {
    let h = start().await;
    h.sim.push_fault(fault(
        UPDATE,
        FaultKind::ErrorAfterExecute {
            status: 400,
            code: "BX_EMPTY_REQUIRED".into(),
        },
    ));
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 238, "fields": {"typeIds": []}}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("BX_EMPTY_REQUIRED"))
    );
    assert_eq!(types(&h, 238), Some(vec![]));
    assert_eq!(h.sim.executed_mutations().len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn fault_delay_postpones_the_answer() {
    let h = start().await;
    let delay = Duration::from_millis(150);
    h.sim.push_fault(fault(UPDATE, FaultKind::Delay(delay)));
    let t = Instant::now();
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 238, "fields": {"title": "Late"}}),
    )
    .await;
    assert!(t.elapsed() >= delay);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["automatedSolution"]["title"], "Late");
    h.shutdown().await;
}

#[tokio::test]
async fn fault_invalid_json_after_executing() {
    let h = start().await;
    h.sim.push_fault(fault(UPDATE, FaultKind::InvalidJson));
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 238, "fields": {"typeIds": []}}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert_eq!(types(&h, 238), Some(vec![]));
    h.shutdown().await;
}

#[tokio::test]
async fn fault_reset_mid_response_after_executing() {
    let h = start().await;
    h.sim.push_fault(fault(UPDATE, FaultKind::ResetMidResponse));
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 238, "fields": {"typeIds": []}}),
    )
    .await;
    assert_eq!(r.status, 200, "headers arrive");
    let announced: usize = r
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    assert!(
        !r.body.is_empty() && r.body.len() < announced,
        "{} of {announced}",
        r.body.len()
    );
    assert_eq!(types(&h, 238), Some(vec![]));
    // The server is still up.
    assert_eq!(
        raw(&h, "GET", &format!("{HOOK}/profile"), &[], b"")
            .await
            .status,
        200
    );
    h.shutdown().await;
}

#[tokio::test]
async fn fault_close_without_response_after_executing() {
    let h = start().await;
    h.sim
        .push_fault(fault(UPDATE, FaultKind::CloseWithoutResponse));
    let r = post_json(
        &h,
        &update_url(),
        json!({"id": 238, "fields": {"typeIds": []}}),
    )
    .await;
    assert_eq!(r.received, 0);
    assert_eq!(types(&h, 238), Some(vec![]));
    assert_eq!(
        raw(&h, "GET", &format!("{HOOK}/profile"), &[], b"")
            .await
            .status,
        200
    );
    h.shutdown().await;
}

#[tokio::test]
async fn control_surface() {
    let h = start().await;
    let f = json!({"method": "crm.automatedsolution.update", "kind": {"kind": "status", "status": 500, "code": "INTERNAL_SERVER_ERROR", "description": "Internal server error"}});
    assert_eq!(post_json(&h, "/_sim/faults", f).await.status, 204);
    assert_eq!(
        post_json(&h, &update_url(), json!({"id": 238}))
            .await
            .status,
        500
    );
    post_json(
        &h,
        "/_sim/faults",
        json!({"kind": {"kind": "invalid_json"}}),
    )
    .await;
    assert_eq!(
        raw(&h, "DELETE", "/_sim/faults", &[], b"").await.status,
        204
    );
    post_json(
        &h,
        &update_url(),
        json!({"id": 238, "fields": {"typeIds": [14]}}),
    )
    .await;
    let v = raw(&h, "GET", "/_sim/state", &[], b"").await.json();
    assert_eq!(v["calls"], 2);
    assert_eq!(
        v["solutions"][0],
        json!({"id": 238, "title": "HR & Customer Success", "type_ids": [14]})
    );
    assert_eq!(v["executed_mutations"][0]["seq"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let h = start().await;
    let stream = TcpStream::connect(h.addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://127.0.0.1{HOOK}/crm.automatedsolution.get"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"id":267}"#)))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["result"]["automatedSolution"]["typeIds"], json!([31]));
    h.shutdown().await;
}

#[tokio::test]
async fn http1_keep_alive_serves_several_requests() {
    let h = start().await;
    let stream = TcpStream::connect(h.addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    for id in [238, 267, 301] {
        let req = http::Request::get(format!("{HOOK}/crm.automatedsolution.get?id={id}"))
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["result"]["automatedSolution"]["id"], id);
    }
    h.shutdown().await;
}
