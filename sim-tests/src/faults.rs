//! Fault injection for a simulated cluster. A [`FaultPlan`] is drawn from the seed (swarm
//! testing: each seed turns some fault kinds on, with its own rates) and printed; [`run`] then
//! applies one fault at a time at random moments and heals it, until the deadline.
//!
//! Leader transfer: openraft 0.9 has no leader transfer, and an election triggered on a
//! follower loses to the leader's lease. The `depose` fault moves a shard's leadership the
//! only way the cluster allows: it isolates the leader until another replica has taken over.

use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};

use hotlake_cluster::map::{MetaCommand, NodeState};
use hotlake_storage::ShardId;

use crate::harness::{SimCluster, SIM_SHARDS};
use crate::observe;
use crate::workload::Targets;

/// Which faults a seed uses, and how often.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Process crash and restart (synced writes survive).
    pub kill: bool,
    /// Power loss: crash, drop every unsynced write, restart.
    pub power_loss: bool,
    /// Pause a node (a long GC or a stuck VM), then resume it.
    pub pause: bool,
    /// Cut one node off from every other host, both ways.
    pub partition: bool,
    /// Cut one direction of one link between two nodes.
    pub one_way: bool,
    /// Cut one link between two nodes, both ways (each can still reach the third).
    pub link_cut: bool,
    /// Isolate one shard's leader until another replica leads the shard.
    pub depose: bool,
    /// Membership changes: add a node, drain a node, move one replica by hand.
    pub membership: bool,
    /// Packet loss rate for the whole run (0 = none).
    pub packet_loss: f64,
    /// Upper bound of the per-packet latency for the whole run (1 = madsim's default, 1–10 ms).
    pub latency_ms_max: u64,
    /// Mean time between faults.
    pub interval_ms_mean: u64,
    /// How long a fault lasts at most.
    pub duration_ms_max: u64,
}

impl FaultPlan {
    /// Draws a plan from the simulation's seeded randomness. At least one node fault is on.
    pub fn swarm() -> FaultPlan {
        let mut rng = thread_rng();
        let mut plan = FaultPlan {
            kill: rng.gen_bool(0.5),
            power_loss: rng.gen_bool(0.5),
            pause: rng.gen_bool(0.4),
            partition: rng.gen_bool(0.5),
            one_way: rng.gen_bool(0.3),
            link_cut: rng.gen_bool(0.3),
            depose: rng.gen_bool(0.3),
            membership: rng.gen_bool(0.4),
            packet_loss: if rng.gen_bool(0.3) { rng.gen_range(0.001..0.05) } else { 0.0 },
            latency_ms_max: if rng.gen_bool(0.4) { rng.gen_range(11..40) } else { 1 },
            interval_ms_mean: rng.gen_range(300..3000),
            duration_ms_max: rng.gen_range(500..5000),
        };
        if !(plan.kill
            || plan.power_loss
            || plan.pause
            || plan.partition
            || plan.one_way
            || plan.link_cut
            || plan.depose
            || plan.membership)
        {
            plan.power_loss = true;
        }
        plan
    }

    fn kinds(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        for (on, name) in [
            (self.kill, "kill"),
            (self.power_loss, "power-loss"),
            (self.pause, "pause"),
            (self.partition, "partition"),
            (self.one_way, "one-way"),
            (self.link_cut, "link-cut"),
            (self.depose, "depose"),
            (self.membership, "membership"),
        ] {
            if on {
                k.push(name);
            }
        }
        k
    }
}

fn host_of(cluster: &SimCluster, id: u64) -> madsim::task::NodeId {
    cluster.node(id).host.id()
}

/// Hosts a cluster may grow to through `membership` faults.
const NODES_MAX: usize = 5;

/// Runs `work` on the operator host (observers and admin commands need a host of their own).
async fn as_operator<T: Send + 'static>(
    operator: &madsim::runtime::NodeHandle,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    operator.spawn(work).await.expect("operator task")
}

