//! The store: a local directory or an S3 bucket (prefix), through `object_store`. Puts are
//! atomic on both (a temporary file renamed into place; a single S3 PUT), so readers never see
//! a partial file; on a local directory the file and its directory are fsynced as well.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use schemas::layout::StoreUrl;

use crate::error::IngestError;

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Root directory when the store is local, for fsync.
    local_root: Option<PathBuf>,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Store {
    /// Opens `url`: `s3://bucket[/prefix]`, `file:///abs/dir`, or a directory path (created if
    /// missing).
    pub fn open(url: &str) -> Result<Self, IngestError> {
        let path = match StoreUrl::parse(url).map_err(|e| IngestError::Config(e.to_string()))? {
            StoreUrl::S3 { bucket, prefix } => {
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?;
                let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                };
                return Ok(Self {
                    inner,
                    local_root: None,
                    url: url.to_string(),
                });
            }
            StoreUrl::Local(path) => path,
        };
        std::fs::create_dir_all(&path).map_err(|e| {
            IngestError::io(format!("creating store directory {}", path.display()), e)
        })?;
        let root = std::fs::canonicalize(&path)
            .map_err(|e| IngestError::io(format!("resolving {}", path.display()), e))?;
        let inner = Arc::new(LocalFileSystem::new_with_prefix(&root)?);
        Ok(Self {
            inner,
            local_root: Some(root),
            url: url.to_string(),
        })
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// Writes `bytes` at `path` (relative to the store root), replacing any file there.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), IngestError> {
        let location = ObjectPath::from(path);
        self.inner
            .put(&location, PutPayload::from_bytes(bytes))
            .await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path);
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::File::open(&file)?.sync_all()?;
                if let Some(dir) = file.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| IngestError::io("fsync task", std::io::Error::other(e)))?
            .map_err(|e| IngestError::io(format!("syncing {path}"), e))?;
        }
        Ok(())
    }
}
