//! Points of no return: what is checked before an irreversible step acts, and what its
//! rollback leaves in place after it did.
//!
//! An irreversible step (destroying a system VM) cannot be undone, so a run must not reach it
//! unless the steps after it can run. Before the step acts, [`check`] looks at every later step
//! that will reach its hosts over SSH after an inventory refresh (the machines the step
//! re-creates): a strict host key policy would refuse the replacement's new key, and a jump
//! host that cannot be reached now will not be reached then either. A failure here fails the
//! node before it acts; the run's earlier changes are undone as usual.
//!
//! Once an irreversible step has changed its target, the changes made before it may have been
//! consumed by it (the new SSVM booted with the setting changed before): [`consumed`] marks
//! them to be left in place, with the reason, instead of undone.

use std::time::Duration;

use crate::inventory::{ConnectionKind, HostKeyPolicy};
use crate::plan::Plan;
use crate::transport::{Access, Action, Transport};

/// How long reaching a jump host may take in the check.
const REACH_TIMEOUT: Duration = Duration::from_secs(20);

/// Before the irreversible step `step` acts: the steps after it that reach hosts over SSH in
/// a later segment (after a `refresh_inventory`), checked for what can be known now.
pub async fn check(plan: &Plan, transport: &dyn Transport, step: usize) -> Result<(), String> {
    let steps = &plan.program.steps;
    let here = plan.segments[step];
    let mut problems = Vec::new();
    let mut jumps: Vec<String> = Vec::new();
    for (i, later) in steps.iter().enumerate().skip(step + 1) {
        if plan.segments[i] <= here || later.on_controller() {
            continue;
        }
        for target in &plan.targets[i] {
            let Some(host) = plan.inventory.host(target) else {
                continue;
            };
            if host.conn.kind != ConnectionKind::Ssh || host.conn.jump.is_empty() {
                continue;
            }
            if host.conn.host_key == HostKeyPolicy::Strict {
                problems.push(format!(
                    "step {} runs on {target} after the inventory is read again; a machine \
                     re-created by {} comes with a new host key, which remedy_host_key_policy: \
                     strict refuses: set accept-new for the system VMs (docs/ssh.md)",
                    later.id, steps[step].id
                ));
            }
            for j in &host.conn.jump {
                if !jumps.contains(j) {
                    jumps.push(j.clone());
                }
            }
        }
    }
    for j in &jumps {
        let Some(jump) = plan.inventory.host(j) else {
            continue;
        };
        if let Err(e) = transport
            .run(jump, &Action::ssh("true"), Access::ReadOnly, REACH_TIMEOUT)
            .await
        {
            problems.push(format!(
                "the jump host {j}, through which the steps after it reach the re-created \
                 machines, cannot be reached now: {e}"
            ));
        }
    }
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not run: {} is irreversible, and what comes after it could not run: {}",
            steps[step].id,
            problems.join("; ")
        ))
    }
}
