//! Command line of `eval-runner`: flags, `EVAL_*` environment variables and an optional TOML
//! file, in that order of precedence, then the defaults documented on each option.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::error::EvalError;

/// Judges every item of a curated JSONL dataset with an LLM (OpenAI-compatible Chat Completions
/// or the Anthropic Messages API), writes one result line per (item, metric) as it completes,
/// and sends one score span per verdict, linked to the judged span, to an OTLP endpoint or a
/// store. A rerun with the same --out resumes: only (item, metric) pairs without a verdict are
/// judged, and verdicts cached from earlier runs cost no call.
///
/// API keys come from the environment only: OPENAI_API_KEY for --judge openai,
/// ANTHROPIC_API_KEY for --judge anthropic, or EVAL_JUDGE_API_KEY for either.
///
/// Exit codes: 0 every (item, metric) has a verdict; 1 the run finished but some failed (see
/// the `error` key of their result lines; rerun to retry them); 2 bad arguments, config,
/// metrics file or dataset; 3 aborted: the judge refused the credentials, or score spans
/// could not be delivered.
#[derive(Parser, Deserialize, Debug, Default, Clone)]
#[command(name = "eval-runner", version, about, long_about)]
#[serde(default, deny_unknown_fields)]
pub struct Args {
    /// TOML file with any of the options below (keys as the long flag names with `_` instead
    /// of `-`, e.g. `judge_model = "gpt-4o-mini"`); unknown keys are an error.
    #[arg(long, env = "EVAL_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Dataset written by `curate` (formats items, langfuse or phoenix: they carry the ids the
    /// score spans link to).
    #[arg(long, env = "EVAL_DATASET", value_name = "FILE")]
    pub dataset: Option<PathBuf>,
    /// Metrics to judge, comma-separated: built-ins helpfulness, faithfulness, relevance,
    /// correctness, or names from --metrics-file. [default: helpfulness]
    #[arg(
        long,
        env = "EVAL_METRICS",
        value_name = "NAME[,NAME]",
        value_delimiter = ','
    )]
    pub metrics: Option<Vec<String>>,
    /// TOML file of user metrics (`[metrics.NAME]` with `prompt`, and `scale = [MIN, MAX]` or
    /// `labels = { LABEL = SCORE, ... }`); see the README.
    #[arg(long, env = "EVAL_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Judge API shape: openai (Chat Completions: OpenAI, vLLM, Ollama, llama.cpp server) or
    /// anthropic (Messages API). [default: openai]
    #[arg(long, env = "EVAL_JUDGE", value_name = "openai|anthropic")]
    pub judge: Option<String>,
    /// Base URL of the judge API. [default: https://api.openai.com/v1 for openai,
    /// https://api.anthropic.com for anthropic]
    #[arg(long, env = "EVAL_JUDGE_URL", value_name = "URL")]
    pub judge_url: Option<String>,
    /// Judge model name, e.g. gpt-4o-mini or claude-haiku-4-5.
    #[arg(long, env = "EVAL_JUDGE_MODEL", value_name = "MODEL")]
    pub judge_model: Option<String>,
    /// Results JSONL: one line per (item, metric), appended as verdicts complete. A second run
    /// with the same file resumes.
    #[arg(long, env = "EVAL_OUT", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Where score spans go: otlp-grpc://HOST:PORT or otlp-http://HOST:PORT (for example our
    /// `ingest`). Without --emit or --emit-store no spans are sent.
    #[arg(long, env = "EVAL_EMIT", value_name = "URL")]
    pub emit: Option<String>,
    /// Write score spans straight into a store (a directory or s3://bucket/prefix) as Parquet.
    #[arg(
        long,
        env = "EVAL_EMIT_STORE",
        value_name = "URL",
        conflicts_with = "emit"
    )]
    pub emit_store: Option<String>,
    /// Tenant of the score spans written with --emit-store. [default: default]
    #[arg(long, env = "EVAL_TENANT")]
    pub tenant: Option<String>,
    /// Judge requests in flight at once. [default: 16]
    #[arg(long, env = "EVAL_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Requests per minute sent to the judge; 0 means no limit. [default: 0]
    #[arg(long, env = "EVAL_RPM", value_name = "N")]
    pub rpm: Option<u32>,
    /// Tokens per minute (prompt estimate + --max-tokens) sent to the judge; 0 means no
    /// limit. [default: 0]
    #[arg(long, env = "EVAL_TPM", value_name = "N")]
    pub tpm: Option<u32>,
    /// Per-request timeout (e.g. 60s, 2m). [default: 60s]
    #[arg(long, env = "EVAL_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Retries of a request after 429, 5xx, a timeout or a connection error, with exponential
    /// backoff and jitter, honouring Retry-After. [default: 5]
    #[arg(long, env = "EVAL_MAX_RETRIES", value_name = "N")]
    pub max_retries: Option<u32>,
    /// Times a judge answer that does not parse, or is out of range, is asked again before the
    /// (item, metric) is recorded as failed with the raw answer. [default: 2]
    #[arg(long, env = "EVAL_PARSE_RETRIES", value_name = "N")]
    pub parse_retries: Option<u32>,
    /// Largest judge answer, in tokens. [default: 512]
    #[arg(long, env = "EVAL_MAX_TOKENS", value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature of the judge. [default: 0]
    #[arg(long, env = "EVAL_TEMPERATURE", value_name = "T")]
    pub temperature: Option<f64>,
    /// Directory of the verdict cache shared by runs. [default: $XDG_CACHE_HOME/trace2eval or
    /// ~/.cache/trace2eval]
    #[arg(long, env = "EVAL_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the verdict cache.
    #[arg(long, env = "EVAL_NO_CACHE")]
    pub no_cache: bool,
    /// Mask before sending to the judge (not in what is stored): email, phone, comma-separated.
    #[arg(
        long,
        env = "EVAL_MASK",
        value_name = "KIND[,KIND]",
        value_delimiter = ','
    )]
    pub mask: Option<Vec<String>>,
    /// Also mask what this regular expression matches (repeatable).
    #[arg(long = "mask-regex", env = "EVAL_MASK_REGEX", value_name = "REGEX")]
    pub mask_regex: Option<Vec<String>>,
    /// Price table (TOML, USD per million tokens) for the judge cost estimate.
    /// [default: the table shipped with trace2eval]
    #[arg(long, env = "EVAL_PRICES", value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Judge at most N items of the dataset (the first N).
    #[arg(long, env = "EVAL_LIMIT", value_name = "N")]
    pub limit: Option<usize>,
    /// Print the summary as one JSON object.
    #[arg(long, env = "EVAL_JSON")]
    pub json: bool,
    /// Run id of the score spans (they form one eval-run trace per run id). [default: the run
    /// id in --out when resuming, else a new ULID]
    #[arg(long, env = "EVAL_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
    /// Log format on stderr: text or json (level from RUST_LOG, default warn). [default: text]
    #[arg(long, env = "EVAL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// An API key: used in requests, never printed (`Debug` shows `***`).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Which judge API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// Where score spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    None,
    OtlpGrpc(String),
    OtlpHttp(String),
    Store(String),
}

