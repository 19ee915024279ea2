//! Scheduled jobs (`curate job run FILE`): select the traces that settled since the last
//! successful run, export a dated dataset, judge it with eval-runner, write the scores back,
//! and move the watermark.
//!
//! Which traces a run takes: those whose start time is in `[watermark, until)`, where `until`
//! is the settle cutoff (`now - settle`) or, if earlier, the start of the earliest trace that
//! is still receiving spans. Every trace starting before `until` has therefore settled, and a
//! trace's start time only moves earlier when late spans arrive. A run reads spans from
//! `lookback` before the watermark only, so a span starting more than `lookback` after its
//! trace would make a trace taken long ago look new: each window therefore records the ids it
//! took (`_jobs/<name>/taken/<until>.txt`, one a line) and later windows leave those out, so a
//! trace is taken by exactly one run however late its spans come.
//!
//! State lives in the store, `_jobs/<name>/state/<seq>.json`, one new file per change, each
//! created only if absent (a conditional put on S3): of two runs that start together only one
//! can create the next state file, and the other exits 3. A run records its window before
//! working on it; if it fails or is killed, the next run finishes that window first (same
//! dataset, same eval run id, so eval-runner resumes and reuses verdicts), then goes on. Any
//! error after a run took the job records a `failed` state, so the next run need not wait for
//! the lease.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::catalog::{Catalog, CatalogOptions};
use crate::cli::{Args, Format, LogFormat, Match, Per};
use crate::error::CurateError;
use crate::window::{Window, parse_duration, parse_time, sql_time};
use crate::{TraceStarts, export_dataset};

/// A job file. Values may be `${VAR}` or `${VAR:-default}` from the environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub name: String,
    pub store: String,
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(rename = "match")]
    pub match_: Option<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    pub rules_file: Option<PathBuf>,
    #[serde(rename = "where")]
    pub where_: Option<String>,
    pub sql: Option<String>,
    pub tenant: Option<String>,
    pub settle: Option<String>,
    pub first_since: Option<String>,
    pub lookback: Option<String>,
    pub lease: Option<String>,
    pub format: Option<String>,
    pub per: Option<String>,
    pub out: String,
    pub work_dir: Option<PathBuf>,
    pub prices: Option<PathBuf>,
    pub limit: Option<usize>,
    pub sample: Option<usize>,
    pub seed: Option<u64>,
    pub judge: Option<JudgeSection>,
}

/// `[judge]`: how eval-runner judges the dataset. Without it a job only exports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSection {
    pub provider: Option<String>,
    pub url: Option<String>,
    pub model: Option<String>,
    pub metrics: Vec<String>,
    pub metrics_file: Option<PathBuf>,
    /// `store` (default: score spans into the job's store) or otlp-grpc:// / otlp-http://.
    pub emit: Option<String>,
    pub concurrency: Option<usize>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub timeout: Option<String>,
    pub max_retries: Option<u32>,
    pub cache_dir: Option<PathBuf>,
    pub mask: Option<Vec<String>>,
    pub mask_regex: Option<Vec<String>>,
}

/// Replaces `${VAR}` and `${VAR:-default}` with values from the environment.
pub fn interpolate(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {:?}", &rest[i..]))?;
        let (name, default) = match after[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&after[..end], None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("${{{}}} is not a variable name", &after[..end]));
        }
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("${{{name}}} is not set in the environment")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_strings(v: &mut toml::Value) -> Result<(), String> {
    match v {
        toml::Value::String(s) => *s = interpolate(s)?,
        toml::Value::Array(a) => a.iter_mut().try_for_each(interpolate_strings)?,
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, v)| interpolate_strings(v))?,
        _ => {}
    }
    Ok(())
}

