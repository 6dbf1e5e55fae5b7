//! Saved plans against the embedded zone (`remedy plan -o`, `remedy approve`, `remedy apply
//! --plan`): a plan applied unchanged fixes the zone and the audit log ties the run to the plan
//! and its approval; every reason to refuse a plan is refused with exit 5 before anything that
//! changes anything runs; a drift found just before a node acts stops the run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloudstack_sim::faults::Faults;
use remedy::error::{Error, ExitCode};
use remedy::event::Outcome;
use remedy::planfile::approval::{approve, Key};
use remedy::planfile::{short, OnDrift, SavedPlan};
use remedy::runner::Ctx;
use remedy::scheduler::Scheduler;
use remedy::transport::{Access, Action, Transport};
use remedy_tests::zone::{guest_vlan, router_states, ApiZone};

const DAY: Duration = Duration::from_secs(24 * 3600);
const VPC: &[(&str, &str)] = &[("vpc", "web-vpc"), ("vlan_range", "1000-1099")];

fn playbook(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks")
        .join(format!("{name}.yml"))
}

/// The zone seeded from `scenario`, and a plan of `name` made against it in `plan.json`;
/// with the SSH commands the planning dry-run ran (its probes).
async fn planned(
    scenario: &str,
    name: &Path,
    params: &[(&str, &str)],
) -> (ApiZone, PathBuf, SavedPlan, BTreeSet<(String, String)>) {
    let zone = ApiZone::start(scenario, Faults::default()).await;
    let file = zone.dir.path().join("change.plan.json");
    let (saved, summary) = zone.make_plan(name, params, &file, DAY).await;
    let saved = saved.unwrap_or_else(|| panic!("a plan: {}", summary.status));
    assert_eq!(SavedPlan::read(&file).expect("it reads back"), saved);
    assert_eq!(
        zone.mutating_requests(),
        Vec::<String>::new(),
        "planning is a dry-run"
    );
    let probes = zone.ssh_commands().into_iter().collect();
    (zone, file, saved, probes)
}

/// What the zone looked like, and what had been sent to it.
struct Before {
    world: serde_json::Value,
    mutating: Vec<String>,
    requests: usize,
    ssh: usize,
}

fn before(zone: &ApiZone) -> Before {
    Before {
        world: zone.world(),
        mutating: zone.mutating_requests(),
        requests: zone.sim().requests().len(),
        ssh: zone.ssh_commands().len(),
    }
}

/// Nothing was sent at all since `b`.
fn nothing_sent(zone: &ApiZone, b: &Before, what: &str) {
    assert_eq!(zone.world(), b.world, "{what}: the zone");
    assert_eq!(
        zone.sim().requests().len(),
        b.requests,
        "{what}: API requests"
    );
    assert_eq!(zone.ssh_commands().len(), b.ssh, "{what}: SSH commands");
}

/// Nothing that changes anything ran since `b`: the zone as it was, no mutating API request,
/// and over SSH only the probes planning ran too.
fn nothing_changed(zone: &ApiZone, b: &Before, probes: &BTreeSet<(String, String)>, what: &str) {
    assert_eq!(zone.world(), b.world, "{what}: the zone");
    assert_eq!(zone.mutating_requests(), b.mutating, "{what}: API requests");
    for c in zone.ssh_commands() {
        assert!(probes.contains(&c), "{what}: ran {c:?} over SSH");
    }
}

fn refused(r: Result<remedy::scheduler::Summary, Error>, says: &str) -> String {
    match r {
        Err(e @ Error::PlanRefused(_)) => {
            assert_eq!(e.exit_code(), ExitCode::PlanRefused);
            let text = e.render(false);
            assert!(text.contains(says), "expected {says:?} in: {text}");
            text
        }
        Err(e) => panic!("refused, but not as a plan refusal: {}", e.render(false)),
        Ok(s) => panic!(
            "expected a refusal ({says}), the run went ahead: {}",
            s.status
        ),
    }
}

