//! The playbook as written: serde types mirroring the YAML, nothing resolved yet.
//!
//! Every struct denies unknown keys, so a typo is an error with a position (serde_yaml reports
//! it). Step kinds are separate optional keys rather than a tagged enum: that keeps serde_yaml's
//! messages and line numbers precise; "exactly one kind per step" is checked in `load`.
//! docs/playbooks.md documents every key.

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A whole playbook file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookDoc {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub params: IndexMap<String, ParamDoc>,
    /// Playbook-level variables (templates allowed, rendered with params).
    #[serde(default)]
    pub vars: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub detect: Vec<StepDoc>,
    pub applies_when: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepDoc>,
    #[serde(default)]
    pub verify: Vec<StepDoc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    Int,
    Bool,
    List,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::List => "list",
        })
    }
}

/// One declared parameter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDoc {
    #[serde(rename = "type", default)]
    pub ty: ParamType,
    #[serde(default)]
    pub required: bool,
    pub default: Option<serde_yaml::Value>,
    pub pattern: Option<String>,
    pub choices: Option<Vec<serde_yaml::Value>>,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub help: String,
}

/// `changes: none` marks a raw command as read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Changes {
    None,
}

/// One step as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    pub id: Option<String>,
    pub name: Option<String>,
    pub on: Option<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    pub when: Option<String>,
    pub register: Option<String>,
    pub retries: Option<Count>,
    pub delay: Option<DurOrTemplate>,
    pub until: Option<String>,
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub ignore_errors: bool,
    pub changed_when: Option<String>,
    pub failed_when: Option<String>,
    pub rollback: Option<RollbackDoc>,
    pub irreversible: Option<String>,
    pub no_rollback: Option<String>,
    /// Earlier steps whose changes this one puts to use, so that they cannot be undone once it
    /// has changed (a VLAN range the tiers now hold): rollback leaves them in place.
    #[serde(default)]
    pub consumes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub changes: Option<Changes>,
    /// Raw `ssh:` steps: a read-only command whose exit 0 means "already as wanted".
    pub check: Option<String>,
    pub serial: Option<u32>,
    pub max_fail_percentage: Option<u8>,
    /// Read the inventory's CloudStack source again once this step has run: the steps after
    /// it are bound to the machines that exist then (a re-created SSVM, rebooted routers).
    #[serde(default)]
    pub refresh_inventory: bool,

    // --- kinds: exactly one ---
    pub ssh: Option<String>,
    pub api: Option<ApiDoc>,
    pub wait: Option<Dur>,
    pub assert: Option<AssertDoc>,
    pub set: Option<IndexMap<String, serde_yaml::Value>>,
    pub report: Option<ReportDoc>,
    pub include: Option<String>,
    /// Parameters of an `include`.
    pub params: Option<IndexMap<String, serde_yaml::Value>>,
    pub service: Option<serde_yaml::Value>,
    pub file: Option<serde_yaml::Value>,
    pub link: Option<serde_yaml::Value>,
    pub route: Option<serde_yaml::Value>,
    pub ovs_port: Option<serde_yaml::Value>,
    pub ovs_flow: Option<serde_yaml::Value>,
    pub cs_setting: Option<serde_yaml::Value>,
    pub vlan_range: Option<serde_yaml::Value>,
    pub vm_host: Option<serde_yaml::Value>,
    pub host_maintenance: Option<serde_yaml::Value>,
}

/// A CloudStack API call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiDoc {
    pub command: String,
    #[serde(default)]
    pub args: IndexMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertDoc {
    pub that: OneOrMany,
    pub msg: Option<String>,
}

/// A `report:` step: a titled table of findings and key facts, shown on the terminal, in
/// `--output json` and in the audit log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportDoc {
    /// A text template; default: the step's name.
    pub title: Option<String>,
    /// An expression (or one `{{ ... }}`) evaluating to a list, or a template rendering to a
    /// YAML or JSON list; each item a map (a row by column name), a list (cells in column
    /// order) or a scalar (a one-column row). Default: no rows.
    pub rows: Option<String>,
    /// The columns shown, in order (default: the keys of the first row).
    pub columns: Option<Vec<String>>,
    /// Key facts shown above the table: name -> text template.
    #[serde(default)]
    pub facts: IndexMap<String, serde_yaml::Value>,
    /// Whether this report is a finding (a problem found); default: it has rows.
    pub found: Option<String>,
    /// A text template shown instead of the table when there are no rows.
    pub empty: Option<String>,
}

/// A list of strings, or one string.
#[derive(Debug, Clone, Default)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an expression or a list of expressions")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// How a raw step is undone: a command string (run on the same target), or `{ ssh: CMD }`, or
/// `{ api: { command, args } }`.
#[derive(Debug, Clone)]
pub enum RollbackDoc {
    Ssh(String),
    Api(ApiDoc),
}

