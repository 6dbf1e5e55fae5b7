//! `remedy lab` in its own process, for the tests that drive the real binary against one
//! long-lived simulated zone (`--write-inventory`): started, read (`/sim/state`), stopped by
//! its PID.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// `remedy lab` running in its own process; stopped with SIGTERM when dropped (a failed
/// assertion included).
pub struct Lab {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the lab printed it.
    pub base: String,
    pub banner: String,
}

impl Lab {
    pub fn start(remedy: &str, scenario: &str, inventory: &Path, home: &Path) -> Lab {
        let mut child = Command::new(remedy)
            .args(["lab", "--scenario", scenario, "--listen", "127.0.0.1:0"])
            .arg("--write-inventory")
            .arg(inventory)
            .env("HOME", home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start remedy lab");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        let mut base = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("remedy lab --scenario {scenario} ended early:\n{banner}{err}");
            }
            if let Some(url) = line.trim().strip_prefix("zone state    GET ") {
                base = url.trim_end_matches("/sim/state").to_string();
            }
            banner.push_str(&line);
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        assert!(base.starts_with("http://127.0.0.1:"), "{banner}");
        assert!(!base.ends_with(":0"), "the real port is printed: {banner}");
        Lab {
            child,
            base,
            banner,
        }
    }

    /// The zone's world, from `GET /sim/state`.
    pub fn world(&self) -> Value {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to the lab");
        // HTTP/1.0: the whole body, not chunked, then the server closes.
        write!(stream, "GET /sim/state HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        let state: Value = serde_json::from_str(body).expect("JSON state");
        state["world"].clone()
    }

    /// `PATCH /sim/faults` with `body` (JSON); panics unless the lab takes it.
    pub fn patch_faults(&self, body: &str) {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to the lab");
        write!(
            stream,
            "PATCH /sim/faults HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
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
