//! `hotlake`: runs a Hotlake node.
//!
//! ```text
//! hotlake serve [--config FILE] [--data-dir DIR] [--grpc-addr ADDR] [--http-addr ADDR] [--join ADDR] ...
//! hotlake config                     # print the default configuration as TOML
//! hotlake cert ca|node ...            # a cluster CA and node certificates
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hotlake_node::config::Config;
use hotlake_node::node::Node;

// The write path allocates many small, short-lived buffers from several threads; mimalloc
// keeps that off glibc malloc's arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hotlake: a distributed time-series database for device telemetry.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until SIGINT or SIGTERM; on either it stops taking writes, flushes every shard
    /// and exits.
    ///
    /// Example: hotlake serve --data-dir /var/lib/hotlake --http-addr 127.0.0.1:7181
    Serve(Box<ServeArgs>),
    /// Print the default configuration (a commented sample is deploy/hotlake.toml).
    Config,
    /// Make a cluster CA and node certificates for a test or small cluster (the `[tls]` files).
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Make a cluster CA: DIR/ca.pem (give it to every node as tls.ca_file, and to clients)
    /// and DIR/ca.key (keep it off the nodes). Existing files are never overwritten.
    ///
    /// Example: hotlake cert ca --dir /etc/hotlake/ca
    Ca {
        /// Directory for ca.pem and ca.key (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Make a node certificate signed by the CA: OUT/NAME.pem and OUT/NAME.key (tls.cert_file
    /// and tls.key_file). It serves the node's listeners and authenticates it to other nodes.
    ///
    /// Example: hotlake cert node --ca-dir /etc/hotlake/ca --name node1 --host 10.0.0.1 --host node1.example --out /etc/hotlake
    Node {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// File name of the certificate and key (without extension).
        #[arg(long)]
        name: String,
        /// An IP address or DNS name the node is reached at (repeat or separate with commas);
        /// every host of its gRPC, HTTP and peer addresses.
        #[arg(long, value_delimiter = ',', required = true)]
        host: Vec<String>,
        /// Directory for the files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags given here override it.
    #[arg(long, env = "HOTLAKE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the node's data (created if missing).
    #[arg(long, env = "HOTLAKE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7101].
    #[arg(long)]
    grpc_addr: Option<String>,
    /// HTTP listen address [default: 127.0.0.1:7181].
    #[arg(long)]
    http_addr: Option<String>,
    /// Node-to-node listen address (Raft, forwarded calls, joins); other nodes' --join names
    /// it. Open it to the other nodes only [default: 127.0.0.1:7191].
    #[arg(long)]
    peer_addr: Option<String>,
    /// Host name or IP address other nodes and clients reach this node by, with the listen
    /// ports; required when listening on 0.0.0.0 (containers, Kubernetes pods)
    /// [default: the listen addresses as they are].
    ///
    /// Example: hotlake serve --grpc-addr 0.0.0.0:7101 --http-addr 0.0.0.0:7181 --peer-addr 0.0.0.0:7191 --advertise-host hotlake-0.hotlake
    #[arg(long, env = "HOTLAKE_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// This node's id [default: 1].
    #[arg(long)]
    node_id: Option<u64>,
    /// Shards on the ring; only used when the data directory is created [default: 64].
    #[arg(long)]
    shard_count: Option<u32>,
    /// Peer address (--peer-addr) of a cluster member to join through (repeat or separate with
    /// commas). Without it, a node whose data directory holds no cluster bootstraps a new
    /// one-node cluster.
    ///
    /// Example: hotlake serve --node-id 2 --grpc-addr 127.0.0.2:7101 --peer-addr 127.0.0.2:7191 --join 127.0.0.1:7191
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// `auto` creates a cluster at start when there is none and no --join; `manual` waits for
    /// `hotlakectl cluster init` [default: auto].
    ///
    /// Example: hotlake serve --node-id 1 --bootstrap manual --join 127.0.0.2:7191,127.0.0.3:7191
    #[arg(long, value_parser = ["auto", "manual"])]
    bootstrap: Option<String>,
    /// Replicas per shard; used when bootstrapping [default: 3].
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Flush a shard's memtable at this size in bytes [default: 33554432].
    #[arg(long)]
    shard_memtable_bytes_max: Option<u64>,
    /// Create the cluster without authentication: anyone who can reach a node may read, write
    /// and change everything. For local experiments only; fixed when the cluster is created,
    /// and every node of such a cluster must be started with it.
    #[arg(long)]
    insecure_no_auth: bool,
    /// When this node creates the cluster: read the first admin token from this file if it
    /// exists, else make one up and write it there (owner-only). Without it the token is
    /// printed once on stdout.
    ///
    /// Example: hotlake serve --auth-bootstrap-token-file /etc/hotlake/admin.token
    #[arg(long)]
    auth_bootstrap_token_file: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): TLS on every listener and mutual TLS between nodes,
    /// with --tls-cert-file and --tls-key-file (see `hotlake cert`).
    #[arg(long, env = "HOTLAKE_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// This node's certificate chain (PEM), signed by the cluster CA.
    #[arg(long, env = "HOTLAKE_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, env = "HOTLAKE_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// Log filter, e.g. `info` or `hotlake_node=debug`.
    #[arg(long, env = "HOTLAKE_LOG", default_value = "info,openraft=warn")]
    log: String,
}

