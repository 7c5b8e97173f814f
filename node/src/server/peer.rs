//! The node-to-node gRPC service: Raft RPCs for every group hosted here (by group id), snapshot
//! streams, and calls forwarded by other nodes. See `cluster::transport` for the client side.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hotlake_proto::internal::v1 as pb;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::Snapshot;
use openraft::Raft;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use hotlake_cluster::meta::MetaSnapshot;
use hotlake_cluster::transport::{
    check_wire_version, decode_call, encode_reply, SnapshotHeader, SnapshotWire, KIND_APPEND, KIND_VOTE, META_GROUP,
    WIRE_VERSION,
};
use hotlake_engine::shard::{ShardSnapshot, SnapshotPair};
use hotlake_storage::ShardId;

/// The `Peer` service over a node.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        PeerService { node }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    bincode::deserialize(bytes).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<pb::Payload>, Status> {
    let payload = bincode::serialize(value).map_err(|e| Status::internal(format!("encode reply: {e}")))?;
    Ok(Response::new(pb::Payload { payload, wire_version: WIRE_VERSION }))
}

async fn raft_rpc<C: SnapshotWire>(raft: &Raft<C>, kind: u32, payload: &[u8]) -> Result<Response<pb::Payload>, Status> {
    match kind {
        KIND_APPEND => {
            let req: AppendEntriesRequest<C> = decode(payload)?;
            encode(&raft.append_entries(req).await)
        }
        KIND_VOTE => {
            let req: VoteRequest<u64> = decode(payload)?;
            encode(&raft.vote(req).await)
        }
        other => Err(Status::invalid_argument(format!("unknown raft rpc kind {other}"))),
    }
}

/// The incoming messages of one snapshot stream, checked: one group throughout, and an end
/// only at the message marked `last` (a stream cut short is an error, never a smaller snapshot).
/// A sender of the release before `last` marks no message: its stream ends where it ends.
struct IncomingSnapshot {
    stream: Streaming<pb::SnapshotChunk>,
    group: u64,
    first: Option<pb::SnapshotChunk>,
    ended: bool,
    unmarked: bool,
}

impl IncomingSnapshot {
    /// Reads the first message: the group and the header.
    async fn open(mut stream: Streaming<pb::SnapshotChunk>, node: &Node) -> Result<(Self, SnapshotHeader), Status> {
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        admit(node, first.cluster_id, first.wire_version)?;
        let header = decode(&first.header)?;
        let unmarked = first.last.is_none();
        Ok((IncomingSnapshot { stream, group: first.group, first: Some(first), ended: false, unmarked }, header))
    }

    /// The next message's data; `None` after the message marked `last`.
    async fn next_data(&mut self) -> Result<Option<Vec<u8>>, Status> {
        if self.ended {
            return Ok(None);
        }
        let message = match self.first.take() {
            Some(m) => m,
            None => match self.stream.message().await? {
                Some(m) => m,
                None if self.unmarked => return Ok(None),
                None => return Err(Status::aborted("the snapshot stream ended before its last chunk")),
            },
        };
        if message.group != self.group {
            return Err(Status::invalid_argument("snapshot chunks of two groups in one stream"));
        }
        if message.last.is_none() != self.unmarked {
            return Err(Status::invalid_argument("snapshot chunks with and without an end mark in one stream"));
        }
        self.ended = message.last == Some(true);
        Ok(Some(message.data))
    }
}

/// Receives the meta group's snapshot (the cluster map) into memory, up to `bytes_max`.
async fn receive_meta(
    node: &Node,
    mut incoming: IncomingSnapshot,
    header: SnapshotHeader,
) -> Result<Response<pb::Payload>, Status> {
    let bytes_max = node.config().storage.node_memtable_bytes_hard_max as usize;
    let mut content = Vec::new();
    while let Some(data) = incoming.next_data().await? {
        if content.len() + data.len() > bytes_max {
            return Err(Status::resource_exhausted(format!(
                "cluster map snapshot larger than {bytes_max} bytes (storage.node_memtable_bytes_hard_max)"
            )));
        }
        content.extend_from_slice(&data);
    }
    let snapshot = Snapshot { meta: header.meta, snapshot: Box::new(MetaSnapshot(content)) };
    encode(&node.meta.install_full_snapshot(header.vote, snapshot).await)
}

/// Receives a shard snapshot into the shard's stage space chunk by chunk (memory holds one
/// chunk, whatever the shard's size), syncs it, and has openraft install it.
async fn receive_shard(
    node: &Node,
    mut incoming: IncomingSnapshot,
    header: SnapshotHeader,
) -> Result<Response<pb::Payload>, Status> {
    let group = incoming.group;
    let shard = u32::try_from(group).map_err(|_| Status::invalid_argument("bad group id"))?;
    let g = node.local_group(ShardId(shard)).ok_or_else(|| not_hosted(group))?;
    let Ok(_receiving) = g.snapshot_receive.try_lock() else {
        return Err(Status::unavailable(format!("a snapshot of shard {shard} is being received already")));
    };
    let data = g.data.clone();
    stage_blocking(move || data.clear_stage()).await?;
    while let Some(chunk) = incoming.next_data().await? {
        if chunk.is_empty() {
            continue;
        }
        let pairs: Vec<SnapshotPair> = decode(&chunk)?;
        let data = g.data.clone();
        stage_blocking(move || data.stage(&pairs)).await?;
        node.metrics().snapshot_bytes_received.add(chunk.len() as u64);
    }
    let data = g.data.clone();
    stage_blocking(move || data.engine().sync()).await?;
    node.metrics().snapshots_received.inc();
    let snapshot = Snapshot { meta: header.meta, snapshot: Box::new(ShardSnapshot::staged()) };
    encode(&g.raft.install_full_snapshot(header.vote, snapshot).await)
}

