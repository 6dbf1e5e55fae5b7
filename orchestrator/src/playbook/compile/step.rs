//! One step: exactly one kind (ssh, api, wait, assert, set, report (its keys in `report.rs`) or
//! a module, whose static arguments are checked now), whether it changes things, how its change is undone (`rollback`,
//! `irreversible`, `no_rollback`, a module's own undo), and its options (`on`, `when`,
//! `retries`/`until`, `serial`, ...), each checked where it is written.
//!
//! Not here: its place in the section (`sections.rs`), the variables it reads (`checks.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::program::{Kind, Phase, Setting, Step, Undo};
use super::{module_args, yaml_text, Compiler};
use crate::error::Diagnostic;
use crate::modules::{ModuleKind, ModuleSpec};
use crate::playbook::model::{Count, DurOrTemplate, RollbackDoc, StepDoc};
use crate::source::Source;
use crate::template::{Expr, Mode};
use crate::transport::{Access, ApiCall};

impl Compiler<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        src: &Source,
        path: &str,
        local: &str,
        doc: &StepDoc,
        scope: usize,
        phase: Phase,
        deps: Vec<usize>,
        gates: &[Expr],
    ) -> Option<usize> {
        let p = |k: &str| format!("{path}.{k}");
        let mut kinds: Vec<&str> = Vec::new();
        if doc.ssh.is_some() {
            kinds.push("ssh");
        }
        if doc.api.is_some() {
            kinds.push("api");
        }
        if doc.wait.is_some() {
            kinds.push("wait");
        }
        if doc.assert.is_some() {
            kinds.push("assert");
        }
        if doc.set.is_some() {
            kinds.push("set");
        }
        if doc.report.is_some() {
            kinds.push("report");
        }
        let module_values: Vec<(ModuleKind, &serde_yaml::Value)> = [
            (ModuleKind::Service, &doc.service),
            (ModuleKind::File, &doc.file),
            (ModuleKind::Link, &doc.link),
            (ModuleKind::Route, &doc.route),
            (ModuleKind::OvsPort, &doc.ovs_port),
            (ModuleKind::OvsFlow, &doc.ovs_flow),
            (ModuleKind::CsSetting, &doc.cs_setting),
            (ModuleKind::VlanRange, &doc.vlan_range),
            (ModuleKind::VmHost, &doc.vm_host),
            (ModuleKind::HostMaintenance, &doc.host_maintenance),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        kinds.extend(module_values.iter().map(|(k, _)| k.key()));
        if kinds.len() != 1 {
            let msg = if kinds.is_empty() {
                format!("step {local} does nothing: give one of ssh, api, wait, assert, set, report, include or a module")
            } else {
                format!(
                    "step {local} has several kinds ({}); give exactly one",
                    kinds.join(", ")
                )
            };
            self.diags.push(Diagnostic::at(src, &p("id"), msg));
            return None;
        }
        if doc.params.is_some() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("params"),
                "`params` belongs to an include step",
            ));
        }

        let loc = src.loc(&p("id"));
        let (kind, access) = if let Some(cmd) = &doc.ssh {
            let cmd_t = self.tpl(src, &p("ssh"), cmd, Mode::Shell)?;
            let check = match &doc.check {
                Some(c) => Some(self.tpl(src, &p("check"), c, Mode::Shell)?),
                None => None,
            };
            let access = if doc.changes.is_some() {
                Access::ReadOnly
            } else {
                Access::Mutating
            };
            (Kind::Ssh { cmd: cmd_t, check }, access)
        } else if let Some(api) = &doc.api {
            let mut args = Vec::new();
            for (k, v) in &api.args {
                args.push((
                    k.clone(),
                    self.tpl(src, &p(&format!("api.args.{k}")), &yaml_text(v), Mode::Text)?,
                ));
            }
            let call = ApiCall {
                command: api.command.clone(),
                args: BTreeMap::new(),
            };
            if !api
                .command
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase())
            {
                self.diags.push(
                    Diagnostic::at(
                        src,
                        &p("api.command"),
                        format!("invalid API command {:?}", api.command),
                    )
                    .with_help("CloudStack commands look like listRouters, rebootRouter"),
                );
            }
            (
                Kind::Api {
                    command: api.command.clone(),
                    args,
                },
                call.access(),
            )
        } else if let Some(w) = doc.wait {
            (Kind::Wait(w.0), Access::ReadOnly)
        } else if let Some(a) = &doc.assert {
            let mut that = Vec::new();
            for (k, e) in a.that.0.iter().enumerate() {
                let at = if a.that.0.len() == 1 {
                    p("assert.that")
                } else {
                    p(&format!("assert.that.{k}"))
                };
                that.push(self.expr(src, &at, e)?);
            }
            let msg = match &a.msg {
                Some(m) => Some(self.tpl(src, &p("assert.msg"), m, Mode::Text)?),
                None => None,
            };
            (Kind::Assert { that, msg }, Access::ReadOnly)
        } else if let Some(set) = &doc.set {
            let mut facts = Vec::new();
            for (k, v) in set {
                facts.push((
                    k.clone(),
                    self.tpl(src, &p(&format!("set.{k}")), &yaml_text(v), Mode::Text)?,
                ));
            }
            (Kind::Set(facts), Access::ReadOnly)
        } else if let Some(r) = &doc.report {
            (
                self.report_kind(src, path, local, doc, r)?,
                Access::ReadOnly,
            )
        } else {
            let (mk, value) = module_values[0];
            let at = p(mk.key());
            let spec = match ModuleSpec::from_json(mk, module_args(value)).and_then(|s| s.to_json())
            {
                Ok(j) => j,
                Err(e) => {
                    self.diags.push(
                        Diagnostic::at(src, &at, format!("{}: {e}", mk.key()))
                            .with_label("invalid module arguments"),
                    );
                    return None;
                }
            };
            let mut tpls = Vec::new();
            if let serde_json::Value::Object(map) = &spec {
                for (k, v) in map {
                    if let serde_json::Value::String(s) = v {
                        let t = self.tpl(src, &format!("{at}.{k}"), s, Mode::Text)?;
                        tpls.push((format!("/{k}"), t));
                    }
                }
            }
            // Without templates the arguments are final: check them now, not mid-run.
            if tpls.iter().all(|(_, t)| t.is_static) {
                if let Err(e) = ModuleSpec::from_json(mk, spec.clone()).and_then(|s| s.build()) {
                    self.diags.push(
                        Diagnostic::at(src, &at, format!("{}: {e}", mk.key()))
                            .with_label("invalid module arguments"),
                    );
                    return None;
                }
            }
            (
                Kind::Module {
                    kind: mk,
                    spec,
                    tpls,
                },
                Access::Mutating,
            )
        };

        // How is it undone?
        let mut undo_keys = Vec::new();
        if doc.rollback.is_some() {
            undo_keys.push("rollback");
        }
        if doc.irreversible.is_some() {
            undo_keys.push("irreversible");
        }
        if doc.no_rollback.is_some() {
            undo_keys.push("no_rollback");
        }
        if undo_keys.len() > 1 {
            self.diags.push(Diagnostic::at_key(
                src,
                &p(undo_keys[1]),
                format!(
                    "step {local}: {} exclude each other",
                    undo_keys.join(" and ")
                ),
            ));
        }
        let undo = if access == Access::ReadOnly {
            if let Some(k) = undo_keys.first() {
                self.diags.push(Diagnostic::at_key(
                    src,
                    &p(k),
                    format!("step {local} is read-only; `{k}` has no meaning here"),
                ));
            }
            Undo::ReadOnly
        } else if let Some(why) = &doc.irreversible {
            Undo::Irreversible(why.clone())
        } else if let Some(why) = &doc.no_rollback {
            Undo::NotNeeded(why.clone())
        } else if let Some(rb) = &doc.rollback {
            if matches!(kind, Kind::Module { .. }) {
                self.diags.push(Diagnostic::at_key(src, &p("rollback"), format!("step {local}: a module undoes itself from the captured state; remove `rollback`")));
            }
            match rb {
                RollbackDoc::Ssh(c) => Undo::Ssh(self.tpl(src, &p("rollback"), c, Mode::Shell)?),
                RollbackDoc::Api(a) => {
                    let mut args = Vec::new();
                    for (k, v) in &a.args {
                        args.push((
                            k.clone(),
                            self.tpl(
                                src,
                                &p(&format!("rollback.api.args.{k}")),
                                &yaml_text(v),
                                Mode::Text,
                            )?,
                        ));
                    }
                    Undo::Api {
                        command: a.command.clone(),
                        args,
                    }
                }
            }
        } else if matches!(kind, Kind::Module { .. }) {
            Undo::Auto
        } else {
            let what = match &kind {
                Kind::Api { command, .. } => format!("calls {command}, which changes the cloud"),
                _ => "runs a command that may change the host".to_string(),
            };
            self.diags.push(
                Diagnostic::at(src, &p("id"), format!("step {local} {what} but declares neither how it is undone nor why it needs no undo"))
                    .with_label("mutating step without undo")
                    .with_help("add `rollback: <command>`, `no_rollback: <why no undo is needed>`, `irreversible: <why>`, or `changes: none` if it only reads"),
            );
            return None;
        };
        if doc.changes.is_some() && doc.ssh.is_none() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("changes"),
                "`changes: none` applies to ssh steps; other kinds are classified by what they do",
            ));
        }
        if doc.check.is_some() && doc.ssh.is_none() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("check"),
                "`check` applies to ssh steps; modules have their own check",
            ));
        }
        if matches!(phase, Phase::Detect | Phase::Verify) && access == Access::Mutating {
            let sec = if phase == Phase::Detect {
                "detect"
            } else {
                "verify"
            };
            self.diags.push(
                Diagnostic::at(
                    src,
                    &p("id"),
                    format!(
                        "step {local} in `{sec}` changes things; {sec} steps must be read-only"
                    ),
                )
                .with_help(
                    "mark a read-only command with `changes: none`, or move the step to `steps`",
                ),
            );
        }

        let on = match &doc.on {
            Some(o) => Some(self.tpl(src, &p("on"), o, Mode::Text)?),
            None => {
                let needs_target = matches!(kind, Kind::Ssh { .. })
                    || matches!(&kind, Kind::Module { kind, .. } if !kind.runs_on_api());
                if needs_target {
                    self.diags.push(
                        Diagnostic::at(
                            src,
                            &p("id"),
                            format!("step {local} runs on hosts but has no `on:`"),
                        )
                        .with_help("add `on: <host, group or pattern>`"),
                    );
                    return None;
                }
                None
            }
        };
        let mut when = gates.to_vec();
        if let Some(w) = &doc.when {
            when.push(self.expr(src, &p("when"), w)?);
        }
        let until = match &doc.until {
            Some(u) => Some(self.expr(src, &p("until"), u)?),
            None => None,
        };
        let changed_when = match &doc.changed_when {
            Some(u) => Some(self.expr(src, &p("changed_when"), u)?),
            None => None,
        };
        let failed_when = match &doc.failed_when {
            Some(u) => Some(self.expr(src, &p("failed_when"), u)?),
            None => None,
        };
        if access == Access::Mutating && (doc.retries.is_some() || doc.until.is_some()) {
            self.diags.push(
                Diagnostic::at_key(src, &p(if doc.until.is_some() { "until" } else { "retries" }), format!("step {local} changes things; `retries`/`until` apply to read-only steps"))
                    .with_help("poll the outcome with a separate read-only step (changes: none) that has retries and until"),
            );
        }
        if until.is_some() && doc.retries.is_none() {
            self.diags.push(Diagnostic::at_key(
                src,
                &p("until"),
                format!("step {local}: `until` needs `retries` (how many attempts)"),
            ));
        }
        let retries = match &doc.retries {
            None => Setting::Value(0),
            Some(Count::Value(n)) => Setting::Value(*n),
            Some(Count::Template(t)) => {
                Setting::Template(self.tpl(src, &p("retries"), t, Mode::Text)?)
            }
        };
        let delay = match &doc.delay {
            None => Setting::Value(Duration::from_secs(1)),
            Some(DurOrTemplate::Value(d)) => Setting::Value(d.0),
            Some(DurOrTemplate::Template(t)) => {
                Setting::Template(self.tpl(src, &p("delay"), t, Mode::Text)?)
            }
        };
        let register = doc.register.clone().unwrap_or_else(|| local.to_string());
        if let Some(max) = doc.max_fail_percentage {
            if max > 100 {
                self.diags.push(Diagnostic::at(
                    src,
                    &p("max_fail_percentage"),
                    "max_fail_percentage is a percentage (0-100)",
                ));
            }
        }
        if doc.serial == Some(0) {
            self.diags.push(Diagnostic::at(
                src,
                &p("serial"),
                "serial must be at least 1",
            ));
        }
        let step = Step {
            id: format!("{}{local}", self.scopes[scope].prefix),
            name: doc.name.clone().unwrap_or_else(|| local.to_string()),
            phase,
            scope,
            on,
            needs: deps,
            when,
            register,
            retries,
            delay,
            until,
            timeout: doc.timeout.map(|d| d.0),
            ignore_errors: doc.ignore_errors,
            changed_when,
            failed_when,
            undo,
            tags: doc.tags.clone(),
            serial: doc.serial.map(|s| s as usize),
            max_fail_percentage: doc.max_fail_percentage,
            refresh_inventory: doc.refresh_inventory,
            consumes: Vec::new(),
            kind,
            access,
            loc,
            host_vars: BTreeSet::new(),
            reads: BTreeMap::new(),
        };
        self.steps.push(step);
        self.step_paths.push((src.clone(), path.to_string()));
        Some(self.steps.len() - 1)
    }
}
