//! A real etcd cluster for the coordination tests: Debian's `etcd` binary, members on free
//! loopback ports, each in its own data directory under a temp dir, each stopped by its PID
//! when the cluster is dropped. Members can be frozen (`SIGSTOP`: a partition as the client
//! sees it), thawed, and killed one at a time.
//!
//! Without `etcd` installed the tests that need it say SKIPPED (under `CI=true` they fail):
//! `.ci/install-test-deps` installs `etcd-server`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    members: Vec<Member>,
    /// Clients must use TLS with these certificates (`start_tls`).
    pub tls: Option<Certs>,
}

/// The PEM files of a TLS cluster: its CA, and a client certificate it trusts.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub client: PathBuf,
    pub client_key: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
}

impl Certs {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
    fn make(dir: &std::path::Path) -> Certs {
        let run = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=remedy-test-ca",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        Certs {
            ca: dir.join("ca.pem"),
            client: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        }
    }
}

struct Member {
    name: String,
    client: u16,
    child: Option<Child>,
    args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The etcd binary, or `None` (then the caller returns: skipped, or failed under CI=true).
pub fn etcd_binary() -> Option<PathBuf> {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    cloudstack_sim::testing::skip(
        "etcd coordination",
        "the etcd binary is not installed (Debian package etcd-server)",
    );
    None
}

impl Cluster {
    /// Starts `n` members and waits until the cluster answers (a leader is elected).
    pub fn start(n: usize) -> Option<Cluster> {
        Cluster::start_with(n, false)
    }

    /// One member that serves clients over TLS only and requires a client certificate
    /// (`--client-cert-auth`); the certificates are in [`Cluster::tls`].
    pub fn start_tls() -> Option<Cluster> {
        Cluster::start_with(1, true)
    }

    fn start_with(n: usize, tls: bool) -> Option<Cluster> {
        let bin = etcd_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let certs = tls.then(|| Certs::make(dir.path()));
        let scheme = if tls { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let args = vec![
                "--name".to_string(),
                name.clone(),
                "--data-dir".into(),
                dir.path().join(&name).display().to_string(),
                "--listen-client-urls".into(),
                format!("{scheme}://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("{scheme}://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
                // Quick elections: the tests freeze and kill members.
                "--heartbeat-interval".into(),
                "50".into(),
                "--election-timeout".into(),
                "500".into(),
            ];
            let mut args = args;
            if let Some(c) = &certs {
                for (flag, path) in [
                    ("--cert-file", &c.server),
                    ("--key-file", &c.server_key),
                    ("--trusted-ca-file", &c.ca),
                ] {
                    args.push(flag.into());
                    args.push(path.display().to_string());
                }
                args.push("--client-cert-auth".into());
            }
            let mut m = Member {
                name,
                client: *client,
                child: None,
                args,
            };
            m.spawn(&bin, &dir);
            members.push(m);
        }
        let c = Cluster {
            dir,
            members,
            tls: certs,
        };
        c.wait_healthy(Duration::from_secs(30));
        Some(c)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https://"
        } else {
            ""
        }
    }

    /// The client endpoints, `127.0.0.1:PORT,...`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A `--coordination` URL for this cluster.
    pub fn url(&self, prefix: &str, ttl_secs: u64) -> String {
        format!("etcd://{}{prefix}?ttl={ttl_secs}s", self.endpoints())
    }

    /// `etcdctl` for this cluster (its endpoints; its certificates when it is TLS).
    fn ctl(&self, endpoints: &str) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"));
        if let Some(t) = &self.tls {
            c.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client.display()))
                .arg(format!("--key={}", t.client_key.display()));
        }
        c
    }

    /// Runs `etcdctl ARGS` against the cluster; panics unless it succeeds; its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let all: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}127.0.0.1:{}", self.scheme(), m.client))
            .collect();
        let o = self
            .ctl(&all.join(","))
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(
            o.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(pid) = self.pid(i) {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// Freezes every member (`SIGSTOP`): to its clients the cluster is gone.
    pub fn freeze(&self) {
        for i in 0..self.members.len() {
            self.signal(i, "-STOP");
        }
    }

    /// Thaws every member (`SIGCONT`) and waits until the cluster answers again.
    pub fn thaw(&self) {
        for i in 0..self.members.len() {
            self.signal(i, "-CONT");
        }
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Kills member `i` (`SIGKILL`) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until `etcdctl endpoint health` says a live member is healthy.
    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}127.0.0.1:{}", self.scheme(), m.client))
            .collect();
        loop {
            let ok = self
                .ctl(&live.join(","))
                .args(["endpoint", "health", "--command-timeout=1s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the etcd cluster did not become healthy within {within:?}; the members' last log lines:\n{}",
                self.log_tails(5)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Cluster {
    /// The last `n` lines of each member's log (the logs go with the cluster's directory).
    fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {} (client port {})\n", m.name, m.client));
            for l in &lines[lines.len().saturating_sub(n)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Member {
    fn spawn(&mut self, bin: &PathBuf, dir: &tempfile::TempDir) {
        let log = std::fs::File::create(dir.path().join(format!("{}.log", self.name))).unwrap();
        let child = Command::new(bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                // SIGKILL ends a frozen (SIGSTOPped) member too; reaped, it leaves no zombie.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
