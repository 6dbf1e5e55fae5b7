//! Structured modules: remediation actions that know their own check, diff, change and undo.
//!
//! A step may name a module (`service:`, `file:`, `link:`, `ovs_port:`, `ovs_flow:`,
//! `cs_setting:`, `vlan_range:`, `vm_host:`, `host_maintenance:`) instead of a raw `ssh:` command or `api:` call. A module is pure
//! data and never does I/O: it hands the runner [`Action`]s, the runner carries them through a
//! transport and feeds the results back. The protocol, for one step on one target:
//!
//! 1. [`Module::check`]: read-only probe actions; the runner runs them (also in a dry-run);
//! 2. [`Module::observe`]: their results become the observed pre-state, a JSON object that the
//!    runner records (audit log, saved plan) — "rollback is data, not code";
//! 3. [`Module::diff`]: what would change, or `None` when the target is already as wanted;
//! 4. [`Module::change`]: the mutating actions (only when the diff is `Some`);
//! 5. [`Module::undo`]: the actions that restore the recorded pre-state, computed from it alone, so
//!    a later process (`remedy rollback RUN`) can undo from the audit log;
//! 6. [`Module::restored`]: after an undo and a fresh check/observe, whether the pre-state is back.
//!
//! Every shell command is built here from quoted words ([`shlex::try_quote`]); values come from
//! operators' templates and may be hostile (`x; rm -rf /`, `$(reboot)`): they always stay one inert
//! argument, and a value with a NUL byte is refused. Names that a command would read as an option
//! (leading `-`) are refused by `build()`.
//!
//! Specs are the typed YAML of each module ([`ModuleSpec`], one struct per module, every one
//! `deny_unknown_fields`). Their string fields may hold minijinja templates: the caller renders
//! every string leaf first ([`ModuleSpec::to_json`], render, [`ModuleSpec::from_json`]) and only
//! then calls [`ModuleSpec::build`], which validates the rendered values.
//!
//! Not here: running actions, timeouts, retries and async-job polling (transport and runner),
//! templating (`crate::template`), recording state (audit), and which host a step runs on.

pub mod cloudstack;
pub mod file;
pub mod host_maintenance;
pub mod link;
pub mod ovs;
pub mod route;
pub mod service;
pub mod vm_host;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::transport::{Action, ActionResult, CmdOutput};

pub use cloudstack::{
    covers, format_spans, merge_spans, parse_spans, uncovered, CsSetting, CsSettingSpec,
    SettingScope, VlanRange, VlanRangeSpec, VlanSpan, MAX_VNET_ID,
};
pub use file::{File, FileSpec};
pub use host_maintenance::{HostMaintenance, HostMaintenanceSpec, MaintenanceState};
pub use link::{Link, LinkSpec, LinkState};
pub use ovs::{OvsFlow, OvsFlowSpec, OvsPort, OvsPortSpec, Presence};
pub use route::{Route, RouteSpec, RouteState};
pub use service::{Service, ServiceSpec, ServiceState};
pub use vm_host::{VmHost, VmHostSpec};

/// What a change would do: one entry per field it alters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub changes: Vec<Change>,
}

/// One field a change alters, with its observed and its wanted value, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    pub before: String,
    pub after: String,
}

impl Change {
    pub fn new(
        field: impl Into<String>,
        before: impl Into<String>,
        after: impl Into<String>,
    ) -> Self {
        Change {
            field: field.into(),
            before: before.into(),
            after: after.into(),
        }
    }
}

impl Diff {
    /// A diff of a single field.
    pub fn one(
        field: impl Into<String>,
        before: impl Into<String>,
        after: impl Into<String>,
    ) -> Self {
        Diff {
            changes: vec![Change::new(field, before, after)],
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.before, self.after)
    }
}

impl fmt::Display for Diff {
    /// One line per change, `field: before -> after`, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, change) in self.changes.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{change}")?;
        }
        Ok(())
    }
}

