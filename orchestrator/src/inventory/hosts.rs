//! Host entries as written under a group's `hosts:`: Ansible's ranges (`hv[01:12].example.com`,
//! `node-[a:c]`, `web[1:9:2]`) and `host:port` forms (`[2001:db8::1]:22`), expanded to host
//! names and an optional port.
//!
//! Not here: host patterns that select hosts from a loaded inventory (`pattern`), and what
//! happens to the names (group membership: `groups`).

/// How many hosts one range pattern (`web[1:100]`) may expand to.
const MAX_RANGE_HOSTS: usize = 100_000;

/// Splits a `hosts:` key into host names and an optional port, as Ansible's YAML plugin does:
/// `db.example.com:2222`, `[2001:db8::1]:22`, `hv[01:12].example.com`, `node-[a:c]`,
/// `web[1:9:2]`.
pub(super) fn expand_host_entry(entry: &str) -> Result<(Vec<String>, Option<u16>), String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err("empty host name".into());
    }
    if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((vec![entry.to_string()], None));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some(close) = rest.find(']') {
            let inner = &rest[..close];
            if inner.parse::<std::net::Ipv6Addr>().is_ok() {
                let after = &rest[close + 1..];
                let port = match after.strip_prefix(':') {
                    Some(port) => Some(parse_entry_port(port)?),
                    None if after.is_empty() => None,
                    None => return Err(format!("cannot parse host \"{entry}\"")),
                };
                return Ok((vec![inner.to_string()], port));
            }
        }
    }
    // The last ':' outside brackets, followed by digits only, introduces a port.
    let mut depth = 0usize;
    let mut split = None;
    for (i, c) in entry.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    let (name, port) = match split {
        Some(i) if i + 1 < entry.len() && entry[i + 1..].chars().all(|c| c.is_ascii_digit()) => {
            (&entry[..i], Some(parse_entry_port(&entry[i + 1..])?))
        }
        _ => (entry, None),
    };
    if name.is_empty() {
        return Err(format!("cannot parse host \"{entry}\""));
    }
    let mut names = Vec::new();
    expand_ranges(name, &mut names)?;
    Ok((names, port))
}

fn parse_entry_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port \"{text}\" is not a port number (1-65535)")),
    }
}

const ASCII_LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Expands the first `[begin:end(:step)]` in `name`, then the rest, recursively.
pub(super) fn expand_ranges(name: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = name.find('[') else {
        out.push(name.to_string());
        return Ok(());
    };
    let Some(len) = name[open..].find(']') else {
        return Err(format!("host \"{name}\": unterminated range (missing ']')"));
    };
    let head = &name[..open];
    let range = &name[open + 1..open + len];
    let tail = &name[open + len + 1..];
    let bounds: Vec<&str> = range.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(format!(
            "host \"{name}\": a host range must be [begin:end] or [begin:end:step]"
        ));
    }
    let begin = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    if end.is_empty() {
        return Err(format!("host \"{name}\": a host range needs an end value"));
    }
    let step = match bounds.get(2) {
        None => 1,
        Some(step) => match step.parse::<usize>() {
            Ok(step) if step > 0 => step,
            _ => return Err(format!("host \"{name}\": bad range step \"{step}\"")),
        },
    };
    let items: Vec<String> = match (ASCII_LETTERS.find(begin), ASCII_LETTERS.find(end)) {
        (Some(b), Some(e)) if begin.len() == 1 && end.len() == 1 => {
            if b > e {
                return Err(format!("host \"{name}\": a host range needs begin <= end"));
            }
            ASCII_LETTERS[b..=e]
                .chars()
                .step_by(step)
                .map(String::from)
                .collect()
        }
        _ => {
            let (Ok(b), Ok(e)) = (begin.parse::<u64>(), end.parse::<u64>()) else {
                return Err(format!("host \"{name}\": bad host range \"[{range}]\""));
            };
            if b > e {
                return Err(format!("host \"{name}\": a host range needs begin <= end"));
            }
            let width = if begin.len() > 1 && begin.starts_with('0') {
                if begin.len() != end.len() {
                    return Err(format!(
                        "host \"{name}\": a zero-padded range needs begin and end of equal length"
                    ));
                }
                begin.len()
            } else {
                0
            };
            let count = (e - b) / step as u64 + 1;
            if count > MAX_RANGE_HOSTS as u64 {
                return Err(format!("host \"{name}\": range expands to too many hosts"));
            }
            (b..=e)
                .step_by(step)
                .map(|n| format!("{n:0width$}"))
                .collect()
        }
    };
    for item in items {
        expand_ranges(&format!("{head}{item}{tail}"), out)?;
        if out.len() > MAX_RANGE_HOSTS {
            return Err(format!("host \"{name}\": range expands to too many hosts"));
        }
    }
    Ok(())
}
