//! curate over a store filled through the real ingest: every built-in rule selects exactly
//! the planted traces (no misses, no extras), near misses stay out, unsettled traces wait,
//! and the JSONL and its manifest say what was selected.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use trace2eval_tests::client::Grpc;
use trace2eval_tests::harness::{Ingest, IngestOpts, Ran, TestResult, bin_path, output_of};
use trace2eval_tests::planted::{EQUAL_USAGE_CALLS, NOW, Planted, planted};

/// Ingests the planted corpus into `dir/store`.
async fn planted_store(dir: &Path) -> TestResult<Planted> {
    let p = planted();
    let mut ingest = Ingest::start(&IngestOpts::local(dir))?;
    Grpc::connect(ingest.grpc_url())
        .await?
        .export(p.request.clone())
        .await?;
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());
    Ok(p)
}

/// Runs curate with `args` on `dir/store` at the planted NOW; returns (exit code, stdout, stderr).
pub(crate) fn curate(dir: &Path, args: &[&str]) -> TestResult<Ran> {
    curate_at(dir, NOW, args)
}

fn curate_at(dir: &Path, now: &str, args: &[&str]) -> TestResult<Ran> {
    curate_env(dir, now, &[], args)
}

fn curate_env(dir: &Path, now: &str, env: &[(&str, &str)], args: &[&str]) -> TestResult<Ran> {
    output_of(
        Command::new(bin_path("curate")?)
            .arg("--store")
            .arg(dir.join("store"))
            .args(["--now", now])
            .envs(env.iter().copied())
            .args(args),
    )
}

/// Exports `rule` per trace and returns the selected trace ids.
fn select(dir: &Path, rule_args: &[&str]) -> TestResult<BTreeSet<String>> {
    select_env(dir, &[], rule_args)
}

