//! The run summary: per metric, verdicts, mean score, distribution, failures, skips, reuse,
//! judge tokens and the estimated judge cost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cli::Config;
use crate::dataset::{BadLine, Dataset};
use crate::metrics::Metric;
use crate::results::{ResultLine, Resumed};

#[derive(Debug, Default, Serialize)]
pub struct MetricSummary {
    /// Verdicts in the results file (this run's and resumed ones).
    pub n: usize,
    /// Mean of the normalised (0..1) scores.
    pub mean: Option<f64>,
    /// Verdicts per raw score (on the metric's scale) or label.
    pub distribution: BTreeMap<String, usize>,
    pub failures: usize,
    pub skipped: usize,
    /// Verdicts taken from the verdict cache in this run.
    pub reused: usize,
    /// Verdicts already in the results file from an interrupted run.
    pub resumed: usize,
    #[serde(skip)]
    sum: f64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub run_id: String,
    pub dataset: String,
    pub results: String,
    pub judge_model: String,
    pub items: usize,
    pub bad_lines: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bad_line_reasons: Vec<BadLine>,
    /// (item, metric) pairs this run had to answer (not resumed).
    pub planned: usize,
    pub metrics: BTreeMap<String, MetricSummary>,
    pub judge_requests: u64,
    pub judge_input_tokens: u64,
    pub judge_output_tokens: u64,
    /// Estimated from the price table; null when the judge model is not in it.
    pub judge_cost_usd: Option<f64>,
    pub interrupted: bool,
    pub seconds: f64,
}

impl Summary {
    pub fn new(
        run_id: &str,
        cfg: &Config,
        metrics: &[Arc<Metric>],
        dataset: &Dataset,
        resumed: &Resumed,
    ) -> Self {
        let mut s = Self {
            run_id: run_id.into(),
            dataset: cfg.dataset.display().to_string(),
            results: cfg.out.display().to_string(),
            judge_model: cfg.judge_model.clone(),
            items: dataset.items.len(),
            bad_lines: dataset.bad_lines.len(),
            bad_line_reasons: dataset.bad_lines.iter().take(20).cloned().collect(),
            planned: 0,
            metrics: metrics
                .iter()
                .map(|m| (m.name.clone(), MetricSummary::default()))
                .collect(),
            judge_requests: 0,
            judge_input_tokens: 0,
            judge_output_tokens: 0,
            judge_cost_usd: None,
            interrupted: false,
            seconds: 0.0,
        };
        let ids: std::collections::HashSet<&str> =
            dataset.items.iter().map(|i| i.id.as_str()).collect();
        for r in resumed
            .done
            .iter()
            .filter(|r| ids.contains(r.item_id.as_str()))
        {
            s.record(r);
            if let Some(m) = s.metrics.get_mut(&r.metric) {
                m.resumed += 1;
            }
        }
        s
    }

    pub fn planned(&mut self, n: usize) {
        self.planned = n;
    }

    pub fn spent(&mut self, requests: u32, input: u64, output: u64) {
        self.judge_requests += u64::from(requests);
        self.judge_input_tokens += input;
        self.judge_output_tokens += output;
    }

    /// Counts a written result line.
    pub fn record(&mut self, r: &ResultLine) {
        let Some(m) = self.metrics.get_mut(&r.metric) else {
            return;
        };
        if r.error.is_some() {
            m.failures += 1;
        } else if r.skipped.is_some() {
            m.skipped += 1;
        } else if let Some(score) = r.score {
            m.n += 1;
            m.sum += score;
            m.mean = Some(m.sum / m.n as f64);
            let bucket = match (&r.label, r.raw_score) {
                (Some(l), _) => l.clone(),
                (None, Some(x)) if x.fract() == 0.0 => format!("{x}"),
                (None, Some(x)) => format!("{x:.1}"),
                (None, None) => format!("{score:.2}"),
            };
            *m.distribution.entry(bucket).or_default() += 1;
            if r.reused.is_some() {
                m.reused += 1;
            }
        }
    }

    /// (verdicts, failures) over all metrics.
    pub fn judged_and_failed(&self) -> (usize, usize) {
        self.metrics
            .values()
            .fold((0, 0), |(j, f), m| (j + m.n, f + m.failures))
    }

    pub fn finish(
        &mut self,
        elapsed: Duration,
        interrupted: bool,
        prices: &schemas::prices::Prices,
        judge_model: &str,
    ) {
        self.seconds = elapsed.as_secs_f64();
        self.interrupted = interrupted;
        self.judge_cost_usd = prices.cost(
            judge_model,
            self.judge_input_tokens as i64,
            self.judge_output_tokens as i64,
        );
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "run {}: {} items, {} pairs to answer, {} judge requests, {} + {} tokens, cost {}{}",
            self.run_id,
            self.items,
            self.planned,
            self.judge_requests,
            self.judge_input_tokens,
            self.judge_output_tokens,
            self.judge_cost_usd.map_or(
                "unknown (model not in the price table)".into(),
                |c| format!("${c:.4}")
            ),
            if self.interrupted {
                " (interrupted: rerun with the same --out to resume)"
            } else {
                ""
            }
        )?;
        for (name, m) in &self.metrics {
            let dist: Vec<String> = m
                .distribution
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            writeln!(
                f,
                "  {name}: n={} mean={} dist[{}] failed={} skipped={} reused={} resumed={}",
                m.n,
                m.mean.map_or("-".into(), |x| format!("{x:.3}")),
                dist.join(" "),
                m.failures,
                m.skipped,
                m.reused,
                m.resumed
            )?;
        }
        for b in &self.bad_line_reasons {
            writeln!(f, "  dataset line {}: {}", b.line, b.reason)?;
        }
        write!(f, "results in {} ({:.2}s)", self.results, self.seconds)
    }
}
