//! Generates the Rust types and tonic stubs for `hotlake.v1` (the data and admin services) and
//! the node-to-node `hotlake.internal.v1`. This is the only crate that runs code generation;
//! `protoc` comes vendored so a fresh machine needs nothing installed.
/// Messages of `hotlake.v1.Admin` replies (and what they contain).
const ADMIN_REPLIES: &[&str] = &[
    "ClusterStatusResponse",
    "Member",
    "NodeReport",
    "ReplicaReport",
    "ShardPlacement",
    "InitClusterResponse",
    "ClusterPlanResponse",
    "PlannedMove",
    "MapChangeResponse",
    "ShardDigestResponse",
    "HealthResponse",
    "TenantSettings",
    "Tenant",
    "ListTenantsResponse",
    "Token",
    "CreateTokenResponse",
    "ListTokensResponse",
    "ConsumerGroup",
    "ConsumerMember",
    "ShardPosition",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/hotlake/v1/hotlake.proto");
    println!("cargo:rerun-if-changed=proto/hotlake/v1/admin.proto");
    println!("cargo:rerun-if-changed=proto/hotlake/internal/v1/peer.proto");
    // The admin replies also serialize to JSON (for `hotlakectl --output json`), with enum
    // fields as their lower-case names.
    let mut builder = tonic_build::configure();
    for message in ADMIN_REPLIES {
        builder = builder.type_attribute(format!(".hotlake.v1.{message}"), "#[derive(serde::Serialize)]");
    }
    builder
        .field_attribute(".hotlake.v1.Member.state", "#[serde(serialize_with = \"crate::json::node_state\")]")
        .field_attribute(".hotlake.v1.ReplicaReport.role", "#[serde(serialize_with = \"crate::json::replica_role\")]")
        .compile_protos(
            &["proto/hotlake/v1/hotlake.proto", "proto/hotlake/v1/admin.proto", "proto/hotlake/internal/v1/peer.proto"],
            &["proto"],
        )?;
    Ok(())
}
