//! Auth0's bulk user export jobs (compat-apis.md §2) and a client-credentials token endpoint.
//!
//! - `POST /api/v2/jobs/users-exports` → 200 job
//! - `GET /api/v2/jobs/{id}` → 200 job (`pending → processing → completed | failed | expired`)
//! - `GET /api/v2/jobs/{id}/errors` → 204, or 200 with the failure of a failed job
//! - `POST /oauth/token` (`client_credentials`) → a short-lived HS256 access token for this dialect
//!
//! Job ids are the tasks' [`JobAlias`]es. Field paths (`user_metadata.plan`,
//! `identities[0].connection`) become JSON pointers evaluated on the Auth0 view of a user. Files
//! are always gzipped: CSV with every text cell quoted and the formula guard (which, unlike Auth0,
//! spares E.164 phone numbers and leaves ordinary strings without a `'`), or NDJSON for `json`.
//! Errors use Auth0's `{statusCode, error, message, errorCode}` envelope; the first schema
//! violation is reported, worded like Auth0's validator.
//!
//! Connections: the user model has no connection predicate, so a well-formed `connection_id` is
//! answered with Auth0's 400 "The connection does not exist." and whole-tenant exports are the
//! only kind.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use userexport_domain::user::iso_millis;
use userexport_domain::{
    Code, Dialect, ErrorCode, ExportFormat, ExportSpec, ExportTask, JsonPointer, Project, ProjectId, SpecError,
    TaskStatus, UserView,
};

use crate::AppState;
use crate::auth::{AuthError, Authenticated};
use crate::body;
use crate::error::{ApiDialect, ApiError, Auth0ErrorCode};
use crate::openapi::schemas as doc;
use crate::routes::Routes;
use crate::service;

const DIALECT: ApiDialect = ApiDialect::Auth0;

/// Most fields a CSV export may name (Auth0's limit).
pub const MAX_CSV_FIELDS: usize = 30;
/// Longest `name` / `export_as`.
pub const MAX_FIELD_TEXT: usize = 100;
/// Validity of tokens issued by `POST /oauth/token`.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Scopes written into issued tokens.
pub const TOKEN_SCOPE: &str = "read:users create:users";
/// `gty` claim that marks tokens issued by this server's `/oauth/token`.
const GRANT_TYPE_CLAIM: &str = "client-credentials";

/// Top-level fields Auth0 allows in an export (compat-apis.md §2.5).
pub const EXPORTABLE_FIELDS: [&str; 23] = [
    "app_metadata",
    "blocked",
    "created_at",
    "email",
    "email_verified",
    "family_name",
    "given_name",
    "identities",
    "last_ip",
    "last_login",
    "last_password_reset",
    "logins_count",
    "multifactor",
    "multifactor_last_modified",
    "name",
    "nickname",
    "phone_number",
    "phone_verified",
    "picture",
    "updated_at",
    "user_id",
    "user_metadata",
    "username",
];

/// Registers the Auth0 routes.
pub fn configure(routes: &mut Routes<'_>) {
    routes
        .post("/api/v2/jobs/users-exports", create)
        .get("/api/v2/jobs/{id}", get)
        .get("/api/v2/jobs/{id}/errors", errors)
        .post("/oauth/token", token);
}

// ---------------------------------------------------------------------------------------------
// Request parsing

/// A valid create request.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    /// The export to run.
    pub spec: ExportSpec,
    /// The request as Auth0 echoes it: `format`, and `limit` / `fields` when sent.
    pub echo: Value,
}

/// A 400 `invalid_body` worded like Auth0's payload validator.
fn payload_error(detail: &str, property: Option<&str>) -> ApiError {
    let message = match property {
        Some(p) => format!("Payload validation error: '{detail}' on property {p}."),
        None => format!("Payload validation error: '{detail}'."),
    };
    ApiError::with_message(DIALECT, Code::InvalidRequestBody, message)
}

fn type_error(v: &Value, expected: &str, property: Option<&str>) -> ApiError {
    payload_error(&format!("Expected type {expected} but found type {}", body::json_type(v)), property)
}

fn unknown_keys(obj: &Map<String, Value>, allowed: &[&str], property: Option<&str>) -> Result<(), ApiError> {
    let extra: Vec<&str> = obj.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(payload_error(&format!("Additional properties not allowed: {}", extra.join(",")), property))
    }
}

/// A string of 1–100 characters at `property`.
fn short_string<'a>(v: &'a Value, property: &str) -> Result<&'a str, ApiError> {
    let Value::String(s) = v else { return Err(type_error(v, "string", Some(property))) };
    let n = s.chars().count();
    if n == 0 {
        return Err(payload_error("String is too short (0 chars), minimum 1", Some(property)));
    }
    if n > MAX_FIELD_TEXT {
        return Err(payload_error(
            &format!("String is too long ({n} chars), maximum {MAX_FIELD_TEXT}"),
            Some(property),
        ));
    }
    Ok(s)
}

