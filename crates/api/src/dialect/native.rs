//! The native API (design.md §6).
//!
//! - `POST /v1/exports` → 202 with the task (and `Location`)
//! - `GET /v1/exports/{id}` → the task
//! - `GET /v1/exports?status=…&created_from=…&created_to=…&limit=…&from=…` → a page of tasks
//! - `POST /v1/exports/{id}/cancel` → 202 with the task; 409 if it already finished
//!
//! Errors are `{"message", "code", "type", "link"}`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use userexport_domain::user::rfc3339_nano;
use userexport_domain::{
    Code, ExportFormat, ExportSpec, ExportTask, JsonPointer, SpecError, TaskId, TaskStatus, UserFilter, UserView,
};
use userexport_store::TaskQuery;

use crate::AppState;
use crate::auth::Authenticated;
use crate::body::{self, FieldError};
use crate::error::{ApiDialect, ApiError};
use crate::openapi::schemas as doc;
use crate::routes::Routes;
use crate::service;

const DIALECT: ApiDialect = ApiDialect::Native;

/// Default page size of the list endpoint.
pub const DEFAULT_LIMIT: u64 = 20;
/// Largest page size of the list endpoint.
pub const MAX_LIMIT: u64 = 100;

/// Registers the native routes.
pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/v1/exports", |r| r.post(create).get(list))
        .get("/v1/exports/{id}", get)
        .post("/v1/exports/{id}/cancel", cancel);
}

/// One requested field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDto {
    pointer: JsonPointer,
    #[serde(default)]
    name: Option<String>,
}

/// The create body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    format: ExportFormat,
    #[serde(default)]
    fields: Option<Vec<FieldDto>>,
    #[serde(default)]
    filters: Option<UserFilter>,
    #[serde(default)]
    view: Option<UserView>,
    #[serde(default)]
    gzip: Option<bool>,
    #[serde(default)]
    formula_guard: Option<bool>,
}

/// A valid native create request: the spec and the normalized request that is stored and hashed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    /// The export to run.
    pub spec: ExportSpec,
    /// The request with defaults applied.
    pub normalized: Value,
}

/// Parses and validates a native create body.
pub fn parse_request(body: &Value) -> Result<ParsedRequest, ApiError> {
    let dto: CreateBody = body::from_value(body, "").map_err(|e| body::validation_error(DIALECT, &[e]))?;
    let view = dto.view.unwrap_or_default();
    let gzip = dto.gzip.unwrap_or(false);
    let mut builder = ExportSpec::builder(dto.format).view(view).filter(dto.filters.unwrap_or_default()).gzip(gzip);
    if let Some(guard) = dto.formula_guard {
        builder = builder.formula_guard(guard);
    }
    if let Some(fields) = &dto.fields {
        if fields.is_empty() {
            return Err(body::validation_error(
                DIALECT,
                &[FieldError {
                    location: "/fields".into(),
                    kind: "minItems",
                    details: json!({ "actual": 0, "expected": 1, "error": "omit `fields` to export the default fields" }),
                    code: Code::InvalidRequestBody,
                }],
            ));
        }
        for f in fields {
            builder = builder.field(f.pointer.clone(), f.name.clone());
        }
    }
    let spec = builder.build().map_err(|e| match e {
        SpecError::NonUniqueFieldNames(names) => ApiError::with_message(
            DIALECT,
            Code::NonUniqueFieldNames,
            format!("field names are not unique: {}", names.join(", ")),
        )
        .info(json!({ "field_names": names })),
        SpecError::EmptyFieldName { index } => body::validation_error(
            DIALECT,
            &[FieldError::general(format!("/fields/{index}/name"), "the name must not be empty")],
        ),
        SpecError::FilterTooLarge(name) => {
            body::validation_error(DIALECT, &[FieldError::general(format!("/filters/{name}"), e.to_string())])
        }
        other => body::validation_error(DIALECT, &[FieldError::general("/fields", other.to_string())]),
    })?;
    let mut normalized = Map::new();
    normalized.insert("format".into(), json!(spec.format().as_str()));
    if let Some(fields) = &dto.fields {
        let fields: Vec<Value> = fields
            .iter()
            .map(|f| match &f.name {
                Some(n) => json!({ "pointer": f.pointer.as_str(), "name": n }),
                None => json!({ "pointer": f.pointer.as_str() }),
            })
            .collect();
        normalized.insert("fields".into(), Value::Array(fields));
    }
    normalized.insert("filters".into(), serde_json::to_value(spec.filter()).unwrap_or(Value::Null));
    normalized.insert("view".into(), json!(spec.view().as_str()));
    normalized.insert("gzip".into(), json!(spec.gzip()));
    normalized.insert("formula_guard".into(), json!(spec.formula_guard()));
    Ok(ParsedRequest { spec, normalized: Value::Object(normalized) })
}

