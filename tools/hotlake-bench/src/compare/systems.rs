//! Starting, measuring and stopping the systems under comparison: a Hotlake node, InfluxDB 1.x
//! and single-node VictoriaMetrics, each on loopback with a fresh data directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Loopback ports of the systems; one system runs at a time, but each keeps its own ports so a
/// leftover process of one run cannot answer for another.
pub struct Ports {
    /// Hotlake HTTP.
    pub hotlake_http: u16,
    /// Hotlake gRPC.
    pub hotlake_grpc: u16,
    /// Hotlake node-to-node.
    pub hotlake_peer: u16,
    /// InfluxDB HTTP.
    pub influx_http: u16,
    /// InfluxDB's RPC port (backup/restore), bound on loopback too.
    pub influx_rpc: u16,
    /// VictoriaMetrics HTTP.
    pub victoria_http: u16,
}

/// Default ports, away from the ones `scripts/run` and the tests use.
pub const PORTS: Ports = Ports {
    hotlake_http: 17381,
    hotlake_grpc: 17301,
    hotlake_peer: 17391,
    influx_http: 17386,
    influx_rpc: 17388,
    victoria_http: 17428,
};

/// CPU time and memory of a running server process.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Usage {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// One server process with its data directory, log and config file, removed when dropped.
struct Proc {
    child: Child,
    data_dir: PathBuf,
    log: PathBuf,
}

/// A file or directory next to a data directory: `{data_dir}.{extension}`.
fn beside(data_dir: &Path, extension: &str) -> PathBuf {
    data_dir.with_extension(extension)
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(token_file(&self.data_dir));
        let _ = std::fs::remove_file(beside(&self.data_dir, "toml"));
    }
}

/// A system under test: one server process, or the nodes of a Hotlake cluster.
pub struct Server {
    /// Display name with version, e.g. `influxdb 1.6.7`.
    pub label: String,
    /// `host:port` of the HTTP API of every process (writers spread over them).
    pub http: Vec<String>,
    /// `host:port` of a gRPC API (Hotlake only).
    pub grpc: Option<String>,
    /// When a write is acknowledged, in words.
    pub durability: &'static str,
    /// The admin token of a Hotlake cluster started with authentication on.
    pub token: Option<String>,
    procs: Vec<Proc>,
    flush: Flush,
}

/// How a server is made to put everything on disk before its size is measured.
enum Flush {
    /// SIGTERM: Hotlake flushes every memtable on a graceful stop.
    Terminate,
    /// Wait until the write-ahead log is snapshotted into TSM files (cold after a few seconds
    /// without writes, per the generated config), then SIGTERM.
    WaitInfluxSnapshot,
    /// `GET /internal/force_flush`, then SIGTERM (VictoriaMetrics flushes on a graceful stop).
    VictoriaEndpoint,
}

fn fresh_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hotlake-compare-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn check_port_free(port: u16) -> anyhow::Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("port 127.0.0.1:{port} is taken: stop what listens there first"))
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))
}

/// Waits until `GET url` answers 2xx, or the process exits, or `timeout` passes.
fn wait_ready(child: &mut Child, url: &str, timeout: Duration, log: &Path) -> anyhow::Result<()> {
    let http = crate::token::http_client_with(Duration::from_secs(2), None)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            bail!("exited with {status} before it was ready; its log ends:\n{tail}");
        }
        if http.get(url).send().is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("not ready after {} s ({url})", timeout.as_secs())
}

