//! The inventory: which hosts exist, how they group, what variables apply to each, and how to
//! reach them.
//!
//! Operators keep their Ansible YAML inventories, so this module reads that format as Ansible
//! does (an `all` group with `hosts`/`vars`/`children`, other top-level keys as groups, nested
//! `children`, host ranges such as `hv[01:12].example.com`, `host:port` entries, the implicit
//! `ungrouped` group and the implicit `localhost`), together with the `group_vars/` and
//! `host_vars/` directories next to each inventory source. It is stricter than Ansible where a
//! silent mistake could aim a remediation at the wrong machine: unknown keys in a group,
//! duplicate keys and inline secrets are errors, not warnings.
//!
//! Owned here: the model ([`Inventory`], [`Host`], [`Connection`]), loading files and
//! directories, variable precedence, the connection and host-key settings derived from the
//! `ansible_*` and `remedy_*` variables, the CloudStack endpoint (`remedy_cloudstack`) and
//! secret references ([`SecretRef`]). Host patterns live in [`pattern`].
//!
//! Not here: templating playbook values (only plain `{{ var }}` references are expanded, and only
//! inside connection variables), connecting to hosts (the transports) and redaction (the caller
//! registers what [`SecretRef::resolve`] returns, using [`Inventory::secret_refs`]).
//!
//! # Variable precedence
//!
//! Lowest to highest, as Ansible's default `VARIABLE_PRECEDENCE`: `all` vars written in the
//! inventory; other groups' vars written in the inventory, parents before children (ordered by
//! depth, then `ansible_group_priority`, then name, later wins); `group_vars/all`;
//! `group_vars/<group>` in the same group order; host vars written in the inventory;
//! `host_vars/<host>`. Values replace, they are never deep-merged. When a group or a host is
//! written several times (in several groups or files), later definitions win key by key.
//!
//! # Secrets
//!
//! `ansible_password`, `ansible_ssh_pass`, `ansible_ssh_password`, `ansible_become_password`,
//! `ansible_become_pass` and `remedy_cloudstack.secret_key` may only hold a reference,
//! `{ env: NAME }` or `{ file: PATH }` (a relative `PATH` is relative to the file that says it),
//! an ansible-vault value ([`vault`]), or `"{{ name }}"` naming a variable that holds one of
//! those. The value itself is read only by [`SecretRef::resolve`] (or decrypted) and never
//! appears in an error; decrypted values are listed by [`Inventory::vault_values`].
//!
//! # Values
//!
//! Plain scalars read as Ansible reads them (YAML 1.1: `yes` is true, `0755` is 493): `yaml11`.
//! `ansible_group_priority` in a group's inventory vars orders the merge and is not a host
//! variable. docs/inventory.md has the details.
//!
//! # Where things are
//!
//! This file holds the model and the public entry ([`Inventory::load`] and the accessors).
//! Loading, in the order it happens: `files` (which files), `yaml` (positioned parsing),
//! `hosts` (host ranges and ports), `groups` (membership), `vars` (the builder and variable
//! precedence), `connection` (how each host is reached), `endpoint` (`remedy_cloudstack`),
//! `secret` (secret references), `yaml11` (YAML 1.1 scalars), [`vault`] (ansible-vault),
//! [`dynamic`] (the CloudStack inventory source's settings and
//! the naming rule for its groups). Using a loaded inventory: [`pattern`] (host patterns),
//! [`show`] (`remedy inventory` output).

mod connection;
pub mod dynamic;
mod endpoint;
mod files;
mod groups;
mod hosts;
pub mod pattern;
mod secret;
pub mod show;
mod vars;
pub mod vault;
mod yaml;
mod yaml11;

pub use endpoint::{lab_scenario_override, LAB_SCENARIO_ENV};
pub use pattern::{Pattern, PatternError};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use dynamic::SourceSpec;
use files::collect_inventory_files;
use secret::SECRET_VARS;
use vars::{hex, Builder};

