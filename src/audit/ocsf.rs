//! `audit export --format ocsf`: each audited mutation as an OCSF API Activity event (class
//! 6003, schema 1.1.0). The mapping is documented field by field in `docs/siem.md`; whatever
//! OCSF has no attribute for (the decision, the rule, the before/after state, the chain hash)
//! travels in `unmapped` or in the resource's `data`, so nothing of the trail is lost.

use super::query::EventRecord;
use super::Outcome;
use serde_json::{json, Value};

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";
const CLASS_UID: u64 = 6003;
const CATEGORY_UID: u64 = 6;

/// `(activity_id, activity_name)` for a method: Create, Update, Delete, or Other.
fn activity(method: &str) -> (u64, &'static str) {
    match method.rsplit('.').next() {
        Some("add") => (1, "Create"),
        Some("update") => (3, "Update"),
        Some("delete") => (4, "Delete"),
        _ => (99, "Other"),
    }
}

/// `(status_id, status, severity_id, severity)` for an outcome.
fn status(outcome: Option<Outcome>) -> (u64, &'static str, u64, &'static str) {
    match outcome {
        Some(Outcome::Applied) => (1, "Success", 1, "Informational"),
        // Refused by policy: the control worked, someone tried something it forbids.
        Some(Outcome::Denied) => (2, "Failure", 3, "Medium"),
        Some(Outcome::RejectedByPortal | Outcome::Failed) => (2, "Failure", 2, "Low"),
        // Forwarded, answer never seen: whether it changed anything must be checked.
        Some(Outcome::Unknown) => (0, "Unknown", 3, "Medium"),
        None => (0, "Unknown", 1, "Informational"),
    }
}

/// Milliseconds since the epoch of a trail time, as OCSF's `timestamp_t`.
fn epoch_ms(time: &str) -> Value {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .map(|t| json!((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .unwrap_or(Value::Null)
}

/// The `src_endpoint` of a recorded client address (`ip:port` or an address alone).
fn endpoint(addr: Option<&str>) -> Value {
    let Some(text) = addr else {
        return Value::Null;
    };
    if let Ok(sa) = text.parse::<std::net::SocketAddr>() {
        return json!({"ip": sa.ip().to_string(), "port": sa.port()});
    }
    match text.parse::<std::net::IpAddr>() {
        Ok(ip) => json!({"ip": ip.to_string()}),
        Err(_) => json!({"ip": text}),
    }
}

/// One event in OCSF API Activity form.
pub fn api_activity(e: &EventRecord) -> Value {
    let (activity_id, activity_name) = activity(&e.method);
    let (status_id, status_name, severity_id, severity) = status(e.outcome);
    let caller = &e.caller;
    let mut user = serde_json::Map::new();
    if let Some(uid) = &caller.user_id {
        user.insert("uid".into(), json!(uid));
    }
    if let Some(fp) = &caller.fingerprint {
        user.insert("credential_uid".into(), json!(fp));
    }
    let outcome = e.outcome.map(Outcome::as_str);
    json!({
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("API Activity: {activity_name}"),
        "time": epoch_ms(&e.time),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status_name,
        "status_code": e.portal_error.as_ref().and_then(Value::as_str).or(outcome),
        "status_detail": e.rule,
        "message": format!("{} of workplace {} by {}: {}", e.method,
            e.solution_id.map_or_else(|| "(new)".to_owned(), |s| s.to_string()),
            user.get("uid").and_then(Value::as_str).unwrap_or("unknown user"),
            outcome.unwrap_or("pending")),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": e.id,
            "product": {
                "name": "b24-audit-proxy",
                "vendor_name": "b24-audit-proxy",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "correlation_uid": e.batch.as_ref().map(|b| &b.id),
        },
        "actor": {
            "user": Value::Object(user),
            "authorizations": [{"decision": e.decision}],
        },
        "api": {
            "operation": e.method,
            "service": {"name": "Bitrix24 REST"},
            "request": {"uid": e.id},
            "response": {
                "code": e.portal_status,
                "error": e.portal_error,
            },
        },
        "src_endpoint": endpoint(e.client_addr.as_deref()),
        "resources": [{
            "type": "crm.automatedsolution",
            "uid": e.solution_id.map(|s| s.to_string()),
            "data": {"before": e.before, "after": e.after},
        }],
        "unmapped": {
            "outcome": e.outcome,
            "decision": e.decision,
            "rule": e.rule,
            "auth": caller.auth,
            "request": e.request,
            "batch": e.batch,
            "side_effects": e.side_effects,
            "reverts": e.reverts,
            "hash": e.hash,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Caller, RequestInfo};
    use crate::mutation::SolutionState;

    fn state(types: &[i64]) -> SolutionState {
        SolutionState {
            id: 238,
            title: "HR".into(),
            type_ids: types.to_vec(),
        }
    }

    fn record(method: &str, outcome: Option<Outcome>) -> EventRecord {
        EventRecord {
            seq: 1,
            id: "0190a000-0000-7000-8000-000000000001".into(),
            time: "2026-11-24T10:00:00.250Z".into(),
            method: method.into(),
            solution_id: Some(238),
            portal: None,
            caller: Caller {
                auth: "webhook".into(),
                user_id: Some("7".into()),
                fingerprint: Some("fp1".into()),
                ..Caller::default()
            },
            client_addr: Some("10.0.0.5:51234".into()),
            request: RequestInfo {
                params: json!({"id": 238}),
                ..RequestInfo::default()
            },
            before: Some(state(&[14])),
            after: Some(state(&[])),
            decision: "deny".into(),
            rule: Some("deny_empty_type_ids".into()),
            outcome,
            portal_status: None,
            portal_error: None,
            batch: None,
            hash: "ab".repeat(32),
            reverts: None,
            override_reason: None,
            approval: None,
            side_effects: Vec::new(),
        }
    }

    #[test]
    fn maps_a_denied_update_to_api_activity() {
        let v = api_activity(&record(
            "crm.automatedsolution.update",
            Some(Outcome::Denied),
        ));
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["category_uid"], 6);
        assert_eq!(v["activity_id"], 3);
        assert_eq!(v["type_uid"], 600303);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["severity_id"], 3);
        assert_eq!(v["time"], 1_795_514_400_250_i64);
        assert_eq!(v["actor"]["user"]["uid"], "7");
        assert_eq!(v["src_endpoint"], json!({"ip": "10.0.0.5", "port": 51234}));
        assert_eq!(v["resources"][0]["uid"], "238");
        assert_eq!(v["unmapped"]["rule"], "deny_empty_type_ids");
        assert_eq!(v["metadata"]["uid"], "0190a000-0000-7000-8000-000000000001");
    }

    #[test]
    fn activities_and_statuses_follow_method_and_outcome() {
        let add = api_activity(&record("crm.automatedsolution.add", Some(Outcome::Applied)));
        assert_eq!(
            (add["activity_id"].clone(), add["status_id"].clone()),
            (json!(1), json!(1))
        );
        let del = api_activity(&record(
            "crm.automatedsolution.delete",
            Some(Outcome::Unknown),
        ));
        assert_eq!(
            (del["activity_id"].clone(), del["status_id"].clone()),
            (json!(4), json!(0))
        );
    }
}
