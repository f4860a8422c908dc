//! The proxy keys, kept in the trail's database (`proxy_keys`, migrations/0004): created, listed,
//! revoked and rotated by `b24-audit-proxy keys ...`. Each change is one IMMEDIATE transaction
//! that also appends a `proxy.keys.*` event (intent and outcome) to the hash chain, so a running
//! proxy's writer simply waits for it and chains after it, and the chain records every change of
//! who may call what. A key is shown once, when it is made; only its keyed hash is stored.
//!
//! After each change the generation file (`<database>.keys`) is replaced, which a running
//! proxy checks before it trusts its copy of the keys (`Broker`), so a change takes effect with
//! the next request.

use crate::audit::record::{Caller, Completion, Intent, RequestInfo, Subject};
use crate::audit::store::{insert, load_head, open_connection};
use crate::audit::{format_time, migrate, new_event_id, now_rfc3339, Outcome};
use crate::secrets::FingerprintKey;
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Characters of a key: 32 of `[a-z0-9]`, about 165 bits, and a valid path segment as is.
const KEY_LEN: usize = 32;
const KEY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// What a key may do, as given to `keys create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Method globs (`crm.deal.*`); empty: every method.
    pub methods: Vec<String>,
    /// Workplaces it may change; empty: every workplace.
    pub solutions: Vec<i64>,
    /// Policy rules it may override with `X-Audit-Override-Reason`.
    pub may_override: Vec<String>,
}

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: String,
    pub key_hash: String,
    pub fingerprint: String,
    pub webhook: String,
    pub user_id: String,
    /// The `[[portals]]` name it is for; `None` with the single `[upstream]`.
    pub portal: Option<String>,
    pub scope: Scope,
    pub created: String,
    pub rotated: Option<String>,
    pub revoked: Option<String>,
    pub previous_hash: Option<String>,
    pub previous_until: Option<String>,
}

/// A key just made: its record, and the key, shown once.
pub struct Issued {
    pub record: KeyRecord,
    pub key: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("record", &self.record)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The keyed hash a key is stored and looked up by: the full HMAC, domain-separated from the
/// trail's 16-character fingerprints.
pub fn key_hash(fkey: &FingerprintKey, key: &str) -> String {
    fkey.mac_hex(&format!("proxy-key:{key}"))
}

/// The generation file beside `database`, replaced after every key change.
pub fn generation_file(database: &Path) -> PathBuf {
    let mut p = database.as_os_str().to_owned();
    p.push(".keys");
    PathBuf::from(p)
}

fn new_key() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..KEY_LEN)
        .map(|_| char::from(KEY_ALPHABET[rng.gen_range(0..KEY_ALPHABET.len())]))
        .collect()
}

/// Opens the trail's database for a key change (creating it and its schema if needed).
pub fn open(database: &Path) -> Result<Connection, String> {
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut conn = open_connection(database).map_err(|e| e.to_string())?;
    migrate::apply(&mut conn)?;
    Ok(conn)
}

fn db_err(e: rusqlite::Error) -> String {
    format!("the key store: {e}")
}

const COLUMNS: &str = "name, key_hash, key_fingerprint, webhook, user_id, methods, solutions, \
     may_override, created, rotated, revoked, previous_hash, previous_until, portal";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let list = |i: usize| -> rusqlite::Result<Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let strings = |v: Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ids = list(6)?
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    Ok(KeyRecord {
        name: r.get(0)?,
        key_hash: r.get(1)?,
        fingerprint: r.get(2)?,
        webhook: r.get(3)?,
        user_id: r.get(4)?,
        scope: Scope {
            methods: strings(list(5)?),
            solutions: ids,
            may_override: strings(list(7)?),
        },
        created: r.get(8)?,
        rotated: r.get(9)?,
        revoked: r.get(10)?,
        previous_hash: r.get(11)?,
        previous_until: r.get(12)?,
        portal: r.get(13)?,
    })
}

/// Every key, live and revoked, by name.
pub fn list(conn: &Connection) -> Result<Vec<KeyRecord>, String> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM proxy_keys ORDER BY name"))
        .map_err(db_err)?;
    let rows = stmt.query_map([], from_row).map_err(db_err)?;
    rows.collect::<Result<_, _>>().map_err(db_err)
}

fn find(conn: &Connection, name: &str) -> Result<Option<KeyRecord>, String> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM proxy_keys WHERE name = ?1"),
        [name],
        from_row,
    )
    .optional()
    .map_err(db_err)
}

/// A key name: it appears in the trail, in logs and in the path of nothing.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Who made a change, as far as the machine can tell (the login name), for the chain.
fn operator() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

