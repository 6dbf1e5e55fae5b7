//! The one strict minijinja environment, and shell-safe interpolation.
//!
//! Every template a playbook contains is compiled once, at plan time, and named after where it
//! came from, so an error inside it points at the playbook's file:line. Undefined variables are
//! errors ([`UndefinedBehavior::Strict`]).
//!
//! Templates of shell commands (`ssh:`, `check:`, a rollback command) use the custom auto-escape
//! mode `shell`: every value interpolated into them is quoted for the place it lands in the
//! command line (bare, inside `'...'` or inside `"..."`), so a parameter such as `x; rm -rf /`
//! or `$(reboot)` reaches the program as one inert argument, byte for byte. Rendering writes each
//! value between NUL marks; [`shell::assemble`] then follows the shell's quoting state through
//! the rendered text and quotes each value for its context, or refuses a place where no quoting
//! is safe (inside backticks, after a backslash, ...). [`Templates::add`] checks the same places
//! in the template's source, so `remedy validate` reports them at file:line:col. A value that must
//! be inserted as shell syntax says so with the `raw` filter (`{{ flags | raw }}`), the one
//! escape hatch; [`Templates::raw_uses`] lists them for `remedy validate --strict`.
//!
//! Not here: which variables exist (the plan checks names before anything renders) and building
//! the context (runner).

pub mod names;
pub mod shell;

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, State, UndefinedBehavior};

use crate::error::Diagnostic;
pub use crate::quote::shell_quote;
use crate::quote::NUL_VALUE;
use crate::source::{Loc, Pos, Source};

pub use names::{Known, NameKind};

/// How interpolated values are written into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As text (API arguments, module arguments, messages).
    Text,
    /// Shell-quoted, unless marked `raw`.
    Shell,
}

/// A compiled template, with its origin.
#[derive(Debug, Clone)]
pub struct Tpl {
    name: Arc<str>,
    pub source: Arc<str>,
    pub loc: Loc,
    pub mode: Mode,
    /// The file line where the template text itself starts (differs from `loc` for `|` blocks).
    first_line: usize,
    /// Top-level variable names the template reads.
    pub vars: BTreeSet<String>,
    /// Whether the text contains any template syntax at all.
    pub is_static: bool,
    /// `var.attr` reads of top-level variables, for the compiler to check against results.
    pub attrs: Vec<AttrRead>,
}

/// An attribute read of a top-level variable (`probe.stdout`), where it is written.
#[derive(Debug, Clone)]
pub struct AttrRead {
    pub var: String,
    pub attr: String,
    pub loc: Loc,
}

/// A compiled expression (`when:`, `until:`, `applies_when:`, `assert: that:` ...).
#[derive(Debug, Clone)]
pub struct Expr {
    pub source: Arc<str>,
    pub loc: Loc,
    pub vars: BTreeSet<String>,
    /// `var.attr` reads of top-level variables.
    pub attrs: Vec<AttrRead>,
}

/// A render or evaluation failure at run or plan time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{loc}: {message}")]
pub struct RenderError {
    pub loc: Loc,
    pub message: String,
}

/// The environment and everything compiled into it.
#[derive(Clone)]
pub struct Templates {
    env: Environment<'static>,
    next: usize,
    raw_uses: Vec<Diagnostic>,
    /// Every filter, test and function `env` has (for did-you-mean and the docs).
    known: Arc<Known>,
}

/// A value the `raw` filter marked: inserted into a shell command as syntax, unquoted.
///
/// An object rather than a "safe" string, so that other filters that return safe strings
/// (`tojson`, `safe`) are still quoted: `raw` is the one way out.
#[derive(Debug)]
struct RawShell(String);

impl Object for RawShell {
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("count", &self.next)
            .finish()
    }
}

