//! The Auth0 dialect end to end: bulk user export jobs in both modes (create, poll, download the
//! gzipped file, check every row), its error envelopes, `/oauth/token`, and the official Python and
//! Node SDKs driven against a running server.

use std::collections::HashMap;
use std::io::Read as _;
use std::time::Duration;

use serde_json::{Value, json};
use userexport_domain::{JsonPointer, User};

use crate::helpers::{Mode, TestApp, run_sdk_script, services_required, spawn_app};

const WAIT: Duration = Duration::from_secs(120);

fn gunzip(bytes: &[u8]) -> String {
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "the file is gzip");
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut out).expect("gunzip");
    out
}

/// An Auth0-dialect CSV cell as read back by a CSV reader, written independently of the encoder:
/// scalars as text, the formula guard on strings that start like a formula (E.164 numbers spared).
fn expected_cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => {
            let formula = s.starts_with(['=', '-', '@', '\t', '\r'])
                || (s.starts_with('+') && !s[1..].bytes().all(|b| b.is_ascii_digit()));
            if formula { format!("'{s}") } else { s.clone() }
        }
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

fn visible(users: &[User]) -> Vec<&User> {
    users.iter().filter(|u| !u.test).collect()
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.poll_until(&format!("/api/v2/jobs/{id}"), WAIT, |b| b["status"] != "pending" && b["status"] != "processing")
        .await
}

async fn csv_round_trip(app: &TestApp) {
    let users = app.seed(21, 3_000).await;
    let paths = ["user_id", "email", "user_metadata.plan", "user_metadata.note", "identities[0].connection", "blocked"];
    let body = json!({"format": "csv", "fields": [
        {"name": "user_id", "export_as": "Id"}, {"name": "email"}, {"name": "user_metadata.plan"},
        {"name": "user_metadata.note"}, {"name": "identities[0].connection", "export_as": "Connection"},
        {"name": "blocked"}]});
    let resp = app.post("/api/v2/jobs/users-exports", &body).await;
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().expect("job id").to_owned();
    assert!(id.starts_with("job_") && id.len() == 20, "{id}");
    assert_eq!(created["type"], "users_export");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["format"], "csv");
    assert_eq!(created["fields"], body["fields"]);
    let created_at = created["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && created_at.len() == 24, "ISO 8601 with ms: {created_at}");

    let done = job(app, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!((done["id"].as_str(), done["type"].as_str()), (Some(id.as_str()), Some("users_export")));
    let location = done["location"].as_str().expect("location");
    assert!(location.starts_with("http"), "absolute URL: {location}");
    // A finished job has no errors.
    assert_eq!(app.get(&format!("/api/v2/jobs/{id}/errors")).await.status(), 204);

    let (status, bytes) = app.download(location).await;
    assert_eq!(status, 200);
    let text = gunzip(&bytes);
    assert!(
        text.starts_with("\"Id\",\"email\",\"user_metadata.plan\",\"user_metadata.note\",\"Connection\",\"blocked\"\n")
    );
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let pointers: Vec<JsonPointer> = paths.iter().map(|p| JsonPointer::from_auth0_path(p).unwrap()).collect();
    let visible = visible(&users);
    let mut rows = 0;
    for (record, user) in reader.records().zip(&visible) {
        let record = record.expect("csv record");
        let view = user.auth0_user();
        for (i, ptr) in pointers.iter().enumerate() {
            assert_eq!(record[i], expected_cell(ptr.resolve(&view)), "user {} field {}", user.id, paths[i]);
        }
        rows += 1;
    }
    assert_eq!(rows, visible.len(), "every (non-test) user exactly once, in order");
    // Every text cell is quoted (Auth0 style); the boolean column is not.
    let first_row = text.lines().nth(1).unwrap();
    assert!(first_row.starts_with("\"auth0|"), "{first_row}");
    assert!(first_row.ends_with(",true") || first_row.ends_with(",false"), "{first_row}");
}

async fn json_round_trip_with_limit(app: &TestApp) {
    let users = app.seed(22, 500).await;
    let resp = app.post("/api/v2/jobs/users-exports", &json!({"format": "json"})).await;
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let done = job(app, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["format"], "json");
    let (status, bytes) = app.download(done["location"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let text = gunzip(&bytes);
    let expected: HashMap<String, Value> =
        visible(&users).into_iter().map(|u| (format!("auth0|{}", u.id), u.auth0_user())).collect();
    let mut seen = 0;
    for line in text.lines() {
        let got: Value = serde_json::from_str(line).expect("ndjson line");
        assert_eq!(&got, &expected[got["user_id"].as_str().unwrap()]);
        seen += 1;
    }
    assert_eq!(seen, expected.len());

    // `limit` and `export_as` keys in JSON.
    let body = json!({"format": "json", "limit": 7, "fields": [{"name": "email", "export_as": "mail"},
        {"name": "user_metadata"}]});
    let resp = app.post("/api/v2/jobs/users-exports", &body).await;
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let done = job(app, &id).await;
    assert_eq!((done["status"].as_str(), done["limit"].as_u64()), (Some("completed"), Some(7)));
    let text = gunzip(&app.download(done["location"].as_str().unwrap()).await.1);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    for (got, user) in lines.iter().zip(visible(&users)) {
        let mut want = serde_json::Map::new();
        if let Some(e) = &user.email {
            want.insert("mail".into(), json!(e));
        }
        want.insert("user_metadata".into(), Value::Object(user.custom_attributes.clone()));
        assert_eq!(got, &Value::Object(want));
    }
}

async fn errors_use_the_auth0_envelope(app: &TestApp) {
    let post = |body: Value| async move {
        let r = app.post("/api/v2/jobs/users-exports", &body).await;
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    for (body, status, code) in [
        (json!({"format": "csv", "bogus": 1}), 400, "invalid_body"),
        (json!({"format": "xml"}), 400, "invalid_body"),
        (json!({"fields": [{"name": "email", "export_as": "x".repeat(101)}]}), 400, "invalid_body"),
        (
            json!({"fields": (0..31).map(|i| json!({"name": format!("user_metadata.k{i}")})).collect::<Vec<_>>()}),
            400,
            "invalid_body",
        ),
        (json!({"connection_id": "con_0000000000000001"}), 400, "inexistent_connection"),
    ] {
        let (got_status, got) = post(body.clone()).await;
        assert_eq!((got_status, got["errorCode"].as_str()), (status, Some(code)), "{body}: {got}");
        assert_eq!(got["statusCode"], status);
        let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["statusCode", "error", "message", "errorCode"]);
    }
    let before = app.task_count().await;
    let r = app
        .client
        .post(format!("{}/api/v2/jobs/users-exports", app.base))
        .header("Authorization", app.auth())
        .header("Content-Type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "invalid_body");
    assert_eq!(app.task_count().await, before, "nothing is created by a bad request");

    // 401 without or with wrong credentials.
    for auth in [None, Some(format!("Bearer {}:Kwrong", app.project)), Some("Bearer a.b.c".to_owned())] {
        let mut req = app.client.get(format!("{}/api/v2/jobs/job_0000000000000000", app.base));
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!((body["statusCode"].as_u64(), body["error"].as_str()), (Some(401), Some("Unauthorized")));
        assert_eq!(body["errorCode"], "invalid_token");
    }
    // 400 for a malformed id, 404 for an unknown one and for another project's job.
    let r = app.get("/api/v2/jobs/not-a-job").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "invalid_uri");
    let r = app.get("/api/v2/jobs/job_0000000000000000").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"statusCode": 404, "error": "Not Found", "message": "The job does not exist.", "errorCode": "inexistent_job"})
    );
    let id = post(json!({"format": "json"})).await.1["id"].as_str().unwrap().to_owned();
    for path in [format!("/api/v2/jobs/{id}"), format!("/api/v2/jobs/{id}/errors")] {
        let r = app.get_as_other(&path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "inexistent_job");
    }
    // Unknown routes and methods under /api/v2 answer in the envelope too.
    let r = app.get("/api/v2/jobs/users-exports").await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["statusCode"], 405);
    let r = app.get("/api/v2/nope").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "invalid_uri");
}

