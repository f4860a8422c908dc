//! Schema migrations: the SQL files under `migrations/`, embedded at build time and applied in
//! order against a `schema_version` table at start-up. A database from a newer build (a version
//! this binary does not know) is refused rather than written to.

use rusqlite::Connection;

/// `(version, sql)`, in order. Never edit a shipped migration: add the next one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_audit_trail.sql")),
    (2, include_str!("../../migrations/0002_signed_heads.sql")),
    (3, include_str!("../../migrations/0003_event_index.sql")),
    (4, include_str!("../../migrations/0004_proxy_keys.sql")),
];

/// The schema version this binary writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Applies every migration newer than the database's version, each in its own transaction.
pub fn apply(conn: &mut Connection) -> Result<i64, String> {
    apply_through(conn, latest())
}

/// Applies the migrations newer than the database's version up to `last` (a trail as an
/// older build left it, for the tests of a later migration).
pub(crate) fn apply_through(conn: &mut Connection, last: i64) -> Result<i64, String> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .map_err(|e| format!("cannot create schema_version: {e}"))?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(|e| format!("cannot read schema_version: {e}"))?;
    if current > latest() {
        return Err(format!(
            "the audit database has schema version {current}, newer than this build's {}; refusing to write to it",
            latest()
        ));
    }
    for (version, sql) in MIGRATIONS
        .iter()
        .filter(|(v, _)| *v > current && *v <= last)
    {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql)
            .map_err(|e| format!("migration {version} failed: {e}"))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            [version],
        )
        .map_err(|e| e.to_string())?;
        tx.commit()
            .map_err(|e| format!("migration {version} failed: {e}"))?;
    }
    Ok(last.max(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_is_idempotent() {
        let mut c = Connection::open_in_memory().expect("db");
        assert_eq!(apply(&mut c).expect("first"), latest());
        assert_eq!(apply(&mut c).expect("second"), latest());
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_version_1_trail_keeps_its_rows_and_guards_through_the_rebuild() {
        let mut c = Connection::open_in_memory().expect("db");
        c.execute_batch(MIGRATIONS[0].1).expect("v1 schema");
        c.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL); \
             INSERT INTO schema_version VALUES (1, 'then'); \
             INSERT INTO audit_entries (seq, event_id, kind, time, method, payload, prev_hash, hash) VALUES (1, 'e', 'received', 't', 'm', '{}', 'p', 'h');",
        )
        .expect("v1 trail");
        assert!(c
            .execute("INSERT INTO audit_entries (seq, event_id, kind, time, method, payload, prev_hash, hash) VALUES (2, 's', 'signed_head', 't', 'm', '{}', 'h', 'h2')", [])
            .is_err(), "version 1 has no signed heads");
        assert_eq!(apply(&mut c).expect("migrate"), latest());
        let row: (String, String) = c
            .query_row(
                "SELECT event_id, hash FROM audit_entries WHERE seq = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("row kept");
        assert_eq!(row, ("e".to_owned(), "h".to_owned()));
        c.execute("INSERT INTO audit_entries (seq, event_id, kind, time, method, payload, prev_hash, hash) VALUES (2, 's', 'signed_head', 't', 'm', '{}', 'h', 'h2')", [])
            .expect("signed heads allowed");
        assert!(c
            .execute("UPDATE audit_entries SET payload = 'x'", [])
            .is_err());
        assert!(c.execute("DELETE FROM audit_entries", []).is_err());
        assert!(c
            .execute("INSERT INTO audit_entries (seq, event_id, kind, time, method, payload, prev_hash, hash) VALUES (3, 'e', 'received', 't', 'm', '{}', 'h2', 'h3')", [])
            .is_err(), "the intent index was rebuilt");
    }

    #[test]
    fn newer_database_is_refused() {
        let mut c = Connection::open_in_memory().expect("db");
        apply(&mut c).expect("first");
        c.execute("INSERT INTO schema_version VALUES (999, 'x')", [])
            .expect("insert");
        assert!(apply(&mut c).is_err());
    }

    #[test]
    fn entries_are_append_only() {
        let mut c = Connection::open_in_memory().expect("db");
        apply(&mut c).expect("migrate");
        c.execute(
            "INSERT INTO audit_entries (seq, event_id, kind, time, method, payload, prev_hash, hash) VALUES (1, 'e', 'received', 't', 'm', '{}', 'p', 'h')",
            [],
        )
        .expect("insert");
        assert!(c
            .execute("UPDATE audit_entries SET payload = 'x'", [])
            .is_err());
        assert!(c.execute("DELETE FROM audit_entries", []).is_err());
        // A second intent for the same event is refused by the schema itself.
        assert!(c
            .execute(
                "INSERT INTO audit_entries (seq, event_id, kind, time, method, payload, prev_hash, hash) VALUES (2, 'e', 'received', 't', 'm', '{}', 'h', 'h2')",
                [],
            )
            .is_err());
    }
}