const SHELL: &str = "shell";

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|name| {
            if name.ends_with("#shell") {
                AutoEscape::Custom(SHELL)
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if state.auto_escape() != AutoEscape::Custom(SHELL) {
                return minijinja::escape_formatter(out, state, value);
            }
            let marked = shell_mark(value)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            out.write_str(&marked).map_err(minijinja::Error::from)
        });
        // `raw`: insert a value as shell syntax, unquoted. Only meaningful in shell templates.
        env.add_filter("raw", |v: Value| {
            Value::from_object(RawShell(value_text(&v)))
        });
        // `quote`: shell-quote explicitly, e.g. inside a text template that builds a command. In
        // a shell template every value is already quoted for its place, so it changes nothing.
        env.add_filter(
            "quote",
            |state: &State, v: Value| -> Result<Value, minijinja::Error> {
                if state.auto_escape() == AutoEscape::Custom(SHELL) {
                    return Ok(Value::from(value_text(&v)));
                }
                let q = shell_quote(&value_text(&v)).map_err(|e| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())
                })?;
                Ok(Value::from_safe_string(q))
            },
        );
        // `group_name(PREFIX)`: the inventory group the CloudStack source makes for a name, e.g.
        // `"Web VPC" | group_name("vpc")` is `vpc_web_vpc`.
        env.add_filter("group_name", |name: String, prefix: String| {
            crate::inventory::dynamic::group_name(&prefix, &name)
        });
        env.add_filter(
            "regex_search",
            |s: String, pattern: String| -> Result<Value, minijinja::Error> {
                let re = regex::Regex::new(&pattern).map_err(|e| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, format!("bad regex: {e}"))
                })?;
                Ok(re
                    .find(&s)
                    .map(|m| Value::from(m.as_str()))
                    .unwrap_or(Value::from(())))
            },
        );
        env.add_test(
            "match",
            |s: String, pattern: String| -> Result<bool, minijinja::Error> {
                let re = regex::Regex::new(&pattern).map_err(|e| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, format!("bad regex: {e}"))
                })?;
                Ok(re.is_match(&s))
            },
        );
        let known = Arc::new(Known::of(&env));
        Templates {
            env,
            next: 0,
            raw_uses: Vec::new(),
            known,
        }
    }

    /// Every filter, test and function a template may use.
    pub fn known(&self) -> &Known {
        &self.known
    }

    /// Every use of the `raw` filter in the templates compiled so far, as diagnostics (for
    /// `remedy validate --strict`).
    pub fn raw_uses(&self) -> &[Diagnostic] {
        &self.raw_uses
    }

    /// Compile `text` found at `path` in `source`. Syntax errors become diagnostics at the spot.
    pub fn add(
        &mut self,
        source: &Source,
        path: &str,
        text: &str,
        mode: Mode,
    ) -> Result<Tpl, Diagnostic> {
        let loc = source.loc(path);
        // For `|`/`>` blocks the indexed position is already the first content line.
        let first_line = loc.pos.line;
        self.add_at(source, loc, first_line, text, mode)
    }

    fn add_at(
        &mut self,
        source: &Source,
        loc: Loc,
        first_line: usize,
        text: &str,
        mode: Mode,
    ) -> Result<Tpl, Diagnostic> {
        self.next += 1;
        let suffix = match mode {
            Mode::Shell => "#shell",
            Mode::Text => "#text",
        };
        let name: Arc<str> = Arc::from(format!("{loc}@{}{suffix}", self.next));
        let is_static = !(text.contains("{{") || text.contains("{%") || text.contains("{#"));
        let checked = shell::check_template(text);
        for &(offset, len) in &checked.raw {
            self.raw_uses.push(
                Diagnostic::at_loc(
                    source,
                    loc_in(source, &loc, text, offset, len),
                    "`raw` inserts a value unquoted, and --strict forbids it",
                )
                .with_len(len)
                .with_label("raw value")
                .with_help(
                    "remove `| raw`: the value is then quoted for its place in the command; \
                     split options into separate parameters if they were inserted raw",
                ),
            );
        }
        if mode == Mode::Shell {
            if text.contains(shell::MARK) {
                return Err(Diagnostic::at_loc(
                    source,
                    loc,
                    "a shell command contains a NUL byte, which no command line can carry",
                ));
            }
            if let Some(f) = checked.refused.first() {
                return Err(Diagnostic::at_loc(
                    source,
                    loc_in(source, &loc, text, f.offset, f.len),
                    f.refusal.to_string(),
                )
                .with_len(f.len)
                .with_label("no quoting is safe here")
                .with_help(f.refusal.fix));
            }
        }
        self.env
            .add_template_owned(name.to_string(), text.to_string())
            .map_err(|e| template_diag(source, &loc, first_line, text, &e))?;
        let compiled = self
            .env
            .get_template(&name)
            .map_err(|e| template_diag(source, &loc, first_line, text, &e))?;
        let scan = {
            let c = minijinja::machinery::get_compiled_template(&compiled);
            names::scan(std::iter::once(&c.instructions).chain(c.blocks.values()))
        };
        let vars = compiled.undeclared_variables(false);
        let checked = self.check_names(source, &loc, text, 0, &scan, vars)?;
        Ok(Tpl {
            name,
            source: Arc::from(text),
            loc,
            mode,
            first_line,
            vars: checked.0,
            is_static,
            attrs: checked.1,
        })
    }

    /// Compile an expression. Accepts a bare expression (`state.rc != 0`) or one wrapped in a
    /// single `{{ ... }}`.
    pub fn expr(&self, source: &Source, path: &str, text: &str) -> Result<Expr, Diagnostic> {
        let loc = source.loc(path);
        let inner = strip_braces(text);
        let compiled = self.env.compile_expression(inner).map_err(|e| {
            Diagnostic::at_loc(
                source,
                loc.clone(),
                format!("invalid expression: {}", error_message(&e, inner)),
            )
        })?;
        let vars = compiled.undeclared_variables(false);
        let scan = names::scan_expr(inner);
        let base = (inner.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let (vars, attrs) = self.check_names(source, &loc, text, base, &scan, vars)?;
        Ok(Expr {
            source: Arc::from(inner),
            loc,
            vars,
            attrs,
        })
    }

    /// The filters, tests and functions `scan` found must exist (the first unknown one is an
    /// error at its name, with did-you-mean). Returns the template's variables without the
    /// functions it only calls, and its attribute reads located in the file. `base` is where
    /// the scanned text starts in `text`.
    fn check_names(
        &self,
        source: &Source,
        loc: &Loc,
        text: &str,
        base: usize,
        scan: &names::Scan,
        vars: std::collections::HashSet<String>,
    ) -> Result<(BTreeSet<String>, Vec<AttrRead>), Diagnostic> {
        let at = |offset: Option<usize>, len: usize| match offset {
            Some(o) if base + o + len <= text.len() => loc_in(source, loc, text, base + o, len),
            _ => loc.clone(),
        };
        for u in &scan.uses {
            if names::has(&self.env, u.kind, &u.name) {
                continue;
            }
            let word = u.kind.word();
            let candidates = self.known.of_kind(u.kind).iter().map(String::as_str);
            let similar = crate::error::similar(&u.name, candidates);
            let help = crate::error::did_you_mean(&similar).unwrap_or_else(|| {
                let all: Vec<&str> = self
                    .known
                    .of_kind(u.kind)
                    .iter()
                    .map(String::as_str)
                    .collect();
                format!("the {word}s there are: {}", all.join(", "))
            });
            return Err(Diagnostic::at_loc(
                source,
                at(u.offset, u.name.len()),
                format!("unknown {word} `{}`", u.name),
            )
            .with_len(u.name.len())
            .with_label(format!("unknown {word}"))
            .with_help(help));
        }
        let vars = vars
            .into_iter()
            .filter(|v| scan.lookups.contains(v) || !self.known.functions.contains(v))
            .collect();
        let attrs = scan
            .attrs
            .iter()
            .map(|a| AttrRead {
                var: a.var.clone(),
                attr: a.attr.clone(),
                loc: at(a.offset, a.attr.len()),
            })
            .collect();
        Ok((vars, attrs))
    }

    /// Render a compiled template against a context.
    pub fn render(&self, tpl: &Tpl, ctx: &Value) -> Result<String, RenderError> {
        if tpl.is_static {
            return Ok(tpl.source.to_string());
        }
        let t = self.env.get_template(&tpl.name).map_err(|e| RenderError {
            loc: tpl.loc.clone(),
            message: e.to_string(),
        })?;
        let rendered = t.render(ctx).map_err(|e| {
            let line = e.line().unwrap_or(1);
            let mut loc = tpl.loc.clone();
            if line > 1 || tpl.first_line != tpl.loc.pos.line {
                loc.pos = Pos {
                    line: tpl.first_line + line - 1,
                    col: 1,
                    offset: loc.pos.offset,
                };
            }
            RenderError {
                loc,
                message: undefined_message(&e, &tpl.source, &tpl.vars, &tpl.attrs, ctx),
            }
        })?;
        match tpl.mode {
            Mode::Text => Ok(rendered),
            Mode::Shell => shell::assemble(&rendered).map_err(|r| RenderError {
                loc: tpl.loc.clone(),
                message: format!("{r} (fix: {})", r.fix),
            }),
        }
    }

    /// Evaluate an expression to a value.
    pub fn eval(&self, expr: &Expr, ctx: &Value) -> Result<Value, RenderError> {
        let compiled = self
            .env
            .compile_expression(&expr.source)
            .map_err(|e| RenderError {
                loc: expr.loc.clone(),
                message: error_message(&e, &expr.source),
            })?;
        compiled.eval(ctx).map_err(|e| RenderError {
            loc: expr.loc.clone(),
            message: undefined_message(&e, &expr.source, &expr.vars, &expr.attrs, ctx),
        })
    }

    /// Evaluate an expression as a condition (Jinja truthiness).
    pub fn test(&self, expr: &Expr, ctx: &Value) -> Result<bool, RenderError> {
        Ok(self.eval(expr, ctx)?.is_true())
    }
}

