//! Layered, validated service settings.
//!
//! Every setting is looked up in this order, first hit wins:
//! 1. a command-line flag (`--bind …`),
//! 2. an environment variable (`USEREXPORT_BIND`),
//! 3. the TOML file given by `--config FILE` / `USEREXPORT_CONFIG` (key `bind`: the variable name
//!    without the `USEREXPORT_` prefix, lower-cased),
//! 4. the built-in default.
//!
//! [`ConfigArgs::resolve`] layers and validates everything into a typed [`Settings`]; a
//! [`ConfigError`] names the offending setting by its environment variable and never echoes a
//! secret. `config.example.toml` at the repository root lists every setting with its default.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Name of the file under the data directory that holds the generated download-signing secret.
pub const SIGNING_SECRET_FILE: &str = "signing.secret";

/// Longest download-URL lifetime S3 accepts for a SigV4 presigned URL (7 days).
pub const MAX_DOWNLOAD_URL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Minimum length of an operator-provided `USEREXPORT_SIGNING_SECRET`.
pub const MIN_SIGNING_SECRET_LEN: usize = 32;

const REDACTED: &str = "<redacted>";

/// Configuration flags shared by every subcommand; each also reads its `USEREXPORT_*` variable.
///
/// Values are kept as text and parsed by [`ConfigArgs::resolve`], so that a bad value produces
/// the same named error whichever layer it came from.
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Configuration")]
pub struct ConfigArgs {
    /// TOML configuration file (lowest-priority layer above the defaults).
    #[arg(long, env = "USEREXPORT_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Address the HTTP API listens on [default: 127.0.0.1:8080].
    #[arg(long, env = "USEREXPORT_BIND", value_name = "ADDR", global = true)]
    pub bind: Option<String>,

    /// Directory for the embedded database, local export files and the signing secret [default: ./data].
    #[arg(long, env = "USEREXPORT_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// `sqlite://…` or `postgres://…` [default: sqlite://<data-dir>/userexport.db?mode=rwc].
    #[arg(long, env = "USEREXPORT_DATABASE_URL", value_name = "URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// `redis://…` or `rediss://…`; when set the job queue lives in Redis, else in SQLite.
    #[arg(long, env = "USEREXPORT_REDIS_URL", value_name = "URL", hide_env_values = true, global = true)]
    pub redis_url: Option<String>,

    /// Prefix of the queue's keys / namespace [default: userexport].
    #[arg(long, env = "USEREXPORT_QUEUE_PREFIX", value_name = "PREFIX", global = true)]
    pub queue_prefix: Option<String>,

    /// S3 endpoint URL for S3-compatible servers; unset means AWS.
    #[arg(long, env = "USEREXPORT_S3_ENDPOINT", value_name = "URL", global = true)]
    pub s3_endpoint: Option<String>,

    /// S3 bucket for export files; when set exports go to S3, else to local files.
    #[arg(long, env = "USEREXPORT_S3_BUCKET", value_name = "BUCKET", global = true)]
    pub s3_bucket: Option<String>,

    /// S3 region [default: us-east-1].
    #[arg(long, env = "USEREXPORT_S3_REGION", value_name = "REGION", global = true)]
    pub s3_region: Option<String>,

    /// S3 access key id (required with a bucket).
    #[arg(long, env = "USEREXPORT_S3_ACCESS_KEY_ID", value_name = "ID", global = true)]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key (required with a bucket).
    #[arg(long, env = "USEREXPORT_S3_SECRET_ACCESS_KEY", value_name = "SECRET", hide_env_values = true, global = true)]
    pub s3_secret_access_key: Option<String>,

    /// Path-style S3 addressing (`endpoint/bucket/key`) [default: true].
    #[arg(
        long,
        env = "USEREXPORT_S3_FORCE_PATH_STYLE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub s3_force_path_style: Option<String>,

    /// Base URL of local-file download links [default: http://<bind>].
    #[arg(long, env = "USEREXPORT_PUBLIC_URL", value_name = "URL", global = true)]
    pub public_url: Option<String>,

    /// Log filter in `tracing` EnvFilter syntax [default: info].
    #[arg(long, env = "USEREXPORT_LOG", value_name = "FILTER", global = true)]
    pub log: Option<String>,

    /// Log output format: `pretty` or `json` [default: pretty].
    #[arg(long, env = "USEREXPORT_LOG_FORMAT", value_name = "FORMAT", global = true)]
    pub log_format: Option<String>,

    /// Lifetime of download URLs, at most 7d [default: 24h].
    #[arg(long, env = "USEREXPORT_DOWNLOAD_URL_TTL", value_name = "DURATION", global = true)]
    pub download_url_ttl: Option<String>,

    /// How long finished exports (and their files) are kept [default: 24h].
    #[arg(long, env = "USEREXPORT_RETENTION", value_name = "DURATION", global = true)]
    pub retention: Option<String>,

    /// Export jobs processed in parallel per worker process [default: 2].
    #[arg(long, env = "USEREXPORT_WORKER_CONCURRENCY", value_name = "N", global = true)]
    pub worker_concurrency: Option<String>,

    /// Lease a worker holds on a running export before another may take it over [default: 60s].
    #[arg(long, env = "USEREXPORT_LEASE", value_name = "DURATION", global = true)]
    pub lease: Option<String>,

    /// Largest accepted HTTP request body in bytes [default: 10485760].
    #[arg(long, env = "USEREXPORT_MAX_BODY_BYTES", value_name = "BYTES", global = true)]
    pub max_body_bytes: Option<String>,

    /// Interval of the sweeper (expiry, stale uploads) and reconciler [default: 60s].
    #[arg(long, env = "USEREXPORT_SWEEP_INTERVAL", value_name = "DURATION", global = true)]
    pub sweep_interval: Option<String>,

    /// How long a `pending` task may wait before the reconciler assumes the queue lost it and
    /// enqueues it again [default: 120s].
    #[arg(long, env = "USEREXPORT_PENDING_GRACE", value_name = "DURATION", global = true)]
    pub pending_grace: Option<String>,

    /// Finished job records kept in the queue (succeeded and dead, each); older ones are trimmed by
    /// the maintenance loop (the tasks themselves stay in the database) [default: 10000].
    #[arg(long, env = "USEREXPORT_QUEUE_KEEP_DONE", value_name = "N", global = true)]
    pub queue_keep_done: Option<String>,

    /// Requests per second each project may send to the Descope routes, per API replica (bursts of
    /// the same size), or `off` [default: off].
    #[arg(long, env = "USEREXPORT_RATE_LIMIT", value_name = "PER_SECOND", global = true)]
    pub rate_limit: Option<String>,

    /// Address (IP:port) where `userexport worker` serves `/metrics` and `/healthz`, or `off`
    /// [default: off].
    #[arg(long, env = "USEREXPORT_WORKER_METRICS_BIND", value_name = "ADDR", global = true)]
    pub worker_metrics_bind: Option<String>,

    /// Server secret (≥ 32 chars) for local download URLs and `/oauth/token` JWTs; API replicas must share it
    /// [default: generated into <data-dir>/signing.secret].
    #[arg(long, env = "USEREXPORT_SIGNING_SECRET", value_name = "SECRET", hide_env_values = true, global = true)]
    pub signing_secret: Option<String>,
}

impl fmt::Debug for ConfigArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |v: &Option<String>| v.as_ref().map(|_| REDACTED);
        let url = |v: &Option<String>| v.as_deref().map(redact_url);
        f.debug_struct("ConfigArgs")
            .field("config", &self.config)
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database_url", &url(&self.database_url))
            .field("redis_url", &url(&self.redis_url))
            .field("queue_prefix", &self.queue_prefix)
            .field("s3_endpoint", &url(&self.s3_endpoint))
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &secret(&self.s3_secret_access_key))
            .field("s3_force_path_style", &self.s3_force_path_style)
            .field("public_url", &self.public_url)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("download_url_ttl", &self.download_url_ttl)
            .field("retention", &self.retention)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("lease", &self.lease)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("sweep_interval", &self.sweep_interval)
            .field("pending_grace", &self.pending_grace)
            .field("queue_keep_done", &self.queue_keep_done)
            .field("worker_metrics_bind", &self.worker_metrics_bind)
            .field("rate_limit", &self.rate_limit)
            .field("signing_secret", &secret(&self.signing_secret))
            .finish()
    }
}

