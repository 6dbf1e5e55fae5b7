//! The zone's objects, the guest state inside each machine, and building a zone from a
//! [`Scenario`].
//!
//! Ids are derived from names (a fixed hash formatted as a UUID), so the same scenario always
//! yields the same ids. Machines: VPC routers `r-930-VM`, `r-931-VM`, ... (numbered in seed
//! order), the SSVM `s-1-VM`, the CPVM `v-2-VM`, guest VMs `<tier>-vm<n>`, hypervisors as the
//! scenario names them, and the management server `mgmt1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scenario::{GuestSeed, Scenario};

/// A deterministic UUID-shaped id for a name (FNV-1a, twice, with different seeds).
pub fn id_for(kind: &str, name: &str) -> String {
    let hash = |seed: u64| {
        let mut h = seed;
        for b in kind.bytes().chain([0u8]).chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x84222325_cbf29ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// A link inside a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub up: bool,
    pub addrs: Vec<String>,
}

/// A systemd service inside a machine: `active`, `inactive` or `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub state: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bridge {
    pub ports: Vec<String>,
    pub flows: Vec<String>,
}

/// What is inside a machine, as SSH would see it. The API derives fields from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Guest {
    pub links: BTreeMap<String, Link>,
    pub services: BTreeMap<String, Service>,
    pub files: BTreeMap<String, File>,
    /// Open vSwitch bridges (hypervisors only).
    pub ovs: BTreeMap<String, Bridge>,
}

impl Guest {
    pub fn link_up(&self, name: &str) -> bool {
        self.links.get(name).is_some_and(|l| l.up)
    }

