//! Compute placement: clusters, host tags and capacity, service offerings and templates, the
//! guest VMs a scenario places explicitly, and the host allocator with CloudStack 4.20's
//! FirstFit behaviour when a host goes into maintenance.
//!
//! - **Tags.** A host suits a VM when it carries every tag of the VM's offering (`hosttags`)
//!   and the template's `templatetag`; an empty tag asks for nothing.
//! - **Capacity.** A host's allocated CPU (MHz) and memory (bytes) are the sums over the guest
//!   VMs on it that are not Stopped; routers and system VMs are not counted. A VM fits when
//!   both what it needs are free.
//! - **The allocator** ([`World::migrate_away_target`]) looks for a host for a VM leaving a
//!   host that goes into maintenance: first the other hosts of its own cluster; then, when
//!   `migrate.vm.across.clusters` is true, the next cluster in order, and only that one. A
//!   VM whose tags no host of that first other cluster matches is given up on, although a
//!   later cluster may hold a suitable host: the 4.20 FirstFitRouting bug (apache/cloudstack
//!   issue 10598). Routers and system VMs go to the first Up, Enabled host of their cluster,
//!   else of any cluster.
//!
//! Seeding these from a scenario is here too ([`World::seed_compute`], [`World::seed_vms`]);
//! the API views are `compute_views.rs`, the jobs that use the allocator `host_jobs.rs`.

use std::collections::HashMap;

use super::model::{id_for, Cluster, ExtraNic, Host, Offering, Template, Vm, VmKind, World};
use crate::scenario::Scenario;

/// The offering every guest VM gets unless the scenario says otherwise.
pub const DEFAULT_OFFERING: &str = "Small Instance";
/// The template every guest VM gets unless the scenario says otherwise.
pub const DEFAULT_TEMPLATE: &str = "CentOS 5.5(64-bit) no GUI (KVM)";

impl World {
    /// Clusters (hosts assigned), host tags and capacity, offerings and templates.
    pub(super) fn seed_compute(&mut self, s: &Scenario) -> Result<(), String> {
        let names: Vec<String> = if s.clusters.is_empty() {
            vec!["cluster1".into()]
        } else {
            s.clusters.iter().map(|c| c.name.clone()).collect()
        };
        self.clusters = names
            .iter()
            .map(|n| Cluster {
                id: id_for("cluster", n),
                name: n.clone(),
            })
            .collect();
        self.cluster_id = self.clusters[0].id.clone();
        for h in &mut self.hosts {
            h.clusterid = self.cluster_id.clone();
        }
        for c in &s.clusters {
            for name in &c.hosts {
                let h = self.host_named_mut(name, &format!("clusters.{}", c.name))?;
                h.clusterid = id_for("cluster", &c.name);
            }
        }
        for (name, tags) in &s.host_tags {
            self.host_named_mut(name, "host_tags")?.hosttags = tags.clone();
        }
        for (name, cap) in &s.host_capacity {
            let h = self.host_named_mut(name, "host_capacity")?;
            h.cpunumber = cap.cpunumber;
            h.cpuspeed = cap.cpuspeed;
            h.memory = cap.memory << 20;
        }
        self.offerings = vec![Offering {
            id: id_for("offering", DEFAULT_OFFERING),
            name: DEFAULT_OFFERING.into(),
            cpunumber: 1,
            cpuspeed: 500,
            memory: 512,
            hosttags: Vec::new(),
        }];
        self.offerings.extend(s.offerings.iter().map(|o| Offering {
            id: id_for("offering", &o.name),
            name: o.name.clone(),
            cpunumber: o.cpunumber,
            cpuspeed: o.cpuspeed,
            memory: o.memory,
            hosttags: o.hosttags.clone(),
        }));
        self.templates = vec![Template {
            id: id_for("template", DEFAULT_TEMPLATE),
            name: DEFAULT_TEMPLATE.into(),
            templatetag: String::new(),
        }];
        self.templates.extend(s.templates.iter().map(|t| Template {
            id: id_for("template", &t.name),
            name: t.name.clone(),
            templatetag: t.templatetag.clone(),
        }));
        Ok(())
    }

    fn host_named_mut(&mut self, name: &str, what: &str) -> Result<&mut Host, String> {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .ok_or_else(|| format!("{what}: no host {name}"))
    }

