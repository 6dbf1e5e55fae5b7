//! Open vSwitch over a machine's guest bridges: `ovs-vsctl` (`list-br`, `br-exists`,
//! `list-ports`, `add-port`, `del-port`, `show`) and `ovs-ofctl` (`show`, `dump-flows`,
//! `add-flow`, `del-flows`).

use super::ip::mac;
use super::Output;
use crate::zone::Guest;

fn no_bridge(bridge: &str) -> Output {
    Output::err(1, format!("ovs-vsctl: no bridge named {bridge}"))
}

pub(super) fn ovs_vsctl(guest: &mut Guest, args: &[String]) -> Output {
    let may_exist = args.iter().any(|a| a == "--may-exist");
    let if_exists = args.iter().any(|a| a == "--if-exists");
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        ["list-br"] => Output::ok(
            guest
                .ovs
                .keys()
                .map(|b| format!("{b}\n"))
                .collect::<String>(),
        ),
        ["br-exists", br] => Output::status(if guest.ovs.contains_key(*br) { 0 } else { 2 }),
        ["list-ports", br] => match guest.ovs.get(*br) {
            Some(b) => {
                let mut ports = b.ports.clone();
                ports.sort();
                Output::ok(ports.iter().map(|p| format!("{p}\n")).collect::<String>())
            }
            None => no_bridge(br),
        },
        ["add-port", br, port] => {
            if may_exist
                && guest
                    .ovs
                    .get(*br)
                    .is_some_and(|b| b.ports.iter().any(|p| p == port))
            {
                return Output::status(0);
            }
            if let Some((owner, _)) = guest
                .ovs
                .iter()
                .find(|(_, b)| b.ports.iter().any(|p| p == port))
            {
                return Output::err(
                    1,
                    format!("ovs-vsctl: cannot create a port named {port} because a port named {port} already exists on bridge {owner}"),
                );
            }
            match guest.ovs.get_mut(*br) {
                Some(b) => {
                    b.ports.push(port.to_string());
                    Output::status(0)
                }
                None => no_bridge(br),
            }
        }
        ["del-port", br, port] => match guest.ovs.get_mut(*br) {
            Some(b) if b.ports.iter().any(|p| p == port) => {
                b.ports.retain(|p| p != port);
                Output::status(0)
            }
            Some(_) if if_exists => Output::status(0),
            Some(_) => Output::err(
                1,
                format!("ovs-vsctl: bridge {br} does not have a port {port}"),
            ),
            None => no_bridge(br),
        },
        ["del-port", port] => {
            match guest
                .ovs
                .values_mut()
                .find(|b| b.ports.iter().any(|p| p == port))
            {
                Some(b) => {
                    b.ports.retain(|p| p != port);
                    Output::status(0)
                }
                None => Output::err(1, format!("ovs-vsctl: no port named {port}")),
            }
        }
        ["show"] => {
            let mut text = String::from("6f1c5a4e-0d3b-4c7e-9a51-3f2b8d7e6c10\n");
            for (name, b) in &guest.ovs {
                text.push_str(&format!("    Bridge {name}\n"));
                let mut ports = b.ports.clone();
                ports.push(name.clone());
                ports.sort();
                for p in ports {
                    text.push_str(&format!("        Port {p}\n            Interface {p}\n"));
                    if &p == name {
                        text.push_str("                type: internal\n");
                    }
                }
            }
            text.push_str("    ovs_version: \"2.17.9\"\n");
            Output::ok(text)
        }
        [] => Output::err(1, "ovs-vsctl: missing command name (use --help for help)"),
        [cmd, ..] => Output::err(
            1,
            format!("ovs-vsctl: unknown command '{cmd}'; use --help for help"),
        ),
    }
}

fn not_a_bridge(bridge: &str) -> Output {
    Output::err(
        1,
        format!("ovs-ofctl: {bridge} is not a bridge or a socket"),
    )
}

/// The match fields of a flow, without its actions.
fn match_fields(flow: &str) -> Vec<String> {
    flow.split(',')
        .map(str::trim)
        .take_while(|f| !f.starts_with("actions="))
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) fn ovs_ofctl(guest: &mut Guest, args: &[String]) -> Output {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("-"))
        .collect();
    match args.as_slice() {
        ["show", br] => match guest.ovs.get(*br) {
            Some(b) => {
                let mut text = format!(
                    "OFPT_FEATURES_REPLY (xid=0x2): dpid:0000{}\nn_tables:254, n_buffers:0\n",
                    mac(br, "dpid").replace(':', "")
                );
                for (i, p) in b.ports.iter().enumerate() {
                    text.push_str(&format!(
                        " {}({p}): addr:{}\n     config:     0\n     state:      0\n",
                        i + 1,
                        mac(br, p)
                    ));
                }
                text.push_str(&format!(
                    " LOCAL({br}): addr:{}\n     config:     0\n     state:      0\nOFPT_GET_CONFIG_REPLY (xid=0x4): frags=normal miss_send_len=0\n",
                    mac(br, br)
                ));
                Output::ok(text)
            }
            None => not_a_bridge(br),
        },
        ["dump-flows", br] => match guest.ovs.get(*br) {
            Some(b) => Output::ok(
                b.flows
                    .iter()
                    .map(|f| format!(" cookie=0x0, duration=0s, n_packets=0, n_bytes=0, {f}\n"))
                    .collect::<String>(),
            ),
            None => not_a_bridge(br),
        },
        ["add-flow", br, flow] => match guest.ovs.get_mut(*br) {
            Some(b) => {
                if !flow.contains("actions=") {
                    return Output::err(1, "ovs-ofctl: must specify an action");
                }
                if !b.flows.iter().any(|f| f == flow) {
                    b.flows.push(flow.to_string());
                }
                Output::status(0)
            }
            None => not_a_bridge(br),
        },
        ["del-flows", br] => match guest.ovs.get_mut(*br) {
            Some(b) => {
                b.flows.clear();
                Output::status(0)
            }
            None => not_a_bridge(br),
        },
        ["del-flows", br, flow] => match guest.ovs.get_mut(*br) {
            Some(b) => {
                let wanted = match_fields(flow);
                b.flows.retain(|f| {
                    let have = match_fields(f);
                    !wanted.iter().all(|w| have.contains(w))
                });
                Output::status(0)
            }
            None => not_a_bridge(br),
        },
        [] => Output::err(1, "ovs-ofctl: missing command name; use --help for help"),
        [cmd, ..] => Output::err(
            1,
            format!("ovs-ofctl: unknown command '{cmd}'; use --help for help"),
        ),
    }
}
