//! `process_export`: one attempt at one export task.
//!
//! Delivery is at-least-once, so every step is safe to repeat: the task is claimed by a
//! compare-and-set with a lease, the object key is deterministic (a retry overwrites, never adds a
//! second file), an upload left open by a crashed attempt is aborted by its stored id before a new
//! one starts, and the final status, URL and counts are written in one statement only while the lease
//! is still ours. The queue message is acknowledged after that.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tracing::Instrument;
use userexport_domain::{Code, ErrorCode, ErrorObject, ExportTask, TaskId};
use userexport_queue::JobOutcome;
use userexport_storage::{ObjectMeta, ObjectStore, Upload};
use userexport_store::{Claim, Completion, Progress, Store, StoreError};

use crate::error::WorkerError;
use crate::metric;
use crate::pipeline::{
    Control, PipelineConfig, PipelineOutcome, PipelineProgress, ProgressObserver, UploadStarter, run_pipeline,
};

/// Settings of the export worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Lease taken on a task; renewed with every progress report.
    pub lease: Duration,
    /// Validity of the stored download URL.
    pub download_url_ttl: Duration,
    /// How long a finished export is kept before it expires.
    pub retention: Duration,
    /// Attempts before a task fails for good.
    pub max_attempts: u32,
    /// Pipeline tunables.
    pub pipeline: PipelineConfig,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            download_url_ttl: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(24 * 3600),
            max_attempts: 5,
            pipeline: PipelineConfig::default(),
        }
    }
}

/// Everything an export attempt needs.
#[derive(Clone)]
pub struct ExportWorker {
    /// Database.
    pub store: Store,
    /// Object store the files go to.
    pub storage: Arc<dyn ObjectStore>,
    /// Settings.
    pub settings: WorkerSettings,
    /// This process's unique worker name (lease owner).
    pub name: String,
}

/// The deterministic object key of a task's file.
pub fn object_key(task: &ExportTask) -> String {
    format!("exports/{}/{}.{}", task.project_id, task.id, task.spec.file_extension())
}

/// The file name offered to the downloader.
pub fn download_filename(task: &ExportTask) -> String {
    format!("{}-{}.{}", task.project_id, task.id, task.spec.file_extension())
}

/// The number of users an export will write (`rows_total`), counted by a task of its own while the
/// export streams: the count is a second pass over the project's users (a whole scan when SQL cannot
/// answer the filter), so it is kept off the export's critical path. Dropping it stops the count.
enum RowsTotal {
    /// Still counting.
    Counting(tokio::task::JoinHandle<Result<u64, StoreError>>),
    /// Counted.
    Known(u64),
    /// The count failed (logged); progress goes without a total.
    Unknown,
}

impl RowsTotal {
    /// Starts counting the users of `task` (at most its limit).
    fn count(store: &Store, task: &ExportTask) -> Self {
        let (store, project, filter, limit) =
            (store.clone(), task.project_id.clone(), task.spec.filter().clone(), task.spec.limit());
        let count = async move {
            let n = store.count_users_beside_export(&project, &filter).await?;
            Ok(limit.map_or(n, |limit| n.min(limit)))
        };
        RowsTotal::Counting(tokio::spawn(count.instrument(tracing::Span::current())))
    }

    /// The total if it is known by now, without waiting.
    async fn poll(&mut self) -> Option<u64> {
        if matches!(self, RowsTotal::Counting(handle) if !handle.is_finished()) {
            return None;
        }
        self.wait().await
    }

    /// The total, waiting for the count to end.
    async fn wait(&mut self) -> Option<u64> {
        if let RowsTotal::Counting(handle) = self {
            *self = match handle.await {
                Ok(Ok(n)) => RowsTotal::Known(n),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "counting the users failed; progress has no total");
                    RowsTotal::Unknown
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the count task failed; progress has no total");
                    RowsTotal::Unknown
                }
            };
        }
        match self {
            RowsTotal::Known(n) => Some(*n),
            _ => None,
        }
    }
}

impl Drop for RowsTotal {
    fn drop(&mut self) {
        if let RowsTotal::Counting(handle) = self {
            handle.abort();
        }
    }
}

struct LeaseKeeper<'a> {
    worker: &'a ExportWorker,
    task_id: &'a TaskId,
    rows_total: RowsTotal,
}

#[async_trait]
impl ProgressObserver for LeaseKeeper<'_> {
    async fn on_progress(&mut self, p: PipelineProgress) -> Result<Control, WorkerError> {
        let rows_total = self.rows_total.poll().await;
        let progress = Progress { rows_written: p.rows, bytes_written: p.bytes, rows_total };
        let hb =
            self.worker.store.heartbeat(self.task_id, &self.worker.name, self.worker.settings.lease, progress).await?;
        Ok(if !hb.still_owner {
            Control::LostLease
        } else if hb.cancel_requested {
            Control::Cancel
        } else {
            Control::Continue
        })
    }
}

