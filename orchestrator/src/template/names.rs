//! The names a template takes from the environment rather than from its context: filters
//! (`x | upper`), tests (`x is match(...)`), functions (`range(3)`, `namespace()`), and the
//! attributes it reads of a top-level variable (`probe.stdout`).
//!
//! They are found in the compiled instructions (minijinja's `unstable_machinery`), so a name
//! inside a string literal never counts, and checked against the names the one environment
//! really has ([`Known`]): an unknown filter, test or function is a diagnostic at the name's
//! file:line:column, with did-you-mean, when the playbook is compiled.
//!
//! Not here: which variables exist, and which attributes a step's result has (the compiler
//! knows the steps: `playbook/compile/checks.rs`).

use std::collections::BTreeSet;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::Environment;

/// What kind of environment name a template uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameKind {
    Filter,
    Test,
    Function,
}

impl NameKind {
    /// The word for it in messages and docs.
    pub fn word(self) -> &'static str {
        match self {
            NameKind::Filter => "filter",
            NameKind::Test => "test",
            NameKind::Function => "function",
        }
    }
}

/// Names a template may call that are never environment functions: the loop object, a
/// macro's `caller`, a block's `super`, a macro's `varargs`/`kwargs`.
const LOCAL_CALLABLES: &[&str] = &["loop", "caller", "super", "self", "varargs", "kwargs"];

/// Every filter, test and function the environment has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub filters: BTreeSet<String>,
    pub tests: BTreeSet<String>,
    pub functions: BTreeSet<String>,
}

impl Known {
    /// The names `env` has. Functions are its globals. minijinja lists filters and tests only
    /// in its `Debug` output; every name read from there is confirmed with the `filter`/`test`
    /// tests, which ask the environment itself (so a changed `Debug` format can only shorten
    /// the lists, and the docs test then fails).
    pub(super) fn of(env: &Environment<'_>) -> Known {
        let debug = format!("{env:?}");
        // `==`, `<`, ... are tests too, for the comparison operators; a template cannot name them.
        let usable = |n: &String| n.chars().all(|c| c.is_alphanumeric() || c == '_');
        let filters = debug_list(&debug, "filters: [")
            .into_iter()
            .filter(|n| usable(n) && has(env, NameKind::Filter, n))
            .collect();
        let tests = debug_list(&debug, "tests: [")
            .into_iter()
            .filter(|n| usable(n) && has(env, NameKind::Test, n))
            .collect();
        let functions = env.globals().map(|(n, _)| n.to_string()).collect();
        Known {
            filters,
            tests,
            functions,
        }
    }

    /// The names of one kind.
    pub fn of_kind(&self, kind: NameKind) -> &BTreeSet<String> {
        match kind {
            NameKind::Filter => &self.filters,
            NameKind::Test => &self.tests,
            NameKind::Function => &self.functions,
        }
    }
}

/// Whether `env` has a filter, test or function called `name`, asked of the environment.
pub(super) fn has(env: &Environment<'_>, kind: NameKind, name: &str) -> bool {
    let probe = match kind {
        NameKind::Filter => "n is filter",
        NameKind::Test => "n is test",
        NameKind::Function => return env.globals().any(|(n, _)| n == name),
    };
    env.compile_expression(probe)
        .and_then(|e| e.eval(minijinja::context! { n => name }))
        .is_ok_and(|v| v.is_true())
}

/// The quoted strings of a `Debug` list that starts right after `head` in `text`.
fn debug_list(text: &str, head: &str) -> Vec<String> {
    let Some(start) = text.find(head) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = text[start + head.len()..].chars();
    while let Some(c) = chars.next() {
        match c {
            ']' => break,
            '"' => {
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => s.extend(chars.next()),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                out.push(s);
            }
            _ => {}
        }
    }
    out
}

/// One use of an environment name, at a byte offset of the template's text when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUse {
    pub kind: NameKind,
    pub name: String,
    pub offset: Option<usize>,
}

/// An attribute read of a top-level variable (`var.attr`), at the attribute's byte offset in
/// the template's text when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrUse {
    pub var: String,
    pub attr: String,
    pub offset: Option<usize>,
}

/// What a template's instructions use besides plain variables.
#[derive(Debug, Default)]
pub struct Scan {
    /// Filters, tests and functions called (locals such as macros left out).
    pub uses: Vec<NameUse>,
    /// `var.attr` reads where `var` is not assigned in the template.
    pub attrs: Vec<AttrUse>,
    /// Names looked up as values (not only called).
    pub lookups: BTreeSet<String>,
}

