//! Simulated SSH hosts for the simulated zone: the hypervisors and the management server each
//! run an SSH server on 127.0.0.1, and system VMs (routers `r-*-VM`, the SSVM `s-*-VM`, the
//! CPVM `v-*-VM`) are reached as in a real zone, only through the hypervisor they run on.
//!
//! - **Listening**: every hypervisor (`kvm01`, ...) and every management server (`mgmt1`, ...) get
//!   their own server on `127.0.0.1` with a port the OS picks ([`SshSim::addr`]). System VMs
//!   listen nowhere: a client opens a `direct-tcpip` channel on the VM's hypervisor (the host
//!   whose id is the VM's `hostid`) to `<linklocalip>:3922`, and the hypervisor serves the VM's
//!   SSH session over that channel, with the VM's own host key. Any other target is refused
//!   (channel open failure), as is a VM that is not Running or runs on another host.
//! - **Host keys**: ed25519, made fresh by every [`SshSim::start`] (one per machine, made when
//!   first needed for VMs that appear later). [`SshSim::known_hosts_lines`] gives them in
//!   OpenSSH `known_hosts` form: `[127.0.0.1]:PORT` for listening hosts and
//!   `[<linklocalip>]:3922` for system VMs (the address the jump host dials).
//! - **Authentication**: public key only; the one authorized key given to
//!   [`SshSim::start`]; the user must be `root` (other users are refused).
//! - **Commands**: exec requests only (no shells, no PTYs, no subsystems). The command line
//!   runs in the emulated shell ([`shell`]: `;`, `&&`, `||`, quoting, `2>&1`, `>/dev/null`)
//!   over the emulated commands ([`commands`]) against the zone's guest state, locking the zone
//!   per command after advancing its clock to now (so finished jobs show). A change is visible
//!   through the API in the next reply. `sleep` really sleeps and `head -c N /dev/zero`
//!   streams N zero bytes in 32 KiB chunks; both stop when the client closes the channel or
//!   signals it. Every command line received is logged per machine ([`SshSim::commands`]),
//!   and [`SshSim::running`] counts the lines still running (a line ends when its channel
//!   does, or, held by a `hang` fault, when it has run). [`SshSim::connections`] counts the
//!   connections each machine has served, [`SshSim::connections_open`] those still open.
//! - **Faults**: the zone's SSH fault rules ([`crate::faults::Faults::ssh`], set with
//!   `/sim/faults` over HTTP, a scenario's `faults:`, or [`SshSim::fail_commands`]) fail a
//!   command, close the connection before a line runs or after it ran (no exit status: the
//!   client has lost the connection mid-command; the connection is cut without an SSH
//!   `disconnect`), or hold a line before it starts. See [`crate::faults::SshFault`].
//! - **Machines changing under a client**: [`SshSim::new_host_key`] gives a machine a fresh
//!   host key for its next sessions (what re-creating a system VM does; open sessions stay);
//!   [`SshSim::stop_sshd`] is its sshd dying: every session to it, tunnelled ones included, is
//!   disconnected, and new ones are refused (a listening host stops listening, its hypervisor
//!   refuses tunnels to a system VM).

pub mod commands;
mod server;
pub mod shell;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::PublicKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::SshFault;
use crate::zone::Zone;
pub use server::SYSTEM_VM_PORT;
use server::{lock, Shared};

