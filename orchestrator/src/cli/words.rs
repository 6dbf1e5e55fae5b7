//! The words the command line uses for a run's mode, shared by `remedy audit list` and the
//! terminal's run header, so an operator reads one vocabulary everywhere: the command they
//! typed (`apply`, `dry-run`, `plan`, `rollback`, `exec`, `exec --read-only`), not the audit
//! log's internal mode names.

use crate::event::RunMode;

/// The command-line word for a run, from what its `run_start` record holds: `mode` as the audit
/// log writes it (`apply`, `dry-run`, `plan`, `rollback`) and the recorded `argv`.
///
/// `remedy exec` runs through `apply`, so its mode alone says `apply` or `dry-run`; its argv
/// (`remedy exec PATTERN ... -- COMMAND`) tells it apart. Only the part before `--` is read: the
/// remote command may well contain `--read-only` itself. Logs written before this function
/// existed hold the same fields and read the same. A mode this release does not know (a log
/// written by a newer one) reads `unknown`.
pub fn mode_word(mode: &str, argv: &[String]) -> &'static str {
    if subcommand(argv) == Some("exec") {
        let own: Vec<&str> = argv
            .iter()
            .map(String::as_str)
            .take_while(|a| *a != "--")
            .collect();
        if own.contains(&"--read-only") {
            return "exec --read-only";
        }
        if mode == "dry-run" || own.contains(&"--dry-run") {
            return "exec --dry-run";
        }
        return "exec";
    }
    match mode {
        "apply" => "apply",
        "dry-run" => "dry-run",
        "plan" => "plan",
        "rollback" => "rollback",
        _ => "unknown",
    }
}

/// [`mode_word`] for a [`RunMode`] in hand (as in a `RunStart` event).
pub fn run_mode_word(mode: RunMode, argv: &[String]) -> &'static str {
    let name = match mode {
        RunMode::Apply => "apply",
        RunMode::DryRun => "dry-run",
        RunMode::Plan => "plan",
        RunMode::Rollback => "rollback",
    };
    mode_word(name, argv)
}

/// The subcommand of a recorded argv: its first word after the program that is not an option
/// (remedy has no options before the subcommand but `--help` and `--version`).
fn subcommand(argv: &[String]) -> Option<&str> {
    argv.iter()
        .skip(1)
        .map(String::as_str)
        .find(|a| !a.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn plain_modes_read_as_their_command() {
        let apply = argv("remedy apply vr-backup-loop -i inventories/lab.yml --yes");
        assert_eq!(mode_word("apply", &apply), "apply");
        assert_eq!(
            mode_word("dry-run", &argv("remedy apply vr-backup-loop --dry-run")),
            "dry-run"
        );
        assert_eq!(mode_word("plan", &argv("remedy plan x -o p.json")), "plan");
        assert_eq!(
            mode_word("rollback", &argv("remedy rollback r1 --yes")),
            "rollback"
        );
        // The daemon records its own argv; its runs read as the mode.
        assert_eq!(mode_word("apply", &argv("remedy daemon job-a")), "apply");
        assert_eq!(mode_word("plan", &[]), "plan");
        assert_eq!(mode_word("something-new", &apply), "unknown");
    }

    #[test]
    fn exec_runs_read_as_exec_with_their_flag() {
        assert_eq!(
            mode_word(
                "apply",
                &argv("remedy exec routers -i lab.yml --yes -- systemctl restart x")
            ),
            "exec"
        );
        assert_eq!(
            mode_word("apply", &argv("remedy exec all --read-only -- uptime")),
            "exec --read-only"
        );
        assert_eq!(
            mode_word(
                "dry-run",
                &argv("remedy exec all --read-only --dry-run -- uptime")
            ),
            "exec --read-only"
        );
        assert_eq!(
            mode_word("dry-run", &argv("remedy exec all --dry-run -- touch /x")),
            "exec --dry-run"
        );
        // `--read-only` after `--` belongs to the remote command.
        assert_eq!(
            mode_word(
                "apply",
                &argv("remedy exec all --yes -- mount -o remount --read-only /")
            ),
            "exec"
        );
    }

    #[test]
    fn run_modes_map_to_the_same_words() {
        let a = argv("remedy apply x");
        assert_eq!(run_mode_word(RunMode::Apply, &a), "apply");
        assert_eq!(run_mode_word(RunMode::DryRun, &a), "dry-run");
        assert_eq!(run_mode_word(RunMode::Plan, &a), "plan");
        assert_eq!(run_mode_word(RunMode::Rollback, &a), "rollback");
        let e = argv("remedy exec all --read-only -- uptime");
        assert_eq!(run_mode_word(RunMode::DryRun, &e), "exec --read-only");
    }
}
