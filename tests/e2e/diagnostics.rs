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
            strings(&[
                &["web-1", "i-2-934-VM", "web"],
                &["web-2", "i-2-935-VM", "web"]
            ])
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
        assert_eq!(
            s.status,
            "found problems: 2 finding(s) (stranded@localhost)"
        );
        // Each suggestion counts the one before it: kvm-c1 has room for app-1 only.
        assert_eq!(
            rows(&reports, "placements"),
            strings(&[
                &["app-1", "generic,linux", "yes", "kvm-c1"],
                &["app-2", "generic,linux", "yes", "kvm-c2"],
            ])
        );
        assert_eq!(report(&reports, "placements")["found"], false);
        assert_eq!(
            fact(&reports, "placements", "migrate.vm.across.clusters"),
            true
        );
        assert_eq!(
            rows(&reports, "stranded"),
            strings(&[
                &["app-1", "generic,linux", "kvm-c1"],
                &["app-2", "generic,linux", "kvm-c2"],
            ])
        );
    }
    // kvm-c1's own cluster has kvm-c2: nothing stranded, the allocator's pick is shown.
    for (s, reports) in read_only(&zone, "host-maintenance-check", &[("host", "kvm-c1")]).await {
        assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
        assert_eq!(
            rows(&reports, "placements"),
            strings(&[&["app-3", "generic,linux", "no", "kvm-c2 (CloudStack's pick)"]])
        );
        assert!(rows(&reports, "stranded").is_empty());
        assert_eq!(
            report(&reports, "stranded")["empty"],
            "no VM on kvm-c1 would be stranded"
        );
    }
    // A host with no VM: the empty text, exit 0.
    for (s, reports) in read_only(&zone, "host-maintenance-check", &[("host", "kvm-b1")]).await {
        assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
        assert!(rows(&reports, "placements").is_empty());
        assert_eq!(
            report(&reports, "placements")["empty"],
            "no VM runs on kvm-b1"
        );
    }
}

