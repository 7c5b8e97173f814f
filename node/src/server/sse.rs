//! Subscriptions over HTTP as Server-Sent Events, for browsers (`EventSource`) and curl.
//!
//! `GET /api/v1/subscribe?db=&measurement=&tag=key=value&field=&start=` answers a stream of
//! events: `points` (one feed entry's matching points, as JSON), `progress` (nothing matched
//! for a while) and a final `error`. Every event's `id` is the subscription's cursor after it,
//! so a client that reconnects with `Last-Event-ID` (what `EventSource` does by itself), or
//! with `start=<cursor>`, resumes exactly after the last event it saw. The token may come in
//! the `p` URL parameter, as `EventSource` cannot set headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query as UrlQuery, State};
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

/// The filter and start a request asks for.
fn parse_request(params: &[(String, String)], headers: &HeaderMap) -> Result<(FeedFilter, Start), Error> {
    let mut filter = FeedFilter::default();
    let mut start = Start::Now;
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
            "start" if value == "now" => start = Start::Now,
            "start" => start = Start::After(value.parse::<Cursor>().map_err(Error::invalid)?),
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
    Ok((filter, start))
}

/// The JSON data of a `points` event.
fn points_json(shard: u32, index: u64, write: &hotlake_engine::batch::ShardWrite) -> Json {
    let points: Vec<Json> = points(write)
        .into_iter()
        .map(|p| {
            let tags: serde_json::Map<String, Json> = p.tags.into_iter().map(|(k, v)| (k, Json::String(v))).collect();
            let fields: serde_json::Map<String, Json> =
                p.fields.into_iter().map(|(k, v)| (k, value_json(&Some(v)))).collect();
            json!({ "measurement": p.measurement, "tags": tags, "time": p.timestamp_ns, "fields": fields })
        })
        .collect();
    json!({ "shard": shard, "index": index, "points": points })
}

/// `GET /api/v1/subscribe`.
pub(super) async fn subscribe<S: Service>(
    State(node): State<Arc<S>>,
    UrlQuery(params): UrlQuery<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let credentials: HashMap<String, String> = params.iter().filter(|(k, _)| k == "p").cloned().collect();
    let opened = async {
        let (mut filter, start) = parse_request(&params, &headers)?;
        filter.tenant = authorized_tenant(&*node, &headers, &credentials, Action::Read, &filter.tenant)?;
        let tenant = filter.tenant.clone();
        let rx = node.clone().subscribe(filter, start).await?;
        Ok(Reauthorized::new(node.clone(), token_of_request(&headers, &credentials)?, tenant, rx))
    };
    let deliveries = match opened.await {
        Ok(d) => d,
        Err(e) => return to_response(e),
    };
    let events = futures::stream::unfold(deliveries, |mut deliveries| async move {
        let event = match deliveries.recv().await? {
            Ok(Delivery::Entry { shard, entry, cursor }) => Event::default()
                .event("points")
                .id(cursor.to_string())
                .data(points_json(shard.0, entry.index, &entry.write).to_string()),
            Ok(Delivery::Progress(cursor)) => Event::default().event("progress").id(cursor.to_string()).data("{}"),
            Err(e) => {
                let body = json!({ "kind": e.kind(), "message": e.to_string() });
                Event::default().event("error").data(body.to_string())
            }
        };
        Some((Ok::<_, Infallible>(event), deliveries))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}
