//! The tamper-evident, append-only audit log: one JSON object per line, hash-chained.
//!
//! Owns: the on-disk format (every line carries `v`, `seq`, `ts` and `prev`, the SHA-256 of the
//! previous line's exact bytes, 64 zeros on the first line), appending safely from several
//! processes at once (an exclusive `File::lock()` around each append), durability (a durable
//! append is on disk, `sync_data`, before it returns), the tail anchor `<log>.head`, reading the
//! log back and verifying it: [`verify`](fn@verify) says which line is wrong and how (edited, deleted,
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
//! [`verify`](fn@verify) catch an edit or deletion of the last line(s), which the chain alone cannot. A
//! missing head, or one behind the log (lines not yet synced, or a crash between append and
//! anchor update), is not a problem. A head *ahead* of the log means records were cut from the
//! end: a handle that opens
//! such a log continues numbering after the head's seq, so the gap stays visible to [`verify`](fn@verify)
//! even after new lines are appended.
//!
//! Files: `write.rs` the writer (appends, locking, the group commit, reading the tail to chain
//! to), `head.rs` the `.head` anchor, `read.rs` reading records back, `verify.rs` the chain
//! verifier. This file holds what they share: the format constants, [`AuditError`], the file
//! lock and the hashing and JSON helpers.

mod head;
mod read;
mod verify;
mod write;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use read::{read, Record};
pub use verify::{verify, Problem, ProblemKind, VerifyReport};
pub use write::{Appended, AuditLog};

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
    /// A line [`read`](fn@read) cannot parse.
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
