//! The house rules, checked on every test run: no import circle between the files of the
//! orchestrator or the simulator (`tools/import-cycles`), and no source file with more than
//! [`MAX_LINES`] lines of non-test code.
//!
//! Non-test code is a file's lines before a `#[cfg(test)]` that opens an inline `mod ... {` (the
//! rule `tools/import-cycles` uses too); `tests.rs` files and files under a `tests/` directory
//! are test code and not counted.
//!
//! Work in progress is listed in [`ALLOWED_LONG`] and [`ALLOWED_CIRCLES`], each entry with its
//! reason. An entry that is no longer needed fails the test too, so the lists only shrink: remove
//! it when the file is split or the circle untied.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The most lines of non-test code a source file may have.
const MAX_LINES: usize = 1000;

/// The source trees checked, relative to the workspace root.
const TREES: [&str; 2] = ["orchestrator/src", "simulator/src"];

/// Files still over [`MAX_LINES`] while someone splits them (path from the workspace root).
const ALLOWED_LONG: &[(&str, &str)] = &[];

/// Import circles still there while someone unties them: a circle `tools/import-cycles` reports
/// is allowed when every one of its files is in one entry (paths from the workspace root).
const ALLOWED_CIRCLES: &[(&[&str], &str)] = &[];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the orchestrator crate lives in the workspace")
        .to_path_buf()
}

