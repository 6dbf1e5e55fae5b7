//! The shipped diagnostic playbooks (stale-nics, host-maintenance-check, job-triage) and the
//! playbooks written from the docs alone (restart-agent, reboot-ssvm) against the embedded
//! zone, each on the scenario that reproduces its failure: what a report finds (its rows,
//! exactly), exit 8 when it found a problem and 0 on a healthy zone, nothing changed by a
//! read-only playbook, and the fixes' success and failure paths. The `remedy apply` command
//! lines of the issue, through the binary, are at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cloudstack_sim::faults::Faults;
use remedy::error::ExitCode;
use remedy::event::Event;
use remedy::scheduler::Summary;
use remedy_tests::run;
use remedy_tests::zone::ApiZone;
use serde_json::Value;

/// The `remedy` command line (see `tests/src/bin/remedy-cli.rs`).
const REMEDY: &str = env!("CARGO_BIN_EXE_remedy-cli");

fn playbook(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks")
        .join(format!("{name}.yml"))
}

/// Plans a shipped playbook against the zone as it is now and runs it: its summary and the
/// reports it showed (each as `--output json` prints it).
async fn apply(
    zone: &ApiZone,
    name: &str,
    params: &[(&str, &str)],
    dry_run: bool,
) -> (Summary, Vec<Value>) {
    let plan = zone.plan(&playbook(name), params).await;
    let router = zone.router(&plan);
    let (_, summary, events) = run(plan, router, zone.run_options(dry_run)).await;
    let reports = events
        .iter()
        .filter(|e| matches!(e, Event::Report { .. }))
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    (summary, reports)
}

/// The report of `step`: its rows as cells in column order (text as shown).
fn rows(reports: &[Value], step: &str) -> Vec<Vec<String>> {
    let r = report(reports, step);
    let columns: Vec<&str> = r["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[*c])).collect())
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn report<'a>(reports: &'a [Value], step: &str) -> &'a Value {
    reports
        .iter()
        .find(|r| r["step"] == step)
        .unwrap_or_else(|| panic!("no report of {step} in {reports:#?}"))
}

