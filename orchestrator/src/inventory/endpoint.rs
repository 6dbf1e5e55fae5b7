//! `remedy_cloudstack`: where the CloudStack API is and how to sign requests to it. Its keys
//! and their shape as parsed (with a position), the rule that only `all` may set it, and the
//! [`CloudStackEndpoint`] built from the merged value.
//!
//! Not here: connecting to the API (`cloudstack`), the secret forms (`secret`), and the
//! CloudStack inventory source (`remedy_cloudstack_inventory`: `dynamic`).

use std::path::PathBuf;

use serde::de;
use serde_json::{Map, Value};

use super::secret::REF_FORMS;
use super::vars::{Builder, VarLayer};
use super::yaml::ValueSeed;
use super::{
    ApiKey, CloudStackEndpoint, CloudStackSource, InventoryError, SecretRef, ALL, CLOUDSTACK_VAR,
};

/// The environment variable that chooses the embedded simulator's scenario in place of the
/// inventory's `simulator.scenario` (`REMEDY_LAB_SCENARIO=stale-nics remedy apply ... -i
/// inventories/lab.yml`); empty or unset: the inventory's. It changes nothing for an
/// inventory that reaches a real API.
pub const LAB_SCENARIO_ENV: &str = "REMEDY_LAB_SCENARIO";

