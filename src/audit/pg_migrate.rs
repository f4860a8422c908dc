//! The PostgreSQL trail's schema: the SQL files under `migrations/pg/`, embedded at build time
//! and applied in order against an `audit_schema_version` table, like the SQLite ones
//! (`migrate.rs`) but numbered apart. Every object is named `audit_*`, so the database may hold
//! other applications' tables. Replicas may start at once: the whole run holds a
//! transaction-scoped advisory lock, and the version is read under it, so each migration is
//! applied exactly once. A database from a newer build is refused rather than written to.

use super::pg_conn::describe;

/// `(version, sql)`, in order. Never edit a shipped migration: add the next one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/pg/0001_audit_trail.sql")),
    (2, include_str!("../../migrations/pg/0002_leases.sql")),
    (3, include_str!("../../migrations/pg/0003_prune.sql")),
];

/// The advisory lock key migrations hold (an arbitrary constant: "b24audit" in ASCII).
const MIGRATION_LOCK: i64 = 0x6232_3461_7564_6974;

/// The schema version this binary writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Applies every migration newer than the database's version, all in one transaction.
pub fn apply(client: &mut postgres::Client) -> Result<i64, String> {
    let err = |what: &str, e: postgres::Error| format!("{what}: {}", describe(&e));
    let mut tx = client
        .transaction()
        .map_err(|e| err("cannot begin the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| err("cannot take the migration lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS audit_schema_version (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .map_err(|e| err("cannot create audit_schema_version", e))?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM audit_schema_version",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| err("cannot read audit_schema_version", e))?;
    if current > latest() {
        return Err(format!(
            "the audit database has schema version {current}, newer than this build's {}; refusing to write to it",
            latest()
        ));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .map_err(|e| err(&format!("migration {version} failed"), e))?;
        tx.execute(
            "INSERT INTO audit_schema_version (version) VALUES ($1)",
            &[version],
        )
        .map_err(|e| err(&format!("migration {version} failed"), e))?;
    }
    tx.commit()
        .map_err(|e| err("the migration did not commit", e))?;
    Ok(latest().max(current))
}
