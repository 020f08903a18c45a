//! S3-compatible object storage through `aws-sdk-s3` (no `aws-config`).

use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Builder, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use tracing::{debug, warn};

use crate::{MAX_PRESIGN_EXPIRY, ObjectMeta, ObjectStore, StorageError, Upload, content_disposition, validate_key};

/// Retries after a transient error, per request.
const MAX_RETRIES: u32 = 3;
/// First backoff delay; doubled on each retry.
const BASE_DELAY: Duration = Duration::from_millis(200);
/// Upper bound of one backoff delay.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// S3's limit on parts per upload.
const MAX_PARTS: usize = 10_000;

/// Connection settings for an S3-compatible store.
#[derive(Clone)]
pub struct S3Config {
    /// Custom endpoint (`http://127.0.0.1:9000`); `None` uses AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// Bucket holding the exports.
    pub bucket: String,
    /// Signing region, e.g. `us-east-1`.
    pub region: String,
    /// Static access key id.
    pub access_key_id: String,
    /// Static secret access key (redacted in `Debug`).
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    pub force_path_style: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

/// Whether part bodies sent to `endpoint` need no SHA-256 in their signature (`UNSIGNED-PAYLOAD`):
/// over HTTPS TLS already protects every byte (AWS's own SDKs skip payload hashing over TLS too), and
/// a loopback endpoint (`localhost`, `127.0.0.0/8`, `[::1]`) has no network for anyone to tamper
/// with. Over plain HTTP to another host the signature is the only integrity check, so bodies stay
/// signed there. Hashing costs both sides: the client hashes each 8 MiB part, the server hashes it
/// again to check it (about a tenth of the worker's CPU in a CSV export).
fn payload_is_protected(endpoint: &str) -> bool {
    if endpoint.starts_with("https://") {
        return true;
    }
    let Some(rest) = endpoint.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Userinfo is not part of the host.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An [`ObjectStore`] on one S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Part bodies are not hashed into the signature (`UNSIGNED-PAYLOAD`): only over TLS or loopback
    /// ([`payload_is_protected`]).
    unsigned_payload: bool,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client: pinned behaviour version, static credentials, checksums only when
    /// required (several S3-compatible stores reject the SDK's default CRC trailers), SDK retries
    /// off (this store retries each request itself, see [`StorageError::is_transient`]).
    pub fn new(cfg: &S3Config) -> Self {
        let mut builder = Builder::new()
            .behavior_version(BehaviorVersion::v2026_01_12())
            .region(Region::new(cfg.region.clone()))
            .force_path_style(cfg.force_path_style)
            .credentials_provider(Credentials::new(
                cfg.access_key_id.clone(),
                cfg.secret_access_key.clone(),
                None,
                None,
                "userexport-static",
            ))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(300))
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        let unsigned_payload = cfg.endpoint.as_deref().is_none_or(payload_is_protected);
        Self { client: Client::from_conf(builder.build()), bucket: cfg.bucket.clone(), unsigned_payload }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket; an existing bucket (already owned by us, or already existing) is fine.
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        let region = self.client.config().region().map(|r| r.as_ref().to_owned()).unwrap_or_default();
        let location = (!region.is_empty() && region != "us-east-1").then(|| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build()
        });
        let result = send_with_retry("create_bucket", || {
            self.client.create_bucket().bucket(&self.bucket).set_create_bucket_configuration(location.clone()).send()
        })
        .await;
        match result {
            Ok(_) => {
                debug!(bucket = %self.bucket, "created bucket");
                Ok(())
            }
            Err(err) if matches!(err.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => {
                debug!(bucket = %self.bucket, "bucket already exists");
                Ok(())
            }
            Err(err) => Err(classify("create_bucket", &err)),
        }
    }

