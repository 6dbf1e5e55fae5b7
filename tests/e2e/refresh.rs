//! `refresh_inventory` against the embedded zone, through the library: the inventory comes
//! from the zone's API, and the run reads it again after the step that asks for it. Dry-run
//! sends nothing that changes the zone; a refresh that cannot be made stops the run and rolls
//! back what it changed, with the reason in the audit log.

use cloudstack_sim::faults::Faults;
use remedy::error::ExitCode;
use remedy::event::{Event, RefreshStatus};
use remedy::plan::Plan;
use remedy_tests::zone::ApiZone;
use remedy_tests::{run, write};

const REPLACE: &str = r#"
name: replace-ssvm
description: change a setting, recreate the SSVM, check the new one
detect:
  - id: ssvms
    api: { command: listSystemVms, args: { systemvmtype: secondarystoragevm } }
steps:
  - id: sites
    cs_setting: { name: secstorage.allowed.internal.sites, value: 10.20.0.0/16 }
  - id: destroy
    api: { command: destroySystemVm, args: { id: "{{ ssvms.items[0].id }}" } }
    irreversible: CloudStack deploys a new SSVM in its place
  - id: replacement
    api: { command: listSystemVms, args: { systemvmtype: secondarystoragevm } }
    retries: 40
    delay: 250ms
    until: >-
      result.items | length == 1 and result.items[0].id != ssvms.items[0].id
      and result.items[0].agentstate == "Up"
    refresh_inventory: true
verify:
  - id: check
    on: ssvm
    ssh: /usr/local/cloud/systemvm/ssvm-check.sh
    changes: none
"#;

/// A reversible change, then a refresh (nothing re-created), then a step on the SSVM.
const SETTING_THEN_REFRESH: &str = r#"
name: setting-then-refresh
description: a reversible change, a refresh, a check
steps:
  - id: sites
    cs_setting: { name: secstorage.allowed.internal.sites, value: 10.20.0.0/16 }
  - id: zones
    api: { command: listZones }
    refresh_inventory: true
verify:
  - id: check
    on: ssvm
    ssh: /usr/local/cloud/systemvm/ssvm-check.sh
    changes: none
"#;

/// The playbook, written out and planned against the zone as its API says it is now.
async fn plan(zone: &ApiZone, playbook: &str) -> Plan {
    let pb = write(zone.dir.path(), "playbook.yml", playbook);
    zone.plan(&pb, &[]).await
}

fn setting(zone: &ApiZone) -> String {
    zone.world()["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "secstorage.allowed.internal.sites")
        .map(|s| s["value"].as_str().unwrap().to_string())
        .unwrap()
}

fn refreshes(events: &[Event]) -> Vec<(RefreshStatus, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::InventoryRefresh { status, error, .. } => Some((*status, error.clone())),
            _ => None,
        })
        .collect()
}

fn outcome_of(events: &[Event], step: &str) -> Vec<(String, remedy::event::Outcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepEnd {
                step: s,
                target,
                outcome,
                ..
            } if s == step => Some((target.clone(), *outcome)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_of_a_replacement_changes_nothing_and_cannot_say_where_the_check_runs() {
    let zone = ApiZone::start("ssvm-broken", Faults::default()).await;
    let plan = plan(&zone, REPLACE).await;
    let before = zone.sim().with_zone(|z| z.snapshot());
    let router = zone.router(&plan);
    let (_, summary, events) = run(plan, router, zone.run_options(true)).await;
    assert_eq!(summary.exit, ExitCode::Success, "{}", summary.status);
    assert_eq!(zone.mutating_requests(), Vec::<String>::new());
    assert_eq!(zone.sim().with_zone(|z| z.snapshot()), before);
    assert_eq!(refreshes(&events), [(RefreshStatus::Unknown, None)]);
    use remedy::event::Outcome::*;
    assert_eq!(
        outcome_of(&events, "sites"),
        [("localhost".into(), WouldChange)]
    );
    assert_eq!(
        outcome_of(&events, "destroy"),
        [("localhost".into(), Unknown)]
    );
    assert_eq!(outcome_of(&events, "check"), [("s-1-VM".into(), Unknown)]);
    zone.audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_reaches_the_replacement_over_ssh_through_its_hypervisor() {
    let zone = ApiZone::start("ssvm-broken", Faults::default()).await;
    let plan = plan(&zone, REPLACE).await;
    let router = zone.router(&plan);
    let (_, summary, events) = run(plan, router, zone.run_options(false)).await;
    assert_eq!(summary.exit, ExitCode::Success, "{}", summary.status);
    assert_eq!(refreshes(&events), [(RefreshStatus::Refreshed, None)]);
    let check = outcome_of(&events, "check");
    assert_eq!(check.len(), 1, "{check:?}");
    assert_ne!(check[0].0, "s-1-VM", "the check ran on the replacement");
    assert_eq!(check[0].1, remedy::event::Outcome::Ok);
    // It went over SSH through the new SSVM's hypervisor, to the new machine.
    let ssh = zone.ssh();
    assert_eq!(
        ssh.commands(&check[0].0),
        ["/usr/local/cloud/systemvm/ssvm-check.sh"]
    );
    assert!(ssh.commands("s-1-VM").is_empty());
    assert_eq!(setting(&zone), "10.20.0.0/16");
    zone.audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inventory_edited_mid_run_refuses_the_refresh_and_rolls_back() {
    let zone = ApiZone::start("ssvm-broken", Faults::default()).await;
    let plan = plan(&zone, SETTING_THEN_REFRESH).await;
    let router = zone.router(&plan);
    let opts = zone.run_options(false);
    // The run works from the files as they were when it began.
    let text = std::fs::read_to_string(&zone.inventory).unwrap();
    std::fs::write(&zone.inventory, format!("{text}# edited\n")).unwrap();
    let before = setting(&zone);
    let (_, summary, events) = run(plan, router, opts).await;
    assert_eq!(summary.exit, ExitCode::RolledBack, "{}", summary.status);
    assert!(
        summary.status.contains(
            "refreshing the inventory after step zones: the inventory files changed during the run"
        ),
        "{}",
        summary.status
    );
    let r = refreshes(&events);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, RefreshStatus::Failed);
    assert!(
        r[0].1
            .as_deref()
            .unwrap()
            .contains("changed during the run"),
        "{r:?}"
    );
    assert!(
        outcome_of(&events, "check").is_empty(),
        "nothing ran after it"
    );
    assert_eq!(setting(&zone), before, "the setting was put back");
    assert_eq!(summary.undone, 1);
    zone.audit_verifies();
    let text = std::fs::read_to_string(zone.audit()).unwrap();
    assert!(text.contains("\"event\":\"inventory_refresh\""), "{text}");
}
