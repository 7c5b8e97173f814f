//! Subscriptions: a stream of what is written, that reconnects and resumes by itself.
//!
//! ```text
//!  Client::subscribe ──► task: open Subscribe on a member ──messages──► channel ──► Subscription
//!                          ▲  (start = last cursor seen)     │
//!                          └── stream ended, failed or silent: next member, after a backoff
//! ```
//!
//! Every message carries the subscription's cursor after it. The task remembers the last one
//! and opens the next stream with it, so a reconnection neither skips nor repeats anything the
//! application was given. An error that a retry cannot fix (a cursor older than the feed kept,
//! a refused token, a bad filter) is the stream's last item.
//!
//! A member of a consumer group ([`SubscribeBuilder::group`]) instead resumes, on every
//! (re)connection, after the positions the group committed ([`Subscription::commit`]): what
//! was delivered but not committed comes again (at-least-once). For exactly-once, store each
//! message's cursor with what was made of it, and skip a message whose cursor position for
//! its shard is not past the stored one.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::query::{field_filter, field_filter_in, Cmp, FilterValue};
use crate::ClientError;
use hotlake_proto::v1 as pb;

/// A server sends at least one message this often (a progress message when nothing matched);
/// a stream silent for longer is taken for dead and opened again elsewhere.
const SILENCE_MAX: Duration = Duration::from_secs(20);

/// Longest pause between reconnection attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Messages buffered between the connection task and the application.
const BUFFERED_MESSAGES: usize = 64;

/// What to subscribe to, and from where.
#[derive(Clone, Debug, Default)]
pub struct SubscribeBuilder {
    req: pb::SubscribeRequest,
}

impl SubscribeBuilder {
    /// Everything written to `tenant` from now on (empty: the default tenant).
    pub fn new(tenant: &str) -> Self {
        SubscribeBuilder { req: pb::SubscribeRequest { tenant: tenant.to_string(), ..Default::default() } }
    }

    /// Only this measurement.
    pub fn measurement(mut self, measurement: &str) -> Self {
        self.req.measurement = measurement.to_string();
        self
    }

    /// Only series carrying this tag with this value (a filter on the device tag reads one
    /// shard only).
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.req.tags.push(pb::Tag { key: key.to_string(), value: value.to_string() });
        self
    }

    /// Only this field (repeat for several); series with none of the fields are left out.
    pub fn field(mut self, field: &str) -> Self {
        self.req.fields.push(field.to_string());
        self
    }

    /// Only the rows whose field `field` passes `cmp` with `value`, as
    /// [`QueryBuilder::filter`](crate::QueryBuilder::filter) says: `.filter("error", Cmp::Eq,
    /// "E_DECODER")` delivers the decoder errors as they are written. The field need not be
    /// one of those delivered.
    pub fn filter(mut self, field: &str, cmp: Cmp, value: impl Into<FilterValue>) -> Self {
        self.req.filters.push(field_filter(field, cmp, value.into()));
        self
    }

    /// Only the rows whose string field `field` equals one of `values`.
    pub fn filter_in<S: Into<String>>(mut self, field: &str, values: impl IntoIterator<Item = S>) -> Self {
        self.req.filters.push(field_filter_in(field, values));
        self
    }

    /// Start right after `cursor` (from an earlier [`SubscriptionMessage`]) instead of now.
    /// With [`SubscribeBuilder::group`]: where the group starts if it is new.
    pub fn after(mut self, cursor: &str) -> Self {
        self.req.start = cursor.to_string();
        self
    }

    /// Start with the stored points from `time` on (RFC 3339, or nanoseconds since the epoch),
    /// then what is written after them, with no gap and no duplicate between the two. The
    /// history comes as messages with [`SubscriptionMessage::history`] set; should the stream
    /// break before the live part began, the history is asked for again (and delivered again).
    pub fn history_from(mut self, time: &str) -> Self {
        self.req.start = format!("history:{time}");
        self
    }

    /// Start with the latest value of each field of each series the filter selects (as
    /// `Client::last` answers), then what is written after them; delivered as history, as
    /// with [`SubscribeBuilder::history_from`].
    pub fn latest(mut self) -> Self {
        self.req.start = "last".into();
        self
    }

    /// Read as a member of consumer group `name` (created on first use, starting now or
    /// [`SubscribeBuilder::after`]): the group's members share the shards, and each resumes
    /// after the positions committed with [`Subscription::commit`].
    pub fn group(mut self, name: &str) -> Self {
        self.req.group = name.to_string();
        self
    }
}

/// One message of a subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionMessage {
    /// The cursor after this message: give it to [`SubscribeBuilder::after`] to continue
    /// exactly from here (store it with what you made of the message for exactly-once).
    pub cursor: String,
    /// Shard and log index of the write these points come from (0 for a progress message).
    pub shard: u32,
    /// See `shard`.
    pub index: u64,
    /// The matching points; empty in a progress message (nothing matched for a while).
    pub series: Vec<pb::SeriesPoints>,
    /// In a consumer group: the member id of the stream that delivered it.
    pub member: String,
    /// Stored points of a [`SubscribeBuilder::history_from`] start, not a live write.
    pub history: bool,
}

impl SubscriptionMessage {
    /// Points in the message.
    pub fn points(&self) -> usize {
        self.series.iter().map(|s| s.timestamps_ns.len()).sum()
    }
}

