//! The results JSONL (one line per (item, metric), appended as verdicts complete; resumable)
//! and the verdict cache shared by runs.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::metrics::Verdict;

/// One result line. Keys in this order in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultLine {
    pub item_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub metric: String,
    /// Normalised to 0..1; null when failed or skipped.
    pub score: Option<f64>,
    /// The judge's number on the metric's scale.
    pub raw_score: Option<f64>,
    pub label: Option<String>,
    pub explanation: Option<String>,
    pub judge_model: String,
    pub latency_ms: f64,
    /// Null when judged (or skipped); else why not.
    pub error: Option<String>,
    /// Why the pair was not judged (e.g. `no retrieved context` for faithfulness).
    pub skipped: Option<String>,
    /// The judge's last answer, when it could not be used.
    pub raw_answer: Option<String>,
    pub attempts: u32,
    /// `cache` when the verdict came from the verdict cache.
    pub reused: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub run_id: String,
    /// The score span's id (hex), when one was sent.
    pub eval_span_id: Option<String>,
    pub judged_at: String,
}

impl ResultLine {
    pub fn key(&self) -> (String, String) {
        (self.item_id.clone(), self.metric.clone())
    }

    /// A verdict or a skip: done, not judged again on resume.
    pub fn is_done(&self) -> bool {
        self.error.is_none()
    }
}

/// What an earlier run left in the results file.
pub struct Resumed {
    pub run_id: Option<String>,
    pub done: Vec<ResultLine>,
    pub done_keys: HashSet<(String, String)>,
    /// Lines dropped: failures to retry, or a line torn by a crash.
    pub dropped: usize,
}

/// Reads an existing results file and rewrites it with only its finished lines (failed and
/// torn lines are dropped, to be judged again), atomically.
pub fn resume(path: &Path) -> Result<Resumed, EvalError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(EvalError::io(format!("reading {}", path.display()), e)),
    };
    let mut done = Vec::new();
    let mut done_keys = HashSet::new();
    let mut dropped = 0;
    let mut run_id = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<ResultLine>(line) {
            Ok(r) if r.is_done() && done_keys.insert(r.key()) => {
                run_id.get_or_insert_with(|| r.run_id.clone());
                done.push(r);
            }
            _ => dropped += 1,
        }
    }
    if dropped > 0 || (!text.is_empty() && !text.ends_with('\n')) {
        let mut body = String::new();
        for r in &done {
            body.push_str(&serde_json::to_string(r).unwrap_or_default());
            body.push('\n');
        }
        write_atomic(path, body.as_bytes())?;
    }
    Ok(Resumed {
        run_id,
        done,
        done_keys,
        dropped,
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    sibling(path, ".tmp")
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces `path` with `body` atomically and durably: a reader (or a rerun after kill -9 or
/// power loss) sees the old content or the new, never a torn file.
fn write_atomic(path: &Path, body: &[u8]) -> Result<(), EvalError> {
    let tmp = tmp_path(path);
    let wrote = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    wrote.map_err(|e: std::io::Error| EvalError::io(format!("writing {}", path.display()), e))
}

fn create_parent(path: &Path) -> Result<(), EvalError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .map_err(|e| EvalError::io(format!("creating {}", dir.display()), e)),
        None => Ok(()),
    }
}

/// A batch of score spans being delivered, with the result lines that record it:
/// `<out>.sending`, written before the spans leave and removed once their lines are in the
/// results file. A rerun that finds it re-sends exactly these bytes (same span ids, same
/// verdicts, same store file names) and records the lines instead of judging the pairs again.
#[derive(Debug, Serialize, Deserialize)]
pub struct InFlight {
    /// When the batch was first sent (Unix ms); names the store files it is written to.
    pub sent_ms: u64,
    /// The OTLP `ExportTraceServiceRequest`, protobuf, hex.
    pub request: String,
    pub lines: Vec<ResultLine>,
}

pub fn in_flight_path(out: &Path) -> PathBuf {
    sibling(out, ".sending")
}

impl InFlight {
    pub fn save(&self, out: &Path) -> Result<(), EvalError> {
        let body = serde_json::to_vec(self)
            .map_err(|e| EvalError::io("encoding a span batch", std::io::Error::other(e)))?;
        write_atomic(&in_flight_path(out), &body)
    }

    /// The batch a killed run left undelivered or unrecorded, if any. The file is replaced
    /// atomically, so one that does not parse was not written by eval-runner: an error.
    pub fn load(out: &Path) -> Result<Option<Self>, EvalError> {
        let path = in_flight_path(out);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(EvalError::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            EvalError::BadArgs(format!(
                "{}: {e}; it holds score spans a killed run may have sent; remove it to judge \
                 those pairs again",
                path.display()
            ))
        })
    }

    pub fn clear(out: &Path) -> Result<(), EvalError> {
        let path = in_flight_path(out);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EvalError::io(format!("removing {}", path.display()), e)),
        }
    }
}

