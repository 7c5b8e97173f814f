//! Heartbeats of every group bound for one peer, sent together.
//!
//! openraft 0.9 runs a replication stream per group and follower, each with heartbeats of its
//! own: with 64 shard groups, a leader of all of them sends each follower 64 heartbeats per
//! interval, and as many again whenever reads confirm leadership (a query that scatters to
//! every shard confirms each of its leaders at once). Each was a gRPC request of its own. Here
//! a heartbeat (an `AppendEntries` with no entries) waits up to [`HEARTBEAT_LINGER`] for the
//! others bound for the same peer, and all go as one `RaftBatch` request; the peer hands each to
//! its group as its own Raft RPC and answers each.
//!
//! ```text
//!  group 1 ─┐
//!  group 2 ─┼─► queue of peer B ──(linger, or the batch is full)──► RaftBatch ──► B: each to its group
//!  group 9 ─┘        ▲ one per peer address                                 ◄── one answer each
//! ```
//!
//! Invariants:
//! - a heartbeat waits at most the linger before it is sent, and its caller gets exactly the
//!   answer of its own request (answers are matched by position; a reply with another count is
//!   an error for all);
//! - a batch holds at most [`HEARTBEATS_PER_BATCH_MAX`] heartbeats: the one that fills it sends
//!   it at once;
//! - a peer that does not know `RaftBatch` (a release before it) is sent each heartbeat on its
//!   own from then on, the batch that found out included: coalescing never cuts a peer off.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_proto::internal::v1 as pb;
use tokio::sync::oneshot;

use super::transport::TransportError;

/// How long a heartbeat waits for others bound for the same peer: short against the heartbeat
/// interval and the election timeout, and long enough to gather the heartbeats that a scatter
/// query's leadership checks send at once.
pub(crate) const HEARTBEAT_LINGER: Duration = Duration::from_millis(2);

/// Most heartbeats in one batch (a few hundred bytes each).
pub(crate) const HEARTBEATS_PER_BATCH_MAX: usize = 256;

/// The answer to one Raft request: the group's encoded result.
pub(crate) type RaftAnswer = Result<Vec<u8>, TransportError>;

/// How a batch, or a single request, reaches one peer.
pub(crate) trait RaftSender: Clone + Send + Sync + 'static {
    /// Sends `requests` as one batch; `Ok` holds one answer per request, in order.
    fn send_batch(
        &self,
        requests: Vec<pb::RaftRequest>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<RaftAnswer>, BatchRefused>> + Send;
    /// Sends one request on its own.
    fn send_one(&self, request: pb::RaftRequest, timeout: Duration) -> impl Future<Output = RaftAnswer> + Send;
}

/// Why a whole batch went unanswered.
#[derive(Debug)]
pub(crate) enum BatchRefused {
    /// The peer does not know `RaftBatch`.
    Unsupported,
    /// Anything else: every request of the batch fails with it.
    Failed(TransportError),
}

/// The queues of heartbeats, one per peer address.
#[derive(Default)]
pub(crate) struct Heartbeats {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Heartbeats sent, and the requests that carried them (batches and single sends).
    sent: AtomicU64,
    requests: Arc<AtomicU64>,
}

#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    /// The peer answered `unimplemented` to a batch: it gets single requests only.
    unsupported: AtomicBool,
}

#[derive(Default)]
struct Pending {
    waiting: Vec<(pb::RaftRequest, oneshot::Sender<RaftAnswer>)>,
    /// The longest deadline among the waiting heartbeats: the batch's own.
    timeout: Duration,
    /// A task will send what is waiting once the linger ends.
    scheduled: bool,
}

impl Pending {
    fn take(&mut self) -> (Vec<(pb::RaftRequest, oneshot::Sender<RaftAnswer>)>, Duration) {
        (std::mem::take(&mut self.waiting), std::mem::take(&mut self.timeout))
    }
}