fn ts(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| json!(rfc3339_nano(&t)))
}

/// The native task object. `download_url` is the usable URL (fresh or stored) and its expiry.
pub fn render_task(task: &ExportTask, download: Option<(&str, Option<DateTime<Utc>>)>, now: DateTime<Utc>) -> Value {
    let spec = &task.spec;
    let fields: Vec<Value> =
        spec.fields().iter().map(|f| json!({ "pointer": f.pointer().as_str(), "name": f.header() })).collect();
    let completed_at = (task.status == TaskStatus::Completed).then_some(task.finished_at).flatten();
    let (url, url_expires) = match download {
        Some((u, exp)) => (json!(u), ts(exp)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": task.id.as_str(),
        "status": task.status.as_str(),
        "dialect": task.dialect.as_str(),
        "format": spec.format().as_str(),
        "view": spec.view().as_str(),
        "gzip": spec.gzip(),
        "formula_guard": spec.formula_guard(),
        "fields": fields,
        "filters": serde_json::to_value(spec.filter()).unwrap_or(Value::Null),
        "rows_written": task.rows_written,
        "rows_total": task.rows_total,
        "bytes_written": task.bytes_written,
        "percentage_done": task.percentage_done(),
        "time_left_seconds": task.time_left_seconds(now),
        "cancel_requested": task.cancel_requested,
        "created_at": rfc3339_nano(&task.created_at),
        "started_at": ts(task.started_at),
        "completed_at": ts(completed_at),
        "finished_at": ts(task.finished_at),
        "expires_at": ts(task.expires_at),
        "download_url": url,
        "download_url_expires_at": url_expires,
        "error": task.error.as_ref().map_or(Value::Null, |e| serde_json::to_value(e).unwrap_or(Value::Null)),
    })
}

async fn view(state: &AppState, task: &ExportTask) -> Value {
    let now = Utc::now();
    let url = service::download_url(state, task, now, super::MIN_URL_VALIDITY).await;
    render_task(task, url.as_ref().map(|(u, e)| (u.as_str(), *e)), now)
}

/// Create an export task.
///
/// The task is committed and queued at once; poll it until `status` is `completed` and download
/// `download_url`. Send `Idempotency-Key` to make retries safe.
#[utoipa::path(
    post,
    path = "/v1/exports",
    tag = "native",
    operation_id = "native_create_export",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays of the same key and body return the first task (`Idempotent-Replayed: true`)")),
    request_body(content = doc::NativeCreateRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "The task was created", body = doc::NativeTask,
            headers(("Location" = String, description = "`/v1/exports/{id}`"))),
        (status = 400, description = "Invalid body (`invalid_request_body`, `invalid_field_pointer`, `non_unique_field_names`, `malformed_json`)", body = doc::NativeError),
        (status = 401, description = "Missing or invalid credentials", body = doc::NativeError),
        (status = 409, description = "`Idempotency-Key` reused with another body", body = doc::NativeError),
        (status = 413, description = "Body too large", body = doc::NativeError),
        (status = 415, description = "Not JSON", body = doc::NativeError),
        (status = 500, description = "Internal error", body = doc::NativeError),
    ),
    security(("management_key" = []), ("admin_jwt" = []))
)]
async fn create(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let created = service::create_from_request(&state, &auth.project, &req, payload, DIALECT, |b| {
        parse_request(b).map(|p| (p.spec, p.normalized))
    })
    .await?;
    let mut res = created.response(StatusCode::ACCEPTED);
    res.insert_header((header::LOCATION, format!("/v1/exports/{}", created.task.id)));
    Ok(res.json(view(&state, &created.task).await))
}

