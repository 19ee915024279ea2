//! Retention: delete the span partitions older than a cutoff, per tenant or for all.
//!
//! A partition (`tenant`, `date`, `hour`) is deleted when all of its hour is older than
//! `now - older_than`, so a partition still receiving spans is never touched. Deleting is
//! idempotent: a run interrupted halfway is finished by the next one. Without `--tenant`, the
//! jobs' lists of taken traces from before the cutoff go too (see
//! [`crate::job::taken_lists_before`]).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::Serialize;

use crate::error::CurateError;
use crate::window::parse_duration;

/// What a retention run deleted (or, with --dry-run, would delete).
#[derive(Debug, Serialize)]
pub struct Report {
    pub cutoff: String,
    pub dry_run: bool,
    pub partitions: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    pub kept_partitions: usize,
    /// Jobs' lists of taken trace ids from windows before the cutoff.
    pub job_lists: usize,
}

pub async fn run(
    store_url: &str,
    tenant: Option<&str>,
    older_than: &str,
    dry_run: bool,
    now: DateTime<Utc>,
    json: bool,
) -> Result<String, CurateError> {
    let age = parse_duration(older_than)
        .map_err(|e| CurateError::BadArgs(format!("--older-than: {e}")))?;
    if age <= chrono::Duration::zero() {
        return Err(CurateError::BadArgs("--older-than must be positive".into()));
    }
    if let Some(t) = tenant {
        schemas::layout::validate_tenant(t).map_err(|e| CurateError::BadArgs(e.to_string()))?;
    }
    let cutoff = now - age;
    let store = schemas::store::Store::open(store_url)
        .map_err(|e| CurateError::BadArgs(format!("--store: {e}")))?;
    let os = store.object_store();
    let objects: Vec<_> = os
        .list(Some(&ObjectPath::from(schemas::layout::SPANS_DIR)))
        .try_collect()
        .await?;
    let mut doomed = std::collections::BTreeMap::<String, Vec<(ObjectPath, u64)>>::new();
    let mut kept = std::collections::BTreeSet::new();
    for o in objects {
        let path = o.location.to_string();
        let Some(p) = schemas::layout::Partition::of_path(&path) else {
            continue;
        };
        let partition = p.dir();
        if tenant.is_some_and(|want| want != p.tenant) || p.end() > cutoff {
            kept.insert(partition);
            continue;
        }
        doomed
            .entry(partition)
            .or_default()
            .push((o.location, o.size));
    }
    // Per tenant, another tenant's traces in the same lists may still be in the store.
    let lists = match tenant {
        // A list names traces that started before its window's end; their first spans are
        // gone only if every hour before that end is deleted, i.e. up to the cutoff's hour.
        None => {
            let secs = cutoff.timestamp();
            let hour_start =
                chrono::DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(cutoff);
            crate::job::taken_lists_before(&store, hour_start).await?
        }
        Some(_) => Vec::new(),
    };
    let files = doomed.values().map(Vec::len).sum();
    let bytes = doomed.values().flatten().map(|(_, s)| s).sum();
    if !dry_run {
        for (partition, paths) in &doomed {
            for (p, _) in paths {
                match os.delete(p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::info!(partition, files = paths.len(), "deleted partition");
        }
        remove_empty_dirs(store_url);
        for p in &lists {
            match os.delete(p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let report = Report {
        cutoff: cutoff.to_rfc3339(),
        dry_run,
        partitions: doomed.keys().cloned().collect(),
        files,
        bytes,
        kept_partitions: kept.len(),
        job_lists: lists.len(),
    };
    Ok(if json {
        format!("{}\n", serde_json::to_string(&report).unwrap_or_default())
    } else {
        format!(
            "{} {} partitions ({} files, {} bytes) and {} job lists older than {}; {} \
             partitions kept\n",
            if dry_run { "would delete" } else { "deleted" },
            report.partitions.len(),
            report.files,
            report.bytes,
            report.job_lists,
            report.cutoff,
            report.kept_partitions
        )
    })
}

/// On a local store, the partition directories left empty (object stores have no
/// directories). Best effort: a directory that cannot be removed stays.
fn remove_empty_dirs(store_url: &str) {
    let Ok(schemas::layout::StoreUrl::Local(root)) = schemas::layout::StoreUrl::parse(store_url)
    else {
        return;
    };
    fn prune(dir: &std::path::Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut empty = true;
        for e in entries.flatten() {
            let p = e.path();
            if !(p.is_dir() && prune(&p) && std::fs::remove_dir(&p).is_ok()) {
                empty = false;
            }
        }
        empty
    }
    prune(&root.join(schemas::layout::SPANS_DIR));
}
