//! Compressed column codecs of a flushed block.
//!
//! A block holds one series' points for one time span: a strictly ascending, de-duplicated
//! timestamp column and one column per field, where a field may be absent in some rows.
//! [`encode_block`] runs at flush; [`decode_block_columns`] is the query path and skips the
//! columns it was not asked for using their stored lengths; [`block_summary`] reads the time
//! range from the fixed header.
//!
//! # Layout
//!
//! Fixed-width integers are little-endian; `varint` is unsigned LEB128 (7 bits per byte, low
//! group first). Bit streams are packed least significant bit first.
//!
//! ```text
//! offset  size    field
//! 0       1       magic 0xB7
//! 1       1       format version (1)
//! 2       4       row count, u32
//! 6       8       first timestamp, i64 (0 when there are no rows)
//! 14      8       last timestamp, i64 (0 when there are no rows)
//! 22      varint  timestamp section length T
//!         T       timestamps                           (encode_timestamps)
//!         varint  column count C
//!         C x  +- varint  name length N, then N bytes of UTF-8 name
//!              |  u8      type:     0 f64, 1 i64, 2 u64, 3 bool, 4 string
//!              |  u8      codec:    0 Pco, 1 Gorilla (numeric); 0 plain (bool, string)
//!              |  u8      presence: 0 every row present, 1 bitmap leads the payload
//!              |  varint  payload length P     (what decode_block_columns skips by)
//!              +- P       payload: [ceil(rows/8)-byte presence bitmap] values of present rows
//! len-8   8       xxh3-64 of every byte before it, u64
//! ```
//!
//! Values by type and codec:
//!
//! | type      | Pco (tag 0)                 | Gorilla (tag 1)                               |
//! |-----------|-----------------------------|-----------------------------------------------|
//! | f64       | Pco standalone stream       | XOR coding ([`gorilla_encode_f64`])           |
//! | i64, u64  | Pco standalone stream       | delta + frame of reference, as timestamps     |
//! | bool      | bit-packed, 8 per byte      |                                               |
//! | string    | per value: varint length, UTF-8 bytes (no general compression)              |
//!
//! A presence bitmap has a set bit for each row that has a value and is omitted when every row
//! does, so a column given as `Some(all true)` decodes as `None`. Padding bits are zero.
//!
//! Decoding verifies the checksum first, then every tag, length and count, and bounds each
//! allocation by the bytes that back it, so arbitrary input (even input carrying a valid
//! checksum) yields a [`CodecError`], never a panic or a runaway allocation.
//!
//! # Choosing the numeric codec
//!
//! Measured on TSBS-IoT-shaped data (`examples/compare.rs`: 50 trucks x 2000 rows at 10 s,
//! clamped random walks truncated to the field's decimal places; status is an i64 walk in 0..=5).
//! Bytes per value of the column payload; speeds are million values per second on one core
//! (fastest of repeated runs per block, warm cache):
//!
//! ```text
//!                        1000-row blocks          100-row blocks
//! field                  pco    gorilla  chosen   pco    gorilla  chosen
//! latitude     (5 dp)    1.429  5.739    1.429    1.924  5.771    1.924
//! longitude    (5 dp)    1.433  5.625    1.433    1.921  5.657    1.921
//! elevation    (0 dp)    0.704  1.264    0.704    1.283  1.266    1.173
//! velocity     (0 dp)    0.728  1.193    0.728    1.692  1.270    1.222
//! heading      (0 dp)    0.574  1.129    0.574    1.084  1.093    1.017
//! grade        (0 dp)    0.635  1.080    0.635    1.403  1.125    1.085
//! fuel_consumption (1dp) 1.039  6.106    1.039    1.869  6.133    1.825
//! fuel_state   (1 dp)    0.105  0.169    0.101    0.453  0.246    0.246
//! current_load (0 dp)    0.205  0.243    0.205    0.867  0.329    0.329
//! status       (i64)     0.325  0.400    0.325    0.743  0.412    0.412
//! all 10 fields          0.718  2.295    0.717    1.324  2.330    1.115
//! encode Mv/s            26     201      13*      10     172      6*
//! decode Mv/s            105    198      93*      37     160      34*
//!
//! * whole encode_block / decode_block, per field value: timestamps, headers and checksum
//!   included. Speeds vary by about 20% between runs on the 2-core VM they were taken on.
//! ```
//!
//! Pco wins on size by 3.2x at 1000 rows and 1.8x at 100 (2.1x with the small-column rule
//! below; "chosen" is what `encode_block(.., Pco)` writes), because its FloatMult/FloatQuant
//! modes find the decimal grid of truncated floats, which Gorilla's XOR cannot see (latitude:
//! 1.4 vs 5.7 bytes/value). So [`DEFAULT_NUMERIC_CODEC`] is Pco. Its decode speed is about 100M
//! values/s on 1000-row blocks and under 40M on 100-row blocks, but Gorilla is nowhere near
//! within 10% on size, so speed does not overturn the choice. Gorilla stays available for
//! callers that need encode speed: Pco encodes 8x (1000 rows) to 17x (100 rows) slower.
//!
//! # Small columns
//!
//! Pco pays per-column metadata: an empty stream is 10 bytes, one value 26, ten values 79. Over
//! all ten fields it is larger than Gorilla below 36 values per column (bytes/value at 32
//! values: 2.56 vs 2.46; 36: 2.42 vs 2.44; 40: 2.30 vs 2.42), so numeric columns with fewer
//! than [`PCO_MIN_VALUES`] values are written with Gorilla even when Pco is asked for. The
//! crossover differs a lot by field, though: about 12 values for latitude (Gorilla is bad at
//! decimals), over 200 for the step-like fuel_state, current_load and status (Gorilla's one bit
//! per repeated value is hard to beat in short runs). So at and above the threshold
//! `encode_block` also encodes the column with Gorilla, adding 6-13% to Pco's encode time, and
//! keeps whichever output is smaller: at 100 rows that is 16% smaller than Pco alone (1.115 vs
//! 1.324 bytes/value). The codec tag in the column header makes all of this invisible to
//! readers.
//!
//! # Timestamps
//!
//! Delta, then 64-row groups each storing its smallest delta (as a zigzag varint difference from
//! the previous group's) and the deltas above it bit-packed at the group's width. Per 1000-row
//! block at 10 s: constant intervals 0.045 bytes/row; +-1 ms jitter 2.82 (delta-of-delta in the
//! same groups 2.91, Pco 2.78); +-100 ms jitter 3.71 (3.77, 3.61). Decoding runs at about
//! 940M rows/s for regular timestamps and 530M rows/s for jittered ones.

use std::collections::HashSet;

use pco::standalone::{DecompressorItem, FileDecompressor};
use pco::{ChunkConfig, DeltaSpec};

use hotlake_types::model::{FieldType, FieldValue, TimestampNs};

/// The numeric codec `encode_block` callers should pass unless they have a reason not to.
pub const DEFAULT_NUMERIC_CODEC: NumericCodec = NumericCodec::Pco;

/// Numeric columns with fewer present values than this are written with Gorilla even when Pco
/// was asked for: below it Pco's per-column metadata outweighs its better coding. 36 is where
/// Pco first matched Gorilla over all ten TSBS-IoT fields (2.42 vs 2.44 bytes/value).
pub const PCO_MIN_VALUES: usize = 36;

/// First byte of every block; lets a reader reject bytes that are not a block at all.
const MAGIC: u8 = 0xB7;
/// Layout version written after the magic byte.
const FORMAT_VERSION: u8 = 1;
/// Bytes of the fixed header: magic, version, row count, first and last timestamp.
const HEADER_LEN: usize = 1 + 1 + 4 + 8 + 8;
/// Bytes of the trailing checksum.
const CHECKSUM_LEN: usize = 8;
/// Values per bit-packed group of the delta codec (timestamps and Gorilla integers).
const GROUP: usize = 64;

/// Which numeric codec a float/integer column uses. Stored in the column header so blocks written
/// with either decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumericCodec {
    /// Pcodec: automatic mode selection (finds decimal grids), first-order delta, tANS coding.
    Pco,
    /// Gorilla XOR for floats; delta + frame-of-reference bit packing for integers.
    Gorilla,
}

/// Column values of one field in a block. `present` marks rows that have a value; `values` holds
/// only present rows, in row order. Serializable because Raft batches (`engine::batch`) carry
/// the same type, so a batch column becomes a block column without conversion.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ColumnValues {
    /// Float values.
    F64(Vec<f64>),
    /// Signed integer values.
    I64(Vec<i64>),
    /// Unsigned integer values.
    U64(Vec<u64>),
    /// Boolean values.
    Bool(Vec<bool>),
    /// String values.
    Str(Vec<String>),
}

