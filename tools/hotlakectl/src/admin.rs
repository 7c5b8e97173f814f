//! Cluster administration: `cluster`, `node`, `shard` and `rebalance`, over the typed
//! `hotlake.v1.Admin` service of the client library.

use std::io::Write;
use std::time::{Duration, Instant};

use hotlake_client::{AdminClient, ClusterPlan, ClusterStatus, Member, NodeState};

use crate::output::{json as print_json, print_rows, Output};
use crate::Failure;

/// The map and every member's status.
pub async fn status(admin: &AdminClient) -> Result<ClusterStatus, Failure> {
    Ok(admin.cluster_status().await?)
}

/// Polls the cluster status every `every` until `poll` says what it waits for is reached or
/// `timeout` passes.
async fn watch(
    admin: &AdminClient,
    timeout: Duration,
    every: Duration,
    mut poll: impl FnMut(&ClusterStatus, Option<&ClusterPlan>) -> bool,
    with_plan: bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(admin).await?;
        let plan = if with_plan { Some(admin.plan().await?) } else { None };
        if poll(&s, plan.as_ref()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::NotDone(format!(
                "not done after {} s; the cluster keeps working on it",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn cluster_init(admin: &AdminClient, out: &mut impl Write) -> Result<(), Failure> {
    let r = admin.init_cluster().await?;
    let id = format!("{:016x}", r.cluster_id);
    if r.created {
        let _ = writeln!(out, "cluster {id} created; start the other nodes with --join, or they join already");
        if !r.admin_token.is_empty() {
            let _ = writeln!(
                out,
                "its admin token (read:*, write:*, admin:*), shown only this once:\n\n    {}\n\n\
                 Keep it secret; pass it with --token-file or HOTLAKE_TOKEN.",
                r.admin_token
            );
        }
    } else {
        let _ = writeln!(out, "cluster {id} already exists; nothing to do");
    }
    Ok(())
}

/// Ready, and at least `wait_nodes` members.
fn ready_with(s: &ClusterStatus, wait_nodes: usize) -> Result<(), String> {
    s.readiness()?;
    let n = s.members.len();
    if n < wait_nodes {
        return Err(format!("{n} of {wait_nodes} nodes are members"));
    }
    Ok(())
}

pub async fn cluster_status(
    admin: &AdminClient,
    output: Output,
    wait_ready_s: u64,
    wait_nodes: usize,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(wait_ready_s);
    let mut s = status(admin).await;
    while Instant::now() < deadline && !s.as_ref().is_ok_and(|s| ready_with(s, wait_nodes).is_ok()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s = status(admin).await;
    }
    let s = s?;
    let rows = node_rows(&s);
    match output {
        Output::Json => print_json(&serde_json::to_value(&s.0).unwrap_or_default(), out),
        Output::Csv => print_rows(output, NODE_HEADERS, &rows, out),
        Output::Table => {
            let _ = writeln!(
                out,
                "cluster {:016x}  map version {}  {} shards  replication factor {}  auth {}  {}",
                s.cluster_id,
                s.map_version,
                s.shard_count,
                s.replication_factor,
                if s.auth { "on" } else { "OFF" },
                match ready_with(&s, wait_nodes) {
                    Ok(()) => "ready".to_string(),
                    Err(why) => format!("not ready: {why}"),
                }
            );
            print_rows(output, NODE_HEADERS, &rows, out);
        }
    }
    if wait_ready_s > 0 {
        ready_with(&s, wait_nodes)
            .map_err(|why| Failure::NotDone(format!("the cluster is not ready after {wait_ready_s} s: {why}")))?;
    } else if let Some(m) = s.members.iter().find(|m| m.report.is_none()) {
        return Err(Failure::Unreachable(format!("node {} does not answer", m.id)));
    }
    Ok(())
}

pub async fn cluster_map(admin: &AdminClient, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(admin).await?;
    if output == Output::Json {
        let mut map = serde_json::to_value(&s.0).unwrap_or_default();
        // The map only: members without their reports.
        for m in map["members"].as_array_mut().into_iter().flatten() {
            if let Some(m) = m.as_object_mut() {
                m.remove("report");
                m.remove("error");
            }
        }
        print_json(&map, out);
        return Ok(());
    }
    let rows: Vec<Vec<String>> =
        s.shards.iter().map(|p| vec![p.shard.to_string(), join(&p.replicas), p.epoch.to_string()]).collect();
    if output == Output::Table {
        let _ = writeln!(out, "map version {}  cluster {:016x}", s.map_version, s.cluster_id);
        let nodes: Vec<Vec<String>> = s
            .members
            .iter()
            .map(|n| vec![n.id.to_string(), n.grpc_addr.clone(), n.http_addr.clone(), state_name(n).into()])
            .collect();
        print_rows(output, &["node", "grpc", "http", "state"], &nodes, out);
        let _ = writeln!(out);
    }
    print_rows(output, &["shard", "replicas", "epoch"], &rows, out);
    Ok(())
}

fn state_name(m: &Member) -> &'static str {
    match m.state() {
        NodeState::Active => "active",
        NodeState::Draining => "draining",
        NodeState::Removing => "removing",
        NodeState::Unspecified => "unspecified",
    }
}

const NODE_HEADERS: &[&str] = &["node", "grpc", "http", "state", "reachable", "replicas", "leaders", "learners"];

fn node_rows(s: &ClusterStatus) -> Vec<Vec<String>> {
    use hotlake_client::ReplicaRole;
    s.members
        .iter()
        .map(|m| {
            let replicas = m.report.as_ref().map(|r| &r.replicas);
            let count = |role: ReplicaRole| {
                replicas.map(|r| r.iter().filter(|x| x.role() == role).count().to_string()).unwrap_or_default()
            };
            let reach = if m.report.is_none() { format!("no: {}", m.error) } else { "yes".into() };
            vec![
                m.id.to_string(),
                m.grpc_addr.clone(),
                m.http_addr.clone(),
                state_name(m).into(),
                reach,
                replicas.map(|r| r.len().to_string()).unwrap_or_default(),
                count(ReplicaRole::Leader),
                count(ReplicaRole::Learner),
            ]
        })
        .collect()
}

pub async fn node_list(admin: &AdminClient, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(admin).await?;
    print_rows(output, NODE_HEADERS, &node_rows(&s), out);
    Ok(())
}

pub async fn node_add(
    admin: &AdminClient,
    id: u64,
    [grpc, http, peer]: [&String; 3],
    out: &mut impl Write,
) -> Result<(), Failure> {
    admin.add_node(id, grpc, http, peer).await?;
    let _ = writeln!(
        out,
        "node {id} added at {grpc} (HTTP {http}, peer {peer}); start it with: \
         hotlake serve --node-id {id} --grpc-addr {grpc} --http-addr {http} --peer-addr {peer} --join <member's peer address>"
    );
    Ok(())
}

/// Drains, removes or activates a node, optionally followed until done.
pub async fn node_state(
    admin: &AdminClient,
    id: u64,
    state: NodeState,
    watch_s: Option<u64>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    admin.set_node_state(id, state).await?;
    let said = match state {
        NodeState::Draining => format!("node {id} is draining: its replicas move to other nodes; it stays a member"),
        NodeState::Removing => {
            format!("node {id} is being removed: its replicas move to other nodes, then it leaves")
        }
        _ => format!("node {id} is active: it takes replicas again"),
    };
    let _ = writeln!(out, "{said}");
    let Some(timeout) = watch_s else { return Ok(()) };
    let poll = |s: &ClusterStatus, _: Option<&ClusterPlan>| {
        let member = s.member(id);
        let placed = s.shards.iter().filter(|p| p.replicas.contains(&id)).count();
        let hosted = member.and_then(|m| m.report.as_ref()).map(|r| r.replicas.len());
        let done = match state {
            NodeState::Removing => member.is_none(),
            NodeState::Draining => placed == 0 && hosted.unwrap_or(0) == 0,
            _ => s.readiness().is_ok(),
        };
        if done {
            let left = if state == NodeState::Removing { "; it left the cluster" } else { "" };
            let _ = writeln!(out, "node {id}: done{left}");
        } else {
            let hosted = hosted.map(|h| h.to_string()).unwrap_or("?".into());
            let _ = writeln!(out, "node {id}: {placed} replicas placed, {hosted} hosted");
        }
        done
    };
    watch(admin, Duration::from_secs(timeout), Duration::from_secs(1), poll, false).await
}

fn leader_cell(s: &ClusterStatus, shard: u32) -> String {
    s.leader_of(shard).map(|l| l.to_string()).unwrap_or_else(|| "none".into())
}

fn settled_cell(s: &ClusterStatus, shard: u32) -> &'static str {
    if s.is_settled(shard) {
        "settled"
    } else {
        "moving"
    }
}

pub async fn shard_list(admin: &AdminClient, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(admin).await?;
    let rows: Vec<Vec<String>> = s
        .shards
        .iter()
        .map(|p| {
            let leader = s.leader_of(p.shard);
            let applied = s.replicas_of(p.shard).find(|(id, _)| Some(*id) == leader).map(|(_, r)| r.applied);
            vec![
                p.shard.to_string(),
                join(&p.replicas),
                leader_cell(&s, p.shard),
                applied.map(|a| a.to_string()).unwrap_or_default(),
                p.epoch.to_string(),
                settled_cell(&s, p.shard).into(),
            ]
        })
        .collect();
    print_rows(output, &["shard", "replicas", "leader", "applied", "epoch", "state"], &rows, out);
    Ok(())
}

pub async fn shard_show(admin: &AdminClient, shard: u32, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(admin).await?;
    let Some(p) = s.shards.iter().find(|p| p.shard == shard) else {
        return Err(Failure::Rejected(format!("no shard {shard}; the cluster has {} shards", s.shards.len())));
    };
    let mut rows = Vec::new();
    for (id, r) in s.replicas_of(shard) {
        let addr = s.member(id).map(|m| m.grpc_addr.clone()).unwrap_or_default();
        let digest = match admin.shard_digest_at(&addr, shard).await {
            Ok(d) => format!("{:016x}", d.digest),
            Err(_) => "busy".into(),
        };
        rows.push(vec![
            id.to_string(),
            role_name(r.role()).into(),
            join(&r.voters),
            r.applied.to_string(),
            r.flushed.to_string(),
            r.memtable_bytes.to_string(),
            digest,
        ]);
    }
    if output == Output::Table {
        let _ = writeln!(
            out,
            "shard {shard}  placed on {}  epoch {}  leader {}  {}",
            join(&p.replicas),
            p.epoch,
            leader_cell(&s, shard),
            settled_cell(&s, shard)
        );
    }
    print_rows(output, &["node", "role", "voters", "applied", "flushed", "memtable_bytes", "digest"], &rows, out);
    Ok(())
}

fn role_name(role: hotlake_client::ReplicaRole) -> &'static str {
    use hotlake_client::ReplicaRole;
    match role {
        ReplicaRole::Leader => "leader",
        ReplicaRole::Follower => "follower",
        ReplicaRole::Candidate => "candidate",
        ReplicaRole::Learner => "learner",
        ReplicaRole::Stopped => "stopped",
        ReplicaRole::Unspecified => "unspecified",
    }
}

pub async fn shard_move(
    admin: &AdminClient,
    shard: u32,
    from: u64,
    to: u64,
    watch_s: Option<u64>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    admin.move_replica(shard, from, to).await?;
    let _ = writeln!(out, "shard {shard}: replica moving from node {from} to node {to}");
    let Some(timeout) = watch_s else { return Ok(()) };
    let poll = |s: &ClusterStatus, _: Option<&ClusterPlan>| {
        let done = s.is_settled(shard);
        let hosts: Vec<u64> = s.replicas_of(shard).map(|(id, _)| id).collect();
        let _ = writeln!(
            out,
            "shard {shard}: placed on {}, hosted on {}{}",
            join(s.placement(shard)),
            join(&hosts),
            if done { ": done" } else { "" }
        );
        done
    };
    watch(admin, Duration::from_secs(timeout), Duration::from_secs(1), poll, false).await
}

pub async fn shard_transfer_leader(
    admin: &AdminClient,
    shard: u32,
    to: u64,
    out: &mut impl Write,
) -> Result<(), Failure> {
    admin.transfer_leader(shard, to).await?;
    let _ = writeln!(out, "shard {shard}: node {to} leads it now");
    Ok(())
}

pub async fn rebalance(
    admin: &AdminClient,
    dry_run: bool,
    watch_s: u64,
    output: Output,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let plan = admin.plan().await?;
    let rows = plan_rows(&plan);
    if output == Output::Json {
        print_json(&serde_json::to_value(&plan).unwrap_or_default(), out);
    } else if rows.is_empty() {
        let _ = writeln!(out, "placement is balanced: no move needed");
    } else {
        print_rows(output, &["shard", "from", "to"], &rows, out);
    }
    if dry_run || rows.is_empty() {
        return Ok(());
    }
    // The meta leader applies the plan continuously, a few shards at a time; follow it.
    let _ = writeln!(out, "the cluster applies these moves a few shards at a time; following until balanced...");
    let poll = |s: &ClusterStatus, plan: Option<&ClusterPlan>| {
        let left = plan.map(|p| p.moves.len()).unwrap_or(0);
        let moving = s.shards.iter().filter(|p| !s.is_settled(p.shard)).count();
        let _ = writeln!(out, "{left} moves planned, {moving} shards moving");
        left == 0 && moving == 0
    };
    watch(admin, Duration::from_secs(watch_s), Duration::from_secs(2), poll, true).await
}

fn plan_rows(plan: &ClusterPlan) -> Vec<Vec<String>> {
    plan.moves.iter().map(|m| vec![m.shard.to_string(), join(&m.from), join(&m.to)]).collect()
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}
