//! The real lab: a CloudStack-like zone built from Linux namespaces, with real OpenSSH sshd,
//! dnsmasq, keepalived and Open vSwitch (userspace datapath). Used by the `lab` test suite
//! (`tests/lab/`) and the SSH micro-benchmark (`bench/ssh.sh`).
//!
//! ```text
//!  [ctl]  eth0 169.254.240.1/30 ── eth0 169.254.240.2/30  [hv1]  sshd :22 (controller_key)
//!                                   cloud0 169.254.0.1/17    (control, link-local)
//!                                   pub0   169.254.160.1/24  ("public" gateway)
//!                                   gst0                     (guest)
//!                                   OVS userspace: br0, br-int; spare veth bond2 for port tests
//!  [vr1|vr2]  sshd :3922 (id_rsa.cloud, RSA host key), root only, keys only
//!     eth0 169.254.3.11|12/17 -> cloud0    eth1 169.254.160.11|12/24 -> pub0 (DOWN unless eth1_up)
//!     eth2 169.254.170.11|12/24 -> gst0    keepalived (VRRP on eth2, tracks eth1), dnsmasq on eth2
//! ```
//!
//! As in a real zone, the routers are reachable only through the hypervisor (a `direct-tcpip`
//! channel to `<link-local IP>:3922`). Code under test runs in the `ctl` namespace
//! ([`NetLab::in_controller`]), whose only link leads to `hv1` and which has no default route:
//! no packet can leave the machine. The root namespace is never touched.
//!
//! Each node is its own network, mount, UTS and PID namespace (`tests/lab/node-init.sh` is its
//! PID 1, with private `/run`, `/root`, `/opt`, `/var/log` and `/etc` entries, and
//! `tests/lab/svc-shim` as `systemctl`/`service`). Killing a node's PID 1 kills all of it.
//!
//! A lab is torn down when its [`NetLab`] is dropped, which also happens when a test panics.
//! Each lab records its owner's PID under [`ROOT`]; [`NetLab::up`] first sweeps the labs of
//! owners that no longer run (a crashed or killed test run).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where labs keep their files (one directory per lab).
pub const ROOT: &str = "/tmp/remedy-netlab";
/// The controller's address, and the hypervisor's address as the controller sees it.
pub const CTL_IP: &str = "169.254.240.1";
pub const HV_IP: &str = "169.254.240.2";
/// The routers' public gateway (pub0 on the hypervisor node).
pub const PUBLIC_GW: &str = "169.254.160.1";
/// The routers and their control (link-local) addresses.
pub const ROUTERS: [(&str, &str); 2] = [("vr1", "169.254.3.11"), ("vr2", "169.254.3.12")];
/// The port system VMs listen on, as in CloudStack.
pub const SYSTEM_VM_PORT: u16 = 3922;

const NODES: [&str; 3] = ["hv1", "vr1", "vr2"];
const PROGRAMS: [&str; 9] = [
    "/usr/sbin/sshd",
    "/usr/bin/ssh-keygen",
    "/usr/sbin/dnsmasq",
    "/usr/sbin/keepalived",
    "/usr/sbin/ovs-vswitchd",
    "/usr/sbin/ovsdb-server",
    "/usr/bin/unshare",
    "/usr/bin/nsenter",
    "/usr/sbin/ip",
];

/// What to start besides sshd.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// dnsmasq and keepalived on the routers, Open vSwitch on the hypervisor.
    pub services: bool,
    /// The routers' public interface starts up (a healthy pair) instead of down (the
    /// vr-backup-loop symptom).
    pub eth1_up: bool,
}

/// Why a lab cannot be built on this machine, if it cannot.
pub fn missing() -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, sshd)".into());
    }
    let absent: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !absent.is_empty() {
        return Some(format!("missing {}", absent.join(", ")));
    }
    for target in ["/etc/keepalived", "/etc/openvswitch", "/etc/dnsmasq.conf"] {
        if !Path::new(target).exists() {
            return Some(format!("{target} is missing (the packages are incomplete)"));
        }
    }
    None
}

