//! A worker killed with SIGKILL mid-export while a second worker runs: the survivor takes the task
//! over once the lease lapses (the reconciler re-enqueues it), aborts the dead attempt's upload and
//! completes; the file holds every user exactly once.

use std::time::{Duration, Instant};

use crate::harness::{Fault, SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_export_is_taken_over_and_the_file_is_exact() {
    let _serial = SERIAL.lock().await;
    let Some(f) = Fault::start("worker_killed", &[]).await else { return };
    let expected = f.seed(7, 200_000).await;
    let mut a = f.worker("worker-a", 1);
    let mut b = f.worker("worker-b", 1);

    let t0 = Instant::now();
    let (id, before) = f.export_a_quarter_written(expected.len(), &[&a, &b]).await;
    let owner = before.lease_owner.clone().expect("lease owner");
    let (victim, survivor) = if a.owns(&owner) { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert!(victim.owns(&owner), "the lease owner {owner} is neither worker");
    victim.kill9();
    survivor.resume();
    let killed = Instant::now();
    eprintln!(
        "[worker_killed] killed {} (pid {}) at {} rows written; {} takes over",
        victim.label,
        victim.pid(),
        before.rows_written,
        survivor.label
    );

    let taken = f
        .wait_row(&id, Duration::from_secs(60), "a takeover by the surviving worker", |r| {
            r.attempts >= 2 && r.lease_owner.as_deref().is_some_and(|o| survivor.owns(o)) || r.status == "completed"
        })
        .await;
    assert_eq!(taken.attempts, 2, "{taken:?}");
    f.note("kill → taken over by the survivor", killed);
    let done = f.wait_completed(&id, Duration::from_secs(600)).await;
    f.note("kill → completed", killed);
    f.note("enqueue → completed", t0);

    let row = f.row(&id).await;
    assert_eq!(row.status, "completed");
    assert_eq!(row.attempts, 2, "exactly one takeover: {row:?}");
    assert_eq!(row.upload_id, None, "an upload id is left on the completed task: {row:?}");
    assert!(survivor.alive(), "the surviving worker died:\n{}", survivor.log());
    let log = survivor.log();
    assert!(log.contains("export completed"), "{log}");
    assert!(!log.contains("could not abort"), "the dead attempt's upload was not aborted:\n{log}");
    f.check_csv_file(&done, &expected).await;
    f.note("total", t0);
}
