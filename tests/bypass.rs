//! Every row of the bypass checklist in README.md: each sends its trick through the
//! proxy to the simulator — which executes every spelling the real portal would — and checks
//! that the trick was either refused with nothing executed, or audited exactly as executed.
//! The invariant under every test: each change the simulator executed is in the trail as an
//! `applied` event whose after-state is what the simulator holds.

mod support;

use http::{Method, StatusCode};
use portal_sim::SimHandle;
use serde_json::json;
use support::*;

const EMPTY_JSON: &str = r#"{"id":238,"fields":{"typeIds":[]}}"#;

/// No change executed that the trail does not show as applied, with the same after-state.
fn assert_trail_covers_every_change(sim: &SimHandle, proxy: &TestProxy) {
    let events = proxy.export();
    for m in sim.sim.executed_mutations() {
        let found = events.iter().any(|e| {
            e["outcome"] == "applied"
                && e["method"] == m.method.as_str()
                && e["solution_id"] == m.solution_id
                && match &m.after {
                    Some(a) => {
                        e["after"]["typeIds"] == json!(a.type_ids)
                            && e["after"]["title"] == a.title.as_str()
                    }
                    None => e["after"].is_null(),
                }
        });
        assert!(found, "executed {m:?} is not in the trail: {events:#?}");
    }
}

/// Refused with 4xx, and nothing changed.
async fn assert_refused(sim: &SimHandle, proxy: &TestProxy, r: &Reply, what: &str) {
    assert!(
        r.status.is_client_error(),
        "{what}: {} {:?}",
        r.status,
        r.body
    );
    assert!(
        sim.sim.executed_mutations().is_empty(),
        "{what}: something executed"
    );
    assert_trail_covers_every_change(sim, proxy);
}

async fn setup() -> (SimHandle, TestProxy) {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    (sim, proxy)
}

#[tokio::test]
async fn row01_case_of_the_method_name() {
    let (sim, proxy) = setup().await;
    for m in [
        "CRM.AutomatedSolution.UPDATE",
        "crm.automatedsolution.Update",
        "Crm.AUTOMATEDSOLUTION.update",
    ] {
        let r = post_json(&proxy.hook_url(m), EMPTY_JSON).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m}");
        assert!(r.event_id().is_some(), "{m} was audited");
    }
    assert_refused(
        &sim,
        &proxy,
        &post_json(&proxy.hook_url("CRM.AUTOMATEDSOLUTION.UPDATE"), EMPTY_JSON).await,
        "case",
    )
    .await;
}

#[tokio::test]
async fn row02_format_suffix() {
    let (sim, proxy) = setup().await;
    for m in [
        "crm.automatedsolution.update.json",
        "crm.automatedsolution.update.JSON",
    ] {
        assert_eq!(
            post_json(&proxy.hook_url(m), EMPTY_JSON).await.status,
            StatusCode::FORBIDDEN,
            "{m}"
        );
    }
    let xml = post_json(
        &proxy.hook_url("crm.automatedsolution.update.xml"),
        EMPTY_JSON,
    )
    .await;
    assert_eq!(xml.json()["error"], "UNSUPPORTED_TRANSPORT");
    assert_refused(&sim, &proxy, &xml, "suffix").await;
}

#[tokio::test]
async fn row03_percent_encoding() {
    let (sim, proxy) = setup().await;
    let encoded = post_json(
        &proxy.hook_url("crm.automatedsolution.%75pdate"),
        EMPTY_JSON,
    )
    .await;
    assert_eq!(
        encoded.status,
        StatusCode::FORBIDDEN,
        "decoded once, then audited"
    );
    let dot = post_json(
        &proxy.hook_url("crm%2Eautomatedsolution%2Eupdate"),
        EMPTY_JSON,
    )
    .await;
    assert_eq!(dot.status, StatusCode::FORBIDDEN);
    let slash = post_json(
        &proxy.url(&format!("/rest/{USER}%2F{SECRET}%2F{UPDATE}")),
        EMPTY_JSON,
    )
    .await;
    assert_eq!(slash.json()["error"], "NON_CANONICAL_PATH");
    assert_refused(&sim, &proxy, &slash, "encoded slash").await;
}

