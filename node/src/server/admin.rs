//! The gRPC service `hotlake.v1.Admin`: the cluster, node and shard operations, typed.
//!
//! Each call converts its request, calls the [`Admin`] service trait and converts the answer;
//! errors map to statuses exactly as the data service's do ([`to_status`]). The HTTP routes
//! under `/api/v1/cluster` call the same trait methods.
//!
//! Every call is authorized first: the cluster, node and shard calls need `admin:*`; tenant
//! and token calls check the tenants they touch (the node refuses a token that grants more
//! than its creator holds).

use std::sync::Arc;

use hotlake_proto::v1 as pb;
use hotlake_proto::v1::admin_server;
use tonic::{Request, Response, Status};

use super::auth::{principal_of_call, require, require_all};
use super::grpc::to_status;
use crate::node::{ClusterStatus, Cursor, ResetTo};
use crate::service::{Admin, Ingest, Subscriptions};
use hotlake_cluster::access::{Action, Principal, Scope, TenantSettings, TokenRecord};
use hotlake_cluster::map::{NodeInfo, NodeState};
use hotlake_cluster::transport::{NodeStatus, ReplicaStatus};
use hotlake_storage::ShardId;
use hotlake_types::error::Error;

/// The admin service over a node.
pub(crate) struct AdminService<S> {
    node: Arc<S>,
}

impl<S: Admin> AdminService<S> {
    /// A service answering for `node`.
    pub(crate) fn new(node: Arc<S>) -> Self {
        AdminService { node }
    }

    /// The caller, once it may do `action` on every tenant.
    fn authorize_all<T>(&self, request: &Request<T>, action: Action) -> Result<Principal, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        require_all(&principal, action).map_err(to_status)?;
        Ok(principal)
    }
}

fn tenant_settings_from_proto(s: Option<pb::TenantSettings>) -> TenantSettings {
    let s = s.unwrap_or_default();
    TenantSettings { retention_s: s.retention_s }
}

fn token_to_proto(t: TokenRecord) -> pb::Token {
    pb::Token {
        id: t.id,
        name: t.name,
        scopes: t.scopes.iter().map(Scope::to_string).collect(),
        created_ms: t.created_ms,
    }
}

fn node_state_to_proto(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Active => pb::NodeState::Active,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Removing => pb::NodeState::Removing,
    }
}

fn node_state_from_proto(raw: i32) -> Result<NodeState, Error> {
    match pb::NodeState::try_from(raw) {
        Ok(pb::NodeState::Active) => Ok(NodeState::Active),
        Ok(pb::NodeState::Draining) => Ok(NodeState::Draining),
        Ok(pb::NodeState::Removing) => Ok(NodeState::Removing),
        Ok(pb::NodeState::Unspecified) | Err(_) => {
            Err(Error::invalid(format!("node state {raw} is not one of ACTIVE, DRAINING or REMOVING")))
        }
    }
}

fn role_to_proto(role: &str) -> pb::ReplicaRole {
    match role {
        "leader" => pb::ReplicaRole::Leader,
        "follower" => pb::ReplicaRole::Follower,
        "candidate" => pb::ReplicaRole::Candidate,
        "learner" => pb::ReplicaRole::Learner,
        "stopped" => pb::ReplicaRole::Stopped,
        _ => pb::ReplicaRole::Unspecified,
    }
}

fn replica_to_proto(r: ReplicaStatus) -> pb::ReplicaReport {
    pb::ReplicaReport {
        shard: r.shard.0,
        role: role_to_proto(&r.role).into(),
        leader: r.leader.unwrap_or(0),
        voters: r.voters,
        joint: r.joint,
        applied: r.applied,
        flushed: r.flushed,
        memtable_bytes: r.memtable_bytes,
    }
}

fn report_to_proto(s: NodeStatus) -> pb::NodeReport {
    pb::NodeReport {
        map_version: s.map_version,
        meta_leader: s.meta_leader.unwrap_or(0),
        replicas: s.replicas.into_iter().map(replica_to_proto).collect(),
    }
}

