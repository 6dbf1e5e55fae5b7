//! The engine against the embedded simulated zone: an inventory that says `simulator:`, the
//! router transport, real HTTP. Dry-run sends no mutating request; an apply fixes the VR
//! backup loop; a failing async job rolls the VLAN range back and the audit log has its text.

use std::sync::Arc;

use cloudstack_sim::faults::Faults;
use cloudstack_sim::server::Sim;
use remedy::app::RunOptions;
use remedy::audit;
use remedy::cloudstack::Method;
use remedy::error::ExitCode;
use remedy::transport::route::Router;
use remedy_tests::{plan, run, write};

const INVENTORY: &str =
    "all:\n  vars:\n    remedy_cloudstack:\n      simulator: { scenario: vr-backup-loop }\n";

/// A compact version of the VR backup loop fix: add the guest VLAN range, restart the VPC,
/// verify one router became PRIMARY.
const PLAYBOOK: &str = r#"
name: vpc-guest-vlans
description: Both routers of a VPC are BACKUP because the physical network has no guest VLAN range.
params:
  range: { default: "1000-1099" }
detect:
  - id: vpcs
    api: { command: listVPCs }
  - id: routers
    api: { command: listRouters, args: { vpcid: "{{ vpcs.items[0].id }}" } }
  - id: physnets
    api: { command: listPhysicalNetworks }
applies_when: routers.items | selectattr("redundantstate", "equalto", "PRIMARY") | list | length == 0
steps:
  - id: guest_vlans
    vlan_range: { physical_network: "{{ physnets.items[0].id }}", range: "{{ range }}" }
  - id: restart
    api: { command: restartVPC, args: { id: "{{ vpcs.items[0].id }}" } }
    no_rollback: restarting a VPC without cleanup reconfigures its routers in place
    timeout: 20s
verify:
  - id: one_primary
    api: { command: listRouters, args: { vpcid: "{{ vpcs.items[0].id }}" } }
    retries: 20
    delay: 200ms
    until: result.items | selectattr("redundantstate", "equalto", "PRIMARY") | list | length == 1
"#;

struct Setup {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    router: Arc<Router>,
    conn: Arc<remedy::cloudstack::Connection>,
}

impl Setup {
    async fn new(faults: Faults) -> (Setup, remedy::plan::Plan) {
        Setup::with(INVENTORY, PLAYBOOK, faults).await
    }

    /// A run of `playbook` against the embedded zone `inventory` names.
    async fn with(inventory: &str, playbook: &str, faults: Faults) -> (Setup, remedy::plan::Plan) {
        let dir = tempfile::tempdir().unwrap();
        let pb = write(dir.path(), "vpc-guest-vlans.yml", playbook);
        let inv = write(dir.path(), "lab.yml", inventory);
        let plan = plan(&pb, &inv, &[]);
        let router = Arc::new(Router::for_inventory(&plan.inventory));
        let conn = router
            .api()
            .connection()
            .await
            .expect("the embedded zone starts");
        let setup = Setup {
            log: dir.path().join("audit.log"),
            _dir: dir,
            router,
            conn,
        };
        setup.sim().set_faults(faults);
        (setup, plan)
    }

    fn sim(&self) -> &Sim {
        self.conn.simulator.as_ref().expect("embedded simulator")
    }

    fn opts(&self, dry_run: bool) -> RunOptions {
        RunOptions {
            dry_run,
            audit_log: Some(self.log.clone()),
            ..RunOptions::default()
        }
    }

    /// Every request the zone saw that was not a read.
    fn mutating_requests(&self) -> Vec<String> {
        remedy_tests::mutating_requests(self.sim())
    }

