//! The HTTP API: InfluxDB line-protocol writes, JSON queries, health and metrics.
//!
//! | route | what |
//! |---|---|
//! | `POST /write?db=&precision=` | InfluxDB 1.x write |
//! | `POST /api/v2/write?bucket=&org=&precision=` | InfluxDB 2.x write |
//! | `POST /api/v1/query` | JSON query (see `server::json`) |
//! | `POST /api/v1/last` | latest values per device |
//! | `GET /api/v1/subscribe` | a subscription as Server-Sent Events (see `server::sse`) |
//! | `POST /api/v1/consumers/{group}/commit?db=` | commit a consumer group member's cursor: `{"member", "cursor"}` |
//! | `GET /health` | 200 when every shard has a leader, 503 otherwise |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /api/v1/cluster` | cluster map and every member's status |
//! | `POST /api/v1/cluster/init` | create the cluster on a node started with `cluster.bootstrap = "manual"` |
//! | `GET /api/v1/cluster/plan` | placement changes still needed to reach the target placement |
//! | `POST /api/v1/cluster/nodes` | add a node by hand: `{"id", "grpc_addr", "http_addr", "peer_addr"}` |
//! | `POST /api/v1/cluster/nodes/{id}/drain` | move a node's replicas away; it stays a member |
//! | `POST /api/v1/cluster/nodes/{id}/remove` | move a node's replicas away, then remove it |
//! | `POST /api/v1/cluster/nodes/{id}/activate` | let a drained node take replicas again |
//! | `POST /api/v1/shards/{id}/move` | move one replica: `{"from": node, "to": node}` |
//! | `POST /api/v1/shards/{id}/transfer-leader` | hand the shard's leadership to a voter: `{"to": node}` |
//! | `GET /api/v1/shards/{id}/digest` | digest of this node's replica of a shard |
//!
//! Writes follow InfluxDB: good lines are written, bad lines are reported; the reply is 204 when
//! every line was written and 400 with a JSON body listing each bad line otherwise.
//!
//! On a cluster with authentication on, every route but `/health` (and `cluster/init` before a
//! cluster exists) needs a token (`server::auth` lists the forms it may take): writes need
//! `write` on their tenant, queries, `last` and subscriptions need `read` on it, and `/metrics` and the
//! cluster and shard routes need `admin:*`. No token, or an unknown one, is answered 401; a
//! token without the scope, 403.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::auth::{require, require_all, token_of_authorization};
use super::json::{last_json, result_json, ErrorBody, ErrorInfo, JsonLast, JsonQuery};
use crate::service::Service;
use hotlake_cluster::access::{Action, Principal};
use hotlake_cluster::map::{NodeInfo, NodeState};
use hotlake_ingest::line_protocol::Precision;
use hotlake_types::error::Error;

/// Maps a node error to an HTTP response with a JSON body.
pub fn to_response(e: Error) -> Response {
    let status = match &e {
        Error::InvalidArgument { .. } | Error::PartialWrite { .. } => StatusCode::BAD_REQUEST,
        Error::LimitExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::NotLeader { .. } | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::StaleMap { .. } => StatusCode::CONFLICT,
        Error::Storage(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::CursorExpired(_) => StatusCode::GONE,
    };
    let details = match &e {
        Error::InvalidArgument { details, .. } => details.iter().map(|d| json!(d)).collect(),
        Error::PartialWrite { rejected, .. } => rejected.iter().map(|d| json!(d)).collect(),
        _ => Vec::new(),
    };
    let body = ErrorBody { error: ErrorInfo { kind: e.kind().to_string(), message: e.to_string(), details } };
    let unauthenticated = matches!(e, Error::Unauthenticated(_));
    let mut response = (status, Json(body)).into_response();
    if unauthenticated {
        // RFC 9110: a 401 names the scheme it takes.
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Token realm=\"hotlake\""),
        );
    }
    if e.error_kind().is_retryable() {
        // The request was refused for when it came, not for what it holds: say when to retry.
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    }
    response
}

