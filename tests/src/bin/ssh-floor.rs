//! The floor for `bench/fleet.py`: the least any SSH tool must do for the fleet workload, written
//! directly on russh with none of remedy's engine. One connection per host (host key checked
//! against the fingerprint the bench recorded, public-key auth), then the workload's five
//! commands as exec channels one after another, the write using the read's output and the last
//! command run only when the stat says the file is not empty, as the playbooks do. At most
//! `--concurrency` hosts at once.
//!
//!   ssh-floor --hosts hosts.txt --key id_ed25519 --out-dir DIR [--concurrency 100]
//!
//! `hosts.txt` has one host per line: `NAME ADDRESS PORT SHA256:FINGERPRINT`. Prints one JSON
//! line (`{"hosts":N,"ok":N,"wall_s":...}`) and exits 1 if any host failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use russh::client::{self, Config, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::sync::Semaphore;

struct Host {
    name: String,
    address: String,
    port: u16,
    fingerprint: String,
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

async fn one_host(
    host: &Host,
    key: Arc<russh::keys::PrivateKey>,
    out_dir: &str,
    config: Arc<Config>,
) -> Result<(), String> {
    let handler = Pinned {
        fingerprint: host.fingerprint.clone(),
    };
    let mut handle = client::connect(config, (host.address.as_str(), host.port), handler)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| format!("auth: {e}"))?
        .flatten();
    let auth = handle
        .authenticate_publickey("root", PrivateKeyWithHashAlg::new(key, hash))
        .await
        .map_err(|e| format!("auth: {e}"))?;
    if !auth.success() {
        return Err("public key refused".into());
    }
    let dir = format!("{out_dir}/{}", host.name);
    let file = format!("{dir}/state");
    let read = ok(exec(&handle, "cat /etc/hostname").await?, "read")?;
    ok(
        exec(&handle, "cat /proc/loadavg | cut -d' ' -f1-3").await?,
        "pipe",
    )?;
    let write = format!(
        "mkdir -p {} && printf '%s\\n' {} > {}",
        quote(&dir),
        quote(read.stdout.trim_end()),
        quote(&file)
    );
    ok(exec(&handle, &write).await?, "write")?;
    let stat = ok(
        exec(&handle, &format!("stat -c %s {}", quote(&file))).await?,
        "stat",
    )?;
    if stat.stdout.trim().parse::<u64>().unwrap_or(0) > 0 {
        ok(exec(&handle, "echo size-ok").await?, "conditional")?;
    }
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    Ok(())
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ssh-floor --hosts FILE --key FILE --out-dir DIR [--concurrency N]";
    let (Some(hosts), Some(key), Some(out_dir)) = (
        arg(&args, "--hosts"),
        arg(&args, "--key"),
        arg(&args, "--out-dir"),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let concurrency: usize = arg(&args, "--concurrency")
        .map(|c| c.parse().expect("--concurrency is a number"))
        .unwrap_or(100);
    let text = std::fs::read_to_string(&hosts).unwrap_or_else(|e| panic!("{hosts}: {e}"));
    let hosts: Vec<Arc<Host>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 4, "{line}: NAME ADDRESS PORT FINGERPRINT");
            Arc::new(Host {
                name: f[0].into(),
                address: f[1].into(),
                port: f[2].parse().expect("port"),
                fingerprint: f[3].into(),
            })
        })
        .collect();
    let key = Arc::new(
        russh::keys::load_secret_key(PathBuf::from(&key), None)
            .unwrap_or_else(|e| panic!("{key}: {e}")),
    );
    let config = Arc::new(Config {
        nodelay: true,
        ..Config::default()
    });

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for host in &hosts {
        let (host, key, config, gate) = (host.clone(), key.clone(), config.clone(), gate.clone());
        let out_dir = out_dir.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            one_host(&host, key, &out_dir, config)
                .await
                .map_err(|e| format!("{}: {e}", host.name))
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
        hosts.len(),
        hosts.len() - failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
