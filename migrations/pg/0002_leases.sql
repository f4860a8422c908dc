-- Replicas sharing one trail (docs/architecture.md, Replicas): each running proxy holds a lease
-- row it renews well within `[audit] lease_timeout`, and every intent names the instance that
-- recorded it. A replica reconciles to `unknown` only the open intents of instances whose lease
-- expired (or that hold none), never those of a live one.
--
-- `expires_at` is set by the holder from the database's own clock (now() + its lease_timeout),
-- so replicas whose clocks disagree still agree on which leases are expired.
CREATE TABLE audit_leases (
    instance_id TEXT        COLLATE "C" PRIMARY KEY,
    heartbeat   TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- The instance that recorded an intent: filled by the store for `received` entries, NULL for
-- every other kind and for intents written before this migration. It is operational metadata
-- for reconciliation, outside the hashed payload: the chain, and `audit verify`, are unchanged.
ALTER TABLE audit_entries ADD COLUMN instance_id TEXT COLLATE "C";
