//! `remedy daemon` against the embedded zone, with schedules of a second: a job fixes a dead
//! dnsmasq once and then stays quiet; a failure that keeps coming back opens the circuit after
//! N fixes and notifies a webhook; the circuit survives a restart and closes on reset; an
//! operator's lock makes the job leave the router alone; plan mode writes a plan that
//! `apply --plan` accepts; a stop during a fix lets it finish, a kill rolls it back; /metrics
//! parses as Prometheus text and counts what happened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudstack_sim::faults::Faults;
use remedy::daemon::observe::Metrics;
use remedy::daemon::{self, state, Control, Options};
use remedy_tests::zone::ApiZone;
use tokio::sync::{mpsc, watch};

/// A daemon running in this process against `zone` (its API connection shared).
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    kill: watch::Sender<bool>,
    reload: mpsc::UnboundedSender<()>,
    task: tokio::task::JoinHandle<Result<(), remedy::error::Error>>,
    pub(crate) metrics: Arc<Metrics>,
}

pub(crate) fn options(zone: &ApiZone, jobs: &Path) -> Options {
    Options {
        jobs: jobs.to_path_buf(),
        state_dir: zone.dir.path().join("state"),
        audit_log: zone.audit(),
        listen: None,
        coordination: None,
        ssh_pool: Some(remedy::transport::ssh::PoolLimits {
            max: remedy::transport::ssh::POOL_DEFAULT_MAX,
            idle: remedy::transport::ssh::POOL_DEFAULT_IDLE,
        }),
    }
}

fn start(zone: &ApiZone, jobs: &Path) -> Running {
    start_with(zone, options(zone, jobs))
}

pub(crate) fn start_with(zone: &ApiZone, opts: Options) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let (kill, kill_rx) = watch::channel(false);
    let (reload, reload_rx) = mpsc::unbounded_channel();
    let mut apis = HashMap::new();
    apis.insert(vec![zone.inventory.clone()], zone.api.clone());
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(daemon::run(
        opts,
        Control {
            stop: stop_rx,
            kill: kill_rx,
            reload: reload_rx,
        },
        apis,
        metrics.clone(),
    ));
    Running {
        stop,
        kill,
        reload,
        task,
        metrics,
    }
}

impl Running {
    pub(crate) async fn stop(self) -> Arc<Metrics> {
        let _ = self.stop.send(true);
        self.task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}", e.render(false)));
        self.metrics
    }
}

/// A jobs file in the zone's directory, its one job reading the zone's inventory.
fn jobs_file(zone: &ApiZone, job: &str) -> PathBuf {
    let inv = zone.inventory.file_name().unwrap().to_str().unwrap();
    remedy_tests::write(
        zone.dir.path(),
        "jobs.yml",
        &format!("jobs:\n  - name: dns\n    inventory: {inv}\n{job}"),
    )
}

/// A jobs file whose job `dns` restarts web-vpc's dnsmasq every second, with `extra` keys.
fn dns_job(zone: &ApiZone, extra: &str) -> PathBuf {
    jobs_file(
        zone,
        &format!(
            "    playbook: {}\n    params: {{ vpc: web-vpc }}\n    every: 1s\n{extra}",
            playbook("restart-dnsmasq")
        ),
    )
}

pub(crate) fn playbook(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks")
        .join(format!("{name}.yml"))
        .display()
        .to_string()
}

