//! Node-to-node transport: one gRPC service (`hotlake.internal.v1.Peer`) per node carries the
//! Raft RPCs of every group, multiplexed by group id, and requests forwarded between nodes.
//!
//! ```text
//!  openraft (group g) ──PeerNetwork──► Peers (one lazily connected channel per address)
//!        ──Raft{group, kind, bincode}──► peer's server::peer ──► that node's group g
//!        ──RaftBatch{heartbeats of many groups}──► each to its group (see `heartbeats`)
//!        ──InstallSnapshot(stream of chunks ≤ snapshot_chunk_bytes_max, read as sent, the
//!          final one marked `last`)──► staged on the peer, installed once whole
//! ```
//!
//! Payloads are bincode: both ends run the same release. Every call has a timeout; a snapshot
//! stream is paced to `cluster.snapshot_bytes_per_s_max` and times out only when the peer
//! stops taking chunks. A node never sends a Raft message to
//! itself (openraft never replicates to the local node).
//!
//! Invariant: besides `server`, only this module touches generated proto types.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_proto::internal::v1 as pb;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::{BasicNode, OptionalSend, RPCTypes, RaftTypeConfig, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
#[cfg(not(madsim))]
use tonic::transport::ClientTlsConfig;
use tonic::transport::{Channel, Endpoint};

use super::heartbeats::{BatchRefused, Heartbeats, RaftAnswer, RaftSender};
use super::map::{ClusterMap, NodeInfo};
use super::meta::MetaTypeConfig;
use hotlake_engine::batch::{ApplyOutcome, ShardWrite};
use hotlake_engine::feed::FeedFilter;
use hotlake_engine::shard::SnapshotReader;
use hotlake_proto::errors::ErrorKind;
use hotlake_query::exec::ShardResult;
use hotlake_query::{LastQuery, LastRow, Query};
use hotlake_raft::{NodeId, TypeConfig};
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};
use hotlake_types::limits::limit_name;

/// Group id of the meta group on the wire; shard groups use their shard id.
pub const META_GROUP: u64 = u64::MAX;

/// How often an idle peer connection is pinged, and how long a ping may go unanswered before
/// the connection is dropped and the next call opens a new one.
const PEER_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const PEER_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The node-to-node wire format this release speaks: the bincode payloads of Raft messages,
/// snapshots and forwarded calls. A release that changes them bumps it, and keeps accepting
/// the previous format for one release (`WIRE_VERSION_MIN`), so a rolling upgrade can run
/// nodes of two neighbouring releases together.
pub const WIRE_VERSION: u32 = 1;
/// Oldest wire format this release still accepts.
pub const WIRE_VERSION_MIN: u32 = 1;

/// Whether a message in wire format `version` can be taken (0: a sender from before formats
/// were numbered, which spoke format 1); otherwise what to tell the operator.
pub fn check_wire_version(version: u32) -> std::result::Result<(), String> {
    let version = version.max(1);
    if (WIRE_VERSION_MIN..=WIRE_VERSION).contains(&version) {
        return Ok(());
    }
    let what = if version > WIRE_VERSION { "a newer release: upgrade this node" } else { "an older release" };
    Err(format!(
        "peer speaks node-to-node wire format {version}, from {what}; this node speaks formats \
         {WIRE_VERSION_MIN} to {WIRE_VERSION} (upgrade one release at a time)"
    ))
}

/// Raft RPC kinds on the wire.
pub const KIND_APPEND: u32 = 1;
/// See [`KIND_APPEND`].
pub const KIND_VOTE: u32 = 2;

/// A request forwarded from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerCall {
    /// Propose a write on a shard this node should lead.
    Write {
        /// The shard.
        shard: ShardId,
        /// The shard's part of a client batch.
        write: ShardWrite,
    },
    /// Run a query on one shard; only its leader answers, after a read-index round.
    Query {
        /// The shard.
        shard: ShardId,
        /// The query.
        query: Query,
        /// Points the shard may read.
        points_budget: u64,
    },
    /// Latest values on one shard, from its leader.
    Last {
        /// The shard.
        shard: ShardId,
        /// The request.
        query: LastQuery,
    },
    /// Hand the leadership of a shard over to another voter (sent to the shard's leader).
    TransferLeader {
        /// The shard.
        shard: ShardId,
        /// The voter that should lead.
        to: NodeId,
    },
    /// Start an election for a shard on this node's replica (the last step of a transfer).
    Elect {
        /// The shard.
        shard: ShardId,
    },
    /// The membership of a shard group, from its leader.
    Group {
        /// The shard.
        shard: ShardId,
    },
    /// Ask to join the cluster (sent to any member; forwarded to the meta leader).
    Join(NodeInfo),
    /// Propose a meta command (sent to any member; forwarded to the meta leader).
    Meta(super::map::MetaCommand),
    /// A node's periodic report of the shards it leads, to the meta leader.
    Report(NodeReport),
    /// The map as this node has applied it.
    Map,
    /// This node's view of itself and its replicas.
    Status,
    /// Digest of one shard replica's content, with its applied index.
    Digest {
        /// The shard.
        shard: ShardId,
    },
    /// Change-feed entries of one shard replica after a cursor.
    FeedRead {
        /// The shard.
        shard: ShardId,
        /// The last index already seen (`None`: only report where the feed is now).
        after: Option<u64>,
        /// What to select.
        filter: FeedFilter,
        /// Stop once the selected entries hold this many points.
        max_points: u64,
    },
    /// A consumer-group call, answered by the meta leader.
    Consumer(ConsumerCall),
    /// The stored points a filter selects on one shard replica: from a time on, or the latest
    /// value of each field.
    History {
        /// The shard.
        shard: ShardId,
        /// What to select.
        filter: FeedFilter,
        /// The earliest timestamp (`None`: the latest value of each field).
        since: Option<i64>,
        /// Refuse (`limit_exceeded`) rather than answer with more points.
        max_points: u64,
    },
}

