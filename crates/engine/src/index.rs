//! The series index of a shard: series key ↔ id, tag value → series postings, field names and
//! types, and the latest value of every field of every series (which answers `Last` without
//! reading history).
//!
//! Ids are assigned in apply order, so every replica assigns the same ids. The index is rebuilt
//! at start from the series records written by flushes, then the log above the flushed index is
//! re-applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::memtable::FieldId;
use hotlake_types::hash::FastMap;
use hotlake_types::model::{parse_series_key, FieldType, FieldValue, TimestampNs};

/// Latest value of one field of a series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastValue {
    /// Field id (interned in the shard).
    pub field: FieldId,
    /// Its timestamp.
    pub timestamp_ns: TimestampNs,
    /// Its value.
    pub value: FieldValue,
}

/// What the index knows about one series.
#[derive(Clone, Debug)]
pub struct SeriesInfo {
    /// Tenant owning the series.
    pub tenant: Arc<str>,
    /// Canonical series key.
    pub key: Arc<str>,
    /// Measurement (prefix of the key).
    pub measurement: Arc<str>,
    /// The device key.
    pub device: Arc<str>,
    /// Field types, fixed by the first write of each field.
    pub types: Vec<(FieldId, FieldType)>,
    /// Latest value per field.
    pub last: Vec<LastValue>,
}

impl SeriesInfo {
    /// The type of `field` in this series, if it was ever written.
    pub fn type_of(&self, field: FieldId) -> Option<FieldType> {
        self.types.iter().find(|(f, _)| *f == field).map(|(_, t)| *t)
    }

    /// Tags parsed from the key.
    pub fn tags(&self) -> Vec<(String, String)> {
        parse_series_key(&self.key).1
    }
}

/// A persisted field: name, type and latest value (if any).
pub type FieldRecord = (String, FieldType, Option<(TimestampNs, FieldValue)>);

/// The persisted form of a series (index space, written by flush).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesRecord {
    /// Tenant owning the series.
    pub tenant: String,
    /// Canonical series key.
    pub key: String,
    /// The device key.
    pub device: String,
    /// Field name, type and latest value (if any).
    pub fields: Vec<FieldRecord>,
}

#[derive(Debug, Default)]
struct MeasurementPostings {
    all: Vec<u32>,
    /// tag key → tag value → series ids (ascending).
    by_tag: FastMap<Arc<str>, BTreeMap<Arc<str>, Vec<u32>>>,
}

/// The series index of a shard.
#[derive(Debug, Default)]
pub struct SeriesIndex {
    /// tenant → series key → id.
    by_key: FastMap<Arc<str>, FastMap<Arc<str>, u32>>,
    series: Vec<SeriesInfo>,
    /// tenant → measurement → postings.
    postings: FastMap<Arc<str>, FastMap<Arc<str>, MeasurementPostings>>,
    field_names: Vec<Arc<str>>,
    field_ids: FastMap<Arc<str>, FieldId>,
    strings: FastMap<Arc<str>, ()>,
}

