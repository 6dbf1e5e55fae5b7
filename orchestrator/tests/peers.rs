//! Peer clients are tests: clients nobody here wrote, run against `remedy lab` (the real
//! binary, its own process) and against remedy's inventories, to prove that the simulated zone
//! answers like CloudStack and that remedy's inventories read like Ansible's.
//!
//! - the `ngine_io.cloudstack` modules (bundled in the `ansible` package) in two playbooks
//!   (`tests/peers/ngine-*.yml`), each run in check mode and for real, the first one twice
//!   (idempotence); the zone's state (`GET /sim/state`) and the API calls it saw
//!   (`GET /sim/requests`) are compared around each run;
//! - the `ngine_io.cloudstack.instance` inventory plugin over the lab;
//! - `ansible-inventory --list` over `remedy inventory --list` (as a script inventory) and over
//!   remedy's own inventory files, compared host by host and variable by variable with
//!   remedy's view;
//! - OpenSSH's `ssh` (the system's openssh-client) and `ansible -m raw` with the connection
//!   variables `remedy inventory --list` prints, to a hypervisor and to a router through its
//!   hypervisor, and a host key that differs refused;
//! - the `cs` command line (`cs` 5.2) for `listApis` and `listCapabilities`.
//!
//! The clients come from the venv `.ci/install-test-deps` makes (`$REMEDY_CS_PYTHON`'s
//! directory, else `target/cs-venv`). Without it the suite says SKIPPED; under `CI=true` it
//! fails.
//!
//! Each test checks every call of its client and fails once, at the end, listing every check
//! that failed with what the client printed. What it observed is also a table (client, call,
//! status), which `docs/cloudstack.md` must hold verbatim between the test's markers:
//! `REMEDY_BLESS=1` rewrites it there.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::{json, Value};
use support::{repo_root, Lab};

/// The pinned `ansible` release (`.ci/install-test-deps`) and the collection it bundles.
const NGINE: &str = "ngine_io.cloudstack 2.5.0";

// ---------------------------------------------------------------------------------------------
// The clients and the lab
// ---------------------------------------------------------------------------------------------

/// The venv's `bin` directory, if it has every client; else SKIPPED (a failure under CI).
fn venv_bin() -> Option<PathBuf> {
    let bin = match std::env::var("REMEDY_CS_PYTHON") {
        Ok(p) if !p.is_empty() => Path::new(&p).parent().map(Path::to_path_buf),
        _ => Some(repo_root().join("target/cs-venv/bin")),
    }?;
    let missing: Vec<&str> = ["python", "cs", "ansible-playbook", "ansible-inventory"]
        .into_iter()
        .filter(|tool| !bin.join(tool).exists())
        .collect();
    if missing.is_empty() {
        return Some(bin);
    }
    cloudstack_sim::testing::skip(
        "peers (ansible, ngine_io.cloudstack, cs)",
        &format!("{} has no {}", bin.display(), missing.join(", ")),
    );
    None
}

/// A running lab, its API credentials, and a scratch directory for the clients' files.
struct Peer {
    lab: Lab,
    bin: PathBuf,
    endpoint: String,
    key: String,
    secret: String,
    dir: tempfile::TempDir,
}

impl Peer {
    /// `remedy lab --scenario healthy` with its inventory written to `DIR/lab-live.yml`.
    fn start(bin: PathBuf) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let lab = Lab::start("healthy", &dir.path().join("lab-live.yml"), &home);
        let field = |label: &str| {
            lab.banner
                .lines()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {label:?} in the lab's banner:\n{}", lab.banner))
        };
        let (endpoint, key, secret) =
            (field("API endpoint"), field("API key"), field("secret key"));
        Peer {
            lab,
            bin,
            endpoint,
            key,
            secret,
            dir,
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("lab-live.yml")
    }

