//! The management server's own checks, as events and alerts: the zone compares what it
//! derives from the guest state (a router's redundant state and dnsmasq, a hypervisor's
//! agent, whether the SSVM can download) with what it saw last time, and records what
//! changed, however it changed (an API job, a command over SSH, a fault injected with
//! [`Zone::inject`]). Also the runtime faults that break a healthy zone the way the shipped
//! scenarios start broken.
//!
//! The first look (the first [`Zone::observe`] of a zone) reports the faults the zone
//! starts with, as the server's first round of checks would; later looks report changes.
//!
//! What is recorded (the real server only alerts on most of these; the simulator also
//! records an event, so a webhook can carry it):
//! - a running router of a redundant VPC changes redundant state: alert 9
//!   `ALERT.SERVICE.DOMAINROUTER` `Redundant virtual router r-930-VM just switch from PRIMARY
//!   to BACKUP`, and event `ROUTER.HEALTH.CHECKS` with that text: WARN, or ERROR with `; no
//!   router of VPC web-vpc is PRIMARY` when none of the VPC's running routers is PRIMARY
//!   any more (INFO when it becomes PRIMARY);
//! - dnsmasq stops on a running router that serves DHCP and DNS (the PRIMARY of a redundant
//!   pair, or a lone router) and stays so: alert 9 `Health checks failed: 1 failing checks on
//!   router <uuid>` and event `ROUTER.HEALTH.CHECKS` ERROR `Health checks failed on router
//!   r-930-VM: dns_check, dhcp_check (dnsmasq is not running)`; back: INFO `Health checks
//!   passed on router r-930-VM`;
//! - a hypervisor leaves `Up` for `Disconnected`/`Alert`: alert 7 `ALERT.COMPUTE.HOST` `Host
//!   disconnected, name: kvm02 (id:2), availability zone: zone1, pod: pod1`, and event
//!   `HA.STATE.TRANSITION` WARN `Host kvm02 is Disconnected: its agent lost its connection to
//!   the management server`; back to `Up`: INFO `Host kvm02 is Up: its agent connected`;
//! - the SSVM can no longer download templates: alert 19 `ALERT.SERVICE.SSVM`.
//!
//! Cost: nothing while nothing touched the world since the last look (every path that can
//! change it calls [`Zone::touch`]; reads do not, so the looks around a list command, a
//! read-only SSH command or an idle delivery tick return at once; debug builds check that a
//! skipped look would have found nothing). Otherwise one pass over the routers, hosts and
//! SSVMs, comparing small values in place; the routers' and hosts' views are rebuilt
//! (allocated) only when something changed.

use serde::{Deserialize, Serialize};

use super::events::{NewEvent, Resource, ALERT_DOMAIN_ROUTER, ALERT_HOST, ALERT_SSVM};
use super::guest::ServiceState;
use super::model::{World, KEEPALIVED_CONF};
use super::{Zone, AGENT};

/// What a look saw of one machine: (id, state, redundant state or agent state, health).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    id: String,
    state: String,
    /// Routers: PRIMARY/BACKUP/...; hosts: unused.
    derived: &'static str,
    /// Routers: dnsmasq active; SSVM: can download.
    healthy: bool,
}

/// The last look, per kind of machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Watch {
    looked: bool,
    #[serde(skip)]
    routers: Vec<Seen>,
    #[serde(skip)]
    hosts: Vec<Seen>,
    #[serde(skip)]
    ssvms: Vec<Seen>,
}

