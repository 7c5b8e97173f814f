//! Real 3- and 4-node clusters on loopback: leaders killed with SIGKILL during writes, nodes
//! added and drained during writes, every node restarted; and a 3-node cluster in network
//! namespaces whose busiest leader is partitioned away. Each test ends by checking that every
//! acknowledged point is readable with its value and that all replicas of every shard have the
//! same content (per-shard digest at the same applied index).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::netns::TestNet;
use crate::support::{client, Addrs, NodeProcess};

const SHARDS: u32 = 8;
const DEVICES: u64 = 64;
pub(crate) const LINES_PER_BATCH: u64 = 100;
const BASE_TS: i64 = 1_600_000_000_000_000_000;

/// Small memtables so flushes, log purges and snapshot transfers happen within a test.
const NODE_FLAGS: [&str; 4] = ["--shard-count", "8", "--shard-memtable-bytes-max", "32768"];

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<NodeProcess>,
    /// Nodes that should be members of the map.
    pub(crate) members: usize,
    /// A private network the nodes run in (dropped after the nodes).
    net: Option<TestNet>,
    _dirs: Vec<tempfile::TempDir>,
}

pub(crate) fn flags(id: u64, join: Option<&str>) -> Vec<String> {
    let mut f: Vec<String> = NODE_FLAGS.iter().map(|s| s.to_string()).collect();
    f.extend(["--node-id".to_string(), id.to_string()]);
    if let Some(j) = join {
        f.extend(["--join".to_string(), j.to_string()]);
    }
    f
}

impl Cluster {
    /// Starts node 1 (bootstraps), then nodes 2..=n joining through it, and waits until every
    /// shard has `min(n, 3)` voters and a leader.
    pub(crate) fn start(n: u64) -> Cluster {
        Self::start_on(n, None)
    }

    /// As [`Cluster::start`], each node in its own network namespace of `net`.
    fn start_on(n: u64, net: Option<TestNet>) -> Cluster {
        Self::start_with(n, net, &[])
    }

    /// As [`Cluster::start_on`], every node given `extra` flags too.
    fn start_with(n: u64, net: Option<TestNet>, extra: &[&str]) -> Cluster {
        let mut c = Cluster { nodes: Vec::new(), members: 0, net, _dirs: Vec::new() };
        for id in 1..=n {
            c.add_node_with(id, extra);
        }
        c.wait_converged(Duration::from_secs(120));
        c
    }

    pub(crate) fn add_node(&mut self, id: u64) {
        self.add_node_with(id, &[]);
    }

    fn add_node_with(&mut self, id: u64, extra: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let join = self.nodes.first().map(|n| n.peer.clone());
        let mut f = flags(id, join.as_deref());
        f.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = f.iter().map(|s| s.as_str()).collect();
        let node = match &self.net {
            Some(net) => {
                let ip = net.ip(id);
                let addrs =
                    Addrs { http: format!("{ip}:7181"), grpc: format!("{ip}:7101"), peer: format!("{ip}:7191") };
                NodeProcess::start_at(dir.path(), &addrs, &net.prefix(id), &args)
            }
            None => NodeProcess::start(dir.path(), &args),
        };
        self.nodes.push(node);
        self.members += 1;
        self._dirs.push(dir);
    }

    fn running(&self) -> Vec<&NodeProcess> {
        self.nodes.iter().filter(|n| n.is_running()).collect()
    }

    /// `GET /api/v1/cluster` from the first running node that answers.
    pub(crate) fn status(&self) -> Option<Value> {
        for n in self.running() {
            if let Ok(r) = client().get(format!("http://{}/api/v1/cluster", n.http)).send() {
                if r.status().is_success() {
                    return r.json().ok();
                }
            }
        }
        None
    }

