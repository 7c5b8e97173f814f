//! How a series finds its shard: the canonical series key and the ring hash. The node and the
//! client library both route with these functions, so they always agree.
//!
//! A series' device is the value of the cluster's device tag, or the canonical series key when
//! the series has no such tag. The device's shard is
//! `floor(xxh3_64(len(tenant) as u64 LE ‖ tenant ‖ device) × shard_count / 2^64)`: shards own
//! equal, contiguous ranges of the hash space.

use xxhash_rust::xxh3::xxh3_64;

/// The device of a series: the value of the cluster's `device_tag` among its tags, or its
/// canonical series key when it has no such tag. Node and client both route with this, so a
/// series' shard never depends on who computes it.
pub fn device_of<'a, K: AsRef<str>, V: AsRef<str>>(
    device_tag: &str,
    tags: &'a [(K, V)],
    series_key: &'a str,
) -> &'a str {
    tags.iter().find(|(k, _)| k.as_ref() == device_tag).map_or(series_key, |(_, v)| v.as_ref())
}

/// Hash of a device within a tenant. The tenant is length-prefixed so ("ab", "c") and
/// ("a", "bc") hash apart.
pub fn device_hash(tenant: &str, device: &str) -> u64 {
    let mut buf = Vec::with_capacity(8 + tenant.len() + device.len());
    buf.extend_from_slice(&(tenant.len() as u64).to_le_bytes());
    buf.extend_from_slice(tenant.as_bytes());
    buf.extend_from_slice(device.as_bytes());
    xxh3_64(&buf)
}

/// The shard (of `shard_count`) owning a hash.
pub fn shard_of_hash(hash: u64, shard_count: u32) -> u32 {
    ((hash as u128 * shard_count as u128) >> 64) as u32
}

/// Escapes a measurement name for the canonical series key (commas, spaces, backslashes).
pub fn escape_measurement(s: &str, out: &mut String) {
    escape(s, out, |c| matches!(c, ',' | ' ' | '\\'));
}

/// Escapes a tag key or value for the canonical series key (commas, equals signs, spaces,
/// backslashes).
pub fn escape_tag(s: &str, out: &mut String) {
    escape(s, out, |c| matches!(c, ',' | '=' | ' ' | '\\'));
}

fn escape(s: &str, out: &mut String, special: impl Fn(char) -> bool) {
    // Every special character is ASCII, so a byte scan finds them (this runs once per line
    // ingested); bytes of multi-byte characters are >= 0x80 and never match.
    if !s.bytes().any(|b| special(b as char)) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if special(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Builds the canonical series key from a measurement and tags sorted by key.
///
/// ```
/// use hotlake_proto::routing::series_key;
/// let key = series_key("cpu", &[("host", "a b"), ("region", "eu")]);
/// assert_eq!(key, "cpu,host=a\\ b,region=eu");
/// ```
pub fn series_key<K: AsRef<str>, V: AsRef<str>>(measurement: &str, sorted_tags: &[(K, V)]) -> String {
    let mut key = String::with_capacity(measurement.len() + sorted_tags.len() * 16);
    escape_measurement(measurement, &mut key);
    for (k, v) in sorted_tags {
        debug_assert!(!k.as_ref().is_empty());
        key.push(',');
        escape_tag(k.as_ref(), &mut key);
        key.push('=');
        escape_tag(v.as_ref(), &mut key);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_hash_space_evenly() {
        assert_eq!(shard_of_hash(0, 64), 0);
        assert_eq!(shard_of_hash(u64::MAX, 64), 63);
        assert_eq!(shard_of_hash(1 << 63, 2), 1);
        assert_ne!(device_hash("ab", "c"), device_hash("a", "bc"));
    }

    #[test]
    fn escaping_keeps_keys_unambiguous() {
        assert_eq!(series_key("a,b c", &[("k=1", "v,2")]), "a\\,b\\ c,k\\=1=v\\,2");
        assert_eq!(series_key::<&str, &str>("m=x", &[]), "m=x");
    }
}
