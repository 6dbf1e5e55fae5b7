//! Dry-run safety, rollback order, and the audit trail, against the fake transport.

use std::sync::Arc;

use remedy::app::RunOptions;
use remedy::audit;
use remedy::event::Outcome;
use remedy::transport::fake::FakeTransport;
use remedy::transport::{ActionResult, CmdOutput};
use remedy_tests::{plan, run, write};

const INVENTORY: &str = r#"
all:
  children:
    routers:
      hosts:
        r1: { ansible_host: 169.254.0.11 }
        r2: { ansible_host: 169.254.0.12 }
"#;

/// Five mutating steps on both routers; a flag file on the fake host records each change.
const FIVE: &str = r#"
name: five-steps
description: five changes in a row, for rollback tests
params:
  fail_at: { default: "none" }
detect:
  - id: probe
    on: routers
    ssh: cat /state
    changes: none
steps:
  - id: s1
    on: routers
    link: { dev: eth1, state: up }
  - id: s2
    on: routers
    ssh: touch /flag2
    check: test -e /flag2
    rollback: rm -f /flag2
  - id: s3
    on: routers
    ssh: step3 {{ fail_at }}
    rollback: undo3
  - id: s4
    on: routers
    ssh: touch /flag4
    rollback: rm -f /flag4
  - id: s5
    on: routers
    service: { name: dnsmasq, state: started }
"#;

