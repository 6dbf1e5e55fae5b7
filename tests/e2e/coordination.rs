//! Coordination through a real etcd cluster (issue 23), with the real binary: "machines" are
//! separate state directories and audit logs, each `remedy` its own process, all pointed at
//! one etcd by `--coordination`. Each run starts its own embedded simulated zone
//! (inventories/lab.yml), so the only thing the processes share is etcd.
//!
//! Without the `etcd` binary these tests say SKIPPED; under CI=true they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use remedy_tests::etcd::Cluster;
use serde_json::Value;

const REMEDY: &str = env!("CARGO_BIN_EXE_remedy-cli");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One machine: its own state directory and audit log.
struct Machine {
    dir: tempfile::TempDir,
    url: String,
}

impl Machine {
    fn new(url: &str) -> Machine {
        Machine {
            dir: tempfile::tempdir().unwrap(),
            url: url.to_string(),
        }
    }

    fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(REMEDY);
        c.current_dir(repo())
            .args(args)
            .env("REMEDY_STATE_DIR", self.dir.path().join("state"))
            .env("REMEDY_AUDIT_LOG", self.audit())
            .env("REMEDY_COORDINATION", &self.url)
            .env_remove("REMEDY_INVENTORY")
            .env("NO_COLOR", "1");
        c
    }

    /// `remedy apply PLAYBOOK -i inventories/lab.yml --yes ARGS...`.
    fn apply(&self, playbook: &Path, more: &[&str]) -> Command {
        let p = playbook.display().to_string();
        let mut args = vec!["apply", p.as_str(), "-i", "inventories/lab.yml", "--yes"];
        args.extend(more);
        self.command(&args)
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn event(&self, event: &str) -> Option<Value> {
        self.records().into_iter().find(|r| r["event"] == event)
    }

    /// Waits until this machine's run has logged `event`.
    fn wait_for(&self, event: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.event(event) {
                return r;
            }
            assert!(Instant::now() < deadline, "no {event} within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start remedy")
}

/// A playbook that changes a setting through the API (so the CloudStack API lock is taken and
/// there is something to roll back), then holds the routers for `secs`.
fn holding(dir: &Path, secs: u64) -> PathBuf {
    let p = dir.join(format!("hold-{secs}.yml"));
    std::fs::write(
        &p,
        format!(
            "name: hold\ndescription: change a setting, then hold the routers\nsteps:\n  \
             - id: setting\n    cs_setting: {{ name: secstorage.allowed.internal.sites, value: 10.9.0.0/16 }}\n  \
             - id: hold\n    on: routers\n    needs: [setting]\n    wait: {secs}s\n"
        ),
    )
    .unwrap();
    p
}

/// Waits until `m`'s run changed the setting and went on to hold the routers (a read-only
/// step logs only its end).
fn holding_now(m: &Machine) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !m
        .records()
        .iter()
        .any(|r| r["event"] == "step_end" && r["step"] == "setting")
    {
        assert!(Instant::now() < deadline, "the setting never changed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
}

fn ts(r: &Value) -> jiff::Timestamp {
    r["ts"].as_str().unwrap().parse().unwrap()
}

/// One machine holds the routers and the API; another machine's apply is refused (exit 6)
/// naming the holder on the first (its pid and host); a third waits with --wait-lock and
/// starts the moment the first lets go.
#[test]
fn a_lock_on_one_machine_is_seen_on_another_and_wait_lock_follows_its_release() {
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    let url = cluster.url("/remedy/zone-a", 4);
    let (a, b, c) = (Machine::new(&url), Machine::new(&url), Machine::new(&url));
    let pb = holding(a.dir.path(), 4);
    let first = spawn(a.apply(&pb, &[]));
    a.wait_for("step_start", Duration::from_secs(60));

    let o = b.apply(&pb, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let host = remedy::app::hostname();
    assert!(
        err.contains(&format!(
            "is locked by {} (remedy apply hold) (pid {} on {host}, run ",
            remedy::app::operator(),
            first.id()
        )),
        "{}",
        text(&o)
    );
    assert!(b.event("step_start").is_none(), "nothing started on b");
    // Another zone's prefix on the same cluster is not held.
    let other_zone = Machine::new(&cluster.url("/remedy/zone-a2", 4));
    let o = other_zone
        .apply(&holding(other_zone.dir.path(), 0), &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // `remedy locks` on a third machine lists the first one's locks.
    let o = c.command(&["locks"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("cloudstack-api: "), "{}", text(&o));
    assert!(out.contains("r-930-VM: "), "{}", text(&o));
    assert!(
        out.contains(&format!("pid {} on {host}", first.id())),
        "{out}"
    );

    let waiting = spawn(c.apply(&pb, &["--wait-lock", "60s"]));
    let o = first.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = waiting.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let released = ts(&a.wait_for("run_end", Duration::ZERO));
    let started = ts(&c.wait_for("step_start", Duration::ZERO));
    let gap = started.duration_since(released);
    assert!(
        gap < jiff::SignedDuration::from_millis(1500),
        "the waiting run started {gap:?} after the other ended"
    );
    // Nothing is left held.
    let o = c.command(&["locks"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("no locks held (etcd at "),
        "{}",
        text(&o)
    );
}

/// The cluster freezes (every member SIGSTOPped) while a run holds its locks: the run cannot
/// keep its lease alive, so it starts nothing more and rolls back its change (exit 2), and the
/// audit log says why. Once the cluster is back, the locks are free within the lease's TTL.
#[test]
fn a_lease_that_cannot_be_kept_alive_stops_the_run_and_rolls_it_back() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let url = cluster.url("/remedy/zone-b", 4);
    let a = Machine::new(&url);
    let pb = holding(a.dir.path(), 30);
    let run = spawn(a.apply(&pb, &[]));
    // The setting changed; the routers are being held.
    holding_now(&a);
    let frozen = Instant::now();
    cluster.freeze();
    let o = run.wait_with_output().unwrap();
    let took = frozen.elapsed();
    cluster.thaw();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(took < Duration::from_secs(25), "stopped after {took:?}");
    let end = a.wait_for("run_end", Duration::ZERO);
    assert!(
        end["status"]
            .as_str()
            .unwrap()
            .contains("locks lost: the lock lease could not be kept alive"),
        "{end}"
    );
    let undo = a.wait_for("undo_end", Duration::ZERO);
    assert_eq!(undo["step"], "setting");
    assert_eq!(undo["ok"], true, "{undo}");
    assert_eq!(undo["restored"], true, "{undo}");
    let o = a.command(&["audit", "verify"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Back: the old lease expires within its TTL and the targets are free.
    let back = Instant::now();
    let b = Machine::new(&url);
    let quick = holding(b.dir.path(), 0);
    let o = b.apply(&quick, &["--wait-lock", "30s"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        back.elapsed() < Duration::from_secs(15),
        "free only after {:?}",
        back.elapsed()
    );
}

/// One member of three is killed mid-run: the quorum holds, the run never notices.
#[test]
fn a_member_killed_mid_run_goes_unnoticed() {
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    // The default TTL (10s): the keep-alive gives up at half of it, and a killed member that
    // led the cluster takes etcd 1-2 s to replace, when no lease is renewed (with a 4s TTL that
    // was counted as a lost lease 2 times in 20).
    let url = cluster.url("/remedy/zone-c", 10);
    let a = Machine::new(&url);
    let pb = holding(a.dir.path(), 6);
    let run = spawn(a.apply(&pb, &[]));
    a.wait_for("step_start", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    cluster.kill(0);
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let end = a.wait_for("run_end", Duration::ZERO);
    assert_eq!(end["status"], "ok", "{end}");
}

/// `remedy locks break` refuses without --yes; with it the holder's run sees its lock lost and
/// rolls back, and the break is in the breaker's audit log.
#[test]
fn breaking_a_lock_stops_its_holder_and_is_audited() {
    let Some(cluster) = Cluster::start(1) else {
        return;
    };
    let url = cluster.url("/remedy/zone-d", 4);
    let (a, ops) = (Machine::new(&url), Machine::new(&url));
    let pb = holding(a.dir.path(), 30);
    let run = spawn(a.apply(&pb, &[]));
    holding_now(&a);
    let o = ops
        .command(&["locks", "break", "r-930-VM"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing to break the lock without --yes"),
        "{}",
        text(&o)
    );
    assert!(ops.event("lock_broken").is_none());

    let o = ops
        .command(&["locks", "break", "r-930-VM", "--yes"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rec = ops.wait_for("lock_broken", Duration::ZERO);
    assert_eq!(rec["target"], "r-930-VM");
    assert!(
        rec["holder"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", run.id())),
        "{rec}"
    );
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let end = a.wait_for("run_end", Duration::ZERO);
    assert!(
        end["status"]
            .as_str()
            .unwrap()
            .contains("locks lost: the lock on r-930-VM was removed"),
        "{end}"
    );
    let o = ops.command(&["audit", "verify"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// One HTTP/1.0 request to `addr` (the server closes after its answer): the status and the
/// body; `None` when the connection is refused or breaks before an answer.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    // A reset after the answer (a refusal that did not read the body) keeps what arrived.
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// `GET path` from a daemon's /metrics listener: the body.
fn http_get(addr: &str, path: &str) -> Option<String> {
    http(addr, "GET", path, &[], "").map(|(_, body)| body)
}

/// A sample of a daemon's /metrics, by its line's start (`remedy_daemon_leader `).
fn metric(addr: &str, line_start: &str) -> Option<f64> {
    http_get(addr, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A `remedy daemon` process; killed (SIGKILL) when dropped.
struct Daemon {
    child: Child,
    addr: String,
    machine: Machine,
}

impl Daemon {
    fn start(url: &str, jobs: &Path) -> Daemon {
        let machine = Machine::new(url);
        let addr = free_addr();
        let log = std::fs::File::create(machine.dir.path().join("daemon.log")).unwrap();
        let child = machine
            .command(&[
                "daemon",
                "--jobs",
                &jobs.display().to_string(),
                "--listen",
                &addr,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start remedy daemon");
        Daemon {
            child,
            addr,
            machine,
        }
    }

    fn leads(&self) -> Option<bool> {
        metric(&self.addr, "remedy_daemon_leader ").map(|v| v == 1.0)
    }

    fn runs(&self) -> f64 {
        metric(&self.addr, "remedy_job_runs_total{job=\"dns\"} ").unwrap_or(0.0)
    }

    /// The fixes it tried (audited applies).
    fn applies(&self) -> usize {
        self.machine
            .records()
            .iter()
            .filter(|r| r["event"] == "run_start" && r["mode"] == "apply")
            .count()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.machine.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until exactly one of `ds` leads; its index.
fn one_leader(ds: &[&Daemon], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let leading: Vec<usize> = ds
            .iter()
            .enumerate()
            .filter(|(_, d)| d.leads() == Some(true))
            .map(|(i, _)| i)
            .collect();
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(
            leading.len() <= 1,
            "two daemons lead at once:\n{}\n---\n{}",
            ds[0].log(),
            ds[1].log()
        );
        assert!(
            Instant::now() < deadline,
            "no leader within {within:?}:\n{}\n---\n{}",
            ds[0].log(),
            ds[1].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two daemon replicas on `cluster` (prefix `prefix`, lease TTL `ttl` s) over one `remedy lab`
/// of dnsmasq-dead with the SSH fault `fault` (JSON): their job `dns` runs restart-dnsmasq on
/// web-vpc every second, with the circuit opening after `fixes` fixes. Returns the lab (and
/// the directory it lives in), the jobs file, the leader and the other.
struct Replicas {
    _home: tempfile::TempDir,
    lab: remedy_tests::lab::Lab,
    jobs: PathBuf,
    leader: Daemon,
    other: Daemon,
}

fn replicas(cluster: &Cluster, prefix: &str, ttl: u64, fault: &str, fixes: u32) -> Replicas {
    replicas_with(cluster, prefix, ttl, Some(fault), |_, inv| {
        format!(
            "jobs:\n  - name: dns\n    playbook: {}\n    inventory: {}\n    params: {{ vpc: web-vpc }}\n    every: 1s\n    cooldown: 0s\n    circuit: {{ fixes: {fixes}, window: 1h }}\n",
            repo().join("playbooks/restart-dnsmasq.yml").display(),
            inv.display()
        )
    })
}

/// [`replicas`] with the jobs file `jobs(home, lab inventory)` and the SSH fault `fault`, if any.
fn replicas_with(
    cluster: &Cluster,
    prefix: &str,
    ttl: u64,
    fault: Option<&str>,
    jobs: impl FnOnce(&Path, &Path) -> String,
) -> Replicas {
    let url = cluster.url(prefix, ttl);
    let home = tempfile::tempdir().unwrap();
    let inv = home.path().join("lab-live.yml");
    let lab = remedy_tests::lab::Lab::start(REMEDY, "dnsmasq-dead", &inv, home.path());
    if let Some(fault) = fault {
        lab.patch_faults(&format!(r#"{{"ssh": [{fault}]}}"#));
    }
    let text = jobs(home.path(), &inv);
    let jobs = home.path().join("jobs.yml");
    std::fs::write(&jobs, text).unwrap();
    let a = Daemon::start(&url, &jobs);
    let b = Daemon::start(&url, &jobs);
    let first = one_leader(&[&a, &b], Duration::from_secs(30));
    let (leader, other) = if first == 0 { (a, b) } else { (b, a) };
    Replicas {
        _home: home,
        lab,
        jobs,
        leader,
        other,
    }
}

/// Kills (-9) `leader` and waits until `other` leads: within TTL + a tick (+ slack for this
/// machine). How long it took.
fn kill_and_take_over(leader: &mut Daemon, other: &Daemon, ttl: u64) -> Duration {
    let _ = leader.child.kill();
    let _ = leader.child.wait();
    let killed = Instant::now();
    while other.leads() != Some(true) {
        assert!(
            killed.elapsed() < Duration::from_secs(ttl + 1 + 4),
            "no takeover after {:?}:\n{}",
            killed.elapsed(),
            other.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    killed.elapsed()
}

/// Two daemons (two processes, two state directories) on one etcd and one simulated zone: one
/// leads and only it runs the job, once per tick; a fix that fails every time trips the
/// circuit after 3 tries (state in etcd); kill -9 the leader and the other takes over within
/// the lease TTL plus a tick, finds the circuit still open and tries no fourth fix.
#[test]
fn two_daemons_elect_one_leader_that_fails_over_with_the_flap_guard() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let ttl = 3;
    // Every restart of dnsmasq fails: each fix attempt counts towards the circuit.
    let fail = r#"{"command": "systemctl restart dnsmasq", "effect": "fail", "next": 1000}"#;
    let Replicas {
        _home,
        lab,
        jobs,
        mut leader,
        other,
    } = replicas(&cluster, "/remedy/zone-e", ttl, fail, 3);

    // The circuit opens after three failed fixes, all by the leader.
    let status = |m: &Machine| {
        let o = m
            .command(&["daemon", "status", "--jobs", &jobs.display().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status(&other.machine).contains("circuit open since") {
        assert!(
            Instant::now() < deadline,
            "the circuit never opened:\n{}\n{}",
            status(&other.machine),
            leader.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(leader.applies(), 3, "{}", leader.log());
    assert_eq!(other.applies(), 0, "only the leader runs");
    assert_eq!(
        other.runs(),
        0.0,
        "the other daemon ran nothing: {}",
        other.log()
    );
    // Once per tick: over 4 s of 1 s ticks, 3 to 5 runs, by the leader alone.
    let before = leader.runs();
    std::thread::sleep(Duration::from_secs(4));
    let ran = leader.runs() - before;
    assert!((3.0..=5.0).contains(&ran), "{ran} runs in 4 s of 1 s ticks");
    assert_eq!(other.runs(), 0.0);
    let shown = status(&other.machine);
    assert!(
        shown.starts_with("leader: remedy daemon ("),
        "status names the leader: {shown}"
    );

    // kill -9 the leader: the other takes over within TTL + a tick.
    let took = kill_and_take_over(&mut leader, &other, ttl);
    assert!(
        took >= Duration::from_millis(500),
        "took over at once? {took:?}"
    );
    // It runs the job, finds the circuit open and tries no fourth fix.
    let deadline = Instant::now() + Duration::from_secs(30);
    while other.runs() < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the new leader never ran: {}",
            other.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        other.applies(),
        0,
        "no fix under an open circuit: {}",
        other.log()
    );
    assert!(status(&other.machine).contains("circuit open since"));
    drop(leader);
    lab.stop();
}

/// TLS with a client certificate, and etcd's own authentication with the password given by
/// reference: locks work through them; a wrong password, or no client certificate, is refused
/// before anything runs, and the password is never printed.
#[test]
fn tls_with_a_client_certificate_and_a_password_by_reference() {
    let Some(cluster) = Cluster::start_tls() else {
        return;
    };
    let certs = cluster.tls.clone().unwrap();
    // A user that may use /remedy/ only; then authentication on.
    for args in [
        &["user", "add", "root:r00t-Pw-771"][..],
        &["role", "add", "remedy"],
        &[
            "role",
            "grant-permission",
            "remedy",
            "readwrite",
            "/remedy/",
            "--prefix=true",
        ],
        &["user", "add", "remedy:S3cr3t-Etcd-442"],
        &["user", "grant-role", "remedy", "remedy"],
        &["auth", "enable"],
    ] {
        cluster.etcdctl(args);
    }
    let pw = cluster.dir.path().join("etcd-password");
    std::fs::write(&pw, "S3cr3t-Etcd-442\n").unwrap();
    let url = |password: &str, cert: bool| {
        let mut u = format!(
            "etcds://{}/remedy/zone-f?ttl=4s&ca={}&user=remedy&password={password}",
            cluster.endpoints(),
            certs.ca.display()
        );
        if cert {
            u.push_str(&format!(
                "&cert={}&key={}",
                certs.client.display(),
                certs.client_key.display()
            ));
        }
        u
    };

    // Good: a lock taken and released through TLS and auth (password from a file).
    let good = Machine::new(&url(&format!("file:{}", pw.display()), true));
    let pb = holding(good.dir.path(), 0);
    let o = good.apply(&pb, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = good.command(&["locks"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("no locks held (etcd at "),
        "{}",
        text(&o)
    );
    // The password from the environment works too.
    let env_url = url("env:REMEDY_TEST_ETCD_PW", true);
    let o = Machine::new(&env_url)
        .command(&["locks"])
        .env("REMEDY_TEST_ETCD_PW", "S3cr3t-Etcd-442")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A wrong password: refused before anything runs, the password not repeated.
    let wrong = Machine::new(&env_url);
    let o = wrong
        .apply(&pb, &[])
        .env("REMEDY_TEST_ETCD_PW", "Wr0ng-Pw-Zebra-5")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("coordination: "), "{all}");
    assert!(!all.contains("Wr0ng-Pw-Zebra-5"), "{all}");
    assert!(wrong.event("step_start").is_none(), "nothing ran");
    // No client certificate: refused by the cluster.
    let o = Machine::new(&url(&format!("file:{}", pw.display()), false))
        .command(&["locks"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // An inline password is refused without being repeated.
    let o = Machine::new(&url("S3cr3t-Etcd-442", true))
        .command(&["locks"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("an inline password is refused"), "{all}");
    assert!(!all.contains("S3cr3t-Etcd-442"), "{all}");
}

/// The leader is killed (-9) in the middle of a fix: the run stays recorded in flight in etcd.
/// The other daemon takes over, says that run (its token, its daemon) was interrupted, records
/// so as the job's last result, and runs the job again from its detection (the restart the
/// killed run sent lands meanwhile: nothing is fixed twice blindly); dnsmasq ends up running.
///
/// The job runs every second, so the new leader's own runs soon replace the "interrupted"
/// result that `remedy daemon status` shows: the test reads it from the state document's
/// history in etcd instead (a status read raced that run, 2 times in 17).
#[test]
fn a_run_in_flight_when_the_leader_dies_is_checked_by_the_next_leader() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let ttl = 3;
    // The first restart hangs for 6 s before it runs (it runs even if its client is gone).
    let hang = r#"{"command": "systemctl restart dnsmasq", "effect": "hang", "hang_ms": 6000}"#;
    let Replicas {
        _home,
        lab,
        jobs: _,
        mut leader,
        other,
    } = replicas(&cluster, "/remedy/zone-g", ttl, hang, 5);
    // The leader's fix is under way: the restart is sent (and hangs).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leader
        .machine
        .records()
        .iter()
        .any(|r| r["event"] == "step_start" && r["step"] == "restart")
    {
        assert!(
            Instant::now() < deadline,
            "no fix started: {}",
            leader.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = || {
        let o = other
            .machine
            .command(&["daemon", "status"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let shown = status();
    assert!(shown.contains("  running:      since "), "{shown}");
    // The run in flight as the state shows it: `since T (BY, run TOKEN)`.
    let running = shown
        .lines()
        .find_map(|l| l.strip_prefix("  running:      since "))
        .unwrap();
    let (since, rest) = running.split_once(" (").unwrap();
    let (by, token) = rest.trim_end_matches(')').rsplit_once(", run ").unwrap();
    assert!(token.starts_with("daemon-"), "{shown}");
    assert!(
        by.ends_with(&format!(" pid {}", leader.child.id())),
        "run by the leader: {shown}"
    );
    kill_and_take_over(&mut leader, &other, ttl);
    // It says that run was interrupted (that token, by the killed leader), then checks the job
    // again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let said = loop {
        let log = other.log();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("was still in flight when its daemon stopped"))
        {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(said.contains(&format!("run={token} ")), "{said}");
    assert!(said.contains(&format!("since={since} ")), "{said}");
    assert!(said.contains(&format!("by={by} ")), "{said}");
    // The state said so as the job's last result (what `daemon status` shows until the next
    // run ends), after the interrupted run's own record.
    let before_takeover = |s: &Value| {
        let js = &s["jobs"]["dns"];
        js["in_flight"]["token"] == token
            && !js["last_result"]
                .as_str()
                .is_some_and(|r| r.starts_with("interrupted: "))
    };
    let history = etcd_state_history(&cluster, "/remedy/zone-g", before_takeover);
    let results: Vec<&str> = history
        .iter()
        .filter_map(|s| s["jobs"]["dns"]["last_result"].as_str())
        .filter(|r| r.starts_with("interrupted: "))
        .collect();
    let me = format!(" pid {}", other.child.id());
    assert!(
        results.iter().any(|r| r.starts_with(&format!(
            "interrupted: the run {token} started by {by} at {since} did not finish (its daemon stopped); checked again by remedy daemon ("
        )) && r.ends_with(&me)),
        "{results:?}"
    );
    assert!(
        history.last().is_some_and(before_takeover),
        "the history reaches back to the killed leader's record of its run"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while other.runs() < 1.0 {
        assert!(
            Instant::now() < deadline,
            "never ran again: {}",
            other.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // dnsmasq is active in the end (the hung restart landed, or the new leader's fix did).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = lab.world();
        let state = w["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "r-930-VM")
            .map(|v| v["guest"]["services"]["dnsmasq"]["state"].clone());
        if state == Some(serde_json::json!("active")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dnsmasq: {state:?}\n{}",
            other.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(leader);
    lab.stop();
}

/// The CloudStack webhook's secret key in [`hook_jobs`].
const HOOK_SECRET: &str = "replicated-webhook-secret-7731";

/// A jobs file for [`replicas_with`]: the CloudStack receiver (its secret key in a file in
/// `home`) and the job `dns` (restart-dnsmasq on the lab's inventory), scheduled only hourly so
/// that only a delivery starts a fix, with a rule for router health check events that finds the
/// router's VPC with a lookup. No cooldown: the same router may be fixed again at once.
fn hook_jobs(home: &Path, inv: &Path) -> String {
    hook_jobs_with(home, inv, "debounce: 1s")
}

/// [`hook_jobs`] with `triggers` (its lines besides `cloudstack`, two spaces in).
fn hook_jobs_with(home: &Path, inv: &Path, triggers: &str) -> String {
    let secret = home.join("cs-secret");
    std::fs::write(&secret, HOOK_SECRET).unwrap();
    format!(
        "triggers:\n  {triggers}\n  cloudstack: {{ secret: {{ file: {} }} }}\n\
         jobs:\n  - name: dns\n    playbook: {}\n    inventory: {}\n    every: 1h\n    cooldown: 0s\n    circuit: {{ fixes: 5, window: 1h }}\n\
         \x20   on:\n      - name: router-health\n        match:\n          source: cloudstack\n          type: ROUTER.HEALTH.CHECKS\n          resource_type: DomainRouter\n          description: dnsmasq\n\
         \x20       lookup:\n          router: {{ api: listRouters, args: {{ id: \"{{{{ event.resource_id }}}}\" }} }}\n\
         \x20       limit: \"{{{{ router.name }}}}\"\n        params: {{ vpc: \"{{{{ router.vpcname }}}}\" }}\n",
        secret.display(),
        repo().join("playbooks/restart-dnsmasq.yml").display(),
        inv.display()
    )
}

/// A CloudStack delivery of the router health check event `body` with the id `id`, signed with
/// [`HOOK_SECRET`], POSTed to `addr`: the status and the body; `None` when the connection is
/// refused or breaks.
fn deliver(addr: &str, id: &str, body: &str) -> Option<(u16, String)> {
    let signature = crate::triggers::sign(HOOK_SECRET, body.as_bytes());
    http(
        addr,
        "POST",
        "/hooks/cloudstack",
        &[
            ("X-CS-Event-ID", id),
            ("X-CS-Event", "ROUTER.HEALTH.CHECKS"),
            ("User-Agent", "CS-Hookshot/acc-1"),
            ("Content-Type", "application/json"),
            ("X-CS-Signature", &signature),
        ],
        body,
    )
}

/// Delivers as a Service in front of the replicas would: each address in turn, the first `200`
/// taking it (a refused or broken connection, or any other status, moves to the next); after a
/// round with none, again a second later (`Retry-After: 1`), until `within`. The index of the
/// replica that took it, its answer, and what each address said before, in order.
fn deliver_to_any(
    addrs: &[&str],
    id: &str,
    body: &str,
    within: Duration,
) -> (usize, String, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut tried = Vec::new();
    loop {
        for (i, addr) in addrs.iter().enumerate() {
            match deliver(addr, id, body) {
                Some((200, said)) => return (i, said, tried),
                Some((status, said)) => tried.push(format!("{i}: {status} {}", said.trim())),
                None => tried.push(format!("{i}: no connection")),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no replica took the delivery within {within:?}: {tried:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The router r-930-VM in the lab's world.
fn lab_router(lab: &remedy_tests::lab::Lab) -> Value {
    lab.world()["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "r-930-VM")
        .cloned()
        .expect("the lab has r-930-VM")
}

/// The state of dnsmasq on r-930-VM (`active`, `failed`).
fn lab_dnsmasq(lab: &remedy_tests::lab::Lab) -> String {
    lab_router(lab)["guest"]["services"]["dnsmasq"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Breaks dnsmasq on r-930-VM again (`POST /sim/break`).
fn break_dnsmasq(lab: &remedy_tests::lab::Lab) {
    let body = r#"{"fault": "dnsmasq-dead", "target": "r-930-VM"}"#;
    let addr = lab.base.trim_start_matches("http://");
    let answer = http(addr, "POST", "/sim/break", &[], body);
    assert_eq!(answer.as_ref().map(|a| a.0), Some(200), "{answer:?}");
    assert_eq!(lab_dnsmasq(lab), "failed");
}

/// The daemon state document in etcd under `prefix` (`{}` when there is none).
fn etcd_state(cluster: &Cluster, prefix: &str) -> Value {
    let text = cluster.etcdctl(&[
        "get",
        "--print-value-only",
        &format!("{prefix}/daemon/state"),
    ]);
    if text.trim().is_empty() {
        return serde_json::json!({});
    }
    serde_json::from_str(text.trim()).expect("the daemon state is JSON")
}

/// The versions of the daemon state document in etcd under `prefix`, newest first, back to the
/// first one `enough` holds for (or the first of all; at most 1,000). The test cluster keeps
/// every revision (no compaction).
fn etcd_state_history(
    cluster: &Cluster,
    prefix: &str,
    enough: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    use base64::Engine as _;
    let key = format!("{prefix}/daemon/state");
    let mut out = Vec::new();
    let mut at: Option<i64> = None;
    while out.len() < 1000 {
        let rev = at.map(|r| format!("--rev={r}"));
        let mut args = vec!["get", key.as_str(), "-w", "json"];
        args.extend(rev.as_deref());
        let reply: Value = serde_json::from_str(&cluster.etcdctl(&args)).expect("etcdctl JSON");
        let Some(kv) = reply["kvs"].get(0) else {
            break;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(kv["value"].as_str().unwrap_or_default())
            .expect("base64");
        let doc: Value = serde_json::from_slice(&bytes).expect("the daemon state is JSON");
        let done = enough(&doc);
        out.push(doc);
        if done {
            break;
        }
        at = Some(kv["mod_revision"].as_i64().expect("a revision") - 1);
    }
    out
}

/// Waits until `d` has fixed dnsmasq on r-930-VM with its `n`th fix, and the run's end is
/// recorded in etcd (no run in flight, `n` fixes of the router in all). The fix's `run_end`.
fn fixed_by(
    d: &Daemon,
    n: usize,
    lab: &remedy_tests::lab::Lab,
    state: impl Fn() -> Value,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ends: Vec<Value> = d
            .machine
            .records()
            .into_iter()
            .filter(|r| r["event"] == "run_end")
            .collect();
        let s = state();
        let job = &s["jobs"]["dns"];
        let fixes = job["targets"]["r-930-VM"]["fixes"]
            .as_array()
            .map_or(0, Vec::len);
        if let (Some(end), true) = (ends.last(), job["in_flight"].is_null() && fixes == n) {
            assert_eq!(lab_dnsmasq(lab), "active", "{}", d.log());
            return end.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no fix recorded: dnsmasq {}, state {s}\n{}",
            lab_dnsmasq(lab),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A sample of `d`'s /metrics by its line's start; 0 when it is not there.
fn count(d: &Daemon, line_start: &str) -> f64 {
    metric(&d.addr, line_start).unwrap_or(0.0)
}

/// The events that started `d`'s runs, from its log (`TYPE ID` of each run's first event).
fn started_by(d: &Daemon) -> Vec<String> {
    d.log()
        .lines()
        .filter(|l| l.contains("run started by events"))
        .filter_map(|l| {
            let (_, rest) = l.split_once(" first=")?;
            Some(rest.split(" limit=").next()?.to_string())
        })
        .collect()
}

const REJECTED_NOT_LEADER: &str =
    "remedy_events_rejected_total{source=\"cloudstack\",reason=\"not-leader\"} ";
const RECEIVED: &str = "remedy_events_received_total{source=\"cloudstack\"} ";
const REPLAYS: &str = "remedy_events_deduplicated_total{source=\"cloudstack\",reason=\"replay\"} ";
const EVENT_RUNS: &str = "remedy_job_event_runs_total{job=\"dns\"} ";

/// Two daemon replicas with the CloudStack webhook receiver on one etcd and one lab zone
/// (dnsmasq dead on r-930-VM), the job scheduled hourly so that only a delivery fixes:
/// - only the leader is ready (`/readyz` 200; the other 503);
/// - a signed delivery to the other replica is refused (503, `not-leader`), runs nothing and
///   leaves no trace of its id;
/// - the same delivery to the leader is accepted, its id is in etcd by the time of the answer,
///   and the leader fixes the router, once;
/// - kill -9 the leader: the other takes over; dnsmasq breaks again and a new delivery, sent
///   to each replica in turn as a Service would, is taken by the new leader, which fixes it;
/// - the first delivery again (same body, same event id) to the new leader is a replay: 200,
///   nothing queued, nothing run.
#[test]
fn webhook_deliveries_reach_the_leader_only_and_replays_are_known_after_failover() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let ttl = 3;
    let prefix = "/remedy/zone-h";
    let Replicas {
        _home,
        lab,
        jobs: _,
        mut leader,
        other,
    } = replicas_with(&cluster, prefix, ttl, None, hook_jobs);
    let state = || etcd_state(&cluster, prefix);
    let router = lab_router(&lab)["id"].as_str().unwrap().to_string();
    assert_eq!(lab_dnsmasq(&lab), "failed");
    let readyz = |d: &Daemon| http(&d.addr, "GET", "/readyz", &[], "");
    assert_eq!(readyz(&leader), Some((200, "leader\n".to_string())));
    assert_eq!(readyz(&other), Some((503, "not the leader\n".to_string())));

    // To the replica that does not lead: refused, nothing runs, the id is not kept.
    let first = crate::triggers::payload(
        "ROUTER.HEALTH.CHECKS",
        &router,
        "dnsmasq: service not running",
    );
    assert_eq!(
        deliver(&other.addr, "ev-1", &first),
        Some((
            503,
            "this replica does not lead; deliver to the leader\n".to_string()
        ))
    );
    // Longer than the debounce window and a lookup.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&other, RECEIVED), 1.0);
    assert_eq!(count(&other, REJECTED_NOT_LEADER), 1.0);
    assert_eq!(count(&other, EVENT_RUNS), 0.0);
    assert_eq!(count(&leader, RECEIVED), 0.0, "the leader heard nothing");
    assert_eq!(leader.applies() + other.applies(), 0, "nothing ran");
    assert_eq!(lab_dnsmasq(&lab), "failed");
    assert!(state()["events"]["seen"]["ev-1"].is_null(), "{}", state());
    assert!(
        other
            .log()
            .contains("delivery refused: this replica does not lead"),
        "{}",
        other.log()
    );

    // The same delivery to the leader: accepted, its id durable in etcd by the answer.
    let sent = Instant::now();
    assert_eq!(
        deliver(&leader.addr, "ev-1", &first),
        Some((200, "accepted: 1 queued, 0 seen before\n".to_string()))
    );
    assert!(state()["events"]["seen"]["ev-1"].is_string(), "{}", state());
    let end = fixed_by(&leader, 1, &lab, state);
    assert_eq!(end["status"], "ok", "{end}");
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(30), "fixed after {took:?}");
    assert_eq!(leader.applies(), 1, "one fix: {}", leader.log());
    assert_eq!(other.applies(), 0);
    assert_eq!(count(&leader, EVENT_RUNS), 1.0);
    assert_eq!(
        started_by(&leader),
        ["ROUTER.HEALTH.CHECKS ev-1"],
        "{}",
        leader.log()
    );

    // kill -9 the leader: the other takes over and is the one ready now.
    let takeover = kill_and_take_over(&mut leader, &other, ttl);
    assert_eq!(readyz(&leader), None, "the killed replica is gone");
    assert_eq!(readyz(&other), Some((200, "leader\n".to_string())));

    // dnsmasq breaks again; a new delivery, to each replica in turn (the killed one first).
    break_dnsmasq(&lab);
    let second = crate::triggers::payload(
        "ROUTER.HEALTH.CHECKS",
        &router,
        "dnsmasq: service not running (again)",
    );
    let sent = Instant::now();
    let (took_it, said, tried) = deliver_to_any(
        &[&leader.addr, &other.addr],
        "ev-2",
        &second,
        Duration::from_secs(30),
    );
    assert_eq!(took_it, 1, "{tried:?}");
    assert_eq!(said, "accepted: 1 queued, 0 seen before\n");
    assert_eq!(tried, vec!["0: no connection".to_string()]);
    let end = fixed_by(&other, 2, &lab, state);
    assert_eq!(end["status"], "ok", "{end}");
    let took_second = sent.elapsed();
    assert_eq!(other.applies(), 1, "the new leader's fix: {}", other.log());
    assert_eq!(leader.applies(), 1, "the killed leader made one fix only");
    assert_eq!(count(&other, EVENT_RUNS), 1.0);
    assert_eq!(
        started_by(&other),
        ["ROUTER.HEALTH.CHECKS ev-2"],
        "{}",
        other.log()
    );

    // The first delivery again, to the new leader: a replay (the id is in etcd).
    assert_eq!(
        deliver(&other.addr, "ev-1", &first),
        Some((200, "accepted: 0 queued, 1 seen before\n".to_string()))
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&other, REPLAYS), 1.0);
    assert_eq!(count(&other, EVENT_RUNS), 1.0, "the replay ran nothing");
    assert_eq!(other.applies(), 1, "{}", other.log());
    assert_eq!(started_by(&other), ["ROUTER.HEALTH.CHECKS ev-2"]);
    assert_eq!(lab_dnsmasq(&lab), "active");
    let s = state();
    assert_eq!(
        s["jobs"]["dns"]["targets"]["r-930-VM"]["fixes"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{s}"
    );
    let seen: Vec<&String> = s["events"]["seen"].as_object().unwrap().keys().collect();
    assert_eq!(seen, ["ev-1", "ev-2"]);
    for d in [&leader, &other] {
        let o = d.machine.command(&["audit", "verify"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    eprintln!("timings: first fix {took:?}, takeover {takeover:?}, second fix {took_second:?}");
    drop(leader);
    lab.stop();
}

const RECOVERED_BATCH: &str =
    "a batch of events a previous leader accepted had not started its run: running it now";
const RECOVERED_EVENT: &str =
    "an event a previous leader accepted was not yet in a batch: matching it again";

/// Two replicas with the CloudStack receiver, `first_event: wait` and `debounce: 5s` (a batch
/// waits 5 s before its run), the job hourly: an accepted event whose run had not started when
/// the leader died is run by the next leader, once.
/// - kill -9 the leader right after its `200`: the event is in etcd (accepted and not yet in a
///   batch, with its body; or in a waiting batch); the other replica takes over and fixes the
///   router, once, started by that event; a redelivery of its id is a replay;
/// - a third replica joins; dnsmasq breaks again and a delivery to the leader opens a batch,
///   kept in etcd (and the event's mark cleared in the same write); kill -9 the leader while
///   the batch waits: the third replica runs the batch at once on taking over, once.
#[test]
fn an_accepted_event_whose_run_had_not_started_is_run_by_the_next_leader() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let ttl = 3;
    let prefix = "/remedy/zone-i";
    let Replicas {
        _home,
        lab,
        jobs,
        mut leader,
        other,
    } = replicas_with(&cluster, prefix, ttl, None, |home, inv| {
        hook_jobs_with(home, inv, "debounce: 5s\n  first_event: wait")
    });
    let state = || etcd_state(&cluster, prefix);
    let router = lab_router(&lab)["id"].as_str().unwrap().to_string();
    assert_eq!(lab_dnsmasq(&lab), "failed");

    // Accepted, then kill -9 at once: the batch (due in 5 s) has not started, and may not be
    // open yet (its rule's lookup takes a moment).
    let first = crate::triggers::payload(
        "ROUTER.HEALTH.CHECKS",
        &router,
        "dnsmasq: service not running",
    );
    assert_eq!(
        deliver(&leader.addr, "ev-1", &first),
        Some((200, "accepted: 1 queued, 0 seen before\n".to_string()))
    );
    let _ = leader.child.kill();
    let _ = leader.child.wait();
    // What etcd holds of it: the event (not yet in a batch) or its batch, waiting.
    let s = state();
    let events = &s["events"];
    let as_event = events["accepted"]["ev-1"]["event"]["id"] == "ev-1";
    let as_batch = events["pending"]
        .as_array()
        .is_some_and(|p| p.len() == 1 && p[0]["about"] == "ROUTER.HEALTH.CHECKS ev-1");
    assert!(as_event || as_batch, "{s}");
    assert_eq!(leader.applies(), 0, "nothing ran: {}", leader.log());
    // The other takes over and runs it: once, started by that event.
    let deadline = Instant::now() + Duration::from_secs(ttl + 5);
    while other.leads() != Some(true) {
        assert!(Instant::now() < deadline, "no takeover: {}", other.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let end = fixed_by(&other, 1, &lab, state);
    assert_eq!(end["status"], "ok", "{end}");
    let said = if as_event {
        RECOVERED_EVENT
    } else {
        RECOVERED_BATCH
    };
    assert!(other.log().contains(said), "{}", other.log());
    assert_eq!(started_by(&other), ["ROUTER.HEALTH.CHECKS ev-1"]);
    // Nothing more: no second run once the debounce window is over, nothing left waiting.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(other.applies(), 1, "one fix: {}", other.log());
    assert_eq!(count(&other, EVENT_RUNS), 1.0);
    let s = state();
    assert!(s["events"]["pending"].is_null(), "{s}");
    assert!(s["events"]["accepted"].is_null(), "{s}");
    // Its id is still known: a redelivery is a replay.
    assert_eq!(
        deliver(&other.addr, "ev-1", &first),
        Some((200, "accepted: 0 queued, 1 seen before\n".to_string()))
    );

    // A third replica joins (the other leads); dnsmasq breaks again.
    let third = Daemon::start(&cluster.url(prefix, ttl), &jobs);
    let deadline = Instant::now() + Duration::from_secs(30);
    while third.leads() != Some(false) {
        assert!(Instant::now() < deadline, "{}", third.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    break_dnsmasq(&lab);
    let second = crate::triggers::payload(
        "ROUTER.HEALTH.CHECKS",
        &router,
        "dnsmasq: service not running (again)",
    );
    let mut other = other;
    assert_eq!(
        deliver(&other.addr, "ev-2", &second),
        Some((200, "accepted: 1 queued, 0 seen before\n".to_string()))
    );
    // Its batch opens (kept in etcd, the event's mark cleared in the same write), and waits.
    let deadline = Instant::now() + Duration::from_secs(4);
    let waiting = loop {
        let s = state();
        if let Some(p) = s["events"]["pending"].as_array().filter(|p| !p.is_empty()) {
            assert!(s["events"]["accepted"].is_null(), "{s}");
            break p.clone();
        }
        assert!(Instant::now() < deadline, "no waiting batch: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0]["job"], "dns");
    assert_eq!(waiting[0]["limit"], "r-930-VM");
    assert_eq!(
        waiting[0]["params"],
        serde_json::json!([["vpc", "web-vpc"]])
    );
    assert_eq!(waiting[0]["about"], "ROUTER.HEALTH.CHECKS ev-2");
    let o = third
        .machine
        .command(&["daemon", "status"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        shown.contains(&format!(
            "  waiting:      a batch of events since {} (first ROUTER.HEALTH.CHECKS ev-2, limit r-930-VM)\n",
            waiting[0]["first"].as_str().unwrap()
        )),
        "{shown}"
    );
    // kill -9 while it waits: the third replica runs it at once on taking over.
    let took = kill_and_take_over(&mut other, &third, ttl);
    let end = fixed_by(&third, 2, &lab, state);
    assert_eq!(end["status"], "ok", "{end}");
    assert!(third.log().contains(RECOVERED_BATCH), "{}", third.log());
    assert_eq!(started_by(&third), ["ROUTER.HEALTH.CHECKS ev-2"]);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(third.applies(), 1, "one fix: {}", third.log());
    assert_eq!(other.applies(), 1, "the killed leader's fix was ev-1's");
    assert_eq!(count(&third, EVENT_RUNS), 1.0);
    let s = state();
    assert!(s["events"]["pending"].is_null(), "{s}");
    assert_eq!(
        s["jobs"]["dns"]["targets"]["r-930-VM"]["fixes"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{s}"
    );
    eprintln!(
        "first kill: ev-1 was kept {}; second takeover {took:?}",
        if as_event {
            "as an event not yet in a batch"
        } else {
            "in its waiting batch"
        }
    );
    drop(leader);
    lab.stop();
}
