use super::*;
use serde_json::json;

fn body() -> Body {
    Body {
        remedy_version: env!("CARGO_PKG_VERSION").into(),
        created_at: "2026-11-23T09:00:00Z".into(),
        expires_at: "2026-11-24T09:00:00Z".into(),
        created_by: "alice".into(),
        created_on: "ops1".into(),
        run: "r1".into(),
        playbook: PlaybookRef {
            name: "p".into(),
            path: "/p.yml".into(),
            files: vec![],
        },
        inventory: InventoryRef {
            sources: vec![],
            files_sha256: "0".repeat(64),
        },
        params: ParamsRef {
            given: [
                ("vpc".to_string(), Given::Value("web".into())),
                (
                    "token".to_string(),
                    Given::SecretSha256(secret_hash("salt", "token", "s3cret")),
                ),
            ]
            .into_iter()
            .collect(),
            salt: "salt".into(),
            sha256: "0".repeat(64),
        },
        shown_params: Default::default(),
        limit: None,
        tags: vec![],
        applies: true,
        applies_when: None,
        targets: vec![],
        steps: vec![PlannedStep {
            id: "s".into(),
            name: None,
            phase: Phase::Steps,
            kind: "ssh".into(),
            mutating: true,
            undo: "x".into(),
            irreversible: None,
            when: vec![],
            targets_after_refresh: None,
            nodes: vec![
                PlannedNode {
                    target: "h1".into(),
                    prediction: Prediction::change(vec!["touch /x".into()], None, None),
                    observed: None,
                },
                PlannedNode {
                    target: "h2".into(),
                    prediction: Prediction::of(Outcome::Skipped),
                    observed: None,
                },
            ],
        }],
    }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn text(e: Error) -> String {
    assert_eq!(e.exit_code(), crate::error::ExitCode::PlanRefused);
    e.render(false)
}

#[test]
fn versions_apply_each_others_plans_within_a_release_line() {
    assert!(compatible("0.1.0", "0.1.7"));
    assert!(!compatible("0.1.0", "0.2.0"));
    assert!(compatible("1.2.0", "1.9.1"));
    assert!(!compatible("1.2.0", "2.0.0"));
    assert!(!compatible("", "0.1.0"));
}

#[test]
fn the_id_is_the_digest_of_the_body_and_an_edit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.plan.json");
    let saved = SavedPlan::seal(body());
    assert_eq!(saved.id.len(), 64);
    assert_eq!(SavedPlan::seal(body()).id, saved.id, "stable");
    saved.write(&p).unwrap();
    assert_eq!(SavedPlan::read(&p).unwrap(), saved);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let original = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, original.replace("touch /x", "rm -rf /x")).unwrap();
    assert!(text(SavedPlan::read(&p).unwrap_err()).contains("was edited"));
    // An added field is an edit too.
    std::fs::write(
        &p,
        original.replace("\"applies\": true", "\"applies\": true, \"extra\": 1"),
    )
    .unwrap();
    assert!(text(SavedPlan::read(&p).unwrap_err()).contains("was edited"));
    std::fs::write(&p, original.replace(FORMAT, "remedy-plan/9")).unwrap();
    assert!(text(SavedPlan::read(&p).unwrap_err()).contains("remedy-plan/9"));
    std::fs::write(&p, "{ not json").unwrap();
    assert!(text(SavedPlan::read(&p).unwrap_err()).contains("not a plan file"));
}

#[test]
fn a_short_id_is_cut_on_a_character() {
    assert_eq!(short("0123456789abcdef"), "0123456789ab");
    assert_eq!(short("éééééééééééééé"), "éééééééééééé");
    assert_eq!(short("abc"), "abc");
}

#[test]
fn expiry_and_expected_id() {
    let saved = SavedPlan::seal(body());
    let before = ts("2026-11-23T10:00:00Z");
    saved.check_file(None, before).unwrap();
    saved.check_file(Some(&saved.id), before).unwrap();
    saved
        .check_file(Some(&saved.id[..12].to_uppercase()), before)
        .unwrap();
    assert!(
        text(saved.check_file(Some(&saved.id[..11]), before).unwrap_err())
            .contains("at least its first 12")
    );
    assert!(text(
        saved
            .check_file(Some("0123456789abcdef"), before)
            .unwrap_err()
    )
    .contains("not the expected"));
    assert!(text(
        saved
            .check_file(None, ts("2026-11-24T09:00:01Z"))
            .unwrap_err()
    )
    .contains("expired at 2026-11-24T09:00:00Z"));
}

#[test]
fn parameters_come_from_the_plan_and_secrets_only_match_their_hash() {
    let saved = SavedPlan::seal(body());
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert!(text(saved.params(&[]).unwrap_err()).contains("pass it again with -e token"));
    assert!(text(saved.params(&[kv("token", "guess")]).unwrap_err()).contains("not the value"));
    let got = saved.params(&[kv("token", "s3cret")]).unwrap();
    assert_eq!(got, vec![kv("token", "s3cret"), kv("vpc", "web")]);
    // The same value again is fine; another is refused; so is a new one.
    saved
        .params(&[kv("token", "s3cret"), kv("vpc", "web")])
        .unwrap();
    assert!(text(
        saved
            .params(&[kv("token", "s3cret"), kv("vpc", "db")])
            .unwrap_err()
    )
    .contains("made with vpc=web"));
    assert!(text(
        saved
            .params(&[kv("token", "s3cret"), kv("zone", "z")])
            .unwrap_err()
    )
    .contains("parameter zone was not given"));
    // The secret is nowhere in the file.
    assert!(!saved.to_json().contains("s3cret"));
}

