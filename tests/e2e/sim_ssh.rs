//! remedy's SSH transport against the simulated SSH hosts (`cloudstack_sim::ssh`) of a
//! simulated zone: hypervisors and the management server on 127.0.0.1, routers only through
//! the hypervisor they run on (`direct-tcpip` to `<linklocalip>:3922`), strict host keys from
//! the simulator's `known_hosts` lines, and changes made over SSH visible through the API.
//!
//! The behaviours of the real-OpenSSH lab suite (`tests/lab/main.rs`) against the simulated
//! hosts: a changed host key refused under `strict` and `pinned`, `accept-new` recording
//! hypervisors and routers, 10 MB of output capped and counted through the jump, a hung
//! command's timeout closing its channel, and an sshd killed mid-run failing the step while
//! the core rolls back. Routers listen nowhere: reachable only through their hypervisor.
//!
//! Nothing here sends a packet to a link-local address: the client dials 127.0.0.1 only, and a
//! router is reached through a channel of its hypervisor's connection.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};
use cloudstack_sim::ssh::commands::run_line;
use cloudstack_sim::ssh::SshSim;
use remedy::app::RunOptions;
use remedy::cloudstack::{Client, Credentials, Method, Options};
use remedy::inventory::Inventory;
use remedy::transport::local::OUTPUT_CAP;
use remedy::transport::ssh::{SshOptions, SshTransport};
use remedy::transport::{CmdOutput, TransportError};
use remedy_tests::ssh::{options, run as ssh, transport, unreachable_reason as unreachable};
use remedy_tests::{plan, run, write};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};

const T: Duration = Duration::from_secs(20);

struct Lab {
    sim: Sim,
    ssh: SshSim,
    tmp: tempfile::TempDir,
    /// The inventory's text (strict host keys), and the `known_hosts` file it is checked with.
    inventory: String,
    known_hosts: PathBuf,
    inv: Arc<Inventory>,
    t: Arc<SshTransport>,
    /// Router name -> (link-local address, hypervisor name)
    routers: BTreeMap<String, (String, String)>,
}

