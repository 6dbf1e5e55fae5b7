//! `cs_setting` and `vlan_range`: CloudStack state changed through the API.
//!
//! Owns the probes (`listConfigurations`, `listPhysicalNetworks`), their interpretation, the
//! update calls with their undo, and the VLAN range arithmetic ([`parse_spans`], [`uncovered`],
//! [`format_spans`]). Not here: signing, paging and async-job polling (transport), and restarting
//! the management server after a non-dynamic setting (a separate step, if the playbook wants it).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{one_api, printable, scalar, state_opt_str, state_str};
use super::{Change, Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult};

// ---------------------------------------------------------------------------------------------
// cs_setting

/// Ensure a CloudStack setting (global, or of one zone/cluster/account/domain/storage pool/image
/// store) has a value.
///
/// YAML keys:
/// - `name` (required): the setting, e.g. `network.gc.interval`.
/// - `value` (required): the wanted value; unquoted numbers and booleans are taken as written.
/// - `scope`: `zone` | `cluster` | `account` | `domain` | `storage` | `imagestore`; without it the
///   global value is managed.
/// - `scope_id`: the id (uuid) of the zone, cluster, ... — required with `scope`, only with it.
///
/// ```yaml
/// - id: allow-internal-site
///   on: cloudstack
///   cs_setting: { name: secstorage.allowed.internal.sites, value: "10.0.0.0/8" }
/// - id: zone-throttle
///   on: cloudstack
///   cs_setting: { name: vm.network.throttling.rate, value: 200, scope: zone, scope_id: "{{ zone_id }}" }
/// ```
///
/// Check: API `listConfigurations name=NAME` (+ `zoneid=`/`clusterid=`/`accountid=`/`domainid=`/
/// `storageid=`/`imagestoreuuid=`); the exact name is picked from the reply (the server filters
/// by substring). Change: `updateConfiguration name=NAME value=VALUE` (+ the scope id). Undo:
/// `updateConfiguration` with the previous value. When the setting is not dynamic
/// (`isdynamic=false`) the diff says a management server restart is needed — for the change and
/// for its undo alike. Limitation: undoing a scoped setting that had no override of its own
/// writes the inherited value as an explicit override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsSettingSpec {
    pub name: String,
    #[serde(deserialize_with = "scalar::text")]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<SettingScope>,
    #[serde(
        default,
        deserialize_with = "scalar::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub scope_id: Option<String>,
}

/// The scope of a non-global setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingScope {
    Zone,
    Cluster,
    Account,
    Domain,
    Storage,
    Imagestore,
}

impl SettingScope {
    /// The API parameter that carries the scope's id.
    pub fn id_param(self) -> &'static str {
        match self {
            SettingScope::Zone => "zoneid",
            SettingScope::Cluster => "clusterid",
            SettingScope::Account => "accountid",
            SettingScope::Domain => "domainid",
            SettingScope::Storage => "storageid",
            SettingScope::Imagestore => "imagestoreuuid",
        }
    }

    fn word(self) -> &'static str {
        match self {
            SettingScope::Zone => "zone",
            SettingScope::Cluster => "cluster",
            SettingScope::Account => "account",
            SettingScope::Domain => "domain",
            SettingScope::Storage => "storage",
            SettingScope::Imagestore => "imagestore",
        }
    }
}

/// Refuse an empty API value or one with control characters (ids and names never have them).
fn check_api_value(kind: ModuleKind, key: &str, value: &str) -> Result<(), ModuleError> {
    if value.trim().is_empty() {
        return Err(kind.invalid(format!("`{key}` must not be empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(kind.invalid(format!(
            "`{key}` must not contain control characters: {}",
            printable(value)
        )));
    }
    Ok(())
}

impl CsSettingSpec {
    pub fn build(self) -> Result<CsSetting, ModuleError> {
        let kind = ModuleKind::CsSetting;
        check_api_value(kind, "name", &self.name)?;
        let scope = match (self.scope, &self.scope_id) {
            (None, None) => None,
            (Some(s), Some(id)) => {
                check_api_value(kind, "scope_id", id)?;
                Some((s, id.clone()))
            }
            (Some(_), None) => return Err(kind.invalid("`scope` needs `scope_id`")),
            (None, Some(_)) => return Err(kind.invalid("`scope_id` needs `scope`")),
        };
        Ok(CsSetting { spec: self, scope })
    }
}

