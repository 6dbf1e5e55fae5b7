//! The list commands: what each returns (the API view of the zone's objects, with derived
//! fields computed here at reply time), the filters, account scope, and paging.
//!
//! Account scope: the caller is the root admin (account `admin`). VPCs, networks, their
//! routers and guest VMs belong to the user account `ops`; `listVPCs`, `listNetworks`,
//! `listRouters` and `listVirtualMachines` show them only with `listall=true`, with
//! `account=ops` (or `domainid` of ROOT), or when asked for by `id` — as 4.18's
//! `buildACLSearchParameters` scopes a root admin's lists ([`Zone::acl`]). System VMs,
//! hosts, settings and the caller's own async jobs are always listed.

use serde_json::{json, Map, Value};

use super::compute_views::{cluster_json, host_capacity, offering_json, template_json, vm_compute};
use super::model::{
    id_for, Network, Vm, VmKind, World, ACCOUNTS, ADMIN_ACCOUNT, DOMAIN, USER_ACCOUNT, VERSION,
};
use super::{vlan, Params, Zone};
use crate::apis::ApiSpec;

/// Lists whose items belong to an account (see the module doc).
const ACCOUNT_SCOPED: [&str; 5] = [
    "listVPCs",
    "listNetworks",
    "listVirtualMachines",
    "listRouters",
    "listVolumes",
];

/// The ROOT domain as the server's messages print it (`DomainVO.toString`: id and path).
const ROOT_DOMAIN_TEXT: &str = "Domain:1/";

/// Which items of an account-scoped list the caller sees.
pub(super) enum Acl {
    All,
    /// The items of one account (by name).
    Account(&'static str),
    /// The items of one domain (by id).
    Domain(String),
}

impl Acl {
    pub(super) fn admits(&self, item: &Value) -> bool {
        match self {
            Acl::All => true,
            Acl::Account(name) => item["account"] == *name,
            Acl::Domain(id) => item["domainid"] == id.as_str(),
        }
    }
}

/// Fields compared for equality (ignoring ASCII case) with the parameter of the same name,
/// when the command declares that parameter.
const EQUALITY_FILTERS: [&str; 20] = [
    "id",
    "serviceofferingid",
    "templateid",
    "zoneid",
    "podid",
    "clusterid",
    "vpcid",
    "hostid",
    "state",
    "systemvmtype",
    "type",
    "physicalnetworkid",
    "traffictype",
    "resourcestate",
    "hypervisor",
    "version",
    "restartrequired",
    "category",
    "nspid",
    "enabled",
];

impl Zone {
    /// Runs a list command: items, then scope, filters, job marks and paging.
    pub(super) fn list(&self, spec: &ApiSpec, p: &Params) -> Result<Value, (u16, String)> {
        let items = self.items(spec, p)?;
        let acl = if ACCOUNT_SCOPED.contains(&spec.name.as_str()) {
            self.acl(p)?
        } else {
            Acl::All
        };
        let items: Vec<Value> = items
            .into_iter()
            .filter(|item| acl.admits(item))
            .filter(|item| self.in_network_listing(spec, p, item))
            .filter(|item| matches(spec, p, item))
            .map(|item| self.mark_job(item))
            .collect();
        Ok(self.page(spec, p, items))
    }

    /// The account scope of a list, as 4.18's `buildACLSearchParameters` decides it for the
    /// root admin: `account` (in `domainid`, else the caller's domain) names one account; else
    /// `domainid` one domain; else, without `listall=true` and without `id`, the caller's own
    /// account; else everything.
    pub(super) fn acl(&self, p: &Params) -> Result<Acl, (u16, String)> {
        let w = &self.world;
        if let Some(name) = p.get("account") {
            let domain = p.get("domainid").unwrap_or(&w.domain_id);
            return ACCOUNTS
                .iter()
                .find(|a| **a == name && domain == w.domain_id)
                .map(|a| Acl::Account(a))
                .ok_or_else(|| {
                    (
                        431,
                        format!("could not find account {name} in domain {ROOT_DOMAIN_TEXT}"),
                    )
                });
        }
        if let Some(domain) = p.get("domainid") {
            return Ok(Acl::Domain(domain.to_string()));
        }
        if !p.flag("listall") && p.get("id").is_none() {
            return Ok(Acl::Account(ADMIN_ACCOUNT));
        }
        Ok(Acl::All)
    }