/// The HTTP router over a node.
pub fn router<S: Service>(node: Arc<S>) -> Router {
    let body_max = node.limits().body_bytes_max as usize;
    // The cluster's own operations: every one needs admin on every tenant.
    let admin = Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/api/v1/cluster", get(cluster_status::<S>))
        .route("/api/v1/cluster/plan", get(cluster_plan::<S>))
        .route("/api/v1/cluster/nodes", post(add_node::<S>))
        .route("/api/v1/cluster/nodes/{id}/{action}", post(node_action::<S>))
        .route("/api/v1/shards/{id}/move", post(move_replica::<S>))
        .route("/api/v1/shards/{id}/transfer-leader", post(transfer_leader::<S>))
        .route("/api/v1/shards/{id}/digest", get(shard_digest::<S>))
        .route_layer(axum::middleware::from_fn_with_state(node.clone(), admin_only::<S>));
    Router::new()
        .route("/write", post(write_v1::<S>))
        .route("/api/v2/write", post(write_v2::<S>))
        .route("/api/v1/query", post(query::<S>))
        .route("/api/v1/last", post(last::<S>))
        .route("/api/v1/subscribe", get(super::sse::subscribe::<S>))
        .route("/api/v1/consumers/{group}/commit", post(super::sse::commit::<S>))
        .route("/health", get(health::<S>))
        .route("/api/v1/cluster/init", post(init_cluster::<S>))
        .merge(admin)
        .layer(DefaultBodyLimit::max(body_max))
        .with_state(node)
}

/// The principal of a request: its `Authorization` header, else its `p` URL parameter
/// (InfluxDB 1.x's `u`/`p`).
fn principal<S: Service>(node: &S, headers: &HeaderMap, params: &HashMap<String, String>) -> Result<Principal, Error> {
    node.authenticate(token_of_request(headers, params)?.as_deref())
}

/// The token of a request: its `Authorization` header, else its `p` URL parameter.
pub(super) fn token_of_request(headers: &HeaderMap, params: &HashMap<String, String>) -> Result<Option<String>, Error> {
    match headers.get(axum::http::header::AUTHORIZATION) {
        Some(value) => Ok(Some(token_of_authorization(
            value
                .to_str()
                .map_err(|_| Error::Unauthenticated("the Authorization header is not printable ASCII".into()))?,
        )?)),
        None => Ok(params.get("p").cloned()),
    }
}

/// Lets a request through to the cluster's own routes only with admin on every tenant.
async fn admin_only<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match principal(&*node, request.headers(), &params).and_then(|p| require_all(&p, Action::Admin)) {
        Ok(()) => next.run(request).await,
        Err(e) => to_response(e),
    }
}

/// The tenant a request names (the default one when it names none), once its principal may
/// do `action` on it.
pub(super) fn authorized_tenant<S: Service>(
    node: &S,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    action: Action,
    tenant: &str,
) -> Result<String, Error> {
    let principal = principal(node, headers, params)?;
    let tenant = node.tenant(tenant)?.to_string();
    require(&principal, action, &tenant)?;
    Ok(tenant)
}

async fn write_v1<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(node, "db", params, headers, body).await
}

async fn write_v2<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(node, "bucket", params, headers, body).await
}

/// Decompresses a gzip body, refusing to inflate past `max` bytes.
fn gunzip(body: &[u8], max: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    // Every member: `pigz` and concatenated `.gz` files produce bodies of several.
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(max + 1);
    reader.read_to_end(&mut out).map_err(|e| Error::invalid(format!("body is not valid gzip: {e}")))?;
    if out.len() as u64 > max {
        return Err(Error::LimitExceeded {
            limit: "limits.body_bytes_max",
            message: format!("decompressed body is larger than {max} bytes"),
        });
    }
    Ok(out)
}

