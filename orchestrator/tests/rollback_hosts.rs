//! `remedy rollback RUN` finds the hosts its run changed: the real binary against `remedy lab`
//! in its own process, through the inventory the lab writes (whose routers and system VMs come
//! from the CloudStack API, reached through their hypervisor). The run is applied from one
//! directory and rolled back from another, without `-i` (the run's recorded inventory is read
//! again, with its CloudStack source) and with it; the lab's `GET /sim/state` tells whether the
//! zone is back as it was, and `remedy audit verify` checks the log.

mod support;

use serde_json::Value;
use support::{text, Dirs, Lab};

/// Each router's public link: name, eth1 up, the public table's routes.
fn public_links(world: &Value) -> Vec<(String, Value, Value)> {
    world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"]["type"] == "router")
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["guest"]["links"]["eth1"]["up"].clone(),
                r["guest"]["routes"]["Table_eth1"].clone(),
            )
        })
        .collect()
}

/// The Guest physical network's VLAN range.
fn guest_vlan(world: &Value) -> String {
    world["physnets"][0]["vlan"].as_str().unwrap().to_string()
}

/// The routers of `vpc_web_vpc`, changed through their hypervisor by `vr-restore-public-link`,
/// are brought back by `remedy rollback RUN` run elsewhere: without `-i` (the recorded
/// inventory, its CloudStack source read again), then with it.
#[test]
fn rollback_finds_the_routers_the_cloudstack_source_generated() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    let before = public_links(&lab.world());
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before.iter().all(|(_, up, _)| *up == false),
        "the scenario starts with the public links down: {before:?}"
    );
    let inv = d.inventory();
    let inv = inv.to_str().unwrap();

    for with_inventory in [false, true] {
        let run = d.apply("vr-restore-public-link", &["routers=vpc_web_vpc"]);
        let fixed = public_links(&lab.world());
        assert!(
            fixed.iter().all(|(_, up, _)| *up == true),
            "applied: {fixed:?}"
        );
        let o = if with_inventory {
            d.rollback(&run, &["-i", inv])
        } else {
            d.rollback(&run, &[])
        };
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "-i: {with_inventory}: {out}");
        assert!(
            out.contains(&format!("run {run} rolled back: ")) && out.contains("(exit 0)"),
            "{out}"
        );
        assert!(!out.contains("NOT UNDONE"), "{out}");
        assert_eq!(
            public_links(&lab.world()),
            before,
            "-i: {with_inventory}: the links are down again, the routes gone\n{out}"
        );
        d.verify();
        let rollback = d.run_start(&format!("rollback of {run}"));
        assert_eq!(rollback["rollback_of"], run.as_str());
        assert_eq!(
            rollback["inventory_origin"]["cloudstack_source"], true,
            "{rollback}"
        );
    }

    // The run recorded its inventory as given and made absolute, and that it used the
    // CloudStack source; the API secret is not in the log.
    let start = d.run_start("vr-restore-public-link");
    let origin = &start["inventory_origin"];
    assert_eq!(origin["paths"][0]["given"], "lab-live.yml", "{start}");
    assert_eq!(origin["paths"][0]["absolute"], inv, "{start}");
    assert_eq!(origin["cloudstack_source"], true, "{start}");
    assert_eq!(
        origin["cloudstack_endpoint"],
        format!("http://{}/client/api", lab.addr),
        "{start}"
    );
    let secret = std::fs::read_to_string(format!("{inv}.secret")).unwrap();
    let log = std::fs::read_to_string(&d.audit).unwrap();
    assert!(!log.contains(secret.trim()), "the secret key is in the log");
    lab.stop();
}

/// `fix-vlan-range` (a change through the API, on localhost) is rolled back the same way.
#[test]
fn rollback_undoes_an_api_change_with_and_without_the_inventory() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    let before = guest_vlan(&lab.world());
    assert_ne!(before, "1000-1099");
    let inv = d.inventory();
    let inv = inv.to_str().unwrap();
    for with_inventory in [false, true] {
        let run = d.apply("fix-vlan-range", &["range=1000-1099"]);
        assert_eq!(guest_vlan(&lab.world()), "1000-1099");
        let o = if with_inventory {
            d.rollback(&run, &["-i", inv])
        } else {
            d.rollback(&run, &[])
        };
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "-i: {with_inventory}: {out}");
        assert!(
            out.contains(&format!("run {run} rolled back: ")) && out.contains("(exit 0)"),
            "{out}"
        );
        assert_eq!(guest_vlan(&lab.world()), before, "{out}");
        d.verify();
    }
    lab.stop();
}

/// A recorded inventory that is gone is an error that says to pass `-i` (nothing undone); one
/// that changed since the run is a warning, and the rollback goes on.
#[test]
fn a_gone_or_changed_inventory_is_said_so() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    let before = guest_vlan(&lab.world());
    let run = d.apply("fix-vlan-range", &["range=1000-1099"]);

    let inv = d.inventory();
    let moved = d.apply_dir.join("moved.yml");
    std::fs::rename(&inv, &moved).unwrap();
    let o = d.rollback(&run, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(
        out.contains(&format!(
            "run {run} read its inventory from {}, which is gone",
            inv.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "pass the inventory that reaches the run's hosts: remedy rollback {run} -i FILE --yes"
        )),
        "{out}"
    );
    assert_eq!(guest_vlan(&lab.world()), "1000-1099", "nothing was undone");

    let mut text_now = std::fs::read_to_string(&moved).unwrap();
    text_now.push_str("# edited after the run\n");
    std::fs::write(&inv, text_now).unwrap();
    let o = d.rollback(&run, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "warning: the inventory of run {run} changed since the run ({}): its hosts are \
             looked up as the files say now",
            inv.display()
        )),
        "{out}"
    );
    assert_eq!(guest_vlan(&lab.world()), before, "{out}");
    d.verify();
    lab.stop();
}