/// The TOML file layer: keys are the setting names without `USEREXPORT_`, lower-cased.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    redis_url: Option<String>,
    queue_prefix: Option<String>,
    s3_endpoint: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_force_path_style: Option<bool>,
    public_url: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    download_url_ttl: Option<String>,
    retention: Option<String>,
    worker_concurrency: Option<u64>,
    lease: Option<String>,
    max_body_bytes: Option<u64>,
    sweep_interval: Option<String>,
    pending_grace: Option<String>,
    queue_keep_done: Option<u64>,
    worker_metrics_bind: Option<String>,
    rate_limit: Option<u64>,
    signing_secret: Option<String>,
}

impl FileConfig {
    /// Parses TOML text; `origin` (usually the path) only labels errors. Secrets are not echoed.
    pub fn parse(text: &str, origin: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text)
            .map_err(|err| ConfigError::File { path: origin.to_path_buf(), reason: describe_toml_error(text, &err) })
    }

    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::File { path: path.to_path_buf(), reason: err.to_string() })?;
        FileConfig::parse(&text, path)
    }
}

/// TOML error text without the source snippet (which could contain a secret), plus the line.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let Some(span) = err.span() else {
        return err.message().to_owned();
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    let key = line.split('=').next().unwrap_or_default().trim();
    if SETTINGS.iter().any(|s| s.secret && s.file == key) {
        format!("line {line_no}: invalid value for `{key}` (value not shown)")
    } else {
        format!("line {line_no}: {}", err.message())
    }
}

/// A configuration problem; the message names the setting and never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (no secret values).
        reason: String,
    },
    /// One setting has a bad value.
    #[error("{setting}: invalid value `{value}` (from {origin}): {reason}")]
    Invalid {
        /// Environment variable name of the setting, e.g. `USEREXPORT_BIND`.
        setting: &'static str,
        /// The value, redacted for secrets and URL passwords.
        value: String,
        /// Where the value came from (flag, environment, file, default).
        origin: String,
        /// What is expected.
        reason: String,
    },
    /// Settings that are fine alone but do not fit together.
    #[error("{0}")]
    Conflict(String),
    /// The generated signing secret could not be read or written.
    #[error("signing secret {}: {reason}", path.display())]
    SigningSecret {
        /// The secret file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Fully resolved, validated settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Address the HTTP API listens on.
    pub bind: SocketAddr,
    /// Data directory (embedded database, local files, signing secret).
    pub data_dir: PathBuf,
    /// `sqlite:…` or `postgres(ql)://…` connection URL (may contain a password).
    pub database_url: String,
    /// Job queue backend.
    pub queue: QueueSettings,
    /// Export file storage backend.
    pub storage: StorageSettings,
    /// Base URL of local-file download links, without a trailing slash.
    pub public_url: String,
    /// `tracing` EnvFilter directive.
    pub log: String,
    /// Log output format.
    pub log_format: LogFormat,
    /// Lifetime of download URLs (≤ 7 days).
    pub download_url_ttl: Duration,
    /// How long finished exports and their files are kept.
    pub retention: Duration,
    /// Export jobs processed in parallel per worker process (≥ 1).
    pub worker_concurrency: usize,
    /// Lease a worker holds on a running export.
    pub lease: Duration,
    /// Largest accepted HTTP request body in bytes (≥ 1).
    pub max_body_bytes: usize,
    /// Interval of the sweeper and reconciler.
    pub sweep_interval: Duration,
    /// Age at which the reconciler re-enqueues a `pending` task.
    pub pending_grace: Duration,
    /// Finished job records the queue keeps (succeeded and dead, each).
    pub queue_keep_done: u64,
    /// Where `userexport worker` serves its own `/metrics` and `/healthz`; `None`: not served.
    pub worker_metrics_bind: Option<SocketAddr>,
    /// Per-project requests per second on the Descope routes (per API replica); `None`: unlimited.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// Operator-provided server secret (download URLs, `/oauth/token` JWTs); see [`Settings::signing_secret`].
    pub signing_secret: Option<String>,
}

/// Where export jobs are queued.
#[derive(Clone, PartialEq, Eq)]
pub enum QueueSettings {
    /// Redis (`USEREXPORT_REDIS_URL` set).
    Redis {
        /// `redis://` or `rediss://` URL.
        url: String,
        /// Key prefix.
        prefix: String,
    },
    /// SQLite: the database file itself when the database is SQLite, else `<data_dir>/queue.db`.
    Sqlite {
        /// `sqlite:` URL.
        url: String,
        /// Queue namespace.
        prefix: String,
    },
}

/// Where export files are written.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// An S3 bucket (`USEREXPORT_S3_BUCKET` set).
    S3 {
        /// Endpoint of an S3-compatible server; `None` means AWS.
        endpoint: Option<String>,
        /// Bucket name.
        bucket: String,
        /// Region.
        region: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Path-style addressing.
        force_path_style: bool,
    },
    /// Local files served by the API with HMAC-signed URLs.
    Local {
        /// Directory of the files (`<data_dir>/files`).
        dir: PathBuf,
    },
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl Settings {
    /// True for the all-in-one mode: SQLite database, SQLite queue and local files.
    pub fn is_embedded(&self) -> bool {
        self.database_url.starts_with("sqlite:")
            && matches!(self.queue, QueueSettings::Sqlite { .. })
            && matches!(self.storage, StorageSettings::Local { .. })
    }

    /// True when the database is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    /// The HMAC key for local download URLs: `USEREXPORT_SIGNING_SECRET` if set, else the secret
    /// generated once into `<data_dir>/signing.secret` (see [`load_or_create_signing_secret`]).
    pub fn signing_secret(&self) -> Result<Vec<u8>, ConfigError> {
        match &self.signing_secret {
            Some(secret) => Ok(secret.as_bytes().to_vec()),
            None => load_or_create_signing_secret(&self.data_dir),
        }
    }

    /// Creates the data directory and, for local storage, the files directory.
    pub fn ensure_dirs(&self) -> Result<(), ConfigError> {
        let mut dirs = vec![self.data_dir.as_path()];
        if let StorageSettings::Local { dir } = &self.storage {
            dirs.push(dir);
        }
        for dir in dirs {
            std::fs::create_dir_all(dir).map_err(|err| ConfigError::Invalid {
                setting: DATA_DIR.env,
                value: dir.display().to_string(),
                origin: "resolved settings".into(),
                reason: format!("cannot create directory: {err}"),
            })?;
        }
        Ok(())
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("queue", &self.queue)
            .field("storage", &self.storage)
            .field("public_url", &self.public_url)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("download_url_ttl", &format_duration(self.download_url_ttl))
            .field("retention", &format_duration(self.retention))
            .field("worker_concurrency", &self.worker_concurrency)
            .field("lease", &format_duration(self.lease))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("sweep_interval", &format_duration(self.sweep_interval))
            .field("pending_grace", &format_duration(self.pending_grace))
            .field("queue_keep_done", &self.queue_keep_done)
            .field("worker_metrics_bind", &self.worker_metrics_bind)
            .field("rate_limit", &self.rate_limit)
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl fmt::Debug for QueueSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, url, prefix) = match self {
            QueueSettings::Redis { url, prefix } => ("Redis", url, prefix),
            QueueSettings::Sqlite { url, prefix } => ("Sqlite", url, prefix),
        };
        f.debug_struct(name).field("url", &redact_url(url)).field("prefix", prefix).finish()
    }
}

impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageSettings::S3 { endpoint, bucket, region, access_key_id, secret_access_key: _, force_path_style } => {
                f.debug_struct("S3")
                    .field("endpoint", &endpoint.as_deref().map(redact_url))
                    .field("bucket", bucket)
                    .field("region", region)
                    .field("access_key_id", access_key_id)
                    .field("secret_access_key", &REDACTED)
                    .field("force_path_style", force_path_style)
                    .finish()
            }
            StorageSettings::Local { dir } => f.debug_struct("Local").field("dir", dir).finish(),
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Setting names
// -------------------------------------------------------------------------------------------------