/// The group every inventory host belongs to.
const ALL: &str = "all";
/// The group of hosts that belong to no other group.
const UNGROUPED: &str = "ungrouped";
/// Names Ansible resolves to an implicit local host when the inventory does not define them.
const LOCALHOST_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// remedy's own variable holding the CloudStack API endpoint.
const CLOUDSTACK_VAR: &str = "remedy_cloudstack";

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// A loaded inventory: hosts in inventory order, groups, and the CloudStack endpoint.
///
/// Never changed once loaded, and shared: a clone is a reference count (a run's plan, the
/// daemon's cache of the zone's inventory and each of its runs hold the same thousand hosts).
#[derive(Debug, Clone)]
pub struct Inventory(Arc<Loaded>);

impl std::ops::Deref for Inventory {
    type Target = Loaded;
    fn deref(&self) -> &Loaded {
        &self.0
    }
}

/// What an [`Inventory`] holds.
#[derive(Debug)]
pub struct Loaded {
    hosts: Vec<Host>,
    host_index: HashMap<String, usize>,
    /// Implicit local hosts (`localhost`, `127.0.0.1`, `::1`) the inventory does not define.
    implicit: Vec<Host>,
    groups: BTreeMap<String, GroupEntry>,
    cloudstack: Option<CloudStackEndpoint>,
    /// `remedy_cloudstack_inventory`: hosts to add from the CloudStack API.
    cloudstack_source: Option<SourceSpec>,
    /// Whether the API's hosts were added ([`Inventory::load_with_generated`]).
    generated: bool,
    /// Values decrypted with ansible-vault: secrets ([`Inventory::vault_values`]).
    vault_values: Vec<String>,
    sources: Vec<PathBuf>,
    digest: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    children: Vec<String>,
    /// Transitive members, as indices into `Inventory::hosts`, ascending (inventory order).
    members: Vec<usize>,
}

/// How remedy verifies a host's SSH key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// The key must already be in `known_hosts` (the default).
    Strict,
    /// An unknown host's key is recorded on first contact; a changed key is refused.
    AcceptNew,
    /// The key must have this fingerprint (`SHA256:...`).
    Pinned(String),
}

/// How a host is reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    Ssh,
    Local,
}

/// Everything a transport needs to reach one host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Connection {
    pub kind: ConnectionKind,
    /// `ansible_host` (or `ansible_ssh_host`), else the inventory name.
    pub address: String,
    /// `ansible_port` (or `ansible_ssh_port`, or `host:port` in the inventory), else 22.
    pub port: u16,
    /// `ansible_user` (or `ansible_ssh_user`), else `root`.
    pub user: String,
    /// `ansible_ssh_private_key_file` (or `ansible_private_key_file`), `~` expanded.
    pub key_file: Option<PathBuf>,
    /// Jump hosts, outermost first. An entry is an inventory host name when it comes from
    /// `remedy_jump` (whose own chain is expanded before it); an entry taken from an SSH
    /// `ProxyJump`/`-J` option is kept as written (`[user@]host[:port]`), and may or may not
    /// name an inventory host.
    pub jump: Vec<String>,
    pub host_key: HostKeyPolicy,
    /// `remedy_known_hosts_file`: the `known_hosts` file checked (and appended to under
    /// `accept-new`) for this host instead of the transport's default (`~/.ssh/known_hosts`);
    /// `~` expanded, a relative path taken from the directory of the file that set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<PathBuf>,
    /// `ansible_become`.
    pub become_: bool,
}

/// One host with its merged variables and how to reach it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Host {
    pub name: String,
    /// Merged variables, precedence applied, including the `ansible_*`/`remedy_*` ones as given.
    pub vars: Map<String, Value>,
    /// Every group the host belongs to, transitively, sorted; includes `all` (except for an
    /// implicit localhost, which belongs to no group).
    pub groups: Vec<String>,
    pub conn: Connection,
}

/// Where a secret is read from; the only form a secret may take in an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable of the controller.
    Env(String),
    /// A file on the controller; its content, trimmed, is the secret.
    File(PathBuf),
}

/// The CloudStack API key: an identifier, so it may be written inline.
#[derive(Debug, Clone)]
pub enum ApiKey {
    Inline(String),
    Ref(SecretRef),
}

/// `remedy_cloudstack`: where the CloudStack API is and how to sign requests to it.
#[derive(Debug, Clone)]
pub struct CloudStackEndpoint {
    pub source: CloudStackSource,
    /// Verify the server's TLS certificate (`verify_tls`, default true).
    pub verify_tls: bool,
    /// Extra CA certificates to trust (`ca_file`, PEM; relative to the file that says it).
    pub ca_file: Option<PathBuf>,
}

