//! `im.notify`: a system notification to one portal user. The simulator keeps nothing but
//! answers as the portal does — the new notification's id — so a sender can be tested; the
//! call itself is in the simulator's record of calls.

use super::{MethodError, MethodOk};
use b24_rest::php::{Array, Value};
use serde_json::json;

pub fn notify(params: &Array, next_id: u64) -> Result<MethodOk, MethodError> {
    let text = |name: &str| match params.get_str(name) {
        Some(Value::Str(s)) => Some(s.clone()),
        Some(Value::Int(i)) => Some(i.to_string()),
        _ => None,
    };
    let to = text("to").filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    let message = text("message").filter(|m| !m.is_empty());
    match (to, message) {
        (Some(_), Some(_)) => Ok(MethodOk::result(json!(next_id))),
        _ => Err(MethodError::new(
            400,
            "ERROR_ARGUMENT",
            "Argument \"to\" and \"message\" are required",
        )),
    }
}
