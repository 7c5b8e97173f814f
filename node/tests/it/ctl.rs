//! Every `hotlakectl` command, run as the real binary against a real local cluster: tables are
//! parsed, JSON must be valid, CSV must have its header, and exit codes follow `--help`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{flags, Cluster};
use crate::support::NodeProcess;

/// The `hotlakectl` binary next to this test's binary (built by `cargo test --workspace`).
pub(crate) fn hotlakectl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("hotlakectl");
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p hotlakectl --bin hotlakectl`", bin.display());
    bin
}

struct Ctl {
    cluster: String,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "hotlakectl failed: {}\n{}", self.stderr, self.stdout);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// A table as rows of whitespace-separated cells, header first.
    fn table(&self) -> Vec<Vec<String>> {
        self.stdout.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
    }
}

impl Run {
    /// Runs hotlakectl as `command` sets it up (the token included), with no cluster, token
    /// file or context from this process's environment and no config file of the user's.
    fn of(command: &mut Command) -> Run {
        let out = command
            .env_remove("HOTLAKE_CLUSTER")
            .env_remove("HOTLAKE_TOKEN_FILE")
            .env_remove("HOTLAKE_CONTEXT")
            .env("HOME", "/nonexistent")
            .output()
            .expect("run hotlakectl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Run {
        Run::of(
            Command::new(hotlakectl())
                .arg("--cluster")
                .arg(&self.cluster)
                .args(args)
                .env("HOTLAKE_TOKEN", crate::support::TEST_TOKEN),
        )
    }
}

#[test]
// tidy: long (one cluster for every command, since starting a cluster dominates the test time).
fn every_hotlakectl_command_works_against_a_real_cluster() {
    let mut c = Cluster::start(3);
    let ctl = Ctl { cluster: c.nodes.iter().map(|n| n.grpc.clone()).collect::<Vec<_>>().join(",") };

    // health: every member answers.
    let h = ctl.run(&["health", "--output", "json"]).ok().json();
    assert_eq!(h.as_array().unwrap().len(), 3, "{h}");
    assert!(h.as_array().unwrap().iter().all(|n| n["status"] == "ok"), "{h}");

    // cluster status: a table with a row per member, JSON with the whole answer.
    let t = ctl.run(&["cluster", "status", "--wait-ready-s", "60", "--wait-nodes", "3"]).ok().table();
    assert!(t[0].contains(&"ready".to_string()), "{t:?}");
    assert!(t[0].windows(2).any(|w| w[0] == "auth" && w[1] == "on"), "{t:?}");
    assert_eq!(t[1][..3], ["NODE", "GRPC", "HTTP"]);
    assert_eq!(t.len(), 5, "summary, header and 3 members: {t:?}");
    let s = ctl.run(&["cluster", "status", "--output", "json"]).ok().json();
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    assert!(s["members"].as_array().unwrap().iter().all(|m| m["state"] == "active"), "enums by name: {s}");
    typed_admin_refuses_bad_changes_and_changes_nothing(&c.nodes.iter().map(|n| n.grpc.clone()).collect::<Vec<_>>());

    // cluster map as CSV: a header and one row per shard.
    let map = ctl.run(&["cluster", "map", "--output", "csv"]).ok().stdout;
    let lines: Vec<&str> = map.lines().collect();
    assert_eq!(lines[0], "shard,replicas,epoch");
    assert_eq!(lines.len(), 1 + 8, "{map}");
    let cm = ctl.run(&["cluster", "map", "--output", "json"]).ok().json();
    assert_eq!(cm["shards"].as_array().unwrap().len(), 8);

    // node list and shard list.
    let nodes = ctl.run(&["node", "list", "--output", "json"]).ok().json();
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    let shards = ctl.run(&["shard", "list", "--output", "json"]).ok().json();
    let shards = shards.as_array().unwrap();
    assert_eq!(shards.len(), 8);
    assert!(shards.iter().all(|s| s["leader"] != "none" && s["state"] == "settled"), "{shards:?}");
    let show = ctl.run(&["shard", "show", "3", "--output", "json"]).ok().json();
    let replicas = show.as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{show}");
    assert_eq!(replicas.iter().filter(|r| r["role"] == "leader").count(), 1, "{show}");

    // transfer-leader: a follower of shard 2 takes over.
    let before = shards[2]["leader"].as_str().unwrap().to_string();
    let voters = ctl.run(&["shard", "show", "2", "--output", "json"]).ok().json();
    let follower = voters.as_array().unwrap().iter().find(|r| r["role"] == "follower").unwrap()["node"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(before, follower);
    let t = ctl.run(&["shard", "transfer-leader", "2", "--to", &follower]).ok();
    assert!(t.stdout.contains(&format!("node {follower} leads it now")), "{}", t.stdout);
    let shards_now = ctl.run(&["shard", "list", "--output", "json"]).ok().json();
    assert_eq!(shards_now[2]["leader"].as_str(), Some(follower.as_str()), "{shards_now}");
    assert_eq!(ctl.run(&["shard", "transfer-leader", "2", "--to", "99"]).code, 1, "not a voter");
    let bad = ctl.run(&["shard", "transfer-leader", "999", "--to", "1"]);
    assert_eq!(bad.code, 1, "no such shard: {}", bad.stderr);
    assert!(bad.stderr.contains("no shard"), "{}", bad.stderr);

    // write from a file, then query and last.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("points.lp");
    let lp: String =
        (0..2000).map(|i| format!("m,device_id=d{} v={i}i {}\n", i % 20, 1_600_000_000_000_000_000i64 + i)).collect();
    std::fs::write(&file, lp).unwrap();
    let w = ctl.run(&["write", "--db", "ctl", "--batch-lines", "300", "--file", file.to_str().unwrap()]).ok();
    assert!(w.stdout.starts_with("2000 points sent, 0 rejected"), "{}", w.stdout);
    assert!(w.stderr.contains("points/s"), "progress is shown: {}", w.stderr);
    let range = ["--start", "1600000000000000000", "--end", "1600000000000010000"];
    let q = ctl
        .run(&[&["query", "m", "--db", "ctl", "--agg", "count", "--output", "json"][..], &range].concat())
        .ok()
        .json();
    assert_eq!(q["groups"][0]["rows"][0][1], 2000, "{q}");
    let q =
        ctl.run(&[&["query", "m", "--db", "ctl", "--agg", "sum", "--group-by", "device_id"][..], &range].concat()).ok();
    let t = q.table();
    assert_eq!(t.len(), 1 + 20, "header and one row per device: {}", q.stdout);
    let csv = ctl
        .run(&[&["query", "m", "--db", "ctl", "--where", "device_id=d3", "--output", "csv"][..], &range].concat())
        .ok();
    assert_eq!(csv.stdout.lines().count(), 1 + 100, "{}", csv.stdout);
    let last = ctl.run(&["last", "m", "--db", "ctl", "--output", "json"]).ok().json();
    assert_eq!(last["rows"].as_array().unwrap().len(), 20, "{last}");
    let d7 = ctl.run(&["last", "m", "--db", "ctl", "--where", "device_id=d7"]).ok().table();
    assert_eq!(d7.len(), 2);
    // Tables show times as RFC 3339, the JSON's nanoseconds with --raw-time.
    let time = d7[0].iter().position(|h| h == "TIME").expect("a time column");
    let ns = last["rows"].as_array().unwrap().iter().find(|r| r["tags"]["device_id"] == "d7").unwrap()["values"]["v"]
        ["time"]
        .as_i64()
        .unwrap();
    assert!(d7[1][time].ends_with('Z') && d7[1][time].contains('T'), "not RFC 3339: {:?}", d7[1]);
    let raw = ctl.run(&["last", "m", "--db", "ctl", "--where", "device_id=d7", "--raw-time"]).ok().table();
    assert_eq!(raw[1][time], ns.to_string(), "{raw:?}");

    // The client library's example runs against this cluster (cargo test builds examples).
    let example = hotlakectl().parent().unwrap().join("examples/quickstart");
    assert!(example.exists(), "{} is missing: run the tests with `cargo test --workspace`", example.display());
    {
        let seeds: Vec<String> = c.nodes.iter().map(|n| n.grpc.clone()).collect();
        let run = Command::new(&example)
            .arg(seeds.join(","))
            .env("HOTLAKE_TOKEN", crate::support::TEST_TOKEN)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "quickstart failed: {}", String::from_utf8_lossy(&run.stderr));
        assert!(stdout.contains("written: 300 points"), "{stdout}");
        assert_eq!(stdout.matches("mean velocity").count(), 5, "{stdout}");
    }

    // node add before the node runs, then start it: it joins as the registered node.
    let addrs = NodeProcess::free_addrs();
    ctl.run(&["node", "add", "4", "--grpc-addr", &addrs.grpc, "--http-addr", &addrs.http, "--peer-addr", &addrs.peer])
        .ok();
    let node4_dir = tempfile::tempdir().unwrap();
    let f = flags(4, Some(&c.nodes[0].peer));
    let args: Vec<&str> = f.iter().map(String::as_str).collect();
    let node4 = NodeProcess::start_at(node4_dir.path(), &addrs, &[], &args);
    c.members = 4;
    // rebalance follows the planner until placement is balanced over 4 nodes.
    let plan = ctl.run(&["rebalance", "--dry-run", "--output", "json"]).ok().json();
    assert!(plan["moves"].is_array(), "{plan}");
    ctl.run(&["rebalance", "--watch-s", "180"]).ok();
    c.wait_converged(Duration::from_secs(120));

    // shard move: one replica from a node holding it to one that does not.
    let s = ctl.run(&["cluster", "map", "--output", "json"]).ok().json();
    let placement: Vec<u64> =
        s["shards"][5]["replicas"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
    let to = (1..=4).find(|n| !placement.contains(n)).unwrap();
    let from = placement[0];
    let m = ctl
        .run(&[
            "shard",
            "move",
            "5",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--watch",
            "--watch-s",
            "120",
        ])
        .ok();
    assert!(m.stdout.contains("done"), "{}", m.stdout);
    let show = ctl.run(&["shard", "show", "5", "--output", "json"]).ok().json();
    let to_name = to.to_string();
    assert!(show.as_array().unwrap().iter().any(|r| r["node"].as_str() == Some(to_name.as_str())), "{show}");

    // drain keeps the node a member with no replicas; activate undoes it; remove takes it out.
    ctl.run(&["node", "drain", "4", "--watch", "--watch-s", "180"]).ok();
    let list = ctl.run(&["node", "list", "--output", "json"]).ok().json();
    let n4 = list.as_array().unwrap().iter().find(|n| n["node"] == "4").cloned().unwrap();
    assert_eq!((n4["state"].as_str(), n4["replicas"].as_str()), (Some("draining"), Some("0")), "{list}");
    ctl.run(&["node", "activate", "4"]).ok();
    ctl.run(&["node", "remove", "4", "--watch", "--watch-s", "180"]).ok();
    assert_eq!(ctl.run(&["node", "list", "--output", "json"]).ok().json().as_array().unwrap().len(), 3);
    drop(node4);
    c.members = 3;

    // cluster init on a cluster that exists changes nothing.
    assert!(ctl.run(&["cluster", "init"]).ok().stdout.contains("already exists"));

    // tenants and tokens: a token made for one tenant reads it and nothing else.
    ctl.run(&["tenant", "create", "readers", "--retention-s", "0"]).ok();
    assert_eq!(ctl.run(&["tenant", "create", "readers"]).code, 1, "a tenant exists once");
    ctl.run(&["tenant", "set", "readers", "--retention-s", "86400"]).ok();
    let tenants = ctl.run(&["tenant", "list", "--output", "csv"]).ok().stdout;
    assert!(tenants.lines().any(|l| l == "readers,86400 s"), "{tenants}");
    assert!(tenants.lines().any(|l| l == "ctl,forever"), "a first write created its tenant: {tenants}");
    let made = ctl.run(&["token", "create", "--name", "dash", "--scope", "read:ctl", "--output", "json"]).ok().json();
    let secret = made["secret"].as_str().unwrap().to_string();
    let id = made["id"].as_u64().unwrap().to_string();
    let listed = ctl.run(&["token", "list"]).ok();
    assert!(listed.stdout.contains(&id) && listed.stdout.contains("read:ctl"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(&secret), "a listing shows a secret");
    let mine = ctl.run(&[
        "--token", &secret, "query", "m", "--db", "ctl", "--agg", "count", "--output", "json", range[0], range[1],
        range[2], range[3],
    ]);
    assert_eq!(mine.ok().json()["groups"][0]["rows"][0][1], 2000);
    let other = ctl.run(&["--token", &secret, "last", "m", "--db", "readers"]);
    assert_eq!(other.code, 1, "{}", other.stderr);
    assert!(other.stderr.contains("permission_denied"), "{}", other.stderr);
    let admin_only = ctl.run(&["--token", &secret, "cluster", "status"]);
    assert_eq!(admin_only.code, 1, "{}", admin_only.stderr);
    assert!(admin_only.stderr.contains("admin:*"), "{}", admin_only.stderr);
    ctl.run(&["token", "revoke", &id]).ok();
    let revoked = ctl.run(&["--token", &secret, "last", "m", "--db", "ctl"]);
    assert_eq!(revoked.code, 1, "{}", revoked.stderr);
    assert!(revoked.stderr.contains("unauthenticated"), "{}", revoked.stderr);
    assert_eq!(ctl.run(&["token", "create", "--scope", "read"]).code, 1, "a scope without a tenant");

    // completions.
    let bash = ctl.run(&["completions", "bash"]).ok().stdout;
    assert!(bash.contains("hotlakectl") && bash.contains("rebalance"), "completion script");

    // Exit codes: rejected 1, usage 2, unreachable 3.
    let bad = ctl.run(&["shard", "show", "99"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("no shard 99"), "{}", bad.stderr);
    let bad = ctl.run(&["shard", "move", "1", "--from", "9", "--to", "1"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert_eq!(ctl.run(&["query", "m"]).code, 2, "missing --start/--end is a usage error");
    let down = Ctl { cluster: "127.0.0.1:9".into() };
    assert_eq!(down.run(&["health"]).code, 3);
}

#[test]
fn cluster_init_creates_the_cluster_on_a_node_started_for_manual_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start_unready(dir.path(), &["--shard-count", "4", "--bootstrap", "manual"]);
    let ctl = Ctl { cluster: node.grpc.clone() };
    // Up, but with no cluster: not healthy, and waiting for init.
    node.wait_listening(Duration::from_secs(30));
    assert_ne!(ctl.run(&["cluster", "status", "--wait-ready-s", "1"]).code, 0);
    let init = ctl.run(&["cluster", "init"]).ok();
    assert!(init.stdout.contains("created"), "{}", init.stdout);
    node.wait_healthy(Duration::from_secs(30));
    let again = ctl.run(&["cluster", "init"]).ok();
    assert!(again.stdout.contains("already exists"), "{}", again.stdout);
    ctl.run(&["cluster", "status", "--wait-ready-s", "30"]).ok();
}

/// The client library's typed admin calls: a bad change is refused with `invalid_argument`
/// and leaves the map as it was; reads agree with `hotlakectl`'s.
fn typed_admin_refuses_bad_changes_and_changes_nothing(grpc: &[String]) {
    use hotlake_client::{Client, ClientError, NodeState};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // The first address is down: the call moves on to the next one.
        let seeds = std::iter::once("127.0.0.1:9".to_string()).chain(grpc.iter().cloned());
        let admin = Client::builder().seeds(seeds).token(crate::support::TEST_TOKEN).admin().unwrap();
        let before = admin.cluster_status().await.unwrap();
        assert_eq!(before.readiness(), Ok(()));
        assert_eq!(before.members.len(), 3);
        let rejected = |r: Result<u64, ClientError>| match r {
            Err(ClientError::Rejected { kind, .. }) => assert_eq!(kind, "invalid_argument"),
            other => panic!("expected a rejection, got {other:?}"),
        };
        rejected(admin.set_node_state(2, NodeState::Unspecified).await);
        rejected(admin.add_node(0, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3").await);
        rejected(admin.move_replica(0, 1, 1).await);
        let after = admin.cluster_status().await.unwrap();
        assert_eq!(after.map_version, before.map_version, "a refused change left the map as it was");
        let leader = after.leader_of(0).expect("shard 0 has a leader");
        let addr = &after.member(leader).unwrap().grpc_addr;
        let digest = admin.shard_digest_at(addr, 0).await.unwrap();
        assert_eq!((digest.shard, digest.node), (0, leader));
    });
}

/// `tail --group` in a child process until `count` points, with writes one point each.
fn tail_group(ctl: &Ctl, node: &crate::support::NodeProcess, count: usize, first: usize) -> Vec<Value> {
    let mut child = Command::new(hotlakectl())
        .args(["--cluster", &ctl.cluster, "tail", "readings", "--db", "fleet", "--group", "ops"])
        .args(["--output", "json", "--count", &count.to_string()])
        .env("HOTLAKE_TOKEN", crate::support::TEST_TOKEN)
        .env("HOME", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Written once the member reads (the group starts now when it is new).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let groups = ctl.run(&["consumer", "list", "--db", "fleet", "--output", "json"]);
        if groups.code == 0 && groups.json()[0]["members"].as_array().is_some_and(|m| m.len() == 1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the tail never joined: {}", groups.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in first..first + count {
        let line = format!("readings,device_id=d{i} v={i}i {}\n", 1_700_000_000_000_000_000i64 + i as i64);
        assert_eq!(node.write("fleet", &line).status().as_u16(), 204);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "tail --count {count} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn tail_as_a_group_member_commits_what_it_printed_and_consumer_commands_show_and_move_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let node = crate::support::NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let ctl = Ctl { cluster: node.grpc.clone() };
    let values = |points: &[Value]| {
        let mut v: Vec<i64> = points.iter().map(|p| p["fields"]["v"].as_i64().unwrap()).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(values(&tail_group(&ctl, &node, 3, 0)), vec![0, 1, 2]);
    // The next member resumes after what the first printed and committed.
    assert_eq!(values(&tail_group(&ctl, &node, 2, 3)), vec![3, 4]);
    let show = ctl.run(&["consumer", "show", "ops", "--db", "fleet", "--output", "json"]).ok().json();
    assert!(show[0]["commits"].as_u64().unwrap() >= 2, "{show}");
    assert_eq!(show[0]["shards"].as_array().unwrap().len(), 4, "{show}");
    let table = ctl.run(&["consumer", "show", "ops", "--db", "fleet"]).ok().stdout;
    assert!(table.contains("COMMITTED") && table.contains("cursor: "), "{table}");
    ctl.run(&["consumer", "reset", "ops", "--db", "fleet", "--to", "now"]).ok();
    let bad = ctl.run(&["consumer", "reset", "ops", "--db", "fleet", "--to", "soon"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    ctl.run(&["consumer", "delete", "ops", "--db", "fleet"]).ok();
    let gone = ctl.run(&["consumer", "show", "ops", "--db", "fleet"]);
    assert_eq!(gone.code, 1, "{}", gone.stderr);
    assert!(gone.stderr.contains("no consumer group"), "{}", gone.stderr);
}

/// Runs hotlakectl with only `args` and the config file `config` (no cluster flags, no token
/// in the environment): what the contexts name is all it has.
fn run_with_config(config: &std::path::Path, args: &[&str]) -> Run {
    Run::of(Command::new(hotlakectl()).arg("--config").arg(config).args(args).env_remove("HOTLAKE_TOKEN"))
}

#[test]
fn contexts_name_several_clusters_and_all_contexts_shows_each() {
    let dir = tempfile::tempdir().unwrap();
    let eu = NodeProcess::start(&dir.path().join("eu"), &["--shard-count", "4"]);
    let us = NodeProcess::start(&dir.path().join("us"), &["--shard-count", "4"]);
    let token = crate::support::token_file(&dir.path().join("any"));
    let config = dir.path().join("ctl/hotlakectl.toml");
    let token_arg = token.to_str().unwrap();
    run_with_config(&config, &["context", "add", "eu", "--cluster", &eu.grpc, "--token-file", token_arg]).ok();
    run_with_config(&config, &["context", "add", "us", "--cluster", &us.grpc, "--token-file", token_arg]).ok();

    let list = run_with_config(&config, &["context", "list", "--output", "json"]).ok().json();
    let names: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["current"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("eu", "*"), ("us", "")], "the first context added is current: {list}");

    // The current context, then another by flag: each reaches its own cluster.
    let cluster_id = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["cluster", "status", "--wait-ready-s", "60", "--output", "json"]);
        let s = run_with_config(&config, &all).ok().json();
        (s["cluster_id"].as_u64().unwrap(), s["members"][0]["grpc_addr"].as_str().unwrap().to_string())
    };
    let (eu_id, eu_addr) = cluster_id(&[]);
    let (us_id, us_addr) = cluster_id(&["--context", "us"]);
    assert_eq!((eu_addr.as_str(), us_addr.as_str()), (eu.grpc.as_str(), us.grpc.as_str()));
    assert_ne!(eu_id, us_id);
    run_with_config(&config, &["context", "use", "us"]).ok();
    assert_eq!(cluster_id(&[]).0, us_id);

    // Every context in one table, one row each, both ready.
    let all = run_with_config(&config, &["--all-contexts", "cluster", "status", "--output", "json"]).ok().json();
    let rows: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["context"].as_str().unwrap().into(), r["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(rows, [("eu".into(), "ready".into()), ("us".into(), "ready".into())], "{all}");

    // A context whose cluster is gone shows as unreachable, and the command says so (exit 3).
    let gone = crate::support::NodeProcess::free_addrs().grpc;
    run_with_config(&config, &["context", "add", "gone", "--cluster", &gone, "--timeout-s", "2"]).ok();
    let r = run_with_config(&config, &["--all-contexts", "cluster", "status"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.lines().any(|l| l.starts_with("gone") && l.contains("unreachable")), "{}", r.stdout);

    // Bad input changes nothing: an unknown context, --all-contexts with another command.
    let before = std::fs::read_to_string(&config).unwrap();
    let r = run_with_config(&config, &["--context", "asia", "health"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no context \"asia\"") && r.stderr.contains("eu, gone, us"), "{}", r.stderr);
    assert_eq!(run_with_config(&config, &["--all-contexts", "health"]).code, 2);
    assert_eq!(run_with_config(&config, &["context", "use", "asia"]).code, 2);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
}
