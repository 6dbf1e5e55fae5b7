//! The real binary: exit codes, a real apply/rollback on real files through the local
//! connection, and `audit verify` catching edits, deletions and swaps.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn remedy(args: &[&str], cwd: &Path) -> Output {
    remedy_env(args, cwd, &[])
}

/// [`remedy`] with environment variables set (`Some`) or removed (`None`).
fn remedy_env(args: &[&str], cwd: &Path, env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remedy"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("REMEDY_AUDIT_LOG")
        .env_remove("REMEDY_INVENTORY")
        // Tests run in parallel on the same (simulated) machine names: each run its own locks.
        .env("REMEDY_STATE_DIR", state_dir());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("run remedy")
}

/// A state directory of its own (per-target locks), under the system's temp dir.
fn state_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("remedy-cli-state-{}-{n}", std::process::id()))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn validate_passes_on_shipped_playbooks() {
    let o = remedy(&["validate"], &root());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Against the lab inventory too (the zone's groups from its API): targets, includes
    // binding required parameters, host variables.
    let o = remedy(&["validate", "-i", "inventories/lab.yml"], &root());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let checked = text(&o).lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(checked, SHIPPED.len(), "{}", text(&o));
}

#[test]
fn validate_exits_4_on_each_bad_fixture() {
    let dir = root().join("tests/fixtures/bad");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("yml") {
            continue;
        }
        seen += 1;
        let o = remedy(
            &[
                "validate",
                p.to_str().unwrap(),
                "-i",
                "tests/fixtures/inventory.yml",
            ],
            &root(),
        );
        assert_eq!(o.status.code(), Some(4), "{}: {}", p.display(), text(&o));
        assert!(text(&o).contains("error: "), "{}", text(&o));
    }
    assert!(seen >= 10, "expected the bad fixtures, found {seen}");
}

