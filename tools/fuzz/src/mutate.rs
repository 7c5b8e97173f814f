//! Mutations of inputs: the runner has no coverage feedback, so it starts from valid inputs of
//! each target and changes them the ways decoders are usually wrong about (flipped bits,
//! boundary bytes and lengths, cut, repeated and spliced ranges, tokens of the formats).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Tokens that mean something to one of the formats (line protocol, JSON, times, varints).
const TOKENS: &[&[u8]] = &[
    b",",
    b"=",
    b" ",
    b"\\",
    b"\"",
    b"\n",
    b"#",
    b"i",
    b"u",
    b"T",
    b"Z",
    b"+",
    b"-",
    b"e9999",
    b"NaN",
    b"inf",
    b"true",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"null",
    b"\"tenant\"",
    b"\"aggregates\"",
    b"\"fill\"",
    b"\xc3\xa9",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x00\x00\x00\x00\x00\x00\x00\x80",
    b"\x00",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"18446744073709551615",
];

/// A mutated copy of `base`, with `other` for splices; at most `max_len` bytes.
pub fn mutate(rng: &mut ChaCha8Rng, base: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = base.to_vec();
    // Mostly one change: several at once rarely leave an input any decoder takes.
    let rounds = if rng.gen_ratio(3, 4) { 1 } else { 2 + rng.gen_range(0..3) };
    for _ in 0..rounds {
        let len = out.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] = [0u8, 0xff, 0x7f, 0x80, b'0', b'9', rng.gen()][rng.gen_range(0..7)];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let j = (i + rng.gen_range(1..32)).min(len);
                out.drain(i..j);
            }
            4 if len > 0 => {
                let i = rng.gen_range(0..len);
                let j = (i + rng.gen_range(1..64)).min(len);
                let copy = out[i..j].to_vec();
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 => {
                let i = rng.gen_range(0..=len);
                let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                out.splice(i..i, token.iter().copied());
            }
            7 if len > 0 => out.truncate(rng.gen_range(0..len)),
            _ => {
                // A little-endian length or count somewhere set to a boundary value.
                if len >= 8 {
                    let i = rng.gen_range(0..len - 7);
                    let v: u64 = [0, 1, u32::MAX as u64, u64::MAX, 1 << 40, rng.gen()][rng.gen_range(0..6)];
                    out[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    out.truncate(max_len);
    out
}
