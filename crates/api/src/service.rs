//! The one export-task service every dialect calls: create, get, list and cancel, plus fresh
//! download URLs. Dialect modules only parse requests and render responses; no export logic lives
//! in them.
//!
//! # Creation and the queue
//!
//! [`create_export`] inserts the task row (with the idempotency key, if any) and then enqueues
//! `ExportJob::V1 { task_id }`. The row is the source of truth: if the enqueue fails, the error is
//! logged as a warning and the client still gets its task — the reconciler re-enqueues `pending`
//! tasks that have no queue entry. A replayed idempotent request is never enqueued again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use userexport_domain::{Code, ErrorCode, ExportSpec, ExportTask, JobAlias, Project, ProjectId, TaskId, TaskStatus};
use userexport_store::{StoreError, TaskQuery};

use crate::AppState;
use crate::error::{ApiDialect, ApiError};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such task in this project (or a malformed id).
    #[error("task not found")]
    NotFound,
    /// The task is in a state that forbids the operation.
    #[error("the task is already {0}")]
    Conflict(TaskStatus),
    /// The idempotency key was used with a different request.
    #[error("the idempotency key was used with a different request")]
    IdempotencyConflict,
    /// The store failed.
    #[error("store error")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyConflict => ServiceError::IdempotencyConflict,
            StoreError::NotFound => ServiceError::NotFound,
            other => ServiceError::Store(other),
        }
    }
}

impl ErrorCode for ServiceError {
    fn error_code(&self) -> Code {
        match self {
            ServiceError::NotFound => Code::TaskNotFound,
            ServiceError::Conflict(_) => Code::TaskStateConflict,
            ServiceError::IdempotencyConflict => Code::IdempotencyKeyReused,
            ServiceError::Store(e) if e.error_code() == Code::ServiceUnavailable => Code::ServiceUnavailable,
            ServiceError::Store(_) => Code::Internal,
        }
    }
}

impl ServiceError {
    /// The error in `dialect`'s envelope.
    pub fn into_api(self, dialect: ApiDialect) -> ApiError {
        ApiError::from_coded(dialect, self)
    }
}

/// A parsed create request, common to all dialects.
#[derive(Debug, Clone)]
pub struct NewExport {
    /// API the request came through.
    pub dialect: ApiDialect,
    /// What to export.
    pub spec: ExportSpec,
    /// The request as the dialect echoes it back (also what the idempotency hash covers).
    pub request: Value,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
}

/// Result of [`create_export`].
#[derive(Debug, Clone)]
pub struct Created {
    /// The new task, or the one created earlier with the same idempotency key.
    pub task: ExportTask,
    /// False when an idempotent request was replayed.
    pub created: bool,
}

impl Created {
    /// A response builder with `status`, marked `Idempotent-Replayed: true` when the request was
    /// a replay of an earlier one with the same idempotency key.
    pub fn response(&self, status: actix_web::http::StatusCode) -> actix_web::HttpResponseBuilder {
        let mut res = actix_web::HttpResponse::build(status);
        if !self.created {
            res.insert_header(("Idempotent-Replayed", "true"));
        }
        res
    }
}

/// JSON with object keys sorted recursively, for hashing.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// `sha256(dialect + "\n" + canonical JSON of the parsed request)`, hex.
pub fn request_hash(dialect: ApiDialect, request: &Value) -> String {
    let mut h = Sha256::new();
    h.update(dialect.as_str().as_bytes());
    h.update(b"\n");
    h.update(canonical_json(request).as_bytes());
    hex::encode(h.finalize())
}

