//! Export tasks: creation with idempotency, lookups, listing, and the lease-based state machine.
//!
//! Every state change is one compare-and-set `UPDATE` whose `WHERE` clause encodes the legal source
//! states (and, for worker calls, `status = 'processing' AND lease_owner = worker`), so concurrent
//! workers, API calls and sweepers never overwrite each other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue, ColumnTrait, Condition, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use userexport_domain::{ErrorObject, ExportTask, JobAlias, ProjectId, TaskId, TaskStatus};

use crate::entity::export_tasks::{self, Column};
use crate::entity::idempotency_keys;
use crate::error::is_unique_violation;
use crate::{Store, StoreError, convert};

/// Filters and keyset cursor of [`Store::list_tasks`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks in one of these statuses (empty = all).
    pub statuses: Vec<TaskStatus>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created at or before.
    pub created_to: Option<DateTime<Utc>>,
    /// Keyset cursor: only tasks created before this one (newest first).
    pub before: Option<TaskId>,
    /// Most tasks returned (ask `limit + 1` to learn whether another page follows).
    pub limit: u64,
}

/// Outcome of [`Store::claim_task`].
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This worker now holds the lease.
    Claimed(ExportTask),
    /// Another worker holds a live lease.
    Busy(ExportTask),
    /// The task is completed, failed, cancelled or expired.
    Finished(ExportTask),
    /// No such task.
    NotFound,
}

/// Progress reported with a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Users written so far.
    pub rows_written: u64,
    /// Bytes of the file so far.
    pub bytes_written: u64,
    /// Users to export, when known (`None` keeps the stored value).
    pub rows_total: Option<u64>,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The caller still holds the lease (it was renewed).
    pub still_owner: bool,
    /// The client asked to cancel the task.
    pub cancel_requested: bool,
}

/// Final values of a completed export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Object key of the file.
    pub object_key: String,
    /// Presigned download URL.
    pub download_url: String,
    /// When the URL stops working.
    pub download_url_expires_at: DateTime<Utc>,
    /// Users written.
    pub rows_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Users the export was to write, when counted (None keeps the stored total).
    pub rows_total: Option<u64>,
    /// When the file is deleted and the task expires.
    pub expires_at: DateTime<Utc>,
}

/// The longest lease or retention honoured (keeps timestamps in every backend's range).
const MAX_SPAN: chrono::TimeDelta = chrono::TimeDelta::days(3650);

fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let d = chrono::TimeDelta::from_std(d).unwrap_or(MAX_SPAN).min(MAX_SPAN);
    t + d
}

fn status(s: TaskStatus) -> Expr {
    Expr::value(s.as_str())
}

fn none_time() -> Expr {
    Expr::value(Option::<DateTime<Utc>>::None)
}

fn none_text() -> Expr {
    Expr::value(Option::<String>::None)
}

/// `id = ? AND status = 'processing' AND lease_owner = worker`.
fn owned_by(id: &TaskId, worker: &str) -> Condition {
    Condition::all()
        .add(Column::Id.eq(id.as_str()))
        .add(Column::Status.eq(TaskStatus::Processing.as_str()))
        .add(Column::LeaseOwner.eq(worker))
}

const FINISHED: [TaskStatus; 3] = [TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Cancelled];

impl Store {
    async fn update_tasks(&self, cond: Condition, sets: Vec<(Column, Expr)>) -> Result<u64, StoreError> {
        let mut q = export_tasks::Entity::update_many();
        for (col, value) in sets {
            q = q.col_expr(col, value);
        }
        Ok(q.filter(cond).exec(&self.db).await?.rows_affected)
    }

