//! Fuzzing and property tests for every parser of untrusted input (issue 6), on the stable
//! toolchain with no extra tool: a seeded, coverage-blind mutation fuzzer with a fixed time
//! budget (`fuzz_parsers_for_a_bounded_time`), plus proptest properties.
//!
//! Targets: `rest::params::{parse_str, parse_str_lossy, json_decode, request_params}`,
//! `rest::route::classify`, `rest::batch::{commands, v3_methods}`, `mutation::interpret`.
//! Besides "never panics", each target has invariants; the strongest is the audited path's
//! contract: whatever `interpret` accepts, its canonical re-encoding (what is forwarded) reads
//! back as exactly the same mutation with the same credential kind.
//!
//! Budget: `FUZZ_SECONDS` (default 12) split over the targets; seed: `FUZZ_SEED` (default
//! random, printed, so a failure can be replayed). A failing input is printed in hex.

use b24_audit_proxy::mutation::{canonical, interpret, Interpreted, MutationKind};
use b24_audit_proxy::rest::params::{json_decode, parse_str, parse_str_lossy, request_params};
use b24_audit_proxy::rest::route::classify;
use b24_audit_proxy::rest::{batch, command, encode, php};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

const DICT: &[&[u8]] = &[
    b"&",
    b"=",
    b"[",
    b"]",
    b"[]",
    b"%",
    b"%5B",
    b"%5D",
    b"%00",
    b"%FF",
    b"%C0%AF",
    b"+",
    b"{",
    b"}",
    b"\"",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"99999999999999999999",
    b"null",
    b"true",
    b"[[[[[[[[",
    b"]]]]]]]]",
    b"id",
    b"ID",
    b"fields",
    b"FIELDS",
    b"typeIds",
    b"TYPE_IDS",
    b"title",
    b"auth",
    b"access_token",
    b"aplogin",
    b"ap",
    b"sessid",
    b"cmd",
    b"CMD",
    b"halt",
    b"?",
    b"#",
    b"batch",
    b"crm.automatedsolution.update",
    b"CRM.AutomatedSolution.Delete",
    b".json",
    b".xml",
    b"/",
    b"//",
    b"..",
    b"%2F",
    b"%2e",
    b"index.php",
    b"\xff",
    b"\xc3\xa9",
    b" ",
    b"\t",
    b"\r\n",
    b"$result[a]",
];

fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let tok = DICT[rng.gen_range(0..DICT.len())];
                let at = rng.gen_range(0..=len);
                input.splice(at..at, tok.iter().copied());
            }
            2 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=8)).min(len);
                input.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=16)).min(len);
                let piece = input[a..b].to_vec();
                input.splice(a..a, piece);
            }
            4 => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                if !other.is_empty() {
                    let a = rng.gen_range(0..other.len());
                    let b = (a + rng.gen_range(1..=32)).min(other.len());
                    let at = rng.gen_range(0..=len);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            5 => {
                // Repetition, for nesting and counting limits.
                let tok = DICT[rng.gen_range(0..DICT.len())];
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..200);
                let rep: Vec<u8> = tok.iter().copied().cycle().take(tok.len() * n).collect();
                input.splice(at..at, rep);
            }
            _ => {
                let at = rng.gen_range(0..=len);
                input.insert(at, rng.gen());
            }
        }
    }
    input.truncate(64 * 1024);
}

/// Runs `check` on mutated inputs until `budget` is spent; returns how many ran.
fn fuzz(
    name: &str,
    seed: u64,
    budget: Duration,
    corpus: &[&[u8]],
    mut check: impl FnMut(&[u8]),
) -> usize {
    let corpus: Vec<Vec<u8>> = corpus.iter().map(|c| c.to_vec()).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ (name.len() as u64 * 0x0100_0193));
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < budget {
        for _ in 0..64 {
            let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
            if rng.gen_bool(0.95) {
                mutate(&mut rng, &corpus, &mut input);
            }
            if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
                panic!(
                    "{name}: failed on input (seed {seed}) hex {}\n{:?}",
                    hex::encode(&input),
                    String::from_utf8_lossy(&input)
                );
            }
            n += 1;
        }
    }
    n
}

/// PHP's `parse_str` reads a C string: pieces after a raw NUL are never seen.
fn non_empty_pieces(input: &[u8]) -> usize {
    let end = input.iter().position(|b| *b == 0).unwrap_or(input.len());
    input[..end]
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .count()
}

