//! The zone's objects ([`World`]) and the rules that tie them to the guest state: VLAN
//! allocation, router configuration and VRRP election, redundant state, and what the SSVM may
//! download. Building a world from a scenario is in `seed.rs`; the API views in `lists.rs`.

use serde::{Deserialize, Serialize};

use super::guest::{Guest, ServiceState};
use super::vlan;

/// The account that owns the VPCs, networks and guest VMs (not the caller's).
pub const USER_ACCOUNT: &str = "ops";
/// The caller's account (root admin).
pub const ADMIN_ACCOUNT: &str = "admin";
/// Every account, all in the ROOT domain.
pub const ACCOUNTS: [&str; 2] = [ADMIN_ACCOUNT, USER_ACCOUNT];
/// The domain of both accounts.
pub const DOMAIN: &str = "ROOT";
/// The version the management server and system VMs report.
pub const VERSION: &str = "4.18.2.0";

/// keepalived.conf path on a redundant router.
pub const KEEPALIVED_CONF: &str = "/etc/keepalived/keepalived.conf";
/// The management server's catalina.out.
pub const CATALINA_OUT: &str = "/var/log/cloudstack/management/catalina.out";

/// A deterministic UUID-shaped id for `(kind, name)` (FNV-1a over the text, twice, with
/// different seeds): the same scenario always yields the same ids.
pub fn id_for(kind: &str, name: &str) -> String {
    let hash = |seed: u64| {
        let mut h = seed;
        for b in kind.bytes().chain([0u8]).chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// A physical network with VLAN isolation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhysNet {
    pub id: String,
    pub name: String,
    /// Guest VLAN ranges as the API shows them (`a-b,c-d`), empty for none.
    pub vlan: String,
    /// `Enabled` or `Disabled`.
    pub state: String,
    pub traffic: Vec<TrafficType>,
    /// Its network service providers (VirtualRouter, ...), as `listNetworkServiceProviders`
    /// shows them; a zone saved without them gets the seeded ones.
    #[serde(default = "super::providers::seeded")]
    pub providers: Vec<Provider>,
}

/// A network service provider of a physical network, with the switch of the element that
/// implements it (`listVirtualRouterElements`, `listInternalLoadBalancerElements`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    /// `VirtualRouter`, `VpcVirtualRouter`, `InternalLbVm`, `ConfigDrive`, ...
    pub name: String,
    /// `Enabled` or `Disabled`.
    pub state: String,
    /// The services it provides.
    pub services: Vec<String>,
    /// Whether its element is enabled; `None` for a provider without an element of its own
    /// (it is always ready to be enabled).
    pub element: Option<bool>,
}

/// A traffic type of a physical network, with its KVM bridge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficType {
    pub id: String,
    /// `Guest`, `Public`, `Management` or `Storage`.
    pub traffictype: String,
    pub kvmnetworklabel: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vpc {
    pub id: String,
    pub name: String,
    pub cidr: String,
    /// Whether it runs a redundant router pair.
    pub redundant: bool,
    pub restartrequired: bool,
}

/// A VPC tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub vpcid: String,
    pub cidr: String,
    pub gateway: String,
    /// The allocated guest VLAN; `None` until the tier is implemented.
    pub vlan: Option<u32>,
}

/// What kind of VM a [`Vm`] is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum VmKind {
    /// A VPC virtual router.
    Router { vpcid: String },
    /// The SSVM (`secondarystoragevm`) or the CPVM (`consoleproxy`). `allowed_sites` is the
    /// value of `secstorage.allowed.internal.sites` pushed to it when it last started.
    SystemVm {
        systemvmtype: String,
        allowed_sites: String,
    },
    /// A user VM in a tier.
    Guest { networkid: String, ip: String },
}

