//! Compares Pco and Gorilla on TSBS-IoT-shaped data: bytes per value per field, encode/decode
//! speed, the small-block crossover, and the timestamp codec.
//!
//! Run: `cargo bench -p hotlake-node --bench codec`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hotlake_engine::codec::{
    decode_block, decode_timestamps, encode_block, encode_timestamps, gorilla_decode_f64, gorilla_decode_i64,
    gorilla_encode_f64, gorilla_encode_i64, pco_decode_f64, pco_decode_i64, pco_encode_f64, pco_encode_i64, Block,
    Column, ColumnValues, NumericCodec, DEFAULT_NUMERIC_CODEC, PCO_MIN_VALUES,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TRUCKS: usize = 50;
const ROWS: usize = 2000;
const INTERVAL_NS: i64 = 10_000_000_000;
const START_NS: i64 = 1_451_606_400_000_000_000; // 2016-01-01T00:00:00Z, TSBS's default start.
const SEED: u64 = 0x7_5B5;

/// A clamped uniform random walk whose output is truncated to `dp` decimal places, as TSBS's
/// float-precision wrapper does (the walk itself keeps full precision).
struct Walk {
    v: f64,
    step: f64,
    lo: f64,
    hi: f64,
    scale: f64,
}

impl Walk {
    fn new(v: f64, step: f64, lo: f64, hi: f64, dp: i32) -> Self {
        Walk { v, step, lo, hi, scale: 10f64.powi(dp) }
    }
    fn next(&mut self, rng: &mut StdRng) -> f64 {
        self.v = (self.v + rng.gen_range(-self.step..=self.step)).clamp(self.lo, self.hi);
        (self.v * self.scale).trunc() / self.scale
    }
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box-Muller; rand 0.8 without rand_distr.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub const FLOAT_FIELDS: [&str; 9] = [
    "latitude",
    "longitude",
    "elevation",
    "velocity",
    "heading",
    "grade",
    "fuel_consumption",
    "fuel_state",
    "current_load",
];

/// One truck's series: timestamps, nine float columns and the integer status column.
pub struct Truck {
    pub ts: Vec<i64>,
    pub floats: Vec<Vec<f64>>,
    pub status: Vec<i64>,
}

pub fn gen_truck(rng: &mut StdRng) -> Truck {
    let mut walks = [
        Walk::new(rng.gen_range(0.0..90.0), 0.005, -90.0, 90.0, 5),
        Walk::new(rng.gen_range(0.0..180.0), 0.005, -180.0, 180.0, 5),
        Walk::new(rng.gen_range(0.0..500.0), 10.0, 0.0, 5000.0, 0),
        Walk::new(0.0, 10.0, 0.0, 100.0, 0),
        Walk::new(rng.gen_range(0.0..360.0), 5.0, 0.0, 360.0, 0),
        Walk::new(0.0, 5.0, 0.0, 100.0, 0),
        Walk::new(25.0, 5.0, 0.0, 50.0, 1),
    ];
    let mut floats = vec![Vec::with_capacity(ROWS); FLOAT_FIELDS.len()];
    let mut fuel_state = 1.0f64;
    let mut load = rng.gen_range(0.0..5000.0f64);
    let mut status = 0i64;
    let mut status_col = Vec::with_capacity(ROWS);
    for _ in 0..ROWS {
        for (col, walk) in floats.iter_mut().zip(walks.iter_mut()) {
            col.push(walk.next(rng));
        }
        fuel_state -= rng.gen_range(0.0..0.001);
        if fuel_state <= 0.0 {
            fuel_state = 1.0;
        }
        floats[7].push((fuel_state.clamp(0.0, 1.0) * 10.0).trunc() / 10.0);
        if rng.gen_bool(0.05) {
            load = rng.gen_range(0.0..5000.0);
        }
        floats[8].push(load.trunc());
        status = (status + normal(rng).round() as i64).clamp(0, 5);
        status_col.push(status);
    }
    let ts = (0..ROWS as i64).map(|i| START_NS + i * INTERVAL_NS).collect();
    Truck { ts, floats, status: status_col }
}

/// Time to run `f` once on each of `n` blocks: each block is timed separately, repeatedly for
/// at least `min`, and its fastest run counts. On a shared machine preemption only ever adds
/// time, so the fastest run of a short call is the cleanest estimate (warm cache, one thread).
fn time_blocks(n: usize, min: Duration, mut f: impl FnMut(usize)) -> Duration {
    let mut best = vec![Duration::MAX; n];
    let start = Instant::now();
    let mut passes = 0;
    while passes < 3 || start.elapsed() < min {
        for (i, b) in best.iter_mut().enumerate() {
            let t = Instant::now();
            f(i);
            *b = (*b).min(t.elapsed());
        }
        passes += 1;
    }
    best.iter().sum()
}

#[derive(Default, Clone)]
struct Stat {
    /// Encoded size of each block, in input order.
    sizes: Vec<usize>,
    bytes: usize,
    values: usize,
    enc: Duration,
    dec: Duration,
}

impl Stat {
    fn bpv(&self) -> f64 {
        self.bytes as f64 / self.values as f64
    }
    fn enc_mvs(&self) -> f64 {
        self.values as f64 / self.enc.as_secs_f64() / 1e6
    }
    fn dec_mvs(&self) -> f64 {
        self.values as f64 / self.dec.as_secs_f64() / 1e6
    }
}

fn measure_f64(blocks: &[&[f64]], codec: NumericCodec, timed: bool) -> Stat {
    let encode = |v: &[f64], out: &mut Vec<u8>| match codec {
        NumericCodec::Pco => pco_encode_f64(v, out),
        NumericCodec::Gorilla => gorilla_encode_f64(v, out),
    };
    let encoded: Vec<Vec<u8>> = blocks
        .iter()
        .map(|b| {
            let mut out = Vec::new();
            encode(b, &mut out);
            out
        })
        .collect();
    for (b, e) in blocks.iter().zip(&encoded) {
        let d = match codec {
            NumericCodec::Pco => pco_decode_f64(e).unwrap(),
            NumericCodec::Gorilla => gorilla_decode_f64(e, b.len()).unwrap(),
        };
        assert!(d.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    let mut s = Stat {
        sizes: encoded.iter().map(Vec::len).collect(),
        bytes: encoded.iter().map(Vec::len).sum(),
        values: blocks.iter().map(|b| b.len()).sum(),
        ..Default::default()
    };
    if timed {
        let min = Duration::from_millis(300);
        let mut out = Vec::with_capacity(16 << 10);
        s.enc = time_blocks(blocks.len(), min, |i| {
            out.clear();
            encode(blocks[i], &mut out);
            black_box(&out);
        });
        s.dec = time_blocks(blocks.len(), min, |i| {
            let d = match codec {
                NumericCodec::Pco => pco_decode_f64(&encoded[i]).unwrap(),
                NumericCodec::Gorilla => gorilla_decode_f64(&encoded[i], blocks[i].len()).unwrap(),
            };
            black_box(d);
        });
    }
    s
}

fn measure_i64(blocks: &[&[i64]], codec: NumericCodec, timed: bool) -> Stat {
    let encode = |v: &[i64], out: &mut Vec<u8>| match codec {
        NumericCodec::Pco => pco_encode_i64(v, out),
        NumericCodec::Gorilla => gorilla_encode_i64(v, out),
    };
    let decode = |e: &[u8], n: usize| match codec {
        NumericCodec::Pco => pco_decode_i64(e).unwrap(),
        NumericCodec::Gorilla => gorilla_decode_i64(e, n).unwrap(),
    };
    let encoded: Vec<Vec<u8>> = blocks
        .iter()
        .map(|b| {
            let mut out = Vec::new();
            encode(b, &mut out);
            out
        })
        .collect();
    for (b, e) in blocks.iter().zip(&encoded) {
        assert_eq!(&decode(e, b.len()), b);
    }
    let mut s = Stat {
        sizes: encoded.iter().map(Vec::len).collect(),
        bytes: encoded.iter().map(Vec::len).sum(),
        values: blocks.iter().map(|b| b.len()).sum(),
        ..Default::default()
    };
    if timed {
        let min = Duration::from_millis(300);
        let mut out = Vec::with_capacity(16 << 10);
        s.enc = time_blocks(blocks.len(), min, |i| {
            out.clear();
            encode(blocks[i], &mut out);
            black_box(&out);
        });
        s.dec = time_blocks(blocks.len(), min, |i| {
            black_box(decode(&encoded[i], blocks[i].len()));
        });
    }
    s
}

fn add(a: &Stat, b: &Stat) -> Stat {
    Stat {
        sizes: Vec::new(),
        bytes: a.bytes + b.bytes,
        values: a.values + b.values,
        enc: a.enc + b.enc,
        dec: a.dec + b.dec,
    }
}

/// Bytes `encode_block(.., Pco)` spends on these values: Gorilla below `PCO_MIN_VALUES`, else
/// the smaller of the two (mirrors `encode_numeric`).
fn hybrid_bytes(blocks: &[usize], s: &[Stat; 2]) -> usize {
    blocks
        .iter()
        .zip(s[0].sizes.iter().zip(&s[1].sizes))
        .map(|(&n, (&p, &g))| if n < PCO_MIN_VALUES { g } else { p.min(g) })
        .sum()
}

fn chunks<T>(trucks: &[Truck], size: usize, col: impl Fn(&Truck) -> &[T]) -> Vec<&[T]> {
    trucks.iter().flat_map(|t| col(t).chunks(size)).collect()
}

fn field_table(trucks: &[Truck], size: usize) {
    println!("\n## Blocks of {size} rows ({TRUCKS} trucks x {ROWS} rows)\n");
    println!("| field | pco B/value | gorilla B/value | encode_block(Pco) B/value | pco enc Mv/s | pco dec Mv/s | gorilla enc Mv/s | gorilla dec Mv/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut tot = [Stat::default(), Stat::default()];
    let mut tot_hybrid = 0;
    let codecs = [NumericCodec::Pco, NumericCodec::Gorilla];
    let row = |name: &str, s: &[Stat; 2], hybrid: usize| {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s[0].bpv(),
            s[1].bpv(),
            hybrid as f64 / s[0].values as f64,
            s[0].enc_mvs(),
            s[0].dec_mvs(),
            s[1].enc_mvs(),
            s[1].dec_mvs()
        );
    };
    for (i, name) in FLOAT_FIELDS.iter().enumerate() {
        let blocks = chunks(trucks, size, |t| t.floats[i].as_slice());
        let s = codecs.map(|c| measure_f64(&blocks, c, true));
        let lens: Vec<usize> = blocks.iter().map(|b| b.len()).collect();
        let h = hybrid_bytes(&lens, &s);
        row(name, &s, h);
        tot = [add(&tot[0], &s[0]), add(&tot[1], &s[1])];
        tot_hybrid += h;
    }
    let blocks = chunks(trucks, size, |t| t.status.as_slice());
    let s = codecs.map(|c| measure_i64(&blocks, c, true));
    let lens: Vec<usize> = blocks.iter().map(|b| b.len()).collect();
    let h = hybrid_bytes(&lens, &s);
    row("status (i64)", &s, h);
    tot = [add(&tot[0], &s[0]), add(&tot[1], &s[1])];
    tot_hybrid += h;
    row("**all 10 fields**", &tot, tot_hybrid);

    // Whole blocks through encode_block/decode_block, timestamps and headers included.
    let blocks: Vec<Block> = trucks
        .iter()
        .flat_map(|t| {
            (0..ROWS).step_by(size).map(move |start| {
                let end = (start + size).min(ROWS);
                let mut columns: Vec<Column> = FLOAT_FIELDS
                    .iter()
                    .enumerate()
                    .map(|(i, name)| Column {
                        name: name.to_string(),
                        present: None,
                        values: ColumnValues::F64(t.floats[i][start..end].to_vec()),
                    })
                    .collect();
                columns.push(Column {
                    name: "status".into(),
                    present: None,
                    values: ColumnValues::I64(t.status[start..end].to_vec()),
                });
                Block { timestamps: t.ts[start..end].to_vec(), columns }
            })
        })
        .collect();
    let values: usize = blocks.iter().map(|b| b.timestamps.len() * 10).sum();
    println!("\n| whole block | B/row | B/field value | encode Mv/s | decode Mv/s |");
    println!("|---|---:|---:|---:|---:|");
    for codec in codecs {
        let encoded: Vec<Vec<u8>> = blocks.iter().map(|b| encode_block(b, codec)).collect();
        for (b, e) in blocks.iter().zip(&encoded) {
            assert_eq!(&decode_block(e).unwrap(), b);
        }
        let bytes: usize = encoded.iter().map(Vec::len).sum();
        let min = Duration::from_millis(500);
        let enc = time_blocks(blocks.len(), min, |i| {
            black_box(encode_block(&blocks[i], codec));
        });
        let dec = time_blocks(blocks.len(), min, |i| {
            black_box(decode_block(&encoded[i]).unwrap());
        });
        println!(
            "| encode_block({codec:?}) | {:.2} | {:.3} | {:.0} | {:.0} |",
            bytes as f64 / (values / 10) as f64,
            bytes as f64 / values as f64,
            values as f64 / enc.as_secs_f64() / 1e6,
            values as f64 / dec.as_secs_f64() / 1e6,
        );
    }
}

fn crossover(trucks: &[Truck]) {
    println!("\n## Small blocks: bytes/value, pco vs gorilla, per block size\n");
    let sizes = [8, 12, 16, 20, 24, 28, 32, 36, 40, 48, 64, 100, 200];
    print!("| field |");
    for s in sizes {
        print!(" {s} |");
    }
    println!();
    print!("|---|");
    for _ in sizes {
        print!("---|");
    }
    println!();
    let mut totals = vec![[0usize; 2]; sizes.len()];
    let mut values = vec![0usize; sizes.len()];
    let codecs = [NumericCodec::Pco, NumericCodec::Gorilla];
    for field in 0..=FLOAT_FIELDS.len() {
        let name = FLOAT_FIELDS.get(field).copied().unwrap_or("status (i64)");
        print!("| {name} |");
        for (k, &size) in sizes.iter().enumerate() {
            let s = if field < FLOAT_FIELDS.len() {
                let blocks = chunks(trucks, size, |t| t.floats[field].as_slice());
                codecs.map(|c| measure_f64(&blocks, c, false))
            } else {
                let blocks = chunks(trucks, size, |t| t.status.as_slice());
                codecs.map(|c| measure_i64(&blocks, c, false))
            };
            totals[k][0] += s[0].bytes;
            totals[k][1] += s[1].bytes;
            values[k] += s[0].values;
            print!(" {:.2} / {:.2} |", s[0].bpv(), s[1].bpv());
        }
        println!();
    }
    print!("| **all** |");
    for k in 0..sizes.len() {
        let v = values[k] as f64;
        print!(" {:.2} / {:.2} |", totals[k][0] as f64 / v, totals[k][1] as f64 / v);
    }
    println!("\n\n(cells: pco / gorilla bytes per value)");
    let crossover = sizes.iter().zip(&totals).find(|(_, t)| t[0] <= t[1]).map(|(s, _)| *s);
    println!(
        "all-field crossover: pco first no larger than gorilla at {crossover:?} values per column \
         (PCO_MIN_VALUES = {PCO_MIN_VALUES})"
    );
}

/// Delta-of-delta + zigzag in the same 64-value groups, as the alternative the chosen
/// delta + frame-of-reference timestamp codec was measured against.
fn dod_groups_len(ts: &[i64]) -> usize {
    if ts.len() < 2 {
        return ts.len() * 9;
    }
    let mut bytes = 10 + 10;
    let dods: Vec<u64> = ts
        .windows(3)
        .map(|w| {
            let d = w[2].wrapping_sub(w[1]).wrapping_sub(w[1].wrapping_sub(w[0]));
            ((d << 1) ^ (d >> 63)) as u64
        })
        .collect();
    for g in dods.chunks(64) {
        let width = 64 - g.iter().fold(0, |a, &b| a | b).leading_zeros() as usize;
        bytes += 1 + (g.len() * width).div_ceil(8);
    }
    bytes
}

fn timestamps(rng: &mut StdRng) {
    println!("\n## Timestamps, blocks of 1000 rows at 10 s\n");
    println!("| jitter | delta+FOR (chosen) B/row | dod+zigzag groups B/row | pco i64 B/row | decode Mv/s |");
    println!("|---|---:|---:|---:|---:|");
    for jitter_ms in [0i64, 1, 100] {
        let blocks: Vec<Vec<i64>> = (0..100)
            .map(|b| {
                (0..1000i64)
                    .map(|i| {
                        let j = if jitter_ms == 0 {
                            0
                        } else {
                            rng.gen_range(-jitter_ms * 1_000_000..=jitter_ms * 1_000_000)
                        };
                        START_NS + (b * 1000 + i) * INTERVAL_NS + j
                    })
                    .collect()
            })
            .collect();
        let encoded: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| {
                let mut out = Vec::new();
                encode_timestamps(b, &mut out);
                out
            })
            .collect();
        let ours: usize = encoded.iter().map(Vec::len).sum();
        let dod: usize = blocks.iter().map(|b| dod_groups_len(b)).sum();
        let pco: usize = blocks
            .iter()
            .map(|b| {
                let mut out = Vec::new();
                pco_encode_i64(b, &mut out);
                out.len()
            })
            .sum();
        let dec = time_blocks(encoded.len(), Duration::from_millis(300), |i| {
            black_box(decode_timestamps(&encoded[i], 1000).unwrap());
        });
        let rows = 100_000.0;
        println!(
            "| ±{jitter_ms} ms | {:.3} | {:.3} | {:.3} | {:.0} |",
            ours as f64 / rows,
            dod as f64 / rows,
            pco as f64 / rows,
            rows / dec.as_secs_f64() / 1e6
        );
    }
}

fn main() {
    println!("DEFAULT_NUMERIC_CODEC = {DEFAULT_NUMERIC_CODEC:?}, PCO_MIN_VALUES = {PCO_MIN_VALUES}");
    println!("speeds: Mv/s = million values per second, one thread, each block's fastest of repeated runs");
    let mut rng = StdRng::seed_from_u64(SEED);
    let trucks: Vec<Truck> = (0..TRUCKS).map(|_| gen_truck(&mut rng)).collect();
    field_table(&trucks, 1000);
    field_table(&trucks, 100);
    crossover(&trucks);
    timestamps(&mut rng);
}
