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
        let tmp = tmp_path(path);
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| EvalError::io(format!("rewriting {}", path.display()), e))?;
    }
    Ok(Resumed {
        run_id,
        done,
        done_keys,
        dropped,
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Appends result lines; each line is flushed to the OS as it is written, so a killed run
/// loses at most the line being written (which resume drops).
pub struct ResultsWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl ResultsWriter {
    pub fn open(path: &Path) -> Result<Self, EvalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| EvalError::io(format!("creating {}", dir.display()), e))?;
        }
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
