//! Batches with watched commands, audited command by command: each command its own event
//! linked by the batch id and its `cmd` key; one violating command refuses the whole batch;
//! prior states read in one batch of `get`s; the second change to one workplace starts from the
//! first one's result; side effects on other workplaces recorded and policed.

mod support;

use http::StatusCode;
use serde_json::json;
use support::*;

fn gets_seen(sim: &portal_sim::SimHandle) -> usize {
    calls_of(sim, "crm.automatedsolution.get")
}

#[tokio::test]
async fn each_watched_command_is_its_own_event_linked_by_batch_id_and_key() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let r = post_json(
        &proxy.hook_url("batch"),
        r#"{"halt":0,"cmd":{
            "read":"crm.deal.list?start=0",
            "t1":"crm.automatedsolution.update?id=238&fields[title]=First",
            "t2":"CRM.AutomatedSolution.Update?id=238&fields[typeIds][]=14",
            "other":"crm.automatedsolution.update?id=301&fields%5Btitle%5D=Support%20desk"
        }}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let body = r.json();
    assert_eq!(
        body["result"]["result"]["t2"]["automatedSolution"]["typeIds"],
        json!([14])
    );
    assert!(body["result"]["result"]["read"].is_array());
    let ids: Vec<String> = r
        .event_id()
        .expect("event ids")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 3);
    let batch_id = r
        .headers
        .get("x-audit-batch-id")
        .and_then(|v| v.to_str().ok())
        .expect("batch id")
        .to_owned();

    let events = proxy.export();
    assert_eq!(events.len(), 3);
    for (e, (id, key)) in events.iter().zip(ids.iter().zip(["t1", "t2", "other"])) {
        assert_eq!(&e["id"], id.as_str());
        assert_eq!(e["batch"], json!({"id": batch_id, "key": key}));
        assert_eq!(e["outcome"], "applied");
    }
    // t2 started from t1's result: a true history inside one batch.
    assert_eq!(events[0]["before"]["title"], "HR & Customer Success");
    assert_eq!(events[1]["before"]["title"], "First");
    assert_eq!(events[1]["before"]["typeIds"], json!([14, 158]));
    assert_eq!(
        events[1]["after"],
        json!({"id":238,"title":"First","typeIds":[14]})
    );
    assert_eq!(events[2]["after"]["title"], "Support desk");
    // Prior states of both workplaces came from one batch of gets.
    assert_eq!(gets_seen(&sim), 0, "no single get was needed");
    assert_eq!(
        calls_of(&sim, "batch"),
        2,
        "one batch of reads, one forwarded batch"
    );
}

#[tokio::test]
async fn a_violating_command_refuses_the_whole_batch_and_names_its_key() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let before = sim.sim.solutions();
    let r = post_form(
        &proxy.hook_url("batch"),
        "halt=0&cmd[ok]=crm.automatedsolution.update%3Fid%3D238%26fields%5Btitle%5D%3DX&cmd[bad]=crm.automatedsolution.update%3Fid%3D267%26fields%5BtypeIds%5D%3D",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let desc = r.json()["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        desc.contains("batch command 'bad'") && desc.contains("deny_empty_type_ids"),
        "{desc}"
    );
    assert_eq!(sim.sim.solutions(), before, "nothing ran");
    let events = proxy.export();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["outcome"] == "denied"));
    assert_eq!(
        events[0]["decision"], "allow",
        "the harmless command was refused with its batch"
    );
    assert_eq!(events[1]["rule"], "deny_empty_type_ids");
}

#[tokio::test]
async fn binding_a_type_records_and_polices_the_workplace_it_is_taken_from() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    // 301 holds only 172: taking it would leave 301 empty.
    let emptying = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[14,158,172]}}"#,
    )
    .await;
    assert_eq!(emptying.status, StatusCode::FORBIDDEN);
    assert!(emptying.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("workplace 301")));
    assert_eq!(sim.sim.solution(301).expect("301").type_ids, vec![172]);

    // 267 holds 31 and gets 190 first, so taking 31 leaves it 190: allowed, recorded.
    sim.sim.insert_solution("Spare", &[190, 200]);
    let give = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":267,"fields":{"typeIds":[31,190]}}"#,
    )
    .await;
    assert_eq!(give.status, StatusCode::OK, "{:?}", give.body);
    let take = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[14,158,31]}}"#,
    )
    .await;
    assert_eq!(take.status, StatusCode::OK, "{:?}", take.body);
    assert_eq!(sim.sim.solution(267).expect("267").type_ids, vec![190]);

    let events = proxy.export();
    let last = events.last().expect("event");
    assert_eq!(
        last["side_effects"],
        json!([{"solution_id": 267,
                "before": {"id":267,"title":"Sales","typeIds":[31,190]},
                "after": {"id":267,"title":"Sales","typeIds":[190]},
                "after_seen": {"id":267,"title":"Sales","typeIds":[190]},
                "after_source": "answer"}])
    );
    // 190 moving to 267 was a side effect on "Spare", which keeps 200.
    let give_event = &events[events.len() - 2];
    assert_eq!(
        give_event["side_effects"][0]["after"]["typeIds"],
        json!([200])
    );
    assert_eq!(
        give_event["side_effects"][0]["after_seen"]["typeIds"],
        json!([200])
    );
}

