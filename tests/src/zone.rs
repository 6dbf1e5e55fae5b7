//! The embedded simulated zone as the CLI meets it: an inventory that starts it and declares
//! the CloudStack inventory source, the API transport that reads it, and what a run needs to
//! go through the same transport (router, refresh). For the end-to-end tests of whole
//! playbooks against the zone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloudstack_sim::faults::Faults;
use cloudstack_sim::server::Sim;
use remedy::app::make_plan as make;
use remedy::app::RunOptions;
use remedy::cloudstack::inventory::{resolve, Reloader};
use remedy::inventory::Inventory;
use remedy::plan::{build, Plan};
use remedy::planfile::{Applying, Making, OnDrift, SavedPlan};
use remedy::scheduler::Summary;
use remedy::transport::api::ApiTransport;
use remedy::transport::route::Router;

use crate::write;

/// One embedded zone seeded from a scenario, and the files a run needs.
pub struct ApiZone {
    pub dir: tempfile::TempDir,
    /// The inventory file: `remedy_cloudstack: { simulator: ... }` and the inventory source.
    pub inventory: PathBuf,
    pub api: Arc<ApiTransport>,
    pub conn: Arc<remedy::cloudstack::Connection>,
}

impl ApiZone {
    /// The zone, with its machines as inventory hosts reached over the simulator's SSH, and
    /// `faults` set (jobs take 100 ms unless they say otherwise).
    pub async fn start(scenario: &str, faults: Faults) -> ApiZone {
        let dir = tempfile::tempdir().unwrap();
        let inventory = write(
            dir.path(),
            "zone.yml",
            &format!(
                "all:\n  vars:\n    remedy_cloudstack:\n      simulator: {{ scenario: {scenario} }}\n    \
                 remedy_cloudstack_inventory: {{ system_vm_access: jump-host-ssh }}\n"
            ),
        );
        let files = Inventory::load(std::slice::from_ref(&inventory)).unwrap();
        let api = Arc::new(ApiTransport::new(
            files.cloudstack().cloned(),
            remedy::cloudstack::Options::default(),
        ));
        let conn = api.connection().await.expect("the embedded zone starts");
        conn.simulator.as_ref().unwrap().set_faults(Faults {
            job_ms: faults.job_ms.or(Some(100)),
            ..faults
        });
        ApiZone {
            dir,
            inventory,
            api,
            conn,
        }
    }

    pub fn sim(&self) -> &Sim {
        self.conn.simulator.as_ref().expect("embedded simulator")
    }

    /// The simulated machines' SSH side.
    pub fn ssh(&self) -> &cloudstack_sim::ssh::SshSim {
        &self
            .conn
            .simulator_ssh
            .as_ref()
            .expect("simulated SSH")
            .hosts
    }

    /// The zone's objects (jobs left out: a failed job is a record, not a change).
    pub fn world(&self) -> serde_json::Value {
        self.sim().with_zone(|z| z.snapshot()["world"].clone())
    }

    /// Every command line the simulated machines ran, as (machine, line).
    pub fn ssh_commands(&self) -> Vec<(String, String)> {
        let w = self.world();
        let mut names: Vec<String> = vec![w["mgmt"]["name"].as_str().unwrap().to_string()];
        for key in ["vms", "hosts"] {
            for m in w[key].as_array().unwrap() {
                names.push(m["name"].as_str().unwrap().to_string());
            }
        }
        names
            .into_iter()
            .flat_map(|m| {
                let lines = self.ssh().commands(&m);
                lines.into_iter().map(move |c| (m.clone(), c))
            })
            .collect()
    }

    /// `remedy plan -o FILE` for `playbook` against the zone as it is now: the plan file
    /// (`None` when the dry-run failed) and the dry-run's summary.
    pub async fn make_plan(
        &self,
        playbook: &Path,
        params: &[(&str, &str)],
        file: &Path,
        valid_for: std::time::Duration,
    ) -> (Option<SavedPlan>, Summary) {
        let plan = self.plan(playbook, params).await;
        let router = self.router(&plan);
        let extra: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let inventory = [self.inventory.clone()];
        let making = Making {
            playbook_path: playbook,
            inventory: &inventory,
            extra: &extra,
            tags: &[],
            valid_for,
        };
        let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
        let (_, summary, saved) = make(
            plan,
            router,
            self.run_options(true),
            &making,
            Some(file),
            cancel,
        )
        .await
        .expect("remedy plan");
        (saved, summary)
    }

