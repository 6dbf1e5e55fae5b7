//! A job's `on:` rules: which events start it, on which targets, with which parameters.
//!
//! ```yaml
//! on:
//!   - name: router-health                  # optional, for logs
//!     match:
//!       source: cloudstack                 # cloudstack | alertmanager (required)
//!       type: [ROUTER.HEALTH.CHECKS, ROUTER.STOP]   # exact, or with `*` (ROUTER.*)
//!       level: ERROR                       # one or a list (case ignored)
//!       resource_type: DomainRouter
//!       resource_name: "^r-\\d+-VM$"       # a regex
//!       description: "dnsmasq|dhcp"        # a regex
//!       labels: { alertname: "^VRBackup" } # Alertmanager's labels, each a regex
//!     lookup:                              # read-only API calls, their first item by name
//!       router: { api: listRouters, args: { id: "{{ event.resource_id }}" } }
//!     limit: "{{ router.name }}"           # a host pattern, like --limit
//!     params: { vpc: "{{ router.vpcname }}" }
//! ```
//!
//! Checked when the jobs file is read, like a playbook: unknown keys (with did-you-mean), bad
//! regexes, templates compiled, the variables they read (`event` and the lookups' names) and
//! the event fields they read (`event.resource_name`). The parameters are checked against the
//! job's playbook with the job's own (`Jobs::check_playbooks`).
//!
//! Not here: fetching the lookups (an API call, at run time: `hooks`' caller in `mod.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::Value;
use regex::Regex;
use serde::Deserialize;

use super::{Event, Origin, FIELDS};
use crate::error::Diagnostic;
use crate::source::Source;
use crate::template::{Mode, Templates, Tpl};
use crate::transport::{Access, ApiCall};

