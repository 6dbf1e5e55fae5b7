//! The shipped playbooks against the embedded zone, each on its broken scenario and on the
//! healthy one: a dry-run changes nothing, an apply fixes it (the scenario's own check), a
//! second apply has nothing to do, a fault at each mutating step rolls the zone back to where
//! it was, and the audit log verifies after all of it.

use std::path::PathBuf;

use cloudstack_sim::faults::Faults;
use remedy::app::RunOptions;
use remedy::error::ExitCode;
use remedy::event::Outcome;
use remedy::scheduler::Summary;
use remedy_tests::run;
use remedy_tests::zone::{guest_vlan, router_states, ApiZone};

fn playbook(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks")
        .join(format!("{name}.yml"))
}

/// Plans a shipped playbook against the zone as it is now, and runs it.
async fn apply(zone: &ApiZone, name: &str, params: &[(&str, &str)], dry_run: bool) -> Summary {
    let plan = zone.plan(&playbook(name), params).await;
    let router = zone.router(&plan);
    let (_, summary, _) = run(plan, router, zone.run_options(dry_run)).await;
    summary
}

fn changed(s: &Summary) -> Vec<&(String, String)> {
    s.outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Changed)
        .map(|(k, _)| k)
        .collect()
}

/// How a fault is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The async job of this API command fails.
    Job,
    /// The next call of this (synchronous) API command is refused.
    Call,
    /// The next SSH command starting with this fails.
    Ssh,
}

/// A shipped playbook's cases against the zone.
struct Case {
    playbook: &'static str,
    broken: &'static str,
    params: &'static [(&'static str, &'static str)],
    /// The scenario's own health check, on the zone's objects.
    healthy: fn(&serde_json::Value) -> bool,
    /// The API commands the fix sends as async jobs, each failed in turn.
    mutating: &'static [&'static str],
    /// The synchronous API commands it sends, each refused in turn.
    failing_calls: &'static [&'static str],
    /// Whether a command line run over SSH only reads (what a dry-run may run).
    read_only: fn(&str) -> bool,
    /// Whether its detection runs commands over SSH (then the dry-run must have run some).
    probes_over_ssh: bool,
    /// The commands it changes things with over SSH, each made to fail in turn.
    failing_ssh: &'static [&'static str],
}