fn seen((id, state, derived, healthy): (&str, &str, &'static str, bool)) -> Seen {
    Seen {
        id: id.to_string(),
        state: state.to_string(),
        derived,
        healthy,
    }
}

/// A change a look found.
enum Change {
    Redundant {
        vm: String,
        from: &'static str,
        to: &'static str,
    },
    Dnsmasq {
        vm: String,
        up: bool,
    },
    Host {
        host: String,
        from: String,
        to: String,
    },
    Ssvm {
        vm: String,
    },
}

/// Compares `now` with `before` (same order in the common case), pushing what changed;
/// `before` becomes `now`.
fn diff(before: &mut Vec<Seen>, now: Vec<Seen>, mut changed: impl FnMut(Option<&Seen>, &Seen)) {
    for (i, s) in now.iter().enumerate() {
        let old = match before.get(i) {
            Some(b) if b.id == s.id => Some(b),
            _ => before.iter().find(|b| b.id == s.id),
        };
        if old != Some(s) {
            changed(old, s);
        }
    }
    *before = now;
}

/// Whether a look finds exactly what `before` holds, in the same order (the common case:
/// nothing changed), compared in place without allocating.
fn same<'a>(
    before: &[Seen],
    now: impl Iterator<Item = (&'a str, &'a str, &'static str, bool)>,
) -> bool {
    let mut n = 0;
    for (i, (id, state, derived, healthy)) in now.enumerate() {
        n = i + 1;
        match before.get(i) {
            Some(b)
                if b.id == id
                    && b.state == state
                    && b.derived == derived
                    && b.healthy == healthy => {}
            _ => return false,
        }
    }
    n == before.len()
}

/// What a look sees of one machine: id, state, derived state, healthy.
type View<'a> = (&'a str, &'a str, &'static str, bool);

/// The live routers of VPCs: their redundant state, and whether dnsmasq runs.
fn router_views(w: &World) -> impl Iterator<Item = View<'_>> {
    w.vms
        .iter()
        .filter(|v| v.vpcid().is_some() && v.live())
        .map(|v| {
            (
                v.id.as_str(),
                v.state.as_str(),
                w.redundant_state(v),
                v.guest.active("dnsmasq"),
            )
        })
}

/// The hypervisors' states.
fn host_views(w: &World) -> impl Iterator<Item = View<'_>> {
    w.hosts
        .iter()
        .map(|h| (h.id.as_str(), h.state.as_str(), "", true))
}

/// The running SSVMs, and whether they can download templates.
fn ssvm_views(w: &World) -> impl Iterator<Item = View<'_>> {
    w.vms
        .iter()
        .filter(|v| v.is_ssvm() && v.live() && v.state == "Running")
        .map(|v| (v.id.as_str(), v.state.as_str(), "", w.ssvm_can_download(v)))
}

impl Zone {
    /// Looks at the zone and records events and alerts for what changed since the last look
    /// (see the module doc). Called before and after every API call, after every SSH command
    /// and by the server's delivery task; returns at once when nothing touched the world since
    /// the last look ([`Zone::touch`]).
    pub fn observe(&mut self, now: jiff::Timestamp) {
        if self.watch.looked && !self.unseen {
            debug_assert!(
                self.looks_the_same(),
                "the zone's world changed without Zone::touch"
            );
            return;
        }
        self.unseen = false;
        let first = !self.watch.looked;
        self.watch.looked = true;
        let mut changes = Vec::new();
        let w = &self.world;
        if first || !same(&self.watch.routers, router_views(w)) {
            let routers: Vec<Seen> = router_views(w).map(seen).collect();
            diff(&mut self.watch.routers, routers, |old, s| {
                if s.state != "Running" {
                    return;
                }
                let was_running = old.is_some_and(|o| o.state == "Running");
                let (from, healthy_before) = match old {
                    Some(o) if was_running => (o.derived, o.healthy),
                    _ if first => ("UNKNOWN", true),
                    _ => return,
                };
                if from != s.derived && !(first && s.derived == "PRIMARY") {
                    changes.push(Change::Redundant {
                        vm: s.id.clone(),
                        from,
                        to: s.derived,
                    });
                }
                // dnsmasq runs on the PRIMARY of a redundant pair (or a lone router) only
                let serves = |d: &str| d == "PRIMARY" || d == "UNKNOWN";
                let checked =
                    serves(s.derived) && (first || old.is_some_and(|o| serves(o.derived)));
                if checked && healthy_before != s.healthy && !(first && s.healthy) {
                    changes.push(Change::Dnsmasq {
                        vm: s.id.clone(),
                        up: s.healthy,
                    });
                }
            });
        }
        if first || !same(&self.watch.hosts, host_views(w)) {
            let hosts: Vec<Seen> = host_views(w).map(seen).collect();
            diff(&mut self.watch.hosts, hosts, |old, s| {
                let from = old.map_or("Up", |o| o.state.as_str());
                let down = |st: &str| st == "Disconnected" || st == "Alert";
                if (from == "Up" && down(&s.state)) || (down(from) && s.state == "Up") {
                    changes.push(Change::Host {
                        host: s.id.clone(),
                        from: from.to_string(),
                        to: s.state.clone(),
                    });
                }
            });
        }
        let ssvms: Vec<Seen> = ssvm_views(w).map(seen).collect();
        diff(&mut self.watch.ssvms, ssvms, |old, s| {
            if !s.healthy && old.is_none_or(|o| o.healthy) {
                changes.push(Change::Ssvm { vm: s.id.clone() });
            }
        });
        for c in changes {
            self.report(c, now);
        }
    }

