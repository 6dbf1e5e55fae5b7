//! The SSH transport and the engine against the real lab (`remedy_tests::netlab`): real OpenSSH
//! on a hypervisor node and two router nodes reachable only through it on port 3922, with real
//! dnsmasq, keepalived and Open vSwitch. The code under test runs in the lab's controller
//! namespace, which has no route out of the lab.
//!
//! Needs root and the lab's packages (`.ci/install-test-deps`); without them the suite prints
//! one `SKIPPED:` line past the harness's capture and its tests pass, except under `CI=true`,
//! where they fail.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remedy::app::RunOptions;
use remedy::inventory::Inventory;
use remedy::transport::ssh::SshTransport;
use remedy::transport::TransportError;
use remedy_tests::netlab::{self, NetLab, Options, HV_IP};
use remedy_tests::ssh::{options, run as ssh, transport, unreachable_reason};
use remedy_tests::{plan, run, write};

const T: Duration = Duration::from_secs(20);
const CAP: usize = 1 << 20;

/// A lab, or `None` (after the skip line) where none can be built.
fn lab(opts: Options) -> Option<NetLab> {
    if !netlab::available("lab") {
        return None;
    }
    Some(NetLab::up(opts).unwrap_or_else(|e| panic!("the lab did not come up: {e}")))
}

/// `ssh-keygen -lf`: the SHA256 fingerprint of a public key file.
fn fingerprint(pubkey: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pubkey)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn key_auth_and_a_wrong_key_refused() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    let good = lab.inventory();
    // The routers' key on the hypervisor, and the controller's key on a router: both refused.
    let wrong = good
        .replace(
            &format!(
                "ansible_host: {HV_IP}, ansible_ssh_private_key_file: {}",
                lab.controller_key().display()
            ),
            &format!(
                "ansible_host: {HV_IP}, ansible_ssh_private_key_file: {}",
                lab.cloud_key().display()
            ),
        )
        .replace(
            &format!(
                "ansible_ssh_private_key_file: {}\n        remedy_jump",
                lab.cloud_key().display()
            ),
            &format!(
                "ansible_ssh_private_key_file: {}\n        remedy_jump",
                lab.controller_key().display()
            ),
        );
    assert_ne!(good, wrong);
    lab.block_on(|| async {
        let (inv, t) = transport(&good, &lab.known_hosts());
        let out = ssh(&t, &inv, "hv1", "id -un; hostname", T).await.unwrap();
        assert_eq!((out.rc, out.stdout.as_str()), (Some(0), "root\nhv1\n"));
        let out = ssh(&t, &inv, "vr1", "id -un; hostname", T).await.unwrap();
        assert_eq!((out.rc, out.stdout.as_str()), (Some(0), "root\nr-vr1-VM\n"));
    });
    lab.block_on(|| async {
        let (inv, t) = transport(&wrong, &lab.known_hosts());
        let reason = unreachable_reason(ssh(&t, &inv, "hv1", "true", T).await.unwrap_err());
        assert!(
            reason.contains("authentication refused for user root"),
            "{reason}"
        );
        assert!(
            reason.contains(&lab.cloud_key().display().to_string()),
            "{reason}"
        );
        assert!(!reason.contains("PRIVATE KEY"), "{reason}");
    });
    let log = lab.sshd_log("hv1");
    assert!(log.contains("Accepted publickey for root"), "{log}");
}

#[test]
fn routers_are_reachable_only_through_the_hypervisor() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    let direct = lab.inventory().replace("        remedy_jump: hv1\n", "");
    lab.block_on(|| async {
        let (inv, t) = transport(&direct, &lab.known_hosts());
        let started = Instant::now();
        let reason = unreachable_reason(ssh(&t, &inv, "vr1", "true", T).await.unwrap_err());
        assert!(
            reason.to_lowercase().contains("unreachable"),
            "no route from the controller to a link-local address: {reason}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        let (inv, t) = transport(&lab.inventory(), &lab.known_hosts());
        let out = ssh(
            &t,
            &inv,
            "vr1",
            "echo out; echo err >&2; hostname; exit 3",
            T,
        )
        .await
        .unwrap();
        assert_eq!(out.rc, Some(3));
        assert_eq!(out.stdout, "out\nr-vr1-VM\n");
        assert_eq!(out.stderr, "err\n");
        let out = ssh(&t, &inv, "vr2", "ip -o -4 addr show dev eth0", T)
            .await
            .unwrap();
        assert!(out.stdout.contains("169.254.3.12/17"), "{}", out.stdout);
        // Both routers behind one connection to the hypervisor.
        assert_eq!(t.connections_made("hv1"), 1);
    });
    // The routers saw the hypervisor's address, not the controller's.
    let log = lab.sshd_log("vr1");
    assert!(
        log.contains("Accepted publickey for root from 169.254.0.1"),
        "{log}"
    );
}

