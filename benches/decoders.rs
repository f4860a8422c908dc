//! Micro-benchmarks of the request decoders, policy evaluation and the audit chain's hashing:
//! the CPU the proxy spends per watched call before and after the portal's round trips.
//!
//! `cargo bench --bench decoders` (add `-- --quick` for a fast pass, or a filter such as
//! `-- request_params`). Regressions show as Criterion's "change" lines against the last run.

use b24_audit_proxy::audit::chain::{canonical_json, canonical_json_v1, entry_hash, GENESIS};
use b24_audit_proxy::config::PolicyConfig;
use b24_audit_proxy::mutation::parse_batch;
use b24_audit_proxy::mutation::{self, Mutation, MutationKind, SolutionState};
use b24_audit_proxy::policy::Policy;
use b24_audit_proxy::rest::params;
use b24_audit_proxy::rest::route::classify;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use std::hint::black_box;

const UPDATE_PATH: &str = "/rest/1/sim-secret-1/crm.automatedsolution.update";
const PASS_PATH: &str = "/rest/1/sim-secret-1/crm.deal.list";

const JSON_UPDATE: &[u8] =
    br#"{"id":238,"fields":{"title":"HR & Customer Success (EMEA)","typeIds":[14,158,190]}}"#;
const FORM_UPDATE: &[u8] = b"id=238&fields%5Btitle%5D=HR+%26+Customer+Success+%28EMEA%29\
&fields%5BtypeIds%5D%5B%5D=14&fields%5BtypeIds%5D%5B%5D=158&fields%5BtypeIds%5D%5B%5D=190";

/// A 50-command batch as an SDK sends it: a form body, each command with a query string.
fn batch_form(n: usize) -> Vec<u8> {
    let mut body = String::from("halt=0");
    for i in 0..n {
        body.push_str(&format!(
            "&cmd%5Bc{i}%5D=crm.deal.list%3Ffilter%5BID%5D%3D{i}%26select%5B0%5D%3DTITLE%26select%5B1%5D%3DSTAGE_ID"
        ));
    }
    body.into_bytes()
}

/// A 50-command batch of watched renames (each command becomes an audited event).
fn batch_watched_form(n: usize) -> Vec<u8> {
    let mut body = String::from("halt=0");
    for i in 0..n {
        body.push_str(&format!(
            "&cmd%5Bu{i}%5D=crm.automatedsolution.update%3Fid%3D{}%26fields%5Btitle%5D%3DWorkplace%2B{i}",
            300 + i
        ));
    }
    body.into_bytes()
}

fn batch_json(n: usize) -> Vec<u8> {
    let cmd: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            (
                format!("c{i}"),
                json!(format!(
                    "crm.deal.list?filter[ID]={i}&select[0]=TITLE&select[1]=STAGE_ID"
                )),
            )
        })
        .collect();
    json!({ "halt": 0, "cmd": cmd }).to_string().into_bytes()
}

fn headers(content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("b24-sdk/1.0"),
    );
    h
}

