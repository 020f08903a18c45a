//! The queue error type.

use std::time::Duration;

use userexport_domain::{Code, ErrorCode};

/// An error talking to the queue backend or running workers.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A Redis command failed or Redis is unreachable.
    #[error("redis queue: {0}")]
    Redis(#[from] redis::RedisError),
    /// The apalis Redis backend failed.
    #[error("redis queue backend: {0}")]
    RedisBackend(#[from] apalis_redis::Error),
    /// A SQLite query failed or the file cannot be opened.
    #[error("sqlite queue: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// The apalis SQLite backend failed.
    #[error("sqlite queue backend: {0}")]
    SqliteBackend(#[from] apalis_sqlite::Error),
    /// apalis-sqlite's migrations failed.
    #[error("sqlite queue migrations: {0}")]
    Migrate(String),
    /// Pushing a job failed.
    #[error("enqueue failed: {0}")]
    Enqueue(String),
    /// The backend did not answer in time.
    #[error("queue backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The server cannot host the queue (e.g. Redis older than 6.2).
    #[error("unsupported queue server: {0}")]
    Unsupported(String),
    /// Invalid configuration or worker options.
    #[error("invalid queue configuration: {0}")]
    Config(String),
    /// The workers stopped although no shutdown was requested, or failed while draining.
    #[error("queue workers stopped: {0}")]
    WorkersStopped(String),
}

impl ErrorCode for QueueError {
    fn error_code(&self) -> Code {
        match self {
            QueueError::Config(_) => Code::Internal,
            _ => Code::ServiceUnavailable,
        }
    }
}
