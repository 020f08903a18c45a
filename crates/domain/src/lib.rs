//! Domain model of userexport. No I/O lives here.
//!
//! - [`ids`]: typed, prefixed identifiers (`ProjectId`, `UserId`, `TaskId`, …).
//! - [`pointer`]: RFC 6901 [`JsonPointer`] (and Auth0 dotted paths translated into pointers).
//! - [`user`]: the internal [`User`] and its Authgear / Auth0 / Descope JSON views.
//! - [`filter`]: [`UserFilter`], shared by search and filtered exports.
//! - [`spec`]: [`ExportFormat`] and the always-valid [`ExportSpec`].
//! - [`task`]: [`ExportTask`] and its [`TaskStatus`] lifecycle.
//! - [`error`]: the one error-code table ([`Code`]) and the stored [`ErrorObject`].
//! - [`fake`]: deterministic fake users.

pub mod error;
pub mod fake;
pub mod filter;
pub mod ids;
pub mod pointer;
pub mod spec;
pub mod task;
pub mod user;

pub use error::{Code, ErrorCode, ErrorObject, ErrorType};
pub use filter::{SortField, SortValue, TestUsers, UserFilter, UserSort};
pub use ids::{IdError, JobAlias, ProjectId, SigningKeyId, TaskId, UserId};
pub use pointer::{JsonPointer, PointerError};
pub use spec::{ExportField, ExportFormat, ExportSpec, ExportSpecBuilder, SpecError};
pub use task::{Dialect, ExportTask, TaskStatus};
pub use user::{Address, Authenticators, User, UserStatus, UserTenant, UserView};

/// A project (tenant): the scope of users, keys and tasks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Project {
    /// Project id.
    pub id: ProjectId,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: chrono::DateTime<chrono::Utc>,
}
