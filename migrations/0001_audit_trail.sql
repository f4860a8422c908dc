-- The audit trail (design §4). Append-only: every audited mutation has one `received` entry
-- (the intent, committed before anything is forwarded) and one outcome entry, `completed` or,
-- for intents whose outcome was never seen, `reconciled` (written at start-up).
--
-- `payload` is the canonical JSON of the whole entry (sorted keys, no whitespace) and
-- `hash = SHA-256(prev_hash || payload)`, so any change to a row, a deleted row or a reordering
-- breaks the chain. The other columns repeat payload fields only so queries can filter on them.
CREATE TABLE audit_entries (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('received', 'completed', 'reconciled', 'checkpoint')),
    time        TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    solution_id INTEGER,
    outcome     TEXT    CHECK (outcome IS NULL OR outcome IN ('applied', 'rejected_by_portal', 'denied', 'unknown', 'failed')),
    payload     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE
);

-- One intent and at most one outcome per event.
CREATE UNIQUE INDEX audit_entries_intent ON audit_entries (event_id) WHERE kind = 'received';
CREATE UNIQUE INDEX audit_entries_outcome ON audit_entries (event_id) WHERE kind IN ('completed', 'reconciled');
CREATE INDEX audit_entries_solution ON audit_entries (solution_id, seq);
CREATE INDEX audit_entries_time ON audit_entries (time);

-- Retention (`audit prune`) is the only deletion: it removes a prefix of the chain inside one
-- transaction that holds a row here, and appends a `checkpoint` entry naming the last removed
-- entry's hash, so what remains still verifies. These triggers are tamper *evidence* for the
-- proxy's own code paths and careless tools; the hash chain is what proves a file untouched.
CREATE TABLE audit_prune_guard (
    pruning INTEGER NOT NULL
);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;

CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
WHEN NOT EXISTS (SELECT 1 FROM audit_prune_guard)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;
