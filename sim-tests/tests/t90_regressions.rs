//! t90: regressions for known Raft pitfalls. Each test drives one scenario, with writers
//! running through it, and ends with every acknowledged point stored, nothing else stored and
//! all replicas identical.
//! - restart after purge: every node restarts after flushes purged the logs.
//! - snapshot install during a membership change: a new node needs snapshots (the logs are
//!   purged) while another node drains, and crashes once while installing.
//! - purge racing a snapshot: a cut-off follower catches up through slow snapshots while the
//!   leader keeps flushing and purging.
//! - a learner that must not come back as a voter: a node killed while it joins (learner) is
//!   drained and removed while down, then restarts with its old memberships on disk.
//! - a replica wiped and re-added: a node comes back with an empty disk; the cluster refuses
//!   it while replicas are placed on it, and takes it back as new once it was removed.
//! - a corrupt replica: bad index data in one replica of a node fails that replica only; the
//!   node restarts and serves its others, and the shard goes on with its other replicas.
//! - a leader elected in the middle of a membership change: it inherits the joint membership
//!   and must finish it (the swarm once found groups stuck in joint consensus for good).
//! - a leader restarted at once after a power loss resumes its leadership with its buffered
//!   commit index gone; a read through it still sees every acknowledged write (the swarm once
//!   found it reading below them).
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_cluster::map::{MetaCommand, NodeState};
use hotlake_raft::log_store::LogStore;
use hotlake_sim_tests::checkers::{self, durability, model};
use hotlake_sim_tests::harness::{SimCluster, SIM_SHARDS};
use hotlake_sim_tests::observe;
use hotlake_sim_tests::workload::{read_device, write, History, Targets, Workload, DEVICES, POINTS_PER_BATCH};
use hotlake_storage::{Durability, KvEngine, MemEngine, ShardId, Space, WriteBatch};

const SETTLE: Duration = Duration::from_secs(60);

fn client_host() -> madsim::runtime::NodeHandle {
    madsim::runtime::Handle::current().create_node().name("client").ip("10.0.1.1".parse().unwrap()).build()
}

/// Runs `work` on the client host.
async fn on<T: Send + 'static>(
    client: &madsim::runtime::NodeHandle,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    client.spawn(work).await.expect("client task")
}

/// Starts a cluster of `nodes` and a client host, and waits until the cluster has converged.
async fn start_settled(nodes: u64) -> (SimCluster, Vec<String>, madsim::runtime::NodeHandle) {
    hotlake_sim_tests::harness::init_logging();
    println!("seed {}", madsim::runtime::Handle::current().seed());
    let cluster = SimCluster::start(nodes);
    let seeds = cluster.addrs();
    let client = client_host();
    settle(&client, seeds.clone(), nodes as usize).await;
    (cluster, seeds, client)
}

