//! Async jobs: starting them (with the transitional states objects show meanwhile), finishing
//! them when their time comes, and the job records `queryAsyncJobResult`/`listAsyncJobs`
//! return.
//!
//! Timing: a job ends `duration` after it started, where duration is the fault settings'
//! `slow_job_ms` for commands in `slow_jobs`, else their `job_ms`, else the scenario's
//! `job_ms`, else [`super::DEFAULT_JOB_MS`]. A reboot shows `Stopping` for the first half and
//! `Starting` for the second. A recreated SSVM/CPVM comes up (Running, agent Up) one more
//! duration after its destroy job ended.
//!
//! Failures: `fail_jobs` faults fail a job with 530 when it ends, putting back what it showed
//! meanwhile. A job whose object is in the wrong state, or busy with another job, fails with
//! 530 without doing anything (CloudStack checks these in the job, not when it queues it).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::events::NewEvent;
use super::guest::ServiceState;
use super::model::{id_for, VmKind, ADMIN_ACCOUNT, KEEPALIVED_CONF};
use super::{vlan, Params, Zone};
use crate::faults::Faults;

/// What a job does to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Reboot,
    Destroy,
}

/// What a job does when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub(super) enum Effect {
    UpdatePhysNet {
        id: String,
        vlan: Option<String>,
        state: Option<String>,
    },
    Router {
        id: String,
        action: Action,
    },
    /// restartVPC (every tier) or restartNetwork (one tier).
    Restart {
        vpcid: String,
        networks: Vec<String>,
        cleanup: bool,
        makeredundant: bool,
    },
    SystemVm {
        id: String,
        action: Action,
    },
    /// Nothing: the job ends as it started (a no-op start of a running VM, or a failure
    /// decided when it was queued).
    Nothing {
        result: Value,
    },
    /// prepareHostForMaintenance; `before` is the resource state it had.
    Maintain {
        host: String,
        #[serde(default)]
        before: String,
    },
    CancelMaintenance {
        host: String,
    },
    /// migrateVirtualMachine to an explicit host.
    Migrate {
        vm: String,
        host: String,
    },
    RemoveNic {
        vm: String,
        nic: String,
    },
    /// updateNetworkServiceProvider (see `providers.rs`).
    UpdateProvider {
        id: String,
        state: Option<String>,
        services: Option<String>,
    },
    /// configureVirtualRouterElement / configureInternalLoadBalancerElement.
    ConfigureElement {
        id: String,
        internal_lb: bool,
        enabled: bool,
    },
}

/// The physical network's database id, which the server's VLAN refusals name.
const PHYSNET_DB_ID: u32 = 200;

/// Job status, as `jobstatus` shows it.
pub(super) const PENDING: u8 = 0;
const SUCCEEDED: u8 = 1;
pub(super) const FAILED: u8 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Job {
    pub jobid: String,
    /// The API name, e.g. `rebootRouter`.
    pub command: String,
    /// The Java command class, for `cmd`.
    pub cmd: String,
    pub instancetype: String,
    pub instanceid: String,
    pub created: jiff::Timestamp,
    pub due: jiff::Timestamp,
    /// The plain duration (not slowed by faults), for follow-up transitions.
    pub boot_ms: u64,
    pub status: u8,
    pub resultcode: u16,
    pub result: Value,
    /// Set when the job is to fail: (errorcode, errortext).
    pub failure: Option<(u16, String)>,
    /// Whether the failure comes from the fault settings (the job ran, showed transitional
    /// states, and must put them back).
    pub injected: bool,
    pub effect: Effect,
    /// The id of the job's Started event (its Completed event names it as parent).
    #[serde(default)]
    pub started_event: Option<String>,
}

/// A state change due later that is not a job's end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Timer {
    pub due: jiff::Timestamp,
    pub change: Change,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(super) enum Change {
    /// Halfway through a reboot: `Stopping` becomes `Starting`, if the job still runs.
    Rebooting { vm: String, job: String },
    /// A recreated system VM finishes booting.
    Booted { vm: String },
    /// A hypervisor's restarted agent is seen connecting.
    AgentConnecting { host: String },
    /// A hypervisor's restarted agent has connected (or, under the `agent_stays_down` fault,
    /// given up).
    AgentConnected { host: String },
}

