//! `remedy audit`: the audit log read for people: `list` (one line per run), `show` (one run's
//! story, record by record) and `verify` (the hash chain). Reading and verifying the log are
//! `crate::audit`'s.

use std::path::PathBuf;

use clap::Subcommand;

use crate::audit::{self, AuditLog};
use crate::error::{Error, ExitCode};

use super::output::fail;

/// `remedy audit`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// One line per run.
    List,
    /// The story of one run.
    Show {
        /// The run's id, as `remedy audit list` shows it.
        run: String,
    },
    /// Check the hash chain; names any edited, deleted or reordered line.
    Verify,
}

/// `remedy audit list`'s lines: a header, then one row per run in log order, its mode in the
/// command line's words ([`crate::event::mode_word`]) and its result from the `run_end` record. Columns are
/// as wide as their widest cell; the result, last, is never padded.
fn audit_list_lines(records: &[&serde_json::Value]) -> Vec<String> {
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let mut ends = std::collections::HashMap::new();
    for r in records.iter().filter(|r| r["event"] == "run_end") {
        ends.insert(str_of(&r["run"]), str_of(&r["status"]));
    }
    let mut rows = vec![[
        "RUN".to_string(),
        "MODE".into(),
        "PLAYBOOK".into(),
        "OPERATOR".into(),
        "RESULT".into(),
    ]];
    for r in records.iter().filter(|r| r["event"] == "run_start") {
        let run = str_of(&r["run"]);
        let argv: Vec<String> = r["argv"]
            .as_array()
            .map(|a| a.iter().map(str_of).collect())
            .unwrap_or_default();
        let result = ends
            .get(&run)
            .cloned()
            .unwrap_or_else(|| "(no end record: interrupted?)".into());
        rows.push([
            run,
            crate::event::mode_word(r["mode"].as_str().unwrap_or(""), &argv).to_string(),
            str_of(&r["playbook"]),
            str_of(&r["operator"]),
            result,
        ]);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (cell, w) in row.iter().zip(widths) {
                line.push_str(&format!("{cell:<w$}  "));
            }
            line.push_str(&row[4]);
            line
        })
        .collect()
}

/// An `undo_start` record's actions, as the commands and calls they are.
fn undo_actions(actions: &serde_json::Value) -> String {
    let list: Vec<String> = actions
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    serde_json::from_value::<crate::transport::Action>(x.clone())
                        .map(|a| a.to_string())
                        .unwrap_or_else(|_| x.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "nothing".into()
    } else {
        list.join(" && ")
    }
}

