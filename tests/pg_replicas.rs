//! Replicas sharing one PostgreSQL trail (`support::pg`): leases and instance-aware
//! reconciliation. Only intents of an instance whose lease expired (or that holds none) are
//! reconciled `unknown`, once each however many replicas reconcile at once, never a live
//! replica's; a replica killed with work in flight has its intents reconciled by the other
//! after the lease timeout while the other keeps serving. Waits poll for the result, bounded.

mod support;

use b24_audit_proxy::audit::backend::{seal, AuditStore};
use b24_audit_proxy::audit::pg_query::PgReader;
use b24_audit_proxy::audit::pg_store::{self, PgStore};
use b24_audit_proxy::audit::record::{Caller, Completion, Intent, Subject};
use b24_audit_proxy::audit::writer::OpenOptions;
use b24_audit_proxy::audit::{verify, Entry, Outcome};
use b24_audit_proxy::config::{PgTrail, Replica};
use portal_sim::{Fault, FaultKind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn opts() -> OpenOptions {
    OpenOptions {
        queue_capacity: 64,
        max_batch: 16,
        fsync_outcomes: false,
        signer: None,
        sink: None,
    }
}

fn subject(id: &str) -> Subject<'_> {
    Subject {
        event_id: id,
        method: UPDATE,
        solution_id: Some(238),
    }
}

fn intent(id: &str) -> Entry {
    Intent {
        caller: Caller {
            auth: "webhook".into(),
            ..Caller::default()
        },
        decision: "allow".into(),
        ..Intent::default()
    }
    .entry(subject(id))
}

fn applied(id: &str) -> Entry {
    Completion {
        portal_status: Some(200),
        ..Completion::default()
    }
    .entry(subject(id), Outcome::Applied)
}

fn trail_as(pg: &PgServer, db: &str, instance: &str) -> PgTrail {
    PgTrail {
        replica: Replica {
            instance_id: instance.into(),
            lease_timeout: Duration::from_secs(2),
        },
        ..pg.trail(db)
    }
}

/// `(kind, outcome)` of every entry of an event, in trail order.
fn entries_of(pg: &PgServer, db: &str, event: &str) -> Vec<(String, Option<String>)> {
    pg.admin(db, |c| {
        c.query(
            "SELECT kind, outcome FROM audit_entries WHERE event_id = $1 ORDER BY seq",
            &[&event],
        )
        .expect("entries")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    })
}

/// Polls `f` (blocking) every 50 ms until it holds; fails after `limit`.
fn poll(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn only_intents_of_instances_without_a_live_lease_are_reconciled_once() {
    let pg = PgServer::shared();
    let db = pg.database();
    let rt = runtime();
    // A live replica with an intent in flight.
    let (a, a_writer, _) =
        pg_store::open(&trail_as(&pg, &db, "a"), opts(), Arc::new(Quiet)).expect("replica a");
    rt.block_on(a.append(vec![intent("a-open")]))
        .expect("a's intent");
    // A replica that recorded an intent and is gone: it holds no lease.
    let mut ghost = PgStore::connect(trail_as(&pg, &db, "ghost")).expect("ghost");
    let mut head = ghost.begin().expect("begin");
    let entry = intent("ghost-open");
    let sealed = seal(&mut head, &entry);
    ghost.append(&entry, &sealed).expect("ghost's intent");
    ghost.commit().expect("commit");
    drop(ghost);

    // Two more replicas start at once: each reconciles at start and then every period.
    let (b, c) = std::thread::scope(|s| {
        let open = |name: &'static str| {
            let trail = trail_as(&pg, &db, name);
            s.spawn(move || pg_store::open(&trail, opts(), Arc::new(Quiet)).expect(name))
        };
        let (b, c) = (open("b"), open("c"));
        (b.join().expect("b"), c.join().expect("c"))
    });
    poll(
        "the ghost's intent reconciled",
        Duration::from_secs(10),
        || entries_of(&pg, &db, "ghost-open").len() == 2,
    );
    // Several periods of three keepers later, still one outcome.
    let leases_renewed = |n: i64| {
        pg.admin(&db, |cl| {
            cl.query_one(
                "SELECT COUNT(*) FROM audit_leases WHERE heartbeat > now() - interval '1 second'",
                &[],
            )
            .expect("leases")
            .get::<_, i64>(0)
                >= n
        })
    };
    poll("three live leases", Duration::from_secs(10), || {
        leases_renewed(3)
    });
    assert_eq!(
        entries_of(&pg, &db, "ghost-open"),
        vec![
            ("received".into(), None),
            ("reconciled".into(), Some("unknown".into()))
        ]
    );
    // The live replica's intent was left alone: its real outcome is accepted.
    assert_eq!(entries_of(&pg, &db, "a-open").len(), 1);
    rt.block_on(a.append(vec![applied("a-open")]))
        .expect("a's outcome is not refused");
    assert_eq!(
        entries_of(&pg, &db, "a-open"),
        vec![
            ("received".into(), None),
            ("completed".into(), Some("applied".into()))
        ]
    );

    // A clean stop gives the lease up.
    for (log, writer, _) in [b, c] {
        drop(log);
        writer.join();
    }
    drop(a);
    a_writer.join();
    let leases: i64 = pg.admin(&db, |cl| {
        cl.query_one("SELECT COUNT(*) FROM audit_leases", &[])
            .expect("leases")
            .get(0)
    });
    assert_eq!(leases, 0, "every stopped replica gave its lease up");
    let reader = PgReader::open(&pg.trail(&db)).expect("reader");
    assert_eq!(verify::verify(&reader, None).expect("verifies").entries, 4);
}

