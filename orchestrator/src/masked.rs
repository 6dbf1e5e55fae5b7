//! Secrets masked by construction: every template is rendered twice.
//!
//! Owns: [`render`], which renders a template once with the real values (the text that goes on
//! the wire: the command, the API argument, the fact) and, when the template reads a value that
//! shows a secret, once more with every such value replaced by [`Redactor::MASK`] (the text a
//! person would be shown). Where the two differ, the real text holds something derived from a
//! secret (`{{ password | upper }}`, `{{ password | reverse }}`, a concatenation, an include's
//! parameter, a var or a fact computed from one): that part is registered with the
//! [`Redactor`] as a secret itself. Since the terminal, JSON events, the audit log, plans,
//! Markdown pages, notifications and error messages all pass through the redactor, the derived
//! value is masked wherever it shows, and a var, fact or include parameter holding it is itself
//! treated as a secret by the next template that reads it.
//!
//! What is registered: the span of the real text from the first to the last character that
//! differs from the masked text, and each whitespace-separated word of the real text the masked
//! text does not have (quotes around it dropped), each when four characters long or more (the
//! redactor's minimum: a derived value shorter than that, such as a secret's length, is not
//! masked). A template whose masked rendering fails (`{{ pin + 1 }}` with `pin` masked as text)
//! has its whole real text registered.
//!
//! Leaves to others: what is secret in the first place (plan: parameters; cloudstack: the
//! inventory's secrets) and the masking itself ([`Redactor`]).

use std::collections::BTreeSet;

use minijinja::value::Value;

use crate::redact::Redactor;
use crate::template::{RenderError, Templates, Tpl};

/// Renders `tpl` against `ctx` for the wire, registering with `redactor` whatever part of the
/// result is derived from a secret (see the module documentation).
pub fn render(
    templates: &Templates,
    tpl: &Tpl,
    ctx: &Value,
    redactor: &Redactor,
) -> Result<String, RenderError> {
    let real = templates.render(tpl, ctx)?;
    if tpl.is_static {
        return Ok(real);
    }
    let Some(masked_ctx) = masked_context(tpl, ctx, redactor) else {
        return Ok(real);
    };
    match templates.render(tpl, &masked_ctx) {
        Ok(shown) if shown == real => {}
        Ok(shown) => register_derived(&real, &shown, redactor),
        Err(_) => redactor.register(real.clone()),
    }
    Ok(real)
}

/// `ctx` with each value that shows a secret masked, or `None` when none does.
///
/// Only the names `tpl` can read are looked at (see [`may_read`]): a host's context holds its
/// inventory variables and every earlier result, and serializing and scanning all of them for
/// every template of every node cost 6-8% more client CPU in the simulated zone
/// (bench/results/simzone-20261206-masking.md).
fn masked_context(tpl: &Tpl, ctx: &Value, redactor: &Redactor) -> Option<Value> {
    let nothing_registered = redactor.is_empty();
    let reads_unspelled = reads_unspelled_names(&tpl.source);
    let names: Vec<String> = ctx
        .try_iter()
        .ok()?
        .filter_map(|k| k.as_str().map(str::to_string))
        .filter(|name| !nothing_registered || crate::redact::is_secret_name(name))
        .filter(|name| reads_unspelled || may_read(&tpl.source, name))
        .collect();
    let mut overrides = serde_json::Map::new();
    for name in &names {
        let Ok(value) = ctx.get_attr(name) else {
            continue;
        };
        if value.is_undefined() {
            continue;
        }
        let Ok(json) = serde_json::to_value(&value) else {
            continue;
        };
        if let Some(masked) = redactor.masked_value(name, &json) {
            overrides.insert(name.clone(), masked);
        }
    }
    if overrides.is_empty() {
        return None;
    }
    // (minijinja 2.24 looks a key up from the last map to the first.)
    Some(minijinja::value::merge_maps([
        ctx.clone(),
        Value::from_serialize(&overrides),
    ]))
}

/// Whether a template whose text is `source` can read the context variable `name`: a variable
/// is read by spelling its name, so a name the text does not contain is never read. Deliberately
/// not the names minijinja reports (`Tpl::vars`): it misses a name read through a slice
/// (`{{ password[3:] }}`), which this test does not.
fn may_read(source: &str, name: &str) -> bool {
    source.contains(name)
}

/// Whether a template whose text is `source` may read variables it does not spell: `debug()`
/// prints the whole context, and `include`, `import`, `from ... import` and `extends` render
/// another template against it. Then every name counts.
fn reads_unspelled_names(source: &str) -> bool {
    ["debug", "include", "import", "extends"]
        .iter()
        .any(|word| source.contains(word))
}

