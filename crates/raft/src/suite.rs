//! openraft's storage test suite against our log store and state machine, on both engines.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::{ApplyObserver, StateMachine};
use super::{RaftStorageError, TypeConfig};
use hotlake_engine::shard::{ShardData, ShardOptions};
use hotlake_storage::{Engine, MemEngine, ShardId};

/// The suite checks storage, not what is reported.
struct Unobserved;

impl ApplyObserver for Unobserved {
    fn points_applied(&self, _: u64) {}
    fn flushed(&self, _: f64) {}
}

fn parts(engine: Engine) -> Result<(LogStore<TypeConfig>, StateMachine), RaftStorageError> {
    let shard = ShardId(3);
    let data = Arc::new(ShardData::open(engine.clone(), shard, ShardOptions::default()).map_err(super::read_err)?);
    Ok((LogStore::new(engine, hotlake_storage::Space::Log(shard)), StateMachine::new(data, Arc::new(Unobserved))))
}

#[test]
fn mem_engine_passes_openraft_suite() {
    struct B;
    impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, ()> for B {
        async fn build(&self) -> Result<((), LogStore<TypeConfig>, StateMachine), RaftStorageError> {
            let (ls, sm) = parts(Arc::new(MemEngine::new()))?;
            Ok(((), ls, sm))
        }
    }
    Suite::test_all(B).unwrap();
}

#[cfg(not(madsim))]
#[test]
fn rocks_engine_passes_openraft_suite() {
    struct B;
    impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, tempfile::TempDir> for B {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore<TypeConfig>, StateMachine), RaftStorageError> {
            let dir = tempfile::tempdir().map_err(super::write_err)?;
            let engine =
                hotlake_storage_rocks::RocksEngine::open(dir.path(), &Default::default()).map_err(super::write_err)?;
            let (ls, sm) = parts(Arc::new(engine))?;
            Ok((dir, ls, sm))
        }
    }
    Suite::test_all(B).unwrap();
}
