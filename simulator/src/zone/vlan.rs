//! VLAN range text (`100-199,300-300`) and IPv4 CIDR containment, as the zone needs them.

/// An inclusive span of VLAN ids.
pub type Span = (u32, u32);

/// The highest VLAN id with VLAN isolation.
pub const MAX_VLAN: u32 = 4095;

/// Parses `a-b,c-d` into inclusive spans, sorted, with overlapping and adjacent spans merged
/// (as the management server stores them). Each item must be `start-end` (a single VLAN is
/// written `100-100`), with `start <= end <= 4095`. Empty text is no range.
pub fn parse(text: &str) -> Result<Vec<Span>, String> {
    let mut spans = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let invalid = || {
            format!(
                "Please provide valid vnet range. vnet range should be a comma separated list of vlan ranges, e.g. 500-500,600-601; got {part:?}"
            )
        };
        let (a, b) = part.split_once('-').ok_or_else(invalid)?;
        let a: u32 = a.trim().parse().map_err(|_| invalid())?;
        let b: u32 = b.trim().parse().map_err(|_| invalid())?;
        if a > b {
            return Err(format!(
                "Invalid vnet range {part}: the start {a} is above the end {b}"
            ));
        }
        if b > MAX_VLAN {
            return Err(format!(
                "Invalid vnet range {part}: VLAN ids for isolation method VLAN are 0-{MAX_VLAN}"
            ));
        }
        spans.push((a, b));
    }
    spans.sort_unstable();
    let mut merged: Vec<Span> = Vec::new();
    for (a, b) in spans {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Ok(merged)
}

/// Formats spans as the `vlan` field shows them: `a-b,c-d`.
pub fn format(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `vlan` lies in one of `spans`.
pub fn covers(spans: &[Span], vlan: u32) -> bool {
    spans.iter().any(|&(a, b)| (a..=b).contains(&vlan))
}

/// The VLAN ids of `have` that `keep` leaves out, as runs of consecutive ids, in order.
pub fn minus(have: &[Span], keep: &[Span]) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for &(a, b) in have {
        for id in a..=b {
            if covers(keep, id) {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 + 1 == id => last.1 = id,
                _ => out.push((id, id)),
            }
        }
    }
    out
}

/// How many VLAN ids `spans` hold.
pub fn size(spans: &[Span]) -> u32 {
    spans.iter().map(|(a, b)| b - a + 1).sum()
}

/// Whether an IPv4 `cidr` (`10.0.0.0/8`, or a bare address meaning `/32`) contains `addr`.
pub fn cidr_contains(cidr: &str, addr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Some(net), Some(ip), Ok(bits)) = (ipv4(net), ipv4(addr), bits.trim().parse::<u32>())
    else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    net & mask == ip & mask
}

fn ipv4(s: &str) -> Option<u32> {
    s.trim().parse::<std::net::Ipv4Addr>().ok().map(u32::from)
}

/// Checks a `secstorage.allowed.internal.sites` value: comma-separated IPv4 CIDRs (empty
/// allowed), none of them `0.0.0.0`.
pub fn valid_sites(text: &str) -> Result<(), String> {
    for site in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (net, bits) = site.split_once('/').unwrap_or((site, "32"));
        if ipv4(net).is_none() || !bits.parse::<u32>().is_ok_and(|b| b <= 32) {
            return Err(format!("{site} is not a valid CIDR"));
        }
        if net == "0.0.0.0" {
            return Err("0.0.0.0 is not a valid site".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(
            parse("300-300, 100-199").unwrap(),
            vec![(100, 199), (300, 300)]
        );
        assert_eq!(parse("100-199,150-250,251-260").unwrap(), vec![(100, 260)]);
        assert_eq!(format(&parse("5-9,1-2").unwrap()), "1-2,5-9");
        assert!(parse("300").is_err(), "a single VLAN is written 300-300");
        assert!(parse("5-1").is_err());
        assert!(parse("1-5000").is_err());
        assert!(parse("a-b").is_err());
        assert!(covers(&[(10, 20)], 20) && !covers(&[(10, 20)], 21));
        assert_eq!(size(&[(10, 19), (30, 30)]), 11);
    }

    #[test]
    fn cidrs() {
        assert!(cidr_contains("10.20.0.0/16", "10.20.0.15"));
        assert!(!cidr_contains("10.30.0.0/16", "10.20.0.15"));
        assert!(cidr_contains("10.20.0.15", "10.20.0.15"));
        assert!(cidr_contains("10.20.0.8/29", "10.20.0.15"));
        assert!(!cidr_contains("10.20.0.0/29", "10.20.0.15"));
        assert!(cidr_contains("0.0.0.0/0", "1.2.3.4"));
        assert!(!cidr_contains("garbage", "1.2.3.4"));
        assert!(valid_sites("10.0.0.0/8, 192.168.1.0/24").is_ok());
        assert!(valid_sites("0.0.0.0").is_err());
        assert!(valid_sites("10.0.0.0/40").is_err());
    }
}
