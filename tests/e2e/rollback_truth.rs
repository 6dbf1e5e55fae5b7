//! Rollback that never lies, through the engine with the scripted fake transport: a failed
//! confirmation is a failure (issue 18, F4); an undo that cannot put a `failed` unit back says
//! so (F5); no change starts after the run failed (F7); a lost reply is read, not guessed (F1,
//! at the engine's level: the binary's own tests against `remedy lab` are in
//! orchestrator/tests/rollback_faults.rs).

use std::sync::Arc;

use remedy::app::RunOptions;
use remedy::audit;
use remedy::event::Outcome;
use remedy::inventory::Host;
use remedy::transport::fake::FakeTransport;
use remedy::transport::{Access, Action, ActionResult, CmdOutput, Transport, TransportError};
use remedy_tests::{plan, run, write};

const ONE_ROUTER: &str = "all:\n  children:\n    routers:\n      hosts:\n        r1:\n";
const TWO_ROUTERS: &str =
    "all:\n  children:\n    routers:\n      hosts:\n        r1:\n        r2:\n";

fn link_line(up: bool) -> String {
    let (flags, state) = if up {
        ("BROADCAST,MULTICAST,UP,LOWER_UP", "UP")
    } else {
        ("BROADCAST,MULTICAST", "DOWN")
    };
    format!(
        "3: eth1@if12: <{flags}> mtu 1500 qdisc noqueue state {state} mode DEFAULT group default qlen 1000\\    link/ether 0e:00:a9:fe:00:0b brd ff:ff:ff:ff:ff:ff"
    )
}