/// A chain of two jumps: controller -> hv1 -> vr2 -> vr1, with an ECDSA key for hv1.
#[test]
fn a_chain_of_two_jumps_and_an_ecdsa_key() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    let ecdsa = lab.dir().join("keys/id_ecdsa");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f"])
        .arg(&ecdsa)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = std::fs::read_to_string(format!("{}.pub", ecdsa.display())).unwrap();
    lab.sh_ok(
        "hv1",
        &format!("echo '{}' >> /root/.ssh/authorized_keys", public.trim()),
    );
    let inv = lab
        .inventory()
        .replace(
            &lab.controller_key().display().to_string(),
            &ecdsa.display().to_string(),
        )
        .replace(
            "vr1: { ansible_host: 169.254.3.11,",
            "vr1: { ansible_host: 169.254.3.11, remedy_jump: vr2,",
        );
    assert!(inv.contains("remedy_jump: vr2"), "{inv}");
    lab.block_on(|| async {
        let (inv, t) = transport(&inv, &lab.known_hosts());
        let out = ssh(&t, &inv, "vr1", "hostname", T).await.unwrap();
        assert_eq!(out.stdout, "r-vr1-VM\n");
        assert_eq!(t.connections_made("hv1"), 1);
        assert_eq!(t.connections_made("vr2"), 1);
        assert_eq!(t.connections_made("vr1"), 1);
    });
    // vr1 was reached from vr2's control address, vr2 from hv1's.
    assert!(lab
        .sshd_log("vr1")
        .contains("Accepted publickey for root from 169.254.3.12"));
    assert!(lab
        .sshd_log("vr2")
        .contains("Accepted publickey for root from 169.254.0.1"));
    assert!(lab
        .sshd_log("hv1")
        .contains("Accepted publickey for root from 169.254.240.1"));
    assert!(
        lab.sshd_log("hv1").contains("ECDSA"),
        "{}",
        lab.sshd_log("hv1")
    );
}

/// The routers reached with the key only the hypervisor holds: hv1 runs `ssh` itself
/// (`remedy_nested_ssh_key`, what the CloudStack inventory source generates with
/// `system_vm_access: jump-host-ssh`), and with a controller-held key through a tunnel.
#[test]
fn routers_through_the_hypervisors_own_ssh_and_through_a_tunnel() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    let nested = lab.inventory().replace(
        &format!(
            "        ansible_ssh_private_key_file: {}\n        remedy_jump",
            lab.cloud_key().display()
        ),
        "        remedy_nested_ssh_key: /root/.ssh/id_rsa.cloud\n        remedy_jump",
    );
    assert!(nested.contains("remedy_nested_ssh_key"), "{nested}");
    lab.block_on(|| async {
        let (inv, t) = transport(&nested, &lab.known_hosts());
        let out = ssh(&t, &inv, "vr1", "hostname; echo 'it''s' >&2; exit 4", T)
            .await
            .unwrap();
        assert_eq!(out.rc, Some(4));
        assert_eq!(out.stdout, "r-vr1-VM\n");
        assert_eq!(out.stderr, "its\n");
        let out = ssh(&t, &inv, "vr2", "hostname", T).await.unwrap();
        assert_eq!(out.stdout, "r-vr2-VM\n");
        // Only the hypervisor has a connection from the controller.
        assert_eq!(t.connections_made("hv1"), 1);
        assert_eq!(t.connections_made("vr1"), 0);
    });
    lab.sh_ok("hv1", "mv /root/.ssh/id_rsa.cloud /root/.ssh/moved");
    lab.block_on(|| async {
        let (inv, t) = transport(&nested, &lab.known_hosts());
        let reason = unreachable_reason(ssh(&t, &inv, "vr1", "true", T).await.unwrap_err());
        assert!(
            reason.contains("hv1 could not reach root@169.254.3.11:3922"),
            "{reason}"
        );
        // The tunnel with the controller's copy of the key still works.
        let (inv, t) = transport(&lab.inventory(), &lab.known_hosts());
        assert_eq!(
            ssh(&t, &inv, "vr1", "hostname", T).await.unwrap().stdout,
            "r-vr1-VM\n"
        );
    });
}

#[test]
fn host_key_policies_strict_and_accept_new() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    let old = fingerprint(&lab.host_key_pub("vr1"));
    lab.new_host_key("vr1").unwrap();
    let new = fingerprint(&lab.host_key_pub("vr1"));
    assert_ne!(old, new);

    // strict (the default): the re-created router's new key is refused, loudly.
    lab.block_on(|| async {
        let (inv, t) = transport(&lab.inventory(), &lab.known_hosts());
        assert_eq!(
            ssh(&t, &inv, "hv1", "echo ok", T).await.unwrap().stdout,
            "ok\n"
        );
        let reason = unreachable_reason(ssh(&t, &inv, "vr1", "true", T).await.unwrap_err());
        for needle in ["169.254.3.11", &old, &new] {
            assert!(reason.contains(needle), "{needle} not in: {reason}");
        }
    });

    // accept-new: unknown hosts are recorded (the router as [ip]:3922), then strict works.
    let fresh = lab.dir().join("known_hosts.new");
    std::fs::write(&fresh, "").unwrap();
    let accept_new = lab.inventory().replace(
        "  vars:\n    ansible_user: root\n",
        "  vars:\n    ansible_user: root\n    remedy_host_key_policy: accept-new\n",
    );
    lab.block_on(|| async {
        let (inv, t) = transport(&accept_new, &fresh);
        for h in ["hv1", "vr1", "vr2"] {
            assert_eq!(ssh(&t, &inv, h, "true", T).await.unwrap().rc, Some(0));
        }
    });
    let recorded = std::fs::read_to_string(&fresh).unwrap();
    assert_eq!(recorded.lines().count(), 3, "{recorded}");
    assert!(recorded.contains("[169.254.3.11]:3922 "), "{recorded}");
    assert!(
        recorded.contains(&format!("{HV_IP} ssh-ed25519 ")),
        "{recorded}"
    );
    lab.block_on(|| async {
        let (inv, t) = transport(&lab.inventory(), &fresh);
        assert_eq!(
            ssh(&t, &inv, "vr1", "hostname", T).await.unwrap().stdout,
            "r-vr1-VM\n"
        );
    });
}