    /// The scenario's explicitly placed guest VMs, with their extra and removed NICs.
    pub(super) fn seed_vms(&mut self, s: &Scenario) -> Result<(), String> {
        for seed in &s.vms {
            let at = format!("vms.{}", seed.name);
            let hostid = self
                .hosts
                .iter()
                .find(|h| h.name == seed.host)
                .map(|h| h.id.clone())
                .ok_or_else(|| format!("{at}: no host {}", seed.host))?;
            let mut nets = Vec::new();
            for name in &seed.networks {
                let net = self
                    .networks
                    .iter()
                    .find(|n| &n.name == name)
                    .ok_or_else(|| format!("{at}: no network {name}"))?;
                nets.push(net.id.clone());
            }
            let Some((default, extra)) = nets.split_first() else {
                return Err(format!("{at}: networks: at least one is needed"));
            };
            if let Some(n) = seed
                .number
                .filter(|n| self.vms.iter().any(|v| v.number == *n))
            {
                return Err(format!("{at}: instance number {n} is taken"));
            }
            let offeringid = match &seed.offering {
                Some(o) => self.offering_named(o, &at)?,
                None => self.offerings[0].id.clone(),
            };
            let templateid = match &seed.template {
                Some(t) => self
                    .templates
                    .iter()
                    .find(|x| &x.name == t)
                    .map(|x| x.id.clone())
                    .ok_or_else(|| format!("{at}: no template {t}"))?,
                None => self.templates[0].id.clone(),
            };
            let id = self.add_guest_vm(default, &seed.name, hostid, seed.number);
            for removed in &seed.removed_nics {
                if !seed.networks[1..].contains(removed) {
                    return Err(format!(
                        "{at}: removed_nics: {removed} is not one of its non-default networks"
                    ));
                }
            }
            let extra: Vec<ExtraNic> = extra
                .iter()
                .enumerate()
                .map(|(i, netid)| {
                    let net = self.networks.iter().find(|n| &n.id == netid);
                    let base = net
                        .and_then(|n| n.gateway.rsplit_once('.'))
                        .map_or("10.0.0", |(b, _)| b);
                    let name = net.map_or("", |n| n.name.as_str());
                    ExtraNic {
                        networkid: netid.clone(),
                        ip: format!("{base}.{}", 100 + (self.vms.len() % 100)),
                        deviceid: i + 1,
                        removed: seed.removed_nics.iter().any(|r| r == name),
                    }
                })
                .collect();
            let vm = self.vm_mut(&id).expect("just added");
            vm.offeringid = offeringid;
            vm.templateid = templateid;
            for nic in &extra {
                if !nic.removed {
                    let eth = format!("eth{}", nic.deviceid);
                    vm.guest.put_link(&eth, true, &[format!("{}/24", nic.ip)]);
                }
            }
            vm.extra_nics = extra;
        }
        Ok(())
    }