impl ColumnValues {
    /// Number of values held (present rows only).
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::F64(v) => v.len(),
            ColumnValues::I64(v) => v.len(),
            ColumnValues::U64(v) => v.len(),
            ColumnValues::Bool(v) => v.len(),
            ColumnValues::Str(v) => v.len(),
        }
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The field type of these values.
    pub fn field_type(&self) -> FieldType {
        match self {
            ColumnValues::F64(_) => FieldType::F64,
            ColumnValues::I64(_) => FieldType::I64,
            ColumnValues::U64(_) => FieldType::U64,
            ColumnValues::Bool(_) => FieldType::Bool,
            ColumnValues::Str(_) => FieldType::Str,
        }
    }

    /// The `i`-th held value (an index into present values, not rows).
    fn value(&self, i: usize) -> Option<FieldValue> {
        match self {
            ColumnValues::F64(v) => v.get(i).map(|x| FieldValue::F64(*x)),
            ColumnValues::I64(v) => v.get(i).map(|x| FieldValue::I64(*x)),
            ColumnValues::U64(v) => v.get(i).map(|x| FieldValue::U64(*x)),
            ColumnValues::Bool(v) => v.get(i).map(|x| FieldValue::Bool(*x)),
            ColumnValues::Str(v) => v.get(i).map(|x| FieldValue::Str(x.clone())),
        }
    }
}

/// One field's column in a block.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Field name, unique within the block.
    pub name: String,
    /// Which rows have a value; `None` means every row does. Decoding returns `None` whenever
    /// every row is present, because the bitmap is then not stored.
    pub present: Option<Vec<bool>>,
    /// Values of the present rows, in row order.
    pub values: ColumnValues,
}

impl Column {
    /// Iterates the column row by row: `None` for an absent row, the value otherwise.
    pub fn row_values(&self) -> impl Iterator<Item = Option<FieldValue>> + '_ {
        let rows = match &self.present {
            Some(p) => p.len(),
            None => self.values.len(),
        };
        let mut next_value = 0;
        (0..rows).map(move |row| {
            let here = self.present.as_ref().is_none_or(|p| p.get(row) == Some(&true));
            if here {
                next_value += 1;
                self.values.value(next_value - 1)
            } else {
                None
            }
        })
    }
}

/// One series' points for one time span.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// Row timestamps, strictly ascending.
    pub timestamps: Vec<TimestampNs>,
    /// One column per field, names unique.
    pub columns: Vec<Column>,
}

/// Why bytes could not be decoded as a block.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a well-formed block (truncated, bad tag, inconsistent length...).
    #[error("block corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset where the problem was detected.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// The trailing checksum does not match the content.
    #[error("checksum mismatch: stored {stored:#x}, computed {computed:#x}")]
    Checksum {
        /// Checksum stored in the block.
        stored: u64,
        /// Checksum computed over the block's bytes.
        computed: u64,
    },
}

fn corrupt(offset: usize, reason: impl Into<String>) -> CodecError {
    CodecError::Corrupt { offset, reason: reason.into() }
}