#[test]
fn ten_megabytes_through_the_jump_are_capped_and_counted() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    lab.block_on(|| async {
        let (inv, t) = transport(&lab.inventory(), &lab.known_hosts());
        let out = ssh(
            &t,
            &inv,
            "vr1",
            "head -c 10485760 /dev/zero; echo done >&2",
            Duration::from_secs(120),
        )
        .await
        .unwrap();
        assert_eq!(out.rc, Some(0));
        assert_eq!(out.stdout.len(), CAP);
        assert_eq!(out.dropped_bytes, 10_485_760 - CAP as u64);
        assert_eq!(out.stderr, "done\n");
    });
}

#[test]
fn a_hung_command_times_out_and_its_channel_is_closed() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    lab.block_on(|| async {
        let (inv, t) = transport(&lab.inventory(), &lab.known_hosts());
        ssh(&t, &inv, "vr1", "true", T).await.unwrap();
        let started = Instant::now();
        let err = ssh(
            &t,
            &inv,
            "vr1",
            "while :; do echo tick; sleep 0.2; done",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, TransportError::Timeout(d) if d == Duration::from_secs(1)),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        // Once its channel is closed, the loop dies of SIGPIPE at its next write.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = lab.sh("vr1", "pgrep -f 'echo tic[k]'");
            if !left.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the command outlived its channel"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The connection is still good.
        assert_eq!(
            ssh(&t, &inv, "vr1", "echo ok", T).await.unwrap().stdout,
            "ok\n"
        );
        assert_eq!(t.connections_made("vr1"), 1);
    });
}

#[test]
fn twenty_commands_reuse_one_connection_per_host() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    lab.block_on(|| async {
        let (inv, t) = transport(&lab.inventory(), &lab.known_hosts());
        let t = Arc::new(t);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            for h in ["hv1", "vr1"] {
                let (t, inv) = (t.clone(), inv.clone());
                tasks.spawn(async move { ssh(&t, &inv, h, &format!("echo {i}"), T).await });
            }
        }
        let mut n = 0;
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap().rc, Some(0));
            n += 1;
        }
        assert_eq!(n, 40);
        assert_eq!(t.connections_made("hv1"), 1);
        assert_eq!(t.connections_made("vr1"), 1);
    });
    // sshd's own record: one accepted login on each (the jump shares hv1's connection).
    for node in ["hv1", "vr1"] {
        let log = lab.sshd_log(node);
        assert_eq!(
            log.matches("Accepted publickey").count(),
            1,
            "{node}: {log}"
        );
    }
}

const KILLED: &str = r#"
name: lab-killed-mid-run
description: a change on the hypervisor, then a long command on a router whose sshd dies
steps:
  - id: mark
    on: hv1
    ssh: touch /root/remedy-marker
    check: test -e /root/remedy-marker
    rollback: rm -f /root/remedy-marker
  - id: long
    on: vr1
    needs: [mark]
    ssh: sleep 30 && touch /root/too-late
    rollback: rm -f /root/too-late
    timeout: 1m
"#;

/// Killing the router's sshd while a step runs there fails that step promptly, and the core
/// rolls back what the run had done on the hypervisor; the audit log records it all.
#[test]
fn killing_sshd_mid_run_fails_the_step_and_rolls_back() {
    let Some(lab) = lab(Options::default()) else {
        return;
    };
    let dir = lab.dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let pb = write(&dir, "killed.yml", KILLED);
    let inv_path = write(&dir, "inventory.yml", &lab.inventory());
    let audit = dir.join("audit.jsonl");
    let plan = plan(&pb, &inv_path, &[]);
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&inv_path)).unwrap());
    let opts = RunOptions {
        audit_log: Some(audit.clone()),
        ..Default::default()
    };
    let started = Instant::now();
    let (summary, killed_at) = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            lab.block_on(|| async {
                let t = SshTransport::new(inv.clone(), options(&lab.known_hosts()));
                run(plan, Arc::new(t), opts).await
            })
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lab.sh("vr1", "pgrep -f 'sleep 3[0]'").status.success() {
            assert!(Instant::now() < deadline, "the long step never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(lab
            .sh("hv1", "test -e /root/remedy-marker")
            .status
            .success());
        lab.kill_sshd("vr1");
        let killed_at = Instant::now();
        (runner.join().unwrap().1, killed_at)
    });
    assert!(killed_at.elapsed() < Duration::from_secs(15), "not prompt");
    assert!(started.elapsed() < Duration::from_secs(30));
    // vr1's command may or may not have run (lost mid-command) and its rollback cannot reach
    // it: exit 3, naming it, after the hypervisor's change was undone.
    assert_eq!(summary.exit.code(), 3, "{}", summary.status);
    assert_eq!(summary.undone, 1, "{}", summary.status);
    assert_eq!(summary.maybe_changed, 1, "{}", summary.status);
    assert!(
        summary.not_undone.len() == 1 && summary.not_undone[0].starts_with("long@vr1: "),
        "{:?}",
        summary.not_undone
    );
    assert!(
        !lab.sh("hv1", "test -e /root/remedy-marker")
            .status
            .success(),
        "the hypervisor's change was not rolled back"
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.contains("lost mid-command"), "{text}");
    assert!(text.contains("rm -f /root/remedy-marker"), "{text}");
    let report = remedy::audit::verify(&audit).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

