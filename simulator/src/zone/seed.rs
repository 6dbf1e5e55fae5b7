//! Building a [`World`] from a [`Scenario`]: realistic ids, addresses, settings and guest
//! state filled in around the scenario's compact description.
//!
//! Numbering (one instance sequence, as CloudStack's `vm_instance` ids): the SSVM is
//! `s-1-VM`, the CPVM `v-2-VM`; VPC routers start at `r-930-VM` (two per redundant VPC, in
//! scenario order), followed by the guest VMs (`<tier>-vm<n>`, instance `i-2-<n>-VM`). Later
//! VMs (a recreated SSVM, routers replaced by a cleanup restart) take the next numbers.
//! Routers of a VPC are spread over the hosts in order, guest VMs round-robin over all hosts.

use super::guest::{Guest, ServiceState};
use super::model::*;
use crate::scenario::Scenario;

/// The default settings: (name, default, category, dynamic, type, description).
const SETTINGS: [(&str, &str, &str, bool, &str, &str); 20] = [
    ("api.throttling.enabled", "false", "Advanced", true, "Boolean", "Enable/disable Api rate limit"),
    ("consoleproxy.session.max", "50", "Console Proxy", false, "Integer", "The max number of viewer sessions console proxy is configured to serve for"),
    ("default.page.size", "500", "Advanced", true, "Long", "Default page size for API list* commands"),
    ("expunge.interval", "86400", "Advanced", false, "Integer", "The interval (in seconds) to wait before running the expunge thread."),
    ("guest.vlan.bits", "12", "Network", false, "Integer", "The number of bits to reserve for the VLAN identifier in the guest subnet."),
    ("host", "10.1.0.5", "Advanced", false, "String", "The ip address of management server. This can also accept comma separated addresses."),
    ("migrate.vm.across.clusters", "false", "Advanced", true, "Boolean", "Indicates whether the VM can be migrated to different cluster if no host is found in same cluster"),
    ("network.gc.interval", "600", "Advanced", false, "Integer", "Seconds to wait before checking for networks to shutdown"),
    ("network.gc.wait", "600", "Advanced", false, "Integer", "Time (in seconds) to wait before shutting down a network that's not in used"),
    ("router.check.interval", "30", "Advanced", false, "Integer", "Interval (in seconds) to report redundant router status."),
    ("router.redundant.vrrp.interval", "1", "Network", false, "Integer", "seconds between VRRP broadcast. It would 3 times broadcast fail to trigger fail-over mechanism of redundant router"),
    ("secstorage.allowed.internal.sites", "", "Advanced", false, "String", "Comma separated list of cidrs internal to the datacenter that can host template download servers, please note 0.0.0.0 is not a valid site"),
    ("secstorage.capacity.standby", "10", "Advanced", false, "Integer", "The minimal number of command execution sessions that system is able to serve immediately(standby capacity)"),
    ("secstorage.vm.mtu.size", "1500", "Advanced", false, "Integer", "MTU size (in Byte) of storage network in secondary storage vms"),
    ("system.vm.use.local.storage", "false", "Advanced", true, "Boolean", "Indicates whether to use local storage pools or shared storage pools for system VMs."),
    ("vm.network.throttling.rate", "200", "Network", false, "Integer", "Default data transfer rate in megabits per second allowed in User vm's default network."),
    ("vpc.max.networks", "3", "Network", false, "Integer", "Maximum number of networks per vpc"),
    ("webhook.deliveries.limit", "10", "Advanced", true, "Integer", "Limit for the number of deliveries to keep in DB per webhook"),
    ("webhook.delivery.retries", "3", "Advanced", true, "Integer", "Number of tries to be made for a webhook delivery"),
    ("webhook.delivery.timeout", "10", "Advanced", true, "Integer", "Wait timeout (in seconds) for a webhook delivery delivery"),
];

/// `secstorage.allowed.internal.sites` in a scenario that does not set it: the template
/// servers' subnet, so downloads work.
pub const DEFAULT_ALLOWED_SITES: &str = "10.20.0.0/16";

/// The first VPC router number.
const FIRST_ROUTER: u32 = 930;

fn linklocal(n: u32) -> String {
    format!("169.254.{}.{}", 1 + n / 250, 2 + n % 250)
}

