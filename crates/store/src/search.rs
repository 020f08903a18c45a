//! Numbered-page user search (Descope's `page` / `limit`) on keyset cursors, never `OFFSET`.
//!
//! Every page of a search is read from a keyset **position** — the sort values and `seq` of the
//! last user before it — so the database seeks straight to it. Where page N begins is remembered in
//! `user_search_cursors` under a key derived from the project, the filter, the sort and the limit:
//! serving page N records where page N + 1 begins, so a client paging forward (the SDKs' loop)
//! pays for one page per call whatever N is. A page whose start is not known yet (a jump ahead, or
//! a cache entry purged after [`SEARCH_CURSOR_TTL`]) is reached by walking forward from the nearest
//! known page, recording every page start on the way; that walk happens once per query.
//!
//! Keyset positions also make paging a changing set stable: users created while a client pages
//! appear at the end (insertion order) or at their sort position, never shift a page boundary, and
//! no user is returned twice or skipped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Order};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use userexport_domain::{ProjectId, SortField, SortValue, User, UserFilter, UserSort};

use crate::entity::{user_search_cursors, users};
use crate::users::{sql_condition, sql_exact};
use crate::{Backend, Store, StoreError, convert};

/// How long a remembered page start is kept ([`Store::purge_search_cursors`]).
pub const SEARCH_CURSOR_TTL: Duration = Duration::from_secs(3600);

/// Most rows fetched per query while searching.
const BATCH: u64 = 1_000;

/// Fewest rows fetched per query when matches are checked in Rust.
const MIN_BATCH: u64 = 256;

/// Page starts written per statement while walking.
const CURSOR_CHUNK: usize = 500;

/// How long a counted total is reused. User writes through the store forget the project's totals
/// at once; the bound covers a count that raced a write.
pub const SEARCH_TOTAL_TTL: Duration = Duration::from_secs(60);

/// The `page` under which a query's total is remembered.
const TOTAL_PAGE: i64 = -1;

/// One page of a user search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The users of the page, in search order.
    pub users: Vec<User>,
    /// How many users match the filter in all (not only this page).
    pub total: u64,
}

/// A point in the search order: the sort values and `seq` of one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Position {
    values: Vec<SortValue>,
    seq: i64,
}

impl Position {
    fn of(sort: &[UserSort], seq: i64, u: &User) -> Self {
        Self { values: sort.iter().map(|s| s.field.value(u)).collect(), seq }
    }
}

/// The SQL expression a sort field orders by, matching [`SortField::value`]: bytewise text
/// (`COLLATE "C"` on Postgres; SQLite's default is bytewise), empty for unset values.
fn sort_expr(backend: Backend, field: SortField) -> String {
    let text = |e: &str| match backend {
        Backend::Postgres => format!("({e}) COLLATE \"C\""),
        Backend::Sqlite => format!("({e})"),
    };
    match field {
        SortField::UserId => text("user_id"),
        SortField::CreatedTime => "created_at".into(),
        SortField::ModifiedTime => "updated_at".into(),
        SortField::DisplayName => text("COALESCE(name, '')"),
        SortField::Email => text("COALESCE(email, '')"),
        SortField::Phone => text("COALESCE(phone, '')"),
        SortField::Status => text("status"),
        SortField::ExternalId => match backend {
            Backend::Postgres => text("COALESCE(login_ids::jsonb ->> 0, '')"),
            Backend::Sqlite => text("COALESCE(json_extract(login_ids, '$[0]'), '')"),
        },
    }
}

fn bind(v: &SortValue) -> Value {
    match v {
        SortValue::Text(s) => s.clone().into(),
        SortValue::Time(t) => (*t).into(),
    }
}

