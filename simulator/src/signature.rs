//! Checking a request the way the management server does (`ApiServlet` + `ApiServer.verifyRequest`,
//! reference §2.1–§2.3). Written independently of remedy's client-side signer: this side starts
//! from the bytes on the wire.
//!
//! 1. Decode: split the query string (or form body) on `&`, then on the first `=`; both halves
//!    are percent-decoded like `java.net.URLDecoder` (`+` is a space, `%XX` a byte, UTF-8).
//! 2. Take every parameter but `signature` (any case), sort by name as received (byte order),
//!    encode each value like `URLEncoder` (`A–Z a–z 0–9 . - * _` literal, space `+` then `%20`,
//!    everything else `%XX`), join `name=value` with `&`, lower-case it all.
//! 3. HMAC-SHA1 with the secret key, Base64; compare in constant time with `signature`.
//! 4. With `signatureVersion=3`, `expires` must be present, parse, and lie in the future.
//!
//! This module owns the server side of signing only; the HTTP front that calls it is
//! [`crate::server`].

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Decodes `a=1&b=x+y` into pairs in wire order. Empty segments (`a=1&&b=2`) are skipped and a
/// segment without `=` is a name with an empty value. A malformed escape (`%`, `%4`, `%zz`) is an
/// error, as `URLDecoder` throws on it.
pub fn decode_pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            Ok((url_decode(name)?, url_decode(value)?))
        })
        .collect()
}

