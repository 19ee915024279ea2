//! eval-runner end to end: the real binary against the fake judge (tests/judge.rs), score spans
//! back through the real `ingest` or straight into a store, and `curate` reading them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use trace2eval_tests::client::Grpc;
use trace2eval_tests::harness::{
    Ingest, IngestOpts, Ran, TestResult, bin_path, local_store_rows, output_of,
};
use trace2eval_tests::judge::{JudgeConfig, JudgeServer, Verdict};
use trace2eval_tests::planted::planted;

use crate::curate_rules::curate;

/// eval-runner with `args` and only the API keys given in `env`.
fn eval_runner_cmd(args: &[&str], env: &[(&str, &str)]) -> TestResult<Command> {
    let mut cmd = Command::new(bin_path("eval-runner")?);
    cmd.args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("EVAL_JUDGE_API_KEY")
        .envs(env.iter().copied());
    Ok(cmd)
}

/// Runs eval-runner to completion; returns (exit code, stdout, stderr).
fn eval_runner(args: &[&str], env: &[(&str, &str)]) -> TestResult<Ran> {
    output_of(&mut eval_runner_cmd(args, env)?)
}

/// Starts eval-runner and returns once its results file `out` has `lines` lines.
fn spawn_until_results(args: &[&str], out: &Path, lines: usize) -> TestResult<Child> {
    let mut child = eval_runner_cmd(args, &[])?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(out).map_or(0, |t| t.lines().count()) < lines {
        assert!(Instant::now() < deadline, "no {lines} results after 60 s");
        assert!(
            child.try_wait()?.is_none(),
            "finished before it could be stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn jsonl(path: &Path) -> TestResult<Vec<Value>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// An `items` dataset line with ids derived from `n`.
fn item(n: u32, question: &str, answer: &str) -> String {
    json!({
        "id": format!("item-{n}"),
        "trace_id": format!("{:032x}", 0xE0_0000 + n),
        "span_id": format!("{:016x}", 0x5000 + n),
        "input": [{"role": "user", "content": question}],
        "output": answer,
        "context": ["The office opens at nine."],
        "expected_output": null,
        "metadata": {"model": "gpt-4o-mini"},
    })
    .to_string()
}

fn write_lines(path: &Path, lines: &[String]) -> TestResult {
    std::fs::write(path, lines.join("\n") + "\n")?;
    Ok(())
}

/// The issue's loop: ingest -> curate -> eval-runner -> score spans through ingest -> `evals`
/// shows them and `low-score` selects exactly the traces the judge scored low.
#[tokio::test(flavor = "multi_thread")]
async fn scores_come_back_through_ingest_and_low_score_selects_the_low_traces() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted();
    let mut ingest = Ingest::start(&IngestOpts::local(dir.path()))?;
    Grpc::connect(ingest.grpc_url())
        .await?
        .export(p.request.clone())
        .await?;
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());

    let dataset = dir.path().join("dataset.jsonl");
    let (code, _, stderr) = curate(
        dir.path(),
        &[
            "--rule",
            "slow",
            "--rule",
            "errors",
            "--out",
            &dataset.display().to_string(),
        ],
    )?;
    assert_eq!(code, 0, "{stderr}");
    let items = jsonl(&dataset)?;
    assert!(items.len() >= 3, "{items:?}");

    // The judge finds two answers unhelpful: raw 1 and 2 on 1..5 are 0.0 and 0.25.
    let judge = JudgeServer::start(JudgeConfig {
        api_key: Some("sk-test-secret-1".into()),
        verdicts: vec![
            (
                "question of slow 30s".into(),
                Verdict::new(1.0, None, "unhelpful"),
            ),
            (
                "question of tool error".into(),
                Verdict::new(2.0, None, "weak"),
            ),
        ],
        default_verdict: Verdict::new(5.0, None, "helpful"),
        ..JudgeConfig::default()
    })?;
    let mut opts = IngestOpts::local(dir.path());
    opts.wal_dir = dir.path().join("wal-scores");
    let mut ingest = Ingest::start(&opts)?;
    let results = dir.path().join("results.jsonl");
    let emit = format!("otlp-grpc://{}", ingest.grpc);
    let (code, stdout, stderr) = eval_runner(
        &[
            "--dataset",
            &dataset.display().to_string(),
            "--metrics",
            "helpfulness,relevance",
            "--judge",
            "openai",
            "--judge-url",
            &judge.openai_base_url(),
            "--judge-model",
            "gpt-4o-mini",
            "--out",
            &results.display().to_string(),
            "--emit",
            &emit,
            "--cache-dir",
            &dir.path().join("cache").display().to_string(),
            "--json",
        ],
        &[("OPENAI_API_KEY", "sk-test-secret-1")],
    )?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains("sk-test-secret-1"),
        "the key leaked"
    );
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());
    let summary: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(summary["metrics"]["helpfulness"]["n"], items.len());
    // Judge tokens priced with the shipped table (gpt-4o-mini: 0.15 / 0.60 USD per million).
    let (tin, tout) = (
        summary["judge_input_tokens"].as_f64().unwrap_or_default(),
        summary["judge_output_tokens"].as_f64().unwrap_or_default(),
    );
    assert!(tin > 0.0 && tout > 0.0, "{summary}");
    let cost = summary["judge_cost_usd"].as_f64().unwrap_or_default();
    assert!(
        (cost - (tin * 0.15 + tout * 0.60) / 1e6).abs() < 1e-12,
        "{summary}"
    );
    assert_eq!(judge.request_count(), items.len() * 2);
    for r in judge.requests() {
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Bearer sk-test-secret-1")
        );
        assert_eq!(
            r.body["response_format"]["type"], "json_schema",
            "structured output asked"
        );
        assert_eq!(r.body["model"], "gpt-4o-mini");
    }

    // One result line per (item, metric), each judged as planted.
    let lines = jsonl(&results)?;
    assert_eq!(lines.len(), items.len() * 2);
    let mut expected_low = BTreeSet::new();
    let mut by_pair = BTreeMap::new();
    for l in &lines {
        assert_eq!(l["error"], Value::Null, "{l}");
        let item = items
            .iter()
            .find(|i| i["id"] == l["item_id"])
            .ok_or("a result for an item not in the dataset")?;
        assert_eq!(
            (&l["trace_id"], &l["span_id"]),
            (&item["trace_id"], &item["span_id"])
        );
        let question = item["input"][0]["content"].as_str().unwrap_or_default();
        let want = if question.contains("slow 30s") {
            0.0
        } else if question.contains("tool error") {
            0.25
        } else {
            1.0
        };
        assert_eq!(l["score"].as_f64(), Some(want), "{l}");
        if want < 0.5 {
            expected_low.insert(l["trace_id"].as_str().unwrap_or_default().to_string());
        }
        by_pair.insert(
            (
                l["trace_id"].as_str().unwrap_or_default().to_string(),
                l["span_id"].as_str().unwrap_or_default().to_string(),
                l["metric"].as_str().unwrap_or_default().to_string(),
            ),
            want,
        );
    }
    assert_eq!(expected_low.len(), 2);

    // The evals view holds exactly the scores of the results file, linked to the judged spans.
    // (The planted corpus holds eval spans of its own, from another run.)
    let sql = format!(
        "SELECT judged_trace_id, judged_span_id, metric, score, judge_model FROM evals \
         WHERE run_id = '{}'",
        summary["run_id"].as_str().unwrap_or_default()
    );
    let (code, stdout, stderr) = curate(dir.path(), &["--sql", &sql, "--json"])?;
    assert_eq!(code, 0, "{stderr}");
    let mut from_view = BTreeMap::new();
    for row in stdout.lines().map(serde_json::from_str::<Value>) {
        let row = row?;
        assert_eq!(row["judge_model"], "gpt-4o-mini");
        from_view.insert(
            (
                row["judged_trace_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                row["judged_span_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                row["metric"].as_str().unwrap_or_default().to_string(),
            ),
            row["score"].as_f64().unwrap_or(-1.0),
        );
    }
    assert_eq!(from_view, by_pair);

    // low-score selects exactly the traces scored under 0.5 on helpfulness.
    let low = dir.path().join("low.jsonl");
    let (code, _, stderr) = curate(
        dir.path(),
        &[
            "--rule",
            "low-score",
            "--set",
            "low-score.metric=helpfulness",
            "--set",
            "low-score.below=0.5",
            "--per",
            "trace",
            "--out",
            &low.display().to_string(),
        ],
    )?;
    assert_eq!(code, 0, "{stderr}");
    let selected: BTreeSet<String> = jsonl(&low)?
        .iter()
        .map(|l| l["trace_id"].as_str().unwrap_or_default().to_string())
        .collect();
    // ... and the trace a planted earlier run scored 0.1 on helpfulness.
    let planted_low = p
        .names
        .iter()
        .find(|(_, n)| n == "judged helpfulness 0.1")
        .map(|(t, _)| t.clone())
        .ok_or("planted helpfulness eval")?;
    expected_low.insert(planted_low);
    assert_eq!(selected, expected_low);
    Ok(())
}

