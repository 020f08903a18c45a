//! The Descope dialect: search, load, writes and errors over HTTP in both modes, filtered exports that
//! match search, and the official Python SDK (`descope` 2.16.0) against a running server.

use std::time::Duration;

use serde_json::{Value, json};
use userexport_domain::{SortField, TestUsers, User, UserFilter, UserSort, UserStatus};

use crate::helpers::{Mode, TestApp, run_sdk_script, services_required, spawn_app, spawn_app_with};

/// POSTs a Descope search and returns `(users' ids, total)`.
async fn search(app: &TestApp, path: &str, body: Value) -> (Vec<String>, u64) {
    let resp = app.post(path, &body).await;
    assert_eq!(resp.status(), 200, "{path} {body}");
    let got: Value = resp.json().await.unwrap();
    let ids = got["users"].as_array().unwrap().iter().map(|u| u["userId"].as_str().unwrap().to_owned()).collect();
    (ids, got["total"].as_u64().unwrap())
}

/// The ids `filter` selects from `users` (the reference semantics), ordered by `sort` then
/// insertion order.
fn reference(users: &[User], filter: &UserFilter, sort: Option<UserSort>) -> Vec<String> {
    let mut hits: Vec<&User> = users.iter().filter(|u| filter.matches(u)).collect();
    if let Some(s) = sort {
        hits.sort_by(|a, b| {
            let o = s.field.value(a).cmp(&s.field.value(b));
            if s.desc { o.reverse() } else { o }
        });
    }
    hits.into_iter().map(|u| u.id.to_string()).collect()
}

/// Pages a search body through `limit`-sized pages until an empty one.
async fn all_pages(app: &TestApp, body: &Value, limit: u64) -> (Vec<String>, u64) {
    let mut out = Vec::new();
    let mut total = 0;
    for page in 0.. {
        let mut b = body.clone();
        b["limit"] = json!(limit);
        b["page"] = json!(page);
        let (ids, t) = search(app, "/v2/mgmt/user/search", b).await;
        total = t;
        if ids.is_empty() {
            break;
        }
        out.extend(ids);
    }
    (out, total)
}

/// Search pages, filters, sort and the user object; load by login id and user id; load_users.
async fn search_and_load(app: &TestApp) {
    let users = app.seed(61, 400).await;
    let real: Vec<&User> = users.iter().filter(|u| !u.test).collect();

    // `{}` is every real user, 100 per page, each exactly Descope's user object.
    let resp = app.post("/v2/mgmt/user/search", &json!({})).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["total"].as_u64(), Some(real.len() as u64));
    let page: Vec<Value> = body["users"].as_array().unwrap().clone();
    assert_eq!(page.len(), 100);
    let want: Vec<Value> = real.iter().take(100).map(|u| u.descope_user()).collect();
    assert_eq!(page, want);

    let cases: Vec<(Value, UserFilter, Option<UserSort>)> = vec![
        (json!({}), UserFilter::default(), None),
        (json!({"withTestUser": true}), UserFilter { test_users: TestUsers::Include, ..Default::default() }, None),
        (
            json!({"statuses": ["disabled", "invited"], "tenantIds": ["T-acme"]}),
            UserFilter {
                statuses: vec![UserStatus::Disabled, UserStatus::Invited],
                tenant_ids: vec!["T-acme".into()],
                ..Default::default()
            },
            None,
        ),
        (
            json!({"customAttributes": {"plan": ["pro", "team"]}, "roleNames": ["admin", "viewer"]}),
            UserFilter {
                custom_attributes: json!({"plan": ["pro", "team"]}).as_object().unwrap().clone(),
                role_names: vec!["admin".into(), "viewer".into()],
                ..Default::default()
            },
            None,
        ),
        (
            json!({"fromCreatedTime": users[100].created_at.timestamp_millis(),
                "toCreatedTime": users[300].created_at.timestamp_millis(), "text": "a"}),
            UserFilter {
                created_from: Some(users[100].created_at),
                created_to: Some(users[300].created_at),
                text: Some("a".into()),
                ..Default::default()
            },
            None,
        ),
        (
            json!({"sort": [{"field": "email", "desc": true}], "statuses": ["enabled"]}),
            UserFilter { statuses: vec![UserStatus::Enabled], ..Default::default() },
            Some(UserSort { field: SortField::Email, desc: true }),
        ),
    ];
    for (body, filter, sort) in cases {
        let want = reference(&users, &filter, sort);
        assert!(!want.is_empty(), "{body} selects someone");
        let (got, total) = all_pages(app, &body, 37).await;
        assert_eq!(total, want.len() as u64, "{body}");
        assert_eq!(got, want, "{body}");
    }
    // Test users only, on the /test path (v1 and v2 alike).
    let tests = reference(&users, &UserFilter { test_users: TestUsers::Only, ..Default::default() }, None);
    for path in ["/v1/mgmt/user/search/test", "/v2/mgmt/user/search/test"] {
        assert_eq!(search(app, path, json!({"limit": 1000})).await, (tests.clone(), tests.len() as u64));
    }
    // The deprecated v1 path and a row offset.
    let (ids, _) = search(app, "/v1/mgmt/user/search", json!({"offset": 5, "limit": 3})).await;
    assert_eq!(ids, real[5..8].iter().map(|u| u.id.to_string()).collect::<Vec<_>>());

    // Load by login id, by user id, and by user id passed as loginId (Go / Node SDKs).
    let u = real[7];
    for query in
        [format!("loginId={}", u.login_ids[0]), format!("userId={}", u.id), format!("loginId={}&userId=", u.id)]
    {
        let resp = app.get(&format!("/v1/mgmt/user?{query}")).await;
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"user": u.descope_user()}), "{query}");
    }
    let resp = app.get("/v1/mgmt/user?loginId=nobody%40example.com").await;
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["errorCode"], "E112102", "{err}");
    assert!(err["errorDescription"].is_string() && err["errorMessage"].is_string(), "{err}");
    let resp = app.get("/v1/mgmt/user?loginId=&userId=").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["errorCode"], "E011002");
    // Another project's user is not found.
    let resp = app.get_as_other(&format!("/v1/mgmt/user?userId={}", u.id)).await;
    assert_eq!(resp.status(), 404);

    // load_users returns the named users, test users included, unknown ids skipped.
    let ids = vec![users[3].id.to_string(), "U-nobody".to_owned(), users[9].id.to_string()];
    let (got, total) = search(app, "/v1/mgmt/users/load", json!({"userIds": ids})).await;
    assert_eq!((got, total), (vec![users[3].id.to_string(), users[9].id.to_string()], 2));
}

