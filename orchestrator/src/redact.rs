//! Keeping secrets out of output, logs and the audit log.
//!
//! Owns: the [`Redactor`], a set of secret values (passwords, secret keys, tokens) masked
//! wherever they occur in text or JSON, and the rule deciding whether a name (an argument, a
//! variable, a JSON key) denotes a secret by itself: [`is_secret_name`].
//!
//! Leaves to others: knowing which values are secret. Callers register them (values of
//! secret-named parameters, credentials read from the inventory, API secret keys) and pass
//! everything they print, log or audit through [`Redactor::redact`] or
//! [`Redactor::redact_json`]. A secret never registered, shorter than four characters, or
//! transformed beyond the forms listed at [`Redactor::add`] (e.g. base64-encoded, hashed) is
//! not caught.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, RwLock};

use base64::Engine as _;

use serde_json::{Map, Value};

/// Secret values shorter than this (in characters) are not registered: masking every "1", "on"
/// or "abc" in all output would mangle it beyond use, and the pattern of masks would itself
/// reveal the short secret.
const MIN_SECRET_CHARS: usize = 4;

/// Words that make a name secret, matched against the name lowercased with everything but
/// letters and digits removed (so `secret_key`, `X-Auth-Token` and `db.password` match).
/// `apikey` is deliberately absent: CloudStack API keys identify an account, the secret key
/// is what signs requests.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "signature",
    "sessionkey",
    "privatekey",
    "credential",
    "authorization",
    "cookie",
];

/// Masks registered secret values. Cheap to clone; `Default` is empty (redacts nothing).
///
/// Clones share one set of secrets: a value registered while a run goes (a fact or a rendered
/// action derived from a secret, see [`crate::masked`]) is masked from then on by every clone,
/// the event sink's included.
#[derive(Clone, Default)]
pub struct Redactor {
    shared: Arc<RwLock<Needles>>,
}

/// Every secret any redactor of this process has learned: what [`install_panic_hook`] masks.
fn process() -> &'static Redactor {
    static EVERYTHING: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
    EVERYTHING.get_or_init(Redactor::default)
}

/// Registers `values` (the command line's `-e`/`--secret` values, before anything parsed them)
/// with the process's redactor, and replaces the panic message: a bug's report names where it
/// happened, and every secret the process knows is masked in it.
pub fn install_panic_hook(values: Vec<String>) {
    for v in values {
        process().register(v);
    }
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "remedy: internal error (a bug; please report it){at}: {}",
            process().redact(&what)
        );
    }));
}

/// The registered forms and their automaton.
#[derive(Default)]
struct Needles {
    /// Every registered value and its encoded forms, longest first, without duplicates.
    needles: Vec<String>,
    /// All of `needles` at once: one pass over a text finds every occurrence of every one,
    /// overlapping ones included (every event of a run goes through here).
    matcher: Option<Arc<aho_corasick::AhoCorasick>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the values themselves.
        f.debug_struct("Redactor")
            .field("needles", &self.read().needles.len())
            .finish()
    }
}

impl Redactor {
    pub const MASK: &'static str = "********";

    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Needles> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a secret value: see [`Redactor::register`].
    pub fn add(&mut self, secret: impl Into<String>) {
        self.register(secret);
    }

    /// Registers a secret value, for this redactor and every clone of it. Values shorter than
    /// four characters are ignored (see `MIN_SECRET_CHARS`: they would cause too many false
    /// hits, and their masks would give them away). Besides the value itself, these forms are
    /// registered when they differ: its JSON-escaped form, its percent-encoded forms (upper-
    /// and lowercase hex), the value upper- and lowercased, its hex encoding (both cases), and
    /// its standard and URL-safe base64 encodings, at each of the three alignments it can have
    /// inside a longer base64 text (the characters that depend on the value alone).
    pub fn register(&self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.chars().count() < MIN_SECRET_CHARS {
            return;
        }
        // The panic hook knows every secret the process learned.
        let everything = process();
        if !Arc::ptr_eq(&self.shared, &everything.shared) {
            everything.register(secret.clone());
        }
        let forms = encoded_forms(&secret);
        let mut guard = self.shared.write().unwrap_or_else(|p| p.into_inner());
        let before = guard.needles.len();
        for form in forms {
            if form.chars().count() >= MIN_SECRET_CHARS && !guard.needles.contains(&form) {
                guard.needles.push(form);
            }
        }
        if guard.needles.len() == before {
            return;
        }
        guard
            .needles
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        guard.matcher = Some(Arc::new(
            aho_corasick::AhoCorasick::new(&guard.needles)
                .expect("an automaton of a few secrets stays within aho-corasick's limits"),
        ));
    }

