//! `remedy lab`: the simulated CloudStack zone in the foreground, so an operator can try a
//! playbook, `remedy api`, `remedy exec`, cmk or any other CloudStack client against it. It
//! serves the API and the zone's SSH hosts (hypervisors and the management server on
//! 127.0.0.1, system VMs only through their hypervisor), prints the endpoint and its lab-only
//! key pair, and can write an inventory pointing at it all ([`inventory_text`]): the CloudStack
//! inventory source on the lab's endpoint (so the groups and `cs` variables are the API's, as
//! on a real zone), the API secret in a 0600 file beside it (referenced as `{ file: ... }`,
//! since inventories never hold inline secrets), a lab-only SSH client key, the loopback ports
//! the simulated machines listen on, and host key checks: pinned fingerprints for the machines
//! that listen, and the lab's own `known_hosts` for system VMs. It stops on Ctrl-C or SIGTERM.
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
    #[arg(long, default_value = "healthy", env = crate::inventory::LAB_SCENARIO_ENV)]
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

/// Sends the simulator's warnings to stderr, one plain line each (such as
/// `WARN not implemented: listFoo` for an API the zone lacks); `RUST_LOG` can say more.
fn log_to_stderr() {
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cloudstack_sim=warn".into()),
        )
        .try_init();
}

