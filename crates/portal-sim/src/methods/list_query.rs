//! `order` and `filter` of `crm.automatedsolution.list`, read and applied the way the portal's
//! ORM would (docs/protocol.md, Workplace updates): fields `id` and `title`, the filter prefixes
//! the CRM controllers accept (`= ! > < >= <= % !% =% %= !=% !%= @ >< !><` and none), nested groups
//! under integer keys joined by `logic: OR|AND`.
//!
//! Title comparisons are case-insensitive, as under the portal's MySQL collation. Ties in the
//! order are broken by id so pages are stable. Not modelled: SQL `NULL` handling of empty values.

use super::MethodError;
use crate::bind::php_string;
use crate::state::Solution;
use b24_rest::php::{Array, Key, Value};
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Title,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Contains,
    NotContains,
    Like,
    NotLike,
    Between,
    NotBetween,
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Cond { field: Field, op: Op, value: Value },
    Group { any: bool, items: Vec<Filter> },
}

/// A parsed list request.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    filter: Filter,
    order: Vec<(Field, bool)>,
}

/// Filter prefixes, longest first so that `>=` is not read as `>`.
const PREFIXES: [(&str, Op); 16] = [
    ("!><", Op::NotBetween),
    ("!=%", Op::NotLike),
    ("!%=", Op::NotLike),
    ("><", Op::Between),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("=%", Op::Like),
    ("%=", Op::Like),
    ("!=", Op::Ne),
    ("!%", Op::NotContains),
    ("=", Op::Eq),
    ("@", Op::Eq),
    ("%", Op::Contains),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("", Op::Eq),
];

impl Query {
    /// Validates and reads `order` (default `id ASC`) and `filter`.
    pub fn parse(order: Option<&Array>, filter: &Array) -> Result<Query, MethodError> {
        let mut ord = Vec::new();
        match order {
            None => ord.push((Field::Id, false)),
            Some(o) => {
                for (k, v) in o.iter() {
                    let field = field_name(&k.as_text())
                        .ok_or_else(|| invalid(format!("order field {k}")))?;
                    let desc = match php_string(v).to_ascii_uppercase().as_str() {
                        "ASC" => false,
                        "DESC" => true,
                        _ => return Err(invalid(format!("order direction for {k}"))),
                    };
                    ord.push((field, desc));
                }
            }
        }
        Ok(Query {
            filter: parse_group(filter, 0)?,
            order: ord,
        })
    }

    /// Filters and sorts the rows.
    pub fn apply(&self, mut rows: Vec<Solution>) -> Vec<Solution> {
        rows.retain(|s| matches(&self.filter, s));
        rows.sort_by(|a, b| {
            for (field, desc) in &self.order {
                let o = match field {
                    Field::Id => a.id.cmp(&b.id),
                    Field::Title => a.title.to_lowercase().cmp(&b.title.to_lowercase()),
                };
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            a.id.cmp(&b.id)
        });
        rows
    }
}

/// Nesting deeper than this is refused rather than recursed into.
const MAX_DEPTH: usize = 16;

fn parse_group(arr: &Array, depth: usize) -> Result<Filter, MethodError> {
    if depth > MAX_DEPTH {
        return Err(invalid("filter nesting".into()));
    }
    let mut any = false;
    let mut items = Vec::new();
    for (k, v) in arr.iter() {
        match (k, v) {
            (Key::Str(s), v) if s.eq_ignore_ascii_case("logic") => {
                any = php_string(v).eq_ignore_ascii_case("or");
            }
            (Key::Int(_), Value::Array(sub)) => items.push(parse_group(sub, depth + 1)?),
            (Key::Str(s), v) => {
                let (field, op) = PREFIXES
                    .iter()
                    .find_map(|(p, op)| field_name(s.strip_prefix(p)?).map(|f| (f, *op)))
                    .ok_or_else(|| invalid(format!("filter field {s}")))?;
                items.push(Filter::Cond {
                    field,
                    op,
                    value: v.clone(),
                });
            }
            (Key::Int(n), _) => return Err(invalid(format!("filter field {n}"))),
        }
    }
    Ok(Filter::Group { any, items })
}

fn field_name(s: &str) -> Option<Field> {
    match s {
        "id" => Some(Field::Id),
        "title" => Some(Field::Title),
        _ => None,
    }
}

fn invalid(what: String) -> MethodError {
    MethodError::controller("INVALID_ARG_VALUE", format!("Invalid {what}"))
}

fn matches(f: &Filter, s: &Solution) -> bool {
    match f {
        Filter::Group { any: true, items } => {
            items.is_empty() || items.iter().any(|i| matches(i, s))
        }
        Filter::Group { any: false, items } => items.iter().all(|i| matches(i, s)),
        Filter::Cond { field, op, value } => cond(*field, *op, value, s),
    }
}

fn values(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().map(|(_, v)| v).collect(),
        other => vec![other],
    }
}

