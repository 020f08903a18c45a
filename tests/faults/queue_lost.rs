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
    let b = f.worker("worker-b", 2);
    for t in [&t1, &t2, &t3] {
        let done = f.wait_completed(t, Duration::from_secs(300)).await;
        f.note(&format!("keys lost → {t} completed"), lost);
        if t == &t1 {
            f.check_csv_file(&done, &expected).await;
        } else {
            assert_eq!(done["rows_written"], expected.len() as u64, "{done}");
        }
    }
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
    let t5 = f.create_csv_export().await;
    let t = Instant::now();
    f.wait_completed(&t5, Duration::from_secs(300)).await;
    f.note("T5 (created after the loss) completed", t);

    let unfinished = f.sql_i64("SELECT COUNT(*) FROM export_tasks WHERE status IN ('pending', 'processing')").await;
    assert_eq!(unfinished, vec![0]);
    f.wait_queue_drained(Duration::from_secs(30)).await;
    let mut b = b;
    assert!(b.alive(), "worker B died:\n{}", b.log());
    f.note("total", t0);
}
