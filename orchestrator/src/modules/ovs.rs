//! `ovs_port` and `ovs_flow`: Open vSwitch bridge ports and OpenFlow rules on a hypervisor.
//!
//! Owns the `ovs-vsctl list-ports` and `ovs-ofctl dump-flows` probes, the flow parser that finds
//! "the same flow" in a dump, and the add/delete commands with their undo. Not here: creating
//! bridges, port options (VLAN tag, interface type), OpenFlow version negotiation.
//!
//! Two flows are the same flow when table, priority and the set of match fields agree — that is
//! how OVS itself identifies a flow (`--strict`). Match fields are compared as written, case
//! aside: write them the way `ovs-ofctl dump-flows` prints them (`ip` rather than
//! `dl_type=0x0800`, port numbers rather than names), or the check will not recognise the flow
//! and the module will add it again on every run (harmless: add-flow replaces it).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_name, one_ssh, printable, sh, state_bool, state_opt_str, summarize};
use super::{Change, Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult, CmdOutput};

/// Whether a port or flow should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

impl Presence {
    fn word(self) -> &'static str {
        match self {
            Presence::Present => "present",
            Presence::Absent => "absent",
        }
    }
}

/// Ensure a port is (or is not) attached to an Open vSwitch bridge.
///
/// YAML keys:
/// - `bridge` (required): the bridge, e.g. `br0`, `cloudbr1`.
/// - `port` (required): the port (interface) name, e.g. `bond2`.
/// - `state`: `present` (default) | `absent`.
///
/// ```yaml
/// - id: reattach-bond
///   on: "{{ hypervisor }}"
///   ovs_port: { bridge: br0, port: bond2, state: present }
/// ```
///
/// Check: `ovs-vsctl list-ports BRIDGE`. Change: `ovs-vsctl --may-exist add-port BRIDGE PORT` or
/// `ovs-vsctl --if-exists del-port BRIDGE PORT`. Undo: the inverse command. Undoing a removal
/// re-adds a plain port: options the port had (VLAN tag, interface type) are not restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvsPortSpec {
    pub bridge: String,
    pub port: String,
    #[serde(default)]
    pub state: Presence,
}

impl OvsPortSpec {
    pub fn build(self) -> Result<OvsPort, ModuleError> {
        check_name(ModuleKind::OvsPort, "bridge", &self.bridge)?;
        check_name(ModuleKind::OvsPort, "port", &self.port)?;
        let check_cmd = sh(&["ovs-vsctl", "list-ports", &self.bridge])?;
        Ok(OvsPort {
            spec: self,
            check_cmd,
        })
    }
}

/// The built `ovs_port` module.
#[derive(Debug, Clone)]
pub struct OvsPort {
    spec: OvsPortSpec,
    check_cmd: String,
}

impl OvsPort {
    fn set(&self, state: Presence) -> Result<Action, ModuleError> {
        let (bridge, port) = (self.spec.bridge.as_str(), self.spec.port.as_str());
        let cmd = match state {
            Presence::Present => sh(&["ovs-vsctl", "--may-exist", "add-port", bridge, port])?,
            Presence::Absent => sh(&["ovs-vsctl", "--if-exists", "del-port", bridge, port])?,
        };
        Ok(Action::ssh(cmd))
    }

    fn was(before: &Value) -> Result<Presence, ModuleError> {
        Ok(if state_bool(before, "present")? {
            Presence::Present
        } else {
            Presence::Absent
        })
    }
}

/// An error for a failed `ovs-vsctl`/`ovs-ofctl` probe: a missing bridge, or the raw output.
fn ovs_failure(cmd: &str, bridge: &str, out: &CmdOutput) -> ModuleError {
    let missing = out.stderr.contains("no bridge named") || out.stderr.contains("is not a bridge");
    if out.rc.is_some() && missing {
        ModuleError::BridgeNotFound(bridge.to_string())
    } else {
        ModuleError::UnexpectedOutput {
            cmd: cmd.to_string(),
            detail: summarize(out),
        }
    }
}

impl Module for OvsPort {
    fn kind(&self) -> ModuleKind {
        ModuleKind::OvsPort
    }

