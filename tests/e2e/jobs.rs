//! Scheduled jobs and the store's lifecycle: `curate job run` around new data, late spans, a
//! killed run and a concurrent run; `--dry-run`; `curate retention`. Local and S3 stores.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;
use trace2eval_tests::client::{Grpc, request};
use trace2eval_tests::harness::{
    Ingest, IngestOpts, Ran, S3Server, TestResult, bin_path, local_store_rows, output_of,
};
use trace2eval_tests::judge::{Fault, JudgeConfig, JudgeServer};

const SEC: u64 = 1_000_000_000;
/// The jobs' clock: `--now` of each run is this plus some hours.
const T0: u64 = 1_772_000_000 * SEC; // 2026-02-25T06:13:20Z

fn rfc3339(ns: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns as i64)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn s(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn trace_id(n: u32) -> Vec<u8> {
    let mut id = vec![0xB0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    id.extend_from_slice(&n.to_be_bytes());
    id
}

/// Trace `n`: a 2 s server root starting at `start`, with one chat call asking "question n".
fn trace(n: u32, start: u64) -> Vec<Span> {
    let root = Span {
        trace_id: trace_id(n),
        span_id: [n.to_be_bytes(), [0, 0, 0, 1]].concat(),
        name: "POST /chat".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 2 * SEC,
        ..Default::default()
    };
    let call = Span {
        trace_id: trace_id(n),
        span_id: [n.to_be_bytes(), [0, 0, 0, 2]].concat(),
        parent_span_id: root.span_id.clone(),
        name: "chat gpt-4o-mini".into(),
        kind: 3,
        start_time_unix_nano: start + SEC / 10,
        end_time_unix_nano: start + SEC,
        attributes: vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 120),
            int("gen_ai.usage.output_tokens", 40),
            s(
                "gen_ai.input.messages",
                &format!(
                    r#"[{{"role":"user","parts":[{{"type":"text","content":"question {n}"}}]}}]"#
                ),
            ),
            s(
                "gen_ai.output.messages",
                &format!(
                    r#"[{{"role":"assistant","parts":[{{"type":"text","content":"answer {n}"}}]}}]"#
                ),
            ),
        ],
        ..Default::default()
    };
    vec![root, call]
}

/// A span of trace `n` that arrives late: a tool call inside the trace's first second.
fn late_span(n: u32, trace_start: u64) -> Span {
    Span {
        trace_id: trace_id(n),
        span_id: [n.to_be_bytes(), [0, 0, 0, 7]].concat(),
        parent_span_id: [n.to_be_bytes(), [0, 0, 0, 1]].concat(),
        name: "tool lookup".into(),
        kind: 1,
        start_time_unix_nano: trace_start + SEC / 2,
        end_time_unix_nano: trace_start + SEC,
        ..Default::default()
    }
}

async fn ingest_spans(dir: &Path, opts: &IngestOpts, spans: Vec<Span>) -> TestResult {
    let _ = dir;
    let mut ingest = Ingest::start(opts)?;
    Grpc::connect(ingest.grpc_url())
        .await?
        .export(request(spans))
        .await?;
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());
    Ok(())
}

fn write_job(dir: &Path, store: &str, out: &str, judge: &JudgeServer) -> TestResult<PathBuf> {
    let path = dir.join("nightly.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "nightly"
store = "{store}"
where = "llm_calls > 0"
settle = "5m"
first_since = "7d"
lease = "1s"
out = "{out}"
work_dir = "{work}"

[judge]
url = "${{JUDGE_URL}}"
model = "${{JUDGE_MODEL:-gpt-4o-mini}}"
metrics = ["helpfulness"]
concurrency = 2
cache_dir = "{cache}"
"#,
            work = dir.join("work").display(),
            cache = dir.join("cache").display(),
        ),
    )?;
    let _ = judge;
    Ok(path)
}

fn job_cmd(
    job: &Path,
    now_ns: u64,
    judge: &JudgeServer,
    env: &[(String, String)],
) -> TestResult<Command> {
    let mut cmd = Command::new(bin_path("curate")?);
    cmd.args(["job", "run"])
        .arg(job)
        .args(["--now", &rfc3339(now_ns), "--json"])
        .env("JUDGE_URL", judge.openai_base_url())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(cmd)
}

fn run_job(
    job: &Path,
    now_ns: u64,
    judge: &JudgeServer,
    env: &[(String, String)],
) -> TestResult<Ran> {
    output_of(&mut job_cmd(job, now_ns, judge, env)?)
}