/// Create, batch create (all or nothing), status and role updates, license.
async fn writes(app: &TestApp) {
    let resp = app
        .post(
            "/v1/mgmt/user/create",
            &json!({"loginId": "ann@example.com", "email": "ann@example.com", "displayName": "Ann",
                "roleNames": ["viewer"], "userTenants": [{"tenantId": "T1", "roleNames": ["member"]}],
                "customAttributes": {"plan": "pro"}, "verifiedEmail": true, "phone": "+15551234567"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let ann = resp.json::<Value>().await.unwrap()["user"].clone();
    assert_eq!(ann["loginIds"], json!(["ann@example.com"]));
    assert_eq!((ann["status"].as_str(), ann["verifiedEmail"].as_bool()), (Some("enabled"), Some(true)));
    let ann_id = ann["userId"].as_str().unwrap().to_owned();

    // The same login id again → 409, Descope envelope.
    let resp = app.post("/v1/mgmt/user/create", &json!({"loginId": "ann@example.com"})).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["errorCode"], "E011409");

    // A batch with one duplicate inserts nothing; a clean batch inserts all.
    let batch =
        |ids: &[&str]| json!({"users": ids.iter().map(|l| json!({"loginId": l})).collect::<Vec<_>>(), "invite": false});
    let resp = app.post("/v1/mgmt/user/create/batch", &batch(&["b1", "b2", "ann@example.com", "b3"])).await;
    assert_eq!(resp.status(), 409);
    let resp = app.post("/v1/mgmt/user/create/batch", &batch(&["b1", "b2", "b1"])).await;
    assert_eq!(resp.status(), 409);
    let resp = app
        .post("/v1/mgmt/user/create/batch", &json!({"users": [{"loginId": "b1"}, {"loginId": "b2", "email": "bad"}]}))
        .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["errorMessage"].as_str().unwrap().contains("/users/1/email"), "{err}");
    assert_eq!(search(app, "/v2/mgmt/user/search", json!({})).await.1, 1, "failed batches wrote nothing");
    let resp = app.post("/v1/mgmt/user/create/batch", &batch(&["b1", "b2", "b3"])).await;
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["createdUsers"].as_array().unwrap().len(), 3);
    assert_eq!(created["failedUsers"], json!([]));
    assert_eq!(search(app, "/v2/mgmt/user/search", json!({})).await.1, 4);
    let resp = app.post("/v1/mgmt/user/create/test", &json!({"loginId": "tester"})).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["user"]["test"], true);
    assert_eq!(search(app, "/v2/mgmt/user/search/test", json!({})).await.1, 1);

    // Status and roles; the change is visible to search filters at once.
    let resp = app.post("/v1/mgmt/user/update/status", &json!({"loginId": "b2", "status": "disabled"})).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["user"]["status"], "disabled");
    let (ids, _) = search(app, "/v2/mgmt/user/search", json!({"statuses": ["disabled"]})).await;
    assert_eq!(ids.len(), 1);
    let roles = |v: Value| v["user"]["roleNames"].clone();
    let r = app.post("/v1/mgmt/user/update/role/set", &json!({"loginId": ann_id, "roleNames": ["a", "b"]})).await;
    assert_eq!(roles(r.json().await.unwrap()), json!(["a", "b"]));
    let r = app
        .post("/v2/mgmt/user/update/role/add", &json!({"loginId": "ann@example.com", "roleNames": ["b", "c"]}))
        .await;
    assert_eq!(roles(r.json().await.unwrap()), json!(["a", "b", "c"]));
    let r =
        app.post("/v1/mgmt/user/update/role/remove", &json!({"loginId": "ann@example.com", "roleNames": ["a"]})).await;
    assert_eq!(roles(r.json().await.unwrap()), json!(["b", "c"]));
    let r = app
        .post(
            "/v1/mgmt/user/update/role/set",
            &json!({"loginId": "ann@example.com", "tenantId": "T1", "roleNames": ["owner"]}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["user"]["userTenants"][0]["roleNames"], json!(["owner"]));
    let r = app
        .post(
            "/v1/mgmt/user/update/role/set",
            &json!({"loginId": "ann@example.com", "tenantId": "T9", "roleNames": ["x"]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app.post("/v1/mgmt/user/update/status", &json!({"loginId": "nobody", "status": "enabled"})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "E112102");
    let r = app.post("/v1/mgmt/user/update/status", &json!({"loginId": "b1", "status": "zombie"})).await;
    assert_eq!(r.status(), 400);

    let r = app.get("/v1/mgmt/license").await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["rateLimitTier"].is_string());
}

/// Every failure answers Descope's JSON envelope.
async fn errors_use_the_descope_envelope(app: &TestApp) {
    let url = format!("{}/v2/mgmt/user/search", app.base);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (app.client.post(&url).json(&json!({})), 401, "E011401"),
        (
            app.client.post(&url).header("Authorization", format!("Bearer {}:wrong", app.project)).json(&json!({})),
            401,
            "E011401",
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", app.auth())
                .header("Content-Type", "application/json")
                .body("{"),
            400,
            "E011001",
        ),
        (
            app.client.post(&url).header("Authorization", app.auth()).header("Content-Type", "text/plain").body("{}"),
            415,
            "E011001",
        ),
        (app.client.post(&url).header("Authorization", app.auth()).json(&json!([1])), 400, "E011001"),
        (app.client.post(&url).header("Authorization", app.auth()).json(&json!({"limit": -5})), 400, "E011003"),
        (
            app.client.post(&url).header("Authorization", app.auth()).json(&json!({"sort": [{"field": "shoeSize"}]})),
            400,
            "E011003",
        ),
        (app.client.get(&url).header("Authorization", app.auth()), 405, "E011405"),
        (
            app.client.post(format!("{}/v2/mgmt/user/nope", app.base)).header("Authorization", app.auth()),
            404,
            "E011404",
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", app.auth())
                .header("Content-Type", "application/json")
                .body(vec![b' '; 11 * 1024 * 1024]),
            413,
            "E011001",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let body: Value = resp.json().await.unwrap_or_else(|e| panic!("case {i}: not JSON: {e}"));
        assert_eq!(body["errorCode"], code, "case {i}: {body}");
        assert!(body["errorDescription"].is_string(), "case {i}: {body}");
    }
}

/// An Authgear export with `filters` holds exactly the users search returns for those filters.
async fn filtered_export_matches_search(app: &TestApp) {
    let users = app.seed(62, 600).await;
    let filters = json!({"statuses": ["enabled"], "tenant_ids": ["T-acme", "T-globex"]});
    let resp = app
        .post(
            "/_api/admin/users/export",
            &json!({"format": "csv", "csv": {"fields": [{"pointer": "/sub"}]}, "filters": filters}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["result"]["id"].as_str().unwrap().to_owned();
    let done = app
        .poll_until(&format!("/_api/admin/users/export/{id}"), Duration::from_secs(120), |b| {
            b["result"]["status"] == "completed"
        })
        .await;
    let (status, bytes) = app.download(done["result"]["download_url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes).unwrap();
    let exported: Vec<String> = text.lines().skip(1).map(str::to_owned).collect();
    let (searched, total) =
        all_pages(app, &json!({"statuses": ["enabled"], "tenantIds": ["T-acme", "T-globex"]}), 100).await;
    assert!(!exported.is_empty());
    assert_eq!(exported, searched);
    assert_eq!(total, exported.len() as u64);
    let filter = UserFilter {
        statuses: vec![UserStatus::Enabled],
        tenant_ids: vec!["T-acme".into(), "T-globex".into()],
        ..Default::default()
    };
    assert_eq!(exported, reference(&users, &filter, None));
}

in_both_modes!(search_and_load, writes, errors_use_the_descope_envelope, filtered_export_matches_search);

/// With `USEREXPORT_RATE_LIMIT`, a project over its rate gets 429 `E130429` with `Retry-After`;
/// another project keeps its own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_answers_429_with_retry_after() {
    let Some(app) = spawn_app_with(Mode::Embedded, &[("USEREXPORT_RATE_LIMIT", "3".to_owned())]).await else {
        return;
    };
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let resp = app.post("/v2/mgmt/user/search", &json!({})).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            limited = Some((retry, resp.json::<Value>().await.unwrap()));
            break;
        }
    }
    let (retry, body) = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert!(statuses.iter().filter(|s| **s == 200).count() >= 3, "{statuses:?}");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(body["errorCode"], "E130429");
    assert_eq!(body["errorMessage"], "API rate limit exceeded.");
    let other = app
        .client
        .get(format!("{}/v1/mgmt/license", app.base))
        .header("Authorization", app.other_auth())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "another project has its own budget");
    // The budget refills.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(app.post("/v2/mgmt/user/search", &json!({})).await.status(), 200);
    app.stop().await;
}

/// Where the xtask installed the Python with the Descope SDK, or `None` (skip) off CI.
fn python() -> Option<String> {
    match std::env::var("USEREXPORT_TEST_PYTHON") {
        Ok(v) if !v.is_empty() => Some(v),
        _ if services_required() => panic!("USEREXPORT_TEST_PYTHON is not set; run `cargo xtask test`"),
        _ => {
            eprintln!("skipping: USEREXPORT_TEST_PYTHON is not set; run `cargo xtask test` to install the SDKs");
            None
        }
    }
}

/// Runs `tests/sdk/descope_python.py <scenario>` against `app` with `fixture`.
async fn run_script(python: String, scenario: &str, app: &TestApp, fixture: Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&fixture).unwrap()).unwrap();
    let mut cmd = std::process::Command::new(python);
    cmd.args(["tests/sdk/descope_python.py", scenario]);
    run_sdk_script(cmd, app, file.path()).await;
}

