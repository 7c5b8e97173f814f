//! JSON for the admin replies' enum fields: their lower-case names (`active`, `leader`), not
//! their numbers. Named by the `serde` attributes that `build.rs` puts on the generated types.

use serde::Serializer;

use crate::v1::{NodeState, ReplicaRole};

pub(crate) fn node_state<S: Serializer>(raw: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match NodeState::try_from(*raw) {
        Ok(NodeState::Active) => "active",
        Ok(NodeState::Draining) => "draining",
        Ok(NodeState::Removing) => "removing",
        Ok(NodeState::Unspecified) | Err(_) => "unspecified",
    })
}

pub(crate) fn replica_role<S: Serializer>(raw: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match ReplicaRole::try_from(*raw) {
        Ok(ReplicaRole::Leader) => "leader",
        Ok(ReplicaRole::Follower) => "follower",
        Ok(ReplicaRole::Candidate) => "candidate",
        Ok(ReplicaRole::Learner) => "learner",
        Ok(ReplicaRole::Stopped) => "stopped",
        Ok(ReplicaRole::Unspecified) | Err(_) => "unspecified",
    })
}
