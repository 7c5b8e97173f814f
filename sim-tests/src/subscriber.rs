//! A subscriber for the swarm: follows every write of the workload's measurement through
//! `Subscribe`, moving to another node whenever its stream breaks or goes silent and resuming
//! from the last cursor it was given, as the client library does.
//!
//! A member of a consumer group instead resumes, on every stream, after the positions the
//! group committed; it commits the cursor of what it was given about once a second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_client::HotlakeClient;

use crate::workload::Targets;

/// A stream silent for longer is taken for dead (the node sends progress every 5 s).
const SILENCE_MAX: Duration = Duration::from_secs(12);

/// How often a group member commits what it was given.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// What the subscriber was given.
#[derive(Default, Debug)]
pub struct Deliveries {
    /// Per shard: the log index of every entry delivered, in delivery order.
    pub entries: BTreeMap<u32, Vec<u64>>,
    /// Every point delivered: (device, t seconds) → values delivered for it.
    pub points: BTreeMap<(i64, i64), Vec<i64>>,
    /// Streams opened (the first one included).
    pub streams: u64,
    /// The first message arrived: writes after this are in the subscription.
    pub started: bool,
}

/// A subscriber running until stopped.
pub struct Subscriber {
    /// What it was given.
    pub seen: Arc<Mutex<Deliveries>>,
    stop: Arc<AtomicBool>,
    /// The consumer group it is a member of, if any.
    group: Option<String>,
}

impl Subscriber {
    /// A subscriber that has seen nothing.
    pub fn new() -> Subscriber {
        Subscriber { seen: Default::default(), stop: Arc::new(AtomicBool::new(false)), group: None }
    }

    /// A member of consumer group `group` that has seen nothing.
    pub fn member(group: &str) -> Subscriber {
        Subscriber { group: Some(group.to_string()), ..Subscriber::new() }
    }

    /// Tells it to finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Follows `m` of tenant `sim` from now on, through `targets` in turn.
    pub async fn run(&self, targets: Targets) {
        let mut cursor = String::from("now");
        let mut turn = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            let addr = {
                let t = targets.lock().unwrap();
                t[turn % t.len()].clone()
            };
            turn += 1;
            self.seen.lock().unwrap().streams += 1;
            if let Err(e) = self.stream_from(&addr, &mut cursor).await {
                tracing::debug!(addr, error = %e, "subscription stream ended");
            }
            if !self.stop.load(Ordering::Relaxed) {
                madsim::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn stream_from(&self, addr: &str, cursor: &mut String) -> Result<(), String> {
        let mut c = HotlakeClient::connect(format!("http://{addr}")).await.map_err(|e| e.to_string())?;
        let req = pb::SubscribeRequest {
            tenant: "sim".into(),
            measurement: "m".into(),
            // A member resumes after its group's commits; "now" only places a new group.
            start: if self.group.is_some() { "now".into() } else { cursor.clone() },
            group: self.group.clone().unwrap_or_default(),
            ..Default::default()
        };
        let mut committer = c.clone();
        let mut committed_at = madsim::time::Instant::now();
        let mut stream = tokio::time::timeout(SILENCE_MAX, c.subscribe(req))
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|s| s.to_string())?
            .into_inner();
        while !self.stop.load(Ordering::Relaxed) {
            let m = match tokio::time::timeout(SILENCE_MAX, stream.message()).await {
                Err(_) => return Err("silent".into()),
                Ok(Err(s)) => {
                    if s.code() == tonic::Code::OutOfRange || s.code() == tonic::Code::InvalidArgument {
                        panic!("the subscription was refused for good: {s}");
                    }
                    return Err(s.to_string());
                }
                Ok(Ok(None)) => return Err("stream ended".into()),
                Ok(Ok(Some(m))) => m,
            };
            self.take(&m);
            if let Some(group) = self.group.as_ref().filter(|_| committed_at.elapsed() >= COMMIT_EVERY) {
                committed_at = madsim::time::Instant::now();
                let commit = pb::CommitConsumerRequest {
                    tenant: "sim".into(),
                    group: group.clone(),
                    member: m.member.clone(),
                    cursor: m.cursor.clone(),
                };
                // A commit that fails (the coordinator moved, the member was dealt other
                // shards) only means more is delivered again.
                if let Err(e) = tokio::time::timeout(SILENCE_MAX, committer.commit_consumer(commit)).await {
                    tracing::debug!(error = %e, "commit timed out");
                }
            }
            *cursor = m.cursor;
        }
        Ok(())
    }

    fn take(&self, m: &pb::SubscribeResponse) {
        let mut seen = self.seen.lock().unwrap();
        seen.started = true;
        if m.series.is_empty() {
            return;
        }
        seen.entries.entry(m.shard).or_default().push(m.index);
        for s in &m.series {
            let device: i64 = s
                .tags
                .iter()
                .find(|t| t.key == "device_id")
                .and_then(|t| t.value.strip_prefix('d'))
                .and_then(|d| d.parse().ok())
                .expect("the workload's devices are d0, d1, …");
            for f in &s.fields {
                if let Some(pb::field_column::Values::I64(v)) = &f.values {
                    for (t, value) in s.timestamps_ns.iter().zip(&v.values) {
                        seen.points.entry((device, t / 1_000_000_000)).or_default().push(*value);
                    }
                }
            }
        }
    }
}

impl Default for Subscriber {
    fn default() -> Self {
        Self::new()
    }
}
