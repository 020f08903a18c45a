//! An attempt that failed for good while its multipart upload was open (its worker SIGKILLed, the
//! task then marked failed, as `fail_task` keeps the upload id): once the task is past retention the
//! sweeper of any worker aborts the upload by its stored id, deletes the object and marks the task
//! `expired`.

use std::time::{Duration, Instant};

use userexport_domain::{Code, ErrorObject, TaskId};

use crate::harness::{Fault, SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_left_open_by_a_failed_task_is_aborted_by_the_sweeper() {
    let _serial = SERIAL.lock().await;
    let Some(f) = Fault::start("stale_upload_swept", &[]).await else { return };
    let expected = f.seed(17, 200_000).await;
    let mut a = f.worker("worker-a", 1);
    let (id, before) = f.export_a_quarter_written(expected.len(), &[&a]).await;
    let upload = before.upload_id.clone().expect("an open upload");
    a.kill9();
    // The worker's own give-up path (it keeps the upload id for the sweeper), then past retention.
    let task_id = TaskId::parse(&id).expect("task id");
    let error = ErrorObject::new(Code::ExportFailed, "simulated: gave up with the upload open");
    assert!(f.components.store.fail_task(&task_id, None, &error).await.expect("fail task"));
    let backdated = f
        .sql_exec(&format!("UPDATE export_tasks SET expires_at = now() - interval '1 second' WHERE id = '{id}'"))
        .await;
    assert_eq!(backdated, 1);
    assert_eq!(f.row(&id).await.upload_id.as_deref(), Some(upload.as_str()));
    assert!(f.objects().await.is_empty(), "an unfinished upload is not an object");

    let t = Instant::now();
    let mut b = f.worker("worker-b", 1);
    let swept =
        f.wait_row(&id, Duration::from_secs(60), "the task expired by the sweeper", |r| r.status == "expired").await;
    f.note("sweeper start → task expired", t);
    assert_eq!(swept.upload_id, None, "{swept:?}");
    assert!(f.objects().await.is_empty());
    let log = b.log();
    assert!(!log.contains("could not abort"), "the stale upload was not aborted:\n{log}");
    assert!(log.contains("maintenance round"), "no maintenance round was logged:\n{log}");
    assert!(b.alive(), "worker B died:\n{log}");
}
