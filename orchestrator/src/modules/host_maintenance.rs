//! `host_maintenance`: whether a hypervisor is in maintenance, through the API.
//!
//! Owns the `listHosts id=HOST` probe (the host's `resourcestate`), the calls that move a host
//! into and out of maintenance (`prepareHostForMaintenance`, `cancelHostMaintenance`, and
//! `updateHost allocationstate=` for a host that was Disabled), and their undo.
//! Not here: where CloudStack moves the host's VMs (it decides; a playbook that must choose
//! migrates them first with `vm_host`), and following the async jobs (the transport does).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cloudstack::list_items;
use super::{check_name, one_api, scalar, state_str};
use super::{Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult};

/// Ensure a hypervisor is in maintenance (or out of it).
///
/// YAML keys:
/// - `host` (required): the host's id (uuid).
/// - `state`: `maintenance` (default) | `enabled`.
///
/// ```yaml
/// - id: maintenance
///   host_maintenance: { host: "{{ host_id }}" }
/// ```
///
/// Check: `listHosts id=HOST` (its `resourcestate`). Change to `maintenance`:
/// `prepareHostForMaintenance id=HOST` (an async job; CloudStack migrates the host's VMs away
/// and the job fails if some cannot go). Change to `enabled`: `cancelHostMaintenance`, or
/// `updateHost allocationstate=Enable` for a Disabled host. Undo: back to the state read
/// before: `cancelHostMaintenance` (then `updateHost allocationstate=Disable` for a host that
/// was Disabled), or `prepareHostForMaintenance`. A host in `PrepareForMaintenance` (a
/// maintenance already under way) is refused rather than raced. `ErrorInMaintenance` cannot be
/// put back: a host that was in it comes back `Enabled`, and the undo says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMaintenanceSpec {
    #[serde(deserialize_with = "scalar::text")]
    pub host: String,
    #[serde(default)]
    pub state: MaintenanceState,
}

/// Whether the host should be in maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceState {
    #[default]
    Maintenance,
    Enabled,
}

impl HostMaintenanceSpec {
    pub fn build(self) -> Result<HostMaintenance, ModuleError> {
        check_name(ModuleKind::HostMaintenance, "host", &self.host)?;
        Ok(HostMaintenance { spec: self })
    }
}

/// The built `host_maintenance` module.
#[derive(Debug, Clone)]
pub struct HostMaintenance {
    spec: HostMaintenanceSpec,
}

/// Resource states of a host in (or on its way into) maintenance.
const IN_MAINTENANCE: [&str; 4] = [
    "PrepareForMaintenance",
    "ErrorInPrepareForMaintenance",
    "ErrorInMaintenance",
    "Maintenance",
];

impl HostMaintenance {
    fn call(&self, command: &str) -> Action {
        Action::api(command, [("id", self.spec.host.as_str())])
    }

    fn allocation(&self, state: &str) -> Action {
        Action::api(
            "updateHost",
            [("id", self.spec.host.as_str()), ("allocationstate", state)],
        )
    }

    /// The calls that bring a host from `from` to `to` (resource states); `None` when no call
    /// can (a maintenance under way).
    fn calls(&self, from: &str, to: &str) -> Result<Vec<Action>, ModuleError> {
        let refuse = |why: &str| {
            Err(ModuleError::Refused(format!(
                "host {} is {from}: {why}",
                self.spec.host
            )))
        };
        if from == to {
            return Ok(vec![]);
        }
        if from == "PrepareForMaintenance" {
            return refuse("a maintenance is under way; wait for it to end, or cancel it");
        }
        Ok(match to {
            "Maintenance" => vec![self.call("prepareHostForMaintenance")],
            // An error state cannot be made again: cancelling brings the host back Enabled
            // (see `restored` and `caveat`).
            "Enabled" | "ErrorInMaintenance" | "ErrorInPrepareForMaintenance"
                if IN_MAINTENANCE.contains(&from) =>
            {
                vec![self.call("cancelHostMaintenance")]
            }
            "Enabled" => vec![self.allocation("Enable")],
            "Disabled" if IN_MAINTENANCE.contains(&from) => vec![
                self.call("cancelHostMaintenance"),
                self.allocation("Disable"),
            ],
            "Disabled" => vec![self.allocation("Disable")],
            _ => return refuse(&format!("remedy cannot bring a host to {to}")),
        })
    }

    fn wanted(&self) -> &'static str {
        match self.spec.state {
            MaintenanceState::Maintenance => "Maintenance",
            MaintenanceState::Enabled => "Enabled",
        }
    }
}

impl Module for HostMaintenance {
    fn kind(&self) -> ModuleKind {
        ModuleKind::HostMaintenance
    }