#[test]
fn no_import_circle_between_files() {
    let root = workspace_root();
    let mut command = Command::new("python3");
    command
        .arg("tools/import-cycles")
        .arg("--allow-none")
        .args(TREES)
        .current_dir(&root);
    let shown = format!(
        "python3 tools/import-cycles --allow-none {}",
        TREES.join(" ")
    );
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{shown}` (python3 is needed): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("checked: {shown} (in {})\n{stdout}", root.display());
    let circles = circles_in(&stdout);
    let code = out.status.code();
    let consistent = match code {
        Some(0) => circles.is_empty(),
        Some(1) => !circles.is_empty(),
        _ => false,
    };
    assert!(
        consistent,
        "`{shown}` exited with {code:?} after reporting {} circle(s):\n{stdout}{stderr}",
        circles.len()
    );
    assert!(
        stdout.lines().filter(|l| !l.starts_with(' ')).count() == TREES.len(),
        "`{shown}` did not report on each of {TREES:?}:\n{stdout}{stderr}"
    );

    let mut unexpected = Vec::new();
    let mut used = BTreeSet::new();
    for circle in &circles {
        let entry = ALLOWED_CIRCLES
            .iter()
            .position(|(files, _)| circle.iter().all(|f| files.contains(&f.as_str())));
        match entry {
            Some(i) => {
                used.insert(i);
                println!(
                    "allowed, {}: the circle of {} ({})",
                    ALLOWED_CIRCLES[i].1,
                    circle.len(),
                    circle.join(", ")
                );
            }
            None => unexpected.push(circle.join(", ")),
        }
    }
    let stale: Vec<String> = (0..ALLOWED_CIRCLES.len())
        .filter(|i| !used.contains(i))
        .map(|i| ALLOWED_CIRCLES[i].0.join(", "))
        .collect();
    assert!(
        unexpected.is_empty(),
        "import circles between files (untie them so that the layers read one way):\n  {}\n\n\
         {stdout}",
        unexpected.join("\n  ")
    );
    assert!(
        stale.is_empty(),
        "ALLOWED_CIRCLES lists circles that are gone; remove them from orchestrator/tests/house.rs:\n  {}",
        stale.join("\n  ")
    );
}

/// The circles in the tool's report, each as its files' paths from the workspace root.
fn circles_in(report: &str) -> Vec<Vec<String>> {
    let mut tree = "";
    let mut circles = Vec::new();
    for line in report.lines() {
        if !line.starts_with(' ') {
            tree = line.split(':').next().unwrap_or("");
        } else if let Some((_, files)) = line
            .trim()
            .split_once("circle of ")
            .and_then(|(_, rest)| rest.split_once(": "))
        {
            circles.push(files.split(", ").map(|f| format!("{tree}/{f}")).collect());
        }
    }
    circles
}

#[test]
fn no_file_over_the_line_limit() {
    let root = workspace_root();
    let mut counted = Vec::new();
    for tree in TREES {
        for path in rust_files(&root.join(tree)) {
            let rel = path
                .strip_prefix(&root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            if is_test_file(&rel) {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            counted.push((non_test_lines(&text), rel));
        }
    }
    counted.sort_by(|a, b| b.cmp(a));
    assert!(
        counted.len() > 50,
        "found only {} source files under {TREES:?}: is the workspace root {}?",
        counted.len(),
        root.display()
    );
    println!(
        "checked {} files under {} (tests.rs and tests/ left out), at most {MAX_LINES} lines of \
         non-test code each; the largest:",
        counted.len(),
        TREES.join(" and ")
    );
    for (lines, rel) in counted.iter().take(10) {
        println!("  {lines:>5}  {rel}");
    }

    let mut over = Vec::new();
    let mut used = BTreeSet::new();
    for (lines, rel) in counted.iter().filter(|(n, _)| *n > MAX_LINES) {
        match ALLOWED_LONG.iter().position(|(f, _)| f == rel) {
            Some(i) => {
                used.insert(i);
                println!("allowed, {}: {rel} ({lines} lines)", ALLOWED_LONG[i].1);
            }
            None => over.push(format!("{rel}: {lines} lines")),
        }
    }
    let stale: Vec<&str> = (0..ALLOWED_LONG.len())
        .filter(|i| !used.contains(i))
        .map(|i| ALLOWED_LONG[i].0)
        .collect();
    assert!(
        over.is_empty(),
        "files with more than {MAX_LINES} lines of non-test code (split them by concept):\n  {}",
        over.join("\n  ")
    );
    assert!(
        stale.is_empty(),
        "ALLOWED_LONG lists files that are no longer over {MAX_LINES} lines (or gone); remove \
         them from orchestrator/tests/house.rs:\n  {}",
        stale.join("\n  ")
    );
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// `tests.rs` files and files under a `tests/` directory hold only test code.
fn is_test_file(rel: &str) -> bool {
    rel.ends_with("/tests.rs") || rel.contains("/tests/")
}

/// Lines before a `#[cfg(test)]` that opens an inline `mod ... {` (all of them without one).
fn non_test_lines(text: &str) -> usize {
    let inline_tests =
        regex::Regex::new(r"(?m)^\s*#\[cfg\(test\)\]\s*\n\s*(pub\s+)?mod\s+\w+\s*\{")
            .expect("a valid pattern");
    let code = match inline_tests.find(text) {
        Some(m) => &text[..m.start()],
        None => text,
    };
    code.lines().count()
}

#[test]
fn inline_tests_and_test_files_are_not_counted() {
    let text = "//! a\nfn f() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n";
    // `^\s*` takes the blank line before the attribute with it, as tools/import-cycles does.
    assert_eq!(non_test_lines(text), 2);
    assert_eq!(non_test_lines("fn f() {}\n#[cfg(test)]\nmod tests;\n"), 3);
    assert_eq!(non_test_lines("fn f() {}\nfn g() {}"), 2);
    assert!(is_test_file("simulator/src/zone/tests.rs"));
    assert!(is_test_file("orchestrator/src/daemon/tests/jobs.rs"));
    assert!(!is_test_file("simulator/src/testing.rs"));
    let report = "orchestrator/src: 3 files, 2 edges, 1 import circle(s)\n  circle of 2: a.rs, b/mod.rs\n    a.rs -> b/mod.rs\n    b/mod.rs -> a.rs\nsimulator/src: 1 files, 0 edges, 0 import circle(s)\n";
    assert_eq!(
        circles_in(report),
        [["orchestrator/src/a.rs", "orchestrator/src/b/mod.rs"]]
    );
}
