//! Finding and reading playbook files: text -> positions ([`Source`]) -> serde model.
//!
//! Owned here: the search path, syntax and schema errors (with file:line:column), and loading
//! every file an `include` names (once each; include cycles are errors). Not here: what the
//! steps mean (compile).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model::PlaybookDoc;
use crate::error::{Diagnostic, Diagnostics};
use crate::source::Source;

/// Environment variable with more directories to search for playbooks (colon-separated).
pub const PATH_VAR: &str = "REMEDY_PLAYBOOK_PATH";

/// One parsed playbook file.
#[derive(Debug, Clone)]
pub struct File {
    pub source: Source,
    pub doc: PlaybookDoc,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
}

/// The directories searched for a playbook given by name: `./playbooks`, then each entry of
/// `$REMEDY_PLAYBOOK_PATH`.
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("playbooks")];
    if let Ok(extra) = std::env::var(PATH_VAR) {
        dirs.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    dirs
}

/// Resolve a playbook argument: an existing path is used as is; a name is looked up as
/// `NAME.yml` / `NAME.yaml` in the search path (and, for includes, beside the including file
/// first).
pub fn find(name: &str, beside: Option<&Path>) -> Result<PathBuf, String> {
    let as_path = Path::new(name);
    if name.contains('/') || name.ends_with(".yml") || name.ends_with(".yaml") {
        let candidate = match beside {
            Some(dir) if as_path.is_relative() => dir.join(as_path),
            _ => as_path.to_path_buf(),
        };
        if candidate.is_file() {
            return Ok(candidate);
        }
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        return Err(format!("no playbook file {}", candidate.display()));
    }
    let mut dirs: Vec<PathBuf> = beside.map(Path::to_path_buf).into_iter().collect();
    dirs.extend(search_path());
    for dir in &dirs {
        for ext in ["yml", "yaml"] {
            let p = dir.join(format!("{name}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "no playbook named {name:?} (searched {})",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Read and parse one file.
pub fn read(path: &Path) -> Result<File, Diagnostic> {
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| Diagnostic::new(format!("{}: not UTF-8 text", path.display())))?;
    parse(path, &text, &bytes)
}

/// Parse playbook text (the path is used for messages).
pub fn parse(path: &Path, text: &str, bytes: &[u8]) -> Result<File, Diagnostic> {
    let source = Source::parse(path, text).map_err(|e| {
        let src = Source::parse(path, "").unwrap_or_else(|_| unreachable_source(path));
        let mut d = Diagnostic::new(format!("invalid YAML: {}", e.message));
        d.loc = Some(src.at(e.pos));
        d.text = Some(std::sync::Arc::from(text));
        d.len = 1;
        d
    })?;
    let doc: PlaybookDoc = serde_yaml::from_str(text).map_err(|e| schema_error(&source, &e))?;
    Ok(File {
        source,
        doc,
        sha256: hex(&Sha256::digest(bytes)),
    })
}

fn unreachable_source(path: &Path) -> Source {
    // Parsing an empty document cannot fail; keep a total function anyway.
    Source::parse(path, "{}").unwrap_or_else(|_| panic!("empty YAML failed to parse"))
}

/// Turn a serde_yaml error into a diagnostic at its position, with friendlier wording.
pub(crate) fn schema_error(source: &Source, e: &serde_yaml::Error) -> Diagnostic {
    let raw = e.to_string();
    // serde_yaml appends " at line L column C"; we show the position ourselves.
    let msg = match raw.find(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw.clone(),
    };
    let msg = friendlier(&msg);
    match e.location() {
        Some(l) => {
            let offset = source.offset_of(l.line(), l.column());
            let pos = crate::source::Pos {
                line: l.line(),
                col: l.column(),
                offset,
            };
            Diagnostic::at_loc(source, source.at(pos), msg)
        }
        None => {
            let mut d = Diagnostic::new(msg);
            d.loc = Some(source.at(crate::source::Pos::start()));
            d
        }
    }
}

fn friendlier(msg: &str) -> String {
    // "steps[0]: unknown field `sytemd`, expected one of ..." -> name modules explicitly.
    if let Some(rest) = msg.split("unknown field `").nth(1) {
        let field = rest.split('`').next().unwrap_or("");
        let prefix = msg.split(": unknown field").next().unwrap_or("");
        if prefix.starts_with("steps[")
            || prefix.starts_with("detect[")
            || prefix.starts_with("verify[")
        {
            let known: Vec<&str> = STEP_KEYS
                .iter()
                .copied()
                .chain(crate::modules::ModuleKind::ALL.iter().map(|k| k.key()))
                .collect();
            if let Some(close) = known.iter().find(|k| edit_distance(k, field) <= 2) {
                return format!("{prefix}: unknown key `{field}` (did you mean `{close}`?)");
            }
            return format!(
                "{prefix}: unknown key or module `{field}` (step keys: id, name, on, needs, when, register, retries, delay, until, timeout, ignore_errors, changed_when, failed_when, rollback, irreversible, no_rollback, tags, changes, check, serial, max_fail_percentage; kinds: ssh, api, wait, assert, set, include, {})",
                crate::modules::ModuleKind::ALL
                    .iter()
                    .map(|k| k.key())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    msg.to_string()
}

const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "on",
    "needs",
    "when",
    "register",
    "retries",
    "delay",
    "until",
    "timeout",
    "ignore_errors",
    "changed_when",
    "failed_when",
    "rollback",
    "irreversible",
    "no_rollback",
    "tags",
    "changes",
    "check",
    "serial",
    "max_fail_percentage",
    "ssh",
    "api",
    "wait",
    "assert",
    "set",
    "include",
    "params",
];

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The root playbook and every file it includes, each read once.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub root: PathBuf,
    pub files: BTreeMap<PathBuf, File>,
}

impl Loaded {
    pub fn root(&self) -> &File {
        &self.files[&self.root]
    }
}

/// Load a playbook (by name or path) and, transitively, its includes.
pub fn load(name: &str) -> Result<Loaded, Diagnostics> {
    let root = find(name, None).map_err(|m| Diagnostics::from(Diagnostic::new(m)))?;
    let mut loaded = Loaded {
        root: root.clone(),
        files: BTreeMap::new(),
    };
    let mut diags = Diagnostics::default();
    let mut stack = vec![root.clone()];
    visit(&root, &mut loaded, &mut stack, &mut diags);
    if diags.is_empty() {
        Ok(loaded)
    } else {
        Err(diags)
    }
}

fn visit(path: &Path, loaded: &mut Loaded, stack: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    if loaded.files.contains_key(path) {
        return;
    }
    let file = match read(path) {
        Ok(f) => f,
        Err(d) => {
            diags.push(d);
            return;
        }
    };
    let dir = path.parent().map(Path::to_path_buf);
    let includes: Vec<(String, String)> = ["detect", "steps", "verify"]
        .iter()
        .flat_map(|section| {
            let list = match *section {
                "detect" => &file.doc.detect,
                "steps" => &file.doc.steps,
                _ => &file.doc.verify,
            };
            list.iter().enumerate().filter_map(move |(i, s)| {
                s.include
                    .as_ref()
                    .map(|inc| (format!("{section}.{i}.include"), inc.clone()))
            })
        })
        .collect();
    let source = file.source.clone();
    loaded.files.insert(path.to_path_buf(), file);
    for (at, name) in includes {
        match find(&name, dir.as_deref()) {
            Ok(child) => {
                let key = child.canonicalize().unwrap_or(child.clone());
                if stack
                    .iter()
                    .any(|p| p.canonicalize().unwrap_or(p.clone()) == key)
                {
                    diags.push(
                        Diagnostic::at(&source, &at, format!("include cycle: {name} includes itself (directly or through another playbook)"))
                            .with_label("cycle"),
                    );
                    continue;
                }
                stack.push(child.clone());
                visit(&child, loaded, stack, diags);
                stack.pop();
            }
            Err(m) => diags.push(Diagnostic::at(&source, &at, m).with_label("not found")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_is_located() {
        let d = parse(Path::new("bad.yml"), "name: x\nsteps: [\n", b"").unwrap_err();
        assert!(d.headline().starts_with("bad.yml:"), "{}", d.headline());
        assert!(d.message.starts_with("invalid YAML"), "{}", d.message);
    }

    #[test]
    fn unknown_module_names_the_modules() {
        let d = parse(
            Path::new("p.yml"),
            "name: x\nsteps:\n  - id: a\n    systemd: { name: x }\n",
            b"",
        )
        .unwrap_err();
        assert!(
            d.headline()
                .starts_with("p.yml:4:5: steps[0]: unknown key or module `systemd`"),
            "{}",
            d.headline()
        );
        assert!(d.message.contains("service, file, link"), "{}", d.message);
    }

    #[test]
    fn near_misses_get_a_suggestion() {
        let d = parse(
            Path::new("p.yml"),
            "name: x\nsteps:\n  - id: a\n    ignore_error: true\n",
            b"",
        )
        .unwrap_err();
        assert!(
            d.message.contains("did you mean `ignore_errors`?"),
            "{}",
            d.message
        );
        assert_eq!(edit_distance("servce", "service"), 1);
    }
}