/// `select` with options also in environment variables.
fn select_env(
    dir: &Path,
    env: &[(&str, &str)],
    rule_args: &[&str],
) -> TestResult<BTreeSet<String>> {
    let out = dir.join("out.jsonl");
    let out_s = out.display().to_string();
    let mut args = vec!["--per", "trace", "--out", &out_s];
    args.extend_from_slice(rule_args);
    let (code, stdout, stderr) = curate_env(dir, NOW, env, &args)?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut ids = BTreeSet::new();
    for line in std::fs::read_to_string(&out)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        ids.insert(v["trace_id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
}

/// The trace id of the planted trace named `name`.
fn id_of(p: &Planted, name: &str) -> TestResult<String> {
    Ok(p.names
        .iter()
        .find(|(_, n)| n == name)
        .ok_or_else(|| format!("no planted trace {name:?}"))?
        .0
        .clone())
}

fn named(p: &Planted, ids: &BTreeSet<String>) -> Vec<String> {
    ids.iter()
        .map(|id| {
            p.names
                .iter()
                .find(|(t, _)| t == id)
                .map_or(id.clone(), |(_, n)| n.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_builtin_rule_selects_exactly_the_planted_traces() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted_store(dir.path()).await?;
    let check = |rule: &[&str], expected: &BTreeSet<String>| -> TestResult {
        let got = select(dir.path(), rule)?;
        assert_eq!(named(&p, &got), named(&p, expected), "rule {rule:?}");
        Ok(())
    };
    check(&["--rule", "slow"], &p.slow)?;
    check(&["--rule", "costly"], &p.costly)?;
    check(&["--rule", "errors"], &p.errors)?;
    check(&["--rule", "quick-followup"], &p.quick_followup)?;
    check(
        &["--rule", "quick-followup", "--include-previous"],
        &p.quick_followup_previous,
    )?;
    // The manifest records the parameter in effect, flag included.
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("out.jsonl.manifest.json"),
    )?)?;
    assert_eq!(
        manifest["rules"][0]["parameters"],
        serde_json::json!({"include_previous": "true", "within": "10s"}),
        "{manifest}"
    );
    check(&["--rule", "negative-feedback"], &p.negative_feedback)?;
    check(
        &[
            "--rule",
            "low-score",
            "--set",
            "low-score.metric=faithfulness",
            "--set",
            "low-score.below=0.5",
        ],
        &p.low_faithfulness,
    )?;
    let any: BTreeSet<String> = p.slow.union(&p.errors).cloned().collect();
    check(&["--rule", "slow", "--rule", "errors"], &any)?;
    check(
        &["--rule", "slow", "--rule", "errors", "--match", "all"],
        &BTreeSet::new(),
    )?;
    // Parameters move the thresholds; comparisons stay strict.
    let mut slow5 = p.slow.clone();
    slow5.extend(
        p.names
            .iter()
            .filter(|(_, n)| n == "exactly 5s")
            .map(|(t, _)| t.clone()),
    );
    check(
        &["--rule", "slow", "--set", "slow.min_duration=4950ms"],
        &slow5,
    )?;
    check(&["--where", "root_duration_ns > 5000000000"], &p.slow)?;
    // The percentile is taken per root span name (here among the GET routes only).
    check(
        &[
            "--rule",
            "slow",
            "--set",
            "slow.percentile=50",
            "--where",
            "root_name LIKE 'GET /%'",
            "--match",
            "all",
        ],
        &p.slow_p50,
    )?;
    check(
        &["--rule", "costly", "--set", "costly.min_usd=0.05"],
        &p.costly_over_5_cents,
    )?;
    check(
        &["--rule", "costly", "--set", "costly.min_tokens=40000"],
        &p.costly_over_40k_tokens,
    )?;
    // Below 0, traces without token usage (0 tokens, 0 USD) pass too.
    let every = select(dir.path(), &["--where", "true"])?;
    let with_usage = select(dir.path(), &["--where", "llm_calls > 0"])?;
    assert!(
        every.len() > with_usage.len(),
        "the store has traces without usage"
    );
    check(&["--rule", "costly", "--set", "costly.min_usd=-1"], &every)?;
    check(
        &["--rule", "costly", "--set", "costly.min_tokens=-1"],
        &every,
    )?;
    let priced = select(dir.path(), &["--where", "cost_usd > 0"])?;
    assert!(!priced.is_empty());
    check(&["--rule", "costly", "--set", "costly.min_usd=0"], &priced)?;
    check(
        &[
            "--rule",
            "quick-followup",
            "--set",
            "quick-followup.within=5s",
        ],
        &p.quick_followup_within_5s,
    )?;
    check(
        &[
            "--rule",
            "quick-followup",
            "--set",
            "quick-followup.within=12s",
        ],
        &p.quick_followup_within_12s,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_items_with_messages_and_a_manifest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted_store(dir.path()).await?;
    let out = dir.path().join("slow.jsonl");
    let out_s = out.display().to_string();
    let (code, stdout, stderr) =
        curate(dir.path(), &["--rule", "slow", "--out", &out_s, "--json"])?;
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout)?;
    // The rule also matches the unsettled slow trace, which the settle window then holds back.
    assert_eq!(
        summary["selected_per_rule"]["slow"],
        p.slow.len() + 1,
        "{summary}"
    );
    assert_eq!(
        summary["not_settled"], 1,
        "the unsettled slow trace waits: {summary}"
    );
    assert_eq!(summary["exported_traces"], p.slow.len(), "{summary}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), p.slow.len());
    for l in &lines {
        assert!(p.slow.contains(l["trace_id"].as_str().unwrap_or_default()));
        assert_eq!(l["input"][0]["role"], "user");
        assert!(
            l["input"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .starts_with("question of slow")
        );
        assert!(
            l["output"]
                .as_str()
                .unwrap_or_default()
                .starts_with("answer of slow")
        );
        assert_eq!(l["metadata"]["model"], "gpt-4o-mini");
        assert_eq!(l["metadata"]["rules"][0], "slow");
        assert_eq!(l["span_id"].as_str().map(str::len), Some(16));
    }
    let with_context: Vec<_> = lines
        .iter()
        .filter(|l| l["context"].as_array().is_some_and(|c| !c.is_empty()))
        .collect();
    assert_eq!(
        with_context.len(),
        1,
        "the retrieval span's documents fill the call's context"
    );
    assert_eq!(
        with_context[0]["context"],
        serde_json::json!([
            "Snapshots are kept thirty days.",
            "Egress is billed per GiB."
        ])
    );
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("slow.jsonl.manifest.json"),
    )?)?;
    assert_eq!(manifest["rules"][0]["name"], "slow");
    assert_eq!(manifest["rules"][0]["parameters"]["min_duration"], "5s");
    assert_eq!(manifest["counts"]["lines"], p.slow.len());
    assert!(
        manifest["source_files"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    use sha2::Digest;
    let sha = format!("{:x}", sha2::Sha256::digest(std::fs::read(&out)?));
    assert_eq!(manifest["dataset"]["sha256"], sha.as_str());

    // Another tenant's export names none of this tenant's files.
    let other = dir.path().join("other.jsonl");
    let (code, _, stderr) = curate(
        dir.path(),
        &[
            "--rule",
            "slow",
            "--tenant",
            "other",
            "--out",
            &other.display().to_string(),
        ],
    )?;
    assert_eq!(code, 0, "{stderr}");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("other.jsonl.manifest.json"),
    )?)?;
    assert_eq!(
        manifest["source_files"],
        serde_json::json!([]),
        "{manifest}"
    );
    assert_eq!(manifest["counts"]["lines"], 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_prints_tables_and_bad_arguments_exit_2() -> TestResult {
    let dir = tempfile::tempdir()?;
    planted_store(dir.path()).await?;
    let (code, stdout, stderr) = curate(
        dir.path(),
        &[
            "--sql",
            "SELECT model, count(*) AS n FROM llm_calls GROUP BY model ORDER BY model",
        ],
    )?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("gpt-4o-mini") && stdout.contains("| n"),
        "{stdout}"
    );
    let (code, _, stderr) = curate(dir.path(), &["--rule", "slowest", "--out", "x.jsonl"])?;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown rule \"slowest\"") && stderr.contains("quick-followup"),
        "{stderr}"
    );
    let (code, _, stderr) = curate(
        dir.path(),
        &["--rule", "slow", "--set", "slow.max=1", "--out", "x.jsonl"],
    )?;
    assert_eq!(code, 2, "{stderr}");
    // SQL that does not parse or plan is a bad argument too, and the message says why.
    for (args, reason) in [
        (
            &["--where", "root_duration_ns >", "--out", "x.jsonl"][..],
            "--where",
        ),
        (
            &["--where", "no_such_column > 1", "--out", "x.jsonl"],
            "no_such_column",
        ),
        (&["--sql", "SELEC model FROM llm_calls"], "--sql"),
        (&["--sql", "SELECT model FROM no_such_view"], "no_such_view"),
        (
            &["--sql", "SELECT model FROM llm_calls", "--out", "x.jsonl"],
            "trace_id",
        ),
    ] {
        let (code, _, stderr) = curate(dir.path(), args)?;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    // An unknown rule's message lists the rules of --rules FILE too.
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[rules.pricey]\nwhere = \"cost_usd > 1\"\n")?;
    let rules_s = rules.display().to_string();
    let (code, _, stderr) = curate(
        dir.path(),
        &["--rules", &rules_s, "--rule", "pricy", "--out", "x.jsonl"],
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown rule \"pricy\"")
            && stderr.contains("low-score")
            && stderr.contains("pricey"),
        "{stderr}"
    );
    let (code, stdout, _) = curate(dir.path(), &["rules"])?;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("slow.min_duration") && stdout.contains("default 5s"),
        "{stdout}"
    );
    Ok(())
}