/// Why a module could not be built, could not read its probe, or cannot compute an action.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The (rendered) spec is invalid.
    #[error("invalid {kind} spec: {message}")]
    InvalidSpec { kind: ModuleKind, message: String },
    /// A shell argument held a NUL byte, which no quoting can carry.
    #[error("cannot pass a value containing a NUL byte to the shell: {0}")]
    NulByte(String),
    /// A probe command ran but printed something the module cannot interpret.
    #[error("unexpected output from `{cmd}`: {detail}")]
    UnexpectedOutput { cmd: String, detail: String },
    /// An API probe returned a reply the module cannot interpret.
    #[error("unexpected reply from {command}: {detail}")]
    UnexpectedReply { command: String, detail: String },
    /// observe() received a different number of results than check() asked for.
    #[error("expected {expected} probe result(s), got {got}")]
    ResultCount { expected: usize, got: usize },
    #[error("path {0} does not exist")]
    PathNotFound(String),
    #[error("link {0} does not exist")]
    LinkNotFound(String),
    #[error("bridge {0} does not exist")]
    BridgeNotFound(String),
    #[error("physical network {0} not found")]
    PhysicalNetworkNotFound(String),
    #[error("unknown setting {0}")]
    UnknownSetting(String),
    /// A recorded pre-state lacks a field or has the wrong type (e.g. a hand-edited plan).
    #[error("invalid observed state: {0}")]
    InvalidState(String),
    /// The wanted state is impossible on this target (e.g. a VLAN beyond the isolation limit).
    #[error("{0}")]
    Refused(String),
}

/// A structured module, built from its spec. Pure: every method is a function of the spec and
/// its arguments.
pub trait Module: Send + Sync + fmt::Debug {
    fn kind(&self) -> ModuleKind;
    /// A one-line human summary, e.g. "service dnsmasq restarted", "link eth1 up".
    fn describe(&self) -> String;
    /// The read-only probe(s). Usually one action.
    fn check(&self) -> Vec<Action>;
    /// Turn the probe results (same order as check()) into the observed state (a JSON object).
    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError>;
    /// What the change would do to `before`; None = already as wanted (no change, nothing runs).
    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError>;
    /// What is still left to change in `after`, the state observed once the change ran (`None`:
    /// the change took). By default what [`Module::diff`] says; a module whose change always
    /// acts (a restart) says instead whether the end state is the wanted one.
    fn remaining(&self, after: &Value) -> Result<Option<Diff>, ModuleError> {
        self.diff(after)
    }
    /// The mutating actions that bring `before` to the wanted state (only called when diff is Some).
    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError>;
    /// The mutating actions that restore `before` after change() ran. Empty vec = nothing to undo
    /// (e.g. restarting a service that was running). Must be computable from `before` alone.
    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError>;
    /// Whether an observed state counts as restored after undo: equality with `before` on the
    /// fields the module manages. Used to verify a rollback.
    fn restored(&self, before: &Value, now: &Value) -> bool;
    /// After a restored undo: what of `before` an undo cannot put back exactly, in words (a
    /// `failed` unit comes back `inactive`). `None`: restored exactly. Reported with the undo.
    fn caveat(&self, _before: &Value, _now: &Value) -> Option<String> {
        None
    }
}

/// The kinds of structured module; `key()` is the YAML key of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    Service,
    File,
    Link,
    Route,
    OvsPort,
    OvsFlow,
    CsSetting,
    VlanRange,
    VmHost,
    HostMaintenance,
}

impl ModuleKind {
    pub const ALL: [ModuleKind; 10] = [
        ModuleKind::Service,
        ModuleKind::File,
        ModuleKind::Link,
        ModuleKind::Route,
        ModuleKind::OvsPort,
        ModuleKind::OvsFlow,
        ModuleKind::CsSetting,
        ModuleKind::VlanRange,
        ModuleKind::VmHost,
        ModuleKind::HostMaintenance,
    ];

    /// The YAML key that introduces this module in a step.
    pub fn key(self) -> &'static str {
        match self {
            ModuleKind::Service => "service",
            ModuleKind::File => "file",
            ModuleKind::Link => "link",
            ModuleKind::Route => "route",
            ModuleKind::OvsPort => "ovs_port",
            ModuleKind::OvsFlow => "ovs_flow",
            ModuleKind::CsSetting => "cs_setting",
            ModuleKind::VlanRange => "vlan_range",
            ModuleKind::VmHost => "vm_host",
            ModuleKind::HostMaintenance => "host_maintenance",
        }
    }

    /// The kind whose YAML key is `key`.
    pub fn from_key(key: &str) -> Option<ModuleKind> {
        ModuleKind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// Whether the module talks to the CloudStack API (the inventory's controller) rather than
    /// running commands on the step's host.
    pub fn runs_on_api(self) -> bool {
        matches!(
            self,
            ModuleKind::CsSetting
                | ModuleKind::VlanRange
                | ModuleKind::VmHost
                | ModuleKind::HostMaintenance
        )
    }
}