/// A line-protocol write to the tenant named by the URL parameter `tenant_param` (InfluxDB
/// 1.x `db`, 2.x `bucket`), once the request's token may write to it.
async fn write<S: Service>(
    node: Arc<S>,
    tenant_param: &str,
    params: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = params.get(tenant_param).map(String::as_str).unwrap_or_default();
    let tenant = match authorized_tenant(&*node, &headers, &params, Action::Write, tenant) {
        Ok(t) => t,
        Err(e) => return to_response(e),
    };
    let precision = match params.get("precision").map(|p| Precision::parse(p)).transpose() {
        Ok(p) => p.unwrap_or(Precision::Nanoseconds),
        Err(e) => return to_response(Error::invalid(e)),
    };
    let gzip =
        headers.get("content-encoding").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    // Owned from here on (no copy: a body held only by this request becomes the vector), so
    // the parse can move it off the async workers.
    let bytes: Vec<u8> = if gzip {
        // Inflating is CPU work in proportion to the body: off the async workers.
        let max = node.limits().body_bytes_max;
        match hotlake_raft::runtime::spawn_blocking(move || gunzip(&body, max)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return to_response(e),
            Err(e) => return to_response(Error::Internal(format!("inflating the body: {e}"))),
        }
    } else {
        Vec::from(body)
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
            return to_response(Error::invalid(format!(
                "body is not UTF-8: invalid byte at offset {valid} (line {line}); nothing was written"
            )));
        }
    };
    match node.write_lines(&tenant, text, precision, crate::clock::now_ns()).await {
        Ok((summary, line_errors)) => {
            if line_errors.is_empty() && summary.rejected.is_empty() {
                return StatusCode::NO_CONTENT.into_response();
            }
            let mut details: Vec<serde_json::Value> = line_errors
                .iter()
                .take(1000)
                .map(|e| json!({"line": e.line, "column": e.column, "reason": e.reason}))
                .collect();
            details.extend(summary.rejected.iter().map(|r| json!({"reason": r})));
            let body = json!({
                "error": {
                    "kind": "partial_write",
                    "message": format!(
                        "partial write: {} points written, {} lines rejected",
                        summary.points,
                        line_errors.len()
                    ),
                    "points_written": summary.points,
                    "lines_rejected": line_errors.len(),
                    "details": details,
                }
            });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(e) => to_response(e),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::invalid(format!("request body is not a valid query: {e} (line {}, column {})", e.line(), e.column()))
    })
}

async fn query<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = match parse_json::<JsonQuery>(&body).and_then(|q| q.into_query()).and_then(|mut q| {
        q.tenant = authorized_tenant(&*node, &headers, &params, Action::Read, &q.tenant)?;
        Ok(q)
    }) {
        Ok(q) => q,
        Err(e) => return to_response(e),
    };
    match node.query(q).await {
        Ok(r) => Json(result_json(&r)).into_response(),
        Err(e) => to_response(e),
    }
}

async fn last<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = match parse_json::<JsonLast>(&body).and_then(|q| q.into_query()).and_then(|mut q| {
        q.tenant = authorized_tenant(&*node, &headers, &params, Action::Read, &q.tenant)?;
        Ok(q)
    }) {
        Ok(q) => q,
        Err(e) => return to_response(e),
    };
    match node.last(q).await {
        Ok(rows) => Json(last_json(&rows)).into_response(),
        Err(e) => to_response(e),
    }
}

async fn health<S: Service>(State(node): State<Arc<S>>) -> Response {
    let h = node.health();
    let ok = h.is_ok();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "node_id": h.node_id,
        "shards": h.shards,
        "shards_with_leader": h.shards_with_leader,
        "problems": h.problems,
        "version": env!("CARGO_PKG_VERSION"),
    });
    (status, Json(body)).into_response()
}

async fn metrics<S: Service>(State(node): State<Arc<S>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], node.metrics_text()).into_response()
}

async fn cluster_status<S: Service>(State(node): State<Arc<S>>) -> Response {
    let mut status = serde_json::to_value(node.cluster_status().await).unwrap_or_default();
    // Token records hold the hashes of secrets: `token list` shows tokens, this never does.
    if let Some(map) = status.get_mut("map").and_then(|m| m.as_object_mut()) {
        map.remove("tokens");
    }
    Json(status).into_response()
}

/// Parses a JSON body into `T`, with an error that says what is wrong.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("bad JSON body: {e}")))
}

/// Needs no token before a cluster exists (there is none to check yet); after, `admin:*`.
async fn init_cluster<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if node.map().is_bootstrapped() {
        if let Err(e) = principal(&*node, &headers, &params).and_then(|p| require_all(&p, Action::Admin)) {
            return to_response(e);
        }
    }
    match node.init_cluster().await {
        Ok((id, created, admin_token)) => Json(json!({
            "cluster_id": format!("{id:016x}"),
            "created": created,
            "admin_token": admin_token,
        }))
        .into_response(),
        Err(e) => to_response(e),
    }
}