/// Scan compiled instructions (a template's root and its blocks, or an expression's).
pub fn scan<'a>(parts: impl IntoIterator<Item = &'a Instructions<'a>>) -> Scan {
    let mut raw_uses = Vec::new();
    let mut raw_attrs = Vec::new();
    let mut lookups = BTreeSet::new();
    let mut locals: BTreeSet<String> = LOCAL_CALLABLES.iter().map(|s| s.to_string()).collect();
    for ins in parts {
        let source = ins.source();
        let mut previous: Option<&str> = None;
        for idx in 0..ins.len() {
            let Some(i) = ins.get(idx as u32) else {
                break;
            };
            let at =
                |name: &str, kind: Option<NameKind>| offset_of(ins, idx as u32, source, name, kind);
            match i {
                Instruction::Lookup(name) => {
                    lookups.insert(name.to_string());
                }
                Instruction::StoreLocal(name) => {
                    locals.insert(name.to_string());
                }
                Instruction::ApplyFilter(name, ..) => {
                    raw_uses.push((NameKind::Filter, *name, at(name, Some(NameKind::Filter))));
                }
                Instruction::PerformTest(name, ..) => {
                    raw_uses.push((NameKind::Test, *name, at(name, Some(NameKind::Test))));
                }
                Instruction::CallFunction(name, ..) => {
                    let offset = at(name, Some(NameKind::Function));
                    raw_uses.push((NameKind::Function, *name, offset));
                }
                Instruction::GetAttr(attr) => {
                    if let Some(var) = previous {
                        raw_attrs.push((var, *attr, at(attr, None)));
                    }
                }
                _ => {}
            }
            previous = match i {
                Instruction::Lookup(name) => Some(name),
                _ => None,
            };
        }
    }
    let uses = raw_uses
        .into_iter()
        .filter(|(k, n, _)| *k != NameKind::Function || !locals.contains(*n))
        .map(|(kind, name, offset)| NameUse {
            kind,
            name: name.to_string(),
            offset,
        })
        .collect();
    let attrs = raw_attrs
        .into_iter()
        .filter(|(v, _, _)| !locals.contains(*v))
        .map(|(var, attr, offset)| AttrUse {
            var: var.to_string(),
            attr: attr.to_string(),
            offset,
        })
        .collect();
    Scan {
        uses,
        attrs,
        lookups,
    }
}