/// Everything a run needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub dataset: PathBuf,
    pub metrics: Vec<String>,
    pub metrics_file: Option<PathBuf>,
    pub provider: Provider,
    pub judge_url: String,
    pub judge_model: String,
    pub api_key: Option<Secret>,
    pub out: PathBuf,
    pub emit: Emit,
    pub tenant: String,
    pub concurrency: usize,
    pub rpm: u32,
    pub tpm: u32,
    pub timeout: Duration,
    pub max_retries: u32,
    pub parse_retries: u32,
    pub max_tokens: u32,
    pub temperature: f64,
    pub cache_dir: Option<PathBuf>,
    pub mask: Vec<String>,
    pub mask_regex: Vec<String>,
    pub prices: Option<PathBuf>,
    pub limit: Option<usize>,
    pub json: bool,
    pub log_json: bool,
    pub run_id: Option<String>,
}

impl Args {
    /// Fills options not given on the command line or in the environment from the TOML file.
    fn merge_file(self) -> Result<Self, EvalError> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| EvalError::BadArgs(format!("config {}: {e}", path.display())))?;
        let file: Args = toml::from_str(&text)
            .map_err(|e| EvalError::BadArgs(format!("config {}: {e}", path.display())))?;
        macro_rules! pick {
            ($($f:ident),*) => { Args { $($f: self.$f.or(file.$f),)* config: self.config,
                no_cache: self.no_cache || file.no_cache, json: self.json || file.json } };
        }
        Ok(pick!(
            dataset,
            metrics,
            metrics_file,
            judge,
            judge_url,
            judge_model,
            out,
            emit,
            emit_store,
            tenant,
            concurrency,
            rpm,
            tpm,
            timeout,
            max_retries,
            parse_retries,
            max_tokens,
            temperature,
            cache_dir,
            mask,
            mask_regex,
            prices,
            limit,
            run_id,
            log_format
        ))
    }

    /// Resolves defaults and checks every option; errors name the option.
    pub fn resolve(self) -> Result<Config, EvalError> {
        let a = self.merge_file()?;
        let bad = |m: String| EvalError::BadArgs(m);
        let provider = match a.judge.as_deref().unwrap_or("openai") {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            other => {
                return Err(bad(format!(
                    "--judge {other:?}: expected openai or anthropic"
                )));
            }
        };
        let judge_url = a
            .judge_url
            .unwrap_or_else(|| match provider {
                Provider::OpenAi => "https://api.openai.com/v1".into(),
                Provider::Anthropic => "https://api.anthropic.com".into(),
            })
            .trim_end_matches('/')
            .to_string();
        if !(judge_url.starts_with("http://") || judge_url.starts_with("https://")) {
            return Err(bad(format!(
                "--judge-url {judge_url:?}: expected an http:// or https:// URL"
            )));
        }
        let judge_model = a.judge_model.filter(|m| !m.is_empty()).ok_or_else(|| {
            bad("--judge-model (or EVAL_JUDGE_MODEL) is required, e.g. gpt-4o-mini".into())
        })?;
        let dataset = a
            .dataset
            .ok_or_else(|| bad("--dataset FILE is required (a JSONL file from curate)".into()))?;
        let out = a
            .out
            .ok_or_else(|| bad("--out FILE is required (results JSONL)".into()))?;
        let emit = match (a.emit, a.emit_store) {
            (Some(_), Some(_)) => {
                return Err(bad("give --emit or --emit-store, not both".into()));
            }
            (Some(url), None) => parse_emit(&url)?,
            (None, Some(store)) => Emit::Store(store),
            (None, None) => Emit::None,
        };
        let tenant = a.tenant.unwrap_or_else(|| "default".into());
        schemas::layout::validate_tenant(&tenant).map_err(|e| bad(format!("--tenant: {e}")))?;
        let concurrency = a.concurrency.unwrap_or(16);
        if concurrency == 0 {
            return Err(bad("--concurrency must be at least 1".into()));
        }
        let timeout = parse_duration(a.timeout.as_deref().unwrap_or("60s"))
            .map_err(|e| bad(format!("--timeout: {e}")))?;
        let metrics = a.metrics.unwrap_or_else(|| vec!["helpfulness".into()]);
        let metrics: Vec<String> = metrics
            .into_iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if metrics.is_empty() {
            return Err(bad("--metrics names no metric".into()));
        }
        let temperature = a.temperature.unwrap_or(0.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad(format!("--temperature {temperature}: expected 0 to 2")));
        }
        let api_key = std::env::var("EVAL_JUDGE_API_KEY")
            .ok()
            .or_else(|| {
                std::env::var(match provider {
                    Provider::OpenAi => "OPENAI_API_KEY",
                    Provider::Anthropic => "ANTHROPIC_API_KEY",
                })
                .ok()
            })
            .filter(|k| !k.is_empty())
            .map(Secret);
        let log_json = match a.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                return Err(bad(format!(
                    "--log-format {other:?}: expected text or json"
                )));
            }
        };
        let cache_dir = if a.no_cache {
            None
        } else {
            a.cache_dir.or_else(default_cache_dir)
        };
        Ok(Config {
            dataset,
            metrics,
            metrics_file: a.metrics_file,
            provider,
            judge_url,
            judge_model,
            api_key,
            out,
            emit,
            tenant,
            concurrency,
            rpm: a.rpm.unwrap_or(0),
            tpm: a.tpm.unwrap_or(0),
            timeout,
            max_retries: a.max_retries.unwrap_or(5),
            parse_retries: a.parse_retries.unwrap_or(2),
            max_tokens: a.max_tokens.unwrap_or(512),
            temperature,
            cache_dir,
            mask: a.mask.unwrap_or_default(),
            mask_regex: a.mask_regex.unwrap_or_default(),
            prices: a.prices,
            limit: a.limit,
            json: a.json,
            log_json,
            run_id: a.run_id.filter(|r| !r.is_empty()),
        })
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("trace2eval"))
}

