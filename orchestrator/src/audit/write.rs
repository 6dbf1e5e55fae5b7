//! The writer: an append-only, hash-chained log handle ([`AuditLog`]).
//!
//! Owns opening the log (creating its directory and file with private modes), appending a
//! record chained to the last line under an exclusive file lock, the group commit that makes
//! durable appends share one `sync_data`, following a log moved aside, and reading the tail to
//! learn where the chain ends. Leaves the `.head` anchor's format to `head.rs` and reading
//! whole logs back to `read.rs` and `verify.rs`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value};

use super::head::{head_path, read_head, write_head};
use super::{
    json_kind, json_reason, sha256_hex, AuditError, FileLock, ENV_VAR, FORMAT_VERSION, RESERVED,
    ZERO_HASH,
};

/// What one append returned: the record's seq and the SHA-256 of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

/// An append-only, hash-chained audit log. `Send + Sync`: appends from several threads are
/// serialised by an interior mutex, appends from several processes by a file lock.
pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    inner: Mutex<Inner>,
    /// Taken by the one thread syncing for everyone (lock order: `sync`, then `inner`).
    pub(super) sync: Mutex<Synced>,
}

pub(super) struct Inner {
    file: File,
    chain: Chain,
    pending_sync: bool,
    /// Lines this handle has written (a ticket per append, for the group commit).
    pub(super) written: u64,
}

/// What the last group commit covered.
pub(super) struct Synced {
    /// Every line up to this ticket is on disk.
    through: u64,
    /// How many syncs of the log this handle made.
    count: u64,
    /// The head was rewritten since it was last synced.
    head_pending: bool,
    /// A sync failed: durable appends fail from then on (the reason).
    failed: Option<String>,
}

/// Where the chain ends, as this handle last saw it.
struct Chain {
    /// File length after this handle last read or wrote; any other length means someone else
    /// appended (or truncated) and the tail must be re-read.
    known_len: u64,
    last_hash: String,
    last_seq: u64,
    /// The file does not end with a newline (a complete last line without one).
    needs_newline: bool,
}

impl AuditLog {
    /// Default path: `$REMEDY_AUDIT_LOG` if set and non-empty, else
    /// `dirs::state_dir()/remedy/audit.jsonl`, else `dirs::home_dir()/.local/state/remedy/audit.jsonl`
    /// (else a relative `.local/state/remedy/audit.jsonl`, when there is no home at all).
    pub fn default_path() -> PathBuf {
        default_path_from(std::env::var_os(ENV_VAR))
    }