/// The replica's `audit_lines`: the password file, the shared key, a short lease.
fn replica_audit(dir: &std::path::Path, instance: &str) -> String {
    format!(
        "password_file = \"{}\"\nkey_file = \"{}\"\ninstance_id = \"{instance}\"\nlease_timeout = \"2s\"\n",
        dir.join("pg.password").display(),
        dir.join("audit.key").display()
    )
}

fn start_replica(
    sim: &portal_sim::SimHandle,
    pg: &PgServer,
    db: &str,
    dir: &std::path::Path,
    instance: &str,
) -> TestProxy {
    let d = dir.join(instance);
    std::fs::create_dir_all(&d).expect("dir");
    TestProxy::builder(sim.addr)
        .dir(&d)
        .database(&pg.url(db))
        .audit(&replica_audit(dir, instance))
        // Longer than the portal's delayed answers below.
        .upstream_key("request_timeout", "\"20s\"")
        .start()
}

/// Sends an update through `proxy` in the background: whether an answer came, and its event id.
fn update_in_background(
    proxy: &TestProxy,
    body: &'static str,
) -> tokio::task::JoinHandle<Option<String>> {
    let url = proxy.hook_url(UPDATE);
    tokio::spawn(async move {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .body(b24_audit_proxy::body::ProxyBody::bytes(body))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
            .await
            .expect("an answer or a dropped connection within 20 s")
            .ok()?;
        let id = resp
            .headers()
            .get("x-audit-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(resp.status(), http::StatusCode::OK, "{resp:?}");
        id
    })
}

fn updates_seen(sim: &portal_sim::SimHandle) -> usize {
    sim.sim
        .calls()
        .iter()
        .filter(|c| c.rest_method.as_deref() == Some(UPDATE))
        .count()
}

#[tokio::test]
async fn a_killed_replicas_intents_are_reconciled_after_its_lease_and_the_other_serves_on() {
    let pg = PgServer::shared();
    let db = pg.database();
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pg.password"), format!("{PG_PASSWORD}\n")).expect("pw");
    let mut one = start_replica(&sim, &pg, &db, dir.path(), "one");
    let two = start_replica(&sim, &pg, &db, dir.path(), "two");

    // Each replica has an update in flight: the portal executes it and answers late.
    sim.sim.push_fault(Fault {
        method: Some(UPDATE.into()),
        times: 2,
        kind: FaultKind::Delay(Duration::from_secs(10)),
    });
    let lost = update_in_background(&one, r#"{"id":238,"fields":{"title":"lost"}}"#);
    eventually("one's update reached the portal", || {
        updates_seen(&sim) == 1
    })
    .await;
    let live = update_in_background(&two, r#"{"id":267,"fields":{"title":"live"}}"#);
    eventually("two's update reached the portal", || {
        updates_seen(&sim) == 2
    })
    .await;
    let open_intents = |pg: Arc<PgServer>, db: String| async move {
        tokio::task::spawn_blocking(move || {
            pg.admin(&db, |c| {
                c.query(
                    "SELECT r.instance_id, o.outcome FROM audit_entries r \
                     LEFT JOIN audit_entries o ON o.event_id = r.event_id AND o.kind <> 'received' \
                     WHERE r.kind = 'received' ORDER BY r.seq",
                    &[],
                )
                .expect("intents")
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)))
                .collect::<Vec<_>>()
            })
        })
        .await
        .expect("query")
    };
    assert_eq!(
        open_intents(pg.clone(), db.clone()).await,
        vec![("one".into(), None), ("two".into(), None)]
    );

    one.kill();
    assert_eq!(
        lost.await.expect("task"),
        None,
        "one's client lost its answer"
    );
    // Two keeps serving while one's lease runs out.
    let served = post_json(
        &two.hook_url(UPDATE),
        r#"{"id":301,"fields":{"title":"served"}}"#,
    )
    .await;
    assert_eq!(served.status, http::StatusCode::OK, "{:?}", served.body);
    eventually_async(
        "one's intent reconciled after its lease expired",
        Duration::from_secs(15),
        || {
            let (pg, db) = (pg.clone(), db.clone());
            async move {
                let intents = open_intents(pg, db).await;
                let done = intents
                    .first()
                    .is_some_and(|(_, o)| o.as_deref() == Some("unknown"));
                if done {
                    // In the same snapshot: two's update, still waiting for the portal, is
                    // still open (its answer is seconds away), not reconciled.
                    assert_eq!(intents[1], ("two".into(), None), "{intents:?}");
                }
                done
            }
        },
    )
    .await;
    // Two's in-flight update ends with its real outcome: it was never reconciled.
    let live_id = live.await.expect("task").expect("two's update answered");
    let intents = open_intents(pg.clone(), db.clone()).await;
    assert_eq!(
        intents,
        vec![
            ("one".into(), Some("unknown".into())),
            ("two".into(), Some("applied".into())),
            ("two".into(), Some("applied".into())),
        ]
    );
    let config = two.config.clone();
    let (show, verified) = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = std::process::Command::new(BIN)
                .arg("audit")
                .args(args)
                .arg("--config")
                .arg(&config)
                .output()
                .expect("audit runs");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        (run(&["show", &live_id]), run(&["verify"]))
    })
    .await
    .expect("cli");
    assert_eq!(show.0, 0, "{}", show.1);
    assert!(show.1.contains("applied"), "{}", show.1);
    assert_eq!(verified.0, 0, "{}", verified.1);
    assert!(
        verified.1.starts_with("ok: 6 entries verify"),
        "{}",
        verified.1
    );
    assert!(
        two.log().contains("reconciled as unknown"),
        "the reconciliation is logged"
    );
    for text in [two.log(), one.log()] {
        assert!(!text.contains(PG_PASSWORD), "the password leaked");
    }
}

