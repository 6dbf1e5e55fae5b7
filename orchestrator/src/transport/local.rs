//! `ansible_connection: local`: commands run on the controller itself through `/bin/sh -c`.
//!
//! Useful when remedy runs on the machine it repairs (a management server fixing its own log
//! permissions), and in tests that want real commands on real files. API actions are not this
//! transport's business.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{Access, Action, ActionResult, CmdOutput, Transport, TransportError};
use crate::inventory::Host;

/// Output kept per stream; the rest is counted in `dropped_bytes`.
pub const OUTPUT_CAP: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
pub struct LocalTransport;

async fn read_capped(mut r: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<(Vec<u8>, u64)> {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, dropped));
        }
        let room = OUTPUT_CAP.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        dropped += n.saturating_sub(room) as u64;
    }
}

#[async_trait]
impl Transport for LocalTransport {
    async fn run(
        &self,
        host: &Host,
        action: &Action,
        _access: Access,
        timeout: Duration,
    ) -> Result<ActionResult, TransportError> {
        let Action::Ssh { cmd } = action else {
            return Err(TransportError::Unsupported(format!(
                "{}: the local connection runs commands, not API calls",
                host.name
            )));
        };
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Unreachable {
                host: host.name.clone(),
                reason: format!("cannot start /bin/sh: {e}"),
            })?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(TransportError::Other("child has no pipes".into()));
        };
        let work = async {
            let (o, e, status) = tokio::join!(read_capped(out), read_capped(err), child.wait());
            Ok::<_, std::io::Error>((o?, e?, status?))
        };
        let ((stdout, d1), (stderr, d2), status) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(|e| TransportError::Other(format!("local command: {e}")))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(ActionResult::Ssh(CmdOutput {
            rc: status.code(),
            signal: status.signal().map(|s| format!("signal {s}")),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            dropped_bytes: d1 + d2,
        }))
    }
}
