//! The storage error type.

use userexport_domain::{Code, ErrorCode};

/// Errors of the object stores.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store is unreachable or overloaded (5xx, 408, 429, timeout, connection); retrying may help.
    #[error("object storage is unavailable during {op}: {message}")]
    Transient {
        /// The operation that failed, e.g. `upload_part`.
        op: &'static str,
        /// What went wrong (never contains credentials or signatures).
        message: String,
    },
    /// The store refused the request (other 4xx, e.g. `EntityTooSmall`, `AccessDenied`); retrying will not help.
    #[error("object storage rejected {op}: {message}")]
    Permanent {
        /// The operation that failed, e.g. `complete_multipart_upload`.
        op: &'static str,
        /// What went wrong (never contains credentials or signatures).
        message: String,
    },
    /// The object key is not acceptable (see [`crate::validate_key`]).
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The store was configured with invalid values (base URL, presign expiry, …).
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// A local download URL has expired.
    #[error("the download link has expired")]
    Expired,
    /// A local download URL was tampered with.
    #[error("the download link signature is invalid")]
    BadSignature,
    /// A local file operation failed.
    #[error("local storage I/O error during {op}: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Transient { .. } => true,
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> StorageError {
        move |source| StorageError::Io { op, source }
    }
}

impl ErrorCode for StorageError {
    fn error_code(&self) -> Code {
        match self {
            StorageError::Transient { .. } | StorageError::Io { .. } => Code::ServiceUnavailable,
            StorageError::Expired | StorageError::BadSignature => Code::InvalidDownloadSignature,
            StorageError::Permanent { .. } | StorageError::InvalidKey { .. } | StorageError::Config(_) => {
                Code::ExportFailed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_transience() {
        let t = StorageError::Transient { op: "head", message: "503".into() };
        assert!(t.is_transient());
        assert_eq!(t.error_code(), Code::ServiceUnavailable);
        let p = StorageError::Permanent { op: "complete", message: "EntityTooSmall".into() };
        assert!(!p.is_transient());
        assert_eq!(p.error_code(), Code::ExportFailed);
        assert_eq!(StorageError::Expired.error_code(), Code::InvalidDownloadSignature);
        assert_eq!(StorageError::BadSignature.error_code(), Code::InvalidDownloadSignature);
        assert_eq!(StorageError::BadSignature.error_code().http_status(), 403);
        let io = StorageError::Io { op: "write", source: std::io::Error::from(std::io::ErrorKind::TimedOut) };
        assert!(io.is_transient());
        let io = StorageError::Io { op: "write", source: std::io::Error::from(std::io::ErrorKind::PermissionDenied) };
        assert!(!io.is_transient());
    }
}
