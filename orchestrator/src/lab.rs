//! `remedy lab`: the simulated CloudStack zone in the foreground, so an operator can try a
//! playbook, `remedy api`, `remedy exec`, cmk or any other CloudStack client against it. It
//! serves the API and the zone's SSH hosts (hypervisors and the management server on
//! 127.0.0.1, system VMs only through their hypervisor), prints the endpoint and its lab-only
//! key pair, and can write an inventory pointing at it all: the API secret in a 0600 file beside
//! it (referenced as `{ file: ... }`, since inventories never hold inline secrets), a lab-only
//! SSH client key, and every host's key pinned by fingerprint. It stops on Ctrl-C or SIGTERM.
//!
//! It listens on loopback only: the simulator's `/sim/*` endpoints (state, faults) take no
//! credentials.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cloudstack_sim::server::{Sim, SimConfig};
use cloudstack_sim::ssh::SshSim;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

use crate::transport::ssh::known_hosts::fingerprint;

use crate::error::{Error, ExitCode};

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// A shipped scenario (healthy, vr-backup-loop, ...) or a scenario file.
    #[arg(long, default_value = "healthy")]
    pub scenario: String,
    /// Where to listen; loopback addresses only.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Write an inventory pointing at the running zone (its secret goes to PATH.secret).
    #[arg(long, value_name = "PATH")]
    pub write_inventory: Option<PathBuf>,
    /// List the shipped scenarios and exit.
    #[arg(long)]
    pub list_scenarios: bool,
}

