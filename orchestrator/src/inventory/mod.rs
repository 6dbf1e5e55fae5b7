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
//! `{ env: NAME }` or `{ file: PATH }` (a relative `PATH` is relative to the file that says it).
//! The value itself is read only by [`SecretRef::resolve`] and never appears in an error.

pub mod pattern;
pub mod show;

pub use pattern::{Pattern, PatternError};

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The group every inventory host belongs to.
const ALL: &str = "all";
/// The group of hosts that belong to no other group.
const UNGROUPED: &str = "ungrouped";
/// Names Ansible resolves to an implicit local host when the inventory does not define them.
const LOCALHOST_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Variables whose value is a password: only references are accepted.
const SECRET_VARS: [&str; 5] = [
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_ssh_password",
    "ansible_become_password",
    "ansible_become_pass",
];
/// remedy's own variable holding the CloudStack API endpoint.
const CLOUDSTACK_VAR: &str = "remedy_cloudstack";
/// The keys of `remedy_cloudstack`.
const CLOUDSTACK_KEYS: [&str; 8] = [
    "endpoint",
    "api_key",
    "secret_key",
    "cmk_profile",
    "cmk_config",
    "simulator",
    "verify_tls",
    "ca_file",
];
/// How many hosts one range pattern (`web[1:100]`) may expand to.
const MAX_RANGE_HOSTS: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// A loaded inventory: hosts in inventory order, groups, and the CloudStack endpoint.
#[derive(Debug, Clone)]
pub struct Inventory {
    hosts: Vec<Host>,
    host_index: HashMap<String, usize>,
    /// Implicit local hosts (`localhost`, `127.0.0.1`, `::1`) the inventory does not define.
    implicit: Vec<Host>,
    groups: BTreeMap<String, GroupEntry>,
    cloudstack: Option<CloudStackEndpoint>,
    /// `remedy_cloudstack_inventory`: hosts to add from the CloudStack API.
    cloudstack_source: Option<crate::cloudstack::inventory::SourceSpec>,
    /// Whether the API's hosts were added ([`Inventory::load_with_generated`]).
    generated: bool,
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
// Secrets
// ---------------------------------------------------------------------------------------------

impl SecretRef {
    /// Reads the secret: the variable's value, or the file's content trimmed. Errors name the
    /// variable or the path, never a value.
    pub fn resolve(&self) -> Result<String, InventoryError> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(value) if value.is_empty() => Err(InventoryError::Secret {
                    what: format!("env {name}"),
                    message: "environment variable is empty".into(),
                }),
                Ok(value) => Ok(value),
                Err(std::env::VarError::NotPresent) => Err(InventoryError::Secret {
                    what: format!("env {name}"),
                    message: "environment variable is not set".into(),
                }),
                Err(std::env::VarError::NotUnicode(_)) => Err(InventoryError::Secret {
                    what: format!("env {name}"),
                    message: "environment variable is not valid unicode".into(),
                }),
            },
            SecretRef::File(path) => {
                let what = format!("file {}", path.display());
                let text = std::fs::read(path).map_err(|err| InventoryError::Secret {
                    what: what.clone(),
                    message: format!("cannot read: {}", io_reason(&err)),
                })?;
                let text = String::from_utf8(text).map_err(|_| InventoryError::Secret {
                    what: what.clone(),
                    message: "content is not valid utf-8".into(),
                })?;
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Err(InventoryError::Secret {
                        what,
                        message: "file is empty".into(),
                    });
                }
                Ok(trimmed.to_string())
            }
        }
    }

    /// The reference as written in YAML (`{ env: NAME }` / `{ file: PATH }`).
    fn to_value(&self) -> Value {
        let mut map = Map::new();
        match self {
            SecretRef::Env(name) => map.insert("env".into(), Value::String(name.clone())),
            SecretRef::File(path) => map.insert(
                "file".into(),
                Value::String(path.to_string_lossy().into_owned()),
            ),
        };
        Value::Object(map)
    }

    /// Reads back a reference previously validated by the parser.
    fn from_value(value: &Value) -> Option<SecretRef> {
        let map = value.as_object()?;
        if map.len() != 1 {
            return None;
        }
        match (map.get("env"), map.get("file")) {
            (Some(Value::String(name)), None) => Some(SecretRef::Env(name.clone())),
            (None, Some(Value::String(path))) => Some(SecretRef::File(PathBuf::from(path))),
            _ => None,
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env {name}"),
            SecretRef::File(path) => write!(f, "file {}", path.display()),
        }
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
            Err(_) => Inventory {
                hosts: Vec::new(),
                host_index: HashMap::new(),
                implicit: Vec::new(),
                groups: BTreeMap::new(),
                cloudstack: None,
                cloudstack_source: None,
                generated: false,
                sources: Vec::new(),
                digest: hex(&Sha256::new().finalize()),
            },
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
    pub fn cloudstack_source(&self) -> Option<&crate::cloudstack::inventory::SourceSpec> {
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
                if let Some(secret) = host.vars.get(var).and_then(SecretRef::from_value) {
                    push(format!("{}.{var}", host.name), secret);
                }
            }
        }
        out
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

// ---------------------------------------------------------------------------------------------
// Reading files
// ---------------------------------------------------------------------------------------------

fn is_yaml_file(name: &str) -> bool {
    name.ends_with(".yml") || name.ends_with(".yaml")
}

/// Every inventory file under `dir`, sorted by name at each level, depth first, as Ansible
/// walks an inventory directory.
fn collect_inventory_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InventoryError> {
    let read_err = |cause| InventoryError::Io {
        path: dir.to_path_buf(),
        what: "cannot list inventory directory".into(),
        cause,
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            || name.ends_with('~')
            || matches!(name.as_str(), "group_vars" | "host_vars" | "vars_plugins")
        {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort();
    for (name, path) in entries {
        if path.is_dir() {
            collect_inventory_files(&path, out)?;
        } else if is_yaml_file(&name) {
            out.push(path);
        }
    }
    Ok(())
}

/// The vars files for `name` under `dir` (`group_vars` or `host_vars`), as Ansible's
/// `host_group_vars` finds them: the first of `name` (a directory of files, or a file),
/// `name.yml`, `name.yaml`, `name.json` that exists.
fn find_vars_files(dir: &Path, name: &str) -> Result<Vec<PathBuf>, InventoryError> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Ok(Vec::new());
    }
    for ext in ["", ".yml", ".yaml", ".json"] {
        let candidate = dir.join(format!("{name}{ext}"));
        if candidate.is_dir() {
            let mut files = Vec::new();
            collect_vars_dir(&candidate, &mut files)?;
            return Ok(files);
        }
        if candidate.is_file() {
            return Ok(vec![candidate]);
        }
    }
    Ok(Vec::new())
}

fn collect_vars_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InventoryError> {
    let read_err = |cause| InventoryError::Io {
        path: dir.to_path_buf(),
        what: "cannot list vars directory".into(),
        cause,
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort();
    for (name, path) in entries {
        if path.is_dir() {
            collect_vars_dir(&path, out)?;
        } else if is_yaml_file(&name) || name.ends_with(".json") || !name.contains('.') {
            out.push(path);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// YAML parsing: serde seeds that build the raw tree and report problems with a position
// ---------------------------------------------------------------------------------------------

/// One group as written: its sections in document order.
#[derive(Debug)]
struct RawGroup {
    name: String,
    sections: Vec<Section>,
}

#[derive(Debug)]
enum Section {
    Hosts(Vec<(String, Map<String, Value>)>),
    Vars(Map<String, Value>),
    Children(Vec<RawGroup>),
}

/// Shared state of one parse. Our own errors are stashed here so their text reaches the user
/// unchanged, while serde_yaml supplies the position.
struct Ctx {
    error: RefCell<Option<String>>,
    /// Directory against which relative `{ file: PATH }` references resolve.
    base_dir: Option<PathBuf>,
}

impl Ctx {
    fn fail<E: de::Error>(&self, message: impl Into<String>) -> E {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(message.into());
        }
        E::custom("inventory error")
    }
}

fn yaml_error(path: &Path, ctx: &Ctx, err: &serde_yaml::Error) -> InventoryError {
    let location = err.location();
    let message = match ctx.error.borrow_mut().take() {
        Some(message) => message,
        None => native_message(err),
    };
    InventoryError::Invalid {
        path: path.to_path_buf(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        offset: location.as_ref().map(|l| l.index()),
        message,
    }
}

/// serde_yaml's own message, without the position of the problem (which we print first).
fn native_message(err: &serde_yaml::Error) -> String {
    let text = err.to_string();
    let text = match err.location() {
        Some(at) => text.replacen(
            &format!(" at line {} column {}", at.line(), at.column()),
            "",
            1,
        ),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "invalid yaml".to_string(),
    }
}

/// Whether `text` looks like an INI inventory (first significant line is a `[section]`).
fn looks_like_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| l.starts_with('[') && l.ends_with(']') && !l.contains(','))
}

fn parse_inventory(
    path: &Path,
    text: &str,
    base_dir: Option<PathBuf>,
) -> Result<Vec<RawGroup>, InventoryError> {
    let ctx = Ctx {
        error: RefCell::new(None),
        base_dir,
    };
    let de = serde_yaml::Deserializer::from_str(text);
    TopSeed { ctx: &ctx }.deserialize(de).map_err(|err| {
        let mut error = yaml_error(path, &ctx, &err);
        if let InventoryError::Invalid { message, .. } = &mut error {
            if looks_like_ini(text) {
                message.push_str(
                    " (this looks like an ini inventory; remedy reads yaml inventories only: \
                     convert it with `ansible-inventory -i FILE --list -y`)",
                );
            }
        }
        error
    })
}

fn parse_vars_file(
    path: &Path,
    text: &str,
    scope: &str,
    base_dir: Option<PathBuf>,
) -> Result<Map<String, Value>, InventoryError> {
    let ctx = Ctx {
        error: RefCell::new(None),
        base_dir,
    };
    let de = serde_yaml::Deserializer::from_str(text);
    VarsSeed { ctx: &ctx, scope }
        .deserialize(de)
        .map_err(|err| yaml_error(path, &ctx, &err))
}

/// Implements the `visit_*` methods a visitor does not accept, with our own message.
macro_rules! reject {
    (bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.wrong("a boolean"))
        }
    };
    (num) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.wrong("a number"))
        }
    };
    (str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.wrong("a string"))
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong("a list"))
        }
    };
    (enum) => {
        fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong("a tagged value"))
        }
    };
}

/// The whole document: a mapping of group names.
struct TopSeed<'c> {
    ctx: &'c Ctx,
}

impl TopSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(format!(
            "expected a mapping of groups at the top level (all, and other groups), found {found}"
        ))
    }
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Vec<RawGroup>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Vec<RawGroup>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of groups")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut groups = Vec::new();
        while let Some(name) = map.next_key_seed(KeySeed {
            ctx: self.ctx,
            seen: &mut seen,
            kind: KeyKind::TopGroup,
        })? {
            let group = map.next_value_seed(GroupSeed {
                ctx: self.ctx,
                name,
            })?;
            groups.push(group);
        }
        Ok(groups)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.ctx.fail(
            "expected a mapping of groups at the top level, found a string (remedy reads yaml \
             inventories only; convert an ini inventory with `ansible-inventory -i FILE --list -y`)",
        ))
    }
    reject!(bool);
    reject!(num);
    reject!(seq);
    reject!(enum);
}

#[derive(Clone, Copy)]
enum KeyKind<'a> {
    /// A top-level group name.
    TopGroup,
    /// A key inside a group definition.
    GroupKey(&'a str),
    /// A host name under a group's `hosts`.
    HostName(&'a str),
    /// A child group name under a group's `children`.
    ChildName(&'a str),
    /// A variable name (or a key inside a variable's value) in `scope`.
    Var(&'a str),
}

/// A mapping key: any scalar, taken as written (so `1.10` stays `1.10`), unique in its map.
struct KeySeed<'c, 's> {
    ctx: &'c Ctx,
    seen: &'s mut HashSet<String>,
    kind: KeyKind<'c>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        let ctx = self.ctx;
        if key.is_empty() {
            return Err(ctx.fail(match self.kind {
                KeyKind::TopGroup => "empty group name".to_string(),
                KeyKind::GroupKey(g) => format!("group \"{g}\": empty key"),
                KeyKind::HostName(g) => format!("group \"{g}\": empty host name"),
                KeyKind::ChildName(g) => format!("group \"{g}\": empty child group name"),
                KeyKind::Var(scope) => format!("{scope}: empty variable name"),
            }));
        }
        match self.kind {
            KeyKind::TopGroup if key == "plugin" => {
                return Err(ctx.fail(
                    "this is an inventory plugin configuration (top-level \"plugin\" key), not a \
                     yaml inventory; remedy reads static yaml inventories only",
                ));
            }
            KeyKind::GroupKey(group) if !matches!(key, "hosts" | "vars" | "children") => {
                return Err(ctx.fail(format!(
                    "group \"{group}\": unknown key \"{key}\" (expected hosts, vars, children)"
                )));
            }
            _ => {}
        }
        if !self.seen.insert(key.to_string()) {
            return Err(ctx.fail(match self.kind {
                KeyKind::TopGroup => format!("group \"{key}\" is defined twice at the top level"),
                KeyKind::GroupKey(g) => format!("group \"{g}\": duplicate key \"{key}\""),
                KeyKind::HostName(g) => format!("group \"{g}\": host \"{key}\" is listed twice"),
                KeyKind::ChildName(g) => {
                    format!("group \"{g}\": child group \"{key}\" is listed twice")
                }
                KeyKind::Var(scope) => format!("{scope}: duplicate key \"{key}\""),
            }));
        }
        Ok(key.to_string())
    }
}

/// One group's definition: `hosts`, `vars`, `children`, or nothing.
struct GroupSeed<'c> {
    ctx: &'c Ctx,
    name: String,
}

impl GroupSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(format!(
            "group \"{}\": expected a mapping with hosts, vars, children (or nothing), found {found}",
            self.name
        ))
    }
}