/// Anthropic's API shape, with the faults real judges produce: each is retried or recorded as
/// that item's failure, and the rest of the batch is judged.
#[tokio::test(flavor = "multi_thread")]
async fn anthropic_judge_faults_are_retried_or_recorded_per_item() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig {
        api_key: Some("sk-ant-test-2".into()),
        ..JudgeConfig::default()
    })?;
    let dataset = dir.path().join("d.jsonl");
    let answers = [
        "plain answer",
        "rate limited [[fault=429x2]]",
        "server error [[fault=500x1]]",
        "slow judge [[fault=hang x1]]",
        "chatty judge [[fault=prose]]",
        "stringly judge [[fault=score-as-string]]",
        "broken judge [[fault=malformed]]",
        "wild judge [[fault=out-of-range]]",
        "low [[score=2]]",
    ];
    let mut lines: Vec<String> = answers
        .iter()
        .enumerate()
        .map(|(n, a)| item(n as u32, &format!("question {n}"), a))
        .collect();
    lines.insert(3, "{not json".into());
    lines.push(r#"{"messages":[{"role":"user","content":"hi"}]}"#.into());
    write_lines(&dataset, &lines)?;
    let results = dir.path().join("r.jsonl");
    let args = [
        "--dataset",
        &dataset.display().to_string(),
        "--metrics",
        "helpfulness",
        "--judge",
        "anthropic",
        "--judge-url",
        &judge.anthropic_base_url(),
        "--judge-model",
        "claude-haiku-4-5",
        "--out",
        &results.display().to_string(),
        "--timeout",
        "2s",
        "--parse-retries",
        "2",
        "--no-cache",
        "--json",
    ];
    // Score spans go over OTLP/HTTP this time.
    let mut ingest = Ingest::start(&IngestOpts::local(dir.path()))?;
    let emit = format!("otlp-http://{}", ingest.http);
    let first_run = [&args[..], &["--emit", &emit]].concat();
    let (code, stdout, stderr) =
        eval_runner(&first_run, &[("ANTHROPIC_API_KEY", "sk-ant-test-2")])?;
    assert_eq!(code, 1, "some pairs failed: {stdout}{stderr}");
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());
    let rows = local_store_rows(&dir.path().join("store"))?;
    let scored: BTreeSet<&str> = rows
        .iter()
        .filter(|(_, r)| r.attribute("gen_ai.evaluation.name") == Some("helpfulness"))
        .filter_map(|(_, r)| r.attribute("trace2eval.eval.item_id"))
        .collect();
    assert_eq!(
        scored.len(),
        7,
        "a span per verdict, none for failures: {scored:?}"
    );
    let root = rows
        .iter()
        .find(|(_, r)| r.name == "eval-run")
        .ok_or("no eval-run root span")?;
    assert_eq!(root.1.status_code, "ERROR", "the run had failures");
    let summary: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(summary["bad_lines"], 2, "{summary}");
    assert_eq!(
        summary["metrics"]["helpfulness"]["failures"], 2,
        "{summary}"
    );
    assert_eq!(summary["metrics"]["helpfulness"]["n"], 7, "{summary}");
    let by_item: BTreeMap<String, Value> = jsonl(&results)?
        .into_iter()
        .map(|l| (l["item_id"].as_str().unwrap_or_default().to_string(), l))
        .collect();
    assert_eq!(by_item.len(), answers.len());
    let r = |n: usize| &by_item[&format!("item-{n}")];
    assert_eq!(
        (r(0)["score"].as_f64(), r(0)["attempts"].as_u64()),
        (Some(0.75), Some(1))
    );
    assert_eq!(
        (r(1)["error"].clone(), r(1)["attempts"].as_u64()),
        (Value::Null, Some(3))
    );
    assert_eq!(r(2)["attempts"].as_u64(), Some(2));
    assert_eq!(
        (r(3)["error"].clone(), r(3)["attempts"].as_u64()),
        (Value::Null, Some(2))
    );
    assert_eq!(r(4)["score"].as_f64(), Some(0.75), "verdict found in prose");
    assert_eq!(
        r(5)["score"].as_f64(),
        Some(0.75),
        "score given as a string"
    );
    assert!(
        r(6)["error"]
            .as_str()
            .is_some_and(|e| e.contains("not JSON")),
        "{}",
        r(6)
    );
    assert!(r(6)["raw_answer"].is_string());
    assert_eq!(
        r(6)["attempts"].as_u64(),
        Some(3),
        "asked 1 + --parse-retries times"
    );
    assert!(
        r(7)["error"]
            .as_str()
            .is_some_and(|e| e.contains("outside")),
        "{}",
        r(7)
    );
    assert!(
        r(7)["raw_answer"]
            .as_str()
            .is_some_and(|a| a.contains("42")),
        "the out-of-range answer is kept: {}",
        r(7)
    );
    assert_eq!(
        (r(8)["score"].as_f64(), r(8)["raw_score"].as_f64()),
        (Some(0.25), Some(2.0))
    );
    for req in judge.requests() {
        assert_eq!(req.path, "/v1/messages");
        assert_eq!(
            req.headers.get("x-api-key").map(String::as_str),
            Some("sk-ant-test-2")
        );
        assert!(req.headers.contains_key("anthropic-version"));
        assert_eq!(req.body["tool_choice"]["type"], "tool");
    }

    // A rerun judges only the two failures again (they fail again), nothing else. Its judge
    // URL ends in /v1, as OpenAI-style base URLs are written: still /v1/messages.
    let before = judge.request_count();
    let v1 = format!("{}/v1", judge.anthropic_base_url());
    let mut rerun = args;
    rerun[7] = &v1;
    let (code, _, _) = eval_runner(&rerun, &[("ANTHROPIC_API_KEY", "sk-ant-test-2")])?;
    assert_eq!(code, 1);
    assert_eq!(judge.request_count() - before, 2 * 3);
    assert!(
        judge.requests()[before..]
            .iter()
            .all(|r| r.path == "/v1/messages")
    );
    assert_eq!(
        jsonl(&results)?.len(),
        answers.len(),
        "still one line per pair"
    );

    // Refused credentials stop the run with exit 3, without printing the key.
    let (code, stdout, stderr) = eval_runner(
        &[
            &args[..10],
            &["--out", &dir.path().join("r2.jsonl").display().to_string()],
        ]
        .concat(),
        &[("ANTHROPIC_API_KEY", "sk-ant-WRONG-3")],
    )?;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!format!("{stdout}{stderr}").contains("sk-ant-WRONG-3"));
    Ok(())
}

