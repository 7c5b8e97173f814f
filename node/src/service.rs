//! The narrow services the protocol servers are written against. A server (HTTP, gRPC, and the
//! protocols to come: SQL over the PostgreSQL wire, InfluxQL, Prometheus) depends on these
//! traits, never on `Node` itself, so a new protocol is an adapter over them and adds no
//! methods to the node. `Node` implements them by delegating to its roles.
//!
//! ```text
//!   server::http ──┐                                      ┌─► Ingest        (router)
//!   server::grpc ──┼─► S: Ingest + Queries + Subscriptions ─┼─► Queries       (coordinator)
//!   server::sse  ──┤      + Admin                           ├─► Subscriptions (feed)
//!   (next: pgwire) ┘                                      └─► Admin         (admin, replicas)
//! ```
//!
//! Invariant: only the server layer converts wire types; these traits speak the crates' types.

use std::future::Future;
use std::sync::Arc;

use hotlake_cluster::access::{Principal, Scope, TenantSettings, TokenRecord};
use hotlake_cluster::map::{ClusterMap, NodeInfo, NodeState};
use hotlake_cluster::placement::Move;
use hotlake_engine::batch::ShardWrite;
use hotlake_ingest::line_protocol::{LineError, Precision};
use hotlake_query::{LastQuery, LastRow, Query, QueryResult};
use hotlake_storage::ShardId;
use hotlake_types::error::Result;
use hotlake_types::limits::Limits;
use hotlake_types::ring::Ring;
use hotlake_types::NodeId;

use crate::node::{
    ClusterStatus, ConsumerGroupStatus, Cursor, Delivery, Health, NewToken, Node, ResetTo, Start, WritePermit,
    WriteRouting, WriteSummary,
};
use hotlake_engine::feed::FeedFilter;
use tokio::sync::mpsc;

/// Writes: line protocol, and columnar batches already split by shard.
pub trait Ingest: Send + Sync + 'static {
    /// Request limits (body size, lines, keys and values).
    fn limits(&self) -> &Limits;
    /// The tenant a request writes to (the default tenant when it names none), or why the name
    /// is refused.
    fn tenant<'a>(&'a self, tenant: &'a str) -> Result<&'a str>;
    /// The tag whose value is a series' device.
    fn device_tag(&self) -> String;
    /// The ring of the cluster (unavailable before the node joined one).
    fn ring(&self) -> Result<Ring>;
    /// Admits a write request of `bytes` (waiting briefly, in arrival order, for room), or
    /// refuses it as `overloaded`; hold the permit until the write is answered.
    fn admit_write(&self, bytes: usize) -> impl Future<Output = Result<WritePermit>> + Send;
    /// Parses a line-protocol body and writes its points; per-line errors come back with the
    /// summary of what was written. The body is taken whole, to be parsed off the async workers.
    fn write_lines(
        &self,
        tenant: &str,
        body: String,
        precision: Precision,
        default_ts_ns: i64,
    ) -> impl Future<Output = Result<(WriteSummary, Vec<LineError>)>> + Send;
    /// Writes batches split by shard, forwarding parts led elsewhere.
    fn write_batches(&self, batches: Vec<(ShardId, ShardWrite)>) -> impl Future<Output = Result<WriteSummary>> + Send;
    /// Writes batches as a client routed them (see [`WriteRouting`]).
    fn write_batches_routed(
        &self,
        batches: Vec<(ShardId, ShardWrite)>,
        routing: WriteRouting,
    ) -> impl Future<Output = Result<WriteSummary>> + Send;
}

/// Reads: range queries and aggregates, and the latest values per device.
pub trait Queries: Send + Sync + 'static {
    /// Runs a query over every shard it touches and merges the answers.
    fn query(&self, q: Query) -> impl Future<Output = Result<QueryResult>> + Send;
    /// The latest values per device.
    fn last(&self, q: LastQuery) -> impl Future<Output = Result<Vec<LastRow>>> + Send;
}

