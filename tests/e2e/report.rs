//! `report:` steps end to end against the fake transport: a finding ends the run with exit 8
//! ("found problems") in a dry-run as in a real run, its rows reach the events (what
//! `--output json` prints) and the audit log with secrets masked, a later step reads its
//! result; no finding is exit 0 with the `empty` text; a failure still wins. And what decided a
//! failed `until` or `assert` is in its message.

use std::sync::Arc;

use remedy::app::RunOptions;
use remedy::event::{Event, Fact};
use remedy::transport::fake::FakeTransport;
use remedy::transport::{ActionResult, CmdOutput};
use remedy_tests::{plan, run, write};
use serde_json::json;

const INVENTORY: &str = r#"
all:
  children:
    routers:
      hosts:
        r1: { cs: { id: "aaaa-1" } }
"#;

const STALE_NICS: &str = r#"
name: stale-nics
params:
  network: { default: guest-net }
  token: { required: true, secret: true }
steps:
  - id: nics
    api: { command: listNics, args: { networkid: "{{ network }}", token: "{{ token }}" } }
  - id: stale
    report:
      title: "Stale NICs on {{ network }}"
      rows: nics.items | rejectattr("state", "eq", "Allocated") | list
      columns: [vm, nic, state]
      facts:
        network: "{{ network }}"
        checked: "{{ nics.items | length }}"
      empty: no stale NICs on {{ network }}
  - id: read_back
    set:
      stale_count: "{{ stale.rows | length }}"
      was_found: "{{ stale.found }}"
"#;

/// The fake zone: `listNics` answers `nics` (one cell holds the secret, as a careless API
/// might echo it).
fn zone(nics: serde_json::Value) -> FakeTransport {
    let f = FakeTransport::new();
    f.on_api("listNics", move |_, _| {
        Ok(ActionResult::Api(json!({"count": 3, "nic": nics.clone()})))
    });
    f
}

const SECRET: &str = "s3cr3t-T0ken-value";

fn stale() -> serde_json::Value {
    json!([
        {"vm": "i-2-940-VM", "nic": "eth1", "state": "Deallocating"},
        {"vm": "i-2-941-VM", "nic": "eth0", "state": "Allocated"},
        {"vm": "i-2-77-VM", "nic": SECRET, "state": "Removed"},
    ])
}

fn reports(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::Report { .. }))
        .collect()
}