#[test]
fn bad_arguments_and_unusable_datasets_exit_2_with_the_reason() -> TestResult {
    let dir = tempfile::tempdir()?;
    let dataset = dir.path().join("d.jsonl");
    write_lines(&dataset, &[item(1, "q", "a")])?;
    let d = dataset.display().to_string();
    let out = dir.path().join("r.jsonl").display().to_string();
    let base = [
        "--dataset",
        &d,
        "--out",
        &out,
        "--judge-url",
        "http://127.0.0.1:9/v1",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--judge-model"),
        (
            vec!["--judge-model", "m", "--metrics", "vibes"],
            "unknown metric \"vibes\"",
        ),
        (
            vec!["--judge-model", "m", "--judge", "gemini"],
            "expected openai or anthropic",
        ),
        (
            vec!["--judge-model", "m", "--emit", "grpc://x:1"],
            "otlp-grpc://",
        ),
        (
            vec!["--judge-model", "m", "--mask", "ssn"],
            "expected email or phone",
        ),
        (vec!["--judge-model", "m", "--timeout", "soon"], "--timeout"),
    ];
    for (extra, message) in cases {
        let (code, _, stderr) = eval_runner(&[&base[..], &extra[..]].concat(), &[])?;
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }
    write_lines(
        &dataset,
        &[r#"{"messages":[{"role":"user","content":"hi"}]}"#.into()],
    )?;
    let (code, _, stderr) = eval_runner(&[&base[..], &["--judge-model", "m"]].concat(), &[])?;
    assert_eq!(code, 2);
    assert!(stderr.contains("--format items"), "{stderr}");
    Ok(())
}

/// Score span rows in the store per (judged trace, judged span, metric): raw rows, not the
/// de-duplicated `evals` view.
fn score_rows_per_pair(store: &Path) -> TestResult<BTreeMap<(String, String, String), usize>> {
    let mut counts = BTreeMap::new();
    for (_, r) in local_store_rows(store)? {
        let Some(metric) = r.attribute("gen_ai.evaluation.name") else {
            continue;
        };
        let link = r.links.first().ok_or("score span without a link")?;
        *counts
            .entry((
                link.trace_id.clone(),
                link.span_id.clone(),
                metric.to_string(),
            ))
            .or_insert(0) += 1;
    }
    Ok(counts)
}

/// kill -9 before the first result line, then halfway, rerun: one verdict per (item, metric),
/// one score span row per (judged span, metric) in the store, all in one eval run; judged pairs
/// are not asked again; an unchanged dataset then costs no judge call at all. Masking: the
/// judge never sees the e-mail address.
#[test]
fn killed_run_resumes_without_duplicates_and_reruns_reuse_verdicts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig {
        latency: Duration::from_millis(100),
        ..JudgeConfig::default()
    })?;
    // Answers after 5 s: a run killed once it has asked holds no verdict yet.
    let slow_judge = JudgeServer::start(JudgeConfig {
        latency: Duration::from_secs(5),
        ..JudgeConfig::default()
    })?;
    let dataset = dir.path().join("d.jsonl");
    let mut lines: Vec<String> = (0..30)
        .map(|n| item(n, &format!("question {n}"), &format!("answer {n}")))
        .collect();
    lines.push(item(30, "write to ana.lopez@example.com please", "done"));
    write_lines(&dataset, &lines)?;
    let pairs = lines.len() * 2;
    let store = dir.path().join("store");
    let results = dir.path().join("r.jsonl");
    let cache = dir.path().join("cache");
    let args = |out: &Path, judge: &JudgeServer| -> Vec<String> {
        [
            "--dataset",
            &dataset.display().to_string(),
            "--metrics",
            "helpfulness,faithfulness",
            "--judge-url",
            &judge.openai_base_url(),
            "--judge-model",
            "gpt-4o-mini",
            "--out",
            &out.display().to_string(),
            "--emit-store",
            &store.display().to_string(),
            "--cache-dir",
            &cache.display().to_string(),
            "--concurrency",
            "2",
            "--mask",
            "email",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // Killed before any result line was written.
    let first = args(&results, &slow_judge);
    let mut child = eval_runner_cmd(&first.iter().map(String::as_str).collect::<Vec<_>>(), &[])?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while slow_judge.request_count() < 2 {
        assert!(Instant::now() < deadline, "no judge request after 60 s");
        assert!(child.try_wait()?.is_none(), "finished before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    assert_eq!(
        jsonl(&results).map_or(0, |l| l.len()),
        0,
        "no result line yet"
    );

    // Killed halfway.
    let second = args(&results, &judge);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let mut child = spawn_until_results(&second, &results, 10)?;
    child.kill()?;
    child.wait()?;
    let after_kill = jsonl(&results).map_or(0, |l| l.len());
    assert!(
        after_kill < pairs,
        "killed halfway: {after_kill} of {pairs}"
    );

    let (code, stdout, stderr) = eval_runner(&second, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines_out = jsonl(&results)?;
    assert_eq!(lines_out.len(), pairs);
    let keys: BTreeSet<(String, String)> = lines_out
        .iter()
        .map(|l| (l["item_id"].to_string(), l["metric"].to_string()))
        .collect();
    assert_eq!(keys.len(), pairs, "one line per (item, metric)");
    assert!(
        lines_out
            .iter()
            .all(|l| l["error"].is_null() && l["score"].is_number())
    );
    let run_ids: BTreeSet<&str> = lines_out
        .iter()
        .filter_map(|l| l["run_id"].as_str())
        .collect();
    assert_eq!(run_ids.len(), 1, "one eval run, resumed");
    // Pairs in flight at the second kill are asked again; nothing else.
    assert!(
        judge.request_count() <= pairs + 2,
        "{} judge requests for {pairs} pairs",
        judge.request_count()
    );
    for r in judge.requests() {
        assert!(!r.prompt_text.contains("ana.lopez@example.com"));
    }
    assert!(
        judge
            .requests()
            .iter()
            .any(|r| r.prompt_text.contains("[EMAIL]"))
    );

    // The store holds exactly one score span row per (judged span, metric), all in the run's
    // eval trace, each linked to its judged span.
    let per_pair = score_rows_per_pair(&store)?;
    assert_eq!(per_pair.len(), pairs, "{per_pair:?}");
    assert!(
        per_pair.values().all(|&n| n == 1),
        "duplicate score spans: {:?}",
        per_pair.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    for (judged_trace, _, _) in per_pair.keys() {
        assert!(
            judged_trace.starts_with("00000000000000000000000000e0"),
            "{judged_trace}"
        );
    }
    let rows = local_store_rows(&store)?;
    let scores: Vec<_> = rows
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.attribute("gen_ai.evaluation.name").is_some())
        .collect();
    let in_run: BTreeSet<(&str, Option<&str>)> = scores
        .iter()
        .map(|r| (r.trace_id.as_str(), r.attribute("trace2eval.eval.run_id")))
        .collect();
    assert_eq!(in_run.len(), 1, "{in_run:?}");
    assert_eq!(
        in_run.iter().next().and_then(|(_, id)| *id),
        run_ids.iter().next().copied()
    );
    let (code, stdout, stderr) = curate(
        dir.path(),
        &[
            "--all",
            "--sql",
            "SELECT count(*) AS n FROM evals",
            "--json",
        ],
    )?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(stdout.trim())?["n"], pairs);

    // Same dataset, new results file: every verdict comes from the cache.
    let before = judge.request_count();
    let again = dir.path().join("again.jsonl");
    let args_s = args(&again, &judge);
    let a: Vec<&str> = args_s.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = eval_runner(&a, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        judge.request_count(),
        before,
        "no judge call for unchanged items"
    );
    let reused = jsonl(&again)?;
    assert_eq!(reused.len(), pairs);
    assert!(reused.iter().all(|l| l["reused"] == "cache"));
    Ok(())
}

/// --rpm spaces requests out: 6 requests at 120 per minute (2 per second, one second's worth
/// at once) cannot all go in less than 1.5 s however fast the judge is.
#[test]
fn requests_per_minute_limit_spaces_requests_out() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let dataset = dir.path().join("d.jsonl");
    let lines: Vec<String> = (0..6).map(|n| item(n, &format!("q{n}"), "a")).collect();
    write_lines(&dataset, &lines)?;
    let started = Instant::now();
    let (code, stdout, stderr) = eval_runner(
        &[
            "--dataset",
            &dataset.display().to_string(),
            "--judge-url",
            &judge.openai_base_url(),
            "--judge-model",
            "m",
            "--out",
            &dir.path().join("r.jsonl").display().to_string(),
            "--rpm",
            "120",
            "--no-cache",
        ],
        &[],
    )?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(judge.request_count(), 6);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

/// Options from a TOML file and EVAL_* variables, flags over both; unknown keys are an error.
#[test]
fn config_file_and_environment_fill_in_options() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let dataset = dir.path().join("d.jsonl");
    write_lines(&dataset, &[item(1, "q", "a")])?;
    let config = dir.path().join("eval.toml");
    std::fs::write(
        &config,
        format!(
            "dataset = {:?}\nmetrics = [\"relevance\"]\njudge_model = \"from-file\"\nno_cache = true\n",
            dataset.display().to_string()
        ),
    )?;
    let out = dir.path().join("r.jsonl");
    let (code, stdout, stderr) = eval_runner(
        &[
            "--config",
            &config.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &[
            ("EVAL_JUDGE_URL", judge.openai_base_url().as_str()),
            ("EVAL_JUDGE_MODEL", "from-env"),
        ],
    )?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines = jsonl(&out)?;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["metric"], "relevance", "metric from the file");
    assert_eq!(lines[0]["judge_model"], "from-env", "environment over file");
    assert_eq!(judge.requests()[0].body["model"], "from-env");

    std::fs::write(&config, "judge_modle = \"typo\"\n")?;
    let (code, _, stderr) = eval_runner(&["--config", &config.display().to_string()], &[])?;
    assert_eq!(code, 2);
    assert!(stderr.contains("judge_modle"), "{stderr}");
    Ok(())
}

/// SIGTERM (a scheduler stopping the job): finished verdicts are recorded, the run says it was
/// interrupted and exits 1, and a rerun completes the rest.
#[test]
fn sigterm_records_what_is_done_and_a_rerun_finishes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig {
        latency: Duration::from_millis(150),
        ..JudgeConfig::default()
    })?;
    let dataset = dir.path().join("d.jsonl");
    let lines: Vec<String> = (0..20).map(|n| item(n, &format!("q{n}"), "a")).collect();
    write_lines(&dataset, &lines)?;
    let out = dir.path().join("r.jsonl");
    let args: Vec<String> = [
        "--dataset",
        &dataset.display().to_string(),
        "--judge-url",
        &judge.openai_base_url(),
        "--judge-model",
        "m",
        "--out",
        &out.display().to_string(),
        "--concurrency",
        "1",
        "--no-cache",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = spawn_until_results(&a, &out, 3)?;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8(output.stdout)?;
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    let done = jsonl(&out)?.len();
    assert!((3..20).contains(&done), "{done} lines");

    let (code, stdout, stderr) = eval_runner(&a, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(jsonl(&out)?.len(), 20);
    assert_eq!(
        judge.request_count(),
        20 + 1,
        "only the request in flight is asked twice"
    );
    Ok(())
}

/// --tpm spaces requests by their estimated tokens, and a Retry-After of 2 s is waited out.
#[test]
fn tokens_per_minute_and_retry_after_delay_requests() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let dataset = dir.path().join("d.jsonl");
    let lines: Vec<String> = (0..4).map(|n| item(n, &format!("q{n}"), "a")).collect();
    write_lines(&dataset, &lines)?;
    let run = |extra: &[&str], out: &str| -> TestResult<Duration> {
        let started = Instant::now();
        let out = dir.path().join(out).display().to_string();
        let base = [
            "--dataset",
            &dataset.display().to_string(),
            "--judge-url",
            &judge.openai_base_url(),
            "--judge-model",
            "m",
            "--out",
            &out,
            "--no-cache",
        ];
        let (code, stdout, stderr) = eval_runner(&[&base[..], extra].concat(), &[])?;
        assert_eq!(code, 0, "{stdout}{stderr}");
        Ok(started.elapsed())
    };
    // Each request is estimated at over 1000 tokens (--max-tokens 1000 plus the prompt);
    // 60000 per minute refill 1000 a second. The first request goes at once on a full bucket
    // (one second's worth), each later one waits for the debt of the one before: 4 requests
    // need more than 2 s.
    let took = run(&["--tpm", "60000", "--max-tokens", "1000"], "tpm.jsonl")?;
    assert!(took >= Duration::from_secs(2), "{took:?}");
    judge.push_faults(vec![trace2eval_tests::judge::Fault::Status {
        code: 429,
        retry_after_secs: Some(2),
    }]);
    let before = judge.request_count();
    let took = run(&["--concurrency", "1"], "retry.jsonl")?;
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After waited: {took:?}"
    );
    assert_eq!(judge.request_count() - before, 5, "4 items + 1 retry");
    Ok(())
}

