-- The event index: derived tables that let every filter of `audit list`, `audit export` and the
-- admin API's `/v1/events` be answered through an index, in trail order, a page at a time. They
-- are not part of the hash chain and hold nothing that is not in it: every value is copied from
-- an entry's columns or hashed payload by the triggers below (and back-filled here for trails
-- written before), and `audit prune` removes their rows with the entries they describe.
--
-- `audit_events`: one row per intent, keyed by the intent's seq. `outcome` is the outcome
-- entry's outcome, NULL while the event is in flight (pending), and 0 for an outcome entry
-- that names none (no column type, so 0 stays a number that no outcome name equals). `time_max`
-- is the latest intent time up to this one: it never decreases along the trail, so the first
-- seq at or after a time is one index lookup, even where the clock stepped back
-- (`time < time_max`, indexed apart so that a time bound can still be exact).
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    time        TEXT    NOT NULL,
    time_max    TEXT    NOT NULL,
    outcome
);
-- An index on a rowid table ends with the rowid (seq), so each of these yields its matches in
-- trail order, which is what a page ordered by seq reads.
CREATE INDEX audit_events_time_max ON audit_events (time_max);
CREATE INDEX audit_events_stepped_back ON audit_events (time) WHERE time < time_max;
CREATE INDEX audit_events_outcome ON audit_events (outcome);

-- The workplaces an event names: its intent's and its outcome's solution_id (an `add` learns
-- its id only from the outcome).
CREATE TABLE audit_event_solutions (
    solution_id INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (solution_id, seq)
) WITHOUT ROWID;

-- The caller an intent names: its user id and its credential fingerprint, as the payload holds
-- them (no column type, so a value compares as it did inside the JSON). A payload that is not
-- JSON names no caller here; `audit verify` reports it.
CREATE TABLE audit_event_callers (
    caller NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (caller, seq)
) WITHOUT ROWID;

-- An intent: its row, its workplace, its caller, and an outcome already present (a trail
-- copied in out of order). A row left at this seq (see the DELETE trigger below) is replaced:
-- derived data never makes the writer refuse an entry.
CREATE TRIGGER audit_events_on_intent AFTER INSERT ON audit_entries
WHEN NEW.kind = 'received'
BEGIN
    INSERT OR REPLACE INTO audit_events (seq, time, time_max, outcome)
        SELECT NEW.seq, NEW.time,
               MAX(NEW.time, COALESCE((SELECT time_max FROM audit_events ORDER BY seq DESC LIMIT 1), NEW.time)),
               CASE WHEN o.seq IS NOT NULL THEN COALESCE(o.outcome, 0) END
        FROM (SELECT 1)
        LEFT JOIN audit_entries o ON o.event_id = NEW.event_id AND o.kind IN ('completed', 'reconciled');
    INSERT OR IGNORE INTO audit_event_solutions (solution_id, seq)
        SELECT NEW.solution_id, NEW.seq WHERE NEW.solution_id IS NOT NULL
        UNION ALL
        SELECT o.solution_id, NEW.seq FROM audit_entries o
        WHERE o.event_id = NEW.event_id AND o.kind IN ('completed', 'reconciled') AND o.solution_id IS NOT NULL;
    INSERT OR IGNORE INTO audit_event_callers (caller, seq)
        SELECT c, NEW.seq FROM (
            SELECT CASE WHEN json_valid(NEW.payload) THEN json_extract(NEW.payload, '$.caller.user_id') END AS c
            UNION ALL
            SELECT CASE WHEN json_valid(NEW.payload) THEN json_extract(NEW.payload, '$.caller.fingerprint') END
        ) WHERE c IS NOT NULL;
END;

-- An outcome: onto its intent's row.
CREATE TRIGGER audit_events_on_outcome AFTER INSERT ON audit_entries
WHEN NEW.kind IN ('completed', 'reconciled')
BEGIN
    UPDATE audit_events SET outcome = COALESCE(NEW.outcome, 0)
        WHERE seq = (SELECT seq FROM audit_entries WHERE event_id = NEW.event_id AND kind = 'received');
    INSERT OR IGNORE INTO audit_event_solutions (solution_id, seq)
        SELECT NEW.solution_id, r.seq FROM audit_entries r
        WHERE r.event_id = NEW.event_id AND r.kind = 'received' AND NEW.solution_id IS NOT NULL;
