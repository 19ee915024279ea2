//! Selection: run each rule, combine them (`any`/`all`), drop traces that have not settled,
//! then sample and limit. The result says which rules picked each trace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use rand::SeedableRng;

use crate::catalog::Catalog;
use crate::cli::Match;
use crate::error::CurateError;

/// A rule ready to run: its name (for reports), SQL returning `trace_id`, and the parameters
/// in effect (for the manifest).
#[derive(Debug, Clone)]
pub struct RuleQuery {
    pub name: String,
    pub sql: String,
    pub parameters: BTreeMap<String, String>,
    /// Where the user wrote this SQL (`--where`, `--sql`, a rules file), for custom rules: SQL
    /// that does not parse or plan is then a bad argument, not a failure.
    pub written_in: Option<String>,
}

/// Traces each rule selected, before combining.
pub type PerRule = BTreeMap<String, BTreeSet<String>>;

/// Runs every rule; returns the trace ids per rule.
/// `started` is told the name of each rule as its query begins (for the progress bar).
pub async fn run_rules(
    catalog: &Catalog,
    rules: &[RuleQuery],
    mut started: impl FnMut(&str),
) -> Result<PerRule, CurateError> {
    let mut per_rule = PerRule::new();
    for rule in rules {
        started(&rule.name);
        let sql = format!(
            "SELECT DISTINCT trace_id FROM ({}) WHERE trace_id IS NOT NULL",
            rule.sql
        );
        let planned = catalog
            .ctx
            .sql(&sql)
            .await
            .map_err(|e| match &rule.written_in {
                Some(place) => CurateError::BadArgs(format!("{place}: {e}")),
                None => e.into(),
            })?;
        let batches = planned.collect().await?;
        let ids = per_rule.entry(rule.name.clone()).or_default();
        for b in &batches {
            let col = b.column(0).as_string_opt::<i32>().ok_or_else(|| {
                CurateError::BadArgs(format!(
                    "rule {}: trace_id must be a string column",
                    rule.name
                ))
            })?;
            ids.extend(col.iter().flatten().map(str::to_string));
        }
    }
    Ok(per_rule)
}

/// Combines per-rule selections: union for `any`, intersection for `all`.
pub fn combine(per_rule: &PerRule, how: Match) -> BTreeMap<String, Vec<String>> {
    let mut by_trace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (rule, ids) in per_rule {
        for id in ids {
            by_trace.entry(id.clone()).or_default().push(rule.clone());
        }
    }
    if how == Match::All {
        by_trace.retain(|_, rules| rules.len() == per_rule.len());
    }
    by_trace
}

/// Registers `selected(trace_id, rules)` so views can be joined to the selection: each id
/// with the rules that selected it, comma-separated.
pub fn register_selected(
    catalog: &Catalog,
    ids: impl IntoIterator<Item = impl AsRef<str>>,
    rules: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<(), CurateError> {
    catalog.register_batch(
        "selected",
        vec![
            (
                "trace_id",
                Arc::new(StringArray::from_iter_values(ids)) as ArrayRef,
            ),
            ("rules", Arc::new(StringArray::from_iter_values(rules))),
        ],
    )
}

/// Keeps a seeded random sample of `n` (in the original order), then the first `limit`.
pub fn sample_and_limit<T>(
    items: Vec<T>,
    sample: Option<usize>,
    seed: u64,
    limit: Option<usize>,
) -> Vec<T> {
    let mut items = items;
    if let Some(n) = sample.filter(|n| *n < items.len()) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut keep: Vec<usize> = rand::seq::index::sample(&mut rng, items.len(), n).into_vec();
        keep.sort_unstable();
        let mut keep = keep.into_iter().peekable();
        items = items
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                (keep.peek() == Some(&i)).then(|| {
                    keep.next();
                    t
                })
            })
            .collect();
    }
    if let Some(l) = limit {
        items.truncate(l);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_is_a_union_and_all_an_intersection() {
        let mut per = PerRule::new();
        per.insert(
            "slow".into(),
            ["a", "b"].iter().map(|s| s.to_string()).collect(),
        );
        per.insert(
            "errors".into(),
            ["b", "c"].iter().map(|s| s.to_string()).collect(),
        );
        let any = combine(&per, Match::Any);
        assert_eq!(any.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(any["b"], ["errors", "slow"]);
        let all = combine(&per, Match::All);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn sampling_is_seeded_keeps_order_and_limit_applies_after() {
        let items: Vec<u32> = (0..100).collect();
        let a = sample_and_limit(items.clone(), Some(10), 7, None);
        assert_eq!(a, sample_and_limit(items.clone(), Some(10), 7, None));
        assert_ne!(a, sample_and_limit(items.clone(), Some(10), 8, None));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            sample_and_limit(items, Some(10), 7, Some(3)),
            a[..3].to_vec()
        );
    }
}