/// eth1 on a fake router: `ip link` reads and sets it in the fake's state.
fn link_fake() -> FakeTransport {
    let f = FakeTransport::new();
    f.on_prefix("ip -o link show dev eth1", |_, st| {
        Ok(ActionResult::Ssh(CmdOutput::ok(link_line(
            st.get("eth1").map(String::as_str) == Some("up"),
        ))))
    });
    f.on_prefix("ip link set dev eth1 up", |_, st| {
        st.insert("eth1".into(), "up".into());
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("ip link set dev eth1 down", |_, st| {
        st.insert("eth1".into(), "down".into());
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f
}

fn records_of(log: &std::path::Path, event: &str) -> Vec<serde_json::Value> {
    audit::read(log)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .filter(|v| v["event"] == event)
        .collect()
}

const LINK_UP: &str = r#"
name: link-up
steps:
  - id: up
    on: routers
    link: { dev: eth1, state: up }
"#;

/// F4: the change ran, but the read that confirms it failed. Before, the step was reported
/// `changed` and the audit log had no error; now it fails, and its change is undone.
#[tokio::test]
async fn a_failed_confirmation_is_a_failure_and_its_change_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "pb.yml", LINK_UP);
    let inv = write(dir.path(), "inv.yml", ONE_ROUTER);
    let log = dir.path().join("audit.jsonl");
    let f = link_fake();
    // The second read (the confirmation) fails once; reads before and after it work.
    f.on_prefix("ip -o link show dev eth1", |_, st| {
        let n: u32 = st.get("reads").map_or(0, |n| n.parse().unwrap());
        st.insert("reads".into(), (n + 1).to_string());
        if n == 1 {
            return Err(TransportError::Other("530: the read failed".into()));
        }
        Ok(ActionResult::Ssh(CmdOutput::ok(link_line(
            st.get("eth1").map(String::as_str) == Some("up"),
        ))))
    });
    let opts = RunOptions {
        audit_log: Some(log.clone()),
        ..Default::default()
    };
    let (_, summary, _) = run(plan(&pb, &inv, &[]), Arc::new(f.clone()), opts).await;
    assert_eq!(summary.exit.code(), 2, "{}", summary.status);
    assert_eq!(
        summary.outcomes[&("up".into(), "r1".into())],
        Outcome::Failed
    );
    assert_eq!(summary.undone, 1, "{}", summary.status);
    assert_eq!(f.state("eth1").as_deref(), Some("down"), "undone");
    let ends = records_of(&log, "step_end");
    assert_eq!(ends[0]["outcome"], "failed", "{ends:?}");
    assert_eq!(ends[0]["touched"], "yes", "{ends:?}");
    assert!(
        ends[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("changed, but the read that confirms it failed: 530: the read failed"),
        "{ends:?}"
    );
}

/// F1 at the engine's level: the change's reply is lost, but the change landed. The module's
/// probe reads the target again: it moved, so it is undone. Had it not moved, nothing runs,
/// but the command may still be running on the host (its connection was lost after it was
/// sent): the run says "may still change" (exit 3) instead of "nothing was changed".
#[tokio::test]
async fn a_lost_reply_is_read_again_and_undone_only_if_it_landed() {
    for landed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let pb = write(dir.path(), "pb.yml", LINK_UP);
        let inv = write(dir.path(), "inv.yml", ONE_ROUTER);
        let log = dir.path().join("audit.jsonl");
        let f = link_fake();
        f.on_prefix("ip link set dev eth1 up", move |_, st| {
            if landed {
                st.insert("eth1".into(), "up".into());
            }
            Err(TransportError::Other(
                "r1: the connection was lost mid-command; the command may or may not have run"
                    .into(),
            ))
        });
        let opts = RunOptions {
            audit_log: Some(log.clone()),
            ..Default::default()
        };
        let (_, s, _) = run(plan(&pb, &inv, &[]), Arc::new(f.clone()), opts).await;
        assert_eq!(f.state("eth1").as_deref().unwrap_or("down"), "down");
        if landed {
            assert_eq!(s.exit.code(), 2, "{}", s.status);
            assert_eq!((s.changed, s.undone), (1, 1), "{}", s.status);
            assert!(
                s.status.contains("rolled back: 1 change(s) undone"),
                "{}",
                s.status
            );
        } else {
            assert_eq!(s.exit.code(), 3, "{}", s.status);
            assert_eq!((s.changed, s.undone), (0, 0), "{}", s.status);
            assert_eq!(s.not_undone.len(), 1, "{:?}", s.not_undone);
            assert!(
                s.not_undone[0].contains("may still change"),
                "{:?}",
                s.not_undone
            );
            assert!(records_of(&log, "undo_start").is_empty());
        }
        let end = &records_of(&log, "run_end")[0];
        assert_eq!(end["exit_code"], s.exit.code());
        assert_eq!(end["undone"], s.undone);
    }
}

const START_THEN_FAIL: &str = r#"
name: start-then-fail
steps:
  - id: start
    on: routers
    service: { name: dnsmasq, state: started }
  - id: boom
    on: routers
    needs: [start]
    ssh: boom
    rollback: unboom
"#;

/// F5: a `failed` dnsmasq is started, the run fails after it, and the undo stops it again: it
/// is `inactive` now, not `failed`. The undo says so instead of a plain "undone".
#[tokio::test]
async fn undoing_the_start_of_a_failed_unit_says_what_it_could_not_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "pb.yml", START_THEN_FAIL);
    let inv = write(dir.path(), "inv.yml", ONE_ROUTER);
    let log = dir.path().join("audit.jsonl");
    let f = FakeTransport::new();
    f.set_state("dnsmasq", "failed");
    f.on_prefix("systemctl is-active dnsmasq", |_, st| {
        let s = st.get("dnsmasq").cloned().unwrap_or_default();
        let rc = if s == "active" { 0 } else { 3 };
        Ok(ActionResult::Ssh(CmdOutput::exit(rc, format!("{s}\n"), "")))
    });
    f.on_prefix("systemctl start dnsmasq", |_, st| {
        st.insert("dnsmasq".into(), "active".into());
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("systemctl stop dnsmasq", |_, st| {
        st.insert("dnsmasq".into(), "inactive".into());
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("boom", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::exit(1, "", "boom failed")))
    });
    let opts = RunOptions {
        audit_log: Some(log.clone()),
        ..Default::default()
    };
    let (_, s, _) = run(plan(&pb, &inv, &[]), Arc::new(f.clone()), opts).await;
    assert_eq!(s.exit.code(), 2, "{}", s.status);
    assert_eq!(f.state("dnsmasq").as_deref(), Some("inactive"));
    let undo = &records_of(&log, "undo_end")[0];
    assert_eq!(undo["step"], "start");
    assert_eq!(undo["ok"], true);
    assert!(
        undo["caveat"]
            .as_str()
            .is_some_and(|c| c.starts_with("dnsmasq was `failed` and is `inactive` now")),
        "{undo}"
    );
}

/// The fake, with r2's check held a while (awaited, so the rest of the run goes on).
struct SlowCheckOnR2(FakeTransport);

#[async_trait::async_trait]
impl Transport for SlowCheckOnR2 {
    async fn run(
        &self,
        host: &Host,
        action: &Action,
        access: Access,
        timeout: std::time::Duration,
    ) -> Result<ActionResult, TransportError> {
        if host.name == "r2" && action.to_string() == "check-it" {
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        }
        self.0.run(host, action, access, timeout).await
    }
}

const SIBLINGS: &str = r#"
name: siblings
steps:
  - id: s
    on: routers
    check: check-it
    ssh: change-it
    rollback: undo-it
"#;

/// F7: the same step on two routers; on r1 the check is quick and the change fails, on r2 the
/// check is still running then. r2 must not start its change after the run failed.
#[tokio::test]
async fn no_change_starts_after_the_run_failed() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "pb.yml", SIBLINGS);
    let inv = write(dir.path(), "inv.yml", TWO_ROUTERS);
    let log = dir.path().join("audit.jsonl");
    let f = FakeTransport::new();
    // Both need the change; r2's check is still in flight when r1's change fails.
    f.on_prefix("check-it", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::exit(1, "", "")))
    });
    f.on_host_prefix("r1", "change-it", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::exit(1, "", "r1 refused it")))
    });
    f.on_host_prefix("r2", "change-it", |_, st| {
        st.insert("r2-changed".into(), "yes".into());
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    let opts = RunOptions {
        audit_log: Some(log.clone()),
        ..Default::default()
    };
    let t = SlowCheckOnR2(f.clone());
    let (_, s, _) = run(plan(&pb, &inv, &[]), Arc::new(t), opts).await;
    assert_eq!(f.state("r2-changed"), None, "r2 changed after the failure");
    let changes: Vec<String> = f
        .mutating_calls()
        .into_iter()
        .map(|c| format!("{}: {}", c.host, c.action))
        .collect();
    assert_eq!(changes, ["r1: change-it"], "{changes:?}");
    assert_eq!(s.outcomes[&("s".into(), "r2".into())], Outcome::Skipped);
    // nothing changed: r1's change exited 1, r2's never started
    assert_eq!(s.exit.code(), 7, "{}", s.status);
    let starts: Vec<serde_json::Value> = records_of(&log, "step_start");
    assert!(
        starts.iter().all(|r| r["target"] != "r2"),
        "r2 announced a change: {starts:?}"
    );
    let r2 = records_of(&log, "step_end")
        .into_iter()
        .find(|r| r["target"] == "r2")
        .expect("r2's end");
    assert_eq!(r2["outcome"], "skipped");
    assert!(
        r2["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not started: the run is stopping")),
        "{r2}"
    );
}