/// A host that is not in the inventory given: its change is left in place (exit 3), and the
/// message names the host and the run and says what to do; a later rollback with the run's own
/// inventory undoes it.
#[test]
fn a_host_missing_from_the_inventory_is_named_with_what_to_do() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    let before = public_links(&lab.world());
    let run = d.apply("vr-restore-public-link", &["routers=vpc_web_vpc"]);

    let bare = d.rollback_dir.join("bare.yml");
    std::fs::write(&bare, "all:\n  hosts:\n    localhost:\n").unwrap();
    let o = d.rollback(&run, &["-i", "bare.yml"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    for (router, _, _) in &before {
        assert!(
            out.contains(&format!(
                "not undone: host {router}, changed by run {run}, is not in the inventory now \
                 (read from bare.yml); it may have been removed or renamed since the run. If it \
                 still exists, run `remedy rollback {run} -i FILE --yes` with an inventory that \
                 has it; otherwise undo the change by hand (`remedy audit show {run}` has its \
                 undo)"
            )),
            "{router}: {out}"
        );
    }
    assert!(
        out.contains(&format!("rollback of {run} INCOMPLETE (exit 3)")),
        "{out}"
    );
    assert_ne!(public_links(&lab.world()), before, "nothing was undone");

    let o = d.rollback(&run, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(public_links(&lab.world()), before, "{out}");
    d.verify();
    lab.stop();
}

/// Recreates the SSVM, reads the inventory again, and changes a file on the new SSVM: a host
/// the run found only after its refresh.
const RECREATE_THEN_CHANGE: &str = r#"
name: recreate-then-change
description: recreate the SSVM, then change a file on the new one
detect:
  - id: ssvms
    api: { command: listSystemVms, args: { systemvmtype: secondarystoragevm } }
steps:
  - id: destroy
    api: { command: destroySystemVm, args: { id: "{{ ssvms.items[0].id }}" } }
    irreversible: CloudStack deploys a new SSVM in its place
  - id: replacement
    api: { command: listSystemVms, args: { systemvmtype: secondarystoragevm } }
    retries: 120
    delay: 500ms
    until: >-
      result.items | length == 1 and result.items[0].id != ssvms.items[0].id
      and result.items[0].agentstate == "Up"
    refresh_inventory: true
  - id: cmdline_mode
    on: ssvm
    file: { path: /var/cache/cloud/cmdline, mode: "0600" }
"#;

/// The running SSVMs: name, and the mode of `/var/cache/cloud/cmdline`.
fn ssvm_cmdline_modes(world: &Value) -> Vec<(String, Value)> {
    world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"]["systemvmtype"] == "secondarystoragevm" && v["state"] == "Running")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["guest"]["files"]["/var/cache/cloud/cmdline"]["mode"].clone(),
            )
        })
        .collect()
}

/// A change on a host that existed only after the run's mid-run refresh (a new SSVM) is undone:
/// the rollback reads the CloudStack source again, so the new SSVM is found (with `-i` as
/// without). The SSVM's destruction itself is irreversible: exit 3 for that one alone.
#[test]
fn rollback_finds_a_host_that_appeared_after_a_refresh() {
    let d = Dirs::new();
    let lab = Lab::start("ssvm-broken", &d.inventory(), &d.home);
    std::fs::write(
        d.apply_dir.join("recreate-then-change.yml"),
        RECREATE_THEN_CHANGE,
    )
    .unwrap();
    let inv = d.inventory();
    let inv = inv.to_str().unwrap();
    for with_inventory in [false, true] {
        let before = ssvm_cmdline_modes(&lab.world());
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0].1, 0o644, "{before:?}");
        let o = d.remedy(
            &d.apply_dir,
            &[
                "apply",
                "./recreate-then-change.yml",
                "-i",
                "lab-live.yml",
                "--allow-irreversible",
                "--yes",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let run = d.last_run("recreate-then-change");
        let after = ssvm_cmdline_modes(&lab.world());
        assert_eq!(after.len(), 1, "{after:?}");
        let new_ssvm = after[0].0.clone();
        assert_ne!(new_ssvm, before[0].0, "a new SSVM");
        assert_eq!(after[0].1, 0o600, "{after:?}");

        let o = if with_inventory {
            d.rollback(&run, &["-i", inv])
        } else {
            d.rollback(&run, &[])
        };
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "-i: {with_inventory}: {out}");
        assert!(
            out.contains(&format!("undone       cmdline_mode @ {new_ssvm}")),
            "{out}"
        );
        let left: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("left in place:"))
            .collect();
        assert_eq!(
            left,
            ["  left in place: destroy@localhost: irreversible (CloudStack deploys a new SSVM in its place)"],
            "{out}"
        );
        assert_eq!(
            ssvm_cmdline_modes(&lab.world()),
            [(new_ssvm, Value::from(0o644))],
            "{out}"
        );
        d.verify();
    }
    lab.stop();
}
