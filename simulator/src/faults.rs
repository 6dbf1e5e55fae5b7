//! Faults the simulator can inject, per scenario (`faults:` in the scenario file) or at run
//! time ([`crate::server::Sim::set_faults`], or `/sim/faults` over HTTP: `PUT` replaces the
//! whole set, `PATCH` replaces only the fields its body names, `DELETE` clears them).
//!
//! One set covers the whole zone. It lives in the [`crate::zone::Zone`], under the zone's
//! lock, because the HTTP front and the SSH hosts ([`crate::ssh`]) share nothing else: a
//! fault set over HTTP reaches commands run over SSH.
//!
//! - **API transport faults** (latency, 5xx, dropped connections, slow replies) are applied by
//!   the HTTP front before or after a request reaches the zone.
//! - **Job faults** (failing and slow async jobs) are applied by the zone when it starts a job.
//! - **SSH faults** ([`Faults::ssh`], rules of [`SshFault`]) are applied by the SSH hosts to
//!   the command lines they are sent.
//! - **Agent faults** ([`Faults::agent_stays_down`]) keep named hypervisors down when their
//!   agent is restarted.
//! - **Webhook delivery faults** (`webhook_*`: dropped, delayed, badly signed, duplicated
//!   deliveries, a shorter timeout) are applied when the server's delivery task takes the
//!   queued deliveries ([`crate::zone::Zone::take_outgoing`]).
//!
//! "Next n" counters are deterministic, for tests, and count down as they fire (`GET
//! /sim/faults` shows what is left); rates are random, for soak runs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every field defaults to "no fault".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API reply, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0.0–1.0) that a request is answered with HTTP 503 before it reaches the zone.
    pub http_5xx_rate: f64,
    /// The next `n` requests are answered with HTTP 503 (counts down).
    pub http_5xx_next: u32,
    /// Probability (0.0–1.0) that the connection is closed after the request is read, with no
    /// reply and nothing done.
    pub drop_rate: f64,
    /// The next `n` requests have their connection closed with no reply (counts down).
    pub drop_next: u32,
    /// The next `n` mutating requests are carried out by the zone, then the connection is closed
    /// before the reply is sent: the client cannot know the change happened.
    pub drop_after_apply_next: u32,
    /// Async jobs of these commands (API names, e.g. `restartVPC`; `*` for all) fail with
    /// errorcode 530 and [`Faults::job_error_text`] when they complete.
    pub fail_jobs: Vec<String>,
    /// The errortext of a job failed by [`Faults::fail_jobs`].
    pub job_error_text: Option<String>,
    /// How long an async job runs before it completes, in milliseconds (default: the zone's own
    /// timing, see the zone module).
    pub job_ms: Option<u64>,
    /// Jobs of these commands (`*` for all) take this long instead, in milliseconds: for
    /// "slow job past a deadline" tests.
    pub slow_jobs: Vec<String>,
    pub slow_job_ms: u64,
    /// Calls of these commands (API names, `*` for all) are carried out by the zone at once,
    /// and their reply is then held [`Faults::slow_call_ms`]: a client stopped while it waits
    /// leaves the change made, as with a server that committed and is slow to answer. For
    /// "killed while a call runs" tests; [`Faults::slow_jobs`] slows the jobs themselves.
    pub slow_calls: Vec<String>,
    pub slow_call_ms: u64,
    /// The next call of each of these commands (API names) is refused with 530 and
    /// [`Faults::job_error_text`] before it reaches the zone, once each: for synchronous calls
    /// such as `updateConfiguration`, which [`Faults::fail_jobs`] cannot fail.
    pub fail_calls_next: Vec<String>,
    /// Rules for command lines sent to the SSH hosts, in order (see [`SshFault`]).
    pub ssh: Vec<SshFault>,
    /// Hypervisors (by name) whose restarted `cloudstack-agent` never connects: the host goes
    /// `Connecting`, then `Disconnected` again, and the service ends `failed`.
    pub agent_stays_down: Vec<String>,
    /// The next `n` webhook deliveries are never sent, and leave no delivery record (counts
    /// down): what a poller of `listEvents` must catch up with.
    pub webhook_drop_next: u32,
    /// Every webhook delivery waits this long before its first try, in milliseconds.
    pub webhook_delay_ms: u64,
    /// The next `n` webhook deliveries carry an `X-CS-Signature` made with a wrong key (one
    /// is added even when the webhook has no secret).
    pub webhook_bad_signature_next: u32,
    /// The next `n` webhook deliveries are sent twice, the same event id both times (a
    /// replay); both are recorded.
    pub webhook_duplicate_next: u32,
    /// Each try of a webhook delivery may take this long, in milliseconds, instead of
    /// `webhook.delivery.timeout` seconds: for fast tests of a receiver that hangs.
    pub webhook_timeout_ms: Option<u64>,
}