fn status_to_proto(s: ClusterStatus) -> pb::ClusterStatusResponse {
    let map = s.map;
    pb::ClusterStatusResponse {
        cluster_id: map.cluster_id,
        map_version: map.version,
        shard_count: map.shard_count,
        replication_factor: map.replication_factor,
        device_tag: map.settings.device_tag.clone(),
        block_window_ms: map.settings.block_window_ms,
        auth: map.settings.auth,
        members: s
            .members
            .into_iter()
            .map(|m| pb::Member {
                id: m.info.id,
                grpc_addr: m.info.grpc_addr,
                http_addr: m.info.http_addr,
                state: node_state_to_proto(m.info.state).into(),
                report: m.status.map(report_to_proto),
                error: m.error.unwrap_or_default(),
                peer_addr: m.info.peer_addr,
            })
            .collect(),
        shards: map
            .shards
            .into_iter()
            .enumerate()
            .map(|(i, p)| pb::ShardPlacement { shard: i as u32, replicas: p.replicas, epoch: p.epoch })
            .collect(),
    }
}

/// Checks a node registration; nothing is proposed when it is unusable.
fn node_info_from_proto(r: pb::AddNodeRequest) -> Result<NodeInfo, Error> {
    let info = NodeInfo {
        id: r.id,
        grpc_addr: r.grpc_addr,
        http_addr: r.http_addr,
        peer_addr: r.peer_addr,
        state: NodeState::Active,
        incarnation: 0,
    };
    info.check().map_err(Error::invalid)?;
    Ok(info)
}

fn map_change(version: u64) -> Response<pb::MapChangeResponse> {
    Response::new(pb::MapChangeResponse { map_version: version })
}

