//! The API views of compute placement: `listClusters`, `listServiceOfferings` and
//! `listTemplates` items, the capacity and tag fields of `listHosts`, and the offering and
//! template fields of `listVirtualMachines`, named as CloudStack's responses name them.
//!
//! Capacity fields: `cpunumber`, `cpuspeed` (MHz), `cpuallocated` (a percentage as text,
//! `"25%"`), `cpuallocatedvalue` (MHz), `cpuallocatedpercentage`, `cpuwithoverprovisioning`
//! (total MHz as text, overcommit ratio 1), `memorytotal`, `memoryallocated` (bytes, as numbers),
//! `memoryallocatedbytes`, `memoryallocatedpercentage`, `memorywithoverprovisioning`. Host tags
//! are one comma-separated text (`hosttags`), as the real API gives them.

use serde_json::{json, Value};

use super::model::{Cluster, Host, Offering, Template, Vm, World, DOMAIN, USER_ACCOUNT};

/// `12.5%`, as CloudStack formats allocated percentages.
fn percent(used: u64, total: u64) -> String {
    if total == 0 || used == 0 {
        return "0%".into();
    }
    let p = used as f64 * 100.0 / total as f64;
    let text = format!("{p:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

pub(super) fn cluster_json(w: &World, c: &Cluster) -> Value {
    json!({
        "id": c.id, "name": c.name, "podid": w.pod_id, "podname": "pod1",
        "zoneid": w.zone_id, "zonename": w.zone_name, "hypervisortype": "KVM",
        "clustertype": "CloudManaged", "allocationstate": "Enabled", "managedstate": "Managed",
        "cpuovercommitratio": "1.0", "memoryovercommitratio": "1.0",
    })
}

pub(super) fn offering_json(o: &Offering) -> Value {
    json!({
        "id": o.id, "name": o.name, "displaytext": o.name, "cpunumber": o.cpunumber,
        "cpuspeed": o.cpuspeed, "memory": o.memory, "hosttags": o.hosttags.join(","),
        "storagetype": "shared", "offerha": false, "limitcpuuse": false, "issystem": false,
        "defaultuse": false, "iscustomized": false, "provisioningtype": "thin",
        "created": "2029-12-01T09:00:00+0000", "state": "Active",
    })
}

pub(super) fn template_json(w: &World, t: &Template) -> Value {
    json!({
        "id": t.id, "name": t.name, "displaytext": t.name, "templatetag": t.templatetag,
        "ispublic": true, "isfeatured": true, "isready": true, "status": "Download Complete",
        "templatetype": "USER", "hypervisor": "KVM", "format": "QCOW2",
        "ostypename": "Other Linux (64-bit)", "passwordenabled": false, "bootable": true,
        "zoneid": w.zone_id, "zonename": w.zone_name, "account": "system", "domain": DOMAIN,
        "domainid": w.domain_id, "created": "2029-12-01T09:00:00+0000",
    })
}

/// Adds a hypervisor's cluster, tags and capacity fields to its `listHosts` item, with
/// `allocated` its [`World::allocated`] CPU and memory.
pub(super) fn host_capacity(w: &World, h: &Host, allocated: (u64, u64), item: &mut Value) {
    let Some(item) = item.as_object_mut() else {
        return;
    };
    let (cpu, mem) = allocated;
    let cpu_total = u64::from(h.cpunumber) * h.cpuspeed;
    let cluster = w.cluster(&h.clusterid);
    let cpu_percent = percent(cpu, cpu_total);
    let fields = [
        ("clusterid", json!(h.clusterid)),
        (
            "clustername",
            json!(cluster.map_or("", |c| c.name.as_str())),
        ),
        ("clustertype", json!("CloudManaged")),
        ("hosttags", json!(h.hosttags.join(","))),
        ("cpunumber", json!(h.cpunumber)),
        ("cpuspeed", json!(h.cpuspeed)),
        ("cpusockets", json!(2)),
        ("cpuallocated", json!(cpu_percent)),
        ("cpuallocatedvalue", json!(cpu)),
        ("cpuallocatedpercentage", json!(cpu_percent)),
        ("cpuwithoverprovisioning", json!(format!("{cpu_total}.0"))),
        ("memorytotal", json!(h.memory)),
        ("memoryallocated", json!(mem)),
        ("memoryallocatedbytes", json!(mem)),
        ("memoryallocatedpercentage", json!(percent(mem, h.memory))),
        (
            "memorywithoverprovisioning",
            json!(format!("{}.0", h.memory)),
        ),
    ];
    for (key, value) in fields {
        item.insert(key.to_string(), value);
    }
}

/// Adds a guest VM's offering, template and size fields to its `listVirtualMachines` item.
pub(super) fn vm_compute(w: &World, v: &Vm, item: &mut Value) {
    let offering = w.offering(&v.offeringid);
    let template = w.template(&v.templateid);
    let fields = json!({
        "serviceofferingid": v.offeringid,
        "serviceofferingname": offering.map_or("", |o| o.name.as_str()),
        "cpunumber": offering.map_or(0, |o| o.cpunumber),
        "cpuspeed": offering.map_or(0, |o| o.cpuspeed),
        "memory": offering.map_or(0, |o| o.memory),
        "templateid": v.templateid,
        "templatename": template.map_or("", |t| t.name.as_str()),
        "templatedisplaytext": template.map_or("", |t| t.name.as_str()),
        "account": USER_ACCOUNT,
    });
    if let (Some(item), Value::Object(fields)) = (item.as_object_mut(), fields) {
        item.extend(fields);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentages_read_as_cloudstack_writes_them() {
        assert_eq!(super::percent(0, 100), "0%");
        assert_eq!(super::percent(1, 8), "12.5%");
        assert_eq!(super::percent(1, 3), "33.33%");
        assert_eq!(super::percent(5, 0), "0%");
    }
}