    /// Waits until every shard's placement has min(members, 3) replicas, every member answers,
    /// and every replica it reports is a leader or follower of a group with a leader, with
    /// exactly the placed replicas present.
    pub(crate) fn wait_converged(&self, timeout: Duration) -> Value {
        let members = self.members;
        self.wait_for(timeout, |s| converged(s, members))
    }

    /// Waits until `check` passes on the cluster status.
    pub(crate) fn wait_for(&self, timeout: Duration, check: impl Fn(&Value) -> Result<(), String>) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(s) = self.status() {
                match check(&s) {
                    Ok(()) => return s,
                    Err(why) => last = why,
                }
            }
            assert!(Instant::now() < deadline, "cluster did not reach the expected state: {last}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node leading the most shards.
    pub(crate) fn busiest_leader(&self) -> u64 {
        let s = self.status().expect("status");
        let mut leads: BTreeMap<u64, usize> = BTreeMap::new();
        for m in s["members"].as_array().unwrap() {
            if let Some(st) = m["status"].as_object() {
                for r in st["replicas"].as_array().unwrap() {
                    if r["role"] == "leader" {
                        *leads.entry(st["node"].as_u64().unwrap()).or_default() += 1;
                    }
                }
            }
        }
        leads.into_iter().max_by_key(|(_, c)| *c).map(|(n, _)| n).expect("some leader")
    }

    pub(crate) fn node(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes[id as usize - 1]
    }
}

fn converged(s: &Value, expected_members: usize) -> Result<(), String> {
    let members = s["members"].as_array().ok_or("no members")?;
    if members.len() != expected_members {
        return Err(format!("{} members, expected {expected_members}", members.len()));
    }
    let want = members.len().min(3);
    let shards = s["map"]["shards"].as_array().ok_or("no shards")?;
    let mut placed: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (i, p) in shards.iter().enumerate() {
        let replicas: Vec<u64> = p["replicas"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
        if replicas.len() != want {
            return Err(format!("shard {i} has replicas {replicas:?}"));
        }
        for r in replicas {
            placed.entry(r).or_default().insert(i as u64);
        }
    }
    for m in members {
        let id = m["info"]["id"].as_u64().unwrap();
        let st = m["status"].as_object().ok_or_else(|| format!("node {id} unreachable: {}", m["error"]))?;
        let replicas = st["replicas"].as_array().unwrap();
        let hosted: BTreeSet<u64> = replicas.iter().map(|r| r["shard"].as_u64().unwrap()).collect();
        let expected = placed.get(&id).cloned().unwrap_or_default();
        if hosted != expected {
            return Err(format!("node {id} hosts {hosted:?}, placement says {expected:?}"));
        }
        for r in replicas {
            let role = r["role"].as_str().unwrap();
            if !(role == "leader" || role == "follower") || r["leader"].is_null() {
                return Err(format!("node {id} shard {}: {role}, leader {}", r["shard"], r["leader"]));
            }
            let voters: Vec<u64> = r["voters"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            let placed = &shards[r["shard"].as_u64().unwrap() as usize]["replicas"];
            if r["joint"] == true || json!(voters) != *placed {
                return Err(format!("node {id} shard {}: voters {voters:?}, placement {placed}", r["shard"]));
            }
        }
    }
    Ok(())
}

/// The point numbered `n`: device, timestamp and value are all derived from `n`.
fn point(n: u64) -> (String, i64, i64) {
    (format!("d{}", n % DEVICES), BASE_TS + (n as i64) * 1000, (n as i64) * 7 - 3)
}

/// Writers that send numbered batches to the nodes in turn and record acknowledged ones.
pub(crate) struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, u64)>>>,
    failed: Arc<AtomicUsize>,
    handles: Vec<JoinHandle<()>>,
}

impl Writers {
    pub(crate) fn start(addrs: Vec<String>, threads: usize) -> Writers {
        Self::start_from(addrs, threads, 0)
    }

