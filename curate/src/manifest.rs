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

fn manifest_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".manifest.json");
    out.with_file_name(name)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees a
/// partial dataset.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CurateError> {
    let tmp = path.with_extension("tmp-curate");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| CurateError::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CurateError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| CurateError::io(format!("renaming to {}", path.display()), e))
}

/// Writes the JSONL dataset (one line each, UTF-8, newline-terminated).
pub fn write(out: &Path, lines: &[String]) -> Result<Written, CurateError> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CurateError::io(format!("creating {}", dir.display()), e))?;
    }
    let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        body.push_str(l);
        body.push('\n');
    }
    write_atomic(out, body.as_bytes())?;
    Ok(Written {
        path: out.to_path_buf(),
        manifest_path: manifest_path(out),
        sha256: format!("{:x}", Sha256::digest(body.as_bytes())),
        bytes: body.len() as u64,
    })
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