impl<'de> DeserializeSeed<'de> for GroupSeed<'_> {
    type Value = RawGroup;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for GroupSeed<'_> {
    type Value = RawGroup;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a group definition")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawGroup, E> {
        Ok(RawGroup {
            name: self.name,
            sections: Vec::new(),
        })
    }
    fn visit_none<E: de::Error>(self) -> Result<RawGroup, E> {
        self.visit_unit()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawGroup, A::Error> {
        let ctx = self.ctx;
        let name = self.name.as_str();
        let mut seen = HashSet::new();
        let mut sections = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed {
            ctx,
            seen: &mut seen,
            kind: KeyKind::GroupKey(name),
        })? {
            let section = match key.as_str() {
                "hosts" => Section::Hosts(map.next_value_seed(HostsSeed { ctx, group: name })?),
                "children" => {
                    Section::Children(map.next_value_seed(ChildrenSeed { ctx, group: name })?)
                }
                _ => {
                    let scope = format!("group \"{name}\" vars");
                    Section::Vars(map.next_value_seed(VarsSeed { ctx, scope: &scope })?)
                }
            };
            sections.push(section);
        }
        Ok(RawGroup {
            name: self.name,
            sections,
        })
    }
    reject!(bool);
    reject!(num);
    reject!(str);
    reject!(seq);
    reject!(enum);
}

/// A group's `hosts`: host name (or range pattern, or `host:port`) to host vars.
struct HostsSeed<'c> {
    ctx: &'c Ctx,
    group: &'c str,
}

type RawHosts = Vec<(String, Map<String, Value>)>;

impl HostsSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(format!(
            "group \"{}\": hosts must be a mapping of host names (`web1:`), found {found}",
            self.group
        ))
    }
}

impl<'de> DeserializeSeed<'de> for HostsSeed<'_> {
    type Value = RawHosts;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HostsSeed<'_> {
    type Value = RawHosts;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of hosts")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawHosts, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<RawHosts, E> {
        Ok(Vec::new())
    }
    // Ansible accepts `hosts: web1` for a single host.
    fn visit_str<E: de::Error>(self, host: &str) -> Result<RawHosts, E> {
        Ok(vec![(host.to_string(), Map::new())])
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHosts, A::Error> {
        let ctx = self.ctx;
        let mut seen = HashSet::new();
        let mut hosts = Vec::new();
        while let Some(host) = map.next_key_seed(KeySeed {
            ctx,
            seen: &mut seen,
            kind: KeyKind::HostName(self.group),
        })? {
            let scope = format!("host \"{host}\"");
            let vars = map.next_value_seed(VarsSeed { ctx, scope: &scope })?;
            hosts.push((host, vars));
        }
        Ok(hosts)
    }
    reject!(bool);
    reject!(num);
    reject!(seq);
    reject!(enum);
}

/// A group's `children`: child group name to its (possibly empty) definition.
struct ChildrenSeed<'c> {
    ctx: &'c Ctx,
    group: &'c str,
}

impl ChildrenSeed<'_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(format!(
            "group \"{}\": children must be a mapping of group names (`web:`), found {found}",
            self.group
        ))
    }
}

impl<'de> DeserializeSeed<'de> for ChildrenSeed<'_> {
    type Value = Vec<RawGroup>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChildrenSeed<'_> {
    type Value = Vec<RawGroup>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of child groups")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    // Ansible accepts `children: web` for a single child.
    fn visit_str<E: de::Error>(self, child: &str) -> Result<Self::Value, E> {
        Ok(vec![RawGroup {
            name: child.to_string(),
            sections: Vec::new(),
        }])
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut seen = HashSet::new();
        let mut children = Vec::new();
        while let Some(name) = map.next_key_seed(KeySeed {
            ctx,
            seen: &mut seen,
            kind: KeyKind::ChildName(self.group),
        })? {
            children.push(map.next_value_seed(GroupSeed { ctx, name })?);
        }
        Ok(children)
    }
    reject!(bool);
    reject!(num);
    reject!(seq);
    reject!(enum);
}

/// A mapping of variables (group `vars`, a host's entry, a vars file), or nothing.
struct VarsSeed<'c, 's> {
    ctx: &'c Ctx,
    scope: &'s str,
}

impl VarsSeed<'_, '_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(format!(
            "{}: expected a mapping of variables (or nothing), found {found}",
            self.scope
        ))
    }
}

impl<'de> DeserializeSeed<'de> for VarsSeed<'_, '_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for VarsSeed<'_, '_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of variables")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        read_map(self.ctx, self.scope, &[], map)
    }
    reject!(bool);
    reject!(num);
    reject!(str);
    reject!(seq);
    reject!(enum);
}

/// Reads a mapping's entries as JSON values, applying YAML merge keys (`<<: *defaults`):
/// merged entries never override keys written in the mapping itself.
fn read_map<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    scope: &str,
    path: &[String],
    mut map: A,
) -> Result<Map<String, Value>, A::Error> {
    let mut out = Map::new();
    let mut merged: Vec<Map<String, Value>> = Vec::new();
    let mut seen = HashSet::new();
    while let Some(key) = map.next_key_seed(KeySeed {
        ctx,
        seen: &mut seen,
        kind: KeyKind::Var(scope),
    })? {
        if key == "<<" {
            merged.extend(map.next_value_seed(MergeSeed { ctx, scope, path })?);
            continue;
        }
        let mut child = path.to_vec();
        child.push(key.clone());
        let value = map.next_value_seed(ValueSeed {
            ctx,
            scope,
            path: child,
        })?;
        out.insert(key, value);
    }
    for source in merged {
        for (key, value) in source {
            out.entry(key).or_insert(value);
        }
    }
    Ok(out)
}

/// The value of a `<<` merge key: a mapping or a list of mappings.
struct MergeSeed<'c, 'p> {
    ctx: &'c Ctx,
    scope: &'c str,
    path: &'p [String],
}

impl MergeSeed<'_, '_> {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(format!(
            "{}: a merge key (<<) needs a mapping or a list of mappings, found {found}",
            self.scope
        ))
    }
}

impl<'de> DeserializeSeed<'de> for MergeSeed<'_, '_> {
    type Value = Vec<Map<String, Value>>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MergeSeed<'_, '_> {
    type Value = Vec<Map<String, Value>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a list of mappings")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![read_map(self.ctx, self.scope, self.path, map)?])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(mut maps) = seq.next_element_seed(MergeSeed {
            ctx: self.ctx,
            scope: self.scope,
            path: self.path,
        })? {
            out.append(&mut maps);
        }
        Ok(out)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.wrong("nothing"))
    }
    reject!(bool);
    reject!(num);
    reject!(str);
    reject!(enum);
}

/// Where in a variable a value sits, for the secret and `remedy_cloudstack` rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ValueRole {
    Plain,
    /// Must be a reference (`ansible_password` and friends, `remedy_cloudstack.secret_key`).
    Secret,
    /// A string or a reference (`remedy_cloudstack.api_key`).
    ApiKey,
    /// `remedy_cloudstack` itself.
    CloudStack,
}

fn value_role(path: &[String]) -> ValueRole {
    match path {
        [var] if SECRET_VARS.contains(&var.as_str()) => ValueRole::Secret,
        [var] if var == CLOUDSTACK_VAR => ValueRole::CloudStack,
        [var, key] if var == CLOUDSTACK_VAR && key == "secret_key" => ValueRole::Secret,
        [var, key] if var == CLOUDSTACK_VAR && key == "api_key" => ValueRole::ApiKey,
        _ => ValueRole::Plain,
    }
}

const REF_FORMS: &str = "{ env: NAME } or { file: PATH }";

/// Any variable value, as JSON, checked against the secret rules.
struct ValueSeed<'c> {
    ctx: &'c Ctx,
    scope: &'c str,
    path: Vec<String>,
}

impl ValueSeed<'_> {
    fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// Every scalar goes through here: an inline value is refused where a secret is expected,
    /// without ever repeating it.
    fn scalar<E: de::Error>(&self, value: Value, kind: &str) -> Result<Value, E> {
        match value_role(&self.path) {
            ValueRole::Secret => Err(self.ctx.fail(format!(
                "{}: {}: inline secrets are not allowed (never inline secrets); use {REF_FORMS}",
                self.scope,
                self.dotted()
            ))),
            ValueRole::CloudStack => Err(self.ctx.fail(format!(
                "{}: {CLOUDSTACK_VAR}: expected a mapping with endpoint, api_key, secret_key, \
                 found {kind}",
                self.scope
            ))),
            ValueRole::ApiKey if !value.is_string() => Err(self.ctx.fail(format!(
                "{}: {}: expected a string or {REF_FORMS}, found {kind}",
                self.scope,
                self.dotted()
            ))),
            _ => Ok(value),
        }
    }

    fn secret_ref<E: de::Error>(&self, map: &Map<String, Value>) -> Result<SecretRef, E> {
        let bad = || {
            self.ctx.fail(format!(
                "{}: {}: expected exactly one of {REF_FORMS}",
                self.scope,
                self.dotted()
            ))
        };
        if map.len() != 1 {
            return Err(bad());
        }
        if let Some(name) = map.get("env") {
            let Some(name) = name.as_str() else {
                return Err(bad());
            };
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(self.ctx.fail(format!(
                    "{}: {}: env: \"{name}\" is not an environment variable name",
                    self.scope,
                    self.dotted()
                )));
            }
            return Ok(SecretRef::Env(name.to_string()));
        }
        if let Some(file) = map.get("file") {
            let Some(file) = file.as_str().filter(|f| !f.is_empty()) else {
                return Err(bad());
            };
            let path = expand_tilde(file);
            let path = match &self.ctx.base_dir {
                Some(base) if path.is_relative() => base.join(path),
                _ => path,
            };
            return Ok(SecretRef::File(path));
        }
        Err(bad())
    }

    fn cloudstack<E: de::Error>(&self, map: &Map<String, Value>) -> Result<(), E> {
        let scope = self.scope;
        let fail = |what: String| self.ctx.fail(format!("{scope}: {CLOUDSTACK_VAR}{what}"));
        if let Some(key) = map.keys().find(|k| !CLOUDSTACK_KEYS.contains(&k.as_str())) {
            return Err(fail(format!(
                ": unknown key \"{key}\" (expected {})",
                CLOUDSTACK_KEYS.join(", ")
            )));
        }
        let has = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
        let keys = ["endpoint", "api_key", "secret_key"];
        let sources = [
            keys.iter().any(|k| has(k)),
            has("cmk_profile") || has("cmk_config"),
            has("simulator"),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => {
                return Err(fail(
                    ": say where the API is: endpoint + api_key + secret_key, or cmk_profile \
                     (a cloudmonkey profile), or simulator"
                        .into(),
                ))
            }
            1 => {}
            _ => {
                return Err(fail(
                    ": endpoint/api_key/secret_key, cmk_profile/cmk_config and simulator are \
                     alternatives; give one"
                        .into(),
                ))
            }
        }
        if sources[0] {
            for key in keys {
                if !has(key) {
                    return Err(fail(format!(": missing {key}")));
                }
            }
            match map.get("endpoint").and_then(Value::as_str) {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {}
                _ => {
                    return Err(fail(
                        ".endpoint: expected an http:// or https:// url".into(),
                    ))
                }
            }
            if map.get("api_key").and_then(Value::as_str) == Some("") {
                return Err(fail(".api_key: empty".into()));
            }
        }
        for key in ["cmk_profile", "cmk_config", "ca_file"] {
            if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                if v.as_str().is_none_or(str::is_empty) {
                    return Err(fail(format!(".{key}: expected a non-empty string")));
                }
            }
        }
        if let Some(v) = map.get("verify_tls").filter(|v| !v.is_null()) {
            if !v.is_boolean() {
                return Err(fail(".verify_tls: expected true or false".into()));
            }
        }
        if let Some(sim) = map.get("simulator").filter(|v| !v.is_null()) {
            let ok = sim.as_object().is_some_and(|m| {
                m.keys().all(|k| k == "scenario")
                    && m.get("scenario")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            });
            if !ok {
                return Err(fail(
                    ".simulator: expected { scenario: NAME } (a shipped scenario such as \
                     vr-backup-loop, or a scenario file)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.scalar(Value::Bool(v), "a boolean")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.scalar(Value::from(v), "a number")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.scalar(Value::from(v), "a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        let value = serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(v.to_string()));
        self.scalar(value, "a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.scalar(Value::String(v.to_string()), "a string")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if value_role(&self.path) != ValueRole::Plain {
            return self.scalar(Value::Null, "a list");
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed {
            ctx: self.ctx,
            scope: self.scope,
            path: {
                let mut p = self.path.clone();
                p.push(items.len().to_string());
                p
            },
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let entries = read_map(self.ctx, self.scope, &self.path, map)?;
        match value_role(&self.path) {
            ValueRole::Secret | ValueRole::ApiKey => Ok(self.secret_ref(&entries)?.to_value()),
            ValueRole::CloudStack => {
                self.cloudstack(&entries)?;
                Ok(Value::Object(entries))
            }
            ValueRole::Plain => Ok(Value::Object(entries)),
        }
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant): (String, _) = data.variant()?;
        let tag = tag.trim_start_matches('!').to_string();
        match tag.as_str() {
            // `!unsafe` only tells Ansible not to template the value.
            "unsafe" => variant.newtype_variant_seed(self),
            "vault" => Err(self.ctx.fail(format!(
                "{}: {}: ansible-vault encrypted values are not supported; use {REF_FORMS}",
                self.scope,
                self.dotted()
            ))),
            other => Err(self.ctx.fail(format!(
                "{}: {}: unsupported yaml tag \"!{other}\"",
                self.scope,
                self.dotted()
            ))),
        }
    }
}

fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" || path.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            let rest = path.trim_start_matches('~').trim_start_matches('/');
            let home = PathBuf::from(home);
            return if rest.is_empty() {
                home
            } else {
                home.join(rest)
            };
        }
    }
    PathBuf::from(path)
}

