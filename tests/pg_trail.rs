//! The PostgreSQL trail against a real PostgreSQL 15 (`support::pg`): entries appended through
//! the real writer read back as SQLite reads the same rows, every filter served by an index,
//! writers in several processes forming one chain, the proxy binary serving an audited
//! update with its trail in PostgreSQL, read by `audit list|show|verify`, and retention
//! (`audit prune`): the same cut as SQLite's, waiting for the writers' lock while replicas write.
//!
//! The blocking PostgreSQL client must not run inside a tokio runtime, so the store-level tests
//! drive the async append from a runtime of their own and read from the test's thread.

mod support;

use b24_audit_proxy::audit::pg_query::{self, PgReader};
use b24_audit_proxy::audit::query::{self, Filter, Order, StoredEntry, TrailReader};
use b24_audit_proxy::audit::record::{Caller, Completion, Intent, Reconciliation, Subject};
use b24_audit_proxy::audit::writer::OpenOptions;
use b24_audit_proxy::audit::{migrate, pg_store, verify, AuditLog, Committed, Entry, Outcome};
use http::StatusCode;
use std::sync::Arc;
use support::*;

fn opts() -> OpenOptions {
    OpenOptions {
        queue_capacity: 1024,
        max_batch: 64,
        fsync_outcomes: false,
        signer: None,
        sink: None,
    }
}

fn intent(id: &str, sol: Option<i64>, user: &str, fp: &str) -> Entry {
    Intent {
        caller: Caller {
            auth: "webhook".into(),
            fingerprint: Some(fp.into()),
            user_id: Some(user.into()),
            ..Caller::default()
        },
        decision: "allow".into(),
        ..Intent::default()
    }
    .entry(Subject {
        event_id: id,
        method: UPDATE,
        solution_id: sol,
    })
}

fn outcome(id: &str, sol: Option<i64>, o: Outcome) -> Entry {
    let s = Subject {
        event_id: id,
        method: UPDATE,
        solution_id: sol,
    };
    match o {
        Outcome::Unknown => Reconciliation {
            reason: "test".into(),
        }
        .entry(s),
        o => Completion {
            portal_status: Some(200),
            ..Completion::default()
        }
        .entry(s, o),
    }
}

/// A varied trail through the real writer: workplaces 238/267 and adds that learn their id
/// from the outcome, three callers, every outcome, events still pending, intents and outcomes
/// in one request or apart. Returns what the writer committed, in order.
fn write_varied(log: &AuditLog, rt: &tokio::runtime::Runtime) -> Vec<Committed> {
    let outcomes = [
        Some(Outcome::Applied),
        Some(Outcome::Denied),
        None,
        Some(Outcome::Unknown),
        Some(Outcome::RejectedByPortal),
        Some(Outcome::Failed),
    ];
    rt.block_on(async {
        let mut committed = Vec::new();
        let mut later = Vec::new();
        for i in 1..=60i64 {
            let id = format!("ev{i}");
            let sol = match i % 3 {
                0 => None,
                1 => Some(238),
                _ => Some(267),
            };
            let user = (i % 3).to_string();
            let fp = format!("fp{}", i % 2);
            let entry = intent(&id, sol, &user, &fp);
            let o = outcomes[(i % 6) as usize];
            let out = o.map(|o| outcome(&id, sol.or(Some(300 + i)), o));
            match out {
                Some(out) if i % 4 == 0 => later.push(out),
                Some(out) => committed.extend(log.append(vec![entry, out]).await.expect("append")),
                None => committed.extend(log.append(vec![entry]).await.expect("append")),
            }
            if i % 10 == 0 {
                for out in later.drain(..) {
                    committed.extend(log.append(vec![out]).await.expect("outcome"));
                }
            }
        }
        for out in later.drain(..) {
            committed.extend(log.append(vec![out]).await.expect("outcome"));
        }
        committed
    })
}

fn stored(r: &dyn TrailReader) -> Vec<StoredEntry> {
    let mut out = Vec::new();
    r.each_stored(&mut |e| {
        out.push(e);
        Ok(())
    })
    .expect("entries");
    out
}

/// A SQLite trail holding exactly `rows` (its triggers build its event index).
fn sqlite_copy(rows: &[StoredEntry]) -> rusqlite::Connection {
    let mut c = rusqlite::Connection::open_in_memory().expect("sqlite");
    migrate::apply(&mut c).expect("schema");
    for r in rows {
        let time = serde_json::from_str::<serde_json::Value>(&r.payload).expect("json")["time"]
            .as_str()
            .expect("time")
            .to_owned();
        c.execute(
            "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![r.seq, r.event_id, r.kind, time, r.method, r.solution_id, r.outcome, r.payload, r.prev_hash, r.hash],
        )
        .expect("copy");
    }
    c
}