#[tokio::test]
async fn a_finding_exits_8_with_its_rows_shown_and_audited_and_secrets_masked() {
    for dry_run in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let pb = write(dir.path(), "stale.yml", STALE_NICS);
        let inv = write(dir.path(), "inv.yml", INVENTORY);
        let log = dir.path().join("audit.jsonl");
        let f = zone(stale());
        let opts = RunOptions {
            dry_run,
            audit_log: Some(log.clone()),
            ..Default::default()
        };
        let (_, summary, events) = run(
            plan(&pb, &inv, &[("token", SECRET)]),
            Arc::new(f.clone()),
            opts,
        )
        .await;
        assert_eq!(summary.exit.code(), 8, "{}", summary.status);
        assert_eq!(
            summary.status,
            "found problems: 2 finding(s) (stale@localhost)"
        );
        assert!(f.mutating_calls().is_empty());

        // The event (what `--output json` prints, one line): the rows by column, masked.
        let shown = reports(&events);
        assert_eq!(shown.len(), 1, "{events:?}");
        let Event::Report {
            step,
            target,
            title,
            columns,
            rows,
            facts,
            found,
            empty,
            ..
        } = shown[0]
        else {
            unreachable!()
        };
        assert_eq!((step.as_str(), target.as_str()), ("stale", "localhost"));
        assert_eq!(title, "Stale NICs on guest-net");
        assert_eq!(columns, &["vm", "nic", "state"]);
        assert_eq!(
            rows,
            &[
                json!({"vm": "i-2-940-VM", "nic": "eth1", "state": "Deallocating"}),
                json!({"vm": "i-2-77-VM", "nic": "********", "state": "Removed"}),
            ]
        );
        assert_eq!(
            facts,
            &[
                Fact {
                    name: "network".into(),
                    value: json!("guest-net")
                },
                Fact {
                    name: "checked".into(),
                    value: json!(3)
                },
            ]
        );
        assert!(*found);
        assert_eq!(empty, &None);
        let line = serde_json::to_string(shown[0]).unwrap();
        assert!(line.starts_with(r#"{"event":"report","#), "{line}");
        for e in &events {
            let text = serde_json::to_string(e).unwrap();
            assert!(!text.contains(SECRET), "secret in an event: {text}");
        }

        // The audit log: the report and the end's count of findings, the secret masked.
        let audit = std::fs::read_to_string(&log).unwrap();
        assert!(!audit.contains(SECRET), "secret in the audit log");
        let records: Vec<serde_json::Value> = audit
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let report = records
            .iter()
            .find(|r| r["event"] == "report")
            .expect("a report record");
        assert_eq!(report["rows"][1]["nic"], "********");
        assert_eq!(report["found"], true);
        let end = records.iter().find(|r| r["event"] == "run_end").unwrap();
        assert_eq!(end["exit_code"], 8);
        assert_eq!(end["found"], 2);
    }
}

#[tokio::test]
async fn a_later_step_reads_the_reports_result() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "stale.yml",
        &format!(
            "{STALE_NICS}  - id: check\n    assert:\n      that: stale_count == 2 and was_found and stale.facts.checked == 3\n"
        ),
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let (_, summary, _) = run(
        plan(&pb, &inv, &[("token", SECRET)]),
        Arc::new(zone(stale())),
        RunOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(summary.exit.code(), 8, "{}", summary.status);
}

#[tokio::test]
async fn no_finding_exits_0_with_the_empty_text() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(dir.path(), "stale.yml", STALE_NICS);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let healthy = json!([{"vm": "i-2-941-VM", "nic": "eth0", "state": "Allocated"}]);
    let (_, summary, events) = run(
        plan(&pb, &inv, &[("token", SECRET)]),
        Arc::new(zone(healthy)),
        RunOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(summary.exit.code(), 0, "{}", summary.status);
    assert_eq!(summary.status, "ok");
    let shown = reports(&events);
    let Event::Report {
        rows, found, empty, ..
    } = shown[0]
    else {
        unreachable!()
    };
    assert!(rows.is_empty() && !found);
    assert_eq!(empty.as_deref(), Some("no stale NICs on guest-net"));
    let end = events
        .iter()
        .find_map(|e| match e {
            Event::RunEnd { found, .. } => Some(*found),
            _ => None,
        })
        .unwrap();
    assert_eq!(end, 0);
}

#[tokio::test]
async fn found_decides_whether_rows_are_a_finding_and_a_failure_still_wins() {
    let dir = tempfile::tempdir().unwrap();
    // `found:` reads the report's own rows: two stale NICs are tolerated
    let tolerant = STALE_NICS.replace(
        "      empty: no stale",
        "      found: result.rows | length > 2\n      empty: no stale",
    );
    let pb = write(dir.path(), "tolerant.yml", &tolerant);
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let (_, summary, _) = run(
        plan(&pb, &inv, &[("token", SECRET)]),
        Arc::new(zone(stale())),
        RunOptions::default(),
    )
    .await;
    assert_eq!(summary.exit.code(), 0, "{}", summary.status);

    // a finding, then a failure: the failure's exit code (nothing changed: 7)
    let failing = format!("{STALE_NICS}  - id: boom\n    assert: {{ that: stale_count == 0 }}\n");
    let pb = write(dir.path(), "failing.yml", &failing);
    let (_, summary, _) = run(
        plan(&pb, &inv, &[("token", SECRET)]),
        Arc::new(zone(stale())),
        RunOptions::default(),
    )
    .await;
    assert_eq!(summary.exit.code(), 7, "{}", summary.status);
    assert_eq!(
        summary.status,
        "failed (step boom failed on localhost: assertion failed: stale_count == 0; \
         stale_count = 2); nothing was changed"
    );
}

#[tokio::test]
async fn a_failed_until_shows_the_last_output_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "poll.yml",
        r#"
name: poll
params:
  token: { required: true, secret: true }
steps:
  - id: probe
    on: r1
    ssh: agent-state {{ token }}
    changes: none
    retries: 2
    delay: 10ms
    until: probe.stdout == "Up"
"#,
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = FakeTransport::new();
    f.on_prefix("agent-state", |_, _| {
        Ok(ActionResult::Ssh(CmdOutput::exit(
            0,
            format!("Disconnected (token {SECRET})"),
            "agent: connection refused",
        )))
    });
    let (_, summary, events) = run(
        plan(&pb, &inv, &[("token", SECRET)]),
        Arc::new(f),
        RunOptions::default(),
    )
    .await;
    assert_eq!(summary.exit.code(), 7, "{}", summary.status);
    let error = events
        .iter()
        .find_map(|e| match e {
            Event::StepEnd { step, error, .. } if step == "probe" => error.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        error,
        r#"`until` still false after 3 attempt(s): probe.stdout == "Up"; last output: rc 0, stdout "Disconnected (token ********)", stderr "agent: connection refused""#
    );
}

#[tokio::test]
async fn a_failed_assert_shows_the_values_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "assert.yml",
        r#"
name: counts
steps:
  - id: hosts
    api: { command: listHosts }
  - id: up
    assert:
      that: hosts.items[0].state == "Up" and hosts.json.count > 3
      msg: the host is not up
"#,
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = FakeTransport::new();
    f.on_api("listHosts", |_, _| {
        Ok(ActionResult::Api(
            json!({"count": 1, "host": [{"name": "kvm01", "state": "Disconnected"}]}),
        ))
    });
    let (_, summary, _) = run(plan(&pb, &inv, &[]), Arc::new(f), RunOptions::default()).await;
    assert_eq!(summary.exit.code(), 7, "{}", summary.status);
    assert_eq!(
        summary.status,
        r#"failed (step up failed on localhost: the host is not up (that: hosts.items[0].state == "Up" and hosts.json.count > 3; hosts.items[0].state = "Disconnected", hosts.json.count = 1)); nothing was changed"#
    );
}

