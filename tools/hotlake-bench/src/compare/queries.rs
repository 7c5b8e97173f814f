//! The twelve TSBS IoT query types, each written for Hotlake's query API, as InfluxQL, and as
//! MetricsQL where VictoriaMetrics can express it, with answers normalised so they can be
//! compared between systems.
//!
//! Semantics every system computes (the `[start, end)` of a type is the whole data set unless a
//! window is named; 10-minute buckets start at multiples of 10 minutes):
//!
//! | type | answer per group |
//! |---|---|
//! | last-loc | fleet F: per (name, driver) the latest latitude and longitude |
//! | single-last-loc | truck T: the latest latitude and longitude |
//! | low-fuel | fleet F: per name the latest fuel_state among rows with fuel_state <= 0.1 |
//! | high-load | fleet F: per (name, driver, load_capacity) the latest current_load, kept when >= 0.9 x load_capacity |
//! | stationary-trucks | fleet F, a 10-minute window: per (name, driver) mean velocity, kept when < 1 |
//! | long-driving-sessions | fleet F, a 4-hour window: per (name, driver) the 10-minute buckets with mean velocity > 1, kept when more than 22 |
//! | long-daily-sessions | the same over 24 hours, kept when more than 60 |
//! | avg-vs-projected-fuel-consumption | per (fleet, nominal_fuel_consumption) mean fuel_consumption over rows with velocity > 1 |
//! | avg-daily-driving-duration | per (fleet, name, driver, day) hours of 10-minute buckets with mean velocity > 1 |
//! | avg-load | per (fleet, model, load_capacity) mean current_load / load_capacity |
//! | daily-activity | per (fleet, model, day) share of the day's 10-minute buckets whose mean status < 1 |
//! | breakdown-frequency | per model: how often a 10-minute bucket in which at least half the rows have a non-zero status follows one in which fewer do |
//!
//! A missing tag groups as the empty string in every system. Where a step has no counterpart in
//! a system's query language (a condition on an aggregate, a count of buckets), the harness
//! does it on the answer, inside the timed section, the same way for every system.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use hotlake_client::{Aggregate, Cmp, LastBuilder, LastRow, QueryBuilder, QueryResult};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;

/// A normalised answer: group key (tag values and bucket joined by `|`) to values; a missing
/// value is NaN.
pub type Answer = BTreeMap<String, Vec<f64>>;

/// The query types, in TSBS order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueryType {
    LastLoc,
    SingleLastLoc,
    LowFuel,
    HighLoad,
    StationaryTrucks,
    LongDrivingSessions,
    LongDailySessions,
    AvgVsProjectedFuelConsumption,
    AvgDailyDrivingDuration,
    AvgLoad,
    DailyActivity,
    BreakdownFrequency,
}

impl QueryType {
    /// Every type.
    pub const ALL: [QueryType; 12] = [
        QueryType::LastLoc,
        QueryType::SingleLastLoc,
        QueryType::LowFuel,
        QueryType::HighLoad,
        QueryType::StationaryTrucks,
        QueryType::LongDrivingSessions,
        QueryType::LongDailySessions,
        QueryType::AvgVsProjectedFuelConsumption,
        QueryType::AvgDailyDrivingDuration,
        QueryType::AvgLoad,
        QueryType::DailyActivity,
        QueryType::BreakdownFrequency,
    ];

    /// The TSBS name.
    pub fn name(self) -> &'static str {
        match self {
            QueryType::LastLoc => "last-loc",
            QueryType::SingleLastLoc => "single-last-loc",
            QueryType::LowFuel => "low-fuel",
            QueryType::HighLoad => "high-load",
            QueryType::StationaryTrucks => "stationary-trucks",
            QueryType::LongDrivingSessions => "long-driving-sessions",
            QueryType::LongDailySessions => "long-daily-sessions",
            QueryType::AvgVsProjectedFuelConsumption => "avg-vs-projected-fuel-consumption",
            QueryType::AvgDailyDrivingDuration => "avg-daily-driving-duration",
            QueryType::AvgLoad => "avg-load",
            QueryType::DailyActivity => "daily-activity",
            QueryType::BreakdownFrequency => "breakdown-frequency",
        }
    }

    /// The window a type looks at, when it is not the whole data set.
    fn window(self) -> Option<Duration> {
        match self {
            QueryType::StationaryTrucks => Some(Duration::from_secs(600)),
            QueryType::LongDrivingSessions => Some(Duration::from_secs(4 * 3600)),
            QueryType::LongDailySessions => Some(Duration::from_secs(24 * 3600)),
            _ => None,
        }
    }

    /// Buckets with mean velocity > 1 a truck needs to be listed (TSBS: driving more than
    /// 220 minutes of 4 hours, more than 10 hours of 24).
    fn sessions_min_buckets(self) -> usize {
        if self == QueryType::LongDailySessions {
            60
        } else {
            22
        }
    }
}

