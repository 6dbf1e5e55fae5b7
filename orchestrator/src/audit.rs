//! The tamper-evident, append-only audit log: one JSON object per line, hash-chained.
//!
//! Owns: the on-disk format (every line carries `v`, `seq`, `ts` and `prev`, the SHA-256 of the
//! previous line's exact bytes, 64 zeros on the first line), appending safely from several
//! processes at once (an exclusive `File::lock()` around each append), durability (a durable
//! append is on disk, `sync_data`, before it returns), the tail anchor `<log>.head`, reading the
//! log back and verifying it: [`verify`] says which line is wrong and how (edited, deleted,
//! reordered, malformed, truncated), resynchronising after each break so that one edit gives
//! one problem.
//!
//! Leaves to others: what the records say (callers pass the fields; redact them first, see
//! `redact.rs`), refusing to act when the log cannot be written (every failure here is an
//! [`AuditError`]; the caller must stop), rotation and retention (to start a new log, move both
//! the file and its `.head` aside while no remedy runs), and rendering verify reports.
//!
//! Durable appends are group-committed: a durable append writes its line, then waits until one
//! `sync_data` covers it. While one thread syncs, the lines other threads write queue behind it
//! and the next sync covers them all, so 200 hosts starting a change at once cost a handful of
//! syncs instead of 200, and no record is reported durable before it is. A failed sync fails
//! every later durable append of that handle: after an I/O error the kernel may report the next
//! sync as a success though the data is lost.
//!
//! The `.head` anchor: at each sync, `<log>.head` is rewritten in place with
//! `{"seq":N,"hash":"<sha of the last line>"}` for the last line that sync covered; it reaches
//! the disk at [`AuditLog::sync`] (the end of a run, and drop). It never moves back. It lets
//! [`verify`] catch an edit or deletion of the last line(s), which the chain alone cannot. A
//! missing head, or one behind the log (lines not yet synced, or a crash between append and
//! anchor update), is not a problem. A head *ahead* of the log means records were cut from the
//! end: a handle that opens
//! such a log continues numbering after the head's seq, so the gap stays visible to [`verify`]
//! even after new lines are appended.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The value of the `v` field of every record written by this code.
pub const FORMAT_VERSION: u32 = 1;

/// Environment variable overriding [`AuditLog::default_path`].
pub const ENV_VAR: &str = "REMEDY_AUDIT_LOG";

/// `prev` of the first line of a log.
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Fields `append` writes itself; a caller may not supply them.
const RESERVED: [&str; 4] = ["v", "seq", "ts", "prev"];

/// Errors of the audit log. Every one means "the log could not be written or read": a caller
/// about to act must refuse to.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create audit log directory {}: {}", .path.display(), io_reason(.error))]
    CreateDir { path: PathBuf, error: io::Error },
    #[error("cannot open audit log {}: {}", .path.display(), io_reason(.error))]
    Open { path: PathBuf, error: io::Error },
    #[error("cannot lock audit log {}: {}", .path.display(), io_reason(.error))]
    Lock { path: PathBuf, error: io::Error },
    #[error("cannot read audit log {}: {}", .path.display(), io_reason(.error))]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot write audit log {}: {}", .path.display(), io_reason(.error))]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot sync audit log {} to disk: {}", .path.display(), io_reason(.error))]
    Sync { path: PathBuf, error: io::Error },
    #[error("cannot write audit log anchor {}: {}", .path.display(), io_reason(.error))]
    Head { path: PathBuf, error: io::Error },
    /// The last line cannot be chained to (found when opening or appending).
    #[error(
        "audit log {}: the last line {reason}; it was cut short by a crash or edited: \
         check it with verify, then move the file and its .head aside to start a new log",
        .path.display()
    )]
    BadTail { path: PathBuf, reason: String },
    /// A line [`read`] cannot parse.
    #[error("audit log {}: line {line} {reason}", .path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("audit record for {} must be a JSON object, not {found}", .path.display())]
    NotAnObject { path: PathBuf, found: &'static str },
    #[error(
        "audit record for {}: field {field:?} is reserved (v, seq, ts and prev are set by the log)",
        .path.display()
    )]
    ReservedField { path: PathBuf, field: String },
    #[error("audit record for {}: cannot encode: {reason}", .path.display())]
    Encode { path: PathBuf, reason: String },
}