/// `^con_[A-Za-z0-9]{16}$`.
fn is_connection_id(s: &str) -> bool {
    s.len() == 20 && s.starts_with("con_") && s[4..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One `fields[i]` item: its path as a pointer, the path and the optional `export_as`.
fn parse_field(i: usize, item: &Value, format: ExportFormat) -> Result<(JsonPointer, Value), ApiError> {
    let property = format!("fields[{i}]");
    let Some(obj) = item.as_object() else { return Err(type_error(item, "object", Some(&property))) };
    unknown_keys(obj, &["name", "export_as"], Some(&property))?;
    let Some(name) = obj.get("name") else {
        return Err(payload_error("Missing required property: name", Some(&property)));
    };
    let name = short_string(name, &format!("{property}.name"))?;
    let export_as = obj.get("export_as").map(|v| short_string(v, &format!("{property}.export_as"))).transpose()?;
    let pointer = JsonPointer::from_auth0_path(name).map_err(|e| {
        ApiError::with_message(
            DIALECT,
            Code::InvalidFieldPointer,
            format!("The field path `{name}` at {property}.name is invalid: {} (byte {}).", e.reason, e.position),
        )
    })?;
    let root = pointer.tokens().first().map(String::as_str).unwrap_or_default();
    if !EXPORTABLE_FIELDS.contains(&root) {
        return Err(ApiError::with_message(
            DIALECT,
            Code::InvalidRequestBody,
            format!("The field `{root}` at {property}.name cannot be exported."),
        ));
    }
    if format == ExportFormat::Csv && pointer.tokens().len() == 1 && matches!(root, "app_metadata" | "user_metadata") {
        return Err(ApiError::with_message(
            DIALECT,
            Code::InvalidRequestBody,
            format!(
                "The whole `{root}` object cannot be exported to CSV ({property}.name); name each property, \
                 e.g. `{root}.plan`, or use the json format."
            ),
        ));
    }
    let mut echo = Map::new();
    echo.insert("name".into(), json!(name));
    if let Some(e) = export_as {
        echo.insert("export_as".into(), json!(e));
    }
    Ok((pointer, Value::Object(echo)))
}

/// Parses and validates a create request body (compat-apis.md §2.2). `{}` is valid: a CSV of the
/// default fields of every user.
pub fn parse_request(body: &Value) -> Result<ParsedRequest, ApiError> {
    let Some(root) = body.as_object() else { return Err(type_error(body, "object", None)) };
    unknown_keys(root, &["connection_id", "format", "limit", "fields"], None)?;

    if let Some(v) = root.get("connection_id") {
        let Value::String(s) = v else { return Err(type_error(v, "string", Some("connection_id"))) };
        if !is_connection_id(s) {
            return Err(payload_error("String does not match pattern ^con_[A-Za-z0-9]{16}$", Some("connection_id")));
        }
        return Err(ApiError::with_message(DIALECT, Code::InvalidRequestBody, "The connection does not exist.")
            .with_auth0_error_code(Auth0ErrorCode::InexistentConnection));
    }

    let format = match root.get("format") {
        None => ExportFormat::Csv,
        Some(Value::String(s)) if s == "csv" => ExportFormat::Csv,
        Some(Value::String(s)) if s == "json" => ExportFormat::Ndjson,
        Some(Value::String(s)) => {
            return Err(payload_error(&format!("No enum match for: {}", json!(s)), Some("format")));
        }
        Some(other) => return Err(type_error(other, "string", Some("format"))),
    };

    let limit = match root.get("limit") {
        None => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Some(n as u64),
            Some(n) => return Err(payload_error(&format!("Value {n} is less than minimum 1"), Some("limit"))),
            None if v.as_u64().is_some() => v.as_u64(),
            None => return Err(type_error(v, "integer", Some("limit"))),
        },
    };

    let mut fields = Vec::new();
    match root.get("fields") {
        None => {}
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(payload_error("Array is too short (0), minimum 1", Some("fields")));
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                fields.push(parse_field(i, item, format)?);
            }
        }
        Some(other) => return Err(type_error(other, "array", Some("fields"))),
    }
    if format == ExportFormat::Csv && fields.len() > MAX_CSV_FIELDS {
        return Err(ApiError::with_message(
            DIALECT,
            Code::InvalidRequestBody,
            format!(
                "A CSV export can have at most {MAX_CSV_FIELDS} fields ({} requested); use the json format for more.",
                fields.len()
            ),
        ));
    }

    let mut builder = ExportSpec::builder(format)
        .view(UserView::Auth0)
        .gzip(true)
        .quote_all(format == ExportFormat::Csv)
        .formula_guard(true);
    if let Some(limit) = limit {
        builder = builder.limit(limit);
    }
    for (pointer, echo) in &fields {
        let header = echo.get("export_as").or_else(|| echo.get("name")).and_then(Value::as_str);
        builder = builder.field(pointer.clone(), header.map(str::to_owned));
    }
    let spec = builder.build().map_err(|e| match e {
        SpecError::NonUniqueFieldNames(names) => ApiError::with_message(
            DIALECT,
            Code::NonUniqueFieldNames,
            format!("Field names (export_as, else name) must be unique: {}.", names.join(", ")),
        ),
        other => ApiError::with_message(DIALECT, other.error_code(), other.to_string()),
    })?;

    let mut echo = Map::new();
    echo.insert("format".into(), json!(format_name(format)));
    if let Some(limit) = limit {
        echo.insert("limit".into(), json!(limit));
    }
    if !fields.is_empty() {
        echo.insert("fields".into(), Value::Array(fields.into_iter().map(|(_, e)| e).collect()));
    }
    Ok(ParsedRequest { spec, echo: Value::Object(echo) })
}

