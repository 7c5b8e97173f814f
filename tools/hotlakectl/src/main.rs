//! `hotlakectl`: the operator's command line for a Hotlake cluster.
//!
//! Built on the client library: the cluster, node and shard commands use the typed
//! `hotlake.v1.Admin` service, `health` the data service's `Health` and `tail` its `Subscribe`;
//! `write`, `query` and `last` send line protocol and JSON queries to the members' HTTP API,
//! whose addresses come from the cluster map. The gRPC addresses of one or more members come from `--cluster`, else
//! `HOTLAKE_CLUSTER`, else the config file (`--config`, `HOTLAKECTL_CONFIG`, or
//! `~/.config/hotlake/hotlakectl.toml`), else the local cluster of `scripts/run`; the next
//! address is tried when one cannot be reached. A token comes from `--token`, `HOTLAKE_TOKEN`,
//! `--token-file`, `HOTLAKE_TOKEN_FILE` or the config file's `token_file`; a cluster with TLS
//! is reached with `--ca-file`, `HOTLAKE_CA_FILE` or the config file's `ca_file`.

mod access;
mod admin;
mod api;
mod consumer;
mod context;
mod data;
mod output;
mod tail;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use hotlake_client::{AdminClient, Client, ClientError, NodeState};

use crate::api::Api;
use crate::output::Output;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the cluster rejected the request (bad input, a limit, an impossible change); fix it first
  2  usage error (bad flags or arguments, unreadable input file)
  3  the cluster could not be reached or was unavailable; retrying later may help
  4  a waited-for state (--watch, --wait-ready-s) was not reached in time; the work goes on";

