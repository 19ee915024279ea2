//! eval-runner: LLM-as-judge over a curated dataset, scores written back as linked spans.
//!
//! A run reads the dataset, resumes from the results file, answers what it can from the verdict
//! cache, judges the rest with bounded concurrency, and for each batch of verdicts first
//! delivers their score spans, then appends their result lines. A pair whose line is in the
//! results file is therefore never judged or sent again by a rerun.
//!
//! Between the two steps the batch is journaled (`<out>.sending`, see `results::InFlight`). A
//! run killed after its spans went out but before their lines were written is finished by the
//! rerun: it takes the run id (which score span ids derive from) from the journal, re-sends the
//! batch unchanged (same span ids, same verdicts; a store overwrites the same files) and
//! records its lines, judging nothing again. Spans only ever leave journaled or recorded, so a
//! results file with neither is a new run with a new id.
//!
//! Modules, in the order of the flow: `cli` (config), `dataset` (curate's JSONL formats),
//! `metrics` (templates, verdict parsing), `mask` (egress redaction), `judge` (OpenAI and
//! Anthropic over HTTP), `results` (results file, its sidecars, verdict cache), `emit` (score
//! spans over OTLP or into a store), `summary`.

pub mod cli;
pub mod dataset;
pub mod emit;
pub mod error;
pub mod judge;
pub mod mask;
pub mod metrics;
pub mod results;
pub mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::cli::Config;
use crate::dataset::Item;
use crate::emit::{Emitter, RunSpans};
use crate::error::EvalError;
use crate::judge::{Judge, Judged};
use crate::mask::Masker;
use crate::metrics::Metric;
use crate::results::{Cached, InFlight, ResultLine, ResultsWriter, VerdictCache};
use crate::summary::Summary;

/// Result lines (and their spans) held back until this many are pending, or this long has
/// passed, so spans go out in batches.
const BATCH_LINES: usize = 256;
const BATCH_AGE: Duration = Duration::from_secs(1);

/// One (item, metric) pair to judge; its prompt is rendered when its request starts, so a
/// large dataset does not hold every prompt in memory.
struct Job {
    item: Arc<Item>,
    metric: Arc<Metric>,
    cache_key: String,
}

/// Lines waiting for their spans to be delivered.
struct Pending {
    lines: Vec<ResultLine>,
    spans: Vec<Span>,
    since: Instant,
}

impl Pending {
    fn new() -> Self {
        Self {
            lines: Vec::new(),
            spans: Vec::new(),
            since: Instant::now(),
        }
    }
}

/// What a finished run reports; `code` is the process exit code.
pub struct Outcome {
    pub summary: Summary,
    pub code: i32,
}

