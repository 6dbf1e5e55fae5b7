//! `remedy inventory`: what an inventory resolves to, as `--list` JSON, one `--host`'s
//! variables, or the `--graph` of groups. The output's shape is `crate::inventory::show`'s;
//! resolving the inventory is `resolve.rs`'s. `--list` is refused on the embedded simulator,
//! whose zone, ports and key file vanish when remedy exits.

use std::path::PathBuf;

use crate::error::{Error, ExitCode};

use super::output::fail;
use super::resolve::{load_inventory, resolve_loaded};
use crate::inventory::{CloudStackSource, Inventory};

/// `remedy inventory`.
pub(super) async fn run(
    paths: &[PathBuf],
    list: bool,
    host: Option<String>,
    graph: Option<String>,
) -> ExitCode {
    use crate::inventory::show;
    let loaded = match load_inventory(paths) {
        Ok(inv) => inv,
        Err(e) => return fail(&e),
    };
    if list {
        if let Some(message) = embedded_simulator(&loaded) {
            return fail(&Error::invalid(message));
        }
    }
    let inv = match resolve_loaded(loaded, paths).await {
        Ok((inv, _, _)) => inv,
        Err(e) => return fail(&e),
    };
    let text = if list {
        serde_json::to_string_pretty(&show::list(&inv)).unwrap_or_default()
    } else if let Some(name) = host {
        match inv.host(&name) {
            Some(h) => serde_json::to_string_pretty(&show::host_vars(&inv, h)).unwrap_or_default(),
            None => {
                return fail(&Error::invalid(format!(
                    "no host {name:?} in the inventory"
                )))
            }
        }
    } else {
        match show::graph(&inv, graph.as_deref().unwrap_or("all")) {
            Ok(g) => g.trim_end().to_string(),
            Err(e) => return fail(&Error::invalid(e)),
        }
    };
    outln!("{text}");
    ExitCode::Success
}

/// Why `--list` is refused for an inventory on the embedded simulator: Ansible would read the
/// output after remedy exits, when the zone it describes, its SSH ports and its client key are
/// gone.
fn embedded_simulator(inv: &Inventory) -> Option<String> {
    let ep = inv.cloudstack()?;
    let CloudStackSource::Simulator { scenario } = &ep.source else {
        return None;
    };
    Some(format!(
        "--list is refused for an inventory on the embedded simulator \
         (remedy_cloudstack: {{ simulator: ... }}): the zone, its SSH ports and its client key \
         exist only while remedy runs, so a dynamic inventory printed now points at nothing. \
         Start a lasting lab instead: `remedy lab --scenario {scenario} --write-inventory \
         lab-live.yml`, then `remedy inventory -i lab-live.yml --list` (--graph and --host \
         work here, for a look)"
    ))
}
