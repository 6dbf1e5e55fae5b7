//! Building an [`Inventory`] from what was read, and variable precedence. The builder reads
//! each file once, in order (every file is an origin: messages point at it, and the digest
//! covers it), adds the `group_vars/`/`host_vars/` layers, then merges each host's variables:
//! `all` vars, other groups' vars by depth, `ansible_group_priority` and name, `group_vars/all`,
//! `group_vars/<group>`, host vars, `host_vars/<host>` (see the module docs of `inventory`).
//!
//! Not here: parsing (`yaml`), membership (`groups`), what the connection variables mean
//! (`connection`), `remedy_cloudstack` (`endpoint`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::dynamic::{SourceSpec, SOURCE_VAR};
use super::files::find_vars_files;
use super::secret::{REF_FORMS, SECRET_VARS};
use super::vault;
use super::yaml::{parse_inventory, parse_vars_file, reference_of, RawGroup};
use super::{
    GroupEntry, Host, Inventory, InventoryError, SecretRef, ALL, CLOUDSTACK_VAR, LOCALHOST_NAMES,
};

/// The group setting that orders group variables (higher applies later, so wins).
const PRIORITY_VAR: &str = "ansible_group_priority";

/// A variable layer: name to (value, index of the file it came from).
pub(super) type VarLayer = BTreeMap<String, (Value, usize)>;

#[derive(Default)]
pub(super) struct GroupDef {
    pub(super) children: Vec<String>,
    pub(super) parents: BTreeSet<String>,
    /// Direct host members, in the order added.
    pub(super) hosts: Vec<usize>,
    pub(super) vars: VarLayer,
    /// `group_vars` file layers, by base directory index.
    pub(super) file_vars: Vec<(usize, VarLayer)>,
}

pub(super) struct HostDef {
    pub(super) name: String,
    pub(super) vars: VarLayer,
    pub(super) file_vars: Vec<(usize, VarLayer)>,
    /// Direct groups.
    pub(super) groups: BTreeSet<String>,
}

/// Everything read so far; [`Builder::finish`] turns it into an [`Inventory`].
#[derive(Default)]
pub(super) struct Builder {
    pub(super) hosts: Vec<HostDef>,
    pub(super) host_index: HashMap<String, usize>,
    pub(super) groups: BTreeMap<String, GroupDef>,
    /// Every file read, in order (also the origins of variables).
    pub(super) files: Vec<PathBuf>,
    pub(super) hasher: Sha256,
    /// `host_vars` layers for implicit local hosts, by name.
    pub(super) implicit_file_vars: BTreeMap<String, Vec<(usize, VarLayer)>>,
    /// The first source is the CloudStack API's generated inventory.
    pub(super) generated: bool,
    /// Values decrypted with ansible-vault (`!vault` values, every string of a vaulted file).
    pub(super) vault_values: Vec<String>,
}

