//! Authgear's Admin User Export API (compat-apis.md §1).
//!
//! - `POST /_api/admin/users/export` → 200 `{"result": task}`
//! - `GET /_api/admin/users/export/{id}` → 200 `{"result": task}`
//!
//! The request schema is checked by hand so that violations are reported the way Authgear's JSON
//! schema validator does (`info.causes[] = {location, kind, details}`, all causes at once). Our one
//! extension is the optional `filters` object ([`UserFilter`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde_json::{Map, Value, json};
use userexport_domain::user::rfc3339_nano;
use userexport_domain::{
    Code, ExportFormat, ExportSpec, ExportTask, JsonPointer, SpecError, TaskStatus, UserFilter, UserView,
};

use crate::AppState;
use crate::auth::Authenticated;
use crate::body::{self, FieldError};
use crate::error::{ApiDialect, ApiError};
use crate::openapi::schemas as doc;
use crate::routes::Routes;
use crate::service;

const DIALECT: ApiDialect = ApiDialect::Authgear;

/// Registers the Authgear routes.
pub fn configure(routes: &mut Routes<'_>) {
    routes.post("/_api/admin/users/export", create).get("/_api/admin/users/export/{id}", get);
}

/// Why an Authgear create request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// Schema violations (`Invalid` / `ValidationFailed`).
    Invalid(Vec<FieldError>),
    /// Duplicate header names; all names in order (`Invalid` / `UserExportNonUniqueFieldNames`).
    NonUniqueFieldNames(Vec<String>),
}

impl RequestError {
    /// The error in the Authgear envelope.
    pub fn into_api(self) -> ApiError {
        match self {
            RequestError::Invalid(errors) => body::validation_error(DIALECT, &errors),
            RequestError::NonUniqueFieldNames(names) => ApiError::with_message(
                DIALECT,
                Code::NonUniqueFieldNames,
                format!("field names are not unique: {}", names.join(", ")),
            )
            .info(json!({ "field_names": names })),
        }
    }
}

/// A valid Authgear create request.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    /// The export to run.
    pub spec: ExportSpec,
    /// The parsed request as Authgear echoes it (`field_name` only where sent, extra keys dropped).
    pub echo: Value,
}

fn type_error(location: &str, v: &Value, expected: &str) -> FieldError {
    FieldError {
        location: location.to_owned(),
        kind: "type",
        details: json!({ "actual": [body::json_type(v)], "expected": [expected] }),
        code: Code::InvalidRequestBody,
    }
}

fn required(location: &str, obj: &Map<String, Value>, missing: &str) -> FieldError {
    FieldError {
        location: location.to_owned(),
        kind: "required",
        details: json!({ "actual": obj.keys().collect::<Vec<_>>(), "expected": [missing], "missing": [missing] }),
        code: Code::InvalidRequestBody,
    }
}

fn min_items_or_length(location: &str, kind: &'static str, actual: usize) -> FieldError {
    FieldError {
        location: location.to_owned(),
        kind,
        details: json!({ "actual": actual, "expected": 1 }),
        code: Code::InvalidRequestBody,
    }
}

/// Checks one `csv.fields[i]` item; returns the pointer and name when valid.
fn parse_field(i: usize, item: &Value, errors: &mut Vec<FieldError>) -> Option<(JsonPointer, Option<String>)> {
    let loc = format!("/csv/fields/{i}");
    let Some(obj) = item.as_object() else {
        errors.push(type_error(&loc, item, "object"));
        return None;
    };
    let pointer = match obj.get("pointer") {
        None => {
            errors.push(required(&loc, obj, "pointer"));
            None
        }
        Some(Value::String(s)) => match JsonPointer::parse(s) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(FieldError {
                    location: format!("{loc}/pointer"),
                    kind: "format",
                    details: json!({ "error": e.reason, "format": "json-pointer" }),
                    code: Code::InvalidFieldPointer,
                });
                None
            }
        },
        Some(other) => {
            errors.push(type_error(&format!("{loc}/pointer"), other, "string"));
            None
        }
    };
    let name = match obj.get("field_name") {
        None => Some(None),
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(min_items_or_length(&format!("{loc}/field_name"), "minLength", 0));
            None
        }
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(other) => {
            errors.push(type_error(&format!("{loc}/field_name"), other, "string"));
            None
        }
    };
    Some((pointer?, name?))
}

