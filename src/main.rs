//! The `b24-audit-proxy` command line: parse arguments, load config, run one sub-command.
//! Nothing else lives here.
//!
//! Every `--config` falls back to `$B24PROXY_CONFIG`. Exit codes: 0 success; 1 failure (for
//! `audit verify`: the chain does not verify); 66 (`EX_NOINPUT`) the audit database cannot be
//! read; 78 (`EX_CONFIG`) the configuration is invalid; 2 bad arguments (clap).

use b24_audit_proxy::audit::query;
use b24_audit_proxy::config::{Config, LogConfig, LogFormat, TrailDatabase, EXIT_CONFIG};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// `audit verify`: the database cannot be opened or read (`EX_NOINPUT` from sysexits.h).
const EXIT_UNREADABLE: u8 = 66;

#[derive(Parser)]
#[command(
    name = "b24-audit-proxy",
    version,
    about = "Audit-logging reverse proxy for a Bitrix24 portal's REST endpoint"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file without starting anything.
    CheckConfig {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Read the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the call that restores an event's before-state; send it with --apply.
    Revert {
        event_id: String,
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        /// Send it through the proxy (with the [revert] webhook_file service webhook).
        #[arg(long)]
        apply: bool,
        /// Revert even if the workplace changed since the event.
        #[arg(long)]
        force: bool,
    },
    /// Ask the running proxy's admin listener for /readyz: exit 0 when ready (container health
    /// checks; no shell or curl needed).
    Healthcheck {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Proxy keys ([broker]): what integrations hold instead of the portal's webhook secrets.
    Keys {
        #[command(subcommand)]
        command: KeysArgs,
    },
    /// Refused changes a second person may approve ([admin] approvers_file).
    Approvals {
        #[command(subcommand)]
        command: ApprovalsArgs,
    },
    /// Run the bundled portal simulator.
    PortalSim {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
    /// Start the simulator and the proxy in front of it, make a few calls, show the trail.
    Demo,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audited mutations, oldest first (a table, or JSON with --json).
    List {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one event, with a diff of title and bound smart processes.
    Show {
        id: String,
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Recompute the hash chain; exit 1 naming the first broken or missing entry, 66 when the
    /// database cannot be read.
    Verify {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        /// A head hash recorded earlier (logs, /v1/chain/head) that must still be in the trail.
        #[arg(long)]
        head: Option<String>,
        /// Check every signed head against this Ed25519 public key (SPKI PEM).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Write every audited mutation as JSON Lines (docs/architecture.md, Contracts), oldest first.
    Export {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        /// Only events received at or after this date or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events received (entries written) before this date or RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// The raw chain entries (seq, prev_hash, hash, payload), for scripts/verify-trail.
        #[arg(long)]
        entries: bool,
        /// json (the trail's event form) or ocsf (OCSF API Activity, class 6003).
        #[arg(long, default_value = "json")]
        format: String,
        /// Keep running, writing new events as they are committed, until SIGINT/SIGTERM.
        #[arg(long)]
        follow: bool,
        /// How often --follow polls the database (at most 60s).
        #[arg(long, default_value = "1s")]
        poll_interval: String,
    },
    /// Copy the trail with SQLite's online backup API (while the proxy serves) and verify it.
    Backup {
        #[arg(long)]
        config: PathBuf,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        to: PathBuf,
        /// Also check the copy's signed heads against this public key.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Generate an Ed25519 key pair for [audit] signing_key_file: FILE (0600) and FILE.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove entries written before DATE, keeping the chain verifiable (a checkpoint entry).
    Prune {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        before: String,
    },
}

#[derive(Subcommand)]
enum KeysArgs {
    /// Make a key for a webhook of the webhooks file; the last line printed is the path the
    /// integration uses (the key is shown this once).
    Create {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// The webhook's name in [broker] webhooks_file.
        #[arg(long)]
        webhook: String,
        /// Methods the key may call (globs, e.g. crm.deal.*); default every method.
        #[arg(long, value_delimiter = ',')]
        methods: Vec<String>,
        /// Workplaces the key may change; default every workplace.
        #[arg(long, value_delimiter = ',')]
        solutions: Vec<i64>,
        /// The [[portals]] name the key is for (required with several portals).
        #[arg(long)]
        portal: Option<String>,
        /// Policy rules the key may override by sending X-Audit-Override-Reason: TEXT.
        #[arg(long, value_delimiter = ',')]
        may_override: Vec<String>,
    },
    /// Every key, live and revoked, with its scope and fingerprint (never the key).
    List {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Refuse a key from the next request on.
    Revoke {
        name: String,
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Give a key a new value; the old one keeps working for --grace (default: not at all).
    Rotate {
        name: String,
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        #[arg(long, default_value = "0s")]
        grace: String,
    },
}

#[derive(Subcommand)]
enum ApprovalsArgs {
    /// Changes refused by policy within [admin] approval_ttl, newest first, with their state.
    List {
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// One event and its approval.
    Show {
        id: String,
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Have the running proxy carry a refused change out (POST /v1/events/ID/approve).
    Approve {
        id: String,
        #[arg(long, env = "B24PROXY_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        reason: String,
        /// Carry it out although the workplace changed since the refusal.
        #[arg(long)]
        force: bool,
        /// A file holding the approver's token.
        #[arg(long)]
        token_file: PathBuf,
    },
}

#[derive(clap::Args)]
struct FilterArgs {
    /// Only this workplace.
    #[arg(long)]
    solution: Option<i64>,
    /// Only events at or after this date or RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this date or RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// applied, rejected_by_portal, denied, unknown, failed or pending.
    #[arg(long)]
    outcome: Option<String>,
    /// A user id or a credential fingerprint.
    #[arg(long)]
    caller: Option<String>,
    #[arg(long)]
    limit: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(cfg) => match b24_audit_proxy::server::check_files(&cfg) {
                Ok(()) => {
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("config: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            },
            Err(e) => config_failure(&e),
        },
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            init_logging(&cfg.log);
            run_async(serve(cfg, config))
        }
        Command::Healthcheck { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            match b24_audit_proxy::healthcheck::check(&cfg) {
                Ok(body) => {
                    println!("ready: {body}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("not ready: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit { command } => audit(command),
        Command::Keys { command } => keys(command),
        Command::Approvals { command } => approvals(command),
        Command::Revert {
            event_id,
            config,
            apply,
            force,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            revert(&cfg, &event_id, apply, force)
        }
        Command::PortalSim { listen } => {
            init_logging(&LogConfig {
                format: LogFormat::Human,
                level: "info".into(),
            });
            run_async(portal_sim(listen))
        }
        Command::Demo => {
            init_logging(&LogConfig {
                format: LogFormat::Human,
                level: "error".into(),
            });
            run_async(b24_audit_proxy::demo::run())
        }
    }
}

fn keys(args: KeysArgs) -> ExitCode {
    use b24_audit_proxy::broker::cli::KeysCommand;
    let (config, command) = match args {
        KeysArgs::Create {
            config,
            name,
            webhook,
            methods,
            solutions,
            portal,
            may_override,
        } => (
            config,
            KeysCommand::Create {
                name,
                webhook,
                methods,
                solutions,
                portal,
                may_override,
            },
        ),
        KeysArgs::List { config } => (config, KeysCommand::List),
        KeysArgs::Revoke { name, config } => (config, KeysCommand::Revoke { name }),
        KeysArgs::Rotate {
            name,
            config,
            grace,
        } => match b24_audit_proxy::config::parse_duration(&grace) {
            Some(grace) => (config, KeysCommand::Rotate { name, grace }),
            None => {
                eprintln!("error: --grace {grace:?} is not a duration like 10m or 1h");
                return ExitCode::from(2);
            }
        },
    };
    print_outcome(&config, |cfg| {
        b24_audit_proxy::broker::cli::run(cfg, command)
    })
}

fn approvals(args: ApprovalsArgs) -> ExitCode {
    use b24_audit_proxy::approvals::cli::ApprovalsCommand;
    let (config, command) = match args {
        ApprovalsArgs::List { config } => (config, ApprovalsCommand::List),
        ApprovalsArgs::Show { id, config } => (config, ApprovalsCommand::Show { id }),
        ApprovalsArgs::Approve {
            id,
            config,
            reason,
            force,
            token_file,
        } => (
            config,
            ApprovalsCommand::Approve {
                id,
                reason,
                force,
                token_file,
            },
        ),
    };
    print_outcome(&config, |cfg| {
        b24_audit_proxy::approvals::cli::run(cfg, command)
    })
}

/// Loads the config at `config`, runs `f` with it, prints what it returns (stdout) or why it
/// failed (stderr, exit 1).
fn print_outcome(
    config: &std::path::Path,
    f: impl FnOnce(&Config) -> Result<String, String>,
) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return config_failure(&e),
    };
    match f(&cfg) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(e: &b24_audit_proxy::config::ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG)
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM that arrives as soon as the listening line is printed
    // must drain, not kill.
    let stop = b24_audit_proxy::server::shutdown_signal();
    let mut hangups = b24_audit_proxy::server::Hangups::new();
    let running = b24_audit_proxy::start(&cfg).await?;
    // One machine-readable line, so scripts and tests started on port 0 learn the addresses.
    println!(
        "listening proxy={} admin={}",
        running.proxy_addr, running.admin_addr
    );
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, tls = cfg.server.tls.is_some(), "Listening");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangups.next() => match running.reload(&path) {
                Ok(()) => tracing::info!("Configuration reloaded (policy, TLS certificate)"),
                Err(e) => tracing::error!(error = %e, "Reload failed; the running configuration is unchanged"),
            },
        }
    }
    tracing::info!("Shutting down: draining in-flight requests");
    running.shutdown().await;
    tracing::info!("Stopped");
    Ok(())
}

async fn portal_sim(listen: SocketAddr) -> anyhow::Result<()> {
    let handle = portal_sim::spawn(listen, Default::default()).await?;
    println!("portal simulator listening on http://{}", handle.addr);
    b24_audit_proxy::server::shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

fn audit(command: AuditCommand) -> ExitCode {
    let config = match &command {
        AuditCommand::Keygen { out } => return keygen(out),
        AuditCommand::List { config, .. }
        | AuditCommand::Show { config, .. }
        | AuditCommand::Verify { config, .. }
        | AuditCommand::Export { config, .. }
        | AuditCommand::Backup { config, .. }
        | AuditCommand::Prune { config, .. } => config.clone(),
    };
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => return config_failure(&e),
    };
    match run_audit(&cfg, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn time_arg(v: Option<String>) -> Result<Option<String>, String> {
    v.map(|t| b24_audit_proxy::audit::parse_time_arg(&t))
        .transpose()
}

fn run_audit(cfg: &Config, command: AuditCommand) -> Result<ExitCode, String> {
    let db = &cfg.audit.database;
    match command {
        AuditCommand::List { filter, json, .. } => audit_list(db, filter, json),
        AuditCommand::Show { id, .. } => audit_show(db, &id),
        AuditCommand::Verify {
            head, public_key, ..
        } => audit_verify(db, head.as_deref(), public_key.as_deref()),
        AuditCommand::Export {
            since,
            until,
            entries,
            format,
            follow,
            poll_interval,
            ..
        } => {
            let follow = follow.then_some(poll_interval);
            let opts = export_options(since, until, entries, &format, follow.as_deref())?;
            export_until_signal(open(db)?, opts)
        }
        AuditCommand::Backup { to, public_key, .. } => {
            backup(sqlite_only(db, "backup")?, &to, public_key.as_deref())
        }
        AuditCommand::Keygen { out } => Ok(keygen(&out)),
        AuditCommand::Prune { before, .. } => audit_prune(db, &before),
    }
}

/// A reader of the configured trail (SQLite or PostgreSQL).
fn open(db: &TrailDatabase) -> Result<Box<dyn query::TrailReader>, String> {
    query::open_reader(db).map_err(|e| e.to_string())
}

/// The SQLite file of commands that work on one (`backup`).
fn sqlite_only<'a>(db: &'a TrailDatabase, what: &str) -> Result<&'a std::path::Path, String> {
    db.sqlite_path().ok_or_else(|| {
        format!(
            "audit {what} works on a SQLite trail; audit.database is PostgreSQL ({db}): back it up \
             with pg_dump or pg_basebackup, then run audit verify on the restored database"
        )
    })
}

/// `audit list`: the table (or JSON) of matching events, then the whole chain re-verified.
/// Events are written as they are read, so memory does not grow with the trail.
fn audit_list(db: &TrailDatabase, filter: FilterArgs, json: bool) -> Result<ExitCode, String> {
    use b24_audit_proxy::audit::{render, verify, AuditError};
    use std::io::Write as _;
    let f = query::Filter {
        since: time_arg(filter.since)?,
        until: time_arg(filter.until)?,
        solution_id: filter.solution,
        outcome: filter.outcome,
        caller: filter.caller,
        limit: filter.limit,
        ..Default::default()
    };
    let conn = open(db)?;
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let write_err = |e: std::io::Error| AuditError::Open(format!("write: {e}"));
    if json {
        let mut w = render::JsonArrayWriter::new(out);
        query::for_each_event(&*conn, &f, |e| w.push(&e).map_err(write_err))
            .map_err(|e| e.to_string())?;
        let mut out = w.finish().map_err(|e| e.to_string())?;
        writeln!(out)
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut w = render::TableWriter::new(out);
    query::for_each_event(&*conn, &f, |e| w.push(&e).map_err(write_err))
        .map_err(|e| e.to_string())?;
    let mut out = w.finish().map_err(|e| e.to_string())?;
    // The same command proves the rows untouched: the whole chain is re-verified.
    let (line, code) = match verify::verify(&*conn, None) {
        Ok(v) => (
            format!(
                "\nchain: ok, {} entries verify, head {} (entry {})",
                v.entries,
                v.head_hash,
                v.head_seq.unwrap_or(0)
            ),
            ExitCode::SUCCESS,
        ),
        Err(e) => (format!("\nchain: FAILED: {e}"), ExitCode::FAILURE),
    };
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    Ok(code)
}

/// `audit show`: one event with its diff, chain entries, verification and revert line.
fn audit_show(db: &TrailDatabase, id: &str) -> Result<ExitCode, String> {
    use b24_audit_proxy::audit::{render, verify};
    let conn = open(db)?;
    let Some(event) = query::event(&*conn, id).map_err(|e| e.to_string())? else {
        return Err(format!("no event {id}"));
    };
    let entries = query::entries_of(&*conn, id).map_err(|e| e.to_string())?;
    let verified = match verify::verify(&*conn, entries.last().map(|e| e.hash.as_str())) {
        Ok(v) => format!(
            "ok: the chain verifies through entry {}",
            v.head_seq.unwrap_or(0)
        ),
        Err(e) => format!("FAILED: {e}"),
    };
    print!("{}", render::render_event(&event, &entries, &verified));
    match b24_audit_proxy::revert::plan(&event) {
        Ok(_) => println!(
            "\nrevert        b24-audit-proxy revert {} --config FILE [--apply]",
            event.id
        ),
        Err(why) => println!("\nrevert        not possible: {why}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit verify`: 0 verified, 1 broken, `EXIT_UNREADABLE` when the trail cannot be read.
fn audit_verify(
    db: &TrailDatabase,
    head: Option<&str>,
    public_key: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    use b24_audit_proxy::audit::{signing, verify};
    let key = public_key.map(signing::load_public_key).transpose()?;
    let opts = verify::Options {
        head,
        public_key: key.as_ref(),
    };
    match query::open_reader(db)
        .map_err(|e| verify::Broken::Unreadable(e.to_string()))
        .and_then(|conn| verify::verify_with(&*conn, opts))
    {
        Ok(v) => {
            println!("ok: {}", v.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ verify::Broken::Unreadable(_)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_UNREADABLE))
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit prune --before`, on either backend.
fn audit_prune(db: &TrailDatabase, before: &str) -> Result<ExitCode, String> {
    use b24_audit_proxy::audit::{pg_prune, prune};
    let before = b24_audit_proxy::audit::parse_time_arg(before)?;
    let p = match db {
        TrailDatabase::Sqlite(path) => prune::prune(path, &before),
        TrailDatabase::Postgres(trail) => pg_prune::prune(trail, &before),
    }
    .map_err(|e| e.to_string())?;
    match p.through_seq {
        Some(through) => println!(
            "pruned {} entries (through entry {through}); checkpoint is entry {}",
            p.removed,
            p.checkpoint_seq.unwrap_or(0)
        ),
        None => println!("nothing to prune before {before}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn export_options(
    since: Option<String>,
    until: Option<String>,
    entries: bool,
    format: &str,
    poll_interval: Option<&str>,
) -> Result<b24_audit_proxy::audit::export::Options, String> {
    use b24_audit_proxy::audit::export;
    Ok(export::Options {
        format: match format {
            "json" => export::Format::Json,
            "ocsf" => export::Format::Ocsf,
            other => return Err(format!("--format is json or ocsf, not \"{other}\"")),
        },
        entries,
        since: time_arg(since)?,
        until: time_arg(until)?,
        follow: poll_interval
            .map(|p| {
                b24_audit_proxy::config::parse_duration(p)
                    .filter(|d| !d.is_zero() && *d <= export::MAX_POLL)
                    .ok_or("--poll-interval is a duration from 1ms to 60s, like 500ms")
            })
            .transpose()?,
    })
}

/// `audit backup`: exit 0 with the copy's verification, 1 when the copy does not verify.
fn backup(
    db: &std::path::Path,
    to: &std::path::Path,
    public_key: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    use b24_audit_proxy::audit::{backup, signing, verify};
    let key = public_key.map(signing::load_public_key).transpose()?;
    let opts = verify::Options {
        head: None,
        public_key: key.as_ref(),
    };
    match backup::backup(db, to, opts) {
        Ok(v) => {
            println!("backup {}: ok: {}", to.display(), v.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(backup::BackupError::NotVerified(e)) => {
            println!("FAILED: the backup does not verify, nothing was written: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Runs an export; with --follow, until SIGINT/SIGTERM raise the stop flag.
fn export_until_signal(
    conn: Box<dyn query::TrailReader>,
    opts: b24_audit_proxy::audit::export::Options,
) -> Result<ExitCode, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    if opts.follow.is_some() {
        let flag = stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        // Handlers are installed before the first poll, so an early signal stops, not kills.
        let signal = {
            let _entered = rt.enter();
            b24_audit_proxy::server::shutdown_signal()
        };
        std::thread::spawn(move || {
            rt.block_on(signal);
            flag.store(true, Ordering::Relaxed);
        });
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    b24_audit_proxy::audit::export::run(&*conn, &opts, &mut out, &stop)
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn keygen(out: &std::path::Path) -> ExitCode {
    match b24_audit_proxy::audit::signing::generate(out) {
        Ok(g) => {
            println!(
                "private key {} (mode 0600): set [audit] signing_key_file to it",
                g.private.display()
            );
            println!(
                "public key  {} (key id {}): give it to auditors (audit verify --public-key, scripts/verify-trail --public-key)",
                g.public.display(),
                g.key_id
            );
            print!("{}", g.public_pem);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn revert(cfg: &Config, event_id: &str, apply: bool, force: bool) -> ExitCode {
    let found = query::open_reader(&cfg.audit.database).and_then(|c| query::event(&*c, event_id));
    let event = match found {
        Ok(Some(e)) => e,
        Ok(None) => {
            eprintln!("error: no event {event_id}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = match b24_audit_proxy::revert::plan(&event) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", b24_audit_proxy::revert::describe(&plan));
    if !apply {
        println!("\n(not sent: add --apply to send it through the proxy)");
        return ExitCode::SUCCESS;
    }
    run_async(async {
        let answer = b24_audit_proxy::revert::apply(cfg, &event, &plan, force).await?;
        println!("\napplied: {answer}");
        Ok(())
    })
}

/// `RUST_LOG`, when set, overrides `[log] level` (one-off debugging without editing the file);
/// an invalid one is reported and the configured level used.
fn init_logging(cfg: &LogConfig) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| match tracing_subscriber::EnvFilter::try_new(&v) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("RUST_LOG ignored ({e}); using [log] level {:?}", cfg.level);
                None
            }
        });
    let filter = from_env.unwrap_or_else(|| {
        tracing_subscriber::EnvFilter::try_new(&cfg.level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    });
    // A log destination that cannot be written (a full disk) must never take a request down:
    // tracing-subscriber would otherwise report it with a panicking eprintln!.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.init(),
    }
}
