//! Language features end to end against the fake: includes with params, register/until,
//! `when`, serial batches, secrets kept out of events and the audit log, hostile values.

use std::sync::Arc;

use remedy::app::RunOptions;
use remedy::event::{Event, Outcome};
use remedy::transport::fake::FakeTransport;
use remedy::transport::{Action, ActionResult, CmdOutput};
use remedy_tests::{plan, run, write};

const INVENTORY: &str = r#"
all:
  children:
    routers:
      hosts:
        r1: { cs: { id: "aaaa-1", redundantstate: BACKUP } }
        r2: { cs: { id: "aaaa-2", redundantstate: BACKUP } }
        r3: { cs: { id: "aaaa-3", redundantstate: PRIMARY } }
"#;

const CHILD: &str = r#"
name: restart-service
params:
  service: { required: true, pattern: "[a-z][a-z0-9@._-]*" }
  where: { required: true }
detect:
  - id: state
    on: "{{ where }}"
    ssh: systemctl is-active {{ service }}
    changes: none
    ignore_errors: true
applies_when: "state.rc != 0"
steps:
  - id: restart
    on: "{{ where }}"
    ssh: systemctl restart {{ service }}
    no_rollback: restarting a stopped service is the remedy itself
"#;

const PARENT: &str = r#"
name: parent
params:
  token: { required: true, secret: true }
  note: { default: "x; rm -rf / $(reboot)" }
steps:
  - id: routers
    api: { command: listRouters, args: { listall: true, token: "{{ token }}" } }
  - id: backups
    on: routers
    when: "cs.redundantstate == 'BACKUP'"
    ssh: echo {{ note }} {{ cs.id }}
    changes: none
  - id: poll
    on: r1
    ssh: checkrouter.sh
    changes: none
    register: status
    retries: 3
    delay: 10ms
    until: "'PRIMARY' in status.stdout"
  - id: fix
    include: restart-service.yml
    params: { service: dnsmasq, where: "r1:r2" }
  - id: rolling
    on: routers
    serial: 1
    ssh: touch /ok
    rollback: rm -f /ok
"#;

fn fake() -> FakeTransport {
    let f = FakeTransport::new();
    f.on_api("listRouters", |_, _| {
        Ok(ActionResult::Api(
            serde_json::json!({"count": 1, "router": [{"id": "aaaa-1"}]}),
        ))
    });
    f.on_prefix("echo ", |_, _| Ok(ActionResult::Ssh(CmdOutput::ok(""))));
    f.on_prefix("checkrouter.sh", |_, st| {
        let n: u32 = st.get("polls").and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
        st.insert("polls".into(), n.to_string());
        let out = if n >= 3 {
            "Status: PRIMARY"
        } else {
            "Status: BACKUP"
        };
        Ok(ActionResult::Ssh(CmdOutput::ok(out)))
    });
    f.on_host_cmd(
        "r1",
        "systemctl is-active dnsmasq",
        CmdOutput::exit(3, "inactive", ""),
    );
    f.on_host_cmd("r2", "systemctl is-active dnsmasq", CmdOutput::ok("active"));
    f.on_prefix("systemctl restart dnsmasq", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::ok("")))
    });
    f.on_prefix("touch /ok", |_, _| Ok(ActionResult::Ssh(CmdOutput::ok(""))));
    f
}

#[tokio::test]
async fn features_work_together_and_secrets_stay_out() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "restart-service.yml", CHILD);
    let pb = write(dir.path(), "parent.yml", PARENT);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let log = dir.path().join("audit.jsonl");
    let f = fake();
    let secret = "s3cr3t-T0ken-value";
    let opts = RunOptions {
        audit_log: Some(log.clone()),
        ..Default::default()
    };
    let (_, summary, events) = run(
        plan(&pb, &inv, &[("token", secret)]),
        Arc::new(f.clone()),
        opts,
    )
    .await;
    assert_eq!(summary.exit.code(), 0, "{}", summary.status);
    assert!(f.unexpected().is_empty(), "{:?}", f.unexpected());

    // when: only BACKUP routers echo; hostile param quoted as one word
    let mut echoes: Vec<(String, String)> = f
        .calls()
        .into_iter()
        .filter(|c| c.action.to_string().starts_with("echo"))
        .map(|c| (c.host, c.action.to_string()))
        .collect();
    echoes.sort(); // the two routers run in parallel
    assert_eq!(
        echoes,
        [
            (
                "r1".to_string(),
                "echo 'x; rm -rf / $(reboot)' aaaa-1".to_string()
            ),
            (
                "r2".to_string(),
                "echo 'x; rm -rf / $(reboot)' aaaa-2".to_string()
            )
        ]
    );
    assert_eq!(
        summary.outcomes[&("backups".into(), "r3".into())],
        Outcome::Skipped
    );
    // until: polled three times
    assert_eq!(f.state("polls").as_deref(), Some("3"));
    // include: detect on both, restart only where inactive... the gate is per target
    let restarts: Vec<String> = f
        .calls()
        .into_iter()
        .filter(|c| c.action.to_string().starts_with("systemctl restart"))
        .map(|c| c.host)
        .collect();
    assert_eq!(restarts, ["r1"], "the include gate is evaluated per target");
    // serial: 1 -> strictly one router after the other, in inventory order
    let rolling: Vec<String> = f
        .calls()
        .into_iter()
        .filter(|c| c.action == Action::ssh("touch /ok"))
        .map(|c| c.host)
        .collect();
    assert_eq!(rolling, ["r1", "r2", "r3"]);
    // the secret went to the transport, but never to events or the audit log
    assert!(f
        .calls()
        .iter()
        .any(|c| c.action.to_string().contains(secret)));
    for e in &events {
        let text = serde_json::to_string(e).unwrap();
        assert!(!text.contains(secret), "secret in event: {text}");
    }
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(!audit.contains(secret), "secret in the audit log");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::RunStart { params, .. } if params["token"] == "********")));
}

