//! Shell quoting, proven with real shells: for generated hostile values, in each place a
//! template can put a value (bare, inside '...', inside "...", glued to text, inside `$(...)`),
//! the rendered command run by `sh -c` and `bash -c` prints exactly the value's bytes.
//!
//! Values are built by proptest from the pieces that break naive quoting: both quotes, `$(...)`,
//! backticks, `$HOME`, `;|&<>`, newlines, backslashes, globs, `~`, `#`, `!`, `=`, leading dashes,
//! reserved words, unicode, any other character, and very long strings. A value holding a NUL
//! byte is refused when rendering. 256 cases per place by default (`PROPTEST_CASES` overrides).
//!
//! Also here: a fixed sample through the local transport (`/bin/sh -c`, as
//! `ansible_connection: local` runs commands). The same through a real sshd is in
//! `ssh_local.rs` (`hostile_values_arrive_byte_for_byte`).

use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use remedy::source::Source;
use remedy::template::{Mode, Templates};

/// The shells every rendered command is run with.
const SHELLS: &[&str] = &["sh", "bash"];

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// One piece of a hostile value.
fn piece() -> impl Strategy<Value = String> {
    let fixed: Vec<&'static str> = vec![
        "'", "\"", "$(id)", "`id`", "$HOME", "${x}", "$", ";", "|", "&", "<", ">", "\n", "\\",
        "\\'", "'\\''", "*", "?", "[", "]", "{a,b}", "~", "#", "!", "=", "x=y", ",", "-", "--",
        "-rf", " ", "\t", "\r", "if", "%s", "é", "日本", "🦀", "\u{7f}", "\u{1}",
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed).prop_map(String::from),
        2 => "[a-z0-9]{1,6}",
        1 => any::<char>()
            .prop_filter("a NUL is tested on its own", |c| *c != '\0')
            .prop_map(String::from),
    ]
}

/// A hostile value: a few pieces, sometimes repeated into a very long string.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => proptest::collection::vec(piece(), 0..12).prop_map(|v| v.concat()),
        1 => (piece(), 2_000usize..20_000)
            .prop_map(|(p, n)| p.repeat(n / p.len().max(1))),
    ]
}

/// Renders `template` (a shell template) with `v` bound to `value`.
fn render(template: &str, value: &str) -> Result<String, String> {
    let source = Source::parse("pb.yml", "ssh: x\n").expect("source");
    let mut t = Templates::new();
    let tpl = t
        .add(&source, "ssh", template, Mode::Shell)
        .map_err(|d| d.headline())?;
    t.render(&tpl, &minijinja::context! { v => value })
        .map_err(|e| e.message)
}

/// Runs `cmd` with `shell -c` in an empty environment; its stdout.
fn run(shell: &str, cmd: &str) -> Vec<u8> {
    let out = Command::new(shell)
        .arg("-c")
        .arg(cmd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shell}: {e}"));
    assert!(
        out.status.success(),
        "{shell} -c {cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Renders `template` with `value` and checks every shell prints `want`.
fn check(template: &str, value: &str, want: &str) -> Result<(), TestCaseError> {
    let cmd = render(template, value).map_err(TestCaseError::fail)?;
    for shell in SHELLS {
        let got = run(shell, &cmd);
        prop_assert_eq!(
            String::from_utf8_lossy(&got),
            want,
            "{} -c {:?} (value {:?})",
            shell,
            cmd,
            value
        );
        prop_assert_eq!(got, want.as_bytes());
    }
    Ok(())
}

/// What `"$(...)"` keeps of a command's output: all but trailing newlines.
fn substituted(s: &str) -> &str {
    s.trim_end_matches('\n')
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bare(v in value()) {
        check("printf '%s' {{ v }}", &v, &v)?;
    }

    #[test]
    fn inside_single_quotes(v in value()) {
        check("printf '%s' 'pre {{ v }} post'", &v, &format!("pre {v} post"))?;
    }

    #[test]
    fn inside_double_quotes(v in value()) {
        check(r#"printf '%s' "pre {{ v }} post""#, &v, &format!("pre {v} post"))?;
    }

    #[test]
    fn glued_to_text(v in value()) {
        check("printf '%s' x{{ v }}y", &v, &format!("x{v}y"))?;
    }

    #[test]
    fn inside_a_command_substitution(v in value()) {
        check(r#"printf '%s' "$(printf '%s' {{ v }})""#, &v, substituted(&v))?;
        let inner = format!("in {v}");
        check(
            r#"printf '%s' "$(printf '%s' 'in {{ v }}')""#,
            &v,
            substituted(&inner),
        )?;
    }

    #[test]
    fn a_nul_byte_is_refused(v in value(), at in any::<proptest::sample::Index>()) {
        let mut bytes = v.into_bytes();
        let i = at.index(bytes.len() + 1);
        // a char boundary: before the first byte that is not a UTF-8 continuation byte
        let i = (i..bytes.len()).find(|&i| bytes[i] & 0xC0 != 0x80).unwrap_or(bytes.len());
        bytes.insert(i, 0);
        let v = String::from_utf8(bytes).expect("still UTF-8");
        for template in [
            "printf '%s' {{ v }}",
            "printf '%s' 'pre {{ v }} post'",
            r#"printf '%s' "pre {{ v }} post""#,
        ] {
            let e = render(template, &v).unwrap_err();
            prop_assert_eq!(
                e,
                "a value contains a NUL byte, which no program argument can carry"
            );
        }
    }
}

/// Values that broke the quoting before, one by one, through `ansible_connection: local`.
#[tokio::test]
async fn hostile_values_through_the_local_transport() {
    use remedy::inventory::Inventory;
    use remedy::transport::local::LocalTransport;
    use remedy::transport::{Access, Action, ActionResult, Transport};

    let inv = Inventory::from_str(
        "inv.yml",
        "all:\n  hosts:\n    local: { ansible_connection: local }\n",
    )
    .expect("inventory");
    let host = inv.host("local").expect("host");
    let values = [
        "x; chmod 777 /etc/remedy-test.conf",
        "x'; touch /tmp/pwned; '",
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned`",
        "\"; touch /tmp/pwned; \"",
        "a\\\nb",
        "-n",
    ];
    for template in [
        "printf '%s' {{ v }}",
        "printf '%s' 'pre {{ v }}'",
        r#"printf '%s' "pre {{ v }}""#,
    ] {
        for v in values {
            let cmd = render(template, v).unwrap();
            let want = if template.contains("pre") {
                format!("pre {v}")
            } else {
                v.to_string()
            };
            let out = LocalTransport
                .run(
                    host,
                    &Action::ssh(cmd.clone()),
                    Access::ReadOnly,
                    Duration::from_secs(10),
                )
                .await
                .expect("run");
            let ActionResult::Ssh(out) = out else {
                panic!("not a command result")
            };
            assert_eq!(out.rc, Some(0), "{cmd}: {}", out.stderr);
            assert_eq!(out.stdout, want, "{cmd}");
        }
    }
}