    /// True if no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.read().needles.is_empty()
    }

    /// Whether `text` holds a registered secret (in any registered form).
    pub fn finds(&self, text: &str) -> bool {
        let matcher = self.read().matcher.clone();
        matcher.is_some_and(|m| m.is_match(text))
    }

    /// The value a person may see in place of the value of variable `name`, or `None` when it
    /// shows no secret. A secret-named variable's value is masked whole (not a boolean: a flag's
    /// `true` is no secret), a text or number holding a secret has the secret masked, and lists
    /// and maps go through [`Redactor::redact_json`].
    pub fn masked_value(&self, name: &str, value: &Value) -> Option<Value> {
        if is_secret_name(name) && !matches!(value, Value::Bool(_) | Value::Null) {
            return Some(Value::String(Self::MASK.to_string()));
        }
        match value {
            Value::String(s) => match self.redact(s) {
                Cow::Owned(m) => Some(Value::String(m)),
                Cow::Borrowed(_) => None,
            },
            Value::Number(n) => match self.redact(&n.to_string()) {
                Cow::Owned(m) => Some(Value::String(m)),
                Cow::Borrowed(_) => None,
            },
            Value::Array(_) | Value::Object(_) => {
                let mut v = value.clone();
                self.redact_json(&mut v).then_some(v)
            }
            Value::Bool(_) | Value::Null => None,
        }
    }

    /// Replaces every occurrence of every secret with [`Redactor::MASK`]. Occurrences that
    /// overlap (one secret inside or across another, or a secret overlapping itself) are merged
    /// into a single mask, so no fragment of any secret survives, whatever the order they were
    /// registered in. Borrows `text` when there is nothing to mask.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(matcher) = self.read().matcher.clone() else {
            return Cow::Borrowed(text);
        };
        let mut spans: Vec<(usize, usize)> = matcher
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect();
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut spans = spans.into_iter().peekable();
        while let Some((start, mut end)) = spans.next() {
            while let Some(&(next_start, next_end)) = spans.peek() {
                if next_start >= end {
                    break;
                }
                end = end.max(next_end);
                spans.next();
            }
            out.push_str(&text[copied..start]);
            out.push_str(Self::MASK);
            copied = end;
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// Redacts a JSON value in place: every string (and object key) goes through
    /// [`Redactor::redact`], and under any key that [`is_secret_name`] every string and number
    /// is replaced by [`Redactor::MASK`], however deeply nested. Booleans and nulls are kept:
    /// they are never secrets (`"passwordenabled": true` stays readable).
    ///
    /// Returns whether anything was masked: if not, the value is as it came.
    pub fn redact_json(&self, value: &mut Value) -> bool {
        self.walk(value, false)
    }

    fn walk(&self, value: &mut Value, secret: bool) -> bool {
        match value {
            Value::String(text) => {
                if secret {
                    *text = Self::MASK.to_string();
                    true
                } else if let Cow::Owned(redacted) = self.redact(text) {
                    *text = redacted;
                    true
                } else {
                    false
                }
            }
            Value::Number(_) => {
                if secret {
                    *value = Value::String(Self::MASK.to_string());
                }
                secret
            }
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.walk(item, secret);
                }
                changed
            }
            Value::Object(map) => {
                let mut changed = self.redact_keys(map);
                for (key, item) in map.iter_mut() {
                    changed |= self.walk(item, secret || is_secret_name(key));
                }
                changed
            }
            Value::Bool(_) | Value::Null => false,
        }
    }

    /// Rebuilds `map` if a secret occurs in one of its keys (and says whether it did). Two keys
    /// that redact to the same text collapse into one (the later wins): a loss preferable to a
    /// leak.
    fn redact_keys(&self, map: &mut Map<String, Value>) -> bool {
        if self.is_empty() || !map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_))) {
            return false;
        }
        let old = std::mem::take(map);
        for (key, item) in old {
            let key = self.redact(&key).into_owned();
            map.insert(key, item);
        }
        true
    }
}

