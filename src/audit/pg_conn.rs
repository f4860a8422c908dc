//! Connecting to the PostgreSQL trail: the blocking `postgres` client, with TLS through rustls
//! (ring) as `sslmode` asks, and the password from the URL or `[audit] password_file`.
//!
//! The blocking client runs a small tokio runtime of its own, so it must never be used (nor
//! dropped) on a thread that is inside a tokio runtime: the writer thread, blocking tasks
//! (`spawn_blocking`) and the CLI use it; async code does not.
//!
//! Errors name the database by its redacted URL and the password file by its path; neither
//! the password nor the file's content is ever part of one.

use super::pg_url::SslMode;
use super::AuditError;
use crate::config::PgTrail;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection attempt may take before the trail is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection to the trail's database.
pub fn connect(trail: &PgTrail, application: &str) -> Result<postgres::Client, AuditError> {
    let url = &trail.url;
    let fail = |e: String| AuditError::Open(format!("{url}: {e}"));
    let cfg = postgres::Config::from(config(trail, application)?);
    let client = match url.sslmode {
        SslMode::Disable => cfg.connect(postgres::NoTls),
        mode => cfg.connect(tls(mode).map_err(fail)?),
    };
    client.map_err(|e| fail(describe(&e)))
}

/// The connection settings of the trail's database, for the blocking client above and the
/// async one (`pg_locks.rs`): host, user, password, `sslmode` (`require` unless `disable`, the
/// certificate then checked or not by [`tls`]).
pub fn config(trail: &PgTrail, application: &str) -> Result<tokio_postgres::Config, AuditError> {
    let url = &trail.url;
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(&url.user)
        .host(&url.host)
        .port(url.port)
        .dbname(&url.dbname)
        .application_name(application)
        .connect_timeout(CONNECT_TIMEOUT);
    match (&url.password, &trail.password_file) {
        (Some(p), _) => {
            cfg.password(p.expose());
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                AuditError::Open(format!("audit.password_file {}: {e}", path.display()))
            })?;
            let password = text.trim();
            if password.is_empty() {
                return Err(AuditError::Open(format!(
                    "audit.password_file {}: the file is empty",
                    path.display()
                )));
            }
            cfg.password(password);
        }
        (None, None) => {}
    }
    cfg.ssl_mode(match url.sslmode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok(cfg)
}

/// A driver error in one line: its database message (which carries no parameters), or its
/// kind followed by its causes (an I/O error, a TLS handshake's reason).
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The TLS connector for `require` (encrypted, certificate not checked: libpq's meaning) or
/// `verify-full` (the webpki and system roots, and the host name).
pub fn tls(mode: SslMode) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let config = match mode {
        SslMode::VerifyFull => crate::tls::client_config(None)?,
        _ => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked { provider }))
                .with_no_client_auth()
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `sslmode=require`: any certificate is accepted, but the handshake's signatures are still
/// checked, so the session is encrypted to whoever holds that certificate's key.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs `f` on a thread of its own when called from inside a tokio runtime (where the blocking
/// client would panic), else right here.
pub fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::Builder::new()
        .name("audit-pg-open".into())
        .spawn(f)
        .map_err(|e| AuditError::Open(format!("cannot start a thread: {e}")))?
        .join()
        .map_err(|_| AuditError::Open("the PostgreSQL trail's opening thread panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::pg_url::PgUrl;

    #[test]
    fn an_unreadable_password_file_is_named_and_nothing_is_sent() {
        let trail = PgTrail {
            url: PgUrl::parse("postgres://audit@127.0.0.1:1/trail?sslmode=disable").expect("url"),
            password_file: Some("/nonexistent/pw".into()),
            replica: Default::default(),
        };
        let Err(e) = connect(&trail, "test") else {
            panic!("connected without a password file");
        };
        let e = e.to_string();
        assert!(e.contains("audit.password_file /nonexistent/pw"), "{e}");
    }

    #[test]
    fn a_refused_connection_names_the_url_without_its_password() {
        let trail = PgTrail {
            // Port 1 on loopback: nothing listens there.
            url: PgUrl::parse("postgres://audit:hunter2@127.0.0.1:1/trail?sslmode=disable")
                .expect("url"),
            password_file: None,
            replica: Default::default(),
        };
        let Err(e) = connect(&trail, "test") else {
            panic!("connected to a closed port");
        };
        let e = e.to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("postgres://audit:***@127.0.0.1:1/trail"), "{e}");
    }
}
