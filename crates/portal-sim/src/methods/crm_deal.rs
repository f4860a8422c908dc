//! `crm.deal.list` and `crm.deal.get`: an unwatched, paged method family for pass-through tests
//! and benchmarks. Classic CRM REST: parameter names are case-insensitive (upper-cased), fields
//! are upper-case with string values, errors carry an empty code.
//!
//! Simplified: `filter` understands only `ID` (equality, scalar or list), `order` only `ID`,
//! and `select` is ignored (every field is returned).

use super::{page, MethodError, MethodOk, Outcome};
use crate::bind::coerce_int;
use crate::state::{Deal, State};
use b24_rest::php::{Array, Value};
use serde_json::json;

pub fn list(state: &State, params: &Array, start: Option<&Value>) -> MethodOk {
    let params = upper_keys(params);
    let filter = params
        .get_str("FILTER")
        .and_then(Value::as_array)
        .map(upper_keys);
    let wanted: Option<Vec<i64>> = filter
        .as_ref()
        .and_then(|f| f.get_str("ID"))
        .map(|v| match v {
            Value::Array(a) => a.iter().filter_map(|(_, v)| coerce_int(v)).collect(),
            other => coerce_int(other).into_iter().collect(),
        });
    let desc = params
        .get_str("ORDER")
        .and_then(Value::as_array)
        .map(upper_keys)
        .and_then(|o| {
            o.get_str("ID")
                .and_then(Value::as_str)
                .map(|d| d.eq_ignore_ascii_case("desc"))
        })
        .unwrap_or(false);
    let mut rows: Vec<&Deal> = state
        .deals
        .iter()
        .filter(|d| wanted.as_ref().is_none_or(|w| w.contains(&d.id)))
        .collect();
    if desc {
        rows.reverse();
    }
    let (rows, total, next) = page(rows, start);
    MethodOk {
        result: serde_json::Value::Array(rows.into_iter().map(to_json).collect()),
        total,
        next,
    }
}

pub fn get(state: &State, params: &Array) -> Outcome {
    let params = upper_keys(params);
    let id = params
        .get_str("ID")
        .and_then(coerce_int)
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            MethodError::controller("", "The parameter id is invalid or not defined.")
        })?;
    let deal = state
        .deals
        .iter()
        .find(|d| d.id == id)
        .ok_or_else(|| MethodError::controller("", "Not found"))?;
    Ok(MethodOk::result(to_json(deal)))
}

/// `array_change_key_case($params, CASE_UPPER)`: a later spelling of the same name wins.
fn upper_keys(a: &Array) -> Array {
    a.iter()
        .map(|(k, v)| {
            (
                b24_rest::php::Key::from_php_string(&k.as_text().to_uppercase()),
                v.clone(),
            )
        })
        .collect()
}

fn to_json(d: &Deal) -> serde_json::Value {
    json!({
        "ID": d.id.to_string(),
        "TITLE": d.title,
        "TYPE_ID": "SALE",
        "STAGE_ID": d.stage_id,
        "CATEGORY_ID": "0",
        "CURRENCY_ID": "USD",
        "OPPORTUNITY": d.opportunity,
        "ASSIGNED_BY_ID": d.assigned_by_id.to_string(),
        "CLOSED": if d.stage_id == "WON" { "Y" } else { "N" },
        "DATE_CREATE": "2024-05-16T11:49:56+03:00",
    })
}
