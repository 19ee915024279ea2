//! `earliest_value(value, start_time, duration_ns[, span_id])`: per group, the value of the row
//! that sorts first by start time, then by the longest duration, then (given) by the smallest
//! span id; with `FILTER (WHERE parent_span_id IS NULL)` a trace's root span. It is
//! `first_value(value ORDER BY start_time, duration_ns DESC, span_id)` kept as two i64 and one
//! string per group: DataFusion's ordered `first_value` keeps each group's ordering as
//! `ScalarValue`s and looks at every group on every batch, a quarter of the `slow` rule's time
//! on a 1M-span store (BENCHMARKS.md, 2026-12-05).
//!
//! Without `span_id` the rows that tie on start and duration tie on every value those two
//! determine (start, end, duration), so the root's duration is exact without the span ids:
//! reading that column (unique, the largest the `slow` rule touched) for every span only to
//! break ties was a third of the rule's CPU (BENCHMARKS.md, 2026-12-07).
//!
//! Values are strings (returned as `Utf8`) or 64-bit integers and timestamps (returned as
//! their own type). A group without a row (every row filtered out) is null.

use std::cmp::Reverse;
use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

const NAME: &str = "earliest_value";

/// The UDAF, to register on a session.
pub fn earliest_value_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(EarliestValue {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct EarliestValue {
    signature: Signature,
}

/// What `value` is kept as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
}

fn kind_of(t: &DataType) -> Result<Kind> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(Kind::Text)
        }
        DataType::Int64 | DataType::Timestamp(..) => Ok(Kind::Int),
        other => exec_err!(
            "{NAME}: values of type {other} are not supported (strings, Int64, timestamps)"
        ),
    }
}

fn returned(t: &DataType) -> Result<DataType> {
    Ok(match kind_of(t)? {
        Kind::Text => DataType::Utf8,
        Kind::Int => t.clone(),
    })
}

impl AggregateUDFImpl for EarliestValue {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let (value, start, duration, span_id) = match args {
            [v, s, d] => (v, s, d, None),
            [v, s, d, id] => (v, s, d, Some(id)),
            _ => {
                return exec_err!(
                    "{NAME}(value, start_time, duration_ns[, span_id]) takes 3 or 4 arguments"
                );
            }
        };
        if kind_of(start)? != Kind::Int {
            return exec_err!("{NAME}: start_time must be a timestamp, not {start}");
        }
        if kind_of(duration)? != Kind::Int {
            return exec_err!("{NAME}: duration_ns must be an integer, not {duration}");
        }
        if let Some(id) = span_id
            && kind_of(id)? != Kind::Text
        {
            return exec_err!("{NAME}: span_id must be a string, not {id}");
        }
        returned(value)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let field = |part: &str, t: DataType| {
            Arc::new(Field::new(format!("{}[{part}]", args.name), t, true))
        };
        Ok(vec![
            field("value", args.return_type().clone()),
            field("start", DataType::Int64),
            field("duration", DataType::Int64),
            field("span_id", DataType::Utf8),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Earliest::new(
            args.return_type(),
            args.exprs.len() == 4,
        )?)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Earliest::new(
            args.return_type(),
            args.exprs.len() == 4,
        )?))
    }
}

