//! `service`: a systemd unit started, stopped, restarted or reloaded, through `systemctl`.
//!
//! Owns the probe (`systemctl is-active`), its interpretation, and the start/stop/restart/reload
//! commands with their undo. Not here: waiting until the daemon actually answers (a later
//! `verify` step with retries does that) and enabling units at boot.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_name, one_ssh, same_fields, sh, state_bool, state_str, summarize};
use super::{Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult};

/// Ensure a systemd service is started, stopped, restarted or reloaded.
///
/// YAML keys:
/// - `name` (required): the unit, e.g. `dnsmasq`, `keepalived`, `cloudstack-agent`.
/// - `state` (required): `started` | `stopped` | `restarted` | `reloaded`.
///   `restarted` always acts; `reloaded` starts an inactive service instead of reloading it.
///
/// ```yaml
/// - id: restart-dnsmasq
///   on: "{{ router }}"
///   service: { name: dnsmasq, state: restarted }
/// ```
///
/// Check: `systemctl is-active NAME`. Change: `systemctl start|stop|restart|reload NAME`.
/// Undo: a service that was inactive is stopped again; one that was active and was stopped is
/// started again; restarting or reloading an active service has nothing to undo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub state: ServiceState,
}

/// The wanted state of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

impl ServiceState {
    fn word(self) -> &'static str {
        match self {
            ServiceState::Started => "started",
            ServiceState::Stopped => "stopped",
            ServiceState::Restarted => "restarted",
            ServiceState::Reloaded => "reloaded",
        }
    }
}

impl ServiceSpec {
    pub fn build(self) -> Result<Service, ModuleError> {
        check_name(ModuleKind::Service, "name", &self.name)?;
        let check_cmd = sh(&["systemctl", "is-active", &self.name])?;
        Ok(Service {
            spec: self,
            check_cmd,
        })
    }
}

/// The built `service` module.
#[derive(Debug, Clone)]
pub struct Service {
    spec: ServiceSpec,
    check_cmd: String,
}

/// `systemctl is-active` words, with rc 0 (active) and rc 3 (not active).
const ACTIVE_WORDS: [&str; 3] = ["active", "reloading", "refreshing"];
const INACTIVE_WORDS: [&str; 6] = [
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "unknown",
    "maintenance",
];

impl Service {
    fn systemctl(&self, verb: &str) -> Result<Action, ModuleError> {
        Ok(Action::ssh(sh(&["systemctl", verb, &self.spec.name])?))
    }
}

