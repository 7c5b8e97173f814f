//! The gRPC service `hotlake.v1.Hotlake`: proto ↔ node conversion and error mapping.
//!
//! Invariant: only the server layer converts proto types.

use std::sync::Arc;

use hotlake_proto::errors;
use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_server::Hotlake;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{principal_of_call, require, token_of_call, Reauthorized};
use crate::node::{Cursor, Delivery, Start, WriteRouting, WriteSummary};
use crate::service::{Ingest, Service};
use hotlake_cluster::access::{Action, Principal};
use hotlake_engine::batch::{ColumnWrite, SeriesWrite, ShardWrite, Values};
use hotlake_engine::feed::FeedFilter;
use hotlake_query::filter::{FieldFilter, FilterOp, Operand};
use hotlake_query::{AggKind, Fill, LastQuery, Query, TagOp, TagPredicate};
use hotlake_storage::ShardId;
use hotlake_types::error::Error;
use hotlake_types::model::{parse_series_key, series_key, FieldValue};

/// The gRPC service over a node.
pub struct GrpcService<S> {
    node: Arc<S>,
}

impl<S: Service> GrpcService<S> {
    /// A service answering for `node`.
    pub fn new(node: Arc<S>) -> Self {
        GrpcService { node }
    }

    /// Refuses a call whose principal may not do `action` on the tenant it names (the
    /// default tenant when it names none).
    fn authorize(&self, principal: &Principal, action: Action, tenant: &str) -> Result<(), Status> {
        let tenant = self.node.tenant(tenant).map_err(to_status)?;
        require(principal, action, tenant).map_err(to_status)
    }

    /// Checks and converts a write request off the async workers (CPU work in proportion to
    /// the request, which must not delay Raft's heartbeats and elections).
    async fn to_batches(&self, req: pb::WriteRequest) -> Result<Vec<(ShardId, ShardWrite)>, Status> {
        let node = self.node.clone();
        hotlake_raft::runtime::spawn_blocking(move || write_request_to_batches(&*node, req))
            .await
            .map_err(|e| Status::internal(format!("converting a write: {e}")))?
            .map_err(to_status)
    }
}

/// At most this many rejection reasons are reported for one `WriteStream`.
const REJECTED_REPORTED_MAX: usize = 100;

/// Maps a node error to a gRPC status with a stable `hotlake-error-kind`.
pub fn to_status(e: Error) -> Status {
    let code = match &e {
        Error::InvalidArgument { .. } | Error::PartialWrite { .. } => tonic::Code::InvalidArgument,
        Error::LimitExceeded { .. } | Error::Overloaded(_) => tonic::Code::ResourceExhausted,
        Error::NotLeader { .. } | Error::Unavailable(_) => tonic::Code::Unavailable,
        Error::StaleMap { .. } => tonic::Code::FailedPrecondition,
        Error::Timeout(_) => tonic::Code::DeadlineExceeded,
        Error::Storage(_) | Error::Internal(_) => tonic::Code::Internal,
        Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
        Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
        Error::NotFound(_) => tonic::Code::NotFound,
        Error::CursorExpired(_) => tonic::Code::OutOfRange,
    };
    let mut message = e.to_string();
    if let Error::InvalidArgument { details, .. } = &e {
        for d in details.iter().take(100) {
            message.push_str("\n  ");
            message.push_str(d);
        }
        if details.len() > 100 {
            message.push_str(&format!("\n  ... and {} more", details.len() - 100));
        }
    }
    let mut status = Status::new(code, message);
    if let Ok(v) = e.kind().parse() {
        status.metadata_mut().insert(errors::ERROR_KIND_KEY, v);
    }
    if let Error::NotLeader { leader: Some(l), .. } = &e {
        if let Ok(v) = l.to_string().parse() {
            status.metadata_mut().insert(errors::LEADER_KEY, v);
        }
    }
    status
}

fn invalid(details: Vec<String>) -> Error {
    Error::InvalidArgument {
        message: format!("write rejected: {} problem(s) in the batch; nothing was written", details.len()),
        details,
    }
}

