//! `file`: the mode, owner and group of an existing file or directory.
//!
//! Owns the `stat` probe, the `chown`/`chgrp`/`chmod` commands and their undo. Not here: file
//! contents, creating or deleting files (a raw `ssh:` step with an explicit rollback does that).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_name, one_ssh, printable, same_fields, scalar, sh, state_str, summarize};
use super::{Change, Diff, Module, ModuleError, ModuleKind};
use crate::transport::{Action, ActionResult};

/// Ensure the mode and/or ownership of an existing path.
///
/// YAML keys (at least one of `mode`, `owner`, `group`):
/// - `path` (required): absolute path; symlinks are followed, as `chmod` and `chown` do.
/// - `mode`: octal, 3 or 4 digits: `"0640"`, `755`, `4755` (kept as written; no symbolic modes,
///   no YAML `0o` notation).
/// - `owner`: user name or numeric uid.
/// - `group`: group name or numeric gid.
///
/// ```yaml
/// - id: agent-properties
///   on: "{{ hypervisor }}"
///   file: { path: /etc/cloudstack/agent/agent.properties, mode: "0640", owner: root, group: cloud }
/// ```
///
/// Check: `stat -L -c '%a %U %G %u %g' -- PATH`. Change, only for what differs: `chown
/// OWNER:GROUP -- PATH` (or `chown OWNER --` / `chgrp GROUP --` when only one differs), then
/// `chmod MODE -- PATH` (after chown, which may clear set-user/group-ID bits). Undo puts the old
/// owner/group/mode back the same way, and the old mode too when it had set-ID bits a chown cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    #[serde(
        default,
        deserialize_with = "scalar::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<String>,
    #[serde(
        default,
        deserialize_with = "scalar::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner: Option<String>,
    #[serde(
        default,
        deserialize_with = "scalar::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub group: Option<String>,
}

impl FileSpec {
    pub fn build(self) -> Result<File, ModuleError> {
        let kind = ModuleKind::File;
        if !self.path.starts_with('/') {
            return Err(kind.invalid(format!(
                "`path` must be absolute: {}",
                printable(&self.path)
            )));
        }
        if self.mode.is_none() && self.owner.is_none() && self.group.is_none() {
            return Err(kind.invalid("give at least one of `mode`, `owner`, `group`"));
        }
        let mode = match &self.mode {
            None => None,
            Some(m) => Some(normalize_mode(m).ok_or_else(|| {
                kind.invalid(format!(
                    "`mode` must be 3 or 4 octal digits, e.g. \"0640\": {}",
                    printable(m)
                ))
            })?),
        };
        for (key, value) in [("owner", &self.owner), ("group", &self.group)] {
            if let Some(v) = value {
                check_name(kind, key, v)?;
                if v.contains(':') {
                    return Err(
                        kind.invalid(format!("`{key}` must not contain ':': {}", printable(v)))
                    );
                }
            }
        }
        let check_cmd = sh(&["stat", "-L", "-c", "%a %U %G %u %g", "--", &self.path])?;
        Ok(File {
            mode,
            spec: self,
            check_cmd,
        })
    }
}

/// `"640"`/`"0640"` -> `"0640"`; None unless 3-4 octal digits.
fn normalize_mode(m: &str) -> Option<String> {
    if !(3..=4).contains(&m.len()) || !m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let bits = u32::from_str_radix(m, 8).ok()?;
    Some(format!("{bits:04o}"))
}

/// The built `file` module.
#[derive(Debug, Clone)]
pub struct File {
    spec: FileSpec,
    /// The wanted mode, normalised to 4 digits.
    mode: Option<String>,
    check_cmd: String,
}

/// Which managed fields differ between the spec and a recorded state.
struct Drift {
    mode: bool,
    owner: bool,
    group: bool,
}

impl File {
    fn drift(&self, before: &Value) -> Result<Drift, ModuleError> {
        let mode = match &self.mode {
            Some(m) => m != state_str(before, "mode")?,
            None => false,
        };
        let owner = match &self.spec.owner {
            Some(o) => !same_principal(o, before, "owner", "uid")?,
            None => false,
        };
        let group = match &self.spec.group {
            Some(g) => !same_principal(g, before, "group", "gid")?,
            None => false,
        };
        Ok(Drift { mode, owner, group })
    }