/// Get an export task.
#[utoipa::path(
    get,
    path = "/v1/exports/{id}",
    tag = "native",
    operation_id = "native_get_export",
    params(("id" = String, Path, description = "Task id (`userexport_…`)")),
    responses(
        (status = 200, description = "The task", body = doc::NativeTask),
        (status = 401, description = "Missing or invalid credentials", body = doc::NativeError),
        (status = 404, description = "No such task in this project", body = doc::NativeError),
        (status = 500, description = "Internal error", body = doc::NativeError),
    ),
    security(("management_key" = []), ("admin_jwt" = []))
)]
async fn get(state: web::Data<AppState>, auth: Authenticated, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let task = service::get_export(&state, &auth.project, &id).await.map_err(|e| e.into_api(DIALECT))?;
    Ok(HttpResponse::Ok().json(view(&state, &task).await))
}

/// Cancel an export task.
///
/// A pending task is cancelled at once; a processing one is flagged and its worker stops at the
/// next page.
#[utoipa::path(
    post,
    path = "/v1/exports/{id}/cancel",
    tag = "native",
    operation_id = "native_cancel_export",
    params(("id" = String, Path, description = "Task id (`userexport_…`)")),
    responses(
        (status = 202, description = "Cancelled, or cancel requested", body = doc::NativeTask),
        (status = 401, description = "Missing or invalid credentials", body = doc::NativeError),
        (status = 404, description = "No such task in this project", body = doc::NativeError),
        (status = 409, description = "The task already finished (`task_state_conflict`)", body = doc::NativeError),
        (status = 500, description = "Internal error", body = doc::NativeError),
    ),
    security(("management_key" = []), ("admin_jwt" = []))
)]
async fn cancel(
    state: web::Data<AppState>,
    auth: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = service::cancel_export(&state, &auth.project, &id).await.map_err(|e| e.into_api(DIALECT))?;
    Ok(HttpResponse::Accepted().json(view(&state, &task).await))
}

/// Raw list query; every value is parsed by hand for precise errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    created_from: Option<String>,
    created_to: Option<String>,
    limit: Option<String>,
    from: Option<String>,
}

fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::with_message(DIALECT, Code::InvalidQuery, message)
}

/// Parses the list query string into a store query (asking for `limit + 1` rows) and the page size.
pub fn parse_list_query(query: &str) -> Result<(TaskQuery, u64), ApiError> {
    let params = web::Query::<ListParams>::from_query(query)
        .map_err(|e| bad_query(format!("invalid query string: {e}")))?
        .into_inner();
    let statuses = match params.status.as_deref() {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<TaskStatus>().map_err(bad_query))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let time = |name: &str, v: Option<&str>| -> Result<Option<DateTime<Utc>>, ApiError> {
        v.map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.to_utc())
                .map_err(|e| bad_query(format!("`{name}` must be an RFC 3339 timestamp: {e}")))
        })
        .transpose()
    };
    let created_from = time("created_from", params.created_from.as_deref())?;
    let created_to = time("created_to", params.created_to.as_deref())?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad_query(format!("`limit` must be an integer from 1 to {MAX_LIMIT}")))?,
    };
    let before =
        params.from.as_deref().map(|s| TaskId::parse(s).map_err(|e| bad_query(format!("`from`: {e}")))).transpose()?;
    Ok((TaskQuery { statuses, created_from, created_to, before, limit: limit + 1 }, limit))
}

/// Splits `limit + 1` fetched rows into a page and the `next` cursor (the last row of the page,
/// when more rows follow).
pub fn paginate(mut rows: Vec<ExportTask>, limit: u64) -> (Vec<ExportTask>, Option<TaskId>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|t| t.id.clone());
        (rows, next)
    } else {
        (rows, None)
    }
}