/// Starts Hotlake node `n` (1-based: ports are the base ports plus `n - 1`), joining the
/// cluster at peer address `join` when given; returns its HTTP, gRPC and peer addresses once
/// it answers.
/// With `auth`, node 1 creates the cluster with authentication on and writes its admin token
/// beside its data directory (see [`hotlake_token`]); without, every node runs with
/// `--insecure-no-auth`.
fn start_hotlake_node(
    bin: &Path,
    ports: &Ports,
    n: u16,
    join: Option<&str>,
    auth: bool,
) -> anyhow::Result<(String, String, Proc, String)> {
    let (http_port, grpc_port, peer_port) =
        (ports.hotlake_http + n - 1, ports.hotlake_grpc + n - 1, ports.hotlake_peer + n - 1);
    check_port_free(http_port)?;
    check_port_free(grpc_port)?;
    check_port_free(peer_port)?;
    let data_dir = fresh_dir(&format!("hotlake{n}"))?;
    let log = data_dir.with_extension("log");
    let http = format!("127.0.0.1:{http_port}");
    let grpc = format!("127.0.0.1:{grpc_port}");
    let peer = format!("127.0.0.1:{peer_port}");
    // Defaults but for the device key: a TSBS truck is identified by its `name` tag, so its
    // series live on one shard and a query naming a truck asks that shard alone.
    let config = beside(&data_dir, "toml");
    std::fs::write(&config, "device_tag = \"name\"\n")?;
    let mut args: Vec<String> = [
        "serve",
        "--config",
        &config.display().to_string(),
        "--node-id",
        &n.to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend([
        "--http-addr".into(),
        http.clone(),
        "--grpc-addr".into(),
        grpc.clone(),
        "--peer-addr".into(),
        peer.clone(),
        "--log".into(),
        "warn".into(),
    ]);
    if let Some(seed) = join {
        args.extend(["--join".into(), seed.to_string()]);
    }
    if auth {
        args.extend(["--auth-bootstrap-token-file".into(), token_file(&data_dir).display().to_string()]);
    } else {
        args.push("--insecure-no-auth".into());
    }
    if let Some(pki) = crate::token::tls_dir() {
        let file = |name: String| pki.join(name).display().to_string();
        args.extend([
            "--tls-ca-file".into(),
            file("ca.pem".into()),
            "--tls-cert-file".into(),
            file(format!("node{n}.pem")),
            "--tls-key-file".into(),
            file(format!("node{n}.key")),
        ]);
    }
    let mut child = spawn(bin, &args, &log)?;
    let health = format!("{}://{http}/health", crate::token::scheme());
    let ready = wait_ready(&mut child, &health, Duration::from_secs(120), &log);
    let proc = Proc { child, data_dir, log };
    ready.with_context(|| format!("hotlake node {n}"))?;
    Ok((http, grpc, proc, peer))
}

/// A CA and certificates for `nodes` nodes on 127.0.0.1 (`hotlake cert`), in a fresh
/// directory, for a run with TLS.
pub fn make_pki(bin: &Path, nodes: u16) -> anyhow::Result<PathBuf> {
    let dir = fresh_dir("pki")?;
    let d = dir.display().to_string();
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out =
            Command::new(bin).arg("cert").args(args).output().with_context(|| format!("run {}", bin.display()))?;
        anyhow::ensure!(out.status.success(), "hotlake cert {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    run(&["ca", "--dir", &d])?;
    for n in 1..=nodes {
        run(&["node", "--ca-dir", &d, "--name", &format!("node{n}"), "--host", "127.0.0.1", "--out", &d])?;
    }
    Ok(dir)
}

/// Where node `data_dir`'s admin token is written when it creates the cluster.
fn token_file(data_dir: &Path) -> PathBuf {
    beside(data_dir, "token")
}

/// The admin token node 1 wrote when it created the cluster (with authentication on).
fn hotlake_token(node1: &Proc, auth: bool) -> anyhow::Result<Option<String>> {
    if !auth {
        return Ok(None);
    }
    let file = token_file(&node1.data_dir);
    let text = std::fs::read_to_string(&file).with_context(|| format!("read the admin token {}", file.display()))?;
    Ok(Some(text.trim().to_string()))
}

/// Finds a program: a path as given, else a name looked up in `PATH`.
pub fn locate(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|c| c.is_file())
}

/// The version of an installed Debian package, if any.
pub fn package_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Version}", package]).output().ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !v.is_empty()).then_some(v)
}

impl Server {
    /// One Hotlake node with default settings: every write acknowledged after its Raft log
    /// entry is synced to disk.
    pub fn start_hotlake(bin: &Path, ports: &Ports, label: &str, auth: bool) -> anyhow::Result<Server> {
        let node = start_hotlake_node(bin, ports, 1, None, auth)?;
        Ok(Server {
            label: label.into(),
            http: vec![node.0],
            grpc: Some(node.1),
            durability: "ack after the Raft log entry is fsynced",
            token: hotlake_token(&node.2, auth)?,
            procs: vec![node.2],
            flush: Flush::Terminate,
        })
    }

