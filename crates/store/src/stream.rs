//! Snapshot streams of users for exports.
//!
//! On Postgres one export is one statement: `COPY (SELECT … WHERE <the filter's SQL part> ORDER BY
//! seq [LIMIT n]) TO STDOUT (FORMAT binary)` inside a `REPEATABLE READ READ ONLY` transaction. The
//! server streams rows as fast as they are consumed (TCP back-pressure); the rows are decoded straight
//! into [`User`]s — no per-row statement, no sea-orm model, no text-format unescaping — and every
//! user is still checked with [`UserFilter::matches`], the reference semantics. SQLite keeps the keyset
//! pages of [`Store::stream_user_pages`].
//!
//! Pages the consumer has finished with come back through [`UserPages::recycle`]; the reader decodes
//! the next rows into those users' buffers ([`crate::reuse`]), so that a long export allocates
//! (and frees, on another thread) nothing per user once the first pages went round.
//!
//! `COPY` takes no bind parameters, so the filter's values are inlined by sea-query's Postgres
//! builder, which quotes and escapes string literals (`E'…'` with backslash escapes) itself.

use chrono::{DateTime, Utc};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sea_orm::DbErr;
use sea_orm::sea_query::{Expr, Order, PostgresQueryBuilder, Query};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::{self, Connection as _, PgConnection};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use userexport_domain::user::UserParts;
use userexport_domain::{ProjectId, User, UserFilter, UserId};

use crate::entity::users;
use crate::error::from_sqlx;
use crate::readers::{Job, ReaderState};
use crate::reuse::{Spares, address_into, authenticators_json_into, set_opt_str, strings_json_into};
use crate::users::{sql_condition, sql_exact};
use crate::{Backend, Store, StoreError};

/// Pages in flight between the reader and the consumer.
const PAGES_AHEAD: usize = 2;

/// Pages of users from [`Store::stream_users`], in order. Hand every page you are done with back
/// with [`recycle`](Self::recycle): the reader then overwrites its users instead of allocating new
/// ones. Dropping the stream stops the reader.
pub struct UserPages {
    pages: BoxStream<'static, Result<Vec<User>, StoreError>>,
    /// Where consumed pages go back to the reader (None: this backend does not reuse them).
    recycle: Option<mpsc::Sender<Vec<User>>>,
}

impl UserPages {
    /// Pages that are not recycled.
    fn plain(pages: BoxStream<'static, Result<Vec<User>, StoreError>>) -> Self {
        Self { pages, recycle: None }
    }

    /// Gives a consumed page back to the reader (dropped if the reader has enough spare pages).
    pub fn recycle(&self, page: Vec<User>) {
        if let Some(tx) = &self.recycle {
            let _ = tx.try_send(page);
        }
    }
}

impl Stream for UserPages {
    type Item = Result<Vec<User>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.pages.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for UserPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPages").field("recycled", &self.recycle.is_some()).finish_non_exhaustive()
    }
}

/// The columns decoded into a [`User`], in `COPY` order.
const COLUMNS: [users::Column; 32] = [
    users::Column::Seq,
    users::Column::UserId,
    users::Column::LoginIds,
    users::Column::Username,
    users::Column::Email,
    users::Column::EmailVerified,
    users::Column::Phone,
    users::Column::PhoneVerified,
    users::Column::Name,
    users::Column::GivenName,
    users::Column::MiddleName,
    users::Column::FamilyName,
    users::Column::Nickname,
    users::Column::Picture,
    users::Column::Gender,
    users::Column::Birthdate,
    users::Column::Zoneinfo,
    users::Column::Locale,
    users::Column::Website,
    users::Column::Profile,
    users::Column::Address,
    users::Column::Status,
    users::Column::Test,
    users::Column::Roles,
    users::Column::Tenants,
    users::Column::CustomAttributes,
    users::Column::SsoAppIds,
    users::Column::Authenticators,
    users::Column::CreatedAt,
    users::Column::UpdatedAt,
    users::Column::LastLoginAt,
    users::Column::LoginsCount,
];

/// Names of [`COLUMNS`], for error messages.
const COLUMN_NAMES: [&str; 32] = [
    "seq",
    "user_id",
    "login_ids",
    "username",
    "email",
    "email_verified",
    "phone",
    "phone_verified",
    "name",
    "given_name",
    "middle_name",
    "family_name",
    "nickname",
    "picture",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "website",
    "profile",
    "address",
    "status",
    "test",
    "roles",
    "tenants",
    "custom_attributes",
    "sso_app_ids",
    "authenticators",
    "created_at",
    "updated_at",
    "last_login_at",
    "logins_count",
];