/// Command line for Hotlake clusters: status, membership, shards, data.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// gRPC addresses of cluster members, comma-separated (any member works).
    /// [default: the config file's `cluster`, else 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103]
    #[arg(long, global = true, env = "HOTLAKE_CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
    /// Config file with `cluster = ["host:port", ...]`, `timeout_s`, `token_file`, `ca_file`,
    /// and named clusters under `[contexts.NAME]` (see `hotlakectl context`).
    /// [default: ~/.config/hotlake/hotlakectl.toml when it exists]
    #[arg(long, global = true, env = "HOTLAKECTL_CONFIG")]
    config: Option<PathBuf>,
    /// Use the named cluster of the config file [default: its `current_context`, else its
    /// top-level settings]. Flags given beside it override the context's settings.
    #[arg(long, global = true, env = "HOTLAKE_CONTEXT")]
    context: Option<String>,
    /// With `cluster status`: ask every context of the config file and show one row each.
    ///
    /// Example: hotlakectl --all-contexts cluster status
    #[arg(long, global = true, conflicts_with_all = ["context", "cluster", "token", "token_file", "ca_file"])]
    all_contexts: bool,
    /// Give up on one request after this many seconds [default: 60].
    #[arg(long, global = true)]
    timeout_s: Option<u64>,
    /// Token to send (a cluster created with authentication on refuses requests without one).
    /// Prefer --token-file: a command line is visible to other users of the machine.
    #[arg(long, global = true, env = "HOTLAKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token (as `auth.bootstrap_token_file` writes it).
    /// [default: the config file's `token_file`]
    #[arg(long, global = true, env = "HOTLAKE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) of a cluster with TLS on: connect with TLS, trusting it
    /// (`hotlake cert ca` writes ca.pem). [default: the config file's `ca_file`]
    #[arg(long, global = true, env = "HOTLAKE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Show times in tables as nanoseconds since the epoch instead of RFC 3339 (CSV and JSON
    /// always carry nanoseconds).
    #[arg(long, global = true)]
    raw_time: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show whether every member is up and every shard has a leader.
    ///
    /// Example: hotlakectl health
    Health {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Write line protocol from a file or stdin, in batches spread over the members, with a
    /// progress bar (points/s, ETA) on stderr.
    ///
    /// Example: hotlakectl write --db fleet --file points.lp
    Write {
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
        /// File to read; `-` or absent reads stdin.
        #[arg(long)]
        file: Option<String>,
        /// Timestamp precision of the lines: ns, us, ms, s.
        #[arg(long, default_value = "ns")]
        precision: String,
        /// Lines per request.
        #[arg(long, default_value_t = 5000)]
        batch_lines: usize,
    },
    /// Query raw points or aggregates.
    ///
    /// Example: hotlakectl query readings --db fleet --field velocity --where fleet=East --start 2016-01-01T00:00:00Z --end 2016-01-02T00:00:00Z --agg mean --bucket 1h
    Query {
        #[command(flatten)]
        select: Selection,
        /// Field-value filter FIELD OP VALUE (repeatable; all must hold): only rows where it
        /// holds count. OP: <, <=, >, >=, =, != on numbers (booleans count as 0/1); =, != on
        /// booleans; =, !=, ^= (prefix), =~ and !~ (regex) on strings; or FIELD in A,B,C.
        /// VALUE is a number or true/false when it reads as one, a string otherwise; quote it
        /// to force a string. E.g. --filter 'velocity>1', --filter error=E_DECODER,
        /// --filter reboot=true, --filter "version='1.2'".
        #[arg(long = "filter")]
        field_filters: Vec<String>,
        /// Start: RFC 3339 or nanoseconds.
        #[arg(long)]
        start: String,
        /// End (exclusive): RFC 3339 or nanoseconds.
        #[arg(long)]
        end: String,
        /// Aggregate (repeatable): count, sum, min, max, mean, first, last, stddev, percentile.
        #[arg(long = "agg")]
        aggregates: Vec<String>,
        /// Quantile for percentile (0-100).
        #[arg(long)]
        percentile: Option<f64>,
        /// Bucket width, e.g. 10s, 1h.
        #[arg(long)]
        bucket: Option<String>,
        /// Tag to group by (repeatable).
        #[arg(long = "group-by")]
        group_by: Vec<String>,
        /// Rows per group.
        #[arg(long)]
        limit: Option<u64>,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// Answer from the shards that can, listing the others, instead of failing.
        #[arg(long)]
        partial: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Latest values per device matching a filter.
    ///
    /// Example: hotlakectl last readings --db fleet --where fleet=East --field latitude --field longitude
    Last {
        #[command(flatten)]
        select: Selection,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Follow what is written, as it is written: every point matching a filter, from now or
    /// from a cursor, until Ctrl-C. The last cursor goes to stderr; `--after` resumes there
    /// with nothing skipped or repeated.
    ///
    /// Example: hotlakectl tail readings --db fleet --where device_id=truck_1 --output json
    Tail(tail::TailArgs),
    /// The cluster as a whole.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Named clusters in the config file (like kubeconfig contexts): list, add, use, remove.
    ///
    /// Example: hotlakectl context add eu --cluster 10.1.0.1:7101 --ca-file eu/ca.pem --token-file eu/admin.token
    #[command(subcommand)]
    Context(ContextCommand),
    /// Member nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Shards and their replicas.
    #[command(subcommand)]
    Shard(ShardCommand),
    /// Tenants: the databases of the cluster, each with its retention.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tokens: who may read, write and administer which tenants.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Consumer groups: named subscriptions whose members share the shards and commit what
    /// they processed (`tail --group` is one such member).
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Show the placement changes still needed to balance replicas, and follow them until done.
    /// Placement is continuous (the cluster makes these moves by itself, a few shards at a
    /// time); this command shows and waits.
    ///
    /// Example: hotlakectl rebalance --dry-run
    Rebalance {
        /// Only show the moves.
        #[arg(long)]
        dry_run: bool,
        /// Stop following after this many seconds.
        #[arg(long, default_value_t = 600)]
        watch_s: u64,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print a shell completion script.
    ///
    /// Example: hotlakectl completions bash > /etc/bash_completion.d/hotlakectl
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// What `query` and `last` read: a measurement of a tenant, some fields, tag filters.
#[derive(clap::Args)]
struct Selection {
    /// Measurement.
    measurement: String,
    /// Tenant (database).
    #[arg(long, default_value = "default")]
    db: String,
    /// Field to return (repeatable); none returns all.
    #[arg(long = "field")]
    fields: Vec<String>,
    /// Tag filter `key=value`, `key!=value`, `key=~regex` or `key!~regex` (repeatable).
    #[arg(long = "where")]
    filters: Vec<String>,
}

impl Selection {
    /// The JSON request fields it sets.
    fn body(&self) -> Result<serde_json::Value, Failure> {
        Ok(json!({
            "tenant": self.db, "measurement": self.measurement, "fields": self.fields,
            "where": self.filters.iter().map(|f| data::parse_filter(f)).collect::<Result<Vec<_>, _>>()?,
        }))
    }
}

#[derive(Subcommand)]
enum ContextCommand {
    /// The contexts of the config file; `*` marks the current one.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Add a context (or replace the one of that name) from the connection flags given with
    /// it: --cluster (required), --ca-file, --token-file, --timeout-s. The file keeps the
    /// token file's path, never a token. The first context added becomes the current one.
    ///
    /// Example: hotlakectl context add us --cluster 10.2.0.1:7101,10.2.0.2:7101 --token-file us/admin.token
    Add {
        /// The context's name (letters, digits, '-', '_', '.').
        name: String,
    },
    /// Make a context the current one (used when --context is not given).
    ///
    /// Example: hotlakectl context use eu
    Use {
        /// The context's name.
        name: String,
    },
    /// Remove a context from the config file.
    Remove {
        /// The context's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create the cluster on a node started with `--bootstrap manual` (once, on one node).
    ///
    /// Example: hotlakectl --cluster 127.0.0.1:7101 cluster init
    Init,
    /// Every member: addresses, state, reachability, replicas and leaders it holds.
    ///
    /// Example: hotlakectl cluster status --wait-ready-s 60
    Status {
        /// Output format (`json` prints the whole answer, with every replica).
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// First wait up to this many seconds until the cluster is ready: every member up and
        /// every shard with its full set of voting replicas and a leader.
        #[arg(long, default_value_t = 0)]
        wait_ready_s: u64,
        /// With --wait-ready-s: also wait until the cluster has at least this many members.
        #[arg(long, default_value_t = 1)]
        wait_nodes: usize,
    },
    /// The cluster map: members and the placement of every shard.
    ///
    /// Example: hotlakectl cluster map --output json
    Map {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Every member with its state and replicas.
    ///
    /// Example: hotlakectl node list
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Register a node before starting it (a node started with --join registers itself).
    ///
    /// Example: hotlakectl node add 4 --grpc-addr 10.0.0.4:7101 --http-addr 10.0.0.4:7181 --peer-addr 10.0.0.4:7191
    Add {
        /// The node's id.
        id: u64,
        /// Its public gRPC address.
        #[arg(long)]
        grpc_addr: String,
        /// Its HTTP address.
        #[arg(long)]
        http_addr: String,
        /// Its node-to-node address.
        #[arg(long)]
        peer_addr: String,
    },
    /// Move a node's replicas to the other nodes; it stays a member (`node activate` undoes it).
    ///
    /// Example: hotlakectl node drain 3 --watch
    Drain {
        /// The node's id.
        id: u64,
        /// Follow until the node holds no replica.
        #[arg(long)]
        watch: bool,
        /// Stop following after this many seconds.
        #[arg(long, default_value_t = 1800)]
        watch_s: u64,
    },
    /// Decommission a node: its replicas move away (while writes go on), then it leaves the
    /// cluster. Stop its process afterwards; its data directory cannot rejoin.
    ///
    /// Example: hotlakectl node remove 4 --watch
    Remove {
        /// The node's id.
        id: u64,
        /// Follow until the node has left.
        #[arg(long)]
        watch: bool,
        /// Stop following after this many seconds.
        #[arg(long, default_value_t = 1800)]
        watch_s: u64,
    },
    /// Let a drained node take replicas again.
    ///
    /// Example: hotlakectl node activate 3
    Activate {
        /// The node's id.
        id: u64,
    },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// Every shard: replicas, leader, applied index, and whether it is moving.
    ///
    /// Example: hotlakectl shard list
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One shard's replicas: role, voters, applied and flushed index, memtable, digest.
    ///
    /// Example: hotlakectl shard show 7
    Show {
        /// The shard's id.
        id: u32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Hand a shard's leadership to another of its voters. Writes to the shard pause for about
    /// two election timeouts (they are retried, not failed) while the old leader's lease runs out.
    ///
    /// Example: hotlakectl shard transfer-leader 7 --to 3
    TransferLeader {
        /// The shard's id.
        id: u32,
        /// The voter that should lead.
        #[arg(long)]
        to: u64,
    },
    /// Move one replica of a shard to another node (the new replica catches up first, then
    /// the voters change). Replica counts are kept balanced, so another shard may later move
    /// back to the source node.
    ///
    /// Example: hotlakectl shard move 7 --from 2 --to 4 --watch
    Move {
        /// The shard's id.
        id: u32,
        /// Node that gives up its replica.
        #[arg(long)]
        from: u64,
        /// Node that takes it.
        #[arg(long)]
        to: u64,
        /// Follow until the move is done.
        #[arg(long)]
        watch: bool,
        /// Stop following after this many seconds.
        #[arg(long, default_value_t = 600)]
        watch_s: u64,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (needs admin:*). A first write to a new tenant also creates it.
    ///
    /// Example: hotlakectl tenant create fleet --retention-s 2592000
    Create {
        /// The tenant's name (1 to 255 bytes, no control characters).
        name: String,
        /// Drop points older than this many seconds (whole block windows); 0 keeps them forever.
        #[arg(long, default_value_t = 0)]
        retention_s: u64,
    },
    /// Change a tenant's retention (needs admin on the tenant).
    ///
    /// Example: hotlakectl tenant set fleet --retention-s 604800
    Set {
        /// The tenant's name.
        name: String,
        /// Drop points older than this many seconds (whole block windows); 0 keeps them forever.
        #[arg(long)]
        retention_s: u64,
    },
    /// The tenants this token administers, with their retention.
    ///
    /// Example: hotlakectl tenant list
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret, this once. The token creating it must administer
    /// every tenant named and hold every scope granted.
    ///
    /// Example: hotlakectl token create --name grafana --scope read:fleet
    Create {
        /// A label for people.
        #[arg(long, default_value = "")]
        name: String,
        /// `read:TENANT`, `write:TENANT` or `admin:TENANT`, `*` for every tenant (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The tokens this token administers: id, name, scopes, creation time (never secrets).
    ///
    /// Example: hotlakectl token list
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Revoke a token: requests carrying it are refused from then on.
    ///
    /// Example: hotlakectl token revoke 1234567890
    Revoke {
        /// The token's id (from `token list`).
        id: u64,
    },
}

#[derive(Subcommand)]
enum ConsumerCommand {
    /// The tenant's consumer groups: members, lag (log entries applied but not committed) and
    /// commits.
    ///
    /// Example: hotlakectl consumer list --db fleet
    List {
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One group shard by shard: committed position, applied index, lag, and the member
    /// reading it; then the committed cursor.
    ///
    /// Example: hotlakectl consumer show alerts --db fleet
    Show {
        /// The group.
        group: String,
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Move a group with no member reading: to `now` (skip what was not processed) or right
    /// after a cursor (to process again from there). Needs admin on the tenant.
    ///
    /// Example: hotlakectl consumer reset alerts --db fleet --to now
    Reset {
        /// The group.
        group: String,
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
        /// `now`, or a cursor (from `tail`, or `consumer show`).
        #[arg(long)]
        to: String,
    },
    /// Delete a group with no member reading, and its positions. Needs admin on the tenant.
    ///
    /// Example: hotlakectl consumer delete alerts --db fleet
    Delete {
        /// The group.
        group: String,
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
    },
}

/// Why a command failed; each maps to an exit code.
#[derive(Debug)]
pub enum Failure {
    Rejected(String),
    Usage(String),
    Unreachable(String),
    NotDone(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Rejected { .. } => Failure::Rejected(e.to_string()),
            _ => Failure::Unreachable(format!("{e}. Is the node running? Check --cluster / HOTLAKE_CLUSTER.")),
        }
    }
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Rejected(m) | Failure::Usage(m) | Failure::Unreachable(m) | Failure::NotDone(m) => m,
        }
    }
}

/// The config file's path, and whether it was named (then it must exist).
fn config_path(cli: &Cli) -> Option<(PathBuf, bool)> {
    match &cli.config {
        Some(p) => Some((p.clone(), true)),
        None => {
            std::env::var_os("HOME").map(|home| (PathBuf::from(home).join(".config/hotlake/hotlakectl.toml"), false))
        }
    }
}

fn file_config(cli: &Cli) -> Result<(context::FileConfig, PathBuf), Failure> {
    let Some((path, explicit)) = config_path(cli) else {
        return Ok((context::FileConfig::default(), PathBuf::from("hotlakectl.toml")));
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((context::FileConfig::parse(&text, &path)?, path)),
        Err(_) if !explicit => Ok((context::FileConfig::default(), path)),
        Err(e) => Err(Failure::Usage(format!("cannot read config file {}: {e}", path.display()))),
    }
}

/// Where the cluster is and how long one request may take.
struct Target {
    addrs: Vec<String>,
    timeout: Duration,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

impl Target {
    fn builder(&self) -> hotlake_client::ClientBuilder {
        let mut builder = Client::builder().seeds(self.addrs.clone()).request_timeout(self.timeout);
        if let Some(t) = &self.token {
            builder = builder.token(t.clone());
        }
        if let Some(ca) = &self.ca_pem {
            builder = builder.tls_ca_pem(ca);
        }
        builder
    }

    fn admin(&self) -> Result<AdminClient, Failure> {
        self.builder().admin().map_err(|e| Failure::Usage(format!("{e}; set --cluster")))
    }

    /// The members' HTTP API, from the cluster map.
    async fn http(&self) -> Result<Api, Failure> {
        let client = self.builder().connect().await?;
        let addrs = client.cluster_view().nodes.values().map(|n| n.http_addr.clone()).collect();
        Api::new(addrs, self.timeout, self.token.as_deref(), self.ca_pem.as_deref())
    }
}

fn target(cli: &Cli) -> Result<Target, Failure> {
    let (file, path) = file_config(cli)?;
    let settings = file.settings(cli.context.as_deref(), &path)?;
    target_from(cli, &settings)
}

/// The target `settings` name, with the connection flags of `cli` over them.
fn target_from(cli: &Cli, settings: &context::Settings) -> Result<Target, Failure> {
    let addrs = if !cli.cluster.is_empty() {
        cli.cluster.clone()
    } else {
        settings.cluster.clone().unwrap_or_else(|| (1..=3).map(|i| format!("127.0.0.1:710{i}")).collect())
    };
    let addrs = addrs.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    let token = match (&cli.token, cli.token_file.as_ref().or(settings.token_file.as_ref())) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("cannot read the token file {}: {e}", path.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let ca_pem = match cli.ca_file.as_ref().or(settings.ca_file.as_ref()) {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| Failure::Usage(format!("cannot read the CA file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let timeout = Duration::from_secs(cli.timeout_s.or(settings.timeout_s).unwrap_or(60));
    Ok(Target { addrs, timeout, token, ca_pem })
}

/// `context …`: reads and edits the config file; reaches no cluster.
fn run_context(cli: &Cli, cmd: &ContextCommand, out: &mut impl Write) -> Result<(), Failure> {
    let path = config_path(cli)
        .map(|(p, _)| p)
        .ok_or_else(|| Failure::Usage("no config file: set --config (HOME is not set)".into()))?;
    match cmd {
        ContextCommand::List { output } => context::list(&file_config(cli)?.0, *output, out),
        ContextCommand::Add { name } => {
            let settings = context::Settings {
                cluster: (!cli.cluster.is_empty()).then(|| cli.cluster.clone()),
                timeout_s: cli.timeout_s,
                token_file: cli.token_file.clone(),
                ca_file: cli.ca_file.clone(),
            };
            if cli.token.is_some() {
                return Err(Failure::Usage("a context keeps a token file, never a token: use --token-file".into()));
            }
            context::add(&path, name, &settings, out)
        }
        ContextCommand::Use { name } => context::use_context(&path, name, out),
        ContextCommand::Remove { name } => context::remove(&path, name, out),
    }
}

/// `--all-contexts cluster status`: one row per context, every cluster asked at once.
async fn all_contexts_status(cli: &Cli, out: &mut impl Write) -> Result<(), Failure> {
    let Command::Cluster(ClusterCommand::Status { output, .. }) = &cli.command else {
        return Err(Failure::Usage("--all-contexts goes with `cluster status` only".into()));
    };
    let (file, path) = file_config(cli)?;
    if file.contexts().is_empty() {
        return Err(Failure::Usage(format!("{} defines no contexts (hotlakectl context add)", path.display())));
    }
    let asks = file.contexts().iter().map(|(name, settings)| {
        let admin = target_from(cli, settings).and_then(|t| t.admin());
        context::status_row(name, admin)
    });
    let answers = futures::future::join_all(asks).await;
    let all_up = answers.iter().all(|(_, up)| *up);
    let rows: Vec<Vec<String>> = answers.into_iter().map(|(row, _)| row).collect();
    crate::output::print_rows(*output, context::STATUS_HEADERS, &rows, out);
    if all_up {
        Ok(())
    } else {
        Err(Failure::Unreachable("a cluster or a member of one does not answer (see the table)".into()))
    }
}

async fn run(cli: &Cli, target: &Target, out: &mut impl Write) -> Result<(), Failure> {
    let watch = |on: bool, s: u64| on.then_some(s);
    match &cli.command {
        Command::Health { output } => data::health(&target.admin()?, *output, out).await,
        Command::Write { db, file, precision, batch_lines } => {
            let o = data::WriteOptions { db, file: file.as_deref(), precision, batch_lines: (*batch_lines).max(1) };
            data::write(&target.http().await?, &o, out).await
        }
        Command::Query {
            select,
            field_filters,
            start,
            end,
            aggregates,
            percentile,
            bucket,
            group_by,
            limit,
            desc,
            partial,
            output,
        } => {
            let mut body = select.body()?;
            let filters = field_filters.iter().map(|f| data::parse_field_filter(f)).collect::<Result<Vec<_>, _>>()?;
            body["filter"] = json!(filters.iter().map(data::field_filter_json).collect::<Vec<_>>());
            body["start"] = data::time_json(start);
            body["end"] = data::time_json(end);
            body["aggregates"] = json!(aggregates);
            body["group_by"] = json!(group_by);
            body["order"] = json!(if *desc { "desc" } else { "asc" });
            body["partial"] = json!(partial);
            if let Some(p) = percentile {
                body["percentile"] = json!(p);
            }
            if let Some(b) = bucket {
                body["bucket"] = json!(b);
            }
            if let Some(l) = limit {
                body["limit"] = json!(l);
            }
            let v = target.http().await?.post("/api/v1/query", &body).await?;
            data::print_query(&v, *output, cli.raw_time, out);
            if let Some(missing) = v["missing_shards"].as_array().filter(|m| !m.is_empty()) {
                eprintln!("warning: shards {missing:?} did not answer; the result is partial");
            }
            Ok(())
        }
        Command::Last { select, output } => {
            let v = target.http().await?.post("/api/v1/last", &select.body()?).await?;
            data::print_last(&v, *output, cli.raw_time, out);
            Ok(())
        }
        Command::Tail(args) => tail::tail(&target.builder().connect().await?, args, cli.raw_time, out).await,
        Command::Cluster(ClusterCommand::Init) => admin::cluster_init(&target.admin()?, out).await,
        Command::Cluster(ClusterCommand::Status { output, wait_ready_s, wait_nodes }) => {
            admin::cluster_status(&target.admin()?, *output, *wait_ready_s, *wait_nodes, out).await
        }
        Command::Cluster(ClusterCommand::Map { output }) => admin::cluster_map(&target.admin()?, *output, out).await,
        Command::Node(NodeCommand::List { output }) => admin::node_list(&target.admin()?, *output, out).await,
        Command::Node(NodeCommand::Add { id, grpc_addr, http_addr, peer_addr }) => {
            admin::node_add(&target.admin()?, *id, [grpc_addr, http_addr, peer_addr], out).await
        }
        Command::Node(NodeCommand::Drain { id, watch: w, watch_s }) => {
            admin::node_state(&target.admin()?, *id, NodeState::Draining, watch(*w, *watch_s), out).await
        }
        Command::Node(NodeCommand::Remove { id, watch: w, watch_s }) => {
            admin::node_state(&target.admin()?, *id, NodeState::Removing, watch(*w, *watch_s), out).await
        }
        Command::Node(NodeCommand::Activate { id }) => {
            admin::node_state(&target.admin()?, *id, NodeState::Active, None, out).await
        }
        Command::Shard(ShardCommand::List { output }) => admin::shard_list(&target.admin()?, *output, out).await,
        Command::Shard(ShardCommand::Show { id, output }) => {
            admin::shard_show(&target.admin()?, *id, *output, out).await
        }
        Command::Shard(ShardCommand::TransferLeader { id, to }) => {
            admin::shard_transfer_leader(&target.admin()?, *id, *to, out).await
        }
        Command::Shard(ShardCommand::Move { id, from, to, watch: w, watch_s }) => {
            admin::shard_move(&target.admin()?, *id, *from, *to, watch(*w, *watch_s), out).await
        }
        Command::Tenant(cmd) => run_tenant(cmd, &target.admin()?, out).await,
        Command::Token(cmd) => run_token(cmd, &target.admin()?, cli.raw_time, out).await,
        Command::Consumer(cmd) => run_consumer(cmd, target, out).await,
        Command::Rebalance { dry_run, watch_s, output } => {
            admin::rebalance(&target.admin()?, *dry_run, *watch_s, *output, out).await
        }
        Command::Context(cmd) => run_context(cli, cmd, out),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "hotlakectl", out);
            Ok(())
        }
    }
}

async fn run_tenant(cmd: &TenantCommand, admin: &AdminClient, out: &mut impl Write) -> Result<(), Failure> {
    match cmd {
        TenantCommand::Create { name, retention_s } => access::tenant_create(admin, name, *retention_s, out).await,
        TenantCommand::Set { name, retention_s } => access::tenant_set(admin, name, *retention_s, out).await,
        TenantCommand::List { output } => access::tenant_list(admin, *output, out).await,
    }
}

async fn run_token(
    cmd: &TokenCommand,
    admin: &AdminClient,
    raw_time: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match cmd {
        TokenCommand::Create { name, scopes, output } => access::token_create(admin, name, scopes, *output, out).await,
        TokenCommand::List { output } => access::token_list(admin, *output, raw_time, out).await,
        TokenCommand::Revoke { id } => access::token_revoke(admin, *id, out).await,
    }
}

async fn run_consumer(cmd: &ConsumerCommand, target: &Target, out: &mut impl Write) -> Result<(), Failure> {
    match cmd {
        ConsumerCommand::List { db, output } => {
            consumer::show(&target.builder().connect().await?, db, None, *output, out).await
        }
        ConsumerCommand::Show { group, db, output } => {
            consumer::show(&target.builder().connect().await?, db, Some(group), *output, out).await
        }
        ConsumerCommand::Reset { group, db, to } => consumer::reset(&target.admin()?, db, group, to, out).await,
        ConsumerCommand::Delete { group, db } => consumer::delete(&target.admin()?, db, group, out).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = execute(&cli);
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rejected(m)) => {
            eprintln!("error: the cluster rejected the request: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Unreachable(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(3)
        }
        Err(Failure::NotDone(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(4)
        }
    }
}

fn execute(cli: &Cli) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Command::Context(cmd) = &cli.command {
        return run_context(cli, cmd, &mut out);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the async runtime: {e}")))?;
    if cli.all_contexts {
        return rt.block_on(all_contexts_status(cli, &mut out));
    }
    let target = target(cli)?;
    rt.block_on(run(cli, &target, &mut out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_flag_is_consistent() {
        Cli::command().debug_assert();
    }
}