/// Any VM: router, system VM or guest VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    pub id: String,
    pub name: String,
    /// The instance number (`r-930-VM` is 930); one sequence for every VM, as in CloudStack.
    pub number: u32,
    pub kind: VmKind,
    /// `Running`, `Starting`, `Stopping`, `Stopped` or `Destroyed` (kept, but no longer listed).
    pub state: String,
    pub hostid: String,
    pub linklocalip: String,
    pub privateip: String,
    pub publicip: String,
    /// Its NICs' taps on its host's OVS bridges: (bridge, port).
    pub ports: Vec<(String, String)>,
    pub guest: Guest,
    /// Its service offering: a guest VM's, or a router's system offering (changed with
    /// changeServiceForRouter); empty for the SSVM and CPVM. And a guest VM's template.
    #[serde(default)]
    pub offeringid: String,
    #[serde(default)]
    pub templateid: String,
    /// A guest VM's NICs besides the default one.
    #[serde(default)]
    pub extra_nics: Vec<ExtraNic>,
}

impl Vm {
    pub fn is_router_of(&self, vpcid: &str) -> bool {
        matches!(&self.kind, VmKind::Router { vpcid: v } if v == vpcid)
    }

    pub fn vpcid(&self) -> Option<&str> {
        match &self.kind {
            VmKind::Router { vpcid } => Some(vpcid),
            _ => None,
        }
    }

    pub fn systemvmtype(&self) -> Option<&str> {
        match &self.kind {
            VmKind::SystemVm { systemvmtype, .. } => Some(systemvmtype),
            _ => None,
        }
    }

    pub fn is_ssvm(&self) -> bool {
        self.systemvmtype() == Some("secondarystoragevm")
    }

    pub fn live(&self) -> bool {
        self.state != "Destroyed"
    }

    pub fn is_guest(&self) -> bool {
        matches!(self.kind, VmKind::Guest { .. })
    }

    /// How CloudStack names it in its logs and errors: `VM[User|i-2-940-VM]`,
    /// `VM[DomainRouter|r-930-VM]`, `VM[SecondaryStorageVm|s-1-VM]`.
    pub fn log_name(&self) -> String {
        match &self.kind {
            VmKind::Guest { .. } => format!("VM[User|i-2-{}-VM]", self.number),
            VmKind::Router { .. } => format!("VM[DomainRouter|{}]", self.name),
            VmKind::SystemVm { .. } if self.is_ssvm() => {
                format!("VM[SecondaryStorageVm|{}]", self.name)
            }
            VmKind::SystemVm { .. } => format!("VM[ConsoleProxy|{}]", self.name),
        }
    }
}

/// A KVM hypervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub ipaddress: String,
    /// `Up`, `Disconnected`, ...
    pub state: String,
    /// `Enabled`, `Disabled`, `Maintenance`, ...
    pub resourcestate: String,
    /// The next `vnetN` tap number.
    pub next_vnet: u32,
    pub guest: Guest,
    /// The cluster it belongs to.
    #[serde(default)]
    pub clusterid: String,
    /// Its host tags.
    #[serde(default)]
    pub hosttags: Vec<String>,
    /// CPUs, their speed (MHz) and memory (bytes).
    #[serde(default)]
    pub cpunumber: u32,
    #[serde(default)]
    pub cpuspeed: u64,
    #[serde(default)]
    pub memory: u64,
}

/// A cluster of hypervisors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub name: String,
}

/// A service offering: what a VM gets, and the host tags its host must carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offering {
    pub id: String,
    pub name: String,
    pub cpunumber: u32,
    /// MHz per CPU.
    pub cpuspeed: u64,
    /// MiB.
    pub memory: u64,
    pub hosttags: Vec<String>,
}

impl Offering {
    /// The CPU a VM of this offering takes on its host, in MHz.
    pub fn cpu_mhz(&self) -> u64 {
        u64::from(self.cpunumber) * self.cpuspeed
    }

    /// The memory a VM of this offering takes on its host, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory << 20
    }
}

/// A template; its `templatetag` must be among the host's tags.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub templatetag: String,
}

/// A guest VM's NIC besides its default one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraNic {
    pub networkid: String,
    pub ip: String,
    /// Its device number (1, 2, ...): `eth<deviceid>` inside the VM.
    pub deviceid: usize,
    /// Removed with removeNicFromVirtualMachine (the row stays, `removed` set, as in
    /// CloudStack's database).
    pub removed: bool,
}

