//! Per-target locks, shared by `remedy apply` and `remedy daemon`, so that a scheduled fix never
//! works on a host an operator is working on (and the other way round).
//!
//! One file per target in the state directory's `locks/`, held with an exclusive `flock` for
//! as long as the run lasts, and naming its holder (pid, run, who, since) for the message the
//! other side gets. The kernel releases a `flock` when its holder exits, however it exits, so a
//! lock left by a crashed run is simply free again: its file still names the old holder until
//! the next one overwrites it. Locks are advisory: they bind remedy, not people with a shell.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Where the state directory is named when `--state-dir` is not given.
pub const ENV_VAR: &str = "REMEDY_STATE_DIR";

/// The state directory: `$REMEDY_STATE_DIR`, else the user's state dir (`remedy/` in it).
pub fn default_state_dir() -> PathBuf {
    if let Some(v) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    match dirs::state_dir() {
        Some(s) => s.join("remedy"),
        None => dirs::home_dir()
            .unwrap_or_default()
            .join(".local/state/remedy"),
    }
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub run: String,
    /// `alice (remedy apply vr-backup-loop)`, `daemon job dnsmasq`.
    pub by: String,
    pub since: String,
    /// The machine the holder runs on (absent in lock files written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Holder {
    pub fn new(run: &str, by: impl Into<String>) -> Holder {
        Holder {
            pid: std::process::id(),
            run: run.to_string(),
            by: by.into(),
            since: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
            host: Some(crate::identity::hostname()),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = self
            .host
            .as_deref()
            .map(|h| format!(" on {h}"))
            .unwrap_or_default();
        write!(
            f,
            "{} (pid {}{on}, run {}, since {})",
            self.by, self.pid, self.run, self.since
        )
    }
}

/// A target someone else holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub target: String,
    /// `None` when the holder had not written its name yet.
    pub holder: Option<Holder>,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(h) => write!(f, "{} is locked by {h}", self.target),
            None => write!(f, "{} is locked by another run", self.target),
        }
    }
}

/// Locks held; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Held {
    files: Vec<(String, File)>,
}

impl Held {
    pub fn targets(&self) -> Vec<&str> {
        self.files.iter().map(|(t, _)| t.as_str()).collect()
    }
}

/// The lock file of `target`: its name made safe for a file name (and kept distinct).
pub fn path(dir: &Path, target: &str) -> PathBuf {
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = if safe == target && !target.starts_with('.') {
        safe
    } else {
        use sha2::Digest as _;
        let h = crate::playbook::load::hex(&sha2::Sha256::digest(target.as_bytes()));
        format!("{safe}-{}", &h[..8])
    };
    dir.join("locks").join(format!("{name}.lock"))
}

/// Open (creating) a lock file. Operators and the daemon may run as different users sharing
/// a group: the directory and the files are made group-writable (the directory setgid, so
/// files keep its group) when this process creates them.
fn open(dir: &Path, target: &str) -> std::io::Result<File> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let p = path(dir, target);
    if let Some(parent) = p.parent() {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o2775)
                .create(parent)?;
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o2775));
        }
    }
    let created = !p.exists();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o664)
        .open(&p)?;
    if created {
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o664));
    }
    Ok(f)
}