pub async fn run(args: LabArgs) -> ExitCode {
    let fail = |e: Error| {
        eprint!("{}", e.render(false));
        e.exit_code()
    };
    if args.list_scenarios {
        for name in cloudstack_sim::scenario::Scenario::builtin_names() {
            let s = cloudstack_sim::scenario::Scenario::builtin(name);
            let about = s.map(|s| s.description).unwrap_or_default();
            println!("{name:<18} {}", about.lines().next().unwrap_or(""));
        }
        return ExitCode::Success;
    }
    if !args.listen.ip().is_loopback() {
        return fail(Error::invalid(format!(
            "--listen {}: the lab listens on loopback only (127.0.0.0/8 or ::1): its /sim/* \
             endpoints take no credentials",
            args.listen
        )));
    }
    let scenario = match crate::cloudstack::scenario(&args.scenario) {
        Ok(s) => s,
        Err(e) => return fail(Error::invalid(format!("--scenario: {e}"))),
    };
    let name = scenario.name.clone();
    let sim = match Sim::start(SimConfig {
        scenario,
        listen: args.listen,
        api_key: None,
        secret_key: None,
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return fail(Error::Other(format!(
                "cannot listen on {}: {e} (pick another port with --listen)",
                args.listen
            )))
        }
    };
    let client_key = match PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519) {
        Ok(k) => k,
        Err(e) => return fail(Error::Other(format!("cannot make an SSH key: {e}"))),
    };
    let mut ssh = match SshSim::start(sim.zone_handle(), client_key.public_key().clone()).await {
        Ok(s) => s,
        Err(e) => return fail(Error::Other(format!("cannot start the SSH hosts: {e}"))),
    };
    let base = format!("http://{}", sim.addr());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "remedy lab: simulated CloudStack zone, scenario {name}"
    );
    let _ = writeln!(out, "  API endpoint  {}", sim.endpoint());
    let _ = writeln!(out, "  API key       {}", sim.api_key());
    let _ = writeln!(out, "  secret key    {}", sim.secret_key());
    let _ = writeln!(
        out,
        "                (lab-only credentials, new at every start)"
    );
    let _ = writeln!(out, "  zone state    GET {base}/sim/state");
    let _ = writeln!(out, "  faults        GET/PUT {base}/sim/faults (JSON)");
    for machine in ssh.listening() {
        if let Some(addr) = ssh.addr(&machine) {
            let _ = writeln!(out, "  ssh           {machine:<8} root@{addr}");
        }
    }
    let _ = writeln!(
        out,
        "                (system VMs: through their hypervisor, root@<linklocalip>:3922)"
    );
    if let Some(path) = &args.write_inventory {
        match write_inventory(path, &sim, &ssh, &client_key, &name) {
            Ok(secret) => {
                let _ = writeln!(
                    out,
                    "  inventory     {} (secret key in {})",
                    path.display(),
                    secret.display()
                );
                let _ = writeln!(
                    out,
                    "  try           remedy api -i {} listRouters --fields name,state,redundantstate",
                    path.display()
                );
            }
            Err(e) => return fail(Error::Other(e)),
        }
    }
    let _ = writeln!(out, "Ctrl-C stops the lab.");
    let _ = out.flush();
    drop(out);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => return fail(Error::Other(format!("cannot wait for SIGTERM: {e}"))),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ssh.shutdown();
    sim.shutdown().await;
    eprintln!("remedy lab: stopped");
    ExitCode::Success
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Writes the inventory and, beside it, the API secret and the SSH client key (mode 0600).
/// Returns the secret's path.
fn write_inventory(
    path: &Path,
    sim: &Sim,
    ssh: &SshSim,
    client_key: &PrivateKey,
    scenario: &str,
) -> Result<PathBuf, String> {
    let secret_path = PathBuf::from(format!("{}.secret", path.display()));
    write_private(&secret_path, &format!("{}\n", sim.secret_key()))?;
    let key_path = PathBuf::from(format!("{}.id_ed25519", path.display()));
    let key_text = client_key
        .to_openssh(LineEnding::LF)
        .map_err(|e| format!("SSH key: {e}"))?;
    write_private(&key_path, &key_text)?;
    let key_file = key_path.display().to_string();
    let pin = |machine: &str| fingerprint(&ssh.host_key(machine));
    let mut hosts = String::new();
    for machine in ssh.listening() {
        let Some(addr) = ssh.addr(&machine) else {
            continue;
        };
        let group = if machine.starts_with("mgmt") {
            "management"
        } else {
            "hypervisors"
        };
        hosts.push_str(&format!(
            "        {machine}: {{ ansible_host: \"{}\", ansible_port: {}, lab_group: {group}, remedy_host_key_policy: pinned, remedy_host_key_fingerprint: \"{}\" }}\n",
            addr.ip(),
            addr.port(),
            pin(&machine)
        ));
    }
    let vms: Vec<(String, String, String, bool)> = sim.with_zone(|z| {
        let w = z.world();
        w.vms
            .iter()
            .filter(|v| v.live() && (v.vpcid().is_some() || v.systemvmtype().is_some()))
            .map(|v| {
                let hv = w
                    .host(&v.hostid)
                    .map(|h| h.name.clone())
                    .unwrap_or_default();
                (
                    v.name.clone(),
                    v.linklocalip.clone(),
                    hv,
                    v.vpcid().is_some(),
                )
            })
            .collect()
    });
    let mut routers = String::new();
    let mut systemvms = String::new();
    for (name, ll, hv, is_router) in vms {
        let line = format!(
            "        {name}: {{ ansible_host: \"{ll}\", ansible_port: {}, remedy_jump: {hv}, remedy_host_key_policy: pinned, remedy_host_key_fingerprint: \"{}\" }}\n",
            cloudstack_sim::ssh::SYSTEM_VM_PORT,
            pin(&name)
        );
        if is_router {
            routers.push_str(&line);
        } else {
            systemvms.push_str(&line);
        }
    }
    let split = |group: &str| -> String {
        hosts
            .lines()
            .filter(|l| l.contains(&format!("lab_group: {group}")))
            .map(|l| format!("{}\n", l.replace(&format!(" lab_group: {group},"), "")))
            .collect()
    };
    let text = format!(
        "# Written by `remedy lab --scenario {scenario}`: the simulated zone at {endpoint}.\n\
         # Valid while that lab runs; its credentials and host keys are lab-only and change at\n\
         # every start. Host keys are pinned by fingerprint; system VMs are reached through the\n\
         # hypervisor they run on, as in a real zone.\n\
         all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {key_file}\n    \
         remedy_cloudstack:\n      endpoint: {endpoint}\n      \
         api_key: {key}\n      secret_key: {{ file: {secret} }}\n  children:\n    \
         hypervisors:\n      hosts:\n{hv}    management:\n      hosts:\n{mgmt}    \
         routers:\n      hosts:\n{routers}    systemvms:\n      hosts:\n{systemvms}",
        endpoint = sim.endpoint(),
        key = sim.api_key(),
        secret = file_name(&secret_path),
        hv = split("hypervisors"),
        mgmt = split("management"),
    );
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret_path)
}