#[tokio::test]
async fn until_that_never_holds_fails_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "pb.yml",
        r#"
name: waits
steps:
  - id: change
    on: r1
    ssh: touch /ok
    rollback: rm -f /ok
  - id: poll
    on: r1
    ssh: checkrouter.sh
    changes: none
    retries: 1
    delay: 10ms
    until: "'MASTER' in poll.stdout"
"#,
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = fake();
    f.on_prefix("rm -f /ok", |_, _| Ok(ActionResult::Ssh(CmdOutput::ok(""))));
    let (_, summary, _) = run(
        plan(&pb, &inv, &[]),
        Arc::new(f.clone()),
        RunOptions::default(),
    )
    .await;
    assert_eq!(summary.exit.code(), 2, "{}", summary.status);
    assert!(summary.status.contains("until"), "{}", summary.status);
    assert!(f
        .calls()
        .iter()
        .any(|c| c.action == Action::ssh("rm -f /ok")));
}

const FANOUT: &str = r#"
name: fanout
steps:
  - id: a
    on: routers
    tags: [first]
    ssh: flaky
    changes: none
    max_fail_percentage: 40
  - id: b
    on: routers
    tags: [second]
    ssh: touch /ok
    rollback: rm -f /ok
"#;

fn flaky() -> FakeTransport {
    let f = fake();
    f.on_prefix("flaky", |_, _| Ok(ActionResult::Ssh(CmdOutput::ok(""))));
    f.on_host_cmd("r2", "flaky", CmdOutput::exit(1, "", "r2 is sick"));
    f
}

#[tokio::test]
async fn limit_and_tags_narrow_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "pb.yml", FANOUT);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let opts = remedy::plan::Options {
        limit: Some("r3".into()),
        tags: vec!["second".into()],
        ..Default::default()
    };
    let p = remedy_tests::plan_with(&pb, &inv, opts);
    let f = flaky();
    let (_, summary, _) = run(p, Arc::new(f.clone()), RunOptions::default()).await;
    assert_eq!(summary.exit.code(), 0, "{}", summary.status);
    let calls: Vec<(String, String)> = f
        .calls()
        .into_iter()
        .map(|c| (c.host, c.action.to_string()))
        .collect();
    assert_eq!(calls, [("r3".to_string(), "touch /ok".to_string())]);
}

#[tokio::test]
async fn max_fail_percentage_tolerates_a_minority_and_stops_that_target() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "pb.yml", FANOUT);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = flaky();
    let (_, summary, _) = run(
        plan(&pb, &inv, &[]),
        Arc::new(f.clone()),
        RunOptions::default(),
    )
    .await;
    // 1 of 3 failed (33% <= 40%): the others go on, the failed target does not
    assert_eq!(
        summary.outcomes[&("a".into(), "r2".into())],
        Outcome::Failed
    );
    let touched: Vec<String> = f
        .calls()
        .into_iter()
        .filter(|c| c.action == Action::ssh("touch /ok"))
        .map(|c| c.host)
        .collect();
    assert!(
        touched.contains(&"r1".to_string()) && touched.contains(&"r3".to_string()),
        "{touched:?}"
    );
    assert!(!touched.contains(&"r2".to_string()), "{touched:?}");
    // a failure is still a failure: reported, and the run's changes are undone
    assert_eq!(summary.exit.code(), 2, "{}", summary.status);

    // 40% is the limit: with two of three failing, the step fails the run at once
    let f = flaky();
    f.on_host_cmd("r3", "flaky", CmdOutput::exit(1, "", "r3 too"));
    let (_, summary, _) = run(
        plan(&pb, &inv, &[]),
        Arc::new(f.clone()),
        RunOptions::default(),
    )
    .await;
    // ... before any change: a failure that changed nothing (7), not a rollback (2)
    assert_eq!(summary.exit.code(), 7, "{}", summary.status);
    assert!(
        summary.status.ends_with("nothing was changed"),
        "{}",
        summary.status
    );
}

/// `retries` and `delay` from parameters: rendered per node; a value that is no count is the
/// playbook's error at run time (exit 4), named at its field.
#[tokio::test]
async fn retries_and_delay_may_be_templates() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "pb.yml",
        r#"
name: polls
params:
  attempts: { default: "4" }
  pause: { default: 10ms }
steps:
  - id: poll
    on: r1
    ssh: checkrouter.sh
    changes: none
    retries: "{{ attempts }}"
    delay: "{{ pause }}"
    until: "'PRIMARY' in poll.stdout"
"#,
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    // Three polls are needed: 4 retries are enough, 1 is not.
    for (attempts, exit, polls) in [("4", 0, "3"), ("1", 7, "2")] {
        let f = fake();
        let (_, summary, _) = run(
            plan(&pb, &inv, &[("attempts", attempts)]),
            Arc::new(f.clone()),
            RunOptions::default(),
        )
        .await;
        assert_eq!(summary.exit.code(), exit, "{attempts}: {}", summary.status);
        assert_eq!(f.state("polls").as_deref(), Some(polls), "{attempts}");
    }
    let f = fake();
    let (_, summary, _) = run(
        plan(&pb, &inv, &[("attempts", "many")]),
        Arc::new(f.clone()),
        RunOptions::default(),
    )
    .await;
    assert_eq!(summary.exit.code(), 4, "{}", summary.status);
    assert!(
        summary
            .status
            .contains("pb.yml:11:14: retries is \"many\": expected a whole number, 0 or more"),
        "{}",
        summary.status
    );
    assert!(f.calls().is_empty(), "nothing ran: {:?}", f.calls());
}