    /// Every item of a list command before filtering.
    fn items(&self, spec: &ApiSpec, p: &Params) -> Result<Vec<Value>, (u16, String)> {
        let w = &self.world;
        let items = match spec.name.as_str() {
            "listZones" => vec![json!({
                "id": w.zone_id, "name": w.zone_name, "allocationstate": "Enabled",
                "networktype": "Advanced", "dhcpprovider": "VirtualRouter",
                "securitygroupsenabled": false, "localstorageenabled": false,
                "guestcidraddress": "10.1.0.0/16", "dns1": "10.1.0.2", "internaldns1": "10.1.0.2",
            })],
            "listPhysicalNetworks" => w
                .physnets
                .iter()
                .map(|pn| self.physnet_json(&pn.id))
                .collect(),
            "listTrafficTypes" => w
                .physnets
                .iter()
                .filter(|pn| p.get("physicalnetworkid") == Some(pn.id.as_str()))
                .flat_map(|pn| {
                    pn.traffic.iter().map(|t| {
                        json!({
                            "id": t.id, "traffictype": t.traffictype, "physicalnetworkid": pn.id,
                            "kvmnetworklabel": t.kvmnetworklabel, "xennetworklabel": "",
                            "vmwarenetworklabel": "", "isolationmethods": "VLAN",
                            "vlan": if t.traffictype == "Guest" { pn.vlan.as_str() } else { "" },
                        })
                    })
                })
                .collect(),
            // every router is a VPC router, so `forvpc=false` lists none
            "listRouters" if p.flag_is("forvpc", false) => Vec::new(),
            "listRouters" => w
                .vms
                .iter()
                .filter(|v| matches!(v.kind, VmKind::Router { .. }) && v.live())
                .map(|v| self.router_json(v))
                .collect(),
            "listVPCs" => w.vpcs.iter().map(|v| self.vpc_json(&v.id)).collect(),
            "listNetworks" => w.networks.iter().map(|n| network_json(w, n)).collect(),
            "listVirtualMachines" => w
                .vms
                .iter()
                .filter(|v| matches!(v.kind, VmKind::Guest { .. }) && v.live())
                .map(|v| vm_json(w, v))
                .collect(),
            "listSystemVms" => w
                .vms
                .iter()
                .filter(|v| matches!(v.kind, VmKind::SystemVm { .. }) && v.live())
                .map(|v| self.systemvm_json(v))
                .collect(),
            "listConfigurations" => {
                let scope = super::settings::scope_given(p)?;
                w.settings
                    .iter()
                    .filter(|s| p.get("name").is_none_or(|n| contains(&s.name, n)))
                    .filter(|s| scope.as_ref().is_none_or(|(sc, _)| s.scopes.iter().any(|x| x == sc)))
                    .map(|s| {
                        let mut item = super::settings::setting_json(s);
                        if let Some((sc, id)) = &scope {
                            item["value"] = json!(super::settings::value_at(s, sc, id));
                            item["scope"] = json!(sc.to_ascii_lowercase());
                            item["id"] = json!(id);
                        }
                        item
                    })
                    .collect()
            }
            "listHosts" => self
                .hosts_json()
                .into_iter()
                .filter(|h| {
                    p.get("virtualmachineid").is_none_or(|vm| {
                        w.vm(vm).is_some_and(|v| {
                            v.live() && v.state != "Stopped" && h["id"] == v.hostid
                        })
                    })
                })
                .collect(),
            "listCapacity" => capacity_json(w),
            "listClusters" => w.clusters.iter().map(|c| cluster_json(w, c)).collect(),
            "listServiceOfferings" if p.flag("issystem") => super::catalog::system_offerings(p),
            "listServiceOfferings" => w.offerings.iter().map(offering_json).collect(),
            "listDomains" => super::catalog::domains(w),
            "listAccounts" => super::catalog::accounts(w, p),
            "listVPCOfferings" => super::catalog::vpc_offerings(p),
            "listNetworkServiceProviders" => super::providers::providers(w),
            "listVirtualRouterElements" | "listInternalLoadBalancerElements" => {
                let kind = super::providers::Element::of_command(&spec.name);
                super::providers::elements(w, kind.expect("an element list"))
            }
            "listVolumes" => super::volumes::volumes(w, p),
            "listTags" => Vec::new(),
            "listTemplates" => w.templates.iter().map(|t| template_json(w, t)).collect(),
            "listAsyncJobs" => self.jobs.iter().map(|j| self.job_json(j)).collect(),
            "listManagementServers" => w
                .mgmts()
                .map(|m| {
                    json!({
                        "id": m.id, "name": m.name, "state": "Up", "version": VERSION,
                        "javaversion": "11.0.22", "osdistribution": "Ubuntu 22.04.4 LTS",
                        "kernelversion": "5.15.0-105-generic", "serviceip": m.ipaddress,
                        "lastserverstart": "2029-12-31T08:00:00+0000", "lastboottime": "2029-12-31T07:58:12+0000",
                    })
                })
                .collect(),
            "listNics" => w
                .vm(p.get("virtualmachineid").unwrap_or_default())
                .map(|v| nics(w, v))
                .unwrap_or_default()
                .into_iter()
                .filter(|n| p.get("nicid").is_none_or(|id| n["id"] == id))
                .collect(),
            other => {
                return Err((
                    432,
                    format!("The API {other} is not available in the simulated zone"),
                ))
            }
        };
        Ok(items)
    }

