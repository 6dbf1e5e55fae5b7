//! The daemon's warm SSH connections against the simulated zone's SSH hosts (hypervisors on
//! 127.0.0.1, routers only through their hypervisor), counted on both sides: the simulator's
//! own count of the connections each machine served, and the pool's `/metrics`.
//!
//! - A job detecting over the routers every second: after its first run, five more open no
//!   new connection; then a router gets a new host key and the inventory file changes (its
//!   connections are dropped): the reconnect is refused as a host key change, the run fails
//!   saying so, and nothing more runs on that router.
//! - Two runs' commands at once on one shared connection (a hypervisor, and a router through
//!   it): each command gets its own output, never the other's.
//! - The cap closes the least recently used idle connection, and the idle timeout the rest
//!   (closed on the server's side too).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};
use cloudstack_sim::ssh::SshSim;
use remedy::daemon::observe::Metrics;
use remedy::daemon::{self, state, Control, Options};
use remedy::inventory::Inventory;
use remedy::transport::ssh::known_hosts::fingerprint;
use remedy::transport::ssh::{PoolLimits, SshTransport, WarmPool};
use remedy_tests::ssh::{options, run as ssh};
use remedy_tests::write;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use tokio::sync::{mpsc, watch};

const T: Duration = Duration::from_secs(20);

/// The simulated hosts and a static inventory for them: strict host keys from the simulator's
/// `known_hosts` lines, routers in the group `routers` behind their hypervisor.
struct Zone {
    _sim: Sim,
    ssh: SshSim,
    dir: tempfile::TempDir,
    inventory: PathBuf,
    text: String,
    /// Router name -> hypervisor name.
    routers: BTreeMap<String, String>,
}

