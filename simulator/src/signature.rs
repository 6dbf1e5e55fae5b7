//! Checking a request the way the management server does (`ApiServlet` + `ApiServer.verifyRequest`,
//! reference §2.1–§2.3). Written independently of remedy's client-side signer: this side starts
//! from the bytes on the wire.
//!
//! 1. Decode: split the query string (or form body) on `&`, then on the first `=`; both halves
//!    are percent-decoded like `java.net.URLDecoder` (`+` is a space) as UTF-8.
//! 2. Take every parameter but `signature` (any case), sort by name as received (byte order),
//!    encode each value like `URLEncoder` (`A–Z a–z 0–9 . - * _` literal, space `+` then `%20`,
//!    everything else `%XX`), join `name=value` with `&`, lower-case it all.
//! 3. HMAC-SHA1 with the secret key, Base64; compare in constant time with `signature`.
//! 4. With `signatureVersion=3`, `expires` must be present, parse, and lie in the future.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Decodes `a=1&b=x+y` into pairs in wire order. A malformed escape or invalid UTF-8 is an
/// error (the servlet would throw).
pub fn decode_pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            Ok((url_decode(name)?, url_decode(value)?))
        })
        .collect()
}

fn url_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("malformed escape in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("invalid UTF-8 in {s:?}"))
}

/// `URLEncoder.encode(v, "UTF-8")`, then `+` → `%20`.
fn java_url_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for &b in v.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push_str("%20"),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The string the server signs.
pub fn canonical(params: &[(String, String)]) -> String {
    let mut kept: Vec<&(String, String)> = params
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("signature"))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let joined: Vec<String> = kept
        .iter()
        .map(|(name, value)| format!("{name}={}", java_url_encode(value)))
        .collect();
    joined.join("&").to_lowercase()
}

/// The value of the first parameter named `name`, ignoring case (the server's lookup of the
/// signing parameters).
pub fn get_ci<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether `signature` matches the parameters under `secret`.
pub fn verify(params: &[(String, String)], secret: &str) -> bool {
    let Some(given) = get_ci(params, "signature") else {
        return false;
    };
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else {
        return false;
    };
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(canonical(params).as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).is_ok()
}

/// Signature version 3 rules: when `signatureVersion` is `3`, `expires` must be present, parse
/// and be later than `now`.
pub fn check_expiry(params: &[(String, String)], now: jiff::Timestamp) -> Result<(), String> {
    if get_ci(params, "signatureVersion") != Some("3") {
        return Ok(());
    }
    let raw = get_ci(params, "expires").ok_or("signatureVersion=3 without expires")?;
    let at = parse_expires(raw).ok_or_else(|| format!("expires {raw:?} does not parse"))?;
    if at <= now {
        return Err(format!("request expired at {raw}"));
    }
    Ok(())
}

/// `yyyy-MM-ddTHH:mm:ss+HHMM` (every release), and ISO-8601 with `Z`, `+HH:MM` or fractional
/// seconds (current releases).
pub fn parse_expires(raw: &str) -> Option<jiff::Timestamp> {
    if let Ok(z) =
        jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%z", raw).and_then(|t| t.to_timestamp())
    {
        return Some(z);
    }
    raw.parse::<jiff::Timestamp>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!("../tests/data/signing-vectors.json");

    fn wire(v: &Value) -> String {
        v.get("final_query_string")
            .or_else(|| v.get("final_body"))
            .and_then(Value::as_str)
            .expect("query or body")
            .to_string()
    }

    #[test]
    fn vectors_verify_as_the_server_would() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 13);
        for v in vectors {
            let id = v["id"].as_str().unwrap();
            let secret = v["inputs"]["secret_key"].as_str().unwrap();
            let params = decode_pairs(&wire(v)).unwrap();
            let server = &v["server_side_recomputation"];
            if server["accepted"] == Value::Bool(false) {
                // cs signs `~` unescaped: the server rejects it, and accepts its own signature
                assert!(
                    !verify(&params, secret),
                    "{id}: cs's signature must be refused"
                );
                assert_eq!(
                    canonical(&params),
                    server["server_string_to_sign"].as_str().unwrap(),
                    "{id}"
                );
                let mut fixed: Vec<(String, String)> = params
                    .iter()
                    .filter(|(k, _)| k != "signature")
                    .cloned()
                    .collect();
                fixed.push((
                    "signature".into(),
                    server["server_signature"].as_str().unwrap().into(),
                ));
                assert!(verify(&fixed, secret), "{id}: the server's own signature");
            } else {
                assert_eq!(
                    canonical(&params),
                    v["string_to_sign"].as_str().unwrap(),
                    "{id}"
                );
                assert!(verify(&params, secret), "{id}");
                assert!(!verify(&params, "another secret"), "{id}");
            }
        }
    }

    #[test]
    fn a_tampered_value_fails() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let v = &doc["vectors"][0];
        let secret = v["inputs"]["secret_key"].as_str().unwrap();
        let mut params = decode_pairs(&wire(v)).unwrap();
        params[0].1.push('x');
        assert!(!verify(&params, secret));
    }

    #[test]
    fn expiry_rules() {
        let now: jiff::Timestamp = "2030-01-01T00:05:00Z".parse().unwrap();
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(check_expiry(
            &p(&[
                ("signatureVersion", "3"),
                ("expires", "2030-01-01T00:10:00+0000")
            ]),
            now
        )
        .is_ok());
        assert!(check_expiry(
            &p(&[
                ("signatureVersion", "3"),
                ("expires", "2030-01-01T00:01:00+0000")
            ]),
            now
        )
        .is_err());
        assert!(check_expiry(&p(&[("signatureVersion", "3")]), now).is_err());
        assert!(check_expiry(&p(&[("signatureVersion", "3"), ("expires", "soon")]), now).is_err());
        assert!(check_expiry(
            &p(&[
                ("signatureversion", "3"),
                ("EXPIRES", "2030-01-01T00:10:00Z")
            ]),
            now
        )
        .is_ok());
        assert!(check_expiry(
            &p(&[
                ("signatureVersion", "3"),
                ("expires", "2030-01-01T01:10:00+01:00")
            ]),
            now
        )
        .is_ok());
        // without version 3, expires is just another parameter
        assert!(check_expiry(&p(&[("expires", "1999-01-01T00:00:00+0000")]), now).is_ok());
        assert!(check_expiry(&p(&[]), now).is_ok());
    }

    #[test]
    fn decoding() {
        assert_eq!(
            decode_pairs("a=x+y&b=%2B%7e&c&d=").unwrap(),
            vec![
                ("a".into(), "x y".into()),
                ("b".into(), "+~".into()),
                ("c".into(), "".into()),
                ("d".into(), "".into())
            ]
        );
        assert!(decode_pairs("a=%zz").is_err());
        assert!(decode_pairs("a=%c3").is_err());
    }
}