    fn describe(&self) -> String {
        format!(
            "ovs port {} {} on {}",
            self.spec.port,
            self.spec.state.word(),
            self.spec.bridge
        )
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::ssh(self.check_cmd.clone())]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let out = one_ssh(results, &self.check_cmd)?;
        if out.rc != Some(0) {
            return Err(ovs_failure(&self.check_cmd, &self.spec.bridge, out));
        }
        let present = out.stdout.lines().any(|l| l.trim() == self.spec.port);
        Ok(json!({ "present": present }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let was = Self::was(before)?;
        Ok((was != self.spec.state).then(|| {
            Diff::one(
                format!("port {}", self.spec.port),
                was.word(),
                self.spec.state.word(),
            )
        }))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        if Self::was(before)? == self.spec.state {
            return Ok(vec![]);
        }
        Ok(vec![self.set(self.spec.state)?])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let was = Self::was(before)?;
        if was == self.spec.state {
            return Ok(vec![]);
        }
        Ok(vec![self.set(was)?])
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        super::same_fields(before, now, &["present"])
    }
}

/// Ensure an OpenFlow rule is (or is not) installed on an Open vSwitch bridge.
///
/// YAML keys:
/// - `bridge` (required): the bridge, e.g. `br-int`.
/// - `flow` (required): the flow in `ovs-ofctl add-flow` syntax: `table` (default 0), `priority`
///   (default 32768), the match fields, and `actions=...` last (required when present). Flow
///   settings `cookie`, `idle_timeout`, `hard_timeout`, `importance`, `send_flow_rem`,
///   `check_overlap` are passed to add-flow but are not part of the match.
/// - `state`: `present` (default) | `absent`.
///
/// ```yaml
/// - id: guest-vlan-flow
///   on: "{{ hypervisor }}"
///   ovs_flow:
///     bridge: br-int
///     flow: "table=0,priority=3,in_port=1,dl_vlan=3933,actions=mod_vlan_vid:1,NORMAL"
///     state: present
/// ```
///
/// Check: `ovs-ofctl dump-flows BRIDGE`; the flow with the same table, priority and match is
/// looked up (match fields as a set, actions compared case-insensitively). Change: `ovs-ofctl
/// add-flow BRIDGE FLOW` (adds, or replaces the actions of the same flow), or `ovs-ofctl --strict
/// del-flows BRIDGE table=T,priority=P,MATCH`. Undo: strict-delete the added flow, or re-add the
/// old flow with its old actions and cookie (timeouts and counters are not restored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvsFlowSpec {
    pub bridge: String,
    pub flow: String,
    #[serde(default)]
    pub state: Presence,
}

/// A parsed flow: what identifies it, and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    table: u8,
    priority: u16,
    /// Match fields in the order written (`in_port=1`, `ip`, ...).
    matches: Vec<String>,
    actions: Option<String>,
    cookie: Option<String>,
}

/// Flow settings that are not match fields (accepted by add-flow; printed by dump-flows).
const SETTINGS: [&str; 9] = [
    "cookie",
    "idle_timeout",
    "hard_timeout",
    "importance",
    "send_flow_rem",
    "check_overlap",
    "reset_counts",
    "no_packet_counts",
    "no_byte_counts",
];
/// Statistics printed by dump-flows only.
const STATS: [&str; 5] = ["duration", "n_packets", "n_bytes", "idle_age", "hard_age"];

