//! `remedy inventory`: what an inventory resolves to, as `--list` JSON, one `--host`'s
//! variables, or the `--graph` of groups. The output's shape is `crate::inventory::show`'s;
//! resolving the inventory is `resolve.rs`'s.

use std::path::PathBuf;

use crate::error::{Error, ExitCode};

use super::output::fail;
use super::resolve::resolve_inventory;

/// `remedy inventory`.
pub(super) async fn run(
    paths: &[PathBuf],
    list: bool,
    host: Option<String>,
    graph: Option<String>,
) -> ExitCode {
    use crate::inventory::show;
    let inv = match resolve_inventory(paths).await {
        Ok((inv, _, _)) => inv,
        Err(e) => return fail(&e),
    };
    let text = if list {
        serde_json::to_string_pretty(&show::list(&inv)).unwrap_or_default()
    } else if let Some(name) = host {
        match inv.host(&name) {
            Some(h) => serde_json::to_string_pretty(&show::host_vars(h)).unwrap_or_default(),
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
