//! The floor for the benchmarks: the least any SSH tool must do for a workload, written directly
//! on russh with none of remedy's engine. One connection per host (host key checked against the
//! fingerprint the bench recorded, public-key auth), a host behind a jump host reached through a
//! `direct-tcpip` channel of the jump host's own connection (made once, shared, as remedy's pool
//! does), then the workload's commands as exec channels one after another. At most
//! `--concurrency` hosts at once.
//!
//!   ssh-floor --hosts hosts.txt --key id_ed25519 [--concurrency 100]
//!             [--workload fleet --out-dir DIR | --workload sim --path FILE [--dry-run]]
//!
//! Workloads, each as its playbook does it:
//! - `fleet` (bench/fleet.py, bench/workload/fleet.yml): read, pipe, write the read's output
//!   under DIR, stat, and a command run only when the stat says the file is not empty.
//! - `sim` (bench/simzone.py, bench/workload/sim-fleet.yml): `hostname`, a probe for FILE, the
//!   `file` module's fix of its mode to 0644 (its stat, `chmod`, its stat again to confirm; with
//!   `--dry-run` only the first stat), a stat of the mode, and a command run only when the mode
//!   is 644.
//!
//! `hosts.txt` has one host per line: `NAME ADDRESS PORT SHA256:FINGERPRINT [via=JUMPNAME]`,
//! the jump host being another line of the file. Prints one JSON line
//! (`{"hosts":N,"ok":N,"wall_s":...}`) and exits 1 if any host failed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use russh::client::{self, Config, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::sync::{OnceCell, Semaphore};

struct Host {
    name: String,
    address: String,
    port: u16,
    fingerprint: String,
    via: Option<String>,
}

struct Pinned {
    fingerprint: String,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(matches!(key, PublicKeyOrCertificate::PublicKey { key, .. }
            if key.fingerprint(HashAlg::Sha256).to_string() == self.fingerprint))
    }
}

type Conn = Arc<Handle<Pinned>>;

/// What every host's task shares: the hosts by name, and each host's connection, made once.
struct Fleet {
    hosts: HashMap<String, Arc<Host>>,
    conns: HashMap<String, OnceCell<Conn>>,
    key: Arc<PrivateKey>,
    config: Arc<Config>,
}

struct Output {
    rc: Option<u32>,
    stdout: String,
}

async fn exec(handle: &Handle<Pinned>, command: &str) -> Result<Output, String> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| format!("open channel: {e}"))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let mut stdout = Vec::new();
    let mut rc = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => rc = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(Output {
        rc,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
    })
}

fn ok(out: Output, what: &str) -> Result<Output, String> {
    match out.rc {
        Some(0) => Ok(out),
        rc => Err(format!("{what}: exit {rc:?}")),
    }
}

/// Single-quotes `s` for the remote shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Fleet {
    /// The host's authenticated connection: made on first use (through its jump host's, for a
    /// host behind one), then shared.
    async fn conn(&self, name: &str) -> Result<Conn, String> {
        let host = self.hosts.get(name).ok_or(format!("no host {name}"))?;
        self.conns[name]
            .get_or_try_init(|| async {
                let handler = Pinned {
                    fingerprint: host.fingerprint.clone(),
                };
                let mut handle = match &host.via {
                    None => {
                        client::connect(
                            self.config.clone(),
                            (host.address.as_str(), host.port),
                            handler,
                        )
                        .await
                    }
                    Some(jump) => {
                        let jump = Box::pin(self.conn(jump)).await?;
                        let channel = jump
                            .channel_open_direct_tcpip(
                                host.address.as_str(),
                                host.port.into(),
                                "127.0.0.1",
                                0,
                            )
                            .await
                            .map_err(|e| format!("direct-tcpip: {e}"))?;
                        client::connect_stream(self.config.clone(), channel.into_stream(), handler)
                            .await
                    }
                }
                .map_err(|e| format!("connect: {e}"))?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| format!("auth: {e}"))?
                    .flatten();
                let auth = handle
                    .authenticate_publickey(
                        "root",
                        PrivateKeyWithHashAlg::new(self.key.clone(), hash),
                    )
                    .await
                    .map_err(|e| format!("auth: {e}"))?;
                if !auth.success() {
                    return Err("public key refused".to_string());
                }
                Ok(Arc::new(handle))
            })
            .await
            .cloned()
    }
}

/// bench/workload/fleet.yml.
async fn fleet_workload(handle: &Handle<Pinned>, name: &str, out_dir: &str) -> Result<(), String> {
    let dir = format!("{out_dir}/{name}");
    let file = format!("{dir}/state");
    let read = ok(exec(handle, "cat /etc/hostname").await?, "read")?;
    ok(
        exec(handle, "cat /proc/loadavg | cut -d' ' -f1-3").await?,
        "pipe",
    )?;
    let write = format!(
        "mkdir -p {} && printf '%s\\n' {} > {}",
        quote(&dir),
        quote(read.stdout.trim_end()),
        quote(&file)
    );
    ok(exec(handle, &write).await?, "write")?;
    let stat = ok(
        exec(handle, &format!("stat -c %s {}", quote(&file))).await?,
        "stat",
    )?;
    if stat.stdout.trim().parse::<u64>().unwrap_or(0) > 0 {
        ok(exec(handle, "echo size-ok").await?, "conditional")?;
    }
    Ok(())
}