impl JobFile {
    pub fn load(path: &Path) -> Result<Self, CurateError> {
        let bad = |m: String| CurateError::BadArgs(format!("job file {}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        // Variables are replaced in string values only (not in comments or keys).
        let mut value: toml::Value = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        interpolate_strings(&mut value).map_err(bad)?;
        let job: JobFile = value
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let name_ok = !job.name.is_empty()
            && job.name.len() <= 64
            && job
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(bad(format!(
                "name {:?} is not 1-64 of [A-Za-z0-9_-]",
                job.name
            )));
        }
        Ok(job)
    }

    /// The curate arguments of a run writing to `out`.
    fn args(&self, out: &Path) -> Result<Args, CurateError> {
        let parse =
            |what: &str, v: &Option<String>, default: &str| -> Result<String, CurateError> {
                Ok(v.clone().unwrap_or_else(|| default.to_string())).and_then(|s| {
                    if s.is_empty() {
                        Err(CurateError::BadArgs(format!("job {what} is empty")))
                    } else {
                        Ok(s)
                    }
                })
            };
        let format = Format::from_str(&parse("format", &self.format, "items")?, true)
            .map_err(|e| CurateError::BadArgs(format!("job format: {e}")))?;
        let per = Per::from_str(&parse("per", &self.per, "call")?, true)
            .map_err(|e| CurateError::BadArgs(format!("job per: {e}")))?;
        let match_ = Match::from_str(&parse("match", &self.match_, "any")?, true)
            .map_err(|e| CurateError::BadArgs(format!("job match: {e}")))?;
        Ok(Args {
            command: None,
            log_format: LogFormat::default(),
            store: self.store.clone(),
            rules: self.rules.clone(),
            match_,
            sets: self.set.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            where_: self.where_.clone(),
            sql: self.sql.clone(),
            rules_file: self.rules_file.clone(),
            since: "24h".into(),
            until: None,
            all: false,
            tenant: self.tenant.clone(),
            settle: parse("settle", &self.settle, "5m")?,
            out: Some(out.to_path_buf()),
            format,
            per,
            include_previous: false,
            prices: self.prices.clone(),
            limit: self.limit,
            sample: self.sample,
            seed: self.seed.unwrap_or(0),
            json: false,
            now: None,
        })
    }
}

/// One window of trace start times, as recorded before it is worked on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunWindow {
    /// Eval run id of its score spans: the same when a failed window is finished later.
    pub run_id: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// `_jobs/<name>/state/<seq>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub seq: u64,
    pub job: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    /// The invocation that wrote this state.
    pub invocation: String,
    pub updated: Option<DateTime<Utc>>,
    /// Traces starting before it have been taken.
    pub watermark: Option<DateTime<Utc>>,
    /// A window recorded but not finished.
    pub pending: Option<RunWindow>,
    pub last_report: Option<String>,
}

/// A job's folder in the store: `state/` and `taken/`.
struct StateStore {
    store: schemas::store::Store,
    /// `_jobs/<name>`.
    dir: String,
}

impl StateStore {
    fn taken_path(&self, window: &RunWindow) -> ObjectPath {
        ObjectPath::from(format!("{}/taken/{}.txt", self.dir, stamp(window.until)))
    }

    /// Records the trace ids `window` took (again, when a failed window is finished).
    async fn record_taken(&self, window: &RunWindow, ids: &[String]) -> Result<(), CurateError> {
        let mut text = ids.join("\n");
        text.push('\n');
        self.store
            .object_store()
            .put(&self.taken_path(window), PutPayload::from(text))
            .await?;
        Ok(())
    }

