//! Bad requests across all dialects get the right status and the right dialect's envelope, create
//! nothing, and leave the server serving: one table of hostile requests (types, unknown fields,
//! pointers, huge arrays, 11 MB bodies, invalid UTF-8, content types, forged / expired /
//! wrong-audience credentials, other projects' ids).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Mode, TestApp, spawn_app};

/// Which credentials a case sends.
#[derive(Clone)]
enum Auth {
    /// The main project's management key.
    Project,
    /// No `Authorization` header.
    Missing,
    /// This exact header value.
    Raw(String),
}

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// Authgear `error.reason`, native `code`, Auth0 / Descope `errorCode`.
    code: &'static str,
    auth: Auth,
}

fn case(name: &'static str, path: &'static str, body: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        path,
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status,
        code,
        auth: Auth::Project,
    }
}

/// A case with other credentials (and a valid body).
fn auth_case(name: &'static str, path: &'static str, auth: Auth, code: &'static str) -> Case {
    let body = if path == DESCOPE_SEARCH { "{}" } else { "{\"format\":\"csv\"}" };
    Case { auth, ..case(name, path, body, 401, code) }
}

const AG: &str = "/_api/admin/users/export";
const NATIVE: &str = "/v1/exports";
const AUTH0: &str = "/api/v2/jobs/users-exports";
const DESCOPE_SEARCH: &str = "/v2/mgmt/user/search";
const DESCOPE_CREATE: &str = "/v1/mgmt/user/create";
const DESCOPE_BATCH: &str = "/v1/mgmt/user/create/batch";

/// Credentials that must all be refused: forged, expired and wrong-audience JWTs, a wrong key, and
/// another project's key paired with this project's id.
struct BadCredentials {
    forged: String,
    expired: String,
    wrong_audience: String,
    wrong_key: String,
    mixed: String,
}

async fn bad_credentials(app: &TestApp) -> BadCredentials {
    let (kid, pem, jwk) = userexport_api::auth::generate_signing_key().unwrap();
    app.components.store.add_signing_key(&app.project, &kid, &jwk).await.unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let header = jsonwebtoken::Header {
        kid: Some(kid.as_str().to_owned()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256)
    };
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &header,
        &json!({"aud": app.project.as_str(), "iat": now - 7200, "exp": now - 3600, "iss": "userexport"}),
        &key,
    )
    .unwrap();
    // Signed with this project's key, but for the other project (whose keys do not include it).
    let wrong_audience =
        userexport_api::auth::mint_token(&app.other_project, &kid, &pem, Duration::from_secs(600)).unwrap();
    BadCredentials {
        forged: "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImtleV94In0.eyJhdWQiOiJQIn0.c2lnbmF0dXJl".to_owned(),
        expired: format!("Bearer {expired}"),
        wrong_audience: format!("Bearer {wrong_audience}"),
        wrong_key: format!("Bearer {}:{}", app.project, "K".repeat(41)),
        mixed: format!("Bearer {}:{}", app.project, app.other_key),
    }
}