/// The filters of `/v1/events` and `audit list`, alone and combined, in both orders, around
/// the times of `rows`.
fn filter_grid(rows: &[StoredEntry]) -> Vec<Filter> {
    let time_of = |seq: usize| {
        serde_json::from_str::<serde_json::Value>(&rows[seq].payload).expect("json")["time"]
            .as_str()
            .expect("time")
            .to_owned()
    };
    let times = [None, Some(time_of(20)), Some(time_of(60))];
    let mut out = Vec::new();
    for since in &times {
        for until in [None, Some(time_of(45)), Some(time_of(rows.len() - 1))] {
            for solution_id in [None, Some(238), Some(303), Some(999)] {
                for outcome in [None, Some("applied"), Some("pending"), Some("unknown")] {
                    for caller in [None, Some("1"), Some("fp0")] {
                        for (order, after_seq) in [
                            (Order::Asc, None),
                            (Order::Asc, Some(30)),
                            (Order::Desc, Some(70)),
                        ] {
                            out.push(Filter {
                                since: since.clone(),
                                until: until.clone(),
                                solution_id,
                                outcome: outcome.map(str::to_owned),
                                caller: caller.map(str::to_owned),
                                after_seq,
                                order,
                                limit: Some(7),
                                ..Filter::default()
                            });
                        }
                    }
                }
            }
        }
    }
    out.push(Filter::default());
    out.push(Filter {
        event_id: Some("ev21".into()),
        ..Filter::default()
    });
    out
}

#[test]
fn the_writers_entries_read_back_as_sqlite_reads_the_same_rows() {
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    let rt = runtime();
    let (log, writer, report) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open");
    assert_eq!((report.schema_version, report.entries), (3, 0));
    let committed = write_varied(&log, &rt);
    drop(log);
    writer.join();

    let reader = PgReader::open(&trail).expect("reader");
    let rows = stored(&reader);
    assert_eq!(
        rows.iter()
            .map(|r| (r.seq, r.hash.clone()))
            .collect::<Vec<_>>(),
        committed
            .iter()
            .map(|c| (c.seq, c.hash.clone()))
            .collect::<Vec<_>>(),
        "what the writer committed is what is stored, in order"
    );
    let sqlite = sqlite_copy(&rows);

    let pg_verified = verify::verify(&reader, None).expect("the PostgreSQL chain verifies");
    assert_eq!(
        verify::verify(&sqlite, None).expect("the copy verifies"),
        pg_verified
    );
    assert_eq!(pg_verified.entries as usize, rows.len());
    assert_eq!(
        query::chain_head(&reader).expect("head"),
        query::chain_head(&sqlite).expect("head")
    );

    let mut selected = 0;
    let grid = filter_grid(&rows);
    for f in &grid {
        let want = query::events(&sqlite, f).expect("sqlite");
        let got = query::events(&reader, f).expect("postgres");
        assert_eq!(got, want, "{f:?}");
        selected += usize::from(!want.is_empty());
    }
    assert!(selected > 100, "the filters select something: {selected}");

    for id in ["ev1", "ev4", "ev3", "nope"] {
        assert_eq!(
            query::entries_of(&reader, id).expect("pg"),
            query::entries_of(&sqlite, id).expect("sqlite"),
            "{id}"
        );
    }
    for (after, limit) in [(0, 500), (17, 5), (90, 500)] {
        assert_eq!(
            query::completed_after(&reader, after, limit).expect("pg"),
            query::completed_after(&sqlite, after, limit).expect("sqlite")
        );
        let entries = |r: &dyn TrailReader| {
            let mut v = Vec::new();
            query::for_each_entry(r, after, Some(limit), |e| {
                v.push(e);
                Ok(())
            })
            .expect("entries");
            v
        };
        assert_eq!(entries(&reader), entries(&sqlite));
    }
    for t in ["2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z"] {
        assert_eq!(
            reader.pending_before(t).expect("pg"),
            sqlite.pending_before(t).expect("sqlite"),
            "{t}"
        );
    }
}

/// The filters of `every_filter_is_served_by_an_index_in_both_orders` that stand alone (the
/// others combine several).
const SINGLE_FILTERS: usize = 8;

/// Events in [`LARGE_TRAIL`].
const EVENTS: usize = 10_000;