/// The plans (logical, physical) `curate --sql "EXPLAIN {sql}"` prints over `window`.
fn explain(dir: &Path, sql: &str, window: &[&str]) -> TestResult<Vec<String>> {
    let explain = format!("EXPLAIN {sql}");
    let mut args = vec!["--sql", &explain, "--json"];
    args.extend_from_slice(window);
    let (code, stdout, stderr) = curate(dir, &args)?;
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)?;
            Ok(v["plan"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// File names (ULID.parquet) a query plan over `spans` will read.
fn planned_files(dir: &Path, window: &[&str]) -> TestResult<BTreeSet<String>> {
    planned_files_of(
        dir,
        "SELECT count(*) FROM spans WHERE name LIKE '%chat%'",
        window,
    )
}

fn planned_files_of(dir: &Path, sql: &str, window: &[&str]) -> TestResult<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    for plan in explain(dir, sql, window)? {
        for (at, _) in plan.match_indices(".parquet") {
            if at >= 26 {
                files.insert(plan[at - 26..at + 8].to_string());
            }
        }
    }
    Ok(files)
}

fn files_under(dir: &Path) -> TestResult<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                out.insert(name.to_string());
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn time_window_prunes_hour_partitions_before_any_file_is_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    planted_store(dir.path()).await?;
    let spans = dir
        .path()
        .join("store/spans/tenant=default/date=2026-03-10");
    let all_files = files_under(&spans)?;
    assert!(
        all_files.len() >= 4,
        "planted spans cover several hours: {all_files:?}"
    );
    assert_eq!(planned_files(dir.path(), &["--all"])?, all_files);
    let last_hour = files_under(&spans.join("hour=11"))?;
    assert_eq!(
        planned_files(dir.path(), &["--since", "2026-03-10T11:00:00Z"])?,
        last_hour
    );
    let two = files_under(&spans.join("hour=08"))?
        .union(&files_under(&spans.join("hour=09"))?)
        .cloned()
        .collect::<BTreeSet<_>>();
    let window = [
        "--since",
        "2026-03-10T08:30:00Z",
        "--until",
        "2026-03-10T09:59:00Z",
    ];
    assert_eq!(planned_files(dir.path(), &window)?, two);
    let other_tenant = planned_files(dir.path(), &["--all", "--tenant", "nobody"])?;
    assert!(other_tenant.is_empty(), "{other_tenant:?}");
    // Score spans start after the traces they judge: `evals` prunes the hours before --since
    // and keeps the later ones. Of those it reads only the files that hold score spans
    // (`attributes['gen_ai.evaluation.name']`): the planted ones are all in hour 11.
    let evals = "SELECT count(*) FROM evals";
    for since in [
        "2026-03-10T11:00:00Z",
        "2026-03-10T09:00:00Z",
        "2026-03-10T00:00:00Z",
    ] {
        assert_eq!(
            planned_files_of(dir.path(), evals, &["--since", since])?,
            last_hour,
            "{since}"
        );
    }
    // Only --since bounds them: score spans of hour 11 judge traces of an earlier window.
    let earlier = [
        "--since",
        "2026-03-10T09:00:00Z",
        "--until",
        "2026-03-10T10:00:00Z",
    ];
    assert_eq!(planned_files_of(dir.path(), evals, &earlier)?, last_hour);
    // Hour 11 holds score spans, so an empty plan here is the time window's doing.
    let after = planned_files_of(dir.path(), evals, &["--since", "2026-03-10T12:00:00Z"])?;
    assert!(after.is_empty(), "{after:?}");
    Ok(())
}

