//! `counted_usage`: which spans of one trace count their token usage (the rule is in the
//! `catalog` module docs), as a scalar UDF over the trace's usage spans aggregated into one
//! list, so `llm_usage` reads the store once and groups once by trace id. In SQL the same rule
//! takes a parent-lookup join and a self-join of the leaves, which DataFusion plans as four
//! scans of the store.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Builder, Int64Array, Int64Builder, ListArray,
    ListBuilder, StringArray, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use schemas::prices::Prices;

/// Fields of an element of `counted_usage`'s argument, as `LLM_USAGE_VIEW` names them.
mod input {
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    /// Start and end as nanoseconds since the epoch.
    pub const START: &str = "start_ns";
    pub const END: &str = "end_ns";
    pub const MODEL: &str = "model";
    pub const INPUT_TOKENS: &str = "input_tokens";
    pub const OUTPUT_TOKENS: &str = "output_tokens";
}

/// Fields of an element of the result: the counted spans.
const OUTPUT: [&str; 4] = [
    input::SPAN_ID,
    input::MODEL,
    input::INPUT_TOKENS,
    input::OUTPUT_TOKENS,
];

fn output_fields() -> Fields {
    Fields::from(vec![
        Field::new(input::SPAN_ID, DataType::Utf8, true),
        Field::new(input::MODEL, DataType::Utf8, true),
        Field::new(input::INPUT_TOKENS, DataType::Int64, true),
        Field::new(input::OUTPUT_TOKENS, DataType::Int64, true),
    ])
}

fn output_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Struct(output_fields()), true))
}

/// One usage span of a trace, as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct UsageSpan<'a> {
    pub span_id: &'a str,
    pub parent_span_id: Option<&'a str>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Which spans of one trace's usage spans count: a span is skipped when another usage span