pub(super) fn layer(vars: Map<String, Value>, origin: usize) -> VarLayer {
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
        if !vault::is_vaulted(&text) {
            return Ok((origin, text));
        }
        let plain = vault::decrypt_file(path, &text)?;
        self.vault_values.extend(string_leaves(&plain));
        Ok((origin, plain))
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

    pub(super) fn add_inventory_file(&mut self, path: &Path) -> Result<(), InventoryError> {
        let (origin, text) = self.read_file(path, "inventory")?;
        let base = path.parent().map(Path::to_path_buf);
        let (groups, vaulted) = parse_inventory(path, &text, base)?;
        self.vault_values.extend(vaulted);
        self.add_groups(origin, groups)
    }

    pub(super) fn add_inventory_text(
        &mut self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), InventoryError> {
        let origin = self.record(path, bytes);
        let text = std::str::from_utf8(bytes)
            .map_err(|_| InventoryError::invalid(path, "file is not valid utf-8"))?;
        let (groups, vaulted) = parse_inventory(path, text, None)?;
        self.vault_values.extend(vaulted);
        self.add_groups(origin, groups)
    }

    fn add_groups(&mut self, origin: usize, groups: Vec<RawGroup>) -> Result<(), InventoryError> {
        for group in groups {
            self.add_group(origin, group, None)?;
        }
        Ok(())
    }

    pub(super) fn origin_path(&self, origin: usize) -> PathBuf {
        self.files.get(origin).cloned().unwrap_or_default()
    }

    /// Reads `group_vars/` and `host_vars/` in `dir` for every known group and host.
    pub(super) fn add_vars_dirs(
        &mut self,
        dir_index: usize,
        dir: &Path,
    ) -> Result<(), InventoryError> {
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
        let (vars, vaulted) = parse_vars_file(path, &text, scope, base)?;
        self.vault_values.extend(vaulted);
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
            .and_then(|g| g.vars.get(PRIORITY_VAR))
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

    pub(super) fn finish(self) -> Result<Inventory, InventoryError> {
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
            let mut vars = group_setting_free(all_inline);
            for def in &defs {
                overlay(&mut vars, &group_setting_free(&def.vars));
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

        for (host, vars) in self.hosts.iter().zip(&merged) {
            self.check_secret_references(&host.name, vars)?;
        }

        // Implicit local hosts: all's vars, then a local connection, then their host_vars.
        let mut implicit_vars: Vec<(String, VarLayer)> = Vec::new();
        for name in LOCALHOST_NAMES {
            if self.host_index.contains_key(name) {
                continue;
            }
            let mut vars = group_setting_free(all_inline);
            for layer in &all_files {
                overlay(&mut vars, layer);
            }
            overlay(&mut vars, &group_setting_free(all_inline));
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

        let cloudstack_source = match all_scope_value(all_inline, &all_files, SOURCE_VAR) {
            Some((value, origin)) if !value.is_null() => {
                let path = self.origin_path(origin);
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if cloudstack.is_none() {
                    return Err(InventoryError::invalid(
                        &path,
                        format!("{}: needs remedy_cloudstack (where the API is)", SOURCE_VAR),
                    ));
                }
                Some(
                    SourceSpec::from_value(value, &dir)
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
        Ok(Inventory(std::sync::Arc::new(super::Loaded {
            hosts,
            host_index,
            implicit,
            groups,
            cloudstack,
            cloudstack_source,
            generated: self.generated,
            vault_values: self.vault_values,
            sources: self.files,
            digest: hex(&self.hasher.finalize()),
        })))
    }
}

/// The variables a group writes in the inventory, without `ansible_group_priority`: a setting
/// of the group (the order its variables apply in), not a variable its hosts get. Written in
/// a `group_vars` file it is an ordinary variable, as in Ansible.
impl Builder {
    /// A password variable written as a reference (`"{{ vault_become_pass }}"`) must end at a
    /// secret: a `{ env }`/`{ file }` reference or a value decrypted with ansible-vault. A
    /// reference to a variable the host does not have is left for use, as Ansible does.
    fn check_secret_references(&self, host: &str, vars: &VarLayer) -> Result<(), InventoryError> {
        for var in SECRET_VARS {
            let Some((target, value, origin)) = follow_reference(vars, var) else {
                continue;
            };
            let secret = SecretRef::from_value(value).is_some()
                || value
                    .as_str()
                    .is_some_and(|v| self.vault_values.iter().any(|s| s == v));
            if !secret {
                return Err(InventoryError::invalid(
                    &self.origin_path(origin),
                    format!(
                        "host \"{host}\": {var} refers to {target}, which holds an inline secret \
                         (never inline secrets): encrypt it with ansible-vault (a vaulted file or \
                         a !vault value), or use {REF_FORMS}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where a variable written as `{{ name }}` (possibly through several such references) leads:
/// the last variable's name, value and origin. `None` when `var` is not such a reference, or
/// leads to a variable the host does not have (or round in a circle).
pub(super) fn follow_reference<'a>(
    vars: &'a VarLayer,
    var: &str,
) -> Option<(String, &'a Value, usize)> {
    let mut name = reference_of(vars.get(var)?.0.as_str()?)?.to_string();
    for _ in 0..8 {
        let (value, origin) = vars.get(&name)?;
        match value.as_str().and_then(reference_of) {
            Some(next) => name = next.to_string(),
            None => return Some((name, value, *origin)),
        }
    }
    None
}

fn group_setting_free(vars: &VarLayer) -> VarLayer {
    let mut vars = vars.clone();
    vars.remove(PRIORITY_VAR);
    vars
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

/// Every string value of a decrypted file: all of it is secret.
fn string_leaves(text: &str) -> Vec<String> {
    fn walk(value: &serde_yaml::Value, out: &mut Vec<String>) {
        match value {
            serde_yaml::Value::String(s) => out.push(s.clone()),
            serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| walk(v, out)),
            serde_yaml::Value::Mapping(map) => map.values().for_each(|v| walk(v, out)),
            serde_yaml::Value::Tagged(tagged) => walk(&tagged.value, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        walk(&value, &mut out);
    }
    out
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short rendering of a (non-secret) value for messages.
pub(super) fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

pub(super) fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