/// 10 000 events a second apart from 2026-11-24T00:00:00Z over 4 workplaces and 5 callers (a
/// portal has few workplaces, each with many events); every 97th still pending; outcomes
/// applied, denied, failed in turn.
const LARGE_TRAIL: &str = "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
    SELECT 2 * i - 1 + k, 'ev' || i, CASE k WHEN 0 THEN 'received' ELSE 'completed' END, \
           to_char(timestamp '2026-11-24' + i * interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
           'crm.automatedsolution.update', 236 + i % 4, \
           CASE k WHEN 1 THEN (ARRAY['applied', 'denied', 'failed'])[i % 3 + 1] END, \
           json_build_object('caller', json_build_object('user_id', (i % 5)::text, 'fingerprint', 'fp' || (i % 7)))::text, \
           'p', 'h' || (2 * i - 1 + k) \
    FROM generate_series(1, 10000) AS i, generate_series(0, 1) AS k \
    WHERE k = 0 OR i % 97 <> 0 ORDER BY 1";

#[test]
fn every_filter_is_served_by_an_index_in_both_orders() {
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    // The schema from the store; then a trail large enough that the planner's choices are the
    // ones a real trail gets (a few dozen rows are cheapest scanned and sorted whatever the
    // indexes). Hashes are placeholders: listing never verifies.
    let (log, writer, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open");
    drop(log);
    writer.join();
    let started = std::time::Instant::now();
    pg.admin(&db, |c| {
        c.batch_execute(LARGE_TRAIL).expect("a large trail")
    });
    eprintln!("{EVENTS} events loaded in {:?}", started.elapsed());
    let d = Filter::default;
    let filters = [
        Filter {
            since: Some("2026-11-24T02:00:00.000Z".into()),
            ..d()
        },
        Filter {
            until: Some("2026-11-24T00:30:00.000Z".into()),
            ..d()
        },
        Filter {
            solution_id: Some(238),
            ..d()
        },
        Filter {
            outcome: Some("denied".into()),
            ..d()
        },
        Filter {
            outcome: Some("pending".into()),
            ..d()
        },
        Filter {
            caller: Some("1".into()),
            ..d()
        },
        Filter {
            event_id: Some("ev123".into()),
            ..d()
        },
        Filter {
            after_seq: Some(9),
            ..d()
        },
        Filter {
            solution_id: Some(238),
            outcome: Some("denied".into()),
            caller: Some("1".into()),
            after_seq: Some(9),
            ..d()
        },
        Filter {
            outcome: Some("denied".into()),
            since: Some("2026-11-24T01:00:00.000Z".into()),
            ..d()
        },
        Filter {
            caller: Some("1".into()),
            until: Some("2026-11-24T02:00:00.000Z".into()),
            since: Some("2026-11-24T01:00:00.000Z".into()),
            ..d()
        },
        Filter {
            outcome: Some("pending".into()),
            after_seq: Some(9),
            ..d()
        },
    ];
    pg.admin(&db, |c| {
        c.batch_execute("ANALYZE").expect("statistics");
        for (i, f) in filters.iter().enumerate() {
            for order in [Order::Asc, Order::Desc] {
                let f = Filter {
                    order,
                    limit: Some(100),
                    ..f.clone()
                };
                let (sql, params) = pg_query::events_query(&f);
                let params: Vec<_> = params.iter().map(|p| p.as_sql()).collect();
                let plan: Vec<String> = c
                    .query(&format!("EXPLAIN {sql}"), &params)
                    .expect("explain")
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let plan = plan.join("\n");
                if std::env::var_os("SHOW_PLANS").is_some() {
                    eprintln!("{f:?}\n{plan}\n");
                }
                // Every table is read through an index: a sequential scan reads all of it.
                assert!(!plan.contains("Seq Scan"), "{f:?}:\n{plan}");
                // One filter alone is read in seq order, so a page stops at its limit: a sort,
                // or a bitmap scan (rows in page order), reads every match first. Filters
                // combined may be intersected and the few rows left sorted, where the planner
                // finds that cheaper; a sequential scan is still ruled out above.
                if i < SINGLE_FILTERS {
                    assert!(
                        !plan.contains("Sort") && !plan.contains("Bitmap"),
                        "{f:?}:\n{plan}"
                    );
                }
            }
        }
    });
}

#[test]
fn two_writers_appending_at_once_form_one_chain() {
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    let rt = runtime();
    let (a, writer_a, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open a");
    let (b, writer_b, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open b");
    let per_writer = 150;
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..per_writer {
            for (name, log) in [("a", a.clone()), ("b", b.clone())] {
                tasks.push(tokio::spawn(async move {
                    let id = format!("{name}{i}");
                    log.append(vec![
                        intent(&id, Some(238), "1", "fp"),
                        outcome(&id, Some(238), Outcome::Applied),
                    ])
                    .await
                }));
            }
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    drop((a, b));
    writer_a.join();
    writer_b.join();
    let mut seqs: Vec<i64> = results
        .into_iter()
        .flat_map(|r| r.expect("every append commits"))
        .map(|c| c.seq)
        .collect();
    seqs.sort_unstable();
    let total = 2 * per_writer * 2;
    assert_eq!(
        seqs,
        (1..=total as i64).collect::<Vec<_>>(),
        "no seq twice, none missing"
    );
    let reader = PgReader::open(&trail).expect("reader");
    let v = verify::verify(&reader, None).expect("one chain verifies");
    assert_eq!(v.entries, total as u64);
    // Both writers' entries are interleaved in it, not one writer's block after the other's.
    let order: Vec<char> = stored(&reader)
        .iter()
        .map(|e| e.event_id.chars().next().unwrap_or('?'))
        .collect();
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches > 1, "the writers took turns: {switches} switches");

    // The table refuses changes; one made past its trigger is found by `verify`.
    pg.admin(&db, |c| {
        assert!(c
            .execute("UPDATE audit_entries SET payload = 'x' WHERE seq = 7", &[])
            .is_err());
        assert!(c
            .execute("DELETE FROM audit_entries WHERE seq = 7", &[])
            .is_err());
        c.batch_execute(
            "ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_update; \
             UPDATE audit_entries SET payload = replace(payload, '238', '239') WHERE seq = 7",
        )
        .expect("tamper");
    });
    match verify::verify(&reader, None) {
        Err(verify::Broken::Altered { seq, .. }) => assert_eq!(seq, 7),
        other => panic!("the altered entry is not found: {other:?}"),
    }
}

#[test]
fn replicas_opening_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    let opened: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| pg_store::open(&trail, opts(), Arc::new(Quiet))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("every replica opens"))
            .collect()
    });
    for (log, writer, report) in opened {
        assert_eq!(report.schema_version, 3);
        drop(log);
        writer.join();
    }
    let versions: i64 = pg.admin(&db, |c| {
        c.query_one("SELECT COUNT(*) FROM audit_schema_version", &[])
            .expect("versions")
            .get(0)
    });
    assert_eq!(versions, 3, "each migration was applied once");
    pg.admin(&db, |c| {
        c.execute(
            "INSERT INTO audit_schema_version (version) VALUES (999)",
            &[],
        )
        .expect("a newer build's version")
    });
    let Err(e) = pg_store::open(&trail, opts(), Arc::new(Quiet)) else {
        panic!("a newer schema was written to");
    };
    assert!(e.to_string().contains("newer than this build"), "{e}");
}

