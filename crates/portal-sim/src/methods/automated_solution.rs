//! `crm.automatedsolution.*`, following the CRM controller step by step (docs/protocol.md,
//! Workplace updates): `update` starts with a get, fills missing fields from the current state by
//! PHP array union, converts keys camelCase → UPPER_SNAKE (with the `CaseCache` subtlety), drops
//! unknown keys, normalises values, updates the title, and then sets the bindings *even if the
//! title update failed*. Binding a type moves it away from whichever workplace held it
//! (`state.rs`).
//!
//! Simplified: no permission checks (every caller is a CRM admin), no plan limit on the number
//! of workplaces, no title-uniqueness or length checks. Unknown smart-process type ids are
//! skipped silently, as the portal's `getBunchOfTypesByIds` does. Descriptions are English (an
//! English-language portal).

use super::list_query;
use super::{page, Ctx, MethodError, MethodOk, Outcome};
use crate::bind::{self, php_string};
use crate::state::{Solution, State};
use b24_rest::php::{Array, Key, Value};
use serde_json::json;
use std::collections::BTreeSet;

const ADD: &str = "crm.automatedsolution.add";
const UPDATE: &str = "crm.automatedsolution.update";
const DELETE: &str = "crm.automatedsolution.delete";

/// The upper-case field names; the converter learns them whenever it renders a workplace.
const UPPER_FIELDS: [&str; 3] = ["ID", "TITLE", "TYPE_IDS"];

pub fn get(state: &State, ctx: &mut Ctx, params: &Array) -> Outcome {
    let id = bind::int_param(params, "id")?;
    let s = state.solution(id).ok_or_else(not_found)?;
    Ok(rendered(ctx, &s))
}

pub fn add(state: &mut State, ctx: &mut Ctx, params: &Array) -> Outcome {
    let fields = bind::opt_array_param(params, "fields")?.unwrap_or_default();
    let prepared = prepare_fields(&fields, &ctx.case_cache);
    let title = prepared.title.unwrap_or_default();
    if title.is_empty() {
        return Err(empty_required());
    }
    let id = state.add_solution(title);
    state.set_bindings(id, &prepared.type_ids.unwrap_or_default());
    let after = state.solution(id).ok_or_else(not_found)?;
    state.record_mutation(ADD, id, None, Some(after.clone()));
    Ok(rendered(ctx, &after))
}

pub fn update(state: &mut State, ctx: &mut Ctx, params: &Array) -> Outcome {
    let id = bind::int_param(params, "id")?;
    let fields = bind::opt_array_param(params, "fields")?.unwrap_or_default();
    // Step 1: the update starts with a get, which also teaches the key converter the
    // upper-case names.
    let before = state.solution(id).ok_or_else(not_found)?;
    ctx.case_cache.learn(&UPPER_FIELDS);
    // Step 2: `$fields + $current`: client keys first, then current keys the client left out.
    let mut union = fields;
    for (k, v) in current_fields(&before).iter() {
        if union.get(k).is_none() {
            union.set(k.clone(), v.clone());
        }
    }
    let prepared = prepare_fields(&union, &ctx.case_cache);
    // Step 5: the title update may fail; the bindings are set regardless.
    let title_error = match prepared.title {
        Some(t) if !t.is_empty() => {
            state.set_title(id, t);
            None
        }
        _ => Some(empty_required()),
    };
    state.set_bindings(id, &prepared.type_ids.unwrap_or_default());
    let after = state.solution(id).ok_or_else(not_found)?;
    state.record_mutation(UPDATE, id, Some(before), Some(after.clone()));
    match title_error {
        Some(e) => Err(e),
        None => Ok(rendered(ctx, &after)),
    }
}

