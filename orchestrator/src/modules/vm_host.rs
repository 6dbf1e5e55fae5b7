//! `vm_host`: which hypervisor a running guest VM runs on, changed by live migration.
//!
//! Owns the `listVirtualMachines id=VM` probe (the VM's host and state), the
//! `migrateVirtualMachine` call to an explicit host, and its undo (back to the host it was on).
//! Not here: choosing the destination (the playbook's analysis does, e.g.
//! host-maintenance-safe), system VMs (`migrateSystemVm`), storage migration, and following the
//! async job (the transport does).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cloudstack::list_items;
use super::{check_name, one_api, same_fields, scalar, state_opt_str, state_str};
use super::{Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult};

/// Ensure a running guest VM runs on a given host.
///
/// YAML keys:
/// - `vm` (required): the VM's id (uuid).
/// - `host` (required): the id (uuid) of the hypervisor it should run on.
///
/// ```yaml
/// - id: move_web1
///   vm_host: { vm: "{{ web1_id }}", host: "{{ target_host_id }}" }
/// ```
///
/// Check: `listVirtualMachines id=VM listall=true` (its `hostid` and `state`). Change:
/// `migrateVirtualMachine virtualmachineid=VM hostid=HOST` (an async job; CloudStack refuses a
/// host that is not Up and Enabled, lacks the VM's tags or has no room). Undo: the same call
/// back to the host it ran on. Only a `Running` VM is migrated; a VM that is `Migrating` (a job
/// of someone else's still moving it) is refused rather than raced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmHostSpec {
    #[serde(deserialize_with = "scalar::text")]
    pub vm: String,
    #[serde(deserialize_with = "scalar::text")]
    pub host: String,
}

impl VmHostSpec {
    pub fn build(self) -> Result<VmHost, ModuleError> {
        check_name(ModuleKind::VmHost, "vm", &self.vm)?;
        check_name(ModuleKind::VmHost, "host", &self.host)?;
        Ok(VmHost { spec: self })
    }
}

/// The built `vm_host` module.
#[derive(Debug, Clone)]
pub struct VmHost {
    spec: VmHostSpec,
}

impl VmHost {
    fn migrate_to(&self, host: &str) -> Action {
        Action::api(
            "migrateVirtualMachine",
            [
                ("virtualmachineid", self.spec.vm.clone()),
                ("hostid", host.to_string()),
            ],
        )
    }

    /// Refuses a VM that is not Running: only a running VM migrates live.
    fn must_run(&self, state: &Value) -> Result<(), ModuleError> {
        match state_str(state, "state")? {
            "Running" => Ok(()),
            "Migrating" => Err(ModuleError::Refused(format!(
                "VM {} is Migrating (a migration is in progress): wait for it to end",
                self.spec.vm
            ))),
            other => Err(ModuleError::Refused(format!(
                "VM {} is {other}: only a Running VM can be migrated",
                self.spec.vm
            ))),
        }
    }
}

impl Module for VmHost {
    fn kind(&self) -> ModuleKind {
        ModuleKind::VmHost
    }

