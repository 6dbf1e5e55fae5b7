//! `remedy completions SHELL`: the shell completion script clap generates from the command
//! tree in `mod.rs`.

use clap::CommandFactory as _;

use crate::error::ExitCode;

use super::Cli;

/// `remedy completions SHELL`: the completion script on stdout.
pub(super) fn run(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "remedy", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    ExitCode::Success
}