/// Where the endpoint and its key pair come from.
#[derive(Debug, Clone)]
pub enum CloudStackSource {
    /// `endpoint`, `api_key`, `secret_key` written in the inventory (the secret by reference).
    Keys {
        endpoint: String,
        api_key: ApiKey,
        secret_key: SecretRef,
    },
    /// A cloudmonkey profile: `cmk_profile` (default: the config's own default profile) in
    /// `cmk_config` (default `~/.cmk/config`).
    Cmk {
        config: Option<PathBuf>,
        profile: Option<String>,
    },
    /// `simulator: { scenario: NAME or PATH }`: remedy starts the simulated zone in-process, on
    /// loopback, with fresh lab-only credentials, for the length of the command.
    /// `REMEDY_LAB_SCENARIO`, when set, replaces the scenario written ([`LAB_SCENARIO_ENV`]).
    Simulator { scenario: String },
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A problem loading an inventory. Messages are lowercase fragments prefixed by the file (and,
/// when the YAML parser knows it, `line:column`). No message ever contains a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A file or directory could not be read.
    #[error("{}: {what}: {}", path.display(), io_reason(cause))]
    Io {
        path: PathBuf,
        what: String,
        cause: std::io::Error,
    },
    /// Something written in an inventory or vars file is wrong.
    #[error("{}{}: {message}", path.display(), fmt_location(*line, *column))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        /// Byte offset of `line:column` in the file, when known.
        offset: Option<usize>,
        message: String,
    },
    /// A secret reference could not be resolved; `what` names the variable or file.
    #[error("secret {what}: {message}")]
    Secret { what: String, message: String },
}

impl InventoryError {
    /// The file the problem is in.
    pub fn path(&self) -> Option<&Path> {
        match self {
            InventoryError::Io { path, .. } | InventoryError::Invalid { path, .. } => Some(path),
            InventoryError::Secret { .. } => None,
        }
    }

    /// `(line, column)`, 1-based, when known.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            InventoryError::Invalid {
                line: Some(line),
                column: Some(column),
                ..
            } => Some((*line, *column)),
            _ => None,
        }
    }

    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        InventoryError::Invalid {
            path: path.to_path_buf(),
            line: None,
            column: None,
            offset: None,
            message: message.into(),
        }
    }
}

fn fmt_location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => err.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

impl Inventory {
    /// Loads and merges inventory sources, in order. Each is a YAML file or a directory (every
    /// `*.yml`/`*.yaml` file under it, sorted, recursively, skipping hidden entries and the
    /// `group_vars`/`host_vars` directories). `group_vars/` and `host_vars/` are read next to
    /// each source (beside a file, inside a directory). No paths: [`Inventory::empty`].
    pub fn load(paths: &[PathBuf]) -> Result<Inventory, InventoryError> {
        Self::load_with_generated(paths, None)
    }