/// One SSH fault rule: what it matches, how many more times it fires, and what it does.
///
/// **Matching.** A command line is parsed as the SSH hosts' shell parses it (`;`, `&&`,
/// `||`, quoting); a rule matches a simple command whose words, joined by single spaces,
/// start with [`SshFault::command`] (a prefix, as `SshSim::fail_commands` always matched;
/// empty matches every command), on the machine named [`SshFault::host`] (a router or system
/// VM by its name, a hypervisor, the management server; absent: any machine). A line matches
/// when one of its simple commands does; a line the shell refuses (exit 2) matches none.
///
/// **Firing.** Each firing counts [`SshFault::next`] down; a rule at 0 is removed. A line gets
/// at most one of the line effects (`drop_before`, `drop_after`, `hang`): the first matching
/// rule with one, in list order. `fail` rules are looked up for each simple command as it is
/// reached, so a line can fail several of its commands, and a command the shell skips (after
/// `&&` a failure) uses up nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SshFaultText", into = "SshFaultText")]
pub struct SshFault {
    /// The prefix a simple command's words must start with.
    pub command: String,
    /// The machine the command must run on; `None`: any.
    pub host: Option<String>,
    /// How many more times the rule fires (`next:` in JSON and YAML, default 1).
    pub next: u32,
    pub effect: SshEffect,
}

/// What an [`SshFault`] does to the command line it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum SshEffect {
    /// The simple command is not run: it prints `stderr` and exits with `exit`; the rest of
    /// the line goes on as the shell would after such a command (`exit: 0` makes a command
    /// that reports success and does nothing).
    Fail { exit: u32, stderr: String },
    /// The line runs (its changes are made in the zone), then the connection is closed before
    /// the exit status is sent: the client loses the connection mid-command.
    DropAfter,
    /// The connection is closed when the line arrives; nothing runs.
    DropBefore,
    /// The line waits `ms` milliseconds before it starts, as a command that is slow to get
    /// going would. As with a real sshd, a client that closes the channel or loses the
    /// connection meanwhile does not stop it: it runs when the time is up, its output going
    /// nowhere. A signal the client sends on the channel (`signal` request) kills it: nothing
    /// runs and the exit is reported as that signal.
    Hang { ms: u64 },
}

/// The stderr of a `fail` rule that gives none.
pub const INJECTED_FAILURE: &str = "sim: injected failure";

/// The form of an [`SshFault`] in JSON and YAML.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshFaultText {
    command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default = "one")]
    next: u32,
    effect: EffectName,
    /// `fail` only: the exit status (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit: Option<u32>,
    /// `fail` only: what it prints on stderr (default [`INJECTED_FAILURE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stderr: Option<String>,
    /// `hang` only, and required there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hang_ms: Option<u64>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EffectName {
    Fail,
    DropAfter,
    DropBefore,
    Hang,
}

fn one() -> u32 {
    1
}

impl TryFrom<SshFaultText> for SshFault {
    type Error = String;

    fn try_from(t: SshFaultText) -> Result<SshFault, String> {
        let only = |given: bool, key: &str, effect: &str| {
            if given {
                Err(format!("{key} is only for the effect {effect}"))
            } else {
                Ok(())
            }
        };
        let fail = matches!(t.effect, EffectName::Fail);
        only(!fail && t.exit.is_some(), "exit", "fail")?;
        only(!fail && t.stderr.is_some(), "stderr", "fail")?;
        let hang = matches!(t.effect, EffectName::Hang);
        only(!hang && t.hang_ms.is_some(), "hang_ms", "hang")?;
        let effect = match t.effect {
            EffectName::Fail => SshEffect::Fail {
                exit: t.exit.unwrap_or(1),
                stderr: t.stderr.unwrap_or_else(|| INJECTED_FAILURE.to_string()),
            },
            EffectName::DropAfter => SshEffect::DropAfter,
            EffectName::DropBefore => SshEffect::DropBefore,
            EffectName::Hang => SshEffect::Hang {
                ms: t
                    .hang_ms
                    .ok_or("the effect hang needs hang_ms (milliseconds)")?,
            },
        };
        Ok(SshFault {
            command: t.command,
            host: t.host,
            next: t.next,
            effect,
        })
    }
}