/// `{{ x }}` -> `x`, leaving anything else alone.
fn strip_braces(text: &str) -> &str {
    let t = text.trim();
    if let Some(inner) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        if !inner.contains("{{") && !inner.contains("}}") {
            return inner.trim();
        }
    }
    t
}

/// The text of a value as it would be printed.
fn value_text(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None if v.is_none() || v.is_undefined() => String::new(),
        None => v.to_string(),
    }
}

/// A value as a shell template's formatter writes it: a `raw` value as is, any other between
/// two [`shell::MARK`]s for [`shell::assemble`] to quote. Values with a NUL byte are refused.
fn shell_mark(value: &Value) -> Result<String, String> {
    if let Some(raw) = value.downcast_object_ref::<RawShell>() {
        if raw.0.contains(shell::MARK) {
            return Err(
                "a `raw` value contains a NUL byte (or the output of a block: `{% set %}`, \
                 `{% filter %}`, a macro), which no command line can carry"
                    .into(),
            );
        }
        return Ok(raw.0.clone());
    }
    let text = value_text(value);
    if text.contains(shell::MARK) {
        if value.is_safe() {
            return Err(
                "the output of a block (`{% set %}`, `{% filter %}`, a macro) cannot \
                        be interpolated into a shell command; interpolate the values themselves"
                    .into(),
            );
        }
        return Err(NUL_VALUE.into());
    }
    Ok(format!("{m}{text}{m}", m = shell::MARK))
}