/// Whether the lab suite `suite` can run: says once, past the harness's capture, that it did
/// not and why; panics instead under `CI=true`, where the suite must run.
pub fn available(suite: &str) -> bool {
    match missing() {
        None => true,
        Some(why) => {
            cloudstack_sim::testing::skip(&format!("{suite} (the real lab)"), &why);
            false
        }
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The directory of the lab scripts (`tests/lab/`).
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab")
}

/// Runs a helper command; its failure is an error with its stderr.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip -n NS ARGS...`
fn ip(ns: &str, args: &str) -> Result<(), String> {
    run(Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args.split_whitespace()))
    .map(|_| ())
}

fn keygen(path: &Path, kind: &str, comment: &str) -> Result<(), String> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd).map(|_| ())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Defines a service for a node's `svc-shim`: its start script and its pid file.
fn service(node_dir: &Path, name: &str, start: &str, pidfile: &str) -> Result<(), String> {
    let svc = node_dir.join("run/svc");
    write(&svc.join(format!("{name}.start")), start, 0o755)?;
    write(
        &svc.join(format!("{name}.pidfile")),
        &format!("{pidfile}\n"),
        0o644,
    )
}

/// The start time of a process (field 22 of `/proc/PID/stat`), to tell a PID reused.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// The network namespace a process is in, as `net:[INODE]`.
fn netns_of(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

fn netns_inode(ns: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(format!("/run/netns/{ns}"))
        .ok()
        .map(|m| format!("net:[{}]", m.ino()))
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Whether a process is gone (a zombie counts as gone).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Whether something listens on TCP `port` in the network namespace of process `pid`.
fn listening(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|f| {
        fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            })
    })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One lab. Dropping it tears it down.
pub struct NetLab {
    name: String,
    dir: PathBuf,
    /// Per node: the `unshare` child and the host PID of the node's PID 1.
    nodes: BTreeMap<String, (Child, u32)>,
    torn_down: bool,
}

impl std::fmt::Debug for NetLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetLab").field("name", &self.name).finish()
    }
}

