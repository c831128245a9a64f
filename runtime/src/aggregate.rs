//! Built-in aggregate functions over JSON values, as accumulators that can be
//! updated one value at a time and merged (partial aggregation, session
//! windows that join).
//!
//! Semantics follow SQL (and Spark SQL's functions of the same names):
//! - `null` and absent values are skipped by every function but `count` without
//!   a field (`COUNT(*)`), which counts records;
//! - `count(field)` counts non-null values; `sum` and `avg` need numbers (a record
//!   with another type is refused before it reaches the window); `sum` stays an
//!   integer while every value is one and it fits in 64 bits;
//! - `min`/`max` order numbers numerically and strings by their UTF-8 bytes, and
//!   any number before any string;
//! - `first`/`last`: the value with the smallest / largest event time; among
//!   equal times, the smallest / largest value in the `min`/`max` order (so the
//!   result does not depend on the order records arrive in from partitions);
//! - `count_distinct`: exact, by the JSON text of each value (`1` and `1.0` are
//!   distinct, as their texts differ);
//! - `approx_count_distinct`: the same count estimated by a HyperLogLog sketch
//!   (crate `hyperloglog`) of 4096 one-byte registers: a relative standard error
//!   of 1.04/√4096 ≈ 1.6% (Spark's `approx_count_distinct` defaults to 5%). Sketches use one fixed seed, so they merge across partitions and
//!   give the same estimate from run to run.
//!
//! An empty aggregate (no non-null value) finishes as `null`, except the counts,
//! which finish as 0.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Records (without a field) or non-null values (with one).
    Count,
    /// Sum of the numbers.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean of the numbers.
    Avg,
    /// Value of the earliest event.
    First,
    /// Value of the latest event.
    Last,
    /// Number of distinct values (exact).
    CountDistinct,
    /// Number of distinct values, estimated (HyperLogLog).
    ApproxCountDistinct,
    /// A user-defined aggregate: a `sluice:plugin/aggregator` component
    /// (`plugin = "…"`), run by the window operator.
    Wasm,
}

/// The relative standard error of the sketches: 1.04/√m with m = 4096 registers
/// (Flajolet et al., 2007).
pub const APPROX_ERROR: f64 = 0.0163;
/// What to ask `hyperloglog` for to get m = 4096: it picks p = ⌈ln((1.04/e)²)⌉
/// (a natural logarithm), so e = 0.004 gives p = 12.
const APPROX_REQUEST: f64 = 0.004;
/// The sketches' seed: one for all, so that any two merge.
const APPROX_SEED: u128 = 0x736c_7569_6365_2d68_6c6c_2d73_6565_6421;

impl Op {
    /// The name used in configs and default output fields.
    pub fn name(self) -> &'static str {
        match self {
            Op::Count => "count",
            Op::Sum => "sum",
            Op::Min => "min",
            Op::Max => "max",
            Op::Avg => "avg",
            Op::First => "first",
            Op::Last => "last",
            Op::CountDistinct => "count_distinct",
            Op::ApproxCountDistinct => "approx_count_distinct",
            Op::Wasm => "wasm",
        }
    }

    /// Whether the function needs numbers.
    pub fn numeric(self) -> bool {
        matches!(self, Op::Sum | Op::Avg)
    }
}

