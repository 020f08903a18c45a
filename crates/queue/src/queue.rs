//! The producer side and housekeeping: connect, enqueue, ping, depth, trim.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use apalis_core::backend::TaskSink;
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};
use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use ulid::Ulid;
use userexport_domain::TaskId;

use crate::{ExportJob, QueueConfig, QueueError, config::redact_url, wake, wake::Wake};

/// Default heartbeat interval; leases are renewed on every heartbeat.
///
/// Also the longest an idle apalis worker can miss a new job: the fault suite saw an idle worker
/// pick up a re-enqueued job only at its next heartbeat (30 s at the former default) although it
/// polls every 200 ms, so the beat is short. A beat is one small script call.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Missed heartbeats before a worker's jobs count as orphaned (orphan timeout = heartbeat × 4).
pub(crate) const MISSED_HEARTBEATS: usize = 4;
/// Bound on connecting and on one housekeeping round trip.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished Redis jobs removed per Lua call in [`Queue::trim_done`] (bounds blocking time).
const TRIM_BATCH: u64 = 1000;
/// SQLite worker rows unseen for this long are deleted by [`Queue::trim_done`].
const STALE_WORKER_SECS: i64 = 24 * 3600;

/// Removes the oldest members of a finished-jobs set beyond `keep`, with their payload and
/// metadata. apalis task ids are ULIDs, so an `ALPHA` sort is a chronological sort.
const TRIM_SCRIPT: &str = r#"
-- KEYS[1]: a finished-jobs set (done or dead)
-- KEYS[2]: the task data hash
-- KEYS[3]: the task metadata prefix
-- ARGV[1]: members to keep, ARGV[2]: max members removed by this call
local keep = tonumber(ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n <= keep then return 0 end
local limit = math.min(n - keep, tonumber(ARGV[2]))
local ids = redis.call('SORT', KEYS[1], 'ALPHA', 'LIMIT', 0, limit)
local result_hash = KEYS[3] .. ':result'
for _, id in ipairs(ids) do
  redis.call('SREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', result_hash, id)
  redis.call('DEL', KEYS[3] .. ':' .. id)
end
return #ids
"#;

/// A connection to the export queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(crate) backend: Backend,
    /// Wakes this process's idle workers when a job is enqueued (here, or elsewhere through Redis).
    pub(crate) wake: Arc<Wake>,
}

#[derive(Clone)]
pub(crate) enum Backend {
    /// `client` opens the workers' job-notification subscription.
    Redis {
        storage: RedisStorage<ExportJob>,
        conn: ConnectionManager,
        client: Box<redis::Client>,
        prefix: String,
    },
    Sqlite {
        storage: SqliteStorage<ExportJob>,
        pool: SqlitePool,
        prefix: String,
    },
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (backend, prefix) = match &self.backend {
            Backend::Redis { prefix, .. } => ("redis", prefix),
            Backend::Sqlite { prefix, .. } => ("sqlite", prefix),
        };
        f.debug_struct("Queue").field("backend", &backend).field("prefix", prefix).finish()
    }
}