const ROUTER_FIX: &str = r#"
name: lab-router-fix
description: the routers' public NIC is down (both FAULT); dnsmasq restarted; the guest bond port re-added
steps:
  - id: public_nic
    on: routers
    link: { dev: eth1, state: up }
  - id: dns
    on: routers
    service: { name: dnsmasq, state: started }
  - id: bond_port
    on: hv1
    ovs_port: { bridge: br0, port: bond2, state: present }
  - id: vlan_flow
    on: hv1
    ovs_flow:
      bridge: br-int
      flow: "table=0,priority=3,dl_vlan=3933,actions=mod_vlan_vid:1,NORMAL"
      state: present
verify:
  - id: vrrp
    on: vr1
    ssh: /opt/cloud/bin/checkrouter.sh
    changes: none
    retries: 30
    delay: 1s
    until: "'MASTER' in result.stdout"
"#;

/// The lab's state, read as root inside the nodes (not through remedy).
fn lab_state(lab: &NetLab) -> String {
    let mut s = String::new();
    for vr in ["vr1", "vr2"] {
        s += &lab.sh_ok(vr, "ip -o link show dev eth1 | grep -o 'state [A-Z]*'; systemctl is-active dnsmasq || true");
    }
    s += &lab.sh_ok(
        "hv1",
        "ovs-vsctl list-ports br0; ovs-ofctl dump-flows br-int | grep -c dl_vlan=3933 || true",
    );
    s
}

/// Real services: a dry-run against the lab changes nothing; the apply brings eth1 up on both
/// routers (keepalived leaves FAULT: one MASTER, one BACKUP), starts dnsmasq that was killed,
/// and re-adds the OVS port and flow on the hypervisor.
#[test]
fn dry_run_changes_nothing_then_the_fix_heals_the_routers() {
    let Some(lab) = lab(Options {
        services: true,
        eth1_up: false,
    }) else {
        return;
    };
    lab.sh_ok("vr2", "systemctl stop dnsmasq");
    for vr in ["vr1", "vr2"] {
        assert_eq!(
            lab.sh_ok(vr, "/opt/cloud/bin/checkrouter.sh"),
            "Status: FAULT\n"
        );
        // The symptom operators see: the public table's default route cannot be added.
        let out = lab.sh(
            vr,
            "ip route add default via 169.254.160.1 table Table_eth1",
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Nexthop has invalid gateway"));
    }
    let before = lab_state(&lab);
    assert!(
        before.contains("state DOWN") && before.contains("inactive"),
        "{before}"
    );

    let dir = lab.dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let pb = write(&dir, "fix.yml", ROUTER_FIX);
    let inv_path = write(&dir, "inventory.yml", &lab.inventory());
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&inv_path)).unwrap());
    let apply = |dry_run: bool| {
        let opts = RunOptions {
            dry_run,
            audit_log: Some(dir.join("audit.jsonl")),
            ..Default::default()
        };
        let plan = plan(&pb, &inv_path, &[]);
        lab.block_on(|| async {
            let t = SshTransport::new(inv.clone(), options(&lab.known_hosts()));
            run(plan, Arc::new(t), opts).await.1
        })
    };
    let dry = apply(true);
    assert_eq!(dry.exit.code(), 0, "{}", dry.status);
    assert_eq!(lab_state(&lab), before, "the dry-run changed the lab");

    let real = apply(false);
    assert_eq!(real.exit.code(), 0, "{}", real.status);
    let after = lab_state(&lab);
    assert_eq!(after.matches("state UP").count(), 2, "{after}");
    assert_eq!(after.matches("active\n").count(), 2, "{after}");
    assert!(after.contains("bond2\n"), "{after}");
    // keepalived settles the election within a few advertisement intervals of both links
    // coming up: for a moment both may say MASTER.
    let states = || -> Vec<String> {
        ["vr1", "vr2"]
            .iter()
            .map(|vr| lab.sh_ok(vr, "/opt/cloud/bin/checkrouter.sh"))
            .collect()
    };
    let want = ["Status: MASTER\n", "Status: BACKUP\n"];
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut now = states();
    while now != want && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(250));
        now = states();
    }
    assert_eq!(now, want);
    for vr in ["vr1", "vr2"] {
        lab.sh_ok(
            vr,
            "ip route add default via 169.254.160.1 table Table_eth1",
        );
    }
}

/// A DNS query for `router.lab` sent from inside `node` to dnsmasq on its guest address;
/// prints the answer's address, or fails.
const DNS_QUERY: &str = r#"python3 - "$1" <<'PY'
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in "router.lab".split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (sys.argv[1], 53))
r, _ = s.recvfrom(512)
assert r[:2] == b"\x42\x42", "not our answer"
assert struct.unpack(">H", r[6:8])[0] >= 1, "no answer record"
print(socket.inet_ntoa(r[-4:]))
PY"#;

