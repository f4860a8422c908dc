//! `audit backup` while the proxy serves, and the restore the README documents: the backup is
//! taken with audited calls in flight, verifies, is one self-contained file, and a proxy started
//! on the restored file keeps appending to a chain that still verifies.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use support::*;

fn audit(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("binary runs");
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
async fn a_backup_taken_while_serving_verifies_and_restores() {
    let sim = sim().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut proxy = TestProxy::builder(sim.addr).dir(dir).start();
    let url = proxy.hook_url(UPDATE);
    for i in 0..5 {
        let r = post_json(
            &url,
            &format!(r#"{{"id":238,"fields":{{"title":"HR {i}"}}}}"#),
        )
        .await;
        assert_eq!(r.status, http::StatusCode::OK);
    }

    // Audited calls keep arriving while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, served, url) = (stop.clone(), served.clone(), url.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = post_json(
                    &url,
                    &format!(r#"{{"id":267,"fields":{{"title":"Sales {i}"}}}}"#),
                )
                .await;
                assert_eq!(r.status, http::StatusCode::OK);
                served.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    eventually("calls are being served", || {
        served.load(Ordering::Relaxed) > 0
    })
    .await;
    let backup = dir.join("backups/audit-1.db");
    std::fs::create_dir_all(backup.parent().expect("dir")).expect("mkdir");
    let config = proxy.config.clone();
    let backup_arg = backup.to_str().expect("path").to_owned();
    let (code, out) =
        tokio::task::spawn_blocking(move || audit(&config, &["backup", "--to", &backup_arg]))
            .await
            .expect("backup ran");
    let during = served.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: "), "{out}");
    assert!(during > 0);
    assert!(backup.is_file());
    assert!(
        !Path::new(&format!("{}-wal", backup.display())).exists(),
        "the backup is one self-contained file"
    );
    assert!(!Path::new(&format!("{}.partial", backup.display())).exists());

    // A backup never overwrites.
    let (code, out) = audit(
        &proxy.config,
        &["backup", "--to", backup.to_str().expect("path")],
    );
    assert_ne!(code, 0);
    assert!(out.contains("never overwrites"), "{out}");

    // Restore, as the README says: stop the proxy, put the backup in the database's place
    // (removing the old -wal and -shm), start it again.
    assert!(proxy.terminate().success());
    let entries_in_backup = verify_chain(&backup);
    assert!(
        entries_in_backup >= 10,
        "the backup holds the calls made before it"
    );
    // A call in flight when the copy was taken: its intent is in the backup, its outcome not.
    let in_flight: usize = rusqlite::Connection::open(&backup)
        .expect("open backup")
        .query_row(
            "SELECT COUNT(*) FROM audit_entries r WHERE r.kind = 'received' AND NOT EXISTS \
             (SELECT 1 FROM audit_entries o WHERE o.event_id = r.event_id AND o.kind <> 'received')",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let db = proxy.db_path();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&backup, &db).expect("restore");
    drop(proxy);

    let mut restored = TestProxy::builder(sim.addr).dir(dir).start();
    let r = post_json(
        &restored.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"after restore"}}"#,
    )
    .await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert!(restored.terminate().success());
    let (code, out) = audit(&restored.config, &["verify"]);
    assert_eq!(code, 0, "{out}");
    // Each intent the backup caught in flight is reconciled as `unknown` at the restored start.
    assert_eq!(verify_chain(&db), entries_in_backup + in_flight + 2);
    let last = restored.export().pop().expect("events");
    assert_eq!(
        last["request"]["params"]["fields"]["title"],
        "after restore"
    );
}
