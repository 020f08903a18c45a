//! The export task: one row per export, the single source of truth for its state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorObject;
use crate::ids::{JobAlias, ProjectId, TaskId};
use crate::spec::ExportSpec;

/// Lifecycle of an export: `pending → processing → completed | failed | cancelled`, and
/// `completed → expired` once the retention period has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Queued, not yet claimed by a worker.
    Pending,
    /// A worker holds the lease and is exporting.
    Processing,
    /// The file is uploaded and downloadable.
    Completed,
    /// The export failed; `error` says why.
    Failed,
    /// Cancelled by the client.
    Cancelled,
    /// Past retention; the file was deleted.
    Expired,
}

impl TaskStatus {
    /// All statuses.
    pub const ALL: [TaskStatus; 6] =
        [Self::Pending, Self::Processing, Self::Completed, Self::Failed, Self::Cancelled, Self::Expired];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// No worker will touch a task in this status again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::Expired)
    }

    /// Whether `self → next` is a legal transition.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Pending, Processing | Failed | Cancelled)
                | (Processing, Processing | Pending | Completed | Failed | Cancelled)
                | (Completed | Failed | Cancelled, Expired)
        )
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            format!("unknown status `{s}`; expected one of pending, processing, completed, failed, cancelled, expired")
        })
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which API created a task; decides how it is shown by default and how files are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// `/v1/exports`.
    #[default]
    Native,
    /// `/_api/admin/users/export`.
    Authgear,
    /// `/api/v2/jobs/users-exports`.
    Auth0,
    /// Descope-shaped export (console, native with the descope view).
    Descope,
}

impl Dialect {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Authgear => "authgear",
            Self::Auth0 => "auth0",
            Self::Descope => "descope",
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Self::Native),
            "authgear" => Ok(Self::Authgear),
            "auth0" => Ok(Self::Auth0),
            "descope" => Ok(Self::Descope),
            _ => Err(format!("unknown dialect `{s}`")),
        }
    }
}

/// One export task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportTask {
    /// Task id.
    pub id: TaskId,
    /// Auth0-style alias of the same task.
    pub job_alias: JobAlias,
    /// Owning project; every lookup is scoped by it.
    pub project_id: ProjectId,
    /// API that created the task.
    pub dialect: Dialect,
    /// What to export.
    pub spec: ExportSpec,
    /// The request as the dialect echoes it back.
    pub request: Value,
    /// Current status.
    pub status: TaskStatus,
    /// Users written so far.
    pub rows_written: u64,
    /// Users to export, counted when the export starts.
    pub rows_total: Option<u64>,
    /// Bytes of the file so far.
    pub bytes_written: u64,
    /// Attempts started.
    pub attempts: u32,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease lapses unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The client asked to cancel.
    pub cancel_requested: bool,
    /// Object key of the file.
    pub object_key: Option<String>,
    /// Multipart upload in progress (for the sweeper to abort).
    pub upload_id: Option<String>,
    /// Stored download URL.
    pub download_url: Option<String>,
    /// When the stored URL stops working.
    pub download_url_expires_at: Option<DateTime<Utc>>,
    /// Failure description.
    pub error: Option<ErrorObject>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// First claim time of the successful attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// Time the task reached `completed`, `failed` or `cancelled`.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the file is deleted and the task becomes `expired`.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last update of the row.
    pub updated_at: DateTime<Utc>,
}

impl ExportTask {
    /// A fresh `pending` task with new ids: nothing written, no attempt yet.
    pub fn new_pending(
        project_id: ProjectId,
        dialect: Dialect,
        spec: ExportSpec,
        request: Value,
        now: DateTime<Utc>,
    ) -> ExportTask {
        ExportTask {
            id: TaskId::generate(),
            job_alias: JobAlias::generate(),
            project_id,
            dialect,
            spec,
            request,
            status: TaskStatus::Pending,
            rows_written: 0,
            rows_total: None,
            bytes_written: 0,
            attempts: 0,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            object_key: None,
            upload_id: None,
            download_url: None,
            download_url_expires_at: None,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            expires_at: None,
            updated_at: now,
        }
    }

    /// Integer progress 0–100 from real counts; 100 once completed.
    pub fn percentage_done(&self) -> u8 {
        match (self.status, self.rows_total) {
            (TaskStatus::Completed, _) => 100,
            (_, Some(0)) | (_, None) => 0,
            (_, Some(total)) => ((self.rows_written.min(total) * 100) / total).min(99) as u8,
        }
    }

    /// Seconds left at the measured rate since `started_at`; `None` before any row is written.
    pub fn time_left_seconds(&self, now: DateTime<Utc>) -> Option<u64> {
        if self.status == TaskStatus::Completed {
            return Some(0);
        }
        let total = self.rows_total?;
        let started = self.started_at?;
        if self.rows_written == 0 {
            return None;
        }
        let elapsed = (now - started).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = self.rows_written as f64 / elapsed;
        let left = total.saturating_sub(self.rows_written) as f64;
        Some((left / rate).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ExportFormat, ExportSpec};

    fn task() -> ExportTask {
        let now = Utc::now();
        let spec = ExportSpec::builder(ExportFormat::Csv).build().unwrap();
        ExportTask {
            status: TaskStatus::Processing,
            rows_written: 250,
            rows_total: Some(1000),
            attempts: 1,
            started_at: Some(now - chrono::Duration::seconds(10)),
            ..ExportTask::new_pending(ProjectId::generate(), Dialect::Native, spec, Value::Null, now)
        }
    }

    #[test]
    fn progress_comes_from_counts() {
        let t = task();
        assert_eq!(t.percentage_done(), 25);
        let left = t.time_left_seconds(t.started_at.unwrap() + chrono::Duration::seconds(10)).unwrap();
        assert_eq!(left, 30);
        let done = ExportTask { status: TaskStatus::Completed, ..t };
        assert_eq!(done.percentage_done(), 100);
    }

    #[test]
    fn transitions() {
        use TaskStatus::*;
        assert!(Pending.can_become(Processing));
        assert!(Processing.can_become(Completed));
        assert!(Completed.can_become(Expired));
        assert!(!Completed.can_become(Processing));
        assert!(!Expired.can_become(Pending));
        assert!(!Failed.can_become(Completed));
        assert!("bogus".parse::<TaskStatus>().unwrap_err().contains("pending"));
    }
}
