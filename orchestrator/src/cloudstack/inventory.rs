//! CloudStack as an inventory source: the hypervisors, virtual routers, system VMs and
//! management servers the API knows, as inventory groups and hosts, each with the connection
//! CloudStack itself would use.
//!
//! Owned here: reading the zone from the API ([`fetch`] into a [`Snapshot`]), turning a
//! snapshot into an Ansible-format YAML inventory ([`generate`]), and composing it with the
//! static files: [`resolve`] and [`Reloader`] load the files over the generated hosts (which the
//! files therefore override, key by key). This file sits above both the inventory and the
//! transports (it reads the API through the run's [`ApiTransport`]); the inventory knows nothing
//! of it. Pure except for [`fetch`] and [`resolve`], which read the API.
//!
//! Not here: the source's settings ([`SourceSpec`], the `remedy_cloudstack_inventory`
//! variable, read when the inventory loads) and the group naming rule ([`group_name`]): both in
//! `inventory::dynamic`, re-exported here.
//!
//! [`ApiTransport`]: crate::transport::api::ApiTransport
//!
//! # How system VMs are reached
//! CloudStack reaches a router, SSVM or CPVM as `root@<link-local IP>:3922` from the
//! hypervisor that runs it (KVM, XenServer), with the hypervisor's `/root/.ssh/id_rsa.cloud`;
//! on VMware, which has no link-local network, as `root@<private IP>:3922` from the management
//! server, with its `/var/lib/cloudstack/management/.ssh/id_rsa`. Each generated system VM
//! host jumps through that machine (`remedy_jump`), in one of two ways
//! ([`SystemVmAccess`]): a `direct-tcpip` tunnel with a copy of the key the controller holds
//! (`system_vm_key`), or the jump host's own `ssh` client with the key that never leaves it
//! (`remedy_nested_ssh_key`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{Client, CsError, Method};
pub use crate::inventory::dynamic::{group_name, SourceSpec, SystemVmAccess, SOURCE_VAR};

/// The port system VMs listen on.
pub const SYSTEM_VM_PORT: u16 = 3922;
/// The system VM key on KVM and XenServer hosts.
pub const HYPERVISOR_KEY: &str = "/root/.ssh/id_rsa.cloud";
/// The system VM key on the management server (used for VMware).
pub const MANAGEMENT_KEY: &str = "/var/lib/cloudstack/management/.ssh/id_rsa";

/// What the API said, one list per kind.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `listHosts type=Routing`
    pub hosts: Vec<Value>,
    /// `listRouters`
    pub routers: Vec<Value>,
    /// `listSystemVms`
    pub system_vms: Vec<Value>,
    /// `listManagementServers`
    pub management: Vec<Value>,
}

/// Reads the zone: four list calls, each walked to its end, all by `deadline`.
pub async fn fetch(client: &Client, deadline: Instant) -> Result<Snapshot, CsError> {
    let list = |command: &'static str, args: &[(&str, &str)]| {
        let args: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let reply = client
                .call(command, &args, Method::Get, deadline, None)
                .await?;
            Ok::<Vec<Value>, CsError>(items(&reply))
        }
    };
    Ok(Snapshot {
        hosts: list("listHosts", &[("type", "Routing")]).await?,
        routers: list("listRouters", &[]).await?,
        system_vms: list("listSystemVms", &[]).await?,
        management: list("listManagementServers", &[]).await?,
    })
}

/// The items of a walked list reply (`{"count": N, "<key>": [...]}`, or `{}`).
fn items(reply: &Value) -> Vec<Value> {
    reply
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.as_str() != "count"))
        .and_then(|(_, v)| v.as_array().cloned())
        .unwrap_or_default()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The generated inventory: groups with their hosts, each host's variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    /// Group -> member host names, in API order.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Host -> variables, in API order.
    pub hosts: Vec<(String, Map<String, Value>)>,
    /// Machines left out, with why (no address, no hypervisor known, ...).
    pub skipped: Vec<String>,
    /// The API calls made, with how many items each returned.
    pub calls: Vec<(String, usize)>,
}

impl Generated {
    /// What the run's audit log records: the calls, the groups' sizes, what was left out.
    pub fn record(&self) -> Value {
        json!({
            "calls": self.calls.iter().map(|(c, n)| json!({"call": c, "items": n})).collect::<Vec<_>>(),
            "hosts": self.hosts.len(),
            "groups": self.groups.iter().map(|(g, m)| (g.clone(), json!(m.len()))).collect::<Map<String, Value>>(),
            "skipped": self.skipped,
        })
    }

