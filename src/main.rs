//! The `b24-audit-proxy` command line: parse arguments, load config, run one sub-command.
//! Nothing else lives here.

use b24_audit_proxy::audit::query;
use b24_audit_proxy::config::{Config, LogConfig, LogFormat, EXIT_CONFIG};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file without starting anything.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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
    /// Write every audited mutation as JSON Lines (design §6), oldest first.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Only events received at or after this RFC 3339 time (e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            init_logging(&cfg.log);
            run_async(serve(cfg))
        }
        Command::Audit {
            command: AuditCommand::Export { config, since },
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            export(&cfg, since)
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

fn config_failure(e: &b24_audit_proxy::config::ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG as u8)
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

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = b24_audit_proxy::start(&cfg).await?;
    // One machine-readable line, so scripts and tests started on port 0 learn the addresses.
    println!(
        "listening proxy={} admin={}",
        running.proxy_addr, running.admin_addr
    );
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, "Listening");
    b24_audit_proxy::server::shutdown_signal().await;
    tracing::info!("Shutting down: draining in-flight requests");
    running.shutdown().await;
    tracing::info!("Stopped");
    Ok(())
}

async fn portal_sim(listen: SocketAddr) -> anyhow::Result<()> {
    let handle = b24_audit_proxy::portal_sim::spawn(listen, Default::default()).await?;
    println!("portal simulator listening on http://{}", handle.addr);
    b24_audit_proxy::server::shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

fn export(cfg: &Config, since: Option<String>) -> ExitCode {
    let conn = match query::open_read_only(&cfg.audit.database) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = query::Filter {
        since,
        ..Default::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match query::export(&conn, &filter, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.init(),
    }
}