/// bench/workload/sim-fleet.yml, with the `file` module's commands.
async fn sim(handle: &Handle<Pinned>, path: &str, dry_run: bool) -> Result<(), String> {
    ok(exec(handle, "hostname").await?, "read")?;
    let probe = ok(
        exec(
            handle,
            &format!("test -s {path} && echo present || echo absent"),
        )
        .await?,
        "probe",
    )?;
    if probe.stdout.trim() == "present" {
        let check = format!("stat -L -c '%a %U %G %u %g' -- {}", quote(path));
        let before = ok(exec(handle, &check).await?, "fix: stat")?;
        let mode = before.stdout.split_whitespace().next().unwrap_or("");
        if mode != "644" && !dry_run {
            ok(
                exec(handle, &format!("chmod 0644 -- {}", quote(path))).await?,
                "fix: chmod",
            )?;
            let after = ok(exec(handle, &check).await?, "fix: stat after")?;
            if !after.stdout.starts_with("644 ") {
                return Err(format!("fix did not take: {}", after.stdout.trim()));
            }
        }
    }
    let mode = ok(
        exec(handle, &format!("stat -c %a {}", quote(path))).await?,
        "mode",
    )?;
    if mode.stdout.trim() == "644" {
        ok(exec(handle, "echo mode-ok").await?, "conditional")?;
    }
    Ok(())
}

enum Workload {
    Fleet { out_dir: String },
    Sim { path: String, dry_run: bool },
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ssh-floor --hosts FILE --key FILE [--concurrency N] \
                 [--workload fleet --out-dir DIR | --workload sim --path FILE [--dry-run]]";
    let fail = |why: &str| -> ! {
        eprintln!("{why}\n{usage}");
        std::process::exit(2);
    };
    let (Some(hosts), Some(key)) = (arg(&args, "--hosts"), arg(&args, "--key")) else {
        fail("--hosts and --key are required");
    };
    let workload = match arg(&args, "--workload").as_deref().unwrap_or("fleet") {
        "fleet" => Workload::Fleet {
            out_dir: arg(&args, "--out-dir").unwrap_or_else(|| fail("fleet needs --out-dir")),
        },
        "sim" => Workload::Sim {
            path: arg(&args, "--path").unwrap_or_else(|| fail("sim needs --path")),
            dry_run: args.iter().any(|a| a == "--dry-run"),
        },
        other => fail(&format!("unknown workload {other}")),
    };
    let concurrency: usize = arg(&args, "--concurrency")
        .map(|c| c.parse().expect("--concurrency is a number"))
        .unwrap_or(100);
    let text = std::fs::read_to_string(&hosts).unwrap_or_else(|e| panic!("{hosts}: {e}"));
    let mut order = Vec::new();
    let mut by_name = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let via = f.get(4).map(|v| {
            v.strip_prefix("via=")
                .unwrap_or_else(|| panic!("{line}: the fifth field is via=JUMPNAME"))
                .to_string()
        });
        assert!(
            f.len() == 4 || f.len() == 5,
            "{line}: NAME ADDRESS PORT FINGERPRINT [via=JUMPNAME]"
        );
        let host = Arc::new(Host {
            name: f[0].into(),
            address: f[1].into(),
            port: f[2].parse().expect("port"),
            fingerprint: f[3].into(),
            via,
        });
        order.push(host.name.clone());
        by_name.insert(host.name.clone(), host);
    }
    // Jump hosts keep their connection to the end; other hosts disconnect when done.
    let jumps: HashSet<String> = by_name.values().filter_map(|h| h.via.clone()).collect();
    for jump in &jumps {
        assert!(
            by_name.contains_key(jump),
            "jump host {jump} is not in {hosts}"
        );
    }
    let fleet = Arc::new(Fleet {
        conns: by_name
            .keys()
            .map(|n| (n.clone(), OnceCell::new()))
            .collect(),
        hosts: by_name,
        key: Arc::new(
            russh::keys::load_secret_key(PathBuf::from(&key), None)
                .unwrap_or_else(|e| panic!("{key}: {e}")),
        ),
        config: Arc::new(Config {
            nodelay: true,
            ..Config::default()
        }),
    });
    let workload = Arc::new(workload);
    let jumps = Arc::new(jumps);

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for name in &order {
        let (fleet, workload, jumps, gate) =
            (fleet.clone(), workload.clone(), jumps.clone(), gate.clone());
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let done = async {
                let handle = fleet.conn(&name).await?;
                match &*workload {
                    Workload::Fleet { out_dir } => fleet_workload(&handle, &name, out_dir).await?,
                    Workload::Sim { path, dry_run } => sim(&handle, path, *dry_run).await?,
                }
                if !jumps.contains(&name) {
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "", "en")
                        .await;
                }
                Ok::<(), String>(())
            };
            done.await.map_err(|e| format!("{name}: {e}"))
        }));
    }
    let mut failed = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.expect("task") {
            failed.push(e);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    for e in &failed {
        eprintln!("{e}");
    }
    println!(
        "{{\"hosts\":{},\"ok\":{},\"wall_s\":{wall:.3}}}",
        order.len(),
        order.len() - failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