/// A running subscription: a [`Stream`] of messages. Dropping it ends the subscription.
pub struct Subscription {
    rx: mpsc::Receiver<Result<SubscriptionMessage, ClientError>>,
    task: tokio::task::JoinHandle<()>,
    client: Client,
    req: pb::SubscribeRequest,
    /// The member id of the last message received (consumer groups).
    member: String,
}

impl Subscription {
    /// The next message (`None` once the subscription has ended).
    pub async fn recv(&mut self) -> Option<Result<SubscriptionMessage, ClientError>> {
        let next = self.rx.recv().await;
        if let Some(Ok(m)) = &next {
            self.member.clone_from(&m.member);
        }
        next
    }

    /// In a consumer group: commits what the application has processed, up to `cursor` (a
    /// message's), for the shards this member reads; returns those shards. Retried while the
    /// group's coordinator is moving; a commit after the member lost a shard leaves that shard's
    /// position to its new reader.
    pub async fn commit(&self, cursor: &str) -> Result<Vec<u32>, ClientError> {
        if self.req.group.is_empty() {
            return Err(ClientError::Rejected {
                kind: hotlake_proto::errors::ErrorKind::InvalidArgument.as_str().into(),
                message: "commit is for subscriptions of a consumer group (SubscribeBuilder::group)".into(),
            });
        }
        let req = pb::CommitConsumerRequest {
            tenant: self.req.tenant.clone(),
            group: self.req.group.clone(),
            member: self.member.clone(),
            cursor: cursor.to_string(),
        };
        let resp = self
            .client
            .read(|mut stub| {
                let r = self.client.request(req.clone());
                async move { stub.commit_consumer(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.shards)
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionMessage, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(m))) = &next {
            let member = m.member.clone();
            self.member = member;
        }
        next
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Subscribes to what is written: the stream yields every matching write in the order
    /// each shard applied it, and keeps going across leader changes and node loss (it moves
    /// to another member and resumes from its last cursor). It ends only with an error no
    /// retry can fix, or when dropped.
    pub fn subscribe(&self, what: SubscribeBuilder) -> Subscription {
        let (tx, rx) = mpsc::channel(BUFFERED_MESSAGES);
        let client = self.clone();
        let req = what.req.clone();
        let task = tokio::spawn(async move { client.run_subscription(what.req, tx).await });
        Subscription { rx, task, client: self.clone(), req, member: String::new() }
    }

    /// A tenant's consumer groups (`group` empty: all of them): committed positions, lag and
    /// members.
    pub async fn consumer_groups(&self, tenant: &str, group: &str) -> Result<Vec<pb::ConsumerGroup>, ClientError> {
        let req = pb::ConsumerGroupsRequest { tenant: tenant.to_string(), group: group.to_string() };
        let resp = self
            .read(|mut stub| {
                let r = self.request(req.clone());
                async move { stub.consumer_groups(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.groups)
    }

    async fn run_subscription(
        &self,
        mut req: pb::SubscribeRequest,
        tx: mpsc::Sender<Result<SubscriptionMessage, ClientError>>,
    ) {
        // Members are tried in turn; failures in a row set the pause before the next try.
        let (mut turn, mut failures) = (0usize, 0u32);
        loop {
            let view = self.cluster_view();
            let addrs: Vec<String> = view.nodes.values().map(|n| n.grpc_addr.clone()).collect();
            let addr = addrs.get(turn % addrs.len().max(1)).cloned().unwrap_or_default();
            turn += 1;
            match self.stream_from(&addr, &mut req, &tx).await {
                Ok(Ended::ReceiverGone) => return,
                // It worked for a while: reconnect at once.
                Ok(Ended::Broke) => failures = 0,
                Err(e) if e.is_retryable() => failures += 1,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            if failures as usize >= addrs.len().max(1) {
                // Every member failed in a row: the map may be out of date.
                let _ = self.refresh_map().await;
            }
            if failures > 0 {
                let pause = Duration::from_millis(50u64 << failures.min(7)).min(RECONNECT_BACKOFF_MAX);
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Reads one stream from `addr` until it ends, moving `req.start` along.
    async fn stream_from(
        &self,
        addr: &str,
        req: &mut pb::SubscribeRequest,
        tx: &mpsc::Sender<Result<SubscriptionMessage, ClientError>>,
    ) -> Result<Ended, ClientError> {
        let mut stub = self.stub(addr)?;
        let mut stream =
            stub.subscribe(self.stream_request(req.clone())).await.map_err(ClientError::from)?.into_inner();
        let mut delivered = false;
        loop {
            let next = match tokio::time::timeout(SILENCE_MAX, stream.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(status))) => {
                    let e = ClientError::from(status);
                    // A stream that worked and then broke: reconnect from the cursor at once.
                    return if delivered && e.is_retryable() { Ok(Ended::Broke) } else { Err(e) };
                }
                // Ended, or silent for too long: open it again elsewhere.
                Ok(None) | Err(_) => return Ok(Ended::Broke),
            };
            if !next.history {
                // Until the live part begins, a reconnection asks for the history again.
                req.start = next.cursor.clone();
            }
            let message = SubscriptionMessage {
                cursor: next.cursor,
                shard: next.shard,
                index: next.index,
                series: next.series,
                member: next.member,
                history: next.history,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(Ended::ReceiverGone);
            }
            delivered = true;
        }
    }
}

/// How a stream ended.
enum Ended {
    /// It broke after it had worked, ended, or went silent: open another one.
    Broke,
    /// The application dropped the subscription.
    ReceiverGone,
}