/// List export tasks, newest first.
#[utoipa::path(
    get,
    path = "/v1/exports",
    tag = "native",
    operation_id = "native_list_exports",
    params(
        ("status" = Option<String>, Query, description = "Comma-separated statuses, e.g. `pending,processing`"),
        ("created_from" = Option<String>, Query, format = DateTime, description = "Created at or after (RFC 3339)"),
        ("created_to" = Option<String>, Query, format = DateTime, description = "Created at or before (RFC 3339)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)"),
        ("from" = Option<String>, Query, description = "The `next` cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = doc::NativeTaskPage),
        (status = 400, description = "Invalid query (`invalid_query`)", body = doc::NativeError),
        (status = 401, description = "Missing or invalid credentials", body = doc::NativeError),
        (status = 500, description = "Internal error", body = doc::NativeError),
    ),
    security(("management_key" = []), ("admin_jwt" = []))
)]
async fn list(state: web::Data<AppState>, auth: Authenticated, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (query, limit) = parse_list_query(req.query_string())?;
    let rows = service::list_exports(&state, &auth.project, &query).await.map_err(|e| match e {
        service::ServiceError::NotFound => bad_query("`from` names no task of this project"),
        other => other.into_api(DIALECT),
    })?;
    let (page, next) = paginate(rows, limit);
    let mut results = Vec::with_capacity(page.len());
    for task in &page {
        results.push(view(&state, task).await);
    }
    Ok(HttpResponse::Ok().json(json!({
        "results": results,
        "limit": limit,
        "next": next.map(|id| id.to_string()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use userexport_domain::{ErrorObject, ProjectId};

    #[test]
    fn minimal_body_gets_defaults() {
        let p = parse_request(&json!({"format": "csv"})).unwrap();
        assert_eq!(p.spec.fields().len(), 41);
        assert!(!p.spec.gzip());
        assert!(p.spec.formula_guard());
        assert_eq!(
            p.normalized,
            json!({"format": "csv", "filters": {"test_users": "exclude"}, "view": "authgear", "gzip": false, "formula_guard": true})
        );
    }

    #[test]
    fn full_body_parses() {
        let p = parse_request(&json!({
            "format": "ndjson", "fields": [{"pointer": "/userId", "name": "id"}, {"pointer": "/email"}],
            "filters": {"statuses": ["enabled"]}, "view": "descope", "gzip": true, "formula_guard": false
        }))
        .unwrap();
        assert_eq!(p.spec.view(), UserView::Descope);
        assert_eq!(p.spec.headers(), ["id", "email"]);
        assert!(p.spec.gzip() && !p.spec.formula_guard());
        assert_eq!(p.normalized["fields"], json!([{"pointer": "/userId", "name": "id"}, {"pointer": "/email"}]));
    }

    #[test]
    fn bad_bodies_are_400_with_a_location() {
        let cases = [
            (json!({}), "invalid_request_body", "(root)"),
            (json!({"format": "xml"}), "invalid_request_body", "/format"),
            (json!({"format": "csv", "extra": 1}), "invalid_request_body", "(root)"),
            (json!({"format": "csv", "fields": [{"pointer": "sub"}]}), "invalid_field_pointer", "/fields/0/pointer"),
            (
                json!({"format": "csv", "fields": [{"pointer": "/a", "title": "x"}]}),
                "invalid_request_body",
                "/fields/0",
            ),
            (json!({"format": "csv", "fields": []}), "invalid_request_body", "/fields"),
            (
                json!({"format": "csv", "fields": [{"pointer": "/a", "name": ""}]}),
                "invalid_request_body",
                "/fields/0/name",
            ),
            (json!({"format": "csv", "view": "okta"}), "invalid_request_body", "/view"),
            (json!({"format": "csv", "gzip": "yes"}), "invalid_request_body", "/gzip"),
            (json!({"format": "csv", "filters": {"x": 1}}), "invalid_request_body", "/filters"),
        ];
        for (body, code, location) in cases {
            let e = parse_request(&body).unwrap_err();
            let rendered = e.body();
            assert_eq!(rendered["code"], code, "{body}");
            assert!(rendered["message"].as_str().unwrap().contains(location), "{body}: {rendered}");
            assert_eq!(e.status().as_u16(), 400);
        }
        let e =
            parse_request(&json!({"format": "csv", "fields": [{"pointer": "/a/b"}, {"pointer": "/a.b"}]})).unwrap_err();
        assert_eq!(e.code, Code::NonUniqueFieldNames);
        assert_eq!(e.info.unwrap()["field_names"], json!(["a.b", "a.b"]));
    }

    #[test]
    fn list_query_parsing() {
        let (q, limit) = parse_list_query("").unwrap();
        assert_eq!((limit, q.limit), (DEFAULT_LIMIT, DEFAULT_LIMIT + 1));
        assert!(q.statuses.is_empty() && q.before.is_none() && q.created_from.is_none());

        let id = TaskId::generate();
        let qs = format!(
            "status=pending,completed&created_from=2024-01-01T00:00:00Z&created_to=2024-02-01T00:00:00%2B01:00&limit=5&from={id}"
        );
        let (q, limit) = parse_list_query(&qs).unwrap();
        assert_eq!(limit, 5);
        assert_eq!(q.limit, 6);
        assert_eq!(q.statuses, [TaskStatus::Pending, TaskStatus::Completed]);
        assert_eq!(q.before, Some(id));
        assert_eq!(q.created_from.unwrap().to_rfc3339(), "2024-01-01T00:00:00+00:00");
        assert_eq!(q.created_to.unwrap().to_rfc3339(), "2024-01-31T23:00:00+00:00");

        for bad in
            ["limit=0", "limit=101", "limit=x", "status=zombie", "created_from=yesterday", "from=job_x", "page=2"]
        {
            let e = parse_list_query(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidQuery, "{bad}");
            assert_eq!(e.status().as_u16(), 400);
        }
    }

    fn task(status: TaskStatus) -> ExportTask {
        let now = Utc::now();
        let spec = parse_request(
            &json!({"format": "csv", "fields": [{"pointer": "/sub", "name": "id"}, {"pointer": "/email"}]}),
        )
        .unwrap()
        .spec;
        ExportTask {
            status,
            rows_written: 50,
            rows_total: Some(200),
            bytes_written: 1000,
            attempts: 1,
            started_at: Some(now),
            finished_at: status.is_terminal().then_some(now),
            ..ExportTask::new_pending(ProjectId::generate(), userexport_domain::Dialect::Native, spec, json!({}), now)
        }
    }

    #[test]
    fn paginate_uses_the_extra_row() {
        let rows: Vec<ExportTask> = (0..3).map(|_| task(TaskStatus::Pending)).collect();
        let (page, next) = paginate(rows.clone(), 2);
        assert_eq!(page.len(), 2);
        assert_eq!(next, Some(rows[1].id.clone()));
        let (page, next) = paginate(rows[..2].to_vec(), 2);
        assert_eq!((page.len(), next), (2, None));
    }

    #[test]
    fn task_view_has_every_key() {
        let now = Utc::now();
        let v = render_task(&task(TaskStatus::Processing), None, now);
        for key in [
            "id",
            "status",
            "format",
            "view",
            "gzip",
            "fields",
            "filters",
            "rows_written",
            "rows_total",
            "percentage_done",
            "time_left_seconds",
            "created_at",
            "started_at",
            "completed_at",
            "download_url",
            "download_url_expires_at",
            "error",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["status"], "processing");
        assert_eq!(v["percentage_done"], 25);
        assert_eq!(v["fields"], json!([{"pointer": "/sub", "name": "id"}, {"pointer": "/email", "name": "email"}]));
        assert!(v["completed_at"].is_null() && v["download_url"].is_null() && v["error"].is_null());

        let done = task(TaskStatus::Completed);
        let v = render_task(&done, Some(("https://x/y", Some(now))), now);
        assert_eq!(v["percentage_done"], 100);
        assert_eq!(v["download_url"], "https://x/y");
        assert_eq!(v["download_url_expires_at"], rfc3339_nano(&now));
        assert!(v["completed_at"].is_string());

        let mut failed = task(TaskStatus::Failed);
        failed.error = Some(ErrorObject::new(Code::ExportFailed, "boom"));
        let v = render_task(&failed, None, now);
        assert_eq!(v["error"]["code"], "export_failed");
        assert_eq!(v["error"]["message"], "boom");
        assert!(v["completed_at"].is_null());
        assert!(v["finished_at"].is_string());
    }
}