fn validate_prefix(prefix: &str) -> Result<(), QueueError> {
    if prefix.is_empty() || prefix.len() > 200 || !prefix.chars().all(|c| c.is_ascii_graphic()) {
        return Err(QueueError::Config(format!(
            "queue prefix `{prefix}` must be 1-200 printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

async fn bounded<T, E>(fut: impl Future<Output = Result<T, E>>) -> Result<T, QueueError>
where
    QueueError: From<E>,
{
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(r) => r.map_err(QueueError::from),
        Err(_) => Err(QueueError::Timeout(IO_TIMEOUT)),
    }
}

// `persist_results` must stay on: in apalis 1.0 it also gates the acknowledgement of finished
// jobs (off = jobs are never acked and stay leased). Our handlers return `()`, so the stored
// result is a tiny `null`, and `trim_done` removes it with the job.

/// The apalis Redis configuration for `prefix` (see stack.md §2.2).
pub(crate) fn redis_config(prefix: &str, heartbeat: Duration) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(prefix)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .batch_size(1)
        .persist_results(true)
}

/// The apalis SQLite configuration for `prefix`.
pub(crate) fn sqlite_config(prefix: &str, heartbeat: Duration) -> apalis_sqlite::Config {
    apalis_sqlite::Config::default()
        .queue(prefix)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .batch_size(1)
        .persist_results(true)
}

fn parse_redis_version(info: &str) -> Option<(u32, u32)> {
    let v = info.lines().find_map(|l| l.trim().strip_prefix("redis_version:"))?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Queue {
    /// Connects to the backend. Redis: checks the server version (≥ 6.2). SQLite: opens the
    /// file (WAL, `busy_timeout` 5 s) and runs apalis-sqlite's migrations.
    pub async fn connect(cfg: &QueueConfig) -> Result<Queue, QueueError> {
        validate_prefix(cfg.prefix())?;
        let backend = match cfg {
            QueueConfig::Redis { url, prefix } => {
                let mut conn = bounded(apalis_redis::connect(url.as_str())).await.map_err(|e| {
                    tracing::warn!(url = %redact_url(url), error = %e, "cannot connect to redis");
                    e
                })?;
                let info: String = bounded(redis::cmd("INFO").arg("server").query_async(&mut conn)).await?;
                match parse_redis_version(&info) {
                    Some(v) if v >= (6, 2) => {}
                    Some((major, minor)) => {
                        return Err(QueueError::Unsupported(format!(
                            "redis {major}.{minor}; the queue needs redis >= 6.2"
                        )));
                    }
                    None => tracing::warn!("cannot read redis_version from INFO; assuming >= 6.2"),
                }
                let storage = RedisStorage::new(conn.clone()).with_config(redis_config(prefix, DEFAULT_HEARTBEAT));
                let client = Box::new(redis::Client::open(url.as_str())?);
                Backend::Redis { storage, conn, client, prefix: prefix.clone() }
            }
            QueueConfig::Sqlite { url, prefix } => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5));
                let pool = bounded(SqlitePoolOptions::new().max_connections(4).connect_with(options)).await?;
                migrate_sqlite(&pool).await?;
                let storage = SqliteStorage::new(&pool).with_config(sqlite_config(prefix, DEFAULT_HEARTBEAT));
                Backend::Sqlite { storage, pool, prefix: prefix.clone() }
            }
        };
        Ok(Queue { backend, wake: Arc::default() })
    }

    /// The queue name / key prefix.
    pub fn prefix(&self) -> &str {
        match &self.backend {
            Backend::Redis { prefix, .. } | Backend::Sqlite { prefix, .. } => prefix,
        }
    }

    /// Enqueues `ExportJob::V1 { task_id }`.
    pub async fn enqueue(&self, task_id: &TaskId) -> Result<(), QueueError> {
        let job = ExportJob::V1 { task_id: task_id.clone() };
        let res = match &self.backend {
            Backend::Redis { storage, conn, prefix, .. } => {
                let mut storage = storage.clone();
                let res =
                    bounded(async move { storage.push(job).await.map_err(|e| QueueError::Enqueue(e.to_string())) })
                        .await;
                if res.is_ok() {
                    // Wakes idle workers elsewhere at once; if it fails, their poll finds the job.
                    let mut conn = conn.clone();
                    let mut publish = redis::cmd("PUBLISH");
                    publish.arg(wake::enqueued_channel(prefix)).arg(task_id.as_str());
                    if let Err(e) = bounded(publish.query_async::<i64>(&mut conn)).await {
                        tracing::debug!(task_id = %task_id, error = %e, "could not publish the job notification");
                    }
                }
                res
            }
            Backend::Sqlite { storage, .. } => {
                let mut storage = storage.clone();
                bounded(async move { storage.push(job).await.map_err(|e| QueueError::Enqueue(e.to_string())) }).await
            }
        };
        if res.is_ok() {
            self.wake.notify();
            tracing::debug!(task_id = %task_id, queue = self.prefix(), "export job enqueued");
        }
        res
    }

    /// Checks that the backend answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match &self.backend {
            Backend::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let _: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
            }
            Backend::Sqlite { pool, .. } => {
                bounded(sqlx::query("SELECT 1").execute(pool)).await?;
            }
        }
        Ok(())
    }

    /// Jobs waiting to run: queued now or scheduled for a retry. Running jobs are not counted.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        match &self.backend {
            Backend::Redis { storage, conn, .. } => {
                let cfg = storage.get_config();
                let mut conn = conn.clone();
                let (active, scheduled): (u64, u64) = bounded(
                    redis::pipe()
                        .cmd("LLEN")
                        .arg(cfg.active_jobs_list())
                        .cmd("ZCARD")
                        .arg(cfg.scheduled_jobs_set())
                        .query_async(&mut conn),
                )
                .await?;
                Ok(active + scheduled)
            }
            Backend::Sqlite { pool, prefix, .. } => {
                let n: i64 = bounded(
                    sqlx::query_scalar(
                        "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 \
                         AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))",
                    )
                    .bind(prefix)
                    .fetch_one(pool),
                )
                .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    }

    /// Housekeeping; call it on a timer. Keeps the `keep` most recent finished jobs (succeeded,
    /// and separately dead/killed) and deletes the rest with their payloads and metadata; returns
    /// how many finished jobs were removed.
    ///
    /// Redis: bounds `<prefix>:done` and `<prefix>:dead` (apalis never trims them) and removes
    /// the matching `data` fields and `meta` keys, plus metadata of workers that are gone.
    /// SQLite: deletes finished `Jobs` rows of this queue beyond `keep`, and worker rows unseen
    /// for a day. The export rows in the database keep the real status, so nothing is lost.
    pub async fn trim_done(&self, keep: u64) -> Result<u64, QueueError> {
        let removed = match &self.backend {
            Backend::Redis { storage, conn, .. } => trim_redis(storage.get_config(), conn.clone(), keep).await?,
            Backend::Sqlite { pool, prefix, .. } => trim_sqlite(pool, prefix, keep).await?,
        };
        if removed > 0 {
            tracing::info!(removed, keep, queue = self.prefix(), "trimmed finished queue jobs");
        }
        Ok(removed)
    }

    /// A unique worker name, `<hostname>-<pid>-<ulid>`.
    ///
    /// The hostname comes from `/etc/hostname`, else `$HOSTNAME`, else `host`.
    pub fn worker_name() -> String {
        format!("{}-{}-{}", hostname(), std::process::id(), Ulid::new())
    }
}