impl NetLab {
    /// Builds a lab: namespaces, links, keys, sshd on every node, and the services when asked.
    /// On failure, whatever was built is torn down.
    pub fn up(opts: Options) -> Result<NetLab, String> {
        sweep();
        let name = format!(
            "rl{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // The directory appears with its owner file already in it (made under a dot-name,
        // then renamed), so a sweep running meanwhile in another process never sees a lab
        // without an owner.
        let dir = Path::new(ROOT).join(&name);
        let staging = Path::new(ROOT).join(format!(".{name}.new"));
        let me = std::process::id();
        write(
            &staging.join("owner"),
            &format!("{me} {}\n", start_time(me).unwrap_or_default()),
            0o644,
        )?;
        fs::rename(&staging, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut lab = NetLab {
            name,
            dir,
            nodes: BTreeMap::new(),
            torn_down: false,
        };
        match lab.build(opts) {
            Ok(()) => Ok(lab),
            Err(e) => {
                let log = lab.logs();
                lab.down();
                Err(format!("{e}\n{log}"))
            }
        }
    }

    /// The lab's name (its namespaces are `NAME-ctl`, `NAME-hv1`, `NAME-vr1`, `NAME-vr2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's directory: keys, known_hosts, per-node files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The network namespace of a node (`ctl`, `hv1`, `vr1`, `vr2`).
    pub fn netns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// The controller's key (authorized on hv1).
    pub fn controller_key(&self) -> PathBuf {
        self.dir.join("keys/controller_key")
    }

    /// The hypervisor's `id_rsa.cloud` (authorized on the routers), a copy on the controller.
    pub fn cloud_key(&self) -> PathBuf {
        self.dir.join("keys/id_rsa.cloud")
    }

    /// A known_hosts file trusting every node's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// A node's host public key file.
    pub fn host_key_pub(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("ssh_host_key.pub")
    }

    /// A node's sshd log.
    pub fn sshd_log(&self, node: &str) -> String {
        fs::read_to_string(self.dir.join(node).join("log/sshd.log")).unwrap_or_default()
    }

    /// An inventory of the lab, as the controller sees it: `hv1` in `hypervisors`, the
    /// routers in `routers`, reached through hv1.
    pub fn inventory(&self) -> String {
        let mut routers = String::new();
        for (vr, ll) in ROUTERS {
            // `cs` as the CloudStack inventory source gives it: the Public NIC's gateway.
            routers.push_str(&format!(
                "        {vr}: {{ ansible_host: {ll}, cs: {{ name: {vr}, nic: [{{ traffictype: Public, gateway: {PUBLIC_GW} }}] }} }}\n"
            ));
        }
        format!(
            "all:\n  vars:\n    ansible_user: root\n  children:\n    hypervisors:\n      hosts:\n        \
             hv1: {{ ansible_host: {HV_IP}, ansible_ssh_private_key_file: {ctl} }}\n    \
             routers:\n      vars:\n        ansible_port: {SYSTEM_VM_PORT}\n        \
             ansible_ssh_private_key_file: {cloud}\n        remedy_jump: hv1\n      hosts:\n{routers}",
            ctl = self.controller_key().display(),
            cloud = self.cloud_key().display(),
        )
    }

    /// Runs `f` on a thread inside the controller's network namespace and returns its result
    /// (a panic in `f` is the caller's panic). Every socket `f` opens is in that namespace, so
    /// async code must run on a current-thread runtime built inside `f` ([`Self::block_on`]).
    pub fn in_controller<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = fs::File::open(format!("/run/netns/{}", self.netns("ctl")))
            .expect("open the controller's namespace");
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the controller's namespace");
                f()
            });
            match worker.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs a future to completion inside the controller's namespace, on a current-thread
    /// runtime (so no worker thread can open a socket elsewhere).
    pub fn block_on<F: std::future::Future>(&self, make: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        self.in_controller(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(make())
        })
    }

    /// Runs a shell script inside a node, as root (not over SSH: for setting up and checking).
    pub fn sh(&self, node: &str, script: &str) -> Output {
        let pid = self.nodes.get(node).map(|(_, p)| *p).expect("known node");
        Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-m",
                "-u",
                "-n",
                "-p",
                "--",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Like [`Self::sh`], but the script must succeed; returns its stdout.
    pub fn sh_ok(&self, node: &str, script: &str) -> String {
        let out = self.sh(node, script);
        assert!(
            out.status.success(),
            "{node}: `{script}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills every sshd process of a node (the listener and every session): each connection
    /// to it drops, and new ones are refused.
    pub fn kill_sshd(&self, node: &str) {
        self.sh_ok(node, "pkill -KILL -x sshd; true");
    }

    /// Starts a node's sshd again.
    pub fn start_sshd(&self, node: &str) {
        let conf = self.dir.join(node).join("sshd_config");
        self.sh_ok(
            node,
            &format!("/usr/sbin/sshd -f {} -E /var/log/sshd.log", conf.display()),
        );
        let pid = self.nodes.get(node).map(|(_, p)| *p).expect("known node");
        let port = if node == "hv1" { 22 } else { SYSTEM_VM_PORT };
        wait_until("sshd to listen again", Duration::from_secs(20), || {
            listening(pid, port)
        })
        .expect("sshd restarted");
    }

    /// Replaces a node's host key (as re-creating a system VM does) and restarts its sshd.
    pub fn new_host_key(&self, node: &str) -> Result<(), String> {
        self.kill_sshd(node);
        let key = self.dir.join(node).join("ssh_host_key");
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(pub_of(&key));
        keygen(&key, host_key_kind(node), node)?;
        self.start_sshd(node);
        Ok(())
    }

    fn build(&mut self, opts: Options) -> Result<(), String> {
        self.network(opts)?;
        self.files()?;
        for node in NODES {
            self.start_node(node)?;
        }
        if opts.services {
            self.services(opts)?;
        }
        Ok(())
    }

    fn network(&self, opts: Options) -> Result<(), String> {
        let ctl = self.netns("ctl");
        let hv = self.netns("hv1");
        for n in ["ctl", "hv1", "vr1", "vr2"] {
            run(Command::new("ip").args(["netns", "add", &self.netns(n)]))?;
            ip(&self.netns(n), "link set lo up")?;
        }
        ip(
            &ctl,
            &format!("link add eth0 type veth peer name eth0 netns {hv}"),
        )?;
        ip(&ctl, &format!("addr add {CTL_IP}/30 dev eth0"))?;
        ip(&ctl, "link set eth0 up")?;
        ip(&hv, &format!("addr add {HV_IP}/30 dev eth0"))?;
        ip(&hv, "link set eth0 up")?;
        for bridge in ["cloud0", "pub0", "gst0"] {
            ip(&hv, &format!("link add {bridge} type bridge"))?;
            ip(&hv, &format!("link set {bridge} up"))?;
        }
        ip(&hv, "addr add 169.254.0.1/17 dev cloud0")?;
        ip(&hv, &format!("addr add {PUBLIC_GW}/24 dev pub0"))?;
        ip(&hv, "link add bond2 type veth peer name bond2p")?;
        ip(&hv, "link set bond2 up")?;
        ip(&hv, "link set bond2p up")?;
        for (k, (vr, ll)) in ROUTERS.iter().enumerate() {
            let ns = self.netns(vr);
            let last = 11 + k;
            for (i, bridge) in ["cloud0", "pub0", "gst0"].iter().enumerate() {
                ip(
                    &hv,
                    &format!("link add {vr}-eth{i} type veth peer name eth{i} netns {ns}"),
                )?;
                ip(&hv, &format!("link set {vr}-eth{i} master {bridge} up"))?;
            }
            ip(&ns, &format!("addr add {ll}/17 dev eth0"))?;
            ip(&ns, &format!("addr add 169.254.160.{last}/24 dev eth1"))?;
            ip(&ns, &format!("addr add 169.254.170.{last}/24 dev eth2"))?;
            ip(&ns, "link set eth0 up")?;
            ip(&ns, "link set eth2 up")?;
            if opts.eth1_up {
                ip(&ns, "link set eth1 up")?;
            }
        }
        Ok(())
    }

    fn files(&self) -> Result<(), String> {
        let keys = self.dir.join("keys");
        fs::create_dir_all(&keys).map_err(|e| e.to_string())?;
        keygen(&self.controller_key(), "ed25519", "controller")?;
        keygen(&self.cloud_key(), "rsa", "cloud")?;
        let read = |p: PathBuf| fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
        let mut known = String::new();
        for node in NODES {
            let d = self.dir.join(node);
            for sub in ["root/.ssh", "run/svc", "opt/cloud/bin", "log", "etc"] {
                fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
            }
            fs::set_permissions(d.join("root"), fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
            fs::set_permissions(d.join("root/.ssh"), fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
            keygen(&d.join("ssh_host_key"), host_key_kind(node), node)?;
            let (port, authorized) = if node == "hv1" {
                (22, self.controller_key())
            } else {
                (SYSTEM_VM_PORT, self.cloud_key())
            };
            write(
                &d.join("root/.ssh/authorized_keys"),
                &read(pub_of(&authorized))?,
                0o600,
            )?;
            write(
                &d.join("sshd_config"),
                &format!(
                    "Port {port}\nListenAddress 0.0.0.0\nHostKey {key}\nPidFile /run/sshd.pid\n\
                     AuthorizedKeysFile .ssh/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes yes\nUseDNS no\n\
                     PrintMotd no\nAllowTcpForwarding yes\nMaxStartups 100:30:200\n\
                     LogLevel VERBOSE\n",
                    key = d.join("ssh_host_key").display()
                ),
                0o644,
            )?;
            let hostkey = read(d.join("ssh_host_key.pub"))?;
            let mut words = hostkey.split_whitespace();
            let (kind, body) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let addr = match node {
                "hv1" => HV_IP.to_string(),
                vr => format!("[{}]:{SYSTEM_VM_PORT}", router_ip(vr)),
            };
            known.push_str(&format!("{addr} {kind} {body}\n"));
            write(&d.join("etc/hosts"), &hosts_file(node), 0o644)?;
        }
        write(&self.known_hosts(), &known, 0o644)?;
        // The hypervisor holds id_rsa.cloud and knows its routers, as a real KVM host does.
        let hv = self.dir.join("hv1");
        write(
            &hv.join("root/.ssh/id_rsa.cloud"),
            &read(self.cloud_key())?,
            0o600,
        )?;
        write(&hv.join("root/.ssh/known_hosts"), &known, 0o644)?;
        fs::create_dir_all(hv.join("etc/openvswitch")).map_err(|e| e.to_string())?;
        fs::create_dir_all(hv.join("log/openvswitch")).map_err(|e| e.to_string())?;
        service(
            &hv,
            "openvswitch-switch",
            OVS_START,
            "/run/openvswitch/ovs-vswitchd.pid",
        )?;
        write(&hv.join("run/svc/openvswitch-switch.stop"), OVS_STOP, 0o755)?;
        for (k, (vr, _)) in ROUTERS.iter().enumerate() {
            let d = self.dir.join(vr);
            let priority = 100 - 10 * k;
            let rt = fs::read_to_string("/etc/iproute2/rt_tables").unwrap_or_default();
            write(
                &d.join("etc/iproute2/rt_tables"),
                &format!("{rt}100 Table_eth1\n101 Table_eth2\n"),
                0o644,
            )?;
            write(&d.join("etc/dnsmasq.conf"), DNSMASQ_CONF, 0o644)?;
            // CloudStack's DHCP hosts file (CsDhcp.py writes it to /etc/dhcphosts.txt; the
            // lab keeps it in the node's private /run): one guest.
            write(
                &d.join("run/dnsmasq/dhcphosts.txt"),
                "02:00:00:00:00:6e,169.254.170.110,guest1,infinite\n",
                0o644,
            )?;
            write(
                &d.join("etc/keepalived/keepalived.conf"),
                &KEEPALIVED_CONF
                    .replace("@NAME@", &format!("r-{vr}-VM"))
                    .replace("@PRIORITY@", &priority.to_string()),
                0o644,
            )?;
            write(&d.join("opt/cloud/bin/notify.sh"), NOTIFY_SH, 0o755)?;
            write(
                &d.join("opt/cloud/bin/checkrouter.sh"),
                CHECKROUTER_SH,
                0o755,
            )?;
            service(&d, "dnsmasq", DNSMASQ_START, "/run/dnsmasq/dnsmasq.pid")?;
            service(&d, "keepalived", KEEPALIVED_START, "/run/keepalived.pid")?;
        }
        Ok(())
    }

    fn start_node(&mut self, node: &str) -> Result<(), String> {
        let d = self.dir.join(node);
        let log = fs::File::create(d.join("init.log")).map_err(|e| e.to_string())?;
        let hostname = if node == "hv1" {
            "hv1".to_string()
        } else {
            format!("r-{node}-VM")
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns(node)])
            .args([
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--uts",
            ])
            .arg(scripts().join("node-init.sh"))
            .arg(&d)
            .arg(&hostname)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start node {node}: {e}"))?;
        let unshare = child.id();
        let ready = d.join("run/node.ready");
        let started = wait_until(&format!("node {node}"), Duration::from_secs(20), || {
            ready.exists() || matches!(child.try_wait(), Ok(Some(_)))
        });
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "node {node} exited ({status}): {}",
                fs::read_to_string(d.join("init.log")).unwrap_or_default()
            ));
        }
        let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        let init: u32 = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("node {node}: no PID 1 under unshare {unshare}"))?;
        write(&d.join("init.pid"), &format!("{init}\n"), 0o644)?;
        self.nodes.insert(node.to_string(), (child, init));
        started?;
        // sshd forks into the background before it binds: wait for its listening socket.
        let port = if node == "hv1" { 22 } else { SYSTEM_VM_PORT };
        wait_until(
            &format!("sshd on {node}:{port}"),
            Duration::from_secs(20),
            || listening(init, port),
        )
    }

    fn services(&self, opts: Options) -> Result<(), String> {
        let check = |node: &str, script: &str| -> Result<(), String> {
            let out = self.sh(node, script);
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{node}: `{script}`: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        check(
            "hv1",
            "systemctl start openvswitch-switch && \
             ovs-vsctl add-br br0 -- set bridge br0 datapath_type=netdev && \
             ovs-vsctl add-br br-int -- set bridge br-int datapath_type=netdev",
        )?;
        for (vr, _) in ROUTERS {
            check(vr, "systemctl start dnsmasq && systemctl start keepalived")?;
        }
        // VRRP settles in a few seconds: FAULT while eth1 is down, MASTER/BACKUP when up.
        let want = if opts.eth1_up { "MASTER" } else { "FAULT" };
        let state = self.dir.join("vr1/run/keepalived.state");
        wait_until("keepalived's first state", Duration::from_secs(30), || {
            fs::read_to_string(&state).is_ok_and(|s| s.trim() == want)
        })
    }

    /// The last lines of every node's logs, for a failed start-up.
    fn logs(&self) -> String {
        let mut text = String::new();
        for node in NODES {
            for f in ["init.log", "log/sshd.log", "log/keepalived.log"] {
                if let Ok(s) = fs::read_to_string(self.dir.join(node).join(f)) {
                    let tail: Vec<&str> = s.lines().rev().take(10).collect();
                    text.push_str(&format!("--- {node}/{f}\n"));
                    for l in tail.into_iter().rev() {
                        text.push_str(l);
                        text.push('\n');
                    }
                }
            }
        }
        text
    }

    /// Tears the lab down: every node's processes, the namespaces, the files.
    pub fn down(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for (node, (child, init)) in std::mem::take(&mut self.nodes) {
            let mut child = child;
            if netns_of(init) == netns_inode(&self.netns(&node)) {
                kill(init, "-KILL");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        teardown(&self.name, &self.dir);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.down();
    }
}

/// Removes what is left of a lab: processes still in its namespaces (those the lab or its
/// tests started there), the namespaces, its directory.
fn teardown(name: &str, dir: &Path) {
    for node in ["ctl", "hv1", "vr1", "vr2"] {
        let ns = format!("{name}-{node}");
        if !Path::new("/run/netns").join(&ns).exists() {
            continue;
        }
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            for &pid in &pids {
                kill(pid, "-KILL");
            }
            let _ = wait_until("the lab's processes to end", Duration::from_secs(5), || {
                pids.iter().all(|&p| gone(p))
            });
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
    }
    let _ = fs::remove_dir_all(dir);
}

/// Tears down the labs whose owner process no longer runs.
pub fn sweep() {
    let Ok(entries) = fs::read_dir(ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // a lab being made, or a lock
        }
        let Ok(owner) = fs::read_to_string(dir.join("owner")) else {
            // Every lab directory is created with its owner file: this is not a lab of ours.
            continue;
        };
        let mut words = owner.split_whitespace();
        let pid: Option<u32> = words.next().and_then(|p| p.parse().ok());
        let started = words.next().map(str::to_string);
        let alive = pid.is_some_and(|p| start_time(p).is_some() && start_time(p) == started);
        if alive {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        eprintln!("netlab: removing lab {name} left by a run that ended (pid {pid:?})");
        teardown(&name, &dir);
    }
}

/// The public half of a key file: `PATH.pub`.
fn pub_of(key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", key.display()))
}

fn host_key_kind(node: &str) -> &'static str {
    // System VM templates ship RSA host keys; the hypervisor gets a modern one.
    if node == "hv1" {
        "ed25519"
    } else {
        "rsa"
    }
}

fn router_ip(vr: &str) -> &'static str {
    ROUTERS
        .iter()
        .find(|(n, _)| *n == vr)
        .map(|(_, ip)| *ip)
        .unwrap_or("0.0.0.0")
}