    /// A venv tool with the lab's credentials in the environment (`CLOUDSTACK_*`, read by
    /// ngine and by `cs`), a private HOME, no ansible.cfg, no colours, run in the scratch dir.
    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.current_dir(self.dir.path())
            .env("HOME", self.home())
            .env("CLOUDSTACK_ENDPOINT", &self.endpoint)
            .env("CLOUDSTACK_KEY", &self.key)
            .env("CLOUDSTACK_SECRET", &self.secret)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOME", self.dir.path().join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("ansible-tmp"))
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
            .env("PYTHONWARNINGS", "ignore")
            .env_remove("ANSIBLE_CONFIG")
            .env_remove("CLOUDSTACK_CONFIG")
            .env_remove("CLOUDSTACK_REGION");
        cmd
    }

    /// What a client printed, for a failure message, with the lab's secret masked.
    fn shown(&self, o: &Output) -> String {
        let text = format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        text.replace(&self.secret, "<secret>")
    }

    /// The zone's whole state: world, jobs and timers.
    fn state(&self) -> Value {
        self.lab.get("/sim/state")
    }

    /// The API calls the lab has seen, as (command, HTTP status).
    fn requests(&self) -> Vec<(String, Option<u64>)> {
        self.lab
            .get("/sim/requests")
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["command"].as_str().unwrap_or_default().to_string(),
                    r["status"].as_u64(),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Checks, the compatibility table and the docs
// ---------------------------------------------------------------------------------------------

/// One test's observations: a row per call, and every failure in full.
struct Checks {
    section: &'static str,
    rows: Vec<[String; 3]>,
    failures: Vec<String>,
    /// Shown before the failures, if there are any (e.g. the calls the lab refused).
    context: Vec<String>,
}

impl Checks {
    fn new(section: &'static str) -> Checks {
        Checks {
            section,
            rows: Vec::new(),
            failures: Vec::new(),
            context: Vec::new(),
        }
    }

    /// Records one call: `works` (with `note` when given) if every check passed, else a
    /// `fails` row and the failure in full.
    fn record(&mut self, client: &str, call: &str, note: &str, result: Result<(), String>) {
        let status = match result {
            Ok(()) if note.is_empty() => "works".to_string(),
            Ok(()) => format!("works ({note})"),
            Err(why) => {
                let first: String = why
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(100)
                    .collect();
                self.failures.push(format!("{client}: {call}: {why}"));
                format!("FAILS: {}", first.replace('|', "\\|"))
            }
        };
        self.rows
            .push([client.to_string(), call.to_string(), status]);
    }

    /// A row the suite does not run (a client that cannot be installed), with why.
    fn declare(&mut self, client: &str, call: &str, status: &str) {
        self.rows
            .push([client.to_string(), call.to_string(), status.to_string()]);
    }

    /// The table as Markdown.
    fn table(&self) -> String {
        let mut t = String::from("| Client | Call | Status |\n|---|---|---|\n");
        for [client, call, status] in &self.rows {
            t.push_str(&format!("| {client} | {call} | {status} |\n"));
        }
        t
    }

    /// Compares (or, with `REMEDY_BLESS=1`, writes) the section's table in docs/cloudstack.md,
    /// then fails with every failed check.
    fn finish(self) {
        let docs_problem = docs_section(self.section, &self.table());
        let mut all = self.failures;
        if let Some(p) = docs_problem {
            all.push(p);
        }
        if !all.is_empty() {
            panic!(
                "{} of the {} peer-client checks failed:\n{}\n\n{}",
                all.len(),
                self.section,
                self.context.join("\n"),
                all.join("\n\n")
            );
        }
    }
}

/// One writer at a time for docs/cloudstack.md (the tests run in parallel threads).
static DOCS: Mutex<()> = Mutex::new(());

/// The table between `<!-- peers:SECTION -->` and `<!-- /peers:SECTION -->` in
/// docs/cloudstack.md must be `table`; with `REMEDY_BLESS=1` it is written there. Returns the
/// problem, if any.
fn docs_section(section: &str, table: &str) -> Option<String> {
    let _one = DOCS.lock().unwrap_or_else(|e| e.into_inner());
    let path = repo_root().join("docs/cloudstack.md");
    let docs = std::fs::read_to_string(&path).unwrap();
    let (open, close) = (
        format!("<!-- peers:{section} -->\n"),
        format!("<!-- /peers:{section} -->"),
    );
    let Some(start) = docs.find(&open).map(|i| i + open.len()) else {
        return Some(format!(
            "docs/cloudstack.md has no `{}` marker",
            open.trim_end()
        ));
    };
    let Some(end) = docs[start..].find(&close).map(|i| start + i) else {
        return Some(format!("docs/cloudstack.md has no `{close}` marker"));
    };
    let shown = &docs[start..end];
    if shown == table {
        return None;
    }
    if std::env::var("REMEDY_BLESS").as_deref() == Ok("1") {
        let new = format!("{}{table}{}", &docs[..start], &docs[end..]);
        std::fs::write(&path, new).unwrap();
        return None;
    }
    Some(format!(
        "docs/cloudstack.md's `{section}` table is not what the clients did (REMEDY_BLESS=1 \
         rewrites it):\n--- docs\n{shown}--- observed\n{table}"
    ))
}

/// `Err(what)` unless `ok`.
fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

// ---------------------------------------------------------------------------------------------
// ngine_io.cloudstack modules
// ---------------------------------------------------------------------------------------------

/// One `ansible-playbook` run: each task's result by task name, the zone's state before and
/// after, and the API calls made during the run.
struct Run {
    label: &'static str,
    tasks: BTreeMap<String, Value>,
    before: Value,
    after: Value,
    calls: Vec<(String, Option<u64>)>,
    output: String,
}

impl Run {
    fn task(&self, name: &str) -> Result<&Value, String> {
        self.tasks.get(name).ok_or_else(|| {
            format!(
                "{}: no result for task {name:?}; the run printed:\n{}",
                self.label, self.output
            )
        })
    }

    /// The task's result, which must not have failed and must report `changed == changed`.
    fn ok(&self, name: &str, changed: bool) -> Result<&Value, String> {
        let r = self.task(name)?;
        if r["failed"] == true {
            return Err(format!(
                "{}: failed: {}",
                self.label,
                short_error(r["msg"].as_str().unwrap_or_default())
            ));
        }
        ensure(r["changed"] == changed, || {
            format!(
                "{}: changed is {}, expected {changed}\n{}",
                self.label,
                r["changed"],
                task_text(r)
            )
        })?;
        Ok(r)
    }

    /// The calls of `command` made during the run, with their statuses.
    fn called(&self, command: &str) -> Vec<Option<u64>> {
        self.calls
            .iter()
            .filter(|(c, _)| c == command)
            .map(|(_, s)| *s)
            .collect()
    }

    /// The calls the lab answered with an error during the run, counted.
    fn refused(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (command, status) in &self.calls {
            if *status != Some(200) {
                *counts
                    .entry(format!(
                        "{command} {}",
                        status.map_or("-".into(), |s| s.to_string())
                    ))
                    .or_default() += 1;
            }
        }
        let list: Vec<String> = counts.iter().map(|(c, n)| format!("{c} x{n}")).collect();
        format!(
            "{}: API calls answered with an error: {}",
            self.label,
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        )
    }

    /// Nothing changed in the zone, and no call but reads was made (check mode).
    fn changed_nothing(&self) -> Result<(), String> {
        let writes: Vec<&String> = self
            .calls
            .iter()
            .map(|(c, _)| c)
            .filter(|c| !(c.starts_with("list") || c.starts_with("query")))
            .collect();
        ensure(writes.is_empty(), || {
            format!("{}: made changing calls {writes:?}", self.label)
        })?;
        ensure(self.before == self.after, || {
            format!(
                "{}: the zone's state changed:\n{}",
                self.label,
                json_diff(&self.before, &self.after)
            )
        })
    }
}

/// A client's error in a line: `HTTP 401: <errortext>` for CloudStack's answers (as the `cs`
/// library words them), else as it came.
fn short_error(msg: &str) -> String {
    let Some(at) = msg.find("HTTP ") else {
        return msg.to_string();
    };
    let code: String = msg[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let text = msg
        .split_once("'errortext': '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map_or("", |(t, _)| t);
    format!("HTTP {code}: {text}")
}

/// A task result for a failure message, without the bulky `invocation`.
fn task_text(r: &Value) -> String {
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        o.retain(|k, _| {
            !(k.starts_with("api_")
                || k.starts_with("_ansible")
                || ["invocation", "diff", "validate_certs", "action"].contains(&k.as_str()))
        });
    }
    serde_json::to_string_pretty(&r).unwrap()
}

/// Runs `playbook` (under tests/peers) with the JSON callback, `--check` when `check`.
fn playbook(peer: &Peer, label: &'static str, playbook: &str, check: bool) -> Run {
    let before = peer.state();
    let seen = peer.requests().len();
    let mut cmd = peer.tool("ansible-playbook");
    cmd.env("ANSIBLE_STDOUT_CALLBACK", "ansible.posix.json")
        .args(["-i", "localhost,"])
        .arg(repo_root().join("tests/peers").join(playbook));
    if check {
        cmd.arg("--check");
    }
    let out = cmd.output().expect("run ansible-playbook");
    let after = peer.state();
    let calls = peer.requests().split_off(seen);
    let output = peer.shown(&out);
    let mut tasks = BTreeMap::new();
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(report) => {
            for play in report["plays"].as_array().into_iter().flatten() {
                for t in play["tasks"].as_array().into_iter().flatten() {
                    let name = t["task"]["name"].as_str().unwrap_or_default().to_string();
                    tasks.insert(name, t["hosts"]["localhost"].clone());
                }
            }
        }
        Err(e) => eprintln!("{label}: ansible-playbook printed no JSON ({e}):\n{output}"),
    }
    Run {
        label,
        tasks,
        before,
        after,
        calls,
        output,
    }
}

/// An item of a world list by name.
fn named<'a>(world: &'a Value, list: &str, name: &str) -> &'a Value {
    world[list]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .unwrap_or(&Value::Null)
}