    /// `listVirtualMachines networkid=N` as CloudStack 4.19.1.2 answers it: a guest VM that
    /// has, or ever had, a NIC on N (a NIC removed with removeNicFromVirtualMachine still
    /// counts: the query does not look at the NIC's `removed` mark). Other lists pass.
    fn in_network_listing(&self, spec: &ApiSpec, p: &Params, item: &Value) -> bool {
        let Some(net) = p
            .get("networkid")
            .filter(|_| spec.name == "listVirtualMachines")
        else {
            return true;
        };
        let Some(vm) = item["id"].as_str().and_then(|id| self.world.vm(id)) else {
            return false;
        };
        matches!(&vm.kind, VmKind::Guest { networkid, .. } if networkid == net)
            || vm.extra_nics.iter().any(|n| n.networkid == net)
    }

    /// Adds `jobid`/`jobstatus` to an item a pending async job is acting on.
    fn mark_job(&self, mut item: Value) -> Value {
        if let Some(job) = item["id"].as_str().and_then(|id| self.pending_job_on(id)) {
            item["jobid"] = json!(job.jobid);
            item["jobstatus"] = json!(0);
        }
        item
    }

    /// `{"<envelope>": {"count": total, "<item>": [page]}}`, or `{"<envelope>": {}}` when
    /// nothing matched; a page past the end has the count and no array (the serializer
    /// leaves out empty arrays). Without paging at most `default.page.size` items are returned.
    pub(super) fn page(&self, spec: &ApiSpec, p: &Params, items: Vec<Value>) -> Value {
        let envelope = &spec.response_envelope_key;
        if items.is_empty() {
            return json!({ envelope: {} });
        }
        let key = spec.list_item_key.as_deref().unwrap_or("item");
        let count = items.len();
        let limit = self
            .world
            .page_size_limit()
            .map_or(usize::MAX, |n| n as usize);
        let (page, size) = match (p.get("page"), p.get("pagesize")) {
            (Some(page), Some(size)) => (
                page.parse::<usize>().unwrap_or(1),
                size.parse::<usize>().unwrap_or(limit),
            ),
            (None, Some("-1")) => (1, usize::MAX),
            _ => (1, limit),
        };
        let shown: Vec<Value> = items
            .into_iter()
            .skip((page - 1).saturating_mul(size))
            .take(size)
            .collect();
        if shown.is_empty() {
            return json!({ envelope: { "count": count } });
        }
        json!({ envelope: { "count": count, key: shown } })
    }

