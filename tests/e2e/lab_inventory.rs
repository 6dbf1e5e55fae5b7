//! `remedy lab --write-inventory` as a newcomer uses it: the lab in its own process, then
//! `remedy apply` with the inventory it wrote, for every shipped playbook on its broken
//! scenario. The inventory reads the zone's machines and groups from its API (so the shipped
//! playbooks' targets resolve), pins the machines that listen, and checks system VMs against
//! the lab's own `known_hosts` (a system VM deployed by the fix is recorded there, never in
//! the user's `~/.ssh/known_hosts`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use remedy_tests::lab::Lab;
use remedy_tests::zone::{guest_vlan, router_states};
use serde_json::Value;

/// The `remedy` command line (see `tests/src/bin/remedy-cli.rs`).
const REMEDY: &str = env!("CARGO_BIN_EXE_remedy-cli");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A shipped playbook on its broken scenario, and the scenario's own health check (the same
/// predicates as `shipped.rs`).
struct Case {
    playbook: &'static str,
    scenario: &'static str,
    params: &'static [(&'static str, &'static str)],
    extra: &'static [&'static str],
    healthy: fn(&Value) -> bool,
}

fn vms(w: &Value) -> impl Iterator<Item = &Value> {
    w["vms"].as_array().unwrap().iter()
}

fn backup_loop_fixed(w: &Value) -> bool {
    let r = router_states(w);
    r.len() == 2
        && r.iter()
            .all(|(_, _, keepalived, conf)| *keepalived && *conf)
        && r.iter().filter(|(_, eth1, _, _)| *eth1).count() == 1
        && guest_vlan(w) == "1000-1099"
}

fn dnsmasq_active(w: &Value) -> bool {
    vms(w)
        .any(|v| v["name"] == "r-930-VM" && v["guest"]["services"]["dnsmasq"]["state"] == "active")
}

fn public_links_restored(w: &Value) -> bool {
    let routers: Vec<&Value> = vms(w).filter(|v| v["kind"]["type"] == "router").collect();
    routers.len() == 2
        && routers.iter().all(|r| {
            r["guest"]["links"]["eth1"]["up"] == true
                && r["guest"]["routes"]["Table_eth1"][0]
                    .as_str()
                    .is_some_and(|x| x.starts_with("default via 198.51.100.1 dev eth1"))
        })
}

fn ssvm_recreated(w: &Value) -> bool {
    let ssvms: Vec<&Value> = vms(w)
        .filter(|v| v["kind"]["systemvmtype"] == "secondarystoragevm" && v["state"] == "Running")
        .collect();
    ssvms.len() == 1
        && ssvms[0]["kind"]["allowed_sites"]
            .as_str()
            .is_some_and(|s| s.split(',').any(|c| c == "10.20.0.0/16"))
}

fn catalina_fixed(w: &Value) -> bool {
    let f = &w["mgmt"]["guest"]["files"]["/var/log/cloudstack/management/catalina.out"];
    f["mode"] == 0o644 && f["owner"] == "cloud" && f["group"] == "cloud"
}