/// "Permission denied (os error 13)" -> "permission denied".
fn io_reason(error: &io::Error) -> String {
    let mut text = error.to_string();
    if let Some(at) = text.rfind(" (os error ") {
        text.truncate(at);
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

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
    sync: Mutex<Synced>,
}

struct Inner {
    file: File,
    chain: Chain,
    pending_sync: bool,
    /// Lines this handle has written (a ticket per append, for the group commit).
    written: u64,
}

/// What the last group commit covered.
struct Synced {
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

/// Holds an flock-style lock on a file until dropped.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File) -> io::Result<Self> {
        file.lock()?;
        Ok(FileLock(file))
    }

    fn shared(file: &'a File) -> io::Result<Self> {
        file.lock_shared()?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an unlock error leaves nothing to do.
        let _ = self.0.unlock();
    }
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

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
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

fn default_path_from(var: Option<OsString>) -> PathBuf {
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

/// `<log>.head`, beside the log.
fn head_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".head");
    PathBuf::from(name)
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

fn write_head(path: &Path, seq: u64, hash: &str, durable: bool) -> io::Result<()> {
    let text = format!("{{\"seq\":{seq},\"hash\":\"{hash}\"}}\n");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // In place: seq only grows, so the new text covers the old one; set_len trims any rest.
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.set_len(text.len() as u64)?;
    if durable {
        file.sync_data()?;
    }
    Ok(())
}

struct Head {
    seq: u64,
    hash: String,
}

/// A head anchor as read: absent, or present, or unreadable (with the reason).
type HeadRead = Result<Option<Head>, String>;

/// `Ok(None)` if there is no head file; `Err(reason)` if it cannot be read or parsed.
fn read_head(path: &Path) -> HeadRead {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read: {}", io_reason(&e))),
    };
    let value: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("is not valid JSON ({})", json_reason(&e)))?;
    let seq = value.get("seq").and_then(Value::as_u64);
    let hash = value
        .get("hash")
        .and_then(Value::as_str)
        .filter(|h| is_hash(h));
    match (seq, hash) {
        (Some(seq), Some(hash)) => Ok(Some(Head {
            seq,
            hash: hash.to_string(),
        })),
        _ => Err("does not hold a numeric \"seq\" and a 64-hex-digit \"hash\"".to_string()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn is_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its "at line 1 column 7" (the record is one line), plus the column.
fn json_reason(error: &serde_json::Error) -> String {
    let mut text = error.to_string();
    if let Some(at) = text.rfind(" at line ") {
        text.truncate(at);
    }
    format!("{text}, column {}", error.column())
}

/// Reads the whole log under a shared lock (so no half-written line is seen), and its head.
fn read_locked(path: &Path) -> Result<(Vec<u8>, HeadRead), AuditError> {
    let file = File::open(path).map_err(|error| AuditError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    let _lock = FileLock::shared(&file).map_err(|error| AuditError::Lock {
        path: path.to_path_buf(),
        error,
    })?;
    let mut bytes = Vec::new();
    (&file)
        .read_to_end(&mut bytes)
        .map_err(|error| AuditError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    let head = read_head(&head_path(path));
    Ok((bytes, head))
}

/// The file's lines without their newlines; a final newline does not start another line.
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n').collect()
}

/// One parsed line of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based line number.
    pub line: usize,
    /// The line's exact text, without its newline.
    pub raw: String,
    /// The parsed line (always a JSON object).
    pub value: Value,
}

/// Reads every line of the log. Fails on the first line that is not a JSON object, naming it.
/// Does not check the chain: that is [`verify`]'s job.
pub fn read(path: &Path) -> Result<Vec<Record>, AuditError> {
    let (bytes, _) = read_locked(path)?;
    let mut records = Vec::new();
    for (index, raw) in split_lines(&bytes).into_iter().enumerate() {
        let line = index + 1;
        let bad = |reason: String| AuditError::BadLine {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let raw = std::str::from_utf8(raw).map_err(|_| bad("is not valid UTF-8".to_string()))?;
        let value: Value = serde_json::from_str(raw)
            .map_err(|e| bad(format!("is not valid JSON ({})", json_reason(&e))))?;
        if !value.is_object() {
            return Err(bad("is not a JSON object".to_string()));
        }
        records.push(Record {
            line,
            raw: raw.to_string(),
            value,
        });
    }
    Ok(records)
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of lines in the file.
    pub lines: usize,
    /// Evidence of tampering or damage, by line (problems about the head anchor file last).
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not problems (no head anchor; head behind after a crash).
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line the problem is about; 0 when it is about the head anchor file itself.
    pub line: usize,
    pub kind: ProblemKind,
    /// A complete sentence naming the line(s), e.g.
    /// "line 7: 2 records missing before it (seq 8-9)".
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// Not a record: not JSON, not an object, no valid seq or prev (or an unreadable head file).
    Malformed,
    /// Changed after it was written: its hash no longer matches what the next line (or the head
    /// anchor) recorded.
    Edited,
    /// Records missing before a line (a gap in seq).
    Deleted,
    /// Records out of seq order, or a seq that appears twice.
    Reordered,
    /// Records missing at the end (the head anchor records a later seq than the file holds).
    Truncated,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Malformed => "malformed",
            ProblemKind::Edited => "edited",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Truncated => "truncated",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the chain, the seq numbering and the head anchor of the log at `path`. `Err` only if
/// the file cannot be read; everything wrong inside it is a [`Problem`] in the report.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let (bytes, head) = read_locked(path)?;
    Ok(analyse(&bytes, head, &head_path(path)))
}

/// A line that parsed as a record.
struct Entry {
    seq: u64,
    prev: String,
}

fn parse_entry(raw: &[u8]) -> Result<Entry, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "is not valid UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err("is empty".to_string());
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("is not valid JSON ({})", json_reason(&e)))?;
    if !value.is_object() {
        return Err("is not a JSON object".to_string());
    }
    let seq = value
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|&seq| seq > 0)
        .ok_or_else(|| "has no valid \"seq\" (a positive integer)".to_string())?;
    let prev = value
        .get("prev")
        .and_then(Value::as_str)
        .filter(|prev| is_hash(prev))
        .ok_or_else(|| "has no valid \"prev\" (64 lowercase hex digits)".to_string())?;
    Ok(Entry {
        seq,
        prev: prev.to_string(),
    })
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn seq_range(from: u64, to: u64) -> String {
    if from == to {
        format!("seq {from}")
    } else {
        format!("seq {from}-{to}")
    }
}

/// The analysis behind [`verify`], on the file's bytes and its head anchor.
///
/// 1. Lines that are not records are `Malformed`.
/// 2. A line whose hash nobody recorded, between neighbours whose seqs leave exactly one slot
///    for it, was edited in place: `Edited`. Such lines and malformed ones are "damaged": they
///    hold a slot but take no part in the checks below.
/// 3. A seq seen twice: the copy that does not chain is reported (`Reordered`).
/// 4. Lines not on the longest run of increasing seqs are out of order (`Reordered`); a pair
///    of neighbours is reported as one swap.
/// 5. Walking the records in seq order (which undoes any reordering): a seq gap not filled by
///    damaged lines is `Deleted`; consecutive seqs that do not chain mean an edit.
/// 6. The head anchor: the record with its seq must have its hash (`Edited` otherwise); a head
///    seq beyond the last record means lines were cut from the end (`Truncated`).
fn analyse(bytes: &[u8], head: HeadRead, head_path: &Path) -> VerifyReport {
    let raws = split_lines(bytes);
    let n = raws.len();
    let hashes: Vec<String> = raws.iter().map(|raw| sha256_hex(raw)).collect();
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    // 1. Parse.
    let entries: Vec<Option<Entry>> = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| match parse_entry(raw) {
            Ok(entry) => Some(entry),
            Err(reason) => {
                problems.push(Problem {
                    line: i + 1,
                    kind: ProblemKind::Malformed,
                    message: format!("line {}: {reason}", i + 1),
                });
                None
            }
        })
        .collect();
    let recorded: HashSet<&str> = entries.iter().flatten().map(|e| e.prev.as_str()).collect();
    let head_hash = match &head {
        Ok(Some(h)) => Some(h.hash.as_str()),
        _ => None,
    };
    let vouched =
        |i: usize| recorded.contains(hashes[i].as_str()) || head_hash == Some(hashes[i].as_str());

    // 2. Edited in place.
    let mut damaged: Vec<bool> = entries.iter().map(Option::is_none).collect();
    for i in 0..n.saturating_sub(1) {
        let (Some(cur), Some(next)) = (&entries[i], &entries[i + 1]) else {
            continue;
        };
        if next.prev == hashes[i] || recorded.contains(hashes[i].as_str()) {
            continue;
        }
        let before = if i == 0 {
            Some(0)
        } else {
            entries[i - 1].as_ref().map(|e| e.seq)
        };
        if before.and_then(|b| b.checked_add(2)) == Some(next.seq) {
            damaged[i] = true;
            problems.push(Problem {
                line: i + 1,
                kind: ProblemKind::Edited,
                message: format!(
                    "line {} (seq {}) was changed after it was written: its hash no longer \
                     matches the prev recorded by line {}",
                    i + 1,
                    cur.seq,
                    i + 2
                ),
            });
        }
    }
    let mut damaged_before = vec![0usize; n + 1];
    for i in 0..n {
        damaged_before[i + 1] = damaged_before[i] + usize::from(damaged[i]);
    }
    // Damaged lines strictly between physical indices a and b (a < b).
    let damaged_between = |a: usize, b: usize| damaged_before[b] - damaged_before[a + 1];

    // 3. Duplicate seqs: keep the copy the chain (or head) vouches for, else the first.
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    let mut duplicates: Vec<(usize, usize)> = Vec::new();
    for i in 0..n {
        let Some(entry) = entries[i].as_ref().filter(|_| !damaged[i]) else {
            continue;
        };
        match by_seq.get(&entry.seq).copied() {
            None => {
                by_seq.insert(entry.seq, i);
            }
            Some(kept) if !vouched(kept) && vouched(i) => {
                by_seq.insert(entry.seq, i);
                duplicates.push((kept, i));
            }
            Some(kept) => duplicates.push((i, kept)),
        }
    }
    for &(dup, kept) in &duplicates {
        let seq = entries[dup].as_ref().map_or(0, |e| e.seq);
        let what = if raws[dup] == raws[kept] {
            "a copy of"
        } else {
            "a second record with the seq of"
        };
        problems.push(Problem {
            line: dup + 1,
            kind: ProblemKind::Reordered,
            message: format!(
                "line {} (seq {seq}) is {what} line {}: a duplicated, replayed or forged record",
                dup + 1,
                kept + 1
            ),
        });
    }
    let seq_of = |i: usize| entries[i].as_ref().map_or(0, |e| e.seq);
    let mut good: Vec<usize> = by_seq.values().copied().collect();
    good.sort_unstable();

    // 4. Out of order: lines off the longest increasing run of seqs.
    let seqs: Vec<u64> = good.iter().map(|&i| seq_of(i)).collect();
    let in_run = longest_increasing(&seqs);
    let mut sorted = good.clone();
    sorted.sort_unstable_by_key(|&i| seq_of(i));
    let rank: HashMap<usize, usize> = sorted.iter().enumerate().map(|(r, &i)| (i, r)).collect();
    let mut k = 0;
    while k < good.len() {
        if in_run[k] {
            k += 1;
            continue;
        }
        // A block of physically adjacent lines with consecutive seqs, all out of place.
        let first = good[k];
        let mut last_k = k;
        while last_k + 1 < good.len()
            && !in_run[last_k + 1]
            && good[last_k + 1] == good[last_k] + 1
            && seq_of(good[last_k + 1]) == seq_of(good[last_k]) + 1
        {
            last_k += 1;
        }
        let last = good[last_k];
        k = last_k + 1;
        let r_first = rank.get(&first).copied().unwrap_or(0);
        let r_last = rank.get(&last).copied().unwrap_or(0);
        let before = r_first.checked_sub(1).map(|r| sorted[r]);
        let after = sorted.get(r_last + 1).copied();
        let swapped_with = if first == last {
            [before, after]
                .into_iter()
                .flatten()
                .find(|&o| o + 1 == first || first + 1 == o)
        } else {
            None
        };
        let message = if let Some(other) = swapped_with {
            let (a, b) = (first.min(other), first.max(other));
            format!(
                "lines {} and {} are out of order: seq {} comes before seq {}",
                a + 1,
                b + 1,
                seq_of(a),
                seq_of(b)
            )
        } else {
            let what = if first == last {
                format!(
                    "line {} (seq {}) is out of order: it belongs",
                    first + 1,
                    seq_of(first)
                )
            } else {
                format!(
                    "lines {}-{} ({}) are out of order: they belong",
                    first + 1,
                    last + 1,
                    seq_range(seq_of(first), seq_of(last))
                )
            };
            let place = match (before, after) {
                (Some(p), _) => format!("after line {} (seq {})", p + 1, seq_of(p)),
                (None, Some(s)) => format!("before line {} (seq {})", s + 1, seq_of(s)),
                (None, None) => "elsewhere".to_string(),
            };
            format!("{what} {place}")
        };
        problems.push(Problem {
            line: first.min(swapped_with.unwrap_or(first)) + 1,
            kind: ProblemKind::Reordered,
            message,
        });
    }

    // 5. Walk in seq order.
    let mut previous: Option<usize> = None;
    for &b in &sorted {
        let Some(eb) = entries[b].as_ref() else {
            continue;
        };
        let (a_seq, a_hash) = match previous {
            None => (0, ZERO_HASH),
            Some(a) => (seq_of(a), hashes[a].as_str()),
        };
        let between = match previous {
            None => damaged_before[b],
            Some(a) if a < b => damaged_between(a, b),
            Some(_) => 0,
        } as u64;
        let gap = eb.seq.saturating_sub(a_seq);
        let linked = eb.prev == a_hash;
        let missing = gap.saturating_sub(1).saturating_sub(between);
        if missing > 0 {
            let mut message = if between == 0 {
                format!(
                    "line {}: {} missing before it ({})",
                    b + 1,
                    plural(missing, "record", "records"),
                    seq_range(a_seq + 1, eb.seq - 1)
                )
            } else {
                format!(
                    "line {}: {} missing between seq {a_seq} and seq {} (besides {})",
                    b + 1,
                    plural(missing, "record", "records"),
                    eb.seq,
                    plural(between, "damaged line", "damaged lines")
                )
            };
            if linked {
                message.push_str(&format!(
                    "; the chain is intact across the gap, so they were cut from the end of \
                     the log (or lost in a crash before being synced) before line {} was \
                     appended",
                    b + 1
                ));
            }
            problems.push(Problem {
                line: b + 1,
                kind: ProblemKind::Deleted,
                message,
            });
        } else if gap == 1 && !linked {
            let problem = match previous {
                Some(a) if !recorded.contains(hashes[a].as_str()) => Problem {
                    line: a + 1,
                    kind: ProblemKind::Edited,
                    message: format!(
                        "line {} (seq {a_seq}) was changed after it was written: its hash no \
                         longer matches the prev recorded by line {} (seq {})",
                        a + 1,
                        b + 1,
                        eb.seq
                    ),
                },
                Some(a) => Problem {
                    line: b + 1,
                    kind: ProblemKind::Edited,
                    message: format!(
                        "line {} (seq {}) does not chain to line {} (seq {a_seq}): its prev \
                         was changed, or it was forged",
                        b + 1,
                        eb.seq,
                        a + 1
                    ),
                },
                None => Problem {
                    line: b + 1,
                    kind: ProblemKind::Edited,
                    message: format!(
                        "line {} (seq 1) was changed: the first record's prev must be 64 zeros",
                        b + 1
                    ),
                },
            };
            problems.push(problem);
        }
        previous = Some(b);
    }

    // 6. The head anchor.
    match head {
        Ok(None) if n > 0 => notes.push(format!(
            "no head anchor {}: an edit or deletion of the last line(s) cannot be detected",
            head_path.display()
        )),
        Ok(None) => {}
        Err(reason) => problems.push(Problem {
            line: 0,
            kind: ProblemKind::Malformed,
            message: format!(
                "head anchor {} {reason}: it cannot vouch for the end of the log",
                head_path.display()
            ),
        }),
        Ok(Some(head)) => {
            let last = sorted.last().copied();
            let max_seq = last.map_or(0, seq_of);
            if let Some(&i) = by_seq.get(&head.seq) {
                if hashes[i] != head.hash {
                    problems.push(Problem {
                        line: i + 1,
                        kind: ProblemKind::Edited,
                        message: format!(
                            "line {} (seq {}) was changed after it was written: its hash no \
                             longer matches the head anchor {}",
                            i + 1,
                            head.seq,
                            head_path.display()
                        ),
                    });
                } else if max_seq > head.seq {
                    notes.push(format!(
                        "head anchor {} is {} behind the log (it records seq {} of {max_seq}): \
                         probably a crash between an append and the anchor update; later \
                         records are not anchored",
                        head_path.display(),
                        plural(max_seq - head.seq, "record", "records"),
                        head.seq
                    ));
                }
            } else if head.seq > max_seq {
                let trailing = match last {
                    Some(l) => damaged_before[n] - damaged_before[l + 1],
                    None => damaged_before[n],
                } as u64;
                let missing = (head.seq - max_seq).saturating_sub(trailing);
                if missing > 0 {
                    let start = if n == 0 {
                        "the log is empty".to_string()
                    } else {
                        format!("the log ends at line {n}")
                    };
                    problems.push(Problem {
                        line: n,
                        kind: ProblemKind::Truncated,
                        message: format!(
                            "{start} but its head anchor records seq {}: {} missing at the end \
                             ({}); lines were deleted from the end of the log (or lost in a \
                             crash before being synced)",
                            head.seq,
                            plural(missing, "record", "records"),
                            seq_range(head.seq - missing + 1, head.seq)
                        ),
                    });
                }
            }
            // Otherwise the head's record sits in a gap or a damaged slot: already reported.
        }
    }

    problems.sort_by_key(|p| (p.line == 0, p.line));
    VerifyReport {
        lines: n,
        problems,
        notes,
    }
}

