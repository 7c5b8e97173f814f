//! A digest of a shard's logical content: every series with its merged points. Two replicas
//! holding the same points have the same digest however their memtables were flushed.

use xxhash_rust::xxh3::Xxh3;

use super::codec::ColumnValues;
use super::read::read_series;
use super::shard::ShardData;
use hotlake_storage::StorageError;
use hotlake_types::model::TimestampNs;

/// Digest of every point in the shard.
pub fn shard_digest(shard: &ShardData) -> Result<u64, StorageError> {
    let view = shard.read_view();
    // By (tenant, key), not by series id: ids are local bookkeeping, the content is what must
    // agree.
    let mut series: Vec<(u32, String, String)> = {
        let inner = shard.read();
        inner.index.all().iter().enumerate().map(|(i, s)| (i as u32, s.tenant.to_string(), s.key.to_string())).collect()
    };
    series.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    let mut h = Xxh3::new();
    for (sid, tenant, key) in series {
        let mut block = read_series(shard, &view, sid, TimestampNs::MIN, TimestampNs::MAX, None)?;
        if block.timestamps.is_empty() {
            continue;
        }
        h.update(tenant.as_bytes());
        h.update(&[0]);
        h.update(key.as_bytes());
        h.update(&[0]);
        for t in &block.timestamps {
            h.update(&t.to_le_bytes());
        }
        block.columns.sort_by(|a, b| a.name.cmp(&b.name));
        for c in &block.columns {
            h.update(c.name.as_bytes());
            h.update(&[0]);
            if let Some(p) = &c.present {
                for &x in p {
                    h.update(&[x as u8]);
                }
            }
            match &c.values {
                ColumnValues::F64(v) => v.iter().for_each(|x| h.update(&x.to_bits().to_le_bytes())),
                ColumnValues::I64(v) => v.iter().for_each(|x| h.update(&x.to_le_bytes())),
                ColumnValues::U64(v) => v.iter().for_each(|x| h.update(&x.to_le_bytes())),
                ColumnValues::Bool(v) => v.iter().for_each(|x| h.update(&[*x as u8])),
                ColumnValues::Str(v) => v.iter().for_each(|x| {
                    h.update(&(x.len() as u64).to_le_bytes());
                    h.update(x.as_bytes());
                }),
            }
        }
    }
    Ok(h.digest())
}