/// The three names of one setting.
#[derive(Debug, Clone, Copy)]
struct Key {
    env: &'static str,
    flag: &'static str,
    file: &'static str,
    secret: bool,
}

const fn key(env: &'static str, flag: &'static str, file: &'static str, secret: bool) -> Key {
    Key { env, flag, file, secret }
}

const CONFIG: Key = key("USEREXPORT_CONFIG", "--config", "", false);
const BIND: Key = key("USEREXPORT_BIND", "--bind", "bind", false);
const DATA_DIR: Key = key("USEREXPORT_DATA_DIR", "--data-dir", "data_dir", false);
const DATABASE_URL: Key = key("USEREXPORT_DATABASE_URL", "--database-url", "database_url", false);
const REDIS_URL: Key = key("USEREXPORT_REDIS_URL", "--redis-url", "redis_url", false);
const QUEUE_PREFIX: Key = key("USEREXPORT_QUEUE_PREFIX", "--queue-prefix", "queue_prefix", false);
const S3_ENDPOINT: Key = key("USEREXPORT_S3_ENDPOINT", "--s3-endpoint", "s3_endpoint", false);
const S3_BUCKET: Key = key("USEREXPORT_S3_BUCKET", "--s3-bucket", "s3_bucket", false);
const S3_REGION: Key = key("USEREXPORT_S3_REGION", "--s3-region", "s3_region", false);
const S3_ACCESS_KEY_ID: Key = key("USEREXPORT_S3_ACCESS_KEY_ID", "--s3-access-key-id", "s3_access_key_id", false);
const S3_SECRET_ACCESS_KEY: Key =
    key("USEREXPORT_S3_SECRET_ACCESS_KEY", "--s3-secret-access-key", "s3_secret_access_key", true);
const S3_FORCE_PATH_STYLE: Key =
    key("USEREXPORT_S3_FORCE_PATH_STYLE", "--s3-force-path-style", "s3_force_path_style", false);
const PUBLIC_URL: Key = key("USEREXPORT_PUBLIC_URL", "--public-url", "public_url", false);
const LOG: Key = key("USEREXPORT_LOG", "--log", "log", false);
const LOG_FORMAT: Key = key("USEREXPORT_LOG_FORMAT", "--log-format", "log_format", false);
const DOWNLOAD_URL_TTL: Key = key("USEREXPORT_DOWNLOAD_URL_TTL", "--download-url-ttl", "download_url_ttl", false);
const RETENTION: Key = key("USEREXPORT_RETENTION", "--retention", "retention", false);
const WORKER_CONCURRENCY: Key =
    key("USEREXPORT_WORKER_CONCURRENCY", "--worker-concurrency", "worker_concurrency", false);
const LEASE: Key = key("USEREXPORT_LEASE", "--lease", "lease", false);
const MAX_BODY_BYTES: Key = key("USEREXPORT_MAX_BODY_BYTES", "--max-body-bytes", "max_body_bytes", false);
const SWEEP_INTERVAL: Key = key("USEREXPORT_SWEEP_INTERVAL", "--sweep-interval", "sweep_interval", false);
const PENDING_GRACE: Key = key("USEREXPORT_PENDING_GRACE", "--pending-grace", "pending_grace", false);
const QUEUE_KEEP_DONE: Key = key("USEREXPORT_QUEUE_KEEP_DONE", "--queue-keep-done", "queue_keep_done", false);
const SIGNING_SECRET: Key = key("USEREXPORT_SIGNING_SECRET", "--signing-secret", "signing_secret", true);
const WORKER_METRICS_BIND: Key =
    key("USEREXPORT_WORKER_METRICS_BIND", "--worker-metrics-bind", "worker_metrics_bind", false);
const RATE_LIMIT: Key = key("USEREXPORT_RATE_LIMIT", "--rate-limit", "rate_limit", false);

/// Every setting that has a file key (all but `--config`).
const SETTINGS: [Key; 25] = [
    BIND,
    DATA_DIR,
    DATABASE_URL,
    REDIS_URL,
    QUEUE_PREFIX,
    S3_ENDPOINT,
    S3_BUCKET,
    S3_REGION,
    S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY,
    S3_FORCE_PATH_STYLE,
    PUBLIC_URL,
    LOG,
    LOG_FORMAT,
    DOWNLOAD_URL_TTL,
    RETENTION,
    WORKER_CONCURRENCY,
    LEASE,
    MAX_BODY_BYTES,
    SWEEP_INTERVAL,
    PENDING_GRACE,
    QUEUE_KEEP_DONE,
    WORKER_METRICS_BIND,
    RATE_LIMIT,
    SIGNING_SECRET,
];

// -------------------------------------------------------------------------------------------------
// Layering
// -------------------------------------------------------------------------------------------------

/// A value and the layer it came from.
struct Raw {
    value: String,
    origin: String,
}

/// The flag/env/file layers of one resolution.
struct Layers<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: FileConfig,
    file_path: Option<PathBuf>,
}

impl Layers<'_> {
    /// First non-empty value among flag (which clap may have filled from the process environment),
    /// the injected environment and the file.
    fn pick(&self, key: Key, flag: Option<String>, file: Option<String>) -> Option<Raw> {
        let env = (self.env)(key.env).filter(|v| !v.is_empty());
        if let Some(value) = flag.filter(|v| !v.is_empty()) {
            // clap fills the field from the process environment too; attribute it correctly.
            let origin = if env.as_deref() == Some(value.as_str()) {
                format!("environment {}", key.env)
            } else {
                format!("flag {}", key.flag)
            };
            return Some(Raw { value, origin });
        }
        if let Some(value) = env {
            return Some(Raw { value, origin: format!("environment {}", key.env) });
        }
        let value = file.filter(|v| !v.is_empty())?;
        let path = self.file_path.as_deref().unwrap_or(Path::new("config file"));
        Some(Raw { value, origin: format!("{} key `{}`", path.display(), key.file) })
    }
}

/// Parses a picked value, or uses `default` when no layer set it.
fn parse_or<T>(
    key: Key,
    raw: Option<Raw>,
    default: impl FnOnce() -> T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default()),
        Some(raw) => parse(&raw.value).map_err(|reason| invalid(key, &raw, reason)),
    }
}

fn invalid(key: Key, raw: &Raw, reason: impl Into<String>) -> ConfigError {
    let value = if key.secret { REDACTED.to_owned() } else { redact_url(&raw.value) };
    ConfigError::Invalid { setting: key.env, value, origin: raw.origin.clone(), reason: reason.into() }
}

