//! Services: `systemctl` (`is-active`, `is-failed`, `status`, `start`, `stop`, `restart`,
//! `try-restart`, `reload`, `enable`, `disable`) and `service NAME VERB` over a machine's guest
//! services, and `ss -l`, which shows the sockets the running services listen on.

use super::Output;
use crate::zone::{Guest, Service, ServiceState};

fn unit(name: &str) -> &str {
    name.strip_suffix(".service").unwrap_or(name)
}

fn state_word(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Active => "active",
        ServiceState::Inactive => "inactive",
        ServiceState::Failed => "failed",
    }
}

pub(super) fn systemctl(guest: &mut Guest, args: &[String]) -> Output {
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let mut out = systemctl_verb(guest, args);
    if quiet {
        out.stdout.clear();
    }
    out
}

fn systemctl_verb(guest: &mut Guest, args: &[String]) -> Output {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some((verb, units)) = args.split_first() else {
        return Output::err(1, "sim-ssh: systemctl without a command lists nothing here");
    };
    if units.is_empty() {
        return Output::err(1, "Too few arguments.");
    }
    let mut out = Output::default();
    for name in units.iter().map(|u| unit(u)) {
        let service = guest.services.get(name).cloned();
        let one = match (*verb, service) {
            ("is-active", Some(s)) => Output {
                stdout: format!("{}\n", state_word(s.state)),
                stderr: String::new(),
                status: if s.state == ServiceState::Active {
                    0
                } else {
                    3
                },
            },
            ("is-active", None) => Output {
                stdout: "inactive\n".into(),
                stderr: String::new(),
                status: 3,
            },
            ("is-failed", s) => {
                let failed = s.as_ref().is_some_and(|s| s.state == ServiceState::Failed);
                Output {
                    stdout: format!("{}\n", s.map_or("inactive", |s| state_word(s.state))),
                    stderr: String::new(),
                    status: if failed { 0 } else { 1 },
                }
            }
            ("status", Some(s)) => {
                let (enabled, active) = (
                    if s.enabled { "enabled" } else { "disabled" },
                    match s.state {
                        ServiceState::Active => "active (running)",
                        ServiceState::Inactive => "inactive (dead)",
                        ServiceState::Failed => "failed (Result: exit-code)",
                    },
                );
                Output {
                    stdout: format!(
                        "● {name}.service - {name}\n     Loaded: loaded (/lib/systemd/system/{name}.service; {enabled}; vendor preset: enabled)\n     Active: {active}\n"
                    ),
                    stderr: String::new(),
                    status: if s.state == ServiceState::Active { 0 } else { 3 },
                }
            }
            ("status", None) => Output::err(4, format!("Unit {name}.service could not be found.")),
            ("start" | "stop" | "restart" | "reload" | "try-restart", None) => Output::err(
                5,
                format!("Failed to {verb} {name}.service: Unit {name}.service not found."),
            ),
            ("start" | "restart", Some(_)) => {
                guest.set_service(name, ServiceState::Active);
                Output::status(0)
            }
            ("try-restart", Some(s)) => {
                if s.state == ServiceState::Active {
                    guest.set_service(name, ServiceState::Active);
                }
                Output::status(0)
            }
            ("reload", Some(s)) => {
                if s.state == ServiceState::Active {
                    Output::status(0)
                } else {
                    Output::err(1, format!("{name}.service is not active, cannot reload."))
                }
            }
            ("stop", Some(_)) => {
                guest.set_service(name, ServiceState::Inactive);
                Output::status(0)
            }
            ("enable" | "disable", None) => Output::err(
                1,
                format!("Failed to {verb} unit: Unit file {name}.service does not exist."),
            ),
            ("enable" | "disable", Some(s)) => {
                guest.services.insert(
                    name.to_string(),
                    Service {
                        state: s.state,
                        enabled: *verb == "enable",
                    },
                );
                Output::status(0)
            }
            ("is-enabled", Some(s)) => Output {
                stdout: format!("{}\n", if s.enabled { "enabled" } else { "disabled" }),
                stderr: String::new(),
                status: if s.enabled { 0 } else { 1 },
            },
            ("is-enabled", None) => Output::err(
                1,
                format!(
                    "Failed to get unit file state for {name}.service: No such file or directory"
                ),
            ),
            (other, _) => {
                return Output::err(1, format!("Unknown command verb {other}."));
            }
        };
        out.stdout.push_str(&one.stdout);
        out.stderr.push_str(&one.stderr);
        if one.status != 0 || out.status == 0 {
            out.status = out.status.max(one.status);
        }
    }
    out
}

pub(super) fn service(guest: &mut Guest, args: &[String]) -> Output {
    let [name, verb, ..] = args else {
        return Output::err(1, "Usage: service < option > | --status-all | [ service_name [ command | --full-restart ] ]");
    };
    if !guest.services.contains_key(unit(name)) {
        return Output::err(1, format!("{name}: unrecognized service"));
    }
    match verb.as_str() {
        "start" | "stop" | "restart" | "status" | "reload" => {
            systemctl(guest, &[verb.clone(), name.clone()])
        }
        other => Output::err(
            1,
            format!("Usage: /etc/init.d/{name} {{start|stop|restart|status}} (not {other})"),
        ),
    }
}

/// `ss -l[ntup]`: the listening sockets of the running services (dnsmasq: DNS on 53 over UDP
/// and TCP, DHCP on 67 over UDP; sshd: TCP 22, or 3922 on a system VM).
pub(super) fn ss(guest: &Guest, args: &[String]) -> Output {
    let mut flags = String::new();
    for a in args {
        match a.strip_prefix('-') {
            Some(f) if !f.starts_with('-') && f.chars().all(|c| "lntupa4".contains(c)) => {
                flags.push_str(f)
            }
            _ => {
                return Output::err(
                    1,
                    format!("ss: bad option or filter {a:?} (the simulator knows -l -n -t -u -p)"),
                )
            }
        }
    }
    let (tcp, udp) = match (flags.contains('t'), flags.contains('u')) {
        (false, false) => (true, true),
        t => t,
    };
    let mut rows: Vec<(&str, &str, String, &str)> = Vec::new();
    if flags.contains('l') {
        if guest.active("dnsmasq") {
            if udp {
                rows.push(("udp", "UNCONN", "0.0.0.0:53".into(), "dnsmasq"));
                rows.push(("udp", "UNCONN", "0.0.0.0:67".into(), "dnsmasq"));
            }
            if tcp {
                rows.push(("tcp", "LISTEN", "0.0.0.0:53".into(), "dnsmasq"));
            }
        }
        if guest.active("ssh") && tcp {
            let port = if guest.has_file("/var/cache/cloud/cmdline") {
                3922
            } else {
                22
            };
            rows.push(("tcp", "LISTEN", format!("0.0.0.0:{port}"), "sshd"));
        }
    }
    let mut out =
        String::from("Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n");
    for (net, state, local, process) in rows {
        let users = if flags.contains('p') {
            format!("users:((\"{process}\",pid=1,fd=4))")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{net:<5} {state:<6} 0      0      {local:>18} {:>18} {users}\n",
            "0.0.0.0:*"
        ));
    }
    Output::ok(out)
}
