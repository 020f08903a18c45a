//! Every Postgres connection of the database terminated while the worker streams a 200k-user
//! export: the attempt fails cleanly (the worker lives on), the task is retried and the final file
//! holds every user exactly once.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};

use crate::harness::{Fault, SERIAL};

/// Terminates every other backend connected to `db`; returns how many.
async fn terminate_backends(admin_url: &str, db: &str) -> usize {
    let admin = sea_orm::Database::connect(admin_url).await.expect("admin connection");
    let sql = format!(
        "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    let rows = admin.query_all_raw(Statement::from_string(admin.get_database_backend(), sql)).await.expect("terminate");
    let _ = admin.close().await;
    rows.iter().filter(|r| r.try_get::<bool>("", "killed").unwrap_or(false)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_killed_mid_stream_retry_to_an_exact_file() {
    let _serial = SERIAL.lock().await;
    let Some(f) = Fault::start("postgres_killed", &[]).await else { return };
    let expected = f.seed(8, 200_000).await;
    let mut w = f.worker("worker", 1);

    let t0 = Instant::now();
    let (id, before) = f.export_a_quarter_written(expected.len(), &[&w]).await;
    let killed = terminate_backends(f.admin_url(), f.db_name()).await;
    w.resume();
    let fault = Instant::now();
    assert!(killed > 0, "no backend was terminated");
    eprintln!("[postgres_killed] terminated {killed} backends at {} rows written", before.rows_written);

    let done = f.wait_completed(&id, Duration::from_secs(600)).await;
    f.note("fault → completed", fault);
    f.note("enqueue → completed", t0);
    let row = f.row(&id).await;
    assert!(row.attempts >= 2, "the failed attempt was not retried: {row:?}");
    assert_eq!(row.upload_id, None, "{row:?}");
    assert!(w.alive(), "the worker died:\n{}", w.log());
    let log = w.log();
    assert!(log.contains("will retry"), "no retry logged:\n{log}");
    assert!(log.contains("export completed"), "{log}");
    eprintln!("[postgres_killed] attempts: {}", row.attempts);
    f.check_csv_file(&done, &expected).await;
    f.note("total", t0);
}