/// `remedy audit list`, `show` and `verify`, on the log at `path` (default: the user's).
pub(super) fn run(cmd: AuditCommand, path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(AuditLog::default_path);
    match cmd {
        AuditCommand::Verify => match audit::verify(&path) {
            Ok(r) if r.problems.is_empty() => {
                outln!("ok: {} records, chain intact ({})", r.lines, path.display());
                ExitCode::Success
            }
            Ok(r) => {
                for p in &r.problems {
                    outln!("{}: {p}", path.display());
                }
                ExitCode::Other
            }
            Err(e) => fail(&Error::Audit(e.to_string())),
        },
        AuditCommand::List => match audit::read(&path) {
            Ok(records) => {
                let values: Vec<&serde_json::Value> = records.iter().map(|r| &r.value).collect();
                for line in audit_list_lines(&values) {
                    outln!("{line}");
                }
                ExitCode::Success
            }
            Err(e) => fail(&Error::Audit(e.to_string())),
        },
        AuditCommand::Show { run } => match audit::read(&path) {
            Ok(records) => {
                let mine: Vec<_> = records
                    .iter()
                    .filter(|r| r.value["run"] == run.as_str())
                    .collect();
                if mine.is_empty() {
                    return fail(&Error::Other(format!("no run {run} in {}", path.display())));
                }
                for r in mine {
                    let v = &r.value;
                    let ts = v["ts"].as_str().unwrap_or("");
                    let line = match v["event"].as_str().unwrap_or("") {
                        "run_start" => {
                            let mut line = format!(
                                "run {} of {} by {} on {} ({})",
                                run,
                                v["playbook"].as_str().unwrap_or(""),
                                v["operator"].as_str().unwrap_or(""),
                                v["host"].as_str().unwrap_or(""),
                                v["mode"].as_str().unwrap_or("")
                            );
                            if let Some(p) = v.get("plan").filter(|p| p.is_object()) {
                                line.push_str(&format!(
                                    "\n    applies plan {} ({}), made by {} at {} in run {}",
                                    p["id"].as_str().unwrap_or(""),
                                    p["file"].as_str().unwrap_or(""),
                                    p["made_by"].as_str().unwrap_or(""),
                                    p["made_at"].as_str().unwrap_or(""),
                                    p["made_in_run"].as_str().unwrap_or("")
                                ));
                                let approvals =
                                    p["approvals"].as_array().cloned().unwrap_or_default();
                                if approvals.is_empty() {
                                    line.push_str("\n    no approval recorded");
                                }
                                for a in approvals {
                                    line.push_str(&format!(
                                        "\n    approved by {}{} at {} ({}, approval {})",
                                        a["by"].as_str().unwrap_or(""),
                                        a["ticket"]
                                            .as_str()
                                            .map(|t| format!(" for {t}"))
                                            .unwrap_or_default(),
                                        a["at"].as_str().unwrap_or(""),
                                        a["alg"].as_str().unwrap_or(""),
                                        a["approval"].as_str().unwrap_or("")
                                    ));
                                }
                            }
                            line
                        }
                        "plan_check" => {
                            let drift = v["drift"].as_array().cloned().unwrap_or_default();
                            if drift.is_empty() {
                                "  plan check: the live state is as planned".to_string()
                            } else {
                                let mut line = format!(
                                    "  plan check: {} node(s) differ from the plan (on drift: {})",
                                    drift.len(),
                                    v["on_drift"].as_str().unwrap_or("")
                                );
                                for d in drift {
                                    line.push_str(&format!(
                                        "\n    {} @ {}: {}",
                                        d["step"].as_str().unwrap_or(""),
                                        d["target"].as_str().unwrap_or(""),
                                        d["why"].as_str().unwrap_or("")
                                    ));
                                }
                                line
                            }
                        }
                        "plan_written" => format!(
                            "plan {} written to {} (valid until {})",
                            v["plan"].as_str().unwrap_or(""),
                            v["file"].as_str().unwrap_or(""),
                            v["expires_at"].as_str().unwrap_or("")
                        ),
                        "step_start" => format!(
                            "  start  {} @ {}: {}",
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            v["action"].as_str().unwrap_or("")
                        ),
                        "step_end" => format!(
                            "  {:<6} {} @ {}{}",
                            v["outcome"].as_str().unwrap_or(""),
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            v["error"]
                                .as_str()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ),
                        "report" => format!(
                            "  report {} @ {}: {} ({} row(s){})",
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            v["title"].as_str().unwrap_or(""),
                            v["rows"].as_array().map_or(0, Vec::len),
                            if v["found"] == true { ", found" } else { "" }
                        ),
                        "rollback_start" => {
                            format!("  ROLLBACK: {}", v["reason"].as_str().unwrap_or(""))
                        }
                        "undo_start" => format!(
                            "  undo   {} @ {}: runs {}",
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            undo_actions(&v["actions"])
                        ),
                        "undo_end" => format!(
                            "  undo   {} @ {}: {}{}",
                            v["step"].as_str().unwrap_or(""),
                            v["target"].as_str().unwrap_or(""),
                            match (v["ok"] == true, v["note"].as_str()) {
                                (true, Some("unchanged")) => {
                                    "as before, nothing to undo".to_string()
                                }
                                (true, Some("left")) => {
                                    "left in place (declared as needing no undo)".to_string()
                                }
                                (true, Some("consumed")) => format!(
                                    "kept, not undone (consumed by {})",
                                    v["consumed_by"].as_str().unwrap_or("a later step")
                                ),
                                (true, _) => "ok".to_string(),
                                (false, _) => v["error"].as_str().unwrap_or("failed").to_string(),
                            },
                            v["caveat"]
                                .as_str()
                                .map(|c| format!("; not exactly as before: {c}"))
                                .unwrap_or_default()
                        ),
                        "run_end" => format!(
                            "end: {} (exit {})",
                            v["status"].as_str().unwrap_or(""),
                            v["exit_code"]
                        ),
                        _ => continue,
                    };
                    outln!("{ts}  {line}");
                }
                ExitCode::Success
            }
            Err(e) => fail(&Error::Audit(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_list_has_a_header_and_the_commands_words() {
        let start = |run: &str, mode: &str, argv: &[&str], playbook: &str| {
            serde_json::json!({"event": "run_start", "run": run, "mode": mode,
                "playbook": playbook, "operator": "ops", "argv": argv})
        };
        let records = [
            start(
                "r1",
                "dry-run",
                &["remedy", "apply", "fix", "--dry-run"],
                "fix",
            ),
            start(
                "r2",
                "apply",
                &["remedy", "exec", "all", "--read-only", "--", "uptime"],
                "exec",
            ),
            // An old record without argv.
            serde_json::json!({"event": "run_start", "run": "r3", "mode": "rollback",
                "playbook": "rollback of r1", "operator": "ops"}),
            serde_json::json!({"event": "run_end", "run": "r1", "status": "ok"}),
            serde_json::json!({"event": "run_end", "run": "r2", "status": "failed"}),
        ];
        let refs: Vec<&serde_json::Value> = records.iter().collect();
        assert_eq!(
            audit_list_lines(&refs),
            [
                "RUN  MODE              PLAYBOOK        OPERATOR  RESULT",
                "r1   dry-run           fix             ops       ok",
                "r2   exec --read-only  exec            ops       failed",
                "r3   rollback          rollback of r1  ops       (no end record: interrupted?)",
            ]
        );
    }
}
