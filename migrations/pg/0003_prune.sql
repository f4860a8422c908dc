-- Retention on PostgreSQL (`audit prune`, src/audit/prune.rs): entries stay append-only, except
-- that a prune may delete a prefix of them. As on SQLite (migrations/0001_audit_trail.sql), the
-- prune marks its own transaction by a row of `audit_prune_guard` it inserts before the delete
-- and removes before it commits, so no other session ever sees the row and every other update
-- or delete is still refused. Updates and TRUNCATE are refused always.
CREATE TABLE audit_prune_guard (
    pruning BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (pruning)
);

CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW' AND EXISTS (SELECT 1 FROM audit_prune_guard) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit entries are append-only';
END;
$$;
