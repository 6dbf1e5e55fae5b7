//! Rollback that never lies (issue 18), through the real binary against `remedy lab` in its own
//! process, with faults set over the lab's `/sim/faults`: a lost reply after a change landed
//! (F1), `kill -9` during an async job and `remedy rollback RUN` afterwards (F2), and the exit
//! codes that tell "failed, nothing was changed" from "changed, then undone" (F8). The zone's
//! `GET /sim/state` says whether it is back as it was; `remedy audit verify` checks the log.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{text, Dirs, Lab};

fn guest_vlan(world: &Value) -> String {
    world["physnets"][0]["vlan"].as_str().unwrap().to_string()
}

/// What the run changed: the guest VLANs and each router's public link.
fn zone_state(world: &Value) -> (String, Vec<(String, Value)>) {
    let links = world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"]["type"] == "router")
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["guest"]["links"]["eth1"]["up"].clone(),
            )
        })
        .collect();
    (guest_vlan(world), links)
}

/// `remedy apply ... --yes` in the apply directory; its exit code and output.
fn apply(d: &Dirs, playbook: &str, extra: &[&str], more: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", playbook, "-i", "lab-live.yml", "--yes"];
    for e in extra {
        args.extend(["-e", e]);
    }
    args.extend(more);
    d.remedy(&d.apply_dir, &args)
}

const VR: [&str; 2] = ["vpc=web-vpc", "vlan_range=1000-1099"];