/// Where the byte range `offset..offset + len` of a template's `text`, found at `loc`, is in the
/// file: exact for plain, quoted and block scalars without escapes, else the field itself.
fn loc_in(source: &Source, loc: &Loc, text: &str, offset: usize, len: usize) -> Loc {
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col_in_line = before[line_start..].chars().count();
    let quoted = line == 0
        && matches!(
            source.text[loc.pos.offset..].chars().next(),
            Some('"' | '\'')
        );
    let pos_line = loc.pos.line + line;
    let col = loc.pos.col + col_in_line + usize::from(quoted);
    let offset_in_file = source.offset_of(pos_line, col);
    let wanted = &text[offset..offset + len];
    if source.text[offset_in_file..].starts_with(wanted) {
        return source.at(Pos {
            line: pos_line,
            col,
            offset: offset_in_file,
        });
    }
    // Escapes in a quoted scalar shift columns: look for the tag on its line, after the field.
    let from = if line == 0 {
        loc.pos.offset
    } else {
        source.offset_of(pos_line, 1)
    };
    let line_end = source.text[from..]
        .find('\n')
        .map_or(source.text.len(), |i| from + i);
    if let Some(i) = source.text[from..line_end].find(wanted) {
        let at = from + i;
        let line_start = source.text[..at].rfind('\n').map_or(0, |i| i + 1);
        return source.at(Pos {
            line: pos_line,
            col: source.text[line_start..at].chars().count() + 1,
            offset: at,
        });
    }
    loc.clone()
}

fn error_message(e: &minijinja::Error, template: &str) -> String {
    let what = match e.kind() {
        ErrorKind::UndefinedError => "undefined value".to_string(),
        _ => e.detail().unwrap_or(&e.kind().to_string()).to_string(),
    };
    let snippet = e
        .range()
        .and_then(|r| template.get(r))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    match (e.kind(), snippet) {
        (ErrorKind::UndefinedError, Some(s)) => format!("undefined value in `{s}`"),
        (_, Some(s)) if !what.contains(s) => format!("{what} (in `{s}`)"),
        _ => what,
    }
}