/// Shifts a `Corrupt` offset reported relative to a sub-slice so it is relative to the block.
fn rebase(base: usize) -> impl Fn(CodecError) -> CodecError {
    move |e| match e {
        CodecError::Corrupt { offset, reason } => CodecError::Corrupt { offset: offset.saturating_add(base), reason },
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Byte-level primitives
// ---------------------------------------------------------------------------------------------

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bounds-checked reader over a byte slice; every failure is a `Corrupt` error, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` within whatever the caller reports offsets against.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Reader { bytes, pos: 0, base }
    }

    fn err(&self, reason: impl Into<String>) -> CodecError {
        corrupt(self.base + self.pos, reason)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Absolute offset of the next unread byte.
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or_else(|| self.err(format!("truncated {what}: need {n} bytes")))?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CodecError> {
        let arr = self
            .bytes
            .get(self.pos..)
            .and_then(|s| s.first_chunk::<N>())
            .copied()
            .ok_or_else(|| self.err(format!("truncated {what}")))?;
        self.pos += N;
        Ok(arr)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn varint(&mut self, what: &str) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(self.err(format!("{what}: varint overflows u64")));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(format!("{what}: varint longer than 10 bytes")))
    }

    /// A varint used as a length or count; must fit in `usize`.
    fn len(&mut self, what: &str) -> Result<usize, CodecError> {
        let v = self.varint(what)?;
        usize::try_from(v).map_err(|_| self.err(format!("{what} {v} does not fit in memory")))
    }
}

/// Appends bits least-significant first, flushing whole 64-bit words.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    filled: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, filled: 0 }
    }

    /// Writes the low `width` bits of `v`; bits above `width` must be zero.
    #[inline]
    fn write(&mut self, v: u64, width: u32) {
        debug_assert!(width <= 64);
        debug_assert!(width == 64 || v >> width == 0);
        if width == 0 {
            return;
        }
        self.acc |= v << self.filled;
        let total = self.filled + width;
        if total >= 64 {
            self.out.extend_from_slice(&self.acc.to_le_bytes());
            // The bits of `v` that did not fit; none when the accumulator was empty.
            self.acc = if self.filled == 0 { 0 } else { v >> (64 - self.filled) };
            self.filled = total - 64;
        } else {
            self.filled = total;
        }
    }

    /// Flushes the partial word, padding the last byte with zero bits.
    fn finish(self) {
        let bytes = self.filled.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

/// Loads 8 little-endian bytes at `i`, reading zeros past the end so callers can peek freely and
/// check for overrun once per value instead of per bit.
#[inline]
fn load_u64(bytes: &[u8], i: usize) -> u64 {
    if let Some(chunk) = bytes.get(i..).and_then(|s| s.first_chunk::<8>()) {
        return u64::from_le_bytes(*chunk);
    }
    let mut buf = [0u8; 8];
    if let Some(tail) = bytes.get(i..) {
        for (dst, src) in buf.iter_mut().zip(tail) {
            *dst = *src;
        }
    }
    u64::from_le_bytes(buf)
}

/// Reads bits least-significant first. Reads past the end yield zeros; callers compare `pos`
/// against `end` to detect truncation.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0, end: bytes.len().saturating_mul(8) }
    }

    /// The next bits; at least 57 of them are valid.
    #[inline]
    fn peek(&self) -> u64 {
        load_u64(self.bytes, self.pos >> 3) >> (self.pos & 7)
    }

    #[inline]
    fn consume(&mut self, bits: u32) {
        self.pos += bits as usize;
    }

    /// Reads up to 64 bits.
    #[inline]
    fn read(&mut self, width: u32) -> u64 {
        if width <= 56 {
            let v = self.peek() & ((1u64 << width) - 1);
            self.consume(width);
            v
        } else {
            let lo = self.peek() & 0xFFFF_FFFF;
            self.consume(32);
            let hi = self.peek() & ((1u64 << (width - 32)) - 1);
            self.consume(width - 32);
            lo | (hi << 32)
        }
    }

    fn overran(&self) -> bool {
        self.pos > self.end
    }
}

// ---------------------------------------------------------------------------------------------
// Delta + frame-of-reference integer codec (timestamps, Gorilla integers)
// ---------------------------------------------------------------------------------------------

/// Writes `values` as: zigzag varint of the first value, then groups of up to 64 deltas, each
/// group `[width u8][zigzag varint: group min − previous group min][deltas − min, width bits
/// each, byte-padded]`. Arithmetic wraps, which is a bijection, so any i64 sequence round-trips.
fn delta_encode(mut values: impl Iterator<Item = i64>, out: &mut Vec<u8>) {
    let Some(first) = values.next() else {
        return;
    };
    put_varint(out, zigzag(first));
    let mut prev = first;
    let mut prev_min = 0i64;
    let mut deltas = [0i64; GROUP];
    loop {
        let mut k = 0;
        while k < GROUP {
            let Some(v) = values.next() else { break };
            deltas[k] = v.wrapping_sub(prev);
            prev = v;
            k += 1;
        }
        if k == 0 {
            return;
        }
        let group = &deltas[..k];
        let min = group.iter().copied().min().unwrap_or(0);
        let or = group.iter().fold(0u64, |acc, &d| acc | d.wrapping_sub(min) as u64);
        let width = 64 - or.leading_zeros();
        out.push(width as u8);
        put_varint(out, zigzag(min.wrapping_sub(prev_min)));
        prev_min = min;
        let mut w = BitWriter::new(out);
        for &d in group {
            w.write(d.wrapping_sub(min) as u64, width);
        }
        w.finish();
        if k < GROUP {
            return;
        }
    }
}

/// Inverse of [`delta_encode`]; `bytes` must be exactly the encoded values.
fn delta_decode(bytes: &[u8], n: usize) -> Result<Vec<i64>, CodecError> {
    let mut r = Reader::new(bytes, 0);
    if n == 0 {
        return if bytes.is_empty() { Ok(Vec::new()) } else { Err(r.err("bytes after an empty integer column")) };
    }
    let groups = (n - 1).div_ceil(GROUP);
    // Each group costs at least two bytes, so this bounds `n` by the input size before
    // allocating: a corrupt count cannot make us reserve gigabytes.
    if groups > bytes.len() / 2 {
        return Err(r.err(format!("{n} values cannot fit in {} bytes", bytes.len())));
    }
    let mut out = Vec::with_capacity(n);
    let mut prev = unzigzag(r.varint("first value")?);
    out.push(prev);
    let mut prev_min = 0i64;
    let mut left = n - 1;
    while left > 0 {
        let k = left.min(GROUP);
        let width = u32::from(r.u8("group width")?);
        if width > 64 {
            return Err(r.err(format!("group width {width} over 64")));
        }
        let min = prev_min.wrapping_add(unzigzag(r.varint("group minimum")?));
        prev_min = min;
        let packed_at = r.offset();
        let packed = r.take((k * width as usize).div_ceil(8), "bit-packed group")?;
        if width == 0 {
            for _ in 0..k {
                prev = prev.wrapping_add(min);
                out.push(prev);
            }
        } else {
            let mut bits = BitReader::new(packed);
            for _ in 0..k {
                prev = prev.wrapping_add(min.wrapping_add(bits.read(width) as i64));
                out.push(prev);
            }
            // Padding bits are always zero from the encoder; anything else is damage.
            if bits.peek() != 0 {
                return Err(corrupt(packed_at, "nonzero padding bits in group"));
            }
        }
        left -= k;
    }
    if r.remaining() != 0 {
        return Err(r.err("bytes after the last group"));
    }
    Ok(out)
}

/// Encodes a timestamp column: delta, then per 64-row group a frame of reference (the group's
/// smallest delta, stored as a zigzag varint difference from the previous group's) and the
/// deltas above it bit-packed at the group's width. Constant intervals cost 2 bytes per 64 rows
/// (0.25 bits/row). Jitter of ±J spreads deltas over 4J but deltas-of-deltas over 8J, so
/// subtracting the group minimum beats a second difference on jittered data (measured 2.82 vs
/// 2.91 bytes/row at ±1 ms) while costing 0.07 bits/row more on perfectly regular data.
pub fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) {
    delta_encode(ts.iter().copied(), out);
}

/// Decodes `n` timestamps written by [`encode_timestamps`]; `bytes` must be exactly that output.
pub fn decode_timestamps(bytes: &[u8], n: usize) -> Result<Vec<i64>, CodecError> {
    delta_decode(bytes, n)
}

/// Gorilla codec for signed integers: delta + frame-of-reference bit packing, the same layout as
/// [`encode_timestamps`].
pub fn gorilla_encode_i64(values: &[i64], out: &mut Vec<u8>) {
    delta_encode(values.iter().copied(), out);
}

/// Decodes `n` integers written by [`gorilla_encode_i64`].
pub fn gorilla_decode_i64(bytes: &[u8], n: usize) -> Result<Vec<i64>, CodecError> {
    delta_decode(bytes, n)
}

/// Gorilla codec for unsigned integers: the bits are reinterpreted as i64 and delta-packed, which
/// round-trips every u64 because the delta arithmetic wraps.
pub fn gorilla_encode_u64(values: &[u64], out: &mut Vec<u8>) {
    delta_encode(values.iter().map(|&v| v as i64), out);
}

/// Decodes `n` unsigned integers written by [`gorilla_encode_u64`].
pub fn gorilla_decode_u64(bytes: &[u8], n: usize) -> Result<Vec<u64>, CodecError> {
    Ok(delta_decode(bytes, n)?.into_iter().map(|v| v as u64).collect())
}

// ---------------------------------------------------------------------------------------------
// Gorilla XOR floats
// ---------------------------------------------------------------------------------------------

/// Bits of a Gorilla "new window" header after the two control bits: 5 leading + 6 length.
const GORILLA_WINDOW_HEADER: u32 = 11;

/// Encodes floats with Gorilla XOR compression (Pelkonen et al., VLDB 2015), bits written least
/// significant first: the first value raw (64 bits); then per value the XOR with its predecessor
/// as `0` (equal), `1 0` + meaningful bits (fits the previous leading/trailing-zero window) or
/// `1 1` + 5 bits leading zeros + 6 bits length (64 stored as 0) + meaningful bits. Unlike the
/// paper, a fitting window is abandoned when opening a new one is cheaper, which keeps one
/// wide XOR from bloating every following value (8% smaller on the TSBS-IoT floats).
pub fn gorilla_encode_f64(values: &[f64], out: &mut Vec<u8>) {
    let Some((first, rest)) = values.split_first() else {
        return;
    };
    let mut w = BitWriter::new(out);
    let mut prev = first.to_bits();
    w.write(prev, 64);
    // No window yet: `win_len == 0` forces the first nonzero XOR to open one.
    let (mut win_lead, mut win_trail, mut win_len) = (0u32, 0u32, 0u32);
    for v in rest {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.write(0, 1);
            continue;
        }
        // The 5-bit field caps leading zeros at 31; the extra zeros become meaningful bits.
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        let len = 64 - lead - trail;
        let fits = win_len != 0 && lead >= win_lead && trail >= win_trail;
        if fits && win_len <= len + GORILLA_WINDOW_HEADER {
            w.write(0b01, 2);
            w.write(x >> win_trail, win_len);
        } else {
            let header = 0b11 | u64::from(lead) << 2 | u64::from(len & 63) << 7;
            w.write(header, 2 + GORILLA_WINDOW_HEADER);
            w.write(x >> trail, len);
            (win_lead, win_trail, win_len) = (lead, trail, len);
        }
    }
    w.finish();
}

/// Decodes `n` floats written by [`gorilla_encode_f64`]; `bytes` must be exactly that output.
pub fn gorilla_decode_f64(bytes: &[u8], n: usize) -> Result<Vec<f64>, CodecError> {
    if n == 0 {
        return if bytes.is_empty() { Ok(Vec::new()) } else { Err(corrupt(0, "bytes after an empty float column")) };
    }
    // The first value takes 64 bits and every later one at least 1, which bounds `n` by the
    // input size before allocating.
    let max_n = bytes.len().saturating_mul(8).saturating_sub(64).saturating_add(1);
    if bytes.len() < 8 || n > max_n {
        return Err(corrupt(0, format!("{n} floats cannot fit in {} bytes", bytes.len())));
    }
    let mut r = BitReader::new(bytes);
    let mut out = Vec::with_capacity(n);
    let mut prev = r.read(64);
    out.push(f64::from_bits(prev));
    // `win_len == 0` means no window has been opened yet.
    let (mut win_trail, mut win_len, mut win_mask) = (0u32, 0u32, 0u64);
    for _ in 1..n {
        // One 57-bit peek covers the control bits, the window header and, usually, the
        // meaningful bits too, so most values cost a single load.
        let p = r.peek();
        if p & 1 == 0 {
            r.consume(1);
        } else {
            let header = if p & 2 == 0 {
                if win_len == 0 {
                    return Err(corrupt(r.pos / 8, "window reused before any was set"));
                }
                2
            } else {
                let lead = ((p >> 2) & 31) as u32;
                let len = match ((p >> 7) & 63) as u32 {
                    0 => 64,
                    l => l,
                };
                if lead + len > 64 {
                    return Err(corrupt(r.pos / 8, "window wider than 64 bits"));
                }
                win_len = len;
                win_trail = 64 - lead - len;
                win_mask = u64::MAX >> (64 - len);
                2 + GORILLA_WINDOW_HEADER
            };
            let meaningful = if header + win_len <= 57 {
                r.consume(header + win_len);
                (p >> header) & win_mask
            } else {
                r.consume(header);
                r.read(win_len)
            };
            prev ^= meaningful << win_trail;
        }
        if r.overran() {
            return Err(corrupt(bytes.len(), "float stream truncated"));
        }
        out.push(f64::from_bits(prev));
    }
    let used = r.pos.div_ceil(8);
    if r.peek() != 0 {
        return Err(corrupt(r.pos / 8, "nonzero padding bits after the last float"));
    }
    if used != bytes.len() {
        return Err(corrupt(used, "bytes after the last float"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Pco
// ---------------------------------------------------------------------------------------------

/// Pco settings. The default `ModeSpec::Auto` bids FloatMult and FloatQuant against Classic on a
/// sample, which is what finds the decimal grid of truncated floats (FloatMult base 1e-5 for
/// latitude, FloatQuant for whole numbers). Delta is fixed to first order instead of searched:
/// on 1000-value blocks that was 4% smaller and 3-4x faster to encode than `DeltaSpec::Auto`,
/// which tries nine encodings on a sample; on 100-value blocks Auto was 5% smaller, but once
/// `encode_block` keeps the smaller of Pco and Gorilla the difference shrank to 0.2%.
fn pco_config() -> ChunkConfig {
    ChunkConfig::default().with_delta_spec(DeltaSpec::TryConsecutive(1))
}

fn pco_encode<T: pco::data_types::Number>(values: &[T], out: &mut Vec<u8>) {
    // Pco only fails on an invalid config or a failing writer; ours is valid and a Vec never
    // fails, so an error here is a bug.
    pco::standalone::simple_compress_into(values, &pco_config(), out)
        .expect("pco compression into a Vec with a valid config cannot fail");
}

fn pco_error(offset: usize) -> impl Fn(pco::errors::PcoError) -> CodecError {
    move |e| corrupt(offset, e.to_string())
}

/// Decodes a Pco stream that must hold exactly `n` numbers and nothing after its end, reading
/// chunk by chunk so a corrupt count cannot make us allocate more than `n`.
fn pco_decode_exact<T: pco::data_types::Number + Default + Copy>(bytes: &[u8], n: usize) -> Result<Vec<T>, CodecError> {
    let (file, mut src) = FileDecompressor::new(bytes).map_err(pco_error(0))?;
    let mut out: Vec<T> = Vec::with_capacity(n);
    loop {
        let at = bytes.len() - src.len();
        match file.chunk_decompressor::<T, &[u8]>(src).map_err(pco_error(at))? {
            DecompressorItem::Chunk(mut chunk) => {
                let start = out.len();
                let chunk_n = chunk.n();
                if chunk_n > n - start {
                    return Err(corrupt(at, format!("pco holds more than {n} values")));
                }
                out.resize(start + chunk_n, T::default());
                let progress = chunk.read(&mut out[start..]).map_err(pco_error(at))?;
                if progress.n_processed != chunk_n || !progress.finished {
                    return Err(corrupt(at, "pco chunk ended early"));
                }
                src = chunk.into_src();
            }
            DecompressorItem::EndOfData(rest) => {
                if !rest.is_empty() {
                    return Err(corrupt(bytes.len() - rest.len(), "bytes after pco data"));
                }
                break;
            }
        }
    }
    if out.len() != n {
        return Err(corrupt(bytes.len(), format!("pco holds {} values, expected {n}", out.len())));
    }
    Ok(out)
}

/// Encodes floats with Pco's standalone format (automatic mode selection, first-order delta).
pub fn pco_encode_f64(values: &[f64], out: &mut Vec<u8>) {
    pco_encode(values, out);
}

/// Decodes a whole Pco stream of unknown length.
fn pco_decode_all<T: pco::data_types::Number>(bytes: &[u8]) -> Result<Vec<T>, CodecError> {
    let (file, src) = FileDecompressor::new(bytes).map_err(pco_error(0))?;
    // The header's count hint is untrusted: cap the preallocation by what the input could
    // plausibly expand to, so a crafted hint cannot reserve gigabytes up front.
    file.with_max_prealloc(bytes.len().saturating_mul(64)).simple_decompress(src).map_err(pco_error(0))
}

/// Decodes floats written by [`pco_encode_f64`].
pub fn pco_decode_f64(bytes: &[u8]) -> Result<Vec<f64>, CodecError> {
    pco_decode_all(bytes)
}

/// Encodes signed integers with Pco's standalone format.
pub fn pco_encode_i64(values: &[i64], out: &mut Vec<u8>) {
    pco_encode(values, out);
}

/// Decodes signed integers written by [`pco_encode_i64`].
pub fn pco_decode_i64(bytes: &[u8]) -> Result<Vec<i64>, CodecError> {
    pco_decode_all(bytes)
}

/// Encodes unsigned integers with Pco's standalone format.
pub fn pco_encode_u64(values: &[u64], out: &mut Vec<u8>) {
    pco_encode(values, out);
}

/// Decodes unsigned integers written by [`pco_encode_u64`].
pub fn pco_decode_u64(bytes: &[u8]) -> Result<Vec<u64>, CodecError> {
    pco_decode_all(bytes)
}

// ---------------------------------------------------------------------------------------------
// Bits, strings
// ---------------------------------------------------------------------------------------------

/// Packs booleans eight per byte, first value in the least significant bit.
fn pack_bits(bits: &[bool], out: &mut Vec<u8>) {
    for chunk in bits.chunks(8) {
        let byte = chunk.iter().enumerate().fold(0u8, |b, (i, &set)| b | (u8::from(set) << i));
        out.push(byte);
    }
}

/// Unpacks `n` booleans; `bytes` must be exactly `ceil(n / 8)` long with zero padding bits.
fn unpack_bits(bytes: &[u8], n: usize) -> Result<Vec<bool>, CodecError> {
    if bytes.len() != n.div_ceil(8) {
        return Err(corrupt(0, format!("{} bytes cannot hold exactly {n} bits", bytes.len())));
    }
    let mut out = Vec::with_capacity(n);
    for (i, &byte) in bytes.iter().enumerate() {
        let bits_here = (n - i * 8).min(8);
        if bits_here < 8 && byte >> bits_here != 0 {
            return Err(corrupt(i, "nonzero padding bits"));
        }
        out.extend((0..bits_here).map(|bit| (byte >> bit) & 1 == 1));
    }
    Ok(out)
}

fn encode_strings(values: &[String], out: &mut Vec<u8>) {
    for s in values {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn decode_strings(bytes: &[u8], n: usize) -> Result<Vec<String>, CodecError> {
    // Every string costs at least its length byte, which bounds `n` before allocating.
    if n > bytes.len() {
        return Err(corrupt(0, format!("{n} strings cannot fit in {} bytes", bytes.len())));
    }
    let mut r = Reader::new(bytes, 0);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.len("string length")?;
        let at = r.offset();
        let raw = r.take(len, "string")?;
        let s = std::str::from_utf8(raw).map_err(|e| corrupt(at, format!("string: {e}")))?;
        out.push(s.to_owned());
    }
    if r.remaining() != 0 {
        return Err(r.err("bytes after the last string"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Block
// ---------------------------------------------------------------------------------------------

/// Codec tag for Pco-coded numeric columns.
const CODEC_PCO: u8 = 0;
/// Codec tag for Gorilla-coded numeric columns.
const CODEC_GORILLA: u8 = 1;
/// Codec tag for the only encoding of bool and string columns.
const CODEC_PLAIN: u8 = 0;

/// Presence tag: every row has a value, no bitmap stored.
const PRESENCE_ALL: u8 = 0;
/// Presence tag: a `ceil(rows / 8)`-byte bitmap starts the payload.
const PRESENCE_BITMAP: u8 = 1;

fn type_tag(t: FieldType) -> u8 {
    match t {
        FieldType::F64 => 0,
        FieldType::I64 => 1,
        FieldType::U64 => 2,
        FieldType::Bool => 3,
        FieldType::Str => 4,
    }
}

/// Writes one column's values, returning the codec tag used.
fn encode_values(values: &ColumnValues, codec: NumericCodec, out: &mut Vec<u8>) -> u8 {
    match values {
        ColumnValues::F64(v) => encode_numeric(v, codec, out, pco_encode_f64, gorilla_encode_f64),
        ColumnValues::I64(v) => encode_numeric(v, codec, out, pco_encode_i64, gorilla_encode_i64),
        ColumnValues::U64(v) => encode_numeric(v, codec, out, pco_encode_u64, gorilla_encode_u64),
        ColumnValues::Bool(v) => {
            pack_bits(v, out);
            CODEC_PLAIN
        }
        ColumnValues::Str(v) => {
            encode_strings(v, out);
            CODEC_PLAIN
        }
    }
}

/// Writes a numeric column. Gorilla is used as asked, and also in place of Pco below
/// [`PCO_MIN_VALUES`] (Pco's chunk metadata dominates there) and whenever its output is smaller:
/// the crossover differs by field from about 12 to over 200 values, and trying Gorilla adds only
/// 6-13% to Pco's encode time.
fn encode_numeric<T>(
    values: &[T],
    codec: NumericCodec,
    out: &mut Vec<u8>,
    pco: fn(&[T], &mut Vec<u8>),
    gorilla: fn(&[T], &mut Vec<u8>),
) -> u8 {
    if codec == NumericCodec::Gorilla || values.len() < PCO_MIN_VALUES {
        gorilla(values, out);
        return CODEC_GORILLA;
    }
    let start = out.len();
    pco(values, out);
    let mut alt = Vec::new();
    gorilla(values, &mut alt);
    if alt.len() < out.len() - start {
        out.truncate(start);
        out.extend_from_slice(&alt);
        CODEC_GORILLA
    } else {
        CODEC_PCO
    }
}

/// Encodes a block. Asserts its invariants first (timestamps strictly ascending, every column's
/// present-count equals `values.len()` and `present.len()` equals the row count, names unique):
/// breaking them is a bug in the caller, not a data error.
pub fn encode_block(block: &Block, codec: NumericCodec) -> Vec<u8> {
    let rows = block.timestamps.len();
    assert!(u32::try_from(rows).is_ok(), "block has {rows} rows, more than a u32 counts");
    assert!(block.timestamps.windows(2).all(|w| w[0] < w[1]), "block timestamps must be strictly ascending");
    let mut names = HashSet::with_capacity(block.columns.len());
    for col in &block.columns {
        match &col.present {
            Some(present) => {
                assert!(
                    present.len() == rows,
                    "column {:?}: present has {} rows, block has {rows}",
                    col.name,
                    present.len()
                );
                assert!(
                    present.iter().filter(|&&p| p).count() == col.values.len(),
                    "column {:?}: present count differs from values.len()",
                    col.name
                );
            }
            None => assert!(
                col.values.len() == rows,
                "column {:?}: {} values for {rows} rows with none absent",
                col.name,
                col.values.len()
            ),
        }
        assert!(names.insert(col.name.as_str()), "duplicate column name {:?}", col.name);
    }

    let mut out = Vec::with_capacity(64 + rows * (2 + block.columns.len() * 4));
    out.push(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    let first = block.timestamps.first().copied().unwrap_or(0);
    let last = block.timestamps.last().copied().unwrap_or(0);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());

    let mut section = Vec::new();
    encode_timestamps(&block.timestamps, &mut section);
    put_varint(&mut out, section.len() as u64);
    out.extend_from_slice(&section);

    put_varint(&mut out, block.columns.len() as u64);
    for col in &block.columns {
        put_varint(&mut out, col.name.len() as u64);
        out.extend_from_slice(col.name.as_bytes());
        section.clear();
        // An all-true bitmap carries no information, so it is dropped.
        let bitmap = col.present.as_deref().filter(|p| p.iter().any(|&x| !x));
        if let Some(present) = bitmap {
            pack_bits(present, &mut section);
        }
        let tag = encode_values(&col.values, codec, &mut section);
        out.push(type_tag(col.values.field_type()));
        out.push(tag);
        out.push(if bitmap.is_some() { PRESENCE_BITMAP } else { PRESENCE_ALL });
        put_varint(&mut out, section.len() as u64);
        out.extend_from_slice(&section);
    }

    let checksum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// The fixed header, read after the checksum was verified.
struct Header {
    rows: usize,
    first: TimestampNs,
    last: TimestampNs,
}

/// Checks magic, version and checksum; returns the header and a reader positioned after it,
/// covering everything up to the checksum.
fn open(bytes: &[u8]) -> Result<(Header, Reader<'_>), CodecError> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt(bytes.len(), format!("{} bytes is shorter than an empty block", bytes.len())));
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let mut r = Reader::new(body, 0);
    let magic = r.u8("magic")?;
    if magic != MAGIC {
        return Err(corrupt(0, format!("magic byte {magic:#04x} is not a block")));
    }
    let version = r.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(corrupt(1, format!("unknown format version {version}")));
    }
    let stored =
        u64::from_le_bytes(sum.first_chunk::<8>().copied().ok_or_else(|| corrupt(body.len(), "truncated checksum"))?);
    let computed = xxhash_rust::xxh3::xxh3_64(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let rows = u32::from_le_bytes(r.array("row count")?) as usize;
    let first = i64::from_le_bytes(r.array("first timestamp")?);
    let last = i64::from_le_bytes(r.array("last timestamp")?);
    Ok((Header { rows, first, last }, r))
}

/// One column's header and undecoded payload.
struct RawColumn<'a> {
    name: &'a str,
    type_tag: u8,
    codec: u8,
    presence: u8,
    payload: &'a [u8],
    /// Offset of `payload` in the block, for error reports.
    at: usize,
}

fn read_raw_column<'a>(r: &mut Reader<'a>) -> Result<RawColumn<'a>, CodecError> {
    let name_len = r.len("column name length")?;
    let name_at = r.offset();
    let name = std::str::from_utf8(r.take(name_len, "column name")?)
        .map_err(|e| corrupt(name_at, format!("column name: {e}")))?;
    let type_tag = r.u8("type tag")?;
    let codec = r.u8("codec tag")?;
    let presence = r.u8("presence tag")?;
    let payload_len = r.len("column length")?;
    let at = r.offset();
    let payload = r.take(payload_len, "column payload")?;
    Ok(RawColumn { name, type_tag, codec, presence, payload, at })
}

fn decode_column(raw: &RawColumn<'_>, rows: usize) -> Result<Column, CodecError> {
    let mut r = Reader::new(raw.payload, raw.at);
    let present = match raw.presence {
        PRESENCE_ALL => None,
        PRESENCE_BITMAP => {
            let at = r.offset();
            let bitmap = r.take(rows.div_ceil(8), "presence bitmap")?;
            Some(unpack_bits(bitmap, rows).map_err(rebase(at))?)
        }
        other => return Err(r.err(format!("unknown presence tag {other}"))),
    };
    let n = present.as_ref().map_or(rows, |p| p.iter().filter(|&&x| x).count());
    let at = r.offset();
    let bytes = r.take(r.remaining(), "column values")?;
    let fix = rebase(at);
    let values = match (raw.type_tag, raw.codec) {
        (0, CODEC_PCO) => ColumnValues::F64(pco_decode_exact(bytes, n).map_err(&fix)?),
        (0, CODEC_GORILLA) => ColumnValues::F64(gorilla_decode_f64(bytes, n).map_err(&fix)?),
        (1, CODEC_PCO) => ColumnValues::I64(pco_decode_exact(bytes, n).map_err(&fix)?),
        (1, CODEC_GORILLA) => ColumnValues::I64(gorilla_decode_i64(bytes, n).map_err(&fix)?),
        (2, CODEC_PCO) => ColumnValues::U64(pco_decode_exact(bytes, n).map_err(&fix)?),
        (2, CODEC_GORILLA) => ColumnValues::U64(gorilla_decode_u64(bytes, n).map_err(&fix)?),
        (3, CODEC_PLAIN) => ColumnValues::Bool(unpack_bits(bytes, n).map_err(&fix)?),
        (4, CODEC_PLAIN) => ColumnValues::Str(decode_strings(bytes, n).map_err(&fix)?),
        (t, c) => return Err(corrupt(raw.at, format!("unknown type/codec tags {t}/{c} for column {:?}", raw.name))),
    };
    Ok(Column { name: raw.name.to_owned(), present, values })
}

fn decode_filtered(bytes: &[u8], wanted: Option<&[&str]>) -> Result<Block, CodecError> {
    let (header, mut r) = open(bytes)?;
    let ts_len = r.len("timestamp section length")?;
    let ts_at = r.offset();
    let ts_bytes = r.take(ts_len, "timestamp section")?;
    let timestamps = decode_timestamps(ts_bytes, header.rows).map_err(rebase(ts_at))?;
    let (first, last) = (timestamps.first().copied().unwrap_or(0), timestamps.last().copied().unwrap_or(0));
    if first != header.first || last != header.last {
        return Err(corrupt(ts_at, "timestamps disagree with the header"));
    }
    if timestamps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(corrupt(ts_at, "timestamps not strictly ascending"));
    }
    let n_cols = r.len("column count")?;
    // A column header is at least five bytes; checking bounds the allocation below.
    if n_cols > r.remaining() / 5 {
        return Err(r.err(format!("{n_cols} columns cannot fit")));
    }
    let mut names = HashSet::with_capacity(n_cols);
    let mut columns = Vec::with_capacity(wanted.map_or(n_cols, |w| w.len().min(n_cols)));
    for _ in 0..n_cols {
        let at = r.offset();
        let raw = read_raw_column(&mut r)?;
        if !names.insert(raw.name) {
            return Err(corrupt(at, format!("duplicate column {:?}", raw.name)));
        }
        if wanted.is_none_or(|w| w.contains(&raw.name)) {
            columns.push(decode_column(&raw, header.rows)?);
        }
    }
    if r.remaining() != 0 {
        return Err(r.err("bytes after the last column"));
    }
    Ok(Block { timestamps, columns })
}

/// Decodes a block, verifying the trailing xxh3-64 checksum and every length. Never panics on
/// arbitrary input; malformed bytes yield a [`CodecError`].
pub fn decode_block(bytes: &[u8]) -> Result<Block, CodecError> {
    decode_filtered(bytes, None)
}

/// Decodes only the timestamps and the columns named in `names`, skipping the others without
/// decoding their payload. Columns come back in block order; names the block lacks are ignored.
pub fn decode_block_columns(bytes: &[u8], names: &[&str]) -> Result<Block, CodecError> {
    decode_filtered(bytes, Some(names))
}

/// Timestamp of the first and last row and the row count, read from the header without decoding
/// columns (the checksum is still verified). An empty block reports `(0, 0, 0)`.
pub fn block_summary(bytes: &[u8]) -> Result<(TimestampNs, TimestampNs, u32), CodecError> {
    let (header, _) = open(bytes)?;
    Ok((header.first, header.last, header.rows as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000_000_000;
    const TEN_S: i64 = 10_000_000_000;

    fn ts(rows: usize) -> Vec<i64> {
        (0..rows as i64).map(|i| T0 + i * TEN_S).collect()
    }

    fn col(name: &str, present: Option<Vec<bool>>, values: ColumnValues) -> Column {
        Column { name: name.to_owned(), present, values }
    }

    /// What decoding should return: an all-true bitmap is not stored, so it comes back as `None`.
    fn normalized(block: &Block) -> Block {
        let mut b = block.clone();
        for c in &mut b.columns {
            if c.present.as_ref().is_some_and(|p| p.iter().all(|&x| x)) {
                c.present = None;
            }
        }
        b
    }

    /// Block equality with floats compared by bit pattern, so NaN payloads and -0.0 count.
    fn same(a: &Block, b: &Block) -> bool {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        a.timestamps == b.timestamps
            && a.columns.len() == b.columns.len()
            && a.columns.iter().zip(&b.columns).all(|(x, y)| {
                x.name == y.name
                    && x.present == y.present
                    && match (&x.values, &y.values) {
                        (ColumnValues::F64(p), ColumnValues::F64(q)) => bits(p) == bits(q),
                        (p, q) => p == q,
                    }
            })
    }

    fn round_trip(block: &Block, codec: NumericCodec) {
        let bytes = encode_block(block, codec);
        let back = decode_block(&bytes).expect("valid block decodes");
        assert!(same(&normalized(block), &back), "{block:?}\n!=\n{back:?}");
    }

    /// Names and codec tags of a block's columns, read straight from the layout.
    fn codec_tags(bytes: &[u8]) -> Vec<(String, u8)> {
        let (_, mut r) = open(bytes).unwrap();
        let ts_len = r.len("ts").unwrap();
        r.take(ts_len, "ts").unwrap();
        let n = r.len("cols").unwrap();
        (0..n)
            .map(|_| {
                let raw = read_raw_column(&mut r).unwrap();
                (raw.name.to_owned(), raw.codec)
            })
            .collect()
    }

    fn all_types(rows: usize) -> Block {
        let n = rows as i64;
        Block {
            timestamps: ts(rows),
            columns: vec![
                col("f", None, ColumnValues::F64((0..n).map(|i| (i * 37 % 1000) as f64 / 100.0).collect())),
                col("i", None, ColumnValues::I64((0..n).map(|i| i * i - 50).collect())),
                col("u", None, ColumnValues::U64((0..n).map(|i| (i as u64) << 20).collect())),
                col("b", None, ColumnValues::Bool((0..n).map(|i| i % 3 == 0).collect())),
                col("s", None, ColumnValues::Str((0..n).map(|i| format!("v{i}")).collect())),
            ],
        }
    }

    /// Every column type round-trips with both codecs, below and above the Pco threshold.
    #[test]
    fn every_type_round_trips_with_both_codecs() {
        for rows in [1, 5, PCO_MIN_VALUES - 1, PCO_MIN_VALUES, 300, 1000] {
            for codec in [NumericCodec::Pco, NumericCodec::Gorilla] {
                round_trip(&all_types(rows), codec);
            }
        }
    }

    /// Absent rows keep their positions; an all-true bitmap is dropped and decodes as `None`.
    #[test]
    fn absent_rows_round_trip() {
        let rows = 200;
        let present: Vec<bool> = (0..rows).map(|i| i % 7 != 3).collect();
        let k = present.iter().filter(|&&p| p).count();
        let block = Block {
            timestamps: ts(rows),
            columns: vec![
                col("f", Some(present.clone()), ColumnValues::F64((0..k).map(|i| i as f64 * 0.5).collect())),
                col("i", Some(present.clone()), ColumnValues::I64((0..k as i64).collect())),
                col("none", Some(vec![false; rows]), ColumnValues::U64(Vec::new())),
                col("all", Some(vec![true; rows]), ColumnValues::Bool(vec![true; rows])),
                col("s", Some(present), ColumnValues::Str(vec!["x".into(); k])),
            ],
        };
        for codec in [NumericCodec::Pco, NumericCodec::Gorilla] {
            round_trip(&block, codec);
            let back = decode_block(&encode_block(&block, codec)).unwrap();
            assert_eq!(back.columns[3].present, None);
            let rows_of_f: Vec<Option<FieldValue>> = back.columns[0].row_values().collect();
            assert_eq!(rows_of_f[3], None);
            assert_eq!(rows_of_f[4], Some(FieldValue::F64(1.5)));
        }
    }

    /// Empty strings, and multi-byte UTF-8, survive.
    #[test]
    fn empty_and_unicode_strings_round_trip() {
        let values = vec![String::new(), "é✓😀".into(), String::new(), "a".repeat(300)];
        let block = Block { timestamps: ts(4), columns: vec![col("s", None, ColumnValues::Str(values))] };
        round_trip(&block, NumericCodec::Pco);
    }

    fn extreme_floats() -> Vec<f64> {
        let mut v = vec![
            f64::from_bits(0x7ff8_0000_0000_0001), // quiet NaN with a payload
            f64::from_bits(0x7ff0_0000_dead_beef), // signalling NaN
            f64::from_bits(0xfff8_0000_0000_0000), // negative NaN
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::from_bits(1), // smallest subnormal
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
        ];
        // Long enough that Pco, not the small-column fallback, gets to encode them.
        v.extend((0..100).map(|i| i as f64 * 0.01));
        v
    }

    /// NaN payloads, infinities, -0.0 and subnormals keep their exact bits under both codecs.
    #[test]
    fn extreme_floats_keep_their_bits() {
        let v = extreme_floats();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut g = Vec::new();
        gorilla_encode_f64(&v, &mut g);
        assert_eq!(bits(&gorilla_decode_f64(&g, v.len()).unwrap()), bits(&v));
        let mut p = Vec::new();
        pco_encode_f64(&v, &mut p);
        assert_eq!(bits(&pco_decode_f64(&p).unwrap()), bits(&v));
        assert_eq!(bits(&pco_decode_exact::<f64>(&p, v.len()).unwrap()), bits(&v));
        let block = Block { timestamps: ts(v.len()), columns: vec![col("x", None, ColumnValues::F64(v))] };
        round_trip(&block, NumericCodec::Pco);
        round_trip(&block, NumericCodec::Gorilla);
    }

    /// Integer extremes round-trip, including deltas that overflow and must wrap.
    #[test]
    fn extreme_integers_round_trip() {
        let mut i = vec![i64::MIN, i64::MAX, 0, -1, i64::MIN, i64::MAX, 1];
        let mut u = vec![u64::MAX, 0, u64::MAX, 1, u64::MAX / 2, u64::MAX];
        for rows in [i.len(), 100] {
            i.resize(rows, i64::MAX);
            u.resize(rows, u64::MAX);
            let block = Block {
                timestamps: ts(rows),
                columns: vec![
                    col("i", None, ColumnValues::I64(i.clone())),
                    col("u", None, ColumnValues::U64(u.clone())),
                ],
            };
            round_trip(&block, NumericCodec::Pco);
            round_trip(&block, NumericCodec::Gorilla);
        }
    }

    /// Single-row, zero-column and zero-row blocks round-trip.
    #[test]
    fn single_row_zero_column_and_empty_blocks() {
        for codec in [NumericCodec::Pco, NumericCodec::Gorilla] {
            round_trip(&all_types(1), codec);
            round_trip(&Block { timestamps: ts(10), columns: Vec::new() }, codec);
            round_trip(
                &Block { timestamps: Vec::new(), columns: vec![col("f", None, ColumnValues::F64(Vec::new()))] },
                codec,
            );
        }
        let empty = encode_block(&Block { timestamps: Vec::new(), columns: Vec::new() }, DEFAULT_NUMERIC_CODEC);
        assert_eq!(block_summary(&empty).unwrap(), (0, 0, 0));
    }

    /// The timestamp codec round-trips negative and huge (wrapping) deltas; blocks accept huge
    /// ascending gaps.
    #[test]
    fn timestamps_with_negative_and_huge_deltas() {
        let wild = vec![0, -5, i64::MAX, i64::MIN, i64::MIN + 1, 7, 7, -1_000_000_000_000, i64::MAX];
        for n in [0, 1, 2, wild.len()] {
            let mut out = Vec::new();
            encode_timestamps(&wild[..n], &mut out);
            assert_eq!(decode_timestamps(&out, n).unwrap(), &wild[..n]);
        }
        let block = Block {
            timestamps: vec![i64::MIN, -1, 0, 1, i64::MAX - 1, i64::MAX],
            columns: vec![col("i", None, ColumnValues::I64(vec![1, 2, 3, 4, 5, 6]))],
        };
        round_trip(&block, NumericCodec::Pco);
        let bytes = encode_block(&block, NumericCodec::Pco);
        assert_eq!(block_summary(&bytes).unwrap(), (i64::MIN, i64::MAX, 6));
    }

    /// Constant intervals cost about a quarter of a bit per row.
    #[test]
    fn constant_interval_timestamps_are_almost_free() {
        let mut out = Vec::new();
        encode_timestamps(&ts(1000), &mut out);
        // First value (9 bytes) + 16 groups of 2 bytes, the first also holding the interval.
        assert!(out.len() <= 48, "{} bytes", out.len());
    }

    /// The standalone codecs the benchmarks call round-trip, including empty input.
    #[test]
    fn standalone_codecs_round_trip() {
        let f: Vec<f64> = (0..500).map(|i| (i as f64).sin()).collect();
        let i: Vec<i64> = (0..500).map(|x| x * 3 - 700).collect();
        let u: Vec<u64> = (0..500).map(|x| x * x).collect();
        for n in [0, 1, 2, 63, 64, 65, 500] {
            let mut out = Vec::new();
            gorilla_encode_f64(&f[..n], &mut out);
            assert_eq!(gorilla_decode_f64(&out, n).unwrap(), &f[..n]);
            out.clear();
            pco_encode_f64(&f[..n], &mut out);
            assert_eq!(pco_decode_f64(&out).unwrap(), &f[..n]);
            out.clear();
            gorilla_encode_i64(&i[..n], &mut out);
            assert_eq!(gorilla_decode_i64(&out, n).unwrap(), &i[..n]);
            out.clear();
            pco_encode_i64(&i[..n], &mut out);
            assert_eq!(pco_decode_i64(&out).unwrap(), &i[..n]);
            out.clear();
            gorilla_encode_u64(&u[..n], &mut out);
            assert_eq!(gorilla_decode_u64(&out, n).unwrap(), &u[..n]);
            out.clear();
            pco_encode_u64(&u[..n], &mut out);
            assert_eq!(pco_decode_u64(&out).unwrap(), &u[..n]);
            assert_eq!(pco_decode_exact::<u64>(&out, n).unwrap(), &u[..n]);
        }
    }

    /// A Pco stream holding a different count than the header promises is rejected.
    #[test]
    fn pco_count_mismatch_is_corrupt() {
        let mut out = Vec::new();
        pco_encode_f64(&[1.0, 2.0, 3.0], &mut out);
        assert!(pco_decode_exact::<f64>(&out, 2).is_err());
        assert!(pco_decode_exact::<f64>(&out, 4).is_err());
        assert!(pco_decode_exact::<i64>(&out, 3).is_err());
    }

    /// `decode_block_columns` returns exactly the requested columns, in block order, ignoring
    /// names the block lacks.
    #[test]
    fn decode_block_columns_returns_exactly_requested() {
        let block = all_types(100);
        let bytes = encode_block(&block, NumericCodec::Pco);
        let got = decode_block_columns(&bytes, &["s", "missing", "f", "s"]).unwrap();
        assert_eq!(got.timestamps, block.timestamps);
        let names: Vec<&str> = got.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["f", "s"]);
        assert_eq!(got.columns[0], block.columns[0]);
        assert_eq!(got.columns[1], block.columns[4]);
        assert!(decode_block_columns(&bytes, &[]).unwrap().columns.is_empty());
    }

    /// `block_summary` reports the first and last timestamp and the row count.
    #[test]
    fn block_summary_reads_header() {
        let bytes = encode_block(&all_types(77), NumericCodec::Gorilla);
        assert_eq!(block_summary(&bytes).unwrap(), (T0, T0 + 76 * TEN_S, 77));
    }

    /// Pco is used where it wins, Gorilla below the threshold, where it is smaller, or when asked.
    #[test]
    fn codec_choice_per_column() {
        let rows = 1000;
        let block = Block {
            timestamps: ts(rows),
            columns: vec![
                // A random-walk decimal series: Pco's home turf.
                col(
                    "walk",
                    None,
                    ColumnValues::F64(
                        (0..rows)
                            .scan(4_500_000i64, |s, i| {
                                *s += (i as i64 * 7919 % 1001) - 500;
                                Some(*s as f64 / 100_000.0)
                            })
                            .collect(),
                    ),
                ),
                // A status-like integer walk over 0..=5 in 100 rows: Pco's metadata outweighs
                // its coding gain, so the smaller Gorilla output is kept.
                col(
                    "status",
                    Some((0..rows).map(|i| i < 100).collect()),
                    ColumnValues::I64((0..100).map(|i| (i * i / 7) % 6).collect()),
                ),
            ],
        };
        let tags = codec_tags(&encode_block(&block, NumericCodec::Pco));
        assert_eq!(tags[0], ("walk".to_owned(), CODEC_PCO));
        assert_eq!(tags[1], ("status".to_owned(), CODEC_GORILLA));
        let small = all_types(PCO_MIN_VALUES - 1);
        for (name, tag) in codec_tags(&encode_block(&small, NumericCodec::Pco)).iter().take(3) {
            assert_eq!(*tag, CODEC_GORILLA, "{name}");
        }
        for (name, tag) in codec_tags(&encode_block(&block, NumericCodec::Gorilla)) {
            assert_eq!(tag, CODEC_GORILLA, "{name}");
        }
        round_trip(&block, NumericCodec::Pco);
    }

    /// Damage is reported: a flipped byte fails the checksum, truncation and junk fail parsing.
    #[test]
    fn corruption_is_detected() {
        let bytes = encode_block(&all_types(50), NumericCodec::Pco);
        let mut flipped = bytes.clone();
        flipped[30] ^= 0x10;
        assert!(matches!(decode_block(&flipped), Err(CodecError::Checksum { .. })));
        for len in [0, 1, 10, bytes.len() - 1] {
            assert!(decode_block(&bytes[..len]).is_err());
            assert!(block_summary(&bytes[..len]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_block(&longer).is_err());
    }

    /// Unsorted timestamps are a caller bug.
    #[test]
    #[should_panic(expected = "strictly ascending")]
    fn encode_rejects_unsorted_timestamps() {
        encode_block(&Block { timestamps: vec![2, 1], columns: Vec::new() }, NumericCodec::Pco);
    }

    /// Equal timestamps are a caller bug (blocks are de-duplicated).
    #[test]
    #[should_panic(expected = "strictly ascending")]
    fn encode_rejects_duplicate_timestamps() {
        encode_block(&Block { timestamps: vec![1, 1], columns: Vec::new() }, NumericCodec::Pco);
    }

    /// A present count that disagrees with the values is a caller bug.
    #[test]
    #[should_panic(expected = "present count")]
    fn encode_rejects_present_count_mismatch() {
        encode_block(
            &Block {
                timestamps: ts(2),
                columns: vec![col("x", Some(vec![true, false]), ColumnValues::I64(vec![1, 2]))],
            },
            NumericCodec::Pco,
        );
    }

    /// A bitmap of the wrong length is a caller bug.
    #[test]
    #[should_panic(expected = "present has")]
    fn encode_rejects_bitmap_length_mismatch() {
        encode_block(
            &Block { timestamps: ts(2), columns: vec![col("x", Some(vec![true]), ColumnValues::I64(vec![1]))] },
            NumericCodec::Pco,
        );
    }

    /// Fully present columns must hold one value per row.
    #[test]
    #[should_panic(expected = "values for")]
    fn encode_rejects_short_full_column() {
        encode_block(
            &Block { timestamps: ts(2), columns: vec![col("x", None, ColumnValues::I64(vec![1]))] },
            NumericCodec::Pco,
        );
    }

    /// Column names must be unique.
    #[test]
    #[should_panic(expected = "duplicate column")]
    fn encode_rejects_duplicate_names() {
        let c = col("x", None, ColumnValues::Bool(vec![true]));
        encode_block(&Block { timestamps: ts(1), columns: vec![c.clone(), c] }, NumericCodec::Pco);
    }

    // ---- property tests ----------------------------------------------------------------------

    fn arb_f64() -> BoxedStrategy<f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            (-10_000_000i64..10_000_000).prop_map(|v| v as f64 / 1000.0),
            (0i64..100).prop_map(|v| v as f64),
        ]
        .boxed()
    }

    fn arb_values(n: usize) -> BoxedStrategy<ColumnValues> {
        prop_oneof![
            vec(arb_f64(), n).prop_map(ColumnValues::F64),
            // A walk, so Pco's delta path sees realistic input too.
            (any::<f64>(), vec(-3i32..=3, n)).prop_map(|(s, steps)| ColumnValues::F64(
                steps
                    .iter()
                    .scan(s, |x, d| {
                        *x += f64::from(*d) * 0.01;
                        Some(*x)
                    })
                    .collect()
            )),
            vec(any::<i64>(), n).prop_map(ColumnValues::I64),
            vec(-5i64..5, n).prop_map(ColumnValues::I64),
            vec(any::<u64>(), n).prop_map(ColumnValues::U64),
            vec(0u64..1000, n).prop_map(ColumnValues::U64),
            vec(any::<bool>(), n).prop_map(ColumnValues::Bool),
            vec("\\PC{0,6}", n).prop_map(ColumnValues::Str),
        ]
        .boxed()
    }

    fn arb_column(rows: usize) -> BoxedStrategy<(Option<Vec<bool>>, ColumnValues)> {
        prop_oneof![
            Just(None),
            vec(any::<bool>(), rows).prop_map(Some),
            vec(prop::bool::weighted(0.9), rows).prop_map(Some),
        ]
        .prop_flat_map(move |present| {
            let n = present.as_ref().map_or(rows, |p| p.iter().filter(|&&x| x).count());
            (Just(present), arb_values(n))
        })
        .boxed()
    }

    fn arb_timestamps() -> impl Strategy<Value = Vec<i64>> {
        let gap = prop_oneof![
            8 => 1i64..100,
            1 => Just(TEN_S),
            1 => 1i64..=i64::MAX / 64,
        ];
        (any::<i64>(), vec(gap, 0..400)).prop_map(|(start, gaps)| {
            let mut out = Vec::with_capacity(gaps.len());
            let mut t = start;
            for g in gaps {
                out.push(t);
                match t.checked_add(g) {
                    Some(next) => t = next,
                    None => break,
                }
            }
            out
        })
    }

    fn arb_block() -> impl Strategy<Value = Block> {
        arb_timestamps().prop_flat_map(|timestamps| {
            let rows = timestamps.len();
            vec(arb_column(rows), 0..5).prop_map(move |cols| Block {
                timestamps: timestamps.clone(),
                columns: cols
                    .into_iter()
                    .enumerate()
                    .map(|(i, (present, values))| col(&format!("c{i}"), present, values))
                    .collect(),
            })
        })
    }

    fn codec_of(gorilla: bool) -> NumericCodec {
        if gorilla {
            NumericCodec::Gorilla
        } else {
            NumericCodec::Pco
        }
    }

    /// Seals `body` with a valid checksum so decoding gets past it and into the parsers.
    fn seal(mut body: Vec<u8>) -> Vec<u8> {
        let sum = xxhash_rust::xxh3::xxh3_64(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        body
    }

    proptest! {
        /// Random blocks (every type, absent rows, extreme values and gaps) round-trip under
        /// both codecs, and the summary and column projection agree with them.
        #[test]
        fn random_blocks_round_trip(block in arb_block(), gorilla in any::<bool>()) {
            let bytes = encode_block(&block, codec_of(gorilla));
            let back = decode_block(&bytes).unwrap();
            prop_assert!(same(&normalized(&block), &back));
            let (first, last, rows) = block_summary(&bytes).unwrap();
            prop_assert_eq!(rows as usize, block.timestamps.len());
            prop_assert_eq!(first, block.timestamps.first().copied().unwrap_or(0));
            prop_assert_eq!(last, block.timestamps.last().copied().unwrap_or(0));
            let one = decode_block_columns(&bytes, &["c1"]).unwrap();
            prop_assert_eq!(one.columns.len(), usize::from(block.columns.len() > 1));
        }

        /// Arbitrary bytes never make `decode_block` or the standalone decoders panic.
        #[test]
        fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..600), n in 0usize..5000) {
            let _ = decode_block(&bytes);
            let _ = block_summary(&bytes);
            let _ = decode_block_columns(&bytes, &["c0"]);
            let _ = decode_timestamps(&bytes, n);
            let _ = gorilla_decode_f64(&bytes, n);
            let _ = gorilla_decode_u64(&bytes, n);
            let _ = pco_decode_f64(&bytes);
            let _ = pco_decode_i64(&bytes);
        }

        /// Damaged Pco, Gorilla and delta streams return errors or values, never a panic.
        #[test]
        fn damaged_streams_never_panic(
            values in vec(arb_f64(), 1..300),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let ints: Vec<i64> = values.iter().map(|v| v.to_bits() as i64 >> 40).collect();
            let mut streams = Vec::new();
            let mut out = Vec::new();
            pco_encode_f64(&values, &mut out);
            streams.push(std::mem::take(&mut out));
            gorilla_encode_f64(&values, &mut out);
            streams.push(std::mem::take(&mut out));
            encode_timestamps(&ints, &mut out);
            streams.push(out);
            for mut s in streams {
                for (at, v) in &edits {
                    let i = at.index(s.len());
                    s[i] = *v;
                }
                let _ = pco_decode_f64(&s);
                let _ = pco_decode_exact::<f64>(&s, values.len());
                let _ = gorilla_decode_f64(&s, values.len());
                let _ = decode_timestamps(&s, values.len());
            }
        }

        /// Garbage behind a valid header and checksum reaches the parsers and still never
        /// panics.
        #[test]
        fn sealed_garbage_never_panics(rows in 0u32..5000, tail in vec(any::<u8>(), 0..600)) {
            let mut body = vec![MAGIC, FORMAT_VERSION];
            body.extend_from_slice(&rows.to_le_bytes());
            body.extend_from_slice(&[0; 16]);
            body.extend_from_slice(&tail);
            let _ = decode_block(&seal(body));
        }

        /// Flipping any bits of any byte of a valid block is reported as an error: never a
        /// panic, never a silently different block.
        #[test]
        fn flipped_byte_is_rejected(
            block in arb_block(),
            gorilla in any::<bool>(),
            at in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let mut bytes = encode_block(&block, codec_of(gorilla));
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
            prop_assert!(decode_block(&bytes).is_err());
        }

        /// Damaging a valid block and re-sealing its checksum drives every column decoder
        /// through corrupt input without a panic.
        #[test]
        fn resealed_damage_never_panics(
            block in arb_block(),
            gorilla in any::<bool>(),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_block(&block, codec_of(gorilla));
            let mut body = bytes[..bytes.len() - CHECKSUM_LEN].to_vec();
            for (at, v) in &edits {
                let i = at.index(body.len());
                body[i] = *v;
            }
            let _ = decode_block(&seal(body.clone()));
            let _ = decode_block_columns(&seal(body.clone()), &["c0"]);
            body.truncate(cut.index(body.len() + 1));
            let _ = decode_block(&seal(body));
        }
    }
}
