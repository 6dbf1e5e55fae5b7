//! Groups and membership as Ansible builds them: groups as written (nested `children`, hosts
//! from several files), refusing `all` as a child and cycles, then `reconcile`: every group
//! under `all`, hosts with no other group in `ungrouped`; a host's groups are its direct ones
//! and their ancestors.
//!
//! Not here: host entries and ranges (`hosts`), the order groups' variables apply in (`vars`).

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

use super::hosts::expand_host_entry;
use super::vars::{layer, Builder, GroupDef, HostDef, VarLayer};
use super::yaml::{RawGroup, Section};
use super::{InventoryError, ALL, UNGROUPED};

impl Builder {
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

    pub(super) fn add_group(
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
    pub(super) fn reconcile(&mut self) {
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
    pub(super) fn host_groups(&self, index: usize) -> BTreeSet<String> {
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
}
