//! The command emulator on zones built from the shipped scenarios, without SSH.

use std::collections::BTreeMap;

use super::commands::{run_line, Output};
use crate::faults::Faults;
use crate::scenario::Scenario;
use crate::zone::Zone;

fn zone(scenario: &str) -> Zone {
    Zone::new(&Scenario::builtin(scenario).expect("shipped scenario"))
}

fn run(z: &mut Zone, machine: &str, line: &str) -> Output {
    run_line(z, machine, line)
}

fn ok(z: &mut Zone, machine: &str, line: &str) -> String {
    let out = run(z, machine, line);
    assert_eq!(out.status, 0, "{line}: {out:?}");
    assert_eq!(out.stderr, "", "{line}");
    out.stdout
}

fn out(stdout: &str, stderr: &str, status: u32) -> Output {
    Output {
        stdout: stdout.into(),
        stderr: stderr.into(),
        status,
    }
}

/// `redundantstate` of a router as listRouters shows it.
fn listed_state(z: &mut Zone, router: &str) -> String {
    let reply = z.handle(
        "listRouters",
        &BTreeMap::from([("listall".to_string(), "true".to_string())]),
        &Faults::default(),
        jiff::Timestamp::now(),
    );
    let routers = reply.body["listroutersresponse"]["router"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let r = routers
        .iter()
        .find(|r| r["name"] == router)
        .unwrap_or_else(|| panic!("{router} not listed: {}", reply.body));
    r["redundantstate"].as_str().unwrap().to_string()
}

#[test]
fn quoting_lists_and_exit_codes() {
    let mut z = zone("healthy");
    assert_eq!(
        ok(&mut z, "kvm01", r#"echo 'a  b' "c d" e\ f"#),
        "a  b c d e f\n"
    );
    assert_eq!(ok(&mut z, "kvm01", "echo -n x; echo y"), "xy\n");
    assert_eq!(
        run(&mut z, "kvm01", "false && echo no || echo yes; echo end"),
        out("yes\nend\n", "", 0)
    );
    assert_eq!(run(&mut z, "kvm01", "true && false"), out("", "", 1));
    assert_eq!(run(&mut z, "kvm01", "false || false"), out("", "", 1));
    assert_eq!(run(&mut z, "kvm01", "true || echo skipped"), out("", "", 0));
    assert_eq!(
        run(&mut z, "kvm01", "echo a; exit 3; echo b"),
        out("a\n", "", 3)
    );
    assert_eq!(
        run(&mut z, "kvm01", "sleep 0.1 && hostname"),
        out("kvm01\n", "", 0)
    );
    assert_eq!(run(&mut z, "kvm01", "sleep x").status, 1);
}

#[test]
fn unknown_commands_and_refused_syntax() {
    let mut z = zone("healthy");
    assert_eq!(
        run(&mut z, "kvm01", "frobnicate --now"),
        out("", "bash: frobnicate: command not found\n", 127)
    );
    assert_eq!(
        run(&mut z, "kvm01", "/usr/bin/nope"),
        out("", "bash: /usr/bin/nope: No such file or directory\n", 127)
    );
    assert_eq!(ok(&mut z, "kvm01", "/usr/bin/hostname"), "kvm01\n");
    let piped = run(&mut z, "kvm01", "ls / | grep etc");
    assert_eq!(piped.status, 2);
    assert!(
        piped.stderr.contains("pipes are not supported"),
        "{piped:?}"
    );
    assert_eq!(run(&mut z, "kvm01", "echo x > /etc/f").status, 2);
    assert_eq!(run(&mut z, "kvm01", "true &&").status, 2);
    // Redirections that are supported
    assert_eq!(
        run(&mut z, "kvm01", "cat /nope 2>&1"),
        out("cat: /nope: No such file or directory\n", "", 1)
    );
    assert_eq!(
        run(&mut z, "kvm01", "cat /nope 2>/dev/null"),
        out("", "", 1)
    );
    assert_eq!(run(&mut z, "kvm01", "hostname >/dev/null"), out("", "", 0));
    assert_eq!(run(&mut z, "kvm01", "echo oops >&2"), out("", "oops\n", 0));
    // Scripts that exist only on some machines
    assert_eq!(
        run(&mut z, "kvm01", "/opt/cloud/bin/checkrouter.sh").status,
        127
    );
    assert_eq!(
        run(
            &mut z,
            "r-930-VM",
            "/usr/local/cloud/systemvm/ssvm-check.sh"
        )
        .status,
        127
    );
    let check = ok(&mut z, "s-1-VM", "/usr/local/cloud/systemvm/ssvm-check.sh");
    assert!(check.contains("Tests Complete"), "{check}");
}

#[test]
fn ip_links_addresses_and_routes_on_a_router() {
    let mut z = zone("vr-backup-loop");
    let r = "r-930-VM";
    let link = ok(&mut z, r, "ip link show eth1");
    assert!(
        link.starts_with("3: eth1: <BROADCAST,MULTICAST> "),
        "{link}"
    );
    assert!(link.contains("state DOWN"), "{link}");
    let all = ok(&mut z, r, "ip link show");
    assert!(all.starts_with("1: lo:"), "{all}");
    let eth0 = ok(&mut z, r, "ip addr show eth0");
    let ll = z
        .world()
        .vms
        .iter()
        .find(|v| v.name == r)
        .unwrap()
        .linklocalip
        .clone();
    assert!(
        eth0.contains(&format!(
            "inet {ll}/16 brd 169.254.255.255 scope global eth0"
        )),
        "{eth0}"
    );
    assert_eq!(
        run(&mut z, r, "ip link show eth9"),
        out("", "Device \"eth9\" does not exist.\n", 1)
    );
    assert_eq!(
        run(&mut z, r, "ip link set eth9 up"),
        out("", "Cannot find device \"eth9\"\n", 1)
    );

    // The public gateway: .1 of eth1's subnet
    let eth1 = z.guest(r).unwrap().links["eth1"].addrs[0].clone();
    let ip = eth1.split('/').next().unwrap();
    let gw = format!("{}.1", ip.rsplit_once('.').unwrap().0);
    let add = format!("ip route add default via {gw} table Table_eth1");
    assert_eq!(
        run(&mut z, r, &add),
        out("", "Error: Nexthop has invalid gateway.\n", 2)
    );
    // An empty table does not exist, as the kernel says.
    assert_eq!(
        run(&mut z, r, "ip route show table Table_eth1"),
        out(
            "",
            "Error: ipv4: FIB table does not exist.\nDump terminated\n",
            2
        )
    );
    ok(&mut z, r, "ip link set eth1 up");
    assert!(ok(&mut z, r, "ip link show eth1").contains("state UP"));
    ok(&mut z, r, &add);
    assert_eq!(
        ok(&mut z, r, "ip route show table Table_eth1"),
        format!("default via {gw} dev eth1\n")
    );
    assert_eq!(
        run(&mut z, r, &add),
        out("", "RTNETLINK answers: File exists\n", 2)
    );
    let main = ok(&mut z, r, "ip route");
    assert!(
        main.contains(" dev eth1 proto kernel scope link src "),
        "{main}"
    );
    // Taking the link down drops its routes, as the kernel does
    ok(&mut z, r, "ip link set eth1 down");
    assert_eq!(run(&mut z, r, "ip route show table Table_eth1").status, 2);
}

#[test]
fn router_changes_show_in_the_api() {
    let mut z = zone("vr-backup-loop");
    let r = "r-930-VM";
    assert_eq!(listed_state(&mut z, r), "BACKUP");
    assert_eq!(
        ok(&mut z, r, "/opt/cloud/bin/checkrouter.sh"),
        "Status: BACKUP\n"
    );
    ok(
        &mut z,
        r,
        "systemctl start keepalived && ip link set eth1 up",
    );
    assert_eq!(listed_state(&mut z, r), "PRIMARY");
    assert_eq!(
        ok(&mut z, r, "/opt/cloud/bin/checkrouter.sh"),
        "Status: PRIMARY\n"
    );
    ok(&mut z, r, "ip link set eth1 down");
    assert_eq!(listed_state(&mut z, r), "BACKUP");
}

#[test]
fn systemctl_and_service() {
    let mut z = zone("vr-backup-loop");
    let r = "r-930-VM";
    assert_eq!(
        run(&mut z, r, "systemctl is-active keepalived"),
        out("inactive\n", "", 3)
    );
    assert_eq!(
        run(&mut z, r, "systemctl is-active nosuch"),
        out("inactive\n", "", 3)
    );
    assert_eq!(
        run(&mut z, r, "systemctl status nosuch"),
        out("", "Unit nosuch.service could not be found.\n", 4)
    );
    assert_eq!(run(&mut z, r, "systemctl start nosuch").status, 5);
    assert_eq!(
        run(&mut z, r, "systemctl -q is-active keepalived"),
        out("", "", 3)
    );
    ok(&mut z, r, "systemctl start keepalived.service");
    assert_eq!(ok(&mut z, r, "systemctl is-active keepalived"), "active\n");
    let status = ok(&mut z, r, "systemctl status keepalived");
    assert!(status.contains("Active: active (running)"), "{status}");
    ok(&mut z, r, "service keepalived stop");
    let status = run(&mut z, r, "service keepalived status");
    assert_eq!(status.status, 3);
    assert!(status.stdout.contains("inactive (dead)"));
    assert_eq!(
        run(&mut z, r, "service nosuch start"),
        out("", "nosuch: unrecognized service\n", 1)
    );
    assert_eq!(ok(&mut z, r, "systemctl is-enabled ssh"), "enabled\n");
    ok(&mut z, r, "systemctl disable ssh");
    assert_eq!(
        run(&mut z, r, "systemctl is-enabled ssh"),
        out("disabled\n", "", 1)
    );
    ok(&mut z, r, "systemctl restart ssh");
    assert!(z.guest(r).unwrap().active("ssh"));
}

#[test]
fn open_vswitch() {
    let mut z = zone("ovs-port-missing");
    let h = "kvm01";
    assert_eq!(ok(&mut z, h, "ovs-vsctl list-br"), "cloudbr0\ncloudbr1\n");
    assert_eq!(run(&mut z, h, "ovs-vsctl br-exists cloudbr1").status, 0);
    assert_eq!(run(&mut z, h, "ovs-vsctl br-exists br-nope").status, 2);
    let ports = ok(&mut z, h, "ovs-vsctl list-ports cloudbr1");
    assert!(!ports.lines().any(|p| p == "vnet3"), "{ports}");
    assert_eq!(
        run(&mut z, h, "ovs-vsctl list-ports br-nope"),
        out("", "ovs-vsctl: no bridge named br-nope\n", 1)
    );
    ok(&mut z, h, "ovs-vsctl add-port cloudbr1 vnet3");
    assert!(ok(&mut z, h, "ovs-vsctl list-ports cloudbr1")
        .lines()
        .any(|p| p == "vnet3"));
    assert_eq!(
        run(&mut z, h, "ovs-vsctl add-port cloudbr1 vnet3").status,
        1
    );
    assert!(ok(&mut z, h, "ovs-vsctl show").contains("        Port vnet3\n"));

    let flow = "table=0,priority=100,in_port=vnet3,actions=NORMAL";
    assert!(!ok(&mut z, h, "ovs-ofctl dump-flows cloudbr1").contains(flow));
    ok(&mut z, h, &format!("ovs-ofctl add-flow cloudbr1 {flow}"));
    let flows = ok(&mut z, h, "ovs-ofctl dump-flows cloudbr1");
    assert!(flows.lines().any(|l| l.ends_with(flow)), "{flows}");
    assert!(ok(&mut z, h, "ovs-ofctl show cloudbr1").contains("(vnet3): addr:"));
    assert_eq!(run(&mut z, h, "ovs-ofctl dump-flows br-nope").status, 1);
    ok(&mut z, h, "ovs-ofctl del-flows cloudbr1 in_port=vnet3");
    assert!(!ok(&mut z, h, "ovs-ofctl dump-flows cloudbr1").contains("vnet3"));
    ok(&mut z, h, "ovs-vsctl --may-exist add-port cloudbr1 vnet3");
    ok(&mut z, h, "ovs-vsctl del-port cloudbr1 vnet3");
    ok(&mut z, h, "ovs-vsctl --if-exists del-port cloudbr1 vnet3");
    assert_eq!(
        run(&mut z, h, "ovs-vsctl del-port cloudbr1 vnet3").status,
        1
    );
    // Shared state: the zone sees it
    assert!(!z.guest(h).unwrap().ovs["cloudbr1"]
        .ports
        .iter()
        .any(|p| p == "vnet3"));
}

#[test]
fn files() {
    let mut z = zone("catalina-perms");
    let m = "mgmt1";
    let path = crate::zone::model::CATALINA_OUT;
    assert_eq!(
        ok(&mut z, m, &format!("stat -L -c '%a %U %G %u %g' -- {path}")),
        "600 root root 0 0\n"
    );
    let size = z.guest(m).unwrap().files[path].content.len();
    assert_eq!(
        ok(&mut z, m, &format!("stat -c '%n|%s|%F|%A' {path}")),
        format!("{path}|{size}|regular file|-rw-------\n")
    );
    assert_eq!(
        ok(&mut z, m, "stat -c %F /var/log/cloudstack"),
        "directory\n"
    );
    assert_eq!(
        run(&mut z, m, "stat -c %a /nope"),
        out(
            "",
            "stat: cannot statx '/nope': No such file or directory\n",
            1
        )
    );
    ok(
        &mut z,
        m,
        &format!("chown cloud:cloud -- {path} && chmod 0644 -- {path}"),
    );
    assert_eq!(
        ok(&mut z, m, &format!("stat -c '%a %U %G' {path}")),
        "644 cloud cloud\n"
    );
    ok(&mut z, m, &format!("chgrp root {path}"));
    assert_eq!(z.guest(m).unwrap().files[path].group, "root");
    assert_eq!(run(&mut z, m, &format!("chmod u+x {path}")).status, 1);
    assert_eq!(run(&mut z, m, "chmod 644 /nope").status, 1);

    for (line, status) in [
        (format!("test -e {path}"), 0),
        (format!("test -f {path}"), 0),
        (format!("test -d {path}"), 1),
        ("test -d /var/log".to_string(), 0),
        ("[ -e /nope ]".to_string(), 1),
        (format!("[ -f {path} ]"), 0),
        ("[ ! -e /nope ]".to_string(), 0),
        (format!("test -r {path}"), 0),
    ] {
        assert_eq!(run(&mut z, m, &line).status, status, "{line}");
    }
    assert_eq!(run(&mut z, m, "[ -e /x").status, 2);

    let text = ok(&mut z, m, &format!("cat {path}"));
    assert_eq!(text, z.guest(m).unwrap().files[path].content);
    assert_eq!(ok(&mut z, m, "ls /var/log/cloudstack"), "management\n");
    assert_eq!(run(&mut z, m, "ls /nope").status, 2);
    let first = text.lines().next().unwrap_or("").to_string();
    let word = first.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(
        run(&mut z, m, &format!("grep -q '{word}' {path}")),
        out("", "", 0)
    );
    assert_eq!(
        run(&mut z, m, &format!("grep -q no-such-text-here {path}")).status,
        1
    );
    let count = ok(&mut z, m, &format!("grep -c '{word}' {path}"));
    assert!(count.trim().parse::<u32>().unwrap() >= 1);
    assert_eq!(run(&mut z, m, "grep x /nope").status, 2);
}

#[test]
fn head_of_dev_zero() {
    let mut z = zone("healthy");
    let zeros = run(&mut z, "kvm01", "head -c 1K /dev/zero; echo done >&2");
    assert_eq!(zeros.stdout, "\0".repeat(1024));
    assert_eq!((zeros.stderr.as_str(), zeros.status), ("done\n", 0));
    assert_eq!(
        run(&mut z, "kvm01", "head -c 5 /dev/zero >/dev/null"),
        out("", "", 0)
    );
    assert_eq!(
        run(&mut z, "kvm01", "head -c x /dev/zero"),
        out("", "head: invalid number of bytes: 'x'\n", 1)
    );
    for refused in [
        "head -n 1 /etc/hosts",
        "head -c 1 /etc/hosts",
        "head",
        "head -c 2G /dev/zero",
    ] {
        let r = run(&mut z, "kvm01", refused);
        assert_eq!(r.status, 2, "{refused}: {r:?}");
        assert!(r.stderr.starts_with("sim-ssh: "), "{refused}: {r:?}");
    }
}

#[test]
fn ss_lists_what_the_running_services_listen_on() {
    let mut z = zone("dnsmasq-dead");
    let r = "r-930-VM";
    let udp = ok(&mut z, r, "ss -lnu");
    assert!(!udp.contains(":53 ") && !udp.contains(":67 "), "{udp}");
    assert!(ok(&mut z, r, "ss -lnt").contains("0.0.0.0:3922 "));
    ok(&mut z, r, "systemctl restart dnsmasq");
    let udp = ok(&mut z, r, "ss -lnup");
    assert!(
        udp.contains("0.0.0.0:53 ") && udp.contains("0.0.0.0:67 "),
        "{udp}"
    );
    assert!(udp.contains("users:((\"dnsmasq\""), "{udp}");
    assert!(!udp.contains("tcp "), "{udp}");
    assert!(ok(&mut z, "kvm01", "ss -lnt").contains("0.0.0.0:22 "));
    assert_eq!(run(&mut z, r, "ss --bogus").status, 1);
}