fn build_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(a) = &args.grpc_addr {
        config.grpc_addr = a.clone();
    }
    if let Some(a) = &args.http_addr {
        config.http_addr = a.clone();
    }
    if let Some(a) = &args.peer_addr {
        config.peer_addr = a.clone();
    }
    if let Some(h) = &args.advertise_host {
        config.advertise_host = h.clone();
    }
    if let Some(f) = &args.tls_ca_file {
        config.tls.ca_file = f.clone();
    }
    if let Some(f) = &args.tls_cert_file {
        config.tls.cert_file = f.clone();
    }
    if let Some(f) = &args.tls_key_file {
        config.tls.key_file = f.clone();
    }
    if let Some(n) = args.node_id {
        config.node_id = n;
    }
    if let Some(n) = args.shard_count {
        config.shard_count = n;
    }
    if !args.join.is_empty() {
        config.cluster.join = args.join.clone();
    }
    if let Some(b) = &args.bootstrap {
        config.cluster.bootstrap = b.clone();
    }
    if let Some(n) = args.replication_factor {
        config.cluster.replication_factor = n;
    }
    if let Some(n) = args.shard_memtable_bytes_max {
        config.storage.shard_memtable_bytes_max = n;
    }
    if args.insecure_no_auth {
        config.auth.enabled = false;
    }
    if let Some(f) = &args.auth_bootstrap_token_file {
        config.auth.bootstrap_token_file = f.clone();
    }
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    let grpc_addr: SocketAddr =
        config.grpc_addr.parse().with_context(|| format!("grpc_addr {:?}", config.grpc_addr))?;
    let http_addr: SocketAddr =
        config.http_addr.parse().with_context(|| format!("http_addr {:?}", config.http_addr))?;
    let peer_addr: SocketAddr =
        config.peer_addr.parse().with_context(|| format!("peer_addr {:?}", config.peer_addr))?;
    let rocks_options = hotlake_storage_rocks::RocksOptions {
        block_cache_bytes: config.storage.block_cache_bytes as usize,
        write_buffer_bytes: config.storage.rocksdb_write_buffer_bytes as usize,
        ..Default::default()
    };
    let engine = hotlake_storage_rocks::RocksEngine::open(&config.data_dir, &rocks_options)
        .with_context(|| format!("open data directory {}", config.data_dir.display()))?;
    let node = Node::open(config.clone(), Arc::new(engine)).await?;
    node.start_background();

    // Every listener is bound before the node is announced ready (the message below, systemd's
    // READY=1): a client told the node is ready must find each port taking connections.
    let http_listener =
        tokio::net::TcpListener::bind(http_addr).await.with_context(|| format!("bind HTTP on {http_addr}"))?;
    let grpc_listener = hotlake_node::server::bind(grpc_addr, "gRPC")?;
    let peer_listener = hotlake_node::server::bind(peer_addr, "peer")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc = tokio::spawn(hotlake_node::server::serve_grpc(node.clone(), grpc_listener, wait_stop(stop_rx.clone())));
    let peer = hotlake_node::runtimes::spawn_raft(hotlake_node::server::serve_peer(
        node.clone(),
        peer_listener,
        wait_stop(stop_rx.clone()),
    ));
    let http = tokio::spawn(hotlake_node::server::serve_http(node.clone(), http_listener, wait_stop(stop_rx)));
    let (scheme, tls) = match config.tls.enabled() {
        true => ("https", "TLS on every listener; mutual TLS between nodes"),
        false => ("http", "no TLS: keep these ports on a private network"),
    };
    println!(
        "hotlake node {} ready ({tls})\n  HTTP  {scheme}://{}   (line protocol: POST /write?db=NAME, queries: POST /api/v1/query)\n  gRPC  {scheme}://{}\n  peer  {}   (other nodes only)\n  data  {}",
        config.node_id,
        http_addr,
        grpc_addr,
        peer_addr,
        config.data_dir.display()
    );
    hotlake_node::systemd::ready(&format!("serving HTTP on {http_addr}, gRPC on {grpc_addr}"));
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: flushing memtables"),
        r = grpc => { r??; anyhow::bail!("gRPC server stopped unexpectedly") }
        r = peer => { r??; anyhow::bail!("peer server stopped unexpectedly") }
    }
    hotlake_node::systemd::stopping();
    let _ = stop_tx.send(true);
    let _ = http.await;
    node.shutdown().await.context("flush on shutdown")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            Ok(())
        }
        Command::Cert(CertCommand::Ca { dir, days }) => {
            let (cert, key) = hotlake_node::certs::make_ca(&dir, days)?;
            println!("CA certificate {} (tls.ca_file of every node; clients' --ca-file)", cert.display());
            println!("CA key         {} (signs node certificates; keep it off the nodes)", key.display());
            Ok(())
        }
        Command::Cert(CertCommand::Node { ca_dir, name, host, out, days }) => {
            let (cert, key) = hotlake_node::certs::make_node(&ca_dir, &out, &name, &host, days)?;
            println!("node certificate {} (tls.cert_file)", cert.display());
            println!("node key         {} (tls.key_file)", key.display());
            Ok(())
        }
        Command::Serve(args) => {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()))
                // A condition that persists logs from the same place over and over: at most 5
                // lines per place every 10 s, then a count of those left out.
                .with(hotlake_node::log_limit::RateLimitLayer::new(std::time::Duration::from_secs(10), 5))
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .init();
            // Blocking work here is per-shard query execution: CPU-bound, so more
            // threads than a few per core only switch between them and each keeps its own
            // allocator cache (tokio's default allows 512).
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads((cores * 4).max(8))
                .build()
                .context("start runtime")?;
            // Raft on threads of its own (see `hotlake_node::runtimes`); its blocking pool runs
            // flushes and snapshot staging.
            let raft_runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores.clamp(1, 2))
                .thread_name("hotlake-raft")
                .enable_all()
                .max_blocking_threads((cores * 2).max(4))
                .build()
                .context("start Raft runtime")?;
            hotlake_node::runtimes::install(runtime.handle().clone(), raft_runtime.handle().clone());
            let served = runtime.block_on(serve(*args));
            raft_runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            served
        }
    }
}
