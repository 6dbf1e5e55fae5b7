//! A hypervisor's CloudStack agent and the host state the management server shows for it
//! (`listHosts state`), changing over the zone's clock.
//!
//! - `systemctl stop cloudstack-agent` (or `service cloudstack-agent stop`): the host is
//!   `Disconnected` at once (the agent closes its connection).
//! - `systemctl restart cloudstack-agent`, or `start` of a stopped or failed agent: the host is
//!   `Disconnected` at once, `Connecting` half a job duration later, and `Up` two job
//!   durations after the command (the scenario's `job_ms`, or the `job_ms` fault; 1.5 s
//!   by default: Connecting after 0.75 s, Up after 3 s). A `start` of an agent already
//!   running changes nothing.
//! - The fault `agent_stays_down: [kvm02]` keeps the named hosts from coming back: they show
//!   `Connecting`, then `Disconnected` again, and the agent service ends `failed` (it could
//!   not register and exited), as an agent with a broken configuration does.
//!
//! The SSH side reports agent commands with [`Zone::agent_command`]; the timers are the
//! zone's own (`jobs.rs`), fired in time order by [`Zone::advance`].

use super::guest::ServiceState;
use super::jobs::{Change, Timer};
use super::Zone;

/// The agent's systemd unit on a KVM host.
pub const AGENT: &str = "cloudstack-agent";

impl Zone {
    /// Tells the zone that `verb` (`start`, `restart`, `stop`, ...) was run on the agent of
    /// `machine`, which was `was_active` before: a hypervisor's API state follows (see the
    /// module doc). Other machines and verbs change nothing.
    pub fn agent_command(&mut self, machine: &str, verb: &str, was_active: bool) {
        self.touch();
        let Some(host) = self.world.hosts.iter_mut().find(|h| h.name == machine) else {
            return;
        };
        let (start, stop) = match verb {
            "restart" | "force-reload" => (true, false),
            "try-restart" => (was_active, false),
            "start" => (!was_active, false),
            "stop" => (false, true),
            _ => (false, false),
        };
        if !(start || stop) {
            return;
        }
        host.state = "Disconnected".into();
        if stop {
            return;
        }
        let name = host.name.clone();
        let step = self.faults.job_ms.unwrap_or(self.world.job_ms);
        let ms = |n: u64| jiff::SignedDuration::from_millis(i64::try_from(n).unwrap_or(i64::MAX));
        self.timers.push(Timer {
            due: self.clock + ms(step / 2),
            change: Change::AgentConnecting { host: name.clone() },
        });
        self.timers.push(Timer {
            due: self.clock + ms(step * 2),
            change: Change::AgentConnected { host: name },
        });
    }

    /// The agent is seen connecting, if it still runs.
    pub(super) fn agent_connecting(&mut self, name: &str) {
        if let Some(h) = self.world.hosts.iter_mut().find(|h| h.name == name) {
            if h.guest.active(AGENT) {
                h.state = "Connecting".into();
            }
        }
    }

    /// The agent has connected (Up), or under `agent_stays_down` failed (Disconnected, the
    /// service `failed`).
    pub(super) fn agent_connected(&mut self, name: &str) {
        let stays_down = self.faults.agent_stays_down.iter().any(|h| h == name);
        let Some(h) = self.world.hosts.iter_mut().find(|h| h.name == name) else {
            return;
        };
        if !h.guest.active(AGENT) {
            return;
        }
        if stays_down {
            h.state = "Disconnected".into();
            h.guest.set_service(AGENT, ServiceState::Failed);
        } else {
            h.state = "Up".into();
        }
    }
}