/// `traces.scores`: per metric, the latest score of the trace in `evals`; NULL for a trace
/// never judged. Only what reads `scores` scans for score spans: the built-in rules do not.
#[tokio::test(flavor = "multi_thread")]
async fn traces_scores_hold_the_latest_score_per_metric_and_null_when_unjudged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted_store(dir.path()).await?;
    let (code, stdout, stderr) = curate(
        dir.path(),
        &[
            "--all",
            "--json",
            "--sql",
            "SELECT trace_id, scores FROM traces ORDER BY trace_id",
        ],
    )?;
    assert_eq!(code, 0, "{stderr}");
    let expected = |name: &str| match name {
        "judged faithfulness 0.2" => serde_json::json!({"faithfulness": 0.2}),
        "judged faithfulness 0.49" => serde_json::json!({"faithfulness": 0.49}),
        "judged faithfulness 0.5" => serde_json::json!({"faithfulness": 0.5}),
        "judged faithfulness 0.9" => serde_json::json!({"faithfulness": 0.9}),
        // Judged 0.7 earlier: the latest score wins.
        "judged helpfulness 0.1" => serde_json::json!({"helpfulness": 0.1, "relevance": 0.8}),
        _ => serde_json::Value::Null,
    };
    let (mut judged, mut unjudged) = (0, 0);
    for line in stdout.lines() {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let id = row["trace_id"].as_str().unwrap_or_default();
        // Eval-run traces are traces too, never judged themselves.
        let name = named(&p, &BTreeSet::from([id.to_string()])).join("");
        // NULL: `--json` leaves the key out.
        assert_eq!(row["scores"], expected(&name), "{name}: {row}");
        if row["scores"].is_null() {
            unjudged += 1;
        } else {
            judged += 1;
        }
    }
    assert_eq!(judged, 5, "{stdout}");
    assert!(unjudged > 20, "{stdout}");

    // The table `curate --sql` prints shows the map as metric: score.
    let helpful = id_of(&p, "judged helpfulness 0.1")?;
    let sql = format!(
        "SELECT trace_id, scores FROM traces WHERE trace_id IN ('{helpful}', '{}')",
        id_of(&p, "exactly 5s")?
    );
    let (code, stdout, stderr) = curate(dir.path(), &["--all", "--sql", &sql])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("{helpfulness: 0.1, relevance: 0.8}"),
        "{stdout}"
    );

    // A --where over scores selects on the latest score of a metric.
    let low = select(dir.path(), &["--where", "scores['faithfulness'] < 0.5"])?;
    assert_eq!(named(&p, &low), named(&p, &p.low_faithfulness));
    let judged_helpful = select(
        dir.path(),
        &["--where", "scores['helpfulness'] IS NOT NULL"],
    )?;
    assert_eq!(judged_helpful, BTreeSet::from([helpful]));

    // Reading scores plans a scan for score spans; the built-in rules' SQL (from the
    // manifest) plans none.
    let reads_scores = |plan: &[String]| plan.iter().any(|p| p.contains("gen_ai.evaluation.name"));
    assert!(reads_scores(&explain(
        dir.path(),
        "SELECT trace_id FROM traces WHERE scores IS NULL",
        &["--all"]
    )?));
    for rule in ["slow", "costly", "errors", "quick-followup"] {
        select(dir.path(), &["--rule", rule])?;
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            dir.path().join("out.jsonl.manifest.json"),
        )?)?;
        let sql = manifest["rules"][0]["sql"].as_str().unwrap_or_default();
        assert!(sql.starts_with("SELECT"), "{rule}: {manifest}");
        let plan = explain(dir.path(), sql, &["--all"])?;
        assert!(!reads_scores(&plan), "{rule}: {plan:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_select_the_same_traces_on_s3_as_on_a_local_store() -> TestResult {
    let s3 = trace2eval_tests::harness::S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let p = planted();
    let prefix = format!("curate/{}", rand::random::<u32>());
    let store = format!("s3://{}/{prefix}", s3.bucket);
    let mut opts = IngestOpts::local(dir.path());
    opts.store = store.clone();
    opts.env = s3.env.clone();
    let mut ingest = Ingest::start(&opts)?;
    Grpc::connect(ingest.grpc_url())
        .await?
        .export(p.request.clone())
        .await?;
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());

    let cases: [(&[&str], &BTreeSet<String>); 5] = [
        (&["--rule", "slow"], &p.slow),
        (&["--rule", "costly"], &p.costly),
        (&["--rule", "errors"], &p.errors),
        (&["--rule", "quick-followup"], &p.quick_followup),
        (&["--rule", "negative-feedback"], &p.negative_feedback),
    ];
    for (rule, expected) in cases {
        let out = dir.path().join("s3.jsonl");
        let out_s = out.display().to_string();
        let mut args = vec![
            "--store", &store, "--now", NOW, "--per", "trace", "--out", &out_s,
        ];
        args.extend_from_slice(rule);
        let result = Command::new(bin_path("curate")?)
            .args(&args)
            .envs(s3.env.iter().cloned())
            .output()?;
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let got: BTreeSet<String> = std::fs::read_to_string(&out)?
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .map(|v| v["trace_id"].as_str().unwrap_or_default().to_string())
            })
            .collect::<Result<_, _>>()?;
        assert_eq!(named(&p, &got), named(&p, expected), "rule {rule:?} on S3");
    }
    Ok(())
}