fn hostname() -> String {
    let candidates = [std::fs::read_to_string("/etc/hostname").ok(), std::env::var("HOSTNAME").ok()];
    candidates
        .into_iter()
        .flatten()
        .map(|raw| {
            raw.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .take(63)
                .collect::<String>()
        })
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), QueueError> {
    // Two processes starting at once on one file can race on the migrations table; the loser
    // fails once and sees the migrations applied on the next try.
    let mut tries = 0;
    loop {
        tries += 1;
        match SqliteStorage::migrations().run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 3 => {
                tracing::warn!(error = %e, "apalis-sqlite migrations failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(QueueError::Migrate(e.to_string())),
        }
    }
}

async fn trim_redis(cfg: &apalis_redis::Config, mut conn: ConnectionManager, keep: u64) -> Result<u64, QueueError> {
    let script = redis::Script::new(TRIM_SCRIPT);
    let mut removed = 0u64;
    for set in [cfg.done_jobs_set(), cfg.dead_jobs_set()] {
        loop {
            let n: u64 = bounded(
                script
                    .key(&set)
                    .key(cfg.job_data_hash())
                    .key(cfg.job_meta_hash())
                    .arg(keep)
                    .arg(TRIM_BATCH)
                    .invoke_async(&mut conn),
            )
            .await?;
            removed += n;
            if n < TRIM_BATCH {
                break;
            }
        }
    }

    // Worker metadata hashes outlive their workers: apalis drops expired workers from the
    // workers set but never deletes `<prefix>:workers:metadata:<name>`.
    let workers_set = cfg.workers_set();
    let meta_prefix = format!("{workers_set}:metadata:");
    let pattern = format!("{}*", escape_glob(&meta_prefix));
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = bounded(
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500).query_async(&mut conn),
        )
        .await?;
        for key in keys {
            let Some(name) = key.strip_prefix(&meta_prefix) else { continue };
            let score: Option<f64> =
                bounded(redis::cmd("ZSCORE").arg(&workers_set).arg(name).query_async(&mut conn)).await?;
            if score.is_none() {
                let _: u64 = bounded(redis::cmd("DEL").arg(&key).query_async(&mut conn)).await?;
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(removed)
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

async fn trim_sqlite(pool: &SqlitePool, prefix: &str, keep: u64) -> Result<u64, QueueError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    // Finished = succeeded, or dead: killed (AbortError) / failed with no attempts left. Like the
    // Redis `done` and `dead` sets, each class keeps its `keep` most recent jobs.
    const SQL: &str = "DELETE FROM Jobs WHERE id IN (SELECT id FROM (\
        SELECT id, ROW_NUMBER() OVER (PARTITION BY status = 'Done' ORDER BY done_at DESC, id DESC) AS rn \
        FROM Jobs WHERE job_type = ?1 \
        AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))) \
        WHERE rn > ?2)";
    let removed = bounded(sqlx::query(SQL).bind(prefix).bind(keep).execute(pool)).await?.rows_affected();
    bounded(
        sqlx::query(
            "DELETE FROM Workers WHERE worker_type = ?1 AND last_seen < strftime('%s', 'now') - ?2 \
             AND id NOT IN (SELECT lock_by FROM Jobs WHERE lock_by IS NOT NULL)",
        )
        .bind(prefix)
        .bind(STALE_WORKER_SECS)
        .execute(pool),
    )
    .await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_are_unique_and_clean() {
        let a = Queue::worker_name();
        let b = Queue::worker_name();
        assert_ne!(a, b);
        let pid = format!("-{}-", std::process::id());
        assert!(a.contains(&pid), "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')), "{a}");
    }

    #[test]
    fn parses_redis_version() {
        assert_eq!(parse_redis_version("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n"), Some((7, 0)));
        assert_eq!(parse_redis_version("redis_version:6.2.1"), Some((6, 2)));
        assert_eq!(parse_redis_version("nothing"), None);
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert!(validate_prefix("userexport:exports").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("has space").is_err());
    }

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