impl World {
    /// Builds the zone a scenario describes. Fails when the scenario names a setting, host or
    /// machine that does not exist, or an override changes nothing (see `Guest::apply`).
    pub fn from_scenario(s: &Scenario) -> Result<World, String> {
        if s.hosts.is_empty() {
            return Err("hosts: the zone needs at least one hypervisor".into());
        }
        vlan_text(&s.guest_vlan)?;
        let mut w = World {
            zone_id: id_for("zone", "zone1"),
            zone_name: "zone1".into(),
            pod_id: id_for("pod", "pod1"),
            cluster_id: id_for("cluster", "cluster1"),
            domain_id: id_for("domain", DOMAIN),
            template_server: s.template_server.clone(),
            physnets: vec![physnet(&s.guest_vlan)],
            vpcs: Vec::new(),
            networks: Vec::new(),
            vms: Vec::new(),
            hosts: s
                .hosts
                .iter()
                .enumerate()
                .map(|(i, n)| host(n, i))
                .collect(),
            settings: settings(s)?,
            mgmt: mgmt(1),
            peers: (2..=s.management_servers.max(1)).map(mgmt).collect(),
            clusters: Vec::new(),
            offerings: Vec::new(),
            templates: Vec::new(),
            next_instance: 1,
            job_ms: s.job_ms.unwrap_or(super::DEFAULT_JOB_MS),
        };
        for (name, state) in &s.host_states {
            let h = w
                .hosts
                .iter_mut()
                .find(|h| &h.name == name)
                .ok_or_else(|| format!("host_states: no host {name}"))?;
            h.state = state.clone();
        }
        w.seed_compute(s)?;
        w.seed_system_vms();
        w.next_instance = FIRST_ROUTER;
        let mut next_host = 0;
        for (vi, seed) in s.vpcs.iter().enumerate() {
            if let Some(name) = seed
                .router_hosts
                .iter()
                .find(|n| w.host_by_name(n).is_none())
            {
                return Err(format!("vpcs.{}.router_hosts: no host {name}", seed.name));
            }
            w.seed_vpc(vi, seed, &mut next_host);
        }
        w.seed_vms(s)?;
        for (machine, seed) in &s.guest {
            let g = w
                .guest_mut(machine)
                .ok_or_else(|| format!("guest: no machine named {machine}"))?;
            g.apply(seed).map_err(|e| format!("guest.{machine}.{e}"))?;
        }
        Ok(w)
    }