/// A global setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub value: String,
    pub defaultvalue: String,
    pub category: String,
    pub description: String,
    pub isdynamic: bool,
    /// `String`, `Integer`, `Boolean`.
    pub kind: String,
    /// The scopes the setting has besides the global value (`Zone`, `Account`, ...), as
    /// ConfigKey declares them; updateConfiguration refuses any other scope.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Values set at a scope: (`Zone`, zone id) -> value.
    #[serde(default)]
    pub scoped: Vec<(String, String, String)>,
}

/// The management server, also an SSH host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MgmtServer {
    pub id: String,
    pub name: String,
    pub ipaddress: String,
    pub guest: Guest,
}

/// The zone's contents. Behaviour over time (jobs) lives in [`super::Zone`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct World {
    pub zone_id: String,
    pub zone_name: String,
    pub pod_id: String,
    pub cluster_id: String,
    pub domain_id: String,
    /// The internal template server the SSVM downloads from.
    pub template_server: String,
    pub physnets: Vec<PhysNet>,
    pub vpcs: Vec<Vpc>,
    pub networks: Vec<Network>,
    pub vms: Vec<Vm>,
    pub hosts: Vec<Host>,
    pub settings: Vec<Setting>,
    pub mgmt: MgmtServer,
    /// The other management servers (`mgmt2`, ...), in order.
    #[serde(default)]
    pub peers: Vec<MgmtServer>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub offerings: Vec<Offering>,
    #[serde(default)]
    pub templates: Vec<Template>,
    /// The next VM instance number.
    pub next_instance: u32,
    /// How long async jobs run unless faults say otherwise, in milliseconds.
    pub job_ms: u64,
}

impl World {
    /// A setting's value (empty when unknown).
    pub fn setting(&self, name: &str) -> &str {
        self.settings
            .iter()
            .find(|s| s.name == name)
            .map_or("", |s| s.value.as_str())
    }