// ---------------------------------------------------------------------------------------------
// Host patterns in inventory files: ranges and ports
// ---------------------------------------------------------------------------------------------

/// Splits a `hosts:` key into host names and an optional port, as Ansible's YAML plugin does:
/// `db.example.com:2222`, `[2001:db8::1]:22`, `hv[01:12].example.com`, `node-[a:c]`,
/// `web[1:9:2]`.
fn expand_host_entry(entry: &str) -> Result<(Vec<String>, Option<u16>), String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err("empty host name".into());
    }
    if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((vec![entry.to_string()], None));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some(close) = rest.find(']') {
            let inner = &rest[..close];
            if inner.parse::<std::net::Ipv6Addr>().is_ok() {
                let after = &rest[close + 1..];
                let port = match after.strip_prefix(':') {
                    Some(port) => Some(parse_entry_port(port)?),
                    None if after.is_empty() => None,
                    None => return Err(format!("cannot parse host \"{entry}\"")),
                };
                return Ok((vec![inner.to_string()], port));
            }
        }
    }
    // The last ':' outside brackets, followed by digits only, introduces a port.
    let mut depth = 0usize;
    let mut split = None;
    for (i, c) in entry.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    let (name, port) = match split {
        Some(i) if i + 1 < entry.len() && entry[i + 1..].chars().all(|c| c.is_ascii_digit()) => {
            (&entry[..i], Some(parse_entry_port(&entry[i + 1..])?))
        }
        _ => (entry, None),
    };
    if name.is_empty() {
        return Err(format!("cannot parse host \"{entry}\""));
    }
    let mut names = Vec::new();
    expand_ranges(name, &mut names)?;
    Ok((names, port))
}

fn parse_entry_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port \"{text}\" is not a port number (1-65535)")),
    }
}