const FLEETS: [&str; 4] = ["East", "West", "North", "South"];
const BUCKET_NS: i64 = 600_000_000_000;
const DAY_NS: i64 = 86_400_000_000_000;

/// The random parts of one query, drawn the same for every system.
#[derive(Clone, Debug)]
pub struct Params {
    /// A fleet.
    pub fleet: &'static str,
    /// A truck name.
    pub truck: String,
    /// `[start, end)` in nanoseconds: the type's window, or the whole data set.
    pub start_ns: i64,
    /// End of the same.
    pub end_ns: i64,
}

/// Draws the parameters of iteration `i` of `q` over data `[start_ns, end_ns)` with `trucks`
/// trucks. Windows start at a multiple of 10 minutes and are cut to the data set.
pub fn params(seed: u64, q: QueryType, i: usize, trucks: usize, start_ns: i64, end_ns: i64) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((q as u64) << 32) ^ i as u64);
    let fleet = FLEETS[rng.gen_range(0..FLEETS.len())];
    let truck = format!("truck_{}", rng.gen_range(0..trucks.max(1)));
    let (start_ns, end_ns) = match q.window() {
        None => (start_ns, end_ns),
        Some(w) => {
            let w = (w.as_nanos() as i64).min(end_ns - start_ns);
            let slots = (end_ns - start_ns - w) / BUCKET_NS;
            let s = start_ns + rng.gen_range(0..=slots) * BUCKET_NS;
            (s, s + w)
        }
    };
    Params { fleet, truck, start_ns, end_ns }
}

fn key(parts: &[&str]) -> String {
    parts.join("|")
}

/// Per group of `group_keys`, per field, the value with the greatest timestamp among `rows`.
fn latest_by(
    rows: impl Iterator<Item = (String, Vec<(i64, f64)>)>,
    fields: usize,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (group, values) in rows {
        let slot = out.entry(group).or_insert_with(|| vec![(i64::MIN, f64::NAN); fields]);
        for (s, v) in slot.iter_mut().zip(values) {
            if v.0 > s.0 {
                *s = v;
            }
        }
    }
    out
}

fn values_only(latest: BTreeMap<String, Vec<(i64, f64)>>) -> Answer {
    latest.into_iter().map(|(k, v)| (k, v.into_iter().map(|(_, x)| x).collect())).collect()
}

/// Counts, per group, the 10-minute buckets whose mean passes `keep`, per day when `daily`;
/// groups and days with none are left out.
fn count_buckets(
    rows: Vec<(String, i64, f64)>,
    keep: impl Fn(f64) -> bool,
    day0: Option<i64>,
) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for (group, ts, mean) in rows {
        if !keep(mean) {
            continue;
        }
        let k = match day0 {
            Some(d0) => format!("{group}|{}", d0 + (ts - d0).div_euclid(DAY_NS) * DAY_NS),
            None => group,
        };
        *out.entry(k).or_default() += 1;
    }
    out
}

/// Per model, the number of buckets in which at least half the rows have a non-zero status
/// that follow a bucket in which fewer do; `counts` is (model, bucket) → (all rows, non-zero).
fn breakdowns(counts: BTreeMap<(String, i64), (f64, f64)>) -> Answer {
    let mut out = Answer::new();
    let mut prev: Option<(String, bool)> = None;
    for ((model, _), (all, nonzero)) in counts {
        let broken = all > 0.0 && nonzero / all >= 0.5;
        let n = out.entry(model.clone()).or_insert_with(|| vec![0.0]);
        if let Some((pm, pb)) = &prev {
            if *pm == model && !pb && broken {
                n[0] += 1.0;
            }
        }
        prev = Some((model, broken));
    }
    out
}

/// Finishes the answer of a type from its per-bucket means: (group key, bucket start, mean).
fn finish_bucketed(q: QueryType, rows: Vec<(String, i64, f64)>, p: &Params) -> Answer {
    match q {
        QueryType::LongDrivingSessions | QueryType::LongDailySessions => count_buckets(rows, |m| m > 1.0, None)
            .into_iter()
            .filter(|(_, n)| *n > q.sessions_min_buckets())
            .map(|(k, n)| (k, vec![n as f64]))
            .collect(),
        QueryType::AvgDailyDrivingDuration => count_buckets(rows, |m| m > 1.0, Some(p.start_ns))
            .into_iter()
            .map(|(k, n)| (k, vec![n as f64 / 6.0]))
            .collect(),
        QueryType::DailyActivity => count_buckets(rows, |m| m < 1.0, Some(p.start_ns))
            .into_iter()
            .map(|(k, n)| (k, vec![n as f64 / 144.0]))
            .collect(),
        _ => unreachable!("{} is not bucketed", q.name()),
    }
}

fn load_share(cap: &str, mean: f64) -> Option<f64> {
    cap.parse::<f64>().ok().filter(|c| *c > 0.0).map(|c| mean / c)
}