    fn add(&mut self, group: &str, host: &str) {
        let members = self.groups.entry(group.to_string()).or_default();
        if !members.iter().any(|h| h == host) {
            members.push(host.to_string());
        }
    }

    /// The inventory as Ansible YAML (`all.children.GROUP.hosts.HOST: vars`), host variables
    /// written under the host's first group, empty entries elsewhere.
    pub fn to_yaml(&self) -> String {
        let mut written = std::collections::HashSet::new();
        let vars: BTreeMap<&str, &Map<String, Value>> =
            self.hosts.iter().map(|(h, v)| (h.as_str(), v)).collect();
        // Vars go with the first group (in API order) that lists the host.
        let order: Vec<&String> = {
            let mut names: Vec<&String> = self.groups.keys().collect();
            names.sort_by_key(|g| PRIMARY.iter().position(|p| p == g).unwrap_or(PRIMARY.len()));
            names
        };
        let mut children = Map::new();
        for group in order {
            let mut hosts = Map::new();
            for h in &self.groups[group] {
                let v = if written.insert(h.clone()) {
                    vars.get(h.as_str())
                        .map(|m| Value::Object((*m).clone()))
                        .unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                hosts.insert(h.clone(), v);
            }
            children.insert(group.clone(), json!({ "hosts": hosts }));
        }
        let doc = json!({ "all": { "children": children } });
        let body = serde_yaml::to_string(&doc).unwrap_or_default();
        format!("# generated from the CloudStack API ({SOURCE_VAR})\n{body}")
    }
}

/// Groups whose members carry the host variables, in this order.
const PRIMARY: [&str; 5] = ["hypervisors", "management", "routers", "ssvm", "cpvm"];

/// Turns a snapshot into inventory hosts and groups.
pub fn generate(spec: &SourceSpec, snap: &Snapshot) -> Generated {
    let mut g = Generated::default();
    let in_zone = |v: &Value| {
        spec.zone
            .as_deref()
            .is_none_or(|z| s(v, "zonename").is_empty() || s(v, "zonename") == z)
    };
    let mgmt_name = snap
        .management
        .first()
        .map(|m| s(m, "name").to_string())
        .filter(|n| !n.is_empty());
    for m in &snap.management {
        let name = s(m, "name");
        if name.is_empty() {
            continue;
        }
        let mut vars = Map::new();
        if !s(m, "serviceip").is_empty() {
            vars.insert("ansible_host".into(), json!(s(m, "serviceip")));
        }
        vars.insert("cs".into(), m.clone());
        g.hosts.push((name.to_string(), vars));
        g.add("management", name);
    }
    // Hypervisors by id, for the system VMs' jump.
    let mut by_id: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for h in snap.hosts.iter().filter(|h| in_zone(h)) {
        let (name, ip) = (s(h, "name"), s(h, "ipaddress"));
        if name.is_empty() || ip.is_empty() {
            g.skipped
                .push(format!("host {:?}: no name or ipaddress", s(h, "id")));
            continue;
        }
        by_id.insert(s(h, "id"), (name, s(h, "hypervisor")));
        let mut vars = Map::new();
        vars.insert("ansible_host".into(), json!(ip));
        vars.insert("cs".into(), h.clone());
        g.hosts.push((name.to_string(), vars));
        g.add("hypervisors", name);
        for (prefix, key) in [
            ("zone_", "zonename"),
            ("pod_", "podname"),
            ("cluster_", "clustername"),
        ] {
            if !s(h, key).is_empty() {
                g.add(&group_name(prefix, s(h, key)), name);
            }
        }
    }
    let vms = snap
        .routers
        .iter()
        .map(|v| ("routers", v))
        .chain(snap.system_vms.iter().map(|v| {
            let kind = match s(v, "systemvmtype") {
                "secondarystoragevm" => "ssvm",
                "consoleproxy" => "cpvm",
                _ => "system_vms",
            };
            (kind, v)
        }));
    for (kind, v) in vms.filter(|(_, v)| in_zone(v)) {
        let name = s(v, "name");
        match system_vm_vars(spec, v, &by_id, mgmt_name.as_deref()) {
            Ok(vars) => {
                g.hosts.push((name.to_string(), vars));
                g.add(kind, name);
                g.add("system_vms", name);
                if !s(v, "zonename").is_empty() {
                    g.add(&group_name("zone_", s(v, "zonename")), name);
                }
                if kind == "routers" {
                    if !s(v, "vpcname").is_empty() {
                        g.add(&group_name("vpc_", s(v, "vpcname")), name);
                    }
                    let state = s(v, "redundantstate");
                    if !state.is_empty() {
                        g.add(&group_name("redundant_", state), name);
                    }
                }
            }
            Err(why) => g.skipped.push(format!("{name}: {why}")),
        }
    }
    g
}

/// A system VM's variables: its address, port, user, jump and key, and its API object.
fn system_vm_vars(
    spec: &SourceSpec,
    vm: &Value,
    hypervisors: &BTreeMap<&str, (&str, &str)>,
    management: Option<&str>,
) -> Result<Map<String, Value>, String> {
    if s(vm, "name").is_empty() {
        return Err("no name".into());
    }
    let host = hypervisors.get(s(vm, "hostid"));
    let vmware = host.is_some_and(|(_, hv)| hv.eq_ignore_ascii_case("vmware"))
        || s(vm, "hypervisor").eq_ignore_ascii_case("vmware");
    let (address, jump, jump_key) = if vmware {
        let Some(mgmt) = management else {
            return Err("on VMware, but no management server is listed to jump through".into());
        };
        (s(vm, "privateip"), mgmt.to_string(), MANAGEMENT_KEY)
    } else {
        let Some((hv, _)) = host else {
            return Err(format!(
                "its hypervisor (hostid {:?}) is not in the inventory (stopped, or another zone)",
                s(vm, "hostid")
            ));
        };
        (s(vm, "linklocalip"), hv.to_string(), HYPERVISOR_KEY)
    };
    if address.is_empty() {
        return Err(if vmware {
            "no privateip".into()
        } else {
            "no linklocalip (not running?)".into()
        });
    }
    let mut vars = Map::new();
    vars.insert("ansible_host".into(), json!(address));
    vars.insert("ansible_port".into(), json!(SYSTEM_VM_PORT));
    vars.insert("ansible_user".into(), json!("root"));
    vars.insert("remedy_jump".into(), json!(jump));
    match &spec.system_vm_access {
        SystemVmAccess::Tunnel { key } => {
            vars.insert(
                "ansible_ssh_private_key_file".into(),
                json!(key.display().to_string()),
            );
        }
        SystemVmAccess::JumpHostSsh => {
            vars.insert("remedy_nested_ssh_key".into(), json!(jump_key));
        }
    }
    vars.insert("cs".into(), vm.clone());
    Ok(vars)
}

/// How long reading the zone for the inventory may take.
pub const FETCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Completes an inventory loaded from `paths`: when it declares this source, reads the zone
/// through `api` and loads the files again over the generated hosts. Returns the inventory and
/// what was generated.
pub async fn resolve(
    inv: crate::inventory::Inventory,
    paths: &[PathBuf],
    api: &crate::transport::api::ApiTransport,
) -> Result<(crate::inventory::Inventory, Option<Generated>), String> {
    resolve_with(inv, paths, api, None).await
}

/// The inventories [`resolve_with`] completed last, by their files: the files' digest, what the
/// zone gave, and the inventory made of both. For a caller that completes the same inventory
/// again and again (the daemon, at every run).
#[derive(Debug, Default)]
pub struct Resolved {
    last: std::sync::Mutex<std::collections::HashMap<Vec<PathBuf>, Made>>,
}

/// One inventory [`resolve_with`] made.
#[derive(Debug)]
struct Made {
    /// The files it was made from ([`crate::inventory::files_state`]).
    digest: String,
    generated: Generated,
    inventory: crate::inventory::Inventory,
    /// When the zone was last read (and gave `generated`).
    read: Instant,
}

impl Resolved {
    /// The inventory made last from `paths`, if their files are still `digest`
    /// ([`crate::inventory::files_state`]) and the zone was read less than `max_age` ago.
    pub fn recent(
        &self,
        paths: &[PathBuf],
        digest: &str,
        max_age: std::time::Duration,
    ) -> Option<crate::inventory::Inventory> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(paths)
            .filter(|m| m.digest == digest && m.read.elapsed() < max_age)
            .map(|m| m.inventory.clone())
    }

