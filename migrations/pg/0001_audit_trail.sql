-- The PostgreSQL audit trail: the same data as the SQLite schema (migrations/0001..0003) in one
-- step — the chain entries, signed heads among them, and the derived event index — plus the
-- one-row table whose lock serialises appends from every replica (src/audit/pg_store.rs).
--
-- `payload` is the canonical JSON of the whole entry and `hash = SHA-256(prev_hash || payload)`
-- (docs/trail-format.md); the other columns repeat payload fields so queries can filter on them.
-- Text that is compared or ordered (times, ids, callers) uses the "C" collation: byte order, as
-- in SQLite, whatever the database's locale.
CREATE TABLE audit_entries (
    seq         BIGINT  PRIMARY KEY,
    event_id    TEXT    COLLATE "C" NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('received', 'completed', 'reconciled', 'checkpoint', 'signed_head')),
    time        TEXT    COLLATE "C" NOT NULL,
    method      TEXT    NOT NULL,
    solution_id BIGINT,
    outcome     TEXT    CHECK (outcome IS NULL OR outcome IN ('applied', 'rejected_by_portal', 'denied', 'unknown', 'failed')),
    payload     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE
);

-- One intent and at most one outcome per event.
CREATE UNIQUE INDEX audit_entries_intent ON audit_entries (event_id) WHERE kind = 'received';
CREATE UNIQUE INDEX audit_entries_outcome ON audit_entries (event_id) WHERE kind IN ('completed', 'reconciled');
-- `audit verify` starts from the newest checkpoint.
CREATE INDEX audit_entries_checkpoint ON audit_entries (seq) WHERE kind = 'checkpoint';

-- Append-only. Retention (`audit prune`) is not offered on PostgreSQL yet, so nothing may
-- update, delete or truncate entries; the hash chain is what proves a trail untouched.
CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only';
END;
$$;
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();

-- The writers' lock: each group's transaction takes this row FOR UPDATE before it reads the
-- head, so appends from every process form one contiguous chain. `probed_at` is what the
-- writer's probe rewrites (a real write that changes nothing in the trail).
CREATE TABLE audit_writer_lock (
    id        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    probed_at TIMESTAMPTZ
);
INSERT INTO audit_writer_lock (id) VALUES (TRUE);

-- The event index (as migrations/0003_event_index.sql): derived rows, not part of the chain,
-- that let every filter of `audit list`, `audit export` and `/v1/events` be answered through an
-- index in trail order. `outcome` is NULL while the event is pending and '' for an outcome entry
-- that names none (no outcome name is empty). `time_max` is the latest intent time up to this
-- one: it never decreases along the trail, so the first seq at or after a time is one lookup,
-- even where the clock stepped back (`time < time_max`, indexed apart).
CREATE TABLE audit_events (
    seq      BIGINT PRIMARY KEY,
    time     TEXT   COLLATE "C" NOT NULL,
    time_max TEXT   COLLATE "C" NOT NULL,
    outcome  TEXT
);
CREATE INDEX audit_events_time_max ON audit_events (time_max, seq);
CREATE INDEX audit_events_stepped_back ON audit_events (time, seq) WHERE time < time_max;
CREATE INDEX audit_events_outcome ON audit_events (outcome, seq);
CREATE INDEX audit_events_pending ON audit_events (seq) WHERE outcome IS NULL;

-- The workplaces an event names: its intent's and its outcome's solution_id.
CREATE TABLE audit_event_solutions (
    solution_id BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (solution_id, seq)
);

-- The caller an intent names: its user id and its credential fingerprint when the payload holds
-- them as JSON strings (SQLite compares the JSON value itself with the text filter, which only
-- a string equals).
CREATE TABLE audit_event_callers (
    caller TEXT   COLLATE "C" NOT NULL,
    seq    BIGINT NOT NULL,
    PRIMARY KEY (caller, seq)
);

CREATE FUNCTION audit_events_index() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    doc     JSONB;
    o_seq   BIGINT;
    o_out   TEXT;
    o_sol   BIGINT;
    r_seq   BIGINT;
BEGIN
    IF NEW.kind = 'received' THEN
        SELECT seq, outcome, solution_id INTO o_seq, o_out, o_sol FROM audit_entries
            WHERE event_id = NEW.event_id AND kind IN ('completed', 'reconciled');
        INSERT INTO audit_events (seq, time, time_max, outcome)
            VALUES (NEW.seq, NEW.time,
                    GREATEST(NEW.time, COALESCE((SELECT time_max FROM audit_events ORDER BY seq DESC LIMIT 1), NEW.time)),
                    CASE WHEN o_seq IS NOT NULL THEN COALESCE(o_out, '') END)
            ON CONFLICT (seq) DO UPDATE SET time = EXCLUDED.time, time_max = EXCLUDED.time_max, outcome = EXCLUDED.outcome;
        INSERT INTO audit_event_solutions (solution_id, seq)
            SELECT s, NEW.seq FROM (VALUES (NEW.solution_id), (o_sol)) AS v(s) WHERE s IS NOT NULL
            ON CONFLICT DO NOTHING;
        BEGIN
            doc := NEW.payload::jsonb;
        EXCEPTION WHEN others THEN
            -- A payload that is not JSON names no caller; `audit verify` reports it.
            doc := NULL;
        END;
        IF doc IS NOT NULL AND jsonb_typeof(doc) = 'object' AND jsonb_typeof(doc -> 'caller') = 'object' THEN
            INSERT INTO audit_event_callers (caller, seq)
                SELECT c ->> 0, NEW.seq FROM (VALUES (jsonb_build_array(doc -> 'caller' -> 'user_id')),
                                                     (jsonb_build_array(doc -> 'caller' -> 'fingerprint'))) AS v(c)
                WHERE jsonb_typeof(c -> 0) = 'string'
                ON CONFLICT DO NOTHING;
        END IF;
    ELSIF NEW.kind IN ('completed', 'reconciled') THEN
        SELECT seq INTO r_seq FROM audit_entries WHERE event_id = NEW.event_id AND kind = 'received';
        IF r_seq IS NOT NULL THEN
            UPDATE audit_events SET outcome = COALESCE(NEW.outcome, '') WHERE seq = r_seq;
            IF NEW.solution_id IS NOT NULL THEN
                INSERT INTO audit_event_solutions (solution_id, seq) VALUES (NEW.solution_id, r_seq)
                    ON CONFLICT DO NOTHING;
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_events_index AFTER INSERT ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_events_index();
