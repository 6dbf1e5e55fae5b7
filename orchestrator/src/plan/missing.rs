//! Why steps have no targets: one diagnostic per cause, however many steps share it.
//!
//! Owned here: turning the host-pattern failures of a plan's steps into diagnostics. Steps
//! whose patterns fail the same way (the same unknown group, say) make one error that names
//! them all and points at the first; with no inventory given at all, every step that runs on
//! hosts makes one error saying so. Groups that the CloudStack inventory source makes from API
//! names (`vpc_web_vpc`) are explained in CloudStack's words, from the API objects the
//! generated hosts carry in `cs`. Not here: choosing targets (the parent module), the naming
//! rule itself (`inventory::dynamic::group_name`).

use std::collections::BTreeMap;

use serde_json::Value as J;

use super::{diag_at_loc, Program};
use crate::error::{did_you_mean, similar, Diagnostic};
use crate::inventory::dynamic::group_name;
use crate::inventory::{Inventory, PatternError};

/// The fix for a missing inventory, as the error says it.
pub const NO_INVENTORY: &str = "no inventory given (pass -i or set REMEDY_INVENTORY)";

/// How many API names an error lists before "and N more".
const MAX_LISTED: usize = 10;

/// A group the CloudStack inventory source makes from one field of an API object.
struct ApiGroup {
    /// The group name's prefix (`group_name(prefix, value)`).
    prefix: &'static str,
    /// What is missing, before the value: `VPC named`.
    what: &'static str,
    /// The API object, for a group written by name: `VPC`.
    noun: &'static str,
    /// The list's title: `VPCs`.
    plural: &'static str,
    /// The field of the API object (`cs.<field>` on each generated host).
    field: &'static str,
    /// Where it was looked for.
    within: &'static str,
}

/// The generated groups named after API objects (see `cloudstack::inventory::generate`).
const API_GROUPS: [ApiGroup; 5] = [
    ApiGroup {
        prefix: "vpc_",
        noun: "VPC",
        what: "VPC named",
        plural: "VPCs",
        field: "vpcname",
        within: " in the zone",
    },
    ApiGroup {
        prefix: "zone_",
        noun: "zone",
        what: "zone named",
        plural: "zones",
        field: "zonename",
        within: "",
    },
    ApiGroup {
        prefix: "pod_",
        noun: "pod",
        what: "pod named",
        plural: "pods",
        field: "podname",
        within: " in the zone",
    },
    ApiGroup {
        prefix: "cluster_",
        noun: "cluster",
        what: "cluster named",
        plural: "clusters",
        field: "clustername",
        within: " in the zone",
    },
    ApiGroup {
        prefix: "redundant_",
        noun: "redundant state",
        what: "router in redundant state",
        plural: "states",
        field: "redundantstate",
        within: " in the zone",
    },
];

/// Whether `inventory` is the empty one used when no inventory was given (no file read, no
/// hosts from the API).
pub fn no_inventory_given(inventory: &Inventory) -> bool {
    inventory.sources().is_empty() && !inventory.has_generated_hosts()
}

/// The one error for steps that run on hosts when no inventory was given.
pub fn no_inventory(program: &Program, steps: &[usize], patterns: &[String]) -> Diagnostic {
    let first = &program.steps[steps[0]];
    let loc = first
        .on
        .as_ref()
        .map(|t| t.loc.clone())
        .unwrap_or(first.loc.clone());
    let quoted: Vec<String> = patterns.iter().map(|p| format!("{p:?}")).collect();
    diag_at_loc(
        program,
        first.scope,
        &loc,
        format!(
            "{NO_INVENTORY}: {} on {}",
            who_run(program, steps),
            quoted.join(", ")
        ),
    )
    .with_label("needs hosts from an inventory")
    .with_help(
        "only steps on the controller (API calls, steps without `on:`) run without an inventory",
    )
}

/// One error per distinct pattern failure among `failures` (step index, error), each naming
/// every step that failed that way and pointing at the first of them. `values` are the plan's
/// values per scope: they tell which parameter a generated group name came from.
pub fn unknown_targets(
    program: &Program,
    inventory: &Inventory,
    values: &[BTreeMap<String, J>],
    failures: Vec<(usize, PatternError)>,
) -> Vec<Diagnostic> {
    let mut causes: Vec<(PatternError, Vec<usize>)> = Vec::new();
    for (step, e) in failures {
        match causes.iter_mut().find(|(seen, _)| *seen == e) {
            Some((_, steps)) => steps.push(step),
            None => causes.push((e, vec![step])),
        }
    }
    causes
        .into_iter()
        .map(|(e, steps)| one_cause(program, inventory, values, &e, &steps))
        .collect()
}