impl Module for Service {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Service
    }

    fn describe(&self) -> String {
        format!("service {} {}", self.spec.name, self.spec.state.word())
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::ssh(self.check_cmd.clone())]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let out = one_ssh(results, &self.check_cmd)?;
        let word = out.stdout.trim();
        let active = match out.rc {
            Some(0) if ACTIVE_WORDS.contains(&word) => true,
            Some(3) if INACTIVE_WORDS.contains(&word) => false,
            _ => {
                return Err(ModuleError::UnexpectedOutput {
                    cmd: self.check_cmd.clone(),
                    detail: summarize(out),
                })
            }
        };
        Ok(json!({ "active": active, "status": word }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let active = state_bool(before, "active")?;
        let status = state_str(before, "status")?;
        let after = match (self.spec.state, active) {
            (ServiceState::Started, true) | (ServiceState::Stopped, false) => return Ok(None),
            (ServiceState::Stopped, true) => "inactive",
            (ServiceState::Restarted, true) => "restarted",
            (ServiceState::Reloaded, true) => "reloaded",
            (_, false) => "active",
        };
        Ok(Some(Diff::one("status", status, after)))
    }

    fn remaining(&self, after: &Value) -> Result<Option<Diff>, ModuleError> {
        // A restart or reload always acts: it took when the service runs afterwards.
        let active = state_bool(after, "active")?;
        let status = state_str(after, "status")?;
        let wanted_active = self.spec.state != ServiceState::Stopped;
        Ok((active != wanted_active).then(|| {
            Diff::one(
                "status",
                status,
                if wanted_active { "active" } else { "inactive" },
            )
        }))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let active = state_bool(before, "active")?;
        let verb = match (self.spec.state, active) {
            (ServiceState::Started, true) | (ServiceState::Stopped, false) => return Ok(vec![]),
            (ServiceState::Started, false) => "start",
            (ServiceState::Stopped, true) => "stop",
            (ServiceState::Restarted, _) => "restart",
            (ServiceState::Reloaded, true) => "reload",
            // reloading a stopped daemon fails under systemd; the wanted end state is "running"
            (ServiceState::Reloaded, false) => "start",
        };
        Ok(vec![self.systemctl(verb)?])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let active = state_bool(before, "active")?;
        match (self.spec.state, active) {
            (ServiceState::Stopped, true) => Ok(vec![self.systemctl("start")?]),
            (ServiceState::Stopped, false) => Ok(vec![]),
            // it was not running and now runs: stop it again
            (_, false) => Ok(vec![self.systemctl("stop")?]),
            // started (no change), restarted or reloaded while running: nothing to take back
            (_, true) => Ok(vec![]),
        }
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        same_fields(before, now, &["active"])
    }

    fn caveat(&self, before: &Value, now: &Value) -> Option<String> {
        let (was, is) = (before["status"].as_str()?, now["status"].as_str()?);
        (was != is && was == "failed").then(|| {
            format!(
                "{} was `failed` and is `{is}` now: stopped again, as it was not running, but \
                 systemd's failed state (and its reason) cannot be put back",
                self.spec.name
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil::{cmds, exit, killed, ok, words};

    fn svc(name: &str, state: ServiceState) -> Service {
        ServiceSpec {
            name: name.into(),
            state,
        }
        .build()
        .unwrap()
    }

    fn active() -> Value {
        json!({"active": true, "status": "active"})
    }

    fn inactive() -> Value {
        json!({"active": false, "status": "inactive"})
    }

    #[test]
    fn check_is_systemctl_is_active() {
        let m = svc("dnsmasq", ServiceState::Restarted);
        assert_eq!(cmds(&m.check()), ["systemctl is-active dnsmasq"]);
        assert_eq!(m.describe(), "service dnsmasq restarted");
    }

    #[test]
    fn an_undone_start_of_a_failed_unit_says_it_is_inactive_now() {
        let m = svc("dnsmasq", ServiceState::Started);
        let failed = json!({"active": false, "status": "failed"});
        assert!(m.restored(&failed, &inactive()));
        let caveat = m.caveat(&failed, &inactive()).expect("a caveat");
        assert!(
            caveat.starts_with("dnsmasq was `failed` and is `inactive` now"),
            "{caveat}"
        );
        assert_eq!(m.caveat(&inactive(), &inactive()), None);
        assert_eq!(m.caveat(&failed, &failed), None);
    }

    #[test]
    fn observe_reads_systemctl_words_and_exit_codes() {
        let m = svc("dnsmasq", ServiceState::Started);
        assert_eq!(m.observe(&[ok("active\n")]).unwrap(), active());
        assert_eq!(m.observe(&[exit(3, "inactive\n", "")]).unwrap(), inactive());
        assert_eq!(
            m.observe(&[exit(3, "failed\n", "")]).unwrap(),
            json!({"active": false, "status": "failed"})
        );
        assert_eq!(
            m.observe(&[exit(3, "activating\n", "")]).unwrap(),
            json!({"active": false, "status": "activating"})
        );
        assert_eq!(
            m.observe(&[ok("reloading\n")]).unwrap(),
            json!({"active": true, "status": "reloading"})
        );
    }

    #[test]
    fn observe_refuses_garbage_quoting_the_output() {
        let m = svc("dnsmasq", ServiceState::Started);
        let err = m
            .observe(&[exit(127, "", "bash: systemctl: command not found")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unexpected output from `systemctl is-active dnsmasq`: exit 127, stdout (empty), \
             stderr \"bash: systemctl: command not found\""
        );
        for bad in [
            ok("inactive"),
            exit(3, "active", ""),
            ok("banana"),
            ok(""),
            killed("KILL"),
        ] {
            assert!(
                matches!(
                    m.observe(std::slice::from_ref(&bad)),
                    Err(ModuleError::UnexpectedOutput { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            m.observe(&[]),
            Err(ModuleError::ResultCount {
                expected: 1,
                got: 0
            })
        ));
        assert!(m
            .observe(&[crate::modules::testutil::api(json!({}))])
            .is_err());
    }

    #[test]
    fn in_sync_states_have_no_diff_and_no_undo() {
        let m = svc("dnsmasq", ServiceState::Started);
        assert_eq!(m.diff(&active()).unwrap(), None);
        assert!(m.undo(&active()).unwrap().is_empty());
        let m = svc("dnsmasq", ServiceState::Stopped);
        assert_eq!(m.diff(&inactive()).unwrap(), None);
        assert_eq!(
            m.diff(&json!({"active": false, "status": "failed"}))
                .unwrap(),
            None
        );
        assert!(m.undo(&inactive()).unwrap().is_empty());
    }

    #[test]
    fn a_restart_took_when_the_service_runs_afterwards() {
        use ServiceState::*;
        let active = json!({"active": true, "status": "active"});
        let failed = json!({"active": false, "status": "failed"});
        for state in [Restarted, Reloaded, Started] {
            let m = svc("dnsmasq", state);
            assert_eq!(m.remaining(&active).unwrap(), None, "{state:?}");
            assert_eq!(
                m.remaining(&failed).unwrap().unwrap().to_string(),
                "status: failed -> active"
            );
        }
        let m = svc("dnsmasq", Stopped);
        assert_eq!(m.remaining(&failed).unwrap(), None);
        assert_eq!(
            m.remaining(&active).unwrap().unwrap().to_string(),
            "status: active -> inactive"
        );
    }

    #[test]
    fn diffs_changes_and_undos() {
        use ServiceState::*;
        let failed = json!({"active": false, "status": "failed"});
        // (wanted, before, diff, change, undo)
        type Case = (
            ServiceState,
            Value,
            &'static str,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                Started,
                failed.clone(),
                "status: failed -> active",
                vec!["systemctl start dnsmasq"],
                vec!["systemctl stop dnsmasq"],
            ),
            (
                Stopped,
                active(),
                "status: active -> inactive",
                vec!["systemctl stop dnsmasq"],
                vec!["systemctl start dnsmasq"],
            ),
            (
                Restarted,
                active(),
                "status: active -> restarted",
                vec!["systemctl restart dnsmasq"],
                vec![],
            ),
            (
                Restarted,
                inactive(),
                "status: inactive -> active",
                vec!["systemctl restart dnsmasq"],
                vec!["systemctl stop dnsmasq"],
            ),
            (
                Reloaded,
                active(),
                "status: active -> reloaded",
                vec!["systemctl reload dnsmasq"],
                vec![],
            ),
            (
                Reloaded,
                inactive(),
                "status: inactive -> active",
                vec!["systemctl start dnsmasq"],
                vec!["systemctl stop dnsmasq"],
            ),
        ];
        for (state, before, diff, change, undo) in cases {
            let m = svc("dnsmasq", state);
            assert_eq!(
                m.diff(&before).unwrap().unwrap().to_string(),
                diff,
                "{state:?}"
            );
            assert_eq!(cmds(&m.change(&before).unwrap()), change, "{state:?}");
            assert_eq!(cmds(&m.undo(&before).unwrap()), undo, "{state:?}");
        }
    }

    /// What the service's state is after running `cmds` on a service in state `active`.
    fn simulate(mut active: bool, actions: &[Action]) -> Value {
        for c in cmds(actions) {
            match words(&c)[1].as_str() {
                "start" | "restart" => active = true,
                "stop" => active = false,
                "reload" => assert!(active, "reload of a stopped service"),
                other => panic!("unexpected verb {other}"),
            }
        }
        json!({"active": active, "status": if active { "active" } else { "inactive" }})
    }

    #[test]
    fn change_then_undo_restores_the_pre_state() {
        use ServiceState::*;
        for state in [Started, Stopped, Restarted, Reloaded] {
            for before in [active(), inactive()] {
                let m = svc("dnsmasq", state);
                let was = state_bool(&before, "active").unwrap();
                let changed = simulate(was, &m.change(&before).unwrap());
                let wanted_active = state != Stopped;
                assert_eq!(
                    changed["active"],
                    json!(wanted_active),
                    "{state:?} {before}"
                );
                let now = simulate(
                    changed["active"].as_bool().unwrap(),
                    &m.undo(&before).unwrap(),
                );
                assert!(m.restored(&before, &now), "{state:?} {before} -> {now}");
            }
        }
        let m = svc("dnsmasq", Started);
        assert!(!m.restored(&inactive(), &active()));
    }

    #[test]
    fn hostile_names_stay_one_argument() {
        for name in ["x; rm -rf /", "$(reboot)", "a'b\"c", "`id`"] {
            let m = svc(name, ServiceState::Stopped);
            let check = cmds(&m.check()).remove(0);
            assert_eq!(words(&check), ["systemctl", "is-active", name]);
            let stop = cmds(&m.change(&active()).unwrap()).remove(0);
            assert_eq!(words(&stop), ["systemctl", "stop", name]);
            let start = cmds(&m.undo(&active()).unwrap()).remove(0);
            assert_eq!(words(&start), ["systemctl", "start", name]);
        }
        let bad = ServiceSpec {
            name: "--all".into(),
            state: ServiceState::Stopped,
        };
        assert!(bad.build().is_err());
        let nul = ServiceSpec {
            name: "a\0b".into(),
            state: ServiceState::Stopped,
        };
        assert!(matches!(nul.build(), Err(ModuleError::NulByte(_))));
    }

    #[test]
    fn broken_pre_state_is_an_error() {
        let m = svc("dnsmasq", ServiceState::Started);
        assert!(matches!(
            m.diff(&json!({})),
            Err(ModuleError::InvalidState(_))
        ));
        assert!(m.undo(&json!({"active": "yes"})).is_err());
    }
}
