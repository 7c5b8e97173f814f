//! The cluster-aware client: seeds, the cached map, connections, retries.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hotlake_proto::errors::ErrorKind;
use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use tonic::transport::{Channel, Endpoint};

use crate::admin::AdminClient;
use crate::cluster::ClusterView;
use crate::connections::{normalize, Connections};
use crate::query::{LastBuilder, LastRow, QueryBuilder, QueryResult};
use crate::retry::RetryPolicy;
use crate::ClientError;

/// Changes every connection's endpoint before it is used: the place to set up TLS (with
/// tonic's TLS features enabled in the application) or HTTP/2 settings.
pub type EndpointHook = Arc<dyn Fn(Endpoint) -> Result<Endpoint, tonic::transport::Error> + Send + Sync>;

/// Settings of a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    seeds: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) endpoint_hook: Option<EndpointHook>,
    pub(crate) message_bytes_max: usize,
    #[cfg(not(madsim))]
    pub(crate) tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            seeds: Vec::new(),
            token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            retry: RetryPolicy::default(),
            endpoint_hook: None,
            message_bytes_max: 256 << 20,
            #[cfg(not(madsim))]
            tls: None,
        }
    }
}

impl ClientBuilder {
    /// Seed addresses (`host:port` or `http://host:port`); any member works, the client learns
    /// the rest from the map.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Sends `authorization: Bearer <token>` with every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Deadline of one attempt of a request (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Deadline of opening a connection (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How failed requests are retried (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Adjusts every endpoint before connecting (TLS, keep-alive, ...).
    pub fn endpoint_hook(mut self, hook: EndpointHook) -> Self {
        self.endpoint_hook = Some(hook);
        self
    }

    /// Connects with TLS, trusting the CA certificate(s) in `ca_pem` (PEM; the cluster CA that
    /// `hotlake cert ca` made, or the CA that signed the nodes' certificates). Each node's
    /// certificate must name the host of its address. (Not in simulation builds.)
    #[cfg(not(madsim))]
    pub fn tls_ca_pem(mut self, ca_pem: impl AsRef<[u8]>) -> Self {
        let ca = tonic::transport::Certificate::from_pem(ca_pem);
        self.tls = Some(tonic::transport::ClientTlsConfig::new().ca_certificate(ca));
        self
    }

    /// Largest message sent or received (default 256 MiB).
    pub fn message_bytes_max(mut self, bytes: usize) -> Self {
        self.message_bytes_max = bytes;
        self
    }

    /// Connects: fetches the cluster map from the first seed that answers.
    pub async fn connect(self) -> Result<Client, ClientError> {
        if self.seeds.is_empty() {
            return Err(ClientError::Connect { addrs: "(none)".into(), reason: "no seed address given".into() });
        }
        let seeds = self.seeds.iter().map(|s| normalize(s)).collect();
        let inner = Inner {
            seeds,
            conn: Connections::new(self)?,
            view: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        };
        let client = Client { inner: Arc::new(inner) };
        client.refresh_map().await?;
        Ok(client)
    }

    /// An admin client through `seeds` (opens no connection until its first call).
    pub fn admin(self) -> Result<AdminClient, ClientError> {
        let seeds: Vec<String> = self.seeds.iter().map(|s| normalize(s)).filter(|s| !s.is_empty()).collect();
        if seeds.is_empty() {
            return Err(ClientError::Connect { addrs: "(none)".into(), reason: "no seed address given".into() });
        }
        Ok(AdminClient::new(seeds, Connections::new(self)?))
    }
}

struct Inner {
    conn: Connections,
    seeds: Vec<String>,
    view: RwLock<Option<Arc<ClusterView>>>,
    /// One map refresh at a time; callers that waited reuse its result.
    refresh: tokio::sync::Mutex<()>,
}

/// A client of a Hotlake cluster. Cheap to clone; clones share connections and the map.
///
/// Writes are split by shard and sent straight to each shard's leader; the map is refreshed
/// when a node says it is stale or names another leader. Failed attempts are retried with
/// backoff and jitter within the [`RetryPolicy`] budget.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Outcome of a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Points acknowledged.
    pub points_written: u64,
    /// Field values acknowledged.
    pub values_written: u64,
    /// Attempts made (1 when nothing had to be retried).
    pub attempts: u32,
}

impl Client {
    /// A builder with default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with default settings through `seeds`.
    pub async fn connect<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Result<Client, ClientError> {
        ClientBuilder::default().seeds(seeds).connect().await
    }