    /// Opens `path` for appending, creating missing parent directories (mode 0700) and the file
    /// (mode 0600). Reads the tail to learn the last line's hash and seq; fails if the last line
    /// is not a JSON object with a seq.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let file = open_for_append(path)?;
        let head_path = head_path(path);
        let chain = {
            let _lock = FileLock::shared(&file).map_err(|error| AuditError::Lock {
                path: path.to_path_buf(),
                error,
            })?;
            reload(path, &head_path, &file)?
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            head_path,
            inner: Mutex::new(Inner {
                file,
                chain,
                pending_sync: false,
                written: 0,
            }),
            sync: Mutex::new(Synced {
                through: 0,
                count: 0,
                head_pending: false,
                failed: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record. `fields` must be a JSON object without the reserved keys `v`, `seq`,
    /// `ts` and `prev`; the line is `{"v":1,"seq":N,"ts":"<RFC 3339 UTC, ms>","prev":"<sha>",`
    /// followed by the caller's fields in their map order.
    ///
    /// If `durable`, the line is on disk (`sync_data`, shared with the durable appends of other
    /// threads: see the module docs) when this returns `Ok`; otherwise a sync is pending, and a
    /// later durable append or [`AuditLog::sync`] covers it. On `Err` the caller
    /// must not perform the action the record announces. A failure to sync or to update the
    /// `.head` anchor is an error even though the line itself was written: a reader then sees
    /// an announced action that never ran, as after a crash.
    pub fn append(&self, fields: Value, durable: bool) -> Result<Appended, AuditError> {
        let fields = match fields {
            Value::Object(map) => map,
            other => {
                return Err(AuditError::NotAnObject {
                    path: self.path.clone(),
                    found: json_kind(&other),
                })
            }
        };
        if let Some(field) = RESERVED.iter().find(|key| fields.contains_key(**key)) {
            return Err(AuditError::ReservedField {
                path: self.path.clone(),
                field: (*field).to_string(),
            });
        }

        let mut guard = self.lock_inner();
        let inner: &mut Inner = &mut guard;
        self.reopen_if_replaced(inner)?;

        let _lock = FileLock::exclusive(&inner.file).map_err(|error| AuditError::Lock {
            path: self.path.clone(),
            error,
        })?;
        let len = inner
            .file
            .metadata()
            .map_err(|error| self.read_err(error))?
            .len();
        if len != inner.chain.known_len {
            inner.chain = reload(&self.path, &self.head_path, &inner.file)?;
        }
        let chain = &mut inner.chain;

        let seq = chain.last_seq.saturating_add(1);
        let ts = format!("{:.3}", jiff::Timestamp::now());
        let line =
            encode_line(seq, &ts, &chain.last_hash, &fields).map_err(|e| AuditError::Encode {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let hash = sha256_hex(line.as_bytes());

        let mut bytes = Vec::with_capacity(line.len() + 2);
        if chain.needs_newline {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if let Err(error) = (&inner.file).write_all(&bytes) {
            // Take a partial line back out, so that the log stays parseable.
            let _ = inner.file.set_len(len);
            chain.known_len = u64::MAX;
            return Err(AuditError::Write {
                path: self.path.clone(),
                error,
            });
        }
        chain.known_len = len + bytes.len() as u64;
        chain.last_hash.clone_from(&hash);
        chain.last_seq = seq;
        chain.needs_newline = false;
        inner.pending_sync = true;
        inner.written += 1;
        let ticket = inner.written;
        drop(_lock);
        drop(guard);

        if durable {
            self.sync_through(ticket, false)?;
        }
        Ok(Appended { seq, hash })
    }

    /// Flushes earlier non-durable appends to disk, if any are pending, and brings the head
    /// anchor up to date, on disk too.
    pub fn sync(&self) -> Result<(), AuditError> {
        let (pending, ticket) = {
            let inner = self.lock_inner();
            (inner.pending_sync, inner.written)
        };
        if pending {
            return self.sync_through(ticket, true);
        }
        let mut synced = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        if synced.head_pending {
            File::open(&self.head_path)
                .and_then(|head| head.sync_data())
                .map_err(|error| AuditError::Head {
                    path: self.head_path.clone(),
                    error,
                })?;
            synced.head_pending = false;
        }
        Ok(())
    }

    /// How many times this handle synced the log (group commits and [`AuditLog::sync`]).
    pub fn syncs(&self) -> u64 {
        self.sync.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    /// Returns once every line up to `ticket` is on disk: either a sync that started after it
    /// was written already covered it, or this thread syncs, for itself and for every line
    /// written meanwhile (the group commit). The head is rewritten at each sync, and synced
    /// only if `head_durable` (at [`AuditLog::sync`]): the guarantee that a record is on disk
    /// before its action is the log's own sync; a head the kernel has not written back yet at
    /// a crash is only behind, which is not a problem.
    fn sync_through(&self, ticket: u64, head_durable: bool) -> Result<(), AuditError> {
        let mut synced = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        let failed = |why: &str| AuditError::Sync {
            path: self.path.clone(),
            error: io::Error::other(format!(
                "an earlier sync of the log failed ({why}); nothing written since can be \
                 trusted to be on disk"
            )),
        };
        if let Some(why) = &synced.failed {
            return Err(failed(why));
        }
        if synced.through >= ticket {
            return Ok(());
        }
        // What is written now; the sync below covers all of it, whoever wrote it.
        let (file, through, seq, hash) = {
            let inner = self.lock_inner();
            let file = inner.file.try_clone().map_err(|error| AuditError::Sync {
                path: self.path.clone(),
                error,
            })?;
            (
                file,
                inner.written,
                inner.chain.last_seq,
                inner.chain.last_hash.clone(),
            )
        };
        synced.count += 1;
        if let Err(error) = file.sync_data() {
            synced.failed = Some(error.to_string());
            return Err(AuditError::Sync {
                path: self.path.clone(),
                error,
            });
        }
        {
            let mut inner = self.lock_inner();
            let _lock = FileLock::exclusive(&inner.file).map_err(|error| AuditError::Lock {
                path: self.path.clone(),
                error,
            })?;
            // Another process may have anchored a later line: the head never moves back.
            let ahead = matches!(read_head(&self.head_path), Ok(Some(h)) if h.seq >= seq);
            if !ahead {
                write_head(&self.head_path, seq, &hash, head_durable).map_err(|error| {
                    AuditError::Head {
                        path: self.head_path.clone(),
                        error,
                    }
                })?;
                synced.head_pending = !head_durable;
            }
            drop(_lock);
            if inner.written == through {
                inner.pending_sync = false;
            }
        }
        synced.through = through;
        Ok(())
    }

    pub(super) fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            // A thread panicked mid-append: the state may be stale, so re-read the tail.
            let mut inner = poisoned.into_inner();
            inner.chain.known_len = u64::MAX;
            inner
        })
    }

    fn read_err(&self, error: io::Error) -> AuditError {
        AuditError::Read {
            path: self.path.clone(),
            error,
        }
    }

    /// If the path no longer names the file this handle has open (moved aside, deleted),
    /// opens the path afresh so that records go where readers look.
    #[cfg(unix)]
    fn reopen_if_replaced(&self, inner: &mut Inner) -> Result<(), AuditError> {
        use std::os::unix::fs::MetadataExt;
        let ours = inner
            .file
            .metadata()
            .map_err(|error| self.read_err(error))?;
        let same = match fs::metadata(&self.path) {
            Ok(now) => now.dev() == ours.dev() && now.ino() == ours.ino(),
            Err(_) => false,
        };
        if !same {
            if inner.pending_sync {
                // Lines already written to the old file are covered by the tickets of later
                // syncs, which go to the new file: sync them here or fail.
                inner.file.sync_data().map_err(|error| AuditError::Sync {
                    path: self.path.clone(),
                    error,
                })?;
            }
            inner.file = open_for_append(&self.path)?;
            inner.chain.known_len = u64::MAX;
            inner.pending_sync = false;
        }
        Ok(())
    }

    #[cfg(not(unix))]
    fn reopen_if_replaced(&self, _inner: &mut Inner) -> Result<(), AuditError> {
        Ok(())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Best effort: nobody is left to report an error to.
        let _ = self.sync();
    }
}

pub(super) fn default_path_from(var: Option<OsString>) -> PathBuf {
    if let Some(value) = var.filter(|v| !v.is_empty()) {
        return PathBuf::from(value);
    }
    if let Some(state) = dirs::state_dir() {
        return state.join("remedy").join("audit.jsonl");
    }
    dirs::home_dir()
        .unwrap_or_default()
        .join(".local/state/remedy/audit.jsonl")
}

fn open_for_append(path: &Path) -> Result<File, AuditError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dirs(parent)?;
    }
    let existed = fs::symlink_metadata(path).is_ok();
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(|error| AuditError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    if !existed {
        // Make the new directory entry durable too. Best effort: not every filesystem allows
        // syncing a directory, and the file itself is synced by durable appends.
        if let Some(dir) = parent.and_then(|p| File::open(p).ok()) {
            let _ = dir.sync_all();
        }
    }
    Ok(file)
}

fn create_dirs(dir: &Path) -> Result<(), AuditError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|error| AuditError::CreateDir {
        path: dir.to_path_buf(),
        error,
    })
}

/// Reads where the chain ends: the last line, and the head anchor. The caller holds the lock.
fn reload(path: &Path, head_path: &Path, file: &File) -> Result<Chain, AuditError> {
    let tail = read_tail(file).map_err(|error| AuditError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let (last_hash, seq) = match &tail.last {
        None => (ZERO_HASH.to_string(), 0),
        Some(line) => {
            let seq = tail_seq(line).map_err(|reason| AuditError::BadTail {
                path: path.to_path_buf(),
                reason,
            })?;
            (sha256_hex(line), seq)
        }
    };
    // A head ahead of the file means records were cut from the end: number on from the head,
    // so that the gap stays visible. An unreadable head is verify's business, not ours.
    let head_seq = match read_head(head_path) {
        Ok(Some(head)) => head.seq,
        _ => 0,
    };
    Ok(Chain {
        known_len: tail.len,
        last_hash,
        last_seq: seq.max(head_seq),
        needs_newline: !tail.ends_with_newline,
    })
}

struct Tail {
    len: u64,
    /// The last line's bytes, without its newline; `None` for an empty file.
    last: Option<Vec<u8>>,
    ends_with_newline: bool,
}

/// Reads the last line by scanning backwards from the end, in chunks.
fn read_tail(file: &File) -> io::Result<Tail> {
    const CHUNK: u64 = 8192;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Tail {
            len,
            last: None,
            ends_with_newline: true,
        });
    }
    let mut reader = file;
    let mut byte = [0u8; 1];
    reader.seek(SeekFrom::Start(len - 1))?;
    reader.read_exact(&mut byte)?;
    let ends_with_newline = byte[0] == b'\n';
    let end = if ends_with_newline { len - 1 } else { len };