fn setting(state: &Value, name: &str) -> Value {
    named(&state["world"], "settings", name)["value"].clone()
}

fn guest_vlan(state: &Value) -> Value {
    named(&state["world"], "physnets", "physnet-guest")["vlan"].clone()
}

fn vm_state(state: &Value, name: &str) -> Value {
    named(&state["world"], "vms", name)["state"].clone()
}

fn host_resourcestate(state: &Value, name: &str) -> Value {
    named(&state["world"], "hosts", name)["resourcestate"].clone()
}

fn vm_offering(state: &Value, name: &str) -> Value {
    named(&state["world"], "vms", name)["offeringid"].clone()
}

fn provider_state(state: &Value, name: &str) -> Value {
    named(&state["world"]["physnets"][0], "providers", name)["state"].clone()
}

/// A zone state value is `want`.
fn zone_is(run: &Run, what: &str, got: Value, want: Value) -> Result<(), String> {
    ensure(got == want, || {
        format!(
            "{}: after the run {what} is {got}, expected {want}",
            run.label
        )
    })
}

/// Every check in `checks` must pass; their errors joined.
fn all(checks: Vec<Result<(), String>>) -> Result<(), String> {
    let errors: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The checks of a sequence of runs: the first that failed (the later ones follow from it).
fn seq(checks: Vec<Result<(), String>>) -> Result<(), String> {
    checks.into_iter().collect()
}

/// A task's result field is `want`.
fn field(run: &Run, task: &str, key: &str, want: Value) -> Result<(), String> {
    let r = run.task(task)?;
    ensure(r[key] == want, || {
        format!(
            "{}: `{key}` is {}, expected {want}\n{}",
            run.label,
            r[key],
            task_text(r)
        )
    })
}

/// The ngine modules: reads, changes (check mode, for real, again) and back with restarts
/// (check mode, for real).
#[test]
fn ngine_modules_against_the_lab() {
    let Some(bin) = venv_bin() else { return };
    let peer = Peer::start(bin);
    let check = playbook(&peer, "change --check", "ngine-change.yml", true);
    let real = playbook(&peer, "change", "ngine-change.yml", false);
    let again = playbook(&peer, "change again", "ngine-change.yml", false);
    let back_check = playbook(&peer, "back --check", "ngine-revert.yml", true);
    let back = playbook(&peer, "back", "ngine-revert.yml", false);
    let changes = [&check, &real, &again];
    let mut c = Checks::new("ngine");
    let client = NGINE;

    // Reads: fine in every run, never a change (the first run that fails says why).
    let reads = |task: &str, extra: &dyn Fn(&Run) -> Result<(), String>| {
        changes
            .iter()
            .try_for_each(|r| r.ok(task, false).and_then(|_| extra(r)))
    };
    c.record(
        client,
        "`cs_zone_info` zone=zone1",
        "",
        reads("cs_zone_info", &|r| {
            let zone = &r.task("cs_zone_info")?["zones"][0];
            ensure(
                zone["name"] == "zone1" && zone["network_type"] == "Advanced",
                || format!("{}: zones[0] is {zone}", r.label),
            )
        }),
    );
    c.record(
        client,
        "`cs_physical_network` read",
        "",
        reads("cs_physical_network read", &|r| {
            let want = if r.label == "change again" {
                "1000-2099"
            } else {
                "1000-1999"
            };
            all(vec![
                field(r, "cs_physical_network read", "vlan", json!(want)),
                field(r, "cs_physical_network read", "state", json!("Enabled")),
            ])
        }),
    );
    c.record(
        client,
        "`cs_physical_network` vlan=1000-2099, and back",
        "",
        seq(vec![
            check.ok("cs_physical_network vlan", true).map(|_| ()),
            real.ok("cs_physical_network vlan", true).map(|_| ()),
            zone_is(
                &real,
                "the guest VLAN range",
                guest_vlan(&real.after),
                json!("1000-2099"),
            ),
            again.ok("cs_physical_network vlan", false).map(|_| ()),
            back_check
                .ok("cs_physical_network vlan back", true)
                .map(|_| ()),
            back.ok("cs_physical_network vlan back", true).map(|_| ()),
            zone_is(
                &back,
                "the guest VLAN range",
                guest_vlan(&back.after),
                json!("1000-1999"),
            ),
        ]),
    );
    c.record(
        client,
        "`cs_physical_network` nsps_enabled=[ConfigDrive, VpcVirtualRouter, InternalLbVm] (enabled already)",
        "",
        reads("cs_physical_network nsps_enabled", &|r| {
            all(vec![
                field(
                    r,
                    "cs_physical_network nsps_enabled",
                    "nsps_enabled",
                    json!(["ConfigDrive", "VpcVirtualRouter", "InternalLbVm"]),
                ),
                ensure(
                    r.called("listVirtualRouterElements") == [Some(200)]
                        && r.called("listInternalLoadBalancerElements") == [Some(200)],
                    || {
                        format!(
                            "{}: the elements were not read: listVirtualRouterElements {:?}, \
                             listInternalLoadBalancerElements {:?}",
                            r.label,
                            r.called("listVirtualRouterElements"),
                            r.called("listInternalLoadBalancerElements")
                        )
                    },
                ),
            ])
        }),
    );
    c.record(
        client,
        "`cs_physical_network` nsps_disabled=[VirtualRouter], then nsps_enabled=[VirtualRouter]",
        "",
        seq(vec![
            check
                .ok("cs_physical_network nsps_disabled", true)
                .map(|_| ()),
            real.ok("cs_physical_network nsps_disabled", true)
                .map(|_| ()),
            zone_is(
                &real,
                "the VirtualRouter provider",
                provider_state(&real.after, "VirtualRouter"),
                json!("Disabled"),
            ),
            again
                .ok("cs_physical_network nsps_disabled", false)
                .map(|_| ()),
            back_check
                .ok("cs_physical_network nsps_enabled VirtualRouter", true)
                .map(|_| ()),
            back.ok("cs_physical_network nsps_enabled VirtualRouter", true)
                .map(|_| ()),
            ensure(
                back.called("updateNetworkServiceProvider") == [Some(200)]
                    && back.called("configureVirtualRouterElement").is_empty(),
                || {
                    format!(
                        "back: updateNetworkServiceProvider calls {:?}, \
                         configureVirtualRouterElement calls {:?} (its element is enabled)",
                        back.called("updateNetworkServiceProvider"),
                        back.called("configureVirtualRouterElement")
                    )
                },
            ),
            zone_is(
                &back,
                "the VirtualRouter provider",
                provider_state(&back.after, "VirtualRouter"),
                json!("Enabled"),
            ),
        ]),
    );
    c.record(
        client,
        "`cs_router` present, account=ops domain=ROOT",
        "",
        reads("cs_router present", &|r| {
            all(vec![
                field(r, "cs_router present", "name", json!("r-930-VM")),
                field(r, "cs_router present", "account", json!("ops")),
                field(r, "cs_router present", "domain", json!("ROOT")),
                field(r, "cs_router present", "state", json!("Running")),
                field(r, "cs_router present", "redundant_state", json!("PRIMARY")),
            ])
        }),
    );
    c.record(
        client,
        "`cs_router` present, service_offering (its own)",
        "",
        // The module compares the offering with the router's `serviceofferingid`; without
        // one in listRouters it sees a change, stops the router and calls
        // changeServiceForRouter. Say that first, it explains the rest.
        changes
            .iter()
            .try_for_each(|r| {
                let offering = &r.task("cs_router present")?["service_offering"];
                ensure(offering.as_str().is_some_and(|s| !s.is_empty()), || {
                    format!(
                        "{}: cs_router reports no service_offering for r-930-VM: listRouters \
                         gives no serviceofferingid/serviceofferingname (4.18 does)",
                        r.label
                    )
                })
            })
            .and_then(|()| {
                reads("cs_router present service_offering", &|r| {
                    let offering = &r.task("cs_router present")?["service_offering"];
                    field(
                        r,
                        "cs_router present service_offering",
                        "service_offering",
                        offering.clone(),
                    )
                })
            }),
    );
    let seeded = vm_offering(&check.before, "r-931-VM");
    c.record(
        client,
        "`cs_router` service_offering changed on a stopped router, and back",
        "",
        seq(vec![
            check
                .ok("cs_router service_offering change", true)
                .map(|_| ()),
            real.ok("cs_router service_offering change", true)
                .map(|_| ()),
            ensure(real.called("changeServiceForRouter") == [Some(200)], || {
                format!(
                    "change: changeServiceForRouter calls {:?}",
                    real.called("changeServiceForRouter")
                )
            }),
            ensure(vm_offering(&real.after, "r-931-VM") != seeded, || {
                format!("change: r-931-VM's offering is still {seeded}")
            }),
            zone_is(
                &real,
                "r-931-VM",
                vm_state(&real.after, "r-931-VM"),
                json!("Stopped"),
            ),
            again
                .ok("cs_router service_offering change", false)
                .map(|_| ()),
            field(
                &again,
                "cs_router service_offering change",
                "service_offering",
                json!("System Offering For Console Proxy"),
            ),
            back_check
                .ok("cs_router service_offering back", true)
                .map(|_| ()),
            back.ok("cs_router service_offering back", true).map(|_| ()),
            zone_is(
                &back,
                "r-931-VM's offering",
                vm_offering(&back.after, "r-931-VM"),
                seeded.clone(),
            ),
        ]),
    );
    c.record(
        client,
        "`cs_router` stopped, then started",
        "",
        seq(vec![
            check.ok("cs_router stopped", true).map(|_| ()),
            real.ok("cs_router stopped", true).map(|_| ()),
            zone_is(
                &real,
                "r-931-VM",
                vm_state(&real.after, "r-931-VM"),
                json!("Stopped"),
            ),
            again.ok("cs_router stopped", false).map(|_| ()),
            back_check.ok("cs_router started", true).map(|_| ()),
            back.ok("cs_router started", true).map(|_| ()),
            zone_is(
                &back,
                "r-931-VM",
                vm_state(&back.after, "r-931-VM"),
                json!("Running"),
            ),
        ]),
    );
    c.record(
        client,
        "`cs_router` restarted",
        "",
        seq(vec![
            back_check.ok("cs_router restarted", true).map(|_| ()),
            back.ok("cs_router restarted", true).map(|_| ()),
            ensure(back.called("rebootRouter") == [Some(200)], || {
                format!("back: rebootRouter calls {:?}", back.called("rebootRouter"))
            }),
            zone_is(
                &back,
                "r-930-VM",
                vm_state(&back.after, "r-930-VM"),
                json!("Running"),
            ),
        ]),
    );
    c.record(
        client,
        "`cs_host` read",
        "",
        reads("cs_host read", &|r| {
            all(vec![
                field(r, "cs_host read", "name", json!("kvm01")),
                field(r, "cs_host read", "allocation_state", json!("enabled")),
                field(r, "cs_host read", "state", json!("Up")),
            ])
        }),
    );
    c.record(
        client,
        "`cs_host` allocation_state=disabled, then enabled",
        "",
        seq(vec![
            check
                .ok("cs_host allocation_state disabled", true)
                .map(|_| ()),
            real.ok("cs_host allocation_state disabled", true)
                .map(|_| ()),
            field(
                &real,
                "cs_host allocation_state disabled",
                "allocation_state",
                json!("disabled"),
            ),
            zone_is(
                &real,
                "kvm02",
                host_resourcestate(&real.after, "kvm02"),
                json!("Disabled"),
            ),
            again
                .ok("cs_host allocation_state disabled", false)
                .map(|_| ()),
            back_check
                .ok("cs_host allocation_state enabled", true)
                .map(|_| ()),
            back.ok("cs_host allocation_state enabled", true)
                .map(|_| ()),
            zone_is(
                &back,
                "kvm02",
                host_resourcestate(&back.after, "kvm02"),
                json!("Enabled"),
            ),
        ]),
    );
    c.record(
        client,
        "`cs_configuration` read (value as set)",
        "",
        reads("cs_configuration read", &|r| {
            all(vec![
                field(r, "cs_configuration read", "value", json!("600")),
                field(r, "cs_configuration read", "scope", json!("global")),
            ])
        }),
    );
    c.record(
        client,
        "`cs_configuration` set, and back",
        "",
        seq(vec![
            check.ok("cs_configuration set", true).map(|_| ()),
            real.ok("cs_configuration set", true).map(|_| ()),
            zone_is(
                &real,
                "network.gc.wait",
                setting(&real.after, "network.gc.wait"),
                json!("900"),
            ),
            again.ok("cs_configuration set", false).map(|_| ()),
            back_check.ok("cs_configuration set back", true).map(|_| ()),
            back.ok("cs_configuration set back", true).map(|_| ()),
            zone_is(
                &back,
                "network.gc.wait",
                setting(&back.after, "network.gc.wait"),
                json!("600"),
            ),
        ]),
    );
    c.record(
        client,
        "`cs_vpc` restarted, account=ops domain=ROOT",
        "",
        seq(vec![
            back_check.ok("cs_vpc restarted", true).map(|_| ()),
            back.ok("cs_vpc restarted", true).map(|_| ()),
            ensure(back.called("restartVPC") == [Some(200)], || {
                format!("back: restartVPC calls {:?}", back.called("restartVPC"))
            }),
        ]),
    );
    c.record(
        client,
        "`cs_network` restarted, account=ops domain=ROOT",
        "",
        seq(vec![
            back_check.ok("cs_network restarted", true).map(|_| ()),
            back.ok("cs_network restarted", true).map(|_| ()),
            ensure(back.called("restartNetwork") == [Some(200)], || {
                format!(
                    "back: restartNetwork calls {:?}",
                    back.called("restartNetwork")
                )
            }),
        ]),
    );
    c.record(
        client,
        "`cs_instance_info` account=ops domain=ROOT",
        "",
        reads("cs_instance_info account/domain", &|r| {
            let got = r.task("cs_instance_info account/domain")?;
            let names: BTreeSet<&str> = got["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["name"].as_str())
                .collect();
            ensure(names == BTreeSet::from(["db-vm1", "web-vm1"]), || {
                format!(
                    "{}: instances {names:?}, expected db-vm1 and web-vm1\n{}",
                    r.label,
                    task_text(got)
                )
            })?;
            // each with its ROOT volume, from listVolumes
            all(got["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    let number = i["instance_name"]
                        .as_str()
                        .and_then(|n| n.split('-').nth(2))
                        .unwrap_or("?");
                    let want = json!([{
                        "name": format!("ROOT-{number}"), "size": 8u64 << 30, "type": "ROOT",
                    }]);
                    ensure(i["volumes"] == want, || {
                        format!(
                            "{}: {} has volumes {}, expected {want}",
                            r.label, i["name"], i["volumes"]
                        )
                    })
                })
                .collect())
        }),
    );
    c.record(
        client,
        "check mode (`--check`): changes nothing",
        "",
        all(vec![check.changed_nothing(), back_check.changed_nothing()]),
    );
    c.record(
        client,
        "idempotence: a second run changes nothing",
        "",
        all(vec![
            again.changed_nothing(),
            ensure(again.tasks.values().all(|r| r["changed"] == false), || {
                let changed: Vec<&String> = again
                    .tasks
                    .iter()
                    .filter(|(_, r)| r["changed"] != false)
                    .map(|(n, _)| n)
                    .collect();
                format!("change again: tasks reported changed: {changed:?}")
            }),
        ]),
    );
    for run in [&check, &real, &again, &back_check, &back] {
        c.context.push(run.refused());
    }
    c.finish();
}

/// What changed between two JSON values, path by path (at most 20 lines).
fn json_diff(a: &Value, b: &Value) -> String {
    let mut out = Vec::new();
    diff_into("", a, b, &mut out);
    out.truncate(20);
    out.join("\n")
}

fn diff_into(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                diff_into(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff_into(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ if a != b => out.push(format!("  {path}: {a} -> {b}")),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Inventories: the ngine plugin, and ansible-inventory against remedy's own view
// ---------------------------------------------------------------------------------------------

/// An inventory as `--list` JSON describes it: each host's groups (the ones listing it
/// directly) and its variables.
type View = BTreeMap<String, (BTreeSet<String>, serde_json::Map<String, Value>)>;

/// The [`View`] of `--list` output; variables named in `ignore` are left out.
fn view(list: &Value, ignore: &[&str]) -> View {
    let mut v = View::new();
    let hostvars = list["_meta"]["hostvars"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (host, vars) in hostvars {
        let mut vars = plain(&vars).as_object().cloned().unwrap_or_default();
        vars.retain(|k, _| !ignore.contains(&k.as_str()));
        v.entry(host).or_default().1 = vars;
    }
    for (group, body) in list.as_object().into_iter().flatten() {
        if group == "_meta" {
            continue;
        }
        for host in body["hosts"].as_array().into_iter().flatten() {
            let host = host.as_str().unwrap_or_default().to_string();
            v.entry(host).or_default().0.insert(group.clone());
        }
    }
    v
}

/// A value as Ansible means it: ansible-core 2.19 prints a string it marks unsafe (one an
/// inventory plugin made from API data) as `{"__ansible_unsafe": "..."}`.
fn plain(v: &Value) -> Value {
    match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("__ansible_unsafe") => {
            plain(&o["__ansible_unsafe"])
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), plain(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(plain).collect()),
        _ => v.clone(),
    }
}

/// What `remedy inventory --list` adds for Ansible when the inventory does not say it
/// (docs/inventory.md): how to reach the host the way remedy does. Where the inventory does
/// say it, remedy's `ansible_ssh_common_args` starts with the inventory's own options.
const ADDED_FOR_ANSIBLE: [&str; 2] = ["ansible_user", "ansible_ssh_common_args"];

/// Every difference between Ansible's view and remedy's, one line each.
fn view_diff(ansible: &View, remedy: &View) -> Vec<String> {
    let mut out = Vec::new();
    let hosts: BTreeSet<&String> = ansible.keys().chain(remedy.keys()).collect();
    for host in hosts {
        let (Some((ag, av)), Some((rg, rv))) = (ansible.get(host), remedy.get(host)) else {
            let side = if ansible.contains_key(host) {
                "Ansible"
            } else {
                "remedy"
            };
            out.push(format!("host {host}: only {side} has it"));
            continue;
        };
        if ag != rg {
            out.push(format!(
                "host {host}: groups: Ansible {ag:?}, remedy {rg:?}"
            ));
        }
        let names: BTreeSet<&String> = av.keys().chain(rv.keys()).collect();
        for name in names {
            let added = ADDED_FOR_ANSIBLE.contains(&name.as_str());
            match (av.get(name), rv.get(name)) {
                (Some(a), Some(r)) if same_value(a, r) => {}
                (None, Some(_)) if added => {}
                (Some(Value::String(a)), Some(Value::String(r)))
                    if name == "ansible_ssh_common_args" && r.starts_with(a.as_str()) => {}
                (Some(a), Some(r)) => {
                    out.push(format!("host {host}: {name}: Ansible {a}, remedy {r}"))
                }
                (Some(a), None) => out.push(format!("host {host}: {name}: only Ansible: {a}")),
                (None, Some(r)) => out.push(format!("host {host}: {name}: only remedy: {r}")),
                (None, None) => {}
            }
        }
    }
    out
}

/// JSON equality, with numbers compared by value (Ansible prints 1500.0, remedy may too).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64() == y.as_f64() && x.is_f64() == y.is_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(u, v)| same_value(u, v))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, u)| y.get(k).is_some_and(|v| same_value(u, v)))
        }
        _ => a == b,
    }
}

/// `ansible-inventory -i SOURCE --list`, parsed.
fn ansible_inventory(peer: &Peer, source: &Path) -> Result<Value, String> {
    let out = peer
        .tool("ansible-inventory")
        .arg("-i")
        .arg(source)
        .arg("--list")
        .output()
        .expect("run ansible-inventory");
    // ansible-inventory warns "Unable to parse" and lists nothing, with exit 0. The first
    // line of the error names why (the plugin's own warning), without temporary paths.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("Unable to parse") || stderr.contains("ERROR") {
        let why = stderr
            .lines()
            .find(|l| l.starts_with("[WARNING]: Failed to parse") || l.starts_with("ERROR"))
            .unwrap_or("no inventory");
        return Err(format!(
            "ansible-inventory could not read {}: {}\n{}",
            file_name(source),
            short_error(why),
            peer.shown(&out)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "ansible-inventory printed no JSON ({e}): {}",
            peer.shown(&out)
        )
    })
}

