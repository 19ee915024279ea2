//! `curate`: the second stage of trace2eval. The store's Parquet span files become a
//! DataFusion catalog (`catalog`: listing table plus the `spans`, `llm_calls`, `traces`,
//! `evals` views, with messages normalised by `extract` and costs from `prices`, the UDF over
//! `schemas::prices`), rules select traces (`rules`, combined in `select`), and `export` writes
//! JSONL datasets with a manifest (`manifest`). `window` parses times and prunes partitions;
//! `cli` is the command line.

pub mod catalog;
pub mod cli;
pub mod compact;
pub mod earliest;
pub mod error;
pub mod export;
pub mod extract;
pub mod job;
pub mod key_prune;
pub mod local_store;
pub mod manifest;
pub mod prices;
pub mod retention;
pub mod rules;
pub mod select;
pub mod span_store;
pub mod usage;
pub mod window;

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use datafusion::arrow::util::pretty::pretty_format_batches;
use schemas::prices::Prices;
use serde::Serialize;

use crate::catalog::{Catalog, CatalogOptions};
use crate::cli::{Args, Command, JobCommand};
use crate::error::CurateError;
use crate::select::RuleQuery;
use crate::window::{Window, parse_duration, parse_time, sql_time};

/// The one-line (or `--json`) summary of an export.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub traces_scanned: u64,
    pub selected_per_rule: BTreeMap<String, usize>,
    pub selected: usize,
    pub not_settled: usize,
    pub exported_traces: usize,
    /// The exported traces' ids.
    #[serde(skip)]
    pub trace_ids: Vec<String>,
    pub lines: usize,
    pub calls_without_content: usize,
    pub out: String,
    pub manifest: String,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_rule: Vec<String> = self
            .selected_per_rule
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        if self.lines == 0 {
            write!(f, "selected nothing: ")?;
        }
        write!(
            f,
            "scanned {} traces, selected {} ({}), {} not settled yet, wrote {} lines to {} in {:.2}s",
            self.traces_scanned,
            self.selected,
            per_rule.join(" "),
            self.not_settled,
            self.lines,
            self.out,
            self.seconds
        )
    }
}

fn now(args: &Args) -> Result<DateTime<Utc>, CurateError> {
    match &args.now {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| CurateError::BadArgs(format!("--now {s:?}: {e}"))),
        None => Ok(Utc::now()),
    }
}

fn window(args: &Args, now: DateTime<Utc>) -> Result<Window, CurateError> {
    if args.all {
        return Ok(Window::ALL);
    }
    let since = parse_time(&args.since, now)?;
    let until = args
        .until
        .as_deref()
        .map(|u| parse_time(u, now))
        .transpose()?;
    if until.is_some_and(|u| u <= since) {
        return Err(CurateError::BadArgs(format!(
            "--until must be after --since ({since})"
        )));
    }
    Ok(Window {
        since: Some(since),
        until,
    })
}

/// The rules a run selects with, as SQL.
fn rule_queries(args: &Args) -> Result<Vec<RuleQuery>, CurateError> {
    let custom = match &args.rules_file {
        Some(p) => rules::load_rules_file(p)?,
        None => Default::default(),
    };
    let settings = rules::Settings::parse(&args.sets)?.include_previous(args.include_previous);
    let mut out = Vec::new();
    for name in &args.rules {
        out.push(match custom.get(name) {
            Some(c) => RuleQuery {
                name: name.clone(),
                sql: rules::custom_sql(c),
                parameters: Default::default(),
                written_in: Some(format!(
                    "rule {name:?} of {}",
                    args.rules_file
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )),
            },
            None if rules::is_builtin(name) => RuleQuery {
                name: name.clone(),
                sql: rules::builtin_sql(name, &settings)?,
                parameters: settings.effective(name),
                written_in: None,
            },
            None => return Err(rules::unknown(name, custom.keys())),
        });
    }
    if let Some(w) = &args.where_ {
        out.push(RuleQuery {
            name: "where".into(),
            sql: format!("SELECT trace_id FROM traces WHERE {w}"),
            parameters: Default::default(),
            written_in: Some("--where".into()),
        });
    }
    if let (Some(sql), Some(_)) = (&args.sql, &args.out) {
        out.push(RuleQuery {
            name: "sql".into(),
            sql: format!("SELECT trace_id FROM ({sql})"),
            parameters: Default::default(),
            written_in: Some("--sql".into()),
        });
    }
    if out.is_empty() {
        return Err(CurateError::BadArgs(
            "nothing to select with: give --rule NAME (see `curate rules`), --where SQL, or --sql SQL with --out".into(),
        ));
    }
    Ok(out)
}