fn hosts_file(node: &str) -> String {
    let mut text = String::from("127.0.0.1 localhost\n");
    for (vr, ll) in ROUTERS {
        if node == "hv1" || node == vr {
            text.push_str(&format!("{ll} r-{vr}-VM\n"));
        }
    }
    text
}

const OVS_START: &str = "#!/bin/sh
set -e
mkdir -p /run/openvswitch /var/log/openvswitch
[ -f /etc/openvswitch/conf.db ] || ovsdb-tool create /etc/openvswitch/conf.db /usr/share/openvswitch/vswitch.ovsschema
ovsdb-server /etc/openvswitch/conf.db --remote=punix:/run/openvswitch/db.sock \\
  --remote=db:Open_vSwitch,Open_vSwitch,manager_options -vconsole:off --pidfile --detach --log-file
ovs-vsctl --no-wait init
ovs-vswitchd -vconsole:off --pidfile --detach --log-file
";

const OVS_STOP: &str = "#!/bin/sh
ovs-appctl -t ovs-vswitchd exit 2>/dev/null
ovs-appctl -t ovsdb-server exit 2>/dev/null
true
";

const DNSMASQ_CONF: &str = "# lab router dnsmasq: DNS and DHCP on the guest network
interface=eth2
bind-interfaces
no-resolv
port=53
dhcp-range=169.254.170.100,169.254.170.150,255.255.255.0,1h
dhcp-leasefile=/run/dnsmasq/dnsmasq.leases
dhcp-hostsfile=/run/dnsmasq/dhcphosts.txt
log-facility=/var/log/dnsmasq.log
address=/router.lab/169.254.170.1
";

