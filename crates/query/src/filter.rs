//! Field-value filters applied to blocks: which rows of a series pass every filter. The tests
//! of single values (and their typing rules) are `hotlake_types::filter`'s. Pure: no I/O.

pub use hotlake_types::filter::{CmpOp, FieldFilter, FieldTest, FilterOp, Operand};

use hotlake_engine::codec::{Block, Column, ColumnValues};

/// Clears `keep[row]` for the present rows (`present` `None`: every row) whose value fails.
fn keep_passing<T>(keep: &mut [bool], present: Option<&[bool]>, values: &[T], passes: impl Fn(&T) -> bool) {
    match present {
        None => {
            for (k, v) in keep.iter_mut().zip(values) {
                *k &= passes(v);
            }
        }
        Some(present) => {
            let mut values = values.iter();
            for (k, &here) in keep.iter_mut().zip(present) {
                // A row without the field fails.
                *k &= here && values.next().is_some_and(&passes);
            }
        }
    }
}

/// Which rows of `block` pass every filter, or `None` when all of them do.
fn passing_rows(block: &Block, filters: &[FieldFilter]) -> Option<Vec<bool>> {
    let rows = block.timestamps.len();
    let mut keep = vec![true; rows];
    for f in filters {
        let Some(col) = block.columns.iter().find(|c| c.name == f.field) else {
            // No row has the field: none passes.
            return Some(vec![false; rows]);
        };
        let present = col.present.as_deref();
        let t = &f.test;
        match &col.values {
            ColumnValues::F64(v) => keep_passing(&mut keep, present, v, |x| t.number(*x)),
            ColumnValues::I64(v) => keep_passing(&mut keep, present, v, |x| t.number(*x as f64)),
            ColumnValues::U64(v) => keep_passing(&mut keep, present, v, |x| t.number(*x as f64)),
            ColumnValues::Bool(v) => keep_passing(&mut keep, present, v, |x| t.boolean(*x)),
            ColumnValues::Str(v) => keep_passing(&mut keep, present, v, |x| t.string(x)),
        }
    }
    if keep.iter().all(|&k| k) {
        None
    } else {
        Some(keep)
    }
}

/// The values of the kept rows; `values` holds one entry per present row (`present` `None`:
/// every row).
fn select<T: Clone>(values: &[T], present: Option<&[bool]>, keep: &[bool]) -> Vec<T> {
    let Some(present) = present else {
        return values.iter().zip(keep).filter(|(_, &k)| k).map(|(v, _)| v.clone()).collect();
    };
    let mut out = Vec::new();
    let mut vi = 0;
    for (&p, &k) in present.iter().zip(keep) {
        if p {
            if k {
                out.push(values[vi].clone());
            }
            vi += 1;
        }
    }
    out
}

