//! Field-value filters (`WHERE velocity > 1`): which rows of a series pass comparisons on the
//! values of their fields. Pure: no I/O.
//!
//! A row passes when every filter's field has a numeric value in that row and the comparison
//! holds. A row without the field, or with a string or boolean value in it, fails, as in
//! InfluxQL. Integers are compared as `f64`.

use serde::{Deserialize, Serialize};

use hotlake_engine::codec::{Block, Column, ColumnValues};
use hotlake_types::error::{Error, Result};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
    /// `!=`
    Ne,
}

impl CmpOp {
    /// Parses `<`, `<=`, `>`, `>=`, `=` (or `==`) and `!=` (or `<>`).
    pub fn parse(s: &str) -> Result<CmpOp> {
        Ok(match s {
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            "=" | "==" => CmpOp::Eq,
            "!=" | "<>" => CmpOp::Ne,
            other => return Err(Error::invalid(format!("unknown comparison {other:?}: use <, <=, >, >=, = or !="))),
        })
    }

    /// `a <op> b`; false whenever either side is NaN.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b && !a.is_nan() && !b.is_nan(),
        }
    }
}

/// A comparison of one field's value with a constant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldFilter {
    /// The field compared.
    pub field: String,
    /// The comparison.
    pub op: CmpOp,
    /// The constant on the right-hand side.
    pub value: f64,
}

impl FieldFilter {
    /// Checks the filter's own rules.
    pub fn validate(&self) -> Result<()> {
        if self.field.is_empty() {
            return Err(Error::invalid("a field filter needs a field name"));
        }
        if self.value.is_nan() {
            return Err(Error::invalid(format!("field filter on {:?} compares with NaN", self.field)));
        }
        Ok(())
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
        let mut vi = 0;
        for (row, k) in keep.iter_mut().enumerate() {
            if col.present.as_ref().is_some_and(|p| !p[row]) {
                *k = false;
                continue;
            }
            let v = match &col.values {
                ColumnValues::F64(v) => Some(v[vi]),
                ColumnValues::I64(v) => Some(v[vi] as f64),
                ColumnValues::U64(v) => Some(v[vi] as f64),
                ColumnValues::Bool(_) | ColumnValues::Str(_) => None,
            };
            vi += 1;
            if !v.is_some_and(|v| f.op.holds(v, f.value)) {
                *k = false;
            }
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
        FieldFilter { field: field.into(), op: CmpOp::parse(op).unwrap(), value }
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
    fn operators_parse_and_nan_never_compares() {
        for (s, a, b, want) in
            [("<", 1.0, 2.0, true), ("<=", 2.0, 2.0, true), (">", 1.0, 2.0, false), ("<>", 1.0, 2.0, true)]
        {
            assert_eq!(CmpOp::parse(s).unwrap().holds(a, b), want, "{a} {s} {b}");
        }
        assert!(CmpOp::parse("~").is_err());
        assert!(!CmpOp::Ne.holds(f64::NAN, 1.0));
        assert!(FieldFilter { field: "x".into(), op: CmpOp::Lt, value: f64::NAN }.validate().is_err());
    }
}