impl Flow {
    /// Parse add-flow syntax (`stats = false`) or one dump-flows line (`stats = true`).
    fn parse(text: &str, stats: bool) -> Result<Flow, String> {
        let (fields, actions) = match split_actions(text) {
            Some((f, a)) => (f, Some(a.trim())),
            None => (text, None),
        };
        if actions == Some("") {
            return Err("`actions=` is empty".to_string());
        }
        let mut flow = Flow {
            table: 0,
            priority: 32768,
            matches: Vec::new(),
            actions: actions.map(str::to_string),
            cookie: None,
        };
        for token in fields.split(|c: char| c == ',' || c.is_whitespace()) {
            if token.is_empty() {
                continue;
            }
            let (key, value) = match token.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (token, None),
            };
            match (key, value) {
                ("table", Some(v)) => {
                    flow.table = v
                        .parse()
                        .ok()
                        .filter(|t| *t < 255)
                        .ok_or(format!("`table` must be a number 0-254: {}", printable(v)))?
                }
                ("priority", Some(v)) => {
                    flow.priority = v.parse().map_err(|_| {
                        format!("`priority` must be a number 0-65535: {}", printable(v))
                    })?
                }
                ("cookie", Some(v)) => flow.cookie = Some(v.to_string()),
                (k, _) if SETTINGS.contains(&k) => {}
                (k, _) if STATS.contains(&k) => {
                    if !stats {
                        return Err(format!("`{k}` is a statistic, not part of a flow"));
                    }
                }
                _ => flow.matches.push(token.to_string()),
            }
        }
        Ok(flow)
    }

    /// The match fields as OVS compares them: a set, case-insensitive.
    fn match_set(&self) -> BTreeSet<String> {
        self.matches
            .iter()
            .map(|m| m.to_ascii_lowercase())
            .collect()
    }

    fn same_flow(&self, other: &Flow) -> bool {
        self.table == other.table
            && self.priority == other.priority
            && self.match_set() == other.match_set()
    }

    /// `table=T,priority=P,MATCH...`: what `--strict del-flows` needs.
    fn strict_match(&self) -> String {
        let mut parts = vec![
            format!("table={}", self.table),
            format!("priority={}", self.priority),
        ];
        parts.extend(self.matches.iter().cloned());
        parts.join(",")
    }
}

/// Split at the `actions=` (or `action=`) keyword: (fields, actions).
fn split_actions(text: &str) -> Option<(&str, &str)> {
    for kw in ["actions=", "action="] {
        if let Some(at) = text.find(kw) {
            let boundary = at == 0 || text[..at].ends_with([',', ' ', '\t']);
            if boundary {
                return Some((&text[..at], &text[at + kw.len()..]));
            }
        }
    }
    None
}

/// Actions compared the way OVS prints them: case and whitespace aside.
fn same_actions(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    norm(a) == norm(b)
}

impl OvsFlowSpec {
    pub fn build(self) -> Result<OvsFlow, ModuleError> {
        let kind = ModuleKind::OvsFlow;
        check_name(kind, "bridge", &self.bridge)?;
        check_name(kind, "flow", &self.flow)?;
        let flow =
            Flow::parse(&self.flow, false).map_err(|e| kind.invalid(format!("`flow`: {e}")))?;
        if self.state == Presence::Present && flow.actions.is_none() {
            return Err(kind.invalid("`flow` needs `actions=...` (last) when the state is present"));
        }
        let check_cmd = sh(&["ovs-ofctl", "dump-flows", &self.bridge])?;
        Ok(OvsFlow {
            spec: self,
            flow,
            check_cmd,
        })
    }
}

/// The built `ovs_flow` module.
#[derive(Debug, Clone)]
pub struct OvsFlow {
    spec: OvsFlowSpec,
    flow: Flow,
    check_cmd: String,
}

/// What a recorded state says about the flow: None if absent, else (actions, cookie).
fn recorded(before: &Value) -> Result<Option<(&str, Option<&str>)>, ModuleError> {
    if !state_bool(before, "present")? {
        return Ok(None);
    }
    let actions = state_opt_str(before, "actions")?
        .ok_or_else(|| ModuleError::InvalidState("a present flow without `actions`".to_string()))?;
    Ok(Some((actions, state_opt_str(before, "cookie")?)))
}

impl OvsFlow {
    fn add(&self, flow: &str) -> Result<Action, ModuleError> {
        Ok(Action::ssh(sh(&[
            "ovs-ofctl",
            "add-flow",
            &self.spec.bridge,
            flow,
        ])?))
    }

    fn delete(&self) -> Result<Action, ModuleError> {
        let m = self.flow.strict_match();
        Ok(Action::ssh(sh(&[
            "ovs-ofctl",
            "--strict",
            "del-flows",
            &self.spec.bridge,
            &m,
        ])?))
    }

    /// The old flow as add-flow text, with its old actions and cookie.
    fn old_flow(&self, actions: &str, cookie: Option<&str>) -> String {
        let mut text = String::new();
        if let Some(c) = cookie.filter(|c| *c != "0x0" && *c != "0") {
            text.push_str(&format!("cookie={c},"));
        }
        text.push_str(&self.flow.strict_match());
        text.push_str(&format!(",actions={actions}"));
        text
    }

