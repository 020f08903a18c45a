//! Fault injection in production mode (Postgres + Redis + s3s-fs), with `userexport worker` as
//! separate child processes that the tests kill. The scenarios run one at a time (they time what
//! follows a fault, and kill processes and connections) and print their timings to stderr.
//!
//! - `worker_killed`: SIGKILL of the worker streaming a 200k-user export while a second runs.
//! - `queue_lost`: every Redis key of the queue deleted while tasks are pending and processing.
//! - `postgres_killed`: every Postgres connection of the database terminated mid-stream.
//! - `killed_before_status`: SIGKILL after the upload completed, before the status write landed.
//! - `concurrent_writes`: users inserted, renamed and deleted while an export streams.
//! - `redis_restarted`: the queue's Redis killed and started again empty mid-run.
//! - `stale_upload_swept`: an upload left open by a task that failed for good, aborted at expiry.
//! - `load`: 1,000 concurrent creates, all completed by two workers, queue drained and trimmed.
//!
//! Without the services they skip (printing a line) unless `USEREXPORT_TEST_REQUIRE_SERVICES=1`.

#[path = "e2e/helpers.rs"]
#[allow(dead_code)]
mod helpers;

#[path = "faults/harness.rs"]
mod harness;

#[path = "faults/concurrent_writes.rs"]
mod concurrent_writes;
#[path = "faults/killed_before_status.rs"]
mod killed_before_status;
#[path = "faults/load.rs"]
mod load;
#[path = "faults/postgres_killed.rs"]
mod postgres_killed;
#[path = "faults/queue_lost.rs"]
mod queue_lost;
#[path = "faults/redis_restarted.rs"]
mod redis_restarted;
#[path = "faults/stale_upload_swept.rs"]
mod stale_upload_swept;
#[path = "faults/worker_killed.rs"]
mod worker_killed;
