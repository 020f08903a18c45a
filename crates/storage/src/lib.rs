//! Object storage: S3 multipart + presign, and local files with HMAC-signed URLs.
//!
//! - [`ObjectStore`] / [`Upload`]: the interface the API and the worker use.
//! - [`S3Store`]: any S3-compatible store through `aws-sdk-s3` (static credentials, path style,
//!   checksums only when required), multipart uploads (or one `PutObject` for a file smaller than
//!   a part) with per-request retries and presigned GETs.
//! - [`LocalFsStore`]: files under a directory (embedded mode), downloaded through
//!   `{public_base_url}/downloads/{key}` with an expiring HMAC-SHA256 signature.

mod error;
mod key;
mod local;
mod s3;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use error::StorageError;
pub use key::{content_disposition, validate_key};
pub use local::LocalFsStore;
pub use s3::{S3Config, S3Store};

/// Longest validity of a presigned URL (S3 refuses more than seven days).
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Metadata stored with an object and used when it is downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// MIME type, e.g. `text/csv`.
    pub content_type: String,
    /// File name offered to the browser (`Content-Disposition: attachment; filename="…"`).
    pub filename: String,
}

/// A store of exported files.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Starts a (multipart) upload to `key`. Nothing is visible at `key` before [`Upload::complete`].
    async fn start_upload(&self, key: &str, meta: &ObjectMeta) -> Result<Box<dyn Upload>, StorageError>;
    /// Stores `body` as the object at `key` in one request and returns its size: for a file smaller
    /// than a part, instead of a multipart upload's three requests. Nothing is visible at `key`
    /// unless the whole body was stored. The default goes through [`start_upload`](Self::start_upload).
    async fn put_object(&self, key: &str, meta: &ObjectMeta, body: bytes::Bytes) -> Result<u64, StorageError> {
        let mut upload = self.start_upload(key, meta).await?;
        if !body.is_empty()
            && let Err(e) = upload.put_part(body).await
        {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.complete().await
    }
    /// Aborts an unfinished upload by its stored id (sweeper, crash recovery).
    ///
    /// An upload already gone is fine when the store says so with 404 (`NoSuchUpload` on AWS; a
    /// missing local partial file). s3s-fs answers an already aborted id with 403 `AccessDenied`,
    /// which stays an error.
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StorageError>;
    /// The size of the object at `key`, or `None` if there is none.
    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// Keys of the finished objects starting with `prefix`, sorted (audits and tests; an unfinished
    /// upload is not an object).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Deletes the object at `key`; succeeds if it does not exist.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// A download URL for `key`, valid for `expires_in` from now, offering `filename`.
    async fn presign_get(&self, key: &str, filename: &str, expires_in: Duration) -> Result<String, StorageError>;
    /// A download URL for `key`, valid from `start` for `expires_in`, offering `filename`.
    async fn presign_get_at(
        &self,
        key: &str,
        filename: &str,
        start: DateTime<Utc>,
        expires_in: Duration,
    ) -> Result<String, StorageError>;
    /// Readiness: the bucket or directory is reachable (and, locally, writable).
    async fn check(&self) -> Result<(), StorageError>;
    /// `"s3"` or `"local"`.
    fn kind(&self) -> &'static str;
}

/// An upload in progress. Finish it with [`Upload::complete`] or [`Upload::abort`].
#[async_trait::async_trait]
pub trait Upload: Send {
    /// The id to store for a later [`ObjectStore::abort_upload`].
    fn upload_id(&self) -> Option<&str>;
    /// Appends one part. Every part but the last must be at least 5 MiB for S3 (send ≥ 8 MiB).
    async fn put_part(&mut self, data: bytes::Bytes) -> Result<(), StorageError>;
    /// Publishes the object and returns its size in bytes. An upload without parts yields an empty object.
    async fn complete(self: Box<Self>) -> Result<u64, StorageError>;
    /// Discards everything uploaded so far.
    async fn abort(self: Box<Self>) -> Result<(), StorageError>;
}
