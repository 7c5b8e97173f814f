//! Consumer groups: `consumer list|show|reset|delete`. Listing needs read on the tenant (over
//! the data service); reset and delete need admin on it (over the admin service).

use std::io::Write;

use hotlake_client::proto::ConsumerGroup;
use hotlake_client::{AdminClient, Client};

use crate::output::{json as print_json, print_rows, Output};
use crate::Failure;

/// `consumer list` (every group of the tenant) and `consumer show` (one, shard by shard).
pub async fn show(
    client: &Client,
    db: &str,
    group: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let groups = client.consumer_groups(db, group.unwrap_or("")).await?;
    if output == Output::Json {
        print_json(&serde_json::to_value(&groups).unwrap_or_default(), out);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = groups.iter().map(summary_row).collect();
    print_rows(output, &["GROUP", "MEMBERS", "LAG (ENTRIES)", "COMMITS"], &rows, out);
    if let Some(g) = groups.first().filter(|_| group.is_some()) {
        let _ = writeln!(out);
        let rows: Vec<Vec<String>> = g
            .shards
            .iter()
            .map(|s| {
                let reader = g.members.iter().find(|m| m.shards.contains(&s.shard)).map(|m| m.member.as_str());
                vec![
                    s.shard.to_string(),
                    s.position.to_string(),
                    s.applied.to_string(),
                    s.applied.saturating_sub(s.position).to_string(),
                    reader.unwrap_or("-").to_string(),
                ]
            })
            .collect();
        print_rows(output, &["SHARD", "COMMITTED", "APPLIED", "LAG", "MEMBER"], &rows, out);
        let _ = writeln!(out, "\ncursor: {}", g.cursor);
    }
    Ok(())
}

fn summary_row(g: &ConsumerGroup) -> Vec<String> {
    vec![g.group.clone(), g.members.len().to_string(), g.lag_entries.to_string(), g.commits.to_string()]
}

/// `consumer reset GROUP --to now|CURSOR`.
pub async fn reset(admin: &AdminClient, db: &str, group: &str, to: &str, out: &mut impl Write) -> Result<(), Failure> {
    admin.reset_consumer_group(db, group, to).await?;
    let _ = writeln!(out, "consumer group {group:?} moved to {to}; its next member resumes there");
    Ok(())
}

/// `consumer delete GROUP`.
pub async fn delete(admin: &AdminClient, db: &str, group: &str, out: &mut impl Write) -> Result<(), Failure> {
    admin.delete_consumer_group(db, group).await?;
    let _ = writeln!(out, "consumer group {group:?} deleted");
    Ok(())
}
