//! `link`: the administrative state (up/down) of a network interface, through iproute2.
//!
//! Owns the `ip -o link show` probe and its parsing, and `ip link set ... up|down` with its undo.
//! Not here: addresses, routes, MTU; and carrier (LOWER_UP), which the module reports
//! (`operstate`) but cannot change.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_name, one_ssh, same_fields, sh, state_bool, state_str, summarize};
use super::{Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult};

/// Ensure a network interface is administratively up or down.
///
/// YAML keys:
/// - `dev` (required): the interface name, e.g. `eth1`.
/// - `state` (required): `up` | `down`.
///
/// ```yaml
/// - id: public-nic-up
///   on: "{{ router }}"
///   link: { dev: eth1, state: up }
/// ```
///
/// Check: `ip -o link show dev DEV` (admin state = the `UP` flag; `operstate` is reported for
/// information). Change: `ip link set dev DEV up|down`. Undo: the inverse command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub dev: String,
    pub state: LinkState,
}

/// The wanted administrative state of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Down,
}

impl LinkState {
    fn word(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }

    fn from_up(up: bool) -> LinkState {
        if up {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }
}

impl LinkSpec {
    pub fn build(self) -> Result<Link, ModuleError> {
        check_name(ModuleKind::Link, "dev", &self.dev)?;
        let check_cmd = sh(&["ip", "-o", "link", "show", "dev", &self.dev])?;
        Ok(Link {
            spec: self,
            check_cmd,
        })
    }
}

/// The built `link` module.
#[derive(Debug, Clone)]
pub struct Link {
    spec: LinkSpec,
    check_cmd: String,
}

/// `(admin up, operstate)` from one `ip -o link` line, e.g.
/// `3: eth1@if12: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN mode DEFAULT ...`.
fn parse_link_line(line: &str) -> Option<(bool, String)> {
    let open = line.find('<')?;
    let close = open + line[open..].find('>')?;
    let up = line[open + 1..close].split(',').any(|flag| flag == "UP");
    let mut words = line[close + 1..].split_whitespace();
    words.find(|w| *w == "state")?;
    let operstate = words.next()?;
    Some((up, operstate.to_string()))
}

impl Link {
    fn set(&self, state: LinkState) -> Result<Action, ModuleError> {
        Ok(Action::ssh(sh(&[
            "ip",
            "link",
            "set",
            "dev",
            &self.spec.dev,
            state.word(),
        ])?))
    }
}

impl Module for Link {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Link
    }

