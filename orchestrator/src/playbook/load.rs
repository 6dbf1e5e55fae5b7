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

/// A playbook that is not where its name or path says, with what was searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// `no playbook named "x"; did you mean "y"? (searched /abs/playbooks)`.
    pub message: String,
    /// How to make remedy find it (`REMEDY_PLAYBOOK_PATH`); `None` for a path.
    pub help: Option<String>,
}

impl NotFound {
    /// As a diagnostic of its own (a playbook named on the command line).
    pub fn diagnostic(self) -> Diagnostic {
        let d = Diagnostic::new(self.message.clone());
        self.attach(d)
    }

    /// Its hint on a diagnostic pointing at where the name was written (an `include`).
    pub fn attach(self, d: Diagnostic) -> Diagnostic {
        match self.help {
            Some(help) => d.with_help(help),
            None => d,
        }
    }
}

/// Resolve a playbook argument: an existing path is used as is; a name is looked up as
/// `NAME.yml` / `NAME.yaml` in the search path (and, for includes, beside the including file
/// first).
pub fn find(name: &str, beside: Option<&Path>) -> Result<PathBuf, NotFound> {
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
        return Err(NotFound {
            message: format!("no playbook file {}", absolute(&candidate).display()),
            help: None,
        });
    }
    let mut dirs: Vec<PathBuf> = beside.map(Path::to_path_buf).into_iter().collect();
    for dir in search_path() {
        // An include beside a file in ./playbooks would search it twice.
        if !dirs.iter().any(|d| absolute(d) == absolute(&dir)) {
            dirs.push(dir);
        }
    }
    for dir in &dirs {
        for ext in ["yml", "yaml"] {
            let p = dir.join(format!("{name}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(not_found(name, &dirs))
}

/// The error for a playbook name found in none of `dirs`: the closest names there are, every
/// directory searched (absolute: the search path is relative to the working directory), and
/// how to search more.
fn not_found(name: &str, dirs: &[PathBuf]) -> NotFound {
    let known: Vec<String> = dirs.iter().flat_map(|d| playbook_names(d)).collect();
    let suggestions = crate::error::similar(name, known.iter().map(String::as_str));
    let searched: Vec<String> = dirs
        .iter()
        .map(|d| {
            let shown = absolute(d).display().to_string();
            if d.is_dir() {
                shown
            } else {
                format!("{shown} (no such directory)")
            }
        })
        .collect();
    let mut message = format!("no playbook named {name:?}");
    if let Some(hint) = crate::error::did_you_mean(&suggestions) {
        message.push_str(&format!("; {hint}"));
    }
    message.push_str(&format!(" (searched {})", searched.join(", ")));
    NotFound {
        message,
        help: Some(format!(
            "give the playbook's path, or add the directory that holds it to {PATH_VAR} \
             (colon-separated; ./playbooks is always searched)"
        )),
    }
}

/// The names of the playbooks in `dir` (file names without `.yml` / `.yaml`), sorted.
fn playbook_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let ext = p.extension()?.to_str()?;
            if ext != "yml" && ext != "yaml" {
                return None;
            }
            Some(p.file_stem()?.to_str()?.to_string())
        })
        .collect();
    names.sort();
    names
}

/// `path` made absolute against the working directory, for messages (unchanged if that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
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
        // A step's own keys (`steps[0]`), not a key inside one of them (`steps[0].report`).
        let step_level = !prefix.contains('.');
        if step_level
            && (prefix.starts_with("steps[")
                || prefix.starts_with("detect[")
                || prefix.starts_with("verify["))
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
                "{prefix}: unknown key or module `{field}` (step keys: id, name, on, needs, when, register, retries, delay, until, timeout, ignore_errors, changed_when, failed_when, rollback, irreversible, no_rollback, consumes, tags, changes, check, serial, max_fail_percentage; kinds: ssh, api, wait, assert, set, report, include, {})",
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
    "consumes",
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
    "report",
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
    let root = find(name, None).map_err(|e| Diagnostics::from(e.diagnostic()))?;
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
            Err(e) => {
                let d = Diagnostic::at(&source, &at, e.message.clone()).with_label("not found");
                diags.push(e.attach(d));
            }
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

    /// A directory with these (empty) playbook files.
    fn shelf(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for n in names {
            std::fs::write(dir.path().join(n), "name: x\n").expect("write");
        }
        dir
    }

    #[test]
    fn unknown_playbook_suggests_names_from_every_directory_searched() {
        let a = shelf(&["vr-backup-loop.yml", "fix-vlan-range.yml", "notes.txt"]);
        let b = shelf(&["vr-backup-loop2.yaml"]);
        let gone = a.path().join("missing");
        let e = not_found(
            "vr-backup-lop",
            &[a.path().to_path_buf(), b.path().to_path_buf(), gone.clone()],
        );
        assert_eq!(
            e.message,
            format!(
                "no playbook named \"vr-backup-lop\"; did you mean \"vr-backup-loop\" or \
                 \"vr-backup-loop2\"? (searched {}, {}, {} (no such directory))",
                a.path().display(),
                b.path().display(),
                gone.display()
            )
        );
        assert_eq!(
            e.help.as_deref(),
            Some(
                "give the playbook's path, or add the directory that holds it to \
                 REMEDY_PLAYBOOK_PATH (colon-separated; ./playbooks is always searched)"
            )
        );
        let d = e.diagnostic();
        assert!(d.loc.is_none());
        assert!(d.help.is_some_and(|h| h.contains("REMEDY_PLAYBOOK_PATH")));
    }

    #[test]
    fn unknown_playbook_with_nothing_close_lists_no_guess() {
        let a = shelf(&["vr-backup-loop.yml"]);
        let e = not_found("recreate-ssvm", &[a.path().to_path_buf()]);
        assert_eq!(
            e.message,
            format!(
                "no playbook named \"recreate-ssvm\" (searched {})",
                a.path().display()
            )
        );
    }

    #[test]
    fn searched_directories_are_shown_absolute() {
        let e = not_found("x", &[PathBuf::from("no-such-playbooks-dir")]);
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(
            e.message,
            format!(
                "no playbook named \"x\" (searched {} (no such directory))",
                cwd.join("no-such-playbooks-dir").display()
            )
        );
    }

    #[test]
    fn a_misspelt_include_is_one_error_at_the_include_with_a_suggestion() {
        let dir = shelf(&["fix-vlan-range.yml"]);
        let root = dir.path().join("root.yml");
        std::fs::write(
            &root,
            "name: root\nsteps:\n  - id: vlans\n    include: fix-vlan-rang\n",
        )
        .expect("write");
        let e = load(root.to_str().expect("utf-8")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{:?}", e.0);
        let d = &e.0[0];
        // Then ./playbooks and $REMEDY_PLAYBOOK_PATH, which depend on where the test runs.
        let start = format!(
            "{}:4:14: no playbook named \"fix-vlan-rang\"; did you mean \"fix-vlan-range\"? \
             (searched {}, ",
            root.display(),
            dir.path().display(),
        );
        assert!(d.headline().starts_with(&start), "{}", d.headline());
        assert!(d
            .help
            .as_deref()
            .is_some_and(|h| h.contains("REMEDY_PLAYBOOK_PATH")));
    }
}