fn check_parse_str(input: &[u8]) {
    let a = parse_str(input);
    assert_eq!(a, parse_str(input), "deterministic");
    if let Ok(p) = &a {
        assert_eq!(p.vars, non_empty_pieces(input), "vars counts the pieces");
    }
    let _ = parse_str_lossy(input);
}

fn check_json_decode(input: &[u8]) {
    if json_decode(input).is_ok() {
        assert!(
            serde_json::from_slice::<serde_json::Value>(input).is_ok(),
            "json_decode is never more lenient than a JSON parser"
        );
    }
}

fn check_request_params(input: &[u8]) {
    // Split the input into query | body | content type selector.
    let (query, body) = match input.iter().position(|b| *b == b'|') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&b""[..], input),
    };
    let cts: [Option<&[u8]>; 5] = [
        None,
        Some(b"application/json"),
        Some(b"application/x-www-form-urlencoded"),
        Some(b"text/plain"),
        Some(b"multipart/form-data; boundary=x"),
    ];
    let ct = cts[input.len() % cts.len()];
    for method in [Method::POST, Method::GET] {
        if let Ok(p) = request_params(&method, ct, query, body) {
            if method == Method::GET {
                assert_eq!(p.params, parse_str(query).expect("query parsed").params);
            }
            if let Ok(call) = b24_audit_proxy::mutation::parse_batch(&p.params) {
                for c in call.commands {
                    // A watched command is forwarded in canonical form, which must read back
                    // as exactly the mutation that was evaluated.
                    if let Some(m) = &c.mutation {
                        let text = b24_audit_proxy::mutation::canonical_command(m);
                        let (_, q) = text.split_once('?').expect("method?query");
                        let back = b24_audit_proxy::mutation::read_mutation(
                            m.kind,
                            &parse_str(q.as_bytes())
                                .expect("canonical query parses")
                                .params,
                        )
                        .expect("canonical command reads back");
                        assert_eq!(&back, m);
                    }
                }
            }
        }
    }
}

/// A batch command either is refused or splits into a method and a query, and the proxy's
/// re-encoding of what `parse_str` read of that query reads back the same.
fn check_command(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let Ok(parts) = command::split(&text) else {
        return;
    };
    assert!(!parts.method.is_empty());
    assert!(parts
        .method
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
    let query = parts.query.as_deref().unwrap_or("");
    assert!(
        !query.bytes().any(|b| b < 0x20 || b == 0x7f),
        "control characters remain"
    );
    if let Ok(parsed) = parse_str(query.as_bytes()) {
        if let Some(enc) = encode::form_query(&parsed.params) {
            let again = parse_str(enc.as_bytes()).expect("the encoding parses");
            assert!(again.params.same_entries(&parsed.params), "{enc}");
            let rebuilt = format!("{}?{enc}", parts.method);
            let split = command::split(&rebuilt).expect("a rebuilt command splits");
            assert_eq!(split.query.as_deref(), Some(enc.as_str()));
        }
    }
}

fn check_classify(input: &[u8]) {
    let path = format!("/rest/{}", String::from_utf8_lossy(input));
    let a = classify(&path);
    if let Ok(r) = &a {
        assert!(!r.method.is_empty() && !r.method.contains('/'));
        assert_eq!(r.method, r.method.to_ascii_lowercase());
        assert!(!path.contains("//"), "a // path is never accepted: {path}");
        assert_eq!(classify(&path).ok().as_ref(), Some(r), "deterministic");
    }
    let _ = batch::v3_methods(input);
}

/// The forwarded call reads back as the evaluated one.
fn round_trip(call: &Interpreted, kind: MutationKind) {
    let out = canonical(call);
    let (path, query) = out
        .path_and_query
        .split_once('?')
        .unwrap_or((out.path_and_query.as_str(), ""));
    let route = classify(path).expect("the canonical path is canonical");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(a) = &out.authorization {
        headers.insert(
            "authorization",
            HeaderValue::from_str(a).expect("header value"),
        );
    }
    let again = interpret(
        kind,
        &route,
        &Method::POST,
        &headers,
        query.as_bytes(),
        out.body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("the canonical re-encoding is refused: {e} ({})", out.body));
    assert_eq!(again.mutation, call.mutation, "forwarded = evaluated");
    assert_eq!(again.credential.auth_kind(), call.credential.auth_kind());
    assert_eq!(again.credential.user_id(), call.credential.user_id());
    assert_eq!(
        again.credential.secret_material(),
        call.credential.secret_material()
    );
}

fn check_interpret(input: &[u8]) {
    let (query, body) = match input.iter().position(|b| *b == b'|') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&b""[..], input),
    };
    let kinds = [
        (MutationKind::Update, "crm.automatedsolution.update"),
        (MutationKind::Add, "crm.automatedsolution.add"),
        (MutationKind::Delete, "crm.automatedsolution.delete"),
    ];
    let (kind, method) = kinds[input.len() % 3];
    for prefix in ["/rest/1/sim-secret-1/", "/rest/"] {
        let route = classify(&format!("{prefix}{method}")).expect("route");
        for ct in ["application/json", "application/x-www-form-urlencoded"] {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static(ct));
            for m in [Method::POST, Method::GET] {
                let b = if m == Method::GET { &b""[..] } else { body };
                let Ok(call) = interpret(kind, &route, &m, &headers, query, b) else {
                    continue;
                };
                let mu = &call.mutation;
                assert_eq!(mu.kind, kind);
                match kind {
                    MutationKind::Add => assert!(mu.solution_id.is_none()),
                    _ => assert!(mu.solution_id.is_some_and(|id| id > 0)),
                }
                if let Some(t) = &mu.type_ids {
                    assert!(t.windows(2).all(|w| w[0] < w[1]), "sorted, deduplicated");
                    assert!(t.iter().all(|id| *id > 0), "positive");
                }
                round_trip(&call, kind);
            }
        }
    }
}