    fn describe(&self) -> String {
        format!("link {} {}", self.spec.dev, self.spec.state.word())
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::ssh(self.check_cmd.clone())]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let out = one_ssh(results, &self.check_cmd)?;
        if out.rc != Some(0) {
            if out.rc.is_some() && out.stderr.contains("does not exist") {
                return Err(ModuleError::LinkNotFound(self.spec.dev.clone()));
            }
            return Err(ModuleError::UnexpectedOutput {
                cmd: self.check_cmd.clone(),
                detail: summarize(out),
            });
        }
        let line = out
            .stdout
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let (up, operstate) =
            parse_link_line(line).ok_or_else(|| ModuleError::UnexpectedOutput {
                cmd: self.check_cmd.clone(),
                detail: summarize(out),
            })?;
        Ok(json!({ "up": up, "operstate": operstate }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let was = LinkState::from_up(state_bool(before, "up")?);
        if was == self.spec.state {
            return Ok(None);
        }
        // operstate is part of the record; read it so a malformed one is caught before acting
        state_str(before, "operstate")?;
        Ok(Some(Diff::one("state", was.word(), self.spec.state.word())))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let was = LinkState::from_up(state_bool(before, "up")?);
        if was == self.spec.state {
            return Ok(vec![]);
        }
        Ok(vec![self.set(self.spec.state)?])
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let was = LinkState::from_up(state_bool(before, "up")?);
        if was == self.spec.state {
            return Ok(vec![]);
        }
        Ok(vec![self.set(was)?])
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        // operstate follows carrier and may lag; only the admin state is ours
        same_fields(before, now, &["up"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil::{cmds, exit, ok, words};

    fn link(dev: &str, state: LinkState) -> Link {
        LinkSpec {
            dev: dev.into(),
            state,
        }
        .build()
        .unwrap()
    }

    const ETH1_DOWN: &str = "3: eth1@if12: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default qlen 1000\\    link/ether 0e:5a:3c:11:22:33 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n";
    const ETH1_UP: &str = "3: eth1@if12: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 0e:5a:3c:11:22:33 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n";
    // admin up, no carrier: the peer end is down
    const ETH1_NO_CARRIER: &str = "3: eth1@if12: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state LOWERLAYERDOWN mode DEFAULT group default qlen 1000\\    link/ether 0e:5a:3c:11:22:33 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n";

    #[test]
    fn check_and_describe() {
        let m = link("eth1", LinkState::Up);
        assert_eq!(cmds(&m.check()), ["ip -o link show dev eth1"]);
        assert_eq!(m.describe(), "link eth1 up");
    }

    #[test]
    fn observe_reads_flags_and_operstate() {
        let m = link("eth1", LinkState::Up);
        assert_eq!(
            m.observe(&[ok(ETH1_DOWN)]).unwrap(),
            json!({"up": false, "operstate": "DOWN"})
        );
        assert_eq!(
            m.observe(&[ok(ETH1_UP)]).unwrap(),
            json!({"up": true, "operstate": "UP"})
        );
        assert_eq!(
            m.observe(&[ok(ETH1_NO_CARRIER)]).unwrap(),
            json!({"up": true, "operstate": "LOWERLAYERDOWN"})
        );
        // LOWER_UP alone is not UP
        let lower_only = "4: eth2: <BROADCAST,MULTICAST,LOWER_UP> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff";
        assert_eq!(m.observe(&[ok(lower_only)]).unwrap()["up"], json!(false));
        let lo = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00";
        assert_eq!(
            m.observe(&[ok(lo)]).unwrap(),
            json!({"up": true, "operstate": "UNKNOWN"})
        );
    }

    #[test]
    fn observe_missing_link_and_garbage() {
        let m = link("eth9", LinkState::Up);
        let err = m
            .observe(&[exit(1, "", "Device \"eth9\" does not exist.\n")])
            .unwrap_err();
        assert_eq!(err.to_string(), "link eth9 does not exist");
        for bad in [
            ok(""),
            ok("hello world"),
            ok("3: eth1: <BROADCAST,UP mtu 1500"),
            ok("3: eth1: <BROADCAST,UP> mtu 1500 qdisc noqueue"),
            exit(255, "", "Object \"link\" is unknown, try \"ip help\"."),
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

    #[test]
    fn in_sync_has_no_diff() {
        let m = link("eth1", LinkState::Up);
        let up = json!({"up": true, "operstate": "LOWERLAYERDOWN"});
        assert_eq!(m.diff(&up).unwrap(), None);
        assert!(m.change(&up).unwrap().is_empty());
        assert!(m.undo(&up).unwrap().is_empty());
    }

    #[test]
    fn change_and_undo_are_inverse_commands() {
        let m = link("eth1", LinkState::Up);
        let down = json!({"up": false, "operstate": "DOWN"});
        assert_eq!(
            m.diff(&down).unwrap().unwrap().to_string(),
            "state: down -> up"
        );
        assert_eq!(cmds(&m.change(&down).unwrap()), ["ip link set dev eth1 up"]);
        assert_eq!(cmds(&m.undo(&down).unwrap()), ["ip link set dev eth1 down"]);
        let m = link("eth1", LinkState::Down);
        let up = json!({"up": true, "operstate": "UP"});
        assert_eq!(cmds(&m.change(&up).unwrap()), ["ip link set dev eth1 down"]);
        assert_eq!(cmds(&m.undo(&up).unwrap()), ["ip link set dev eth1 up"]);
    }

    fn simulate(up: bool, actions: &[Action]) -> Value {
        let mut up = up;
        for c in cmds(actions) {
            up = words(&c)[5] == "up";
        }
        json!({"up": up, "operstate": if up { "UP" } else { "DOWN" }})
    }

    #[test]
    fn change_then_undo_restores_the_pre_state() {
        for state in [LinkState::Up, LinkState::Down] {
            let m = link("eth1", state);
            for before in [
                json!({"up": false, "operstate": "DOWN"}),
                json!({"up": true, "operstate": "UP"}),
            ] {
                let was = before["up"].as_bool().unwrap();
                let after = simulate(was, &m.change(&before).unwrap());
                assert_eq!(m.diff(&after).unwrap(), None);
                let now = simulate(after["up"].as_bool().unwrap(), &m.undo(&before).unwrap());
                assert!(m.restored(&before, &now));
            }
        }
        let m = link("eth1", LinkState::Up);
        assert!(!m.restored(
            &json!({"up": false, "operstate": "DOWN"}),
            &json!({"up": true, "operstate": "UP"})
        ));
    }

    #[test]
    fn hostile_names_stay_one_argument() {
        let dev = "eth1; reboot";
        let m = link(dev, LinkState::Up);
        assert_eq!(
            words(&cmds(&m.check())[0]),
            ["ip", "-o", "link", "show", "dev", dev]
        );
        let down = json!({"up": false, "operstate": "DOWN"});
        assert_eq!(
            words(&cmds(&m.change(&down).unwrap())[0]),
            ["ip", "link", "set", "dev", dev, "up"]
        );
        assert!(LinkSpec {
            dev: "-s".into(),
            state: LinkState::Up
        }
        .build()
        .is_err());
        assert!(LinkSpec {
            dev: "$(reboot)".into(),
            state: LinkState::Up
        }
        .build()
        .is_ok());
    }
}
