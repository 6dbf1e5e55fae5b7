//! `zcat` and `zgrep` over real gzip files (the rotated `management-server.log.*.gz`): `zcat`
//! decompresses each file in turn (a plain file is refused with gzip's `not in gzip format`,
//! exit 1); `zgrep` takes grep's options and reads gzip and plain files alike, as the real
//! wrapper does.

use super::files::{grep_with, text_of};
use super::{operands, Output};
use crate::zone::Guest;

pub(super) fn zcat(guest: &Guest, args: &[String]) -> Output {
    let files: Vec<&str> = operands(args)
        .into_iter()
        .filter(|a| !a.starts_with('-'))
        .collect();
    if files.is_empty() {
        return Output::err(1, "sim-ssh: zcat needs a file (there is no stdin)");
    }
    let mut out = Output::default();
    for file in files {
        match text_of(guest, file, "zcat", false) {
            Ok(text) => out.stdout.push_str(&text),
            Err(line) => {
                out.stderr.push_str(&line);
                out.stderr.push('\n');
                out.status = 1;
            }
        }
    }
    out
}

pub(super) fn zgrep(guest: &Guest, args: &[String]) -> Output {
    grep_with(args, "zgrep", |file| text_of(guest, file, "zgrep", true))
}
