//! `remedy lab`: the simulated CloudStack zone in the foreground, so an operator can try a
//! playbook, `remedy api`, cmk or any other CloudStack client against it. It prints the
//! endpoint and its lab-only key pair, can write an inventory pointing at it (the secret in a
//! 0600 file beside it, referenced as `{ file: ... }`, since inventories never hold inline
//! secrets), and stops on Ctrl-C or SIGTERM.
//!
//! It listens on loopback only: the simulator's `/sim/*` endpoints (state, faults) take no
//! credentials.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cloudstack_sim::server::{Sim, SimConfig};

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
    if let Some(path) = &args.write_inventory {
        match write_inventory(path, &sim, &name) {
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
    sim.shutdown().await;
    eprintln!("remedy lab: stopped");
    ExitCode::Success
}

/// Writes the inventory and, beside it, the secret (mode 0600). Returns the secret's path.
fn write_inventory(path: &Path, sim: &Sim, scenario: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let secret_path = PathBuf::from(format!("{}.secret", path.display()));
    let secret_name = secret_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&secret_path)
        .map_err(|e| format!("{}: {e}", secret_path.display()))?;
    writeln!(f, "{}", sim.secret_key()).map_err(|e| format!("{}: {e}", secret_path.display()))?;
    let text = format!(
        "# Written by `remedy lab --scenario {scenario}`: the simulated zone at {endpoint}.\n\
         # Valid while that lab runs; its credentials are lab-only and change at every start.\n\
         all:\n  vars:\n    remedy_cloudstack:\n      endpoint: {endpoint}\n      api_key: {key}\n      \
         secret_key: {{ file: {secret_name} }}\n",
        endpoint = sim.endpoint(),
        key = sim.api_key(),
    );
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret_path)
}