pub async fn run(args: LabArgs) -> ExitCode {
    log_to_stderr();
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
    let _ = writeln!(
        out,
        "  faults        GET/PUT/PATCH/DELETE {base}/sim/faults (JSON; SSH faults too)"
    );
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
            Ok(files) => {
                let _ = writeln!(
                    out,
                    "  inventory     {} (secret key in {})",
                    path.display(),
                    files.secret.display()
                );
                let _ = writeln!(
                    out,
                    "  known hosts   {} (the lab's own; system VMs deployed later are added)",
                    files.known_hosts.display()
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

/// `path` made absolute (its directory resolved), so that what the inventory says works
/// whatever the current directory is later.
fn absolute(path: &Path) -> Result<PathBuf, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    Ok(dir.join(name))
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The files `--write-inventory PATH` writes, all absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabFiles {
    /// The inventory itself.
    pub inventory: PathBuf,
    /// `PATH.secret`: the API secret key (0600).
    pub secret: PathBuf,
    /// `PATH.id_ed25519`: the lab-only SSH client key (0600).
    pub client_key: PathBuf,
    /// `PATH.known_hosts`: the lab's own `known_hosts` (0600), never `~/.ssh/known_hosts`.
    pub known_hosts: PathBuf,
}

impl LabFiles {
    fn beside(inventory: &Path) -> Result<LabFiles, String> {
        let inventory = absolute(inventory)?;
        let with = |suffix: &str| PathBuf::from(format!("{}.{suffix}", inventory.display()));
        Ok(LabFiles {
            secret: with("secret"),
            client_key: with("id_ed25519"),
            known_hosts: with("known_hosts"),
            inventory,
        })
    }
}

/// What the written inventory says about the running lab.
#[derive(Debug, Clone)]
pub struct LabInventory<'a> {
    pub scenario: &'a str,
    pub endpoint: &'a str,
    pub api_key: &'a str,
    /// The machines that listen (hypervisors, the management server): name, address and the
    /// fingerprint of their host key.
    pub listening: Vec<(String, SocketAddr, String)>,
}

/// The inventory text. The machines and their groups come from the zone's API
/// (`remedy_cloudstack_inventory`, whose hosts the file's own entries override key by key); the
/// file adds only what the API cannot say: where the simulated hypervisors and management
/// server listen (loopback ports), the lab-only client key, and how host keys are checked.
/// Machines that listen are pinned by fingerprint. System VMs are `accept-new` against the
/// lab's own `known_hosts`, which already holds the key of every system VM running when it was
/// written: those are checked as strictly as a pin (a different key is refused), and a system
/// VM CloudStack deploys later (a recreated SSVM, routers replaced by a cleanup restart) is
/// recorded on first contact, as docs/ssh.md recommends for a real zone.
pub fn inventory_text(lab: &LabInventory<'_>, files: &LabFiles) -> String {
    let path = |p: &Path| quoted(&p.display().to_string());
    let mut hosts = String::new();
    for (name, addr, fingerprint) in &lab.listening {
        hosts.push_str(&format!(
            "    {name}: {{ ansible_host: \"{}\", ansible_port: {}, remedy_host_key_policy: pinned, remedy_host_key_fingerprint: \"{fingerprint}\" }}\n",
            addr.ip(),
            addr.port(),
        ));
    }
    format!(
        "# Written by `remedy lab --scenario {scenario}`: the simulated zone at {endpoint}.\n\
         # Valid while that lab runs; its credentials and host keys are lab-only and change at\n\
         # every start. The machines and their groups (hypervisors, management, routers, ssvm,\n\
         # cpvm, system_vms, vpc_*, redundant_*, zone_*, ...) and each host's `cs` variable come\n\
         # from the zone's API (remedy_cloudstack_inventory). This file only adds where the\n\
         # simulated machines listen (127.0.0.1), the lab-only client key, and host key checks:\n\
         # the machines below are pinned by fingerprint; system VMs, reached through their\n\
         # hypervisor, are accept-new against the lab's own known_hosts file, which already\n\
         # holds the keys of those running now (one deployed later is recorded on first contact).\n\
         all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {key}\n    \
         remedy_known_hosts_file: {known_hosts}\n    \
         remedy_cloudstack:\n      endpoint: {endpoint}\n      \
         api_key: {api_key}\n      secret_key: {{ file: {secret} }}\n    \
         remedy_cloudstack_inventory:\n      system_vm_access: tunnel\n      \
         system_vm_key: {key}\n  hosts:\n{hosts}  children:\n    system_vms:\n      vars:\n        \
         remedy_host_key_policy: accept-new\n",
        scenario = lab.scenario,
        endpoint = lab.endpoint,
        api_key = quoted(lab.api_key),
        key = path(&files.client_key),
        known_hosts = path(&files.known_hosts),
        secret = path(&files.secret),
    )
}

/// Writes the inventory and, beside it, the API secret, the SSH client key and the lab's
/// `known_hosts` (each mode 0600). Returns the files' paths.
fn write_inventory(
    path: &Path,
    sim: &Sim,
    ssh: &SshSim,
    client_key: &PrivateKey,
    scenario: &str,
) -> Result<LabFiles, String> {
    let files = LabFiles::beside(path)?;
    write_private(&files.secret, &format!("{}\n", sim.secret_key()))?;
    let key_text = client_key
        .to_openssh(LineEnding::LF)
        .map_err(|e| format!("SSH key: {e}"))?;
    write_private(&files.client_key, &key_text)?;
    let mut known = String::from(
        "# remedy lab: the simulated machines' host keys (lab-only, new at every start)\n",
    );
    for line in ssh.known_hosts_lines() {
        known.push_str(&line);
        known.push('\n');
    }
    write_private(&files.known_hosts, &known)?;
    let listening = ssh
        .listening()
        .into_iter()
        .filter_map(|m| {
            let addr = ssh.addr(&m)?;
            let fp = fingerprint(&ssh.host_key(&m));
            Some((m, addr, fp))
        })
        .collect();
    let endpoint = sim.endpoint();
    let text = inventory_text(
        &LabInventory {
            scenario,
            endpoint: &endpoint,
            api_key: sim.api_key(),
            listening,
        },
        &files,
    );
    std::fs::write(&files.inventory, text)
        .map_err(|e| format!("{}: {e}", files.inventory.display()))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudstack::inventory::{generate, Snapshot};
    use crate::inventory::{HostKeyPolicy, Inventory};
    use serde_json::json;

    const FP: &str = "SHA256:7/BDeaifYgYrE7Pe2BdVxs4E8Wfjz+r1DjdkP/h4h7g";

    /// The written file over what the API says: the API's groups and `cs` variables, the
    /// file's addresses, key and host key checks; no group of its own.
    #[test]
    fn the_written_inventory_takes_its_machines_from_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let files = LabFiles::beside(&dir.path().join("lab live.yml")).unwrap();
        assert!(files.inventory.is_absolute());
        assert_eq!(
            files.known_hosts.file_name().unwrap(),
            "lab live.yml.known_hosts"
        );
        let text = inventory_text(
            &LabInventory {
                scenario: "vr-backup-loop",
                endpoint: "http://127.0.0.1:8080/client/api",
                api_key: "lab-key",
                listening: vec![
                    ("kvm01".into(), "127.0.0.1:4001".parse().unwrap(), FP.into()),
                    ("mgmt1".into(), "127.0.0.1:4002".parse().unwrap(), FP.into()),
                ],
            },
            &files,
        );
        std::fs::write(&files.inventory, &text).unwrap();
        let paths = [files.inventory.clone()];
        let files_only = Inventory::load(&paths).unwrap();
        let spec = files_only.cloudstack_source().unwrap().clone();
        let snap = Snapshot {
            hosts: vec![
                json!({"id": "h1", "name": "kvm01", "ipaddress": "10.0.0.11",
                               "hypervisor": "KVM", "zonename": "Zone-1"}),
            ],
            routers: vec![
                json!({"id": "r1", "name": "r-10-VM", "linklocalip": "169.254.3.10",
                                 "hostid": "h1", "vpcname": "web-vpc", "zonename": "Zone-1"}),
            ],
            system_vms: vec![json!({"id": "s1", "name": "s-1-VM",
                                    "systemvmtype": "secondarystoragevm",
                                    "linklocalip": "169.254.0.5", "hostid": "h1"})],
            management: vec![json!({"id": "m1", "name": "mgmt1", "serviceip": "10.0.0.2"})],
        };
        let generated = generate(&spec, &snap);
        let inv = Inventory::load_with_generated(&paths, Some(&generated.to_yaml())).unwrap();
        let mut groups = inv.group_names();
        groups.sort();
        for g in [
            "hypervisors",
            "management",
            "routers",
            "ssvm",
            "system_vms",
            "vpc_web_vpc",
        ] {
            assert!(groups.contains(&g), "{g} in {groups:?}");
        }
        assert!(!groups.contains(&"systemvms"), "{groups:?}");

        let kvm = inv.host("kvm01").unwrap();
        assert_eq!(
            (kvm.conn.address.as_str(), kvm.conn.port),
            ("127.0.0.1", 4001)
        );
        assert_eq!(kvm.conn.host_key, HostKeyPolicy::Pinned(FP.into()));
        assert_eq!(kvm.vars["cs"]["ipaddress"], "10.0.0.11");
        assert_eq!(kvm.conn.key_file.as_ref(), Some(&files.client_key));
        let mgmt = inv.host("mgmt1").unwrap();
        assert_eq!(mgmt.conn.port, 4002);
        assert_eq!(mgmt.conn.host_key, HostKeyPolicy::Pinned(FP.into()));

        for (vm, ll) in [("r-10-VM", "169.254.3.10"), ("s-1-VM", "169.254.0.5")] {
            let h = inv.host(vm).unwrap();
            assert_eq!(h.conn.address, ll);
            assert_eq!(h.conn.port, 3922);
            assert_eq!(h.conn.jump, ["kvm01"]);
            assert_eq!(h.conn.key_file.as_ref(), Some(&files.client_key));
            assert_eq!(h.conn.host_key, HostKeyPolicy::AcceptNew, "{vm}");
            assert_eq!(h.conn.known_hosts_file.as_ref(), Some(&files.known_hosts));
        }
        assert_eq!(
            inv.host("r-10-VM").unwrap().vars["cs"]["vpcname"],
            "web-vpc"
        );
        // The secret is referenced by its absolute path, never written inline.
        assert!(text.contains(&format!(
            "secret_key: {{ file: {} }}",
            quoted(&files.secret.display().to_string())
        )));
    }
}
