//! The README's promises, held to the binary: its two commands are the ones `.ci/run` runs, and
//! its sample output is what the first command really prints.
//!
//! The sample is what a terminal shows once the run ended (the status area of running steps is
//! gone). It may leave out `ok` lines (a line `...` stands for any number of them), but every
//! other line must be there: the plan, the run's header, every line that is not `ok` (changes,
//! skips, failures, with their detail lines), the recap and the end. Run ids, durations and the
//! audit log's path are normalised. When the output changes, this test fails until the README
//! shows a real run again.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// The fenced block that starts with the line ```` ```LANG ```` at or after `from`: its lines,
/// and the index of the line after it.
fn block(lines: &[&str], lang: &str, from: usize) -> (Vec<String>, usize) {
    let open = format!("```{lang}");
    let start = lines[from..]
        .iter()
        .position(|l| *l == open)
        .map(|i| from + i + 1)
        .unwrap_or_else(|| panic!("README.md: no {open} block"));
    let len = lines[start..]
        .iter()
        .position(|l| l.starts_with("```"))
        .expect("README.md: an unclosed block");
    (
        lines[start..start + len]
            .iter()
            .map(|l| l.to_string())
            .collect(),
        start + len + 1,
    )
}

/// The README's commands: the non-comment lines of its first sh block (as `.ci/run` reads them).
fn commands(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    block(&lines, "sh", 0)
        .0
        .into_iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect()
}

#[test]
fn the_readme_has_the_two_commands_ci_runs() {
    let cmds = commands(&readme());
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(
        cmds[0].starts_with("cargo run --release -- apply "),
        "the first command runs the main job: {}",
        cmds[0]
    );
    assert_eq!(cmds[1], "cargo test --workspace --locked");
    // .ci/run reads the same block and runs both, the first with --dry-run, with --yes, and
    // verbatim on a terminal (answering its question).
    let ci = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    for needle in [
        "' README.md)",
        r#"eval "${commands[0]} --dry-run""#,
        r#"eval "${commands[0]} --yes""#,
        r#"script -qfec "${commands[0]}" "$typescript""#,
        r#"eval "${commands[1]}""#,
    ] {
        assert!(ci.contains(needle), ".ci/run no longer has {needle:?}");
    }
}

/// Run ids, durations and the audit log's path, as placeholders.
fn normalise(line: &str) -> String {
    let run = regex::Regex::new(r"\d{8}T\d{6}Z-[0-9a-f]{8}").unwrap();
    let secs = regex::Regex::new(r"\(\d+\.\ds\)").unwrap();
    let audit = regex::Regex::new(r"^audit log: \S+ \(").unwrap();
    let line = run.replace_all(line, "RUN");
    let line = secs.replace_all(&line, "(T)");
    audit
        .replace(&line, "audit log: AUDIT (")
        .trim_end()
        .to_string()
}

/// Whether a step line is one that may be left out of the sample.
fn is_ok_line(line: &str) -> bool {
    line.trim_start().starts_with("ok ")
}

#[test]
fn the_readme_sample_output_is_a_real_run() {
    let text = readme();
    let cmd = commands(&text).remove(0);
    let args = shlex::split(cmd.strip_prefix("cargo run --release -- ").unwrap())
        .expect("the first command splits like a shell line");
    let all: Vec<&str> = text.lines().collect();
    let sample_at = all
        .iter()
        .position(|l| l.contains("Real output"))
        .expect("README.md: the sample output's introduction (\"Real output ...\")");
    let sample: Vec<String> = block(&all, "text", sample_at).0;

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(&args)
        .arg("--yes")
        .current_dir(repo())
        .env("REMEDY_AUDIT_LOG", dir.path().join("audit.jsonl"))
        .env("REMEDY_STATE_DIR", dir.path().join("state"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Off a terminal, waits print as `  ... step @ target: what` lines; on the terminal the
    // sample shows, they live in the status area that is cleared as the steps end.
    let stdout: Vec<String> = stdout
        .lines()
        .filter(|l| !l.starts_with("  ... "))
        .map(normalise)
        .collect();
    let stderr: Vec<String> = stderr.lines().map(normalise).collect();

    // On a terminal: the plan (stderr), the question, the run (stdout), the audit line (stderr).
    let question = sample
        .iter()
        .position(|l| l.ends_with("? [y/N] y"))
        .expect("the sample shows the question");
    let plan: Vec<String> = sample[..question].iter().map(|l| normalise(l)).collect();
    assert_eq!(
        plan,
        stderr[..plan.len().min(stderr.len())],
        "the plan in README.md differs from the real one:\n{}",
        stderr.join("\n")
    );
    let playbook = &args[1];
    let targets = stdout
        .iter()
        .skip_while(|l| *l != "recap:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .count();
    assert_eq!(
        sample[question],
        format!("apply {playbook} to {targets} target(s)? [y/N] y")
    );
    let last = sample.last().expect("a sample");
    assert_eq!(
        normalise(last),
        *stderr.last().expect("the audit line"),
        "the sample's last line is the audit line"
    );

    let shown: Vec<String> = sample[question + 1..sample.len() - 1]
        .iter()
        .map(|l| normalise(l))
        .collect();
    // The header, the recap and the end, exactly.
    assert_eq!(shown[0], stdout[0], "the run's header");
    let recap = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .skip_while(|l| !l.is_empty())
            .cloned()
            .collect()
    };
    assert_eq!(
        recap(&shown),
        recap(&stdout),
        "the recap:\n{}",
        stdout.join("\n")
    );
    // The steps: every shown line happened (each once), with its detail lines under it, and
    // every line of the real run that is not `ok` is shown.
    let steps = |lines: &[String]| -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for l in lines[1..].iter().take_while(|l| !l.is_empty()) {
            if l.starts_with("      ") {
                out.last_mut()
                    .expect("a detail under a step")
                    .push(l.clone());
            } else if l.trim() != "..." {
                out.push(vec![l.clone()]);
            }
        }
        out
    };
    let mut real = steps(&stdout);
    for s in steps(&shown) {
        let at = real.iter().position(|r| *r == s).unwrap_or_else(|| {
            panic!(
                "README.md shows {s:?}, which the real run did not print:\n{}",
                stdout.join("\n")
            )
        });
        real.remove(at);
    }
    let left: Vec<&Vec<String>> = real.iter().filter(|r| !is_ok_line(&r[0])).collect();
    assert!(
        left.is_empty(),
        "README.md leaves out lines that are not `ok`: {left:?}"
    );
}