    /// Forgets what was made from `paths` (the next run reads the zone, and makes it again).
    pub fn forget(&self, paths: &[PathBuf]) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(paths);
    }
}

/// [`resolve`], remembering its result in `cache`: when the files' digest and what the zone
/// lists are both what they were the last time, the inventory is the one made then. (Writing
/// the zone's hosts as YAML and reading it back over the files is most of the work of a run
/// that finds nothing to do, on a zone of a thousand hypervisors; the zone is still read every
/// time, so a router that moved, a host added or a file edited makes a new inventory.)
pub async fn resolve_with(
    inv: crate::inventory::Inventory,
    paths: &[PathBuf],
    api: &crate::transport::api::ApiTransport,
    cache: Option<&Resolved>,
) -> Result<(crate::inventory::Inventory, Option<Generated>), String> {
    use crate::inventory::Inventory;
    let Some(spec) = inv.cloudstack_source().cloned() else {
        return Ok((inv, None));
    };
    let conn = api
        .connection()
        .await
        .map_err(|e| format!("{SOURCE_VAR}: {e}"))?;
    let snap = fetch(&conn.client, Instant::now() + FETCH_LIMIT)
        .await
        .map_err(|e| format!("{SOURCE_VAR}: reading the zone: {e}"))?;
    let mut generated = generate(&spec, &snap);
    generated.calls = vec![
        ("listHosts type=Routing".into(), snap.hosts.len()),
        ("listRouters".into(), snap.routers.len()),
        ("listSystemVms".into(), snap.system_vms.len()),
        ("listManagementServers".into(), snap.management.len()),
    ];
    if let Some(ssh) = &conn.simulator_ssh {
        reach_simulated_hosts(&mut generated, ssh);
    }
    // (What the files are, vars files of the zone's hosts included: the cache's key.)
    let digest = match cache {
        Some(_) => crate::inventory::files_state(paths).map_err(|e| e.to_string())?,
        None => String::new(),
    };
    if let Some(cache) = cache {
        let mut last = cache.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = last.get_mut(paths) {
            if m.digest == digest && m.generated == generated {
                m.read = Instant::now();
                return Ok((m.inventory.clone(), Some(generated)));
            }
        }
    }
    let made = Inventory::load_with_generated(paths, Some(&generated.to_yaml()))
        .map_err(|e| e.to_string())?;
    // (Kept only when the files did not change while the inventory was made.)
    let unchanged = || crate::inventory::files_state(paths).is_ok_and(|now| now == digest);
    if let Some(cache) = cache.filter(|_| unchanged()) {
        cache.last.lock().unwrap_or_else(|p| p.into_inner()).insert(
            paths.to_vec(),
            Made {
                digest,
                generated: generated.clone(),
                inventory: made.clone(),
                read: Instant::now(),
            },
        );
    }
    Ok((made, Some(generated)))
}