    pub(super) fn physnet_json(&self, id: &str) -> Value {
        let w = &self.world;
        let Some(pn) = w.physnets.iter().find(|p| p.id == id) else {
            return Value::Null;
        };
        json!({
            "id": pn.id, "name": pn.name, "zoneid": w.zone_id, "zonename": w.zone_name,
            "vlan": pn.vlan, "state": pn.state, "isolationmethods": "VLAN",
            "broadcastdomainrange": "ZONE", "networkspeed": "1G", "tags": "",
            "domainid": w.domain_id,
        })
    }

    pub(super) fn vpc_json(&self, id: &str) -> Value {
        let w = &self.world;
        let Some(v) = w.vpcs.iter().find(|v| v.id == id) else {
            return Value::Null;
        };
        let tiers: Vec<Value> = w
            .networks
            .iter()
            .filter(|n| n.vpcid == v.id)
            .map(|n| network_json(w, n))
            .collect();
        let offering = if v.redundant {
            "Redundant VPC offering"
        } else {
            "Default VPC offering"
        };
        json!({
            "id": v.id, "name": v.name, "displaytext": v.name, "state": "Enabled",
            "zoneid": w.zone_id, "zonename": w.zone_name, "cidr": v.cidr,
            "redundantvpcrouter": v.redundant, "restartrequired": v.restartrequired,
            "vpcofferingname": offering, "vpcofferingid": super::catalog::vpc_offering_id(offering),
            "account": USER_ACCOUNT, "domain": DOMAIN, "domainid": w.domain_id, "network": tiers,
        })
    }

    pub(super) fn router_json(&self, v: &Vm) -> Value {
        let w = &self.world;
        let Some(vpcid) = v.vpcid() else {
            return Value::Null;
        };
        let vpc = w.vpcs.iter().find(|x| x.id == vpcid);
        let host = w.host(&v.hostid);
        let first_tier = w
            .networks
            .iter()
            .find(|n| n.vpcid == vpcid && n.vlan.is_some());
        let redundantstate = w.redundant_state(v);
        let dnsmasq_down = redundantstate == "PRIMARY" && !v.guest.active("dnsmasq");
        json!({
            "id": v.id, "name": v.name, "state": v.state,
            "redundantstate": redundantstate,
            "isredundantrouter": vpc.is_some_and(|x| x.redundant),
            "linklocalip": v.linklocalip, "linklocalnetworkid": id_for("network", "control"),
            "linklocalmacaddress": format!("0e:00:a9:fe:{:02x}:{:02x}", (v.number >> 8) & 0xff, v.number & 0xff),
            "hostid": v.hostid, "hostname": host.map_or("", |h| h.name.as_str()),
            "hostcontrolstate": host.map_or("", |h| h.state.as_str()),
            "podid": w.pod_id, "zoneid": w.zone_id, "zonename": w.zone_name,
            "vpcid": vpcid, "vpcname": vpc.map_or("", |x| x.name.as_str()),
            "guestnetworkid": first_tier.map_or("", |n| n.id.as_str()),
            "guestipaddress": first_tier.map_or("", |n| n.gateway.as_str()),
            "publicip": v.publicip, "role": "VIRTUAL_ROUTER", "version": VERSION,
            "serviceofferingid": v.offeringid,
            "serviceofferingname": super::catalog::system_offering_name(&v.offeringid).unwrap_or(""),
            "requiresupgrade": false, "templateversion": "Cloudstack Release 4.18.2",
            "healthchecksfailed": dnsmasq_down,
            "account": USER_ACCOUNT, "domain": DOMAIN, "domainid": w.domain_id,
            "nic": nics(w, v),
        })
    }