/// [`error_message`], and for an undefined value the name that is missing, found from the
/// template's variables and attribute reads and the context ([`names::undefined_name`]).
fn undefined_message(
    e: &minijinja::Error,
    template: &str,
    vars: &BTreeSet<String>,
    attrs: &[AttrRead],
    ctx: &Value,
) -> String {
    let base = error_message(e, template);
    if e.kind() != ErrorKind::UndefinedError {
        return base;
    }
    match names::undefined_name(vars, attrs, ctx) {
        Some(what) => format!("{base}: {what}"),
        None => base,
    }
}

fn template_diag(
    source: &Source,
    loc: &Loc,
    first_line: usize,
    text: &str,
    e: &minijinja::Error,
) -> Diagnostic {
    let mut loc = loc.clone();
    if let Some(line) = e.line() {
        if line > 1 || first_line != loc.pos.line {
            let l = first_line + line - 1;
            loc.pos = Pos {
                line: l,
                col: 1,
                offset: source.offset_of(l, 1),
            };
        }
    }
    Diagnostic::at_loc(
        source,
        loc,
        format!("invalid template: {}", error_message(e, text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn src(text: &str) -> Source {
        Source::parse("pb.yml", text).unwrap()
    }

    #[test]
    fn shell_templates_quote_hostile_values() {
        let s = src("ssh: echo {{ v }}\n");
        let mut t = Templates::new();
        let tpl = t.add(&s, "ssh", "echo {{ v }}", Mode::Shell).unwrap();
        for (v, want) in [
            ("x; rm -rf /", "echo 'x; rm -rf /'"),
            ("$(reboot)", "echo '$(reboot)'"),
            ("`reboot`", "echo '`reboot`'"),
            ("it's", r"echo 'it'\''s'"),
            ("eth1", "echo eth1"),
            ("", "echo ''"),
            ("a\nb", "echo 'a\nb'"),
        ] {
            assert_eq!(t.render(&tpl, &context! { v => v }).unwrap(), want, "{v}");
        }
        // numbers and lists are quoted by their printed form
        assert_eq!(
            t.render(&tpl, &context! { v => vec!["a b", "c"] }).unwrap(),
            r#"echo '["a b", "c"]'"#
        );
    }

    #[test]
    fn raw_filter_opts_out_of_quoting() {
        let s = src("ssh: x\n");
        let mut t = Templates::new();
        let tpl = t
            .add(
                &s,
                "ssh",
                "ip route {{ args | raw }} {{ dev }}",
                Mode::Shell,
            )
            .unwrap();
        let out = t
            .render(&tpl, &context! { args => "add default", dev => "eth 1" })
            .unwrap();
        assert_eq!(out, "ip route add default 'eth 1'");
    }

    #[test]
    fn values_inside_quotes_are_quoted_for_their_place() {
        let s = src("ssh: x\n");
        let mut t = Templates::new();
        let single = t
            .add(&s, "ssh", "echo 'hello {{ name }}'", Mode::Shell)
            .unwrap();
        let double = t
            .add(&s, "ssh", r#"echo "hello {{ name }}""#, Mode::Shell)
            .unwrap();
        let chmod = "x; chmod 777 /etc/remedy-test.conf";
        assert_eq!(
            t.render(&single, &context! { name => chmod }).unwrap(),
            "echo 'hello x; chmod 777 /etc/remedy-test.conf'"
        );
        assert_eq!(
            t.render(&single, &context! { name => "x'; id; '" })
                .unwrap(),
            r"echo 'hello x'\''; id; '\'''"
        );
        assert_eq!(
            t.render(&double, &context! { name => "$(id) `id` \"\\" })
                .unwrap(),
            r#"echo "hello \$(id) \`id\` \"\\""#
        );
    }

    #[test]
    fn only_raw_is_inserted_unquoted() {
        let s = src("ssh: x\n");
        let mut t = Templates::new();
        // tojson and safe make "safe" strings; in a shell command they are quoted all the same
        let tpl = t
            .add(
                &s,
                "ssh",
                "echo {{ v | tojson }} {{ v | safe }}",
                Mode::Shell,
            )
            .unwrap();
        assert_eq!(
            t.render(&tpl, &context! { v => "$(id)" }).unwrap(),
            r#"echo '"$(id)"' '$(id)'"#
        );
        // quote in a shell template quotes once, for the place
        let tpl = t
            .add(&s, "ssh", "echo '{{ v | quote }}'", Mode::Shell)
            .unwrap();
        assert_eq!(
            t.render(&tpl, &context! { v => "a b" }).unwrap(),
            "echo 'a b'"
        );
        // and in a text template it still quotes
        let tpl = t.add(&s, "ssh", "{{ v | quote }}", Mode::Text).unwrap();
        assert_eq!(t.render(&tpl, &context! { v => "a b" }).unwrap(), "'a b'");
        let tpl = t.add(&s, "ssh", "{{ v | raw }}", Mode::Text).unwrap();
        assert_eq!(t.render(&tpl, &context! { v => "a b" }).unwrap(), "a b");
    }

    #[test]
    fn the_rendered_text_decides_when_the_source_cannot() {
        let s = src("ssh: x\n");
        let mut t = Templates::new();
        // a raw value opens a backtick: the value after it is refused when rendering
        let tpl = t
            .add(&s, "ssh", "echo {{ r | raw }}{{ v }}", Mode::Shell)
            .unwrap();
        let e = t
            .render(&tpl, &context! { r => "`", v => "x" })
            .unwrap_err();
        assert_eq!(
            e.message,
            "a value cannot be interpolated inside backticks, where the shell reads backslashes \
             and quotes a second time (fix: use $(...) instead of backticks)"
        );
        // block output carries marked values: refused rather than quoted twice
        let tpl = t
            .add(
                &s,
                "ssh",
                "{% set b %}a {{ v }}{% endset %}echo {{ b }}",
                Mode::Shell,
            )
            .unwrap();
        let e = t.render(&tpl, &context! { v => "x" }).unwrap_err();
        assert!(e.message.contains("output of a block"), "{e}");
        // control flow: only the branch taken counts
        let tpl = t
            .add(
                &s,
                "ssh",
                "echo {% if q %}'{% endif %}{{ v }}{% if q %}'{% endif %}",
                Mode::Shell,
            )
            .unwrap();
        assert_eq!(
            t.render(&tpl, &context! { q => true, v => "a'b" }).unwrap(),
            r"echo 'a'\''b'"
        );
        assert_eq!(
            t.render(&tpl, &context! { q => false, v => "a'b" })
                .unwrap(),
            r"echo 'a'\''b'"
        );
        assert_eq!(
            t.render(&tpl, &context! { q => true, v => "ab" }).unwrap(),
            "echo 'ab'"
        );
        assert_eq!(
            t.render(&tpl, &context! { q => false, v => "ab" }).unwrap(),
            "echo ab"
        );
    }

    #[test]
    fn unsafe_places_are_refused_at_the_interpolation() {
        let yaml = "name: x\nsteps:\n  - ssh: echo `{{ a }}`\n  - ssh: \"echo \\\\{{ a }}\"\n  - ssh: |\n      echo ok\n      echo ${x:-{{ a }}}\n";
        let s = src(yaml);
        let mut t = Templates::new();
        let d = t
            .add(&s, "steps.0.ssh", "echo `{{ a }}`", Mode::Shell)
            .unwrap_err();
        assert_eq!(
            d.headline(),
            "pb.yml:3:16: a value cannot be interpolated inside backticks, where the shell \
             reads backslashes and quotes a second time"
        );
        assert_eq!(d.help.as_deref(), Some("use $(...) instead of backticks"));
        assert_eq!(d.len, "{{ a }}".len());
        let d = t
            .add(&s, "steps.1.ssh", "echo \\{{ a }}", Mode::Shell)
            .unwrap_err();
        assert!(
            d.headline()
                .starts_with("pb.yml:4:18: a value cannot be interpolated right after a backslash"),
            "{}",
            d.headline()
        );
        let d = t
            .add(
                &s,
                "steps.2.ssh",
                "echo ok\necho ${x:-{{ a }}}\n",
                Mode::Shell,
            )
            .unwrap_err();
        assert!(
            d.headline()
                .starts_with("pb.yml:7:17: a value cannot be interpolated inside `${...}`"),
            "{}",
            d.headline()
        );
        // text templates are not shell commands
        assert!(t
            .add(&s, "steps.0.ssh", "echo `{{ a }}`", Mode::Text)
            .is_ok());
    }

    #[test]
    fn raw_uses_are_listed_for_strict() {
        let s = src("name: x\nssh: ip route {{ args | raw }} dev {{ dev }}\n");
        let mut t = Templates::new();
        t.add(
            &s,
            "ssh",
            "ip route {{ args | raw }} dev {{ dev }}",
            Mode::Shell,
        )
        .unwrap();
        let uses: Vec<String> = t.raw_uses().iter().map(|d| d.headline()).collect();
        assert_eq!(
            uses,
            ["pb.yml:2:15: `raw` inserts a value unquoted, and --strict forbids it"]
        );
    }

    #[test]
    fn text_templates_do_not_quote() {
        let s = src("a: x\n");
        let mut t = Templates::new();
        let tpl = t.add(&s, "a", "{{ v }}", Mode::Text).unwrap();
        assert_eq!(
            t.render(&tpl, &context! { v => "a b; c" }).unwrap(),
            "a b; c"
        );
    }

    #[test]
    fn nul_bytes_are_refused_in_shell_mode() {
        let s = src("ssh: x\n");
        let mut t = Templates::new();
        let tpl = t.add(&s, "ssh", "echo {{ v }}", Mode::Shell).unwrap();
        let e = t.render(&tpl, &context! { v => "a\0b" }).unwrap_err();
        assert!(e.message.contains("NUL"), "{e}");
    }

    #[test]
    fn undefined_is_an_error_with_the_playbook_line() {
        let s = src("name: x\nsteps:\n  - ssh: |\n      echo one\n      echo {{ a.missing }}\n");
        let mut t = Templates::new();
        let tpl = t
            .add(
                &s,
                "steps.0.ssh",
                "echo one\necho {{ a.missing }}\n",
                Mode::Shell,
            )
            .unwrap();
        assert_eq!(tpl.vars, ["a".to_string()].into_iter().collect());
        let e = t.render(&tpl, &context! { a => context!{} }).unwrap_err();
        assert_eq!(e.loc.pos.line, 5, "{e}");
        assert!(e.message.contains("a.missing"), "{e}");
        let e = t
            .render(&tpl, &context! { a => context!{ mising => 1, other => 2 } })
            .unwrap_err();
        assert_eq!(
            e.message,
            "undefined value in `a.missing`: `a` has no attribute `missing` (it has: mising, \
             other); did you mean \"mising\"?"
        );
        // an expression names the variable it could not find
        let s = src("when: x\n");
        let x = t.expr(&s, "when", "probe.rc == other.rc").unwrap();
        let e = t
            .test(&x, &context! { probe => context!{ rc => 0 } })
            .unwrap_err();
        assert!(
            e.message.ends_with(": `other` is not defined"),
            "{}",
            e.message
        );
    }

    #[test]
    fn syntax_errors_point_at_the_field() {
        let s = src("name: x\nssh: echo {{ a \n");
        let mut t = Templates::new();
        let d = t.add(&s, "ssh", "echo {{ a ", Mode::Shell).unwrap_err();
        assert!(
            d.headline().starts_with("pb.yml:2:6: invalid template"),
            "{}",
            d.headline()
        );
    }

    #[test]
    fn expressions_accept_bare_or_braced() {
        let s = src("when: x\n");
        let t = Templates::new();
        for text in ["state.rc != 0", "{{ state.rc != 0 }}"] {
            let e = t.expr(&s, "when", text).unwrap();
            assert_eq!(e.vars, ["state".to_string()].into_iter().collect());
            assert!(t
                .test(&e, &context! { state => context! { rc => 3 } })
                .unwrap());
            assert!(!t
                .test(&e, &context! { state => context! { rc => 0 } })
                .unwrap());
        }
        assert!(t.expr(&s, "when", "a ==").is_err());
    }

    #[test]
    fn regex_helpers() {
        let s = src("when: x\n");
        let t = Templates::new();
        let e = t
            .expr(&s, "when", "out is match('^Status: (PRIMARY|MASTER)')")
            .unwrap();
        assert!(t.test(&e, &context! { out => "Status: MASTER" }).unwrap());
        assert!(!t.test(&e, &context! { out => "Status: BACKUP" }).unwrap());
    }
}