/// A call to the coordinator of consumer groups: the meta leader, which keeps who reads which
/// shard (soft state, rebuilt from heartbeats) and commits positions through the meta group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ConsumerCall {
    /// A member is alive, or (with `leaving`) gone; the answer is its assignment.
    Heartbeat {
        /// The tenant.
        tenant: String,
        /// The group.
        group: String,
        /// The member's id.
        member: String,
        /// The member has stopped.
        leaving: bool,
    },
    /// A member commits what it has processed; positions of shards it is not assigned are
    /// left out.
    Commit {
        /// The tenant.
        tenant: String,
        /// The group.
        group: String,
        /// The member's id.
        member: String,
        /// (shard, last processed index) pairs.
        positions: Vec<(u32, u64)>,
    },
    /// The group's members and the shards each reads.
    Members {
        /// The tenant.
        tenant: String,
        /// The group.
        group: String,
    },
}

/// The coordinator's answer to a [`ConsumerCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerReply {
    /// The shards the member reads and their committed positions (same order).
    Assignment {
        /// Shards.
        shards: Vec<u32>,
        /// Committed position of each.
        positions: Vec<u64>,
    },
    /// The shards whose positions were committed.
    Committed(Vec<u32>),
    /// Members and their shards.
    Members(Vec<(String, Vec<u32>)>),
}

/// A reply to a [`PeerCall`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    /// Result of `Write`.
    Written(ApplyOutcome),
    /// Result of `Query`.
    Answer(ShardResult),
    /// Result of `Last`.
    LastRows(Vec<LastRow>),
    /// Result of `Join` / `Meta`: the map version after the change.
    MapVersion(u64),
    /// Result of `Report`.
    Ack,
    /// Result of `Map`.
    Map(ClusterMap),
    /// Result of `Status`.
    Status(NodeStatus),
    /// Result of `Digest`: the digest and the log index the content is at.
    Digest {
        /// Digest of the replica's content.
        digest: u64,
        /// Last applied log index of that content.
        applied: u64,
    },
    /// Result of `Group`.
    Group(GroupReport),
    /// Result of `FeedRead`: the selected entries by log index, and the cursor to go on from.
    Feed {
        /// Entries with their log index.
        entries: Vec<(u64, ShardWrite)>,
        /// Every entry up to this index has been considered.
        through: u64,
    },
    /// Result of `Consumer`.
    Consumer(ConsumerReply),
    /// Result of `History`: the points as of log index `index`.
    History {
        /// The replica's applied index the points are as of.
        index: u64,
        /// The points (`None`: none match).
        write: Option<ShardWrite>,
    },
}

/// The Raft view of one shard group, as reported by its leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The shard.
    pub shard: ShardId,
    /// Voters of the group's effective membership.
    pub voters: Vec<NodeId>,
    /// Learners of the group's effective membership.
    pub learners: Vec<NodeId>,
    /// The membership is joint (a voter change is half way).
    pub joint: bool,
    /// The effective membership is applied on the leader, hence committed.
    pub membership_applied: bool,
    /// Last applied log index on the leader.
    pub applied: u64,
}

/// A node's periodic report to the meta leader: it is alive, and these are the groups it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The reporting node.
    pub node: NodeId,
    /// Groups it leads.
    pub leading: Vec<GroupReport>,
}

/// One replica as seen by the node that hosts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The shard.
    pub shard: ShardId,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The group's leader as known here.
    pub leader: Option<NodeId>,
    /// Voters of the membership this replica knows (the last of a joint one).
    pub voters: Vec<NodeId>,
    /// The known membership is joint: a voter change is half way.
    pub joint: bool,
    /// Last applied log index.
    pub applied: u64,
    /// Log index covered by the last flush (the log up to it is purged).
    pub flushed: u64,
    /// Bytes in memtables.
    pub memtable_bytes: u64,
}

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub node: NodeId,
    /// Map version applied here.
    pub map_version: u64,
    /// Leader of the meta group as known here.
    pub meta_leader: Option<NodeId>,
    /// Replicas hosted here.
    pub replicas: Vec<ReplicaStatus>,
}

