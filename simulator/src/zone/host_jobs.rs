//! What the host and placement jobs do: `prepareHostForMaintenance`, `cancelHostMaintenance`,
//! `migrateVirtualMachine` (to an explicit `hostid`) and `removeNicFromVirtualMachine`. The
//! job machinery (`jobs.rs`) queues them, checks each with `*_check` when it is queued (a
//! failed check fails the job with its code, as the real command fails inside its job), shows
//! the transitional state with `*_start` and applies `*_done` when the job ends.
//!
//! **Maintenance** (CloudStack 4.20, KVM). Allowed from `Enabled`, `Disabled` and
//! `ErrorInMaintenance`; the host shows `PrepareForMaintenance` while the job runs. When it
//! ends, every VM on the host that is not Stopped is moved where the allocator says
//! ([`World::migrate_away_target`], with its FirstFit bug); VMs with a place move even when
//! others have none. If every VM moved, the host is in `Maintenance`; otherwise it goes to
//! `ErrorInMaintenance` and the job fails with 530 naming each VM left behind (the real
//! server fails the VMs' migration work jobs and puts the host in the same state; the
//! simulator fails the API job as well, so a caller polling it sees the failure). From
//! `ErrorInMaintenance` the operator migrates the stranded VMs by hand and asks again, or
//! cancels. `cancelHostMaintenance` brings a host in any maintenance state back to `Enabled`.
//!
//! **Migration** (`migrateVirtualMachine` with `hostid`): the VM must be a Running guest VM;
//! the destination another host that is Up and Enabled, carries the VM's tags (offering and
//! template) and has room; the VM shows `Migrating` meanwhile and then runs on the new host,
//! its capacity with it. The source host may not be in `PrepareForMaintenance`.
//!
//! **Removing a NIC** marks the NIC removed (it leaves `listNics` and the VM's `nic` list)
//! and takes its link out of the VM; the default NIC cannot be removed (431).

use serde_json::{json, Value};

use super::lists::vm_json;
use super::model::World;
use super::Zone;

/// Resource states from which a host may be asked into maintenance.
const MAINTAINABLE: [&str; 3] = ["Enabled", "Disabled", "ErrorInMaintenance"];
/// Resource states `cancelHostMaintenance` leaves.
const IN_MAINTENANCE: [&str; 4] = [
    "PrepareForMaintenance",
    "ErrorInPrepareForMaintenance",
    "ErrorInMaintenance",
    "Maintenance",
];

type Failure = (u16, String);

impl Zone {
    fn host_item(&self, hostid: &str) -> Value {
        self.hosts_json()
            .into_iter()
            .find(|h| h["id"] == hostid)
            .unwrap_or(Value::Null)
    }

    fn routing_host(&self, hostid: &str) -> Result<&super::model::Host, Failure> {
        self.world.host(hostid).ok_or_else(|| {
            (
                431,
                format!("Unable to find a host of type Routing with id {hostid}: only hypervisors can be put into maintenance"),
            )
        })
    }

    pub(super) fn maintain_check(&self, hostid: &str) -> Result<(), Failure> {
        let h = self.routing_host(hostid)?;
        if MAINTAINABLE.contains(&h.resourcestate.as_str()) {
            return Ok(());
        }
        Err((
            530,
            format!(
                "Unable to prepare host {} for maintenance: its resource state is {}",
                h.name, h.resourcestate
            ),
        ))
    }

    /// The state a host shows while it prepares; returns the state it had.
    pub(super) fn maintain_start(&mut self, hostid: &str) -> String {
        let Some(h) = self.world.hosts.iter_mut().find(|h| h.id == hostid) else {
            return String::new();
        };
        std::mem::replace(&mut h.resourcestate, "PrepareForMaintenance".into())
    }

    /// Puts a host back as it was before a job that failed by injection.
    pub(super) fn set_resourcestate(&mut self, hostid: &str, state: &str) {
        if let Some(h) = self.world.hosts.iter_mut().find(|h| h.id == hostid) {
            h.resourcestate = state.to_string();
        }
    }

    pub(super) fn maintain_done(&mut self, hostid: &str) -> Result<Value, Failure> {
        let name = self.routing_host(hostid)?.name.clone();
        if self.world.host(hostid).map(|h| h.resourcestate.as_str())
            != Some("PrepareForMaintenance")
        {
            return Err((
                530,
                format!("Maintenance of host {name} was cancelled while it was being prepared"),
            ));
        }
        let vms: Vec<String> = self
            .world
            .running_on(hostid)
            .iter()
            .map(|v| v.id.clone())
            .collect();
        let mut stranded = Vec::new();
        for id in vms {
            let vm = self.world.vm(&id).expect("listed").clone();
            match self.world.migrate_away_target(&vm, hostid) {
                Ok(to) => self.world.move_vm(&id, &to),
                Err(e) => stranded.push(format!("{} ({}): {e}", vm.log_name(), vm.name)),
            }
        }
        if stranded.is_empty() {
            self.set_resourcestate(hostid, "Maintenance");
            return Ok(json!({"host": self.host_item(hostid)}));
        }
        self.set_resourcestate(hostid, "ErrorInMaintenance");
        Err((
            530,
            format!(
                "Failed to prepare host {name} for maintenance, it is now in ErrorInMaintenance: unable to migrate {} VM(s) away: {}",
                stranded.len(),
                stranded.join("; ")
            ),
        ))
    }