/// Rows strictly after `pos` in the order `sort` + `seq` ascending:
/// `⋁ₖ (⋀_{j<k} eⱼ = vⱼ) ∧ eₖ ≷ vₖ`, with `seq > s` as the last key.
fn after(backend: Backend, sort: &[UserSort], pos: &Position) -> Condition {
    // sea-query numbers `$1` per expression on Postgres; SQLite takes `?`.
    let ph = match backend {
        Backend::Postgres => "$1",
        Backend::Sqlite => "?",
    };
    let mut any = Condition::any();
    for k in 0..=sort.len() {
        let mut all = Condition::all();
        for (s, v) in sort.iter().zip(&pos.values).take(k) {
            all = all.add(Expr::cust_with_values(format!("{} = {ph}", sort_expr(backend, s.field)), [bind(v)]));
        }
        all = match sort.get(k) {
            Some(s) => {
                let op = if s.desc { "<" } else { ">" };
                all.add(Expr::cust_with_values(
                    format!("{} {op} {ph}", sort_expr(backend, s.field)),
                    [bind(&pos.values[k])],
                ))
            }
            None => all.add(users::Column::Seq.gt(pos.seq)),
        };
        any = any.add(all);
    }
    any
}

/// Visits users matching `filter` in search order after `from`, until `want` matched. Fetches no
/// more rows than needed when SQL answers the filter exactly. Returns whether `want` users were
/// visited.
#[allow(clippy::too_many_arguments)]
async fn scan<C: ConnectionTrait>(
    c: &C,
    backend: Backend,
    project: &ProjectId,
    filter: &UserFilter,
    sort: &[UserSort],
    mut from: Option<Position>,
    mut want: u64,
    mut visit: impl FnMut(User, Position),
) -> Result<bool, StoreError> {
    if want == 0 {
        return Ok(true);
    }
    let base = sql_condition(backend, project, filter);
    let exact = sql_exact(filter);
    loop {
        let batch = if exact { want.min(BATCH) } else { want.clamp(MIN_BATCH, BATCH) };
        let mut q = users::Entity::find().filter(base.clone());
        if let Some(pos) = &from {
            q = q.filter(after(backend, sort, pos));
        }
        for s in sort {
            q = q.order_by(Expr::cust(sort_expr(backend, s.field)), if s.desc { Order::Desc } else { Order::Asc });
        }
        let rows = q.order_by_asc(users::Column::Seq).limit(batch).all(c).await?;
        let n = rows.len() as u64;
        for row in rows {
            let seq = row.seq;
            let user = convert::user(row)?;
            let pos = Position::of(sort, seq, &user);
            from = Some(pos.clone());
            if filter.matches(&user) {
                visit(user, pos);
                want -= 1;
                if want == 0 {
                    return Ok(true);
                }
            }
        }
        if n < batch {
            return Ok(false);
        }
    }
}

/// The cache key of a query: project, filter, sort and page size.
fn query_key(filter: &UserFilter, sort: &[UserSort], limit: u64) -> Result<String, StoreError> {
    let canonical = convert::to_json("search query", &(filter, sort, limit))?;
    Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
}

