//! The secret canary: one secret value, `S3cr3t-Zebra-991`, goes into remedy every way a secret
//! can (a declared `secret: true` parameter by `-e`, `--secret NAME=env:VAR`, `--secret
//! NAME=file:PATH`, `-e @FILE`, a parameter secret by its name, `exec --secret`, a daemon job's
//! parameter) and through every command path: apply (human and JSON), a dry-run, plan -o,
//! show-plan in its three formats, approve, apply --plan, exec, a failing step rolled back,
//! rollback RUN, audit list/show/verify, the daemon with a command notification and /metrics,
//! and the error classes (bad type, bad pattern, choices, missing parameter, a malformed `-e`,
//! a literal `--secret`, a world-readable `-e @FILE`). The playbook derives it with `| upper`,
//! `| lower`, `| reverse`, a slice, concatenation, a `set:` fact and an include's parameter.
//!
//! Then every byte written is searched (stdout and stderr of every command, every file under
//! the state directory, HOME, the audit log's directory, plan files, notification output) for
//! the canary and its transforms: upper, lower, reversed, base64, hex and URL-encoded. Any hit
//! fails the test, naming the command or file and the form found. The files this test writes
//! itself as inputs (the `-e @FILE`, the `--secret` file, the jobs file) are not searched.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::{text, Dirs, Lab};

const CANARY: &str = "S3cr3t-Zebra-991";

const PLAYBOOK: &str = r#"name: canary
description: a secret canary derived every way a template can
params:
  password:
    secret: true
    required: true
    help: the canary
  fail:
    type: bool
    default: false
vars:
  shout: "{{ password | upper }}"
  whisper: "{{ password | lower }}"
  joined: "pre-{{ password }}-post"
  tail: "{{ password[3:] }}"
detect:
  - id: look
    on: mgmt1
    ssh: echo {{ shout }} {{ whisper }} {{ joined }} {{ password | reverse }} {{ tail }}
    changes: none
steps:
  - id: facts
    set:
      rev: "{{ password | reverse }}"
      heard: "{{ look.stdout | lower }}"
  - id: mark
    on: mgmt1
    ssh: echo {{ rev }} {{ shout }} {{ heard }}
    rollback: echo undo {{ whisper }} {{ rev }}
  - id: child
    include: ./canary-child.yml
    params: { word: "{{ password }}" }
    needs: [mark]
  - id: breaks
    on: mgmt1
    when: fail
    ssh: "false {{ shout }} {{ rev }}"
    no_rollback: it fails before it changes anything
    needs: [child]
"#;

const CHILD: &str = r#"name: canary-child
description: included with the canary as a parameter that is not declared secret
params:
  word:
    required: true
vars:
  low: "{{ word | lower }}"
steps:
  - id: echo
    on: mgmt1
    ssh: echo child {{ low }} {{ word | upper }}
    rollback: echo child undo {{ low }}
"#;

/// Type, pattern and choices checks of secret parameters (declared, and by name).
const CHECKED: &str = r#"name: canary-checked
description: secret parameters with checks that the canary fails
params:
  pin:
    type: int
    secret: true
  code:
    secret: true
    pattern: "[0-9]+"
  level:
    secret: true
    choices: [low, high]
  db_token:
    type: int
steps:
  - id: noop
    on: mgmt1
    ssh: echo checked
    changes: none
"#;

/// Every form of the canary that must never be written.
fn forms() -> Vec<(&'static str, String)> {
    let b = CANARY.as_bytes();
    let std = base64::engine::general_purpose::STANDARD;
    vec![
        ("literal", CANARY.to_string()),
        ("upper", CANARY.to_uppercase()),
        ("lower", CANARY.to_lowercase()),
        ("reversed", CANARY.chars().rev().collect()),
        ("sliced", CANARY[3..].to_string()),
        ("base64", std.encode(b).trim_end_matches('=').to_string()),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        ),
        ("hex", b.iter().map(|x| format!("{x:02x}")).collect()),
        ("HEX", b.iter().map(|x| format!("{x:02X}")).collect()),
        (
            "url-encoded",
            CANARY
                .bytes()
                .map(|c| match c {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (c as char).to_string(),
                    _ => format!("%{c:02X}"),
                })
                .collect(),
        ),
    ]
}

/// Everything the test saw written: (where, bytes); and what did not go as expected (kept, not
/// asserted at once, so one run of the test lists every problem with every leak).
#[derive(Default)]
struct Written {
    items: Vec<(String, Vec<u8>)>,
    problems: Vec<String>,
}