/// The running SSH side of a simulated zone. Dropping it stops every server.
pub struct SshSim {
    addrs: BTreeMap<String, SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SshSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSim")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl SshSim {
    /// Starts a server for every hypervisor and the management server of `zone`, accepting
    /// `client_key` for `root`. Must be called inside a Tokio runtime.
    pub async fn start(zone: Arc<Mutex<Zone>>, client_key: PublicKey) -> io::Result<SshSim> {
        let listening: Vec<String> = {
            let z = lock(&zone);
            let w = z.world();
            w.mgmts()
                .map(|m| m.name.clone())
                .chain(w.hosts.iter().map(|h| h.name.clone()))
                .collect()
        };
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            zone,
            client_key,
            keys: Mutex::new(BTreeMap::new()),
            log: Mutex::new(BTreeMap::new()),
            stop: stopped,
            down: watch::channel(BTreeSet::new()).0,
            running: Mutex::new(BTreeMap::new()),
            connections: Mutex::new(BTreeMap::new()),
        });
        let mut addrs = BTreeMap::new();
        let mut tasks = Vec::new();
        for machine in listening {
            shared.host_key(&machine);
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.insert(machine.clone(), listener.local_addr()?);
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    // Returning drops the listener: connections are refused from then on.
                    let accepted = tokio::select! {
                        _ = shared.gone(&machine) => return,
                        a = listener.accept() => a,
                    };
                    match accepted {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(server::serve(shared.clone(), machine.clone(), stream));
                        }
                        Err(e) => {
                            tracing::warn!(%machine, error = %e, "ssh accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        Ok(SshSim {
            addrs,
            shared,
            stop,
            tasks,
        })
    }

    /// Where `machine` (a hypervisor or the management server) listens; `None` for system
    /// VMs (reached through their hypervisor) and unknown names.
    pub fn addr(&self, machine: &str) -> Option<SocketAddr> {
        self.addrs.get(machine).copied()
    }

    /// The machines that listen, by name.
    pub fn listening(&self) -> Vec<String> {
        self.addrs.keys().cloned().collect()
    }

    /// `known_hosts` lines for every machine: `[127.0.0.1]:PORT ssh-ed25519 AAAA...` for the
    /// listening hosts, `[<linklocalip>]:3922 ssh-ed25519 AAAA...` for the live system VMs of
    /// the zone as it is now.
    pub fn known_hosts_lines(&self) -> Vec<String> {
        let vms: Vec<(String, String)> = {
            let z = lock(&self.shared.zone);
            z.world()
                .vms
                .iter()
                .filter(|v| {
                    v.live()
                        && !v.linklocalip.is_empty()
                        && (v.vpcid().is_some() || v.systemvmtype().is_some())
                })
                .map(|v| (v.name.clone(), v.linklocalip.clone()))
                .collect()
        };
        let key_text = |machine: &str| {
            let key = self.shared.host_key(machine);
            let text = key
                .public_key()
                .to_openssh()
                .expect("an ed25519 public key encodes");
            let mut words = text.split_whitespace();
            format!(
                "{} {}",
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default()
            )
        };
        let mut lines: Vec<String> = self
            .addrs
            .iter()
            .map(|(m, a)| format!("[{}]:{} {}", a.ip(), a.port(), key_text(m)))
            .collect();
        lines.extend(
            vms.iter()
                .map(|(m, ll)| format!("[{ll}]:{SYSTEM_VM_PORT} {}", key_text(m))),
        );
        lines
    }

    /// The public host key of `machine` (made now if it had none yet).
    pub fn host_key(&self, machine: &str) -> PublicKey {
        self.shared.host_key(machine).public_key().clone()
    }

    /// Gives `machine` a fresh host key, as re-creating a system VM does: sessions opened from
    /// now on present it; open sessions stay. Returns the new public key.
    pub fn new_host_key(&self, machine: &str) -> PublicKey {
        let key = server::new_key();
        lock(&self.shared.keys).insert(machine.to_string(), key.clone());
        key.public_key().clone()
    }

    /// Stops `machine`'s sshd, as killing it would: every session to it (tunnelled ones
    /// included) is disconnected, and new ones are refused from now on (a listening host stops
    /// listening; its hypervisor refuses tunnels to a system VM). Other machines carry on.
    pub fn stop_sshd(&self, machine: &str) {
        self.shared.down.send_modify(|d| {
            d.insert(machine.to_string());
        });
    }

    /// Makes the next command starting with each of `prefixes` (its words joined by spaces,
    /// e.g. `systemctl restart dnsmasq`) fail, once, on whichever machine runs it: exit 1,
    /// `sim: injected failure` on stderr, and nothing done. Later commands, an undo among
    /// them, run normally.
    ///
    /// This replaces the zone's SSH fault rules ([`crate::faults::Faults::ssh`], the ones
    /// `/sim/faults` sets too) with one [`SshFault::fail_once`] rule per prefix; an empty list
    /// clears them.
    pub fn fail_commands(&self, prefixes: Vec<String>) {
        lock(&self.shared.zone).faults_mut().ssh =
            prefixes.into_iter().map(SshFault::fail_once).collect();
    }

    /// How many command lines are running on `machine` now: started, and their channel not
    /// yet ended (by the command finishing, or by the client closing or signalling it). A
    /// line held by a `hang` fault counts until it has run, even once its client is gone.
    pub fn running(&self, machine: &str) -> usize {
        lock(&self.shared.running)
            .get(machine)
            .copied()
            .unwrap_or_default()
    }

    /// SSH connections to `machine` since the start: each is a TCP connection to a listening
    /// host, or a tunnel through its hypervisor to a system VM (a handshake either way).
    pub fn connections(&self, machine: &str) -> usize {
        lock(&self.shared.connections)
            .get(machine)
            .map_or(0, |n| n.0)
    }

    /// SSH connections to `machine` open now.
    pub fn connections_open(&self, machine: &str) -> usize {
        lock(&self.shared.connections)
            .get(machine)
            .map_or(0, |n| n.1)
    }

    /// Every command line sent to `machine`, in order (one a fault stopped included).
    pub fn commands(&self, machine: &str) -> Vec<String> {
        lock(&self.shared.log)
            .get(machine)
            .cloned()
            .unwrap_or_default()
    }

    /// Stops listening and disconnects every session (tunnelled ones included).
    pub fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for SshSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