/// Real traces with several instrumentations on at once: usage repeated on nested and sibling
/// spans is counted once per call, session and user come from non-root spans, and one call's
/// spans give one dataset line.
#[tokio::test(flavor = "multi_thread")]
async fn real_multi_instrumentation_traces_count_each_call_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut ingest = Ingest::start(&IngestOpts::local(dir.path()))?;
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    let mut truths = Vec::new();
    for name in [
        "trace_direct_openai_followup.json",
        "trace_fastapi_anthropic_followup.json",
    ] {
        let text = std::fs::read_to_string(
            trace2eval_tests::harness::repo_root()
                .join("tests/fixtures/genai")
                .join(name),
        )?;
        let (req, truth) = trace2eval_tests::samples::trace_fixture(&text)?;
        client.export(req).await?;
        truths.push(truth);
    }
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());
    let sql = "SELECT trace_id, input_tokens + output_tokens AS tokens, llm_calls, session_id, user_id FROM traces ORDER BY trace_id";
    let (code, stdout, stderr) = curate(dir.path(), &["--all", "--sql", sql, "--json"])?;
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 2);
    for truth in &truths {
        let row = rows
            .iter()
            .find(|r| r["trace_id"] == truth["trace_id"])
            .ok_or("trace missing")?;
        assert_eq!(row["tokens"], truth["total_tokens"], "{row}");
        assert_eq!(
            row["llm_calls"].as_u64(),
            truth["llm_calls"].as_array().map(|c| c.len() as u64),
            "{row}"
        );
        assert_eq!(row["session_id"], truth["session_id"]);
        assert_eq!(row["user_id"], truth["user_id"]);
    }
    // One dataset line per call, each with the call's messages.
    let out = dir.path().join("calls.jsonl");
    let out_s = out.display().to_string();
    // The captures are from 2026-11-25; "now" a few days later, so they have settled.
    let (code, _, stderr) = curate_at(
        dir.path(),
        "2026-12-01T00:00:00Z",
        &["--all", "--where", "TRUE", "--out", &out_s],
    )?;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 4, "two calls per trace");
    for truth in &truths {
        let question = truth["question"].as_str().unwrap_or_default();
        let generate = lines
            .iter()
            .filter(|l| l["trace_id"] == truth["trace_id"])
            .any(|l| {
                l["input"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["content"].as_str().unwrap_or_default().contains(question))
                    && !l["output"].as_str().unwrap_or_default().is_empty()
            });
        assert!(
            generate,
            "no line of {} holds the question {question:?} and an answer",
            truth["trace_id"]
        );
    }
    Ok(())
}

/// Every export format, per call and per trace, read by its real consumer's types
/// (tests/python/check_formats.py: the openai and langfuse packages; a schema for phoenix).
#[tokio::test(flavor = "multi_thread")]
async fn every_format_is_accepted_by_its_consumer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted_store(dir.path()).await?;
    let selected = p.slow.union(&p.errors).count();
    for format in ["items", "openai-chat", "langfuse", "phoenix"] {
        for per in ["call", "trace"] {
            let out = dir.path().join(format!("{format}-{per}.jsonl"));
            let out_s = out.display().to_string();
            let (code, _, stderr) = curate(
                dir.path(),
                &[
                    "--rule", "slow", "--rule", "errors", "--format", format, "--per", per,
                    "--out", &out_s,
                ],
            )?;
            assert_eq!(code, 0, "{stderr}");
            let text = std::fs::read_to_string(&out)?;
            assert_eq!(text.lines().count(), selected, "{format} {per}: {text}");
            let report =
                trace2eval_tests::harness::run_python("check_formats.py", &[format, &out_s])?;
            let v: serde_json::Value = serde_json::from_str(&report)?;
            assert_eq!(v["ok"], selected, "{format} {per}: {report}");
        }
    }
    Ok(())
}