impl ConfigArgs {
    /// Layers flags, the process environment, the config file and the defaults, and validates.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        self.resolve_with(&|name| std::env::var(name).ok())
    }

    /// Like [`ConfigArgs::resolve`] with an injected environment lookup (used by tests).
    pub fn resolve_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let file_path = self.config.clone().or_else(|| env(CONFIG.env).filter(|v| !v.is_empty()).map(PathBuf::from));
        let file = match &file_path {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        self.resolve_layers(&Layers { env, file, file_path })
    }

    fn resolve_layers(&self, l: &Layers<'_>) -> Result<Settings, ConfigError> {
        let f = &l.file;
        let path_text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());

        let bind = parse_or(BIND, l.pick(BIND, self.bind.clone(), f.bind.clone()), default_bind, |v| {
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| "expected an IP address and port, e.g. 127.0.0.1:8080 or [::]:8080".to_owned())
        })?;

        let data_dir = PathBuf::from(
            l.pick(DATA_DIR, path_text(&self.data_dir), path_text(&f.data_dir))
                .map_or_else(|| "./data".to_owned(), |raw| raw.value),
        );
        let data_dir_str = data_dir.to_str().ok_or_else(|| ConfigError::Invalid {
            setting: DATA_DIR.env,
            value: data_dir.display().to_string(),
            origin: "data directory".into(),
            reason: "the path must be valid UTF-8".into(),
        })?;
        let data_dir_str = data_dir_str.trim_end_matches('/');
        let data_dir_str = if data_dir_str.is_empty() { "/" } else { data_dir_str };

        let database_url = parse_or(
            DATABASE_URL,
            l.pick(DATABASE_URL, self.database_url.clone(), f.database_url.clone()),
            || format!("sqlite://{data_dir_str}/userexport.db?mode=rwc"),
            validate_database_url,
        )?;

        let queue_prefix = parse_or(
            QUEUE_PREFIX,
            l.pick(QUEUE_PREFIX, self.queue_prefix.clone(), f.queue_prefix.clone()),
            || "userexport".to_owned(),
            validate_queue_prefix,
        )?;
        let redis_url = l.pick(REDIS_URL, self.redis_url.clone(), f.redis_url.clone());
        let queue = match redis_url {
            Some(raw) => QueueSettings::Redis {
                url: validate_redis_url(&raw.value).map_err(|r| invalid(REDIS_URL, &raw, r))?,
                prefix: queue_prefix,
            },
            None => QueueSettings::Sqlite {
                url: if database_url.starts_with("sqlite:") {
                    database_url.clone()
                } else {
                    format!("sqlite://{data_dir_str}/queue.db?mode=rwc")
                },
                prefix: queue_prefix,
            },
        };

        let storage = self.resolve_storage(l, &data_dir)?;

        let public_url = parse_or(
            PUBLIC_URL,
            l.pick(PUBLIC_URL, self.public_url.clone(), f.public_url.clone()),
            || default_public_url(bind),
            validate_public_url,
        )?;

        let log = parse_or(
            LOG,
            l.pick(LOG, self.log.clone(), f.log.clone()),
            || "info".to_owned(),
            |v| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| v.to_owned())
                    .map_err(|err| format!("not a tracing filter ({err}); e.g. `info` or `info,userexport=debug`"))
            },
        )?;
        let log_format = parse_or(
            LOG_FORMAT,
            l.pick(LOG_FORMAT, self.log_format.clone(), f.log_format.clone()),
            || LogFormat::Pretty,
            |v| match v.trim().to_ascii_lowercase().as_str() {
                "pretty" => Ok(LogFormat::Pretty),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected `pretty` or `json`".to_owned()),
            },
        )?;

        let duration = |key: Key,
                        flag: &Option<String>,
                        file: &Option<String>,
                        default: Duration,
                        max: Option<(Duration, &str)>| {
            parse_or(
                key,
                l.pick(key, flag.clone(), file.clone()),
                || default,
                |v| {
                    let d = parse_duration(v)?;
                    if d.is_zero() {
                        return Err("must be greater than zero".to_owned());
                    }
                    match max {
                        Some((max, why)) if d > max => Err(format!("must be at most {} ({why})", format_duration(max))),
                        _ => Ok(d),
                    }
                },
            )
        };
        let download_url_ttl = duration(
            DOWNLOAD_URL_TTL,
            &self.download_url_ttl,
            &f.download_url_ttl,
            Duration::from_secs(24 * 3600),
            Some((MAX_DOWNLOAD_URL_TTL, "the longest lifetime of an S3 presigned URL")),
        )?;
        let retention = duration(RETENTION, &self.retention, &f.retention, Duration::from_secs(24 * 3600), None)?;
        if retention < download_url_ttl {
            return Err(ConfigError::Conflict(format!(
                "USEREXPORT_RETENTION ({}) is shorter than USEREXPORT_DOWNLOAD_URL_TTL ({}): download \
                 links would outlive their files; raise the retention or shorten the TTL",
                format_duration(retention),
                format_duration(download_url_ttl)
            )));
        }
        let lease = duration(LEASE, &self.lease, &f.lease, Duration::from_secs(60), None)?;
        let sweep_interval =
            duration(SWEEP_INTERVAL, &self.sweep_interval, &f.sweep_interval, Duration::from_secs(60), None)?;
        let pending_grace =
            duration(PENDING_GRACE, &self.pending_grace, &f.pending_grace, Duration::from_secs(120), None)?;

        let worker_metrics_bind = parse_or(
            WORKER_METRICS_BIND,
            l.pick(WORKER_METRICS_BIND, self.worker_metrics_bind.clone(), f.worker_metrics_bind.clone()),
            || None,
            |v| match v.trim().to_ascii_lowercase().as_str() {
                "off" | "none" | "disabled" => Ok(None),
                v => v
                    .parse::<SocketAddr>()
                    .map(Some)
                    .map_err(|_| "expected an IP address and port, e.g. 0.0.0.0:9090, or `off`".to_owned()),
            },
        )?;

        let rate_limit = parse_or(
            RATE_LIMIT,
            l.pick(RATE_LIMIT, self.rate_limit.clone(), f.rate_limit.map(|n| n.to_string())),
            || None,
            |v| match v.trim().to_ascii_lowercase().as_str() {
                "off" | "none" | "disabled" | "0" => Ok(None),
                v => v
                    .parse::<std::num::NonZeroU32>()
                    .map(Some)
                    .map_err(|_| "expected requests per second (a whole number), or `off`".to_owned()),
            },
        )?;

        let positive = |v: &str| match v.trim().parse::<usize>() {
            Ok(0) => Err("must be at least 1".to_owned()),
            Ok(n) => Ok(n),
            Err(_) => Err("expected a positive whole number".to_owned()),
        };
        let worker_concurrency = parse_or(
            WORKER_CONCURRENCY,
            l.pick(WORKER_CONCURRENCY, self.worker_concurrency.clone(), f.worker_concurrency.map(|n| n.to_string())),
            || 2,
            positive,
        )?;
        let max_body_bytes = parse_or(
            MAX_BODY_BYTES,
            l.pick(MAX_BODY_BYTES, self.max_body_bytes.clone(), f.max_body_bytes.map(|n| n.to_string())),
            || 10 * 1024 * 1024,
            positive,
        )?;

        let queue_keep_done = parse_or(
            QUEUE_KEEP_DONE,
            l.pick(QUEUE_KEEP_DONE, self.queue_keep_done.clone(), f.queue_keep_done.map(|n| n.to_string())),
            || 10_000,
            |v| v.trim().parse::<u64>().map_err(|_| "expected a whole number of job records".to_owned()),
        )?;

        let signing_secret = parse_or(
            SIGNING_SECRET,
            l.pick(SIGNING_SECRET, self.signing_secret.clone(), f.signing_secret.clone()),
            || None,
            |v| {
                if v.len() < MIN_SIGNING_SECRET_LEN {
                    Err(format!("must be at least {MIN_SIGNING_SECRET_LEN} characters long"))
                } else {
                    Ok(Some(v.to_owned()))
                }
            },
        )?;

        Ok(Settings {
            bind,
            data_dir,
            database_url,
            queue,
            storage,
            public_url,
            log,
            log_format,
            download_url_ttl,
            retention,
            worker_concurrency,
            lease,
            max_body_bytes,
            sweep_interval,
            pending_grace,
            queue_keep_done,
            worker_metrics_bind,
            rate_limit,
            signing_secret,
        })
    }

    fn resolve_storage(&self, l: &Layers<'_>, data_dir: &Path) -> Result<StorageSettings, ConfigError> {
        let f = &l.file;
        let endpoint = l.pick(S3_ENDPOINT, self.s3_endpoint.clone(), f.s3_endpoint.clone());
        let bucket = l.pick(S3_BUCKET, self.s3_bucket.clone(), f.s3_bucket.clone());
        let region = l.pick(S3_REGION, self.s3_region.clone(), f.s3_region.clone());
        let access_key_id = l.pick(S3_ACCESS_KEY_ID, self.s3_access_key_id.clone(), f.s3_access_key_id.clone());
        let secret_access_key =
            l.pick(S3_SECRET_ACCESS_KEY, self.s3_secret_access_key.clone(), f.s3_secret_access_key.clone());
        let force_path_style =
            l.pick(S3_FORCE_PATH_STYLE, self.s3_force_path_style.clone(), f.s3_force_path_style.map(|b| b.to_string()));

        let Some(bucket) = bucket else {
            let stray: Vec<&str> = [
                (endpoint.is_some(), S3_ENDPOINT.env),
                (access_key_id.is_some(), S3_ACCESS_KEY_ID.env),
                (secret_access_key.is_some(), S3_SECRET_ACCESS_KEY.env),
            ]
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name))
            .collect();
            if !stray.is_empty() {
                return Err(ConfigError::Conflict(format!(
                    "{} set but USEREXPORT_S3_BUCKET is not: set the bucket to store exports in S3, \
                     or unset them to use local files",
                    stray.join(", ")
                )));
            }
            return Ok(StorageSettings::Local { dir: data_dir.join("files") });
        };

        let bucket_name = validate_bucket(&bucket.value).map_err(|r| invalid(S3_BUCKET, &bucket, r))?;
        let missing: Vec<&str> =
            [(access_key_id.is_none(), S3_ACCESS_KEY_ID.env), (secret_access_key.is_none(), S3_SECRET_ACCESS_KEY.env)]
                .into_iter()
                .filter_map(|(missing, name)| missing.then_some(name))
                .collect();
        if !missing.is_empty() {
            return Err(ConfigError::Conflict(format!(
                "USEREXPORT_S3_BUCKET is set ({bucket_name}) but {} {} not: S3 storage needs both \
                 USEREXPORT_S3_ACCESS_KEY_ID and USEREXPORT_S3_SECRET_ACCESS_KEY",
                missing.join(" and "),
                if missing.len() == 1 { "is" } else { "are" }
            )));
        }
        let endpoint = match endpoint {
            Some(raw) => Some(validate_endpoint(&raw.value).map_err(|r| invalid(S3_ENDPOINT, &raw, r))?),
            None => None,
        };
        let region = parse_or(
            S3_REGION,
            region,
            || "us-east-1".to_owned(),
            |v| {
                let v = v.trim();
                if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    Ok(v.to_owned())
                } else {
                    Err("expected a region name like us-east-1".to_owned())
                }
            },
        )?;
        let force_path_style = parse_or(S3_FORCE_PATH_STYLE, force_path_style, || true, parse_bool)?;
        Ok(StorageSettings::S3 {
            endpoint,
            bucket: bucket_name,
            region,
            access_key_id: access_key_id.map(|r| r.value).unwrap_or_default(),
            secret_access_key: secret_access_key.map(|r| r.value).unwrap_or_default(),
            force_path_style,
        })
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
}

