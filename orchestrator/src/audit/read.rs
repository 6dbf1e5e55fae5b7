//! Reading the log back: every line as a [`Record`], under a shared lock.
//!
//! Owns reading the whole file without seeing a half-written line and splitting it into lines.
//! Does not check the chain: that is `verify.rs`, which reads through the same functions.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::head::{head_path, read_head, HeadRead};
use super::{json_reason, AuditError, FileLock};

/// Reads the whole log under a shared lock (so no half-written line is seen), and its head.
pub(super) fn read_locked(path: &Path) -> Result<(Vec<u8>, HeadRead), AuditError> {
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
pub(super) fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
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
/// Does not check the chain: that is [`verify`](fn@super::verify)'s job.
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