/// The fact `name` of the report of `step`.
fn fact(reports: &[Value], step: &str, name: &str) -> Value {
    report(reports, step)["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["value"].clone())
        .unwrap_or_else(|| panic!("no fact {name} in {reports:#?}"))
}

fn strings(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect()
}

/// A read-only playbook, dry-run and real run alike: nothing that changes anything is sent
/// and the zone is as it was.
async fn read_only(
    zone: &ApiZone,
    name: &str,
    params: &[(&str, &str)],
) -> Vec<(Summary, Vec<Value>)> {
    let before = zone.world();
    let mut runs = Vec::new();
    for dry_run in [true, false] {
        runs.push(apply(zone, name, params, dry_run).await);
        assert_eq!(zone.mutating_requests(), Vec::<String>::new(), "{name}");
        assert_eq!(zone.world(), before, "{name} changed nothing");
    }
    zone.audit_verifies();
    runs
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_nics_reports_the_vms_listed_on_a_network_they_left() {
    let zone = ApiZone::start("stale-nics", Faults::default()).await;
    for (s, reports) in read_only(&zone, "stale-nics", &[("network", "backend")]).await {
        assert_eq!(s.exit, ExitCode::Found, "{}", s.status);
        assert_eq!(s.status, "found problems: 2 finding(s) (stale@localhost)");
        assert_eq!(
            rows(&reports, "stale"),
            strings(&[&["web-1", "i-2-934-VM", "web"], &["web-2", "i-2-935-VM", "web"]])
        );
        let r = report(&reports, "stale");
        assert_eq!(r["title"], "VMs listed on backend without a NIC there");
        assert_eq!(r["columns"], serde_json::json!(["vm", "instance", "nics"]));
        assert_eq!(
            fact(&reports, "stale", "id"),
            "03aee7d1-76b6-421a-a5b6-a30cb145cd57"
        );
        assert_eq!(fact(&reports, "stale", "listed"), 3);
    }
    // tools-1's second NIC, on web, is really there: web is healthy.
    for (s, reports) in read_only(&zone, "stale-nics", &[("network", "web")]).await {
        assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
        assert!(rows(&reports, "stale").is_empty());
        assert_eq!(
            report(&reports, "stale")["empty"],
            "every VM listed on web has a NIC there"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_nics_on_a_healthy_zone_and_an_unknown_network() {
    let zone = ApiZone::start("healthy", Faults::default()).await;
    for (s, reports) in read_only(&zone, "stale-nics", &[("network", "web")]).await {
        assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
        assert_eq!(s.status, "ok");
        assert!(rows(&reports, "stale").is_empty());
    }
    let (s, _) = apply(&zone, "stale-nics", &[("network", "backend")], true).await;
    assert_eq!(s.exit, ExitCode::FailedUnchanged, "{}", s.status);
    assert!(
        s.status
            .contains("expected one network named backend, found 0 (networks: web, db"),
        "{}",
        s.status
    );
}

/// The FirstFit scenario: app-1 and app-2 on kvm-a1 need `generic` and `linux`; no host of
/// cluster-a (the own) or cluster-b (the first other) has both; cluster-c's kvm-c1 has room
/// for one of them, kvm-c2 for the other.
#[tokio::test(flavor = "multi_thread")]
async fn host_maintenance_check_flags_the_vms_firstfit_strands() {
    let zone = ApiZone::start("host-maintenance-firstfit", Faults::default()).await;
    for (s, reports) in read_only(&zone, "host-maintenance-check", &[("host", "kvm-a1")]).await {
        assert_eq!(s.exit, ExitCode::Found, "{}", s.status);
        assert_eq!(s.status, "found problems: 2 finding(s) (strands@localhost)");
        // Each suggestion counts the one before it: kvm-c1 has room for app-1 only.
        assert_eq!(
            rows(&reports, "strands"),
            strings(&[
                &["app-1", "generic,linux", "yes", "kvm-c1"],
                &["app-2", "generic,linux", "yes", "kvm-c2"],
            ])
        );
        assert_eq!(fact(&reports, "strands", "migrate.vm.across.clusters"), true);
        assert_eq!(fact(&reports, "strands", "stranded"), 2);
    }
    // kvm-c1's own cluster has kvm-c2: nothing stranded, the allocator's pick is shown.
    for (s, reports) in read_only(&zone, "host-maintenance-check", &[("host", "kvm-c1")]).await {
        assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
        assert_eq!(
            rows(&reports, "strands"),
            strings(&[&["app-3", "generic,linux", "no", "kvm-c2 (CloudStack's pick)"]])
        );
    }
    // A host with no VM: the empty text, exit 0.
    for (s, reports) in read_only(&zone, "host-maintenance-check", &[("host", "kvm-b1")]).await {
        assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
        assert!(rows(&reports, "strands").is_empty());
        assert_eq!(report(&reports, "strands")["empty"], "no VM runs on kvm-b1");
    }
}

/// `inventories/lab.yml` with its scenario swapped for `scenario`, in `dir`.
fn lab_inventory(dir: &Path, scenario: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lab = std::fs::read_to_string(root.join("inventories/lab.yml")).unwrap();
    let swapped = lab.replace(
        "simulator: { scenario: vr-backup-loop }",
        &format!("simulator: {{ scenario: {scenario} }}"),
    );
    assert_ne!(swapped, lab, "lab.yml names its scenario as expected");
    remedy_tests::write(dir, &format!("lab-{scenario}.yml"), &swapped)
}

/// `remedy ARGS` from the checkout, with its own HOME and state directory under `dir`.
fn remedy(dir: &Path, args: &[&str]) -> Output {
    Command::new(REMEDY)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("HOME", dir)
        .env("REMEDY_STATE_DIR", dir.join("state"))
        .env_remove("REMEDY_INVENTORY")
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run remedy")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The "done when": `remedy apply stale-nics -i LAB --dry-run` on the scenario prints
/// the table and exits 8; `--output json` carries the rows; on a healthy zone it exits 0.
#[test]
fn stale_nics_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let inv = lab_inventory(dir.path(), "stale-nics");
    let inv = inv.to_str().unwrap();
    let args = ["apply", "stale-nics", "-i", inv, "-e", "network=backend", "--dry-run"];
    let o = remedy(dir.path(), &args);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(8), "{out}");
    for line in [
        "    FOUND      VMs listed on backend without a NIC there @ localhost (2 rows)",
        "      vm     instance    nics",
        "      web-1  i-2-934-VM  web",
        "      web-2  i-2-935-VM  web",
        "found problems: 2 finding(s) (stale@localhost) (exit 8)",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }

    let o = remedy(dir.path(), &[&args[..], &["--output", "json"]].concat());
    assert_eq!(o.status.code(), Some(8), "{}", stdout(&o));
    let events: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reports: Vec<Value> = events
        .iter()
        .filter(|e| e["event"] == "report")
        .cloned()
        .collect();
    assert_eq!(
        rows(&reports, "stale"),
        strings(&[&["web-1", "i-2-934-VM", "web"], &["web-2", "i-2-935-VM", "web"]])
    );
    let end = events.iter().find(|e| e["event"] == "run_end").unwrap();
    assert_eq!((end["exit_code"].as_i64(), end["found"].as_i64()), (Some(8), Some(2)));

    let healthy = lab_inventory(dir.path(), "healthy");
    let o = remedy(
        dir.path(),
        &["apply", "stale-nics", "-i", healthy.to_str().unwrap(), "-e", "network=web", "--dry-run"],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("      every VM listed on web has a NIC there\n"), "{out}");
}