impl Store {
    /// Up to `limit` users of `project` matching `filter`, ordered by `sort` and then insertion
    /// order, starting at match number `offset` (Descope's `page × limit`, or its row `offset`),
    /// with the total number of matches. Pages are `limit` users long; where each begins is
    /// remembered (see the module docs), so a page costs what the first one costs once the one
    /// before it was served. Past the end the page is empty.
    pub async fn search_users(
        &self,
        project: &ProjectId,
        filter: &UserFilter,
        sort: &[UserSort],
        offset: u64,
        limit: u64,
    ) -> Result<SearchPage, StoreError> {
        let total = self.search_total(project, filter).await?;
        if limit == 0 || offset >= total {
            return Ok(SearchPage { users: Vec::new(), total });
        }
        let key = query_key(filter, sort, limit)?;
        let (page, skip) = (offset / limit, offset % limit);
        // The nearest page at or before `page` whose start is known (page 0 starts at the start).
        let (mut known, mut from) = (0u64, None);
        if page > 0 {
            let hit = user_search_cursors::Entity::find()
                .filter(user_search_cursors::Column::ProjectId.eq(project.as_str()))
                .filter(user_search_cursors::Column::QueryKey.eq(key.as_str()))
                .filter(user_search_cursors::Column::Page.lte(convert::to_i64(page)))
                .order_by_desc(user_search_cursors::Column::Page)
                .one(&self.db)
                .await?;
            if let Some(hit) = hit {
                known = u64::try_from(hit.page).unwrap_or(0);
                from = Some(convert::from_json::<Position>("search cursor", &hit.cursor)?);
            }
        }
        if known < page {
            // Walk to the start of `page`, remembering each page start on the way.
            let mut starts = Vec::new();
            let mut matched = 0u64;
            let mut last = None;
            let want = (page - known).saturating_mul(limit);
            scan(&self.db, self.backend, project, filter, sort, from, want, |_, pos| {
                matched += 1;
                if matched.is_multiple_of(limit) {
                    starts.push((known + matched / limit, pos.clone()));
                }
                last = Some(pos);
            })
            .await?;
            self.remember_starts(project, &key, &starts).await?;
            if matched < want {
                return Ok(SearchPage { users: Vec::new(), total });
            }
            from = last;
        }
        // Skip `skip` matches into the page, then take `limit`; the `limit`-th match from the page
        // start is where the next page begins.
        let mut users = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(BATCH as usize));
        let mut index = 0u64;
        let mut next_start = None;
        scan(&self.db, self.backend, project, filter, sort, from, skip + limit, |u, pos| {
            if index + 1 == limit {
                next_start = Some(pos);
            }
            if index >= skip {
                users.push(u);
            }
            index += 1;
        })
        .await?;
        if let Some(pos) = next_start {
            self.remember_starts(project, &key, &[(page + 1, pos)]).await?;
        }
        Ok(SearchPage { users, total })
    }

    async fn remember_starts(
        &self,
        project: &ProjectId,
        key: &str,
        starts: &[(u64, Position)],
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        for chunk in starts.chunks(CURSOR_CHUNK) {
            let mut models = Vec::with_capacity(chunk.len());
            for (page, pos) in chunk {
                models.push(user_search_cursors::ActiveModel {
                    project_id: sea_orm::Set(project.as_str().to_owned()),
                    query_key: sea_orm::Set(key.to_owned()),
                    page: sea_orm::Set(convert::to_i64(*page)),
                    cursor: sea_orm::Set(convert::to_json("search cursor", pos)?),
                    created_at: sea_orm::Set(now),
                });
            }
            user_search_cursors::Entity::insert_many(models)
                .on_conflict_do_nothing()
                .exec_without_returning(&self.db)
                .await?;
        }
        Ok(())
    }

    /// The number of users matching `filter`: remembered for [`SEARCH_TOTAL_TTL`] unless users of
    /// the project were written since, else counted (a paging client would otherwise count the whole
    /// match set on every page).
    async fn search_total(&self, project: &ProjectId, filter: &UserFilter) -> Result<u64, StoreError> {
        let key = format!("total:{}", query_key(filter, &[], 0)?);
        let fresh_after = Utc::now() - chrono::Duration::from_std(SEARCH_TOTAL_TTL).unwrap_or_default();
        let hit = user_search_cursors::Entity::find_by_id((project.as_str().to_owned(), key.clone(), TOTAL_PAGE))
            .filter(user_search_cursors::Column::CreatedAt.gt(fresh_after))
            .one(&self.db)
            .await?;
        if let Some(total) = hit.and_then(|h| h.cursor.parse::<u64>().ok()) {
            return Ok(total);
        }
        let total = self.count_users(project, filter).await?;
        let row = user_search_cursors::ActiveModel {
            project_id: sea_orm::Set(project.as_str().to_owned()),
            query_key: sea_orm::Set(key),
            page: sea_orm::Set(TOTAL_PAGE),
            cursor: sea_orm::Set(total.to_string()),
            created_at: sea_orm::Set(Utc::now()),
        };
        user_search_cursors::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    user_search_cursors::Column::ProjectId,
                    user_search_cursors::Column::QueryKey,
                    user_search_cursors::Column::Page,
                ])
                .update_columns([user_search_cursors::Column::Cursor, user_search_cursors::Column::CreatedAt])
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(total)
    }

    /// Forgets the remembered search totals of `project` (after its users changed).
    pub(crate) async fn forget_search_totals(&self, project: &ProjectId) -> Result<(), StoreError> {
        user_search_cursors::Entity::delete_many()
            .filter(user_search_cursors::Column::ProjectId.eq(project.as_str()))
            .filter(user_search_cursors::Column::Page.eq(TOTAL_PAGE))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Forgets remembered page starts created before `before`; returns how many were removed.
    pub async fn purge_search_cursors(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let res = user_search_cursors::Entity::delete_many()
            .filter(user_search_cursors::Column::CreatedAt.lt(before))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }
}
