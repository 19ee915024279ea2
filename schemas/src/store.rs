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

use crate::error::SchemaError;
use crate::layout::StoreUrl;

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
    /// missing). S3 credentials, region and endpoint come from the `AWS_*` environment.
    ///
    /// Errors: `BadStore` for a URL that is none of these, `ObjectStore` when the S3 client
    /// cannot be built, `Io` when the directory cannot be created or resolved.
    pub fn open(url: &str) -> Result<Self, SchemaError> {
        let path = match StoreUrl::parse(url)? {
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
            SchemaError::io(format!("creating store directory {}", path.display()), e)
        })?;
        let root = std::fs::canonicalize(&path)
            .map_err(|e| SchemaError::io(format!("resolving {}", path.display()), e))?;
        let inner = Arc::new(LocalFileSystem::new_with_prefix(&root)?);
        Ok(Self {
            inner,
            local_root: Some(root),
            url: url.to_string(),
        })
    }

    /// The underlying object store, rooted at the store's directory or bucket prefix.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// Writes `bytes` at `path` (relative to the store root), replacing any file there.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), SchemaError> {
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
            .map_err(|e| SchemaError::io("fsync task", std::io::Error::other(e)))?
            .map_err(|e| SchemaError::io(format!("syncing {path}"), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_of_another_scheme_is_a_bad_store() {
        let err = Store::open("http://example.com/x").err();
        assert!(
            matches!(&err, Some(SchemaError::BadStore(m)) if m.contains("http://example.com/x")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_put_creates_the_directories_and_replaces_the_file() -> Result<(), SchemaError> {
        let dir = std::env::temp_dir().join(format!(
            "trace2eval-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let store = Store::open(&dir.join("root").display().to_string())?;
        store.put("a/b/c.txt", Bytes::from_static(b"one")).await?;
        store.put("a/b/c.txt", Bytes::from_static(b"two")).await?;
        let read = std::fs::read(dir.join("root/a/b/c.txt"));
        std::fs::remove_dir_all(&dir).map_err(|e| SchemaError::io("cleaning up", e))?;
        assert_eq!(
            read.map_err(|e| SchemaError::io("reading back", e))?,
            b"two"
        );
        Ok(())
    }
}