    fn host_by_name(&self, name: &str) -> Option<String> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.id.clone())
    }

    fn host_id(&self, i: usize) -> String {
        self.hosts[i % self.hosts.len()].id.clone()
    }

    fn seed_system_vms(&mut self) {
        let sites = self
            .setting("secstorage.allowed.internal.sites")
            .to_string();
        for (i, systemvmtype) in ["secondarystoragevm", "consoleproxy"].iter().enumerate() {
            let hostid = self.host_id(i);
            let vm = self.new_system_vm(systemvmtype, hostid, &sites, "Running");
            self.vms.push(vm);
        }
    }

    /// A system VM with the next number. `sites` is the allowed-sites value it starts with.
    pub fn new_system_vm(
        &mut self,
        systemvmtype: &str,
        hostid: String,
        sites: &str,
        state: &str,
    ) -> Vm {
        let n = self.take_instance();
        let (prefix, kind) = if systemvmtype == "secondarystoragevm" {
            ("s", "secstorage")
        } else {
            ("v", "consoleproxy")
        };
        let name = format!("{prefix}-{n}-VM");
        let (ll, private, public) = (
            linklocal(n),
            format!("10.1.{}.{}", 1 + n / 250, 2 + n % 250),
            format!("192.0.2.{}", 20 + n % 200),
        );
        let mut guest = Guest::default();
        guest.put_link("eth0", true, &[format!("{ll}/16")]);
        guest.put_link("eth1", true, &[format!("{private}/16")]);
        guest.put_link("eth2", true, &[format!("{public}/24")]);
        let running = if state == "Running" {
            ServiceState::Active
        } else {
            ServiceState::Inactive
        };
        guest.set_service("cloud", running);
        guest.set_service("ssh", ServiceState::Active);
        guest.put_file(
            "/var/cache/cloud/cmdline",
            0o644,
            "root",
            &format!(
                "type={kind} name={name} eth0ip={ll} eth1ip={private} eth2ip={public} host={}\n",
                self.mgmt.ipaddress
            ),
        );
        guest.put_file(
            "/usr/local/cloud/systemvm/ssvm-check.sh",
            0o755,
            "root",
            "#!/bin/bash\n# checks DNS, secondary storage and the management server\n",
        );
        Vm {
            id: id_for("vm", &name),
            name,
            number: n,
            kind: VmKind::SystemVm {
                systemvmtype: systemvmtype.into(),
                allowed_sites: sites.into(),
            },
            state: state.into(),
            hostid,
            linklocalip: ll,
            privateip: private,
            publicip: public,
            ports: Vec::new(),
            guest,
            offeringid: String::new(),
            templateid: String::new(),
            extra_nics: Vec::new(),
        }
    }

    fn seed_vpc(&mut self, vi: usize, seed: &crate::scenario::VpcSeed, next_host: &mut usize) {
        let vpc = Vpc {
            id: id_for("vpc", &seed.name),
            name: seed.name.clone(),
            cidr: format!("10.{}.0.0/16", 100 + vi),
            redundant: seed.routers >= 2,
            restartrequired: false,
        };
        let tier_ids: Vec<String> = seed
            .tiers
            .iter()
            .enumerate()
            .map(|(ti, tier)| {
                let net = Network {
                    id: id_for("network", &format!("{}/{tier}", seed.name)),
                    name: tier.clone(),
                    vpcid: vpc.id.clone(),
                    cidr: format!("10.{}.{}.0/24", 100 + vi, ti + 1),
                    gateway: format!("10.{}.{}.1", 100 + vi, ti + 1),
                    vlan: None,
                };
                let id = net.id.clone();
                self.networks.push(net);
                id
            })
            .collect();
        let vpcid = vpc.id.clone();
        let publicip = format!("198.51.100.{}", 10 + vi);
        self.vpcs.push(vpc);
        for r in 0..seed.routers {
            let hostid = match seed.router_hosts.len() {
                0 => self.host_id(r),
                n => self
                    .host_by_name(&seed.router_hosts[r % n])
                    .unwrap_or_else(|| self.host_id(r)),
            };
            self.add_router(&vpcid, hostid, &publicip);
        }
        // A VPC whose tiers all get a VLAN is implemented and its routers configured;
        // otherwise they never were (the vr-backup-loop failure).
        if self.allocate_vlans(&tier_ids).is_ok() {
            self.configure_routers(&vpcid);
        }
        for (ti, tier) in seed.tiers.iter().enumerate() {
            for n in 0..seed.vms_per_tier {
                let hostid = self.host_id(*next_host);
                *next_host += 1;
                self.add_guest_vm(&tier_ids[ti], &format!("{tier}-vm{}", n + 1), hostid, None);
            }
        }
    }

    /// A fresh, unconfigured router of a VPC on `hostid`: eth0 (control) up, eth1 (public)
    /// down, no guest NICs, keepalived/conntrackd/dnsmasq inactive, no keepalived.conf.
    /// Its public NIC is plugged into the host's cloudbr0.
    pub fn add_router(&mut self, vpcid: &str, hostid: String, publicip: &str) -> String {
        let n = self.take_instance();
        let name = format!("r-{n}-VM");
        let ll = linklocal(n);
        let mut guest = Guest::default();
        guest.put_link("eth0", true, &[format!("{ll}/16")]);
        guest.put_link("eth1", false, &[format!("{publicip}/24")]);
        for svc in ["keepalived", "conntrackd", "dnsmasq"] {
            guest.set_service(svc, ServiceState::Inactive);
        }
        guest.set_service("ssh", ServiceState::Active);
        guest.put_file(
            "/var/cache/cloud/cmdline",
            0o644,
            "root",
            &format!("type=vpcrouter name={name} eth0ip={ll} redundant_router=true\n"),
        );
        guest.put_file("/etc/dhcphosts.txt", 0o644, "root", "");
        guest.put_file(
            "/etc/dnsmasq.d/cloud.conf",
            0o644,
            "root",
            "# written by CsDhcp.py\n",
        );
        let id = id_for("vm", &name);
        self.vms.push(Vm {
            id: id.clone(),
            name,
            number: n,
            kind: VmKind::Router {
                vpcid: vpcid.to_string(),
            },
            state: "Running".into(),
            hostid,
            linklocalip: ll,
            privateip: String::new(),
            publicip: publicip.to_string(),
            ports: Vec::new(),
            guest,
            offeringid: super::catalog::router_offering_id(),
            templateid: String::new(),
            extra_nics: Vec::new(),
        });
        self.plug(&id, "cloudbr0");
        id
    }

    /// A guest VM in a tier: Running and plugged into its host's cloudbr1 when the tier has a
    /// VLAN, Stopped otherwise (it could not be deployed). Its DHCP entry goes to the routers.
    /// `number` is its instance number (default: the next).
    pub fn add_guest_vm(
        &mut self,
        networkid: &str,
        name: &str,
        hostid: String,
        number: Option<u32>,
    ) -> String {
        let n = match number {
            Some(n) => {
                self.next_instance = self.next_instance.max(n + 1);
                n
            }
            None => self.take_instance(),
        };
        let net = self
            .networks
            .iter()
            .find(|x| x.id == networkid)
            .expect("tier exists")
            .clone();
        let index = self
            .vms
            .iter()
            .filter(|v| matches!(&v.kind, VmKind::Guest { networkid: x, .. } if x == networkid))
            .count();
        let base = net.gateway.rsplit_once('.').map_or("10.0.0", |(b, _)| b);
        let ip = format!("{base}.{}", 10 + index);
        let implemented = net.vlan.is_some();
        let mut guest = Guest::default();
        guest.put_link("eth0", implemented, &[format!("{ip}/24")]);
        guest.set_service("ssh", ServiceState::Active);
        let id = id_for("vm", name);
        self.vms.push(Vm {
            id: id.clone(),
            name: name.to_string(),
            number: n,
            kind: VmKind::Guest {
                networkid: networkid.to_string(),
                ip: ip.clone(),
            },
            state: if implemented { "Running" } else { "Stopped" }.into(),
            hostid,
            linklocalip: String::new(),
            privateip: String::new(),
            publicip: String::new(),
            ports: Vec::new(),
            guest,
            offeringid: self
                .offerings
                .first()
                .map(|o| o.id.clone())
                .unwrap_or_default(),
            templateid: self
                .templates
                .first()
                .map(|t| t.id.clone())
                .unwrap_or_default(),
            extra_nics: Vec::new(),
        });
        if implemented {
            self.plug(&id, "cloudbr1");
        }
        let mac = mac_for(n);
        for vm in self.vms.iter_mut().filter(|v| v.is_router_of(&net.vpcid)) {
            if let Some(f) = vm.guest.files.get_mut("/etc/dhcphosts.txt") {
                f.content.push_str(&format!("{mac},{ip},{name},infinite\n"));
            }
        }
        id
    }
}

