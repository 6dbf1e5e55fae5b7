//! The simulated zone: its state, the API commands over it, and async jobs over time.
//!
//! Pure logic with no I/O: time comes in with every call. Async jobs complete lazily: every
//! call first advances the zone to `now` ([`Zone::advance`]), finishing each job and follow-up
//! transition whose time has come, in time order.
//!
//! Modules: `model` (objects and the rules tying them to guest state), `guest` (what SSH
//! sees inside a machine), `seed` (building a zone from a scenario), `validate` (generic
//! parameter checks), `lists` (list commands and API views), `jobs` (async commands),
//! `vlan` (VLAN ranges and IPv4 CIDRs), `catalog` (discovery, tenancy, offerings,
//! `updateHost`, `changeServiceForRouter`), `providers` (network service providers and their
//! elements), `volumes` (`listVolumes`), and the compute, agent and log modules.
//!
//! Rules worth knowing:
//! - **Visibility.** The caller is the root admin. System VMs, hosts, settings and its own
//!   async jobs are always listed. VPCs, networks, their routers and guest VMs belong to the
//!   user account `ops`: `listVPCs`, `listNetworks`, `listRouters` and `listVirtualMachines`
//!   show them only with `listall=true` (or `account=ops`, `domainid`, or an `id`), as a real
//!   server does for resources of other accounts.
//! - **Redundant state** is derived at reply time from the router's guest state
//!   ([`World::redundant_state`], the logic of `checkrouter.sh`): eth1 (public) up is PRIMARY,
//!   down is BACKUP; keepalived not active is FAULT on a configured router (keepalived.conf
//!   present), BACKUP on one that was never configured; a router that is not Running, or not
//!   redundant, is UNKNOWN. VRRP ([`World::elect`]) runs when routers are configured, start,
//!   stop or reboot: a router going down hands eth1 to its partner; nobody preempts. A router
//!   that starts is configured again for the VPC's implemented tiers ([`World::configure_router`]).
//! - **Jobs** take [`DEFAULT_JOB_MS`] unless the scenario's `job_ms` or the fault settings
//!   (`job_ms`, `slow_jobs`/`slow_job_ms`) say otherwise; objects acted on carry
//!   `jobid`/`jobstatus` and a transitional state meanwhile (see the `jobs` module).
//! - **updatePhysicalNetwork `vlan`** is the complete wanted set (`a-b` items, 0–4095). It
//!   is an async job and every check runs in it: removing a range that holds an allocated
//!   VLAN, a bad range or state fail the job (jobstatus 2, jobresultcode 431).
//! - **restartVPC / restartNetwork** allocate a VLAN to every tier (or the one network) that
//!   has none, start stopped routers, deploy missing ones, write keepalived.conf, start
//!   keepalived and elect one PRIMARY. With no free VLAN the job fails with 533 and nothing
//!   changes. `cleanup=true` replaces the routers (new ids and names).
//! - **SSVM**: it gets `secstorage.allowed.internal.sites` when it boots; downloads from the
//!   template server work only when that snapshot covers the server ([`Zone::ssvm_check`],
//!   the output `ssvm-check.sh` gives over SSH; the API shows nothing of it, as in CloudStack). destroySystemVm replaces it (new id and name, Starting with agent
//!   Disconnected, Running with agent Up one job duration later); a reboot or stop/start
//!   also picks the current value up.

mod agent;
mod catalog;
mod compute;
mod compute_views;
pub mod events;
mod guest;
mod host_jobs;
mod jobs;
mod lists;
pub mod model;
mod mslog;
mod providers;
mod seed;
mod settings;
mod validate;
pub mod vlan;
mod volumes;
mod watch;
pub mod webhooks;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::apis;
use crate::faults::Faults;
use crate::scenario::Scenario;
pub use agent::AGENT;
pub use guest::{Bridge, File, Guest, Link, Service, ServiceState};
pub use jobs::Action;
pub use model::World;

/// The synchronous commands that change the zone (with the async ones, the commands
/// [`Zone::handle`] does not run as reads).
const WRITES: [&str; 8] = [
    "updateConfiguration",
    "updateHost",
    "changeServiceForRouter",
    "createWebhook",
    "updateWebhook",
    "deleteWebhook",
    "deleteWebhookDelivery",
    "executeWebhookDelivery",
];

/// How long an async job runs when neither the scenario nor the faults say otherwise.
pub const DEFAULT_JOB_MS: u64 = 1500;