    /// `nodes` Hotlake nodes on loopback forming one cluster (replication factor 3, the
    /// default): node 1 bootstraps it, the others join; returns once every shard has its
    /// replicas placed and a leader (`hotlakectl cluster status --wait-ready-s`). A write is
    /// acknowledged once a majority of its shard's replicas fsynced it.
    pub fn start_hotlake_cluster(
        bin: &Path,
        ctl: &Path,
        ports: &Ports,
        nodes: u16,
        auth: bool,
    ) -> anyhow::Result<Server> {
        let mut started = vec![start_hotlake_node(bin, ports, 1, None, auth)?];
        let (seed, seed_peer) = (started[0].1.clone(), started[0].3.clone());
        let token = hotlake_token(&started[0].2, auth)?;
        for n in 2..=nodes {
            started.push(start_hotlake_node(bin, ports, n, Some(&seed_peer), auth)?);
        }
        let mut status = Command::new(ctl);
        if auth {
            status.arg("--token-file").arg(token_file(&started[0].2.data_dir));
        }
        if let Some(pki) = crate::token::tls_dir() {
            status.arg("--ca-file").arg(pki.join("ca.pem"));
        }
        let status = status
            .args(["--cluster", &seed, "cluster", "status", "--wait-ready-s", "300", "--wait-nodes"])
            .arg(nodes.to_string())
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("run {}", ctl.display()))?;
        if !status.success() {
            bail!("the {nodes}-node cluster did not become ready within 300 s");
        }
        Ok(Server {
            label: format!("hotlake, {nodes} nodes, RF=3"),
            http: started.iter().map(|n| n.0.clone()).collect(),
            grpc: Some(seed),
            durability: "ack after a majority of the shard's replicas fsynced the Raft log entry",
            token,
            procs: started.into_iter().map(|n| n.2).collect(),
            flush: Flush::Terminate,
        })
    }

    fn single(label: String, http: String, durability: &'static str, proc: Proc, flush: Flush) -> Server {
        Server { label, http: vec![http], grpc: None, durability, token: None, procs: vec![proc], flush }
    }

    /// InfluxDB 1.x with its default durability (`wal-fsync-delay = 0s`: the WAL is fsynced
    /// before every write is acknowledged), the in-memory index, no limits on series, and the
    /// cache snapshotted to TSM files after 5 s without writes so its size on disk can be read.
    pub fn start_influxdb(bin: &Path, ports: &Ports, version: &str) -> anyhow::Result<Server> {
        check_port_free(ports.influx_http)?;
        check_port_free(ports.influx_rpc)?;
        let data_dir = fresh_dir("influxdb")?;
        let log = data_dir.with_extension("log");
        let http = format!("127.0.0.1:{}", ports.influx_http);
        let d = data_dir.display();
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "10s"
  max-series-per-database = 0
  max-values-per-tag = 0
[coordinator]
  query-timeout = "0s"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[http]
  bind-address = "{http}"
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
  suppress-logo = true
"#,
            rpc = ports.influx_rpc,
        );
        let config_path = data_dir.join("influxdb.conf");
        std::fs::write(&config_path, config)?;
        let mut child = spawn(bin, &["-config".into(), config_path.display().to_string()], &log)?;
        let ready = wait_ready(&mut child, &format!("http://{http}/ping"), Duration::from_secs(60), &log);
        let proc = Proc { child, data_dir, log };
        ready.context("influxd")?;
        let r = reqwest::blocking::Client::new()
            .post(format!("http://{http}/query"))
            .form(&[("q", "CREATE DATABASE bench")])
            .send()?;
        if !r.status().is_success() {
            bail!("influxd: CREATE DATABASE failed: {}", r.text().unwrap_or_default());
        }
        Ok(Server::single(
            format!("influxdb {version}"),
            http,
            "ack after the WAL is fsynced (wal-fsync-delay = 0s, the default)",
            proc,
            Flush::WaitInfluxSnapshot,
        ))
    }

    /// Single-node VictoriaMetrics with default settings but a 100-year retention (the data
    /// set is dated 2016) and no query result cache (each query is measured, not its cache).
    pub fn start_victoria(bin: &Path, ports: &Ports, version: &str) -> anyhow::Result<Server> {
        check_port_free(ports.victoria_http)?;
        let data_dir = fresh_dir("victoriametrics")?;
        let log = data_dir.with_extension("log");
        let http = format!("127.0.0.1:{}", ports.victoria_http);
        let args: Vec<String> = vec![
            format!("-storageDataPath={}", data_dir.display()),
            format!("-httpListenAddr={http}"),
            "-retentionPeriod=100y".into(),
            "-search.disableCache".into(),
            "-search.maxQueryDuration=600s".into(),
            "-loggerLevel=WARN".into(),
        ];
        let mut child = spawn(bin, &args, &log)?;
        let ready = wait_ready(&mut child, &format!("http://{http}/health"), Duration::from_secs(60), &log);
        let proc = Proc { child, data_dir, log };
        ready.context("victoria-metrics")?;
        Ok(Server::single(
            format!("victoriametrics {version}"),
            http,
            "ack when buffered in memory; flushed to disk about every second",
            proc,
            Flush::VictoriaEndpoint,
        ))
    }

    /// Makes every acknowledged write visible to queries. VictoriaMetrics buffers rows for
    /// about a second before they can be searched; the others show them at once.
    pub fn settle(&self) -> anyhow::Result<()> {
        if let Flush::VictoriaEndpoint = self.flush {
            reqwest::blocking::Client::new()
                .get(format!("http://{}/internal/force_flush", self.http[0]))
                .send()
                .context("victoria-metrics force_flush")?;
        }
        Ok(())
    }

    /// CPU seconds and peak RSS so far, from `/proc`, summed over the processes (for a
    /// cluster the RSS is the sum of each node's peak).
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let mut total = Usage::default();
        for p in &self.procs {
            let u = proc_usage(p.child.id())?;
            total.cpu_s += u.cpu_s;
            total.peak_rss_bytes += u.peak_rss_bytes;
        }
        Ok(total)
    }

    /// Puts everything on disk, stops the server and returns the bytes its data directory
    /// takes on disk.
    pub fn flush_and_stop(mut self) -> anyhow::Result<u64> {
        match self.flush {
            Flush::Terminate => {}
            Flush::WaitInfluxSnapshot => self.wait_influx_snapshot()?,
            Flush::VictoriaEndpoint => {
                reqwest::blocking::Client::new()
                    .get(format!("http://{}/internal/force_flush", self.http[0]))
                    .send()
                    .context("victoria-metrics force_flush")?;
            }
        }
        self.terminate(Duration::from_secs(300))?;
        self.procs.iter().map(|p| dir_bytes(&p.data_dir)).sum()
    }

    /// InfluxDB snapshots its cache into TSM files once a shard has had no writes for the cold
    /// duration; then the WAL segments are removed. Waits for that and for compactions to
    /// settle (the data directory unchanged for 10 s).
    fn wait_influx_snapshot(&self) -> anyhow::Result<()> {
        let wal = self.procs[0].data_dir.join("wal");
        let data = self.procs[0].data_dir.join("data");
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut last = (u64::MAX, Instant::now());
        while Instant::now() < deadline {
            let wal_bytes = dir_bytes(&wal).unwrap_or(0);
            let data_bytes = dir_bytes(&data).unwrap_or(0);
            if data_bytes != last.0 {
                last = (data_bytes, Instant::now());
            }
            if wal_bytes <= 64 * 1024 && last.1.elapsed() >= Duration::from_secs(10) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("influxd did not snapshot its WAL within 600 s")
    }

    /// SIGTERM to every process, then waits for all of them.
    fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for p in &self.procs {
            let _ = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status();
        }
        let deadline = Instant::now() + timeout;
        for p in &mut self.procs {
            while p.child.try_wait()?.is_none() {
                if Instant::now() >= deadline {
                    let _ = p.child.kill();
                    bail!(
                        "{} did not stop within {} s of SIGTERM (see {})",
                        self.label,
                        timeout.as_secs(),
                        p.log.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// Bytes allocated to every file under `dir`, as `du` counts them. File lengths would count
/// the holes of sparse files (InfluxDB creates its series-file segments sparse, at full size).
pub fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// CPU seconds and peak RSS of one process.
fn proc_usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
    let cpu_s = (ticks(11) + ticks(12)) as f64 / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Usage { cpu_s, peak_rss_bytes: peak_kib * 1024 })
}
