//! Users: all-or-nothing inserts, lookups, filtered keyset pages, counts and snapshot streams.

use std::collections::HashSet;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use tokio::sync::mpsc;
use userexport_domain::{ProjectId, TestUsers, User, UserFilter, UserId};

use crate::entity::{user_login_ids, users};
use crate::error::is_unique_violation;
use crate::{Backend, Store, StoreError, convert, time_bound};

/// Most rows one [`Store::users_page`] call scans when the filter needs Rust-side evaluation; a call
/// that hits the bound returns fewer users than asked together with a cursor to continue from.
pub const MAX_SCAN_ROWS: u64 = 50_000;

/// Rows fetched per query when the filter needs Rust-side evaluation (bounded both ways).
const MIN_SCAN_BATCH: u64 = 256;
const MAX_SCAN_BATCH: u64 = 5_000;

/// Rows fetched per query when SQL answers the filter exactly.
const MAX_EXACT_BATCH: u64 = 10_000;

/// Bind parameters per statement on SQLite (its limit is 32 766).
const SQLITE_MAX_PARAMS: usize = 32_000;

/// Values per `IN (…)` list in diagnostics.
const IN_CHUNK: usize = 1_000;

/// The ASCII-only lowercase of `email`, written exactly as the `idx_users_project_email` index.
fn email_folded(backend: Backend) -> Expr {
    match backend {
        Backend::Postgres => Expr::cust("translate(email, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"),
        Backend::Sqlite => Expr::cust("lower(email)"),
    }
}

/// Whether SQL answers `filter` exactly (no predicate needs Rust-side evaluation).
pub(crate) fn sql_exact(filter: &UserFilter) -> bool {
    filter.tenant_ids.is_empty()
        && filter.role_names.is_empty()
        && filter.sso_app_ids.is_empty()
        && filter.text.is_none()
        && filter.custom_attributes.is_empty()
        && !filter.sso_only
}

/// The SQL part of `filter` for `project`: a necessary condition, exact when [`sql_exact`] holds.
pub(crate) fn sql_condition(backend: Backend, project: &ProjectId, filter: &UserFilter) -> Condition {
    let mut c = Condition::all().add(users::Column::ProjectId.eq(project.as_str()));
    if !filter.user_ids.is_empty() {
        c = c.add(users::Column::UserId.is_in(filter.user_ids.iter().map(String::as_str)));
    }
    if !filter.emails.is_empty() {
        c = c.add(ExprTrait::is_in(email_folded(backend), filter.emails.iter().map(|e| e.to_ascii_lowercase())));
    }
    if !filter.phones.is_empty() {
        c = c.add(users::Column::Phone.is_in(filter.phones.iter().map(String::as_str)));
    }
    if !filter.statuses.is_empty() {
        c = c.add(users::Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str())));
    }
    if !filter.login_ids.is_empty() {
        let sub = Query::select()
            .column(user_login_ids::Column::UserSeq)
            .from(user_login_ids::Entity)
            .and_where(user_login_ids::Column::ProjectId.eq(project.as_str()))
            .and_where(user_login_ids::Column::LoginId.is_in(filter.login_ids.iter().map(String::as_str)))
            .to_owned();
        c = c.add(users::Column::Seq.in_subquery(sub));
    }
    if let Some(t) = filter.created_from {
        c = c.add(users::Column::CreatedAt.gte(time_bound(backend, t, true)));
    }
    if let Some(t) = filter.created_to {
        c = c.add(users::Column::CreatedAt.lte(time_bound(backend, t, false)));
    }
    if let Some(t) = filter.modified_from {
        c = c.add(users::Column::UpdatedAt.gte(time_bound(backend, t, true)));
    }
    if let Some(t) = filter.modified_to {
        c = c.add(users::Column::UpdatedAt.lte(time_bound(backend, t, false)));
    }
    match filter.test_users {
        TestUsers::Exclude => c = c.add(users::Column::Test.eq(false)),
        TestUsers::Only => c = c.add(users::Column::Test.eq(true)),
        TestUsers::Include => {}
    }
    c
}

/// Up to `n` rows matching `cond` after `after`, in `seq` order.
async fn fetch<C: ConnectionTrait>(
    c: &C,
    cond: &Condition,
    after: Option<i64>,
    n: u64,
) -> Result<Vec<users::Model>, StoreError> {
    let mut q = users::Entity::find().filter(cond.clone());
    if let Some(after) = after {
        q = q.filter(users::Column::Seq.gt(after));
    }
    Ok(q.order_by_asc(users::Column::Seq).limit(n).all(c).await?)
}

