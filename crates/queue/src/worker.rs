//! The consumer side: run export workers on apalis without exposing apalis to callers.

use std::{
    collections::VecDeque,
    pin::pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use apalis::layers::retry::{
    HasherRng,
    backoff::{ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff},
};
use apalis::prelude::{
    AbortError, Attempt, BackendExt, BackoffRetryPolicy, BoxDynError, Monitor, RetryPolicy, WorkerBuilder,
    WorkerBuilderExt,
};
use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use tokio::task::JoinHandle;

use crate::{
    ExportJob, Queue, QueueError,
    queue::{Backend, DEFAULT_HEARTBEAT, redis_config, sqlite_config},
    wake::{self, Wake},
};

/// In-process retries of a [`JobOutcome::Retry`] before the job goes back to the backend.
const IN_PROCESS_RETRIES: usize = 2;
/// How often an idle worker polls for new jobs (apalis otherwise waits for the next heartbeat).
/// One cheap script call per poll. A job is normally picked up at once, through [`Wake`]; the poll
/// is the safety net for notifications lost while the subscription was down.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Wakes an idle worker when its queue's [`Wake`] is notified (a job was enqueued) and every
/// [`POLL_INTERVAL`], so that it looks for new jobs.
///
/// Unlike apalis' `IntervalStrategy`, which replaces a timer that fired with a new one it does not
/// poll (so the wake-up that follows is not registered anywhere), this drains every elapsed tick,
/// which leaves the interval armed for the next one. With apalis' strategy a job enqueued into a
/// worker that had been idle waited for the worker's next heartbeat: 1.7 s of a 12 s benchmark
/// export, up to the whole heartbeat interval.
struct Tick {
    interval: tokio::time::Interval,
    wake: Arc<Wake>,
}

impl Tick {
    /// Must be called within a Tokio runtime.
    fn new(wake: Arc<Wake>) -> Self {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { interval, wake }
    }
}

impl PollStrategy for Tick {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        // Both are polled every time, so that both stay registered for the next wake-up.
        let mut fired = self.wake.take(cx);
        while self.interval.poll_tick(cx).is_ready() {
            fired = true;
        }
        if fired { Poll::Ready(Some(())) } else { Poll::Pending }
    }
}

/// Worker restarts allowed within [`RESTART_WINDOW`] before [`run_workers`] gives up.
const MAX_RESTARTS: usize = 5;
/// See [`MAX_RESTARTS`].
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Extra time on top of the job timeout for the drain to flush acknowledgements.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// How [`run_workers`] runs jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Jobs run at the same time in this process (≥ 1).
    pub concurrency: usize,
    /// Heartbeat interval (≥ 1 s); leases are renewed on each beat and a worker silent for four
    /// beats is considered dead, its jobs re-run elsewhere. Idle workers are woken when a job is
    /// enqueued and also poll every 200 ms.
    pub heartbeat: Duration,
    /// Upper bound of one attempt; a job running longer is cancelled and retried. After a
    /// shutdown request, running jobs get up to this long to finish.
    pub job_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { concurrency: 4, heartbeat: DEFAULT_HEARTBEAT, job_timeout: Duration::from_secs(30 * 60) }
    }
}

impl WorkerOptions {
    fn validate(&self) -> Result<(), QueueError> {
        if self.concurrency == 0 {
            return Err(QueueError::Config("worker concurrency must be at least 1".into()));
        }
        if self.heartbeat < Duration::from_secs(1) {
            return Err(QueueError::Config("worker heartbeat must be at least 1 s".into()));
        }
        if self.job_timeout.is_zero() {
            return Err(QueueError::Config("job timeout must be positive".into()));
        }
        Ok(())
    }
}

/// Outcome of handling one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Finished (or nothing to do, e.g. the task was already completed or cancelled).
    Done,
    /// Transient error: apalis retries the job (in process, then via the backend).
    Retry(String),
    /// Permanent error: the job is dropped (apalis `AbortError`) and never retried.
    Abort(String),
}

/// Aborts a spawned task when dropped: the job's handler when the job future is dropped (timeout,
/// forced shutdown), the notification listener when the workers stop.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_one<F, Fut>(handler: F, job: ExportJob, attempt: usize, timeout: Duration) -> Result<(), BoxDynError>
where
    F: Fn(ExportJob, u32) -> Fut,
    Fut: Future<Output = JobOutcome> + Send + 'static,
{
    let attempt = u32::try_from(attempt.max(1)).unwrap_or(u32::MAX);
    let task_id = job.task_id().clone();
    // Spawned so that jobs run in parallel on the runtime's threads, not only concurrently.
    let mut handle = AbortOnDrop(tokio::spawn(handler(job, attempt)));
    let outcome = match tokio::time::timeout(timeout, &mut handle.0).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join)) if join.is_panic() => JobOutcome::Abort("export job handler panicked".into()),
        Ok(Err(join)) => JobOutcome::Retry(format!("export job handler was cancelled: {join}")),
        Err(_) => JobOutcome::Retry(format!("export job timed out after {timeout:?}")),
    };
    match outcome {
        JobOutcome::Done => Ok(()),
        JobOutcome::Retry(msg) => {
            tracing::warn!(%task_id, attempt, error = %msg, "export job failed; will retry");
            Err(msg.into())
        }
        JobOutcome::Abort(msg) => {
            tracing::warn!(%task_id, attempt, error = %msg, "export job failed permanently");
            Err(Box::new(AbortError::new(msg)))
        }
    }
}

