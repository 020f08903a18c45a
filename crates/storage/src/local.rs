//! Local-filesystem object storage with HMAC-signed, expiring download URLs (embedded mode).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::key::PARTIAL_MARKER;
use crate::{MAX_PRESIGN_EXPIRY, ObjectMeta, ObjectStore, StorageError, Upload, validate_key};

type HmacSha256 = Hmac<Sha256>;

/// Files under a root directory, served by the API at `{public_base_url}/downloads/{key}`.
///
/// Download URLs carry `expires` (unix seconds), `filename` and
/// `sig = hex(HMAC-SHA256(secret, "{key}\n{expires}\n{filename}"))`; check them with
/// [`LocalFsStore::verify`].
pub struct LocalFsStore {
    root: PathBuf,
    public_base_url: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for LocalFsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFsStore")
            .field("root", &self.root)
            .field("public_base_url", &self.public_base_url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl LocalFsStore {
    /// A store rooted at `root`; URLs start with `public_base_url` (a trailing `/` is ignored) and are
    /// signed with `secret` (must not be empty: presigning and [`ObjectStore::check`] refuse it).
    pub fn new(root: PathBuf, public_base_url: String, secret: Vec<u8>) -> Self {
        let public_base_url = public_base_url.trim_end_matches('/').to_owned();
        Self { root, public_base_url, secret }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the root directory if it is missing.
    pub async fn ensure_root(&self) -> Result<(), StorageError> {
        tokio::fs::create_dir_all(&self.root).await.map_err(StorageError::io("create root directory"))
    }

    /// The file that holds `key`, after [`validate_key`].
    pub fn path_for(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(key.split('/').fold(self.root.clone(), |path, segment| path.join(segment)))
    }

    /// Checks a download URL's parameters and returns the file to serve.
    ///
    /// The signature is compared in constant time before the expiry is looked at, so a changed
    /// `key`, `expires` or `filename` gives [`StorageError::BadSignature`]; a genuine URL at or after
    /// `expires` gives [`StorageError::Expired`]. The file itself may be missing (deleted after
    /// retention); the caller answers that with 404/410.
    pub fn verify(
        &self,
        key: &str,
        expires: i64,
        filename: &str,
        sig: &str,
        now: DateTime<Utc>,
    ) -> Result<PathBuf, StorageError> {
        if self.secret.is_empty() {
            return Err(StorageError::BadSignature);
        }
        let path = self.path_for(key).map_err(|_| StorageError::BadSignature)?;
        let given = hex::decode(sig).map_err(|_| StorageError::BadSignature)?;
        let expected = self.sign(key, expires, filename);
        if !bool::from(expected.as_slice().ct_eq(given.as_slice())) {
            return Err(StorageError::BadSignature);
        }
        if now.timestamp() >= expires {
            return Err(StorageError::Expired);
        }
        Ok(path)
    }

    fn sign(&self, key: &str, expires: i64, filename: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(format!("{key}\n{expires}\n{filename}").as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn require_secret(&self) -> Result<(), StorageError> {
        if self.secret.is_empty() {
            return Err(StorageError::Config("the local download signing secret is empty".into()));
        }
        Ok(())
    }
}

/// `<file>.partial-<upload_id>` beside the final file.
fn partial_path(path: &Path, upload_id: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(PARTIAL_MARKER);
    name.push(upload_id);
    path.with_file_name(name)
}

fn validate_upload_id(upload_id: &str) -> Result<(), StorageError> {
    if upload_id.is_empty() || upload_id.len() > 64 || !upload_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StorageError::InvalidKey { key: upload_id.to_owned(), reason: "invalid local upload id" });
    }
    Ok(())
}

async fn remove_if_exists(path: &Path, op: &'static str) -> Result<bool, StorageError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::Io { op, source: e }),
    }
}

/// Flushes a directory entry change (rename) to disk.
async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        let dir = tokio::fs::File::open(dir).await.map_err(StorageError::io("open directory"))?;
        dir.sync_all().await.map_err(StorageError::io("sync directory"))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for LocalFsStore {
    async fn start_upload(&self, key: &str, _meta: &ObjectMeta) -> Result<Box<dyn Upload>, StorageError> {
        let path = self.path_for(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(StorageError::io("create directory"))?;
        }
        let upload_id = hex::encode(rand::rng().random::<[u8; 16]>());
        let partial = partial_path(&path, &upload_id);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await
            .map_err(StorageError::io("create partial file"))?;
        debug!(key, upload_id, "started local upload");
        Ok(Box::new(LocalUpload { file: Some(file), partial, path, upload_id, bytes: 0 }))
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        let path = self.path_for(key)?;
        validate_upload_id(upload_id)?;
        let removed = remove_if_exists(&partial_path(&path, upload_id), "remove partial file").await?;
        debug!(key, upload_id, removed, "aborted local upload by id");
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path_for(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::Io { op: "stat file", source: e }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let walk = move || -> std::io::Result<Vec<String>> {
            let mut keys = Vec::new();
            let mut dirs = vec![(root, String::new())];
            while let Some((dir, key_prefix)) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let Ok(name) = entry.file_name().into_string() else { continue };
                    let key = format!("{key_prefix}{name}");
                    if entry.file_type()?.is_dir() {
                        dirs.push((entry.path(), format!("{key}/")));
                    } else if !name.contains(PARTIAL_MARKER) && key.starts_with(&prefix) {
                        keys.push(key);
                    }
                }
            }
            keys.sort();
            Ok(keys)
        };
        tokio::task::spawn_blocking(walk)
            .await
            .map_err(|e| StorageError::Io { op: "list files", source: std::io::Error::other(e) })?
            .map_err(|source| StorageError::Io { op: "list files", source })
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_for(key)?;
        let removed = remove_if_exists(&path, "delete file").await?;
        debug!(key, removed, "deleted local file");
        Ok(())
    }

    async fn presign_get(&self, key: &str, filename: &str, expires_in: Duration) -> Result<String, StorageError> {
        self.presign_get_at(key, filename, Utc::now(), expires_in).await
    }

    async fn presign_get_at(
        &self,
        key: &str,
        filename: &str,
        start: DateTime<Utc>,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        validate_key(key)?;
        self.require_secret()?;
        if expires_in > MAX_PRESIGN_EXPIRY || expires_in.is_zero() {
            return Err(StorageError::Config(format!(
                "download URL validity must be between 1 s and 7 days, got {} s",
                expires_in.as_secs()
            )));
        }
        let expires = start.timestamp().saturating_add(expires_in.as_secs() as i64);
        let sig = hex::encode(self.sign(key, expires, filename));
        let mut url = url::Url::parse(&format!("{}/downloads/{key}", self.public_base_url))
            .map_err(|e| StorageError::Config(format!("invalid public base URL `{}`: {e}", self.public_base_url)))?;
        url.query_pairs_mut()
            .append_pair("expires", &expires.to_string())
            .append_pair("filename", filename)
            .append_pair("sig", &sig);
        debug!(key, expires, "presigned local download URL");
        Ok(url.into())
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.require_secret()?;
        let meta = tokio::fs::metadata(&self.root).await.map_err(StorageError::io("stat root directory"))?;
        if !meta.is_dir() {
            return Err(StorageError::Io {
                op: "stat root directory",
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "the storage root is not a directory"),
            });
        }
        let probe = self.root.join(format!(".userexport-check-{}", hex::encode(rand::rng().random::<[u8; 8]>())));
        tokio::fs::write(&probe, b"ok").await.map_err(StorageError::io("write probe file"))?;
        tokio::fs::remove_file(&probe).await.map_err(StorageError::io("remove probe file"))?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

/// An upload into `<file>.partial-<id>`, renamed into place on completion.
struct LocalUpload {
    /// `None` once completed or aborted.
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    path: PathBuf,
    upload_id: String,
    bytes: u64,
}

impl LocalUpload {
    async fn finish(&mut self) -> Result<u64, StorageError> {
        let mut file = self.file.take().ok_or_else(|| StorageError::Io {
            op: "complete upload",
            source: std::io::Error::other("the upload is already finished"),
        })?;
        file.flush().await.map_err(StorageError::io("flush partial file"))?;
        file.sync_all().await.map_err(StorageError::io("sync partial file"))?;
        drop(file);
        tokio::fs::rename(&self.partial, &self.path).await.map_err(StorageError::io("rename partial file"))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir).await?;
        }
        Ok(self.bytes)
    }
}

#[async_trait::async_trait]
impl Upload for LocalUpload {
    fn upload_id(&self) -> Option<&str> {
        Some(&self.upload_id)
    }

    async fn put_part(&mut self, data: Bytes) -> Result<(), StorageError> {
        let file = self.file.as_mut().ok_or_else(|| StorageError::Io {
            op: "write part",
            source: std::io::Error::other("the upload is already finished"),
        })?;
        file.write_all(&data).await.map_err(StorageError::io("write part"))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<u64, StorageError> {
        match self.finish().await {
            Ok(bytes) => {
                debug!(path = %self.path.display(), upload_id = %self.upload_id, bytes, "completed local upload");
                Ok(bytes)
            }
            Err(err) => {
                let _ = remove_if_exists(&self.partial, "remove partial file").await;
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        drop(self.file.take());
        remove_if_exists(&self.partial, "remove partial file").await?;
        debug!(path = %self.path.display(), upload_id = %self.upload_id, "aborted local upload");
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Neither completed nor aborted: do not leave the partial file behind.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
