//! The inventory a command names, loaded and resolved: the files read (an unreadable one is
//! invalid input), then the hosts the CloudStack source adds, read from the zone through the API
//! transport the run goes on using; and the re-reader a plan with `refresh_inventory` steps
//! needs. Shared by `apply`, `plan`, `exec`, `validate`, `rollback`, `inventory` and `api`; the
//! inventory's own rules are `crate::inventory`'s and `crate::cloudstack::inventory`'s.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Error;
use crate::inventory::Inventory;
use crate::plan;

/// The inventory files at `paths`, without the hosts a dynamic source adds.
pub(super) fn load_inventory(paths: &[PathBuf]) -> Result<Inventory, Error> {
    let inv = Inventory::load(paths).map_err(|e| Error::invalid(e.to_string()))?;
    check_lab_scenario(&inv)?;
    Ok(inv)
}

/// `REMEDY_LAB_SCENARIO` (already in place of the inventory's scenario, see
/// [`crate::inventory::LAB_SCENARIO_ENV`]): a scenario that does not exist is invalid input,
/// naming the shipped ones; otherwise stderr says which scenario the embedded simulator runs,
/// or that the variable changes nothing for an inventory without one.
fn check_lab_scenario(inv: &Inventory) -> Result<(), Error> {
    use crate::inventory::{CloudStackSource, LAB_SCENARIO_ENV};
    let Some(wanted) = crate::inventory::lab_scenario_override() else {
        return Ok(());
    };
    match inv.cloudstack().map(|ep| &ep.source) {
        Some(CloudStackSource::Simulator { scenario }) => {
            crate::cloudstack::scenario(scenario)
                .map_err(|e| Error::invalid(format!("{LAB_SCENARIO_ENV}: {e}")))?;
            eprintln!(
                "remedy: the embedded simulator runs scenario {scenario} ({LAB_SCENARIO_ENV}, \
                 in place of the inventory's simulator.scenario)"
            );
        }
        _ => eprintln!(
            "remedy: {LAB_SCENARIO_ENV}={wanted} ignored: the inventory does not start the \
             embedded simulator (remedy_cloudstack.simulator)"
        ),
    }
    Ok(())
}

/// A resolved inventory: the hosts, the API transport that read the zone (the run keeps using
/// it), and what the CloudStack source read, for the audit log.
pub(super) type Resolved = (
    Inventory,
    Arc<crate::transport::api::ApiTransport>,
    Option<serde_json::Value>,
);

/// Loads the inventory and, when it declares `remedy_cloudstack_inventory`, adds the zone's
/// machines read through the returned API transport (which the run then keeps using: with the
/// embedded simulator, it is the same zone).
pub(super) async fn resolve_inventory(paths: &[PathBuf]) -> Result<Resolved, Error> {
    resolve_loaded(load_inventory(paths)?, paths).await
}

/// [`resolve_inventory`] for an inventory already loaded from `paths`.
pub(super) async fn resolve_loaded(inv: Inventory, paths: &[PathBuf]) -> Result<Resolved, Error> {
    let api = Arc::new(crate::transport::api::ApiTransport::new(
        inv.cloudstack().cloned(),
        crate::cloudstack::Options::default(),
    ));
    let (inv, generated) = crate::cloudstack::inventory::resolve(inv, paths, &api)
        .await
        .map_err(Error::Other)?;
    let record = generated.as_ref().map(|g| g.record());
    for skipped in generated.map(|g| g.skipped).unwrap_or_default() {
        eprintln!("inventory: left out {skipped}");
    }
    Ok((inv, api, record))
}

/// The inventory re-reader for a plan with `refresh_inventory` steps.
pub(super) fn reloader(
    plan: &plan::Plan,
    paths: &[PathBuf],
    api: &Arc<crate::transport::api::ApiTransport>,
) -> Result<Option<Arc<crate::cloudstack::inventory::Reloader>>, Error> {
    if plan.refreshes.is_empty() {
        return Ok(None);
    }
    crate::cloudstack::inventory::Reloader::new(paths, api.clone())
        .map(|r| r.map(Arc::new))
        .map_err(Error::Other)
}
