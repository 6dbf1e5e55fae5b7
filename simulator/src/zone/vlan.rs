//! VLAN range text (`100-199,300-300`) and IPv4 CIDR containment, as the zone needs them.

/// Parses `a-b,c-d` (a single VLAN may be written `n` or `n-n`) into inclusive spans. Empty
/// text is no range. Ids must be 0–4095 (VLAN isolation) and `a <= b`.
pub fn parse(text: &str) -> Result<Vec<(u32, u32)>, String> {
    let mut spans = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("invalid VLAN range {part:?}: expected start-end"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("invalid VLAN range {part:?}: start is above end"));
        }
        if b > 4095 {
            return Err(format!(
                "invalid VLAN range {part:?}: VLAN ids must be between 0 and 4095"
            ));
        }
        spans.push((a, b));
    }
    Ok(spans)
}

/// Whether an IPv4 `cidr` (`10.0.0.0/8`, or a bare address) contains `addr`.
pub fn cidr_contains(cidr: &str, addr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Some(net), Some(ip), Ok(bits)) = (ipv4(net), ipv4(addr), bits.parse::<u32>()) else {
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

/// Whether `text` is a comma-separated list of IPv4 CIDRs (empty allowed), none `0.0.0.0`.
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
        assert_eq!(parse("100-199, 300").unwrap(), vec![(100, 199), (300, 300)]);
        assert!(parse("5-1").is_err());
        assert!(parse("1-5000").is_err());
        assert!(parse("a-b").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(cidr_contains("10.20.0.0/16", "10.20.0.15"));
        assert!(!cidr_contains("10.30.0.0/16", "10.20.0.15"));
        assert!(cidr_contains("10.20.0.15", "10.20.0.15"));
        assert!(cidr_contains("0.0.0.0/0", "1.2.3.4"));
        assert!(!cidr_contains("garbage", "1.2.3.4"));
        assert!(valid_sites("10.0.0.0/8, 192.168.1.0/24").is_ok());
        assert!(valid_sites("0.0.0.0").is_err());
        assert!(valid_sites("10.0.0.0/40").is_err());
    }
}
