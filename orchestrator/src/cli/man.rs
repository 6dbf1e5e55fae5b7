//! `remedy man`: the man pages (roff) clap_mangen makes from the command tree in `mod.rs`,
//! remedy's own on stdout, or one page per command written into a directory.

use clap::CommandFactory as _;

use crate::error::{Error, ExitCode};

use super::output::fail;
use super::Cli;

/// The man pages: remedy's own first, then one per subcommand, nested ones included
/// (`remedy-audit-list`), each titled in capitals as man pages are.
fn man_pages() -> Vec<clap_mangen::Man> {
    fn collect(cmd: &clap::Command, pages: &mut Vec<clap_mangen::Man>) {
        let title = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_uppercase();
        pages.push(
            clap_mangen::Man::new(cmd.clone())
                .title(title)
                .manual("remedy manual"),
        );
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            collect(sub, pages);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages);
    pages
}

/// `remedy man`: remedy's page on stdout, or with `--out DIR` every page written into DIR.
pub(super) fn run(out: Option<&std::path::Path>) -> ExitCode {
    let pages = man_pages();
    let Some(dir) = out else {
        let mut page = Vec::new();
        if let Err(e) = pages[0].render(&mut page) {
            return fail(&Error::Other(format!("cannot render the man page: {e}")));
        }
        out!("{}", String::from_utf8_lossy(&page));
        return ExitCode::Success;
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(&Error::Other(format!("{}: {e}", dir.display())));
    }
    for page in &pages {
        match page.generate_to(dir) {
            Ok(path) => outln!("{}", path.display()),
            Err(e) => {
                return fail(&Error::Other(format!(
                    "{}: {e}",
                    dir.join(page.get_filename()).display()
                )))
            }
        }
    }
    ExitCode::Success
}