/// names it as parent; the remaining spans with equal counts whose time ranges overlap,
/// directly or through a chain of such spans, are one call, counted on its smallest span id
/// (so copies of one span delivered twice count once).
pub fn counted(spans: &[UsageSpan<'_>]) -> Vec<bool> {
    let mut parents: Vec<&str> = spans.iter().filter_map(|s| s.parent_span_id).collect();
    parents.sort_unstable();
    let mut leaves: Vec<usize> = (0..spans.len())
        .filter(|&i| parents.binary_search(&spans[i].span_id).is_err())
        .collect();
    let s = |i: usize| &spans[i];
    leaves.sort_unstable_by_key(|&i| (s(i).input_tokens, s(i).output_tokens, s(i).start_ns));
    let mut out = vec![false; spans.len()];
    // Sorted by counts, then start: a call's spans are a run of equal counts where each
    // starts before the run's latest end so far.
    let mut run = leaves.iter().copied().peekable();
    while let Some(first) = run.next() {
        let (mut keep, mut end) = (first, s(first).end_ns);
        while let Some(&next) = run.peek() {
            let n = s(next);
            let same = (n.input_tokens, n.output_tokens)
                == (s(first).input_tokens, s(first).output_tokens);
            if !same || n.start_ns > end {
                break;
            }
            end = end.max(n.end_ns);
            if (n.span_id, next) < (s(keep).span_id, keep) {
                keep = next;
            }
            run.next();
        }
        out[keep] = true;
    }
    out
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CountedUsage {
    signature: Signature,
}

/// `counted_usage(list<struct<span_id, parent_span_id, start_ns, end_ns, model, input_tokens,
/// output_tokens>>)`: the list's spans whose usage counts, as
/// `list<struct<span_id, model, input_tokens, output_tokens>>`.
pub fn counted_usage_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CountedUsage {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for CountedUsage {
    fn name(&self) -> &str {
        "counted_usage"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(output_item()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let usage = UsageLists::read(self.name(), &arrays)?;
        let mut keep = Vec::with_capacity(usage.items.len());
        let mut new_offsets = Vec::with_capacity(usage.lists.len() + 1);
        new_offsets.push(0i32);
        let mut kept = 0i32;
        usage.for_each_trace(|range, counts| {
            keep.resize(range.start, false);
            if let Some(counts) = counts {
                kept += counts.iter().filter(|c| **c).count() as i32;
                keep.extend_from_slice(counts);
            }
            new_offsets.push(kept);
        });
        keep.resize(usage.items.len(), false);
        let projected = StructArray::try_new(
            output_fields(),
            OUTPUT
                .iter()
                .map(|name| usage.column(name))
                .collect::<Result<Vec<_>>>()?,
            None,
        )?;
        let values = filter(&projected, &BooleanArray::from(keep))?;
        Ok(ColumnarValue::Array(Arc::new(ListArray::try_new(
            output_item(),
            OffsetBuffer::new(new_offsets.into()),
            values,
            usage.lists.nulls().cloned(),
        )?)))
    }
}

/// The argument of `counted_usage` and `usage_totals`: per trace, a list of its usage spans.
struct UsageLists<'a> {
    name: &'a str,
    lists: &'a ListArray,
    items: &'a StructArray,
    ids: &'a StringArray,
    parents: &'a StringArray,
    models: &'a StringArray,
    starts: &'a Int64Array,
    ends: &'a Int64Array,
    inputs: &'a Int64Array,
    outputs: &'a Int64Array,
}

impl<'a> UsageLists<'a> {
    fn read(name: &'a str, arrays: &'a [ArrayRef]) -> Result<Self> {
        let Some(lists) = arrays.first().and_then(|a| a.as_list_opt::<i32>()) else {
            return exec_err!("{name}: the argument is not a list");
        };
        let Some(items) = lists.values().as_struct_opt() else {
            return exec_err!("{name}: the list's items are not structs");
        };
        let column = |field: &str| item_column(name, items, field);
        let text = |field: &str| {
            column(field)?.as_string_opt::<i32>().ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!(
                    "{name}: {field} is not a string"
                ))
            })
        };
        let int = |field: &str| {
            column(field)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "{name}: {field} is not Int64"
                    ))
                })
        };
        Ok(Self {
            name,
            lists,
            items,
            ids: text(input::SPAN_ID)?,
            parents: text(input::PARENT_SPAN_ID)?,
            models: text(input::MODEL)?,
            starts: int(input::START)?,
            ends: int(input::END)?,
            inputs: int(input::INPUT_TOKENS)?,
            outputs: int(input::OUTPUT_TOKENS)?,
        })
    }

    fn column(&self, field: &str) -> Result<ArrayRef> {
        item_column(self.name, self.items, field).cloned()
    }

    fn input_tokens(&self, j: usize) -> i64 {
        value_or_zero(self.inputs, j)
    }

    fn output_tokens(&self, j: usize) -> i64 {
        value_or_zero(self.outputs, j)
    }

    /// Calls `f` with each list's range of items and, for a non-null list, which of them
    /// count (`counted`), in list order.
    fn for_each_trace(&self, mut f: impl FnMut(std::ops::Range<usize>, Option<&[bool]>)) {
        let offsets = self.lists.value_offsets();
        let mut trace: Vec<UsageSpan<'_>> = Vec::new();
        for row in 0..self.lists.len() {
            let range = offsets[row] as usize..offsets[row + 1] as usize;
            if self.lists.is_null(row) {
                f(range, None);
                continue;
            }
            trace.clear();
            trace.extend(range.clone().map(|j| UsageSpan {
                span_id: self.ids.value(j),
                parent_span_id: self.parents.is_valid(j).then(|| self.parents.value(j)),
                start_ns: value_or_zero(self.starts, j),
                // A null end (never in the store: the column is required) overlaps nothing after it.
                end_ns: if self.ends.is_null(j) {
                    i64::MIN
                } else {
                    self.ends.value(j)
                },
                input_tokens: self.input_tokens(j),
                output_tokens: self.output_tokens(j),
            }));
            f(range, Some(&counted(&trace)));
        }
    }
}

fn item_column<'a>(name: &str, items: &'a StructArray, field: &str) -> Result<&'a ArrayRef> {
    items.column_by_name(field).ok_or_else(|| {
        datafusion::error::DataFusionError::Execution(format!(
            "{name}: the items have no field {field}"
        ))
    })
}

fn value_or_zero(a: &Int64Array, j: usize) -> i64 {
    if a.is_null(j) { 0 } else { a.value(j) }
}

/// Fields of `usage_totals`' result, as `trace_usage` names its columns.
pub mod totals {
    pub const LLM_CALLS: &str = "llm_calls";
    pub const INPUT_TOKENS: &str = "input_tokens";
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    pub const COST_USD: &str = "cost_usd";
    pub const MODELS: &str = "models";
}

fn totals_fields() -> Fields {
    Fields::from(vec![
        Field::new(totals::LLM_CALLS, DataType::Int64, false),
        Field::new(totals::INPUT_TOKENS, DataType::Int64, false),
        Field::new(totals::OUTPUT_TOKENS, DataType::Int64, false),
        Field::new(totals::COST_USD, DataType::Float64, false),
        Field::new(
            totals::MODELS,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
    ])
}

#[derive(Debug)]
struct UsageTotals {
    signature: Signature,
    prices: Arc<Prices>,
}

impl PartialEq for UsageTotals {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.prices, &other.prices)
    }
}

impl Eq for UsageTotals {}

impl std::hash::Hash for UsageTotals {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.prices).hash(state);
    }
}