/// Registers the parts of `real` that `shown` (its masked rendering) does not have.
fn register_derived(real: &str, shown: &str, redactor: &Redactor) {
    let prefix = real
        .char_indices()
        .zip(shown.chars())
        .find(|((_, a), b)| a != b)
        .map_or(real.len().min(shown.len()), |((i, _), _)| i);
    let suffix: usize = real[prefix..]
        .chars()
        .rev()
        .zip(shown[prefix.min(shown.len())..].chars().rev())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    redactor.register(&real[prefix..real.len() - suffix]);
    let words: BTreeSet<&str> = shown.split_whitespace().collect();
    for word in real.split_whitespace().filter(|w| !words.contains(w)) {
        redactor.register(word.trim_matches(|c| c == '\'' || c == '"'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;
    use crate::template::Mode;

    const M: &str = Redactor::MASK;

    fn tpl(templates: &mut Templates, text: &str, mode: Mode) -> Tpl {
        let src = Source::parse("t.yml", format!("x: {text:?}\n")).unwrap();
        templates.add(&src, "x", text, mode).unwrap()
    }

    fn ctx() -> Value {
        minijinja::context! {
            password => "S3cr3t-Zebra-991",
            pin => 4321,
            host => "mgmt1",
            db_password => "abc",
        }
    }

    fn redactor() -> Redactor {
        let r = Redactor::new();
        r.register("S3cr3t-Zebra-991");
        r.register("4321");
        r
    }

    #[test]
    fn derived_values_are_registered_and_masked() {
        let mut t = Templates::new();
        let r = redactor();
        for (text, real) in [
            ("{{ password | reverse }}", "199-arbeZ-t3rc3S"),
            ("{{ password[3:] }}-{{ host }}", "r3t-Zebra-991-mgmt1"),
            (
                "echo {{ password | reverse }} on {{ host }}",
                "echo 199-arbeZ-t3rc3S on mgmt1",
            ),
        ] {
            let tp = tpl(&mut t, text, Mode::Shell);
            let out = render(&t, &tp, &ctx(), &r).unwrap();
            assert_eq!(out, real, "the wire gets the real value");
            assert!(r.redact(&out).contains(M), "{text}: {}", r.redact(&out));
            assert!(
                !r.redact(&out).contains("arbe"),
                "{text}: {}",
                r.redact(&out)
            );
            assert!(!r.redact(&out).contains("r3t-Zebra"), "{text}");
        }
        // The words that did not come from a secret stay readable.
        assert_eq!(
            r.redact("echo 199-arbeZ-t3rc3S on mgmt1"),
            format!("echo {M} on mgmt1")
        );
        // The reversed value alone, e.g. in a command's output, is masked too.
        assert_eq!(r.redact("out: 199-arbeZ-t3rc3S\n"), format!("out: {M}\n"));
    }

    #[test]
    fn a_failing_masked_rendering_masks_the_whole_text() {
        let mut t = Templates::new();
        let r = redactor();
        let tp = tpl(&mut t, "{{ pin + 1000 }}", Mode::Text);
        assert_eq!(render(&t, &tp, &ctx(), &r).unwrap(), "5321");
        assert_eq!(r.redact("5321"), M);
    }

    #[test]
    fn a_name_read_through_a_slice_counts() {
        let mut t = Templates::new();
        let r = redactor();
        let tp = tpl(&mut t, "{{ password[3:] | upper }}", Mode::Text);
        // minijinja's own list of the names a template reads misses it: why masked_context
        // looks for the name in the text instead.
        assert!(
            !tp.vars.contains("password"),
            "minijinja now reports a name read through a slice: {:?}",
            tp.vars
        );
        assert_eq!(render(&t, &tp, &ctx(), &r).unwrap(), "R3T-ZEBRA-991");
        assert_eq!(r.redact("got R3T-ZEBRA-991"), format!("got {M}"));
    }

    #[test]
    fn a_template_reading_the_whole_context_counts_every_name() {
        let mut t = Templates::new();
        let r = redactor();
        // debug() prints the whole context, names the text never spells included.
        let tp = tpl(&mut t, "{{ debug() | reverse }}", Mode::Text);
        let out = render(&t, &tp, &ctx(), &r).unwrap();
        assert!(out.contains("199-arbeZ-t3rc3S"), "{out}");
        assert!(!r.redact(&out).contains("arbeZ"), "{}", r.redact(&out));
        assert!(r.redact(&out).contains(M), "{}", r.redact(&out));
    }

    #[test]
    fn only_names_the_text_spells_are_looked_at() {
        assert!(may_read("echo {{ password[3:] }}", "password"));
        assert!(may_read("{{ db_password }}", "password"));
        assert!(!may_read("echo {{ host | upper }}", "password"));
        for text in [
            "{{ debug() }}",
            "{% include 't.yml:1:1@1#text' %}",
            "{% import 'x' as y %}",
            "{% from 'x' import y %}",
            "{% extends 'x' %}",
        ] {
            assert!(reads_unspelled_names(text), "{text}");
        }
        assert!(!reads_unspelled_names("echo {{ host | upper }}"));
    }

    #[test]
    fn templates_without_secrets_register_nothing() {
        let mut t = Templates::new();
        let r = Redactor::new();
        let tp = tpl(&mut t, "echo {{ host | upper }}", Mode::Shell);
        assert_eq!(render(&t, &tp, &ctx(), &r).unwrap(), "echo MGMT1");
        assert!(r.is_empty());
        // A secret-named variable counts even when its value is too short to register.
        let tp = tpl(&mut t, "x{{ db_password | upper }}yz", Mode::Text);
        assert_eq!(render(&t, &tp, &ctx(), &r).unwrap(), "xABCyz");
        // ABC alone is shorter than four characters; the word holding it is masked.
        assert_eq!(r.redact("xABCyz ABC"), format!("{M} ABC"));
    }
}