/// The read-only command lines of the shipped playbooks' probes.
fn probe(line: &str) -> bool {
    [
        "ip -o link show ",
        "ip route show ",
        "test -s ",
        "/opt/cloud/bin/checkrouter.sh",
        "systemctl is-active ",
        "stat ",
        "ovs-vsctl list-ports ",
        "ovs-ofctl dump-flows ",
        "/usr/local/cloud/systemvm/ssvm-check.sh",
        "ss -ln",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

async fn check(case: Case) {
    let name = case.playbook;
    // Dry-run: nothing sent that changes anything, the zone as it was, a change predicted.
    let zone = ApiZone::start(case.broken, Faults::default()).await;
    let before = zone.world();
    assert!(
        !(case.healthy)(&before),
        "{}: the scenario starts broken",
        case.broken
    );
    let s = apply(&zone, name, case.params, true).await;
    assert_eq!(s.exit, ExitCode::Success, "{name} dry-run: {}", s.status);
    assert!(
        s.outcomes.values().any(|o| *o == Outcome::WouldChange),
        "{name} dry-run predicts a change: {:?}",
        s.outcomes
    );
    assert_eq!(
        zone.mutating_requests(),
        Vec::<String>::new(),
        "{name} dry-run"
    );
    assert_eq!(zone.world(), before, "{name} dry-run left the zone alone");
    let ran = zone.ssh_commands();
    assert_eq!(
        !ran.is_empty(),
        case.probes_over_ssh,
        "{name} dry-run over SSH: {ran:?}"
    );
    for (machine, line) in &ran {
        assert!(
            (case.read_only)(line),
            "{name} dry-run ran {line:?} on {machine}"
        );
    }

    // Apply fixes it; a second apply has nothing to do.
    let s = apply(&zone, name, case.params, false).await;
    assert_eq!(s.exit, ExitCode::Success, "{name} apply: {}", s.status);
    assert!((case.healthy)(&zone.world()), "{name} fixed the zone");
    let s = apply(&zone, name, case.params, false).await;
    assert_eq!(s.exit, ExitCode::Success, "{name} again: {}", s.status);
    assert!(
        changed(&s).is_empty(),
        "{name} again changed {:?}",
        changed(&s)
    );
    zone.audit_verifies();

    // A fault at each mutating step in turn (an async job failing, a synchronous call
    // refused, an SSH command failing once): the run fails and the zone is as it was.
    let faults = case
        .mutating
        .iter()
        .map(|c| (Fault::Job, *c))
        .chain(case.failing_calls.iter().map(|c| (Fault::Call, *c)))
        .chain(case.failing_ssh.iter().map(|c| (Fault::Ssh, *c)));
    for (kind, command) in faults {
        let text = format!("injected: {command} failed");
        let zone = ApiZone::start(
            case.broken,
            Faults {
                fail_jobs: (kind == Fault::Job)
                    .then(|| command.to_string())
                    .into_iter()
                    .collect(),
                fail_calls_next: (kind == Fault::Call)
                    .then(|| command.to_string())
                    .into_iter()
                    .collect(),
                job_error_text: Some(text.clone()),
                ..Faults::default()
            },
        )
        .await;
        if kind == Fault::Ssh {
            let ssh = zone.ssh();
            ssh.fail_commands(vec![command.to_string()]);
        }
        let before = zone.world();
        let s = apply(&zone, name, case.params, false).await;
        let what = format!("{name} with {kind:?} `{command}` failing");
        // A failure before anything changed is told apart from a change undone.
        let expected = if s.undone > 0 || !s.left.is_empty() {
            ExitCode::RolledBack
        } else {
            ExitCode::FailedUnchanged
        };
        assert_eq!(s.exit, expected, "{what}: {}", s.status);
        assert!(s.not_undone.is_empty(), "{what}: {:?}", s.not_undone);
        let said = if kind == Fault::Ssh {
            "sim: injected failure"
        } else {
            text.as_str()
        };
        assert!(s.status.contains(said), "{what}: {}", s.status);
        assert_eq!(zone.world(), before, "{what}: rolled back");
        zone.audit_verifies();
    }

    // The healthy zone: not applicable, nothing changed.
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let before = zone.world();
    let s = apply(&zone, name, case.params, false).await;
    assert_eq!(s.exit, ExitCode::Success, "{name} on healthy: {}", s.status);
    assert!(!s.applies, "{name} on healthy: {}", s.status);
    assert_eq!(zone.mutating_requests(), Vec::<String>::new());
    assert_eq!(zone.world(), before);
    zone.audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn fix_vlan_range() {
    check(Case {
        playbook: "fix-vlan-range",
        broken: "vr-backup-loop",
        params: &[("range", "1000-1099")],
        healthy: |w| guest_vlan(w) == "1000-1099",
        mutating: &["updatePhysicalNetwork"],
        failing_calls: &[],
        read_only: probe,
        probes_over_ssh: false,
        failing_ssh: &[],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vr_backup_loop() {
    check(Case {
        playbook: "vr-backup-loop",
        broken: "vr-backup-loop",
        params: &[("vpc", "web-vpc"), ("vlan_range", "1000-1099")],
        healthy: |w| {
            let r = router_states(w);
            r.len() == 2
                && r.iter()
                    .all(|(_, _, keepalived, conf)| *keepalived && *conf)
                && r.iter().filter(|(_, eth1, _, _)| *eth1).count() == 1
                && guest_vlan(w) == "1000-1099"
        },
        mutating: &["updatePhysicalNetwork", "restartVPC"],
        failing_calls: &[],
        read_only: probe,
        probes_over_ssh: true,
        failing_ssh: &["ip link set dev eth1 up", "ip route replace default"],
    })
    .await;
}

fn router_service(world: &serde_json::Value, router: &str, service: &str) -> String {
    world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == router)
        .map(|v| {
            v["guest"]["services"][service]["state"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_dnsmasq() {
    check(Case {
        playbook: "restart-dnsmasq",
        broken: "dnsmasq-dead",
        params: &[("vpc", "web-vpc")],
        healthy: |w| router_service(w, "r-930-VM", "dnsmasq") == "active",
        mutating: &[],
        failing_calls: &[],
        read_only: probe,
        probes_over_ssh: true,
        failing_ssh: &["systemctl restart dnsmasq"],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vr_restore_public_link() {
    check(Case {
        playbook: "vr-restore-public-link",
        broken: "vr-backup-loop",
        params: &[("routers", "vpc_web_vpc")],
        healthy: |w| {
            let routers: Vec<&serde_json::Value> = w["vms"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["kind"]["type"] == "router")
                .collect();
            routers.len() == 2
                && routers.iter().all(|r| {
                    r["guest"]["links"]["eth1"]["up"] == true
                        && r["guest"]["routes"]["Table_eth1"][0]
                            .as_str()
                            .is_some_and(|x| x.starts_with("default via 198.51.100.1 dev eth1"))
                })
        },
        mutating: &[],
        failing_calls: &[],
        read_only: probe,
        probes_over_ssh: true,
        failing_ssh: &["ip link set dev eth1 up", "ip route replace default"],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_ssvm() {
    check(Case {
        playbook: "recreate-ssvm",
        broken: "ssvm-broken",
        params: &[("add_site", "10.20.0.0/16")],
        healthy: |w| {
            let ssvms: Vec<&serde_json::Value> = w["vms"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| {
                    v["kind"]["systemvmtype"] == "secondarystoragevm" && v["state"] == "Running"
                })
                .collect();
            ssvms.len() == 1
                && ssvms[0]["kind"]["allowed_sites"]
                    .as_str()
                    .is_some_and(|s| s.split(',').any(|c| c == "10.20.0.0/16"))
        },
        mutating: &["destroySystemVm"],
        failing_calls: &["updateConfiguration"],
        read_only: probe,
        probes_over_ssh: true,
        failing_ssh: &[],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chmod_catalina_out() {
    check(Case {
        playbook: "chmod-catalina-out",
        broken: "catalina-perms",
        params: &[],
        healthy: |w| {
            let f = &w["mgmt"]["guest"]["files"]["/var/log/cloudstack/management/catalina.out"];
            f["mode"] == 0o644 && f["owner"] == "cloud" && f["group"] == "cloud"
        },
        mutating: &[],
        failing_calls: &[],
        read_only: probe,
        probes_over_ssh: true,
        failing_ssh: &["chown", "chmod"],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readd_ovs_port_flow() {
    check(Case {
        playbook: "readd-ovs-port-flow",
        broken: "ovs-port-missing",
        params: &[
            ("hosts", "kvm01"),
            ("bridge", "cloudbr1"),
            ("port", "vnet3"),
            ("flow_match", "in_port=vnet3"),
        ],
        healthy: |w| {
            let kvm01 = w["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["name"] == "kvm01")
                .unwrap();
            let br = &kvm01["guest"]["ovs"]["cloudbr1"];
            br["ports"].as_array().unwrap().iter().any(|p| p == "vnet3")
                && br["flows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f == "table=0,priority=100,in_port=vnet3,actions=NORMAL")
        },
        mutating: &[],
        failing_calls: &[],
        read_only: probe,
        probes_over_ssh: true,
        failing_ssh: &["ovs-vsctl --may-exist add-port", "ovs-ofctl add-flow"],
    })
    .await;
}

/// The irreversible step is refused without `--allow-irreversible` (or, later, an approved
/// plan): nothing runs, nothing is sent, nothing is written to the audit log.
#[tokio::test(flavor = "multi_thread")]
async fn recreate_ssvm_is_refused_without_allow_irreversible() {
    let zone = ApiZone::start("ssvm-broken", Faults::default()).await;
    let plan = zone
        .plan(&playbook("recreate-ssvm"), &[("add_site", "10.20.0.0/16")])
        .await;
    let router = zone.router(&plan);
    let requests_before = zone.sim().requests().len();
    let opts = RunOptions {
        audit_log: Some(zone.audit()),
        ..RunOptions::default()
    };
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let refused = remedy::app::execute(plan, router, opts, None, cancel).await;
    match refused {
        Err(remedy::error::Error::PlanRefused(why)) => assert!(
            why.contains("destroy (CloudStack deploys a new SSVM in its place"),
            "{why}"
        ),
        other => panic!("not refused: {:?}", other.map(|(run, s)| (run, s.status))),
    }
    assert_eq!(
        zone.sim().requests().len(),
        requests_before,
        "nothing was sent"
    );
    assert!(!zone.audit().exists(), "nothing was audited");
}

/// When a run fails after CloudStack allocated VLANs from the range it added (restartVPC
/// implemented the tiers), the server would refuse to take the range back: `implement`
/// declares `consumes: [vlans]`, so the range is kept and named, and everything else is undone.
#[tokio::test(flavor = "multi_thread")]
async fn a_range_in_use_is_kept_as_consumed() {
    let zone = ApiZone::start("vr-backup-loop", Faults::default()).await;
    let ssh = zone.ssh();
    // verify's first check fails once, after every change was made
    ssh.fail_commands(vec!["systemctl is-active keepalived".into()]);
    let s = apply(
        &zone,
        "vr-backup-loop",
        &[("vpc", "web-vpc"), ("vlan_range", "1000-1099")],
        false,
    )
    .await;
    assert_eq!(s.exit, ExitCode::RolledBack, "{}", s.status);
    assert!(s.not_undone.is_empty(), "{:?}", s.not_undone);
    assert!(
        s.left
            .iter()
            .any(|l| l == "vlans.guest_vlans@localhost, consumed by implement"),
        "{:?}",
        s.left
    );
    assert_eq!(guest_vlan(&zone.world()), "1000-1099", "the range stays");
    // the SSH changes were undone: both public links down again
    let r = router_states(&zone.world());
    assert!(r.iter().all(|(_, eth1, _, _)| !eth1), "{r:?}");
    zone.audit_verifies();
}

/// The same playbook when the tiers are implemented but both routers lost their
/// configuration: no range or restart is needed, and rebooting both brings them back.
#[tokio::test(flavor = "multi_thread")]
async fn vr_backup_loop_reboots_unconfigured_routers() {
    check(Case {
        playbook: "vr-backup-loop",
        broken: "vr-keepalived-lost",
        params: &[("vpc", "web-vpc"), ("vlan_range", "1000-1099")],
        healthy: |w| {
            let r = router_states(w);
            r.len() == 2
                && r.iter()
                    .all(|(_, _, keepalived, conf)| *keepalived && *conf)
                && r.iter().filter(|(_, eth1, _, _)| *eth1).count() == 1
        },
        // a reboot has no undo, and a failed one leaves the router down: not a rollback case
        mutating: &[],
        failing_calls: &[],
        read_only: probe,
        probes_over_ssh: true,
        failing_ssh: &["ip link set dev eth1 up", "ip route replace default"],
    })
    .await;
}
