//! The admin client: the typed cluster, node and shard operations of `hotlake.v1.Admin`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hotlake_client::ClientError> {
//! use hotlake_client::{Client, NodeState};
//! let admin = Client::builder().seeds(["127.0.0.1:7101"]).admin()?;
//! let status = admin.cluster_status().await?;
//! println!("map version {}: {}", status.map_version, status.readiness().err().unwrap_or("ready".into()));
//! admin.set_node_state(3, NodeState::Draining).await?;
//! # Ok(()) }
//! ```
//!
//! Any member answers an admin call; the cluster forwards changes to its meta leader. A call
//! moves on to the next address only when the previous one could not be reached, so a change
//! is never sent twice to nodes that both received it.

use std::ops::Deref;
use std::sync::Arc;

use hotlake_proto::errors::ErrorKind;
use hotlake_proto::v1 as pb;
use hotlake_proto::v1::admin_client::AdminClient as AdminStub;
use tonic::transport::Channel;

use crate::connections::Connections;
use crate::ClientError;

pub use pb::{
    ClusterPlanResponse as ClusterPlan, CreateTokenResponse as NewToken, InitClusterResponse as InitCluster, Member,
    NodeReport, NodeState, PlannedMove, ReplicaReport, ReplicaRole, ShardDigestResponse as ShardDigest, ShardPlacement,
    Tenant, TenantSettings, Token,
};

/// A client of the admin service. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct AdminClient {
    addrs: Arc<Vec<String>>,
    conn: Arc<Connections>,
}

impl AdminClient {
    pub(crate) fn new(addrs: Vec<String>, conn: Connections) -> Self {
        AdminClient { addrs: Arc::new(addrs), conn: Arc::new(conn) }
    }

