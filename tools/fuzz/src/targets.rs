//! The fuzz targets: each takes arbitrary bytes and runs one of the paths by which bytes from
//! outside reach Hotlake, the way the node runs it. A target may refuse its input (that is the
//! point); it must never panic, and what it accepts must never make apply panic.

use std::sync::Arc;

use hotlake_engine::applied::EntryId;
use hotlake_engine::batch::ShardCommand;
use hotlake_engine::shard::{ShardData, ShardOptions, SnapshotPair};
use hotlake_ingest::line_protocol::{parse_body, LineLimits, Precision};
use hotlake_node::node::{WritePermit, WriteRouting, WriteSummary};
use hotlake_node::server::json::{parse_duration, parse_rfc3339, JsonLast, JsonQuery};
use hotlake_proto::v1 as pb;
use hotlake_storage::{Engine, MemEngine, ShardId, Space};
use hotlake_types::error::{Error, Result};
use hotlake_types::limits::Limits;
use hotlake_types::ring::Ring;
use prost::Message;

/// A fuzz target.
pub struct Target {
    /// Its name on the command line.
    pub name: &'static str,
    /// Valid inputs the mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input; true when it got past decoding to the deepest stage (apply, install,
    /// open, a built query), so a run can say how much of its time went past the decoders.
    pub run: fn(&mut State, &[u8]) -> bool,
}

/// What a target keeps between inputs: a shard to apply to (replaced now and then, so memory
/// stays bounded) and the next log index (apply asserts that it rises).
pub struct State {
    shard: Option<ShardData>,
    applied: u64,
    next_index: u64,
}

impl State {
    /// A fresh state.
    pub fn new() -> State {
        State { shard: None, applied: 0, next_index: 1 }
    }

    /// The shard, recreated every 5,000 applies.
    fn shard(&mut self) -> &ShardData {
        if self.applied >= 5_000 {
            self.shard = None;
            self.applied = 0;
        }
        self.applied += 1;
        self.shard.get_or_insert_with(|| {
            let engine: Engine = Arc::new(MemEngine::new());
            ShardData::open(engine, ShardId(0), ShardOptions::default()).expect("an empty shard opens")
        })
    }

    /// Applies `cmd` as the next log entry; a refusal is fine, a panic is the bug looked for.
    fn apply(&mut self, cmd: &ShardCommand) -> bool {
        let index = self.next_index;
        self.next_index += 1;
        let _ = self.shard().apply(EntryId { term: 1, leader: 1, index }, cmd.clone());
        true
    }
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target { name: "line-protocol", seeds: line_seeds, run: line_protocol },
    Target { name: "json-query", seeds: json_seeds, run: json_query },
    Target { name: "time", seeds: time_seeds, run: time },
    Target { name: "grpc-write-apply", seeds: grpc_seeds, run: grpc_write_apply },
    Target { name: "raft-command-apply", seeds: command_seeds, run: raft_command_apply },
    Target { name: "peer-call", seeds: peer_seeds, run: peer_call },
    Target { name: "snapshot-install", seeds: snapshot_seeds, run: snapshot_install },
    Target { name: "block-decode", seeds: block_seeds, run: block_decode },
    Target { name: "shard-open", seeds: open_seeds, run: shard_open },
];

const T0: i64 = 1_451_606_400_000_000_000;

fn line_seeds() -> Vec<Vec<u8>> {
    [
        "readings,device_id=truck_1,fleet=East velocity=42.5,fuel=0.8 1451606400000000000\n",
        "m,k=a\\ b\\,c f=\"str \\\"q\\\"\",i=5i,u=7u,b=true 1\nm v=1\n\n# comment\n",
        "cpu,host=a usage=0.5,idle=-1e-3,ok=F 1451606400000000000\ncpu usage=abc 1\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn line_protocol(_: &mut State, input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    let mut points = 0usize;
    for precision in [Precision::Nanoseconds, Precision::Seconds] {
        let _errors = parse_body(&text, precision, &LineLimits::default(), |_, _| points += 1);
    }
    points > 0
}

fn json_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"tenant":"fleet","measurement":"readings","fields":["velocity"],"where":[{"tag":"device_id","op":"=","value":"truck_1"}],"start":"2016-01-01T00:00:00Z","end":"2016-01-02T00:00:00Z"}"#,
        r#"{"tenant":"fleet","measurement":"readings","fields":["velocity"],"start":1451606400000000000,"end":"2016-01-02T00:00:00+02:00","aggregates":["mean","percentile"],"percentile":95,"bucket":"1h","group_by":["fleet"],"fill":"previous","filter":[{"field":"velocity","op":">","value":1}],"limit":10,"order":"desc"}"#,
        r#"{"tenant":"fleet","measurement":"readings","where":[{"tag":"fleet","op":"=~","value":"^E.*"}]}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn json_query(_: &mut State, input: &[u8]) -> bool {
    let mut built = false;
    if let Ok(q) = serde_json::from_slice::<JsonQuery>(input) {
        if let Ok(q) = q.into_query() {
            built = q.validate(&Limits::default()).is_ok();
        }
    }
    if let Ok(q) = serde_json::from_slice::<JsonLast>(input) {
        built |= q.into_query().is_ok();
    }
    built
}

