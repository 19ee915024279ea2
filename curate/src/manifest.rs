//! The dataset file and its manifest (`<out>.manifest.json`): how the dataset was made (rules
//! and parameters, window, settle, format), from which source files, what it holds (counts and
//! a SHA-256 of the JSONL), and by which tool version — enough to rebuild or diff it later.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Summary;
use crate::catalog::Catalog;
use crate::cli::Args;
use crate::error::CurateError;
use crate::select::RuleQuery;
use crate::window::Window;

pub struct Written {
    pub path: PathBuf,
    pub manifest_path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// `path` with `suffix` appended to its whole file name (`a.jsonl` -> `a.jsonl.SUFFIX`), unlike
/// `with_extension`, which would give `a.jsonl` and `a.json` the same name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn manifest_path(out: &Path) -> PathBuf {
    with_suffix(out, ".manifest.json")
}

/// Where a file is written before it is renamed to `path`.
fn temp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp-curate")
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees a
/// partial dataset.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CurateError> {
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| CurateError::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CurateError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| CurateError::io(format!("renaming to {}", path.display()), e))
}

/// The JSONL dataset (one line each, UTF-8, newline-terminated), written as lines come:
/// into `<out>.tmp-curate`, which becomes `out` on [`DatasetWriter::finish`], so
/// a reader never sees a partial dataset. A writer dropped unfinished (an error on the way)
/// removes its temporary file.
pub struct DatasetWriter {
    out: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    sha: Sha256,
    bytes: u64,
    lines: usize,
    done: bool,
}

impl DatasetWriter {
    pub fn create(out: &Path) -> Result<Self, CurateError> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CurateError::io(format!("creating {}", dir.display()), e))?;
        }
        let tmp = temp_path(out);
        let file = std::fs::File::create(&tmp)
            .map_err(|e| CurateError::io(format!("creating {}", tmp.display()), e))?;
        Ok(Self {
            out: out.to_path_buf(),
            tmp,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            sha: Sha256::new(),
            bytes: 0,
            lines: 0,
            done: false,
        })
    }

    /// Appends one line (`line` without its newline).
    pub fn line(&mut self, line: &str) -> Result<(), CurateError> {
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.write_all(b"\n"))
            .map_err(|e| CurateError::io(format!("writing {}", self.tmp.display()), e))?;
        self.sha.update(line.as_bytes());
        self.sha.update(b"\n");
        self.bytes += line.len() as u64 + 1;
        self.lines += 1;
        Ok(())
    }

    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Syncs the file and renames it to `out`.
    pub fn finish(mut self) -> Result<Written, CurateError> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_all())
            .map_err(|e| CurateError::io(format!("writing {}", self.tmp.display()), e))?;
        std::fs::rename(&self.tmp, &self.out)
            .map_err(|e| CurateError::io(format!("renaming to {}", self.out.display()), e))?;
        self.done = true;
        Ok(Written {
            path: self.out.clone(),
            manifest_path: manifest_path(&self.out),
            sha256: format!("{:x}", std::mem::take(&mut self.sha).finalize()),
            bytes: self.bytes,
        })
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The Parquet files of the store inside the window (and of `tenant`, when given), sorted.
pub async fn source_files(
    catalog: &Catalog,
    window: &Window,
    tenant: Option<&str>,
) -> Result<Vec<String>, CurateError> {
    let loc = &catalog.location;
    let objects: Vec<_> = loc
        .store
        .list(Some(&loc.spans_prefix))
        .try_collect()
        .await?;
    let mut files: Vec<String> = objects
        .into_iter()
        .map(|o| o.location.to_string())
        .filter(|p| {
            let part = |k: &str| {
                p.split('/')
                    .find_map(|s| s.strip_prefix(k))
                    .unwrap_or_default()
            };
            p.ends_with(".parquet")
                && tenant.is_none_or(|t| part("tenant=") == t)
                && window.holds_partition(part("date="), part("hour="))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[allow(clippy::too_many_arguments)]
pub fn write_manifest(
    written: &Written,
    args: &Args,
    queries: &[RuleQuery],
    window: Window,
    now: chrono::DateTime<chrono::Utc>,
    summary: &Summary,
    source_files: Vec<String>,
) -> Result<(), CurateError> {
    let rules: Vec<_> = queries
        .iter()
        .map(|q| {
            json!({
                "name": q.name,
                "parameters": q.parameters,
                "sql": q.sql,
            })
        })
        .collect();
    let m = json!({
        "tool": "trace2eval curate",
        "version": env!("CARGO_PKG_VERSION"),
        "created_at": now.to_rfc3339(),
        "store": args.store,
        "tenant": args.tenant,
        "rules": rules,
        "match": args.match_,
        "window": {
            "since": window.since.map(|t| t.to_rfc3339()),
            "until": window.until.map(|t| t.to_rfc3339()),
        },
        "settle": args.settle,
        "format": args.format,
        "per": args.per,
        "sample": args.sample,
        "seed": args.seed,
        "limit": args.limit,
        "prices": args.prices.as_ref().map(|p| p.display().to_string()),
        "source_files": source_files,
        "counts": {
            "traces_scanned": summary.traces_scanned,
            "selected_per_rule": summary.selected_per_rule,
            "selected": summary.selected,
            "not_settled": summary.not_settled,
            "exported_traces": summary.exported_traces,
            "lines": summary.lines,
            "calls_without_content": summary.calls_without_content,
        },
        "dataset": {
            "path": written.path.display().to_string(),
            "bytes": written.bytes,
            "sha256": written.sha256,
        },
    });
    let text = serde_json::to_string_pretty(&m).unwrap_or_default();
    write_atomic(&written.manifest_path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn files_in(dir: &Path) -> std::io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("curate-manifest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_finished_dataset_has_every_line_and_their_digest() -> TestResult {
        let dir = scratch("finished");
        let out = dir.join("sub/data.jsonl");
        let mut w = DatasetWriter::create(&out)?;
        w.line(r#"{"a":1}"#)?;
        w.line(r#"{"b":"é"}"#)?;
        assert!(!out.exists(), "no partial dataset under the final name");
        assert_eq!(w.lines(), 2);
        let written = w.finish()?;
        let body = std::fs::read(&out)?;
        assert_eq!(body, "{\"a\":1}\n{\"b\":\"é\"}\n".as_bytes());
        assert_eq!(written.sha256, format!("{:x}", Sha256::digest(&body)));
        assert_eq!(written.bytes, body.len() as u64);
        assert_eq!(files_in(&dir.join("sub"))?, ["data.jsonl"]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// An export that fails half way (a query error, a full disk) leaves the earlier dataset
    /// as it was and no temporary file.
    #[test]
    fn an_unfinished_dataset_leaves_the_earlier_one_and_no_temporary_file() -> TestResult {
        let dir = scratch("unfinished");
        std::fs::create_dir_all(&dir)?;
        let out = dir.join("data.jsonl");
        std::fs::write(&out, "earlier\n")?;
        {
            let mut w = DatasetWriter::create(&out)?;
            w.line("partial")?;
            assert_eq!(files_in(&dir)?, ["data.jsonl", "data.jsonl.tmp-curate"]);
        }
        assert_eq!(std::fs::read_to_string(&out)?, "earlier\n");
        assert_eq!(files_in(&dir)?, ["data.jsonl"]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
