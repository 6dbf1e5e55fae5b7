//! The one strict minijinja environment, and shell-safe interpolation.
//!
//! Every template a playbook contains is compiled once, at plan time, and named after where it
//! came from, so an error inside it points at the playbook's file:line. Undefined variables are
//! errors ([`UndefinedBehavior::Strict`]).
//!
//! Templates of shell commands (`ssh:`, `check:`, a rollback command) use the custom auto-escape
//! mode `shell`: every value interpolated into them is single-quoted for a POSIX shell, so a
//! parameter such as `x; rm -rf /` or `$(reboot)` stays one inert argument. A value that must be
//! inserted as shell syntax says so with the `raw` filter (`{{ flags | raw }}`).
//!
//! Not here: which variables exist (the plan checks names before anything renders) and building
//! the context (runner).

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use crate::error::Diagnostic;
use crate::source::{Loc, Pos, Source};

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
}

/// A compiled expression (`when:`, `until:`, `applies_when:`, `assert: that:` ...).
#[derive(Debug, Clone)]
pub struct Expr {
    pub source: Arc<str>,
    pub loc: Loc,
    pub vars: BTreeSet<String>,
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
            if state.auto_escape() == AutoEscape::Custom(SHELL) && !value.is_safe() {
                let text = value_text(value);
                let quoted = shell_quote(&text).map_err(|e| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())
                })?;
                out.write_str(&quoted).map_err(minijinja::Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        // `raw`: insert a value as shell syntax, unquoted. Only meaningful in shell templates.
        env.add_filter("raw", |v: Value| Value::from_safe_string(value_text(&v)));
        // `quote`: shell-quote explicitly, e.g. inside a text template that builds a command.
        env.add_filter("quote", |v: Value| -> Result<Value, minijinja::Error> {
            let q = shell_quote(&value_text(&v))
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            Ok(Value::from_safe_string(q))
        });
        // `group_name(PREFIX)`: the inventory group the CloudStack source makes for a name, e.g.
        // `"Web VPC" | group_name("vpc")` is `vpc_web_vpc`.
        env.add_filter("group_name", |name: String, prefix: String| {
            crate::cloudstack::inventory::group_name(&prefix, &name)
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
        Templates { env, next: 0 }
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
        self.env
            .add_template_owned(name.to_string(), text.to_string())
            .map_err(|e| template_diag(source, &loc, first_line, text, &e))?;
        let vars = self
            .env
            .get_template(&name)
            .map(|t| t.undeclared_variables(false))
            .map_err(|e| template_diag(source, &loc, first_line, text, &e))?
            .into_iter()
            .collect();
        Ok(Tpl {
            name,
            source: Arc::from(text),
            loc,
            mode,
            first_line,
            vars,
            is_static,
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
        let vars = compiled.undeclared_variables(false).into_iter().collect();
        Ok(Expr {
            source: Arc::from(inner),
            loc,
            vars,
        })
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
        t.render(ctx).map_err(|e| {
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
                message: error_message(&e, &tpl.source),
            }
        })
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
            message: error_message(&e, &expr.source),
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

/// POSIX single-quoting; plain words stay as they are.
pub fn shell_quote(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Ok("''".into());
    }
    if text.contains('\0') {
        return Err("a value contains a NUL byte, which no shell command can carry".into());
    }
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if plain {
        return Ok(text.to_string());
    }
    Ok(format!("'{}'", text.replace('\'', r"'\''")))
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