/// The built `cs_setting` module.
#[derive(Debug, Clone)]
pub struct CsSetting {
    spec: CsSettingSpec,
    scope: Option<(SettingScope, String)>,
}

impl CsSetting {
    fn call(&self, command: &str, value: Option<&str>) -> Action {
        let mut args = vec![("name", self.spec.name.clone())];
        if let Some(v) = value {
            args.push(("value", v.to_string()));
        }
        if let Some((scope, id)) = &self.scope {
            args.push((scope.id_param(), id.clone()));
        }
        Action::api(command, args)
    }
}

/// A JSON scalar as text (`null` and absent as "").
fn text_of(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The item array `key` of a list reply; a reply without it (no matches) is an empty list.
pub(super) fn list_items<'a>(
    reply: &'a Value,
    command: &str,
    key: &str,
) -> Result<&'a [Value], ModuleError> {
    let unexpected = |detail: String| ModuleError::UnexpectedReply {
        command: command.to_string(),
        detail,
    };
    let obj = reply
        .as_object()
        .ok_or_else(|| unexpected("the reply is not a JSON object".to_string()))?;
    match obj.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(unexpected(format!("`{key}` is not a list"))),
    }
}

impl Module for CsSetting {
    fn kind(&self) -> ModuleKind {
        ModuleKind::CsSetting
    }

    fn describe(&self) -> String {
        let mut s = format!("setting {} = {}", self.spec.name, self.spec.value);
        if let Some((scope, id)) = &self.scope {
            s.push_str(&format!(" in {} {id}", scope.word()));
        }
        s
    }

    fn check(&self) -> Vec<Action> {
        vec![self.call("listConfigurations", None)]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let reply = one_api(results, "listConfigurations")?;
        let items = list_items(reply, "listConfigurations", "configuration")?;
        let item = items
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(self.spec.name.as_str()))
            .ok_or_else(|| ModuleError::UnknownSetting(self.spec.name.clone()))?;
        let isdynamic = item.get("isdynamic").and_then(Value::as_bool);
        Ok(json!({ "value": text_of(item.get("value")), "isdynamic": isdynamic }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let old = state_str(before, "value")?;
        if old == self.spec.value {
            return Ok(None);
        }
        let mut changes = vec![Change::new("value", old, self.spec.value.as_str())];
        if before.get("isdynamic").and_then(Value::as_bool) == Some(false) {
            changes.push(Change::new(
                "management server restart",
                "not needed",
                "required (isdynamic=false)",
            ));
        }
        Ok(Some(Diff { changes }))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        if state_str(before, "value")? == self.spec.value {
            return Ok(vec![]);
        }
        Ok(vec![
            self.call("updateConfiguration", Some(&self.spec.value))
        ])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let old = state_str(before, "value")?;
        if old == self.spec.value {
            return Ok(vec![]);
        }
        Ok(vec![self.call("updateConfiguration", Some(old))])
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        super::same_fields(before, now, &["value"])
    }
}

// ---------------------------------------------------------------------------------------------
// VLAN range arithmetic

/// An inclusive range of VLAN (VNI, GRE key) ids; displayed `start-end`, as CloudStack wants
/// even a single id (`100-100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VlanSpan {
    pub start: u64,
    pub end: u64,
}

impl VlanSpan {
    pub fn new(start: u64, end: u64) -> Self {
        VlanSpan { start, end }
    }
}

impl fmt::Display for VlanSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// The largest id any isolation method allows (GRE keys are 32-bit).
pub const MAX_VNET_ID: u64 = 4_294_967_295;