impl From<SshFault> for SshFaultText {
    fn from(f: SshFault) -> SshFaultText {
        let mut text = SshFaultText {
            command: f.command,
            host: f.host,
            next: f.next,
            effect: EffectName::Fail,
            exit: None,
            stderr: None,
            hang_ms: None,
        };
        match f.effect {
            SshEffect::Fail { exit, stderr } => {
                text.exit = Some(exit);
                text.stderr = Some(stderr);
            }
            SshEffect::DropAfter => text.effect = EffectName::DropAfter,
            SshEffect::DropBefore => text.effect = EffectName::DropBefore,
            SshEffect::Hang { ms } => {
                text.effect = EffectName::Hang;
                text.hang_ms = Some(ms);
            }
        }
        text
    }
}

impl SshFault {
    /// A `fail` rule for the next command starting with `prefix`, on any machine: exit 1,
    /// [`INJECTED_FAILURE`] on stderr.
    pub fn fail_once(prefix: impl Into<String>) -> SshFault {
        SshFault {
            command: prefix.into(),
            host: None,
            next: 1,
            effect: SshEffect::Fail {
                exit: 1,
                stderr: INJECTED_FAILURE.to_string(),
            },
        }
    }

    /// Whether the rule applies to the simple command `command` (its words joined by single
    /// spaces) on `machine`.
    pub fn matches(&self, machine: &str, command: &str) -> bool {
        self.next > 0
            && self.host.as_deref().is_none_or(|h| h == machine)
            && command.starts_with(self.command.as_str())
    }

    fn is_line_effect(&self) -> bool {
        !matches!(self.effect, SshEffect::Fail { .. })
    }
}

impl Faults {
    /// Whether `command` matches a list of command names (`*` matches all), case-insensitively
    /// as CloudStack matches command names.
    pub fn matches(list: &[String], command: &str) -> bool {
        list.iter()
            .any(|c| c == "*" || c.eq_ignore_ascii_case(command))
    }

    /// The line effect for a command line on `machine` whose simple commands are `commands`
    /// (each one's words joined by single spaces), if a rule has one for it: the first such
    /// rule in order fires (counts down, and goes at 0).
    pub fn take_ssh_line_effect(
        &mut self,
        machine: &str,
        commands: &[String],
    ) -> Option<SshEffect> {
        self.take_ssh(|rule| {
            rule.is_line_effect() && commands.iter().any(|c| rule.matches(machine, c))
        })
    }

    /// The `fail` effect for the simple command `command` on `machine`, if a rule has one for
    /// it: the first such rule in order fires (counts down, and goes at 0).
    pub fn take_ssh_failure(&mut self, machine: &str, command: &str) -> Option<SshEffect> {
        self.take_ssh(|rule| !rule.is_line_effect() && rule.matches(machine, command))
    }

    fn take_ssh(&mut self, applies: impl Fn(&SshFault) -> bool) -> Option<SshEffect> {
        let i = self.ssh.iter().position(applies)?;
        let rule = &mut self.ssh[i];
        rule.next -= 1;
        let effect = rule.effect.clone();
        if rule.next == 0 {
            self.ssh.remove(i);
        }
        Some(effect)
    }

    /// Drops the SSH rules with nothing left to fire (`next: 0`): a count of 0 removes a rule.
    pub fn without_spent_rules(mut self) -> Faults {
        self.ssh.retain(|r| r.next > 0);
        self
    }