/// An [`Error`] as it travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    kind: String,
    message: String,
    details: Vec<String>,
    shard: Option<ShardId>,
    leader: Option<NodeId>,
    limit: Option<String>,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        let mut w = WireError {
            kind: e.kind().to_string(),
            message: e.to_string(),
            details: Vec::new(),
            shard: None,
            leader: None,
            limit: None,
        };
        match e {
            Error::InvalidArgument { message, details } => {
                w.message = message.clone();
                w.details = details.clone();
            }
            Error::LimitExceeded { limit, message } => {
                w.message = message.clone();
                w.limit = Some(limit.to_string());
            }
            Error::NotLeader { shard, leader } => {
                w.shard = Some(*shard);
                w.leader = *leader;
            }
            Error::Overloaded(m)
            | Error::Unavailable(m)
            | Error::Timeout(m)
            | Error::Internal(m)
            | Error::Storage(m)
            | Error::Unauthenticated(m)
            | Error::PermissionDenied(m)
            | Error::NotFound(m)
            | Error::CursorExpired(m) => {
                w.message = m.clone();
            }
            Error::PartialWrite { rejected, .. } => w.details = rejected.clone(),
            Error::StaleMap { .. } => {}
        }
        w
    }
}

impl WireError {
    /// The error as the node's type again.
    pub fn into_error(self) -> Error {
        let Ok(kind) = self.kind.parse::<ErrorKind>() else {
            return Error::Internal(format!("on a peer ({}): {}", self.kind, self.message));
        };
        match kind {
            ErrorKind::InvalidArgument => Error::InvalidArgument { message: self.message, details: self.details },
            ErrorKind::LimitExceeded => Error::LimitExceeded {
                limit: limit_name(self.limit.as_deref().unwrap_or_default()),
                message: self.message,
            },
            ErrorKind::NotLeader => Error::NotLeader { shard: self.shard.unwrap_or(ShardId(0)), leader: self.leader },
            ErrorKind::Overloaded => Error::Overloaded(self.message),
            ErrorKind::Unavailable | ErrorKind::StaleMap => Error::Unavailable(self.message),
            ErrorKind::Timeout => Error::Timeout(self.message),
            ErrorKind::Unauthenticated => Error::Unauthenticated(self.message),
            ErrorKind::PermissionDenied => Error::PermissionDenied(self.message),
            ErrorKind::NotFound => Error::NotFound(self.message),
            ErrorKind::CursorExpired => Error::CursorExpired(self.message),
            _ => Error::Internal(format!("on a peer: {}", self.message)),
        }
    }
}

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Timeout of one forwarded request.
    pub call_timeout: Duration,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_bytes_max: usize,
    /// Pace of snapshot streams, bytes per second (0 = unpaced).
    pub snapshot_bytes_per_s_max: u64,
    /// Largest message accepted.
    pub message_bytes_max: usize,
}

/// Pooled connections to peers, one channel per address (HTTP/2 multiplexes every group's
/// traffic over it).
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    options: TransportOptions,
    /// The cluster this node belongs to (0 until it knows), sent with every Raft message so
    /// that a node of another cluster at a reused address refuses it.
    cluster_id: AtomicU64,
    /// Bytes of snapshot chunks taken by peers, for progress on long moves.
    snapshot_bytes_sent: Arc<AtomicU64>,
    /// Heartbeats waiting to go to each peer together.
    heartbeats: Heartbeats,
    /// Mutual TLS towards other nodes (the cluster CA and this node's certificate), when the
    /// node has TLS configured. Simulation builds have no TLS.
    #[cfg(not(madsim))]
    tls: Mutex<Option<ClientTlsConfig>>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| Error::Internal(format!("encode peer message: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| Error::Internal(format!("decode peer message: {e}")))
}

/// Why a peer could not be reached or answered badly.
#[derive(Clone, Debug)]
pub enum TransportError {
    /// Could not connect or the connection broke.
    Unreachable(String),
    /// No answer within the timeout.
    Timeout,
    /// The peer answered with something that does not decode.
    Protocol(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Unreachable(m) => write!(f, "unreachable: {m}"),
            TransportError::Timeout => write!(f, "timed out"),
            TransportError::Protocol(m) => write!(f, "bad reply: {m}"),
        }
    }
}

impl std::error::Error for TransportError {}

fn status_error(s: tonic::Status) -> TransportError {
    match s.code() {
        tonic::Code::DeadlineExceeded => TransportError::Timeout,
        _ => TransportError::Unreachable(s.message().to_string()),
    }
}

