//! Ansible host patterns: which hosts a play or a remediation targets.
//!
//! Owned here: parsing a pattern ([`Pattern::parse`], syntax errors only) and evaluating it
//! against an [`Inventory`] (through [`Inventory::select`]). Supported, as in Ansible: `all` and
//! `*`; a host or group name; `a:b` and `a,b` (union; with a comma present, only commas
//! separate, so a `~regex` may contain `:`); `a:&b` (intersection); `a:!b` (exclusion); a
//! pattern of only `&`/`!` terms starts from `all`; `*` and `?` wildcards matching host and
//! group names; `~regex` over host names (anchored at the start, like Python's `re.match`);
//! subscripts `group[0]`, `group[-1]`, `group[1:3]` (inclusive), `group[2:]`. Terms are
//! evaluated as Ansible does: the union of plain terms, then intersections, then exclusions.
//! `localhost` (and `127.0.0.1`, `::1`) select the implicit local host when the inventory does
//! not define them; `all` never includes it.
//!
//! Stricter than Ansible, on purpose: a term that matches nothing (no such host or group, a
//! wildcard or regex matching no name) is an error, because a typo in a remediation target must
//! never silently select nothing. A group that exists but is empty is fine.
//!
//! Not here: what the hosts are (the parent module).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use regex::Regex;

use super::Inventory;

/// A parsed host pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone)]
struct Term {
    op: Op,
    /// The term as written, without its operator (for messages).
    text: String,
    matcher: Matcher,
    subscript: Option<Subscript>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Intersect,
    Exclude,
}

#[derive(Debug, Clone)]
enum Matcher {
    All,
    Name(String),
    Glob(Regex),
    Regex(Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscript {
    /// `[i]`; negative counts from the end.
    Index(i64),
    /// `[start:end]` inclusive; `[start:]` to the end.
    Range(usize, Option<usize>),
}

/// A host pattern that cannot be parsed, or that names something the inventory lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty host pattern")]
    Empty,
    #[error("host pattern \"{pattern}\": empty term")]
    EmptyTerm { pattern: String },
    #[error("host pattern \"{pattern}\": \"{op}\" must be followed by a host or group name")]
    MissingName { pattern: String, op: char },
    #[error("host pattern term \"{term}\": invalid regular expression: {reason}")]
    BadRegex { term: String, reason: String },
    #[error(
        "host pattern term \"{term}\": subscript out of range (the selection has {len} hosts)"
    )]
    SubscriptOutOfRange { term: String, len: usize },
    #[error(
        "unknown host or group \"{name}\"{}",
        unknown_tail(suggestions, known_groups)
    )]
    UnknownName {
        name: String,
        /// Host and group names close to `name` (a likely typo), closest first.
        suggestions: Vec<String>,
        known_groups: Vec<String>,
    },
}

/// What follows "unknown host or group": a suggestion, then the groups there are.
fn unknown_tail(suggestions: &[String], groups: &[String]) -> String {
    let groups = known_list(groups);
    match crate::error::did_you_mean(suggestions) {
        Some(hint) => format!("; {hint} ({groups})"),
        None => format!(" ({groups})"),
    }
}

fn known_list(groups: &[String]) -> String {
    if groups.is_empty() {
        "inventory has no groups besides all".to_string()
    } else {
        format!("inventory has groups: {}", groups.join(", "))
    }
}

/// Host and group names of `inv` that `name` is probably a misspelling of.
pub fn similar_names(inv: &Inventory, name: &str) -> Vec<String> {
    let groups = inv.user_group_names();
    let hosts = inv.hosts().map(|h| h.name.as_str());
    crate::error::similar(name, groups.iter().map(String::as_str).chain(hosts))
}