// --- as written ---

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDoc {
    name: Option<String>,
    #[serde(rename = "match")]
    matches: MatchDoc,
    #[serde(default)]
    lookup: indexmap::IndexMap<String, LookupDoc>,
    limit: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchDoc {
    source: Origin,
    #[serde(rename = "type")]
    types: Option<Words>,
    kind: Option<Words>,
    level: Option<Words>,
    status: Option<Words>,
    resource_type: Option<Words>,
    resource_id: Option<Words>,
    resource_name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Words {
    One(String),
    Many(Vec<String>),
}

impl Words {
    fn list(&self) -> Vec<String> {
        match self {
            Words::One(s) => vec![s.clone()],
            Words::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupDoc {
    api: String,
    #[serde(default)]
    args: BTreeMap<String, String>,
}

// --- compiled ---

/// One compiled rule of a job.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name, or `on.N`.
    pub name: String,
    pub source: Origin,
    /// Event types (or alert names): exact, or with `*` wildcards.
    pub types: Vec<String>,
    kinds: Vec<String>,
    levels: Vec<String>,
    statuses: Vec<String>,
    resource_types: Vec<String>,
    resource_ids: Vec<String>,
    resource_name: Option<Regex>,
    description: Option<Regex>,
    labels: Vec<(String, Regex)>,
    /// Read-only API calls, in order: name, command, argument templates.
    pub lookups: Vec<Lookup>,
    limit: Option<Tpl>,
    params: Vec<(String, Tpl)>,
    env: Arc<Templates>,
}

impl Rule {
    /// The `match` key that only a polled CloudStack item can meet, if any: a webhook delivery
    /// is an event (never an alert) whose payload, the event's description document, has no
    /// level. Such a rule matches nothing unless `triggers.poll` reads `listEvents`/`listAlerts`.
    pub fn polled_only(&self) -> Option<&'static str> {
        if self.source != Origin::Cloudstack {
            return None;
        }
        if !self.levels.is_empty() {
            return Some("level");
        }
        if !self.kinds.is_empty() && self.kinds.iter().all(|k| k.eq_ignore_ascii_case("alert")) {
            return Some("kind");
        }
        None
    }
}

/// A lookup: a read-only API call whose first listed item the templates read by its name.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub name: String,
    pub api: String,
    args: Vec<(String, Tpl)>,
}

/// What a matched rule asks for: a run of the job with these targets and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// A host pattern the run is limited to (`None`: the job's own targets).
    pub limit: Option<String>,
    /// Parameters over the job's own.
    pub params: Vec<(String, String)>,
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn any_of(list: &[String], value: &str, fold: bool) -> bool {
    list.is_empty()
        || list.iter().any(|p| {
            if fold {
                p.eq_ignore_ascii_case(value)
            } else {
                glob(p, value)
            }
        })
}

impl Rule {
    /// Whether `e` is an event this rule is about.
    pub fn matches(&self, e: &Event) -> bool {
        e.source == self.source.word()
            && any_of(&self.types, &e.kind_name, false)
            && any_of(&self.kinds, &e.kind, true)
            && any_of(&self.levels, &e.level, true)
            && any_of(&self.statuses, &e.status, true)
            && any_of(&self.resource_types, &e.resource_type, true)
            && any_of(&self.resource_ids, &e.resource_id, false)
            && self
                .resource_name
                .as_ref()
                .is_none_or(|r| r.is_match(&e.resource_name))
            && self
                .description
                .as_ref()
                .is_none_or(|r| r.is_match(&e.description))
            && self.labels.iter().all(|(k, r)| {
                e.labels
                    .get(k)
                    .is_some_and(|v: &String| r.is_match(v.as_str()))
            })
    }

    /// The API calls of the lookups, in order, their arguments rendered against the event (a
    /// lookup's arguments may read the lookups before it, in `ctx`).
    pub fn lookup_call(
        &self,
        lookup: &Lookup,
        ctx: &BTreeMap<String, Value>,
    ) -> Result<ApiCall, String> {
        let ctx = Value::from_serialize(ctx);
        let mut args = BTreeMap::new();
        for (k, t) in &lookup.args {
            args.insert(
                k.clone(),
                self.env.render(t, &ctx).map_err(|e| e.to_string())?,
            );
        }
        Ok(ApiCall {
            command: lookup.api.clone(),
            args,
        })
    }

    /// The run asked for, with `ctx` holding `event` and the lookups' items.
    pub fn ask(&self, ctx: &BTreeMap<String, Value>) -> Result<Ask, String> {
        let ctx = Value::from_serialize(ctx);
        let limit = match &self.limit {
            None => None,
            Some(t) => {
                let l = self.env.render(t, &ctx).map_err(|e| e.to_string())?;
                let l = l.trim().to_string();
                if l.is_empty() {
                    return Err("`limit` rendered empty: no target to run on".into());
                }
                Some(l)
            }
        };
        let mut params = Vec::new();
        for (k, t) in &self.params {
            params.push((
                k.clone(),
                self.env.render(t, &ctx).map_err(|e| e.to_string())?,
            ));
        }
        Ok(Ask { limit, params })
    }

    /// The names of the parameters the rule sets, with their paths in the file (for the check
    /// against the playbook).
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(k, _)| k.as_str())
    }
}

/// The template context of an event: `event` (lookups are added by name).
pub fn context(e: &Event) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    m.insert("event".to_string(), Value::from_serialize(e));
    m
}

