//! The export worker.
//!
//! [`ExportWorker::process`] runs one attempt of one task (claim → stream → encode → upload →
//! verify → presign → complete) and classifies failures into retries and permanent failures;
//! [`run`] consumes the queue with it; [`maintenance`] expires old files and re-enqueues tasks whose
//! queue message was lost; [`metric`] names the metrics it records. The worker never depends on
//! the API crate.

pub mod error;
pub mod maintenance;
pub mod metric;
pub mod pipeline;
pub mod process_export;

use std::future::Future;

pub use error::WorkerError;
pub use maintenance::{MaintenanceSettings, RoundReport, run_maintenance, run_round};
pub use pipeline::{
    Control, PipelineConfig, PipelineOutcome, PipelineProgress, ProgressObserver, UploadStarter, run_pipeline,
};
pub use process_export::{ExportWorker, WorkerSettings, download_filename, object_key};
use userexport_queue::{ExportJob, Queue, QueueError, WorkerOptions};

/// Consumes export jobs from `queue` until `shutdown` resolves.
pub async fn run(
    worker: ExportWorker,
    queue: Queue,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), QueueError> {
    let handler = move |job: ExportJob, attempt: u32| {
        let worker = worker.clone();
        async move {
            match job {
                ExportJob::V1 { task_id } => worker.process(&task_id, attempt).await,
            }
        }
    };
    userexport_queue::run_workers(queue, opts, handler, shutdown).await
}

/// Drives every pending task of the database to a final state, in this task, without a queue.
///
/// Used by tests and by the one-shot CLI: it processes tasks until none is pending.
pub async fn drain_pending(worker: &ExportWorker, max_rounds: usize) -> Result<usize, WorkerError> {
    let mut processed = 0;
    for _ in 0..max_rounds {
        let now = chrono::Utc::now();
        let tasks = worker.store.stale_tasks(now, now, 100).await?;
        if tasks.is_empty() {
            break;
        }
        for task in tasks {
            worker.process(&task.id, task.attempts + 1).await;
            processed += 1;
        }
    }
    Ok(processed)
}