/// The state of one aggregate over one window and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Acc {
    /// A count.
    Count(u64),
    /// An exact integer sum while it fits, else a float one.
    Sum {
        /// Integer sum, while every value was an integer (JSON integers are at
        /// most 64 bits; 128 bits hold 2^64 of them, so no intermediate result
        /// overflows).
        int: Option<i128>,
        /// Float sum of every value.
        float: f64,
        /// Values summed.
        n: u64,
    },
    /// Sum and count, for the mean.
    Avg {
        /// Sum of the values.
        sum: f64,
        /// Values.
        n: u64,
    },
    /// Smallest or largest value so far.
    Extreme {
        /// `true` for max.
        max: bool,
        /// The value, if any.
        value: Option<Value>,
    },
    /// Value at the earliest or latest event time.
    Edge {
        /// `true` for last.
        last: bool,
        /// (event time, value), if any.
        at: Option<(i64, Value)>,
    },
    /// The distinct values' JSON texts.
    Distinct(BTreeSet<String>),
    /// A HyperLogLog sketch of the values' JSON texts.
    Sketch(Box<hyperloglog::HyperLogLog>),
    /// A user-defined aggregate's accumulator: bytes only its plugin reads.
    /// The window operator updates, merges and finishes it through the plugin.
    Wasm(Vec<u8>),
}

/// Where a value stands in the order of `min`/`max`: numbers, then strings,
/// then anything else by its JSON text.
fn order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            _ => 2,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| a.to_string().cmp(&b.to_string())),
    }
}