    /// The cached cluster map.
    pub fn cluster_view(&self) -> Arc<ClusterView> {
        self.inner.view.read().unwrap_or_else(|p| p.into_inner()).clone().expect("a connected client has a map")
    }

    pub(crate) fn stub(&self, addr: &str) -> Result<HotlakeClient<Channel>, ClientError> {
        self.inner.conn.data(addr)
    }

    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.inner.conn.request(message)
    }

    /// A request without a deadline, for a call that streams for as long as it is read.
    pub(crate) fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        self.inner.conn.stream_request(message)
    }

    /// Fetches the map again (from a member, else a seed). Concurrent callers share one fetch.
    pub async fn refresh_map(&self) -> Result<Arc<ClusterView>, ClientError> {
        let before = self.inner.view.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|v| v.version);
        let _one = self.inner.refresh.lock().await;
        let now = self.inner.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(v) = now.as_ref().filter(|v| Some(v.version) != before && before.is_some()) {
            return Ok(v.clone());
        }
        let mut candidates: Vec<String> =
            now.iter().flat_map(|v| v.nodes.values().map(|n| n.grpc_addr.clone())).collect();
        candidates.extend(self.inner.seeds.iter().cloned());
        candidates.dedup();
        let mut last = String::from("no address to ask");
        for addr in &candidates {
            let answer = match self.stub(addr) {
                Ok(mut stub) => stub.cluster_map(self.request(pb::ClusterMapRequest {})).await,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match answer {
                Ok(r) => {
                    let fresh = ClusterView::from(r.into_inner());
                    if fresh.shards.is_empty() {
                        last = format!("{addr} has not joined a cluster yet");
                        continue;
                    }
                    // A removed or lagging node may answer with an older map; keep the newer.
                    let keep = now.as_ref().filter(|v| v.version > fresh.version && v.cluster_id == fresh.cluster_id);
                    let view = keep.cloned().unwrap_or_else(|| Arc::new(fresh));
                    *self.inner.view.write().unwrap_or_else(|p| p.into_inner()) = Some(view.clone());
                    return Ok(view);
                }
                Err(s) => {
                    // Every member knows the same tokens: a refused token is refused by all, and
                    // is the caller's to fix, not a reachability problem.
                    if matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) {
                        return Err(ClientError::from(s));
                    }
                    last = format!("{addr}: {}", s.message())
                }
            }
        }
        Err(ClientError::Connect { addrs: candidates.join(", "), reason: last })
    }

    fn note_leader(&self, shard: u32, leader: u64) {
        let mut guard = self.inner.view.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = guard.as_mut() {
            Arc::make_mut(v).set_leader(shard, leader);
        }
    }

    /// Writes `series` of `tenant`: split by shard, each part sent to its shard's leader,
    /// retried until acknowledged or the retry budget is spent. Acknowledged means committed
    /// on a majority of the shard's replicas.
    ///
    /// On error some shard parts may have been written; resending the whole write is safe
    /// (points are keyed by series, timestamp and field, and the last write wins).
    pub async fn write(&self, tenant: &str, series: Vec<pb::SeriesPoints>) -> Result<WriteSummary, ClientError> {
        let policy = self.inner.conn.settings().retry.clone();
        let started = Instant::now();
        let mut summary = WriteSummary::default();
        let mut pending = series;
        loop {
            summary.attempts += 1;
            let view = self.cluster_view();
            // Group by destination node, remembering each part's shard for leader hints.
            let mut by_node: BTreeMap<String, Vec<(u32, pb::SeriesPoints)>> = BTreeMap::new();
            for s in pending.drain(..) {
                let shard = view.shard_of(tenant, &s);
                let addr =
                    view.route(shard).map(|n| n.grpc_addr.clone()).unwrap_or_else(|| self.inner.seeds[0].clone());
                by_node.entry(addr).or_default().push((shard, s));
            }
            let sends = by_node.into_iter().map(|(addr, parts)| {
                let client = self.clone();
                let req = pb::WriteRequest {
                    tenant: tenant.to_string(),
                    series: parts.iter().map(|(_, s)| s.clone()).collect(),
                    map_version: view.version,
                    leader_only: true,
                };
                async move {
                    let result = match client.stub(&addr) {
                        Ok(mut stub) => {
                            stub.write(client.request(req)).await.map(|r| r.into_inner()).map_err(ClientError::from)
                        }
                        Err(e) => Err(e),
                    };
                    (parts, result)
                }
            });
            let mut last_error = None;
            let mut map_newer = false;
            for (parts, result) in futures::future::join_all(sends).await {
                match result {
                    Ok(r) => {
                        summary.points_written += r.points_written;
                        summary.values_written += r.values_written;
                        map_newer |= r.map_version > view.version;
                    }
                    Err(e) if e.is_retryable() => {
                        if let ClientError::Unavailable { leader: Some(l), .. } = &e {
                            if let Some((shard, _)) = parts.first() {
                                self.note_leader(*shard, *l);
                            }
                        }
                        pending.extend(parts.into_iter().map(|(_, s)| s));
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if map_newer {
                let _ = self.refresh_map().await;
            }
            let Some(error) = last_error else { return Ok(summary) };
            self.wait_before_retry(&policy, started, summary.attempts, error).await?;
        }
    }

    /// Sleeps before retry `attempt`, refreshing the map first; fails when the budget is spent.
    async fn wait_before_retry(
        &self,
        policy: &RetryPolicy,
        started: Instant,
        attempt: u32,
        error: ClientError,
    ) -> Result<(), ClientError> {
        let wait = policy.backoff(attempt);
        if started.elapsed() + wait >= policy.budget {
            return Err(ClientError::RetryBudgetExhausted {
                attempts: attempt,
                elapsed: started.elapsed(),
                budget: policy.budget,
                last: Box::new(error),
            });
        }
        let kind = error.kind().and_then(|k| k.parse::<ErrorKind>().ok());
        if matches!(
            kind,
            Some(ErrorKind::StaleMap | ErrorKind::NotLeader | ErrorKind::Transport | ErrorKind::Unavailable)
        ) {
            let _ = self.refresh_map().await;
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Streams batches to one node over a single call; the node routes them and acknowledges
    /// the stream as a whole at its end. Not retried (a stream cannot be replayed): use
    /// [`Client::write`] or a [`crate::BatchWriter`] where retries matter.
    pub async fn write_stream<S>(&self, batches: S) -> Result<WriteSummary, ClientError>
    where
        S: tonic::codegen::tokio_stream::Stream<Item = pb::WriteRequest> + Send + 'static,
    {
        let view = self.cluster_view();
        let addr =
            view.nodes.values().next().map(|n| n.grpc_addr.clone()).unwrap_or_else(|| self.inner.seeds[0].clone());
        let r = self.stub(&addr)?.write_stream(self.request(batches)).await?.into_inner();
        Ok(WriteSummary { points_written: r.points_written, values_written: r.values_written, attempts: 1 })
    }

    /// Runs a read on some member, moving to another on retryable errors, within the budget.
    pub(crate) async fn read<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(HotlakeClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let policy = self.inner.conn.settings().retry.clone();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let view = self.cluster_view();
            let addrs: Vec<String> = view.nodes.values().map(|n| n.grpc_addr.clone()).collect();
            let addr = addrs
                .get(attempt as usize % addrs.len().max(1))
                .cloned()
                .unwrap_or_else(|| self.inner.seeds[0].clone());
            attempt += 1;
            let error = match self.stub(&addr) {
                Ok(stub) => match call(stub).await {
                    Ok(v) => return Ok(v),
                    Err(s) => ClientError::from(s),
                },
                Err(e) => e,
            };
            if !error.is_retryable() {
                return Err(error);
            }
            self.wait_before_retry(&policy, started, attempt, error).await?;
        }
    }

    /// Runs a query.
    pub async fn query(&self, query: impl Into<QueryBuilder>) -> Result<QueryResult, ClientError> {
        let req = query.into().build();
        let resp = self
            .read(|mut stub| {
                let r = self.request(req.clone());
                async move { stub.query(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(QueryResult::from(resp))
    }

    /// Latest value of each requested field per device.
    pub async fn last(&self, query: impl Into<LastBuilder>) -> Result<Vec<LastRow>, ClientError> {
        let req = query.into().build();
        let resp = self
            .read(|mut stub| {
                let r = self.request(req.clone());
                async move { stub.last(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.rows.into_iter().map(LastRow::from).collect())
    }

    /// Health of every member, by node id (an error for a member that did not answer).
    pub async fn health(&self) -> BTreeMap<u64, Result<pb::HealthResponse, ClientError>> {
        let view = self.cluster_view();
        let asks = view.nodes.values().map(|n| {
            let client = self.clone();
            let (id, addr) = (n.id, n.grpc_addr.clone());
            async move {
                let r = match client.stub(&addr) {
                    Ok(mut stub) => stub
                        .health(client.request(pb::HealthRequest {}))
                        .await
                        .map(|r| r.into_inner())
                        .map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                (id, r)
            }
        });
        futures::future::join_all(asks).await.into_iter().collect()
    }
}