    /// `chown`/`chgrp` then `chmod`, for the fields flagged.
    fn commands(
        &self,
        owner: Option<&str>,
        group: Option<&str>,
        mode: Option<&str>,
    ) -> Result<Vec<Action>, ModuleError> {
        let path = self.spec.path.as_str();
        let mut out = Vec::new();
        match (owner, group) {
            (Some(o), Some(g)) => out.push(sh(&["chown", &format!("{o}:{g}"), "--", path])?),
            (Some(o), None) => out.push(sh(&["chown", o, "--", path])?),
            (None, Some(g)) => out.push(sh(&["chgrp", g, "--", path])?),
            (None, None) => {}
        }
        if let Some(m) = mode {
            out.push(sh(&["chmod", m, "--", path])?);
        }
        Ok(out.into_iter().map(Action::ssh).collect())
    }
}

/// Whether a wanted owner/group (a name or a numeric id) is the recorded one.
fn same_principal(
    wanted: &str,
    before: &Value,
    name_key: &str,
    id_key: &str,
) -> Result<bool, ModuleError> {
    if wanted.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(id) = before.get(id_key).and_then(Value::as_u64) {
            return Ok(wanted.parse::<u64>().ok() == Some(id));
        }
    }
    Ok(wanted == state_str(before, name_key)?)
}

impl Module for File {
    fn kind(&self) -> ModuleKind {
        ModuleKind::File
    }

    fn describe(&self) -> String {
        let mut s = format!("file {}", self.spec.path);
        if let Some(m) = &self.mode {
            s.push_str(&format!(" mode {m}"));
        }
        if let Some(o) = &self.spec.owner {
            s.push_str(&format!(" owner {o}"));
        }
        if let Some(g) = &self.spec.group {
            s.push_str(&format!(" group {g}"));
        }
        s
    }

    fn check(&self) -> Vec<Action> {
        vec![Action::ssh(self.check_cmd.clone())]
    }

    fn observe(&self, results: &[ActionResult]) -> Result<Value, ModuleError> {
        let out = one_ssh(results, &self.check_cmd)?;
        let unexpected = || ModuleError::UnexpectedOutput {
            cmd: self.check_cmd.clone(),
            detail: summarize(out),
        };
        if out.rc != Some(0) {
            if out.rc.is_some() && out.stderr.contains("No such file or directory") {
                return Err(ModuleError::PathNotFound(self.spec.path.clone()));
            }
            return Err(unexpected());
        }
        let fields: Vec<&str> = out.stdout.split_whitespace().collect();
        let [mode, user, group, uid, gid] = fields[..] else {
            return Err(unexpected());
        };
        let bits = u32::from_str_radix(mode, 8).map_err(|_| unexpected())?;
        if bits > 0o7777 {
            return Err(unexpected());
        }
        let uid: u64 = uid.parse().map_err(|_| unexpected())?;
        let gid: u64 = gid.parse().map_err(|_| unexpected())?;
        // stat prints UNKNOWN for an id without a name; the id is what chown can restore
        let owner = if user == "UNKNOWN" {
            uid.to_string()
        } else {
            user.to_string()
        };
        let group = if group == "UNKNOWN" {
            gid.to_string()
        } else {
            group.to_string()
        };
        Ok(json!({
            "mode": format!("{bits:04o}"),
            "owner": owner,
            "group": group,
            "uid": uid,
            "gid": gid,
        }))
    }

    fn diff(&self, before: &Value) -> Result<Option<Diff>, ModuleError> {
        let d = self.drift(before)?;
        let mut changes = Vec::new();
        if let (true, Some(m)) = (d.mode, &self.mode) {
            changes.push(Change::new("mode", state_str(before, "mode")?, m.as_str()));
        }
        if let (true, Some(o)) = (d.owner, &self.spec.owner) {
            changes.push(Change::new(
                "owner",
                state_str(before, "owner")?,
                o.as_str(),
            ));
        }
        if let (true, Some(g)) = (d.group, &self.spec.group) {
            changes.push(Change::new(
                "group",
                state_str(before, "group")?,
                g.as_str(),
            ));
        }
        Ok((!changes.is_empty()).then_some(Diff { changes }))
    }