fn new_run_id() -> String {
    schemas::layout::ulid(unix_ms(SystemTime::now()), rand::random::<u128>())
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn line(item: &Item, metric: &str, cfg: &Config, run_id: &str) -> ResultLine {
    ResultLine {
        item_id: item.id.clone(),
        trace_id: item.trace_id.clone(),
        span_id: item.span_id.clone(),
        metric: metric.to_string(),
        score: None,
        raw_score: None,
        label: None,
        explanation: None,
        judge_model: cfg.judge_model.clone(),
        latency_ms: 0.0,
        error: None,
        skipped: None,
        raw_answer: None,
        attempts: 0,
        reused: None,
        input_tokens: 0,
        output_tokens: 0,
        run_id: run_id.to_string(),
        eval_span_id: None,
        judged_at: rfc3339(SystemTime::now()),
    }
}

/// Runs one eval-runner invocation. When `shutdown` resolves (SIGTERM, SIGINT), requests in
/// flight are abandoned, finished verdicts are delivered and recorded, and the run ends as
/// interrupted (exit 1); a rerun resumes.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Outcome, EvalError> {
    let started = Instant::now();
    let metrics: Vec<Arc<Metric>> = Metric::resolve(&cfg.metrics, cfg.metrics_file.as_deref())?
        .into_iter()
        .map(Arc::new)
        .collect();
    let masker = Masker::new(&cfg.mask, &cfg.mask_regex)?;
    let prices = schemas::prices::Prices::load(cfg.prices.as_deref())
        .map_err(|e| EvalError::BadArgs(e.to_string()))?;
    let dataset = dataset::read(&cfg.dataset, cfg.limit)?;
    if dataset
        .items
        .iter()
        .any(|i| i.format == dataset::Format::Langfuse)
    {
        tracing::warn!(
            "langfuse dataset items carry no model answer: metrics that judge an answer skip \
             them; export with `curate --format items` to judge answers"
        );
    }
    let mut resumed = results::resume(&cfg.out)?;
    let in_flight = InFlight::load(&cfg.out)?;
    let run_id = cfg
        .run_id
        .clone()
        .or_else(|| {
            in_flight
                .as_ref()
                .and_then(|b| b.lines.first())
                .map(|r| r.run_id.clone())
        })
        .or_else(|| resumed.run_id.clone())
        .unwrap_or_else(new_run_id);
    let mut cache = match &cfg.cache_dir {
        Some(dir) => VerdictCache::open(dir)?,
        None => VerdictCache::disabled(),
    };
    let judge = Judge::new(&cfg).map_err(EvalError::BadArgs)?;
    let mut emitter = Emitter::new(&cfg.emit, &cfg.tenant)?;
    let run_spans = RunSpans::new(&run_id, &cfg.judge_model, cfg.provider.name());
    let mut writer = ResultsWriter::open(&cfg.out)?;
    if let Some(batch) = in_flight {
        finish_in_flight(batch, &mut emitter, &mut writer, &mut resumed).await?;
    }
    let mut summary = Summary::new(&run_id, &cfg, &metrics, &dataset, &resumed);

    // Pairs answered without the judge (skips, cached verdicts) and pairs to judge.
    let mut pending = Pending::new();
    let mut jobs = Vec::new();
    for item in dataset.items.into_iter().map(Arc::new) {
        for metric in &metrics {
            if resumed
                .done_keys
                .contains(&(item.id.clone(), metric.name.clone()))
            {
                continue;
            }
            let mut r = line(&item, &metric.name, &cfg, &run_id);
            if let Some(why) = metric.missing(&item) {
                r.skipped = Some(why);
                pending.lines.push(r);
                continue;
            }
            let key = hex::encode(Sha256::digest(
                serde_json::json!([
                    item.content_hash,
                    metric.template_hash,
                    cfg.provider.name(),
                    cfg.judge_model,
                    cfg.temperature,
                    cfg.max_tokens,
                    masker.fingerprint(),
                ])
                .to_string()
                .as_bytes(),
            ));
            if let Some(c) = cache.get(&key) {
                r.score = Some(c.verdict.score);
                r.raw_score = c.verdict.raw_score;
                r.label = c.verdict.label.clone();
                r.explanation = Some(c.verdict.explanation.clone());
                r.reused = Some("cache".into());
                let span = run_spans.score_span(&r, SystemTime::now(), Duration::ZERO);
                if emitter.enabled() {
                    r.eval_span_id = Some(hex::encode(&span.span_id));
                    pending.spans.push(span);
                }
                pending.lines.push(r);
                continue;
            }
            jobs.push(Job {
                item: item.clone(),
                metric: metric.clone(),
                cache_key: key,
            });
        }
    }
    summary.planned(pending.lines.len() + jobs.len());

    let progress = indicatif::ProgressBar::new((pending.lines.len() + jobs.len()) as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} judged, eta {eta} {msg}",
    ) {
        progress.set_style(style);
    }
    progress.inc(pending.lines.len() as u64);

    let (judge, masker) = (&judge, &masker);
    let mut stream = futures::stream::iter(jobs)
        .map(|job| async move {
            let (system, user) = job.metric.render(&job.item);
            let user = if masker.is_empty() {
                user
            } else {
                masker.apply(&user)
            };
            let judged = judge.judge(&job.metric, &system, &user).await;
            (job, judged)
        })
        .buffer_unordered(cfg.concurrency);
    let mut fatal = None;
    let mut interrupted = false;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            () = &mut shutdown => { interrupted = true; None }
        };
        let Some((job, judged)) = next else { break };
        progress.inc(1);
        let judged: Judged = match judged {
            Ok(j) => j,
            Err(why) => {
                fatal = Some(EvalError::JudgeAuth(why));
                break;
            }
        };
        let mut r = line(&job.item, &job.metric.name, &cfg, &run_id);
        r.latency_ms = judged.latency.as_secs_f64() * 1000.0;
        r.attempts = judged.attempts;
        r.input_tokens = judged.input_tokens;
        r.output_tokens = judged.output_tokens;
        r.judged_at = rfc3339(judged.started);
        summary.spent(judged.attempts, judged.input_tokens, judged.output_tokens);
        match judged.outcome {
            Ok(v) => {
                r.score = Some(v.score);
                r.raw_score = v.raw_score;
                r.label = v.label.clone();
                r.explanation = Some(v.explanation.clone());
                cache.put(Cached {
                    key: job.cache_key,
                    verdict: v,
                    input_tokens: judged.input_tokens,
                    output_tokens: judged.output_tokens,
                });
                if emitter.enabled() {
                    let span = run_spans.score_span(&r, judged.started, judged.latency);
                    r.eval_span_id = Some(hex::encode(&span.span_id));
                    pending.spans.push(span);
                }
            }
            Err(why) => {
                r.error = Some(why);
                r.raw_answer = judged.raw_answer;
            }
        }
        pending.lines.push(r);
        if !emitter.enabled()
            || pending.lines.len() >= BATCH_LINES
            || pending.since.elapsed() >= BATCH_AGE
        {
            flush(&mut pending, &mut emitter, &mut writer, &mut summary).await?;
        }
    }
    drop(stream);
    progress.finish_and_clear();
    flush(&mut pending, &mut emitter, &mut writer, &mut summary).await?;
    writer.sync()?;
    if let Some(e) = fatal {
        return Err(e);
    }
    let (judged, failed) = summary.judged_and_failed();
    let root = emit::request(vec![run_spans.root_span(&cfg.metrics, judged, failed)]);
    emitter.send(&root, unix_ms(SystemTime::now())).await?;
    summary.finish(started.elapsed(), interrupted, &prices, &cfg.judge_model);
    let code = if failed == 0 && summary.bad_lines == 0 && !interrupted {
        0
    } else {
        1
    };
    Ok(Outcome { summary, code })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Delivers the pending spans, then appends their lines. With spans, the batch is journaled