/// A path's last component, for messages that end up in the docs.
fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// `remedy inventory -i SOURCE --list` in the repository, parsed.
fn remedy_inventory(peer: &Peer, source: &Path) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["inventory", "--list", "-i"])
        .arg(source)
        .current_dir(repo_root())
        .env("HOME", peer.home())
        .env_remove("REMEDY_INVENTORY")
        .output()
        .expect("run remedy inventory");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().next().unwrap_or_default();
        let why = why.replace(&source.display().to_string(), &file_name(source));
        return Err(format!(
            "remedy inventory --list refused {}: {why}\n{}",
            file_name(source),
            peer.shown(&out)
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("remedy printed no JSON ({e}): {}", peer.shown(&out)))
}

/// Ansible's and remedy's views of one inventory agree, or every difference.
fn views_agree(ansible: &Value, remedy: &Value, ignore: &[&str]) -> Result<(), String> {
    let diff = view_diff(&view(ansible, &[]), &view(remedy, ignore));
    ensure(diff.is_empty(), || {
        format!(
            "{} difference(s), first: {}\n  {}",
            diff.len(),
            diff[0],
            diff.join("\n  ")
        )
    })
}

/// The `ngine_io.cloudstack.instance` inventory plugin over the lab: with a domain filter it
/// lists the domain's instances (every account's, as 4.18 does for a root admin given a
/// domain); without one, only the caller's own (none: the guest VMs are the `ops` account's).
#[test]
fn ngine_inventory_plugin_over_the_lab() {
    let Some(bin) = venv_bin() else { return };
    let peer = Peer::start(bin);
    let mut c = Checks::new("ngine-inventory");
    let client = NGINE;
    let write = |name: &str, body: &str| {
        let path = peer.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let domain = write(
        "domain.cloudstack-instances.yml",
        "plugin: ngine_io.cloudstack.instance\nfilter_by_domain: ROOT\n\
         keyed_groups:\n  - { prefix: net, key: networks }\n",
    );
    let plain = write(
        "plain.cloudstack-instances.yml",
        "plugin: ngine_io.cloudstack.instance\n",
    );
    let by_domain = ansible_inventory(&peer, &domain).and_then(|list| {
        let v = view(&list, &[]);
        let hosts: BTreeSet<&str> = v.keys().map(String::as_str).collect();
        ensure(hosts == BTreeSet::from(["db-vm1", "web-vm1"]), || {
            format!("hosts {hosts:?}, expected db-vm1 and web-vm1:\n{list:#}")
        })?;
        let want = [
            ("web-vm1", "10.100.1.10", "net_web"),
            ("db-vm1", "10.100.2.10", "net_db"),
        ];
        all(want
            .iter()
            .map(|(host, ip, net)| {
                let (groups, vars) = &v[*host];
                let expect = [
                    ("ansible_host", json!(ip)),
                    ("account", json!("ops")),
                    ("domain", json!("root")),
                    ("zone", json!("zone1")),
                    ("state", json!("Running")),
                    ("networks", json!([net.trim_start_matches("net_")])),
                ];
                all(expect
                    .iter()
                    .map(|(k, w)| {
                        ensure(vars.get(*k) == Some(w), || {
                            format!("{host}: {k} is {:?}, expected {w}", vars.get(*k))
                        })
                    })
                    .chain([ensure(
                        groups.contains("cloudstack") && groups.contains(*net),
                        || format!("{host}: groups {groups:?}, expected cloudstack and {net}"),
                    )])
                    .collect())
            })
            .collect())
    });
    c.record(
        client,
        "`instance` inventory plugin, filter_by_domain=ROOT, keyed_groups",
        "",
        by_domain,
    );
    let own = ansible_inventory(&peer, &plain).and_then(|list| {
        let v = view(&list, &[]);
        ensure(v.is_empty(), || {
            format!("a root admin without listall got other accounts' instances:\n{list:#}")
        })
    });
    c.record(
        client,
        "`instance` inventory plugin, no filter",
        "lists only the caller's own instances, as CloudStack does without listall",
        own,
    );
    c.finish();
}

/// An executable script that runs `remedy inventory -i lab-live.yml --list` (Ansible's script
/// inventory), and the file where it keeps what remedy printed, to compare Ansible's reading
/// with it exactly.
fn script_inventory(peer: &Peer) -> (PathBuf, PathBuf) {
    let printed = peer.dir.path().join("remedy-list.json");
    let script = peer.dir.path().join("remedy-inventory");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Ansible calls this with --list.\n\
             HOME='{home}' '{remedy}' inventory -i '{inv}' --list > '{out}' || exit $?\n\
             exec cat '{out}'\n",
            home = peer.home().display(),
            remedy = env!("CARGO_BIN_EXE_remedy"),
            inv = peer.inventory().display(),
            out = printed.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, printed)
}

