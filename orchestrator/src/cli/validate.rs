//! `remedy validate`: checks playbooks without running anything, each one `ok` or `invalid`
//! with its diagnostics; with an inventory, targets and host variables too; with `--strict`,
//! every `| raw` is refused. The checks are `crate::plan::validate`'s.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::error::ExitCode;
use crate::plan;

use super::output::fail;
use super::playbooks::{found_playbooks, no_playbooks_found};
use super::resolve::resolve_inventory;

/// `remedy validate`; with an inventory that declares the CloudStack source, the zone is read
/// so that targets such as `routers` resolve as they would in a run. `strict` also refuses
/// every use of the `raw` filter.
pub(super) async fn run(names: Vec<String>, inventory: &[PathBuf], strict: bool) -> ExitCode {
    let inv = if inventory.is_empty() {
        None
    } else {
        match resolve_inventory(inventory).await {
            Ok((i, _, _)) => Some(i),
            Err(e) => return fail(&e),
        }
    };
    let names = if names.is_empty() {
        found_playbooks()
    } else {
        names
    };
    if names.is_empty() {
        return fail(&no_playbooks_found("validate"));
    }
    let mut worst = ExitCode::Success;
    for n in &names {
        let checked = plan::validate(n, inv.as_ref()).and_then(|p| {
            let raw = p.templates.raw_uses();
            if strict && !raw.is_empty() {
                return Err(crate::error::Diagnostics(raw.to_vec()));
            }
            Ok(p)
        });
        match checked {
            Ok(p) => outln!("ok       {n} ({}: {} steps)", p.name, p.steps.len()),
            Err(d) => {
                outln!("invalid  {n}");
                eprint!("{}", d.render(std::io::stderr().is_terminal()));
                worst = ExitCode::InvalidInput;
            }
        }
    }
    worst
}