/// `URLDecoder.decode(s, "UTF-8")`. Bytes that are not valid UTF-8 become U+FFFD, as Java's
/// decoder replaces them (such a request then fails the signature check rather than the
/// decoding).
fn url_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = match bytes.get(i + 1..i + 3) {
                    Some(&[hi, lo]) => hex(hi).zip(hex(lo)).map(|(hi, lo)| (hi << 4) | lo),
                    _ => None,
                };
                out.push(byte.ok_or_else(|| format!("malformed escape at byte {i}"))?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
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

/// `yyyy-MM-ddTHH:mm:ss+HHMM` (every release); ISO-8601 with `Z`, `+HH:MM` or fractional
/// seconds, and the legacy `yyyy-MM-ddTHH:mm:ssZ+HHMM` shape (current releases). A time without
/// an offset does not parse.
pub fn parse_expires(raw: &str) -> Option<jiff::Timestamp> {
    ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ%z"]
        .iter()
        .find_map(|format| {
            jiff::fmt::strtime::parse(format, raw)
                .and_then(|t| t.to_timestamp())
                .ok()
        })
        .or_else(|| raw.parse::<jiff::Timestamp>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A copy of `shared/reference/signing-vectors.json` (13 requests signed by `cs` 5.2.0).
    const VECTORS: &str = include_str!("../tests/data/signing-vectors.json");

    /// cs signs `~` unescaped; the server escapes it, so these two must be refused.
    const REFUSED: [&str; 2] = ["v10_tilde", "v11_all_ascii_punctuation"];

    fn vectors() -> Vec<Value> {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        doc["vectors"].as_array().unwrap().clone()
    }

    fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} missing in {}", v["id"]))
    }

    /// The parameters the server sees for a vector: its query string or form body, decoded.
    fn wire(v: &Value) -> Vec<(String, String)> {
        let raw = v
            .get("final_query_string")
            .or_else(|| v.get("final_body"))
            .and_then(Value::as_str)
            .expect("query or body");
        decode_pairs(raw).unwrap()
    }

    fn with_signature(params: &[(String, String)], signature: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "signature")
            .cloned()
            .collect();
        out.push(("signature".into(), signature.into()));
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn all_thirteen_vectors_decode_as_cs_put_them_on_the_wire() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 13);
        for v in &vectors {
            let expected: Vec<(String, String)> =
                serde_json::from_value(v["params_on_wire_decoded"].clone()).unwrap();
            assert_eq!(wire(v), expected, "{}", v["id"]);
        }
    }

    #[test]
    fn cs_signatures_verify_except_the_two_with_a_tilde() {
        for v in vectors() {
            let id = str_of(&v, "/id");
            let secret = str_of(&v, "/inputs/secret_key");
            let params = wire(&v);
            let server = &v["server_side_recomputation"];
            if REFUSED.contains(&id) {
                assert_eq!(server["accepted"], Value::Bool(false), "{id}");
                assert!(
                    !verify(&params, secret),
                    "{id}: cs's signature must be refused"
                );
                assert_eq!(
                    canonical(&params),
                    str_of(server, "/server_string_to_sign"),
                    "{id}"
                );
                let fixed = with_signature(&params, str_of(server, "/server_signature"));
                assert!(verify(&fixed, secret), "{id}: the server's own signature");
            } else {
                assert_eq!(canonical(&params), str_of(&v, "/string_to_sign"), "{id}");
                assert!(verify(&params, secret), "{id}");
                assert!(!verify(&params, "another secret"), "{id}");
            }
        }
    }

    #[test]
    fn vectors_are_in_date_when_signed_and_expire_after_ten_minutes() {
        for v in vectors() {
            let id = str_of(&v, "/id");
            let params = wire(&v);
            let signed_at = ts(str_of(&v, "/inputs/clock_utc_at_signing"));
            assert_eq!(check_expiry(&params, signed_at), Ok(()), "{id}");
            let later = signed_at + jiff::SignedDuration::from_secs(3600);
            if id == "v12_no_expiry_v2" {
                // no signatureVersion: nothing to expire
                assert_eq!(get_ci(&params, "expires"), None);
                assert_eq!(check_expiry(&params, later), Ok(()), "{id}");
            } else {
                assert!(check_expiry(&params, later).is_err(), "{id}");
            }
        }
    }

    #[test]
    fn a_tampered_value_or_signature_fails() {
        let v = &vectors()[0];
        let secret = str_of(v, "/inputs/secret_key");
        let mut params = wire(v);
        params[0].1.push('x');
        assert!(!verify(&params, secret));
        let params = wire(v);
        assert!(!verify(&with_signature(&params, "not base64!"), secret));
        assert!(!verify(&with_signature(&params, ""), secret));
        let unsigned: Vec<_> = params
            .into_iter()
            .filter(|(k, _)| k != "signature")
            .collect();
        assert!(!verify(&unsigned, secret));
    }

    #[test]
    fn the_signature_parameter_is_found_ignoring_case() {
        let v = &vectors()[0];
        let secret = str_of(v, "/inputs/secret_key");
        let renamed: Vec<_> = wire(v)
            .into_iter()
            .map(|(k, val)| {
                if k == "signature" {
                    ("SIGNATURE".into(), val)
                } else {
                    (k, val)
                }
            })
            .collect();
        assert!(verify(&renamed, secret));
    }

    #[test]
    fn expiry_rules() {
        let now = ts("2030-01-01T00:05:00Z");
        let v3 = |expires: &str| pairs(&[("signatureVersion", "3"), ("expires", expires)]);
        // the +HHMM form every release accepts
        assert_eq!(check_expiry(&v3("2030-01-01T00:10:00+0000"), now), Ok(()));
        assert_eq!(check_expiry(&v3("2030-01-01T01:10:00+0100"), now), Ok(()));
        // ISO-8601 forms current releases accept
        assert_eq!(check_expiry(&v3("2030-01-01T00:10:00Z"), now), Ok(()));
        assert_eq!(check_expiry(&v3("2030-01-01T01:10:00+01:00"), now), Ok(()));
        assert_eq!(check_expiry(&v3("2030-01-01T00:10:00.250Z"), now), Ok(()));
        assert_eq!(check_expiry(&v3("2030-01-01T00:10:00Z+0000"), now), Ok(()));
        // past, or exactly now
        assert!(check_expiry(&v3("2030-01-01T00:01:00+0000"), now).is_err());
        assert!(check_expiry(&v3("2030-01-01T00:05:00+0000"), now).is_err());
        assert!(check_expiry(&v3("2030-01-01T00:10:00Z"), ts("2030-01-01T00:10:01Z")).is_err());
        // garbage, or no offset
        for bad in [
            "soon",
            "",
            "2030-01-01",
            "2030-01-01T00:10:00",
            "2030-13-01T00:10:00+0000",
        ] {
            assert!(check_expiry(&v3(bad), now).is_err(), "{bad:?}");
        }
        // missing with version 3
        let err = check_expiry(&pairs(&[("signatureVersion", "3")]), now).unwrap_err();
        assert!(err.contains("without expires"), "{err}");
        // names are matched ignoring case
        let odd_case = pairs(&[
            ("signatureversion", "3"),
            ("EXPIRES", "2030-01-01T00:01:00Z"),
        ]);
        assert!(check_expiry(&odd_case, now).is_err());
        // without version 3, expires is just another parameter
        let v2 = pairs(&[("expires", "1999-01-01T00:00:00+0000")]);
        assert_eq!(check_expiry(&v2, now), Ok(()));
        let v2 = pairs(&[("signatureVersion", "2"), ("expires", "garbage")]);
        assert_eq!(check_expiry(&v2, now), Ok(()));
        assert_eq!(check_expiry(&[], now), Ok(()));
    }

    #[test]
    fn decoding() {
        assert_eq!(
            decode_pairs("a=x+y&b=%2B%7e&c&d=&&e=1=2").unwrap(),
            pairs(&[
                ("a", "x y"),
                ("b", "+~"),
                ("c", ""),
                ("d", ""),
                ("e", "1=2")
            ])
        );
        assert_eq!(
            decode_pairs("k%5B0%5D.key=Z%C3%BCrich").unwrap(),
            pairs(&[("k[0].key", "Zürich")])
        );
        // invalid UTF-8 is replaced, as Java does
        assert_eq!(decode_pairs("a=%c3").unwrap(), pairs(&[("a", "\u{FFFD}")]));
        for bad in ["a=%zz", "a=%", "a=%4", "%g0=1", "a=%+f"] {
            assert!(decode_pairs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoding_is_java_urlencoder_with_space_as_percent_20() {
        let params = pairs(&[("b", "a b+c*d~e.f-g_h/ü"), ("A", "X")]);
        assert_eq!(canonical(&params), "a=x&b=a%20b%2bc*d%7ee.f-g_h%2f%c3%bc");
    }
}