fn fake() -> FakeTransport {
    let f = FakeTransport::new();
    f.on_prefix("cat /state", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::ok("ok")))
    });
    f.on_prefix("ip -o link show dev eth1", |a, st| {
        let host_up = st.get("eth1").map(String::as_str) == Some("up");
        let _ = a;
        let flags = if host_up { "BROADCAST,MULTICAST,UP,LOWER_UP" } else { "BROADCAST,MULTICAST" };
        let state = if host_up { "UP" } else { "DOWN" };
        Ok(ActionResult::Ssh(CmdOutput::ok(format!(
            "3: eth1@if12: <{flags}> mtu 1500 qdisc noqueue state {state} mode DEFAULT group default qlen 1000\\    link/ether 0e:00:a9:fe:00:0b brd ff:ff:ff:ff:ff:ff"
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
    f.on_prefix("test -e /flag2", |_, st| {
        Ok(ActionResult::Ssh(CmdOutput::exit(
            if st.contains_key("flag2") { 0 } else { 1 },
            "",
            "",
        )))
    });
    f.on_prefix("touch /flag2", |_, st| {
        st.insert("flag2".into(), "1".into());
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("rm -f /flag2", |_, st| {
        st.remove("flag2");
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("step3 none", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("step3 s3", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::exit(1, "", "step 3 exploded")))
    });
    f.on_prefix("undo3", |_, _| Ok(ActionResult::Ssh(CmdOutput::ok(""))));
    f.on_prefix("touch /flag4", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("rm -f /flag4", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("systemctl is-active dnsmasq", |_, st| {
        let active = st.contains_key("dnsmasq");
        Ok(ActionResult::Ssh(CmdOutput::exit(
            if active { 0 } else { 3 },
            if active { "active\n" } else { "inactive\n" },
            "",
        )))
    });
    f.on_prefix("systemctl start dnsmasq", |_, st| {
        st.insert("dnsmasq".into(), "1".into());
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f
}

#[tokio::test]
async fn dry_run_performs_zero_mutating_calls() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "five.yml", FIVE);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = fake();
    let opts = RunOptions {
        dry_run: true,
        ..Default::default()
    };
    let (_, summary, _) = run(plan(&pb, &inv, &[]), Arc::new(f.clone()), opts).await;
    assert_eq!(summary.exit.code(), 0, "{}", summary.status);
    assert!(
        f.mutating_calls().is_empty(),
        "mutating calls in dry-run: {:?}",
        f.mutating_calls()
    );
    assert!(f.unexpected().is_empty(), "{:?}", f.unexpected());
    // every command run was a read-only probe
    for c in f.calls() {
        let text = c.action.to_string();
        assert!(
            ["cat /state", "ip -o link show", "test -e"]
                .iter()
                .any(|p| text.starts_with(p)),
            "unexpected command in dry-run: {text}"
        );
    }
    // the link module predicted a change; later steps on that target are unknown
    assert_eq!(
        summary.outcomes[&("s1".into(), "r1".into())],
        Outcome::WouldChange
    );
    assert_eq!(
        summary.outcomes[&("s2".into(), "r1".into())],
        Outcome::Unknown
    );
    assert!(f.state("eth1").is_none(), "dry-run changed the fake host");
}

#[tokio::test]
async fn failure_in_step_3_undoes_2_then_1_and_the_audit_log_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "five.yml", FIVE);
    // One router: the fake's state stands for one host.
    let inv = write(
        dir.path(),
        "inv.yml",
        "all:\n  children:\n    routers:\n      hosts:\n        r1:\n",
    );
    let log = dir.path().join("audit.jsonl");
    let f = fake();
    let opts = RunOptions {
        audit_log: Some(log.clone()),
        forks: 1,
        ..Default::default()
    };
    let (run_id, summary, _) = run(
        plan(&pb, &inv, &[("fail_at", "s3")]),
        Arc::new(f.clone()),
        opts,
    )
    .await;
    assert_eq!(summary.exit.code(), 2, "{}", summary.status);
    assert!(summary.not_undone.is_empty(), "{:?}", summary.not_undone);
    // the host is back as it was
    assert_eq!(f.state("eth1").as_deref(), Some("down"));
    assert!(f.state("flag2").is_none());
    // steps 4 and 5 never ran
    assert!(!f
        .calls()
        .iter()
        .any(|c| c.action.to_string().starts_with("touch /flag4")));
    // undo order in the audit log: s2 before s1 on each router, nothing for s3
    let records = audit::read(&log).unwrap();
    let undos: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.value["event"] == "undo_end" && r.value["run"] == run_id.as_str())
        .map(|r| {
            (
                r.value["step"].as_str().unwrap().to_string(),
                r.value["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    {
        let host = "r1";
        let order: Vec<&str> = undos
            .iter()
            .filter(|(_, t)| t == host)
            .map(|(s, _)| s.as_str())
            .collect();
        assert_eq!(order, ["s2", "s1"], "undo order on {host}: {undos:?}");
    }
    assert!(records
        .iter()
        .all(|r| r.value["event"] != "undo_start" || r.value["step"] != "s3"));
    // every undo verified (module) or ran (command)
    assert!(records
        .iter()
        .filter(|r| r.value["event"] == "undo_end")
        .all(|r| r.value["ok"] == true));
    let end = records
        .iter()
        .rev()
        .find(|r| r.value["event"] == "run_end")
        .unwrap();
    assert_eq!(end.value["exit_code"], 2);
    assert!(audit::verify(&log).unwrap().problems.is_empty());
    // the change announcement was written before the change: step_start(s1) precedes step_end(s1)
    let pos = |ev: &str, step: &str| {
        records
            .iter()
            .position(|r| r.value["event"] == ev && r.value["step"] == step)
            .unwrap()
    };
    assert!(pos("step_start", "s1") < pos("step_end", "s1"));
}

#[tokio::test]
async fn a_clean_apply_changes_and_a_second_apply_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "five.yml", FIVE);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = fake();
    let (_, summary, _) = run(
        plan(&pb, &inv, &[]),
        Arc::new(f.clone()),
        RunOptions::default(),
    )
    .await;
    assert_eq!(summary.exit.code(), 0, "{}", summary.status);
    assert_eq!(
        summary.outcomes[&("s1".into(), "r2".into())],
        Outcome::Changed
    );
    let (_, again, _) = run(
        plan(&pb, &inv, &[]),
        Arc::new(f.clone()),
        RunOptions::default(),
    )
    .await;
    assert_eq!(
        again.outcomes[&("s1".into(), "r2".into())],
        Outcome::NoChange
    );
    assert_eq!(
        again.outcomes[&("s2".into(), "r2".into())],
        Outcome::NoChange
    );
    assert_eq!(
        again.outcomes[&("s5".into(), "r2".into())],
        Outcome::NoChange
    );
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_to_act() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "five.yml", FIVE);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let blocker = write(dir.path(), "file", "x");
    let f = fake();
    let (_tx, cancel) = tokio::sync::watch::channel(false);
    let opts = RunOptions {
        audit_log: Some(blocker.join("audit.jsonl")),
        ..Default::default()
    };
    let err = remedy::app::execute(
        plan(&pb, &inv, &[]),
        Arc::new(f.clone()),
        opts,
        None,
        cancel,
    )
    .await
    .expect_err("must refuse");
    assert_eq!(err.exit_code().code(), 1);
    assert!(
        f.calls().is_empty(),
        "acted without an audit log: {:?}",
        f.calls()
    );
}

/// A step judges its own result on each target: with `serial: 1`, when the step runs on the
/// second router, the first router's result (already registered under the same name) must not
/// stand in for the second's in `failed_when`, `changed_when` or `until`.
#[tokio::test]
async fn a_serial_step_judges_each_target_by_its_own_result() {
    const PB: &str = r#"
name: own-result
description: a read-only check, one router at a time
steps:
  - id: state
    on: routers
    serial: 1
    ssh: cat /state
    changes: none
    failed_when: "'bad' in state.stdout"
"#;
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "own.yml", PB);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = FakeTransport::new();
    f.on_host_cmd("r1", "cat /state", CmdOutput::ok("good"));
    f.on_host_cmd("r2", "cat /state", CmdOutput::ok("bad"));
    let (_, summary, _) = run(plan(&pb, &inv, &[]), Arc::new(f), RunOptions::default()).await;
    assert_eq!(
        summary.outcomes[&("state".into(), "r1".into())],
        Outcome::Ok,
        "{}",
        summary.status
    );
    assert_eq!(
        summary.outcomes[&("state".into(), "r2".into())],
        Outcome::Failed,
        "{}",
        summary.status
    );
}
