//! The price table: USD per million input and output tokens per model, matched by the longest
//! key that is a prefix of the model name. curate turns it into the `cost_usd` column; any
//! stage that reports spend reads the same table.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use serde::Deserialize;

use crate::error::SchemaError;

/// The table shipped with trace2eval (`schemas/prices.toml`).
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
    /// Parses a TOML table; `source` names it in the error (a path, or "(built in)").
    pub fn parse(text: &str, source: &str) -> Result<Self, SchemaError> {
        toml::from_str(text)
            .map_err(|e| SchemaError::BadPrices(format!("price table {source}: {e}")))
    }

    /// The table shipped with trace2eval.
    pub fn default_table() -> Result<Self, SchemaError> {
        Self::parse(DEFAULT_PRICES, "(built in)")
    }

    /// The table in the file at `path`, or the built-in one when there is none. A file
    /// replaces the built-in table; it is not merged with it.
    pub fn load(path: Option<&Path>) -> Result<Self, SchemaError> {
        match path {
            None => Self::default_table(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    SchemaError::BadPrices(format!("reading price table {}: {e}", p.display()))
                })?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    /// The price of `model`: the longest key that is a prefix of it.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        self.models
            .range::<str, _>((Bound::Unbounded, Bound::Included(model)))
            .rev()
            .find(|(k, _)| model.starts_with(k.as_str()))
            .map(|(_, p)| *p)
    }

    /// Cost in USD of a call.
    pub fn cost(&self, model: &str, input_tokens: i64, output_tokens: i64) -> Option<f64> {
        self.lookup(model)
            .map(|p| Self::cost_at(p, input_tokens, output_tokens))
    }

    /// Cost in USD of a call at `price` (one looked up already).
    fn cost_at(price: Price, input_tokens: i64, output_tokens: i64) -> f64 {
        (input_tokens as f64 * price.input + output_tokens as f64 * price.output) / 1_000_000.0
    }

    /// [`Prices::cost`] for a run of calls (a batch of rows), where consecutive calls mostly
    /// share a model: its price is looked up once per run of that model.
    pub fn for_run<'m>(&self) -> RunPrices<'_, 'm> {
        RunPrices {
            prices: self,
            last: None,
        }
    }
}

/// See [`Prices::for_run`].
pub struct RunPrices<'p, 'm> {
    prices: &'p Prices,
    last: Option<(&'m str, Option<Price>)>,
}

impl<'m> RunPrices<'_, 'm> {
    /// Cost in USD of a call, as [`Prices::cost`].
    pub fn cost(&mut self, model: &'m str, input_tokens: i64, output_tokens: i64) -> Option<f64> {
        let price = match self.last {
            Some((m, p)) if m == model => p,
            _ => {
                let p = self.prices.lookup(model);
                self.last = Some((model, p));
                p
            }
        };
        price.map(|p| Prices::cost_at(p, input_tokens, output_tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_unknown_models_have_no_price() -> Result<(), SchemaError> {
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
        // A run of calls gets each call's own model's price, not the previous call's.
        let mut run = p.for_run();
        for model in ["gpt-4o", "gpt-4o", "gpt-4o-mini", "my-finetune", "gpt-4o"] {
            assert_eq!(
                run.cost(model, 1000, 10),
                p.cost(model, 1000, 10),
                "{model}"
            );
        }
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