/// Runs `--sql` and renders its result. `opened` is how long opening the catalog took: with
/// planning and running it goes into one `query` line at info (`RUST_LOG=curate=info`), the
/// query's own time without the process start (bench/curate_vs_duckdb.py reads it).
async fn print_query(
    catalog: &Catalog,
    sql: &str,
    json: bool,
    opened: std::time::Duration,
) -> Result<String, CurateError> {
    let started = Instant::now();
    // SQL that does not parse or plan is the argument's fault (exit 2), with the reason.
    let planned = catalog
        .ctx
        .sql(sql)
        .await
        .map_err(|e| CurateError::BadArgs(format!("--sql: {e}")))?;
    let plan = started.elapsed();
    let batches = planned.collect().await?;
    tracing::info!(
        open_ms = opened.as_secs_f64() * 1e3,
        plan_ms = plan.as_secs_f64() * 1e3,
        run_ms = (started.elapsed() - plan).as_secs_f64() * 1e3,
        rows = batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        "query"
    );
    if json {
        let mut buf = Vec::new();
        let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
        for b in &batches {
            w.write(b)
                .map_err(datafusion::error::DataFusionError::from)?;
        }
        w.finish()
            .map_err(datafusion::error::DataFusionError::from)?;
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    Ok(format!(
        "{}\n",
        pretty_format_batches(&batches).map_err(datafusion::error::DataFusionError::from)?
    ))
}

/// Runs one `curate` invocation; returns what to print on stdout.
pub async fn run(args: Args) -> Result<String, CurateError> {
    match &args.command {
        Some(Command::Rules { rules_file }) => {
            let custom = match rules_file.as_ref().or(args.rules_file.as_ref()) {
                Some(p) => rules::load_rules_file(p)?,
                None => Default::default(),
            };
            return Ok(rules::describe(&custom));
        }
        Some(Command::Job {
            command: JobCommand::Run { file, dry_run },
        }) => return job::run(file, *dry_run, now(&args)?, args.json).await,
        Some(Command::Compact {
            min_age,
            target_size,
            memory,
            grace,
            dry_run,
        }) => {
            return compact::run(compact::Options {
                store: &args.store,
                min_age,
                target_size,
                memory,
                grace,
                dry_run: *dry_run,
                now: now(&args)?,
                json: args.json,
            })
            .await;
        }
        Some(Command::Retention {
            older_than,
            dry_run,
        }) => {
            return retention::run(
                &args.store,
                args.tenant.as_deref(),
                older_than,
                *dry_run,
                now(&args)?,
                args.json,
            )
            .await;
        }
        None => {}
    }
    let now = now(&args)?;
    let window = window(&args, now)?;
    if let Some(sql) = args.sql.as_deref().filter(|_| args.out.is_none()) {
        let prices = Prices::load(args.prices.as_deref())
            .map_err(|e| CurateError::BadArgs(e.to_string()))?;
        let opening = Instant::now();
        let catalog = Catalog::open(
            &args.store,
            CatalogOptions {
                window,
                tenant: args.tenant.clone(),
                prices,
            },
        )
        .await?;
        return print_query(&catalog, sql, args.json, opening.elapsed()).await;
    }
    let summary = export_dataset(&args, now, window, None).await?;
    Ok(if args.json {
        format!("{}\n", serde_json::to_string(&summary).unwrap_or_default())
    } else {
        format!("{summary}\n")
    })
}

/// Trace start times a job run takes: `since <= trace start < until`, leaving out the traces
/// in `taken` (selected by an earlier run: a span arriving long after them makes them look new).
#[derive(Debug, Clone)]
pub struct TraceStarts {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub taken: std::collections::HashSet<String>,
}

/// Selects with the rules of `args` over `window` (and, for a job, only traces starting in
/// `trace_starts`), and writes the dataset and its manifest to `args.out`.
pub async fn export_dataset(
    args: &Args,
    now: DateTime<Utc>,
    window: Window,
    trace_starts: Option<TraceStarts>,
) -> Result<Summary, CurateError> {
    let started = Instant::now();
    let settle = parse_duration(&args.settle)?;
    // Both ways the table can be wrong (unreadable, bad TOML) are the `--prices` argument's.
    let prices =
        Prices::load(args.prices.as_deref()).map_err(|e| CurateError::BadArgs(e.to_string()))?;
    // Arguments are checked before the store is opened, so a typo exits 2 at once.
    let out = args.out.clone().ok_or_else(|| {
        CurateError::BadArgs(
            "--out FILE is required to export a dataset (or give --sql to print a query)".into(),
        )
    })?;
    if args.sample.is_some_and(|n| n == 0) {
        return Err(CurateError::BadArgs("--sample must be at least 1".into()));
    }
    let queries = rule_queries(args)?;
    // A bar on stderr, one step per rule plus settling and exporting; indicatif draws nothing
    // when stderr is not a terminal (cron, CI, pipes).
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(std::time::Duration::from_millis(120));
    progress.set_message(format!("opening {}", args.store));
    let catalog = Catalog::open(
        &args.store,
        CatalogOptions {
            window,
            tenant: args.tenant.clone(),
            prices,
        },
    )
    .await?;
    let files = manifest::source_files(&catalog, &window, args.tenant.as_deref()).await?;
    progress.set_length(queries.len() as u64 + 2);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:24} {pos}/{len} {msg}",
    ) {
        progress.set_style(style);
    }
    let mut phase = Instant::now();
    let per_rule = select::run_rules(&catalog, &queries, |rule| {
        progress.set_message(format!("rule {rule} over {} files", files.len()));
        progress.inc(1);
    })
    .await?;
    let mut combined = select::combine(&per_rule, args.match_);
    // Only the counts are kept: the ids are in `combined` (and then in the `selected` table),
    // and an export's memory grows with the number of selected traces.
    let selected_per_rule: BTreeMap<String, usize> = per_rule
        .iter()
        .map(|(r, ids)| (r.clone(), ids.len()))
        .collect();
    drop(per_rule);
    if let Some(ts) = &trace_starts {
        combined.retain(|id, _| !ts.taken.contains(id));
    }
    progress.set_message(format!("settling {} selected traces", combined.len()));
    progress.inc(1);
    select::register_selected(
        &catalog,
        combined.keys(),
        combined.values().map(|r| r.join(",")),
    )?;
    let selected = combined.len();
    tracing::debug!(ms = lap(&mut phase), selected, "rules ran");
    let mut eligible = format!("t.end_time <= {}", sql_time(now - settle));
    if let Some(ts) = &trace_starts {
        eligible.push_str(&format!(
            " AND t.start_time >= {} AND t.start_time < {}",
            sql_time(ts.since),
            sql_time(ts.until)
        ));
    }
    // The settled traces' ids, in export order, with the rules that selected them and the
    // window of their spans' starts; sampled and limited before any trace's full row (root,
    // usage) is computed. A limit alone keeps the first: the keys of the rest are only counted.
    let keep = args.limit.filter(|_| args.sample.is_none());
    let (mut keys, settled) = export::settled_keys(&catalog, &eligible, keep).await?;
    drop(combined);
    if args.sample.is_some() || args.limit.is_some() {
        keys = select::sample_and_limit(keys, args.sample, args.seed, args.limit);
    }
    let not_settled = selected - settled;
    tracing::debug!(ms = lap(&mut phase), settled, "selected traces settled");
    progress.set_message(format!("exporting {} traces", keys.len()));
    progress.inc(1);
    let mut dataset = manifest::DatasetWriter::create(&out)?;
    let exported = export::export(
        &catalog,
        &keys,
        &eligible,
        args.format,
        args.per,
        &mut dataset,
        export::Cuts::default(),
    )
    .await?;
    drop(keys);
    let lines = dataset.lines();
    tracing::debug!(ms = lap(&mut phase), lines, "dataset written");
    let written = dataset.finish()?;
    progress.finish_and_clear();
    let scanned = scanned_traces(&catalog).await?;
    tracing::debug!(
        ms = lap(&mut phase),
        scanned,
        "traces in the window counted"
    );
    let summary = Summary {
        traces_scanned: scanned,
        selected_per_rule,
        selected,
        not_settled,
        exported_traces: exported.trace_ids.len(),
        trace_ids: exported.trace_ids,
        lines,
        calls_without_content: exported.calls_without_content,
        out: out.display().to_string(),
        manifest: written.manifest_path.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    };
    manifest::write_manifest(&written, args, &queries, window, now, &summary, files)?;
    Ok(summary)
}