/// Appends the event of a key change (intent, then its `applied` outcome) inside `tx`.
fn record(tx: &Connection, action: &str, params: Value) -> Result<String, String> {
    let event_id = new_event_id();
    let method = format!("proxy.keys.{action}");
    let subject = || Subject {
        event_id: &event_id,
        method: &method,
        solution_id: None,
    };
    let intent = Intent {
        caller: Caller {
            auth: "operator".into(),
            user_id: operator(),
            ..Caller::default()
        },
        request: RequestInfo {
            encoding: "cli".into(),
            http_method: "-".into(),
            params,
        },
        decision: "allow".into(),
        ..Intent::default()
    };
    let mut head = load_head(tx).map_err(db_err)?;
    insert(tx, &mut head, &intent.entry(subject())).map_err(db_err)?;
    insert(
        tx,
        &mut head,
        &Completion::default().entry(subject(), Outcome::Applied),
    )
    .map_err(db_err)?;
    Ok(event_id)
}

/// Replaces the generation file, so a running proxy reloads its keys with the next request.
pub fn bump_generation(database: &Path) -> Result<(), String> {
    let path = generation_file(database);
    let tmp = path.with_extension("keys.tmp");
    std::fs::write(&tmp, format!("{}\n", now_rfc3339()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn scope_json(s: &Scope) -> Value {
    json!({"methods": s.methods, "solutions": s.solutions, "may_override": s.may_override})
}

/// Makes a key named `name` for the webhook `webhook` (user `user_id`) with `scope`. A name in
/// use by a live key is refused; a revoked key's name is taken over.
pub fn create(
    conn: &mut Connection,
    fkey: &FingerprintKey,
    name: &str,
    webhook: &str,
    user_id: &str,
    portal: Option<&str>,
    scope: &Scope,
) -> Result<Issued, String> {
    if !valid_name(name) {
        return Err(format!(
            "\"{name}\" is not a key name (1 to 64 letters, digits, - _ .)"
        ));
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    if let Some(k) = find(&tx, name)? {
        if k.revoked.is_none() {
            return Err(format!(
                "a key named {name} exists; revoke it first, or rotate it"
            ));
        }
        tx.execute("DELETE FROM proxy_keys WHERE name = ?1", [name])
            .map_err(db_err)?;
    }
    let key = new_key();
    let record = KeyRecord {
        name: name.to_owned(),
        key_hash: key_hash(fkey, &key),
        fingerprint: fkey.fingerprint(&key),
        webhook: webhook.to_owned(),
        user_id: user_id.to_owned(),
        portal: portal.map(str::to_owned),
        scope: scope.clone(),
        created: now_rfc3339(),
        rotated: None,
        revoked: None,
        previous_hash: None,
        previous_until: None,
    };
    tx.execute(
        "INSERT INTO proxy_keys (name, key_hash, key_fingerprint, webhook, user_id, methods, solutions, may_override, created, portal) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            record.name,
            record.key_hash,
            record.fingerprint,
            record.webhook,
            record.user_id,
            json!(scope.methods).to_string(),
            json!(scope.solutions).to_string(),
            json!(scope.may_override).to_string(),
            record.created,
            record.portal
        ],
    )
    .map_err(db_err)?;
    record_change(&tx, "create", &record, json!({}))?;
    tx.commit().map_err(db_err)?;
    Ok(Issued { record, key })
}

fn record_change(
    tx: &Connection,
    action: &str,
    k: &KeyRecord,
    extra: Value,
) -> Result<String, String> {
    let mut params = json!({
        "name": k.name,
        "webhook": k.webhook,
        "user_id": k.user_id,
        "portal": k.portal,
        "key_fingerprint": k.fingerprint,
        "scope": scope_json(&k.scope),
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut params, extra) {
        p.extend(e);
    }
    record(tx, action, params)
}

/// The live key `name`; an error naming why not (`revoked` says what a revoked one is).
fn live(tx: &Connection, name: &str, revoked: &str) -> Result<KeyRecord, String> {
    match find(tx, name)? {
        None => Err(format!("no key named {name}")),
        Some(k) if k.revoked.is_some() => Err(format!("the key {name} is {revoked}")),
        Some(k) => Ok(k),
    }
}

/// Revokes the key `name` (and a rotated key's previous one): refused from the next request on.
pub fn revoke(conn: &mut Connection, name: &str) -> Result<KeyRecord, String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let mut k = live(&tx, name, "revoked already")?;
    let now = now_rfc3339();
    tx.execute(
        "UPDATE proxy_keys SET revoked = ?2, previous_hash = NULL, previous_until = NULL WHERE name = ?1",
        params![name, now],
    )
    .map_err(db_err)?;
    k.revoked = Some(now);
    record_change(&tx, "revoke", &k, json!({}))?;
    tx.commit().map_err(db_err)?;
    Ok(k)
}

/// Gives the key `name` a new value; the old one stays valid for `grace` (none: refused from
/// the next request on).
pub fn rotate(
    conn: &mut Connection,
    fkey: &FingerprintKey,
    name: &str,
    grace: Duration,
) -> Result<Issued, String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let mut k = live(&tx, name, "revoked; create a new one")?;
    let key = new_key();
    let now = time::OffsetDateTime::now_utc();
    let until = (!grace.is_zero()).then(|| format_time(now + grace));
    let previous = until.as_ref().map(|_| k.key_hash.clone());
    k.key_hash = key_hash(fkey, &key);
    k.fingerprint = fkey.fingerprint(&key);
    k.rotated = Some(format_time(now));
    k.previous_hash = previous;
    k.previous_until = until;
    tx.execute(
        "UPDATE proxy_keys SET key_hash = ?2, key_fingerprint = ?3, rotated = ?4, previous_hash = ?5, previous_until = ?6 WHERE name = ?1",
        params![name, k.key_hash, k.fingerprint, k.rotated, k.previous_hash, k.previous_until],
    )
    .map_err(db_err)?;
    record_change(
        &tx,
        "rotate",
        &k,
        json!({"grace_seconds": grace.as_secs(), "previous_valid_until": k.previous_until}),
    )?;
    tx.commit().map_err(db_err)?;
    Ok(Issued { record: k, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection, FingerprintKey) {
        let dir = tempfile::tempdir().expect("dir");
        let conn = open(&dir.path().join("audit.db")).expect("open");
        (dir, conn, FingerprintKey::from_bytes([7; 32]))
    }

    fn trail_methods(conn: &Connection) -> Vec<(String, String)> {
        let mut s = conn
            .prepare("SELECT kind, method FROM audit_entries ORDER BY seq")
            .expect("prepare");
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn keys_are_stored_hashed_and_every_change_is_a_chain_event() {
        let (_d, mut c, fk) = db();
        let scope = Scope {
            methods: vec!["crm.deal.*".into()],
            solutions: vec![238],
            may_override: Vec::new(),
        };
        let issued = create(&mut c, &fk, "deals-sync", "crm", "7", None, &scope).expect("create");
        assert_eq!(issued.key.len(), KEY_LEN);
        assert!(issued.key.bytes().all(|b| KEY_ALPHABET.contains(&b)));
        assert!(!format!("{issued:?}").contains(&issued.key));
        let stored = list(&c).expect("list");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].key_hash, key_hash(&fk, &issued.key));
        assert_eq!(stored[0].scope, scope);
        // The key itself is nowhere in the database.
        let dump: String = c
            .query_row(
                "SELECT group_concat(payload, '') FROM audit_entries",
                [],
                |r| r.get(0),
            )
            .expect("payloads");
        assert!(!dump.contains(&issued.key));
        assert!(dump.contains(&stored[0].fingerprint));

        assert!(
            create(&mut c, &fk, "deals-sync", "crm", "7", None, &scope).is_err(),
            "name in use"
        );
        let rotated = rotate(&mut c, &fk, "deals-sync", Duration::from_secs(60)).expect("rotate");
        assert_ne!(rotated.key, issued.key);
        let k = &list(&c).expect("list")[0];
        assert_eq!(
            k.previous_hash.as_deref(),
            Some(key_hash(&fk, &issued.key).as_str())
        );
        assert!(k.previous_until.is_some());
        revoke(&mut c, "deals-sync").expect("revoke");
        let k = &list(&c).expect("list")[0];
        assert!(k.revoked.is_some() && k.previous_hash.is_none());
        assert!(revoke(&mut c, "deals-sync").is_err());
        assert!(
            create(
                &mut c,
                &fk,
                "deals-sync",
                "crm",
                "7",
                None,
                &Scope::default()
            )
            .is_ok(),
            "a revoked name is reused"
        );
        let methods: Vec<String> = trail_methods(&c).into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            methods,
            [
                "proxy.keys.create",
                "proxy.keys.create",
                "proxy.keys.rotate",
                "proxy.keys.rotate",
                "proxy.keys.revoke",
                "proxy.keys.revoke",
                "proxy.keys.create",
                "proxy.keys.create"
            ]
        );
        assert!(create(&mut c, &fk, "bad name", "crm", "7", None, &Scope::default()).is_err());
    }
}
