//! The price table behind the `cost_usd` column: USD per million input and output tokens per
//! model, matched by the longest key that is a prefix of the model name.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Builder};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::cast::as_string_array;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use serde::Deserialize;

use crate::error::CurateError;

/// The table shipped with trace2eval (`curate/prices.toml`).
pub const DEFAULT_PRICES: &str = include_str!("../prices.toml");

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million input tokens.
    pub input: f64,
    /// USD per million output tokens.
    pub output: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub models: BTreeMap<String, Price>,
}

impl Prices {
    pub fn parse(text: &str, source: &str) -> Result<Self, CurateError> {
        toml::from_str(text).map_err(|e| CurateError::BadArgs(format!("price table {source}: {e}")))
    }

    pub fn default_table() -> Result<Self, CurateError> {
        Self::parse(DEFAULT_PRICES, "(built in)")
    }

    pub fn load(path: Option<&Path>) -> Result<Self, CurateError> {
        match path {
            None => Self::default_table(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    CurateError::BadArgs(format!("reading price table {}: {e}", p.display()))
                })?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    /// The price of `model`: the longest key that is a prefix of it.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        self.models
            .range(..=model.to_string())
            .rev()
            .find(|(k, _)| model.starts_with(k.as_str()))
            .map(|(_, p)| *p)
    }

    /// Cost in USD of a call.
    pub fn cost(&self, model: &str, input_tokens: i64, output_tokens: i64) -> Option<f64> {
        self.lookup(model).map(|p| {
            (input_tokens as f64 * p.input + output_tokens as f64 * p.output) / 1_000_000.0
        })
    }

    /// `cost_usd(model, input_tokens, output_tokens)`: null for a model without a price.
    pub fn udf(self) -> ScalarUDF {
        let prices = Arc::new(self);
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
                for i in 0..models.len() {
                    let cost = (!models.is_null(i)).then(|| {
                        let tok = |a: &datafusion::arrow::array::Int64Array| {
                            if a.is_null(i) { 0 } else { a.value(i) }
                        };
                        prices.cost(models.value(i), tok(input), tok(output))
                    });
                    out.append_option(cost.flatten());
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_unknown_models_have_no_price() -> Result<(), CurateError> {
        let p = Prices::default_table()?;
        assert_eq!(
            p.lookup("gpt-4o-mini-2024-07-18").map(|p| p.input),
            Some(0.15)
        );
        assert_eq!(p.lookup("gpt-4o-2024-08-06").map(|p| p.input), Some(2.50));
        assert_eq!(
            p.lookup("claude-sonnet-4-20250514").map(|p| p.output),
            Some(15.0)
        );
        assert_eq!(p.lookup("my-finetune"), None);
        let cost = p.cost("gpt-4o", 1_000_000, 100_000).unwrap_or_default();
        assert!((cost - 3.5).abs() < 1e-9, "{cost}");
        Ok(())
    }

    #[test]
    fn a_bad_price_file_names_the_problem() {
        let err = Prices::parse("[models.x]\ninput = 1.0\n", "p.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("p.toml") && err.contains("output"), "{err}");
    }
}