pub(crate) fn dnsmasq(zone: &ApiZone) -> String {
    zone.world()["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "r-930-VM")
        .map(|v| {
            v["guest"]["services"]["dnsmasq"]["state"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// The audited apply runs (fixes) so far.
pub(crate) fn fixes(zone: &ApiZone) -> usize {
    remedy::audit::read(&zone.audit())
        .map(|rs| {
            rs.iter()
                .filter(|r| r.value["event"] == "run_start" && r.value["mode"] == "apply")
                .count()
        })
        .unwrap_or(0)
}

pub(crate) async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn until_circuit_opens(state_dir: &Path) {
    until("the circuit opens", 30, || {
        state::load(state_dir)
            .ok()
            .and_then(|s| s.jobs.get("dns").cloned())
            .is_some_and(|j| !j.open_circuits().is_empty())
    })
    .await;
}

pub(crate) fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
}

pub(crate) fn sample(
    s: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_fixes_dead_dnsmasq_once_and_then_stays_quiet() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let jobs = dns_job(&zone, "    cooldown: 1m\n");
    let d = start(&zone, &jobs);
    until("dnsmasq fixed", 20, || dnsmasq(&zone) == "active").await;
    // Three more turns: healthy each time, nothing more done.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let metrics = d.stop().await;
    assert_eq!(fixes(&zone), 1, "one fix");
    let st = state::load(&zone.dir.path().join("state")).unwrap();
    let js = &st.jobs["dns"];
    assert_eq!(js.targets["r-930-VM"].fixes.len(), 1, "{js:?}");
    assert!(
        js.last_result.as_deref().unwrap().starts_with("healthy"),
        "{js:?}"
    );
    let m = parse_metrics(&metrics.render(&st));
    assert_eq!(
        sample(&m, "remedy_job_fixes_total", &[("job", "dns")]),
        Some(1.0)
    );
    assert!(sample(&m, "remedy_job_runs_total", &[("job", "dns")]).unwrap() >= 4.0);
    assert_eq!(
        sample(&m, "remedy_job_failures_total", &[("job", "dns")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "remedy_circuit_open",
            &[("job", "dns"), ("target", "r-930-VM")]
        ),
        Some(0.0)
    );
    zone.audit_verifies();
}

/// A webhook receiver on loopback: the JSON bodies it was sent.
pub(crate) async fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then the body by Content-Length.
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len = text[..i]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        let body = &buf[i + 4..i + 4 + len];
                        if let Ok(v) = serde_json::from_slice(body) {
                            seen.lock().unwrap().push(v);
                        }
                        break;
                    }
                }
            }
            let _ = s
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_that_keeps_coming_back_opens_the_circuit_which_survives_a_restart() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let (url, hooks) = receiver().await;
    let jobs = dns_job(&zone, &format!("    cooldown: 0s\n    circuit: {{ fixes: 2, window: 1h }}\n    notify: {{ webhook: \"{url}\" }}\n"));
    // Something kills dnsmasq again after every fix (once the fix's run has ended).
    let handle = zone.sim().zone_handle();
    let audit = zone.audit();
    let breaker = tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let ended = remedy::audit::read(&audit)
                .map(|rs| {
                    rs.iter()
                        .filter(|r| r.value["event"] == "run_end" && r.value["exit_code"] == 0)
                        .count()
                })
                .unwrap_or(0);
            if ended > seen {
                seen = ended;
                let mut z = handle.lock().unwrap_or_else(|p| p.into_inner());
                cloudstack_sim::ssh::commands::run_line(
                    &mut z,
                    "r-930-VM",
                    "systemctl stop dnsmasq",
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let state_dir = zone.dir.path().join("state");
    let d = start(&zone, &jobs);
    until_circuit_opens(&state_dir).await;
    let job = || state::load(&state_dir).unwrap().jobs["dns"].clone();
    // The next run finds dnsmasq dead and leaves the router alone: degraded, not a success.
    until("the job is degraded", 20, || job().degraded.is_some()).await;
    let js = job();
    let success = js.last_success;
    let degraded = js.degraded.clone().unwrap();
    assert_eq!(
        degraded.targets,
        [("r-930-VM".to_string(), "circuit-open".to_string())].into()
    );
    assert!(
        degraded.status.starts_with(
            "degraded: it applies, but every target is left alone: r-930-VM (circuit open since"
        ),
        "{degraded:?}"
    );
    // More degraded runs: the last success stays where it was, and the log said it once.
    let runs = d.metrics.render(&state::load(&state_dir).unwrap());
    let runs = sample(
        &parse_metrics(&runs),
        "remedy_job_runs_total",
        &[("job", "dns")],
    )
    .unwrap();
    until("two more runs", 20, || {
        let m = parse_metrics(&d.metrics.render(&state::load(&state_dir).unwrap()));
        sample(&m, "remedy_job_runs_total", &[("job", "dns")]).unwrap() >= runs + 2.0
    })
    .await;
    let js = job();
    assert_eq!(js.last_success, success, "a degraded run is not a success");
    assert_eq!(js.degraded.as_ref().unwrap().since, degraded.since);
    assert_eq!(
        js.degraded.as_ref().unwrap().said,
        degraded.said,
        "said once, not at every run"
    );
    let metrics = d.stop().await;
    assert_eq!(fixes(&zone), 2, "two fixes, then the circuit stopped it");
    until("the notices arrive", 10, || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|h| h["event"] == "circuit-open")
    })
    .await;
    let got = hooks.lock().unwrap().clone();
    assert_eq!(
        got.iter().filter(|h| h["event"] == "fix").count(),
        2,
        "{got:?}"
    );
    let open = got.iter().find(|h| h["event"] == "circuit-open").unwrap();
    assert_eq!(open["job"], "dns");
    assert_eq!(
        open["report"]["circuits_opened"],
        serde_json::json!(["r-930-VM"])
    );
    let entered: Vec<_> = got.iter().filter(|h| h["event"] == "degraded").collect();
    assert_eq!(entered.len(), 1, "one notice on entering: {got:?}");
    assert_eq!(
        entered[0]["report"]["degraded"],
        serde_json::json!([["r-930-VM", "circuit-open"]])
    );
    assert_eq!(entered[0]["report"]["verdict"], "degraded");
    let st = state::load(&state_dir).unwrap();
    let m = parse_metrics(&metrics.render(&st));
    assert_eq!(
        sample(
            &m,
            "remedy_job_degraded",
            &[
                ("job", "dns"),
                ("target", "r-930-VM"),
                ("reason", "circuit-open")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "remedy_job_last_success_timestamp_seconds",
            &[("job", "dns")]
        ),
        Some(success.unwrap().as_second() as f64)
    );
    assert_eq!(
        sample(
            &m,
            "remedy_circuit_open",
            &[("job", "dns"), ("target", "r-930-VM")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "remedy_job_fixes_total", &[("job", "dns")]),
        Some(2.0)
    );
    assert!(sample(&m, "remedy_job_skipped_total", &[("job", "dns")]).unwrap() >= 1.0);

    // A restart keeps the circuit open: still no fix.
    let d = start(&zone, &jobs);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.stop().await;
    assert_eq!(
        fixes(&zone),
        2,
        "the circuit stayed open across the restart"
    );
    let js = &state::load(&state_dir).unwrap().jobs["dns"];
    assert!(
        js.last_result.as_deref().unwrap().contains("circuit open"),
        "{js:?}"
    );
    assert_eq!(js.last_success, success, "{js:?}");
    assert_eq!(
        js.degraded.as_ref().unwrap().since,
        degraded.since,
        "still the same degraded stretch after the restart"
    );

    // Reset (as `remedy daemon reset dns r-930-VM` does): it fixes again, and is no longer
    // degraded (one notice for that).
    breaker.abort();
    state::update(&state_dir, |s| {
        s.jobs.get_mut("dns").unwrap().reset(Some("r-930-VM"))
    })
    .unwrap();
    let d = start(&zone, &jobs);
    until("fixed after the reset", 20, || fixes(&zone) == 3).await;
    until("no longer degraded", 20, || job().degraded.is_none()).await;
    let metrics = d.stop().await;
    let js = job();
    assert!(js.last_success > success, "{js:?}");
    until("the recovered notice arrives", 10, || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|h| h["event"] == "recovered")
    })
    .await;
    let got = hooks.lock().unwrap().clone();
    assert_eq!(
        got.iter().filter(|h| h["event"] == "degraded").count(),
        1,
        "{got:?}"
    );
    assert_eq!(
        got.iter().filter(|h| h["event"] == "recovered").count(),
        1,
        "{got:?}"
    );
    let m = parse_metrics(&metrics.render(&state::load(&state_dir).unwrap()));
    assert_eq!(
        sample(
            &m,
            "remedy_job_degraded",
            &[("job", "dns"), ("target", "r-930-VM"), ("reason", "none")]
        ),
        Some(0.0)
    );
    zone.audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_lock_makes_the_job_leave_the_router_alone() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let jobs = dns_job(&zone, "");
    let state_dir = zone.dir.path().join("state");
    let operator = remedy::lock::Holder::new("20261123T000000Z-op", "alice (remedy apply x)");
    let held = remedy::lock::try_all(&state_dir, &["r-930-VM".to_string()], &operator).unwrap();
    let d = start(&zone, &jobs);
    until("a turn that left it alone", 20, || {
        state::load(&state_dir)
            .ok()
            .and_then(|s| s.jobs.get("dns")?.last_result.clone())
            .is_some_and(|r| r.contains("locked by alice"))
    })
    .await;
    assert_eq!(fixes(&zone), 0);
    assert_ne!(dnsmasq(&zone), "active");
    let js = state::load(&state_dir).unwrap().jobs["dns"].clone();
    assert_eq!(
        js.degraded.as_ref().map(|d| d.targets.clone()),
        Some([("r-930-VM".to_string(), "locked".to_string())].into()),
        "a router left alone for a lock is degraded"
    );
    assert_eq!(js.last_success, None, "{:?}", js.last_result);
    // `remedy daemon status` says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_remedy-cli"))
        .args(["daemon", "status", "--state-dir"])
        .arg(&state_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let since = js.degraded.as_ref().unwrap().since;
    assert!(
        text.contains(&format!(
            "  degraded:     since {since}: r-930-VM (locked)\n"
        )),
        "{text}"
    );
    assert!(text.contains("  last success: -\n"), "{text}");
    drop(held);
    until("fixed once the operator is done", 20, || {
        dnsmasq(&zone) == "active"
    })
    .await;
    until("no longer degraded", 20, || {
        state::load(&state_dir).unwrap().jobs["dns"]
            .degraded
            .is_none()
    })
    .await;
    d.stop().await;
    assert_eq!(fixes(&zone), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_mode_writes_a_plan_that_apply_accepts() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let jobs = dns_job(&zone, "    mode: plan\n");
    let plans = zone.dir.path().join("state/plans");
    let d = start(&zone, &jobs);
    until("a plan", 20, || {
        std::fs::read_dir(&plans).is_ok_and(|mut d| d.next().is_some())
    })
    .await;
    d.stop().await;
    assert_eq!(fixes(&zone), 0, "plan mode fixes nothing");
    let file = std::fs::read_dir(&plans)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let s = zone
        .apply_plan(&zone.applying(&file), jiff::Timestamp::now())
        .await
        .expect("the plan is accepted");
    assert_eq!(s.exit, remedy::error::ExitCode::Success, "{}", s.status);
    assert_eq!(dnsmasq(&zone), "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_lets_a_running_fix_finish_and_a_kill_rolls_it_back() {
    // vr-backup-loop with async jobs of 3 s: a fix is in flight for a while.
    let vpc = "    params: { vpc: web-vpc, vlan_range: 1000-1099 }\n    every: 1s\n";
    for kill in [false, true] {
        let zone = ApiZone::start(
            "vr-backup-loop",
            Faults {
                job_ms: Some(3000),
                ..Faults::default()
            },
        )
        .await;
        let before = zone.world();
        let jobs = jobs_file(
            &zone,
            &format!("    playbook: {}\n{vpc}", playbook("vr-backup-loop")),
        );
        let d = start(&zone, &jobs);
        until("a fix is under way", 30, || {
            remedy::audit::read(&zone.audit())
                .is_ok_and(|rs| rs.iter().any(|r| r.value["event"] == "step_start"))
        })
        .await;
        if kill {
            let _ = d.kill.send(true);
        }
        let _ = d.reload.send(());
        let _metrics = d.stop().await;
        let records = remedy::audit::read(&zone.audit()).unwrap();
        let end = records
            .iter()
            .find(|r| r.value["event"] == "run_end")
            .expect("the run has its end in the audit log")
            .value
            .clone();
        if kill {
            assert_eq!(end["exit_code"], 2, "rolled back: {end}");
            assert_eq!(zone.world(), before, "the zone is as it was");
        } else {
            assert_eq!(end["exit_code"], 0, "finished: {end}");
        }
        zone.audit_verifies();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_jobs_file_on_reload_keeps_the_jobs_and_a_second_daemon_is_refused() {
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let jobs = dns_job(&zone, "");
    let state_dir = zone.dir.path().join("state");
    let d = start(&zone, &jobs);
    // A second daemon on the same state directory: exit 6.
    let (_s, stop_rx) = watch::channel(false);
    let (_k, kill_rx) = watch::channel(false);
    let (_r, reload_rx) = mpsc::unbounded_channel();
    until("the first holds the state dir", 10, || {
        remedy::lock::probe(&state_dir, daemon::DAEMON_LOCK).is_ok_and(|b| b.is_some())
    })
    .await;
    let second = daemon::run(
        options(&zone, &jobs),
        Control {
            stop: stop_rx,
            kill: kill_rx,
            reload: reload_rx,
        },
        HashMap::new(),
        Arc::new(Metrics::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(second.exit_code(), remedy::error::ExitCode::LockHeld);

    std::fs::write(&jobs, "jobs:\n  - name: dns\n    every: often\n").unwrap();
    let _ = d.reload.send(());
    let runs_then = || {
        state::load(&state_dir)
            .ok()
            .and_then(|s| s.jobs.get("dns")?.last_run)
    };
    let first = runs_then();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_ne!(runs_then(), first, "the old job still runs");
    let m = d.stop().await;
    assert!(m
        .render(&state::load(&state_dir).unwrap())
        .contains("job=\"dns\""));
}

/// GET `path` from `addr`: (status line, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_metrics_are_served_on_loopback() {
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let jobs = dns_job(&zone, "");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut opts = options(&zone, &jobs);
    opts.listen = Some(addr);
    let d = start_with(&zone, opts);
    let state_dir = zone.dir.path().join("state");
    until("a run", 20, || {
        state::load(&state_dir)
            .ok()
            .and_then(|s| s.jobs.get("dns")?.last_run)
            .is_some()
    })
    .await;
    let (status, body) = get(addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    let (status, body) = get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let m = parse_metrics(&body);
    assert!(
        sample(&m, "remedy_job_runs_total", &[("job", "dns")]).unwrap() >= 1.0,
        "{body}"
    );
    assert!(
        sample(
            &m,
            "remedy_job_last_success_timestamp_seconds",
            &[("job", "dns")]
        )
        .is_some(),
        "{body}"
    );
    let (status, _) = get(addr, "/nothing").await;
    assert!(status.contains("404"), "{status}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fix_that_fails_every_time_cools_down_and_trips_the_circuit() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let jobs = dns_job(
        &zone,
        "    cooldown: 0s\n    circuit: { fixes: 2, window: 1h }\n",
    );
    // The restart fails whenever it is tried.
    let conn = zone.conn.clone();
    let failing = tokio::spawn(async move {
        loop {
            let ssh = conn.simulator_ssh.as_ref().unwrap();
            ssh.hosts
                .fail_commands(vec!["systemctl restart dnsmasq".into()]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let state_dir = zone.dir.path().join("state");
    let d = start(&zone, &jobs);
    until_circuit_opens(&state_dir).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let metrics = d.stop().await;
    failing.abort();
    assert_eq!(
        fixes(&zone),
        2,
        "two failed attempts, then the circuit stopped it"
    );
    let st = state::load(&state_dir).unwrap();
    let m = parse_metrics(&metrics.render(&st));
    assert_eq!(
        sample(&m, "remedy_job_failures_total", &[("job", "dns")]),
        Some(2.0)
    );
    // The restart never ran, and dnsmasq read again was as before: each attempt failed
    // without changing anything (exit 7), so there was nothing to roll back.
    assert_eq!(
        sample(&m, "remedy_job_rollbacks_total", &[("job", "dns")]),
        Some(0.0)
    );
    let ends: Vec<serde_json::Value> = remedy::audit::read(&zone.audit())
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .filter(|v| v["event"] == "run_end")
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    for end in &ends {
        assert_eq!(end["exit_code"], 7, "{end}");
        assert_eq!(
            (end["changed"].as_u64(), end["undone"].as_u64()),
            (Some(0), Some(0))
        );
    }

    assert_eq!(
        sample(&m, "remedy_job_fixes_total", &[("job", "dns")]),
        Some(0.0)
    );
    zone.audit_verifies();
}

/// A diagnostic in `detect` mode: its report finds the zone's routers, so every run is
/// `found` (exit 8): not a failure, not a fix; nothing is audited, a `found` notice is sent,
/// and /metrics counts it.
#[tokio::test(flavor = "multi_thread")]
async fn a_report_that_finds_problems_is_found_not_failed() {
    let zone = ApiZone::start("dnsmasq-dead", Faults::default()).await;
    let (url, hooks) = receiver().await;
    let pb = remedy_tests::write(
        zone.dir.path(),
        "routers-report.yml",
        r#"name: routers-report
steps:
  - id: routers
    api: { command: listRouters, args: { listall: true } }
  - id: seen
    report:
      title: routers in the zone
      rows: routers.items
      columns: [name, state]
"#,
    );
    let jobs = jobs_file(
        &zone,
        &format!(
            "    playbook: {}\n    every: 1s\n    mode: detect\n    notify: {{ webhook: \"{url}\", on: [found, failure] }}\n",
            pb.display()
        ),
    );
    let d = start(&zone, &jobs);
    until("a found notice", 20, || !hooks.lock().unwrap().is_empty()).await;
    let metrics = d.stop().await;
    let st = state::load(&zone.dir.path().join("state")).unwrap();
    let js = &st.jobs["dns"];
    let status = js.last_result.clone().unwrap_or_default();
    assert!(
        status.starts_with("found problems: ")
            && status.ends_with(" finding(s) (seen@localhost) (detect mode: not fixing)"),
        "{status}"
    );
    assert_eq!(js.last_exit, Some(8));
    assert!(js.last_success.is_some(), "a finding is not a failure");
    let hook = hooks.lock().unwrap()[0].clone();
    assert_eq!(hook["event"], "found");
    assert_eq!(hook["report"]["verdict"], "found");
    assert_eq!(hook["report"]["exit"], 8);
    let m = parse_metrics(&metrics.render(&st));
    assert!(sample(&m, "remedy_job_found_total", &[("job", "dns")]).unwrap() >= 1.0);
    assert_eq!(
        sample(&m, "remedy_job_failures_total", &[("job", "dns")]),
        Some(0.0)
    );
    assert_eq!(fixes(&zone), 0, "detect mode changes nothing");
}

/// CPU time (user + system, all threads) of process `pid`, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command (which may hold spaces), from the state (field 3) on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    ticks
        / String::from_utf8_lossy(&hz.stdout)
            .trim()
            .parse::<f64>()
            .unwrap()
}

/// Between runs (here: before its first, an hour away) the daemon sleeps: its process uses next
/// to no CPU. (Its loop once watched a
/// channel that, with local locks, is closed from the start; a closed channel answers at once,
/// so the loop never slept: a core at 100% with nothing to do.) Measured on the real binary in
/// its own process, with the listener, the warm pool and the local backend, as deployed.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_daemon_sleeps() {
    let home = tempfile::tempdir().unwrap();
    let inv = home.path().join("lab-live.yml");
    let remedy = env!("CARGO_BIN_EXE_remedy-cli");
    let lab = remedy_tests::lab::Lab::start(remedy, "dnsmasq-dead", &inv, home.path());
    let jobs = remedy_tests::write(
        home.path(),
        "jobs.yml",
        &format!(
            "jobs:\n  - name: dns\n    playbook: {}\n    inventory: {}\n    params: {{ vpc: web-vpc }}\n    every: 1h\n    mode: detect\n",
            playbook("restart-dnsmasq"),
            inv.display()
        ),
    );
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new(remedy)
        .args(["daemon", "--jobs"])
        .arg(&jobs)
        .arg("--state-dir")
        .arg(home.path().join("state"))
        .arg("--audit-log")
        .arg(home.path().join("audit.jsonl"))
        .args(["--listen", &addr.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(home.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "not serving: {}",
            std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = get(addr, "/readyz").await;
    assert!(status.contains("200"), "{status}");
    // Started, leading; its job's first run is an hour away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    lab.stop();
    // A busy loop uses ~3 s here; a sleeping daemon a few milliseconds.
    assert!(used < 0.5, "the idle daemon used {used:.2} s of CPU in 3 s");
    assert!(status.success(), "{status:?}");
}

/// How many times the zone was asked for its hypervisors (the inventory's first call).
fn zone_reads(zone: &ApiZone) -> usize {
    zone.sim()
        .requests()
        .iter()
        .filter(|r| r.command == "listHosts")
        .count()
}

/// A scheduled detection that finds nothing reuses the hosts read from the zone for
/// `inventory_cache`; one that finds something is done again on the zone read afresh, and the
/// fix is planned on that; with `inventory_cache: 0s` every run reads the zone.
#[tokio::test(flavor = "multi_thread")]
async fn detections_reuse_the_zones_hosts_and_a_fix_reads_them_afresh() {
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let jobs = dns_job(&zone, "");
    let text = std::fs::read_to_string(&jobs).unwrap();
    std::fs::write(&jobs, format!("inventory_cache: 1h\n{text}")).unwrap();
    let d = start(&zone, &jobs);
    let runs = |n: f64| {
        let m = d.metrics.clone();
        move || {
            sample(
                &parse_metrics(&m.render(&state::State::default())),
                "remedy_job_runs_total",
                &[("job", "dns")],
            )
            .unwrap_or(0.0)
                >= n
        }
    };
    until("four healthy runs", 30, runs(4.0)).await;
    assert_eq!(zone_reads(&zone), 1, "the zone read once for four runs");
    // dnsmasq dies: the next detection (on the hosts read earlier) finds it, and is done again
    // on the zone read now, which the fix then uses.
    zone.sim().with_zone(|z| {
        z.inject("dnsmasq-dead", "r-930-VM", jiff::Timestamp::now())
            .unwrap()
    });
    until("fixed", 30, || dnsmasq(&zone) == "active").await;
    d.stop().await;
    assert_eq!(fixes(&zone), 1);
    assert!(
        zone_reads(&zone) >= 2,
        "the fix read the zone afresh: {}",
        zone_reads(&zone)
    );
    zone.audit_verifies();

    // inventory_cache: 0s: every run reads the zone.
    let zone = ApiZone::start("healthy", Faults::default()).await;
    let jobs = dns_job(&zone, "");
    let text = std::fs::read_to_string(&jobs).unwrap();
    std::fs::write(&jobs, format!("inventory_cache: 0s\n{text}")).unwrap();
    let d = start(&zone, &jobs);
    let m = d.metrics.clone();
    until("three runs", 30, || {
        sample(
            &parse_metrics(&m.render(&state::State::default())),
            "remedy_job_runs_total",
            &[("job", "dns")],
        )
        .unwrap_or(0.0)
            >= 3.0
    })
    .await;
    let stopped = d.stop().await;
    let runs = sample(
        &parse_metrics(&stopped.render(&state::State::default())),
        "remedy_job_runs_total",
        &[("job", "dns")],
    )
    .unwrap();
    assert_eq!(zone_reads(&zone) as f64, runs, "one read per run");
}