#[tokio::test]
async fn row04_path_noise() {
    let (sim, proxy) = setup().await;
    for path in [
        format!("/rest//{USER}/{SECRET}/{UPDATE}"),
        format!("/rest/{USER}/./{SECRET}/{UPDATE}"),
        format!("/rest/x/../{USER}/{SECRET}/{UPDATE}"),
        format!("/rest/{USER}/{SECRET}/{UPDATE}/index.php"),
        format!("/rest/{USER}/{SECRET}/{UPDATE}//"),
    ] {
        let r = post_json(&proxy.url(&path), EMPTY_JSON).await;
        assert_eq!(r.json()["error"], "NON_CANONICAL_PATH", "{path}");
    }
    // One trailing slash is a template the portal matches: audited.
    let trailing = post_json(
        &proxy.url(&format!("/rest/{USER}/{SECRET}/{UPDATE}/")),
        EMPTY_JSON,
    )
    .await;
    assert_eq!(trailing.status, StatusCode::FORBIDDEN);
    assert_refused(&sim, &proxy, &trailing, "path noise").await;
}

#[tokio::test]
async fn row05_method_taken_from_a_parameter() {
    let (sim, proxy) = setup().await;
    for path in ["/rest/a/b", "/rest/a/b/c/d", "/rest/1/k3y/"] {
        let r = post_form(
            &proxy.url(path),
            &format!("method={UPDATE}&aplogin={USER}&ap={SECRET}&id=238&fields[typeIds]="),
        )
        .await;
        assert_eq!(r.json()["error"], "NON_CANONICAL_PATH", "{path}");
        assert_refused(&sim, &proxy, &r, path).await;
    }
}

