//! The harness of the tests that drive the real `remedy` binary against `remedy lab` in its own
//! process (`rollback_hosts.rs`, `rollback_faults.rs`): the lab started on a free loopback port
//! and stopped by PID, its zone read over `GET /sim/state` and its faults set over
//! `/sim/faults`; each test's own HOME, state directory and audit log.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `remedy lab` in its own process, stopped by PID with SIGTERM when dropped (a failed assertion
/// included).
pub struct Lab {
    pub child: Child,
    /// `127.0.0.1:PORT`, as the lab printed it.
    pub addr: String,
    pub banner: String,
}

impl Lab {
    pub fn start(scenario: &str, inventory: &Path, home: &Path) -> Lab {
        let mut child = Command::new(env!("CARGO_BIN_EXE_remedy"))
            .args(["lab", "--scenario", scenario, "--listen", "127.0.0.1:0"])
            .arg("--write-inventory")
            .arg(inventory)
            .env("HOME", home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start remedy lab");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut banner, mut addr) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("remedy lab --scenario {scenario} ended early:\n{banner}{err}");
            }
            if let Some(url) = line.trim().strip_prefix("zone state    GET http://") {
                addr = url.trim_end_matches("/sim/state").to_string();
            }
            banner.push_str(&line);
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        assert!(addr.starts_with("127.0.0.1:"), "{banner}");
        Lab {
            child,
            addr,
            banner,
        }
    }

    /// The zone's world, from `GET /sim/state`.
    pub fn world(&self) -> Value {
        let mut stream = std::net::TcpStream::connect(&self.addr).expect("connect to the lab");
        // HTTP/1.0: the whole body, not chunked, then the server closes.
        write!(
            stream,
            "GET /sim/state HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        let state: Value = serde_json::from_str(body).expect("JSON state");
        state["world"].clone()
    }

    /// `METHOD /sim/faults` with a JSON body (PATCH merges, PUT replaces, DELETE clears); the
    /// fault set as the lab answers it.
    pub fn faults(&self, method: &str, body: &str) -> Value {
        let mut stream = std::net::TcpStream::connect(&self.addr).expect("connect to the lab");
        write!(
            stream,
            "{method} /sim/faults HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        assert!(head.starts_with("HTTP/1.0 200"), "{head}\n{body}");
        serde_json::from_str(body).expect("JSON faults")
    }

    /// SIGTERM by PID; the lab stops cleanly.
    pub fn stop(mut self) {
        let status = self.terminate().expect("the lab ends");
        assert_eq!(status.code(), Some(0), "{}", self.banner);
    }

    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// One test's directories: HOME, the state directory, the audit log, the directory `apply`
/// runs in (which holds the lab's inventory) and another one `rollback` runs in.
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub state: PathBuf,
    pub audit: PathBuf,
    pub apply_dir: PathBuf,
    pub rollback_dir: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let at = |name: &str| {
            let p = tmp.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        Dirs {
            home: at("home"),
            state: at("state"),
            audit: at("log").join("audit.jsonl"),
            apply_dir: at("ops"),
            rollback_dir: at("elsewhere"),
            _tmp: tmp,
        }
    }

    /// The lab's inventory, in the directory `apply` runs in.
    pub fn inventory(&self) -> PathBuf {
        self.apply_dir.join("lab-live.yml")
    }

    /// `remedy ARGS` in `cwd`, with this test's HOME, state directory and audit log, and the
    /// shipped playbooks on the search path; not started yet (a test may spawn it to signal
    /// it).
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remedy"));
        cmd.args(args)
            .args(["--audit-log", self.audit.to_str().unwrap()])
            .current_dir(cwd)
            .env("HOME", &self.home)
            .env("REMEDY_STATE_DIR", &self.state)
            .env("REMEDY_PLAYBOOK_PATH", repo_root().join("playbooks"))
            .env_remove("REMEDY_AUDIT_LOG")
            .env_remove("REMEDY_INVENTORY")
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// [`Dirs::command`], run to its end.
    pub fn remedy(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd, args).output().expect("run remedy")
    }

    /// `remedy apply PLAYBOOK -i lab-live.yml` (relative: from the inventory's directory) with
    /// `extra` (`-e` pairs), which must succeed; returns the run's id.
    pub fn apply(&self, playbook: &str, extra: &[&str]) -> String {
        let mut args = vec!["apply", playbook, "-i", "lab-live.yml", "--yes"];
        for e in extra {
            args.extend(["-e", e]);
        }
        let o = self.remedy(&self.apply_dir, &args);
        assert_eq!(o.status.code(), Some(0), "{playbook}: {}", text(&o));
        self.last_run(playbook)
    }

    /// `remedy rollback RUN --yes` from the other directory, with `args` (`-i FILE`).
    pub fn rollback(&self, run: &str, args: &[&str]) -> Output {
        let mut all = vec!["rollback", run, "--yes"];
        all.extend(args);
        self.remedy(&self.rollback_dir, &all)
    }

    /// The audit log's records.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The `run_start` record of the last run of `playbook`.
    pub fn run_start(&self, playbook: &str) -> Value {
        self.records()
            .into_iter()
            .rfind(|r| r["event"] == "run_start" && r["playbook"] == playbook)
            .unwrap_or_else(|| panic!("no run of {playbook} in the audit log"))
    }

    pub fn last_run(&self, playbook: &str) -> String {
        self.run_start(playbook)["run"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `remedy audit verify` passes.
    pub fn verify(&self) {
        let o = self.remedy(&self.rollback_dir, &["audit", "verify"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Lab {
    /// `GET PATH` on the lab's HTTP side (`/sim/requests`, `/sim/faults`), as JSON.
    pub fn get(&self, path: &str) -> Value {
        let mut stream = std::net::TcpStream::connect(&self.addr).expect("connect to the lab");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        assert!(head.starts_with("HTTP/1.0 200"), "{path}: {head}");
        serde_json::from_str(body).expect("JSON")
    }
}

impl Dirs {
    /// The audit log's records, or none while it does not exist yet.
    pub fn records_so_far(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
