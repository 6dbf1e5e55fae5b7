//! `route`: one IPv4 route of one routing table, through iproute2.
//!
//! Owns the `ip route show table T` probe and its parsing (the route whose destination is
//! `dest`: its next hop and device), and `ip route replace|del` with its undo.
//! Not here: metrics, `src`, `proto`, multipath routes and IPv6. The module manages a route's
//! destination, next hop (`via`) and device (`dev`); an undo that puts back an earlier route
//! restores those three, not its other attributes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_name, one_ssh, same_fields, sh, state_bool, state_opt_str, summarize};
use super::{Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult};

/// Ensure a route is present (with a next hop and device) or absent in a routing table.
///
/// YAML keys:
/// - `dest` (required): `default` or an IPv4 prefix (`10.1.0.0/16`; a `/32` is shown as the
///   bare address, as `ip route` prints it).
/// - `via`: the next hop's address; none for a route straight onto a link.
/// - `dev`: the device; required when `state: present`.
/// - `table`: the routing table, a number or a name from `/etc/iproute2/rt_tables`; default
///   `main`.
/// - `state`: `present` (default) | `absent`.
///
/// ```yaml
/// - id: default_route
///   on: "{{ router }}"
///   route: { dest: default, via: 10.1.1.1, dev: eth2, table: "2" }
/// ```
///
/// Check: `ip route show table T` (a table with no routes, which the kernel reports as
/// missing, reads as "no route"). Change: `ip route replace DEST [via V] dev D table T`, or
/// `ip route del DEST table T`. Undo: the route as it was (`replace` with its old next hop and
/// device), or `del` of the one added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default = "main_table")]
    pub table: String,
    #[serde(default)]
    pub state: RouteState,
}

fn main_table() -> String {
    "main".into()
}

/// Whether the route should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    #[default]
    Present,
    Absent,
}

impl RouteSpec {
    pub fn build(mut self) -> Result<Route, ModuleError> {
        let invalid = |m: String| ModuleKind::Route.invalid(m);
        self.dest = normal_dest(&self.dest).ok_or_else(|| {
            invalid(format!(
                "dest {:?} is neither `default` nor an IPv4 prefix (a.b.c.d/n)",
                self.dest
            ))
        })?;
        if let Some(v) = &self.via {
            if v.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(invalid(format!("via {v:?} is not an IPv4 address")));
            }
        }
        if let Some(d) = &self.dev {
            check_name(ModuleKind::Route, "dev", d)?;
        }
        check_name(ModuleKind::Route, "table", &self.table)?;
        if self.state == RouteState::Present && self.dev.is_none() {
            return Err(invalid("a present route needs `dev`".into()));
        }
        if self.state == RouteState::Absent && (self.via.is_some() || self.dev.is_some()) {
            return Err(invalid(
                "an absent route takes only dest and table (any route to dest is removed)".into(),
            ));
        }
        let check_cmd = sh(&["ip", "route", "show", "table", &self.table])?;
        Ok(Route {
            spec: self,
            check_cmd,
        })
    }
}

/// `default`, or an IPv4 prefix as `ip route` prints it (`/32` dropped).
fn normal_dest(dest: &str) -> Option<String> {
    if dest == "default" {
        return Some(dest.into());
    }
    let (ip, len) = match dest.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u8>().ok().filter(|l| *l <= 32)?),
        None => (dest, 32),
    };
    ip.parse::<std::net::Ipv4Addr>().ok()?;
    Some(if len == 32 {
        ip.to_string()
    } else {
        format!("{ip}/{len}")
    })
}

/// The built `route` module.
#[derive(Debug, Clone)]
pub struct Route {
    spec: RouteSpec,
    check_cmd: String,
}

/// The next hop and device of the route to `dest` in `ip route show` output, if there is one.
fn find_route(stdout: &str, dest: &str) -> Option<(Option<String>, Option<String>)> {
    stdout.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        // `unicast`, `local`... may precede the prefix; only plain routes are ours
        if words.next()? != dest {
            return None;
        }
        let words: Vec<&str> = words.collect();
        let after = |key: &str| {
            words
                .windows(2)
                .find(|w| w[0] == key)
                .map(|w| w[1].to_string())
        };
        Some((after("via"), after("dev")))
    })
}

impl Route {
    /// `ip route replace DEST [via V] dev D table T`.
    fn replace(&self, via: Option<&str>, dev: &str) -> Result<Action, ModuleError> {
        let mut argv = vec!["ip", "route", "replace", &self.spec.dest];
        if let Some(v) = via {
            argv.extend(["via", v]);
        }
        argv.extend(["dev", dev, "table", &self.spec.table]);
        Ok(Action::ssh(sh(&argv)?))
    }

