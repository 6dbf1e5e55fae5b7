//! The simulated zone: its state ([`model::World`]), the API commands over it, and async jobs.
//!
//! Pure logic with no I/O: time comes in with every call. Async jobs complete lazily: each
//! call first advances the zone to `now`, finishing every job (and follow-up transition, such
//! as a recreated SSVM reaching Running) whose time has come, in time order.
//!
//! Rules worth knowing:
//! - **Visibility.** The caller is the root admin. Routers, system VMs, hosts, settings and
//!   async jobs are always listed. VPCs, networks and guest VMs belong to the user account
//!   `ops`, so `listVPCs`, `listNetworks` and `listVirtualMachines` show them only with
//!   `listall=true`, as a real server does for resources of other accounts.
//! - **Redundant state** is derived from the router's guest state ([`World::redundant_state`]):
//!   eth1 (public) up is PRIMARY, down is BACKUP; keepalived not running is FAULT, except on a
//!   router that was never configured (no keepalived.conf), which sits in BACKUP.
//! - **Jobs** take [`DEFAULT_JOB_MS`] (or the scenario's `job_ms`, or the fault settings'
//!   `job_ms`/`slow_jobs`). Objects acted on show a transitional state and the job id meanwhile.
//!   `fail_jobs` makes a job fail with 530 when it ends, changing nothing.
//! - **updatePhysicalNetwork `vlan`** is the complete wanted set; removing a range that holds
//!   an allocated VLAN is refused at once with 431.
//! - **restartVPC / restartNetwork** allocate a VLAN to every tier that has none, then configure
//!   the routers (keepalived.conf, keepalived, VRRP election). With no free VLAN the job fails
//!   with 533 and nothing changes. `cleanup=true` replaces the routers (new ids and names).
//! - **SSVM**: it takes `secstorage.allowed.internal.sites` when it starts; downloads from the
//!   template server work only when that snapshot covers the server
//!   ([`World::ssvm_can_download`]). destroySystemVm replaces it (new id and name, Starting,
//!   then Running one job time later).

pub mod model;
pub mod vlan;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::apis::{self, ApiSpec};
use crate::faults::Faults;
use crate::scenario::Scenario;
pub use model::{Guest, World};
use model::{Vm, VmKind};

/// How long an async job runs when nothing says otherwise.
pub const DEFAULT_JOB_MS: u64 = 1500;

/// One reply: the HTTP status and the JSON body (the whole envelope).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// What a job does when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
enum Effect {
    UpdatePhysNet {
        id: String,
        vlan: Option<String>,
        state: Option<String>,
    },
    Router {
        id: String,
        action: String,
    },
    Restart {
        vpcid: String,
        cleanup: bool,
        /// restartNetwork of a tier: reply `{success}` all the same.
        network: Option<String>,
    },
    SystemVm {
        id: String,
        action: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    jobid: String,
    command: String,
    cmd: String,
    instancetype: String,
    instanceid: String,
    created: jiff::Timestamp,
    due: jiff::Timestamp,
    /// 0 pending, 1 succeeded, 2 failed.
    status: i64,
    resultcode: i64,
    result: Value,
    fail_text: Option<String>,
    effect: Effect,
}

/// A later state change that is not a job of its own (a recreated system VM coming up).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Timer {
    due: jiff::Timestamp,
    vm: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Zone {
    world: World,
    jobs: Vec<Job>,
    timers: Vec<Timer>,
    seq: u64,
}

fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

fn error(spec_key: &str, status: u16, cserrorcode: i64, text: String) -> Reply {
    Reply {
        status,
        body: json!({ spec_key: {"uuidList": [], "errorcode": status, "cserrorcode": cserrorcode, "errortext": text}}),
    }
}

/// Java class names of the async commands, for `cmd` in job records.
fn class_of(command: &str) -> String {
    let pkg = match command {
        "updatePhysicalNetwork" => "admin.network",
        "rebootRouter" | "stopRouter" | "startRouter" => "admin.router",
        "restartVPC" => "user.vpc",
        "restartNetwork" => "user.network",
        _ => "admin.systemvm",
    };
    let mut class = command.to_string();
    class[..1].make_ascii_uppercase();
    if class == "RestartVPC" {
        class = "RestartVPC".into();
    }
    format!("org.apache.cloudstack.api.command.{pkg}.{class}Cmd")
}

impl Zone {
    pub fn new(scenario: &Scenario) -> Zone {
        Zone {
            world: World::from_scenario(scenario),
            jobs: Vec::new(),
            timers: Vec::new(),
            seq: 0,
        }
    }

    /// The zone's contents (read-only), e.g. for assertions.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// A machine's guest state by name (router, system VM, hypervisor, `mgmt1`).
    pub fn guest(&self, machine: &str) -> Option<&Guest> {
        self.world.guest(machine)
    }

    /// A machine's guest state, to change it (the SSH side does this). API fields derived from
    /// it change with it.
    pub fn guest_mut(&mut self, machine: &str) -> Option<&mut Guest> {
        self.world.guest_mut(machine)
    }

