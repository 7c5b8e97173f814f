//! A private test network: one network namespace per node, joined by a bridge in a namespace of
//! its own, plus a link from the test's namespace so the test reaches every node. Partitions are
//! blackhole routes inside the namespaces, so the test keeps reaching a partitioned node.
//!
//! ```text
//!  test (root ns) 10.213.S.254 ──veth──┐
//!                                  [bridge ns: br0]
//!        node ns 1: 10.213.S.1 ──veth──┤── node ns 2: 10.213.S.2 ── node ns 3: 10.213.S.3
//! ```
//!
//! Needs root (CI runs as root). Everything is removed on drop.

use std::process::Command;

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}; this test needs root and network namespaces (iproute2)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private network of `nodes` namespaces.
pub struct TestNet {
    tag: String,
    subnet: u32,
    nodes: u64,
}

impl TestNet {
    /// Creates the namespaces, links and addresses.
    pub fn create(nodes: u64) -> TestNet {
        let pid = std::process::id();
        let net = TestNet { tag: format!("hl{}", pid % 10_000), subnet: pid % 250 + 1, nodes };
        let bridge_ns = net.bridge_ns();
        run(&["ip", "netns", "add", &bridge_ns]);
        run(&["ip", "netns", "exec", &bridge_ns, "ip", "link", "set", "lo", "up"]);
        run(&["ip", "netns", "exec", &bridge_ns, "ip", "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "netns", "exec", &bridge_ns, "ip", "link", "set", "br0", "up"]);
        let root_side = format!("{}r", net.tag);
        run(&["ip", "link", "add", &root_side, "type", "veth", "peer", "name", "up0", "netns", &bridge_ns]);
        run(&["ip", "addr", "add", &format!("10.213.{}.254/24", net.subnet), "dev", &root_side]);
        run(&["ip", "link", "set", &root_side, "up"]);
        run(&["ip", "netns", "exec", &bridge_ns, "ip", "link", "set", "up0", "master", "br0", "up"]);
        for node in 1..=nodes {
            let ns = net.node_ns(node);
            let link = format!("{}v{node}", net.tag);
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "link", "add", &link, "netns", &bridge_ns, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            run(&["ip", "netns", "exec", &bridge_ns, "ip", "link", "set", &link, "master", "br0", "up"]);
            run(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{}/24", net.ip(node)), "dev", "eth0"]);
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up"]);
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        net
    }

    fn bridge_ns(&self) -> String {
        format!("{}b", self.tag)
    }

    fn node_ns(&self, node: u64) -> String {
        format!("{}n{node}", self.tag)
    }

    /// Address of `node`.
    pub fn ip(&self, node: u64) -> String {
        format!("10.213.{}.{node}", self.subnet)
    }

    /// The command prefix that runs a program in `node`'s namespace.
    pub fn prefix(&self, node: u64) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.node_ns(node)]
    }

    fn routes(&self, node: u64, verb: &str) {
        for other in (1..=self.nodes).filter(|o| *o != node) {
            let (ns, other_ns) = (self.node_ns(node), self.node_ns(other));
            run(&["ip", "netns", "exec", &ns, "ip", "route", verb, "blackhole", &format!("{}/32", self.ip(other))]);
            run(&[
                "ip",
                "netns",
                "exec",
                &other_ns,
                "ip",
                "route",
                verb,
                "blackhole",
                &format!("{}/32", self.ip(node)),
            ]);
        }
    }

    /// Cuts `node` off from every other node, both ways; the test still reaches it.
    pub fn isolate(&self, node: u64) {
        self.routes(node, "add");
    }

    /// Undoes [`TestNet::isolate`].
    pub fn heal(&self, node: u64) {
        self.routes(node, "del");
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.node_ns(node)]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &format!("{}r", self.tag)]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.bridge_ns()]).status();
    }
}
