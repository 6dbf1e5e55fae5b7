//! SSH micro-benchmark against the real lab (`remedy_tests::netlab`): connect + authenticate,
//! one command on a reused connection, and a router through the hypervisor against the
//! hypervisor itself; OpenSSH's `ssh` (a new connection per command, as Ansible without
//! ControlPersist) alongside as the floor. Not a test: run it with `bench/ssh.sh`.
//!
//! Every figure is the median (and 90th percentile) of `ROUNDS` rounds, measured from the
//! controller's namespace, with the two sides interleaved so machine noise hits both.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remedy::inventory::Inventory;
use remedy::transport::ssh::SshTransport;
use remedy::transport::{Access, Action, ActionResult, Transport as _};
use remedy_tests::netlab::{self, NetLab, Options, HV_IP, ROUTERS, SYSTEM_VM_PORT};
use remedy_tests::ssh::options;

fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30)
}

async fn once(t: &SshTransport, inv: &Inventory, host: &str, cmd: &str) -> Duration {
    let started = Instant::now();
    let h = inv.host(host).expect("host");
    match t
        .run(
            h,
            &Action::ssh(cmd),
            Access::ReadOnly,
            Duration::from_secs(30),
        )
        .await
    {
        Ok(ActionResult::Ssh(out)) if out.rc == Some(0) => started.elapsed(),
        other => panic!("{host}: {cmd}: {other:?}"),
    }
}

/// OpenSSH: one new connection, one command.
fn openssh(lab: &NetLab, config: &Path, host: &str, jump: bool) -> Duration {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.netns("ctl"), "ssh", "-F"])
        .arg(config);
    if jump {
        cmd.args(["-J", "hv1"]);
    }
    cmd.args([host, "true"]);
    let started = Instant::now();
    let out = cmd.output().expect("ssh");
    assert!(
        out.status.success(),
        "ssh {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn ssh_config(lab: &NetLab) -> std::path::PathBuf {
    let path = lab.dir().join("ssh_config");
    let mut text = format!(
        "Host hv1\n  HostName {HV_IP}\n  IdentityFile {}\n",
        lab.controller_key().display()
    );
    for (vr, ll) in ROUTERS {
        text.push_str(&format!(
            "Host {vr}\n  HostName {ll}\n  Port {SYSTEM_VM_PORT}\n  IdentityFile {}\n",
            lab.cloud_key().display()
        ));
    }
    text.push_str(&format!(
        "Host *\n  User root\n  IdentitiesOnly yes\n  StrictHostKeyChecking yes\n  \
         UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  BatchMode yes\n  \
         ControlMaster no\n  LogLevel ERROR\n",
        lab.known_hosts().display()
    ));
    std::fs::write(&path, text).expect("ssh_config");
    path
}

struct Stat {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Stat {
    fn new(name: &'static str) -> Stat {
        Stat {
            name,
            samples: Vec::new(),
        }
    }
    fn quantile(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i]
    }
}

fn main() {
    if let Some(why) = netlab::missing() {
        eprintln!("ssh-bench: the real lab cannot be built here: {why}");
        std::process::exit(2);
    }
    let n = rounds();
    let lab = NetLab::up(Options::default()).unwrap_or_else(|e| panic!("lab: {e}"));
    let inv = Arc::new(Inventory::from_str("lab.yml", &lab.inventory()).expect("inventory"));
    let config = ssh_config(&lab);

    let mut new_direct = Stat::new("remedy: new connection + auth + `true`, hv1 (direct)");
    let mut new_jumped = Stat::new("remedy: new connections + auth + `true`, vr1 (via hv1)");
    let mut reused_direct = Stat::new("remedy: `true` on the reused connection, hv1");
    let mut reused_jumped = Stat::new("remedy: `true` on the reused connection, vr1 (jumped)");
    let mut ssh_direct = Stat::new("OpenSSH: `ssh hv1 true` (new connection)");
    let mut ssh_jumped = Stat::new("OpenSSH: `ssh -J hv1 vr1 true` (new connections)");

    lab.block_on(|| async {
        let known = lab.known_hosts();
        // warm-up: page cache, sshd's first fork
        let t = SshTransport::new(inv.clone(), options(&known));
        once(&t, &inv, "vr1", "true").await;
        for _ in 0..n {
            let t = SshTransport::new(inv.clone(), options(&known));
            new_direct.samples.push(once(&t, &inv, "hv1", "true").await);
            let t = SshTransport::new(inv.clone(), options(&known));
            new_jumped.samples.push(once(&t, &inv, "vr1", "true").await);
        }
        let t = SshTransport::new(inv.clone(), options(&known));
        once(&t, &inv, "hv1", "true").await;
        once(&t, &inv, "vr1", "true").await;
        for _ in 0..n {
            reused_direct
                .samples
                .push(once(&t, &inv, "hv1", "true").await);
            reused_jumped
                .samples
                .push(once(&t, &inv, "vr1", "true").await);
        }
    });
    openssh(&lab, &config, "vr1", true);
    for _ in 0..n {
        ssh_direct
            .samples
            .push(openssh(&lab, &config, "hv1", false));
        ssh_jumped.samples.push(openssh(&lab, &config, "vr1", true));
    }

    println!(
        "SSH micro-benchmark, real lab {} ({n} rounds each)",
        lab.name()
    );
    println!("{:<62} {:>9} {:>9}", "", "median ms", "p90 ms");
    for s in [
        &new_direct,
        &new_jumped,
        &reused_direct,
        &reused_jumped,
        &ssh_direct,
        &ssh_jumped,
    ] {
        println!(
            "{:<62} {:>9.2} {:>9.2}",
            s.name,
            s.quantile(0.5),
            s.quantile(0.9)
        );
    }
    let ratio = |a: &Stat, b: &Stat| a.quantile(0.5) / b.quantile(0.5);
    println!();
    println!(
        "jumped / direct: new connection {:.2}x, reused {:.2}x",
        ratio(&new_jumped, &new_direct),
        ratio(&reused_jumped, &reused_direct)
    );
    println!(
        "remedy / OpenSSH, new connection: direct {:.2}x, jumped {:.2}x",
        ratio(&new_direct, &ssh_direct),
        ratio(&new_jumped, &ssh_jumped)
    );
    println!(
        "a command on remedy's reused connection / a new OpenSSH connection: direct {:.3}x, jumped {:.3}x",
        ratio(&reused_direct, &ssh_direct),
        ratio(&reused_jumped, &ssh_jumped)
    );
}