/// A failed `until` on an API call quotes the fields its expression names (here each host's
/// `name` and `state`, read through `selectattr`), however far into a big reply they are,
/// instead of the reply's first 400 characters.
#[tokio::test]
async fn a_failed_until_on_an_api_call_shows_the_fields_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "wait-up.yml",
        r#"
name: wait-up
steps:
  - id: host_up
    api: { command: listHosts, args: { type: Routing } }
    retries: 1
    delay: 10ms
    until: result.items | selectattr("name", "equalto", "kvm02") | selectattr("state", "equalto", "Up") | list | length == 1
"#,
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = FakeTransport::new();
    let filler = "x".repeat(500);
    f.on_api("listHosts", move |_, _| {
        Ok(ActionResult::Api(json!({"count": 2, "host": [
            {"averageload": filler, "id": "h1", "name": "kvm01", "state": "Up"},
            {"averageload": filler, "id": "h2", "name": "kvm02", "state": "Disconnected"},
        ]})))
    });
    let (_, summary, _) = run(plan(&pb, &inv, &[]), Arc::new(f), RunOptions::default()).await;
    assert_eq!(summary.exit.code(), 7, "{}", summary.status);
    assert_eq!(
        summary.status,
        r#"failed (step host_up failed on localhost: `until` still false after 2 attempt(s): result.items | selectattr("name", "equalto", "kvm02") | selectattr("state", "equalto", "Up") | list | length == 1; last reply, the fields it reads: {"items":[{"name":"kvm01","state":"Up"},{"name":"kvm02","state":"Disconnected"}]}); nothing was changed"#
    );
}

/// A `set` computes its names in the order written, each seeing the ones before it (a list
/// read back as a list, a number as a number), and a later step sees them all.
#[tokio::test]
async fn a_set_step_computes_its_names_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "counts.yml",
        r#"
name: counts
steps:
  - id: routers
    api: { command: listRouters, args: { listall: true } }
  - id: counts
    set:
      backups: '{{ routers.items | selectattr("redundantstate", "equalto", "BACKUP") | map(attribute="name") | list | tojson }}'
      total: "{{ routers.items | length }}"
      summary: "{{ backups | length }} of {{ total }} BACKUP: {{ backups | join(', ') }}"
  - id: show
    report:
      rows: "[]"
      facts: { summary: "{{ summary }}", backups: "{{ backups | tojson }}" }
"#,
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let f = FakeTransport::new();
    f.on_api("listRouters", |_, _| {
        Ok(ActionResult::Api(json!({"count": 3, "router": [
            {"name": "r-930-VM", "redundantstate": "BACKUP"},
            {"name": "r-931-VM", "redundantstate": "BACKUP"},
            {"name": "r-932-VM", "redundantstate": "PRIMARY"},
        ]})))
    });
    let (_, summary, events) = run(plan(&pb, &inv, &[]), Arc::new(f), RunOptions::default()).await;
    assert_eq!(summary.exit.code(), 0, "{}", summary.status);
    let Event::Report { facts, .. } = reports(&events)[0] else {
        unreachable!()
    };
    assert_eq!(
        facts,
        &[
            Fact {
                name: "summary".into(),
                value: json!("2 of 3 BACKUP: r-930-VM, r-931-VM")
            },
            Fact {
                name: "backups".into(),
                value: json!(["r-930-VM", "r-931-VM"])
            },
        ]
    );
}

/// Rows written as a folded block (`>-`) come out on one line, which is not a YAML list: the
/// step fails as bad input (exit 4) and says to write a literal block.
#[tokio::test]
async fn rows_in_a_folded_block_fail_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "folded.yml",
        "name: folded\nsteps:\n  - id: r\n    report:\n      rows: >-\n        \
         {% for n in [1, 2] %}- { n: {{ n }} }\n        {% endfor %}\n",
    );
    let inv = write(dir.path(), "inv.yml", INVENTORY);
    let (_, summary, _) = run(
        plan(&pb, &inv, &[]),
        Arc::new(FakeTransport::new()),
        RunOptions::default(),
    )
    .await;
    assert_eq!(summary.exit.code(), 4, "{}", summary.status);
    assert!(
        summary.status.ends_with(
            "rows: the rendered text is not a YAML list: block sequence entries are not allowed \
             in this context at line 1 column 12; the template is one line (a folded block, `>`, \
             joins its lines): write it as a literal block, `rows: |`, one row per line); \
             nothing was changed"
        ),
        "{}",
        summary.status
    );
}
