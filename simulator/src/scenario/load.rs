//! Reading scenarios: from a file, from text, or one of the shipped `scenarios/*.yml` by name.
//!
//! Owns the errors a scenario file can have: YAML and unknown keys (with file:line:column),
//! values outside their words (`up`/`down`, service states, host states, octal modes), and,
//! by building a zone from it once, names of settings, hosts or machines that do not exist.
//! The types themselves are `model.rs`.

use std::path::Path;

use super::model::Scenario;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

const BUILTIN: [(&str, &str); 11] = [
    ("healthy", include_str!("../../scenarios/healthy.yml")),
    (
        "vr-backup-loop",
        include_str!("../../scenarios/vr-backup-loop.yml"),
    ),
    (
        "ssvm-broken",
        include_str!("../../scenarios/ssvm-broken.yml"),
    ),
    (
        "dnsmasq-dead",
        include_str!("../../scenarios/dnsmasq-dead.yml"),
    ),
    (
        "ovs-port-missing",
        include_str!("../../scenarios/ovs-port-missing.yml"),
    ),
    (
        "catalina-perms",
        include_str!("../../scenarios/catalina-perms.yml"),
    ),
    (
        "vr-keepalived-lost",
        include_str!("../../scenarios/vr-keepalived-lost.yml"),
    ),
    (
        "host-maintenance-firstfit",
        include_str!("../../scenarios/host-maintenance-firstfit.yml"),
    ),
    ("stale-nics", include_str!("../../scenarios/stale-nics.yml")),
    ("job-triage", include_str!("../../scenarios/job-triage.yml")),
    (
        "agent-disconnected",
        include_str!("../../scenarios/agent-disconnected.yml"),
    ),
];

impl Scenario {
    /// The names of the scenarios shipped with the simulator.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A shipped scenario by name.
    pub fn builtin(name: &str) -> Option<Scenario> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(n, text)| {
            Scenario::parse(text, &format!("scenarios/{n}.yml"))
                .unwrap_or_else(|e| panic!("shipped scenario {n} is invalid: {e}"))
        })
    }

    /// A scenario file; errors name the file (and line when known).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            ScenarioError(format!("{origin}{at}: {e}"))
        })?;
        if s.name.trim().is_empty() {
            return Err(ScenarioError(format!("{origin}: name is empty")));
        }
        for (host, state) in &s.host_states {
            if !HOST_STATES.contains(&state.as_str()) {
                return Err(ScenarioError(format!(
                    "{origin}: host_states.{host}: expected one of {}",
                    HOST_STATES.join(", ")
                )));
            }
        }
        for (machine, g) in &s.guest {
            for (link, state) in &g.links {
                if state != "up" && state != "down" {
                    return Err(ScenarioError(format!(
                        "{origin}: guest.{machine}.links.{link}: expected up or down"
                    )));
                }
            }
            for (svc, state) in &g.services {
                if !["active", "inactive", "failed"].contains(&state.as_str()) {
                    return Err(ScenarioError(format!(
                        "{origin}: guest.{machine}.services.{svc}: expected active, inactive or failed"
                    )));
                }
            }
            for (path, f) in &g.files {
                if let Some(mode) = &f.mode {
                    if u32::from_str_radix(mode, 8).is_err() {
                        return Err(ScenarioError(format!(
                            "{origin}: guest.{machine}.files.{path}.mode: expected octal text such as \"0644\""
                        )));
                    }
                }
            }
        }
        crate::zone::Zone::try_new(&s).map_err(|e| ScenarioError(format!("{origin}: {e}")))?;
        Ok(s)
    }
}

/// Host states a scenario may give (`com.cloud.host.Status`).
const HOST_STATES: [&str; 6] = ["Up", "Down", "Disconnected", "Alert", "Connecting", "Error"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        for name in Scenario::builtin_names() {
            let s = Scenario::builtin(name).unwrap();
            assert_eq!(s.name, name);
            assert!(!s.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let e = Scenario::parse("name: x\nvpc: []\n", "f.yml").unwrap_err();
        assert!(e.0.starts_with("f.yml:2:"), "{e}");
        assert!(e.0.contains("unknown field `vpc`"), "{e}");
        let e = Scenario::parse(
            "name: x\nguest: { r1: { links: { eth1: sideways } } }\n",
            "f.yml",
        )
        .unwrap_err();
        assert!(e.0.contains("guest.r1.links.eth1"), "{e}");
    }

    #[test]
    fn names_that_do_not_exist_are_errors() {
        for (text, want) in [
            (
                "name: x\nguest: { r-999-VM: { links: { eth1: up } } }\n",
                "no machine named r-999-VM",
            ),
            (
                "name: x\nsettings: { no.such: 1 }\n",
                "unknown setting no.such",
            ),
            ("name: x\nhost_states: { kvm09: Down }\n", "no host kvm09"),
            (
                "name: x\nvpcs: [{ name: v, router_hosts: [kvm01, kvm07] }]\n",
                "vpcs.v.router_hosts: no host kvm07",
            ),
            ("name: x\nguest_vlan: \"5\"\n", "guest_vlan"),
            (
                "name: x\nguest: { kvm01: { ovs_missing_ports: { cloudbr1: [vnet77] } } }\n",
                "has no port vnet77",
            ),
        ] {
            let e = Scenario::parse(text, "f.yml").unwrap_err();
            assert!(e.0.starts_with("f.yml: "), "{e}");
            assert!(e.0.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn routers_run_on_the_hypervisors_named() {
        let s = Scenario::parse(
            "name: x\nhosts: [kvm01, kvm02, kvm03]\n\
             vpcs: [{ name: a, tiers: [t] }, { name: b, tiers: [t], router_hosts: [kvm03] }]\n",
            "f.yml",
        )
        .unwrap();
        let zone = crate::zone::Zone::new(&s);
        let w = zone.world();
        let hosts_of = |vpc: &str| -> Vec<String> {
            let id = w.vpcs.iter().find(|v| v.name == vpc).unwrap().id.clone();
            w.vms
                .iter()
                .filter(|v| v.vpcid() == Some(id.as_str()))
                .map(|v| w.host(&v.hostid).unwrap().name.clone())
                .collect()
        };
        assert_eq!(hosts_of("a"), ["kvm01", "kvm02"]);
        assert_eq!(hosts_of("b"), ["kvm03", "kvm03"]);
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("cs-sim-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yml");
        std::fs::write(&path, "name: bad\nvpcs:\n  - { name: v, tierz: [a] }\n").unwrap();
        let e = Scenario::load(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.0.starts_with(&format!("{}:3:", path.display())), "{e}");
        assert!(e.0.contains("unknown field `tierz`"), "{e}");
    }
}