/// Dataset lines per trace id over every dataset the job wrote.
fn selected_per_trace(out_dir: &Path) -> TestResult<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(out_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".jsonl") && !name.ends_with(".results.jsonl") {
            for line in std::fs::read_to_string(&path)?.lines() {
                let v: Value = serde_json::from_str(line)?;
                *counts
                    .entry(v["trace_id"].as_str().unwrap_or_default().to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

/// Score spans in a local store per (judged trace, judged span, metric).
fn score_rows(store: &Path) -> TestResult<BTreeMap<(String, String, String), usize>> {
    let mut rows = BTreeMap::new();
    for (_, row) in local_store_rows(store)? {
        if let Some(metric) = row.attribute("gen_ai.evaluation.name") {
            let (trace, span) = row
                .links
                .first()
                .map(|l| (l.trace_id.clone(), l.span_id.clone()))
                .unwrap_or_default();
            *rows.entry((trace, span, metric.to_string())).or_insert(0) += 1;
        }
    }
    Ok(rows)
}

fn hex_id(n: u32) -> String {
    hex::encode(trace_id(n))
}

/// Three runs around new data (late spans for a selected trace, a trace still open at the
/// first run, a run killed while judging), then a run that finds nothing: every planted trace
/// is selected and judged exactly once across runs.
#[tokio::test(flavor = "multi_thread")]
async fn job_runs_select_and_judge_every_trace_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let opts = IngestOpts::local(dir.path());
    let judge = JudgeServer::start(JudgeConfig {
        latency: Duration::from_millis(150),
        ..JudgeConfig::default()
    })?;
    let out = dir.path().join("datasets");
    let job = write_job(
        dir.path(),
        &store.display().to_string(),
        &out.display().to_string(),
        &judge,
    )?;
    let t1 = T0 + 3600 * SEC;
    // Run 1: traces 1 and 2 have settled; trace 3 started 2 minutes ago and is still open.
    let mut spans = trace(1, t1 - 1800 * SEC);
    spans.extend(trace(2, t1 - 1200 * SEC));
    spans.extend(trace(3, t1 - 120 * SEC));
    ingest_spans(dir.path(), &opts, spans).await?;
    let json_logs = [("CURATE_LOG_FORMAT".to_string(), "json".to_string())];
    let (code, stdout, stderr) = run_job(&job, t1, &judge, &json_logs)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!(
        (report["selected"].as_u64(), report["judged"].as_u64()),
        (Some(2), Some(2)),
        "{report}"
    );
    // Structured logs: every stderr line a JSON object, the run's lines with its invocation.
    let logs: Vec<Value> = stderr
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let invocations: BTreeSet<&str> = logs
        .iter()
        .filter_map(|l| {
            l["span"]["invocation"]
                .as_str()
                .or(l["fields"]["invocation"].as_str())
        })
        .collect();
    assert_eq!(
        invocations.len(),
        1,
        "one run id across the run's lines: {stderr}"
    );
    assert!(
        logs.iter().filter(|l| !l["span"].is_null()).count() > 0,
        "lines logged inside the run carry its span: {stderr}"
    );
    let jobs_dir = out.join("nightly");
    let first = selected_per_trace(&jobs_dir)?;
    assert_eq!(
        first.keys().cloned().collect::<Vec<_>>(),
        vec![hex_id(1), hex_id(2)]
    );

    // Run 2, an hour later, is killed while judging: late spans of trace 1 arrived, and 40
    // new traces (about 3 s of judging; result lines are written in batches once a second).
    let t2 = t1 + 3600 * SEC;
    let mut spans = vec![late_span(1, t1 - 1800 * SEC)];
    for n in 10..50 {
        spans.extend(trace(n, t2 - 1800 * SEC + u64::from(n) * SEC));
    }
    ingest_spans(dir.path(), &opts, spans).await?;
    let mut child = job_cmd(&job, t2, &judge, &[])?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let results_lines = || -> usize {
        std::fs::read_dir(&jobs_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".results.jsonl"))
            .map(|e| std::fs::read_to_string(e.path()).map_or(0, |t| t.lines().count()))
            .sum()
    };
    while results_lines() < 2 + 1 {
        assert!(Instant::now() < deadline, "run 2 judged nothing in 60 s");
        assert!(
            child.try_wait()?.is_none(),
            "run 2 ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;

    // Run 3, ten minutes later (the 1 s lease of the dead run has passed): it finishes run 2's
    // window, then takes trace 60, which arrived meanwhile.
    let t3 = t2 + 600 * SEC;
    ingest_spans(dir.path(), &opts, trace(60, t3 - 900 * SEC)).await?;
    let (code, stdout, stderr) = run_job(&job, t3, &judge, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().count(),
        2,
        "the unfinished window, then the new one: {stdout}"
    );

    // Run 4 right after: nothing new.
    let (code, stdout, stderr) = run_job(&job, t3, &judge, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("nothing new"), "{stdout}");

    let mut expected: Vec<String> = [1, 2, 3, 60]
        .into_iter()
        .chain(10..50)
        .map(hex_id)
        .collect();
    expected.sort();
    let selected = selected_per_trace(&jobs_dir)?;
    assert_eq!(selected.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(
        selected.values().all(|&n| n == 1),
        "selected once each: {selected:?}"
    );

    // Judged once each: one score span per (judged span, metric) in the store, and only
    // spans of the planted traces judged.
    let scores = score_rows(&store)?;
    let judged: std::collections::BTreeSet<String> =
        scores.keys().map(|(trace, _, _)| trace.clone()).collect();
    assert_eq!(judged.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(scores.len(), expected.len(), "one call each: {scores:?}");
    assert!(scores.values().all(|&n| n == 1), "{scores:?}");
    // Pairs in flight when run 2 was killed may be asked twice (concurrency 2), no more.
    assert!(
        judge.request_count() <= expected.len() + 2,
        "{} requests",
        judge.request_count()
    );
    Ok(())
}

/// A trace taken by one run gets an LLM call starting 40 minutes after it began, more than the
/// job's `lookback` (10m): the next run no longer sees the trace's first spans, and must still
/// not take the trace as new, nor wait for it to settle.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_call_beyond_the_lookback_does_not_select_its_trace_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let opts = IngestOpts::local(dir.path());
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let out = dir.path().join("datasets");
    let job = write_job(
        dir.path(),
        &store.display().to_string(),
        &out.display().to_string(),
        &judge,
    )?;
    std::fs::write(
        &job,
        std::fs::read_to_string(&job)?.replace("settle = ", "lookback = \"10m\"\nsettle = "),
    )?;
    let t1 = T0 + 3600 * SEC;
    ingest_spans(dir.path(), &opts, trace(1, t1 - 1800 * SEC)).await?;
    let (code, stdout, stderr) = run_job(&job, t1, &judge, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Before run 2: that call, another span of trace 1 still running, and trace 2, which
    // starts after the running span (trace 1 is taken: its running span does not hold back
    // the window).
    let t2 = t1 + 3600 * SEC;
    let mut late = trace(1, t1 + 600 * SEC).remove(1);
    late.span_id = [1u32.to_be_bytes(), [0, 0, 0, 9]].concat();
    let mut running = late_span(1, t1);
    (running.start_time_unix_nano, running.end_time_unix_nano) = (t2 - 2400 * SEC, t2);
    let mut spans = vec![late, running];
    spans.extend(trace(2, t2 - 1800 * SEC));
    ingest_spans(dir.path(), &opts, spans).await?;
    let (code, stdout, stderr) = run_job(&job, t2, &judge, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!(report["selected"], 1, "trace 2 only: {report}");
    let selected = selected_per_trace(&out.join("nightly"))?;
    assert_eq!(
        selected,
        BTreeMap::from([(hex_id(1), 1), (hex_id(2), 1)]),
        "each trace in one dataset"
    );
    assert_eq!(judge.request_count(), 2);
    Ok(())
}

/// A run that fails before judging (an unreadable span file) or while judging (the judge
/// answers 500) exits 1 and records the failure, so the next run resumes at once instead of
/// waiting out the 1h lease; the run that succeeds judges each trace once.
#[tokio::test(flavor = "multi_thread")]
async fn failed_runs_are_resumed_at_once_by_the_next_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let opts = IngestOpts::local(dir.path());
    let healthy = JudgeServer::start(JudgeConfig::default())?;
    let failing = JudgeServer::start(JudgeConfig {
        faults: vec![(
            "question".into(),
            Fault::Status {
                code: 500,
                retry_after_secs: None,
            },
            u32::MAX,
        )],
        ..JudgeConfig::default()
    })?;
    let out = dir.path().join("datasets");
    let job = write_job(
        dir.path(),
        &store.display().to_string(),
        &out.display().to_string(),
        &healthy,
    )?;
    std::fs::write(
        &job,
        std::fs::read_to_string(&job)?
            .replace("lease = \"1s\"", "lease = \"1h\"")
            .replace("concurrency = 2", "concurrency = 2\nmax_retries = 0"),
    )?;
    let t1 = T0 + 3600 * SEC;
    let spans: Vec<Span> = (1..5)
        .flat_map(|n| trace(n, t1 - 1800 * SEC + u64::from(n) * SEC))
        .collect();
    ingest_spans(dir.path(), &opts, spans).await?;

    // Run 1: a span file that is not Parquet makes selecting fail.
    let partition = local_store_rows(&store)?
        .into_iter()
        .map(|(p, _)| p)
        .next()
        .ok_or("no span files")?;
    let broken = store
        .join(partition)
        .join("01KZZZZZZZZZZZZZZZZZZZZZZZ.parquet");
    std::fs::write(&broken, "not parquet")?;
    let (code, stdout, stderr) = run_job(&job, t1, &healthy, &[])?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    std::fs::remove_file(&broken)?;

    // Run 2, at once: the judge fails every request.
    let (code, stdout, stderr) = run_job(&job, t1, &failing, &[])?;
    assert_eq!(code, 1, "resumed, then failed judging: {stdout}{stderr}");
    assert!(failing.request_count() >= 4);

    // Run 3, at once: finishes the window.
    let (code, stdout, stderr) = run_job(&job, t1, &healthy, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!(
        (report["selected"].as_u64(), report["judged"].as_u64()),
        (Some(4), Some(4)),
        "{report}"
    );
    assert_eq!(healthy.request_count(), 4);
    let scores = score_rows(&store)?;
    assert_eq!(scores.len(), 4, "{scores:?}");
    assert!(scores.values().all(|&n| n == 1), "{scores:?}");
    Ok(())
}

/// A second run while the first holds the job exits 3 and says why; --dry-run says what the
/// next run would do and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_runs_are_refused_and_dry_runs_change_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let opts = IngestOpts::local(dir.path());
    let judge = JudgeServer::start(JudgeConfig {
        latency: Duration::from_millis(400),
        ..JudgeConfig::default()
    })?;
    let out = dir.path().join("datasets");
    let job = write_job(
        dir.path(),
        &store.display().to_string(),
        &out.display().to_string(),
        &judge,
    )?;
    // A lease long enough to cover the first run.
    std::fs::write(
        &job,
        std::fs::read_to_string(&job)?.replace("lease = \"1s\"", "lease = \"1h\""),
    )?;
    let t1 = T0 + 3600 * SEC;
    let spans: Vec<Span> = (1..7)
        .flat_map(|n| trace(n, t1 - 1800 * SEC + u64::from(n) * SEC))
        .collect();
    ingest_spans(dir.path(), &opts, spans).await?;

    // The dry run plans the window and prices it, and touches neither store, outputs nor judge.
    let mut dry = job_cmd(&job, t1, &judge, &[])?;
    dry.arg("--dry-run");
    let (code, stdout, stderr) = output_of(&mut dry)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let plan: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        (plan["selected"].as_u64(), plan["pairs_to_judge"].as_u64()),
        (Some(6), Some(6)),
        "{plan}"
    );
    assert!(
        plan["estimated_judge_cost_usd"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "{plan}"
    );
    assert!(!store.join("_jobs").exists() && !out.exists());
    assert_eq!(judge.request_count(), 0);

    let first = job_cmd(&job, t1, &judge, &[])?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let state_dir = store.join("_jobs/nightly/state");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&state_dir).map_or(0, |d| d.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first run claimed nothing in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, stdout, stderr) = run_job(&job, t1, &judge, &[])?;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("job nightly"), "{stderr}");
    let first = first.wait_with_output()?;
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(judge.request_count(), 6, "judged once, by the first run");
    Ok(())
}

/// Retention deletes whole hour partitions older than the cutoff, per tenant, and jobs' lists
/// of taken traces from before the cutoff; --dry-run only lists them.
#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_partitions_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let now = T0 + 40 * 24 * 3600 * SEC;
    let mut opts = IngestOpts::local(dir.path());
    ingest_spans(
        dir.path(),
        &opts,
        [trace(1, T0), trace(2, now - 3600 * SEC)].concat(),
    )
    .await?;
    opts = opts.arg("--tenant", "other");
    opts.wal_dir = dir.path().join("wal-other");
    ingest_spans(dir.path(), &opts, trace(3, T0)).await?;
    let partitions = |store: &Path| -> TestResult<Vec<String>> {
        let mut p: Vec<String> = local_store_rows(store)?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        p.sort();
        p.dedup();
        Ok(p)
    };
    let before = partitions(&store)?;
    assert_eq!(before.len(), 3, "{before:?}");
    let retention = |extra: &[&str]| -> TestResult<Ran> {
        output_of(
            Command::new(bin_path("curate")?)
                .args(["retention", "--store"])
                .arg(&store)
                .args(["--older-than", "30d", "--now", &rfc3339(now), "--json"])
                .args(extra),
        )
    };
    // A job's lists of taken traces: one of a window that ended before the cutoff, one after.
    let lists = store.join("_jobs/nightly/taken");
    std::fs::create_dir_all(&lists)?;
    let stamp = |ns: u64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns as i64)
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
    };
    let (old_list, new_list) = (
        lists.join(format!("{}.txt", stamp(T0 + 3600 * SEC))),
        lists.join(format!("{}.txt", stamp(now - 3600 * SEC))),
    );
    for l in [&old_list, &new_list] {
        std::fs::write(l, format!("{}\n", hex_id(1)))?;
    }

    let (code, stdout, stderr) = retention(&["--dry-run"])?;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        (
            report["partitions"].as_array().map(Vec::len),
            report["job_lists"].as_u64()
        ),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(partitions(&store)?, before, "a dry run deletes nothing");
    assert!(old_list.exists());

    let (code, stdout, stderr) = retention(&["--tenant", "other"])?;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        report["partitions"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let after = partitions(&store)?;
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !p.contains("tenant=other")),
        "{after:?}"
    );
    assert!(
        old_list.exists(),
        "a job's list also names other tenants' traces"
    );

    let (code, _, stderr) = retention(&[])?;
    assert_eq!(code, 0, "{stderr}");
    let after = partitions(&store)?;
    assert_eq!(after.len(), 1, "only the recent partition stays: {after:?}");
    assert_eq!((old_list.exists(), new_list.exists()), (false, true));

    let (code, _, stderr) = output_of(
        Command::new(bin_path("curate")?)
            .args(["retention", "--older-than", "soon", "--store"])
            .arg(&store),
    )?;
    assert_eq!(code, 2);
    assert!(stderr.contains("--older-than"), "{stderr}");
    Ok(())
}