impl fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The spec of any module, externally tagged by its YAML key: `{"service": {...}}` in JSON,
/// `service: {...}` in YAML. A playbook step model with one `Option<XxxSpec>` field per key
/// builds the matching variant directly; to deserialize a `ModuleSpec` itself from YAML, use
/// `serde_yaml::with::singleton_map` (serde_yaml 0.9 otherwise expects a `!service` tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleSpec {
    Service(ServiceSpec),
    File(FileSpec),
    Link(LinkSpec),
    Route(RouteSpec),
    OvsPort(OvsPortSpec),
    OvsFlow(OvsFlowSpec),
    CsSetting(CsSettingSpec),
    VlanRange(VlanRangeSpec),
    VmHost(VmHostSpec),
    HostMaintenance(HostMaintenanceSpec),
}

impl ModuleSpec {
    pub fn kind(&self) -> ModuleKind {
        match self {
            ModuleSpec::Service(_) => ModuleKind::Service,
            ModuleSpec::File(_) => ModuleKind::File,
            ModuleSpec::Link(_) => ModuleKind::Link,
            ModuleSpec::Route(_) => ModuleKind::Route,
            ModuleSpec::OvsPort(_) => ModuleKind::OvsPort,
            ModuleSpec::OvsFlow(_) => ModuleKind::OvsFlow,
            ModuleSpec::CsSetting(_) => ModuleKind::CsSetting,
            ModuleSpec::VlanRange(_) => ModuleKind::VlanRange,
            ModuleSpec::VmHost(_) => ModuleKind::VmHost,
            ModuleSpec::HostMaintenance(_) => ModuleKind::HostMaintenance,
        }
    }

    /// Validate the (rendered) spec and build its module.
    pub fn build(self) -> Result<Box<dyn Module>, ModuleError> {
        Ok(match self {
            ModuleSpec::Service(s) => Box::new(s.build()?),
            ModuleSpec::File(s) => Box::new(s.build()?),
            ModuleSpec::Link(s) => Box::new(s.build()?),
            ModuleSpec::Route(s) => Box::new(s.build()?),
            ModuleSpec::OvsPort(s) => Box::new(s.build()?),
            ModuleSpec::OvsFlow(s) => Box::new(s.build()?),
            ModuleSpec::CsSetting(s) => Box::new(s.build()?),
            ModuleSpec::VlanRange(s) => Box::new(s.build()?),
            ModuleSpec::VmHost(s) => Box::new(s.build()?),
            ModuleSpec::HostMaintenance(s) => Box::new(s.build()?),
        })
    }

    /// The spec's own fields as a JSON object (without the kind tag), for rendering templates.
    pub fn to_json(&self) -> Result<Value, ModuleError> {
        let value = match self {
            ModuleSpec::Service(s) => serde_json::to_value(s),
            ModuleSpec::File(s) => serde_json::to_value(s),
            ModuleSpec::Link(s) => serde_json::to_value(s),
            ModuleSpec::Route(s) => serde_json::to_value(s),
            ModuleSpec::OvsPort(s) => serde_json::to_value(s),
            ModuleSpec::OvsFlow(s) => serde_json::to_value(s),
            ModuleSpec::CsSetting(s) => serde_json::to_value(s),
            ModuleSpec::VlanRange(s) => serde_json::to_value(s),
            ModuleSpec::VmHost(s) => serde_json::to_value(s),
            ModuleSpec::HostMaintenance(s) => serde_json::to_value(s),
        };
        value.map_err(|e| self.kind().invalid(e.to_string()))
    }

    /// The spec of `kind` from its fields as a JSON object (the inverse of [`Self::to_json`]).
    pub fn from_json(kind: ModuleKind, value: Value) -> Result<ModuleSpec, ModuleError> {
        fn de<T: serde::de::DeserializeOwned>(
            kind: ModuleKind,
            v: Value,
        ) -> Result<T, ModuleError> {
            serde_json::from_value(v).map_err(|e| kind.invalid(e.to_string()))
        }
        Ok(match kind {
            ModuleKind::Service => ModuleSpec::Service(de(kind, value)?),
            ModuleKind::File => ModuleSpec::File(de(kind, value)?),
            ModuleKind::Link => ModuleSpec::Link(de(kind, value)?),
            ModuleKind::Route => ModuleSpec::Route(de(kind, value)?),
            ModuleKind::OvsPort => ModuleSpec::OvsPort(de(kind, value)?),
            ModuleKind::OvsFlow => ModuleSpec::OvsFlow(de(kind, value)?),
            ModuleKind::CsSetting => ModuleSpec::CsSetting(de(kind, value)?),
            ModuleKind::VlanRange => ModuleSpec::VlanRange(de(kind, value)?),
            ModuleKind::VmHost => ModuleSpec::VmHost(de(kind, value)?),
            ModuleKind::HostMaintenance => ModuleSpec::HostMaintenance(de(kind, value)?),
        })
    }
}