/// Requests a client-credentials token.
async fn oauth_token(app: &TestApp, client_id: &str, secret: &str, audience: &str) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}/oauth/token", app.base))
        .json(&json!({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
            "audience": audience}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn oauth_tokens_authenticate_the_dialect(app: &TestApp) {
    app.seed(23, 20).await;
    let audience = format!("{}/api/v2/", app.base);
    let (status, body) = oauth_token(app, app.project.as_str(), &app.key, &audience).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(3600)));
    let token = body["access_token"].as_str().unwrap().to_owned();
    let r = app
        .client
        .post(format!("{}/api/v2/jobs/users-exports", app.base))
        .bearer_auth(&token)
        .json(&json!({"format": "json"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = app.client.get(format!("{}/api/v2/jobs/{id}", app.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The token is for the Auth0 dialect and its project only.
    let r = app.client.get(format!("{}/v1/exports", app.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (_, other) = oauth_token(app, app.other_project.as_str(), &app.other_key, &audience).await;
    let r = app
        .client
        .get(format!("{}/api/v2/jobs/{id}", app.base))
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A tampered token is refused.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = app.client.get(format!("{}/api/v2/jobs/{id}", app.base)).bearer_auth(&tampered).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Wrong secret, unknown client, wrong audience, wrong grant.
    let (status, body) = oauth_token(app, app.project.as_str(), "Kwrong", &audience).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("access_denied")));
    let (status, _) = oauth_token(app, "nope", &app.key, &audience).await;
    assert_eq!(status, 401);
    let (status, body) = oauth_token(app, app.project.as_str(), &app.key, "https://elsewhere/api/v2/").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")));
    let r = app
        .client
        .post(format!("{}/oauth/token", app.base))
        .form(&[("grant_type", "password"), ("client_id", app.project.as_str()), ("client_secret", &app.key)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    // Form-encoded requests work too (OAuth 2's encoding).
    let r = app
        .client
        .post(format!("{}/oauth/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.project.as_str()),
            ("client_secret", &app.key),
            ("audience", &audience),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

in_both_modes!(
    csv_round_trip,
    json_round_trip_with_limit,
    errors_use_the_auth0_envelope,
    oauth_tokens_authenticate_the_dialect
);

/// An interpreter location the xtask exports, or `None` (with a skip line) when it is unset and
/// services are not required.
fn sdk_setting(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if services_required() => panic!("{var} is not set; run `cargo xtask test`, which installs the SDKs"),
        _ => {
            eprintln!("skipping: {var} is not set; run `cargo xtask test` to install the Auth0 SDKs");
            None
        }
    }
}

/// Starts an embedded app with seeded users and writes the SDK fixture: credentials, a job of the
/// other project, and the Auth0 view of every user the exports must contain, in order.
async fn sdk_app(seed: u64) -> Option<(TestApp, tempfile::NamedTempFile)> {
    let app = spawn_app(Mode::Embedded).await?;
    let users = app.seed(seed, 300).await;
    let r = app
        .client
        .post(format!("{}/api/v2/jobs/users-exports", app.base))
        .header("Authorization", app.other_auth())
        .json(&json!({"format": "json"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other_job = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let views: Vec<Value> = visible(&users).into_iter().map(User::auth0_user).collect();
    let fixture = json!({"client_id": app.project.as_str(), "client_secret": app.key, "other_job": other_job,
        "users": views});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&fixture).unwrap()).unwrap();
    Some((app, file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_exports_and_errors() {
    let Some(python) = sdk_setting("USEREXPORT_TEST_PYTHON") else { return };
    let Some((app, fixture)) = sdk_app(31).await else { return };
    let mut cmd = std::process::Command::new(python);
    cmd.arg("tests/sdk/auth0_python.py");
    run_sdk_script(cmd, &app, fixture.path()).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_sdk_exports_and_errors() {
    let Some(node_path) = sdk_setting("USEREXPORT_TEST_NODE_PATH") else { return };
    let node = std::env::var("USEREXPORT_TEST_NODE").unwrap_or_else(|_| "node".to_owned());
    let Some((app, fixture)) = sdk_app(32).await else { return };
    let mut cmd = std::process::Command::new(node);
    cmd.arg("tests/sdk/auth0_node.mjs").env("NODE_PATH", node_path);
    run_sdk_script(cmd, &app, fixture.path()).await;
    app.stop().await;
}

/// `percentage_done` and `time_left_seconds` come from real counts: during a 200k-user export they
/// are seen strictly between 0 and 100 and never go backwards; the file then holds every user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_moves_during_a_200k_user_export() {
    let Some(app) = spawn_app(Mode::Production).await else { return };
    const USERS: u64 = 200_000;
    for start in (0..USERS).step_by(20_000) {
        let chunk: Vec<User> = (start..start + 20_000).map(|i| userexport_domain::fake::user(5, i)).collect();
        app.components.store.insert_users(&app.project, &chunk).await.expect("insert users");
    }
    let visible = (0..USERS).filter(|&i| !userexport_domain::fake::user(5, i).test).count() as u64;
    let resp =
        app.post("/api/v2/jobs/users-exports", &json!({"format": "json", "fields": [{"name": "user_id"}]})).await;
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let mut seen: Vec<(u64, Option<u64>)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let done = loop {
        let body: Value = app.get(&format!("/api/v2/jobs/{id}")).await.json().await.unwrap();
        let pct = body["percentage_done"].as_u64().unwrap_or(0);
        if body["status"] == "processing" {
            seen.push((pct, body["time_left_seconds"].as_u64()));
        }
        if body["status"] != "pending" && body["status"] != "processing" {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "export did not finish; last {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    // As in Auth0, only a processing job carries progress fields.
    assert!(done.get("percentage_done").is_none(), "{done}");
    let midway: Vec<_> = seen.iter().filter(|(p, _)| (1..100).contains(p)).collect();
    assert!(!midway.is_empty(), "no progress seen between 0 and 100: {seen:?}");
    assert!(midway.iter().all(|(_, left)| left.is_some()), "time_left_seconds missing midway: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress went backwards: {seen:?}");
    let (status, bytes) = app.download(done["location"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(gunzip(&bytes).lines().count() as u64, visible);
    app.stop().await;
}