#[tokio::test]
async fn what_cannot_be_known_before_the_batch_runs_is_refused() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let url = proxy.hook_url("batch");
    let cases = [
        (
            r#"{"cmd":{"l":"crm.automatedsolution.list","u":"crm.automatedsolution.update?id=238&fields[typeIds]=$result[l][automatedSolutions][0][typeIds]"}}"#,
            "BATCH_REFERENCE",
        ),
        (
            r#"{"cmd":{"u":"crm.automatedsolution.update?id=238&fields[typeIds][]=14","n":"batch?cmd[x]=user.current"}}"#,
            "BATCH_NESTED",
        ),
        (
            r#"{"cmd":{"u":"crm.automatedsolution.update.json?id=238&fields[title]=x"}}"#,
            "INVALID_PARAMETER",
        ),
        (
            r#"{"cmd":{"u":"crm.automatedsolution.update?id=238&fields[title]=x&auth=other"}}"#,
            "AMBIGUOUS_CREDENTIALS",
        ),
        (
            r#"{"cmd":{"a":"crm.deal.list"},"CMD":{"u":"crm.automatedsolution.update?id=238&fields[typeIds]="}}"#,
            "AMBIGUOUS_PARAMETER",
        ),
    ];
    for (body, code) in cases {
        let r = post_json(&url, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json()["error"], code, "{body}: {}", r.json());
    }
    let many: Vec<String> = (0..51)
        .map(|i| format!(r#""c{i}":"user.current""#))
        .collect();
    let too_long = post_json(
        &url,
        &format!(
            r#"{{"cmd":{{{},"u":"crm.automatedsolution.update?id=238&fields[typeIds]="}}}}"#,
            many.join(",")
        ),
    )
    .await;
    assert_eq!(too_long.json()["error"], "BATCH_TOO_LONG");
    assert_eq!(sim.sim.calls().len(), 0, "nothing reached the portal");
}

#[tokio::test]
async fn an_unknown_workplace_in_a_batch_stops_it_with_the_portals_error() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let r = post_json(
        &proxy.hook_url("batch"),
        r#"{"cmd":{"a":"crm.automatedsolution.update?id=238&fields[title]=x","b":"crm.automatedsolution.update?id=9999&fields[title]=y"}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "NOT_FOUND");
    assert!(r.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("'b'")));
    assert_eq!(executed(&sim, UPDATE), 0);
}