#[test]
fn fuzz_parsers_for_a_bounded_time() {
    let seconds: f64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12.0);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let per = Duration::from_secs_f64(seconds / 7.0);
    let form: &[&[u8]] = &[
        b"id=238&fields[title]=HR&fields[typeIds][]=14&fields[typeIds][]=190",
        b"a[b][c]=1&a[]=2&a[x=3&%5B=4&+x+=5",
        b"fields%5BtypeIds%5D%5B%5D=abc&id=1&id=2",
        b"cmd[a]=crm.deal.list%3Fstart%3D0&cmd[b]=user.current&halt=0",
    ];
    let json: &[&[u8]] = &[
        br#"{"id":238,"fields":{"title":"x","typeIds":[14,"158",0,-1,"abc",1.5]}}"#,
        br#"{"halt":0,"cmd":{"a":"crm.deal.list?start=0","b":"batch?cmd[x]=y"}}"#,
        br#"[1,[2,[3]],{"a":{"b":null}},"\u00e9",1e10,-0.0,true]"#,
        br#"{"id":"238","auth":"tok","fields":{"title":null}}"#,
    ];
    let paths: &[&[u8]] = &[
        b"1/sim-secret-1/crm.automatedsolution.update",
        b"crm.automatedsolution.Update.json",
        b"api/1/s/batch",
        b"1/s/crm.deal.list/",
        b"%63rm.automatedsolution.%75pdate",
    ];
    let calls: &[&[u8]] = &[
        br#"|{"id":238,"fields":{"title":"HR","typeIds":[14,190]}}"#,
        b"id=238&fields[typeIds][]=14|",
        b"auth=tok|id=238&fields[title]=a+b",
        br#"|{"fields":{"title":"New","typeIds":["14"]},"auth":"tok"}"#,
        b"aplogin=1&ap=s|id=5",
        br#"|{"id":"5","aplogin":"1","ap":"s"}"#,
    ];
    let mut runs = Vec::new();
    runs.push((
        "parse_str",
        fuzz("parse_str", seed, per, form, check_parse_str),
    ));
    runs.push((
        "json_decode",
        fuzz("json_decode", seed, per, json, check_json_decode),
    ));
    let mixed: Vec<&[u8]> = form.iter().chain(json).copied().collect();
    runs.push((
        "request_params+batch",
        fuzz("request_params", seed, per, &mixed, check_request_params),
    ));
    runs.push((
        "classify",
        fuzz("classify", seed, per, paths, check_classify),
    ));
    let commands: &[&[u8]] = &[
        b"crm.deal.list?filter[>ID]=1&select[]=ID#x",
        b"crm.automatedsolution.update?id=5&fields[typeIds][]=14&fields[title]=a%26b",
        b"a:crm.automatedsolution.update?id=5",
        b"user.current",
    ];
    runs.push((
        "batch command+re-encoding",
        fuzz("command", seed, per, commands, check_command),
    ));
    runs.push((
        "interpret+round trip",
        fuzz("interpret", seed, per * 2, calls, check_interpret),
    ));
    let total: usize = runs.iter().map(|(_, n)| n).sum();
    eprintln!("fuzz (seed {seed}, {seconds} s): {total} inputs: {runs:?}");
    assert!(total > 10_000, "the budget ran real inputs");
}