    pub fn active(&self, service: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.state == "active")
    }

    pub fn set_service(&mut self, name: &str, state: &str) {
        self.services
            .entry(name.to_string())
            .or_insert(Service {
                state: String::new(),
                enabled: true,
            })
            .state = state.to_string();
    }

    pub fn set_link(&mut self, name: &str, up: bool) {
        self.links
            .entry(name.to_string())
            .or_insert(Link {
                up,
                addrs: Vec::new(),
            })
            .up = up;
    }

    pub fn put_file(&mut self, path: &str, mode: u32, owner: &str, content: &str) {
        self.files.insert(
            path.to_string(),
            File {
                mode,
                owner: owner.to_string(),
                group: owner.to_string(),
                content: content.to_string(),
            },
        );
    }

    /// Applies a scenario's overrides.
    fn apply(&mut self, seed: &GuestSeed) {
        for (name, state) in &seed.links {
            self.set_link(name, state == "up");
        }
        for (name, state) in &seed.services {
            self.set_service(name, state);
        }
        for (path, f) in &seed.files {
            let entry = self.files.entry(path.clone()).or_insert(File {
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
                content: String::new(),
            });
            if let Some(m) = &f.mode {
                entry.mode = u32::from_str_radix(m, 8).unwrap_or(entry.mode);
            }
            if let Some(o) = &f.owner {
                entry.owner = o.clone();
            }
            if let Some(g) = &f.group {
                entry.group = g.clone();
            }
            if let Some(c) = &f.content {
                entry.content = c.clone();
            }
        }
        for path in &seed.absent {
            self.files.remove(path);
        }
        for (bridge, ports) in &seed.ovs_missing_ports {
            if let Some(b) = self.ovs.get_mut(bridge) {
                b.ports.retain(|p| !ports.contains(p));
            }
        }
        for (bridge, flows) in &seed.ovs_missing_flows {
            if let Some(b) = self.ovs.get_mut(bridge) {
                b.flows.retain(|f| !flows.contains(f));
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhysNet {
    pub id: String,
    pub name: String,
    /// Guest VLAN ranges, `a-b,c-d`; empty for none.
    pub vlan: String,
    pub state: String,
    pub traffic: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vpc {
    pub id: String,
    pub name: String,
    pub cidr: String,
    pub restartrequired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub vpcid: String,
    pub cidr: String,
    pub gateway: String,
    /// The allocated guest VLAN, if any.
    pub vlan: Option<u32>,
}

/// What kind of VM a [`Vm`] is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum VmKind {
    /// A VPC virtual router.
    Router { vpcid: String },
    /// SSVM (`secondarystoragevm`) or CPVM (`consoleproxy`). `allowed_sites` is the value of
    /// `secstorage.allowed.internal.sites` pushed to it when it last started.
    SystemVm {
        systemvmtype: String,
        allowed_sites: String,
    },
    /// A user VM in a tier.
    Guest { networkid: String, ip: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub kind: VmKind,
    /// `Running`, `Starting`, `Stopping`, `Stopped`, `Destroyed`.
    pub state: String,
    pub hostid: String,
    pub linklocalip: String,
    pub privateip: String,
    pub publicip: String,
    /// The async job acting on it, while one runs.
    pub jobid: Option<String>,
    pub guest: Guest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub ipaddress: String,
    /// `Up`, `Disconnected`, ...
    pub state: String,
    pub resourcestate: String,
    pub guest: Guest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub value: String,
    pub defaultvalue: String,
    pub category: String,
    pub description: String,
    pub isdynamic: bool,
}

/// The management server, also an SSH host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MgmtServer {
    pub id: String,
    pub name: String,
    pub ipaddress: String,
    pub guest: Guest,
}

/// The default settings, as (name, default, category, dynamic, description).
const SETTINGS: [(&str, &str, &str, bool, &str); 10] = [
    ("default.page.size", "500", "Advanced", true, "Default page size for API list* commands"),
    ("network.gc.interval", "600", "Advanced", true, "Seconds to wait before checking for networks to shutdown"),
    ("network.gc.wait", "600", "Advanced", true, "Time (in seconds) to wait before shutting down a network that is not in use"),
    ("router.redundant.vrrp.interval", "1", "Advanced", false, "Seconds between VRRP broadcasts of redundant routers"),
    ("router.check.interval", "30", "Advanced", false, "Interval (in seconds) to report redundant router status"),
    ("secstorage.allowed.internal.sites", "", "Advanced", false, "Comma separated list of cidrs internal to the datacenter that can host template download servers, please note 0.0.0.0 is not a valid site"),
    ("secstorage.capacity.standby", "10", "Advanced", false, "The minimal number of command execution sessions that system is able to serve immediately"),
    ("system.vm.use.local.storage", "false", "Advanced", false, "Indicates whether to use local storage pools or shared storage pools for system VMs"),
    ("vm.network.throttling.rate", "200", "Network", false, "Default data transfer rate in megabits per second allowed in User vm's default network"),
    ("expunge.interval", "86400", "Advanced", true, "The interval (in seconds) to wait before running the expunge thread"),
];

/// keepalived.conf as CloudStack's template renders it, for a router of a VPC.
pub fn keepalived_conf(router: &str) -> String {
    format!(
        "! generated by the simulated zone for {router}\nvrrp_instance inside_network {{\n    state BACKUP\n    nopreempt\n    interface eth2\n    virtual_router_id 51\n    priority 100\n    advert_int 1\n    track_interface {{\n        eth1\n    }}\n}}\n"
    )
}

/// The zone's contents. See [`super::Zone`] for behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct World {
    pub zone_id: String,
    pub zone_name: String,
    pub template_server: String,
    pub physnets: Vec<PhysNet>,
    pub vpcs: Vec<Vpc>,
    pub networks: Vec<Network>,
    pub vms: Vec<Vm>,
    pub hosts: Vec<Host>,
    pub settings: Vec<Setting>,
    pub mgmt: MgmtServer,
    /// Next router number (`r-<n>-VM`) and system VM number.
    pub next_router: u32,
    pub next_systemvm: u32,
    pub job_ms: u64,
}

impl World {
    pub fn from_scenario(s: &Scenario) -> World {
        let zone_name = "zone1".to_string();
        let physnet = PhysNet {
            id: id_for("physnet", "physnet-guest"),
            name: "physnet-guest".into(),
            vlan: s.guest_vlan.clone(),
            state: "Enabled".into(),
            traffic: vec![
                "Guest".into(),
                "Public".into(),
                "Management".into(),
                "Storage".into(),
            ],
        };
        let settings = SETTINGS
            .iter()
            .map(|(name, default, category, dynamic, description)| Setting {
                name: name.to_string(),
                value: s.settings.get(*name).cloned().unwrap_or_else(|| {
                    if *name == "secstorage.allowed.internal.sites" {
                        "10.20.0.0/16".into()
                    } else {
                        default.to_string()
                    }
                }),
                defaultvalue: default.to_string(),
                category: category.to_string(),
                description: description.to_string(),
                isdynamic: *dynamic,
            })
            .collect::<Vec<_>>();
        let hosts: Vec<Host> = s
            .hosts
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut guest = Guest::default();
                guest.set_link("cloud0", true);
                guest.set_service("cloudstack-agent", "active");
                guest.set_service("openvswitch-switch", "active");
                guest.put_file(
                    "/root/.ssh/id_rsa.cloud",
                    0o600,
                    "root",
                    "(the simulated zone's system VM key)\n",
                );
                Host {
                    id: id_for("host", name),
                    name: name.clone(),
                    ipaddress: format!("10.1.0.{}", 11 + i),
                    state: "Up".into(),
                    resourcestate: "Enabled".into(),
                    guest,
                }
            })
            .collect();
        let mut mgmt_guest = Guest::default();
        mgmt_guest.set_service("cloudstack-management", "active");
        mgmt_guest.files.insert(
            "/var/log/cloudstack/management/catalina.out".into(),
            File {
                mode: 0o644,
                owner: "cloud".into(),
                group: "cloud".into(),
                content: "INFO  [o.a.c.s.ServerDaemon] Server started\n".into(),
            },
        );
        let mut w = World {
            zone_id: id_for("zone", &zone_name),
            zone_name,
            template_server: s.template_server.clone(),
            physnets: vec![physnet],
            vpcs: Vec::new(),
            networks: Vec::new(),
            vms: Vec::new(),
            hosts,
            settings,
            mgmt: MgmtServer {
                id: id_for("mgmt", "mgmt1"),
                name: "mgmt1".into(),
                ipaddress: "10.1.0.5".into(),
                guest: mgmt_guest,
            },
            next_router: 930,
            next_systemvm: 1,
            job_ms: s.job_ms.unwrap_or(super::DEFAULT_JOB_MS),
        };
        let host_of = |w: &World, i: usize| {
            w.hosts
                .get(i % w.hosts.len().max(1))
                .map(|h| h.id.clone())
                .unwrap_or_default()
        };
        // system VMs
        let sites = w.setting("secstorage.allowed.internal.sites").to_string();
        for (kind, prefix) in [("secondarystoragevm", "s"), ("consoleproxy", "v")] {
            let n = w.next_systemvm;
            w.next_systemvm += 1;
            let hostid = host_of(&w, n as usize - 1);
            let vm = w.new_system_vm(kind, prefix, n, hostid, &sites, "Running");
            w.vms.push(vm);
        }
        // VPCs, tiers, routers, guest VMs
        let mut vm_port = 1;
        for (vi, seed) in s.vpcs.iter().enumerate() {
            let vpc = Vpc {
                id: id_for("vpc", &seed.name),
                name: seed.name.clone(),
                cidr: format!("10.{}.0.0/16", 100 + vi),
                restartrequired: false,
            };
            for (ti, tier) in seed.tiers.iter().enumerate() {
                let net = Network {
                    id: id_for("network", &format!("{}/{tier}", seed.name)),
                    name: tier.clone(),
                    vpcid: vpc.id.clone(),
                    cidr: format!("10.{}.{}.0/24", 100 + vi, ti + 1),
                    gateway: format!("10.{}.{}.1", 100 + vi, ti + 1),
                    vlan: None,
                };
                for n in 0..seed.vms_per_tier {
                    let name = format!("{tier}-vm{}", n + 1);
                    let hostid = host_of(&w, n);
                    let ip = format!("10.{}.{}.{}", 100 + vi, ti + 1, 10 + n);
                    // the VM's port on its hypervisor's bridge, with its flow
                    if let Some(h) = w.hosts.iter_mut().find(|h| h.id == hostid) {
                        let port = format!("vnet{vm_port}");
                        let bridge = h.guest.ovs.entry("cloudbr1".into()).or_default();
                        bridge.ports.push(port.clone());
                        bridge.flows.push(format!(
                            "table=0,priority=100,in_port={port},actions=NORMAL"
                        ));
                    }
                    vm_port += 1;
                    w.vms.push(Vm {
                        id: id_for("vm", &format!("{}/{name}", seed.name)),
                        name,
                        kind: VmKind::Guest {
                            networkid: net.id.clone(),
                            ip,
                        },
                        state: "Running".into(),
                        hostid,
                        linklocalip: String::new(),
                        privateip: String::new(),
                        publicip: String::new(),
                        jobid: None,
                        guest: Guest::default(),
                    });
                }
                w.networks.push(net);
            }
            for r in 0..seed.routers {
                let hostid = host_of(&w, r);
                let vm = w.new_router(&vpc.id, hostid);
                w.vms.push(vm);
            }
            let vpcid = vpc.id.clone();
            w.vpcs.push(vpc);
            // a VPC whose tiers all get a VLAN is configured; otherwise its routers never were
            if w.allocate_vlans(&vpcid).is_ok() {
                w.configure_routers(&vpcid);
            }
        }
        for h in &mut w.hosts {
            if !h.guest.ovs.contains_key("cloudbr1") {
                h.guest.ovs.insert("cloudbr1".into(), Bridge::default());
            }
        }
        // scenario overrides last
        for (name, seed) in &s.guest {
            if let Some(g) = w.guest_mut(name) {
                g.apply(seed);
            }
        }
        w
    }

    pub fn setting(&self, name: &str) -> &str {
        self.settings
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.as_str())
            .unwrap_or("")
    }

    pub fn new_system_vm(
        &self,
        systemvmtype: &str,
        prefix: &str,
        n: u32,
        hostid: String,
        sites: &str,
        state: &str,
    ) -> Vm {
        let name = format!("{prefix}-{n}-VM");
        let mut guest = Guest::default();
        for (eth, up) in [("eth0", true), ("eth1", true), ("eth2", true)] {
            guest.set_link(eth, up);
        }
        guest.set_service(
            "cloud",
            if state == "Running" {
                "active"
            } else {
                "inactive"
            },
        );
        Vm {
            id: id_for("systemvm", &name),
            name,
            kind: VmKind::SystemVm {
                systemvmtype: systemvmtype.into(),
                allowed_sites: sites.into(),
            },
            state: state.into(),
            hostid,
            linklocalip: format!("169.254.1.{}", 10 + n),
            privateip: format!("10.1.1.{}", 10 + n),
            publicip: format!("192.0.2.{}", 10 + n),
            jobid: None,
            guest,
        }
    }

    /// A fresh, unconfigured router of a VPC: eth1 down, keepalived inactive, no config.
    pub fn new_router(&mut self, vpcid: &str, hostid: String) -> Vm {
        let n = self.next_router;
        self.next_router += 1;
        let name = format!("r-{n}-VM");
        let mut guest = Guest::default();
        guest.set_link("eth0", true);
        guest.set_link("eth1", false);
        guest.set_link("eth2", true);
        guest.set_service("keepalived", "inactive");
        guest.set_service("dnsmasq", "inactive");
        guest.set_service("conntrackd", "inactive");
        guest.put_file(
            "/var/cache/cloud/cmdline",
            0o644,
            "root",
            &format!("type=vpcrouter name={name} redundant_router=true\n"),
        );
        Vm {
            id: id_for("router", &name),
            name,
            kind: VmKind::Router {
                vpcid: vpcid.to_string(),
            },
            state: "Running".into(),
            hostid,
            linklocalip: format!("169.254.0.{}", 10 + n - 929),
            privateip: String::new(),
            publicip: format!("198.51.100.{}", n - 929),
            jobid: None,
            guest,
        }
    }

    pub fn guest_mut(&mut self, name: &str) -> Option<&mut Guest> {
        if self.mgmt.name == name {
            return Some(&mut self.mgmt.guest);
        }
        if let Some(h) = self.hosts.iter_mut().find(|h| h.name == name) {
            return Some(&mut h.guest);
        }
        self.vms
            .iter_mut()
            .find(|v| v.name == name)
            .map(|v| &mut v.guest)
    }

    pub fn guest(&self, name: &str) -> Option<&Guest> {
        if self.mgmt.name == name {
            return Some(&self.mgmt.guest);
        }
        if let Some(h) = self.hosts.iter().find(|h| h.name == name) {
            return Some(&h.guest);
        }
        self.vms.iter().find(|v| v.name == name).map(|v| &v.guest)
    }

    /// Gives every tier of the VPC a guest VLAN from the physical network's ranges. Fails,
    /// changing nothing, when a tier cannot get one; the error names the tier.
    pub fn allocate_vlans(&mut self, vpcid: &str) -> Result<(), String> {
        let ranges = super::vlan::parse(&self.physnets[0].vlan).unwrap_or_default();
        let mut used: Vec<u32> = self.networks.iter().filter_map(|n| n.vlan).collect();
        let mut plan = Vec::new();
        for (i, net) in self.networks.iter().enumerate() {
            if net.vpcid != vpcid || net.vlan.is_some() {
                continue;
            }
            let free = ranges
                .iter()
                .flat_map(|&(a, b)| a..=b)
                .find(|v| !used.contains(v))
                .ok_or_else(|| {
                    format!(
                        "Unable to allocate a guest VLAN for network {} in physical network {}: {}",
                        net.name,
                        self.physnets[0].name,
                        if ranges.is_empty() {
                            "the physical network has no guest VLAN range"
                        } else {
                            "every VLAN in its guest range is in use"
                        }
                    )
                })?;
            used.push(free);
            plan.push((i, free));
        }
        for (i, vlan) in plan {
            self.networks[i].vlan = Some(vlan);
        }
        Ok(())
    }

    /// Configures the VPC's running routers as CloudStack does once their tiers exist:
    /// keepalived.conf written and keepalived started, then a VRRP election.
    pub fn configure_routers(&mut self, vpcid: &str) {
        for vm in self.vms.iter_mut() {
            if vm.kind
                == (VmKind::Router {
                    vpcid: vpcid.to_string(),
                })
                && vm.state == "Running"
            {
                let conf = keepalived_conf(&vm.name);
                vm.guest
                    .put_file("/etc/keepalived/keepalived.conf", 0o644, "root", &conf);
                vm.guest.set_service("keepalived", "active");
                vm.guest.set_service("conntrackd", "active");
            }
        }
        self.elect(vpcid);
    }

    /// VRRP, simplified: among the VPC's running routers with keepalived active and
    /// configured, if none holds the public link, the first (by name) takes it and becomes
    /// PRIMARY (eth1 up, dnsmasq started); the others stay BACKUP with eth1 down and dnsmasq
    /// stopped, as CloudStack's transition scripts do.
    pub fn elect(&mut self, vpcid: &str) {
        let mut candidates: Vec<usize> = (0..self.vms.len())
            .filter(|&i| {
                let vm = &self.vms[i];
                vm.kind
                    == (VmKind::Router {
                        vpcid: vpcid.to_string(),
                    })
                    && vm.state == "Running"
                    && vm.guest.active("keepalived")
                    && vm
                        .guest
                        .files
                        .contains_key("/etc/keepalived/keepalived.conf")
            })
            .collect();
        candidates.sort_by(|&a, &b| self.vms[a].name.cmp(&self.vms[b].name));
        let holder = candidates
            .iter()
            .copied()
            .find(|&i| self.vms[i].guest.link_up("eth1"));
        let primary = holder.or(candidates.first().copied());
        for &i in &candidates {
            let is_primary = Some(i) == primary;
            let g = &mut self.vms[i].guest;
            if is_primary && !g.link_up("eth1") {
                g.set_link("eth1", true);
                g.set_service("dnsmasq", "active");
            } else if !is_primary {
                g.set_link("eth1", false);
                g.set_service("dnsmasq", "inactive");
            }
        }
    }

    /// A router's redundant state, derived from its guest state like `checkrouter.sh`:
    /// not running -> UNKNOWN; keepalived not active -> BACKUP when it was never configured
    /// (no keepalived.conf: it waits forever as BACKUP), FAULT otherwise; then eth1 up ->
    /// PRIMARY, down -> BACKUP.
    pub fn redundant_state(vm: &Vm) -> &'static str {
        if vm.state != "Running" {
            return "UNKNOWN";
        }
        let g = &vm.guest;
        let configured = g.files.contains_key("/etc/keepalived/keepalived.conf");
        if !g.active("keepalived") {
            return if configured { "FAULT" } else { "BACKUP" };
        }
        if g.link_up("eth1") {
            "PRIMARY"
        } else {
            "BACKUP"
        }
    }

    /// Whether the SSVM may download from the template server: the sites pushed to it when
    /// it last started must cover the server's address, and it must be running.
    pub fn ssvm_can_download(&self, vm: &Vm) -> bool {
        match &vm.kind {
            VmKind::SystemVm {
                systemvmtype,
                allowed_sites,
            } if systemvmtype == "secondarystoragevm" => {
                vm.state == "Running"
                    && allowed_sites
                        .split(',')
                        .any(|cidr| super::vlan::cidr_contains(cidr.trim(), &self.template_server))
            }
            _ => false,
        }
    }
}