fn records(zone: &ApiZone) -> Vec<serde_json::Value> {
    remedy::audit::read(&zone.audit())
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_applied_unchanged_fixes_the_zone_and_the_audit_names_plan_and_approval() {
    let (zone, file, saved, _) = planned("vr-backup-loop", &playbook("vr-backup-loop"), VPC).await;
    let (change, _, unknown) = saved.plan.counts();
    assert!(change >= 3 && unknown >= 1, "{:?}", saved.plan.counts());
    assert!(saved.plan.irreversible().is_empty());
    let vlans = saved
        .plan
        .steps
        .iter()
        .find(|s| s.id == "vlans.guest_vlans")
        .unwrap();
    assert_eq!(vlans.nodes[0].prediction.outcome, Outcome::WouldChange);
    assert!(
        vlans.nodes[0].prediction.actions[0].starts_with("updatePhysicalNetwork"),
        "{vlans:?}"
    );
    assert_eq!(vlans.nodes[0].prediction.undo.len(), 1, "{vlans:?}");

    // Approved by someone other than its author, for a ticket.
    assert_ne!(saved.plan.created_by, "change-board");
    let approval = approve(
        &saved,
        "change-board",
        Some("CHG1234"),
        None,
        &zone.audit(),
        "carol",
    )
    .unwrap();
    let mut a = zone.applying(&file);
    a.expect_id = Some(short(&saved.id).to_string());
    a.require_approval = true;
    a.four_eyes = true;
    let s = zone.apply_plan(&a, now()).await.expect("applied");
    assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
    assert!(s.drift.is_empty(), "{:?}", s.drift);
    let w = zone.world();
    assert_eq!(guest_vlan(&w), "1000-1099");
    let r = router_states(&w);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|(_, _, keepalived, _)| *keepalived), "{r:?}");
    assert_eq!(r.iter().filter(|(_, eth1, _, _)| *eth1).count(), 1, "{r:?}");

    // The audit log: plan written (by the planning run), approval, the run that applied it.
    zone.audit_verifies();
    let recs = records(&zone);
    let written = recs
        .iter()
        .find(|r| r["event"] == "plan_written")
        .expect("plan_written");
    assert_eq!(written["plan"], saved.id.as_str());
    assert_eq!(written["run"], saved.plan.run.as_str());
    let planning = recs
        .iter()
        .find(|r| r["event"] == "run_start" && r["run"] == saved.plan.run.as_str())
        .unwrap();
    assert_eq!(planning["mode"], "plan");
    let approved = recs.iter().find(|r| r["event"] == "approval").unwrap();
    assert_eq!(approved["plan"], saved.id.as_str());
    assert_eq!(approved["ticket"], "CHG1234");
    let start = recs
        .iter()
        .find(|r| r["event"] == "run_start" && r["mode"] == "apply")
        .expect("the apply run");
    let link = &start["plan"];
    assert_eq!(link["id"], saved.id.as_str(), "{start}");
    assert_eq!(link["made_in_run"], saved.plan.run.as_str());
    assert_eq!(link["approvals"][0]["by"], "change-board");
    assert_eq!(link["approvals"][0]["approval"], approval.approval.as_str());
    let run = start["run"].as_str().unwrap();
    let check = recs
        .iter()
        .find(|r| r["event"] == "plan_check" && r["run"] == run)
        .expect("plan_check");
    assert!(check.get("drift").is_none(), "{check}");
    let end = recs
        .iter()
        .find(|r| r["event"] == "run_end" && r["run"] == run)
        .unwrap();
    assert_eq!(end["exit_code"], 0, "{end}");

    // A plan is applied once.
    let b = before(&zone);
    refused(zone.apply_plan(&a, now()).await, "was applied already");
    nothing_sent(&zone, &b, "replay");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_before_the_run_sends_nothing() {
    // The playbooks copied, so that one can be edited.
    let zone = ApiZone::start("vr-backup-loop", Faults::default()).await;
    let books = zone.dir.path().join("playbooks");
    std::fs::create_dir(&books).unwrap();
    for name in ["vr-backup-loop", "fix-vlan-range", "vr-restore-public-link"] {
        std::fs::copy(playbook(name), books.join(format!("{name}.yml"))).unwrap();
    }
    let file = zone.dir.path().join("change.plan.json");
    let (saved, s) = zone
        .make_plan(&books.join("vr-backup-loop.yml"), VPC, &file, DAY)
        .await;
    let saved = saved.unwrap_or_else(|| panic!("{}", s.status));
    let original = std::fs::read_to_string(&file).unwrap();
    let b = before(&zone);
    let a = zone.applying(&file);

    // Edited: one action changed by hand.
    std::fs::write(&file, original.replace("vlan=1000-1099", "vlan=1000-1999")).unwrap();
    refused(
        zone.apply_plan(&a, now()).await,
        "was edited after it was made",
    );
    std::fs::write(&file, &original).unwrap();

    // Expired: a day and an hour later.
    let later = now() + jiff::SignedDuration::from_hours(25);
    refused(zone.apply_plan(&a, later).await, "expired at");

    // Not the plan that was approved.
    let mut wrong = zone.applying(&file);
    wrong.expect_id = Some("0123456789abcdef".into());
    refused(zone.apply_plan(&wrong, now()).await, "not the expected");
    wrong.expect_id = Some(saved.id[..8].to_string());
    refused(
        zone.apply_plan(&wrong, now()).await,
        "at least its first 12",
    );

    // An included playbook changed.
    let include = books.join("fix-vlan-range.yml");
    let text = std::fs::read_to_string(&include).unwrap();
    std::fs::write(&include, format!("{text}# edited after the plan\n")).unwrap();
    refused(
        zone.apply_plan(&a, now()).await,
        "fix-vlan-range.yml changed since the plan was made",
    );
    std::fs::write(&include, &text).unwrap();

    // The inventory changed.
    let inv = std::fs::read_to_string(&zone.inventory).unwrap();
    std::fs::write(&zone.inventory, format!("{inv}# edited\n")).unwrap();
    refused(zone.apply_plan(&a, now()).await, "inventory files");
    std::fs::write(&zone.inventory, &inv).unwrap();

    // Another parameter value.
    let mut other = zone.applying(&file);
    other.extra = vec![("vpc".into(), "db-vpc".into())];
    refused(
        zone.apply_plan(&other, now()).await,
        "the plan was made with vpc=web-vpc",
    );

    // Made by a remedy of another release (resealed, so the digest holds).
    let mut newer = saved.clone();
    newer.plan.remedy_version = "9.0.0".into();
    let newer = SavedPlan::seal(newer.plan);
    let newer_file = zone.dir.path().join("newer.plan.json");
    newer.write(&newer_file).unwrap();
    refused(
        zone.apply_plan(&zone.applying(&newer_file), now()).await,
        "made by remedy 9.0.0",
    );

    // Approvals: none; only by the author under four eyes; signed with another key.
    let mut strict = zone.applying(&file);
    strict.require_approval = true;
    refused(zone.apply_plan(&strict, now()).await, "has no approval");
    approve(
        &saved,
        &saved.plan.created_by,
        None,
        None,
        &zone.audit(),
        "carol",
    )
    .unwrap();
    strict.four_eyes = true;
    refused(zone.apply_plan(&strict, now()).await, "who made it");
    let key = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let p = zone.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let board = key("board.key", "a key only the change board holds\n");
    let other_key = key("other.key", "somebody else's key, also long\n");
    let k = Key::load(Some(&board)).unwrap().unwrap();
    approve(
        &saved,
        "change-board",
        Some("CHG1"),
        Some(&k),
        &zone.audit(),
        "carol",
    )
    .unwrap();
    strict.approval_key = Some(other_key);
    refused(
        zone.apply_plan(&strict, now()).await,
        "signed with this key",
    );
    // A resealed plan is a new plan: the approvals of the old id do not carry over.
    let mut resealed = saved.clone();
    resealed.plan.expires_at = later.to_string();
    let resealed = SavedPlan::seal(resealed.plan);
    let resealed_file = zone.dir.path().join("resealed.plan.json");
    resealed.write(&resealed_file).unwrap();
    let mut r = zone.applying(&resealed_file);
    r.require_approval = true;
    refused(zone.apply_plan(&r, now()).await, "has no approval");

    nothing_sent(&zone, &b, "refusals");
    zone.audit_verifies();

    // And with the right key and an approver other than the author, it opens.
    strict.approval_key = Some(board);
    let opened = strict.open(now()).expect("approved");
    assert_eq!(opened.link.approvals.len(), 1, "{:?}", opened.link);
    assert_eq!(opened.link.approvals[0].alg, "hmac-sha256");
}