/// The example lines of README.md are lines as curate writes them: each passes its format's
/// consumer check, keys in the documented order included.
#[test]
fn readme_format_examples_pass_their_consumer_checks() -> TestResult {
    let readme = std::fs::read_to_string(trace2eval_tests::harness::repo_root().join("README.md"))?;
    let block = readme
        .split("```jsonc\n// items (default)")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .ok_or("README.md has no format examples")?;
    let mut lines = ["// items"].into_iter().chain(block.lines().skip(1));
    let dir = tempfile::tempdir()?;
    let mut checked = Vec::new();
    while let (Some(label), Some(example)) = (lines.next(), lines.next()) {
        let format = label.trim_start_matches("// ");
        let file = dir.path().join(format!("{format}.jsonl"));
        std::fs::write(&file, format!("{example}\n"))?;
        let report = trace2eval_tests::harness::run_python(
            "check_formats.py",
            &[format, &file.display().to_string()],
        )?;
        let v: serde_json::Value = serde_json::from_str(&report)?;
        assert_eq!(v["ok"], 1, "README {format} example: {report}");
        checked.push(format.to_string());
    }
    assert_eq!(checked, ["items", "openai-chat", "langfuse", "phoenix"]);
    Ok(())
}

/// `--limit` and `--sample` pick among the settled traces (in start order) before the traces'
/// rows are computed: the summary still counts every selected and unsettled trace, and the
/// dataset holds, for the traces picked, exactly what the full export holds for them.
#[tokio::test(flavor = "multi_thread")]
async fn limit_and_sample_export_what_the_full_export_holds_for_their_traces() -> TestResult {
    let dir = tempfile::tempdir()?;
    planted_store(dir.path()).await?;
    let export = |name: &str, extra: &[&str]| -> TestResult<(serde_json::Value, Vec<String>)> {
        let out = dir.path().join(name).display().to_string();
        let mut args = vec!["--where", "llm_calls >= 1", "--json", "--out", &out];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = curate(dir.path(), &args)?;
        assert_eq!(code, 0, "{stderr}");
        let lines = std::fs::read_to_string(&out)?
            .lines()
            .map(str::to_string)
            .collect();
        Ok((serde_json::from_str(&stdout)?, lines))
    };
    let trace_of = |line: &str| -> TestResult<String> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        Ok(v["trace_id"].as_str().unwrap_or_default().to_string())
    };
    // The traces of the lines, in order (a trace may give more than one line).
    let ids = |lines: &[String]| -> TestResult<Vec<String>> {
        let mut ids: Vec<String> = Vec::new();
        for l in lines {
            let id = trace_of(l)?;
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    };
    let (full, full_lines) = export("full.jsonl", &[])?;
    let all = ids(&full_lines)?;
    assert!(all.len() > 5, "{full}");
    assert_eq!(full["exported_traces"], all.len(), "{full}");
    let lines_of = |kept: &[String]| -> TestResult<Vec<String>> {
        let mut lines = Vec::new();
        for l in &full_lines {
            if kept.contains(&trace_of(l)?) {
                lines.push(l.clone());
            }
        }
        Ok(lines)
    };
    let picks: [(&str, &[&str]); 2] = [
        ("limited.jsonl", &["--limit", "2"]),
        ("sampled.jsonl", &["--sample", "3", "--seed", "4"]),
    ];
    for (name, extra) in picks {
        let (summary, lines) = export(name, extra)?;
        for key in [
            "selected",
            "not_settled",
            "selected_per_rule",
            "traces_scanned",
        ] {
            assert_eq!(summary[key], full[key], "{extra:?} {key}: {summary}");
        }
        let kept = ids(&lines)?;
        let expected = match extra[0] {
            "--limit" => all[..2].to_vec(),
            _ => all.iter().filter(|id| kept.contains(id)).cloned().collect(),
        };
        assert_eq!(kept.len(), extra[1].parse::<usize>()?, "{summary}");
        assert_eq!(
            kept, expected,
            "{extra:?}: the full export's traces, in its order"
        );
        assert_eq!(
            lines,
            lines_of(&kept)?,
            "{extra:?}: the full export's lines"
        );
        assert_eq!(summary["exported_traces"], kept.len(), "{summary}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_file_sample_and_limit_shape_the_selection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted_store(dir.path()).await?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[rules.mini]\ndescription = \"plain traffic\"\nwhere = \"root_name = 'POST /chat' AND llm_calls = 1 AND NOT has_error\"\n\
         [rules.by_sql]\nsql = \"SELECT trace_id FROM llm_calls WHERE model = 'gpt-4o'\"\n",
    )?;
    let rules_s = rules.display().to_string();
    let all_mini = select(dir.path(), &["--rules", &rules_s, "--rule", "mini"])?;
    assert!(all_mini.len() > 20, "{}", all_mini.len());
    let sampled = select(
        dir.path(),
        &[
            "--rules", &rules_s, "--rule", "mini", "--sample", "5", "--seed", "9",
        ],
    )?;
    assert_eq!(sampled.len(), 5);
    assert!(sampled.is_subset(&all_mini));
    assert_eq!(
        sampled,
        select(
            dir.path(),
            &[
                "--rules", &rules_s, "--rule", "mini", "--sample", "5", "--seed", "9"
            ]
        )?,
        "a seed gives the same sample"
    );
    assert_eq!(
        select(
            dir.path(),
            &["--rules", &rules_s, "--rule", "mini", "--limit", "3"]
        )?
        .len(),
        3
    );
    // Every selection option also comes from the environment (a CronJob's `env:`).
    let rules_only = ["--rules", rules_s.as_str()];
    assert_eq!(
        select_env(
            dir.path(),
            &[
                ("CURATE_RULE", "mini"),
                ("CURATE_SAMPLE", "5"),
                ("CURATE_SEED", "9")
            ],
            &rules_only
        )?,
        sampled
    );
    assert_eq!(
        select_env(
            dir.path(),
            &[("CURATE_RULE", "mini"), ("CURATE_LIMIT", "3")],
            &rules_only
        )?
        .len(),
        3
    );
    assert_eq!(
        select_env(
            dir.path(),
            &[(
                "CURATE_WHERE",
                "root_name = 'POST /chat' AND llm_calls = 1 AND NOT has_error"
            )],
            &[]
        )?,
        all_mini
    );
    assert_eq!(
        select_env(
            dir.path(),
            &[
                ("CURATE_RULE", "slow"),
                ("CURATE_SET", "slow.min_duration=4950ms")
            ],
            &[]
        )?,
        select(
            dir.path(),
            &["--rule", "slow", "--set", "slow.min_duration=4950ms"]
        )?
    );
    let gpt4o = select(dir.path(), &["--rules", &rules_s, "--rule", "by_sql"])?;
    let names: BTreeSet<String> = named(&p, &gpt4o).into_iter().collect();
    assert_eq!(
        names,
        ["costly 0.12", "nested usage 0.05"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "exactly 0.10 uses gpt-4o-2024-08-06"
    );
    let (code, stdout, _) = curate(dir.path(), &["rules", "--rules", &rules_s])?;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("mini") && stdout.contains("plain traffic"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_selection_exits_0_and_says_so() -> TestResult {
    let dir = tempfile::tempdir()?;
    planted_store(dir.path()).await?;
    let out = dir.path().join("none.jsonl");
    let out_s = out.display().to_string();
    let args = [
        "--rule",
        "slow",
        "--set",
        "slow.min_duration=1h",
        "--out",
        &out_s,
    ];
    let (code, stdout, stderr) = curate(dir.path(), &args)?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("selected nothing:") && stdout.contains("wrote 0 lines"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&out)?, "", "an empty dataset");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("none.jsonl.manifest.json"),
    )?)?;
    assert_eq!(manifest["counts"]["selected"], 0, "{manifest}");
    assert_eq!(manifest["counts"]["lines"], 0, "{manifest}");

    let (code, stdout, stderr) = curate(dir.path(), &[&args[..], &["--json"][..]].concat())?;
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(summary["selected"], 0, "{summary}");
    assert_eq!(summary["selected_per_rule"]["slow"], 0, "{summary}");
    assert_eq!(summary["lines"], 0, "{summary}");
    Ok(())
}

/// Two LLM calls of one trace made one after the other with exactly equal token counts are
/// two calls (tokens, cost, dataset lines), while usage repeated on the nested spans of one
/// call still counts once.
#[tokio::test(flavor = "multi_thread")]
async fn sequential_calls_with_equal_token_counts_both_count() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted_store(dir.path()).await?;
    let totals = |id: &str| -> TestResult<serde_json::Value> {
        let sql = format!(
            "SELECT llm_calls, input_tokens, output_tokens, cost_usd FROM traces WHERE trace_id = '{id}'"
        );
        let (code, stdout, stderr) = curate(dir.path(), &["--all", "--sql", &sql, "--json"])?;
        assert_eq!(code, 0, "{stderr}");
        Ok(serde_json::from_str(stdout.trim())?)
    };
    let equal = id_of(&p, EQUAL_USAGE_CALLS)?;
    let row = totals(&equal)?;
    assert_eq!(row["llm_calls"], 2, "{row}");
    assert_eq!(row["input_tokens"], 24_000, "{row}");
    assert_eq!(row["output_tokens"], 18_000, "{row}");
    // gpt-4o-mini: 0.15 and 0.60 USD per million input and output tokens.
    let cost = row["cost_usd"].as_f64().ok_or("no cost")?;
    assert!((cost - 2.0 * 0.0072).abs() < 1e-12, "{row}");
    let row = totals(&id_of(&p, "nested usage 0.05")?)?;
    assert_eq!(row["llm_calls"], 1, "{row}");
    assert_eq!(row["input_tokens"], 20_000, "{row}");

    let out = dir.path().join("equal.jsonl");
    let out_s = out.display().to_string();
    let filter = format!("trace_id = '{equal}'");
    let (code, _, stderr) = curate(dir.path(), &["--where", &filter, "--out", &out_s])?;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let outputs: Vec<&str> = lines
        .iter()
        .map(|l| l["output"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outputs,
        [
            format!("answer of {EQUAL_USAGE_CALLS}"),
            format!("second answer of {EQUAL_USAGE_CALLS}")
        ],
        "one line per call"
    );
    for l in &lines {
        assert_eq!(l["metadata"]["input_tokens"], 12_000, "{l}");
        assert_eq!(l["metadata"]["output_tokens"], 9_000, "{l}");
    }
    Ok(())
}

/// OTLP delivery is at least once: a client that lost an acknowledgement sends the same spans
/// again, and the store then holds them twice. Their token usage and cost still count once
/// per call, in `traces` and in `llm_usage`, and the dataset is the one a single delivery
/// gives.
#[tokio::test(flavor = "multi_thread")]
async fn spans_delivered_twice_count_their_usage_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = planted();
    // One call without token counts or messages: no usage pairing merges it with its copy,
    // and no de-duplication of equal inputs hides the copy from the dataset's figures.
    let mut request = p.request.clone();
    let plain = id_of(&p, "plain 0")?;
    request
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
        .filter(|s| hex::encode(&s.trace_id) == plain)
        .for_each(|s| {
            s.attributes
                .retain(|a| !a.key.starts_with("gen_ai.usage") && !a.key.ends_with(".messages"))
        });
    let mut ingest = Ingest::start(&IngestOpts::local(dir.path()))?;
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    client.export(request.clone()).await?;
    client.export(request.clone()).await?;
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());

    let equal = id_of(&p, EQUAL_USAGE_CALLS)?;
    let sent = p
        .request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| hex::encode(&s.trace_id) == equal)
        .count();
    let sql = format!(
        "SELECT t.span_count, t.llm_calls, t.input_tokens, t.output_tokens, t.cost_usd, \
         (SELECT count(*) FROM llm_usage u WHERE u.trace_id = t.trace_id) AS usage_rows \
         FROM traces t WHERE t.trace_id = '{equal}'"
    );
    let (code, stdout, stderr) = curate(dir.path(), &["--all", "--sql", &sql, "--json"])?;
    assert_eq!(code, 0, "{stderr}");
    let row: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        row["span_count"],
        2 * sent,
        "every span stored twice: {row}"
    );
    assert_eq!(row["llm_calls"], 2, "{row}");
    assert_eq!(row["usage_rows"], 2, "{row}");
    assert_eq!(row["input_tokens"], 24_000, "{row}");
    assert_eq!(row["output_tokens"], 18_000, "{row}");
    let cost = row["cost_usd"].as_f64().ok_or("no cost")?;
    assert!((cost - 2.0 * 0.0072).abs() < 1e-12, "{row}");

    // The dataset is the one a single delivery gives: one line per call, none twice.
    let once = tempfile::tempdir()?;
    let mut ingest = Ingest::start(&IngestOpts::local(once.path()))?;
    Grpc::connect(ingest.grpc_url())
        .await?
        .export(request)
        .await?;
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());
    let dataset = |dir: &Path| -> TestResult<(Vec<String>, serde_json::Value)> {
        let out = dir.join("all.jsonl");
        let out_s = out.display().to_string();
        let (code, stdout, stderr) = curate(dir, &["--where", "TRUE", "--out", &out_s, "--json"])?;
        assert_eq!(code, 0, "{stderr}");
        let summary: serde_json::Value = serde_json::from_str(stdout.trim())?;
        let mut ids = Vec::new();
        for line in std::fs::read_to_string(&out)?.lines() {
            let item: serde_json::Value = serde_json::from_str(line)?;
            ids.push(item["id"].as_str().ok_or("an item without id")?.to_string());
        }
        ids.sort();
        Ok((ids, summary["calls_without_content"].clone()))
    };
    let (single, twice) = (dataset(once.path())?, dataset(dir.path())?);
    assert_eq!(single.1, 1, "the stripped call is the one without content");
    assert_eq!(twice, single);
    Ok(())
}