/// Auth0's name of a format: `csv` or `json` (NDJSON).
pub fn format_name(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Csv => "csv",
        ExportFormat::Ndjson => "json",
    }
}

// ---------------------------------------------------------------------------------------------
// Job views

/// Auth0's status of a task; `cancelled` shows as `failed`, and a task past retention as `expired`.
pub fn job_status(task: &ExportTask, now: chrono::DateTime<Utc>) -> &'static str {
    if service::is_expired(task, now) {
        return "expired";
    }
    match task.status {
        TaskStatus::Pending => "pending",
        TaskStatus::Processing => "processing",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed | TaskStatus::Cancelled => "failed",
        TaskStatus::Expired => "expired",
    }
}

/// Why a failed job failed, if it did.
fn status_details(task: &ExportTask) -> Option<String> {
    match task.status {
        TaskStatus::Cancelled => Some("The export was cancelled.".to_owned()),
        TaskStatus::Failed => Some(
            task.error
                .as_ref()
                .map(|e| e.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "The export failed.".to_owned()),
        ),
        _ => None,
    }
}

/// The Auth0 job object. `location` is the usable download URL of a completed job.
pub fn render_job(task: &ExportTask, location: Option<&str>, now: chrono::DateTime<Utc>) -> Value {
    let status = job_status(task, now);
    let mut m = Map::new();
    m.insert("type".into(), json!("users_export"));
    m.insert("status".into(), json!(status));
    m.insert("format".into(), json!(format_name(task.spec.format())));
    if let Some(limit) = task.spec.limit() {
        m.insert("limit".into(), json!(limit));
    }
    if task.dialect == Dialect::Auth0
        && let Some(fields) = task.request.get("fields")
    {
        m.insert("fields".into(), fields.clone());
    }
    m.insert("created_at".into(), json!(iso_millis(&task.created_at)));
    m.insert("id".into(), json!(task.job_alias.as_str()));
    match status {
        "processing" => {
            m.insert("percentage_done".into(), json!(task.percentage_done()));
            if let Some(left) = task.time_left_seconds(now) {
                m.insert("time_left_seconds".into(), json!(left));
            }
        }
        "completed" => {
            if let Some(url) = location {
                m.insert("location".into(), json!(url));
            }
        }
        "failed" => {
            if let Some(details) = status_details(task) {
                m.insert("status_details".into(), json!(details));
            }
        }
        _ => {}
    }
    Value::Object(m)
}

async fn view(state: &AppState, task: &ExportTask) -> Value {
    let now = Utc::now();
    let url = service::download_url(state, task, now, super::MIN_URL_VALIDITY).await;
    render_job(task, url.as_ref().map(|(u, _)| u.as_str()), now)
}

fn job_not_found() -> ApiError {
    ApiError::with_message(DIALECT, Code::TaskNotFound, "The job does not exist.")
}

/// The task behind an Auth0 job id of `project`; a malformed id is Auth0's 400 `invalid_uri`.
async fn find_job(state: &AppState, project: &Project, id: &str) -> Result<ExportTask, ApiError> {
    if userexport_domain::JobAlias::parse(id).is_err() {
        return Err(ApiError::with_message(
            DIALECT,
            Code::InvalidRequestBody,
            "Path validation error: 'String does not match pattern ^job_[A-Za-z0-9]{16}$' on property id.",
        )
        .with_auth0_error_code(Auth0ErrorCode::InvalidUri));
    }
    service::get_export_by_alias(state, project, id).await.map_err(|e| match e {
        service::ServiceError::NotFound => job_not_found(),
        other => other.into_api(DIALECT),
    })
}