/// `usage_totals(list<struct<...>>)` over the same lists as `counted_usage`: a trace's totals
/// over the spans whose usage counts, as `struct<llm_calls, input_tokens, output_tokens,
/// cost_usd, models>` (`models`: the distinct models of those spans, sorted). `trace_usage`
/// reads it, so a trace's totals need neither the counted spans as rows (`unnest`) nor a
/// second grouping by trace id: on the 10M-span bench store those were ~30% of `costly`.
/// A span's cost is `cost_usd`'s (none for a model without a price).
pub fn usage_totals_udf(prices: Prices) -> ScalarUDF {
    ScalarUDF::new_from_impl(UsageTotals {
        signature: Signature::any(1, Volatility::Immutable),
        prices: Arc::new(prices),
    })
}

impl ScalarUDFImpl for UsageTotals {
    fn name(&self) -> &str {
        "usage_totals"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(totals_fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let usage = UsageLists::read(self.name(), &arrays)?;
        let rows = usage.lists.len();
        let (mut calls, mut inputs, mut outputs, mut costs) = (
            Int64Builder::with_capacity(rows),
            Int64Builder::with_capacity(rows),
            Int64Builder::with_capacity(rows),
            Float64Builder::with_capacity(rows),
        );
        let mut models = ListBuilder::new(StringBuilder::new());
        let mut trace_models: Vec<&str> = Vec::new();
        let mut prices = self.prices.for_run();
        usage.for_each_trace(|range, counts| {
            let Some(counts) = counts else {
                calls.append_null();
                inputs.append_null();
                outputs.append_null();
                costs.append_null();
                models.append_null();
                return;
            };
            let (mut n, mut input, mut output, mut cost) = (0i64, 0i64, 0i64, 0.0f64);
            trace_models.clear();
            for (j, _) in range.zip(counts).filter(|(_, c)| **c) {
                let (i, o) = (usage.input_tokens(j), usage.output_tokens(j));
                n += 1;
                input += i;
                output += o;
                if usage.models.is_valid(j) {
                    let model = usage.models.value(j);
                    cost += prices.cost(model, i, o).unwrap_or(0.0);
                    trace_models.push(model);
                }
            }
            trace_models.sort_unstable();
            trace_models.dedup();
            calls.append_value(n);
            inputs.append_value(input);
            outputs.append_value(output);
            costs.append_value(cost);
            models.append_value(trace_models.iter().map(Some));
        });
        let columns: Vec<ArrayRef> = vec![
            Arc::new(calls.finish()),
            Arc::new(inputs.finish()),
            Arc::new(outputs.finish()),
            Arc::new(costs.finish()),
            Arc::new(models.finish()),
        ];
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            totals_fields(),
            columns,
            usage.lists.nulls().cloned(),
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    fn span<'a>(
        id: &'a str,
        parent: Option<&'a str>,
        start: i64,
        end: i64,
        tokens: (i64, i64),
    ) -> UsageSpan<'a> {
        UsageSpan {
            span_id: id,
            parent_span_id: parent,
            start_ns: start,
            end_ns: end,
            input_tokens: tokens.0,
            output_tokens: tokens.1,
        }
    }

    #[test]
    fn a_span_wrapping_a_call_with_usage_is_skipped() {
        let spans = [
            span("b", Some("a"), 1, 9, (10, 5)),
            span("a", None, 0, 10, (10, 5)),
        ];
        assert_eq!(counted(&spans), [true, false]);
    }

    #[test]
    fn overlapping_siblings_with_equal_counts_count_once_on_the_smallest_span_id() {
        let spans = [
            span("c", Some("p"), 0, 10, (10, 5)),
            span("b", Some("p"), 2, 8, (10, 5)),
            span("d", Some("p"), 3, 9, (11, 5)),
        ];
        assert_eq!(counted(&spans), [false, true, true]);
    }

    #[test]
    fn equal_calls_one_after_the_other_count_twice() {
        let spans = [
            span("a", None, 0, 10, (10, 5)),
            span("b", None, 11, 20, (10, 5)),
        ];
        assert_eq!(counted(&spans), [true, true]);
    }

    /// A chain a-b-c where a and c do not overlap is one call, as the export groups it.
    #[test]
    fn a_chain_of_overlaps_is_one_call() {
        let spans = [
            span("c", None, 9, 20, (10, 5)),
            span("a", None, 0, 10, (10, 5)),
            span("b", None, 5, 15, (10, 5)),
        ];
        assert_eq!(counted(&spans), [false, true, false]);
    }

    #[test]
    fn a_span_stored_twice_counts_once() {
        let s = span("a", None, 0, 10, (10, 5));
        assert_eq!(counted(&[s, s]), [true, false]);
    }