    async fn presign(
        &self,
        key: &str,
        filename: &str,
        start: Option<SystemTime>,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        validate_key(key)?;
        if expires_in > MAX_PRESIGN_EXPIRY || expires_in.is_zero() {
            return Err(StorageError::Config(format!(
                "presigned URL validity must be between 1 s and 7 days, got {} s",
                expires_in.as_secs()
            )));
        }
        let mut cfg = PresigningConfig::builder().expires_in(expires_in);
        if let Some(start) = start {
            cfg = cfg.start_time(start);
        }
        let cfg = cfg.build().map_err(|e| StorageError::Config(format!("presigning: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(content_disposition(filename))
            .presigned(cfg)
            .await
            .map_err(|e| classify("presign_get", &e))?;
        debug!(bucket = %self.bucket, key, expires_in_s = expires_in.as_secs(), "presigned GET");
        Ok(req.uri().to_owned())
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn start_upload(&self, key: &str, meta: &ObjectMeta) -> Result<Box<dyn Upload>, StorageError> {
        validate_key(key)?;
        let disposition = content_disposition(&meta.filename);
        let out = send_with_retry("create_multipart_upload", || {
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .content_type(&meta.content_type)
                .content_disposition(&disposition)
                .send()
        })
        .await
        .map_err(|e| classify("create_multipart_upload", &e))?;
        let upload_id = out
            .upload_id()
            .filter(|id| !id.is_empty())
            .ok_or(StorageError::Permanent {
                op: "create_multipart_upload",
                message: "no upload id in the response".into(),
            })?
            .to_owned();
        debug!(bucket = %self.bucket, key, upload_id, "started multipart upload");
        Ok(Box::new(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
            bytes: 0,
            finished: false,
            unsigned_payload: self.unsigned_payload,
        }))
    }

    async fn put_object(&self, key: &str, meta: &ObjectMeta, body: Bytes) -> Result<u64, StorageError> {
        validate_key(key)?;
        let disposition = content_disposition(&meta.filename);
        let len = body.len() as u64;
        let unsigned = self.unsigned_payload;
        send_with_retry("put_object", || {
            let op = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(&meta.content_type)
                .content_disposition(&disposition)
                .content_length(len as i64)
                .body(ByteStream::from(body.clone()));
            async move {
                if unsigned { op.customize().disable_payload_signing().send().await } else { op.send().await }
            }
        })
        .await
        .map_err(|e| classify("put_object", &e))?;
        debug!(bucket = %self.bucket, key, len, "stored object in one request");
        Ok(len)
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        abort_multipart(&self.client, &self.bucket, key, upload_id).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        validate_key(key)?;
        match send_with_retry("head_object", || self.client.head_object().bucket(&self.bucket).key(key).send()).await {
            Ok(out) => {
                let size = out.content_length().unwrap_or(0).max(0) as u64;
                debug!(bucket = %self.bucket, key, size, "head object");
                Ok(Some(size))
            }
            Err(err) if http_status(&err) == Some(404) => {
                debug!(bucket = %self.bucket, key, "head object: not found");
                Ok(None)
            }
            Err(err) => Err(classify("head_object", &err)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = send_with_retry("list_objects_v2", || {
                self.client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_continuation_token(token.clone())
                    .send()
            })
            .await
            .map_err(|e| classify("list_objects_v2", &e))?;
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        match send_with_retry("delete_object", || self.client.delete_object().bucket(&self.bucket).key(key).send())
            .await
        {
            Ok(_) => {
                debug!(bucket = %self.bucket, key, "deleted object");
                Ok(())
            }
            Err(err) if http_status(&err) == Some(404) => Ok(()),
            Err(err) => Err(classify("delete_object", &err)),
        }
    }

    async fn presign_get(&self, key: &str, filename: &str, expires_in: Duration) -> Result<String, StorageError> {
        self.presign(key, filename, None, expires_in).await
    }

    async fn presign_get_at(
        &self,
        key: &str,
        filename: &str,
        start: DateTime<Utc>,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        self.presign(key, filename, Some(SystemTime::from(start)), expires_in).await
    }

    async fn check(&self) -> Result<(), StorageError> {
        send_with_retry("head_bucket", || self.client.head_bucket().bucket(&self.bucket).send())
            .await
            .map_err(|e| classify("head_bucket", &e))?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}

/// A multipart upload to S3.
struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    bytes: u64,
    finished: bool,
    unsigned_payload: bool,
}

impl S3Upload {
    async fn upload_part(&mut self, data: Bytes) -> Result<(), StorageError> {
        if self.parts.len() >= MAX_PARTS {
            return Err(StorageError::Permanent {
                op: "upload_part",
                message: format!("more than {MAX_PARTS} parts; send larger parts"),
            });
        }
        let part_number = i32::try_from(self.parts.len() + 1).expect("part number fits in i32");
        let len = data.len() as u64;
        let unsigned = self.unsigned_payload;
        let out = send_with_retry("upload_part", || {
            let op = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .part_number(part_number)
                .content_length(len as i64)
                .body(ByteStream::from(data.clone()));
            async move {
                if unsigned { op.customize().disable_payload_signing().send().await } else { op.send().await }
            }
        })
        .await
        .map_err(|e| classify("upload_part", &e))?;
        let e_tag = out
            .e_tag()
            .ok_or(StorageError::Permanent { op: "upload_part", message: "no ETag in the response".into() })?;
        self.parts.push(CompletedPart::builder().part_number(part_number).e_tag(e_tag).build());
        self.bytes += len;
        debug!(bucket = %self.bucket, key = %self.key, upload_id = %self.upload_id, part_number, len, "uploaded part");
        Ok(())
    }

    async fn finish(&mut self) -> Result<u64, StorageError> {
        if self.parts.is_empty() {
            // S3 needs at least one part; a single empty (last) part yields an empty object.
            self.upload_part(Bytes::new()).await?;
        }
        let completed = CompletedMultipartUpload::builder().set_parts(Some(self.parts.clone())).build();
        send_with_retry("complete_multipart_upload", || {
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .multipart_upload(completed.clone())
                .send()
        })
        .await
        .map_err(|e| classify("complete_multipart_upload", &e))?;
        Ok(self.bytes)
    }
}

#[async_trait::async_trait]
impl Upload for S3Upload {
    fn upload_id(&self) -> Option<&str> {
        Some(&self.upload_id)
    }

    async fn put_part(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.upload_part(data).await
    }

    async fn complete(mut self: Box<Self>) -> Result<u64, StorageError> {
        self.finished = true;
        match self.finish().await {
            Ok(bytes) => {
                debug!(bucket = %self.bucket, key = %self.key, upload_id = %self.upload_id, parts = self.parts.len(), bytes, "completed multipart upload");
                Ok(bytes)
            }
            Err(err) => {
                // The caller cannot retry a consumed upload: release the parts now.
                if let Err(abort_err) = abort_multipart(&self.client, &self.bucket, &self.key, &self.upload_id).await {
                    debug!(key = %self.key, upload_id = %self.upload_id, error = %abort_err, "abort after failed complete failed");
                }
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.finished = true;
        abort_multipart(&self.client, &self.bucket, &self.key, &self.upload_id).await
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if !self.finished {
            warn!(bucket = %self.bucket, key = %self.key, upload_id = %self.upload_id,
                "multipart upload dropped without complete or abort; it stays until aborted by id");
        }
    }
}

async fn abort_multipart(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<(), StorageError> {
    let result = send_with_retry("abort_multipart_upload", || {
        client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send()
    })
    .await;
    match result {
        Ok(_) => {
            debug!(bucket, key, upload_id, "aborted multipart upload");
            Ok(())
        }
        Err(err) if http_status(&err) == Some(404) => {
            debug!(bucket, key, upload_id, "abort: no such upload");
            Ok(())
        }
        Err(err) => Err(classify("abort_multipart_upload", &err)),
    }
}

/// Sends a request, retrying transient failures up to [`MAX_RETRIES`] times with exponential
/// backoff and jitter. Returns the last error untouched so callers can inspect it.
async fn send_with_retry<T, E, F, Fut>(op: &'static str, mut send: F) -> Result<T, SdkError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut attempt = 0;
    loop {
        match send().await {
            Ok(out) => return Ok(out),
            Err(err) if attempt < MAX_RETRIES && sdk_error_is_transient(&err) => {
                let delay = backoff(attempt);
                attempt += 1;
                debug!(op, attempt, delay_ms = delay.as_millis() as u64, error = %describe(&err),
                    "transient object storage error, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Exponential backoff with "equal jitter": a random delay in `[d/2, d]`, `d = BASE · 2^attempt`.
fn backoff(attempt: u32) -> Duration {
    let full = BASE_DELAY.saturating_mul(1 << attempt.min(16)).min(MAX_DELAY);
    let half = full / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Whether an HTTP status is worth retrying.
fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

fn http_status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn sdk_error_is_transient<E>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(_) => http_status(err).is_some_and(is_transient_status),
        _ => false,
    }
}

/// A message without credentials or signatures: code, status and server message, or the
/// error chain for failures without a response.
fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(_) => {
            let status = http_status(err).map(|s| s.to_string()).unwrap_or_else(|| "?".into());
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code} (HTTP {status}): {message}"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                (None, _) => format!("HTTP {status}"),
            }
        }
        _ => DisplayErrorContext(err).to_string(),
    }
}

fn classify<E>(op: &'static str, err: &SdkError<E>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = describe(err);
    if sdk_error_is_transient(err) {
        StorageError::Transient { op, message }
    } else {
        StorageError::Permanent { op, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_bodies_are_signed_unless_tls_or_loopback_protects_them() {
        let store = |endpoint: Option<&str>| {
            S3Store::new(&S3Config {
                endpoint: endpoint.map(str::to_owned),
                bucket: "b".into(),
                region: "us-east-1".into(),
                access_key_id: "AKID".into(),
                secret_access_key: "secret".into(),
                force_path_style: true,
            })
        };
        assert!(store(None).unsigned_payload, "AWS is always HTTPS");
        assert!(store(Some("https://minio.example.com")).unsigned_payload);
        assert!(!store(Some("http://minio.storage.svc:9000")).unsigned_payload);
        for loopback in [
            "http://127.0.0.1:9000",
            "http://127.8.9.10",
            "http://localhost:9000/",
            "http://LOCALHOST",
            "http://[::1]:9000",
            "http://user@127.0.0.1:9000/path",
        ] {
            assert!(store(Some(loopback)).unsigned_payload, "{loopback}");
        }
        for remote in [
            "http://10.0.0.5:9000",
            "http://[2001:db8::1]:9000",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "http://127.0.0.1@evil.example.com",
            "ftp://127.0.0.1",
        ] {
            assert!(!store(Some(remote)).unsigned_payload, "{remote}");
        }
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..20 {
            let full = BASE_DELAY.saturating_mul(1 << attempt.min(16)).min(MAX_DELAY);
            let d = backoff(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(30) <= MAX_DELAY);
    }

    #[test]
    fn debug_redacts_secret() {
        let cfg = S3Config {
            endpoint: None,
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key_id: "AKIA".into(),
            secret_access_key: "super-secret-value".into(),
            force_path_style: true,
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("super-secret-value"));
        assert!(shown.contains("<redacted>"));
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let store = S3Store::new(&S3Config {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            bucket: "nothing-here".into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            force_path_style: true,
        });
        let err = store.check().await.expect_err("nothing listens");
        assert!(err.is_transient(), "{err}");
        assert_eq!(userexport_domain::ErrorCode::error_code(&err), userexport_domain::Code::ServiceUnavailable);
    }

    #[tokio::test]
    async fn presign_is_offline_and_bounded() {
        let store = S3Store::new(&S3Config {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: "bkt".into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s3cr3t".into(),
            force_path_style: true,
        });
        let url = store.presign_get("exports/p/t.csv", "users.csv", Duration::from_secs(3600)).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1:9/bkt/exports/p/t.csv?"), "{url}");
        assert!(url.contains("X-Amz-Expires=3600"));
        assert!(url.contains("response-content-disposition=attachment"));
        assert!(!url.contains("s3cr3t"));
        let err = store.presign_get("exports/p/t.csv", "u.csv", MAX_PRESIGN_EXPIRY + Duration::from_secs(1)).await;
        assert!(matches!(err, Err(StorageError::Config(_))));
        let err = store.presign_get("../x", "u.csv", Duration::from_secs(60)).await;
        assert!(matches!(err, Err(StorageError::InvalidKey { .. })));
    }
}