/// The signature every binary `COPY` stream starts with, followed by flags and an extension length.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds from the Unix epoch to Postgres's epoch (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl Store {
    /// Like [`Store::stream_user_pages`], stopping after `limit` users when given. On Postgres the
    /// users come from one binary `COPY` of the snapshot (with `LIMIT` in the statement when SQL
    /// answers the filter exactly); dropping the stream ends the reader and closes its connection.
    ///
    /// The caller reads only `parts` of the users: on Postgres the other JSON columns are neither
    /// selected nor parsed and left empty ([`UserParts::project`]), unless the filter needs them.
    ///
    /// On Postgres the reader runs on a thread of its own, with a connection of its own (not one of
    /// the pool's, which a long export would hold for its whole duration): on the runtime's worker
    /// threads the reader and the task consuming its pages took turns on one core (a task woken by a
    /// channel send goes into the waking thread's LIFO slot, which other threads do not steal from).
    /// Reader threads and their connections are kept for the store's next exports for a while
    /// ([`crate::readers`]): opening a connection was a third of a small export's time.
    /// SQLite's keyset pages ([`Store::stream_user_pages`]) must be called within a Tokio runtime.
    pub fn stream_users(
        &self,
        project: ProjectId,
        filter: UserFilter,
        page_size: u64,
        limit: Option<u64>,
        parts: UserParts,
    ) -> UserPages {
        if self.backend != Backend::Postgres {
            // SQLite: keyset pages; the consumer stops at the limit.
            return UserPages::plain(self.stream_user_pages(project, filter, page_size));
        }
        let (tx, rx) = mpsc::channel(PAGES_AHEAD);
        // Every page in flight, plus the one being consumed, can come back.
        let (recycle_tx, mut recycled) = mpsc::channel(PAGES_AHEAD + 2);
        let options = self.db.get_postgres_connection_pool().connect_options();
        let page_size = usize::try_from(page_size.max(1)).unwrap_or(usize::MAX);
        let span = tracing::Span::current();
        let job: Job = Box::new(move |state, idle| {
            // Entered for the whole job (nothing else runs on the thread meanwhile), not on every poll.
            let _span = span.enter();
            let ReaderState { runtime, conn } = state;
            let read = catch_unwind(AssertUnwindSafe(|| {
                let pages = Pages { tx: &tx, recycled: &mut recycled, page_size };
                runtime.block_on(copy_users(conn, &options, &project, &filter, limit, parts, pages))
            }));
            let failed = match read {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(StoreError::Db(DbErr::Custom("the COPY reader panicked".into()))),
            };
            if let Some(e) = failed {
                // A stream that just ended would read as a complete export: the consumer must see why.
                let _ = tx.blocking_send(Err(e));
            }
            // Idle again before the consumer sees the end of the stream, so that the next export
            // finds this thread (and its connection) waiting.
            idle();
            drop(tx);
        });
        if let Err(e) = self.readers.run(job) {
            let err = StoreError::Db(DbErr::Custom(format!("cannot start the COPY reader thread: {e}")));
            return UserPages::plain(futures_util::stream::iter([Err(err)]).boxed());
        }
        let pages =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed();
        UserPages { pages, recycle: Some(recycle_tx) }
    }
}

/// The Postgres reader of [`Store::stream_users`], on a reader thread ([`crate::readers`]): sends
/// pages through `pages` until the end, the limit, an error (returned) or the consumer going away,
/// refilling the pages that come back. Reads on the connection in `slot` (the one the thread's
/// previous export left there) or a new one, and leaves it there when the `COPY` was read to its end
/// and committed.
async fn copy_users(
    slot: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    project: &ProjectId,
    filter: &UserFilter,
    limit: Option<u64>,
    parts: UserParts,
    pages: Pages<'_>,
) -> Result<(), StoreError> {
    let parts = parts.union(filter_parts(filter));
    let sql = copy_statement(project, filter, limit, parts);
    let started = std::time::Instant::now();
    let kept = slot.take();
    let reused = kept.is_some();
    let mut conn = match kept {
        Some(conn) => conn,
        None => PgConnection::connect_with(options).await.map_err(from_sqlx)?,
    };
    if let Err(e) = begin_snapshot(&mut conn).await {
        if !reused {
            return Err(e);
        }
        // The kept connection was closed under us (a restarted server, a proxy's idle timeout): once
        // more on a new one.
        tracing::debug!(error = %e, "the kept COPY connection failed; connecting again");
        let _ = conn.close_hard().await;
        conn = PgConnection::connect_with(options).await.map_err(from_sqlx)?;
        begin_snapshot(&mut conn).await?;
    }
    let connecting = started.elapsed();
    let read = read_copy(&mut conn, &sql, filter, parts, limit.unwrap_or(u64::MAX), pages).await;
    if let Ok((_, stats)) = &read {
        let total = started.elapsed();
        tracing::info!(
            messages = stats.messages,
            seconds = total.as_secs_f64(),
            connection = if reused { "kept" } else { "new" },
            connecting = connecting.as_secs_f64(),
            first_row = stats.first_row.as_secs_f64(),
            waiting_for_consumer = stats.waiting_for_consumer.as_secs_f64(),
            reading = total.saturating_sub(connecting + stats.waiting_for_consumer).as_secs_f64(),
            "snapshot read"
        );
    }
    match read {
        // Read to its end: the connection can be used again once the transaction is over.
        Ok((true, _)) => match sqlx::raw_sql("COMMIT").execute(&mut conn).await {
            Ok(_) => *slot = Some(conn),
            Err(e) => {
                tracing::debug!(error = %e, "ending the COPY transaction failed");
                let _ = conn.close_hard().await;
            }
        },
        // Stopped mid-stream (or failed): the rest of the COPY would have to be read before the
        // connection could be used again, so drop it; the server then aborts the statement.
        _ => {
            let _ = conn.close_hard().await;
        }
    }
    read.map(|_| ())
}

/// Starts the export's snapshot: one read-only `REPEATABLE READ` transaction for the whole `COPY`.
async fn begin_snapshot(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(conn).await.map_err(from_sqlx)?;
    Ok(())
}

/// The parts of a user [`UserFilter::matches`] reads beyond what SQL already checked: none when SQL
/// answers the filter exactly (except the login ids it compares), else all.
fn filter_parts(filter: &UserFilter) -> UserParts {
    if sql_exact(filter) {
        UserParts { login_ids: !filter.login_ids.is_empty(), ..UserParts::NONE }
    } else {
        UserParts::ALL
    }
}