/// A value in a place no quoting makes safe is refused by `validate` at the `{{ }}`, with the
/// fix; `--strict` also refuses `| raw`.
#[test]
fn validate_refuses_unsafe_interpolations_and_strict_refuses_raw() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        "name: x\ndescription: d\nparams:\n  v: { default: a }\nsteps:\n  - id: s\n    on: h\n    \
         ssh: echo 'ok {{ v }}' \"ok {{ v }}\" `echo {{ v }}`\n    changes: none\n",
    )
    .unwrap();
    let o = remedy(&["validate", "pb.yml"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(
            "error: pb.yml:8:47: a value cannot be interpolated inside backticks, where the \
             shell reads backslashes and quotes a second time\n"
        ),
        "{err}"
    );
    assert!(err.contains("use $(...) instead of backticks"), "{err}");

    std::fs::write(
        &pb,
        "name: x\ndescription: d\nparams:\n  v: { default: a }\nsteps:\n  - id: s\n    on: h\n    \
         ssh: ip route {{ v | raw }} dev 'eth {{ v }}'\n    changes: none\n",
    )
    .unwrap();
    let o = remedy(&["validate", "pb.yml"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = remedy(&["validate", "--strict", "pb.yml"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(
            "error: pb.yml:8:19: `raw` inserts a value unquoted, and --strict forbids it\n"
        ),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("invalid  pb.yml"));
    // The shipped playbooks use no `raw`.
    let o = remedy(&["validate", "--strict"], &root());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

const PLAYBOOK: &str = r#"
name: perms-then-fail
description: changes a file mode, then fails, so the mode must come back
params:
  path: { required: true }
  fail: { type: bool, default: false }
steps:
  - id: mode
    on: local
    file: { path: "{{ path }}", mode: "0644" }
  - id: marker
    on: local
    ssh: touch {{ path }}.marker
    rollback: rm -f {{ path }}.marker
  - id: boom
    on: local
    ssh: "{% if fail %}exit 7{% else %}true{% endif %}"
    no_rollback: does nothing when it succeeds
"#;

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    std::fs::write(&pb, PLAYBOOK).unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    local: { ansible_connection: local }\n",
    )
    .unwrap();
    let file = dir.path().join("target file; $(touch pwned)");
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, pb, inv, file)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn failing_apply_rolls_back_real_changes_and_exits_2() {
    let (dir, pb, inv, file) = setup();
    let log = dir.path().join("audit.jsonl");
    let p = format!("path={}", file.display());
    let o = remedy(
        &[
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "-e",
            &p,
            "-e",
            "fail=true",
            "--yes",
            "--audit-log",
            log.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(mode(&file), 0o600, "mode not restored");
    assert!(
        !Path::new(&format!("{}.marker", file.display())).exists(),
        "marker not removed"
    );
    // hostile file name stayed one argument: nothing was executed from it
    assert!(!dir.path().join("pwned").exists());
    let show = remedy(
        &["audit", "list", "--audit-log", log.to_str().unwrap()],
        dir.path(),
    );
    assert!(text(&show).contains("rolled back"), "{}", text(&show));
}

#[test]
fn dry_run_changes_nothing_and_apply_changes() {
    let (dir, pb, inv, file) = setup();
    let log = dir.path().join("audit.jsonl");
    let p = format!("path={}", file.display());
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "apply".to_string(),
            pb.display().to_string(),
            "-i".into(),
            inv.display().to_string(),
            "-e".into(),
            p.clone(),
            "--audit-log".into(),
            log.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let dry: Vec<String> = args(&["--dry-run"]);
    let o = remedy(
        &dry.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("will change"), "{}", text(&o));
    assert_eq!(mode(&file), 0o600);
    assert!(!Path::new(&format!("{}.marker", file.display())).exists());
    // without --yes and without a terminal, nothing happens
    let no_yes: Vec<String> = args(&[]);
    let o = remedy(
        &no_yes.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(mode(&file), 0o600);
    let yes: Vec<String> = args(&["--yes"]);
    let o = remedy(
        &yes.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(mode(&file), 0o644);
}

#[test]
fn missing_required_param_is_exit_4() {
    let (dir, pb, inv, _) = setup();
    let o = remedy(
        &[
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--dry-run",
            "--audit-log",
            dir.path().join("a.jsonl").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("missing required parameter \"path\""),
        "{}",
        text(&o)
    );
}

fn audit_log_with_runs(dir: &Path) -> PathBuf {
    let (_d, pb, inv, file) = setup();
    let log = dir.join("audit.jsonl");
    let p = format!("path={}", file.display());
    for _ in 0..2 {
        let o = remedy(
            &[
                "apply",
                pb.to_str().unwrap(),
                "-i",
                inv.to_str().unwrap(),
                "-e",
                &p,
                "--yes",
                "--audit-log",
                log.to_str().unwrap(),
            ],
            dir,
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    log
}

fn verify(log: &Path) -> Output {
    remedy(
        &["audit", "verify", "--audit-log", log.to_str().unwrap()],
        log.parent().unwrap(),
    )
}

#[test]
fn audit_verify_names_edited_deleted_and_swapped_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = audit_log_with_runs(dir.path());
    let o = verify(&log);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() > 6);

    // edited line 3
    let mut edited: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    edited[2] = edited[2]
        .replace("\"run\"", "\"run\" ")
        .replacen("fix", "fox", 1);
    if edited[2] == lines[2] {
        edited[2] = edited[2].replacen('}', ",\"x\":1}", 1);
    }
    std::fs::write(&log, edited.join("\n") + "\n").unwrap();
    let o = verify(&log);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("line 3"), "edit: {}", text(&o));

    // deleted line 4
    let mut deleted: Vec<&str> = lines.clone();
    deleted.remove(3);
    std::fs::write(&log, deleted.join("\n") + "\n").unwrap();
    let o = verify(&log);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("line 4"), "delete: {}", text(&o));

    // swapped lines 5 and 6
    let mut swapped: Vec<&str> = lines.clone();
    swapped.swap(4, 5);
    std::fs::write(&log, swapped.join("\n") + "\n").unwrap();
    let o = verify(&log);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o).contains("5") && text(&o).contains("6"),
        "swap: {}",
        text(&o)
    );
}

#[test]
fn rollback_of_a_finished_run_restores_the_recorded_pre_state() {
    let (dir, pb, inv, file) = setup();
    let log = dir.path().join("audit.jsonl");
    let p = format!("path={}", file.display());
    let o = remedy(
        &[
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "-e",
            &p,
            "--yes",
            "--audit-log",
            log.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(mode(&file), 0o644);
    let marker = PathBuf::from(format!("{}.marker", file.display()));
    assert!(marker.exists());
    let run = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find(|l| l.contains("\"event\":\"run_start\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["run"].as_str().map(str::to_string))
        .unwrap();
    let logs = log.to_str().unwrap();
    let o = remedy(
        &["rollback", &run, "--dry-run", "--audit-log", logs],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("marker @ local: rm -f"), "{}", text(&o));
    assert_eq!(mode(&file), 0o644, "dry-run rollback changed something");
    let o = remedy(
        &["rollback", &run, "--yes", "--audit-log", logs],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(mode(&file), 0o600, "mode not restored");
    assert!(!marker.exists(), "marker not removed");
    let o = remedy(
        &["rollback", &run, "--yes", "--audit-log", logs],
        dir.path(),
    );
    assert!(text(&o).contains("nothing left to undo"), "{}", text(&o));
    assert_eq!(verify(&log).status.code(), Some(0));
}

#[test]
fn sigterm_mid_run_rolls_back_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        "name: slow\nparams:\n  path: { required: true }\nsteps:\n  - id: mode\n    on: local\n    file: { path: \"{{ path }}\", mode: \"0644\" }\n  - id: pause\n    wait: 60s\n",
    )
    .unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    local: { ansible_connection: local }\n",
    )
    .unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args([
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "-e",
            &format!("path={}", file.display()),
            "--yes",
            "--audit-log",
            log.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait until the change is recorded as done
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        if t.contains("\"outcome\":\"changed\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(mode(&file), 0o644);
    let started = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(2));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "did not stop promptly"
    );
    assert_eq!(mode(&file), 0o600, "not rolled back");
    let t = std::fs::read_to_string(&log).unwrap();
    assert!(t.contains("cancelled by signal"), "{t}");
    assert_eq!(verify(&log).status.code(), Some(0));
}

#[test]
fn a_step_that_outlives_its_timeout_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    std::fs::write(&pb, "name: slow\nsteps:\n  - id: nap\n    on: local\n    ssh: sleep 5\n    changes: none\n    timeout: 300ms\n").unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    local: { ansible_connection: local }\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = remedy(
        &[
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--yes",
            "--audit-log",
            dir.path().join("a.jsonl").to_str().unwrap(),
        ],
        dir.path(),
    );
    // A read-only step failed: nothing was changed (7), not "changed, then undone" (2).
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("timed out"), "{}", text(&o));
    assert!(text(&o).contains("nothing was changed"), "{}", text(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

/// A playbook that reads a host variable's attribute that is not there (`cs.rol`): validate
/// cannot know the inventory's values, so it fails when the step renders. `changed_first`
/// puts a real change before it (a file mode), else the read is a detect step.
fn undefined_at_run_time(changed_first: bool) -> String {
    let show = "  - id: show\n    on: local\n    ssh: echo {{ cs.rol }}\n    changes: none\n";
    let mode = "  - id: mode\n    on: local\n    file: { path: \"{{ path }}\", mode: \"0644\" }\n";
    let head = "name: undefined-at-run-time\nparams:\n  path: { required: true }\n";
    if changed_first {
        format!("{head}steps:\n{mode}{show}")
    } else {
        format!("{head}detect:\n{show}steps:\n{mode}")
    }
}

#[test]
fn an_undefined_name_at_run_time_is_exit_4_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    local: { ansible_connection: local, cs: { role: management } }\n",
    )
    .unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = format!("path={}", file.display());
    let log = dir.path().join("a.jsonl");
    let run = |pb: &Path, extra: &str| {
        remedy(
            &[
                "apply",
                pb.to_str().unwrap(),
                "-i",
                inv.to_str().unwrap(),
                "-e",
                &p,
                extra,
                "--audit-log",
                log.to_str().unwrap(),
            ],
            dir.path(),
        )
    };
    let named = "undefined value in `cs.rol`: `cs` has no attribute `rol` (it has: role); \
                 did you mean \"role\"?";
    let pb = dir.path().join("detect.yml");
    std::fs::write(&pb, undefined_at_run_time(false)).unwrap();
    // validate passes: the inventory's values are not its to know
    let o = remedy(&["validate", pb.to_str().unwrap()], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for extra in ["--dry-run", "--yes"] {
        let o = run(&pb, extra);
        assert_eq!(o.status.code(), Some(4), "{extra}: {}", text(&o));
        assert!(text(&o).contains(named), "{extra}: {}", text(&o));
        assert!(text(&o).contains("nothing was changed"), "{}", text(&o));
        assert_eq!(mode(&file), 0o600);
    }
    // After a change, the run still rolls back and says so (exit 2), with the name as reason.
    let pb = dir.path().join("after.yml");
    std::fs::write(&pb, undefined_at_run_time(true)).unwrap();
    let o = run(&pb, "--yes");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(named), "{}", text(&o));
    assert_eq!(mode(&file), 0o600, "mode not restored");
}

#[test]
fn irreversible_steps_are_refused_without_the_flag_and_json_output_is_one_event_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("pb.yml");
    let marker = dir.path().join("gone");
    std::fs::write(
        &pb,
        format!("name: destroy\nsteps:\n  - id: destroy\n    on: local\n    ssh: touch {}\n    irreversible: the old VM cannot come back\n", marker.display()),
    )
    .unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    local: { ansible_connection: local }\n",
    )
    .unwrap();
    let log = dir.path().join("a.jsonl");
    let base = [
        "apply",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--yes",
        "--audit-log",
        log.to_str().unwrap(),
    ];
    let o = remedy(&base, dir.path());
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("--allow-irreversible"), "{}", text(&o));
    assert!(!marker.exists());
    // dry-run shows it without running it
    let mut dry = base.to_vec();
    dry.push("--dry-run");
    let o = remedy(&dry, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!marker.exists());
    let mut allowed = base.to_vec();
    allowed.extend(["--allow-irreversible", "--output", "json"]);
    let o = remedy(&allowed, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(marker.exists());
    let stdout = String::from_utf8_lossy(&o.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run_start");
    assert_eq!(events.last().unwrap()["event"], "run_end");
    assert!(events
        .iter()
        .any(|e| e["event"] == "step_end" && e["irreversible"] == "the old VM cannot come back"));
}

const DISK_REPORT: &str = r#"name: full-disks
description: reports the filesystems used over a limit
params:
  limit: { type: int, default: 80 }
steps:
  - id: usage
    on: local
    ssh: printf 'root 91\nvar 42\nhome 85\n'
    changes: none
  - id: full
    report:
      title: Filesystems over {{ limit }}%
      rows: |
        {% for l in usage.stdout_lines %}{% set p = l | split(" ") | list %}{% if p[1] | int > limit %}- { mount: "/{{ p[0] }}", used: {{ p[1] }} }
        {% endif %}{% endfor %}
      columns: [mount, used]
      facts: { limit: "{{ limit }}%" }
      empty: every filesystem is below {{ limit }}%
"#;

/// A `report` step through the binary: the table under its step's line and exit 8 in a
/// dry-run; the same as one JSON event; exit 0 and the `empty` text when nothing is found; the
/// audit log holds the report and the end's count of findings.
#[test]
fn a_report_prints_its_table_and_a_finding_exits_8() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("full-disks.yml");
    std::fs::write(&pb, DISK_REPORT).unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    local: { ansible_connection: local }\n",
    )
    .unwrap();
    let log = dir.path().join("a.jsonl");
    let base = [
        "apply",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--dry-run",
        "--audit-log",
        log.to_str().unwrap(),
    ];
    let o = remedy_env(&base, dir.path(), &[("COLUMNS", Some("80"))]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("full @ localhost ("))
        .unwrap_or_else(|| panic!("no line for the report step:\n{out}"));
    assert_eq!(
        lines[at + 1..at + 7],
        [
            "    FOUND      Filesystems over 80% @ localhost (2 rows)",
            "      limit: 80%",
            "      mount  used",
            "      -----  ----",
            "      /root  91",
            "      /home  85",
        ],
        "{out}"
    );
    assert!(
        out.ends_with("found problems: 2 finding(s) (full@localhost) (exit 8)\n"),
        "{out}"
    );
    let records = audit_records(&log);
    let report = records.iter().find(|r| r["event"] == "report").unwrap();
    assert_eq!(
        report["rows"][1],
        serde_json::json!({"mount": "/home", "used": 85})
    );
    let end = records.iter().rfind(|r| r["event"] == "run_end").unwrap();
    assert_eq!(
        (end["exit_code"].clone(), end["found"].clone()),
        (8.into(), 2.into())
    );
    let run = report["run"].as_str().unwrap();
    let show = remedy(
        &["audit", "show", run, "--audit-log", log.to_str().unwrap()],
        dir.path(),
    );
    assert!(
        stdout(&show)
            .contains("  report full @ localhost: Filesystems over 80% (2 row(s), found)\n"),
        "{}",
        text(&show)
    );

    // --output json: the report is one event with its rows
    let mut json = base.to_vec();
    json.extend(["--output", "json"]);
    let o = remedy(&json, dir.path());
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let report = events.iter().find(|e| e["event"] == "report").unwrap();
    assert_eq!(report["columns"], serde_json::json!(["mount", "used"]));
    assert_eq!(
        report["rows"],
        serde_json::json!([{"mount": "/root", "used": 91}, {"mount": "/home", "used": 85}])
    );
    assert_eq!(report["found"], true);
    assert_eq!(events.last().unwrap()["found"], 2);

    // nothing over the limit: exit 0, the empty text
    let mut healthy = base.to_vec();
    healthy.extend(["-e", "limit=95"]);
    let o = remedy(&healthy, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        stdout(&o).contains(
            "    report     Filesystems over 95% @ localhost (no rows)\n      limit: 95%\n      every filesystem is below 95%\n"
        ),
        "{}",
        text(&o)
    );
}

/// A plan of reads only needs no confirmation: `apply` without `--yes` and without a terminal
/// runs the report playbook (exit 8, its table) and asks nothing. A plan with a step that may
/// change something still refuses there (exit 1, nothing done), unless `--tags` leaves that
/// step out.
#[test]
fn a_read_only_playbook_runs_without_yes_and_a_mutating_one_still_asks() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    local: { ansible_connection: local }\n",
    )
    .unwrap();
    let log = dir.path().join("a.jsonl");
    let apply = |pb: &Path, more: &[&str]| {
        let mut args = vec![
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
        ];
        args.extend(more);
        remedy(&args, dir.path())
    };
    let report = dir.path().join("full-disks.yml");
    std::fs::write(&report, DISK_REPORT).unwrap();
    let o = apply(&report, &[]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        stdout(&o).ends_with("found problems: 2 finding(s) (full@localhost) (exit 8)\n"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("[y/N]"), "{}", text(&o));
    assert!(!text(&o).contains("--yes"), "{}", text(&o));
    let o = apply(&report, &["-e", "limit=95"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let marker = dir.path().join("touched");
    let change = dir.path().join("change.yml");
    std::fs::write(
        &change,
        format!(
            "name: change\nsteps:\n  - id: look\n    on: local\n    ssh: 'true'\n    changes: none\n  \
             - id: touch\n    on: local\n    ssh: touch {}\n    rollback: rm -f {}\n    tags: [fix]\n",
            marker.display(),
            marker.display()
        ),
    )
    .unwrap();
    let o = apply(&change, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        stderr(&o).lines().last(),
        Some(
            "error: refusing to change anything without confirmation: pass --yes (or --dry-run \
             to see what would change)"
        ),
        "{}",
        text(&o)
    );
    assert!(!marker.exists());
    // --tags leaving the only mutating step out: reads only, no question
    let o = apply(&change, &["--tags", "other"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!marker.exists());
    let o = apply(&change, &["--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(marker.exists());
}

/// `remedy lab` in the foreground, then `remedy api` through the inventory it wrote: the
/// vr-backup-loop zone shows both routers BACKUP; a mutating call is refused; SIGTERM stops
/// the lab cleanly. The secret is printed by the lab (on purpose) but never by `remedy api`.
#[test]
fn lab_then_api_shows_both_routers_backup() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("lab.yml");
    let mut lab = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args([
            "lab",
            "--scenario",
            "vr-backup-loop",
            "--listen",
            "127.0.0.1:0",
            "--write-inventory",
            inv.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the lab");
    let mut banner = String::new();
    let mut secret = String::new();
    let mut out = BufReader::new(lab.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(s) = line.trim().strip_prefix("secret key") {
            secret = s.trim().to_string();
        }
        banner.push_str(&line);
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(banner.contains("/client/api"), "{banner}");
    assert!(secret.len() >= 20, "{banner}");
    let mode = std::fs::metadata(format!("{}.secret", inv.display()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let written = std::fs::read_to_string(&inv).unwrap();
    assert!(
        !written.contains(&secret),
        "no inline secret in the inventory"
    );

    let o = remedy(
        &[
            "api",
            "-i",
            inv.to_str().unwrap(),
            "listRouters",
            "--fields",
            "name,redundantstate",
        ],
        dir.path(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let rows: Vec<&str> = t.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(rows.len(), 2, "{t}");
    assert!(rows.iter().all(|r| r.trim_end().ends_with("BACKUP")), "{t}");
    assert!(!t.contains(&secret));

    let o = remedy(
        &["api", "-i", inv.to_str().unwrap(), "rebootRouter", "id=x"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("read-only calls only"), "{}", text(&o));

    // The routers' SSH, through their hypervisor, with every host key pinned.
    let o = exec_read_only(
        dir.path(),
        "routers",
        inv.to_str().unwrap(),
        &dir.path().join("exec.jsonl"),
        "/opt/cloud/bin/checkrouter.sh",
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert_eq!(t.matches("Status: BACKUP").count(), 2, "{t}");
    let key = std::fs::metadata(format!("{}.id_ed25519", inv.display())).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    let status = Command::new("kill")
        .args(["-TERM", &lab.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = lab.wait().unwrap();
    assert_eq!(end.code(), Some(0));
}

/// An API the zone lacks answers as the server answers an unknown command (401, the generic
/// credentials text), and `remedy lab` says on stderr what it really is, once.
#[test]
fn lab_logs_an_api_it_does_not_implement() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("lab.yml");
    let mut lab = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["lab", "--listen", "127.0.0.1:0", "--write-inventory"])
        .arg(&inv)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the lab");
    let mut out = BufReader::new(lab.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 || line.starts_with("Ctrl-C") {
            break;
        }
    }
    let o = remedy(
        &["api", "-i", inv.to_str().unwrap(), "listSnapshots"],
        dir.path(),
    );
    let t = text(&o);
    assert_ne!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("unable to verify user credentials and/or request signature"),
        "{t}"
    );
    let o = remedy(
        &[
            "api",
            "-i",
            inv.to_str().unwrap(),
            "listApis",
            "name=listRouters",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let status = Command::new("kill")
        .args(["-TERM", &lab.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut err = String::new();
    lab.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(lab.wait().unwrap().code(), Some(0), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("not implemented"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0]
            .trim_end()
            .ends_with("not implemented: listSnapshots"),
        "{err}"
    );
}

#[test]
fn lab_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let o = remedy(&["lab", "--listen", "0.0.0.0:0"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("loopback only"), "{}", text(&o));
}

/// `remedy exec`: an ad-hoc command on the matching hosts, output under each host, audited;
/// nothing runs in a dry-run unless the command is declared read-only; a change needs --yes.
#[test]
fn exec_runs_ad_hoc_commands_audited_and_dry_run_safe() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    a: { ansible_connection: local }\n    b: { ansible_connection: local }\n",
    )
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let marker = dir.path().join("marker");
    let base = |extra: &[&str], cmd: &str| -> Output {
        let mut args = vec![
            "exec",
            "all",
            "-i",
            inv.to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", cmd]);
        remedy(&args, dir.path())
    };
    // read-only: runs on both hosts, each host's output under its line, shell syntax intact
    let o = base(&["--read-only"], "echo out-$((20+22)); echo 'a;b' >&2");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert_eq!(t.matches("out-42").count(), 2, "{t}");
    assert!(t.contains("ok           exec @ a"), "{t}");
    assert!(t.contains("a;b"), "{t}");
    // a change in a dry-run runs nowhere
    let touch = format!("touch {}", marker.display());
    let o = base(&["--dry-run"], &touch);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("will run: touch"), "{}", text(&o));
    assert!(!marker.exists());
    // a change without --yes, off a terminal: refused, nothing run
    let o = base(&[], &touch);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!marker.exists());
    // with --yes it runs, and the audit log has the command
    let o = base(&["--yes"], &touch);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(marker.exists());
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.contains(&touch), "{audit}");
    let o = remedy(
        &["audit", "verify", "--audit-log", log.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// `remedy inventory` with the CloudStack source against the embedded simulator: hypervisors,
/// both routers of the VPC (jumped through their hypervisors), the SSVM and CPVM, the
/// management server, and the groups by zone, VPC and redundant state; then `remedy exec`
/// reaches the system VMs through the simulated hypervisors' SSH.
#[test]
fn inventory_from_the_cloudstack_api() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("cs.yml");
    std::fs::write(
        &inv,
        "all:\n  vars:\n    remedy_cloudstack: { simulator: { scenario: vr-backup-loop } }\n    \
         remedy_cloudstack_inventory: { system_vm_access: jump-host-ssh }\n  children:\n    \
         management:\n      vars: { ansible_user: ops }\n",
    )
    .unwrap();
    let inv = inv.to_str().unwrap();
    let o = remedy(&["inventory", "-i", inv, "--graph"], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for line in [
        "  |--@hypervisors:\n  |  |--kvm01  (root@127.0.0.1:",
        "  |--@redundant_backup:\n  |  |--r-930-VM  (root@169.254.4.182:3922 via kvm01)\n  |  |--r-931-VM  (root@169.254.4.183:3922 via kvm02)\n",
        "  |--@ssvm:\n  |  |--s-1-VM  (root@169.254.1.3:3922 via kvm01)\n",
        "  |--@cpvm:\n  |  |--v-2-VM  (root@169.254.1.4:3922 via kvm02)\n",
        "  |--@management:\n  |  |--mgmt1  (ops@127.0.0.1:",
        "  |--@vpc_web_vpc:\n",
        "  |--@zone_zone1:\n",
    ] {
        assert!(t.contains(line), "{line}\nnot in:\n{t}");
    }

    // `--list` is a dynamic inventory for Ansible, read after remedy exits: refused here,
    // where the zone, its ports and its key file vanish with remedy, saying what lasts.
    let o = remedy(&["inventory", "-i", inv, "--list"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(o.stdout.is_empty());
    let t = text(&o);
    assert!(
        t.contains("--list is refused for an inventory on the embedded simulator")
            && t.contains(
                "`remedy lab --scenario vr-backup-loop --write-inventory lab-live.yml`, then \
                 `remedy inventory -i lab-live.yml --list`"
            ),
        "{t}"
    );

    let o = remedy(&["inventory", "-i", inv, "--host", "r-930-VM"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &r;
    assert_eq!(r["cs"]["redundantstate"], "BACKUP");
    assert_eq!(r["remedy_connection"]["jump"], serde_json::json!(["kvm01"]));
    assert!(r["remedy_connection"]["host_key"]
        .as_str()
        .unwrap()
        .starts_with("pinned SHA256:"));

    let o = remedy(&["inventory", "-i", inv, "--host", "s-1-VM"], dir.path());
    let host: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(host["cs"]["systemvmtype"], "secondarystoragevm");
    let o = remedy(&["inventory", "-i", inv, "--host", "nope"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));

    let audit = dir.path().join("audit.jsonl");
    let o = exec_read_only(dir.path(), "routers:ssvm", inv, &audit, "hostname");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for vm in ["r-930-VM", "r-931-VM", "s-1-VM"] {
        assert!(t.contains(&format!("      {vm}\n")), "{vm} not in {t}");
    }
    // `validate` resolves the same hosts: a target group that only the API makes is known.
    let pb = dir.path().join("state.yml");
    std::fs::write(
        &pb,
        "name: router-state\ndescription: each backup router's state\nsteps:\n  - id: state\n    \
         on: redundant_backup\n    ssh: /opt/cloud/bin/checkrouter.sh\n    changes: none\n",
    )
    .unwrap();
    let o = remedy(&["validate", pb.to_str().unwrap(), "-i", inv], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The run's audit log records what the inventory source read.
    let start: serde_json::Value = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event"]["event"] == "run_start" || r["event"] == "run_start")
        .expect("a run_start record");
    let text = start.to_string();
    assert!(
        text.contains(r#"{"call":"listHosts type=Routing","items":2}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"call":"listRouters","items":2}"#),
        "{text}"
    );
}

/// The shipped lab inventory works as its comment says: the routers of the embedded zone,
/// found through the API and reached through their hypervisors, both BACKUP.
#[test]
fn the_shipped_lab_inventory_reaches_the_routers() {
    let dir = tempfile::tempdir().unwrap();
    let inv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventories/lab.yml");
    let audit = dir.path().join("a.jsonl");
    let o = exec_read_only(
        dir.path(),
        "routers",
        inv.to_str().unwrap(),
        &audit,
        "/opt/cloud/bin/checkrouter.sh",
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert_eq!(t.matches("Status: BACKUP").count(), 2, "{t}");
}

/// `remedy exec PATTERN -i INV --read-only --audit-log AUDIT -- CMD`
fn exec_read_only(
    dir: &std::path::Path,
    pattern: &str,
    inv: &str,
    audit: &std::path::Path,
    cmd: &str,
) -> Output {
    remedy(
        &[
            "exec",
            pattern,
            "-i",
            inv,
            "--read-only",
            "--audit-log",
            audit.to_str().unwrap(),
            "--",
            cmd,
        ],
        dir,
    )
}

/// The SSVM replacement flow: destroySystemVm (CloudStack deploys a new SSVM with a
/// new name and link-local address), a wait that refreshes the inventory, then an SSH check
/// that must reach the new machine through its hypervisor.
const REPLACE_SSVM: &str = r#"name: replace-ssvm
description: recreate the SSVM and check the new one
params:
  recreate: { type: bool, default: true }
detect:
  - id: ssvms
    api: { command: listSystemVms, args: { systemvmtype: secondarystoragevm } }
steps:
  - id: destroy
    when: recreate
    api: { command: destroySystemVm, args: { id: "{{ ssvms.items[0].id }}" } }
    irreversible: CloudStack deploys a new SSVM in its place
  - id: replacement
    when: recreate
    api: { command: listSystemVms, args: { systemvmtype: secondarystoragevm } }
    retries: 40
    delay: 250ms
    until: >-
      result.items | length == 1 and result.items[0].id != ssvms.items[0].id
      and result.items[0].state == "Running" and result.items[0].agentstate == "Up"
    refresh_inventory: true
verify:
  - id: check
    on: ssvm
    ssh: /usr/local/cloud/systemvm/ssvm-check.sh
    changes: none
"#;

fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_refreshed_inventory_reaches_the_replacement_ssvm() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("cs.yml");
    std::fs::write(
        &inv,
        "all:\n  vars:\n    remedy_cloudstack: { simulator: { scenario: ssvm-broken } }\n    \
         remedy_cloudstack_inventory: { system_vm_access: jump-host-ssh }\n",
    )
    .unwrap();
    let pb = dir.path().join("replace-ssvm.yml");
    std::fs::write(&pb, REPLACE_SSVM).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "apply",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        remedy(&args, dir.path())
    };

    // Dry-run: the destroy would change the zone, so the refresh cannot happen and the check's
    // targets are unknown; nothing is called that changes anything.
    let o = apply(&["--dry-run"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("inventory after replacement: not read (dry-run"),
        "{t}"
    );
    assert!(t.contains("unknown      check @ s-1-VM"), "{t}");

    // Apply: the check runs on the replacement, which the inventory did not have at the start.
    let o = apply(&["--yes", "--allow-irreversible"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let records = audit_records(&audit);
    let run = records
        .iter()
        .rev()
        .find(|r| r["event"] == "run_start")
        .unwrap()["run"]
        .clone();
    let refresh = records
        .iter()
        .find(|r| r["event"] == "inventory_refresh" && r["run"] == run)
        .expect("an inventory_refresh record");
    assert_eq!(refresh["status"], "refreshed", "{refresh}");
    assert_eq!(refresh["after_step"], "replacement");
    assert_eq!(
        refresh["removed"],
        serde_json::json!(["s-1-VM"]),
        "{refresh}"
    );
    let added = refresh["added"].as_array().unwrap();
    assert_eq!(added.len(), 1, "{refresh}");
    let new_ssvm = added[0].as_str().unwrap().to_string();
    assert!(
        new_ssvm.starts_with("s-") && new_ssvm.ends_with("-VM"),
        "{new_ssvm}"
    );
    assert_eq!(
        refresh["targets"],
        serde_json::json!([["check", ["s-1-VM"], [new_ssvm.clone()]]])
    );
    assert!(
        refresh["cloudstack_inventory"]["calls"].is_array(),
        "{refresh}"
    );
    let check = records
        .iter()
        .find(|r| r["event"] == "step_end" && r["run"] == run && r["step"] == "check")
        .expect("the check ran");
    assert_eq!(check["target"], new_ssvm.as_str(), "{check}");
    assert_eq!(check["outcome"], "ok", "{check}");
    // The simulator's ssvm-check.sh answers only on a live SSVM, over SSH through its host.
    assert!(
        check["stdout_tail"]
            .as_str()
            .unwrap()
            .contains("Good: Java process is running"),
        "{check}"
    );
    assert!(
        t.contains(&format!("ok           check @ {new_ssvm}")),
        "{t}"
    );

    // When the step that asks for the refresh does not run, nothing is read again and the
    // check runs where the inventory said at the start.
    let o = apply(&["--yes", "--allow-irreversible", "-e", "recreate=false"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("ok           check @ s-1-VM"), "{t}");
    assert!(
        t.contains("inventory after replacement: not needed (the step did not run)"),
        "{t}"
    );
    let o = remedy(
        &["audit", "verify", "--audit-log", audit.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// The README's first command works as written (with `--yes`, since a test has no terminal):
/// the embedded zone's VR backup loop is fixed, and the output ends with the recap and the
/// audit log's place.
#[test]
fn the_readmes_main_command_fixes_the_embedded_zone() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -- apply "))
        .expect("the README's main command");
    let args: Vec<String> =
        shlex::split(line.trim_start_matches("cargo run --release -- ")).expect("shell words");
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["--yes", "--audit-log", audit.to_str().unwrap()]);
    let o = remedy(&argv, &root());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("plan for vr-backup-loop:\n"),
        "{t}"
    );
    assert!(
        t.contains("changed      vlans.guest_vlans @ localhost"),
        "{t}"
    );
    assert!(t.contains("changed      implement @ localhost"), "{t}");
    assert!(t.contains("ok           one_primary @ localhost"), "{t}");
    assert!(t.contains("\nrecap:\n"), "{t}");
    assert!(
        t.contains(&format!("audit log: {} (run ", audit.display())),
        "{t}"
    );
    let o = remedy(
        &["audit", "verify", "--audit-log", audit.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// The change-approval flow through the binary, on the embedded zone (each command starts it
/// afresh from the same scenario): plan to a file and as Markdown, approve, apply the plan;
/// an edited plan is refused with exit 5; a plan and a playbook together are invalid input.
#[test]
fn a_saved_plan_is_approved_and_applied_and_an_edited_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("CHG1.plan.json");
    let audit = dir.path().join("audit.jsonl");
    let (plan_s, audit_s) = (plan.to_str().unwrap(), audit.to_str().unwrap());
    let inv = root().join("inventories/lab.yml");
    let o = remedy(
        &[
            "plan",
            "vr-backup-loop",
            "-i",
            inv.to_str().unwrap(),
            "-e",
            "vpc=web-vpc",
            "-e",
            "vlan_range=1000-1099",
            "-o",
            plan_s,
            "--valid-for",
            "2h",
            "--format",
            "markdown",
            "--audit-log",
            audit_s,
        ],
        &root(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.starts_with("# Change plan: vr-backup-loop"), "{md}");
    assert!(
        md.contains("## Changes") && md.contains("updatePhysicalNetwork"),
        "{md}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let id = saved["id"].as_str().unwrap().to_string();
    assert!(
        md.contains(&format!("`{id}`")),
        "the page names the plan id"
    );

    let o = remedy(&["show-plan", plan_s], &root());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("plan {}", &id[..12])),
        "{}",
        text(&o)
    );

    // Approved from another account than the plan's author's (four eyes).
    let o = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args([
            "approve",
            plan_s,
            "--by",
            "change-board",
            "--ticket",
            "CHG1",
            "--audit-log",
            audit_s,
        ])
        .current_dir(root())
        .env_remove("SUDO_USER")
        .env("USER", "carol")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Edited: refused before anything, with exit 5.
    let edited = dir.path().join("edited.plan.json");
    std::fs::write(
        &edited,
        std::fs::read_to_string(&plan)
            .unwrap()
            .replace("vlan=1000-1099", "vlan=1-4094"),
    )
    .unwrap();
    let o = remedy(
        &[
            "apply",
            "--plan",
            edited.to_str().unwrap(),
            "--yes",
            "--audit-log",
            audit_s,
        ],
        &root(),
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        text(&o).contains("was edited after it was made"),
        "{}",
        text(&o)
    );

    // A plan names its own playbook: clap refuses the pair (invalid input, nothing ran).
    let o = remedy(
        &["apply", "vr-backup-loop", "--plan", plan_s, "--yes"],
        &root(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot be used with"),
        "{}",
        text(&o)
    );
    let o = remedy(&["apply", "vr-backup-loop", "--on-drift", "skip"], &root());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("use it with --plan FILE"), "{}", text(&o));

    let o = remedy(
        &[
            "apply",
            "--plan",
            plan_s,
            "--expect-id",
            &id[..12],
            "--require-approval",
            "--four-eyes",
            "--yes",
            "--audit-log",
            audit_s,
        ],
        &root(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("plan check: the live state is as planned"),
        "{t}"
    );
    let run = audit_records(&audit)
        .into_iter()
        .rev()
        .find(|r| r["event"] == "run_start")
        .unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let o = remedy(&["audit", "show", &run, "--audit-log", audit_s], &root());
    let t = text(&o);
    assert!(t.contains(&format!("applies plan {id}")), "{t}");
    assert!(t.contains("approved by change-board for CHG1"), "{t}");
}

/// An operator's apply against a router someone else holds: exit 6 naming the holder, nothing
/// started; with --wait-lock it waits until the holder lets go, then runs.
#[test]
fn apply_exits_6_on_a_held_target_or_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let audit = dir.path().join("audit.jsonl");
    let inv = root().join("inventories/lab.yml");
    let holder = remedy::lock::Holder::new("20261123T000000Z-daemon01", "daemon job vr");
    let held = remedy::lock::try_all(&state, &["r-931-VM".to_string()], &holder).unwrap();
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "apply",
            "vr-backup-loop",
            "-i",
            inv.to_str().unwrap(),
            "-e",
            "vpc=web-vpc",
            "-e",
            "vlan_range=1000-1099",
            "--yes",
            "--audit-log",
            audit.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        remedy(&args, &root())
    };
    let o = apply(&[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(6), "{t}");
    assert!(
        t.contains("r-931-VM is locked by daemon job vr (pid")
            && t.contains("run 20261123T000000Z-daemon01"),
        "{t}"
    );
    assert!(!audit.exists(), "nothing was started: {t}");
    // `remedy locks` lists it; a local lock cannot be broken (a live process holds it).
    let state_arg = state.to_str().unwrap();
    let o = remedy(&["locks", "--state-dir", state_arg], &root());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("1 lock(s) held (local locks in ")
            && t.contains("  r-931-VM: daemon job vr (pid ")
            && t.contains("run 20261123T000000Z-daemon01"),
        "{t}"
    );
    let o = remedy(
        &[
            "locks",
            "break",
            "r-931-VM",
            "--yes",
            "--state-dir",
            state_arg,
        ],
        &root(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("a local lock is held by a live process"), "{t}");

    // A run that changes the cloud through its API takes the API's lock too.
    let api = remedy::lock::try_all(
        &state,
        &[remedy::app::CLOUDSTACK_LOCK.to_string()],
        &remedy::lock::Holder::new("20261123T000000Z-op2", "bob (remedy apply fix-vlan-range)"),
    )
    .unwrap();
    drop(held);
    let o = apply(&[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(6), "{t}");
    assert!(t.contains("cloudstack-api is locked by bob"), "{t}");
    drop(api);
    let held = remedy::lock::try_all(&state, &["r-931-VM".to_string()], &holder).unwrap();

    // The holder lets go after a second; a run that waits up to 20 s goes ahead.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(1));
        drop(held);
    });
    let o = apply(&["--wait-lock", "20s"]);
    release.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// `remedy daemon` as a process: SIGTERM while a fix is in flight lets it finish (audited to
/// its end, exit 0); two SIGTERMs cancel it and it rolls back; `daemon status` and `daemon
/// reset` read and change the state the daemon left.
#[test]
fn the_daemon_process_stops_cleanly_on_sigterm() {
    for signals in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let audit = dir.path().join("audit.jsonl");
        std::fs::write(
            dir.path().join("zone.yml"),
            "all:\n  vars:\n    remedy_cloudstack: { simulator: { scenario: vr-backup-loop } }\n    \
             remedy_cloudstack_inventory: { system_vm_access: jump-host-ssh }\n",
        )
        .unwrap();
        let jobs = dir.path().join("jobs.yml");
        std::fs::write(
            &jobs,
            "jobs:\n  - name: vr\n    playbook: vr-backup-loop\n    inventory: zone.yml\n    \
             params: { vpc: web-vpc, vlan_range: 1000-1099 }\n    every: 1s\n",
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_remedy"))
            .args([
                "daemon",
                "--jobs",
                jobs.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--audit-log",
                audit.to_str().unwrap(),
            ])
            .current_dir(root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the fix has announced its first change.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read_to_string(&audit).is_ok_and(|t| t.contains("\"step_start\"")) {
            assert!(std::time::Instant::now() < deadline, "no fix started");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for _ in 0..signals {
            let k = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(k.success());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let out = child.wait_with_output().unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{t}");
        let records = audit_records(&audit);
        let end = records
            .iter()
            .find(|r| r["event"] == "run_end")
            .unwrap_or_else(|| panic!("the fix's end is audited: {t}"));
        if signals == 1 {
            assert_eq!(end["exit_code"], 0, "finished: {end}\n{t}");
        } else {
            assert_eq!(end["exit_code"], 2, "rolled back: {end}\n{t}");
        }
        let o = remedy(
            &["audit", "verify", "--audit-log", audit.to_str().unwrap()],
            &root(),
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));

        let o = remedy(
            &[
                "daemon",
                "status",
                "--state-dir",
                state.to_str().unwrap(),
                "--jobs",
                jobs.to_str().unwrap(),
            ],
            &root(),
        );
        let t = text(&o);
        assert_eq!(o.status.code(), Some(0), "{t}");
        assert!(
            t.contains("no daemon running") && t.contains("vr (every 1s, auto mode)"),
            "{t}"
        );
        if signals == 1 {
            assert!(t.contains("cooling down until"), "{t}");
            let o = remedy(
                &[
                    "daemon",
                    "reset",
                    "vr",
                    "--state-dir",
                    state.to_str().unwrap(),
                ],
                &root(),
            );
            assert!(text(&o).contains("vr: reset"), "{}", text(&o));
        }
    }
}

/// Output piped into a reader that went away (`| head`): the command ends quietly, without a
/// panic and a backtrace.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["show", "vr-backup-loop"])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shipped playbooks, by name, as `remedy list` orders them.
const SHIPPED: [&str; 13] = [
    "chmod-catalina-out",
    "fix-vlan-range",
    "host-maintenance-check",
    "host-maintenance-safe",
    "job-triage",
    "readd-ovs-port-flow",
    "reboot-ssvm",
    "recreate-ssvm",
    "restart-agent",
    "restart-dnsmasq",
    "stale-nics",
    "vr-backup-loop",
    "vr-restore-public-link",
];

/// `remedy list` at a given `COLUMNS`: exit 0, one line per shipped playbook, none longer than
/// the width, names in a column as wide as the longest name.
fn list_at(columns: &str) -> Vec<String> {
    let o = remedy_env(
        &["list"],
        &root(),
        &[("COLUMNS", Some(columns)), ("REMEDY_PLAYBOOK_PATH", None)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    let width: usize = columns.parse().unwrap();
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names, SHIPPED, "{lines:#?}");
    for l in &lines {
        assert!(l.chars().count() <= width, "longer than {width}: {l:?}");
        // "vr-restore-public-link" (22) and two spaces: every description starts at column 24.
        assert_eq!(
            l.chars().nth(24).map(char::is_whitespace),
            Some(false),
            "{l:?}"
        );
        assert!(l.chars().take(24).skip(22).all(|c| c == ' '), "{l:?}");
    }
    lines
}

#[test]
fn list_fits_descriptions_to_the_terminal_width() {
    // Narrow: every description is cut at a word, and says so.
    let narrow = list_at("60");
    assert_eq!(
        narrow[9], "restart-dnsmasq         Guest VMs of a network or VPC get…",
        "{narrow:#?}"
    );
    assert!(narrow.iter().all(|l| l.ends_with('…')), "{narrow:#?}");
    // Wide: a first sentence that fits is whole (and ends the line); a longer one is cut.
    let wide = list_at("200");
    assert_eq!(
        wide[9],
        "restart-dnsmasq         Guest VMs of a network or VPC get no DHCP lease and no DNS \
         answers because dnsmasq is not running (or not listening) on its virtual router.",
        "{wide:#?}"
    );
    assert!(
        wide[12].ends_with("fails with \"Nexthop has invalid gateway\"."),
        "{wide:#?}"
    );
    assert!(wide[0].ends_with('…'), "{wide:#?}");
    assert!(wide[0].chars().count() > 150, "{wide:#?}");
}

#[test]
fn list_outside_the_checkout_says_where_it_looked_and_how_to_point_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = remedy_env(&["list"], dir.path(), &[("REMEDY_PLAYBOOK_PATH", None)]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(stdout(&o), "");
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        stderr(&o),
        format!(
            "error: no playbooks found: searched {}/playbooks (does not exist); \
             $REMEDY_PLAYBOOK_PATH is not set\n  help: run remedy from the checkout (the \
             directory holding playbooks/), or point it at your playbook directories: \
             REMEDY_PLAYBOOK_PATH=DIR[:DIR] remedy list\n",
            cwd.display()
        )
    );
    // An empty directory on the path is named too.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = remedy_env(
        &["list"],
        dir.path(),
        &[("REMEDY_PLAYBOOK_PATH", Some(empty.to_str().unwrap()))],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        stderr(&o).contains(&format!("{} (no .yml or .yaml file)", empty.display())),
        "{}",
        text(&o)
    );
    // Pointed at the checkout's playbooks, it lists them from anywhere.
    let shipped = root().join("playbooks");
    let o = remedy_env(
        &["list"],
        dir.path(),
        &[("REMEDY_PLAYBOOK_PATH", Some(shipped.to_str().unwrap()))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o).lines().count(), SHIPPED.len(), "{}", text(&o));
}

#[test]
fn show_separates_parameter_help_and_names_direct_predecessors() {
    let o = remedy(&["show", "vr-backup-loop"], &root());
    let t = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        t.contains("\n  vpc                  string, required — the VPC's name, e.g. web-vpc\n"),
        "{t}"
    );
    assert!(
        t.contains("\n  zone                 string, default \"\" — the zone's name"),
        "{t}"
    );
    let step = |t: &str, id: &str| -> String {
        t.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id))
            .unwrap_or_else(|| panic!("no step {id}: {t}"))
            .to_string()
    };
    let after = |line: &str| -> Vec<String> {
        let (_, list) = line.rsplit_once("] after: ").expect("after:");
        list.split(", ").map(String::from).collect()
    };
    // implement follows the last step of each include, not all 31 before it.
    assert_eq!(
        after(&step(&t, "implement")),
        ["vlans.room", "public_link.route_now"]
    );
    assert_eq!(after(&step(&t, "vlans.zones")), ["checkrouter"]);
    assert_eq!(after(&step(&t, "vpcs")), ["-"]);

    let o = remedy(&["show", "vr-backup-loop", "--transitive"], &root());
    let t = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = after(&step(&t, "implement"));
    assert_eq!(all.len(), 31, "{all:?}");
    assert_eq!(all.first().map(String::as_str), Some("vpcs"));
    assert_eq!(
        all.last().map(String::as_str),
        Some("public_link.route_now")
    );
    assert_eq!(after(&step(&t, "vlans.zones")).len(), 9);

    // The graph: the same edges.
    let into_implement = |args: &[&str]| -> Vec<String> {
        let o = remedy(args, &root());
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        stdout(&o)
            .lines()
            .filter(|l| l.ends_with(" -> \"implement\";"))
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(
        into_implement(&["show", "vr-backup-loop", "--format", "dot"]),
        [
            "\"vlans.room\" -> \"implement\";",
            "\"public_link.route_now\" -> \"implement\";"
        ]
    );
    let edges = into_implement(&["show", "vr-backup-loop", "--format", "dot", "--transitive"]);
    assert_eq!(edges.len(), 31, "{edges:#?}");
    assert!(edges.contains(&"\"vpcs\" -> \"implement\";".to_string()));
}

/// Every subcommand, as `remedy --help` lists them.
const SUBCOMMANDS: [&str; 17] = [
    "apply",
    "plan",
    "show-plan",
    "approve",
    "validate",
    "list",
    "show",
    "rollback",
    "lab",
    "daemon",
    "api",
    "exec",
    "inventory",
    "audit",
    "locks",
    "completions",
    "man",
];

#[test]
fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    let o = remedy(&["completions", "bash"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let bash = stdout(&o);
    assert!(bash.contains("complete -F _remedy"), "{bash}");
    // The subcommands complete after `remedy`, and apply's flags after `remedy apply`.
    let top = format!(
        "opts=\"-h -V --help --version {} help\"",
        SUBCOMMANDS.join(" ")
    );
    assert!(bash.contains(&top), "{top} missing: {bash}");
    for sub in SUBCOMMANDS {
        assert!(bash.contains(&format!("remedy,{sub})")), "{sub}");
    }
    let apply_opts = bash
        .split("        remedy__subcmd__apply)")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.trim_start().starts_with("opts=")))
        .unwrap_or_else(|| panic!("no options for apply: {bash}"));
    assert!(apply_opts.contains(" --dry-run "), "{apply_opts}");
    let o = remedy(&["completions", "zsh"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let zsh = stdout(&o);
    assert!(zsh.starts_with("#compdef remedy\n"), "{zsh}");
    assert!(zsh.contains("apply"), "{zsh}");
    for shell in ["fish", "elvish", "powershell"] {
        let o = remedy(&["completions", shell], dir.path());
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(stdout(&o).contains("remedy"), "{shell}");
    }
    let o = remedy(&["completions", "tcsh"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(stderr(&o).contains("invalid value 'tcsh'"), "{}", text(&o));
}

/// A page's `.TH` line, after roff's quote-string preamble and nothing else.
fn th_line(page: &str) -> String {
    let mut lines = page
        .lines()
        .skip_while(|l| l.starts_with(".ie ") || l.starts_with(".el "));
    lines.next().unwrap_or("").to_string()
}

#[test]
fn man_pages_for_remedy_and_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let o = remedy(&["man"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let page = stdout(&o);
    assert_eq!(
        th_line(&page),
        format!(
            ".TH REMEDY 1  \"remedy {}\" \"remedy manual\"",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(page.contains("\n.SH SUBCOMMANDS\n"), "{page}");
    for sub in SUBCOMMANDS {
        let name = format!("remedy\\-{}(1)", sub.replace('-', "\\-"));
        assert!(page.contains(&name), "{name} missing: {page}");
    }

    let out = dir.path().join("man1");
    let o = remedy(&["man", "--out", out.to_str().unwrap()], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for sub in SUBCOMMANDS {
        let file = format!("remedy-{sub}.1");
        assert!(files.contains(&file), "{file} missing: {files:?}");
        let page = std::fs::read_to_string(out.join(&file)).unwrap();
        assert!(
            th_line(&page).starts_with(&format!(".TH REMEDY-{} 1 ", sub.to_uppercase())),
            "{file}: {}",
            th_line(&page)
        );
    }
    for nested in ["remedy-audit-list.1", "remedy-daemon-status.1", "remedy.1"] {
        assert!(files.contains(&nested.to_string()), "{files:?}");
    }
    assert!(!files.iter().any(|f| f.contains("help")), "{files:?}");
    assert_eq!(stdout(&o).lines().count(), files.len(), "{}", text(&o));
}

#[test]
fn clap_exit_codes_no_arguments_usage_errors_help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    // `remedy` alone: the help on stdout, exit 0 (nothing to do).
    let o = remedy(&[], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stderr(&o), "");
    assert!(stdout(&o).starts_with("Remediation orchestrator for Apache CloudStack operators\n"));
    assert!(
        stdout(&o).contains("\nUsage: remedy <COMMAND>\n"),
        "{}",
        text(&o)
    );
    assert!(stdout(&o).contains("\n  completions  "), "{}", text(&o));
    // An unknown flag, a missing argument: invalid input (4), nothing ran; never 2, which
    // means "failed and rolled back".
    let o = remedy(&["apply", "--bogus"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        stderr(&o).contains("unexpected argument '--bogus'"),
        "{}",
        text(&o)
    );
    let o = remedy(&["rollback"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(stderr(&o).contains("<RUN>"), "{}", text(&o));
    // --help and --version: 0, on stdout.
    let o = remedy(&["rollback", "--help"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        stdout(&o).contains("<RUN>  The run to undo: its id, as `remedy audit list` shows it"),
        "{}",
        text(&o)
    );
    let o = remedy(&["--version"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        stdout(&o),
        format!("remedy {}\n", env!("CARGO_PKG_VERSION"))
    );
    // What remedy itself finds wrong stays 4.
    let o = remedy(&["show", "no-such-playbook"], dir.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

/// `remedy audit list` after a dry-run and an apply on the embedded zone and a read-only exec:
/// a header, then each run with its mode in the command line's words.
#[test]
fn audit_list_has_a_header_and_names_modes_as_commands() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let log_s = log.to_str().unwrap();
    let lab = root().join("inventories/lab.yml");
    let apply = |extra: &str| {
        let o = remedy(
            &[
                "apply",
                "vr-backup-loop",
                "-i",
                lab.to_str().unwrap(),
                "-e",
                "vpc=web-vpc",
                "-e",
                "vlan_range=1000-1099",
                extra,
                "--audit-log",
                log_s,
            ],
            &root(),
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    apply("--dry-run");
    apply("--yes");
    let (_d, _pb, inv, _file) = setup();
    let o = exec_read_only(dir.path(), "local", inv.to_str().unwrap(), &log, "true");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = remedy(&["audit", "list", "--audit-log", log_s], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let cells = |l: &str| -> Vec<String> {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(
        cells(lines[0]),
        ["RUN", "MODE", "PLAYBOOK", "OPERATOR", "RESULT"]
    );
    let rows: Vec<Vec<String>> = lines[1..].iter().map(|l| cells(l)).collect();
    let modes: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(modes, ["dry-run", "apply", "exec --read-only"], "{out}");
    let playbooks: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        playbooks,
        ["vr-backup-loop", "vr-backup-loop", "exec"],
        "{out}"
    );
    assert!(rows.iter().all(|r| r[4] == "ok"), "{out}");
    // Columns line up: MODE starts where each row's mode does.
    let at = lines[0].find("MODE").unwrap();
    for (l, r) in lines[1..].iter().zip(&rows) {
        assert_eq!(l.find(r[1].as_str()), Some(at), "{out}");
    }
}

/// ansible-vault files and values (written by the real ansible-vault) read with Ansible's CLI
/// options; what they decrypt to is masked in the output; a wrong or missing password is
/// invalid input naming the file, and never prints the plaintext.
#[test]
fn inventory_reads_ansible_vault_with_ansible_cli_options() {
    let vault = root().join("orchestrator/src/inventory/testdata/vault");
    let hosts = vault.join("inventory/hosts.yml");
    let hosts = hosts.to_str().unwrap();
    let id = |label: &str, file: &str| format!("{label}@{}", vault.join(file).display());
    let (default, prod) = (id("default", "password"), id("prod", "prod.password"));
    let no_env = [("ANSIBLE_VAULT_PASSWORD_FILE", None)];
    let o = remedy_env(
        &[
            "inventory",
            "-i",
            hosts,
            "--vault-id",
            &default,
            "--vault-id",
            &prod,
            "--host",
            "web1",
        ],
        &root(),
        &no_env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let vars: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(vars["vault_become_pass"], "********");
    assert_eq!(vars["ansible_password_value"], "********");
    assert_eq!(vars["labelled"], "********");
    assert_eq!(vars["ansible_become_password"], "{{ vault_become_pass }}");
    assert_eq!(vars["vault_port"], 2222);
    for plain in ["s3cr3t-Become!", "inline-Pa55word", "labelled-Pa55word"] {
        assert!(!text(&o).contains(plain), "{plain} leaked");
    }

    // --vault-password-file is the default vault id; the 1.2 value needs the prod password.
    let pw = vault.join("password");
    let o = remedy_env(
        &[
            "inventory",
            "-i",
            hosts,
            "--vault-password-file",
            pw.to_str().unwrap(),
            "--list",
        ],
        &root(),
        &no_env,
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(hosts)
            && t.contains("host \"web1\": labelled: cannot decrypt (ansible-vault, vault id prod): wrong vault password"),
        "{t}"
    );
    assert!(
        o.stdout.is_empty() && !t.contains("Pa55word") && !t.contains("s3cr3t"),
        "{t}"
    );

    // No password at all: says how to give one.
    let o = remedy_env(&["inventory", "-i", hosts, "--list"], &root(), &no_env);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("no vault password was given (use --vault-password-file FILE"));

    // $ANSIBLE_VAULT_PASSWORD_FILE, as Ansible reads it, works for the default id: the whole
    // vaulted group_vars file decrypts; validate reads inventories the same way.
    let o = remedy_env(
        &["inventory", "-i", hosts, "--vault-id", &prod, "--graph"],
        &root(),
        &[("ANSIBLE_VAULT_PASSWORD_FILE", Some(pw.to_str().unwrap()))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