impl ModuleKind {
    pub(crate) fn invalid(self, message: impl Into<String>) -> ModuleError {
        ModuleError::InvalidSpec {
            kind: self,
            message: message.into(),
        }
    }
}

// ---- shared helpers for the module files ----

/// A shell command line from `argv`, every word quoted for a POSIX shell.
pub(crate) fn sh<S: AsRef<str>>(argv: &[S]) -> Result<String, ModuleError> {
    let mut line = String::new();
    for (i, word) in argv.iter().enumerate() {
        let word = word.as_ref();
        let quoted = shlex::try_quote(word).map_err(|_| ModuleError::NulByte(printable(word)))?;
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&quoted);
    }
    Ok(line)
}

/// `s` shortened and with control characters escaped, for an error message.
pub(crate) fn printable(s: &str) -> String {
    const MAX: usize = 120;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_default).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// Refuse an empty name, a name a command would read as an option, and control characters.
pub(crate) fn check_name(kind: ModuleKind, key: &str, value: &str) -> Result<(), ModuleError> {
    if value.is_empty() {
        return Err(kind.invalid(format!("`{key}` must not be empty")));
    }
    if value.contains('\0') {
        return Err(ModuleError::NulByte(printable(value)));
    }
    if value.starts_with('-') {
        return Err(kind.invalid(format!(
            "`{key}` must not start with '-' (a command would read it as an option): {}",
            printable(value)
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(kind.invalid(format!(
            "`{key}` must not contain control characters: {}",
            printable(value)
        )));
    }
    Ok(())
}

/// A short account of what a command left behind, for error messages.
pub(crate) fn summarize(out: &CmdOutput) -> String {
    fn text(s: &str) -> String {
        let t = s.trim();
        if t.is_empty() {
            "(empty)".to_string()
        } else {
            format!("\"{}\"", printable(t))
        }
    }
    let status = match (out.rc, &out.signal) {
        (Some(rc), _) => format!("exit {rc}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "no exit status".to_string(),
    };
    format!(
        "{status}, stdout {}, stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The single SSH result of a one-probe module.
pub(crate) fn one_ssh<'a>(
    results: &'a [ActionResult],
    cmd: &str,
) -> Result<&'a CmdOutput, ModuleError> {
    match results {
        [ActionResult::Ssh(out)] => Ok(out),
        [ActionResult::Api(_)] => Err(ModuleError::UnexpectedOutput {
            cmd: cmd.to_string(),
            detail: "got an API reply instead of command output".to_string(),
        }),
        _ => Err(ModuleError::ResultCount {
            expected: 1,
            got: results.len(),
        }),
    }
}

/// The single API reply of a one-probe module.
pub(crate) fn one_api<'a>(
    results: &'a [ActionResult],
    command: &str,
) -> Result<&'a Value, ModuleError> {
    match results {
        [ActionResult::Api(v)] => Ok(v),
        [ActionResult::Ssh(_)] => Err(ModuleError::UnexpectedReply {
            command: command.to_string(),
            detail: "got command output instead of an API reply".to_string(),
        }),
        _ => Err(ModuleError::ResultCount {
            expected: 1,
            got: results.len(),
        }),
    }
}

/// A boolean field of a recorded state.
pub(crate) fn state_bool(state: &Value, key: &str) -> Result<bool, ModuleError> {
    state
        .get(key)
        .and_then(Value::as_bool)
        .ok_or_else(|| ModuleError::InvalidState(format!("`{key}` is missing or not a boolean")))
}

/// A string field of a recorded state.
pub(crate) fn state_str<'a>(state: &'a Value, key: &str) -> Result<&'a str, ModuleError> {
    state
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ModuleError::InvalidState(format!("`{key}` is missing or not a string")))
}

/// A string-or-null field of a recorded state.
pub(crate) fn state_opt_str<'a>(
    state: &'a Value,
    key: &str,
) -> Result<Option<&'a str>, ModuleError> {
    match state.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ModuleError::InvalidState(format!(
            "`{key}` is not a string"
        ))),
    }
}