    /// The whole state as JSON, for `GET /sim/state` and tests.
    pub fn snapshot(&self) -> Value {
        json!({"world": self.world, "jobs": self.jobs, "timers": self.timers})
    }

    /// Finishes every job and transition due by `now`, in time order.
    pub fn advance(&mut self, now: jiff::Timestamp) {
        loop {
            let job = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.status == 0 && j.due <= now)
                .min_by_key(|(_, j)| j.due)
                .map(|(i, j)| (i, j.due));
            let timer = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.due <= now)
                .min_by_key(|(_, t)| t.due)
                .map(|(i, t)| (i, t.due));
            match (job, timer) {
                (Some((j, jd)), Some((_, td))) if jd <= td => self.finish(j),
                (Some((j, _)), None) => self.finish(j),
                (_, Some((t, _))) => {
                    let timer = self.timers.remove(t);
                    self.vm_up(&timer.vm, timer.due);
                }
                (None, None) => return,
            }
        }
    }

    /// Runs one API command. Validation errors are replies (431 etc.), never panics.
    pub fn handle(
        &mut self,
        command: &str,
        params: &BTreeMap<String, String>,
        faults: &Faults,
        now: jiff::Timestamp,
    ) -> Reply {
        self.advance(now);
        let Some(spec) = apis::get(command) else {
            return error(
                "errorresponse",
                401,
                9999,
                "unable to verify user credentials and/or request signature".into(),
            );
        };
        if let Err(r) = self.validate(spec, params) {
            return r;
        }
        let p = Params { map: params, spec };
        let result = match spec.name.as_str() {
            "queryAsyncJobResult" => return self.query_job(spec, &p),
            "updateConfiguration" => self.update_configuration(&p),
            name if spec.isasync => self.start_job(name, &p, faults, now),
            _ => self.list(spec, &p),
        };
        match result {
            Ok(body) => Reply { status: 200, body },
            Err((status, text)) => error(
                &spec.response_envelope_key,
                status,
                if status == 431 { 4350 } else { 4250 },
                text,
            ),
        }
    }

    // --- validation -------------------------------------------------------------------------

    fn all_ids(&self) -> BTreeSet<&str> {
        let w = &self.world;
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        ids.insert(&w.zone_id);
        ids.insert(&w.mgmt.id);
        ids.extend(w.physnets.iter().map(|p| p.id.as_str()));
        ids.extend(w.vpcs.iter().map(|v| v.id.as_str()));
        ids.extend(w.networks.iter().map(|n| n.id.as_str()));
        ids.extend(w.vms.iter().map(|v| v.id.as_str()));
        ids.extend(w.hosts.iter().map(|h| h.id.as_str()));
        ids.extend(self.jobs.iter().map(|j| j.jobid.as_str()));
        ids
    }

    fn validate(&self, spec: &ApiSpec, params: &BTreeMap<String, String>) -> Result<(), Reply> {
        let cmd = spec.name.to_ascii_lowercase();
        let bad = |text: String| error(&spec.response_envelope_key, 431, 9999, text);
        for p in spec.params.iter().filter(|p| p.required) {
            if params.get(&p.name).is_none_or(|v| v.is_empty()) {
                return Err(bad(format!(
                    "Unable to execute API command {cmd} due to missing parameter {}",
                    p.name
                )));
            }
        }
        let ids = self.all_ids();
        for p in &spec.params {
            let Some(v) = params.get(&p.name) else {
                continue;
            };
            let invalid = || {
                bad(format!(
                    "Unable to execute API command {cmd} due to invalid value. Invalid parameter {} value={v} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
                    p.name
                ))
            };
            match p.kind.as_str() {
                "uuid" if !v.is_empty() && !ids.contains(v.as_str()) => return Err(invalid()),
                "boolean"
                    if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") =>
                {
                    return Err(invalid())
                }
                "integer" if v.parse::<i64>().is_err() => return Err(invalid()),
                _ => {}
            }
        }
        let page = params.get("page");
        let size = params.get("pagesize").and_then(|s| s.parse::<i64>().ok());
        let max: i64 = self
            .world
            .setting("default.page.size")
            .parse()
            .unwrap_or(500);
        match (page, size) {
            (Some(_), None) | (None, Some(1..)) | (None, Some(0)) => {
                return Err(bad(format!(
                    "Unable to execute API command {cmd} due to invalid value: page and pagesize must be given together"
                )))
            }
            (Some(_), Some(-1)) => {
                return Err(bad(format!(
                    "Unable to execute API command {cmd}: pagesize=-1 lists everything and cannot be used with page"
                )))
            }
            (_, Some(n)) if n > max || n == 0 || n < -1 => {
                return Err(bad(format!(
                    "Unable to execute API command {cmd} due to invalid value: pagesize must be between 1 and {max}"
                )))
            }
            (Some(p), _) if p.parse::<i64>().map_or(true, |p| p < 1) => {
                return Err(bad(format!(
                    "Unable to execute API command {cmd} due to invalid value: page must be 1 or more"
                )))
            }
            _ => {}
        }
        Ok(())
    }

    // --- lists --------------------------------------------------------------------------------

    fn list(&self, spec: &ApiSpec, p: &Params) -> Result<Value, (u16, String)> {
        let listall = p.flag("listall");
        let w = &self.world;
        let items: Vec<Value> = match spec.name.as_str() {
            "listZones" => vec![json!({
                "id": w.zone_id, "name": w.zone_name, "allocationstate": "Enabled",
                "networktype": "Advanced", "dhcpprovider": "VirtualRouter",
                "securitygroupsenabled": false, "localstorageenabled": false,
            })],
            "listPhysicalNetworks" => w
                .physnets
                .iter()
                .map(|pn| {
                    json!({
                        "id": pn.id, "name": pn.name, "zoneid": w.zone_id, "zonename": w.zone_name,
                        "vlan": pn.vlan, "state": pn.state, "isolationmethods": "VLAN",
                        "broadcastdomainrange": "ZONE", "networkspeed": "1G", "tags": "",
                    })
                })
                .collect(),
            "listTrafficTypes" => {
                w.physnets
                    .iter()
                    .filter(|pn| Some(pn.id.as_str()) == p.get("physicalnetworkid"))
                    .flat_map(|pn| {
                        pn.traffic.iter().map(move |t| json!({
                    "id": model::id_for("traffictype", &format!("{}/{t}", pn.id)),
                    "traffictype": t, "physicalnetworkid": pn.id,
                    "kvmnetworklabel": if t == "Public" { "cloudbr0" } else { "cloudbr1" },
                    "isolationmethods": "VLAN",
                }))
                    })
                    .collect()
            }
            "listRouters" => w
                .vms
                .iter()
                .filter(|v| matches!(v.kind, VmKind::Router { .. }) && v.state != "Destroyed")
                .map(|v| self.router_json(v))
                .collect(),
            "listVPCs" if listall => w
                .vpcs
                .iter()
                .map(|v| {
                    let tiers: Vec<Value> = w
                        .networks
                        .iter()
                        .filter(|n| n.vpcid == v.id)
                        .map(|n| self.network_json(n))
                        .collect();
                    json!({
                        "id": v.id, "name": v.name, "displaytext": v.name, "state": "Enabled",
                        "zoneid": w.zone_id, "zonename": w.zone_name, "cidr": v.cidr,
                        "redundantvpcrouter": true, "restartrequired": v.restartrequired,
                        "account": "ops", "domain": "ROOT", "network": tiers,
                    })
                })
                .collect(),
            "listNetworks" if listall => w.networks.iter().map(|n| self.network_json(n)).collect(),
            "listVirtualMachines" if listall => w
                .vms
                .iter()
                .filter(|v| matches!(v.kind, VmKind::Guest { .. }))
                .map(|v| self.vm_json(v))
                .collect(),
            "listVPCs" | "listNetworks" | "listVirtualMachines" => Vec::new(),
            "listSystemVms" => w
                .vms
                .iter()
                .filter(|v| matches!(v.kind, VmKind::SystemVm { .. }) && v.state != "Destroyed")
                .map(|v| self.systemvm_json(v))
                .collect(),
            "listConfigurations" => w
                .settings
                .iter()
                .filter(|s| p.get("name").is_none_or(|n| s.name.contains(n)))
                .filter(|s| p.get("keyword").is_none_or(|k| s.name.contains(k)))
                .filter(|s| {
                    p.get("category")
                        .is_none_or(|c| s.category.eq_ignore_ascii_case(c))
                })
                .map(|s| {
                    json!({
                        "name": s.name, "value": s.value, "defaultvalue": s.defaultvalue,
                        "category": s.category, "description": s.description,
                        "isdynamic": s.isdynamic, "scope": "global", "type": "String",
                    })
                })
                .collect(),
            "listHosts" => self.hosts_json(),
            "listCapacity" => vec![
                json!({"type": 7, "name": "VLAN", "zoneid": w.zone_id, "capacityused": w.networks.iter().filter(|n| n.vlan.is_some()).count(), "capacitytotal": vlan::parse(&w.physnets[0].vlan).unwrap_or_default().iter().map(|(a, b)| b - a + 1).sum::<u32>()}),
                json!({"type": 0, "name": "MEMORY", "zoneid": w.zone_id, "capacityused": 68719476736u64, "capacitytotal": 274877906944u64, "percentused": "25"}),
                json!({"type": 1, "name": "CPU", "zoneid": w.zone_id, "capacityused": 24000, "capacitytotal": 96000, "percentused": "25"}),
            ],
            "listAsyncJobs" => self.jobs.iter().map(|j| self.job_json(j)).collect(),
            "listManagementServers" => vec![json!({
                "id": w.mgmt.id, "name": w.mgmt.name, "state": "Up", "version": "4.18.2.0",
                "javaversion": "11.0.22", "osdistribution": "Debian GNU/Linux 12",
                "kernelversion": "6.1.0", "ipaddress": w.mgmt.ipaddress,
            })],
            "listNics" => w
                .vms
                .iter()
                .filter(|v| Some(v.id.as_str()) == p.get("virtualmachineid"))
                .flat_map(|v| self.nics(v))
                .collect(),
            other => {
                return Err((
                    432,
                    format!("The simulated zone does not implement {other}"),
                ))
            }
        };
        let items: Vec<Value> = items.into_iter().filter(|i| p.filters(i)).collect();
        Ok(self.page(spec, p, items))
    }

    fn page(&self, spec: &ApiSpec, p: &Params, items: Vec<Value>) -> Value {
        let key = spec.list_item_key.clone().unwrap_or_else(|| "item".into());
        let envelope = &spec.response_envelope_key;
        let count = items.len();
        let max: usize = self
            .world
            .setting("default.page.size")
            .parse()
            .unwrap_or(500);
        let (page, size) = match (p.get("page"), p.get("pagesize")) {
            (Some(page), Some(size)) => (
                page.parse::<usize>().unwrap_or(1),
                size.parse::<usize>().unwrap_or(max),
            ),
            (None, Some("-1")) => (1, usize::MAX),
            _ => (1, max),
        };
        let shown: Vec<Value> = items
            .into_iter()
            .skip((page - 1).saturating_mul(size))
            .take(size)
            .collect();
        if count == 0 {
            return json!({ envelope: {} });
        }
        json!({ envelope: { "count": count, key: shown } })
    }

    fn router_json(&self, v: &Vm) -> Value {
        let w = &self.world;
        let VmKind::Router { vpcid } = &v.kind else {
            return Value::Null;
        };
        let vpc = w.vpcs.iter().find(|x| &x.id == vpcid);
        let host = w.hosts.iter().find(|h| h.id == v.hostid);
        let first_tier = w.networks.iter().find(|n| &n.vpcid == vpcid);
        let mut item = json!({
            "id": v.id, "name": v.name, "state": v.state,
            "redundantstate": World::redundant_state(v), "isredundantrouter": true,
            "linklocalip": v.linklocalip, "linklocalnetworkid": model::id_for("network", "control"),
            "hostid": v.hostid, "hostname": host.map(|h| h.name.as_str()).unwrap_or(""),
            "zoneid": w.zone_id, "zonename": w.zone_name,
            "vpcid": vpcid, "vpcname": vpc.map(|x| x.name.as_str()).unwrap_or(""),
            "guestnetworkid": first_tier.map(|n| n.id.as_str()).unwrap_or(""),
            "publicip": v.publicip, "role": "VIRTUAL_ROUTER", "version": "4.18.2",
            "requiresupgrade": false, "healthchecksfailed": !v.guest.active("dnsmasq") && World::redundant_state(v) == "PRIMARY",
            "account": "system", "domain": "ROOT",
            "nic": self.nics(v),
        });
        if let Some(job) = &v.jobid {
            item["jobid"] = json!(job);
            item["jobstatus"] = json!(0);
        }
        item
    }

    fn nics(&self, v: &Vm) -> Vec<Value> {
        let w = &self.world;
        match &v.kind {
            VmKind::Router { vpcid } => {
                let mut nics = vec![
                    json!({"id": model::id_for("nic", &format!("{}/eth0", v.name)), "deviceid": "0", "ipaddress": v.linklocalip, "traffictype": "Control", "isdefault": false, "macaddress": "0e:00:a9:fe:00:01"}),
                    json!({"id": model::id_for("nic", &format!("{}/eth1", v.name)), "deviceid": "1", "ipaddress": v.publicip, "traffictype": "Public", "isdefault": true, "macaddress": "1e:00:c6:33:64:01"}),
                ];
                for (i, n) in w.networks.iter().filter(|n| &n.vpcid == vpcid).enumerate() {
                    nics.push(json!({
                        "id": model::id_for("nic", &format!("{}/eth{}", v.name, i + 2)),
                        "deviceid": (i + 2).to_string(), "networkid": n.id, "networkname": n.name,
                        "ipaddress": n.gateway, "traffictype": "Guest", "isdefault": false,
                        "vlanid": n.vlan, "broadcasturi": n.vlan.map(|x| format!("vlan://{x}")),
                    }));
                }
                nics
            }
            VmKind::Guest { networkid, ip } => {
                let n = w.networks.iter().find(|n| &n.id == networkid);
                vec![json!({
                    "id": model::id_for("nic", &v.name), "deviceid": "0", "networkid": networkid,
                    "networkname": n.map(|n| n.name.as_str()).unwrap_or(""), "ipaddress": ip,
                    "traffictype": "Guest", "isdefault": true,
                    "vlanid": n.and_then(|n| n.vlan), "broadcasturi": n.and_then(|n| n.vlan).map(|x| format!("vlan://{x}")),
                })]
            }
            VmKind::SystemVm { .. } => Vec::new(),
        }
    }

    fn network_json(&self, n: &model::Network) -> Value {
        let w = &self.world;
        json!({
            "id": n.id, "name": n.name, "displaytext": n.name,
            "state": if n.vlan.is_some() { "Implemented" } else { "Allocated" },
            "type": "Isolated", "vpcid": n.vpcid, "redundantrouter": true, "restartrequired": false,
            "vlan": n.vlan.map(|v| v.to_string()), "broadcasturi": n.vlan.map(|v| format!("vlan://{v}")),
            "cidr": n.cidr, "gateway": n.gateway, "physicalnetworkid": w.physnets[0].id,
            "zoneid": w.zone_id, "traffictype": "Guest", "account": "ops", "domain": "ROOT",
        })
    }

    fn vm_json(&self, v: &Vm) -> Value {
        let host = self.world.hosts.iter().find(|h| h.id == v.hostid);
        json!({
            "id": v.id, "name": v.name, "instancename": format!("i-2-{}-VM", v.name.len() + 100),
            "state": v.state, "hostid": v.hostid, "hostname": host.map(|h| h.name.as_str()).unwrap_or(""),
            "zoneid": self.world.zone_id, "account": "ops", "domain": "ROOT", "nic": self.nics(v),
        })
    }

    fn systemvm_json(&self, v: &Vm) -> Value {
        let VmKind::SystemVm { systemvmtype, .. } = &v.kind else {
            return Value::Null;
        };
        let host = self.world.hosts.iter().find(|h| h.id == v.hostid);
        let mut item = json!({
            "id": v.id, "name": v.name, "systemvmtype": systemvmtype, "state": v.state,
            "agentstate": if v.state == "Running" { "Up" } else { "Disconnected" },
            "linklocalip": v.linklocalip, "privateip": v.privateip, "publicip": v.publicip,
            "hostid": v.hostid, "hostname": host.map(|h| h.name.as_str()).unwrap_or(""),
            "zoneid": self.world.zone_id, "zonename": self.world.zone_name, "version": "4.18.2",
        });
        if let Some(job) = &v.jobid {
            item["jobid"] = json!(job);
            item["jobstatus"] = json!(0);
        }
        item
    }

    fn hosts_json(&self) -> Vec<Value> {
        let w = &self.world;
        let mut out: Vec<Value> = w
            .hosts
            .iter()
            .map(|h| {
                json!({
                    "id": h.id, "name": h.name, "type": "Routing", "state": h.state,
                    "resourcestate": h.resourcestate, "ipaddress": h.ipaddress, "hypervisor": "KVM",
                    "zoneid": w.zone_id, "version": "4.18.2.0", "managementserverid": w.mgmt.id,
                })
            })
            .collect();
        for v in w.vms.iter().filter(|v| v.state != "Destroyed") {
            if let VmKind::SystemVm { systemvmtype, .. } = &v.kind {
                let kind = if systemvmtype == "secondarystoragevm" {
                    "SecondaryStorageVM"
                } else {
                    "ConsoleProxy"
                };
                out.push(json!({
                    "id": model::id_for("agent", &v.name), "name": v.name, "type": kind,
                    "state": if v.state == "Running" { "Up" } else { "Disconnected" },
                    "resourcestate": "Enabled", "ipaddress": v.privateip, "zoneid": w.zone_id,
                }));
            }
        }
        out
    }

    fn job_json(&self, j: &Job) -> Value {
        let mut item = json!({
            "jobid": j.jobid, "cmd": j.cmd, "jobstatus": j.status, "jobprocstatus": 0,
            "jobresultcode": j.resultcode, "jobinstancetype": j.instancetype,
            "jobinstanceid": j.instanceid, "accountid": model::id_for("account", "admin"),
            "userid": model::id_for("user", "admin"), "created": ts(j.created),
        });
        if j.status != 0 {
            item["jobresulttype"] = json!("object");
            item["jobresult"] = j.result.clone();
            item["completed"] = json!(ts(j.due));
        }
        item
    }

    // --- synchronous change -------------------------------------------------------------------

    fn update_configuration(&mut self, p: &Params) -> Result<Value, (u16, String)> {
        let name = p.get("name").unwrap_or_default();
        let value = p.get("value").unwrap_or_default().to_string();
        if name == "secstorage.allowed.internal.sites" {
            vlan::valid_sites(&value)
                .map_err(|e| (431, format!("Invalid value for {name}: {e}")))?;
        }
        if name == "default.page.size" && value.parse::<u32>().map_or(true, |n| n == 0) {
            return Err((
                431,
                format!("Invalid value for {name}: a positive integer is required"),
            ));
        }
        let s = self
            .world
            .settings
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| (431, format!("Configuration {name} does not exist")))?;
        s.value = value;
        Ok(json!({"updateconfigurationresponse": {"configuration": {
            "name": s.name, "value": s.value, "defaultvalue": s.defaultvalue, "category": s.category,
            "description": s.description, "isdynamic": s.isdynamic, "scope": "global",
        }}}))
    }

    // --- async jobs ---------------------------------------------------------------------------

    fn start_job(
        &mut self,
        command: &str,
        p: &Params,
        faults: &Faults,
        now: jiff::Timestamp,
    ) -> Result<Value, (u16, String)> {
        let id = p.get("id").unwrap_or_default().to_string();
        let (effect, instancetype) = match command {
            "updatePhysicalNetwork" => {
                if let Some(v) = p.get("vlan") {
                    let wanted = vlan::parse(v).map_err(|e| (431, e))?;
                    // removing a range that holds an allocated VLAN is refused at once
                    for n in &self.world.networks {
                        if let Some(tag) = n.vlan {
                            if !wanted.iter().any(|&(a, b)| (a..=b).contains(&tag)) {
                                return Err((431, format!(
                                    "Unable to remove the VLAN range: VLAN {tag} is allocated to network {}; it is in use",
                                    n.name
                                )));
                            }
                        }
                    }
                }
                if let Some(s) = p.get("state") {
                    if s != "Enabled" && s != "Disabled" {
                        return Err((431, format!("Invalid state {s}: use Enabled or Disabled")));
                    }
                }
                (
                    Effect::UpdatePhysNet {
                        id: id.clone(),
                        vlan: p.get("vlan").map(str::to_string),
                        state: p.get("state").map(str::to_string),
                    },
                    "PhysicalNetwork",
                )
            }
            "rebootRouter" | "stopRouter" | "startRouter" => {
                let vm = self.vm_by_id(&id, |k| matches!(k, VmKind::Router { .. }))?;
                if vm.jobid.is_some() {
                    return Err((530, format!("Router {} is busy with another job", vm.name)));
                }
                let action = command.trim_end_matches("Router").to_string();
                match (action.as_str(), vm.state.as_str()) {
                    ("reboot" | "stop", "Running") | ("start", "Stopped") => {}
                    _ => {
                        return Err((
                            431,
                            format!("Router {} is {}; cannot {action} it", vm.name, vm.state),
                        ))
                    }
                }
                (
                    Effect::Router {
                        id: id.clone(),
                        action,
                    },
                    "DomainRouter",
                )
            }
            "restartVPC" | "restartNetwork" => {
                let (vpcid, network) = if command == "restartVPC" {
                    (id.clone(), None)
                } else {
                    let n = self
                        .world
                        .networks
                        .iter()
                        .find(|n| n.id == id)
                        .ok_or((431, format!("Network {id} does not exist")))?;
                    (n.vpcid.clone(), Some(id.clone()))
                };
                if !self.world.vpcs.iter().any(|v| v.id == vpcid) {
                    return Err((431, format!("Unable to find VPC by id {vpcid}")));
                }
                (
                    Effect::Restart {
                        vpcid,
                        cleanup: p.flag("cleanup"),
                        network,
                    },
                    if command == "restartVPC" {
                        "Vpc"
                    } else {
                        "Network"
                    },
                )
            }
            _ => {
                let vm = self.vm_by_id(&id, |k| matches!(k, VmKind::SystemVm { .. }))?;
                if vm.jobid.is_some() {
                    return Err((
                        530,
                        format!("System VM {} is busy with another job", vm.name),
                    ));
                }
                let action = command.trim_end_matches("SystemVm").to_string();
                match (action.as_str(), vm.state.as_str()) {
                    ("reboot" | "stop", "Running")
                    | ("start", "Stopped")
                    | ("destroy", "Running" | "Stopped" | "Starting") => {}
                    _ => {
                        return Err((
                            431,
                            format!("System VM {} is {}; cannot {action} it", vm.name, vm.state),
                        ))
                    }
                }
                (
                    Effect::SystemVm {
                        id: id.clone(),
                        action,
                    },
                    "SystemVm",
                )
            }
        };
        self.seq += 1;
        let jobid = model::id_for("job", &format!("{}-{}", self.seq, now.as_nanosecond()));
        let ms = if Faults::matches(&faults.slow_jobs, command) {
            faults.slow_job_ms
        } else {
            faults.job_ms.unwrap_or(self.world.job_ms)
        };
        let fail_text = Faults::matches(&faults.fail_jobs, command).then(|| {
            faults.job_error_text.clone().unwrap_or_else(|| {
                format!("Failed to {command}: the simulated zone was told to fail this job")
            })
        });
        // transitional states while the job runs
        match &effect {
            Effect::Router { id, action } | Effect::SystemVm { id, action } => {
                let jid = jobid.clone();
                if let Some(vm) = self.world.vms.iter_mut().find(|v| &v.id == id) {
                    vm.jobid = Some(jid);
                    vm.state = match action.as_str() {
                        "start" => "Starting",
                        _ => "Stopping",
                    }
                    .into();
                }
            }
            _ => {}
        }
        self.jobs.push(Job {
            jobid: jobid.clone(),
            command: command.to_string(),
            cmd: class_of(command),
            instancetype: instancetype.into(),
            instanceid: id.clone(),
            created: now,
            due: now + jiff::SignedDuration::from_millis(ms as i64),
            status: 0,
            resultcode: 0,
            result: Value::Null,
            fail_text,
            effect,
        });
        let key = apis::get(command)
            .map(|s| s.response_envelope_key.clone())
            .unwrap_or_default();
        Ok(json!({ key: {"jobid": jobid} }))
    }

    fn vm_by_id(&self, id: &str, kind: impl Fn(&VmKind) -> bool) -> Result<&Vm, (u16, String)> {
        self.world
            .vms
            .iter()
            .find(|v| v.id == id && kind(&v.kind) && v.state != "Destroyed")
            .ok_or_else(|| {
                (
                    431,
                    format!("Unable to find a VM with id {id} of the right kind"),
                )
            })
    }

    fn query_job(&self, spec: &ApiSpec, p: &Params) -> Reply {
        let id = p.get("jobid").unwrap_or_default();
        match self.jobs.iter().find(|j| j.jobid == id) {
            Some(j) => Reply {
                status: 200,
                body: json!({ &spec.response_envelope_key: self.job_json(j) }),
            },
            None => error(
                &spec.response_envelope_key,
                431,
                4350,
                format!("Unable to find async job {id}"),
            ),
        }
    }

    /// Ends job `i`: applies its effect, or fails it.
    fn finish(&mut self, i: usize) {
        let job = self.jobs[i].clone();
        let outcome = match &job.fail_text {
            Some(text) => {
                self.revert(&job.effect);
                Err((530, text.clone()))
            }
            None => self.apply(&job.effect, job.due),
        };
        let j = &mut self.jobs[i];
        match outcome {
            Ok(result) => {
                j.status = 1;
                j.resultcode = 0;
                j.result = result;
            }
            Err((code, text)) => {
                j.status = 2;
                j.resultcode = i64::from(code);
                j.result = json!({"errorcode": code, "errortext": text});
            }
        }
    }

    /// Puts back the state a failed job showed while it ran.
    fn revert(&mut self, effect: &Effect) {
        if let Effect::Router { id, action } | Effect::SystemVm { id, action } = effect {
            if let Some(vm) = self.world.vms.iter_mut().find(|v| &v.id == id) {
                vm.jobid = None;
                vm.state = if action == "start" {
                    "Stopped"
                } else {
                    "Running"
                }
                .into();
            }
        }
    }

    fn apply(&mut self, effect: &Effect, at: jiff::Timestamp) -> Result<Value, (u16, String)> {
        match effect {
            Effect::UpdatePhysNet {
                id,
                vlan: wanted,
                state,
            } => {
                let pn = self
                    .world
                    .physnets
                    .iter_mut()
                    .find(|p| &p.id == id)
                    .ok_or((431, format!("No physical network {id}")))?;
                if let Some(v) = wanted {
                    let spans = vlan::parse(v).map_err(|e| (431, e))?;
                    pn.vlan = spans
                        .iter()
                        .map(|(a, b)| format!("{a}-{b}"))
                        .collect::<Vec<_>>()
                        .join(",");
                }
                if let Some(s) = state {
                    pn.state = s.clone();
                }
                let item = self.list_one("listPhysicalNetworks", id);
                Ok(json!({"physicalnetwork": item}))
            }
            Effect::Router { id, action } => {
                let vpcid = {
                    let vm = self
                        .world
                        .vms
                        .iter_mut()
                        .find(|v| &v.id == id)
                        .ok_or((431, format!("No router {id}")))?;
                    vm.jobid = None;
                    match action.as_str() {
                        "stop" => {
                            vm.state = "Stopped".into();
                            vm.guest.set_link("eth1", false);
                            vm.guest.set_service("keepalived", "inactive");
                            vm.guest.set_service("dnsmasq", "inactive");
                        }
                        _ => {
                            vm.state = "Running".into();
                            vm.guest.set_link("eth1", false);
                            if vm
                                .guest
                                .files
                                .contains_key("/etc/keepalived/keepalived.conf")
                            {
                                vm.guest.set_service("keepalived", "active");
                            }
                        }
                    }
                    match &vm.kind {
                        VmKind::Router { vpcid } => vpcid.clone(),
                        _ => String::new(),
                    }
                };
                self.world.elect(&vpcid);
                let vm = self.world.vms.iter().find(|v| &v.id == id).cloned();
                Ok(json!({"router": vm.map(|v| self.router_json(&v)).unwrap_or(Value::Null)}))
            }
            Effect::Restart {
                vpcid,
                cleanup,
                network,
            } => {
                self.world.allocate_vlans(vpcid).map_err(|e| (533, e))?;
                if *cleanup {
                    let old: Vec<(usize, String)> = self
                        .world
                        .vms
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| {
                            v.kind
                                == (VmKind::Router {
                                    vpcid: vpcid.clone(),
                                })
                                && v.state != "Destroyed"
                        })
                        .map(|(i, v)| (i, v.hostid.clone()))
                        .collect();
                    for (i, hostid) in old.into_iter().rev() {
                        self.world.vms.remove(i);
                        let fresh = self.world.new_router(vpcid, hostid);
                        self.world.vms.push(fresh);
                    }
                }
                self.world.configure_routers(vpcid);
                if let Some(v) = self.world.vpcs.iter_mut().find(|v| &v.id == vpcid) {
                    v.restartrequired = false;
                }
                let _ = network;
                Ok(json!({"success": true}))
            }
            Effect::SystemVm { id, action } => {
                let sites = self
                    .world
                    .setting("secstorage.allowed.internal.sites")
                    .to_string();
                let idx = self
                    .world
                    .vms
                    .iter()
                    .position(|v| &v.id == id)
                    .ok_or((431, format!("No system VM {id}")))?;
                let vm = &mut self.world.vms[idx];
                vm.jobid = None;
                match action.as_str() {
                    "stop" => {
                        vm.state = "Stopped".into();
                        vm.guest.set_service("cloud", "inactive");
                    }
                    "destroy" => {
                        vm.state = "Destroyed".into();
                        vm.guest.set_service("cloud", "inactive");
                        let old = vm.clone();
                        let VmKind::SystemVm { systemvmtype, .. } = &old.kind else {
                            return Err((530, "not a system VM".into()));
                        };
                        let prefix = if systemvmtype == "secondarystoragevm" {
                            "s"
                        } else {
                            "v"
                        };
                        let n = self.world.next_systemvm;
                        self.world.next_systemvm += 1;
                        let fresh = self.world.new_system_vm(
                            systemvmtype,
                            prefix,
                            n,
                            old.hostid.clone(),
                            &sites,
                            "Starting",
                        );
                        self.timers.push(Timer {
                            due: at + jiff::SignedDuration::from_millis(self.world.job_ms as i64),
                            vm: fresh.id.clone(),
                        });
                        self.world.vms.push(fresh);
                        let json = self.systemvm_json(&old);
                        return Ok(json!({"systemvm": json}));
                    }
                    _ => {
                        vm.state = "Running".into();
                        vm.guest.set_service("cloud", "active");
                        if let VmKind::SystemVm { allowed_sites, .. } = &mut vm.kind {
                            *allowed_sites = sites;
                        }
                    }
                }
                let vm = self.world.vms[idx].clone();
                Ok(json!({"systemvm": self.systemvm_json(&vm)}))
            }
        }
    }

    /// A recreated system VM finishes starting: Running, agent Up, the current settings taken.
    fn vm_up(&mut self, id: &str, _at: jiff::Timestamp) {
        let sites = self
            .world
            .setting("secstorage.allowed.internal.sites")
            .to_string();
        if let Some(vm) = self
            .world
            .vms
            .iter_mut()
            .find(|v| v.id == id && v.state == "Starting")
        {
            vm.state = "Running".into();
            vm.guest.set_service("cloud", "active");
            if let VmKind::SystemVm { allowed_sites, .. } = &mut vm.kind {
                *allowed_sites = sites;
            }
        }
    }

    fn list_one(&self, command: &str, id: &str) -> Value {
        let spec = apis::get(command).expect("a known list");
        let mut map = BTreeMap::new();
        map.insert("id".to_string(), id.to_string());
        let p = Params { map: &map, spec };
        self.list(spec, &p)
            .ok()
            .and_then(|v| {
                v[&spec.response_envelope_key][spec.list_item_key.as_deref().unwrap_or("")][0]
                    .clone()
                    .into()
            })
            .unwrap_or(Value::Null)
    }
}