/// Starts the task's multipart upload when the pipeline fills its first part, and records the
/// upload id on the task (for crash recovery and the sweeper) while checking the lease.
struct Starter<'a> {
    worker: &'a ExportWorker,
    task_id: &'a TaskId,
    key: &'a str,
    meta: &'a ObjectMeta,
}

#[async_trait]
impl UploadStarter for Starter<'_> {
    async fn start(&mut self) -> Result<Option<Box<dyn Upload>>, WorkerError> {
        let upload = self.worker.storage.start_upload(self.key, self.meta).await?;
        match self.worker.store.set_upload(self.task_id, &self.worker.name, self.key, upload.upload_id()).await {
            Ok(true) => Ok(Some(upload)),
            Ok(false) => {
                upload.abort().await?;
                Ok(None)
            }
            Err(e) => {
                if let Err(abort_err) = upload.abort().await {
                    tracing::warn!(error = %abort_err, "aborting the upload after a store error also failed");
                }
                Err(e.into())
            }
        }
    }
}

/// The `dialect` and `format` labels of a task's export metrics.
#[derive(Debug, Clone, Copy)]
struct TaskLabels {
    dialect: &'static str,
    format: &'static str,
}

impl TaskLabels {
    /// Labels of a task whose row could not be read.
    const UNKNOWN: TaskLabels = TaskLabels { dialect: "unknown", format: "unknown" };

    fn of(task: &ExportTask) -> Self {
        Self { dialect: task.dialect.as_str(), format: task.spec.format().as_str() }
    }

    fn count_failed(self) {
        metrics::counter!(metric::EXPORTS_FAILED, "dialect" => self.dialect, "format" => self.format).increment(1);
    }
}

/// Counts an attempt in `userexport_worker_in_flight` while it lives (also when it panics or its
/// future is dropped).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!(metric::WORKER_IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(metric::WORKER_IN_FLIGHT).decrement(1.0);
    }
}