fn one_cause(
    program: &Program,
    inventory: &Inventory,
    values: &[BTreeMap<String, J>],
    e: &PatternError,
    steps: &[usize],
) -> Diagnostic {
    let first = &program.steps[steps[0]];
    let loc = first
        .on
        .as_ref()
        .map(|t| t.loc.clone())
        .unwrap_or(first.loc.clone());
    let who = who(program, steps);
    let api = match e {
        PatternError::UnknownName { name, .. } if inventory.has_generated_hosts() => {
            api_words(program, inventory, values, name)
        }
        _ => None,
    };
    match api {
        Some((cause, help)) => {
            let d = diag_at_loc(program, first.scope, &loc, format!("{who}: {cause}"))
                .with_label("no such group in the inventory");
            match help {
                Some(h) => d.with_help(h),
                None => d,
            }
        }
        None => diag_at_loc(program, first.scope, &loc, format!("{who}: {e}"))
            .with_label("not in the inventory"),
    }
}

/// `step a`, `2 steps (a, b)`.
pub(super) fn who(program: &Program, steps: &[usize]) -> String {
    match steps {
        [one] => format!("step {}", program.steps[*one].id),
        _ => format!("{} steps ({})", steps.len(), ids(program, steps)),
    }
}

/// `step a runs`, `2 steps (a, b) run`.
fn who_run(program: &Program, steps: &[usize]) -> String {
    let verb = if steps.len() == 1 { "runs" } else { "run" };
    format!("{} {verb}", who(program, steps))
}

