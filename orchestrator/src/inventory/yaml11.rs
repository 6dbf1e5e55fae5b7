//! Ansible's reading of plain (unquoted) scalars in inventory and vars files: YAML 1.1's
//! implicit types as PyYAML resolves them, so `x: no` is false and `mode: 0755` is 493 in remedy
//! as in Ansible. serde_yaml reads YAML 1.2's core schema, where `yes` is a string and `1e3` a
//! float; [`plain_scalars`] finds every plain value scalar whose two readings differ, records
//! Ansible's, and hands the parser a text in which serde_yaml sees such a scalar as a string at
//! the same byte offset (so positions in messages do not move), where `yaml` looks it up.
//!
//! Not here: playbooks (remedy's own format, read as YAML 1.2 by `playbook`), keys (taken as
//! written, as `yaml` always did), quoted and block scalars (always strings), and JSON files
//! (Ansible reads a file that is valid JSON as JSON, so they are left alone).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Plain value scalars Ansible reads differently from serde_yaml, by byte offset in the text:
/// the scalar as written and Ansible's value.
pub(super) type Overrides = HashMap<usize, (String, Value)>;

/// Finds the plain value scalars of `text` that YAML 1.1 reads differently from serde_yaml.
/// Returns the text serde_yaml should parse (each such scalar that serde_yaml would read as a
/// number starts with `x` instead, same length, so it arrives as a string) and the overrides.
/// A text that is valid JSON, or that the event parser cannot read (serde_yaml reports the
/// error then), is returned unchanged.
pub(super) fn plain_scalars(text: &str) -> (String, Overrides) {
    let mut overrides = Overrides::new();
    if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        return (text.to_string(), overrides);
    }
    let mut walker = Walker::default();
    let mut parser = Parser::new_from_str(text);
    if parser.load(&mut walker, true).is_err() {
        return (text.to_string(), overrides);
    }
    let mut bytes = text.as_bytes().to_vec();
    for (mark, written) in walker.values {
        // The event's mark is where the node starts, before any tag or anchor.
        let Some(offset) = locate(text, mark, &written) else {
            continue;
        };
        let ansible = resolve_plain(&written);
        let serde = serde_reading(&written);
        if same(&ansible, &serde) {
            continue;
        }
        if !serde.is_string() {
            bytes[offset] = b'x';
        }
        overrides.insert(offset, (written, ansible));
    }
    // Only an ASCII digit, sign or dot was replaced by an ASCII letter: still UTF-8.
    let text = String::from_utf8(bytes).unwrap_or_else(|_| text.to_string());
    (text, overrides)
}

/// The byte offset of a plain scalar `written` whose node starts at `mark`: there, or after
/// its tag or anchor on the same line.
fn locate(text: &str, mark: usize, written: &str) -> Option<usize> {
    let rest = text.get(mark..)?;
    if rest.starts_with(written) {
        return Some(mark);
    }
    let line = rest.split('\n').next()?;
    let at = line.find(' ')?;
    let after = &line[at..];
    let skip = after.len() - after.trim_start().len();
    let start = mark + at + skip;
    text.get(start..)?.starts_with(written).then_some(start)
}

/// Whether two readings agree (numbers by value, so 1.1 written `1.10` matches).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.is_f64() == y.is_f64() && x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// How serde_yaml reads one plain scalar on its own.
fn serde_reading(written: &str) -> Value {
    serde_yaml::from_str::<Value>(written).unwrap_or_else(|_| Value::String(written.into()))
}

/// Collects plain, untagged scalars in value positions (not mapping keys) with their offsets.
#[derive(Default)]
struct Walker {
    /// Per open collection: `Some(expecting_key)` for a mapping, `None` for a sequence.
    stack: Vec<Option<bool>>,
    values: Vec<(usize, String)>,
}

impl Walker {
    /// Called for every node: returns whether it is a mapping key, and advances the mapping.
    fn node(&mut self) -> bool {
        match self.stack.last_mut() {
            Some(Some(expecting_key)) => {
                let was_key = *expecting_key;
                *expecting_key = !was_key;
                was_key
            }
            _ => false,
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, _, tag) => {
                let is_key = self.node();
                let unsafe_tag = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "!" && t.suffix == "unsafe");
                if !is_key && style == TScalarStyle::Plain && (tag.is_none() || unsafe_tag) {
                    self.values.push((mark.index(), value));
                }
            }
            Event::Alias(_) => {
                self.node();
            }
            Event::SequenceStart(..) => {
                self.node();
                self.stack.push(None);
            }
            Event::MappingStart(..) => {
                self.node();
                self.stack.push(Some(true));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid pattern"))
}

/// YAML 1.1's implicit types as PyYAML resolves a plain scalar (and as Ansible's loader then
/// constructs it): null, booleans (`yes`/`no`/`on`/`off`/`true`/`false` in three casings),
/// integers (`0b`, leading-zero octal, `0x`, `_` separators, base 60 `1:30`), floats (a dot
/// is required: `1.0e+3`, not `1e3`; `.inf` and `.nan` stay strings, JSON has no such
/// numbers). Anything else, dates included (Ansible prints a date as written), is a string.
pub(super) fn resolve_plain(s: &str) -> Value {
    static BOOL: OnceLock<Regex> = OnceLock::new();
    static INT: OnceLock<Regex> = OnceLock::new();
    static FLOAT: OnceLock<Regex> = OnceLock::new();
    let string = || Value::String(s.to_string());
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if regex(
        &BOOL,
        r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
    )
    .is_match(s)
    {
        return Value::Bool(matches!(
            s,
            "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON"
        ));
    }
    if regex(
        &INT,
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    )
    .is_match(s)
    {
        return int(s).map(Value::from).unwrap_or_else(string);
    }
    if regex(
        &FLOAT,
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*)$",
    )
    .is_match(s)
    {
        return float(s)
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(string);
    }
    string()
}