fn time_seeds() -> Vec<Vec<u8>> {
    ["2016-01-01T00:00:00Z", "2016-01-01T00:00:00.123456789+05:30", "90m", "10s"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

fn time(_: &mut State, input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    parse_rfc3339(&text).is_ok() | parse_duration(&text).is_ok()
}

/// What `write_request_to_batches` asks of a node: limits, tenant names, the device tag and
/// the ring. It never writes, so the write methods refuse.
struct Converter {
    limits: Limits,
}

impl hotlake_node::service::Ingest for Converter {
    fn limits(&self) -> &Limits {
        &self.limits
    }
    fn tenant<'a>(&'a self, tenant: &'a str) -> Result<&'a str> {
        if tenant.is_empty() {
            return Ok("default");
        }
        hotlake_types::model::check_tenant(tenant).map_err(Error::invalid)?;
        Ok(tenant)
    }
    fn device_tag(&self) -> String {
        "device_id".into()
    }
    fn ring(&self) -> Result<Ring> {
        Ok(Ring::new(1))
    }
    async fn admit_write(&self, _bytes: usize) -> Result<WritePermit> {
        Err(Error::Unavailable("the fuzz converter does not write".into()))
    }
    async fn write_lines(
        &self,
        _tenant: &str,
        _body: String,
        _precision: Precision,
        _default_ts_ns: i64,
    ) -> Result<(WriteSummary, Vec<hotlake_ingest::line_protocol::LineError>)> {
        Err(Error::Unavailable("the fuzz converter does not write".into()))
    }
    async fn write_batches(&self, _batches: Vec<(ShardId, hotlake_engine::batch::ShardWrite)>) -> Result<WriteSummary> {
        Err(Error::Unavailable("the fuzz converter does not write".into()))
    }
    async fn write_batches_routed(
        &self,
        _batches: Vec<(ShardId, hotlake_engine::batch::ShardWrite)>,
        _routing: WriteRouting,
    ) -> Result<WriteSummary> {
        Err(Error::Unavailable("the fuzz converter does not write".into()))
    }
}

fn grpc_seeds() -> Vec<Vec<u8>> {
    let series = |device: &str, absent: Vec<u32>, values: Vec<f64>| pb::SeriesPoints {
        measurement: "m".into(),
        tags: vec![pb::Tag { key: "device_id".into(), value: device.into() }],
        timestamps_ns: vec![T0, T0 + 1, T0 + 2],
        fields: vec![
            pb::FieldColumn {
                name: "v".into(),
                values: Some(pb::field_column::Values::F64(pb::DoubleValues { values })),
                absent_rows: absent,
            },
            pb::FieldColumn {
                name: "s".into(),
                values: Some(pb::field_column::Values::String(pb::StringValues {
                    values: vec!["a".into(), "b".into(), "c".into()],
                })),
                absent_rows: vec![],
            },
        ],
    };
    let req = pb::WriteRequest {
        tenant: "fleet".into(),
        series: vec![series("a", vec![], vec![1.0, 2.0, 3.0]), series("b", vec![1], vec![1.0, 3.0])],
        ..Default::default()
    };
    vec![req.encode_to_vec()]
}

fn grpc_write_apply(state: &mut State, input: &[u8]) -> bool {
    let Ok(req) = pb::WriteRequest::decode(input) else { return false };
    let converter = Converter { limits: Limits::default() };
    let Ok(batches) = hotlake_node::server::grpc::write_request_to_batches(&converter, req) else { return false };
    let mut applied = false;
    for (_, write) in batches {
        applied |= state.apply(&ShardCommand::Write(write));
    }
    applied
}

/// Raft entries, and the peer messages that carry them, are bincode with fixed-width integers.
fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().with_limit(16 << 20)
}

/// The shard writes the gRPC seeds convert to.
fn seed_writes() -> Vec<(ShardId, hotlake_engine::batch::ShardWrite)> {
    let converter = Converter { limits: Limits::default() };
    grpc_seeds()
        .iter()
        .flat_map(|req| {
            let req = pb::WriteRequest::decode(req.as_slice()).expect("a seed decodes");
            hotlake_node::server::grpc::write_request_to_batches(&converter, req).expect("a seed converts")
        })
        .collect()
}

fn command_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seed_writes()
        .into_iter()
        .map(|(_, w)| bincode::serialize(&ShardCommand::Write(w)).expect("a command encodes"))
        .collect();
    out.push(bincode::serialize(&ShardCommand::Retain { tenant: "fleet".into(), before_ns: T0 }).expect("encodes"));
    out
}