    /// [`Inventory::load`] with the hosts a CloudStack inventory source generated
    /// (`cloudstack::inventory::Generated::to_yaml`) read first, so the files given win key by
    /// key over what the API said.
    pub fn load_with_generated(
        paths: &[PathBuf],
        generated: Option<&str>,
    ) -> Result<Inventory, InventoryError> {
        let mut builder = Builder::default();
        if let Some(text) = generated {
            builder.add_inventory_text(Path::new("<cloudstack api>"), text.as_bytes())?;
            builder.generated = true;
        }
        let mut base_dirs: Vec<PathBuf> = Vec::new();
        for path in paths {
            let meta = std::fs::metadata(path).map_err(|cause| InventoryError::Io {
                path: path.clone(),
                what: "cannot read inventory".into(),
                cause,
            })?;
            let base = if meta.is_dir() {
                let mut files = Vec::new();
                collect_inventory_files(path, &mut files)?;
                if files.is_empty() {
                    return Err(InventoryError::invalid(
                        path,
                        "inventory directory has no *.yml or *.yaml file",
                    ));
                }
                for file in files {
                    builder.add_inventory_file(&file)?;
                }
                path.clone()
            } else {
                builder.add_inventory_file(path)?;
                match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                    _ => PathBuf::from("."),
                }
            };
            if !base_dirs.contains(&base) {
                base_dirs.push(base);
            }
        }
        builder.reconcile();
        for (index, dir) in base_dirs.iter().enumerate() {
            builder.add_vars_dirs(index, dir)?;
        }
        builder.finish()
    }

    /// Parses one YAML inventory held in memory; `name` stands for its path in messages.
    /// No `group_vars`/`host_vars` are read.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(name: &str, yaml: &str) -> Result<Inventory, InventoryError> {
        let mut builder = Builder::default();
        builder.add_inventory_text(Path::new(name), yaml.as_bytes())?;
        builder.reconcile();
        builder.finish()
    }

    /// An inventory with no hosts: only the implicit `localhost` resolves.
    pub fn empty() -> Inventory {
        let mut builder = Builder::default();
        builder.reconcile();
        match builder.finish() {
            Ok(inventory) => inventory,
            // Unreachable: nothing was read, so nothing can be invalid. Stay total regardless.
            Err(_) => Inventory(Arc::new(Loaded {
                hosts: Vec::new(),
                host_index: HashMap::new(),
                implicit: Vec::new(),
                groups: BTreeMap::new(),
                cloudstack: None,
                cloudstack_source: None,
                generated: false,
                vault_values: Vec::new(),
                sources: Vec::new(),
                digest: hex(&Sha256::new().finalize()),
            })),
        }
    }

    /// Hosts in inventory order (first appearance); never the implicit localhost.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// A host by name; `localhost` (and `127.0.0.1`, `::1`) resolve to an implicit local host
    /// when the inventory does not define them.
    pub fn host(&self, name: &str) -> Option<&Host> {
        match self.host_index.get(name) {
            Some(&index) => self.hosts.get(index),
            None => self.implicit.iter().find(|h| h.name == name),
        }
    }

    /// Every group name, sorted (always includes `all` and `ungrouped`).
    pub fn group_names(&self) -> Vec<&str> {
        self.groups.keys().map(String::as_str).collect()
    }

    /// A group's members, transitively, in inventory order; `None` if there is no such group.
    pub fn group_hosts(&self, group: &str) -> Option<Vec<&Host>> {
        let entry = self.groups.get(group)?;
        Some(
            entry
                .members
                .iter()
                .filter_map(|&i| self.hosts.get(i))
                .collect(),
        )
    }

    /// A group's direct child groups, in the order first written.
    pub fn group_children(&self, group: &str) -> Option<&[String]> {
        self.groups.get(group).map(|g| g.children.as_slice())
    }

    /// The CloudStack endpoint (`remedy_cloudstack` in `all`'s vars), if configured.
    pub fn cloudstack_source(&self) -> Option<&SourceSpec> {
        self.cloudstack_source.as_ref()
    }

    /// Whether hosts from the CloudStack API were added.
    pub fn has_generated_hosts(&self) -> bool {
        self.generated
    }

    pub fn cloudstack(&self) -> Option<&CloudStackEndpoint> {
        self.cloudstack.as_ref()
    }

    /// Hosts matching an Ansible host pattern, in inventory order, deduplicated.
    pub fn select(&self, pattern: &str) -> Result<Vec<&Host>, PatternError> {
        let pattern = Pattern::parse(pattern)?;
        let slots = pattern.evaluate(self)?;
        Ok(slots
            .into_iter()
            .filter_map(|s| self.slot_host(s))
            .collect())
    }

    /// SHA-256 (hex) over every file read, in order: each file's path, its length and its bytes.
    pub fn digest(&self) -> String {
        self.digest.clone()
    }

    /// Every file read (inventory files, then `group_vars`/`host_vars` files), in order.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// Every secret reference, once each, with a name for messages (`remedy_cloudstack.secret_key`,
    /// `hv1.ansible_become_password`), so callers can register the resolved values for redaction.
    pub fn secret_refs(&self) -> Vec<(String, SecretRef)> {
        let mut out: Vec<(String, SecretRef)> = Vec::new();
        let mut push = |label: String, secret: SecretRef| {
            if !out.iter().any(|(_, known)| *known == secret) {
                out.push((label, secret));
            }
        };
        if let Some(CloudStackEndpoint {
            source:
                CloudStackSource::Keys {
                    api_key,
                    secret_key,
                    ..
                },
            ..
        }) = &self.cloudstack
        {
            if let ApiKey::Ref(secret) = api_key {
                push(format!("{CLOUDSTACK_VAR}.api_key"), secret.clone());
            }
            push(format!("{CLOUDSTACK_VAR}.secret_key"), secret_key.clone());
        }
        for host in self.hosts.iter().chain(self.implicit.iter()) {
            for var in SECRET_VARS {
                let Some(value) = host.vars.get(var) else {
                    continue;
                };
                if let Some(secret) = SecretRef::from_value(value) {
                    push(format!("{}.{var}", host.name), secret);
                    continue;
                }
                // `"{{ name }}"`: the reference the variable it names holds.
                let target = value.as_str().and_then(yaml::reference_of);
                let referenced = target.and_then(|t| host.vars.get(t).map(|v| (t, v)));
                if let Some((target, secret)) =
                    referenced.and_then(|(t, v)| SecretRef::from_value(v).map(|s| (t, s)))
                {
                    push(format!("{}.{target}", host.name), secret);
                }
            }
        }
        out
    }

    /// Every value decrypted with ansible-vault (each `!vault` value, every string of an
    /// encrypted file): secrets, for the caller to register with its redactor, as it does with
    /// what [`Inventory::secret_refs`] resolve to.
    pub fn vault_values(&self) -> &[String] {
        &self.vault_values
    }

    // --- for pattern evaluation: hosts are addressed by "slot", an index into `hosts`, then
    // --- `implicit` (so sorting slots gives inventory order).

    pub(crate) fn slot_host(&self, slot: usize) -> Option<&Host> {
        match slot.checked_sub(self.hosts.len()) {
            None => self.hosts.get(slot),
            Some(i) => self.implicit.get(i),
        }
    }

    pub(crate) fn host_slot(&self, name: &str) -> Option<usize> {
        self.host_index.get(name).copied()
    }

    pub(crate) fn implicit_slot(&self, name: &str) -> Option<usize> {
        self.implicit
            .iter()
            .position(|h| h.name == name)
            .map(|i| i + self.hosts.len())
    }

    pub(crate) fn host_count(&self) -> usize {
        self.hosts.len()
    }

    pub(crate) fn group_members(&self, group: &str) -> Option<&[usize]> {
        self.groups.get(group).map(|g| g.members.as_slice())
    }

    pub(crate) fn groups_iter(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.groups
            .iter()
            .map(|(name, g)| (name.as_str(), g.members.as_slice()))
    }

    /// Group names for messages: all but the implicit `all` and `ungrouped`.
    pub(crate) fn user_group_names(&self) -> Vec<String> {
        self.groups
            .keys()
            .filter(|g| *g != ALL && *g != UNGROUPED)
            .cloned()
            .collect()
    }
}

