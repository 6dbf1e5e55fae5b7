//! The simulator's signature check against an independent client: the `cs` Python package
//! (PyPI, installed into a venv by `.ci/run`, found through `$REMEDY_CS_PYTHON`) signs real
//! requests to a running simulator. Its GETs and its POST must be accepted; with a wrong
//! secret it must get 401.
//!
//! Under `CI=true` a missing interpreter is a failure, not a skip.
//! (`.ci/install-test-deps` makes the venv in `target/cs-venv`, where this suite finds it.)

use std::path::Path;
use std::process::Command;

use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};

/// The interpreter with `cs`: `$REMEDY_CS_PYTHON`, else the venv `.ci/install-test-deps` makes
/// in the workspace's `target/cs-venv`.
fn python() -> Option<String> {
    if let Ok(p) = std::env::var("REMEDY_CS_PYTHON") {
        if !p.is_empty() {
            return Some(p);
        }
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cs-venv/bin/python");
    if venv.exists() {
        return Some(venv.display().to_string());
    }
    cloudstack_sim::testing::skip(
        "cs_python (the `cs` client)",
        "REMEDY_CS_PYTHON is not set and target/cs-venv does not exist",
    );
    None
}

async fn start() -> Sim {
    Sim::start(SimConfig {
        scenario: Scenario::builtin("healthy").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        secret_key: None,
    })
    .await
    .unwrap()
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/cs_request.py")
        .display()
        .to_string()
}

async fn run(py: &str, sim: &Sim, secret: &str) -> std::process::Output {
    let (py, endpoint, key, secret, script) = (
        py.to_string(),
        sim.endpoint(),
        sim.api_key().to_string(),
        secret.to_string(),
        script(),
    );
    tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args([&script, &endpoint, &key, &secret])
            .output()
            .expect("run python")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cs_signs_requests_the_simulator_accepts() {
    let Some(py) = python() else { return };
    let sim = start().await;
    let out = run(&py, &sim, sim.secret_key()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("zone1"), "{stdout}");
    assert!(stdout.contains("refused with 401"), "{stdout}");
    assert!(stdout.contains("\"value\": \"700 s+1/2*x\""), "{stdout}");
    let seen = sim.requests();
    let methods: Vec<(&str, &str, Option<u16>)> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.command.as_str(), r.status))
        .collect();
    assert_eq!(
        methods,
        vec![
            ("GET", "listZones", Some(200)),
            ("GET", "listConfigurations", Some(200)),
            ("POST", "updateConfiguration", Some(200)),
            ("GET", "listVirtualMachines", Some(401)),
        ]
    );
    let value = sim.with_zone(|z| {
        z.world()
            .settings
            .iter()
            .find(|s| s.name == "network.gc.interval")
            .map(|s| s.value.clone())
    });
    assert_eq!(value.as_deref(), Some("700 s+1/2*x"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cs_with_a_wrong_secret_gets_401() {
    let Some(py) = python() else { return };
    let sim = start().await;
    let out = run(&py, &sim, "not-the-secret").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert_eq!(sim.requests()[0].status, Some(401));
}
