//! `[audit] database` as a PostgreSQL URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`
//! (`postgresql://` too), with an optional `?sslmode=disable|require|verify-full`. A value that
//! is not such a URL is a SQLite path (`config.rs`).
//!
//! The password is a secret: it is kept in [`Password`], whose `Debug` prints nothing of it,
//! and the URL is only ever shown by [`PgUrl::redacted`] (also its `Display` and `Debug`), so a
//! log line, an error or `{:?}` of the configuration cannot carry it.

use percent_encoding::percent_decode_str;
use std::fmt;

/// The default PostgreSQL port.
const DEFAULT_PORT: u16 = 5432;

/// How the connection to the database is protected (libpq's names and meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP: only for a database on loopback or a private link.
    Disable,
    /// TLS, without checking the server's certificate (libpq `require`).
    Require,
    /// TLS with the certificate checked against the trusted roots and the host name. The
    /// default: audit data and the password cross the network.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A password; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(s: String) -> Password {
        Password(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A parsed PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: String,
    pub password: Option<Password>,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: SslMode,
}

/// Whether `s` is meant as a PostgreSQL URL (and so must parse as one) rather than a path.
pub fn is_pg_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl PgUrl {
    /// Parses `s`. The error never repeats the input (it may hold a password).
    pub fn parse(s: &str) -> Result<PgUrl, String> {
        let rest = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|p| {
                s.get(..p.len())
                    .filter(|h| h.eq_ignore_ascii_case(p))
                    .map(|_| &s[p.len()..])
            })
            .ok_or("a PostgreSQL URL starts with postgres:// or postgresql://")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or("the URL names no database (postgres://USER@HOST:PORT/DB)")?;
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .ok_or("the URL names no user (postgres://USER@HOST:PORT/DB)")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        let user = decode(user, "user")?;
        if user.is_empty() {
            return Err("the URL's user is empty".into());
        }
        let password = password
            .map(|p| decode(p, "password").map(Password))
            .transpose()?;
        let (host, port) = host_port(hostport)?;
        let dbname = decode(path, "database name")?;
        if dbname.is_empty() || dbname.contains('/') {
            return Err("the URL's database name is empty or has a '/'".into());
        }
        let mut sslmode = SslMode::VerifyFull;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", "disable")) => sslmode = SslMode::Disable,
                Some(("sslmode", "require")) => sslmode = SslMode::Require,
                Some(("sslmode", "verify-full")) => sslmode = SslMode::VerifyFull,
                Some(("sslmode", _)) => {
                    return Err("sslmode is disable, require or verify-full".into())
                }
                _ => return Err(
                    "the only URL parameter understood is sslmode (disable, require, verify-full)"
                        .into(),
                ),
            }
        }
        Ok(PgUrl {
            user,
            password,
            host,
            port,
            dbname,
            sslmode,
        })
    }

    /// The URL with the password replaced by `***`: the only form ever shown.
    pub fn redacted(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}{}@{host}:{}/{}?sslmode={}",
            self.user,
            if self.password.is_some() { ":***" } else { "" },
            self.port,
            self.dbname,
            self.sslmode.as_str()
        )
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.redacted())
    }
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("the URL's {what} is not UTF-8 once percent-decoded"))
}

/// `HOST[:PORT]`, `[V6][:PORT]`.
fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("the URL's IPv6 host lacks its ']'")?;
        match after {
            "" => (h, None),
            p => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or("the URL's host is followed by something other than :PORT")?,
                ),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the URL's host is empty".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("the URL's port is not a number from 1 to 65535")?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_is_read_and_shown_without_its_password() {
        let u = PgUrl::parse("postgresql://audit:s%40cret@db.internal:6432/trail?sslmode=require")
            .expect("parse");
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port, u.dbname.as_str()),
            ("audit", "db.internal", 6432, "trail")
        );
        assert_eq!(u.password.as_ref().map(Password::expose), Some("s@cret"));
        assert_eq!(u.sslmode, SslMode::Require);
        for shown in [u.redacted(), u.to_string(), format!("{u:?}")] {
            assert!(
                !shown.contains("s@cret") && !shown.contains("s%40cret"),
                "{shown}"
            );
            assert!(shown.contains(":***@db.internal:6432/trail"), "{shown}");
        }
    }

    #[test]
    fn defaults_are_port_5432_and_verify_full() {
        let u = PgUrl::parse("postgres://audit@[::1]/trail").expect("parse");
        assert_eq!((u.host.as_str(), u.port), ("::1", 5432));
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert!(u.password.is_none());
        assert_eq!(
            u.redacted(),
            "postgres://audit@[::1]:5432/trail?sslmode=verify-full"
        );
    }

    #[test]
    fn malformed_urls_are_refused_without_repeating_them() {
        for bad in [
            "postgres://db:5432/trail",
            "postgres://u:hunter2@db:5432",
            "postgres://u:hunter2@db:99999/trail",
            "postgres://u:hunter2@:5432/trail",
            "postgres://u:hunter2@db/trail?sslmode=prefer",
            "postgres://u:hunter2@db/trail?application_name=x",
            "mysql://u:hunter2@db/trail",
        ] {
            let e = PgUrl::parse(bad).expect_err(bad);
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(is_pg_url("PostgreSQL://x@y/z"));
        assert!(!is_pg_url("data/audit.db"));
    }
}