    /// The trace ids taken by the windows other than `window` (all before it). 33 bytes per
    /// taken trace.
    async fn taken_before(
        &self,
        window: Option<&RunWindow>,
    ) -> Result<HashSet<String>, CurateError> {
        let os = self.store.object_store();
        let own = window.map(|w| self.taken_path(w));
        let lists: Vec<ObjectPath> = os
            .list(Some(&ObjectPath::from(format!("{}/taken", self.dir))))
            .map_ok(|m| m.location)
            .try_filter(|p| {
                futures::future::ready(p.as_ref().ends_with(".txt") && Some(p) != own.as_ref())
            })
            .try_collect()
            .await?;
        let mut texts = futures::stream::iter(lists.into_iter().map(|p| {
            let os = os.clone();
            async move { os.get(&p).await?.bytes().await }
        }))
        .buffer_unordered(16);
        let mut taken = HashSet::new();
        while let Some(bytes) = texts.next().await {
            let bytes = bytes?;
            taken.extend(
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        Ok(taken)
    }

    async fn latest(&self) -> Result<Option<State>, CurateError> {
        let os = self.store.object_store();
        let objects: Vec<_> = os
            .list(Some(&ObjectPath::from(format!("{}/state", self.dir))))
            .try_collect()
            .await?;
        let Some(last) = objects
            .iter()
            .map(|o| o.location.clone())
            .filter(|p| p.as_ref().ends_with(".json"))
            .max_by(|a, b| a.as_ref().cmp(b.as_ref()))
        else {
            return Ok(None);
        };
        let bytes = os.get(&last).await?.bytes().await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CurateError::JobFailed(format!("job state {last}: {e}")))
    }

    /// Writes `state` as the next state file; fails with `JobRefused` if another run wrote
    /// that sequence number first.
    async fn create(&self, state: &State) -> Result<(), CurateError> {
        let path = ObjectPath::from(format!("{}/state/{:020}.json", self.dir, state.seq));
        let body = serde_json::to_vec_pretty(state).unwrap_or_default();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .object_store()
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(CurateError::JobRefused(format!(
                    "job {}: another run changed its state first ({path} exists); this run stops",
                    state.job
                )))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The taken lists (`_jobs/<job>/taken/<until>.txt`) of every job whose window ended at or
/// before `cutoff` (retention passes the start of its cutoff's hour, the end of the last
/// partition it deletes). Retention deletes them with the partitions older than the cutoff: the traces they
/// name started before it, so their first spans are gone too, and a span arriving for one of
/// them later begins it anew. This keeps a job's lists to the traces of the store's lifetime.
pub async fn taken_lists_before(
    store: &schemas::store::Store,
    cutoff: DateTime<Utc>,
) -> Result<Vec<ObjectPath>, CurateError> {
    let listed: Vec<ObjectPath> = store
        .object_store()
        .list(Some(&ObjectPath::from("_jobs")))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    Ok(listed
        .into_iter()
        .filter(|p| {
            let mut parts = p.parts().skip(2);
            let (Some(dir), Some(file)) = (parts.next(), parts.next()) else {
                return false;
            };
            let until = file
                .as_ref()
                .strip_suffix(".txt")
                .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok());
            dir.as_ref() == "taken"
                && parts.next().is_none()
                && until.is_some_and(|u| u.and_utc() <= cutoff)
        })
        .collect())
}

/// What one window produced; written as `<dataset>.report.json`.
#[derive(Debug, Serialize)]
pub struct WindowReport {
    pub job: String,
    pub invocation: String,
    pub eval_run_id: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub dataset: String,
    pub selected: usize,
    pub exported_lines: usize,
    pub judged: usize,
    pub reused: usize,
    pub failed: usize,
    pub skipped: usize,
    pub judge_requests: u64,
    pub judge_cost_usd: Option<f64>,
    pub select_seconds: f64,
    pub judge_seconds: f64,
    pub status: String,
    pub error: Option<String>,
}

/// Where a job's files go: a local directory, or S3 with a local staging directory.
struct Outputs {
    local_dir: PathBuf,
    remote: Option<(schemas::store::Store, String)>,
}

impl Outputs {
    fn new(job: &JobFile) -> Result<Self, CurateError> {
        if job.out.starts_with("s3://") {
            let store = schemas::store::Store::open(&job.out)
                .map_err(|e| CurateError::BadArgs(format!("job out: {e}")))?;
            let staging = job
                .work_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".trace2eval-jobs"));
            Ok(Self {
                local_dir: staging.join(&job.name),
                remote: Some((store, job.name.clone())),
            })
        } else {
            Ok(Self {
                local_dir: PathBuf::from(&job.out).join(&job.name),
                remote: None,
            })
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.local_dir.join(file)
    }

    async fn upload(&self, file: &str) -> Result<(), CurateError> {
        let Some((store, prefix)) = &self.remote else {
            return Ok(());
        };
        let local = self.path(file);
        let Ok(bytes) = std::fs::read(&local) else {
            return Ok(());
        };
        store
            .put(&format!("{prefix}/{file}"), bytes.into())
            .await
            .map_err(|e| CurateError::JobFailed(format!("uploading {file}: {e}")))
    }

    /// Brings back a file an earlier (possibly killed) run uploaded, if it is not here.
    async fn download(&self, file: &str) -> Result<(), CurateError> {
        let Some((store, prefix)) = &self.remote else {
            return Ok(());
        };
        let local = self.path(file);
        if local.exists() {
            return Ok(());
        }
        match store
            .object_store()
            .get(&ObjectPath::from(format!("{prefix}/{file}")))
            .await
        {
            Ok(r) => {
                let bytes = r.bytes().await?;
                std::fs::write(&local, bytes)
                    .map_err(|e| CurateError::io(format!("writing {}", local.display()), e))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The invocation's time: `now` (the clock, or `--now`) plus the time elapsed since, so state
/// times stay on one clock when a test sets `--now`.
struct Clock {
    start: DateTime<Utc>,
    elapsed: Instant,
}

impl Clock {
    fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            start,
            elapsed: Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.start + chrono::Duration::from_std(self.elapsed.elapsed()).unwrap_or_default()
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn new_invocation(now: DateTime<Utc>) -> String {
    schemas::layout::ulid(now.timestamp_millis().max(0) as u64, rand::random::<u128>())
}

/// Runs (or with `dry_run`, plans) one invocation of the job in `file`.
pub async fn run(
    file: &Path,
    dry_run: bool,
    now: DateTime<Utc>,
    json: bool,
) -> Result<String, CurateError> {
    let job = JobFile::load(file)?;
    let settle = parse_duration(job.settle.as_deref().unwrap_or("5m"))?;
    let lookback = parse_duration(job.lookback.as_deref().unwrap_or("1h"))?;
    let lease = parse_duration(job.lease.as_deref().unwrap_or("1h"))?;
    let first_since = parse_time(job.first_since.as_deref().unwrap_or("24h"), now)?;
    let outputs = Outputs::new(&job)?;
    let store = schemas::store::Store::open(&job.store)
        .map_err(|e| CurateError::BadArgs(format!("job store: {e}")))?;
    let states = StateStore {
        store,
        dir: format!("_jobs/{}", job.name),
    };
    let latest = states.latest().await?.unwrap_or_default();
    let invocation = new_invocation(now);
    let clock = Clock::starting_at(now);
    if latest.status == "running" && latest.updated.is_some_and(|u| u + lease > now) && !dry_run {
        return Err(CurateError::JobRefused(format!(
            "job {}: run {} has held it since {} (lease {}); if that run died, the next run \
             after the lease takes over",
            job.name,
            latest.invocation,
            latest.updated.map(|u| u.to_rfc3339()).unwrap_or_default(),
            job.lease.as_deref().unwrap_or("1h")
        )));
    }
    let watermark = latest.watermark.unwrap_or(first_since);
    let cutoff = now - settle;
    let mut state = State {
        seq: latest.seq,
        job: job.name.clone(),
        status: "running".into(),
        invocation: invocation.clone(),
        updated: Some(now),
        watermark: Some(watermark),
        pending: latest.pending.clone(),
        last_report: latest.last_report.clone(),
    };
    if dry_run {
        let window = match &latest.pending {
            Some(p) => p.clone(),
            None => new_window(&job, &states, watermark, cutoff, lookback).await?,
        };
        return plan(&job, &states, &window, now, lookback, json).await;
    }
    state.seq += 1;
    states.create(&state).await?;
    tracing::info!(job = job.name, invocation, watermark = %watermark, "job run started");
    let run = Run {
        job: &job,
        outputs: &outputs,
        states: &states,
        clock: &clock,
        now,
        cutoff,
        lookback,
        json,
    };
    // Every line the run logs carries its invocation (the run id).
    let span = tracing::info_span!("job_run", job = %job.name, invocation = %invocation);
    let result = run
        .windows(&mut state, latest.pending)
        .instrument(span)
        .await;
    if result.is_err() {
        run.mark_failed(&mut state).await;
    }
    result
}

/// One invocation that holds the job.
struct Run<'a> {
    job: &'a JobFile,
    outputs: &'a Outputs,
    states: &'a StateStore,
    clock: &'a Clock,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    lookback: chrono::Duration,
    json: bool,
}

impl Run<'_> {
    /// An unfinished window first, then what is new.
    async fn windows(
        &self,
        state: &mut State,
        pending: Option<RunWindow>,
    ) -> Result<String, CurateError> {
        let (job, states, json) = (self.job, self.states, self.json);
        let mut reports = Vec::new();
        let mut windows: Vec<RunWindow> = pending.into_iter().collect();
        loop {
            let window = match windows.pop() {
                Some(w) => w,
                None => {
                    let since = state.watermark.unwrap_or(self.cutoff);
                    let w = new_window(job, states, since, self.cutoff, self.lookback).await?;
                    if w.until <= w.since {
                        break;
                    }
                    state.seq += 1;
                    state.pending = Some(w.clone());
                    state.updated = Some(self.clock.now());
                    states.create(state).await?;
                    w
                }
            };
            let report = run_window(
                job,
                self.outputs,
                states,
                &window,
                &state.invocation,
                self.now,
                self.lookback,
            )
            .await?;
            let failed = report.status != "done";
            state.seq += 1;
            state.updated = Some(self.clock.now());
            state.last_report = Some(report.dataset.clone() + ".report.json");
            if failed {
                state.status = "failed".into();
            } else {
                state.watermark = Some(window.until);
                state.pending = None;
            }
            states.create(state).await?;
            tracing::info!(
                job = job.name,
                invocation = state.invocation,
                since = %window.since,
                until = %window.until,
                selected = report.selected,
                judged = report.judged,
                failed = report.failed,
                "job window {}",
                report.status
            );
            reports.push(report);
            if failed {
                return Err(CurateError::JobFailed(format!(
                    "{}job {}: the window from {} failed ({}); the watermark stays at {}, rerun \
                     to resume",
                    render(&reports, json),
                    job.name,
                    window.since,
                    reports
                        .last()
                        .and_then(|r| r.error.clone())
                        .unwrap_or_default(),
                    window.since
                )));
            }
        }
        state.seq += 1;
        state.status = "done".into();
        state.updated = Some(self.clock.now());
        states.create(state).await?;
        if reports.is_empty() {
            return Ok(if json {
                format!(
                    "{}\n",
                    serde_json::json!({"job": job.name, "invocation": state.invocation,
                        "windows": [], "watermark": state.watermark, "message": "nothing new"})
                )
            } else {
                format!(
                    "job {}: nothing new since {} (settle {})\n",
                    job.name,
                    state.watermark.map(|w| w.to_rfc3339()).unwrap_or_default(),
                    job.settle.as_deref().unwrap_or("5m")
                )
            });
        }
        Ok(render(&reports, json))
    }

    /// After an error, records a `failed` state (keeping the unfinished window), so the next
    /// run resumes at once instead of waiting out the lease; unless the latest state is no
    /// longer this run's `running` one (another run took the job over, or the failure is
    /// recorded already).
    async fn mark_failed(&self, state: &mut State) {
        let latest = match self.states.latest().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = self.job.name, error = %e, "could not record the failure");
                return;
            }
        };
        if latest.invocation != state.invocation || latest.status != "running" {
            return;
        }
        state.seq = latest.seq + 1;
        state.status = "failed".into();
        state.updated = Some(self.clock.now());
        if let Err(e) = self.states.create(state).await {
            tracing::warn!(job = self.job.name, error = %e, "could not record the failure");
        }
    }
}

fn render(reports: &[WindowReport], json: bool) -> String {
    let mut out = String::new();
    for r in reports {
        if json {
            out.push_str(&serde_json::to_string(r).unwrap_or_default());
        } else {
            out.push_str(&format!(
                "job {} [{} .. {}): selected {}, exported {} lines, judged {} (reused {}, failed {}), \
                 cost {}, dataset {}: {}",
                r.job,
                r.since.to_rfc3339(),
                r.until.to_rfc3339(),
                r.selected,
                r.exported_lines,
                r.judged,
                r.reused,
                r.failed,
                r.judge_cost_usd.map_or("-".into(), |c| format!("${c:.4}")),
                r.dataset,
                r.status
            ));
        }
        out.push('\n');
    }
    out
}

/// The next window from `since`: up to the settle cutoff, or to the start of the earliest
/// trace still receiving spans if that is earlier (a trace taken already does not count: it
/// will not be taken again, so waiting for it would only hold back the others).
async fn new_window(
    job: &JobFile,
    states: &StateStore,
    since: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    lookback: chrono::Duration,
) -> Result<RunWindow, CurateError> {
    let catalog = Catalog::open(
        &job.store,
        CatalogOptions {
            window: Window {
                since: Some(since - lookback),
                until: None,
            },
            tenant: job.tenant.clone(),
            prices: schemas::prices::Prices::default_table()
                .map_err(|e| CurateError::BadArgs(e.to_string()))?,
        },
    )
    .await?;
    let sql = format!(
        "SELECT arrow_cast(trace_id, 'Utf8') AS id, arrow_cast(start_time, 'Int64') AS start \
         FROM traces WHERE start_time >= {} AND end_time > {}",
        sql_time(since),
        sql_time(cutoff)
    );
    let batches = catalog.ctx.sql(&sql).await?.collect().await?;
    let taken = states.taken_before(None).await?;
    let mut open_from: Option<DateTime<Utc>> = None;
    for b in &batches {
        use datafusion::arrow::array::{Array, Int64Array, StringArray};
        let (Some(ids), Some(starts)) = (
            b.column(0).as_any().downcast_ref::<StringArray>(),
            b.column(1).as_any().downcast_ref::<Int64Array>(),
        ) else {
            return Err(CurateError::JobFailed(format!(
                "open traces: unexpected columns {:?}",
                b.schema()
            )));
        };
        for i in 0..b.num_rows() {
            if !starts.is_null(i) && !taken.contains(ids.value(i)) {
                let start = DateTime::<Utc>::from_timestamp_nanos(starts.value(i));
                open_from = Some(open_from.map_or(start, |o| o.min(start)));
            }
        }
    }
    let until = open_from.map_or(cutoff, |o| o.min(cutoff)).max(since);
    Ok(RunWindow {
        run_id: format!("{}-{}", job.name, stamp(until)),
        since,
        until,
    })
}

/// Exports the traces starting in `window` and not taken by an earlier window to `dataset`,
/// reading spans from `lookback` before it so traces that began just before are seen whole.
async fn export_window(
    job: &JobFile,
    states: &StateStore,
    dataset: &Path,
    window: &RunWindow,
    now: DateTime<Utc>,
    lookback: chrono::Duration,
) -> Result<crate::Summary, CurateError> {
    export_dataset(
        &job.args(dataset)?,
        now,
        Window {
            since: Some(window.since - lookback),
            until: None,
        },
        Some(TraceStarts {
            since: window.since,
            until: window.until,
            taken: states.taken_before(Some(window)).await?,
        }),
    )
    .await
}

/// Exports and judges one window.
async fn run_window(
    job: &JobFile,
    outputs: &Outputs,
    states: &StateStore,
    window: &RunWindow,
    invocation: &str,
    now: DateTime<Utc>,
    lookback: chrono::Duration,
) -> Result<WindowReport, CurateError> {
    let name = format!("{}.jsonl", stamp(window.until));
    std::fs::create_dir_all(&outputs.local_dir)
        .map_err(|e| CurateError::io(format!("creating {}", outputs.local_dir.display()), e))?;
    let dataset = outputs.path(&name);
    let started = Instant::now();
    let summary = export_window(job, states, &dataset, window, now, lookback).await?;
    states.record_taken(window, &summary.trace_ids).await?;
    outputs.upload(&name).await?;
    outputs.upload(&format!("{name}.manifest.json")).await?;
    let select_seconds = started.elapsed().as_secs_f64();
    let mut report = WindowReport {
        job: job.name.clone(),
        invocation: invocation.to_string(),
        eval_run_id: window.run_id.clone(),
        since: window.since,
        until: window.until,
        dataset: dataset.display().to_string(),
        selected: summary.exported_traces,
        exported_lines: summary.lines,
        judged: 0,
        reused: 0,
        failed: 0,
        skipped: 0,
        judge_requests: 0,
        judge_cost_usd: None,
        select_seconds,
        judge_seconds: 0.0,
        status: "done".into(),
        error: None,
    };
    if let (Some(judge), true) = (&job.judge, summary.lines > 0) {
        let results_name = format!("{name}.results.jsonl");
        outputs.download(&results_name).await?;
        let started = Instant::now();
        let cfg = eval_args(
            job,
            judge,
            &dataset,
            &outputs.path(&results_name),
            &window.run_id,
        )
        .resolve()
        .map_err(|e| match e.exit_code() {
            2 => CurateError::BadArgs(format!("job [judge]: {e}")),
            _ => CurateError::JobFailed(e.to_string()),
        })?;
        let outcome = eval_runner::run(cfg, std::future::pending::<()>()).await;
        outputs.upload(&results_name).await?;
        report.judge_seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(o) => {
                for m in o.summary.metrics.values() {
                    report.judged += m.n;
                    report.reused += m.reused + m.resumed;
                    report.failed += m.failures;
                    report.skipped += m.skipped;
                }
                report.judge_requests = o.summary.judge_requests;
                report.judge_cost_usd = o.summary.judge_cost_usd;
                if o.code != 0 {
                    report.status = "failed".into();
                    report.error = Some(format!(
                        "{} pairs failed to be judged, {} dataset lines unreadable",
                        report.failed, o.summary.bad_lines
                    ));
                }
            }
            Err(e) => {
                report.status = "failed".into();
                report.error = Some(e.to_string());
                write_report(outputs, &name, &report).await?;
                return Err(match e.exit_code() {
                    3 => CurateError::JobRefused(format!("job {}: {e}", job.name)),
                    2 => CurateError::BadArgs(format!("job [judge]: {e}")),
                    _ => CurateError::JobFailed(format!("job {}: {e}", job.name)),
                });
            }
        }
    }
    write_report(outputs, &name, &report).await?;
    Ok(report)
}