impl Peers {
    /// An empty pool.
    pub fn new(options: TransportOptions) -> Self {
        Peers {
            channels: Mutex::new(HashMap::new()),
            options,
            cluster_id: AtomicU64::new(0),
            snapshot_bytes_sent: Arc::default(),
            heartbeats: Heartbeats::default(),
            #[cfg(not(madsim))]
            tls: Mutex::new(None),
        }
    }

    /// Heartbeats sent to peers so far, and the requests that carried them.
    pub fn heartbeats_sent(&self) -> (u64, u64) {
        (self.heartbeats.sent(), self.heartbeats.requests())
    }

    /// Bytes of snapshot chunks peers have taken from this node so far.
    pub fn snapshot_bytes_sent(&self) -> u64 {
        self.snapshot_bytes_sent.load(Ordering::Relaxed)
    }

    /// Connects to other nodes with TLS from now on (and again with new certificates after a
    /// reload): the connections open so far are dropped, so the next call of each peer
    /// connects with `tls`.
    #[cfg(not(madsim))]
    pub fn set_tls(&self, tls: ClientTlsConfig) {
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(tls);
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Sets the cluster id sent with Raft messages.
    pub fn set_cluster_id(&self, id: u64) {
        self.cluster_id.store(id, Ordering::Relaxed);
    }

    /// The cluster id sent with Raft messages (0 while unknown).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    /// Transport settings.
    pub fn options(&self) -> &TransportOptions {
        &self.options
    }

    /// The endpoint of the peer at `addr`: with mutual TLS when this node has it.
    fn endpoint(&self, addr: &str) -> std::result::Result<Endpoint, tonic::transport::Error> {
        #[cfg(not(madsim))]
        if let Some(tls) = self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls);
        }
        Endpoint::from_shared(format!("http://{addr}"))
    }

    fn client(&self, addr: &str) -> std::result::Result<pb::peer_client::PeerClient<Channel>, TransportError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = self
                    .endpoint(addr)
                    .map_err(|e| TransportError::Unreachable(format!("bad address {addr}: {e}")))?
                    .connect_timeout(Duration::from_secs(1))
                    // A connection whose packets were dropped (a partition, a peer's host gone)
                    // otherwise stays "open" until TCP's retransmissions give up, minutes after
                    // the network heals; pings find it dead and the next call reconnects. The
                    // timeout is generous so a peer busy for seconds is not cut off.
                    .http2_keep_alive_interval(PEER_KEEP_ALIVE_INTERVAL)
                    .keep_alive_timeout(PEER_KEEP_ALIVE_TIMEOUT)
                    .keep_alive_while_idle(true);
                let c = endpoint.connect_lazy();
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(pb::peer_client::PeerClient::new(channel)
            .max_decoding_message_size(self.options.message_bytes_max)
            .max_encoding_message_size(self.options.message_bytes_max))
    }

    /// Sends one Raft RPC of `group` and decodes the peer's result. A heartbeat goes with the
    /// others bound for the same peer (see [`crate::heartbeats`]).
    pub async fn raft<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        rpc: RaftRpc<'_, Req>,
        timeout: Duration,
    ) -> std::result::Result<Resp, TransportError> {
        let payload = bincode::serialize(rpc.request).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let request = pb::RaftRequest {
            group: rpc.group,
            kind: rpc.kind,
            payload,
            cluster_id: self.cluster_id(),
            wire_version: WIRE_VERSION,
        };
        let sender = UnarySender(self.client(addr)?);
        let answer = if rpc.heartbeat {
            self.heartbeats.send(addr, request, timeout, sender).await?
        } else {
            sender.send_one(request, timeout).await?
        };
        bincode::deserialize(&answer).map_err(|e| TransportError::Protocol(e.to_string()))
    }

    /// Streams a snapshot of `group` and decodes the peer's result. Chunks are read from
    /// `chunks` as the peer takes them (one read ahead), so the sender holds about two chunks
    /// whatever the snapshot's size. The stream fails when the peer takes no chunk for
    /// `idle_timeout`, or does not answer in time once all were sent.
    pub async fn snapshot<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        group: u64,
        header: Vec<u8>,
        chunks: Box<dyn SnapshotChunks>,
        idle_timeout: Duration,
    ) -> std::result::Result<Resp, TransportError> {
        let mut client = self.client(addr)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(1);
        let sent_bytes = Arc::new(AtomicU64::new(0));
        let last_progress = Arc::new(Mutex::new(tokio::time::Instant::now()));
        let producer = produce_snapshot_chunks(
            SnapshotStream { group, cluster_id: self.cluster_id(), pace: self.options.snapshot_bytes_per_s_max },
            header,
            chunks,
            tx,
            [sent_bytes.clone(), self.snapshot_bytes_sent.clone()],
            last_progress.clone(),
        );
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let call = client.install_snapshot(stream);
        tokio::pin!(producer, call);
        let mut produced = false;
        let reply = loop {
            let idle = if produced {
                // The peer installs what it received before it answers.
                idle_timeout + install_time_allowed(sent_bytes.load(Ordering::Relaxed))
            } else {
                idle_timeout
            };
            let since = *last_progress.lock().unwrap_or_else(|p| p.into_inner());
            tokio::select! {
                reply = &mut call => break reply,
                done = &mut producer, if !produced => match done {
                    Ok(()) => {
                        produced = true;
                        *last_progress.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                    }
                    // Returning drops the call: the stream is reset, never ended, so the peer
                    // installs nothing of it.
                    Err(e) => return Err(TransportError::Protocol(e)),
                },
                _ = tokio::time::sleep_until(since + idle) => {
                    if *last_progress.lock().unwrap_or_else(|p| p.into_inner()) == since {
                        return Err(TransportError::Timeout);
                    }
                }
            }
        };
        let reply = match reply {
            Err(s) => return Err(status_error(s)),
            Ok(r) => r.into_inner(),
        };
        check_wire_version(reply.wire_version).map_err(TransportError::Protocol)?;
        bincode::deserialize(&reply.payload).map_err(|e| TransportError::Protocol(e.to_string()))
    }

    /// Sends a forwarded request; the peer's error comes back as an [`Error`].
    pub async fn call(&self, addr: &str, call: &PeerCall, timeout: Duration) -> Result<PeerReply> {
        let payload = encode(call)?;
        let mut client = self.client(addr).map_err(|e| Error::Unavailable(format!("peer {addr}: {e}")))?;
        let reply =
            match tokio::time::timeout(timeout, client.call(pb::Payload { payload, wire_version: WIRE_VERSION })).await
            {
                Err(_) => return Err(Error::Timeout(format!("peer {addr} did not answer within {timeout:?}"))),
                Ok(Err(s)) => return Err(Error::Unavailable(format!("peer {addr}: {}", s.message()))),
                Ok(Ok(r)) => r.into_inner(),
            };
        check_wire_version(reply.wire_version).map_err(|e| Error::Unavailable(format!("peer {addr}: {e}")))?;
        let result: std::result::Result<PeerReply, WireError> = decode(&reply.payload)?;
        result.map_err(WireError::into_error)
    }
}