END;

-- Entries are deleted only by `audit prune` (which removes the index rows of what it prunes
-- itself, in bulk) or by hand, past the append-only triggers: a trail cut short by hand, which
-- the writer then continues at the same seq. The index forgets what such a deletion removed.
CREATE TRIGGER audit_events_on_delete AFTER DELETE ON audit_entries
WHEN NOT EXISTS (SELECT 1 FROM audit_prune_guard)
BEGIN
    DELETE FROM audit_events WHERE OLD.kind = 'received' AND seq = OLD.seq;
    DELETE FROM audit_event_solutions WHERE OLD.kind = 'received' AND solution_id = OLD.solution_id AND seq = OLD.seq;
    DELETE FROM audit_event_callers WHERE OLD.kind = 'received' AND seq = OLD.seq AND caller IN (
        CASE WHEN json_valid(OLD.payload) THEN json_extract(OLD.payload, '$.caller.user_id') END,
        CASE WHEN json_valid(OLD.payload) THEN json_extract(OLD.payload, '$.caller.fingerprint') END);
    -- An outcome removed: its event is in flight again, and no longer names the outcome's
    -- workplace unless its intent does.
    DELETE FROM audit_event_solutions WHERE OLD.kind IN ('completed', 'reconciled')
        AND solution_id = OLD.solution_id
        AND seq = (SELECT seq FROM audit_entries WHERE event_id = OLD.event_id AND kind = 'received')
        AND OLD.solution_id IS NOT (SELECT solution_id FROM audit_entries WHERE event_id = OLD.event_id AND kind = 'received');
    UPDATE audit_events SET outcome = NULL WHERE OLD.kind IN ('completed', 'reconciled')
        AND seq = (SELECT seq FROM audit_entries WHERE event_id = OLD.event_id AND kind = 'received');
END;

-- The back-fill, for trails written before this version.
INSERT INTO audit_events (seq, time, time_max, outcome)
    SELECT r.seq, r.time, MAX(r.time) OVER (ORDER BY r.seq ROWS UNBOUNDED PRECEDING),
           CASE WHEN o.seq IS NOT NULL THEN COALESCE(o.outcome, 0) END
    FROM audit_entries r
    LEFT JOIN audit_entries o ON o.event_id = r.event_id AND o.kind IN ('completed', 'reconciled')
    WHERE r.kind = 'received';
INSERT OR IGNORE INTO audit_event_solutions (solution_id, seq)
    SELECT solution_id, seq FROM audit_entries WHERE kind = 'received' AND solution_id IS NOT NULL;
INSERT OR IGNORE INTO audit_event_solutions (solution_id, seq)
    SELECT o.solution_id, r.seq FROM audit_entries o
    JOIN audit_entries r ON r.event_id = o.event_id AND r.kind = 'received'
    WHERE o.kind IN ('completed', 'reconciled') AND o.solution_id IS NOT NULL;
INSERT OR IGNORE INTO audit_event_callers (caller, seq)
    SELECT c, seq FROM (
        SELECT CASE WHEN json_valid(payload) THEN json_extract(payload, '$.caller.user_id') END AS c, seq FROM audit_entries WHERE kind = 'received'
        UNION ALL
        SELECT CASE WHEN json_valid(payload) THEN json_extract(payload, '$.caller.fingerprint') END, seq FROM audit_entries WHERE kind = 'received'
    ) WHERE c IS NOT NULL;

-- The workplace index of `audit_entries` served only the filter the tables above now serve;
-- dropped, so that an event costs the writer fewer index updates.
DROP INDEX audit_entries_solution;

-- `audit verify` starts from the newest checkpoint: found through this index instead of a walk
-- back through the whole table.
CREATE INDEX audit_entries_checkpoint ON audit_entries (seq) WHERE kind = 'checkpoint';