pub fn delete(state: &mut State, params: &Array) -> Outcome {
    let id = bind::int_param(params, "id")?;
    let before = state.solution(id).ok_or_else(not_found)?;
    if !before.type_ids.is_empty() {
        return Err(MethodError::controller(
            "HAS_BOUND_TYPES",
            "The automated solution cannot be deleted while smart processes are bound to it",
        ));
    }
    state.remove_solution(id);
    state.record_mutation(DELETE, id, Some(before), None);
    Ok(MethodOk::result(serde_json::Value::Null))
}

pub fn list(state: &State, ctx: &mut Ctx, params: &Array, start: Option<&Value>) -> Outcome {
    let order = bind::opt_array_param(params, "order")?;
    let filter = bind::opt_array_param(params, "filter")?.unwrap_or_default();
    let query = list_query::Query::parse(order.as_ref(), &filter)?;
    let rows = query.apply(state.solutions());
    let (rows, total, next) = page(rows, start);
    ctx.case_cache.learn(&UPPER_FIELDS);
    let items: Vec<serde_json::Value> = rows.iter().map(to_json).collect();
    Ok(MethodOk {
        result: json!({ "automatedSolutions": items }),
        total,
        next,
    })
}

pub fn fields(ctx: &mut Ctx) -> MethodOk {
    ctx.case_cache.learn(&UPPER_FIELDS);
    let info = |ty: &str, required: bool, read_only: bool, multiple: bool, upper: &str| {
        json!({
            "type": ty,
            "isRequired": required,
            "isReadOnly": read_only,
            "isImmutable": false,
            "isMultiple": multiple,
            "isDynamic": false,
            "title": upper,
            "upperName": upper,
        })
    };
    MethodOk::result(json!({
        "id": info("integer", false, true, false, "ID"),
        "title": info("string", true, false, false, "TITLE"),
        "typeIds": info("crm_dynamic_type", false, false, true, "TYPE_IDS"),
    }))
}

/// The converter's camelCase shape, shared by get, add, update and list items.
pub fn to_json(s: &Solution) -> serde_json::Value {
    json!({ "id": s.id, "title": s.title, "typeIds": s.type_ids })
}

fn rendered(ctx: &mut Ctx, s: &Solution) -> MethodOk {
    ctx.case_cache.learn(&UPPER_FIELDS);
    MethodOk::result(json!({ "automatedSolution": to_json(s) }))
}

/// The current workplace as the PHP array the update unions with.
fn current_fields(s: &Solution) -> Array {
    let mut types = Array::new();
    for t in &s.type_ids {
        types.push(Value::Int(*t));
    }
    [
        (Key::Str("id".into()), Value::Int(s.id)),
        (Key::Str("title".into()), Value::Str(s.title.clone())),
        (Key::Str("typeIds".into()), Value::Array(types)),
    ]
    .into_iter()
    .collect()
}

/// The known fields after key conversion and normalisation (`ID` is ignored by the methods).
#[derive(Debug, Default, PartialEq)]
struct Prepared {
    title: Option<String>,
    type_ids: Option<Vec<i64>>,
}

/// `prepareFieldsFromRequest`: convert keys (a later key converting to the same name wins),
/// keep the known ones, normalise.
fn prepare_fields(fields: &Array, cache: &super::CaseCache) -> Prepared {
    let mut upper = Array::new();
    for (k, v) in fields.iter() {
        upper.set(upper_key(k, cache), v.clone());
    }
    Prepared {
        title: upper.get_str("TITLE").map(php_string),
        type_ids: upper.get_str("TYPE_IDS").map(normalize_type_ids),
    }
}

/// `convertFieldNameFromCamelCaseToUpperCase`: a name the cache knows as upper case stays as
/// is; anything else goes through `camel2snake` and upper-casing.
fn upper_key(key: &Key, cache: &super::CaseCache) -> Key {
    match key {
        Key::Int(_) => key.clone(),
        Key::Str(s) if cache.knows(s) => key.clone(),
        Key::Str(s) => Key::from_php_string(&camel_to_snake(s).to_uppercase()),
    }
}