/// One Raft RPC of a group, as [`Peers::raft`] sends it.
pub struct RaftRpc<'a, Req> {
    /// The group's id on the wire (a shard id, or [`META_GROUP`]).
    pub group: u64,
    /// [`KIND_APPEND`] or [`KIND_VOTE`].
    pub kind: u32,
    /// The openraft request.
    pub request: &'a Req,
    /// An append with no entries: it may wait a moment for the heartbeats of other groups.
    pub heartbeat: bool,
}

/// Raft requests over one peer's gRPC channel.
#[derive(Clone)]
struct UnarySender(pb::peer_client::PeerClient<Channel>);

impl RaftSender for UnarySender {
    async fn send_batch(
        &self,
        requests: Vec<pb::RaftRequest>,
        timeout: Duration,
    ) -> std::result::Result<Vec<RaftAnswer>, BatchRefused> {
        let mut client = self.0.clone();
        let reply = match tokio::time::timeout(timeout, client.raft_batch(pb::RaftBatchRequest { requests })).await {
            Err(_) => return Err(BatchRefused::Failed(TransportError::Timeout)),
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => return Err(BatchRefused::Unsupported),
            Ok(Err(s)) => return Err(BatchRefused::Failed(status_error(s))),
            Ok(Ok(r)) => r.into_inner(),
        };
        check_wire_version(reply.wire_version).map_err(|e| BatchRefused::Failed(TransportError::Protocol(e)))?;
        Ok(reply
            .replies
            .into_iter()
            .map(|r| if r.error.is_empty() { Ok(r.payload) } else { Err(TransportError::Unreachable(r.error)) })
            .collect())
    }