/// A JSON integer (i64 or u64) as i128.
fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn compare_numbers(x: &Number, y: &Number) -> Ordering {
    match (integer(x), integer(y)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => {
            let (a, b) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    }
}

impl Acc {
    /// The empty accumulator of `op`.
    pub fn new(op: Op) -> Self {
        match op {
            Op::Count => Acc::Count(0),
            Op::Sum => Acc::Sum {
                int: Some(0i128),
                float: 0.0,
                n: 0,
            },
            Op::Avg => Acc::Avg { sum: 0.0, n: 0 },
            Op::Min | Op::Max => Acc::Extreme {
                max: op == Op::Max,
                value: None,
            },
            Op::First | Op::Last => Acc::Edge {
                last: op == Op::Last,
                at: None,
            },
            Op::CountDistinct => Acc::Distinct(BTreeSet::new()),
            Op::ApproxCountDistinct => Acc::Sketch(Box::new(
                hyperloglog::HyperLogLog::new_deterministic(APPROX_REQUEST, APPROX_SEED),
            )),
            Op::Wasm => Acc::Wasm(Vec::new()),
        }
    }

    /// Adds one record's value (`None`: no field configured, i.e. `count(*)`;
    /// `Some(Null)`: skipped) at event time `ts`.
    pub fn update(&mut self, value: Option<&Value>, ts: i64) {
        if let Acc::Count(n) = self {
            if !matches!(value, Some(Value::Null)) {
                *n += 1;
            }
            return;
        }
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return;
        };
        match self {
            Acc::Count(_) => {}
            Acc::Sum { int, float, n } => {
                if let Value::Number(num) = value {
                    *float += num.as_f64().unwrap_or(0.0);
                    *int = match (*int, integer(num)) {
                        (Some(a), Some(b)) => a.checked_add(b),
                        _ => None,
                    };
                    *n += 1;
                }
            }
            Acc::Avg { sum, n } => {
                if let Value::Number(num) = value {
                    *sum += num.as_f64().unwrap_or(0.0);
                    *n += 1;
                }
            }
            Acc::Extreme { max, value: best } => {
                if extreme_better(*max, best.as_ref(), value) {
                    *best = Some(value.clone());
                }
            }
            Acc::Edge { last, at } => {
                if edge_better(*last, at.as_ref(), ts, value) {
                    *at = Some((ts, value.clone()));
                }
            }
            Acc::Distinct(set) => {
                set.insert(value.to_string());
            }
            Acc::Sketch(hll) => hll.insert(&value.to_string()),
            Acc::Wasm(_) => {} // through the plugin, a batch at a time
        }
    }

    /// Folds `other` (of the same function) into this one. Associative and
    /// commutative.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                Acc::Sum { int, float, n },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    n: n2,
                },
            ) => {
                *float += f2;
                *int = match (*int, i2) {
                    (Some(a), Some(b)) => a.checked_add(*b),
                    _ => None,
                };
                *n += n2;
            }
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Extreme { max, value }, Acc::Extreme { value: Some(v), .. })
                if extreme_better(*max, value.as_ref(), v) =>
            {
                *value = Some(v.clone());
            }
            (
                Acc::Edge { last, at },
                Acc::Edge {
                    at: Some((t2, v2)), ..
                },
            ) if edge_better(*last, at.as_ref(), *t2, v2) => {
                *at = Some((*t2, v2.clone()));
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b.iter().cloned()),
            (Acc::Sketch(a), Acc::Sketch(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The result.
    pub fn finish(&self) -> Value {
        match self {
            Acc::Count(n) => Value::from(*n),
            Acc::Sum { n: 0, .. } => Value::Null,
            Acc::Sum {
                int: Some(i),
                float,
                ..
            } => i64::try_from(*i)
                .map(Value::from)
                .or_else(|_| u64::try_from(*i).map(Value::from))
                .unwrap_or_else(|_| float_value(*float)),
            Acc::Sum { float, .. } => float_value(*float),
            Acc::Avg { n: 0, .. } => Value::Null,
            Acc::Avg { sum, n } => float_value(sum / *n as f64),
            Acc::Extreme { value, .. } => value.clone().unwrap_or(Value::Null),
            Acc::Edge { at, .. } => at.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
            Acc::Distinct(set) => Value::from(set.len() as u64),
            Acc::Sketch(hll) => Value::from(hll.len().round() as u64),
            Acc::Wasm(_) => Value::Null, // through the plugin
        }
    }
}

/// Whether `value` beats `current` for `min` (or, with `max`, `max`).
fn extreme_better(max: bool, current: Option<&Value>, value: &Value) -> bool {
    match current {
        None => true,
        Some(b) => {
            let o = order(value, b);
            if max {
                o == Ordering::Greater
            } else {
                o == Ordering::Less
            }
        }
    }
}

/// Whether (`ts`, `value`) beats `current` for `first` (or `last`).
fn edge_better(last: bool, current: Option<&(i64, Value)>, ts: i64, value: &Value) -> bool {
    match current {
        None => true,
        Some((t, v)) => {
            let o = ts.cmp(t).then_with(|| order(value, v));
            if last {
                o == Ordering::Greater
            } else {
                o == Ordering::Less
            }
        }
    }
}

fn float_value(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPS: [Op; 9] = [
        Op::Count,
        Op::Sum,
        Op::Min,
        Op::Max,
        Op::Avg,
        Op::First,
        Op::Last,
        Op::CountDistinct,
        Op::ApproxCountDistinct,
    ];

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            (-1000i64..1000).prop_map(Value::from),
            "[a-d]{0,2}".prop_map(Value::from),
        ]
    }

    fn fold(op: Op, values: &[(i64, Value)]) -> Acc {
        let mut acc = Acc::new(op);
        for (ts, v) in values {
            acc.update(Some(v), *ts);
        }
        acc
    }

    proptest! {
        /// Splitting the input anywhere and merging the parts gives what one pass
        /// gives: merge is associative with update (partial aggregation is safe).
        #[test]
        fn merge_of_parts_equals_one_pass(
            values in proptest::collection::vec((0i64..50, value()), 0..40),
            cut1 in 0usize..40, cut2 in 0usize..40,
        ) {
            let (a, b) = (cut1.min(values.len()), cut2.min(values.len()));
            let (lo, hi) = (a.min(b), a.max(b));
            for op in OPS {
                let whole = fold(op, &values);
                let (p1, p2, p3) = (fold(op, &values[..lo]), fold(op, &values[lo..hi]), fold(op, &values[hi..]));
                // (p1 ⊕ p2) ⊕ p3 and p1 ⊕ (p2 ⊕ p3)
                let mut left = p1.clone();
                left.merge(&p2);
                left.merge(&p3);
                let mut right23 = p2.clone();
                right23.merge(&p3);
                let mut right = p1.clone();
                right.merge(&right23);
                prop_assert_eq!(left.finish(), whole.finish(), "{:?}", op);
                prop_assert_eq!(right.finish(), whole.finish(), "{:?}", op);
            }
        }
    }

    #[test]
    fn approx_count_distinct_is_within_a_few_percent_and_merges() {
        let registers = serde_json::to_value(Acc::new(Op::ApproxCountDistinct)).unwrap()["Sketch"]
            ["M"]
            .as_array()
            .map(Vec::len);
        assert_eq!(registers, Some(4096));
        for n in [10u64, 1_000, 100_000] {
            let mut whole = Acc::new(Op::ApproxCountDistinct);
            let mut parts = [
                Acc::new(Op::ApproxCountDistinct),
                Acc::new(Op::ApproxCountDistinct),
            ];
            for i in 0..n {
                let v = Value::from(format!("user-{i}"));
                // Every value twice: duplicates do not count.
                whole.update(Some(&v), 0);
                whole.update(Some(&v), 0);
                parts[(i % 2) as usize].update(Some(&v), 0);
            }
            let [mut a, b] = parts;
            a.merge(&b);
            let est = whole.finish().as_u64().unwrap() as f64;
            assert_eq!(a.finish(), whole.finish(), "merge equals one pass");
            // 3 standard errors.
            assert!(
                (est - n as f64).abs() <= 3.0 * APPROX_ERROR * n as f64 + 1.0,
                "{est} for {n}"
            );
        }
    }

    #[test]
    fn integers_stay_exact_past_i64() {
        let big = |vals: &[Value], op| {
            let mut acc = Acc::new(op);
            for v in vals {
                acc.update(Some(v), 0);
            }
            acc.finish()
        };
        let vals = [Value::from(i64::MAX), Value::from(1), Value::from(-1)];
        assert_eq!(
            big(&vals, Op::Sum),
            Value::from(i64::MAX),
            "no intermediate overflow"
        );
        let vals = [Value::from(u64::MAX), Value::from(u64::MAX - 1)];
        assert_eq!(big(&vals, Op::Min), Value::from(u64::MAX - 1));
        assert_eq!(big(&vals, Op::Max), Value::from(u64::MAX));
        let vals = [Value::from(u64::MAX / 2), Value::from(u64::MAX / 2)];
        assert_eq!(big(&vals, Op::Sum), Value::from(u64::MAX - 1));
    }

    #[test]
    fn sql_semantics() {
        let vals: Vec<(i64, Value)> = vec![
            (3, Value::from(4)),
            (1, Value::Null),
            (2, Value::from(10)),
            (5, Value::from(1)),
        ];
        let f = |op| fold(op, &vals).finish();
        assert_eq!(f(Op::Count), Value::from(3)); // count(field) skips null
        assert_eq!(f(Op::Sum), Value::from(15));
        assert_eq!(f(Op::Avg), serde_json::json!(5.0));
        assert_eq!(f(Op::Min), Value::from(1));
        assert_eq!(f(Op::Max), Value::from(10));
        assert_eq!(f(Op::First), Value::from(10)); // ts 2 (ts 1 is null)
        assert_eq!(f(Op::Last), Value::from(1));
        assert_eq!(f(Op::CountDistinct), Value::from(3));
        let mut star = Acc::new(Op::Count);
        star.update(None, 0);
        star.update(None, 0);
        assert_eq!(star.finish(), Value::from(2));
        assert_eq!(Acc::new(Op::Avg).finish(), Value::Null);
        assert_eq!(Acc::new(Op::Sum).finish(), Value::Null);
        let mut mixed = Acc::new(Op::Sum);
        mixed.update(Some(&serde_json::json!(1)), 0);
        mixed.update(Some(&serde_json::json!(0.5)), 0);
        assert_eq!(mixed.finish(), serde_json::json!(1.5));
    }
}
