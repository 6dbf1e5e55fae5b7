//! `remedy api`: one read-only CloudStack API call, its reply printed as JSON or as a table of
//! chosen fields, with every secret masked. Where the API is comes from the inventory
//! (`resolve.rs`); the client is `crate::cloudstack`'s.

use std::path::PathBuf;

use crate::error::{Error, ExitCode};

use super::output::fail;
use super::resolve::load_inventory;

/// `remedy api`: one read-only call, the reply as JSON (or a table of `fields`).
pub(super) async fn run(
    command: String,
    args: Vec<(String, String)>,
    inventory: &[PathBuf],
    fields: &[String],
) -> ExitCode {
    use crate::transport::{Access, ApiCall};
    let call = ApiCall {
        command: command.clone(),
        args: args.into_iter().collect(),
    };
    if call.access() != Access::ReadOnly {
        return fail(&Error::invalid(format!(
            "remedy api makes read-only calls only (list*, query*, get*); {command} may change \
             the cloud, so it belongs in a playbook, where it is planned, audited and undone on \
             failure"
        )));
    }
    let inv = match load_inventory(inventory) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let Some(ep) = inv.cloudstack() else {
        return fail(&Error::invalid(
            "the inventory has no remedy_cloudstack (give one with -i)".to_string(),
        ));
    };
    let conn = match crate::cloudstack::connect(ep, crate::cloudstack::Options::default()).await {
        Ok(c) => c,
        Err(e) => return fail(&Error::Other(e.to_string())),
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let reply = match conn
        .client
        .call(
            &command,
            &call.args,
            crate::cloudstack::Method::Get,
            deadline,
            None,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return fail(&Error::Other(e.to_string())),
    };
    // Secret-named fields (secretkey, password, privatekey...) and every secret the run knows,
    // the API secret key first, never reach the terminal.
    let mut redactor = crate::redact::Redactor::new();
    crate::cloudstack::register_secrets(&inv, &mut redactor);
    conn.client.register_secret(&mut redactor);
    out!("{}", render_reply(reply, fields, &redactor));
    ExitCode::Success
}

/// `remedy api`'s output: the reply as JSON, or a table of `fields`, redacted.
fn render_reply(
    mut reply: serde_json::Value,
    fields: &[String],
    redactor: &crate::redact::Redactor,
) -> String {
    redactor.redact_json(&mut reply);
    if fields.is_empty() {
        return format!(
            "{}\n",
            serde_json::to_string_pretty(&reply).unwrap_or_default()
        );
    }
    let items: Vec<serde_json::Value> = reply
        .as_object()
        .and_then(crate::cloudstack::reply::list_key)
        .and_then(|k| reply[k].as_array().cloned())
        .unwrap_or_else(|| vec![reply.clone()]);
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| fields.iter().map(|f| cell(&item[f.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([f.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(fields.to_vec()) + "\n";
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_output_masks_secret_fields_and_known_secrets() {
        let reply = serde_json::json!({"count": 1, "user": [{
            "username": "ops", "apikey": "AK-1", "secretKey": "SK-plain-1",
            "Password": "pw-plain-2", "privatekey": "PK-plain-3",
            "description": "signed with the-api-secret"
        }]});
        let mut r = crate::redact::Redactor::new();
        r.add("the-api-secret");
        let f = |fields: &[&str]| {
            let fields: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            render_reply(reply.clone(), &fields, &r)
        };
        for out in [
            f(&[]),
            f(&[
                "username",
                "secretKey",
                "Password",
                "privatekey",
                "description",
            ]),
        ] {
            for leak in ["SK-plain-1", "pw-plain-2", "PK-plain-3", "the-api-secret"] {
                assert!(!out.contains(leak), "{out}");
            }
            assert!(out.contains("ops"), "{out}");
            assert!(out.contains("********"), "{out}");
        }
    }
}
