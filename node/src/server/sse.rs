//! Subscriptions over HTTP as Server-Sent Events, for browsers (`EventSource`) and curl.
//!
//! `GET /api/v1/subscribe?db=&measurement=&tag=key=value&field=&filter=&start=` answers a stream of
//! events: `points` (one feed entry's matching points, as JSON), `progress` (nothing matched
//! for a while) and a final `error`. With `start=history:TIME` (or `start=last`, the latest
//! value of each field) the stored points from TIME on
//! come first as `history` events (one per shard, without an id, so that a reconnection asks
//! for the history again), then the live part from the `progress` event that follows them.
//! Every other event's `id` is the subscription's cursor after it, so a client that
//! reconnects with `Last-Event-ID` (what `EventSource` does by itself), or with
//! `start=<cursor>`, resumes exactly after the last event it saw. The token may come in
//! the `p` URL parameter, as `EventSource` cannot set headers. Each `filter` (repeatable) is a
//! field filter in text form (`error=E_DECODER`, `reboot=true`, `velocity>1`, see
//! `hotlake_types::filter::parse_text`): only the rows that pass all of them come.
//!
//! With `group=NAME` the stream is a member of that consumer group: every event's data carries
//! `member`, and the consumer commits what it has processed with
//! `POST /api/v1/consumers/NAME/commit?db=` and `{"member": ..., "cursor": <event id>}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use super::auth::Reauthorized;
use super::http::{authorized_tenant, to_response, token_of_request};
use super::json::value_json;
use crate::node::{Cursor, Delivery, Start};
use crate::service::Service;
use hotlake_cluster::access::Action;
use hotlake_engine::feed::{points, FeedFilter};
use hotlake_types::error::Error;

/// An idle stream gets a comment this often, so proxies and clients see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a request asks for.
struct Request {
    filter: FeedFilter,
    start: Start,
    /// The consumer group to join, if any.
    group: Option<String>,
}

fn parse_request(params: &[(String, String)], headers: &HeaderMap) -> Result<Request, Error> {
    let mut filter = FeedFilter::default();
    let mut start = Start::Now;
    let mut group = None;
    for (key, value) in params {
        match key.as_str() {
            "db" | "tenant" => filter.tenant = value.clone(),
            "measurement" => filter.measurement = Some(value.clone()),
            "tag" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| Error::invalid(format!("tag must be key=value, got {value:?}")))?;
                filter.tags.push((k.to_string(), v.to_string()));
            }
            "field" => filter.fields.push(value.clone()),
            "filter" => filter.filters.push(hotlake_types::filter::parse_text(value)?),
            "group" => group = Some(value.clone()),
            "start" => start = super::grpc::parse_start(value)?,
            "p" | "u" => {}
            other => return Err(Error::invalid(format!("unknown parameter {other:?}"))),
        }
    }
    if let Some(id) = headers.get("last-event-id") {
        let id = id.to_str().map_err(|_| Error::invalid("Last-Event-ID is not printable ASCII"))?;
        if !id.is_empty() {
            start = Start::After(id.parse::<Cursor>().map_err(Error::invalid)?);
        }
    }
    Ok(Request { filter, start, group })
}

/// The JSON data of a `points` event.
fn points_json(shard: u32, index: u64, write: &hotlake_engine::batch::ShardWrite, member: &str) -> Json {
    let points: Vec<Json> = points(write)
        .into_iter()
        .map(|p| {
            let tags: serde_json::Map<String, Json> = p.tags.into_iter().map(|(k, v)| (k, Json::String(v))).collect();
            let fields: serde_json::Map<String, Json> =
                p.fields.into_iter().map(|(k, v)| (k, value_json(&Some(v)))).collect();
            json!({ "measurement": p.measurement, "tags": tags, "time": p.timestamp_ns, "fields": fields })
        })
        .collect();
    let mut data = json!({ "shard": shard, "index": index, "points": points });
    if !member.is_empty() {
        data["member"] = json!(member);
    }
    data
}

/// `GET /api/v1/subscribe`.
pub(super) async fn subscribe<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let credentials: HashMap<String, String> = params.iter().filter(|(k, _)| k == "p").cloned().collect();
    let opened = async {
        let Request { mut filter, start, group } = parse_request(&params, &headers)?;
        filter.tenant = authorized_tenant(&*node, &headers, &credentials, Action::Read, &filter.tenant)?;
        let tenant = filter.tenant.clone();
        let (member, rx) = match group {
            Some(group) => node.clone().subscribe_group(filter, group, start).await?,
            None => (String::new(), node.clone().subscribe(filter, start).await?),
        };
        let token = token_of_request(&headers, &credentials)?;
        Ok::<_, Error>((Reauthorized::new(node.clone(), token, tenant, rx), member))
    };
    let (deliveries, member) = match opened.await {
        Ok(d) => d,
        Err(e) => return to_response(e),
    };
    let progress = if member.is_empty() { "{}".to_string() } else { json!({ "member": member }).to_string() };
    let events =
        futures::stream::unfold((deliveries, member, progress), |(mut deliveries, member, progress)| async move {
            let event = match deliveries.recv().await? {
                Ok(Delivery::Entry { shard, entry, cursor }) => Event::default()
                    .event("points")
                    .id(cursor.to_string())
                    .data(points_json(shard.0, entry.index, &entry.write, &member).to_string()),
                // No id: a reconnecting `EventSource` asks for the whole history again rather
                // than skip what it had not received of it.
                Ok(Delivery::History { shard, index, write, .. }) => {
                    Event::default().event("history").data(points_json(shard.0, index, &write, &member).to_string())
                }
                Ok(Delivery::Progress(cursor)) => {
                    Event::default().event("progress").id(cursor.to_string()).data(&progress)
                }
                Err(e) => {
                    let body = json!({ "kind": e.kind(), "message": e.to_string() });
                    Event::default().event("error").data(body.to_string())
                }
            };
            Some((Ok::<_, Infallible>(event), (deliveries, member, progress)))
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// The body of a consumer-group commit.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommitBody {
    member: String,
    cursor: String,
}

/// `POST /api/v1/consumers/{group}/commit?db=`: commits what a member has processed.
pub(super) async fn commit<S: Service>(
    State(node): State<Arc<S>>,
    Path(group): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<axum::Json<CommitBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let done = async {
        let axum::Json(body) =
            body.map_err(|e| Error::invalid(format!("the body is not a commit: {}", e.body_text())))?;
        let wanted = params.get("db").or(params.get("tenant")).cloned().unwrap_or_default();
        let tenant = authorized_tenant(&*node, &headers, &params, Action::Read, &wanted)?;
        let cursor = body.cursor.parse::<Cursor>().map_err(Error::invalid)?;
        node.commit_consumer(&tenant, &group, &body.member, &cursor).await
    };
    match done.await {
        Ok(shards) => axum::Json(json!({ "shards": shards })).into_response(),
        Err(e) => to_response(e),
    }
}