/// Compiles the rules of job `i`. Their templates go into one environment per job.
pub(crate) fn compile(
    source: &Source,
    i: usize,
    docs: &[RuleDoc],
    diags: &mut Vec<Diagnostic>,
) -> Vec<Rule> {
    let mut env = Templates::new();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for (r, doc) in docs.iter().enumerate() {
        let at = format!("jobs.{i}.on.{r}");
        let m = &doc.matches;
        let mut regex = |key: &str, text: &Option<String>| -> Option<Regex> {
            let text = text.as_ref()?;
            match Regex::new(text) {
                Ok(re) => Some(re),
                Err(e) => {
                    diags.push(Diagnostic::at(
                        source,
                        &format!("{at}.match.{key}"),
                        format!("{at}.match.{key}: {text:?} is not a regex ({e})"),
                    ));
                    None
                }
            }
        };
        let resource_name = regex("resource_name", &m.resource_name);
        let description = regex("description", &m.description);
        let mut labels = Vec::new();
        for (k, v) in &m.labels {
            if let Some(re) = regex(&format!("labels.{k}"), &Some(v.clone())) {
                labels.push((k.clone(), re));
            }
        }
        if m.source == Origin::Cloudstack && !m.labels.is_empty() {
            diags.push(Diagnostic::at(
                source,
                &format!("{at}.match.labels"),
                format!(
                    "{at}.match.labels: CloudStack events have no labels (they are Alertmanager's)"
                ),
            ));
        }
        let types = m.types.as_ref().map(Words::list).unwrap_or_default();
        for t in &types {
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'))
            {
                diags.push(Diagnostic::at(
                    source,
                    &format!("{at}.match.type"),
                    format!("{at}.match.type: {t:?} is not an event type (e.g. ROUTER.HEALTH.CHECKS, or ROUTER.* for a family)"),
                ));
            }
        }
        if m.source == Origin::Cloudstack && types.is_empty() {
            // The webhook receiver refuses event types no rule names: a rule must name them.
            diags.push(Diagnostic::at(
                source,
                &format!("{at}.match"),
                format!("{at}.match: a CloudStack rule names its event `type` (e.g. ROUTER.HEALTH.CHECKS, or ROUTER.*)"),
            ));
        }
        let mut names: Vec<String> = vec!["event".into()];
        let mut lookups = Vec::new();
        for (name, l) in &doc.lookup {
            let lat = format!("{at}.lookup.{name}");
            if name == "event" || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                diags.push(Diagnostic::at(
                    source,
                    &lat,
                    format!("{lat}: a lookup's name is a variable name (letters, digits, _), not `event`"),
                ));
            }
            let call = ApiCall {
                command: l.api.clone(),
                args: BTreeMap::new(),
            };
            if call.access() != Access::ReadOnly {
                diags.push(Diagnostic::at(
                    source,
                    &format!("{lat}.api"),
                    format!("{lat}.api: {} may change the cloud; a lookup only reads (list*, query*, get*)", l.api),
                ));
            }
            let mut args = Vec::new();
            for (k, v) in &l.args {
                if let Some(t) = template(
                    &mut env,
                    source,
                    &format!("{lat}.args.{k}"),
                    v,
                    &names,
                    diags,
                ) {
                    args.push((k.clone(), t));
                }
            }
            names.push(name.clone());
            lookups.push(Lookup {
                name: name.clone(),
                api: l.api.clone(),
                args,
            });
        }
        let limit = doc
            .limit
            .as_ref()
            .and_then(|l| template(&mut env, source, &format!("{at}.limit"), l, &names, diags));
        let mut params = Vec::new();
        for (k, v) in &doc.params {
            let path = format!("{at}.params.{k}");
            let text = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => {
                    diags.push(Diagnostic::at(
                        source,
                        &path,
                        format!(
                            "{path}: a parameter is a string, number or boolean (or a template)"
                        ),
                    ));
                    continue;
                }
            };
            if let Some(t) = template(&mut env, source, &path, &text, &names, diags) {
                params.push((k.clone(), t));
            }
        }
        pending.push(Rule {
            name: doc.name.clone().unwrap_or_else(|| format!("on.{r}")),
            source: m.source,
            types,
            kinds: m.kind.as_ref().map(Words::list).unwrap_or_default(),
            levels: m.level.as_ref().map(Words::list).unwrap_or_default(),
            statuses: m.status.as_ref().map(Words::list).unwrap_or_default(),
            resource_types: m
                .resource_type
                .as_ref()
                .map(Words::list)
                .unwrap_or_default(),
            resource_ids: m.resource_id.as_ref().map(Words::list).unwrap_or_default(),
            resource_name,
            description,
            labels,
            lookups,
            limit,
            params,
            env: Arc::new(Templates::new()),
        });
    }
    let env = Arc::new(env);
    for mut r in pending {
        r.env = env.clone();
        out.push(r);
    }
    out
}