    /// Inserts a new task. With `idempotency = Some((key, request_hash))` the task and the key are
    /// stored in one transaction; a replay of the key with the same hash returns the existing task and
    /// `false`, with another hash [`StoreError::IdempotencyConflict`]. Returns the stored task and
    /// whether it was created.
    pub async fn insert_task(
        &self,
        task: &ExportTask,
        idempotency: Option<(&str, &str)>,
    ) -> Result<(ExportTask, bool), StoreError> {
        let mut row = convert::task_model(task)?.into_active_model();
        row.seq = ActiveValue::NotSet;
        // Two rounds: a concurrent insert of the same key makes the first round fail on the key's
        // primary key, and the second round then finds and replays it.
        for round in 0..2 {
            let txn = self.begin_write().await?;
            if let Some((key, hash)) = idempotency
                && let Some(seen) =
                    idempotency_keys::Entity::find_by_id((task.project_id.as_str().to_owned(), key.to_owned()))
                        .one(&txn)
                        .await?
            {
                txn.rollback().await?;
                if seen.request_hash != hash {
                    return Err(StoreError::IdempotencyConflict);
                }
                let id = TaskId::parse(&seen.task_id)
                    .map_err(|e| StoreError::Corrupt(format!("idempotency_keys.task_id: {e}")))?;
                let existing = self.load_task(&id).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("idempotency key refers to missing task {}", seen.task_id))
                })?;
                return Ok((existing, false));
            }
            export_tasks::Entity::insert(row.clone()).exec_without_returning(&txn).await?;
            if let Some((key, hash)) = idempotency {
                let record = idempotency_keys::Model {
                    project_id: task.project_id.as_str().to_owned(),
                    key: key.to_owned(),
                    request_hash: hash.to_owned(),
                    task_id: task.id.as_str().to_owned(),
                    created_at: task.created_at,
                };
                match idempotency_keys::Entity::insert(record.into_active_model()).exec_without_returning(&txn).await {
                    Ok(_) => {}
                    Err(e) if round == 0 && is_unique_violation(&e) => {
                        txn.rollback().await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            txn.commit().await?;
            let stored = self
                .load_task(&task.id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("task {} vanished after insert", task.id)))?;
            return Ok((stored, true));
        }
        Err(StoreError::IdempotencyConflict)
    }

    /// The task with this id in this project.
    pub async fn get_task(&self, project: &ProjectId, id: &TaskId) -> Result<Option<ExportTask>, StoreError> {
        self.find_task(Condition::all().add(Column::ProjectId.eq(project.as_str())).add(Column::Id.eq(id.as_str())))
            .await
    }

    /// The task with this Auth0-style alias in this project.
    pub async fn get_task_by_alias(
        &self,
        project: &ProjectId,
        alias: &JobAlias,
    ) -> Result<Option<ExportTask>, StoreError> {
        self.find_task(
            Condition::all().add(Column::ProjectId.eq(project.as_str())).add(Column::JobAlias.eq(alias.as_str())),
        )
        .await
    }

    /// The task with this id, whatever its project. For workers only.
    pub async fn load_task(&self, id: &TaskId) -> Result<Option<ExportTask>, StoreError> {
        self.find_task(Condition::all().add(Column::Id.eq(id.as_str()))).await
    }

    /// The one task matching `condition` (a unique key), decoded.
    async fn find_task(&self, condition: Condition) -> Result<Option<ExportTask>, StoreError> {
        export_tasks::Entity::find().filter(condition).one(&self.db).await?.map(convert::task).transpose()
    }

    /// The project's tasks, newest first, filtered by `q`, at most `q.limit`. An unknown
    /// `q.before` cursor is [`StoreError::NotFound`].
    pub async fn list_tasks(&self, project: &ProjectId, q: &TaskQuery) -> Result<Vec<ExportTask>, StoreError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let mut find = export_tasks::Entity::find().filter(Column::ProjectId.eq(project.as_str()));
        if let Some(before) = &q.before {
            let seq: Option<i64> = export_tasks::Entity::find()
                .select_only()
                .column(Column::Seq)
                .filter(Column::ProjectId.eq(project.as_str()))
                .filter(Column::Id.eq(before.as_str()))
                .into_tuple()
                .one(&self.db)
                .await?;
            find = find.filter(Column::Seq.lt(seq.ok_or(StoreError::NotFound)?));
        }
        if !q.statuses.is_empty() {
            find = find.filter(Column::Status.is_in(q.statuses.iter().map(|s| s.as_str())));
        }
        if let Some(t) = q.created_from {
            find = find.filter(Column::CreatedAt.gte(self.bound(t, true)));
        }
        if let Some(t) = q.created_to {
            find = find.filter(Column::CreatedAt.lte(self.bound(t, false)));
        }
        find.order_by_desc(Column::Seq).limit(q.limit).all(&self.db).await?.into_iter().map(convert::task).collect()
    }

    /// Compare-and-set claim: a `pending` task, or a `processing` one whose lease has lapsed, becomes
    /// `processing` under `worker` for `lease`; `attempts` grows by one and `started_at` is set on the
    /// first claim. Otherwise reports why not.
    pub async fn claim_task(&self, id: &TaskId, worker: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = Utc::now();
        let claimable = Condition::all().add(Column::Id.eq(id.as_str())).add(
            Condition::any().add(Column::Status.eq(TaskStatus::Pending.as_str())).add(
                Condition::all()
                    .add(Column::Status.eq(TaskStatus::Processing.as_str()))
                    .add(Column::LeaseExpiresAt.lt(self.bound(now, true))),
            ),
        );
        let claimed = self
            .update_tasks(
                claimable,
                vec![
                    (Column::Status, status(TaskStatus::Processing)),
                    (Column::Attempts, Expr::col(Column::Attempts).add(1)),
                    (Column::StartedAt, Func::coalesce([Expr::col(Column::StartedAt), Expr::value(now)]).into()),
                    (Column::LeaseOwner, Expr::value(worker)),
                    (Column::LeaseExpiresAt, Expr::value(plus(now, lease))),
                    (Column::UpdatedAt, Expr::value(now)),
                ],
            )
            .await?
            == 1;
        Ok(match self.load_task(id).await? {
            None => Claim::NotFound,
            Some(task) if claimed => Claim::Claimed(task),
            Some(task) if task.status.is_terminal() => Claim::Finished(task),
            Some(task) => Claim::Busy(task),
        })
    }

    /// Renews `worker`'s lease and records progress. `still_owner` is false when the worker lost the
    /// lease (nothing is written then); `cancel_requested` reports the client's cancel flag.
    pub async fn heartbeat(
        &self,
        id: &TaskId,
        worker: &str,
        lease: Duration,
        progress: Progress,
    ) -> Result<Heartbeat, StoreError> {
        let now = Utc::now();
        let mut sets = vec![
            (Column::LeaseExpiresAt, Expr::value(plus(now, lease))),
            (Column::RowsWritten, Expr::value(convert::to_i64(progress.rows_written))),
            (Column::BytesWritten, Expr::value(convert::to_i64(progress.bytes_written))),
            (Column::UpdatedAt, Expr::value(now)),
        ];
        if let Some(total) = progress.rows_total {
            sets.push((Column::RowsTotal, Expr::value(convert::to_i64(total))));
        }
        let still_owner = self.update_tasks(owned_by(id, worker), sets).await? == 1;
        let cancel_requested: Option<bool> = export_tasks::Entity::find()
            .select_only()
            .column(Column::CancelRequested)
            .filter(Column::Id.eq(id.as_str()))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(Heartbeat { still_owner, cancel_requested: cancel_requested.unwrap_or(false) })
    }

    /// Records the object key and multipart upload id of `worker`'s attempt. False when not the owner.
    pub async fn set_upload(
        &self,
        id: &TaskId,
        worker: &str,
        object_key: &str,
        upload_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sets = vec![
            (Column::ObjectKey, Expr::value(object_key)),
            (Column::UploadId, Expr::value(upload_id.map(str::to_owned))),
            (Column::UpdatedAt, Expr::value(Utc::now())),
        ];
        Ok(self.update_tasks(owned_by(id, worker), sets).await? == 1)
    }

    /// Marks `worker`'s task completed with its file, URL and counts; clears the lease and the upload
    /// id. False when not the owner (nothing is written).
    pub async fn complete_task(&self, id: &TaskId, worker: &str, done: &Completion) -> Result<bool, StoreError> {
        let now = Utc::now();
        let mut sets = vec![
            (Column::Status, status(TaskStatus::Completed)),
            (Column::ObjectKey, Expr::value(done.object_key.as_str())),
            (Column::DownloadUrl, Expr::value(done.download_url.as_str())),
            (Column::DownloadUrlExpiresAt, Expr::value(done.download_url_expires_at)),
            (Column::RowsWritten, Expr::value(convert::to_i64(done.rows_written))),
            (Column::BytesWritten, Expr::value(convert::to_i64(done.bytes_written))),
            (Column::ExpiresAt, Expr::value(done.expires_at)),
            (Column::FinishedAt, Expr::value(now)),
            (Column::LeaseOwner, none_text()),
            (Column::LeaseExpiresAt, none_time()),
            (Column::UploadId, none_text()),
            (Column::UpdatedAt, Expr::value(now)),
        ];
        if let Some(total) = done.rows_total {
            sets.push((Column::RowsTotal, Expr::value(convert::to_i64(total))));
        }
        Ok(self.update_tasks(owned_by(id, worker), sets).await? == 1)
    }

    /// Marks a task failed with `error`; it expires after the store's retention. With `Some(worker)`
    /// only while that worker owns it; with `None` from `pending` or `processing` regardless of owner.
    /// The upload id is kept so the sweeper can abort a leftover multipart upload. False when the task
    /// was not in such a state.
    pub async fn fail_task(&self, id: &TaskId, worker: Option<&str>, error: &ErrorObject) -> Result<bool, StoreError> {
        let now = Utc::now();
        let cond = match worker {
            Some(w) => owned_by(id, w),
            None => Condition::all()
                .add(Column::Id.eq(id.as_str()))
                .add(Column::Status.is_in([TaskStatus::Pending.as_str(), TaskStatus::Processing.as_str()])),
        };
        let sets = vec![
            (Column::Status, status(TaskStatus::Failed)),
            (Column::Error, Expr::value(convert::to_json("error", error)?)),
            (Column::FinishedAt, Expr::value(now)),
            (Column::ExpiresAt, Expr::value(plus(now, self.retention))),
            (Column::LeaseOwner, none_text()),
            (Column::LeaseExpiresAt, none_time()),
            (Column::UpdatedAt, Expr::value(now)),
        ];
        Ok(self.update_tasks(cond, sets).await? == 1)
    }

    /// Hands `worker`'s task back: `processing → pending`, lease cleared (graceful shutdown, retry).
    pub async fn release_task(&self, id: &TaskId, worker: &str) -> Result<bool, StoreError> {
        let sets = vec![
            (Column::Status, status(TaskStatus::Pending)),
            (Column::LeaseOwner, none_text()),
            (Column::LeaseExpiresAt, none_time()),
            (Column::UpdatedAt, Expr::value(Utc::now())),
        ];
        Ok(self.update_tasks(owned_by(id, worker), sets).await? == 1)
    }

    /// A client's cancel: a `pending` task becomes `cancelled` at once; a `processing` one gets
    /// `cancel_requested` (its worker stops at the next heartbeat); a finished one is unchanged, and the
    /// caller answers 409. Returns the task afterwards, `None` when not found in the project.
    pub async fn request_cancel(&self, project: &ProjectId, id: &TaskId) -> Result<Option<ExportTask>, StoreError> {
        let now = Utc::now();
        let pending = || Expr::col(Column::Status).eq(TaskStatus::Pending.as_str());
        let cond = Condition::all()
            .add(Column::ProjectId.eq(project.as_str()))
            .add(Column::Id.eq(id.as_str()))
            .add(Column::Status.is_in([TaskStatus::Pending.as_str(), TaskStatus::Processing.as_str()]));
        // One statement, so a task changing state concurrently is handled by whichever state it is in.
        let sets = vec![
            (
                Column::Status,
                Expr::case(pending(), status(TaskStatus::Cancelled)).finally(Expr::col(Column::Status)).into(),
            ),
            (Column::FinishedAt, Expr::case(pending(), Expr::value(now)).finally(Expr::col(Column::FinishedAt)).into()),
            (
                Column::ExpiresAt,
                Expr::case(pending(), Expr::value(plus(now, self.retention)))
                    .finally(Expr::col(Column::ExpiresAt))
                    .into(),
            ),
            (Column::CancelRequested, Expr::value(true)),
            (Column::UpdatedAt, Expr::value(now)),
        ];
        self.update_tasks(cond, sets).await?;
        self.get_task(project, id).await
    }

    /// `worker` acknowledges a cancel: `processing → cancelled`, lease cleared. False when not the owner.
    pub async fn mark_cancelled(&self, id: &TaskId, worker: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let sets = vec![
            (Column::Status, status(TaskStatus::Cancelled)),
            (Column::FinishedAt, Expr::value(now)),
            (Column::ExpiresAt, Expr::value(plus(now, self.retention))),
            (Column::LeaseOwner, none_text()),
            (Column::LeaseExpiresAt, none_time()),
            (Column::UpdatedAt, Expr::value(now)),
        ];
        Ok(self.update_tasks(owned_by(id, worker), sets).await? == 1)
    }

    /// Completed, failed or cancelled tasks whose `expires_at` is at or before `now`, soonest first.
    pub async fn tasks_due_for_expiry(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<ExportTask>, StoreError> {
        export_tasks::Entity::find()
            .filter(Column::Status.is_in(FINISHED.map(TaskStatus::as_str)))
            .filter(Column::ExpiresAt.lte(self.bound(now, false)))
            .order_by_asc(Column::ExpiresAt)
            .order_by_asc(Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(convert::task)
            .collect()
    }

    /// A finished task becomes `expired` (its file is gone): URL and upload id are cleared. False when
    /// the task is not completed, failed or cancelled.
    pub async fn mark_expired(&self, id: &TaskId) -> Result<bool, StoreError> {
        let cond = Condition::all()
            .add(Column::Id.eq(id.as_str()))
            .add(Column::Status.is_in(FINISHED.map(TaskStatus::as_str)));
        let sets = vec![
            (Column::Status, status(TaskStatus::Expired)),
            (Column::DownloadUrl, none_text()),
            (Column::DownloadUrlExpiresAt, none_time()),
            (Column::UploadId, none_text()),
            (Column::UpdatedAt, Expr::value(Utc::now())),
        ];
        Ok(self.update_tasks(cond, sets).await? == 1)
    }

    /// Tasks the queue may have lost, oldest first: `pending` ones not updated since
    /// `pending_older_than`, and `processing` ones whose lease lapsed before `now`. A task the
    /// reconciler re-enqueued ([`Store::mark_requeued`]) is left out until `pending_older_than` passes
    /// that time again, and a lapsed lease is reported once (until a new claim lapses), so a backlog
    /// that keeps tasks waiting does not fill the queue with copies of them.
    pub async fn stale_tasks(
        &self,
        pending_older_than: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ExportTask>, StoreError> {
        let cutoff = self.bound(pending_older_than, true);
        let not_requeued_since_cutoff =
            || Condition::any().add(Column::RequeuedAt.is_null()).add(Column::RequeuedAt.lt(cutoff));
        let cond = Condition::any()
            .add(
                Condition::all()
                    .add(Column::Status.eq(TaskStatus::Pending.as_str()))
                    .add(Column::UpdatedAt.lt(cutoff))
                    .add(not_requeued_since_cutoff()),
            )
            .add(
                Condition::all()
                    .add(Column::Status.eq(TaskStatus::Processing.as_str()))
                    .add(Column::LeaseExpiresAt.lt(self.bound(now, true)))
                    // A lease that lapsed after the last re-enqueue is new lost work.
                    .add(
                        not_requeued_since_cutoff()
                            .add(Expr::col(Column::RequeuedAt).lt(Expr::col(Column::LeaseExpiresAt))),
                    ),
            );
        export_tasks::Entity::find()
            .filter(cond)
            .order_by_asc(Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(convert::task)
            .collect()
    }

    /// Records that the reconciler put `id` back on the queue at `at` (see [`Store::stale_tasks`]).
    pub async fn mark_requeued(&self, id: &TaskId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let cond = Condition::all().add(Column::Id.eq(id.as_str()));
        self.update_tasks(cond, vec![(Column::RequeuedAt, Expr::value(at))]).await?;
        Ok(())
    }
}
