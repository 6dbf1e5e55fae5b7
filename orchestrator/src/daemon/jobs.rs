//! `jobs.yml`: what `remedy daemon` runs, and when.
//!
//! ```yaml
//! listen: 127.0.0.1:9187        # /healthz and /metrics (loopback only)
//! inventory_cache: 1m            # a scheduled detection reuses the zone's hosts this long
//! defaults:                      # any job key below, for every job
//!   cooldown: 30m
//!   circuit: { fixes: 3, window: 1h }
//! jobs:
//!   - name: dnsmasq-web
//!     playbook: restart-dnsmasq
//!     inventory: inventories/prod.yml      # or a list
//!     params: { vpc: web-vpc }
//!     schedule: "*/5 * * * *"             # cron: 5 fields, or 6 with seconds first
//!     timezone: Europe/Berlin             # for `schedule` (default UTC)
//!     # every: 5m                         # instead of `schedule`
//!     jitter: 30s
//!     mode: auto                          # auto (detect, then fix) | plan | detect
//!     timeout: 10m
//!     on: [...]                           # rules: events that run it at once (triggers/rules.rs)
//! triggers:                              # where events come from (triggers/mod.rs)
//!   debounce: 5s
//!   first_event: now                     # or wait (triggers/queue.rs)
//!   cloudstack: { secret: { env: REMEDY_WEBHOOK_SECRET } }   # POST /hooks/cloudstack
//! ```
//!
//! Everything is checked when the file is read; an error points at its line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::triggers::OneOrMany;
use crate::error::{Diagnostic, Diagnostics};
use crate::source::Source;

/// What a job does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Detect, and fix when the playbook applies.
    Auto,
    /// Detect, and when it applies write a plan for approval (`remedy apply --plan`).
    Plan,
    /// Detect and report only.
    Detect,
}

/// When a circuit opens: more than `fixes` fixes of one target within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    pub fixes: u32,
    pub window: Duration,
}

/// Which events notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Notice {
    /// A fix ran and changed something.
    Fix,
    /// A run failed (rolled back or not).
    Failure,
    /// A target's circuit opened: the job stops fixing it.
    CircuitOpen,
    /// `plan` mode wrote a plan.
    Plan,
    /// A `report` step found problems (the run's exit 8).
    Found,
    /// The job became degraded: it finds the fault and leaves every target alone.
    Degraded,
    /// The job is no longer degraded: the fault is gone or fixed.
    Recovered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// POSTed a JSON body.
    pub webhook: Option<String>,
    /// Run by `sh -c`, with the event in `REMEDY_*` variables.
    pub command: Option<String>,
    pub on: Vec<Notice>,
}

/// When a job runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        cron: Box<croner::Cron>,
        pattern: String,
        tz: jiff::tz::TimeZone,
    },
    Every(Duration),
    /// No schedule: the job runs on events only (its `on:` rules).
    Events,
}