/// Whether column `i` of [`COLUMNS`] is read for `parts` (a JSON column not in `parts` is not).
fn selected(i: usize, parts: UserParts) -> bool {
    match i {
        2 => parts.login_ids,
        20 => parts.address,
        23 => parts.roles,
        24 => parts.tenants,
        25 => parts.custom_attributes,
        26 => parts.sso_app_ids,
        27 => parts.authenticators,
        _ => true,
    }
}

/// `COPY (SELECT <COLUMNS> FROM users WHERE … ORDER BY seq [LIMIT n]) TO STDOUT (FORMAT binary)`,
/// with `NULL` in place of the columns `parts` does not need.
fn copy_statement(project: &ProjectId, filter: &UserFilter, limit: Option<u64>, parts: UserParts) -> String {
    let mut q = Query::select();
    for (i, c) in COLUMNS.into_iter().enumerate() {
        if selected(i, parts) {
            q.column(c);
        } else {
            q.expr(Expr::cust("NULL"));
        }
    }
    q.from(users::Entity)
        .cond_where(sql_condition(Backend::Postgres, project, filter))
        .order_by(users::Column::Seq, Order::Asc);
    if let Some(n) = limit.filter(|_| sql_exact(filter)) {
        q.limit(n);
    }
    format!("COPY ({}) TO STDOUT (FORMAT binary)", q.to_string(PostgresQueryBuilder))
}

/// Where [`read_copy`] sends its pages and gets used ones back.
struct Pages<'a> {
    tx: &'a mpsc::Sender<Result<Vec<User>, StoreError>>,
    recycled: &'a mut mpsc::Receiver<Vec<User>>,
    page_size: usize,
}

/// Where a [`read_copy`] spent its time.
#[derive(Debug, Default)]
struct ReadStats {
    /// `CopyData` messages received (one per row, plus the trailer).
    messages: u64,
    /// From sending the `COPY` to its first message (planning and the first rows on the server).
    first_row: std::time::Duration,
    /// Waiting for the consumer to take a page.
    waiting_for_consumer: std::time::Duration,
}

/// Runs the `COPY` on `conn` and sends the matching users in pages. Ok(true) when the whole stream
/// was read (the connection is usable again), Ok(false) when it stopped early; with where the time
/// went.
async fn read_copy(
    conn: &mut PgConnection,
    sql: &str,
    filter: &UserFilter,
    parts: UserParts,
    limit: u64,
    pages: Pages<'_>,
) -> Result<(bool, ReadStats), StoreError> {
    let Pages { tx, recycled, page_size } = pages;
    let asked = std::time::Instant::now();
    let mut chunks = conn.copy_out_raw(sql).await.map_err(from_sqlx)?;
    let mut decoder = Decoder::new();
    // The page being filled: its first `filled` users are this page's; the rest are users of a
    // recycled page, whose buffers the next rows are decoded into where they lie (a `User` is
    // hundreds of bytes: moving each one out of a spare list and into the page was memcpy-bound).
    let mut page: Vec<User> = Vec::with_capacity(page_size);
    let mut filled = 0usize;
    // Recycled pages not used yet: a page is allocated only when none is here, so the number of
    // pages in circulation settles at what the pipeline holds at once.
    let mut stash: Vec<Vec<User>> = Vec::new();
    // Strings of values that went NULL or lists that shrank, and the row's joined text columns.
    let mut scratch = Scratch::default();
    let mut sent = 0u64;
    let mut done = false;
    // Where the reader's time goes: waiting for the consumer (timed per page, not per message:
    // Postgres sends one message per row), the rest reading and decoding.
    let mut stats = ReadStats::default();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(from_sqlx)?;
        if stats.messages == 0 {
            stats.first_row = asked.elapsed();
        }
        stats.messages += 1;
        if done {
            // Only the trailer can follow it.
            continue;
        }
        let mut stop = false;
        done = decoder.feed(&chunk, |values| {
            if sent + filled as u64 >= limit {
                stop = true;
                return Ok(false);
            }
            if filled == page.len() {
                page.push(blank_user());
            }
            let user = &mut page[filled];
            decode_into(values, parts, user, &mut scratch)?;
            if filter.matches(user) {
                filled += 1;
            }
            Ok(true)
        })?;
        if filled >= page_size || (stop && filled > 0) {
            sent += filled as u64;
            page.truncate(filled);
            filled = 0;
            while let Ok(used) = recycled.try_recv() {
                stash.push(used);
            }
            let next = stash.pop().unwrap_or_else(|| Vec::with_capacity(page_size));
            let full = std::mem::replace(&mut page, next);
            let sending = std::time::Instant::now();
            if tx.send(Ok(full)).await.is_err() {
                return Ok((false, stats)); // the consumer is gone
            }
            stats.waiting_for_consumer += sending.elapsed();
        }
        if stop || sent >= limit {
            return Ok((false, stats));
        }
    }
    if !done {
        return Err(StoreError::Corrupt("the COPY stream ended without its trailer".into()));
    }
    page.truncate(filled);
    if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
        return Ok((false, stats));
    }
    Ok((true, stats))
}

/// Incremental decoder of a binary `COPY` stream of [`COLUMNS`].
struct Decoder {
    /// Bytes of an incomplete tuple (or header) carried over to the next chunk.
    carry: Vec<u8>,
    header_seen: bool,
}

impl Decoder {
    fn new() -> Self {
        Self { carry: Vec::new(), header_seen: false }
    }

