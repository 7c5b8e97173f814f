//! Ingest: turns parsed points (line protocol or gRPC batches) into per-shard columnar batches.
//!
//! ```text
//!  body ──line_protocol::parse_body──► points ──BatchBuilder──► shard → ShardWrite (columnar)
//! ```
//!
//! A point either goes into its batch whole or is rejected whole with a reason; nothing of a
//! rejected point is kept.
#![warn(missing_docs, unreachable_pub)]

pub mod line_protocol;

use hotlake_engine::batch::{ColumnWrite, SeriesWrite, ShardWrite, Values};
use hotlake_storage::ShardId;
use hotlake_types::hash::FastMap;
use hotlake_types::model::{series_key, FieldValue, TimestampNs};
use hotlake_types::ring::Ring;

#[derive(Default)]
struct ShardBuilder {
    series: FastMap<String, usize>,
    writes: Vec<SeriesWrite>,
}

/// Groups points by shard and series into columnar batches.
pub struct BatchBuilder {
    ring: Ring,
    tenant: String,
    device_tag: String,
    shards: FastMap<ShardId, ShardBuilder>,
    points: usize,
    values: usize,
}

impl BatchBuilder {
    /// A builder for one request of `tenant`.
    pub fn new(ring: Ring, tenant: &str, device_tag: &str) -> Self {
        BatchBuilder {
            ring,
            tenant: tenant.to_string(),
            device_tag: device_tag.to_string(),
            shards: FastMap::default(),
            points: 0,
            values: 0,
        }
    }

    /// Points accepted so far.
    pub fn points(&self) -> usize {
        self.points
    }

    /// Field values accepted so far.
    pub fn values(&self) -> usize {
        self.values
    }

    /// Adds one point. `sorted_tags` must be sorted by key with unique keys. A field named twice
    /// keeps its last value. On error nothing of the point was added.
    pub fn add_point<K: AsRef<str>, V: AsRef<str>, F: AsRef<str>>(
        &mut self,
        measurement: &str,
        sorted_tags: &[(K, V)],
        fields: &[(F, FieldValue)],
        timestamp_ns: TimestampNs,
    ) -> Result<(), String> {
        if measurement.is_empty() {
            return Err("measurement is empty".into());
        }
        if fields.is_empty() {
            return Err("a point needs at least one field".into());
        }
        debug_assert!(sorted_tags.windows(2).all(|w| w[0].0.as_ref() < w[1].0.as_ref()));
        let key = series_key(measurement, sorted_tags);
        let device = hotlake_proto::routing::device_of(&self.device_tag, sorted_tags, &key).to_string();
        let shard = self.ring.shard_of(&self.tenant, &device);
        let sb = self.shards.entry(shard).or_default();
        let idx = match sb.series.get(&key) {
            Some(&i) => i,
            None => {
                sb.writes.push(SeriesWrite { key: key.clone(), device, timestamps: Vec::new(), columns: Vec::new() });
                sb.series.insert(key, sb.writes.len() - 1);
                sb.writes.len() - 1
            }
        };
        let sw = &mut sb.writes[idx];
        // Last occurrence of each field name wins.
        let mut unique: Vec<(&str, &FieldValue)> = Vec::with_capacity(fields.len());
        for (name, value) in fields.iter().rev() {
            if !unique.iter().any(|(n, _)| *n == name.as_ref()) {
                unique.push((name.as_ref(), value));
            }
        }
        // Check types against this batch before changing anything.
        for (name, value) in &unique {
            if let Some(col) = sw.columns.iter().find(|c| c.field == *name) {
                if col.values.field_type() != value.field_type() {
                    return Err(format!(
                        "field {:?} is {} earlier in this request but {} here",
                        name,
                        col.values.field_type().name(),
                        value.field_type().name()
                    ));
                }
            }
        }
        let row = sw.timestamps.len() as u32;
        sw.timestamps.push(timestamp_ns);
        for (name, value) in &unique {
            let col = match sw.columns.iter_mut().position(|c| c.field == *name) {
                Some(i) => &mut sw.columns[i],
                None => {
                    sw.columns.push(ColumnWrite {
                        field: name.to_string(),
                        absent_rows: (0..row).collect(),
                        values: Values::empty(value.field_type()),
                    });
                    sw.columns.last_mut().expect("just pushed")
                }
            };
            let pushed = col.values.push((*value).clone());
            debug_assert!(pushed, "type checked above");
        }
        let rows = row as usize + 1;
        for col in &mut sw.columns {
            if col.values.len() + col.absent_rows.len() < rows {
                col.absent_rows.push(row);
            }
        }
        self.points += 1;
        self.values += unique.len();
        Ok(())
    }

    /// The per-shard batches.
    pub fn finish(self) -> Vec<(ShardId, ShardWrite)> {
        let tenant = self.tenant;
        let mut out: Vec<(ShardId, ShardWrite)> = self
            .shards
            .into_iter()
            .map(|(s, b)| (s, ShardWrite { tenant: tenant.clone(), series: b.writes }))
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_become_columns_with_absent_rows_marked() {
        let mut b = BatchBuilder::new(Ring::new(1), "t", "device_id");
        let tags = [("device_id", "d1")];
        b.add_point("m", &tags, &[("a", FieldValue::F64(1.0))], 10).unwrap();
        b.add_point("m", &tags, &[("b", FieldValue::I64(2))], 20).unwrap();
        b.add_point("m", &tags, &[("a", FieldValue::F64(3.0)), ("b", FieldValue::I64(4))], 30).unwrap();
        let err = b.add_point("m", &tags, &[("a", FieldValue::I64(5))], 40).unwrap_err();
        assert!(err.contains("field \"a\""), "{err}");
        let batches = b.finish();
        assert_eq!(batches.len(), 1);
        let s = &batches[0].1.series[0];
        assert_eq!(s.timestamps, vec![10, 20, 30]);
        assert_eq!(s.device, "d1");
        let a = s.columns.iter().find(|c| c.field == "a").unwrap();
        assert_eq!(a.absent_rows, vec![1]);
        assert_eq!(a.values, Values::F64(vec![1.0, 3.0]));
        let bcol = s.columns.iter().find(|c| c.field == "b").unwrap();
        assert_eq!(bcol.absent_rows, vec![0]);
        assert_eq!(bcol.values, Values::I64(vec![2, 4]));
    }

    #[test]
    fn series_without_the_device_tag_route_by_series_key() {
        let mut b = BatchBuilder::new(Ring::new(64), "t", "device_id");
        b.add_point("m", &[("host", "a")], &[("v", FieldValue::F64(1.0))], 1).unwrap();
        let batches = b.finish();
        assert_eq!(batches[0].1.series[0].device, "m,host=a");
        assert_eq!(batches[0].0, Ring::new(64).shard_of("t", "m,host=a"));
    }
}
