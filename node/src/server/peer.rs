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
use hotlake_cluster::transport::{
    check_wire_version, decode_call, encode_reply, SnapshotHeader, SnapshotWire, KIND_APPEND, KIND_VOTE, META_GROUP,
    WIRE_VERSION,
};
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

async fn install<C: SnapshotWire>(
    raft: &Raft<C>,
    header: SnapshotHeader,
    chunks: Vec<Vec<u8>>,
) -> Result<Response<pb::Payload>, Status> {
    let data = C::from_chunks(chunks).map_err(Status::invalid_argument)?;
    let snapshot = Snapshot { meta: header.meta, snapshot: Box::new(data) };
    encode(&raft.install_full_snapshot(header.vote, snapshot).await)
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

fn not_hosted(group: u64) -> Status {
    // Unavailable, not an error reply: the sender's openraft retries, and the replica appears
    // here once this node applies the placement that creates it.
    Status::unavailable(format!("no replica of group {group} on this node"))
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn raft(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::Payload>, Status> {
        let req = request.into_inner();
        admit(&self.node, req.cluster_id, req.wire_version)?;
        if req.group == META_GROUP {
            return raft_rpc(&self.node.meta, req.kind, &req.payload).await;
        }
        let shard = u32::try_from(req.group).map_err(|_| Status::invalid_argument("bad group id"))?;
        let group = self.node.local_group(ShardId(shard)).ok_or_else(|| not_hosted(req.group))?;
        raft_rpc(&group.raft, req.kind, &req.payload).await
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::Payload>, Status> {
        let mut stream = request.into_inner();
        let mut group = None;
        let mut header: Option<SnapshotHeader> = None;
        let mut chunks = Vec::new();
        let mut bytes = 0usize;
        let bytes_max = self.node.config().storage.node_memtable_bytes_hard_max as usize;
        while let Some(chunk) = stream.message().await? {
            if header.is_none() {
                admit(&self.node, chunk.cluster_id, chunk.wire_version)?;
                header = Some(decode(&chunk.header)?);
                group = Some(chunk.group);
            } else if Some(chunk.group) != group {
                return Err(Status::invalid_argument("snapshot chunks of two groups in one stream"));
            }
            bytes += chunk.data.len();
            if bytes > bytes_max {
                return Err(Status::resource_exhausted(format!(
                    "snapshot larger than {bytes_max} bytes (storage.node_memtable_bytes_hard_max)"
                )));
            }
            chunks.push(chunk.data);
        }
        let (Some(group), Some(header)) = (group, header) else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        if group == META_GROUP {
            return install(&self.node.meta, header, chunks).await;
        }
        let shard = u32::try_from(group).map_err(|_| Status::invalid_argument("bad group id"))?;
        let g = self.node.local_group(ShardId(shard)).ok_or_else(|| not_hosted(group))?;
        install(&g.raft, header, chunks).await
    }

    async fn call(&self, request: Request<pb::Payload>) -> Result<Response<pb::Payload>, Status> {
        let request = request.into_inner();
        check_wire(request.wire_version)?;
        let call = decode_call(&request.payload).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let result = self.node.handle_call(call).await;
        Ok(Response::new(pb::Payload { payload: encode_reply(result), wire_version: WIRE_VERSION }))
    }
}