// ---------------------------------------------------------------------------------------------
// Hotlake

/// Runs queries against Hotlake's gRPC query API through `hotlake-client`.
pub struct Hotlake {
    rt: tokio::runtime::Runtime,
    client: hotlake_client::Client,
    tenant: String,
}

impl Hotlake {
    /// Connects to a node's gRPC address.
    pub fn connect(grpc: &str, token: Option<&str>, tenant: &str) -> anyhow::Result<Hotlake> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = rt.block_on(crate::token::grpc_with(vec![grpc.to_string()], token).connect())?;
        Ok(Hotlake { rt, client, tenant: tenant.into() })
    }

    fn query(&self, q: QueryBuilder) -> anyhow::Result<QueryResult> {
        Ok(self.rt.block_on(self.client.query(q.tenant(&self.tenant)))?)
    }

    fn last(&self, q: LastBuilder) -> anyhow::Result<Vec<LastRow>> {
        Ok(self.rt.block_on(self.client.last(q.tenant(&self.tenant)))?)
    }

    /// Latest values of `fields` per group of `group_keys` from the `Last` API.
    fn latest(
        &self,
        q: LastBuilder,
        group_keys: &[&str],
        fields: &[&str],
    ) -> anyhow::Result<BTreeMap<String, Vec<(i64, f64)>>> {
        let rows = self.last(fields.iter().fold(q, |q, f| q.field(f)))?;
        Ok(latest_by(
            rows.iter().map(|r| {
                let tag = |k: &str| r.tags.iter().find(|(t, _)| t == k).map(|(_, v)| v.as_str()).unwrap_or("");
                let group = key(&group_keys.iter().map(|k| tag(k)).collect::<Vec<_>>());
                let values = fields
                    .iter()
                    .map(|f| {
                        r.values
                            .iter()
                            .find(|(name, _, _)| name == f)
                            .map(|(_, ts, v)| (*ts, v.as_f64().unwrap_or(f64::NAN)))
                            .unwrap_or((i64::MIN, f64::NAN))
                    })
                    .collect();
                (group, values)
            }),
            fields.len(),
        ))
    }

    /// One aggregate of one field: (group key, bucket start, value) per row.
    fn aggregated(&self, q: QueryBuilder, group_keys: &[&str]) -> anyhow::Result<Vec<(String, i64, f64)>> {
        let q = group_keys.iter().fold(q, |q, k| q.group_by(k));
        let result = self.query(q)?;
        let mut out = Vec::new();
        for g in &result.groups {
            let group: Vec<&str> = group_keys.iter().map(|k| g.tag(k).unwrap_or("")).collect();
            let k = key(&group);
            for row in &g.rows {
                let v = row.values.first().and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                out.push((k.clone(), row.timestamp_ns, v));
            }
        }
        Ok(out)
    }

    /// Runs one query and returns its normalised answer.
    // tidy: long (the twelve query types for one system side by side).
    pub fn run(&self, q: QueryType, p: &Params) -> anyhow::Result<Answer> {
        let range = |b: QueryBuilder| b.range(p.start_ns, p.end_ns);
        let every = Duration::from_nanos(BUCKET_NS as u64);
        Ok(match q {
            QueryType::LastLoc => values_only(self.latest(
                LastBuilder::new("readings").where_eq("fleet", p.fleet),
                &["name", "driver"],
                &["latitude", "longitude"],
            )?),
            QueryType::SingleLastLoc => values_only(self.latest(
                LastBuilder::new("readings").where_eq("name", &p.truck),
                &["name"],
                &["latitude", "longitude"],
            )?),
            QueryType::LowFuel => self
                .aggregated(
                    range(QueryBuilder::new("diagnostics"))
                        .field("fuel_state")
                        .where_eq("fleet", p.fleet)
                        .filter("fuel_state", Cmp::Le, 0.1)
                        .aggregate(Aggregate::Last),
                    &["name"],
                )?
                .into_iter()
                .map(|(k, _, v)| (k, vec![v]))
                .collect(),
            QueryType::HighLoad => values_only(self.latest(
                LastBuilder::new("diagnostics").where_eq("fleet", p.fleet),
                &["name", "driver", "load_capacity"],
                &["current_load"],
            )?)
            .into_iter()
            .filter(|(k, v)| high_load(k, v[0]))
            .collect(),
            QueryType::StationaryTrucks => self
                .aggregated(
                    range(QueryBuilder::new("readings"))
                        .field("velocity")
                        .where_eq("fleet", p.fleet)
                        .aggregate(Aggregate::Mean),
                    &["name", "driver"],
                )?
                .into_iter()
                .filter(|(_, _, m)| *m < 1.0)
                .map(|(k, _, m)| (k, vec![m]))
                .collect(),
            QueryType::LongDrivingSessions | QueryType::LongDailySessions => {
                let rows = self.aggregated(
                    range(QueryBuilder::new("readings"))
                        .field("velocity")
                        .where_eq("fleet", p.fleet)
                        .aggregate(Aggregate::Mean)
                        .every(every),
                    &["name", "driver"],
                )?;
                finish_bucketed(q, rows, p)
            }
            QueryType::AvgVsProjectedFuelConsumption => self
                .aggregated(
                    range(QueryBuilder::new("readings"))
                        .field("fuel_consumption")
                        .filter("velocity", Cmp::Gt, 1.0)
                        .aggregate(Aggregate::Mean),
                    &["fleet", "nominal_fuel_consumption"],
                )?
                .into_iter()
                .map(|(k, _, m)| (k, vec![m]))
                .collect(),
            QueryType::AvgDailyDrivingDuration => {
                let rows = self.aggregated(
                    range(QueryBuilder::new("readings")).field("velocity").aggregate(Aggregate::Mean).every(every),
                    &["fleet", "name", "driver"],
                )?;
                finish_bucketed(q, rows, p)
            }
            QueryType::AvgLoad => self
                .aggregated(
                    range(QueryBuilder::new("diagnostics")).field("current_load").aggregate(Aggregate::Mean),
                    &["fleet", "model", "load_capacity"],
                )?
                .into_iter()
                .filter_map(|(k, _, m)| Some((k.clone(), vec![load_share(k.rsplit('|').next()?, m)?])))
                .collect(),
            QueryType::DailyActivity => {
                let rows = self.aggregated(
                    range(QueryBuilder::new("diagnostics")).field("status").aggregate(Aggregate::Mean).every(every),
                    &["fleet", "model"],
                )?;
                finish_bucketed(q, rows, p)
            }
            QueryType::BreakdownFrequency => {
                let count =
                    || range(QueryBuilder::new("diagnostics")).field("status").aggregate(Aggregate::Count).every(every);
                let all = self.aggregated(count(), &["model"])?;
                let nonzero = self.aggregated(count().filter("status", Cmp::Ne, 0.0), &["model"])?;
                let mut counts: BTreeMap<(String, i64), (f64, f64)> = BTreeMap::new();
                for (m, t, n) in all {
                    counts.entry((m, t)).or_default().0 = n;
                }
                for (m, t, n) in nonzero {
                    counts.entry((m, t)).or_default().1 = n;
                }
                breakdowns(counts)
            }
        })
    }
}