#[test]
fn a_refused_request_leaves_the_rest_of_its_group_and_no_gap() {
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    let rt = runtime();
    let (log, writer, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open");
    rt.block_on(log.append(vec![intent("dup", Some(238), "1", "fp")]))
        .expect("first");
    // Many requests at once, so that they share groups; every third repeats an intent the
    // schema already holds (one intent per event id) and is refused alone.
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let id = if i % 3 == 0 {
                        "dup".to_owned()
                    } else {
                        format!("ok{i}")
                    };
                    let mut entries = vec![intent(&id, Some(238), "1", "fp")];
                    if i % 3 != 0 {
                        entries.push(outcome(&id, Some(238), Outcome::Applied));
                    }
                    (i, log.append(entries).await)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    for (i, r) in &results {
        assert_eq!(r.is_err(), i % 3 == 0, "request {i}: {r:?}");
    }
    drop(log);
    writer.join();
    let reader = PgReader::open(&trail).expect("reader");
    let v = verify::verify(&reader, None).expect("the chain has no gap");
    assert_eq!(v.entries, 1 + 40 * 2);
}

#[test]
fn tls_to_the_database_encrypts_and_verify_full_refuses_an_unknown_issuer() {
    let pg = PgServer::shared();
    let db = pg.database();
    let parse = |mode: &str| b24_audit_proxy::config::PgTrail {
        url: b24_audit_proxy::audit::pg_url::PgUrl::parse(&pg.url_tls(&db, mode)).expect("url"),
        password_file: None,
        replica: Default::default(),
    };
    let rt = runtime();
    let trail = parse("require");
    let (log, writer, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open");
    rt.block_on(log.append(vec![intent("tls", Some(238), "1", "fp")]))
        .expect("append over TLS");
    drop(log);
    writer.join();
    let reader = PgReader::open(&trail).expect("reader over TLS");
    assert_eq!(verify::verify(&reader, None).expect("verifies").entries, 1);
    // The server sees the reader's session encrypted.
    let (all_tls, any_plain): (Option<bool>, Option<bool>) = pg.admin(&db, |c| {
        let r = c
            .query_one(
                "SELECT bool_and(s.ssl), bool_or(NOT s.ssl) FROM pg_stat_ssl s \
                 JOIN pg_stat_activity a ON a.pid = s.pid \
                 WHERE a.application_name = 'b24-audit-proxy reader' \
                 AND a.datname = current_database()",
                &[],
            )
            .expect("pg_stat_ssl");
        (r.get(0), r.get(1))
    });
    assert_eq!(
        (all_tls, any_plain),
        (Some(true), Some(false)),
        "the reader's session is TLS"
    );
    drop(reader);

    // The test CA is in no trusted store: verify-full must refuse the certificate.
    let Err(e) = PgReader::open(&parse("verify-full")) else {
        panic!("verify-full accepted a certificate from an unknown CA");
    };
    let e = e.to_string();
    assert!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );
    assert!(!e.contains(PG_PASSWORD), "{e}");
}

#[test]
fn a_writer_whose_connection_was_cut_reconnects_and_continues_the_chain() {
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    let rt = runtime();
    let (log, writer, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open");
    let append = |id: &str| rt.block_on(log.append(vec![intent(id, Some(238), "1", "fp")]));
    append("before").expect("first append");
    let cut: i64 = pg.admin(&db, |c| {
        c.query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'b24-audit-proxy writer' AND datname = current_database()",
            &[],
        )
        .expect("terminate")
        .get(0)
    });
    assert_eq!(cut, 1, "the writer's connection was cut");
    // The first append after the cut fails (the store is gone); the writer then probes, opens
    // a new connection, and takes appends again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut failures = 0;
    let committed = loop {
        match append(&format!("after{failures}")) {
            Ok(c) => break c,
            Err(_) => failures += 1,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no append after the cut"
        );
        rt.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(20)).await });
    };
    assert!(failures >= 1, "the cut was noticed");
    assert_eq!(committed[0].seq, 2, "the chain continues where it was");
    drop(log);
    writer.join();
    let reader = PgReader::open(&trail).expect("reader");
    assert_eq!(verify::verify(&reader, None).expect("verifies").entries, 2);
}