fn cases(creds: &BadCredentials) -> Vec<Case> {
    let big = format!("{{\"format\":\"csv\",\"pad\":\"{}\"}}", "x".repeat(11 * 1024 * 1024));
    let many_fields: Vec<String> = (0..2000).map(|i| format!("{{\"pointer\":\"/f{i}\"}}")).collect();
    let many = format!("{{\"format\":\"csv\",\"csv\":{{\"fields\":[{}]}}}}", many_fields.join(","));
    vec![
        Case {
            name: "authgear no content type",
            path: AG,
            content_type: None,
            body: b"{\"format\":\"csv\"}".to_vec(),
            status: 415,
            code: "UnsupportedMediaType",
            auth: Auth::Project,
        },
        Case {
            name: "authgear text/plain",
            path: AG,
            content_type: Some("text/plain"),
            body: b"{\"format\":\"csv\"}".to_vec(),
            status: 415,
            code: "UnsupportedMediaType",
            auth: Auth::Project,
        },
        case("authgear malformed json", AG, "{\"format\":", 400, "InvalidJSON"),
        Case {
            name: "authgear invalid utf-8",
            path: AG,
            content_type: Some("application/json"),
            body: b"{\"format\":\"\xff\xfe\"}".to_vec(),
            status: 400,
            code: "InvalidJSON",
            auth: Auth::Project,
        },
        case("authgear missing format", AG, "{}", 400, "ValidationFailed"),
        case("authgear unknown format", AG, "{\"format\":\"xml\"}", 400, "ValidationFailed"),
        case("authgear format wrong type", AG, "{\"format\":1}", 400, "ValidationFailed"),
        case("authgear unknown top-level key", AG, "{\"format\":\"csv\",\"bogus\":1}", 400, "ValidationFailed"),
        case("authgear empty fields", AG, "{\"format\":\"csv\",\"csv\":{\"fields\":[]}}", 400, "ValidationFailed"),
        case(
            "authgear pointer without slash",
            AG,
            "{\"format\":\"csv\",\"csv\":{\"fields\":[{\"pointer\":\"sub\"}]}}",
            400,
            "ValidationFailed",
        ),
        case(
            "authgear bad escape",
            AG,
            "{\"format\":\"csv\",\"csv\":{\"fields\":[{\"pointer\":\"/a~2\"}]}}",
            400,
            "ValidationFailed",
        ),
        case(
            "authgear missing pointer",
            AG,
            "{\"format\":\"csv\",\"csv\":{\"fields\":[{\"field_name\":\"x\"}]}}",
            400,
            "ValidationFailed",
        ),
        case(
            "authgear empty field_name",
            AG,
            "{\"format\":\"csv\",\"csv\":{\"fields\":[{\"pointer\":\"/sub\",\"field_name\":\"\"}]}}",
            400,
            "ValidationFailed",
        ),
        case(
            "authgear duplicate names",
            AG,
            "{\"format\":\"csv\",\"csv\":{\"fields\":[{\"pointer\":\"/a/b\"},{\"pointer\":\"/a.b\"}]}}",
            400,
            "UserExportNonUniqueFieldNames",
        ),
        case(
            "authgear duplicate names for ndjson",
            AG,
            "{\"format\":\"ndjson\",\"csv\":{\"fields\":[{\"pointer\":\"/sub\"},{\"pointer\":\"/sub\"}]}}",
            400,
            "UserExportNonUniqueFieldNames",
        ),
        case(
            "authgear unknown filter key",
            AG,
            "{\"format\":\"csv\",\"filters\":{\"nope\":1}}",
            400,
            "ValidationFailed",
        ),
        case("authgear body is an array", AG, "[]", 400, "ValidationFailed"),
        Case {
            name: "authgear too many fields",
            path: AG,
            content_type: Some("application/json"),
            body: many.into_bytes(),
            status: 400,
            code: "ValidationFailed",
            auth: Auth::Project,
        },
        Case {
            name: "authgear 11 MB body",
            path: AG,
            content_type: Some("application/json"),
            body: big.clone().into_bytes(),
            status: 413,
            code: "JSONTooLarge",
            auth: Auth::Project,
        },
        Case {
            name: "native text/plain",
            path: NATIVE,
            content_type: Some("text/plain"),
            body: b"{\"format\":\"csv\"}".to_vec(),
            status: 415,
            code: "unsupported_media_type",
            auth: Auth::Project,
        },
        case("native malformed json", NATIVE, "{", 400, "malformed_json"),
        case("native unknown key", NATIVE, "{\"format\":\"csv\",\"bogus\":true}", 400, "invalid_request_body"),
        case("native unknown view", NATIVE, "{\"format\":\"csv\",\"view\":\"okta\"}", 400, "invalid_request_body"),
        case("native gzip wrong type", NATIVE, "{\"format\":\"csv\",\"gzip\":\"yes\"}", 400, "invalid_request_body"),
        case(
            "native bad pointer",
            NATIVE,
            "{\"format\":\"csv\",\"fields\":[{\"pointer\":\"email\"}]}",
            400,
            "invalid_field_pointer",
        ),
        case(
            "native duplicate names",
            NATIVE,
            "{\"format\":\"csv\",\"fields\":[{\"pointer\":\"/a\",\"name\":\"x\"},{\"pointer\":\"/b\",\"name\":\"x\"}]}",
            400,
            "non_unique_field_names",
        ),
        case(
            "native bad status filter",
            NATIVE,
            "{\"format\":\"csv\",\"filters\":{\"statuses\":[\"zombie\"]}}",
            400,
            "invalid_request_body",
        ),
        Case {
            name: "native 11 MB body",
            path: NATIVE,
            content_type: Some("application/json"),
            body: big.into_bytes(),
            status: 413,
            code: "payload_too_large",
            auth: Auth::Project,
        },
        // Auth0.
        case("auth0 malformed json", AUTH0, "{\"format\":", 400, "invalid_body"),
        case("auth0 unknown key", AUTH0, "{\"format\":\"csv\",\"bogus\":1}", 400, "invalid_body"),
        case("auth0 unknown format", AUTH0, "{\"format\":\"xml\"}", 400, "invalid_body"),
        case("auth0 fields not an array", AUTH0, "{\"format\":\"csv\",\"fields\":{}}", 400, "invalid_body"),
        case("auth0 field without name", AUTH0, "{\"format\":\"csv\",\"fields\":[{}]}", 400, "invalid_body"),
        case("auth0 limit wrong type", AUTH0, "{\"format\":\"csv\",\"limit\":\"ten\"}", 400, "invalid_body"),
        Case {
            name: "auth0 form body",
            path: AUTH0,
            content_type: Some("application/x-www-form-urlencoded"),
            body: b"format=csv".to_vec(),
            status: 415,
            code: "invalid_body",
            auth: Auth::Project,
        },
        // Descope.
        case("descope malformed json", DESCOPE_SEARCH, "{\"limit\":", 400, "E011001"),
        case("descope body is a string", DESCOPE_SEARCH, "\"all\"", 400, "E011001"),
        case("descope negative limit", DESCOPE_SEARCH, "{\"limit\":-1}", 400, "E011003"),
        case("descope unknown status", DESCOPE_SEARCH, "{\"statuses\":[\"zombie\"]}", 400, "E011003"),
        case("descope bad sort field", DESCOPE_SEARCH, "{\"sort\":[{\"field\":\"shoeSize\"}]}", 400, "E011003"),
        case("descope unsupported filter", DESCOPE_SEARCH, "{\"tenantRoleNames\":{\"t\":{}}}", 400, "E011003"),
        case("descope time not a number", DESCOPE_SEARCH, "{\"fromCreatedTime\":\"today\"}", 400, "E011003"),
        Case {
            name: "descope 1001 user ids",
            path: DESCOPE_SEARCH,
            content_type: Some("application/json"),
            body: json!({"userIds": vec!["U"; 1001]}).to_string().into_bytes(),
            status: 400,
            code: "E011003",
            auth: Auth::Project,
        },
        Case {
            name: "descope invalid utf-8",
            path: DESCOPE_SEARCH,
            content_type: Some("application/json"),
            body: b"{\"text\":\"\xff\"}".to_vec(),
            status: 400,
            code: "E011001",
            auth: Auth::Project,
        },
        case("descope create without login id", DESCOPE_CREATE, "{\"email\":\"a@b.c\"}", 400, "E011002"),
        case("descope create bad email", DESCOPE_CREATE, "{\"loginId\":\"x\",\"email\":\"no\"}", 400, "E011003"),
        case("descope create bad phone", DESCOPE_CREATE, "{\"loginId\":\"x\",\"phone\":\"12\"}", 400, "E011003"),
        case("descope batch not an array", DESCOPE_BATCH, "{\"users\":{}}", 400, "E011002"),
        case(
            "descope batch repeats a login id",
            DESCOPE_BATCH,
            "{\"users\":[{\"loginId\":\"d\"},{\"loginId\":\"d\"}]}",
            409,
            "E011409",
        ),
        // Credentials, every dialect.
        auth_case("authgear no credentials", AG, Auth::Missing, "Unauthorized"),
        auth_case("authgear forged jwt", AG, Auth::Raw(creds.forged.clone()), "Unauthorized"),
        auth_case("authgear expired jwt", AG, Auth::Raw(creds.expired.clone()), "Unauthorized"),
        auth_case("authgear wrong-audience jwt", AG, Auth::Raw(creds.wrong_audience.clone()), "Unauthorized"),
        auth_case("native wrong key", NATIVE, Auth::Raw(creds.wrong_key.clone()), "unauthorized"),
        auth_case("native other project's key", NATIVE, Auth::Raw(creds.mixed.clone()), "unauthorized"),
        auth_case("native basic auth", NATIVE, Auth::Raw("Basic dXNlcjpwYXNz".to_owned()), "unauthorized"),
        auth_case("auth0 no credentials", AUTH0, Auth::Missing, "invalid_token"),
        auth_case("auth0 expired jwt", AUTH0, Auth::Raw(creds.expired.clone()), "invalid_token"),
        auth_case("descope wrong key", DESCOPE_SEARCH, Auth::Raw(creds.wrong_key.clone()), "E011401"),
        auth_case("descope forged jwt", DESCOPE_SEARCH, Auth::Raw(creds.forged.clone()), "E011401"),
    ]
}

