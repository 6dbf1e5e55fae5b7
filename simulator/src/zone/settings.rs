//! `updateConfiguration` and the scopes of settings: a setting holds its global value and,
//! for the scopes it has (zone, account, ...), values set at one zone or account. Listing
//! them is `lists.rs`'s; the settings' defaults and scopes come from `seed.rs`.
//!
//! As ConfigurationManagerImpl does: the name must exist; at most one scope id may be given
//! ("cannot handle multiple IDs, ..."); a scope the setting does not have is refused with
//! "Invalid scope id provided for the parameter NAME" (431, InvalidParameterValueException);
//! only then is the value checked.

use serde_json::{json, Value};

use super::model::Setting;
use super::{vlan, Params, Zone};

/// The scope parameters of updateConfiguration/listConfigurations and the scope each names.
pub(super) const SCOPE_PARAMS: [(&str, &str); 6] = [
    ("zoneid", "Zone"),
    ("clusterid", "Cluster"),
    ("accountid", "Account"),
    ("domainid", "Domain"),
    ("storageid", "StoragePool"),
    ("imagestoreuuid", "ImageStore"),
];

/// The one scope the parameters name, as (scope, id); `None` for the global value.
pub(super) fn scope_given(p: &Params) -> Result<Option<(&'static str, String)>, (u16, String)> {
    let given: Vec<(&'static str, String)> = SCOPE_PARAMS
        .iter()
        .filter_map(|(param, scope)| p.get(param).map(|id| (*scope, id.to_string())))
        .collect();
    match given.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err((
            431,
            "cannot handle multiple IDs, provide only one ID corresponding to the scope".into(),
        )),
    }
}

/// A setting as `listConfigurations` shows it (its global value).
pub(super) fn setting_json(s: &super::model::Setting) -> Value {
    json!({
        "name": s.name, "value": s.value, "defaultvalue": s.defaultvalue,
        "category": s.category, "description": s.description,
        "isdynamic": s.isdynamic, "scope": "global", "type": s.kind,
        "component": "management-server",
    })
}

/// A setting's value at a scope: the value set there, else the global one.
pub(super) fn value_at<'a>(s: &'a Setting, scope: &str, id: &str) -> &'a str {
    s.scoped
        .iter()
        .find(|(sc, i, _)| sc == scope && i == id)
        .map_or(s.value.as_str(), |(_, _, v)| v.as_str())
}

impl Zone {
    /// updateConfiguration: the name must exist and the scope given must be one the setting
    /// has; `secstorage.allowed.internal.sites` must be IPv4 CIDRs without 0.0.0.0;
    /// `default.page.size` a positive integer or -1.
    pub(super) fn update_configuration(
        &mut self,
        key: &str,
        p: &Params,
    ) -> Result<Value, (u16, String)> {
        let name = p.get("name").unwrap_or_default();
        let value = p.get("value").unwrap_or_default().to_string();
        let setting = self
            .world
            .settings
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| (431, format!("Configuration {name} does not exist")))?;
        let scope = scope_given(p)?;
        if let Some((scope, _)) = &scope {
            if !setting.scopes.iter().any(|s| s == scope) {
                return Err((
                    431,
                    format!("Invalid scope id provided for the parameter {name}"),
                ));
            }
        }
        if name == "secstorage.allowed.internal.sites" {
            vlan::valid_sites(&value)
                .map_err(|e| (431, format!("Invalid value for {name}: {e}")))?;
        }
        if name == "default.page.size" && value.parse::<i64>().map_or(true, |n| n == 0 || n < -1) {
            return Err((
                431,
                format!("Invalid value for {name}: a positive integer or -1 is required"),
            ));
        }
        let Some((scope, id)) = scope else {
            setting.value = value;
            let item = setting_json(setting);
            return Ok(json!({ key: {"configuration": item} }));
        };
        setting.scoped.retain(|(s, i, _)| !(s == scope && *i == id));
        setting
            .scoped
            .push((scope.to_string(), id.clone(), value.clone()));
        let mut item = setting_json(setting);
        item["value"] = json!(value);
        item["scope"] = json!(scope.to_ascii_lowercase());
        item["id"] = json!(id);
        Ok(json!({ key: {"configuration": item} }))
    }
}
