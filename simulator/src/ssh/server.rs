//! The SSH servers: one russh server per hypervisor and management server on 127.0.0.1, and
//! the system VMs' SSH sessions served over `direct-tcpip` channels of their hypervisor.
//!
//! Owned here: authentication (public key only, the one authorized key, user `root`), host
//! keys, which `direct-tcpip` targets a hypervisor connects (only `<linklocalip>:3922` of a
//! Running system VM whose `hostid` is that hypervisor), exec channels (the command line runs
//! in its own task; `sleep` really waits and `head -c N /dev/zero` streams in chunks, both
//! ending early when the client closes the channel or sends a signal), the command log, the
//! count of command lines still running per machine, a machine's sshd going down (its
//! sessions disconnected, new ones refused), and the SSH fault rules of the zone's
//! [`crate::faults::Faults`] applied to each command line ([`run`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Config, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{
    Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf,
    MethodKind, MethodSet,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::commands::{self, Output, Step};
use super::shell::{self, Sink};
use crate::faults::SshEffect;
use crate::zone::Zone;

/// The port system VMs' sshd listens on, on their link-local address.
pub const SYSTEM_VM_PORT: u32 = 3922;

/// How many bytes of streamed output go into one `data` call.
const CHUNK: usize = 32 * 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// State shared by every server and session of one [`super::SshSim`].
pub(crate) struct Shared {
    pub zone: Arc<Mutex<Zone>>,
    pub client_key: PublicKey,
    /// Host keys by machine name, made when first needed.
    pub keys: Mutex<BTreeMap<String, PrivateKey>>,
    /// Command lines by machine, in order.
    pub log: Mutex<BTreeMap<String, Vec<String>>>,
    /// Turns true on shutdown.
    pub stop: watch::Receiver<bool>,
    /// Machines whose sshd is down ([`super::SshSim::stop_sshd`]).
    pub down: watch::Sender<BTreeSet<String>>,
    /// Command lines running now, by machine (a line ends when its channel is closed).
    pub running: Mutex<BTreeMap<String, usize>>,
    /// SSH connections by machine: (served since the start, open now).
    pub connections: Mutex<BTreeMap<String, (usize, usize)>>,
}

/// One SSH connection being served, counted open until dropped.
struct Served {
    shared: Arc<Shared>,
    machine: String,
}

impl Served {
    fn new(shared: Arc<Shared>, machine: String) -> Served {
        let mut c = lock(&shared.connections);
        let n = c.entry(machine.clone()).or_default();
        n.0 += 1;
        n.1 += 1;
        drop(c);
        Served { shared, machine }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.shared.connections).get_mut(&self.machine) {
            n.1 = n.1.saturating_sub(1);
        }
    }
}

impl Shared {
    /// The host key of `machine`, made on first use.
    pub fn host_key(&self, machine: &str) -> PrivateKey {
        lock(&self.keys)
            .entry(machine.to_string())
            .or_insert_with(new_key)
            .clone()
    }

    pub fn config(&self, machine: &str) -> Arc<Config> {
        Arc::new(Config {
            keys: vec![self.host_key(machine)],
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(50),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: Some(Duration::from_secs(3600)),
            nodelay: true,
            ..Config::default()
        })
    }

    /// Whether `machine`'s sshd is down.
    pub fn is_down(&self, machine: &str) -> bool {
        self.down.borrow().contains(machine)
    }

    /// Resolves when the simulator stops or `machine`'s sshd goes down.
    pub async fn gone(&self, machine: &str) {
        let mut stop = self.stop.clone();
        let mut down = self.down.subscribe();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = down.wait_for(|d| d.contains(machine)) => {}
        }
    }
}

/// Counts one running command line of a machine in [`Shared::running`] while it lives.
struct Running {
    shared: Arc<Shared>,
    machine: String,
}

impl Running {
    fn new(shared: Arc<Shared>, machine: String) -> Running {
        *lock(&shared.running).entry(machine.clone()).or_default() += 1;
        Running { shared, machine }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.shared.running).get_mut(&self.machine) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A fresh ed25519 key.
pub(crate) fn new_key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .expect("ed25519 key generation does not fail")
}

/// Serves one SSH connection (TCP, or a tunnelled channel) for `machine` until it ends or the
/// simulator stops.
pub(crate) async fn serve<S>(shared: Arc<Shared>, machine: String, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if shared.is_down(&machine) {
        return;
    }
    let _served = Served::new(shared.clone(), machine.clone());
    let config = shared.config(&machine);
    let cut = Arc::new(Cut::default());
    let handler = Handler {
        shared: shared.clone(),
        machine: machine.clone(),
        channels: HashMap::new(),
        cut: cut.clone(),
    };
    let stream = Severable { inner: stream, cut };
    let session = match russh::server::run_stream(config, stream, handler).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%machine, error = %e, "ssh handshake failed");
            return;
        }
    };
    let handle = session.handle();
    tokio::select! {
        result = session => {
            if let Err(e) = result {
                tracing::debug!(%machine, error = %e, "ssh session ended with an error");
            }
        }
        _ = shared.gone(&machine) => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "sshd stopped".into(), "en".into())
                .await;
        }
    }
}