fn raft_command_apply(state: &mut State, input: &[u8]) -> bool {
    use bincode::Options;
    match bincode_options().deserialize::<ShardCommand>(input) {
        Ok(cmd) => state.apply(&cmd),
        Err(_) => false,
    }
}

fn peer_seeds() -> Vec<Vec<u8>> {
    use hotlake_cluster::transport::PeerCall;
    let mut calls = vec![PeerCall::Map, PeerCall::Status, PeerCall::Digest { shard: ShardId(3) }];
    calls.extend(seed_writes().into_iter().map(|(shard, write)| PeerCall::Write { shard, write }));
    calls.iter().map(|c| bincode::serialize(c).expect("a call encodes")).collect()
}

fn peer_call(_: &mut State, input: &[u8]) -> bool {
    hotlake_cluster::transport::decode_call(input).is_ok()
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    let mut state = State::new();
    for cmd in command_seeds() {
        raft_command_apply(&mut state, &cmd);
    }
    let shard = state.shard();
    let cut = shard.freeze();
    let _ = shard.flush(cut);
    let pairs = hotlake_engine::shard::ShardSnapshot::of_shard(Arc::new(reopen(shard.engine())))
        .materialize()
        .expect("a snapshot of a fresh shard reads");
    vec![bincode::serialize(&pairs).expect("pairs encode")]
}

fn reopen(engine: &Engine) -> ShardData {
    ShardData::open(engine.clone(), ShardId(0), ShardOptions::default()).expect("a flushed shard opens")
}

fn snapshot_install(_: &mut State, input: &[u8]) -> bool {
    use bincode::Options;
    let Ok(pairs) = bincode_options().deserialize::<Vec<SnapshotPair>>(input) else { return false };
    let engine: Engine = Arc::new(MemEngine::new());
    match ShardData::open(engine, ShardId(0), ShardOptions::default()) {
        Ok(shard) => shard.install(pairs).is_ok(),
        Err(_) => false,
    }
}

fn block_seeds() -> Vec<Vec<u8>> {
    let snapshot = snapshot_seeds();
    let pairs: Vec<SnapshotPair> = bincode::deserialize(&snapshot[0]).expect("the seed decodes");
    // Data values are blocks.
    pairs.into_iter().filter(|p| !p.index_space).map(|p| p.value).collect()
}

/// The input as it is (the checksum refuses almost every mutant), and with its trailing xxh3
/// recomputed, as a block damaged before it was checksummed would be: what the decoder must
/// survive past the checksum.
fn block_decode(_: &mut State, input: &[u8]) -> bool {
    let _ = hotlake_engine::codec::block_summary(input);
    let _ = hotlake_engine::codec::decode_block(input);
    let body = &input[..input.len().saturating_sub(8)];
    let mut resealed = body.to_vec();
    resealed.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
    let summary = hotlake_engine::codec::block_summary(&resealed).is_ok();
    hotlake_engine::codec::decode_block(&resealed).is_ok() | summary
}

/// Key/value pairs, each as a 2-byte key length, a 2-byte value length and the bytes.
fn pairs_of(input: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = input;
    while rest.len() >= 4 {
        let k = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let v = u16::from_le_bytes([rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        let k = k.min(rest.len());
        let (key, tail) = rest.split_at(k);
        let v = v.min(tail.len());
        let (value, tail) = tail.split_at(v);
        out.push((key.to_vec(), value.to_vec()));
        rest = tail;
    }
    out
}

fn open_seeds() -> Vec<Vec<u8>> {
    let snapshot = snapshot_seeds();
    let pairs: Vec<SnapshotPair> = bincode::deserialize(&snapshot[0]).expect("the seed decodes");
    let mut out = Vec::new();
    for p in pairs.iter().filter(|p| p.index_space) {
        out.extend((p.key.len() as u16).to_le_bytes());
        out.extend((p.value.len() as u16).to_le_bytes());
        out.extend(&p.key);
        out.extend(&p.value);
    }
    vec![out]
}

fn shard_open(_: &mut State, input: &[u8]) -> bool {
    let engine: Engine = Arc::new(MemEngine::new());
    let Ok(()) = engine.create_shard(ShardId(0)) else { return false };
    let mut batch = hotlake_storage::WriteBatch::default();
    for (k, v) in pairs_of(input) {
        batch.put(Space::Index(ShardId(0)), k, v);
    }
    engine.write(batch, hotlake_storage::Durability::Buffered).is_ok()
        && ShardData::open(engine, ShardId(0), ShardOptions::default()).is_ok()
}
