//! The SSH fault rules (`ssh` in `/sim/faults`), set over HTTP and seen by a real russh client
//! on the simulated SSH hosts: `fail`, `drop_before`, `drop_after` and `hang`, on one host or
//! any, counting down; `SshSim::fail_commands` on top of them; rules from a scenario file.
//!
//! Routers are reached as in a real zone, through a `direct-tcpip` channel of their
//! hypervisor's connection; the client pins every host key the simulator reports.

use std::time::{Duration, Instant};

use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};
use cloudstack_sim::ssh::{SshSim, SYSTEM_VM_PORT};
use russh::client::{self, Config, Handle};
use russh::keys::{
    Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, Sig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

// --- the zone, and its admin endpoints over HTTP --------------------------------------------

struct Lab {
    sim: Sim,
    ssh: SshSim,
    key: PrivateKey,
}

async fn lab_with(scenario: Scenario) -> Lab {
    let sim = Sim::start(SimConfig {
        scenario,
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
    Lab { sim, ssh, key }
}

async fn lab() -> Lab {
    lab_with(Scenario::builtin("healthy").unwrap()).await
}

/// One admin request (`/sim/...`); the status and the JSON body.
async fn admin(lab: &Lab, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(lab.sim.addr()).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        lab.sim.addr(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(T, stream.read_to_string(&mut raw))
        .await
        .expect("the simulator answers")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete reply");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

/// `PATCH /sim/faults` with `ssh` rules; must be accepted.
async fn set_rules(lab: &Lab, rules: Value) {
    let (status, body) = admin(
        lab,
        "PATCH",
        "/sim/faults",
        &json!({ "ssh": rules }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// The `ssh` rules `GET /sim/faults` shows.
async fn rules(lab: &Lab) -> Value {
    let (status, body) = admin(lab, "GET", "/sim/faults", "").await;
    assert_eq!(status, 200);
    body["ssh"].clone()
}

/// The routers of the zone: (name, hypervisor name, link-local address), by name.
fn routers(lab: &Lab) -> Vec<(String, String, String)> {
    lab.sim.with_zone(|z| {
        let w = z.world();
        w.vms
            .iter()
            .filter(|v| v.live() && v.vpcid().is_some())
            .map(|v| {
                let host = w.hosts.iter().find(|h| h.id == v.hostid).unwrap();
                (v.name.clone(), host.name.clone(), v.linklocalip.clone())
            })
            .collect()
    })
}

fn active(lab: &Lab, machine: &str, service: &str) -> bool {
    lab.sim
        .with_zone(|z| z.guest(machine).unwrap().active(service))
}

// --- a test-only SSH client -----------------------------------------------------------------

/// Accepts exactly the host key the simulator gave the machine.
struct Pinned(PublicKey);

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(matches!(key, PublicKeyOrCertificate::PublicKey { key, .. }
            if key.key_data() == self.0.key_data()))
    }
}

/// A session to one machine; for a router, with the hypervisor session carrying it.
struct Conn {
    handle: Handle<Pinned>,
    jump: Option<Handle<Pinned>>,
}

async fn login(lab: &Lab, handle: &mut Handle<Pinned>) {
    let auth = handle
        .authenticate_publickey(
            "root",
            PrivateKeyWithHashAlg::new(std::sync::Arc::new(lab.key.clone()), None),
        )
        .await
        .unwrap();
    assert!(auth.success(), "root with the lab key is let in");
}

async fn connect_host(lab: &Lab, machine: &str) -> Handle<Pinned> {
    let addr = lab.ssh.addr(machine).expect("a listening host");
    let mut handle = client::connect(
        std::sync::Arc::new(Config::default()),
        addr,
        Pinned(lab.ssh.host_key(machine)),
    )
    .await
    .expect("connects");
    login(lab, &mut handle).await;
    handle
}

/// A session to `machine`: a hypervisor or the management server directly, a router through
/// its hypervisor.
async fn connect(lab: &Lab, machine: &str) -> Conn {
    if lab.ssh.addr(machine).is_some() {
        return Conn {
            handle: connect_host(lab, machine).await,
            jump: None,
        };
    }
    let (_, hv, ll) = routers(lab)
        .into_iter()
        .find(|(name, _, _)| name == machine)
        .expect("a router of the zone");
    let jump = connect_host(lab, &hv).await;
    let channel = jump
        .channel_open_direct_tcpip(ll.as_str(), SYSTEM_VM_PORT, "127.0.0.1", 0)
        .await
        .expect("the hypervisor opens a tunnel to its router");
    let mut handle = client::connect_stream(
        std::sync::Arc::new(Config::default()),
        channel.into_stream(),
        Pinned(lab.ssh.host_key(machine)),
    )
    .await
    .expect("connects through the tunnel");
    login(lab, &mut handle).await;
    Conn {
        handle,
        jump: Some(jump),
    }
}

/// How a command ended, as the client saw it.
#[derive(Debug, PartialEq)]
struct Ran {
    stdout: String,
    stderr: String,
    /// The exit status; `None` with no exit status.
    exit: Option<u32>,
    /// The signal the command died of (`TERM`, ...).
    signal: Option<String>,
}

impl Ran {
    /// The channel ended with neither an exit status nor a signal: the connection was lost.
    fn lost(&self) -> bool {
        self.exit.is_none() && self.signal.is_none()
    }
}

fn ran(stdout: &str, stderr: &str, exit: u32) -> Ran {
    Ran {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit: Some(exit),
        signal: None,
    }
}

async fn collect(channel: &mut russh::Channel<client::Msg>) -> Ran {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (mut exit, mut signal) = (None, None);
    let wait = async {
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    signal = Some(format!("{signal_name:?}"))
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(T, wait)
        .await
        .expect("the channel ends within 10 s");
    Ran {
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
        exit,
        signal,
    }
}

async fn exec(conn: &Conn, line: &str) -> Ran {
    let mut channel = conn.handle.channel_open_session().await.unwrap();
    channel.exec(true, line).await.unwrap();
    collect(&mut channel).await
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < T, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- the tests ------------------------------------------------------------------------------

#[tokio::test]
async fn a_fail_rule_fails_the_command_on_its_host_only_and_once() {
    let lab = lab().await;
    let rs = routers(&lab);
    let (a, b) = (rs[0].0.clone(), rs[1].0.clone());
    assert!(active(&lab, &a, "keepalived") && active(&lab, &b, "keepalived"));
    set_rules(
        &lab,
        json!([{"command": "systemctl stop keepalived", "host": a, "effect": "fail",
                "exit": 5, "stderr": "Failed to stop keepalived.service: injected"}]),
    )
    .await;

    let on_b = connect(&lab, &b).await;
    assert_eq!(
        exec(&on_b, "systemctl stop keepalived").await,
        ran("", "", 0)
    );
    assert!(!active(&lab, &b, "keepalived"), "another host: it ran");
    assert_eq!(
        rules(&lab).await.as_array().unwrap().len(),
        1,
        "not used up"
    );

    let on_a = connect(&lab, &a).await;
    assert_eq!(
        exec(&on_a, "systemctl stop keepalived && echo stopped").await,
        ran("", "Failed to stop keepalived.service: injected\n", 5)
    );
    assert!(active(&lab, &a, "keepalived"), "nothing done");
    assert_eq!(rules(&lab).await, json!([]), "spent, so gone");
    assert_eq!(
        exec(&on_a, "systemctl stop keepalived && echo stopped").await,
        ran("stopped\n", "", 0)
    );
    assert!(!active(&lab, &a, "keepalived"));
}

#[tokio::test]
async fn fail_rules_apply_per_simple_command_and_count_down() {
    let lab = lab().await;
    set_rules(
        &lab,
        json!([{"command": "hostname", "host": "kvm01", "next": 3, "effect": "fail"},
               {"command": "true", "next": 0, "effect": "fail"}]),
    )
    .await;
    assert_eq!(
        rules(&lab).await,
        json!([{"command": "hostname", "host": "kvm01", "next": 3, "effect": "fail",
                "exit": 1, "stderr": "sim: injected failure"}]),
        "defaults shown, the rule with next 0 removed"
    );
    let kvm02 = connect(&lab, "kvm02").await;
    assert_eq!(exec(&kvm02, "hostname").await, ran("kvm02\n", "", 0));
    let kvm01 = connect(&lab, "kvm01").await;
    assert_eq!(
        exec(&kvm01, "hostname; hostname").await,
        ran("", "sim: injected failure\nsim: injected failure\n", 1),
        "each simple command is a firing"
    );
    assert_eq!(rules(&lab).await[0]["next"], 1);
    assert_eq!(
        exec(&kvm01, "false && hostname; hostname; hostname").await,
        ran("kvm01\n", "sim: injected failure\n", 0),
        "a skipped command uses nothing up"
    );
    assert_eq!(rules(&lab).await, json!([]));
    assert_eq!(exec(&kvm01, "hostname").await, ran("kvm01\n", "", 0));
}

#[tokio::test]
async fn drop_before_loses_the_connection_and_runs_nothing() {
    let lab = lab().await;
    let (router, hv, _) = routers(&lab).remove(0);
    set_rules(
        &lab,
        json!([{"command": "systemctl stop", "host": router, "effect": "drop_before"}]),
    )
    .await;
    assert!(active(&lab, &router, "keepalived"));
    let conn = connect(&lab, &router).await;
    let out = exec(&conn, "echo before; systemctl stop keepalived").await;
    assert!(out.lost(), "{out:?}");
    assert_eq!(out.stdout, "", "nothing of the line ran");
    assert!(active(&lab, &router, "keepalived"), "nothing done");
    assert_eq!(
        lab.ssh.commands(&router),
        vec!["echo before; systemctl stop keepalived"]
    );
    assert_eq!(rules(&lab).await, json!([]));
    assert!(
        conn.handle.channel_open_session().await.is_err(),
        "the router's session is gone"
    );
    // the hypervisor's own session, which carried the tunnel, is fine
    let jump = conn.jump.as_ref().unwrap();
    let mut channel = jump.channel_open_session().await.unwrap();
    channel.exec(true, "hostname").await.unwrap();
    assert_eq!(collect(&mut channel).await, ran(&format!("{hv}\n"), "", 0));
    // and a new session to the router works
    let again = connect(&lab, &router).await;
    assert_eq!(
        exec(&again, "systemctl stop keepalived").await,
        ran("", "", 0)
    );
    assert!(!active(&lab, &router, "keepalived"));
}

#[tokio::test]
async fn drop_after_runs_the_line_then_loses_the_connection() {
    let lab = lab().await;
    set_rules(
        &lab,
        json!([{"command": "ip link set eth0 down", "host": "kvm02", "effect": "drop_after"}]),
    )
    .await;
    let kvm02 = connect(&lab, "kvm02").await;
    let up = |lab: &Lab| {
        lab.sim
            .with_zone(|z| z.guest("kvm02").unwrap().link_up("eth0"))
    };
    assert!(up(&lab));
    let out = exec(&kvm02, "ip link set eth0 down; echo done").await;
    assert!(out.lost(), "{out:?}");
    assert!(!up(&lab), "the change was made");
    assert!(
        kvm02.handle.channel_open_session().await.is_err(),
        "the connection is gone"
    );
    let again = connect(&lab, "kvm02").await;
    assert_eq!(
        exec(&again, "ip link set eth0 up; echo done").await,
        ran("done\n", "", 0)
    );
    assert!(up(&lab));
}

#[tokio::test]
async fn a_hang_holds_the_line_then_runs_it() {
    let lab = lab().await;
    let (router, _, _) = routers(&lab).remove(0);
    set_rules(
        &lab,
        json!([{"command": "systemctl stop keepalived", "effect": "hang", "hang_ms": 1000}]),
    )
    .await;
    assert!(active(&lab, &router, "keepalived"));
    let conn = connect(&lab, &router).await;
    let started = Instant::now();
    assert_eq!(
        exec(&conn, "systemctl stop keepalived; echo ok").await,
        ran("ok\n", "", 0)
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(!active(&lab, &router, "keepalived"));
    let started = Instant::now();
    assert_eq!(
        exec(&conn, "systemctl start keepalived").await,
        ran("", "", 0)
    );
    assert!(started.elapsed() < Duration::from_millis(1000), "once only");
}

#[tokio::test]
async fn a_hung_line_still_runs_when_its_client_goes_away() {
    let lab = lab().await;
    let (router, _, _) = routers(&lab).remove(0);
    set_rules(
        &lab,
        json!([{"command": "systemctl stop keepalived", "host": router, "effect": "hang", "hang_ms": 1500}]),
    )
    .await;
    assert!(active(&lab, &router, "keepalived"));
    let conn = connect(&lab, &router).await;
    let channel = conn.handle.channel_open_session().await.unwrap();
    channel
        .exec(true, "systemctl stop keepalived")
        .await
        .unwrap();
    eventually("the line is running", || lab.ssh.running(&router) == 1).await;
    // the client dies: its connection to the hypervisor, carrying the router's, goes
    drop(channel);
    let jump = conn.jump.as_ref().unwrap();
    jump.disconnect(russh::Disconnect::ByApplication, "", "en")
        .await
        .unwrap();
    eventually("the router's session is gone", || conn.handle.is_closed()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(active(&lab, &router, "keepalived"), "still held");
    assert_eq!(lab.ssh.running(&router), 1);
    eventually("the held line ran", || !active(&lab, &router, "keepalived")).await;
    eventually("and ended", || lab.ssh.running(&router) == 0).await;
}

#[tokio::test]
async fn a_hung_line_whose_channel_is_closed_runs_and_the_connection_carries_on() {
    let lab = lab().await;
    set_rules(
        &lab,
        json!([{"command": "ip link set eth0 down", "effect": "hang", "hang_ms": 1000}]),
    )
    .await;
    let kvm01 = connect(&lab, "kvm01").await;
    let channel = kvm01.handle.channel_open_session().await.unwrap();
    channel
        .exec(true, "ip link set eth0 down; echo done")
        .await
        .unwrap();
    eventually("the line is running", || lab.ssh.running("kvm01") == 1).await;
    channel.close().await.unwrap();
    let down = || {
        !lab.sim
            .with_zone(|z| z.guest("kvm01").unwrap().link_up("eth0"))
    };
    eventually("the held line ran", down).await;
    eventually("and ended", || lab.ssh.running("kvm01") == 0).await;
    assert_eq!(exec(&kvm01, "hostname").await, ran("kvm01\n", "", 0));
}

#[tokio::test]
async fn a_signal_during_a_hang_kills_the_line_before_it_runs() {
    let lab = lab().await;
    set_rules(
        &lab,
        json!([{"command": "ip link set eth0 down", "effect": "hang", "hang_ms": 1500}]),
    )
    .await;
    let kvm01 = connect(&lab, "kvm01").await;
    let mut channel = kvm01.handle.channel_open_session().await.unwrap();
    let sent = Instant::now();
    channel.exec(true, "ip link set eth0 down").await.unwrap();
    eventually("the line is running", || lab.ssh.running("kvm01") == 1).await;
    channel.signal(Sig::TERM).await.unwrap();
    let out = collect(&mut channel).await;
    assert_eq!(out.signal.as_deref(), Some("TERM"), "{out:?}");
    assert_eq!(out.exit, None);
    // past the time the hold would have ended
    tokio::time::sleep(Duration::from_millis(1800).saturating_sub(sent.elapsed())).await;
    assert!(
        lab.sim
            .with_zone(|z| z.guest("kvm01").unwrap().link_up("eth0")),
        "killed before it ran"
    );
    assert_eq!(lab.ssh.running("kvm01"), 0);
}

#[tokio::test]
async fn fail_commands_replaces_the_rules_and_an_empty_list_clears_them() {
    let lab = lab().await;
    set_rules(&lab, json!([{"command": "", "effect": "drop_before"}])).await;
    lab.ssh.fail_commands(vec!["hostname".into()]);
    assert_eq!(
        rules(&lab).await,
        json!([{"command": "hostname", "next": 1, "effect": "fail", "exit": 1,
                "stderr": "sim: injected failure"}])
    );
    let kvm01 = connect(&lab, "kvm01").await;
    assert_eq!(
        exec(&kvm01, "hostname").await,
        ran("", "sim: injected failure\n", 1)
    );
    lab.ssh.fail_commands(vec!["hostname".into()]);
    lab.ssh.fail_commands(vec![]);
    assert_eq!(rules(&lab).await, json!([]));
    assert_eq!(exec(&kvm01, "hostname").await, ran("kvm01\n", "", 0));
}

#[tokio::test]
async fn rules_from_a_scenario_file_apply() {
    let mut scenario = Scenario::builtin("healthy").unwrap();
    scenario.faults = serde_yaml::from_str(
        "ssh:\n  - { command: hostname, host: mgmt1, effect: fail, exit: 7, stderr: nope }\n",
    )
    .unwrap();
    let lab = lab_with(scenario).await;
    let mgmt = connect(&lab, "mgmt1").await;
    assert_eq!(exec(&mgmt, "hostname").await, ran("", "nope\n", 7));
    assert_eq!(exec(&mgmt, "hostname").await, ran("mgmt1\n", "", 0));
}