/// A command's parameters with the generic filters lists apply.
struct Params<'a> {
    map: &'a BTreeMap<String, String>,
    spec: &'a ApiSpec,
}

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Whether a list item passes the filters the caller gave: `id`, `ids`, `name`, `state`,
    /// `zoneid`, `vpcid`, `hostid`, `networkid`, `systemvmtype`, `type`, `physicalnetworkid`
    /// (equality on the item's field of the same name; `state` ignoring case).
    fn filters(&self, item: &Value) -> bool {
        const FIELDS: [&str; 10] = [
            "id",
            "name",
            "state",
            "zoneid",
            "vpcid",
            "hostid",
            "systemvmtype",
            "type",
            "physicalnetworkid",
            "traffictype",
        ];
        let declared: BTreeSet<&str> = self.spec.params.iter().map(|p| p.name.as_str()).collect();
        let obj: &Map<String, Value> = match item.as_object() {
            Some(o) => o,
            None => return true,
        };
        let text = |k: &str| {
            obj.get(k).and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| (!v.is_null()).then(|| v.to_string()))
            })
        };
        for key in FIELDS {
            if self.spec.name == "listConfigurations" && key == "name" {
                continue; // substring match, done by the command
            }
            if self.spec.name == "listTrafficTypes" {
                continue;
            }
            let Some(want) = self.get(key) else { continue };
            if !declared.contains(key) {
                continue;
            }
            let have = text(key);
            let ok = match key {
                "state" => have.is_some_and(|h| h.eq_ignore_ascii_case(want)),
                _ => have.as_deref() == Some(want),
            };
            if !ok {
                return false;
            }
        }
        if let Some(ids) = self.get("ids") {
            let have = text("id").unwrap_or_default();
            if !ids.split(',').any(|i| i.trim() == have) {
                return false;
            }
        }
        if let Some(net) = self.get("networkid") {
            let in_nics = obj
                .get("nic")
                .and_then(Value::as_array)
                .is_some_and(|nics| nics.iter().any(|n| n["networkid"] == net));
            if !in_nics && text("id").as_deref() != Some(net) && self.spec.name != "listNics" {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