async fn write_report(
    outputs: &Outputs,
    name: &str,
    report: &WindowReport,
) -> Result<(), CurateError> {
    let file = format!("{name}.report.json");
    let path = outputs.path(&file);
    std::fs::write(&path, serde_json::to_vec_pretty(report).unwrap_or_default())
        .map_err(|e| CurateError::io(format!("writing {}", path.display()), e))?;
    outputs.upload(&file).await
}

fn eval_args(
    job: &JobFile,
    judge: &JudgeSection,
    dataset: &Path,
    results: &Path,
    run_id: &str,
) -> eval_runner::cli::Args {
    let (emit, emit_store) = match judge.emit.as_deref() {
        None | Some("store") => (None, Some(job.store.clone())),
        Some(url) => (Some(url.to_string()), None),
    };
    eval_runner::cli::Args {
        dataset: Some(dataset.to_path_buf()),
        metrics: Some(judge.metrics.clone()),
        metrics_file: judge.metrics_file.clone(),
        judge: judge.provider.clone(),
        judge_url: judge.url.clone(),
        judge_model: judge.model.clone(),
        out: Some(results.to_path_buf()),
        emit,
        emit_store,
        tenant: job.tenant.clone(),
        concurrency: judge.concurrency,
        rpm: judge.rpm,
        tpm: judge.tpm,
        timeout: judge.timeout.clone(),
        max_retries: judge.max_retries,
        cache_dir: judge.cache_dir.clone(),
        mask: judge.mask.clone(),
        mask_regex: judge.mask_regex.clone(),
        prices: job.prices.clone(),
        run_id: Some(run_id.to_string()),
        ..Default::default()
    }
}