/// Whether the latest load of group `k` (ending in `|load_capacity`) is at least 90% of it.
fn high_load(k: &str, load: f64) -> bool {
    k.rsplit('|').next().and_then(|cap| cap.parse::<f64>().ok()).is_some_and(|cap| load >= 0.9 * cap)
}

// ---------------------------------------------------------------------------------------------
// InfluxDB

/// Runs InfluxQL against InfluxDB 1.x's `/query`.
pub struct Influx {
    http: reqwest::blocking::Client,
    url: String,
}

/// One series of an InfluxQL answer.
struct InfluxSeries {
    tags: BTreeMap<String, String>,
    values: Vec<Vec<Json>>,
}

impl InfluxSeries {
    fn group(&self, keys: &[&str]) -> String {
        group_of(&self.tags, keys)
    }
}

/// The group key of a series from its tags (labels); a missing one is the empty string.
fn group_of(tags: &BTreeMap<String, String>, keys: &[&str]) -> String {
    key(&keys.iter().map(|k| tags.get(*k).map(String::as_str).unwrap_or("")).collect::<Vec<_>>())
}

/// A JSON object of strings (InfluxDB's tags, a Prometheus metric) as a map.
fn string_map(v: &Json) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

/// An HTTP client for queries: generous timeout, since a slow answer is a figure, not a failure.
fn query_client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build()?)
}

fn num(v: &Json) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

impl Influx {
    /// Talks to `host:port`, database `bench`.
    pub fn new(http: &str) -> anyhow::Result<Influx> {
        Ok(Influx { http: query_client()?, url: format!("http://{http}/query") })
    }

    /// Runs one or more `;`-separated statements; the series of each statement.
    fn statements(&self, q: &str) -> anyhow::Result<Vec<Vec<InfluxSeries>>> {
        let r = self.http.post(&self.url).form(&[("db", "bench"), ("epoch", "ns"), ("q", q)]).send()?;
        let status = r.status();
        let v: Json = r.json().context("InfluxDB answer is not JSON")?;
        if !status.is_success() {
            bail!("InfluxDB {status}: {v}");
        }
        let mut out = Vec::new();
        for result in v["results"].as_array().into_iter().flatten() {
            if let Some(e) = result.get("error") {
                bail!("InfluxDB: {e} in {q}");
            }
            let series = result["series"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| InfluxSeries {
                    tags: string_map(&s["tags"]),
                    values: s["values"]
                        .as_array()
                        .map(|rows| rows.iter().map(|r| r.as_array().cloned().unwrap_or_default()).collect())
                        .unwrap_or_default(),
                })
                .collect();
            out.push(series);
        }
        Ok(out)
    }