impl Written {
    fn output(&mut self, what: &str, o: &Output) {
        self.items
            .push((format!("{what}: stdout"), o.stdout.clone()));
        self.items
            .push((format!("{what}: stderr"), o.stderr.clone()));
    }

    /// Every file under `dir`, but the inputs in `skip`.
    fn files(&mut self, dir: &Path, skip: &[PathBuf]) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if skip.contains(&path) {
                continue;
            }
            if path.is_dir() {
                self.files(&path, skip);
            } else if let Ok(bytes) = std::fs::read(&path) {
                self.items.push((path.display().to_string(), bytes));
            }
        }
    }

    /// Every (where, form) hit.
    fn leaks(&self) -> Vec<String> {
        let mut hits = Vec::new();
        for (what, bytes) in &self.items {
            let text = String::from_utf8_lossy(bytes);
            for (form, needle) in forms() {
                if text.contains(&needle) {
                    let at = text.find(&needle).unwrap();
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(60)
                        .map_or(0, |(i, _)| i);
                    let to = (at + needle.len() + 40).min(text.len());
                    let to = (to..=text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap();
                    hits.push(format!("{what}: {form}: ...{}...", &text[from..to]));
                }
            }
        }
        hits
    }
}

/// `remedy ARGS` from the directory the playbooks are in, with `env` set; recorded.
fn run(d: &Dirs, w: &mut Written, what: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = d.command(&d.apply_dir, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.stdin(Stdio::null()).output().expect("run remedy");
    w.output(what, &o);
    o
}

/// Records a problem unless `o` exited with `code`.
fn expect(w: &mut Written, o: &Output, code: i32, what: &str) {
    if o.status.code() != Some(code) {
        w.problems.push(format!(
            "{what}: exit {:?}, expected {code}: {}",
            o.status.code(),
            text(o)
        ));
    }
}

/// Records a problem unless `o`'s output contains `want`.
fn expect_text(w: &mut Written, o: &Output, want: &str, what: &str) {
    if !text(o).contains(want) {
        w.problems
            .push(format!("{what}: no {want:?} in the output: {}", text(o)));
    }
}

/// The run id the last `run_start` of `playbook` has in the audit log.
fn last_run(d: &Dirs, playbook: &str) -> String {
    d.last_run(playbook)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the daemon");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// A webhook receiver on loopback: every request it gets (head and body), as it came.
fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            // Read until the body is complete (Content-Length) or the client pauses.
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            keep.lock().unwrap().push(req);
        }
    });
    (url, got)
}