async fn zone() -> Zone {
    let sim = Sim::start(SimConfig {
        scenario: Scenario::builtin("vr-backup-loop").expect("shipped scenario"),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        secret_key: None,
    })
    .await
    .expect("simulator starts");
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let ssh = SshSim::start(sim.zone_handle(), key.public_key().clone())
        .await
        .expect("ssh hosts start");
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("id_ed25519");
    std::fs::write(
        &key_path,
        key.to_openssh(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, ssh.known_hosts_lines().join("\n") + "\n").unwrap();
    let routers: BTreeMap<String, (String, String)> = sim.with_zone(|z| {
        let w = z.world();
        w.vms
            .iter()
            .filter(|v| v.vpcid().is_some() && v.live())
            .map(|v| {
                let host = w.host(&v.hostid).expect("router's host").name.clone();
                (v.name.clone(), (v.linklocalip.clone(), host))
            })
            .collect()
    });
    let mut hosts = String::new();
    for m in ["kvm01", "kvm02"] {
        let a = ssh.addr(m).expect("listening");
        hosts.push_str(&format!(
            "    {m}: {{ ansible_host: 127.0.0.1, ansible_port: {} }}\n",
            a.port()
        ));
    }
    let mut group = String::new();
    for (name, (ll, hv)) in &routers {
        group.push_str(&format!(
            "        {name}: {{ ansible_host: {ll}, ansible_port: 3922, remedy_jump: {hv} }}\n"
        ));
    }
    let text = format!(
        "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n    \
         remedy_known_hosts_file: {}\n  hosts:\n{hosts}  children:\n    routers:\n      hosts:\n{group}",
        key_path.display(),
        known_hosts.display()
    );
    let inventory = write(dir.path(), "inventory.yml", &text);
    Zone {
        _sim: sim,
        ssh,
        inventory,
        text,
        dir,
        routers: routers.into_iter().map(|(r, (_, hv))| (r, hv)).collect(),
    }
}

impl Zone {
    /// Connections served so far, by machine (the hypervisors and routers).
    fn served(&self) -> BTreeMap<String, usize> {
        let mut names: Vec<String> = vec!["kvm01".into(), "kvm02".into()];
        names.extend(self.routers.keys().cloned());
        names
            .into_iter()
            .map(|m| {
                let n = self.ssh.connections(&m);
                (m, n)
            })
            .collect()
    }
}

const PROBE: &str = r#"
name: probe-routers
description: reads every router's hostname; never applies
detect:
  - id: probe
    on: routers
    ssh: hostname
    changes: none
applies_when: "false"
steps:
  - id: nothing
    on: routers
    ssh: "true"
    no_rollback: never runs
"#;

struct Running {
    stop: watch::Sender<bool>,
    _kill: watch::Sender<bool>,
    _reload: mpsc::UnboundedSender<()>,
    task: tokio::task::JoinHandle<Result<(), remedy::error::Error>>,
    metrics: Arc<Metrics>,
    state_dir: PathBuf,
}

fn start(zone: &Zone) -> Running {
    let playbook = write(zone.dir.path(), "probe.yml", PROBE);
    let jobs = write(
        zone.dir.path(),
        "jobs.yml",
        &format!(
            "jobs:\n  - name: probe\n    playbook: {}\n    inventory: {}\n    every: 1s\n    mode: detect\n",
            playbook.display(),
            zone.inventory.display()
        ),
    );
    let state_dir = zone.dir.path().join("state");
    let opts = Options {
        jobs,
        state_dir: state_dir.clone(),
        audit_log: zone.dir.path().join("audit.jsonl"),
        listen: None,
        coordination: None,
        ssh_pool: Some(PoolLimits {
            max: 64,
            idle: Duration::from_secs(600),
        }),
    };
    let (stop, stop_rx) = watch::channel(false);
    let (kill, kill_rx) = watch::channel(false);
    let (reload, reload_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(daemon::run(
        opts,
        Control {
            stop: stop_rx,
            kill: kill_rx,
            reload: reload_rx,
        },
        HashMap::new(),
        metrics.clone(),
    ));
    Running {
        stop,
        _kill: kill,
        _reload: reload,
        task,
        metrics,
        state_dir,
    }
}

impl Running {
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metric_now(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    fn metric_now(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let st = state::load(&self.state_dir).unwrap_or_default();
        let text = self.metrics.render(&st);
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        scrape
            .samples
            .iter()
            .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    fn runs(&self) -> f64 {
        assert!(!self.task.is_finished(), "the daemon ended");
        self.metric_now("remedy_job_runs_total", &[("job", "probe")])
            .unwrap_or(0.0)
    }

    fn job(&self) -> state::JobState {
        state::load(&self.state_dir)
            .ok()
            .and_then(|s| s.jobs.get("probe").cloned())
            .unwrap_or_default()
    }

    async fn until_runs(&self, n: f64) {
        until(&format!("{n} runs"), 30, || self.runs() >= n).await;
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}", e.render(false)));
    }
}

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn steady_detection_opens_no_new_connection_and_a_changed_host_key_is_refused_on_reconnect() {
    let zone = zone().await;
    let d = start(&zone);
    d.until_runs(1.0).await;
    let js = d.job();
    assert!(
        js.last_result
            .as_deref()
            .unwrap_or("")
            .starts_with("healthy"),
        "{js:?}"
    );
    let after_first = zone.served();
    let used = after_first.values().filter(|n| **n > 0).count();
    // Every router and the hypervisors they run on.
    let hypervisors: std::collections::BTreeSet<&String> = zone.routers.values().collect();
    assert_eq!(
        used,
        zone.routers.len() + hypervisors.len(),
        "{after_first:?}"
    );
    assert!(after_first.values().all(|n| *n <= 1), "{after_first:?}");
    let opened = d.metric("remedy_ssh_pool_connections_opened_total", &[]);
    assert_eq!(opened, used as f64);

    // Five more runs: no new connection on either side, each run reusing every one.
    let runs = d.runs();
    d.until_runs(runs + 5.0).await;
    assert_eq!(
        zone.served(),
        after_first,
        "no new SSH connection after the first run"
    );
    assert_eq!(
        d.metric("remedy_ssh_pool_connections_opened_total", &[]),
        opened
    );
    assert_eq!(
        d.metric("remedy_ssh_pool_connections_open", &[]),
        used as f64
    );
    assert!(
        d.metric("remedy_ssh_pool_connections_reused_total", &[])
            >= 5.0 * zone.routers.len() as f64,
        "every later run reuses every router's connection (and so its hypervisor's)"
    );
    assert_eq!(
        d.metric("remedy_job_failures_total", &[("job", "probe")]),
        0.0
    );

    // A router is re-created with a new host key: its open session stays, so runs go on.
    let (router, _) = zone.routers.iter().next().unwrap();
    let old = fingerprint(&zone.ssh.host_key(router));
    let new = fingerprint(&zone.ssh.new_host_key(router));
    let runs = d.runs();
    d.until_runs(runs + 2.0).await;
    assert_eq!(
        d.metric("remedy_job_failures_total", &[("job", "probe")]),
        0.0
    );
    // The inventory file changes: its connections are dropped, and the reconnect checks the
    // router's key again: refused.
    let before = zone.ssh.commands(router).len();
    std::fs::write(&zone.inventory, format!("{}# changed\n", zone.text)).unwrap();
    until("a run fails on the changed host key", 30, || {
        d.job()
            .last_result
            .as_deref()
            .is_some_and(|r| r.contains(&new))
    })
    .await;
    let js = d.job();
    let said = js.last_result.clone().unwrap();
    for needle in [
        router.as_str(),
        old.as_str(),
        new.as_str(),
        "detection failed",
    ] {
        assert!(said.contains(needle), "{needle:?} not in: {said}");
    }
    assert_ne!(js.last_exit, Some(0), "{js:?}");
    assert!(d.metric("remedy_job_failures_total", &[("job", "probe")]) >= 1.0);
    assert!(
        d.metric(
            "remedy_ssh_pool_connections_dropped_total",
            &[("reason", "inventory")]
        ) >= used as f64
    );
    // Runs go on failing the same way; nothing more ran on the router.
    let runs = d.runs();
    d.until_runs(runs + 2.0).await;
    assert_eq!(
        zone.ssh.commands(router).len(),
        before,
        "nothing ran on {router}"
    );
    assert!(d.job().last_result.unwrap().contains(&new));
    d.stop().await;
}

/// Commands of two runs at once on one hypervisor's connection and one router's (through it):
/// every command's output is its own.
#[tokio::test(flavor = "multi_thread")]
async fn two_runs_on_one_shared_connection_never_mix_output() {
    let zone = zone().await;
    let (router, hv) = zone
        .routers
        .iter()
        .next()
        .map(|(r, h)| (r.clone(), h.clone()))
        .unwrap();
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&zone.inventory)).unwrap());
    let known = zone.dir.path().join("known_hosts");
    let pool = WarmPool::new(
        options(&known),
        PoolLimits {
            max: 16,
            idle: Duration::from_secs(600),
        },
    );
    let source = zone.inventory.display().to_string();
    pool.sync(&source, Some(&inv.digest()), &inv).await;
    let runs: Vec<Arc<SshTransport>> = (0..2)
        .map(|_| Arc::new(SshTransport::warm(inv.clone(), &pool, source.clone())))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (r, t) in runs.iter().enumerate() {
        for i in 0..40 {
            for host in [hv.clone(), router.clone()] {
                let (t, inv) = (t.clone(), inv.clone());
                tasks.spawn(async move {
                    let word = format!("run{r}-{host}-{i}");
                    let out = ssh(
                        &t,
                        &inv,
                        &host,
                        &format!("sleep 0.01; echo {word}; echo {word} >&2"),
                        T,
                    )
                    .await
                    .unwrap();
                    (word, out)
                });
            }
        }
    }
    let mut n = 0;
    while let Some(done) = tasks.join_next().await {
        let (word, out) = done.unwrap();
        assert_eq!(out.stdout, format!("{word}\n"));
        assert_eq!(out.stderr, format!("{word}\n"));
        assert_eq!(out.rc, Some(0));
        n += 1;
    }
    assert_eq!(n, 160);
    assert_eq!(zone.ssh.connections(&hv), 1, "one connection to {hv}");
    assert_eq!(
        zone.ssh.connections(&router),
        1,
        "one connection to {router}"
    );
    let s = pool.stats();
    assert_eq!((s.open, s.opened), (2, 2), "{s:?}");
    // The run that did not make them reused both.
    assert_eq!(s.reused, 2, "{s:?}");
    assert_eq!(
        runs[0].connections_made(&hv) + runs[1].connections_made(&hv),
        1
    );
}