/// Reads and checks the `Idempotency-Key` header: 1–255 visible ASCII characters.
pub fn idempotency_key(req: &actix_web::HttpRequest) -> Result<Option<String>, ApiError> {
    let dialect = ApiDialect::from_path(req.path());
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(None) };
    let bad = || {
        ApiError::with_message(
            dialect,
            Code::InvalidRequestBody,
            format!("the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| bad())?.trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// The shared body of every dialect's create handler: reads the JSON body (content type, size and
/// syntax checked), lets the dialect `parse` it into the spec and the request echo, and creates the
/// export, idempotently when the request carries an `Idempotency-Key`.
pub async fn create_from_request(
    state: &AppState,
    project: &Project,
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
    dialect: ApiDialect,
    parse: impl FnOnce(&Value) -> Result<(ExportSpec, Value), ApiError>,
) -> Result<Created, ApiError> {
    let body = crate::body::read_json(req, payload, state.settings.max_body_bytes).await?;
    let (spec, request) = parse(&body)?;
    let new = NewExport { dialect, spec, request, idempotency_key: idempotency_key(req)? };
    create_export(state, project, new).await.map_err(|e| e.into_api(dialect))
}

/// A fresh `pending` task for `project`.
pub fn new_task(project: &ProjectId, new: &NewExport, now: DateTime<Utc>) -> ExportTask {
    ExportTask::new_pending(project.clone(), new.dialect.task_dialect(), new.spec.clone(), new.request.clone(), now)
}

/// Creates (or, for a replayed idempotency key, returns) an export task and enqueues it.
pub async fn create_export(state: &AppState, project: &Project, new: NewExport) -> Result<Created, ServiceError> {
    let task = new_task(&project.id, &new, Utc::now());
    let hash = new.idempotency_key.as_ref().map(|_| request_hash(new.dialect, &new.request));
    let idempotency = new.idempotency_key.as_deref().zip(hash.as_deref());
    let (task, created) = state.store.insert_task(&task, idempotency).await?;
    if created {
        metrics::counter!(
            crate::ops::EXPORTS_CREATED,
            "dialect" => new.dialect.as_str(),
            "format" => task.spec.format().as_str()
        )
        .increment(1);
        if let Err(e) = state.queue.enqueue(&task.id).await {
            // The row is the truth; the reconciler re-enqueues pending tasks without a queue entry.
            tracing::warn!(task_id = %task.id, error = %e, "could not enqueue export; the reconciler will retry");
        }
        tracing::info!(task_id = %task.id, project_id = %project.id, dialect = new.dialect.as_str(), "export created");
    } else {
        tracing::info!(task_id = %task.id, "idempotent export request replayed");
    }
    Ok(Created { task, created })
}

/// The task `id` of `project`. Malformed ids and other projects' tasks are "not found".
pub async fn get_export(state: &AppState, project: &Project, id: &str) -> Result<ExportTask, ServiceError> {
    let id = TaskId::parse(id).map_err(|_| ServiceError::NotFound)?;
    state.store.get_task(&project.id, &id).await?.ok_or(ServiceError::NotFound)
}

/// The task of `project` whose Auth0 job id (its [`JobAlias`]) is `alias`. Malformed aliases and
/// other projects' tasks are "not found".
pub async fn get_export_by_alias(state: &AppState, project: &Project, alias: &str) -> Result<ExportTask, ServiceError> {
    let alias = JobAlias::parse(alias).map_err(|_| ServiceError::NotFound)?;
    state.store.get_task_by_alias(&project.id, &alias).await?.ok_or(ServiceError::NotFound)
}

/// Tasks of `project`, newest first, as selected by `query`.
pub async fn list_exports(
    state: &AppState,
    project: &Project,
    query: &TaskQuery,
) -> Result<Vec<ExportTask>, ServiceError> {
    Ok(state.store.list_tasks(&project.id, query).await?)
}

/// Asks to cancel task `id`: a pending task is cancelled at once, a processing one is flagged for
/// its worker. A task that already finished is a conflict.
pub async fn cancel_export(state: &AppState, project: &Project, id: &str) -> Result<ExportTask, ServiceError> {
    let current = get_export(state, project, id).await?;
    if current.status.is_terminal() {
        return Err(ServiceError::Conflict(current.status));
    }
    let task = state.store.request_cancel(&project.id, &current.id).await?.ok_or(ServiceError::NotFound)?;
    match task.status {
        TaskStatus::Cancelled => {}
        s if s.is_terminal() => return Err(ServiceError::Conflict(s)),
        _ => {}
    }
    metrics::counter!(crate::ops::EXPORTS_CANCEL_REQUESTED).increment(1);
    Ok(task)
}

/// Whether a task is past its retention: `expired`, or finished with `expires_at` in the past
/// (the sweeper has not caught up yet).
pub fn is_expired(task: &ExportTask, now: DateTime<Utc>) -> bool {
    task.status == TaskStatus::Expired || (task.status.is_terminal() && task.expires_at.is_some_and(|t| t <= now))
}

/// The file name offered for a task's file: the last segment of its object key.
pub fn download_filename(task: &ExportTask) -> String {
    match task.object_key.as_deref().and_then(|k| k.rsplit('/').next()).filter(|s| !s.is_empty()) {
        Some(name) => name.to_owned(),
        None => format!("{}.{}", task.id, task.spec.file_extension()),
    }
}

/// A usable download URL of a completed task and when it stops working.
///
/// The stored URL is returned while it stays valid for at least `min_validity` more; otherwise a
/// new one is presigned for `settings.download_url_ttl` (not persisted). If presigning fails, the
/// stored URL is returned (and the failure logged). `None` for tasks without a file.
pub async fn download_url(
    state: &AppState,
    task: &ExportTask,
    now: DateTime<Utc>,
    min_validity: Duration,
) -> Option<(String, Option<DateTime<Utc>>)> {
    if task.status != TaskStatus::Completed || is_expired(task, now) {
        return None;
    }
    let stored = task.download_url.clone().map(|u| (u, task.download_url_expires_at));
    let margin = chrono::Duration::from_std(min_validity).unwrap_or_else(|_| chrono::Duration::zero());
    if let Some((url, Some(until))) = &stored
        && *until > now + margin
    {
        return Some((url.clone(), Some(*until)));
    }
    let key = task.object_key.as_deref()?;
    let ttl = state.settings.download_url_ttl;
    match state.storage.presign_get(key, &download_filename(task), ttl).await {
        Ok(url) => Some((url, chrono::Duration::from_std(ttl).ok().map(|d| now + d))),
        Err(e) => {
            tracing::warn!(task_id = %task.id, error = %e, "could not presign a download URL");
            stored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use userexport_domain::ExportFormat;

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let a = json!({"b": 1, "a": {"d": [ {"y": 1, "x": 2} ], "c": null}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[{"x":2,"y":1}]},"b":1}"#);
    }

    #[test]
    fn request_hash_depends_on_dialect_and_content_not_key_order() {
        let a = json!({"format": "csv", "csv": {"fields": [{"pointer": "/sub"}]}});
        let b: Value = serde_json::from_str(r#"{"csv":{"fields":[{"pointer":"/sub"}]},"format":"csv"}"#).unwrap();
        assert_eq!(request_hash(ApiDialect::Authgear, &a), request_hash(ApiDialect::Authgear, &b));
        assert_ne!(request_hash(ApiDialect::Authgear, &a), request_hash(ApiDialect::Native, &a));
        assert_ne!(
            request_hash(ApiDialect::Authgear, &a),
            request_hash(ApiDialect::Authgear, &json!({"format": "ndjson"}))
        );
        assert_eq!(request_hash(ApiDialect::Native, &a).len(), 64);
    }

    #[test]
    fn new_tasks_are_pending_and_empty() {
        let spec = ExportSpec::builder(ExportFormat::Csv).build().unwrap();
        let new =
            NewExport { dialect: ApiDialect::Authgear, spec, request: json!({"format": "csv"}), idempotency_key: None };
        let p = ProjectId::generate();
        let now = Utc::now();
        let t = new_task(&p, &new, now);
        assert_eq!(t.status, TaskStatus::Pending);
        assert_eq!(t.project_id, p);
        assert_eq!(t.dialect, userexport_domain::Dialect::Authgear);
        assert_eq!((t.rows_written, t.attempts, t.created_at, t.updated_at), (0, 0, now, now));
        assert_eq!(download_filename(&t), format!("{}.csv", t.id));
        let t = ExportTask { object_key: Some(format!("exports/{p}/x.csv.gz")), ..t };
        assert_eq!(download_filename(&t), "x.csv.gz");
    }

    #[actix_web::test]
    async fn idempotency_keys_are_checked() {
        use actix_web::test::TestRequest;
        let req = TestRequest::default().uri("/v1/exports").to_http_request();
        assert_eq!(idempotency_key(&req).unwrap(), None);
        let req =
            TestRequest::default().uri("/v1/exports").insert_header(("Idempotency-Key", "abc-123")).to_http_request();
        assert_eq!(idempotency_key(&req).unwrap().as_deref(), Some("abc-123"));
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        let req = TestRequest::default().uri("/v1/exports").insert_header(("Idempotency-Key", long)).to_http_request();
        assert_eq!(idempotency_key(&req).unwrap_err().code, Code::InvalidRequestBody);
    }

    #[test]
    fn expiry_is_detected_before_the_sweeper_runs() {
        let spec = ExportSpec::builder(ExportFormat::Csv).build().unwrap();
        let new = NewExport { dialect: ApiDialect::Native, spec, request: json!({}), idempotency_key: None };
        let now = Utc::now();
        let t = new_task(&ProjectId::generate(), &new, now);
        assert!(!is_expired(&t, now));
        let done = ExportTask {
            status: TaskStatus::Completed,
            expires_at: Some(now - chrono::Duration::seconds(1)),
            ..t.clone()
        };
        assert!(is_expired(&done, now));
        let pending_with_deadline = ExportTask { expires_at: Some(now - chrono::Duration::seconds(1)), ..t.clone() };
        assert!(!is_expired(&pending_with_deadline, now));
        assert!(is_expired(&ExportTask { status: TaskStatus::Expired, ..t }, now));
    }
}