#[tokio::test]
async fn a_command_the_portal_rejects_inside_a_batch_is_recorded_as_such() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    sim.sim.insert_solution("Busy", &[190]);
    let busy = sim
        .sim
        .solutions()
        .into_iter()
        .find(|s| s.title == "Busy")
        .expect("busy")
        .id;
    // Delete is refused by the portal while types are bound; halt stops the rest.
    let r = post_json(
        &proxy.hook_url("batch"),
        &format!(r#"{{"halt":1,"cmd":{{"d":"crm.automatedsolution.delete?id={busy}","u":"crm.automatedsolution.update?id=238&fields[title]=after-halt"}}}}"#),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the batch itself answers 200: {:?}",
        r.body
    );
    let events = proxy.export();
    assert_eq!(events[0]["outcome"], "rejected_by_portal");
    assert_eq!(events[0]["portal_error"], "HAS_BOUND_TYPES");
    assert_eq!(events[0]["after"]["id"], busy, "re-read: still there");
    assert_eq!(
        events[1]["outcome"], "unknown",
        "not run after the halt; its state was read back"
    );
    assert_eq!(events[1]["after"]["title"], "HR & Customer Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_to_one_workplace_go_one_at_a_time_and_others_in_parallel() {
    use portal_sim::SimOptions;
    // A slow portal widens every window in which two changes could interleave.
    let sim = portal_sim::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        SimOptions {
            latency: std::time::Duration::from_millis(15),
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim");
    let proxy = TestProxy::builder(sim.addr).start();
    let url = proxy.hook_url(UPDATE);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let url = url.clone();
        let (id, ids) = if i % 3 == 0 {
            (301, "[172]")
        } else {
            (238, if i % 2 == 0 { "[14]" } else { "[14,158]" })
        };
        tasks.push(tokio::spawn(async move {
            post_json(
                &url,
                &format!(r#"{{"id":{id},"fields":{{"title":"t{i}","typeIds":{ids}}}}}"#),
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    let events = proxy.export();
    assert_eq!(events.len(), 12);
    for id in [238, 301] {
        let mine: Vec<&serde_json::Value> =
            events.iter().filter(|e| e["solution_id"] == id).collect();
        for pair in mine.windows(2) {
            assert_eq!(
                pair[1]["before"], pair[0]["after"],
                "workplace {id}: every before-state is the previous after-state"
            );
        }
    }
}

/// Portal requests per audited change do not grow with the portal: at 122 workplaces, binding a
/// smart process held by another workplace reads target and owner in one request once the
/// proxy has seen who holds it, and a first, cold change lists every workplace inside that same
/// request. (Counts, not timings: the portal's rate limit is per request.)
#[tokio::test]
async fn portal_requests_per_change_do_not_grow_with_the_workplaces() {
    let sim = sim().await;
    let mut owners = Vec::new();
    let existing = sim.sim.solutions().len();
    for i in 0..(122 - existing) {
        let s = sim
            .sim
            .insert_solution(&format!("W{i}"), &[1000 + i as i64, 2000 + i as i64]);
        owners.push(s.id);
    }
    assert_eq!(sim.sim.solutions().len(), 122);
    let proxy = TestProxy::builder(sim.addr).start();
    let requests = |sim: &portal_sim::SimHandle| sim.sim.calls().len();

    // Cold: nobody is known to hold 1000 yet; the listing goes in the snapshot's request.
    let before = requests(&sim);
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[14,158,1000]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let cold = requests(&sim) - before;

    // Warm: 1001's owner was seen in that listing, so it is read with the target.
    let before = requests(&sim);
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[14,158,1000,1001]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let warm = requests(&sim) - before;
    println!("portal requests per change at 122 workplaces: cold {cold}, warm {warm}");
    assert!(
        warm <= 2,
        "warm: {warm} requests (snapshot with owner, forward)"
    );
    assert!(
        cold <= 2,
        "cold: {cold} requests (snapshot with the whole listing, forward)"
    );

    // The side effect on the owner is recorded as before.
    let events = proxy.export();
    let last = events.last().expect("event");
    assert_eq!(last["side_effects"][0]["solution_id"], owners[1]);
    assert_eq!(
        last["side_effects"][0]["after"]["typeIds"],
        json!([2001]),
        "{last:#}"
    );
    assert_eq!(
        last["side_effects"][0]["after_seen"]["typeIds"],
        json!([2001])
    );
    assert_eq!(
        last["side_effects"][0]["after_source"], "answer",
        "the target's state in the answer shows it: no re-read spent"
    );
    let held = |id: i64| sim.sim.solution(id).expect("owner").type_ids;
    assert_eq!(held(owners[0]), vec![2000]);
    assert_eq!(held(owners[1]), vec![2001]);
}

/// A batch of watched commands costs at most three portal requests whatever the portal's size:
/// one read (targets, owners and the listing together), the forward, one re-read when the answer
/// does not show a side effect. Cold, at 122 workplaces, with smart processes taken from two
/// other workplaces.
#[tokio::test]
async fn portal_requests_per_batch_stay_bounded() {
    let sim = sim().await;
    let existing = sim.sim.solutions().len();
    let owners: Vec<i64> = (0..(122 - existing))
        .map(|i| {
            sim.sim
                .insert_solution(&format!("W{i}"), &[1000 + i as i64, 2000 + i as i64])
                .id
        })
        .collect();
    let proxy = TestProxy::builder(sim.addr).start();
    let before = sim.sim.calls().len();
    let r = post_json(
        &proxy.hook_url("batch"),
        r#"{"halt":0,"cmd":{
            "a":"crm.automatedsolution.update?id=238&fields[typeIds][]=14&fields[typeIds][]=1000",
            "b":"crm.automatedsolution.update?id=301&fields[typeIds][]=1001",
            "c":"crm.automatedsolution.update?id=238&fields[title]=Renamed"
        }}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let requests = sim.sim.calls().len() - before;
    println!("portal requests for a batch of 3 at 122 workplaces: {requests}");
    assert!(requests <= 3, "{requests} requests");
    let held = |id: i64| sim.sim.solution(id).expect("owner").type_ids;
    assert_eq!(held(owners[0]), vec![2000]);
    assert_eq!(held(owners[1]), vec![2001]);
    let events = proxy.export();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["side_effects"][0]["solution_id"], owners[0]);
    assert_eq!(events[1]["side_effects"][0]["solution_id"], owners[1]);
}

/// When the portal's answer does not show what a side effect did (it answered with an error
/// after executing), the workplace the smart process was taken from is read back.
#[tokio::test]
async fn a_side_effect_the_answer_does_not_show_is_read_back() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    sim.sim.insert_solution("Spare", &[190, 200]);
    sim.sim.push_fault(applied_then_refused());
    let r = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":267,"fields":{"typeIds":[31,190]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let events = proxy.export();
    let e = events.last().expect("event");
    assert_eq!(e["outcome"], "rejected_by_portal");
    assert_eq!(e["side_effects"][0]["after_source"], "re-read", "{e:#}");
    assert_eq!(e["side_effects"][0]["after_seen"]["typeIds"], json!([200]));
}