#[tokio::test]
async fn advisory_locks_exclude_other_replicas_with_a_bounded_wait_and_are_released_on_drop() {
    use b24_audit_proxy::audit::pg_locks::{LockFailure, PgLocks};
    use std::collections::BTreeSet;
    let pg = PgServer::shared();
    let db = pg.database();
    // Two pools: two replicas' views of the same trail.
    let one = PgLocks::new(pg.trail(&db), Duration::from_millis(300));
    let two = PgLocks::new(pg.trail(&db), Duration::from_millis(300));
    let set = BTreeSet::from([238, 267]);
    let held = one.lock("main", &set).await.expect("free");
    let started = Instant::now();
    assert_eq!(
        two.lock("main", &BTreeSet::from([267])).await.err(),
        Some(LockFailure::Busy)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the wait is bounded"
    );
    // Another portal's workplace 267 is another lock.
    drop(
        two.lock("other", &BTreeSet::from([267]))
            .await
            .expect("free"),
    );
    drop(held);
    // Released on a task: poll until the other replica gets it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        match two.lock("main", &set).await {
            Ok(g) => break g,
            Err(LockFailure::Busy) if Instant::now() < deadline => {}
            Err(e) => panic!("not released: {e:?}"),
        }
    };
    drop(again);

    // The sessions are bounded: with one, a second change (another workplace) waits for it
    // within the same bound, then gets it once the first is released.
    let single = PgLocks::with_sessions(pg.trail(&db), Duration::from_millis(300), 1);
    let first = single
        .lock("main", &BTreeSet::from([238]))
        .await
        .expect("free");
    assert_eq!(
        single.lock("main", &BTreeSet::from([267])).await.err(),
        Some(LockFailure::Busy)
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match single.lock("main", &BTreeSet::from([267])).await {
            Ok(_) => break,
            Err(LockFailure::Busy) if Instant::now() < deadline => {}
            Err(e) => panic!("the session was not given back: {e:?}"),
        }
    }

    // The added latency of an audited call: taking one workplace's lock on a warm session (the
    // release runs on a task, off the request's path).
    let runs = 200u32;
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let started = Instant::now();
        let g = one
            .lock("main", &BTreeSet::from([301]))
            .await
            .expect("lock");
        total += started.elapsed();
        drop(g);
        tokio::task::yield_now().await;
    }
    println!(
        "advisory lock of one workplace: mean {:?} over {runs} runs",
        total / runs
    );
}