#[tokio::test]
async fn row06_credentials_outside_the_path() {
    let (sim, proxy) = setup().await;
    let oauth = proxy.url(&format!("/rest/{UPDATE}"));
    let bodies = [
        format!(r#"{{"id":238,"fields":{{"typeIds":[]}},"auth":"{TOKEN}"}}"#),
        format!(r#"{{"id":238,"fields":{{"typeIds":[]}},"access_token":"{TOKEN}"}}"#),
        format!(r#"{{"id":238,"fields":{{"typeIds":[]}},"aplogin":"{USER}","ap":"{SECRET}"}}"#),
    ];
    for b in &bodies {
        assert_eq!(
            post_json(&oauth, b).await.status,
            StatusCode::FORBIDDEN,
            "{b}"
        );
    }
    let bearer = send(
        Method::POST,
        &oauth,
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {TOKEN}")),
        ],
        EMPTY_JSON,
    )
    .await;
    assert_eq!(bearer.status, StatusCode::FORBIDDEN);
    let query = post_json(&format!("{oauth}?aplogin={USER}&ap={SECRET}"), EMPTY_JSON).await;
    assert_eq!(query.status, StatusCode::FORBIDDEN);
    let session = post_json(&format!("{oauth}?sessid=abc"), EMPTY_JSON).await;
    assert_eq!(session.json()["error"], "UNSUPPORTED_AUTH");
    // Allowed through each carrier: audited with the caller's identity.
    let ok = post_json(
        &oauth,
        &format!(
            r#"{{"id":238,"fields":{{"title":"via ap"}},"aplogin":"{USER}","ap":"{SECRET}"}}"#
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(
        proxy.export().last().expect("event")["caller"]["user_id"],
        USER
    );
    assert_trail_covers_every_change(&sim, &proxy);
}

#[tokio::test]
async fn row07_every_http_verb() {
    let (sim, proxy) = setup().await;
    let q = format!("{}?id=238&fields[typeIds][]=", proxy.hook_url(UPDATE));
    for m in [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let r = send(m.clone(), &q, &[], "").await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{m}: query parameters are read on every verb"
        );
    }
    let head = send(Method::HEAD, &q, &[], "").await;
    assert_eq!(head.status, StatusCode::FORBIDDEN);
    let put_body = send(
        Method::PUT,
        &proxy.hook_url(UPDATE),
        &[("content-type", "application/json")],
        EMPTY_JSON,
    )
    .await;
    assert_eq!(
        put_body.json()["error"],
        "UNSUPPORTED_ENCODING",
        "a body the portal would ignore is refused"
    );
    let get_ok = get(&format!(
        "{}?id=238&fields[title]=via%20GET",
        proxy.hook_url(UPDATE)
    ))
    .await;
    assert_eq!(get_ok.status, StatusCode::OK);
    assert_trail_covers_every_change(&sim, &proxy);
}

#[tokio::test]
async fn row08_query_plus_body() {
    let (sim, proxy) = setup().await;
    // The body sets the title; the query, which the portal merges in, empties typeIds.
    let r = post_json(
        &format!("{}?fields[typeIds][]=", proxy.hook_url(UPDATE)),
        r#"{"id":238}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    // A body key replaces the query's at the top level (shallow): `fields` from the body wins.
    let merged = post_json(
        &format!("{}?fields[typeIds][]=", proxy.hook_url(UPDATE)),
        r#"{"id":238,"fields":{"title":"body wins"}}"#,
    )
    .await;
    assert_eq!(merged.status, StatusCode::OK);
    assert_eq!(sim.sim.solution(238).expect("238").type_ids, vec![14, 158]);
    assert_trail_covers_every_change(&sim, &proxy);
}

#[tokio::test]
async fn row09_content_type_confusion() {
    let (sim, proxy) = setup().await;
    let hidden = r#"{"id":238,"x":"&id=238&fields[typeIds][]="}"#;
    for ct in [
        "Application/JSON",
        "text/plain",
        "application/json ;charset=utf-8",
    ] {
        let r = send(
            Method::POST,
            &proxy.hook_url(UPDATE),
            &[("content-type", ct)],
            hidden,
        )
        .await;
        assert_eq!(r.json()["error"], "UNSUPPORTED_ENCODING", "{ct}");
    }
    let none = send(Method::POST, &proxy.hook_url(UPDATE), &[], hidden).await;
    assert_eq!(none.json()["error"], "UNSUPPORTED_ENCODING");
    let invalid = post_json(
        &format!("{}?id=238&fields[typeIds][]=", proxy.hook_url(UPDATE)),
        "{not json",
    )
    .await;
    assert_eq!(
        invalid.json()["error"],
        "INVALID_REQUEST_BODY",
        "the portal would ignore the body and run the query"
    );
    assert_refused(&sim, &proxy, &invalid, "content type").await;
}

#[tokio::test]
async fn row10_duplicate_and_mixed_keys() {
    let (sim, proxy) = setup().await;
    let dup = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[14]},"fields":{"typeIds":[]}}"#,
    )
    .await;
    assert_eq!(dup.json()["error"], "AMBIGUOUS_PARAMETER");
    // PHP form rules: the later scalar replaces the array -> "" -> unbind all -> denied.
    let mixed = post_form(
        &proxy.hook_url(UPDATE),
        "id=238&fields[typeIds][]=14&fields[typeIds]=",
    )
    .await;
    assert_eq!(mixed.status, StatusCode::FORBIDDEN);
    // The later array replaces the scalar -> [14] -> allowed, and audited as [14].
    let array_wins = post_form(
        &proxy.hook_url(UPDATE),
        "id=238&fields[typeIds]=&fields[typeIds][]=14",
    )
    .await;
    assert_eq!(array_wins.status, StatusCode::OK);
    assert_eq!(sim.sim.solution(238).expect("238").type_ids, vec![14]);
    assert_trail_covers_every_change(&sim, &proxy);
}

#[tokio::test]
async fn row11_the_input_variable_cap() {
    let (sim, proxy) = setup().await;
    let padding: String = (0..1000).map(|i| format!("p{i}=1&")).collect();
    let r = post_form(
        &proxy.hook_url(UPDATE),
        &format!("id=238&fields[typeIds][]=14&{padding}fields[typeIds]="),
    )
    .await;
    assert_eq!(r.json()["error"], "TOO_MANY_PARAMETERS");
    assert_refused(&sim, &proxy, &r, "var cap").await;
}

#[tokio::test]
async fn row12_value_normalisation() {
    let (sim, proxy) = setup().await;
    for v in [
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
    ] {
        let r = post_json(
            &proxy.hook_url(UPDATE),
            &format!(r#"{{"id":238,"fields":{{"typeIds":{v}}}}}"#),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{v}");
    }
    // Values that normalise to a real set are audited as the set the portal applies.
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":["14abc",14.9,"158",158]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        proxy.export().last().expect("event")["request"]["params"]["fields"]["typeIds"],
        json!([14, 158])
    );
    assert_trail_covers_every_change(&sim, &proxy);
}

#[tokio::test]
async fn row13_key_spellings_inside_fields() {
    let (sim, proxy) = setup().await;
    for f in [
        r#"{"typeIds":[14],"TYPE_IDS":[]}"#,
        r#"{"TYPE_IDS":[]}"#,
        r#"{"type_ids":[]}"#,
        r#"{"TypeIds":[]}"#,
        r#"{"TITLE":"x"}"#,
    ] {
        let r = post_json(
            &proxy.hook_url(UPDATE),
            &format!(r#"{{"id":238,"fields":{f}}}"#),
        )
        .await;
        assert_eq!(r.json()["error"], "AMBIGUOUS_PARAMETER", "{f}");
    }
    let add = post_json(
        &proxy.hook_url("crm.automatedsolution.add"),
        r#"{"fields":{"title":"x","typeIDs":[14]}}"#,
    )
    .await;
    assert_eq!(add.json()["error"], "AMBIGUOUS_PARAMETER");
    assert_refused(&sim, &proxy, &add, "key spellings").await;
}

#[tokio::test]
async fn row14_id_spellings() {
    let (sim, proxy) = setup().await;
    for id in [
        "\"238.9\"",
        "\" 238\"",
        "\"2.38e2\"",
        "238.0",
        "\"+238\"",
        "true",
        "[238]",
    ] {
        let r = post_json(
            &proxy.hook_url(UPDATE),
            &format!(r#"{{"id":{id},"fields":{{"typeIds":[]}}}}"#),
        )
        .await;
        assert_eq!(r.json()["error"], "INVALID_PARAMETER", "id = {id}");
    }
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"ID":238,"id":238,"fields":{"typeIds":[14]}}"#,
    )
    .await;
    assert_eq!(r.json()["error"], "AMBIGUOUS_PARAMETER");
    assert_refused(&sim, &proxy, &r, "id spellings").await;
}

#[tokio::test]
async fn row15_batch_in_every_transport() {
    let (sim, proxy) = setup().await;
    let url = proxy.hook_url("batch");
    let json_batch = post_json(
        &url,
        r#"{"HALT":0,"CMD":["crm.automatedsolution.update?id=238&fields[typeIds][]="]}"#,
    )
    .await;
    assert_eq!(json_batch.status, StatusCode::FORBIDDEN);
    let form = post_form(
        &url,
        "cmd[u]=crm.automatedsolution.update%3Fid%3D238%26fields%255BtypeIds%255D%255B%255D%3D",
    )
    .await;
    assert_eq!(
        form.status,
        StatusCode::FORBIDDEN,
        "doubly encoded form command: {:?}",
        form.body
    );
    let query = get(&format!(
        "{url}?cmd[u]=CRM.AUTOMATEDSOLUTION.UPDATE%3Fid%3D238%26fields%5BtypeIds%5D%3D"
    ))
    .await;
    assert_eq!(query.status, StatusCode::FORBIDDEN);
    let hidden_after_hash = post_json(&url, r#"{"cmd":{"u":"crm.automatedsolution.update?id=238&fields[title]=t#&fields[typeIds][]="}}"#).await;
    assert_eq!(
        hidden_after_hash.status,
        StatusCode::OK,
        "everything after # is dropped, as by the portal"
    );
    assert_eq!(sim.sim.solution(238).expect("238").type_ids, vec![14, 158]);
    let reference = post_json(&url, r#"{"cmd":{"l":"crm.automatedsolution.list","u":"crm.automatedsolution.update?id=238&fields[typeIds]=$error[x]"}}"#).await;
    assert_eq!(reference.json()["error"], "BATCH_REFERENCE");
    assert_trail_covers_every_change(&sim, &proxy);
}

#[tokio::test]
async fn row16_rest_3_prefix() {
    let (sim, proxy) = setup().await;
    let v3 = post_json(
        &proxy.url(&format!("/rest/api/{USER}/{SECRET}/{UPDATE}")),
        EMPTY_JSON,
    )
    .await;
    assert_eq!(v3.json()["error"], "UNSUPPORTED_API_VERSION");
    let v3_batch = post_json(
        &proxy.url(&format!("/rest/api/{USER}/{SECRET}/batch")),
        r#"[{"method":"crm.automatedsolution.update","query":{"id":238,"fields":{"typeIds":[]}}}]"#,
    )
    .await;
    assert_eq!(v3_batch.json()["error"], "BATCH_NOT_AUDITED");
    assert_refused(&sim, &proxy, &v3_batch, "rest 3").await;
}

#[tokio::test]
async fn row17_semantic_side_doors() {
    let (sim, proxy) = setup().await;
    let add = post_json(
        &proxy.hook_url("crm.automatedsolution.add"),
        r#"{"fields":{"title":"Steal","typeIds":[172]}}"#,
    )
    .await;
    assert_eq!(
        add.status,
        StatusCode::FORBIDDEN,
        "taking 172 would leave workplace 301 empty"
    );
    for m in ["crm.type.update", "crm.type.add"] {
        let r = post_json(
            &proxy.hook_url(m),
            r#"{"id":14,"fields":{"customSectionId":267}}"#,
        )
        .await;
        assert_eq!(r.json()["error"], "BINDING_CHANGE_NOT_AUDITED", "{m}");
        let r = post_json(
            &proxy.hook_url(m),
            r#"{"id":14,"fields":{"isExternal":"Y"}}"#,
        )
        .await;
        assert_eq!(r.json()["error"], "BINDING_CHANGE_NOT_AUDITED", "{m}");
    }
    // Deleting a smart process bound to a workplace would unbind it there unaudited.
    let bound = post_json(&proxy.hook_url("crm.type.delete"), r#"{"id":14}"#).await;
    assert_eq!(bound.json()["error"], "BINDING_CHANGE_NOT_AUDITED");
    assert!(bound.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("workplace 238")));
    let in_batch = post_json(
        &proxy.hook_url("batch"),
        r#"{"cmd":{"d":"crm.type.delete?id=190"}}"#,
    )
    .await;
    assert_eq!(in_batch.json()["error"], "BINDING_CHANGE_NOT_AUDITED");
    // An unbound one passes through (the simulator has no crm.type.*: its 404 shows it got there).
    let unbound = post_json(&proxy.hook_url("crm.type.delete"), r#"{"id":190}"#).await;
    assert_eq!(unbound.status, StatusCode::NOT_FOUND);
    assert_eq!(unbound.json()["error"], "ERROR_METHOD_NOT_FOUND");
    let ok = post_json(
        &proxy.hook_url("crm.automatedsolution.add"),
        r#"{"fields":{"title":"New","typeIds":[158]}}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let e = proxy.export().into_iter().last().expect("event");
    assert_eq!(
        e["side_effects"][0]["solution_id"], 238,
        "158 was taken from 238"
    );
    assert_eq!(e["side_effects"][0]["after_seen"]["typeIds"], json!([14]));
    assert_trail_covers_every_change(&sim, &proxy);
}

#[tokio::test]
async fn row18_failure_is_not_a_no_op() {
    let (sim, proxy) = setup().await;
    sim.sim.push_fault(applied_then_refused());
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[14]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = proxy.export().into_iter().last().expect("event");
    assert_eq!(e["outcome"], "rejected_by_portal");
    assert_eq!(
        e["after"]["typeIds"],
        json!([14]),
        "re-read after the error: the bindings did change"
    );
}

#[tokio::test]
async fn row19_other_endpoints() {
    let (sim, proxy) = setup().await;
    for path in [
        "/bitrix/services/main/ajax.php?action=crm.automatedsolution.update",
        "/REST/1/k/crm.automatedsolution.update",
        "/",
    ] {
        let r = post_json(&proxy.url(path), EMPTY_JSON).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_refused(&sim, &proxy, &r, path).await;
    }
    assert!(sim.sim.calls().is_empty());
}