    /// The guest VLAN ranges of the (first) physical network, read through the API.
    async fn vlan(&self) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let reply = self
            .conn
            .client
            .call(
                "listPhysicalNetworks",
                &Default::default(),
                Method::Get,
                deadline,
                None,
            )
            .await
            .expect("listPhysicalNetworks");
        reply["physicalnetwork"][0]["vlan"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

#[tokio::test]
async fn dry_run_against_the_zone_sends_no_mutating_request() {
    let (s, plan) = Setup::new(Faults {
        job_ms: Some(200),
        ..Faults::default()
    })
    .await;
    let before = s.sim().with_zone(|z| z.snapshot());
    let (_, summary, _) = run(plan, s.router.clone(), s.opts(true)).await;
    assert_eq!(summary.exit, ExitCode::Success);
    assert_eq!(s.mutating_requests(), Vec::<String>::new());
    assert!(!s.sim().requests().is_empty(), "detection did run for real");
    assert_eq!(
        s.sim().with_zone(|z| z.snapshot()),
        before,
        "the zone is unchanged"
    );
}

#[tokio::test]
async fn apply_fixes_the_backup_loop() {
    let (s, plan) = Setup::new(Faults {
        job_ms: Some(200),
        ..Faults::default()
    })
    .await;
    assert_eq!(s.vlan().await, "");
    let (_, summary, _) = run(plan, s.router.clone(), s.opts(false)).await;
    assert_eq!(summary.exit, ExitCode::Success, "{summary:?}");
    assert_eq!(s.vlan().await, "1000-1099");
    assert_eq!(
        s.mutating_requests(),
        vec![
            "updatePhysicalNetwork".to_string(),
            "restartVPC".to_string()
        ]
    );
    assert!(audit::verify(&s.log).unwrap().problems.is_empty());
}

#[tokio::test]
async fn a_failing_job_rolls_the_range_back_and_the_audit_log_has_its_text() {
    let (s, plan) = Setup::new(Faults {
        job_ms: Some(200),
        fail_jobs: vec!["restartVPC".into()],
        job_error_text: Some("Failed to restart VPC: router r-42-VM did not respond".into()),
        ..Faults::default()
    })
    .await;
    let (_, summary, _) = run(plan, s.router.clone(), s.opts(false)).await;
    assert_eq!(summary.exit, ExitCode::RolledBack, "{summary:?}");
    assert_eq!(s.vlan().await, "", "the added range was removed again");
    assert_eq!(
        s.mutating_requests(),
        vec![
            "updatePhysicalNetwork".to_string(),
            "restartVPC".to_string(),
            "updatePhysicalNetwork".to_string()
        ]
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("router r-42-VM did not respond"),
        "job errortext in the audit log"
    );
    assert!(
        !log.contains(s.sim().secret_key()),
        "no secret in the audit log"
    );
}

/// Narrowing the guest range of a zone whose tiers hold VLANs at its start: CloudStack runs
/// updatePhysicalNetwork as a job and refuses inside it (jobstatus 2, jobresultcode 431). The
/// run reports the server's text, changes nothing, and undoes the step before it.
#[tokio::test]
async fn a_range_in_use_is_refused_by_the_job_and_the_run_rolls_back() {
    const NARROW: &str = r#"
name: narrow-guest-vlans
description: Narrows the guest VLAN range after raising a setting.
detect:
  - id: physnets
    api: { command: listPhysicalNetworks }
steps:
  - id: interval
    api: { command: updateConfiguration, args: { name: router.check.interval, value: "60" } }
    rollback: { api: { command: updateConfiguration, args: { name: router.check.interval, value: "30" } } }
  - id: narrow
    needs: [interval]
    api: { command: updatePhysicalNetwork, args: { id: "{{ physnets.items[0].id }}", vlan: "1500-1999" } }
    no_rollback: the test expects CloudStack to refuse it
"#;
    let inventory = INVENTORY.replace("vr-backup-loop", "healthy");
    let (s, plan) = Setup::with(
        &inventory,
        NARROW,
        Faults {
            job_ms: Some(200),
            ..Faults::default()
        },
    )
    .await;
    let (_, summary, _) = run(plan, s.router.clone(), s.opts(false)).await;
    assert_eq!(summary.exit, ExitCode::RolledBack, "{summary:?}");
    assert_eq!(s.vlan().await, "1000-1999", "the range in use is kept");
    let interval = s
        .sim()
        .with_zone(|z| z.world().setting("router.check.interval").to_string());
    assert_eq!(interval, "30", "the step before was undone");
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("physicalnetwork 200 has allocated vnets in the range 1000-1499"),
        "the server's refusal in the audit log: {log}"
    );
    assert!(audit::verify(&s.log).unwrap().problems.is_empty());
}
