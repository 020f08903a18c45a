//! 1,000 concurrent creates: 1,000 tasks, all completed by two worker processes, queue drained, and
//! apalis' finished-job records trimmed to `USEREXPORT_QUEUE_KEEP_DONE` by the maintenance loop.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Fault, SERIAL};

const TASKS: usize = 1000;
/// Finished queue records kept (`USEREXPORT_QUEUE_KEEP_DONE`), well below [`TASKS`].
const KEEP_DONE: i64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_creates_all_complete_and_the_queue_drains() {
    let _serial = SERIAL.lock().await;
    let keep = KEEP_DONE.to_string();
    let Some(f) = Fault::start("load", &[("USEREXPORT_QUEUE_KEEP_DONE", &keep)]).await else { return };
    let visible = f.seed(10, 20).await.len() as i64;
    let mut workers = [f.worker("worker-a", 4), f.worker("worker-b", 4)];

    let t0 = Instant::now();
    let body = json!({"format": "csv", "fields": [{"pointer": "/sub"}]});
    let creates = (0..TASKS).map(|_| f.post("/v1/exports", &body));
    let results = futures_util::future::join_all(creates).await;
    f.note(&format!("{TASKS} concurrent creates"), t0);
    let refused: Vec<_> = results.iter().filter(|(status, _)| *status != 202).collect();
    assert!(
        refused.is_empty(),
        "{} of {TASKS} creates were refused; first: {:?}",
        refused.len(),
        refused.iter().take(3).collect::<Vec<_>>()
    );
    let ids: HashSet<String> = results.iter().map(|(_, c)| c["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids.len(), TASKS, "task ids are not unique");
    assert_eq!(f.sql_i64("SELECT COUNT(*) FROM export_tasks").await, vec![TASKS as i64]);

    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last_report = Instant::now();
    loop {
        let done = f.sql_i64("SELECT COUNT(*) FROM export_tasks WHERE status = 'completed'").await[0];
        if done == TASKS as i64 {
            break;
        }
        let bad =
            f.sql_i64("SELECT COUNT(*) FROM export_tasks WHERE status NOT IN ('pending', 'processing', 'completed')");
        assert_eq!(bad.await, vec![0], "some tasks ended badly");
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!("[load] {done}/{TASKS} completed after {:.2?}", t0.elapsed());
            last_report = Instant::now();
        }
        assert!(Instant::now() < deadline, "only {done}/{TASKS} completed in time");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    f.note(&format!("creates → all {TASKS} completed"), t0);

    let rows = f.sql_i64("SELECT COALESCE(SUM(rows_written), 0)::bigint FROM export_tasks").await;
    assert_eq!(rows, vec![visible * TASKS as i64]);
    let retried = f.sql_i64("SELECT COUNT(*) FROM export_tasks WHERE attempts <> 1").await;
    eprintln!("[load] tasks that needed more than one attempt: {}", retried[0]);
    f.wait_queue_drained(Duration::from_secs(30)).await;
    // Two maintenance rounds (1 s apart) after the last completion bound apalis' records.
    let trimmed = Instant::now();
    loop {
        let (finished, payloads) = f.finished_records();
        if finished <= KEEP_DONE && payloads <= KEEP_DONE {
            eprintln!("[load] finished queue records: {finished}, payloads: {payloads} (keep {KEEP_DONE})");
            break;
        }
        assert!(
            trimmed.elapsed() < Duration::from_secs(30),
            "the queue keeps {finished} finished records and {payloads} payloads, over the limit of {KEEP_DONE}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    f.note("all completed → queue records trimmed", trimmed);
    let keys = f.queue_keys();
    eprintln!("[load] queue keys left: {}", keys.len());
    for w in &mut workers {
        assert!(w.alive(), "{} died:\n{}", w.label, w.log());
    }
    f.note("total", t0);
}
