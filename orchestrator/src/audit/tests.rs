//! Tests of the audit log: writing, the group commit, reading back and verifying.

use super::head::{head_path, write_head};
use super::write::default_path_from;
use super::*;
use serde_json::json;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::sync::Arc;

fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/remedy/audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 1..=n {
        let appended = log.append(json!({"event": "step", "n": i}), false).unwrap();
        assert_eq!(appended.seq, i);
    }
    log.sync().unwrap();
    (dir, path)
}

#[test]
fn durable_appends_waiting_for_a_sync_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    log.append(json!({"event": "first"}), true).unwrap();
    assert_eq!(log.syncs(), 1);
    // A sync in progress: hold its lock while five threads append durably.
    let in_progress = log.sync.lock().unwrap();
    let threads: Vec<_> = (0..5)
        .map(|i| {
            let log = log.clone();
            std::thread::spawn(move || log.append(json!({"event": "step", "n": i}), true))
        })
        .collect();
    // Every line is written before any of them is durable.
    while log.lock_inner().written < 6 {
        std::thread::yield_now();
    }
    assert_eq!(lines(&path).len(), 6);
    let head: Value = serde_json::from_str(&fs::read_to_string(head_path(&path)).unwrap()).unwrap();
    assert_eq!(head["seq"], 1, "the head anchors only what is on disk");
    drop(in_progress);
    for t in threads {
        t.join().unwrap().unwrap();
    }
    // The first thread to get the lock synced for all five; the others found it done.
    assert_eq!(log.syncs(), 2);
    let head: Value = serde_json::from_str(&fs::read_to_string(head_path(&path)).unwrap()).unwrap();
    assert_eq!(head["seq"], 6);
    let report = verify(&path).unwrap();
    assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
    // Nothing pending: a sync now does nothing.
    log.sync().unwrap();
    assert_eq!(log.syncs(), 2);
}

#[test]
fn many_threads_appending_durably_leave_a_clean_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for n in 0..50 {
                    log.append(json!({"t": t, "n": n}), n % 2 == 0).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.sync().unwrap();
    assert_eq!(lines(&path).len(), 400);
    assert!(log.syncs() <= 201, "{} syncs", log.syncs());
    let report = verify(&path).unwrap();
    assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn kinds(report: &VerifyReport) -> Vec<(usize, ProblemKind)> {
    report.problems.iter().map(|p| (p.line, p.kind)).collect()
}

#[test]
fn append_and_verify_clean() {
    let (_dir, path) = log_with(5);
    let text = lines(&path);
    assert_eq!(text.len(), 5);
    assert!(text[0].starts_with("{\"v\":1,\"seq\":1,\"ts\":\"20"));
    assert!(text[0].contains(&format!("\"prev\":\"{ZERO_HASH}\"")));
    assert!(text[1].contains(&sha256_hex(text[0].as_bytes())));
    let report = verify(&path).unwrap();
    assert_eq!(report.lines, 5);
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let head = fs::read_to_string(head_path(&path)).unwrap();
    assert_eq!(
        head.trim(),
        format!(
            "{{\"seq\":5,\"hash\":\"{}\"}}",
            sha256_hex(text[4].as_bytes())
        )
    );
}

#[test]
fn record_layout_and_timestamp() {
    let (_dir, path) = log_with(1);
    let records = read(&path).unwrap();
    let keys: Vec<&String> = records[0].value.as_object().unwrap().keys().collect();
    assert!(keys.contains(&&"event".to_string()));
    let ts = records[0].value["ts"].as_str().unwrap();
    // 2025-01-02T03:04:05.678Z
    assert_eq!(ts.len(), 24, "{ts}");
    assert_eq!(&ts[19..20], ".");
    assert!(ts.ends_with('Z'));
    assert!(ts.parse::<jiff::Timestamp>().is_ok());
}

#[test]
fn reopen_continues_chain_and_durable_append() {
    let (_dir, path) = log_with(3);
    let log = AuditLog::open(&path).unwrap();
    let appended = log.append(json!({"event": "durable"}), true).unwrap();
    assert_eq!(appended.seq, 4);
    assert_eq!(appended.hash, sha256_hex(lines(&path)[3].as_bytes()));
    assert!(verify(&path).unwrap().is_clean());
}

#[test]
fn edited_middle_line() {
    let (_dir, path) = log_with(6);
    let mut text = lines(&path);
    text[2] = text[2].replace("\"n\":3", "\"n\":33");
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(kinds(&report), vec![(3, ProblemKind::Edited)], "{report:?}");
    assert!(report.problems[0].message.starts_with("line 3 (seq 3)"));
}

#[test]
fn edited_first_line() {
    let (_dir, path) = log_with(4);
    let mut text = lines(&path);
    text[0] = text[0].replace("\"n\":1", "\"n\":11");
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(kinds(&report), vec![(1, ProblemKind::Edited)], "{report:?}");
}

#[test]
fn edited_last_line_caught_by_head() {
    let (_dir, path) = log_with(5);
    let mut text = lines(&path);
    text[4] = text[4].replace("\"step\"", "\"nothing\"");
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(kinds(&report), vec![(5, ProblemKind::Edited)], "{report:?}");
    assert!(report.problems[0].message.contains("head anchor"));
}

#[test]
fn deleted_middle_lines() {
    let (_dir, path) = log_with(10);
    let mut text = lines(&path);
    text.drain(6..8); // seq 7 and 8
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(7, ProblemKind::Deleted)],
        "{report:?}"
    );
    assert_eq!(
        report.problems[0].message,
        "line 7: 2 records missing before it (seq 7-8)"
    );
}

