//! The store's error type.

use std::sync::Arc;

use sea_orm::{DbErr, RuntimeErr};
use userexport_domain::{Code, ErrorCode};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A user id or login id already exists (in the project or twice in one batch); holds the value.
    #[error("duplicate user: `{0}` already exists")]
    Duplicate(String),
    /// An idempotency key was reused with a different request.
    #[error("the idempotency key was already used with a different request")]
    IdempotencyConflict,
    /// The referenced row does not exist (e.g. an unknown `before` cursor in [`crate::TaskQuery`]).
    #[error("not found")]
    NotFound,
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A stored row cannot be turned back into a domain value.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The URL names no supported database.
    #[error("unsupported database url: expected postgres://… or sqlite://…")]
    UnsupportedUrl,
}

impl StoreError {
    /// True when the database is unreachable or overloaded (retrying later may help).
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Db(e) = self else { return false };
        match e {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => matches!(
                s.as_ref(),
                sea_orm::sqlx::Error::Io(_)
                    | sea_orm::sqlx::Error::PoolTimedOut
                    | sea_orm::sqlx::Error::PoolClosed
                    | sea_orm::sqlx::Error::WorkerCrashed
                    | sea_orm::sqlx::Error::Tls(_)
            ),
            _ => false,
        }
    }
}

impl ErrorCode for StoreError {
    fn error_code(&self) -> Code {
        match self {
            StoreError::Duplicate(_) => Code::DuplicateUser,
            StoreError::IdempotencyConflict => Code::IdempotencyKeyReused,
            StoreError::NotFound => Code::TaskNotFound,
            e if e.is_unavailable() => Code::ServiceUnavailable,
            _ => Code::Internal,
        }
    }
}

/// Wraps a raw sqlx error (COPY path) as a sea-orm execution error.
pub(crate) fn from_sqlx(e: sea_orm::sqlx::Error) -> StoreError {
    StoreError::Db(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e))))
}

/// True when `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}