fn retry_policy() -> BackoffRetryPolicy<ExponentialBackoff> {
    let backoff =
        ExponentialBackoffMaker::new(Duration::from_millis(500), Duration::from_secs(5), 0.5, HasherRng::default())
            .expect("static backoff bounds are valid")
            .make_backoff();
    RetryPolicy::retries(IN_PROCESS_RETRIES).with_backoff(backoff)
}

/// At most [`MAX_RESTARTS`] worker restarts per [`RESTART_WINDOW`].
fn restart_budget()
-> impl Fn(&apalis::prelude::WorkerContext, &apalis::prelude::WorkerError) -> bool + Send + Sync + 'static {
    let recent = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
    move |ctx, err| {
        let now = Instant::now();
        let mut recent = recent.lock().unwrap_or_else(|p| p.into_inner());
        while recent.front().is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW) {
            recent.pop_front();
        }
        if recent.len() >= MAX_RESTARTS {
            tracing::error!(worker = ctx.name(), error = %err, "export worker failed too often; giving up");
            return false;
        }
        recent.push_back(now);
        tracing::warn!(worker = ctx.name(), error = %err, restarts = ctx.restarts(), "export worker failed; restarting");
        true
    }
}

/// Builds a monitor with one worker of `concurrency` slots over `$storage`.
macro_rules! export_monitor {
    ($storage:expr, $wake:expr, $opts:expr, $service:expr) => {{
        let storage = $storage;
        let wake = $wake;
        let service = $service;
        let concurrency = $opts.concurrency;
        Monitor::new()
            .register(move |_restarts| {
                let name = Queue::worker_name();
                tracing::info!(worker = %name, concurrency, "starting export worker");
                WorkerBuilder::new(name)
                    .backend(storage.clone().poll_with_strategy(Tick::new(wake.clone())))
                    .concurrency(concurrency)
                    .retry(retry_policy())
                    .catch_panic()
                    .enable_tracing()
                    .build(service.clone())
            })
            .should_restart(restart_budget())
    }};
}

/// Runs export workers until `shutdown` resolves, then drains running jobs (each bounded by
/// `job_timeout`) and returns `Ok`.
///
/// `handler(job, attempt)` gets the attempt number starting at 1 (in-process retries and
/// backend re-deliveries both count). It runs on its own tokio task and is cancelled when it
/// exceeds `job_timeout` (then retried). A panic is a permanent failure.
///
/// Returns an error if the workers stop while no shutdown was requested (e.g. the backend kept
/// failing): the caller should exit non-zero so that the process gets restarted. OS signals are
/// the caller's business; `shutdown` is any future.
pub async fn run_workers<F, Fut>(
    queue: Queue,
    opts: WorkerOptions,
    handler: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), QueueError>
where
    F: Fn(ExportJob, u32) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = JobOutcome> + Send + 'static,
{
    opts.validate()?;
    let timeout = opts.job_timeout;
    let service = move |job: ExportJob, attempt: Attempt| {
        let handler = handler.clone();
        async move { run_one(handler, job, attempt.current(), timeout).await }
    };
    let wake = queue.wake;
    let (monitor, _listener) = match queue.backend {
        Backend::Redis { storage, client, prefix, .. } => {
            let channel = wake::enqueued_channel(&prefix);
            let listener = AbortOnDrop(tokio::spawn(wake::listen(*client, channel, wake.clone())));
            let storage = storage.with_config(redis_config(&prefix, opts.heartbeat));
            (export_monitor!(storage, wake, opts, service), Some(listener))
        }
        Backend::Sqlite { storage, prefix, .. } => {
            (export_monitor!(storage.with_config(sqlite_config(&prefix, opts.heartbeat)), wake, opts, service), None)
        }
    };

    let ctx = monitor.context();
    let mut run = pin!(monitor.run());
    let mut shutdown = pin!(shutdown);
    tokio::select! {
        res = &mut run => {
            let why = match res {
                Ok(()) => "the monitor returned without a shutdown request".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::error!(error = %why, "export workers stopped unexpectedly");
            return Err(QueueError::WorkersStopped(why));
        }
        () = &mut shutdown => {}
    }

    let drain = opts.job_timeout + DRAIN_MARGIN;
    tracing::info!(?drain, "shutdown requested; draining export workers");
    if let Err(e) = ctx.shutdown() {
        tracing::warn!(error = %e, "could not signal the export workers to stop");
    }
    match tokio::time::timeout(drain, run).await {
        Ok(Ok(())) => {
            tracing::info!("export workers stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(QueueError::WorkersStopped(format!("failed while draining: {e}"))),
        Err(_) => {
            tracing::warn!(
                ?drain,
                "export jobs still running after the drain timeout; they will re-run after the orphan timeout"
            );
            Ok(())
        }
    }
}