/// The Java class of an async command, for `cmd` in job records.
pub(super) fn class_of(command: &str) -> String {
    let fixed = match command {
        "prepareHostForMaintenance" => Some("admin.host.PrepareForMaintenanceCmd"),
        "cancelHostMaintenance" => Some("admin.host.CancelMaintenanceCmd"),
        "migrateVirtualMachine" => Some("admin.vm.MigrateVMCmd"),
        "removeNicFromVirtualMachine" => Some("user.vm.RemoveNicFromVMCmd"),
        "configureInternalLoadBalancerElement" => {
            Some("admin.internallb.ConfigureInternalLoadBalancerElementCmd")
        }
        "destroyVirtualMachine" => Some("user.vm.DestroyVMCmd"),
        "stopVirtualMachine" => Some("user.vm.StopVMCmd"),
        _ => None,
    };
    if let Some(class) = fixed {
        return format!("org.apache.cloudstack.api.command.{class}");
    }
    let package = match command {
        "updatePhysicalNetwork" | "updateNetworkServiceProvider" => "admin.network",
        "configureVirtualRouterElement" => "admin.router",
        "rebootRouter" | "stopRouter" | "startRouter" => "admin.router",
        "restartVPC" => "user.vpc",
        "restartNetwork" => "user.network",
        _ => "admin.systemvm",
    };
    let mut class = command.to_string();
    class[..1].make_ascii_uppercase();
    format!("org.apache.cloudstack.api.command.{package}.{class}Cmd")
}

/// A job's event type and what its description says it does, as the command's
/// `getEventType`/`getEventDescription` put it; `proxy`: the VM acted on is the CPVM.
fn event_of(job: &Job, proxy: bool) -> (String, &'static str) {
    let (kind, what) = match job.command.as_str() {
        "rebootRouter" => ("ROUTER.REBOOT", "rebooting router"),
        "stopRouter" => ("ROUTER.STOP", "stopping router"),
        "startRouter" => ("ROUTER.START", "starting router"),
        "restartVPC" => ("VPC.RESTART", "restarting VPC"),
        "restartNetwork" => ("NETWORK.RESTART", "restarting network"),
        "updatePhysicalNetwork" => ("PHYSICAL.NETWORK.UPDATE", "updating physical network"),
        "prepareHostForMaintenance" => ("MAINT.PREPARE", "preparing host for maintenance"),
        "cancelHostMaintenance" => ("MAINT.CANCEL", "canceling maintenance for host"),
        "migrateVirtualMachine" => ("VM.MIGRATE", "migrating VM"),
        "removeNicFromVirtualMachine" => ("NIC.DELETE", "removing NIC from VM"),
        "destroySystemVm" => ("DESTROY", "destroying system VM"),
        "rebootSystemVm" => ("REBOOT", "rebooting system VM"),
        "startSystemVm" => ("START", "starting system VM"),
        "stopSystemVm" => ("STOP", "stopping system VM"),
        _ => ("JOB", "running job"),
    };
    if kind.contains('.') {
        return (kind.to_string(), what);
    }
    let prefix = if proxy { "PROXY" } else { "SSVM" };
    (format!("{prefix}.{kind}"), what)
}

fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