struct Handler {
    shared: Arc<Shared>,
    machine: String,
    /// Session channels opened and not yet given a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Severs this session's connection (the `drop_*` SSH faults).
    cut: Arc<Cut>,
}

impl Handler {
    fn authorized(&self, user: &str, key: &PublicKey) -> Auth {
        if user == "root" && key.key_data() == self.shared.client_key.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }

    /// The system VM behind `host:port` that this hypervisor may connect to.
    fn tunnel_target(&self, host: &str, port: u32) -> Option<String> {
        if port != SYSTEM_VM_PORT {
            return None;
        }
        let zone = lock(&self.shared.zone);
        let w = zone.world();
        let me = w.hosts.iter().find(|h| h.name == self.machine)?;
        w.vms
            .iter()
            .find(|v| {
                v.live()
                    && !v.linklocalip.is_empty()
                    && v.linklocalip == host
                    && v.hostid == me.id
                    && v.state == "Running"
                    && (v.vpcid().is_some() || v.systemvmtype().is_some())
            })
            .map(|v| v.name.clone())
            .filter(|vm| !self.shared.is_down(vm))
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.authorized(user, offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.authorized(user, key.public_key))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(vm) = self.tunnel_target(host_to_connect, port_to_connect) else {
            tracing::debug!(
                host = %self.machine, target = %format!("{host_to_connect}:{port_to_connect}"),
                "direct-tcpip refused"
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        let shared = self.shared.clone();
        tokio::spawn(serve(shared, vm, channel.into_stream()));
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let line = String::from_utf8_lossy(data).into_owned();
        lock(&self.shared.log)
            .entry(self.machine.clone())
            .or_default()
            .push(line.clone());
        session.channel_success(channel)?;
        let handle = session.handle();
        tokio::spawn(run(
            Line {
                shared: self.shared.clone(),
                machine: self.machine.clone(),
                line,
                cut: self.cut.clone(),
            },
            ch,
            handle,
        ));
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No interactive shells: commands only.
        session.channel_failure(channel)?;
        Ok(())
    }
}

/// How a command line ended early.
enum Ended {
    /// The client closed the channel (or the connection went).
    Closed,
    /// The client sent a signal.
    Signal(russh::Sig),
}

type Writer = ChannelWriteHalf<Msg>;

/// Waits for the client to close the channel or signal it; other messages are ignored.
async fn ended(rx: &mut ChannelReadHalf) -> Ended {
    loop {
        match rx.wait().await {
            None | Some(ChannelMsg::Close) => return Ended::Closed,
            Some(ChannelMsg::Signal { signal }) => return Ended::Signal(signal),
            Some(_) => {}
        }
    }
}

/// Answers an early end: a signal is reported as the command's death by it.
async fn end_early(tx: &Writer, handle: &russh::server::Handle, why: Ended) {
    if let Ended::Signal(sig) = why {
        let _ = handle
            .exit_signal_request(tx.id(), sig, false, String::new(), "en".into())
            .await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    }
}

/// Sends `n` zero bytes to `sink` in chunks (never all at once); `Err` when the channel
/// ended first (`None`: the connection went while sending).
async fn stream_zeros(
    tx: &Writer,
    rx: &mut ChannelReadHalf,
    sink: Sink,
    n: u64,
) -> Result<(), Option<Ended>> {
    let ext = match sink {
        Sink::Null => return Ok(()),
        Sink::Stdout => None,
        Sink::Stderr => Some(1),
    };
    let zeros = [0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let chunk = &zeros[..left.min(CHUNK as u64) as usize];
        let sent = async {
            match ext {
                None => tx.data(chunk).await,
                Some(e) => tx.extended_data(e, chunk).await,
            }
        };
        tokio::select! {
            sent = sent => sent.map_err(|_| None)?,
            why = ended(rx) => return Err(Some(why)),
        }
        left -= chunk.len() as u64;
    }
    Ok(())
}

/// One command line to run, and where.
struct Line {
    shared: Arc<Shared>,
    machine: String,
    line: String,
    /// Severs the connection the line came on.
    cut: Arc<Cut>,
}

/// Runs one command line on an exec channel and reports its output and status, applying the
/// zone's SSH fault rules (see [`crate::faults::SshFault`]): the line's effect is decided
/// when it arrives, a `fail` rule as each simple command is reached.
async fn run(line: Line, channel: Channel<Msg>, handle: russh::server::Handle) {
    let Line {
        shared,
        machine,
        line,
        cut,
    } = line;
    let _running = Running::new(shared.clone(), machine.clone());
    let (mut rx, tx) = channel.split();
    let script = match shell::parse(&line) {
        Ok(s) => s,
        Err(e) => {
            let out = Output {
                stdout: String::new(),
                stderr: format!("{}\n", e.0),
                status: 2,
            };
            finish(&tx, &out, out.status).await;
            return;
        }
    };
    let simple: Vec<String> = script.iter().map(|s| s.words.join(" ")).collect();
    let effect = lock(&shared.zone)
        .faults_mut()
        .take_ssh_line_effect(&machine, &simple);
    match effect {
        Some(SshEffect::DropBefore) => {
            tracing::debug!(%machine, "dropping the connection before the command (fault)");
            cut.sever();
            return;
        }
        Some(SshEffect::Hang { ms }) => {
            tracing::debug!(%machine, ms, "holding the command (fault)");
            if let Err(sig) = hold(Duration::from_millis(ms), &mut rx).await {
                return end_early(&tx, &handle, Ended::Signal(sig)).await;
            }
        }
        _ => {}
    }
    let mut status = 0;
    for (simple, text) in script.iter().zip(&simple) {
        if !commands::runs(simple.join, status) {
            continue;
        }
        let injected = lock(&shared.zone)
            .faults_mut()
            .take_ssh_failure(&machine, text);
        let out = match (injected, commands::step(&simple.words)) {
            (Some(SshEffect::Fail { exit, stderr }), _) => Output::failed(exit, &stderr),
            (_, Err(out)) => out,
            (_, Ok(Step::Exit(n))) => {
                status = n;
                break;
            }
            (_, Ok(Step::Sleep(d))) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => Output::default(),
                    why = ended(&mut rx) => return end_early(&tx, &handle, why).await,
                }
            }
            (_, Ok(Step::Zeros(n))) => match stream_zeros(&tx, &mut rx, simple.stdout, n).await {
                Ok(()) => Output::default(),
                Err(Some(why)) => return end_early(&tx, &handle, why).await,
                Err(None) => return,
            },
            (_, Ok(Step::Run)) => {
                let mut zone = lock(&shared.zone);
                let now = jiff::Timestamp::now();
                zone.advance(now);
                let out = commands::exec(&mut zone, &machine, &simple.words);
                zone.observe(now);
                out
            }
        };
        let mut routed = Output::default();
        routed.absorb(out, simple);
        status = routed.status;
        if send(&tx, &routed).await.is_err() {
            return;
        }
    }
    if effect == Some(SshEffect::DropAfter) {
        tracing::debug!(%machine, "dropping the connection before the exit status (fault)");
        cut.sever();
        return;
    }
    finish(&tx, &Output::default(), status).await;
}

