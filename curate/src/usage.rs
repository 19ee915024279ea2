//! `counted_usage`: which spans of one trace count their token usage (the rule is in the
//! `catalog` module docs), as a scalar UDF over the trace's usage spans aggregated into one
//! list, so `llm_usage` reads the store once and groups once by trace id. In SQL the same rule
//! takes a parent-lookup join and a self-join of the leaves, which DataFusion plans as four
//! scans of the store.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

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
        let Some(lists) = arrays.first().and_then(|a| a.as_list_opt::<i32>()) else {
            return exec_err!("counted_usage: the argument is not a list");
        };
        let Some(items) = lists.values().as_struct_opt() else {
            return exec_err!("counted_usage: the list's items are not structs");
        };
        let column = |name: &str| {
            items.column_by_name(name).cloned().ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!(
                    "counted_usage: the items have no field {name}"
                ))
            })
        };
        let ids = column(input::SPAN_ID)?;
        let parents = column(input::PARENT_SPAN_ID)?;
        let starts = column(input::START)?;
        let ends = column(input::END)?;
        let inputs = column(input::INPUT_TOKENS)?;
        let outputs = column(input::OUTPUT_TOKENS)?;
        let (Some(ids), Some(parents)) =
            (ids.as_string_opt::<i32>(), parents.as_string_opt::<i32>())
        else {
            return exec_err!("counted_usage: span ids are not strings");
        };
        let ints = |a: &ArrayRef| a.as_primitive_opt::<Int64Type>().cloned();
        let (Some(starts), Some(ends), Some(inputs), Some(outputs)) =
            (ints(&starts), ints(&ends), ints(&inputs), ints(&outputs))
        else {
            return exec_err!("counted_usage: times and token counts are not Int64");
        };
        let int = |a: &datafusion::arrow::array::Int64Array, j: usize| {
            if a.is_null(j) { 0 } else { a.value(j) }
        };
        let offsets = lists.value_offsets();
        let mut keep = Vec::with_capacity(items.len());
        let mut new_offsets = Vec::with_capacity(lists.len() + 1);
        new_offsets.push(0i32);
        let mut trace: Vec<UsageSpan<'_>> = Vec::new();
        let mut kept = 0i32;
        for row in 0..lists.len() {
            let (a, b) = (offsets[row] as usize, offsets[row + 1] as usize);
            keep.resize(a, false);
            if lists.is_valid(row) {
                trace.clear();
                trace.extend((a..b).map(|j| UsageSpan {
                    span_id: ids.value(j),
                    parent_span_id: parents.is_valid(j).then(|| parents.value(j)),
                    start_ns: int(&starts, j),
                    // A null end (never in the store: the column is required) overlaps nothing after it.
                    end_ns: if ends.is_null(j) {
                        i64::MIN
                    } else {
                        ends.value(j)
                    },
                    input_tokens: int(&inputs, j),
                    output_tokens: int(&outputs, j),
                }));
                let counts = counted(&trace);
                kept += counts.iter().filter(|c| **c).count() as i32;
                keep.extend(counts);
            }
            new_offsets.push(kept);
        }
        keep.resize(items.len(), false);
        let projected = StructArray::try_new(
            output_fields(),
            OUTPUT
                .iter()
                .map(|name| column(name))
                .collect::<Result<Vec<_>>>()?,
            None,
        )?;
        let values = filter(&projected, &BooleanArray::from(keep))?;
        Ok(ColumnarValue::Array(Arc::new(ListArray::try_new(
            output_item(),
            OffsetBuffer::new(new_offsets.into()),
            values,
            lists.nulls().cloned(),
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_udf_keeps_the_counted_spans_of_each_list() -> Result<()> {
        use datafusion::arrow::array::{Int64Array, StringArray};
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
        // Trace 1: a wrapper "a" around "b"; trace 2: two sequential calls.
        let items = StructArray::try_new(
            fields.clone(),
            vec![
                strings(vec![Some("a"), Some("b"), Some("x"), Some("y")]),
                strings(vec![None, Some("a"), None, None]),
                ints(vec![0, 1, 0, 20]),
                ints(vec![10, 9, 10, 30]),
                strings(vec![Some("m"), Some("m"), Some("m2"), None]),
                ints(vec![10, 10, 3, 3]),
                ints(vec![5, 5, 1, 1]),
            ],
            None,
        )?;
        let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
        let list = ListArray::try_new(
            item,
            OffsetBuffer::new(vec![0, 2, 4].into()),
            Arc::new(items),
            None,
        )?;
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
}
