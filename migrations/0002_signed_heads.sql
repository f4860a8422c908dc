-- Signed chain heads (`[audit] signing_key_file`): entries of kind `signed_head` carry an
-- Ed25519 signature over the entry before them (docs/trail-format.md). SQLite cannot change a
-- CHECK constraint in place, so the table is rebuilt with the same columns, rows, indexes and
-- triggers (the documented "12-step" procedure; DROP TABLE fires no DELETE trigger).
CREATE TABLE audit_entries_v2 (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('received', 'completed', 'reconciled', 'checkpoint', 'signed_head')),
    time        TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    solution_id INTEGER,
    outcome     TEXT    CHECK (outcome IS NULL OR outcome IN ('applied', 'rejected_by_portal', 'denied', 'unknown', 'failed')),
    payload     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE
);

INSERT INTO audit_entries_v2 (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash)
    SELECT seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash FROM audit_entries;

DROP TABLE audit_entries;
ALTER TABLE audit_entries_v2 RENAME TO audit_entries;

CREATE UNIQUE INDEX audit_entries_intent ON audit_entries (event_id) WHERE kind = 'received';
CREATE UNIQUE INDEX audit_entries_outcome ON audit_entries (event_id) WHERE kind IN ('completed', 'reconciled');
CREATE INDEX audit_entries_solution ON audit_entries (solution_id, seq);
CREATE INDEX audit_entries_time ON audit_entries (time);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;

CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
WHEN NOT EXISTS (SELECT 1 FROM audit_prune_guard)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;
