-- Proxy keys (`[broker]`, `b24-audit-proxy keys ...`): what an integration holds instead of the
-- portal's webhook secret. A key itself is never stored: `key_hash` is HMAC-SHA-256 of it with
-- the installation key (docs/security-model.md), `key_fingerprint` the 16-character fingerprint
-- the trail and `keys list` show. Every change to this table is made in the transaction that
-- appends its `proxy.keys.*` event to the chain, so the chain says who could call what, and when.
--
-- `portal` is the `[[portals]]` name the key is for (NULL with the single `[upstream]`): a key
-- is served only under its portal's host, so one portal's webhook never reaches another.
-- `methods` and `solutions` are JSON arrays (empty: no limit); `may_override` the policy rules
-- the key may override with a reason. A rotated key's previous hash stays valid until
-- `previous_until`; a revoked key keeps its row (and its name) with `revoked` set.
CREATE TABLE proxy_keys (
    name            TEXT PRIMARY KEY,
    key_hash        TEXT NOT NULL UNIQUE,
    key_fingerprint TEXT NOT NULL,
    webhook         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    portal          TEXT,
    methods         TEXT NOT NULL DEFAULT '[]',
    solutions       TEXT NOT NULL DEFAULT '[]',
    may_override    TEXT NOT NULL DEFAULT '[]',
    created         TEXT NOT NULL,
    rotated         TEXT,
    revoked         TEXT,
    previous_hash   TEXT UNIQUE,
    previous_until  TEXT
);