/// One reply: the HTTP status and the JSON body (the whole envelope).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// The simulated zone. Cheap to clone; serializable (the snapshot is its JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Zone {
    world: World,
    jobs: Vec<jobs::Job>,
    timers: Vec<jobs::Timer>,
    /// Jobs started so far (job ids derive from it, so runs are reproducible).
    seq: u64,
    /// The latest time the zone was advanced to: timers that SSH commands start (an agent
    /// restarted) count from it.
    #[serde(default)]
    clock: jiff::Timestamp,
    /// The zone's fault settings, seeded from the scenario's `faults:`. They live here, under
    /// the zone's lock, so the HTTP front and the SSH hosts, which share only the zone, apply
    /// one set (see [`crate::faults`]).
    #[serde(default)]
    faults: Faults,
    /// Events and alerts (`events.rs`).
    #[serde(default)]
    log: events::Log,
    /// Webhooks, their deliveries and the queue (`webhooks.rs`).
    #[serde(default)]
    hooks: webhooks::Hooks,
    /// The last look at derived state (`watch.rs`).
    #[serde(default)]
    watch: watch::Watch,
    /// Whether the world may have changed since the last look: set by every path that can
    /// change it (see [`Zone::touch`]), cleared by [`Zone::observe`], which skips the look
    /// while it is clear.
    #[serde(skip, default = "unseen")]
    unseen: bool,
}

/// A zone read back from JSON has not been looked at.
fn unseen() -> bool {
    true
}

/// A CloudStack error reply: `{"<key>": {"uuidList": [], "errorcode", "cserrorcode", "errortext"}}`
/// with HTTP status = errorcode.
fn error(key: &str, status: u16, cserrorcode: i64, text: String) -> Reply {
    Reply {
        status,
        body: json!({ key: {
            "uuidList": [], "errorcode": status, "cserrorcode": cserrorcode, "errortext": text,
        }}),
    }
}

/// The cserrorcode of an error a command raises while it runs.
fn cserrorcode(status: u16) -> i64 {
    match status {
        431 => validate::CS_INVALID_PARAM,
        432 => 4555,
        533 => 4325,
        _ => 4250,
    }
}

impl Zone {
    /// A zone as the scenario describes it. Shipped and loaded scenarios are checked by
    /// [`Zone::try_new`] when they are parsed; should one still be inconsistent, the parts
    /// that could not be applied are skipped with a warning.
    pub fn new(scenario: &Scenario) -> Zone {
        Zone::try_new(scenario).unwrap_or_else(|e| {
            tracing::warn!(scenario = %scenario.name, "scenario not fully applied: {e}");
            let mut lenient = scenario.clone();
            lenient.guest.clear();
            lenient.settings.clear();
            lenient.host_states.clear();
            lenient.vms.clear();
            lenient.past_jobs.clear();
            lenient.clusters.clear();
            lenient.host_tags.clear();
            lenient.host_capacity.clear();
            if lenient.hosts.is_empty() {
                lenient.hosts = vec!["kvm01".into()];
            }
            if vlan::parse(&lenient.guest_vlan).is_err() {
                lenient.guest_vlan.clear();
            }
            Zone::try_new(&lenient).expect("a scenario without overrides builds")
        })
    }

    /// A zone as the scenario describes it, or why it cannot be built (a setting, host or
    /// machine that does not exist, an override that changes nothing).
    pub fn try_new(scenario: &Scenario) -> Result<Zone, String> {
        let mut zone = Zone {
            world: World::from_scenario(scenario)?,
            jobs: Vec::new(),
            timers: Vec::new(),
            seq: 0,
            clock: jiff::Timestamp::UNIX_EPOCH,
            faults: scenario.faults.clone(),
            log: events::Log::default(),
            hooks: webhooks::Hooks::default(),
            watch: watch::Watch::default(),
            unseen: true,
        };
        zone.seed_past_jobs(scenario)?;
        Ok(zone)
    }

    /// The fault settings in force.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The fault settings, to change them or count one down.
    pub fn faults_mut(&mut self) -> &mut Faults {
        &mut self.faults
    }

    /// The zone's contents (read-only), e.g. for assertions.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// A machine's guest state by name: a router or system VM (`r-930-VM`, `s-1-VM`), a guest
    /// VM (`web-vm1`), a hypervisor (`kvm01`) or the management server (`mgmt1`).
    pub fn guest(&self, machine: &str) -> Option<&Guest> {
        self.world.guest(machine)
    }

    /// A machine's guest state, to change it (the SSH side does this). API fields derived from
    /// it change with it.
    pub fn guest_mut(&mut self, machine: &str) -> Option<&mut Guest> {
        self.touch();
        self.world.guest_mut(machine)
    }