fn dns_answer(lab: &NetLab, node: &str, server: &str) -> std::process::Output {
    lab.sh(node, &format!("set -- {server}\n{DNS_QUERY}"))
}

/// The shipped restart-dnsmasq playbook against a router node whose dnsmasq was killed: it
/// finds it down, restarts it through the hypervisor, and dnsmasq answers DNS again; a second
/// run has nothing to do.
#[test]
fn restart_dnsmasq_brings_a_killed_dnsmasq_back() {
    let Some(lab) = lab(Options {
        services: true,
        eth1_up: true,
    }) else {
        return;
    };
    let guest_ip = "169.254.170.12";
    let answer = dns_answer(&lab, "vr2", guest_ip);
    assert!(answer.status.success(), "{answer:?}");
    assert_eq!(String::from_utf8_lossy(&answer.stdout), "169.254.170.1\n");
    lab.sh_ok("vr2", "kill -KILL $(cat /run/dnsmasq/dnsmasq.pid)");
    assert!(
        !dns_answer(&lab, "vr2", guest_ip).status.success(),
        "dnsmasq is dead"
    );

    let dir = lab.dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let inv_path = write(&dir, "inventory.yml", &lab.inventory());
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&inv_path)).unwrap());
    let pb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/restart-dnsmasq.yml");
    let apply = |dry_run: bool| {
        let opts = RunOptions {
            dry_run,
            audit_log: Some(dir.join("audit.jsonl")),
            ..Default::default()
        };
        let plan = plan(
            &pb,
            &inv_path,
            &[
                ("routers", "vr2"),
                ("dhcp_hosts", "/run/dnsmasq/dhcphosts.txt"),
            ],
        );
        lab.block_on(|| async {
            let t = SshTransport::new(inv.clone(), options(&lab.known_hosts()));
            run(plan, Arc::new(t), opts).await.1
        })
    };
    let dry = apply(true);
    assert_eq!(dry.exit.code(), 0, "{}", dry.status);
    assert!(
        !dns_answer(&lab, "vr2", guest_ip).status.success(),
        "the dry-run started it"
    );

    let real = apply(false);
    assert_eq!(real.exit.code(), 0, "{}", real.status);
    assert_eq!(
        real.outcomes
            .get(&("restart".to_string(), "vr2".to_string())),
        Some(&remedy::event::Outcome::Changed),
        "{:?}",
        real.outcomes
    );
    let answer = dns_answer(&lab, "vr2", guest_ip);
    assert!(answer.status.success(), "{answer:?}");
    assert_eq!(String::from_utf8_lossy(&answer.stdout), "169.254.170.1\n");

    let again = apply(false);
    assert_eq!(again.exit.code(), 0, "{}", again.status);
    assert!(!again.applies, "{}", again.status);
    remedy::audit::verify(&dir.join("audit.jsonl")).expect("the audit log verifies");
}

/// The hypervisor node's Open vSwitch: br0's ports and br-int's flows (match and actions).
fn ovs_state(lab: &NetLab) -> (String, String) {
    let ports = lab.sh_ok("hv1", "ovs-vsctl list-ports br0");
    let flows = lab.sh_ok(
        "hv1",
        "ovs-ofctl dump-flows br-int | sed -n 's/.*\\(priority=[^ ]*\\) \\(actions=.*\\)/\\1 \\2/p' | sort",
    );
    (ports, flows)
}

/// The shipped readd-ovs-port-flow against the hypervisor node's real Open vSwitch: a failure
/// after it re-added the port and a flow removes exactly those (another port and another flow
/// stay); then a clean run restores them; then there is nothing to do.
#[test]
fn readd_ovs_port_flow_restores_and_rolls_back_exactly_its_own() {
    let Some(lab) = lab(Options {
        services: true,
        eth1_up: true,
    }) else {
        return;
    };
    // Someone else's port and flow, which nothing may touch.
    lab.sh_ok(
        "hv1",
        "ip link add keep0 type veth peer name keep0p && ovs-vsctl add-port br0 keep0 && \
         ovs-ofctl add-flow br-int 'table=0,priority=5,dl_vlan=100,actions=NORMAL'",
    );
    let before = ovs_state(&lab);
    assert!(!before.0.contains("bond2"), "{before:?}");
    assert!(before.0.contains("keep0\n"), "{before:?}");
    assert!(!before.1.contains("dl_vlan=3933"), "{before:?}");

    let dir = lab.dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let inv_path = write(&dir, "inventory.yml", &lab.inventory());
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&inv_path)).unwrap());
    let pb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/readd-ovs-port-flow.yml");
    let apply = |extra: &[(&str, &str)]| {
        let mut params = vec![
            ("hosts", "hv1"),
            ("bridge", "br0"),
            ("port", "bond2"),
            ("flow_bridge", "br-int"),
            ("flow_priority", "3"),
            ("flow_match", "dl_vlan=3933"),
            ("flow_actions", "mod_vlan_vid:1,NORMAL"),
        ];
        params.extend_from_slice(extra);
        let opts = RunOptions {
            audit_log: Some(dir.join("audit.jsonl")),
            ..Default::default()
        };
        let plan = plan(&pb, &inv_path, &params);
        lab.block_on(|| async {
            let t = SshTransport::new(inv.clone(), options(&lab.known_hosts()));
            run(plan, Arc::new(t), opts).await.1
        })
    };
    // The second flow's actions are refused by ovs-ofctl: the run fails after the port and
    // the first flow were added, and takes exactly those back.
    let failed = apply(&[
        ("flow2_match", "dl_vlan=1"),
        ("flow2_actions", "no_such_action"),
    ]);
    assert_eq!(failed.exit.code(), 2, "{}", failed.status);
    assert_eq!(failed.undone, 2, "{}", failed.status);
    assert_eq!(
        ovs_state(&lab),
        before,
        "the rollback left the bridges as they were"
    );

    let fixed = apply(&[]);
    assert_eq!(fixed.exit.code(), 0, "{}", fixed.status);
    let after = ovs_state(&lab);
    assert!(
        after.0.contains("bond2\n") && after.0.contains("keep0\n"),
        "{after:?}"
    );
    assert!(
        after
            .1
            .contains("priority=3,dl_vlan=3933 actions=mod_vlan_vid:1,NORMAL"),
        "{after:?}"
    );
    assert!(
        after.1.contains("priority=5,dl_vlan=100 actions=NORMAL"),
        "{after:?}"
    );

    let again = apply(&[]);
    assert_eq!(again.exit.code(), 0, "{}", again.status);
    assert!(!again.applies, "{}", again.status);
    remedy::audit::verify(&dir.join("audit.jsonl")).expect("the audit log verifies");
}

