//! Fault injection for a simulated cluster. A [`FaultPlan`] is drawn from the seed (swarm
//! testing: each seed turns some fault kinds on, with its own rates) and printed; [`run`] then
//! applies one fault at a time at random moments and heals it, until the deadline.

use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};

use crate::harness::SimCluster;

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
            packet_loss: if rng.gen_bool(0.3) { rng.gen_range(0.001..0.05) } else { 0.0 },
            latency_ms_max: if rng.gen_bool(0.4) { rng.gen_range(11..40) } else { 1 },
            interval_ms_mean: rng.gen_range(300..3000),
            duration_ms_max: rng.gen_range(500..5000),
        };
        if !(plan.kill || plan.power_loss || plan.pause || plan.partition || plan.one_way) {
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
        ] {
            if on {
                k.push(name);
            }
        }
        k
    }
}

fn node_id(cluster: &SimCluster, id: u64) -> madsim::task::NodeId {
    cluster.node(id).host.id()
}

/// Applies faults from `plan` until `duration` has passed, then heals everything. Returns the
/// log of what was done (also printed).
pub async fn run(cluster: &SimCluster, plan: &FaultPlan, duration: Duration) -> Vec<String> {
    let net = NetSim::current();
    let started = madsim::time::Instant::now();
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
    let nodes = cluster.nodes.len() as u64;
    while started.elapsed() < duration {
        let (wait, kind, target, other, hold) = {
            let mut rng = thread_rng();
            let wait = rng.gen_range(plan.interval_ms_mean / 2..plan.interval_ms_mean * 3 / 2 + 1);
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let target = rng.gen_range(1..=nodes);
            let other = (target - 1 + rng.gen_range(1..nodes)) % nodes + 1;
            let hold = rng.gen_range(100..plan.duration_ms_max);
            (wait, kind, target, other, hold)
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
                madsim::runtime::Handle::current().pause(node_id(cluster, target));
                madsim::time::sleep(hold).await;
                madsim::runtime::Handle::current().resume(node_id(cluster, target));
                note(format!("resume node {target}"));
            }
            "partition" => {
                note(format!("partition node {target} away for {hold:?}"));
                net.clog_node(node_id(cluster, target));
                madsim::time::sleep(hold).await;
                net.unclog_node(node_id(cluster, target));
                note(format!("heal node {target}"));
            }
            "one-way" => {
                note(format!("cut link {target} -> {other} for {hold:?}"));
                net.clog_link(node_id(cluster, target), node_id(cluster, other));
                madsim::time::sleep(hold).await;
                net.unclog_link(node_id(cluster, target), node_id(cluster, other));
                note(format!("heal link {target} -> {other}"));
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