fn decoders(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_str");
    let form_batch = batch_form(50);
    for (name, input) in [
        ("form_update", FORM_UPDATE),
        ("batch_50", form_batch.as_slice()),
    ] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| b.iter(|| params::parse_str(black_box(input))));
    }
    g.finish();

    let mut g = c.benchmark_group("json_decode");
    let json_batch = batch_json(50);
    for (name, input) in [
        ("json_update", JSON_UPDATE),
        ("batch_50", json_batch.as_slice()),
    ] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| b.iter(|| params::json_decode(black_box(input))));
    }
    g.finish();

    let mut g = c.benchmark_group("request_params");
    let post = Method::POST;
    let json_ct: Option<&[u8]> = Some(b"application/json");
    let form_ct: Option<&[u8]> = Some(b"application/x-www-form-urlencoded");
    g.bench_function("json_update", |b| {
        b.iter(|| params::request_params(&post, json_ct, b"", black_box(JSON_UPDATE)))
    });
    g.bench_function("form_update", |b| {
        b.iter(|| params::request_params(&post, form_ct, b"", black_box(FORM_UPDATE)))
    });
    // Decoding plus reading the batch's commands (`rest::batch::parse`), as the pipeline does.
    let watched_batch = batch_watched_form(50);
    for (name, ct, input, watched) in [
        ("batch_50_form", form_ct, &form_batch, false),
        ("batch_50_json", json_ct, &json_batch, false),
        ("batch_50_watched_form", form_ct, &watched_batch, true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = params::request_params(&post, ct, b"", black_box(input))
                    .expect("batch decodes");
                let call = parse_batch(&p.params).expect("batch reads");
                assert_eq!(call.is_watched(), watched);
                call.commands.len()
            })
        });
    }
    g.finish();
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.bench_function("pass_through", |b| {
        b.iter(|| classify(black_box(PASS_PATH)))
    });
    g.bench_function("watched", |b| b.iter(|| classify(black_box(UPDATE_PATH))));
    g.bench_function("watched_encoded", |b| {
        b.iter(|| {
            classify(black_box(
                "/rest/1/sim-secret-1/crm.automatedsolution.%75pdate.json",
            ))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("interpret");
    let route = classify(UPDATE_PATH).expect("route");
    let json_h = headers("application/json");
    let form_h = headers("application/x-www-form-urlencoded");
    g.bench_function("json_update", |b| {
        b.iter(|| {
            mutation::interpret(
                MutationKind::Update,
                &route,
                &Method::POST,
                &json_h,
                b"",
                black_box(JSON_UPDATE),
            )
        })
    });
    g.bench_function("form_update", |b| {
        b.iter(|| {
            mutation::interpret(
                MutationKind::Update,
                &route,
                &Method::POST,
                &form_h,
                b"",
                black_box(FORM_UPDATE),
            )
        })
    });
    g.finish();
}

fn policy(c: &mut Criterion) {
    let m = Mutation {
        kind: MutationKind::Update,
        solution_id: Some(238),
        title: Some("HR & Customer Success (EMEA)".into()),
        type_ids: Some(vec![14, 158, 190]),
    };
    let before = SolutionState {
        id: 238,
        title: "HR & Customer Success".into(),
        type_ids: vec![14, 158],
    };
    let default = Policy::new(PolicyConfig::default());
    let strict = Policy::new(PolicyConfig {
        shadow: false,
        deny_empty_type_ids: true,
        protected_solution_ids: (1000..1050).collect(),
        deny_delete: true,
        max_type_ids_removed: Some(1),
        allowed_user_ids: Some((1..=20).map(|u| u.to_string()).collect()),
    });
    let mut g = c.benchmark_group("policy_evaluate");
    g.bench_function("default_allow", |b| {
        b.iter(|| default.evaluate(black_box(&m), Some(&before), Some("1")))
    });
    g.bench_function("every_rule_allow", |b| {
        b.iter(|| strict.evaluate(black_box(&m), Some(&before), Some("7")))
    });
    let unbind = Mutation {
        type_ids: Some(vec![]),
        ..m.clone()
    };
    g.bench_function("default_deny_empty", |b| {
        b.iter(|| default.evaluate(black_box(&unbind), Some(&before), Some("1")))
    });
    g.finish();
}

/// The `received` entry's hashed payload, shaped like the one the pipeline and writer build.
fn received_payload() -> serde_json::Value {
    json!({
        "caller": {"auth": "webhook", "user_id": "1", "fingerprint": "3f2a9c0d1e4b5a67"},
        "client_addr": "127.0.0.1",
        "request": {
            "http_method": "POST",
            "encoding": "json",
            "params": {"id": 238, "fields": {"title": "HR & Customer Success (EMEA)", "typeIds": [14, 158, 190]}},
        },
        "before": {"id": 238, "title": "HR & Customer Success", "typeIds": [14, 158]},
        "decision": "allow",
        "rule": null,
        "reason": null,
        "batch": null,
        "request_id": "0193a5b2-7c1e-7d4a-9f00-1234567890ab",
        "seq": 123456,
        "time": "2026-11-24T08:29:45.123Z",
        "event_id": "0193a5b2-7c1e-7d4a-9f00-1234567890ac",
        "kind": "received",
        "method": "crm.automatedsolution.update",
        "solution_id": 238,
    })
}

fn chain(c: &mut Criterion) {
    let payload = received_payload();
    let text = canonical_json(&payload);
    let mut g = c.benchmark_group("chain");
    g.bench_function("canonical_json_received", |b| {
        b.iter(|| canonical_json(black_box(&payload)))
    });
    // The legacy form (form 1), for comparison with RFC 8785 above.
    g.bench_function("canonical_json_v1_received", |b| {
        b.iter(|| canonical_json_v1(black_box(&payload)))
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("entry_hash_received", |b| {
        b.iter(|| entry_hash(black_box(GENESIS), black_box(&text)))
    });
    g.finish();

    // The portal's answer is parsed back into a state after each snapshot and forward.
    let answer = br#"{"result":{"automatedSolution":{"id":238,"title":"HR & Customer Success (EMEA)","typeIds":[14,158,190]}},"time":{"start":1732439385.1,"finish":1732439385.2,"duration":0.1,"processing":0.01,"date_start":"2026-11-24T08:29:45+00:00","date_finish":"2026-11-24T08:29:45+00:00"}}"#;
    let mut g = c.benchmark_group("answer");
    g.bench_function("parse_and_state", |b| {
        b.iter_batched(
            || answer.as_slice(),
            |a| {
                let v: serde_json::Value = serde_json::from_slice(a).expect("json");
                SolutionState::from_answer(&v)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decoders, routing, policy, chain);
criterion_main!(benches);
