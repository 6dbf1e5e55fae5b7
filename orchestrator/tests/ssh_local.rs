//! The SSH transport against real OpenSSH servers on 127.0.0.1.
//!
//! Owns: starting private `sshd` instances (own config, host keys, authorized_keys and log in a
//! temporary directory, on a free port; killed by PID, with their own descendants only, when
//! the test ends) and the end-to-end tests of `remedy::transport::ssh`: authentication, host
//! key policies, jump hosts, exit codes and signals, output caps, timeouts, lost connections
//! and connection reuse.
//!
//! Needs `sshd` and root (sshd only switches users as root). Without them the suite prints one
//! `SKIPPED:` line past the harness's capture and its tests pass, except under `CI=true`, where
//! they fail (`cloudstack_sim::testing::skip`).

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remedy::inventory::{Host, Inventory};
use remedy::transport::ssh::{SshOptions, SshTransport};
use remedy::transport::{Access, Action, ActionResult, CmdOutput, Transport, TransportError};

const SSHD: &str = "/usr/sbin/sshd";
const CAP: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Whether these tests can run here; prints the skip line (or fails under CI) when not.
fn available() -> bool {
    let why = if !Path::new(SSHD).exists() {
        Some(format!(
            "{SSHD} is not installed (apt-get install openssh-server)"
        ))
    } else if !is_root() {
        Some("sshd must run as root for these tests".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            cloudstack_sim::testing::skip("ssh_local (real OpenSSH)", &why);
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

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run helper command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssh-keygen -t <kind>` without passphrase (or with one).
fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        "remedy-test",
        "-f",
    ])
    .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run_ok(&mut cmd);
}

fn pub_line(key: &Path) -> String {
    fs::read_to_string(pub_path(key))
        .unwrap()
        .trim()
        .to_string()
}

fn pub_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// `SHA256:...` as `ssh-keygen -lf` prints it.
fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_path(key))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every descendant of `pid`, children before grandchildren.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                queue.push(c);
            }
        }
    }
    out
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// One private sshd.
struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    extra_config: String,
}

impl Sshd {
    /// Starts an sshd with fresh host keys in `dir`, accepting the public keys in
    /// `authorized`.
    fn start(dir: &Path, authorized: &[&Path], extra_config: &str) -> Sshd {
        fs::create_dir_all(dir).unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        let keys: Vec<String> = authorized.iter().map(|k| pub_line(k)).collect();
        fs::write(dir.join("authorized_keys"), keys.join("\n") + "\n").unwrap();
        let mut sshd = Sshd {
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
            extra_config: extra_config.to_string(),
        };
        sshd.new_host_keys();
        sshd.spawn();
        sshd
    }

    fn host_key(&self, kind: &str) -> PathBuf {
        self.dir.join(format!("ssh_host_{kind}_key"))
    }

    fn new_host_keys(&self) {
        keygen(&self.host_key("ed25519"), "ed25519", "");
        keygen(&self.host_key("rsa"), "rsa", "");
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let d = self.dir.display();
        // Commands get a HOME without rc files: this machine's root ~/.bashrc (pyenv init)
        // would run for every command, slowly, and a command killed mid-way (the timeout and
        // drop tests) can leave pyenv's rehash lock behind, which stalls every later login
        // shell for a minute.
        fs::create_dir_all(self.dir.join("home")).unwrap();
        let config = format!(
            "HostKey {d}/ssh_host_ed25519_key\n\
             HostKey {d}/ssh_host_rsa_key\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\n\
             ListenAddress 127.0.0.1\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             AllowTcpForwarding yes\n\
             LogLevel VERBOSE\n\
             MaxStartups 100:30:200\n\
             SetEnv HOME={d}/home\n\
             {}\n",
            self.extra_config
        );
        fs::write(self.dir.join("sshd_config"), config).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))
            .unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sshd exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("sshd running").id()
    }

    /// Kills this sshd and everything it started (only those processes).
    fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            let victims = descendants(child.id());
            kill(child.id());
            for pid in victims {
                kill(pid);
            }
            let _ = child.wait();
        }
    }

    /// Kills the per-connection processes, leaving the listener: every open connection drops.
    fn drop_connections(&self) {
        for pid in descendants(self.pid()) {
            kill(pid);
        }
    }

    /// Stops, replaces the host keys and starts again on the same port.
    fn restart_with_new_host_keys(&mut self) {
        self.kill_all();
        self.new_host_keys();
        self.spawn();
    }

    /// Processes under this sshd whose command line contains `needle`.
    fn processes_running(&self, needle: &str) -> Vec<String> {
        descendants(self.pid())
            .into_iter()
            .map(cmdline)
            .filter(|c| c.contains(needle))
            .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A temporary directory with a client key pair.
struct Lab {
    tmp: tempfile::TempDir,
    key: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("id_client");
        keygen(&key, "ed25519", "");
        Lab { tmp, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    fn sshd(&self, name: &str) -> Sshd {
        Sshd::start(&self.path(name), &[&self.key], "")
    }

    /// `known_hosts` line for an sshd's host key of `kind`.
    fn trust(&self, sshd: &Sshd, kind: &str) {
        let key = pub_line(&sshd.host_key(kind));
        let mut words = key.split_whitespace();
        let line = format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            words.next().unwrap(),
            words.next().unwrap()
        );
        let mut text = fs::read_to_string(self.known_hosts()).unwrap_or_default();
        text.push_str(&line);
        fs::write(self.known_hosts(), text).unwrap();
    }

    fn options(&self) -> SshOptions {
        SshOptions {
            connect_timeout: Duration::from_secs(10),
            known_hosts: self.known_hosts(),
            keepalive: Some(Duration::from_secs(5)),
            passphrase_env: None,
            use_agent: false,
            agent_socket: None,
            default_keys: Vec::new(),
            max_sessions: 10,
        }
    }

    fn transport(&self, inventory: &str) -> (Arc<Inventory>, SshTransport) {
        self.transport_with(inventory, self.options())
    }

    fn transport_with(&self, inventory: &str, opts: SshOptions) -> (Arc<Inventory>, SshTransport) {
        let inv = Arc::new(Inventory::from_str("test.yml", inventory).expect("inventory"));
        let t = SshTransport::new(inv.clone(), opts);
        (inv, t)
    }

    /// An inventory host entry for an sshd.
    fn host(&self, name: &str, sshd: &Sshd, extra: &str) -> String {
        format!(
            "    {name}:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      \
             ansible_user: root\n      ansible_ssh_private_key_file: {}\n{extra}",
            sshd.port,
            self.key.display()
        )
    }
}

fn inventory(hosts: &[String]) -> String {
    format!("all:\n  hosts:\n{}", hosts.concat())
}

fn host<'a>(inv: &'a Inventory, name: &str) -> &'a Host {
    inv.host(name).unwrap_or_else(|| panic!("no host {name}"))
}

async fn ssh(
    t: &SshTransport,
    inv: &Inventory,
    name: &str,
    cmd: &str,
    timeout: Duration,
) -> Result<CmdOutput, TransportError> {
    match t
        .run(
            host(inv, name),
            &Action::ssh(cmd),
            Access::ReadOnly,
            timeout,
        )
        .await?
    {
        ActionResult::Ssh(out) => Ok(out),
        other => panic!("unexpected result {other:?}"),
    }
}

const T: Duration = Duration::from_secs(20);

fn unreachable_reason(e: TransportError) -> String {
    match e {
        TransportError::Unreachable { reason, .. } => reason,
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_and_a_wrong_key_refused() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let wrong = lab.path("id_wrong");
    keygen(&wrong, "ed25519", "");
    let inv_text = inventory(&[
        lab.host("good", &sshd, ""),
        format!(
            "    bad:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      \
             ansible_ssh_private_key_file: {}\n",
            sshd.port,
            wrong.display()
        ),
    ]);
    let (inv, t) = lab.transport(&inv_text);

    let out = ssh(&t, &inv, "good", "id -un; echo hi", T).await.unwrap();
    assert_eq!(out.rc, Some(0));
    assert_eq!(out.stdout, "root\nhi\n");

    let reason = unreachable_reason(ssh(&t, &inv, "bad", "true", T).await.unwrap_err());
    assert!(
        reason.contains("authentication refused for user root"),
        "{reason}"
    );
    assert!(reason.contains(&wrong.display().to_string()), "{reason}");
    assert!(
        !reason.contains("PRIVATE KEY") && !reason.contains("AAAA"),
        "{reason}"
    );
    assert_eq!(t.connections_made("bad"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_and_encrypted_keys() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let rsa = lab.path("id_rsa_client");
    keygen(&rsa, "rsa", "");
    let enc = lab.path("id_enc");
    keygen(&enc, "ed25519", "open sesame");
    let sshd = Sshd::start(&lab.path("s"), &[&rsa, &enc], "");
    // A server that only takes ssh-rsa (SHA-1) signatures, like an old system VM.
    let old = Sshd::start(
        &lab.path("old"),
        &[&rsa],
        "PubkeyAcceptedAlgorithms ssh-rsa",
    );
    lab.trust(&sshd, "ed25519");
    lab.trust(&old, "ed25519");
    let entry = |name: &str, s: &Sshd, key: &Path| {
        format!(
            "    {name}:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n      \
             ansible_ssh_private_key_file: {}\n",
            s.port,
            key.display()
        )
    };
    let inv_text = inventory(&[
        entry("rsa", &sshd, &rsa),
        entry("old", &old, &rsa),
        entry("enc", &sshd, &enc),
    ]);
    let var = "REMEDY_SSH_TEST_PASSPHRASE_7f3a";
    let mut opts = lab.options();
    opts.passphrase_env = Some(var.to_string());

    let (inv, t) = lab.transport_with(&inv_text, opts.clone());
    assert_eq!(
        ssh(&t, &inv, "rsa", "echo ok", T).await.unwrap().stdout,
        "ok\n"
    );
    assert_eq!(
        ssh(&t, &inv, "old", "echo ok", T).await.unwrap().stdout,
        "ok\n"
    );
    assert!(old
        .log()
        .contains("Accepted publickey for root from 127.0.0.1"));

    // The passphrase variable is not set yet: a clear error naming the key and the variable.
    let reason = unreachable_reason(ssh(&t, &inv, "enc", "true", T).await.unwrap_err());
    assert!(reason.contains(&enc.display().to_string()), "{reason}");
    assert!(reason.contains(var), "{reason}");

    std::env::set_var(var, "open sesame");
    let (inv, t) = lab.transport_with(&inv_text, opts);
    assert_eq!(
        ssh(&t, &inv, "enc", "echo ok", T).await.unwrap().stdout,
        "ok\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_identities() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let sock = lab.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            kill(self.0);
        }
    }
    let _guard = KillOnDrop(agent.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    run_ok(
        Command::new("ssh-add")
            .arg(&lab.key)
            .env("SSH_AUTH_SOCK", &sock),
    );

    // No key file in the inventory: the agent's key is the way in.
    let inv_text = inventory(&[format!(
        "    a:\n      ansible_host: 127.0.0.1\n      ansible_port: {}\n",
        sshd.port
    )]);
    let mut opts = lab.options();
    opts.use_agent = true;
    opts.agent_socket = Some(sock.clone());
    let (inv, t) = lab.transport_with(&inv_text, opts.clone());
    assert_eq!(
        ssh(&t, &inv, "a", "echo ok", T).await.unwrap().stdout,
        "ok\n"
    );

    // An agent whose keys the server does not know: the refusal counts them.
    run_ok(
        Command::new("ssh-add")
            .arg("-D")
            .env("SSH_AUTH_SOCK", &sock),
    );
    let other = lab.path("id_other");
    keygen(&other, "ed25519", "");
    run_ok(
        Command::new("ssh-add")
            .arg(&other)
            .env("SSH_AUTH_SOCK", &sock),
    );
    let (inv, t) = lab.transport_with(&inv_text, opts);
    let reason = unreachable_reason(ssh(&t, &inv, "a", "true", T).await.unwrap_err());
    assert!(reason.contains("agent: 1 keys"), "{reason}");
    let _ = agent.kill();
    let _ = agent.wait();
}

// ---------------------------------------------------------------------------------------------
// Host keys
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn strict_refuses_unknown_and_changed_keys() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    let inv_text = inventory(&[lab.host("vr1", &sshd, "")]);
    let presented = fingerprint(&sshd.host_key("ed25519"));

    let (inv, t) = lab.transport(&inv_text);
    let reason = unreachable_reason(ssh(&t, &inv, "vr1", "true", T).await.unwrap_err());
    assert!(reason.contains("is not known"), "{reason}");
    assert!(reason.contains(&presented), "{reason}");
    assert!(
        !lab.known_hosts().exists(),
        "strict must not write known_hosts"
    );

    // known_hosts holds another ed25519 key for this host.
    let stale = lab.path("stale");
    keygen(&stale, "ed25519", "");
    let words: Vec<String> = pub_line(&stale)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    fs::write(
        lab.known_hosts(),
        format!("[127.0.0.1]:{} {} {}\n", sshd.port, words[0], words[1]),
    )
    .unwrap();
    let (inv, t) = lab.transport(&inv_text);
    let reason = unreachable_reason(ssh(&t, &inv, "vr1", "true", T).await.unwrap_err());
    assert!(
        reason.starts_with(&format!(
            "host key for vr1 (127.0.0.1:{}) changed",
            sshd.port
        )),
        "{reason}"
    );
    assert!(reason.contains(&fingerprint(&stale)), "{reason}");
    assert!(reason.contains(&presented), "{reason}");
    assert!(
        reason.contains(&format!("ssh-keygen -R '[127.0.0.1]:{}'", sshd.port)),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_accepts_a_host_known_by_its_rsa_key_only() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "rsa");
    let (inv, t) = lab.transport(&inventory(&[lab.host("hv", &sshd, "")]));
    let out = ssh(&t, &inv, "hv", "echo ok", T).await.unwrap();
    assert_eq!(out.stdout, "ok\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_new_records_then_refuses_a_changed_key() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let mut sshd = lab.sshd("s");
    let inv_text =
        inventory(&[lab.host("vr1", &sshd, "      remedy_host_key_policy: accept-new\n")]);
    let first = fingerprint(&sshd.host_key("ed25519"));

    let (inv, t) = lab.transport(&inv_text);
    ssh(&t, &inv, "vr1", "true", T).await.unwrap();
    let recorded = fs::read_to_string(lab.known_hosts()).unwrap();
    let words: Vec<String> = pub_line(&sshd.host_key("ed25519"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(
        recorded,
        format!("[127.0.0.1]:{} {} {}\n", sshd.port, words[0], words[1])
    );

    sshd.restart_with_new_host_keys();
    let second = fingerprint(&sshd.host_key("ed25519"));
    let (inv, t) = lab.transport(&inv_text);
    let reason = unreachable_reason(ssh(&t, &inv, "vr1", "true", T).await.unwrap_err());
    assert!(reason.contains("changed"), "{reason}");
    assert!(
        reason.contains(&first) && reason.contains(&second),
        "{reason}"
    );
    assert_eq!(fs::read_to_string(lab.known_hosts()).unwrap(), recorded);
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_fingerprint() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    let good = fingerprint(&sshd.host_key("ed25519"));
    let bad = fingerprint(&lab.key);
    let inv_text = inventory(&[
        lab.host(
            "ok",
            &sshd,
            &format!("      remedy_host_key_fingerprint: \"{good}\"\n"),
        ),
        lab.host(
            "nope",
            &sshd,
            &format!(
                "      remedy_host_key_policy: pinned\n      \
                 remedy_host_key_fingerprint: \"{bad}\"\n"
            ),
        ),
    ]);
    let (inv, t) = lab.transport(&inv_text);
    assert_eq!(
        ssh(&t, &inv, "ok", "echo ok", T).await.unwrap().stdout,
        "ok\n"
    );
    let reason = unreachable_reason(ssh(&t, &inv, "nope", "true", T).await.unwrap_err());
    assert!(reason.contains("nope (127.0.0.1:"), "{reason}");
    assert!(reason.contains(&good) && reason.contains(&bad), "{reason}");
    assert!(!lab.known_hosts().exists());
}

// ---------------------------------------------------------------------------------------------
// Jump hosts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn through_a_jump_host() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let hv = lab.sshd("hv");
    let vr = lab.sshd("vr");
    lab.trust(&hv, "ed25519");
    lab.trust(&vr, "ed25519");
    let behind = "      remedy_jump: hv1\n";
    let inv_text = inventory(&[
        lab.host("hv1", &hv, ""),
        lab.host("vr1", &vr, behind),
        lab.host("vr2", &vr, behind),
        lab.host("vr3", &vr, behind),
    ]);
    let (inv, t) = lab.transport(&inv_text);
    let t = Arc::new(t);

    let out = ssh(&t, &inv, "vr1", "echo out; echo err >&2; exit 3", T)
        .await
        .unwrap();
    assert_eq!(out.rc, Some(3));
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");

    // Several routers behind one hypervisor at once: one hypervisor connection.
    let mut tasks = tokio::task::JoinSet::new();
    for name in ["vr1", "vr2", "vr3", "vr2", "vr3", "hv1"] {
        let (t, inv) = (t.clone(), inv.clone());
        tasks.spawn(async move { ssh(&t, &inv, name, "echo ok", T).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap().stdout, "ok\n");
    }
    assert_eq!(t.connections_made("hv1"), 1);
    for vr in ["vr1", "vr2", "vr3"] {
        assert_eq!(t.connections_made(vr), 1, "{vr}");
    }
    // The router's sshd saw its clients come from the hypervisor's forwarding.
    assert!(hv.log().contains("direct-tcpip") || hv.log().contains("Accepted publickey"));
    assert_eq!(hv.log().matches("Accepted publickey").count(), 1);
    assert_eq!(vr.log().matches("Accepted publickey").count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxyjump_entries_and_tunnel_failures() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let hv = lab.sshd("hv");
    let vr = lab.sshd("vr");
    lab.trust(&hv, "ed25519");
    lab.trust(&vr, "ed25519");
    let closed = free_port();
    let spec = format!("root@127.0.0.1:{}", hv.port);
    let inv_text = inventory(&[
        // A ProxyJump entry naming no inventory host: the target's user and key are used.
        lab.host(
            "vr1",
            &vr,
            &format!("      ansible_ssh_common_args: \"-J {spec}\"\n"),
        ),
        format!(
            "    dead:\n      ansible_host: 127.0.0.1\n      ansible_port: {closed}\n      \
             ansible_ssh_private_key_file: {}\n      ansible_ssh_common_args: \"-J {spec}\"\n",
            lab.key.display()
        ),
    ]);
    let (inv, t) = lab.transport(&inv_text);
    let out = ssh(&t, &inv, "vr1", "echo via; exit 7", T).await.unwrap();
    assert_eq!((out.rc, out.stdout.as_str()), (Some(7), "via\n"));
    assert_eq!(t.connections_made(&spec), 1);

    let reason = unreachable_reason(ssh(&t, &inv, "dead", "true", T).await.unwrap_err());
    assert!(
        reason.starts_with(&format!(
            "jump host {spec} (127.0.0.1:{}) could not open a tunnel to 127.0.0.1:{closed}",
            hv.port
        )),
        "{reason}"
    );
    // The jump connection was reused for the failed tunnel.
    assert_eq!(t.connections_made(&spec), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn jump_host_key_is_checked_too() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let hv = lab.sshd("hv");
    let vr = lab.sshd("vr");
    lab.trust(&vr, "ed25519"); // but not the jump host
    let inv_text = inventory(&[
        lab.host("hv1", &hv, ""),
        lab.host("vr1", &vr, "      remedy_jump: hv1\n"),
    ]);
    let (inv, t) = lab.transport(&inv_text);
    let reason = unreachable_reason(ssh(&t, &inv, "vr1", "true", T).await.unwrap_err());
    assert!(reason.starts_with("jump host hv1"), "{reason}");
    assert!(reason.contains("host key for hv1"), "{reason}");
    assert_eq!(vr.log().matches("Accepted publickey").count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn exit_signal_is_reported() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    let out = ssh(&t, &inv, "h", "echo before; kill -KILL $$", T)
        .await
        .unwrap();
    assert_eq!(out.rc, None);
    assert_eq!(out.signal.as_deref(), Some("KILL"));
    assert_eq!(out.stdout, "before\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_capped_and_the_rest_counted() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    let out = ssh(
        &t,
        &inv,
        "h",
        "head -c 10000000 /dev/zero; echo tail >&2",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(out.rc, Some(0));
    assert_eq!(out.stdout.len(), CAP);
    assert_eq!(out.dropped_bytes, 10_000_000 - CAP as u64);
    assert_eq!(out.stderr, "tail\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_prompt_and_closes_the_channel() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    ssh(&t, &inv, "h", "true", T).await.unwrap(); // connect first

    let started = Instant::now();
    let err = ssh(&t, &inv, "h", "sleep 30", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout(d) if d == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // The channel is closed on the server's side: a command still writing output dies of
    // SIGPIPE. (OpenSSH refuses `signal` requests in root sessions, which run without
    // privilege separation, so a silent command such as the sleep above outlives its channel.)
    let err = ssh(
        &t,
        &inv,
        "h",
        "while :; do echo tick; sleep 0.2; done",
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransportError::Timeout(_)), "{err:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sshd.processes_running("echo tick").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the command kept running after its channel was closed: {:?}",
            sshd.processes_running("")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The connection is still good.
    assert_eq!(
        ssh(&t, &inv, "h", "echo ok", T).await.unwrap().stdout,
        "ok\n"
    );
    assert_eq!(t.connections_made("h"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_wait_for_sessions_held_by_timed_out_commands() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = Sshd::start(&lab.path("s"), &[&lab.key], "MaxSessions 2");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    for _ in 0..2 {
        let err = ssh(&t, &inv, "h", "sleep 3", Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Timeout(_)), "{err:?}");
    }
    // Both of sshd's sessions are still taken by the sleeps; this one waits for a free one.
    let out = ssh(&t, &inv, "h", "echo ok", T).await.unwrap();
    assert_eq!(out.stdout, "ok\n");
    assert_eq!(t.connections_made("h"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_mid_command_fails_promptly() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let mut sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    let t = Arc::new(t);
    ssh(&t, &inv, "h", "true", T).await.unwrap();

    let running = {
        let (t, inv) = (t.clone(), inv.clone());
        tokio::spawn(async move { ssh(&t, &inv, "h", "sleep 30", Duration::from_secs(60)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sshd.processes_running("sleep 30").is_empty() {
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Instant::now();
    sshd.kill_all();
    let err = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("no prompt error after the server died")
        .unwrap()
        .unwrap_err();
    assert!(killed.elapsed() < Duration::from_secs(5));
    let text = err.to_string();
    assert!(text.contains("lost mid-command"), "{text}");
    assert!(text.contains("may or may not have run"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_commands_one_connection() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    let t = Arc::new(t);
    let mut seen = BTreeSet::new();
    for wave in 0..2 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (t, inv) = (t.clone(), inv.clone());
            let n = wave * 10 + i;
            tasks
                .spawn(async move { ssh(&t, &inv, "h", &format!("sleep 0.2; echo {n}"), T).await });
        }
        while let Some(r) = tasks.join_next().await {
            let out = r.unwrap().unwrap();
            assert_eq!(out.rc, Some(0));
            seen.insert(out.stdout.trim().parse::<u32>().unwrap());
        }
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(t.connections_made("h"), 1);
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "{}",
        sshd.log()
    );

    // More commands at once than sshd's MaxSessions: the extra ones wait for a channel.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let (t, inv) = (t.clone(), inv.clone());
        tasks.spawn(async move { ssh(&t, &inv, "h", "sleep 0.1; echo ok", T).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap().stdout, "ok\n");
    }
    assert_eq!(t.connections_made("h"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_an_idle_drop() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    ssh(&t, &inv, "h", "true", T).await.unwrap();
    sshd.drop_connections();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        ssh(&t, &inv, "h", "echo again", T).await.unwrap().stdout,
        "again\n"
    );
    assert_eq!(t.connections_made("h"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_and_become() {
    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let closed = free_port();
    let inv_text = inventory(&[
        format!("    gone:\n      ansible_host: 127.0.0.1\n      ansible_port: {closed}\n"),
        // root with become runs the command as is.
        lab.host("b", &sshd, "      ansible_become: true\n"),
    ]);
    let (inv, t) = lab.transport(&inv_text);
    let reason = unreachable_reason(ssh(&t, &inv, "gone", "true", T).await.unwrap_err());
    assert_eq!(reason, format!("connection refused on 127.0.0.1:{closed}"));

    // A port that accepts but never speaks SSH.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut opts = lab.options();
    opts.connect_timeout = Duration::from_secs(1);
    let (inv2, t2) = lab.transport_with(
        &inventory(&[format!(
            "    mute:\n      ansible_host: 127.0.0.1\n      ansible_port: {silent_port}\n"
        )]),
        opts,
    );
    let started = Instant::now();
    let reason = unreachable_reason(ssh(&t2, &inv2, "mute", "true", T).await.unwrap_err());
    assert_eq!(
        reason,
        format!("timed out after 1s connecting to 127.0.0.1:{silent_port}")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
    let out = ssh(&t, &inv, "b", "echo $0", T).await.unwrap();
    assert_ne!(out.stdout, "/bin/sh\n");
    assert_eq!(out.rc, Some(0));
}

// ---------------------------------------------------------------------------------------------
// Quoting
// ---------------------------------------------------------------------------------------------

/// Hostile values rendered by shell templates (bare, inside '...', inside "...") reach a real
/// sshd's shell as exactly their bytes, written to a file and read back; nothing they hold runs.
/// The property test of the same quoting with local shells is `shell_quoting.rs`.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_arrive_byte_for_byte() {
    use remedy::source::Source;
    use remedy::template::{Mode, Templates};

    if !available() {
        return;
    }
    let lab = Lab::new();
    let sshd = lab.sshd("s");
    lab.trust(&sshd, "ed25519");
    let (inv, t) = lab.transport(&inventory(&[lab.host("h", &sshd, "")]));
    let arrived = lab.path("arrived");
    let pwned = lab.path("pwned");
    let p = pwned.display();
    let values = [
        format!("x; touch {p}"),
        format!("x'; touch {p}; '"),
        format!("$(touch {p})"),
        format!("`touch {p}`"),
        format!("\"; touch {p}; \""),
        "a\\\nb\n\n|& <> * ~ # ! é 🦀 -rf {a,b} $HOME".to_string(),
        "'\\''".repeat(5_000),
    ];
    let source = Source::parse("pb.yml", "ssh: x\n").unwrap();
    let mut templates = Templates::new();
    for (template, pre) in [
        ("printf '%s' {{ v }} > {{ f }}", ""),
        ("printf '%s' 'pre {{ v }}' > {{ f }}", "pre "),
        (r#"printf '%s' "pre {{ v }}" > {{ f }}"#, "pre "),
    ] {
        let tpl = templates
            .add(&source, "ssh", template, Mode::Shell)
            .unwrap();
        for v in &values {
            let ctx = minijinja::context! { v => v, f => arrived.display().to_string() };
            let cmd = templates.render(&tpl, &ctx).unwrap();
            let out = ssh(&t, &inv, "h", &cmd, T).await.unwrap();
            assert_eq!(out.rc, Some(0), "{cmd}: {}", out.stderr);
            assert_eq!(
                fs::read(&arrived).unwrap(),
                format!("{pre}{v}").into_bytes(),
                "{cmd}"
            );
            assert!(!pwned.exists(), "{cmd} ran a command from its value");
        }
    }
}
