//! Applying a plan: what `apply --plan` was asked ([`Applying`]), the plan file read and checked
//! as far as it can be without the live inventory ([`Applying::open`], [`Opened`]: whole, the
//! expected id, not expired, files as hashed, parameters as given, approved when required), then
//! against the plan built again from the live inventory ([`Opened::rebuild`],
//! [`SavedPlan::check_inputs`]), and what the run takes from it ([`FromPlan`]).
//!
//! Not here: holding each node to its prediction during the run (`expect.rs`).

use std::path::PathBuf;

use super::*;

impl SavedPlan {
    /// Refusals that need nothing but the file: the expected id, the expiry.
    pub fn check_file(&self, expect_id: Option<&str>, now: jiff::Timestamp) -> Result<(), Error> {
        if let Some(want) = expect_id {
            let want = want.trim().to_ascii_lowercase();
            if want.len() < 12 || !self.id.starts_with(&want) {
                return Err(refused(format!(
                    "this plan's id is {}, not the expected {want} (--expect-id takes the id or at least its first 12 characters)",
                    self.id
                )));
            }
        }
        let expires: jiff::Timestamp = self
            .plan
            .expires_at
            .parse()
            .map_err(|e| refused(format!("the plan's expires_at cannot be read: {e}")))?;
        if now > expires {
            return Err(refused(format!(
                "plan {} expired at {} (made at {}); make a new plan",
                short(&self.id),
                self.plan.expires_at,
                self.plan.created_at
            )));
        }
        Ok(())
    }

    /// The `-e` values to plan with again: the plan's own, with the secret ones from
    /// `secrets` (checked against their hashes). Any other `-e` is refused.
    pub fn params(&self, given: &[(String, String)]) -> Result<Vec<(String, String)>, Error> {
        let p = &self.plan.params;
        let mut out = Vec::new();
        for (name, g) in &p.given {
            match g {
                Given::Value(v) => {
                    if let Some((_, other)) = given.iter().find(|(k, _)| k == name) {
                        if other != v {
                            return Err(refused(format!(
                                "parameter {name}: the plan was made with {name}={v}; -e {name}={other} would apply something else"
                            )));
                        }
                    }
                    out.push((name.clone(), v.clone()));
                }
                Given::SecretSha256(h) => match given.iter().find(|(k, _)| k == name) {
                    Some((_, v)) if secret_hash(&p.salt, name, v) == *h => {
                        out.push((name.clone(), v.clone()))
                    }
                    Some(_) => {
                        return Err(refused(format!(
                            "secret parameter {name} is not the value the plan was made with"
                        )))
                    }
                    None => {
                        return Err(refused(format!(
                            "secret parameter {name} is not stored in the plan: pass it again with -e {name}=..."
                        )))
                    }
                },
            }
        }
        if let Some((k, _)) = given.iter().find(|(k, _)| !p.given.contains_key(k)) {
            return Err(refused(format!(
                "parameter {k} was not given when the plan was made; a plan is applied with its own parameters"
            )));
        }
        Ok(out)
    }

    /// Refusals about the inputs on disk and the plan rebuilt from them: the playbook files,
    /// the inventory files, the parameters.
    pub fn check_inputs(&self, plan: &Plan, inventory: &[PathBuf]) -> Result<(), Error> {
        let body = &self.plan;
        let now: BTreeMap<String, &String> = plan
            .program
            .files
            .iter()
            .map(|(p, h)| (absolute(p), h))
            .collect();
        for f in &body.playbook.files {
            match now.get(&f.path) {
                Some(h) if **h == f.sha256 => {}
                Some(h) => {
                    return Err(refused(format!(
                        "playbook file {} changed since the plan was made (sha256 {} then, {} now)",
                        f.path,
                        short(&f.sha256),
                        short(h)
                    )))
                }
                None => {
                    return Err(refused(format!(
                        "playbook file {} is no longer part of the playbook",
                        f.path
                    )))
                }
            }
        }
        if let Some(extra) = now
            .keys()
            .find(|p| !body.playbook.files.iter().any(|f| &f.path == *p))
        {
            return Err(refused(format!(
                "the playbook now also reads {extra}, which the plan did not"
            )));
        }
        let sources: Vec<String> = inventory.iter().map(|p| absolute(p)).collect();
        if sources != body.inventory.sources {
            return Err(refused(format!(
                "the plan was made with inventory {}; this run names {}",
                body.inventory.sources.join(", "),
                sources.join(", ")
            )));
        }
        let files = inventory_files_sha256(inventory)?;
        if files != body.inventory.files_sha256 {
            return Err(refused(format!(
                "the inventory files ({}) changed since the plan was made (sha256 {} then, {} now)",
                sources.join(", "),
                short(&body.inventory.files_sha256),
                short(&files)
            )));
        }
        if resolved_sha256(plan, &body.params.salt) != body.params.sha256 {
            return Err(refused(
                "the resolved parameters differ from the plan's (sha256), though the values given match: a default changed?",
            ));
        }
        if plan.limit != body.limit {
            return Err(refused("the --limit differs from the plan's"));
        }
        Ok(())
    }
}