/// An OTLP/HTTP backend that keeps every score span it receives and never answers its first
/// request: it stored that batch, but the runner waiting for the acknowledgement is killed.
struct HoldingReceiver {
    addr: std::net::SocketAddr,
    shared: Arc<Received>,
}

#[derive(Default)]
struct Received {
    requests: AtomicUsize,
    spans: Mutex<Vec<Span>>,
}

impl HoldingReceiver {
    fn start() -> TestResult<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Received::default());
        let state = shared.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Serves until the test process ends.
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(hold_first))
                    .with_state(state);
                if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(listener, app).await;
                }
            });
        });
        Ok(Self { addr, shared })
    }

    fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    fn spans(&self) -> Vec<Span> {
        self.shared
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

async fn hold_first(
    axum::extract::State(shared): axum::extract::State<Arc<Received>>,
    body: bytes::Bytes,
) -> (axum::http::StatusCode, Vec<u8>) {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
    };
    if let Ok(mut spans) = shared.spans.lock() {
        spans.extend(
            req.resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans),
        );
    }
    if shared.requests.fetch_add(1, Ordering::SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    (
        axum::http::StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// kill -9 after a batch of score spans reached the backend but before any result line was
/// written: the rerun keeps the run id, re-sends that very batch (same span ids, same
/// verdicts) instead of judging its pairs again, and the backend holds one score span id per
/// (judged span, metric).
#[test]
fn killed_after_spans_went_out_before_any_result_line_resends_the_same_spans() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let receiver = HoldingReceiver::start()?;
    let dataset = dir.path().join("d.jsonl");
    let lines: Vec<String> = (0..4)
        .map(|n| item(n, &format!("question {n}"), &format!("answer {n}")))
        .collect();
    write_lines(&dataset, &lines)?;
    let pairs = lines.len() * 2;
    let out = dir.path().join("r.jsonl");
    let args: Vec<String> = [
        "--dataset",
        &dataset.display().to_string(),
        "--metrics",
        "helpfulness,relevance",
        "--judge-url",
        &judge.openai_base_url(),
        "--judge-model",
        "m",
        "--out",
        &out.display().to_string(),
        "--emit",
        &format!("otlp-http://{}", receiver.addr),
        "--no-cache",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = eval_runner_cmd(&a, &[])?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.requests() == 0 {
        assert!(Instant::now() < deadline, "no score spans after 60 s");
        assert!(child.try_wait()?.is_none(), "finished before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    assert_eq!(jsonl(&out).map_or(0, |l| l.len()), 0, "no result line yet");
    let held = receiver.spans();
    assert!(!held.is_empty());
    let judged_first = judge.request_count();

    let (code, stdout, stderr) = eval_runner(&a, &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let results = jsonl(&out)?;
    assert_eq!(results.len(), pairs);
    assert!(results.iter().all(|l| l["error"].is_null()));
    assert_eq!(
        judge.request_count() - judged_first,
        pairs - held.len(),
        "the pairs of the held batch are not judged again"
    );
    let all = receiver.spans();
    let scores: Vec<&Span> = all.iter().filter(|s| !s.links.is_empty()).collect();
    for h in &held {
        let copies: Vec<&&Span> = scores.iter().filter(|s| s.span_id == h.span_id).collect();
        assert_eq!(copies.len(), 2, "held once, re-sent once");
        assert!(copies.iter().all(|c| **c == h), "re-sent unchanged");
    }
    let mut ids_per_pair: BTreeMap<(Vec<u8>, String), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for s in &scores {
        let metric = s
            .attributes
            .iter()
            .find(|kv| kv.key == "gen_ai.evaluation.name")
            .and_then(|kv| kv.value.as_ref())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        ids_per_pair
            .entry((s.links[0].span_id.clone(), metric))
            .or_default()
            .insert(s.span_id.clone());
    }
    assert_eq!(ids_per_pair.len(), pairs);
    assert!(
        ids_per_pair.values().all(|ids| ids.len() == 1),
        "one score span id per (judged span, metric): {ids_per_pair:?}"
    );
    let sent: BTreeSet<String> = scores.iter().map(|s| hex::encode(&s.span_id)).collect();
    let recorded: BTreeSet<String> = results
        .iter()
        .filter_map(|l| l["eval_span_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(sent, recorded);
    Ok(())
}

/// A `langfuse` line exactly as `curate --format langfuse` writes it (key order and metadata
/// of curate's export): a dataset item with input, expectedOutput and source ids, and no answer.
fn langfuse_line(n: u32, question: &str) -> String {
    let trace_id = format!("{:032x}", 0xE0_0000 + n);
    let span_id = format!("{:016x}", 0x5000 + n);
    format!(
        r#"{{"id":"{trace_id}-{span_id}","input":{{"messages":[{{"role":"user","content":"{question}"}}],"context":[]}},"expectedOutput":null,"metadata":{{"rules":["slow"],"model":"gpt-4o-mini","latency_ms":812.0,"input_tokens":812,"output_tokens":40,"cost_usd":0.000146,"status":"OK","service":"chat-api","session_id":"s-1","user_id":"u-9","tenant":"default","start_time":"2026-11-25T14:00:00.000000000Z","root_name":"POST /chat"}},"sourceTraceId":"{trace_id}","sourceObservationId":"{span_id}"}}"#
    )
}

/// A user metric on a 0-10 scale sees every variable rendered; a label metric's label and
/// explanation reach the score span and its `gen_ai.evaluation.result` event; correctness is
/// judged with an expected output and skipped without; a langfuse item (no answer) is never
/// judged as an empty answer; the summary's mean, distribution and reuse add up.
#[test]
fn user_metrics_render_every_variable_and_score_spans_carry_the_verdict() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig {
        verdicts: vec![
            ("Gold: At nine.".into(), Verdict::new(7.0, None, "grounded")),
            (
                "Is the answer polite?".into(),
                Verdict::new(0.0, Some("polite"), "courteous"),
            ),
        ],
        ..JudgeConfig::default()
    })?;
    let dataset = dir.path().join("d.jsonl");
    let with_expected = json!({
        "id": "a", "trace_id": format!("{:032x}", 0xE0_00A1), "span_id": format!("{:016x}", 0xA1),
        "input": [{"role": "user", "content": "When does the office open?"}],
        "output": "It opens at nine.", "context": ["The office opens at nine."],
        "expected_output": "At nine.", "metadata": {"model": "gpt-4o-mini", "tier": "gold"},
    });
    write_lines(
        &dataset,
        &[
            with_expected.to_string(),
            item(2, "Where is it?", "On Main street."),
            langfuse_line(3, "Is parking free?"),
        ],
    )?;
    let metrics = dir.path().join("metrics.toml");
    std::fs::write(
        &metrics,
        r#"
[metrics.grounded]
prompt = "Q: {{input}}\nA: {{output}}\nDocs: {{context}}\nGold: {{expected}}\nMeta: {{metadata}}"
scale = [0, 10]

[metrics.tone]
prompt = "Is the answer polite? {{output}}"
labels = { polite = 1.0, rude = 0.0 }

[metrics.clarity]
prompt = "Is the question clear? {{input}}"
scale = [1, 5]
"#,
    )?;
    let store = dir.path().join("store");
    let args = |out: &str| -> Vec<String> {
        [
            "--dataset",
            &dataset.display().to_string(),
            "--metrics",
            "grounded,tone,clarity,correctness,helpfulness",
            "--metrics-file",
            &metrics.display().to_string(),
            "--judge-url",
            &judge.openai_base_url(),
            "--judge-model",
            "m",
            "--out",
            &dir.path().join(out).display().to_string(),
            "--emit-store",
            &store.display().to_string(),
            "--cache-dir",
            &dir.path().join("cache").display().to_string(),
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let first = args("r.jsonl");
    let (code, stdout, stderr) =
        eval_runner(&first.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The prompts the judge received.
    let prompts: Vec<String> = judge
        .requests()
        .into_iter()
        .map(|r| r.prompt_text)
        .collect();
    let grounded = prompts
        .iter()
        .find(|p| p.contains("Gold: At nine."))
        .ok_or("no grounded prompt for item a")?;
    for part in [
        "Q: user: When does the office open?",
        "A: It opens at nine.",
        "Docs: [1] The office opens at nine.",
        r#""tier":"gold""#,
    ] {
        assert!(grounded.contains(part), "{part:?} not in {grounded}");
    }
    assert!(
        prompts
            .iter()
            .any(|p| p.contains("Expected answer:\nAt nine.") && p.contains("It opens at nine.")),
        "correctness judged against the expected output"
    );
    let parking: Vec<&String> = prompts
        .iter()
        .filter(|p| p.contains("Is parking free?"))
        .collect();
    assert_eq!(
        parking.len(),
        1,
        "the langfuse item: only clarity, which needs no answer"
    );
    assert!(parking[0].contains("Is the question clear?"));
    // a: 5 metrics; item 2: 4 (no expected output); langfuse: 1.
    assert_eq!(prompts.len(), 10);

    let results = jsonl(&dir.path().join("r.jsonl"))?;
    let r = |item: &str, metric: &str| -> TestResult<&Value> {
        results
            .iter()
            .find(|l| {
                l["metric"] == metric
                    && (l["item_id"] == item
                        || l["item_id"].as_str().is_some_and(|i| i.ends_with(item)))
            })
            .ok_or_else(|| format!("no result for ({item}, {metric})").into())
    };
    assert_eq!(results.len(), 15);
    assert_eq!(r("a", "correctness")?["score"].as_f64(), Some(0.75));
    assert_eq!(r("item-2", "correctness")?["skipped"], "no expected output");
    assert!(r("item-2", "correctness")?["score"].is_null());
    let lf = format!("{:016x}", 0x5003);
    for metric in ["helpfulness", "correctness", "grounded", "tone"] {
        let why = r(&lf, metric)?["skipped"].as_str().unwrap_or_default();
        assert!(
            why.contains("langfuse") && why.contains("--format items"),
            "{metric}: {why}"
        );
    }
    assert_eq!(r(&lf, "clarity")?["score"].as_f64(), Some(0.75));
    assert_eq!(
        (
            r("a", "grounded")?["score"].as_f64(),
            r("a", "grounded")?["raw_score"].as_f64()
        ),
        (Some(0.7), Some(7.0))
    );

    let summary: Value = serde_json::from_str(stdout.trim())?;
    let m = &summary["metrics"];
    assert_eq!(m["grounded"]["n"], 2, "{summary}");
    assert!((m["grounded"]["mean"].as_f64().unwrap_or_default() - 0.55).abs() < 1e-9);
    assert_eq!(m["grounded"]["distribution"], json!({"4": 1, "7": 1}));
    assert_eq!(m["grounded"]["skipped"], 1);
    assert_eq!(m["tone"]["distribution"], json!({"polite": 2}));
    assert_eq!(m["tone"]["mean"], 1.0);
    assert_eq!(m["correctness"]["skipped"], 2);
    assert_eq!(m["helpfulness"]["skipped"], 1);
    assert_eq!(m["clarity"]["reused"], 0);

    // The score span of (a, tone), read back from the store.
    let rows = local_store_rows(&store)?;
    let tone_a = rows
        .iter()
        .map(|(_, r)| r)
        .find(|r| {
            r.attribute("gen_ai.evaluation.name") == Some("tone")
                && r.attribute("trace2eval.eval.item_id") == Some("a")
        })
        .ok_or("no score span for (a, tone)")?;
    assert_eq!(
        tone_a.attribute("gen_ai.evaluation.score.label"),
        Some("polite")
    );
    assert_eq!(
        tone_a.attribute("gen_ai.evaluation.explanation"),
        Some("courteous")
    );
    let value = |attrs: &[(String, Option<String>)], key: &str| -> Option<f64> {
        attrs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref()?.parse().ok())
    };
    assert_eq!(
        value(&tone_a.attributes, "gen_ai.evaluation.score.value"),
        Some(1.0)
    );
    let event = tone_a
        .events
        .iter()
        .find(|e| e.name == "gen_ai.evaluation.result")
        .ok_or("no gen_ai.evaluation.result event")?;
    let event_attr = |key: &str| {
        event
            .attributes
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(
        event_attr("gen_ai.evaluation.name").as_deref(),
        Some("tone")
    );
    assert_eq!(
        event_attr("gen_ai.evaluation.score.label").as_deref(),
        Some("polite")
    );
    assert_eq!(
        event_attr("gen_ai.evaluation.explanation").as_deref(),
        Some("courteous")
    );
    assert_eq!(
        value(&event.attributes, "gen_ai.evaluation.score.value"),
        Some(1.0)
    );
    assert_eq!(
        tone_a.links.first().map(|l| l.span_id.as_str()),
        Some(format!("{:016x}", 0xA1).as_str())
    );

    // Unchanged dataset, new results file: every verdict is reused, none asked again.
    let again = args("again.jsonl");
    let (code, stdout, stderr) =
        eval_runner(&again.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(judge.request_count(), 10);
    let summary: Value = serde_json::from_str(stdout.trim())?;
    for (metric, reused) in [
        ("grounded", 2),
        ("tone", 2),
        ("clarity", 3),
        ("correctness", 1),
        ("helpfulness", 2),
    ] {
        assert_eq!(summary["metrics"][metric]["reused"], reused, "{summary}");
    }
    Ok(())
}

/// Score spans that cannot be delivered (nothing listens on the --emit port) stop the run with
/// exit 3 and no result line for them; a rerun with a working destination delivers the same
/// verdicts without asking the judge again.
#[test]
fn undeliverable_score_spans_exit_3_and_a_rerun_delivers_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let judge = JudgeServer::start(JudgeConfig::default())?;
    let dataset = dir.path().join("d.jsonl");
    write_lines(&dataset, &[item(1, "q1", "a1"), item(2, "q2", "a2")])?;
    let out = dir.path().join("r.jsonl");
    let dead = trace2eval_tests::harness::free_addr()?;
    let base = [
        "--dataset",
        &dataset.display().to_string(),
        "--metrics",
        "helpfulness",
        "--judge-url",
        &judge.openai_base_url(),
        "--judge-model",
        "m",
        "--out",
        &out.display().to_string(),
        "--no-cache",
    ];
    let (code, stdout, stderr) = eval_runner(
        &[&base[..], &["--emit", &format!("otlp-grpc://{dead}")]].concat(),
        &[],
    )?;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("score spans not delivered"), "{stderr}");
    assert_eq!(jsonl(&out).map_or(0, |l| l.len()), 0);
    assert_eq!(judge.request_count(), 2);

    let store = dir.path().join("store");
    let (code, stdout, stderr) = eval_runner(
        &[&base[..], &["--emit-store", &store.display().to_string()]].concat(),
        &[],
    )?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(judge.request_count(), 2, "the verdicts were kept");
    assert_eq!(jsonl(&out)?.len(), 2);
    let per_pair = score_rows_per_pair(&store)?;
    assert_eq!(per_pair.len(), 2);
    assert!(per_pair.values().all(|&n| n == 1));
    Ok(())
}
