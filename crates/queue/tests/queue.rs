//! Queue behaviour on both backends: Redis (USEREXPORT_TEST_REDIS_URL, random prefix per test)
//! and SQLite (a temporary file).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::SqlitePool;
use tokio::{sync::oneshot, task::JoinHandle};
use userexport_domain::TaskId;
use userexport_queue::{ExportJob, JobOutcome, Queue, QueueConfig, QueueError, WorkerOptions, run_workers};

const WAIT: Duration = Duration::from_secs(30);

enum Kind {
    Redis { url: String },
    Sqlite { _dir: tempfile::TempDir, pool: SqlitePool },
}

struct Fixture {
    queue: Queue,
    prefix: String,
    kind: Kind,
}

fn require_services() -> bool {
    std::env::var("USEREXPORT_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

impl Fixture {
    async fn redis() -> Option<Fixture> {
        let url = std::env::var("USEREXPORT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let prefix = format!("uxtest:{}", ulid::Ulid::new());
        let cfg = QueueConfig::Redis { url: url.clone(), prefix: prefix.clone() };
        match Queue::connect(&cfg).await {
            Ok(queue) => Some(Fixture { queue, prefix, kind: Kind::Redis { url } }),
            Err(e) if require_services() => panic!("redis at {url} is required: {e}"),
            Err(e) => {
                eprintln!("skipping: redis at {url} unreachable: {e}");
                None
            }
        }
    }

    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("userexport.db").display());
        let prefix = "exports".to_owned();
        let queue = Queue::connect(&QueueConfig::Sqlite { url: url.clone(), prefix: prefix.clone() }).await.unwrap();
        let pool = SqlitePool::connect(&url).await.unwrap();
        Fixture { queue, prefix, kind: Kind::Sqlite { _dir: dir, pool } }
    }

    async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// Jobs that finished successfully and are still recorded by the backend.
    async fn done_count(&self) -> u64 {
        match &self.kind {
            Kind::Redis { url } => {
                let mut c = Self::redis_conn(url).await;
                redis::cmd("SCARD").arg(format!("{}:done", self.prefix)).query_async(&mut c).await.unwrap()
            }
            Kind::Sqlite { pool, .. } => self.sqlite_count(pool, Some("Done")).await,
        }
    }

    /// Jobs killed by an `AbortError`.
    async fn dead_count(&self) -> u64 {
        match &self.kind {
            Kind::Redis { url } => {
                let mut c = Self::redis_conn(url).await;
                redis::cmd("SCARD").arg(format!("{}:dead", self.prefix)).query_async(&mut c).await.unwrap()
            }
            Kind::Sqlite { pool, .. } => self.sqlite_count(pool, Some("Killed")).await,
        }
    }

    /// Stored job payloads.
    async fn payload_count(&self) -> u64 {
        match &self.kind {
            Kind::Redis { url } => {
                let mut c = Self::redis_conn(url).await;
                redis::cmd("HLEN").arg(format!("{}:data", self.prefix)).query_async(&mut c).await.unwrap()
            }
            Kind::Sqlite { pool, .. } => self.sqlite_count(pool, None).await,
        }
    }

    /// Rows of this queue, optionally only those with `status`.
    async fn sqlite_count(&self, pool: &SqlitePool, status: Option<&str>) -> u64 {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND (?2 IS NULL OR status = ?2)")
                .bind(&self.prefix)
                .bind(status)
                .fetch_one(pool)
                .await
                .unwrap();
        u64::try_from(n).unwrap()
    }
}

impl Drop for Fixture {
    /// Deletes every Redis key of this test's prefix (also when the test failed).
    fn drop(&mut self) {
        let Kind::Redis { url } = &self.kind else { return };
        let Ok(mut conn) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) else { return };
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut conn).unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
        // apalis registers every queue in one global list.
        let _: Result<u64, _> =
            redis::cmd("ZREM").arg("core:apalis:queues:list").arg(format!("{}:workers", self.prefix)).query(&mut conn);
    }
}