/// `--dry-run`: what the next window would select and what judging it would cost, without
/// calling the judge, writing a dataset where the job keeps them, or moving the watermark.
async fn plan(
    job: &JobFile,
    states: &StateStore,
    window: &RunWindow,
    now: DateTime<Utc>,
    lookback: chrono::Duration,
    json: bool,
) -> Result<String, CurateError> {
    let scratch = std::env::temp_dir().join(format!("trace2eval-dry-run-{}", new_invocation(now)));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| CurateError::io(format!("creating {}", scratch.display()), e))?;
    let dataset = scratch.join("dataset.jsonl");
    let result = async {
        let summary = export_window(job, states, &dataset, window, now, lookback).await?;
        let text = std::fs::read_to_string(&dataset).unwrap_or_default();
        let metrics = job.judge.as_ref().map_or(0, |j| j.metrics.len());
        // A judge prompt is the item plus a template of about 150 tokens; an answer about 100.
        let input_tokens = (text.len() as u64 / 4 + 150 * summary.lines as u64) * metrics as u64;
        let output_tokens = 100 * (summary.lines * metrics) as u64;
        let cost = job.judge.as_ref().and_then(|j| {
            let prices = schemas::prices::Prices::load(job.prices.as_deref()).ok()?;
            prices.cost(
                j.model.as_deref()?,
                input_tokens as i64,
                output_tokens as i64,
            )
        });
        let plan = serde_json::json!({
            "dry_run": true,
            "job": job.name,
            "since": window.since,
            "until": window.until,
            "selected": summary.exported_traces,
            "lines": summary.lines,
            "pairs_to_judge": summary.lines * metrics,
            "estimated_judge_input_tokens": input_tokens,
            "estimated_judge_output_tokens": output_tokens,
            "estimated_judge_cost_usd": cost,
        });
        Ok::<_, CurateError>(if json {
            format!("{plan}\n")
        } else {
            format!(
                "dry run of job {}: [{} .. {}) would select {} traces ({} lines), judge {} pairs, \
                 about {} + {} judge tokens, estimated cost {}\n",
                job.name,
                window.since.to_rfc3339(),
                window.until.to_rfc3339(),
                summary.exported_traces,
                summary.lines,
                summary.lines * metrics,
                input_tokens,
                output_tokens,
                cost.map_or("unknown".into(), |c| format!("${c:.4}"))
            )
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_files_take_values_from_the_environment() {
        // PATH is set in any test environment; the other name is not.
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(interpolate("a ${PATH} b"), Ok(format!("a {path} b")));
        assert_eq!(
            interpolate("${TRACE2EVAL_SURELY_UNSET_VAR:-x y}"),
            Ok("x y".into())
        );
        assert!(
            interpolate("${TRACE2EVAL_SURELY_UNSET_VAR}").is_err_and(|e| e.contains("not set"))
        );
        assert!(interpolate("${oops").is_err());
        assert!(interpolate("${a b}").is_err());
    }
}
