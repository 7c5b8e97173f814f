//! Series selection: which series of a shard match a measurement and tag predicates, from the
//! postings of the series index. Pure: no I/O.

use super::{TagOp, TagPredicate};
use hotlake_engine::index::SeriesIndex;

fn union_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

fn intersect_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn minus_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// Series ids (ascending) of `measurement` in `tenant` that satisfy every predicate.
pub fn select_series(index: &SeriesIndex, tenant: &str, measurement: &str, predicates: &[TagPredicate]) -> Vec<u32> {
    let all = index.measurement_series(tenant, measurement);
    let mut current: Vec<u32> = all.to_vec();
    for p in predicates {
        if current.is_empty() {
            break;
        }
        let values = index.tag_values(tenant, measurement, &p.key);
        // Series that have the tag at all, and those whose value passes `test`.
        let with_tag = || -> Vec<u32> {
            let mut acc: Vec<u32> = Vec::new();
            if let Some(v) = values {
                for ids in v.values() {
                    acc = union_sorted(&acc, ids);
                }
            }
            acc
        };
        let matching = |test: &dyn Fn(&str) -> bool| -> Vec<u32> {
            let mut acc: Vec<u32> = Vec::new();
            if let Some(v) = values {
                for (val, ids) in v {
                    if test(val) {
                        acc = union_sorted(&acc, ids);
                    }
                }
            }
            // A missing tag reads as the empty string.
            if test("") {
                acc = union_sorted(&acc, &minus_sorted(all, &with_tag()));
            }
            acc
        };
        let selected = match &p.op {
            TagOp::Eq(v) => matching(&|x| x == v),
            TagOp::Neq(v) => matching(&|x| x != v),
            TagOp::In(vs) => matching(&|x| vs.iter().any(|v| v == x)),
            TagOp::Regex(r) => matching(&|x| r.is_match(x)),
            TagOp::NotRegex(r) => matching(&|x| !r.is_match(x)),
        };
        current = intersect_sorted(&current, &selected);
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotlake_types::model::series_key;

    fn index() -> SeriesIndex {
        let mut idx = SeriesIndex::new();
        idx.get_or_create("t", &series_key("m", &[("fleet", "East"), ("name", "a")]), "a");
        idx.get_or_create("t", &series_key("m", &[("fleet", "West"), ("name", "b")]), "b");
        idx.get_or_create("t", &series_key("m", &[("name", "c")]), "c");
        idx.get_or_create("t", &series_key("other", &[("fleet", "East")]), "d");
        idx
    }

    fn pred(key: &str, op: TagOp) -> TagPredicate {
        TagPredicate { key: key.into(), op }
    }

    #[test]
    fn predicates_follow_influx_semantics_for_missing_tags() {
        let idx = index();
        assert_eq!(select_series(&idx, "t", "m", &[]), vec![0, 1, 2]);
        assert_eq!(select_series(&idx, "t", "m", &[pred("fleet", TagOp::Eq("East".into()))]), vec![0]);
        assert_eq!(select_series(&idx, "t", "m", &[pred("fleet", TagOp::Neq("East".into()))]), vec![1, 2]);
        assert_eq!(select_series(&idx, "t", "m", &[pred("fleet", TagOp::Eq(String::new()))]), vec![2]);
        assert_eq!(
            select_series(&idx, "t", "m", &[pred("fleet", TagOp::In(vec!["East".into(), "West".into()]))]),
            vec![0, 1]
        );
        let re = regex::Regex::new("^W").unwrap();
        assert_eq!(select_series(&idx, "t", "m", &[pred("fleet", TagOp::Regex(re.clone()))]), vec![1]);
        assert_eq!(select_series(&idx, "t", "m", &[pred("fleet", TagOp::NotRegex(re))]), vec![0, 2]);
        assert!(select_series(&idx, "other-tenant", "m", &[]).is_empty());
    }
}
