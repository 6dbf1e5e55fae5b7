//! One command on one exec channel: send the command line, collect stdout and stderr (each
//! capped at [`OUTPUT_CAP`], the rest counted), and read how it ended.
//!
//! Owned here: the channel's life from the exec request to its close, what a timeout does to
//! the remote command (`signal KILL`, EOF, close), and telling "the command exited" from "the
//! connection was lost and the command may or may not have run".
//!
//! Never logged: the command's output.

use russh::client::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio::time::{timeout_at, Duration, Instant};

use crate::transport::local::OUTPUT_CAP;
use crate::transport::CmdOutput;

/// How long cleanup after a timeout may take before the channel is simply dropped.
const CLEANUP_GRACE: Duration = Duration::from_secs(2);

/// Why a command produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExecError {
    /// The deadline passed; the channel was closed (after asking the server to kill the
    /// command).
    Timeout,
    /// The server refused the exec request.
    Refused,
    /// The channel ended without an exit status or signal.
    Lost,
    /// Sending the exec request failed: the connection is gone, the command was not started.
    NotSent(String),
}

/// Output kept up to the cap, with the overflow counted.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    dropped: u64,
}

impl Capped {
    fn push(&mut self, data: &[u8]) {
        let room = OUTPUT_CAP.saturating_sub(self.kept.len());
        let take = data.len().min(room);
        self.kept.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// The signal's name without `SIG`, as OpenSSH sends it (`KILL`, `TERM`, ...).
pub(crate) fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    }
    .to_string()
}

/// Runs `command` on `channel` (a freshly opened session channel) until it ends or `deadline`
/// passes.
pub(crate) async fn run(
    mut channel: Channel<Msg>,
    host: &str,
    command: &str,
    deadline: Instant,
) -> Result<CmdOutput, ExecError> {
    let id = channel.id();
    send_request(deadline, channel.exec(true, command)).await?;
    tracing::debug!(%host, channel = %id, "exec sent");
    let outcome = timeout_at(deadline, collect(&mut channel)).await;
    match outcome {
        Ok(result) => {
            match &result {
                Ok(out) => tracing::debug!(
                    %host, channel = %id, rc = ?out.rc, signal = ?out.signal,
                    stdout_bytes = out.stdout.len(), stderr_bytes = out.stderr.len(),
                    dropped_bytes = out.dropped_bytes, "command ended"
                ),
                Err(e) => tracing::debug!(%host, channel = %id, error = ?e, "command failed"),
            }
            // The channel is closed by now, or the connection is gone; closing is harmless.
            let _ = channel.close().await;
            result
        }
        Err(_) => {
            tracing::debug!(%host, channel = %id, "command timed out; killing and closing");
            let cleanup = async {
                // OpenSSH delivers this to the session's process group, but only in sessions
                // with privilege separation, i.e. not for root logins (system VMs). Then
                // closing the channel is all we can do: the command loses its output pipes
                // and dies at its next write, or runs on until it ends.
                let _ = channel.signal(Sig::KILL).await;
                let _ = channel.eof().await;
                let _ = channel.close().await;
            };
            let _ = tokio::time::timeout(CLEANUP_GRACE, cleanup).await;
            Err(ExecError::Timeout)
        }
    }
}

/// Sends the exec request, bounded by `deadline` like the rest of the command: a stalled
/// connection can hold the request itself. Past the deadline it is a timeout (the request may
/// have left, so the command may have started).
async fn send_request<F>(deadline: Instant, request: F) -> Result<(), ExecError>
where
    F: std::future::Future<Output = Result<(), russh::Error>>,
{
    match timeout_at(deadline, request).await {
        Ok(sent) => sent.map_err(|e| ExecError::NotSent(e.to_string())),
        Err(_) => Err(ExecError::Timeout),
    }
}

async fn collect(channel: &mut Channel<Msg>) -> Result<CmdOutput, ExecError> {
    let mut stdout = Capped::default();
    let mut stderr = Capped::default();
    let mut rc = None;
    let mut signal = None;
    let mut answered = false;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.push(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => stderr.push(&data),
            ChannelMsg::ExitStatus { exit_status } => rc = Some(exit_status as i32),
            ChannelMsg::ExitSignal { signal_name: s, .. } => signal = Some(signal_name(&s)),
            ChannelMsg::Success => answered = true,
            // The reply to our exec request (later failures answer nothing we asked).
            ChannelMsg::Failure if !answered => return Err(ExecError::Refused),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if rc.is_none() && signal.is_none() {
        return Err(ExecError::Lost);
    }
    Ok(CmdOutput {
        rc: if signal.is_some() { None } else { rc },
        signal,
        stdout: stdout.text(),
        stderr: stderr.text(),
        dropped_bytes: stdout.dropped + stderr.dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_the_first_mebibyte_and_counts_the_rest() {
        let mut c = Capped::default();
        c.push(&vec![b'a'; OUTPUT_CAP - 10]);
        c.push(&[b'b'; 25]);
        c.push(&[b'c'; 5]);
        assert_eq!(c.kept.len(), OUTPUT_CAP);
        assert_eq!(c.dropped, 20);
        assert!(c.kept.ends_with(&[b'b'; 10]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_exec_request_times_out_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let r = send_request(deadline, std::future::pending()).await;
        assert_eq!(r, Err(ExecError::Timeout));
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        let r = send_request(deadline, async { Err(russh::Error::Disconnect) }).await;
        assert!(matches!(r, Err(ExecError::NotSent(_))), "{r:?}");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(&Sig::KILL), "KILL");
        assert_eq!(signal_name(&Sig::TERM), "TERM");
        assert_eq!(signal_name(&Sig::Custom("XCPU".into())), "XCPU");
    }
}
