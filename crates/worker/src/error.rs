//! Worker errors, classified into transient (retry) and permanent (fail the task).

use userexport_domain::{Code, ErrorCode};
use userexport_export::EncodeError;
use userexport_storage::StorageError;
use userexport_store::StoreError;

/// Anything that can stop an export attempt.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Database failure.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Object store failure.
    #[error("object store: {0}")]
    Storage(#[from] StorageError),
    /// Encoder failure.
    #[error("encoding: {0}")]
    Encode(#[from] EncodeError),
    /// The uploader task stopped taking parts (its own error is reported instead).
    #[error("the uploader stopped")]
    UploaderGone,
    /// The uploaded object does not have the size we wrote.
    #[error("uploaded object has {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// Bytes we sent.
        expected: u64,
        /// Bytes the store reports.
        actual: u64,
    },
    /// A bug or an unexpected state.
    #[error("internal: {0}")]
    Internal(String),
}

impl WorkerError {
    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            WorkerError::Store(e) => !matches!(e, StoreError::Corrupt(_) | StoreError::NotFound),
            WorkerError::Storage(e) => e.is_transient(),
            WorkerError::SizeMismatch { .. } | WorkerError::UploaderGone => true,
            WorkerError::Encode(_) | WorkerError::Internal(_) => false,
        }
    }
}

impl ErrorCode for WorkerError {
    fn error_code(&self) -> Code {
        match self {
            WorkerError::Store(_) | WorkerError::Storage(_) if self.is_transient() => Code::ServiceUnavailable,
            _ => Code::ExportFailed,
        }
    }
}