async fn cluster_plan<S: Service>(State(node): State<Arc<S>>) -> Response {
    let map = node.map();
    let moves: Vec<_> = node
        .pending_moves()
        .into_iter()
        .map(|m| json!({ "shard": m.shard.0, "from": map.replicas(m.shard), "to": m.replicas }))
        .collect();
    Json(json!({ "map_version": map.version, "moves": moves })).into_response()
}

#[derive(serde::Deserialize)]
struct NewNode {
    id: u64,
    grpc_addr: String,
    http_addr: String,
    peer_addr: String,
}

async fn add_node<S: Service>(State(node): State<Arc<S>>, body: Bytes) -> Response {
    let n: NewNode = match json_body(&body) {
        Ok(n) => n,
        Err(e) => return to_response(e),
    };
    let info = NodeInfo {
        id: n.id,
        grpc_addr: n.grpc_addr,
        http_addr: n.http_addr,
        peer_addr: n.peer_addr,
        state: NodeState::Active,
        incarnation: 0,
    };
    if let Err(why) = info.check() {
        return to_response(Error::invalid(why));
    }
    match node.add_node(info).await {
        Ok(version) => Json(json!({ "node": n.id, "map_version": version })).into_response(),
        Err(e) => to_response(e),
    }
}

async fn node_action<S: Service>(State(node): State<Arc<S>>, Path((id, action)): Path<(u64, String)>) -> Response {
    let state = match action.as_str() {
        "drain" => NodeState::Draining,
        "remove" => NodeState::Removing,
        "activate" => NodeState::Active,
        other => {
            return to_response(Error::invalid(format!("unknown node action {other:?}: drain, remove or activate")))
        }
    };
    match node.set_node_state(id, state).await {
        Ok(version) => Json(json!({ "node": id, "state": state.name(), "map_version": version })).into_response(),
        Err(e) => to_response(e),
    }
}

#[derive(serde::Deserialize)]
struct ReplicaMove {
    from: u64,
    to: u64,
}

async fn move_replica<S: Service>(State(node): State<Arc<S>>, Path(id): Path<u32>, body: Bytes) -> Response {
    let m: ReplicaMove = match json_body(&body) {
        Ok(m) => m,
        Err(e) => return to_response(e),
    };
    match node.move_replica(hotlake_storage::ShardId(id), m.from, m.to).await {
        Ok(version) => Json(json!({ "shard": id, "from": m.from, "to": m.to, "map_version": version })).into_response(),
        Err(e) => to_response(e),
    }
}

#[derive(serde::Deserialize)]
struct LeaderTransfer {
    to: u64,
}

async fn transfer_leader<S: Service>(State(node): State<Arc<S>>, Path(id): Path<u32>, body: Bytes) -> Response {
    let t: LeaderTransfer = match json_body(&body) {
        Ok(t) => t,
        Err(e) => return to_response(e),
    };
    match node.transfer_leader(hotlake_storage::ShardId(id), t.to).await {
        Ok(()) => Json(json!({ "shard": id, "leader": t.to })).into_response(),
        Err(e) => to_response(e),
    }
}

async fn shard_digest<S: Service>(State(node): State<Arc<S>>, Path(id): Path<u32>) -> Response {
    match node.shard_digest(hotlake_storage::ShardId(id)).await {
        Ok((d, applied)) => {
            Json(json!({ "shard": id, "node": node.node_id(), "digest": format!("{d:016x}"), "applied": applied }))
                .into_response()
        }
        Err(e) => to_response(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    /// A body of two gzip members (what `pigz` and `cat a.gz b.gz` make) was answered 204
    /// while only the first member was written.
    #[test]
    fn every_gzip_member_is_read() {
        let mut body = gzip("m v=1 1\n");
        body.extend(gzip("m v=2 2\n"));
        assert_eq!(gunzip(&body, 1 << 20).unwrap(), b"m v=1 1\nm v=2 2\n");
    }

    #[test]
    fn a_gzip_body_inflating_past_the_limit_is_refused() {
        let body = gzip(&"m v=1 1\n".repeat(1000));
        assert!(matches!(gunzip(&body, 100), Err(Error::LimitExceeded { .. })));
        assert!(matches!(gunzip(b"not gzip", 100), Err(Error::InvalidArgument { .. })));
    }
}