/// One membership change, chosen at random: add a node (up to [`NODES_MAX`]), drain an active
/// node while more than the replication factor stay active, or move one replica of a shard to
/// a node that holds none (the planner may later move it back: more churn, on purpose).
async fn change_membership(
    cluster: &mut SimCluster,
    operator: &madsim::runtime::NodeHandle,
    targets: &Targets,
) -> String {
    let seeds = cluster.addrs();
    let Some(map) = as_operator(operator, async move { observe::best_map(&observe::peers(), &seeds).await }).await
    else {
        return "membership: no map readable".into();
    };
    let active: Vec<u64> = map.nodes.values().filter(|n| n.state == NodeState::Active).map(|n| n.id).collect();
    let (choice, pick_node, pick_shard, pick_replica) = {
        let mut rng = thread_rng();
        (rng.gen_range(0..3u32), rng.gen_range(0..64usize), rng.gen_range(0..64usize), rng.gen_range(0..64usize))
    };
    let rf = map.replication_factor as usize;
    // A cluster at its size limit drains instead of growing.
    let choice = if choice == 0 && cluster.nodes.len() >= NODES_MAX { 1 } else { choice };
    let cmd = match choice {
        1 if active.len() > rf => {
            let node = active[pick_node % active.len()];
            MetaCommand::SetNodeState { node, state: NodeState::Removing }
        }
        2 if !map.shards.is_empty() => {
            let shard = ShardId((pick_shard % map.shards.len()) as u32);
            let p = &map.shards[shard.0 as usize];
            let free: Vec<u64> = active.iter().copied().filter(|n| !p.replicas.contains(n)).collect();
            if free.is_empty() || p.replicas.is_empty() {
                return format!("membership: no node free to take a replica of {shard}");
            }
            let mut replicas = p.replicas.clone();
            replicas[pick_replica % p.replicas.len()] = free[pick_node % free.len()];
            MetaCommand::SetPlacement { shard, replicas, epoch: p.epoch }
        }
        _ if cluster.nodes.len() < NODES_MAX => {
            let id = cluster.add_node();
            targets.lock().unwrap().push(cluster.node(id).addr.clone());
            return format!("membership: start node {id}, joining");
        }
        _ => return "membership: nothing to change".into(),
    };
    let seeds = cluster.addrs();
    let what = format!("{cmd:?}");
    let result = as_operator(operator, async move { observe::propose(&observe::peers(), &seeds, cmd).await }).await;
    format!("membership: {what} -> {result:?}")
}

