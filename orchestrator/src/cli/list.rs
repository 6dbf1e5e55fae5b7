//! `remedy list`: one line per playbook found, its name and the first sentence of its
//! description fitted to the terminal. Finding them is `playbooks.rs`'s, fitting `fit.rs`'s.

use crate::error::ExitCode;
use crate::playbook;

use super::fit;
use super::output::fail;
use super::playbooks::{found_playbooks, no_playbooks_found};

/// `remedy list`: one line per playbook found, its name and the first sentence of its
/// description, cut at a word with `…` to fit the terminal width (see [`fit::terminal_width`]).
pub(super) fn run() -> ExitCode {
    let paths = found_playbooks();
    if paths.is_empty() {
        return fail(&no_playbooks_found("list"));
    }
    let rows: Vec<(String, String)> = paths
        .iter()
        .map(
            |path| match playbook::load::read(std::path::Path::new(path)) {
                Ok(f) => (f.doc.name, fit::first_sentence(&f.doc.description)),
                Err(d) => (path.clone(), format!("(invalid: {})", d.headline())),
            },
        )
        .collect();
    for line in list_lines(&rows, fit::terminal_width()) {
        outln!("{line}");
    }
    ExitCode::Success
}

/// `remedy list`'s lines: names in a column as wide as the longest, two spaces, then the
/// description fitted into what is left of `width`.
fn list_lines(rows: &[(String, String)], width: usize) -> Vec<String> {
    let name_width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let room = width.saturating_sub(name_width + 2);
    rows.iter()
        .map(|(name, about)| {
            let about = fit::ellipsize(about, room);
            if about.is_empty() {
                name.clone()
            } else {
                format!("{name:<name_width$}  {about}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines_fit_the_width_and_cut_at_a_word() {
        let rows = vec![
            ("short".to_string(), "Fits.".to_string()),
            (
                "a-longer-name".to_string(),
                "Guest VMs of a network or VPC get no DHCP lease and no DNS answers.".to_string(),
            ),
        ];
        assert_eq!(
            list_lines(&rows, 40),
            [
                "short          Fits.",
                "a-longer-name  Guest VMs of a network…",
            ]
        );
        assert_eq!(
            list_lines(&rows, 200)[1],
            "a-longer-name  Guest VMs of a network or VPC get no DHCP lease and no DNS answers."
        );
        // No room for any description: the names alone.
        assert_eq!(list_lines(&rows, 15), ["short", "a-longer-name"]);
    }
}