/// Every event of each workplace in trail order: its intent's before-state is the previous
/// event's after-state (the title is what the updates change).
fn assert_states_chain(events: &[serde_json::Value]) -> usize {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<i64, serde_json::Value> = BTreeMap::new();
    let mut checked = 0;
    for e in events {
        let Some(id) = e["solution_id"].as_i64() else {
            continue;
        };
        assert_eq!(e["outcome"], "applied", "{e}");
        if let Some(prev) = last.get(&id) {
            assert_eq!(e["before"]["title"], prev["title"], "workplace {id}: {e}");
            checked += 1;
        }
        last.insert(id, e["after"].clone());
    }
    checked
}

#[tokio::test]
async fn two_replicas_updating_the_same_workplaces_keep_every_before_state_true() {
    let pg = PgServer::shared();
    let db = pg.database();
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pg.password"), format!("{PG_PASSWORD}\n")).expect("pw");
    let one = start_replica(&sim, &pg, &db, dir.path(), "one");
    let two = start_replica(&sim, &pg, &db, dir.path(), "two");
    let run = |proxy: &TestProxy, name: &'static str| {
        let url = proxy.hook_url(UPDATE);
        async move {
            for i in 0..30 {
                let id = [238, 267][i % 2];
                let r = post_json(
                    &url,
                    &format!(r#"{{"id":{id},"fields":{{"title":"{name} {i}"}}}}"#),
                )
                .await;
                assert_eq!(r.status, http::StatusCode::OK, "{:?}", r.body);
            }
        }
    };
    // One replica alone first: the mean latency of an audited update on this trail, the
    // advisory lock included (`-- --nocapture` prints it).
    let started = Instant::now();
    for i in 0..20 {
        let r = post_json(
            &one.hook_url(UPDATE),
            &format!(r#"{{"id":301,"fields":{{"title":"alone {i}"}}}}"#),
        )
        .await;
        assert_eq!(r.status, http::StatusCode::OK, "{:?}", r.body);
    }
    println!(
        "audited update, one replica, sequential: mean {:?} over 20",
        started.elapsed() / 20
    );
    let started = Instant::now();
    tokio::join!(run(&one, "one"), run(&two, "two"));
    println!(
        "2x30 audited updates on two replicas: {:?}",
        started.elapsed()
    );
    let config = one.config.clone();
    let (export, verified) = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = std::process::Command::new(BIN)
                .arg("audit")
                .args(args)
                .arg("--config")
                .arg(&config)
                .output()
                .expect("audit runs");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        (run(&["export"]), run(&["verify"]))
    })
    .await
    .expect("cli");
    assert_eq!(export.0, 0, "{}", export.1);
    let events: Vec<serde_json::Value> = export
        .1
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.len(), 80);
    assert_eq!(assert_states_chain(&events), 77);
    assert_eq!(verified.0, 0, "{}", verified.1);
    assert!(
        verified.1.starts_with("ok: 160 entries verify"),
        "{}",
        verified.1
    );
    let last = sim.sim.solution(238).expect("238").title;
    let recorded = events
        .iter()
        .rev()
        .find(|e| e["solution_id"] == 238)
        .expect("an event of 238");
    assert_eq!(recorded["after"]["title"], last.as_str());
}

