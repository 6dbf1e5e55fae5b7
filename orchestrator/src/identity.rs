//! Who and where a run is: the run id, the operator, this machine's name. The audit log, plan
//! files, approvals and locks all record them.
//!
//! Owns only these three small facts, read from the process's environment and `/proc`; what
//! records them is up to the callers.

/// A fresh run id: UTC time plus 8 random hex digits, sortable and unique enough.
pub fn new_run_id() -> String {
    let now = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{now}-{}", &rand[..8])
}

/// Who is running remedy: the sudo caller if any, else the login name, else the account of the
/// process's real uid (looked up in /etc/passwd), else `uid N`.
pub fn operator() -> String {
    if let Some(u) = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    {
        return u;
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