/// Splits a sign off, and removes `_` separators.
fn sign_and_digits(s: &str) -> (bool, String) {
    let digits: String = s.chars().filter(|c| *c != '_').collect();
    match digits.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, digits.trim_start_matches('+').to_string()),
    }
}

/// An integer PyYAML's constructor builds from text its resolver matched.
fn int(s: &str) -> Option<i64> {
    let (negative, digits) = sign_and_digits(s);
    let magnitude = if digits == "0" {
        0
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if digits.starts_with('0') {
        i64::from_str_radix(&digits, 8).ok()?
    } else if digits.contains(':') {
        base60(&digits)?.try_into().ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// A float PyYAML's constructor builds from text its resolver matched.
fn float(s: &str) -> Option<f64> {
    let (negative, digits) = sign_and_digits(s);
    let digits = digits.to_ascii_lowercase();
    let magnitude = if digits.contains(':') {
        let (whole, fraction) = digits.split_once('.')?;
        base60(whole)? as f64 + format!("0.{fraction}").parse::<f64>().unwrap_or(0.0)
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// `190:20:30` = 190*3600 + 20*60 + 30.
fn base60(digits: &str) -> Option<i128> {
    digits.split(':').try_fold(0i128, |acc, part| {
        Some(acc.checked_mul(60)? + part.parse::<i128>().ok()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What Ansible 2.19 (`ansible-inventory --list`, PyYAML 6) printed for each plain scalar;
    /// tests/fixtures/inventory/yaml11/corpus.yml compares the whole file.
    #[test]
    fn plain_scalars_read_as_ansible_reads_them() {
        let cases = [
            ("yes", json!(true)),
            ("No", json!(false)),
            ("ON", json!(true)),
            ("off", json!(false)),
            ("True", json!(true)),
            ("FALSE", json!(false)),
            ("y", json!("y")),
            ("yES", json!("yES")),
            ("~", json!(null)),
            ("", json!(null)),
            ("NULL", json!(null)),
            ("0755", json!(493)),
            ("0x1F", json!(31)),
            ("0x_1F", json!(31)),
            ("1_000", json!(1000)),
            ("0b101", json!(5)),
            ("0o17", json!("0o17")),
            ("1:30", json!(90)),
            ("190:20:30", json!(685230)),
            ("-0x1F", json!(-31)),
            ("+12", json!(12)),
            ("09", json!("09")),
            ("00", json!(0)),
            ("-0", json!(0)),
            ("1e3", json!("1e3")),
            ("1E+3", json!("1E+3")),
            ("1.0e+3", json!(1000.0)),
            ("1.5e3", json!("1.5e3")),
            (".5", json!(0.5)),
            ("1.", json!(1.0)),
            ("1_000.5", json!(1000.5)),
            ("1:30.5", json!(90.5)),
            ("6.8523015e+5", json!(685230.15)),
            ("1.10", json!(1.1)),
            ("1.2.3", json!("1.2.3")),
            ("2024-01-05", json!("2024-01-05")),
            (".inf", json!(".inf")),
        ];
        for (written, want) in cases {
            assert_eq!(resolve_plain(written), want, "{written:?}");
        }
    }

    #[test]
    fn only_differing_plain_values_are_overridden_at_their_offsets() {
        let text = "a: yes\nb: \"yes\"\nc: 1e3\nyes: 0755\nd: [on, 'off', 7]\ne: !unsafe no\n\
                    f: !!str no\ng: é1e3\nh: 1e3\n";
        let (parsed, overrides) = plain_scalars(text);
        let mut got: Vec<(usize, String, Value)> =
            overrides.into_iter().map(|(o, (w, v))| (o, w, v)).collect();
        got.sort_by_key(|g| g.0);
        let at = |needle: &str, nth: usize| text.match_indices(needle).nth(nth).unwrap().0;
        assert_eq!(
            got,
            vec![
                (at("yes", 0), "yes".into(), json!(true)),
                (at("1e3", 0), "1e3".into(), json!("1e3")),
                (at("0755", 0), "0755".into(), json!(493)),
                (at("on", 0), "on".into(), json!(true)),
                (at("no", 0), "no".into(), json!(false)),
                (at("1e3", 2), "1e3".into(), json!("1e3")),
            ]
        );
        // `1e3` (a float to serde_yaml) is disguised in place; the rest is as written.
        assert_eq!(
            parsed,
            text.replacen("c: 1e3", "c: xe3", 1)
                .replacen("h: 1e3", "h: xe3", 1)
        );
        // JSON is read as JSON.
        let (same_text, none) = plain_scalars("{\"a\": 1e3}");
        assert_eq!((same_text.as_str(), none.len()), ("{\"a\": 1e3}", 0));
    }
}