    /// `default.page.size`; `None` means unlimited (`-1`).
    pub fn page_size_limit(&self) -> Option<u64> {
        match self.setting("default.page.size").parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u64),
            Ok(_) => None,
            Err(_) => Some(500),
        }
    }

    pub fn guest(&self, machine: &str) -> Option<&Guest> {
        if let Some(m) = self.mgmts().find(|m| m.name == machine) {
            return Some(&m.guest);
        }
        if let Some(h) = self.hosts.iter().find(|h| h.name == machine) {
            return Some(&h.guest);
        }
        self.vms
            .iter()
            .find(|v| v.name == machine && v.live())
            .map(|v| &v.guest)
    }

    pub fn guest_mut(&mut self, machine: &str) -> Option<&mut Guest> {
        if self.mgmt.name == machine {
            return Some(&mut self.mgmt.guest);
        }
        if let Some(m) = self.peers.iter_mut().find(|m| m.name == machine) {
            return Some(&mut m.guest);
        }
        if let Some(h) = self.hosts.iter_mut().find(|h| h.name == machine) {
            return Some(&mut h.guest);
        }
        self.vms
            .iter_mut()
            .find(|v| v.name == machine && v.live())
            .map(|v| &mut v.guest)
    }

    /// Every management server, the first (`mgmt`) first.
    pub fn mgmts(&self) -> impl Iterator<Item = &MgmtServer> {
        std::iter::once(&self.mgmt).chain(self.peers.iter())
    }

    pub fn vm(&self, id: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.id == id)
    }

    pub fn vm_mut(&mut self, id: &str) -> Option<&mut Vm> {
        self.vms.iter_mut().find(|v| v.id == id)
    }

    pub fn host(&self, id: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// The live routers of a VPC, by name.
    pub fn routers_of(&self, vpcid: &str) -> Vec<&Vm> {
        let mut routers: Vec<&Vm> = self
            .vms
            .iter()
            .filter(|v| v.is_router_of(vpcid) && v.live())
            .collect();
        routers.sort_by(|a, b| a.name.cmp(&b.name));
        routers
    }

    /// Takes the next instance number.
    pub fn take_instance(&mut self) -> u32 {
        let n = self.next_instance;
        self.next_instance += 1;
        n
    }

    // --- VLANs --------------------------------------------------------------------------------

    /// The guest VLAN spans of the physical network.
    pub fn guest_vlans(&self) -> Vec<vlan::Span> {
        vlan::parse(&self.physnets[0].vlan).unwrap_or_default()
    }

    /// Gives every listed network that has none a guest VLAN from the physical network's
    /// ranges (which must be Enabled). All or nothing: when one cannot get a VLAN nothing changes and the error (the
    /// text of the failed job) names the network.
    pub fn allocate_vlans(&mut self, network_ids: &[String]) -> Result<(), String> {
        let ranges = self.guest_vlans();
        let pn = &self.physnets[0];
        if pn.state != "Enabled"
            && network_ids.iter().any(|id| {
                self.networks
                    .iter()
                    .any(|n| &n.id == id && n.vlan.is_none())
            })
        {
            return Err(format!(
                "Unable to implement the network: physical network {} is {}",
                pn.name, pn.state
            ));
        }
        let mut used: Vec<u32> = self.networks.iter().filter_map(|n| n.vlan).collect();
        let mut plan = Vec::new();
        for (i, net) in self.networks.iter().enumerate() {
            if !network_ids.contains(&net.id) || net.vlan.is_some() {
                continue;
            }
            let free = ranges
                .iter()
                .flat_map(|&(a, b)| a..=b)
                .find(|v| !used.contains(v))
                .ok_or_else(|| {
                    let why = if ranges.is_empty() {
                        "it has no guest VLAN range".to_string()
                    } else {
                        format!("no free VLAN is left in {}", vlan::format(&ranges))
                    };
                    format!(
                        "Unable to allocate a guest VLAN (vnet) for network {} in physical network {}: {why}",
                        net.name, self.physnets[0].name
                    )
                })?;
            used.push(free);
            plan.push((i, free));
        }
        for (i, tag) in plan {
            self.networks[i].vlan = Some(tag);
        }
        Ok(())
    }

    // --- routers ------------------------------------------------------------------------------

    /// Configures the VPC's running routers as CloudStack does once the VPC is implemented:
    /// a guest NIC per implemented tier (plugged into the host's cloudbr1), keepalived.conf
    /// written, keepalived and conntrackd started; then a VRRP election.
    pub fn configure_routers(&mut self, vpcid: &str) {
        let ids: Vec<String> = self
            .routers_of(vpcid)
            .into_iter()
            .filter(|r| r.state == "Running")
            .map(|r| r.id.clone())
            .collect();
        for id in ids {
            self.configure_router(vpcid, &id);
        }
        self.elect(vpcid);
    }

    /// Configures one router of the VPC for its implemented tiers, as CloudStack does when the
    /// VPC is implemented and whenever the router starts. A VPC with no implemented tier
    /// leaves it as it is (unconfigured routers stay so).
    pub fn configure_router(&mut self, vpcid: &str, id: &str) {
        let tiers: Vec<Network> = self
            .networks
            .iter()
            .filter(|n| n.vpcid == vpcid && n.vlan.is_some())
            .cloned()
            .collect();
        if tiers.is_empty() {
            return;
        }
        for (i, tier) in tiers.iter().enumerate() {
            let eth = format!("eth{}", i + 2);
            if self
                .vm(id)
                .is_some_and(|v| v.guest.links.contains_key(&eth))
            {
                continue;
            }
            self.plug(id, "cloudbr1");
            let vm = self.vm_mut(id).expect("router exists");
            let prefix = tier.cidr.rsplit('/').next().unwrap_or("24");
            vm.guest
                .put_link(&eth, true, &[format!("{}/{prefix}", tier.gateway)]);
        }
        let vm = self.vm_mut(id).expect("router exists");
        let conf = keepalived_conf(&vm.name, tiers.len());
        vm.guest.put_file(KEEPALIVED_CONF, 0o644, "root", &conf);
        vm.guest.set_service("keepalived", ServiceState::Active);
        vm.guest.set_service("conntrackd", ServiceState::Active);
    }

    /// VRRP, simplified. Candidates are the VPC's running routers with keepalived active and
    /// a keepalived.conf. A candidate that holds the public link (eth1 up) keeps it (keepalived
    /// runs with `nopreempt`); otherwise the first by name takes it. The PRIMARY gets eth1 up
    /// and dnsmasq started, every other candidate eth1 down and dnsmasq stopped, as
    /// CloudStack's transition scripts do. Routers that are not candidates are left alone.
    pub fn elect(&mut self, vpcid: &str) {
        let candidates: Vec<String> = self
            .routers_of(vpcid)
            .into_iter()
            .filter(|vm| {
                vm.state == "Running"
                    && vm.guest.active("keepalived")
                    && vm.guest.has_file(KEEPALIVED_CONF)
            })
            .map(|vm| vm.id.clone())
            .collect();
        let holder = candidates
            .iter()
            .find(|id| self.vm(id).is_some_and(|v| v.guest.link_up("eth1")))
            .or(candidates.first())
            .cloned();
        for id in candidates {
            let is_primary = Some(&id) == holder.as_ref();
            let g = &mut self.vm_mut(&id).expect("router exists").guest;
            if is_primary {
                if !g.link_up("eth1") {
                    g.set_link("eth1", true);
                    g.set_service("dnsmasq", ServiceState::Active);
                }
            } else {
                g.set_link("eth1", false);
                g.set_service("dnsmasq", ServiceState::Inactive);
            }
        }
    }

    /// A router's `redundantstate`, derived from its guest state as `checkrouter.sh` does:
    /// - not a redundant router, or not Running: `UNKNOWN`;
    /// - keepalived not active: `FAULT` on a configured router (keepalived.conf present);
    ///   `BACKUP` on one that was never configured, which keeps waiting as BACKUP;
    /// - otherwise eth1 (public) up: `PRIMARY`, down: `BACKUP`.
    pub fn redundant_state(&self, vm: &Vm) -> &'static str {
        let redundant = vm
            .vpcid()
            .and_then(|id| self.vpcs.iter().find(|v| v.id == id))
            .is_some_and(|v| v.redundant);
        if !redundant || vm.state != "Running" {
            return "UNKNOWN";
        }
        let g = &vm.guest;
        if !g.active("keepalived") {
            return if g.has_file(KEEPALIVED_CONF) {
                "FAULT"
            } else {
                "BACKUP"
            };
        }
        if g.link_up("eth1") {
            "PRIMARY"
        } else {
            "BACKUP"
        }
    }

    /// Adds a NIC's tap (`vnetN`) to the VM's host bridge, with its flow; returns the port.
    pub fn plug(&mut self, vm_id: &str, bridge: &str) -> Option<String> {
        let hostid = self.vm(vm_id)?.hostid.clone();
        let host = self.hosts.iter_mut().find(|h| h.id == hostid)?;
        let port = format!("vnet{}", host.next_vnet);
        host.next_vnet += 1;
        let flow = port_flow(&port);
        host.guest.add_ovs_port(bridge, &port, Some(flow));
        let vm = self.vm_mut(vm_id)?;
        vm.ports.push((bridge.to_string(), port.clone()));
        Some(port)
    }

    /// Removes a VM's taps (and their flows) from its host's bridges.
    pub fn unplug(&mut self, vm_id: &str) {
        let Some(vm) = self.vm_mut(vm_id) else {
            return;
        };
        let (hostid, ports) = (vm.hostid.clone(), std::mem::take(&mut vm.ports));
        let Some(host) = self.hosts.iter_mut().find(|h| h.id == hostid) else {
            return;
        };
        for (bridge, port) in ports {
            if let Some(b) = host.guest.ovs.get_mut(&bridge) {
                b.ports.retain(|p| p != &port);
                let flow = port_flow(&port);
                b.flows.retain(|f| f != &flow);
            }
        }
    }

    // --- SSVM ---------------------------------------------------------------------------------

    /// Whether an SSVM can download templates from the template server: it runs, its agent
    /// (`cloud` service) is active, and the `secstorage.allowed.internal.sites` value it got
    /// when it last started covers the server's address.
    pub fn ssvm_can_download(&self, vm: &Vm) -> bool {
        match &vm.kind {
            VmKind::SystemVm { allowed_sites, .. } if vm.is_ssvm() => {
                vm.state == "Running"
                    && vm.guest.active("cloud")
                    && sites_cover(allowed_sites, &self.template_server)
            }
            _ => false,
        }
    }

    /// What `/usr/local/cloud/systemvm/ssvm-check.sh` prints on an SSVM (simulated: the real
    /// script checks DNS, the NFS mount and the management server; this one adds the template
    /// server). Problems are `ERROR:` lines.
    pub fn ssvm_check(&self, vm: &Vm) -> String {
        let VmKind::SystemVm { allowed_sites, .. } = &vm.kind else {
            return String::new();
        };
        let bar = "================================================";
        let mut out = vec![
            bar.to_string(),
            "First DNS server is 10.1.0.2".into(),
            "Good: Can ping DNS server".into(),
            bar.into(),
            "Good: DNS resolves download.cloudstack.org".into(),
            bar.into(),
            "NFS is currently mounted".into(),
            "Good: Can write to mount point".into(),
            bar.into(),
            format!(
                "Management server is {}. Checking connectivity.",
                self.mgmt.ipaddress
            ),
        ];
        if vm.guest.active("cloud") {
            out.push("Good: Can connect to management server port 8250".into());
            out.push("Good: Java process is running".into());
        } else {
            out.push("ERROR: Java process not running. Try restarting the SSVM.".into());
        }
        out.push(bar.into());
        let sites = if allowed_sites.is_empty() {
            "(none)"
        } else {
            allowed_sites.as_str()
        };
        out.push(format!(
            "Checking template server {} (allowed internal sites: {sites})",
            self.template_server
        ));
        if sites_cover(allowed_sites, &self.template_server) {
            out.push(format!(
                "Good: template downloads from {} are allowed",
                self.template_server
            ));
        } else {
            out.push(format!(
                "ERROR: {} is not covered by secstorage.allowed.internal.sites as pushed to this SSVM; template downloads from it are blocked",
                self.template_server
            ));
        }
        out.push(bar.into());
        out.push("Tests Complete. Look for ERROR or WARNING above.".into());
        out.join("\n") + "\n"
    }
}

