//! Redis restarted empty (killed with SIGKILL, no persistence) while one export streams, one waits
//! in the queue, and another is created while Redis is down. The worker and the API reconnect; the
//! reconciler re-enqueues what the queue lost; every task completes and the queue drains.

use std::time::{Duration, Instant};

use crate::harness::{Fault, RedisServer, SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_mid_run_every_task_completes() {
    let _serial = SERIAL.lock().await;
    // Declared before the scenario so it outlives it (the scenario's cleanup talks to it).
    let Some(mut redis) = RedisServer::start() else { return };
    let url = redis.url();
    let extra = [("USEREXPORT_REDIS_URL", url.as_str()), ("USEREXPORT_PENDING_GRACE", "3s")];
    let Some(f) = Fault::start("redis_restarted", &extra).await else { return };
    let expected = f.seed(16, 100_000).await;
    let mut a = f.worker("worker-a", 1);

    let t0 = Instant::now();
    let t1 = f.create_csv_export().await;
    f.wait_row(&t1, Duration::from_secs(120), "T1 streaming", |r| r.status == "processing" && r.upload_id.is_some())
        .await;
    // Worker A is frozen from here until Redis is gone, so T1 is still streaming when Redis dies
    // however fast the export runs.
    a.pause();
    let t2 = f.create_csv_export().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.row(&t2).await.status, "pending");

    redis.kill9();
    a.resume();
    let down = Instant::now();
    eprintln!("[redis_restarted] Redis killed (T1 streaming, T2 queued)");
    let t_down = f.create_csv_export().await;
    f.note("create while Redis is down answered", down);
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    f.note("Redis back, empty", down);

    f.wait_all_completed(&[&t1, &t2, &t_down], &expected, "Redis killed", down).await;
    f.check_recovered("T3 (created after the restart) completed").await;
    assert!(a.alive(), "worker A died with Redis:\n{}", a.log());
    f.note("total", t0);
}