/// Waits until the cluster has `nodes` members and has converged.
async fn settle(client: &madsim::runtime::NodeHandle, seeds: Vec<String>, nodes: usize) {
    on(client, async move {
        let peers = observe::peers();
        let deadline = madsim::time::Instant::now() + SETTLE;
        loop {
            let members = observe::members(&peers, &seeds).await.len();
            if members == nodes && observe::not_converged(&peers, &seeds, 3).await.is_none() {
                return;
            }
            assert!(madsim::time::Instant::now() < deadline, "cluster did not settle at {nodes} members ({members})");
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// Writes `batches` batches one after the other, through `targets` in turn.
async fn write_batches(client: &madsim::runtime::NodeHandle, targets: Vec<String>, batches: u64) -> History {
    let h = on(client, async move {
        let mut h = History::default();
        for b in 0..batches {
            h.writes.insert(b, write(&targets[b as usize % targets.len()], b).await);
        }
        h
    })
    .await;
    let acked = h.acked().len() as u64;
    assert!(acked * 10 > batches * 8, "only {acked} of {batches} writes were acknowledged without faults");
    h
}

/// Writers sending through `targets` in the background; batches are numbered from `first`.
struct Writers {
    workload: Arc<Workload>,
    running: madsim::task::JoinHandle<()>,
}

impl Writers {
    fn start(client: &madsim::runtime::NodeHandle, targets: Vec<String>, first: u64) -> Writers {
        let workload = Arc::new(Workload::starting_at(first));
        let (w, t): (_, Targets) = (workload.clone(), Arc::new(Mutex::new(targets)));
        let running = client.spawn(async move { w.run(t, 2, 0).await });
        Writers { workload, running }
    }

    /// Stops the writers and merges what they saw into `history`.
    async fn stop_into(self, history: &mut History) {
        self.workload.stop();
        self.running.await.unwrap();
        let h = self.workload.history.lock().unwrap();
        history.writes.extend(h.writes.iter().map(|(b, o)| (*b, *o)));
        assert!(h.acked().len() > 10, "writers got only {} batches acknowledged", h.acked().len());
    }
}

/// Every final check: replicas identical, every acknowledged point stored, nothing else.
async fn verify(client: &madsim::runtime::NodeHandle, seeds: Vec<String>, history: History) {
    on(client, async move {
        let peers = observe::peers();
        observe::assert_replicas_identical(&peers, &seeds, SETTLE).await;
        let members = observe::members(&peers, &seeds).await;
        let state = checkers::read_final(&members[0]).await.expect("final read");
        durability::check(&history, &state).unwrap_or_else(|e| panic!("durability: {e}"));
        model::check(&history, &state).unwrap_or_else(|e| panic!("model: {e}"));
    })
    .await
}

/// Drains node `id` (unless it is draining already) and waits until the map no longer lists it.
async fn drain_and_wait_removed(client: &madsim::runtime::NodeHandle, seeds: Vec<String>, id: u64) {
    on(client, async move {
        let peers = observe::peers();
        let deadline = madsim::time::Instant::now() + SETTLE;
        // The entry to drain is the one seen first: a node with an empty disk joins again as a
        // new entry under the same id once the old one is removed, which may happen between two
        // looks at the map, and that one is not to be drained.
        let mut draining = None;
        loop {
            let Some(m) = observe::best_map(&peers, &seeds).await else { continue };
            let incarnation = *draining.get_or_insert_with(|| m.nodes.get(&id).map(|n| n.incarnation));
            match m.nodes.get(&id) {
                Some(n) if Some(n.incarnation) == incarnation && n.state == NodeState::Active => {
                    let drain = MetaCommand::SetNodeState { node: id, state: NodeState::Removing };
                    if let Err(e) = observe::propose(&peers, &seeds, drain).await {
                        println!("drain of node {id} not accepted yet: {e}");
                    }
                }
                Some(n) if Some(n.incarnation) == incarnation => {}
                _ => return,
            }
            assert!(madsim::time::Instant::now() < deadline, "node {id} was not removed after draining");
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// Voters of every shard as its leader reports them (a lagging follower may still show an
/// older membership), and every node that leads a shard. Asks every node ever started.
async fn voters_and_leaders(seeds: Vec<String>) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let peers = observe::peers();
    let (mut voters, mut leaders) = (BTreeSet::new(), BTreeSet::new());
    for addr in &seeds {
        if let Some(s) = observe::status(&peers, addr).await {
            for r in s.replicas.iter().filter(|r| r.role == "leader") {
                voters.extend(r.voters.iter().copied());
                leaders.insert(s.node);
            }
        }
    }
    (voters, leaders)
}

#[madsim::test]
async fn t90_restart_after_purge_keeps_everything() {
    let (cluster, seeds, client) = start_settled(3).await;
    // Enough batches that 16 KiB memtables flush several times and purge their logs.
    let history = write_batches(&client, seeds.clone(), 300).await;
    let s = seeds.clone();
    let purged = on(&client, async move {
        let peers = observe::peers();
        let mut purged = 0;
        for addr in &s {
            if let Some(st) = observe::status(&peers, addr).await {
                purged += st.replicas.iter().filter(|r| r.flushed > 0).count();
            }
        }
        purged
    })
    .await;
    assert!(purged >= 6, "only {purged} replicas flushed (and purged their log); the test needs more writes");
    for id in 1..=3 {
        cluster.kill(id);
    }
    madsim::time::sleep(Duration::from_secs(1)).await;
    for id in 1..=3 {
        cluster.restart(id);
    }
    settle(&client, seeds.clone(), 3).await;
    verify(&client, seeds, history).await;
}

#[madsim::test]
async fn t90_snapshot_install_during_membership_change() {
    let (mut cluster, seeds, client) = start_settled(3).await;
    let mut history = write_batches(&client, seeds.clone(), 300).await;
    let writers = Writers::start(&client, seeds[1..].to_vec(), 10_000);
    // Node 4 can only catch up by snapshot (the logs are purged) while node 1 drains: the
    // voters of every shard change while the snapshots install.
    let new = cluster.add_node();
    let s = cluster.addrs();
    on(&client, async move {
        let drain = MetaCommand::SetNodeState { node: 1, state: NodeState::Removing };
        observe::propose(&observe::peers(), &s, drain).await.expect("drain accepted");
    })
    .await;
    madsim::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(new);
    madsim::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(new);
    drain_and_wait_removed(&client, cluster.addrs(), 1).await;
    settle(&client, cluster.addrs(), 3).await;
    writers.stop_into(&mut history).await;
    verify(&client, cluster.addrs(), history).await;
}

#[madsim::test]
async fn t90_purge_racing_snapshot() {
    hotlake_sim_tests::harness::init_logging();
    println!("seed {}", madsim::runtime::Handle::current().seed());
    // Slow snapshots (4 KiB chunks, 256 KiB a second) so flushes and purges happen while they
    // stream: a shard's snapshot here carries its stored feed, every write since the start
    // uncompressed, so it takes seconds of the test's writes (at 4 KiB a second, as before the
    // feed travelled, the lagging replica never caught up within the settle time).
    let cluster = SimCluster::start_with(
        3,
        Arc::new(|c| {
            c.cluster.snapshot_bytes_per_s_max = 256 << 10;
            c.cluster.snapshot_chunk_bytes_max = 4096;
        }),
    );
    let seeds = cluster.addrs();
    let client = client_host();
    settle(&client, seeds.clone(), 3).await;
    let net = madsim::net::NetSim::current();
    net.clog_node(cluster.node(3).host.id());
    let mut history = write_batches(&client, seeds[..2].to_vec(), 300).await;
    let writers = Writers::start(&client, seeds[..2].to_vec(), 10_000);
    net.unclog_node(cluster.node(3).host.id());
    madsim::time::sleep(Duration::from_secs(10)).await;
    writers.stop_into(&mut history).await;
    settle(&client, seeds.clone(), 3).await;
    verify(&client, seeds, history).await;
}

#[madsim::test]
async fn t90_removed_learner_does_not_come_back_as_voter() {
    hotlake_sim_tests::harness::init_logging();
    println!("seed {}", madsim::runtime::Handle::current().seed());
    let mut cluster = SimCluster::start(3);
    let client = client_host();
    settle(&client, cluster.addrs(), 3).await;
    let mut history = write_batches(&client, cluster.addrs(), 100).await;
    let writers = Writers::start(&client, cluster.addrs(), 10_000);
    // Node 4 joins and is killed while it is still a learner of the groups placed on it.
    let new = cluster.add_node();
    let s = cluster.addrs();
    on(&client, async move {
        let peers = observe::peers();
        while observe::best_map(&peers, &s).await.is_none_or(|m| m.shards_on(new).is_empty()) {
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    madsim::time::sleep(Duration::from_millis(200)).await;
    cluster.kill(new);
    drain_and_wait_removed(&client, cluster.addrs(), new).await;
    cluster.restart(new);
    // Its disk still names it a learner (or voter) of old memberships: it must not get back in.
    let s = cluster.addrs();
    on(&client, async move {
        for _ in 0..50 {
            let (voters, leaders) = voters_and_leaders(s.clone()).await;
            assert!(!voters.contains(&new), "removed node {new} is a voter again: {voters:?}");
            assert!(!leaders.contains(&new), "removed node {new} leads a shard");
            let m = observe::best_map(&observe::peers(), &s).await.expect("map");
            assert!(!m.nodes.contains_key(&new), "removed node {new} was let back in with its old disk");
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    writers.stop_into(&mut history).await;
    settle(&client, cluster.addrs(), 3).await;
    verify(&client, cluster.addrs(), history).await;
}

#[madsim::test]
async fn t90_wiped_replica_is_refused_then_re_added() {
    let (cluster, seeds, client) = start_settled(4).await;
    let mut history = write_batches(&client, seeds.clone(), 150).await;
    let writers = Writers::start(&client, vec![seeds[0].clone(), seeds[1].clone(), seeds[3].clone()], 10_000);
    cluster.wipe(3);
    // Refused while replicas are placed on it: it hosts nothing and takes no part in Raft.
    let s = seeds.clone();
    on(&client, async move {
        let peers = observe::peers();
        for _ in 0..25 {
            madsim::time::sleep(Duration::from_millis(200)).await;
            if let Some(st) = observe::status(&peers, &s[2]).await {
                assert!(st.replicas.is_empty(), "the wiped node opened replicas: {:?}", st.replicas);
                assert_eq!(st.map_version, 0, "the wiped node was let back in");
            }
            let m = observe::best_map(&peers, &s).await.expect("map");
            assert_eq!(m.shards.len(), SIM_SHARDS as usize);
            assert!(!m.shards_on(3).is_empty(), "replicas left the wiped node without a drain");
        }
    })
    .await;
    // The operator removes it; it then joins again as a new member and gets replicas.
    drain_and_wait_removed(&client, seeds.clone(), 3).await;
    // Back as a member, it gets a balanced share of replicas (the planner moves them one round
    // after it joins, so membership alone is not enough).
    let s = seeds.clone();
    on(&client, async move {
        let peers = observe::peers();
        let deadline = madsim::time::Instant::now() + SETTLE;
        loop {
            let m = observe::best_map(&peers, &s).await.expect("map");
            if m.nodes.contains_key(&3) && !m.shards_on(3).is_empty() {
                return;
            }
            assert!(madsim::time::Instant::now() < deadline, "the re-added node got no replicas");
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    settle(&client, seeds.clone(), 4).await;
    writers.stop_into(&mut history).await;
    verify(&client, seeds, history).await;
}

#[madsim::test]
async fn t90_a_corrupt_replica_fails_one_shard_not_the_node() {
    let (cluster, seeds, client) = start_settled(3).await;
    let mut history = write_batches(&client, seeds.clone(), 100).await;
    cluster.kill(3);
    // A series-record key cut short: the index of shard 1 on node 3 no longer loads.
    let mut bad = WriteBatch::new();
    bad.put(Space::Index(ShardId(1)), vec![0x01u8], Vec::new());
    cluster.node(3).engine().write(bad, Durability::Sync).expect("write to the simulated disk");
    cluster.restart(3);
    let writers = Writers::start(&client, vec![seeds[0].clone(), seeds[1].clone()], 10_000);
    let s = seeds.clone();
    on(&client, async move {
        let peers = observe::peers();
        let deadline = madsim::time::Instant::now() + SETTLE;
        loop {
            if let Some(st) = observe::status(&peers, &s[2]).await {
                let hosted: BTreeSet<u32> = st.replicas.iter().map(|r| r.shard.0).collect();
                let serving = st.replicas.iter().all(|r| r.role == "leader" || r.role == "follower");
                if hosted == BTreeSet::from([0, 2, 3]) && serving {
                    return;
                }
            }
            assert!(madsim::time::Instant::now() < deadline, "node 3 does not serve its good replicas");
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // Writes go on for a while with shard 1 on two replicas.
    madsim::time::sleep(Duration::from_secs(10)).await;
    writers.stop_into(&mut history).await;
    let first = seeds[0].clone();
    on(&client, async move {
        let state = checkers::read_final(&first).await.expect("final read");
        durability::check(&history, &state).unwrap_or_else(|e| panic!("durability: {e}"));
        model::check(&history, &state).unwrap_or_else(|e| panic!("model: {e}"));
    })
    .await;
}

/// What a node's disk says of one shard's group: whether the newest membership in its log is
/// joint, and the committed vote it holds as (term, leader). Read through the node's own log
/// store, so the test shares its encoding.
type GroupOnDisk = (Option<bool>, Option<(u64, u64)>);

async fn group_on_disk(engine: &MemEngine, shard: ShardId) -> GroupOnDisk {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    let mut log: LogStore<hotlake_raft::TypeConfig> = LogStore::new(Arc::new(engine.clone()), Space::Log(shard));
    let entries = log.try_get_log_entries(..).await.unwrap_or_default();
    let joint = entries.iter().rev().find_map(|e| match &e.payload {
        openraft::EntryPayload::Membership(m) => Some(m.get_joint_config().len() > 1),
        _ => None,
    });
    let vote = log.read_vote().await.ok().flatten().filter(|v| v.is_committed());
    (joint, vote.and_then(|v| Some((v.leader_id().term, v.leader_id().voted_for()?))))
}

#[madsim::test]
async fn t90_a_leader_elected_mid_change_finishes_the_joint_membership() {
    let (mut cluster, seeds, client) = start_settled(3).await;
    let mut history = write_batches(&client, seeds.clone(), 30).await;
    let writers = Writers::start(&client, seeds.clone(), 10_000);
    // Node 4 joins: replicas move onto it, each voter change through a joint membership. Watch
    // the disks (no simulated time passes while they are read) for a group whose joint entry
    // reached a follower, and kill its leader then: a follower holding the entry wins the
    // election (its log is the longest) and inherits the change half way.
    let new = cluster.add_node();
    let deadline = madsim::time::Instant::now() + SETTLE;
    let (shard, leader) = 'found: loop {
        for shard in (0..SIM_SHARDS).map(ShardId) {
            let mut views: Vec<(u64, GroupOnDisk)> = Vec::new();
            for id in 1..=new {
                views.push((id, group_on_disk(&cluster.node(id).engine(), shard).await));
            }
            let Some((_, leader)) = views.iter().filter_map(|(_, (_, v))| *v).max() else { continue };
            let joint_on = |id: u64| views.iter().any(|(n, (j, _))| *n == id && *j == Some(true));
            let followers_joint = views.iter().filter(|(id, _)| *id != leader && joint_on(*id)).count();
            // The leader still holds the joint entry as its newest: it has not appended the
            // final membership anywhere, so whoever wins next inherits the change half way.
            if leader <= 3 && joint_on(leader) && followers_joint >= 1 {
                break 'found (shard, leader);
            }
        }
        assert!(madsim::time::Instant::now() < deadline, "no voter change was seen half way on a follower");
        madsim::time::sleep(Duration::from_micros(200)).await;
    };
    println!("killing node {leader}, leader of {shard} in the middle of a voter change");
    cluster.kill(leader);
    // The new leader must finish the change: the group leaves joint consensus for good.
    let s = cluster.addrs();
    on(&client, async move {
        let peers = observe::peers();
        let deadline = madsim::time::Instant::now() + SETTLE;
        loop {
            let mut led_uniform = false;
            for addr in &s {
                if let Some(st) = observe::status(&peers, addr).await {
                    led_uniform |= st.replicas.iter().any(|r| r.shard == shard && r.role == "leader" && !r.joint);
                }
            }
            if led_uniform {
                return;
            }
            assert!(madsim::time::Instant::now() < deadline, "{shard} is still in joint consensus or leaderless");
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    cluster.restart(leader);
    settle(&client, cluster.addrs(), 4).await;
    writers.stop_into(&mut history).await;
    verify(&client, cluster.addrs(), history).await;
}

#[madsim::test]
async fn t90_a_leader_restarted_at_once_reads_every_acknowledged_write() {
    let (cluster, seeds, client) = start_settled(3).await;
    let history = write_batches(&client, seeds.clone(), 40).await;
    let s = seeds.clone();
    let (leader, led) = on(&client, async move {
        let peers = observe::peers();
        let mut best: (u64, BTreeSet<ShardId>) = (0, BTreeSet::new());
        for addr in &s {
            if let Some(st) = observe::status(&peers, addr).await {
                let led: BTreeSet<ShardId> =
                    st.replicas.iter().filter(|r| r.role == "leader").map(|r| r.shard).collect();
                if led.len() > best.1.len() {
                    best = (st.node, led);
                }
            }
        }
        best
    })
    .await;
    assert!(!led.is_empty(), "no node leads a shard");
    // Power loss and an immediate restart: the leader is back before any follower's election
    // timeout and resumes its leadership from its disk, without the commit index it had
    // buffered. Its links to the followers are cut while the reads arrive, so it cannot learn
    // that index again before it answers them.
    let lost = cluster.power_loss(leader);
    cluster.restart(leader);
    let net = madsim::net::NetSim::current();
    let host = |id: u64| cluster.node(id).host.id();
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    for &f in &followers {
        net.clog_link(host(leader), host(f));
        net.clog_link(host(f), host(leader));
    }
    println!("node {leader}, leader of {led:?}, lost {lost} unsynced writes and restarted at once");
    let via = seeds[leader as usize - 1].clone();
    let v = via.clone();
    on(&client, async move {
        let peers = observe::peers();
        let deadline = madsim::time::Instant::now() + Duration::from_secs(1);
        loop {
            let st = observe::status(&peers, &v).await;
            if st.is_some_and(|st| st.replicas.iter().any(|r| led.contains(&r.shard) && r.role == "leader")) {
                return;
            }
            assert!(
                madsim::time::Instant::now() < deadline,
                "node {leader} resumed none of its leaderships: the scenario was not built"
            );
            madsim::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let reads: Vec<_> = (0..DEVICES).map(|d| (d, client.spawn(read_device_until_answered(via.clone(), d)))).collect();
    madsim::time::sleep(Duration::from_millis(500)).await;
    for &f in &followers {
        net.unclog_link(host(leader), host(f));
        net.unclog_link(host(f), host(leader));
    }
    let acked = history.acked();
    for (d, read) in reads {
        let seen: BTreeSet<i64> = read.await.expect("read task").into_iter().map(|(t, _)| t).collect();
        for &b in &acked {
            let first = b as i64 * POINTS_PER_BATCH;
            let missing = (first..first + POINTS_PER_BATCH).find(|t| !seen.contains(t));
            assert!(missing.is_none(), "a read of d{d} through the restarted leader missed acknowledged batch {b}");
        }
    }
    settle(&client, seeds.clone(), 3).await;
    verify(&client, seeds, history).await;
}

/// Every point of device `d` read through `via`, retried until a read answers (within 60 s).
async fn read_device_until_answered(via: String, d: i64) -> Vec<(i64, i64)> {
    let deadline = madsim::time::Instant::now() + SETTLE;
    loop {
        match read_device(&via, d).await {
            Ok(points) => return points,
            Err(e) => {
                assert!(madsim::time::Instant::now() < deadline, "no read of d{d} through {via}: {e}");
                madsim::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