    fn wanted_actions(&self) -> &str {
        self.flow.actions.as_deref().unwrap_or("")
    }

    /// Whether `before` already satisfies the spec.
    fn in_sync(&self, before: Option<(&str, Option<&str>)>) -> bool {
        match (self.spec.state, before) {
            (Presence::Absent, None) => true,
            (Presence::Absent, Some(_)) | (Presence::Present, None) => false,
            (Presence::Present, Some((actions, _))) => same_actions(actions, self.wanted_actions()),
        }
    }
}

impl Module for OvsFlow {
    fn kind(&self) -> ModuleKind {
        ModuleKind::OvsFlow
    }

    fn describe(&self) -> String {
        format!(
            "ovs flow {} {} on {}",
            self.spec.flow,
            self.spec.state.word(),
            self.spec.bridge
        )
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::ssh(self.check_cmd.clone())]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let out = one_ssh(results, &self.check_cmd)?;
        if out.rc != Some(0) {
            return Err(ovs_failure(&self.check_cmd, &self.spec.bridge, out));
        }
        let mut found: Option<Flow> = None;
        for line in out.stdout.lines() {
            let line = line.trim();
            let header = line.starts_with("NXST_FLOW") || line.starts_with("OFPST_FLOW");
            if line.is_empty() || header {
                continue;
            }
            let unexpected = |why: String| ModuleError::UnexpectedOutput {
                cmd: self.check_cmd.clone(),
                detail: format!("{why} in line \"{}\"", printable(line)),
            };
            let flow = Flow::parse(line, true).map_err(unexpected)?;
            if flow.actions.is_none() {
                return Err(unexpected("no actions".to_string()));
            }
            if flow.same_flow(&self.flow) {
                found = Some(flow);
            }
        }
        Ok(match found {
            Some(f) => json!({ "present": true, "actions": f.actions, "cookie": f.cookie }),
            None => json!({ "present": false, "actions": null, "cookie": null }),
        })
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let was = recorded(before)?;
        if self.in_sync(was) {
            return Ok(None);
        }
        let change = match (self.spec.state, was) {
            (Presence::Present, None) => Change::new(
                "flow",
                "absent",
                format!("present (actions={})", self.wanted_actions()),
            ),
            (Presence::Present, Some((old, _))) => {
                Change::new("actions", old, self.wanted_actions())
            }
            (Presence::Absent, Some((old, _))) => {
                Change::new("flow", format!("present (actions={old})"), "absent")
            }
            (Presence::Absent, None) => return Ok(None),
        };
        Ok(Some(Diff {
            changes: vec![change],
        }))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let was = recorded(before)?;
        if self.in_sync(was) {
            return Ok(vec![]);
        }
        Ok(vec![match self.spec.state {
            // add-flow on an existing table+priority+match replaces its actions
            Presence::Present => self.add(self.spec.flow.trim())?,
            Presence::Absent => self.delete()?,
        }])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let was = recorded(before)?;
        if self.in_sync(was) {
            return Ok(vec![]);
        }
        Ok(vec![match was {
            None => self.delete()?,
            Some((actions, cookie)) => self.add(&self.old_flow(actions, cookie))?,
        }])
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        match (recorded(before), recorded(now)) {
            (Ok(None), Ok(None)) => true,
            (Ok(Some((a, _))), Ok(Some((b, _)))) => same_actions(a, b),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil::{cmds, exit, ok, words};

    const FLOW: &str = "table=0,priority=3,in_port=1,dl_vlan=3933,actions=mod_vlan_vid:1,NORMAL";

    fn port(state: Presence) -> OvsPort {
        OvsPortSpec {
            bridge: "br0".into(),
            port: "bond2".into(),
            state,
        }
        .build()
        .unwrap()
    }

    fn flow(text: &str, state: Presence) -> OvsFlow {
        OvsFlowSpec {
            bridge: "br-int".into(),
            flow: text.into(),
            state,
        }
        .build()
        .unwrap()
    }

    // ---- ovs_port ----

    #[test]
    fn port_check_and_observe() {
        let m = port(Presence::Present);
        assert_eq!(cmds(&m.check()), ["ovs-vsctl list-ports br0"]);
        assert_eq!(m.describe(), "ovs port bond2 present on br0");
        assert_eq!(
            m.observe(&[ok("bond1\nbond2\n")]).unwrap(),
            json!({"present": true})
        );
        assert_eq!(
            m.observe(&[ok("bond1\nbond20\n")]).unwrap(),
            json!({"present": false})
        );
        assert_eq!(m.observe(&[ok("")]).unwrap(), json!({"present": false}));
        let err = m
            .observe(&[exit(1, "", "ovs-vsctl: no bridge named br0\n")])
            .unwrap_err();
        assert_eq!(err.to_string(), "bridge br0 does not exist");
        let garbage = exit(
            1,
            "",
            "ovs-vsctl: unix:/var/run/openvswitch/db.sock: database connection failed (No such file or directory)",
        );
        assert!(matches!(
            m.observe(&[garbage]),
            Err(ModuleError::UnexpectedOutput { .. })
        ));
    }

    #[test]
    fn port_diff_change_undo() {
        let absent = json!({"present": false});
        let present = json!({"present": true});
        let m = port(Presence::Present);
        assert_eq!(m.diff(&present).unwrap(), None);
        assert!(m.undo(&present).unwrap().is_empty());
        assert_eq!(
            m.diff(&absent).unwrap().unwrap().to_string(),
            "port bond2: absent -> present"
        );
        assert_eq!(
            cmds(&m.change(&absent).unwrap()),
            ["ovs-vsctl --may-exist add-port br0 bond2"]
        );
        assert_eq!(
            cmds(&m.undo(&absent).unwrap()),
            ["ovs-vsctl --if-exists del-port br0 bond2"]
        );
        let m = port(Presence::Absent);
        assert_eq!(m.diff(&absent).unwrap(), None);
        assert_eq!(
            cmds(&m.change(&present).unwrap()),
            ["ovs-vsctl --if-exists del-port br0 bond2"]
        );
        assert_eq!(
            cmds(&m.undo(&present).unwrap()),
            ["ovs-vsctl --may-exist add-port br0 bond2"]
        );
    }

    #[test]
    fn port_round_trip() {
        for state in [Presence::Present, Presence::Absent] {
            let m = port(state);
            for was in [true, false] {
                let before = json!({ "present": was });
                let mut present = was;
                for c in cmds(&m.change(&before).unwrap())
                    .iter()
                    .chain(&cmds(&m.undo(&before).unwrap()))
                {
                    present = words(c)[2] == "add-port";
                }
                assert!(m.restored(&before, &json!({ "present": present })));
            }
        }
    }

    #[test]
    fn port_hostile_names() {
        let m = OvsPortSpec {
            bridge: "br0; reboot".into(),
            port: "$(id)".into(),
            state: Presence::Present,
        }
        .build()
        .unwrap();
        assert_eq!(
            words(&cmds(&m.check())[0]),
            ["ovs-vsctl", "list-ports", "br0; reboot"]
        );
        let add = cmds(&m.change(&json!({"present": false})).unwrap()).remove(0);
        assert_eq!(
            words(&add),
            [
                "ovs-vsctl",
                "--may-exist",
                "add-port",
                "br0; reboot",
                "$(id)"
            ]
        );
        let bad = OvsPortSpec {
            bridge: "br0".into(),
            port: "--if-exists".into(),
            state: Presence::Present,
        };
        assert!(bad.build().is_err());
    }

    // ---- ovs_flow ----

    const DUMP: &str = "NXST_FLOW reply (xid=0x4):\n \
        cookie=0x0, duration=12.345s, table=0, n_packets=0, n_bytes=0, idle_age=3, priority=3,in_port=1,dl_vlan=3933 actions=mod_vlan_vid:1,NORMAL\n \
        cookie=0x0, duration=120.001s, table=0, n_packets=42, n_bytes=2520, idle_age=1, priority=0 actions=NORMAL\n";

    #[test]
    fn flow_parser_separates_match_settings_and_actions() {
        let f = Flow::parse(FLOW, false).unwrap();
        assert_eq!((f.table, f.priority), (0, 3));
        assert_eq!(f.matches, ["in_port=1", "dl_vlan=3933"]);
        assert_eq!(f.actions.as_deref(), Some("mod_vlan_vid:1,NORMAL"));
        let d = Flow::parse(
            "cookie=0x5, duration=1.5s, table=2, n_packets=0, n_bytes=0, idle_timeout=60, idle_age=0, hard_age=3, dl_vlan=3933,in_port=1 actions=mod_vlan_vid:1,normal",
            true,
        )
        .unwrap();
        assert_eq!((d.table, d.priority), (2, 32768));
        assert_eq!(d.cookie.as_deref(), Some("0x5"));
        assert_eq!(
            d.match_set(),
            Flow::parse("in_port=1,dl_vlan=3933", false)
                .unwrap()
                .match_set()
        );
        let empty = Flow::parse(
            " cookie=0x0, duration=1s, table=0, n_packets=0, n_bytes=0, priority=0 actions=NORMAL",
            true,
        )
        .unwrap();
        assert!(empty.matches.is_empty());
        assert_eq!(empty.strict_match(), "table=0,priority=0");
        // actions may contain '=' and parentheses
        let learn = Flow::parse(
            "priority=1,ip,actions=learn(table=1,NXM_OF_VLAN_TCI[0..11]),output:2",
            false,
        )
        .unwrap();
        assert_eq!(learn.matches, ["ip"]);
        assert_eq!(
            learn.actions.as_deref(),
            Some("learn(table=1,NXM_OF_VLAN_TCI[0..11]),output:2")
        );
        assert!(Flow::parse("table=300,actions=drop", false).is_err());
        assert!(Flow::parse("priority=x,actions=drop", false).is_err());
        assert!(Flow::parse("n_packets=3,actions=drop", false).is_err());
        assert!(Flow::parse("in_port=1,actions=", false).is_err());
    }

    #[test]
    fn flow_check_and_observe() {
        let m = flow(FLOW, Presence::Present);
        assert_eq!(cmds(&m.check()), ["ovs-ofctl dump-flows br-int"]);
        assert_eq!(
            m.observe(&[ok(DUMP)]).unwrap(),
            json!({"present": true, "actions": "mod_vlan_vid:1,NORMAL", "cookie": "0x0"})
        );
        // OpenFlow 1.3 header, match fields in another order, no stats
        let of13 = "OFPST_FLOW reply (OF1.3) (xid=0x2):\n priority=3,dl_vlan=3933,in_port=1 actions=mod_vlan_vid:2,NORMAL\n";
        assert_eq!(
            m.observe(&[ok(of13)]).unwrap()["actions"],
            "mod_vlan_vid:2,NORMAL"
        );
        // same match, other priority or table: another flow
        let other = " cookie=0x0, duration=1s, table=1, n_packets=0, n_bytes=0, priority=3,in_port=1,dl_vlan=3933 actions=drop\n \
                     cookie=0x0, duration=1s, table=0, n_packets=0, n_bytes=0, priority=4,in_port=1,dl_vlan=3933 actions=drop\n";
        assert_eq!(
            m.observe(&[ok(other)]).unwrap(),
            json!({"present": false, "actions": null, "cookie": null})
        );
        assert_eq!(
            m.observe(&[ok("NXST_FLOW reply (xid=0x4):\n")]).unwrap()["present"],
            false
        );
    }

    #[test]
    fn flow_observe_errors() {
        let m = flow(FLOW, Presence::Present);
        let err = m
            .observe(&[exit(
                1,
                "",
                "ovs-ofctl: br-int is not a bridge or a socket\n",
            )])
            .unwrap_err();
        assert_eq!(err.to_string(), "bridge br-int does not exist");
        for bad in [
            ok("garbage without actions\n"),
            ok(" table=x, priority=3 actions=drop"),
            exit(127, "", "ovs-ofctl: not found"),
        ] {
            assert!(
                matches!(
                    m.observe(std::slice::from_ref(&bad)),
                    Err(ModuleError::UnexpectedOutput { .. })
                ),
                "{bad:?}"
            );
        }
    }

    fn present(actions: &str) -> Value {
        json!({"present": true, "actions": actions, "cookie": "0x0"})
    }

    fn absent() -> Value {
        json!({"present": false, "actions": null, "cookie": null})
    }

    #[test]
    fn flow_in_sync_has_no_diff() {
        let m = flow(FLOW, Presence::Present);
        let same = present("MOD_VLAN_VID:1,normal");
        assert_eq!(m.diff(&same).unwrap(), None);
        assert!(m.change(&same).unwrap().is_empty());
        assert!(m.undo(&same).unwrap().is_empty());
        let m = flow(FLOW, Presence::Absent);
        assert_eq!(m.diff(&absent()).unwrap(), None);
        assert!(m.undo(&absent()).unwrap().is_empty());
    }

    #[test]
    fn flow_add_replace_delete_and_their_undo() {
        let m = flow(FLOW, Presence::Present);
        // absent -> add; undo = strict delete
        assert_eq!(
            m.diff(&absent()).unwrap().unwrap().to_string(),
            "flow: absent -> present (actions=mod_vlan_vid:1,NORMAL)"
        );
        assert_eq!(
            cmds(&m.change(&absent()).unwrap()),
            ["ovs-ofctl add-flow br-int 'table=0,priority=3,in_port=1,dl_vlan=3933,actions=mod_vlan_vid:1,NORMAL'"]
        );
        assert_eq!(
            cmds(&m.undo(&absent()).unwrap()),
            ["ovs-ofctl --strict del-flows br-int 'table=0,priority=3,in_port=1,dl_vlan=3933'"]
        );
        // other actions -> replace; undo = re-add the old actions (and cookie)
        let old = json!({"present": true, "actions": "drop", "cookie": "0x1f"});
        assert_eq!(
            m.diff(&old).unwrap().unwrap().to_string(),
            "actions: drop -> mod_vlan_vid:1,NORMAL"
        );
        assert_eq!(
            cmds(&m.change(&old).unwrap()),
            ["ovs-ofctl add-flow br-int 'table=0,priority=3,in_port=1,dl_vlan=3933,actions=mod_vlan_vid:1,NORMAL'"]
        );
        assert_eq!(
            cmds(&m.undo(&old).unwrap()),
            ["ovs-ofctl add-flow br-int 'cookie=0x1f,table=0,priority=3,in_port=1,dl_vlan=3933,actions=drop'"]
        );
        // absent wanted -> strict delete; undo = re-add
        let m = flow(
            "table=0,priority=3,in_port=1,dl_vlan=3933",
            Presence::Absent,
        );
        let was = present("mod_vlan_vid:1,NORMAL");
        assert_eq!(
            m.diff(&was).unwrap().unwrap().to_string(),
            "flow: present (actions=mod_vlan_vid:1,NORMAL) -> absent"
        );
        assert_eq!(
            cmds(&m.change(&was).unwrap()),
            ["ovs-ofctl --strict del-flows br-int 'table=0,priority=3,in_port=1,dl_vlan=3933'"]
        );
        assert_eq!(
            cmds(&m.undo(&was).unwrap()),
            ["ovs-ofctl add-flow br-int 'table=0,priority=3,in_port=1,dl_vlan=3933,actions=mod_vlan_vid:1,NORMAL'"]
        );
    }

    #[test]
    fn flow_defaults_table_and_priority_in_the_strict_match() {
        let m = flow("in_port=1,actions=drop", Presence::Present);
        assert_eq!(
            cmds(&m.undo(&absent()).unwrap()),
            ["ovs-ofctl --strict del-flows br-int 'table=0,priority=32768,in_port=1'"]
        );
        // timeouts go to add-flow only, never into the strict match
        let m = flow(
            "priority=5,idle_timeout=60,ip,actions=drop",
            Presence::Present,
        );
        assert_eq!(
            cmds(&m.undo(&absent()).unwrap()),
            ["ovs-ofctl --strict del-flows br-int 'table=0,priority=5,ip'"]
        );
    }

    /// A bridge's flow table, changed by add-flow / del-flows commands as OVS would.
    fn simulate(table: &mut Vec<Flow>, actions: &[Action]) {
        for c in cmds(actions) {
            let w = words(&c);
            match w[1].as_str() {
                "add-flow" => {
                    let f = Flow::parse(&w[3], false).unwrap();
                    table.retain(|g| !g.same_flow(&f));
                    table.push(f);
                }
                "--strict" => {
                    assert_eq!(w[2], "del-flows");
                    let f = Flow::parse(&w[4], false).unwrap();
                    assert!(f.actions.is_none());
                    table.retain(|g| !g.same_flow(&f));
                }
                other => panic!("unexpected {other}"),
            }
        }
    }

    fn dump(table: &[Flow]) -> String {
        let mut s = String::from("NXST_FLOW reply (xid=0x4):\n");
        for f in table {
            let mut m = vec![format!("priority={}", f.priority)];
            m.extend(f.matches.iter().cloned());
            s.push_str(&format!(
                " cookie={}, duration=1.0s, table={}, n_packets=0, n_bytes=0, idle_age=1, {} actions={}\n",
                f.cookie.clone().unwrap_or("0x0".into()),
                f.table,
                m.join(","),
                f.actions.clone().unwrap()
            ));
        }
        s
    }

    #[test]
    fn flow_round_trip_through_a_simulated_bridge() {
        let normal = Flow::parse("priority=0,actions=NORMAL", false).unwrap();
        let old = Flow::parse(
            "cookie=0x7,table=0,priority=3,dl_vlan=3933,in_port=1,actions=drop",
            false,
        )
        .unwrap();
        let starts = [vec![normal.clone()], vec![normal.clone(), old]];
        let specs = [
            (FLOW, Presence::Present),
            (
                "table=0,priority=3,in_port=1,dl_vlan=3933",
                Presence::Absent,
            ),
        ];
        for start in &starts {
            for (text, state) in specs {
                let m = flow(text, state);
                let mut bridge = start.clone();
                let before = m.observe(&[ok(&dump(&bridge))]).unwrap();
                simulate(&mut bridge, &m.change(&before).unwrap());
                let after = m.observe(&[ok(&dump(&bridge))]).unwrap();
                assert_eq!(m.diff(&after).unwrap(), None, "{text} from {before}");
                simulate(&mut bridge, &m.undo(&before).unwrap());
                let now = m.observe(&[ok(&dump(&bridge))]).unwrap();
                assert!(m.restored(&before, &now), "{before} -> {now}");
                assert_eq!(now, before, "cookie restored too");
                assert_eq!(bridge.len(), start.len());
            }
        }
    }

    #[test]
    fn flow_hostile_values_stay_one_argument() {
        let text = "priority=3,in_port=1,actions=drop;reboot $(id)";
        let m = OvsFlowSpec {
            bridge: "br-int`id`".into(),
            flow: text.into(),
            state: Presence::Present,
        }
        .build()
        .unwrap();
        assert_eq!(
            words(&cmds(&m.check())[0]),
            ["ovs-ofctl", "dump-flows", "br-int`id`"]
        );
        assert_eq!(
            words(&cmds(&m.change(&absent()).unwrap())[0]),
            ["ovs-ofctl", "add-flow", "br-int`id`", text]
        );
        // actions recorded from the host are quoted on undo
        let undo = cmds(&m.undo(&present("output:1'; reboot; '")).unwrap()).remove(0);
        assert_eq!(
            words(&undo),
            [
                "ovs-ofctl",
                "add-flow",
                "br-int`id`",
                "table=0,priority=3,in_port=1,actions=output:1'; reboot; '"
            ]
        );
        let nul = present("drop\0x");
        assert!(matches!(m.undo(&nul), Err(ModuleError::NulByte(_))));
    }

    #[test]
    fn flow_spec_validation() {
        let bad = |text: &str, state| {
            OvsFlowSpec {
                bridge: "br-int".into(),
                flow: text.into(),
                state,
            }
            .build()
        };
        assert!(
            bad("in_port=1", Presence::Present).is_err(),
            "present needs actions"
        );
        assert!(bad("in_port=1", Presence::Absent).is_ok());
        assert!(bad("-O OpenFlow13", Presence::Absent).is_err());
        assert!(bad("table=0,\npriority=1,actions=drop", Presence::Present).is_err());
        assert!(bad("", Presence::Absent).is_err());
    }
}
