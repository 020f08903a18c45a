//! sea-orm repositories: projects, keys, users (keyset streams), export tasks.
//!
//! One [`Store`] works on Postgres and SQLite with the same code and migrations
//! ([`userexport_migrations::Migrator`]). Rules that hold on both backends:
//!
//! - Time is always bound from Rust (`chrono`), never taken from SQL (`now()`), so stored and compared
//!   encodings match: `timestamp with time zone` on Postgres (microseconds), RFC 3339 UTC text on SQLite
//!   (which orders correctly as text).
//! - Users are read by keyset on an internal, insertion-ordered `seq`, never with `OFFSET`.
//! - [`UserFilter`](userexport_domain::UserFilter) predicates that SQL can answer exactly are pushed into
//!   the query; every fetched user is still checked with `UserFilter::matches`, the reference semantics.
//! - Write transactions on SQLite start `IMMEDIATE`, so they wait on the busy timeout instead of failing
//!   when upgrading from a read lock.

mod convert;
mod entity;
mod error;
mod pg_copy;
mod projects;
mod readers;
mod reuse;
mod search;
mod stream;
mod tasks;
mod user_updates;
mod users;

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    AccessMode, ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, IsolationLevel,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use userexport_migrations::{Migrator, MigratorTrait};

pub use error::StoreError;
pub use search::{SEARCH_CURSOR_TTL, SEARCH_TOTAL_TTL, SearchPage};
pub use stream::UserPages;
pub use tasks::{Claim, Completion, Heartbeat, Progress, TaskQuery};
pub use users::MAX_SCAN_ROWS;

/// Default Postgres pool size.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// Default retention of failed and cancelled tasks (completed tasks carry their own `expires_at`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How long SQLite waits for a lock, and how long opening a connection may take.
const WAIT: Duration = Duration::from_secs(5);

/// How long a request may queue for a pooled connection: a burst (1,000 concurrent creates) waits
/// its turn instead of failing with 503, while a dead database still fails at `WAIT` per connect.
const ACQUIRE_WAIT: Duration = Duration::from_secs(15);

/// A time bound adjusted to what the backend stores. Postgres keeps microseconds, so for a stored `x`:
/// `x ≥ t` ⇔ `x ≥ ceil_µs(t)`, `x < t` ⇔ `x < ceil_µs(t)` (lower = true) and `x ≤ t` ⇔ `x ≤ floor_µs(t)`
/// (lower = false). SQLite stores the full value, so `t` is used as is.
pub(crate) fn time_bound(backend: Backend, t: DateTime<Utc>, lower: bool) -> DateTime<Utc> {
    match backend {
        Backend::Sqlite => t,
        Backend::Postgres => {
            let floor = t.trunc_subsecs(6);
            if lower && floor < t { floor + chrono::TimeDelta::microseconds(1) } else { floor }
        }
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite (embedded mode).
    Sqlite,
}

/// The repository of the service. Cheap to clone (wraps a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: Backend,
    retention: Duration,
    /// The threads reading export snapshots on Postgres, with their connections.
    readers: std::sync::Arc<readers::Readers>,
}

impl Store {
    /// Connects to `postgres://…` (pool of [`DEFAULT_MAX_CONNECTIONS`]) or `sqlite://path?mode=rwc`
    /// (creates the file; WAL journal and a 5 s busy timeout).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`Store::connect`] with an explicit pool size.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let mut opt = ConnectOptions::new(url);
        opt.max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_WAIT)
            .connect_timeout(WAIT)
            .sqlx_logging(false);
        if backend == Backend::Sqlite {
            opt.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal).busy_timeout(WAIT)
            });
        }
        let db = Database::connect(opt).await?;
        Ok(Store { db, backend, retention: DEFAULT_RETENTION, readers: Default::default() })
    }

    /// Sets how long failed and cancelled tasks are kept before they expire (default 24 h).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Applies all pending migrations. Run from one place: migrations take no lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// The database kind.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying sea-orm connection (pool).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// `t` as a bound on stored timestamps of this backend (see [`time_bound`]).
    pub(crate) fn bound(&self, t: DateTime<Utc>, lower: bool) -> DateTime<Utc> {
        time_bound(self.backend, t, lower)
    }

    /// A write transaction (`BEGIN IMMEDIATE` on SQLite).
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let opts = TransactionOptions {
            isolation_level: None,
            access_mode: None,
            sqlite_transaction_mode: (self.backend == Backend::Sqlite).then_some(SqliteTransactionMode::Immediate),
        };
        Ok(self.db.begin_with_options(opts).await?)
    }

    /// A read-only snapshot: `REPEATABLE READ READ ONLY` on Postgres, a deferred read transaction on
    /// SQLite (WAL readers see the database as of their first read).
    pub(crate) async fn begin_snapshot(&self) -> Result<DatabaseTransaction, StoreError> {
        Ok(match self.backend {
            Backend::Postgres => {
                self.db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await?
            }
            Backend::Sqlite => self.db.begin().await?,
        })
    }
}