/// Over its cap the pool closes its least recently used idle connection; past the idle
/// timeout, the rest. The server sees them closed.
#[tokio::test(flavor = "multi_thread")]
async fn the_cap_and_the_idle_timeout_close_connections() {
    let zone = zone().await;
    let inv = Arc::new(Inventory::load(std::slice::from_ref(&zone.inventory)).unwrap());
    let known = zone.dir.path().join("known_hosts");
    let pool = WarmPool::new(
        options(&known),
        PoolLimits {
            max: 1,
            idle: Duration::from_secs(1),
        },
    );
    let source = zone.inventory.display().to_string();
    let t = SshTransport::warm(inv.clone(), &pool, source);
    ssh(&t, &inv, "kvm01", "true", T).await.unwrap();
    assert_eq!(zone.ssh.connections_open("kvm01"), 1);
    ssh(&t, &inv, "kvm02", "true", T).await.unwrap();
    let s = pool.stats();
    assert_eq!((s.open, s.opened), (1, 2), "{s:?}");
    assert_eq!(s.dropped.get("cap"), Some(&1), "{s:?}");
    until("kvm01's connection closed on its side", 10, || {
        zone.ssh.connections_open("kvm01") == 0
    })
    .await;
    assert_eq!(zone.ssh.connections_open("kvm02"), 1);
    // Idle: the sweeper closes it.
    let _sweeper = pool.spawn_sweeper();
    until("the idle connection is closed", 10, || {
        pool.stats().open == 0
    })
    .await;
    assert_eq!(pool.stats().dropped.get("idle"), Some(&1));
    until("kvm02's connection closed on its side", 10, || {
        zone.ssh.connections_open("kvm02") == 0
    })
    .await;
    // The next command connects again.
    ssh(&t, &inv, "kvm02", "true", T).await.unwrap();
    assert_eq!(zone.ssh.connections("kvm02"), 2);
}