/// Whether two states agree on `keys` (a key missing from both counts as agreeing).
pub(crate) fn same_fields(before: &Value, now: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| before.get(k) == now.get(k))
}

/// Serde helpers for spec fields that take any YAML scalar as text, so `value: 20`,
/// `range: 100`, `owner: 1000` or `mode: 640` need no quotes. serde_yaml hands over the scalar's
/// text as written (`0640` stays `0640`, `1.0` stays `1.0`); a JSON document must use strings,
/// which is what [`ModuleSpec::to_json`] produces.
pub(crate) mod scalar {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};

    const EXPECTING: &str = "a string or another scalar";

    struct ScalarText;

    impl Visitor<'_> for ScalarText {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTING)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    /// Any scalar, as the text written.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(ScalarText)
    }

    struct OptScalarText;

    impl<'de> Visitor<'de> for OptScalarText {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTING)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(ScalarText).map(Some)
        }
    }

    /// An optional scalar, as the text written.
    pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(OptScalarText)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for probe results and a generic change/undo simulation.
    use super::*;

    pub fn ok(stdout: &str) -> ActionResult {
        ActionResult::Ssh(CmdOutput {
            rc: Some(0),
            stdout: stdout.to_string(),
            ..Default::default()
        })
    }

    pub fn exit(rc: i32, stdout: &str, stderr: &str) -> ActionResult {
        ActionResult::Ssh(CmdOutput {
            rc: Some(rc),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            ..Default::default()
        })
    }

    pub fn killed(signal: &str) -> ActionResult {
        ActionResult::Ssh(CmdOutput {
            signal: Some(signal.to_string()),
            ..Default::default()
        })
    }

    pub fn api(v: Value) -> ActionResult {
        ActionResult::Api(v)
    }

    pub fn cmds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Ssh { cmd } => cmd.clone(),
                Action::Api(call) => format!("api {} {:?}", call.command, call.args),
            })
            .collect()
    }

    /// The shell words of `cmd` as a POSIX shell would split them (no expansion happens inside
    /// quotes, so this shows what the command receives).
    pub fn words(cmd: &str) -> Vec<String> {
        shlex::split(cmd).unwrap_or_else(|| panic!("unbalanced quoting in {cmd}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_yaml 0.9 reads externally tagged enums from `!tag` values unless told to accept the
    /// single-key map form (`service: {...}`).
    fn yaml_specs(yaml: &str) -> Result<Vec<ModuleSpec>, serde_yaml::Error> {
        serde_yaml::with::singleton_map_recursive::deserialize(serde_yaml::Deserializer::from_str(
            yaml,
        ))
    }

    #[test]
    fn kinds_have_their_yaml_keys() {
        let keys: Vec<_> = ModuleKind::ALL.iter().map(|k| k.key()).collect();
        assert_eq!(
            keys,
            [
                "service",
                "file",
                "link",
                "route",
                "ovs_port",
                "ovs_flow",
                "cs_setting",
                "vlan_range",
                "vm_host",
                "host_maintenance"
            ]
        );
        for k in ModuleKind::ALL {
            assert_eq!(ModuleKind::from_key(k.key()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                Value::String(k.key().into())
            );
            assert_eq!(
                k.runs_on_api(),
                matches!(
                    k,
                    ModuleKind::CsSetting
                        | ModuleKind::VlanRange
                        | ModuleKind::VmHost
                        | ModuleKind::HostMaintenance
                )
            );
        }
        assert_eq!(ModuleKind::from_key("shell"), None);
    }

    #[test]
    fn diff_displays_one_line_per_change() {
        let d = Diff {
            changes: vec![
                Change::new("mode", "0644", "0640"),
                Change::new("owner", "root", "cloud"),
            ],
        };
        assert_eq!(d.to_string(), "mode: 0644 -> 0640\nowner: root -> cloud");
    }

    #[test]
    fn sh_quotes_every_word_and_refuses_nul() {
        assert_eq!(
            sh(&["systemctl", "is-active", "dnsmasq"]).unwrap(),
            "systemctl is-active dnsmasq"
        );
        let line = sh(&["systemctl", "start", "x; rm -rf /"]).unwrap();
        assert_eq!(
            testutil::words(&line),
            ["systemctl", "start", "x; rm -rf /"]
        );
        let line = sh(&["echo", "$(reboot)", "`id`", "a'b", ""]).unwrap();
        assert_eq!(
            testutil::words(&line),
            ["echo", "$(reboot)", "`id`", "a'b", ""]
        );
        assert!(!line.contains(" $(reboot)"));
        assert!(matches!(sh(&["a\0b"]), Err(ModuleError::NulByte(_))));
    }

    /// Every module builds its commands with `sh`: what a real shell hands the program is
    /// exactly the words, hostile or not.
    #[test]
    fn sh_words_reach_a_real_shell_byte_for_byte() {
        let words = [
            "systemctl",
            "restart",
            "x; touch /tmp/remedy-pwned",
            "$(id)",
            "`id`",
            "a'b\"c\\d",
            "*?[]~{a,b}#!=,",
            "line\nbreak",
            "é 🦀",
            "",
            "--",
        ];
        let line = sh(&words).unwrap();
        for shell in ["sh", "bash"] {
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(format!("set -- {line}; printf '%s\\0' \"$@\""))
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {line}");
            let got: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
            let want: Vec<&[u8]> = words
                .iter()
                .map(|w| w.as_bytes())
                .chain([&b""[..]])
                .collect();
            assert_eq!(got, want, "{shell}: {line}");
        }
    }

    #[test]
    fn every_spec_parses_from_yaml_and_builds() {
        let yaml = r#"
- service: { name: dnsmasq, state: restarted }
- file: { path: /etc/cloudstack/agent/agent.properties, mode: "0640", owner: cloud, group: cloud }
- link: { dev: eth1, state: up }
- route: { dest: default, via: 10.1.1.1, dev: eth2, table: "2" }
- ovs_port: { bridge: br0, port: bond2, state: present }
- ovs_flow: { bridge: br-int, flow: "table=0,priority=3,in_port=1,dl_vlan=3933,actions=mod_vlan_vid:1,NORMAL", state: present }
- cs_setting: { name: network.gc.interval, value: 600 }
- cs_setting: { name: vm.network.throttling.rate, value: "200", scope: zone, scope_id: 7f0c-zone }
- vlan_range: { physical_network: 9e1c-pn, range: 100-200 }
- vlan_range: { physical_network: 9e1c-pn, range: 3933 }
"#;
        let specs: Vec<ModuleSpec> = yaml_specs(yaml).unwrap();
        let kinds: Vec<_> = specs.iter().map(ModuleSpec::kind).collect();
        use ModuleKind::*;
        assert_eq!(
            kinds,
            [
                Service, File, Link, Route, OvsPort, OvsFlow, CsSetting, CsSetting, VlanRange,
                VlanRange
            ]
        );
        for spec in specs {
            let kind = spec.kind();
            // the render round trip: fields to JSON and back
            let json = spec.to_json().unwrap();
            let back = ModuleSpec::from_json(kind, json).unwrap();
            assert_eq!(back, spec);
            let module = spec.build().unwrap();
            assert_eq!(module.kind(), kind);
            assert!(!module.check().is_empty());
            assert!(!module.describe().is_empty());
        }
    }

    #[test]
    fn unknown_yaml_keys_are_refused_with_a_location() {
        let err = yaml_specs("- service:\n    name: dnsmasq\n    stat: started\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `stat`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = yaml_specs("- service: { name: dnsmasq, state: running }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `running`"), "{err}");
        let err = yaml_specs("- shell: { cmd: x }").unwrap_err().to_string();
        assert!(err.contains("unknown variant `shell`"), "{err}");
    }

    #[test]
    fn from_json_reports_the_kind() {
        let err = ModuleSpec::from_json(ModuleKind::Link, serde_json::json!({"dev": "eth1"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid link spec: missing field `state`"),
            "{err}"
        );
    }

    #[test]
    fn check_name_refuses_options_and_control_characters() {
        let k = ModuleKind::Service;
        assert!(check_name(k, "name", "dnsmasq").is_ok());
        assert!(check_name(k, "name", "x; rm -rf /").is_ok()); // quoted later, harmless
        for bad in ["", "--help", "-x", "a\nb"] {
            assert!(check_name(k, "name", bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            check_name(k, "name", "a\0b"),
            Err(ModuleError::NulByte(_))
        ));
    }

    #[test]
    fn summarize_is_short_and_readable() {
        let out = CmdOutput {
            rc: Some(4),
            stderr: "no such unit\n".into(),
            ..Default::default()
        };
        assert_eq!(
            summarize(&out),
            "exit 4, stdout (empty), stderr \"no such unit\""
        );
        let out = CmdOutput {
            signal: Some("KILL".into()),
            ..Default::default()
        };
        assert!(summarize(&out).starts_with("killed by signal KILL"));
    }
}
