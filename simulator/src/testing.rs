//! For the test suites that need something from the machine (root, OpenSSH, the lab's packages,
//! the `cs` Python client): how they say that they did not run.
//!
//! libtest captures what a passing test prints with `eprintln!`, so a suite that skipped looked
//! like a suite that passed. [`skip`] writes straight to the process's standard error, which the
//! harness does not capture, once per test binary, and under `CI=true` fails the test instead:
//! CI can never pass without running them.

use std::io::Write as _;
use std::sync::Once;

/// The one command that installs everything the suites need (Debian, as root).
pub const INSTALL: &str = "sudo bash .ci/install-test-deps";

/// Whether CI asked for every suite to run (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Called by a test that cannot run here: under `CI=true` it panics with `why`; otherwise it
/// prints, once per test binary and past the harness's capture, that `suite` did not run, why,
/// and how to make it run. The caller then returns, and the test passes without testing.
pub fn skip(suite: &str, why: &str) {
    if in_ci() {
        panic!("CI=true, but the {suite} suite cannot run here: {why} (install: {INSTALL})");
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr().lock(),
            "\nSKIPPED: {suite}: its tests did not run ({why}) and report `ok` without testing \
             anything. To run them: {INSTALL} (see docs/testing.md)"
        );
    });
}