/// The shipped vr-restore-public-link (the SSH half of vr-backup-loop) against both router
/// nodes, eth1 down and keepalived in FAULT: it brings eth1 up and restores the public table's
/// default route on each, one at a time, through the hypervisor, and keepalived then elects
/// exactly one MASTER. A second run is not applicable (a router holds the link).
#[test]
fn vr_restore_public_link_lets_keepalived_elect_one_master() {
    let Some(lab) = lab(Options {
        services: true,
        eth1_up: false,
    }) else {
        return;
    };
    let states = || -> Vec<String> {
        ["vr1", "vr2"]
            .iter()
            .map(|vr| lab.sh_ok(vr, "/opt/cloud/bin/checkrouter.sh"))
            .collect()
    };
    assert_eq!(states(), ["Status: FAULT\n", "Status: FAULT\n"]);
    let dir = lab.dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let inv_path = write(&dir, "inventory.yml", &lab.inventory());
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&inv_path)).unwrap());
    let pb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/vr-restore-public-link.yml");
    let apply = |dry_run: bool| {
        let opts = RunOptions {
            dry_run,
            audit_log: Some(dir.join("audit.jsonl")),
            ..Default::default()
        };
        let plan = plan(&pb, &inv_path, &[("routers", "routers")]);
        lab.block_on(|| async {
            let t = SshTransport::new(inv.clone(), options(&lab.known_hosts()));
            run(plan, Arc::new(t), opts).await.1
        })
    };
    let links = || lab_state(&lab).matches("state UP").count();
    let dry = apply(true);
    assert_eq!(dry.exit.code(), 0, "{}", dry.status);
    assert_eq!(links(), 0, "the dry-run brought a link up");

    let real = apply(false);
    assert_eq!(real.exit.code(), 0, "{}", real.status);
    for vr in ["vr1", "vr2"] {
        let table = lab.sh_ok(vr, "ip route show table Table_eth1");
        assert!(
            table.starts_with(&format!("default via {} dev eth1", netlab::PUBLIC_GW)),
            "{vr}: {table}"
        );
    }
    // keepalived tracks eth1: once it is up, VRRP elects one MASTER.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = states();
    while now
        .iter()
        .filter(|s| s.as_str() == "Status: MASTER\n")
        .count()
        != 1
        || now
            .iter()
            .filter(|s| s.as_str() == "Status: BACKUP\n")
            .count()
            != 1
    {
        assert!(Instant::now() < deadline, "no single MASTER: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
        now = states();
    }

    let again = apply(false);
    assert_eq!(again.exit.code(), 0, "{}", again.status);
    assert!(!again.applies, "{}", again.status);
    remedy::audit::verify(&dir.join("audit.jsonl")).expect("the audit log verifies");
}