fn holder_of(dir: &Path, target: &str) -> Option<Holder> {
    let text = std::fs::read_to_string(path(dir, target)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Who holds `target` now, if anyone.
pub fn probe(dir: &Path, target: &str) -> Result<Option<Busy>, String> {
    let f = open(dir, target).map_err(|e| format!("lock for {target}: {e}"))?;
    match f.try_lock() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => Ok(Some(Busy {
            target: target.to_string(),
            holder: holder_of(dir, target),
        })),
        Err(TryLockError::Error(e)) => Err(format!("lock for {target}: {e}")),
    }
}

/// Every lock held now (the lock files whose `flock` someone holds), by target file name.
pub fn held(dir: &Path) -> Result<Vec<Busy>, String> {
    let locks = dir.join("locks");
    let entries = match std::fs::read_dir(&locks) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", locks.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            continue;
        };
        let Ok(f) = OpenOptions::new().read(true).write(true).open(&p) else {
            continue;
        };
        if let Err(TryLockError::WouldBlock) = f.try_lock() {
            let holder = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            out.push(Busy {
                target: name.to_string(),
                holder,
            });
        }
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

/// Take every lock in `targets` now, or none: the first one held by someone else is the error.
pub fn try_all(dir: &Path, targets: &[String], holder: &Holder) -> Result<Held, AcquireError> {
    let mut names: Vec<&String> = targets.iter().collect();
    names.sort();
    names.dedup();
    let mut held = Held { files: Vec::new() };
    for t in names {
        let mut f = open(dir, t).map_err(|e| AcquireError::Io(format!("lock for {t}: {e}")))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(AcquireError::Busy(Busy {
                    target: t.clone(),
                    holder: holder_of(dir, t),
                }))
            }
            Err(TryLockError::Error(e)) => {
                return Err(AcquireError::Io(format!("lock for {t}: {e}")))
            }
        }
        let text = serde_json::to_string(holder).unwrap_or_default();
        f.set_len(0)
            .and_then(|_| f.write_all(text.as_bytes()))
            .and_then(|_| f.flush())
            .map_err(|e| AcquireError::Io(format!("lock for {t}: {e}")))?;
        held.files.push((t.clone(), f));
    }
    Ok(held)
}

/// [`try_all`], again every 100 ms until `wait` has passed. Nothing is held while waiting, so
/// two runs that want overlapping targets cannot each hold half.
pub async fn acquire(
    dir: &Path,
    targets: &[String],
    holder: &Holder,
    wait: Duration,
) -> Result<Held, AcquireError> {
    let deadline = Instant::now() + wait;
    loop {
        match try_all(dir, targets, holder) {
            Err(AcquireError::Busy(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireError {
    Busy(Busy),
    Io(String),
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::Busy(b) => write!(f, "{b}"),
            AcquireError::Io(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lock_names_its_holder_and_is_free_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = Holder::new("run-a", "alice (remedy apply x)");
        let targets = vec!["r-1-VM".to_string(), "kvm01".to_string()];
        let held = try_all(dir.path(), &targets, &a).unwrap();
        assert_eq!(held.targets(), ["kvm01", "r-1-VM"]);
        let b = Holder::new("run-b", "daemon job dnsmasq");
        let started = Instant::now();
        let busy = acquire(
            dir.path(),
            &["r-1-VM".to_string()],
            &b,
            Duration::from_millis(250),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
        let AcquireError::Busy(busy) = busy else {
            panic!("{busy:?}")
        };
        assert_eq!(busy.holder.as_ref().unwrap().run, "run-a");
        assert!(
            busy.to_string().starts_with("r-1-VM is locked by alice"),
            "{busy}"
        );
        assert!(probe(dir.path(), "r-1-VM").unwrap().is_some());
        assert!(probe(dir.path(), "other").unwrap().is_none());
        drop(held);
        // Free again; the file still names the old holder until it is taken.
        assert!(probe(dir.path(), "r-1-VM").unwrap().is_none());
        let again = try_all(dir.path(), &["r-1-VM".to_string()], &b).unwrap();
        assert_eq!(holder_of(dir.path(), "r-1-VM").unwrap().run, "run-b");
        drop(again);
    }

    #[test]
    fn a_failed_acquire_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = Holder::new("a", "a");
        let _b = try_all(dir.path(), &["b".into()], &a).unwrap();
        let err = try_all(dir.path(), &["a".into(), "b".into()], &a);
        assert!(err.is_err());
        assert!(probe(dir.path(), "a").unwrap().is_none(), "a was let go");
    }

    #[tokio::test]
    async fn waiting_ends_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let a = Holder::new("a", "a");
        let held = try_all(dir.path(), &["t".into()], &a).unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        acquire(dir.path(), &["t".into()], &a, Duration::from_secs(5))
            .await
            .expect("taken once let go");
        release.await.unwrap();
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let d = Path::new("/s");
        assert_eq!(path(d, "r-1-VM"), Path::new("/s/locks/r-1-VM.lock"));
        let odd = path(d, "a/b");
        assert!(
            odd.to_str().unwrap().starts_with("/s/locks/a_b-"),
            "{odd:?}"
        );
        assert_ne!(path(d, "a/b"), path(d, "a_b"));
        assert_ne!(path(d, ".."), path(d, "__"));
    }
}