fn parse_emit(url: &str) -> Result<Emit, EvalError> {
    let hostport = |rest: &str| -> Result<String, EvalError> {
        let hp = rest.trim_end_matches('/');
        if hp.is_empty() || hp.contains('/') {
            return Err(EvalError::BadArgs(format!(
                "--emit {url:?}: expected HOST:PORT after the scheme"
            )));
        }
        Ok(hp.to_string())
    };
    if let Some(rest) = url.strip_prefix("otlp-grpc://") {
        return Ok(Emit::OtlpGrpc(format!("http://{}", hostport(rest)?)));
    }
    if let Some(rest) = url.strip_prefix("otlp-http://") {
        return Ok(Emit::OtlpHttp(format!("http://{}", hostport(rest)?)));
    }
    Err(EvalError::BadArgs(format!(
        "--emit {url:?}: expected otlp-grpc://HOST:PORT or otlp-http://HOST:PORT \
         (use --emit-store for a store)"
    )))
}

/// `500ms`, `30s`, `5m`, `1h`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_emit_urls_parse_or_say_why_not() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(
            parse_emit("otlp-grpc://127.0.0.1:4317").ok(),
            Some(Emit::OtlpGrpc("http://127.0.0.1:4317".into()))
        );
        assert!(parse_emit("http://127.0.0.1:4317").is_err());
        assert!(parse_emit("otlp-http://").is_err());
    }
}