/// The scenario `REMEDY_LAB_SCENARIO` names, when it is set and not empty.
pub fn lab_scenario_override() -> Option<String> {
    std::env::var(LAB_SCENARIO_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// The keys of `remedy_cloudstack`.
const CLOUDSTACK_KEYS: [&str; 8] = [
    "endpoint",
    "api_key",
    "secret_key",
    "cmk_profile",
    "cmk_config",
    "simulator",
    "verify_tls",
    "ca_file",
];

impl ValueSeed<'_> {
    /// Checks `remedy_cloudstack` as written: known keys, one source of the endpoint, types.
    pub(super) fn cloudstack<E: de::Error>(&self, map: &Map<String, Value>) -> Result<(), E> {
        let scope = self.scope;
        let fail = |what: String| self.ctx.fail(format!("{scope}: {CLOUDSTACK_VAR}{what}"));
        if let Some(key) = map.keys().find(|k| !CLOUDSTACK_KEYS.contains(&k.as_str())) {
            return Err(fail(format!(
                ": unknown key \"{key}\" (expected {})",
                CLOUDSTACK_KEYS.join(", ")
            )));
        }
        let has = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
        let keys = ["endpoint", "api_key", "secret_key"];
        let sources = [
            keys.iter().any(|k| has(k)),
            has("cmk_profile") || has("cmk_config"),
            has("simulator"),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => {
                return Err(fail(
                    ": say where the API is: endpoint + api_key + secret_key, or cmk_profile \
                     (a cloudmonkey profile), or simulator"
                        .into(),
                ))
            }
            1 => {}
            _ => {
                return Err(fail(
                    ": endpoint/api_key/secret_key, cmk_profile/cmk_config and simulator are \
                     alternatives; give one"
                        .into(),
                ))
            }
        }
        if sources[0] {
            for key in keys {
                if !has(key) {
                    return Err(fail(format!(": missing {key}")));
                }
            }
            match map.get("endpoint").and_then(Value::as_str) {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {}
                _ => {
                    return Err(fail(
                        ".endpoint: expected an http:// or https:// url".into(),
                    ))
                }
            }
            if map.get("api_key").and_then(Value::as_str) == Some("") {
                return Err(fail(".api_key: empty".into()));
            }
        }
        for key in ["cmk_profile", "cmk_config", "ca_file"] {
            if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                if v.as_str().is_none_or(str::is_empty) {
                    return Err(fail(format!(".{key}: expected a non-empty string")));
                }
            }
        }
        if let Some(v) = map.get("verify_tls").filter(|v| !v.is_null()) {
            if !v.is_boolean() {
                return Err(fail(".verify_tls: expected true or false".into()));
            }
        }
        if let Some(sim) = map.get("simulator").filter(|v| !v.is_null()) {
            let ok = sim.as_object().is_some_and(|m| {
                m.keys().all(|k| k == "scenario")
                    && m.get("scenario")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            });
            if !ok {
                return Err(fail(
                    ".simulator: expected { scenario: NAME } (a shipped scenario such as \
                     vr-backup-loop, or a scenario file)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

impl Builder {
    /// `remedy_cloudstack` configures the whole inventory, so only `all` may set it.
    pub(super) fn check_cloudstack_scope(&self) -> Result<(), InventoryError> {
        let misplaced = |layer: &VarLayer| {
            layer
                .get(CLOUDSTACK_VAR)
                .filter(|(v, _)| !v.is_null())
                .map(|(_, origin)| *origin)
        };
        let hint = "set it once for all hosts (all.vars or group_vars/all.yml)";
        for (name, def) in &self.groups {
            if name == ALL {
                continue;
            }
            let layers = std::iter::once(&def.vars).chain(def.file_vars.iter().map(|(_, l)| l));
            for layer in layers {
                if let Some(origin) = misplaced(layer) {
                    return Err(InventoryError::invalid(
                        &self.origin_path(origin),
                        format!(
                            "group \"{name}\": {CLOUDSTACK_VAR} cannot be set per group; {hint}"
                        ),
                    ));
                }
            }
        }
        for host in &self.hosts {
            let layers = std::iter::once(&host.vars).chain(host.file_vars.iter().map(|(_, l)| l));
            for layer in layers {
                if let Some(origin) = misplaced(layer) {
                    return Err(InventoryError::invalid(
                        &self.origin_path(origin),
                        format!(
                            "host \"{}\": {CLOUDSTACK_VAR} cannot be set per host; {hint}",
                            host.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn cloudstack_endpoint(
        &self,
        value: &Value,
        origin: usize,
    ) -> Result<CloudStackEndpoint, InventoryError> {
        let bad = |what: &str| {
            InventoryError::invalid(
                &self.origin_path(origin),
                format!("{CLOUDSTACK_VAR}: {what}"),
            )
        };
        let map = value
            .as_object()
            .ok_or_else(|| bad("expected a mapping with endpoint, api_key, secret_key"))?;
        let base = self.origin_path(origin);
        let relative = |p: &str| -> PathBuf {
            let path = PathBuf::from(p);
            match base.parent() {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path,
            }
        };
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        // The same test as the validator's: a key set to null is absent.
        let has = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
        let source = if let Some(sim) = map.get("simulator").filter(|v| !v.is_null()) {
            let scenario = sim
                .get("scenario")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("simulator: expected { scenario: NAME }"))?;
            CloudStackSource::Simulator {
                scenario: lab_scenario_override().unwrap_or_else(|| scenario.to_string()),
            }
        } else if has("cmk_profile") || has("cmk_config") {
            CloudStackSource::Cmk {
                config: text("cmk_config").map(|p| relative(&p)),
                profile: text("cmk_profile"),
            }
        } else {
            let endpoint = text("endpoint").ok_or_else(|| bad("missing endpoint"))?;
            let api_key =
                match map.get("api_key") {
                    Some(Value::String(key)) => ApiKey::Inline(key.clone()),
                    Some(other) => ApiKey::Ref(SecretRef::from_value(other).ok_or_else(|| {
                        bad(&format!("api_key: expected a string or {REF_FORMS}"))
                    })?),
                    None => return Err(bad("missing api_key")),
                };
            let secret_key = map
                .get("secret_key")
                .and_then(SecretRef::from_value)
                .ok_or_else(|| bad(&format!("secret_key: expected {REF_FORMS}")))?;
            CloudStackSource::Keys {
                endpoint,
                api_key,
                secret_key,
            }
        };
        Ok(CloudStackEndpoint {
            source,
            verify_tls: map
                .get("verify_tls")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            ca_file: text("ca_file").map(|p| relative(&p)),
        })
    }
}