#[tokio::test]
async fn a_call_that_fails_at_its_snapshot_releases_the_workplace_for_the_other_replica() {
    let pg = PgServer::shared();
    let db = pg.database();
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pg.password"), format!("{PG_PASSWORD}\n")).expect("pw");
    let one = start_replica(&sim, &pg, &db, dir.path(), "one");
    let two = start_replica(&sim, &pg, &db, dir.path(), "two");
    // One's snapshot read is refused by the portal: the call ends with the workplace locked
    // on both levels, and the guards must give both back.
    sim.sim.push_fault(Fault {
        method: None,
        times: 1,
        kind: FaultKind::Status {
            status: 401,
            code: "INVALID_CREDENTIALS".into(),
            description: "refused".into(),
        },
    });
    let refused = post_json(
        &one.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"refused"}}"#,
    )
    .await;
    assert_eq!(
        refused.status,
        http::StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
    // Within the advisory wait (10 s) whatever happens: a leaked lock would give 503 instead.
    let ok = post_json(
        &two.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"next"}}"#,
    )
    .await;
    assert_eq!(ok.status, http::StatusCode::OK, "{:?}", ok.body);
    let ok = post_json(
        &one.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"again"}}"#,
    )
    .await;
    assert_eq!(ok.status, http::StatusCode::OK, "{:?}", ok.body);
    assert_eq!(sim.sim.solution(238).expect("238").title, "again");
}

#[tokio::test]
async fn a_workplace_locked_elsewhere_longer_than_the_wait_gives_503_and_nothing_is_forwarded() {
    let pg = PgServer::shared();
    let db = pg.database();
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pg.password"), format!("{PG_PASSWORD}\n")).expect("pw");
    let one = start_replica(&sim, &pg, &db, dir.path(), "one");
    // Another replica, as the database sees it: a session holding workplace 238's lock of this
    // portal (named by the upstream's host and port).
    let portal = format!("127.0.0.1:{}", sim.addr.port());
    let key = b24_audit_proxy::audit::pg_locks::key(&portal, 238);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let pg = pg.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            pg.admin(&db, move |c| {
                c.execute("SELECT pg_advisory_lock($1)", &[&key])
                    .expect("lock");
                held_tx.send(()).expect("held");
                // Bounded: the test sends the release (or drops the sender) well before.
                let _ = release_rx.recv_timeout(Duration::from_secs(60));
            })
        })
    };
    tokio::task::spawn_blocking(move || held_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the lock is held");
    let r = post_json(
        &one.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"blocked"}}"#,
    )
    .await;
    assert_eq!(
        r.status,
        http::StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        r.body
    );
    assert_eq!(r.json()["error"], "WORKPLACE_BUSY", "{:?}", r.body);
    assert_eq!(updates_seen(&sim), 0, "nothing was forwarded");
    // Another workplace is not held up.
    let ok = post_json(
        &one.hook_url(UPDATE),
        r#"{"id":267,"fields":{"title":"free"}}"#,
    )
    .await;
    assert_eq!(ok.status, http::StatusCode::OK, "{:?}", ok.body);
    release_tx.send(()).expect("release");
    tokio::task::spawn_blocking(move || holder.join())
        .await
        .expect("join")
        .expect("holder");
    let ok = post_json(
        &one.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"after"}}"#,
    )
    .await;
    assert_eq!(ok.status, http::StatusCode::OK, "{:?}", ok.body);
    assert_eq!(sim.sim.solution(238).expect("238").title, "after");
}