fn write_key(path: &std::path::Path, key: &PrivateKey) {
    std::fs::write(path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The simulator, its SSH hosts, and a transport with an inventory for them. `extra` adds
/// host entries (indented as under `all.hosts`).
async fn lab(extra: &str) -> Lab {
    let sim = Sim::start(SimConfig {
        scenario: Scenario::builtin("vr-backup-loop").expect("shipped scenario"),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        secret_key: None,
    })
    .await
    .expect("simulator starts");
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let ssh = SshSim::start(sim.zone_handle(), key.public_key().clone())
        .await
        .expect("ssh hosts start");
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("id_ed25519");
    write_key(&key_path, &key);
    let known_hosts = tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, ssh.known_hosts_lines().join("\n") + "\n").unwrap();

    let routers: BTreeMap<String, (String, String)> = sim.with_zone(|z| {
        let w = z.world();
        w.vms
            .iter()
            .filter(|v| v.vpcid().is_some() && v.live())
            .map(|v| {
                let host = w.host(&v.hostid).expect("router's host").name.clone();
                (v.name.clone(), (v.linklocalip.clone(), host))
            })
            .collect()
    });
    let mut hosts = String::new();
    for m in ["mgmt1", "kvm01", "kvm02"] {
        let a = ssh.addr(m).expect("listening");
        hosts.push_str(&format!(
            "    {m}:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n",
            a.port()
        ));
    }
    for (name, (ll, hv)) in &routers {
        hosts.push_str(&format!(
            "    {name}:\n      ansible_host: {ll}\n      ansible_port: 3922\n      remedy_jump: {hv}\n"
        ));
    }
    let system_vms: Vec<(String, String, String)> = sim.with_zone(|z| {
        let w = z.world();
        w.vms
            .iter()
            .filter(|v| v.systemvmtype().is_some() && v.live())
            .map(|v| {
                let host = w.host(&v.hostid).expect("system VM's host").name.clone();
                (v.name.clone(), v.linklocalip.clone(), host)
            })
            .collect()
    });
    for (name, ll, hv) in &system_vms {
        hosts.push_str(&format!(
            "    {name}:\n      ansible_host: {ll}\n      ansible_port: 3922\n      remedy_jump: {hv}\n"
        ));
    }
    hosts.push_str(extra);
    let inventory = format!(
        "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n  hosts:\n{hosts}",
        key_path.display()
    );
    let (inv, t) = transport(&inventory, &known_hosts);
    Lab {
        sim,
        ssh,
        tmp,
        inventory,
        known_hosts,
        inv,
        t: Arc::new(t),
        routers,
    }
}

/// `SHA256:...`, as `ssh-keygen -lf` prints it (the simulator's key, not remedy's reading).
fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl Lab {
    async fn ssh(&self, host: &str, cmd: &str) -> Result<CmdOutput, TransportError> {
        ssh(&self.t, &self.inv, host, cmd, T).await
    }

    /// The router that runs on `hv`, and one that does not.
    fn router_on(&self, hv: &str) -> (String, String) {
        let on = self
            .routers
            .iter()
            .find(|(_, (_, h))| h == hv)
            .map(|(n, _)| n.clone())
            .expect("a router on the hypervisor");
        let off = self
            .routers
            .iter()
            .find(|(_, (_, h))| h != hv)
            .map(|(n, _)| n.clone())
            .expect("a router elsewhere");
        (on, off)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostname_on_hypervisors_and_the_management_server() {
    let lab = lab("").await;
    for m in ["kvm01", "kvm02", "mgmt1"] {
        let out = lab.ssh(m, "hostname").await.unwrap();
        assert_eq!(out.rc, Some(0), "{m}: {out:?}");
        assert_eq!(out.stdout, format!("{m}\n"));
        assert_eq!(out.stderr, "");
        assert_eq!(lab.ssh.commands(m), ["hostname"]);
    }
    // System VMs listen nowhere: an inventory entry without `remedy_jump` would have to dial
    // their link-local address, which no test does (see `a_router_through_its_hypervisor`).
    assert_eq!(lab.ssh.listening(), ["kvm01", "kvm02", "mgmt1"]);
    for vm in lab
        .routers
        .keys()
        .map(String::as_str)
        .chain(["s-1-VM", "v-2-VM"])
    {
        assert_eq!(lab.ssh.addr(vm), None, "{vm}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_through_its_hypervisor() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    let out = lab
        .ssh(&router, "hostname; echo out; echo err >&2; false")
        .await
        .unwrap();
    assert_eq!(out.rc, Some(1), "{out:?}");
    assert_eq!(out.stdout, format!("{router}\nout\n"));
    assert_eq!(out.stderr, "err\n");
    let out = lab.ssh(&router, "nosuchtool --x").await.unwrap();
    assert_eq!(out.rc, Some(127));
    assert_eq!(out.stderr, "bash: nosuchtool: command not found\n");
    // The command ran on the router; the hypervisor only carried the tunnel.
    assert_eq!(
        lab.ssh.commands(&router),
        ["hostname; echo out; echo err >&2; false", "nosuchtool --x"]
    );
    assert!(lab.ssh.commands("kvm01").is_empty());
    assert_eq!(lab.t.connections_made("kvm01"), 1);
    assert_eq!(lab.t.connections_made(&router), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnels_a_real_zone_would_not_give_are_refused() {
    // Placeholders; the real entries are appended once the routers are known.
    let probe = lab("").await;
    let (r1, r2) = probe.router_on("kvm01");
    let (ll1, ll2) = (probe.routers[&r1].0.clone(), probe.routers[&r2].0.clone());
    drop(probe);
    let extra = format!(
        "    wrong-port:\n      ansible_host: {ll1}\n      ansible_port: 22\n      remedy_jump: kvm01\n\
         \x20   wrong-address:\n      ansible_host: 169.254.250.250\n      ansible_port: 3922\n      remedy_jump: kvm01\n\
         \x20   other-hypervisor:\n      ansible_host: {ll2}\n      ansible_port: 3922\n      remedy_jump: kvm01\n\
         \x20   via-mgmt:\n      ansible_host: {ll1}\n      ansible_port: 3922\n      remedy_jump: mgmt1\n"
    );
    let lab = lab(&extra).await;
    for host in [
        "wrong-port",
        "wrong-address",
        "other-hypervisor",
        "via-mgmt",
    ] {
        let e = lab.ssh(host, "hostname").await.unwrap_err();
        let reason = unreachable(e);
        assert!(
            reason.contains("could not open a tunnel"),
            "{host}: {reason}"
        );
    }
    // The router on kvm02 is reached through kvm02, and a stopped router not at all.
    let out = lab.ssh(&r2, "hostname").await.unwrap();
    assert_eq!(out.stdout, format!("{r2}\n"));
    lab.sim.with_zone(|z| {
        let w = z.world();
        let id = w.vms.iter().find(|v| v.name == r1).unwrap().id.clone();
        let now = jiff::Timestamp::now();
        let reply = z.handle(
            "stopRouter",
            &BTreeMap::from([("id".to_string(), id)]),
            &Default::default(),
            now,
        );
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        z.advance(now + Duration::from_secs(60));
    });
    let reason = unreachable(lab.ssh(&r1, "hostname").await.unwrap_err());
    assert!(reason.contains("could not open a tunnel"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bringing_eth1_up_over_ssh_makes_the_router_primary_in_the_api() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    let cs = Client::new(
        Credentials {
            endpoint: lab.sim.endpoint(),
            api_key: lab.sim.api_key().into(),
            secret_key: lab.sim.secret_key().into(),
        },
        Options {
            request_timeout: Duration::from_secs(5),
            ..Options::default()
        },
    )
    .unwrap();
    let state = |reply: serde_json::Value, name: &str| {
        reply["router"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["redundantstate"].as_str().unwrap().to_string())
            .unwrap()
    };
    let list = || async {
        cs.call(
            "listRouters",
            &BTreeMap::new(),
            Method::Get,
            tokio::time::Instant::now() + T,
            None,
        )
        .await
        .unwrap()
    };
    assert_eq!(state(list().await, &router), "BACKUP");

    // eth1 is down: its gateway is not reachable, as on a real VR
    let eth1 = lab.ssh(&router, "ip addr show eth1").await.unwrap().stdout;
    let addr = eth1
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .expect("eth1 has an address")
        .to_string();
    let ip = addr.split('/').next().unwrap();
    let gw = format!("{}.1", ip.rsplit_once('.').unwrap().0);
    let route = format!("ip route add default via {gw} table Table_eth1");
    let out = lab.ssh(&router, &route).await.unwrap();
    assert_eq!(out.rc, Some(2));
    assert_eq!(out.stderr, "Error: Nexthop has invalid gateway.\n");

    let out = lab
        .ssh(
            &router,
            &format!(
                "systemctl start keepalived && ip link set eth1 up && {route} && \
                 /opt/cloud/bin/checkrouter.sh"
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(out.stdout, "Status: PRIMARY\n");
    assert_eq!(state(list().await, &router), "PRIMARY");
    let out = lab
        .ssh(&router, "ip route show table Table_eth1")
        .await
        .unwrap();
    assert_eq!(out.stdout, format!("default via {gw} dev eth1\n"));

    // And back: the API follows the guest state
    lab.ssh(&router, "ip link set eth1 down").await.unwrap();
    assert_eq!(state(list().await, &router), "BACKUP");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_commands_one_connection() {
    let lab = lab("").await;
    let mut seen = std::collections::BTreeSet::new();
    for wave in 0..2 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (t, inv) = (lab.t.clone(), lab.inv.clone());
            let n = wave * 10 + i;
            tasks.spawn(
                async move { ssh(&t, &inv, "kvm01", &format!("sleep 0.2; echo {n}"), T).await },
            );
        }
        while let Some(r) = tasks.join_next().await {
            let out = r.unwrap().unwrap();
            assert_eq!(out.rc, Some(0));
            seen.insert(out.stdout.trim().parse::<u32>().unwrap());
        }
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(lab.t.connections_made("kvm01"), 1);
    assert_eq!(lab.ssh.commands("kvm01").len(), 20);

    // Routers behind kvm01 share its connection too
    let (router, _) = lab.router_on("kvm01");
    for _ in 0..5 {
        lab.ssh(&router, "true").await.unwrap();
    }
    assert_eq!(lab.t.connections_made("kvm01"), 1);
    assert_eq!(lab.t.connections_made(&router), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_end_a_sleep_and_other_keys_are_refused() {
    let lab = lab("").await;
    let started = std::time::Instant::now();
    let e = ssh(
        &lab.t,
        &lab.inv,
        "kvm01",
        "sleep 30; echo late",
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, TransportError::Timeout(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    eventually(
        Duration::from_secs(5),
        "the sleep outlived its channel",
        || lab.ssh.running("kvm01") == 0,
    )
    .await;
    // The connection is still good
    assert_eq!(lab.ssh("kvm01", "echo ok").await.unwrap().stdout, "ok\n");

    // Another client key: refused
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    write_key(
        &other,
        &PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap(),
    );
    let a = lab.ssh.addr("kvm01").unwrap();
    let inv_text = format!(
        "all:\n  hosts:\n    kvm01:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      \
         ansible_user: root\n      ansible_ssh_private_key_file: {}\n",
        a.port(),
        other.display()
    );
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, lab.ssh.known_hosts_lines().join("\n") + "\n").unwrap();
    let inv = Arc::new(Inventory::from_str("other.yml", &inv_text).unwrap());
    let t = SshTransport::new(
        inv.clone(),
        SshOptions {
            known_hosts: known,
            use_agent: false,
            agent_socket: None,
            default_keys: Vec::new(),
            passphrase_env: None,
            ..SshOptions::default()
        },
    );
    let e = ssh(&t, &inv, "kvm01", "hostname", T).await.unwrap_err();
    unreachable(e);
}

#[tokio::test(flavor = "multi_thread")]
async fn ssvm_check_through_the_ssvms_hypervisor() {
    let lab = lab("").await;
    let out = lab
        .ssh("s-1-VM", "/usr/local/cloud/systemvm/ssvm-check.sh")
        .await
        .unwrap();
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert!(out.stdout.contains("Tests Complete"), "{}", out.stdout);
    let expected = lab.sim.with_zone(|z| z.ssvm_check("s-1-VM")).unwrap();
    assert_eq!(out.stdout, expected);
    // The CPVM is there too; the SSVM's script is not
    let out = lab
        .ssh("v-2-VM", "/usr/local/cloud/systemvm/ssvm-check.sh")
        .await
        .unwrap();
    assert_eq!(out.rc, Some(127));
}

/// The inventory's text with `remedy_host_key_policy: POLICY` for every host.
fn with_policy(inventory: &str, policy: &str) -> String {
    let vars = "  vars:\n    ansible_user: root\n";
    assert!(inventory.contains(vars));
    inventory.replace(
        vars,
        &format!("{vars}    remedy_host_key_policy: {policy}\n"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_routers_new_host_key_is_refused_under_strict_and_pinned() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    let ll = lab.routers[&router].0.clone();
    assert_eq!(lab.ssh(&router, "true").await.unwrap().rc, Some(0));
    let old = fingerprint(&lab.ssh.host_key(&router));
    let new = fingerprint(&lab.ssh.new_host_key(&router));
    assert_ne!(old, new);
    assert_eq!(fingerprint(&lab.ssh.host_key(&router)), new);
    // The open session stays.
    assert_eq!(lab.ssh(&router, "echo ok").await.unwrap().stdout, "ok\n");
    assert_eq!(lab.t.connections_made(&router), 1);

    // strict (the default), known_hosts from before: the new key is refused, loudly.
    let (inv, t) = transport(&lab.inventory, &lab.known_hosts);
    assert_eq!(
        ssh(&t, &inv, "kvm01", "echo ok", T).await.unwrap().stdout,
        "ok\n"
    );
    let reason = unreachable(ssh(&t, &inv, &router, "true", T).await.unwrap_err());
    for needle in [ll.as_str(), &old, &new] {
        assert!(reason.contains(needle), "{needle} not in: {reason}");
    }
    assert!(!lab.ssh.commands(&router).contains(&"hostname".to_string()));

    // pinned: the old pin is refused naming both fingerprints, the new one connects.
    let pin = |fp: &str| {
        lab.inventory.replace(
            &format!("    {router}:\n"),
            &format!(
                "    {router}:\n      remedy_host_key_policy: pinned\n      \
                 remedy_host_key_fingerprint: \"{fp}\"\n"
            ),
        )
    };
    let (inv, t) = transport(&pin(&old), &lab.known_hosts);
    let reason = unreachable(ssh(&t, &inv, &router, "true", T).await.unwrap_err());
    for needle in [ll.as_str(), &old, &new] {
        assert!(reason.contains(needle), "{needle} not in: {reason}");
    }
    let (inv, t) = transport(&pin(&new), &lab.known_hosts);
    let out = ssh(&t, &inv, &router, "hostname", T).await.unwrap();
    assert_eq!(out.stdout, format!("{router}\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_new_records_a_hypervisor_and_a_router_then_strict_connects() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    let ll = lab.routers[&router].0.clone();
    let fresh = lab.tmp.path().join("known_hosts.new");
    std::fs::write(&fresh, "").unwrap();

    let (inv, t) = transport(&with_policy(&lab.inventory, "accept-new"), &fresh);
    for h in ["kvm01", router.as_str()] {
        assert_eq!(
            ssh(&t, &inv, h, "true", T).await.unwrap().rc,
            Some(0),
            "{h}"
        );
    }
    let recorded = std::fs::read_to_string(&fresh).unwrap();
    assert_eq!(recorded.lines().count(), 2, "{recorded}");
    let port = lab.ssh.addr("kvm01").unwrap().port();
    assert!(
        recorded.contains(&format!("[127.0.0.1]:{port} ssh-ed25519 ")),
        "{recorded}"
    );
    assert!(
        recorded.contains(&format!("[{ll}]:3922 ssh-ed25519 ")),
        "{recorded}"
    );
    // What was recorded is what the simulator holds.
    let expected = lab.ssh.known_hosts_lines();
    for line in recorded.lines() {
        assert!(
            expected.iter().any(|e| e == line.trim()),
            "{line} not in {expected:?}"
        );
    }

    // strict, with the recorded file only
    let (inv, t) = transport(&lab.inventory, &fresh);
    let out = ssh(&t, &inv, &router, "hostname", T).await.unwrap();
    assert_eq!(out.stdout, format!("{router}\n"));
    // ...and a host it never recorded is refused
    let reason = unreachable(ssh(&t, &inv, "kvm02", "true", T).await.unwrap_err());
    assert!(reason.contains("is not known"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_megabytes_through_the_jump_are_capped_and_counted() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    let out = ssh(
        &lab.t,
        &lab.inv,
        &router,
        "head -c 10485760 /dev/zero; echo done >&2",
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(out.rc, Some(0));
    assert_eq!(out.stdout.len(), OUTPUT_CAP);
    assert!(out.stdout.bytes().all(|b| b == 0));
    assert_eq!(out.dropped_bytes, 10_485_760 - OUTPUT_CAP as u64);
    assert_eq!(out.stderr, "done\n");
    // Redirected, nothing is sent
    let out = lab
        .ssh(&router, "head -c 10M /dev/zero >/dev/null; echo done")
        .await
        .unwrap();
    assert_eq!((out.stdout.as_str(), out.dropped_bytes), ("done\n", 0));
}

/// Polls `cond` every 20 ms until it holds, for at most `within`.
async fn eventually(within: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_command_on_a_router_times_out_and_its_channel_is_closed() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    lab.ssh(&router, "true").await.unwrap();
    assert_eq!(lab.ssh.running(&router), 0);
    let started = Instant::now();
    let hung = {
        let (t, inv, router) = (lab.t.clone(), lab.inv.clone(), router.clone());
        tokio::spawn(async move {
            ssh(
                &t,
                &inv,
                &router,
                "sleep 30; echo late",
                Duration::from_secs(1),
            )
            .await
        })
    };
    eventually(T, "the command never started", || {
        lab.ssh.running(&router) == 1
    })
    .await;
    let err = hung.await.unwrap().unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout(d) if d == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The simulated router saw its channel end: the command is no longer running.
    eventually(
        Duration::from_secs(5),
        "the command outlived its channel",
        || lab.ssh.running(&router) == 0,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // The connection is still good.
    assert_eq!(lab.ssh(&router, "echo ok").await.unwrap().stdout, "ok\n");
    assert_eq!(lab.t.connections_made(&router), 1);
    assert_eq!(lab.t.connections_made("kvm01"), 1);
}

const KILLED: &str = r#"
name: sim-killed-mid-run
description: a change on the hypervisor, then a long command on a router whose sshd dies
steps:
  - id: mark
    on: kvm01
    ssh: ovs-vsctl add-port cloudbr0 remedy-mark
    rollback: ovs-vsctl del-port cloudbr0 remedy-mark
  - id: long
    on: ROUTER
    needs: [mark]
    ssh: sleep 30 && ip link set eth1 up
    rollback: ip link set eth1 down
    timeout: 1m
"#;

/// Killing the router's sshd while a step runs there fails that step promptly, and the core
/// rolls back what the run had done on the hypervisor; the audit log records it all.
#[tokio::test(flavor = "multi_thread")]
async fn killing_sshd_mid_run_fails_the_step_and_rolls_back() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    let ports = || {
        lab.sim
            .with_zone(|z| run_line(z, "kvm01", "ovs-vsctl list-ports cloudbr0"))
            .stdout
    };
    assert!(!ports().contains("remedy-mark"), "{}", ports());
    let dir = lab.tmp.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let pb = write(&dir, "killed.yml", &KILLED.replace("ROUTER", &router));
    let inv_path = write(&dir, "inventory.yml", &lab.inventory);
    let audit = dir.join("audit.jsonl");
    let plan = plan(&pb, &inv_path, &[]);
    let opts = RunOptions {
        audit_log: Some(audit.clone()),
        ..Default::default()
    };
    let started = Instant::now();
    let t = SshTransport::new(lab.inv.clone(), options(&lab.known_hosts));
    let runner = tokio::spawn(run(plan, Arc::new(t), opts));

    let long = "sleep 30 && ip link set eth1 up".to_string();
    eventually(T, "the long step never started", || {
        lab.ssh.running(&router) == 1 && lab.ssh.commands(&router).contains(&long)
    })
    .await;
    assert!(ports().contains("remedy-mark\n"), "{}", ports());
    lab.ssh.stop_sshd(&router);
    let killed_at = Instant::now();
    let (_, summary, _) = runner.await.unwrap();
    assert!(killed_at.elapsed() < Duration::from_secs(15), "not prompt");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The router's command may or may not have run (its connection was lost mid-command),
    // and its rollback cannot reach it: the run says so (exit 3) and names what to check,
    // after undoing what it could.
    assert_eq!(summary.exit.code(), 3, "{}", summary.status);
    assert_eq!(summary.undone, 1, "{}", summary.status);
    assert_eq!(summary.maybe_changed, 1, "{}", summary.status);
    assert!(
        summary.not_undone.len() == 1
            && summary.not_undone[0].starts_with(&format!("long@{router}: ")),
        "{:?}",
        summary.not_undone
    );

    // The rollback ran on the hypervisor, and undid the change; the router's line never went
    // past its sleep.
    assert_eq!(
        lab.ssh.commands("kvm01"),
        [
            "ovs-vsctl add-port cloudbr0 remedy-mark",
            "ovs-vsctl del-port cloudbr0 remedy-mark"
        ]
    );
    assert!(!ports().contains("remedy-mark"), "{}", ports());
    assert_eq!(lab.ssh.running(&router), 0);
    let link = lab
        .sim
        .with_zone(|z| run_line(z, &router, "ip link show eth1"))
        .stdout;
    assert!(link.contains("state DOWN"), "{link}");

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.contains("lost mid-command"), "{text}");
    assert!(
        text.contains("ovs-vsctl del-port cloudbr0 remedy-mark"),
        "{text}"
    );
    let report = remedy::audit::verify(&audit).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // The router's sshd stays down; the hypervisor carries on.
    let reason = unreachable(lab.ssh(&router, "true").await.unwrap_err());
    assert!(reason.contains("could not open a tunnel"), "{reason}");
    assert_eq!(lab.ssh("kvm01", "echo ok").await.unwrap().stdout, "ok\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hypervisors_sshd_stopped_takes_its_tunnels_and_refuses_new_connections() {
    let lab = lab("").await;
    let (router, _) = lab.router_on("kvm01");
    let addr = lab.ssh.addr("kvm01").unwrap();
    lab.ssh("kvm01", "true").await.unwrap();
    let hung = {
        let (t, inv, router) = (lab.t.clone(), lab.inv.clone(), router.clone());
        tokio::spawn(async move { ssh(&t, &inv, &router, "sleep 30", T).await })
    };
    eventually(T, "the command never started", || {
        lab.ssh.running(&router) == 1
    })
    .await;
    let stopped_at = Instant::now();
    lab.ssh.stop_sshd("kvm01");
    // The router's session went with the hypervisor's connection that carried it.
    let e = hung.await.unwrap().unwrap_err();
    assert!(stopped_at.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&e, TransportError::Other(m) if m.contains("lost mid-command")),
        "{e:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the router's line kept running",
        || lab.ssh.running(&router) == 0,
    )
    .await;
    // Nothing listens there any more; kvm02 carries on.
    eventually(Duration::from_secs(5), "kvm01 still listens", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert!(lab.ssh("kvm01", "true").await.is_err());
    assert_eq!(lab.ssh("kvm02", "echo ok").await.unwrap().stdout, "ok\n");
}

/// Issue 19: a value the author put inside quotes in an `ssh:` command. `echo 'hello {{ name }}'`
/// once rendered as `echo 'hello 'x; chmod 777 FILE''`, and the chmod ran on the management
/// server. Now each value is quoted for its place: the commands that arrive hold the value as
/// one argument, the file keeps its mode, and `$(...)` inside double quotes stays text.
const GREET: &str = r#"
name: greet
description: says hello on the management server
params:
  name: { required: true }
steps:
  - id: single
    on: mgmt1
    ssh: echo 'hello {{ name }}'
    changes: none
  - id: double
    on: mgmt1
    needs: [single]
    ssh: echo "hello {{ name }}"
    changes: none
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_value_inside_quotes_stays_one_argument() {
    let lab = lab("").await;
    let file = "/var/log/cloudstack/management/management-server.log";
    let mode = || {
        lab.sim
            .with_zone(|z| run_line(z, "mgmt1", &format!("stat -c %a {file}")))
            .stdout
    };
    assert_eq!(mode(), "644\n");
    let dir = lab.tmp.path().join("greet");
    std::fs::create_dir_all(&dir).unwrap();
    let pb = write(&dir, "greet.yml", GREET);
    let inv_path = write(&dir, "inventory.yml", &lab.inventory);
    let t = Arc::new(SshTransport::new(
        lab.inv.clone(),
        options(&lab.known_hosts),
    ));

    let chmod = format!("x; chmod 777 {file}");
    let first = plan(&pb, &inv_path, &[("name", &chmod)]);
    let (_, summary, _) = run(first, t.clone(), RunOptions::default()).await;
    assert_eq!(summary.failed, 0, "{}", summary.status);
    assert_eq!(
        lab.ssh.commands("mgmt1"),
        [
            format!("echo 'hello x; chmod 777 {file}'"),
            format!("echo \"hello x; chmod 777 {file}\""),
        ]
    );
    assert_eq!(mode(), "644\n", "the chmod in the value ran");

    let subst = format!("$(chmod 777 {file})");
    let second = plan(&pb, &inv_path, &[("name", &subst)]);
    let (_, summary, _) = run(second, t, RunOptions::default()).await;
    // The simulated shell refuses a substitution it would have to run; escaped, it is text.
    assert_eq!(summary.failed, 0, "{}", summary.status);
    assert_eq!(
        lab.ssh.commands("mgmt1")[2..],
        [
            format!("echo 'hello $(chmod 777 {file})'"),
            format!("echo \"hello \\$(chmod 777 {file})\""),
        ]
    );
    assert_eq!(mode(), "644\n");
}