impl Heartbeats {
    /// Heartbeats sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests that carried them so far (fewer than [`Heartbeats::sent`] by what coalescing
    /// saved).
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends the heartbeat `request` to the peer at `addr` with the others waiting for it, and
    /// waits up to `timeout` for its answer.
    pub(crate) async fn send<S: RaftSender>(
        &self,
        addr: &str,
        request: pb::RaftRequest,
        timeout: Duration,
        sender: S,
    ) -> RaftAnswer {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let queue = self.queue(addr);
        if queue.unsupported.load(Ordering::Relaxed) {
            self.requests.fetch_add(1, Ordering::Relaxed);
            return sender.send_one(request, timeout).await;
        }
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut pending = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.waiting.push((request, tx));
            pending.timeout = pending.timeout.max(timeout);
            if pending.waiting.len() >= HEARTBEATS_PER_BATCH_MAX {
                // A task already scheduled finds what comes after this batch.
                Some(pending.take())
            } else {
                if !pending.scheduled {
                    pending.scheduled = true;
                    let (queue, sender, requests) = (queue.clone(), sender.clone(), self.requests.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(HEARTBEAT_LINGER).await;
                        let (batch, timeout) = {
                            let mut pending = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
                            pending.scheduled = false;
                            pending.take()
                        };
                        send_batch(&queue, &sender, batch, timeout, &requests).await;
                    });
                }
                None
            }
        };
        if let Some((batch, batch_timeout)) = full {
            let (queue, requests) = (queue.clone(), self.requests.clone());
            tokio::spawn(async move { send_batch(&queue, &sender, batch, batch_timeout, &requests).await });
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Err(_)) => Err(TransportError::Unreachable("the heartbeat batch was dropped".into())),
            Ok(Ok(answer)) => answer,
        }
    }

    fn queue(&self, addr: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.entry(addr.to_string()).or_default().clone()
    }
}

/// Sends `batch` and hands each waiting heartbeat its answer.
async fn send_batch<S: RaftSender>(
    queue: &Queue,
    sender: &S,
    batch: Vec<(pb::RaftRequest, oneshot::Sender<RaftAnswer>)>,
    timeout: Duration,
    requests: &AtomicU64,
) {
    if batch.is_empty() {
        return;
    }
    let (sent, waiters): (Vec<pb::RaftRequest>, Vec<oneshot::Sender<RaftAnswer>>) = batch.into_iter().unzip();
    if queue.unsupported.load(Ordering::Relaxed) {
        return send_each(sender, sent, waiters, timeout, requests).await;
    }
    // The requests are kept for a peer that turns out not to know batches (heartbeats are small).
    let result = sender.send_batch(sent.clone(), timeout).await;
    if !matches!(result, Err(BatchRefused::Unsupported)) {
        requests.fetch_add(1, Ordering::Relaxed);
    }
    match result {
        Ok(answers) if answers.len() == waiters.len() => {
            for (answer, waiter) in answers.into_iter().zip(waiters) {
                // A caller that gave up has dropped its receiver: nothing to tell it.
                let _ = waiter.send(answer);
            }
        }
        Ok(answers) => {
            let reason = format!("{} answers to a batch of {} heartbeats", answers.len(), waiters.len());
            for waiter in waiters {
                let _ = waiter.send(Err(TransportError::Protocol(reason.clone())));
            }
        }
        Err(BatchRefused::Unsupported) => {
            queue.unsupported.store(true, Ordering::Relaxed);
            send_each(sender, sent, waiters, timeout, requests).await;
        }
        Err(BatchRefused::Failed(e)) => {
            for waiter in waiters {
                let _ = waiter.send(Err(e.clone()));
            }
        }
    }
}

