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

/// A host's variables with `remedy_connection` added, and the variables Ansible needs to reach
/// the host as remedy does ([`ansible_connection_vars`]) where the inventory does not set them.
pub fn host_vars(inv: &Inventory, host: &Host) -> Value {
    let mut vars = host.vars.clone();
    for (key, value) in ansible_connection_vars(inv, host) {
        vars.insert(key, value);
    }
    vars.insert("remedy_connection".into(), connection(host));
    Value::Object(vars)
}

/// What `--list` adds so that Ansible, given the output as a dynamic inventory, reaches an SSH
/// host the way remedy does: `ansible_user` when the inventory leaves it to remedy's default
/// (root; Ansible's would be the local user), and `ansible_ssh_common_args` carrying the host
/// key checks (`StrictHostKeyChecking`, `UserKnownHostsFile`) and, for a host behind
/// `remedy_jump`, a `ProxyCommand` through each jump host with that host's own address, port,
/// user, key and host key checks. Options the inventory already gives in
/// `ansible_ssh_common_args` come first and are kept.
pub fn ansible_connection_vars(inv: &Inventory, host: &Host) -> Map<String, Value> {
    let mut out = Map::new();
    if host.conn.kind != ConnectionKind::Ssh {
        return out;
    }
    if !host.vars.contains_key("ansible_user") && !host.vars.contains_key("ansible_ssh_user") {
        out.insert("ansible_user".into(), json!(host.conn.user));
    }
    let mut words = host_key_options(&host.conn);
    if host.vars.contains_key("remedy_jump") {
        if let Some(proxy) = proxy_command(inv, &host.conn.jump) {
            words.push("-o".into());
            words.push(format!("ProxyCommand={proxy}"));
        }
    }
    if words.is_empty() {
        return out;
    }
    let ours = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
    let args = match host
        .vars
        .get("ansible_ssh_common_args")
        .and_then(Value::as_str)
    {
        Some(given) if !given.trim().is_empty() => format!("{} {ours}", given.trim()),
        _ => ours,
    };
    out.insert("ansible_ssh_common_args".into(), json!(args));
    out
}

/// `ssh` options that check a host's key as remedy's policy says. OpenSSH cannot pin a
/// fingerprint: a pinned key is checked strictly against the `known_hosts` file in use.
fn host_key_options(conn: &super::Connection) -> Vec<String> {
    let mut words = Vec::new();
    match conn.host_key {
        HostKeyPolicy::Strict => {}
        HostKeyPolicy::AcceptNew => {
            words.push("-o".into());
            words.push("StrictHostKeyChecking=accept-new".into());
        }
        HostKeyPolicy::Pinned(_) => {
            words.push("-o".into());
            words.push("StrictHostKeyChecking=yes".into());
        }
    }
    if let Some(file) = &conn.known_hosts_file {
        words.push("-o".into());
        words.push(format!("UserKnownHostsFile={}", file.display()));
    }
    words
}

