//! The `curate` command line (flags with `CURATE_*` environment fallbacks).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Select traces from a trace2eval store with SQL rules and export them as JSONL eval
/// datasets, or query the store's views (spans, traces, llm_calls, evals) with SQL.
///
/// Examples:
///   curate --store ./data --rule slow --since 24h --out slow.jsonl
///   curate --store ./data --rule errors --rule costly --match all --out bad.jsonl
///   curate --store ./data --sql "SELECT model, count(*) FROM llm_calls GROUP BY 1"
///   curate rules
///   curate job run jobs/nightly.toml
///   curate compact --store ./data
///   curate retention --store ./data --older-than 30d --dry-run
///
/// Exit codes: 0 success (an empty selection included), 1 failure, 2 bad arguments or an
/// unknown rule.
#[derive(Parser, Debug, Default)]
#[command(name = "curate", version, verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Store to read: a directory, file:///abs/dir, or s3://bucket/prefix (AWS_* variables).
    #[arg(
        long,
        env = "CURATE_STORE",
        default_value = "./data",
        value_name = "URL",
        global = true
    )]
    pub store: String,
    /// Log lines on stderr as text or as JSON objects (one per line, with the job run's
    /// `invocation` on every line of a `job run`).
    #[arg(
        long,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "CURATE_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,
    /// Rule to select traces with; repeat for several (see `curate rules`).
    #[arg(
        long = "rule",
        env = "CURATE_RULE",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub rules: Vec<String>,
    /// How several rules combine: any (union) or all (intersection).
    #[arg(long = "match", value_enum, default_value_t = Match::Any, env = "CURATE_MATCH")]
    pub match_: Match,
    /// Rule parameter, e.g. --set slow.min_duration=2s (repeatable, or comma-separated).
    #[arg(
        long = "set",
        env = "CURATE_SET",
        value_delimiter = ',',
        value_name = "RULE.PARAM=VALUE"
    )]
    pub sets: Vec<String>,
    /// Custom rule: a SQL boolean expression over the traces view.
    #[arg(long = "where", env = "CURATE_WHERE", value_name = "SQL")]
    pub where_: Option<String>,
    /// Without --out: run this SQL and print the result. With --out: a custom rule, a query
    /// returning a trace_id column.
    #[arg(long, env = "CURATE_SQL", value_name = "SQL")]
    pub sql: Option<String>,
    /// TOML file of custom rules: [rules.NAME] with `where = "..."` or `sql = "..."`.
    #[arg(long = "rules", env = "CURATE_RULES", value_name = "FILE")]
    pub rules_file: Option<PathBuf>,
    /// Start of the window: RFC 3339, a date, or a duration back from now (24h, 7d).
    #[arg(long, env = "CURATE_SINCE", default_value = "24h", value_name = "TIME")]
    pub since: String,
    /// End of the window (exclusive); default now.
    #[arg(long, env = "CURATE_UNTIL", value_name = "TIME")]
    pub until: Option<String>,
    /// No time bound (overrides --since/--until).
    #[arg(long, env = "CURATE_ALL")]
    pub all: bool,
    /// Only this tenant.
    #[arg(long, env = "CURATE_TENANT", global = true)]
    pub tenant: Option<String>,
    /// Leave out traces whose last span ended less than this long ago (still receiving).
    #[arg(
        long,
        env = "CURATE_SETTLE",
        default_value = "5m",
        value_name = "DURATION"
    )]
    pub settle: String,
    /// JSONL dataset to write; a manifest goes to <FILE>.manifest.json.
    #[arg(long, env = "CURATE_OUT", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Export format.
    #[arg(long, value_enum, default_value_t = Format::Items, env = "CURATE_FORMAT")]
    pub format: Format,
    /// One line per LLM call (call) or per trace (trace).
    #[arg(long, value_enum, default_value_t = Per::Call, env = "CURATE_PER")]
    pub per: Per,
    /// quick-followup: also select the earlier trace of each pair.
    #[arg(long, env = "CURATE_INCLUDE_PREVIOUS")]
    pub include_previous: bool,
    /// Price table (TOML, USD per million tokens) replacing the built-in one.
    #[arg(long, env = "CURATE_PRICES", value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// At most this many selected traces (earliest first).
    #[arg(long, env = "CURATE_LIMIT", value_name = "N")]
    pub limit: Option<usize>,
    /// A seeded random sample of N selected traces (with --seed).
    #[arg(long, env = "CURATE_SAMPLE", value_name = "N")]
    pub sample: Option<usize>,
    /// Seed of --sample.
    #[arg(long, env = "CURATE_SEED", default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Machine-readable output: JSON lines for --sql, a JSON summary for exports and jobs.
    #[arg(long, global = true)]
    pub json: bool,
    /// The current time (RFC 3339), for reproducible runs and tests; default the clock.
    #[arg(long, hide = true, env = "CURATE_NOW", global = true)]
    pub now: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the built-in rules, their parameters and defaults (and those of --rules FILE).
    Rules {
        #[arg(long = "rules", value_name = "FILE")]
        rules_file: Option<PathBuf>,
    },
    /// Scheduled jobs: select what is new, export, judge, write scores back.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Merge the small files of closed hour partitions into files near --target-size, sorted
    /// by (trace_id, start_time), keeping one copy of each span a client delivered twice.
    ///
    /// Readers going through curate never see a span twice or miss one: the replaced files
    /// are hidden once the merged file exists and deleted after --grace. Safe to interrupt at
    /// any point (the next run finishes what was started) and to run again. Exit codes: 0
    /// done, 1 failure, 2 bad arguments.
    Compact {
        /// Partitions whose hour ended at least this long ago are closed.
        #[arg(
            long,
            env = "CURATE_MIN_AGE",
            default_value = "1h",
            value_name = "DURATION"
        )]
        min_age: String,
        /// Size of the merged files (compressed), e.g. 128MiB.
        #[arg(
            long,
            env = "CURATE_TARGET_SIZE",
            default_value = "128MiB",
            value_name = "SIZE"
        )]
        target_size: String,
        /// Most memory for the decoded spans of a merged file, e.g. 1GiB. LLM spans take ~36x
        /// their compressed size decoded (a 128MiB file ~4.6GiB): a file whose spans take more
        /// is written in passes, each reading one range of its sorted rows from the sources,
        /// which costs a decompression of the sources per pass. The sort keys of all its rows
        /// (~120 bytes a span) and the sources as stored are held besides.
        #[arg(
            long,
            env = "CURATE_COMPACT_MEMORY",
            default_value = "1GiB",
            value_name = "SIZE"
        )]
        memory: String,
        /// How long replaced files stay after the merged file appeared, for queries that
        /// listed them just before (deleted by the first run after it).
        #[arg(
            long,
            env = "CURATE_GRACE",
            default_value = "10m",
            value_name = "DURATION"
        )]
        grace: String,
        /// Report what would be merged; change nothing.
        #[arg(long, env = "CURATE_DRY_RUN")]
        dry_run: bool,
    },
    /// Delete the partitions of the store older than --older-than (per tenant with --tenant).
    ///
    /// A partition (tenant, date, hour) goes when all of its hour is older than the cutoff.
    /// Exit codes: 0 done (or nothing to delete), 1 failure, 2 bad arguments.
    Retention {
        /// Age of the partitions to delete, e.g. 30d, 12h.
        #[arg(long, env = "CURATE_OLDER_THAN", value_name = "DURATION")]
        older_than: String,
        /// List what would be deleted, delete nothing.
        #[arg(long, env = "CURATE_DRY_RUN")]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Run a job file: select the traces that settled since the last successful run, export
    /// a dated dataset with its manifest, judge it, write the scores back, move the watermark.
    ///
    /// Safe to run twice (the second run finds nothing new), to crash (the next run resumes
    /// the unfinished window) and concurrently (the second run exits 3). See
    /// examples/nightly-job.toml.
    ///
    /// Exit codes: 0 done (nothing new included), 1 failed (the watermark did not move; rerun
    /// to resume), 2 bad job file, 3 another run of the job holds it or the judge refused the
    /// credentials.
    Run {
        /// The job file (TOML; `${VAR}` and `${VAR:-default}` take values from the environment).
        file: PathBuf,
        /// Say what would be selected and judged, and the estimated judge cost; change nothing.
        #[arg(long, env = "CURATE_DRY_RUN")]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    #[default]
    Any,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Items,
    OpenaiChat,
    Langfuse,
    Phoenix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    #[default]
    Call,
    Trace,
}
