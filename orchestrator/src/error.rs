//! Errors that reach the user, and the exit codes they map to.
//!
//! Anything a user wrote (playbook, inventory, parameters) is reported as a [`Diagnostic`]:
//! a message, the file:line:column it is about, an optional hint, and when the source text is
//! at hand a snippet of it rendered by miette. The process exit code is a contract (DESIGN.md):
//! [`ExitCode`] names every one.
//!
//! Not here: errors that are results (a failing step on one target is an outcome the runner
//! records, not an `Error`).

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};

use crate::source::{Loc, Source};

/// The process exit codes. Documented in the README; never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success, or nothing to do.
    Success = 0,
    /// Any other error (I/O, audit log, internal).
    Other = 1,
    /// The remediation failed and was rolled back cleanly.
    RolledBack = 2,
    /// The remediation failed and the rollback is incomplete: a human must act.
    RollbackIncomplete = 3,
    /// Invalid input: playbook, inventory or parameters.
    InvalidInput = 4,
    /// A plan was refused (stale, tampered, expired, irreversible without approval).
    PlanRefused = 5,
    /// A lock is held by another run.
    LockHeld = 6,
    /// The remediation failed before it changed anything: nothing to undo (every change it
    /// may have made was read again and found as before).
    FailedUnchanged = 7,
    /// The run succeeded (nothing failed) and a `report` step found a problem.
    Found = 8,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Whether the run itself succeeded: exit 0, or 8 (it succeeded and found problems).
    pub fn succeeded(self) -> bool {
        matches!(self, ExitCode::Success | ExitCode::Found)
    }
}

