use super::connection::shell_words;
use super::hosts::expand_ranges;
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
    // A setting of the group, not a variable of its hosts.
    assert!(!inv
        .host("h1")
        .unwrap()
        .vars
        .contains_key("ansible_group_priority"));
}

/// As `ansible-inventory` showed: the priority orders the inventory's group vars; written in a
/// `group_vars` file it is an ordinary variable, which orders nothing.
#[test]
fn group_priority_is_a_group_setting_only_in_the_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        &dir.path().join("inv.yml"),
        "all:\n  children:\n    a:\n      vars: { ansible_group_priority: 10, who: a }\n      \
         hosts: { h1: }\n    b:\n      vars: { who: b }\n      hosts: { h1: }\n    \
         c:\n      hosts: { h2: }\n    d:\n      hosts: { h2: }\n",
    );
    write(
        &dir.path().join("group_vars/c.yml"),
        "ansible_group_priority: 10\nwho2: c\n",
    );
    write(&dir.path().join("group_vars/d.yml"), "who2: d\n");
    let inv = Inventory::load(&[dir.path().join("inv.yml")]).expect("loads");
    let vars = |h: &str| Value::Object(inv.host(h).unwrap().vars.clone());
    assert_eq!(vars("h1"), serde_json::json!({"who": "a"}));
    assert_eq!(
        vars("h2"),
        serde_json::json!({"ansible_group_priority": 10, "who2": "d"})
    );
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
    let i = inv(
        "all:\n  vars:\n    remedy_cloudstack:\n      simulator: { scenario: vr-backup-loop }\n",
    );
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
    let e = err(
        "all:\n  vars:\n    remedy_cloudstack:\n      simulator: { scenario: healthy, speed: 2 }\n",
    );
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
    let e = err(
        "g:\n  hosts:\n    a: { ansible_ssh_common_args: \"-o ProxyCommand='ssh -W %h:%p gw'\" }\n",
    );
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
    let inv = inv("g:\n  vars: { remedy_jump: a }\n  hosts:\n    a: { remedy_jump: ~ }\n    b:\n");
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

// ---------------------------------------------------------------------------------------------
// YAML 1.1 values, as Ansible reads them
// ---------------------------------------------------------------------------------------------

const YAML11_CORPUS: &str = include_str!("testdata/yaml11-corpus.yml");
const YAML11_ANSIBLE: &str = include_str!("testdata/yaml11-corpus.ansible.json");

fn ansible_reading() -> Map<String, Value> {
    match serde_json::from_str(YAML11_ANSIBLE) {
        Ok(Value::Object(map)) => map,
        other => panic!("expected an object: {other:?}"),
    }
}

/// Every value of the corpus equals what `ansible-inventory --list` printed for it.
#[test]
fn inventory_values_read_as_ansible_reads_them() {
    let inventory = inv(YAML11_CORPUS);
    let got = &inventory.host("h1").expect("h1").vars;
    let want = ansible_reading();
    for (name, value) in &want {
        assert_eq!(got.get(name), Some(value), "{name}");
    }
    assert_eq!(got.len(), want.len(), "{got:?}");
}

/// The same values in a `host_vars` file and in a `group_vars` file.
#[test]
fn vars_files_values_read_as_ansible_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body: String = YAML11_CORPUS
        .lines()
        .skip_while(|l| !l.starts_with("      "))
        .map(|l| format!("{}\n", l.strip_prefix("      ").unwrap_or(l)))
        .collect();
    write(&dir.path().join("host_vars/h1.yml"), &body);
    write(&dir.path().join("group_vars/all.yml"), &body);
    write(
        &dir.path().join("inv.yml"),
        "all:\n  hosts:\n    h1:\n    h2:\n",
    );
    let inventory = Inventory::load(&[dir.path().join("inv.yml")]).expect("loads");
    let want = ansible_reading();
    for host in ["h1", "h2"] {
        let got = &inventory.host(host).expect("host").vars;
        for (name, value) in &want {
            assert_eq!(got.get(name), Some(value), "{host} {name}");
        }
    }
}

/// A host or child group written as a bare scalar keeps its name as written, even when it
/// looks like a number to one YAML reading or the other.
#[test]
fn scalar_host_and_child_names_stay_as_written() {
    let inventory = inv("g:\n  hosts: 1e3\nparent:\n  children: 0o17\n0o17:\n  vars: { a: 1 }\n");
    assert_eq!(names(&inventory.group_hosts("g").unwrap()), ["1e3"]);
    assert_eq!(inventory.group_children("parent").unwrap(), ["0o17"]);
}