/// Parses and validates a create request body (compat-apis.md §1.2).
pub fn parse_request(body: &Value) -> Result<ParsedRequest, RequestError> {
    let mut errors = Vec::new();
    let Some(root) = body.as_object() else {
        return Err(RequestError::Invalid(vec![type_error("", body, "object")]));
    };
    for key in root.keys() {
        if !matches!(key.as_str(), "format" | "csv" | "filters") {
            errors.push(FieldError {
                location: String::new(),
                kind: "additionalProperties",
                details: json!({ "property": key }),
                code: Code::InvalidRequestBody,
            });
        }
    }

    let format = match root.get("format") {
        None => {
            errors.push(required("", root, "format"));
            None
        }
        Some(Value::String(s)) => match s.parse::<ExportFormat>() {
            Ok(f) => Some(f),
            Err(_) => {
                errors.push(FieldError {
                    location: "/format".into(),
                    kind: "enum",
                    details: json!({ "actual": s, "expected": ["csv", "ndjson"] }),
                    code: Code::InvalidRequestBody,
                });
                None
            }
        },
        Some(other) => {
            errors.push(type_error("/format", other, "string"));
            None
        }
    };

    // `None`: no csv.fields sent; `Some(list)`: the fields as sent.
    let mut fields: Option<Vec<(JsonPointer, Option<String>)>> = None;
    let mut csv_sent = false;
    match root.get("csv") {
        None => {}
        Some(Value::Object(csv)) => {
            csv_sent = true;
            match csv.get("fields") {
                None => {}
                Some(Value::Array(items)) if items.is_empty() => {
                    errors.push(min_items_or_length("/csv/fields", "minItems", 0));
                }
                Some(Value::Array(items)) => {
                    let parsed: Vec<_> =
                        items.iter().enumerate().map(|(i, v)| parse_field(i, v, &mut errors)).collect();
                    fields = parsed.into_iter().collect();
                }
                Some(other) => errors.push(type_error("/csv/fields", other, "array")),
            }
        }
        Some(other) => errors.push(type_error("/csv", other, "object")),
    }

    let filter = match root.get("filters") {
        None => None,
        Some(v) => match body::from_value::<UserFilter>(v, "/filters") {
            Ok(f) => Some(f),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };

    if !errors.is_empty() {
        return Err(RequestError::Invalid(errors));
    }
    let format = format.expect("format is set when there are no errors");

    // Duplicate names are checked whenever csv.fields is sent, even for ndjson.
    if let Some(fields) = &fields {
        let names: Vec<String> = fields.iter().map(|(p, n)| n.clone().unwrap_or_else(|| p.header_name())).collect();
        let mut seen = std::collections::HashSet::new();
        if !names.iter().all(|n| seen.insert(n.as_str())) {
            return Err(RequestError::NonUniqueFieldNames(names));
        }
    }

    let mut builder = ExportSpec::builder(format).view(UserView::Authgear).filter(filter.clone().unwrap_or_default());
    if format == ExportFormat::Csv {
        for (pointer, name) in fields.iter().flatten() {
            builder = builder.field(pointer.clone(), name.clone());
        }
    }
    let spec = builder.build().map_err(|e| match e {
        SpecError::NonUniqueFieldNames(names) => RequestError::NonUniqueFieldNames(names),
        SpecError::FilterTooLarge(name) => {
            RequestError::Invalid(vec![FieldError::general(format!("/filters/{name}"), e.to_string())])
        }
        other => RequestError::Invalid(vec![FieldError::general("/csv/fields", other.to_string())]),
    })?;

    let mut echo = Map::new();
    echo.insert("format".into(), json!(format.as_str()));
    if csv_sent {
        let mut csv = Map::new();
        if let Some(fields) = &fields {
            let items: Vec<Value> = fields
                .iter()
                .map(|(p, n)| {
                    let mut item = Map::new();
                    item.insert("pointer".into(), json!(p.as_str()));
                    if let Some(n) = n {
                        item.insert("field_name".into(), json!(n));
                    }
                    Value::Object(item)
                })
                .collect();
            csv.insert("fields".into(), Value::Array(items));
        }
        echo.insert("csv".into(), Value::Object(csv));
    }
    if let Some(filter) = &filter {
        echo.insert("filters".into(), serde_json::to_value(filter).unwrap_or(Value::Null));
    }
    Ok(ParsedRequest { spec, echo: Value::Object(echo) })
}

/// The Authgear echo of a task created through another dialect, rebuilt from its spec.
fn echo_from_spec(spec: &ExportSpec) -> Value {
    let mut echo = Map::new();
    echo.insert("format".into(), json!(spec.format().as_str()));
    if spec.fields_given() {
        let fields: Vec<Value> = spec
            .fields()
            .iter()
            .map(|f| match f.explicit_name() {
                Some(n) => json!({ "pointer": f.pointer().as_str(), "field_name": n }),
                None => json!({ "pointer": f.pointer().as_str() }),
            })
            .collect();
        echo.insert("csv".into(), json!({ "fields": fields }));
    }
    if !spec.filter().is_empty() {
        echo.insert("filters".into(), serde_json::to_value(spec.filter()).unwrap_or(Value::Null));
    }
    Value::Object(echo)
}

/// The Authgear task object (compat-apis.md §1.3) of a task that is not expired.
///
/// `pending` covers pending and processing; `completed` covers completed (with `completed_at` and
/// `download_url`), failed (with `failed_at` and an `UnexpectedError`) and cancelled (with
/// `failed_at` and a `TaskCancelled` error).
pub fn render_task(task: &ExportTask, download_url: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(task.id.as_str()));
    m.insert("created_at".into(), json!(rfc3339_nano(&task.created_at)));
    let finished = task.finished_at.unwrap_or(task.updated_at);
    let status = match task.status {
        TaskStatus::Pending | TaskStatus::Processing => "pending",
        TaskStatus::Completed => {
            m.insert("completed_at".into(), json!(rfc3339_nano(&finished)));
            "completed"
        }
        TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Expired => {
            m.insert("failed_at".into(), json!(rfc3339_nano(&finished)));
            "completed"
        }
    };
    m.insert("status".into(), json!(status));
    let request = if task.dialect == userexport_domain::Dialect::Authgear && task.request.is_object() {
        task.request.clone()
    } else {
        echo_from_spec(&task.spec)
    };
    m.insert("request".into(), request);
    match task.status {
        TaskStatus::Completed => {
            if let Some(url) = download_url {
                m.insert("download_url".into(), json!(url));
            }
        }
        TaskStatus::Failed | TaskStatus::Expired => {
            let message = task
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unexpected error occurred".to_owned());
            m.insert(
                "error".into(),
                json!({ "name": "InternalError", "reason": "UnexpectedError", "message": message, "code": 500 }),
            );
        }
        TaskStatus::Cancelled => {
            let e = ApiError::new(DIALECT, Code::TaskCancelled).body();
            m.insert("error".into(), e["error"].clone());
        }
        TaskStatus::Pending | TaskStatus::Processing => {}
    }
    Value::Object(m)
}

