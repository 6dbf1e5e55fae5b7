//! What the terminal shows while steps run, through the real binary: on a pseudo-terminal, the
//! running step with its API command and async job id and a ticking elapsed time before the
//! step's line, and the area gone when the recap prints; with `--output json` or a pipe, no
//! drawing at all.
//!
//! The slow job comes from the embedded simulator: the tests write a scenario file (the
//! shipped `vr-backup-loop` zone) whose faults make `updatePhysicalNetwork` jobs take 4 s, and
//! an inventory whose `remedy_cloudstack.simulator.scenario` names it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("orchestrator/ has a parent")
        .to_path_buf()
}

/// A scenario file like the shipped `vr-backup-loop`, with `updatePhysicalNetwork` jobs taking
/// `job_ms`, and an inventory for it. Returns the inventory's path.
fn slow_zone(dir: &Path, job_ms: u64) -> PathBuf {
    let shipped = std::fs::read_to_string(root().join("simulator/scenarios/vr-backup-loop.yml"))
        .expect("the shipped scenario");
    let scenario = dir.join("slow-vlan.yml");
    std::fs::write(
        &scenario,
        format!(
            "{}\nfaults: {{ slow_jobs: [updatePhysicalNetwork], slow_job_ms: {job_ms} }}\n",
            shipped
                .replace("name: vr-backup-loop", "name: slow-vlan")
                .trim_end()
        ),
    )
    .unwrap();
    let inventory = dir.join("inv.yml");
    std::fs::write(
        &inventory,
        format!(
            "all:\n  vars:\n    remedy_cloudstack: {{ simulator: {{ scenario: {} }} }}\n    \
             remedy_cloudstack_inventory: {{ system_vm_access: jump-host-ssh }}\n",
            scenario.display()
        ),
    )
    .unwrap();
    inventory
}

/// `remedy apply vr-backup-loop` on the slow zone, with its own audit log and state dir.
fn apply(dir: &Path, inventory: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remedy"));
    cmd.args(["apply", "vr-backup-loop", "-i"])
        .arg(inventory)
        .args(["-e", "vpc=web-vpc", "-e", "vlan_range=1000-1099", "--yes"])
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .args(extra)
        .current_dir(root())
        .env_remove("REMEDY_AUDIT_LOG")
        .env_remove("REMEDY_INVENTORY")
        .env("REMEDY_STATE_DIR", dir.join("state"))
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` with stdout and stderr on a pseudo-terminal of 40x160; returns what the
/// terminal received (raw bytes, with the times they came), and the exit code.
fn on_a_terminal(mut cmd: Command) -> (Vec<(Duration, Vec<u8>)>, Option<i32>) {
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&size, None).expect("a pseudo-terminal");
    let out = pty.slave.try_clone().expect("dup the pty");
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(pty.slave));
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run remedy");
    // The parent's copies of the slave are gone with `cmd`: reading ends (EIO) once the
    // child has closed its own.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut chunks = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => chunks.push((started.elapsed(), buf[..n].to_vec())),
        }
    }
    let status = child.wait().expect("remedy ends");
    (chunks, status.code())
}

/// The word after `needle`'s first occurrence.
fn after<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    let at = text.find(needle)? + needle.len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '\x1b')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn a_terminal_shows_the_running_step_with_its_job_and_a_ticking_clock() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = slow_zone(dir.path(), 4000);
    let (chunks, code) = on_a_terminal(apply(dir.path(), &inventory, &[]));
    let screen: String = chunks
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(code, Some(0), "{screen}");
    let step_line = screen
        .find("changed      vlans.guest_vlans @ localhost")
        .unwrap_or_else(|| panic!("no line for the slow step:\n{screen}"));
    let before = &screen[..step_line];
    // While it ran: the API command and its job id, the elapsed seconds going up.
    let status = "vlans.guest_vlans @ localhost: updatePhysicalNetwork job ";
    let jobid = after(before, status)
        .unwrap_or_else(|| panic!("no job shown before the step ended:\n{before}"));
    assert!(
        jobid.len() >= 8 && jobid.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
        "job id {jobid:?}"
    );
    let ticks: Vec<&str> = ["1s", "2s", "3s"]
        .into_iter()
        .filter(|t| before.contains(&format!(" {t} {status}{jobid}")))
        .collect();
    assert_eq!(ticks, ["1s", "2s", "3s"], "{before}");
    // The area is drawn with escape sequences and spinner frames: a terminal's, not a log's.
    assert!(before.contains('\x1b'), "{before}");
    // Finished lines and the recap print as ever; nothing is drawn after the recap.
    assert!(
        screen.contains("remedy vr-backup-loop (apply, run "),
        "{screen}"
    );
    assert!(
        screen.contains("changed      implement @ localhost"),
        "{screen}"
    );
    let recap = screen.find("recap:").expect("a recap");
    assert!(!screen[recap..].contains(" @ localhost: "), "{screen}");
    assert!(screen[recap..].contains("localhost                changed=2"));
}

#[test]
fn json_on_a_terminal_is_one_event_per_line_and_draws_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = slow_zone(dir.path(), 2000);
    let (chunks, code) = on_a_terminal(apply(dir.path(), &inventory, &["--output", "json"]));
    let all: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
    let text = String::from_utf8(all).expect("UTF-8");
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains('\x1b'), "{text}");
    // stdout: the events; stderr (the same terminal here): the plan and the audit log's place
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let named = |event: &str, step: &str| {
        events
            .iter()
            .filter(|e| e["event"] == event && e["step"] == step)
            .cloned()
            .collect::<Vec<_>>()
    };
    // the job the slow step waited for is an event of its own, with its id
    let jobs = named("progress", "vlans.guest_vlans");
    assert_eq!(jobs.len(), 1, "{text}");
    let jobid = jobs[0]["jobid"].as_str().expect("a jobid");
    assert_eq!(
        jobs[0]["message"],
        format!("updatePhysicalNetwork job {jobid}")
    );
    // read-only steps say what they run
    let start = named("step_start", "vpcs");
    assert_eq!(start.len(), 1, "{text}");
    assert_eq!(start[0]["mutating"], false);
    assert_eq!(start[0]["action"], "listVPCs listall=true name=web-vpc");
    assert_eq!(events.last().unwrap()["event"], "run_end", "{text}");
}

#[test]
fn piped_output_has_the_lines_and_no_drawing() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = slow_zone(dir.path(), 2000);
    let o = apply(dir.path(), &inventory, &[])
        .output()
        .expect("run remedy");
    let stdout = String::from_utf8(o.stdout).expect("UTF-8");
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(!stdout.contains('⠋') && !stdout.contains('\r'), "{stdout}");
    assert!(
        stdout.starts_with("remedy vr-backup-loop (apply, run "),
        "{stdout}"
    );
    // a log shows the job the step waited for, then the step's line
    let job = stdout
        .find("  ... vlans.guest_vlans @ localhost: updatePhysicalNetwork job ")
        .unwrap_or_else(|| panic!("{stdout}"));
    let line = stdout
        .find("  changed      vlans.guest_vlans @ localhost (")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(job < line, "{stdout}");
    assert!(stdout.contains("\nrecap:\n"), "{stdout}");
    // the audit log did not grow by the read-only steps' starts nor the progress
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains("\"progress\""), "{audit}");
    assert!(
        audit
            .lines()
            .filter(|l| l.contains("\"step_start\""))
            .all(|l| l.contains("\"mutating\":true")),
        "{audit}"
    );
}