fn ids(program: &Program, steps: &[usize]) -> String {
    steps
        .iter()
        .map(|&i| program.steps[i].id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// For a group the CloudStack source would make from an API name: the cause in CloudStack's
/// words (`no VPC named "nope" in the zone (VPCs: web-vpc)`) and, when it helps, a hint.
fn api_words(
    program: &Program,
    inventory: &Inventory,
    values: &[BTreeMap<String, J>],
    group: &str,
) -> Option<(String, Option<String>)> {
    let kind = API_GROUPS.iter().find(|k| group.starts_with(k.prefix))?;
    let names = api_names(inventory, kind.field);
    let listed = listing(&names);
    let source = value_behind(program, values, kind.prefix, group);
    let Some((param, value)) = source else {
        // Written as a group name: compare it with the groups the names would make.
        let groups: Vec<String> = names.iter().map(|n| group_name(kind.prefix, n)).collect();
        let cause = format!(
            "group {group:?} names no {}{} ({}: {listed})",
            kind.noun, kind.within, kind.plural
        );
        let help = did_you_mean(&similar(group, groups.iter().map(String::as_str)));
        return Some((cause, help));
    };
    let cause = format!(
        "no {} {value:?}{} ({}: {listed})",
        kind.what, kind.within, kind.plural
    );
    let suggestions = similar(&value, names.iter().map(String::as_str));
    let help = match (param, did_you_mean(&suggestions)) {
        (Some(p), Some(hint)) => Some(format!(
            "{hint} (pass -e {})",
            shell_word(&format!("{p}={}", suggestions[0]))
        )),
        (Some(p), None) => Some(format!(
            "pass -e {p}=NAME with one of the {} listed",
            kind.plural
        )),
        (None, hint) => hint,
    };
    Some((cause, help))
}

/// The distinct values of `cs.<field>` over the generated hosts, sorted.
fn api_names(inventory: &Inventory, field: &str) -> Vec<String> {
    let mut names: Vec<String> = inventory
        .hosts()
        .filter_map(|h| h.vars.get("cs")?.get(field)?.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `a, b, c`, `a, ..., j and 5 more`, or `none`.
fn listing(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let shown = names[..names.len().min(MAX_LISTED)].join(", ");
    match names.len().saturating_sub(MAX_LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// The parameter or var value that `group` was made from (`group_name(prefix, value)`), and
/// the name of the root parameter holding it (given with `-e`), when one does.
fn value_behind(
    program: &Program,
    values: &[BTreeMap<String, J>],
    prefix: &str,
    group: &str,
) -> Option<(Option<String>, String)> {
    let mut found = None;
    for (si, scope) in values.iter().enumerate() {
        for (name, v) in scope {
            let Some(text) = v.as_str() else { continue };
            if text.is_empty() || group_name(prefix, text) != group {
                continue;
            }
            let root_param = si == 0 && program.scopes[0].params.contains_key(name);
            if root_param {
                return Some((Some(name.clone()), text.to_string()));
            }
            found.get_or_insert((None, text.to_string()));
        }
    }
    found
}

/// `word` as typed in a shell: as is when it is plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,=:/@%+".contains(c);
    if word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::program;
    use crate::plan::{build, Options};

    /// The zone as the CloudStack source generates it: two routers of VPC `web-vpc`.
    fn zone() -> Inventory {
        let yaml = "all:\n  children:\n    routers:\n      hosts:\n        \
                    r-1-VM: { cs: { vpcname: web-vpc, zonename: zone1 } }\n        \
                    r-2-VM: { cs: { vpcname: web-vpc, zonename: zone1 } }\n    \
                    vpc_web_vpc:\n      hosts: { r-1-VM: {}, r-2-VM: {} }\n    \
                    zone_zone1:\n      hosts: { r-1-VM: {}, r-2-VM: {} }\n";
        Inventory::load_with_generated(&[], Some(yaml)).expect("loads")
    }

    fn opts(extra: &[(&str, &str)]) -> Options {
        Options {
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Options::default()
        }
    }

    fn errors(text: &str, inventory: Inventory, extra: &[(&str, &str)]) -> Vec<Diagnostic> {
        match build(program(text), inventory, &opts(extra)) {
            Ok(p) => panic!("plans without error: {:?}", (&p.targets, &p.bindings)),
            Err(d) => d.0,
        }
    }

    const VPC: &str = "name: t
params:
  vpc: { required: true }
vars:
  group: \"{{ vpc | group_name('vpc') }}\"
detect:
  - id: vpcs
    api: { command: listVPCs }
  - id: conf
    on: \"{{ group }}\"
    ssh: cat /etc/keepalived/keepalived.conf
    changes: none
steps:
  - id: restart
    on: \"{{ group }}\"
    ssh: systemctl restart keepalived
    no_rollback: a restart leaves nothing to undo
verify:
  - id: state
    on: \"{{ group }}\"
    ssh: checkrouter.sh
    changes: none
";

    #[test]
    fn no_inventory_is_one_error_with_the_fix() {
        let e = errors(VPC, Inventory::empty(), &[("vpc", "web-vpc")]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].headline(),
            "t.yml:10:9: no inventory given (pass -i or set REMEDY_INVENTORY): 3 steps \
             (conf, restart, state) run on \"vpc_web_vpc\""
        );
        let limited = Options {
            limit: Some("routers".into()),
            ..opts(&[("vpc", "web-vpc")])
        };
        let e = build(program(VPC), Inventory::empty(), &limited)
            .unwrap_err()
            .0;
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].message,
            "no inventory given (pass -i or set REMEDY_INVENTORY): --limit routers names hosts of one"
        );
    }

    #[test]
    fn no_inventory_is_fine_for_the_controller_and_localhost() {
        let text = "name: t
steps:
  - id: zones
    api: { command: listZones }
  - id: here
    on: localhost
    ssh: uptime
    changes: none
";
        let plan = build(program(text), Inventory::empty(), &Options::default())
            .expect("plans without an inventory");
        assert_eq!(plan.targets, [vec!["localhost"], vec!["localhost"]]);
        // `all` of no inventory selects nothing: that needs one too.
        let all = text.replace("on: localhost", "on: all");
        let e = errors(&all, Inventory::empty(), &[]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].message,
            format!("{NO_INVENTORY}: step here runs on \"all\"")
        );
    }

    #[test]
    fn an_unknown_vpc_is_one_error_in_cloudstack_words() {
        let e = errors(VPC, zone(), &[("vpc", "nope")]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].headline(),
            "t.yml:10:9: 3 steps (conf, restart, state): no VPC named \"nope\" in the zone \
             (VPCs: web-vpc)"
        );
        assert_eq!(
            e[0].help.as_deref(),
            Some("pass -e vpc=NAME with one of the VPCs listed")
        );
        let e = errors(VPC, zone(), &[("vpc", "web-vcp")]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].help.as_deref(),
            Some("did you mean \"web-vpc\"? (pass -e vpc=web-vpc)")
        );
    }

    #[test]
    fn a_generated_group_written_by_name_is_compared_with_the_groups() {
        let text = "name: t
steps:
  - id: a
    on: zone_zone2
    ssh: uptime
    changes: none
";
        let e = errors(text, zone(), &[]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].message,
            "step a: group \"zone_zone2\" names no zone (zones: zone1)"
        );
        assert_eq!(e[0].help.as_deref(), Some("did you mean \"zone_zone1\"?"));
    }

    #[test]
    fn an_unknown_group_used_by_many_steps_is_one_error_with_suggestions() {
        let text = "name: t
detect:
  - id: a
    on: rooters
    ssh: uptime
    changes: none
steps:
  - id: b
    on: rooters
    ssh: uptime
    changes: none
  - id: c
    on: r-1-VM
    ssh: uptime
    changes: none
  - id: d
    on: \"routers:nope\"
    ssh: uptime
    changes: none
";
        let e = errors(text, zone(), &[]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0].headline(),
            "t.yml:4:9: 2 steps (a, b): unknown host or group \"rooters\"; did you mean \
             \"routers\"? (inventory has groups: routers, vpc_web_vpc, zone_zone1)"
        );
        assert_eq!(
            e[1].headline(),
            "t.yml:17:9: step d: unknown host or group \"nope\" (inventory has groups: routers, \
             vpc_web_vpc, zone_zone1)"
        );
    }

    #[test]
    fn helpers_list_and_quote() {
        let names: Vec<String> = (1..=12).map(|i| format!("v{i}")).collect();
        assert_eq!(
            listing(&names),
            "v1, v2, v3, v4, v5, v6, v7, v8, v9, v10 and 2 more"
        );
        assert_eq!(listing(&[]), "none");
        assert_eq!(shell_word("vpc=web-vpc"), "vpc=web-vpc");
        assert_eq!(shell_word("vpc=VPC Prod"), "'vpc=VPC Prod'");
        assert_eq!(shell_word("vpc=it's"), r"'vpc=it'\''s'");
    }
}