#[test]
fn deleted_first_line() {
    let (_dir, path) = log_with(4);
    let mut text = lines(&path);
    text.remove(0);
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(1, ProblemKind::Deleted)],
        "{report:?}"
    );
    assert!(report.problems[0].message.contains("(seq 1)"));
}

#[test]
fn deleted_last_lines_are_truncation() {
    let (_dir, path) = log_with(6);
    let mut text = lines(&path);
    text.truncate(4);
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(4, ProblemKind::Truncated)],
        "{report:?}"
    );
    assert!(report.problems[0].message.contains("(seq 5-6)"));
}

#[test]
fn truncation_stays_visible_after_new_appends() {
    let (_dir, path) = log_with(6);
    let mut text = lines(&path);
    text.truncate(4);
    write_lines(&path, &text);
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(json!({"event": "later"}), true).unwrap().seq, 7);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(5, ProblemKind::Deleted)],
        "{report:?}"
    );
    assert!(report.problems[0].message.contains("(seq 5-6)"));
    assert!(report.problems[0].message.contains("chain is intact"));
}

#[test]
fn swapped_adjacent_lines() {
    let (_dir, path) = log_with(8);
    let mut text = lines(&path);
    text.swap(4, 5);
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(5, ProblemKind::Reordered)],
        "{report:?}"
    );
    assert_eq!(
        report.problems[0].message,
        "lines 5 and 6 are out of order: seq 6 comes before seq 5"
    );
}

#[test]
fn swapped_last_two_lines() {
    let (_dir, path) = log_with(5);
    let mut text = lines(&path);
    text.swap(3, 4);
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(4, ProblemKind::Reordered)],
        "{report:?}"
    );
}

#[test]
fn moved_line_and_distant_swap() {
    let (_dir, path) = log_with(9);
    let original = lines(&path);
    let mut text = original.clone();
    let moved = text.remove(2); // seq 3 moved to the end of the file
    text.push(moved);
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(9, ProblemKind::Reordered)],
        "{report:?}"
    );
    assert!(report.problems[0].message.contains("belongs after line 2"));

    let mut text = original;
    text.swap(2, 4); // seq 3 and 5
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.kind == ProblemKind::Reordered),
        "{report:?}"
    );
}