/// `http://<bind>`, with a wildcard address replaced by loopback so the links work locally.
fn default_public_url(bind: SocketAddr) -> String {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, bind.port()))
}

// -------------------------------------------------------------------------------------------------
// Validation of single values
// -------------------------------------------------------------------------------------------------

fn validate_database_url(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.starts_with("sqlite:") {
        if v == "sqlite:" || v == "sqlite://" {
            return Err("the SQLite URL names no file, e.g. sqlite://./data/userexport.db?mode=rwc".into());
        }
        return Ok(v.to_owned());
    }
    if v.starts_with("postgres://") || v.starts_with("postgresql://") {
        return url::Url::parse(v).map(|_| v.to_owned()).map_err(|err| format!("not a valid PostgreSQL URL: {err}"));
    }
    Err("expected a sqlite:// or postgres:// (postgresql://) URL".into())
}

fn validate_redis_url(v: &str) -> Result<String, String> {
    let v = v.trim();
    let parsed = url::Url::parse(v).map_err(|err| format!("not a valid URL: {err}"))?;
    match parsed.scheme() {
        "redis" | "rediss" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(v.to_owned()),
        "redis" | "rediss" => Err("the Redis URL has no host".into()),
        _ => Err("expected a redis:// or rediss:// URL".into()),
    }
}

fn validate_queue_prefix(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'));
    if ok { Ok(v.to_owned()) } else { Err("expected 1-64 characters from A-Z a-z 0-9 _ - : .".into()) }
}

fn validate_http_url(v: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(v.trim()).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("expected an http:// or https:// URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("the URL must not have a query or fragment".into());
    }
    Ok(parsed)
}

fn validate_endpoint(v: &str) -> Result<String, String> {
    let parsed = validate_http_url(v)?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("put credentials in USEREXPORT_S3_ACCESS_KEY_ID/_SECRET_ACCESS_KEY, not in the URL".into());
    }
    Ok(v.trim().trim_end_matches('/').to_owned())
}

fn validate_public_url(v: &str) -> Result<String, String> {
    validate_http_url(v)?;
    Ok(v.trim().trim_end_matches('/').to_owned())
}

/// S3 bucket naming rules: 3-63 of `a-z 0-9 . -`, starting and ending with a letter or digit.
fn validate_bucket(v: &str) -> Result<String, String> {
    let v = v.trim();
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&v.len())
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge_ok(v.chars().next())
        && edge_ok(v.chars().last())
        && !v.contains("..");
    if ok {
        Ok(v.to_owned())
    } else {
        Err("expected an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, \
             starting and ending with a letter or digit"
            .into())
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

// -------------------------------------------------------------------------------------------------
// Durations
// -------------------------------------------------------------------------------------------------

/// Parses durations like `500ms`, `30s`, `5m`, `1h`, `2d` and sums like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; expected e.g. 500ms, 30s, 5m, 1h or 2d".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; expected e.g. 500ms, 30s, 5m, 1h or 2d"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => {
                return Err(format!("`{text}`: missing unit after {number} (use ms, s, m, h or d)"));
            }
            other => {
                return Err(format!("`{text}`: unknown unit `{other}` (use ms, s, m, h or d)"));
            }
        };
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(|| format!("`{text}`: duration too large"))?;
    }
    Ok(total)
}

/// Formats a duration in the largest exact units, e.g. `1h30m`, `500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if d.subsec_millis() > 0 {
        out.push_str(&format!("{}ms", d.subsec_millis()));
    }
    out
}

// -------------------------------------------------------------------------------------------------
// Secrets
// -------------------------------------------------------------------------------------------------

/// Replaces the password of a URL's userinfo, and `password`/`secret`-like query parameters,
/// with `***`. Text that is not a URL is returned unchanged.
pub fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "pass", "secret", "token", "sslpassword"]
        .iter()
        .any(|s| name == *s || name.ends_with(&format!("_{s}")))
}

/// Returns the download-signing secret kept in `<data_dir>/signing.secret`, creating the
/// directory and a random 256-bit secret (hex, mode 0600) the first time.
///
/// Creation is atomic (temporary file + hard link), so processes starting together agree on one
/// secret. The returned bytes are the file's trimmed text, used as the HMAC key.
pub fn load_or_create_signing_secret(data_dir: &Path) -> Result<Vec<u8>, ConfigError> {
    let path = data_dir.join(SIGNING_SECRET_FILE);
    let fail = |reason: String| ConfigError::SigningSecret { path: path.clone(), reason };
    match std::fs::read_to_string(&path) {
        Ok(text) => return checked_secret(text).map_err(fail),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(fail(format!("cannot read: {err}"))),
    }
    std::fs::create_dir_all(data_dir).map_err(|err| fail(format!("cannot create {}: {err}", data_dir.display())))?;

    let secret: [u8; 32] = rand::random();
    let text: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let suffix: u64 = rand::random();
    let tmp = data_dir.join(format!(".{SIGNING_SECRET_FILE}.{suffix:016x}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    let linked = write().and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(text.into_bytes()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process won the race; use its secret.
            let text = std::fs::read_to_string(&path).map_err(|err| fail(format!("cannot read: {err}")))?;
            checked_secret(text).map_err(fail)
        }
        Err(err) => Err(fail(format!("cannot create: {err}"))),
    }
}