    fn change(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let d = self.drift(before)?;
        self.commands(
            self.spec.owner.as_deref().filter(|_| d.owner),
            self.spec.group.as_deref().filter(|_| d.group),
            self.mode.as_deref().filter(|_| d.mode),
        )
    }

    fn undo(&self, before: &Value) -> Result<Vec<Action>, ModuleError> {
        let d = self.drift(before)?;
        let old_mode = state_str(before, "mode")?;
        let set_id_bits = u32::from_str_radix(old_mode, 8)
            .map_err(|_| ModuleError::InvalidState(format!("`mode` is not octal: {old_mode}")))?
            & 0o6000
            != 0;
        let restore_mode = d.mode || ((d.owner || d.group) && set_id_bits);
        self.commands(
            if d.owner {
                Some(state_str(before, "owner")?)
            } else {
                None
            },
            if d.group {
                Some(state_str(before, "group")?)
            } else {
                None
            },
            restore_mode.then_some(old_mode),
        )
    }

    fn restored(&self, before: &Value, now: &Value) -> bool {
        let mut keys = Vec::new();
        if self.mode.is_some() {
            keys.push("mode");
        }
        if self.spec.owner.is_some() {
            keys.push("owner");
        }
        if self.spec.group.is_some() {
            keys.push("group");
        }
        same_fields(before, now, &keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil::{cmds, exit, ok, words};

    fn spec(path: &str, mode: Option<&str>, owner: Option<&str>, group: Option<&str>) -> FileSpec {
        FileSpec {
            path: path.into(),
            mode: mode.map(Into::into),
            owner: owner.map(Into::into),
            group: group.map(Into::into),
        }
    }

    fn file(mode: Option<&str>, owner: Option<&str>, group: Option<&str>) -> File {
        spec("/etc/cloudstack/agent/agent.properties", mode, owner, group)
            .build()
            .unwrap()
    }

    fn state(mode: &str, owner: &str, group: &str) -> Value {
        json!({"mode": mode, "owner": owner, "group": group, "uid": 0, "gid": 0})
    }

    #[test]
    fn check_is_stat_with_quoted_format() {
        let m = file(Some("0640"), None, None);
        assert_eq!(
            cmds(&m.check()),
            ["stat -L -c '%a %U %G %u %g' -- /etc/cloudstack/agent/agent.properties"]
        );
        assert_eq!(
            m.describe(),
            "file /etc/cloudstack/agent/agent.properties mode 0640"
        );
    }

    #[test]
    fn observe_normalises_the_mode() {
        let m = file(Some("0640"), None, None);
        assert_eq!(
            m.observe(&[ok("644 cloud cloud 996 994\n")]).unwrap(),
            json!({"mode": "0644", "owner": "cloud", "group": "cloud", "uid": 996, "gid": 994})
        );
        assert_eq!(
            m.observe(&[ok("4755 root root 0 0\n")]).unwrap()["mode"],
            "4755"
        );
        assert_eq!(
            m.observe(&[ok("0 root root 0 0\n")]).unwrap()["mode"],
            "0000"
        );
        // ids without a name are recorded as numbers, which chown can restore
        let v = m.observe(&[ok("600 UNKNOWN UNKNOWN 1234 5678\n")]).unwrap();
        assert_eq!(
            (v["owner"].as_str(), v["group"].as_str()),
            (Some("1234"), Some("5678"))
        );
    }

    #[test]
    fn observe_missing_path_and_garbage() {
        let m = file(Some("0640"), None, None);
        let err = m
            .observe(&[exit(
                1,
                "",
                "stat: cannot statx '/etc/cloudstack/agent/agent.properties': No such file or directory\n",
            )])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "path /etc/cloudstack/agent/agent.properties does not exist"
        );
        for bad in [
            ok("644 cloud\n"),
            ok("rw-r--r-- cloud cloud 1 1\n"),
            ok("99999 cloud cloud 1 1\n"),
            ok("644 cloud cloud x 1\n"),
            ok(""),
            exit(1, "", "stat: cannot statx '/x': Permission denied"),
        ] {
            assert!(
                matches!(
                    m.observe(std::slice::from_ref(&bad)),
                    Err(ModuleError::UnexpectedOutput { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn build_validates_mode_path_and_names() {
        assert_eq!(file(Some("640"), None, None).mode.as_deref(), Some("0640"));
        assert_eq!(file(Some("4755"), None, None).mode.as_deref(), Some("4755"));
        for bad in ["u+x", "12345", "0980", "", "64", "０６４０"] {
            assert!(spec("/x", Some(bad), None, None).build().is_err(), "{bad}");
        }
        assert!(spec("relative/x", Some("0640"), None, None)
            .build()
            .is_err());
        assert!(spec("/x", None, None, None).build().is_err());
        assert!(spec("/x", None, Some("-R"), None).build().is_err());
        assert!(spec("/x", None, Some("a:b"), None).build().is_err());
        assert!(spec("/x", None, None, Some("")).build().is_err());
        assert!(matches!(
            spec("/x\0y", Some("0640"), None, None).build(),
            Err(ModuleError::NulByte(_))
        ));
    }

    #[test]
    fn in_sync_has_no_diff() {
        let m = file(Some("0640"), Some("root"), Some("cloud"));
        let before = state("0640", "root", "cloud");
        assert_eq!(m.diff(&before).unwrap(), None);
        assert!(m.change(&before).unwrap().is_empty());
        assert!(m.undo(&before).unwrap().is_empty());
        // numeric ids compare with the recorded ids
        let m = file(None, Some("0"), Some("0"));
        assert_eq!(m.diff(&state("0644", "root", "root")).unwrap(), None);
    }

    #[test]
    fn only_what_differs_changes() {
        let m = file(Some("0640"), Some("root"), Some("cloud"));
        let before = state("0644", "root", "root");
        assert_eq!(
            m.diff(&before).unwrap().unwrap().to_string(),
            "mode: 0644 -> 0640\ngroup: root -> cloud"
        );
        assert_eq!(
            cmds(&m.change(&before).unwrap()),
            [
                "chgrp cloud -- /etc/cloudstack/agent/agent.properties",
                "chmod 0640 -- /etc/cloudstack/agent/agent.properties"
            ]
        );
        assert_eq!(
            cmds(&m.undo(&before).unwrap()),
            [
                "chgrp root -- /etc/cloudstack/agent/agent.properties",
                "chmod 0644 -- /etc/cloudstack/agent/agent.properties"
            ]
        );
        let before = state("0640", "cloud", "root");
        assert_eq!(
            cmds(&m.change(&before).unwrap()),
            ["chown root:cloud -- /etc/cloudstack/agent/agent.properties"]
        );
        assert_eq!(
            cmds(&m.undo(&before).unwrap()),
            ["chown cloud:root -- /etc/cloudstack/agent/agent.properties"]
        );
        let m = file(None, Some("cloud"), None);
        assert_eq!(
            cmds(&m.change(&state("0644", "root", "root")).unwrap()),
            ["chown cloud -- /etc/cloudstack/agent/agent.properties"]
        );
    }

    #[test]
    fn undo_restores_set_id_bits_a_chown_cleared() {
        let m = file(None, Some("cloud"), None);
        let before = state("4755", "root", "root");
        assert_eq!(
            cmds(&m.undo(&before).unwrap()),
            [
                "chown root -- /etc/cloudstack/agent/agent.properties",
                "chmod 4755 -- /etc/cloudstack/agent/agent.properties"
            ]
        );
    }

    /// Apply chown/chgrp/chmod commands to a recorded state the way the kernel would.
    fn simulate(state: &Value, actions: &[Action]) -> Value {
        let mut s = state.clone();
        for c in cmds(actions) {
            let w = words(&c);
            assert_eq!(w[2], "--");
            match w[0].as_str() {
                "chmod" => s["mode"] = json!(w[1]),
                "chgrp" => s["group"] = json!(w[1]),
                "chown" => {
                    let (o, g) = match w[1].split_once(':') {
                        Some((o, g)) => (o.to_string(), Some(g.to_string())),
                        None => (w[1].clone(), None),
                    };
                    s["owner"] = json!(o);
                    if let Some(g) = g {
                        s["group"] = json!(g);
                    }
                    let bits = u32::from_str_radix(s["mode"].as_str().unwrap(), 8).unwrap();
                    s["mode"] = json!(format!("{:04o}", bits & !0o6000));
                }
                other => panic!("unexpected {other}"),
            }
        }
        s
    }

    #[test]
    fn change_then_undo_restores_the_pre_state() {
        let specs = [
            (Some("0640"), Some("root"), Some("cloud")),
            (Some("0600"), None, None),
            (None, Some("cloud"), None),
            (None, None, Some("cloud")),
        ];
        let befores = [
            state("0644", "root", "root"),
            state("4755", "cloud", "cloud"),
            state("0640", "root", "cloud"),
        ];
        for (mode, owner, group) in specs {
            let m = file(mode, owner, group);
            for before in &befores {
                let after = simulate(before, &m.change(before).unwrap());
                assert_eq!(m.diff(&after).unwrap(), None, "{after}");
                let now = simulate(&after, &m.undo(before).unwrap());
                assert!(m.restored(before, &now), "{before} -> {now}");
                assert_eq!(now["mode"], before["mode"], "{before} -> {now}");
            }
        }
    }

    #[test]
    fn hostile_values_stay_one_argument() {
        let path = "/tmp/x; rm -rf / $(reboot)";
        let m = spec(path, Some("0640"), Some("$(reboot)"), Some("x;id"))
            .build()
            .unwrap();
        assert_eq!(
            words(&cmds(&m.check())[0]),
            ["stat", "-L", "-c", "%a %U %G %u %g", "--", path]
        );
        let before = state("0644", "root", "root");
        let change = cmds(&m.change(&before).unwrap());
        assert_eq!(words(&change[0]), ["chown", "$(reboot):x;id", "--", path]);
        assert_eq!(words(&change[1]), ["chmod", "0640", "--", path]);
        // values recorded from the host are quoted too
        let before = state("0644", "`reboot`", "a b");
        let undo = cmds(&m.undo(&before).unwrap());
        assert_eq!(words(&undo[0]), ["chown", "`reboot`:a b", "--", path]);
    }

    #[test]
    fn yaml_keeps_modes_and_ids_as_written() {
        let s: FileSpec =
            serde_yaml::from_str("{ path: /x, mode: \"0640\", owner: 0, group: 994 }").unwrap();
        assert_eq!(s.owner.as_deref(), Some("0"));
        assert_eq!(s.group.as_deref(), Some("994"));
        // unquoted modes keep their digits: YAML never gets to read them as numbers
        for (yaml, mode) in [("0640", "0640"), ("640", "640"), ("4755", "4755")] {
            let s: FileSpec =
                serde_yaml::from_str(&format!("{{ path: /x, mode: {yaml} }}")).unwrap();
            assert_eq!(s.mode.as_deref(), Some(mode));
        }
        // YAML's own octal notation is kept as text too, and refused by build()
        let s: FileSpec = serde_yaml::from_str("{ path: /x, mode: 0o640 }").unwrap();
        assert_eq!(s.mode.as_deref(), Some("0o640"));
        assert!(s.build().is_err());
        let s: FileSpec = serde_yaml::from_str("{ path: /x, mode: 0640 }").unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json, json!({"path": "/x", "mode": "0640"}));
        assert_eq!(serde_json::from_value::<FileSpec>(json).unwrap(), s);
        let s: FileSpec = serde_yaml::from_str("{ path: /x, mode: ~, owner: root }").unwrap();
        assert_eq!(s.mode, None);
    }
}
