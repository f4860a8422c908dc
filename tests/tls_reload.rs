//! TLS on both sides and SIGHUP reload: the listener serves HTTPS from PEM files, a reload swaps
//! the certificate for new handshakes without dropping established connections, an invalid
//! config on reload keeps the running one, and the upstream client verifies the portal with an
//! extra CA file. Certificates come from a throw-away CA made with `openssl` per test.

mod support;

use b24_audit_proxy::body::ProxyBody;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::process::Command;
use support::*;

/// An HTTPS client that trusts only `ca`.
fn https_client(ca: &Path) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("cert")).expect("add");
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

async fn https_get(
    client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>,
    url: &str,
) -> Result<(StatusCode, bytes::Bytes), String> {
    let req = Request::get(url).body(ProxyBody::empty()).expect("request");
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

fn tls_extra(pki: &TestPki) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.cert.display(),
        pki.key.display()
    )
}

fn sighup(proxy: &TestProxy) {
    let pid = proxy.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_https_and_a_reload_swaps_the_certificate_for_new_connections() {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = make_pki(dir.path(), "first");
    let second = make_pki(dir.path(), "second");
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&first.cert, &live_cert).expect("copy");
    std::fs::copy(&first.key, &live_key).expect("copy");
    let live = TestPki {
        ca: first.ca.clone(),
        cert: live_cert.clone(),
        key: live_key.clone(),
    };
    let proxy = TestProxy::builder(sim.addr)
        .extra(&tls_extra(&live))
        .start();
    let base = format!("https://127.0.0.1:{}", proxy.proxy.port());

    let old_client = https_client(&first.ca);
    let (status, body) = https_get(
        &old_client,
        &format!("{base}/rest/{USER}/{SECRET}/crm.automatedsolution.get?id=238"),
    )
    .await
    .expect("https works");
    assert_eq!(status, StatusCode::OK, "{body:?}");
    // An audited call over TLS.
    let (status, _) = https_get(
        &old_client,
        &format!(
            "{base}/rest/{USER}/{SECRET}/crm.automatedsolution.update?id=238&fields[title]=tls"
        ),
    )
    .await
    .expect("update");
    assert_eq!(status, StatusCode::OK);
    assert!(
        https_get(
            &https_client(&second.ca),
            &format!("{base}/rest/{USER}/{SECRET}/profile")
        )
        .await
        .is_err(),
        "the second CA is not trusted yet"
    );

    std::fs::copy(&second.cert, &live_cert).expect("swap cert");
    std::fs::copy(&second.key, &live_key).expect("swap key");
    sighup(&proxy);
    eventually("the reload is logged", || {
        proxy.log().contains("Configuration reloaded")
    })
    .await;

    let (status, _) = https_get(
        &https_client(&second.ca),
        &format!("{base}/rest/{USER}/{SECRET}/profile"),
    )
    .await
    .expect("new handshakes get the new certificate");
    assert_eq!(status, StatusCode::OK);
    // The old client's pooled keep-alive connection was established before the reload: it
    // keeps working (nothing was dropped), although a new handshake would now fail for it.
    let (status, _) = https_get(&old_client, &format!("{base}/rest/{USER}/{SECRET}/profile"))
        .await
        .expect("the established connection survives the reload");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(proxy.export()[0]["outcome"], "applied");
}

#[tokio::test]
async fn an_invalid_config_on_reload_keeps_the_running_one() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let original = std::fs::read_to_string(&proxy.config).expect("config");
    let empty = r#"{"id":267,"fields":{"typeIds":[]}}"#;
    assert_eq!(
        post_json(&proxy.hook_url("crm.automatedsolution.update"), empty)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    std::fs::write(
        &proxy.config,
        format!("{original}\n[policy]\nshadow = true\nsahdow = 1\n"),
    )
    .expect("bad config");
    sighup(&proxy);
    eventually("the failed reload is logged", || {
        proxy.log().contains("Reload failed")
    })
    .await;
    assert!(proxy.log().contains("sahdow"), "the log names the bad key");
    assert_eq!(
        post_json(&proxy.hook_url("crm.automatedsolution.update"), empty)
            .await
            .status,
        StatusCode::FORBIDDEN,
        "the old policy is still enforced"
    );
    assert_eq!(
        proxy.metric("b24proxy_config_last_reload_successful").await,
        Some(0.0),
        "the failed reload is exported"
    );

    std::fs::write(
        &proxy.config,
        format!("{original}\n[policy]\nshadow = true\n"),
    )
    .expect("good config");
    sighup(&proxy);
    eventually("the reload is logged", || {
        proxy.log().contains("Configuration reloaded")
    })
    .await;
    assert_eq!(
        proxy.metric("b24proxy_config_last_reload_successful").await,
        Some(1.0)
    );
    let r = post_json(&proxy.hook_url("crm.automatedsolution.update"), empty).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "shadow mode now records and allows"
    );
    let last = proxy.export().pop().expect("event");
    assert_eq!(last["decision"], "would_deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_is_verified_with_the_extra_ca_file() {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path(), "portal");
    // A TLS "portal": a second proxy serving HTTPS in front of the simulator.
    let portal = TestProxy::builder(sim.addr).extra(&tls_extra(&pki)).start();
    let portal_url = format!("127.0.0.1:{}", portal.proxy.port());

    let url = format!("https://{portal_url}");
    let ca = format!("\"{}\"", pki.ca.display());
    let trusting = TestProxy::builder(sim.addr)
        .upstream_url(&url)
        .upstream_key("ca_file", &ca)
        .start();
    let ok = get(&trusting.hook_url("crm.deal.list")).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let update = post_json(
        &trusting.hook_url("crm.automatedsolution.update"),
        r#"{"id":238,"fields":{"title":"via tls"}}"#,
    )
    .await;
    assert_eq!(update.status, StatusCode::OK, "{:?}", update.body);

    let distrusting = TestProxy::builder(sim.addr).upstream_url(&url).start();
    let refused = get(&distrusting.hook_url("crm.deal.list")).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_GATEWAY,
        "an unknown CA is not trusted"
    );
}