/// Parquet filter pushdown is on by default, and a `DATAFUSION_*` variable still overrides it
/// (as it does every other DataFusion setting).
#[test]
fn datafusion_variables_override_the_pushdown_defaults() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("store/spans"))?;
    let sql = "SELECT name, value FROM information_schema.df_settings \
               WHERE name LIKE 'datafusion.execution.parquet.%_filters' ORDER BY name";
    let settings = |env: &[(&str, &str)]| -> TestResult<Vec<(String, String)>> {
        let mut cmd = Command::new(bin_path("curate")?);
        cmd.arg("--store")
            .arg(dir.path().join("store"))
            .args(["--all", "--sql", sql, "--json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (code, stdout, stderr) = output_of(&mut cmd)?;
        assert_eq!(code, 0, "{stderr}");
        let mut rows = Vec::new();
        for line in stdout.lines() {
            let row: serde_json::Value = serde_json::from_str(line)?;
            let field = |k: &str| row[k].as_str().unwrap_or_default().to_string();
            rows.push((field("name"), field("value")));
        }
        Ok(rows)
    };
    let setting = |name: &str, value: &str| {
        (
            format!("datafusion.execution.parquet.{name}"),
            value.to_string(),
        )
    };
    assert_eq!(
        settings(&[])?,
        [
            setting("pushdown_filters", "true"),
            setting("reorder_filters", "true")
        ]
    );
    assert_eq!(
        settings(&[("DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS", "false")])?,
        [
            setting("pushdown_filters", "false"),
            setting("reorder_filters", "true")
        ]
    );
    Ok(())
}