/// The shipped chmod-catalina-out against a file on the hypervisor node standing in for a
/// management server: catalina.out owned by root with mode 0600, and a management service
/// that refuses to start while its user (here `nobody`) cannot write the file. The run gives
/// the file back and starts the service; a second run is not applicable.
#[test]
fn chmod_catalina_out_lets_the_service_start_again() {
    let Some(lab) = lab(Options {
        services: true,
        eth1_up: true,
    }) else {
        return;
    };
    let log = "/var/log/cloudstack/management/catalina.out";
    lab.sh_ok(
        "hv1",
        &format!(
            "mkdir -p /var/log/cloudstack/management && echo old > {log} && chmod 600 {log} && \
             chown root:root {log} && \
             printf '%s\\n' '#!/bin/sh' \
               \"su -s /bin/sh nobody -c 'test -w {log}' || {{ echo 'catalina.out: Permission denied' >&2; exit 1; }}\" \
               'setsid sleep 1000000 </dev/null >/dev/null 2>&1 & echo $! > /run/svc/cloudstack-management.pid' \
               > /run/svc/cloudstack-management.start && chmod 755 /run/svc/cloudstack-management.start"
        ),
    );
    let start = lab.sh("hv1", "systemctl start cloudstack-management");
    assert!(
        !start.status.success(),
        "the service starts with the file broken"
    );
    let file = || lab.sh_ok("hv1", &format!("stat -c '%a %U %G' {log}"));
    let active = || lab.sh_ok("hv1", "systemctl is-active cloudstack-management || true");
    assert_eq!(
        (file(), active()),
        ("600 root root\n".into(), "inactive\n".into())
    );

    let dir = lab.dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let inv_path = write(&dir, "inventory.yml", &lab.inventory());
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&inv_path)).unwrap());
    let pb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/chmod-catalina-out.yml");
    let apply = |dry_run: bool| {
        let opts = RunOptions {
            dry_run,
            audit_log: Some(dir.join("audit.jsonl")),
            ..Default::default()
        };
        let params = [
            ("hosts", "hv1"),
            ("owner", "nobody"),
            ("group", "nogroup"),
            ("wait_for_api", "false"),
        ];
        let plan = plan(&pb, &inv_path, &params);
        lab.block_on(|| async {
            let t = SshTransport::new(inv.clone(), options(&lab.known_hosts()));
            run(plan, Arc::new(t), opts).await.1
        })
    };
    let dry = apply(true);
    assert_eq!(dry.exit.code(), 0, "{}", dry.status);
    assert_eq!(
        (file(), active()),
        ("600 root root\n".into(), "inactive\n".into())
    );

    let real = apply(false);
    assert_eq!(real.exit.code(), 0, "{}", real.status);
    assert_eq!(
        (file(), active()),
        ("644 nobody nogroup\n".into(), "active\n".into())
    );

    let again = apply(false);
    assert_eq!(again.exit.code(), 0, "{}", again.status);
    assert!(!again.applies, "{}", again.status);
    remedy::audit::verify(&dir.join("audit.jsonl")).expect("the audit log verifies");
}

/// What of a lab is still on the machine: its namespaces and its directory.
fn leftovers(name: &str) -> Vec<String> {
    let mut left: Vec<String> = ["ctl", "hv1", "vr1", "vr2"]
        .iter()
        .map(|n| format!("/run/netns/{name}-{n}"))
        .filter(|p| Path::new(p).exists())
        .collect();
    let dir = Path::new(netlab::ROOT).join(name);
    if dir.exists() {
        left.push(dir.display().to_string());
    }
    left
}

/// Host PIDs of the lab's sshd processes (each node's sshd runs as `sshd -f DIR/NODE/...`).
fn lab_sshds(name: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("sshd -f {}/{name}/", netlab::ROOT)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A test that panics with a lab up leaves nothing behind: namespaces, processes, files.
#[test]
fn a_panicking_test_leaves_nothing_behind() {
    if !netlab::available("lab") {
        return;
    }
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let lab = NetLab::up(Options::default()).unwrap();
        *name.lock().unwrap() = lab.name().to_string();
        assert_eq!(lab_sshds(lab.name()).len(), 3);
        panic!("on purpose");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty());
    assert_eq!(leftovers(&name), Vec::<String>::new());
    assert_eq!(lab_sshds(&name), Vec::<String>::new());
}

/// Not run by itself: builds a lab, prints its name and waits to be killed (the "crashed
/// run" of the next test).
#[test]
#[ignore = "helper of a_crashed_runs_lab_is_swept_at_the_next_start"]
fn helper_builds_a_lab_and_waits() {
    if std::env::var("REMEDY_NETLAB_HELPER").is_err() {
        return;
    }
    let lab = NetLab::up(Options::default()).unwrap();
    println!("LAB {}", lab.name());
    std::thread::sleep(Duration::from_secs(120));
}

/// A run killed with SIGKILL cannot tear its lab down; the next lab's start-up sweep does.
#[test]
fn a_crashed_runs_lab_is_swept_at_the_next_start() {
    use std::io::{BufRead, BufReader};
    if !netlab::available("lab") {
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_builds_a_lab_and_waits",
            "--ignored",
            "--nocapture",
        ])
        .env("REMEDY_NETLAB_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut name = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("LAB ") {
            name = n.to_string();
            break;
        }
    }
    assert!(!name.is_empty(), "the helper built no lab");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(leftovers(&name).len(), 5, "the crash left the lab in place");
    assert_eq!(lab_sshds(&name).len(), 3);

    let lab = NetLab::up(Options::default()).unwrap();
    assert_eq!(leftovers(&name), Vec::<String>::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab_sshds(&name).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", lab_sshds(&name));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(lab);
}