/// Where each guest VM runs, and its state: (name, host name, state).
fn placements(world: &Value) -> Vec<(String, String, String)> {
    let hosts = world["hosts"].as_array().unwrap();
    let host_name = |id: &Value| {
        hosts
            .iter()
            .find(|h| h["id"] == *id)
            .map(|h| h["name"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"]["type"] == "guest")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                host_name(&v["hostid"]),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn resource_state(world: &Value, host: &str) -> String {
    world["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == host)
        .map(|h| h["resourcestate"].as_str().unwrap().to_string())
        .unwrap()
}

fn placed(list: &[(&str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(vm, host)| (vm.to_string(), host.to_string(), "Running".to_string()))
        .collect()
}

/// The world with the hypervisors' tap port names (`vnetN`) made anonymous: a VM migrated
/// away and back gets a new one on its host, as libvirt numbers them. What stays compared: how
/// many ports and flows each bridge of each host has, and each VM's bridges.
fn vnets_anonymous(world: &Value) -> Value {
    let anon = |s: &str| {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("vnet") {
            out.push_str(&rest[..i + 4]);
            rest = rest[i + 4..].trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out + rest
    };
    let mut w = world.clone();
    for h in w["hosts"].as_array_mut().unwrap() {
        h["next_vnet"] = Value::Null;
        for bridge in h["guest"]["ovs"].as_object_mut().unwrap().values_mut() {
            for key in ["ports", "flows"] {
                let mut names: Vec<String> = bridge[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| anon(p.as_str().unwrap()))
                    .collect();
                names.sort();
                bridge[key] = names.into();
            }
        }
    }
    for v in w["vms"].as_array_mut().unwrap() {
        for port in v["ports"].as_array_mut().unwrap() {
            port[1] = "vnet".into();
        }
    }
    w
}

/// The fix: the stranded VMs moved where the check said, one at a time, then maintenance; a
/// second run has nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn host_maintenance_safe_moves_the_stranded_vms_then_enters_maintenance() {
    let zone = ApiZone::start("host-maintenance-firstfit", Faults::default()).await;
    let params = [("host", "kvm-a1")];
    let (s, reports) = apply(&zone, "host-maintenance-safe", &params, true).await;
    assert_eq!(s.exit, ExitCode::Success, "dry-run: {}", s.status);
    assert_eq!(zone.mutating_requests(), Vec::<String>::new());
    assert_eq!(
        rows(&reports, "strands"),
        strings(&[
            &["app-1", "generic,linux", "yes", "kvm-c1"],
            &["app-2", "generic,linux", "yes", "kvm-c2"],
        ])
    );

    let (s, _) = apply(&zone, "host-maintenance-safe", &params, false).await;
    assert_eq!(s.exit, ExitCode::Success, "apply: {}", s.status);
    let after = zone.world();
    assert_eq!(resource_state(&after, "kvm-a1"), "Maintenance");
    assert_eq!(
        placements(&after),
        placed(&[
            ("app-1", "kvm-c1"),
            ("app-2", "kvm-c2"),
            ("app-3", "kvm-c1")
        ])
    );
    // One at a time, to the hosts suggested, then the maintenance.
    let sent: Vec<String> = zone.mutating_requests();
    assert_eq!(
        sent,
        [
            "migrateVirtualMachine",
            "migrateVirtualMachine",
            "prepareHostForMaintenance"
        ]
    );
    let (s, _) = apply(&zone, "host-maintenance-safe", &params, false).await;
    assert_eq!(s.exit, ExitCode::Success, "again: {}", s.status);
    assert!(!s.applies, "{}", s.status);
    zone.audit_verifies();
}

/// The second VM's migration fails: the run rolls back (the first VM moved back to kvm-a1),
/// exit 2, and the zone is as it was. The failure is set while the first migration runs (a
/// job's failure is decided when it is created) and cleared while the second one runs, so the
/// undo's migration goes through.
#[tokio::test(flavor = "multi_thread")]
async fn host_maintenance_safe_rolls_back_when_the_second_migration_fails() {
    let slow = Faults {
        job_ms: Some(700),
        ..Faults::default()
    };
    let zone = ApiZone::start("host-maintenance-firstfit", slow.clone()).await;
    let before = zone.world();
    let text = "injected: migration failed";
    let state_of = |vm: &str| {
        placements(&zone.world())
            .into_iter()
            .find(|(name, _, _)| name == vm)
            .map(|(_, _, state)| state)
            .unwrap()
    };
    let watch = async {
        let tick = std::time::Duration::from_millis(10);
        while state_of("app-1") != "Migrating" {
            tokio::time::sleep(tick).await;
        }
        zone.sim().set_faults(Faults {
            fail_jobs: vec!["migrateVirtualMachine".into()],
            job_error_text: Some(text.into()),
            ..slow.clone()
        });
        while state_of("app-2") != "Migrating" {
            tokio::time::sleep(tick).await;
        }
        zone.sim().set_faults(slow.clone());
    };
    let ((s, _), ()) = tokio::join!(
        apply(&zone, "host-maintenance-safe", &[("host", "kvm-a1")], false),
        watch
    );
    assert_eq!(s.exit, ExitCode::RolledBack, "{}", s.status);
    assert!(s.status.contains(text), "{}", s.status);
    assert_eq!(s.undone, 1, "{}", s.status);
    assert!(s.not_undone.is_empty(), "{:?}", s.not_undone);
    assert_eq!(
        zone.mutating_requests(),
        [
            "migrateVirtualMachine",
            "migrateVirtualMachine",
            "migrateVirtualMachine"
        ],
        "app-1 there, app-2 refused, app-1 back; no maintenance asked"
    );
    let after = zone.world();
    assert_eq!(
        placements(&after),
        placed(&[
            ("app-1", "kvm-a1"),
            ("app-2", "kvm-a1"),
            ("app-3", "kvm-c1")
        ])
    );
    assert_eq!(
        vnets_anonymous(&after),
        vnets_anonymous(&before),
        "the zone is as it was"
    );
    zone.audit_verifies();
}

/// The maintenance itself fails after both moves: cancelled first (nothing to cancel: it
/// failed), both VMs moved back, exit 2.
#[tokio::test(flavor = "multi_thread")]
async fn host_maintenance_safe_moves_the_vms_back_when_maintenance_fails() {
    let zone = ApiZone::start(
        "host-maintenance-firstfit",
        Faults {
            fail_jobs: vec!["prepareHostForMaintenance".into()],
            job_error_text: Some("injected: maintenance failed".into()),
            ..Faults::default()
        },
    )
    .await;
    let before = zone.world();
    let (s, _) = apply(&zone, "host-maintenance-safe", &[("host", "kvm-a1")], false).await;
    assert_eq!(s.exit, ExitCode::RolledBack, "{}", s.status);
    assert!(
        s.status.contains("injected: maintenance failed"),
        "{}",
        s.status
    );
    assert_eq!(s.undone, 2, "{}", s.status);
    assert!(s.not_undone.is_empty(), "{:?}", s.not_undone);
    assert_eq!(
        vnets_anonymous(&zone.world()),
        vnets_anonymous(&before),
        "the zone is as it was"
    );
    zone.audit_verifies();
}

/// The `host_maintenance` module on its own, asked for a maintenance CloudStack cannot finish
/// (the FirstFit bug strands app-1 and app-2): the job fails and leaves the host in
/// `ErrorInMaintenance`. The module reads the host again, so the run knows the host moved and
/// its rollback cancels the maintenance: the host is `Enabled`, exit 2, nothing left undone.
#[tokio::test(flavor = "multi_thread")]
async fn a_maintenance_that_fails_half_way_is_cancelled_by_the_rollback() {
    let zone = ApiZone::start("host-maintenance-firstfit", Faults::default()).await;
    let world = zone.world();
    let id = world["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "kvm-a1")
        .map(|h| h["id"].as_str().unwrap().to_string())
        .unwrap();
    let file = zone.dir.path().join("naive-maintenance.yml");
    std::fs::write(
        &file,
        "name: naive-maintenance\nparams: { host_id: { required: true } }\nsteps:\n  \
         - id: maintenance\n    host_maintenance: { host: \"{{ host_id }}\" }\n",
    )
    .unwrap();
    let plan = zone.plan(&file, &[("host_id", &id)]).await;
    let router = zone.router(&plan);
    let (_, s, _) = run(plan, router, zone.run_options(false)).await;
    assert_eq!(s.exit, ExitCode::RolledBack, "{}", s.status);
    assert!(s.status.contains("ErrorInMaintenance"), "{}", s.status);
    assert_eq!(s.undone, 1, "{}", s.status);
    assert!(s.not_undone.is_empty(), "{:?}", s.not_undone);
    assert_eq!(
        zone.mutating_requests(),
        ["prepareHostForMaintenance", "cancelHostMaintenance"]
    );
    assert_eq!(resource_state(&zone.world(), "kvm-a1"), "Enabled");
    zone.audit_verifies();
}

const FAILED_JOB: &str = "5b1f2c9e-7d43-4a8e-9c61-2f0e8d7a3b10";

/// Job 733 failed: its number found from the logs, its timeline across the rotated gzipped
/// log and today's, the first WARN/ERROR (the time-out stopping i-2-940-VM on host 49), one
/// finding.
#[tokio::test(flavor = "multi_thread")]
async fn job_triage_follows_a_failed_job_through_the_logs() {
    let zone = ApiZone::start("job-triage", Faults::default()).await;
    for (s, reports) in read_only(&zone, "job-triage", &[("job", FAILED_JOB)]).await {
        assert_eq!(s.exit, ExitCode::Found, "{}", s.status);
        assert_eq!(s.status, "found problems: 1 finding(s) (verdict@localhost)");
        let t = report(&reports, "timeline");
        assert_eq!(t["title"], format!("Job {FAILED_JOB} (job-733): failed"));
        assert_eq!(t["found"], false);
        for (name, value) in [
            (
                "command",
                "org.apache.cloudstack.api.command.user.vm.DestroyVMCmd",
            ),
            ("result", "530 Failed to destroy vm"),
            ("instance", "i-2-940-VM"),
            ("host", "kvm03"),
            ("logid", "cb16db26"),
        ] {
            assert_eq!(fact(&reports, "timeline", name), value, "{name}");
        }
        let timeline = rows(&reports, "timeline");
        let events: Vec<[&str; 4]> = timeline
            .iter()
            .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()])
            .collect();
        assert_eq!(
            events,
            [
                ["submit", "2026-12-05 23:59:40,535", "mgmt1", "DEBUG"],
                ["executing", "2026-12-05 23:59:40,554", "mgmt1", "DEBUG"],
                [
                    "first WARN/ERROR",
                    "2026-12-06 00:00:10,404",
                    "mgmt1",
                    "WARN"
                ],
                ["complete", "2026-12-06 00:00:11,604", "mgmt1", "DEBUG"],
            ]
        );
        assert!(timeline[0][4].starts_with("submit async job-733, details: AsyncJobVO {id:733,"));
        assert!(
            timeline[2][4].starts_with("Unable to stop vm VM[User|i-2-940-VM] on host id 49: "),
            "{:?}",
            timeline[2]
        );
        assert!(timeline[3][4]
            .starts_with("Complete async job-733, jobStatus: FAILED, resultCode: 530"));
        let verdict = rows(&reports, "verdict");
        assert_eq!(verdict.len(), 1);
        assert_eq!(verdict[0][..2], ["2026-12-06 00:00:10,404", "mgmt1"]);
        assert!(
            verdict[0][2]
                .starts_with("WARN  [c.c.v.VirtualMachineManagerImpl] (API-Job-Executor-14:")
                && verdict[0][2].contains("Unable to stop vm VM[User|i-2-940-VM] on host id 49"),
            "{:?}",
            verdict[0]
        );
        // mgmt2, where kvm03's agent is, logged the forwarded command and its time-out under
        // the job's logid, without its number.
        let context = rows(&reports, "context");
        let heads: Vec<[&str; 3]> = context
            .iter()
            .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()])
            .collect();
        assert_eq!(
            heads,
            [
                ["2026-12-05 23:59:40,630", "mgmt2", "DEBUG"],
                ["2026-12-06 00:00:10,364", "mgmt2", "WARN"],
            ]
        );
        assert_eq!(
            context[0][3],
            "Seq 49-8712394812934733: Dispatching StopCommand for i-2-940-VM to host 49(kvm03)"
        );
    }
    // It read the rotated gzipped logs and today's over SSH (the zone's record shows mgmt1's
    // commands), and only read.
    let ran: Vec<(String, String)> = zone.ssh_commands();
    assert!(
        ran.iter().any(|(m, l)| m == "mgmt1"
            && l == "zgrep job-733 /var/log/cloudstack/management/management-server.log.2026-12-04.gz \
                     /var/log/cloudstack/management/management-server.log.2026-12-05.gz \
                     /var/log/cloudstack/management/management-server.log "),
        "{ran:#?}"
    );
    assert!(
        ran.iter()
            .any(|(m, l)| m == "mgmt1" && l.starts_with("zgrep logid:cb16db26 ")),
        "{ran:#?}"
    );
    for (m, l) in &ran {
        assert!(l.starts_with("ls ") || l.starts_with("zgrep "), "{m}: {l}");
    }
}

/// A job that succeeded is not a finding (exit 0); `since` limits the rotated logs read, and
/// `log_id` skips the search for the job's number.
#[tokio::test(flavor = "multi_thread")]
async fn job_triage_of_a_job_that_succeeded_and_the_options() {
    let zone = ApiZone::start("job-triage", Faults::default()).await;
    let router = zone.world()["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["kind"]["type"] == "router")
        .map(|v| v["id"].as_str().unwrap().to_string())
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let args = [("id".to_string(), router)].into_iter().collect();
    zone.conn
        .client
        .call(
            "rebootRouter",
            &args,
            remedy::cloudstack::client::Method::Post,
            deadline,
            None,
        )
        .await
        .expect("rebootRouter");
    let jobs = zone
        .conn
        .client
        .call(
            "listAsyncJobs",
            &Default::default(),
            remedy::cloudstack::client::Method::Get,
            deadline,
            None,
        )
        .await
        .unwrap();
    let rebooted = jobs["asyncjobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["cmd"].as_str().unwrap().ends_with("RebootRouterCmd"))
        .map(|j| j["jobid"].as_str().unwrap().to_string())
        .expect("the reboot's job");
    let (s, reports) = apply(&zone, "job-triage", &[("job", &rebooted)], true).await;
    assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
    assert_eq!(
        report(&reports, "timeline")["title"],
        format!("Job {rebooted} (not found in the logs): succeeded")
    );
    assert!(rows(&reports, "verdict").is_empty());
    assert_eq!(report(&reports, "verdict")["empty"], "the job did not fail");
    assert!(rows(&reports, "context").is_empty());

    let (s, reports) = apply(
        &zone,
        "job-triage",
        &[
            ("job", FAILED_JOB),
            ("log_id", "job-733"),
            ("since", "2026-12-05"),
        ],
        true,
    )
    .await;
    assert_eq!(s.exit, ExitCode::Found, "{}", s.status);
    assert_eq!(rows(&reports, "timeline").len(), 4);
    // The first run found no number, so every `zgrep job-733` is this run's.
    let ran: Vec<String> = zone
        .ssh_commands()
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.starts_with("zgrep job-733 "))
        .collect();
    assert_eq!(ran.len(), 1, "mgmt1's: {ran:#?}");
    assert!(
        ran.iter()
            .all(|l| !l.contains(".2026-12-04.gz") && l.contains(".2026-12-05.gz")),
        "since: {ran:#?}"
    );
}

fn host_state(world: &Value, host: &str) -> String {
    world["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == host)
        .map(|h| h["state"].as_str().unwrap().to_string())
        .unwrap()
}

/// restart-agent (written from the docs alone): kvm02 is Disconnected because its agent
/// failed; the restart brings it back Up (Connecting first); a second run has nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn restart_agent_brings_a_disconnected_host_back() {
    let zone = ApiZone::start("agent-disconnected", Faults::default()).await;
    let params = [("host", "kvm02")];
    let (s, _) = apply(&zone, "restart-agent", &params, true).await;
    assert_eq!(s.exit, ExitCode::Success, "dry-run: {}", s.status);
    let ran: Vec<String> = zone.ssh_commands().into_iter().map(|(_, l)| l).collect();
    assert_eq!(ran, ["systemctl is-active cloudstack-agent"]);
    assert_eq!(host_state(&zone.world(), "kvm02"), "Disconnected");

    let (s, _) = apply(&zone, "restart-agent", &params, false).await;
    assert_eq!(s.exit, ExitCode::Success, "apply: {}", s.status);
    assert_eq!(host_state(&zone.world(), "kvm02"), "Up");
    let (s, _) = apply(&zone, "restart-agent", &params, false).await;
    assert_eq!(s.exit, ExitCode::Success, "again: {}", s.status);
    assert!(!s.applies, "{}", s.status);
    zone.audit_verifies();
}

/// With the agent failing again after its restart (`agent_stays_down`), the wait for Up runs
/// out: the run fails, says what the last reply was, and leaves the restart in place (it needs
/// no undo): exit 2. The wait is shortened to 5 tries a second apart (`up_retries`,
/// `up_delay`): the agent gives up 3 s after its restart.
#[tokio::test(flavor = "multi_thread")]
async fn restart_agent_fails_when_the_agent_stays_down() {
    let zone = ApiZone::start(
        "agent-disconnected",
        Faults {
            agent_stays_down: vec!["kvm02".into()],
            ..Faults::default()
        },
    )
    .await;
    let params = [("host", "kvm02"), ("up_retries", "4"), ("up_delay", "1s")];
    let (s, _) = apply(&zone, "restart-agent", &params, false).await;
    assert_eq!(s.exit, ExitCode::RolledBack, "{}", s.status);
    assert!(
        s.status.starts_with(
            "failed (step host_up failed on localhost: `until` still false after 5 attempt(s): "
        ),
        "{}",
        s.status
    );
    assert!(
        s.status.contains(
            r#"; last reply, the fields it reads: {"items":[{"name":"kvm02","state":"Disconnected"}]})"#
        ),
        "{}",
        s.status
    );
    assert_eq!(s.left, ["restart@kvm02"]);
    assert_eq!(host_state(&zone.world(), "kvm02"), "Disconnected");
    zone.audit_verifies();
}

/// reboot-ssvm (written from the docs alone): on a healthy zone it does nothing unless forced;
/// forced, it reboots s-1-VM and the self-check passes; where the setting misses the template
/// server (a reboot does not fix that) the self-check still fails after the reboot, and the run
/// says which line: exit 2, the reboot left in place.
#[tokio::test(flavor = "multi_thread")]
async fn reboot_ssvm_reboots_and_runs_the_self_check() {
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let (s, _) = apply(&zone, "reboot-ssvm", &[], false).await;
    assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
    assert!(!s.applies, "{}", s.status);
    assert_eq!(zone.mutating_requests(), Vec::<String>::new());

    let (s, _) = apply(&zone, "reboot-ssvm", &[("force", "true")], true).await;
    assert_eq!(s.exit, ExitCode::Success, "dry-run: {}", s.status);
    assert_eq!(zone.mutating_requests(), Vec::<String>::new());
    let (s, _) = apply(&zone, "reboot-ssvm", &[("force", "true")], false).await;
    assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
    assert_eq!(zone.mutating_requests(), ["rebootSystemVm"]);
    let checks = zone
        .ssh_commands()
        .into_iter()
        .filter(|(m, l)| m == "s-1-VM" && l == "/usr/local/cloud/systemvm/ssvm-check.sh")
        .count();
    assert_eq!(checks, 4, "before and after, in each of the two runs");
    zone.audit_verifies();

    // (the self-check after the reboot tried twice, 100 ms apart, instead of 3 times 5 s apart)
    let zone = ApiZone::start("ssvm-broken", Faults::default()).await;
    let short = [("check_retries", "1"), ("check_delay", "100ms")];
    let (s, _) = apply(&zone, "reboot-ssvm", &short, false).await;
    assert_eq!(s.exit, ExitCode::RolledBack, "{}", s.status);
    assert!(
        s.status
            .contains("ERROR: 10.20.0.15 is not covered by secstorage.allowed.internal.sites"),
        "{}",
        s.status
    );
    assert_eq!(s.left, ["reboot@localhost"]);
    assert_eq!(zone.mutating_requests(), ["rebootSystemVm"]);
    let checks = zone
        .ssh_commands()
        .into_iter()
        .filter(|(m, l)| m == "s-1-VM" && l == "/usr/local/cloud/systemvm/ssvm-check.sh")
        .count();
    assert_eq!(checks, 3, "once before the reboot, twice after");
    zone.audit_verifies();
}

/// `remedy ARGS` from the checkout, with its own HOME, state directory and audit log under
/// `dir`, and `REMEDY_LAB_SCENARIO` set to `scenario` (`None`: unset).
fn remedy(dir: &Path, scenario: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(REMEDY);
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("HOME", dir)
        .env("REMEDY_STATE_DIR", dir.join("state"))
        .env("REMEDY_AUDIT_LOG", dir.join("audit.jsonl"))
        .env_remove("REMEDY_INVENTORY")
        .env_remove("SSH_AUTH_SOCK");
    match scenario {
        Some(s) => cmd.env("REMEDY_LAB_SCENARIO", s),
        None => cmd.env_remove("REMEDY_LAB_SCENARIO"),
    };
    cmd.output().expect("run remedy")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The issue's "done when", verbatim from docs/playbooks/stale-nics.md:
/// `REMEDY_LAB_SCENARIO=stale-nics remedy apply stale-nics -i inventories/lab.yml -e
/// network=backend --dry-run` prints the table and exits 8, and stderr says which scenario
/// ran; the same without `--dry-run` and without `--yes` (it only reads, so nothing asks);
/// `--output json` carries the rows and `found`; the healthy zone exits 0; without the
/// variable the inventory's own scenario runs; an unknown scenario is exit 4, naming the
/// shipped ones.
#[test]
fn stale_nics_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "apply",
        "stale-nics",
        "-i",
        "inventories/lab.yml",
        "-e",
        "network=backend",
        "--dry-run",
    ];
    let table = [
        "    FOUND      VMs listed on backend without a NIC there @ localhost (2 rows)",
        "      vm     instance    nics",
        "      -----  ----------  ----",
        "      web-1  i-2-934-VM  web",
        "      web-2  i-2-935-VM  web",
        "found problems: 2 finding(s) (stale@localhost) (exit 8)",
    ];
    for args in [&args[..], &args[..6]] {
        let o = remedy(dir.path(), Some("stale-nics"), args);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(8), "{out}{}", stderr(&o));
        for line in table {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
        assert_eq!(
            stderr(&o).lines().next(),
            Some(
                "remedy: the embedded simulator runs scenario stale-nics (REMEDY_LAB_SCENARIO, \
                 in place of the inventory's simulator.scenario)"
            )
        );
        assert!(!stderr(&o).contains("--yes"), "{}", stderr(&o));
    }

    let o = remedy(
        dir.path(),
        Some("stale-nics"),
        &[&args[..], &["--output", "json"]].concat(),
    );
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
        strings(&[
            &["web-1", "i-2-934-VM", "web"],
            &["web-2", "i-2-935-VM", "web"]
        ])
    );
    assert_eq!(fact(&reports, "stale", "listed"), 3);
    let end = events.iter().find(|e| e["event"] == "run_end").unwrap();
    assert_eq!(
        (end["exit_code"].as_i64(), end["found"].as_i64()),
        (Some(8), Some(2))
    );

    let healthy = [&args[..4], &["-e", "network=web", "--dry-run"]].concat();
    let o = remedy(dir.path(), Some("healthy"), &healthy);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("      every VM listed on web has a NIC there\n"),
        "{out}"
    );

    // Without the variable: the inventory's own scenario (vr-backup-loop), which has no
    // network named backend.
    let o = remedy(dir.path(), None, &args);
    assert_eq!(o.status.code(), Some(7), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("expected one network named backend, found 0"),
        "{}",
        stdout(&o)
    );
    assert!(
        !stderr(&o).contains("REMEDY_LAB_SCENARIO"),
        "{}",
        stderr(&o)
    );

    let o = remedy(dir.path(), Some("stale-nic"), &args);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with(
            "error: REMEDY_LAB_SCENARIO: no scenario \"stale-nic\": not a shipped scenario \
             (healthy, "
        ),
        "{err}"
    );
    assert!(err.contains(", stale-nics, "), "{err}");
    assert_eq!(stdout(&o), "");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