fn cond(field: Field, op: Op, value: &Value, s: &Solution) -> bool {
    let cmp = |v: &Value| match field {
        Field::Id => s.id.cmp(&v.php_int().unwrap_or(0)),
        Field::Title => s.title.to_lowercase().cmp(&php_string(v).to_lowercase()),
    };
    let text = match field {
        Field::Id => s.id.to_string(),
        Field::Title => s.title.to_lowercase(),
    };
    let any = |pred: &dyn Fn(&Value) -> bool| values(value).into_iter().any(pred);
    match op {
        Op::Eq => any(&|v| cmp(v) == Ordering::Equal),
        Op::Ne => !any(&|v| cmp(v) == Ordering::Equal),
        Op::Gt => cmp(value) == Ordering::Greater,
        Op::Lt => cmp(value) == Ordering::Less,
        Op::Ge => cmp(value) != Ordering::Less,
        Op::Le => cmp(value) != Ordering::Greater,
        Op::Contains => any(&|v| text.contains(&php_string(v).to_lowercase())),
        Op::NotContains => !any(&|v| text.contains(&php_string(v).to_lowercase())),
        Op::Like => any(&|v| like(&text, &php_string(v).to_lowercase())),
        Op::NotLike => !any(&|v| like(&text, &php_string(v).to_lowercase())),
        Op::Between | Op::NotBetween => {
            let bounds = values(value);
            let inside = match bounds.as_slice() {
                [lo, hi] => cmp(lo) != Ordering::Less && cmp(hi) != Ordering::Greater,
                _ => false,
            };
            inside == (op == Op::Between)
        }
    }
}

/// SQL `LIKE` with `%` (any run) and `_` (one character).
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // dp[j] = pattern[..i] matches text[..j]
    let mut dp = vec![false; t.len() + 1];
    dp[0] = true;
    for pc in &p {
        let mut next = vec![false; t.len() + 1];
        if *pc == '%' {
            let mut seen = false;
            for j in 0..=t.len() {
                seen |= dp[j];
                next[j] = seen;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = dp[j - 1] && (*pc == '_' || *pc == t[j - 1]);
            }
        }
        dp = next;
    }
    dp[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use serde_json::json;

    fn run(
        order: Option<serde_json::Value>,
        filter: serde_json::Value,
    ) -> Result<Vec<i64>, MethodError> {
        let arr =
            |v: &serde_json::Value| Value::from_json(v).as_array().cloned().unwrap_or_default();
        let order = order.as_ref().map(arr);
        let q = Query::parse(order.as_ref(), &arr(&filter))?;
        Ok(q.apply(State::new(true).solutions())
            .iter()
            .map(|s| s.id)
            .collect())
    }

    #[test]
    fn prefixes_filter_as_the_orm_does() {
        assert_eq!(run(None, json!({})), Ok(vec![238, 267, 301]));
        assert_eq!(run(None, json!({"id": 267})), Ok(vec![267]));
        assert_eq!(run(None, json!({"=id": "267"})), Ok(vec![267]));
        assert_eq!(run(None, json!({"!=id": 267})), Ok(vec![238, 301]));
        assert_eq!(run(None, json!({">id": 238})), Ok(vec![267, 301]));
        assert_eq!(run(None, json!({">=id": 267})), Ok(vec![267, 301]));
        assert_eq!(run(None, json!({"<id": 267})), Ok(vec![238]));
        assert_eq!(run(None, json!({"<=id": 267})), Ok(vec![238, 267]));
        assert_eq!(run(None, json!({"%title": "SUCC"})), Ok(vec![238]));
        assert_eq!(run(None, json!({"=title": "sales"})), Ok(vec![267]));
        assert_eq!(run(None, json!({"=%title": "s%"})), Ok(vec![267, 301]));
        assert_eq!(run(None, json!({"!%title": "s"})), Ok(vec![]));
        assert_eq!(run(None, json!({"@id": [238, 301]})), Ok(vec![238, 301]));
        assert_eq!(run(None, json!({"><id": [250, 300]})), Ok(vec![267]));
        assert_eq!(
            run(None, json!({">id": 200, "<id": 300})),
            Ok(vec![238, 267])
        );
    }

    #[test]
    fn nested_or_groups() {
        let f = json!({"0": {"logic": "OR", "0": {"=id": 238}, "1": {"%title": "port"}}});
        assert_eq!(run(None, f), Ok(vec![238, 301]));
    }

    #[test]
    fn order_and_validation() {
        assert_eq!(
            run(Some(json!({"title": "desc"})), json!({})),
            Ok(vec![301, 267, 238])
        );
        assert_eq!(
            run(Some(json!({"id": "DESC"})), json!({})),
            Ok(vec![301, 267, 238])
        );
        let bad = |r: Result<Vec<i64>, MethodError>| r.err().map(|e| e.status);
        assert_eq!(bad(run(Some(json!({"name": "asc"})), json!({}))), Some(400));
        assert_eq!(bad(run(Some(json!({"id": "up"})), json!({}))), Some(400));
        assert_eq!(bad(run(None, json!({"TITLE": "x"}))), Some(400));
        assert_eq!(bad(run(None, json!({"~id": 1}))), Some(400));
    }

    #[test]
    fn like_patterns() {
        assert!(like("sales", "s%"));
        assert!(like("sales", "_ales"));
        assert!(!like("sales", "s_"));
        assert!(like("", "%"));
    }
}
