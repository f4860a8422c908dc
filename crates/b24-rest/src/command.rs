//! One `batch` command string, split the way the portal splits it: PHP `parse_url`, whose path
//! is the method and whose query goes to `parse_str` (docs/protocol.md, Batch).
//!
//! `parse_url` is a URL parser, not a "method?query" splitter: before it looks for `?` it looks
//! for a scheme (`x:…`), a port (`name:80`), an authority (`//host`) and user and password, and it
//! replaces control characters in every part with `_`. A command on which it would find any of
//! those means something else to the portal than to a naive reader, so only the one shape real
//! clients send is accepted: a method name of letters, digits, `.`, `_` and `-`, then optionally
//! `?query`, then optionally `#fragment`. For that shape `parse_url` is fully determined (no `:`
//! or `/` can come before the first `?` except inside a fragment, which is refused when it holds a
//! `:`), so the reading below is exactly PHP's; every other command is refused, watched or not.

use std::borrow::Cow;
use std::fmt;

/// A command as the portal reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandParts<'a> {
    /// The method as spelled (the portal lower-cases it when it looks it up).
    pub method: &'a str,
    /// The query `parse_str` receives (control characters already turned into `_`), or `None`
    /// when there is none.
    pub query: Option<Cow<'a, str>>,
}

/// Why a command cannot be read one way only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// No method before `?`/`#` (the portal would look up a null method).
    NoMethod,
    /// The method part holds a character outside `[A-Za-z0-9._-]`: `parse_url` might find a
    /// scheme, port or authority in it, or the portal would never find such a method.
    OddMethod,
    /// A `:` in a fragment that no `?` precedes: `parse_url` reads it as a scheme or port.
    ColonInFragment,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommandError::NoMethod => "the command names no method",
            CommandError::OddMethod => {
                "the method name has characters other than letters, digits, '.', '_' and '-' (the portal's URL parser could read a scheme, host or port in it)"
            }
            CommandError::ColonInFragment => {
                "a ':' after '#' with no '?' before it makes the portal's URL parser read a scheme or port"
            }
        })
    }
}

impl std::error::Error for CommandError {}

/// Splits a command string as PHP `parse_url` does, or refuses it.
pub fn split(command: &str) -> Result<CommandParts<'_>, CommandError> {
    let (before_fragment, fragment) = match command.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (command, None),
    };
    let (method, query) = match before_fragment.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (before_fragment, None),
    };
    if method.is_empty() {
        return Err(CommandError::NoMethod);
    }
    if !method
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(CommandError::OddMethod);
    }
    if query.is_none() && fragment.is_some_and(|f| f.contains(':')) {
        return Err(CommandError::ColonInFragment);
    }
    Ok(CommandParts {
        method,
        query: query.map(replace_control_chars),
    })
}

/// `php_replace_controlchars_ex`: every byte `iscntrl` accepts in the C locale (0x00–0x1F and
/// 0x7F) becomes `_`.
fn replace_control_chars(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7F) {
        Cow::Owned(
            s.chars()
                .map(|c| if c < ' ' || c == '\x7F' { '_' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(c: &str) -> (String, Option<String>) {
        let p = split(c).expect(c);
        (p.method.to_owned(), p.query.map(Cow::into_owned))
    }

    /// Each row was checked against PHP 8.2's `parse_url` (`tests/php_portal_differential.rs`
    /// checks generated commands the same way).
    #[test]
    fn reads_like_parse_url() {
        assert_eq!(ok("m?id=5#&x=1"), ("m".into(), Some("id=5".into())));
        assert_eq!(ok("m#x?y"), ("m".into(), None));
        assert_eq!(ok("m?a=1?b=2"), ("m".into(), Some("a=1?b=2".into())));
        assert_eq!(ok("m"), ("m".into(), None));
        assert_eq!(ok("m?"), ("m".into(), Some(String::new())));
        assert_eq!(ok("m?x=1:2"), ("m".into(), Some("x=1:2".into())));
        assert_eq!(
            ok("m?id=5&a\u{1}b=1\u{7f}"),
            ("m".into(), Some("id=5&a_b=1_".into()))
        );
        assert_eq!(ok("m?q#a:80"), ("m".into(), Some("q".into())));
    }

    #[test]
    fn refuses_what_parse_url_reads_as_a_url() {
        for (c, e) in [
            ("a:12?x", CommandError::OddMethod),
            ("//host/m?x", CommandError::OddMethod),
            ("user:pw@h/m", CommandError::OddMethod),
            ("/crm.deal.list", CommandError::OddMethod),
            (" crm.deal.list", CommandError::OddMethod),
            ("m\u{0}x?y", CommandError::OddMethod),
            ("?id=5", CommandError::NoMethod),
            ("", CommandError::NoMethod),
            ("m#a:80", CommandError::ColonInFragment),
        ] {
            assert_eq!(split(c), Err(e), "{c:?}");
        }
    }
}