/// A plain `yes` where a secret reference belongs is refused like any inline value.
#[test]
fn yaml11_values_keep_the_secret_rules() {
    let e = err("all:\n  vars:\n    ansible_password: yes\n");
    assert!(
        e.contains("ansible_password: inline secrets are not allowed"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets by reference to other variables, and ansible-vault
// ---------------------------------------------------------------------------------------------

/// The vault pattern: a password variable names another variable, resolved at use.
#[test]
fn a_password_may_refer_to_a_variable_holding_a_secret_reference() {
    let inventory = inv(
        "all:\n  vars:\n    ansible_become_password: \"{{ become_pass }}\"\n    \
         become_pass: { env: BECOME_PASS }\n  hosts:\n    h1:\n",
    );
    assert_eq!(
        var(&inventory, "h1", "ansible_become_password"),
        "{{ become_pass }}"
    );
    assert_eq!(
        inventory.secret_refs(),
        vec![(
            "h1.become_pass".to_string(),
            SecretRef::Env("BECOME_PASS".into())
        )]
    );
    // A reference to a variable the host lacks is left for use, as Ansible does.
    inv("all:\n  vars:\n    ansible_password: \"{{ nowhere }}\"\n  hosts:\n    h1:\n");
}

#[test]
fn a_password_referring_to_an_inline_value_is_refused_without_repeating_it() {
    let e = err(
        "all:\n  vars:\n    ansible_become_password: \"{{ become_pass }}\"\n  hosts:\n    \
         h1: { become_pass: hunter22 }\n",
    );
    assert_eq!(
        e,
        "test.yml: host \"h1\": ansible_become_password refers to become_pass, which holds an \
         inline secret (never inline secrets): encrypt it with ansible-vault (a vaulted file or \
         a !vault value), or use { env: NAME } or { file: PATH }"
    );
    // Anything but one plain reference is still an inline secret.
    let e = err("all:\n  vars:\n    ansible_password: \"x{{ a }}\"\n");
    assert!(e.contains("inline secrets are not allowed"), "{e}");
}

/// Files and `!vault` values written by ansible-vault (testdata/vault/README.md), read with the
/// passwords installed as `--vault-id` does; this is the only test that installs passwords.
#[test]
fn vaulted_files_and_values_are_decrypted_and_listed_as_secrets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/inventory/testdata/vault");
    let spec = |label: &str, file: &str| format!("{label}@{}", dir.join(file).display());
    vault::use_passwords(vec![
        vault::VaultPassword::from_spec(&spec("default", "password")).unwrap(),
        vault::VaultPassword::from_spec(&spec("prod", "prod.password")).unwrap(),
    ]);
    let inventory = Inventory::load(&[dir.join("inventory/hosts.yml")]).expect("loads");
    let vars = &inventory.host("web1").unwrap().vars;
    assert_eq!(vars["ansible_password_value"], "inline-Pa55word");
    assert_eq!(vars["labelled"], "labelled-Pa55word");
    assert_eq!(vars["vault_become_pass"], "s3cr3t-Become!");
    assert_eq!(vars["ansible_become_password"], "{{ vault_become_pass }}");
    // The decrypted file is read as Ansible reads YAML, too.
    assert_eq!(vars["vault_flag"], true);
    assert_eq!(vars["vault_port"], 2222);
    let mut secrets = inventory.vault_values().to_vec();
    secrets.sort();
    assert_eq!(
        secrets,
        [
            "inline-Pa55word",
            "labelled-Pa55word",
            "plain text inside a vault",
            "s3cr3t-Become!",
            "yes"
        ]
    );
}

/// `files_state` sees what `Inventory::digest` cannot: a vars file for a host or group only a
/// CloudStack source names (it is read only once the zone's hosts are known).
#[test]
fn files_state_changes_with_any_vars_file_even_for_a_host_the_files_do_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    kvm1: { ansible_host: 127.0.0.1 }\n",
    )
    .unwrap();
    let paths = vec![inv.clone()];
    let first = files_state(&paths).unwrap();
    assert_eq!(
        files_state(&paths).unwrap(),
        first,
        "the same files, the same state"
    );
    let digest = Inventory::load(&paths).unwrap().digest();
    // A host_vars file for a router only the zone's API names.
    std::fs::create_dir(dir.path().join("host_vars")).unwrap();
    std::fs::write(
        dir.path().join("host_vars/r-930-VM.yml"),
        "ansible_port: 2222\n",
    )
    .unwrap();
    let with_vars = files_state(&paths).unwrap();
    assert_ne!(with_vars, first);
    assert_eq!(
        Inventory::load(&paths).unwrap().digest(),
        digest,
        "the files alone do not read it"
    );
    // A group's, in a directory of its own.
    std::fs::create_dir_all(dir.path().join("group_vars/vpc_web_vpc")).unwrap();
    std::fs::write(dir.path().join("group_vars/vpc_web_vpc/x.yml"), "a: 1\n").unwrap();
    let with_group = files_state(&paths).unwrap();
    assert_ne!(with_group, with_vars);
    // Its content counts, not only its name.
    std::fs::write(dir.path().join("group_vars/vpc_web_vpc/x.yml"), "a: 2\n").unwrap();
    assert_ne!(files_state(&paths).unwrap(), with_group);
}