/// One problem in something the user wrote.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub loc: Option<Loc>,
    /// The source text of `loc.file`, for a snippet.
    pub text: Option<Arc<str>>,
    /// Length in bytes of the offending text at `loc` (0: point at the position).
    pub len: usize,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            loc: None,
            text: None,
            len: 0,
            label: None,
            help: None,
        }
    }

    /// A problem at `path` (e.g. `steps.2.needs.0`) of `source`: points at that value.
    pub fn at(source: &Source, path: &str, message: impl Into<String>) -> Self {
        Self::at_loc(source, source.loc(path), message)
    }

    /// A problem about the key of `path` (e.g. an unknown or misplaced key).
    pub fn at_key(source: &Source, path: &str, message: impl Into<String>) -> Self {
        Self::at_loc(source, source.key_loc(path), message)
    }

    pub fn at_loc(source: &Source, loc: Loc, message: impl Into<String>) -> Self {
        let len = token_len(&source.text, loc.pos.offset);
        Diagnostic {
            message: message.into(),
            loc: Some(loc),
            text: Some(source.text.clone()),
            len,
            label: None,
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_len(mut self, len: usize) -> Self {
        self.len = len;
        self
    }

    /// `file:line:col: message`, the first line of the rendering; stable for scripts and tests.
    pub fn headline(&self) -> String {
        match &self.loc {
            Some(loc) => format!("{loc}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// The full rendering: headline, then a source snippet with a label, then the hint.
    pub fn render(&self, color: bool) -> String {
        let mut out = format!("error: {}\n", self.headline());
        if let (Some(loc), Some(text)) = (&self.loc, &self.text) {
            let report = Snippet {
                src: NamedSource::new(loc.file.display().to_string(), text.to_string()),
                span: (loc.pos.offset, self.len).into(),
                label: self.label.clone().unwrap_or_else(|| "here".into()),
            };
            let theme = if color {
                GraphicalTheme::unicode()
            } else {
                GraphicalTheme::unicode_nocolor()
            };
            let handler = GraphicalReportHandler::new_themed(theme)
                .with_context_lines(1)
                .with_width(100)
                .with_footer(String::new());
            let mut snippet = String::new();
            if handler.render_report(&mut snippet, &report).is_ok() {
                // miette prints the (empty) message line first; keep only the snippet.
                for line in snippet.lines().skip_while(|l| !l.contains('╭')) {
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
            }
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("  help: {help}\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// Length of the token starting at `offset`: up to the end of the line for scalars, trimmed.
fn token_len(text: &str, offset: usize) -> usize {
    let rest = text.get(offset..).unwrap_or("");
    let line = rest.split('\n').next().unwrap_or("");
    let line = line.split(" #").next().unwrap_or(line);
    line.trim_end().len()
}

#[derive(Debug)]
struct Snippet {
    src: NamedSource<String>,
    span: SourceSpan,
    label: String,
}

impl fmt::Display for Snippet {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Snippet {}

impl miette::Diagnostic for Snippet {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(miette::LabeledSpan::new(
            Some(self.label.clone()),
            self.span.offset(),
            self.span.len(),
        ))))
    }
}

/// How alike two names must be (normalised Damerau-Levenshtein, 0..1) to be suggested: one
/// slip in a short name (`rooters`, `web-vcp`) passes, a different name (`nope`) does not.
const SIMILAR_ENOUGH: f64 = 0.7;

/// How many suggestions a message lists at most.
const MAX_SUGGESTIONS: usize = 3;

/// The names among `candidates` that `word` is probably a misspelling of, closest first
/// (ties in the candidates' order), at most three, without duplicates. Case is ignored.
pub fn similar<'a>(original: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let word = original.to_lowercase();
    let mut scored: Vec<(f64, &str)> = Vec::new();
    for c in candidates {
        if c == original || scored.iter().any(|(_, seen)| *seen == c) {
            continue;
        }
        let score = strsim::normalized_damerau_levenshtein(&word, &c.to_lowercase());
        if score >= SIMILAR_ENOUGH {
            scored.push((score, c));
        }
    }
    // Stable: equal scores keep the candidates' order.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// `did you mean "a"?`, `did you mean "a" or "b"?`, `did you mean "a", "b" or "c"?`; `None`
/// without suggestions.
pub fn did_you_mean(suggestions: &[String]) -> Option<String> {
    let quoted: Vec<String> = suggestions.iter().map(|s| format!("{s:?}")).collect();
    match quoted.as_slice() {
        [] => None,
        [one] => Some(format!("did you mean {one}?")),
        [rest @ .., last] => Some(format!("did you mean {} or {last}?", rest.join(", "))),
    }
}

/// Several diagnostics from one input: everything wrong is reported at once.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self))
        }
    }

    pub fn render(&self, color: bool) -> String {
        self.0.iter().map(|d| d.render(color)).collect()
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// The top-level error of a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input (exit 4), with every problem found.
    #[error("{}", .0.0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Diagnostics),
    #[error("audit log: {0}")]
    Audit(String),
    #[error("plan refused: {0}")]
    PlanRefused(String),
    #[error("{0}")]
    LockHeld(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Invalid(_) => ExitCode::InvalidInput,
            Error::PlanRefused(_) => ExitCode::PlanRefused,
            Error::LockHeld(_) => ExitCode::LockHeld,
            Error::Audit(_) | Error::Other(_) => ExitCode::Other,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(Diagnostic::new(message).into())
    }

    pub fn render(&self, color: bool) -> String {
        match self {
            Error::Invalid(ds) => ds.render(color),
            other => format!("error: {other}\n"),
        }
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Invalid(d.into())
    }
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_headline_and_snippet() {
        let src = Source::parse("pb.yml", "name: x\nsteps:\n  - id: a\n    on: web\n").unwrap();
        let d = Diagnostic::at(&src, "steps.0.on", "unknown host group \"web\"")
            .with_label("not in inventory")
            .with_help("inventory has: db, lb");
        let text = d.render(false);
        assert!(
            text.starts_with("error: pb.yml:4:9: unknown host group \"web\"\n"),
            "{text}"
        );
        assert!(text.contains("not in inventory"), "{text}");
        assert!(text.contains("on: web"), "{text}");
        assert!(text.contains("help: inventory has: db, lb"), "{text}");
    }

    #[test]
    fn similar_names_closest_first_and_at_most_three() {
        let names = [
            "routes",
            "routers",
            "hypervisors",
            "ssvm",
            "Routers",
            "rooter",
        ];
        assert_eq!(
            similar("rooters", names),
            ["routers", "Routers", "rooter"],
            "one slip each; case ignored; ties keep the order given"
        );
        assert_eq!(similar("web-vcp", ["web-vpc", "db-vpc"]), ["web-vpc"]);
        assert!(similar("nope", ["web-vpc", "vpc_web_vpc"]).is_empty());
        assert!(similar("routers", ["routers"]).is_empty(), "not itself");
        assert_eq!(did_you_mean(&[]), None);
        assert_eq!(
            did_you_mean(&["a".into()]).as_deref(),
            Some("did you mean \"a\"?")
        );
        assert_eq!(
            did_you_mean(&["a".into(), "b".into(), "c".into()]).as_deref(),
            Some("did you mean \"a\", \"b\" or \"c\"?")
        );
    }

    #[test]
    fn exit_codes_are_the_contract() {
        assert_eq!(ExitCode::RolledBack.code(), 2);
        assert_eq!(ExitCode::RollbackIncomplete.code(), 3);
        assert_eq!(Error::invalid("x").exit_code().code(), 4);
        assert_eq!(Error::PlanRefused("x".into()).exit_code().code(), 5);
        assert_eq!(Error::LockHeld("x".into()).exit_code().code(), 6);
    }
}
