//! The one API error type and its per-dialect envelopes.
//!
//! Every failure a handler, extractor or middleware produces is an [`ApiError`]: a [`Code`] from the
//! domain table, a message, optional structured `info`, and the [`ApiDialect`] whose envelope it is
//! rendered in. The dialect comes from the request path ([`ApiDialect::from_path`]) so that extractor
//! errors, unknown routes, wrong methods and caught panics all answer in the caller's own format.
//!
//! Internal errors (HTTP 500) answer with an opaque message; their full cause chain is logged once when
//! the response is rendered.

use std::fmt;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};
use userexport_domain::{Code, ErrorCode};

/// Which wire contract a request speaks; decides the error envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiDialect {
    /// `/v1/…`, ops and downloads: `{"message", "code", "type", "link"}`.
    Native,
    /// `/_api/admin/…`: `{"error": {"name", "reason", "message", "code", "info"?}}`.
    Authgear,
    /// `/api/v2/…`, `/oauth/…`: `{"statusCode", "error", "message", "errorCode"}`.
    Auth0,
    /// `/v1/mgmt/…`, `/v2/mgmt/…`: `{"errorCode", "errorDescription", "errorMessage"}`.
    Descope,
}

/// True when `path` is `prefix` or continues it with a `/`.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl ApiDialect {
    /// The dialect of a request path.
    pub fn from_path(path: &str) -> Self {
        if under(path, "/_api/admin") {
            Self::Authgear
        } else if under(path, "/api/v2") || under(path, "/oauth") {
            Self::Auth0
        } else if under(path, "/v1/mgmt") || under(path, "/v2/mgmt") {
            Self::Descope
        } else {
            Self::Native
        }
    }

    /// The snake_case name (also the metrics label).
    pub fn as_str(self) -> &'static str {
        self.task_dialect().as_str()
    }

    /// The dialect recorded on tasks created through this API.
    pub fn task_dialect(self) -> userexport_domain::Dialect {
        use userexport_domain::Dialect;
        match self {
            Self::Native => Dialect::Native,
            Self::Authgear => Dialect::Authgear,
            Self::Auth0 => Dialect::Auth0,
            Self::Descope => Dialect::Descope,
        }
    }
}

/// Auth0 `errorCode`s that the [`Code`] table cannot derive (same code, different meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth0ErrorCode {
    /// A malformed path parameter (400), e.g. a job id that is not `job_` + 16 characters.
    InvalidUri,
    /// A `connection_id` that names no connection (400).
    InexistentConnection,
}

impl Auth0ErrorCode {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUri => "invalid_uri",
            Self::InexistentConnection => "inexistent_connection",
        }
    }
}