/// The same job on the S3 test server: state, datasets and score spans in the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn job_runs_on_s3() -> TestResult {
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let prefix = format!("jobs/{}", rand::random::<u32>());
    let store = format!("s3://{}/{prefix}/store", s3.bucket);
    let out = format!("s3://{}/{prefix}/datasets", s3.bucket);
    let mut opts = IngestOpts::local(dir.path());
    opts.store = store.clone();
    opts.env = s3.env.clone();
    let t1 = T0 + 3600 * SEC;
    let spans: Vec<Span> = (1..4)
        .flat_map(|n| trace(n, t1 - 1800 * SEC + u64::from(n) * SEC))
        .collect();
    ingest_spans(dir.path(), &opts, spans).await?;
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let job = write_job(dir.path(), &store, &out, &judge)?;
    let (code, stdout, stderr) = run_job(&job, t1, &judge, &s3.env)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!(
        (report["selected"].as_u64(), report["judged"].as_u64()),
        (Some(3), Some(3)),
        "{report}"
    );
    let (code, stdout, stderr) = run_job(&job, t1, &judge, &s3.env)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("nothing new"), "{stdout}");

    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let client = s3.client()?;
    let keys: Vec<String> = client
        .list(Some(&object_store::path::Path::from(prefix.as_str())))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await?;
    let count = |f: &dyn Fn(&str) -> bool| keys.iter().filter(|k| f(k)).count();
    assert!(
        count(&|k| k.contains("/store/_jobs/nightly/state/")) >= 3,
        "{keys:?}"
    );
    assert_eq!(
        count(&|k| k.contains("/datasets/nightly/") && k.ends_with(".results.jsonl")),
        1,
        "{keys:?}"
    );
    assert_eq!(
        count(&|k| k.contains("/datasets/nightly/") && k.ends_with(".report.json")),
        1,
        "{keys:?}"
    );
    assert!(
        count(&|k| k.contains("/store/spans/") && k.ends_with(".parquet")) >= 2,
        "{keys:?}"
    );
    let (code, stdout, stderr) = output_of(
        Command::new(bin_path("curate")?)
            .args([
                "--store",
                &store,
                "--all",
                "--json",
                "--sql",
                "SELECT count(*) AS n FROM evals",
            ])
            .envs(s3.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(stdout.trim())?["n"],
        3,
        "{stdout}"
    );
    Ok(())
}