/// Holds a line for `d` before it starts (the `hang` SSH fault). A signal from the client
/// ends the hold and the line (`Err`); a closed channel or a lost connection does not, as a
/// real sshd does not stop a command without a terminal when its client goes away.
async fn hold(d: Duration, rx: &mut ChannelReadHalf) -> Result<(), russh::Sig> {
    let until = tokio::time::sleep(d);
    tokio::pin!(until);
    tokio::select! {
        _ = &mut until => Ok(()),
        why = ended(rx) => match why {
            Ended::Signal(sig) => Err(sig),
            Ended::Closed => {
                until.await;
                Ok(())
            }
        },
    }
}

async fn send(tx: &Writer, out: &Output) -> Result<(), russh::Error> {
    if !out.stdout.is_empty() {
        tx.data(out.stdout.as_bytes()).await?;
    }
    if !out.stderr.is_empty() {
        tx.extended_data(1, out.stderr.as_bytes()).await?;
    }
    Ok(())
}

async fn finish(tx: &Writer, out: &Output, status: u32) {
    let _ = send(tx, out).await;
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// The switch that severs one SSH connection: once thrown, its stream fails every read and
/// write, so the session ends and the stream is dropped without a word to the client (no
/// `disconnect` message, no exit status): a connection lost, as the client sees it.
#[derive(Default)]
pub(crate) struct Cut {
    severed: AtomicBool,
    /// The task waiting to read, woken when the switch is thrown.
    reader: Mutex<Option<Waker>>,
}

impl Cut {
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        if let Some(w) = lock(&self.reader).take() {
            w.wake();
        }
    }

    fn severed(&self) -> bool {
        self.severed.load(Ordering::SeqCst)
    }
}

fn severed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection severed (fault)",
    )
}

/// A connection's stream with a [`Cut`] in it.
struct Severable<S> {
    inner: S,
    cut: Arc<Cut>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Severable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.cut.severed() {
            return Poll::Ready(Err(severed_error()));
        }
        *lock(&self.cut.reader) = Some(cx.waker().clone());
        // thrown between the check and the registration: nobody would wake us
        if self.cut.severed() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Severable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.cut.severed() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.cut.severed() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