    /// `ip route del DEST [via V] [dev D] table T`.
    fn del(&self, via: Option<&str>, dev: Option<&str>) -> Result<Action, ModuleError> {
        let mut argv = vec!["ip", "route", "del", &self.spec.dest];
        if let Some(v) = via {
            argv.extend(["via", v]);
        }
        if let Some(d) = dev {
            argv.extend(["dev", d]);
        }
        argv.extend(["table", &self.spec.table]);
        Ok(Action::ssh(sh(&argv)?))
    }

    fn words(state: &Value) -> Result<String, ModuleError> {
        if !state_bool(state, "present")? {
            return Ok("none".into());
        }
        let mut s = String::new();
        if let Some(v) = state_opt_str(state, "via")? {
            s.push_str(&format!("via {v} "));
        }
        s.push_str(&format!(
            "dev {}",
            state_opt_str(state, "dev")?.unwrap_or("?")
        ));
        Ok(s)
    }

    fn wanted(&self) -> Value {
        match self.spec.state {
            RouteState::Present => {
                json!({"present": true, "via": self.spec.via, "dev": self.spec.dev})
            }
            RouteState::Absent => json!({"present": false, "via": null, "dev": null}),
        }
    }
}

impl Module for Route {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Route
    }

    fn describe(&self) -> String {
        let w = Route::words(&self.wanted()).unwrap_or_default();
        format!(
            "route {} table {}: {}",
            self.spec.dest,
            self.spec.table,
            if self.spec.state == RouteState::Absent {
                "absent".to_string()
            } else {
                w
            }
        )
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::ssh(self.check_cmd.clone())]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let out = one_ssh(results, &self.check_cmd)?;
        if out.rc != Some(0) {
            // The kernel reports a table without routes as missing.
            if out.rc == Some(2) && out.stderr.contains("FIB table does not exist") {
                return Ok(json!({"present": false, "via": null, "dev": null}));
            }
            return Err(ModuleError::UnexpectedOutput {
                cmd: self.check_cmd.clone(),
                detail: summarize(out),
            });
        }
        Ok(match find_route(&out.stdout, &self.spec.dest) {
            Some((via, dev)) => json!({"present": true, "via": via, "dev": dev}),
            None => json!({"present": false, "via": null, "dev": null}),
        })
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let was = Route::words(before)?;
        let want = self.wanted();
        if self.restored(&want, before) {
            return Ok(None);
        }
        Ok(Some(Diff::one(
            format!("route {} table {}", self.spec.dest, self.spec.table),
            was,
            Route::words(&want)?,
        )))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        if self.diff(before)?.is_none() {
            return Ok(vec![]);
        }
        Ok(vec![match self.spec.state {
            RouteState::Present => self.replace(
                self.spec.via.as_deref(),
                self.spec.dev.as_deref().unwrap_or_default(),
            )?,
            RouteState::Absent => self.del(None, None)?,
        }])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        if self.diff(before)?.is_none() {
            return Ok(vec![]);
        }
        if state_bool(before, "present")? {
            let Some(dev) = state_opt_str(before, "dev")? else {
                return Err(ModuleError::InvalidState(
                    "a present route without a device".into(),
                ));
            };
            return Ok(vec![self.replace(state_opt_str(before, "via")?, dev)?]);
        }
        // There was none: remove the one the change added.
        Ok(vec![
            self.del(self.spec.via.as_deref(), self.spec.dev.as_deref())?
        ])
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        let present = |v: &Value| v["present"].as_bool().unwrap_or(false);
        if !present(before) || !present(now) {
            return present(before) == present(now);
        }
        same_fields(before, now, &["via", "dev"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil::{cmds, exit, ok, words};

    fn route(dest: &str, via: Option<&str>, dev: Option<&str>, table: &str) -> Route {
        RouteSpec {
            dest: dest.into(),
            via: via.map(Into::into),
            dev: dev.map(Into::into),
            table: table.into(),
            state: RouteState::Present,
        }
        .build()
        .unwrap()
    }

    const TABLE: &str = "10.1.1.0/24 dev eth2 proto kernel scope link src 10.1.1.50\n\
                         default via 10.1.1.1 dev eth2\n";

    #[test]
    fn check_describe_and_observe() {
        let m = route("default", Some("10.1.1.1"), Some("eth2"), "2");
        assert_eq!(cmds(&m.check()), ["ip route show table 2"]);
        assert_eq!(m.describe(), "route default table 2: via 10.1.1.1 dev eth2");
        assert_eq!(
            m.observe(&[ok(TABLE)]).unwrap(),
            json!({"present": true, "via": "10.1.1.1", "dev": "eth2"})
        );
        let none = json!({"present": false, "via": null, "dev": null});
        assert_eq!(m.observe(&[ok("10.1.1.0/24 dev eth2\n")]).unwrap(), none);
        // a table without routes: the kernel says it does not exist
        let missing = exit(
            2,
            "",
            "Error: ipv4: FIB table does not exist.\nDump terminated\n",
        );
        assert_eq!(m.observe(&[missing]).unwrap(), none);
        let garbage = exit(
            255,
            "",
            "Error: argument \"x\" is wrong: table id value is invalid",
        );
        assert!(matches!(
            m.observe(&[garbage]),
            Err(ModuleError::UnexpectedOutput { .. })
        ));
        // a host route is printed without /32
        let host = route("10.9.9.9/32", None, Some("eth1"), "main");
        assert_eq!(
            host.observe(&[ok("10.9.9.9 dev eth1 scope link\n")])
                .unwrap()["present"],
            true
        );
    }

    #[test]
    fn add_then_undo_removes_what_was_added() {
        let m = route("default", Some("10.1.1.1"), Some("eth2"), "2");
        let none = json!({"present": false, "via": null, "dev": null});
        assert_eq!(
            m.diff(&none).unwrap().unwrap().to_string(),
            "route default table 2: none -> via 10.1.1.1 dev eth2"
        );
        assert_eq!(
            cmds(&m.change(&none).unwrap()),
            ["ip route replace default via 10.1.1.1 dev eth2 table 2"]
        );
        assert_eq!(
            cmds(&m.undo(&none).unwrap()),
            ["ip route del default via 10.1.1.1 dev eth2 table 2"]
        );
        let there = json!({"present": true, "via": "10.1.1.1", "dev": "eth2"});
        assert_eq!(m.diff(&there).unwrap(), None);
        assert!(m.change(&there).unwrap().is_empty());
        assert!(!m.restored(&none, &there));
        assert!(m.restored(&none, &none));
    }

    #[test]
    fn replace_then_undo_puts_the_old_next_hop_back() {
        let m = route("default", Some("10.1.1.1"), Some("eth2"), "main");
        let old = json!({"present": true, "via": "10.0.0.1", "dev": "eth0"});
        assert_eq!(
            cmds(&m.undo(&old).unwrap()),
            ["ip route replace default via 10.0.0.1 dev eth0 table main"]
        );
        assert!(!m.restored(
            &old,
            &json!({"present": true, "via": "10.1.1.1", "dev": "eth2"})
        ));
    }

    #[test]
    fn absent_removes_any_route_to_dest() {
        let m = RouteSpec {
            dest: "10.5.0.0/16".into(),
            via: None,
            dev: None,
            table: "main".into(),
            state: RouteState::Absent,
        }
        .build()
        .unwrap();
        let old = json!({"present": true, "via": "10.0.0.9", "dev": "eth1"});
        assert_eq!(
            cmds(&m.change(&old).unwrap()),
            ["ip route del 10.5.0.0/16 table main"]
        );
        assert_eq!(
            cmds(&m.undo(&old).unwrap()),
            ["ip route replace 10.5.0.0/16 via 10.0.0.9 dev eth1 table main"]
        );
        assert_eq!(
            m.diff(&json!({"present": false, "via": null, "dev": null}))
                .unwrap(),
            None
        );
    }

    #[test]
    fn bad_specs_are_refused_and_names_stay_one_argument() {
        let bad = |dest: &str, via: Option<&str>, dev: Option<&str>| {
            RouteSpec {
                dest: dest.into(),
                via: via.map(Into::into),
                dev: dev.map(Into::into),
                table: "main".into(),
                state: RouteState::Present,
            }
            .build()
            .unwrap_err()
            .to_string()
        };
        assert!(bad("10.0.0.0/33", None, Some("eth0")).contains("IPv4 prefix"));
        assert!(bad("default; reboot", None, Some("eth0")).contains("IPv4 prefix"));
        assert!(bad("default", Some("$(reboot)"), Some("eth0")).contains("not an IPv4 address"));
        assert!(bad("default", None, None).contains("needs `dev`"));
        assert!(bad("default", None, Some("-s")).contains("dev"));
        let m = route("default", None, Some("eth1; reboot"), "2");
        let none = json!({"present": false, "via": null, "dev": null});
        assert_eq!(
            words(&cmds(&m.change(&none).unwrap())[0]),
            [
                "ip",
                "route",
                "replace",
                "default",
                "dev",
                "eth1; reboot",
                "table",
                "2"
            ]
        );
    }
}
