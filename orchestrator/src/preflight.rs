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
use crate::runner::Ctx;
use crate::scheduler::Done;
use crate::transport::{Access, Action};

/// How long reaching a jump host may take in the check.
const REACH_TIMEOUT: Duration = Duration::from_secs(20);

/// Before the irreversible step `step` acts: the steps after it that reach hosts over SSH in
/// a later segment (after a `refresh_inventory`), checked for what can be known now.
pub async fn check(cx: &Ctx, step: usize) -> Result<(), String> {
    let plan = &cx.plan;
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
        if let Err(e) = cx
            .transport
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

/// Marks the changes that a later change in `done` (in completion order; one that may have
/// happened counts) put to use, so that they are left in place, not undone:
/// - everything completed before the last irreversible change (it may have consumed any of
///   them: a new SSVM boots with the setting changed before);
/// - the steps a later change names in its `consumes:` (the guest VLAN range the tiers now
///   hold, once restartVPC has implemented them).
pub fn consumed(done: &mut [Done]) {
    // An irreversible step that changed, or may have (killed while it ran, its reply lost),
    // counts as taken.
    if let Some(last) = done
        .iter()
        .rposition(|d| d.irreversible.is_some() && d.undo.is_none())
    {
        let by = format!("the irreversible step {}", done[last].step);
        for d in &mut done[..last] {
            if d.consumed_by.is_none() && d.irreversible.is_none() {
                d.consumed_by = Some(by.clone());
            }
        }
    }
    for i in (0..done.len()).rev() {
        if done[i].consumes.is_empty() {
            continue;
        }
        let (earlier, rest) = done.split_at_mut(i);
        let by = &rest[0];
        for d in earlier {
            if d.consumed_by.is_none() && by.consumes.contains(&d.step) {
                d.consumed_by = Some(by.step.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::UndoRecord;

    fn done(step: &str, irreversible: bool, consumes: &[&str]) -> Done {
        Done {
            step: step.into(),
            target: "localhost".into(),
            undo: (!irreversible).then(|| UndoRecord {
                actions: Vec::new(),
                verify: None,
                check: None,
            }),
            irreversible: irreversible.then(|| "gone".to_string()),
            certain: true,
            consumes: consumes.iter().map(|s| s.to_string()).collect(),
            api_command: None,
            consumed_by: None,
            settles_by: None,
        }
    }

    fn by(list: &[Done]) -> Vec<Option<&str>> {
        list.iter().map(|d| d.consumed_by.as_deref()).collect()
    }

    #[test]
    fn a_step_consumes_only_what_it_names_and_only_what_came_before() {
        let mut list = vec![
            done("range", false, &[]),
            done("link", false, &[]),
            done("implement", false, &["range", "later"]),
            done("later", false, &[]),
        ];
        consumed(&mut list);
        assert_eq!(by(&list), [Some("implement"), None, None, None]);
    }

    #[test]
    fn an_irreversible_step_consumes_everything_before_it() {
        let mut list = vec![
            done("setting", false, &[]),
            done("destroy", true, &[]),
            done("after", false, &[]),
        ];
        consumed(&mut list);
        assert_eq!(
            by(&list),
            [Some("the irreversible step destroy"), None, None]
        );
        // not taken (it has an undo record: it did not run): nothing consumed
        let mut list = vec![done("setting", false, &[]), done("destroy", false, &[])];
        list[1].irreversible = Some("gone".into());
        consumed(&mut list);
        assert_eq!(by(&list), [None, None]);
    }
}