/// SHA-256 (hex) over every file loading `paths` may read, whatever hosts and groups they turn
/// out to hold: the inventory files, and every file under each base directory's `group_vars/`
/// and `host_vars/` (each file's path, length and bytes, in order). Unlike
/// [`Inventory::digest`] it changes when a vars file is added for a host or group that only a
/// CloudStack source names: what a cache of inventories made with the zone's hosts must know.
pub fn files_state(paths: &[PathBuf]) -> Result<String, InventoryError> {
    let mut files = Vec::new();
    let mut bases: Vec<PathBuf> = Vec::new();
    for path in paths {
        let base = if path.is_dir() {
            collect_inventory_files(path, &mut files)?;
            path.clone()
        } else {
            files.push(path.clone());
            match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    for base in &bases {
        for sub in ["group_vars", "host_vars"] {
            every_file(&base.join(sub), &mut files);
        }
    }
    let mut hasher = Sha256::new();
    for file in &files {
        let bytes = std::fs::read(file).map_err(|cause| InventoryError::Io {
            path: file.clone(),
            what: "cannot read inventory".into(),
            cause,
        })?;
        let label = file.to_string_lossy();
        hasher.update((label.len() as u64).to_le_bytes());
        hasher.update(label.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex(&hasher.finalize()))
}

/// Every regular file under `dir` (none when it is not a directory), in name order.
fn every_file(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            every_file(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests;