    /// Marks the world as possibly changed, so the next [`Zone::observe`] looks at it. The
    /// world is private to the zone: every `pub` method that can change it calls this (or
    /// [`Zone::guest_mut`], which does); reads (`&self`) and the log, webhook and fault
    /// methods, which the look does not read, need not.
    pub fn touch(&mut self) {
        self.unseen = true;
    }

    /// The names of every machine with a guest state: management server, hypervisors, then
    /// live VMs.
    pub fn machines(&self) -> Vec<String> {
        let w = &self.world;
        w.mgmts()
            .map(|m| m.name.clone())
            .chain(w.hosts.iter().map(|h| h.name.clone()))
            .chain(w.vms.iter().filter(|v| v.live()).map(|v| v.name.clone()))
            .collect()
    }

    /// What `/opt/cloud/bin/checkrouter.sh` prints on a router (`Status: PRIMARY`, ...), the
    /// same state `listRouters` shows; `None` for a machine that is not a live router.
    pub fn checkrouter(&self, router: &str) -> Option<String> {
        let vm = self
            .world
            .vms
            .iter()
            .find(|v| v.name == router && v.live() && v.vpcid().is_some())?;
        Some(format!("Status: {}\n", self.world.redundant_state(vm)))
    }

    /// What `/usr/local/cloud/systemvm/ssvm-check.sh` prints on the SSVM named `ssvm`;
    /// `None` for a machine that is not a live SSVM.
    pub fn ssvm_check(&self, ssvm: &str) -> Option<String> {
        let vm = self
            .world
            .vms
            .iter()
            .find(|v| v.name == ssvm && v.live() && v.is_ssvm())?;
        Some(self.world.ssvm_check(vm))
    }

    /// Whether the SSVM named `ssvm` can download templates from the template server now.
    pub fn ssvm_can_download(&self, ssvm: &str) -> bool {
        self.world
            .vms
            .iter()
            .find(|v| v.name == ssvm && v.live())
            .is_some_and(|v| self.world.ssvm_can_download(v))
    }

    /// The whole state as JSON, for `GET /sim/state` and tests.
    pub fn snapshot(&self) -> Value {
        json!({"world": self.world, "jobs": self.jobs, "timers": self.timers})
    }