fn ovs_port_back(w: &Value) -> bool {
    let Some(kvm01) = w["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "kvm01")
    else {
        return false;
    };
    let br = &kvm01["guest"]["ovs"]["cloudbr1"];
    br["ports"].as_array().unwrap().iter().any(|p| p == "vnet3")
        && br["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "table=0,priority=100,in_port=vnet3,actions=NORMAL")
}

const CASES: &[Case] = &[
    Case {
        playbook: "fix-vlan-range",
        scenario: "vr-backup-loop",
        params: &[("range", "1000-1099")],
        extra: &[],
        healthy: |w| guest_vlan(w) == "1000-1099",
    },
    Case {
        playbook: "vr-backup-loop",
        scenario: "vr-backup-loop",
        params: &[("vpc", "web-vpc"), ("vlan_range", "1000-1099")],
        extra: &[],
        healthy: backup_loop_fixed,
    },
    Case {
        playbook: "restart-dnsmasq",
        scenario: "dnsmasq-dead",
        params: &[("vpc", "web-vpc")],
        extra: &[],
        healthy: dnsmasq_active,
    },
    Case {
        playbook: "vr-restore-public-link",
        scenario: "vr-backup-loop",
        params: &[("routers", "vpc_web_vpc")],
        extra: &[],
        healthy: public_links_restored,
    },
    Case {
        playbook: "recreate-ssvm",
        scenario: "ssvm-broken",
        params: &[("add_site", "10.20.0.0/16")],
        extra: &["--allow-irreversible"],
        healthy: ssvm_recreated,
    },
    Case {
        playbook: "chmod-catalina-out",
        scenario: "catalina-perms",
        params: &[],
        extra: &[],
        healthy: catalina_fixed,
    },
    Case {
        playbook: "readd-ovs-port-flow",
        scenario: "ovs-port-missing",
        params: &[
            ("hosts", "kvm01"),
            ("bridge", "cloudbr1"),
            ("port", "vnet3"),
            ("flow_match", "in_port=vnet3"),
        ],
        extra: &[],
        healthy: ovs_port_back,
    },
];

fn remedy(args: &[&str], home: &Path, state: &Path) -> Output {
    Command::new(REMEDY)
        .args(args)
        .current_dir(repo_root())
        .env("HOME", home)
        .env("REMEDY_STATE_DIR", state)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run remedy")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Every shipped playbook fixes its broken scenario through the inventory `remedy lab` wrote,
/// both processes real, from a directory other than the inventory's.
#[test]
fn every_shipped_playbook_fixes_its_scenario_through_the_written_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&home).unwrap();
    for case in CASES {
        let name = case.playbook;
        let work = dir.path().join(name);
        std::fs::create_dir_all(&work).unwrap();
        let inv = work.join("lab-live.yml");
        let lab = Lab::start(REMEDY, case.scenario, &inv, &home);
        let inv_arg = inv.to_str().unwrap();

        // One group vocabulary: the API's.
        let written = std::fs::read_to_string(&inv).unwrap();
        assert!(!written.contains("systemvms"), "{written}");
        assert!(
            written.contains("remedy_cloudstack_inventory:"),
            "{written}"
        );
        let o = remedy(&["inventory", "-i", inv_arg, "--graph"], &home, &state);
        let graph = text(&o);
        assert_eq!(o.status.code(), Some(0), "{name}: {graph}");
        for group in [
            "@hypervisors:",
            "@management:",
            "@routers:",
            "@ssvm:",
            "@cpvm:",
            "@system_vms:",
            "@vpc_web_vpc:",
        ] {
            assert!(graph.contains(group), "{name}: no {group} in\n{graph}");
        }
        assert!(!graph.contains("systemvms"), "{graph}");

        let before = lab.world();
        assert!(!(case.healthy)(&before), "{}: starts broken", case.scenario);
        let known_hosts = PathBuf::from(format!("{}.known_hosts", inv.display()));
        let known_before = lines(&known_hosts);

        let audit = work.join("audit.jsonl");
        let params: Vec<String> = case
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut args: Vec<&str> = vec!["apply", name, "-i", inv_arg];
        for p in &params {
            args.extend(["-e", p.as_str()]);
        }
        args.extend(case.extra);
        args.extend(["--yes", "--audit-log", audit.to_str().unwrap()]);
        let o = remedy(&args, &home, &state);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{name}: {out}");
        assert!(out.contains("ok (exit 0)"), "{name}: {out}");
        assert!(
            (case.healthy)(&lab.world()),
            "{name}: the zone is fixed\n{out}"
        );
        remedy::audit::verify(&audit).expect("the audit log verifies");

        // A system VM deployed by the fix is recorded in the lab's known_hosts, on first
        // contact; the machines that were there are not recorded again.
        let known_after = lines(&known_hosts);
        let added: Vec<&String> = known_after
            .iter()
            .filter(|l| !known_before.contains(l))
            .collect();
        if name == "recreate-ssvm" {
            assert!(out.contains("refreshed +s-"), "{out}");
            assert_eq!(added.len(), 1, "{added:?}");
            assert!(is_system_vm_line(added[0]), "{added:?}");
        } else {
            assert!(added.is_empty(), "{name}: {added:?}");
        }
        assert!(
            !home.join(".ssh").exists(),
            "{name}: nothing written to ~/.ssh"
        );
        lab.stop();
    }
}

/// `[169.254.x.y]:3922 ssh-ed25519 ...`: a system VM, keyed by its link-local address.
fn is_system_vm_line(line: &str) -> bool {
    line.starts_with("[169.254.") && line.contains("]:3922 ssh-ed25519 ")
}