    /// Writers whose point numbers start at `first`.
    fn start_from(addrs: Vec<String>, threads: usize, first: u64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicU64::new(first));
        let handles = (0..threads)
            .map(|t| {
                let (stop, acked, failed, next, addrs) =
                    (stop.clone(), acked.clone(), failed.clone(), next.clone(), addrs.clone());
                std::thread::spawn(move || {
                    let c = crate::support::client_with_timeout(Duration::from_secs(20));
                    let mut turn = t;
                    while !stop.load(Ordering::Relaxed) {
                        let first = next.fetch_add(LINES_PER_BATCH, Ordering::SeqCst);
                        let mut body = String::new();
                        for n in first..first + LINES_PER_BATCH {
                            let (d, ts, v) = point(n);
                            body.push_str(&format!("cl,device_id={d} v={v}i {ts}\n"));
                        }
                        turn += 1;
                        let addr = &addrs[turn % addrs.len()];
                        match c.post(format!("http://{addr}/write?db=cl")).body(body).send() {
                            Ok(r) if r.status().as_u16() == 204 => {
                                acked.lock().unwrap().push((first, first + LINES_PER_BATCH))
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                // tidy: sleep (back off after a refused write, as a client would).
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                })
            })
            .collect();
        Writers { stop, acked, failed, handles }
    }

    fn acked_batches(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` further batches are acknowledged.
    pub(crate) fn wait_for_more(&self, more: usize, timeout: Duration) {
        let target = self.acked_batches() + more;
        let deadline = Instant::now() + timeout;
        while self.acked_batches() < target {
            assert!(Instant::now() < deadline, "writes did not resume: {} acknowledged", self.acked_batches());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn finish(self) -> (Vec<(u64, u64)>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.failed.load(Ordering::Relaxed))
    }
}

/// Every acknowledged point, read back through `node`, is there with its value.
fn check_acknowledged(node: &NodeProcess, acked: &[(u64, u64)]) {
    let (status, v) = node.query(json!({
        "tenant": "cl", "measurement": "cl", "fields": ["v"],
        "start": BASE_TS, "end": BASE_TS + 1_000_000_000_000_000,
    }));
    assert_eq!(status, 200, "query failed: {v}");
    let mut stored: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for g in v["groups"].as_array().unwrap() {
        let device = g["tags"]["device_id"].as_str().unwrap().to_string();
        for r in g["rows"].as_array().unwrap() {
            stored.insert((device.clone(), r[0].as_i64().unwrap()), r[1].as_i64().unwrap());
        }
    }
    let mut checked = 0;
    for &(from, to) in acked {
        for n in from..to {
            let (d, ts, v) = point(n);
            assert_eq!(stored.get(&(d.clone(), ts)), Some(&v), "acknowledged point {n} ({d} @ {ts}) lost");
            checked += 1;
        }
    }
    for ((d, ts), v) in &stored {
        let n = ((ts - BASE_TS) / 1000) as u64;
        assert_eq!(point(n), (d.clone(), *ts, *v), "a point that was never written appeared");
    }
    assert!(checked > 0, "nothing was acknowledged");
}

/// Every replica of every shard reaches the same applied index and the same digest.
fn check_replicas_identical(c: &Cluster, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let s = c.wait_converged(timeout);
    let http: BTreeMap<u64, String> = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["info"]["id"].as_u64().unwrap(), m["info"]["http_addr"].as_str().unwrap().to_string()))
        .collect();
    for shard in 0..SHARDS {
        let replicas: Vec<u64> = s["map"]["shards"][shard as usize]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect();
        loop {
            // A replica still applying answers 503; only digests taken at rest are compared.
            let answers: Vec<Value> = replicas
                .iter()
                .filter_map(|id| {
                    let r = client().get(format!("http://{}/api/v1/shards/{shard}/digest", http[id])).send().ok()?;
                    if !r.status().is_success() {
                        return None;
                    }
                    r.json().ok()
                })
                .collect();
            let applied: BTreeSet<String> = answers.iter().map(|a| a["applied"].to_string()).collect();
            let digests: BTreeSet<String> = answers.iter().map(|a| a["digest"].to_string()).collect();
            if answers.len() == replicas.len() && applied.len() == 1 {
                assert_eq!(digests.len(), 1, "shard {shard}: replicas at the same index differ: {answers:?}");
                break;
            }
            assert!(Instant::now() < deadline, "shard {shard}: replicas do not catch up: {answers:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits until every shard has a leader other than `victim`, as the nodes at `addrs` report
/// the replicas of the members they reach.
fn wait_for_leaders_without(victim: u64, addrs: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut led = BTreeSet::new();
        let mut shard_count = None;
        for addr in addrs {
            let Ok(r) = client().get(format!("http://{addr}/api/v1/cluster")).send() else { continue };
            let Ok(s) = r.json::<Value>() else { continue };
            shard_count = s["map"]["shards"].as_array().map(|a| a.len()).or(shard_count);
            for m in s["members"].as_array().into_iter().flatten() {
                if m["info"]["id"].as_u64() == Some(victim) {
                    continue;
                }
                for r in m["status"]["replicas"].as_array().into_iter().flatten() {
                    if r["role"] == "leader" {
                        led.insert(r["shard"].as_u64().unwrap());
                    }
                }
            }
        }
        if shard_count.is_some_and(|n| led.len() == n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "without node {victim}, {} shards of {shard_count:?} have a leader",
            led.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_addrs(c: &Cluster) -> Vec<String> {
    c.nodes.iter().map(|n| n.http.clone()).collect()
}

/// Three rounds, while `writers` write: SIGKILL the node leading the most shards, wait until
/// writes are acknowledged without it, restart it, wait until the cluster has converged.
pub(crate) fn kill_busiest_leader_three_times(c: &mut Cluster, writers: &Writers) {
    writers.wait_for_more(20, Duration::from_secs(60));
    for round in 0..3 {
        let victim = c.busiest_leader();
        c.node(victim).kill9();
        // Writes keep being acknowledged by the two remaining nodes.
        writers.wait_for_more(20, Duration::from_secs(60));
        c.node(victim).restart_no_wait();
        c.wait_converged(Duration::from_secs(120));
        writers.wait_for_more(10, Duration::from_secs(60));
        eprintln!("round {round}: killed node {victim}; {} batches acknowledged", writers.acked_batches());
    }
}

#[test]
fn killing_shard_leaders_during_writes_loses_no_acknowledged_point() {
    let mut c = Cluster::start(3);
    let writers = Writers::start(http_addrs(&c), 3);
    kill_busiest_leader_three_times(&mut c, &writers);
    let (acked, failed) = writers.finish();
    eprintln!("{} batches acknowledged, {failed} failed or unknown", acked.len());
    check_replicas_identical(&c, Duration::from_secs(120));
    for n in c.running() {
        check_acknowledged(n, &acked);
    }
    // Each read above confirmed every shard's leader at once: those heartbeats, and periodic
    // ones that met, went to each peer together.
    let (sent, requests) = heartbeats_and_requests(&c);
    eprintln!("{sent} heartbeats sent in {requests} requests");
    assert!(sent > 0 && requests < sent, "{sent} heartbeats in {requests} requests: none went together");
}

/// Heartbeats the running nodes sent to peers, and the requests that carried them.
fn heartbeats_and_requests(c: &Cluster) -> (u64, u64) {
    let metric = |text: &str, name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok()).unwrap_or(0)
    };
    c.running().into_iter().fold((0, 0), |(sent, requests), n| {
        let text = crate::support::client().get(n.url("/metrics")).send().unwrap().text().unwrap();
        (
            sent + metric(&text, "hotlake_raft_heartbeats_sent_total"),
            requests + metric(&text, "hotlake_raft_heartbeat_requests_total"),
        )
    })
}

/// A write sent with `leader_only` to a node that does not lead its shard fails with
/// `not_leader` naming the leader; one routed with an old map fails with `stale_map`.
fn routing_errors_tell_the_client_what_to_refresh(seeds: &[String]) {
    use hotlake_client::proto as pb;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = crate::support::connect(seeds).await;
        let view = client.cluster_view();
        assert!(view.version > 1, "a 3-node cluster has changed its map since bootstrap");
        let mut s = hotlake_client::SeriesBuilder::new("routing").tag("device_id", "r1");
        s.push_i64(BASE_TS, "v", 1);
        let series = s.build();
        let shard = view.shard_of("cl", &series);
        let leader = view.shards[shard as usize].leader.expect("a converged cluster knows its leaders");
        let follower = view.nodes.values().find(|n| n.id != leader).unwrap();
        let mut raw =
            pb::hotlake_client::HotlakeClient::connect(format!("http://{}", follower.grpc_addr)).await.unwrap();
        let req = |map_version| pb::WriteRequest {
            tenant: "cl".into(),
            series: vec![series.clone()],
            map_version,
            leader_only: true,
        };
        let err = hotlake_client::ClientError::from(
            raw.write(crate::support::authorized(req(view.version))).await.unwrap_err(),
        );
        match &err {
            hotlake_client::ClientError::Unavailable { kind, leader: l, .. } => {
                assert_eq!((kind.as_str(), *l), ("not_leader", Some(leader)), "{err}")
            }
            other => panic!("expected not_leader, got {other:?}"),
        }
        let err = hotlake_client::ClientError::from(raw.write(crate::support::authorized(req(1))).await.unwrap_err());
        assert_eq!(err.kind(), Some("stale_map"), "{err}");
        assert!(err.is_retryable());
        // The client itself routes the same write to the leader at once.
        let w = client.write("cl", vec![series.clone()]).await.unwrap();
        assert_eq!((w.points_written, w.attempts), (1, 1));
    });
}

/// `hotlake-client` writing through 3 SIGKILLs of the busiest leader: with its retry budget no
/// error reaches the caller, and every point it acknowledged is there afterwards.
#[test]
fn client_library_rides_out_leader_kills_without_surfacing_errors() {
    let mut c = Cluster::start(3);
    let seeds: Vec<String> = c.nodes.iter().map(|n| n.grpc.clone()).collect();
    routing_errors_tell_the_client_what_to_refresh(&seeds);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, acked, errors) = (stop.clone(), acked.clone(), errors.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = crate::support::connect(&seeds).await;
                let mut first = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut by_device: BTreeMap<String, hotlake_client::SeriesBuilder> = BTreeMap::new();
                    for n in first..first + LINES_PER_BATCH {
                        let (d, ts, v) = point(n);
                        let s = by_device
                            .entry(d.clone())
                            .or_insert_with(|| hotlake_client::SeriesBuilder::new("cl").tag("device_id", &d));
                        s.push_i64(ts, "v", v);
                    }
                    let series = by_device.into_values().map(|s| s.build()).collect();
                    match client.write("cl", series).await {
                        Ok(w) => {
                            assert_eq!(w.points_written, LINES_PER_BATCH);
                            acked.lock().unwrap().push((first, first + LINES_PER_BATCH));
                        }
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                    first += LINES_PER_BATCH;
                }
            })
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    let wait_for_more = |more: usize| {
        let target = acked_count() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked_count() < target {
            assert!(Instant::now() < deadline, "client writes did not resume ({} acknowledged)", acked_count());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_more(20);
    for round in 0..3 {
        let victim = c.busiest_leader();
        c.node(victim).kill9();
        wait_for_more(20);
        c.node(victim).restart_no_wait();
        c.wait_converged(Duration::from_secs(120));
        wait_for_more(10);
        eprintln!("round {round}: killed node {victim}; {} batches acknowledged", acked_count());
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "errors reached the caller: {errors:?}");
    let acked = acked.lock().unwrap().clone();
    check_replicas_identical(&c, Duration::from_secs(120));
    for n in c.running() {
        check_acknowledged(n, &acked);
    }
}

#[test]
fn adding_and_draining_nodes_during_writes_moves_replicas_and_loses_nothing() {
    let mut c = Cluster::start(3);
    let writers = Writers::start(http_addrs(&c), 2);
    writers.wait_for_more(20, Duration::from_secs(60));
    c.add_node(4);
    c.wait_for(Duration::from_secs(180), |s| converged(s, 4).and_then(|_| balanced(s, 4)));
    let first = c.nodes[0].http.clone();
    let r = client().post(format!("http://{first}/api/v1/cluster/nodes/2/remove")).send().unwrap();
    assert!(r.status().is_success(), "drain refused: {}", r.text().unwrap());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = c.status().expect("status");
        let gone = !s["map"]["nodes"].as_object().unwrap().contains_key("2");
        if gone && converged(&s, 3).and_then(|_| balanced(&s, 3)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 was not drained and removed: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    c.members = 3;
    writers.wait_for_more(10, Duration::from_secs(60));
    let (acked, _) = writers.finish();
    c.node(2).stop();
    check_replicas_identical(&c, Duration::from_secs(120));
    check_acknowledged(&c.nodes[0], &acked);
}

/// Every member holds a replica count within one of every other's.
fn balanced(s: &Value, nodes: usize) -> Result<(), String> {
    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
    for p in s["map"]["shards"].as_array().unwrap() {
        for r in p["replicas"].as_array().unwrap() {
            *load.entry(r.as_u64().unwrap()).or_default() += 1;
        }
    }
    let (min, max) = (load.values().min().copied().unwrap_or(0), load.values().max().copied().unwrap_or(0));
    if load.len() != nodes || max - min > 1 {
        return Err(format!("unbalanced placement {load:?}"));
    }
    Ok(())
}

#[test]
fn restarting_every_node_keeps_data_and_serves_again() {
    let mut c = Cluster::start(3);
    let writers = Writers::start(http_addrs(&c), 2);
    writers.wait_for_more(30, Duration::from_secs(60));
    let (acked, _) = writers.finish();
    for id in 1..=3 {
        c.node(id).stop();
    }
    for id in 1..=3 {
        c.node(id).restart_no_wait();
    }
    c.wait_converged(Duration::from_secs(120));
    for n in c.running() {
        check_acknowledged(n, &acked);
    }
    let more = Writers::start(http_addrs(&c), 1);
    more.wait_for_more(5, Duration::from_secs(60));
    let (more_acked, _) = more.finish();
    check_acknowledged(&c.nodes[2], &more_acked);
    check_replicas_identical(&c, Duration::from_secs(60));
}

/// Sends one numbered batch to `addr`; true when acknowledged.
fn write_batch(addr: &str, first: u64) -> bool {
    let mut body = String::new();
    for n in first..first + LINES_PER_BATCH {
        let (d, ts, v) = point(n);
        body.push_str(&format!("cl,device_id={d} v={v}i {ts}\n"));
    }
    let c = crate::support::client_with_timeout(Duration::from_secs(30));
    matches!(c.post(format!("http://{addr}/write?db=cl")).body(body).send(), Ok(r) if r.status().as_u16() == 204)
}

#[test]
fn a_partitioned_leader_stops_acknowledging_and_nothing_diverges() {
    let mut c = Cluster::start_on(3, Some(TestNet::create(3)));
    let writers = Writers::start(http_addrs(&c), 3);
    writers.wait_for_more(20, Duration::from_secs(60));
    let (mut acked, _) = writers.finish();
    let victim = c.busiest_leader();
    c.net.as_ref().unwrap().isolate(victim);
    eprintln!("node {victim} partitioned away");
    let minority = c.node(victim).http.clone();
    let majority: Vec<String> = (1..=3).filter(|n| *n != victim).map(|n| c.node(n).http.clone()).collect();
    // Past the election timeout the majority elects new leaders; the minority node cannot commit.
    wait_for_leaders_without(victim, &majority, Duration::from_secs(30));
    // Numbers far above the writers' so these points are told apart.
    let minority_first = 1_000_000_000;
    assert!(!write_batch(&minority, minority_first), "the partitioned node acknowledged a write");
    // A query that accepts partial results is told which shards are missing, never silently
    // short; without that flag it fails.
    let query = |partial: bool| {
        let body = json!({"tenant": "cl", "measurement": "cl", "fields": ["v"], "partial": partial,
            "start": BASE_TS, "end": BASE_TS + 1_000_000_000_000_000});
        let r = client().post(format!("http://{minority}/api/v1/query")).json(&body).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (status, v) = query(true);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["missing_shards"].as_array().map(|m| m.len()), Some(SHARDS as usize), "{v}");
    let (status, v) = query(false);
    assert_eq!(status, 503, "{v}");
    let majority_writers = Writers::start_from(majority, 2, 2_000_000_000);
    majority_writers.wait_for_more(20, Duration::from_secs(60));
    let (during, _) = majority_writers.finish();
    c.net.as_ref().unwrap().heal(victim);
    eprintln!("healed; {} batches acknowledged by the majority during the partition", during.len());
    acked.extend(during);
    check_replicas_identical(&c, Duration::from_secs(120));
    for n in c.running() {
        check_acknowledged(n, &acked);
    }
}

/// Three nodes pushed far past their write budget for half a minute: every request is
/// answered (acknowledged, or refused with 429 and Retry-After), nothing acknowledged is lost,
/// and afterwards the cluster is stable and takes writes again.
#[test]
fn overload_is_refused_quickly_and_the_cluster_recovers() {
    const LINES: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small-budget.toml");
    // About 800 KB per request against a 1 MiB budget: one request at a time per node.
    std::fs::write(&config, "[limits]\nwrite_inflight_bytes_max = 1048576\n").unwrap();
    let config = config.to_string_lossy().to_string();
    let c = Cluster::start_with(3, None, &["--config", &config]);
    let addrs = http_addrs(&c);
    let next = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let answers: Arc<Mutex<BTreeMap<u16, usize>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let unanswered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let writers: Vec<_> = (0..16)
        .map(|t| {
            let (next, acked, answers, unanswered, addrs) =
                (next.clone(), acked.clone(), answers.clone(), unanswered.clone(), addrs.clone());
            std::thread::spawn(move || {
                let c = crate::support::client_with_timeout(Duration::from_secs(60));
                while Instant::now() < deadline {
                    let first = next.fetch_add(LINES, Ordering::SeqCst);
                    let body: String = (first..first + LINES)
                        .map(|n| {
                            let (d, ts, v) = point(n);
                            format!("cl,device_id={d} v={v}i {ts}\n")
                        })
                        .collect();
                    match c.post(format!("http://{}/write?db=cl", addrs[t % addrs.len()])).body(body).send() {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            if status == 429 {
                                assert!(r.headers().contains_key("retry-after"), "a 429 without Retry-After");
                            }
                            if status == 204 {
                                acked.lock().unwrap().push((first, first + LINES));
                            }
                            *answers.lock().unwrap().entry(status).or_default() += 1;
                        }
                        Err(_) => {
                            unanswered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    eprintln!("answers by status: {answers:?}");
    assert_eq!(unanswered.load(Ordering::Relaxed), 0, "requests went unanswered for a minute: {answers:?}");
    assert!(answers.get(&204).is_some_and(|n| *n > 0), "nothing was acknowledged: {answers:?}");
    assert!(answers.get(&429).is_some_and(|n| *n > 0), "the overload was never refused: {answers:?}");
    // Afterwards: stable leaders on every shard, and writes are taken again.
    c.wait_converged(Duration::from_secs(30));
    let after = next.fetch_add(LINES_PER_BATCH, Ordering::SeqCst);
    assert!(write_batch(&addrs[0], after), "a write after the overload was not acknowledged");
    let mut acked = acked.lock().unwrap().clone();
    acked.push((after, after + LINES_PER_BATCH));
    check_acknowledged_counts(&c.nodes[0], &acked);
    check_replicas_identical(&c, Duration::from_secs(120));
}

/// Every device holds at least as many points as were acknowledged for it (points are numbered
/// uniquely, so none of them overwrites another), counted with an aggregate: too many points
/// for a raw read.
fn check_acknowledged_counts(node: &NodeProcess, acked: &[(u64, u64)]) {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for &(from, to) in acked {
        for n in from..to {
            *expected.entry(point(n).0).or_default() += 1;
        }
    }
    let (status, v) = node.query(json!({
        "tenant": "cl", "measurement": "cl", "fields": ["v"], "aggregates": ["count"], "group_by": ["device_id"],
        "start": BASE_TS, "end": BASE_TS + 1_000_000_000_000_000,
    }));
    assert_eq!(status, 200, "query failed: {v}");
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    for g in v["groups"].as_array().unwrap() {
        let device = g["tags"]["device_id"].as_str().unwrap().to_string();
        let count = g["rows"][0].as_array().and_then(|r| r.last()).and_then(|c| c.as_u64()).unwrap_or(0);
        stored.insert(device, count);
    }
    for (device, want) in &expected {
        let have = stored.get(device).copied().unwrap_or(0);
        assert!(have >= *want, "device {device}: {have} points stored, {want} acknowledged");
    }
}

/// A leader cut off from its quorum keeps leading (openraft does not step down), and `/health`
/// said `ok` while nothing could commit. It now answers 503 and names every such shard.
#[test]
fn health_names_the_shards_that_cannot_commit() {
    let mut c = Cluster::start(3);
    let survivor = c.nodes[0].http.clone();
    c.node(2).kill9();
    c.node(3).kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client().get(format!("http://{survivor}/health")).send().unwrap();
        let code = r.status().as_u16();
        let v: Value = r.json().unwrap();
        let problems: Vec<&str> = v["problems"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        // Every shard has a replica here: each is named, as leaderless or led without a quorum.
        if code == 503 && v["status"] == "degraded" && problems.len() == v["shards"].as_u64().unwrap() as usize {
            assert!(problems.iter().all(|p| p.starts_with('s') && p.contains(": ")), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "health after losing the quorum: {code} {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Settings every replica must apply alike live in the cluster map: a node restarted with a
/// block window of its own refuses to start, naming both values, and starts again once its
/// configuration agrees.
#[test]
fn a_node_configured_against_the_cluster_settings_refuses_to_start() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    assert_eq!(node.write("cfg", "m,device_id=a v=1 1\n").status().as_u16(), 204);
    node.stop();
    let config = dir.path().join("other.toml");
    std::fs::write(&config, "[storage]\nblock_window_ms = 3600000\n").unwrap();
    let addrs = NodeProcess::free_addrs();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotlake"))
        .args(["serve", "--config", config.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--http-addr",
            &addrs.http,
            "--grpc-addr",
            &addrs.grpc,
            "--peer-addr",
            &addrs.peer,
            "--shard-count",
            "4",
        ])
        .env("HOTLAKE_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "a node configured against the cluster kept running");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("storage.block_window_ms is 3600000 here but 21600000 in the cluster"), "{stderr}");
    node.restart();
    let (code, v) =
        node.query(json!({"tenant": "cfg", "measurement": "m", "start": 0, "end": 10, "aggregates": ["count"]}));
    assert_eq!((code, v["groups"][0]["rows"][0][1].as_i64()), (200, Some(1)), "{v}");
}