/// first and the journal removed once the lines are durable, so a crash anywhere in between
/// leaves a batch the rerun can finish (see [`finish_in_flight`]).
async fn flush(
    pending: &mut Pending,
    emitter: &mut Emitter,
    writer: &mut ResultsWriter,
    summary: &mut Summary,
) -> Result<(), EvalError> {
    let spans = std::mem::take(&mut pending.spans);
    if spans.is_empty() || !emitter.enabled() {
        writer.write(&pending.lines)?;
    } else {
        let req = emit::request(spans);
        let batch = InFlight {
            sent_ms: unix_ms(SystemTime::now()),
            request: hex::encode(req.encode_to_vec()),
            lines: std::mem::take(&mut pending.lines),
        };
        batch.save(writer.path())?;
        emitter.send(&req, batch.sent_ms).await?;
        writer.write(&batch.lines)?;
        writer.sync()?;
        InFlight::clear(writer.path())?;
        pending.lines = batch.lines;
    }
    for r in pending.lines.drain(..) {
        summary.record(&r);
    }
    pending.since = Instant::now();
    Ok(())
}

/// Finishes the batch a killed run left in `<out>.sending`: re-sends it as it was (its spans
/// may or may not have arrived) and records its lines, which then count as resumed.
async fn finish_in_flight(
    batch: InFlight,
    emitter: &mut Emitter,
    writer: &mut ResultsWriter,
    resumed: &mut results::Resumed,
) -> Result<(), EvalError> {
    let out = writer.path().to_path_buf();
    let bad = |why: String| {
        EvalError::BadArgs(format!(
            "{}: {why}",
            results::in_flight_path(&out).display()
        ))
    };
    let bytes = hex::decode(&batch.request).map_err(|e| bad(e.to_string()))?;
    let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
        bytes.as_slice(),
    )
    .map_err(|e| bad(e.to_string()))?;
    emitter.send(&req, batch.sent_ms).await?;
    // A failed line carries no span: its pair is judged again, as `resume` does with a failed
    // line of the results file.
    let new: Vec<ResultLine> = batch
        .lines
        .into_iter()
        .filter(|r| r.is_done() && resumed.done_keys.insert(r.key()))
        .collect();
    writer.write(&new)?;
    writer.sync()?;
    InFlight::clear(&out)?;
    tracing::info!(
        spans = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>(),
        lines = new.len(),
        "re-sent the score spans an interrupted run left unrecorded"
    );
    resumed.done.extend(new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(item: &str, error: Option<&str>) -> ResultLine {
        let v = serde_json::json!({
            "item_id": item, "trace_id": "t", "span_id": "s", "metric": "helpfulness",
            "score": error.is_none().then_some(0.5), "raw_score": null, "label": null,
            "explanation": null, "judge_model": "m", "latency_ms": 1.0, "error": error,
            "skipped": null, "raw_answer": null, "attempts": 1, "reused": null,
            "input_tokens": 0, "output_tokens": 0, "run_id": "r", "eval_span_id": null,
            "judged_at": "2026-12-04T00:00:00Z"
        });
        serde_json::from_value(v).expect("a result line")
    }

    #[tokio::test]
    async fn a_failed_pair_in_a_resent_journal_batch_is_judged_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("r.jsonl");
        let batch = InFlight {
            sent_ms: 0,
            request: hex::encode(emit::request(Vec::new()).encode_to_vec()),
            lines: vec![
                line("ok", None),
                line("bad", Some("judge answer is not JSON")),
            ],
        };
        let mut resumed = results::resume(&out).expect("resume");
        let mut writer = ResultsWriter::open(&out).expect("open");
        let mut emitter = Emitter::None;
        finish_in_flight(batch, &mut emitter, &mut writer, &mut resumed)
            .await
            .expect("finish");
        let keys: Vec<_> = resumed.done_keys.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(keys, ["ok"], "only the judged pair counts as done");
        let written = std::fs::read_to_string(&out).expect("results");
        assert_eq!(written.lines().count(), 1);
        assert!(written.contains("\"item_id\":\"ok\""), "{written}");
    }
}