#[test]
fn malformed_line() {
    let (_dir, path) = log_with(5);
    let mut text = lines(&path);
    text[1] = "this is not json".to_string();
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(2, ProblemKind::Malformed)],
        "{report:?}"
    );
    assert!(report.problems[0]
        .message
        .starts_with("line 2: is not valid JSON"));
    let err = read(&path).unwrap_err();
    assert!(matches!(err, AuditError::BadLine { line: 2, .. }), "{err}");
}

#[test]
fn inserted_duplicate_line() {
    let (_dir, path) = log_with(5);
    let mut text = lines(&path);
    let copy = text[1].clone();
    text.insert(3, copy);
    write_lines(&path, &text);
    let report = verify(&path).unwrap();
    assert_eq!(
        kinds(&report),
        vec![(4, ProblemKind::Reordered)],
        "{report:?}"
    );
    assert!(report.problems[0].message.contains("a copy of line 2"));
}

#[test]
fn head_behind_or_missing_is_not_a_problem() {
    let (_dir, path) = log_with(4);
    let text = lines(&path);
    write_head(&head_path(&path), 2, &sha256_hex(text[1].as_bytes()), false).unwrap();
    let report = verify(&path).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.notes.len(), 1);
    fs::remove_file(head_path(&path)).unwrap();
    let report = verify(&path).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.notes[0].contains("no head anchor"));
}

#[test]
fn two_handles_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let a = Arc::new(AuditLog::open(&path).unwrap());
    let b = Arc::new(AuditLog::open(&path).unwrap());
    let threads: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(who, log)| {
            std::thread::spawn(move || {
                for i in 0..40 {
                    log.append(json!({"who": who, "i": i}), i % 10 == 0)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let records = read(&path).unwrap();
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| r.value["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=80).collect::<Vec<_>>());
    let report = verify(&path).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.notes.is_empty(), "{report:?}");
}

#[test]
fn open_fails_cleanly_on_unwritable_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("plain-file");
    fs::write(&blocker, "x").unwrap();
    let err = AuditLog::open(&blocker.join("sub/audit.jsonl"))
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(
        message.starts_with("cannot create audit log directory "),
        "{message}"
    );
    assert!(message.contains("plain-file/sub"), "{message}");
    assert!(!message.contains("os error"), "{message}");
}

#[test]
fn open_refuses_damaged_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    fs::write(&path, "{\"v\":1,\"seq\":1,\"ts\":\"x\",\"pre").unwrap();
    let err = AuditLog::open(&path).err().unwrap();
    assert!(matches!(err, AuditError::BadTail { .. }), "{err}");
    assert!(err.to_string().contains("is not valid JSON"), "{err}");
}

#[test]
fn append_rejects_bad_fields() {
    let (_dir, path) = log_with(0);
    let log = AuditLog::open(&path).unwrap();
    assert!(matches!(
        log.append(json!([1, 2]), false),
        Err(AuditError::NotAnObject { .. })
    ));
    assert!(matches!(
        log.append(json!({"seq": 9}), false),
        Err(AuditError::ReservedField { .. })
    ));
    assert!(read(&path).unwrap().is_empty());
}

#[test]
fn read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let fields = json!({"event": "run", "note": "multi\nline \"quoted\"", "args": {"x": [1, 2]}});
    let appended = log.append(fields.clone(), true).unwrap();
    let records = read(&path).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].line, 1);
    assert_eq!(sha256_hex(records[0].raw.as_bytes()), appended.hash);
    for (key, value) in fields.as_object().unwrap() {
        assert_eq!(&records[0].value[key], value);
    }
    assert_eq!(records[0].value["v"], json!(FORMAT_VERSION));
}

#[test]
fn default_path_prefers_env() {
    assert_eq!(
        default_path_from(Some("/x/audit.jsonl".into())),
        PathBuf::from("/x/audit.jsonl")
    );
    let fallback = default_path_from(Some(OsString::new()));
    assert!(fallback.ends_with("remedy/audit.jsonl"), "{fallback:?}");
}

#[test]
fn audit_log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<AuditLog>();
}

#[cfg(unix)]
#[test]
fn modes_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, path) = log_with(1);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&head_path(&path)), 0o600);
    assert_eq!(mode(&dir.path().join("state/remedy")), 0o700);
}