/// A guest VM's MAC address, from its instance number.
pub fn mac_for(n: u32) -> String {
    format!("02:00:{:02x}:{:02x}:00:01", (n >> 8) & 0xff, n & 0xff)
}

fn vlan_text(text: &str) -> Result<(), String> {
    super::vlan::parse(text)
        .map(|_| ())
        .map_err(|e| format!("guest_vlan: {e}"))
}

fn physnet(guest_vlan: &str) -> PhysNet {
    let name = "physnet-guest";
    let spans = super::vlan::parse(guest_vlan).unwrap_or_default();
    let id = id_for("physnet", name);
    let traffic = [
        ("Guest", "cloudbr1"),
        ("Public", "cloudbr0"),
        ("Management", "cloudbr0"),
        ("Storage", "cloudbr0"),
    ]
    .iter()
    .map(|(t, label)| TrafficType {
        id: id_for("traffictype", &format!("{name}/{t}")),
        traffictype: t.to_string(),
        kvmnetworklabel: label.to_string(),
    })
    .collect();
    PhysNet {
        id,
        name: name.into(),
        vlan: super::vlan::format(&spans),
        state: "Enabled".into(),
        traffic,
        providers: super::providers::seeded(),
    }
}

fn settings(s: &Scenario) -> Result<Vec<Setting>, String> {
    if let Some(unknown) = s
        .settings
        .keys()
        .find(|k| !SETTINGS.iter().any(|(n, ..)| n == k))
    {
        return Err(format!("settings: unknown setting {unknown}"));
    }
    Ok(SETTINGS
        .iter()
        .map(
            |(name, default, category, dynamic, kind, description)| Setting {
                name: name.to_string(),
                value: s.settings.get(*name).cloned().unwrap_or_else(|| {
                    if *name == "secstorage.allowed.internal.sites" {
                        DEFAULT_ALLOWED_SITES.into()
                    } else {
                        default.to_string()
                    }
                }),
                defaultvalue: default.to_string(),
                category: category.to_string(),
                description: description.to_string(),
                isdynamic: *dynamic,
                kind: kind.to_string(),
                scopes: scopes_of(name),
                scoped: Vec::new(),
            },
        )
        .collect())
}