impl SeriesIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some((k, _)) = self.strings.get_key_value(s) {
            return k.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone(), ());
        a
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when there are no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The id the next new series gets.
    pub fn next_id(&self) -> u32 {
        self.series.len() as u32
    }

    /// Series of a tenant.
    pub fn tenant_series(&self, tenant: &str) -> usize {
        self.postings.get(tenant).map(|ms| ms.values().map(|p| p.all.len()).sum()).unwrap_or(0)
    }

    /// Looks up a series id.
    pub fn lookup(&self, tenant: &str, key: &str) -> Option<u32> {
        self.by_key.get(tenant)?.get(key).copied()
    }

    /// The series with `id`.
    pub fn get(&self, id: u32) -> &SeriesInfo {
        &self.series[id as usize]
    }

    /// All series infos, by id.
    pub fn all(&self) -> &[SeriesInfo] {
        &self.series
    }

    /// Interned id of a field name, creating it when new.
    pub fn field_id(&mut self, name: &str) -> FieldId {
        if let Some(&id) = self.field_ids.get(name) {
            return id;
        }
        let id = self.field_names.len() as FieldId;
        let a: Arc<str> = Arc::from(name);
        self.field_names.push(a.clone());
        self.field_ids.insert(a, id);
        id
    }

    /// Number of interned field names.
    pub fn field_count(&self) -> usize {
        self.field_names.len()
    }

    /// Id of a field name, if known.
    pub fn find_field(&self, name: &str) -> Option<FieldId> {
        self.field_ids.get(name).copied()
    }

    /// Name of a field id.
    pub fn field_name(&self, id: FieldId) -> &str {
        &self.field_names[id as usize]
    }

    /// Returns the id of the series, creating it (with the next id) when new.
    pub fn get_or_create(&mut self, tenant: &str, key: &str, device: &str) -> u32 {
        if let Some(id) = self.lookup(tenant, key) {
            return id;
        }
        let id = self.series.len() as u32;
        let tenant_a = self.intern(tenant);
        let key_a: Arc<str> = Arc::from(key);
        let (measurement, tags) = parse_series_key(key);
        let measurement_a = self.intern(&measurement);
        let device_a = self.intern(device);
        self.by_key.entry(tenant_a.clone()).or_default().insert(key_a.clone(), id);
        let tag_arcs: Vec<(Arc<str>, Arc<str>)> = tags.iter().map(|(k, v)| (self.intern(k), self.intern(v))).collect();
        let postings = self.postings.entry(tenant_a.clone()).or_default().entry(measurement_a.clone()).or_default();
        postings.all.push(id);
        for (k, v) in tag_arcs {
            postings.by_tag.entry(k).or_default().entry(v).or_default().push(id);
        }
        self.series.push(SeriesInfo {
            tenant: tenant_a,
            key: key_a,
            measurement: measurement_a,
            device: device_a,
            types: Vec::new(),
            last: Vec::new(),
        });
        id
    }

    /// Mutable access to a series.
    pub fn get_mut(&mut self, id: u32) -> &mut SeriesInfo {
        &mut self.series[id as usize]
    }

    /// Every series of a measurement (ascending ids).
    pub fn measurement_series(&self, tenant: &str, measurement: &str) -> &[u32] {
        self.postings.get(tenant).and_then(|m| m.get(measurement)).map(|p| &p.all[..]).unwrap_or(&[])
    }

    /// Tag values of `tag_key` in a measurement with their series, ascending by value.
    pub fn tag_values(&self, tenant: &str, measurement: &str, tag_key: &str) -> Option<&BTreeMap<Arc<str>, Vec<u32>>> {
        self.postings.get(tenant)?.get(measurement)?.by_tag.get(tag_key)
    }

    /// The record persisted for a series.
    pub fn record(&self, id: u32) -> SeriesRecord {
        let s = self.get(id);
        SeriesRecord {
            tenant: s.tenant.to_string(),
            key: s.key.to_string(),
            device: s.device.to_string(),
            fields: s
                .types
                .iter()
                .map(|(f, t)| {
                    let last = s.last.iter().find(|l| l.field == *f).map(|l| (l.timestamp_ns, l.value.clone()));
                    (self.field_name(*f).to_string(), *t, last)
                })
                .collect(),
        }
    }

    /// Restores a series from its record; ids must be restored in ascending order with no gap.
    pub fn restore(&mut self, id: u32, record: SeriesRecord) {
        assert_eq!(id, self.next_id(), "series records restored out of order");
        let created = self.get_or_create(&record.tenant, &record.key, &record.device);
        assert_eq!(created, id);
        for (name, ty, last) in record.fields {
            let f = self.field_id(&name);
            let s = &mut self.series[id as usize];
            s.types.push((f, ty));
            if let Some((ts, value)) = last {
                s.last.push(LastValue { field: f, timestamp_ns: ts, value });
            }
        }
    }
}