const DNSMASQ_START: &str = "#!/bin/sh
exec /usr/sbin/dnsmasq -C /etc/dnsmasq.conf -x /run/dnsmasq/dnsmasq.pid
";

const KEEPALIVED_CONF: &str = "global_defs {
   router_id @NAME@
   script_user root
   enable_script_security
   vrrp_garp_master_delay 1
}
vrrp_instance inside_network {
    state BACKUP
    interface eth2
    virtual_router_id 51
    priority @PRIORITY@
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass labpass1
    }
    virtual_ipaddress {
        169.254.170.1/24 dev eth2
    }
    track_interface {
        eth1
    }
    notify /opt/cloud/bin/notify.sh
}
";

const KEEPALIVED_START: &str = "#!/bin/sh
# keepalived in the foreground (-n), in the background of this script: there is no syslog
/usr/sbin/keepalived -n -l -D -f /etc/keepalived/keepalived.conf -p /run/keepalived.pid \\
  -r /run/keepalived_vrrp.pid -c /run/keepalived_checkers.pid >>/var/log/keepalived.log 2>&1 </dev/null &
";

const NOTIFY_SH: &str = "#!/bin/sh
# keepalived notify: $1=INSTANCE|GROUP $2=name $3=MASTER|BACKUP|FAULT|STOP $4=priority
echo \"$3\" > /run/keepalived.state
echo \"$(date '+%F %T') $*\" >> /var/log/keepalived-notify.log
";

const CHECKROUTER_SH: &str = "#!/bin/sh
# as CloudStack's checkrouter.sh: the VRRP state keepalived last reported
if ! systemctl is-active keepalived >/dev/null 2>&1; then echo \"Status: UNKNOWN\"; exit 0; fi
echo \"Status: $(cat /run/keepalived.state 2>/dev/null || echo UNKNOWN)\"
";
