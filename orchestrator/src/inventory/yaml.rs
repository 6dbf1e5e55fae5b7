//! Positioned YAML parsing: a stack of serde seeds that read an inventory or vars file into the
//! raw tree as written ([`RawGroup`], its [`Section`]s, variable maps as JSON) and report every
//! problem with its `line:column`. The rules that need a position are checked here: unknown and
//! duplicate keys, inline secrets (only [`SecretRef`] forms), YAML merge keys and tags, and the
//! hint when a file looks like an INI inventory (remedy reads YAML inventories only).
//!
//! Not here: what the tree means (groups and membership: `groups`; host ranges: `hosts`;
//! precedence: `vars`), and the shape of `remedy_cloudstack` (`endpoint`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_json::{Map, Value};

use super::files::expand_tilde;
use super::secret::{REF_FORMS, SECRET_VARS};
use super::vault;
use super::yaml11::{plain_scalars, Overrides};
use super::{InventoryError, SecretRef, CLOUDSTACK_VAR};

/// One group as written: its sections in document order.
#[derive(Debug)]
pub(super) struct RawGroup {
    pub(super) name: String,
    pub(super) sections: Vec<Section>,
}

#[derive(Debug)]
pub(super) enum Section {
    Hosts(Vec<(String, Map<String, Value>)>),
    Vars(Map<String, Value>),
    Children(Vec<RawGroup>),
}

/// Shared state of one parse. Our own errors are stashed here so their text reaches the user
/// unchanged, while serde_yaml supplies the position.
pub(super) struct Ctx {
    error: RefCell<Option<String>>,
    /// Directory against which relative `{ file: PATH }` references resolve.
    base_dir: Option<PathBuf>,
    /// Where the parsed text lives (address and length), to find a scalar's offset in it.
    text_at: (usize, usize),
    /// Plain scalars Ansible reads differently (YAML 1.1), by offset: see `yaml11`.
    plain: Overrides,
    /// Values decrypted from `!vault` tags, in order: secrets the caller must mask.
    vaulted: RefCell<Vec<String>>,
}

impl Ctx {
    fn new(base_dir: Option<PathBuf>, text: &str, plain: Overrides) -> Ctx {
        Ctx {
            error: RefCell::new(None),
            base_dir,
            text_at: (text.as_ptr() as usize, text.len()),
            plain,
            vaulted: RefCell::new(Vec::new()),
        }
    }

    /// The override for a scalar serde_yaml handed over as `v`, if `v` is a slice of the
    /// parsed text at an overridden offset: the scalar as written and Ansible's value.
    fn plain_override(&self, v: &str) -> Option<&(String, Value)> {
        let (start, len) = self.text_at;
        let at = (v.as_ptr() as usize).checked_sub(start)?;
        if at + v.len() > len {
            return None;
        }
        self.plain
            .get(&at)
            .filter(|(written, _)| written.len() == v.len())
    }

    /// A string scalar as written (undoing `yaml11`'s in-place disguise of a number-like one).
    fn written(&self, v: &str) -> String {
        match self.plain_override(v) {
            Some((written, _)) => written.clone(),
            None => v.to_string(),
        }
    }

    pub(super) fn fail<E: de::Error>(&self, message: impl Into<String>) -> E {
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

/// What one file holds, and the values decrypted from its `!vault` tags (secrets to mask).
pub(super) type Parsed<T> = (T, Vec<String>);

pub(super) fn parse_inventory(
    path: &Path,
    text: &str,
    base_dir: Option<PathBuf>,
) -> Result<Parsed<Vec<RawGroup>>, InventoryError> {
    let (parsed, plain) = plain_scalars(text);
    let ctx = Ctx::new(base_dir, &parsed, plain);
    let de = serde_yaml::Deserializer::from_str(&parsed);
    let groups = TopSeed { ctx: &ctx }.deserialize(de).map_err(|err| {
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
    })?;
    Ok((groups, ctx.vaulted.take()))
}

pub(super) fn parse_vars_file(
    path: &Path,
    text: &str,
    scope: &str,
    base_dir: Option<PathBuf>,
) -> Result<Parsed<Map<String, Value>>, InventoryError> {
    let (parsed, plain) = plain_scalars(text);
    let ctx = Ctx::new(base_dir, &parsed, plain);
    let de = serde_yaml::Deserializer::from_str(&parsed);
    let vars = VarsSeed { ctx: &ctx, scope }
        .deserialize(de)
        .map_err(|err| yaml_error(path, &ctx, &err))?;
    Ok((vars, ctx.vaulted.take()))
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
        Ok(vec![(self.ctx.written(host), Map::new())])
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
            name: self.ctx.written(child),
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

/// Any variable value, as JSON, checked against the secret rules.
pub(super) struct ValueSeed<'c> {
    pub(super) ctx: &'c Ctx,
    pub(super) scope: &'c str,
    pub(super) path: Vec<String>,
}

impl ValueSeed<'_> {
    fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// Every scalar goes through here: an inline value is refused where a secret is expected,
    /// without ever repeating it.
    fn scalar<E: de::Error>(&self, value: Value, kind: &str) -> Result<Value, E> {
        match value_role(&self.path) {
            // `"{{ vault_become_pass }}"`: a reference to another variable, checked when the
            // host's variables are merged (`vars`), as Ansible resolves it at use.
            ValueRole::Secret if value.as_str().and_then(reference_of).is_some() => Ok(value),
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
        match self.ctx.plain_override(v) {
            Some((_, value)) => {
                let kind = match value {
                    Value::Null => "nothing",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    _ => "a string",
                };
                self.scalar(value.clone(), kind)
            }
            None => self.scalar(Value::String(v.to_string()), "a string"),
        }
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
            "vault" => {
                let text: String = variant.newtype_variant()?;
                let plain = vault::decrypt(&text)
                    .and_then(|p| {
                        String::from_utf8(p).map_err(|_| "decrypted value is not utf-8".into())
                    })
                    .map_err(|m| {
                        self.ctx
                            .fail(format!("{}: {}: {m}", self.scope, self.dotted()))
                    })?;
                self.ctx.vaulted.borrow_mut().push(plain.clone());
                match value_role(&self.path) {
                    // An encrypted password is what these variables may hold, besides a reference.
                    ValueRole::Secret => Ok(Value::String(plain)),
                    _ => self.scalar(Value::String(plain), "a string"),
                }
            }
            other => Err(self.ctx.fail(format!(
                "{}: {}: unsupported yaml tag \"!{other}\"",
                self.scope,
                self.dotted()
            ))),
        }
    }
}

/// The variable a value refers to when it is exactly one plain reference, `{{ name }}`.
pub(super) fn reference_of(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let valid = !inner.is_empty()
        && !inner.starts_with(|c: char| c.is_ascii_digit())
        && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(inner)
}