/// `remedy inventory --list` as Ansible's script inventory, over the lab: Ansible reads the
/// same hosts, groups and variables as remedy printed, and can reach the system VMs.
#[test]
fn ansible_inventory_reads_remedy_inventory_list() {
    let Some(bin) = venv_bin() else { return };
    let peer = Peer::start(bin);
    let mut c = Checks::new("inventory-script");
    let client = "ansible-inventory (ansible-core 2.19)";
    let (script, printed) = script_inventory(&peer);

    let ansible = ansible_inventory(&peer, &script);
    let remedy = std::fs::read(&printed)
        .map_err(|e| format!("the wrapper kept nothing ({e})"))
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
    let both = ansible.and_then(|a| remedy.map(|r| (a, r)));
    c.record(
        client,
        "`--list` over `remedy inventory --list` (script inventory, the lab)",
        "",
        both.as_ref()
            .map_err(Clone::clone)
            .and_then(|(a, r)| views_agree(a, r, &[])),
    );
    let reach = both.as_ref().map_err(Clone::clone).and_then(|(a, _)| {
        let v = view(a, &[]);
        let system_vms: Vec<&String> = v
            .iter()
            .filter(|(_, (groups, _))| groups.contains("system_vms") || groups.contains("routers"))
            .map(|(h, _)| h)
            .collect();
        ensure(!system_vms.is_empty(), || "no system VMs listed".to_string())?;
        all(system_vms
            .iter()
            .map(|h| {
                let args = v[*h].1.get("ansible_ssh_common_args").and_then(Value::as_str);
                ensure(
                    args.is_some_and(|a| a.contains("ProxyJump") || a.contains("ProxyCommand")),
                    || format!("{h}: ansible_ssh_common_args is {args:?}, expected a ProxyJump/ProxyCommand through its hypervisor"),
                )
            })
            .collect())
    });
    c.record(
        client,
        "system VMs reachable for Ansible (`ansible_ssh_common_args` through the hypervisor)",
        "",
        reach,
    );
    c.finish();
}