/// The flow CloudStack's OVS bridge carries for a VM tap.
pub fn port_flow(port: &str) -> String {
    format!("table=0,priority=100,in_port={port},actions=NORMAL")
}

/// Whether a comma-separated CIDR list covers an address.
pub fn sites_cover(sites: &str, addr: &str) -> bool {
    sites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .any(|cidr| vlan::cidr_contains(cidr, addr))
}

/// keepalived.conf for a VPC router, shaped like CloudStack's template (`state BACKUP` with
/// `nopreempt`: every router starts as BACKUP and VRRP elects the PRIMARY).
pub fn keepalived_conf(router: &str, tiers: usize) -> String {
    let interfaces: String = (0..tiers)
        .map(|i| format!("        eth{}\n", i + 2))
        .collect();
    format!(
        "! keepalived.conf for {router} (rendered from keepalived.conf.templ)\n\
         global_defs {{\n    router_id {router}\n}}\n\
         vrrp_script heartbeat {{\n    script \"/ramdisk/rrouter/heartbeat.sh\"\n    interval 10\n}}\n\
         vrrp_instance inside_network {{\n    state BACKUP\n    nopreempt\n    interface eth2\n    \
         virtual_router_id 51\n    priority 100\n    advert_int 1\n    \
         authentication {{\n        auth_type AH\n        auth_pass 7a1b2c3d\n    }}\n    \
         track_interface {{\n{interfaces}    }}\n    \
         notify_master \"/opt/cloud/bin/configure_router.py --primary\"\n    \
         notify_backup \"/opt/cloud/bin/configure_router.py --backup\"\n    \
         notify_fault \"/opt/cloud/bin/configure_router.py --fault\"\n}}\n"
    )
}
