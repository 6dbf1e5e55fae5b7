//! STUB — being replaced by the zone model. The public signatures below are the contract the
//! HTTP front (server.rs) codes against; keep them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::faults::Faults;
use crate::scenario::Scenario;

/// One reply: the HTTP status and the JSON body (the whole envelope).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Zone {}

impl Zone {
    pub fn new(_scenario: &Scenario) -> Zone {
        Zone {}
    }

    /// Runs one API command. `command` is a name `crate::apis::get` knows (any case); `params`
    /// are the decoded request parameters with the signing ones (`command`, `apiKey`,
    /// `signature`, `signatureVersion`, `expires`, `response`) already removed, names as
    /// received. Validation errors are replies (431 etc.), never panics.
    pub fn handle(
        &mut self,
        command: &str,
        _params: &BTreeMap<String, String>,
        _faults: &Faults,
        _now: jiff::Timestamp,
    ) -> Reply {
        let key = format!("{}response", command.to_ascii_lowercase());
        Reply {
            status: 530,
            body: json!({ key: {"errorcode": 530, "cserrorcode": 4250, "errortext": "stub zone"}}),
        }
    }

    /// The whole state as JSON, for `GET /sim/state` and tests.
    pub fn snapshot(&self) -> Value {
        json!({})
    }
}