    /// What `apply --plan` asks, with nothing optional: the plan's own inventory, this
    /// zone's audit log.
    pub fn applying(&self, file: &Path) -> Applying {
        Applying {
            file: file.to_path_buf(),
            expect_id: None,
            extra: Vec::new(),
            inventory: Vec::new(),
            on_drift: OnDrift::Abort,
            require_approval: false,
            four_eyes: false,
            approval_key: None,
            audit: self.audit(),
        }
    }

    /// `remedy apply --plan` as the CLI runs it, at time `now`, through this zone's API
    /// connection. A refusal before the run is the `Err`.
    pub async fn apply_plan(
        &self,
        a: &Applying,
        now: jiff::Timestamp,
    ) -> Result<Summary, remedy::error::Error> {
        let opened = a.open(now)?;
        let files = Inventory::load(&opened.inventory).unwrap();
        let (inv, _) = resolve(files, &opened.inventory, &self.api).await.unwrap();
        let plan = opened.rebuild(inv)?;
        let router = self.router(&plan);
        let mut opts = self.run_options(false);
        opts.allow_irreversible = false;
        opts.from_plan = Some(Arc::new(opened.from_plan(a.on_drift)));
        let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
        let (_, summary) = remedy::app::execute(plan, router, opts, None, cancel).await?;
        Ok(summary)
    }

    /// The API requests so far that may have changed the zone.
    pub fn mutating_requests(&self) -> Vec<String> {
        crate::mutating_requests(self.sim())
    }

    pub fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn audit_verifies(&self) {
        remedy::audit::verify(&self.audit()).expect("the audit log verifies");
    }

    /// `playbook` planned against the inventory as the zone's API says it is now (each run
    /// reads it, as the CLI does).
    pub async fn plan(&self, playbook: &Path, params: &[(&str, &str)]) -> Plan {
        let paths = std::slice::from_ref(&self.inventory);
        let files = Inventory::load(paths).unwrap();
        let (inv, generated) = resolve(files, paths, &self.api).await.unwrap();
        assert!(generated.is_some(), "the inventory source was read");
        let loaded = remedy::playbook::load(playbook.to_str().unwrap())
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        let program =
            remedy::playbook::compile(&loaded).unwrap_or_else(|d| panic!("{}", d.render(false)));
        build(program, inv, &crate::params(params))
            .unwrap_or_else(|d| panic!("{}", d.render(false)))
    }

    /// The transport for a run of `plan`, through this zone's API connection.
    pub fn router(&self, plan: &Plan) -> Arc<Router> {
        Arc::new(Router::with_api(&plan.inventory, self.api.clone()))
    }

    /// Run options as `apply` sets them, irreversible steps allowed, the inventory read again
    /// where a playbook asks.
    pub fn run_options(&self, dry_run: bool) -> RunOptions {
        RunOptions {
            dry_run,
            allow_irreversible: true,
            audit_log: Some(self.audit()),
            reload: Reloader::new(std::slice::from_ref(&self.inventory), self.api.clone())
                .unwrap()
                .map(Arc::new),
            ..RunOptions::default()
        }
    }
}

/// The Guest physical network's VLAN range, as the zone has it.
pub fn guest_vlan(world: &serde_json::Value) -> String {
    world["physnets"][0]["vlan"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Per running router: (name, eth1 up, keepalived active, keepalived.conf present).
pub fn router_states(world: &serde_json::Value) -> Vec<(String, bool, bool, bool)> {
    world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"]["type"] == "router" && v["state"] == "Running")
        .map(|v| {
            let g = &v["guest"];
            (
                v["name"].as_str().unwrap().to_string(),
                g["links"]["eth1"]["up"].as_bool().unwrap_or(false),
                g["services"]["keepalived"]["state"] == "active",
                g["files"].get("/etc/keepalived/keepalived.conf").is_some(),
            )
        })
        .collect()
}
