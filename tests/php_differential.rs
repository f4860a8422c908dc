//! Differential tests against PHP itself: the proxy's `parse_str` and `json_decode` readers are
//! checked against PHP's own functions (`php-cli`, installed by `scripts/test`) on generated
//! inputs, so the decoders are verified against the real thing, not against our reading of it.
//!
//! Inputs are generated with proptest's RNG in one batch, sent to a single `php` process as a
//! JSON array, and every answer is compared. Inputs that our strict reader refuses (invalid
//! UTF-8, duplicate JSON keys) are compared through the lenient portal reader instead.

use b24_audit_proxy::rest::params::{parse_str, parse_str_lossy};
use b24_audit_proxy::rest::php::Value;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `script` with `inputs` (JSON array of strings) on stdin; returns its JSON array answer.
fn php(script: &str, inputs: &[String]) -> Vec<serde_json::Value> {
    let mut child = Command::new("php")
        .args(["-d", "display_errors=stderr", "-r", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("php-cli must be installed for this test (scripts/test installs it)");
    let payload = serde_json::to_vec(inputs).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&payload)
        .expect("write");
    let out = child.wait_with_output().expect("php runs");
    assert!(out.status.success(), "php failed");
    serde_json::from_slice(&out.stdout).expect("php answers JSON")
}

/// Query strings from the characters that matter to PHP's reader: brackets, dots, spaces,
/// `+`, `%` escapes (valid and not), `&`, `=` and a few key names.
fn query_strategy() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("fields".to_owned()),
        Just("typeIds".to_owned()),
        Just("id".to_owned()),
        Just("a".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("05".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("[]".to_owned()),
        Just(".".to_owned()),
        Just(" ".to_owned()),
        Just("+".to_owned()),
        Just("=".to_owned()),
        Just("&".to_owned()),
        Just("%5B".to_owned()),
        Just("%5D".to_owned()),
        Just("%2E".to_owned()),
        Just("%20".to_owned()),
        // PHP skips one whitespace character before `]` (`a[ ]` appends): found by this test.
        Just("%09".to_owned()),
        Just("%0A".to_owned()),
        Just("%00".to_owned()),
        Just("%zz".to_owned()),
        Just("%".to_owned()),
        Just("%C3%A9".to_owned()),
        Just("_".to_owned()),
        Just("x".to_owned()),
    ];
    proptest::collection::vec(token, 0..14).prop_map(|t| t.concat())
}

fn generate<S: Strategy>(s: S, n: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::new(Config::default());
    (0..n)
        .map(|_| s.new_tree(&mut runner).expect("generate").current())
        .collect()
}

#[test]
fn parse_str_matches_php_on_generated_inputs() {
    let mut inputs = generate(query_strategy(), 5000);
    // The rows of docs/protocol.md, Form decoding, always included.
    inputs.extend(
        [
            "fields[typeIds][]=14&fields[typeIds][]=15",
            "fields[typeIds][1]=14&fields[typeIds][0]=15",
            "fields[typeIds][]=14&fields[typeIds]=",
            "fields.title=x",
            "fields[typeIds=1",
            "CMD[x]=1&cmd[y]=2",
            "a[-5]=x&a[]=y",
        ]
        .map(str::to_owned),
    );
    let answers = php(
        r#"$in = json_decode(stream_get_contents(STDIN), true); $out = [];
           foreach ($in as $q) { parse_str($q, $r); $out[] = json_encode($r, JSON_INVALID_UTF8_SUBSTITUTE); }
           echo json_encode($out);"#,
        &inputs,
    );
    let mut compared = 0;
    for (q, answer) in inputs.iter().zip(answers) {
        let php: serde_json::Value =
            serde_json::from_str(answer.as_str().expect("string")).expect("php json");
        let ours = match parse_str(q.as_bytes()) {
            Ok(p) => Value::Array(p.params).to_json(),
            // Invalid UTF-8 once decoded: the strict reader refuses; the lenient one must
            // still agree with PHP (which substitutes U+FFFD in its JSON the same way).
            Err(_) => Value::Array(parse_str_lossy(q.as_bytes())).to_json(),
        };
        assert_eq!(ours, php, "parse_str({q:?})");
        compared += 1;
    }
    assert_eq!(compared, 5007);
}

fn json_strategy() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("a"),
        Just("b"),
        Just("0"),
        Just("1"),
        Just("05"),
        Just("-1"),
        Just(""),
        Just("typeIds")
    ];
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        Just("9223372036854775807".to_owned()),
        Just("\"x\"".to_owned()),
        Just("\"\\u00e9\"".to_owned()),
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

#[test]
fn json_decode_matches_php_on_generated_inputs() {
    let inputs = generate(json_strategy(), 3000);
    let answers = php(
        r#"$in = json_decode(stream_get_contents(STDIN), true); $out = [];
           foreach ($in as $t) { $out[] = json_encode(json_decode($t, true)); }
           echo json_encode($out);"#,
        &inputs,
    );
    for (text, answer) in inputs.iter().zip(answers) {
        let php: serde_json::Value =
            serde_json::from_str(answer.as_str().expect("string")).expect("php json");
        // The portal's (lenient) reading: duplicate keys keep the last value at the first
        // key's position, numeric-string keys fold to integers.
        let parsed: serde_json::Value =
            serde_json::from_str(text).expect("generated JSON is valid");
        let ours = Value::from_json(&parsed).to_json();
        assert_eq!(ours, php, "json_decode({text})");
        // The strict reader agrees whenever it accepts the input.
        if let Ok(strict) = b24_audit_proxy::rest::params::json_decode(text.as_bytes()) {
            assert_eq!(strict.to_json(), php, "strict json_decode({text})");
        }
    }
}