/// Writes `bytes` to a new file at `path` with mode 0600 (private keys, credentials), creating
/// parent directories. Overwrites an existing file atomically (temporary file + rename).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let suffix: u64 = rand::random();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{suffix:016x}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn checked_secret(text: String) -> Result<Vec<u8>, String> {
    let trimmed = text.trim();
    if trimmed.len() < MIN_SIGNING_SECRET_LEN {
        return Err(format!(
            "holds fewer than {MIN_SIGNING_SECRET_LEN} characters; delete it to generate a new secret"
        ));
    }
    Ok(trimmed.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::collections::{BTreeSet, HashMap};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name: &str| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn resolve(args: &ConfigArgs, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        args.resolve_with(&env_of(env))
    }

    fn resolve_with_file(args: &ConfigArgs, env: &[(&str, &str)], toml: &str) -> Result<Settings, ConfigError> {
        let file = FileConfig::parse(toml, Path::new("test.toml"))?;
        let env = env_of(env);
        args.resolve_layers(&Layers { env: &env, file, file_path: Some("test.toml".into()) })
    }

    fn error_of(env: &[(&str, &str)]) -> String {
        resolve(&ConfigArgs::default(), env).expect_err("expected a config error").to_string()
    }

    const S3_ENV: [(&str, &str); 3] = [
        ("USEREXPORT_S3_BUCKET", "exports"),
        ("USEREXPORT_S3_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("USEREXPORT_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMIsecretK7MDENG"),
    ];

    #[test]
    fn defaults_are_embedded_mode() {
        let s = ConfigArgs::default().resolve_with(&no_env).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.database_url, "sqlite://./data/userexport.db?mode=rwc");
        assert_eq!(s.queue, QueueSettings::Sqlite { url: s.database_url.clone(), prefix: "userexport".into() });
        assert_eq!(s.storage, StorageSettings::Local { dir: PathBuf::from("./data/files") });
        assert_eq!(s.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.log, "info");
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert_eq!(s.download_url_ttl, Duration::from_secs(86_400));
        assert_eq!(s.retention, Duration::from_secs(86_400));
        assert_eq!(s.worker_concurrency, 2);
        assert_eq!(s.lease, Duration::from_secs(60));
        assert_eq!(s.max_body_bytes, 10_485_760);
        assert_eq!(s.sweep_interval, Duration::from_secs(60));
        assert_eq!(s.pending_grace, Duration::from_secs(120));
        assert_eq!(s.queue_keep_done, 10_000);
        assert_eq!(s.signing_secret, None);
        assert!(s.is_embedded());
        assert!(s.is_sqlite());
    }

    #[test]
    fn file_is_overridden_by_env_which_is_overridden_by_flags() {
        let toml = "bind = \"127.0.0.1:1000\"\nlog = \"warn\"\nqueue_prefix = \"file\"\nworker_concurrency = 7\n";
        let env = [("USEREXPORT_BIND", "127.0.0.1:2000"), ("USEREXPORT_QUEUE_PREFIX", "env")];
        let cli = Cli::try_parse_from(["userexport", "--bind", "127.0.0.1:3000"]).unwrap();

        let s = resolve_with_file(&cli.config, &env, toml).unwrap();
        assert_eq!(s.bind.port(), 3000, "flag beats env and file");
        assert_eq!(s.queue, QueueSettings::Sqlite { url: s.database_url.clone(), prefix: "env".into() });
        assert_eq!(s.log, "warn", "file beats default");
        assert_eq!(s.worker_concurrency, 7);

        let s = resolve_with_file(&ConfigArgs::default(), &env, toml).unwrap();
        assert_eq!(s.bind.port(), 2000, "env beats file");

        let s = resolve_with_file(&ConfigArgs::default(), &[], toml).unwrap();
        assert_eq!(s.bind.port(), 1000, "file beats default");
        assert_eq!(s.public_url, "http://127.0.0.1:1000", "public URL follows the bind address");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let args = ConfigArgs { redis_url: Some(String::new()), ..ConfigArgs::default() };
        let s = resolve_with_file(&args, &[("USEREXPORT_LOG", "")], "log = \"debug\"").unwrap();
        assert!(matches!(s.queue, QueueSettings::Sqlite { .. }));
        assert_eq!(s.log, "debug");
    }

    #[test]
    fn config_file_is_read_from_flag_or_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userexport.toml");
        std::fs::write(&path, "bind = \"127.0.0.1:4321\"\n").unwrap();

        let cli = Cli::try_parse_from(["userexport", "--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(cli.config.resolve_with(&no_env).unwrap().bind.port(), 4321);

        let s = resolve(&ConfigArgs::default(), &[("USEREXPORT_CONFIG", path.to_str().unwrap())]).unwrap();
        assert_eq!(s.bind.port(), 4321);

        let missing = dir.path().join("missing.toml");
        let args = ConfigArgs { config: Some(missing.clone()), ..ConfigArgs::default() };
        let err = args.resolve_with(&no_env).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn production_settings() {
        let env = [
            ("USEREXPORT_BIND", "0.0.0.0:9000"),
            ("USEREXPORT_DATABASE_URL", "postgres://app:pw@db:5432/userexport"),
            ("USEREXPORT_REDIS_URL", "rediss://:rpw@cache:6380/0"),
            ("USEREXPORT_QUEUE_PREFIX", "ux:prod"),
            ("USEREXPORT_S3_ENDPOINT", "https://s3.example.com/"),
            ("USEREXPORT_S3_REGION", "eu-west-1"),
            ("USEREXPORT_S3_FORCE_PATH_STYLE", "false"),
            ("USEREXPORT_LOG_FORMAT", "json"),
            ("USEREXPORT_DOWNLOAD_URL_TTL", "7d"),
            ("USEREXPORT_RETENTION", "8d"),
            ("USEREXPORT_WORKER_CONCURRENCY", "8"),
            ("USEREXPORT_LEASE", "2m"),
            ("USEREXPORT_MAX_BODY_BYTES", "1024"),
            ("USEREXPORT_SWEEP_INTERVAL", "500ms"),
            ("USEREXPORT_PENDING_GRACE", "3s"),
            ("USEREXPORT_QUEUE_KEEP_DONE", "100"),
            S3_ENV[0],
            S3_ENV[1],
            S3_ENV[2],
        ];
        let s = resolve(&ConfigArgs::default(), &env).unwrap();
        assert!(!s.is_embedded());
        assert!(!s.is_sqlite());
        assert_eq!(s.public_url, "http://127.0.0.1:9000", "wildcard bind maps to loopback");
        assert_eq!(
            s.queue,
            QueueSettings::Redis { url: "rediss://:rpw@cache:6380/0".into(), prefix: "ux:prod".into() }
        );
        assert_eq!(
            s.storage,
            StorageSettings::S3 {
                endpoint: Some("https://s3.example.com".into()),
                bucket: "exports".into(),
                region: "eu-west-1".into(),
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMIsecretK7MDENG".into(),
                force_path_style: false,
            }
        );
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.download_url_ttl, MAX_DOWNLOAD_URL_TTL);
        assert_eq!(s.worker_concurrency, 8);
        assert_eq!(s.lease, Duration::from_secs(120));
        assert_eq!(s.max_body_bytes, 1024);
        assert_eq!(s.sweep_interval, Duration::from_millis(500));
        assert_eq!(s.pending_grace, Duration::from_secs(3));
        assert_eq!(s.queue_keep_done, 100);
    }

    #[test]
    fn postgres_without_redis_queues_in_sqlite_under_data_dir() {
        let s = resolve(
            &ConfigArgs::default(),
            &[("USEREXPORT_DATABASE_URL", "postgresql://db/x"), ("USEREXPORT_DATA_DIR", "/var/lib/ux/")],
        )
        .unwrap();
        assert_eq!(
            s.queue,
            QueueSettings::Sqlite { url: "sqlite:///var/lib/ux/queue.db?mode=rwc".into(), prefix: "userexport".into() }
        );
        assert_eq!(s.storage, StorageSettings::Local { dir: PathBuf::from("/var/lib/ux/files") });
        assert!(!s.is_embedded());
    }

    #[test]
    fn flag_names_parse_and_force_path_style_needs_no_value() {
        let cli = Cli::try_parse_from([
            "userexport",
            "--data-dir",
            "/srv/ux",
            "--s3-bucket",
            "b-1.x",
            "--s3-access-key-id",
            "id",
            "--s3-secret-access-key",
            "secret",
            "--s3-force-path-style",
            "--signing-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap();
        let s = cli.config.resolve_with(&no_env).unwrap();
        assert!(matches!(s.storage, StorageSettings::S3 { force_path_style: true, .. }));
        assert_eq!(s.database_url, "sqlite:///srv/ux/userexport.db?mode=rwc");
        assert_eq!(s.signing_secret().unwrap(), b"0123456789abcdef0123456789abcdef".to_vec());
    }

    #[test]
    fn every_setting_has_matching_flag_env_and_file_names() {
        let command = Cli::command();
        let from_clap: BTreeSet<(String, String)> = command
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_str()?.to_owned();
                Some((format!("--{}", arg.get_long()?), env))
            })
            .collect();
        let mut expected: BTreeSet<(String, String)> =
            SETTINGS.iter().map(|k| (k.flag.to_owned(), k.env.to_owned())).collect();
        expected.insert((CONFIG.flag.to_owned(), CONFIG.env.to_owned()));
        assert_eq!(from_clap, expected);
        for k in SETTINGS {
            assert_eq!(format!("USEREXPORT_{}", k.file.to_ascii_uppercase()), k.env);
            assert_eq!(format!("--{}", k.file.replace('_', "-")), k.flag);
        }
        let secret_or_url = |long: &str| {
            SETTINGS.iter().any(|k| k.flag == format!("--{long}") && (k.secret || k.env.ends_with("_URL")))
        };
        for arg in command.get_arguments() {
            let long = arg.get_long().unwrap_or_default();
            if secret_or_url(long) && long != "public-url" {
                assert!(arg.is_hide_env_values_set(), "--{long} must hide its env value");
            }
        }
    }

    #[test]
    fn invalid_single_values_name_the_setting_and_value() {
        let cases: &[(&str, &str, &str)] = &[
            ("USEREXPORT_BIND", "localhost:80", "expected an IP address and port"),
            ("USEREXPORT_DATABASE_URL", "mysql://db/x", "expected a sqlite:// or postgres://"),
            ("USEREXPORT_DATABASE_URL", "sqlite://", "names no file"),
            ("USEREXPORT_DATABASE_URL", "postgres://db:notaport/x", "not a valid PostgreSQL URL"),
            ("USEREXPORT_REDIS_URL", "http://cache:6379", "expected a redis:// or rediss:// URL"),
            ("USEREXPORT_REDIS_URL", "cache:6379", "expected a redis:// or rediss:// URL"),
            ("USEREXPORT_QUEUE_PREFIX", "has space", "expected 1-64 characters"),
            ("USEREXPORT_PUBLIC_URL", "ftp://files", "expected an http:// or https:// URL"),
            ("USEREXPORT_PUBLIC_URL", "not a url", "not a URL"),
            ("USEREXPORT_LOG", "info,userexport=loud", "not a tracing filter"),
            ("USEREXPORT_LOG_FORMAT", "xml", "expected `pretty` or `json`"),
            ("USEREXPORT_DOWNLOAD_URL_TTL", "8d", "at most 7d"),
            ("USEREXPORT_DOWNLOAD_URL_TTL", "0s", "greater than zero"),
            ("USEREXPORT_RETENTION", "0h", "greater than zero"),
            ("USEREXPORT_LEASE", "60", "missing unit"),
            ("USEREXPORT_SWEEP_INTERVAL", "1w", "unknown unit `w`"),
            ("USEREXPORT_PENDING_GRACE", "0s", "greater than zero"),
            ("USEREXPORT_QUEUE_KEEP_DONE", "lots", "whole number"),
            ("USEREXPORT_WORKER_CONCURRENCY", "0", "at least 1"),
            ("USEREXPORT_WORKER_CONCURRENCY", "two", "positive whole number"),
            ("USEREXPORT_MAX_BODY_BYTES", "-1", "positive whole number"),
        ];
        for (name, value, reason) in cases {
            let err = error_of(&[(name, value)]);
            assert!(err.starts_with(&format!("{name}: invalid value `{value}`")), "{err}");
            assert!(err.contains(&format!("(from environment {name})")), "{err}");
            assert!(err.contains(reason), "{name}={value}: {err}");
        }
    }

    #[test]
    fn invalid_s3_values() {
        let with = |extra: (&'static str, &'static str)| {
            let mut env = S3_ENV.to_vec();
            env.push(extra);
            error_of(&env)
        };
        let err = with(("USEREXPORT_S3_ENDPOINT", "s3.example.com"));
        assert!(err.starts_with("USEREXPORT_S3_ENDPOINT: invalid value `s3.example.com`"), "{err}");
        let err = with(("USEREXPORT_S3_ENDPOINT", "http://user:pw@s3.example.com"));
        assert!(err.contains("`http://user:***@s3.example.com`") && !err.contains("pw@"), "{err}");
        let err = with(("USEREXPORT_S3_FORCE_PATH_STYLE", "maybe"));
        assert!(
            err.starts_with("USEREXPORT_S3_FORCE_PATH_STYLE: invalid value `maybe`") && err.contains("true or false"),
            "{err}"
        );
        let err = with(("USEREXPORT_S3_REGION", "eu west"));
        assert!(err.starts_with("USEREXPORT_S3_REGION: invalid value `eu west`"), "{err}");
        let err = error_of(&[("USEREXPORT_S3_BUCKET", "Bad_Bucket"), S3_ENV[1], S3_ENV[2]]);
        assert!(err.starts_with("USEREXPORT_S3_BUCKET: invalid value `Bad_Bucket`"), "{err}");
    }

    #[test]
    fn s3_settings_must_come_together() {
        let err = error_of(&[S3_ENV[0]]);
        assert!(err.contains("USEREXPORT_S3_BUCKET is set (exports)"), "{err}");
        assert!(err.contains("USEREXPORT_S3_ACCESS_KEY_ID and USEREXPORT_S3_SECRET_ACCESS_KEY are not"), "{err}");

        let err = error_of(&[S3_ENV[0], S3_ENV[1]]);
        assert!(err.contains("USEREXPORT_S3_SECRET_ACCESS_KEY is not"), "{err}");

        let err = error_of(&[S3_ENV[1], S3_ENV[2]]);
        assert!(
            err.starts_with(
                "USEREXPORT_S3_ACCESS_KEY_ID, USEREXPORT_S3_SECRET_ACCESS_KEY set but USEREXPORT_S3_BUCKET is not"
            ),
            "{err}"
        );
        assert!(!err.contains("wJalr"), "secret leaked: {err}");

        let err = error_of(&[("USEREXPORT_S3_ENDPOINT", "http://127.0.0.1:9000")]);
        assert!(err.starts_with("USEREXPORT_S3_ENDPOINT set but USEREXPORT_S3_BUCKET is not"), "{err}");
    }

    #[test]
    fn retention_must_cover_download_ttl() {
        let err = error_of(&[("USEREXPORT_RETENTION", "1h")]);
        assert!(err.starts_with("USEREXPORT_RETENTION (1h) is shorter than USEREXPORT_DOWNLOAD_URL_TTL (1d)"), "{err}");
    }

    #[test]
    fn errors_never_echo_secrets() {
        let err = error_of(&[("USEREXPORT_SIGNING_SECRET", "short-secret")]);
        assert_eq!(
            err,
            "USEREXPORT_SIGNING_SECRET: invalid value `<redacted>` (from environment USEREXPORT_SIGNING_SECRET): \
             must be at least 32 characters long"
        );
        let err = error_of(&[("USEREXPORT_DATABASE_URL", "mysql://root:hunter2@db/x")]);
        assert!(err.contains("`mysql://root:***@db/x`") && !err.contains("hunter2"), "{err}");
        let err = error_of(&[("USEREXPORT_REDIS_URL", "redis://:hunter2@")]);
        assert!(!err.contains("hunter2"), "{err}");

        let toml = "s3_secret_access_key = 12345678\n";
        let err = FileConfig::parse(toml, Path::new("c.toml")).unwrap_err().to_string();
        assert_eq!(err, "config file c.toml: line 1: invalid value for `s3_secret_access_key` (value not shown)");
    }

    #[test]
    fn file_errors_name_the_file_and_line() {
        let err = FileConfig::parse("log = \"info\"\nbnid = \"x\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.starts_with("config file c.toml: line 2: unknown field `bnid`"), "{err}");
        let err = FileConfig::parse("worker_concurrency = \"2\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.starts_with("config file c.toml: line 1: invalid type"), "{err}");

        let err = resolve_with_file(&ConfigArgs::default(), &[], "lease = \"soon\"\n").unwrap_err().to_string();
        assert!(err.starts_with("USEREXPORT_LEASE: invalid value `soon` (from test.toml key `lease`)"), "{err}");
    }

    #[test]
    fn flag_origin_is_reported() {
        let args = ConfigArgs { bind: Some("nope".into()), ..ConfigArgs::default() };
        let err = args.resolve_with(&no_env).unwrap_err().to_string();
        assert!(err.starts_with("USEREXPORT_BIND: invalid value `nope` (from flag --bind)"), "{err}");
        // A value clap took from the environment is attributed to the environment.
        let err = resolve(&args, &[("USEREXPORT_BIND", "nope")]).unwrap_err().to_string();
        assert!(err.contains("(from environment USEREXPORT_BIND)"), "{err}");
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let env = [
            ("USEREXPORT_DATABASE_URL", "postgres://app:dbpass@db/x?sslpassword=sslvalue"),
            ("USEREXPORT_REDIS_URL", "redis://u:redispass@cache"),
            ("USEREXPORT_SIGNING_SECRET", "signsecret-signsecret-signsecret-0"),
            S3_ENV[0],
            S3_ENV[1],
            S3_ENV[2],
        ];
        let s = resolve(&ConfigArgs::default(), &env).unwrap();
        let args = ConfigArgs {
            database_url: Some(env[0].1.into()),
            redis_url: Some(env[1].1.into()),
            signing_secret: Some(env[2].1.into()),
            s3_secret_access_key: Some(S3_ENV[2].1.into()),
            ..ConfigArgs::default()
        };
        for text in [format!("{s:?}"), format!("{s:#?}"), format!("{args:?}")] {
            for secret in ["dbpass", "sslvalue", "redispass", "signsecret", "wJalr"] {
                assert!(!text.contains(secret), "{secret} leaked in {text}");
            }
            assert!(text.contains(REDACTED) && text.contains("***"), "{text}");
        }
    }

    #[test]
    fn redacts_urls() {
        assert_eq!(redact_url("postgres://app:pw@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact_url("redis://:pw@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(redact_url("rediss://user@cache"), "rediss://user@cache");
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=pw&sslmode=require#frag"),
            "postgres://db/x?user=a&password=***&sslmode=require#frag"
        );
        assert_eq!(redact_url("sqlite://./data/u.db?mode=rwc"), "sqlite://./data/u.db?mode=rwc");
        assert_eq!(redact_url("a:b@c"), "a:b@c");
        assert_eq!(redact_url("http://u:p@h@x/y"), "http://u:***@x/y");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 2d "), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "10", "1.5h", "-1s", "1 h", "3y", "99999999999999999999s", "18446744073709551615d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for d in ["1d2h3m4s5ms", "7d", "250ms"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn signing_secret_is_created_once_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested").join("data");
        let first = load_or_create_signing_secret(&data_dir).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.iter().all(u8::is_ascii_hexdigit));
        assert_eq!(load_or_create_signing_secret(&data_dir).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data_dir.join(SIGNING_SECRET_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(&data_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(SIGNING_SECRET_FILE)]);

        let settings = resolve(&ConfigArgs::default(), &[("USEREXPORT_DATA_DIR", data_dir.to_str().unwrap())]).unwrap();
        assert_eq!(settings.signing_secret().unwrap(), first);

        std::fs::write(data_dir.join(SIGNING_SECRET_FILE), "short\n").unwrap();
        let err = load_or_create_signing_secret(&data_dir).unwrap_err().to_string();
        assert!(err.contains("delete it to generate a new secret") && !err.contains("short\n"), "{err}");
    }

    #[test]
    fn concurrent_creation_agrees_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create_signing_secret(&path).unwrap())
            })
            .collect();
        let secrets: BTreeSet<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(secrets.len(), 1);
    }

    #[test]
    fn ensure_dirs_creates_data_and_files_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("d");
        let s = resolve(&ConfigArgs::default(), &[("USEREXPORT_DATA_DIR", data_dir.to_str().unwrap())]).unwrap();
        s.ensure_dirs().unwrap();
        assert!(data_dir.join("files").is_dir());
    }

    #[test]
    fn rate_limit_is_off_by_default_and_takes_a_positive_rate() {
        assert_eq!(resolve(&ConfigArgs::default(), &[]).unwrap().rate_limit, None);
        let s = resolve(&ConfigArgs::default(), &[("USEREXPORT_RATE_LIMIT", "50")]).unwrap();
        assert_eq!(s.rate_limit.map(|n| n.get()), Some(50));
        assert_eq!(resolve(&ConfigArgs::default(), &[("USEREXPORT_RATE_LIMIT", "off")]).unwrap().rate_limit, None);
        let s = resolve_with_file(&ConfigArgs::default(), &[], "rate_limit = 7").unwrap();
        assert_eq!(s.rate_limit.map(|n| n.get()), Some(7));
        let err = resolve(&ConfigArgs::default(), &[("USEREXPORT_RATE_LIMIT", "fast")]).unwrap_err().to_string();
        assert!(err.contains("USEREXPORT_RATE_LIMIT"), "{err}");
    }

    #[test]
    fn worker_metrics_bind_is_off_by_default_and_takes_an_address_or_off() {
        assert_eq!(resolve(&ConfigArgs::default(), &[]).unwrap().worker_metrics_bind, None);
        let s = resolve(&ConfigArgs::default(), &[("USEREXPORT_WORKER_METRICS_BIND", "0.0.0.0:9090")]).unwrap();
        assert_eq!(s.worker_metrics_bind, Some("0.0.0.0:9090".parse().unwrap()));
        for off in ["off", "OFF", "none", "disabled"] {
            let s = resolve(&ConfigArgs::default(), &[("USEREXPORT_WORKER_METRICS_BIND", off)]).unwrap();
            assert_eq!(s.worker_metrics_bind, None, "{off}");
        }
        let s = resolve_with_file(&ConfigArgs::default(), &[], "worker_metrics_bind = \"127.0.0.1:9091\"").unwrap();
        assert_eq!(s.worker_metrics_bind, Some("127.0.0.1:9091".parse().unwrap()));
        let e = error_of(&[("USEREXPORT_WORKER_METRICS_BIND", "9090")]);
        assert!(e.contains("USEREXPORT_WORKER_METRICS_BIND") && e.contains("`9090`") && e.contains("off"), "{e}");
    }

    #[test]
    fn example_config_lists_every_setting_with_its_default() {
        let text = include_str!("../config.example.toml");
        let file = FileConfig::parse(text, Path::new("config.example.toml")).unwrap();
        let table: toml::Table = toml::from_str(text).unwrap();
        let keys: BTreeSet<&str> = table.keys().map(String::as_str).collect();
        let active: BTreeSet<&str> = SETTINGS.iter().map(|k| k.file).collect();
        // Settings without a fixed default appear commented out (`# key = …`); all others are set.
        let commented: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# ")?.split_once(" = ").map(|(k, _)| k))
            .filter(|k| active.contains(k))
            .collect();
        assert_eq!(keys.union(&commented).copied().collect::<BTreeSet<_>>(), active);
        assert!(keys.is_disjoint(&commented));

        // The values given are the defaults: resolving the file equals resolving nothing.
        let env = env_of(&[]);
        let from_file = ConfigArgs::default()
            .resolve_layers(&Layers { env: &env, file, file_path: Some("config.example.toml".into()) })
            .unwrap();
        assert_eq!(from_file, ConfigArgs::default().resolve_with(&no_env).unwrap());
    }
}