    /// Addresses tried, in order.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Calls the first address that can be reached. Only an unreachable address (a transport
    /// failure: the request never arrived) moves the call on to the next one.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(AdminStub<Channel>, &Connections) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for addr in self.addrs.iter() {
            match self.at(addr, &call).await {
                Err(e) if e.kind() == Some(ErrorKind::Transport.as_str()) => last = Some(e),
                done => return done,
            }
        }
        Err(ClientError::Connect {
            addrs: self.addrs.join(", "),
            reason: last.map(|e| e.to_string()).unwrap_or_else(|| "no address to try".into()),
        })
    }

    async fn at<T, F, Fut>(&self, addr: &str, call: &F) -> Result<T, ClientError>
    where
        F: Fn(AdminStub<Channel>, &Connections) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let stub = self.conn.admin(addr)?;
        Ok(call(stub, &self.conn).await?.into_inner())
    }

    /// The map as a member applied it and every member's report about itself.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let r = self.call(|mut s, c| {
            let r = c.request(pb::ClusterStatusRequest {});
            async move { s.cluster_status(r).await }
        });
        Ok(ClusterStatus(r.await?))
    }

    /// Creates the cluster on a node started with manual bootstrap (`created` is false when
    /// it existed already).
    pub async fn init_cluster(&self) -> Result<InitCluster, ClientError> {
        self.call(|mut s, c| {
            let r = c.request(pb::InitClusterRequest {});
            async move { s.init_cluster(r).await }
        })
        .await
    }

    /// The placement changes still needed to reach the target placement.
    pub async fn plan(&self) -> Result<ClusterPlan, ClientError> {
        self.call(|mut s, c| {
            let r = c.request(pb::ClusterPlanRequest {});
            async move { s.cluster_plan(r).await }
        })
        .await
    }

    /// Registers a node by its public gRPC, HTTP and node-to-node addresses; returns the map
    /// version it was added at.
    pub async fn add_node(
        &self,
        id: u64,
        grpc_addr: &str,
        http_addr: &str,
        peer_addr: &str,
    ) -> Result<u64, ClientError> {
        let req = pb::AddNodeRequest {
            id,
            grpc_addr: grpc_addr.into(),
            http_addr: http_addr.into(),
            peer_addr: peer_addr.into(),
        };
        let r = self.call(|mut s, c| {
            let r = c.request(req.clone());
            async move { s.add_node(r).await }
        });
        Ok(r.await?.map_version)
    }

    /// Drains, removes or activates a node; returns the map version of the change.
    pub async fn set_node_state(&self, id: u64, state: NodeState) -> Result<u64, ClientError> {
        let req = pb::SetNodeStateRequest { id, state: state.into() };
        let r = self.call(|mut s, c| {
            let r = c.request(req);
            async move { s.set_node_state(r).await }
        });
        Ok(r.await?.map_version)
    }

    /// Moves one replica of `shard` from node `from` to node `to`; returns the map version.
    pub async fn move_replica(&self, shard: u32, from: u64, to: u64) -> Result<u64, ClientError> {
        let req = pb::MoveReplicaRequest { shard, from, to };
        let r = self.call(|mut s, c| {
            let r = c.request(req);
            async move { s.move_replica(r).await }
        });
        Ok(r.await?.map_version)
    }

    /// Hands `shard`'s leadership to voter `to`; returns once it leads.
    pub async fn transfer_leader(&self, shard: u32, to: u64) -> Result<(), ClientError> {
        let req = pb::TransferLeaderRequest { shard, to };
        self.call(|mut s, c| {
            let r = c.request(req);
            async move { s.transfer_leader(r).await }
        })
        .await
        .map(|_| ())
    }

    /// The digest of the replica of `shard` on the node at `addr`.
    pub async fn shard_digest_at(&self, addr: &str, shard: u32) -> Result<ShardDigest, ClientError> {
        let req = pb::ShardDigestRequest { shard };
        self.at(addr, &|mut s: AdminStub<Channel>, c: &Connections| {
            let r = c.request(req);
            async move { s.shard_digest(r).await }
        })
        .await
    }

    /// Creates a tenant; returns the map version it was created at.
    pub async fn create_tenant(&self, name: &str, settings: TenantSettings) -> Result<u64, ClientError> {
        let req = pb::CreateTenantRequest { name: name.into(), settings: Some(settings) };
        let r = self.call(|mut s, c| {
            let r = c.request(req.clone());
            async move { s.create_tenant(r).await }
        });
        Ok(r.await?.map_version)
    }

    /// Changes a tenant's settings; returns the map version of the change.
    pub async fn set_tenant(&self, name: &str, settings: TenantSettings) -> Result<u64, ClientError> {
        let req = pb::SetTenantRequest { name: name.into(), settings: Some(settings) };
        let r = self.call(|mut s, c| {
            let r = c.request(req.clone());
            async move { s.set_tenant(r).await }
        });
        Ok(r.await?.map_version)
    }

    /// The tenants this client's token administers.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, ClientError> {
        let r = self.call(|mut s, c| {
            let r = c.request(pb::ListTenantsRequest {});
            async move { s.list_tenants(r).await }
        });
        Ok(r.await?.tenants)
    }

    /// Creates a token with `scopes` (`read:fleet`, `write:*`, ...); its secret is in the
    /// answer, this once.
    pub async fn create_token(&self, name: &str, scopes: &[String]) -> Result<NewToken, ClientError> {
        let req = pb::CreateTokenRequest { name: name.into(), scopes: scopes.to_vec() };
        self.call(|mut s, c| {
            let r = c.request(req.clone());
            async move { s.create_token(r).await }
        })
        .await
    }

    /// The tokens this client's token administers (without secrets).
    pub async fn tokens(&self) -> Result<Vec<Token>, ClientError> {
        let r = self.call(|mut s, c| {
            let r = c.request(pb::ListTokensRequest {});
            async move { s.list_tokens(r).await }
        });
        Ok(r.await?.tokens)
    }

    /// Revokes a token; returns the map version of the change.
    pub async fn revoke_token(&self, id: u64) -> Result<u64, ClientError> {
        let r = self.call(|mut s, c| {
            let r = c.request(pb::RevokeTokenRequest { id });
            async move { s.revoke_token(r).await }
        });
        Ok(r.await?.map_version)
    }

    /// Moves a consumer group with no member reading to `to`: "now", or a cursor.
    pub async fn reset_consumer_group(&self, tenant: &str, group: &str, to: &str) -> Result<(), ClientError> {
        let req = pb::ResetConsumerGroupRequest { tenant: tenant.into(), group: group.into(), to: to.into() };
        self.call(|mut s, c| {
            let r = c.request(req.clone());
            async move { s.reset_consumer_group(r).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes a consumer group with no member reading.
    pub async fn delete_consumer_group(&self, tenant: &str, group: &str) -> Result<(), ClientError> {
        let req = pb::DeleteConsumerGroupRequest { tenant: tenant.into(), group: group.into() };
        self.call(|mut s, c| {
            let r = c.request(req.clone());
            async move { s.delete_consumer_group(r).await }
        })
        .await
        .map(|_| ())
    }

    /// Health of the node at `addr`.
    pub async fn health_at(&self, addr: &str) -> Result<pb::HealthResponse, ClientError> {
        let mut stub = self.conn.data(addr)?;
        Ok(stub.health(self.conn.request(pb::HealthRequest {})).await?.into_inner())
    }
}

/// The answer of [`AdminClient::cluster_status`], with what can be read from it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterStatus(pub pb::ClusterStatusResponse);

impl Deref for ClusterStatus {
    type Target = pb::ClusterStatusResponse;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl ClusterStatus {
    /// The member with id `id`.
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Every replica of `shard` a member reported, with that member's id.
    pub fn replicas_of(&self, shard: u32) -> impl Iterator<Item = (u64, &ReplicaReport)> + '_ {
        self.members.iter().flat_map(move |m| {
            m.report.iter().flat_map(|r| r.replicas.iter()).filter(move |r| r.shard == shard).map(move |r| (m.id, r))
        })
    }

    /// The node leading `shard`, as its own replica reports.
    pub fn leader_of(&self, shard: u32) -> Option<u64> {
        self.replicas_of(shard).find(|(_, r)| r.role() == ReplicaRole::Leader).map(|(id, _)| id)
    }

    /// The nodes `shard` is placed on.
    pub fn placement(&self, shard: u32) -> &[u64] {
        self.shards.iter().find(|p| p.shard == shard).map(|p| p.replicas.as_slice()).unwrap_or(&[])
    }

    /// Whether `shard` is hosted exactly where it is placed, by voters that agree on the
    /// membership, none of it joint, with a leader.
    pub fn is_settled(&self, shard: u32) -> bool {
        let placed = self.placement(shard);
        let seen: Vec<_> = self.replicas_of(shard).collect();
        let mut hosts: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
        hosts.sort_unstable();
        hosts == placed
            && seen.iter().all(|(_, r)| {
                matches!(r.role(), ReplicaRole::Leader | ReplicaRole::Follower)
                    && r.leader != 0
                    && !r.joint
                    && r.voters == placed
            })
    }

    /// `Ok` when every member answers and every shard has min(active members, replication
    /// factor) replicas, all settled; otherwise what is not ready yet.
    pub fn readiness(&self) -> Result<(), String> {
        let active = self.members.iter().filter(|m| m.state() == NodeState::Active).count();
        let want = active.min(self.replication_factor as usize).max(1);
        if let Some(m) = self.members.iter().find(|m| m.report.is_none()) {
            return Err(format!("node {} does not answer: {}", m.id, m.error));
        }
        for p in &self.shards {
            if p.replicas.len() != want {
                return Err(format!("shard {} has {} replicas placed, wants {want}", p.shard, p.replicas.len()));
            }
            if !self.is_settled(p.shard) {
                return Err(format!("shard {} is moving or has no leader", p.shard));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(shard: u32, role: ReplicaRole, voters: &[u64]) -> ReplicaReport {
        ReplicaReport { shard, role: role.into(), leader: 1, voters: voters.to_vec(), ..Default::default() }
    }

    fn member(id: u64, replicas: Vec<ReplicaReport>) -> Member {
        Member {
            id,
            state: NodeState::Active.into(),
            report: Some(NodeReport { replicas, ..Default::default() }),
            ..Default::default()
        }
    }

    fn two_nodes_one_shard(second: ReplicaReport) -> ClusterStatus {
        ClusterStatus(pb::ClusterStatusResponse {
            replication_factor: 3,
            members: vec![member(1, vec![replica(0, ReplicaRole::Leader, &[1, 2])]), member(2, vec![second])],
            shards: vec![ShardPlacement { shard: 0, replicas: vec![1, 2], epoch: 1 }],
            ..Default::default()
        })
    }

    #[test]
    fn a_shard_is_settled_only_when_every_placed_voter_agrees() {
        let settled = two_nodes_one_shard(replica(0, ReplicaRole::Follower, &[1, 2]));
        assert_eq!(settled.leader_of(0), Some(1));
        assert!(settled.is_settled(0));
        assert_eq!(settled.readiness(), Ok(()));

        let learning = two_nodes_one_shard(replica(0, ReplicaRole::Learner, &[1, 2]));
        assert!(!learning.is_settled(0));
        let stale_voters = two_nodes_one_shard(replica(0, ReplicaRole::Follower, &[1]));
        assert!(!stale_voters.is_settled(0));
        assert!(stale_voters.readiness().unwrap_err().contains("shard 0"));
    }

    #[test]
    fn a_silent_member_makes_the_cluster_not_ready() {
        let mut s = two_nodes_one_shard(replica(0, ReplicaRole::Follower, &[1, 2]));
        s.0.members[1].report = None;
        s.0.members[1].error = "connection refused".into();
        assert_eq!(s.readiness(), Err("node 2 does not answer: connection refused".into()));
    }
}