/// Marks the members of one longest strictly increasing subsequence of `xs`.
fn longest_increasing(xs: &[u64]) -> Vec<bool> {
    let mut tails: Vec<usize> = Vec::new();
    let mut parent: Vec<Option<usize>> = vec![None; xs.len()];
    for (i, &x) in xs.iter().enumerate() {
        let at = tails.partition_point(|&t| xs[t] < x);
        if at > 0 {
            parent[i] = Some(tails[at - 1]);
        }
        if at == tails.len() {
            tails.push(i);
        } else {
            tails[at] = i;
        }
    }
    let mut member = vec![false; xs.len()];
    let mut cursor = tails.last().copied();
    while let Some(i) = cursor {
        member[i] = true;
        cursor = parent[i];
    }
    member
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/remedy/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 1..=n {
            let appended = log.append(json!({"event": "step", "n": i}), false).unwrap();
            assert_eq!(appended.seq, i);
        }
        log.sync().unwrap();
        (dir, path)
    }

    #[test]
    fn durable_appends_waiting_for_a_sync_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        log.append(json!({"event": "first"}), true).unwrap();
        assert_eq!(log.syncs(), 1);
        // A sync in progress: hold its lock while five threads append durably.
        let in_progress = log.sync.lock().unwrap();
        let threads: Vec<_> = (0..5)
            .map(|i| {
                let log = log.clone();
                std::thread::spawn(move || log.append(json!({"event": "step", "n": i}), true))
            })
            .collect();
        // Every line is written before any of them is durable.
        while log.lock_inner().written < 6 {
            std::thread::yield_now();
        }
        assert_eq!(lines(&path).len(), 6);
        let head: Value =
            serde_json::from_str(&fs::read_to_string(head_path(&path)).unwrap()).unwrap();
        assert_eq!(head["seq"], 1, "the head anchors only what is on disk");
        drop(in_progress);
        for t in threads {
            t.join().unwrap().unwrap();
        }
        // The first thread to get the lock synced for all five; the others found it done.
        assert_eq!(log.syncs(), 2);
        let head: Value =
            serde_json::from_str(&fs::read_to_string(head_path(&path)).unwrap()).unwrap();
        assert_eq!(head["seq"], 6);
        let report = verify(&path).unwrap();
        assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
        // Nothing pending: a sync now does nothing.
        log.sync().unwrap();
        assert_eq!(log.syncs(), 2);
    }

    #[test]
    fn many_threads_appending_durably_leave_a_clean_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for n in 0..50 {
                        log.append(json!({"t": t, "n": n}), n % 2 == 0).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.sync().unwrap();
        assert_eq!(lines(&path).len(), 400);
        assert!(log.syncs() <= 201, "{} syncs", log.syncs());
        let report = verify(&path).unwrap();
        assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(path, text).unwrap();
    }

    fn kinds(report: &VerifyReport) -> Vec<(usize, ProblemKind)> {
        report.problems.iter().map(|p| (p.line, p.kind)).collect()
    }

    #[test]
    fn append_and_verify_clean() {
        let (_dir, path) = log_with(5);
        let text = lines(&path);
        assert_eq!(text.len(), 5);
        assert!(text[0].starts_with("{\"v\":1,\"seq\":1,\"ts\":\"20"));
        assert!(text[0].contains(&format!("\"prev\":\"{ZERO_HASH}\"")));
        assert!(text[1].contains(&sha256_hex(text[0].as_bytes())));
        let report = verify(&path).unwrap();
        assert_eq!(report.lines, 5);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        let head = fs::read_to_string(head_path(&path)).unwrap();
        assert_eq!(
            head.trim(),
            format!(
                "{{\"seq\":5,\"hash\":\"{}\"}}",
                sha256_hex(text[4].as_bytes())
            )
        );
    }

    #[test]
    fn record_layout_and_timestamp() {
        let (_dir, path) = log_with(1);
        let records = read(&path).unwrap();
        let keys: Vec<&String> = records[0].value.as_object().unwrap().keys().collect();
        assert!(keys.contains(&&"event".to_string()));
        let ts = records[0].value["ts"].as_str().unwrap();
        // 2025-01-02T03:04:05.678Z
        assert_eq!(ts.len(), 24, "{ts}");
        assert_eq!(&ts[19..20], ".");
        assert!(ts.ends_with('Z'));
        assert!(ts.parse::<jiff::Timestamp>().is_ok());
    }

    #[test]
    fn reopen_continues_chain_and_durable_append() {
        let (_dir, path) = log_with(3);
        let log = AuditLog::open(&path).unwrap();
        let appended = log.append(json!({"event": "durable"}), true).unwrap();
        assert_eq!(appended.seq, 4);
        assert_eq!(appended.hash, sha256_hex(lines(&path)[3].as_bytes()));
        assert!(verify(&path).unwrap().is_clean());
    }

    #[test]
    fn edited_middle_line() {
        let (_dir, path) = log_with(6);
        let mut text = lines(&path);
        text[2] = text[2].replace("\"n\":3", "\"n\":33");
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(kinds(&report), vec![(3, ProblemKind::Edited)], "{report:?}");
        assert!(report.problems[0].message.starts_with("line 3 (seq 3)"));
    }

    #[test]
    fn edited_first_line() {
        let (_dir, path) = log_with(4);
        let mut text = lines(&path);
        text[0] = text[0].replace("\"n\":1", "\"n\":11");
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(kinds(&report), vec![(1, ProblemKind::Edited)], "{report:?}");
    }

    #[test]
    fn edited_last_line_caught_by_head() {
        let (_dir, path) = log_with(5);
        let mut text = lines(&path);
        text[4] = text[4].replace("\"step\"", "\"nothing\"");
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(kinds(&report), vec![(5, ProblemKind::Edited)], "{report:?}");
        assert!(report.problems[0].message.contains("head anchor"));
    }

    #[test]
    fn deleted_middle_lines() {
        let (_dir, path) = log_with(10);
        let mut text = lines(&path);
        text.drain(6..8); // seq 7 and 8
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(7, ProblemKind::Deleted)],
            "{report:?}"
        );
        assert_eq!(
            report.problems[0].message,
            "line 7: 2 records missing before it (seq 7-8)"
        );
    }

    #[test]
    fn deleted_first_line() {
        let (_dir, path) = log_with(4);
        let mut text = lines(&path);
        text.remove(0);
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(1, ProblemKind::Deleted)],
            "{report:?}"
        );
        assert!(report.problems[0].message.contains("(seq 1)"));
    }

    #[test]
    fn deleted_last_lines_are_truncation() {
        let (_dir, path) = log_with(6);
        let mut text = lines(&path);
        text.truncate(4);
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(4, ProblemKind::Truncated)],
            "{report:?}"
        );
        assert!(report.problems[0].message.contains("(seq 5-6)"));
    }

    #[test]
    fn truncation_stays_visible_after_new_appends() {
        let (_dir, path) = log_with(6);
        let mut text = lines(&path);
        text.truncate(4);
        write_lines(&path, &text);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.append(json!({"event": "later"}), true).unwrap().seq, 7);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(5, ProblemKind::Deleted)],
            "{report:?}"
        );
        assert!(report.problems[0].message.contains("(seq 5-6)"));
        assert!(report.problems[0].message.contains("chain is intact"));
    }

    #[test]
    fn swapped_adjacent_lines() {
        let (_dir, path) = log_with(8);
        let mut text = lines(&path);
        text.swap(4, 5);
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(5, ProblemKind::Reordered)],
            "{report:?}"
        );
        assert_eq!(
            report.problems[0].message,
            "lines 5 and 6 are out of order: seq 6 comes before seq 5"
        );
    }

    #[test]
    fn swapped_last_two_lines() {
        let (_dir, path) = log_with(5);
        let mut text = lines(&path);
        text.swap(3, 4);
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(4, ProblemKind::Reordered)],
            "{report:?}"
        );
    }

    #[test]
    fn moved_line_and_distant_swap() {
        let (_dir, path) = log_with(9);
        let original = lines(&path);
        let mut text = original.clone();
        let moved = text.remove(2); // seq 3 moved to the end of the file
        text.push(moved);
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(9, ProblemKind::Reordered)],
            "{report:?}"
        );
        assert!(report.problems[0].message.contains("belongs after line 2"));

        let mut text = original;
        text.swap(2, 4); // seq 3 and 5
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.kind == ProblemKind::Reordered),
            "{report:?}"
        );
    }

    #[test]
    fn malformed_line() {
        let (_dir, path) = log_with(5);
        let mut text = lines(&path);
        text[1] = "this is not json".to_string();
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(2, ProblemKind::Malformed)],
            "{report:?}"
        );
        assert!(report.problems[0]
            .message
            .starts_with("line 2: is not valid JSON"));
        let err = read(&path).unwrap_err();
        assert!(matches!(err, AuditError::BadLine { line: 2, .. }), "{err}");
    }

    #[test]
    fn inserted_duplicate_line() {
        let (_dir, path) = log_with(5);
        let mut text = lines(&path);
        let copy = text[1].clone();
        text.insert(3, copy);
        write_lines(&path, &text);
        let report = verify(&path).unwrap();
        assert_eq!(
            kinds(&report),
            vec![(4, ProblemKind::Reordered)],
            "{report:?}"
        );
        assert!(report.problems[0].message.contains("a copy of line 2"));
    }

    #[test]
    fn head_behind_or_missing_is_not_a_problem() {
        let (_dir, path) = log_with(4);
        let text = lines(&path);
        write_head(&head_path(&path), 2, &sha256_hex(text[1].as_bytes()), false).unwrap();
        let report = verify(&path).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.notes.len(), 1);
        fs::remove_file(head_path(&path)).unwrap();
        let report = verify(&path).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert!(report.notes[0].contains("no head anchor"));
    }

    #[test]
    fn two_handles_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let a = Arc::new(AuditLog::open(&path).unwrap());
        let b = Arc::new(AuditLog::open(&path).unwrap());
        let threads: Vec<_> = [a, b]
            .into_iter()
            .enumerate()
            .map(|(who, log)| {
                std::thread::spawn(move || {
                    for i in 0..40 {
                        log.append(json!({"who": who, "i": i}), i % 10 == 0)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let records = read(&path).unwrap();
        let seqs: Vec<u64> = records
            .iter()
            .map(|r| r.value["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=80).collect::<Vec<_>>());
        let report = verify(&path).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert!(report.notes.is_empty(), "{report:?}");
    }

    #[test]
    fn open_fails_cleanly_on_unwritable_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("plain-file");
        fs::write(&blocker, "x").unwrap();
        let err = AuditLog::open(&blocker.join("sub/audit.jsonl"))
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with("cannot create audit log directory "),
            "{message}"
        );
        assert!(message.contains("plain-file/sub"), "{message}");
        assert!(!message.contains("os error"), "{message}");
    }

    #[test]
    fn open_refuses_damaged_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, "{\"v\":1,\"seq\":1,\"ts\":\"x\",\"pre").unwrap();
        let err = AuditLog::open(&path).err().unwrap();
        assert!(matches!(err, AuditError::BadTail { .. }), "{err}");
        assert!(err.to_string().contains("is not valid JSON"), "{err}");
    }

    #[test]
    fn append_rejects_bad_fields() {
        let (_dir, path) = log_with(0);
        let log = AuditLog::open(&path).unwrap();
        assert!(matches!(
            log.append(json!([1, 2]), false),
            Err(AuditError::NotAnObject { .. })
        ));
        assert!(matches!(
            log.append(json!({"seq": 9}), false),
            Err(AuditError::ReservedField { .. })
        ));
        assert!(read(&path).unwrap().is_empty());
    }

    #[test]
    fn read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let fields =
            json!({"event": "run", "note": "multi\nline \"quoted\"", "args": {"x": [1, 2]}});
        let appended = log.append(fields.clone(), true).unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].line, 1);
        assert_eq!(sha256_hex(records[0].raw.as_bytes()), appended.hash);
        for (key, value) in fields.as_object().unwrap() {
            assert_eq!(&records[0].value[key], value);
        }
        assert_eq!(records[0].value["v"], json!(FORMAT_VERSION));
    }

    #[test]
    fn default_path_prefers_env() {
        assert_eq!(
            default_path_from(Some("/x/audit.jsonl".into())),
            PathBuf::from("/x/audit.jsonl")
        );
        let fallback = default_path_from(Some(OsString::new()));
        assert!(fallback.ends_with("remedy/audit.jsonl"), "{fallback:?}");
    }

    #[test]
    fn audit_log_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AuditLog>();
    }

    #[cfg(unix)]
    #[test]
    fn modes_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, path) = log_with(1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&head_path(&path)), 0o600);
        assert_eq!(mode(&dir.path().join("state/remedy")), 0o700);
    }
}
