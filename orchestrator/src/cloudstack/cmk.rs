//! Credentials from a cloudmonkey config, since operators already have one: `~/.cmk/config`
//! (cmk 6, Go) or `~/.cloudmonkey/config` (cloudmonkey 5, Python). INI: a `[core]` section
//! whose `profile` names the default profile, and one section per profile with `url`,
//! `apikey`, `secretkey` and `verifycert` (cmk 6, in `[core]` or the profile) or
//! `verifysslcert` (cloudmonkey 5, in the profile).
//!
//! Errors name the file and the profile, never a key's value.

use std::path::{Path, PathBuf};

use super::client::Credentials;

/// One profile, read.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub credentials: Credentials,
    /// `false` only when the config says `verifycert = false` (or `verifysslcert = false`).
    pub verify_tls: bool,
}

/// The default config path: `~/.cmk/config`, else `~/.cloudmonkey/config` when only that exists.
pub fn default_path() -> Option<PathBuf> {
    let home = dirs::home_dir()?;
    let cmk = home.join(".cmk").join("config");
    let old = home.join(".cloudmonkey").join("config");
    Some(if !cmk.exists() && old.exists() {
        old
    } else {
        cmk
    })
}

/// Reads `profile` (or the config's default profile) from the config at `path`.
pub fn load(path: &Path, profile: Option<&str>) -> Result<Profile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cloudmonkey config {}: {e}", path.display()))?;
    parse(&text, profile).map_err(|e| format!("cloudmonkey config {}: {e}", path.display()))
}

/// Parses a config's text. See the module doc for the keys.
pub fn parse(text: &str, profile: Option<&str>) -> Result<Profile, String> {
    let ini = ini::Ini::load_from_str(text).map_err(|e| format!("not an INI file: {e}"))?;
    let core = ini.section(Some("core"));
    let name = match profile {
        Some(p) => p.to_string(),
        None => core
            .and_then(|c| c.get("profile"))
            .map(str::to_string)
            .ok_or("no profile given and no `profile` in [core]")?,
    };
    let section = ini.section(Some(name.as_str())).ok_or_else(|| {
        let known: Vec<&str> = ini
            .sections()
            .flatten()
            .filter(|s| *s != "core" && *s != "ui" && *s != "server")
            .collect();
        format!("no profile [{name}] (profiles: {})", known.join(", "))
    })?;
    let get = |key: &str| section.get(key).map(str::trim).filter(|v| !v.is_empty());
    let url = get("url").ok_or_else(|| format!("[{name}]: no url"))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("[{name}]: url must start with http:// or https://"));
    }
    let api_key = get("apikey").ok_or_else(|| {
        format!("[{name}]: no apikey (remedy signs requests with an API key pair; username/password login is not supported)")
    })?;
    let secret_key = get("secretkey").ok_or_else(|| format!("[{name}]: no secretkey"))?;
    let flag = |v: Option<&str>| {
        v.map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "no" | "0"))
    };
    let verify_tls = flag(get("verifycert"))
        .or(flag(get("verifysslcert")))
        .or(flag(core.and_then(|c| c.get("verifycert"))))
        .unwrap_or(true);
    Ok(Profile {
        name,
        credentials: Credentials {
            endpoint: url.to_string(),
            api_key: api_key.to_string(),
            secret_key: secret_key.to_string(),
        },
        verify_tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMK6: &str = "prompt = 🐵\nasyncblock = true\n\n[core]\nprofile = prod\nverifycert = true\n\n[localcloud]\nurl = http://localhost:8080/client/api\nusername = admin\npassword = password\napikey =\nsecretkey =\n\n[prod]\nurl = https://cloud.example.com:8443/client/api\napikey = AK-1\nsecretkey = SK-very-secret\nverifycert = false\n";

    #[test]
    fn default_profile_from_core() {
        let p = parse(CMK6, None).unwrap();
        assert_eq!(p.name, "prod");
        assert_eq!(
            p.credentials.endpoint,
            "https://cloud.example.com:8443/client/api"
        );
        assert_eq!(p.credentials.api_key, "AK-1");
        assert!(!p.verify_tls);
    }

    #[test]
    fn named_profile_without_keys_is_refused_without_echoing() {
        let e = parse(CMK6, Some("localcloud")).unwrap_err();
        assert!(e.contains("[localcloud]: no apikey"), "{e}");
        let e = parse(CMK6, Some("nope")).unwrap_err();
        assert!(e.contains("no profile [nope]") && e.contains("prod"), "{e}");
        assert!(!e.contains("SK-very-secret"));
    }

    #[test]
    fn cloudmonkey5_verifysslcert() {
        let text = "[core]\nprofile = old\n\n[old]\nurl = https://c/client/api\napikey = a\nsecretkey = b\nverifysslcert = False\n";
        assert!(!parse(text, None).unwrap().verify_tls);
        let text = "[old]\nurl = https://c/client/api\napikey = a\nsecretkey = b\n";
        assert!(parse(text, Some("old")).unwrap().verify_tls);
        assert!(parse(text, None).unwrap_err().contains("no profile given"));
    }
}