    /// Splits every complete tuple of `chunk` (after any carried bytes) into its values and hands
    /// them to `each`, which returns false to stop. Returns true once the trailer was read.
    fn feed(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&Values<'_>) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let owned;
        let data: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(chunk);
            owned = std::mem::take(&mut self.carry);
            &owned
        };
        let mut pos = 0;
        let mut values: Values<'_> = [None; 32];
        if !self.header_seen {
            let Some(len) = header_len(data)? else {
                self.carry = data.to_vec();
                return Ok(false);
            };
            pos = len;
            self.header_seen = true;
        }
        while pos < data.len() {
            let rest = &data[pos..];
            if rest.len() < 2 {
                break;
            }
            let fields = i16::from_be_bytes([rest[0], rest[1]]);
            if fields == -1 {
                return Ok(true);
            }
            if fields as usize != COLUMNS.len() {
                return Err(StoreError::Corrupt(format!(
                    "COPY tuple with {fields} fields, expected {}",
                    COLUMNS.len()
                )));
            }
            let Some(len) = split_tuple(rest, &mut values) else { break };
            pos += len;
            if !each(&values)? {
                return Ok(false);
            }
        }
        self.carry.clear();
        self.carry.extend_from_slice(&data[pos..]);
        Ok(false)
    }
}

/// Length of the binary `COPY` header at the start of `data`, or None when incomplete.
fn header_len(data: &[u8]) -> Result<Option<usize>, StoreError> {
    if data.len() < 19 {
        return Ok(None);
    }
    if &data[..11] != BINARY_SIGNATURE {
        return Err(StoreError::Corrupt("the COPY stream has no binary signature".into()));
    }
    let ext = u32::from_be_bytes([data[15], data[16], data[17], data[18]]) as usize;
    Ok((data.len() >= 19 + ext).then_some(19 + ext))
}

/// The values of one tuple (None = NULL), in [`COLUMNS`] order.
type Values<'a> = [Option<&'a [u8]>; 32];

/// Sets `values` to the field values of the tuple at the start of `data` and returns its length, or
/// None when the tuple is incomplete. (Filled in place: a returned array is 512 bytes to copy, per row.)
fn split_tuple<'a>(data: &'a [u8], values: &mut Values<'a>) -> Option<usize> {
    let mut pos = 2;
    for v in values.iter_mut() {
        let len = data.get(pos..pos + 4)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        if len < 0 {
            // NULL. `values` holds the previous tuple's values: every slot is set, NULLs included.
            *v = None;
            continue;
        }
        let len = len as usize;
        let bytes = data.get(pos..pos + len)?;
        *v = Some(bytes);
        pos += len;
    }
    Some(pos)
}

/// A placeholder user for [`decode_into`] to overwrite.
fn blank_user() -> User {
    User {
        id: UserId::parse("U0000000000000000000000000000").expect("a valid user id"),
        login_ids: Vec::new(),
        username: None,
        email: None,
        email_verified: false,
        phone: None,
        phone_verified: false,
        name: None,
        given_name: None,
        middle_name: None,
        family_name: None,
        nickname: None,
        picture: None,
        gender: None,
        birthdate: None,
        zoneinfo: None,
        locale: None,
        website: None,
        profile: None,
        address: None,
        status: userexport_domain::user::UserStatus::Enabled,
        test: false,
        roles: Vec::new(),
        tenants: Vec::new(),
        custom_attributes: serde_json::Map::new(),
        sso_app_ids: Vec::new(),
        authenticators: Default::default(),
        created_at: DateTime::UNIX_EPOCH,
        updated_at: DateTime::UNIX_EPOCH,
        last_login_at: None,
        logins_count: 0,
    }
}

/// Whether column `i` of [`COLUMNS`] is `text` (JSON documents are stored as text too).
const fn is_text(i: usize) -> bool {
    !matches!(i, 0 | 5 | 7 | 22 | 28..=31)
}

/// The text columns of one row joined into one buffer, to be checked as UTF-8 at once: one SIMD
/// pass instead of a check per column (most values are shorter than the 64 bytes below which
/// simdutf8 falls back to std's byte-by-byte check, which was 8 % of the reader's time).
struct Texts {
    joined: Vec<u8>,
    /// Where each column's value lies in `joined` (set for the non-NULL text columns of the row).
    spans: [(usize, usize); COLUMNS.len()],
}

impl Default for Texts {
    fn default() -> Self {
        Self { joined: Vec::new(), spans: [(0, 0); COLUMNS.len()] }
    }
}

impl Texts {
    /// Joins the non-NULL text columns of `v` and returns the joined text when it is UTF-8, with
    /// the spans. A column is UTF-8 exactly when the joined text is and the column's span starts
    /// and ends on character boundaries ([`Row::str`] checks both).
    fn join(&mut self, v: &Values<'_>) -> (Option<&str>, &[(usize, usize); COLUMNS.len()]) {
        self.joined.clear();
        for (i, value) in v.iter().enumerate() {
            if let Some(b) = value.filter(|_| is_text(i)) {
                self.spans[i] = (self.joined.len(), b.len());
                self.joined.extend_from_slice(b);
            }
        }
        (simdutf8::basic::from_utf8(&self.joined).ok(), &self.spans)
    }
}

/// What the reader keeps between rows so that decoding a row allocates nothing.
#[derive(Default)]
struct Scratch {
    /// Strings of values that went NULL or lists that shrank, for the next rows.
    spares: Spares,
    texts: Texts,
}