/// What an "undefined value" error of a template with these `vars` and `attrs` is about, in
/// words, from the context it was rendered with: the first variable the context lacks, else
/// the first `var.attr` read whose `var` has no such attribute (with the attributes it has and
/// a did-you-mean). `None` when neither explains it (a deeper attribute, an index).
pub fn undefined_name(
    vars: &BTreeSet<String>,
    attrs: &[super::AttrRead],
    ctx: &minijinja::Value,
) -> Option<String> {
    let get = |v: &minijinja::Value, k: &str| v.get_attr(k).ok().filter(|x| !x.is_undefined());
    if let Some(v) = vars.iter().find(|v| get(ctx, v).is_none()) {
        return Some(format!("`{v}` is not defined"));
    }
    attrs.iter().find_map(|a| {
        let value = get(ctx, &a.var)?;
        if get(&value, &a.attr).is_some() {
            return None;
        }
        let keys: Vec<String> = match value.kind() {
            minijinja::value::ValueKind::Map => value
                .try_iter()
                .map(|it| it.map(|k| k.to_string()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut words = format!("`{}` has no attribute `{}`", a.var, a.attr);
        if !keys.is_empty() {
            words.push_str(&format!(" (it has: {})", keys.join(", ")));
        }
        let similar = crate::error::similar(&a.attr, keys.iter().map(String::as_str));
        if let Some(d) = crate::error::did_you_mean(&similar) {
            words.push_str(&format!("; {d}"));
        }
        Some(words)
    })
}

/// Scan an expression (`when:`, `until:`, ...) as the environment compiles it; one that does
/// not parse has nothing to scan (compiling it reports the syntax error).
pub fn scan_expr(expr: &str) -> Scan {
    let Ok(ast) = minijinja::machinery::parse_expr(expr) else {
        return Scan::default();
    };
    let mut gen = minijinja::machinery::CodeGenerator::new("<expression>", expr);
    gen.compile_expr(&ast);
    let (instructions, _) = gen.finish();
    scan([&instructions])
}

/// Where `name` of instruction `idx` starts in `source`: from the instruction's span when it
/// has one (a filter's, test's or call's span starts at the name; an attribute read's ends
/// with it), else the first place in the source that reads like that use.
fn offset_of(
    ins: &Instructions<'_>,
    idx: u32,
    source: &str,
    name: &str,
    kind: Option<NameKind>,
) -> Option<usize> {
    if let Some(span) = ins.get_span(idx) {
        let (start, end) = (span.start_offset as usize, span.end_offset as usize);
        let at = match kind {
            Some(_) => start,
            None => end.checked_sub(name.len())?,
        };
        if source.get(at..at + name.len()) == Some(name) {
            return Some(at);
        }
    }
    find_use(source, name, kind)
}

/// The first place outside string literals where `name` is used as `kind` (an attribute when
/// `None`): after `|`, after `is`/`is not`, before `(`, or after `.`.
pub fn find_use(source: &str, name: &str, kind: Option<NameKind>) -> Option<usize> {
    let bytes = source.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if b == b'"' || b == b'\'' {
            quote = Some(b);
            i += 1;
            continue;
        }
        let starts = source[i..].starts_with(name)
            && (i == 0 || !ident(bytes[i - 1]))
            && bytes.get(i + name.len()).is_none_or(|&c| !ident(c));
        if starts {
            let before = source[..i].trim_end();
            let after = source[i + name.len()..].trim_start();
            let fits = match kind {
                Some(NameKind::Filter) => before.ends_with('|'),
                Some(NameKind::Test) => {
                    let word = before.rsplit(|c: char| !c.is_alphanumeric()).next();
                    matches!(word, Some("is" | "not"))
                }
                Some(NameKind::Function) => after.starts_with('(') && !before.ends_with('.'),
                None => before.ends_with('.'),
            };
            if fits {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        env.add_filter("quote", |v: String| v);
        env
    }

    fn scan_template(text: &str) -> Scan {
        let mut env = env();
        env.add_template_owned("t", text.to_string()).unwrap();
        let t = env.get_template("t").unwrap();
        let c = minijinja::machinery::get_compiled_template(&t);
        let mut parts = vec![&c.instructions];
        parts.extend(c.blocks.values());
        scan(parts)
    }

    fn uses(text: &str) -> Vec<(NameKind, String, Option<usize>)> {
        scan_template(text)
            .uses
            .into_iter()
            .map(|u| (u.kind, u.name, u.offset))
            .collect()
    }

    #[test]
    fn filters_tests_and_functions_are_found_at_their_names() {
        let text = "{{ x | uppper }} {% if y is mathcing('a') %}{{ namespace() }}{% endif %}";
        assert_eq!(
            uses(text),
            [
                (NameKind::Filter, "uppper".into(), Some(7)),
                (NameKind::Test, "mathcing".into(), Some(28)),
                (NameKind::Function, "namespace".into(), Some(47)),
            ]
        );
        assert_eq!(&text[7..13], "uppper");
        assert_eq!(&text[28..36], "mathcing");
        assert_eq!(&text[47..56], "namespace");
    }

    #[test]
    fn names_inside_strings_do_not_count() {
        let u = uses("{{ 'a | uppper' ~ \"b is nope\" ~ 'range(3)' }} {{ x | lower }}");
        assert_eq!(u, [(NameKind::Filter, "lower".into(), Some(53))]);
    }

    #[test]
    fn negated_tests_and_filter_blocks_and_multiline() {
        let u = uses("{% filter upper %}x{% endfilter %}{{ a is not defined }}");
        assert_eq!(
            u.iter()
                .map(|(k, n, _)| (*k, n.as_str()))
                .collect::<Vec<_>>(),
            [(NameKind::Filter, "upper"), (NameKind::Test, "defined")]
        );
        // a chain over several lines: each name is still found at its place
        let text = "{{ x\n   | trim\n   | uppper }}";
        let u = uses(text);
        let (_, _, off) = &u[1];
        assert_eq!(&text[off.unwrap()..off.unwrap() + 6], "uppper");
    }

    #[test]
    fn macros_loop_and_caller_are_not_functions() {
        let u = uses(
            "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1) }}\
             {% for i in xs %}{{ loop.cycle('a','b') }}{% endfor %}{{ range(2) | list }}",
        );
        let names: Vec<&str> = u.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(names, ["range", "list"]);
    }

    #[test]
    fn attribute_reads_of_top_level_names() {
        let text = "{{ probe.stdoutt }}{% for r in rs %}{{ r.rc }}{% endfor %}{{ a.b.c }}";
        let s = scan_template(text);
        let attrs: Vec<(&str, &str, Option<usize>)> = s
            .attrs
            .iter()
            .map(|a| (a.var.as_str(), a.attr.as_str(), a.offset))
            .collect();
        // `r` is the loop's own name; `a.b.c` reads `b` of `a` (then `c` of that value)
        assert_eq!(attrs, [("probe", "stdoutt", Some(9)), ("a", "b", Some(63))]);
        assert_eq!(&text[63..64], "b");
    }

    #[test]
    fn find_use_skips_strings_and_other_places() {
        let src = "x is 'lower' or lower(y) or y is lower";
        assert_eq!(find_use(src, "lower", Some(NameKind::Test)), Some(33));
        assert_eq!(find_use(src, "lower", Some(NameKind::Function)), Some(16));
        assert_eq!(find_use(src, "lower", Some(NameKind::Filter)), None);
        assert_eq!(find_use("a.b | b", "b", None), Some(2));
        assert_eq!(find_use("'|b' | b", "b", Some(NameKind::Filter)), Some(7));
    }

    #[test]
    fn known_names_come_from_the_environment() {
        let k = Known::of(&env());
        assert!(k.filters.contains("quote") && k.filters.contains("upper"));
        assert!(k.tests.contains("defined") && !k.tests.contains("quote"));
        assert!(k.functions.contains("range") && k.functions.contains("namespace"));
        assert!(has(&env(), NameKind::Filter, "quote"));
        assert!(!has(&env(), NameKind::Filter, "uppper"));
    }
}
