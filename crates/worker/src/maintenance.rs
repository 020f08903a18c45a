//! Background maintenance: the retention sweeper and the queue reconciler.
//!
//! - **Sweeper**: tasks past `expires_at` get their object deleted and become `expired`; uploads left
//!   open by dead attempts are aborted by their stored id (s3s-fs and some S3-compatible stores cannot
//!   list multipart uploads, so we never rely on listing).
//! - **Reconciler**: the database row is the truth and the queue message only a hint. A `pending` task
//!   older than the grace period, or a `processing` task whose lease lapsed, is enqueued again; the
//!   compare-and-set claim makes duplicate deliveries harmless. Re-enqueues are recorded on the row,
//!   so a task waiting behind a backlog is re-sent at most once per grace period.
//! - **Queue trim**: apalis never trims its finished-job records; we bound them.
//! - **Search cursors**: remembered page starts of user searches older than
//!   [`SEARCH_CURSOR_TTL`] are forgotten.

use std::time::Duration;

use chrono::Utc;
use userexport_queue::Queue;
use userexport_store::SEARCH_CURSOR_TTL;

use crate::process_export::ExportWorker;

/// Tunables of the maintenance loop.
#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    /// Time between rounds.
    pub interval: Duration,
    /// A pending task older than this without progress is re-enqueued.
    pub pending_grace: Duration,
    /// Finished queue records kept.
    pub keep_done: u64,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self { interval: Duration::from_secs(60), pending_grace: Duration::from_secs(120), keep_done: 10_000 }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    /// Tasks expired.
    pub expired: u64,
    /// Tasks re-enqueued.
    pub requeued: u64,
    /// Queue records trimmed.
    pub trimmed: u64,
    /// Search page starts forgotten.
    pub cursors_purged: u64,
}

/// Runs one sweeper + reconciler round.
pub async fn run_round(worker: &ExportWorker, queue: &Queue, settings: &MaintenanceSettings) -> RoundReport {
    let mut report = RoundReport::default();
    let now = Utc::now();
    match worker.store.tasks_due_for_expiry(now, 500).await {
        Ok(tasks) => {
            for task in tasks {
                if let (Some(key), Some(upload)) = (&task.object_key, &task.upload_id)
                    && let Err(e) = worker.storage.abort_upload(key, upload).await
                {
                    tracing::warn!(task_id = %task.id, error = %e, "could not abort a stale upload");
                }
                if let Some(key) = &task.object_key
                    && let Err(e) = worker.storage.delete(key).await
                {
                    tracing::warn!(task_id = %task.id, error = %e, "could not delete an expired export; will retry");
                    continue;
                }
                match worker.store.mark_expired(&task.id).await {
                    Ok(true) => {
                        report.expired += 1;
                        metrics::counter!(
                            crate::metric::EXPORTS_EXPIRED,
                            "dialect" => task.dialect.as_str(),
                            "format" => task.spec.format().as_str()
                        )
                        .increment(1);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(task_id = %task.id, error = %e, "could not mark a task expired"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "sweeper could not list expired tasks"),
    }
    let grace = chrono::Duration::from_std(settings.pending_grace).unwrap_or(chrono::Duration::minutes(2));
    match worker.store.stale_tasks(now - grace, now, 500).await {
        Ok(tasks) => {
            for task in tasks {
                match queue.enqueue(&task.id).await {
                    Ok(()) => {
                        report.requeued += 1;
                        if let Err(e) = worker.store.mark_requeued(&task.id, now).await {
                            tracing::warn!(task_id = %task.id, error = %e, "could not record a re-enqueue");
                        }
                        tracing::info!(task_id = %task.id, status = %task.status, "re-enqueued a stale task");
                    }
                    Err(e) => tracing::warn!(task_id = %task.id, error = %e, "could not re-enqueue a stale task"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "reconciler could not list stale tasks"),
    }
    match queue.trim_done(settings.keep_done).await {
        Ok(n) => report.trimmed = n,
        Err(e) => tracing::warn!(error = %e, "could not trim finished queue records"),
    }
    let cutoff = Utc::now() - chrono::Duration::from_std(SEARCH_CURSOR_TTL).unwrap_or(chrono::Duration::hours(1));
    match worker.store.purge_search_cursors(cutoff).await {
        Ok(n) => report.cursors_purged = n,
        Err(e) => tracing::warn!(error = %e, "could not purge search cursors"),
    }
    if let Ok(depth) = queue.depth().await {
        metrics::gauge!(crate::metric::QUEUE_DEPTH).set(depth as f64);
    }
    report
}

/// Runs maintenance rounds until `shutdown` resolves.
pub async fn run_maintenance(
    worker: ExportWorker,
    queue: Queue,
    settings: MaintenanceSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let r = run_round(&worker, &queue, &settings).await;
                if r != RoundReport::default() {
                    tracing::info!(
                        expired = r.expired,
                        requeued = r.requeued,
                        trimmed = r.trimmed,
                        cursors_purged = r.cursors_purged,
                        "maintenance round"
                    );
                }
            }
        }
    }
}