/// One row of [`COLUMNS`] → `user`, overwriting every field and reusing its buffers; JSON columns
/// outside `parts` are left empty. On error `user` holds a mix of old and new values.
fn decode_into(v: &Values<'_>, parts: UserParts, user: &mut User, scratch: &mut Scratch) -> Result<(), StoreError> {
    let seq = int8(v, 0, None)?;
    let Scratch { spares, texts } = scratch;
    let (joined, spans) = texts.join(v);
    let row = Row { v, seq, parts, joined, spans };
    // Destructured so that a new `User` field fails to compile here until it is decoded.
    let User {
        id,
        login_ids,
        username,
        email,
        email_verified,
        phone,
        phone_verified,
        name,
        given_name,
        middle_name,
        family_name,
        nickname,
        picture,
        gender,
        birthdate,
        zoneinfo,
        locale,
        website,
        profile,
        address,
        status,
        test,
        roles,
        tenants,
        custom_attributes,
        sso_app_ids,
        authenticators,
        created_at,
        updated_at,
        last_login_at,
        logins_count,
    } = user;
    id.parse_into(row.text(1)?).map_err(|e| row.corrupt(1, &e.to_string()))?;
    row.strings_into(2, login_ids, spares)?;
    row.opt_text_into(3, username, spares)?;
    row.opt_text_into(4, email, spares)?;
    *email_verified = row.boolean(5)?;
    row.opt_text_into(6, phone, spares)?;
    *phone_verified = row.boolean(7)?;
    for (i, slot) in [
        (8, name),
        (9, given_name),
        (10, middle_name),
        (11, family_name),
        (12, nickname),
        (13, picture),
        (14, gender),
        (15, birthdate),
        (16, zoneinfo),
        (17, locale),
        (18, website),
        (19, profile),
    ] {
        row.opt_text_into(i, slot, spares)?;
    }
    let stored = if parts.address { row.opt_text(20)? } else { None };
    address_into(stored, address, spares).map_err(|e| row.corrupt(20, &e.to_string()))?;
    *status = row.text(21)?.parse().map_err(|e: String| row.corrupt(21, &e))?;
    *test = row.boolean(22)?;
    row.strings_into(23, roles, spares)?;
    *tenants = row.json_part(24)?;
    *custom_attributes = row.json_part(25)?;
    row.strings_into(26, sso_app_ids, spares)?;
    if selected(27, parts) {
        authenticators_json_into(row.text(27)?, authenticators, spares).map_err(|e| row.corrupt(27, &e.to_string()))?;
    } else {
        *authenticators = Default::default();
    }
    *created_at = row.timestamp(28)?;
    *updated_at = row.timestamp(29)?;
    *last_login_at = row.opt_timestamp(30)?;
    *logins_count = int8(v, 31, Some(seq))?;
    Ok(())
}

/// A `bigint` value.
fn int8(v: &Values<'_>, i: usize, seq: Option<i64>) -> Result<i64, StoreError> {
    let bytes = v[i].ok_or_else(|| corrupt(i, seq, "is NULL"))?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| corrupt(i, seq, "is not an 8-byte integer"))?;
    Ok(i64::from_be_bytes(bytes))
}

fn corrupt(i: usize, seq: Option<i64>, what: &str) -> StoreError {
    match seq {
        Some(seq) => StoreError::Corrupt(format!("users.{} of seq {seq}: {what}", COLUMN_NAMES[i])),
        None => StoreError::Corrupt(format!("users.{}: {what}", COLUMN_NAMES[i])),
    }
}

/// The values of one row, for typed access with errors naming the column and row.
struct Row<'a> {
    v: &'a Values<'a>,
    seq: i64,
    parts: UserParts,
    /// The row's text columns joined, when that is UTF-8 ([`Texts::join`]), and where each lies.
    joined: Option<&'a str>,
    spans: &'a [(usize, usize); COLUMNS.len()],
}

impl<'a> Row<'a> {
    fn corrupt(&self, i: usize, what: &str) -> StoreError {
        corrupt(i, Some(self.seq), what)
    }