/// Subscriptions to the change feed.
pub trait Subscriptions: Send + Sync + 'static {
    /// Opens a subscription: its deliveries arrive on the channel until the receiver is
    /// dropped or an error (the last message) ends it.
    fn subscribe(
        self: Arc<Self>,
        filter: FeedFilter,
        start: Start,
    ) -> impl Future<Output = Result<mpsc::Receiver<Result<Delivery>>>> + Send;
    /// Joins a consumer group (created at `start` when new) as a new member: its id, and its
    /// deliveries, from the shards the group's coordinator gives it.
    fn subscribe_group(
        self: Arc<Self>,
        filter: FeedFilter,
        group: String,
        start: Start,
    ) -> impl Future<Output = Result<(String, mpsc::Receiver<Result<Delivery>>)>> + Send;
    /// Commits a member's processed cursor; returns the shards whose positions moved.
    fn commit_consumer(
        &self,
        tenant: &str,
        group: &str,
        member: &str,
        cursor: &Cursor,
    ) -> impl Future<Output = Result<Vec<u32>>> + Send;
    /// One consumer group of a tenant, or all of them.
    fn consumer_groups(
        &self,
        tenant: &str,
        group: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ConsumerGroupStatus>>> + Send;
    /// Moves a consumer group with no member reading.
    fn reset_consumer(&self, tenant: &str, group: &str, to: ResetTo) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a consumer group with no member reading.
    fn delete_consumer(&self, tenant: &str, group: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Operations: health, metrics, the cluster map and the cluster, node and shard commands.
pub trait Admin: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> NodeId;
    /// Whether the node serves, with its replicas' state.
    fn health(&self) -> Health;
    /// Metrics in Prometheus text format.
    fn metrics_text(&self) -> String;
    /// The cluster map as this node has applied it.
    fn map(&self) -> Arc<ClusterMap>;
    /// The leader of a shard as this node last heard.
    fn known_leader(&self, shard: ShardId) -> Option<NodeId>;
    /// The map and every member's status.
    fn cluster_status(&self) -> impl Future<Output = ClusterStatus> + Send;
    /// Creates the cluster on a node started for manual bootstrap: (cluster id, created now,
    /// the first admin token's secret when it was made up now).
    fn init_cluster(&self) -> impl Future<Output = Result<(u64, bool, Option<String>)>> + Send;
    /// Placement changes still needed to reach the target placement.
    fn pending_moves(&self) -> Vec<Move>;
    /// Adds a node to the map; returns the new map version.
    fn add_node(&self, info: NodeInfo) -> impl Future<Output = Result<u64>> + Send;
    /// Drains, removes or activates a node; returns the new map version.
    fn set_node_state(&self, id: NodeId, state: NodeState) -> impl Future<Output = Result<u64>> + Send;
    /// Moves one replica of a shard; returns the new map version.
    fn move_replica(&self, shard: ShardId, from: NodeId, to: NodeId) -> impl Future<Output = Result<u64>> + Send;
    /// Hands a shard's leadership to another of its replicas.
    fn transfer_leader(&self, shard: ShardId, to: NodeId) -> impl Future<Output = Result<()>> + Send;
    /// This replica's digest of a shard and the log index it is at.
    fn shard_digest(&self, shard: ShardId) -> impl Future<Output = Result<(u64, u64)>> + Send;
    /// Who a request's token stands for (everyone may do everything on a cluster without
    /// authentication); `unauthenticated` without a known token.
    fn authenticate(&self, secret: Option<&str>) -> Result<Principal>;
    /// Creates a tenant; returns the new map version.
    fn create_tenant(&self, name: &str, settings: TenantSettings) -> impl Future<Output = Result<u64>> + Send;
    /// Changes a tenant's settings; returns the new map version.
    fn set_tenant(&self, name: &str, settings: TenantSettings) -> impl Future<Output = Result<u64>> + Send;
    /// Creates a token on behalf of `by`; its secret comes back this once.
    fn create_token(
        &self,
        by: &Principal,
        name: &str,
        scopes: Vec<Scope>,
    ) -> impl Future<Output = Result<NewToken>> + Send;
    /// The tokens `by` administers.
    fn tokens_of(&self, by: &Principal) -> Vec<TokenRecord>;
    /// Revokes a token `by` administers; returns the new map version.
    fn revoke_token(&self, by: &Principal, id: u64) -> impl Future<Output = Result<u64>> + Send;
}

/// Everything a public protocol server serves.
pub trait Service: Ingest + Queries + Subscriptions + Admin {}

impl<S: Ingest + Queries + Subscriptions + Admin> Service for S {}

impl Ingest for Node {
    fn limits(&self) -> &Limits {
        &self.config().limits
    }
    fn tenant<'a>(&'a self, tenant: &'a str) -> Result<&'a str> {
        Node::tenant(self, tenant)
    }
    fn device_tag(&self) -> String {
        self.settings().device_tag
    }
    fn ring(&self) -> Result<Ring> {
        Node::ring(self)
    }
    async fn admit_write(&self, bytes: usize) -> Result<WritePermit> {
        Node::admit_write(self, bytes).await
    }
    async fn write_lines(
        &self,
        tenant: &str,
        body: String,
        precision: Precision,
        default_ts_ns: i64,
    ) -> Result<(WriteSummary, Vec<LineError>)> {
        Node::write_lines(self, tenant, body, precision, default_ts_ns).await
    }
    async fn write_batches(&self, batches: Vec<(ShardId, ShardWrite)>) -> Result<WriteSummary> {
        Node::write_batches(self, batches).await
    }
    async fn write_batches_routed(
        &self,
        batches: Vec<(ShardId, ShardWrite)>,
        routing: WriteRouting,
    ) -> Result<WriteSummary> {
        Node::write_batches_routed(self, batches, routing).await
    }
}

impl Queries for Node {
    async fn query(&self, q: Query) -> Result<QueryResult> {
        Node::query(self, q).await
    }
    async fn last(&self, q: LastQuery) -> Result<Vec<LastRow>> {
        Node::last(self, q).await
    }
}

impl Subscriptions for Node {
    async fn subscribe(self: Arc<Self>, filter: FeedFilter, start: Start) -> Result<mpsc::Receiver<Result<Delivery>>> {
        Node::subscribe(&self, filter, start).await
    }
    async fn subscribe_group(
        self: Arc<Self>,
        filter: FeedFilter,
        group: String,
        start: Start,
    ) -> Result<(String, mpsc::Receiver<Result<Delivery>>)> {
        Node::subscribe_group(&self, filter, group, start).await
    }
    async fn commit_consumer(&self, tenant: &str, group: &str, member: &str, cursor: &Cursor) -> Result<Vec<u32>> {
        Node::commit_consumer(self, tenant, group, member, cursor).await
    }
    async fn consumer_groups(&self, tenant: &str, group: Option<&str>) -> Result<Vec<ConsumerGroupStatus>> {
        Node::consumer_groups(self, tenant, group).await
    }
    async fn reset_consumer(&self, tenant: &str, group: &str, to: ResetTo) -> Result<()> {
        Node::reset_consumer(self, tenant, group, to).await
    }
    async fn delete_consumer(&self, tenant: &str, group: &str) -> Result<()> {
        Node::delete_consumer(self, tenant, group).await
    }
}

impl Admin for Node {
    fn node_id(&self) -> NodeId {
        self.config().node_id
    }
    fn health(&self) -> Health {
        Node::health(self)
    }
    fn metrics_text(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let metrics = self.metrics();
        metrics.snapshot_bytes_sent.store(self.peers.snapshot_bytes_sent(), Relaxed);
        let (heartbeats, requests) = self.peers.heartbeats_sent();
        metrics.heartbeats_sent.store(heartbeats, Relaxed);
        metrics.heartbeat_requests_sent.store(requests, Relaxed);
        let mut text = self.metrics().render();
        text.push_str(&self.consumer_lag_metrics());
        text
    }
    fn map(&self) -> Arc<ClusterMap> {
        Node::map(self)
    }
    fn known_leader(&self, shard: ShardId) -> Option<NodeId> {
        Node::known_leader(self, shard)
    }
    async fn cluster_status(&self) -> ClusterStatus {
        Node::cluster_status(self).await
    }
    async fn init_cluster(&self) -> Result<(u64, bool, Option<String>)> {
        Node::init_cluster(self).await
    }
    fn pending_moves(&self) -> Vec<Move> {
        Node::pending_moves(self)
    }
    async fn add_node(&self, info: NodeInfo) -> Result<u64> {
        Node::add_node(self, info).await
    }
    async fn set_node_state(&self, id: NodeId, state: NodeState) -> Result<u64> {
        Node::set_node_state(self, id, state).await
    }
    async fn move_replica(&self, shard: ShardId, from: NodeId, to: NodeId) -> Result<u64> {
        Node::move_replica(self, shard, from, to).await
    }
    async fn transfer_leader(&self, shard: ShardId, to: NodeId) -> Result<()> {
        Node::transfer_leader(self, shard, to).await
    }
    async fn shard_digest(&self, shard: ShardId) -> Result<(u64, u64)> {
        Node::shard_digest(self, shard).await
    }
    fn authenticate(&self, secret: Option<&str>) -> Result<Principal> {
        Node::authenticate(self, secret)
    }
    async fn create_tenant(&self, name: &str, settings: TenantSettings) -> Result<u64> {
        Node::create_tenant(self, name, settings).await
    }
    async fn set_tenant(&self, name: &str, settings: TenantSettings) -> Result<u64> {
        Node::set_tenant(self, name, settings).await
    }
    async fn create_token(&self, by: &Principal, name: &str, scopes: Vec<Scope>) -> Result<NewToken> {
        Node::create_token(self, by, name, scopes).await
    }
    fn tokens_of(&self, by: &Principal) -> Vec<TokenRecord> {
        Node::tokens_of(self, by)
    }
    async fn revoke_token(&self, by: &Principal, id: u64) -> Result<u64> {
        Node::revoke_token(self, by, id).await
    }
}
