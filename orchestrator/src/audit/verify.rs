//! The chain verifier: [`verify`] says which line is wrong and how (edited, deleted, reordered,
//! malformed, truncated), resynchronising after each break so that one edit gives one problem.
//!
//! Owns the report types ([`VerifyReport`], [`Problem`], [`ProblemKind`]) and the analysis of
//! a log's bytes and its head anchor. Leaves reading the file to `read.rs` and rendering the
//! report to the `audit verify` command.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde_json::Value;

use super::head::{head_path, HeadRead};
use super::read::{read_locked, split_lines};
use super::{is_hash, json_reason, sha256_hex, AuditError, ZERO_HASH};

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