    /// Finishes every job and transition due by `now`, in time order (a job before a timer
    /// due at the same instant).
    pub fn advance(&mut self, now: jiff::Timestamp) {
        self.clock = self.clock.max(now);
        loop {
            let job = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.status == jobs::PENDING && j.due <= now)
                .min_by_key(|(_, j)| j.due)
                .map(|(i, j)| (i, j.due));
            let timer = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.due <= now)
                .min_by_key(|(_, t)| t.due)
                .map(|(i, t)| (i, t.due));
            if job.is_some() || timer.is_some() {
                self.touch();
            }
            match (job, timer) {
                (Some((j, jdue)), Some((_, tdue))) if jdue <= tdue => self.finish(j),
                (Some((j, _)), None) => self.finish(j),
                (_, Some((t, _))) => {
                    let timer = self.timers.remove(t);
                    self.fire(timer);
                }
                (None, None) => return,
            }
        }
    }

    /// Runs one API command at time `now`. Every problem is a reply (431, 530, ...), never a
    /// panic. `faults` decide how the async jobs it starts behave.
    pub fn handle(
        &mut self,
        command: &str,
        params: &BTreeMap<String, String>,
        faults: &Faults,
        now: jiff::Timestamp,
    ) -> Reply {
        self.advance(now);
        self.observe(now);
        let Some(spec) = apis::get(command) else {
            return error(
                "errorresponse",
                401,
                9999,
                "unable to verify user credentials and/or request signature".into(),
            );
        };
        if let Err(reply) = self.validate(spec, params) {
            return reply;
        }
        let p = Params { map: params };
        let result = match self.read(spec, &p) {
            Some(result) => result,
            None => {
                self.touch();
                self.write(spec, &p, faults, now)
            }
        };
        self.observe(now);
        match result {
            Ok(mut body) => {
                if !spec.name.ends_with("Configuration") && !spec.name.ends_with("Configurations") {
                    omit_empty(&mut body);
                }
                Reply { status: 200, body }
            }
            Err((status, text)) => error(
                &spec.response_envelope_key,
                status,
                cserrorcode(status),
                text,
            ),
        }
    }

    /// Runs a command that only reads (lists, `queryAsyncJobResult`); `None` for one that may
    /// change the zone. Taking `&self` proves the zone is left as it was, so the look after
    /// it can be skipped.
    fn read(&self, spec: &apis::ApiSpec, p: &Params) -> Option<Result<Value, (u16, String)>> {
        let key = &spec.response_envelope_key;
        Some(match spec.name.as_str() {
            "queryAsyncJobResult" => Ok(self.query_job(key, p)),
            "listApis" => catalog::list_apis(key, p),
            "listCapabilities" => Ok(json!({ key: {"capability": catalog::capabilities()} })),
            "listEvents" => self
                .list_events(p)
                .and_then(|items| self.scoped_page(spec, p, items)),
            "listAlerts" => Ok(self.page(spec, p, self.list_alerts(p))),
            "listWebhooks" => self.list_webhooks(p).map(|items| self.page(spec, p, items)),
            "listWebhookDeliveries" => self
                .list_deliveries(p)
                .map(|items| self.page(spec, p, items)),
            name if spec.isasync || WRITES.contains(&name) => return None,
            _ => self.list(spec, p),
        })
    }

    /// Runs a command that may change the zone: a synchronous change, a webhook command or
    /// an async job.
    fn write(
        &mut self,
        spec: &apis::ApiSpec,
        p: &Params,
        faults: &Faults,
        now: jiff::Timestamp,
    ) -> Result<Value, (u16, String)> {
        let key = &spec.response_envelope_key;
        match spec.name.as_str() {
            "updateConfiguration" => self
                .update_configuration(key, p)
                .inspect(|_| self.changed_sync("CONFIGURATION.VALUE.EDIT", p, now)),
            "updateHost" => self
                .update_host(key, p)
                .inspect(|_| self.changed_sync("HOST.UPDATE", p, now)),
            "changeServiceForRouter" => self.change_service_for_router(key, p),
            "createWebhook" => self.create_webhook(key, p, now),
            "updateWebhook" => self.update_webhook(key, p, now),
            "deleteWebhook" => self.delete_webhook(key, p, now),
            "deleteWebhookDelivery" => self.delete_deliveries(key, p),
            "executeWebhookDelivery" => Err((
                530,
                "executeWebhookDelivery is sent by the HTTP front, not the zone".into(),
            )),
            name => self.start_job(name, key, p, faults, now),
        }
    }

    /// Records the event of a synchronous change that succeeded.
    fn changed_sync(&mut self, kind: &str, p: &Params, now: jiff::Timestamp) {
        let (text, resource) = match kind {
            "CONFIGURATION.VALUE.EDIT" => (
                format!(
                    "Successfully edited configuration value: {} = {}",
                    p.get("name").unwrap_or_default(),
                    p.get("value").unwrap_or_default()
                ),
                None,
            ),
            _ => {
                let r = self.resource(p.get("id").unwrap_or_default());
                let name = r.as_ref().map_or("", |r| r.name.as_str()).to_string();
                (format!("Successfully updated host: {name}"), r)
            }
        };
        let event = events::NewEvent::completed(kind, text, model::ADMIN_ACCOUNT).about(resource);
        self.record_event(event, now);
    }

    /// A page of items that belong to accounts, after the account scope (see `lists.rs`).
    fn scoped_page(
        &self,
        spec: &apis::ApiSpec,
        p: &Params,
        items: Vec<Value>,
    ) -> Result<Value, (u16, String)> {
        let acl = self.acl(p)?;
        let items = items.into_iter().filter(|i| acl.admits(i)).collect();
        Ok(self.page(spec, p, items))
    }

    fn query_job(&self, key: &str, p: &Params) -> Value {
        let id = p.get("jobid").unwrap_or_default();
        let job = self
            .jobs
            .iter()
            .find(|j| j.jobid == id)
            .expect("validated job id");
        json!({ key: self.job_json(job) })
    }
}

/// Leaves out fields whose value is empty text, as the server's serializer leaves out the
/// fields it has no value for (a stopped VM's `hostid`, a physical network without tags).
/// Settings keep theirs: an empty setting value is a value.
fn omit_empty(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| x.as_str() != Some(""));
            map.values_mut().for_each(omit_empty);
        }
        Value::Array(items) => items.iter_mut().for_each(omit_empty),
        _ => {}
    }
}

/// A command's parameters.
pub struct Params<'a> {
    map: &'a BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    /// Parameters over a map (for [`Zone::prepare_execute`] from the HTTP front).
    pub fn new(map: &'a BTreeMap<String, String>) -> Params<'a> {
        Params { map }
    }
}

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// Whether a boolean parameter is `true`.
    fn flag(&self, name: &str) -> bool {
        self.flag_is(name, true)
    }

    /// Whether a boolean parameter was given with this value.
    fn flag_is(&self, name: &str, value: bool) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case(if value { "true" } else { "false" }))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod seed_case_tests;

#[cfg(test)]
mod catalog_tests;

#[cfg(test)]
mod peer_api_tests;

#[cfg(test)]
mod events_tests;
