//! `b24-audit-proxy keys create|list|revoke|rotate`: what the command line does with proxy keys,
//! against the database and webhooks file the config names. Each command returns what it
//! prints; for `create` and `rotate` the last line is the path the integration uses, with the
//! key in it — the only time the key is shown.

use super::keys::{self, Issued, KeyRecord, Scope};
use super::Webhooks;
use crate::config::Config;
use crate::secrets::FingerprintKey;
use std::time::Duration;

/// One `keys` command.
#[derive(Debug, Clone)]
pub enum KeysCommand {
    Create {
        name: String,
        webhook: String,
        methods: Vec<String>,
        solutions: Vec<i64>,
        /// The `[[portals]]` name, required with several portals.
        portal: Option<String>,
        /// Policy rules it may override with a reason.
        may_override: Vec<String>,
    },
    List,
    Revoke {
        name: String,
    },
    Rotate {
        name: String,
        grace: Duration,
    },
}

fn broker_files(cfg: &Config) -> Result<(Webhooks, FingerprintKey), String> {
    let b = cfg
        .broker
        .as_ref()
        .ok_or("keys need a [broker] section with webhooks_file")?;
    let webhooks = Webhooks::load(&b.webhooks_file)?;
    let fkey = FingerprintKey::load_or_create(&cfg.audit.key_file)
        .map_err(|e| format!("audit.key_file {}: {e}", cfg.audit.key_file.display()))?;
    Ok((webhooks, fkey))
}

/// Runs `cmd`; the text to print.
pub fn run(cfg: &Config, cmd: KeysCommand) -> Result<String, String> {
    let (webhooks, fkey) = broker_files(cfg)?;
    let database = cfg.audit.database.sqlite_path().ok_or(
        "proxy keys are kept in a SQLite trail; [broker] is not available with PostgreSQL yet",
    )?;
    let mut conn = keys::open(database)?;
    let out = match cmd {
        KeysCommand::List => return Ok(table(&keys::list(&conn)?)),
        KeysCommand::Create {
            name,
            webhook,
            methods,
            solutions,
            portal,
            may_override,
        } => {
            let hook = webhooks.get(&webhook).ok_or_else(|| {
                format!(
                    "the webhooks file has no webhook named {webhook} (it has: {})",
                    webhooks.names().collect::<Vec<_>>().join(", ")
                )
            })?;
            let portal = portal_of(cfg, portal)?;
            let overridable = overridable_rules();
            if let Some(r) = may_override
                .iter()
                .find(|r| !overridable.contains(&r.as_str()))
            {
                return Err(format!(
                    "--may-override {r}: not a policy rule a key may override (one of: {})",
                    overridable.join(", ")
                ));
            }
            let scope = Scope {
                methods: methods.iter().map(|m| m.to_ascii_lowercase()).collect(),
                solutions,
                may_override,
            };
            let issued = keys::create(
                &mut conn,
                &fkey,
                &name,
                &webhook,
                &hook.user,
                portal.as_deref(),
                &scope,
            )?;
            issued_text("created", &issued)
        }
        KeysCommand::Revoke { name } => {
            let k = keys::revoke(&mut conn, &name)?;
            format!(
                "revoked {} (fingerprint {}): refused from the next request on",
                k.name, k.fingerprint
            )
        }
        KeysCommand::Rotate { name, grace } => {
            let issued = keys::rotate(&mut conn, &fkey, &name, grace)?;
            issued_text("rotated", &issued)
        }
    };
    keys::bump_generation(database)?;
    Ok(out)
}

/// The `[[portals]]` name a new key is for: required with several portals, one that exists.
fn portal_of(cfg: &Config, portal: Option<String>) -> Result<Option<String>, String> {
    if !cfg.by_host() {
        return match portal {
            Some(p) => Err(format!(
                "--portal {p}: the config serves one portal ([upstream]); leave --portal out"
            )),
            None => Ok(None),
        };
    }
    let names: Vec<&str> = cfg.portals.iter().map(|p| p.name.as_str()).collect();
    match portal {
        Some(p) if names.contains(&p.as_str()) => Ok(Some(p)),
        Some(p) => Err(format!(
            "no portal named {p} (the config has: {})",
            names.join(", ")
        )),
        None => Err(format!(
            "--portal is required with several portals (one of: {})",
            names.join(", ")
        )),
    }
}

/// The configurable policy rules: not the refusal of an unreadable call (nothing could be
/// executed as read), nor a key's own scope.
fn overridable_rules() -> Vec<&'static str> {
    use crate::policy::rules;
    rules::ALL
        .into_iter()
        .filter(|r| ![rules::UNINTERPRETABLE, rules::KEY_SCOPE].contains(r))
        .collect()
}

fn issued_text(what: &str, i: &Issued) -> String {
    let k = &i.record;
    let mut out = format!(
        "{what} key {} for webhook {} (user {}), fingerprint {}\n",
        k.name, k.webhook, k.user_id, k.fingerprint
    );
    if let Some(until) = &k.previous_until {
        out.push_str(&format!("the previous key stays valid until {until}\n"));
    }
    out.push_str("the key is shown once; the integration's webhook path:\n");
    out.push_str(&format!("/rest/{}/{}/", k.user_id, i.key));
    out
}

fn status(k: &KeyRecord) -> String {
    match (&k.revoked, &k.previous_until) {
        (Some(t), _) => format!("revoked {t}"),
        (None, Some(until)) if until.as_str() > crate::audit::now_rfc3339().as_str() => {
            format!("live (previous until {until})")
        }
        _ => "live".into(),
    }
}

fn table(list: &[KeyRecord]) -> String {
    if list.is_empty() {
        return "no proxy keys".into();
    }
    let join = |v: Vec<String>| {
        if v.is_empty() {
            "*".to_owned()
        } else {
            v.join(",")
        }
    };
    let rows: Vec<[String; 9]> = list
        .iter()
        .map(|k| {
            [
                k.name.clone(),
                format!("{} ({})", k.webhook, k.user_id),
                k.portal.clone().unwrap_or_else(|| "-".into()),
                join(k.scope.methods.clone()),
                join(k.scope.solutions.iter().map(i64::to_string).collect()),
                if k.scope.may_override.is_empty() {
                    "-".to_owned()
                } else {
                    k.scope.may_override.join(",")
                },
                k.fingerprint.clone(),
                k.created.clone(),
                status(k),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "WEBHOOK",
        "PORTAL",
        "METHODS",
        "WORKPLACES",
        "OVERRIDES",
        "FINGERPRINT",
        "CREATED",
        "STATUS",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}
