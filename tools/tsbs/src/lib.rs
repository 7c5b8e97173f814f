//! Deterministic generator for the TSBS `iot` use case (a fleet of trucks
//! reporting `readings` and `diagnostics`), used by benchmarks and tests to
//! produce realistic line protocol without shipping data files.
//!
//! This is Hotlake's own implementation of the published shape of that data
//! set: per-truck tags drawn once, fields that follow clamped random walks,
//! and an optional "disorder" pass that drops, delays and thins the stream the
//! way real devices do.
//!
//! # Determinism
//!
//! The same [`TsbsConfig`] yields the same rows, byte for byte, on every
//! machine and every run. To make that hold:
//!
//! - all randomness comes from [`ChaCha8Rng`] (a portable, specified stream)
//!   seeded from [`TsbsConfig::seed`]; each truck owns its own stream
//!   (stream id = truck index) so a truck's data does not depend on the
//!   fleet size, and disorder uses a separate stream;
//! - uniform floats, integer choices and normal deviates are derived here from
//!   raw `u64`s, so nothing depends on `rand`'s value-stability policy;
//! - only IEEE-exact operations (`+ - * /`, `sqrt`, `trunc`, `round`) touch the
//!   values: the logarithm needed for normal deviates is computed by a local
//!   series instead of the platform `libm`, whose last-ulp results differ
//!   between C libraries;
//! - printed values are truncated to a fixed number of decimals and formatted
//!   from the resulting integer, never through shortest-round-trip printing.

use std::fmt::Write as _;

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Field names of the `readings` measurement, in line protocol order.
pub const READINGS_FIELDS: [&str; 7] =
    ["latitude", "longitude", "elevation", "velocity", "heading", "grade", "fuel_consumption"];

/// Field names of the `diagnostics` measurement, in line protocol order.
pub const DIAGNOSTICS_FIELDS: [&str; 3] = ["fuel_state", "current_load", "status"];

/// The 8 tag keys every truck carries, in line protocol order.
pub const TAG_KEYS: [&str; 8] = [
    "name",
    "fleet",
    "driver",
    "model",
    "device_version",
    "load_capacity",
    "fuel_capacity",
    "nominal_fuel_consumption",
];

const FLEETS: [&str; 4] = ["East", "West", "North", "South"];
const DRIVERS: [&str; 6] = ["Derek", "Rodney", "Albert", "Andy", "Seth", "Trish"];
const DEVICE_VERSIONS: [&str; 4] = ["v1.0", "v1.5", "v2.0", "v2.3"];
/// Truck models with their load capacity, fuel capacity and nominal fuel
/// consumption; the model decides all three so queries can group on either.
const MODELS: [(&str, &str, &str, &str); 3] =
    [("F-150", "2000", "200", "15"), ("G-2000", "5000", "300", "19"), ("H-2", "1500", "150", "12")];

/// Decimals printed for each `readings` field (same order as
/// [`READINGS_FIELDS`]).
const READINGS_DECIMALS: [u32; 7] = [5, 5, 0, 0, 0, 0, 1];
const FUEL_STATE_DECIMALS: u32 = 1;
const CURRENT_LOAD_DECIMALS: u32 = 0;

/// Random-walk parameters per `readings` field: (step, min, max).
const READINGS_WALKS: [(f64, f64, f64); 7] = [
    (0.005, -90.0, 90.0),
    (0.005, -180.0, 180.0),
    (10.0, 0.0, 5000.0),
    (10.0, 0.0, 100.0),
    (5.0, 0.0, 360.0),
    (5.0, 0.0, 100.0),
    (5.0, 0.0, 50.0),
];

const FUEL_BURN_MAX: f64 = 0.001;
const LOAD_CHANGE_PROBABILITY: f64 = 0.05;
const MAX_LOAD: f64 = 5000.0;
const MAX_STATUS: f64 = 5.0;

/// Entries per disorder batch.
const BATCH_LEN: usize = 10;
const P_BATCH_DROPPED: f64 = 0.01;
const P_BATCH_HELD: f64 = 0.05;
const P_ENTRY_MISSING: f64 = 0.10;
const P_ENTRY_HELD: f64 = 0.30;
const P_FIELD_NULL: f64 = 0.10;
const P_TAG_NULL: f64 = 0.01;
/// Held-back data reappears after 1..=this many later batches, so late rows
/// land both within their own epoch and, for small fleets, several epochs on.
const MAX_HOLD_BATCHES: u64 = 8;
/// Stream id of the disorder RNG; truck streams use their index, and no
/// fleet gets anywhere near this many trucks.
const DISORDER_STREAM: u64 = u64::MAX;

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Parameters of a generated data set.
#[derive(Clone, Debug)]
pub struct TsbsConfig {
    /// Number of trucks, named `truck_0 … truck_{trucks-1}`.
    pub trucks: usize,
    /// Seed of every random choice; equal seeds give equal output.
    pub seed: u64,
    /// Timestamp of the first epoch, seconds since the Unix epoch.
    pub start_s: i64,
    /// Seconds between epochs.
    pub interval_s: i64,
    /// Whether to drop, delay and thin the stream like real devices.
    pub disorder: Disorder,
}

impl Default for TsbsConfig {
    /// 100 trucks, seed 1, starting 2016-01-01T00:00:00Z, 10 s interval, no
    /// disorder.
    fn default() -> Self {
        TsbsConfig { trucks: 100, seed: 1, start_s: 1_451_606_400, interval_s: 10, disorder: Disorder::None }
    }
}

/// How the generated stream is perturbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disorder {
    /// Every row, in order: per epoch, `readings` then `diagnostics` per truck.
    None,
    /// TSBS-style disorder over consecutive batches of 10 entries: 1% of
    /// batches dropped, 5% held back, and in the other batches 10% of entries
    /// missing and 30% held back. Held-back rows reappear after 1 to 8 later
    /// batches. Of the rows that are emitted, 10% lose one field and 1% lose
    /// one tag; a row left with no fields is dropped.
    Tsbs,
}

