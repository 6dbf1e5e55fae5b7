//! STUB — being replaced. Contract used by server.rs and the CLI: keep these signatures.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::faults::Faults;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub faults: Faults,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

impl Scenario {
    /// The names of the scenarios shipped with the simulator.
    pub fn builtin_names() -> Vec<&'static str> {
        vec!["healthy"]
    }
    /// A shipped scenario by name.
    pub fn builtin(name: &str) -> Option<Scenario> {
        (name == "healthy").then(|| Scenario {
            name: "healthy".into(),
            ..Default::default()
        })
    }
    /// A scenario file; errors name the file (and line when known).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        Err(ScenarioError(format!("{}: not implemented", path.display())))
    }
}
