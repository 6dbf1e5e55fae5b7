//! The playbook fixtures and the documented examples, checked the way `remedy validate` checks
//! them.
//!
//! - every `tests/fixtures/bad/*.yml` fails, with exactly one diagnostic whose first line is
//!   `error: <file>:<line>:<col>: ...` (a snapshot of each rendering is in `tests/snapshots/`);
//! - every `tests/fixtures/good/*.yml` validates against `tests/fixtures/inventory.yml`;
//! - every ```` ```yaml playbook ```` block of `docs/playbooks.md` compiles and validates against
//!   the same inventory. A block may name its file (```` ```yaml playbook restart-service.yml ````)
//!   so that other blocks can `include:` it; every block is written to one directory first.
//!
//! Cargo runs integration tests with the package directory (`orchestrator/`) as the working
//! directory, so files are named `../tests/fixtures/...`: diagnostics then carry that relative
//! path, and any absolute path to the workspace is rewritten to it before snapshotting.

use std::path::{Path, PathBuf};

use remedy::error::Diagnostics;
use remedy::inventory::Inventory;

/// The workspace root as the tests name it (relative to `orchestrator/`).
const ROOT: &str = "..";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("orchestrator/ has a parent")
        .to_path_buf()
}

fn inventory() -> Inventory {
    let path = PathBuf::from(format!("{ROOT}/tests/fixtures/inventory.yml"));
    Inventory::load(&[path]).unwrap_or_else(|e| panic!("fixture inventory: {e}"))
}

/// `*.yml` files directly in `dir` (relative to the workspace root), sorted, as `../dir/x.yml`.
fn yml_files(dir: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(workspace().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            format!("{ROOT}/{dir}/{name}")
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {dir}");
    out
}

/// The rendering with every absolute path to the workspace made relative (`../`).
fn stable(diags: &Diagnostics) -> String {
    let text = diags.render(false);
    let abs = workspace();
    let mut out = text.replace(&format!("{}/", abs.display()), &format!("{ROOT}/"));
    if let Ok(canon) = abs.canonicalize() {
        out = out.replace(&format!("{}/", canon.display()), &format!("{ROOT}/"));
    }
    out
}

#[test]
fn bad_fixtures_fail_with_one_located_diagnostic() {
    let inv = inventory();
    let headline = regex::Regex::new(r"^error: (?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): \S")
        .expect("regex");
    for path in yml_files("tests/fixtures/bad") {
        let name = Path::new(&path)
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let diags = match remedy::plan::validate(&path, Some(&inv)) {
            Ok(_) => panic!("{path}: validated, but it is a bad fixture"),
            Err(d) => d,
        };
        let text = stable(&diags);
        insta::assert_snapshot!(name.as_str(), text);
        assert_eq!(
            diags.0.len(),
            1,
            "{path}: a bad fixture has exactly one mistake, got:\n{text}"
        );
        let first = text.lines().next().unwrap_or("");
        let caps = headline
            .captures(first)
            .unwrap_or_else(|| panic!("{path}: first line lacks file:line:col: {first}"));
        assert_eq!(
            &caps["file"], path,
            "{path}: diagnostic names another file: {first}"
        );
        let line: usize = caps["line"].parse().expect("line number");
        assert!(
            line > 1,
            "{path}: points at line 1 rather than the mistake: {first}"
        );
    }
}

#[test]
fn good_fixtures_validate() {
    let inv = inventory();
    for path in yml_files("tests/fixtures/good") {
        if let Err(d) = remedy::plan::validate(&path, Some(&inv)) {
            panic!("{path} does not validate:\n{}", stable(&d));
        }
    }
}

/// One ```` ```yaml playbook [file.yml] ```` block: its file name, first line in the document,
/// and text.
struct Block {
    file: String,
    line: usize,
    text: String,
}

fn doc_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim_start();
        match current.as_mut() {
            None => {
                let Some(info) = trimmed.strip_prefix("```") else {
                    continue;
                };
                let mut words = info.split_whitespace();
                if words.next() != Some("yaml") || words.next() != Some("playbook") {
                    continue;
                }
                let file = match words.next() {
                    Some(f) => f.to_string(),
                    None => format!("example-{:02}.yml", blocks.len() + 1),
                };
                current = Some(Block {
                    file,
                    line: i + 2,
                    text: String::new(),
                });
            }
            Some(b) => {
                if trimmed.starts_with("```") {
                    blocks.extend(current.take());
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
            }
        }
    }
    assert!(
        current.is_none(),
        "docs/playbooks.md: unterminated ```yaml playbook block"
    );
    blocks
}

#[test]
fn documented_playbooks_compile_and_validate() {
    let doc_path = workspace().join("docs/playbooks.md");
    let doc =
        std::fs::read_to_string(&doc_path).unwrap_or_else(|e| panic!("docs/playbooks.md: {e}"));
    let blocks = doc_blocks(&doc);
    assert!(
        blocks.len() >= 5,
        "docs/playbooks.md has only {} playbook examples",
        blocks.len()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    for b in &blocks {
        let p = dir.path().join(&b.file);
        assert!(
            !p.exists(),
            "docs/playbooks.md:{}: two blocks named {}",
            b.line,
            b.file
        );
        std::fs::write(&p, &b.text).expect("write example");
    }
    let inv = inventory();
    let mut failures = Vec::new();
    for b in &blocks {
        let p = dir.path().join(&b.file);
        let path = p.to_string_lossy().into_owned();
        let shown = |d: &Diagnostics| {
            d.render(false)
                .replace(&format!("{}/", dir.path().display()), "")
        };
        let compiled = remedy::playbook::load(&path).and_then(|l| remedy::playbook::compile(&l));
        if let Err(d) = compiled {
            failures.push(format!(
                "docs/playbooks.md:{} ({}) does not compile:\n{}",
                b.line,
                b.file,
                shown(&d)
            ));
            continue;
        }
        if let Err(d) = remedy::plan::validate(&path, Some(&inv)) {
            failures.push(format!(
                "docs/playbooks.md:{} ({}) does not validate against tests/fixtures/inventory.yml:\n{}",
                b.line,
                b.file,
                shown(&d)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The names a `- **Kind**: ...` line of docs/playbooks.md lists in backticks.
fn documented_names(doc: &str, kind: &str) -> Option<std::collections::BTreeSet<String>> {
    let head = format!("- **{kind}**: ");
    let line = doc.lines().find_map(|l| l.strip_prefix(head.as_str()))?;
    Some(
        line.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn the_docs_list_every_filter_test_and_function() {
    let doc = std::fs::read_to_string(workspace().join("docs/playbooks.md"))
        .unwrap_or_else(|e| panic!("docs/playbooks.md: {e}"));
    let templates = remedy::template::Templates::new();
    let known = templates.known();
    let mut wrong = Vec::new();
    for (kind, names) in [
        ("Filters", &known.filters),
        ("Tests", &known.tests),
        ("Functions", &known.functions),
    ] {
        assert!(
            names.len() >= 4,
            "the environment has only {names:?} as {kind}"
        );
        if documented_names(&doc, kind).as_ref() != Some(names) {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            wrong.push(format!("- **{kind}**: {}", list.join(", ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/playbooks.md (Filters, tests and functions) differs from the environment; the \
         lines should read:\n{}",
        wrong.join("\n")
    );
    // remedy's own are there
    for (set, name) in [
        (&known.filters, "raw"),
        (&known.filters, "quote"),
        (&known.filters, "regex_search"),
        (&known.tests, "match"),
        (&known.functions, "namespace"),
    ] {
        assert!(set.contains(name), "{name}");
    }
}