/// What `apply --plan` was asked.
#[derive(Debug, Clone)]
pub struct Applying {
    pub file: PathBuf,
    pub expect_id: Option<String>,
    /// `-e`: only the plan's secret parameters (or the same values again).
    pub extra: Vec<(String, String)>,
    /// `-i`: empty for the plan's own.
    pub inventory: Vec<PathBuf>,
    pub on_drift: OnDrift,
    pub require_approval: bool,
    pub four_eyes: bool,
    pub approval_key: Option<PathBuf>,
    pub audit: PathBuf,
}

/// A plan file read and checked as far as it can be without the live inventory: whole,
/// expected, not expired, playbook and inventory files as hashed, parameters as given,
/// approved when approval is required.
#[derive(Debug, Clone)]
pub struct Opened {
    pub saved: SavedPlan,
    pub inventory: Vec<PathBuf>,
    pub extra: Vec<(String, String)>,
    pub link: PlanLink,
}

impl Applying {
    pub fn open(&self, now: jiff::Timestamp) -> Result<Opened, Error> {
        let saved = SavedPlan::read(&self.file)?;
        saved.check_file(self.expect_id.as_deref(), now)?;
        // The files as they are on disk, before anything is parsed: an edited playbook is a
        // refusal, not a syntax error.
        for f in &saved.plan.playbook.files {
            let now = std::fs::read(&f.path)
                .map(|b| hex(&Sha256::digest(b)))
                .map_err(|e| {
                    refused(format!(
                        "playbook file {} cannot be read ({e}); the plan was made from it",
                        f.path
                    ))
                })?;
            if now != f.sha256 {
                return Err(refused(format!(
                    "playbook file {} changed since the plan was made (sha256 {} then, {} now)",
                    f.path,
                    short(&f.sha256),
                    short(&now)
                )));
            }
        }
        let inventory: Vec<PathBuf> = if self.inventory.is_empty() {
            saved
                .plan
                .inventory
                .sources
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            self.inventory.clone()
        };
        let sources: Vec<String> = inventory.iter().map(|p| absolute(p)).collect();
        if sources != saved.plan.inventory.sources {
            return Err(refused(format!(
                "the plan was made with inventory {}; this run names {}",
                saved.plan.inventory.sources.join(", "),
                sources.join(", ")
            )));
        }
        let files = inventory_files_sha256(&inventory).map_err(|e| {
            refused(format!(
                "the plan's inventory cannot be read: {}",
                e.render(false).trim_end()
            ))
        })?;
        if files != saved.plan.inventory.files_sha256 {
            return Err(refused(format!(
                "the inventory files ({}) changed since the plan was made (sha256 {} then, {} now)",
                sources.join(", "),
                short(&saved.plan.inventory.files_sha256),
                short(&files)
            )));
        }
        if let Some(run) = approval::applied_in(&self.audit, &saved.id) {
            return Err(refused(format!(
                "plan {} was applied already (run {run} changed things); a plan is applied once: make a new one",
                short(&saved.id)
            )));
        }
        let extra = saved.params(&self.extra)?;
        let key = approval::Key::load(self.approval_key.as_deref())?;
        let approvals = if self.require_approval {
            let found = approval::find(&self.audit, &saved.id, key.as_ref())?;
            approval::require(&saved, found, self.four_eyes, &self.audit, key.is_some())?
        } else {
            // Recorded when there are any; not required.
            approval::find(&self.audit, &saved.id, key.as_ref()).unwrap_or_default()
        };
        let link = saved.link(&self.file, approvals);
        Ok(Opened {
            saved,
            inventory,
            extra,
            link,
        })
    }
}

impl Opened {
    /// The plan built again from the plan's playbook, the inventory as resolved now, and the
    /// plan's parameters, limit and tags; refused where it does not match the file.
    pub fn rebuild(&self, inventory: crate::inventory::Inventory) -> Result<Plan, Error> {
        let body = &self.saved.plan;
        // (The files are as hashed, so a failure here is the inventory's: refused.)
        let cannot = |d: crate::error::Diagnostics| {
            refused(format!(
                "the plan cannot be built again: {}",
                Error::Invalid(d).render(false).trim_end()
            ))
        };
        let program = crate::playbook::load(&body.playbook.path)
            .and_then(|l| crate::playbook::compile(&l))
            .map_err(cannot)?;
        let opts = crate::plan::Options {
            extra: self.extra.clone(),
            limit: body.limit.clone(),
            tags: body.tags.clone(),
            validating: false,
        };
        let plan = crate::plan::build(program, inventory, &opts).map_err(cannot)?;
        self.saved.check_inputs(&plan, &self.inventory)?;
        // Each target reached as it was when the plan was made (a target gone is a drift).
        for t in &body.targets {
            if t.host == crate::plan::CONTROLLER {
                continue;
            }
            if let Some(now) = plan.host(&t.host).map(crate::inventory::show::reach) {
                if now != t.reached {
                    return Err(refused(format!(
                        "{} is reached as {now} now; the plan was made when it was reached as {}",
                        t.host, t.reached
                    )));
                }
            }
        }
        Ok(plan)
    }

    pub fn from_plan(&self, on_drift: OnDrift) -> FromPlan {
        FromPlan {
            saved: self.saved.clone(),
            link: self.link.clone(),
            on_drift,
        }
    }
}

/// A saved plan being applied: checked against its inputs already (`SavedPlan::check_*`).
#[derive(Debug, Clone)]
pub struct FromPlan {
    pub saved: SavedPlan,
    pub link: PlanLink,
    pub on_drift: OnDrift,
}
