//! `remedy inventory`: what an inventory resolves to, as `--list` JSON, one `--host`'s
//! variables, or the `--graph` of groups. The output's shape is `crate::inventory::show`'s;
//! resolving the inventory is `resolve.rs`'s. `--list` is refused on the embedded simulator,
//! whose zone, ports and key file vanish when remedy exits.

use std::path::PathBuf;

use crate::error::{Error, ExitCode};

use super::output::fail;
use super::resolve::{load_inventory, resolve_loaded};
use crate::inventory::{CloudStackSource, Inventory};

/// `remedy inventory`.
pub(super) async fn run(
    paths: &[PathBuf],
    list: bool,
    host: Option<String>,
    graph: Option<String>,
) -> ExitCode {
    use crate::inventory::show;
    let loaded = match load_inventory(paths) {
        Ok(inv) => inv,
        Err(e) => return fail(&e),
    };
    if list {
        if let Some(message) = embedded_simulator(&loaded) {
            return fail(&Error::invalid(message));
        }
    }
    let inv = match resolve_loaded(loaded, paths).await {
        Ok((inv, _, _)) => inv,
        Err(e) => return fail(&e),
    };
    // Secret values (what the inventory decrypted, what its references hold) are masked as in
    // every other output; references themselves (`{ env: NAME }`, `"{{ vault_pass }}"`) stay
    // readable, as ansible-inventory shows them.
    let mut redactor = crate::redact::Redactor::new();
    crate::cloudstack::register_secrets(&inv, &mut redactor);
    let json = |value: serde_json::Value| {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        redactor.redact(&text).into_owned()
    };
    let text = if list {
        json(show::list(&inv))
    } else if let Some(name) = host {
        match inv.host(&name) {
            Some(h) => json(show::host_vars(&inv, h)),
            None => {
                return fail(&Error::invalid(format!(
                    "no host {name:?} in the inventory"
                )))
            }
        }
    } else {
        match show::graph(&inv, graph.as_deref().unwrap_or("all")) {
            Ok(g) => g.trim_end().to_string(),
            Err(e) => return fail(&Error::invalid(e)),
        }
    };
    outln!("{text}");
    ExitCode::Success
}

/// Why `--list` is refused for an inventory on the embedded simulator: Ansible would read the
/// output after remedy exits, when the zone it describes, its SSH ports and its client key are
/// gone.
fn embedded_simulator(inv: &Inventory) -> Option<String> {
    let ep = inv.cloudstack()?;
    let CloudStackSource::Simulator { scenario } = &ep.source else {
        return None;
    };
    Some(format!(
        "--list is refused for an inventory on the embedded simulator \
         (remedy_cloudstack: {{ simulator: ... }}): the zone, its SSH ports and its client key \
         exist only while remedy runs, so a dynamic inventory printed now points at nothing. \
         Start a lasting lab instead: `remedy lab --scenario {scenario} --write-inventory \
         lab-live.yml`, then `remedy inventory -i lab-live.yml --list` (--graph and --host \
         work here, for a look)"
    ))
}

/// The vault passwords of a command that reads inventories, as Ansible's CLI takes them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VaultArgs {
    /// A file holding an ansible-vault password (default: $ANSIBLE_VAULT_PASSWORD_FILE).
    #[arg(long, value_name = "FILE")]
    pub vault_password_file: Vec<PathBuf>,
    /// An ansible-vault password with its vault id: LABEL@FILE, or FILE (repeatable).
    #[arg(long, value_name = "[LABEL@]FILE")]
    pub vault_id: Vec<String>,
}

impl VaultArgs {
    /// Reads the password files and gives them to every inventory load of this process.
    pub fn install(&self) -> Result<(), Error> {
        use crate::inventory::vault::{use_passwords, VaultPassword};
        let mut passwords = Vec::new();
        for file in &self.vault_password_file {
            let spec = file.display().to_string();
            let password = VaultPassword::from_spec(&spec).map_err(Error::invalid)?;
            passwords.push(password);
        }
        for spec in &self.vault_id {
            passwords.push(VaultPassword::from_spec(spec).map_err(Error::invalid)?);
        }
        if !passwords.is_empty() {
            use_passwords(passwords);
        }
        Ok(())
    }
}