/// A field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// A float, already truncated to the field's decimals.
    F64(f64),
    /// An integer, written with the `i` suffix.
    I64(i64),
}

/// One point: a line of line protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `readings` or `diagnostics`.
    pub measurement: &'static str,
    /// Tag key/value pairs in [`TAG_KEYS`] order (one may be missing under
    /// disorder).
    pub tags: Vec<(&'static str, String)>,
    /// Timestamp in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Field name/value pairs in declaration order (one may be missing under
    /// disorder).
    pub fields: Vec<(&'static str, Field)>,
}

impl Row {
    /// Appends this row as one line of line protocol, with trailing `'\n'`.
    ///
    /// Floats of the generator's fields are printed with exactly their
    /// decimals (`52.31854`, `124`); integers get the `i` suffix. Floats of
    /// other field names are printed in shortest round-trip form. Commas,
    /// spaces and `=` in tags are escaped; the generator never produces them.
    pub fn write_line(&self, out: &mut String) {
        push_escaped(out, self.measurement, false);
        for (key, value) in &self.tags {
            out.push(',');
            push_escaped(out, key, true);
            out.push('=');
            push_escaped(out, value, true);
        }
        for (i, (name, value)) in self.fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            push_escaped(out, name, true);
            out.push('=');
            match value {
                Field::F64(v) => match field_decimals(name) {
                    Some(dp) => push_fixed(out, *v, dp),
                    None => {
                        let _ = write!(out, "{v}");
                    }
                },
                Field::I64(v) => {
                    push_i64(out, *v);
                    out.push('i');
                }
            }
        }
        out.push(' ');
        push_i64(out, self.timestamp_ns);
        out.push('\n');
    }
}

/// The rows as columnar series for the gRPC API: one entry per (measurement, tags), with a
/// column per field (rows lacking a field are listed in its `absent_rows`).
pub fn rows_to_series(rows: &[Row]) -> Vec<hotlake_proto::v1::SeriesPoints> {
    use hotlake_proto::v1::{field_column::Values, DoubleValues, FieldColumn, Int64Values, SeriesPoints, Tag};
    // (measurement, tags) → its rows, in order.
    type SeriesOf<'a> = (&'a str, Vec<(&'a str, &'a str)>);
    let mut by_series: std::collections::BTreeMap<SeriesOf, Vec<&Row>> = Default::default();
    for r in rows {
        let tags = r.tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        by_series.entry((r.measurement, tags)).or_default().push(r);
    }
    by_series
        .into_iter()
        .map(|((measurement, tags), rows)| {
            let mut fields: Vec<FieldColumn> = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                for (name, value) in &row.fields {
                    let col = match fields.iter().position(|c| c.name == *name) {
                        Some(c) => &mut fields[c],
                        None => {
                            let values = match value {
                                Field::F64(_) => Values::F64(DoubleValues::default()),
                                Field::I64(_) => Values::I64(Int64Values::default()),
                            };
                            fields.push(FieldColumn {
                                name: name.to_string(),
                                values: Some(values),
                                absent_rows: (0..i as u32).collect(),
                            });
                            fields.last_mut().expect("just pushed")
                        }
                    };
                    match (value, col.values.as_mut()) {
                        (Field::F64(x), Some(Values::F64(v))) => v.values.push(*x),
                        (Field::I64(x), Some(Values::I64(v))) => v.values.push(*x),
                        _ => unreachable!("a generator field keeps its type"),
                    }
                }
                // Fields this row lacks are absent at row i.
                for col in &mut fields {
                    let present = row.fields.iter().any(|(n, _)| *n == col.name);
                    if !present && col.absent_rows.last() != Some(&(i as u32)) {
                        col.absent_rows.push(i as u32);
                    }
                }
            }
            SeriesPoints {
                measurement: measurement.to_string(),
                tags: tags.into_iter().map(|(k, v)| Tag { key: k.into(), value: v.into() }).collect(),
                timestamps_ns: rows.iter().map(|r| r.timestamp_ns).collect(),
                fields,
            }
        })
        .collect()
}

/// Generator of the `iot` stream; see the module docs for determinism.
pub struct TsbsGenerator {
    config: TsbsConfig,
    trucks: Vec<Truck>,
    /// Index of the next epoch to generate.
    epoch: i64,
    disorder: Option<DisorderState>,
}

impl TsbsGenerator {
    /// Creates a generator; all per-truck tags and starting values are drawn
    /// here from `config.seed`.
    pub fn new(config: TsbsConfig) -> Self {
        let trucks = (0..config.trucks).map(|i| Truck::new(config.seed, i)).collect();
        let disorder = match config.disorder {
            Disorder::None => None,
            Disorder::Tsbs => Some(DisorderState::new(config.seed)),
        };
        TsbsGenerator { config, trucks, epoch: 0, disorder }
    }

    /// Next epoch's rows (2 per truck, before disorder) — with disorder, the
    /// emitted rows of this step. Empty Vec never returned while rows remain
    /// (it's infinite).
    ///
    /// Under disorder one call generates epochs until at least one row comes
    /// out; rows may belong to earlier epochs (held back, or the tail of an
    /// epoch that did not fill a whole batch). With zero trucks there are no
    /// rows and the result is always empty.
    pub fn next_epoch(&mut self) -> Vec<Row> {
        if self.trucks.is_empty() {
            return Vec::new();
        }
        loop {
            let rows = self.generate_rows();
            match &mut self.disorder {
                None => return rows,
                Some(disorder) => {
                    let emitted = disorder.process(rows);
                    if !emitted.is_empty() {
                        return emitted;
                    }
                }
            }
        }
    }