#[test]
fn decisions_and_targets_are_held_to_the_plan() {
    let e = SavedPlan::seal(body()).expect(OnDrift::Abort);
    assert_eq!(e.decision("s", "h1", false), None);
    assert!(e
        .decision("s", "h1", true)
        .unwrap()
        .contains("now its `when` is false"));
    assert_eq!(e.decision("s", "h2", true), None);
    assert!(e
        .decision("s", "h2", false)
        .unwrap()
        .contains("now it would run"));
    assert!(e
        .decision("s", "h3", false)
        .unwrap()
        .contains("not a target of step s"));
    // A step the plan does not bind (chosen after a refresh, or another phase) is not held.
    assert_eq!(e.decision("other", "h1", false), None);
}

#[test]
fn drift_names_what_differs() {
    let r = Redactor::new();
    let planned = Prediction::change(
        vec!["ip link set dev eth1 up".into()],
        Some(json!({"up": false, "operstate": "DOWN"})),
        None,
    );
    assert_eq!(drift(&planned, &planned, &r), None);
    assert_eq!(
        drift(&Prediction::of(Outcome::Unknown), &planned, &r),
        None,
        "unknown is not held"
    );
    let done = Prediction::no_change(Some(json!({"up": true, "operstate": "UP"})));
    assert!(drift(&planned, &done, &r)
        .unwrap()
        .contains("already as wanted"));
    let mut moved = planned.clone();
    moved.pre = Some(json!({"up": false, "operstate": "LOWERLAYERDOWN"}));
    let why = drift(&planned, &moved, &r).unwrap();
    assert!(
        why.contains(".operstate: \"DOWN\" -> \"LOWERLAYERDOWN\""),
        "{why}"
    );
    assert!(!why.contains(".up"), "{why}");
    let mut other = planned.clone();
    other.actions = vec!["ip link set dev eth2 up".into()];
    assert!(drift(&planned, &other, &r)
        .unwrap()
        .contains("planned: ip link set dev eth1 up"));
}

#[test]
fn a_secret_in_an_action_is_compared_as_the_plan_stored_it() {
    let mut r = Redactor::new();
    r.add("hunter2hunter2");
    let stored = Prediction::change(vec!["login -p ********".into()], None, None);
    let now = Prediction::change(vec!["login -p hunter2hunter2".into()], None, None);
    assert_eq!(drift(&stored, &now, &r), None);
}

#[test]
fn json_diff_lists_changed_leaves() {
    let a = json!({"x": {"y": 1, "z": [1]}, "gone": true});
    let b = json!({"x": {"y": 2, "z": [1]}, "new": "v"});
    assert_eq!(
        json_diff(&a, &b),
        "  .gone: true -> (absent)\n  .new: (absent) -> \"v\"\n  .x.y: 1 -> 2"
    );
}

#[test]
fn approvals_sign_with_a_key_and_count_only_what_verifies() {
    use approval::*;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let key_at = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let mut b = body();
    b.expires_at = "2999-01-01T00:00:00Z".into();
    let saved = SavedPlan::seal(b);
    assert!(
        Key::load(Some(&key_at("open.key", "0123456789abcdef", 0o644)))
            .err()
            .unwrap()
            .render(false)
            .contains("chmod 600")
    );
    assert!(Key::load(Some(&key_at("short.key", "short", 0o600)))
        .err()
        .unwrap()
        .render(false)
        .contains("too short"));
    let k1 = Key::load(Some(&key_at("k1", "first key, long enough\n", 0o600)))
        .unwrap()
        .unwrap();
    let k2 = Key::load(Some(&key_at("k2", "second key, long enough", 0o600)))
        .unwrap()
        .unwrap();

    assert!(find(&audit, &saved.id, None).is_err(), "no log yet");
    approve(&saved, "bob", Some("CHG1"), Some(&k1), &audit, "bob").unwrap();
    approve(&saved, "carol", None, None, &audit, "carol").unwrap();
    let by = |v: Vec<ApprovalRef>| v.into_iter().map(|a| a.by).collect::<Vec<_>>();
    assert_eq!(by(find(&audit, &saved.id, Some(&k1)).unwrap()), ["bob"]);
    assert!(find(&audit, &saved.id, Some(&k2)).unwrap().is_empty());
    assert_eq!(by(find(&audit, &saved.id, None).unwrap()), ["bob", "carol"]);
    assert!(find(&audit, "other", None).unwrap().is_empty());

    // Four eyes: the author's own approval does not count.
    approve(&saved, "alice", None, None, &audit, "alice").unwrap();
    let only_author = vec![ApprovalRef {
        approval: "x".into(),
        by: "alice".into(),
        ticket: None,
        at: "t".into(),
        alg: "sha256".into(),
        operator: "alice".into(),
    }];
    assert!(
        text(require(&saved, only_author.clone(), true, &audit, false).unwrap_err())
            .contains("who made it")
    );
    // Another name typed from the author's own account does not count either.
    let renamed = vec![ApprovalRef {
        by: "bob".into(),
        ..only_author[0].clone()
    }];
    assert!(
        text(require(&saved, renamed, true, &audit, false).unwrap_err()).contains("who made it")
    );
    assert_eq!(
        require(&saved, only_author, false, &audit, false)
            .unwrap()
            .len(),
        1
    );

    // A forged record (a signature that does not match what it says) does not count, and
    // an edited log is not trusted at all.
    let text_now = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(
        &audit,
        text_now.replace("\"by\":\"carol\"", "\"by\":\"dave\""),
    )
    .unwrap();
    assert!(text(find(&audit, &saved.id, None).unwrap_err()).contains("does not verify"));
}