    async fn send_one(&self, request: pb::RaftRequest, timeout: Duration) -> RaftAnswer {
        let mut client = self.0.clone();
        let reply = match tokio::time::timeout(timeout, client.raft(request)).await {
            Err(_) => return Err(TransportError::Timeout),
            Ok(Err(s)) => return Err(status_error(s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        check_wire_version(reply.wire_version).map_err(TransportError::Protocol)?;
        Ok(reply.payload)
    }
}

/// Encodes a call's result for the wire.
pub fn encode_reply(result: Result<PeerReply>) -> Vec<u8> {
    let wire: std::result::Result<PeerReply, WireError> = result.map_err(|e| WireError::from(&e));
    bincode::serialize(&wire).unwrap_or_else(|e| {
        let fallback: std::result::Result<PeerReply, WireError> =
            Err(WireError::from(&Error::Internal(format!("encode reply: {e}"))));
        bincode::serialize(&fallback).expect("an error reply encodes")
    })
}

/// Decodes a forwarded request.
pub fn decode_call(bytes: &[u8]) -> Result<PeerCall> {
    decode(bytes)
}

/// The same-for-every-message fields of one snapshot stream.
struct SnapshotStream {
    group: u64,
    cluster_id: u64,
    /// Bytes per second (0 = unpaced).
    pace: u64,
}

/// Reads `chunks` off the runtime's threads and sends them into `tx`: the header on the first
/// message, `last` on the final one. Every message taken by the channel counts as progress, and
/// its bytes are added to both `sent_bytes` counters (this stream's and the node's).
async fn produce_snapshot_chunks(
    stream: SnapshotStream,
    header: Vec<u8>,
    mut chunks: Box<dyn SnapshotChunks>,
    tx: tokio::sync::mpsc::Sender<pb::SnapshotChunk>,
    sent_bytes: [Arc<AtomicU64>; 2],
    last_progress: Arc<Mutex<tokio::time::Instant>>,
) -> std::result::Result<(), String> {
    let mut header = Some(header);
    loop {
        let (next, rest) = hotlake_raft::runtime::spawn_blocking(move || (chunks.next_chunk(), chunks))
            .await
            .map_err(|e| format!("snapshot read: {e}"))?;
        chunks = rest;
        let data = next?;
        let last = data.is_none();
        let data = data.unwrap_or_default();
        if stream.pace > 0 && !data.is_empty() {
            tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / stream.pace as f64)).await;
        }
        let bytes = data.len() as u64;
        let message = pb::SnapshotChunk {
            group: stream.group,
            header: header.take().unwrap_or_default(),
            data,
            cluster_id: stream.cluster_id,
            wire_version: WIRE_VERSION,
            last: Some(last),
        };
        if tx.send(message).await.is_err() {
            return Err("the peer closed the snapshot stream".into());
        }
        for counter in &sent_bytes {
            counter.fetch_add(bytes, Ordering::Relaxed);
        }
        *last_progress.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        if last {
            return Ok(());
        }
    }
}

/// How long a peer may take to install a snapshot of `bytes` once it has them all: it copies
/// them once more (from its stage into place), at no less than 16 MiB/s.
fn install_time_allowed(bytes: u64) -> Duration {
    Duration::from_secs(bytes / (16 << 20))
}

/// A snapshot's content being read for sending, chunk by chunk.
pub trait SnapshotChunks: Send {
    /// The next chunk, `None` once all were read. Blocking: called off the runtime's threads.
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<u8>>, String>;
}

/// A shard snapshot's chunks: pages of pairs, bincode-encoded.
struct ShardChunks(SnapshotReader);

impl SnapshotChunks for ShardChunks {
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<u8>>, String> {
        match self.0.next_page().map_err(|e| e.to_string())? {
            Some(pairs) => bincode::serialize(&pairs).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
}

/// Chunks held in memory (the meta group's snapshot is the cluster map: small).
struct HeldChunks(std::vec::IntoIter<Vec<u8>>);

impl SnapshotChunks for HeldChunks {
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<u8>>, String> {
        Ok(self.0.next())
    }
}

/// A snapshot opened for sending: the meta of what will be sent, and its content.
pub type OpenedSnapshot = (SnapshotMeta<NodeId, BasicNode>, Box<dyn SnapshotChunks>);

/// How a group's snapshot data is read for the wire.
pub trait SnapshotWire: RaftTypeConfig<NodeId = NodeId, Node = BasicNode> {
    /// Opens a snapshot for sending in chunks of about `chunk_bytes`. May return a newer meta
    /// than the one given when the content moved on (a flush since); the content always matches
    /// the returned meta. Blocking.
    fn open_chunks(snapshot: Snapshot<Self>, chunk_bytes: usize) -> std::result::Result<OpenedSnapshot, String>;
}

impl SnapshotWire for TypeConfig {
    fn open_chunks(snapshot: Snapshot<Self>, chunk_bytes: usize) -> std::result::Result<OpenedSnapshot, String> {
        let reader = snapshot.snapshot.open(chunk_bytes).map_err(|e| e.to_string())?;
        let state = reader.flushed();
        let applied = state.applied.map(hotlake_raft::log_id);
        if applied < snapshot.meta.last_log_id {
            return Err(format!(
                "shard content is at {:?}, older than the snapshot {:?}",
                state.applied, snapshot.meta.last_log_id
            ));
        }
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: hotlake_raft::stored_membership(&state.membership).map_err(|e| e.to_string())?,
            snapshot_id: format!("{}-sent", snapshot.meta.snapshot_id),
        };
        Ok((meta, Box::new(ShardChunks(reader))))
    }
}

impl SnapshotWire for MetaTypeConfig {
    fn open_chunks(snapshot: Snapshot<Self>, chunk_bytes: usize) -> std::result::Result<OpenedSnapshot, String> {
        let chunks: Vec<Vec<u8>> = snapshot.snapshot.0.chunks(chunk_bytes.max(1)).map(|c| c.to_vec()).collect();
        Ok((snapshot.meta, Box::new(HeldChunks(chunks.into_iter()))))
    }
}

/// Header of a snapshot stream.
#[derive(Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The leader's vote.
    pub vote: Vote<NodeId>,
    /// What the snapshot holds.
    pub meta: SnapshotMeta<NodeId, BasicNode>,
}

/// Builds openraft connections for one group.
pub struct PeerNetwork<C> {
    peers: Arc<Peers>,
    group: u64,
    types: PhantomData<C>,
}

impl<C> PeerNetwork<C> {
    /// Connections for `group` over the shared pool.
    pub fn new(peers: Arc<Peers>, group: u64) -> Self {
        PeerNetwork { peers, group, types: PhantomData }
    }
}

/// openraft's connection to one peer of one group.
pub struct PeerConnection<C> {
    peers: Arc<Peers>,
    group: u64,
    target: NodeId,
    addr: String,
    types: PhantomData<C>,
}

impl<C: SnapshotWire> RaftNetworkFactory<C> for PeerNetwork<C> {
    type Network = PeerConnection<C>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerConnection {
            peers: self.peers.clone(),
            group: self.group,
            target,
            addr: node.addr.clone(),
            types: PhantomData,
        }
    }
}

