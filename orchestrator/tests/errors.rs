//! The real binary on a newcomer's mistakes: one root cause makes one error, with the fix.
//!
//! Each test runs `remedy` with its own audit log and state directory (nothing touches the
//! home directory) and asserts the exit code 4, that stderr holds exactly one error, and its
//! text. The lab inventory (`inventories/lab.yml`) starts its simulated zone in-process, so
//! nothing needs to be installed or running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where `playbooks/` and `inventories/` are).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .to_path_buf()
}

/// A run of `remedy` in `cwd` with a temporary state directory and audit log of its own (in
/// `scratch`), without the caller's REMEDY_* settings; `env` adds variables.
fn remedy(args: &[&str], cwd: &Path, scratch: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remedy"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("REMEDY_AUDIT_LOG")
        .env_remove("REMEDY_INVENTORY")
        .env_remove("REMEDY_PLAYBOOK_PATH")
        .env("REMEDY_STATE_DIR", scratch.join("state"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run remedy")
}

/// `remedy apply ARGS --audit-log SCRATCH/audit.log` from the repository root.
fn apply(args: &[&str], scratch: &Path) -> Output {
    let log = scratch.join("audit.log");
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--audit-log", log.to_str().expect("utf-8 path")]);
    remedy(&all, &root(), scratch, &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The headlines of the errors on stderr.
fn errors(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .collect()
}

/// The `help:` lines on stderr.
fn helps(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("help: "))
        .map(str::to_string)
        .collect()
}

/// Exit 4, exactly one error on stderr with this headline, and nothing written to the audit
/// log (the run never started).
fn one_error(o: &Output, scratch: &Path, headline: &str) {
    assert_eq!(o.status.code(), Some(4), "{}", stderr(o));
    assert_eq!(errors(o), [headline], "{}", stderr(o));
    assert!(
        !scratch.join("audit.log").exists(),
        "no run, so no audit log"
    );
}

/// The 13 steps of vr-backup-loop (with its include vr-restore-public-link) that run on the
/// VPC's routers.
const ROUTER_STEPS: &str = "13 steps (keepalived_conf, checkrouter, public_link.link, \
     public_link.routes, public_link.link_state, public_link.link_up, public_link.default_route, \
     public_link.link_now, public_link.route_now, keepalived_now, reboot, keepalived_active, \
     states)";

#[test]
fn no_inventory_is_one_error_saying_to_pass_one() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(
        &[
            "vr-backup-loop",
            "-e",
            "vpc=web-vpc",
            "-e",
            "vlan_range=1000-1099",
        ],
        scratch.path(),
    );
    one_error(
        &o,
        scratch.path(),
        &format!(
            "playbooks/vr-backup-loop.yml:49:9: no inventory given (pass -i or set \
             REMEDY_INVENTORY): {ROUTER_STEPS} run on \"vpc_web_vpc\""
        ),
    );
    assert_eq!(
        helps(&o),
        ["only steps on the controller (API calls, steps without `on:`) run without an inventory"]
    );
}

#[test]
fn a_playbook_only_on_the_controller_plans_without_an_inventory() {
    // fix-vlan-range only calls the API: no inventory error. (Without one it has no
    // CloudStack endpoint, which its first API call reports: a failed run, exit 2.)
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(
        &["fix-vlan-range", "-e", "range=1000-1099", "--dry-run"],
        scratch.path(),
    );
    assert!(errors(&o).is_empty(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("no inventory given"), "{}", stderr(&o));
    assert_ne!(o.status.code(), Some(4), "{}", stderr(&o));
}

#[test]
fn a_wrong_vpc_is_one_error_in_cloudstack_words() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(
        &[
            "vr-backup-loop",
            "-i",
            "inventories/lab.yml",
            "-e",
            "vpc=nope",
            "-e",
            "vlan_range=1000-1099",
        ],
        scratch.path(),
    );
    one_error(
        &o,
        scratch.path(),
        &format!(
            "playbooks/vr-backup-loop.yml:49:9: {ROUTER_STEPS}: no VPC named \"nope\" in the \
             zone (VPCs: web-vpc)"
        ),
    );
    assert_eq!(helps(&o), ["pass -e vpc=NAME with one of the VPCs listed"]);
}

#[test]
fn a_misspelt_vpc_gets_a_suggestion() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(
        &[
            "vr-backup-loop",
            "-i",
            "inventories/lab.yml",
            "-e",
            "vpc=web-vcp",
            "-e",
            "vlan_range=1000-1099",
        ],
        scratch.path(),
    );
    one_error(
        &o,
        scratch.path(),
        &format!(
            "playbooks/vr-backup-loop.yml:49:9: {ROUTER_STEPS}: no VPC named \"web-vcp\" in the \
             zone (VPCs: web-vpc)"
        ),
    );
    assert_eq!(
        helps(&o),
        ["did you mean \"web-vpc\"? (pass -e vpc=web-vpc)"]
    );
}

#[test]
fn missing_parameters_are_the_only_errors() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(
        &[
            "vr-backup-loop",
            "-i",
            "inventories/lab.yml",
            "-e",
            "vpc=web-vpc",
        ],
        scratch.path(),
    );
    one_error(
        &o,
        scratch.path(),
        "playbooks/vr-backup-loop.yml:16:3: missing required parameter \"vlan_range\" of \
         vr-backup-loop",
    );
    assert_eq!(
        helps(&o),
        [
            "pass -e vlan_range=... (the guest VLANs to add if the Guest physical network has \
          none, e.g. 1000-1099)"
        ]
    );
    // Both missing: the two parameters, and nothing that follows from them (the VPC's group,
    // the include's bindings).
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(
        &["vr-backup-loop", "-i", "inventories/lab.yml"],
        scratch.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(
        errors(&o),
        [
            "playbooks/vr-backup-loop.yml:13:3: missing required parameter \"vpc\" of \
             vr-backup-loop",
            "playbooks/vr-backup-loop.yml:16:3: missing required parameter \"vlan_range\" of \
             vr-backup-loop",
        ],
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_misspelt_parameter_is_one_error_with_a_suggestion() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(
        &[
            "vr-backup-loop",
            "-i",
            "inventories/lab.yml",
            "-e",
            "vpc=web-vpc",
            "-e",
            "vlan_rang=1000-1099",
        ],
        scratch.path(),
    );
    one_error(
        &o,
        scratch.path(),
        "-e vlan_rang: vr-backup-loop has no parameter \"vlan_rang\"; did you mean \
         \"vlan_range\"? (it has: vpc, vlan_range, zone)",
    );
}

const PATH_HELP: &str = "  help: give the playbook's path, or add the directory that holds it \
     to REMEDY_PLAYBOOK_PATH (colon-separated; ./playbooks is always searched)\n";

#[test]
fn a_misspelt_playbook_is_one_error_with_a_suggestion_and_the_search_path() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let o = apply(&["vr-backup-lop"], scratch.path());
    let expected = format!(
        "error: no playbook named \"vr-backup-lop\"; did you mean \"vr-backup-loop\"? (searched \
         {})\n{PATH_HELP}",
        root().join("playbooks").display()
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stderr(&o), expected);
    // `plan`, `show` and `validate` share the loader, and its error.
    let log = scratch.path().join("audit.log");
    for args in [
        vec![
            "plan",
            "vr-backup-lop",
            "--audit-log",
            log.to_str().expect("utf-8"),
        ],
        vec!["show", "vr-backup-lop"],
    ] {
        let o = remedy(&args, &root(), scratch.path(), &[]);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), expected, "{args:?}");
    }
    let o = remedy(&["validate", "vr-backup-lop"], &root(), scratch.path(), &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stderr(&o), expected);
    assert!(!log.exists());
}

#[test]
fn a_misspelt_playbook_outside_the_checkout_says_where_it_looked() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    // As the binary sees its working directory (no symlinks).
    let here = elsewhere.path().canonicalize().expect("canonical");
    let log = scratch.path().join("audit.log");
    let args = [
        "apply",
        "vr-backup-lop",
        "--audit-log",
        log.to_str().expect("utf-8"),
    ];
    // No ./playbooks here: the directory searched, absolute, and how to search more.
    let o = remedy(&args, &here, scratch.path(), &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: no playbook named \"vr-backup-lop\" (searched {} (no such directory))\n\
             {PATH_HELP}",
            here.join("playbooks").display()
        )
    );
    // With the checkout's playbooks on REMEDY_PLAYBOOK_PATH: the suggestion comes back.
    let shipped = root().join("playbooks");
    let o = remedy(
        &args,
        &here,
        scratch.path(),
        &[("REMEDY_PLAYBOOK_PATH", shipped.to_str().expect("utf-8"))],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: no playbook named \"vr-backup-lop\"; did you mean \"vr-backup-loop\"? \
             (searched {} (no such directory), {})\n{PATH_HELP}",
            here.join("playbooks").display(),
            shipped.display()
        )
    );
    assert!(!log.exists());
}