async fn view(state: &AppState, task: &ExportTask) -> Value {
    let url = service::download_url(state, task, Utc::now(), super::MIN_URL_VALIDITY).await;
    render_task(task, url.as_ref().map(|(u, _)| u.as_str()))
}

/// Create a user export (Authgear's Admin API).
///
/// Schema violations are all reported at once in `error.info.causes`.
#[utoipa::path(
    post,
    path = "/_api/admin/users/export",
    tag = "authgear",
    operation_id = "authgear_create_export",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays of the same key and body return the first task")),
    request_body(content = doc::AuthgearCreateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The task was created", body = doc::AuthgearTaskEnvelope),
        (status = 400, description = "`Invalid` / `ValidationFailed` or `UserExportNonUniqueFieldNames`, `BadRequest` / `InvalidJSON`", body = doc::AuthgearErrorEnvelope),
        (status = 401, description = "Missing or invalid credentials", body = doc::AuthgearErrorEnvelope),
        (status = 409, description = "`Idempotency-Key` reused with another body", body = doc::AuthgearErrorEnvelope),
        (status = 413, description = "Body too large", body = doc::AuthgearErrorEnvelope),
        (status = 500, description = "Internal error", body = doc::AuthgearErrorEnvelope),
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
        parse_request(b).map(|p| (p.spec, p.echo)).map_err(RequestError::into_api)
    })
    .await?;
    Ok(created.response(StatusCode::OK).json(json!({ "result": view(&state, &created.task).await })))
}

