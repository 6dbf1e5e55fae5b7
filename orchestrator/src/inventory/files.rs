//! Finding an inventory's files as Ansible does: the YAML files of an inventory directory, and
//! the `group_vars/` and `host_vars/` files for a group or a host; `~` in paths written in the
//! inventory.
//!
//! Not here: reading and hashing what is found (the builder in `vars`), parsing it (`yaml`).

use std::path::{Path, PathBuf};

use super::InventoryError;

fn is_yaml_file(name: &str) -> bool {
    name.ends_with(".yml") || name.ends_with(".yaml")
}

/// Every inventory file under `dir`, sorted by name at each level, depth first, as Ansible
/// walks an inventory directory.
pub(super) fn collect_inventory_files(
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> Result<(), InventoryError> {
    let read_err = |cause| InventoryError::Io {
        path: dir.to_path_buf(),
        what: "cannot list inventory directory".into(),
        cause,
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            || name.ends_with('~')
            || matches!(name.as_str(), "group_vars" | "host_vars" | "vars_plugins")
        {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort();
    for (name, path) in entries {
        if path.is_dir() {
            collect_inventory_files(&path, out)?;
        } else if is_yaml_file(&name) {
            out.push(path);
        }
    }
    Ok(())
}

/// The vars files for `name` under `dir` (`group_vars` or `host_vars`), as Ansible's
/// `host_group_vars` finds them: the first of `name` (a directory of files, or a file),
/// `name.yml`, `name.yaml`, `name.json` that exists.
pub(super) fn find_vars_files(dir: &Path, name: &str) -> Result<Vec<PathBuf>, InventoryError> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Ok(Vec::new());
    }
    for ext in ["", ".yml", ".yaml", ".json"] {
        let candidate = dir.join(format!("{name}{ext}"));
        if candidate.is_dir() {
            let mut files = Vec::new();
            collect_vars_dir(&candidate, &mut files)?;
            return Ok(files);
        }
        if candidate.is_file() {
            return Ok(vec![candidate]);
        }
    }
    Ok(Vec::new())
}

fn collect_vars_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InventoryError> {
    let read_err = |cause| InventoryError::Io {
        path: dir.to_path_buf(),
        what: "cannot list vars directory".into(),
        cause,
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort();
    for (name, path) in entries {
        if path.is_dir() {
            collect_vars_dir(&path, out)?;
        } else if is_yaml_file(&name) || name.ends_with(".json") || !name.contains('.') {
            out.push(path);
        }
    }
    Ok(())
}

/// `~` and `~/...` with the controller's `HOME`; any other path as written.
pub(super) fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" || path.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            let rest = path.trim_start_matches('~').trim_start_matches('/');
            let home = PathBuf::from(home);
            return if rest.is_empty() {
                home
            } else {
                home.join(rest)
            };
        }
    }
    PathBuf::from(path)
}