/// Create a users export job (Auth0's Management API).
///
/// Files are always gzipped; the first schema violation is reported.
#[utoipa::path(
    post,
    path = "/api/v2/jobs/users-exports",
    tag = "auth0",
    operation_id = "auth0_create_users_export_job",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays of the same key and body return the first job")),
    request_body(content = doc::Auth0CreateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The job was created", body = doc::Auth0Job),
        (status = 400, description = "`invalid_body`, `inexistent_connection`", body = doc::Auth0Error),
        (status = 401, description = "Missing or invalid credentials (`invalid_token`)", body = doc::Auth0Error),
        (status = 409, description = "`Idempotency-Key` reused with another body", body = doc::Auth0Error),
        (status = 413, description = "Body too large", body = doc::Auth0Error),
        (status = 500, description = "Internal error", body = doc::Auth0Error),
    ),
    security(("management_key" = []), ("admin_jwt" = []), ("auth0_access_token" = []))
)]
async fn create(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let created = service::create_from_request(&state, &auth.project, &req, payload, DIALECT, |b| {
        parse_request(b).map(|p| (p.spec, p.echo))
    })
    .await?;
    Ok(created.response(StatusCode::OK).json(view(&state, &created.task).await))
}

/// Get a job (Auth0's Management API).
#[utoipa::path(
    get,
    path = "/api/v2/jobs/{id}",
    tag = "auth0",
    operation_id = "auth0_get_job",
    params(("id" = String, Path, description = "Job id (`job_` + 16 characters)")),
    responses(
        (status = 200, description = "The job", body = doc::Auth0Job),
        (status = 400, description = "Malformed job id (`invalid_uri`)", body = doc::Auth0Error),
        (status = 401, description = "Missing or invalid credentials", body = doc::Auth0Error),
        (status = 404, description = "No such job (`inexistent_job`)", body = doc::Auth0Error),
        (status = 500, description = "Internal error", body = doc::Auth0Error),
    ),
    security(("management_key" = []), ("admin_jwt" = []), ("auth0_access_token" = []))
)]
async fn get(state: web::Data<AppState>, auth: Authenticated, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let task = find_job(&state, &auth.project, &id).await?;
    Ok(HttpResponse::Ok().json(view(&state, &task).await))
}

/// Get the errors of a job: 204 unless it failed.
#[utoipa::path(
    get,
    path = "/api/v2/jobs/{id}/errors",
    tag = "auth0",
    operation_id = "auth0_get_job_errors",
    params(("id" = String, Path, description = "Job id (`job_` + 16 characters)")),
    responses(
        (status = 200, description = "The job failed", body = doc::Auth0JobErrors),
        (status = 204, description = "The job has no errors"),
        (status = 400, description = "Malformed job id (`invalid_uri`)", body = doc::Auth0Error),
        (status = 401, description = "Missing or invalid credentials", body = doc::Auth0Error),
        (status = 404, description = "No such job (`inexistent_job`)", body = doc::Auth0Error),
        (status = 500, description = "Internal error", body = doc::Auth0Error),
    ),
    security(("management_key" = []), ("admin_jwt" = []), ("auth0_access_token" = []))
)]
async fn errors(
    state: web::Data<AppState>,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = find_job(&state, &auth.project, &id).await?;
    let now = Utc::now();
    if job_status(&task, now) != "failed" {
        return Ok(HttpResponse::NoContent().finish());
    }
    Ok(HttpResponse::Ok().json(json!({
        "status": "failed",
        "type": "users_export",
        "id": task.job_alias.as_str(),
        "created_at": iso_millis(&task.created_at),
        "status_details": status_details(&task),
    })))
}

// ---------------------------------------------------------------------------------------------
// Authentication and /oauth/token

/// The HS256 key of tokens issued by `POST /oauth/token`. Derived from a server secret shared by
/// every API replica (so each accepts the others' tokens); never printed.
#[derive(Clone)]
pub struct TokenKey(Arc<[u8]>);

impl TokenKey {
    /// Derives the token key from a server secret (domain-separated, so the secret's other uses,
    /// such as signing download URLs, never share a key with tokens).
    pub fn derive(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"userexport auth0 access tokens v1\n");
        h.update(secret);
        Self(Arc::from(h.finalize().as_slice()))
    }

    /// A random key: tokens are then accepted only by this process (tests, single replica).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
        Self(Arc::from(&bytes[..]))
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// Claims of an issued access token (Auth0's shape for client-credentials tokens).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    /// This server's base URL with a trailing `/`.
    pub iss: String,
    /// `<project id>@clients`.
    pub sub: String,
    /// The requested audience (this server's `/api/v2/`).
    pub aud: String,
    /// Issued at (unix s).
    pub iat: i64,
    /// Expires at (unix s).
    pub exp: i64,
    /// The client id: the project id.
    pub azp: String,
    /// Granted scopes.
    pub scope: String,
    /// Grant type marker.
    pub gty: String,
}