/// examples/nightly-job.toml runs as shipped, from a directory holding the store ./data, with
/// the judge named by EVAL_JUDGE_URL and EVAL_JUDGE_MODEL.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_job_file_runs_as_shipped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut opts = IngestOpts::local(dir.path());
    opts.store = dir.path().join("data").display().to_string();
    let now = T0 + 3600 * SEC;
    let mut spans = Vec::new();
    for n in 1..5 {
        let mut t = trace(n, now - 3000 * SEC + u64::from(n) * 60 * SEC);
        if n % 2 == 0 {
            t[0].status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                code: 2,
                message: "upstream timeout".into(),
            });
        }
        spans.extend(t);
    }
    ingest_spans(dir.path(), &opts, spans).await?;
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let example = trace2eval_tests::harness::repo_root().join("examples/nightly-job.toml");
    let run = || {
        output_of(
            Command::new(bin_path("curate")?)
                .current_dir(dir.path())
                .args(["job", "run"])
                .arg(&example)
                .args(["--now", &rfc3339(now), "--json"])
                .env("EVAL_JUDGE_URL", judge.openai_base_url())
                .env("EVAL_JUDGE_MODEL", "gpt-4o-mini")
                .env("HOME", dir.path())
                .env_remove("XDG_CACHE_HOME")
                .env_remove("TRACE2EVAL_STORE")
                .env_remove("TRACE2EVAL_DATASETS"),
        )
    };
    let (code, stdout, stderr) = run()?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!(report["selected"], 2, "the two erroring traces: {report}");
    assert_eq!(
        report["judged"], 2,
        "helpfulness; faithfulness skipped (no context): {report}"
    );
    assert_eq!(report["skipped"], 2, "{report}");
    assert!(dir.path().join("datasets/nightly").is_dir());
    let (code, stdout, _) = run()?;
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing new"), "{stdout}");
    Ok(())
}