    pub(super) fn systemvm_json(&self, v: &Vm) -> Value {
        let w = &self.world;
        let Some(systemvmtype) = v.systemvmtype() else {
            return Value::Null;
        };
        let host = w.host(&v.hostid);
        json!({
            "id": v.id, "name": v.name, "systemvmtype": systemvmtype, "state": v.state,
            "agentstate": agent_state(v),
            "linklocalip": v.linklocalip, "privateip": v.privateip, "publicip": v.publicip,
            "hostid": v.hostid, "hostname": host.map_or("", |h| h.name.as_str()),
            "podid": w.pod_id, "zoneid": w.zone_id, "zonename": w.zone_name, "version": VERSION,
            "activeviewersessions": 0, "dns1": "10.1.0.2",
        })
    }

    /// Hypervisors (type Routing), then the SSVM/CPVM agents as hosts of their own type.
    pub(super) fn hosts_json(&self) -> Vec<Value> {
        let w = &self.world;
        let allocated = w.allocated_by_host();
        let mut out: Vec<Value> = w
            .hosts
            .iter()
            .map(|h| {
                let mut item = json!({
                    "id": h.id, "name": h.name, "type": "Routing", "state": h.state,
                    "resourcestate": h.resourcestate, "ipaddress": h.ipaddress, "hypervisor": "KVM",
                    "podid": w.pod_id, "podname": "pod1", "zoneid": w.zone_id, "zonename": w.zone_name,
                    "version": VERSION, "managementserverid": w.mgmt.id,
                    "lastpinged": "1970-01-20T14:15:21+0000",
                });
                let used = allocated.get(h.id.as_str()).copied().unwrap_or_default();
                host_capacity(w, h, used, &mut item);
                item
            })
            .collect();
        for v in w.vms.iter().filter(|v| v.live()) {
            let Some(t) = v.systemvmtype() else { continue };
            let kind = if t == "secondarystoragevm" {
                "SecondaryStorageVM"
            } else {
                "ConsoleProxy"
            };
            out.push(json!({
                "id": id_for("agent", &v.name), "name": v.name, "type": kind,
                "state": agent_state(v), "resourcestate": "Enabled", "ipaddress": v.privateip,
                "podid": w.pod_id, "zoneid": w.zone_id, "version": VERSION,
                "managementserverid": w.mgmt.id,
            }));
        }
        out
    }
}

/// An SSVM/CPVM agent's link to the management server: Up while the VM runs and its `cloud`
/// service is active.
fn agent_state(v: &Vm) -> &'static str {
    if v.state == "Running" && v.guest.active("cloud") {
        "Up"
    } else {
        "Disconnected"
    }
}

