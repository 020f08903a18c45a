//! Export job messages on [apalis] 1.0, backed by Redis or by the service's own SQLite file.
//!
//! # What a message is
//!
//! A message is an [`ExportJob`]: a versioned envelope (`{"type":"V1","task_id":"userexport_…"}`)
//! that carries **ids only**. The `export_tasks` row in the database is the single source of
//! truth for a task (status, attempts, object key, upload id, URL); the queue only says "look at
//! this task now". Old workers can therefore keep running while new producers add variants, and
//! no secret or user data ever sits in Redis.
//!
//! # Delivery guarantees
//!
//! Delivery is **at least once**. A job can run more than once:
//!
//! - a worker that dies mid-job leaves the job leased; once its heartbeats stop for the orphan
//!   timeout (`heartbeat × 4`, 20 s by default) another live worker re-enqueues and re-runs it;
//! - a job cut off by the shutdown drain, or by the per-job timeout, runs again;
//! - a [`JobOutcome::Retry`] is retried in process a few times (with a short backoff), then the
//!   backend re-schedules it (Redis: after `attempt` seconds, up to 25 attempts; SQLite: up to the
//!   row's `max_attempts`, 25);
//! - the service's reconciler may re-enqueue a task whose message was lost.
//!
//! Handlers must therefore be idempotent: claim the task in the store with a compare-and-set
//! (`pending`, or `processing` gone stale → `processing`) and treat "already claimed / finished /
//! cancelled / gone" as success or [`JobOutcome::Abort`]. Permanent errors must return
//! [`JobOutcome::Abort`] (apalis `AbortError`, never retried) or a broken export runs 25 times;
//! the handler should also enforce its own attempt limit with the attempt number it is given.
//!
//! # Backends
//!
//! - **Redis** ([`QueueConfig::Redis`]): keys `<prefix>:*` (`active`, `data`, `meta:<id>`,
//!   `inflight:<worker>`, `workers`, `scheduled`, `done`, `dead`, …). Needs Redis ≥ 6.2, single
//!   node or Sentinel (no Cluster), `appendonly yes`, `maxmemory-policy noeviction`. apalis never
//!   trims finished jobs, so call [`Queue::trim_done`] on a timer. [`Queue::enqueue`] also
//!   publishes the task id on the channel `<prefix>:enqueued`, which wakes idle workers at once
//!   (they poll every 200 ms as well).
//! - **SQLite** ([`QueueConfig::Sqlite`]): the embedded mode shares the main database file.
//!   apalis-sqlite's migrations create the tables `Jobs` and `Workers` (plus sqlx's
//!   `_sqlx_migrations`), which do not clash with the service's tables (`projects`,
//!   `management_keys`, `signing_keys`, `users`, `user_login_ids`, `export_tasks`,
//!   `idempotency_keys`, `seaql_migrations`). Jobs of this queue are the rows whose `job_type` is
//!   the configured prefix.
//!
//! # Workers
//!
//! [`run_workers`] hides apalis from the worker crate: give it a handler
//! `Fn(ExportJob, attempt) -> Future<Output = JobOutcome>` and a shutdown future. Each call uses
//! a fresh, unique worker name ([`Queue::worker_name`]), which apalis requires for correct orphan
//! recovery and restarts.

mod config;
mod error;
mod queue;
mod wake;
mod worker;

use serde::{Deserialize, Serialize};
use userexport_domain::TaskId;

pub use config::QueueConfig;
pub use error::QueueError;
pub use queue::Queue;
pub use worker::{JobOutcome, WorkerOptions, run_workers};

/// A queued export message. Versioned and ids-only: the database row holds the state.
///
/// Serialized as `{"type":"V1","task_id":"userexport_…"}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum ExportJob {
    /// Run (or resume) the export task with this id.
    V1 {
        /// The export task to run.
        task_id: TaskId,
    },
}

impl ExportJob {
    /// The export task this job refers to.
    pub fn task_id(&self) -> &TaskId {
        match self {
            ExportJob::V1 { task_id } => task_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_wire_format_is_versioned_and_ids_only() {
        let id = TaskId::generate();
        let job = ExportJob::V1 { task_id: id.clone() };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json, serde_json::json!({ "type": "V1", "task_id": id.as_str() }));
        assert_eq!(serde_json::from_value::<ExportJob>(json).unwrap(), job);
        assert_eq!(job.task_id(), &id);
        assert!(serde_json::from_str::<ExportJob>(r#"{"type":"V9","task_id":"x"}"#).is_err());
        assert!(serde_json::from_str::<ExportJob>(r#"{"type":"V1","task_id":"not-an-id"}"#).is_err());
    }
}
