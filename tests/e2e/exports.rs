//! Export tasks end to end, in both modes: create, poll, download through the stored URL, check
//! every row.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use userexport_domain::{JsonPointer, User};

use crate::helpers::{Mode, TestApp, authgear_cell};

const WAIT: Duration = Duration::from_secs(120);

async fn authgear_csv_round_trip(app: &TestApp) {
    let users = app.seed(11, 10_000).await;
    let fields = ["/sub", "/email", "/name", "/custom_attributes/plan", "/roles", "/address/formatted", "/disabled"];
    let body = json!({"format": "csv", "csv": {"fields": [
        {"pointer": "/sub", "field_name": "user_id"}, {"pointer": "/email"}, {"pointer": "/name"},
        {"pointer": "/custom_attributes/plan"}, {"pointer": "/roles"}, {"pointer": "/address/formatted"},
        {"pointer": "/disabled"}]}});
    let resp = app.post("/_api/admin/users/export", &body).await;
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.unwrap();
    let id = created["result"]["id"].as_str().expect("task id").to_owned();
    assert!(id.starts_with("userexport_"));
    assert_eq!(created["result"]["status"], "pending");
    let done =
        app.poll_until(&format!("/_api/admin/users/export/{id}"), WAIT, |b| b["result"]["status"] == "completed").await;
    assert!(done["result"].get("error").is_none(), "export failed: {done}");
    let url = done["result"]["download_url"].as_str().expect("download_url");
    let (status, bytes) = app.download(url).await;
    assert_eq!(status, 200);

    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        headers,
        ["user_id", "email", "name", "custom_attributes.plan", "roles", "address.formatted", "disabled"]
    );
    let visible: Vec<&User> = users.iter().filter(|u| !u.test).collect();
    let pointers: Vec<JsonPointer> = fields.iter().map(|p| JsonPointer::parse(p).unwrap()).collect();
    let mut rows = 0;
    for (record, user) in reader.records().zip(&visible) {
        let record = record.expect("csv record");
        let view = user.authgear_record();
        for (i, ptr) in pointers.iter().enumerate() {
            assert_eq!(record[i], authgear_cell(ptr.resolve(&view)), "user {} field {}", user.id, fields[i]);
        }
        rows += 1;
    }
    assert_eq!(rows, visible.len(), "every (non-test) user exactly once, in order");
}

async fn native_ndjson_round_trip(app: &TestApp) {
    let users = app.seed(12, 10_000).await;
    let resp = app.post("/v1/exports", &json!({"format": "ndjson"})).await;
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let done = app
        .poll_until(&format!("/v1/exports/{id}"), WAIT, |b| b["status"] != "pending" && b["status"] != "processing")
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["rows_written"], 10_000 - users.iter().filter(|u| u.test).count());
    assert_eq!(done["percentage_done"], 100);
    assert!(done["download_url_expires_at"].is_string());
    let (status, bytes) = app.download(done["download_url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes).unwrap();
    let expected: HashMap<String, Value> =
        users.iter().filter(|u| !u.test).map(|u| (u.id.to_string(), u.authgear_record())).collect();
    let mut seen = 0;
    for line in text.lines() {
        let got: Value = serde_json::from_str(line).expect("ndjson line");
        let want = &expected[got["sub"].as_str().unwrap()];
        assert_eq!(&got, want);
        seen += 1;
    }
    assert_eq!(seen, expected.len());
    assert!(text.ends_with('\n'));
}

async fn urls_refuse_tampering_and_expiry(app: &TestApp) {
    app.seed(13, 50).await;
    let resp = app.post("/v1/exports", &json!({"format": "csv"})).await;
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let done = app.poll_until(&format!("/v1/exports/{id}"), WAIT, |b| b["status"] == "completed").await;
    let url = done["download_url"].as_str().unwrap().to_owned();
    assert_eq!(app.download(&url).await.0, 200);
    // Flip one hex digit of the signature.
    let sig_param = if app.mode == Mode::Embedded { "sig=" } else { "X-Amz-Signature=" };
    let at = url.find(sig_param).expect("signature parameter") + sig_param.len();
    let mut tampered = url.clone().into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    assert_eq!(app.download(&String::from_utf8(tampered).unwrap()).await.0, 403);
    // A URL signed two hours ago, valid one hour.
    let task = app.components.store.load_task(&id.parse().unwrap()).await.unwrap().unwrap();
    let key = task.object_key.unwrap();
    let expired = app
        .components
        .storage
        .presign_get_at(&key, "x.csv", chrono::Utc::now() - chrono::Duration::hours(2), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(app.download(&expired).await.0, 403);
    let fresh = app.components.storage.presign_get(&key, "x.csv", Duration::from_secs(60)).await.unwrap();
    assert_eq!(app.download(&fresh).await.0, 200);
}

async fn other_projects_tasks_are_404_and_credentials_are_required(app: &TestApp) {
    let resp = app.post("/_api/admin/users/export", &json!({"format": "ndjson"})).await;
    let id = resp.json::<Value>().await.unwrap()["result"]["id"].as_str().unwrap().to_owned();
    for path in [format!("/_api/admin/users/export/{id}"), format!("/v1/exports/{id}")] {
        let r = app.get_as_other(&path).await;
        assert_eq!(r.status(), 404, "{path}");
        let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without credentials");
        let r = app
            .client
            .get(format!("{}{path}", app.base))
            .header("Authorization", format!("Bearer {}:Kwrong", app.project))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong key");
    }
    let body: Value = app.get_as_other(&format!("/_api/admin/users/export/{id}")).await.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "TaskNotFound");
}

in_both_modes!(
    authgear_csv_round_trip,
    native_ndjson_round_trip,
    urls_refuse_tampering_and_expiry,
    other_projects_tasks_are_404_and_credentials_are_required,
);