/// Signs an access token for `project`.
pub fn issue_token(key: &TokenKey, project: &ProjectId, issuer: &str, audience: &str) -> Result<String, AuthError> {
    let now = Utc::now().timestamp();
    let claims = AccessClaims {
        iss: issuer.to_owned(),
        sub: format!("{project}@clients"),
        aud: audience.to_owned(),
        iat: now,
        exp: now + TOKEN_TTL.as_secs() as i64,
        azp: project.as_str().to_owned(),
        scope: TOKEN_SCOPE.to_owned(),
        gty: GRANT_TYPE_CLAIM.to_owned(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&key.0))
        .map_err(|e| AuthError::Key(e.to_string()))
}

/// Whether a bearer value is one of our HS256 access tokens (by its header; not verified).
pub fn is_issued_token(token: &str) -> bool {
    token.split('.').count() == 3 && jsonwebtoken::decode_header(token).is_ok_and(|h| h.alg == Algorithm::HS256)
}

/// Verifies an access token issued by [`issue_token`]; returns its project.
pub fn verify_token(key: &TokenKey, token: &str, leeway: Duration) -> Result<ProjectId, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    // The audience is this server's URL under whatever host name the client used.
    validation.validate_aud = false;
    validation.leeway = leeway.as_secs();
    let data =
        jsonwebtoken::decode::<AccessClaims>(token, &DecodingKey::from_secret(&key.0), &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AuthError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::InvalidSignature => "bad signature",
                _ => "invalid token",
            })
        })?;
    let c = data.claims;
    if c.gty != GRANT_TYPE_CLAIM || !c.aud.ends_with("/api/v2/") || c.sub != format!("{}@clients", c.azp) {
        return Err(AuthError::Invalid("invalid token"));
    }
    ProjectId::parse(&c.azp).map_err(|_| AuthError::Invalid("invalid token"))
}

/// The body of `POST /oauth/token` (JSON or form-encoded); unknown keys are ignored as Auth0 does.
#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    audience: Option<String>,
}

/// An OAuth 2 error response (`{error, error_description}`), the shape Auth0's token endpoint uses.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": error, "error_description": description }))
}

/// The audiences accepted for a request reaching this server as `host`: `http(s)://host/api/v2/`.
fn audience_matches(audience: &str, host: &str) -> bool {
    let rest = audience.strip_prefix("https://").or_else(|| audience.strip_prefix("http://"));
    rest.is_some_and(|r| r.strip_prefix(host).is_some_and(|path| path == "/api/v2/" || path == "/api/v2"))
}