    /// Two traces' usage lists: trace 1 a wrapper "a" around the call "b" (model "m"); trace
    /// 2 two calls one after the other with equal counts, "x" on "m2" and "y" without a model.
    fn two_traces(models: [Option<&str>; 4]) -> Result<ListArray> {
        let strings = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
        let ints = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        let fields = Fields::from(vec![
            Field::new(input::SPAN_ID, DataType::Utf8, false),
            Field::new(input::PARENT_SPAN_ID, DataType::Utf8, true),
            Field::new(input::START, DataType::Int64, false),
            Field::new(input::END, DataType::Int64, false),
            Field::new(input::MODEL, DataType::Utf8, true),
            Field::new(input::INPUT_TOKENS, DataType::Int64, false),
            Field::new(input::OUTPUT_TOKENS, DataType::Int64, false),
        ]);
        let items = StructArray::try_new(
            fields.clone(),
            vec![
                strings(vec![Some("a"), Some("b"), Some("x"), Some("y")]),
                strings(vec![None, Some("a"), None, None]),
                ints(vec![0, 1, 0, 20]),
                ints(vec![10, 9, 10, 30]),
                strings(models.to_vec()),
                ints(vec![10, 10, 3, 3]),
                ints(vec![5, 5, 1, 1]),
            ],
            None,
        )?;
        let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
        Ok(ListArray::try_new(
            item,
            OffsetBuffer::new(vec![0, 2, 4].into()),
            Arc::new(items),
            None,
        )?)
    }

    #[test]
    fn the_udf_keeps_the_counted_spans_of_each_list() -> Result<()> {
        let list = two_traces([Some("m"), Some("m"), Some("m2"), None])?;
        let udf = counted_usage_udf();
        let out = udf.invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(list))],
            arg_fields: vec![],
            number_rows: 2,
            return_field: Arc::new(Field::new("out", DataType::List(output_item()), true)),
            config_options: Default::default(),
        })?;
        let ColumnarValue::Array(out) = out else {
            panic!("an array comes back");
        };
        let out = out.as_list::<i32>();
        assert_eq!(out.value_offsets(), &[0, 1, 3]);
        let values = out.values().as_struct();
        let ids = values.column(0).as_string::<i32>();
        let models = values.column(1).as_string::<i32>();
        assert_eq!((ids.value(0), ids.value(1), ids.value(2)), ("b", "x", "y"));
        assert_eq!((models.value(1), models.is_null(2)), ("m2", true));
        Ok(())
    }

    #[test]
    fn totals_count_each_call_once_at_its_models_price() -> Result<()> {
        // "b" and "x" on priced models, "y" on none: the wrapper "a" (same model as "b")
        // is not counted, "y" is a call without a cost.
        let prices = Prices::parse(
            "[models.m]\ninput = 2.0\noutput = 10.0\n[models.m2]\ninput = 1.0\noutput = 4.0\n",
            "test",
        )
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let list = two_traces([Some("m"), Some("m"), Some("m2-mini"), None])?;
        let out = usage_totals_udf(prices).invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(list))],
            arg_fields: vec![],
            number_rows: 2,
            return_field: Arc::new(Field::new("out", DataType::Struct(totals_fields()), true)),
            config_options: Default::default(),
        })?;
        let ColumnarValue::Array(out) = out else {
            panic!("an array comes back");
        };
        let out = out.as_struct();
        let int = |name: &str, row: usize| {
            out.column_by_name(name)
                .map(|c| c.as_primitive::<Int64Type>().value(row))
        };
        assert_eq!(int(totals::LLM_CALLS, 0), Some(1));
        assert_eq!(int(totals::LLM_CALLS, 1), Some(2));
        assert_eq!(int(totals::INPUT_TOKENS, 0), Some(10));
        assert_eq!(int(totals::INPUT_TOKENS, 1), Some(6));
        assert_eq!(int(totals::OUTPUT_TOKENS, 1), Some(2));
        let cost = out.column_by_name(totals::COST_USD).map(|c| {
            c.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .clone()
        });
        let cost =
            cost.ok_or_else(|| datafusion::error::DataFusionError::Internal("cost".into()))?;
        // b: 10 x 2.0 + 5 x 10.0 per million; x: 3 x 1.0 + 1 x 4.0 per million, y: nothing.
        assert!((cost.value(0) - 70e-6).abs() < 1e-15, "{}", cost.value(0));
        assert!((cost.value(1) - 7e-6).abs() < 1e-15, "{}", cost.value(1));
        let models = out
            .column_by_name(totals::MODELS)
            .map(|c| c.as_list::<i32>().clone());
        let models =
            models.ok_or_else(|| datafusion::error::DataFusionError::Internal("models".into()))?;
        let names = |row: usize| -> Vec<String> {
            let v = models.value(row);
            let v = v.as_string::<i32>();
            v.iter().map(|m| m.unwrap_or("NULL").to_string()).collect()
        };
        assert_eq!(names(0), ["m"]);
        assert_eq!(names(1), ["m2-mini"]);
        Ok(())
    }
}