fn opts(concurrency: usize) -> WorkerOptions {
    WorkerOptions { concurrency, heartbeat: Duration::from_secs(1), job_timeout: Duration::from_secs(20) }
}

/// Starts `run_workers` on a task; returns its handle and the shutdown trigger.
fn start<F, Fut>(
    queue: &Queue,
    opts: WorkerOptions,
    handler: F,
) -> (JoinHandle<Result<(), QueueError>>, oneshot::Sender<()>)
where
    F: Fn(ExportJob, u32) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = JobOutcome> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    (tokio::spawn(run_workers(queue.clone(), opts, handler, shutdown)), tx)
}

/// Requests shutdown and asserts `run_workers` returns `Ok` in time.
async fn stop(handle: JoinHandle<Result<(), QueueError>>, tx: oneshot::Sender<()>) {
    tx.send(()).expect("run_workers ended before shutdown was requested");
    let res = tokio::time::timeout(WAIT, handle).await.expect("run_workers did not return after shutdown");
    res.expect("run_workers panicked").expect("run_workers returned an error");
}

async fn wait_for<Fut: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> Fut) {
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(fx) = super::Fixture::redis().await else { return };
                    super::$name(&fx).await;
                }
            )*
        }
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fx = super::Fixture::sqlite().await;
                    super::$name(&fx).await;
                }
            )*
        }
    };
}

both_backends!(
    processes_each_job_exactly_once,
    retry_then_done,
    abort_is_not_retried,
    trim_done_bounds_finished_jobs,
    ping_and_empty_depth,
);

async fn processes_each_job_exactly_once(fx: &Fixture) {
    let ids: Vec<TaskId> = (0..50).map(|_| TaskId::generate()).collect();
    for id in &ids {
        fx.queue.enqueue(id).await.unwrap();
    }
    assert_eq!(fx.queue.depth().await.unwrap(), 50);

    let seen: Arc<Mutex<HashMap<TaskId, u32>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let (seen, running, max_running) = (seen.clone(), running.clone(), max_running.clone());
        move |job: ExportJob, attempt: u32| {
            let (seen, running, max_running) = (seen.clone(), running.clone(), max_running.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                assert_eq!(attempt, 1);
                let now = running.fetch_add(1, SeqCst) + 1;
                max_running.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                *seen.lock().unwrap().entry(job.task_id().clone()).or_default() += 1;
                running.fetch_sub(1, SeqCst);
                JobOutcome::Done
            }
        }
    };
    let (handle, tx) = start(&fx.queue, opts(4), handler);
    wait_for("50 jobs", || async { seen.lock().unwrap().len() == 50 }).await;
    wait_for("acks of 50 jobs", || async { fx.done_count().await == 50 }).await;
    stop(handle, tx).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 50);
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "job {id} ran {:?} times", seen.get(id));
    }
    let max = max_running.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=4).contains(&max), "concurrency limit exceeded: {max}");
    assert_eq!(fx.queue.depth().await.unwrap(), 0);
}

async fn retry_then_done(fx: &Fixture) {
    let id = TaskId::generate();
    fx.queue.enqueue(&id).await.unwrap();
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        move |job: ExportJob, attempt: u32| {
            let attempts = attempts.clone();
            async move {
                assert_eq!(job, ExportJob::V1 { task_id: TaskId::parse(job.task_id().as_str()).unwrap() });
                attempts.lock().unwrap().push(attempt);
                if attempt == 1 { JobOutcome::Retry("transient".into()) } else { JobOutcome::Done }
            }
        }
    };
    let (handle, tx) = start(&fx.queue, opts(2), handler);
    wait_for("the retried job to complete", || async { fx.done_count().await == 1 }).await;
    stop(handle, tx).await;
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2]);
    assert_eq!(fx.queue.depth().await.unwrap(), 0);
}