/// Case-insensitive substring match (SQL `LIKE %x%` under MySQL's usual collation).
fn contains(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// An item's field as text, for comparing with a parameter.
fn field_text(item: &Map<String, Value>, key: &str) -> Option<String> {
    match item.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Whether an item passes the filters the caller gave (see [`EQUALITY_FILTERS`]; `name`
/// exact, or substring for listConfigurations/listVirtualMachines; `keyword` substring of
/// the name; `ids`; `networkid` among the item's NICs).
fn matches(spec: &ApiSpec, p: &Params, item: &Value) -> bool {
    let Some(obj) = item.as_object() else {
        return true;
    };
    let declared = |name: &str| spec.params.iter().any(|x| x.name == name);
    let text = |k: &str| field_text(obj, k);
    for key in EQUALITY_FILTERS {
        let Some(want) = p.get(key).filter(|_| declared(key)) else {
            continue;
        };
        // listConfigurations' scope ids pick the values, not the items (see settings.rs);
        // listVolumes' hostid picks the volumes' VMs (see volumes.rs)
        let scope_id = spec.name == "listConfigurations" && key.ends_with("id");
        let vm_host = spec.name == "listVolumes" && key == "hostid";
        if spec.name == "listTrafficTypes" || scope_id || vm_host {
            continue;
        }
        if !text(key).is_some_and(|have| have.eq_ignore_ascii_case(want)) {
            return false;
        }
    }
    if let Some(want) = p.get("name").filter(|_| declared("name")) {
        let have = text("name").unwrap_or_default();
        let ok = match spec.name.as_str() {
            "listConfigurations" | "listVirtualMachines" => contains(&have, want),
            _ => have == want,
        };
        if !ok {
            return false;
        }
    }
    if let Some(k) = p.get("keyword").filter(|_| declared("keyword")) {
        if !contains(&text("name").unwrap_or_default(), k) {
            return false;
        }
    }
    if let Some(ids) = p.get("ids").filter(|_| declared("ids")) {
        let have = text("id").unwrap_or_default();
        if !ids.split(',').any(|i| i.trim() == have) {
            return false;
        }
    }
    if let Some(net) = p
        .get("networkid")
        .filter(|_| declared("networkid") && spec.name != "listVirtualMachines")
    {
        let on_net = |n: &Value| n["networkid"] == net;
        let ok = if spec.name == "listNics" {
            on_net(item)
        } else {
            obj.get("nic")
                .and_then(Value::as_array)
                .is_some_and(|nics| nics.iter().any(on_net))
        };
        if !ok {
            return false;
        }
    }
    true
}

fn network_json(w: &World, n: &Network) -> Value {
    json!({
        "id": n.id, "name": n.name, "displaytext": n.name,
        "state": if n.vlan.is_some() { "Implemented" } else { "Allocated" },
        "type": "Isolated", "vpcid": n.vpcid, "redundantrouter": true, "restartrequired": false,
        "vlan": n.vlan.map(|v| v.to_string()),
        "broadcasturi": n.vlan.map(|v| format!("vlan://{v}")),
        "broadcastdomaintype": "Vlan",
        "cidr": n.cidr, "gateway": n.gateway, "netmask": "255.255.255.0",
        "physicalnetworkid": w.physnets[0].id, "zoneid": w.zone_id, "zonename": w.zone_name,
        "traffictype": "Guest", "account": USER_ACCOUNT, "domain": DOMAIN, "domainid": w.domain_id,
    })
}

pub(super) fn vm_json(w: &World, v: &Vm) -> Value {
    let host = w.host(&v.hostid);
    let placed = v.state != "Stopped";
    let mut item = json!({
        "id": v.id, "name": v.name, "displayname": v.name,
        "instancename": format!("i-2-{}-VM", v.number),
        "state": v.state,
        "hostid": if placed { v.hostid.as_str() } else { "" },
        "hostname": if placed { host.map_or("", |h| h.name.as_str()) } else { "" },
        "zoneid": w.zone_id, "zonename": w.zone_name, "hypervisor": "KVM",
        "account": USER_ACCOUNT, "domain": DOMAIN, "domainid": w.domain_id, "nic": nics(w, v),
    });
    vm_compute(w, v, &mut item);
    item
}

/// A VM's NICs: for a VPC router control (eth0), public (eth1) and one per implemented tier
/// (eth2...); for a guest VM its tier NIC; for a system VM control, management and public.
pub(super) fn nics(w: &World, v: &Vm) -> Vec<Value> {
    let nic = |dev: usize, ip: &str, traffic: &str, default: bool| {
        json!({
            "id": id_for("nic", &format!("{}/eth{dev}", v.name)), "deviceid": dev.to_string(),
            "ipaddress": ip, "traffictype": traffic, "isdefault": default,
            "macaddress": format!("02:{:02x}:{:02x}:00:00:{dev:02x}", (v.number >> 8) & 0xff, v.number & 0xff),
            "virtualmachineid": v.id,
        })
    };
    let tier_nic = |dev: usize, n: &Network, ip: &str, default: bool| {
        let mut item = nic(dev, ip, "Guest", default);
        item["networkid"] = json!(n.id);
        item["networkname"] = json!(n.name);
        item["netmask"] = json!("255.255.255.0");
        item["gateway"] = json!(n.gateway);
        item["vlanid"] = json!(n.vlan);
        item["broadcasturi"] = json!(n.vlan.map(|x| format!("vlan://{x}")));
        item["isolationuri"] = item["broadcasturi"].clone();
        item
    };
    match &v.kind {
        VmKind::Router { vpcid } => {
            // The public subnet is a /24 with its gateway at .1 (as the seed makes it).
            let mut public = nic(1, &v.publicip, "Public", true);
            if let Some((base, _)) = v.publicip.rsplit_once('.') {
                public["gateway"] = json!(format!("{base}.1"));
                public["netmask"] = json!("255.255.255.0");
            }
            let mut out = vec![nic(0, &v.linklocalip, "Control", false), public];
            let tiers = w
                .networks
                .iter()
                .filter(|n| &n.vpcid == vpcid && n.vlan.is_some());
            for (i, n) in tiers.enumerate() {
                out.push(tier_nic(i + 2, n, &n.gateway, false));
            }
            out
        }
        VmKind::Guest { networkid, ip } => {
            let mut out: Vec<Value> = w
                .networks
                .iter()
                .filter(|n| &n.id == networkid)
                .map(|n| tier_nic(0, n, ip, true))
                .collect();
            for extra in v.extra_nics.iter().filter(|n| !n.removed) {
                if let Some(n) = w.networks.iter().find(|n| n.id == extra.networkid) {
                    out.push(tier_nic(extra.deviceid, n, &extra.ip, false));
                }
            }
            out
        }
        VmKind::SystemVm { .. } => vec![
            nic(0, &v.linklocalip, "Control", false),
            nic(1, &v.privateip, "Management", false),
            nic(2, &v.publicip, "Public", true),
        ],
    }
}

fn capacity_json(w: &World) -> Vec<Value> {
    let spans = w.guest_vlans();
    let vlan_total = vlan::size(&spans);
    let vlan_used = w
        .networks
        .iter()
        .filter(|n| n.vlan.is_some_and(|v| vlan::covers(&spans, v)))
        .count() as u64;
    let pct = |used: u64, total: u64| {
        if total == 0 {
            "0".to_string()
        } else {
            format!("{:.2}", used as f64 * 100.0 / total as f64)
        }
    };
    let row = |t: u32, name: &str, used: u64, total: u64| {
        json!({
            "type": t, "name": name, "zoneid": w.zone_id, "zonename": w.zone_name,
            "capacityused": used, "capacityallocated": used, "capacitytotal": total,
            "percentused": pct(used, total),
        })
    };
    vec![
        row(0, "MEMORY", 68_719_476_736, 274_877_906_944),
        row(1, "CPU", 24_000, 96_000),
        row(2, "STORAGE", 429_496_729_600, 2_199_023_255_552),
        row(4, "VIRTUAL_NETWORK_PUBLIC_IP", w.vpcs.len() as u64, 50),
        row(
            5,
            "PRIVATE_IP",
            w.vms.iter().filter(|v| v.live()).count() as u64,
            200,
        ),
        row(6, "SECONDARY_STORAGE", 107_374_182_400, 1_099_511_627_776),
        row(7, "VLAN", vlan_used, u64::from(vlan_total)),
    ]
}