    /// Fills `out` with at least `lines` lines of line protocol (whole
    /// epochs), returns rows written and field values written.
    ///
    /// Appends to `out`; with zero trucks nothing is written.
    pub fn fill_lines(&mut self, lines: usize, out: &mut String) -> (usize, usize) {
        let (mut rows, mut fields) = (0, 0);
        if self.trucks.is_empty() {
            return (0, 0);
        }
        while rows < lines {
            if self.disorder.is_some() {
                for row in self.next_epoch() {
                    row.write_line(out);
                    rows += 1;
                    fields += row.fields.len();
                }
            } else {
                // Fast path: same values as `next_epoch`, written straight
                // from the samples with cached tag prefixes, skipping the
                // per-row allocations (a test pins the two paths together).
                // The timestamp is shared by the whole epoch: print it once.
                let mut suffix = String::from(" ");
                push_i64(&mut suffix, self.timestamp_ns());
                suffix.push('\n');
                self.epoch += 1;
                for truck in &mut self.trucks {
                    truck.sample().write_lines(truck, &suffix, out);
                }
                rows += 2 * self.trucks.len();
                fields += (READINGS_FIELDS.len() + DIAGNOSTICS_FIELDS.len()) * self.trucks.len();
            }
        }
        (rows, fields)
    }

    /// Epochs generated so far (under disorder, some of their rows may still be held back).
    pub fn epochs_generated(&self) -> i64 {
        self.epoch
    }

    fn timestamp_ns(&self) -> i64 {
        (self.config.start_s + self.epoch * self.config.interval_s) * NANOS_PER_SECOND
    }

    /// One epoch, undisordered.
    fn generate_rows(&mut self) -> Vec<Row> {
        let ts = self.timestamp_ns();
        self.epoch += 1;
        let mut rows = Vec::with_capacity(2 * self.trucks.len());
        for truck in &mut self.trucks {
            let sample = truck.sample();
            sample.push_rows(truck, ts, &mut rows);
        }
        rows
    }
}

/// A uniform float in `[0, 1)` from the top 53 bits, so the mapping from the
/// ChaCha stream to values is fixed here rather than by a library version.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform float in `[lo, hi)`.
fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit(rng)
}

/// A uniform index in `0..len` (multiply-shift, bias below 2^-60 here).
fn below(rng: &mut ChaCha8Rng, len: usize) -> usize {
    ((u128::from(rng.next_u64()) * len as u128) >> 64) as usize
}

/// A standard normal deviate (Marsaglia's polar form of Box–Muller), which
/// needs only `sqrt` and a logarithm, both computed portably.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let u = 2.0 * unit(rng) - 1.0;
        let v = 2.0 * unit(rng) - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * ln_portable(s) / s).sqrt();
        }
    }
}

/// Natural logarithm of a positive normal float using only IEEE-exact
/// arithmetic: `ln(m·2^e) = e·ln2 + 2·atanh((m-1)/(m+1))`, with `m` reduced to
/// `[√½, √2]` so the odd series converges to within an ulp or two in 12 terms.
/// `f64::ln` is avoided because its last bits vary between libm builds.
fn ln_portable(x: f64) -> f64 {
    debug_assert!(x.is_normal() && x > 0.0);
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if mantissa > std::f64::consts::SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    // Horner from the highest term: s·(1 + s²/3 + s⁴/5 + … + s²²/23).
    let mut series = 0.0;
    for k in (0..12).rev() {
        series = series * s2 + 1.0 / (2 * k + 1) as f64;
    }
    2.0 * s * series + exponent as f64 * std::f64::consts::LN_2
}

/// `10^dp` as an exact float and integer (dp is at most 5 here).
fn pow10(dp: u32) -> (f64, u64) {
    let p = 10u64.pow(dp);
    (p as f64, p)
}

/// `v` truncated to `dp` decimals, as the integer `v·10^dp`.
fn truncate_scaled(v: f64, dp: u32) -> i64 {
    (v * pow10(dp).0).trunc() as i64
}

/// Decimals of a generator field, `None` for integer or unknown fields.
fn field_decimals(name: &str) -> Option<u32> {
    if let Some(i) = READINGS_FIELDS.iter().position(|f| *f == name) {
        return Some(READINGS_DECIMALS[i]);
    }
    match name {
        "fuel_state" => Some(FUEL_STATE_DECIMALS),
        "current_load" => Some(CURRENT_LOAD_DECIMALS),
        _ => None,
    }
}

/// Prints `v` with exactly `dp` decimals. Values the generator made are the
/// nearest float to some `n / 10^dp`, so they are printed from `n` directly
/// (fast, and identical to `{:.dp$}`); anything else falls back to `{:.dp$}`.
fn push_fixed(out: &mut String, v: f64, dp: u32) {
    let (scale, _) = pow10(dp);
    let n = (v * scale).round();
    if n.abs() < (1u64 << 53) as f64 && n / scale == v {
        push_scaled(out, n as i64, dp);
    } else {
        let _ = write!(out, "{v:.prec$}", prec = dp as usize);
    }
}

/// Prints the decimal `n / 10^dp` with exactly `dp` decimals.
fn push_scaled(out: &mut String, n: i64, dp: u32) {
    let (_, p) = pow10(dp);
    if n < 0 {
        out.push('-');
    }
    let a = n.unsigned_abs();
    push_u64(out, a / p);
    if dp > 0 {
        out.push('.');
        let frac = a % p;
        // Leading zeros of the fraction: one per power of ten it falls short.
        let mut q = p / 10;
        while q > 1 && frac < q {
            out.push('0');
            q /= 10;
        }
        push_u64(out, frac);
    }
}

fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Integer printing without going through `core::fmt`, which dominates the
/// generator's cost otherwise.
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // ASCII digits map one-to-one onto chars; this skips a UTF-8 check.
    out.extend(buf[i..].iter().map(|&b| char::from(b)));
}

/// Line protocol escaping: commas and spaces always, `=` in keys and tag
/// values. Checked first because the generator's strings never need it.
fn push_escaped(out: &mut String, s: &str, escape_equals: bool) {
    if !s.bytes().any(|b| b == b',' || b == b' ' || b == b'=') {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c == ',' || c == ' ' || (escape_equals && c == '=') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A random walk: each tick adds `U(-step, step)` and clamps. The state keeps
/// full precision; only the printed value is truncated, so truncation does not
/// bias the walk towards zero.
#[derive(Clone, Debug)]
struct Walk {
    value: f64,
    step: f64,
    min: f64,
    max: f64,
}

impl Walk {
    fn advance(&mut self, rng: &mut ChaCha8Rng) {
        self.value = (self.value + uniform(rng, -self.step, self.step)).clamp(self.min, self.max);
    }
}

/// One truck: its tags, its RNG stream and its walking values.
struct Truck {
    rng: ChaCha8Rng,
    tag_values: [String; 8],
    /// `readings,<tags> ` and `diagnostics,<tags> `, cached for the fast path.
    readings_prefix: String,
    diagnostics_prefix: String,
    readings: [Walk; 7],
    fuel_state: f64,
    current_load: f64,
    status: f64,
}

/// One tick of a truck, already truncated to the printed decimals.
struct Sample {
    /// `readings` values scaled by `10^decimals`.
    readings: [i64; 7],
    /// `fuel_state` scaled by `10^FUEL_STATE_DECIMALS`.
    fuel_state: i64,
    /// `current_load` scaled by `10^CURRENT_LOAD_DECIMALS`.
    current_load: i64,
    status: i64,
}

impl Truck {
    fn new(seed: u64, index: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let fleet = FLEETS[below(&mut rng, FLEETS.len())];
        let driver = DRIVERS[below(&mut rng, DRIVERS.len())];
        let (model, load, fuel, consumption) = MODELS[below(&mut rng, MODELS.len())];
        let device = DEVICE_VERSIONS[below(&mut rng, DEVICE_VERSIONS.len())];
        let tag_values = [
            format!("truck_{index}"),
            fleet.to_owned(),
            driver.to_owned(),
            model.to_owned(),
            device.to_owned(),
            load.to_owned(),
            fuel.to_owned(),
            consumption.to_owned(),
        ];
        // Starting points: position and heading anywhere, elevation low,
        // stationary on flat ground with mid-range consumption.
        let starts = [
            uniform(&mut rng, 0.0, 90.0),
            uniform(&mut rng, 0.0, 180.0),
            uniform(&mut rng, 0.0, 500.0),
            0.0,
            uniform(&mut rng, 0.0, 360.0),
            0.0,
            25.0,
        ];
        let readings = std::array::from_fn(|i| {
            let (step, min, max) = READINGS_WALKS[i];
            Walk { value: starts[i], step, min, max }
        });
        let current_load = uniform(&mut rng, 0.0, MAX_LOAD);
        let mut tags = String::new();
        for (key, value) in TAG_KEYS.iter().zip(&tag_values) {
            tags.push(',');
            push_escaped(&mut tags, key, true);
            tags.push('=');
            push_escaped(&mut tags, value, true);
        }
        Truck {
            rng,
            readings_prefix: format!("readings{tags} "),
            diagnostics_prefix: format!("diagnostics{tags} "),
            tag_values,
            readings,
            fuel_state: 1.0,
            current_load,
            status: 0.0,
        }
    }

    /// Returns the current values, then advances the state one tick, so the
    /// first epoch shows the starting values.
    fn sample(&mut self) -> Sample {
        let sample = Sample {
            readings: std::array::from_fn(|i| truncate_scaled(self.readings[i].value, READINGS_DECIMALS[i])),
            fuel_state: truncate_scaled(self.fuel_state, FUEL_STATE_DECIMALS),
            current_load: truncate_scaled(self.current_load, CURRENT_LOAD_DECIMALS),
            status: self.status.round() as i64,
        };
        self.advance();
        sample
    }

    /// The RNG draw order here is part of the output format: changing it
    /// changes every data set (the golden test will say so).
    fn advance(&mut self) {
        for walk in &mut self.readings {
            walk.advance(&mut self.rng);
        }
        self.fuel_state = (self.fuel_state - uniform(&mut self.rng, 0.0, FUEL_BURN_MAX)).clamp(0.0, 1.0);
        if self.fuel_state <= 0.0 {
            // Refuelled.
            self.fuel_state = 1.0;
        }
        if unit(&mut self.rng) < LOAD_CHANGE_PROBABILITY {
            self.current_load = uniform(&mut self.rng, 0.0, MAX_LOAD);
        }
        self.status = (self.status + standard_normal(&mut self.rng)).clamp(0.0, MAX_STATUS);
    }

    fn tags(&self) -> Vec<(&'static str, String)> {
        TAG_KEYS.iter().copied().zip(self.tag_values.iter().cloned()).collect()
    }
}

impl Sample {
    fn push_rows(&self, truck: &Truck, timestamp_ns: i64, rows: &mut Vec<Row>) {
        let readings = READINGS_FIELDS
            .iter()
            .zip(READINGS_DECIMALS)
            .zip(self.readings)
            .map(|((name, dp), n)| (*name, Field::F64(n as f64 / pow10(dp).0)))
            .collect();
        rows.push(Row { measurement: "readings", tags: truck.tags(), timestamp_ns, fields: readings });
        rows.push(Row {
            measurement: "diagnostics",
            tags: truck.tags(),
            timestamp_ns,
            fields: vec![
                (DIAGNOSTICS_FIELDS[0], Field::F64(self.fuel_state as f64 / pow10(FUEL_STATE_DECIMALS).0)),
                (DIAGNOSTICS_FIELDS[1], Field::F64(self.current_load as f64 / pow10(CURRENT_LOAD_DECIMALS).0)),
                (DIAGNOSTICS_FIELDS[2], Field::I64(self.status)),
            ],
        });
    }

    /// Same bytes as `push_rows` followed by `Row::write_line`; `suffix` is
    /// `" <timestamp_ns>\n"`.
    fn write_lines(&self, truck: &Truck, suffix: &str, out: &mut String) {
        out.push_str(&truck.readings_prefix);
        for (i, ((name, dp), n)) in READINGS_FIELDS.iter().zip(READINGS_DECIMALS).zip(self.readings).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push('=');
            push_scaled(out, n, dp);
        }
        out.push_str(suffix);

        out.push_str(&truck.diagnostics_prefix);
        out.push_str("fuel_state=");
        push_scaled(out, self.fuel_state, FUEL_STATE_DECIMALS);
        out.push_str(",current_load=");
        push_scaled(out, self.current_load, CURRENT_LOAD_DECIMALS);
        out.push_str(",status=");
        push_i64(out, self.status);
        out.push('i');
        out.push_str(suffix);
    }
}

/// Counters of what the disorder pass did, for the rate tests.
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(test), allow(dead_code))]
struct DisorderStats {
    batches: u64,
    batches_dropped: u64,
    batches_held: u64,
    entries: u64,
    entries_missing: u64,
    entries_held: u64,
    fields_nulled: u64,
    tags_nulled: u64,
    rows_emptied: u64,
}