/// Appends result lines; each line is flushed to the OS as it is written, so a killed run
/// loses at most the line being written (which resume drops).
pub struct ResultsWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl ResultsWriter {
    /// The results file written to; its journal (`<path>.sending`) sits beside it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open(path: &Path) -> Result<Self, EvalError> {
        create_parent(path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| EvalError::io(format!("opening {}", path.display()), e))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, lines: &[ResultLine]) -> Result<(), EvalError> {
        let mut buf = Vec::with_capacity(lines.len() * 512);
        for r in lines {
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| EvalError::io("encoding a result line", std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .map_err(|e| EvalError::io(format!("writing {}", self.path.display()), e))
    }

    pub fn sync(&self) -> Result<(), EvalError> {
        self.file
            .sync_all()
            .map_err(|e| EvalError::io(format!("syncing {}", self.path.display()), e))
    }
}

/// A cached verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cached {
    pub key: String,
    pub verdict: Verdict,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Verdicts by key (item content hash, metric template hash, judge, parameters), in
/// `<dir>/verdicts.jsonl`: read once, appended line by line (appends of one short line are
/// atomic, so concurrent runs sharing the cache do not corrupt it).
pub struct VerdictCache {
    map: HashMap<String, Cached>,
    file: Option<std::fs::File>,
}

impl VerdictCache {
    pub fn disabled() -> Self {
        Self {
            map: HashMap::new(),
            file: None,
        }
    }

    pub fn open(dir: &Path) -> Result<Self, EvalError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EvalError::io(format!("creating cache dir {}", dir.display()), e))?;
        let path = dir.join("verdicts.jsonl");
        let mut map = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for c in text
                .lines()
                .filter_map(|l| serde_json::from_str::<Cached>(l).ok())
            {
                map.insert(c.key.clone(), c);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| EvalError::io(format!("opening {}", path.display()), e))?;
        Ok(Self {
            map,
            file: Some(file),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Cached> {
        self.map.get(key)
    }

    /// Records a verdict; a cache that cannot be written only costs calls later, so errors
    /// are logged, not fatal.
    pub fn put(&mut self, entry: Cached) {
        if let Some(f) = &mut self.file {
            let mut line = serde_json::to_vec(&entry).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::warn!("verdict cache not written: {e}");
            }
        }
        self.map.insert(entry.key.clone(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_batch_survives_beside_the_results() -> Result<(), EvalError> {
        let dir = tempfile::tempdir().map_err(|e| EvalError::io("tempdir", e))?;
        let out = dir.path().join("r.jsonl");
        assert!(InFlight::load(&out)?.is_none());
        InFlight {
            sent_ms: 7,
            request: "0a00".into(),
            lines: Vec::new(),
        }
        .save(&out)?;
        let back = InFlight::load(&out)?.ok_or(EvalError::BadArgs("no batch".into()))?;
        assert_eq!((back.sent_ms, back.request.as_str()), (7, "0a00"));
        InFlight::clear(&out)?;
        InFlight::clear(&out)?;
        assert!(InFlight::load(&out)?.is_none());

        std::fs::write(in_flight_path(&out), "{torn").map_err(|e| EvalError::io("write", e))?;
        assert!(InFlight::load(&out).is_err_and(|e| e.to_string().contains("remove it")));
        Ok(())
    }
}