/// Runs a write to the stage space off the runtime's threads.
async fn stage_blocking(
    write: impl FnOnce() -> Result<(), hotlake_storage::StorageError> + Send + 'static,
) -> Result<(), Status> {
    match hotlake_raft::runtime::spawn_blocking(write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Status::internal(format!("staging a received snapshot: {e}"))),
        Err(e) => Err(Status::internal(format!("staging a received snapshot: {e}"))),
    }
}

/// Refuses a message in a wire format this release cannot read, before decoding it: nodes of
/// releases too far apart must fail with a clear error, not misread each other.
fn check_wire(version: u32) -> Result<(), Status> {
    check_wire_version(version).map_err(Status::failed_precondition)
}

/// Refuses Raft traffic this node must not take part in: while it waits for the cluster to
/// accept its join (it may have lost its disk), and from another cluster (a reused address).
fn admit(node: &Node, sender_cluster: u64, wire_version: u32) -> Result<(), Status> {
    check_wire(wire_version)?;
    if !node.raft_open.load(Ordering::Relaxed) {
        return Err(Status::unavailable("this node has not been accepted into the cluster yet"));
    }
    // The peers pool holds the cluster id from the applied map: an atomic load per message.
    let mine = node.peers.cluster_id();
    if sender_cluster != 0 && mine != 0 && sender_cluster != mine {
        return Err(Status::failed_precondition(format!(
            "Raft message from cluster {sender_cluster:016x}; this node belongs to cluster {mine:016x}"
        )));
    }
    Ok(())
}

/// Most requests in one `RaftBatch`: a peer sends at most `HEARTBEATS_PER_BATCH_MAX` (256), and
/// anything far past it is not from a peer of this cluster.
const RAFT_BATCH_REQUESTS_MAX: usize = 1024;

fn not_hosted(group: u64) -> Status {
    // Unavailable, not an error reply: the sender's openraft retries, and the replica appears
    // here once this node applies the placement that creates it.
    Status::unavailable(format!("no replica of group {group} on this node"))
}

impl PeerService {
    /// One Raft RPC, handed to its group here.
    async fn raft_one(&self, req: pb::RaftRequest) -> Result<Response<pb::Payload>, Status> {
        admit(&self.node, req.cluster_id, req.wire_version)?;
        if req.group == META_GROUP {
            return raft_rpc(&self.node.meta, req.kind, &req.payload).await;
        }
        let shard = u32::try_from(req.group).map_err(|_| Status::invalid_argument("bad group id"))?;
        let group = self.node.local_group(ShardId(shard)).ok_or_else(|| not_hosted(req.group))?;
        raft_rpc(&group.raft, req.kind, &req.payload).await
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn raft(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::Payload>, Status> {
        self.raft_one(request.into_inner()).await
    }

    /// Each request goes to its group at once, as if sent on its own; one that fails answers
    /// with its reason and the others go on.
    async fn raft_batch(&self, request: Request<pb::RaftBatchRequest>) -> Result<Response<pb::RaftBatchReply>, Status> {
        let requests = request.into_inner().requests;
        if requests.len() > RAFT_BATCH_REQUESTS_MAX {
            return Err(Status::invalid_argument(format!(
                "{} requests in one Raft batch, at most {RAFT_BATCH_REQUESTS_MAX}",
                requests.len()
            )));
        }
        let answers = futures::future::join_all(requests.into_iter().map(|r| self.raft_one(r))).await;
        let replies = answers
            .into_iter()
            .map(|a| match a {
                Ok(reply) => pb::RaftReply { payload: reply.into_inner().payload, error: String::new() },
                Err(status) if status.message().is_empty() => {
                    pb::RaftReply { payload: Vec::new(), error: format!("{:?}", status.code()) }
                }
                Err(status) => pb::RaftReply { payload: Vec::new(), error: status.message().to_string() },
            })
            .collect();
        Ok(Response::new(pb::RaftBatchReply { replies, wire_version: WIRE_VERSION }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::Payload>, Status> {
        let (incoming, header) = IncomingSnapshot::open(request.into_inner(), &self.node).await?;
        if incoming.group == META_GROUP {
            receive_meta(&self.node, incoming, header).await
        } else {
            receive_shard(&self.node, incoming, header).await
        }
    }

    async fn call(&self, request: Request<pb::Payload>) -> Result<Response<pb::Payload>, Status> {
        let request = request.into_inner();
        check_wire(request.wire_version)?;
        let call = decode_call(&request.payload).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let node = self.node.clone();
        let result = crate::runtimes::on_request_runtime(async move { node.handle_call(call).await }).await;
        Ok(Response::new(pb::Payload { payload: encode_reply(result), wire_version: WIRE_VERSION }))
    }
}