/// Parse `"100-200,300, 305 - 310"`: comma-separated `a-b` items or single ids, spaces
/// tolerated, empty items skipped. Items are returned as written, in order (not merged).
pub fn parse_spans(text: &str) -> Result<Vec<VlanSpan>, String> {
    let number = |s: &str| -> Result<u64, String> {
        let s = s.trim();
        let n: u64 = s
            .parse()
            .map_err(|_| format!("\"{}\" is not a VLAN id", printable(s)))?;
        if n > MAX_VNET_ID {
            return Err(format!("{n} is beyond {MAX_VNET_ID}"));
        }
        Ok(n)
    };
    let mut spans = Vec::new();
    for item in text.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        let span = match item.split_once('-') {
            Some((a, b)) => VlanSpan::new(number(a)?, number(b)?),
            None => {
                let n = number(item)?;
                VlanSpan::new(n, n)
            }
        };
        if span.start > span.end {
            return Err(format!("range {span} starts above its end"));
        }
        spans.push(span);
    }
    Ok(spans)
}

/// Sorted, with overlapping and adjacent spans merged: the canonical form of a set of ids.
pub fn merge_spans(spans: &[VlanSpan]) -> Vec<VlanSpan> {
    let mut sorted = spans.to_vec();
    sorted.sort();
    let mut out: Vec<VlanSpan> = Vec::with_capacity(sorted.len());
    for s in sorted {
        match out.last_mut() {
            Some(last) if s.start <= last.end.saturating_add(1) => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    out
}

/// The parts of `want` that `have` does not cover, merged and sorted.
pub fn uncovered(have: &[VlanSpan], want: &[VlanSpan]) -> Vec<VlanSpan> {
    let have = merge_spans(have);
    let mut out = Vec::new();
    for w in merge_spans(want) {
        let mut next = w.start; // first id of `w` not yet accounted for
        for h in have.iter().filter(|h| h.end >= w.start && h.start <= w.end) {
            if h.start > next {
                out.push(VlanSpan::new(next, h.start - 1));
            }
            next = next.max(h.end + 1);
        }
        if next <= w.end {
            out.push(VlanSpan::new(next, w.end));
        }
    }
    out
}

/// Whether `have` covers every id of `want`.
pub fn covers(have: &[VlanSpan], want: &[VlanSpan]) -> bool {
    uncovered(have, want).is_empty()
}

/// `a-b,c-d`, the form updatePhysicalNetwork accepts.
pub fn format_spans(spans: &[VlanSpan]) -> String {
    spans
        .iter()
        .map(VlanSpan::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The highest id the physical network's isolation method allows, and its name (the bounds the
/// management server checks in `updatePhysicalNetwork`).
fn vnet_limit(isolationmethods: &str) -> (u64, &'static str) {
    let m = isolationmethods.to_ascii_uppercase();
    if m.contains("GRE") {
        (MAX_VNET_ID, "GRE")
    } else if m.contains("VXLAN") || m.contains("NETRIS") {
        (16_777_214, "VXLAN")
    } else {
        (4095, "VLAN")
    }
}

// ---------------------------------------------------------------------------------------------
// vlan_range

/// Ensure a physical network carries every VLAN of a range (its guest VLAN range).
///
/// YAML keys:
/// - `physical_network` (required): the physical network id (uuid).
/// - `range` (required): `a-b`, a single VLAN `n`, or several, comma-separated (`100-200,300`).
///   Ids are 0-4095 with VLAN isolation (up to 16777214 for VXLAN, 4294967295 for GRE, checked
///   against the network's `isolationmethods`).
///
/// ```yaml
/// - id: guest-vlans
///   on: cloudstack
///   vlan_range: { physical_network: "{{ physnet_id }}", range: 3900-3999 }
/// ```
///
/// Check: API `listPhysicalNetworks id=ID`. `updatePhysicalNetwork`'s `vlan` is the complete
/// wanted set (the server adds new ranges and removes missing ones), so the change sends
/// `updatePhysicalNetwork id=ID vlan=...` with every existing range unchanged plus only the
/// uncovered parts of `range` (existing `100-150`, wanted `140-200` -> `100-150,151-200`);
/// nothing when already covered. Undo sends the previous value exactly, which removes the added
/// ranges; when there was none, that is an empty `vlan=` (the API has no `removevlan` parameter
/// since 4.x). The server refuses to remove a range with allocated or dedicated VLANs (error
/// 431): the undo then fails and the rollback is reported incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanRangeSpec {
    #[serde(deserialize_with = "scalar::text")]
    pub physical_network: String,
    #[serde(deserialize_with = "scalar::text")]
    pub range: String,
}

impl VlanRangeSpec {
    pub fn build(self) -> Result<VlanRange, ModuleError> {
        let kind = ModuleKind::VlanRange;
        check_api_value(kind, "physical_network", &self.physical_network)?;
        let spans = parse_spans(&self.range).map_err(|e| kind.invalid(format!("`range`: {e}")))?;
        if spans.is_empty() {
            return Err(kind.invalid("`range` must name at least one VLAN"));
        }
        Ok(VlanRange {
            want: merge_spans(&spans),
            spec: self,
        })
    }
}

/// The built `vlan_range` module.
#[derive(Debug, Clone)]
pub struct VlanRange {
    spec: VlanRangeSpec,
    /// The wanted ids, merged.
    want: Vec<VlanSpan>,
}

impl VlanRange {
    fn update(&self, vlan: &str) -> Action {
        Action::api(
            "updatePhysicalNetwork",
            [("id", self.spec.physical_network.as_str()), ("vlan", vlan)],
        )
    }

    /// The existing items of a recorded state, and the wanted ids it lacks.
    fn plan(&self, before: &Value) -> Result<(Vec<VlanSpan>, Vec<VlanSpan>), ModuleError> {
        let raw = state_str(before, "vlan")?;
        let existing = parse_spans(raw).map_err(|e| {
            ModuleError::InvalidState(format!("`vlan` \"{}\": {e}", printable(raw)))
        })?;
        let isolation = state_opt_str(before, "isolationmethods")?.unwrap_or("");
        let (limit, method) = vnet_limit(isolation);
        if let Some(top) = self.want.iter().map(|s| s.end).max().filter(|t| *t > limit) {
            return Err(ModuleError::Refused(format!(
                "VLAN {top} is beyond {limit}, the highest id for {method} isolation on physical network {}",
                self.spec.physical_network
            )));
        }
        let missing = uncovered(&existing, &self.want);
        Ok((existing, missing))
    }
}

impl Module for VlanRange {
    fn kind(&self) -> ModuleKind {
        ModuleKind::VlanRange
    }

    fn describe(&self) -> String {
        format!(
            "physical network {} carries VLANs {}",
            self.spec.physical_network,
            format_spans(&self.want)
        )
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::api(
            "listPhysicalNetworks",
            [("id", self.spec.physical_network.as_str())],
        )]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        const LIST: &str = "listPhysicalNetworks";
        let reply = one_api(results, LIST)?;
        let items = list_items(reply, LIST, "physicalnetwork")?;
        let id = self.spec.physical_network.as_str();
        let item = items
            .iter()
            .find(|n| n.get("id").and_then(Value::as_str) == Some(id))
            .ok_or_else(|| ModuleError::PhysicalNetworkNotFound(id.to_string()))?;
        let vlan = text_of(item.get("vlan"));
        if let Err(e) = parse_spans(&vlan) {
            return Err(ModuleError::UnexpectedReply {
                command: LIST.to_string(),
                detail: format!("`vlan` \"{}\": {e}", printable(&vlan)),
            });
        }
        let isolation = text_of(item.get("isolationmethods"));
        Ok(json!({ "vlan": vlan, "isolationmethods": isolation }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let (existing, missing) = self.plan(before)?;
        if missing.is_empty() {
            return Ok(None);
        }
        let raw = state_str(before, "vlan")?;
        let shown = if raw.trim().is_empty() { "(none)" } else { raw };
        Ok(Some(Diff::one(
            "vlan",
            shown,
            new_value(&existing, &missing),
        )))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let (existing, missing) = self.plan(before)?;
        if missing.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![self.update(&new_value(&existing, &missing))])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let (_, missing) = self.plan(before)?;
        if missing.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![self.update(state_str(before, "vlan")?)])
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        let (Some(b), Some(n)) = (
            before.get("vlan").and_then(Value::as_str),
            now.get("vlan").and_then(Value::as_str),
        ) else {
            return false;
        };
        // the server rewrites the value merged and sorted; compare the sets of ids
        match (parse_spans(b), parse_spans(n)) {
            (Ok(b), Ok(n)) => merge_spans(&b) == merge_spans(&n),
            _ => b == n,
        }
    }
}

/// The value to send: the existing items as they are plus the missing spans, ordered by start.
fn new_value(existing: &[VlanSpan], missing: &[VlanSpan]) -> String {
    let mut items: Vec<VlanSpan> = existing.iter().chain(missing).copied().collect();
    items.sort();
    format_spans(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil::{api, ok};
    use crate::transport::ApiCall;

    fn spans(s: &str) -> Vec<VlanSpan> {
        parse_spans(s).unwrap()
    }

    fn call(a: &Action) -> &ApiCall {
        match a {
            Action::Api(c) => c,
            other => panic!("not an API call: {other:?}"),
        }
    }

    fn args(a: &Action) -> Vec<(String, String)> {
        call(a).args.clone().into_iter().collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // ---- VLAN arithmetic ----

    #[test]
    fn parse_is_tolerant_of_spaces_and_single_ids() {
        let v = |a, b| VlanSpan::new(a, b);
        assert_eq!(spans("100-200"), [v(100, 200)]);
        assert_eq!(
            spans(" 100 - 200 , 300,,305-310, "),
            [v(100, 200), v(300, 300), v(305, 310)]
        );
        assert_eq!(spans("0-4095"), [v(0, 4095)]);
        assert_eq!(spans(""), []);
        assert_eq!(spans("  "), []);
        assert_eq!(spans("7"), [v(7, 7)]);
        assert_eq!(spans("4294967295"), [v(MAX_VNET_ID, MAX_VNET_ID)]);
    }

    #[test]
    fn parse_refuses_garbage() {
        for bad in [
            "200-100",
            "a-b",
            "100-",
            "-5",
            "1-2-3",
            "10 0",
            "4294967296",
            "100;reboot",
            "0x10",
        ] {
            assert!(parse_spans(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn merge_sorts_and_joins_overlapping_and_adjacent() {
        assert_eq!(
            format_spans(&merge_spans(&spans("300-400,100-150,151-200,120-130"))),
            "100-200,300-400"
        );
        assert_eq!(format_spans(&merge_spans(&spans("5,5,6"))), "5-6");
        assert_eq!(format_spans(&merge_spans(&spans("1-10,12"))), "1-10,12-12");
        assert_eq!(merge_spans(&[]), []);
        let top = spans("4294967290-4294967295,4294967295");
        assert_eq!(merge_spans(&top), [VlanSpan::new(4294967290, MAX_VNET_ID)]);
    }

    #[test]
    fn uncovered_parts() {
        let u = |have: &str, want: &str| format_spans(&uncovered(&spans(have), &spans(want)));
        assert_eq!(u("100-150", "140-200"), "151-200");
        assert_eq!(u("100-150", "100-150"), "");
        assert_eq!(u("100-150", "120"), "");
        assert_eq!(u("", "100-200"), "100-200");
        assert_eq!(u("100-150", "50-120"), "50-99");
        assert_eq!(u("100-110,120-130", "90-140"), "90-99,111-119,131-140");
        assert_eq!(u("100-110,111-130", "100-130"), "");
        assert_eq!(u("0-4095", "4095"), "");
        assert_eq!(u("10-20", "1-5,30-40"), "1-5,30-40");
        assert_eq!(
            u("4294967295", "4294967290-4294967295"),
            "4294967290-4294967294"
        );
        assert!(covers(&spans("1-100"), &spans("5,50-60")));
        assert!(!covers(&spans("1-100"), &spans("100-101")));
    }

    // ---- vlan_range ----

    fn vr(range: &str) -> VlanRange {
        VlanRangeSpec {
            physical_network: "9e1c-pn".into(),
            range: range.into(),
        }
        .build()
        .unwrap()
    }

    fn pn(vlan: Option<&str>) -> Value {
        let mut item = json!({"id": "9e1c-pn", "name": "guest", "zoneid": "z1", "state": "Enabled", "isolationmethods": "VLAN"});
        if let Some(v) = vlan {
            item["vlan"] = json!(v);
        }
        json!({"count": 1, "physicalnetwork": [item]})
    }

    fn state(vlan: &str) -> Value {
        json!({"vlan": vlan, "isolationmethods": "VLAN"})
    }

    #[test]
    fn vlan_check_and_observe() {
        let m = vr("140-200");
        assert_eq!(call(&m.check()[0]).command, "listPhysicalNetworks");
        assert_eq!(args(&m.check()[0]), kv(&[("id", "9e1c-pn")]));
        assert_eq!(
            m.describe(),
            "physical network 9e1c-pn carries VLANs 140-200"
        );
        assert_eq!(
            m.observe(&[api(pn(Some("100-150")))]).unwrap(),
            state("100-150")
        );
        assert_eq!(m.observe(&[api(pn(None))]).unwrap(), state(""));
        let err = m.observe(&[api(json!({}))]).unwrap_err();
        assert_eq!(err.to_string(), "physical network 9e1c-pn not found");
        let other = json!({"count": 1, "physicalnetwork": [{"id": "other", "vlan": "1-2"}]});
        assert!(matches!(
            m.observe(&[api(other)]),
            Err(ModuleError::PhysicalNetworkNotFound(_))
        ));
        for bad in [
            json!([]),
            json!({"physicalnetwork": {"id": "9e1c-pn"}}),
            pn(Some("100-50")),
        ] {
            assert!(
                matches!(
                    m.observe(&[api(bad.clone())]),
                    Err(ModuleError::UnexpectedReply { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            m.observe(&[ok("x")]),
            Err(ModuleError::UnexpectedReply { .. })
        ));
    }

    #[test]
    fn vlan_extends_with_only_the_uncovered_part() {
        let m = vr("140-200");
        let before = state("100-150");
        assert_eq!(
            m.diff(&before).unwrap().unwrap().to_string(),
            "vlan: 100-150 -> 100-150,151-200"
        );
        let change = m.change(&before).unwrap();
        assert_eq!(call(&change[0]).command, "updatePhysicalNetwork");
        assert_eq!(
            args(&change[0]),
            kv(&[("id", "9e1c-pn"), ("vlan", "100-150,151-200")])
        );
        let undo = m.undo(&before).unwrap();
        assert_eq!(
            args(&undo[0]),
            kv(&[("id", "9e1c-pn"), ("vlan", "100-150")])
        );
        // existing items are kept as they are, new ones slot in by start
        let m = vr("50-99,300");
        let before = state("100-150,200-250");
        assert_eq!(
            args(&m.change(&before).unwrap()[0])[1].1,
            "50-99,100-150,200-250,300-300"
        );
    }

    #[test]
    fn vlan_covered_has_no_diff() {
        for (have, want) in [
            ("100-150", "120-130"),
            ("100-150,151-200", "140-200"),
            ("3900-3999", "3933"),
        ] {
            let m = vr(want);
            assert_eq!(m.diff(&state(have)).unwrap(), None, "{have} {want}");
            assert!(m.change(&state(have)).unwrap().is_empty());
            assert!(m.undo(&state(have)).unwrap().is_empty());
        }
    }

    #[test]
    fn vlan_from_nothing_and_its_undo() {
        let m = vr("3933");
        let before = state("");
        assert_eq!(
            m.diff(&before).unwrap().unwrap().to_string(),
            "vlan: (none) -> 3933-3933"
        );
        assert_eq!(
            args(&m.change(&before).unwrap()[0]),
            kv(&[("id", "9e1c-pn"), ("vlan", "3933-3933")])
        );
        // no removevlan parameter: the whole (empty) set is sent
        assert_eq!(
            args(&m.undo(&before).unwrap()[0]),
            kv(&[("id", "9e1c-pn"), ("vlan", "")])
        );
    }

    #[test]
    fn vlan_limit_follows_the_isolation_method() {
        let m = vr("4000-4100");
        let err = m.diff(&state("")).unwrap_err().to_string();
        assert_eq!(
            err,
            "VLAN 4100 is beyond 4095, the highest id for VLAN isolation on physical network 9e1c-pn"
        );
        assert!(m.change(&state("")).is_err());
        let vxlan = json!({"vlan": "5000-6000", "isolationmethods": "VXLAN"});
        assert!(m.diff(&vxlan).unwrap().is_some());
        let vxlan_big = vr("16777215");
        assert!(vxlan_big.diff(&vxlan).is_err());
        let gre = json!({"vlan": "", "isolationmethods": "GRE"});
        assert!(vxlan_big.diff(&gre).unwrap().is_some());
    }

    #[test]
    fn vlan_round_trip_against_a_server_model() {
        // the server keeps a set of ids and reports it merged and sorted
        fn server(value: &str) -> String {
            format_spans(&merge_spans(&spans(value)))
        }
        for (have, want) in [
            ("", "100-200"),
            ("100-150", "140-200"),
            ("100-110,120-130", "90-140"),
            ("1-5", "3"),
        ] {
            let m = vr(want);
            let before = m.observe(&[api(pn(Some(have)))]).unwrap();
            let mut reported = have.to_string();
            for a in m.change(&before).unwrap() {
                reported = server(&call(&a).args["vlan"]);
            }
            let after = m.observe(&[api(pn(Some(&reported)))]).unwrap();
            assert_eq!(
                m.diff(&after).unwrap(),
                None,
                "{have} + {want} -> {reported}"
            );
            for a in m.undo(&before).unwrap() {
                reported = server(&call(&a).args["vlan"]);
            }
            let now = m.observe(&[api(pn(Some(&reported)))]).unwrap();
            assert!(m.restored(&before, &now), "{before} -> {now}");
        }
        let m = vr("1");
        assert!(m.restored(&state("100-150,151-200"), &state("100-200")));
        assert!(!m.restored(&state("100-150"), &state("100-200")));
    }

    #[test]
    fn vlan_spec_validation_and_yaml() {
        let bad = |pnet: &str, range: &str| {
            VlanRangeSpec {
                physical_network: pnet.into(),
                range: range.into(),
            }
            .build()
        };
        assert!(bad("pn", "").is_err());
        assert!(bad("pn", "200-100").is_err());
        assert!(bad("pn", "1-2; reboot").is_err());
        assert!(bad("", "100").is_err());
        let s: VlanRangeSpec =
            serde_yaml::from_str("{ physical_network: 12, range: 3933 }").unwrap();
        assert_eq!(
            (s.physical_network.as_str(), s.range.as_str()),
            ("12", "3933")
        );
    }

    // ---- cs_setting ----

    fn setting(value: &str) -> CsSetting {
        CsSettingSpec {
            name: "network.gc.interval".into(),
            value: value.into(),
            scope: None,
            scope_id: None,
        }
        .build()
        .unwrap()
    }

    fn configs(items: Value) -> Value {
        json!({"count": items.as_array().map_or(0, Vec::len), "configuration": items})
    }

    #[test]
    fn setting_check_and_observe_picks_the_exact_name() {
        let m = setting("600");
        assert_eq!(call(&m.check()[0]).command, "listConfigurations");
        assert_eq!(args(&m.check()[0]), kv(&[("name", "network.gc.interval")]));
        assert_eq!(m.describe(), "setting network.gc.interval = 600");
        let reply = configs(json!([
            {"name": "network.gc.interval.extra", "value": "1", "isdynamic": true},
            {"category": "Advanced", "name": "network.gc.interval", "value": "300", "defaultvalue": "600", "isdynamic": false, "scope": "global"},
        ]));
        assert_eq!(
            m.observe(&[api(reply)]).unwrap(),
            json!({"value": "300", "isdynamic": false})
        );
        let no_value = configs(json!([{"name": "network.gc.interval"}]));
        assert_eq!(
            m.observe(&[api(no_value)]).unwrap(),
            json!({"value": "", "isdynamic": null})
        );
    }

    #[test]
    fn setting_unknown_and_garbage() {
        let m = setting("600");
        assert_eq!(
            m.observe(&[api(json!({}))]).unwrap_err().to_string(),
            "unknown setting network.gc.interval"
        );
        let near = configs(json!([{"name": "network.gc.interval.extra", "value": "1"}]));
        assert!(matches!(
            m.observe(&[api(near)]),
            Err(ModuleError::UnknownSetting(_))
        ));
        assert!(matches!(
            m.observe(&[api(json!("x"))]),
            Err(ModuleError::UnexpectedReply { .. })
        ));
        assert!(matches!(
            m.observe(&[api(json!({"configuration": 3}))]),
            Err(ModuleError::UnexpectedReply { .. })
        ));
        assert!(matches!(
            m.observe(&[]),
            Err(ModuleError::ResultCount { .. })
        ));
    }

    #[test]
    fn setting_diff_change_undo() {
        let m = setting("600");
        let before = json!({"value": "300", "isdynamic": true});
        assert_eq!(
            m.diff(&before).unwrap().unwrap().to_string(),
            "value: 300 -> 600"
        );
        assert_eq!(
            args(&m.change(&before).unwrap()[0]),
            kv(&[("name", "network.gc.interval"), ("value", "600")])
        );
        let undo = m.undo(&before).unwrap();
        assert_eq!(call(&undo[0]).command, "updateConfiguration");
        assert_eq!(
            args(&undo[0]),
            kv(&[("name", "network.gc.interval"), ("value", "300")])
        );
        let in_sync = json!({"value": "600", "isdynamic": true});
        assert_eq!(m.diff(&in_sync).unwrap(), None);
        assert!(m.change(&in_sync).unwrap().is_empty());
        assert!(m.undo(&in_sync).unwrap().is_empty());
        assert!(m.restored(&before, &json!({"value": "300", "isdynamic": true})));
        assert!(!m.restored(&before, &in_sync));
    }

    #[test]
    fn setting_non_dynamic_says_a_restart_is_needed() {
        let m = setting("600");
        let d = m
            .diff(&json!({"value": "300", "isdynamic": false}))
            .unwrap()
            .unwrap();
        assert_eq!(
            d.to_string(),
            "value: 300 -> 600\nmanagement server restart: not needed -> required (isdynamic=false)"
        );
    }

    #[test]
    fn setting_scopes() {
        let m = CsSettingSpec {
            name: "vm.network.throttling.rate".into(),
            value: "200".into(),
            scope: Some(SettingScope::Zone),
            scope_id: Some("7f0c-zone".into()),
        }
        .build()
        .unwrap();
        assert_eq!(
            m.describe(),
            "setting vm.network.throttling.rate = 200 in zone 7f0c-zone"
        );
        assert_eq!(
            args(&m.check()[0]),
            kv(&[
                ("name", "vm.network.throttling.rate"),
                ("zoneid", "7f0c-zone")
            ])
        );
        let before = json!({"value": "", "isdynamic": true});
        assert_eq!(
            args(&m.undo(&before).unwrap()[0]),
            kv(&[
                ("name", "vm.network.throttling.rate"),
                ("value", ""),
                ("zoneid", "7f0c-zone")
            ])
        );
        let params: Vec<_> = [
            SettingScope::Zone,
            SettingScope::Cluster,
            SettingScope::Account,
            SettingScope::Domain,
            SettingScope::Storage,
            SettingScope::Imagestore,
        ]
        .iter()
        .map(|s| s.id_param())
        .collect();
        assert_eq!(
            params,
            [
                "zoneid",
                "clusterid",
                "accountid",
                "domainid",
                "storageid",
                "imagestoreuuid"
            ]
        );
        let half = |scope, scope_id: Option<&str>| {
            CsSettingSpec {
                name: "x".into(),
                value: "1".into(),
                scope,
                scope_id: scope_id.map(Into::into),
            }
            .build()
        };
        assert!(half(Some(SettingScope::Zone), None).is_err());
        assert!(half(None, Some("z")).is_err());
        assert!(half(Some(SettingScope::Zone), Some("")).is_err());
    }

    #[test]
    fn setting_values_pass_verbatim_as_api_arguments() {
        // API arguments are signed and URL-encoded by the transport, never interpreted by a shell
        let m = setting("x; rm -rf / $(reboot)");
        let before = json!({"value": "1", "isdynamic": true});
        assert_eq!(
            args(&m.change(&before).unwrap()[0])[1].1,
            "x; rm -rf / $(reboot)"
        );
        let s: CsSettingSpec = serde_yaml::from_str("{ name: a.b, value: 20 }").unwrap();
        assert_eq!(s.value, "20");
        let s: CsSettingSpec = serde_yaml::from_str("{ name: a.b, value: true }").unwrap();
        assert_eq!(s.value, "true");
        let err = serde_yaml::from_str::<CsSettingSpec>("{ name: a.b, value: 1, scope: region }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `region`"), "{err}");
    }
}