/// F1: the reply to `updatePhysicalNetwork` is lost after the zone carried it out. The client
/// finds the job it started (`listAsyncJobs`) and follows it: the run knows the change landed.
/// When a later step fails, the run's own rollback undoes it, and a later `remedy rollback
/// RUN` agrees that nothing is left.
#[test]
fn a_lost_reply_after_the_change_landed_is_known_and_undone() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    let before = zone_state(&lab.world());
    assert_eq!(before.0, "", "the scenario starts without a range");

    // The change's reply is lost; the run goes on knowing it landed.
    lab.faults("PATCH", r#"{"drop_after_apply_next": 1}"#);
    let o = apply(&d, "fix-vlan-range", &["range=1000-1099"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("changed      guest_vlans @ localhost"),
        "{}",
        text(&o)
    );
    assert_eq!(guest_vlan(&lab.world()), "1000-1099");
    lab.stop();

    // A lost reply, then a failure later in the run: everything is undone, newest first.
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    let before = zone_state(&lab.world());
    lab.faults(
        "PATCH",
        r#"{"drop_after_apply_next": 1, "fail_jobs": ["restartVPC"]}"#,
    );
    let o = apply(&d, "vr-backup-loop", &VR, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("rolled back: "), "{out}");
    assert!(!out.contains("undoing 0 change(s)"), "{out}");
    assert_eq!(zone_state(&lab.world()), before, "{out}");
    // The audit log tells the undo with what it ran.
    let run = d.last_run("vr-backup-loop");
    let o = d.remedy(&d.apply_dir, &["audit", "show", &run]);
    let story = text(&o);
    assert!(
        story.contains("undo   vlans.guest_vlans @ localhost: runs updatePhysicalNetwork "),
        "{story}"
    );
    assert!(
        story.contains("undo   vlans.guest_vlans @ localhost: ok"),
        "{story}"
    );
    // The later rollback and the run's own agree: nothing is left.
    let o = d.rollback(&run, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing left to undo"), "{}", text(&o));
    d.verify();
    lab.stop();
}

/// F2: `kill -9` while the VLAN job runs. `remedy rollback RUN` finds the node that started and
/// never ended and reads the zone: while the job still runs it says the change may still land
/// (exit 3, nothing to undo yet); once it landed, it undoes it.
#[test]
fn kill_9_during_an_async_job_then_rollback_run_undoes_it() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    lab.faults(
        "PATCH",
        r#"{"slow_jobs": ["updatePhysicalNetwork"], "slow_job_ms": 8000}"#,
    );
    let apply_args = [
        "apply",
        "fix-vlan-range",
        "-i",
        "lab-live.yml",
        "--yes",
        "-e",
        "range=1000-1099",
    ];
    let mut child = d
        .command(&d.apply_dir, &apply_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the change is announced (durably, before it is sent), then for the request.
    let until = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&d.audit)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("\"step_start\"") && l.contains("\"mutating\":true"))
    {
        assert!(Instant::now() < until, "the change never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let run = d.last_run("fix-vlan-range");
    // The job still runs on the server: nothing to undo yet, and the rollback says why.
    let o = d.rollback(&run, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("may still change"), "{}", text(&o));
    assert_eq!(guest_vlan(&lab.world()), "", "{}", text(&o));
    // The job ends on the server: the change is there.
    let until = Instant::now() + Duration::from_secs(20);
    while guest_vlan(&lab.world()) != "1000-1099" {
        assert!(Instant::now() < until, "the job never landed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A later apply on the same target names the killed run and how to finish its undo.
    let o = apply(&d, "fix-vlan-range", &["range=1000-1099"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "warning: run {run} (fix-vlan-range) ended without an end record (killed?) and may \
             have left changes on localhost; see them with `remedy rollback {run} --dry-run`"
        )),
        "{}",
        text(&o)
    );
    let o = d.rollback(&run, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 change(s) to undo"), "{}", text(&o));
    assert_eq!(guest_vlan(&lab.world()), "", "{}", text(&o));
    // Once undone, it is not listed again.
    let o = d.rollback(&run, &[]);
    assert!(text(&o).contains("nothing left to undo"), "{}", text(&o));
    d.verify();
    lab.stop();
}

/// F8: a failure before anything changed exits 7 and says "nothing was changed"; one after a
/// change exits 2 and says what was undone. The JSON end record carries the counts.
#[test]
fn nothing_changed_is_told_apart_from_changed_and_undone() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    lab.faults("PATCH", r#"{"fail_jobs": ["updatePhysicalNetwork"]}"#);
    let o = apply(
        &d,
        "fix-vlan-range",
        &["range=1000-1099"],
        &["--output", "json"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let end: Value = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|e| e["event"] == "run_end")
        .expect("a run_end event");
    assert_eq!(end["exit_code"], 7, "{end}");
    assert_eq!(
        (&end["changed"], &end["undone"]),
        (&0.into(), &0.into()),
        "{end}"
    );
    assert!(
        end["status"]
            .as_str()
            .unwrap()
            .ends_with("nothing was changed"),
        "{end}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("\"undo_start\""));

    // The same kind of failure after changes: they are undone, and it says so.
    lab.faults("PUT", r#"{"fail_jobs": ["restartVPC"]}"#);
    let before = zone_state(&lab.world());
    let o = apply(&d, "vr-backup-loop", &VR, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("rolled back: "), "{}", text(&o));
    assert_eq!(zone_state(&lab.world()), before);
    d.verify();
    lab.stop();
}

/// The SSVM and its setting: the SSVMs' names and states, and the allowed sites.
fn ssvm_state(world: &Value) -> (Vec<(String, String)>, String) {
    let vms: Vec<&Value> = world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"]["systemvmtype"] == "secondarystoragevm")
        .collect();
    let sites = vms
        .iter()
        .find(|v| v["state"] == "Running")
        .and_then(|v| v["kind"]["allowed_sites"].as_str())
        .unwrap_or("")
        .to_string();
    let names = vms
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (names, sites)
}

/// F6, before the point of no return: the new SSVM would come with a new host key, which a
/// strict policy refuses, so the steps after the destroy could not run. The destroy is not
/// attempted; the setting changed before it is undone; the SSVM is the one it was.
#[test]
fn an_irreversible_step_is_not_taken_when_what_follows_it_cannot_run() {
    let d = Dirs::new();
    let lab = Lab::start("ssvm-broken", &d.inventory(), &d.home);
    let written = std::fs::read_to_string(d.inventory()).unwrap();
    assert!(
        written.contains("remedy_host_key_policy: accept-new"),
        "{written}"
    );
    std::fs::write(
        d.inventory(),
        written.replace(
            "remedy_host_key_policy: accept-new",
            "remedy_host_key_policy: strict",
        ),
    )
    .unwrap();
    let before = ssvm_state(&lab.world());
    let o = apply(
        &d,
        "recreate-ssvm",
        &["add_site=10.20.0.0/16"],
        &["--allow-irreversible"],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("not run: destroy is irreversible, and what comes after it could not run: step new_selfcheck runs on "),
        "{out}"
    );
    assert!(out.contains("strict refuses"), "{out}");
    assert_eq!(ssvm_state(&lab.world()), before, "{out}");
    d.verify();
    lab.stop();
}

/// F6, past the point of no return: the SSVM was destroyed and its replacement booted with the
/// new setting; then the replacement's self-check fails. The destroy cannot be undone, and the
/// setting it consumed is kept (putting it back would leave the new SSVM inconsistent): both
/// are named, exit 3.
#[test]
fn a_change_the_irreversible_step_consumed_is_kept_and_named() {
    let d = Dirs::new();
    let lab = Lab::start("ssvm-broken", &d.inventory(), &d.home);
    let (old, sites_before) = ssvm_state(&lab.world());
    assert_eq!(old.len(), 1, "{old:?}");
    // The new SSVM's self-check cannot run: its connection drops. The rule is set once the
    // old SSVM's self-check (in detection) is done: when the destroy is announced.
    let apply_args = [
        "apply",
        "recreate-ssvm",
        "-i",
        "lab-live.yml",
        "--yes",
        "-e",
        "add_site=10.20.0.0/16",
        "--allow-irreversible",
    ];
    let child = d
        .command(&d.apply_dir, &apply_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&d.audit)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("\"step_start\"") && l.contains("\"step\":\"destroy\""))
    {
        assert!(Instant::now() < until, "the destroy never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.faults(
        "PATCH",
        r#"{"ssh": [{"command": "/usr/local/cloud/systemvm/ssvm-check.sh", "effect": "drop_before", "next": 5}]}"#,
    );
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains(
            "kept, not undone: allow_site@localhost, consumed by the irreversible step destroy"
        ),
        "{out}"
    );
    assert!(
        out.contains("left in place: destroy@localhost: irreversible"),
        "{out}"
    );
    // The zone is consistent: the new SSVM runs with the setting it booted with.
    let (now, sites) = ssvm_state(&lab.world());
    assert!(
        now.iter()
            .any(|(n, s)| !old.iter().any(|(o, _)| o == n) && s == "Running"),
        "{now:?}"
    );
    assert!(
        sites.split(',').any(|c| c == "10.20.0.0/16"),
        "{sites} (was {sites_before})"
    );
    d.verify();
    lab.stop();
}

/// Once restartVPC has implemented the tiers, they hold VLANs from the range added before it:
/// CloudStack refuses to remove a range in use. `implement` declares `consumes: [vlans]`, so a
/// failure after it keeps the range (named, exit 2) and undoes the rest, instead of an undo
/// that fails (exit 3).
#[test]
fn a_range_the_tiers_now_hold_is_kept_and_named() {
    let d = Dirs::new();
    let lab = Lab::start("vr-backup-loop", &d.inventory(), &d.home);
    let (vlan_before, links_before) = zone_state(&lab.world());
    assert_eq!(vlan_before, "");
    let mut args = vec!["apply", "vr-backup-loop", "-i", "lab-live.yml", "--yes"];
    for e in VR {
        args.extend(["-e", e]);
    }
    let child = d
        .command(&d.apply_dir, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The routers' own check in verification fails: set once implement starts (detection ran
    // the same command before).
    let until = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&d.audit)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("\"step_start\"") && l.contains("\"step\":\"implement\""))
    {
        assert!(Instant::now() < until, "implement never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.faults(
        "PATCH",
        r#"{"ssh": [{"command": "/opt/cloud/bin/checkrouter.sh", "effect": "fail", "exit": 2, "stderr": "injected", "next": 5}]}"#,
    );
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("vlans.guest_vlans@localhost, consumed by implement"),
        "{out}"
    );
    assert!(out.contains("implement@localhost"), "{out}");
    let (vlan, links) = zone_state(&lab.world());
    assert_eq!(vlan, "1000-1099", "the range the tiers hold stays\n{out}");
    assert_eq!(links, links_before, "the public links are undone\n{out}");
    // `remedy rollback RUN` agrees: nothing left to undo, the range still kept.
    let run = d.last_run("vr-backup-loop");
    let r = d.rollback(&run, &[]);
    let rout = text(&r);
    assert_eq!(r.status.code(), Some(0), "{rout}");
    assert_eq!(guest_vlan(&lab.world()), "1000-1099", "{rout}");
    d.verify();
    lab.stop();
}

/// The mode of `path` on the management server, as the zone holds it.
fn mode_of(world: &Value, path: &str) -> Value {
    fn find(v: &Value, path: &str) -> Option<Value> {
        match v {
            Value::Object(o) => o
                .get(path)
                .cloned()
                .or_else(|| o.values().find_map(|x| find(x, path))),
            Value::Array(a) => a.iter().find_map(|x| find(x, path)),
            _ => None,
        }
    }
    find(world, path).expect("the file is in the zone")["mode"].clone()
}

const CATALINA: &str = "/var/log/cloudstack/management/catalina.out";

/// A raw step whose command's outcome is unknown is read with its `check:`: the connection
/// drops before the command ran (the client cannot tell), the check says the change is not
/// there, and the command may still be running until the step's timeout: "may still change"
/// (exit 3). Once the timeout has passed, `remedy rollback RUN` reads it again: as before,
/// nothing to undo (exit 0). When the connection drops after the command ran, the check says
/// it is there and the rollback undoes it, then checks it is gone (exit 2).
#[test]
fn a_raw_step_of_unknown_outcome_is_read_with_its_check() {
    let d = Dirs::new();
    let lab = Lab::start("healthy", &d.inventory(), &d.home);
    std::fs::write(
        d.apply_dir.join("exec-bit.yml"),
        format!(
            "name: exec-bit\n\
             description: make a file executable, with a check that reads it\n\
             steps:\n  \
               - id: chmod\n    \
                 on: management\n    \
                 ssh: chmod 0755 {CATALINA}\n    \
                 check: test -x {CATALINA}\n    \
                 rollback: chmod 0644 {CATALINA}\n    \
                 timeout: 3s\n"
        ),
    )
    .unwrap();
    let before = mode_of(&lab.world(), CATALINA);
    let run = |effect: &str| {
        lab.faults(
            "PUT",
            &format!(
                r#"{{"ssh": [{{"command": "chmod 0755", "effect": "{effect}", "next": 1}}]}}"#
            ),
        );
        let o = d.remedy(
            &d.apply_dir,
            &["apply", "./exec-bit.yml", "-i", "lab-live.yml", "--yes"],
        );
        (o.status.code(), text(&o))
    };
    // Lost before it ran: unknown, not there yet.
    let (code, out) = run("drop_before");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("its check does not pass yet"), "{out}");
    assert!(out.contains("may still change"), "{out}");
    assert_eq!(mode_of(&lab.world(), CATALINA), before, "{out}");
    let first = d.last_run("exec-bit");
    std::thread::sleep(Duration::from_millis(3200));
    let r = d.rollback(&first, &["-i", d.inventory().to_str().unwrap()]);
    let rout = text(&r);
    assert_eq!(r.status.code(), Some(0), "{rout}");
    assert!(rout.contains("as before"), "{rout}");
    // Lost after it ran: the check passes, so it is undone, and the check no longer passes.
    let (code, out) = run("drop_after");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("its check passes now"), "{out}");
    assert!(out.contains("rolled back: 1 change(s) undone"), "{out}");
    assert_eq!(mode_of(&lab.world(), CATALINA), before, "{out}");
    d.verify();
    lab.stop();
}

/// A module whose connection drops after its command was sent: read "as before" right away, it
/// may still land until the step's timeout ("may still change", exit 3, nothing run); once the
/// timeout has passed, `remedy rollback RUN` reads it again and finds nothing to undo.
#[test]
fn a_module_whose_connection_dropped_mid_command_may_still_change() {
    let d = Dirs::new();
    let lab = Lab::start("healthy", &d.inventory(), &d.home);
    std::fs::write(
        d.apply_dir.join("mode.yml"),
        format!(
            "name: mode\n\
             description: a file mode, through the file module\n\
             steps:\n  \
               - id: mode\n    \
                 on: management\n    \
                 file: {{ path: {CATALINA}, mode: \"0755\" }}\n    \
                 timeout: 3s\n"
        ),
    )
    .unwrap();
    let before = mode_of(&lab.world(), CATALINA);
    lab.faults(
        "PUT",
        r#"{"ssh": [{"command": "chmod", "effect": "drop_before", "next": 1}]}"#,
    );
    let o = d.remedy(
        &d.apply_dir,
        &["apply", "./mode.yml", "-i", "lab-live.yml", "--yes"],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("read again: unchanged for now, but `chmod"),
        "{out}"
    );
    assert!(out.contains("may still change"), "{out}");
    assert_eq!(mode_of(&lab.world(), CATALINA), before, "{out}");
    std::thread::sleep(Duration::from_millis(3200));
    let r = d.rollback(
        &d.last_run("mode"),
        &["-i", d.inventory().to_str().unwrap()],
    );
    let rout = text(&r);
    assert_eq!(r.status.code(), Some(0), "{rout}");
    assert!(rout.contains("as before"), "{rout}");
    assert_eq!(mode_of(&lab.world(), CATALINA), before, "{rout}");
    d.verify();
    lab.stop();
}
