//! The API table: every command the simulator serves, with its parameters and reply keys, read
//! from `data/cloudstack-apis.json` (CloudStack 4.18 `listApis` data for the APIs remedy uses,
//! the 4.20 placement and maintenance APIs added for issue 21, the discovery, account,
//! offering, volume and network service provider APIs real clients call, added for issue 22;
//! events, alerts and the 4.20 webhook APIs, added for issue 24).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ApiSpec {
    pub name: String,
    pub isasync: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub since: Option<String>,
    pub response_envelope_key: String,
    #[serde(default)]
    pub list_item_key: Option<String>,
    #[serde(default)]
    pub result_key: Option<String>,
    pub params: Vec<ParamSpec>,
    /// The fields of one item or object of the reply.
    #[serde(default)]
    pub response_fields: Option<Vec<FieldSpec>>,
}

/// A reply field: its name, type, and for a nested list the names of its children.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub since: Option<String>,
}

#[derive(Deserialize)]
struct File {
    apis: Vec<ApiSpec>,
}

fn table() -> &'static BTreeMap<String, ApiSpec> {
    static TABLE: OnceLock<BTreeMap<String, ApiSpec>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let file: File = serde_json::from_str(include_str!("../data/cloudstack-apis.json"))
            .expect("data/cloudstack-apis.json is valid");
        file.apis
            .into_iter()
            .map(|a| (a.name.to_ascii_lowercase(), a))
            .collect()
    })
}

/// The spec of `command`, matched case-insensitively (the servlet looks commands up that way).
pub fn get(command: &str) -> Option<&'static ApiSpec> {
    table().get(&command.to_ascii_lowercase())
}

/// Every served command, in name order.
pub fn all() -> impl Iterator<Item = &'static ApiSpec> {
    table().values()
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_loads_all_57_apis() {
        assert_eq!(super::all().count(), 57);
        let spec = super::get("LISTROUTERS").unwrap();
        assert_eq!(spec.list_item_key.as_deref(), Some("router"));
        assert!(super::get("updatePhysicalNetwork").unwrap().isasync);
    }
}