async fn abort_is_not_retried(fx: &Fixture) {
    let id = TaskId::generate();
    fx.queue.enqueue(&id).await.unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        move |_job: ExportJob, _attempt: u32| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                JobOutcome::Abort("permanent".into())
            }
        }
    };
    let (handle, tx) = start(&fx.queue, opts(2), handler);
    wait_for("the aborted job to be dead", || async { fx.dead_count().await == 1 }).await;
    // Longer than the in-process backoff and the backend's retry delay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(handle, tx).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(fx.queue.depth().await.unwrap(), 0);
    assert_eq!(fx.done_count().await, 0);
}

async fn trim_done_bounds_finished_jobs(fx: &Fixture) {
    // 20 succeed, 3 are aborted.
    let ids: Vec<TaskId> = (0..23).map(|_| TaskId::generate()).collect();
    let aborted: HashSet<TaskId> = ids[..3].iter().cloned().collect();
    for id in &ids {
        fx.queue.enqueue(id).await.unwrap();
    }
    let handler = move |job: ExportJob, _attempt: u32| {
        let abort = aborted.contains(job.task_id());
        async move { if abort { JobOutcome::Abort("bad".into()) } else { JobOutcome::Done } }
    };
    let (handle, tx) = start(&fx.queue, opts(4), handler);
    wait_for("23 finished jobs", || async { fx.done_count().await == 20 && fx.dead_count().await == 3 }).await;
    stop(handle, tx).await;
    assert_eq!(fx.payload_count().await, 23);

    assert_eq!(fx.queue.trim_done(5).await.unwrap(), 15, "15 done jobs beyond 5");
    assert_eq!(fx.done_count().await, 5);
    assert_eq!(fx.dead_count().await, 3);
    assert_eq!(fx.payload_count().await, 8);

    assert_eq!(fx.queue.trim_done(5).await.unwrap(), 0, "idempotent");
    assert_eq!(fx.queue.trim_done(0).await.unwrap(), 8);
    assert_eq!(fx.done_count().await, 0);
    assert_eq!(fx.dead_count().await, 0);
    assert_eq!(fx.payload_count().await, 0);
}

