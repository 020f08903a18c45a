//! The native API's task lifecycle in both modes: idempotent creates, cancelling, the list
//! endpoint's keyset pages and filters, and retention across the three views.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;

const WAIT: Duration = Duration::from_secs(120);

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/exports", app.base))
        .header("Authorization", app.auth())
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn finished(app: &TestApp, id: &str) -> Value {
    app.poll_until(&format!("/v1/exports/{id}"), WAIT, |b| b["status"] != "pending" && b["status"] != "processing")
        .await
}

/// A retried create with the same `Idempotency-Key` and body gets the same task; the same key with
/// another body is refused with 422 and creates nothing.
async fn idempotent_creates(app: &TestApp) {
    let body = json!({"format": "csv", "fields": [{"pointer": "/sub"}]});
    let first = post_with_key(app, "retry-1", &body).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("Idempotent-Replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let again = post_with_key(app, "retry-1", &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers().get("Idempotent-Replayed").and_then(|v| v.to_str().ok()), Some("true"));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let other = post_with_key(app, "retry-1", &json!({"format": "ndjson"})).await;
    assert_eq!(other.status(), 422);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["code"], "idempotency_key_reused", "{other}");
    assert_eq!(app.task_count().await, 1);

    // Keys are per project: the other project may use the same key for its own task.
    let foreign = app
        .client
        .post(format!("{}/v1/exports", app.base))
        .header("Authorization", app.other_auth())
        .header("Idempotency-Key", "retry-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 202);
    let foreign: Value = foreign.json().await.unwrap();
    assert_ne!(foreign["id"], first["id"]);
    assert_eq!(app.task_count().await, 2);
}

/// Cancelling a running export ends it `cancelled` with no file; a finished task cannot be
/// cancelled (409), and an unknown one is 404.
async fn cancelling(app: &TestApp) {
    app.seed(3, 30_000).await;
    let created: Value = app.post("/v1/exports", &json!({"format": "ndjson"})).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let resp = app.post(&format!("/v1/exports/{id}/cancel"), &json!({})).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert!(body["status"] == "cancelled" || body["cancel_requested"] == true, "{body}");
    let done = finished(app, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(done["download_url"].is_null(), "{done}");
    assert!((done["rows_written"].as_u64().unwrap()) < 30_000, "{done}");
    // No file was completed for it (the upload is aborted, not completed).
    let objects = app.components.storage.list("").await.expect("list objects");
    assert!(!objects.iter().any(|k| k.contains(&id)), "{objects:?}");

    let small: Value = app
        .post("/v1/exports", &json!({"format": "csv", "filters": {"user_ids": ["Unobody"]}}))
        .await
        .json()
        .await
        .unwrap();
    let small_id = small["id"].as_str().unwrap().to_owned();
    assert_eq!(finished(app, &small_id).await["status"], "completed");
    let resp = app.post(&format!("/v1/exports/{small_id}/cancel"), &json!({})).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "task_state_conflict");
    let resp = app.post("/v1/exports/userexport_00000000000000000000000000000000/cancel", &json!({})).await;
    assert_eq!(resp.status(), 404);
}

/// `GET /v1/exports` pages newest first with `limit` and the `next` cursor, without repeats, and
/// filters by status; bad parameters are 400 `invalid_query`.
async fn listing(app: &TestApp) {
    let mut created = Vec::new();
    for _ in 0..5 {
        let body: Value = app.post("/v1/exports", &json!({"format": "csv"})).await.json().await.unwrap();
        created.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &created {
        finished(app, id).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/exports?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        let results = page["results"].as_array().unwrap();
        assert!(results.len() <= 2, "{page}");
        seen.extend(results.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/exports?limit=2&from={next}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);

    let completed: Value = app.get("/v1/exports?status=completed&limit=100").await.json().await.unwrap();
    assert_eq!(completed["results"].as_array().unwrap().len(), 5);
    let pending: Value = app.get("/v1/exports?status=pending").await.json().await.unwrap();
    assert_eq!(pending["results"].as_array().unwrap().len(), 0);
    // The other project sees none of them.
    let foreign: Value = app.get_as_other("/v1/exports").await.json().await.unwrap();
    assert_eq!(foreign["results"].as_array().unwrap().len(), 0);

    for bad in ["limit=0", "limit=abc", "limit=101", "status=zombie", "bogus=1", "created_from=yesterday"] {
        let resp = app.get(&format!("/v1/exports?{bad}")).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "invalid_query", "{bad}");
    }
}

in_both_modes!(idempotent_creates, cancelling, listing);

/// Retention, with a 5 s value: once a finished export is past it, the sweeper deletes the file,
/// the download URL stops working, the native and Auth0 views say `expired`, and the Authgear view
/// answers `TaskExpired`.
async fn retention(app: &TestApp) {
    app.seed(5, 200).await;
    let native: Value = app.post("/v1/exports", &json!({"format": "csv"})).await.json().await.unwrap();
    let auth0: Value = app
        .post("/api/v2/jobs/users-exports", &json!({"format": "json", "fields": [{"name": "email"}]}))
        .await
        .json()
        .await
        .unwrap();
    let authgear: Value =
        app.post("/_api/admin/users/export", &json!({"format": "ndjson"})).await.json().await.unwrap();
    let native_id = native["id"].as_str().expect("id").to_owned();
    let auth0_id = auth0["id"].as_str().expect("job id").to_owned();
    let authgear_id = authgear["result"]["id"].as_str().expect("task id").to_owned();

    let done = finished(app, &native_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let url = done["download_url"].as_str().expect("download_url").to_owned();
    assert_eq!(app.download(&url).await.0, 200, "fresh URL");
    let job = app.poll_until(&format!("/api/v2/jobs/{auth0_id}"), WAIT, |b| b["status"] == "completed").await;
    assert!(job["location"].is_string(), "{job}");

    let expired = app.poll_until(&format!("/v1/exports/{native_id}"), WAIT, |b| b["status"] == "expired").await;
    assert!(expired["download_url"].is_null(), "{expired}");
    assert_ne!(app.download(&url).await.0, 200, "the URL still serves the file after retention");
    let job = app.poll_until(&format!("/api/v2/jobs/{auth0_id}"), WAIT, |b| b["status"] == "expired").await;
    assert!(job["location"].is_null(), "{job}");
    app.poll_until(&format!("/v1/exports/{}", authgear_id), WAIT, |b| b["status"] == "expired").await;
    let resp = app.get(&format!("/_api/admin/users/export/{authgear_id}")).await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "TaskExpired", "{body}");
    let left = app.components.storage.list("exports/").await.expect("list objects");
    assert!(left.is_empty(), "files left after retention: {left:?}");
}

mod retention {
    use crate::helpers::{Mode, spawn_app_with};

    const SHORT: [(&str, &str); 3] =
        [("USEREXPORT_RETENTION", "5s"), ("USEREXPORT_DOWNLOAD_URL_TTL", "5s"), ("USEREXPORT_SWEEP_INTERVAL", "500ms")];

    async fn run(mode: Mode) {
        let extra: Vec<(&str, String)> = SHORT.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let Some(app) = spawn_app_with(mode, &extra).await else { return };
        super::retention(&app).await;
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded() {
        run(Mode::Embedded).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn production() {
        run(Mode::Production).await;
    }
}