/// A store whose two closed hour partitions hold `files` small files each: `files` ingest
/// runs, each sending 5 traces into both hours. Returns the span count.
async fn small_files_store(dir: &Path, opts: &IngestOpts, files: u32) -> TestResult<usize> {
    let mut spans_sent = 0;
    for round in 0..files {
        let spans = round_spans(round);
        spans_sent += spans.len();
        ingest_spans(dir, opts, spans).await?;
    }
    Ok(spans_sent)
}

/// What round `round` of [`small_files_store`] sends: 5 traces into each of two hours.
fn round_spans(round: u32) -> Vec<Span> {
    let mut spans = Vec::new();
    for k in 0..5 {
        let n = round * 10 + k;
        spans.extend(trace(n, T0 + u64::from(n) * SEC));
        spans.extend(trace(1000 + n, T0 + 3600 * SEC + u64::from(n) * SEC));
    }
    spans
}

/// [`small_files_store`] of `files` rounds, then round `resent` sent again, as a client that
/// lost the answer re-sends a request: (spans sent once, copies stored).
async fn store_with_copies(dir: &Path, files: u32, resent: u32) -> TestResult<(usize, usize)> {
    let opts = IngestOpts::local(dir);
    let spans = small_files_store(dir, &opts, files).await?;
    let resent = round_spans(resent);
    let copies = resent.len();
    ingest_spans(dir, &opts, resent).await?;
    Ok((spans, copies))
}

