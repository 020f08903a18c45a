//! A worker killed after its upload completed but before the status write landed: the file is in
//! the bucket, the row still says `processing`. The next worker takes the task over, writes the
//! same deterministic key again and completes; the bucket holds one file, exact.
//!
//! The window is held open with a trigger that makes the `completed` update sleep; the worker is
//! killed while it waits, and its backend is terminated so the update never commits.

use std::time::{Duration, Instant};

use crate::harness::{Fault, SERIAL};

const HOLD_COMPLETION: &str = "
    CREATE FUNCTION hold_completion() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(600); RETURN NEW; END $$;
    CREATE TRIGGER hold_completion BEFORE UPDATE ON export_tasks FOR EACH ROW
    WHEN (NEW.status = 'completed' AND OLD.status <> 'completed') EXECUTE FUNCTION hold_completion();";

/// Backends of this database sleeping in the trigger.
const HELD: &str = "SELECT pid::bigint FROM pg_stat_activity \
    WHERE datname = current_database() AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_between_upload_and_status_write_leaves_one_exact_file() {
    let _serial = SERIAL.lock().await;
    let Some(f) = Fault::start("killed_before_status", &[]).await else { return };
    let expected = f.seed(13, 50_000).await;
    f.sql_exec(HOLD_COMPLETION).await;
    let mut a = f.worker("worker-a", 1);

    let t0 = Instant::now();
    let id = f.create_csv_export().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let held = loop {
        if let Some(pid) = f.sql_i64(HELD).await.first() {
            break *pid;
        }
        assert!(a.alive(), "worker A died:\n{}", a.log());
        assert!(Instant::now() < deadline, "the completion was never attempted: {:?}", f.row(&id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    f.note("enqueue → status write held", t0);
    let objects = f.objects().await;
    assert_eq!(objects.len(), 1, "the upload completed before the status write: {objects:?}");
    let before = f.row(&id).await;
    assert_eq!(before.status, "processing", "{before:?}");
    assert_eq!(before.attempts, 1, "{before:?}");

    a.kill9();
    let killed = Instant::now();
    assert_eq!(f.sql_i64(&format!("SELECT pg_terminate_backend({held})::int::bigint")).await, vec![1]);
    f.sql_exec("DROP TRIGGER hold_completion ON export_tasks; DROP FUNCTION hold_completion();").await;
    let after = f.row(&id).await;
    assert_eq!(after.status, "processing", "the held status write committed: {after:?}");
    eprintln!("[killed_before_status] killed worker A with its file uploaded and the task still processing");

    let mut b = f.worker("worker-b", 1);
    let done = f.wait_completed(&id, Duration::from_secs(300)).await;
    f.note("kill → completed by worker B", killed);
    let row = f.row(&id).await;
    assert_eq!(row.attempts, 2, "{row:?}");
    assert_eq!(row.upload_id, None, "{row:?}");
    assert_eq!(f.objects().await, objects, "a second file appeared");
    f.check_csv_file(&done, &expected).await;
    assert!(b.alive(), "worker B died:\n{}", b.log());
    f.note("total", t0);
}