    /// Whether a look now would find what the last one did (debug builds check that a
    /// skipped look missed nothing).
    fn looks_the_same(&self) -> bool {
        let w = &self.world;
        same(&self.watch.routers, router_views(w))
            && same(&self.watch.hosts, host_views(w))
            && same(&self.watch.ssvms, ssvm_views(w))
    }

    fn report(&mut self, change: Change, now: jiff::Timestamp) {
        match change {
            Change::Redundant { vm, from, to } => self.report_redundant(&vm, from, to, now),
            Change::Dnsmasq { vm, up } => self.report_dnsmasq(&vm, up, now),
            Change::Host { host, from, to } => self.report_host(&host, &from, &to, now),
            Change::Ssvm { vm } => {
                let Some(v) = self.world.vm(&vm) else { return };
                let subject = format!(
                    "Secondary storage VM {} cannot download templates from {}: secstorage.allowed.internal.sites ({}) does not cover it",
                    v.name,
                    self.world.template_server,
                    self.world.setting("secstorage.allowed.internal.sites")
                );
                self.record_alert(ALERT_SSVM, subject, now);
            }
        }
    }

    fn system_event(
        &self,
        kind: &str,
        level: &'static str,
        text: String,
        r: Option<Resource>,
    ) -> NewEvent {
        let account = self.owner(r.as_ref());
        NewEvent {
            kind: kind.to_string(),
            level,
            state: "Completed",
            description: text,
            account: account.to_string(),
            username: "system",
            resource: r,
            parentid: None,
        }
    }

    fn report_redundant(&mut self, id: &str, from: &str, to: &str, now: jiff::Timestamp) {
        let Some(v) = self.world.vm(id) else { return };
        let vpcid = v.vpcid().unwrap_or_default().to_string();
        let Some(vpc) = self.world.vpcs.iter().find(|x| x.id == vpcid) else {
            return;
        };
        if !vpc.redundant {
            return;
        }
        let title = format!(
            "Redundant virtual router {} just switch from {from} to {to}",
            v.name
        );
        let no_primary = self
            .world
            .routers_of(&vpcid)
            .iter()
            .filter(|r| r.state == "Running")
            .all(|r| self.world.redundant_state(r) != "PRIMARY");
        // the first look reports only a VPC left without a PRIMARY
        if from == "UNKNOWN" && !no_primary {
            return;
        }
        let (level, text) = match to {
            "PRIMARY" => ("INFO", title.clone()),
            _ if no_primary => (
                "ERROR",
                format!("{title}; no router of VPC {} is PRIMARY", vpc.name),
            ),
            _ => ("WARN", title.clone()),
        };
        let event = self.system_event("ROUTER.HEALTH.CHECKS", level, text, self.resource(id));
        self.record_alert(ALERT_DOMAIN_ROUTER, title, now);
        self.record_event(event, now);
    }