/// A client re-sends a request whose answer it lost (OTLP delivery is at least once), so its
/// spans are stored twice: `spans` and `llm_calls` show both copies until compaction, which
/// keeps one and reports the copies it dropped; `traces` counts the usage once throughout.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_one_copy_of_spans_delivered_twice() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (spans, copies) = store_with_copies(dir.path(), 3, 1).await?;
    let store = dir.path().join("store").display().to_string();
    let (code, stdout, stderr) = curate_count(&store, &[])?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(r#"{{"n":{},"d":{spans}}}"#, spans + copies),
        "before compaction `spans` has every stored copy"
    );
    let calls = |store: &str| -> TestResult<String> {
        let (code, stdout, stderr) = output_of(
            Command::new(bin_path("curate")?)
                .args(["--store", store, "--all", "--json", "--sql"])
                .arg(
                    "SELECT (SELECT count(*) FROM llm_calls) AS calls, \
                     (SELECT count(DISTINCT span_id) FROM llm_calls) AS distinct_calls, \
                     (SELECT sum(input_tokens) FROM traces) AS tokens",
                ),
        )?;
        assert_eq!(code, 0, "{stderr}");
        Ok(stdout.trim().to_string())
    };
    // 30 traces of one chat call each, 120 input tokens per call; round 1 re-sent 10 calls.
    let tokens = 30 * 120;
    assert_eq!(
        calls(&store)?,
        format!(r#"{{"calls":40,"distinct_calls":30,"tokens":{tokens}}}"#)
    );

    let (code, stdout, stderr) = compact(&store, &["--grace", "0s"], &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        (
            report["files_after"].as_u64(),
            report["copies_dropped"].as_u64()
        ),
        (Some(2), Some(copies as u64)),
        "{report}"
    );
    let (_, stdout, _) = curate_count(&store, &[])?;
    assert_eq!(stdout.trim(), format!(r#"{{"n":{spans},"d":{spans}}}"#));
    assert_eq!(local_store_rows(Path::new(&store))?.len(), spans);
    assert_eq!(
        calls(&store)?,
        format!(r#"{{"calls":30,"distinct_calls":30,"tokens":{tokens}}}"#)
    );
    Ok(())
}

/// A merged file whose spans decode to more than `--memory` is written in passes over its
/// sources, one range of its sorted rows each: the same rows in the same order as one pass
/// writes, copies of spans delivered twice dropped across the passes. A `--memory` that is not
/// a size is refused before anything is touched.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_in_passes_writes_what_one_pass_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (spans, copies) = store_with_copies(dir.path(), 4, 2).await?;
    let one = dir.path().join("store");
    let passes = dir.path().join("passes");
    copy_tree(&one, &passes)?;
    let store_of = |p: &Path| p.display().to_string();

    for bad in ["0", "lots", "3PiB"] {
        let (code, _, stderr) = compact(&store_of(&passes), &["--memory", bad], &[])?;
        assert_eq!(code, 2, "--memory {bad}: {stderr}");
        assert!(stderr.contains("--memory"), "{stderr}");
    }
    assert_eq!(
        compaction_records(&passes),
        0,
        "a refused run changes nothing"
    );

    let (code, stdout, stderr) = compact(&store_of(&one), &["--grace", "0s"], &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stderr.contains("in passes"), "{stderr}");
    let one_report: Value = serde_json::from_str(stdout.trim())?;
    let log = [("RUST_LOG".to_string(), "curate=info".to_string())];
    let (code, stdout, stderr) = compact(
        &store_of(&passes),
        &["--grace", "0s", "--memory", "4KiB"],
        &log,
    )?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("writing it in passes"), "{stderr}");
    let passes_report: Value = serde_json::from_str(stdout.trim())?;
    for key in ["files_after", "copies_dropped"] {
        assert_eq!(one_report[key], passes_report[key], "{key}");
    }
    assert_eq!(
        passes_report["copies_dropped"].as_u64(),
        Some(copies as u64)
    );

    let rows = |store: &Path| -> TestResult<Vec<(String, schemas::read::SpanRow)>> {
        let mut rows = local_store_rows(store)?;
        // One file per partition: the order within each is the file's.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    };
    let (one_rows, passes_rows) = (rows(&one)?, rows(&passes)?);
    assert_eq!(one_rows.len(), spans);
    let key = |(p, r): &(String, schemas::read::SpanRow)| {
        (
            p.clone(),
            r.trace_id.clone(),
            r.start_time_ns,
            r.span_id.clone(),
        )
    };
    assert!(
        one_rows.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "each file is sorted by trace, start and span id, one copy of each span"
    );
    assert!(
        one_rows == passes_rows,
        "the files written in passes differ"
    );
    Ok(())
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) -> TestResult {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn curate_count(store: &str, env: &[(String, String)]) -> TestResult<(i32, String, String)> {
    output_of(
        Command::new(bin_path("curate")?)
            .args(["--store", store, "--all", "--json", "--sql"])
            .arg("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )
}

fn compact_cmd(store: &str, extra: &[&str], env: &[(String, String)]) -> TestResult<Command> {
    let mut cmd = Command::new(bin_path("curate")?);
    cmd.args([
        "compact",
        "--store",
        store,
        "--json",
        "--now",
        &rfc3339(T0 + 30 * 24 * 3600 * SEC),
    ])
    .args(extra)
    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(cmd)
}

fn compact(store: &str, extra: &[&str], env: &[(String, String)]) -> TestResult<Ran> {
    output_of(&mut compact_cmd(store, extra, env)?)
}

/// Compaction records in a local store.
fn compaction_records(store: &Path) -> usize {
    std::fs::read_dir(store.join("_compaction")).map_or(0, |d| d.count())
}

/// Two compactions of one store at once: the first pauses after listing the files (a test
/// hook) while the second compacts everything, with the sources kept for the grace period or
/// deleted at once. Each partition is compacted by one run only: no span is written twice.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_compactions_write_each_span_once() -> TestResult {
    for grace in ["10m", "0s"] {
        let dir = tempfile::tempdir()?;
        let opts = IngestOpts::local(dir.path());
        let spans = small_files_store(dir.path(), &opts, 3).await?;
        let store = dir.path().join("store").display().to_string();
        let want = format!(r#"{{"n":{spans},"d":{spans}}}"#);
        let go = dir.path().join("go");
        let paused = compact_cmd(&store, &["--grace", grace], &[])?
            .env(
                "CURATE_TEST_HOOK",
                format!("pause-at=listed,until={}", go.display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.path().join("go.paused").exists() {
            assert!(
                Instant::now() < deadline,
                "no pause in 60 s (grace {grace})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (code, stdout, stderr) = compact(&store, &["--grace", grace], &[])?;
        assert_eq!(code, 0, "{stdout}{stderr}");
        let second: Value = serde_json::from_str(stdout.trim())?;
        assert_eq!(second["files_after"], 2, "{second}");
        let first = resume_paused(paused, &go)?;
        assert_eq!(
            (first["files_after"].as_u64(), first["busy"].as_u64()),
            (Some(0), Some(2)),
            "the paused run left both partitions to the other (grace {grace}): {first}"
        );
        let (code, stdout, stderr) = curate_count(&store, &[])?;
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.trim(), want, "grace {grace}");

        // Once the sources are deleted, the files hold each span once.
        let (code, stdout, stderr) = compact(&store, &["--grace", "0s"], &[])?;
        assert_eq!(code, 0, "{stdout}{stderr}");
        let rows = local_store_rows(Path::new(&store))?;
        let ids: std::collections::BTreeSet<(String, String)> = rows
            .iter()
            .map(|(_, r)| (r.trace_id.clone(), r.span_id.clone()))
            .collect();
        assert_eq!((rows.len(), ids.len()), (spans, spans), "grace {grace}");
        assert_eq!(walk_parquet(&dir.path().join("store/spans")), 2);
        assert_eq!(compaction_records(Path::new(&store)), 0);
    }
    Ok(())
}

/// Compaction under a reader querying in a loop: every answer counts each span once. A query
/// may only fail when it took longer than the grace period, which is what the grace is for
/// (replaced files are deleted once it has passed since the merged file appeared); on a
/// loaded machine a query process can take that long.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_under_concurrent_reads_counts_every_span_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = IngestOpts::local(dir.path());
    let spans = small_files_store(dir.path(), &opts, 6).await?;
    let store = dir.path().join("store").display().to_string();
    assert_eq!(local_store_rows(Path::new(&store))?.len(), spans);
    assert_eq!(walk_parquet(&dir.path().join("store/spans")), 12);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, store) = (stop.clone(), store.clone());
        std::thread::spawn(
            move || -> TestResult<Vec<Result<String, (Duration, String)>>> {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    let (code, stdout, stderr) = curate_count(&store, &[])?;
                    answers.push(if code == 0 {
                        Ok(stdout.trim().to_string())
                    } else {
                        Err((started.elapsed(), stderr))
                    });
                }
                Ok(answers)
            },
        )
    };
    let grace = Duration::from_secs(2);
    let grace_arg = format!("{}s", grace.as_secs());
    let (code, stdout, stderr) = compact(&store, &["--grace", &grace_arg], &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        (
            report["partitions"].as_u64(),
            report["files_before"].as_u64(),
            report["files_after"].as_u64()
        ),
        (Some(2), Some(12), Some(2)),
        "{report}"
    );
    std::thread::sleep(grace + Duration::from_millis(500));
    let (code, stdout, stderr) = compact(&store, &["--grace", &grace_arg], &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = reader.join().map_err(|_| "reader panicked")??;
    let want = format!(r#"{{"n":{spans},"d":{spans}}}"#);
    let counted: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert!(counted.len() >= 3, "{answers:?}");
    assert!(
        counted.iter().all(|a| **a == want),
        "{want} expected: {answers:?}"
    );
    for (took, stderr) in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert!(
            *took > grace && stderr.contains("not found"),
            "a query of {took:?}, within the {grace:?} grace, failed: {stderr}"
        );
    }

    // Afterwards: one sorted file per partition, the records gone, every span once.
    let rows = local_store_rows(Path::new(&store))?;
    let parts: std::collections::BTreeSet<&String> = rows.iter().map(|(p, _)| p).collect();
    assert_eq!(parts.len(), 2);
    let count_files = walk_parquet(&dir.path().join("store/spans"));
    assert_eq!(count_files, 2);
    for part in &parts {
        let keys: Vec<(&str, i64, &str)> = rows
            .iter()
            .filter(|(p, _)| p == *part)
            .map(|(_, r)| (r.trace_id.as_str(), r.start_time_ns, r.span_id.as_str()))
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] <= w[1]),
            "{part}: rows not sorted by trace id, start and span id"
        );
    }
    assert!(
        !dir.path()
            .join("store/_compaction")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );
    let ids: std::collections::BTreeSet<(String, String)> = rows
        .iter()
        .map(|(_, r)| (r.trace_id.clone(), r.span_id.clone()))
        .collect();
    assert_eq!((rows.len(), ids.len()), (spans, spans));
    Ok(())
}

/// Lets a compaction paused by the test hook go on (the `go` file), and returns its JSON report
/// once it has exited 0.
fn resume_paused(paused: std::process::Child, go: &Path) -> TestResult<Value> {
    std::fs::write(go, "")?;
    let out = paused.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_str(stdout.trim())?)
}

fn walk_parquet(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_parquet(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

/// The same on the S3 test server, where the record is created with `If-None-Match`.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_compactions_on_s3_write_each_span_once() -> TestResult {
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let prefix = format!("overlap/{}", rand::random::<u32>());
    let store = format!("s3://{}/{prefix}", s3.bucket);
    let mut opts = IngestOpts::local(dir.path());
    opts.store = store.clone();
    opts.env = s3.env.clone();
    let spans = small_files_store(dir.path(), &opts, 3).await?;
    let want = format!(r#"{{"n":{spans},"d":{spans}}}"#);
    let go = dir.path().join("go");
    let paused = compact_cmd(&store, &[], &s3.env)?
        .env(
            "CURATE_TEST_HOOK",
            format!("pause-at=listed,until={}", go.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.path().join("go.paused").exists() {
        assert!(Instant::now() < deadline, "no pause in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stdout, stderr) = compact(&store, &[], &s3.env)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let first = resume_paused(paused, &go)?;
    assert_eq!(
        (first["files_after"].as_u64(), first["busy"].as_u64()),
        (Some(0), Some(2)),
        "{first}"
    );
    let (code, stdout, stderr) = curate_count(&store, &s3.env)?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), want);
    let (code, stdout, stderr) = compact(&store, &["--grace", "0s"], &s3.env)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let keys: Vec<String> = s3
        .client()?
        .list(Some(&object_store::path::Path::from(prefix.as_str())))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await?;
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(".parquet")).count(),
        2,
        "one merged file per partition: {keys:?}"
    );
    let (_, stdout, _) = curate_count(&store, &s3.env)?;
    assert_eq!(stdout.trim(), want);
    Ok(())
}

/// A compaction stopped at each of its steps, then killed at random points, then run to the
/// end: no duplicates, no loss, and readers count every span once in between.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_killed_at_random_points_loses_and_duplicates_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = IngestOpts::local(dir.path());
    let spans = small_files_store(dir.path(), &opts, 8).await?;
    let store = dir.path().join("store").display().to_string();
    let want = format!(r#"{{"n":{spans},"d":{spans}}}"#);
    let compact_args = ["--grace", "0s", "--target-size", "40KiB"];
    // Files of about 16 KiB in groups of two: per partition, a record naming 4 targets and
    // their sources. Stopped (by a test hook) after the record, after a target, and after a
    // source deletion: each run leaves the compaction half done, as a kill there would.
    for step in ["recorded", "written", "retiring"] {
        let hook = [("CURATE_TEST_HOOK".to_string(), format!("stop-at={step}"))];
        let (code, stdout, stderr) = compact(&store, &compact_args, &hook)?;
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(stderr.contains(step), "{stderr}");
        assert!(
            compaction_records(Path::new(&store)) > 0,
            "stopped at {step}: a compaction record is left"
        );
        let (code, stdout, stderr) = curate_count(&store, &[])?;
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.trim(), want, "after a stop at {step}");
    }
    // Then killed at times: a debug-build run takes about 20 ms with its start, so kills
    // after 5..59 ms land anywhere in it (where exactly varies with the machine).
    for round in 0..10u64 {
        let mut child = Command::new(bin_path("curate")?)
            .args(["compact", "--store", &store])
            .args(compact_args)
            .args(["--now", &rfc3339(T0 + 30 * 24 * 3600 * SEC)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(5 + 6 * round));
        let _ = child.kill();
        child.wait()?;
        let (code, stdout, stderr) = curate_count(&store, &[])?;
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.trim(), want, "after a kill in round {round}");
        eprintln!(
            "round {round}: {} span files, {} compaction records",
            walk_parquet(&dir.path().join("store/spans")),
            compaction_records(Path::new(&store))
        );
    }
    // Run to completion (twice: the second finds nothing left to do).
    for _ in 0..2 {
        let (code, stdout, stderr) = compact(&store, &["--grace", "0s"], &[])?;
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let rows = local_store_rows(Path::new(&store))?;
    let ids: std::collections::BTreeSet<(String, String)> = rows
        .iter()
        .map(|(_, r)| (r.trace_id.clone(), r.span_id.clone()))
        .collect();
    assert_eq!(
        (rows.len(), ids.len()),
        (spans, spans),
        "no duplicates, no loss in the files"
    );
    let (_, stdout, _) = curate_count(&store, &[])?;
    assert_eq!(stdout.trim(), want);
    Ok(())
}

/// Compaction on the S3 test server.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_works_on_s3() -> TestResult {
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let prefix = format!("compact/{}", rand::random::<u32>());
    let store = format!("s3://{}/{prefix}", s3.bucket);
    let mut opts = IngestOpts::local(dir.path());
    opts.store = store.clone();
    opts.env = s3.env.clone();
    let spans = small_files_store(dir.path(), &opts, 3).await?;
    let want = format!(r#"{{"n":{spans},"d":{spans}}}"#);
    // Options also come from the environment: --grace 0s.
    let mut env = s3.env.clone();
    env.push(("CURATE_GRACE".into(), "0s".into()));
    let (code, stdout, stderr) = compact(&store, &[], &env)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        (
            report["files_before"].as_u64(),
            report["files_after"].as_u64()
        ),
        (Some(6), Some(2)),
        "{report}"
    );
    let (code, stdout, stderr) = curate_count(&store, &s3.env)?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), want);
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let keys: Vec<String> = s3
        .client()?
        .list(Some(&object_store::path::Path::from(prefix.as_str())))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await?;
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(".parquet")).count(),
        2,
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains("/_compaction/")),
        "{keys:?}"
    );

    // Retention on S3: 30 days and 90 minutes later, only the first hour is older than 30d.
    let (code, stdout, stderr) = output_of(
        Command::new(bin_path("curate")?)
            .args([
                "retention",
                "--store",
                &store,
                "--older-than",
                "30d",
                "--json",
            ])
            .args(["--now", &rfc3339(T0 + (30 * 24 * 3600 + 5400) * SEC)])
            .envs(s3.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )?;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        report["partitions"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let (_, stdout, _) = curate_count(&store, &s3.env)?;
    let left: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(left["n"].as_u64(), Some(spans as u64 / 2), "{left}");
    Ok(())
}