/// `audit SUB --config CONFIG ARGS` of the proxy binary: exit code and output.
fn audit(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .arg("audit")
        .arg(args[0])
        .arg("--config")
        .arg(config)
        .args(&args[1..])
        .output()
        .expect("audit runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_proxy_audits_updates_into_postgres_and_the_cli_reads_them_back() {
    let pg = PgServer::shared();
    let db = pg.database();
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pg.password");
    std::fs::write(&pw, format!("{PG_PASSWORD}\n")).expect("password file");
    let audit_lines = format!(
        "password_file = \"{}\"\nkey_file = \"{}\"\n",
        pw.display(),
        dir.path().join("audit.key").display()
    );
    // Two replicas on one trail.
    let start = |sub: &str| {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).expect("dir");
        TestProxy::builder(sim.addr)
            .dir(&d)
            .database(&pg.url(&db))
            .audit(&audit_lines)
            .start()
    };
    let one = start("one");
    let two = start("two");

    let ok = post_json(
        &one.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"HR (pg)","typeIds":[14,190]}}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let ok_id = ok.event_id().expect("event id");
    let refused = post_json(
        &two.hook_url(UPDATE),
        r#"{"id":238,"fields":{"typeIds":[]}}"#,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let refused_id = refused.event_id().expect("denials carry the event id");
    // Both replicas at once.
    let (a, b) = tokio::join!(
        async {
            for i in 0..10 {
                let r = post_json(
                    &one.hook_url(UPDATE),
                    &format!(r#"{{"id":267,"fields":{{"title":"one {i}"}}}}"#),
                )
                .await;
                assert_eq!(r.status, StatusCode::OK);
            }
        },
        async {
            for i in 0..10 {
                let r = post_json(
                    &two.hook_url(UPDATE),
                    &format!(r#"{{"id":238,"fields":{{"title":"two {i}"}}}}"#),
                )
                .await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }
    );
    let ((), ()) = (a, b);
    assert_eq!(sim.sim.solution(238).expect("238").type_ids, vec![14, 190]);

    let config = one.config.clone();
    let ok_id2 = ok_id.clone();
    let (list, show, verified, denied) = tokio::task::spawn_blocking(move || {
        (
            audit(&config, &["list"]),
            audit(&config, &["show", &ok_id2]),
            audit(&config, &["verify"]),
            audit(&config, &["list", "--outcome", "denied", "--json"]),
        )
    })
    .await
    .expect("cli");
    assert_eq!(list.0, 0, "{}", list.1);
    assert!(
        list.1.contains("chain: ok, 44 entries verify"),
        "{}",
        list.1
    );
    assert_eq!(show.0, 0, "{}", show.1);
    assert!(
        show.1.contains(&ok_id) && show.1.contains("HR (pg)"),
        "{}",
        show.1
    );
    assert!(show.1.contains("ok: the chain verifies"), "{}", show.1);
    assert_eq!(verified.0, 0, "{}", verified.1);
    assert!(
        verified.1.starts_with("ok: 44 entries verify"),
        "{}",
        verified.1
    );
    assert_eq!(denied.0, 0, "{}", denied.1);
    let denied: serde_json::Value = serde_json::from_str(&denied.1).expect("json");
    let denied = denied.as_array().expect("array");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["id"], refused_id.as_str());
    assert_eq!(denied[0]["rule"], "deny_empty_type_ids");
    assert_eq!(denied[0]["before"]["typeIds"], serde_json::json!([14, 190]));

    // `audit export` streams the same events, in trail order.
    let exported = tokio::task::spawn_blocking({
        let config = two.config.clone();
        move || audit(&config, &["export"])
    })
    .await
    .expect("export");
    assert_eq!(exported.0, 0, "{}", exported.1);
    let events: Vec<serde_json::Value> = exported
        .1
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.len(), 22);
    assert_eq!(events[0]["id"], ok_id.as_str());
    assert_eq!(events[0]["outcome"], "applied");
    assert_eq!(events[1]["outcome"], "denied");

    // The admin API of either replica reads the same trail.
    let head = get(&format!("http://{}/v1/chain/head", two.admin)).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.json()["seq"], 44);
    let page = get(&format!("http://{}/v1/events?outcome=denied", one.admin)).await;
    assert_eq!(page.json()["events"][0]["id"], refused_id.as_str());

    // Retention while a replica writes: the prune waits for the writers' lock, the replica's
    // next entries chain after its checkpoint, and the whole trail still verifies. `before` is
    // taken before the writes, so exactly the 44 entries above are old enough.
    let before = b24_audit_proxy::audit::now_rfc3339();
    let (started, writing) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn({
        let url = two.hook_url(UPDATE);
        async move {
            let mut started = Some(started);
            for i in 0..20 {
                let r = post_json(
                    &url,
                    &format!(r#"{{"id":238,"fields":{{"title":"kept {i}"}}}}"#),
                )
                .await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
                if i == 4 {
                    // The prune starts while 15 more updates are still to come.
                    let _ = started.take().map(|s| s.send(()));
                }
            }
        }
    });
    writing.await.expect("the replica writes");
    let t0 = std::time::Instant::now();
    let pruned = tokio::task::spawn_blocking({
        let config = one.config.clone();
        let before = before.clone();
        move || audit(&config, &["prune", "--before", &before])
    })
    .await
    .expect("prune");
    eprintln!(
        "audit prune of 44 entries beside a writing replica: {:?}",
        t0.elapsed()
    );
    writer.await.expect("every update answered");
    assert_eq!(pruned.0, 0, "{}", pruned.1);
    assert!(
        pruned
            .1
            .contains("pruned 44 entries (through entry 44); checkpoint is entry"),
        "{}",
        pruned.1
    );
    let (verified, backup) = tokio::task::spawn_blocking({
        let config = two.config.clone();
        let to = dir.path().join("copy.db");
        move || {
            (
                audit(&config, &["verify"]),
                audit(&config, &["backup", "--to", &to.display().to_string()]),
            )
        }
    })
    .await
    .expect("cli");
    assert_eq!(verified.0, 0, "{}", verified.1);
    // 20 events of two entries each and the checkpoint, contiguous from entry 45.
    assert!(
        verified
            .1
            .starts_with("ok: 41 entries verify (entries 45..85, entries up to 44 pruned)"),
        "{}",
        verified.1
    );
    let head = get(&format!("http://{}/v1/chain/head", one.admin)).await;
    assert_eq!(head.json()["seq"], 85);
    let page = get(&format!("http://{}/v1/events?limit=100", one.admin)).await;
    let events = page.json()["events"].as_array().map_or(0, Vec::len);
    assert_eq!(events, 20, "only the events after the cut are listed");
    // `audit backup` stays SQLite's; on PostgreSQL it says what to use instead.
    assert_ne!(backup.0, 0, "{}", backup.1);
    assert!(
        backup.1.contains("pg_dump or pg_basebackup")
            && backup.1.contains("audit verify on the restored database"),
        "{}",
        backup.1
    );

    // The password reached neither the logs nor the CLI's output.
    for text in [
        one.log(),
        two.log(),
        list.1,
        show.1,
        verified.1,
        pruned.1,
        backup.1,
    ] {
        assert!(!text.contains(PG_PASSWORD), "the password leaked: {text}");
    }
}

/// The intents' and outcomes' `(seq, event_id, kind)` of a trail, checkpoints apart (their
/// event ids and times are the prune's own).
fn positions(rows: &[StoredEntry]) -> Vec<(i64, String, String)> {
    rows.iter()
        .filter(|r| r.kind != "checkpoint")
        .map(|r| (r.seq, r.event_id.clone(), r.kind.clone()))
        .collect()
}

fn time_of(row: &StoredEntry) -> String {
    serde_json::from_str::<serde_json::Value>(&row.payload).expect("json")["time"]
        .as_str()
        .expect("time")
        .to_owned()
}

/// The clock's time once it is past `time` (entry times have millisecond resolution).
fn later_than(time: &str) -> String {
    loop {
        let now = b24_audit_proxy::audit::now_rfc3339();
        if now.as_str() > time {
            return now;
        }
    }
}

#[test]
fn prune_removes_what_sqlite_prune_removes_and_keeps_a_straddling_event_whole() {
    use b24_audit_proxy::audit::{pg_prune, prune};
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    let rt = runtime();
    let (log, writer, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open");
    // ev5's intent is written alone and its outcome only after ev10: it straddles any cut
    // between them.
    rt.block_on(async {
        for i in 1..=12 {
            let id = format!("ev{i}");
            let entry = intent(&id, Some(238), "1", "fp");
            if i == 5 {
                log.append(vec![entry]).await.expect("intent");
                continue;
            }
            let out = outcome(&id, Some(238), Outcome::Applied);
            log.append(vec![entry, out]).await.expect("event");
            if i == 10 {
                let late = outcome("ev5", Some(238), Outcome::Applied);
                log.append(vec![late]).await.expect("late outcome");
            }
        }
    });
    let reader = PgReader::open(&trail).expect("reader");
    let rows = stored(&reader);
    let find = |id: &str, kind: &str| {
        rows.iter()
            .find(|r| r.event_id == id && r.kind == kind)
            .expect("entry")
    };
    let (intent5, outcome5) = (find("ev5", "received"), find("ev5", "completed"));
    // Everything before ev5's outcome is old enough, ev5's intent among it.
    let before = time_of(outcome5);
    assert!(
        time_of(intent5) < before,
        "ev5's entries have distinct times"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy.db");
    sqlite_copy(&rows)
        .execute("VACUUM INTO ?1", [copy.display().to_string()])
        .expect("sqlite file");
    let t0 = std::time::Instant::now();
    let on_pg = pg_prune::prune(&trail, &before).expect("pg prune");
    eprintln!("pg prune of {} entries: {:?}", on_pg.removed, t0.elapsed());
    let on_sqlite = prune::prune(&copy, &before).expect("sqlite prune");
    assert_eq!(on_pg, on_sqlite, "the same prune on both backends");
    // Events 1-4, two entries each: the cut moved back to before ev5's intent.
    assert_eq!(on_pg.through_seq, Some(intent5.seq - 1));
    assert_eq!(on_pg.removed, 8);
    assert_eq!(on_pg.checkpoint_seq, Some(rows.len() as i64 + 1));

    let sqlite = rusqlite::Connection::open(&copy).expect("sqlite");
    let sqlite_rows = stored(&sqlite);
    let pg_rows = stored(&reader);
    assert_eq!(positions(&pg_rows), positions(&sqlite_rows));
    let index = |sql: &str| -> Vec<i64> {
        let mut s = sqlite.prepare(sql).expect("sql");
        let on_sqlite: Vec<i64> = s
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("seqs");
        let on_pg: Vec<i64> = pg.admin(&db, |c| {
            c.query(sql, &[])
                .expect("rows")
                .iter()
                .map(|r| r.get(0))
                .collect()
        });
        assert_eq!(on_pg, on_sqlite, "{sql}");
        on_pg
    };
    let kept = index("SELECT seq FROM audit_events ORDER BY seq");
    assert_eq!(kept.len(), 8, "events 5-12");
    assert_eq!(kept.first(), Some(&intent5.seq));
    index("SELECT seq FROM audit_event_solutions ORDER BY seq");
    index("SELECT seq FROM audit_event_callers ORDER BY seq");

    // The straddling event is whole, and the chain verifies from the checkpoint.
    let entries = query::entries_of(&reader, "ev5").expect("ev5");
    assert_eq!(entries.len(), 2, "ev5's intent and outcome");
    let v = verify::verify(&reader, None).expect("verifies after the prune");
    assert_eq!(v.pruned_through, on_pg.through_seq);
    assert_eq!(v.first_seq, Some(intent5.seq));
    assert_eq!(v.head_seq, on_pg.checkpoint_seq);

    // The running writer chains after the checkpoint.
    let next = rt.block_on(log.append(vec![intent("ev13", Some(238), "1", "fp")]));
    assert_eq!(next.expect("append")[0].seq, rows.len() as i64 + 2);
    assert_eq!(
        verify::verify(&reader, None).expect("verifies").head_seq,
        Some(rows.len() as i64 + 2)
    );

    // A second prune removes through the first one's checkpoint; nothing else may delete.
    let newest = time_of(stored(&reader).last().expect("entries"));
    let again = pg_prune::prune(&trail, &later_than(&newest)).expect("again");
    assert_eq!(
        again.through_seq,
        Some(rows.len() as i64 + 1),
        "ev13 is open"
    );
    let v = verify::verify(&reader, None).expect("verifies after the second prune");
    assert_eq!(v.pruned_through, again.through_seq);
    pg.admin(&db, |c| {
        let last = again.checkpoint_seq.expect("checkpoint");
        assert!(c
            .execute("DELETE FROM audit_entries WHERE seq = $1", &[&last])
            .is_err());
        assert!(c
            .execute(
                "UPDATE audit_entries SET payload = 'x' WHERE seq = $1",
                &[&last]
            )
            .is_err());
        assert!(c.batch_execute("TRUNCATE audit_entries").is_err());
    });
    drop(log);
    writer.join();
}

/// Polls `sql` (a count) on `c` until it is 1; fails after 10 s.
fn wait_for_one(c: &mut postgres::Client, what: &str, sql: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // Statistics are a snapshot per transaction: cleared so each poll sees the present.
        c.batch_execute("SELECT pg_stat_clear_snapshot()")
            .expect("clear");
        let n: i64 = c.query_one(sql, &[]).expect("poll").get(0);
        if n == 1 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_prune_waits_for_the_writers_lock_and_a_writer_waiting_behind_it_chains_after_the_checkpoint() {
    use b24_audit_proxy::audit::pg_prune;
    let pg = PgServer::shared();
    let db = pg.database();
    let trail = pg.trail(&db);
    let rt = runtime();
    let (log, writer, _) = pg_store::open(&trail, opts(), Arc::new(Quiet)).expect("open");
    rt.block_on(async {
        for i in 1..=3 {
            let id = format!("old{i}");
            let events = vec![
                intent(&id, Some(238), "1", "fp"),
                outcome(&id, Some(238), Outcome::Applied),
            ];
            log.append(events).await.expect("event");
        }
    });
    // Entry times have millisecond resolution: `before` is past the last one's millisecond, so
    // all six entries are old enough.
    let reader = PgReader::open(&trail).expect("reader");
    let last = time_of(stored(&reader).last().expect("entries"));
    let before = later_than(&last);
    let waiting = |app: &str| {
        format!(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{app}' \
             AND wait_event_type = 'Lock'"
        )
    };
    // Another session holds the writers' lock; the prune queues for it first, then a writer.
    let (pruned, appended) = pg.admin(&db, |c| {
        c.batch_execute("BEGIN; SELECT 1 FROM audit_writer_lock FOR UPDATE")
            .expect("hold the lock");
        std::thread::scope(|s| {
            let prune = s.spawn(|| pg_prune::prune(&trail, &before));
            wait_for_one(c, "the prune waits", &waiting("b24-audit-proxy prune"));
            let append = s.spawn(|| {
                rt.block_on(log.append(vec![
                    intent("new", Some(238), "1", "fp"),
                    outcome("new", Some(238), Outcome::Applied),
                ]))
            });
            wait_for_one(c, "the writer waits", &waiting("b24-audit-proxy writer"));
            c.batch_execute("COMMIT").expect("release");
            (
                prune.join().expect("prune thread"),
                append.join().expect("append thread"),
            )
        })
    });
    let pruned = pruned.expect("prune");
    assert_eq!(
        (pruned.removed, pruned.through_seq, pruned.checkpoint_seq),
        (6, Some(6), Some(7))
    );
    let seqs: Vec<i64> = appended
        .expect("the waiting writer commits")
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![8, 9], "chained after the checkpoint");
    let v = verify::verify(&reader, None).expect("one chain verifies");
    assert_eq!(
        (v.entries, v.first_seq, v.head_seq, v.pruned_through),
        (3, Some(7), Some(9), Some(6))
    );
    drop(log);
    writer.join();
}