    pub(super) fn cancel_check(&self, hostid: &str) -> Result<(), Failure> {
        let h = self.routing_host(hostid)?;
        if IN_MAINTENANCE.contains(&h.resourcestate.as_str()) {
            return Ok(());
        }
        Err((
            530,
            format!(
                "Cannot perform cancelMaintenance when resource state is {}, hostId = {}",
                h.resourcestate, h.id
            ),
        ))
    }

    pub(super) fn cancel_done(&mut self, hostid: &str) -> Result<Value, Failure> {
        self.cancel_check(hostid)?;
        self.set_resourcestate(hostid, "Enabled");
        Ok(json!({"host": self.host_item(hostid)}))
    }

    pub(super) fn migrate_check(&self, vmid: &str, hostid: &str) -> Result<(), Failure> {
        let w = &self.world;
        let vm = w.vm(vmid).expect("validated id");
        if !vm.is_guest() {
            return Err((
                431,
                format!(
                    "{} is not a user VM: use migrateSystemVm for system VMs and routers",
                    vm.log_name()
                ),
            ));
        }
        if hostid.is_empty() {
            return Err((
                431,
                "The simulated zone migrates only to an explicit hostid".into(),
            ));
        }
        if vm.state != "Running" {
            return Err((
                431,
                format!(
                    "VM is not Running, unable to migrate the vm {}",
                    vm.log_name()
                ),
            ));
        }
        let Some(dest) = w.host(hostid) else {
            return Err((431, format!("Unable to find the host with id {hostid}")));
        };
        if dest.id == vm.hostid {
            return Err((
                431,
                "Cannot migrate VM, VM is already present on this host, please specify valid destination host to migrate the VM".into(),
            ));
        }
        if w.host(&vm.hostid)
            .is_some_and(|h| h.resourcestate == "PrepareForMaintenance")
        {
            return Err((
                530,
                format!(
                    "Unable to migrate {}: its host is in PrepareForMaintenance",
                    vm.log_name()
                ),
            ));
        }
        if !World::takes_vms(dest) {
            return Err((
                431,
                format!(
                    "Cannot migrate VM, destination host is not in correct state, has status: {}, state: {}",
                    dest.state, dest.resourcestate
                ),
            ));
        }
        if !w.tags_match(dest, vm) {
            return Err((
                431,
                format!(
                    "Cannot migrate VM, destination host {} has host tags [{}] but {} needs [{}]",
                    dest.name,
                    dest.hosttags.join(","),
                    vm.log_name(),
                    w.tags_needed(vm).join(",")
                ),
            ));
        }
        if !w.has_room(dest, vm) {
            return Err((
                533,
                format!(
                    "Cannot migrate VM, destination host {} does not have enough capacity for {}",
                    dest.name,
                    vm.log_name()
                ),
            ));
        }
        Ok(())
    }

    /// The VM shows `Migrating` while its job runs.
    pub(super) fn set_vm_state(&mut self, vmid: &str, state: &str) {
        if let Some(vm) = self.world.vm_mut(vmid) {
            vm.state = state.to_string();
        }
    }

    pub(super) fn migrate_done(&mut self, vmid: &str, hostid: &str) -> Result<Value, Failure> {
        self.world.move_vm(vmid, hostid);
        self.set_vm_state(vmid, "Running");
        let vm = self.world.vm(vmid).expect("exists");
        Ok(json!({"virtualmachine": vm_json(&self.world, vm)}))
    }

    pub(super) fn remove_nic_check(&self, vmid: &str, nicid: &str) -> Result<(), Failure> {
        let vm = self.world.vm(vmid).expect("validated id");
        let nics = super::lists::nics(&self.world, vm);
        let Some(nic) = nics.iter().find(|n| n["id"] == nicid) else {
            return Err((
                431,
                format!("Unable to find nic {nicid} on {}", vm.log_name()),
            ));
        };
        if nic["isdefault"] == true {
            let net = nic["networkname"].as_str().unwrap_or_default();
            return Err((
                431,
                format!(
                    "Unable to remove nic from {} in network {net}, nic is default.",
                    vm.log_name()
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn remove_nic_done(&mut self, vmid: &str, nicid: &str) -> Result<Value, Failure> {
        self.remove_nic_check(vmid, nicid)?;
        let vm = self.world.vm(vmid).expect("exists");
        let nics = super::lists::nics(&self.world, vm);
        let dev = nics
            .iter()
            .find(|n| n["id"] == nicid)
            .and_then(|n| n["deviceid"].as_str())
            .and_then(|d| d.parse::<usize>().ok())
            .unwrap_or_default();
        let vm = self.world.vm_mut(vmid).expect("exists");
        if let Some(nic) = vm.extra_nics.iter_mut().find(|n| n.deviceid == dev) {
            nic.removed = true;
        }
        vm.guest.links.remove(&format!("eth{dev}"));
        let vm = self.world.vm(vmid).expect("exists");
        Ok(json!({"virtualmachine": vm_json(&self.world, vm)}))
    }
}