/// remedy's own inventory files, read by `ansible-inventory --list` and by
/// `remedy inventory --list`: the same hosts, groups and variables (remedy adds only
/// `remedy_connection`, how it reaches each host).
#[test]
fn ansible_inventory_reads_remedy_inventory_files() {
    let Some(bin) = venv_bin() else { return };
    // No lab needed; the Peer gives the tools their private HOME.
    let peer = Peer::start(bin);
    let mut c = Checks::new("inventory-files");
    let client = "ansible-inventory (ansible-core 2.19)";
    let files = [
        ("inventories/local.yml", ""),
        ("inventories/example-prod.yml", ""),
        ("tests/fixtures/inventory.yml", ""),
        (
            "tests/peers/inventory/hosts.yml",
            "ranges, group_vars/host_vars files and dirs, JSON, precedence",
        ),
        (
            "tests/peers/inventory-yaml11/hosts.yml",
            "YAML 1.1 values, ansible_group_priority",
        ),
        (
            "tests/peers/inventory-templated/hosts.yml",
            "vars that reference other vars, ansible_become_password included",
        ),
    ];
    for (file, what) in files {
        let path = repo_root().join(file);
        let result = ansible_inventory(&peer, &path).and_then(|a| {
            remedy_inventory(&peer, &path).and_then(|r| views_agree(&a, &r, &["remedy_connection"]))
        });
        let call = if what.is_empty() {
            format!("`--list` over `{file}`")
        } else {
            format!("`--list` over `{file}` ({what})")
        };
        c.record(client, &call, "", result);
    }
    // The embedded simulator lives only as long as remedy runs: `--list` must refuse it
    // rather than print ports and a key file that are gone when Ansible reads them.
    let embedded = repo_root().join("inventories/lab.yml");
    let refused = match remedy_inventory(&peer, &embedded) {
        Ok(list) => Err(format!("remedy listed the embedded simulator:\n{list:#}")),
        Err(e) => ensure(
            e.contains("--list is refused") && e.contains("exit Some(4)"),
            || format!("not the refusal expected: {e}"),
        ),
    };
    c.record(
        "remedy",
        "`remedy inventory --list` over `inventories/lab.yml`",
        "refused (exit 4): the embedded simulator's zone, ports and key vanish when remedy \
         exits; `remedy lab --write-inventory` makes a lasting one",
        refused,
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// OpenSSH and Ansible's ssh connection with what `remedy inventory --list` prints
// ---------------------------------------------------------------------------------------------

/// `ssh` (the system's OpenSSH client) to `host` with exactly the connection variables
/// `remedy inventory --list` printed for it: `ansible_ssh_common_args` split as Ansible splits
/// it, then the key, port, user and address, as Ansible's ssh connection adds them. No ssh
/// config file; `HOME` is the peer's own (the ProxyCommand's inner ssh reads nothing else).
fn openssh(
    peer: &Peer,
    vars: &serde_json::Map<String, Value>,
    common_args: &str,
    command: &str,
) -> Result<String, String> {
    let text = |k: &str| match vars.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("no {k} in {vars:?}")),
    };
    let words = shlex::split(common_args)
        .ok_or_else(|| format!("ansible_ssh_common_args does not split: {common_args}"))?;
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
        ])
        .args(&words)
        .arg("-i")
        .arg(text("ansible_ssh_private_key_file")?)
        .arg("-p")
        .arg(text("ansible_port")?)
        .arg("-l")
        .arg(text("ansible_user")?)
        .arg(text("ansible_host")?)
        .arg(command)
        .env("HOME", peer.home())
        .output()
        .map_err(|e| format!("ssh: {e}"))?;
    if !out.status.success() {
        return Err(format!("ssh {command} failed: {}", peer.shown(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The lab's known_hosts with the line of `[127.0.0.1]:PORT` given another machine's key,
/// written beside it; the path.
fn known_hosts_with_wrong_key(known_hosts: &Path, port: &str) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(known_hosts).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let own = format!("[127.0.0.1]:{port} ");
    let other_key = lines
        .iter()
        .find(|l| !l.starts_with(&own))
        .and_then(|l| l.split_once(' '))
        .map(|(_, key)| key)
        .ok_or("the known_hosts has one line only")?;
    let changed: String = lines
        .iter()
        .map(|l| {
            if l.starts_with(&own) {
                format!("{own}{other_key}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let path = known_hosts.with_extension("wrong");
    std::fs::write(&path, changed).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The `ansible_ssh_common_args` that `remedy inventory --list` prints (host key checks
/// against the lab's own known_hosts, a ProxyCommand through the hypervisor for system VMs)
/// work with a plain OpenSSH client and with Ansible's ssh connection, against `remedy lab`.
#[test]
fn openssh_and_ansible_connect_with_remedy_inventory_list() {
    let Some(bin) = venv_bin() else { return };
    if Command::new("ssh").arg("-V").output().is_err() {
        cloudstack_sim::testing::skip("peers (OpenSSH)", "no ssh client (openssh-client)");
        return;
    }
    let peer = Peer::start(bin);
    let mut c = Checks::new("ssh");
    let client = "OpenSSH (Debian openssh-client)";
    let list = remedy_inventory(&peer, &peer.inventory());
    let hostvars = |host: &str| {
        list.as_ref().map_err(Clone::clone).and_then(|l| {
            l["_meta"]["hostvars"][host]
                .as_object()
                .cloned()
                .ok_or_else(|| format!("remedy inventory --list has no {host}: {l:#}"))
        })
    };
    let args = |vars: &serde_json::Map<String, Value>| {
        vars.get("ansible_ssh_common_args")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no ansible_ssh_common_args: {vars:?}"))
    };
    let kvm = hostvars("kvm01");
    let hypervisor = kvm.clone().and_then(|vars| {
        let out = openssh(&peer, &vars, &args(&vars)?, "hostname")?;
        ensure(out == "kvm01\n", || format!("hostname printed {out:?}"))
    });
    c.record(
        client,
        "`ssh` with `remedy inventory --list`'s args to a hypervisor (`hostname`)",
        "",
        hypervisor,
    );
    let refused = kvm.and_then(|vars| {
        let args = args(&vars)?;
        let file = args
            .split_whitespace()
            .find_map(|w| w.strip_prefix("UserKnownHostsFile="))
            .ok_or_else(|| format!("no UserKnownHostsFile in {args}"))?;
        let port = vars["ansible_port"].to_string();
        let wrong = known_hosts_with_wrong_key(Path::new(file), &port)?;
        let args = args.replace(file, &wrong.display().to_string());
        match openssh(&peer, &vars, &args, "hostname") {
            Ok(out) => Err(format!("ssh accepted a host key that differs: {out:?}")),
            Err(e) => ensure(e.contains("Host key verification failed"), || {
                format!("not a host key refusal: {e}")
            }),
        }
    });
    c.record(
        client,
        "the same, with another key for the hypervisor in known_hosts: refused",
        "",
        refused,
    );
    let router = "r-930-VM";
    let want_status = hostvars(router).and_then(|vars| {
        vars.get("cs")
            .and_then(|cs| cs["redundantstate"].as_str())
            .map(|s| format!("Status: {s}\n"))
            .ok_or_else(|| format!("{router} has no cs.redundantstate"))
    });
    let through = hostvars(router).and_then(|vars| {
        let args = args(&vars)?;
        ensure(args.contains("ProxyCommand=ssh -W %h:%p"), || {
            format!("{router}: no ProxyCommand through its hypervisor in {args}")
        })?;
        let out = openssh(&peer, &vars, &args, "/opt/cloud/bin/checkrouter.sh")?;
        let want = want_status.clone()?;
        ensure(out == want, || {
            format!("checkrouter.sh printed {out:?}, listRouters says {want:?}")
        })
    });
    c.record(
        client,
        "`ssh` with `remedy inventory --list`'s args to a router, through its hypervisor \
         (`checkrouter.sh`)",
        "",
        through,
    );
    let (script, _) = script_inventory(&peer);
    let out = peer
        .tool("ansible")
        .arg(router)
        .arg("-i")
        .arg(&script)
        .args(["-m", "raw", "-a", "/opt/cloud/bin/checkrouter.sh"])
        .output()
        .expect("run ansible");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let raw = want_status.and_then(|want| {
        ensure(
            out.status.success()
                && stdout.contains(&format!("{router} | CHANGED | rc=0 >>"))
                && stdout.lines().any(|l| format!("{l}\n") == want),
            || format!("expected {want:?} from {router}: {}", peer.shown(&out)),
        )
    });
    c.record(
        "ansible (ansible-core 2.19)",
        "`ansible ROUTER -m raw -a checkrouter.sh` over `remedy inventory --list` (script \
         inventory)",
        "",
        raw,
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// The `cs` command line
// ---------------------------------------------------------------------------------------------

/// `cs COMMAND ARGS` against the lab, its JSON answer.
fn cs(peer: &Peer, args: &[&str]) -> Result<Value, String> {
    let out = peer.tool("cs").args(args).output().expect("run cs");
    if !out.status.success() {
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let e = &answer["errorresponse"];
        return Err(format!(
            "cs {} failed: {} {}\n{}",
            args.join(" "),
            e["errorcode"],
            e["errortext"],
            peer.shown(&out)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "cs {} printed no JSON ({e}): {}",
            args.join(" "),
            peer.shown(&out)
        )
    })
}

/// The `cs` 5.2 command line: API discovery (`listApis`, as cmk's and cloudmonkey's `sync`
/// use it) and `listCapabilities`.
#[test]
fn cs_cli_discovers_the_lab() {
    let Some(bin) = venv_bin() else { return };
    let peer = Peer::start(bin);
    let mut c = Checks::new("cs");
    let client = "cs 5.2.0";
    let one = cs(&peer, &["listApis", "name=listRouters"]).and_then(|r| {
        let api = &r["api"][0];
        let params: BTreeSet<&str> = api["params"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        all(vec![
            ensure(r["count"] == 1 && api["name"] == "listRouters", || {
                format!("expected one API, listRouters: {r:#}")
            }),
            ensure(api["isasync"] == false, || {
                format!("isasync is {}", api["isasync"])
            }),
            ensure(
                ["account", "domainid", "listall", "vpcid"]
                    .iter()
                    .all(|p| params.contains(p)),
                || format!("listRouters params {params:?} lack account/domainid/listall/vpcid"),
            ),
        ])
    });
    c.record(client, "`listApis name=listRouters`", "", one);
    let every = cs(&peer, &["listApis"]).and_then(|r| {
        let names: BTreeSet<&str> = r["api"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str())
            .collect();
        all(vec![
            ensure(r["count"].as_u64() == Some(names.len() as u64), || {
                format!("count {} for {} APIs", r["count"], names.len())
            }),
            ensure(
                [
                    "listZones",
                    "listRouters",
                    "rebootRouter",
                    "queryAsyncJobResult",
                    "listApis",
                ]
                .iter()
                .all(|n| names.contains(n)),
                || format!("listApis lacks some of the zone's APIs: {names:?}"),
            ),
        ])
    });
    c.record(
        client,
        "`listApis` (every API, as `sync` reads them)",
        "",
        every,
    );
    let caps = cs(&peer, &["listCapabilities"]).and_then(|r| {
        let cap = &r["capability"];
        let version =
            cs(&peer, &["listHosts", "type=Routing"]).map(|h| h["host"][0]["version"].clone())?;
        // The zone's setting: throttling is off, so (as in 4.18) no api limits are shown.
        let throttling = cs(
            &peer,
            &["listConfigurations", "name=api.throttling.enabled"],
        )
        .map(|c| c["configuration"][0]["value"].clone())?;
        all(vec![
            ensure(cap["cloudstackversion"] == version, || {
                format!(
                    "cloudstackversion {} differs from the hosts' version {version}: {r:#}",
                    cap["cloudstackversion"]
                )
            }),
            ensure(cap["securitygroupsenabled"] == false, || {
                format!("securitygroupsenabled in an advanced zone: {r:#}")
            }),
            ensure(
                throttling == "false"
                    && cap.get("apilimitmax").is_none()
                    && cap.get("apilimitinterval").is_none(),
                || format!("api.throttling.enabled is {throttling}, yet api limits shown: {r:#}"),
            ),
        ])
    });
    c.record(client, "`listCapabilities`", "", caps);
    c.declare(
        "cloudmonkey 5.3",
        "any",
        "not supported: its PyPI release is Python 2 only and does not install; not tested",
    );
    c.finish();
}