/// The `ProxyCommand` that reaches the last host of `chain` (inventory host names, outermost
/// first) and forwards to `%h:%p`; each inner hop is itself reached through a `ProxyCommand`.
/// `None` when a hop is not an inventory host reached over SSH.
fn proxy_command(inv: &Inventory, chain: &[String]) -> Option<String> {
    let (last, before) = chain.split_last()?;
    let hop = inv.host(last)?;
    if hop.conn.kind != ConnectionKind::Ssh {
        return None;
    }
    let c = &hop.conn;
    let mut words: Vec<String> = vec!["ssh".into(), "-W".into(), "%h:%p".into()];
    words.extend(["-p".into(), c.port.to_string(), "-l".into(), c.user.clone()]);
    if let Some(key) = &c.key_file {
        words.extend(["-i".into(), key.display().to_string()]);
        words.extend(["-o".into(), "IdentitiesOnly=yes".into()]);
    }
    words.extend(host_key_options(c));
    if !before.is_empty() {
        words.push("-o".into());
        words.push(format!("ProxyCommand={}", proxy_command(inv, before)?));
    }
    words.push(c.address.clone());
    Some(words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "))
}

/// One word quoted for a POSIX shell (and for Python's `shlex.split`, which Ansible uses on
/// `ansible_ssh_common_args`); words of safe characters stay bare.
fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "%+-./:=@_,".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `--list`, in `ansible-inventory --list`'s shape: `_meta.hostvars`, then each group that has
/// hosts of its own or child groups, with `hosts` (members not shown under a child) and
/// `children`. `all` lists `ungrouped` first, as Ansible does; a group with neither hosts nor
/// children appears only among its parent's children (an entry `{}` would make Ansible read a
/// host of that name).
pub fn list(inv: &Inventory) -> Value {
    let mut out = Map::new();
    let mut hostvars = Map::new();
    for h in inv.hosts() {
        hostvars.insert(h.name.clone(), host_vars(inv, h));
    }
    out.insert("_meta".into(), json!({ "hostvars": hostvars }));
    for g in inv.group_names() {
        let mut children = inv.group_children(g).unwrap_or_default().to_vec();
        if g == super::ALL {
            children.retain(|c| c != super::UNGROUPED);
            children.insert(0, super::UNGROUPED.to_string());
        }
        let direct = direct_hosts(inv, g, &children);
        let mut entry = Map::new();
        if !direct.is_empty() && g != super::ALL {
            entry.insert("hosts".into(), json!(direct));
        }
        if !children.is_empty() {
            entry.insert("children".into(), json!(children));
        }
        if !entry.is_empty() {
            out.insert(g.to_string(), Value::Object(entry));
        }
    }
    Value::Object(out)
}

/// A group's members that no child group lists (those are shown there, as ansible-inventory
/// does).
fn direct_hosts(inv: &Inventory, group: &str, children: &[String]) -> Vec<String> {
    inv.group_hosts(group)
        .unwrap_or_default()
        .into_iter()
        .filter(|h| {
            !children.iter().any(|c| {
                inv.group_hosts(c)
                    .unwrap_or_default()
                    .iter()
                    .any(|m| m.name == h.name)
            })
        })
        .map(|h| h.name.clone())
        .collect()
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
            l["all"],
            json!({"children": ["ungrouped", "hypervisors", "routers"]})
        );
        let c = &l["_meta"]["hostvars"]["r-1-VM"]["remedy_connection"];
        assert_eq!(c["jump"], json!(["kvm01"]));
        assert_eq!(c["port"], 3922);
        assert_eq!(c["host_key"], "accept-new");
    }

    #[test]
    fn list_has_no_empty_groups_and_ungrouped_only_with_hosts() {
        let inv = Inventory::from_str(
            "i.yml",
            "all:\n  children:\n    hv:\n      hosts: { kvm01: }\n    empty: {}\n    \
             parent:\n      children: { empty: }\n",
        )
        .unwrap();
        let l = list(&inv);
        let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["_meta", "all", "hv", "parent"]);
        assert_eq!(l["parent"], json!({"children": ["empty"]}));
        assert_eq!(
            l["all"]["children"],
            json!(["ungrouped", "hv", "empty", "parent"])
        );

        let inv = Inventory::from_str("i.yml", "all:\n  hosts: { loner: }\n").unwrap();
        let l = list(&inv);
        assert_eq!(l["ungrouped"], json!({"hosts": ["loner"]}));
        assert_eq!(l["all"], json!({"children": ["ungrouped"]}));
    }

    #[test]
    fn a_jumped_host_gets_a_proxy_command_through_its_hypervisor() {
        let inv = Inventory::from_str(
            "/lab/i.yml",
            "all:\n  vars:\n    ansible_ssh_private_key_file: /lab/my key\n    \
             remedy_known_hosts_file: /lab/known_hosts\n  children:\n    hv:\n      hosts:\n        \
             kvm01: { ansible_host: 127.0.0.1, ansible_port: 2201, remedy_host_key_policy: pinned, \
             remedy_host_key_fingerprint: \"SHA256:abc\" }\n    routers:\n      \
             vars: { ansible_port: 3922, remedy_jump: kvm01, remedy_host_key_policy: accept-new }\n      \
             hosts:\n        r-1-VM: { ansible_host: 169.254.3.10, ansible_user: admin }\n",
        )
        .unwrap();
        let l = list(&inv);
        let r = &l["_meta"]["hostvars"]["r-1-VM"];
        assert_eq!(
            r["ansible_ssh_common_args"],
            "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/lab/known_hosts -o \
             'ProxyCommand=ssh -W %h:%p -p 2201 -l root -i '\\''/lab/my key'\\'' -o \
             IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o \
             UserKnownHostsFile=/lab/known_hosts 127.0.0.1'"
        );
        assert_eq!(r["ansible_user"], "admin");
        assert_eq!(r["ansible_ssh_private_key_file"], "/lab/my key");
        let k = &l["_meta"]["hostvars"]["kvm01"];
        assert_eq!(k["ansible_user"], "root");
        assert_eq!(
            k["ansible_ssh_common_args"],
            "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/lab/known_hosts"
        );
        // What Ansible's shlex.split and then ssh's shell make of it: one ProxyCommand option
        // whose command has the key path as one word.
        let words = shlex::split(r["ansible_ssh_common_args"].as_str().unwrap()).unwrap();
        let proxy = words[5].strip_prefix("ProxyCommand=").unwrap();
        let inner = shlex::split(proxy).unwrap();
        assert_eq!(
            inner[..9],
            [
                "ssh",
                "-W",
                "%h:%p",
                "-p",
                "2201",
                "-l",
                "root",
                "-i",
                "/lab/my key"
            ]
        );
        assert_eq!(inner.last().unwrap(), "127.0.0.1");
    }

    #[test]
    fn a_jump_chain_nests_proxy_commands_and_keeps_given_ssh_args() {
        let inv = Inventory::from_str(
            "i.yml",
            "all:\n  hosts:\n    bastion: { ansible_host: 10.0.0.1 }\n    \
             kvm01: { ansible_host: 10.0.0.11, remedy_jump: bastion }\n    \
             r-1-VM: { ansible_host: 169.254.3.10, ansible_port: 3922, remedy_jump: kvm01, \
             ansible_ssh_common_args: \"-o ServerAliveInterval=5\" }\n",
        )
        .unwrap();
        let l = list(&inv);
        let args = l["_meta"]["hostvars"]["r-1-VM"]["ansible_ssh_common_args"]
            .as_str()
            .unwrap()
            .to_string();
        let words = shlex::split(&args).unwrap();
        assert_eq!(words[..3], ["-o", "ServerAliveInterval=5", "-o"]);
        let outer = shlex::split(words[3].strip_prefix("ProxyCommand=").unwrap()).unwrap();
        assert_eq!(outer.last().unwrap(), "10.0.0.11");
        let nested = outer
            .iter()
            .find(|w| w.starts_with("ProxyCommand="))
            .unwrap();
        let inner = shlex::split(nested.strip_prefix("ProxyCommand=").unwrap()).unwrap();
        assert_eq!(
            inner,
            ["ssh", "-W", "%h:%p", "-p", "22", "-l", "root", "10.0.0.1"]
        );
        // A host reached directly with the default policy needs no ssh options.
        assert!(l["_meta"]["hostvars"]["bastion"]
            .get("ansible_ssh_common_args")
            .is_none());
    }
}