impl Pattern {
    /// Parses a pattern. Only syntax is checked here; names are checked by evaluation.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(PatternError::Empty);
        }
        let pieces: Vec<&str> = if trimmed.contains(',') {
            trimmed.split(',').collect()
        } else if is_ipv6_literal(trimmed) {
            vec![trimmed]
        } else {
            split_colons(trimmed)
        };
        let mut terms = Vec::with_capacity(pieces.len());
        for piece in pieces {
            terms.push(parse_term(trimmed, piece.trim())?);
        }
        Ok(Pattern {
            text: trimmed.to_string(),
            terms,
        })
    }

    /// The pattern as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The selected hosts as inventory slots (see `Inventory::slot_host`), ascending.
    pub(super) fn evaluate(&self, inv: &Inventory) -> Result<Vec<usize>, PatternError> {
        let ordered = [Op::Union, Op::Intersect, Op::Exclude];
        let mut selected: Vec<usize> = Vec::new();
        let mut seen: HashSet<usize> = HashSet::new();
        if !self.terms.iter().any(|t| t.op == Op::Union) {
            selected = (0..inv.host_count()).collect();
            seen = selected.iter().copied().collect();
        }
        for op in ordered {
            for term in self.terms.iter().filter(|t| t.op == op) {
                let matched = term.matches(inv)?;
                match op {
                    Op::Union => {
                        for slot in matched {
                            if seen.insert(slot) {
                                selected.push(slot);
                            }
                        }
                    }
                    Op::Intersect => {
                        let keep: HashSet<usize> = matched.into_iter().collect();
                        selected.retain(|s| keep.contains(s));
                        seen.retain(|s| keep.contains(s));
                    }
                    Op::Exclude => {
                        let drop: HashSet<usize> = matched.into_iter().collect();
                        selected.retain(|s| !drop.contains(s));
                        seen.retain(|s| !drop.contains(s));
                    }
                }
            }
        }
        selected.sort_unstable();
        Ok(selected)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Pattern::parse(text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_ipv6_literal(text: &str) -> bool {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Splits on `:` outside `[...]`, so `web[0:2]` stays one term.
fn split_colons(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                pieces.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
}

fn parse_term(pattern: &str, piece: &str) -> Result<Term, PatternError> {
    if piece.is_empty() {
        return Err(PatternError::EmptyTerm {
            pattern: pattern.to_string(),
        });
    }
    let (op, rest) = match piece.chars().next() {
        Some('&') => (Op::Intersect, piece[1..].trim()),
        Some('!') => (Op::Exclude, piece[1..].trim()),
        _ => (Op::Union, piece),
    };
    if rest.is_empty() {
        return Err(PatternError::MissingName {
            pattern: pattern.to_string(),
            op: if op == Op::Intersect { '&' } else { '!' },
        });
    }
    if let Some(expr) = rest.strip_prefix('~') {
        let bad = |reason: String| PatternError::BadRegex {
            term: rest.to_string(),
            reason,
        };
        if expr.is_empty() {
            return Err(bad("empty expression".into()));
        }
        let regex = Regex::new(&format!("^(?:{expr})")).map_err(|e| bad(regex_reason(&e)))?;
        return Ok(Term {
            op,
            text: rest.to_string(),
            matcher: Matcher::Regex(regex),
            subscript: None,
        });
    }
    let (name, subscript) = split_subscript(rest);
    let matcher = if name == "all" || name == "*" {
        Matcher::All
    } else if name.contains(['*', '?']) {
        let mut re = String::from("^");
        for c in name.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        let regex = Regex::new(&re).map_err(|e| PatternError::BadRegex {
            term: rest.to_string(),
            reason: regex_reason(&e),
        })?;
        Matcher::Glob(regex)
    } else {
        Matcher::Name(name.to_string())
    };
    Ok(Term {
        op,
        text: name.to_string(),
        matcher,
        subscript,
    })
}

fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.trim_start_matches("error: ").to_string())
        .unwrap_or(text)
}

/// `name[i]`, `name[-i]`, `name[a:b]`, `name[a:]`, as Ansible's subscript syntax.
fn split_subscript(text: &str) -> (&str, Option<Subscript>) {
    let Some(inner) = text.strip_suffix(']') else {
        return (text, None);
    };
    let Some(open) = inner.rfind('[') else {
        return (text, None);
    };
    let (name, spec) = (&inner[..open], &inner[open + 1..]);
    if name.is_empty() {
        return (text, None);
    }
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if let Some((start, end)) = spec.split_once(':') {
        if digits(start) && (end.is_empty() || digits(end)) {
            if let Ok(start) = start.parse::<usize>() {
                let end = if end.is_empty() {
                    None
                } else {
                    match end.parse::<usize>() {
                        Ok(end) => Some(end),
                        Err(_) => return (text, None),
                    }
                };
                return (name, Some(Subscript::Range(start, end)));
            }
        }
        return (text, None);
    }
    let unsigned = spec.strip_prefix('-').unwrap_or(spec);
    if digits(unsigned) {
        if let Ok(index) = spec.parse::<i64>() {
            return (name, Some(Subscript::Index(index)));
        }
    }
    (text, None)
}

impl Term {
    fn unknown(&self, inv: &Inventory) -> PatternError {
        PatternError::UnknownName {
            name: self.text.clone(),
            suggestions: match self.matcher {
                // A wildcard or regex is not a misspelt name.
                Matcher::Name(_) => similar_names(inv, &self.text),
                _ => Vec::new(),
            },
            known_groups: inv.user_group_names(),
        }
    }

    /// The slots this term selects, in inventory order (implicit hosts last).
    fn matches(&self, inv: &Inventory) -> Result<Vec<usize>, PatternError> {
        let mut slots: Vec<usize> = match &self.matcher {
            Matcher::All => (0..inv.host_count()).collect(),
            Matcher::Name(name) => {
                // An exact host name wins over a group of the same name, as in Ansible.
                if let Some(slot) = inv.host_slot(name) {
                    vec![slot]
                } else if let Some(members) = inv.group_members(name) {
                    members.to_vec()
                } else if let Some(slot) = inv.implicit_slot(name) {
                    vec![slot]
                } else {
                    return Err(self.unknown(inv));
                }
            }
            Matcher::Glob(regex) => {
                let mut matched_any = false;
                let mut out: HashSet<usize> = HashSet::new();
                for (group, members) in inv.groups_iter() {
                    if regex.is_match(group) {
                        matched_any = true;
                        out.extend(members.iter().copied());
                    }
                }
                for slot in 0..inv.host_count() {
                    if let Some(host) = inv.slot_host(slot) {
                        if regex.is_match(&host.name) {
                            matched_any = true;
                            out.insert(slot);
                        }
                    }
                }
                if !matched_any {
                    return Err(self.unknown(inv));
                }
                out.into_iter().collect()
            }
            Matcher::Regex(regex) => {
                let out: Vec<usize> = (0..inv.host_count())
                    .filter(|&slot| {
                        inv.slot_host(slot)
                            .is_some_and(|host| regex.is_match(&host.name))
                    })
                    .collect();
                if out.is_empty() {
                    return Err(self.unknown(inv));
                }
                out
            }
        };
        slots.sort_unstable();
        slots.dedup();
        match self.subscript {
            None => Ok(slots),
            Some(Subscript::Index(index)) => {
                let len = slots.len();
                let at = if index < 0 {
                    len.checked_sub(index.unsigned_abs() as usize)
                } else {
                    usize::try_from(index).ok().filter(|&i| i < len)
                };
                match at.and_then(|i| slots.get(i)) {
                    Some(&slot) => Ok(vec![slot]),
                    None => Err(PatternError::SubscriptOutOfRange {
                        term: self.text.clone(),
                        len,
                    }),
                }
            }
            Some(Subscript::Range(start, end)) => {
                let stop = end.map_or(slots.len(), |e| (e + 1).min(slots.len()));
                Ok(slots
                    .get(start..stop)
                    .map(<[usize]>::to_vec)
                    .unwrap_or_default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
all:
  hosts:
    bastion:
  children:
    cloudstack:
      children:
        management:
          hosts:
            mgmt1:
            mgmt2:
        hypervisors:
          hosts:
            kvm01.example.com:
            kvm02.example.com:
            kvm03.example.com:
        routers:
          hosts:
            r-12-VM:
            r-15-VM:
    db:
      hosts:
        mgmt1:
        dbhost:
    lb:
    monitored:
      hosts:
        kvm02.example.com:
        r-12-VM:
"#;

    fn inv() -> Inventory {
        Inventory::from_str("test.yml", INV).expect("inventory")
    }

    fn sel(inv: &Inventory, pattern: &str) -> Vec<String> {
        match inv.select(pattern) {
            Ok(hosts) => hosts.iter().map(|h| h.name.clone()).collect(),
            Err(e) => panic!("pattern {pattern:?} failed: {e}"),
        }
    }

    fn sel_err(inv: &Inventory, pattern: &str) -> PatternError {
        match inv.select(pattern) {
            Ok(hosts) => panic!("pattern {pattern:?} should fail, got {}", hosts.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn all_and_star() {
        let inv = inv();
        let everything = [
            "bastion",
            "mgmt1",
            "mgmt2",
            "kvm01.example.com",
            "kvm02.example.com",
            "kvm03.example.com",
            "r-12-VM",
            "r-15-VM",
            "dbhost",
        ];
        assert_eq!(sel(&inv, "all"), everything);
        assert_eq!(sel(&inv, "*"), everything);
    }

    #[test]
    fn host_and_group_names() {
        let inv = inv();
        assert_eq!(sel(&inv, "mgmt2"), ["mgmt2"]);
        assert_eq!(sel(&inv, "routers"), ["r-12-VM", "r-15-VM"]);
        assert_eq!(sel(&inv, "cloudstack").len(), 7);
        assert_eq!(sel(&inv, "ungrouped"), ["bastion"]);
    }

    #[test]
    fn union_with_colon_and_comma_dedups_in_inventory_order() {
        let inv = inv();
        let expected = ["mgmt1", "mgmt2", "r-12-VM", "r-15-VM", "dbhost"];
        assert_eq!(sel(&inv, "routers:db:management"), expected);
        assert_eq!(sel(&inv, "routers, db ,management"), expected);
    }

    #[test]
    fn intersection_and_exclusion() {
        let inv = inv();
        assert_eq!(
            sel(&inv, "cloudstack:&monitored"),
            ["kvm02.example.com", "r-12-VM"]
        );
        assert_eq!(
            sel(&inv, "hypervisors:!monitored"),
            ["kvm01.example.com", "kvm03.example.com"]
        );
        // Exclusions apply after every union, wherever they are written.
        assert_eq!(sel(&inv, "!monitored:routers"), ["r-15-VM"]);
        assert_eq!(
            sel(&inv, "management:&db:routers"),
            ["mgmt1"],
            "intersection applies to the union of all plain terms, after it"
        );
    }

    #[test]
    fn leading_exclusion_alone_means_all_but() {
        let inv = inv();
        assert_eq!(sel(&inv, "!cloudstack"), ["bastion", "dbhost"]);
        assert_eq!(sel(&inv, "&routers"), ["r-12-VM", "r-15-VM"]);
    }

    #[test]
    fn wildcards_match_hosts_and_groups() {
        let inv = inv();
        assert_eq!(
            sel(&inv, "kvm*"),
            [
                "kvm01.example.com",
                "kvm02.example.com",
                "kvm03.example.com"
            ]
        );
        assert_eq!(
            sel(&inv, "*.example.com:!kvm02*"),
            ["kvm01.example.com", "kvm03.example.com"]
        );
        // `rout*` matches the group `routers`.
        assert_eq!(sel(&inv, "rout*"), ["r-12-VM", "r-15-VM"]);
        assert_eq!(sel(&inv, "mgmt?"), ["mgmt1", "mgmt2"]);
    }

    #[test]
    fn regex_over_host_names() {
        let inv = inv();
        assert_eq!(sel(&inv, "~r-1[25]-VM"), ["r-12-VM", "r-15-VM"]);
        assert_eq!(
            sel(&inv, "~kvm0[13]"),
            ["kvm01.example.com", "kvm03.example.com"]
        );
        // Anchored at the start, like Ansible's re.match.
        assert!(matches!(
            sel_err(&inv, "~example"),
            PatternError::UnknownName { .. }
        ));
        // With a comma, `:` is part of the regex.
        assert_eq!(
            sel(&inv, "~mgmt(?:1|2),dbhost"),
            ["mgmt1", "mgmt2", "dbhost"]
        );
    }

    #[test]
    fn subscripts() {
        let inv = inv();
        assert_eq!(sel(&inv, "hypervisors[0]"), ["kvm01.example.com"]);
        assert_eq!(sel(&inv, "hypervisors[-1]"), ["kvm03.example.com"]);
        assert_eq!(
            sel(&inv, "hypervisors[1:2]"),
            ["kvm02.example.com", "kvm03.example.com"]
        );
        assert_eq!(sel(&inv, "hypervisors[1:]:routers[0]").len(), 3);
        assert!(matches!(
            sel_err(&inv, "routers[5]"),
            PatternError::SubscriptOutOfRange { len: 2, .. }
        ));
    }

    #[test]
    fn unknown_names_are_errors_with_the_group_list() {
        let inv = inv();
        let e = sel_err(&inv, "web");
        assert_eq!(
            e.to_string(),
            "unknown host or group \"web\" (inventory has groups: cloudstack, db, hypervisors, \
             lb, management, monitored, routers)"
        );
        assert!(matches!(
            e,
            PatternError::UnknownName { ref name, .. } if name == "web"
        ));
        // In every position, and for wildcards and regexes that match nothing.
        for pattern in [
            "routers:!typo",
            "routers:&typo",
            "web*",
            "~zzz",
            "routers:rooters",
        ] {
            assert!(
                matches!(sel_err(&inv, pattern), PatternError::UnknownName { .. }),
                "{pattern}"
            );
        }
        let small = Inventory::from_str("t.yml", "db:\n  hosts: { d: }\nlb:\n").expect("inv");
        assert_eq!(
            sel_err(&small, "web").to_string(),
            "unknown host or group \"web\" (inventory has groups: db, lb)"
        );
        assert_eq!(
            sel_err(&Inventory::empty(), "web").to_string(),
            "unknown host or group \"web\" (inventory has no groups besides all)"
        );
    }

    #[test]
    fn unknown_names_suggest_close_hosts_and_groups() {
        let inv = inv();
        let e = sel_err(&inv, "rooters");
        assert_eq!(
            e.to_string(),
            "unknown host or group \"rooters\"; did you mean \"routers\"? (inventory has groups: \
             cloudstack, db, hypervisors, lb, management, monitored, routers)"
        );
        let PatternError::UnknownName { suggestions, .. } = sel_err(&inv, "routers:r-12-vm:!mgmt3")
        else {
            panic!("not an unknown name");
        };
        assert_eq!(
            suggestions,
            ["r-12-VM", "r-15-VM"],
            "hosts too; case ignored"
        );
        let PatternError::UnknownName { suggestions, .. } = sel_err(&inv, "mgmt3") else {
            panic!("not an unknown name");
        };
        assert_eq!(suggestions, ["mgmt1", "mgmt2"]);
        let PatternError::UnknownName { suggestions, .. } = sel_err(&inv, "rooters*") else {
            panic!("not an unknown name");
        };
        assert!(suggestions.is_empty(), "no guesses for a wildcard");
    }

    #[test]
    fn empty_group_selects_nothing_without_error() {
        let inv = inv();
        assert!(sel(&inv, "lb").is_empty());
        assert_eq!(sel(&inv, "lb:db"), ["mgmt1", "dbhost"]);
    }

    #[test]
    fn implicit_localhost_resolves_but_is_not_in_all() {
        let inv = inv();
        assert_eq!(sel(&inv, "localhost"), ["localhost"]);
        assert_eq!(
            sel(&inv, "routers:localhost"),
            ["r-12-VM", "r-15-VM", "localhost"]
        );
        assert!(!sel(&inv, "all").contains(&"localhost".to_string()));
        assert_eq!(sel(&Inventory::empty(), "localhost"), ["localhost"]);
        assert!(sel(&Inventory::empty(), "all").is_empty());
    }

    #[test]
    fn host_name_wins_over_group_of_same_name() {
        let inv = Inventory::from_str(
            "t.yml",
            "db:\n  hosts: { a: ~, b: ~ }\nother:\n  hosts: { db: }\n",
        )
        .expect("inv");
        assert_eq!(sel(&inv, "db"), ["db"]);
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(Pattern::parse("  ").unwrap_err(), PatternError::Empty);
        assert!(matches!(
            Pattern::parse("web::db").unwrap_err(),
            PatternError::EmptyTerm { .. }
        ));
        assert!(matches!(
            Pattern::parse("web,").unwrap_err(),
            PatternError::EmptyTerm { .. }
        ));
        assert_eq!(
            Pattern::parse("web:!").unwrap_err().to_string(),
            "host pattern \"web:!\": \"!\" must be followed by a host or group name"
        );
        assert!(matches!(
            Pattern::parse("web:&").unwrap_err(),
            PatternError::MissingName { op: '&', .. }
        ));
        let e = Pattern::parse("~web(").unwrap_err();
        assert!(matches!(e, PatternError::BadRegex { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("host pattern term \"~web(\": invalid regular expression"));
        assert!(matches!(
            Pattern::parse("~").unwrap_err(),
            PatternError::BadRegex { .. }
        ));
    }

    #[test]
    fn parse_keeps_ipv6_and_text() {
        let p = Pattern::parse(" 2001:db8::1 ").expect("ipv6 literal");
        assert_eq!(p.terms.len(), 1);
        assert_eq!(p.as_str(), "2001:db8::1");
        assert_eq!(p.to_string(), "2001:db8::1");
        let p: Pattern = "a:&b:!c".parse().expect("parse");
        let ops: Vec<Op> = p.terms.iter().map(|t| t.op).collect();
        assert_eq!(ops, [Op::Union, Op::Intersect, Op::Exclude]);
        assert_eq!(
            split_subscript("web[0:2]").1,
            Some(Subscript::Range(0, Some(2)))
        );
        assert_eq!(split_subscript("web[-1]").1, Some(Subscript::Index(-1)));
        assert_eq!(split_subscript("web[x]").1, None);
    }
}
