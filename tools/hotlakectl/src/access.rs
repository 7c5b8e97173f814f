//! Tenants and tokens: `tenant` and `token`, over the typed `hotlake.v1.Admin` service.

use std::io::Write;

use hotlake_client::{AdminClient, TenantSettings};
use serde_json::json;

use crate::output::{json as print_json, print_rows, rfc3339, Output};
use crate::Failure;

pub async fn tenant_create(
    admin: &AdminClient,
    name: &str,
    retention_s: u64,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let version = admin.create_tenant(name, TenantSettings { retention_s }).await?;
    let _ = writeln!(out, "tenant {name:?} created (map version {version}); {}", retention(retention_s));
    Ok(())
}

pub async fn tenant_set(
    admin: &AdminClient,
    name: &str,
    retention_s: u64,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let version = admin.set_tenant(name, TenantSettings { retention_s }).await?;
    let _ = writeln!(out, "tenant {name:?} updated (map version {version}); {}", retention(retention_s));
    Ok(())
}

fn retention(s: u64) -> String {
    if s == 0 {
        "its points are kept forever".into()
    } else {
        format!("points older than {s} s are dropped, a whole block window at a time")
    }
}

pub async fn tenant_list(admin: &AdminClient, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let tenants = admin.tenants().await?;
    if output == Output::Json {
        print_json(&serde_json::to_value(&tenants).unwrap_or_default(), out);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            let r = t.settings.as_ref().map(|s| s.retention_s).unwrap_or(0);
            vec![t.name.clone(), if r == 0 { "forever".into() } else { format!("{r} s") }]
        })
        .collect();
    print_rows(output, &["TENANT", "RETENTION"], &rows, out);
    Ok(())
}

pub async fn token_create(
    admin: &AdminClient,
    name: &str,
    scopes: &[String],
    output: Output,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if scopes.is_empty() {
        return Err(Failure::Usage("give at least one --scope, e.g. --scope read:fleet --scope write:fleet".into()));
    }
    let created = admin.create_token(name, scopes).await?;
    let token = created.token.unwrap_or_default();
    if output == Output::Json {
        print_json(
            &json!({ "id": token.id, "name": token.name, "scopes": token.scopes, "secret": created.secret }),
            out,
        );
        return Ok(());
    }
    let _ = writeln!(
        out,
        "token {} ({:?}) created with scopes {}. Its secret, shown only this once:\n\n    {}\n\n\
         Send it as `Authorization: Token <secret>` (InfluxDB clients: the token, or the password with any user).",
        token.id,
        token.name,
        token.scopes.join(", "),
        created.secret
    );
    Ok(())
}

pub async fn token_list(
    admin: &AdminClient,
    output: Output,
    raw_time: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let tokens = admin.tokens().await?;
    if output == Output::Json {
        print_json(&serde_json::to_value(&tokens).unwrap_or_default(), out);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let created_ns = (t.created_ms as i64).saturating_mul(1_000_000);
            let created = if raw_time || output == Output::Csv { created_ns.to_string() } else { rfc3339(created_ns) };
            vec![t.id.to_string(), t.name.clone(), t.scopes.join(" "), created]
        })
        .collect();
    print_rows(output, &["ID", "NAME", "SCOPES", "CREATED"], &rows, out);
    Ok(())
}

pub async fn token_revoke(admin: &AdminClient, id: u64, out: &mut impl Write) -> Result<(), Failure> {
    let version = admin.revoke_token(id).await?;
    let _ =
        writeln!(out, "token {id} revoked (map version {version}); every node refuses it once it applies that version");
    Ok(())
}