/// True if an argument, variable or JSON key name denotes a secret by its name: once
/// lowercased and stripped of everything but letters and digits, it contains password,
/// passwd, passphrase, secret (so secretkey / secret_key), token, signature, sessionkey,
/// privatekey, credential, authorization or cookie. `apikey` / `api_key` is not a secret:
/// CloudStack API keys are identifiers.
///
/// Names of flags match too (`passwordenabled`): callers registering values of secret-named
/// parameters should skip booleans, or `true` would be masked everywhere.
pub fn is_secret_name(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_WORDS.iter().any(|word| normalized.contains(word))
}

/// `secret` and the forms of it [`Redactor::register`] masks too.
fn encoded_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_string(),
        json_escaped(secret),
        percent_encoded(secret, true),
        percent_encoded(secret, false),
        secret.to_uppercase(),
        secret.to_lowercase(),
        hex(secret.as_bytes(), true),
        hex(secret.as_bytes(), false),
    ];
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        forms.extend(base64_cores(secret.as_bytes(), engine));
    }
    forms
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// The base64 characters that depend on `bytes` alone, for each of the three offsets (mod 3)
/// at which `bytes` can start inside a longer encoded text; at offset 0 the padded encoding of
/// `bytes` alone too.
fn base64_cores(bytes: &[u8], engine: &base64::engine::GeneralPurpose) -> Vec<String> {
    let mut out = vec![engine.encode(bytes)];
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        let encoded = engine.encode(&padded);
        // Character i covers bits [6i, 6i + 6): the first one wholly inside `bytes` starts at
        // or after bit 8 * offset, the last one ends at or before bit 8 * (offset + len).
        let first = (8 * offset).div_ceil(6);
        let end = (8 * (offset + bytes.len())) / 6;
        if let Some(core) = encoded.get(first..end) {
            out.push(core.to_string());
        }
    }
    out
}

