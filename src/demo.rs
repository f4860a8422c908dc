//! `demo`: the portal simulator and the proxy in front of it, a few calls through the proxy (an
//! allowed title change, an allowed `typeIds` change, a refused `typeIds: []`), the resulting
//! audit trail as a table, and the URLs to try with curl. Runs until Ctrl-C.

use crate::audit::query;
use crate::body::ProxyBody;
use crate::config::Config;
use crate::server;
use anyhow::Context as _;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use portal_sim::SimOptions;
use std::net::SocketAddr;

/// The ports the README talks about; the demo falls back to free ones when they are taken.
const PROXY_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9090;

pub async fn run() -> anyhow::Result<()> {
    let opts = SimOptions::default();
    let hook = opts
        .webhooks
        .first()
        .map(|w| (w.user_id, w.secret.clone()))
        .context("the simulator has no webhook")?;
    let sim = portal_sim::spawn("127.0.0.1:0".parse()?, opts).await?;
    let dir = std::env::temp_dir().join(format!("b24-audit-proxy-demo-{}", std::process::id()));
    let (proxy_port, admin_port) = if port_free(PROXY_PORT) && port_free(ADMIN_PORT) {
        (PROXY_PORT, ADMIN_PORT)
    } else {
        (0, 0)
    };
    let config_text = format!(
        "[server]\nlisten = \"127.0.0.1:{proxy_port}\"\n\
         [upstream]\nurl = \"http://{}\"\n\
         [audit]\ndatabase = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n",
        sim.addr,
        dir.join("audit.db")
            .display()
            .to_string()
            .replace('\\', "/"),
    );
    let config = Config::parse(&config_text).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, &config_text)?;
    let running = server::start(&config).await?;
    let base = format!("http://{}/rest/{}/{}", running.proxy_addr, hook.0, hook.1);

    println!("b24-audit-proxy demo");
    println!("  portal simulator  http://{}", sim.addr);
    println!("  proxy             http://{}", running.proxy_addr);
    println!("  admin (metrics)   http://{}/metrics", running.admin_addr);
    println!("  audit timeline    http://{}/ui/", running.admin_addr);
    println!("  audit database    {}", config.audit.database);
    println!();

    send_calls(&base).await?;
    // The demo writes its own configuration, always with a SQLite file.
    if let Some(path) = config.audit.database.sqlite_path() {
        print_trail(path)?;
    }
    print_try_it(&base, hook, running.admin_addr, &config_path);
    println!("\nRunning until Ctrl-C.");
    server::shutdown_signal().await;
    running.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

/// The three calls of the demo, each printed with its verdict and audit event id.
async fn send_calls(base: &str) -> anyhow::Result<()> {
    let client: Client<HttpConnector, ProxyBody> =
        Client::builder(TokioExecutor::new()).build_http();
    let calls: [(&str, &str, &str, String); 3] = [
        (
            "rename workplace 238 (JSON body)",
            "crm.automatedsolution.update",
            "application/json",
            r#"{"id":238,"fields":{"title":"HR & Customer Success (EMEA)"}}"#.to_owned(),
        ),
        (
            "bind smart process 190 to workplace 238 (form body)",
            "crm.automatedsolution.update",
            "application/x-www-form-urlencoded",
            "id=238&fields[typeIds][]=14&fields[typeIds][]=158&fields[typeIds][]=190".to_owned(),
        ),
        (
            "unbind everything from workplace 267 (typeIds: [])",
            "crm.automatedsolution.update",
            "application/json",
            r#"{"id":267,"fields":{"typeIds":[]}}"#.to_owned(),
        ),
    ];
    for (what, method, ct, body) in calls {
        let req = Request::post(format!("{base}/{method}"))
            .header(http::header::CONTENT_TYPE, ct)
            .body(ProxyBody::bytes(body))?;
        let resp = client.request(req).await.context("calling the proxy")?;
        let status = resp.status();
        let event = resp
            .headers()
            .get("x-audit-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = resp.into_body().collect().await?.to_bytes();
        let verdict = if status == StatusCode::OK {
            "allowed"
        } else {
            "refused"
        };
        println!("{what}\n  → {status} {verdict}, audit event {event}");
        if status != StatusCode::OK {
            println!("    {}", String::from_utf8_lossy(&body));
        }
    }
    Ok(())
}

/// The audit trail the calls left, as the `audit list` table.
fn print_trail(database: &std::path::Path) -> anyhow::Result<()> {
    let conn = query::open_read_only(database)?;
    let mut events = Vec::new();
    query::for_each_event(&conn, &query::Filter::default(), |e| {
        events.push(e);
        Ok(())
    })?;
    println!("\nThe audit trail:\n");
    print!("{}", crate::audit::render::render_table(&events));
    Ok(())
}

/// The commands to try next against the running demo.
fn print_try_it(base: &str, hook: (u64, String), admin: SocketAddr, config_path: &std::path::Path) {
    println!(
        "\nTry it yourself (the simulator's webhook is user {}, secret {}):",
        hook.0, hook.1
    );
    println!("  curl -s '{base}/crm.automatedsolution.get?id=238'");
    println!(
        "  curl -s -H 'Content-Type: application/json' -d '{{\"id\":301,\"fields\":{{\"typeIds\":[]}}}}' '{base}/crm.automatedsolution.update'"
    );
    println!("  curl -s 'http://{admin}/metrics' | grep b24proxy_policy");
    println!(
        "  cargo run --release -- audit list --config {}    (also: audit show ID, audit verify, revert ID)",
        config_path.display()
    );
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
}
