//! The one error-code table of the service.
//!
//! Every error the service can report has a [`Code`]. A code fixes the HTTP status, the error type and
//! the stable snake_case name; dialects translate the same code into their own envelope
//! (`{message, code, type, link}` natively, `{"error": {name, reason, …}}` for Authgear,
//! `{statusCode, error, message, errorCode}` for Auth0, `{errorCode, errorDescription, errorMessage}`
//! for Descope). A failed export stores the same [`ErrorObject`] on its task.

use serde::{Deserialize, Serialize};

/// Broad class of an error, as in meilisearch's `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The caller sent something we refuse.
    InvalidRequest,
    /// Credentials are missing or wrong.
    Auth,
    /// Something failed on our side.
    Internal,
    /// A dependency (database, queue, object store) is unavailable.
    System,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = ($status:expr, $ty:ident, $name:literal, $msg:literal) ),+ $(,)?) => {
        /// Every error code of the service. See the module docs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code { $( $(#[$doc])* $variant ),+ }

        impl Code {
            /// All codes, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// HTTP status this code is answered with.
            pub const fn http_status(self) -> u16 { match self { $(Code::$variant => $status),+ } }
            /// The error class.
            pub const fn error_type(self) -> ErrorType { match self { $(Code::$variant => ErrorType::$ty),+ } }
            /// Stable snake_case name, used as `code` in native errors.
            pub const fn name(self) -> &'static str { match self { $(Code::$variant => $name),+ } }
            /// Default human message.
            pub const fn default_message(self) -> &'static str { match self { $(Code::$variant => $msg),+ } }
        }
    };
}

codes! {
    /// The body is not JSON, or not UTF-8.
    MalformedJson = (400, InvalidRequest, "malformed_json", "the request body is not valid JSON"),
    /// The body is JSON but does not match the schema (unknown key, wrong type, missing field).
    InvalidRequestBody = (400, InvalidRequest, "invalid_request_body", "invalid request body"),
    /// A field pointer is not a valid RFC 6901 JSON pointer (or Auth0 path).
    InvalidFieldPointer = (400, InvalidRequest, "invalid_field_pointer", "a field pointer is invalid"),
    /// Two fields would get the same header name.
    NonUniqueFieldNames = (400, InvalidRequest, "non_unique_field_names", "field names are not unique"),
    /// A query string parameter is invalid.
    InvalidQuery = (400, InvalidRequest, "invalid_query", "invalid query parameters"),
    /// A required argument is missing.
    MissingArgument = (400, InvalidRequest, "missing_argument", "a required argument is missing"),
    /// No or unusable credentials.
    Unauthorized = (401, Auth, "unauthorized", "missing or invalid credentials"),
    /// Valid credentials without the right to do this.
    Forbidden = (403, Auth, "forbidden", "not allowed"),
    /// A download URL was tampered with or has expired.
    InvalidDownloadSignature = (403, Auth, "invalid_download_signature", "the download link is invalid or has expired"),
    /// No export task with this id in this project.
    TaskNotFound = (404, InvalidRequest, "task_not_found", "task not found"),
    /// No user with this id or login id in this project.
    UserNotFound = (404, InvalidRequest, "user_not_found", "user not found"),
    /// The route does not exist.
    RouteNotFound = (404, InvalidRequest, "route_not_found", "no such route"),
    /// The HTTP method is not allowed on this route.
    MethodNotAllowed = (405, InvalidRequest, "method_not_allowed", "method not allowed"),
    /// The task is in a state that does not allow this operation (e.g. cancel a completed task).
    TaskStateConflict = (409, InvalidRequest, "task_state_conflict", "the task cannot change from its current status"),
    /// A login id or user id already exists.
    DuplicateUser = (409, InvalidRequest, "duplicate_user", "a user with this login id already exists"),
    /// The body is larger than the limit.
    PayloadTooLarge = (413, InvalidRequest, "payload_too_large", "the request body is too large"),
    /// The content type is not `application/json`.
    UnsupportedMediaType = (415, InvalidRequest, "unsupported_media_type", "the request content type must be application/json"),
    /// An `Idempotency-Key` was reused with a different body.
    IdempotencyKeyReused = (422, InvalidRequest, "idempotency_key_reused", "the idempotency key was used with a different request"),
    /// Too many requests.
    RateLimited = (429, InvalidRequest, "rate_limited", "too many requests"),
    /// The export has passed its retention period.
    TaskExpired = (410, InvalidRequest, "task_expired", "the export has expired and its file was deleted"),
    /// The export was cancelled.
    TaskCancelled = (409, InvalidRequest, "task_cancelled", "the export was cancelled"),
    /// The export failed on our side.
    ExportFailed = (500, Internal, "export_failed", "the export failed"),
    /// An unexpected internal error.
    Internal = (500, Internal, "internal", "an unexpected error occurred"),
    /// The database, queue or object store is unavailable.
    ServiceUnavailable = (503, System, "service_unavailable", "a backing service is unavailable"),
}

impl Code {
    /// Documentation link for this code.
    pub fn link(self) -> String {
        format!("https://github.com/userexport/userexport/blob/main/docs/errors.md#{}", self.name())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Code {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Code::ALL.iter().copied().find(|c| c.name() == s).ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

/// A string that names no [`Code`].
#[derive(Debug, thiserror::Error)]
#[error("unknown error code `{0}`")]
pub struct UnknownCode(pub String);

/// The error object stored on a failed task and returned by the native API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Human-readable message.
    pub message: String,
    /// The [`Code`] name.
    pub code: String,
    /// The [`ErrorType`].
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    /// Documentation link.
    pub link: String,
}

impl ErrorObject {
    /// An error object for `code` with a specific message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { message: message.into(), code: code.name().to_owned(), error_type: code.error_type(), link: code.link() }
    }

    /// The code, if the stored name is still known.
    pub fn code(&self) -> Option<Code> {
        self.code.parse().ok()
    }
}

/// Implemented by every error that can cross the API boundary.
pub trait ErrorCode {
    /// The table entry for this error.
    fn error_code(&self) -> Code;
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_code_is_documented_where_its_link_points() {
        let doc = include_str!("../../../docs/errors.md");
        for code in Code::ALL {
            assert!(doc.contains(&format!("\n## {}\n", code.name())), "docs/errors.md lacks `## {}`", code.name());
        }
    }

    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.name()), "duplicate code name {}", c.name());
            assert_eq!(c.name().parse::<Code>().unwrap(), *c);
            assert!((400..600).contains(&c.http_status()));
        }
    }

    #[test]
    fn error_object_carries_code_and_type() {
        let e = ErrorObject::new(Code::TaskNotFound, "nope");
        assert_eq!(e.code(), Some(Code::TaskNotFound));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "invalid_request");
        assert_eq!(v["code"], "task_not_found");
    }
}