    fn series(&self, q: &str) -> anyhow::Result<Vec<InfluxSeries>> {
        Ok(self.statements(q)?.into_iter().next().unwrap_or_default())
    }

    /// (group, bucket start, value of the first column after time) for every row.
    fn rows(&self, q: &str, group_keys: &[&str]) -> anyhow::Result<Vec<(String, i64, f64)>> {
        let mut out = Vec::new();
        for s in self.series(q)? {
            let g = s.group(group_keys);
            for row in &s.values {
                let t = row.first().and_then(Json::as_i64).unwrap_or(0);
                out.push((g.clone(), t, row.get(1).map(num).unwrap_or(f64::NAN)));
            }
        }
        Ok(out)
    }

    /// Runs one query and returns its normalised answer.
    // tidy: long (the twelve query types for one system side by side).
    pub fn run(&self, q: QueryType, p: &Params) -> anyhow::Result<Answer> {
        // InfluxQL takes integer nanoseconds as time literals.
        let time = format!("time >= {} AND time < {}", p.start_ns, p.end_ns);
        let fleet = &p.fleet;
        let latest = |q: &str, keys: &[&str]| -> anyhow::Result<Answer> {
            Ok(self
                .series(q)?
                .iter()
                .filter_map(|s| Some((s.group(keys), s.values.first()?.iter().skip(1).map(num).collect())))
                .collect())
        };
        Ok(match q {
            QueryType::LastLoc => latest(
                &format!(
                    r#"SELECT last("latitude"), last("longitude") FROM "readings" WHERE "fleet" = '{fleet}' GROUP BY "name", "driver""#
                ),
                &["name", "driver"],
            )?,
            QueryType::SingleLastLoc => latest(
                &format!(
                    r#"SELECT last("latitude"), last("longitude") FROM "readings" WHERE "name" = '{}' GROUP BY "name""#,
                    p.truck
                ),
                &["name"],
            )?,
            QueryType::LowFuel => latest(
                &format!(
                    r#"SELECT last("fuel_state") FROM "diagnostics" WHERE "fuel_state" <= 0.1 AND "fleet" = '{fleet}' AND {time} GROUP BY "name""#
                ),
                &["name"],
            )?,
            QueryType::HighLoad => latest(
                &format!(
                    r#"SELECT last("current_load") FROM "diagnostics" WHERE "fleet" = '{fleet}' GROUP BY "name", "driver", "load_capacity""#
                ),
                &["name", "driver", "load_capacity"],
            )?
            .into_iter()
            .filter(|(k, v)| high_load(k, v[0]))
            .collect(),
            QueryType::StationaryTrucks => self
                .rows(
                    &format!(
                        r#"SELECT mean("velocity") FROM "readings" WHERE "fleet" = '{fleet}' AND {time} GROUP BY "name", "driver""#
                    ),
                    &["name", "driver"],
                )?
                .into_iter()
                .filter(|(_, _, m)| *m < 1.0)
                .map(|(k, _, m)| (k, vec![m]))
                .collect(),
            QueryType::LongDrivingSessions | QueryType::LongDailySessions => {
                let rows = self.rows(
                    &format!(
                        r#"SELECT mean("velocity") FROM "readings" WHERE "fleet" = '{fleet}' AND {time} GROUP BY time(10m), "name", "driver" fill(none)"#
                    ),
                    &["name", "driver"],
                )?;
                finish_bucketed(q, rows, p)
            }
            QueryType::AvgVsProjectedFuelConsumption => self
                .rows(
                    &format!(
                        r#"SELECT mean("fuel_consumption") FROM "readings" WHERE "velocity" > 1 AND {time} GROUP BY "fleet", "nominal_fuel_consumption""#
                    ),
                    &["fleet", "nominal_fuel_consumption"],
                )?
                .into_iter()
                .map(|(k, _, m)| (k, vec![m]))
                .collect(),
            QueryType::AvgDailyDrivingDuration => {
                let rows = self.rows(
                    &format!(
                        r#"SELECT mean("velocity") FROM "readings" WHERE {time} GROUP BY time(10m), "fleet", "name", "driver" fill(none)"#
                    ),
                    &["fleet", "name", "driver"],
                )?;
                finish_bucketed(q, rows, p)
            }
            QueryType::AvgLoad => self
                .rows(
                    &format!(
                        r#"SELECT mean("current_load") FROM "diagnostics" WHERE {time} GROUP BY "fleet", "model", "load_capacity""#
                    ),
                    &["fleet", "model", "load_capacity"],
                )?
                .into_iter()
                .filter_map(|(k, _, m)| Some((k.clone(), vec![load_share(k.rsplit('|').next()?, m)?])))
                .collect(),
            QueryType::DailyActivity => {
                let rows = self.rows(
                    &format!(
                        r#"SELECT mean("status") FROM "diagnostics" WHERE {time} GROUP BY time(10m), "fleet", "model" fill(none)"#
                    ),
                    &["fleet", "model"],
                )?;
                finish_bucketed(q, rows, p)
            }
            QueryType::BreakdownFrequency => {
                let answers = self.statements(&format!(
                    r#"SELECT count("status") FROM "diagnostics" WHERE {time} GROUP BY time(10m), "model" fill(none); SELECT count("status") FROM "diagnostics" WHERE "status" != 0 AND {time} GROUP BY time(10m), "model" fill(none)"#
                ))?;
                let mut counts: BTreeMap<(String, i64), (f64, f64)> = BTreeMap::new();
                for (i, series) in answers.iter().enumerate() {
                    for s in series {
                        for row in &s.values {
                            let t = row.first().and_then(Json::as_i64).unwrap_or(0);
                            let n = row.get(1).map(num).unwrap_or(0.0);
                            let slot = counts.entry((s.group(&["model"]), t)).or_default();
                            if i == 0 {
                                slot.0 = n;
                            } else {
                                slot.1 = n;
                            }
                        }
                    }
                }
                breakdowns(counts)
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// VictoriaMetrics

/// Runs MetricsQL against VictoriaMetrics' Prometheus API. Its line-protocol import names a
/// series `{measurement}_{field}` with the tags as labels.
pub struct Victoria {
    http: reqwest::blocking::Client,
    base: String,
}

/// One series of a MetricsQL answer: labels and (timestamp s, value) samples.
struct PromSeries {
    labels: BTreeMap<String, String>,
    samples: Vec<(f64, f64)>,
}

impl PromSeries {
    fn group(&self, keys: &[&str]) -> String {
        group_of(&self.labels, keys)
    }
}

/// Why VictoriaMetrics has no version of a type.
pub fn victoria_gap(q: QueryType) -> Option<&'static str> {
    match q {
        QueryType::LowFuel => {
            Some("needs the latest sample among those passing a value filter; a rollup sees all samples")
        }
        QueryType::AvgVsProjectedFuelConsumption => {
            Some("filters one series' samples by another series' value at the same instant")
        }
        QueryType::BreakdownFrequency => Some("counts samples passing a value filter per bucket"),
        _ => None,
    }
}

impl Victoria {
    /// Talks to `host:port`.
    pub fn new(http: &str) -> anyhow::Result<Victoria> {
        Ok(Victoria { http: query_client()?, base: format!("http://{http}") })
    }

    fn get(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<Vec<PromSeries>> {
        let r = self.http.get(format!("{}{path}", self.base)).query(params).send()?;
        let status = r.status();
        let v: Json = r.json().context("VictoriaMetrics answer is not JSON")?;
        if !status.is_success() || v["status"] != "success" {
            bail!("VictoriaMetrics {status}: {v}");
        }
        let sample = |s: &Json| -> (f64, f64) {
            let t = s[0].as_f64().unwrap_or(0.0);
            let x = s[1].as_str().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
            (t, x)
        };
        Ok(v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| PromSeries {
                labels: string_map(&s["metric"]),
                samples: match s.get("values") {
                    Some(vals) => vals.as_array().into_iter().flatten().map(sample).collect(),
                    None => vec![sample(&s["value"])],
                },
            })
            .collect())
    }

    /// An instant query evaluated at `at_ns`.
    fn instant(&self, expr: &str, at_ns: i64) -> anyhow::Result<Vec<PromSeries>> {
        self.get("/api/v1/query", &[("query", expr.to_string()), ("time", format!("{:.3}", at_ns as f64 / 1e9))])
    }

    /// Latest values of `metrics` per group: each metric's last sample and its timestamp per
    /// series in one union query, then per group the series whose sample is newest.
    fn latest(&self, metrics: &[&str], selector: &str, p: &Params, keys: &[&str]) -> anyhow::Result<Answer> {
        let span = (p.end_ns - p.start_ns) / 1_000_000_000;
        let parts: Vec<String> = metrics
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                [
                    format!(r#"label_set(tlast_over_time({m}{selector}[{span}s] offset 1ms), "hl_q", "t{i}")"#),
                    format!(r#"label_set(last_over_time({m}{selector}[{span}s] offset 1ms), "hl_q", "v{i}")"#),
                ]
            })
            .collect();
        let result = self.instant(&format!("union({})", parts.join(", ")), p.end_ns)?;
        // Pair each series' timestamp and value by the series' other labels.
        let mut per_series: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        for mut s in result {
            let Some(tag) = s.labels.remove("hl_q") else { continue };
            // last_over_time keeps the metric name and tlast_over_time drops it.
            s.labels.remove("__name__");
            let (kind, i) = tag.split_at(1);
            let Ok(i) = i.parse::<usize>() else { continue };
            let value = s.samples.first().map(|x| x.1).unwrap_or(f64::NAN);
            let slot = per_series.entry(s.labels).or_insert_with(|| vec![(i64::MIN, f64::NAN); metrics.len()]);
            if kind == "t" {
                slot[i].0 = (value * 1e3).round() as i64;
            } else {
                slot[i].1 = value;
            }
        }
        Ok(values_only(latest_by(
            per_series.iter().map(|(labels, values)| (group_of(labels, keys), values.clone())),
            metrics.len(),
        )))
    }

    /// Mean of `metric` per group over `[t - 10m, t)` buckets ending at `t`, as a MetricsQL
    /// expression (sums and counts, so a group of several series weighs every sample once).
    fn bucket_mean(metric: &str, selector: &str, by: &str) -> String {
        format!(
            "(sum by ({by}) (sum_over_time({metric}{selector}[600s] offset 1ms)) / sum by ({by}) (count_over_time({metric}{selector}[600s] offset 1ms)))"
        )
    }

    /// Counts per day of buckets passing `cond`, via a range query with a 1-day step.
    fn per_day(&self, expr: &str, p: &Params, keys: &[&str], scale: f64) -> anyhow::Result<Answer> {
        let result = self.get(
            "/api/v1/query_range",
            &[
                ("query", format!("count_over_time(({expr})[1d:10m])")),
                ("start", format!("{}", (p.start_ns + DAY_NS) / 1_000_000_000)),
                ("end", format!("{}", p.end_ns / 1_000_000_000)),
                ("step", "1d".into()),
            ],
        )?;
        let mut out = Answer::new();
        for s in &result {
            let g = s.group(keys);
            for (t, n) in &s.samples {
                let day_start = (*t * 1e9).round() as i64 - DAY_NS;
                out.insert(format!("{g}|{day_start}"), vec![n / scale]);
            }
        }
        Ok(out)
    }

    /// Runs one query; `None` when MetricsQL cannot express the type ([`victoria_gap`]).
    pub fn run(&self, q: QueryType, p: &Params) -> anyhow::Result<Option<Answer>> {
        if victoria_gap(q).is_some() {
            return Ok(None);
        }
        let fleet = format!(r#"{{fleet="{}"}}"#, p.fleet);
        let span = (p.end_ns - p.start_ns) / 1_000_000_000;
        Ok(Some(match q {
            QueryType::LastLoc => {
                self.latest(&["readings_latitude", "readings_longitude"], &fleet, p, &["name", "driver"])?
            }
            QueryType::SingleLastLoc => self.latest(
                &["readings_latitude", "readings_longitude"],
                &format!(r#"{{name="{}"}}"#, p.truck),
                p,
                &["name"],
            )?,
            QueryType::HighLoad => self
                .latest(&["diagnostics_current_load"], &fleet, p, &["name", "driver", "load_capacity"])?
                .into_iter()
                .filter(|(k, v)| high_load(k, v[0]))
                .collect(),
            QueryType::StationaryTrucks => self
                .instant(&format!("{} < 1", Self::bucket_mean("readings_velocity", &fleet, "name, driver")), p.end_ns)?
                .iter()
                .map(|s| (s.group(&["name", "driver"]), vec![s.samples.first().map(|x| x.1).unwrap_or(f64::NAN)]))
                .collect(),
            QueryType::LongDrivingSessions | QueryType::LongDailySessions => self
                .instant(
                    &format!(
                        "count_over_time(({} > 1)[{span}s:10m]) > {}",
                        Self::bucket_mean("readings_velocity", &fleet, "name, driver"),
                        q.sessions_min_buckets()
                    ),
                    p.end_ns,
                )?
                .iter()
                .map(|s| (s.group(&["name", "driver"]), vec![s.samples.first().map(|x| x.1).unwrap_or(f64::NAN)]))
                .collect(),
            QueryType::AvgDailyDrivingDuration => self.per_day(
                &format!("{} > 1", Self::bucket_mean("readings_velocity", "", "fleet, name, driver")),
                p,
                &["fleet", "name", "driver"],
                6.0,
            )?,
            QueryType::AvgLoad => {
                let by = "fleet, model, load_capacity";
                let expr = format!(
                    "sum by ({by}) (sum_over_time(diagnostics_current_load[{span}s] offset 1ms)) / sum by ({by}) (count_over_time(diagnostics_current_load[{span}s] offset 1ms))"
                );
                self.instant(&expr, p.end_ns)?
                    .iter()
                    .filter_map(|s| {
                        let k = s.group(&["fleet", "model", "load_capacity"]);
                        let share = load_share(s.labels.get("load_capacity")?, s.samples.first()?.1)?;
                        Some((k, vec![share]))
                    })
                    .collect()
            }
            QueryType::DailyActivity => self.per_day(
                &format!("{} < 1", Self::bucket_mean("diagnostics_status", "", "fleet, model")),
                p,
                &["fleet", "model"],
                144.0,
            )?,
            QueryType::LowFuel | QueryType::AvgVsProjectedFuelConsumption | QueryType::BreakdownFrequency => {
                unreachable!("no MetricsQL version")
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-check

/// Relative tolerance of value comparisons: sums are added in different orders.
const TOLERANCE: f64 = 1e-6;

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

/// `None` when `a` and `b` hold the same groups and values; else the first difference.
pub fn difference(a: &Answer, b: &Answer) -> Option<String> {
    for (k, va) in a {
        match b.get(k) {
            None => return Some(format!("group {k:?} only in the first ({} groups against {})", a.len(), b.len())),
            Some(vb) if va.len() != vb.len() || va.iter().zip(vb).any(|(x, y)| !close(*x, *y)) => {
                return Some(format!("group {k:?}: {va:?} against {vb:?}"))
            }
            Some(_) => {}
        }
    }
    b.keys()
        .find(|k| !a.contains_key(*k))
        .map(|k| format!("group {k:?} only in the second ({} groups against {})", a.len(), b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_inside_the_data_and_params_repeat_by_seed() {
        let (s, e) = (1_451_606_400_000_000_000, 1_451_606_400_000_000_000 + 2 * DAY_NS);
        for i in 0..50 {
            let p = params(7, QueryType::LongDailySessions, i, 10, s, e);
            assert_eq!(p.end_ns - p.start_ns, DAY_NS);
            assert!(p.start_ns >= s && p.end_ns <= e);
            assert_eq!((p.start_ns - s) % BUCKET_NS, 0);
        }
        let short = params(7, QueryType::LongDailySessions, 0, 10, s, s + 3600 * 1_000_000_000);
        assert_eq!((short.start_ns, short.end_ns), (s, s + 3600 * 1_000_000_000));
        let (a, b) = (params(3, QueryType::LastLoc, 4, 10, s, e), params(3, QueryType::LastLoc, 4, 10, s, e));
        assert_eq!((a.fleet, a.truck), (b.fleet, b.truck));
    }

    #[test]
    fn latest_picks_the_newest_value_per_field_across_series() {
        let rows = vec![
            (key(&["t1", "Seth"]), vec![(10, 1.0), (30, 3.0)]),
            (key(&["t1", "Seth"]), vec![(20, 2.0), (5, 9.0)]),
            (key(&["t2", ""]), vec![(1, 7.0), (i64::MIN, f64::NAN)]),
        ];
        let out = values_only(latest_by(rows.into_iter(), 2));
        assert_eq!(out["t1|Seth"], vec![2.0, 3.0]);
        assert_eq!(out["t2|"][0], 7.0);
        assert!(out["t2|"][1].is_nan());
    }

    #[test]
    fn bucket_counts_split_by_day_and_breakdowns_count_rising_edges() {
        let d0 = 0;
        let rows = vec![
            ("a".to_string(), 0, 2.0),
            ("a".to_string(), BUCKET_NS, 0.5),
            ("a".to_string(), DAY_NS, 3.0),
            ("b".to_string(), 0, 0.0),
        ];
        let counts = count_buckets(rows, |m| m > 1.0, Some(d0));
        assert_eq!(counts.get(&format!("a|{}", 0)), Some(&1));
        assert_eq!(counts.get(&format!("a|{DAY_NS}")), Some(&1));
        assert!(!counts.keys().any(|k| k.starts_with('b')));
        let mut c = BTreeMap::new();
        // Working, broken, broken, working, broken: two rising edges.
        for (i, (all, nz)) in [(4.0, 1.0), (4.0, 2.0), (4.0, 3.0), (4.0, 0.0), (2.0, 1.0)].into_iter().enumerate() {
            c.insert(("F-150".to_string(), i as i64), (all, nz));
        }
        c.insert(("H-2".to_string(), 0), (1.0, 1.0));
        let b = breakdowns(c);
        assert_eq!(b["F-150"], vec![2.0]);
        assert_eq!(b["H-2"], vec![0.0], "a first bucket is no transition");
    }

    #[test]
    fn differences_name_the_group() {
        let a: Answer = [("x".to_string(), vec![1.0]), ("y".to_string(), vec![f64::NAN])].into();
        let mut b = a.clone();
        assert_eq!(difference(&a, &b), None);
        b.insert("x".into(), vec![1.0 + 1e-9]);
        assert_eq!(difference(&a, &b), None, "within tolerance");
        b.insert("x".into(), vec![1.1]);
        assert!(difference(&a, &b).unwrap().contains("\"x\""));
        b.remove("x");
        assert!(difference(&a, &b).unwrap().contains("only in the first"));
        assert!(high_load("t|Seth|2000", 1800.0) && !high_load("t|Seth|2000", 1799.0) && !high_load("t|Seth|", 1e9));
    }
}
