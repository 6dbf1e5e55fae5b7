//! `remedy inventory`: what an inventory resolved to, in `ansible-inventory`'s shapes
//! (`--list` JSON with `_meta.hostvars`, `--host NAME`, `--graph`), plus how remedy would reach
//! each host (`remedy_connection`: address, port, user, key, jump chain, host key policy).

use serde_json::{json, Map, Value};

use super::{ConnectionKind, Host, HostKeyPolicy, Inventory};

/// How a host is reached, as shown to operators.
pub fn connection(host: &Host) -> Value {
    let c = &host.conn;
    let policy = match &c.host_key {
        HostKeyPolicy::Strict => "strict".to_string(),
        HostKeyPolicy::AcceptNew => "accept-new".to_string(),
        HostKeyPolicy::Pinned(fp) => format!("pinned {fp}"),
    };
    let mut m = Map::new();
    match c.kind {
        ConnectionKind::Local => {
            m.insert("kind".into(), json!("local"));
        }
        ConnectionKind::Ssh => {
            m.insert("kind".into(), json!("ssh"));
            m.insert("address".into(), json!(c.address));
            m.insert("port".into(), json!(c.port));
            m.insert("user".into(), json!(c.user));
            if let Some(k) = &c.key_file {
                m.insert("key_file".into(), json!(k.display().to_string()));
            }
            if !c.jump.is_empty() {
                m.insert("jump".into(), json!(c.jump));
            }
            if let Some(k) = host.vars.get("remedy_nested_ssh_key") {
                m.insert("nested_ssh_key".into(), k.clone());
            }
            m.insert("host_key".into(), json!(policy));
            if let Some(f) = &c.known_hosts_file {
                m.insert("known_hosts_file".into(), json!(f.display().to_string()));
            }
        }
    }
    Value::Object(m)
}

/// One line: `root@169.254.3.10:3922 via kvm01` (or `local`).
pub fn reach(host: &Host) -> String {
    let c = &host.conn;
    if c.kind == ConnectionKind::Local {
        return "local".into();
    }
    let mut s = format!("{}@{}:{}", c.user, c.address, c.port);
    if !c.jump.is_empty() {
        s.push_str(&format!(" via {}", c.jump.join(" -> ")));
    }
    s
}

/// A host's variables with `remedy_connection` added.
pub fn host_vars(host: &Host) -> Value {
    let mut vars = host.vars.clone();
    vars.insert("remedy_connection".into(), connection(host));
    Value::Object(vars)
}

/// `--list`: every group with its hosts and children, and `_meta.hostvars`.
pub fn list(inv: &Inventory) -> Value {
    let mut out = Map::new();
    let mut hostvars = Map::new();
    for h in inv.hosts() {
        hostvars.insert(h.name.clone(), host_vars(h));
    }
    out.insert("_meta".into(), json!({ "hostvars": hostvars }));
    for g in inv.group_names() {
        let children = inv.group_children(g).unwrap_or_default().to_vec();
        let direct: Vec<String> = inv
            .group_hosts(g)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| {
                // Hosts listed under a child group are shown there, as ansible-inventory does.
                !children.iter().any(|c| {
                    inv.group_hosts(c)
                        .unwrap_or_default()
                        .iter()
                        .any(|m| m.name == h.name)
                })
            })
            .map(|h| h.name.clone())
            .collect();
        let mut entry = Map::new();
        if !direct.is_empty() {
            entry.insert("hosts".into(), json!(direct));
        }
        if !children.is_empty() {
            entry.insert("children".into(), json!(children));
        }
        out.insert(g.to_string(), Value::Object(entry));
    }
    Value::Object(out)
}

/// `--graph`: the group tree from `all` (or `group`), hosts with how they are reached.
pub fn graph(inv: &Inventory, group: &str) -> Result<String, String> {
    if inv.group_hosts(group).is_none() {
        return Err(format!("no group {group:?} in the inventory"));
    }
    let mut out = String::new();
    walk(inv, group, 0, &mut out);
    Ok(out)
}

/// The prefix of an item `level` deep in the tree (`  |  |--`).
fn prefix(level: usize) -> String {
    if level == 0 {
        String::new()
    } else {
        format!("{}  |--", "  |".repeat(level - 1))
    }
}

fn walk(inv: &Inventory, group: &str, depth: usize, out: &mut String) {
    out.push_str(&format!("{}@{group}:\n", prefix(depth)));
    let children = inv.group_children(group).unwrap_or_default().to_vec();
    for c in &children {
        walk(inv, c, depth + 1, out);
    }
    for h in inv.group_hosts(group).unwrap_or_default() {
        let in_child = children.iter().any(|c| {
            inv.group_hosts(c)
                .unwrap_or_default()
                .iter()
                .any(|m| m.name == h.name)
        });
        if !in_child {
            out.push_str(&format!(
                "{}{}  ({})\n",
                prefix(depth + 1),
                h.name,
                reach(h)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "all:\n  children:\n    hypervisors:\n      hosts:\n        kvm01: { ansible_host: 10.0.0.11 }\n    routers:\n      vars: { ansible_port: 3922, remedy_jump: kvm01, remedy_host_key_policy: accept-new }\n      hosts:\n        r-1-VM: { ansible_host: 169.254.3.10 }\n";

    #[test]
    fn graph_shows_groups_hosts_and_how_they_are_reached() {
        let inv = Inventory::from_str("i.yml", INV).unwrap();
        let g = graph(&inv, "all").unwrap();
        assert_eq!(
            g,
            "@all:\n  |--@hypervisors:\n  |  |--kvm01  (root@10.0.0.11:22)\n  |--@routers:\n  |  |--r-1-VM  (root@169.254.3.10:3922 via kvm01)\n  |--@ungrouped:\n"
        );
        assert!(graph(&inv, "nope").is_err());
    }

    #[test]
    fn list_and_host_carry_the_connection() {
        let inv = Inventory::from_str("i.yml", INV).unwrap();
        let l = list(&inv);
        assert_eq!(l["routers"]["hosts"], json!(["r-1-VM"]));
        assert_eq!(
            l["all"]["children"],
            json!(["hypervisors", "routers", "ungrouped"])
        );
        let c = &l["_meta"]["hostvars"]["r-1-VM"]["remedy_connection"];
        assert_eq!(c["jump"], json!(["kvm01"]));
        assert_eq!(c["port"], 3922);
        assert_eq!(c["host_key"], "accept-new");
    }
}
