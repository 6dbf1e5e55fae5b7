//! `ip` (iproute2) over a machine's guest links and routes: `ip link` and `ip addr` shown,
//! `ip link set` up or down, `ip route` shown, added, replaced and deleted. MACs are stable per
//! machine and link ([`mac`], which `ovs.rs` uses too).

use std::net::Ipv4Addr;

use super::Output;
use crate::zone::Guest;

/// A stable MAC for a machine's link.
pub(super) fn mac(machine: &str, dev: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in machine.bytes().chain([0]).chain(dev.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!("1e:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn parse_cidr(addr: &str) -> Option<(Ipv4Addr, u32)> {
    let (ip, len) = addr.split_once('/').unwrap_or((addr, "32"));
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip.parse().ok()?, len))
}

fn mask(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

fn link_header(guest: &Guest, machine: &str, index: usize, dev: &str, addr_view: bool) -> String {
    let link = &guest.links[dev];
    let (flags, state) = if link.up {
        ("BROADCAST,MULTICAST,UP,LOWER_UP", "UP")
    } else {
        ("BROADCAST,MULTICAST", "DOWN")
    };
    let mode = if addr_view { "" } else { "mode DEFAULT " };
    format!(
        "{index}: {dev}: <{flags}> mtu 1500 qdisc pfifo_fast state {state} {mode}group default qlen 1000\n    link/ether {} brd ff:ff:ff:ff:ff:ff\n",
        mac(machine, dev)
    )
}

const LO_LINK: &str = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n";
const LO_ADDR: &str = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n    inet 127.0.0.1/8 scope host lo\n       valid_lft forever preferred_lft forever\n";

pub(super) fn ip(guest: &mut Guest, machine: &str, args: &[String]) -> Output {
    // Options such as -4 / -o are accepted and ignored (the output is always the long form).
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .skip_while(|a| a.starts_with('-'))
        .collect();
    let Some((object, rest)) = args.split_first() else {
        return Output::err(255, "Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }");
    };
    let object = match *object {
        "l" | "li" | "lin" | "link" => "link",
        "a" | "ad" | "add" | "addr" | "addre" | "addres" | "address" => "addr",
        "r" | "ro" | "rou" | "rout" | "route" => "route",
        other => {
            return Output::err(
                255,
                format!("Object \"{other}\" is unknown, try \"ip help\"."),
            )
        }
    };
    let (verb, rest) = match rest.split_first() {
        Some((v, r)) => (*v, r),
        None => ("show", &[][..]),
    };
    match (object, verb) {
        ("link" | "addr", "show" | "list" | "ls" | "sh" | "s" | "l") => {
            let dev = match rest {
                [] => None,
                ["dev", d] | [d] => Some(*d),
                _ => {
                    return Output::err(
                        255,
                        format!(
                            "Error: either \"dev\" is duplicate, or \"{}\" is a garbage.",
                            rest.join(" ")
                        ),
                    )
                }
            };
            let addr_view = object == "addr";
            let mut text = String::new();
            if dev.is_none() || dev == Some("lo") {
                text.push_str(if addr_view { LO_ADDR } else { LO_LINK });
            }
            let mut found = dev.is_none() || dev == Some("lo");
            for (i, name) in guest.links.keys().enumerate() {
                if dev.is_some_and(|d| d != name) {
                    continue;
                }
                found = true;
                text.push_str(&link_header(guest, machine, i + 2, name, addr_view));
                if addr_view {
                    for addr in &guest.links[name].addrs {
                        let brd = parse_cidr(addr)
                            .filter(|(_, len)| *len < 31)
                            .map(|(ip, len)| {
                                format!(" brd {}", Ipv4Addr::from(u32::from(ip) | !mask(len)))
                            })
                            .unwrap_or_default();
                        text.push_str(&format!(
                            "    inet {addr}{brd} scope global {name}\n       valid_lft forever preferred_lft forever\n"
                        ));
                    }
                }
            }
            if !found {
                return Output::err(
                    1,
                    format!("Device \"{}\" does not exist.", dev.unwrap_or_default()),
                );
            }
            Output::ok(text)
        }
        ("link", "set") => {
            let (dev, state) = match rest {
                ["dev", d, s] | [d, s] => (*d, *s),
                _ => return Output::err(255, "Usage: ip link set DEVICE { up | down }"),
            };
            let up = match state {
                "up" => true,
                "down" => false,
                other => {
                    return Output::err(
                        255,
                        format!("Error: either \"dev\" is duplicate, or \"{other}\" is a garbage."),
                    )
                }
            };
            if !guest.links.contains_key(dev) {
                return Output::err(1, format!("Cannot find device \"{dev}\""));
            }
            guest.set_link(dev, up);
            if !up {
                // The kernel drops routes through a link that goes down.
                let tail = format!(" dev {dev}");
                for routes in guest.routes.values_mut() {
                    routes.retain(|r| !r.ends_with(&tail) && !r.contains(&format!("{tail} ")));
                }
                guest.routes.retain(|_, routes| !routes.is_empty());
            }
            Output::status(0)
        }
        ("route", "show" | "list" | "ls" | "sh" | "s" | "l") => {
            let table = match rest {
                [] => "main",
                ["table", t] => *t,
                _ => {
                    return Output::err(255, format!("Error: \"{}\" is a garbage.", rest.join(" ")))
                }
            };
            // A table with no routes does not exist for the kernel (local and main always do).
            if !["main", "local"].contains(&table)
                && guest.routes.get(table).is_none_or(|r| r.is_empty())
            {
                return Output::err(2, "Error: ipv4: FIB table does not exist.\nDump terminated");
            }
            let mut text = String::new();
            for r in guest.routes.get(table).into_iter().flatten() {
                text.push_str(r);
                text.push('\n');
            }
            if table == "main" {
                for (name, link) in &guest.links {
                    if !link.up {
                        continue;
                    }
                    for addr in &link.addrs {
                        if let Some((ip, len)) = parse_cidr(addr) {
                            let net = Ipv4Addr::from(u32::from(ip) & mask(len));
                            text.push_str(&format!(
                                "{net}/{len} dev {name} proto kernel scope link src {ip}\n"
                            ));
                        }
                    }
                }
            }
            Output::ok(text)
        }
        ("route", verb @ ("add" | "replace" | "del" | "delete")) => route_change(guest, verb, rest),
        (_, other) => Output::err(
            255,
            format!("Command \"{other}\" is unknown, try \"ip {object} help\"."),
        ),
    }
}

fn route_change(guest: &mut Guest, verb: &str, args: &[&str]) -> Output {
    let Some((prefix, mut rest)) = args.split_first() else {
        return Output::err(255, "Usage: ip route { add | del | replace } ROUTE");
    };
    let (mut via, mut dev, mut table) = (None, None, "main");
    while let [key, value, tail @ ..] = rest {
        match *key {
            "via" => via = Some(*value),
            "dev" => dev = Some(*value),
            "table" => table = value,
            "proto" | "metric" | "src" | "scope" => {}
            other => return Output::err(255, format!("Error: \"{other}\" is a garbage.")),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Output::err(255, format!("Error: \"{}\" is a garbage.", rest.join(" ")));
    }
    if *prefix != "default" && parse_cidr(prefix).is_none() {
        return Output::err(
            1,
            format!("Error: inet prefix is expected rather than \"{prefix}\"."),
        );
    }
    let prefix_of = |r: &str| r.split(' ').next().unwrap_or("").to_string();
    if verb == "del" || verb == "delete" {
        let Some(routes) = guest.routes.get_mut(table) else {
            return Output::err(2, "RTNETLINK answers: No such process");
        };
        let before = routes.len();
        routes.retain(|r| {
            !(prefix_of(r) == *prefix
                && via.is_none_or(|v| r.contains(&format!("via {v} ")))
                && dev.is_none_or(|d| r.ends_with(&format!(" dev {d}"))))
        });
        let (after, empty) = (routes.len(), routes.is_empty());
        // An empty table is no table, as the kernel shows it.
        if empty {
            guest.routes.remove(table);
        }
        if after == before {
            return Output::err(2, "RTNETLINK answers: No such process");
        }
        return Output::status(0);
    }
    if let Some(d) = dev {
        if !guest.links.contains_key(d) {
            return Output::err(1, format!("Cannot find device \"{d}\""));
        }
    }
    // The next hop must be on the subnet of a link that is up (the one named, if any).
    let out_dev = match via {
        Some(gw) => {
            let Ok(gw) = gw.parse::<Ipv4Addr>() else {
                return Output::err(
                    1,
                    format!("Error: inet address is expected rather than \"{gw}\"."),
                );
            };
            let found = guest.links.iter().find(|(name, link)| {
                link.up
                    && dev.is_none_or(|d| d == name.as_str())
                    && link
                        .addrs
                        .iter()
                        .filter_map(|a| parse_cidr(a))
                        .any(|(ip, len)| u32::from(ip) & mask(len) == u32::from(gw) & mask(len))
            });
            match found {
                Some((name, _)) => name.clone(),
                None => return Output::err(2, "Error: Nexthop has invalid gateway."),
            }
        }
        None => match dev {
            Some(d) if guest.link_up(d) => d.to_string(),
            Some(_) => return Output::err(2, "Error: Device for nexthop is not up."),
            None => return Output::err(2, "Error: Device for nexthop is not up."),
        },
    };
    let text = match via {
        Some(gw) => format!("{prefix} via {gw} dev {out_dev}"),
        None => format!("{prefix} dev {out_dev} scope link"),
    };
    let routes = guest.routes.entry(table.to_string()).or_default();
    let existing = routes.iter().position(|r| prefix_of(r) == *prefix);
    match (verb, existing) {
        ("add", Some(_)) => Output::err(2, "RTNETLINK answers: File exists"),
        (_, Some(i)) => {
            routes[i] = text;
            Output::status(0)
        }
        (_, None) => {
            routes.push(text);
            Output::status(0)
        }
    }
}