    fn describe(&self) -> String {
        format!("VM {} on host {}", self.spec.vm, self.spec.host)
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::api(
            "listVirtualMachines",
            [("id", self.spec.vm.as_str()), ("listall", "true")],
        )]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let reply = one_api(results, "listVirtualMachines")?;
        let items = list_items(reply, "listVirtualMachines", "virtualmachine")?;
        let vm = items
            .iter()
            .find(|v| v.get("id").and_then(Value::as_str) == Some(self.spec.vm.as_str()))
            .ok_or_else(|| ModuleError::Refused(format!("no VM with id {}", self.spec.vm)))?;
        let text = |k: &str| vm.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(json!({
            "hostid": text("hostid"),
            "hostname": text("hostname"),
            "state": text("state").unwrap_or_default(),
        }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let host = state_opt_str(before, "hostid")?;
        if host == Some(self.spec.host.as_str()) {
            return Ok(None);
        }
        self.must_run(before)?;
        let was = state_opt_str(before, "hostname")?
            .or(host)
            .unwrap_or("(none)");
        Ok(Some(Diff::one("host", was, self.spec.host.as_str())))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        if self.diff(before)?.is_none() {
            return Ok(vec![]);
        }
        Ok(vec![self.migrate_to(&self.spec.host)])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        match state_opt_str(before, "hostid")? {
            Some(h) if h == self.spec.host => Ok(vec![]),
            Some(h) => Ok(vec![self.migrate_to(h)]),
            None => Err(ModuleError::InvalidState(
                "the VM had no host before (it was not running): nothing to migrate it back to"
                    .into(),
            )),
        }
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        same_fields(before, now, &["hostid"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_host(vm: &str, host: &str) -> VmHost {
        VmHostSpec {
            vm: vm.into(),
            host: host.into(),
        }
        .build()
        .unwrap()
    }

    fn reply(items: Value) -> Vec<ActionResult> {
        vec![ActionResult::Api(
            json!({ "count": items.as_array().map_or(0, Vec::len), "virtualmachine": items }),
        )]
    }

    fn args(a: &Action) -> Vec<(String, String)> {
        match a {
            Action::Api(c) => c.args.clone().into_iter().collect(),
            other => panic!("not an API call: {other:?}"),
        }
    }

    #[test]
    fn reads_the_host_and_migrates_there_and_back() {
        let m = vm_host("vm-1", "h-2");
        let check = m.check();
        assert_eq!(
            args(&check[0]),
            [
                ("id".to_string(), "vm-1".to_string()),
                ("listall".into(), "true".into())
            ]
        );
        let before = m
            .observe(&reply(json!([
                {"id": "vm-1", "hostid": "h-1", "hostname": "kvm-a1", "state": "Running"}
            ])))
            .unwrap();
        assert_eq!(
            before,
            json!({"hostid": "h-1", "hostname": "kvm-a1", "state": "Running"})
        );
        assert_eq!(
            m.diff(&before).unwrap().unwrap().to_string(),
            "host: kvm-a1 -> h-2"
        );
        let change = m.change(&before).unwrap();
        assert_eq!(change.len(), 1);
        assert_eq!(
            change[0].to_string().split_whitespace().next(),
            Some("migrateVirtualMachine")
        );
        assert!(args(&change[0]).contains(&("hostid".into(), "h-2".into())));
        let undo = m.undo(&before).unwrap();
        assert!(args(&undo[0]).contains(&("hostid".into(), "h-1".into())));
        assert!(args(&undo[0]).contains(&("virtualmachineid".into(), "vm-1".into())));
        let moved = json!({"hostid": "h-2", "hostname": "kvm-c1", "state": "Running"});
        assert!(!m.restored(&before, &moved));
        assert_eq!(m.remaining(&moved).unwrap(), None);
        assert!(m.restored(&before, &before));
    }

    #[test]
    fn a_vm_already_there_needs_nothing_and_has_nothing_to_undo() {
        let m = vm_host("vm-1", "h-1");
        let here = json!({"hostid": "h-1", "hostname": "kvm-a1", "state": "Running"});
        assert_eq!(m.diff(&here).unwrap(), None);
        assert!(m.change(&here).unwrap().is_empty());
        assert!(m.undo(&here).unwrap().is_empty());
    }

    #[test]
    fn only_a_running_vm_is_migrated() {
        let m = vm_host("vm-1", "h-2");
        let migrating = json!({"hostid": "h-1", "hostname": "kvm-a1", "state": "Migrating"});
        let e = m.diff(&migrating).unwrap_err().to_string();
        assert!(e.contains("is Migrating"), "{e}");
        let stopped = json!({"hostid": null, "hostname": null, "state": "Stopped"});
        let e = m.diff(&stopped).unwrap_err().to_string();
        assert_eq!(e, "VM vm-1 is Stopped: only a Running VM can be migrated");
        assert!(m.undo(&stopped).is_err());
    }

    #[test]
    fn a_vm_that_is_not_there_is_an_error_naming_it() {
        let m = vm_host("vm-9", "h-2");
        let e = m.observe(&reply(json!([]))).unwrap_err().to_string();
        assert_eq!(e, "no VM with id vm-9");
        let e = m.observe(&[ActionResult::Api(json!({}))]).unwrap_err();
        assert_eq!(e.to_string(), "no VM with id vm-9");
    }

    #[test]
    fn hostile_ids_are_refused() {
        let e = VmHostSpec {
            vm: "--all".into(),
            host: "h".into(),
        }
        .build()
        .unwrap_err();
        assert!(e.to_string().contains("must not start with '-'"), "{e}");
    }
}