/// Reads a run's inventory again in the middle of the run (`refresh_inventory`): the same
/// files, the zone read again through the run's own API connection.
pub struct Reloader {
    paths: Vec<PathBuf>,
    /// The digest of the files alone, when the run started.
    files_digest: String,
    api: std::sync::Arc<crate::transport::api::ApiTransport>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the inventory in `paths`, read through `api`; `None` when the files
    /// declare no CloudStack source (a static inventory has nothing to read again).
    pub fn new(
        paths: &[PathBuf],
        api: std::sync::Arc<crate::transport::api::ApiTransport>,
    ) -> Result<Option<Reloader>, String> {
        let files = crate::inventory::Inventory::load(paths).map_err(|e| e.to_string())?;
        if files.cloudstack_source().is_none() {
            return Ok(None);
        }
        Ok(Some(Reloader {
            paths: paths.to_vec(),
            files_digest: files.digest(),
            api,
        }))
    }

    /// The inventory as the zone is now. Refused when the files changed since the run began:
    /// a run works from one version of them.
    pub async fn reload(&self) -> Result<(crate::inventory::Inventory, Generated), String> {
        let files = crate::inventory::Inventory::load(&self.paths).map_err(|e| e.to_string())?;
        if files.digest() != self.files_digest {
            return Err(format!(
                "the inventory files changed during the run ({}); not reading them again",
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        match resolve(files, &self.paths, &self.api).await? {
            (inv, Some(generated)) => Ok((inv, generated)),
            (_, None) => Err(format!("the inventory no longer declares {SOURCE_VAR}")),
        }
    }
}

/// Points the generated hosts at the embedded simulator's SSH hosts: hypervisors and the
/// management server on their loopback ports, system VMs through a tunnel on their hypervisor,
/// all with the lab-only key and every host key pinned. (The simulated hypervisors run no
/// `ssh` client of their own, so `jump-host-ssh` becomes a tunnel here.)
pub fn reach_simulated_hosts(g: &mut Generated, ssh: &super::EmbeddedSsh) {
    use crate::transport::ssh::known_hosts::fingerprint;
    let key = ssh.key_file.display().to_string();
    for (name, vars) in &mut g.hosts {
        if let Some(addr) = ssh.hosts.addr(name) {
            vars.insert("ansible_host".into(), json!(addr.ip().to_string()));
            vars.insert("ansible_port".into(), json!(addr.port()));
        } else if !vars.contains_key("remedy_jump") {
            continue;
        }
        vars.remove(crate::transport::ssh::NESTED_KEY_VAR);
        vars.insert("ansible_ssh_private_key_file".into(), json!(key));
        vars.insert("remedy_host_key_policy".into(), json!("pinned"));
        vars.insert(
            "remedy_host_key_fingerprint".into(),
            json!(fingerprint(&ssh.hosts.host_key(name))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel() -> SourceSpec {
        SourceSpec {
            zone: None,
            system_vm_access: SystemVmAccess::Tunnel {
                key: PathBuf::from("/keys/id_rsa.cloud"),
            },
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            hosts: vec![
                json!({"id": "h1", "name": "kvm01", "ipaddress": "10.0.0.11", "hypervisor": "KVM",
                       "zonename": "Zone-1", "podname": "Pod 1", "clustername": "C1", "state": "Up"}),
                json!({"id": "h2", "name": "esx01", "ipaddress": "10.0.0.21", "hypervisor": "VMware",
                       "zonename": "Zone-1", "podname": "Pod 1", "clustername": "vC-1", "state": "Up"}),
                json!({"id": "h3", "name": "kvm91", "ipaddress": "10.9.0.11", "hypervisor": "KVM",
                       "zonename": "Zone-9", "state": "Up"}),
            ],
            routers: vec![
                json!({"id": "r1", "name": "r-10-VM", "linklocalip": "169.254.3.10", "hostid": "h1",
                       "vpcname": "VPC Prod", "redundantstate": "BACKUP", "zonename": "Zone-1", "state": "Running"}),
                json!({"id": "r2", "name": "r-11-VM", "linklocalip": "169.254.3.11", "hostid": "h1",
                       "vpcname": "VPC Prod", "redundantstate": "PRIMARY", "zonename": "Zone-1", "state": "Running"}),
                json!({"id": "r3", "name": "r-12-VM", "linklocalip": "", "hostid": "h1",
                       "zonename": "Zone-1", "state": "Stopped"}),
            ],
            system_vms: vec![
                json!({"id": "s1", "name": "s-1-VM", "systemvmtype": "secondarystoragevm",
                       "linklocalip": "", "privateip": "10.0.0.51", "hostid": "h2", "zonename": "Zone-1"}),
                json!({"id": "v1", "name": "v-2-VM", "systemvmtype": "consoleproxy",
                       "linklocalip": "169.254.0.44", "privateip": "10.0.0.52", "hostid": "h1", "zonename": "Zone-1"}),
            ],
            management: vec![json!({"id": "m1", "name": "mgmt1", "serviceip": "10.0.0.2"})],
        }
    }

    fn vars<'a>(g: &'a Generated, host: &str) -> &'a Map<String, Value> {
        &g.hosts.iter().find(|(h, _)| h == host).unwrap().1
    }

    #[test]
    fn groups_by_kind_zone_pod_cluster_vpc_and_redundant_state() {
        let g = generate(&tunnel(), &snapshot());
        let members = |group: &str| g.groups.get(group).cloned().unwrap_or_default();
        assert_eq!(members("hypervisors"), ["kvm01", "esx01", "kvm91"]);
        assert_eq!(members("management"), ["mgmt1"]);
        assert_eq!(members("routers"), ["r-10-VM", "r-11-VM"]);
        assert_eq!(members("ssvm"), ["s-1-VM"]);
        assert_eq!(members("cpvm"), ["v-2-VM"]);
        assert_eq!(
            members("system_vms"),
            ["r-10-VM", "r-11-VM", "s-1-VM", "v-2-VM"]
        );
        assert_eq!(members("vpc_vpc_prod"), ["r-10-VM", "r-11-VM"]);
        assert_eq!(members("redundant_backup"), ["r-10-VM"]);
        assert_eq!(members("redundant_primary"), ["r-11-VM"]);
        assert_eq!(members("zone_zone_1").len(), 6);
        assert_eq!(members("pod_pod_1"), ["kvm01", "esx01"]);
        assert_eq!(members("cluster_vc_1"), ["esx01"]);
        // The stopped router has no link-local address: left out, with why.
        assert_eq!(g.skipped.len(), 1, "{:?}", g.skipped);
        assert!(
            g.skipped[0].starts_with("r-12-VM: no linklocalip"),
            "{:?}",
            g.skipped
        );
    }

    #[test]
    fn zone_filter() {
        let spec = SourceSpec {
            zone: Some("Zone-9".into()),
            ..tunnel()
        };
        let g = generate(&spec, &snapshot());
        assert_eq!(g.groups["hypervisors"], ["kvm91"]);
        assert!(!g.groups.contains_key("routers"));
        // Management servers are not per zone.
        assert_eq!(g.groups["management"], ["mgmt1"]);
    }

    #[test]
    fn kvm_system_vms_jump_through_their_hypervisor_on_the_link_local_address() {
        let g = generate(&tunnel(), &snapshot());
        let r = vars(&g, "r-10-VM");
        assert_eq!(r["ansible_host"], "169.254.3.10");
        assert_eq!(r["ansible_port"], 3922);
        assert_eq!(r["ansible_user"], "root");
        assert_eq!(r["remedy_jump"], "kvm01");
        assert_eq!(r["ansible_ssh_private_key_file"], "/keys/id_rsa.cloud");
        assert_eq!(r["cs"]["redundantstate"], "BACKUP");
        assert_eq!(vars(&g, "kvm01")["ansible_host"], "10.0.0.11");
        assert_eq!(vars(&g, "kvm01")["cs"]["clustername"], "C1");
    }

    #[test]
    fn vmware_system_vms_use_the_private_ip_through_the_management_server() {
        let g = generate(&tunnel(), &snapshot());
        let s = vars(&g, "s-1-VM");
        assert_eq!(s["ansible_host"], "10.0.0.51");
        assert_eq!(s["remedy_jump"], "mgmt1");
        let spec = SourceSpec {
            system_vm_access: SystemVmAccess::JumpHostSsh,
            ..tunnel()
        };
        let g = generate(&spec, &snapshot());
        assert_eq!(vars(&g, "s-1-VM")["remedy_nested_ssh_key"], MANAGEMENT_KEY);
        assert_eq!(vars(&g, "v-2-VM")["remedy_nested_ssh_key"], HYPERVISOR_KEY);
        assert!(!vars(&g, "v-2-VM").contains_key("ansible_ssh_private_key_file"));
        // No management server listed: a VMware system VM cannot be reached.
        let mut snap = snapshot();
        snap.management.clear();
        let g = generate(&tunnel(), &snap);
        assert!(
            g.skipped.iter().any(|s| s.starts_with("s-1-VM: on VMware")),
            "{:?}",
            g.skipped
        );
    }

    #[test]
    fn a_vm_whose_hypervisor_is_unknown_is_skipped() {
        let mut snap = snapshot();
        snap.hosts.retain(|h| h["name"] != "kvm01");
        let g = generate(&tunnel(), &snap);
        assert!(!g.groups.contains_key("routers"));
        assert!(
            g.skipped.iter().any(|s| s.contains("hostid \"h1\"")),
            "{:?}",
            g.skipped
        );
    }

    #[test]
    fn the_yaml_loads_as_an_inventory() {
        let g = generate(&tunnel(), &snapshot());
        let inv = crate::inventory::Inventory::from_str("generated.yml", &g.to_yaml()).unwrap();
        let r = inv.host("r-10-VM").unwrap();
        assert_eq!(r.conn.address, "169.254.3.10");
        assert_eq!(r.conn.port, 3922);
        assert_eq!(r.conn.jump, ["kvm01"]);
        assert!(r.groups.contains(&"vpc_vpc_prod".to_string()));
        assert_eq!(r.vars["cs"]["redundantstate"], "BACKUP");
        let names: Vec<&str> = inv
            .select("routers:&redundant_backup")
            .unwrap()
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, ["r-10-VM"]);
    }
}