/// Milliseconds since `since`, which then restarts: the time of one phase of an export.
fn lap(since: &mut Instant) -> u64 {
    let ms = since.elapsed().as_millis() as u64;
    *since = Instant::now();
    ms
}

async fn scanned_traces(catalog: &Catalog) -> Result<u64, CurateError> {
    let b = catalog
        .ctx
        .sql("SELECT count(DISTINCT trace_id) AS n FROM spans")
        .await?
        .collect()
        .await?;
    Ok(b.first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
        })
        .map_or(0, |a| a.value(0).max(0) as u64))
}

/// Test support shared by the modules' tests.
#[cfg(test)]
pub(crate) mod test_store {
    use schemas::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use schemas::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// Writes `spans` (one resource, one scope) into the store at `dir` as ingest would: one
    /// span file per partition, with ingest's converter and writer. Returns the files' paths.
    pub fn write(
        dir: &std::path::Path,
        spans: Vec<Span>,
    ) -> Result<Vec<std::path::PathBuf>, Box<dyn std::error::Error>> {
        let request = [ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut files = Vec::new();
        for (partition, batch) in schemas::convert::to_record_batches("default", &request)? {
            let path = dir.join(partition.file_path("01JTEST0000000000000000000"));
            std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
            std::fs::write(&path, schemas::parquet_file::write_span_file(&[batch])?)?;
            files.push(path);
        }
        Ok(files)
    }

    /// A string attribute.
    pub fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    /// The catalog of the store at `dir` over all time, with the built-in prices.
    pub async fn open(
        dir: &std::path::Path,
    ) -> Result<crate::catalog::Catalog, Box<dyn std::error::Error>> {
        Ok(crate::catalog::Catalog::open(
            &dir.display().to_string(),
            crate::catalog::CatalogOptions {
                window: crate::window::Window::ALL,
                tenant: None,
                prices: schemas::prices::Prices::default_table()?,
            },
        )
        .await?)
    }
}