/// Issue an access token for the Auth0 routes (OAuth 2 client credentials).
///
/// `client_id` is the project id and `client_secret` a management key; the token is valid for an
/// hour on `/api/v2` routes of every replica sharing `USEREXPORT_SIGNING_SECRET`.
#[utoipa::path(
    post,
    path = "/oauth/token",
    tag = "auth0",
    operation_id = "auth0_oauth_token",
    request_body(content(
        (doc::OAuthTokenRequest = "application/json"),
        (doc::OAuthTokenRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The access token", body = doc::OAuthToken),
        (status = 400, description = "`invalid_request`", body = doc::OAuthError),
        (status = 401, description = "`access_denied`: unknown client or wrong secret", body = doc::OAuthError),
        (status = 403, description = "`unsupported_grant_type`, or an audience other than this server's `/api/v2/`", body = doc::OAuthError),
        (status = 500, description = "Internal error", body = doc::Auth0Error),
    )
)]
async fn token(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let bad_request = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    let bytes = match body::read_limited(&req, payload, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return bad_request("the request body is too large or unreadable"),
    };
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let parsed: Result<TokenRequest, String> = if content_type.starts_with("application/x-www-form-urlencoded") {
        std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|s| web::Query::<TokenRequest>::from_query(s).map(|q| q.into_inner()).map_err(|e| e.to_string()))
    } else {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let request = match parsed {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("invalid request body: {e}")),
    };
    match request.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::FORBIDDEN,
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            );
        }
        None => return bad_request("Missing required parameter: grant_type"),
    }
    let (Some(client_id), Some(secret)) = (request.client_id.as_deref(), request.client_secret.as_deref()) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    };
    let host = req.connection_info().host().to_owned();
    let audience = request.audience.unwrap_or_default();
    if !audience_matches(&audience, &host) {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            &format!("Service not enabled within domain: {audience}"),
        );
    }
    let Ok(project) = ProjectId::parse(client_id) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    };
    match state.store.verify_management_key(&project, secret).await {
        Ok(true) => {}
        Ok(false) => return oauth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized"),
        Err(e) => return ApiError::from_coded(DIALECT, AuthError::Store(e)).error_response(),
    }
    let scheme = req.connection_info().scheme().to_owned();
    let issuer = format!("{scheme}://{host}/");
    match issue_token(&state.settings.auth0_token_key, &project, &issuer, &audience) {
        Ok(access_token) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
            "access_token": access_token,
            "scope": TOKEN_SCOPE,
            "expires_in": TOKEN_TTL.as_secs(),
            "token_type": "Bearer",
        })),
        Err(e) => ApiError::from_coded(DIALECT, e).error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use userexport_domain::{ErrorObject, JobAlias, fake};

    fn ok(v: Value) -> ParsedRequest {
        parse_request(&v).unwrap_or_else(|e| panic!("{v}: {e:?}"))
    }

    fn err(v: Value) -> (u16, Value) {
        let e = parse_request(&v).expect_err(&v.to_string());
        (e.status().as_u16(), e.body())
    }

    #[test]
    fn the_docs_example_without_connection_parses_and_echoes() {
        let p = ok(json!({"format":"csv","limit":5,
            "fields":[{"name":"user_id"},{"name":"email"},{"name":"identities[0].connection","export_as":"provider"}]}));
        assert_eq!(p.spec.format(), ExportFormat::Csv);
        assert_eq!(p.spec.view(), UserView::Auth0);
        assert!(p.spec.gzip() && p.spec.quote_all() && p.spec.formula_guard());
        assert_eq!(p.spec.limit(), Some(5));
        assert_eq!(p.spec.headers(), ["user_id", "email", "provider"]);
        assert_eq!(p.spec.fields()[2].pointer().as_str(), "/identities/0/connection");
        assert_eq!(p.spec.file_extension(), "csv.gz");
        assert_eq!(
            p.echo,
            json!({"format": "csv", "limit": 5, "fields": [{"name": "user_id"}, {"name": "email"},
                {"name": "identities[0].connection", "export_as": "provider"}]})
        );
    }

    #[test]
    fn empty_body_is_a_gzipped_csv_of_the_default_fields_and_json_is_ndjson() {
        let p = ok(json!({}));
        assert_eq!(p.spec.format(), ExportFormat::Csv);
        assert_eq!(p.spec.fields().len(), 17);
        assert_eq!(p.echo, json!({"format": "csv"}));
        let p = ok(json!({"format": "json"}));
        assert_eq!(p.spec.format(), ExportFormat::Ndjson);
        assert!(p.spec.fields().is_empty());
        assert!(!p.spec.quote_all());
        assert_eq!(p.spec.file_extension(), "ndjson.gz");
        let p = ok(
            json!({"format": "json", "fields": [{"name": "user_metadata"}, {"name": "email", "export_as": "mail"}]}),
        );
        assert_eq!(p.spec.headers(), ["user_metadata", "mail"]);
    }

    #[test]
    fn dotted_paths_are_evaluated_on_the_auth0_view() {
        let p = ok(json!({"fields": [{"name": "user_metadata.plan"}, {"name": "identities[0].connection"}]}));
        let user = fake::user(1, 1);
        let doc = user.auth0_user();
        let f = p.spec.fields();
        assert_eq!(f[0].pointer().resolve(&doc), user.custom_attributes.get("plan"));
        assert_eq!(f[1].pointer().resolve(&doc), Some(&json!(user.auth0_connection())));
    }

    #[test]
    fn schema_violations_are_invalid_body_with_auth0_wording() {
        let cases = [
            (json!([]), "Expected type object but found type array"),
            (json!({"foo": 1}), "Additional properties not allowed: foo"),
            (json!({"format": "xml"}), "No enum match for: \"xml\"' on property format"),
            (json!({"format": 1}), "Expected type string but found type integer' on property format"),
            (json!({"limit": 0}), "Value 0 is less than minimum 1' on property limit"),
            (json!({"limit": "5"}), "Expected type integer but found type string' on property limit"),
            (json!({"limit": 1.5}), "Expected type integer but found type number' on property limit"),
            (json!({"fields": {}}), "Expected type array but found type object' on property fields"),
            (json!({"fields": []}), "Array is too short (0), minimum 1' on property fields"),
            (json!({"fields": ["email"]}), "Expected type object but found type string' on property fields[0]"),
            (json!({"fields": [{"export_as": "x"}]}), "Missing required property: name' on property fields[0]"),
            (
                json!({"fields": [{"name": "email", "x": 1}]}),
                "Additional properties not allowed: x' on property fields[0]",
            ),
            (
                json!({"fields": [{"name": "email", "export_as": "x".repeat(101)}]}),
                "String is too long (101 chars), maximum 100' on property fields[0].export_as",
            ),
            (
                json!({"fields": [{"name": "e".repeat(101)}]}),
                "String is too long (101 chars), maximum 100' on property fields[0].name",
            ),
            (json!({"fields": [{"name": ""}]}), "String is too short (0 chars), minimum 1"),
            (
                json!({"connection_id": "con_x"}),
                "String does not match pattern ^con_[A-Za-z0-9]{16}$' on property connection_id",
            ),
            (json!({"fields": [{"name": "identities[x]"}]}), "is invalid"),
            (json!({"fields": [{"name": "password_hash"}]}), "cannot be exported"),
            (json!({"fields": [{"name": "user_metadata"}]}), "cannot be exported to CSV"),
            (json!({"fields": [{"name": "email"}, {"name": "user_id", "export_as": "email"}]}), "must be unique"),
        ];
        for (body, fragment) in cases {
            let (status, e) = err(body.clone());
            assert_eq!(status, 400, "{body}");
            assert_eq!(e["errorCode"], "invalid_body", "{body}: {e}");
            assert_eq!(e["statusCode"], 400);
            assert_eq!(e["error"], "Bad Request");
            assert!(e["message"].as_str().unwrap().contains(fragment), "{body}: {e}");
        }
    }

    #[test]
    fn csv_allows_thirty_fields_json_more() {
        let fields = |n: usize| -> Value { (0..n).map(|i| json!({"name": format!("user_metadata.f{i}")})).collect() };
        assert_eq!(ok(json!({"fields": fields(30)})).spec.fields().len(), 30);
        let (status, e) = err(json!({"fields": fields(31)}));
        assert_eq!((status, e["errorCode"].as_str()), (400, Some("invalid_body")));
        assert!(e["message"].as_str().unwrap().contains("at most 30"));
        assert_eq!(ok(json!({"format": "json", "fields": fields(31)})).spec.fields().len(), 31);
    }

    #[test]
    fn a_connection_id_names_no_connection() {
        let (status, e) = err(json!({"connection_id": "con_0000000000000001", "format": "csv"}));
        assert_eq!(
            (status, e),
            (
                400,
                json!({"statusCode": 400, "error": "Bad Request", "message": "The connection does not exist.",
                    "errorCode": "inexistent_connection"})
            )
        );
    }

    fn task(status: TaskStatus) -> ExportTask {
        let p = ok(json!({"format": "csv", "limit": 3, "fields": [{"name": "email", "export_as": "mail"}]}));
        let created = chrono::DateTime::parse_from_rfc3339("2017-11-02T23:34:03.803456Z").unwrap().to_utc();
        let mut t = ExportTask::new_pending(ProjectId::generate(), Dialect::Auth0, p.spec, p.echo, created);
        t.job_alias = JobAlias::parse("job_coRQCC3MHztpuTlo").unwrap();
        t.status = status;
        t.attempts = 1;
        t.finished_at = status.is_terminal().then_some(created);
        t
    }

    #[test]
    fn pending_job_renders_like_the_docs() {
        let t = task(TaskStatus::Pending);
        let v = render_job(&t, None, Utc::now());
        assert_eq!(
            v,
            json!({"type": "users_export", "status": "pending", "format": "csv", "limit": 3,
                "fields": [{"name": "email", "export_as": "mail"}], "created_at": "2017-11-02T23:34:03.803Z",
                "id": "job_coRQCC3MHztpuTlo"})
        );
    }

    #[test]
    fn processing_jobs_report_integer_progress_from_real_counts() {
        let now = Utc::now();
        let mut t = task(TaskStatus::Processing);
        t.rows_total = Some(1000);
        t.rows_written = 250;
        t.started_at = Some(now - chrono::Duration::seconds(10));
        let v = render_job(&t, None, now);
        assert_eq!(v["status"], "processing");
        assert_eq!(v["percentage_done"], 25);
        assert_eq!(v["time_left_seconds"], 30);
        // Nothing written yet: no estimate.
        t.rows_written = 0;
        let v = render_job(&t, None, now);
        assert_eq!(v["percentage_done"], 0);
        assert!(v.get("time_left_seconds").is_none());
    }

    #[test]
    fn completed_failed_cancelled_and_expired_jobs() {
        let now = Utc::now();
        let v = render_job(&task(TaskStatus::Completed), Some("http://x/f.csv.gz?sig=1"), now);
        assert_eq!(
            (v["status"].as_str(), v["location"].as_str()),
            (Some("completed"), Some("http://x/f.csv.gz?sig=1"))
        );
        let mut failed = task(TaskStatus::Failed);
        failed.error = Some(ErrorObject::new(Code::ExportFailed, "storage rejected the upload"));
        let v = render_job(&failed, None, now);
        assert_eq!(v["status"], "failed");
        assert_eq!(v["status_details"], "storage rejected the upload");
        assert!(v.get("location").is_none());
        let v = render_job(&task(TaskStatus::Cancelled), None, now);
        assert_eq!(
            (v["status"].as_str(), v["status_details"].as_str()),
            (Some("failed"), Some("The export was cancelled."))
        );
        let mut past = task(TaskStatus::Completed);
        past.expires_at = Some(now - chrono::Duration::seconds(1));
        let v = render_job(&past, Some("ignored"), now);
        assert_eq!(v["status"], "expired");
        assert!(v.get("location").is_none());
        assert_eq!(render_job(&task(TaskStatus::Expired), None, now)["status"], "expired");
    }

    #[test]
    fn tasks_of_other_dialects_render_without_fields() {
        let mut t = task(TaskStatus::Pending);
        t.dialect = Dialect::Native;
        t.request = json!({"format": "ndjson"});
        let v = render_job(&t, None, Utc::now());
        assert!(v.get("fields").is_none());
        assert_eq!(v["format"], "csv");
    }

    #[test]
    fn error_envelopes_for_401_404_429() {
        let cases = [
            (ApiError::unauthorized(DIALECT), 401, "Unauthorized", "invalid_token"),
            (job_not_found(), 404, "Not Found", "inexistent_job"),
            (ApiError::new(DIALECT, Code::RateLimited), 429, "Too Many Requests", "too_many_requests"),
        ];
        for (e, status, error, code) in cases {
            let body = e.body();
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(body["statusCode"], status);
            assert_eq!(body["error"], error);
            assert_eq!(body["errorCode"], code);
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["statusCode", "error", "message", "errorCode"]);
        }
        assert_eq!(job_not_found().body()["message"], "The job does not exist.");
    }

    #[test]
    fn issued_tokens_verify_and_forgeries_do_not() {
        let key = TokenKey::derive(b"server secret of at least thirty-two bytes");
        let project = ProjectId::generate();
        let token = issue_token(&key, &project, "http://h/", "http://h/api/v2/").unwrap();
        assert!(is_issued_token(&token));
        assert_eq!(verify_token(&key, &token, Duration::from_secs(60)).unwrap(), project);
        // Replicas deriving from the same secret agree; another secret or a random key does not.
        let same = TokenKey::derive(b"server secret of at least thirty-two bytes");
        assert_eq!(verify_token(&same, &token, Duration::ZERO).unwrap(), project);
        assert!(verify_token(&TokenKey::derive(b"another secret"), &token, Duration::ZERO).is_err());
        assert!(verify_token(&TokenKey::random(), &token, Duration::ZERO).is_err());
        // Expired.
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            iss: "http://h/".into(),
            sub: format!("{project}@clients"),
            aud: "http://h/api/v2/".into(),
            iat: now - 7200,
            exp: now - 3600,
            azp: project.as_str().into(),
            scope: TOKEN_SCOPE.into(),
            gty: GRANT_TYPE_CLAIM.into(),
        };
        let sign = |c: &AccessClaims| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), c, &EncodingKey::from_secret(&key.0)).unwrap()
        };
        assert!(verify_token(&key, &sign(&claims), Duration::from_secs(60)).is_err());
        // Wrong subject or grant marker.
        let fresh = AccessClaims { iat: now, exp: now + 60, ..claims };
        assert!(verify_token(&key, &sign(&fresh), Duration::ZERO).is_ok());
        let other_sub = AccessClaims { sub: format!("{}@clients", ProjectId::generate()), ..fresh.clone() };
        assert!(verify_token(&key, &sign(&other_sub), Duration::ZERO).is_err());
        let other_gty = AccessClaims { gty: "password".into(), ..fresh };
        assert!(verify_token(&key, &sign(&other_gty), Duration::ZERO).is_err());
        assert!(!is_issued_token("P1:secret"));
        assert_eq!(format!("{key:?}"), "TokenKey(<redacted>)");
    }

    #[test]
    fn audiences_name_this_server_api() {
        assert!(audience_matches("http://127.0.0.1:8080/api/v2/", "127.0.0.1:8080"));
        assert!(audience_matches("https://127.0.0.1:8080/api/v2/", "127.0.0.1:8080"));
        assert!(audience_matches("https://127.0.0.1:8080/api/v2", "127.0.0.1:8080"));
        assert!(!audience_matches("https://127.0.0.1:8081/api/v2/", "127.0.0.1:8080"));
        assert!(!audience_matches("https://127.0.0.1:8080/api/v1/", "127.0.0.1:8080"));
        assert!(!audience_matches("127.0.0.1:8080/api/v2/", "127.0.0.1:8080"));
        assert!(!audience_matches("", "127.0.0.1:8080"));
    }
}