/// openraft's error for a failed RPC. A timeout names the RPC and the deadline it missed (the
/// replication timeout for appends, the election timeout for votes), so the log says which
/// bound was too tight.
fn rpc_error<E: std::error::Error>(
    target: NodeId,
    action: RPCTypes,
    deadline: Duration,
    e: TransportError,
) -> RPCError<NodeId, BasicNode, E> {
    match e {
        TransportError::Timeout => RPCError::Timeout(Timeout { action, id: 0, target, timeout: deadline }),
        TransportError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m))),
        TransportError::Protocol(m) => RPCError::Network(NetworkError::new(&std::io::Error::other(m))),
    }
}

type RaftResult<T> = std::result::Result<T, RaftError<NodeId>>;

impl<C: SnapshotWire> PeerConnection<C> {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: u32,
        request: &Req,
        heartbeat: bool,
        option: &RPCOption,
    ) -> std::result::Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // openraft gives an append the heartbeat interval; the floor gives it time to finish
        // (see `hotlake_raft::runtime::stretched`).
        let deadline = hotlake_raft::runtime::stretched(option.hard_ttl());
        let rpc = RaftRpc { group: self.group, kind, request, heartbeat };
        let result: RaftResult<Resp> = self.peers.raft(&self.addr, rpc, deadline).await.map_err(|e| {
            let action = if kind == KIND_VOTE { RPCTypes::Vote } else { RPCTypes::AppendEntries };
            rpc_error(self.target, action, deadline, e)
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<C: SnapshotWire> RaftNetwork<C> for PeerConnection<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let heartbeat = rpc.entries.is_empty();
        self.rpc(KIND_APPEND, &rpc, heartbeat, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(KIND_VOTE, &rpc, false, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<C>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> std::result::Result<SnapshotResponse<NodeId>, StreamingError<C, Fatal<NodeId>>> {
        let chunk_bytes = self.peers.options().snapshot_chunk_bytes_max;
        let opened = hotlake_raft::runtime::spawn_blocking(move || C::open_chunks(snapshot, chunk_bytes)).await;
        let (meta, chunks) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(StreamingError::Network(NetworkError::new(&std::io::Error::other(e)))),
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))),
        };
        let header = bincode::serialize(&SnapshotHeader { vote, meta })
            .map_err(|e| StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string()))))?;
        // A stream of any size may take long; it fails only when the peer stops taking chunks.
        let timeout = option.hard_ttl().max(Duration::from_secs(60));
        let send = self.peers.snapshot::<std::result::Result<SnapshotResponse<NodeId>, Fatal<NodeId>>>(
            &self.addr, self.group, header, chunks, timeout,
        );
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r,
        };
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(fatal)) => Err(StreamingError::RemoteError(RemoteError::new(self.target, fatal))),
            Err(TransportError::Timeout) => Err(StreamingError::Timeout(Timeout {
                action: openraft::RPCTypes::InstallSnapshot,
                id: 0,
                target: self.target,
                timeout,
            })),
            Err(TransportError::Unreachable(m)) => {
                Err(StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(m))))
            }
            Err(TransportError::Protocol(m)) => {
                Err(StreamingError::Network(NetworkError::new(&std::io::Error::other(m))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hotlake_engine::applied::EntryId;

    use super::*;
    use hotlake_engine::batch::{ColumnWrite, SeriesWrite, ShardCommand, Values};
    use hotlake_engine::digest::shard_digest;
    use hotlake_engine::shard::{ShardData, ShardOptions, ShardSnapshot};
    use hotlake_storage::{Engine, MemEngine};

    fn write(round: i64) -> ShardCommand {
        let series = (0..10)
            .map(|d| SeriesWrite {
                key: format!("m,device_id=d{d}"),
                device: format!("d{d}"),
                timestamps: (0..50).map(|t| (round * 50 + t) * 1_000_000_000).collect(),
                columns: vec![ColumnWrite {
                    field: "v".into(),
                    absent_rows: vec![],
                    values: Values::F64((0..50).map(|t| (round * 50 + t) as f64 * 0.5 + d as f64).collect()),
                }],
            })
            .collect();
        ShardCommand::Write(ShardWrite { tenant: "t".into(), series })
    }

    /// A shard snapshot streamed in small chunks into a replica's stage installs to the content
    /// and applied log id the shard had when the snapshot was opened, though the shard moved on
    /// while it was read.
    #[test]
    fn a_shard_snapshot_survives_chunking_and_installs_identically() {
        let engine: Engine = Arc::new(MemEngine::new());
        let shard = Arc::new(ShardData::open(engine, ShardId(3), ShardOptions::default()).unwrap());
        for i in 1..=20u64 {
            shard.apply(EntryId { term: 1, leader: 1, index: i }, write(i as i64)).unwrap();
            if i % 5 == 0 {
                let cut = shard.freeze();
                shard.flush(cut).unwrap();
            }
        }
        let state = shard.read().flushed.clone();
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_log_id: state.applied.map(hotlake_raft::log_id),
                last_membership: hotlake_raft::stored_membership(&state.membership).unwrap(),
                snapshot_id: "test".into(),
            },
            snapshot: Box::new(ShardSnapshot::of_shard(shard.clone())),
        };
        let (meta, mut chunks) = TypeConfig::open_chunks(snapshot, 4096).unwrap();
        assert_eq!(meta.last_log_id, state.applied.map(hotlake_raft::log_id));
        let sent_digest = shard_digest(&shard).unwrap();
        // Writes and a flush while the snapshot is read: the chunks still hold the state opened.
        shard.apply(EntryId { term: 1, leader: 1, index: 21 }, write(21)).unwrap();
        let cut = shard.freeze();
        shard.flush(cut).unwrap();
        let replica = ShardData::open(Arc::new(MemEngine::new()), ShardId(3), ShardOptions::default()).unwrap();
        replica.clear_stage().unwrap();
        let mut count = 0;
        while let Some(chunk) = chunks.next_chunk().unwrap() {
            assert!(chunk.len() < 4096 * 3, "a chunk is far over its bound");
            let pairs: Vec<hotlake_engine::shard::SnapshotPair> = bincode::deserialize(&chunk).unwrap();
            replica.stage(&pairs).unwrap();
            count += 1;
        }
        assert!(count > 1, "expected several chunks, got {count}");
        replica.engine().sync().unwrap();
        let installed = replica.install_staged().unwrap();
        assert_eq!(installed.applied, state.applied);
        assert_eq!(sent_digest, shard_digest(&replica).unwrap());
        assert_ne!(shard_digest(&shard).unwrap(), sent_digest, "the sender moved on meanwhile");
    }

    /// Errors keep their kind, routing hint and limit name across the wire.
    #[test]
    fn errors_survive_the_wire() {
        let cases = [
            Error::NotLeader { shard: ShardId(7), leader: Some(3) },
            Error::LimitExceeded { limit: "limits.query_points_max", message: "too many".into() },
            Error::InvalidArgument { message: "bad".into(), details: vec!["line 1".into()] },
            Error::Unavailable("down".into()),
        ];
        for e in cases {
            let wire: WireError = bincode::deserialize(&bincode::serialize(&WireError::from(&e)).unwrap()).unwrap();
            let back = wire.into_error();
            assert_eq!(back.kind(), e.kind());
            assert_eq!(back.to_string(), e.to_string());
        }
    }

    #[test]
    fn a_wire_format_outside_this_release_s_range_is_refused_with_the_reason() {
        use super::{check_wire_version, WIRE_VERSION, WIRE_VERSION_MIN};
        check_wire_version(WIRE_VERSION).unwrap();
        // Senders from before formats were numbered send 0 and spoke format 1.
        check_wire_version(0).unwrap();
        let newer = check_wire_version(WIRE_VERSION + 1).unwrap_err();
        assert!(newer.contains("newer release: upgrade this node"), "{newer}");
        assert!(newer.contains(&format!("formats {WIRE_VERSION_MIN} to {WIRE_VERSION}")), "{newer}");
    }
}