/// One filtered keyset page: up to `limit` matching users after `after`, scanning at most `max_scan`
/// rows. Returns the users and the cursor to continue from (`None` once the end was reached).
pub(crate) async fn scan_page<C: ConnectionTrait>(
    c: &C,
    backend: Backend,
    project: &ProjectId,
    filter: &UserFilter,
    after: Option<i64>,
    limit: u64,
    max_scan: Option<u64>,
) -> Result<(Vec<User>, Option<i64>), StoreError> {
    if limit == 0 {
        return Ok((Vec::new(), after));
    }
    let cond = sql_condition(backend, project, filter);
    let exact = sql_exact(filter);
    let mut out = Vec::new();
    let mut cursor = after;
    let mut scanned = 0u64;
    loop {
        let want = limit - out.len() as u64;
        let batch =
            if exact { Ord::min(want, MAX_EXACT_BATCH) } else { Ord::clamp(want, MIN_SCAN_BATCH, MAX_SCAN_BATCH) };
        let rows = fetch(c, &cond, cursor, batch).await?;
        let n = rows.len() as u64;
        for row in rows {
            let seq = row.seq;
            cursor = Some(seq);
            let user = convert::user(row)?;
            if filter.matches(&user) {
                out.push(user);
                if out.len() as u64 == limit {
                    return Ok((out, Some(seq)));
                }
            }
        }
        if n < batch {
            return Ok((out, None));
        }
        scanned += n;
        if max_scan.is_some_and(|max| scanned >= max) {
            return Ok((out, cursor));
        }
    }
}