impl<'de> Deserialize<'de> for RollbackDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RollbackDoc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command, or a map with one key `ssh` or `api`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RollbackDoc, E> {
                Ok(RollbackDoc::Ssh(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RollbackDoc, A::Error> {
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom("empty rollback: give `ssh` or `api`"))?;
                let out = match key.as_str() {
                    "ssh" => RollbackDoc::Ssh(map.next_value()?),
                    "api" => RollbackDoc::Api(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["ssh", "api"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "rollback takes one of `ssh` or `api`, not also `{extra}`"
                    )));
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration: `500ms`, `2s`, `5m`, `1h 30m`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 2s, 5m or 1h, or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                u64::try_from(n)
                    .map(|n| Dur(Duration::from_secs(n)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Dur, E> {
                if n.is_finite() && n >= 0.0 {
                    Ok(Dur(Duration::from_secs_f64(n)))
                } else {
                    Err(E::custom("a duration must be a non-negative number"))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s.trim())
                    .map(Dur)
                    .map_err(|e| E::custom(format!("invalid duration {s:?}: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a setting's text is a template (`"{{ attempts }}"`) rather than a value.
fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// `retries`: a number of attempts after the first, or a template that renders to one per
/// target when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    Value(u32),
    Template(String),
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) if is_template(&s) => Ok(Count::Template(s)),
            serde_yaml::Value::String(s) => s.trim().parse().map(Count::Value).map_err(|_| {
                de::Error::custom(format!(
                    "invalid count {s:?}: expected a whole number (0 or more) or a template"
                ))
            }),
            v => u32::deserialize(v)
                .map(Count::Value)
                .map_err(|e| de::Error::custom(format!("{e} (a whole number, 0 or more)"))),
        }
    }
}

/// `delay`: a duration, or a template that renders to one per target when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurOrTemplate {
    Value(Dur),
    Template(String),
}

impl<'de> Deserialize<'de> for DurOrTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) if is_template(&s) => Ok(DurOrTemplate::Template(s)),
            v => Dur::deserialize(v)
                .map(DurOrTemplate::Value)
                .map_err(de::Error::custom),
        }
    }
}

impl Dur {
    /// A duration as rendered text: `2s`, `1m 30s`, or a number of seconds (`1.5`).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        if let Ok(n) = t.parse::<f64>() {
            if n.is_finite() && n >= 0.0 {
                return Ok(Duration::from_secs_f64(n));
            }
            return Err(format!("invalid duration {t:?}: it cannot be negative"));
        }
        humantime::parse_duration(t).map_err(|e| format!("invalid duration {t:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_step() {
        let y = r#"
name: demo
params:
  router: { required: true, pattern: "^r-[0-9]+-VM$" }
steps:
  - id: a
    on: "{{ router }}"
    ssh: systemctl restart dnsmasq
    no_rollback: a restart is its own remedy
    retries: 3
    delay: 2s
    timeout: 1m
  - id: b
    api: { command: rebootRouter, args: { id: x } }
    rollback: { api: { command: startRouter, args: { id: x } } }
  - id: c
    assert: { that: "a.rc == 0" }
"#;
        let p: PlaybookDoc = serde_yaml::from_str(y).unwrap();
        assert_eq!(p.steps.len(), 3);
        assert_eq!(
            p.steps[0].delay,
            Some(DurOrTemplate::Value(Dur(Duration::from_secs(2))))
        );
        assert_eq!(p.steps[0].retries, Some(Count::Value(3)));
        assert_eq!(p.steps[0].timeout, Some(Dur(Duration::from_secs(60))));
        assert!(matches!(p.steps[1].rollback, Some(RollbackDoc::Api(_))));
        assert_eq!(p.steps[2].assert.as_ref().unwrap().that.0.len(), 1);
    }

    #[test]
    fn retries_and_delay_may_be_templates() {
        let y = "name: x\nsteps:\n  - id: a\n    wait: 1s\n    retries: \"{{ n }}\"\n    delay: \"{{ d }}s\"\n  - id: b\n    wait: 1s\n    retries: \"2\"\n    delay: 1.5\n";
        let p: PlaybookDoc = serde_yaml::from_str(y).unwrap();
        assert_eq!(p.steps[0].retries, Some(Count::Template("{{ n }}".into())));
        assert_eq!(
            p.steps[0].delay,
            Some(DurOrTemplate::Template("{{ d }}s".into()))
        );
        assert_eq!(p.steps[1].retries, Some(Count::Value(2)));
        assert_eq!(
            p.steps[1].delay,
            Some(DurOrTemplate::Value(Dur(Duration::from_millis(1500))))
        );
        for bad in ["-1", "three", "\"two\""] {
            let y = format!("name: x\nsteps:\n  - id: a\n    wait: 1s\n    retries: {bad}\n");
            let e = serde_yaml::from_str::<PlaybookDoc>(&y)
                .unwrap_err()
                .to_string();
            assert!(e.contains("a whole number"), "{bad}: {e}");
        }
        assert_eq!(Dur::parse(" 2s "), Ok(Duration::from_secs(2)));
        assert_eq!(Dur::parse("3"), Ok(Duration::from_secs(3)));
        assert!(Dur::parse("-1").is_err() && Dur::parse("soon").is_err());
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let e = serde_yaml::from_str::<PlaybookDoc>("name: x\nsteps:\n  - id: a\n    sssh: ls\n")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown field `sssh`"), "{msg}");
        assert_eq!(e.location().unwrap().line(), 4);
    }
}