    fn opt_bytes(&self, i: usize) -> Option<&'a [u8]> {
        self.v[i]
    }

    fn bytes(&self, i: usize) -> Result<&'a [u8], StoreError> {
        self.v[i].ok_or_else(|| self.corrupt(i, "is NULL"))
    }

    /// The value `b` of text column `i` as a `str`: a slice of the joined text, already checked,
    /// or, when that is not UTF-8 or the slice not on character boundaries, `b` checked on its own
    /// (which says where the bytes went wrong).
    fn str(&self, i: usize, b: &'a [u8]) -> Result<&'a str, StoreError> {
        let (start, len) = self.spans[i];
        if let Some(s) = self.joined.and_then(|joined| joined.get(start..start + len)) {
            return Ok(s);
        }
        std::str::from_utf8(b).map_err(|e| self.corrupt(i, &e.to_string()))
    }

    fn text(&self, i: usize) -> Result<&'a str, StoreError> {
        self.str(i, self.bytes(i)?)
    }

    fn opt_text(&self, i: usize) -> Result<Option<&'a str>, StoreError> {
        self.opt_bytes(i).map(|b| self.str(i, b)).transpose()
    }

    /// A nullable text column into `slot`, reusing its buffer (or a spare one).
    fn opt_text_into(&self, i: usize, slot: &mut Option<String>, spares: &mut Spares) -> Result<(), StoreError> {
        set_opt_str(slot, self.opt_text(i)?, spares);
        Ok(())
    }

    /// A JSON array of strings into `slot`, reusing its strings; emptied when not selected.
    fn strings_into(&self, i: usize, slot: &mut Vec<String>, spares: &mut Spares) -> Result<(), StoreError> {
        if selected(i, self.parts) {
            strings_json_into(self.text(i)?, slot, spares).map_err(|e| self.corrupt(i, &e.to_string()))
        } else {
            slot.clear();
            Ok(())
        }
    }

    fn boolean(&self, i: usize) -> Result<bool, StoreError> {
        match self.bytes(i)? {
            [b] => Ok(*b != 0),
            _ => Err(self.corrupt(i, "is not a boolean")),
        }
    }

    fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        serde_json::from_str(self.text(i)?).map_err(|e| self.corrupt(i, &e.to_string()))
    }

    /// A JSON column, or the empty value when it was not selected.
    fn json_part<T: DeserializeOwned + Default>(&self, i: usize) -> Result<T, StoreError> {
        if selected(i, self.parts) { self.json(i) } else { Ok(T::default()) }
    }

    fn timestamp(&self, i: usize) -> Result<DateTime<Utc>, StoreError> {
        self.micros(i, self.bytes(i)?)
    }

    fn opt_timestamp(&self, i: usize) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_bytes(i).map(|b| self.micros(i, b)).transpose()
    }

    /// A `timestamptz`: microseconds since 2000-01-01 UTC.
    fn micros(&self, i: usize, b: &[u8]) -> Result<DateTime<Utc>, StoreError> {
        let b: [u8; 8] = b.try_into().map_err(|_| self.corrupt(i, "is not a timestamp"))?;
        i64::from_be_bytes(b)
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| self.corrupt(i, "is out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut t = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(b) => {
                    t.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    t.extend_from_slice(b);
                }
                None => t.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        t
    }

    fn sample_tuple(seq: i64, id: &str) -> Vec<u8> {
        let seq = seq.to_be_bytes();
        let created = 1_000_000i64.to_be_bytes();
        let count = 3i64.to_be_bytes();
        let mut values: Vec<Option<&[u8]>> = vec![
            Some(&seq),
            Some(id.as_bytes()),
            Some(b"[\"a@example.com\"]"),
            None,
            Some("é@example.com".as_bytes()),
            Some(&[1]),
            None,
            Some(&[0]),
        ];
        values.extend([None; 12]);
        values.extend([
            Some(b"{\"country\":\"US\"}".as_slice()),
            Some(b"enabled"),
            Some(&[0]),
            Some(b"[\"admin\"]"),
            Some(b"[]"),
            Some(b"{\"plan\":\"pro\"}"),
            Some(b"[]"),
            Some(b"{\"password\":true}"),
            Some(&created),
            Some(&created),
            None,
            Some(&count),
        ]);
        tuple(&values)
    }

    /// Decodes every tuple of `data` into a fresh user.
    fn decode_all(d: &mut Decoder, data: &[u8], users: &mut Vec<User>) -> Result<bool, StoreError> {
        d.feed(data, |values| {
            let mut user = blank_user();
            decode_into(values, UserParts::ALL, &mut user, &mut Scratch::default())?;
            users.push(user);
            Ok(true)
        })
    }

    /// A row decoded into a user that held another row gives the same user as one decoded into a
    /// blank user: every field is overwritten.
    #[test]
    fn decoding_into_a_used_user_overwrites_everything() {
        let id = userexport_domain::UserId::generate();
        let full = sample_tuple(1, id.as_str());
        let mut sparse_values: Vec<Option<&[u8]>> = Vec::new();
        let seq = 2i64.to_be_bytes();
        let created = 5i64.to_be_bytes();
        let other = userexport_domain::UserId::generate();
        sparse_values.extend([Some(seq.as_slice()), Some(other.as_str().as_bytes()), Some(b"[]".as_slice())]);
        sparse_values.extend([None, None, Some(&[0][..]), None, Some(&[0][..])]);
        sparse_values.extend([None; 12]);
        sparse_values.extend([None, Some(b"disabled".as_slice()), Some(&[1][..]), Some(b"[]")]);
        sparse_values.extend([Some(b"[]".as_slice()), Some(b"{}"), Some(b"[]"), Some(b"{}")]);
        sparse_values.extend([Some(created.as_slice()), Some(&created), None, Some(&created)]);
        let sparse = tuple(&sparse_values);
        let decode = |tuple: &[u8], into: &mut User| {
            let mut values = [None; 32];
            split_tuple(tuple, &mut values).unwrap();
            decode_into(&values, UserParts::ALL, into, &mut Scratch::default()).unwrap();
        };
        for (first, second) in [(&full, &sparse), (&sparse, &full), (&full, &full)] {
            let mut want = blank_user();
            decode(second, &mut want);
            let mut reused = blank_user();
            decode(first, &mut reused);
            decode(second, &mut reused);
            assert_eq!(reused, want);
        }
        // Parts left out are emptied, not kept from the previous row.
        let mut reused = blank_user();
        decode(&full, &mut reused);
        let mut values = [None; 32];
        split_tuple(&full, &mut values).unwrap();
        decode_into(&values, UserParts::NONE, &mut reused, &mut Scratch::default()).unwrap();
        let mut want = blank_user();
        decode(&full, &mut want);
        UserParts::NONE.project(&mut want);
        assert_eq!(reused, want);
    }

    #[test]
    fn decodes_tuples_split_anywhere() {
        let id = userexport_domain::UserId::generate();
        let mut stream = BINARY_SIGNATURE.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        stream.extend(sample_tuple(1, id.as_str()));
        stream.extend(sample_tuple(2, id.as_str()));
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for split in 0..stream.len() {
            let mut d = Decoder::new();
            let mut users = Vec::new();
            let first = decode_all(&mut d, &stream[..split], &mut users);
            assert!(!first.unwrap());
            let done = decode_all(&mut d, &stream[split..], &mut users).unwrap();
            assert!(done, "split at {split}");
            assert_eq!(users.len(), 2);
            let u = &users[1];
            assert_eq!(u.id, id);
            assert_eq!(u.email.as_deref(), Some("é@example.com"));
            assert!(u.email_verified && !u.phone_verified);
            assert_eq!(u.address.as_ref().and_then(|a| a.country.as_deref()), Some("US"));
            assert_eq!(u.roles, ["admin"]);
            assert_eq!(u.created_at.timestamp(), 946_684_801);
            assert_eq!(u.logins_count, 3);
            assert!(u.authenticators.password);
        }
    }

    /// Tuples share one `Values` array: a NULL after a value in the same chunk must read as NULL,
    /// not as the previous tuple's value (one chunk can hold many tuples).
    #[test]
    fn a_null_after_a_value_in_the_same_chunk_is_null() {
        let id = userexport_domain::UserId::generate();
        let full = sample_tuple(1, id.as_str());
        let mut values = [None; 32];
        split_tuple(&full, &mut values).unwrap();
        let mut second = values;
        let other = userexport_domain::UserId::generate();
        second[1] = Some(other.as_str().as_bytes());
        second[4] = None; // email
        second[20] = None; // address
        let mut stream = BINARY_SIGNATURE.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        stream.extend_from_slice(&full);
        stream.extend(tuple(&second));
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let mut users = Vec::new();
        assert!(decode_all(&mut Decoder::new(), &stream, &mut users).unwrap());
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].email.as_deref(), Some("é@example.com"));
        assert_eq!(users[1].id, other);
        assert_eq!(users[1].email, None);
        assert_eq!(users[1].address, None);
    }

    /// `is_text` names exactly the text columns of [`COLUMNS`]: a text column it missed would be read
    /// from a stale span of the joined text.
    #[test]
    fn is_text_matches_the_entity() {
        use sea_orm::{ColumnTrait, ColumnType};
        for (i, column) in COLUMNS.iter().enumerate() {
            let text = matches!(column.def().get_column_type(), ColumnType::String(_) | ColumnType::Text);
            assert_eq!(is_text(i), text, "{} ({i})", COLUMN_NAMES[i]);
        }
    }

    /// Text that is not UTF-8 is an error naming its column, also when the joined text of the row is
    /// UTF-8 because two columns each hold half of one character.
    #[test]
    fn text_that_is_not_utf8_is_corrupt() {
        let id = userexport_domain::UserId::generate();
        let full = sample_tuple(7, id.as_str());
        let decode = |edit: &dyn Fn(&mut Values<'_>)| {
            let mut values = [None; 32];
            split_tuple(&full, &mut values).unwrap();
            edit(&mut values);
            decode_into(&values, UserParts::ALL, &mut blank_user(), &mut Scratch::default()).unwrap_err().to_string()
        };
        let err = decode(&|v| v[8] = Some(b"bad \xff name"));
        assert!(err.contains("users.name of seq 7") && err.contains("utf-8"), "{err}");
        // "é" is C3 A9: its halves in username (3) and email (4), which are joined next to each other.
        let err = decode(&|v| {
            v[3] = Some(b"half \xc3");
            v[4] = Some(b"\xa9 half");
        });
        assert!(err.contains("users.username of seq 7"), "{err}");
        let err = decode(&|v| v[24] = Some(b"[\"\xff\"]"));
        assert!(err.contains("users.tenants of seq 7"), "{err}");
    }

    #[test]
    fn bad_rows_are_corrupt_not_panics() {
        let mut stream = BINARY_SIGNATURE.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        stream.extend(sample_tuple(5, "not-a-user-id"));
        let err = decode_all(&mut Decoder::new(), &stream, &mut Vec::new()).unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("users.user_id of seq 5")), "{err}");
        assert!(matches!(Decoder::new().feed(b"PGCOPY\nxxxxxxxxxxxxxxxxx", |_| Ok(true)), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn filters_and_limits_are_inlined_as_literals() {
        let project = ProjectId::generate();
        let filter = UserFilter {
            emails: vec!["O'Hara\\x@example.com".into()],
            created_from: Some(DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap()),
            ..Default::default()
        };
        let sql = copy_statement(&project, &filter, Some(10), UserParts::ALL);
        assert!(sql.starts_with("COPY (SELECT \"seq\", \"user_id\""), "{sql}");
        assert!(sql.ends_with("ORDER BY \"seq\" ASC LIMIT 10) TO STDOUT (FORMAT binary)"), "{sql}");
        assert!(sql.contains(r"E'o\'hara\\x@example.com'"), "{sql}");
        assert!(sql.contains("2023-11-14 22:13:20.123456 +00:00"), "{sql}");
        let inexact = UserFilter { text: Some("x".into()), ..Default::default() };
        assert!(!copy_statement(&project, &inexact, Some(10), UserParts::ALL).contains("LIMIT"));
        let narrow = copy_statement(&project, &filter, None, UserParts { roles: true, ..UserParts::NONE });
        assert!(narrow.contains("\"user_id\", NULL, \"username\""), "{narrow}");
        let tail = "\"profile\", NULL, \"status\", \"test\", \"roles\", NULL, NULL, NULL, NULL, \"created_at\"";
        assert!(narrow.contains(tail), "{narrow}");
    }

    /// Decoded users equal what the sea-orm path reads, for every field; limits and early drops
    /// leave the pool usable. Needs Postgres (`USEREXPORT_TEST_DATABASE_URL`); skipped without it
    /// unless `USEREXPORT_TEST_REQUIRE_SERVICES=1`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copy_stream_reads_what_the_models_read() {
        use futures_util::TryStreamExt;
        use sea_orm::ConnectionTrait;
        use userexport_domain::{TestUsers, fake};

        let admin_url = std::env::var("USEREXPORT_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let required = std::env::var("USEREXPORT_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        let admin =
            match tokio::time::timeout(std::time::Duration::from_secs(5), Store::connect_with(&admin_url, 1)).await {
                Ok(Ok(admin)) => admin,
                other if required => panic!("Postgres at {admin_url} is unreachable: {other:?}"),
                other => {
                    eprintln!("skipping: Postgres at {admin_url} is unreachable ({other:?})");
                    return;
                }
            };
        let name = format!("userexport_test_{:016x}", rand::random::<u64>());
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        admin.connection().execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        let outcome = tokio::spawn(async move {
            let store = Store::connect_with(url.as_str(), 3).await.unwrap();
            store.migrate().await.unwrap();
            let (project, _) = store.create_project("stream").await.unwrap();
            let p = project.id;
            let mut users: Vec<User> = (0..300).map(|i| fake::user(9, i)).collect();
            let mut odd = fake::user(9, 300);
            odd.name = Some("tab\there\\back\nline \u{2028} é".into());
            odd.email = Some(String::new());
            odd.address = None;
            odd.last_login_at = None;
            odd.custom_attributes.insert("nested".into(), serde_json::json!({"a": [1, null, "x"]}));
            users.push(odd);
            store.insert_users(&p, &users).await.unwrap();
            let everyone = UserFilter { test_users: TestUsers::Include, ..Default::default() };

            let pages: Vec<Vec<User>> =
                store.stream_users(p.clone(), everyone.clone(), 64, None, UserParts::ALL).try_collect().await.unwrap();
            assert!(pages[..pages.len() - 1].iter().all(|page| page.len() == 64));
            let got: Vec<User> = pages.into_iter().flatten().collect();
            assert_eq!(got.len(), users.len());
            for (g, u) in got.iter().zip(&users) {
                assert_eq!(g.id, u.id, "insertion order");
                assert_eq!(Some(g), store.get_user(&p, &u.id).await.unwrap().as_ref());
            }

            // Only the asked parts are read.
            let parts = UserParts { roles: true, authenticators: true, ..UserParts::NONE };
            let narrow: Vec<User> = store
                .stream_users(p.clone(), everyone.clone(), 50, None, parts)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .concat();
            let want: Vec<User> = got
                .iter()
                .cloned()
                .map(|mut u| {
                    parts.project(&mut u);
                    u
                })
                .collect();
            assert_eq!(narrow, want);

            let limited: Vec<User> = store
                .stream_users(p.clone(), everyone.clone(), 4, Some(10), UserParts::ALL)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .concat();
            assert_eq!(limited, got[..10]);
            let text = UserFilter { text: Some("@".into()), ..everyone.clone() };
            let want: Vec<&User> = got.iter().filter(|u| text.matches(u)).take(7).collect();
            let limited: Vec<User> = store
                .stream_users(p.clone(), text, 5, Some(7), UserParts::NONE)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .concat();
            assert_eq!(limited.iter().collect::<Vec<_>>(), want);

            // Dropped after one page: the reader stops and the pool keeps working.
            for _ in 0..5 {
                let mut s = store.stream_users(p.clone(), everyone.clone(), 10, None, UserParts::ALL);
                assert_eq!(s.next().await.unwrap().unwrap().len(), 10);
            }
            assert_eq!(store.count_users(&p, &everyone).await.unwrap(), users.len() as u64);

            // A stream read to its end leaves its connection (idle after its COMMIT) to the next one.
            let kept = |sql: &str| {
                let sql = format!(
                    "SELECT {sql} FROM pg_stat_activity WHERE datname = current_database() \
                     AND state = 'idle' AND query = 'COMMIT'"
                );
                let store = store.clone();
                async move {
                    let stmt = sea_orm::Statement::from_string(sea_orm::DatabaseBackend::Postgres, sql);
                    let rows = store.connection().query_all_raw(stmt).await.unwrap();
                    rows.len()
                }
            };
            let read_all = || async {
                let pages: Vec<Vec<User>> = store
                    .stream_users(p.clone(), everyone.clone(), 64, None, UserParts::ALL)
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(pages.concat(), got);
            };
            for _ in 0..3 {
                read_all().await;
            }
            assert_eq!(kept("pid").await, 1, "one connection kept for three streams");
            // Closed by the server while kept: the next stream connects again and reads everything.
            assert_eq!(kept("pg_terminate_backend(pid)").await, 1);
            read_all().await;
            assert_eq!(kept("pid").await, 1);

            // A thread that waited long enough for another export closes its connection and ends.
            let mut store = store.clone();
            store.readers =
                std::sync::Arc::new(crate::readers::Readers::waiting(std::time::Duration::from_millis(200)));
            let pages: Vec<Vec<User>> =
                store.stream_users(p.clone(), everyone.clone(), 64, None, UserParts::ALL).try_collect().await.unwrap();
            assert_eq!(pages.concat(), got);
            assert_eq!(kept("pid").await, 2, "the first store's and this one's");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while kept("pid").await != 1 {
                assert!(std::time::Instant::now() < deadline, "the idle reader kept its connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        let dropped =
            admin.connection().execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
        dropped.unwrap();
    }
}