/// The rows of `block` that pass every filter (the block itself when all pass). Columns left
/// without any value are dropped.
pub fn apply(block: Block, filters: &[FieldFilter]) -> Block {
    if filters.is_empty() {
        return block;
    }
    let Some(keep) = passing_rows(&block, filters) else { return block };
    let timestamps: Vec<_> = block.timestamps.iter().zip(&keep).filter(|(_, &k)| k).map(|(&t, _)| t).collect();
    let mut columns = Vec::with_capacity(block.columns.len());
    for col in block.columns {
        let rows_present = col.present.as_deref();
        // Presence of the kept rows; `None` when all of them have the field.
        let present: Option<Vec<bool>> = rows_present
            .map(|p| p.iter().zip(&keep).filter(|(_, &k)| k).map(|(&p, _)| p).collect::<Vec<bool>>())
            .filter(|p| !p.iter().all(|&x| x));
        if present.as_ref().is_some_and(|p| !p.iter().any(|&x| x)) || timestamps.is_empty() {
            continue;
        }
        let values = match &col.values {
            ColumnValues::F64(v) => ColumnValues::F64(select(v, rows_present, &keep)),
            ColumnValues::I64(v) => ColumnValues::I64(select(v, rows_present, &keep)),
            ColumnValues::U64(v) => ColumnValues::U64(select(v, rows_present, &keep)),
            ColumnValues::Bool(v) => ColumnValues::Bool(select(v, rows_present, &keep)),
            ColumnValues::Str(v) => ColumnValues::Str(select(v, rows_present, &keep)),
        };
        columns.push(Column { name: col.name, present, values });
    }
    Block { timestamps, columns }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Block {
        Block {
            timestamps: vec![10, 20, 30, 40],
            columns: vec![
                Column {
                    name: "velocity".into(),
                    present: Some(vec![true, true, false, true]),
                    values: ColumnValues::F64(vec![0.5, 3.0, 7.0]),
                },
                Column { name: "fuel".into(), present: None, values: ColumnValues::F64(vec![1.0, 2.0, 3.0, 4.0]) },
                Column { name: "status".into(), present: None, values: ColumnValues::I64(vec![0, 2, 0, 5]) },
                Column {
                    name: "label".into(),
                    present: None,
                    values: ColumnValues::Str(vec!["a".into(), "b".into(), "c".into(), "d".into()]),
                },
            ],
        }
    }

    fn filter(field: &str, op: &str, value: f64) -> FieldFilter {
        FieldFilter::new(field, FilterOp::parse(op).unwrap(), Operand::Number(value)).unwrap()
    }

    fn text(field: &str, op: &str, operand: Operand) -> FieldFilter {
        FieldFilter::new(field, FilterOp::parse(op).unwrap(), operand).unwrap()
    }

    fn column<'a>(b: &'a Block, name: &str) -> &'a Column {
        b.columns.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn rows_without_the_field_fail_and_other_columns_follow_the_kept_rows() {
        let out = apply(block(), &[filter("velocity", ">", 1.0)]);
        // Row 30 has no velocity, row 10 fails the comparison.
        assert_eq!(out.timestamps, vec![20, 40]);
        assert_eq!(column(&out, "fuel").values, ColumnValues::F64(vec![2.0, 4.0]));
        assert_eq!(column(&out, "velocity").values, ColumnValues::F64(vec![3.0, 7.0]));
        assert_eq!(column(&out, "velocity").present, None);
        assert_eq!(column(&out, "status").values, ColumnValues::I64(vec![2, 5]));
    }

    #[test]
    fn filters_combine_with_and_and_integers_compare_as_floats() {
        let out = apply(block(), &[filter("status", ">=", 2.0), filter("fuel", "<", 4.0)]);
        assert_eq!(out.timestamps, vec![20]);
        let out = apply(block(), &[filter("status", "=", 0.0)]);
        assert_eq!(out.timestamps, vec![10, 30]);
        // Row 30 keeps its missing velocity as a missing value.
        assert_eq!(column(&out, "velocity").present, Some(vec![true, false]));
        assert_eq!(column(&out, "velocity").values, ColumnValues::F64(vec![0.5]));
    }

    #[test]
    fn strings_and_unknown_fields_never_pass_and_empty_columns_are_dropped() {
        assert!(apply(block(), &[filter("label", "!=", 0.0)]).timestamps.is_empty());
        let out = apply(block(), &[filter("nope", ">", 0.0)]);
        assert!(out.timestamps.is_empty());
        assert!(out.columns.is_empty());
        let all = apply(block(), &[filter("fuel", ">", 0.0)]);
        assert_eq!(all, block());
    }

    #[test]
    fn strings_and_booleans_filter_rows_of_their_own_type() {
        let mut b = block();
        b.columns.push(Column {
            name: "reboot".into(),
            present: Some(vec![true, false, true, true]),
            values: ColumnValues::Bool(vec![true, false, true]),
        });
        let out = apply(b.clone(), &[text("label", "in", Operand::List(vec!["b".into(), "d".into()]))]);
        assert_eq!(out.timestamps, vec![20, 40]);
        let out = apply(b.clone(), &[text("label", "!=", Operand::Str("a".into()))]);
        assert_eq!(out.timestamps, vec![20, 30, 40]);
        let out = apply(b.clone(), &[text("label", "=~", Operand::Str("^[ac]$".into()))]);
        assert_eq!(out.timestamps, vec![10, 30]);
        let out = apply(b.clone(), &[text("reboot", "=", Operand::Bool(true))]);
        assert_eq!(out.timestamps, vec![10, 40]);
        assert_eq!(column(&out, "reboot").values, ColumnValues::Bool(vec![true, true]));
        // Row 20 has no reboot value: `!=` does not keep it either.
        let out = apply(b.clone(), &[text("reboot", "!=", Operand::Bool(true))]);
        assert_eq!(out.timestamps, vec![30]);
        // Numbers see booleans as 0/1; strings never match a number.
        let out = apply(b.clone(), &[filter("reboot", ">", 0.5), text("label", "prefix", Operand::Str("d".into()))]);
        assert_eq!(out.timestamps, vec![40]);
        assert!(apply(b, &[text("fuel", "=", Operand::Str("1".into()))]).timestamps.is_empty());
    }

    #[test]
    fn operators_parse_and_nan_never_compares() {
        for (s, a, b, want) in
            [("<", 1.0, 2.0, true), ("<=", 2.0, 2.0, true), (">", 1.0, 2.0, false), ("<>", 1.0, 2.0, true)]
        {
            assert_eq!(filter("x", s, b).test.number(a), want, "{a} {s} {b}");
        }
        assert!(!CmpOp::Ne.holds(f64::NAN, 1.0));
    }
}
