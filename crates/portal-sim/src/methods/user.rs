//! `user.current` and `profile`: who the caller is. The proxy's health checks and the demo use
//! them; the values are made up but shaped like the portal's (string ids, upper-case keys).

use super::MethodOk;
use crate::auth::Caller;
use serde_json::json;

pub fn current(caller: Caller) -> MethodOk {
    let id = caller.user_id;
    MethodOk::result(json!({
        "ID": id.to_string(),
        "XML_ID": format!("sim-{id}"),
        "ACTIVE": true,
        "NAME": "Sim",
        "LAST_NAME": format!("User {id}"),
        "SECOND_NAME": "",
        "EMAIL": format!("user{id}@portal-sim.invalid"),
        "ADMIN": true,
        "IS_ONLINE": "Y",
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": 0,
        "USER_TYPE": "employee",
    }))
}

pub fn profile(caller: Caller) -> MethodOk {
    let id = caller.user_id;
    MethodOk::result(json!({
        "ID": id.to_string(),
        "ADMIN": true,
        "NAME": "Sim",
        "LAST_NAME": format!("User {id}"),
        "PERSONAL_GENDER": "",
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": 0,
    }))
}