/// Get a user export (Authgear's Admin API).
#[utoipa::path(
    get,
    path = "/_api/admin/users/export/{id}",
    tag = "authgear",
    operation_id = "authgear_get_export",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = doc::AuthgearTaskEnvelope),
        (status = 401, description = "Missing or invalid credentials", body = doc::AuthgearErrorEnvelope),
        (status = 404, description = "`TaskNotFound`, or `TaskExpired` past retention", body = doc::AuthgearErrorEnvelope),
        (status = 500, description = "Internal error", body = doc::AuthgearErrorEnvelope),
    ),
    security(("management_key" = []), ("admin_jwt" = []))
)]
async fn get(state: web::Data<AppState>, auth: Authenticated, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let task = service::get_export(&state, &auth.project, &id).await.map_err(|e| e.into_api(DIALECT))?;
    if service::is_expired(&task, Utc::now()) {
        return Err(ApiError::new(DIALECT, Code::TaskExpired));
    }
    Ok(HttpResponse::Ok().json(json!({ "result": view(&state, &task).await })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use userexport_domain::{ErrorObject, ProjectId, TaskId};

    fn ok(v: Value) -> ParsedRequest {
        parse_request(&v).unwrap_or_else(|e| panic!("{v}: {e:?}"))
    }

    fn invalid(v: Value) -> Vec<FieldError> {
        match parse_request(&v) {
            Err(RequestError::Invalid(errors)) => errors,
            other => panic!("{v}: expected a validation error, got {other:?}"),
        }
    }

    fn one(v: Value) -> (String, &'static str, Value) {
        let errors = invalid(v);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = errors.into_iter().next().unwrap();
        (e.location, e.kind, e.details)
    }

    #[test]
    fn the_docs_example_parses_and_echoes() {
        let req =
            json!({"format":"csv","csv":{"fields":[{"pointer":"/sub","field_name":"user_id"},{"pointer":"/email"}]}});
        let p = ok(req.clone());
        assert_eq!(p.echo, req);
        assert_eq!(p.spec.format(), ExportFormat::Csv);
        assert_eq!(p.spec.view(), UserView::Authgear);
        assert_eq!(p.spec.headers(), ["user_id", "email"]);
        assert!(p.spec.fields_given());
    }

    #[test]
    fn defaults_apply_without_csv_or_fields() {
        let p = ok(json!({"format": "csv"}));
        assert_eq!(p.spec.fields().len(), 41);
        assert_eq!(p.echo, json!({"format": "csv"}));
        let p = ok(json!({"format": "csv", "csv": {}}));
        assert_eq!(p.spec.fields().len(), 41);
        assert_eq!(p.echo, json!({"format": "csv", "csv": {}}));
        let p = ok(json!({"format": "ndjson"}));
        assert!(p.spec.fields().is_empty());
    }

    #[test]
    fn format_is_required_and_an_enum() {
        let (loc, kind, details) = one(json!({}));
        assert_eq!((loc.as_str(), kind), ("", "required"));
        assert_eq!(details["missing"], json!(["format"]));
        let (loc, kind, _) = one(json!({"format": "xml"}));
        assert_eq!((loc.as_str(), kind), ("/format", "enum"));
        let (loc, kind, details) = one(json!({"format": 1}));
        assert_eq!((loc.as_str(), kind), ("/format", "type"));
        assert_eq!(details["actual"], json!(["integer"]));
        let (loc, kind, _) = one(json!(["csv"]));
        assert_eq!((loc.as_str(), kind), ("", "type"));
    }

    #[test]
    fn unknown_top_level_keys_are_rejected_but_csv_and_items_allow_extras() {
        let (loc, kind, details) = one(json!({"format": "csv", "limit": 5}));
        assert_eq!((loc.as_str(), kind), ("", "additionalProperties"));
        assert_eq!(details["property"], "limit");
        let p = ok(json!({"format": "csv", "csv": {"delimiter": ";", "fields": [{"pointer": "/sub", "x": 1}]}}));
        assert_eq!(p.spec.headers(), ["sub"]);
        // Extra keys are dropped from the echo.
        assert_eq!(p.echo, json!({"format": "csv", "csv": {"fields": [{"pointer": "/sub"}]}}));
    }

    #[test]
    fn csv_fields_rules() {
        let (loc, kind, details) = one(json!({"format": "csv", "csv": {"fields": []}}));
        assert_eq!((loc.as_str(), kind), ("/csv/fields", "minItems"));
        assert_eq!(details, json!({"actual": 0, "expected": 1}));
        let (loc, kind, _) = one(json!({"format": "csv", "csv": {"fields": [{"field_name": "x"}]}}));
        assert_eq!((loc.as_str(), kind), ("/csv/fields/0", "required"));
        let (loc, kind, _) = one(json!({"format": "csv", "csv": {"fields": [{"pointer": "/a", "field_name": ""}]}}));
        assert_eq!((loc.as_str(), kind), ("/csv/fields/0/field_name", "minLength"));
        let (loc, kind, _) = one(json!({"format": "csv", "csv": {"fields": [{"pointer": 3}]}}));
        assert_eq!((loc.as_str(), kind), ("/csv/fields/0/pointer", "type"));
        let (loc, kind, _) = one(json!({"format": "csv", "csv": {"fields": "nope"}}));
        assert_eq!((loc.as_str(), kind), ("/csv/fields", "type"));
        let (loc, kind, _) = one(json!({"format": "csv", "csv": []}));
        assert_eq!((loc.as_str(), kind), ("/csv", "type"));
        let (loc, kind, _) = one(json!({"format": "csv", "csv": {"fields": ["/sub"]}}));
        assert_eq!((loc.as_str(), kind), ("/csv/fields/0", "type"));
    }

    #[test]
    fn pointers_are_checked_for_rfc6901_syntax_only() {
        let (loc, kind, details) =
            one(json!({"format": "csv", "csv": {"fields": [{"pointer": "/ok"}, {"pointer": "sub"}]}}));
        assert_eq!((loc.as_str(), kind), ("/csv/fields/1/pointer", "format"));
        assert_eq!(details["format"], "json-pointer");
        assert!(details["error"].as_str().unwrap().contains("expecting `/`"));
        let errors = invalid(json!({"format": "csv", "csv": {"fields": [{"pointer": "/a~2"}]}}));
        assert_eq!(errors[0].code, Code::InvalidFieldPointer);
        // "" and "/" pass; pointers are never checked to resolve. (Both are named "", so they
        // cannot appear together, exactly as in Authgear.)
        let p = ok(json!({"format": "csv", "csv": {"fields": [{"pointer": ""}, {"pointer": "/no/such/thing"}]}}));
        assert_eq!(p.spec.fields().len(), 2);
        let p = ok(json!({"format": "csv", "csv": {"fields": [{"pointer": "/"}]}}));
        assert_eq!(p.spec.fields().len(), 1);
    }

    #[test]
    fn escaped_pointers_unescape_into_headers() {
        let p = ok(
            json!({"format": "csv", "csv": {"fields": [{"pointer": "/a~1b"}, {"pointer": "/c~0d"}, {"pointer": "/~01"}]}}),
        );
        assert_eq!(p.spec.headers(), ["a/b", "c~d", "~1"]);
        assert_eq!(p.spec.fields()[0].pointer().tokens(), ["a/b"]);
        // The echo keeps the pointers as written.
        assert_eq!(p.echo["csv"]["fields"][0]["pointer"], "/a~1b");
    }

    #[test]
    fn all_causes_are_reported_together() {
        let errors = invalid(json!({"x": 1, "csv": {"fields": [{"pointer": "bad"}, {"field_name": ""}]}}));
        let kinds: Vec<(&str, &str)> = errors.iter().map(|e| (e.location.as_str(), e.kind)).collect();
        assert!(kinds.contains(&("", "additionalProperties")));
        assert!(kinds.contains(&("", "required")));
        assert!(kinds.contains(&("/csv/fields/0/pointer", "format")));
        assert!(kinds.contains(&("/csv/fields/1", "required")));
        assert!(kinds.contains(&("/csv/fields/1/field_name", "minLength")));
        let api = RequestError::Invalid(errors).into_api();
        let body = api.body();
        assert_eq!(body["error"]["reason"], "ValidationFailed");
        assert_eq!(body["error"]["message"], "invalid request body");
        assert_eq!(body["error"]["info"]["causes"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn duplicate_names_are_rejected_even_for_ndjson() {
        let fields = json!([{"pointer": "/claims/0/email"}, {"pointer": "/sub"}, {"pointer": "/claims/0/email"}]);
        for format in ["csv", "ndjson"] {
            match parse_request(&json!({"format": format, "csv": {"fields": fields}})) {
                Err(RequestError::NonUniqueFieldNames(names)) => {
                    assert_eq!(names, ["claims.0.email", "sub", "claims.0.email"])
                }
                other => panic!("{format}: {other:?}"),
            }
        }
        // `/a.b` and `/a/b` collide; an explicit name collides with a derived one.
        let e = parse_request(&json!({"format": "csv", "csv": {"fields": [{"pointer": "/a.b"}, {"pointer": "/a/b"}]}}));
        assert!(matches!(e, Err(RequestError::NonUniqueFieldNames(_))));
        let e = parse_request(
            &json!({"format": "csv", "csv": {"fields": [{"pointer": "/sub"}, {"pointer": "/x", "field_name": "sub"}]}}),
        );
        assert!(matches!(e, Err(RequestError::NonUniqueFieldNames(_))));
        let body = RequestError::NonUniqueFieldNames(vec!["a".into(), "a".into()]).into_api().body();
        assert_eq!(
            body,
            json!({"error": {"name": "Invalid", "reason": "UserExportNonUniqueFieldNames",
                "message": "field names are not unique", "code": 400, "info": {"field_names": ["a", "a"]}}})
        );
    }

    #[test]
    fn ndjson_ignores_csv_fields_for_output() {
        let p = ok(json!({"format": "ndjson", "csv": {"fields": [{"pointer": "/sub"}]}}));
        assert!(p.spec.fields().is_empty());
        assert_eq!(p.echo["csv"]["fields"][0]["pointer"], "/sub");
    }

    #[test]
    fn filters_extension() {
        let p = ok(json!({"format": "ndjson", "filters": {"statuses": ["enabled"], "emails": ["a@b.c"]}}));
        assert_eq!(p.spec.filter().emails, ["a@b.c"]);
        assert_eq!(p.echo["filters"]["statuses"], json!(["enabled"]));
        let (loc, kind, _) = one(json!({"format": "ndjson", "filters": {"nope": 1}}));
        assert_eq!((loc.as_str(), kind), ("/filters", "additionalProperties"));
        let (loc, kind, _) = one(json!({"format": "ndjson", "filters": {"statuses": ["zombie"]}}));
        assert_eq!((loc.as_str(), kind), ("/filters/statuses/0", "enum"));
    }

    fn task(status: TaskStatus) -> ExportTask {
        let p = ok(json!({"format": "csv", "csv": {"fields": [{"pointer": "/sub", "field_name": "user_id"}]}}));
        let created = chrono::DateTime::parse_from_rfc3339("2024-10-07T21:06:24.361634372Z").unwrap().to_utc();
        let finished = chrono::DateTime::parse_from_rfc3339("2024-10-07T21:06:24.551711713Z").unwrap().to_utc();
        let dialect = userexport_domain::Dialect::Authgear;
        ExportTask {
            id: TaskId::parse("userexport_VWFAACAMB5V0BY1J7KK5NS3GV1TQAACQ").unwrap(),
            status,
            attempts: 1,
            finished_at: status.is_terminal().then_some(finished),
            updated_at: finished,
            ..ExportTask::new_pending(ProjectId::generate(), dialect, p.spec, p.echo, created)
        }
    }

    #[test]
    fn pending_and_processing_render_as_pending() {
        for status in [TaskStatus::Pending, TaskStatus::Processing] {
            let v = render_task(&task(status), None);
            assert_eq!(
                v,
                json!({"id": "userexport_VWFAACAMB5V0BY1J7KK5NS3GV1TQAACQ", "created_at": "2024-10-07T21:06:24.361634372Z",
                    "status": "pending",
                    "request": {"format": "csv", "csv": {"fields": [{"pointer": "/sub", "field_name": "user_id"}]}}})
            );
        }
    }

    #[test]
    fn completed_renders_like_the_docs() {
        let v = render_task(&task(TaskStatus::Completed), Some("https://files.example/x.csv?sig=1"));
        assert_eq!(v["status"], "completed");
        assert_eq!(v["completed_at"], "2024-10-07T21:06:24.551711713Z");
        assert_eq!(v["download_url"], "https://files.example/x.csv?sig=1");
        assert!(v.get("error").is_none() && v.get("failed_at").is_none());
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "created_at", "completed_at", "status", "request", "download_url"]);
    }

    #[test]
    fn failed_and_cancelled_render_as_completed_with_an_error() {
        let mut failed = task(TaskStatus::Failed);
        failed.error = Some(ErrorObject::new(Code::ExportFailed, "object storage rejected the upload"));
        let v = render_task(&failed, Some("ignored"));
        assert_eq!(v["status"], "completed");
        assert_eq!(v["failed_at"], "2024-10-07T21:06:24.551711713Z");
        assert!(v.get("completed_at").is_none() && v.get("download_url").is_none());
        assert_eq!(
            v["error"],
            json!({"name": "InternalError", "reason": "UnexpectedError", "message": "object storage rejected the upload", "code": 500})
        );
        let v = render_task(&task(TaskStatus::Failed), None);
        assert_eq!(v["error"]["message"], "unexpected error occurred");

        let v = render_task(&task(TaskStatus::Cancelled), None);
        assert_eq!(v["status"], "completed");
        assert!(v["failed_at"].is_string());
        assert_eq!(v["error"]["reason"], "TaskCancelled");
    }

    #[test]
    fn tasks_of_other_dialects_get_a_rebuilt_echo() {
        let mut t = task(TaskStatus::Pending);
        t.dialect = userexport_domain::Dialect::Native;
        t.request = json!({"format": "csv", "fields": [{"pointer": "/sub", "name": "user_id"}], "view": "authgear"});
        let v = render_task(&t, None);
        assert_eq!(
            v["request"],
            json!({"format": "csv", "csv": {"fields": [{"pointer": "/sub", "field_name": "user_id"}]}})
        );
    }
}