/// Applies faults from `plan` until `duration` has passed, then heals everything. Nodes
/// started by membership faults are added to `targets`. Returns the log of what was done
/// (also printed).
// tidy: long (one match over every fault kind of the schedule).
pub async fn run(cluster: &mut SimCluster, plan: &FaultPlan, duration: Duration, targets: &Targets) -> Vec<String> {
    let net = NetSim::current();
    let started = madsim::time::Instant::now();
    let operator = madsim::runtime::Handle::current()
        .create_node()
        .name("operator")
        .ip("10.0.2.1".parse().expect("valid ip"))
        .build();
    let mut log = Vec::new();
    let mut note = |msg: String| {
        let line = format!("t={:>6}ms {msg}", started.elapsed().as_millis());
        println!("  {line}");
        log.push(line);
    };
    if plan.packet_loss > 0.0 || plan.latency_ms_max > 1 {
        let (loss, latency) = (plan.packet_loss, plan.latency_ms_max);
        net.update_config(|c| {
            c.packet_loss_rate = loss;
            if latency > 1 {
                c.send_latency = Duration::from_millis(1)..Duration::from_millis(latency);
            }
        });
        note(format!("network: packet loss {loss:.3}, latency 1..{latency} ms"));
    }
    let kinds = plan.kinds();
    while started.elapsed() < duration {
        let nodes = cluster.nodes.len() as u64;
        let (wait, kind, target, other, hold, shard) = {
            let mut rng = thread_rng();
            let wait = rng.gen_range(plan.interval_ms_mean / 2..plan.interval_ms_mean * 3 / 2 + 1);
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let target = rng.gen_range(1..=nodes);
            let other = (target - 1 + rng.gen_range(1..nodes)) % nodes + 1;
            let hold = rng.gen_range(100..plan.duration_ms_max);
            let shard = rng.gen_range(0..64u32);
            (wait, kind, target, other, hold, shard)
        };
        madsim::time::sleep(Duration::from_millis(wait)).await;
        let hold = Duration::from_millis(hold);
        match kind {
            "kill" => {
                note(format!("kill node {target} for {hold:?}"));
                cluster.kill(target);
                madsim::time::sleep(hold).await;
                cluster.restart(target);
                note(format!("restart node {target}"));
            }
            "power-loss" => {
                let lost = cluster.power_loss(target);
                note(format!("power loss on node {target} ({lost} unsynced writes dropped) for {hold:?}"));
                madsim::time::sleep(hold).await;
                cluster.restart(target);
                note(format!("restart node {target}"));
            }
            "pause" => {
                note(format!("pause node {target} for {hold:?}"));
                madsim::runtime::Handle::current().pause(host_of(cluster, target));
                madsim::time::sleep(hold).await;
                madsim::runtime::Handle::current().resume(host_of(cluster, target));
                note(format!("resume node {target}"));
            }
            "partition" => {
                note(format!("partition node {target} away for {hold:?}"));
                net.clog_node(host_of(cluster, target));
                madsim::time::sleep(hold).await;
                net.unclog_node(host_of(cluster, target));
                note(format!("heal node {target}"));
            }
            "one-way" => {
                note(format!("cut link {target} -> {other} for {hold:?}"));
                net.clog_link(host_of(cluster, target), host_of(cluster, other));
                madsim::time::sleep(hold).await;
                net.unclog_link(host_of(cluster, target), host_of(cluster, other));
                note(format!("heal link {target} -> {other}"));
            }
            "link-cut" => {
                note(format!("cut link {target} <-> {other} for {hold:?}"));
                net.clog_link(host_of(cluster, target), host_of(cluster, other));
                net.clog_link(host_of(cluster, other), host_of(cluster, target));
                madsim::time::sleep(hold).await;
                net.unclog_link(host_of(cluster, target), host_of(cluster, other));
                net.unclog_link(host_of(cluster, other), host_of(cluster, target));
                note(format!("heal link {target} <-> {other}"));
            }
            "depose" => {
                let seeds = cluster.addrs();
                let shard = ShardId(shard % SIM_SHARDS);
                let s = seeds.clone();
                let Some(leader) =
                    as_operator(&operator, async move { observe::shard_leader(&observe::peers(), &s, shard).await })
                        .await
                else {
                    note(format!("depose: {shard} has no leader now"));
                    continue;
                };
                note(format!("depose node {leader}, leader of {shard}: isolate it until another replica leads"));
                net.clog_node(host_of(cluster, leader));
                let deadline = madsim::time::Instant::now() + Duration::from_secs(5);
                loop {
                    madsim::time::sleep(Duration::from_millis(100)).await;
                    let s = seeds.clone();
                    let now =
                        as_operator(
                            &operator,
                            async move { observe::shard_leader(&observe::peers(), &s, shard).await },
                        )
                        .await;
                    if now.is_some_and(|n| n != leader) || madsim::time::Instant::now() >= deadline {
                        note(format!("{shard} now led by {now:?}; heal node {leader}"));
                        break;
                    }
                }
                net.unclog_node(host_of(cluster, leader));
            }
            "membership" => {
                let what = change_membership(cluster, &operator, targets).await;
                note(what);
                madsim::time::sleep(hold).await;
            }
            other => unreachable!("unknown fault kind {other}"),
        }
    }
    net.update_config(|c| {
        c.packet_loss_rate = 0.0;
        c.send_latency = Duration::from_millis(1)..Duration::from_millis(10);
    });
    note("faults stopped; network healed".into());
    log
}
