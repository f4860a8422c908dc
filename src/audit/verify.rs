//! `audit verify`: recomputes the hash chain and names the first entry that is missing,
//! altered or out of place; with `--head HASH`, also proves that an earlier-recorded head is
//! still in the chain (so the newest entries were not cut off).
//!
//! Checks, per entry in `seq` order: the sequence has no gap; `prev_hash` is the previous
//! entry's hash (or, at the start, the genesis hash or the hash a retention checkpoint names);
//! `hash = SHA-256(prev_hash ‖ payload)`; the payload is canonical JSON in the form it declares;
//! the columns queries filter on (`seq`, `event_id`, `kind`, `method`, `solution_id`, `outcome`)
//! say what the hashed payload says; and, given the public key, every `signed_head` entry's
//! signature covers the entry before it. Streams rows; memory does not grow with the trail.
//! `scripts/verify-trail` implements the same checks over `audit export --entries`.

use super::chain::{entry_hash, is_canonical, GENESIS};
use super::query::{StoredEntry, TrailReader};
use super::signing;
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use std::fmt;

/// A chain that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub first_seq: Option<i64>,
    pub head_seq: Option<i64>,
    pub head_hash: String,
    /// Entries before `first_seq` were removed by retention (`audit prune`).
    pub pruned_through: Option<i64>,
    /// `signed_head` entries seen (their signatures checked only with a public key).
    pub signed_heads: u64,
    /// The newest signed head entry's sequence number and time.
    pub last_signed: Option<(i64, String)>,
    /// Whether the signatures were checked (a public key was given).
    pub signatures_checked: bool,
}

impl Verified {
    /// Entries after the newest signed head, not yet covered by a signature.
    pub fn unsigned_tail(&self) -> i64 {
        let head = self.head_seq.unwrap_or(0);
        match &self.last_signed {
            Some((s, _)) => head - s,
            None => head - self.first_seq.map_or(head, |f| f - 1),
        }
    }

    /// One line for `audit verify` and `audit backup`; the head hash comes last, so scripts can
    /// take the last word.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} entries verify (entries {}..{}{})",
            self.entries,
            self.first_seq.unwrap_or(0),
            self.head_seq.unwrap_or(0),
            self.pruned_through
                .map_or(String::new(), |p| format!(", entries up to {p} pruned")),
        );
        if let Some((seq, time)) = &self.last_signed {
            s.push_str(&format!(
                "; {} signed heads{}, the last at entry {seq} ({time}), {} entries after it",
                self.signed_heads,
                if self.signatures_checked {
                    " verify"
                } else {
                    " (signatures not checked: no --public-key)"
                },
                self.unsigned_tail()
            ));
        }
        s.push_str(&format!(", head {}", self.head_hash));
        s
    }
}

/// What [`verify_with`] checks beyond the chain itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// A head hash recorded earlier that must still be present.
    pub head: Option<&'a str>,
    /// Check every signed head's signature; the trail must have at least one.
    pub public_key: Option<&'a VerifyingKey>,
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// Entry `seq` is not what was written (payload, columns or link).
    Altered { seq: i64, reason: String },
    /// Entries are missing: `expected` was due, `found` came next (or nothing, at the end).
    Missing { expected: i64, found: Option<i64> },
    /// The `--head` given is not in the chain.
    HeadNotFound { head: String, head_seq: Option<i64> },
    /// A public key was given but the trail holds no signed head.
    NoSignedHead,
    /// The database could not be read.
    Unreadable(String),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Altered { seq, reason } => write!(f, "entry {seq} was altered: {reason}"),
            Broken::Missing { expected, found: Some(found) } => {
                write!(f, "entries {expected}..{} are missing (next entry is {found})", found - 1)
            }
            Broken::Missing { expected, found: None } => write!(f, "entry {expected} and any after it are missing"),
            Broken::HeadNotFound { head, head_seq } => write!(
                f,
                "head {head} is not in the trail (the newest entries were removed, or the head is from another trail); current head is entry {}",
                head_seq.map_or_else(|| "none".to_owned(), |s| s.to_string())
            ),
            Broken::NoSignedHead => write!(f, "the trail holds no signed head, so it cannot be checked against truncation"),
            Broken::Unreadable(e) => write!(f, "the audit database cannot be read: {e}"),
        }
    }
}

/// Verifies the whole chain; `head` is a hash recorded earlier that must still be present.
pub fn verify<R: TrailReader + ?Sized>(conn: &R, head: Option<&str>) -> Result<Verified, Broken> {
    verify_with(
        conn,
        Options {
            head,
            public_key: None,
        },
    )
}