impl Store {
    /// Inserts `users` into `project`, all or nothing. A user id or login id that repeats inside the
    /// batch or already exists in the project fails the whole batch with [`StoreError::Duplicate`]
    /// naming it. Postgres streams rows with `COPY FROM STDIN`; SQLite uses batched multi-row inserts;
    /// both inside one transaction. Returns the number of users inserted.
    pub async fn insert_users(&self, project: &ProjectId, users: &[User]) -> Result<u64, StoreError> {
        if users.is_empty() {
            return Ok(0);
        }
        check_batch_unique(users)?;
        let result = match self.backend {
            Backend::Postgres => {
                crate::pg_copy::insert_users(self.db.get_postgres_connection_pool(), project, users).await
            }
            Backend::Sqlite => self.insert_users_sqlite(project, users).await,
        };
        match result {
            Err(StoreError::Db(e)) if is_unique_violation(&e) => Err(self.diagnose_duplicate(project, users, &e).await),
            Ok(n) => {
                self.forget_search_totals(project).await?;
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }

    async fn insert_users_sqlite(&self, project: &ProjectId, batch: &[User]) -> Result<u64, StoreError> {
        let txn = self.begin_write().await?;
        // The write lock is held from BEGIN IMMEDIATE, so the next sequence numbers are ours. Never
        // reuse a number AUTOINCREMENT has handed out before (rows may have been deleted).
        let row = txn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT MAX(COALESCE((SELECT MAX(seq) FROM users), 0), \
                 COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'users'), 0)) AS last",
            ))
            .await?
            .ok_or_else(|| StoreError::Db(DbErr::Custom("no sequence row".into())))?;
        let last: i64 = row.try_get("", "last")?;
        let rows_per_stmt = SQLITE_MAX_PARAMS / users::COLUMN_COUNT;
        let mut login_rows = Vec::new();
        let mut seq = last;
        for chunk in batch.chunks(rows_per_stmt) {
            let mut models = Vec::with_capacity(chunk.len());
            for u in chunk {
                seq += 1;
                models.push(convert::user_model(project, seq, u)?.into_active_model());
                login_rows.extend(u.login_ids.iter().map(|l| user_login_ids::Model {
                    project_id: project.as_str().to_owned(),
                    login_id: l.clone(),
                    user_seq: seq,
                }));
            }
            users::Entity::insert_many(models).exec_without_returning(&txn).await?;
        }
        for chunk in login_rows.chunks(SQLITE_MAX_PARAMS / 3) {
            let models = chunk.iter().cloned().map(IntoActiveModel::into_active_model);
            user_login_ids::Entity::insert_many(models).exec_without_returning(&txn).await?;
        }
        txn.commit().await?;
        Ok(batch.len() as u64)
    }

    /// After a unique violation: finds which login id (or else user id) of `batch` already exists.
    async fn diagnose_duplicate(&self, project: &ProjectId, batch: &[User], cause: &DbErr) -> StoreError {
        let logins: Vec<&str> = batch.iter().flat_map(|u| u.login_ids.iter().map(String::as_str)).collect();
        for chunk in logins.chunks(IN_CHUNK) {
            let found = user_login_ids::Entity::find()
                .filter(user_login_ids::Column::ProjectId.eq(project.as_str()))
                .filter(user_login_ids::Column::LoginId.is_in(chunk.iter().copied()))
                .one(&self.db)
                .await;
            match found {
                Ok(Some(row)) => return StoreError::Duplicate(row.login_id),
                Ok(None) => {}
                Err(e) => return StoreError::Db(e),
            }
        }
        let ids: Vec<&str> = batch.iter().map(|u| u.id.as_str()).collect();
        for chunk in ids.chunks(IN_CHUNK) {
            let found = users::Entity::find()
                .filter(users::Column::ProjectId.eq(project.as_str()))
                .filter(users::Column::UserId.is_in(chunk.iter().copied()))
                .one(&self.db)
                .await;
            match found {
                Ok(Some(row)) => return StoreError::Duplicate(row.user_id),
                Ok(None) => {}
                Err(e) => return StoreError::Db(e),
            }
        }
        // The conflicting row vanished in the meantime; report what the database said.
        StoreError::Duplicate(cause.sql_err().map(|e| e.to_string()).unwrap_or_else(|| cause.to_string()))
    }

    /// The user with this id.
    pub async fn get_user(&self, project: &ProjectId, id: &UserId) -> Result<Option<User>, StoreError> {
        users::Entity::find()
            .filter(users::Column::ProjectId.eq(project.as_str()))
            .filter(users::Column::UserId.eq(id.as_str()))
            .one(&self.db)
            .await?
            .map(convert::user)
            .transpose()
    }

    /// The user owning `login_id` (exact match).
    pub async fn find_user_by_login_id(&self, project: &ProjectId, login_id: &str) -> Result<Option<User>, StoreError> {
        let Some(link) = user_login_ids::Entity::find_by_id((project.as_str().to_owned(), login_id.to_owned()))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        users::Entity::find_by_id(link.user_seq).one(&self.db).await?.map(convert::user).transpose()
    }

    /// Number of users of `project` matching `filter` (same semantics as `UserFilter::matches`):
    /// `COUNT(*)` when SQL answers the filter exactly, else a keyset scan.
    pub async fn count_users(&self, project: &ProjectId, filter: &UserFilter) -> Result<u64, StoreError> {
        self.count(project, filter, false).await
    }

    /// [`count_users`](Self::count_users) for a count that runs beside an export: on Postgres the
    /// `COUNT(*)` gets no parallel workers, which would only take CPU from the export it runs beside
    /// (an export's total is wanted soon, not at once; counting 1M users takes ~0.15 s serially).
    pub async fn count_users_beside_export(&self, project: &ProjectId, filter: &UserFilter) -> Result<u64, StoreError> {
        self.count(project, filter, true).await
    }

    async fn count(&self, project: &ProjectId, filter: &UserFilter, serial: bool) -> Result<u64, StoreError> {
        let cond = sql_condition(self.backend, project, filter);
        if sql_exact(filter) {
            let count = users::Entity::find().filter(cond);
            if serial && self.backend == Backend::Postgres {
                let txn = self.db.begin().await?;
                txn.execute_unprepared("SET LOCAL max_parallel_workers_per_gather = 0").await?;
                let n = count.count(&txn).await?;
                txn.commit().await?;
                return Ok(n);
            }
            return Ok(count.count(&self.db).await?);
        }
        let mut count = 0u64;
        let mut cursor = None;
        loop {
            let rows = fetch(&self.db, &cond, cursor, MAX_SCAN_BATCH).await?;
            let n = rows.len() as u64;
            for row in rows {
                cursor = Some(row.seq);
                if filter.matches(&convert::user(row)?) {
                    count += 1;
                }
            }
            if n < MAX_SCAN_BATCH {
                return Ok(count);
            }
        }
    }

    /// One page of users matching `filter`, in insertion order, after the keyset cursor `after`
    /// (`None` = from the start). Returns up to `limit` users and the cursor to pass as `after` for the
    /// next page, or `None` when no more users follow. A page may hold fewer than `limit` users with a
    /// cursor when [`MAX_SCAN_ROWS`] rows were scanned without filling it.
    pub async fn users_page(
        &self,
        project: &ProjectId,
        filter: &UserFilter,
        after: Option<i64>,
        limit: u64,
    ) -> Result<(Vec<User>, Option<i64>), StoreError> {
        scan_page(&self.db, self.backend, project, filter, after, limit, Some(MAX_SCAN_ROWS)).await
    }

    /// All users of `project` matching `filter` as pages of `page_size` users (the last one may be
    /// shorter; no users → no pages), read inside one snapshot: a `REPEATABLE READ READ ONLY`
    /// transaction on Postgres, a read transaction on SQLite. Users inserted after the first page was
    /// read are not seen. A producer task reads ahead at most two pages, so memory stays bounded by the
    /// page size; dropping the stream ends the producer and its transaction.
    ///
    /// Postgres streams the snapshot with one binary `COPY` ([`Store::stream_users`]); SQLite reads
    /// keyset pages.
    ///
    /// Must be called within a Tokio runtime (the producer is spawned on it).
    pub fn stream_user_pages(
        &self,
        project: ProjectId,
        filter: UserFilter,
        page_size: u64,
    ) -> BoxStream<'static, Result<Vec<User>, StoreError>> {
        if self.backend == Backend::Postgres {
            return self
                .stream_users(project, filter, page_size, None, userexport_domain::user::UserParts::ALL)
                .boxed();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let err = StoreError::Db(DbErr::Custom("stream_user_pages needs a Tokio runtime".into()));
            return futures_util::stream::iter([Err(err)]).boxed();
        };
        let (tx, rx) = mpsc::channel(2);
        let store = self.clone();
        runtime.spawn(async move { store.produce_pages(project, filter, Ord::max(page_size, 1), tx).await });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
    }

    async fn produce_pages(
        self,
        project: ProjectId,
        filter: UserFilter,
        page_size: u64,
        tx: mpsc::Sender<Result<Vec<User>, StoreError>>,
    ) {
        let txn = match self.begin_snapshot().await {
            Ok(txn) => txn,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut after = None;
        loop {
            match scan_page(&txn, self.backend, &project, &filter, after, page_size, None).await {
                Ok((page, next)) => {
                    if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
                        break; // the consumer is gone
                    }
                    match next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        // Read-only: ending it either way is the same; rollback never fails the stream.
        if let Err(e) = txn.rollback().await {
            tracing::debug!(error = %e, "closing the snapshot transaction failed");
        }
    }
}

/// Refuses a batch that repeats a user id or login id within itself.
fn check_batch_unique(batch: &[User]) -> Result<(), StoreError> {
    let mut ids = HashSet::with_capacity(batch.len());
    let mut logins = HashSet::with_capacity(batch.len());
    for u in batch {
        if !ids.insert(u.id.as_str()) {
            return Err(StoreError::Duplicate(u.id.to_string()));
        }
        for l in &u.login_ids {
            if !logins.insert(l.as_str()) {
                return Err(StoreError::Duplicate(l.clone()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn postgres_bounds_round_to_stored_microseconds() {
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::nanoseconds(1_500);
        let micro = |n| Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::microseconds(n);
        assert_eq!(time_bound(Backend::Postgres, t, true), micro(2));
        assert_eq!(time_bound(Backend::Postgres, t, false), micro(1));
        assert_eq!(time_bound(Backend::Postgres, micro(3), true), micro(3));
        assert_eq!(time_bound(Backend::Sqlite, t, true), t);
    }

    #[test]
    fn batch_duplicates_are_named() {
        let a = userexport_domain::fake::user(1, 0);
        let mut b = userexport_domain::fake::user(1, 1);
        b.login_ids.push(a.login_ids[0].clone());
        match check_batch_unique(&[a.clone(), b]) {
            Err(StoreError::Duplicate(v)) => assert_eq!(v, a.login_ids[0]),
            other => panic!("unexpected {other:?}"),
        }
        match check_batch_unique(&[a.clone(), a.clone()]) {
            Err(StoreError::Duplicate(v)) => assert_eq!(v, a.id.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