    fn report_dnsmasq(&mut self, id: &str, up: bool, now: jiff::Timestamp) {
        let Some(v) = self.world.vm(id) else { return };
        let (level, text) = if up {
            ("INFO", format!("Health checks passed on router {}", v.name))
        } else {
            (
                "ERROR",
                format!(
                    "Health checks failed on router {}: dns_check, dhcp_check (dnsmasq is not running)",
                    v.name
                ),
            )
        };
        if !up {
            let subject = format!("Health checks failed: 1 failing checks on router {}", v.id);
            self.record_alert(ALERT_DOMAIN_ROUTER, subject, now);
        }
        let event = self.system_event("ROUTER.HEALTH.CHECKS", level, text, self.resource(id));
        self.record_event(event, now);
    }

    fn report_host(&mut self, id: &str, _from: &str, to: &str, now: jiff::Timestamp) {
        let Some(i) = self.world.hosts.iter().position(|h| h.id == id) else {
            return;
        };
        let name = self.world.hosts[i].name.clone();
        let (level, text) = if to == "Up" {
            ("INFO", format!("Host {name} is Up: its agent connected"))
        } else {
            let subject = format!(
                "Host disconnected, name: {name} (id:{}), availability zone: {}, pod: pod1",
                i + 1,
                self.world.zone_name
            );
            self.record_alert(ALERT_HOST, subject, now);
            (
                "WARN",
                format!(
                    "Host {name} is {to}: its agent lost its connection to the management server"
                ),
            )
        };
        let event = self.system_event("HA.STATE.TRANSITION", level, text, self.resource(id));
        self.record_event(event, now);
    }

    /// Breaks the zone at run time as a shipped scenario starts broken (`POST /sim/break`),
    /// then looks at it so the events follow at once. `what`:
    /// - `vr-backup-loop` (target: a VPC's name): both routers lose their configuration:
    ///   no keepalived.conf, keepalived and conntrackd stopped, eth1 down: both BACKUP;
    /// - `dnsmasq-dead` (a router's name): dnsmasq fails;
    /// - `agent-down` (a hypervisor's name): its cloudstack-agent fails: Disconnected.
    ///
    /// Returns what was done, or why nothing was.
    pub fn inject(
        &mut self,
        what: &str,
        target: &str,
        now: jiff::Timestamp,
    ) -> Result<String, String> {
        self.advance(now);
        self.observe(now);
        self.touch();
        let done = match what {
            "vr-backup-loop" => {
                let vpc = self
                    .world
                    .vpcs
                    .iter()
                    .find(|v| v.name == target || v.id == target)
                    .ok_or_else(|| format!("no VPC named {target}"))?
                    .id
                    .clone();
                let ids: Vec<String> = self.world.routers_of(&vpc).iter().map(|r| r.id.clone()).collect();
                let mut names = Vec::new();
                for id in ids {
                    let vm = self.world.vm_mut(&id).expect("router exists");
                    vm.guest.files.remove(KEEPALIVED_CONF);
                    vm.guest.set_service("keepalived", ServiceState::Inactive);
                    vm.guest.set_service("conntrackd", ServiceState::Inactive);
                    vm.guest.set_link("eth1", false);
                    names.push(vm.name.clone());
                }
                format!("VPC {target}: routers {} lost their configuration (BACKUP)", names.join(", "))
            }
            "dnsmasq-dead" => {
                let vm = self
                    .world
                    .vms
                    .iter_mut()
                    .find(|v| v.name == target && v.live() && v.vpcid().is_some())
                    .ok_or_else(|| format!("no router named {target}"))?;
                vm.guest.set_service("dnsmasq", ServiceState::Failed);
                format!("router {target}: dnsmasq failed")
            }
            "agent-down" => {
                let h = self
                    .world
                    .hosts
                    .iter_mut()
                    .find(|h| h.name == target)
                    .ok_or_else(|| format!("no hypervisor named {target}"))?;
                h.guest.set_service(AGENT, ServiceState::Failed);
                h.state = "Disconnected".into();
                format!("hypervisor {target}: {AGENT} failed (Disconnected)")
            }
            other => {
                return Err(format!(
                    "unknown fault {other}: vr-backup-loop (a VPC), dnsmasq-dead (a router), agent-down (a hypervisor)"
                ))
            }
        };
        self.observe(now);
        Ok(done)
    }
}
