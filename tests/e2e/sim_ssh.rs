//! remedy's SSH transport against the simulated SSH hosts (`cloudstack_sim::ssh`) of a
//! simulated zone: hypervisors and the management server on 127.0.0.1, routers only through
//! the hypervisor they run on (`direct-tcpip` to `<linklocalip>:3922`), strict host keys from
//! the simulator's `known_hosts` lines, and changes made over SSH visible through the API.
//!
//! Nothing here sends a packet to a link-local address: the client dials 127.0.0.1 only, and a
//! router is reached through a channel of its hypervisor's connection.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};
use cloudstack_sim::ssh::SshSim;
use remedy::cloudstack::{Client, Credentials, Method, Options};
use remedy::inventory::Inventory;
use remedy::transport::ssh::{SshOptions, SshTransport};
use remedy::transport::{Access, Action, ActionResult, CmdOutput, Transport, TransportError};
use russh::keys::ssh_key::rand_core::OsRng;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

const T: Duration = Duration::from_secs(20);

struct Lab {
    sim: Sim,
    ssh: SshSim,
    _tmp: tempfile::TempDir,
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
    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
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
    let inv = Arc::new(Inventory::from_str("sim.yml", &inventory).expect("inventory"));
    let opts = SshOptions {
        connect_timeout: Duration::from_secs(10),
        known_hosts,
        keepalive: Some(Duration::from_secs(5)),
        passphrase_env: None,
        use_agent: false,
        agent_socket: None,
        default_keys: Vec::new(),
        max_sessions: 10,
    };
    let t = Arc::new(SshTransport::new(inv.clone(), opts));
    Lab {
        sim,
        ssh,
        _tmp: tmp,
        inv,
        t,
        routers,
    }
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

async fn ssh(
    t: &SshTransport,
    inv: &Inventory,
    host: &str,
    cmd: &str,
    timeout: Duration,
) -> Result<CmdOutput, TransportError> {
    let h = inv.host(host).unwrap_or_else(|| panic!("no host {host}"));
    match t
        .run(h, &Action::ssh(cmd), Access::ReadOnly, timeout)
        .await?
    {
        ActionResult::Ssh(out) => Ok(out),
        other => panic!("unexpected result {other:?}"),
    }
}

fn unreachable(e: TransportError) -> String {
    match e {
        TransportError::Unreachable { reason, .. } => reason,
        other => panic!("expected Unreachable, got {other:?}"),
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
    // System VMs listen nowhere
    assert_eq!(lab.ssh.addr("r-930-VM"), None);
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
    // The connection is still good
    assert_eq!(lab.ssh("kvm01", "echo ok").await.unwrap().stdout, "ok\n");

    // Another client key: refused
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    write_key(
        &other,
        &PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap(),
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
