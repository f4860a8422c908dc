//! The method table: which REST methods the simulated portal has, what a method returns, and
//! how a method failure looks. One file per method family under `methods/`.
//!
//! `batch` is not in this table: it needs the state lock per command, so `dispatch.rs` runs it
//! through `batch.rs` and calls back into [`call`] for each command. Methods never see
//! credentials or `start` as parameters; `dispatch.rs` takes those out first.

mod automated_solution;
mod crm_deal;
mod im;
mod list_query;
mod user;

use super::auth::Caller;
use super::state::State;
use b24_rest::php::{Array, Value};
use std::collections::HashSet;

/// What the portal's list methods return per page.
pub const PAGE_SIZE: usize = 50;

/// A successful method result. `total`/`next` are set by list methods only.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodOk {
    pub result: serde_json::Value,
    pub total: Option<i64>,
    pub next: Option<i64>,
}

impl MethodOk {
    pub fn result(result: serde_json::Value) -> MethodOk {
        MethodOk {
            result,
            total: None,
            next: None,
        }
    }
}

/// An error code: the portal's are strings, except the engine binder's numeric `100`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Text(String),
    Number(i64),
}

/// A method failure: HTTP status plus the `{error, error_description}` envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    pub status: u16,
    pub code: ErrorCode,
    pub description: String,
}

impl MethodError {
    pub fn new(status: u16, code: &str, description: impl Into<String>) -> MethodError {
        MethodError {
            status,
            code: ErrorCode::Text(code.to_owned()),
            description: description.into(),
        }
    }

    /// A controller error: the REST layer answers every one of them with HTTP 400 (§5.1).
    pub fn controller(code: &str, description: impl Into<String>) -> MethodError {
        MethodError::new(400, code, description)
    }

    /// The engine binder's `100` (missing or mistyped action parameter).
    pub fn binder(description: String) -> MethodError {
        MethodError {
            status: 400,
            code: ErrorCode::Number(100),
            description,
        }
    }

    pub fn method_not_found() -> MethodError {
        MethodError::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    }

    pub fn is_method_not_found(&self) -> bool {
        self.code == ErrorCode::Text("ERROR_METHOD_NOT_FOUND".to_owned())
    }

    /// The envelope body.
    pub fn to_json(&self) -> serde_json::Value {
        let code = match &self.code {
            ErrorCode::Text(s) => serde_json::Value::from(s.as_str()),
            ErrorCode::Number(n) => serde_json::Value::from(*n),
        };
        serde_json::json!({ "error": code, "error_description": self.description })
    }
}

pub type Outcome = Result<MethodOk, MethodError>;

/// The upper-case field names the portal's key converter has seen converted to camelCase during
/// this request (its `CaseCache`). Such a name is then accepted as is in `fields`, which is what
/// makes `TYPE_IDS` work beside `typeIds` in an update (docs/protocol.md, Workplace updates). It
/// lives for one HTTP request, so the commands of one batch share it, as they share a PHP process.
#[derive(Debug, Default)]
pub struct CaseCache {
    known_upper: HashSet<String>,
}

impl CaseCache {
    pub fn learn(&mut self, names: &[&str]) {
        self.known_upper
            .extend(names.iter().map(|s| (*s).to_owned()));
    }

    pub fn knows(&self, upper: &str) -> bool {
        self.known_upper.contains(upper)
    }
}

/// Per-request execution context.
#[derive(Debug)]
pub struct Ctx {
    pub caller: Caller,
    pub case_cache: CaseCache,
}

/// Runs one method (not `batch`) with the state locked by the caller.
pub fn call(
    state: &mut State,
    ctx: &mut Ctx,
    method: &str,
    params: &Array,
    start: Option<&Value>,
) -> Outcome {
    use automated_solution as s;
    match method {
        "crm.automatedsolution.add" => s::add(state, ctx, params),
        "crm.automatedsolution.get" => s::get(state, ctx, params),
        "crm.automatedsolution.list" => s::list(state, ctx, params, start),
        "crm.automatedsolution.update" => s::update(state, ctx, params),
        "crm.automatedsolution.delete" => s::delete(state, params),
        "crm.automatedsolution.fields" => Ok(s::fields(ctx)),
        "user.current" => Ok(user::current(ctx.caller)),
        "profile" => Ok(user::profile(ctx.caller)),
        "crm.deal.list" => Ok(crm_deal::list(state, params, start)),
        "crm.deal.get" => crm_deal::get(state, params),
        "im.notify" => {
            state.notifications += 1;
            im::notify(params, state.notifications)
        }
        _ => Err(MethodError::method_not_found()),
    }
}

/// The page a list call asks for: the offset from `start` (PHP `(int)`, negative = 0), and
/// whether to count at all (`start=-1` skips the count, so no `total`/`next`).
pub fn paging(start: Option<&Value>) -> (usize, bool) {
    let n = start.and_then(Value::php_int).unwrap_or(0);
    (usize::try_from(n).unwrap_or(0), n != -1)
}

/// Cuts one page out of `rows` and fills in `total`/`next` as the portal does.
pub fn page<T>(rows: Vec<T>, start: Option<&Value>) -> (Vec<T>, Option<i64>, Option<i64>) {
    let (offset, count) = paging(start);
    let total = rows.len();
    let page: Vec<T> = rows.into_iter().skip(offset).take(PAGE_SIZE).collect();
    if !count {
        return (page, None, None);
    }
    let next = (offset + PAGE_SIZE < total).then(|| (offset + PAGE_SIZE) as i64);
    (page, Some(total as i64), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_follows_start() {
        let rows: Vec<i32> = (0..120).collect();
        let (p, total, next) = page(rows.clone(), None);
        assert_eq!((p.len(), total, next), (50, Some(120), Some(50)));
        let s = Value::Str("100".into());
        let (p, total, next) = page(rows.clone(), Some(&s));
        assert_eq!((p.len(), total, next), (20, Some(120), None));
        let (p, total, next) = page(rows, Some(&Value::Int(-1)));
        assert_eq!((p.len(), total, next), (50, None, None));
    }

    #[test]
    fn binder_error_code_is_numeric() {
        let e = MethodError::binder("x".into()).to_json();
        assert_eq!(
            e,
            serde_json::json!({"error": 100, "error_description": "x"})
        );
    }
}