/// The daemon with one job whose parameter is the canary, a command and a webhook
/// notification, /metrics.
fn daemon(d: &Dirs, w: &mut Written, inputs: &mut Vec<PathBuf>) {
    let notes = d.apply_dir.join("notified");
    std::fs::create_dir_all(&notes).unwrap();
    let (hook, hooked) = webhook_receiver();
    let port = free_port();
    let jobs = d.apply_dir.join("jobs.yml");
    std::fs::write(
        &jobs,
        format!(
            "jobs:\n  - name: canary\n    playbook: {pb}\n    inventory: {inv}\n    every: 1s\n    \
             params: {{ password: {CANARY} }}\n    notify:\n      command: 'printf \"%s\\n%s\\n\" \
             \"$REMEDY_STATUS\" \"$REMEDY_REPORT\" > {notes}/$REMEDY_EVENT-$$.txt'\n      \
             webhook: {hook}\n",
            pb = d.apply_dir.join("canary.yml").display(),
            inv = d.inventory().display(),
            notes = notes.display(),
        ),
    )
    .unwrap();
    inputs.push(jobs.clone());
    let addr = format!("127.0.0.1:{port}");
    let child = d
        .command(
            &d.apply_dir,
            &[
                "daemon",
                "--jobs",
                jobs.to_str().unwrap(),
                "--listen",
                &addr,
            ],
        )
        .env("REMEDY_STATE_DIR", &d.state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let deadline = Instant::now() + Duration::from_secs(60);
    let notified = loop {
        let found: Vec<PathBuf> = std::fs::read_dir(&notes)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the notification command finish writing.
    std::thread::sleep(Duration::from_millis(500));
    let metrics = http_get(&addr, "/metrics");
    w.items
        .push(("daemon /metrics".into(), metrics.into_bytes()));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let o = child.wait_with_output().expect("the daemon ends");
    w.output("daemon", &o);
    let bodies = hooked.lock().unwrap().clone();
    if bodies.is_empty() {
        w.problems
            .push("the daemon's webhook received no notification".into());
    }
    for (i, b) in bodies.into_iter().enumerate() {
        w.items
            .push((format!("daemon webhook notification {i}"), b));
    }
    let fixed = notified.iter().any(|p| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        name.starts_with("fix-")
    });
    if !fixed {
        let seen: Vec<String> = notified
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect();
        w.problems.push(format!(
            "the daemon notified no fix within 60 s (notified: {seen:?}): {}",
            text(&o)
        ));
    }
}

#[test]
fn no_byte_written_holds_the_canary_in_any_form() {
    let d = Dirs::new();
    let lab = Lab::start("healthy", &d.inventory(), &d.home);
    let mut w = Written::default();
    let mut inputs: Vec<PathBuf> = Vec::new();
    for (name, body) in [
        ("canary.yml", PLAYBOOK),
        ("canary-child.yml", CHILD),
        ("canary-checked.yml", CHECKED),
    ] {
        std::fs::write(d.apply_dir.join(name), body).unwrap();
    }
    let secret_file = d.apply_dir.join("canary.secret");
    std::fs::write(&secret_file, format!("{CANARY}\n")).unwrap();
    let vars_file = d.apply_dir.join("vars.yml");
    std::fs::write(&vars_file, format!("password: {CANARY}\n")).unwrap();
    let open_vars = d.apply_dir.join("open-vars.yml");
    std::fs::write(&open_vars, format!("password: {CANARY}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&secret_file, 0o600).unwrap();
        mode(&vars_file, 0o600).unwrap();
        mode(&open_vars, 0o644).unwrap();
    }
    inputs.extend([secret_file.clone(), vars_file.clone(), open_vars.clone()]);
    let env = [("CANARY_ENV", CANARY)];
    let inv = "lab-live.yml";
    let pw_arg = format!("password={CANARY}");
    let pw_file = format!("password=file:{}", secret_file.display());
    let vars_arg = format!("@{}", vars_file.display());

    // apply, each way in, human and JSON
    let o = run(
        &d,
        &mut w,
        "apply -e (json)",
        &[
            "apply",
            "canary.yml",
            "-i",
            inv,
            "--yes",
            "-e",
            &pw_arg,
            "--output",
            "json",
        ],
        &[],
    );
    expect(&mut w, &o, 0, "apply -e");
    let applied = last_run(&d, "canary");
    let o = run(
        &d,
        &mut w,
        "apply --secret env",
        &[
            "apply",
            "canary.yml",
            "-i",
            inv,
            "--yes",
            "--secret",
            "password=env:CANARY_ENV",
        ],
        &env,
    );
    expect(&mut w, &o, 0, "apply --secret env");
    let o = run(
        &d,
        &mut w,
        "apply -e @file",
        &["apply", "canary.yml", "-i", inv, "--yes", "-e", &vars_arg],
        &[],
    );
    expect(&mut w, &o, 0, "apply -e @file");
    let o = run(
        &d,
        &mut w,
        "dry-run --secret file",
        &[
            "apply",
            "canary.yml",
            "-i",
            inv,
            "--dry-run",
            "--secret",
            &pw_file,
            "--output",
            "json",
        ],
        &[],
    );
    expect(&mut w, &o, 0, "dry-run");
    // a failing step: the run is rolled back
    let o = run(
        &d,
        &mut w,
        "apply failing",
        &[
            "apply",
            "canary.yml",
            "-i",
            inv,
            "--yes",
            "-e",
            &pw_arg,
            "-e",
            "fail=true",
        ],
        &[],
    );
    expect(&mut w, &o, 2, "apply with a failing step");
    // rollback RUN of the first apply
    let o = run(
        &d,
        &mut w,
        "rollback RUN",
        &["rollback", &applied, "--yes", "-i", inv],
        &[],
    );
    // Its undo commands were recorded with the secret masked: they are not replayed (the mask
    // would run as a shell glob), each is reported as left for a person.
    expect(&mut w, &o, 3, "rollback RUN");
    expect_text(&mut w, &o, "undo it by hand", "rollback RUN");

    // plan, show-plan, approve, apply --plan
    let plan_file = d.apply_dir.join("canary.plan.json");
    let plan_path = plan_file.to_str().unwrap();
    let o = run(
        &d,
        &mut w,
        "plan -o",
        &[
            "plan",
            "canary.yml",
            "-i",
            inv,
            "--secret",
            "password=env:CANARY_ENV",
            "-o",
            plan_path,
            "--format",
            "markdown",
        ],
        &env,
    );
    expect(&mut w, &o, 0, "plan -o");
    for format in ["human", "markdown", "json"] {
        let o = Command::new(env!("CARGO_BIN_EXE_remedy"))
            .args(["show-plan", plan_path, "--format", format])
            .env("HOME", &d.home)
            .output()
            .expect("run remedy show-plan");
        w.output(&format!("show-plan {format}"), &o);
        expect(&mut w, &o, 0, "show-plan");
    }
    let o = run(
        &d,
        &mut w,
        "approve",
        &["approve", plan_path, "--by", "alice", "--ticket", "CHG1"],
        &[],
    );
    expect(&mut w, &o, 0, "approve");
    let o = run(
        &d,
        &mut w,
        "apply --plan",
        &[
            "apply",
            "--plan",
            plan_path,
            "--yes",
            "--secret",
            "password=env:CANARY_ENV",
            "--require-approval",
        ],
        &env,
    );
    expect(&mut w, &o, 0, "apply --plan");

    // exec
    let o = run(
        &d,
        &mut w,
        "exec --secret",
        &[
            "exec",
            "mgmt1",
            "-i",
            inv,
            "--yes",
            "--secret",
            "PW=env:CANARY_ENV",
            "--",
            "echo",
            "{{ PW }}",
            "done",
        ],
        &env,
    );
    expect(&mut w, &o, 0, "exec --secret");
    expect_text(&mut w, &o, "******** done", "exec --secret");

    // error classes
    let pin = format!("pin={CANARY}");
    let code = format!("code={CANARY}");
    let level = format!("level={CANARY}");
    let token = format!("db_token={CANARY}");
    for (what, args, want) in [
        (
            "bad type",
            vec![
                "apply",
                "canary-checked.yml",
                "-i",
                inv,
                "--yes",
                "-e",
                pin.as_str(),
            ],
            "expected an integer",
        ),
        (
            "bad pattern",
            vec![
                "apply",
                "canary-checked.yml",
                "-i",
                inv,
                "--yes",
                "-e",
                code.as_str(),
            ],
            "does not match pattern",
        ),
        (
            "not a choice",
            vec![
                "apply",
                "canary-checked.yml",
                "-i",
                inv,
                "--yes",
                "-e",
                level.as_str(),
            ],
            "must be one of",
        ),
        (
            "bad type, secret by name",
            vec![
                "apply",
                "canary-checked.yml",
                "-i",
                inv,
                "--yes",
                "-e",
                token.as_str(),
            ],
            "expected an integer",
        ),
        (
            "missing parameter",
            vec!["apply", "canary.yml", "-i", inv, "--yes"],
            "missing required parameter",
        ),
    ] {
        let o = run(&d, &mut w, what, &args, &[]);
        expect(&mut w, &o, 4, what);
        expect_text(&mut w, &o, want, what);
    }
    let malformed = format!("password {CANARY}");
    let o = run(
        &d,
        &mut w,
        "malformed -e",
        &["apply", "canary.yml", "-i", inv, "-e", &malformed],
        &[],
    );
    expect(&mut w, &o, 4, "malformed -e");
    let literal = format!("password={CANARY}");
    let o = run(
        &d,
        &mut w,
        "literal --secret",
        &["apply", "canary.yml", "-i", inv, "--secret", &literal],
        &[],
    );
    expect(&mut w, &o, 4, "literal --secret");
    let open_arg = format!("@{}", open_vars.display());
    let o = run(
        &d,
        &mut w,
        "world-readable -e @file",
        &["apply", "canary.yml", "-i", inv, "-e", &open_arg],
        &[],
    );
    expect(&mut w, &o, 4, "world-readable -e @file");
    expect_text(&mut w, &o, "chmod 600", "world-readable -e @file");

    // the daemon, with a command and a webhook notification, and /metrics
    daemon(&d, &mut w, &mut inputs);

    // a panic in a test build, its message holding the secret (and a derived form)
    let panic_text = format!(
        "the password is {CANARY}, shouted {}",
        CANARY.to_uppercase()
    );
    let o = run(
        &d,
        &mut w,
        "a panic",
        &["apply", "canary.yml", "-i", inv, "--yes", "-e", &pw_arg],
        &[("REMEDY_TEST_PANIC", &panic_text)],
    );
    expect(&mut w, &o, 101, "a panic");
    expect_text(
        &mut w,
        &o,
        "remedy: internal error (a bug; please report it)",
        "a panic",
    );
    expect_text(&mut w, &o, "the password is ********", "a panic");

    // the audit log, read back
    let o = run(&d, &mut w, "audit list", &["audit", "list"], &[]);
    expect(&mut w, &o, 0, "audit list");
    let runs: Vec<String> = d
        .records()
        .iter()
        .filter(|r| r["event"] == "run_start")
        .filter_map(|r| r["run"].as_str().map(str::to_string))
        .collect();
    if runs.len() < 8 {
        w.problems.push(format!(
            "expected 8 runs or more in the audit log: {runs:?}"
        ));
    }
    for r in &runs {
        let o = run(
            &d,
            &mut w,
            &format!("audit show {r}"),
            &["audit", "show", r],
            &[],
        );
        expect(&mut w, &o, 0, "audit show");
    }
    d.verify();
    lab.stop();

    // every byte written
    w.files(&d.state, &inputs);
    w.files(&d.home, &inputs);
    w.files(d.audit.parent().unwrap(), &inputs);
    w.files(&d.apply_dir, &inputs);
    w.files(&d.rollback_dir, &inputs);
    let leaks = w.leaks();
    assert!(
        leaks.is_empty() && w.problems.is_empty(),
        "the canary leaked {} time(s) (of {} outputs and files searched):\n{}\n\n\
         {} command(s) did not do what they should:\n{}",
        leaks.len(),
        w.items.len(),
        leaks.join("\n"),
        w.problems.len(),
        w.problems.join("\n---\n")
    );
}

const PROMPTED: &str = r#"name: prompted
description: a required secret, asked for on the terminal when not given
params:
  token: { required: true, secret: true, help: "the API token" }
steps:
  - id: shout
    on: management
    ssh: echo {{ token | upper }}
    changes: none
    failed_when: result.stdout != (token | upper)
"#;

/// A required secret that was not given is asked for on a terminal (a real pty, from
/// `script`), with echo off: the run gets the value (its step checks it), and nothing the
/// terminal showed, nor the audit log, holds it in any form.
#[test]
fn a_secret_typed_at_the_prompt_is_not_echoed() {
    if Command::new("script").arg("--version").output().is_err() {
        cloudstack_sim::testing::skip(
            "canary (prompt)",
            "`script` (util-linux) is not installed: it gives the test a terminal",
        );
        return;
    }
    let d = Dirs::new();
    let lab = Lab::start("healthy", &d.inventory(), &d.home);
    std::fs::write(d.apply_dir.join("prompted.yml"), PROMPTED).unwrap();
    let remedy = env!("CARGO_BIN_EXE_remedy");
    let line = format!(
        "{remedy} apply ./prompted.yml -i lab-live.yml --yes --audit-log {}",
        d.audit.display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .current_dir(&d.apply_dir)
        .env("HOME", &d.home)
        .env("REMEDY_STATE_DIR", &d.state)
        .env("TERM", "dumb")
        .env_remove("REMEDY_AUDIT_LOG")
        .env_remove("REMEDY_INVENTORY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start script");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = tx.send(buf[..n].to_vec());
                }
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("token (the API token): ") {
        assert!(
            Instant::now() < deadline,
            "no prompt within 60 s: {}",
            String::from_utf8_lossy(&seen)
        );
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.extend(chunk);
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{CANARY}\n").as_bytes()).unwrap();
    let status = child.wait().expect("script ends");
    drop(stdin);
    reader.join().unwrap();
    while let Ok(chunk) = rx.try_recv() {
        seen.extend(chunk);
    }
    let shown = String::from_utf8_lossy(&seen).to_string();
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(shown.contains("ok (exit 0)"), "{shown}");
    let audit = std::fs::read_to_string(&d.audit).unwrap();
    for (form, text) in forms() {
        assert!(
            !shown.contains(&text),
            "the terminal showed the {form} form:\n{shown}"
        );
        assert!(
            !audit.contains(&text),
            "the audit log holds the {form} form"
        );
    }
    d.verify();
    lab.stop();
}