/// The text between the quotes of `secret` as a JSON string.
fn json_escaped(secret: &str) -> String {
    let quoted = Value::String(secret.to_string()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map_or_else(|| secret.to_string(), str::to_string)
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encoded(secret: &str, upper: bool) -> String {
    let mut out = String::with_capacity(secret.len());
    for byte in secret.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else if upper {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push_str(&format!("%{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const M: &str = Redactor::MASK;

    fn redactor(secrets: &[&str]) -> Redactor {
        let mut r = Redactor::new();
        for s in secrets {
            r.add(*s);
        }
        r
    }

    #[test]
    fn substring_replacement() {
        let r = redactor(&["hunter22"]);
        assert_eq!(
            r.redact("login -p hunter22 ok; again:hunter22."),
            format!("login -p {M} ok; again:{M}.")
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert!(Redactor::new().is_empty());
        assert!(!r.is_empty());
    }

    #[test]
    fn overlapping_secrets() {
        let r = redactor(&["abcdef", "defghi"]);
        assert_eq!(r.redact("xxabcdefghixx"), format!("xx{M}xx"));
        // One secret inside another: the longer wins, nothing of either is left.
        let r = redactor(&["pass", "password1"]);
        assert_eq!(r.redact("password1 pass"), format!("{M} {M}"));
        // A secret overlapping itself.
        let r = redactor(&["aaaa"]);
        assert_eq!(r.redact("aaaaa!"), format!("{M}!"));
    }

    #[test]
    fn encoded_forms_and_unicode() {
        let r = redactor(&["p@ss w\"ord/é"]);
        assert_eq!(
            r.redact("url?pw=p%40ss%20w%22ord%2F%C3%A9&x"),
            format!("url?pw={M}&x")
        );
        assert_eq!(
            r.redact("url?pw=p%40ss%20w%22ord%2f%c3%a9"),
            format!("url?pw={M}")
        );
        let serialized = json!({"cmd": "login p@ss w\"ord/é"}).to_string();
        assert!(!serialized.contains(M));
        assert_eq!(r.redact(&serialized), format!("{{\"cmd\":\"login {M}\"}}"));
        assert_eq!(r.redact("é p@ss w\"ord/é é"), format!("é {M} é"));
    }

    #[test]
    fn secret_inside_nested_json() {
        let r = redactor(&["s3cr3tvalue"]);
        let mut value = json!({
            "steps": [
                {"output": ["line one", "the key is s3cr3tvalue!"]},
                {"nested": {"deeper": [[{"x": "s3cr3tvalue"}]]}}
            ],
            "s3cr3tvalue-as-key": 1
        });
        r.redact_json(&mut value);
        assert_eq!(
            value,
            json!({
                "steps": [
                    {"output": ["line one", format!("the key is {M}!")]},
                    {"nested": {"deeper": [[{"x": M}]]}}
                ],
                format!("{M}-as-key"): 1
            })
        );
    }

    #[test]
    fn redact_json_says_whether_it_masked() {
        let r = redactor(&["s3cr3tvalue"]);
        let clean =
            json!({"step": "fix", "rc": 0, "out": ["a", {"b": true}], "passwordenabled": true});
        let mut value = clean.clone();
        assert!(!r.redact_json(&mut value), "nothing to mask");
        assert_eq!(value, clean);
        for dirty in [
            json!({"out": ["a", {"b": "x s3cr3tvalue"}]}),
            json!({"s3cr3tvalue": 1}),
            json!({"nested": {"password": 1234}}),
            json!({"token": "t"}),
        ] {
            let mut value = dirty.clone();
            assert!(r.redact_json(&mut value), "{dirty} has a secret");
            assert_ne!(value, dirty);
        }
    }

    #[test]
    fn key_based_masking() {
        let r = Redactor::new();
        let mut value = json!({
            "username": "admin",
            "Password": "whatever",
            "apikey": "AKIDvisible",
            "api_key": "visible-too",
            "secretkey": "hidden",
            "secret_key": "hidden",
            "X-Auth-Token": 12345,
            "signature": "c2lnbg==",
            "passwordenabled": true,
            "token": null,
            "credentials": {"user": "bob", "pins": [1234, "abcd"]},
        });
        r.redact_json(&mut value);
        assert_eq!(
            value,
            json!({
                "username": "admin",
                "Password": M,
                "apikey": "AKIDvisible",
                "api_key": "visible-too",
                "secretkey": M,
                "secret_key": M,
                "X-Auth-Token": M,
                "signature": M,
                "passwordenabled": true,
                "token": null,
                "credentials": {"user": M, "pins": [M, M]},
            })
        );
    }

    #[test]
    fn secret_names() {
        for name in [
            "password",
            "db_passwd",
            "SecretKey",
            "secret_key",
            "ssh-passphrase",
            "refresh.token",
            "signature",
            "sessionkey",
            "privatekey",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "apikey", "api_key", "apiKey", "username", "zoneid", "keypair",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn short_values_ignored() {
        let mut r = Redactor::new();
        r.add("");
        r.add("abc");
        r.add("éé");
        assert!(r.is_empty());
        assert_eq!(r.redact("abc éé"), "abc éé");
        r.add("abcd");
        assert_eq!(r.redact("abcd"), M);
    }

    #[test]
    fn case_hex_and_base64_forms() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let secret = "S3cr3t-Zebra-991?";
        let r = redactor(&[secret]);
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        for form in [
            secret.to_uppercase(),
            secret.to_lowercase(),
            hex.clone(),
            hex.to_uppercase(),
            STANDARD.encode(secret),
            URL_SAFE.encode(secret),
        ] {
            assert_eq!(r.redact(&format!("<{form}>")), format!("<{M}>"), "{form}");
        }
        // Inside a longer base64 text, at each of the three alignments: no character that
        // depends on the secret alone survives.
        for prefix in ["", "a", "ab"] {
            let encoded = STANDARD.encode(format!("{prefix}{secret} and more"));
            let masked = r.redact(&encoded);
            assert!(masked.contains(M), "{prefix:?}: {masked}");
            assert!(masked.len() <= encoded.len(), "{masked}");
        }
    }

    #[test]
    fn clones_share_what_is_registered_later() {
        let r = Redactor::new();
        let clone = r.clone();
        r.register("derived-secret");
        assert_eq!(clone.redact("x derived-secret"), format!("x {M}"));
        assert!(clone.finds("DERIVED-SECRET"));
        let masked = clone.masked_value("n", &json!(["a", "derived-secret"]));
        assert_eq!(masked, Some(json!(["a", M])));
        assert_eq!(clone.masked_value("n", &json!("plain")), None);
        assert_eq!(clone.masked_value("api_token", &json!(12)), Some(json!(M)));
        assert_eq!(clone.masked_value("api_token", &json!(true)), None);
    }

    #[test]
    fn debug_does_not_leak() {
        let r = redactor(&["topsecretvalue"]);
        assert!(!format!("{r:?}").contains("topsecret"));
    }
}
