//! The CloudStack API client.
//!
//! - [`sign`]: the request signature, exactly as the management server verifies it.
//! - [`reply`]: envelopes, async job records, typed errors ([`CsError`]).
//! - [`client`]: HTTP (reqwest, rustls): GET for reads with retries, POST for changes sent
//!   once, list paging, async job polling.
//! - [`cmk`]: credentials from a cloudmonkey config profile.
//!
//! [`connect`] turns the inventory's `remedy_cloudstack` into a ready [`Connection`] — for
//! `simulator:` that means starting the simulated zone in-process. The transport
//! (`transport::api`) uses it; so do `remedy api` and `remedy lab`.

pub mod client;
pub mod cmk;
pub mod inventory;
pub mod reply;
pub mod sign;

use std::path::Path;

use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};

pub use client::{Client, Credentials, Method, Options};
pub use reply::CsError;

use crate::inventory::{ApiKey, CloudStackEndpoint, CloudStackSource, Inventory};
use crate::redact::Redactor;

/// A client ready to use, and the embedded simulator behind it when the inventory asked for
/// one (it runs as long as this value lives), with its SSH hosts.
#[derive(Debug)]
pub struct Connection {
    pub client: Client,
    pub simulator: Option<Sim>,
    pub simulator_ssh: Option<EmbeddedSsh>,
}

/// The embedded simulator's SSH hosts and the lab-only client key they accept (a 0600 file
/// removed when this value is dropped).
#[derive(Debug)]
pub struct EmbeddedSsh {
    pub hosts: cloudstack_sim::ssh::SshSim,
    pub key_file: std::path::PathBuf,
}

impl EmbeddedSsh {
    async fn start(sim: &Sim) -> Result<EmbeddedSsh, String> {
        use russh::keys::ssh_key::LineEnding;
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .map_err(|e| format!("cannot make an SSH key: {e}"))?;
        let hosts = cloudstack_sim::ssh::SshSim::start(sim.zone_handle(), key.public_key().clone())
            .await
            .map_err(|e| format!("cannot start the simulated SSH hosts: {e}"))?;
        let key_file = std::env::temp_dir().join(format!(
            "remedy-sim-{}.id_ed25519",
            uuid::Uuid::new_v4().simple()
        ));
        let text = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| format!("SSH key: {e}"))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", key_file.display()))?;
        Ok(EmbeddedSsh { hosts, key_file })
    }
}

impl Drop for EmbeddedSsh {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key_file);
    }
}

/// Finds a scenario: a shipped one by name, else a scenario file.
pub fn scenario(name_or_path: &str) -> Result<Scenario, String> {
    if let Some(s) = Scenario::builtin(name_or_path) {
        return Ok(s);
    }
    let path = Path::new(name_or_path);
    if path.exists() || name_or_path.ends_with(".yml") || name_or_path.ends_with(".yaml") {
        return Scenario::load(path).map_err(|e| e.to_string());
    }
    Err(format!(
        "no scenario {name_or_path:?}: not a shipped scenario ({}) nor a file",
        Scenario::builtin_names().join(", ")
    ))
}

/// Resolves the credentials (reading secret references or the cloudmonkey profile) without
/// connecting. `Ok(None)` for the simulator, whose credentials exist only once it runs.
pub fn credentials(ep: &CloudStackEndpoint) -> Result<Option<(Credentials, bool)>, CsError> {
    let config = |e: String| CsError::Config(format!("remedy_cloudstack: {e}"));
    match &ep.source {
        CloudStackSource::Keys {
            endpoint,
            api_key,
            secret_key,
        } => {
            let api_key = match api_key {
                ApiKey::Inline(k) => k.clone(),
                ApiKey::Ref(r) => r.resolve().map_err(|e| config(format!("api_key: {e}")))?,
            };
            let secret_key = secret_key
                .resolve()
                .map_err(|e| config(format!("secret_key: {e}")))?;
            Ok(Some((
                Credentials {
                    endpoint: endpoint.clone(),
                    api_key,
                    secret_key,
                },
                ep.verify_tls,
            )))
        }
        CloudStackSource::Cmk {
            config: path,
            profile,
        } => {
            let path = match path {
                Some(p) => p.clone(),
                None => cmk::default_path().ok_or_else(|| {
                    config("cmk_profile: no home directory to find ~/.cmk/config in".into())
                })?,
            };
            let p = cmk::load(&path, profile.as_deref()).map_err(config)?;
            Ok(Some((p.credentials, ep.verify_tls && p.verify_tls)))
        }
        CloudStackSource::Simulator { .. } => Ok(None),
    }
}

/// Registers every secret the inventory can reach (its secret references, what it decrypted
/// with ansible-vault, and the secret key of a cloudmonkey profile) with the redactor, so none can reach output or the audit log.
/// Secrets that cannot be read now are skipped; using them fails later with a clear error.
pub fn register_secrets(inventory: &Inventory, redactor: &mut Redactor) {
    for (label, r) in inventory.secret_refs() {
        match r.resolve() {
            Ok(secret) => redactor.add(secret),
            Err(_) => tracing::debug!(what = %label, "inventory secret not resolvable now"),
        }
    }
    for value in inventory.vault_values() {
        redactor.add(value.clone());
    }
    if let Some(
        ep @ CloudStackEndpoint {
            source: CloudStackSource::Cmk { .. },
            ..
        },
    ) = inventory.cloudstack()
    {
        if let Ok(Some((creds, _))) = credentials(ep) {
            redactor.add(creds.secret_key);
        }
    }
}

/// Sets up the client for an endpoint; for `simulator:` starts the simulated zone first.
pub async fn connect(ep: &CloudStackEndpoint, mut opts: Options) -> Result<Connection, CsError> {
    opts.ca_file = ep.ca_file.clone();
    if let CloudStackSource::Simulator { scenario: name } = &ep.source {
        let scenario = scenario(name)
            .map_err(|e| CsError::Config(format!("remedy_cloudstack.simulator: {e}")))?;
        let sim = Sim::start(SimConfig {
            scenario,
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            api_key: None,
            secret_key: None,
        })
        .await
        .map_err(|e| CsError::Config(format!("could not start the simulated zone: {e}")))?;
        let creds = Credentials {
            endpoint: sim.endpoint(),
            api_key: sim.api_key().to_string(),
            secret_key: sim.secret_key().to_string(),
        };
        tracing::info!(endpoint = %creds.endpoint, "started the embedded simulated zone");
        let ssh = EmbeddedSsh::start(&sim).await.map_err(CsError::Config)?;
        return Ok(Connection {
            client: Client::new(creds, opts)?,
            simulator: Some(sim),
            simulator_ssh: Some(ssh),
        });
    }
    let (creds, verify) = credentials(ep)?.expect("not the simulator");
    opts.verify_tls = verify;
    Ok(Connection {
        client: Client::new(creds, opts)?,
        simulator: None,
        simulator_ssh: None,
    })
}