/// Converts a columnar write request into per-shard batches, checking every invariant the
/// engine relies on. Any problem rejects the whole request.
// tidy: long (one pass over the request that validates and builds columns together).
pub fn write_request_to_batches(
    node: &impl Ingest,
    req: pb::WriteRequest,
) -> Result<Vec<(ShardId, ShardWrite)>, Error> {
    let tenant = node.tenant(&req.tenant)?.to_string();
    let limits = node.limits();
    let device_tag = node.device_tag();
    let ring = node.ring()?;
    let timestamp_ns_max = limits.timestamp_ns_max(crate::clock::now_ns());
    let mut problems = Vec::new();
    let mut by_shard: std::collections::BTreeMap<ShardId, ShardWrite> = Default::default();
    let mut points = 0u64;
    for (si, s) in req.series.into_iter().enumerate() {
        let at = |what: String| format!("series[{si}] ({}): {what}", s.measurement);
        if s.measurement.is_empty() {
            problems.push(at("measurement is empty".into()));
            continue;
        }
        if s.measurement.len() as u64 > limits.key_bytes_max {
            problems.push(at(format!("measurement longer than {} bytes (limits.key_bytes_max)", limits.key_bytes_max)));
            continue;
        }
        let mut tags: Vec<(String, String)> = s.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
        tags.sort();
        if let Some(w) = tags.windows(2).find(|w| w[0].0 == w[1].0) {
            problems.push(at(format!("tag {:?} given twice", w[0].0)));
            continue;
        }
        if tags.len() as u64 > limits.tags_per_line_max {
            problems.push(at(format!("{} tags, more than limits.tags_per_line_max", tags.len())));
            continue;
        }
        if let Some((k, _)) = tags.iter().find(|(k, _)| k.is_empty() || k.len() as u64 > limits.key_bytes_max) {
            problems.push(at(format!("tag key {k:?} is empty or longer than limits.key_bytes_max")));
            continue;
        }
        if let Some((k, _)) = tags.iter().find(|(_, v)| v.is_empty() || v.len() as u64 > limits.tag_value_bytes_max) {
            problems.push(at(format!("value of tag {k:?} is empty or longer than limits.tag_value_bytes_max")));
            continue;
        }
        let rows = s.timestamps_ns.len();
        if rows == 0 {
            problems.push(at("no timestamps".into()));
            continue;
        }
        if let Some(t) = s.timestamps_ns.iter().find(|&&t| t > timestamp_ns_max) {
            problems.push(at(format!("timestamp {t} is further in the future than limits.future_s_max allows")));
            continue;
        }
        if s.fields.is_empty() || s.fields.len() as u64 > limits.fields_per_line_max {
            problems.push(at(format!("{} fields; need 1..=limits.fields_per_line_max", s.fields.len())));
            continue;
        }
        let mut columns = Vec::with_capacity(s.fields.len());
        let mut names = std::collections::HashSet::new();
        for f in s.fields {
            if f.name.is_empty() || f.name.len() as u64 > limits.key_bytes_max {
                problems.push(at(format!("field name {:?} is empty or longer than limits.key_bytes_max", f.name)));
                continue;
            }
            if !names.insert(f.name.clone()) {
                problems.push(at(format!("field {:?} given twice", f.name)));
                continue;
            }
            let values = match f.values {
                Some(pb::field_column::Values::F64(v)) => {
                    if let Some(x) = v.values.iter().find(|x| !x.is_finite()) {
                        problems.push(at(format!("field {:?}: {x} is not a finite number", f.name)));
                        continue;
                    }
                    Values::F64(v.values)
                }
                Some(pb::field_column::Values::I64(v)) => Values::I64(v.values),
                Some(pb::field_column::Values::U64(v)) => Values::U64(v.values),
                Some(pb::field_column::Values::Bool(v)) => Values::Bool(v.values),
                Some(pb::field_column::Values::String(v)) => {
                    if v.values.iter().any(|x| x.len() as u64 > limits.string_value_bytes_max) {
                        problems.push(at(format!(
                            "field {:?}: a string is longer than limits.string_value_bytes_max",
                            f.name
                        )));
                        continue;
                    }
                    Values::Str(v.values)
                }
                None => {
                    problems.push(at(format!("field {:?} has no values", f.name)));
                    continue;
                }
            };
            let absent = f.absent_rows;
            if absent.windows(2).any(|w| w[0] >= w[1]) || absent.last().is_some_and(|&r| r as usize >= rows) {
                problems
                    .push(at(format!("field {:?}: absent_rows must be ascending row indexes below {rows}", f.name)));
                continue;
            }
            if values.len() + absent.len() != rows {
                problems.push(at(format!(
                    "field {:?}: {} values + {} absent rows != {rows} timestamps",
                    f.name,
                    values.len(),
                    absent.len()
                )));
                continue;
            }
            if values.is_empty() {
                continue;
            }
            columns.push(ColumnWrite { field: f.name, absent_rows: absent, values });
        }
        if columns.is_empty() {
            continue;
        }
        let key = series_key(&s.measurement, &tags);
        let device = hotlake_proto::routing::device_of(&device_tag, &tags, &key).to_string();
        let series = SeriesWrite { key, device, timestamps: s.timestamps_ns, columns };
        // The shape was checked above; this also refuses NUL bytes in the names.
        if let Err(why) = series.check() {
            problems.push(at(why));
            continue;
        }
        let shard = ring.shard_of(&tenant, &series.device);
        points += rows as u64;
        by_shard
            .entry(shard)
            .or_insert_with(|| ShardWrite { tenant: tenant.clone(), series: Vec::new() })
            .series
            .push(series);
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    if points > limits.lines_per_request_max {
        return Err(Error::LimitExceeded {
            limit: "limits.lines_per_request_max",
            message: format!("request carries {points} points"),
        });
    }
    Ok(by_shard.into_iter().collect())
}

fn summary_to_response(summary: WriteSummary) -> Result<pb::WriteResponse, Error> {
    if !summary.rejected.is_empty() {
        return Err(Error::PartialWrite { written_points: summary.points, rejected: summary.rejected });
    }
    Ok(pb::WriteResponse { values_written: summary.values, points_written: summary.points, map_version: 0 })
}

fn predicate_from_proto(p: pb::TagPredicate) -> Result<TagPredicate, Error> {
    use pb::tag_predicate::Op;
    let one = |p: &pb::TagPredicate| -> Result<String, Error> {
        match p.values.as_slice() {
            [v] => Ok(v.clone()),
            _ => Err(Error::invalid(format!("predicate on tag {:?} needs exactly one value", p.key))),
        }
    };
    let regex = |s: String| hotlake_types::filter::compile_pattern(&s);
    let op = match Op::try_from(p.op).unwrap_or(Op::Unspecified) {
        Op::Eq => TagOp::Eq(one(&p)?),
        Op::Neq => TagOp::Neq(one(&p)?),
        Op::In => TagOp::In(p.values.clone()),
        Op::Regex => TagOp::Regex(regex(one(&p)?)?),
        Op::NotRegex => TagOp::NotRegex(regex(one(&p)?)?),
        Op::Unspecified => return Err(Error::invalid(format!("predicate on tag {:?} has no operator", p.key))),
    };
    if p.key.is_empty() {
        return Err(Error::invalid("predicate tag key is empty"));
    }
    Ok(TagPredicate { key: p.key, op })
}

/// Converts a proto query.
pub fn query_from_proto(r: pb::QueryRequest) -> Result<Query, Error> {
    let predicates = r.predicates.into_iter().map(predicate_from_proto).collect::<Result<Vec<_>, _>>()?;
    let mut aggregates = Vec::new();
    for a in &r.aggregates {
        let kind = match pb::Aggregate::try_from(*a).unwrap_or(pb::Aggregate::Unspecified) {
            pb::Aggregate::Count => AggKind::Count,
            pb::Aggregate::Sum => AggKind::Sum,
            pb::Aggregate::Min => AggKind::Min,
            pb::Aggregate::Max => AggKind::Max,
            pb::Aggregate::Mean => AggKind::Mean,
            pb::Aggregate::First => AggKind::First,
            pb::Aggregate::Last => AggKind::Last,
            pb::Aggregate::Stddev => AggKind::Stddev,
            pb::Aggregate::Percentile => AggKind::Percentile,
            pb::Aggregate::Unspecified => return Err(Error::invalid(format!("unknown aggregate {a}"))),
        };
        aggregates.push(kind);
    }
    let fill = match pb::Fill::try_from(r.fill).unwrap_or(pb::Fill::None) {
        pb::Fill::None => Fill::None,
        pb::Fill::Null => Fill::Null,
        pb::Fill::Previous => Fill::Previous,
        pb::Fill::Value => Fill::Value(r.fill_value),
    };
    let filters = field_filters(r.filters)?;
    Ok(Query {
        tenant: r.tenant,
        measurement: r.measurement,
        fields: r.fields,
        predicates,
        filters,
        start_ns: r.start_ns,
        end_ns: r.end_ns,
        aggregates,
        percentile: r.percentile,
        bucket_ns: r.bucket_ns,
        group_by: r.group_by_tags,
        fill,
        descending: r.descending,
        allow_partial: r.allow_partial,
        limit: r.limit as usize,
    })
}

/// The field filters of a request, checked.
fn field_filters(list: Vec<pb::FieldFilter>) -> Result<Vec<FieldFilter>, Error> {
    use pb::field_filter::{Op, Operand as Given};
    list.into_iter()
        .map(|f| {
            let op = match Op::try_from(f.op).unwrap_or(Op::Unspecified) {
                Op::Lt => FilterOp::Lt,
                Op::Le => FilterOp::Le,
                Op::Gt => FilterOp::Gt,
                Op::Ge => FilterOp::Ge,
                Op::Eq => FilterOp::Eq,
                Op::Ne => FilterOp::Ne,
                Op::In => FilterOp::In,
                Op::Prefix => FilterOp::Prefix,
                Op::Regex => FilterOp::Regex,
                Op::NotRegex => FilterOp::NotRegex,
                Op::Unspecified => {
                    return Err(Error::invalid(format!("field filter on {:?} has no comparison", f.field)))
                }
            };
            let operand = match (op, f.operand) {
                (FilterOp::In, _) => Operand::List(f.values),
                // proto3 leaves a 0 out of the message: no operand is the number 0.
                _ if !f.values.is_empty() => {
                    return Err(Error::invalid(format!("field filter on {:?}: only in takes values", f.field)))
                }
                (_, None) => Operand::Number(0.0),
                (_, Some(Given::Value(x))) => Operand::Number(x),
                (_, Some(Given::BoolValue(b))) => Operand::Bool(b),
                (_, Some(Given::StringValue(s))) => Operand::Str(s),
            };
            FieldFilter::new(f.field, op, operand)
        })
        .collect()
}

/// Converts a value to proto.
pub fn value_to_proto(v: Option<FieldValue>) -> pb::Value {
    use pb::value::Kind;
    pb::Value {
        kind: v.map(|v| match v {
            FieldValue::F64(x) => Kind::F64(x),
            FieldValue::I64(x) => Kind::I64(x),
            FieldValue::U64(x) => Kind::U64(x),
            FieldValue::Bool(x) => Kind::Bool(x),
            FieldValue::Str(x) => Kind::String(x),
        }),
    }
}

/// A feed entry's points as `Write` takes them.
fn write_to_proto(w: &ShardWrite) -> Vec<pb::SeriesPoints> {
    w.series
        .iter()
        .map(|s| {
            let (measurement, tags) = parse_series_key(&s.key);
            pb::SeriesPoints {
                measurement,
                tags: tags_to_proto(tags),
                timestamps_ns: s.timestamps.clone(),
                fields: s
                    .columns
                    .iter()
                    .map(|c| pb::FieldColumn {
                        name: c.field.clone(),
                        absent_rows: c.absent_rows.clone(),
                        values: Some(match &c.values {
                            Values::F64(v) => pb::field_column::Values::F64(pb::DoubleValues { values: v.clone() }),
                            Values::I64(v) => pb::field_column::Values::I64(pb::Int64Values { values: v.clone() }),
                            Values::U64(v) => pb::field_column::Values::U64(pb::UInt64Values { values: v.clone() }),
                            Values::Bool(v) => pb::field_column::Values::Bool(pb::BoolValues { values: v.clone() }),
                            Values::Str(v) => pb::field_column::Values::String(pb::StringValues { values: v.clone() }),
                        }),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn tags_to_proto(tags: Vec<(String, String)>) -> Vec<pb::Tag> {
    tags.into_iter().map(|(key, value)| pb::Tag { key, value }).collect()
}

#[tonic::async_trait]
impl<S: Service> Hotlake for GrpcService<S> {
    async fn write(&self, request: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let req = request.into_inner();
        self.authorize(&principal, Action::Write, &req.tenant)?;
        let routing = WriteRouting { map_version: req.map_version, leader_only: req.leader_only };
        let _admitted = self.node.admit_write(prost::Message::encoded_len(&req)).await.map_err(to_status)?;
        let batches = self.to_batches(req).await?;
        let summary = self.node.write_batches_routed(batches, routing).await.map_err(to_status)?;
        let mut response = summary_to_response(summary).map_err(to_status)?;
        response.map_version = self.node.map().routing_version;
        Ok(Response::new(response))
    }

    async fn write_stream(
        &self,
        request: Request<Streaming<pb::WriteRequest>>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let mut stream = request.into_inner();
        let mut total = WriteSummary::default();
        let idle = std::time::Duration::from_millis(self.node.limits().write_stream_idle_ms);
        loop {
            let next = tokio::time::timeout(idle, stream.message()).await.map_err(|_| {
                to_status(Error::Timeout(format!(
                    "the stream sent nothing for {} ms (limits.write_stream_idle_ms); {} points written before",
                    idle.as_millis(),
                    total.points
                )))
            })?;
            let Some(req) = next? else { break };
            self.authorize(&principal, Action::Write, &req.tenant)?;
            let _admitted = self.node.admit_write(prost::Message::encoded_len(&req)).await.map_err(to_status)?;
            let batches = self.to_batches(req).await?;
            let s = self.node.write_batches(batches).await.map_err(to_status)?;
            total.points += s.points;
            total.values += s.values;
            // A long stream's rejections are reported in part, so the answer stays bounded.
            let room = REJECTED_REPORTED_MAX.saturating_sub(total.rejected.len());
            total.rejected.extend(s.rejected.into_iter().take(room));
        }
        let mut response = summary_to_response(total).map_err(to_status)?;
        response.map_version = self.node.map().routing_version;
        Ok(Response::new(response))
    }

    async fn query(&self, request: Request<pb::QueryRequest>) -> Result<Response<pb::QueryResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let q = query_from_proto(request.into_inner()).map_err(to_status)?;
        self.authorize(&principal, Action::Read, &q.tenant)?;
        let result = self.node.query(q).await.map_err(to_status)?;
        Ok(Response::new(pb::QueryResponse {
            points_scanned: result.points_scanned,
            missing_shards: result.missing_shards,
            groups: result
                .groups
                .into_iter()
                .map(|g| pb::ResultGroup {
                    tags: tags_to_proto(g.tags),
                    columns: g.columns,
                    rows: g
                        .rows
                        .into_iter()
                        .map(|(t, vs)| pb::Row {
                            timestamp_ns: t,
                            values: vs.into_iter().map(value_to_proto).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn last(&self, request: Request<pb::LastRequest>) -> Result<Response<pb::LastResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let r = request.into_inner();
        self.authorize(&principal, Action::Read, &r.tenant)?;
        let predicates =
            r.predicates.into_iter().map(predicate_from_proto).collect::<Result<Vec<_>, _>>().map_err(to_status)?;
        let q = LastQuery { tenant: r.tenant, measurement: r.measurement, fields: r.fields, predicates };
        let rows = self.node.last(q).await.map_err(to_status)?;
        Ok(Response::new(pb::LastResponse {
            rows: rows
                .into_iter()
                .map(|row| pb::LastRow {
                    device: row.device,
                    tags: tags_to_proto(row.tags),
                    values: row
                        .values
                        .into_iter()
                        .map(|(field, ts, v)| pb::LastValue {
                            field,
                            timestamp_ns: ts,
                            value: Some(value_to_proto(Some(v))),
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    type SubscribeStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SubscribeResponse, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let token = token_of_call(request.metadata()).map_err(to_status)?;
        let principal = self.node.authenticate(token.as_deref()).map_err(to_status)?;
        let r = request.into_inner();
        self.authorize(&principal, Action::Read, &r.tenant)?;
        let tenant = self.node.tenant(&r.tenant).map_err(to_status)?.to_string();
        let start = parse_start(&r.start).map_err(to_status)?;
        let filter = FeedFilter {
            tenant: r.tenant,
            measurement: (!r.measurement.is_empty()).then_some(r.measurement),
            tags: r.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            fields: r.fields,
            filters: field_filters(r.filters).map_err(to_status)?,
        };
        let (member, rx) = if r.group.is_empty() {
            (String::new(), self.node.clone().subscribe(filter, start).await.map_err(to_status)?)
        } else {
            self.node.clone().subscribe_group(filter, r.group, start).await.map_err(to_status)?
        };
        let deliveries = Reauthorized::new(self.node.clone(), token, tenant, rx);
        let messages = futures::stream::unfold((deliveries, member), |(mut deliveries, member)| async move {
            let message = match deliveries.recv().await? {
                Ok(Delivery::Entry { shard, entry, cursor }) => Ok(pb::SubscribeResponse {
                    cursor: cursor.to_string(),
                    shard: shard.0,
                    index: entry.index,
                    series: write_to_proto(&entry.write),
                    member: member.clone(),
                    history: false,
                }),
                Ok(Delivery::History { shard, index, write, cursor }) => Ok(pb::SubscribeResponse {
                    cursor: cursor.to_string(),
                    shard: shard.0,
                    index,
                    series: write_to_proto(&write),
                    member: member.clone(),
                    history: true,
                }),
                Ok(Delivery::Progress(cursor)) => Ok(pb::SubscribeResponse {
                    cursor: cursor.to_string(),
                    member: member.clone(),
                    ..Default::default()
                }),
                Err(e) => Err(to_status(e)),
            };
            Some((message, (deliveries, member)))
        });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn commit_consumer(
        &self,
        request: Request<pb::CommitConsumerRequest>,
    ) -> Result<Response<pb::CommitConsumerResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let r = request.into_inner();
        self.authorize(&principal, Action::Read, &r.tenant)?;
        let cursor = r.cursor.parse::<Cursor>().map_err(|e| to_status(Error::invalid(e)))?;
        let shards = self.node.commit_consumer(&r.tenant, &r.group, &r.member, &cursor).await.map_err(to_status)?;
        Ok(Response::new(pb::CommitConsumerResponse { shards }))
    }

    async fn consumer_groups(
        &self,
        request: Request<pb::ConsumerGroupsRequest>,
    ) -> Result<Response<pb::ConsumerGroupsResponse>, Status> {
        let principal = principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let r = request.into_inner();
        self.authorize(&principal, Action::Read, &r.tenant)?;
        let one = (!r.group.is_empty()).then_some(r.group.as_str());
        let groups = self.node.consumer_groups(&r.tenant, one).await.map_err(to_status)?;
        Ok(Response::new(pb::ConsumerGroupsResponse {
            groups: groups.into_iter().map(consumer_group_to_proto).collect(),
        }))
    }

    /// Needs no token: load balancers and probes ask it, and it names no tenant or data.
    async fn health(&self, _request: Request<pb::HealthRequest>) -> Result<Response<pb::HealthResponse>, Status> {
        let h = self.node.health();
        Ok(Response::new(pb::HealthResponse {
            node_id: h.node_id,
            shards: h.shards,
            shards_with_leader: h.shards_with_leader,
            version: env!("CARGO_PKG_VERSION").to_string(),
            problems: h.problems,
        }))
    }

    async fn cluster_map(
        &self,
        request: Request<pb::ClusterMapRequest>,
    ) -> Result<Response<pb::ClusterMapResponse>, Status> {
        // Routing needs the map: any known token may read it.
        principal_of_call(&*self.node, request.metadata()).map_err(to_status)?;
        let map = self.node.map();
        Ok(Response::new(pb::ClusterMapResponse {
            version: map.routing_version,
            cluster_id: map.cluster_id,
            shard_count: map.shard_count,
            device_tag: self.node.device_tag(),
            nodes: map
                .nodes
                .values()
                .map(|n| pb::MapNode {
                    id: n.id,
                    grpc_addr: n.grpc_addr.clone(),
                    http_addr: n.http_addr.clone(),
                    state: n.state.name().into(),
                })
                .collect(),
            shards: map
                .shards
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let shard = ShardId(i as u32);
                    pb::MapShard {
                        id: shard.0,
                        replicas: p.replicas.clone(),
                        epoch: p.epoch,
                        leader: self.node.known_leader(shard).unwrap_or(0),
                    }
                })
                .collect(),
        }))
    }
}

/// A consumer group's state as the wire carries it.
fn consumer_group_to_proto(g: crate::node::ConsumerGroupStatus) -> pb::ConsumerGroup {
    pb::ConsumerGroup {
        lag_entries: g.lag_entries(),
        cursor: g.positions.to_string(),
        commits: g.commits,
        members: g.members.into_iter().map(|(member, shards)| pb::ConsumerMember { member, shards }).collect(),
        shards: g
            .positions
            .0
            .iter()
            .enumerate()
            .map(|(i, p)| pb::ShardPosition {
                shard: i as u32,
                position: *p,
                applied: g.applied.get(i).copied().unwrap_or(0),
            })
            .collect(),
        group: g.group,
    }
}

/// A subscription's start as requests write it: empty or `now`; `last`; `history:TIME` with
/// TIME in RFC 3339 or nanoseconds since the epoch; or a cursor.
pub(super) fn parse_start(text: &str) -> Result<Start, Error> {
    match text {
        "" | "now" => Ok(Start::Now),
        "last" => Ok(Start::Last),
        _ => match text.strip_prefix("history:") {
            Some(time) => {
                let ns = match time.parse::<i64>() {
                    Ok(ns) => ns,
                    Err(_) => super::json::parse_rfc3339(time).map_err(Error::invalid)?,
                };
                Ok(Start::History(ns))
            }
            None => text.parse::<Cursor>().map(Start::After).map_err(Error::invalid),
        },
    }
}