/// An error answered to an API client.
pub struct ApiError {
    /// Envelope to render.
    pub dialect: ApiDialect,
    /// Table entry: HTTP status, type and stable name.
    pub code: Code,
    /// Human-readable message (replaced by an opaque one for 500s).
    pub message: String,
    /// Structured details (Authgear `info`: `causes`, `field_names`, `limit`, …).
    pub info: Option<Box<Value>>,
    /// Auth0 `errorCode` replacing the one derived from `code` (e.g. `invalid_uri` on a 400).
    pub auth0_error_code: Option<Auth0ErrorCode>,
    /// Seconds to send in `Retry-After` (rate limiting).
    pub retry_after_secs: Option<u32>,
    /// The underlying cause of an internal error; logged, never sent.
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ApiError {
    /// An error with `code` and its default message.
    pub fn new(dialect: ApiDialect, code: Code) -> Self {
        Self::with_message(dialect, code, code.default_message())
    }

    /// An error with a specific message.
    pub fn with_message(dialect: ApiDialect, code: Code, message: impl Into<String>) -> Self {
        Self {
            dialect,
            code,
            message: message.into(),
            info: None,
            auth0_error_code: None,
            retry_after_secs: None,
            source: None,
        }
    }

    /// Attaches structured details.
    pub fn info(mut self, info: Value) -> Self {
        self.info = Some(Box::new(info));
        self
    }

    /// Overrides the Auth0 `errorCode` (other envelopes are unaffected).
    pub fn with_auth0_error_code(mut self, error_code: Auth0ErrorCode) -> Self {
        self.auth0_error_code = Some(error_code);
        self
    }

    /// Asks the client to wait `secs` seconds (`Retry-After`).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// A 500 whose cause is logged with its whole chain but never shown.
    pub fn internal(dialect: ApiDialect, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { source: Some(Box::new(source)), ..Self::new(dialect, Code::Internal) }
    }

    /// Any error implementing [`ErrorCode`]: 5xx codes become opaque internal errors (cause logged),
    /// others keep their message.
    pub fn from_coded<E>(dialect: ApiDialect, err: E) -> Self
    where
        E: ErrorCode + std::error::Error + Send + Sync + 'static,
    {
        let code = err.error_code();
        if code.http_status() >= 500 {
            Self { source: Some(Box::new(err)), ..Self::new(dialect, code) }
        } else {
            Self::with_message(dialect, code, err.to_string())
        }
    }

    /// 401 in `dialect`'s envelope.
    pub fn unauthorized(dialect: ApiDialect) -> Self {
        Self::new(dialect, Code::Unauthorized)
    }

    /// 404 task not found.
    pub fn task_not_found(dialect: ApiDialect) -> Self {
        Self::new(dialect, Code::TaskNotFound)
    }

    /// The HTTP status in this dialect.
    pub fn status(&self) -> StatusCode {
        let status = match (self.dialect, self.code) {
            // Authgear shows an expired task as not found.
            (ApiDialect::Authgear, Code::TaskExpired) => 404,
            (_, code) => code.http_status(),
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The message shown to the client: opaque for server errors.
    fn public_message(&self) -> &str {
        if self.status().is_server_error() && self.code != Code::ServiceUnavailable {
            self.code.default_message()
        } else {
            &self.message
        }
    }

    /// The JSON body in this error's dialect.
    pub fn body(&self) -> Value {
        let status = self.status();
        let message = self.public_message();
        match self.dialect {
            ApiDialect::Native => json!({
                "message": message,
                "code": self.code.name(),
                "type": self.code.error_type(),
                "link": self.code.link(),
            }),
            ApiDialect::Authgear => {
                let (name, reason, fixed) = authgear_name_reason(self.code);
                let mut err = serde_json::Map::new();
                err.insert("name".into(), json!(name));
                err.insert("reason".into(), json!(reason));
                err.insert("message".into(), json!(fixed.unwrap_or(message)));
                err.insert("code".into(), json!(status.as_u16()));
                if let Some(info) = &self.info {
                    err.insert("info".into(), Value::clone(info));
                }
                json!({ "error": err })
            }
            ApiDialect::Auth0 => json!({
                "statusCode": status.as_u16(),
                "error": status.canonical_reason().unwrap_or("Error"),
                "message": message,
                "errorCode": self.auth0_error_code.map_or_else(|| auth0_error_code(self.code), Auth0ErrorCode::as_str),
            }),
            ApiDialect::Descope => json!({
                "errorCode": descope_error_code(self.code),
                "errorDescription": match self.code {
                    Code::RateLimited => "https://docs.descope.com/rate-limit",
                    code => code.default_message(),
                },
                "errorMessage": message,
            }),
        }
    }

    fn log(&self) {
        if !self.status().is_server_error() {
            return;
        }
        match &self.source {
            Some(source) => {
                let mut chain = source.to_string();
                let mut next = source.source();
                while let Some(cause) = next {
                    chain.push_str(": ");
                    chain.push_str(&cause.to_string());
                    next = cause.source();
                }
                tracing::error!(code = %self.code, error = %chain, "request failed");
            }
            None => tracing::error!(code = %self.code, message = %self.message, "request failed"),
        }
    }
}

/// Authgear `name` / `reason`, and the fixed message Authgear uses for that reason if any.
fn authgear_name_reason(code: Code) -> (&'static str, &'static str, Option<&'static str>) {
    match code {
        Code::MalformedJson => ("BadRequest", "InvalidJSON", None),
        Code::InvalidRequestBody | Code::InvalidFieldPointer => {
            ("Invalid", "ValidationFailed", Some("invalid request body"))
        }
        Code::NonUniqueFieldNames => ("Invalid", "UserExportNonUniqueFieldNames", Some("field names are not unique")),
        Code::InvalidQuery => ("BadRequest", "InvalidQuery", None),
        Code::MissingArgument => ("BadRequest", "MissingArgument", None),
        Code::Unauthorized => ("Unauthorized", "Unauthorized", None),
        Code::Forbidden => ("Forbidden", "Forbidden", None),
        Code::InvalidDownloadSignature => ("Forbidden", "InvalidDownloadSignature", None),
        Code::TaskNotFound => ("NotFound", "TaskNotFound", Some("task not found")),
        Code::UserNotFound => ("NotFound", "UserNotFound", None),
        Code::RouteNotFound => ("NotFound", "RouteNotFound", None),
        Code::MethodNotAllowed => ("MethodNotAllowed", "MethodNotAllowed", None),
        Code::TaskStateConflict => ("Invalid", "TaskStateConflict", None),
        Code::DuplicateUser => ("AlreadyExists", "DuplicateUser", None),
        Code::PayloadTooLarge => ("RequestEntityTooLarge", "JSONTooLarge", None),
        Code::UnsupportedMediaType => ("UnsupportedMediaType", "UnsupportedMediaType", None),
        Code::IdempotencyKeyReused => ("Invalid", "IdempotencyKeyReused", None),
        Code::RateLimited => ("TooManyRequest", "RateLimited", None),
        Code::TaskExpired => ("NotFound", "TaskExpired", Some("the export has expired")),
        Code::TaskCancelled => ("Invalid", "TaskCancelled", None),
        Code::ServiceUnavailable => ("ServiceUnavailable", "ServiceUnavailable", None),
        _ => ("InternalError", "UnexpectedError", None),
    }
}

/// Auth0 `errorCode` (documented ones where Auth0 publishes them; see compat-apis.md §2.4).
fn auth0_error_code(code: Code) -> &'static str {
    match code {
        Code::MalformedJson
        | Code::InvalidRequestBody
        | Code::InvalidFieldPointer
        | Code::NonUniqueFieldNames
        | Code::MissingArgument
        | Code::UnsupportedMediaType
        | Code::PayloadTooLarge => "invalid_body",
        Code::InvalidQuery => "invalid_query_string",
        Code::Unauthorized => "invalid_token",
        Code::Forbidden | Code::InvalidDownloadSignature => "insufficient_scope",
        Code::TaskNotFound | Code::TaskExpired => "inexistent_job",
        Code::UserNotFound => "inexistent_user",
        Code::RouteNotFound | Code::MethodNotAllowed => "invalid_uri",
        Code::RateLimited => "too_many_requests",
        Code::TaskStateConflict | Code::TaskCancelled | Code::DuplicateUser | Code::IdempotencyKeyReused => "conflict",
        Code::ServiceUnavailable => "service_unavailable",
        _ => "internal_error",
    }
}

/// Descope `errorCode` (documented ones from compat-apis.md §3.4; the rest are our own, stable).
fn descope_error_code(code: Code) -> &'static str {
    match code {
        Code::MalformedJson | Code::UnsupportedMediaType | Code::PayloadTooLarge => "E011001",
        Code::MissingArgument => "E011002",
        Code::InvalidRequestBody | Code::InvalidFieldPointer | Code::NonUniqueFieldNames => "E011003",
        Code::InvalidQuery => "E011004",
        Code::Unauthorized => "E011401",
        Code::Forbidden | Code::InvalidDownloadSignature => "E011403",
        Code::UserNotFound => "E112102",
        Code::TaskNotFound | Code::TaskExpired | Code::RouteNotFound => "E011404",
        Code::MethodNotAllowed => "E011405",
        Code::TaskStateConflict | Code::TaskCancelled | Code::DuplicateUser | Code::IdempotencyKeyReused => "E011409",
        Code::RateLimited => "E130429",
        Code::ServiceUnavailable => "E000503",
        _ => "E000500",
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("dialect", &self.dialect)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("info", &self.info)
            .field("auth0_error_code", &self.auth0_error_code)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let mut res = HttpResponse::build(self.status());
        if self.code == Code::Unauthorized {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.json(self.body())
    }
}

/// Fallback handler for unknown routes: 404 in the dialect of the path.
pub async fn route_not_found(req: actix_web::HttpRequest) -> HttpResponse {
    ApiError::new(ApiDialect::from_path(req.path()), Code::RouteNotFound).error_response()
}

/// Fallback handler for a known route with the wrong method: 405 in the dialect of the path.
pub async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    ApiError::new(ApiDialect::from_path(req.path()), Code::MethodNotAllowed).error_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn render(e: &ApiError) -> (u16, Value) {
        let res = e.error_response();
        let status = res.status().as_u16();
        let bytes = res.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn dialect_comes_from_the_path_prefix() {
        assert_eq!(ApiDialect::from_path("/_api/admin/users/export"), ApiDialect::Authgear);
        assert_eq!(ApiDialect::from_path("/_api/admin"), ApiDialect::Authgear);
        assert_eq!(ApiDialect::from_path("/_api/administrator"), ApiDialect::Native);
        assert_eq!(ApiDialect::from_path("/api/v2/jobs/x"), ApiDialect::Auth0);
        assert_eq!(ApiDialect::from_path("/oauth/token"), ApiDialect::Auth0);
        assert_eq!(ApiDialect::from_path("/v1/mgmt/user"), ApiDialect::Descope);
        assert_eq!(ApiDialect::from_path("/v2/mgmt/user/search"), ApiDialect::Descope);
        assert_eq!(ApiDialect::from_path("/v1/exports"), ApiDialect::Native);
        assert_eq!(ApiDialect::from_path("/"), ApiDialect::Native);
    }

    #[test]
    fn native_envelope() {
        let (status, body) = render(&ApiError::with_message(ApiDialect::Native, Code::TaskNotFound, "nope"));
        assert_eq!(status, 404);
        assert_eq!(body["message"], "nope");
        assert_eq!(body["code"], "task_not_found");
        assert_eq!(body["type"], "invalid_request");
        assert!(body["link"].as_str().unwrap().ends_with("#task_not_found"));
        assert_eq!(body.as_object().unwrap().len(), 4);
    }

    #[test]
    fn authgear_envelopes() {
        let (status, body) = render(&ApiError::new(ApiDialect::Authgear, Code::TaskNotFound));
        assert_eq!(status, 404);
        assert_eq!(
            body,
            json!({"error": {"name": "NotFound", "reason": "TaskNotFound", "message": "task not found", "code": 404}})
        );

        let e = ApiError::with_message(ApiDialect::Authgear, Code::InvalidRequestBody, "detail at /format")
            .info(json!({"causes": []}));
        let (status, body) = render(&e);
        assert_eq!(status, 400);
        assert_eq!(body["error"]["name"], "Invalid");
        assert_eq!(body["error"]["reason"], "ValidationFailed");
        assert_eq!(body["error"]["message"], "invalid request body");
        assert_eq!(body["error"]["info"], json!({"causes": []}));

        let (status, body) = render(&ApiError::new(ApiDialect::Authgear, Code::TaskExpired));
        assert_eq!(status, 404);
        assert_eq!(body["error"]["reason"], "TaskExpired");
        assert_eq!(body["error"]["message"], "the export has expired");
        assert_eq!(body["error"]["code"], 404);

        let (status, body) =
            render(&ApiError::new(ApiDialect::Authgear, Code::PayloadTooLarge).info(json!({"limit": 10})));
        assert_eq!(status, 413);
        assert_eq!(body["error"]["name"], "RequestEntityTooLarge");
        assert_eq!(body["error"]["reason"], "JSONTooLarge");
        assert_eq!(body["error"]["info"]["limit"], 10);

        let (status, body) = render(&ApiError::new(ApiDialect::Authgear, Code::MalformedJson));
        assert_eq!(status, 400);
        assert_eq!(
            (body["error"]["name"].as_str(), body["error"]["reason"].as_str()),
            (Some("BadRequest"), Some("InvalidJSON"))
        );

        let (status, body) = render(&ApiError::unauthorized(ApiDialect::Authgear));
        assert_eq!(status, 401);
        assert_eq!(body["error"]["reason"], "Unauthorized");
    }

    #[test]
    fn auth0_and_descope_envelopes() {
        let (status, body) =
            render(&ApiError::with_message(ApiDialect::Auth0, Code::TaskNotFound, "The job does not exist."));
        assert_eq!(status, 404);
        assert_eq!(
            body,
            json!({"statusCode": 404, "error": "Not Found", "message": "The job does not exist.", "errorCode": "inexistent_job"})
        );
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["statusCode", "error", "message", "errorCode"]);

        let (status, body) = render(&ApiError::with_message(ApiDialect::Descope, Code::UserNotFound, "no such user"));
        assert_eq!(status, 404);
        assert_eq!(body["errorCode"], "E112102");
        assert_eq!(body["errorMessage"], "no such user");
        assert!(body["errorDescription"].is_string());
    }

    #[test]
    fn internal_errors_are_opaque() {
        let cause = std::io::Error::other("database password is hunter2");
        for dialect in [ApiDialect::Native, ApiDialect::Authgear, ApiDialect::Auth0, ApiDialect::Descope] {
            let (status, body) = render(&ApiError::internal(dialect, std::io::Error::other(cause.to_string())));
            assert_eq!(status, 500);
            assert!(!body.to_string().contains("hunter2"), "{body}");
        }
        let (_, body) = render(&ApiError::internal(ApiDialect::Authgear, cause));
        assert_eq!(body["error"]["name"], "InternalError");
        assert_eq!(body["error"]["reason"], "UnexpectedError");
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let res = ApiError::unauthorized(ApiDialect::Native).error_response();
        assert_eq!(res.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    }
}