fn php_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[0-9a-z -]{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(serde_json::Value::Array)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any JSON update with a valid id: accepted calls round-trip through the canonical
    /// re-encoding, and `typeIds` comes out sorted, unique and positive.
    #[test]
    fn interpret_round_trips(id in 1i64..100_000, title in proptest::option::of("[ -~]{0,20}"), types in proptest::option::of(php_value())) {
        let mut fields = serde_json::Map::new();
        if let Some(t) = &title { fields.insert("title".into(), t.clone().into()); }
        if let Some(t) = &types { fields.insert("typeIds".into(), t.clone()); }
        let body = serde_json::json!({"id": id, "fields": fields}).to_string();
        let route = classify("/rest/1/sim-secret-1/crm.automatedsolution.update").expect("route");
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Ok(call) = interpret(MutationKind::Update, &route, &Method::POST, &headers, b"", body.as_bytes()) {
            prop_assert_eq!(call.mutation.solution_id, Some(id));
            prop_assert_eq!(call.mutation.title.clone(), title);
            if let Some(t) = &call.mutation.type_ids {
                prop_assert!(t.windows(2).all(|w| w[0] < w[1]) && t.iter().all(|x| *x > 0));
            }
            round_trip(&call, MutationKind::Update);
        }
    }

    /// A batch with any command list: every command's method is lower-case, and a watched
    /// method in any case is always refused.
    #[test]
    fn batch_commands_find_watched_methods_in_any_case(names in prop::collection::vec("[a-zA-Z.]{1,30}", 0..6), flip in any::<u64>()) {
        let mut cmd = serde_json::Map::new();
        let mut watched = false;
        for (i, n) in names.iter().enumerate() {
            let m = if flip & (1 << i) != 0 { "CRM.automatedSolution.UPDATE".to_owned() } else { n.clone() };
            watched |= m.eq_ignore_ascii_case("crm.automatedsolution.update");
            cmd.insert(format!("c{i}"), format!("{m}?id=1#frag").into());
        }
        let params = match php::Value::from_json(&serde_json::json!({"cmd": cmd})) {
            php::Value::Array(a) => a,
            _ => unreachable!(),
        };
        match b24_audit_proxy::mutation::parse_batch(&params) {
            Ok(call) => {
                prop_assert_eq!(call.commands.len(), names.len());
                let found = call.commands.iter().any(|c| c.mutation.is_some());
                prop_assert_eq!(found, watched, "a watched method in any case is audited");
                for c in call.commands.iter().filter_map(|c| c.mutation.as_ref()) {
                    prop_assert_eq!(c.solution_id, Some(1));
                }
            }
            // Only a name that is itself a watched method (nested batch, a suffixed spelling)
            // may make the whole batch refused.
            Err(_) => {
                let names_a_watched_method = names.iter().any(|n| {
                    let lower = n.to_ascii_lowercase();
                    let stem = lower.trim_end_matches(".json").trim_end_matches(".xml");
                    b24_audit_proxy::watched::Watched::of(stem).is_some()
                });
                prop_assert!(names_a_watched_method);
            }
        }
    }

    /// `json_decode` agrees with a JSON parser on every document without duplicate keys that
    /// fits PHP's nesting limit.
    #[test]
    fn json_decode_accepts_what_json_accepts(v in php_value()) {
        let text = serde_json::json!({"v": v}).to_string();
        let decoded = json_decode(text.as_bytes()).expect("valid JSON is decoded");
        prop_assert_eq!(decoded.to_json(), serde_json::json!({"v": v}));
    }

    /// `parse_str` never fails on ASCII without percent-escapes, and counts every piece.
    #[test]
    fn parse_str_counts_pieces(s in "[a-z0-9\\[\\]=&+]{0,60}") {
        let p = parse_str(s.as_bytes()).expect("plain ASCII parses");
        prop_assert_eq!(p.vars, non_empty_pieces(s.as_bytes()));
    }
}