    /// This set with the fields of `patch` (a JSON object of [`Faults`] fields) replacing its
    /// own; fields not named keep their values. A list given replaces the list (the rules of
    /// `ssh` included); it is not appended to. `Err` says why the patch is not a fault setting
    /// (not an object, an unknown field, a value of the wrong type), and then nothing changes.
    pub fn patched(&self, patch: &Value) -> Result<Faults, String> {
        let Value::Object(fields) = patch else {
            return Err("a JSON object of fault settings is needed".into());
        };
        let mut merged = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let target = merged
            .as_object_mut()
            .expect("fault settings serialize as an object");
        for (key, value) in fields {
            target.insert(key.clone(), value.clone());
        }
        serde_json::from_value::<Faults>(merged)
            .map(Faults::without_spent_rules)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(value: Value) -> Result<SshFault, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn ssh_rules_read_with_their_defaults_and_write_them_out() {
        let fail = rule(json!({"command": "systemctl restart dnsmasq", "effect": "fail"})).unwrap();
        assert_eq!(fail, SshFault::fail_once("systemctl restart dnsmasq"));
        assert_eq!(
            serde_json::to_value(&fail).unwrap(),
            json!({"command": "systemctl restart dnsmasq", "next": 1, "effect": "fail",
                   "exit": 1, "stderr": "sim: injected failure"})
        );
        let hang = rule(json!({"command": "ip link", "host": "r-930-VM", "next": 3,
                               "effect": "hang", "hang_ms": 2500}))
        .unwrap();
        assert_eq!(
            hang,
            SshFault {
                command: "ip link".into(),
                host: Some("r-930-VM".into()),
                next: 3,
                effect: SshEffect::Hang { ms: 2500 },
            }
        );
        assert_eq!(
            serde_json::to_value(&hang).unwrap(),
            json!({"command": "ip link", "host": "r-930-VM", "next": 3, "effect": "hang",
                   "hang_ms": 2500})
        );
        for (effect, expected) in [
            ("drop_after", SshEffect::DropAfter),
            ("drop_before", SshEffect::DropBefore),
        ] {
            let r = rule(json!({"command": "x", "effect": effect})).unwrap();
            assert_eq!(r.effect, expected);
            assert_eq!(serde_json::to_value(&r).unwrap()["effect"], effect);
        }
    }

    #[test]
    fn ssh_rules_refuse_keys_of_another_effect_and_unknown_ones() {
        let error = |v: Value| rule(v).unwrap_err();
        assert_eq!(
            error(json!({"command": "x", "effect": "hang"})),
            "the effect hang needs hang_ms (milliseconds)"
        );
        assert_eq!(
            error(json!({"command": "x", "effect": "drop_after", "exit": 2})),
            "exit is only for the effect fail"
        );
        assert_eq!(
            error(json!({"command": "x", "effect": "hang", "hang_ms": 5, "stderr": "e"})),
            "stderr is only for the effect fail"
        );
        assert_eq!(
            error(json!({"command": "x", "effect": "fail", "hang_ms": 5})),
            "hang_ms is only for the effect hang"
        );
        assert!(error(json!({"command": "x", "effect": "fail", "nxt": 2})).contains("nxt"));
        assert!(error(json!({"command": "x", "effect": "explode"})).contains("explode"));
        assert!(error(json!({"effect": "fail"})).contains("command"));
    }

    #[test]
    fn ssh_rules_in_a_scenario_file() {
        let faults: Faults = serde_yaml::from_str(
            "ssh:\n  - { command: keepalived, host: r-931-VM, effect: drop_before, next: 2 }\n",
        )
        .unwrap();
        assert_eq!(
            faults.ssh,
            vec![SshFault {
                command: "keepalived".into(),
                host: Some("r-931-VM".into()),
                next: 2,
                effect: SshEffect::DropBefore,
            }]
        );
    }

    fn faults(rules: Vec<Value>) -> Faults {
        serde_json::from_value(json!({ "ssh": rules })).unwrap()
    }

    fn words(line: &[&str]) -> Vec<String> {
        line.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ssh_rules_match_by_prefix_and_host_and_count_down() {
        let mut f = faults(vec![
            json!({"command": "systemctl restart", "host": "r-930-VM", "next": 2, "effect": "drop_after"}),
            json!({"command": "systemctl", "effect": "fail", "exit": 4, "stderr": "no"}),
        ]);
        let line = words(&["true", "systemctl restart dnsmasq"]);
        assert_eq!(
            f.take_ssh_line_effect("r-931-VM", &line),
            None,
            "another host"
        );
        assert_eq!(
            f.take_ssh_line_effect("r-930-VM", &words(&["echo systemctl restart"])),
            None,
            "a prefix of the command's words, not a substring"
        );
        assert_eq!(
            f.take_ssh_line_effect("r-930-VM", &line),
            Some(SshEffect::DropAfter)
        );
        assert_eq!(f.ssh[0].next, 1, "counted down");
        assert_eq!(
            f.take_ssh_line_effect("r-930-VM", &line),
            Some(SshEffect::DropAfter)
        );
        assert_eq!(f.ssh.len(), 1, "spent, so removed");
        assert_eq!(f.take_ssh_line_effect("r-930-VM", &line), None);
        // fail rules are per simple command, on any host when none is named
        assert_eq!(f.take_ssh_failure("kvm01", "ip link"), None);
        assert_eq!(
            f.take_ssh_failure("kvm01", "systemctl is-active keepalived"),
            Some(SshEffect::Fail {
                exit: 4,
                stderr: "no".into()
            })
        );
        assert!(f.ssh.is_empty());
    }

    #[test]
    fn the_first_line_rule_in_order_wins_and_fail_rules_are_not_line_rules() {
        let mut f = faults(vec![
            json!({"command": "ip", "effect": "fail"}),
            json!({"command": "ip link", "effect": "hang", "hang_ms": 10}),
            json!({"command": "", "effect": "drop_before"}),
        ]);
        let line = words(&["ip link set eth1 up"]);
        assert_eq!(
            f.take_ssh_line_effect("kvm01", &line),
            Some(SshEffect::Hang { ms: 10 })
        );
        assert_eq!(
            f.take_ssh_line_effect("kvm01", &line),
            Some(SshEffect::DropBefore),
            "an empty prefix matches every command"
        );
        assert_eq!(f.ssh.len(), 1);
        assert!(matches!(f.ssh[0].effect, SshEffect::Fail { .. }));
    }

    #[test]
    fn a_patch_replaces_only_the_fields_it_names() {
        let base = Faults {
            latency_ms: 5,
            fail_jobs: vec!["restartVPC".into()],
            ssh: vec![SshFault::fail_once("a"), SshFault::fail_once("b")],
            ..Faults::default()
        };
        let patched = base
            .patched(&json!({"http_5xx_next": 2, "ssh": [
                {"command": "c", "effect": "drop_before"},
                {"command": "d", "effect": "fail", "next": 0},
            ]}))
            .unwrap();
        assert_eq!(
            patched,
            Faults {
                http_5xx_next: 2,
                ssh: vec![SshFault {
                    command: "c".into(),
                    host: None,
                    next: 1,
                    effect: SshEffect::DropBefore,
                }],
                ..base.clone()
            },
            "the list replaced, a rule with next 0 removed, the rest kept"
        );
        assert_eq!(base.patched(&json!({})).unwrap(), base);
        assert!(base
            .patched(&json!({"latency": 1}))
            .unwrap_err()
            .contains("unknown field `latency`"));
        assert!(base
            .patched(&json!({"latency_ms": "soon"}))
            .unwrap_err()
            .contains("invalid type"));
        assert_eq!(
            base.patched(&json!([1])).unwrap_err(),
            "a JSON object of fault settings is needed"
        );
    }

    #[test]
    fn the_documented_example_is_a_fault_setting() {
        let doc = include_str!("../../docs/cloudstack.md");
        let start = doc
            .find("```json\n{\"ssh\"")
            .expect("the example in docs/cloudstack.md");
        let block = &doc[start + "```json\n".len()..];
        let block = &block[..block.find("```").unwrap()];
        let faults: Faults = serde_json::from_str(block).unwrap();
        let effects: Vec<SshEffect> = faults.ssh.into_iter().map(|r| r.effect).collect();
        assert_eq!(
            effects,
            vec![
                SshEffect::Fail {
                    exit: 1,
                    stderr: "Job for dnsmasq.service failed".into()
                },
                SshEffect::DropAfter,
                SshEffect::DropBefore,
                SshEffect::Hang { ms: 30_000 },
            ]
        );
    }
}