#[tonic::async_trait]
impl<S: Admin + Ingest + Subscriptions> admin_server::Admin for AdminService<S> {
    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        Ok(Response::new(status_to_proto(self.node.cluster_status().await)))
    }

    async fn init_cluster(
        &self,
        request: Request<pb::InitClusterRequest>,
    ) -> Result<Response<pb::InitClusterResponse>, Status> {
        // Before a cluster exists there is no token to check.
        if self.node.map().is_bootstrapped() {
            self.authorize_all(&request, Action::Admin)?;
        }
        let (cluster_id, created, admin_token) = self.node.init_cluster().await.map_err(to_status)?;
        Ok(Response::new(pb::InitClusterResponse { cluster_id, created, admin_token: admin_token.unwrap_or_default() }))
    }

    async fn cluster_plan(
        &self,
        request: Request<pb::ClusterPlanRequest>,
    ) -> Result<Response<pb::ClusterPlanResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        let map = self.node.map();
        let moves = self
            .node
            .pending_moves()
            .into_iter()
            .map(|m| pb::PlannedMove { shard: m.shard.0, from: map.replicas(m.shard).to_vec(), to: m.replicas })
            .collect();
        Ok(Response::new(pb::ClusterPlanResponse { map_version: map.version, moves }))
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Result<Response<pb::MapChangeResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        let info = node_info_from_proto(request.into_inner()).map_err(to_status)?;
        self.node.add_node(info).await.map(map_change).map_err(to_status)
    }

    async fn set_node_state(
        &self,
        request: Request<pb::SetNodeStateRequest>,
    ) -> Result<Response<pb::MapChangeResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        let r = request.into_inner();
        let state = node_state_from_proto(r.state).map_err(to_status)?;
        self.node.set_node_state(r.id, state).await.map(map_change).map_err(to_status)
    }

    async fn move_replica(
        &self,
        request: Request<pb::MoveReplicaRequest>,
    ) -> Result<Response<pb::MapChangeResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        let r = request.into_inner();
        self.node.move_replica(ShardId(r.shard), r.from, r.to).await.map(map_change).map_err(to_status)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        let r = request.into_inner();
        self.node.transfer_leader(ShardId(r.shard), r.to).await.map_err(to_status)?;
        Ok(Response::new(pb::TransferLeaderResponse {}))
    }

    async fn shard_digest(
        &self,
        request: Request<pb::ShardDigestRequest>,
    ) -> Result<Response<pb::ShardDigestResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        let shard = request.into_inner().shard;
        let (digest, applied) = self.node.shard_digest(ShardId(shard)).await.map_err(to_status)?;
        Ok(Response::new(pb::ShardDigestResponse { shard, node: self.node.node_id(), digest, applied }))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::MapChangeResponse>, Status> {
        self.authorize_all(&request, Action::Admin)?;
        let r = request.into_inner();
        self.node
            .create_tenant(&r.name, tenant_settings_from_proto(r.settings))
            .await
            .map(map_change)
            .map_err(to_status)
    }

    async fn set_tenant(
        &self,
        request: Request<pb::SetTenantRequest>,
    ) -> Result<Response<pb::MapChangeResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let r = request.into_inner();
        require(&principal, Action::Admin, &r.name).map_err(to_status)?;
        self.node.set_tenant(&r.name, tenant_settings_from_proto(r.settings)).await.map(map_change).map_err(to_status)
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let tenants = self
            .node
            .map()
            .tenants
            .iter()
            .filter(|(name, _)| principal.allows(Action::Admin, name))
            .map(|(name, s)| pb::Tenant {
                name: name.clone(),
                settings: Some(pb::TenantSettings { retention_s: s.retention_s }),
            })
            .collect();
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let r = request.into_inner();
        let scopes = r
            .scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| to_status(Error::invalid(e)))?;
        let created = self.node.create_token(&principal, &r.name, scopes).await.map_err(to_status)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_to_proto(created.record)),
            secret: created.secret,
            map_version: self.node.map().version,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let tokens = self.node.tokens_of(&principal).into_iter().map(token_to_proto).collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::MapChangeResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let id = request.into_inner().id;
        self.node.revoke_token(&principal, id).await.map(map_change).map_err(to_status)
    }

    async fn reset_consumer_group(
        &self,
        request: Request<pb::ResetConsumerGroupRequest>,
    ) -> Result<Response<pb::ConsumerGroupChangeResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let r = request.into_inner();
        let tenant = self.node.tenant(&r.tenant).map_err(to_status)?.to_string();
        require(&principal, Action::Admin, &tenant).map_err(to_status)?;
        let to = match r.to.as_str() {
            "now" => ResetTo::Now,
            cursor => ResetTo::After(
                cursor
                    .parse::<Cursor>()
                    .map_err(|e| to_status(Error::invalid(format!("`to` is \"now\" or a cursor: {e}"))))?,
            ),
        };
        self.node.reset_consumer(&tenant, &r.group, to).await.map_err(to_status)?;
        Ok(Response::new(pb::ConsumerGroupChangeResponse {}))
    }

    async fn delete_consumer_group(
        &self,
        request: Request<pb::DeleteConsumerGroupRequest>,
    ) -> Result<Response<pb::ConsumerGroupChangeResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let r = request.into_inner();
        let tenant = self.node.tenant(&r.tenant).map_err(to_status)?.to_string();
        require(&principal, Action::Admin, &tenant).map_err(to_status)?;
        self.node.delete_consumer(&tenant, &r.group).await.map_err(to_status)?;
        Ok(Response::new(pb::ConsumerGroupChangeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_or_unknown_node_state_is_refused() {
        assert!(node_state_from_proto(pb::NodeState::Unspecified.into()).is_err());
        assert!(node_state_from_proto(42).is_err());
        for s in [NodeState::Active, NodeState::Draining, NodeState::Removing] {
            assert_eq!(node_state_from_proto(node_state_to_proto(s).into()).unwrap(), s);
        }
    }

    #[test]
    fn an_incomplete_registration_is_refused() {
        let ok =
            pb::AddNodeRequest { id: 4, grpc_addr: "h:1".into(), http_addr: "h:2".into(), peer_addr: "h:3".into() };
        assert!(node_info_from_proto(ok.clone()).is_ok());
        assert!(node_info_from_proto(pb::AddNodeRequest { id: 0, ..ok.clone() }).is_err());
        assert!(node_info_from_proto(pb::AddNodeRequest { peer_addr: String::new(), ..ok.clone() }).is_err());
        assert!(node_info_from_proto(pb::AddNodeRequest { grpc_addr: " ".into(), ..ok }).is_err());
    }
}