fn ms(n: u64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_millis(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Zone {
    /// The pending job acting on an object, if any.
    pub(super) fn pending_job_on(&self, id: &str) -> Option<&Job> {
        self.jobs
            .iter()
            .find(|j| j.status == PENDING && j.instanceid == id)
    }

    /// Queues an async command; the reply is `{"<cmd>response": {"jobid": ...}}`.
    pub(super) fn start_job(
        &mut self,
        command: &str,
        envelope: &str,
        p: &Params,
        faults: &Faults,
        now: jiff::Timestamp,
    ) -> Result<Value, (u16, String)> {
        let id = p
            .get("id")
            .or_else(|| p.get("virtualmachineid"))
            .unwrap_or_default()
            .to_string();
        let (effect, instancetype) = self.plan(command, &id, p)?;
        self.seq += 1;
        let jobid = id_for("job", &self.seq.to_string());
        let boot_ms = faults.job_ms.unwrap_or(self.world.job_ms);
        let duration = if Faults::matches(&faults.slow_jobs, command) {
            faults.slow_job_ms
        } else {
            boot_ms
        };
        // CloudStack runs one job at a time per VM
        let on_vm = matches!(
            effect,
            Effect::Router { .. }
                | Effect::SystemVm { .. }
                | Effect::Migrate { .. }
                | Effect::RemoveNic { .. }
                | Effect::Maintain { .. }
        );
        let busy = self
            .pending_job_on(&id)
            .filter(|_| on_vm)
            .map(|j| j.jobid.clone());
        let mut failure = busy.map(|other| {
            (
                530,
                format!(
                    "Unable to {command}: another operation (job {other}) is in progress on {id}"
                ),
            )
        });
        if failure.is_none() {
            failure = self.precondition(&effect).err();
        }
        let effect = if failure.is_none() {
            self.noop(effect)
        } else {
            effect
        };
        let injected = failure.is_none() && Faults::matches(&faults.fail_jobs, command);
        if injected {
            let text = faults.job_error_text.clone().unwrap_or_else(|| {
                format!("Failed to {command}: the simulated zone was told to fail this job")
            });
            failure = Some((530, text));
        }
        let due = now + ms(duration);
        let mut effect = effect;
        if failure.is_none() || injected {
            self.show_transition(&mut effect, &jobid, now, due);
        }
        self.jobs.push(Job {
            jobid: jobid.clone(),
            command: command.to_string(),
            cmd: class_of(command),
            instancetype: instancetype.to_string(),
            instanceid: id,
            created: now,
            due,
            boot_ms,
            status: PENDING,
            resultcode: 0,
            result: Value::Null,
            failure,
            injected,
            effect,
            started_event: None,
        });
        self.job_started(now);
        Ok(json!({ envelope: {"jobid": jobid} }))
    }

    /// What a command will do, checking what CloudStack checks before it queues the job.
    fn plan(
        &self,
        command: &str,
        id: &str,
        p: &Params,
    ) -> Result<(Effect, &'static str), (u16, String)> {
        let action = |verb: &str| match verb {
            "start" => Action::Start,
            "stop" => Action::Stop,
            "reboot" => Action::Reboot,
            _ => Action::Destroy,
        };
        Ok(match command {
            // every check runs inside the job, as on the real server: a refusal is a failed job
            "updatePhysicalNetwork" => {
                let effect = Effect::UpdatePhysNet {
                    id: id.to_string(),
                    vlan: p.get("vlan").map(str::to_string),
                    state: p.get("state").map(str::to_string),
                };
                (effect, "PhysicalNetwork")
            }
            "rebootRouter" | "stopRouter" | "startRouter" => {
                let verb = command.trim_end_matches("Router");
                let effect = Effect::Router {
                    id: id.to_string(),
                    action: action(verb),
                };
                (effect, "DomainRouter")
            }
            "restartVPC" => {
                let networks = self
                    .world
                    .networks
                    .iter()
                    .filter(|n| n.vpcid == id)
                    .map(|n| n.id.clone())
                    .collect();
                let effect = Effect::Restart {
                    vpcid: id.to_string(),
                    networks,
                    cleanup: p.flag("cleanup"),
                    makeredundant: p.flag("makeredundant"),
                };
                (effect, "Vpc")
            }
            "restartNetwork" => {
                let vpcid = self
                    .world
                    .networks
                    .iter()
                    .find(|n| n.id == id)
                    .map(|n| n.vpcid.clone())
                    .unwrap_or_default();
                let effect = Effect::Restart {
                    vpcid,
                    networks: vec![id.to_string()],
                    cleanup: p.flag("cleanup"),
                    makeredundant: p.flag("makeredundant"),
                };
                (effect, "Network")
            }
            "prepareHostForMaintenance" => (
                Effect::Maintain {
                    host: id.to_string(),
                    before: String::new(),
                },
                "Host",
            ),
            "cancelHostMaintenance" => (
                Effect::CancelMaintenance {
                    host: id.to_string(),
                },
                "Host",
            ),
            "migrateVirtualMachine" => (
                Effect::Migrate {
                    vm: id.to_string(),
                    host: p.get("hostid").unwrap_or_default().to_string(),
                },
                "VirtualMachine",
            ),
            "removeNicFromVirtualMachine" => (
                Effect::RemoveNic {
                    vm: id.to_string(),
                    nic: p.get("nicid").unwrap_or_default().to_string(),
                },
                "VirtualMachine",
            ),
            // no instance type: the server records none for these jobs
            "updateNetworkServiceProvider" => (
                Effect::UpdateProvider {
                    id: id.to_string(),
                    state: p.get("state").map(str::to_string),
                    services: p.get("servicelist").map(str::to_string),
                },
                "",
            ),
            "configureVirtualRouterElement" | "configureInternalLoadBalancerElement" => (
                Effect::ConfigureElement {
                    id: id.to_string(),
                    internal_lb: command == "configureInternalLoadBalancerElement",
                    enabled: p.flag("enabled"),
                },
                "",
            ),
            _ => {
                let verb = command.trim_end_matches("SystemVm");
                let effect = Effect::SystemVm {
                    id: id.to_string(),
                    action: action(verb),
                };
                (effect, "SystemVm")
            }
        })
    }

    /// What updatePhysicalNetwork checks when its job runs (NetworkServiceImpl's order: the
    /// state name, then the VLAN ranges and whether a removed one holds an allocated VLAN);
    /// the error fails the job with 431.
    fn physnet_check(&self, vlan: Option<&str>, state: Option<&str>) -> Result<(), (u16, String)> {
        if let Some(s) = state.filter(|s| !s.is_empty()) {
            if s != "Enabled" && s != "Disabled" {
                return Err((
                    431,
                    format!("Unable to resolve state '{s}' to a supported value {{Enabled or Disabled}}"),
                ));
            }
        }
        if let Some(v) = vlan {
            let wanted = vlan::parse(v).map_err(|e| (431, e))?;
            self.check_vlans_kept(&wanted)?;
        }
        Ok(())
    }

    /// Refuses a VLAN set that removes a range holding an allocated VLAN (431). Like the
    /// server, it looks at each run of consecutive VLANs being removed and names the first
    /// run that holds one, with the physical network's database id.
    fn check_vlans_kept(&self, wanted: &[vlan::Span]) -> Result<(), (u16, String)> {
        let have = self.world.guest_vlans();
        if wanted.is_empty() {
            let allocated = self
                .world
                .networks
                .iter()
                .filter(|n| n.vlan.is_some_and(|t| vlan::covers(&have, t)))
                .count();
            if allocated > 0 {
                return Err((
                    431,
                    format!("physicalnetwork {PHYSNET_DB_ID} has {allocated} vnets in use"),
                ));
            }
        }
        let removed = vlan::minus(&have, wanted);
        for (start, end) in removed {
            let in_use = self
                .world
                .networks
                .iter()
                .any(|n| n.vlan.is_some_and(|t| t >= start && t <= end));
            if in_use {
                return Err((
                    431,
                    format!(
                        "physicalnetwork {PHYSNET_DB_ID} has allocated vnets in the range {start}-{end}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether the object is in a state the job can act on; the error fails the job (530).
    /// A start of something running succeeds doing nothing.
    fn precondition(&self, effect: &Effect) -> Result<(), (u16, String)> {
        let (id, action, what) = match effect {
            Effect::Router { id, action } => (id, *action, "router"),
            Effect::SystemVm { id, action } => (id, *action, "system vm"),
            Effect::UpdatePhysNet { vlan, state, .. } => {
                return self.physnet_check(vlan.as_deref(), state.as_deref())
            }
            Effect::Maintain { host, .. } => return self.maintain_check(host),
            Effect::CancelMaintenance { host } => return self.cancel_check(host),
            Effect::Migrate { vm, host } => return self.migrate_check(vm, host),
            Effect::RemoveNic { vm, nic } => return self.remove_nic_check(vm, nic),
            Effect::UpdateProvider {
                id,
                state,
                services,
            } => return self.provider_check(id, state.as_deref(), services.as_deref()),
            _ => return Ok(()),
        };
        let vm = self.world.vm(id).expect("validated id");
        let state = vm.state.as_str();
        let ok = match action {
            Action::Start => state == "Running" || state == "Stopped",
            Action::Stop => state == "Running" || state == "Stopped",
            Action::Reboot => state == "Running",
            Action::Destroy => state != "Destroyed",
        };
        if ok {
            return Ok(());
        }
        Err((
            530,
            format!(
                "Unable to {} the {what} {}: it is not in the right state ({state})",
                format!("{action:?}").to_lowercase(),
                vm.name
            ),
        ))
    }

    /// A start of a running VM, or a stop of a stopped one, succeeds doing nothing.
    fn noop(&self, effect: Effect) -> Effect {
        let (Effect::Router { id, action } | Effect::SystemVm { id, action }) = &effect else {
            return effect;
        };
        let vm = self.world.vm(id).expect("validated id");
        match (action, vm.state.as_str()) {
            (Action::Start, "Running") | (Action::Stop, "Stopped") => {
                let result = if vm.vpcid().is_some() {
                    json!({"router": self.router_json(vm)})
                } else {
                    json!({"systemvm": self.systemvm_json(vm)})
                };
                Effect::Nothing { result }
            }
            _ => effect,
        }
    }

    /// The states an object shows while its job runs.
    fn show_transition(
        &mut self,
        effect: &mut Effect,
        jobid: &str,
        now: jiff::Timestamp,
        due: jiff::Timestamp,
    ) {
        let (id, action, is_router) = match effect {
            Effect::Router { id, action } => (id.clone(), *action, true),
            Effect::SystemVm { id, action } => (id.clone(), *action, false),
            Effect::Maintain { host, before } => {
                *before = self.maintain_start(host);
                return;
            }
            Effect::Migrate { vm, .. } => {
                let vm = vm.clone();
                self.set_vm_state(&vm, "Migrating");
                return;
            }
            _ => return,
        };
        let Some(vm) = self.world.vm_mut(&id) else {
            return;
        };
        match (action, vm.state.as_str()) {
            (Action::Start, "Stopped") => vm.state = "Starting".into(),
            (Action::Stop, "Running") | (Action::Reboot, _) | (Action::Destroy, _) => {
                vm.state = "Stopping".into();
                if is_router {
                    // the other router of the pair takes over while this one goes down
                    vm.guest.set_link("eth1", false);
                    vm.guest.set_service("dnsmasq", ServiceState::Inactive);
                } else {
                    vm.guest.set_service("cloud", ServiceState::Inactive);
                }
            }
            _ => return,
        }
        if let Some(vpcid) = vm.vpcid().map(str::to_string) {
            self.world.elect(&vpcid);
        }
        if action == Action::Reboot {
            let half = jiff::SignedDuration::from_nanos(
                i64::try_from((due.as_nanosecond() - now.as_nanosecond()) / 2).unwrap_or(0),
            );
            self.timers.push(Timer {
                due: now + half,
                change: Change::Rebooting {
                    vm: id,
                    job: jobid.to_string(),
                },
            });
        }
    }

    /// Applies a due timer.
    pub(super) fn fire(&mut self, timer: Timer) {
        match timer.change {
            Change::Rebooting { vm, job } => {
                let running = self
                    .jobs
                    .iter()
                    .any(|j| j.jobid == job && j.status == PENDING);
                if let Some(v) = self.world.vm_mut(&vm).filter(|_| running) {
                    v.state = "Starting".into();
                }
            }
            Change::AgentConnecting { host } => self.agent_connecting(&host),
            Change::AgentConnected { host } => self.agent_connected(&host),
            Change::Booted { vm } => {
                let sites = self
                    .world
                    .setting("secstorage.allowed.internal.sites")
                    .to_string();
                if let Some(v) = self.world.vm_mut(&vm).filter(|v| v.state == "Starting") {
                    boot_system_vm(v, &sites);
                }
            }
        }
    }

    /// Whether `id` is the console proxy VM (its jobs' events are `PROXY.*`, not `SSVM.*`).
    fn is_proxy(&self, id: &str) -> bool {
        self.world
            .vm(id)
            .is_some_and(|v| v.systemvmtype() == Some("consoleproxy"))
    }

    /// Records the Started event of the job just queued (the last one).
    fn job_started(&mut self, now: jiff::Timestamp) {
        let Some(job) = self.jobs.last() else { return };
        let (kind, what) = event_of(job, self.is_proxy(&job.instanceid));
        let resource = self.resource(&job.instanceid);
        let name = resource
            .as_ref()
            .map_or(job.instanceid.clone(), |r| r.name.clone());
        let event = NewEvent {
            kind: kind.clone(),
            level: "INFO",
            state: "Started",
            description: format!("{what}: {name}"),
            account: self.owner(resource.as_ref()).to_string(),
            username: ADMIN_ACCOUNT,
            resource,
            parentid: None,
        };
        let id = self.record_event(event, now);
        if let Some(job) = self.jobs.last_mut() {
            job.started_event = Some(id);
        }
    }

    /// Records the Completed event of job `i`, which just ended: INFO, or ERROR with the
    /// job's error text.
    fn job_completed(&mut self, i: usize) {
        let job = &self.jobs[i];
        let (kind, what) = event_of(job, self.is_proxy(&job.instanceid));
        let resource = self.resource(&job.instanceid);
        let name = resource
            .as_ref()
            .map_or(job.instanceid.clone(), |r| r.name.clone());
        let (level, description) = if job.status == FAILED {
            let text = job.result["errortext"].as_str().unwrap_or_default();
            ("ERROR", format!("Error while {what}: {name}. {text}"))
        } else {
            ("INFO", format!("Successfully completed {what}: {name}"))
        };
        let event = NewEvent {
            kind,
            level,
            state: "Completed",
            description,
            account: self.owner(resource.as_ref()).to_string(),
            username: ADMIN_ACCOUNT,
            resource,
            parentid: job.started_event.clone(),
        };
        let due = job.due;
        self.record_event(event, due);
    }

    /// Ends job `i`: applies its effect, or fails it.
    pub(super) fn finish(&mut self, i: usize) {
        let job = self.jobs[i].clone();
        let outcome = match &job.failure {
            Some(failure) => {
                if job.injected {
                    self.revert(&job.effect);
                }
                Err(failure.clone())
            }
            None => self.apply(&job),
        };
        let j = &mut self.jobs[i];
        match outcome {
            Ok(result) => {
                j.status = SUCCEEDED;
                j.resultcode = 0;
                j.result = result;
            }
            Err((code, text)) => {
                j.status = FAILED;
                j.resultcode = code;
                j.result = json!({
                    "uuidList": [], "errorcode": code,
                    "cserrorcode": super::cserrorcode(code), "errortext": text,
                });
            }
        }
        self.job_completed(i);
    }

    /// Puts back what a failed job showed while it ran (a router that went down stays
    /// BACKUP: its partner took over meanwhile).
    fn revert(&mut self, effect: &Effect) {
        match effect {
            Effect::Maintain { host, before } => return self.set_resourcestate(host, before),
            Effect::Migrate { vm, .. } => return self.set_vm_state(vm, "Running"),
            _ => {}
        }
        let (Effect::Router { id, action } | Effect::SystemVm { id, action }) = effect else {
            return;
        };
        let Some(vm) = self.world.vm_mut(id) else {
            return;
        };
        match action {
            Action::Start if vm.state == "Starting" => vm.state = "Stopped".into(),
            Action::Start => {}
            _ => {
                vm.state = "Running".into();
                if vm.systemvmtype().is_some() {
                    vm.guest.set_service("cloud", ServiceState::Active);
                }
            }
        }
        if let Some(vpcid) = vm.vpcid().map(str::to_string) {
            self.world.elect(&vpcid);
        }
    }

    fn apply(&mut self, job: &Job) -> Result<Value, (u16, String)> {
        match &job.effect {
            Effect::Nothing { result } => Ok(result.clone()),
            Effect::UpdatePhysNet { id, vlan: v, state } => {
                self.physnet_check(v.as_deref(), state.as_deref())?;
                if let Some(v) = v {
                    let spans = vlan::parse(v).map_err(|e| (431, e))?;
                    self.world.physnets[0].vlan = vlan::format(&spans);
                }
                if let Some(s) = state {
                    self.world.physnets[0].state = s.clone();
                }
                Ok(json!({"physicalnetwork": self.physnet_json(id)}))
            }
            Effect::Router { id, action } => {
                self.router_done(id, *action);
                let vm = self.world.vm(id).expect("router exists");
                Ok(json!({"router": self.router_json(vm)}))
            }
            Effect::SystemVm { id, action } => self.system_vm_done(id, *action, job),
            Effect::Maintain { host, .. } => self.maintain_done(host),
            Effect::CancelMaintenance { host } => self.cancel_done(host),
            Effect::Migrate { vm, host } => self.migrate_done(vm, host),
            Effect::RemoveNic { vm, nic } => self.remove_nic_done(vm, nic),
            Effect::UpdateProvider {
                id,
                state,
                services,
            } => self.provider_update(id, state.as_deref(), services.as_deref()),
            Effect::ConfigureElement {
                id,
                internal_lb,
                enabled,
            } => {
                let kind = if *internal_lb {
                    super::providers::Element::InternalLb
                } else {
                    super::providers::Element::VirtualRouter
                };
                self.element_configure(kind, id, *enabled)
            }
            Effect::Restart {
                vpcid,
                networks,
                cleanup,
                makeredundant,
            } => {
                self.restart(vpcid, networks, *cleanup, *makeredundant)?;
                Ok(json!({"success": true}))
            }
        }
    }

    fn router_done(&mut self, id: &str, action: Action) {
        let vm = self.world.vm_mut(id).expect("router exists");
        match action {
            Action::Stop | Action::Destroy => power_off(vm),
            Action::Start | Action::Reboot => {
                vm.state = "Running".into();
                for (name, link) in vm.guest.links.iter_mut() {
                    link.up = name != "eth1";
                }
                vm.guest.set_service("dnsmasq", ServiceState::Inactive);
                vm.guest.set_service("ssh", ServiceState::Active);
                let configured = vm.guest.has_file(KEEPALIVED_CONF);
                let k = if configured {
                    ServiceState::Active
                } else {
                    ServiceState::Inactive
                };
                vm.guest.set_service("keepalived", k);
                vm.guest.set_service("conntrackd", k);
            }
        }
        let vpcid = vm.vpcid().unwrap_or_default().to_string();
        // A starting router gets its configuration pushed again (for the implemented tiers).
        if matches!(action, Action::Start | Action::Reboot) {
            self.world.configure_router(&vpcid, id);
        }
        self.world.elect(&vpcid);
    }

    fn system_vm_done(
        &mut self,
        id: &str,
        action: Action,
        job: &Job,
    ) -> Result<Value, (u16, String)> {
        let sites = self
            .world
            .setting("secstorage.allowed.internal.sites")
            .to_string();
        let vm = self.world.vm_mut(id).expect("system vm exists");
        match action {
            Action::Stop => power_off(vm),
            Action::Start | Action::Reboot => boot_system_vm(vm, &sites),
            Action::Destroy => {
                power_off(vm);
                vm.state = "Destroyed".into();
                let (systemvmtype, hostid) = (
                    vm.systemvmtype().unwrap_or_default().to_string(),
                    vm.hostid.clone(),
                );
                let old = vm.clone();
                // CloudStack notices the missing system VM and deploys a replacement.
                let fresh = self
                    .world
                    .new_system_vm(&systemvmtype, hostid, &sites, "Starting");
                self.timers.push(Timer {
                    due: job.due + ms(job.boot_ms),
                    change: Change::Booted {
                        vm: fresh.id.clone(),
                    },
                });
                self.world.vms.push(fresh);
                return Ok(json!({"systemvm": self.systemvm_json(&old)}));
            }
        }
        let vm = self.world.vm(id).expect("system vm exists");
        Ok(json!({"systemvm": self.systemvm_json(vm)}))
    }

    /// restartVPC / restartNetwork: implement the tiers (allocate VLANs, or fail with 533
    /// changing nothing), replace the routers on `cleanup`, deploy missing ones, start stopped
    /// ones, configure them all.
    fn restart(
        &mut self,
        vpcid: &str,
        networks: &[String],
        cleanup: bool,
        makeredundant: bool,
    ) -> Result<(), (u16, String)> {
        self.world.allocate_vlans(networks).map_err(|e| (533, e))?;
        let w = &mut self.world;
        let vpc = w
            .vpcs
            .iter_mut()
            .find(|v| v.id == vpcid)
            .expect("vpc exists");
        vpc.redundant |= makeredundant;
        vpc.restartrequired = false;
        let wanted = if vpc.redundant { 2 } else { 1 };
        let publicip = w
            .routers_of(vpcid)
            .first()
            .map(|r| r.publicip.clone())
            .unwrap_or_else(|| "198.51.100.99".into());
        let mut hosts: Vec<String> = Vec::new();
        if cleanup {
            let old: Vec<String> = w.routers_of(vpcid).iter().map(|r| r.id.clone()).collect();
            for id in old {
                let vm = w.vm_mut(&id).expect("router exists");
                hosts.push(vm.hostid.clone());
                power_off(vm);
                vm.state = "Destroyed".into();
                w.unplug(&id);
            }
        }
        for id in w
            .routers_of(vpcid)
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
        {
            let vm = w.vm_mut(&id).expect("router exists");
            if vm.state == "Stopped" {
                vm.state = "Running".into();
                vm.guest.set_service("ssh", ServiceState::Active);
                for link in vm.guest.links.values_mut() {
                    link.up = true;
                }
                vm.guest.set_link("eth1", false);
            }
        }
        let mut i = 0;
        while w.routers_of(vpcid).len() < wanted {
            let used: Vec<String> = w
                .routers_of(vpcid)
                .iter()
                .map(|r| r.hostid.clone())
                .collect();
            let hostid = hosts
                .get(i)
                .cloned()
                .or_else(|| {
                    w.hosts
                        .iter()
                        .map(|h| h.id.clone())
                        .find(|h| !used.contains(h))
                })
                .unwrap_or_else(|| w.hosts[0].id.clone());
            w.add_router(vpcid, hostid, &publicip);
            i += 1;
        }
        w.configure_routers(vpcid);
        Ok(())
    }

    /// A job record as `queryAsyncJobResult` and `listAsyncJobs` show it.
    pub(super) fn job_json(&self, j: &Job) -> Value {
        // a job without an instance type names no instance (omit_empty drops both)
        let instanceid = if j.instancetype.is_empty() {
            ""
        } else {
            j.instanceid.as_str()
        };
        let mut item = json!({
            "jobid": j.jobid, "cmd": j.cmd, "jobstatus": j.status, "jobprocstatus": 0,
            "jobresultcode": j.resultcode, "jobinstancetype": j.instancetype,
            "jobinstanceid": instanceid, "accountid": id_for("account", ADMIN_ACCOUNT),
            "userid": id_for("user", ADMIN_ACCOUNT), "account": ADMIN_ACCOUNT,
            "domainid": self.world.domain_id, "created": ts(j.created),
        });
        if j.status != PENDING {
            item["jobresulttype"] = json!("object");
            item["jobresult"] = j.result.clone();
            item["completed"] = json!(ts(j.due));
        }
        item
    }
}

/// A VM goes off: Stopped, links down, services inactive.
fn power_off(vm: &mut super::model::Vm) {
    vm.state = "Stopped".into();
    for link in vm.guest.links.values_mut() {
        link.up = false;
    }
    for svc in vm.guest.services.values_mut() {
        svc.state = ServiceState::Inactive;
    }
}

/// A system VM finishes booting: Running, links up, agent active, and the current
/// `secstorage.allowed.internal.sites` pushed to it.
fn boot_system_vm(vm: &mut super::model::Vm, sites: &str) {
    vm.state = "Running".into();
    for link in vm.guest.links.values_mut() {
        link.up = true;
    }
    vm.guest.set_service("cloud", ServiceState::Active);
    vm.guest.set_service("ssh", ServiceState::Active);
    if let VmKind::SystemVm { allowed_sites, .. } = &mut vm.kind {
        *allowed_sites = sites.to_string();
    }
}