#[test]
fn check_config_loads_the_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path(), "cc");
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n{tls}[upstream]\nurl = \"http://127.0.0.1:1\"\n[audit]\ndatabase = \"a.db\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base.replace("{tls}", &tls_extra(&pki))).expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mismatched = dir.path().join("bad.toml");
    std::fs::write(
        &mismatched,
        base.replace(
            "{tls}",
            &format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                pki.ca.display(),
                pki.key.display()
            ),
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&mismatched)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls_cert"));
}

/// `[admin] tls_cert`/`tls_key`: the admin listener serves HTTPS (and nothing in plain HTTP),
/// both listeners' certificate expiry is exported, and `healthcheck` reaches `/readyz` over
/// TLS with the token, trusting exactly the configured certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_https_and_healthcheck_uses_it() {
    let sim = sim().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(tmp.path(), "admin");
    let token = tmp.path().join("admin.token");
    std::fs::write(&token, "admin-token-for-tls\n").expect("token");
    let extra = format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{}",
        tls_extra(&pki),
        token.display(),
        tls_extra(&pki)
    );
    let proxy = TestProxy::builder(sim.addr).extra(&extra).start();
    let client = https_client(&pki.ca);

    let (status, body) = https_get(&client, &format!("https://{}/readyz", proxy.admin))
        .await
        .expect("admin over https");
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let plain = raw(
        proxy.admin,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&plain).starts_with("HTTP/1.1 200"),
        "plain HTTP must not be answered by a TLS listener"
    );

    let (_, metrics) = https_get(&client, &format!("https://{}/metrics", proxy.admin))
        .await
        .expect("scrape over https");
    let text = String::from_utf8_lossy(&metrics);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for listener in ["proxy", "admin"] {
        let expiry = metric_value(
            &text,
            &format!(
                "b24proxy_tls_certificate_expiry_timestamp_seconds{{listener=\"{listener}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("no expiry for {listener}: {text}"));
        // make_pki signs for two days.
        let days = (expiry - now) / 86_400.0;
        assert!((1.9..=2.1).contains(&days), "{listener}: {days} days");
    }

    // healthcheck needs the real port in the config it reads.
    let config = std::fs::read_to_string(&proxy.config).expect("config");
    let fixed = tmp.path().join("healthcheck.toml");
    std::fs::write(
        &fixed,
        config.replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"{}\"", proxy.admin),
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["healthcheck", "--config"])
        .arg(&fixed)
        .output()
        .expect("healthcheck runs");
    assert!(
        out.status.success(),
        "healthcheck over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pinned to the configured certificate: another one (the CA's) is refused.
    let other = tmp.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&fixed).expect("read").replacen(
            &format!("tls_cert = \"{}\"", pki.cert.display()),
            &format!("tls_cert = \"{}\"", pki.ca.display()),
            2,
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["healthcheck", "--config"])
        .arg(&other)
        .output()
        .expect("healthcheck runs");
    assert!(
        !out.status.success(),
        "a certificate other than the pinned one passed"
    );

    // SIGHUP reloads the admin certificate too.
    let next = make_pki(tmp.path(), "admin-next");
    std::fs::copy(&next.cert, &pki.cert).expect("new cert");
    std::fs::copy(&next.key, &pki.key).expect("new key");
    sighup(&proxy);
    let renewed = https_client(&next.ca);
    eventually_async(
        "the admin listener serves the new certificate",
        std::time::Duration::from_secs(10),
        || async {
            https_get(&renewed, &format!("https://{}/readyz", proxy.admin))
                .await
                .is_ok()
        },
    )
    .await;
    drop(proxy);
    sim.shutdown().await;
}
