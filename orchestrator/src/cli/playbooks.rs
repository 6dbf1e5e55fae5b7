//! The playbooks on the search path (./playbooks, then `$REMEDY_PLAYBOOK_PATH`), for the
//! commands that take all of them (`list`, `validate` without names), and the error that says
//! where remedy looked when there is none. Reading one playbook is `crate::playbook::load`'s.

use std::path::PathBuf;

use crate::error::Error;
use crate::playbook;

/// Every `.yml` and `.yaml` file in the search path's directories, in search order, each
/// directory's sorted by name.
pub(super) fn found_playbooks() -> Vec<String> {
    let mut out = Vec::new();
    for dir in playbook::load::search_path() {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")))
                .collect();
            files.sort();
            out.extend(files.into_iter().map(|p| p.display().to_string()));
        }
    }
    out
}

/// The error for a search path that holds no playbook: every directory searched and what was
/// there, and how to point `remedy COMMAND` at playbooks.
pub(super) fn no_playbooks_found(command: &str) -> Error {
    let cwd = std::env::current_dir().unwrap_or_default();
    let searched: Vec<String> = playbook::load::search_path()
        .iter()
        .map(|dir| {
            let shown = cwd.join(dir);
            let why = if !dir.exists() {
                "does not exist"
            } else if !dir.is_dir() {
                "not a directory"
            } else {
                "no .yml or .yaml file"
            };
            format!("{} ({why})", shown.display())
        })
        .collect();
    let path_var = match std::env::var(playbook::load::PATH_VAR) {
        Ok(v) if !v.is_empty() => String::new(),
        _ => format!("; ${} is not set", playbook::load::PATH_VAR),
    };
    Error::Invalid(
        crate::error::Diagnostic::new(format!(
            "no playbooks found: searched {}{path_var}",
            searched.join(", ")
        ))
        .with_help(format!(
            "run remedy from the checkout (the directory holding playbooks/), or point it at \
             your playbook directories: {}=DIR[:DIR] remedy {command}",
            playbook::load::PATH_VAR
        ))
        .into(),
    )
}
