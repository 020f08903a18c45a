//! The queue's Redis keys lost mid-run: while one task is processing (on a worker that then dies)
//! and two are pending, and again while a live worker processes one. The row is the truth: the
//! reconciler re-enqueues every task, each completes within a bound, and the queue drains.

use std::time::{Duration, Instant};

use crate::harness::{Fault, SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_keys_lost_while_pending_and_processing_nothing_stays_unfinished() {
    let _serial = SERIAL.lock().await;
    // Pending tasks count as lost after 3 s (default 120 s).
    let Some(f) = Fault::start("queue_lost", &[("USEREXPORT_PENDING_GRACE", "3s")]).await else { return };
    let expected = f.seed(9, 100_000).await;
    let t0 = Instant::now();

    // Phase 1: worker A (one job at a time) streams T1; T2 and T3 wait behind it.
    let mut a = f.worker("worker-a", 1);
    let t1 = f.create_csv_export().await;
    f.wait_row(&t1, Duration::from_secs(120), "T1 streaming on worker A", |r| {
        r.status == "processing" && r.upload_id.is_some()
    })
    .await;
    let t2 = f.create_csv_export().await;
    let t3 = f.create_csv_export().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = f.delete_queue_keys();
    a.kill9();
    let deleted = deleted + f.delete_queue_keys();
    let lost = Instant::now();
    assert!(deleted > 0, "no queue key was found under {}", f.prefix);
    eprintln!("[queue_lost] deleted {deleted} queue keys and killed worker A");
    assert_eq!(f.row(&t1).await.status, "processing", "T1 finished before the fault");
    for t in [&t2, &t3] {
        assert_eq!(f.row(t).await.status, "pending", "{t}");
    }
    let mut b = f.worker("worker-b", 2);
    f.wait_all_completed(&[&t1, &t2, &t3], &expected, "keys lost", lost).await;
    assert!(f.row(&t1).await.attempts >= 2);

    // Phase 2: the keys vanish while a live worker streams T4; it still completes, and the worker
    // keeps taking new jobs afterwards.
    let t4 = f.create_csv_export().await;
    f.wait_row(&t4, Duration::from_secs(120), "T4 streaming", |r| r.status == "processing" && r.upload_id.is_some())
        .await;
    let deleted = f.delete_queue_keys();
    let lost = Instant::now();
    eprintln!("[queue_lost] deleted {deleted} queue keys while T4 was processing");
    let done = f.wait_completed(&t4, Duration::from_secs(300)).await;
    assert_eq!(done["rows_written"], expected.len() as u64, "{done}");
    f.note("keys lost → T4 completed", lost);
    f.check_recovered("T5 (created after the loss) completed").await;
    assert!(b.alive(), "worker B died:\n{}", b.log());
    f.note("total", t0);
}