/// Sends each request on its own, concurrently, and hands each waiter its answer.
async fn send_each<S: RaftSender>(
    sender: &S,
    sent: Vec<pb::RaftRequest>,
    waiters: Vec<oneshot::Sender<RaftAnswer>>,
    timeout: Duration,
    requests: &AtomicU64,
) {
    requests.fetch_add(sent.len() as u64, Ordering::Relaxed);
    let answers = futures::future::join_all(sent.into_iter().map(|r| sender.send_one(r, timeout))).await;
    for (answer, waiter) in answers.into_iter().zip(waiters) {
        let _ = waiter.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer in memory: answers each request with its group id, counts what it was sent.
    #[derive(Clone, Default)]
    struct FakePeer {
        batches: Arc<Mutex<Vec<usize>>>,
        singles: Arc<AtomicU64>,
        knows_batches: bool,
    }

    impl RaftSender for FakePeer {
        async fn send_batch(
            &self,
            requests: Vec<pb::RaftRequest>,
            _timeout: Duration,
        ) -> Result<Vec<RaftAnswer>, BatchRefused> {
            if !self.knows_batches {
                return Err(BatchRefused::Unsupported);
            }
            self.batches.lock().unwrap().push(requests.len());
            Ok(requests.iter().map(|r| Ok(r.group.to_be_bytes().to_vec())).collect())
        }

        async fn send_one(&self, request: pb::RaftRequest, _timeout: Duration) -> RaftAnswer {
            self.singles.fetch_add(1, Ordering::Relaxed);
            Ok(request.group.to_be_bytes().to_vec())
        }
    }

    fn heartbeat(group: u64) -> pb::RaftRequest {
        pb::RaftRequest { group, kind: 1, ..Default::default() }
    }

    async fn send_all(heartbeats: &Heartbeats, peer: &FakePeer, groups: std::ops::Range<u64>) -> Vec<RaftAnswer> {
        futures::future::join_all(
            groups.map(|g| heartbeats.send("b:1", heartbeat(g), Duration::from_secs(1), peer.clone())),
        )
        .await
    }

    /// Heartbeats sent together go as one batch, and each caller gets its own group's answer.
    #[tokio::test]
    async fn heartbeats_sent_together_go_in_one_batch_with_their_own_answers() {
        let heartbeats = Heartbeats::default();
        let peer = FakePeer { knows_batches: true, ..Default::default() };
        let answers = send_all(&heartbeats, &peer, 0..64).await;
        for (g, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), (g as u64).to_be_bytes().to_vec());
        }
        assert_eq!(*peer.batches.lock().unwrap(), vec![64]);
        assert_eq!((heartbeats.sent(), heartbeats.requests()), (64, 1));
    }

    /// A batch never holds more than the maximum: the heartbeat that fills it sends it.
    #[tokio::test]
    async fn a_full_batch_goes_at_once_and_the_rest_follow() {
        let heartbeats = Heartbeats::default();
        let peer = FakePeer { knows_batches: true, ..Default::default() };
        let n = HEARTBEATS_PER_BATCH_MAX as u64 + 10;
        assert!(send_all(&heartbeats, &peer, 0..n).await.iter().all(|a| a.is_ok()));
        assert_eq!(*peer.batches.lock().unwrap(), vec![HEARTBEATS_PER_BATCH_MAX, 10]);
    }

    /// A peer that does not know batches gets every heartbeat on its own, the first batch's too,
    /// and no batch is tried again.
    #[tokio::test]
    async fn a_peer_without_batches_gets_each_heartbeat_alone() {
        let heartbeats = Heartbeats::default();
        let peer = FakePeer::default();
        let answers = send_all(&heartbeats, &peer, 0..5).await;
        assert!(answers.iter().enumerate().all(|(g, a)| a.as_ref().unwrap() == &(g as u64).to_be_bytes().to_vec()));
        assert_eq!(send_all(&heartbeats, &peer, 5..8).await.len(), 3);
        assert_eq!(peer.singles.load(Ordering::Relaxed), 8);
        assert_eq!(heartbeats.requests(), 8);
    }
}
