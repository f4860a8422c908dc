//! The audit timeline web page, served by the admin listener under `/ui/`: one HTML, one CSS
//! and one JavaScript file from `src/ui/`, compiled into the binary with `include_str!` so the
//! page works offline and on a machine without any other files (no CDN, no build step).
//!
//! The files hold no data and are served without a token; everything the page shows it fetches
//! from `/v1/*` with the bearer token the user types in once (the browser keeps it in
//! `sessionStorage`). Responses carry a strict Content-Security-Policy — only same-origin
//! scripts, styles and fetches, no inline script, no framing — because workplace titles are
//! user-controlled text shown in the page, and `Cache-Control: no-cache` so a new binary's page
//! is picked up at once (revalidation is cheap: the files are small).

use crate::body::ProxyBody;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Same-origin everything; `img-src data:` only for the CSS's inline SVG icons; nothing may
/// frame the page (clickjacking of the "forget token" control and the like).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// True for the paths this module answers (`/ui` and everything under `/ui/`).
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The response for a `/ui` path, or `None` for a path under `/ui/` that is not one of the
/// files (the caller answers 404 the way the rest of the admin listener does).
pub fn serve(path: &str) -> Option<Response<ProxyBody>> {
    let (body, content_type) = match path {
        // Relative links in the page resolve against `/ui/`, so the bare path is sent there.
        "/ui" => return Some(redirect_to_index()),
        "/ui/" | "/ui/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(ProxyBody::bytes(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    common_headers(headers);
    Some(resp)
}

/// 308 keeps the method; only the admin listener ever redirects (the proxy listener never
/// answers 3xx).
fn redirect_to_index() -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let headers = resp.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    common_headers(headers);
    resp
}

fn common_headers(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The page's URLs name event ids; nothing else needs to learn them.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response<ProxyBody>, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn the_three_files_are_served_with_their_types_and_a_strict_policy() {
        for (path, ty) in [
            ("/ui/", "text/html"),
            ("/ui/index.html", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ] {
            let r = serve(path).unwrap_or_else(|| panic!("{path} is served"));
            assert_eq!(r.status(), StatusCode::OK);
            assert!(header(&r, header::CONTENT_TYPE).starts_with(ty), "{path}");
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
            let csp = header(&r, header::CONTENT_SECURITY_POLICY);
            assert!(csp.contains("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        }
        assert_eq!(
            serve("/ui").map(|r| r.status()),
            Some(StatusCode::PERMANENT_REDIRECT)
        );
        assert!(serve("/ui/other.js").is_none());
        assert!(is_ui_path("/ui") && is_ui_path("/ui/x") && !is_ui_path("/uix"));
    }

    #[test]
    fn the_page_loads_only_its_own_files_and_no_inline_script() {
        assert!(INDEX_HTML.contains(r#"<script src="app.js" defer></script>"#));
        assert!(INDEX_HTML.contains(r#"href="app.css""#));
        // An inline script would be blocked by the policy anyway; keep the page honest.
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        // Data reaches the DOM only as text: workplace titles are user-controlled.
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML"));
        assert!(!APP_JS.contains("eval(") && !APP_JS.contains("document.write"));
    }
}