/// Kept values, one per group.
#[derive(Debug)]
enum Values {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

/// An input column of values.
enum Input {
    Text(StringArray),
    Int(Int64Array),
}

fn as_text(a: &ArrayRef) -> Result<StringArray> {
    Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn as_int(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// A row's place in the order: start, duration, span id ("" without one).
type Key = (i64, i64, String);

/// Per group: the key of the row kept so far and its value.
#[derive(Debug)]
struct Earliest {
    out: DataType,
    /// Whether span ids break ties (the four-argument form).
    by_id: bool,
    keys: Vec<Option<Key>>,
    values: Values,
    /// Bytes of the strings held, for `size`.
    heap: usize,
}

impl Earliest {
    fn new(out: &DataType, by_id: bool) -> Result<Self> {
        let values = match kind_of(out)? {
            Kind::Text => Values::Text(Vec::new()),
            Kind::Int => Values::Int(Vec::new()),
        };
        Ok(Self {
            out: out.clone(),
            by_id,
            keys: Vec::new(),
            values,
            heap: 0,
        })
    }

    fn input(&self, a: &ArrayRef) -> Result<Input> {
        Ok(match self.values {
            Values::Text(_) => Input::Text(as_text(a)?),
            Values::Int(_) => Input::Int(as_int(a)?),
        })
    }

    fn resize(&mut self, groups: usize) {
        if self.keys.len() < groups {
            self.keys.resize(groups, None);
            match &mut self.values {
                Values::Text(v) => v.resize(groups, None),
                Values::Int(v) => v.resize(groups, None),
            }
        }
    }

    /// The span id column of arguments or states, when ids break ties.
    fn span_ids(&self, columns: &[ArrayRef]) -> Result<Option<StringArray>> {
        match (self.by_id, columns.get(3)) {
            (false, _) => Ok(None),
            (true, Some(ids)) => Ok(Some(as_text(ids)?)),
            (true, None) => exec_err!("{NAME}: the span id column is missing"),
        }
    }

    /// Offers every row (that the filter keeps) to its group: rows of `update_batch` and
    /// partial states of `merge_batch` alike (a state without a row has a null start).
    fn offer(
        &mut self,
        columns: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let [value, start, duration, ..] = columns else {
            return exec_err!("{NAME}: expected 3 or 4 columns, got {}", columns.len());
        };
        self.resize(total);
        let value = self.input(value)?;
        let (start, duration) = (as_int(start)?, as_int(duration)?);
        let ids = self.span_ids(columns)?;
        for (row, &g) in groups.iter().enumerate() {
            if filter.is_some_and(|f| !f.is_valid(row) || !f.value(row))
                || start.is_null(row)
                || ids.as_ref().is_some_and(|ids| ids.is_null(row))
            {
                continue;
            }
            // A row without a duration sorts after those with one that start with it.
            let d = if duration.is_valid(row) {
                duration.value(row)
            } else {
                i64::MIN
            };
            let s = start.value(row);
            let id = ids.as_ref().map_or("", |ids| ids.value(row));
            match &mut self.keys[g] {
                Some((ks, kd, kid)) if (*ks, Reverse(*kd), kid.as_str()) <= (s, Reverse(d), id) => {
                    continue;
                }
                Some((ks, kd, kid)) => {
                    (*ks, *kd) = (s, d);
                    kid.clear();
                    kid.push_str(id);
                }
                slot => {
                    self.heap += id.len();
                    *slot = Some((s, d, id.to_owned()));
                }
            }
            match (&mut self.values, &value) {
                (Values::Text(v), Input::Text(a)) => match (&mut v[g], a.is_valid(row)) {
                    (Some(kept), true) => {
                        kept.clear();
                        kept.push_str(a.value(row));
                    }
                    (slot, true) => {
                        self.heap += a.value(row).len();
                        *slot = Some(a.value(row).to_owned());
                    }
                    (slot, false) => *slot = None,
                },
                (Values::Int(v), Input::Int(a)) => v[g] = a.is_valid(row).then(|| a.value(row)),
                _ => return exec_err!("{NAME}: value column changed type"),
            }
        }
        Ok(())
    }

    fn take_values(&mut self, emit: EmitTo) -> Result<ArrayRef> {
        let array: ArrayRef = match &mut self.values {
            Values::Text(v) => Arc::new(StringArray::from(emit.take_needed(v))),
            Values::Int(v) => Arc::new(Int64Array::from(emit.take_needed(v))),
        };
        Ok(cast(&array, &self.out)?)
    }

    /// Removes the emitted groups' keys (`heap` only over-counts after `EmitTo::First`).
    fn take_keys(&mut self, emit: EmitTo) -> Vec<Option<Key>> {
        if emit == EmitTo::All {
            self.heap = 0;
        }
        emit.take_needed(&mut self.keys)
    }

    /// The emitted groups' keys as the state columns (start, duration, span id: null
    /// without ids).
    fn take_key_columns(&mut self, emit: EmitTo) -> [ArrayRef; 3] {
        let keys = self.take_keys(emit);
        let starts: Int64Array = keys.iter().map(|k| k.as_ref().map(|k| k.0)).collect();
        let durations: Int64Array = keys.iter().map(|k| k.as_ref().map(|k| k.1)).collect();
        let ids: ArrayRef = if self.by_id {
            Arc::new(
                keys.iter()
                    .map(|k| k.as_ref().map(|k| k.2.as_str()))
                    .collect::<StringArray>(),
            )
        } else {
            new_null_array(&DataType::Utf8, keys.len())
        };
        [Arc::new(starts), Arc::new(durations), ids]
    }
}

impl GroupsAccumulator for Earliest {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.offer(values, group_indices, opt_filter, total_num_groups)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.offer(values, group_indices, None, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.take_keys(emit_to);
        self.take_values(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let [starts, durations, ids] = self.take_key_columns(emit_to);
        Ok(vec![self.take_values(emit_to)?, starts, durations, ids])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let [value, start, duration, ..] = values else {
            return exec_err!("{NAME}: expected 3 or 4 columns, got {}", values.len());
        };
        let start = as_int(start)?;
        let kept = |row: usize| opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
        let start: Int64Array = (0..start.len())
            .map(|row| (kept(row) && start.is_valid(row)).then(|| start.value(row)))
            .collect();
        let ids: ArrayRef = match self.span_ids(values)? {
            Some(ids) => Arc::new(ids),
            None => new_null_array(&DataType::Utf8, start.len()),
        };
        Ok(vec![
            cast(value, &self.out)?,
            Arc::new(start),
            Arc::new(as_int(duration)?),
            ids,
        ])
    }

    fn size(&self) -> usize {
        let values = match &self.values {
            Values::Text(v) => v.capacity() * size_of::<Option<String>>(),
            Values::Int(v) => v.capacity() * size_of::<Option<i64>>(),
        };
        self.keys.capacity() * size_of::<Option<Key>>() + values + self.heap
    }
}

/// The row accumulator (no GROUP BY): one group.
#[derive(Debug)]
struct OneGroup(Earliest);

impl OneGroup {
    /// Group indices for `columns`' rows: all the one group.
    fn group_of_rows(&mut self, columns: &[ArrayRef]) -> Vec<usize> {
        self.0.resize(1);
        vec![0; columns.first().map_or(0, |c| c.len())]
    }
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let groups = self.group_of_rows(values);
        self.0.offer(values, &groups, None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let groups = self.group_of_rows(states);
        self.0.offer(states, &groups, None, 1)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.resize(1);
        GroupsAccumulator::state(&mut self.0, EmitTo::All)?
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.resize(1);
        ScalarValue::try_from_array(&GroupsAccumulator::evaluate(&mut self.0, EmitTo::All)?, 0)
    }

    fn size(&self) -> usize {
        size_of::<Self>() + GroupsAccumulator::size(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{RecordBatch, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{Schema, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Spans of 40 traces over 3 partitions of 4 batches: starts collide (ties go to the
    /// longest, then to the span id), some roots have a null name, some traces have no root,
    /// one has two.
    fn batch(seed: u64) -> Result<RecordBatch> {
        let mut x = seed;
        let mut next = move |m: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % m
        };
        let n = 200;
        let rows: Vec<_> = (0..n)
            .map(|_| (next(40), next(6), next(50), next(4), next(100)))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("span_id", DataType::Utf8, false),
            Field::new("parent_span_id", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("duration_ns", DataType::Int64, false),
            Field::new(
                "start_time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("t{:02}", r.0)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("{:016x}", r.2 * 7 + r.4)),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter()
                    .map(|r| (r.1 > 1 || r.0 % 9 == 0).then(|| format!("p{}", r.1))),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter()
                    .map(|r| (r.3 > 0).then(|| format!("n{}-{}", r.2, r.4))),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| (r.4 * 1000) as i64),
            )),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.2 as i64 * 1_000))
                    .with_timezone("UTC"),
            ),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    async fn run(ctx: &SessionContext, f: &str) -> Result<String> {
        // The span id is only needed for values the start and duration do not determine.
        let root = |v: &str, by_id: bool| match f {
            "first_value" => format!(
                "first_value({v} ORDER BY start_time, duration_ns DESC, span_id) \
                 FILTER (WHERE parent_span_id IS NULL)"
            ),
            _ => format!(
                "earliest_value({v}, start_time, duration_ns{}) \
                 FILTER (WHERE parent_span_id IS NULL)",
                if by_id { ", span_id" } else { "" }
            ),
        };
        let sql = format!(
            "SELECT trace_id, {} AS span_id, {} AS name, {} AS duration_ns, {} AS start_time \
             FROM spans GROUP BY trace_id ORDER BY trace_id",
            root("span_id", true),
            root("name", true),
            root("duration_ns", false),
            root("start_time", false)
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    fn context(skip_partial: bool) -> Result<SessionContext> {
        let mut config = SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(64);
        if skip_partial {
            let agg = &mut config
                .options_mut()
                .execution
                .skip_partial_aggregation_probe_rows_threshold;
            *agg = 1;
            config
                .options_mut()
                .execution
                .skip_partial_aggregation_probe_ratio_threshold = 0.0;
        }
        let ctx = SessionContext::new_with_config(config);
        let parts = (0..3)
            .map(|p| {
                (0..4)
                    .map(|b| batch(p * 10 + b))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = parts[0][0].schema();
        ctx.register_table("spans", Arc::new(MemTable::try_new(schema, parts)?))?;
        ctx.register_udaf(earliest_value_udaf());
        Ok(ctx)
    }

    #[tokio::test]
    async fn picks_what_ordered_first_value_picks_across_partitions_and_partial_states()
    -> Result<()> {
        for skip_partial in [false, true] {
            let ctx = context(skip_partial)?;
            let want = run(&ctx, "first_value").await?;
            let got = run(&ctx, "earliest_value").await?;
            assert_eq!(got, want, "skip_partial={skip_partial}");
            assert!(want.lines().count() > 40, "{want}");
        }
        let ctx = context(false)?;
        // The data covers traces without a root and roots without a name, and the UDAF
        // without GROUP BY (the row accumulator) agrees too.
        let checks = ctx
            .sql(
                "SELECT (SELECT count(*) FROM (SELECT earliest_value(span_id, start_time, duration_ns, span_id) \
                   FILTER (WHERE parent_span_id IS NULL) AS r FROM spans GROUP BY trace_id) WHERE r IS NULL) AS rootless,
                   (SELECT count(*) FROM (SELECT earliest_value(span_id, start_time, duration_ns, span_id) \
                   FILTER (WHERE parent_span_id IS NULL) AS r, earliest_value(name, start_time, duration_ns, span_id) \
                   FILTER (WHERE parent_span_id IS NULL) AS n FROM spans GROUP BY trace_id) \
                   WHERE r IS NOT NULL AND n IS NULL) AS nameless,
                   (SELECT earliest_value(name, start_time, duration_ns, span_id) IS NOT DISTINCT FROM \
                   first_value(name ORDER BY start_time, duration_ns DESC, span_id) FROM spans) AS whole,
                   (SELECT count(*) FROM (SELECT min(start_time) AS s, max(start_time) AS l FROM spans \
                   WHERE parent_span_id IS NULL GROUP BY trace_id, start_time \
                   HAVING count(DISTINCT duration_ns) > 1)) AS ties",
            )
            .await?
            .collect()
            .await?;
        let checks = pretty_format_batches(&checks)?.to_string();
        let row: Vec<&str> = checks
            .lines()
            .nth(3)
            .unwrap_or_default()
            .split('|')
            .map(str::trim)
            .collect();
        assert!(
            row.len() == 6 && row[1] != "0" && row[2] != "0" && row[3] == "true" && row[4] != "0",
            "{checks}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn unsupported_types_are_named() -> Result<()> {
        let ctx = context(false)?;
        let err = ctx
            .sql("SELECT earliest_value(1.5, start_time, duration_ns) FROM spans")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("values of type Float64 are not supported"),
            "{err}"
        );
        for (sql, want) in [
            (
                "SELECT earliest_value(name, start_time, span_id) FROM spans",
                "duration_ns must be an integer, not Utf8",
            ),
            (
                "SELECT earliest_value(name, start_time) FROM spans",
                "takes 3 or 4 arguments",
            ),
        ] {
            let err = ctx
                .sql(sql)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(want), "{sql}: {err}");
        }
        Ok(())
    }
}