/// Compiles one template of a rule, and checks the names it reads: `names` (`event` and the
/// lookups before it), and of `event` only its fields.
fn template(
    env: &mut Templates,
    source: &Source,
    path: &str,
    text: &str,
    names: &[String],
    diags: &mut Vec<Diagnostic>,
) -> Option<Tpl> {
    let tpl = match env.add(source, path, text, Mode::Text) {
        Ok(t) => t,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let mut ok = true;
    for v in &tpl.vars {
        if !names.contains(v) {
            let similar = crate::error::similar(v, names.iter().map(String::as_str));
            let help = crate::error::did_you_mean(&similar)
                .unwrap_or_else(|| format!("a rule's templates read: {}", names.join(", ")));
            diags.push(
                Diagnostic::at(
                    source,
                    path,
                    format!("{path}: unknown variable `{v}` (a rule's templates read `event` and the rule's lookups)"),
                )
                .with_help(help),
            );
            ok = false;
        }
    }
    for a in tpl.attrs.iter().filter(|a| a.var == "event") {
        if !FIELDS.contains(&a.attr.as_str()) {
            let similar = crate::error::similar(&a.attr, FIELDS.iter().copied());
            let help = crate::error::did_you_mean(&similar)
                .unwrap_or_else(|| format!("an event has: {}", FIELDS.join(", ")));
            diags.push(
                Diagnostic::at_loc(
                    source,
                    a.loc.clone(),
                    format!("{path}: an event has no field `{}`", a.attr),
                )
                .with_help(help),
            );
            ok = false;
        }
    }
    ok.then_some(tpl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::jobs::{Jobs, Schedule};

    const HEAD: &str = "listen: 127.0.0.1:9187\ntriggers:\n  cloudstack: { secret: { env: CS_SECRET } }\njobs:\n  - name: dns\n    playbook: p\n    inventory: i.yml\n";

    fn parse(rules: &str) -> Result<Jobs, String> {
        parse_after(HEAD, rules)
    }

    fn parse_after(head: &str, rules: &str) -> Result<Jobs, String> {
        Jobs::parse(
            std::path::Path::new("/etc/remedy/jobs.yml"),
            &format!("{head}{rules}"),
        )
        .map_err(|d| d.render(false))
    }

    fn event() -> Event {
        Event {
            source: "cloudstack".into(),
            kind: "event".into(),
            id: "e1".into(),
            kind_name: "ROUTER.HEALTH.CHECKS".into(),
            level: "ERROR".into(),
            resource_type: "DomainRouter".into(),
            resource_id: "u-930".into(),
            resource_name: "r-930-VM".into(),
            description: "dnsmasq: failed".into(),
            ..Event::default()
        }
    }

    #[test]
    fn a_rule_matches_and_renders_its_targets_and_parameters() {
        // (Polled too: a level is only on polled events.)
        let head = HEAD.replace(
            "triggers:\n",
            "triggers:\n  poll: [{ inventory: i.yml, every: 30s }]\n",
        );
        let jobs = parse_after(
            &head,
            "    on:\n      - match: { source: cloudstack, type: [ROUTER.*], level: error, resource_type: DomainRouter, resource_name: \"^r-\\\\d+-VM$\", description: dnsmasq }\n        lookup:\n          router: { api: listRouters, args: { id: \"{{ event.resource_id }}\" } }\n        limit: \"{{ router.name }}\"\n        params: { vpc: \"{{ router.vpcname }}\", restart: true }\n",
        )
        .unwrap();
        let job = &jobs.jobs[0];
        assert!(
            matches!(job.schedule, Schedule::Events),
            "rules only: events only"
        );
        let rule = &job.on[0];
        let mut e = event();
        assert!(rule.matches(&e));
        let mut ctx = context(&e);
        let call = rule.lookup_call(&rule.lookups[0], &ctx).unwrap();
        assert_eq!(call.to_string(), "listRouters id=u-930");
        ctx.insert(
            "router".into(),
            Value::from_serialize(serde_json::json!({"name": "r-930-VM", "vpcname": "web-vpc"})),
        );
        let ask = rule.ask(&ctx).unwrap();
        assert_eq!(ask.limit.as_deref(), Some("r-930-VM"));
        assert_eq!(
            ask.params,
            [
                ("restart".to_string(), "true".to_string()),
                ("vpc".into(), "web-vpc".into())
            ]
        );
        e.description = "all good".into();
        assert!(!rule.matches(&e), "description");
        let mut e = event();
        e.kind_name = "VM.STOP".into();
        assert!(!rule.matches(&e), "type");
        let mut e = event();
        e.resource_name = "s-1-VM".into();
        assert!(!rule.matches(&e), "resource name");
    }

    #[test]
    fn rule_errors_point_at_the_line_and_key_with_did_you_mean() {
        let e =
            parse("    on:\n      - match: { source: cloudstack, type: VM.STOP, levle: ERROR }\n")
                .unwrap_err();
        assert!(
            e.contains("jobs.yml:9:53") && e.contains("unknown field `levle`"),
            "{e}"
        );
        assert!(e.contains("did you mean \"level\"?"), "{e}");
        let e = parse("    on:\n      - match: { source: cloudstack, type: VM.STOP }\n        limit: \"{{ event.resouce_name }}\"\n")
            .unwrap_err();
        assert!(
            e.contains("jobs.yml:10:") && e.contains("an event has no field `resouce_name`"),
            "{e}"
        );
        assert!(e.contains("did you mean \"resource_name\"?"), "{e}");
        let e = parse("    on:\n      - match: { source: cloudstack, type: VM.STOP }\n        lookup:\n          router: { api: listRouters }\n        params: { vpc: \"{{ rooter.vpcname }}\" }\n")
            .unwrap_err();
        assert!(
            e.contains("jobs.yml:12:")
                && e.contains("unknown variable `rooter`")
                && e.contains("did you mean \"router\"?"),
            "{e}"
        );
        let e = parse("    on:\n      - match: { source: cloudstack, type: VM.STOP, description: \"(\" }\n        lookup:\n          vm: { api: stopVirtualMachine }\n")
            .unwrap_err();
        assert!(e.contains("match.description: \"(\" is not a regex"), "{e}");
        assert!(e.contains("a lookup only reads"), "{e}");
        let e =
            parse("    on:\n      - match: { source: alertmanager, labels: { alertname: X } }\n")
                .unwrap_err();
        assert!(e.contains("no trigger delivers alertmanager events"), "{e}");
        // Webhooks only: a level (or an alert) is never delivered.
        let e =
            parse("    on:\n      - match: { source: cloudstack, type: ROUTER.*, level: ERROR }\n")
                .unwrap_err();
        assert!(
            e.contains("jobs.yml:9:")
                && e.contains("match.level: only a polled event or alert has this")
                && e.contains("poll listEvents/listAlerts"),
            "{e}"
        );
        let e =
            parse("    on:\n      - match: { source: cloudstack, type: ROUTER.*, kind: alert }\n")
                .unwrap_err();
        assert!(e.contains("match.kind: only a polled"), "{e}");
        let head = HEAD.replace("triggers:\n", "triggers:\n  first_event: later\n");
        let e = parse_after(
            &head,
            "    on:\n      - match: { source: cloudstack, type: VM.STOP }\n",
        )
        .unwrap_err();
        assert!(
            e.contains("jobs.yml:3:") && e.contains("triggers.first_event: \"later\" is not `now`"),
            "{e}"
        );
        let e = parse("    on:\n      - match: { source: cloudstack }\n").unwrap_err();
        assert!(
            e.contains("a CloudStack rule names its event `type`"),
            "{e}"
        );
        let e = parse("    on:\n      - match: { source: cloudstack, type: VM.STOP }\n        limit: \"{{ event.id | nofilter }}\"\n").unwrap_err();
        assert!(e.contains("unknown filter `nofilter`"), "{e}");
    }

    #[test]
    fn globs_match_families_of_event_types() {
        assert!(glob("ROUTER.*", "ROUTER.HEALTH.CHECKS"));
        assert!(glob("ROUTER.HEALTH.CHECKS", "ROUTER.HEALTH.CHECKS"));
        assert!(!glob("ROUTER.*", "VM.START"));
        assert!(glob("*.STOP", "VM.STOP"));
        assert!(glob("A*B*C", "AxxBxxC"));
        assert!(!glob("A*B*C", "AxxCxxB"));
        assert!(!glob("AB*BA", "ABA"));
    }
}