async fn ping_and_empty_depth(fx: &Fixture) {
    fx.queue.ping().await.unwrap();
    assert_eq!(fx.queue.depth().await.unwrap(), 0);
    assert_eq!(fx.queue.trim_done(10).await.unwrap(), 0);
    assert_eq!(fx.queue.prefix(), fx.prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trim_removes_metadata_of_gone_workers() {
    let Some(fx) = Fixture::redis().await else { return };
    let Kind::Redis { url } = &fx.kind else { unreachable!() };
    let mut c = Fixture::redis_conn(url).await;
    let live = format!("{}:workers:metadata:live-1", fx.prefix);
    let gone = format!("{}:workers:metadata:gone-1", fx.prefix);
    let _: () = redis::cmd("ZADD")
        .arg(format!("{}:workers", fx.prefix))
        .arg(1)
        .arg("live-1")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET").arg(&live).arg("service").arg("x").query_async(&mut c).await.unwrap();
    let _: () = redis::cmd("HSET").arg(&gone).arg("service").arg("x").query_async(&mut c).await.unwrap();
    fx.queue.trim_done(10).await.unwrap();
    let exists: (bool, bool) = redis::pipe().exists(&live).exists(&gone).query_async(&mut c).await.unwrap();
    assert_eq!(exists, (true, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tables_do_not_clash_with_the_service_schema() {
    let fx = Fixture::sqlite().await;
    let Kind::Sqlite { pool, .. } = &fx.kind else { unreachable!() };
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT lower(name) FROM sqlite_master WHERE type = 'table'").fetch_all(pool).await.unwrap();
    assert!(tables.contains(&"jobs".to_owned()), "{tables:?}");
    let ours = [
        "projects",
        "management_keys",
        "signing_keys",
        "users",
        "user_login_ids",
        "export_tasks",
        "idempotency_keys",
        "seaql_migrations",
    ];
    for t in ours {
        assert!(!tables.contains(&t.to_owned()), "apalis-sqlite created `{t}`");
    }
    // Connecting again (e.g. API and worker processes) re-runs the migrations harmlessly.
    let Kind::Sqlite { _dir, .. } = &fx.kind else { unreachable!() };
    let url = format!("sqlite://{}?mode=rwc", _dir.path().join("userexport.db").display());
    Queue::connect(&QueueConfig::Sqlite { url, prefix: "exports".into() }).await.unwrap().ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_workers_failing_without_shutdown_is_an_error() {
    let fx = Fixture::sqlite().await;
    let Kind::Sqlite { pool, .. } = &fx.kind else { unreachable!() };
    let (handle, _tx) = start(&fx.queue, opts(1), |_job: ExportJob, _attempt: u32| async { JobOutcome::Done });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Break the backend under the running worker: every fetch now fails.
    sqlx::query("DROP TABLE Jobs").execute(pool).await.unwrap();
    let res = tokio::time::timeout(WAIT, handle).await.expect("run_workers kept running on a broken backend").unwrap();
    let err = res.expect_err("workers died without a shutdown request");
    assert!(matches!(err, QueueError::WorkersStopped(_)), "{err}");
}

#[tokio::test]
async fn worker_names_are_unique_across_calls() {
    let names: HashSet<String> = (0..1000).map(|_| Queue::worker_name()).collect();
    assert_eq!(names.len(), 1000);
    let name = names.iter().next().unwrap();
    assert!(name.contains(&format!("-{}-", std::process::id())), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_a_redis_queue() {
    // Two run_workers calls (as two processes would) register under distinct names and split
    // the jobs without running any twice.
    let Some(fx) = Fixture::redis().await else { return };
    let ids: Vec<TaskId> = (0..20).map(|_| TaskId::generate()).collect();
    for id in &ids {
        fx.queue.enqueue(id).await.unwrap();
    }
    let seen: Arc<Mutex<HashMap<TaskId, u32>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |job: ExportJob, _attempt: u32| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                *seen.lock().unwrap().entry(job.task_id().clone()).or_default() += 1;
                JobOutcome::Done
            }
        }
    };
    let (h1, tx1) = start(&fx.queue, opts(2), handler.clone());
    let (h2, tx2) = start(&fx.queue, opts(2), handler);
    let Kind::Redis { url } = &fx.kind else { unreachable!() };
    wait_for("two registered workers", || async {
        let mut c = Fixture::redis_conn(url).await;
        let n: u64 = redis::cmd("ZCARD").arg(format!("{}:workers", fx.prefix)).query_async(&mut c).await.unwrap();
        n == 2
    })
    .await;
    wait_for("20 acked jobs", || async { fx.done_count().await == 20 }).await;
    stop(h1, tx1).await;
    stop(h2, tx2).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

#[tokio::test]
async fn redis_unreachable_is_service_unavailable() {
    use userexport_domain::{Code, ErrorCode};
    let cfg = QueueConfig::Redis { url: "redis://127.0.0.1:1".into(), prefix: "uxtest:none".into() };
    let err = Queue::connect(&cfg).await.expect_err("nothing listens on port 1");
    assert_eq!(err.error_code(), Code::ServiceUnavailable);
}

#[tokio::test]
async fn invalid_worker_options_are_rejected() {
    let fx = Fixture::sqlite().await;
    let bad = WorkerOptions { concurrency: 0, ..opts(1) };
    let err = run_workers(fx.queue.clone(), bad, |_j: ExportJob, _a: u32| async { JobOutcome::Done }, async {})
        .await
        .expect_err("concurrency 0");
    assert!(matches!(err, QueueError::Config(_)), "{err}");
}