impl ExportWorker {
    /// Runs one attempt of `task_id` and tells the queue what to do with the message.
    #[tracing::instrument(skip_all, fields(task_id = %task_id, attempt))]
    pub async fn process(&self, task_id: &TaskId, attempt: u32) -> JobOutcome {
        let _in_flight = InFlight::start();
        let mut labels = None;
        match self.try_process(task_id, attempt, &mut labels).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_transient() && attempt < self.settings.max_attempts => {
                tracing::warn!(error = %e, "export attempt failed; will retry");
                if let Err(release) = self.store.release_task(task_id, &self.name).await {
                    tracing::warn!(error = %release, "could not release the task; its lease will lapse");
                }
                JobOutcome::Retry(e.to_string())
            }
            Err(e) => {
                tracing::error!(error = %e, "export failed");
                let obj = ErrorObject::new(e.error_code(), format!("the export failed: {e}"));
                match self.store.fail_task(task_id, Some(&self.name), &obj).await {
                    Ok(true) => labels.unwrap_or(TaskLabels::UNKNOWN).count_failed(),
                    Ok(false) => tracing::warn!("the task is no longer ours; its failure was not stored"),
                    Err(store_err) => {
                        tracing::error!(error = %store_err, "could not store the failure");
                        return JobOutcome::Retry(store_err.to_string());
                    }
                }
                JobOutcome::Abort(e.to_string())
            }
        }
    }

    /// One attempt; sets `labels` as soon as the task is claimed, for the caller's failure metric.
    async fn try_process(
        &self,
        task_id: &TaskId,
        attempt: u32,
        labels: &mut Option<TaskLabels>,
    ) -> Result<JobOutcome, WorkerError> {
        let task = match self.store.claim_task(task_id, &self.name, self.settings.lease).await? {
            Claim::Claimed(task) => task,
            Claim::Busy(_) => {
                tracing::info!("task is held by another live worker; dropping this duplicate delivery");
                return Ok(JobOutcome::Done);
            }
            Claim::Finished(_) => return Ok(JobOutcome::Done),
            Claim::NotFound => return Ok(JobOutcome::Abort("task not found".into())),
        };
        tracing::Span::current().record("attempt", attempt);
        let task_labels = TaskLabels::of(&task);
        *labels = Some(task_labels);
        if task.cancel_requested {
            self.store.mark_cancelled(task_id, &self.name).await?;
            return Ok(JobOutcome::Done);
        }
        if task.attempts > self.settings.max_attempts {
            let obj = ErrorObject::new(Code::ExportFailed, format!("gave up after {} attempts", task.attempts - 1));
            if self.store.fail_task(task_id, Some(&self.name), &obj).await? {
                task_labels.count_failed();
            }
            tracing::error!(attempts = task.attempts - 1, "export failed for good: too many attempts");
            return Ok(JobOutcome::Abort("too many attempts".into()));
        }
        let key = object_key(&task);
        if let (Some(old_key), Some(old_upload)) = (&task.object_key, &task.upload_id) {
            // A previous attempt died mid-upload: never leave its multipart upload open.
            if let Err(e) = self.storage.abort_upload(old_key, old_upload).await {
                tracing::warn!(error = %e, "could not abort the previous attempt's upload");
            }
        }
        let started = std::time::Instant::now();
        let rows_total = RowsTotal::count(&self.store, &task);
        let meta = ObjectMeta { content_type: task.spec.content_type().to_owned(), filename: download_filename(&task) };
        // The object's key now (and the lease checked); the upload starts with the first full part
        // (`Starter`), and an export smaller than a part is stored in one request.
        if !self.store.set_upload(task_id, &self.name, &key, None).await? {
            return Ok(JobOutcome::Done);
        }
        let streaming = std::time::Instant::now();
        let starting = streaming - started;
        let mut keeper = LeaseKeeper { worker: self, task_id, rows_total };
        let mut starter = Starter { worker: self, task_id, key: &key, meta: &meta };
        let outcome =
            run_pipeline(&self.store, &task.project_id, &task.spec, &mut starter, &self.settings.pipeline, &mut keeper)
                .await?;
        let completing = std::time::Instant::now();
        let (progress, written) = match outcome {
            PipelineOutcome::Finished { progress, upload } => (progress, upload.complete().await?),
            PipelineOutcome::Whole { progress, body } => (progress, self.storage.put_object(&key, &meta, body).await?),
            PipelineOutcome::Stopped { control, upload } => {
                if let Some(upload) = upload {
                    upload.abort().await?;
                }
                if control == Control::Cancel {
                    self.store.mark_cancelled(task_id, &self.name).await?;
                    metrics::counter!(
                        metric::EXPORTS_CANCELLED,
                        "dialect" => task_labels.dialect,
                        "format" => task_labels.format
                    )
                    .increment(1);
                    tracing::info!("export cancelled");
                } else {
                    tracing::warn!("lost the lease; another worker carries on");
                }
                return Ok(JobOutcome::Done);
            }
        };
        let streaming = completing - streaming;
        let actual = self.storage.head(&key).await?.unwrap_or(0);
        if actual != progress.bytes || written != progress.bytes {
            return Err(WorkerError::SizeMismatch { expected: progress.bytes, actual });
        }
        let completing = completing.elapsed();
        // Long done unless the export was tiny.
        let rows_total = keeper.rows_total.wait().await;
        let now = Utc::now();
        let url = self.storage.presign_get(&key, &meta.filename, self.settings.download_url_ttl).await?;
        let done = Completion {
            object_key: key,
            download_url: url,
            download_url_expires_at: now + self.settings.download_url_ttl,
            rows_written: progress.rows,
            bytes_written: progress.bytes,
            rows_total,
            expires_at: now + self.settings.retention,
        };
        if !self.store.complete_task(task_id, &self.name, &done).await? {
            tracing::warn!("lost the lease before completion; the new owner rewrites the same object");
            return Ok(JobOutcome::Done);
        }
        let TaskLabels { dialect, format } = task_labels;
        metrics::counter!(metric::EXPORTS_COMPLETED, "dialect" => dialect, "format" => format).increment(1);
        metrics::counter!(metric::ROWS_EXPORTED, "dialect" => dialect, "format" => format).increment(progress.rows);
        metrics::counter!(metric::BYTES_EXPORTED, "dialect" => dialect, "format" => format).increment(progress.bytes);
        metrics::histogram!(metric::EXPORT_DURATION, "dialect" => dialect, "format" => format)
            .record(started.elapsed().as_secs_f64());
        for (phase, took) in [("starting", starting), ("streaming", streaming), ("completing", completing)] {
            metrics::histogram!(metric::EXPORT_PHASE_DURATION, "phase" => phase).record(took.as_secs_f64());
        }
        tracing::info!(
            rows = progress.rows,
            bytes = progress.bytes,
            secs = started.elapsed().as_secs_f64(),
            starting = starting.as_secs_f64(),
            streaming = streaming.as_secs_f64(),
            completing_upload = completing.as_secs_f64(),
            "export completed"
        );
        Ok(JobOutcome::Done)
    }
}