impl Schedule {
    /// The first run time strictly after `after` (jitter not included).
    pub fn next_after(&self, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
        match self {
            Schedule::Every(d) => {
                let d = jiff::SignedDuration::try_from(*d).ok()?;
                after.checked_add(d).ok()
            }
            Schedule::Events => None,
            Schedule::Cron { cron, tz, .. } => {
                let z = after.to_zoned(tz.clone());
                cron.find_next_occurrence(&z, false)
                    .ok()
                    .map(|z| z.timestamp())
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(d) => format!("every {}", humantime::format_duration(*d)),
            Schedule::Events => "on events only".to_string(),
            Schedule::Cron { pattern, tz, .. } => {
                format!("cron \"{pattern}\" ({})", tz.iana_name().unwrap_or("UTC"))
            }
        }
    }
}

/// One job, every default applied.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub playbook: String,
    pub inventory: Vec<PathBuf>,
    pub params: Vec<(String, String)>,
    pub schedule: Schedule,
    pub jitter: Duration,
    pub mode: Mode,
    pub timeout: Duration,
    pub cooldown: Duration,
    pub circuit: Circuit,
    pub notify: Notify,
    /// Rules: the events that run the job at once (`on:`).
    pub on: Vec<super::triggers::rules::Rule>,
    /// A run asked for by an event: the targets it is limited to (never set in the file).
    pub limit: Option<String>,
    /// The file's `inventory_cache` (zero for a run asked by events: the zone is read afresh).
    pub inventory_cache: Duration,
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct Jobs {
    pub path: PathBuf,
    pub listen: Option<std::net::SocketAddr>,
    pub jobs: Vec<Job>,
    /// Where events come from (`triggers:`).
    pub triggers: super::triggers::Triggers,
    /// How long a scheduled detection may reuse the hosts read from the zone for an inventory
    /// (`inventory_cache:`; zero: read at every run).
    pub inventory_cache: Duration,
}

/// The default `inventory_cache`.
pub const DEFAULT_INVENTORY_CACHE: Duration = Duration::from_secs(60);

// --- the file as written ---

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    listen: Option<String>,
    /// Allows a `listen` address that is not loopback (for webhook deliveries from afar).
    #[serde(default)]
    listen_public: bool,
    #[serde(default)]
    inventory_cache: Option<String>,
    #[serde(default)]
    triggers: super::triggers::TriggersDoc,
    #[serde(default)]
    defaults: JobDoc,
    jobs: Vec<JobDoc>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobDoc {
    name: Option<String>,
    playbook: Option<String>,
    inventory: Option<OneOrMany>,
    params: Option<BTreeMap<String, serde_yaml::Value>>,
    schedule: Option<String>,
    timezone: Option<String>,
    every: Option<String>,
    jitter: Option<String>,
    mode: Option<Mode>,
    timeout: Option<String>,
    cooldown: Option<String>,
    circuit: Option<CircuitDoc>,
    notify: Option<NotifyDoc>,
    on: Option<Vec<super::triggers::rules::RuleDoc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitDoc {
    fixes: u32,
    window: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyDoc {
    webhook: Option<String>,
    command: Option<String>,
    #[serde(default)]
    on: Option<Vec<Notice>>,
}

/// Defaults when neither the job nor `defaults:` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_CIRCUIT: Circuit = Circuit {
    fixes: 3,
    window: Duration::from_secs(3600),
};

impl Jobs {
    /// Read and check `path`. Relative inventory paths are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Jobs, Diagnostics> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Diagnostic::new(format!("{}: {e}", path.display())))?;
        Jobs::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Jobs, Diagnostics> {
        let source = Source::parse(path, text).map_err(|e| {
            let mut d = Diagnostic::new(format!("invalid YAML: {}", e.message));
            if let Ok(empty) = Source::parse(path, "") {
                d.loc = Some(empty.at(e.pos));
            }
            d
        })?;
        let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| schema_error(&source, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut diags = Vec::new();
        let listen = match &doc.listen {
            None => None,
            Some(l) => match l.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() || doc.listen_public => Some(a),
                Ok(_) => {
                    diags.push(Diagnostic::at(
                        &source,
                        "listen",
                        format!("listen: {l} is not a loopback address; /metrics and the webhook receivers are served on loopback only, unless `listen_public: true` is set (or put a proxy in front)"),
                    ));
                    None
                }
                Err(e) => {
                    diags.push(Diagnostic::at(&source, "listen", format!("listen: {e}")));
                    None
                }
            },
        };
        let triggers = doc.triggers.check(&source, base, &mut diags);
        if doc.defaults.on.is_some() {
            diags.push(Diagnostic::at(
                &source,
                "defaults.on",
                "defaults.on: rules belong to a job (each job's own `on:`)",
            ));
        }
        if doc.listen_public && triggers.alertmanager == Some(None) {
            diags.push(Diagnostic::at(
                &source,
                "triggers.alertmanager",
                "triggers.alertmanager: with `listen_public: true` the Alertmanager receiver needs a `token`",
            ));
        }
        let inventory_cache = match &doc.inventory_cache {
            None => DEFAULT_INVENTORY_CACHE,
            Some(t) => duration(&source, "inventory_cache", t).unwrap_or_else(|d| {
                diags.push(d);
                DEFAULT_INVENTORY_CACHE
            }),
        };
        let mut jobs = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, j) in doc.jobs.iter().enumerate() {
            let at = |key: &str| format!("jobs.{i}.{key}");
            let merged = merge(&doc.defaults, j);
            match job(&source, &merged, i, base) {
                Ok(mut job) => {
                    let rules = j.on.as_deref().unwrap_or_default();
                    job.on = super::triggers::rules::compile(&source, i, rules, &mut diags);
                    for (r, rule) in job.on.iter().enumerate() {
                        if !triggers.delivers(rule.source) {
                            diags.push(Diagnostic::at(
                                &source,
                                &format!("jobs.{i}.on.{r}.match.source"),
                                format!(
                                    "jobs.{i}.on.{r}: no trigger delivers {} events (add it under `triggers:`)",
                                    rule.source.word()
                                ),
                            ));
                        } else if let Some(key) =
                            rule.polled_only().filter(|_| triggers.poll.is_empty())
                        {
                            diags.push(
                                Diagnostic::at(
                                    &source,
                                    &format!("jobs.{i}.on.{r}.match.{key}"),
                                    format!(
                                        "jobs.{i}.on.{r}.match.{key}: only a polled event or alert has this, and nothing polls: a CloudStack webhook delivers events (not alerts), and its payload carries no level, so this rule would never match"
                                    ),
                                )
                                .with_help(
                                    "match on `type`, `status` or `description` instead, or poll listEvents/listAlerts under `triggers.poll`",
                                ),
                            );
                        }
                    }
                    if !names.insert(job.name.clone()) {
                        diags.push(Diagnostic::at(
                            &source,
                            &at("name"),
                            format!("jobs.{i}.name: {:?} is used by another job", job.name),
                        ));
                    }
                    jobs.push(job);
                }
                Err(mut d) => diags.append(&mut d),
            }
        }
        if doc.jobs.is_empty() {
            diags.push(Diagnostic::at(
                &source,
                "jobs",
                "jobs: the file names no job",
            ));
        }
        if !diags.is_empty() {
            return Err(Diagnostics(diags));
        }
        for job in &mut jobs {
            job.inventory_cache = inventory_cache;
        }
        Ok(Jobs {
            path: path.to_path_buf(),
            listen,
            jobs,
            triggers,
            inventory_cache,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Each job's playbook found and valid, and its parameters ones the playbook has (with
    /// every required one given): checked when the daemon starts and on reload, so that a
    /// typo is an error now rather than a failing job every few minutes.
    pub fn check_playbooks(&self) -> Result<(), Diagnostics> {
        let source = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| Source::parse(&self.path, t).ok());
        let at = |i: usize, key: &str, msg: String| match &source {
            Some(s) => Diagnostic::at(s, &format!("jobs.{i}.{key}"), msg),
            None => Diagnostic::new(msg),
        };
        let mut diags = Vec::new();
        for (i, j) in self.jobs.iter().enumerate() {
            let program = match crate::playbook::load(&j.playbook)
                .and_then(|l| crate::playbook::compile(&l))
            {
                Ok(p) => p,
                Err(d) => {
                    diags.push(at(
                        i,
                        "playbook",
                        format!(
                            "job {}: playbook {}: {}",
                            j.name,
                            j.playbook,
                            d.render(false).trim_end()
                        ),
                    ));
                    continue;
                }
            };
            let params = program.params();
            for (k, _) in &j.params {
                if !params.contains_key(k) {
                    diags.push(at(
                        i,
                        &format!("params.{k}"),
                        format!(
                            "job {}: {} has no parameter {k:?} (it has: {})",
                            j.name,
                            program.name,
                            params.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            for (r, rule) in j.on.iter().enumerate() {
                for k in rule.param_names() {
                    if !params.contains_key(k) {
                        diags.push(at(
                            i,
                            &format!("on.{r}.params.{k}"),
                            format!(
                                "job {}: rule {}: {} has no parameter {k:?} (it has: {})",
                                j.name,
                                rule.name,
                                program.name,
                                params.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
            // A required parameter comes from the job, or, for a job that runs on events only,
            // from every one of its rules.
            let events_only = matches!(j.schedule, Schedule::Events);
            for (k, p) in params {
                let from_job = j.params.iter().any(|(n, _)| n == k);
                let from_rules = events_only
                    && !j.on.is_empty()
                    && j.on
                        .iter()
                        .all(|r| r.param_names().any(|n| n == k.as_str()));
                if p.required && !from_job && !from_rules {
                    let hint = if j.on.is_empty() {
                        String::new()
                    } else if events_only {
                        "; give it in `params`, or in every rule's `params`".to_string()
                    } else {
                        "; the job's scheduled runs need it in `params` (rules' params apply to \
                         the runs they start)"
                            .to_string()
                    };
                    diags.push(at(
                        i,
                        "params",
                        format!(
                            "job {}: {} needs the parameter {k:?}{hint}",
                            j.name, program.name
                        ),
                    ));
                }
            }
        }
        if diags.is_empty() {
            Ok(())
        } else {
            Err(Diagnostics(diags))
        }
    }
}

/// The job's keys over the defaults'.
fn merge(d: &JobDoc, j: &JobDoc) -> JobDoc {
    macro_rules! pick {
        ($f:ident) => {
            j.$f.clone().or_else(|| d.$f.clone())
        };
    }
    // `schedule`, `every` and `timezone` come as a set: a job with either keeps its own. A job
    // with rules and neither runs on events only.
    let own_timing = j.schedule.is_some() || j.every.is_some() || j.on.is_some();
    JobDoc {
        name: j.name.clone(),
        playbook: pick!(playbook),
        inventory: pick!(inventory),
        params: match (&d.params, &j.params) {
            (Some(a), Some(b)) => {
                let mut m = a.clone();
                m.extend(b.clone());
                Some(m)
            }
            _ => pick!(params),
        },
        schedule: if own_timing {
            j.schedule.clone()
        } else {
            d.schedule.clone()
        },
        every: if own_timing {
            j.every.clone()
        } else {
            d.every.clone()
        },
        timezone: pick!(timezone),
        jitter: pick!(jitter),
        mode: pick!(mode),
        timeout: pick!(timeout),
        cooldown: pick!(cooldown),
        circuit: pick!(circuit),
        notify: pick!(notify),
        on: j.on.clone(),
    }
}

fn duration(source: &Source, path: &str, text: &str) -> Result<Duration, Diagnostic> {
    humantime::parse_duration(text).map_err(|e| {
        Diagnostic::at(
            source,
            path,
            format!("{path}: {text:?} is not a duration ({e}); e.g. 30s, 5m, 1h"),
        )
    })
}

fn job(source: &Source, j: &JobDoc, i: usize, base: &Path) -> Result<Job, Vec<Diagnostic>> {
    let at = |key: &str| format!("jobs.{i}.{key}");
    let mut diags = Vec::new();
    let mut need = |key: &str, v: &Option<String>| -> String {
        match v {
            Some(s) if !s.trim().is_empty() => s.clone(),
            _ => {
                diags.push(Diagnostic::at(
                    source,
                    &format!("jobs.{i}"),
                    format!("jobs.{i}: `{key}` is required"),
                ));
                String::new()
            }
        }
    };
    let name = need("name", &j.name);
    let playbook = need("playbook", &j.playbook);
    if !name.is_empty()
        && !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        diags.push(Diagnostic::at(
            source,
            &at("name"),
            format!("jobs.{i}.name: {name:?} may hold letters, digits, '-', '_' and '.' only (it names files and metrics)"),
        ));
    }
    let inventory: Vec<PathBuf> = match &j.inventory {
        Some(paths) => paths.paths(base),
        None => {
            diags.push(Diagnostic::at(
                source,
                &format!("jobs.{i}"),
                format!("jobs.{i}: `inventory` is required"),
            ));
            Vec::new()
        }
    };
    let mut params = Vec::new();
    for (k, v) in j.params.clone().unwrap_or_default() {
        let text = match v {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Bool(b) => b.to_string(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => {
                diags.push(Diagnostic::at(
                    source,
                    &at(&format!("params.{k}")),
                    format!("jobs.{i}.params.{k}: a parameter is a string, number or boolean"),
                ));
                continue;
            }
        };
        params.push((k, text));
    }
    let tz = match &j.timezone {
        None => jiff::tz::TimeZone::UTC,
        Some(name) => match jiff::tz::TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => {
                diags.push(Diagnostic::at(
                    source,
                    &at("timezone"),
                    format!("jobs.{i}.timezone: {name:?}: {e}"),
                ));
                jiff::tz::TimeZone::UTC
            }
        },
    };
    let schedule = match (&j.schedule, &j.every) {
        (Some(_), Some(_)) => {
            diags.push(Diagnostic::at(
                source,
                &at("every"),
                format!("jobs.{i}: give `schedule` (cron) or `every`, not both"),
            ));
            None
        }
        (None, None) if j.on.as_ref().is_some_and(|r| !r.is_empty()) => Some(Schedule::Events),
        (None, None) => {
            diags.push(Diagnostic::at(
                source,
                &format!("jobs.{i}"),
                format!("jobs.{i}: `schedule` (cron), `every` (e.g. 5m) or `on` (rules for events) is required"),
            ));
            None
        }
        (Some(pattern), None) => {
            let parser = croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Optional)
                .year(croner::parser::Year::Disallowed)
                .build();
            match parser.parse(pattern) {
                Ok(cron) => Some(Schedule::Cron {
                    cron: Box::new(cron),
                    pattern: pattern.clone(),
                    tz,
                }),
                Err(e) => {
                    diags.push(Diagnostic::at(
                        source,
                        &at("schedule"),
                        format!("jobs.{i}.schedule: {pattern:?} is not a cron expression ({e}); 5 fields (minute hour day month weekday), or 6 with seconds first"),
                    ));
                    None
                }
            }
        }
        (None, Some(every)) => match duration(source, &at("every"), every) {
            Ok(d) if d >= Duration::from_secs(1) => Some(Schedule::Every(d)),
            Ok(_) => {
                diags.push(Diagnostic::at(
                    source,
                    &at("every"),
                    format!("jobs.{i}.every: at least 1s"),
                ));
                None
            }
            Err(d) => {
                diags.push(d);
                None
            }
        },
    };
    let mut dur = |key: &str, v: &Option<String>, default: Duration| -> Duration {
        match v {
            None => default,
            Some(t) => duration(source, &at(key), t).unwrap_or_else(|d| {
                diags.push(d);
                default
            }),
        }
    };
    let jitter = dur("jitter", &j.jitter, Duration::ZERO);
    let timeout = dur("timeout", &j.timeout, DEFAULT_TIMEOUT);
    let cooldown = dur("cooldown", &j.cooldown, DEFAULT_COOLDOWN);
    let circuit = match &j.circuit {
        None => DEFAULT_CIRCUIT,
        Some(c) => {
            let window = dur(
                "circuit.window",
                &Some(c.window.clone()),
                DEFAULT_CIRCUIT.window,
            );
            if c.fixes == 0 {
                diags.push(Diagnostic::at(
                    source,
                    &at("circuit.fixes"),
                    format!("jobs.{i}.circuit.fixes: at least 1"),
                ));
            }
            Circuit {
                fixes: c.fixes,
                window,
            }
        }
    };
    let notify = match &j.notify {
        None => Notify {
            webhook: None,
            command: None,
            on: Vec::new(),
        },
        Some(n) => {
            if let Some(url) = &n.webhook {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    diags.push(Diagnostic::at(
                        source,
                        &at("notify.webhook"),
                        format!("jobs.{i}.notify.webhook: {url:?} is not an http(s) URL"),
                    ));
                }
            }
            Notify {
                webhook: n.webhook.clone(),
                command: n.command.clone(),
                on: n.on.clone().unwrap_or_else(|| {
                    vec![
                        Notice::Fix,
                        Notice::Failure,
                        Notice::CircuitOpen,
                        Notice::Plan,
                        Notice::Found,
                        Notice::Degraded,
                        Notice::Recovered,
                    ]
                }),
            }
        }
    };
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Job {
        name,
        playbook,
        inventory,
        params,
        schedule: schedule.unwrap_or(Schedule::Every(Duration::from_secs(60))),
        jitter,
        mode: j.mode.unwrap_or(Mode::Auto),
        timeout,
        cooldown,
        circuit,
        notify,
        on: Vec::new(),
        limit: None,
        inventory_cache: DEFAULT_INVENTORY_CACHE,
    })
}

/// A schema error at its place, with did-you-mean for an unknown key.
fn schema_error(source: &Source, e: &serde_yaml::Error) -> Diagnostic {
    let d = crate::playbook::load::schema_error(source, e);
    let msg = d.message.clone();
    let Some(rest) = msg.split("unknown field `").nth(1) else {
        return d;
    };
    let field = rest.split('`').next().unwrap_or("");
    let expected: Vec<&str> = rest
        .split("expected one of ")
        .nth(1)
        .or_else(|| rest.split("expected ").nth(1))
        .map(|list| {
            list.split(", ")
                .map(|w| w.trim_matches(|c| c == '`' || c == ' '))
                .collect()
        })
        .unwrap_or_default();
    match crate::error::did_you_mean(&crate::error::similar(field, expected)) {
        Some(help) if d.help.is_none() => d.with_help(help),
        _ => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Jobs, String> {
        Jobs::parse(Path::new("/etc/remedy/jobs.yml"), text).map_err(|d| d.render(false))
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_shipped_example_reads_and_its_playbooks_take_its_parameters() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let jobs = Jobs::load(&root.join("deploy/jobs.example.yml"))
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        assert_eq!(jobs.jobs.len(), 4);
        assert_eq!(jobs.get("vr-backup-loop").unwrap().mode, Mode::Plan);
        // The playbooks are found from the repository (as `remedy` finds ./playbooks).
        let cwd = std::env::current_dir().unwrap();
        let mut with_paths = jobs.clone();
        for j in &mut with_paths.jobs {
            j.playbook = cwd
                .join("../playbooks")
                .join(format!("{}.yml", j.playbook))
                .display()
                .to_string();
        }
        with_paths
            .check_playbooks()
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        with_paths.jobs[0]
            .params
            .push(("vcp".into(), "typo".into()));
        let e = with_paths.check_playbooks().unwrap_err().render(false);
        assert!(e.contains("has no parameter \"vcp\""), "{e}");
    }

    /// A job that runs on events only may take a required parameter from its rules (every
    /// one of them); a job with a schedule still needs it for its scheduled runs.
    #[test]
    fn required_parameters_may_come_from_every_rule_of_an_events_only_job() {
        let vr = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/vr-backup-loop.yml");
        let rule = |params: &str| {
            format!(
                "      - match: {{ source: cloudstack, type: ROUTER.HEALTH.CHECKS }}\n        params: {params}\n"
            )
        };
        let file = |timing: &str, rules: &str| {
            format!(
                "triggers:\n  cloudstack: {{ secret: {{ env: REMEDY_TEST_HOOK_SECRET }} }}\njobs:\n  - name: vr\n    playbook: {}\n    inventory: i.yml\n{timing}    on:\n{rules}",
                vr.display()
            )
        };
        let both = rule("{ vpc: \"{{ event.resource_name }}\", vlan_range: 1000-1099 }");
        let ok = parse(&file("", &both)).unwrap();
        ok.check_playbooks()
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        // One rule without `vpc`: its runs would lack it.
        let one_short = format!("{both}{}", rule("{ vlan_range: 1000-1099 }"));
        let e = parse(&file("", &one_short))
            .unwrap()
            .check_playbooks()
            .unwrap_err()
            .render(false);
        assert!(
            e.contains(
                "needs the parameter \"vpc\"; give it in `params`, or in every rule's `params`"
            ),
            "{e}"
        );
        // With a schedule, the scheduled runs need it from the job.
        let e = parse(&file("    every: 1m\n", &both))
            .unwrap()
            .check_playbooks()
            .unwrap_err()
            .render(false);
        assert!(
            e.contains("the job's scheduled runs need it in `params`"),
            "{e}"
        );
    }

    #[test]
    fn a_job_with_defaults_and_both_kinds_of_schedule() {
        let j = parse(
            "listen: 127.0.0.1:9187\ndefaults:\n  cooldown: 10m\n  params: { zone: z1 }\njobs:\n  - name: dnsmasq\n    playbook: restart-dnsmasq\n    inventory: prod.yml\n    params: { vpc: web-vpc, dhcp: true }\n    every: 30s\n    jitter: 5s\n  - name: nightly\n    playbook: chmod-catalina-out\n    inventory: [a.yml, /abs/b.yml]\n    schedule: \"0 30 2 * * *\"\n    timezone: Europe/Berlin\n    mode: detect\n    circuit: { fixes: 5, window: 2h }\n",
        )
        .unwrap();
        assert_eq!(j.listen.unwrap().port(), 9187);
        let d = &j.jobs[0];
        assert_eq!(d.inventory, [PathBuf::from("/etc/remedy/prod.yml")]);
        assert_eq!(
            d.params,
            [
                ("dhcp".to_string(), "true".to_string()),
                ("vpc".into(), "web-vpc".into()),
                ("zone".into(), "z1".into())
            ]
        );
        assert_eq!(d.cooldown, Duration::from_secs(600));
        assert_eq!(d.mode, Mode::Auto);
        assert_eq!(d.circuit, DEFAULT_CIRCUIT);
        assert_eq!(
            d.schedule.next_after(ts("2026-11-23T09:00:00Z")),
            Some(ts("2026-11-23T09:00:30Z"))
        );
        let n = &j.jobs[1];
        assert_eq!(
            n.inventory,
            [
                PathBuf::from("/etc/remedy/a.yml"),
                PathBuf::from("/abs/b.yml")
            ]
        );
        assert_eq!(n.mode, Mode::Detect);
        assert_eq!(n.circuit.fixes, 5);
        // 02:30:00 Berlin time; in November that is UTC+1.
        assert_eq!(
            n.schedule.next_after(ts("2026-11-23T09:00:00Z")),
            Some(ts("2026-11-24T01:30:00Z"))
        );
        // In July (UTC+2) the same pattern is an hour earlier in UTC.
        assert_eq!(
            n.schedule.next_after(ts("2026-07-01T09:00:00Z")),
            Some(ts("2026-07-02T00:30:00Z"))
        );
    }

    #[test]
    fn five_fields_mean_minutes() {
        let j = parse(
            "jobs:\n  - { name: a, playbook: p, inventory: i.yml, schedule: \"*/5 * * * *\" }\n",
        )
        .unwrap();
        assert_eq!(
            j.jobs[0].schedule.next_after(ts("2026-11-23T09:01:10Z")),
            Some(ts("2026-11-23T09:05:00Z"))
        );
    }

    #[test]
    fn errors_point_at_the_line_and_key() {
        let e = parse("jobs:\n  - name: a\n    playbook: p\n    inventory: i.yml\n    schedule: \"61 * * * *\"\n").unwrap_err();
        assert!(
            e.contains("jobs.yml:5:") && e.contains("jobs.0.schedule"),
            "{e}"
        );
        let e =
            parse("jobs:\n  - name: a\n    playbook: p\n    inventory: i.yml\n    every: soon\n")
                .unwrap_err();
        assert!(
            e.contains("jobs.yml:5:") && e.contains("not a duration"),
            "{e}"
        );
        let e = parse("jobs:\n  - name: a\n    playbook: p\n    inventory: i.yml\n    every: 5m\n    retries: 3\n").unwrap_err();
        assert!(e.contains("jobs.yml:6:") && e.contains("retries"), "{e}");
        let e = parse("jobs:\n  - name: a\n    inventory: i.yml\n    every: 5m\n    schedule: \"* * * * *\"\n    timezone: Mars/Olympus\n").unwrap_err();
        for want in ["`playbook` is required", "not both", "Mars/Olympus"] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = parse("listen: 0.0.0.0:9187\njobs:\n  - { name: a, playbook: p, inventory: i.yml, every: 1m }\n  - { name: a, playbook: p, inventory: i.yml, every: 1m }\n").unwrap_err();
        assert!(
            e.contains("loopback only") && e.contains("used by another job"),
            "{e}"
        );
        let e = parse("jobs:\n  - { name: a, playbook: p, inventory: i.yml, every: 1m, notify: { webhook: ftp://x } }\n").unwrap_err();
        assert!(e.contains("not an http(s) URL"), "{e}");
    }
}