    let mut start = 0;
    let mut pos = end;
    while pos > 0 {
        let n = CHUNK.min(pos);
        pos -= n;
        let mut chunk = vec![0u8; n as usize];
        reader.seek(SeekFrom::Start(pos))?;
        reader.read_exact(&mut chunk)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            start = pos + at as u64 + 1;
            break;
        }
    }
    let mut last = vec![0u8; (end - start) as usize];
    reader.seek(SeekFrom::Start(start))?;
    reader.read_exact(&mut last)?;
    Ok(Tail {
        len,
        last: Some(last),
        ends_with_newline,
    })
}

/// The seq of the log's last line, or why there is none.
fn tail_seq(line: &[u8]) -> Result<u64, String> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) if line.is_empty() => return Err(format!("is empty ({})", json_reason(&e))),
        Err(e) => return Err(format!("is not valid JSON ({})", json_reason(&e))),
    };
    match value.get("seq").and_then(Value::as_u64) {
        Some(seq) => Ok(seq),
        None if value.is_object() => Err("has no numeric \"seq\" field".to_string()),
        None => Err("is not a JSON object".to_string()),
    }
}

/// `{"v":1,"seq":N,"ts":"..","prev":"..",<fields>}`: the header in a fixed order whatever the
/// map type's ordering.
fn encode_line(
    seq: u64,
    ts: &str,
    prev: &str,
    fields: &Map<String, Value>,
) -> Result<String, serde_json::Error> {
    let mut line = format!(
        "{{\"v\":{FORMAT_VERSION},\"seq\":{seq},\"ts\":{},\"prev\":{}",
        serde_json::to_string(ts)?,
        serde_json::to_string(prev)?
    );
    for (key, value) in fields {
        line.push(',');
        line.push_str(&serde_json::to_string(key)?);
        line.push(':');
        line.push_str(&serde_json::to_string(value)?);
    }
    line.push('}');
    Ok(line)
}