/// State of the disorder pass: rows waiting to fill a batch, and rows held
/// back with the batch index after which they are released.
struct DisorderState {
    rng: ChaCha8Rng,
    pending: Vec<Row>,
    held: Vec<(u64, Row)>,
    batch_index: u64,
    stats: DisorderStats,
}

impl DisorderState {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(DISORDER_STREAM);
        DisorderState { rng, pending: Vec::new(), held: Vec::new(), batch_index: 0, stats: DisorderStats::default() }
    }

    /// Queues `rows` and disorders every complete batch; a partial batch
    /// waits for the next epoch so batches always hold 10 entries.
    fn process(&mut self, rows: Vec<Row>) -> Vec<Row> {
        self.pending.extend(rows);
        let mut out = Vec::with_capacity(self.pending.len());
        let whole = self.pending.len() / BATCH_LEN * BATCH_LEN;
        let mut batch = Vec::with_capacity(BATCH_LEN);
        let rows: Vec<Row> = self.pending.drain(..whole).collect();
        for row in rows {
            batch.push(row);
            if batch.len() == BATCH_LEN {
                self.batch(std::mem::take(&mut batch), &mut out);
            }
        }
        out
    }

    fn batch(&mut self, batch: Vec<Row>, out: &mut Vec<Row>) {
        let index = self.batch_index;
        self.batch_index += 1;
        self.stats.batches += 1;
        self.stats.entries += batch.len() as u64;
        let fate = unit(&mut self.rng);
        if fate < P_BATCH_DROPPED {
            self.stats.batches_dropped += 1;
        } else if fate < P_BATCH_DROPPED + P_BATCH_HELD {
            self.stats.batches_held += 1;
            let due = index + 1 + below(&mut self.rng, MAX_HOLD_BATCHES as usize) as u64;
            for row in batch {
                if let Some(row) = self.damage(row) {
                    self.held.push((due, row));
                }
            }
        } else {
            for row in batch {
                let fate = unit(&mut self.rng);
                if fate < P_ENTRY_MISSING {
                    self.stats.entries_missing += 1;
                } else if fate < P_ENTRY_MISSING + P_ENTRY_HELD {
                    self.stats.entries_held += 1;
                    let due = index + 1 + below(&mut self.rng, MAX_HOLD_BATCHES as usize) as u64;
                    if let Some(row) = self.damage(row) {
                        self.held.push((due, row));
                    }
                } else if let Some(row) = self.damage(row) {
                    out.push(row);
                }
            }
        }
        // Release what was held for this batch, after its own rows, in the
        // order it was held.
        if self.held.iter().any(|(due, _)| *due <= index) {
            let (released, kept): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.held).into_iter().partition(|(due, _)| *due <= index);
            self.held = kept;
            out.extend(released.into_iter().map(|(_, row)| row));
        }
    }

    /// Nulls one field and/or one tag at the stated rates; `None` if no field
    /// is left, since such a row cannot be written.
    fn damage(&mut self, mut row: Row) -> Option<Row> {
        if unit(&mut self.rng) < P_FIELD_NULL && !row.fields.is_empty() {
            self.stats.fields_nulled += 1;
            let i = below(&mut self.rng, row.fields.len());
            row.fields.remove(i);
        }
        if unit(&mut self.rng) < P_TAG_NULL && !row.tags.is_empty() {
            self.stats.tags_nulled += 1;
            let i = below(&mut self.rng, row.tags.len());
            row.tags.remove(i);
        }
        if row.fields.is_empty() {
            self.stats.rows_emptied += 1;
            return None;
        }
        Some(row)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn rows_become_columnar_series_without_losing_a_value() {
        let mut g =
            TsbsGenerator::new(TsbsConfig { trucks: 20, seed: 3, disorder: Disorder::Tsbs, ..Default::default() });
        let rows: Vec<Row> = (0..30).flat_map(|_| g.next_epoch()).collect();
        let series = rows_to_series(&rows);
        let values: usize = rows.iter().map(|r| r.fields.len()).sum();
        let mut seen = 0;
        for s in &series {
            for c in &s.fields {
                let n = match &c.values {
                    Some(hotlake_proto::v1::field_column::Values::F64(v)) => v.values.len(),
                    Some(hotlake_proto::v1::field_column::Values::I64(v)) => v.values.len(),
                    other => panic!("unexpected column {other:?}"),
                };
                assert_eq!(n + c.absent_rows.len(), s.timestamps_ns.len(), "column {} of {}", c.name, s.measurement);
                assert!(c.absent_rows.windows(2).all(|w| w[0] < w[1]));
                seen += n;
            }
        }
        assert_eq!(seen, values);
        assert_eq!(series.iter().map(|s| s.timestamps_ns.len()).sum::<usize>(), rows.len());
    }

    use super::*;
    use std::collections::HashMap;

    fn config(trucks: usize, seed: u64, disorder: Disorder) -> TsbsConfig {
        TsbsConfig { trucks, seed, disorder, ..TsbsConfig::default() }
    }

    fn lines_of(config: TsbsConfig, epochs: usize) -> String {
        let mut g = TsbsGenerator::new(config);
        let mut out = String::new();
        for _ in 0..epochs {
            for row in g.next_epoch() {
                row.write_line(&mut out);
            }
        }
        out
    }

    /// Parsed line: measurement, tags, fields (raw text), timestamp.
    struct Line<'a> {
        measurement: &'a str,
        tags: Vec<(&'a str, &'a str)>,
        fields: Vec<(&'a str, &'a str)>,
        timestamp: i64,
    }

    fn parse<'a>(line: &'a str) -> Line<'a> {
        let mut parts = line.split(' ');
        let (series, fields, ts) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        assert!(parts.next().is_none(), "extra section in {line:?}");
        let mut series = series.split(',');
        let measurement = series.next().unwrap();
        let kv = |s: &'a str| s.split_once('=').unwrap();
        Line {
            measurement,
            tags: series.map(kv).collect(),
            fields: fields.split(',').map(kv).collect(),
            timestamp: ts.parse().unwrap(),
        }
    }

    /// Same seed gives byte-identical output; a different seed differs.
    #[test]
    fn seed_determines_output() {
        for disorder in [Disorder::None, Disorder::Tsbs] {
            let a = lines_of(config(20, 7, disorder), 50);
            let b = lines_of(config(20, 7, disorder), 50);
            let c = lines_of(config(20, 8, disorder), 50);
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
    }

    /// FNV-1a, for pinning large outputs in one number.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
    }

    /// Output for the default config is pinned (first lines verbatim, 100
    /// epochs by hash), so a change to draw order or formatting is caught
    /// rather than silently changing every data set.
    #[test]
    fn golden_output() {
        let mut g = TsbsGenerator::new(TsbsConfig::default());
        let mut out = String::new();
        for _ in 0..2 {
            for row in g.next_epoch().iter().take(2) {
                row.write_line(&mut out);
            }
        }
        assert_eq!(out, GOLDEN_TRUCK_0);
        let none = fnv1a(lines_of(TsbsConfig::default(), 100).as_bytes());
        let tsbs = fnv1a(lines_of(config(100, 1, Disorder::Tsbs), 100).as_bytes());
        assert_eq!((none, tsbs), GOLDEN_HASHES, "{none:#x} {tsbs:#x}");
    }

    const GOLDEN_TRUCK_0: &str = concat!(
        "readings,name=truck_0,fleet=West,driver=Derek,model=G-2000,device_version=v1.0,load_capacity=5000,fuel_capacity=300,nominal_fuel_consumption=19 latitude=25.53215,longitude=127.90984,elevation=230,velocity=0,heading=54,grade=0,fuel_consumption=25.0 1451606400000000000\n",
        "diagnostics,name=truck_0,fleet=West,driver=Derek,model=G-2000,device_version=v1.0,load_capacity=5000,fuel_capacity=300,nominal_fuel_consumption=19 fuel_state=1.0,current_load=4373,status=0i 1451606400000000000\n",
        "readings,name=truck_0,fleet=West,driver=Derek,model=G-2000,device_version=v1.0,load_capacity=5000,fuel_capacity=300,nominal_fuel_consumption=19 latitude=25.53421,longitude=127.90967,elevation=232,velocity=0,heading=52,grade=0,fuel_consumption=22.8 1451606410000000000\n",
        "diagnostics,name=truck_0,fleet=West,driver=Derek,model=G-2000,device_version=v1.0,load_capacity=5000,fuel_capacity=300,nominal_fuel_consumption=19 fuel_state=0.9,current_load=4373,status=0i 1451606410000000000\n",
    );
    const GOLDEN_HASHES: (u64, u64) = (0xde9b_05cd_526b_a04c, 0x38cb_8dce_0a82_8053);

    /// A truck's data does not depend on the fleet size.
    #[test]
    fn truck_stream_independent_of_fleet_size() {
        let small = lines_of(config(1, 3, Disorder::None), 20);
        let large = lines_of(config(5, 3, Disorder::None), 20);
        let truck0: Vec<&str> = large.lines().filter(|l| l.contains(",name=truck_0,")).collect();
        assert_eq!(small.lines().collect::<Vec<_>>(), truck0);
    }

    /// All values stay within their clamps over 100k ticks.
    #[test]
    fn values_stay_within_clamps() {
        let mut g = TsbsGenerator::new(config(1, 11, Disorder::None));
        let mut status_seen = [false; 6];
        let mut refuelled = false;
        let mut last_fuel = 1.0;
        for _ in 0..100_000 {
            let rows = g.next_epoch();
            for (i, (_, v)) in rows[0].fields.iter().enumerate() {
                let (_, min, max) = READINGS_WALKS[i];
                let Field::F64(v) = v else { panic!("float field") };
                assert!((min..=max).contains(v), "{} = {v}", READINGS_FIELDS[i]);
            }
            let f = &rows[1].fields;
            let (Field::F64(fuel), Field::F64(load), Field::I64(status)) = (&f[0].1, &f[1].1, &f[2].1) else {
                panic!("diagnostics types")
            };
            assert!((0.0..=1.0).contains(fuel), "fuel_state {fuel}");
            assert!((0.0..=MAX_LOAD).contains(load), "current_load {load}");
            assert!((0..=5).contains(status), "status {status}");
            status_seen[*status as usize] = true;
            refuelled |= *fuel > last_fuel;
            last_fuel = *fuel;
        }
        assert!(refuelled, "fuel never refilled in 100k ticks");
        assert!(status_seen.iter().all(|s| *s), "status range {status_seen:?}");
    }

    /// Printed floats carry exactly their field's decimals; ints end in `i`.
    #[test]
    fn decimals_as_specified() {
        let out = lines_of(config(10, 5, Disorder::None), 200);
        for line in out.lines() {
            for (name, value) in parse(line).fields {
                if name == "status" {
                    assert!(value.ends_with('i'), "{line}");
                    value.trim_end_matches('i').parse::<i64>().unwrap();
                    continue;
                }
                let dp = field_decimals(name).unwrap() as usize;
                let v: f64 = value.parse().unwrap();
                assert!(v.is_finite());
                let digits = value.split_once('.').map_or(0, |(_, frac)| frac.len());
                assert_eq!(digits, dp, "{name}={value}");
                if dp == 0 {
                    assert!(!value.contains('.'), "{name}={value}");
                }
            }
        }
    }

    /// The fixed-decimals printer agrees with `{:.dp$}` on truncated values.
    #[test]
    fn fixed_printer_matches_std_format() {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        for dp in 0..=5 {
            for _ in 0..20_000 {
                let raw = uniform(&mut rng, -400.0, 6000.0);
                let v = truncate_scaled(raw, dp) as f64 / pow10(dp).0;
                let mut ours = String::new();
                push_fixed(&mut ours, v, dp);
                // `n / 10^dp` with integer `n` is never -0.0, so `{:.dp$}` has
                // no sign quirk to work around.
                assert_eq!(ours, format!("{v:.prec$}", prec = dp as usize));
            }
        }
        let mut s = String::new();
        push_fixed(&mut s, 1.234_567_8, 2);
        assert_eq!(s, "1.23");
    }

    /// `model` fixes load, fuel capacity and nominal consumption.
    #[test]
    fn model_fixes_capacity_tags() {
        let g = TsbsGenerator::new(config(300, 2, Disorder::None));
        let mut models_seen = 0;
        for (model, load, fuel, consumption) in MODELS {
            let trucks: Vec<_> = g.trucks.iter().filter(|t| t.tag_values[3] == model).collect();
            models_seen += usize::from(!trucks.is_empty());
            for t in trucks {
                assert_eq!(t.tag_values[5..], [load, fuel, consumption]);
            }
        }
        assert_eq!(models_seen, MODELS.len());
    }

    /// Without disorder every line has the 8 tags and 7 or 3 fields, in order.
    #[test]
    fn lines_have_all_tags_and_fields() {
        let out = lines_of(config(50, 4, Disorder::None), 20);
        assert_eq!(out.lines().count(), 50 * 2 * 20);
        for line in out.lines() {
            let line = parse(line);
            let keys: Vec<_> = line.tags.iter().map(|(k, _)| *k).collect();
            assert_eq!(keys, TAG_KEYS);
            assert!(FLEETS.contains(&line.tags[1].1));
            assert!(DRIVERS.contains(&line.tags[2].1));
            assert!(DEVICE_VERSIONS.contains(&line.tags[4].1));
            let names: Vec<_> = line.fields.iter().map(|(k, _)| *k).collect();
            match line.measurement {
                "readings" => assert_eq!(names, READINGS_FIELDS),
                "diagnostics" => assert_eq!(names, DIAGNOSTICS_FIELDS),
                other => panic!("measurement {other}"),
            }
        }
    }

    /// Timestamps are multiples of the interval from start, one per epoch per
    /// truck and measurement, with and without disorder.
    #[test]
    fn timestamps_are_interval_multiples() {
        for disorder in [Disorder::None, Disorder::Tsbs] {
            let cfg = TsbsConfig { trucks: 7, start_s: 1_000, interval_s: 30, disorder, seed: 9 };
            let out = lines_of(cfg.clone(), 300);
            let mut seen: HashMap<(String, &str), Vec<i64>> = HashMap::new();
            for line in out.lines() {
                let l = parse(line);
                let offset = l.timestamp - cfg.start_s * NANOS_PER_SECOND;
                assert!(offset >= 0 && offset % (cfg.interval_s * NANOS_PER_SECOND) == 0);
                if let Some((_, name)) = l.tags.iter().find(|(k, _)| *k == "name") {
                    seen.entry((name.to_string(), l.measurement))
                        .or_default()
                        .push(offset / (cfg.interval_s * NANOS_PER_SECOND));
                }
            }
            assert_eq!(seen.len(), 14);
            for epochs in seen.values_mut() {
                epochs.sort_unstable();
                let n = epochs.len();
                epochs.dedup();
                assert_eq!(epochs.len(), n, "an epoch repeated");
                if disorder == Disorder::None {
                    assert_eq!(*epochs, (0..300).collect::<Vec<i64>>());
                }
            }
        }
    }

    /// `fill_lines`' fast path writes exactly what `next_epoch` + `write_line`
    /// write, in whole epochs, and counts rows and fields.
    #[test]
    fn fill_lines_matches_rows() {
        for disorder in [Disorder::None, Disorder::Tsbs] {
            let mut g = TsbsGenerator::new(config(13, 21, disorder));
            let mut fast = String::new();
            let (rows, fields) = g.fill_lines(1_000, &mut fast);
            assert!(rows >= 1_000);
            assert_eq!(fast.lines().count(), rows);
            let counted: usize = fast.lines().map(|l| parse(l).fields.len()).sum();
            assert_eq!(counted, fields);

            let mut g = TsbsGenerator::new(config(13, 21, disorder));
            let mut slow = String::new();
            while slow.lines().count() < rows {
                for row in g.next_epoch() {
                    row.write_line(&mut slow);
                }
            }
            assert_eq!(fast, slow);
            if disorder == Disorder::None {
                assert_eq!(rows, 26 * 1_000usize.div_ceil(26));
                assert_eq!(fields, rows / 2 * 10);
            }
        }
    }

    /// Disorder drops, holds back and thins at roughly the stated rates and
    /// never emits a row without fields.
    #[test]
    fn disorder_rates_roughly_as_stated() {
        // One truck: a batch spans 5 epochs, so anything held back lands
        // after later timestamps of the same series and is visibly late.
        let mut g = TsbsGenerator::new(config(1, 31, Disorder::Tsbs));
        let epochs = 100_000;
        let mut emitted = 0usize;
        let (mut late, mut short_fields, mut short_tags) = (0usize, 0usize, 0usize);
        let mut newest: HashMap<&str, i64> = HashMap::new();
        while g.epoch < epochs {
            for row in g.next_epoch() {
                emitted += 1;
                assert!(!row.fields.is_empty());
                let full = match row.measurement {
                    "readings" => READINGS_FIELDS.len(),
                    _ => DIAGNOSTICS_FIELDS.len(),
                };
                assert!(row.fields.len() + 1 >= full);
                assert!(row.tags.len() + 1 >= TAG_KEYS.len());
                short_fields += usize::from(row.fields.len() < full);
                short_tags += usize::from(row.tags.len() < TAG_KEYS.len());
                let newest = newest.entry(row.measurement).or_insert(i64::MIN);
                late += usize::from(row.timestamp_ns < *newest);
                *newest = (*newest).max(row.timestamp_ns);
            }
        }
        let s = g.disorder.as_ref().unwrap().stats.clone();
        let within = |what: &str, got: f64, expected: f64| {
            assert!(
                got >= expected / 2.0 && got <= expected * 2.0,
                "{what}: {got:.4} vs expected {expected:.4} ({s:?})"
            );
        };
        let batches = s.batches as f64;
        let entries = s.entries as f64;
        let entry_batches = 1.0 - P_BATCH_DROPPED - P_BATCH_HELD;
        within("batches dropped", s.batches_dropped as f64 / batches, P_BATCH_DROPPED);
        within("batches held", s.batches_held as f64 / batches, P_BATCH_HELD);
        within("entries missing", s.entries_missing as f64 / entries, P_ENTRY_MISSING * entry_batches);
        within("entries held", s.entries_held as f64 / entries, P_ENTRY_HELD * entry_batches);
        assert_eq!(s.rows_emptied, 0, "no measurement has a single field");

        // What a consumer sees.
        let generated = 2.0 * g.epoch as f64;
        let lost = 1.0 - emitted as f64 / generated;
        within("rows lost", lost, P_BATCH_DROPPED + entry_batches * P_ENTRY_MISSING);
        let held = P_BATCH_HELD + entry_batches * P_ENTRY_HELD;
        within("rows late", late as f64 / emitted as f64, held / (1.0 - lost));
        within("field nulled", short_fields as f64 / emitted as f64, P_FIELD_NULL);
        within("tag nulled", short_tags as f64 / emitted as f64, P_TAG_NULL);
    }

    /// A fleet whose only measurement loses its only field never emits it.
    #[test]
    fn emptied_rows_are_dropped() {
        let mut d = DisorderState::new(5);
        let mut out = Vec::new();
        for i in 0..2_000 {
            let batch = (0..BATCH_LEN)
                .map(|j| Row {
                    measurement: "m",
                    tags: vec![("name", format!("t{j}"))],
                    timestamp_ns: i,
                    fields: vec![("only", Field::I64(1))],
                })
                .collect();
            d.batch(batch, &mut out);
        }
        assert!(d.stats.rows_emptied > 0);
        assert!(out.iter().all(|r| !r.fields.is_empty()));
    }

    /// Zero trucks yield nothing instead of looping forever.
    #[test]
    fn zero_trucks_is_empty() {
        for disorder in [Disorder::None, Disorder::Tsbs] {
            let mut g = TsbsGenerator::new(config(0, 1, disorder));
            assert!(g.next_epoch().is_empty());
            let mut out = String::new();
            assert_eq!(g.fill_lines(10, &mut out), (0, 0));
            assert!(out.is_empty());
        }
    }

    /// The portable logarithm is within a few ulps of `f64::ln`.
    #[test]
    fn portable_ln_is_accurate() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100_000 {
            let x = unit(&mut rng) + f64::MIN_POSITIVE;
            let (ours, std) = (ln_portable(x), x.ln());
            assert!((ours - std).abs() <= 4.0 * f64::EPSILON * std.abs().max(1.0), "{x}");
        }
    }

    /// Normal deviates have mean ≈ 0 and variance ≈ 1.
    #[test]
    fn normal_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    /// Escaping only kicks in for characters line protocol reserves.
    #[test]
    fn write_line_escapes_reserved_characters() {
        let row = Row {
            measurement: "m",
            tags: vec![("k", "a b,c=d".to_owned())],
            timestamp_ns: 5,
            fields: vec![("x", Field::F64(1.5)), ("n", Field::I64(-3))],
        };
        let mut out = String::new();
        row.write_line(&mut out);
        assert_eq!(out, "m,k=a\\ b\\,c\\=d x=1.5,n=-3i 5\n");
    }
}
