//! Request signing, exactly as the management server verifies it (reference §2.1).
//!
//! The server URL-decodes every parameter, drops `signature`, sorts the names as received
//! (byte order, so `A–Z` before `a–z`), re-encodes each value the way Java's `URLEncoder` does
//! (only `A–Z a–z 0–9 . - * _` stay literal; a space becomes `%20`, so `~` becomes `%7E`),
//! joins `name=value` with `&`, lower-cases the whole string and compares an HMAC-SHA1 of it,
//! Base64-encoded. So we sign the *values*, not the bytes on the wire; the wire encoding
//! ([`wire_encode`]) only has to decode back to the same values.
//!
//! Owned here: the string to sign, the signature, the added parameters (`apiKey`, `command`,
//! `response=json`, `signatureVersion=3`, `expires` in the `+0000` form) and the wire encoding.
//! Not here: sending (see `client`).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// How long a signed request stays valid (cs and cloudmonkey use 10 minutes too).
pub const EXPIRES_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Java `URLEncoder.encode(v, "UTF-8")` with `+` turned into `%20`: every byte but
/// `A–Z a–z 0–9 . - * _` becomes `%XX` (upper-case hex).
pub fn java_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The string the server signs: parameters sorted by raw name, values Java-encoded, all
/// lower-cased. `signature` (any case) is left out.
pub fn string_to_sign(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("signature"))
        .collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", java_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase()
}

/// HMAC-SHA1 of [`string_to_sign`] with the secret key, standard Base64 with padding.
pub fn signature(params: &[(String, String)], secret_key: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(string_to_sign(params).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `expires` as the server has always parsed it: `yyyy-MM-ddTHH:mm:ss+0000`.
pub fn expires_value(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

/// The full, signed parameter list for one call, in the order it goes on the wire: the call's
/// arguments, then `command`, `apiKey`, `response`, `signatureVersion`, `expires`, `signature`.
/// With `expires: None` the request is signed without expiry (signature version 2).
pub fn signed_params(
    command: &str,
    args: impl IntoIterator<Item = (String, String)>,
    api_key: &str,
    secret_key: &str,
    expires: Option<jiff::Timestamp>,
) -> Vec<(String, String)> {
    const RESERVED: [&str; 6] = [
        "command",
        "apikey",
        "response",
        "signatureversion",
        "expires",
        "signature",
    ];
    let mut params: Vec<(String, String)> = args
        .into_iter()
        .filter(|(k, _)| !RESERVED.contains(&k.to_ascii_lowercase().as_str()))
        .collect();
    params.push(("command".into(), command.into()));
    params.push(("apiKey".into(), api_key.into()));
    params.push(("response".into(), "json".into()));
    if let Some(at) = expires {
        params.push(("signatureVersion".into(), "3".into()));
        params.push(("expires".into(), expires_value(at)));
    }
    let sig = signature(&params, secret_key);
    params.push(("signature".into(), sig));
    params
}

/// `application/x-www-form-urlencoded` / query-string form of the parameters: every byte but
/// `A–Z a–z 0–9 - . _ ~` percent-encoded (so `+` travels as `%2B` and a space as `%20`), which
/// any servlet decodes back to the signed values.
pub fn wire_encode(params: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for &b in s.as_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!("../../../simulator/tests/data/signing-vectors.json");

    /// Every vector: signing the decoded wire parameters gives the signature the *server*
    /// computes (cs's own for 11 of them; for v10/v11, where cs leaves `~` unescaped, the
    /// server's recomputation).
    #[test]
    fn all_signing_vectors() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 13);
        for v in vectors {
            let id = v["id"].as_str().unwrap();
            let secret = v["inputs"]["secret_key"].as_str().unwrap();
            let params: Vec<(String, String)> = v["params_on_wire_decoded"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        p[1].as_str().unwrap().to_string(),
                    )
                })
                .filter(|(k, _)| k != "signature")
                .collect();
            let server = &v["server_side_recomputation"];
            let (want_string, want_sig) = if server["accepted"] == Value::Bool(false) {
                (
                    server["server_string_to_sign"].as_str().unwrap(),
                    server["server_signature"].as_str().unwrap(),
                )
            } else {
                (
                    v["string_to_sign"].as_str().unwrap(),
                    v["signature"].as_str().unwrap(),
                )
            };
            assert_eq!(string_to_sign(&params), want_string, "{id}: string to sign");
            assert_eq!(signature(&params, secret), want_sig, "{id}: signature");
        }
    }

    /// Building the request ourselves from the vector's inputs (command, key, clock) gives the
    /// same signature: the added parameters and the `expires` form are right.
    #[test]
    fn signed_params_match_the_vectors_built_from_inputs() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        for v in doc["vectors"].as_array().unwrap() {
            let id = v["id"].as_str().unwrap();
            let inputs = &v["inputs"];
            let added = v["added_by_client"].as_object().unwrap();
            let args: Vec<(String, String)> = v["params_on_wire_decoded"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
                .filter(|(k, _)| *k != "signature" && !added.contains_key(*k))
                .map(|(k, val)| (k.to_string(), val.to_string()))
                .collect();
            let expires = added.get("expires").map(|_| {
                let clock: jiff::Timestamp = inputs["clock_utc_at_signing"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                clock + jiff::SignedDuration::try_from(EXPIRES_AFTER).unwrap()
            });
            let signed = signed_params(
                inputs["command"].as_str().unwrap(),
                args,
                inputs["api_key"].as_str().unwrap(),
                inputs["secret_key"].as_str().unwrap(),
                expires,
            );
            if let Some(e) = added.get("expires") {
                let got = signed.iter().find(|(k, _)| k == "expires").unwrap();
                assert_eq!(&Value::String(got.1.clone()), e, "{id}: expires");
            }
            let server = &v["server_side_recomputation"];
            let want = if server["accepted"] == Value::Bool(false) {
                server["server_signature"].as_str().unwrap()
            } else {
                v["signature"].as_str().unwrap()
            };
            assert_eq!(signed.last().unwrap().1, want, "{id}");
        }
    }

    #[test]
    fn java_encoding_table() {
        assert_eq!(java_encode("a b"), "a%20b");
        assert_eq!(java_encode("+"), "%2B");
        assert_eq!(java_encode("*"), "*");
        assert_eq!(java_encode("~"), "%7E");
        assert_eq!(java_encode("._-"), "._-");
        assert_eq!(java_encode("ü"), "%C3%BC");
        assert_eq!(java_encode(""), "");
    }

    #[test]
    fn wire_encoding_keeps_plus_and_space_apart() {
        let w = wire_encode(&[("k".into(), "a+b c/~".into())]);
        assert_eq!(w, "k=a%2Bb%20c%2F~");
    }

    #[test]
    fn caller_cannot_smuggle_signing_params() {
        let p = signed_params(
            "listZones",
            vec![
                ("signature".into(), "x".into()),
                ("apikey".into(), "evil".into()),
            ],
            "K",
            "S",
            None,
        );
        assert_eq!(
            p.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("apikey"))
                .count(),
            1
        );
        assert_eq!(p.iter().filter(|(k, _)| k == "signature").count(), 1);
    }
}