/// Verifies the whole chain with [`Options`].
pub fn verify_with<R: TrailReader + ?Sized>(
    conn: &R,
    opts: Options<'_>,
) -> Result<Verified, Broken> {
    let head = opts.head;
    let checkpoint = latest_checkpoint(conn)?;
    let (mut expected_seq, mut expected_prev) = match &checkpoint {
        Some((seq, hash)) => (seq + 1, hash.clone()),
        None => (1, GENESIS.to_owned()),
    };
    let mut report = Verified {
        entries: 0,
        first_seq: None,
        head_seq: None,
        head_hash: GENESIS.to_owned(),
        pruned_through: checkpoint.as_ref().map(|(s, _)| *s),
        signed_heads: 0,
        last_signed: None,
        signatures_checked: opts.public_key.is_some(),
    };
    let mut head_found = head.is_none();
    // The reader's callback can only fail with a read error: the first break found is kept
    // here, and the read stopped with a marker error that is then discarded.
    let mut broken: Option<Broken> = None;
    let mut check = |r: StoredEntry| -> Result<(), Broken> {
        let value = r.check_link(expected_seq, &expected_prev)?;
        let seq = r.seq;
        if r.kind == "signed_head" {
            if let Some(key) = opts.public_key {
                signing::check(key, &value, seq - 1, &r.prev_hash)
                    .map_err(|reason| Broken::Altered { seq, reason })?;
            }
            report.signed_heads += 1;
            report.last_signed = Some((seq, value["time"].as_str().unwrap_or("").to_owned()));
        }
        if head == Some(r.hash.as_str()) {
            head_found = true;
        }
        report.first_seq.get_or_insert(seq);
        report.entries += 1;
        report.head_seq = Some(seq);
        report.head_hash = r.hash.clone();
        expected_prev = r.hash;
        expected_seq += 1;
        Ok(())
    };
    let read = conn.each_stored(&mut |r| {
        check(r).map_err(|b| {
            broken = Some(b);
            super::AuditError::Open(String::new())
        })
    });
    if let Some(b) = broken {
        return Err(b);
    }
    read.map_err(unreadable)?;
    finish(report, checkpoint, &opts, head_found)
}

/// The checks that need the whole chain read: rows gone after a checkpoint, a signed head
/// required by a public key, the head an external system kept.
fn finish(
    report: Verified,
    checkpoint: Option<(i64, String)>,
    opts: &Options<'_>,
    head_found: bool,
) -> Result<Verified, Broken> {
    if let (Some((cp_seq, _)), None) = (&checkpoint, report.first_seq) {
        // A checkpoint is itself an entry, so an empty table after one means rows are gone.
        return Err(Broken::Missing {
            expected: cp_seq + 1,
            found: None,
        });
    }
    if opts.public_key.is_some() && report.entries > 0 && report.signed_heads == 0 {
        return Err(Broken::NoSignedHead);
    }
    if !head_found {
        return Err(Broken::HeadNotFound {
            head: opts.head.unwrap_or_default().to_owned(),
            head_seq: report.head_seq,
        });
    }
    Ok(report)
}

impl StoredEntry {
    /// Checks the row's place, link, hash and payload; returns the parsed payload.
    fn check_link(&self, expected_seq: i64, expected_prev: &str) -> Result<Value, Broken> {
        let seq = self.seq;
        if seq != expected_seq {
            return Err(if seq > expected_seq {
                Broken::Missing {
                    expected: expected_seq,
                    found: Some(seq),
                }
            } else {
                Broken::Altered {
                    seq,
                    reason: format!(
                        "sequence number {seq} is out of place (expected {expected_seq})"
                    ),
                }
            });
        }
        let altered = |reason: String| Broken::Altered { seq, reason };
        if self.prev_hash != expected_prev {
            return Err(altered(format!(
                "it does not link to the entry before it (prev_hash {}, expected {expected_prev})",
                self.prev_hash
            )));
        }
        if entry_hash(&self.prev_hash, &self.payload) != self.hash {
            return Err(altered("its payload does not match its hash".into()));
        }
        check_payload(&self.payload, seq, self).map_err(altered)
    }
}

fn check_payload(payload: &str, seq: i64, c: &StoredEntry) -> Result<Value, String> {
    let v: Value =
        serde_json::from_str(payload).map_err(|_| "its payload is not JSON".to_owned())?;
    if !is_canonical(payload, &v) {
        return Err("its payload is not in canonical form".into());
    }
    let field = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let checks: [(&str, bool); 6] = [
        ("seq", field("seq").as_i64() == Some(seq)),
        ("event_id", field("event_id").as_str() == Some(&c.event_id)),
        ("kind", field("kind").as_str() == Some(&c.kind)),
        ("method", field("method").as_str() == Some(&c.method)),
        (
            "solution_id",
            field("solution_id").as_i64() == c.solution_id,
        ),
        ("outcome", field("outcome").as_str() == c.outcome.as_deref()),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((name, _)) => Err(format!("its {name} column differs from the hashed payload")),
        None => Ok(v),
    }
}

/// A read error as the reader put it.
fn unreadable(e: super::AuditError) -> Broken {
    Broken::Unreadable(match e {
        super::AuditError::Open(m) => m,
        other => other.to_string(),
    })
}

/// `(pruned_through_seq, pruned_through_hash)` of the newest checkpoint, if any.
fn latest_checkpoint<R: TrailReader + ?Sized>(conn: &R) -> Result<Option<(i64, String)>, Broken> {
    let payload = match conn.latest_checkpoint() {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let v: Value = serde_json::from_str(&payload)
        .map_err(|e| Broken::Unreadable(format!("checkpoint: {e}")))?;
    match (
        v["pruned_through_seq"].as_i64(),
        v["pruned_through_hash"].as_str(),
    ) {
        (Some(seq), Some(hash)) => Ok(Some((seq, hash.to_owned()))),
        _ => Err(Broken::Unreadable(
            "a checkpoint entry lacks pruned_through_seq/hash".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_newest_checkpoint_is_found_through_its_index() {
        let mut c = rusqlite::Connection::open_in_memory().expect("db");
        super::super::migrate::apply(&mut c).expect("schema");
        let plan = crate::audit::query::query_plan(&c, crate::audit::query::LATEST_CHECKPOINT, [])
            .join("\n");
        assert!(
            plan.contains("USING INDEX audit_entries_checkpoint"),
            "{plan}"
        );
    }
}