    fn offering_named(&self, name: &str, at: &str) -> Result<String, String> {
        self.offerings
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.id.clone())
            .ok_or_else(|| format!("{at}: no offering {name}"))
    }

    pub fn offering(&self, id: &str) -> Option<&Offering> {
        self.offerings.iter().find(|o| o.id == id)
    }

    pub fn template(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.id == id)
    }

    pub fn cluster(&self, id: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.id == id)
    }

    /// The CPU (MHz) and memory (bytes) allocated on a host: its guest VMs that are not
    /// Stopped.
    pub fn allocated(&self, hostid: &str) -> (u64, u64) {
        self.vms
            .iter()
            .filter(|v| v.is_guest() && v.live() && v.state != "Stopped" && v.hostid == hostid)
            .filter_map(|v| self.offering(&v.offeringid))
            .fold((0, 0), |(c, m), o| (c + o.cpu_mhz(), m + o.memory_bytes()))
    }

    /// [`World::allocated`] of every host that has anything allocated, in one pass over the
    /// VMs (`listHosts` of a large zone would otherwise scan every VM once per host).
    pub fn allocated_by_host(&self) -> HashMap<&str, (u64, u64)> {
        let mut by_host: HashMap<&str, (u64, u64)> = HashMap::new();
        for v in self
            .vms
            .iter()
            .filter(|v| v.is_guest() && v.live() && v.state != "Stopped")
        {
            if let Some(o) = self.offering(&v.offeringid) {
                let (c, m) = by_host.entry(v.hostid.as_str()).or_default();
                *c += o.cpu_mhz();
                *m += o.memory_bytes();
            }
        }
        by_host
    }

    /// The tags a VM needs on its host: its offering's host tags, then its template's tag.
    pub fn tags_needed(&self, vm: &Vm) -> Vec<String> {
        let mut tags: Vec<String> = self
            .offering(&vm.offeringid)
            .map(|o| o.hosttags.clone())
            .unwrap_or_default();
        if let Some(t) = self.template(&vm.templateid) {
            if !t.templatetag.is_empty() {
                tags.push(t.templatetag.clone());
            }
        }
        tags
    }

    /// Whether a host carries every tag a VM needs.
    pub fn tags_match(&self, host: &Host, vm: &Vm) -> bool {
        self.tags_needed(vm)
            .iter()
            .all(|t| host.hosttags.iter().any(|h| h.eq_ignore_ascii_case(t)))
    }

    /// Whether a host has the CPU and memory a VM's offering needs free.
    pub fn has_room(&self, host: &Host, vm: &Vm) -> bool {
        let Some(o) = self.offering(&vm.offeringid) else {
            return true;
        };
        let (cpu, mem) = self.allocated(&host.id);
        cpu + o.cpu_mhz() <= u64::from(host.cpunumber) * host.cpuspeed
            && mem + o.memory_bytes() <= host.memory
    }

    /// Whether a host takes VMs: agent Up, resource Enabled.
    pub fn takes_vms(host: &Host) -> bool {
        host.state == "Up" && host.resourcestate == "Enabled"
    }

    /// A host other than `from` in `cluster` that suits the VM (see the module doc).
    fn suitable_in(&self, vm: &Vm, cluster: &str, from: &str) -> Option<String> {
        self.hosts
            .iter()
            .filter(|h| h.clusterid == cluster && h.id != from && World::takes_vms(h))
            .find(|h| !vm.is_guest() || (self.tags_match(h, vm) && self.has_room(h, vm)))
            .map(|h| h.id.clone())
    }

    /// Where the allocator moves a VM leaving host `from` (see the module doc), or the error
    /// CloudStack gives when it finds nothing.
    pub fn migrate_away_target(&self, vm: &Vm, from: &str) -> Result<String, String> {
        let own = self
            .host(from)
            .map(|h| h.clusterid.clone())
            .unwrap_or_default();
        if let Some(h) = self.suitable_in(vm, &own, from) {
            return Ok(h);
        }
        let others: Vec<&Cluster> = self.clusters.iter().filter(|c| c.id != own).collect();
        if !vm.is_guest() {
            if let Some(h) = others
                .iter()
                .find_map(|c| self.suitable_in(vm, &c.id, from))
            {
                return Ok(h);
            }
        } else if self.setting("migrate.vm.across.clusters") == "true" {
            // FirstFitRouting in 4.20: only the first other cluster is tried
            if let Some(h) = others
                .first()
                .and_then(|c| self.suitable_in(vm, &c.id, from))
            {
                return Ok(h);
            }
        }
        Err(format!("No suitable host found for vm {}.", vm.log_name()))
    }

    /// Moves a VM to another host: its taps leave the old host's bridges and are plugged
    /// into the new host's.
    pub fn move_vm(&mut self, vm_id: &str, to: &str) {
        let bridges: Vec<String> = self
            .vm(vm_id)
            .map(|v| v.ports.iter().map(|(b, _)| b.clone()).collect())
            .unwrap_or_default();
        self.unplug(vm_id);
        if let Some(vm) = self.vm_mut(vm_id) {
            vm.hostid = to.to_string();
        }
        for b in bridges {
            self.plug(vm_id, &b);
        }
    }

    /// The live VMs on a host that are not Stopped, by name.
    pub fn running_on(&self, hostid: &str) -> Vec<&Vm> {
        let mut vms: Vec<&Vm> = self
            .vms
            .iter()
            .filter(|v| v.live() && v.state != "Stopped" && v.hostid == hostid)
            .collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        vms
    }

    /// The network ids of a guest VM's NICs: the default one, then the extra ones that were
    /// not removed.
    pub fn vm_networks(vm: &Vm) -> Vec<&str> {
        let VmKind::Guest { networkid, .. } = &vm.kind else {
            return Vec::new();
        };
        std::iter::once(networkid.as_str())
            .chain(
                vm.extra_nics
                    .iter()
                    .filter(|n| !n.removed)
                    .map(|n| n.networkid.as_str()),
            )
            .collect()
    }
}
