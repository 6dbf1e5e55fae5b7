//! `listVolumes`: every live VM's ROOT volume (the zone models no data disks), named and
//! shaped as CloudStack's volume responses are (`ROOT-<instance number>`, type `ROOT`,
//! device 0, `Ready`, on the zone's one shared primary storage pool).
//!
//! Which volumes a root admin sees follows 4.18's `searchForVolumesInternal`: the volumes of
//! system VMs (routers, the SSVM and the CPVM) only with `listsystemvms=true`; then the
//! account scope of `lists.rs` (a VM's volume belongs to the VM's account: `ops` for guest VMs
//! and routers, `system` for the SSVM and CPVM). `virtualmachineid` and `hostid` pick the
//! volumes of one VM, or of the VMs on one host; the other filters are `lists.rs`'s.
//! Sizes are the simulator's own: 8 GiB for a guest VM's ROOT disk (its template's size),
//! 5 GiB for a system VM's.

use serde_json::{json, Value};

use super::model::{id_for, Vm, VmKind, World, DOMAIN, USER_ACCOUNT};
use super::Params;

/// The account that owns the SSVM and CPVM, and their volumes.
const SYSTEM_ACCOUNT: &str = "system";

/// The zone's primary storage pool (shared, NFS).
const POOL: &str = "primary-nfs1";

const GIB: u64 = 1 << 30;

/// The ROOT volumes the caller may list before `lists.rs`'s scope and filters.
pub(super) fn volumes(w: &World, p: &Params) -> Vec<Value> {
    w.vms
        .iter()
        .filter(|v| v.live())
        .filter(|v| v.is_guest() || p.flag("listsystemvms"))
        .filter(|v| p.get("virtualmachineid").is_none_or(|id| v.id == id))
        .filter(|v| {
            p.get("hostid")
                .is_none_or(|h| v.hostid == h && v.state != "Stopped")
        })
        .map(|v| root_volume(w, v))
        .collect()
}

/// Whether `id` names a volume of the zone.
pub(super) fn is_volume(w: &World, id: &str) -> bool {
    w.vms.iter().any(|v| v.live() && volume_id(v) == id)
}

fn volume_id(v: &Vm) -> String {
    id_for("volume", &format!("ROOT-{}", v.number))
}

/// A VM's ROOT volume as `listVolumes` shows it.
fn root_volume(w: &World, v: &Vm) -> Value {
    let (vmtype, account, size) = match &v.kind {
        VmKind::Guest { .. } => ("User", USER_ACCOUNT, 8 * GIB),
        VmKind::Router { .. } => ("DomainRouter", USER_ACCOUNT, 5 * GIB),
        VmKind::SystemVm { .. } if v.is_ssvm() => ("SecondaryStorageVm", SYSTEM_ACCOUNT, 5 * GIB),
        VmKind::SystemVm { .. } => ("ConsoleProxy", SYSTEM_ACCOUNT, 5 * GIB),
    };
    let host = w.host(&v.hostid);
    let cluster = host.and_then(|h| w.cluster(&h.clusterid));
    let id = volume_id(v);
    let mut item = json!({
        "id": id, "name": format!("ROOT-{}", v.number), "type": "ROOT", "deviceid": 0,
        "state": "Ready", "size": size, "virtualsize": size, "physicalsize": size / 4,
        "provisioningtype": "thin", "storagetype": "shared", "hypervisor": "KVM",
        "storage": POOL, "storageid": id_for("storagepool", POOL), "path": id,
        "virtualmachineid": v.id, "vmname": v.name, "vmdisplayname": v.name,
        "vmstate": v.state, "vmtype": vmtype,
        "zoneid": w.zone_id, "zonename": w.zone_name, "podid": w.pod_id, "podname": "pod1",
        "clusterid": cluster.map_or("", |c| c.id.as_str()),
        "clustername": cluster.map_or("", |c| c.name.as_str()),
        "account": account, "domain": DOMAIN, "domainid": w.domain_id,
        "created": "2029-12-01T09:00:00+0000", "attached": "2029-12-01T09:00:00+0000",
        "destroyed": false, "isextractable": false, "displayvolume": true, "quiescevm": false,
        "supportsstoragesnapshot": false, "hasannotations": false,
    });
    let offering = match &v.kind {
        VmKind::Guest { .. } => w.offering(&v.offeringid).map(|o| o.name.clone()),
        _ => super::catalog::system_offering_name(&v.offeringid).map(str::to_string),
    };
    if let Some(name) = offering {
        item["serviceofferingid"] = json!(v.offeringid);
        item["serviceofferingname"] = json!(name);
        item["serviceofferingdisplaytext"] = json!(name);
    }
    if let Some(t) = w.template(&v.templateid) {
        item["templateid"] = json!(t.id);
        item["templatename"] = json!(t.name);
        item["templatedisplaytext"] = json!(t.name);
    }
    item
}