const ASCII_LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Expands the first `[begin:end(:step)]` in `name`, then the rest, recursively.
fn expand_ranges(name: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = name.find('[') else {
        out.push(name.to_string());
        return Ok(());
    };
    let Some(len) = name[open..].find(']') else {
        return Err(format!("host \"{name}\": unterminated range (missing ']')"));
    };
    let head = &name[..open];
    let range = &name[open + 1..open + len];
    let tail = &name[open + len + 1..];
    let bounds: Vec<&str> = range.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(format!(
            "host \"{name}\": a host range must be [begin:end] or [begin:end:step]"
        ));
    }
    let begin = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    if end.is_empty() {
        return Err(format!("host \"{name}\": a host range needs an end value"));
    }
    let step = match bounds.get(2) {
        None => 1,
        Some(step) => match step.parse::<usize>() {
            Ok(step) if step > 0 => step,
            _ => return Err(format!("host \"{name}\": bad range step \"{step}\"")),
        },
    };
    let items: Vec<String> = match (ASCII_LETTERS.find(begin), ASCII_LETTERS.find(end)) {
        (Some(b), Some(e)) if begin.len() == 1 && end.len() == 1 => {
            if b > e {
                return Err(format!("host \"{name}\": a host range needs begin <= end"));
            }
            ASCII_LETTERS[b..=e]
                .chars()
                .step_by(step)
                .map(String::from)
                .collect()
        }
        _ => {
            let (Ok(b), Ok(e)) = (begin.parse::<u64>(), end.parse::<u64>()) else {
                return Err(format!("host \"{name}\": bad host range \"[{range}]\""));
            };
            if b > e {
                return Err(format!("host \"{name}\": a host range needs begin <= end"));
            }
            let width = if begin.len() > 1 && begin.starts_with('0') {
                if begin.len() != end.len() {
                    return Err(format!(
                        "host \"{name}\": a zero-padded range needs begin and end of equal length"
                    ));
                }
                begin.len()
            } else {
                0
            };
            let count = (e - b) / step as u64 + 1;
            if count > MAX_RANGE_HOSTS as u64 {
                return Err(format!("host \"{name}\": range expands to too many hosts"));
            }
            (b..=e)
                .step_by(step)
                .map(|n| format!("{n:0width$}"))
                .collect()
        }
    };
    for item in items {
        expand_ranges(&format!("{head}{item}{tail}"), out)?;
        if out.len() > MAX_RANGE_HOSTS {
            return Err(format!("host \"{name}\": range expands to too many hosts"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Building: groups, membership, variables
// ---------------------------------------------------------------------------------------------

/// A variable layer: name to (value, index of the file it came from).
type VarLayer = BTreeMap<String, (Value, usize)>;

#[derive(Default)]
struct GroupDef {
    children: Vec<String>,
    parents: BTreeSet<String>,
    /// Direct host members, in the order added.
    hosts: Vec<usize>,
    vars: VarLayer,
    /// `group_vars` file layers, by base directory index.
    file_vars: Vec<(usize, VarLayer)>,
}

struct HostDef {
    name: String,
    vars: VarLayer,
    file_vars: Vec<(usize, VarLayer)>,
    /// Direct groups.
    groups: BTreeSet<String>,
}

#[derive(Default)]
struct Builder {
    hosts: Vec<HostDef>,
    host_index: HashMap<String, usize>,
    groups: BTreeMap<String, GroupDef>,
    /// Every file read, in order (also the origins of variables).
    files: Vec<PathBuf>,
    hasher: Sha256,
    /// `host_vars` layers for implicit local hosts, by name.
    implicit_file_vars: BTreeMap<String, Vec<(usize, VarLayer)>>,
    /// The first source is the CloudStack API's generated inventory.
    generated: bool,
}

fn layer(vars: Map<String, Value>, origin: usize) -> VarLayer {
    vars.into_iter().map(|(k, v)| (k, (v, origin))).collect()
}

impl Builder {
    fn read_file(&mut self, path: &Path, what: &str) -> Result<(usize, String), InventoryError> {
        let bytes = std::fs::read(path).map_err(|cause| InventoryError::Io {
            path: path.to_path_buf(),
            what: format!("cannot read {what}"),
            cause,
        })?;
        let origin = self.record(path, &bytes);
        let text = String::from_utf8(bytes)
            .map_err(|_| InventoryError::invalid(path, "file is not valid utf-8"))?;
        Ok((origin, text))
    }

    /// Adds a file to the digest and the sources; returns its origin index.
    fn record(&mut self, path: &Path, bytes: &[u8]) -> usize {
        let label = path.to_string_lossy();
        self.hasher.update((label.len() as u64).to_le_bytes());
        self.hasher.update(label.as_bytes());
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self.files.push(path.to_path_buf());
        self.files.len() - 1
    }

    fn add_inventory_file(&mut self, path: &Path) -> Result<(), InventoryError> {
        let (origin, text) = self.read_file(path, "inventory")?;
        let base = path.parent().map(Path::to_path_buf);
        let groups = parse_inventory(path, &text, base)?;
        self.add_groups(origin, groups)
    }

    fn add_inventory_text(&mut self, path: &Path, bytes: &[u8]) -> Result<(), InventoryError> {
        let origin = self.record(path, bytes);
        let text = std::str::from_utf8(bytes)
            .map_err(|_| InventoryError::invalid(path, "file is not valid utf-8"))?;
        let groups = parse_inventory(path, text, None)?;
        self.add_groups(origin, groups)
    }

    fn add_groups(&mut self, origin: usize, groups: Vec<RawGroup>) -> Result<(), InventoryError> {
        for group in groups {
            self.add_group(origin, group, None)?;
        }
        Ok(())
    }

    fn origin_path(&self, origin: usize) -> PathBuf {
        self.files.get(origin).cloned().unwrap_or_default()
    }

    fn ensure_group(&mut self, name: &str) -> &mut GroupDef {
        self.groups.entry(name.to_string()).or_default()
    }

    fn is_ancestor(&self, candidate: &str, of: &str) -> bool {
        let mut stack = vec![of.to_string()];
        let mut seen = HashSet::new();
        while let Some(group) = stack.pop() {
            if group == candidate {
                return true;
            }
            if let Some(def) = self.groups.get(&group) {
                for parent in &def.parents {
                    if seen.insert(parent.clone()) {
                        stack.push(parent.clone());
                    }
                }
            }
        }
        false
    }

    fn add_child(
        &mut self,
        origin: usize,
        parent: &str,
        child: &str,
    ) -> Result<(), InventoryError> {
        if child == ALL {
            return Err(InventoryError::invalid(
                &self.origin_path(origin),
                format!("group \"{parent}\": \"all\" cannot be a child group"),
            ));
        }
        if self.is_ancestor(child, parent) {
            return Err(InventoryError::invalid(
                &self.origin_path(origin),
                format!(
                    "group \"{parent}\": adding child group \"{child}\" creates a cycle \
                     (\"{child}\" is already an ancestor of \"{parent}\")"
                ),
            ));
        }
        self.ensure_group(child);
        let def = self.ensure_group(parent);
        if !def.children.iter().any(|c| c == child) {
            def.children.push(child.to_string());
        }
        if let Some(def) = self.groups.get_mut(child) {
            def.parents.insert(parent.to_string());
        }
        Ok(())
    }

    fn add_group(
        &mut self,
        origin: usize,
        group: RawGroup,
        parent: Option<&str>,
    ) -> Result<(), InventoryError> {
        let name = group.name;
        self.ensure_group(&name);
        if let Some(parent) = parent {
            self.add_child(origin, parent, &name)?;
        }
        for section in group.sections {
            match section {
                Section::Vars(vars) => {
                    let def = self.ensure_group(&name);
                    def.vars.extend(layer(vars, origin));
                }
                Section::Hosts(hosts) => {
                    for (entry, vars) in hosts {
                        self.add_host_entry(origin, &name, &entry, vars)?;
                    }
                }
                Section::Children(children) => {
                    for child in children {
                        self.add_group(origin, child, Some(&name))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn add_host_entry(
        &mut self,
        origin: usize,
        group: &str,
        entry: &str,
        vars: Map<String, Value>,
    ) -> Result<(), InventoryError> {
        let (names, port) = expand_host_entry(entry).map_err(|message| {
            InventoryError::invalid(
                &self.origin_path(origin),
                format!("group \"{group}\": {message}"),
            )
        })?;
        for name in names {
            let index = match self.host_index.get(&name) {
                Some(&index) => index,
                None => {
                    self.hosts.push(HostDef {
                        name: name.clone(),
                        vars: VarLayer::new(),
                        file_vars: Vec::new(),
                        groups: BTreeSet::new(),
                    });
                    self.host_index.insert(name.clone(), self.hosts.len() - 1);
                    self.hosts.len() - 1
                }
            };
            let def = self.ensure_group(group);
            if !def.hosts.contains(&index) {
                def.hosts.push(index);
            }
            if let Some(host) = self.hosts.get_mut(index) {
                host.groups.insert(group.to_string());
                if let Some(port) = port {
                    host.vars
                        .insert("ansible_port".into(), (Value::from(port), origin));
                }
                host.vars.extend(layer(vars.clone(), origin));
            }
        }
        Ok(())
    }

    /// Ansible's `reconcile_inventory`: every group hangs under `all`; hosts with no group but
    /// `all` are in `ungrouped`, and only those.
    fn reconcile(&mut self) {
        self.ensure_group(ALL);
        self.ensure_group(UNGROUPED);
        let orphans: Vec<String> = self
            .groups
            .iter()
            .filter(|(name, def)| *name != ALL && def.parents.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in orphans {
            if let Some(def) = self.groups.get_mut(ALL) {
                def.children.push(name.clone());
            }
            if let Some(def) = self.groups.get_mut(&name) {
                def.parents.insert(ALL.to_string());
            }
        }
        for index in 0..self.hosts.len() {
            let groups = self.host_groups(index);
            let others = groups
                .iter()
                .filter(|g| *g != ALL && *g != UNGROUPED)
                .count();
            let in_ungrouped = groups.contains(UNGROUPED);
            if others > 0 && in_ungrouped {
                if let Some(def) = self.groups.get_mut(UNGROUPED) {
                    def.hosts.retain(|&h| h != index);
                }
                if let Some(host) = self.hosts.get_mut(index) {
                    host.groups.remove(UNGROUPED);
                }
            } else if others == 0 && !in_ungrouped {
                if let Some(def) = self.groups.get_mut(UNGROUPED) {
                    def.hosts.push(index);
                }
                if let Some(host) = self.hosts.get_mut(index) {
                    host.groups.insert(UNGROUPED.to_string());
                }
            }
        }
    }

    /// A host's groups: direct ones and their ancestors, always including `all`.
    fn host_groups(&self, index: usize) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        out.insert(ALL.to_string());
        let mut stack: Vec<String> = self
            .hosts
            .get(index)
            .map(|h| h.groups.iter().cloned().collect())
            .unwrap_or_default();
        while let Some(group) = stack.pop() {
            if out.insert(group.clone()) {
                if let Some(def) = self.groups.get(&group) {
                    stack.extend(def.parents.iter().cloned());
                }
            }
        }
        out
    }

    /// Reads `group_vars/` and `host_vars/` in `dir` for every known group and host.
    fn add_vars_dirs(&mut self, dir_index: usize, dir: &Path) -> Result<(), InventoryError> {
        let group_dir = dir.join("group_vars");
        if group_dir.is_dir() {
            let names: Vec<String> = self.groups.keys().cloned().collect();
            for name in names {
                for file in find_vars_files(&group_dir, &name)? {
                    let vars = self.read_vars_file(&file, &format!("group \"{name}\""))?;
                    if let Some(def) = self.groups.get_mut(&name) {
                        def.file_vars.push((dir_index, vars));
                    }
                }
            }
        }
        let host_dir = dir.join("host_vars");
        if host_dir.is_dir() {
            let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
            for (index, name) in names.iter().enumerate() {
                for file in find_vars_files(&host_dir, name)? {
                    let vars = self.read_vars_file(&file, &format!("host \"{name}\""))?;
                    if let Some(host) = self.hosts.get_mut(index) {
                        host.file_vars.push((dir_index, vars));
                    }
                }
            }
            for name in LOCALHOST_NAMES {
                if self.host_index.contains_key(name) {
                    continue;
                }
                for file in find_vars_files(&host_dir, name)? {
                    let vars = self.read_vars_file(&file, &format!("host \"{name}\""))?;
                    self.implicit_file_vars
                        .entry(name.to_string())
                        .or_default()
                        .push((dir_index, vars));
                }
            }
        }
        Ok(())
    }

    fn read_vars_file(&mut self, path: &Path, scope: &str) -> Result<VarLayer, InventoryError> {
        let (origin, text) = self.read_file(path, "vars file")?;
        let base = path.parent().map(Path::to_path_buf);
        let vars = parse_vars_file(path, &text, scope, base)?;
        Ok(layer(vars, origin))
    }

    /// Longest distance from `all`, as Ansible's group depth.
    fn depths(&self) -> HashMap<String, usize> {
        fn depth(
            b: &Builder,
            name: &str,
            memo: &mut HashMap<String, usize>,
            guard: &mut HashSet<String>,
        ) -> usize {
            if let Some(&d) = memo.get(name) {
                return d;
            }
            if name == ALL || !guard.insert(name.to_string()) {
                return 0;
            }
            let d = b
                .groups
                .get(name)
                .map(|g| {
                    g.parents
                        .iter()
                        .map(|p| depth(b, p, memo, guard) + 1)
                        .max()
                        .unwrap_or(1)
                })
                .unwrap_or(1);
            guard.remove(name);
            memo.insert(name.to_string(), d);
            d
        }
        let mut memo = HashMap::new();
        let mut guard = HashSet::new();
        for name in self.groups.keys() {
            depth(self, name, &mut memo, &mut guard);
        }
        memo.insert(ALL.to_string(), 0);
        memo
    }

    fn priority(&self, group: &str) -> Result<i64, InventoryError> {
        let Some((value, origin)) = self
            .groups
            .get(group)
            .and_then(|g| g.vars.get("ansible_group_priority"))
        else {
            return Ok(1);
        };
        as_integer(value).ok_or_else(|| {
            InventoryError::invalid(
                &self.origin_path(*origin),
                format!(
                    "group \"{group}\": ansible_group_priority: expected an integer, got {}",
                    show(value)
                ),
            )
        })
    }

    fn finish(self) -> Result<Inventory, InventoryError> {
        let depths = self.depths();
        let mut priorities = HashMap::new();
        for name in self.groups.keys() {
            priorities.insert(name.clone(), self.priority(name)?);
        }
        self.check_cloudstack_scope()?;

        let empty = VarLayer::new();
        let all = self.groups.get(ALL);
        let all_inline = all.map(|g| &g.vars).unwrap_or(&empty);
        let all_files: Vec<&VarLayer> = all
            .map(|g| g.file_vars.iter().map(|(_, l)| l).collect())
            .unwrap_or_default();

        // Merge every host's variables.
        let mut merged: Vec<VarLayer> = Vec::with_capacity(self.hosts.len());
        let mut memberships: Vec<BTreeSet<String>> = Vec::with_capacity(self.hosts.len());
        for (index, host) in self.hosts.iter().enumerate() {
            let groups = self.host_groups(index);
            let mut ordered: Vec<&String> = groups.iter().filter(|g| *g != ALL).collect();
            ordered.sort_by(|a, b| {
                let key = |g: &String| {
                    (
                        depths.get(g).copied().unwrap_or(1),
                        priorities.get(g).copied().unwrap_or(1),
                    )
                };
                key(a).cmp(&key(b)).then_with(|| a.cmp(b))
            });
            let defs: Vec<&GroupDef> = ordered
                .iter()
                .filter_map(|g| self.groups.get(g.as_str()))
                .collect();
            let mut vars = all_inline.clone();
            for def in &defs {
                overlay(&mut vars, &def.vars);
            }
            for layer in &all_files {
                overlay(&mut vars, layer);
            }
            // Source directory first, then group order (as Ansible's vars plugins run).
            let dir_count = defs
                .iter()
                .flat_map(|d| d.file_vars.iter().map(|(i, _)| *i + 1))
                .max()
                .unwrap_or(0);
            for dir in 0..dir_count {
                for def in &defs {
                    for (_, layer) in def.file_vars.iter().filter(|(i, _)| *i == dir) {
                        overlay(&mut vars, layer);
                    }
                }
            }
            overlay(&mut vars, &host.vars);
            for (_, layer) in &host.file_vars {
                overlay(&mut vars, layer);
            }
            merged.push(vars);
            memberships.push(groups);
        }

        // Implicit local hosts: all's vars, then a local connection, then their host_vars.
        let mut implicit_vars: Vec<(String, VarLayer)> = Vec::new();
        for name in LOCALHOST_NAMES {
            if self.host_index.contains_key(name) {
                continue;
            }
            let mut vars = all_inline.clone();
            for layer in &all_files {
                overlay(&mut vars, layer);
            }
            overlay(&mut vars, all_inline);
            vars.insert(
                "ansible_connection".into(),
                (Value::String("local".into()), usize::MAX),
            );
            if let Some(layers) = self.implicit_file_vars.get(name) {
                for (_, layer) in layers {
                    overlay(&mut vars, layer);
                }
            }
            implicit_vars.push((name.to_string(), vars));
        }

        // Connections.
        let mut conns = Vec::with_capacity(merged.len());
        let mut jumps = Vec::with_capacity(merged.len());
        for (host, vars) in self.hosts.iter().zip(&merged) {
            let (conn, jump) = self.connection(&host.name, vars)?;
            conns.push(conn);
            jumps.push(jump);
        }
        let chains = self.resolve_jumps(&jumps, &conns)?;
        for (conn, chain) in conns.iter_mut().zip(chains) {
            conn.jump = chain;
        }

        let mut implicit = Vec::new();
        for (name, vars) in implicit_vars {
            let (mut conn, _) = self.connection(&name, &vars)?;
            conn.jump.clear();
            implicit.push(Host {
                name,
                vars: to_map(&vars),
                groups: Vec::new(),
                conn,
            });
        }

        let cloudstack = match all_scope_value(all_inline, &all_files, CLOUDSTACK_VAR) {
            Some((value, origin)) if !value.is_null() => {
                Some(self.cloudstack_endpoint(value, origin)?)
            }
            _ => None,
        };

        let cloudstack_source = match all_scope_value(
            all_inline,
            &all_files,
            crate::cloudstack::inventory::SOURCE_VAR,
        ) {
            Some((value, origin)) if !value.is_null() => {
                let path = self.origin_path(origin);
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if cloudstack.is_none() {
                    return Err(InventoryError::invalid(
                        &path,
                        format!(
                            "{}: needs remedy_cloudstack (where the API is)",
                            crate::cloudstack::inventory::SOURCE_VAR
                        ),
                    ));
                }
                Some(
                    crate::cloudstack::inventory::SourceSpec::from_value(value, &dir)
                        .map_err(|m| InventoryError::invalid(&path, m))?,
                )
            }
            _ => None,
        };

        // Group membership, transitively.
        let mut groups = BTreeMap::new();
        for (name, def) in &self.groups {
            let members: Vec<usize> = memberships
                .iter()
                .enumerate()
                .filter(|(_, m)| m.contains(name))
                .map(|(i, _)| i)
                .collect();
            groups.insert(
                name.clone(),
                GroupEntry {
                    children: def.children.clone(),
                    members,
                },
            );
        }

        let hosts: Vec<Host> = self
            .hosts
            .iter()
            .zip(merged)
            .zip(memberships)
            .zip(conns)
            .map(|(((def, vars), groups), conn)| Host {
                name: def.name.clone(),
                vars: to_map(&vars),
                groups: groups.into_iter().collect(),
                conn,
            })
            .collect();
        let host_index = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.clone(), i))
            .collect();
        Ok(Inventory {
            hosts,
            host_index,
            implicit,
            groups,
            cloudstack,
            cloudstack_source,
            generated: self.generated,
            sources: self.files,
            digest: hex(&self.hasher.finalize()),
        })
    }

    /// `remedy_cloudstack` configures the whole inventory, so only `all` may set it.
    fn check_cloudstack_scope(&self) -> Result<(), InventoryError> {
        let misplaced = |layer: &VarLayer| {
            layer
                .get(CLOUDSTACK_VAR)
                .filter(|(v, _)| !v.is_null())
                .map(|(_, origin)| *origin)
        };
        let hint = "set it once for all hosts (all.vars or group_vars/all.yml)";
        for (name, def) in &self.groups {
            if name == ALL {
                continue;
            }
            let layers = std::iter::once(&def.vars).chain(def.file_vars.iter().map(|(_, l)| l));
            for layer in layers {
                if let Some(origin) = misplaced(layer) {
                    return Err(InventoryError::invalid(
                        &self.origin_path(origin),
                        format!(
                            "group \"{name}\": {CLOUDSTACK_VAR} cannot be set per group; {hint}"
                        ),
                    ));
                }
            }
        }
        for host in &self.hosts {
            let layers = std::iter::once(&host.vars).chain(host.file_vars.iter().map(|(_, l)| l));
            for layer in layers {
                if let Some(origin) = misplaced(layer) {
                    return Err(InventoryError::invalid(
                        &self.origin_path(origin),
                        format!(
                            "host \"{}\": {CLOUDSTACK_VAR} cannot be set per host; {hint}",
                            host.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn cloudstack_endpoint(
        &self,
        value: &Value,
        origin: usize,
    ) -> Result<CloudStackEndpoint, InventoryError> {
        let bad = |what: &str| {
            InventoryError::invalid(
                &self.origin_path(origin),
                format!("{CLOUDSTACK_VAR}: {what}"),
            )
        };
        let map = value
            .as_object()
            .ok_or_else(|| bad("expected a mapping with endpoint, api_key, secret_key"))?;
        let base = self.origin_path(origin);
        let relative = |p: &str| -> PathBuf {
            let path = PathBuf::from(p);
            match base.parent() {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path,
            }
        };
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        // The same test as the validator's: a key set to null is absent.
        let has = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
        let source = if let Some(sim) = map.get("simulator").filter(|v| !v.is_null()) {
            let scenario = sim
                .get("scenario")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("simulator: expected { scenario: NAME }"))?;
            CloudStackSource::Simulator {
                scenario: scenario.to_string(),
            }
        } else if has("cmk_profile") || has("cmk_config") {
            CloudStackSource::Cmk {
                config: text("cmk_config").map(|p| relative(&p)),
                profile: text("cmk_profile"),
            }
        } else {
            let endpoint = text("endpoint").ok_or_else(|| bad("missing endpoint"))?;
            let api_key =
                match map.get("api_key") {
                    Some(Value::String(key)) => ApiKey::Inline(key.clone()),
                    Some(other) => ApiKey::Ref(SecretRef::from_value(other).ok_or_else(|| {
                        bad(&format!("api_key: expected a string or {REF_FORMS}"))
                    })?),
                    None => return Err(bad("missing api_key")),
                };
            let secret_key = map
                .get("secret_key")
                .and_then(SecretRef::from_value)
                .ok_or_else(|| bad(&format!("secret_key: expected {REF_FORMS}")))?;
            CloudStackSource::Keys {
                endpoint,
                api_key,
                secret_key,
            }
        };
        Ok(CloudStackEndpoint {
            source,
            verify_tls: map
                .get("verify_tls")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            ca_file: text("ca_file").map(|p| relative(&p)),
        })
    }

    fn var_error(&self, host: &str, var: &str, origin: usize, message: String) -> InventoryError {
        let path = if origin == usize::MAX {
            PathBuf::from("<implicit localhost>")
        } else {
            self.origin_path(origin)
        };
        InventoryError::invalid(&path, format!("host \"{host}\": {var}: {message}"))
    }

    /// A string connection variable, `{{ var }}` references expanded; the last alias set wins.
    fn conn_string(
        &self,
        host: &str,
        vars: &VarLayer,
        names: &[&'static str],
    ) -> Result<Option<(String, usize, &'static str)>, InventoryError> {
        let Some((name, value, origin)) = pick(vars, names) else {
            return Ok(None);
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected a string, got {}", show(other)),
                ))
            }
        };
        let text = render_simple(&text, vars, host, 0)
            .map_err(|message| self.var_error(host, name, origin, message))?;
        Ok(Some((text, origin, name)))
    }

    fn connection(
        &self,
        host: &str,
        vars: &VarLayer,
    ) -> Result<(Connection, JumpSpec), InventoryError> {
        let kind = match self.conn_string(host, vars, &["ansible_connection"])? {
            None => ConnectionKind::Ssh,
            Some((text, origin, name)) => match text.as_str() {
                "ssh" | "smart" | "paramiko" | "paramiko_ssh" => ConnectionKind::Ssh,
                "local" => ConnectionKind::Local,
                other => {
                    return Err(self.var_error(
                        host,
                        name,
                        origin,
                        format!("unsupported connection \"{other}\" (expected ssh or local)"),
                    ))
                }
            },
        };
        let address = match self.conn_string(host, vars, &["ansible_host", "ansible_ssh_host"])? {
            Some((text, origin, name)) if text.trim().is_empty() => {
                return Err(self.var_error(host, name, origin, "empty address".into()))
            }
            Some((text, _, _)) => text,
            None => host.to_string(),
        };
        let port = match pick(vars, &["ansible_port", "ansible_ssh_port"]) {
            None => 22,
            Some((name, value, origin)) => as_port(value).ok_or_else(|| {
                self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected a port number (1-65535), got {}", show(value)),
                )
            })?,
        };
        let user = match self.conn_string(host, vars, &["ansible_user", "ansible_ssh_user"])? {
            Some((text, origin, name)) if text.is_empty() => {
                return Err(self.var_error(host, name, origin, "empty user".into()))
            }
            Some((text, _, _)) => text,
            None => "root".to_string(),
        };
        let key_file = self
            .conn_string(
                host,
                vars,
                &["ansible_private_key_file", "ansible_ssh_private_key_file"],
            )?
            .filter(|(text, _, _)| !text.is_empty())
            .map(|(text, _, _)| expand_tilde(&text));
        let become_ = match pick(vars, &["ansible_become"]) {
            None => false,
            Some((name, value, origin)) => ansible_bool(value).ok_or_else(|| {
                self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected a boolean, got {}", show(value)),
                )
            })?,
        };
        let host_key = self.host_key_policy(host, vars)?;
        let known_hosts_file = self.known_hosts_file(host, vars)?;
        let jump = if kind == ConnectionKind::Local {
            JumpSpec::Direct
        } else {
            self.jump_spec(host, vars)?
        };
        Ok((
            Connection {
                kind,
                address,
                port,
                user,
                key_file,
                jump: Vec::new(),
                host_key,
                known_hosts_file,
                become_,
            },
            jump,
        ))
    }

    fn host_key_policy(
        &self,
        host: &str,
        vars: &VarLayer,
    ) -> Result<HostKeyPolicy, InventoryError> {
        let fingerprint = match self.conn_string(host, vars, &["remedy_host_key_fingerprint"])? {
            None => None,
            Some((text, origin, name)) => {
                let body = text.strip_prefix("SHA256:").unwrap_or("");
                let valid = !body.is_empty()
                    && body
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
                if !valid {
                    return Err(self.var_error(
                        host,
                        name,
                        origin,
                        format!(
                            "expected an OpenSSH SHA256 fingerprint (\"SHA256:...\", as printed \
                             by ssh-keygen -lf), got \"{text}\""
                        ),
                    ));
                }
                Some(text)
            }
        };
        let policy = self.conn_string(host, vars, &["remedy_host_key_policy"])?;
        match policy {
            // A fingerprint alone pins the key.
            None => Ok(fingerprint.map_or(HostKeyPolicy::Strict, HostKeyPolicy::Pinned)),
            Some((text, origin, name)) => match text.as_str() {
                "strict" => Ok(HostKeyPolicy::Strict),
                "accept-new" => Ok(HostKeyPolicy::AcceptNew),
                "pinned" => fingerprint.map(HostKeyPolicy::Pinned).ok_or_else(|| {
                    self.var_error(
                        host,
                        name,
                        origin,
                        "pinned needs remedy_host_key_fingerprint (\"SHA256:...\")".into(),
                    )
                }),
                other => Err(self.var_error(
                    host,
                    name,
                    origin,
                    format!("unknown policy \"{other}\" (expected strict, accept-new, pinned)"),
                )),
            },
        }
    }

    /// `remedy_known_hosts_file`: `~` expanded; a relative path is taken from the directory of
    /// the inventory file that set it, so the inventory works whatever the current directory.
    fn known_hosts_file(
        &self,
        host: &str,
        vars: &VarLayer,
    ) -> Result<Option<PathBuf>, InventoryError> {
        let Some((text, origin, name)) =
            self.conn_string(host, vars, &["remedy_known_hosts_file"])?
        else {
            return Ok(None);
        };
        if text.trim().is_empty() {
            return Err(self.var_error(host, name, origin, "empty path".into()));
        }
        let path = expand_tilde(text.trim());
        if path.is_absolute() || origin == usize::MAX {
            return Ok(Some(path));
        }
        let base = self
            .origin_path(origin)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(Some(base.join(path)))
    }

    fn jump_spec(&self, host: &str, vars: &VarLayer) -> Result<JumpSpec, InventoryError> {
        if let Some((name, value, origin)) = pick(vars, &["remedy_jump"]) {
            return match value {
                Value::String(target) if target.is_empty() => Ok(JumpSpec::Direct),
                Value::String(target) => {
                    let target = render_simple(target, vars, host, 0)
                        .map_err(|message| self.var_error(host, name, origin, message))?;
                    Ok(JumpSpec::Host { target, origin })
                }
                other => Err(self.var_error(
                    host,
                    name,
                    origin,
                    format!("expected an inventory host name, got {}", show(other)),
                )),
            };
        }
        // As ssh sees them: ansible_ssh_args, then common args, then extra args; the first
        // ProxyJump (-J) or ProxyCommand wins, as in OpenSSH.
        for var in [
            "ansible_ssh_args",
            "ansible_ssh_common_args",
            "ansible_ssh_extra_args",
        ] {
            let Some((text, origin, name)) = self.conn_string(host, vars, &[var])? else {
                continue;
            };
            let words = shell_words(&text)
                .map_err(|message| self.var_error(host, name, origin, message))?;
            match proxy_option(&words) {
                Proxy::None => {}
                Proxy::Jump(chain) => {
                    if chain.eq_ignore_ascii_case("none") {
                        return Ok(JumpSpec::Direct);
                    }
                    let hops: Vec<String> =
                        chain.split(',').map(|h| h.trim().to_string()).collect();
                    if hops.iter().any(String::is_empty) {
                        return Err(self.var_error(
                            host,
                            name,
                            origin,
                            format!("empty hop in ProxyJump \"{chain}\""),
                        ));
                    }
                    return Ok(JumpSpec::Chain(hops));
                }
                Proxy::Command(command) => {
                    if command.eq_ignore_ascii_case("none") {
                        return Ok(JumpSpec::Direct);
                    }
                    return Err(self.var_error(
                        host,
                        name,
                        origin,
                        "ProxyCommand is not supported; use -o ProxyJump=HOST, or set \
                         remedy_jump to an inventory host"
                            .into(),
                    ));
                }
            }
        }
        Ok(JumpSpec::Direct)
    }

    /// Expands `remedy_jump` chains (the jump host's own chain comes first), refusing unknown
    /// hosts, local hosts and cycles.
    fn resolve_jumps(
        &self,
        specs: &[JumpSpec],
        conns: &[Connection],
    ) -> Result<Vec<Vec<String>>, InventoryError> {
        let mut memo: Vec<Option<Vec<String>>> = vec![None; specs.len()];
        for start in 0..specs.len() {
            self.jump_chain(start, specs, conns, &mut memo, &mut Vec::new())?;
        }
        Ok(memo.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn jump_chain(
        &self,
        index: usize,
        specs: &[JumpSpec],
        conns: &[Connection],
        memo: &mut Vec<Option<Vec<String>>>,
        stack: &mut Vec<usize>,
    ) -> Result<Vec<String>, InventoryError> {
        if let Some(Some(chain)) = memo.get(index) {
            return Ok(chain.clone());
        }
        let name = self
            .hosts
            .get(index)
            .map(|h| h.name.clone())
            .unwrap_or_default();
        let chain = match specs.get(index) {
            None | Some(JumpSpec::Direct) => Vec::new(),
            Some(JumpSpec::Chain(hops)) => hops.clone(),
            Some(JumpSpec::Host { target, origin }) => {
                let origin = *origin;
                let Some(&target_index) = self.host_index.get(target) else {
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!("unknown host \"{target}\" (not in the inventory)"),
                    ));
                };
                if let Some(at) = stack.iter().position(|&i| i == target_index) {
                    let mut cycle: Vec<&str> = stack[at..]
                        .iter()
                        .filter_map(|&i| self.hosts.get(i).map(|h| h.name.as_str()))
                        .collect();
                    cycle.push(&name);
                    cycle.push(target);
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!("jump cycle: {}", cycle.join(" -> ")),
                    ));
                }
                if target_index == index {
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!(
                            "jump cycle: {name} -> {name} (set remedy_jump: ~ on \"{name}\" to \
                             connect to it directly)"
                        ),
                    ));
                }
                if conns.get(target_index).map(|c| &c.kind) == Some(&ConnectionKind::Local) {
                    return Err(self.var_error(
                        &name,
                        "remedy_jump",
                        origin,
                        format!("jump host \"{target}\" has a local connection"),
                    ));
                }
                stack.push(index);
                let mut chain = self.jump_chain(target_index, specs, conns, memo, stack)?;
                stack.pop();
                chain.push(target.clone());
                chain
            }
        };
        if let Some(slot) = memo.get_mut(index) {
            *slot = Some(chain.clone());
        }
        Ok(chain)
    }
}

enum JumpSpec {
    Direct,
    /// `remedy_jump`: an inventory host.
    Host {
        target: String,
        origin: usize,
    },
    /// An SSH ProxyJump chain, as written.
    Chain(Vec<String>),
}

fn overlay(into: &mut VarLayer, layer: &VarLayer) {
    for (key, value) in layer {
        into.insert(key.clone(), value.clone());
    }
}

fn to_map(layer: &VarLayer) -> Map<String, Value> {
    layer
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

fn all_scope_value<'a>(
    inline: &'a VarLayer,
    files: &[&'a VarLayer],
    name: &str,
) -> Option<(&'a Value, usize)> {
    files
        .iter()
        .rev()
        .find_map(|l| l.get(name))
        .or_else(|| inline.get(name))
        .map(|(v, o)| (v, *o))
}

/// The value of the last of `names` that is set (not null), as Ansible resolves aliases.
fn pick<'a>(
    vars: &'a VarLayer,
    names: &[&'static str],
) -> Option<(&'static str, &'a Value, usize)> {
    names.iter().rev().find_map(|name| match vars.get(*name) {
        Some((value, origin)) if !value.is_null() => Some((*name, value, *origin)),
        _ => None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short rendering of a (non-secret) value for messages.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_port(value: &Value) -> Option<u16> {
    as_integer(value)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&p| p > 0)
}

/// Ansible's boolean conversion.
fn ansible_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => {
            let x = n.as_f64()?;
            if x == 1.0 {
                Some(true)
            } else if x == 0.0 {
                Some(false)
            } else {
                None
            }
        }
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Expands plain `{{ var }}` references (and `inventory_hostname`) in a connection variable.
fn render_simple(text: &str, vars: &VarLayer, host: &str, depth: u8) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_string());
    }
    if text.contains("{%") {
        return Err("template statements ({% %}) are not supported in connection variables".into());
    }
    if depth > 8 {
        return Err("variable references nest too deeply".into());
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unterminated {{".into());
        };
        let expr = after[..end].trim();
        let is_ident = !expr.is_empty()
            && !expr.starts_with(|c: char| c.is_ascii_digit())
            && expr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_ident {
            return Err(format!(
                "only plain {{{{ variable }}}} references are supported in connection \
                 variables, not {{{{ {expr} }}}}"
            ));
        }
        let value = match expr {
            "inventory_hostname" => host.to_string(),
            "inventory_hostname_short" => host.split('.').next().unwrap_or(host).to_string(),
            _ => match vars.get(expr) {
                Some((Value::String(s), _)) => render_simple(s, vars, host, depth + 1)?,
                Some((Value::Number(n), _)) => n.to_string(),
                Some((Value::Bool(b), _)) => b.to_string(),
                Some(_) => return Err(format!("variable \"{expr}\" is not a string")),
                None => return Err(format!("undefined variable \"{expr}\"")),
            },
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits an ssh argument string as a POSIX shell would (quotes and backslashes).
fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

enum Proxy {
    None,
    Jump(String),
    Command(String),
}

/// The first ProxyJump (`-J`, `-o ProxyJump=`) or ProxyCommand in ssh arguments.
fn proxy_option(words: &[String]) -> Proxy {
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let option = if word == "-J" {
            match iter.next() {
                Some(value) => return Proxy::Jump(value.clone()),
                None => continue,
            }
        } else if let Some(value) = word.strip_prefix("-J") {
            return Proxy::Jump(value.to_string());
        } else if word == "-o" {
            match iter.next() {
                Some(option) => option.as_str(),
                None => continue,
            }
        } else if let Some(option) = word.strip_prefix("-o") {
            option
        } else {
            continue;
        };
        let option = option.trim();
        let split = option
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(option.len());
        let (key, value) = option.split_at(split);
        let value = value
            .trim_start_matches(|c: char| c.is_whitespace())
            .trim_start_matches('=')
            .trim();
        if key.eq_ignore_ascii_case("proxyjump") {
            return Proxy::Jump(value.to_string());
        }
        if key.eq_ignore_ascii_case("proxycommand") {
            return Proxy::Command(value.to_string());
        }
    }
    Proxy::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn inv(yaml: &str) -> Inventory {
        match Inventory::from_str("test.yml", yaml) {
            Ok(inv) => inv,
            Err(err) => panic!("inventory should load: {err}"),
        }
    }

    fn err(yaml: &str) -> String {
        match Inventory::from_str("test.yml", yaml) {
            Ok(_) => panic!("inventory should be refused"),
            Err(err) => err.to_string(),
        }
    }

    fn names(hosts: &[&Host]) -> Vec<String> {
        hosts.iter().map(|h| h.name.clone()).collect()
    }

    fn var<'a>(inv: &'a Inventory, host: &str, name: &str) -> &'a Value {
        &inv.host(host).expect("host").vars[name]
    }

    /// The realistic shape operators have: a bastion, a management server, KVM hypervisors and
    /// virtual routers nested under a `cloudstack` parent group.
    const CLOUD: &str = r#"
all:
  vars:
    ansible_user: ops
    ntp_server: ntp.example.com
    remedy_cloudstack:
      endpoint: http://127.0.0.1:8080/client/api
      api_key: { env: CS_API_KEY }
      secret_key: { env: CS_SECRET_KEY }
  hosts:
    bastion:
      ansible_host: 203.0.113.10
      remedy_host_key_policy: accept-new
  children:
    cloudstack:
      vars:
        remedy_jump: bastion
        ntp_server: ntp.cloud.example.com
      children:
        management:
          hosts:
            mgmt1:
              ansible_host: 10.0.0.5
        hypervisors:
          vars:
            ansible_become: true
          hosts:
            kvm[01:03].example.com:
        routers:
          vars:
            ansible_port: 3922
            ansible_user: root
            ansible_ssh_private_key_file: /root/.ssh/id_rsa.cloud
          hosts:
            r-12-VM:
              ansible_host: 169.254.1.12
            r-15-VM:
              ansible_host: 169.254.1.15
        databases:
"#;

    #[test]
    fn realistic_inventory_loads_with_groups_and_order() {
        let inv = inv(CLOUD);
        let all: Vec<&str> = inv.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(
            all,
            [
                "bastion",
                "mgmt1",
                "kvm01.example.com",
                "kvm02.example.com",
                "kvm03.example.com",
                "r-12-VM",
                "r-15-VM"
            ]
        );
        assert_eq!(
            inv.group_names(),
            [
                "all",
                "cloudstack",
                "databases",
                "hypervisors",
                "management",
                "routers",
                "ungrouped"
            ]
        );
        assert_eq!(
            inv.group_children("cloudstack").expect("group"),
            ["management", "hypervisors", "routers", "databases"]
        );
        assert_eq!(
            names(&inv.group_hosts("cloudstack").expect("group")),
            [
                "mgmt1",
                "kvm01.example.com",
                "kvm02.example.com",
                "kvm03.example.com",
                "r-12-VM",
                "r-15-VM"
            ]
        );
        assert_eq!(inv.group_hosts("databases").expect("group").len(), 0);
        assert!(inv.group_hosts("nope").is_none());
        assert_eq!(
            names(&inv.group_hosts("ungrouped").expect("g")),
            ["bastion"]
        );
        let r12 = inv.host("r-12-VM").expect("router");
        assert_eq!(r12.groups, ["all", "cloudstack", "routers"]);
        assert_eq!(r12.conn.address, "169.254.1.12");
        assert_eq!(r12.conn.port, 3922);
        assert_eq!(r12.conn.user, "root");
        assert_eq!(
            r12.conn.key_file.as_deref(),
            Some(Path::new("/root/.ssh/id_rsa.cloud"))
        );
        assert_eq!(r12.conn.jump, ["bastion"]);
        assert_eq!(r12.conn.host_key, HostKeyPolicy::Strict);
        let kvm = inv.host("kvm02.example.com").expect("kvm");
        assert!(kvm.conn.become_);
        assert_eq!(kvm.conn.user, "ops");
        assert_eq!(kvm.conn.address, "kvm02.example.com");
        assert_eq!(kvm.conn.port, 22);
        let bastion = inv.host("bastion").expect("bastion");
        assert!(bastion.conn.jump.is_empty());
        assert_eq!(bastion.conn.host_key, HostKeyPolicy::AcceptNew);
        assert_eq!(bastion.groups, ["all", "ungrouped"]);
        assert_eq!(var(&inv, "mgmt1", "ntp_server"), "ntp.cloud.example.com");
        assert_eq!(var(&inv, "bastion", "ntp_server"), "ntp.example.com");
        let cs = inv.cloudstack().expect("endpoint");
        let CloudStackSource::Keys {
            endpoint,
            api_key,
            secret_key,
        } = &cs.source
        else {
            panic!("{cs:?}")
        };
        assert_eq!(endpoint, "http://127.0.0.1:8080/client/api");
        assert!(matches!(api_key, ApiKey::Ref(SecretRef::Env(n)) if n == "CS_API_KEY"));
        assert_eq!(*secret_key, SecretRef::Env("CS_SECRET_KEY".into()));
        assert!(cs.verify_tls);
        assert_eq!(
            inv.secret_refs(),
            [
                (
                    "remedy_cloudstack.api_key".to_string(),
                    SecretRef::Env("CS_API_KEY".into())
                ),
                (
                    "remedy_cloudstack.secret_key".to_string(),
                    SecretRef::Env("CS_SECRET_KEY".into())
                ),
            ]
        );
        assert_eq!(inv.sources(), [PathBuf::from("test.yml")]);
        assert_eq!(inv.digest().len(), 64);
    }

    #[test]
    fn shipped_example_inventory_loads() {
        let text = include_str!("../../../inventories/example-prod.yml");
        let inv = match Inventory::from_str("inventories/example-prod.yml", text) {
            Ok(inv) => inv,
            Err(err) => panic!("the example inventory must load: {err}"),
        };
        assert!(inv.cloudstack().is_some());
        assert!(inv.hosts().count() >= 10);
        let router = inv.host("r-1043-VM").expect("router");
        assert_eq!(
            router.conn.jump,
            ["bastion1.example.com", "kvm02.z1.cloud.example.com"]
        );
        assert_eq!(router.conn.port, 3922);
        assert!(matches!(
            inv.host("bastion1.example.com")
                .expect("bastion")
                .conn
                .host_key,
            HostKeyPolicy::Pinned(_)
        ));
        assert_eq!(inv.select("kvm:!maintenance").expect("pattern").len(), 5);
    }

    #[test]
    fn precedence_deeper_group_wins_then_host() {
        let inv = inv(r#"
all:
  vars: { level: all, only_all: 1 }
  children:
    parent:
      vars: { level: parent, from_parent: p }
      children:
        child:
          vars: { level: child }
          hosts:
            h1:
            h2: { level: host }
"#);
        assert_eq!(var(&inv, "h1", "level"), "child");
        assert_eq!(var(&inv, "h2", "level"), "host");
        assert_eq!(var(&inv, "h1", "from_parent"), "p");
        assert_eq!(var(&inv, "h1", "only_all"), 1);
    }

    #[test]
    fn precedence_same_depth_alphabetical_later_wins() {
        let inv = inv(r#"
zeta:
  vars: { color: zeta }
  hosts: { h1: }
alpha:
  vars: { color: alpha }
  hosts: { h1: }
"#);
        assert_eq!(var(&inv, "h1", "color"), "zeta");
    }

    #[test]
    fn precedence_group_priority_overrides_name_order() {
        let inv = inv(r#"
alpha:
  vars: { color: alpha, ansible_group_priority: 10 }
  hosts: { h1: }
zeta:
  vars: { color: zeta }
  hosts: { h1: }
"#);
        assert_eq!(var(&inv, "h1", "color"), "alpha");
    }

    #[test]
    fn precedence_depth_is_longest_path_from_all() {
        // `leaf` is a direct child of all AND nested two deep: depth 3 beats `mid` (depth 2).
        let inv = inv(r#"
top:
  children:
    mid:
      vars: { x: mid }
      children:
        leaf:
leaf:
  vars: { x: leaf }
  hosts: { h1: }
mid:
  hosts: { h1: }
"#);
        assert_eq!(var(&inv, "h1", "x"), "leaf");
    }

    #[test]
    fn replacement_merge_not_deep_merge() {
        let inv = inv(r#"
all:
  vars:
    settings: { a: 1, b: 2 }
  children:
    g:
      vars:
        settings: { a: 10 }
      hosts: { h1: }
"#);
        assert_eq!(var(&inv, "h1", "settings"), &serde_json::json!({"a": 10}));
    }

    #[test]
    fn host_in_several_groups_and_repeated_definitions_merge_later_wins() {
        let inv = inv(r#"
web:
  hosts:
    h1: { a: 1, b: 1 }
db:
  hosts:
    h1: { b: 2 }
"#);
        let h1 = inv.host("h1").expect("h1");
        assert_eq!(h1.groups, ["all", "db", "web"]);
        assert_eq!(h1.vars["a"], 1);
        assert_eq!(h1.vars["b"], 2);
        assert_eq!(inv.hosts().count(), 1);
    }

    #[test]
    fn ungrouped_holds_only_hosts_without_other_groups() {
        let inv = inv(r#"
all:
  hosts:
    lonely:
    busy:
  children:
    ungrouped:
      hosts:
        also_web:
    web:
      hosts:
        busy:
        also_web:
"#);
        assert_eq!(names(&inv.group_hosts("ungrouped").expect("g")), ["lonely"]);
        assert_eq!(inv.host("also_web").expect("h").groups, ["all", "web"]);
    }

    #[test]
    fn string_forms_and_null_sections_are_accepted() {
        let inv = inv(r#"
all:
  children:
    web:
      hosts: web1
      vars:
    lb:
      children: web
other:
"#);
        assert_eq!(names(&inv.group_hosts("lb").expect("g")), ["web1"]);
        assert!(inv.group_names().contains(&"other"));
    }

    #[test]
    fn host_ranges_and_ports() {
        let inv = inv(r#"
g:
  hosts:
    web[1:3]:
    db-[a:c].lan:
    node[01:05:2]:
    alt.example.com:2222:
    "[2001:db8::1]:2200":
    2001:db8::2:
"#);
        let all: Vec<&str> = inv.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(
            all,
            [
                "web1",
                "web2",
                "web3",
                "db-a.lan",
                "db-b.lan",
                "db-c.lan",
                "node01",
                "node03",
                "node05",
                "alt.example.com",
                "2001:db8::1",
                "2001:db8::2"
            ]
        );
        assert_eq!(inv.host("alt.example.com").expect("h").conn.port, 2222);
        assert_eq!(inv.host("2001:db8::1").expect("h").conn.port, 2200);
        assert_eq!(inv.host("2001:db8::2").expect("h").conn.port, 22);
        let e = err("g:\n  hosts:\n    web[01:5]:\n");
        assert!(e.contains("equal length"), "{e}");
    }

    #[test]
    fn explicit_port_var_beats_host_port_suffix() {
        let inv = inv("g:\n  hosts:\n    h:2222: { ansible_port: 2200 }\n");
        assert_eq!(inv.host("h").expect("h").conn.port, 2200);
    }

    #[test]
    fn unknown_key_in_group_is_refused_with_position() {
        let text = "all:\n  children:\n    routers:\n      vars: {}\n      host:\n        r1:\n";
        let e = match Inventory::from_str("inventories/prod.yml", text) {
            Ok(_) => panic!("should fail"),
            Err(e) => e,
        };
        assert_eq!(
            e.to_string(),
            "inventories/prod.yml:5:7: group \"routers\": unknown key \"host\" \
             (expected hosts, vars, children)"
        );
        assert_eq!(e.location(), Some((5, 7)));
        assert_eq!(e.path(), Some(Path::new("inventories/prod.yml")));
    }

    #[test]
    fn structural_mistakes_are_refused() {
        let e = err("web:\n  hosts:\n    - web1\n");
        assert!(
            e.starts_with("test.yml:3:5: group \"web\": hosts must be a mapping"),
            "{e}"
        );
        let e = err("web:\n  children:\n    - db\n");
        assert!(e.contains("children must be a mapping"), "{e}");
        let e = err("web: 3\n");
        assert!(e.contains("group \"web\": expected a mapping"), "{e}");
        let e = err("web:\n  hosts:\n    h1: just-a-string\n");
        assert!(
            e.contains("host \"h1\": expected a mapping of variables"),
            "{e}"
        );
        let e = err("web:\n  hosts:\n    h1:\n    h1:\n");
        assert!(e.contains("host \"h1\" is listed twice"), "{e}");
        let e = err("plugin: aws_ec2\n");
        assert!(e.contains("inventory plugin configuration"), "{e}");
        let e = err("[web]\nweb1\n");
        assert!(e.starts_with("test.yml:1:1:"), "{e}");
        assert!(e.contains("looks like an ini inventory"), "{e}");
        let e = err("web:\n  hosts:\n    a: b: c\n");
        assert!(e.starts_with("test.yml:3:"), "{e}");
        assert!(!e.contains(" at line 3 "), "{e}");
        let e = err("a:\n  children:\n    b:\n      children:\n        a:\n");
        assert!(e.contains("creates a cycle"), "{e}");
        let e = err("a:\n  children:\n    all:\n");
        assert!(e.contains("\"all\" cannot be a child"), "{e}");
        let e = err("web:\n  vars:\n    x: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n");
        assert!(e.contains("ansible-vault"), "{e}");
    }

    #[test]
    fn empty_document_is_an_empty_inventory() {
        let inv = inv("# nothing yet\n");
        assert_eq!(inv.hosts().count(), 0);
        assert_eq!(inv.group_names(), ["all", "ungrouped"]);
    }

    #[test]
    fn yaml_merge_keys_and_unsafe_tag_in_vars() {
        let inv = inv(r#"
all:
  vars:
    defaults: &defaults { ansible_user: admin, ansible_port: 2200 }
  hosts:
    h1:
      <<: *defaults
      ansible_port: 2201
      motd: !unsafe "{{ not a template }}"
"#);
        let h1 = inv.host("h1").expect("h1");
        assert_eq!(h1.conn.user, "admin");
        assert_eq!(h1.conn.port, 2201);
        assert_eq!(h1.vars["motd"], "{{ not a template }}");
    }

    #[test]
    fn bad_var_type_names_host_and_var() {
        let e = err("g:\n  vars:\n    ansible_port: abc\n  hosts:\n    hv1:\n");
        assert_eq!(
            e,
            "test.yml: host \"hv1\": ansible_port: expected a port number (1-65535), got \"abc\""
        );
        let e = err("g:\n  hosts:\n    hv1: { ansible_become: maybe }\n");
        assert!(
            e.contains("host \"hv1\": ansible_become: expected a boolean"),
            "{e}"
        );
        let e = err("g:\n  hosts:\n    hv1: { ansible_connection: winrm }\n");
        assert!(e.contains("unsupported connection \"winrm\""), "{e}");
    }

    #[test]
    fn ansible_booleans_and_string_ports() {
        let inv = inv("g:\n  hosts:\n    h: { ansible_become: \"yes\", ansible_port: \"2022\" }\n");
        let h = inv.host("h").expect("h");
        assert!(h.conn.become_);
        assert_eq!(h.conn.port, 2022);
    }

    #[test]
    fn connection_var_aliases_and_simple_templates() {
        let inv = inv(r#"
all:
  vars:
    mgmt_domain: mgmt.example.com
  hosts:
    hv1:
      ansible_host: "{{ inventory_hostname }}.{{ mgmt_domain }}"
      ansible_ssh_user: admin
      ansible_private_key_file: /keys/a
    hv2:
      ansible_ssh_host: 10.1.1.2
      ansible_ssh_port: 2222
"#);
        let hv1 = inv.host("hv1").expect("h");
        assert_eq!(hv1.conn.address, "hv1.mgmt.example.com");
        assert_eq!(hv1.conn.user, "admin");
        assert_eq!(hv1.conn.key_file.as_deref(), Some(Path::new("/keys/a")));
        // Host vars keep the raw value.
        assert_eq!(
            hv1.vars["ansible_host"],
            "{{ inventory_hostname }}.{{ mgmt_domain }}"
        );
        let hv2 = inv.host("hv2").expect("h");
        assert_eq!(hv2.conn.address, "10.1.1.2");
        assert_eq!(hv2.conn.port, 2222);
        let e = err("g:\n  hosts:\n    h: { ansible_host: \"{{ lookup('env', 'X') }}\" }\n");
        assert!(e.contains("only plain {{ variable }} references"), "{e}");
    }

    #[test]
    fn inline_secrets_are_refused_without_echoing_them() {
        for var in SECRET_VARS {
            let text = format!("g:\n  hosts:\n    h1:\n      {var}: hunter2-s3cret\n");
            let e = err(&text);
            assert!(e.contains("inline secrets are not allowed"), "{e}");
            assert!(e.contains(var), "{e}");
            assert!(e.starts_with("test.yml:4:"), "{e}");
            assert!(!e.contains("hunter2"), "secret leaked: {e}");
        }
        let text = "all:\n  vars:\n    remedy_cloudstack:\n      endpoint: http://cs:8080/client/api\n      api_key: AKEY\n      secret_key: Sup3rS3cret\n";
        let e = err(text);
        assert!(
            e.contains("remedy_cloudstack.secret_key: inline secrets are not allowed"),
            "{e}"
        );
        assert!(!e.contains("Sup3rS3cret"), "secret leaked: {e}");
        let e = err("g:\n  vars:\n    ansible_become_password: { env: X, file: y }\n");
        assert!(e.contains("expected exactly one of"), "{e}");
    }

    #[test]
    fn secret_refs_are_kept_and_listed() {
        let inv = inv(r#"
all:
  vars:
    remedy_cloudstack:
      endpoint: https://cs.example.com/client/api
      api_key: plain-identifier
      secret_key: { file: /etc/remedy/cs.secret }
  children:
    kvm:
      vars:
        ansible_become_password: { env: KVM_SUDO }
      hosts: { hv1: ~, hv2: ~ }
"#);
        let cs = inv.cloudstack().expect("cs");
        assert!(matches!(
            &cs.source,
            CloudStackSource::Keys { api_key: ApiKey::Inline(k), .. } if k == "plain-identifier"
        ));
        assert_eq!(
            var(&inv, "hv1", "ansible_become_password"),
            &serde_json::json!({"env": "KVM_SUDO"})
        );
        assert_eq!(
            inv.secret_refs(),
            [
                (
                    "remedy_cloudstack.secret_key".to_string(),
                    SecretRef::File("/etc/remedy/cs.secret".into())
                ),
                (
                    "hv1.ansible_become_password".to_string(),
                    SecretRef::Env("KVM_SUDO".into())
                ),
            ]
        );
    }

    #[test]
    fn cloudstack_sources_cmk_and_simulator() {
        let i = inv("all:\n  vars:\n    remedy_cloudstack:\n      cmk_profile: prod\n      ca_file: certs/ca.pem\n      verify_tls: true\n");
        let cs = i.cloudstack().expect("cs");
        assert!(matches!(
            &cs.source,
            CloudStackSource::Cmk { config: None, profile: Some(p) } if p == "prod"
        ));
        // relative to the file that says it (here "test.yml", in the current directory)
        assert_eq!(cs.ca_file.as_deref(), Some(Path::new("certs/ca.pem")));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inv.yml");
        fs::write(
            &file,
            "all:\n  vars:\n    remedy_cloudstack: { cmk_profile: p, ca_file: ca.pem }\n",
        )
        .unwrap();
        let i2 = Inventory::load(&[file]).unwrap();
        assert_eq!(
            i2.cloudstack().unwrap().ca_file.as_deref(),
            Some(dir.path().join("ca.pem").as_path())
        );
        assert!(i.secret_refs().is_empty());
        let i = inv("all:\n  vars:\n    remedy_cloudstack:\n      simulator: { scenario: vr-backup-loop }\n");
        let cs = i.cloudstack().expect("cs");
        assert!(matches!(
            &cs.source,
            CloudStackSource::Simulator { scenario } if scenario == "vr-backup-loop"
        ));
        assert!(cs.verify_tls);
    }

    #[test]
    fn cloudstack_null_cmk_profile_is_absent() {
        let i = inv("all:\n  vars:\n    remedy_cloudstack:\n      cmk_profile: null\n      endpoint: http://cs:8080/client/api\n      api_key: k\n      secret_key: { env: S }\n");
        let cs = i.cloudstack().expect("cs");
        assert!(
            matches!(&cs.source, CloudStackSource::Keys { endpoint, .. } if endpoint == "http://cs:8080/client/api"),
            "{:?}",
            cs.source
        );
    }

    #[test]
    fn cloudstack_endpoint_is_validated_and_must_be_global() {
        let e = err("all:\n  vars:\n    remedy_cloudstack:\n      endpoint: cs:8080\n      api_key: k\n      secret_key: { env: S }\n");
        assert!(
            e.contains("remedy_cloudstack.endpoint: expected an http"),
            "{e}"
        );
        let e = err("all:\n  vars:\n    remedy_cloudstack:\n      endpoint: http://x\n      api_key: k\n      secret_key: { env: S }\n      verify: false\n");
        assert!(e.contains("unknown key \"verify\""), "{e}");
        let e = err("all:\n  vars:\n    remedy_cloudstack:\n      endpoint: http://x\n      secret_key: { env: S }\n");
        assert!(e.contains("missing api_key"), "{e}");
        let e = err("all:\n  vars:\n    remedy_cloudstack:\n      endpoint: http://x\n      api_key: k\n      secret_key: { env: S }\n      simulator: { scenario: healthy }\n");
        assert!(e.contains("are alternatives"), "{e}");
        let e = err("all:\n  vars:\n    remedy_cloudstack:\n      simulator: { scenario: healthy, speed: 2 }\n");
        assert!(e.contains("remedy_cloudstack.simulator: expected"), "{e}");
        let e = err("all:\n  vars:\n    remedy_cloudstack:\n      cmk_profile: prod\n      verify_tls: no-thanks\n");
        assert!(e.contains("verify_tls: expected true or false"), "{e}");
        let e = err("all:\n  vars:\n    remedy_cloudstack:\n      verify_tls: true\n");
        assert!(e.contains("say where the API is"), "{e}");
        let e = err("g:\n  vars:\n    remedy_cloudstack:\n      endpoint: http://x\n      api_key: k\n      secret_key: { env: S }\n");
        assert!(
            e.contains("group \"g\": remedy_cloudstack cannot be set per group"),
            "{e}"
        );
        assert!(inv("g:\n  hosts: { h: }\n").cloudstack().is_none());
    }

    #[test]
    fn secret_ref_resolves_env_and_file_without_printing_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        fs::write(&path, "  s3cr3t-value \n").expect("write");
        assert_eq!(
            SecretRef::File(path.clone()).resolve().expect("resolves"),
            "s3cr3t-value"
        );
        let missing = SecretRef::File(dir.path().join("nope")).resolve();
        let e = missing.expect_err("missing file").to_string();
        assert!(e.contains("nope") && e.contains("cannot read"), "{e}");
        fs::write(&path, "\n").expect("write");
        let e = SecretRef::File(path)
            .resolve()
            .expect_err("empty")
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let e = SecretRef::Env("REMEDY_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .expect_err("unset")
            .to_string();
        assert_eq!(
            e,
            "secret env REMEDY_TEST_SURELY_UNSET_VAR: environment variable is not set"
        );
        // PATH is always set in a test environment.
        assert!(SecretRef::Env("PATH".into()).resolve().is_ok());
    }

    #[test]
    fn secret_ref_serde_form() {
        let s: SecretRef = serde_json::from_str(r#"{"env":"X"}"#).expect("parse");
        assert_eq!(s, SecretRef::Env("X".into()));
        assert_eq!(
            serde_json::to_string(&SecretRef::File("/a".into())).expect("ser"),
            r#"{"file":"/a"}"#
        );
    }

    #[test]
    fn host_key_policies() {
        let inv = inv(r#"
g:
  hosts:
    a: { remedy_host_key_policy: pinned, remedy_host_key_fingerprint: "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8" }
    b: { remedy_host_key_fingerprint: "SHA256:abc" }
    c: { remedy_host_key_policy: accept-new }
    d:
"#);
        assert_eq!(
            inv.host("a").expect("a").conn.host_key,
            HostKeyPolicy::Pinned("SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8".into())
        );
        assert_eq!(
            inv.host("b").expect("b").conn.host_key,
            HostKeyPolicy::Pinned("SHA256:abc".into())
        );
        assert_eq!(
            inv.host("c").expect("c").conn.host_key,
            HostKeyPolicy::AcceptNew
        );
        assert_eq!(
            inv.host("d").expect("d").conn.host_key,
            HostKeyPolicy::Strict
        );
        let e = err("g:\n  hosts:\n    a: { remedy_host_key_policy: pinned }\n");
        assert_eq!(
            e,
            "test.yml: host \"a\": remedy_host_key_policy: pinned needs \
             remedy_host_key_fingerprint (\"SHA256:...\")"
        );
        let e = err("g:\n  hosts:\n    a: { remedy_host_key_fingerprint: \"MD5:aa:bb\" }\n");
        assert!(e.contains("SHA256 fingerprint"), "{e}");
        let e = err("g:\n  hosts:\n    a: { remedy_host_key_policy: yolo }\n");
        assert!(e.contains("unknown policy \"yolo\""), "{e}");
    }

    /// `remedy_known_hosts_file`: relative to the file that set it (here a group's vars in
    /// the inventory file, and a `group_vars/` file), absolute and `~` paths as written; a
    /// host's pinned fingerprint beats its group's `accept-new`.
    #[test]
    fn known_hosts_file_per_host_and_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inv_dir = dir.path().join("inv");
        std::fs::create_dir_all(inv_dir.join("group_vars")).expect("mkdir");
        let path = inv_dir.join("lab.yml");
        std::fs::write(
            &path,
            r#"all:
  hosts:
    a: { remedy_known_hosts_file: /etc/ssh/lab_known_hosts }
    b:
    r1: { remedy_host_key_policy: pinned, remedy_host_key_fingerprint: "SHA256:abc" }
    d:
  children:
    system_vms:
      vars:
        remedy_host_key_policy: accept-new
        remedy_known_hosts_file: lab.known_hosts
      hosts:
        r1:
        s1:
    other:
      hosts:
        d:
"#,
        )
        .expect("write");
        std::fs::write(
            inv_dir.join("group_vars/other.yml"),
            "remedy_known_hosts_file: kh/other\n",
        )
        .expect("write");
        let inv = Inventory::load(&[path]).expect("load");
        let conn = |h: &str| inv.host(h).expect(h).conn.clone();
        assert_eq!(
            conn("a").known_hosts_file,
            Some(PathBuf::from("/etc/ssh/lab_known_hosts"))
        );
        assert_eq!(conn("b").known_hosts_file, None);
        assert_eq!(conn("b").host_key, HostKeyPolicy::Strict);
        assert_eq!(
            conn("s1").known_hosts_file,
            Some(inv_dir.join("lab.known_hosts"))
        );
        assert_eq!(conn("s1").host_key, HostKeyPolicy::AcceptNew);
        assert_eq!(
            conn("r1").host_key,
            HostKeyPolicy::Pinned("SHA256:abc".into())
        );
        assert_eq!(
            conn("d").known_hosts_file,
            Some(inv_dir.join("group_vars/kh/other"))
        );
        let e = err("g:\n  hosts:\n    a: { remedy_known_hosts_file: \"\" }\n");
        assert_eq!(
            e,
            "test.yml: host \"a\": remedy_known_hosts_file: empty path"
        );
        let e = err("g:\n  hosts:\n    a: { remedy_known_hosts_file: [x] }\n");
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn serialization_of_connection() {
        let inv = inv("g:\n  hosts:\n    a: { remedy_host_key_fingerprint: \"SHA256:abc\" }\n");
        let json = serde_json::to_value(&inv.host("a").expect("a").conn).expect("ser");
        assert_eq!(json["kind"], "ssh");
        assert_eq!(
            json["host_key"],
            serde_json::json!({"pinned": "SHA256:abc"})
        );
        assert_eq!(
            serde_json::to_value(HostKeyPolicy::AcceptNew).expect("ser"),
            "accept-new"
        );
    }

    #[test]
    fn jump_via_remedy_jump_chains_outermost_first() {
        let inv = inv(r#"
all:
  hosts:
    edge: { ansible_host: 198.51.100.1 }
    inner: { remedy_jump: edge }
    deep: { remedy_jump: inner }
"#);
        assert!(inv.host("edge").expect("h").conn.jump.is_empty());
        assert_eq!(inv.host("inner").expect("h").conn.jump, ["edge"]);
        assert_eq!(inv.host("deep").expect("h").conn.jump, ["edge", "inner"]);
    }

    #[test]
    fn jump_via_proxyjump_and_remedy_jump_wins() {
        let inv = inv(r#"
all:
  hosts:
    bastion:
    a: { ansible_ssh_common_args: "-o ProxyJump=ops@gw1.example.com:2222,bastion -o StrictHostKeyChecking=yes" }
    b: { ansible_ssh_common_args: "-J bastion" }
    c: { ansible_ssh_extra_args: "-oProxyJump=bastion" }
    d:
      ansible_ssh_common_args: "-o ProxyJump=gw1.example.com"
      remedy_jump: bastion
    e: { ansible_ssh_common_args: "-o 'ProxyJump none'" }
"#);
        assert_eq!(
            inv.host("a").expect("a").conn.jump,
            ["ops@gw1.example.com:2222", "bastion"]
        );
        assert_eq!(inv.host("b").expect("b").conn.jump, ["bastion"]);
        assert_eq!(inv.host("c").expect("c").conn.jump, ["bastion"]);
        assert_eq!(inv.host("d").expect("d").conn.jump, ["bastion"]);
        assert!(inv.host("e").expect("e").conn.jump.is_empty());
        let e = err("g:\n  hosts:\n    a: { ansible_ssh_common_args: \"-o ProxyCommand='ssh -W %h:%p gw'\" }\n");
        assert!(e.contains("ProxyCommand is not supported"), "{e}");
    }

    #[test]
    fn jump_to_unknown_host_and_cycles_are_refused() {
        let e = err("g:\n  hosts:\n    a: { remedy_jump: bastoin }\n");
        assert_eq!(
            e,
            "test.yml: host \"a\": remedy_jump: unknown host \"bastoin\" (not in the inventory)"
        );
        let e = err("g:\n  hosts:\n    a: { remedy_jump: b }\n    b: { remedy_jump: c }\n    c: { remedy_jump: a }\n");
        assert!(e.contains("jump cycle: a -> b -> c -> a"), "{e}");
        let e = err("g:\n  vars: { remedy_jump: a }\n  hosts:\n    a:\n");
        assert!(e.contains("jump cycle: a -> a"), "{e}");
        // A group-wide jump can be switched off for the jump host itself.
        let inv =
            inv("g:\n  vars: { remedy_jump: a }\n  hosts:\n    a: { remedy_jump: ~ }\n    b:\n");
        assert!(inv.host("a").expect("a").conn.jump.is_empty());
        assert_eq!(inv.host("b").expect("b").conn.jump, ["a"]);
    }

    #[test]
    fn implicit_localhost() {
        let inv = inv("all:\n  vars: { ansible_user: ops, site: x }\n  hosts: { web1: }\n");
        let local = inv.host("localhost").expect("implicit localhost");
        assert_eq!(local.conn.kind, ConnectionKind::Local);
        assert_eq!(local.vars["site"], "x");
        assert!(local.groups.is_empty());
        assert!(inv.hosts().all(|h| h.name != "localhost"));
        assert_eq!(names(&inv.group_hosts("all").expect("all")), ["web1"]);
        assert!(inv.host("127.0.0.1").is_some());
        // Defined explicitly, localhost is an ordinary member (and uses ssh unless told).
        let inv2 = super::tests::inv("all:\n  hosts: { localhost: }\n");
        let local = inv2.host("localhost").expect("localhost");
        assert_eq!(local.conn.kind, ConnectionKind::Ssh);
        assert_eq!(local.groups, ["all", "ungrouped"]);
        let empty = Inventory::empty();
        assert_eq!(empty.hosts().count(), 0);
        assert_eq!(
            empty.host("localhost").expect("implicit").conn.kind,
            ConnectionKind::Local
        );
        assert!(empty.host("web1").is_none());
        assert!(empty.sources().is_empty());
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, text).expect("write");
    }

    #[test]
    fn group_vars_and_host_vars_files_beside_an_inventory_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            &root.join("prod.yml"),
            r#"
all:
  vars: { level: inline-all, a: inline-all }
  children:
    kvm:
      vars: { level: inline-kvm, b: inline-kvm }
      hosts:
        hv1: { level: inline-host, c: inline-host }
        hv2:
"#,
        );
        write(
            &root.join("group_vars/all.yml"),
            "a: file-all\nlevel: file-all\n",
        );
        write(&root.join("group_vars/kvm.yaml"), "b: file-kvm\n");
        write(&root.join("host_vars/hv1.yml"), "c: file-host\n");
        write(&root.join("host_vars/unknown-host.yml"), "ignored: true\n");
        write(&root.join("group_vars/kvm/extra.yml"), "d: dir\n");
        write(
            &root.join("host_vars/hv2.yml"),
            "ansible_become_password: { file: secrets/hv2.pass }\n",
        );
        let inv = Inventory::load(&[root.join("prod.yml")]).expect("loads");
        let hv1 = inv.host("hv1").expect("hv1");
        assert_eq!(hv1.vars["a"], "file-all");
        assert_eq!(hv1.vars["level"], "inline-host");
        // group_vars/kvm/ (a directory) is found first, so kvm.yaml is not read (as Ansible).
        assert_eq!(hv1.vars["b"], "inline-kvm");
        assert_eq!(hv1.vars["d"], "dir");
        assert_eq!(hv1.vars["c"], "file-host");
        // Ansible ranks group_vars/all.yml above every inline group var.
        let hv2 = inv.host("hv2").expect("hv2");
        assert_eq!(hv2.vars["level"], "file-all");
        let expected = root.join("host_vars/secrets/hv2.pass");
        assert_eq!(
            inv.secret_refs(),
            [(
                "hv2.ansible_become_password".to_string(),
                SecretRef::File(expected)
            )]
        );
        assert_eq!(
            inv.sources(),
            [
                root.join("prod.yml"),
                root.join("group_vars/all.yml"),
                root.join("group_vars/kvm/extra.yml"),
                root.join("host_vars/hv1.yml"),
                root.join("host_vars/hv2.yml"),
            ]
        );
        // The digest covers every file read: changing a vars file changes it.
        let before = inv.digest();
        write(&root.join("host_vars/hv1.yml"), "c: changed\n");
        let after = Inventory::load(&[root.join("prod.yml")])
            .expect("loads")
            .digest();
        assert_ne!(before, after);
    }

    #[test]
    fn group_vars_file_wins_over_inline_child_group_vars() {
        // Ansible: every inline group var ranks below group_vars/ files, even all's.
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            &root.join("inv.yml"),
            "kvm:\n  vars: { x: inline-kvm }\n  hosts: { hv1: }\n",
        );
        write(&root.join("group_vars/all.yml"), "x: file-all\n");
        let inv = Inventory::load(&[root.join("inv.yml")]).expect("loads");
        assert_eq!(inv.host("hv1").expect("h").vars["x"], "file-all");
    }

    #[test]
    fn errors_in_vars_files_point_at_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("inv.yml"), "kvm:\n  hosts: { hv1: }\n");
        write(
            &root.join("group_vars/kvm.yml"),
            "ansible_port: 22\nansible_password: pw123\n",
        );
        let e = Inventory::load(&[root.join("inv.yml")])
            .expect_err("refused")
            .to_string();
        let file = root.join("group_vars/kvm.yml");
        assert!(e.starts_with(&format!("{}:2:", file.display())), "{e}");
        assert!(!e.contains("pw123"), "{e}");
        write(&root.join("group_vars/kvm.yml"), "ansible_port: nope\n");
        let e = Inventory::load(&[root.join("inv.yml")])
            .expect_err("refused")
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: host \"hv1\": ansible_port: expected a port number (1-65535), got \"nope\"",
                file.display()
            )
        );
    }

    #[test]
    fn directory_inventory_merges_sorted_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("inventories");
        write(
            &root.join("10-hosts.yml"),
            "kvm:\n  hosts: { hv1: { x: first } }\n",
        );
        write(
            &root.join("20-more.yaml"),
            "kvm:\n  hosts: { hv2: ~, hv1: { x: second } }\n",
        );
        write(
            &root.join("sub/30-routers.yml"),
            "routers:\n  hosts: { r1: }\n",
        );
        write(&root.join("README.md"), "not an inventory\n");
        write(&root.join(".hidden.yml"), "broken: [\n");
        write(&root.join("group_vars/kvm.yml"), "y: from-group-vars\n");
        write(&root.join("host_vars/r1.yml"), "z: from-host-vars\n");
        let inv = Inventory::load(std::slice::from_ref(&root)).expect("loads");
        let all: Vec<&str> = inv.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(all, ["hv1", "hv2", "r1"]);
        assert_eq!(inv.host("hv1").expect("h").vars["x"], "second");
        assert_eq!(inv.host("hv2").expect("h").vars["y"], "from-group-vars");
        assert_eq!(inv.host("r1").expect("h").vars["z"], "from-host-vars");
        assert_eq!(inv.sources()[0], root.join("10-hosts.yml"));
        assert_eq!(inv.sources()[2], root.join("sub/30-routers.yml"));
        let empty = dir.path().join("empty");
        fs::create_dir_all(&empty).expect("mkdir");
        let e = Inventory::load(&[empty]).expect_err("no files").to_string();
        assert!(e.contains("no *.yml or *.yaml file"), "{e}");
    }

    #[test]
    fn several_paths_merge_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a/base.yml");
        let b = dir.path().join("b/site.yml");
        write(&a, "kvm:\n  vars: { x: a }\n  hosts: { hv1: }\n");
        write(&b, "kvm:\n  vars: { x: b }\n  hosts: { hv2: }\n");
        write(&dir.path().join("b/group_vars/kvm.yml"), "y: b-files\n");
        let inv = Inventory::load(&[a.clone(), b.clone()]).expect("loads");
        assert_eq!(names(&inv.group_hosts("kvm").expect("g")), ["hv1", "hv2"]);
        assert_eq!(inv.host("hv1").expect("h").vars["x"], "b");
        assert_eq!(inv.host("hv1").expect("h").vars["y"], "b-files");
        let reversed = Inventory::load(&[b, a]).expect("loads");
        assert_eq!(reversed.host("hv1").expect("h").vars["x"], "a");
        assert_ne!(inv.digest(), reversed.digest());
        let e = Inventory::load(&[dir.path().join("missing.yml")])
            .expect_err("missing")
            .to_string();
        assert!(
            e.ends_with("missing.yml: cannot read inventory: no such file or directory"),
            "{e}"
        );
    }

    #[test]
    fn digest_is_stable_and_content_sensitive() {
        let a = inv("g:\n  hosts: { h: }\n");
        let b = inv("g:\n  hosts: { h: }\n");
        let c = inv("g:\n  hosts: { h2: }\n");
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_ne!(Inventory::empty().digest(), a.digest());
    }

    #[test]
    fn helpers_split_shell_words_and_expand_ranges() {
        assert_eq!(
            shell_words(r#"-o "ProxyJump=a b" -o'X=y' \" z"#).expect("split"),
            ["-o", "ProxyJump=a b", "-oX=y", "\"", "z"]
        );
        assert!(shell_words("'open").is_err());
        let mut out = Vec::new();
        expand_ranges("r[a:b][1:2]", &mut out).expect("expand");
        assert_eq!(out, ["ra1", "ra2", "rb1", "rb2"]);
        let mut out = Vec::new();
        assert!(expand_ranges("x[1:999999]", &mut out).is_err());
    }
}
