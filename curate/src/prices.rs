//! The `cost_usd` column: the price table (`schemas::prices`) as a DataFusion UDF.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Builder, Int64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::cast::as_string_array;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use schemas::prices::Prices;

/// `cost_usd(model, input_tokens, output_tokens)`: null for a model without a price; a null
/// token count counts as 0.
pub fn cost_udf(prices: Prices) -> ScalarUDF {
    let prices = Arc::new(prices);
    create_udf(
        "cost_usd",
        vec![DataType::Utf8, DataType::Int64, DataType::Int64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let models = as_string_array(&arrays[0])?;
            let input = arrays[1].as_primitive::<Int64Type>();
            let output = arrays[2].as_primitive::<Int64Type>();
            let mut out = Float64Builder::with_capacity(models.len());
            let mut run = prices.for_run();
            for i in 0..models.len() {
                let cost = (!models.is_null(i)).then(|| {
                    let tok = |a: &Int64Array| if a.is_null(i) { 0 } else { a.value(i) };
                    run.cost(models.value(i), tok(input), tok(output))
                });
                out.append_option(cost.flatten());
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}
