//! The `.head` anchor beside the log: where it lives, writing it in place, reading it back.
//!
//! Owns the anchor's file format (`{"seq":N,"hash":"<sha>"}`) and its path (`<log>.head`).
//! Leaves to others when it is written (the writer's group commit, `write.rs`) and what an
//! anchor ahead of or behind the log means (the writer numbers on after it; `verify.rs` judges
//! it).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{io_reason, is_hash, json_reason};

/// `<log>.head`, beside the log.
pub(super) fn head_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".head");
    PathBuf::from(name)
}

pub(super) fn write_head(path: &Path, seq: u64, hash: &str, durable: bool) -> io::Result<()> {
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

pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) hash: String,
}

/// A head anchor as read: absent, or present, or unreadable (with the reason).
pub(super) type HeadRead = Result<Option<Head>, String>;

/// `Ok(None)` if there is no head file; `Err(reason)` if it cannot be read or parsed.
pub(super) fn read_head(path: &Path) -> HeadRead {
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