    fn describe(&self) -> String {
        match self.spec.state {
            MaintenanceState::Maintenance => format!("host {} in maintenance", self.spec.host),
            MaintenanceState::Enabled => format!("host {} enabled", self.spec.host),
        }
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::api(
            "listHosts",
            [("id", self.spec.host.as_str()), ("type", "Routing")],
        )]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let reply = one_api(results, "listHosts")?;
        let items = list_items(reply, "listHosts", "host")?;
        let host = items
            .iter()
            .find(|h| h.get("id").and_then(Value::as_str) == Some(self.spec.host.as_str()))
            .ok_or_else(|| {
                ModuleError::Refused(format!("no hypervisor with id {}", self.spec.host))
            })?;
        let text = |k: &str| host.get(k).and_then(Value::as_str).unwrap_or_default();
        Ok(json!({ "resourcestate": text("resourcestate"), "name": text("name") }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let from = state_str(before, "resourcestate")?;
        if from == self.wanted() {
            return Ok(None);
        }
        self.calls(from, self.wanted())?;
        Ok(Some(Diff::one("resource state", from, self.wanted())))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        self.calls(state_str(before, "resourcestate")?, self.wanted())
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let was = state_str(before, "resourcestate")?;
        if was == self.wanted() {
            return Ok(vec![]);
        }
        // Which calls put the host back depends on where the change left it: the wanted state.
        self.calls(self.wanted(), was)
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        let (Ok(was), Ok(is)) = (
            state_str(before, "resourcestate"),
            state_str(now, "resourcestate"),
        ) else {
            return false;
        };
        was == is || (was.starts_with("ErrorIn") && is == "Enabled")
    }

    fn caveat(&self, before: &Value, now: &Value) -> Option<String> {
        let (was, is) = (
            before["resourcestate"].as_str()?,
            now["resourcestate"].as_str()?,
        );
        (was != is).then(|| {
            format!(
                "host {} was {was} and is {is} now: maintenance cancelled, but CloudStack's \
                 {was} state cannot be put back",
                self.spec.host
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(state: MaintenanceState) -> HostMaintenance {
        HostMaintenanceSpec {
            host: "h-1".into(),
            state,
        }
        .build()
        .unwrap()
    }

    fn st(s: &str) -> Value {
        json!({"resourcestate": s, "name": "kvm-a1"})
    }

    fn commands(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Api(c) => {
                    let mut s = c.command.clone();
                    for (k, v) in &c.args {
                        s.push_str(&format!(" {k}={v}"));
                    }
                    s
                }
                other => panic!("not an API call: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn reads_the_resource_state() {
        let m = module(MaintenanceState::Maintenance);
        assert_eq!(commands(&m.check()), ["listHosts id=h-1 type=Routing"]);
        let reply = json!({"count": 1, "host": [{"id": "h-1", "name": "kvm-a1", "resourcestate": "Enabled"}]});
        assert_eq!(
            m.observe(&[ActionResult::Api(reply)]).unwrap(),
            st("Enabled")
        );
        let e = m.observe(&[ActionResult::Api(json!({}))]).unwrap_err();
        assert_eq!(e.to_string(), "no hypervisor with id h-1");
    }

    #[test]
    fn into_maintenance_and_back_from_each_state() {
        let m = module(MaintenanceState::Maintenance);
        let enabled = st("Enabled");
        assert_eq!(
            m.diff(&enabled).unwrap().unwrap().to_string(),
            "resource state: Enabled -> Maintenance"
        );
        assert_eq!(
            commands(&m.change(&enabled).unwrap()),
            ["prepareHostForMaintenance id=h-1"]
        );
        assert_eq!(
            commands(&m.undo(&enabled).unwrap()),
            ["cancelHostMaintenance id=h-1"]
        );
        assert_eq!(
            commands(&m.undo(&st("Disabled")).unwrap()),
            [
                "cancelHostMaintenance id=h-1",
                "updateHost allocationstate=Disable id=h-1"
            ]
        );
        assert_eq!(m.diff(&st("Maintenance")).unwrap(), None);
        assert!(m.undo(&st("Maintenance")).unwrap().is_empty());
        assert!(!m.restored(&enabled, &st("Maintenance")));
        assert!(m.restored(&enabled, &enabled));
        assert_eq!(m.caveat(&enabled, &enabled), None);
    }

    #[test]
    fn a_maintenance_under_way_is_refused_not_raced() {
        let m = module(MaintenanceState::Maintenance);
        let e = m.diff(&st("PrepareForMaintenance")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host h-1 is PrepareForMaintenance: a maintenance is under way; wait for it to end, or cancel it"
        );
    }

    #[test]
    fn error_in_maintenance_comes_back_enabled_and_says_so() {
        let m = module(MaintenanceState::Maintenance);
        let was = st("ErrorInMaintenance");
        assert_eq!(
            commands(&m.undo(&was).unwrap()),
            ["cancelHostMaintenance id=h-1"]
        );
        let now = st("Enabled");
        assert!(m.restored(&was, &now));
        let c = m.caveat(&was, &now).unwrap();
        assert!(
            c.contains("was ErrorInMaintenance and is Enabled now"),
            "{c}"
        );
    }

    #[test]
    fn enabling_cancels_or_allocates_and_undo_goes_back() {
        let m = module(MaintenanceState::Enabled);
        assert_eq!(
            commands(&m.change(&st("Maintenance")).unwrap()),
            ["cancelHostMaintenance id=h-1"]
        );
        assert_eq!(
            commands(&m.undo(&st("Maintenance")).unwrap()),
            ["prepareHostForMaintenance id=h-1"]
        );
        assert_eq!(
            commands(&m.change(&st("Disabled")).unwrap()),
            ["updateHost allocationstate=Enable id=h-1"]
        );
        assert_eq!(
            commands(&m.undo(&st("Disabled")).unwrap()),
            ["updateHost allocationstate=Disable id=h-1"]
        );
        assert_eq!(m.diff(&st("Enabled")).unwrap(), None);
    }
}
