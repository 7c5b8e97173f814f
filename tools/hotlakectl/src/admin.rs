//! Cluster administration: `cluster`, `node`, `shard` and `rebalance`.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::Api;
use crate::output::{cell, json as print_json, print_rows, Output};
use crate::Failure;

/// `GET /api/v1/cluster`: the map and every member's status.
pub fn status(api: &Api) -> Result<Value, Failure> {
    api.get("/api/v1/cluster")
}

fn shards(status: &Value) -> &[Value] {
    status["map"]["shards"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn members(status: &Value) -> &[Value] {
    status["members"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn replicas_of(placement: &Value) -> Vec<u64> {
    placement["replicas"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}

/// Every replica status a member reports for `shard`, with the member's id.
fn replica_statuses(status: &Value, shard: usize) -> Vec<(u64, &Value)> {
    members(status)
        .iter()
        .flat_map(|m| {
            let id = m["info"]["id"].as_u64().unwrap_or(0);
            m["status"]["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(move |r| r["shard"] == json!(shard))
                .map(move |r| (id, r))
        })
        .collect()
}

/// The node leading `shard`, as its replicas report.
fn leader_of(status: &Value, shard: usize) -> Option<u64> {
    replica_statuses(status, shard).into_iter().find(|(_, r)| r["role"] == "leader").map(|(id, _)| id)
}

/// Whether `shard`'s replicas are exactly its placement, all voters, with a leader.
fn shard_settled(status: &Value, shard: usize) -> bool {
    let placed = replicas_of(&shards(status)[shard]);
    let seen = replica_statuses(status, shard);
    let mut hosts: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    hosts.sort_unstable();
    hosts == placed
        && seen.iter().all(|(_, r)| {
            (r["role"] == "leader" || r["role"] == "follower")
                && !r["leader"].is_null()
                && r["joint"] == false
                && r["voters"]
                    .as_array()
                    .is_some_and(|v| v.iter().filter_map(Value::as_u64).collect::<Vec<_>>() == placed)
        })
}

/// Ready: every member answers, every shard has min(members, replication factor) replicas,
/// all settled.
pub fn ready(status: &Value) -> Result<(), String> {
    let rf = status["map"]["replication_factor"].as_u64().unwrap_or(0) as usize;
    let active = members(status).iter().filter(|m| m["info"]["state"] == "active").count();
    let want = active.min(rf).max(1);
    if let Some(m) = members(status).iter().find(|m| m["status"].is_null()) {
        return Err(format!("node {} does not answer: {}", m["info"]["id"], cell(&m["error"])));
    }
    for (i, p) in shards(status).iter().enumerate() {
        if replicas_of(p).len() != want {
            return Err(format!("shard {i} has {} replicas placed, wants {want}", replicas_of(p).len()));
        }
        if !shard_settled(status, i) {
            return Err(format!("shard {i} is moving or has no leader"));
        }
    }
    Ok(())
}

/// Polls the cluster status every `every` until `done` says what it waits for is reached or
/// `timeout` passes, printing `progress` on each poll.
fn watch(
    api: &Api,
    timeout: Duration,
    every: Duration,
    mut poll: impl FnMut(&Value) -> Result<bool, Failure>,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(api)?;
        if poll(&s)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::NotDone(format!(
                "not done after {} s; the cluster keeps working on it",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(every);
    }
}

pub fn cluster_init(api: &Api, out: &mut impl Write) -> Result<(), Failure> {
    let v = api.post("/api/v1/cluster/init", &json!({}))?;
    let id = cell(&v["cluster_id"]);
    if v["created"] == true {
        let _ = writeln!(out, "cluster {id} created; start the other nodes with --join, or they join already");
    } else {
        let _ = writeln!(out, "cluster {id} already exists; nothing to do");
    }
    Ok(())
}

pub fn cluster_status(
    api: &Api,
    output: Output,
    wait_ready_s: u64,
    wait_nodes: usize,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let check = |s: &Value| {
        ready(s).and_then(|()| {
            let n = members(s).len();
            if n < wait_nodes {
                Err(format!("{n} of {wait_nodes} nodes are members"))
            } else {
                Ok(())
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(wait_ready_s);
    let mut s = status(api);
    while Instant::now() < deadline && !s.as_ref().is_ok_and(|s| check(s).is_ok()) {
        std::thread::sleep(Duration::from_millis(500));
        s = status(api);
    }
    let s = s?;
    let rows = node_rows(&s);
    match output {
        Output::Json => print_json(&s, out),
        Output::Csv => print_rows(output, NODE_HEADERS, &rows, out),
        Output::Table => {
            let map = &s["map"];
            let _ = writeln!(
                out,
                "cluster {:016x}  map version {}  {} shards  replication factor {}  {}",
                map["cluster_id"].as_u64().unwrap_or(0),
                map["version"],
                map["shard_count"],
                map["replication_factor"],
                match check(&s) {
                    Ok(()) => "ready".to_string(),
                    Err(why) => format!("not ready: {why}"),
                }
            );
            print_rows(output, NODE_HEADERS, &rows, out);
        }
    }
    if wait_ready_s > 0 {
        check(&s).map_err(|why| Failure::NotDone(format!("the cluster is not ready after {wait_ready_s} s: {why}")))?;
    } else if let Some(m) = members(&s).iter().find(|m| m["status"].is_null()) {
        return Err(Failure::Unreachable(format!("node {} does not answer", m["info"]["id"])));
    }
    Ok(())
}

pub fn cluster_map(api: &Api, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(api)?;
    if output == Output::Json {
        print_json(&s["map"], out);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = shards(&s)
        .iter()
        .enumerate()
        .map(|(i, p)| vec![i.to_string(), join(&replicas_of(p)), cell(&p["epoch"])])
        .collect();
    if output == Output::Table {
        let map = &s["map"];
        let _ =
            writeln!(out, "map version {}  cluster {:016x}", map["version"], map["cluster_id"].as_u64().unwrap_or(0));
        let nodes: Vec<Vec<String>> = map["nodes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, n)| vec![cell(&n["id"]), cell(&n["grpc_addr"]), cell(&n["http_addr"]), cell(&n["state"])])
            .collect();
        print_rows(output, &["node", "grpc", "http", "state"], &nodes, out);
        let _ = writeln!(out);
    }
    print_rows(output, &["shard", "replicas", "epoch"], &rows, out);
    Ok(())
}

const NODE_HEADERS: &[&str] = &["node", "grpc", "http", "state", "reachable", "replicas", "leaders", "learners"];

fn node_rows(status: &Value) -> Vec<Vec<String>> {
    members(status)
        .iter()
        .map(|m| {
            let info = &m["info"];
            let replicas = m["status"]["replicas"].as_array();
            let count = |role: &str| {
                replicas.map(|r| r.iter().filter(|x| x["role"] == role).count().to_string()).unwrap_or_default()
            };
            let reach = if m["status"].is_null() { format!("no: {}", cell(&m["error"])) } else { "yes".into() };
            vec![
                cell(&info["id"]),
                cell(&info["grpc_addr"]),
                cell(&info["http_addr"]),
                cell(&info["state"]),
                reach,
                replicas.map(|r| r.len().to_string()).unwrap_or_default(),
                count("leader"),
                count("learner"),
            ]
        })
        .collect()
}

pub fn node_list(api: &Api, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(api)?;
    print_rows(output, NODE_HEADERS, &node_rows(&s), out);
    Ok(())
}

pub fn node_add(api: &Api, id: u64, grpc: &str, http: &str, out: &mut impl Write) -> Result<(), Failure> {
    api.post("/api/v1/cluster/nodes", &json!({ "id": id, "grpc_addr": grpc, "http_addr": http }))?;
    let _ = writeln!(
        out,
        "node {id} added at {grpc} (HTTP {http}); start it with: hotlake serve --node-id {id} --grpc-addr {grpc} --http-addr {http} --join <member>"
    );
    Ok(())
}

/// `drain`, `remove` or `activate`, optionally followed until done.
pub fn node_state(api: &Api, id: u64, action: &str, watch_s: Option<u64>, out: &mut impl Write) -> Result<(), Failure> {
    api.post(&format!("/api/v1/cluster/nodes/{id}/{action}"), &json!({}))?;
    let _ = writeln!(
        out,
        "{}",
        match action {
            "drain" => format!("node {id} is draining: its replicas move to other nodes; it stays a member"),
            "remove" => format!("node {id} is being removed: its replicas move to other nodes, then it leaves"),
            _ => format!("node {id} is active: it takes replicas again"),
        }
    );
    let Some(timeout) = watch_s else { return Ok(()) };
    let key = id.to_string();
    watch(api, Duration::from_secs(timeout), Duration::from_secs(1), |s| {
        let member = s["map"]["nodes"].as_object().is_some_and(|n| n.contains_key(&key));
        let placed = shards(s).iter().filter(|p| replicas_of(p).contains(&id)).count();
        let hosted = members(s)
            .iter()
            .find(|m| m["info"]["id"] == json!(id))
            .and_then(|m| m["status"]["replicas"].as_array().map(Vec::len));
        let done = match action {
            "remove" => !member,
            "drain" => placed == 0 && hosted.unwrap_or(0) == 0,
            _ => ready(s).is_ok(),
        };
        if done {
            let _ = writeln!(out, "node {id}: done{}", if action == "remove" { "; it left the cluster" } else { "" });
        } else {
            let _ = writeln!(
                out,
                "node {id}: {placed} replicas placed, {} hosted",
                hosted.map(|h| h.to_string()).unwrap_or("?".into())
            );
        }
        Ok(done)
    })
}

pub fn shard_list(api: &Api, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(api)?;
    let rows: Vec<Vec<String>> = shards(&s)
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let leader = leader_of(&s, i);
            let applied = replica_statuses(&s, i)
                .into_iter()
                .find(|(id, _)| Some(*id) == leader)
                .map(|(_, r)| cell(&r["applied"]));
            vec![
                i.to_string(),
                join(&replicas_of(p)),
                leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
                applied.unwrap_or_default(),
                cell(&p["epoch"]),
                if shard_settled(&s, i) { "settled" } else { "moving" }.to_string(),
            ]
        })
        .collect();
    print_rows(output, &["shard", "replicas", "leader", "applied", "epoch", "state"], &rows, out);
    Ok(())
}

pub fn shard_show(api: &Api, shard: usize, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let s = status(api)?;
    let Some(p) = shards(&s).get(shard) else {
        return Err(Failure::Rejected(format!("no shard {shard}; the cluster has {} shards", shards(&s).len())));
    };
    let http_of = |id: u64| {
        members(&s)
            .iter()
            .find(|m| m["info"]["id"] == json!(id))
            .map(|m| cell(&m["info"]["http_addr"]))
            .unwrap_or_default()
    };
    let rows: Vec<Vec<String>> = replica_statuses(&s, shard)
        .into_iter()
        .map(|(id, r)| {
            let digest = api
                .get_at(&http_of(id), &format!("/api/v1/shards/{shard}/digest"))
                .map(|d| cell(&d["digest"]))
                .unwrap_or_else(|_| "busy".into());
            vec![
                id.to_string(),
                cell(&r["role"]),
                join(&r["voters"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect::<Vec<_>>()),
                cell(&r["applied"]),
                cell(&r["flushed"]),
                cell(&r["memtable_bytes"]),
                digest,
            ]
        })
        .collect();
    if output == Output::Table {
        let _ = writeln!(
            out,
            "shard {shard}  placed on {}  epoch {}  leader {}  {}",
            join(&replicas_of(p)),
            p["epoch"],
            leader_of(&s, shard).map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
            if shard_settled(&s, shard) { "settled" } else { "moving" }
        );
    }
    print_rows(output, &["node", "role", "voters", "applied", "flushed", "memtable_bytes", "digest"], &rows, out);
    Ok(())
}

pub fn shard_move(
    api: &Api,
    shard: usize,
    from: u64,
    to: u64,
    watch_s: Option<u64>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    api.post(&format!("/api/v1/shards/{shard}/move"), &json!({ "from": from, "to": to }))?;
    let _ = writeln!(out, "shard {shard}: replica moving from node {from} to node {to}");
    let Some(timeout) = watch_s else { return Ok(()) };
    watch(api, Duration::from_secs(timeout), Duration::from_secs(1), |s| {
        let placed = shards(s).get(shard).map(replicas_of).unwrap_or_default();
        let done = shard_settled(s, shard);
        let hosts: Vec<u64> = replica_statuses(s, shard).iter().map(|(id, _)| *id).collect();
        let _ = writeln!(
            out,
            "shard {shard}: placed on {}, hosted on {}{}",
            join(&placed),
            join(&hosts),
            if done { ": done" } else { "" }
        );
        Ok(done)
    })
}

pub fn shard_transfer_leader(api: &Api, shard: usize, to: u64, out: &mut impl Write) -> Result<(), Failure> {
    api.post(&format!("/api/v1/shards/{shard}/transfer-leader"), &json!({ "to": to }))?;
    let _ = writeln!(out, "shard {shard}: node {to} leads it now");
    Ok(())
}

pub fn rebalance(api: &Api, dry_run: bool, watch_s: u64, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let plan = api.get("/api/v1/cluster/plan")?;
    let rows = plan_rows(&plan);
    if output == Output::Json {
        print_json(&plan, out);
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
    watch(api, Duration::from_secs(watch_s), Duration::from_secs(2), |s| {
        let left = plan_rows(&api.get("/api/v1/cluster/plan")?).len();
        let moving = (0..shards(s).len()).filter(|i| !shard_settled(s, *i)).count();
        let _ = writeln!(out, "{left} moves planned, {moving} shards moving");
        Ok(left == 0 && moving == 0)
    })
}

fn plan_rows(plan: &Value) -> Vec<Vec<String>> {
    let nodes = |v: &Value| join(&v.as_array().into_iter().flatten().filter_map(Value::as_u64).collect::<Vec<_>>());
    plan["moves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| vec![cell(&m["shard"]), nodes(&m["from"]), nodes(&m["to"])])
        .collect()
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}
