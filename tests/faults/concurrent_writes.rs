//! Users inserted, updated and deleted while an export streams: the file is the snapshot taken when
//! the attempt started (no new user, no deleted user missing, no new value, nothing twice), and a
//! second export afterwards sees every write.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use userexport_domain::fake;

use crate::harness::{Fault, SERIAL};

const USERS: u64 = 200_000;
const INSERTED: u64 = 5_000;
const RENAMED: &str = "Renamed During Export";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_during_an_export_do_not_change_its_snapshot() {
    let _serial = SERIAL.lock().await;
    // The worker is frozen while the writes run (below); a long lease keeps the sweeper from
    // handing its task to anyone else meanwhile, however slow the machine.
    let Some(f) = Fault::start("concurrent_writes", &[("USEREXPORT_LEASE", "120s")]).await else { return };
    let expected = f.seed(14, USERS).await;
    let worker = f.worker("worker-a", 1);

    let t0 = Instant::now();
    let id = f.create_csv_export().await;
    f.wait_row(&id, Duration::from_secs(120), "the export streaming", |r| {
        r.status == "processing" && r.rows_written > 0
    })
    .await;
    f.note("enqueue → streaming", t0);

    // Writes while it streams, all at the end of the table (not yet read): new users, renamed
    // users, deleted users (with their login ids). The worker is frozen meanwhile (SIGSTOP), with
    // its snapshot open and mid-stream: an export is now faster than these writes, and the
    // scenario must not depend on which finishes first.
    worker.pause();
    let t = Instant::now();
    let new_users: Vec<_> = (USERS..USERS + INSERTED).map(|i| fake::user(14, i)).collect();
    for chunk in new_users.chunks(1000) {
        f.components.store.insert_users(&f.project, chunk).await.expect("insert users");
    }
    let renamed = f
        .sql_exec(&format!(
            "UPDATE users SET name = '{RENAMED}' WHERE seq IN \
             (SELECT seq FROM users ORDER BY seq DESC OFFSET {INSERTED} LIMIT 2000)"
        ))
        .await;
    assert_eq!(renamed, 2000);
    let doomed =
        f.sql_i64(&format!("SELECT seq FROM users ORDER BY seq DESC OFFSET {} LIMIT 2000", INSERTED + 2000)).await;
    let list = doomed.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let deleted_visible = f.sql_i64(&format!("SELECT COUNT(*) FROM users WHERE seq IN ({list}) AND NOT test")).await[0];
    let deleted_ids: HashSet<String> = {
        let db = f.components.store.connection();
        let sql = format!("SELECT user_id FROM users WHERE seq IN ({list}) AND NOT test");
        let stmt = sea_orm::Statement::from_string(db.get_database_backend(), sql);
        use sea_orm::ConnectionTrait;
        db.query_all_raw(stmt).await.expect("deleted ids").iter().map(|r| r.try_get_by_index(0).expect("id")).collect()
    };
    assert_eq!(deleted_ids.len() as i64, deleted_visible);
    f.sql_exec(&format!(
        "DELETE FROM user_login_ids WHERE user_seq IN ({list}); DELETE FROM users WHERE seq IN ({list})"
    ))
    .await;
    f.note(&format!("inserted {INSERTED}, renamed 2000, deleted 2000 users"), t);
    let during = f.row(&id).await;
    assert_eq!(during.status, "processing", "the export ended before the writes did: {during:?}");
    assert!((during.rows_written as usize) < expected.len(), "{during:?}");
    worker.resume();

    let done = f.wait_completed(&id, Duration::from_secs(600)).await;
    f.note("enqueue → completed", t0);
    assert_eq!(f.row(&id).await.attempts, 1);
    f.check_csv_file(&done, &expected).await;
    let body = download(&f, &done).await;
    assert!(!body.contains(RENAMED), "a value written during the export is in its file");

    // A new export sees every write.
    let id2 = f.create_csv_export().await;
    let done2 = f.wait_completed(&id2, Duration::from_secs(600)).await;
    let mut after: Vec<String> = expected.iter().filter(|id| !deleted_ids.contains(*id)).cloned().collect();
    after.extend(new_users.iter().filter(|u| !u.test).map(|u| u.id.to_string()));
    f.check_csv_file(&done2, &after).await;
    let body2 = download(&f, &done2).await;
    assert!(body2.contains(RENAMED), "the second export misses the renamed users");
    f.note("total", t0);
}

async fn download(f: &Fault, done: &serde_json::Value) -> String {
    let url = done["download_url"].as_str().expect("download_url");
    f.client.get(url).send().await.expect("download").text().await.expect("body")
}