/// The scope a setting has besides global, as CloudStack 4.18 declares it
/// (`migrate.vm.across.clusters` and `system.vm.use.local.storage` per zone,
/// `vpc.max.networks` per account); the others are global only.
fn scopes_of(name: &str) -> Vec<String> {
    match name {
        "migrate.vm.across.clusters" | "system.vm.use.local.storage" => vec!["Zone".into()],
        "vpc.max.networks" => vec!["Account".into()],
        _ => Vec::new(),
    }
}

fn host(name: &str, i: usize) -> Host {
    let ip = format!("10.1.0.{}", 11 + i);
    let mut guest = Guest::default();
    guest.put_link("eth0", true, &[]);
    guest.put_link("cloudbr0", true, &[format!("{ip}/16")]);
    guest.put_link("cloudbr1", true, &[]);
    guest.put_link("cloud0", true, &["169.254.0.1/16".to_string()]);
    for svc in ["cloudstack-agent", "libvirtd", "openvswitch-switch", "ssh"] {
        guest.set_service(svc, ServiceState::Active);
    }
    guest.put_file(
        "/root/.ssh/id_rsa.cloud",
        0o600,
        "root",
        "(the simulated zone's system VM key)\n",
    );
    guest.put_file(
        "/etc/cloudstack/agent/agent.properties",
        0o644,
        "root",
        &format!(
            "host=10.1.0.5\nzone={}\npod={}\ncluster={}\nguest.network.device=cloudbr1\npublic.network.device=cloudbr0\nprivate.network.device=cloudbr0\nnetwork.bridge.type=openvswitch\n",
            id_for("zone", "zone1"),
            id_for("pod", "pod1"),
            id_for("cluster", "cluster1"),
        ),
    );
    for bridge in ["cloudbr0", "cloudbr1"] {
        guest.ovs.insert(
            bridge.into(),
            super::guest::Bridge {
                ports: Vec::new(),
                flows: vec!["table=0,priority=0,actions=NORMAL".into()],
            },
        );
    }
    Host {
        id: id_for("host", name),
        name: name.to_string(),
        ipaddress: ip,
        state: "Up".into(),
        resourcestate: "Enabled".into(),
        next_vnet: 0,
        guest,
        clusterid: id_for("cluster", "cluster1"),
        hosttags: Vec::new(),
        cpunumber: 16,
        cpuspeed: 2400,
        memory: 65536 << 20,
    }
}

/// Management server `n` (1-based): `mgmt<n>` at 10.1.0.<4+n>.
fn mgmt(n: usize) -> MgmtServer {
    let name = format!("mgmt{n}");
    let ip = format!("10.1.0.{}", 4 + n);
    let mut guest = Guest::default();
    guest.put_link("eth0", true, &[format!("{ip}/16")]);
    guest.set_service("cloudstack-management", ServiceState::Active);
    guest.set_service("ssh", ServiceState::Active);
    guest.files.insert(
        CATALINA_OUT.into(),
        super::guest::File {
            mode: 0o644,
            owner: "cloud".into(),
            group: "cloud".into(),
            content: "INFO  [o.a.c.ServerDaemon] (main:null) Server configuration file found\n"
                .into(),
            gzip: None,
        },
    );
    guest.files.insert(
        "/var/log/cloudstack/management/management-server.log".into(),
        super::guest::File {
            mode: 0o644,
            owner: "cloud".into(),
            group: "cloud".into(),
            content: "INFO  [c.c.s.ManagementServerImpl] (main:null) Startup CloudStack management server...\n".into(),
            gzip: None,
        },
    );
    MgmtServer {
        id: id_for("mgmt", &name),
        name,
        ipaddress: ip,
        guest,
    }
}