#[tokio::test(flavor = "multi_thread")]
async fn someone_already_fixed_the_vlan_range_so_the_plan_is_refused() {
    let (zone, file, _, probes) = planned("vr-backup-loop", &playbook("vr-backup-loop"), VPC).await;
    // Someone fixes the range by hand through the API.
    let physnet = zone.world()["physnets"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    zone.api
        .run(
            &Action::api(
                "updatePhysicalNetwork",
                [("id", physnet.as_str()), ("vlan", "1000-1099")],
            ),
            Access::Mutating,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let b = before(&zone);
    let s = zone.apply_plan(&zone.applying(&file), now()).await.unwrap();
    assert_eq!(s.exit, ExitCode::PlanRefused, "{}", s.status);
    assert!(s.status.contains("nothing was changed"), "{}", s.status);
    let d = s
        .drift
        .iter()
        .find(|d| d.step == "vlans.guest_vlans")
        .unwrap_or_else(|| panic!("{:?}", s.drift));
    assert!(d.why.contains("now its `when` is false"), "{d:?}");
    nothing_changed(&zone, &b, &probes, "drift");
    let recs = records(&zone);
    let check = recs.iter().find(|r| r["event"] == "plan_check").unwrap();
    assert!(check["drift"].as_array().is_some_and(|d| !d.is_empty()));
    assert!(
        !recs.iter().any(|r| r["event"] == "step_start"),
        "nothing was announced"
    );
    zone.audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_that_changed_is_refused_or_skipped() {
    // Abort (the default): one router's public link came up since the plan.
    let (zone, file, _, probes) = planned("vr-backup-loop", &playbook("vr-backup-loop"), VPC).await;
    zone.sim().with_zone(|z| {
        cloudstack_sim::ssh::commands::run_line(z, "r-930-VM", "ip link set dev eth1 up")
    });
    let b = before(&zone);
    let s = zone.apply_plan(&zone.applying(&file), now()).await.unwrap();
    assert_eq!(s.exit, ExitCode::PlanRefused, "{}", s.status);
    let d = s
        .drift
        .iter()
        .find(|d| d.target == "r-930-VM")
        .unwrap_or_else(|| panic!("{:?}", s.drift));
    assert_eq!(d.step, "public_link.link_up", "{d:?}");
    // The include's gate sees the link up, so the step would not run there now.
    assert!(d.why.contains("now its `when` is false"), "{d:?}");
    nothing_changed(&zone, &b, &probes, "abort");

    // Skip: that router is left alone; the rest of the plan runs, and the exit still says
    // the plan was not applied whole.
    let mut a = zone.applying(&file);
    a.on_drift = OnDrift::Skip;
    let s = zone.apply_plan(&a, now()).await.unwrap();
    assert_eq!(s.exit, ExitCode::PlanRefused, "{}", s.status);
    assert!(
        s.drift.iter().all(|d| d.target == "r-930-VM"),
        "{:?}",
        s.drift
    );
    assert_eq!(
        guest_vlan(&zone.world()),
        "1000-1099",
        "the VLAN range was added"
    );
    assert!(
        s.outcomes
            .get(&("public_link.link_up".into(), "r-931-VM".into()))
            == Some(&Outcome::Changed),
        "{:?}",
        s.outcomes
    );
    for (machine, line) in zone.ssh_commands() {
        if machine == "r-930-VM" {
            assert!(
                probes.contains(&(machine.clone(), line.clone())),
                "skipped router ran {line:?}"
            );
        }
    }
    zone.audit_verifies();
}

/// Runs `saved`'s playbook against the zone held to `saved`, without the check `apply --plan`
/// makes before the run: what the runner and the scheduler check node by node.
async fn run_held_to(zone: &ApiZone, saved: &SavedPlan) -> remedy::scheduler::Summary {
    let plan = zone.plan(&playbook("vr-backup-loop"), VPC).await;
    let transport: Arc<dyn Transport> = zone.router(&plan);
    let sink = remedy::event::Sink::new(
        Some(remedy::audit::AuditLog::open(&zone.audit()).unwrap()),
        plan.redactor.clone(),
        None,
    );
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let cx = Ctx {
        plan: Arc::new(plan),
        transport,
        sink,
        run: "held".into(),
        dry_run: false,
        cancel: Some(cancel.clone()),
        reload: None,
        expect: Some(Arc::new(saved.expect(OnDrift::Abort))),
        halt: Default::default(),
    };
    Scheduler::new(cx, 4, cancel).run().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drift_just_before_a_node_acts_stops_the_run() {
    // The check before the run passed; then, as a node is about to act, what it probes is not
    // what the plan was made from (here: the plan says so), or its action differs. The run
    // stops there and undoes what it did.
    let (zone, _, saved, _) = planned("vr-backup-loop", &playbook("vr-backup-loop"), VPC).await;
    let b = before(&zone);
    fn node(plan: &mut SavedPlan) -> &mut remedy::planfile::Prediction {
        let step = plan
            .plan
            .steps
            .iter_mut()
            .find(|s| s.id == "public_link.link_up")
            .unwrap();
        &mut step
            .nodes
            .iter_mut()
            .find(|n| n.target == "r-931-VM")
            .unwrap()
            .prediction
    }
    let mut other_state = saved.clone();
    node(&mut other_state).pre = Some(serde_json::json!({"operstate": "UNKNOWN", "up": false}));
    let s = run_held_to(&zone, &other_state).await;
    assert_eq!(s.exit, ExitCode::PlanRefused, "{}", s.status);
    let d = &s.drift[0];
    assert_eq!(
        (d.step.as_str(), d.target.as_str()),
        ("public_link.link_up", "r-931-VM")
    );
    assert!(
        d.why.contains("the state it was planned from changed")
            && d.why.contains(".operstate: \"UNKNOWN\" -> \"DOWN\""),
        "{d:?}"
    );
    assert_eq!(zone.world(), b.world, "rolled back");

    let mut other_action = saved.clone();
    node(&mut other_action).actions = vec!["ip link set dev eth9 up".into()];
    let s = run_held_to(&zone, &other_action).await;
    assert_eq!(s.exit, ExitCode::PlanRefused, "{}", s.status);
    assert!(
        s.drift[0]
            .why
            .contains("the action differs from the plan's"),
        "{:?}",
        s.drift
    );
    assert_eq!(zone.world(), b.world, "rolled back");
    zone.audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn irreversible_steps_run_from_a_plan_that_says_so() {
    let params = &[("add_site", "10.20.0.0/16")];
    let (zone, file, saved, _) = planned("ssvm-broken", &playbook("recreate-ssvm"), params).await;
    let irreversible: Vec<&str> = saved
        .plan
        .irreversible()
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert!(!irreversible.is_empty(), "the plan says so");
    let md = remedy::planfile::render::render(
        &saved,
        remedy::planfile::render::Format::Markdown,
        Some("ssvm.plan.json"),
    );
    assert!(
        md.contains(&format!(
            "IRREVERSIBLE: step `{}` cannot be undone",
            irreversible[0]
        )),
        "{md}"
    );
    // The steps after the SSVM is replaced are chosen when the inventory is read again.
    assert!(
        saved
            .plan
            .steps
            .iter()
            .any(|s| s.targets_after_refresh.is_some()),
        "{:?}",
        saved.plan.steps
    );
    let s = zone.apply_plan(&zone.applying(&file), now()).await.unwrap();
    assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
    zone.audit_verifies();
}

/// The page `remedy plan --format markdown` writes for the on-call example, kept in the docs
/// (and the plan file beside it). Machine-specific fields (time, author, paths, file hashes)
/// are set to fixed values first. `UPDATE_SNAPSHOTS=1` writes them again.
#[tokio::test(flavor = "multi_thread")]
async fn the_markdown_page_is_the_one_in_the_docs() {
    let (_zone, _, saved, _) = planned("vr-backup-loop", &playbook("vr-backup-loop"), VPC).await;
    let mut body = saved.plan.clone();
    body.created_at = "2026-11-23T09:00:00Z".into();
    body.expires_at = "2026-11-24T09:00:00Z".into();
    body.created_by = "alice".into();
    body.created_on = "ops1".into();
    body.run = "20261123T090000Z-1a2b3c4d".into();
    let relative = |p: &str| format!("playbooks/{}", p.rsplit('/').next().unwrap());
    body.playbook.path = relative(&body.playbook.path);
    for (i, f) in body.playbook.files.iter_mut().enumerate() {
        f.path = relative(&f.path);
        f.sha256 = format!("{:064x}", i + 1);
    }
    body.inventory.sources = vec!["inventories/prod.yml".into()];
    body.inventory.files_sha256 = format!("{:064x}", 0xaa);
    body.params.salt = "0".repeat(32);
    let sealed = SavedPlan::seal(body);
    let md = remedy::planfile::render::render(
        &sealed,
        remedy::planfile::render::Format::Markdown,
        Some("CHG1234.plan.json"),
    );
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    let pairs = [
        ("vr-backup-loop.plan.md", md),
        ("vr-backup-loop.plan.json", sealed.to_json()),
    ];
    for (name, text) in pairs {
        let path = docs.join(name);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            want == text,
            "{} differs from what remedy renders now (UPDATE_SNAPSHOTS=1 cargo test -p remedy-tests --test e2e the_markdown_page rewrites it):\n{text}",
            path.display()
        );
    }
}

/// A plan with nothing to do (the zone is healthy) applies as nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_with_nothing_to_do_applies_as_nothing_to_do() {
    let (zone, file, saved, _) = planned("healthy", &playbook("vr-backup-loop"), VPC).await;
    assert!(!saved.plan.applies);
    let b = before(&zone);
    let s = zone.apply_plan(&zone.applying(&file), now()).await.unwrap();
    assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
    assert!(
        !s.applies && s.drift.is_empty(),
        "{} {:?}",
        s.status,
        s.drift
    );
    assert_eq!(zone.mutating_requests(), b.mutating);
}

/// A secret parameter is stored only as a hash, and must be given again to apply the plan.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_parameter_is_hashed_and_given_again() {
    let zone = ApiZone::start("vr-backup-loop", Faults::default()).await;
    let pb = remedy_tests::write(
        zone.dir.path(),
        "tag-vlan.yml",
        "name: tag-vlan\nparams:\n  range: { required: true }\n  token: { required: true, secret: true }\n  api_password: { required: true }\n\
         detect:\n  - id: nets\n    api: { command: listPhysicalNetworks }\n\
         steps:\n  - id: tag\n    api: { command: updatePhysicalNetwork, args: { id: \"{{ nets.items[0].id }}\", vlan: \"{{ range }}\", tags: \"{{ token }}-{{ api_password }}\" } }\n    no_rollback: a test of parameters\n",
    );
    let secret = "s3cr3t-t0ken-v4lue";
    let params = [
        ("range", "1000-1099"),
        ("token", secret),
        ("api_password", "pw-0f-the-api-user"),
    ];
    let file = zone.dir.path().join("secret.plan.json");
    let (saved, s) = zone.make_plan(&pb, &params, &file, DAY).await;
    let saved = saved.unwrap_or_else(|| panic!("{}", s.status));
    let text = std::fs::read_to_string(&file).unwrap();
    for s in [secret, "pw-0f-the-api-user"] {
        assert!(!text.contains(s), "{s} is in the plan file:\n{text}");
    }
    assert!(text.contains("secret_sha256"), "{text}");
    assert_eq!(
        saved.plan.params.given["range"],
        remedy::planfile::Given::Value("1000-1099".into())
    );

    let mut a = zone.applying(&file);
    refused(
        zone.apply_plan(&a, now()).await,
        "pass it again with -e api_password=...",
    );
    a.extra = vec![
        ("token".into(), "wrong".into()),
        ("api_password".into(), "pw-0f-the-api-user".into()),
    ];
    refused(
        zone.apply_plan(&a, now()).await,
        "secret parameter token is not",
    );
    a.extra[0].1 = secret.into();
    let s = zone.apply_plan(&a, now()).await.unwrap();
    assert_eq!(s.exit, ExitCode::Success, "{}", s.status);
    assert_eq!(guest_vlan(&zone.world()), "1000-1099");
    let audit = std::fs::read_to_string(zone.audit()).unwrap();
    assert!(!audit.contains(secret), "the secret is in the audit log");
}