/// The SDK pages through 20k users (no duplicate, none missing), searches with filters, loads,
/// creates and batch-creates, and sees Descope's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_search_load_and_create() {
    let Some(python) = python() else { return };
    let Some(app) = spawn_app(Mode::Embedded).await else { return };
    let users = app.seed(63, 20_000).await;
    let ids = |f: &UserFilter| reference(&users, f, None);
    let all = UserFilter { test_users: TestUsers::Include, ..Default::default() };
    let filtered = UserFilter {
        statuses: vec![UserStatus::Enabled, UserStatus::Invited],
        tenant_ids: vec!["T-initech".into()],
        custom_attributes: json!({"plan": ["pro", "team"]}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let sample = users.iter().find(|u| !u.test).unwrap();
    let fixture = json!({
        "project_id": app.project.as_str(), "management_key": app.key,
        "all_ids": ids(&all), "real_ids": ids(&UserFilter::default()), "filtered_ids": ids(&filtered),
        "test_ids": ids(&UserFilter { test_users: TestUsers::Only, ..Default::default() }),
        "sample": sample.descope_user(),
    });
    run_script(python, "basic", &app, fixture).await;
    app.stop().await;
}

/// On a 100k-user project (Postgres, Redis, S3): the filtered CSV export (native API) and the SDK's
/// `search_all` with the same filters return the same users, user for user, in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_search_matches_a_filtered_100k_export() {
    let Some(python) = python() else { return };
    let Some(app) = spawn_app(Mode::Production).await else { return };
    app.seed(64, 100_000).await;
    let fixture = json!({"project_id": app.project.as_str(), "management_key": app.key});
    run_script(python, "export", &app, fixture).await;
    app.stop().await;
}