/// A saved plan against the hypervisor node's real Open vSwitch: planning changes nothing;
/// someone adding the port by hand after the plan was made gets the plan refused (exit 5)
/// with nothing run that changes anything (the flow is not added either); once the bridge is
/// back as planned, the same plan applies.
#[test]
fn a_saved_plan_is_held_to_the_real_bridges() {
    let Some(lab) = lab(Options {
        services: true,
        eth1_up: true,
    }) else {
        return;
    };
    let before = ovs_state(&lab);
    assert!(!before.0.contains("bond7"), "{before:?}");
    let dir = lab.dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let inv_path = write(&dir, "inventory.yml", &lab.inventory());
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&inv_path)).unwrap());
    let pb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/readd-ovs-port-flow.yml");
    let params = [
        ("hosts", "hv1"),
        ("bridge", "br0"),
        ("port", "bond7"),
        ("flow_bridge", "br-int"),
        ("flow_priority", "3"),
        ("flow_match", "dl_vlan=3977"),
        ("flow_actions", "mod_vlan_vid:1,NORMAL"),
    ];
    let extra: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file = dir.join("ovs.plan.json");
    let audit = dir.join("audit.jsonl");
    let transport = || -> Arc<dyn remedy::transport::Transport> {
        Arc::new(SshTransport::new(inv.clone(), options(&lab.known_hosts())))
    };
    let (_, summary, saved) = lab.block_on(|| async {
        let making = remedy::planfile::Making {
            playbook_path: &pb,
            inventory: std::slice::from_ref(&inv_path),
            extra: &extra,
            tags: &[],
            valid_for: Duration::from_secs(3600),
        };
        let opts = RunOptions {
            audit_log: Some(audit.clone()),
            ..Default::default()
        };
        let (_tx, cancel) = tokio::sync::watch::channel(false);
        let plan = plan(&pb, &inv_path, &params);
        remedy::app::make_plan(plan, transport(), opts, &making, Some(&file), cancel)
            .await
            .expect("remedy plan")
    });
    let saved = saved.unwrap_or_else(|| panic!("{}", summary.status));
    // The port will change; the flow, on the same host after it, is decided during the run.
    assert_eq!(saved.plan.counts(), (1, 0, 1), "{saved:?}");
    assert_eq!(ovs_state(&lab), before, "planning changed nothing");

    let apply = || {
        lab.block_on(|| async {
            let a = remedy::planfile::Applying {
                file: file.clone(),
                expect_id: Some(saved.id.clone()),
                extra: Vec::new(),
                inventory: Vec::new(),
                on_drift: remedy::planfile::OnDrift::Abort,
                require_approval: false,
                four_eyes: false,
                approval_key: None,
                audit: audit.clone(),
            };
            let opened = a.open(jiff::Timestamp::now()).expect("the plan opens");
            let plan = opened
                .rebuild(Inventory::load(&opened.inventory).unwrap())
                .expect("rebuilt as planned");
            let opts = RunOptions {
                audit_log: Some(audit.clone()),
                from_plan: Some(Arc::new(opened.from_plan(a.on_drift))),
                ..Default::default()
            };
            run(plan, transport(), opts).await.1
        })
    };
    // Someone adds the port by hand: refused, and the flow is not added either.
    lab.sh_ok("hv1", "ovs-vsctl add-port br0 bond7");
    let by_hand = ovs_state(&lab);
    let refused = apply();
    assert_eq!(refused.exit.code(), 5, "{}", refused.status);
    assert!(
        refused.drift.iter().any(|d| d.target == "hv1"),
        "{:?}",
        refused.drift
    );
    assert_eq!(ovs_state(&lab), by_hand, "nothing ran");

    // Back as planned: the same plan applies.
    lab.sh_ok("hv1", "ovs-vsctl del-port br0 bond7");
    let applied = apply();
    assert_eq!(applied.exit.code(), 0, "{}", applied.status);
    let after = ovs_state(&lab);
    assert!(after.0.contains("bond7\n"), "{after:?}");
    assert!(
        after
            .1
            .contains("priority=3,dl_vlan=3977 actions=mod_vlan_vid:1,NORMAL"),
        "{after:?}"
    );
    remedy::audit::verify(&audit).expect("the audit log verifies");
}

/// The benchmark scripts (bench/), run small, so that they keep working: `fleet.py` starts
/// real sshd hosts on 127.0.1.x and runs the workload with the floor and remedy (checking
/// every host's output file and that the audit log verifies), `simzone.py` runs the simulated
/// zone's workload (checking the fix came to "changed" on every machine). Both write their
/// Markdown table; both end every process they started.
#[test]
fn the_benchmark_scripts_run_small() {
    if !netlab::available("bench") {
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ssh-floor"))
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        bin_dir.join("remedy").is_file(),
        "{}: no remedy binary (the workspace's tests build it)",
        bin_dir.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bench = |script: &str, args: &[&str]| -> String {
        let out_file = dir.path().join(format!("{script}.md"));
        let out = std::process::Command::new("python3")
            .arg(root.join("bench").join(script))
            .args(args)
            .arg("--no-build")
            .arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--work")
            .arg(dir.path().join(format!("{script}-work")))
            .arg("--out")
            .arg(&out_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&out_file).unwrap()
    };
    let fleet = bench(
        "fleet.py",
        &[
            "--hosts",
            "3",
            "--runs",
            "1",
            "--tools",
            "floor,remedy",
            "--port",
            "2299",
        ],
    );
    assert!(fleet.contains("| 3 | floor |"), "{fleet}");
    assert!(fleet.contains("| 3 | remedy |"), "{fleet}");
    assert!(fleet.contains("- 3 hosts: remedy / floor wall"), "{fleet}");
    let sim = bench(
        "simzone.py",
        &[
            "--hosts",
            "12",
            "--vpcs",
            "3",
            "--jumps",
            "2",
            "--runs",
            "1",
            "--validate-rounds",
            "1",
        ],
    );
    for row in [
        "| dry-run | remedy |",
        "| dry-run | floor |",
        "| apply | remedy |",
        "| apply | floor |",
    ] {
        assert!(sim.contains(row), "{row} missing:\n{sim}");
    }
    assert!(sim.contains("| vr-backup-loop.yml |"), "{sim}");
    // Nothing left running: no sshd of the fleet, no lab.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &dir.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