/// Bitrix `StringHelper::camel2snake`: `preg_replace('/(.)([A-Z])/', '$1_$2')` (non-overlapping,
/// `.` not matching a newline), then lower-cased.
fn camel_to_snake(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match chars.get(i + 1) {
            Some(n) if c != '\n' && n.is_ascii_uppercase() => {
                out.push(c);
                out.push('_');
                out.push(*n);
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.to_lowercase()
}

/// The `TYPE_IDS` normaliser: `(array)` cast, then `normalizeArrayValuesByInt` — each element
/// `(int)`, keep > 0, deduplicate, sort. A cast PHP would do platform-dependently counts as 0.
pub fn normalize_type_ids(v: &Value) -> Vec<i64> {
    let items: Vec<&Value> = match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(|(_, v)| v).collect(),
        other => vec![other],
    };
    let set: BTreeSet<i64> = items
        .into_iter()
        .map(|v| v.php_int().unwrap_or(0))
        .filter(|n| *n > 0)
        .collect();
    set.into_iter().collect()
}

fn not_found() -> MethodError {
    MethodError::controller("NOT_FOUND", "Element not found")
}

fn empty_required() -> MethodError {
    MethodError::controller("BX_EMPTY_REQUIRED", "Required field is not filled")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthKind, Caller};
    use crate::methods::CaseCache;

    fn ctx() -> Ctx {
        Ctx {
            caller: Caller {
                user_id: 1,
                kind: AuthKind::Webhook,
            },
            case_cache: CaseCache::default(),
        }
    }

    fn json_params(v: serde_json::Value) -> Array {
        Value::from_json(&v).as_array().cloned().unwrap_or_default()
    }

    fn ids(v: serde_json::Value) -> Vec<i64> {
        normalize_type_ids(&Value::from_json(&v))
    }

    /// Protocol §5.2 step 4, row by row.
    #[test]
    fn type_ids_normaliser_matches_the_table() {
        use serde_json::json;
        for empty in [
            json!([]),
            json!(null),
            json!(""),
            json!("0"),
            json!([""]),
            json!([0]),
            json!(["abc"]),
            json!([-5]),
            json!(false),
            json!(["0x1A"]),
            json!([[]]),
        ] {
            assert_eq!(ids(empty.clone()), Vec::<i64>::new(), "{empty}");
        }
        for fourteen in [
            json!("14"),
            json!(" 14"),
            json!("14,15"),
            json!(["14abc"]),
            json!([14.9]),
        ] {
            assert_eq!(ids(fourteen.clone()), [14], "{fourteen}");
        }
        assert_eq!(ids(json!(["1e3"])), [1000]);
        assert_eq!(ids(json!(true)), [1]);
        assert_eq!(ids(json!([[5]])), [1]);
        assert_eq!(ids(json!(["31", 14, "14", 31.5])), [14, 31]);
        assert_eq!(ids(json!({"1": "14", "0": "15"})), [14, 15]);
    }

    #[test]
    fn keys_convert_like_camel2snake() {
        assert_eq!(camel_to_snake("typeIds"), "type_ids");
        assert_eq!(camel_to_snake("TypeIds"), "type_ids");
        assert_eq!(camel_to_snake("type_ids"), "type_ids");
        assert_eq!(camel_to_snake("TYPE_IDS"), "t_yp_e__id_s");
        assert_eq!(camel_to_snake("typeIDs"), "type_ids");
        assert_eq!(camel_to_snake("typeIdS"), "type_id_s");
    }

    /// Protocol §5.2 steps 2 and 7: missing fields kept; `TYPE_IDS` after `typeIds` wins; a lone
    /// `TYPE_IDS` is overwritten by the current value.
    #[test]
    fn union_and_key_spelling_semantics() {
        use serde_json::json;
        let run = |fields: serde_json::Value| {
            let mut st = State::new(true);
            let mut c = ctx();
            let p = json_params(json!({"id": 238, "fields": fields}));
            let out = update(&mut st, &mut c, &p).map(|_| ());
            (out, st.solution(238))
        };
        let (ok, s) = run(json!({"title": "New"}));
        assert!(ok.is_ok());
        assert_eq!(
            s.map(|s| (s.title, s.type_ids)),
            Some(("New".into(), vec![14, 158]))
        );
        let (_, s) = run(json!({"typeIds": [14], "TYPE_IDS": []}));
        assert_eq!(s.map(|s| s.type_ids), Some(vec![]));
        let (_, s) = run(json!({"TYPE_IDS": [], "typeIds": [14]}));
        assert_eq!(s.map(|s| s.type_ids), Some(vec![14]));
        let (_, s) = run(json!({"TYPE_IDS": []}));
        assert_eq!(s.map(|s| s.type_ids), Some(vec![14, 158]));
        // Any other spelling alone loses to the current `typeIds` the union appends after it...
        for lone in ["type_ids", "TypeIds", "typeIDs", "typeids"] {
            let (_, s) = run(json!({ lone: [] }));
            assert_eq!(s.map(|s| s.type_ids), Some(vec![14, 158]), "{lone}");
        }
        // ...but after the client's own `typeIds` it wins.
        let (_, s) = run(json!({"typeIds": [14], "TypeIds": []}));
        assert_eq!(s.map(|s| s.type_ids), Some(vec![]));
        let (_, s) = run(json!({"typeIds": [14], "typeids": []}));
        assert_eq!(s.map(|s| s.type_ids), Some(vec![14]));
    }

    /// Protocol §5.2 step 5: an empty title fails the update but the bindings are still set.
    #[test]
    fn bindings_are_set_even_when_the_title_update_fails() {
        use serde_json::json;
        let mut st = State::new(true);
        let p = json_params(json!({"id": "238", "fields": {"title": "", "typeIds": []}}));
        let err = update(&mut st, &mut ctx(), &p).err().map(|e| e.code);
        assert_eq!(
            err,
            Some(super::super::ErrorCode::Text("BX_EMPTY_REQUIRED".into()))
        );
        let s = st.solution(238);
        assert_eq!(
            s.map(|s| (s.title, s.type_ids)),
            Some(("HR & Customer Success".into(), vec![]))
        );
        assert_eq!(st.mutations.len(), 1);
    }

    #[test]
    fn update_of_a_missing_workplace_is_not_found_and_executes_nothing() {
        let mut st = State::new(true);
        let p = json_params(serde_json::json!({"id": 9999, "fields": {"typeIds": []}}));
        let e = update(&mut st, &mut ctx(), &p).err();
        assert_eq!(
            e.map(|e| (e.status, e.description)),
            Some((400, "Element not found".into()))
        );
        assert!(st.mutations.is_empty());
    }

    #[test]
    fn add_steals_and_delete_refuses_while_bound() {
        use serde_json::json;
        let mut st = State::new(true);
        let p = json_params(json!({"fields": {"title": "New", "typeIds": ["31", 190]}}));
        let out = add(&mut st, &mut ctx(), &p).map(|o| o.result);
        assert_eq!(
            out.ok(),
            Some(json!({"automatedSolution": {"id": 302, "title": "New", "typeIds": [31, 190]}}))
        );
        assert_eq!(st.solution(267).map(|s| s.type_ids), Some(vec![]));
        let refused = delete(&mut st, &json_params(json!({"id": 302})))
            .err()
            .map(|e| e.code);
        assert_eq!(
            refused,
            Some(super::super::ErrorCode::Text("HAS_BOUND_TYPES".into()))
        );
        assert!(delete(&mut st, &json_params(json!({"id": 267}))).is_ok());
        assert_eq!(st.solution(267), None);
        let no_title = add(
            &mut st,
            &mut ctx(),
            &json_params(json!({"fields": {"typeIds": [14]}})),
        );
        assert!(no_title.is_err());
    }
}