/// The error code of `body` in the envelope of `path`'s dialect.
fn error_code<'a>(path: &str, body: &'a Value) -> &'a Value {
    if path == AG {
        &body["error"]["reason"]
    } else if path == NATIVE {
        &body["code"]
    } else {
        &body["errorCode"]
    }
}

async fn run(mode: Mode) {
    let Some(app) = spawn_app(mode).await else { return };
    let creds = bad_credentials(&app).await;
    let cases = cases(&creds);
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for c in cases {
        let mut req = app.client.post(format!("{}{}", app.base, c.path)).body(c.body.clone());
        match &c.auth {
            Auth::Project => req = req.header("Authorization", app.auth()),
            Auth::Missing => {}
            Auth::Raw(v) => req = req.header("Authorization", v.as_str()),
        }
        if let Some(ct) = c.content_type {
            req = req.header("Content-Type", ct);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{}: request failed: {e}", c.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: body is not JSON: {text}", c.name));
        assert_eq!(error_code(c.path, &body), c.code, "{}: {text}", c.name);
        if c.path == AG {
            assert_eq!(body["error"]["code"], c.status, "{}", c.name);
        } else if c.path == AUTH0 {
            assert_eq!(body["statusCode"], c.status, "{}: {text}", c.name);
            assert!(body["message"].is_string() && body["error"].is_string(), "{}: {text}", c.name);
        } else if c.path != NATIVE {
            assert!(body["errorDescription"].is_string() && body["errorMessage"].is_string(), "{}: {text}", c.name);
        } else {
            assert!(
                body["message"].is_string() && body["type"].is_string() && body["link"].is_string(),
                "{}: {text}",
                c.name
            );
        }
    }
    assert_eq!(app.task_count().await, 0, "bad requests created tasks");
    let users = app.post(DESCOPE_SEARCH, &json!({"withTestUser": true})).await.json::<Value>().await.unwrap();
    assert_eq!(users["total"], 0, "bad requests created users: {users}");
    // Another project's task is not found, in every dialect.
    let theirs = app
        .client
        .post(format!("{}{NATIVE}", app.base))
        .header("Authorization", app.other_auth())
        .json(&json!({"format": "csv"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let id = theirs["id"].as_str().unwrap();
    for path in [format!("{AG}/{id}"), format!("{NATIVE}/{id}")] {
        assert_eq!(app.get(&path).await.status(), 404, "{path}");
    }
    // Unknown and malformed ids, other routes.
    for path in [
        "/_api/admin/users/export/userexport_00000000000000000000000000000000",
        "/_api/admin/users/export/nope",
        "/v1/exports/nope",
        "/v1/exports/userexport_00000000000000000000000000000000",
    ] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    let r = app
        .client
        .post(format!("{}/v1/exports/nope/cancel", app.base))
        .header("Authorization", app.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app.get("/v1/exports?bogus=1").await;
    assert_eq!(r.status(), 400);
    let r = app.get("/v1/exports?limit=0").await;
    assert_eq!(r.status(), 400);
    // Still serving.
    assert_eq!(app.client.get(format!("{}/healthz", app.base)).send().await.unwrap().status(), 200);
    let ok = app.post(AG, &serde_json::json!({"format": "csv"})).await;
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_the_right_envelope_and_create_nothing() {
    run(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_the_right_envelope_and_create_nothing_in_production() {
    run(Mode::Production).await;
}
