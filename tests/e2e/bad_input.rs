//! Bad requests get the right status and the right dialect's envelope, create nothing, and leave
//! the server serving.

use serde_json::Value;

use crate::helpers::{Mode, spawn_app};

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// Authgear `error.reason` or native `code`.
    code: &'static str,
}

fn case(name: &'static str, path: &'static str, body: &str, status: u16, code: &'static str) -> Case {
    Case { name, path, content_type: Some("application/json"), body: body.as_bytes().to_vec(), status, code }
}

const AG: &str = "/_api/admin/users/export";
const NATIVE: &str = "/v1/exports";

fn cases() -> Vec<Case> {
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
        },
        Case {
            name: "authgear text/plain",
            path: AG,
            content_type: Some("text/plain"),
            body: b"{\"format\":\"csv\"}".to_vec(),
            status: 415,
            code: "UnsupportedMediaType",
        },
        case("authgear malformed json", AG, "{\"format\":", 400, "InvalidJSON"),
        Case {
            name: "authgear invalid utf-8",
            path: AG,
            content_type: Some("application/json"),
            body: b"{\"format\":\"\xff\xfe\"}".to_vec(),
            status: 400,
            code: "InvalidJSON",
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
        },
        Case {
            name: "authgear 11 MB body",
            path: AG,
            content_type: Some("application/json"),
            body: big.clone().into_bytes(),
            status: 413,
            code: "JSONTooLarge",
        },
        Case {
            name: "native text/plain",
            path: NATIVE,
            content_type: Some("text/plain"),
            body: b"{\"format\":\"csv\"}".to_vec(),
            status: 415,
            code: "unsupported_media_type",
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
        },
    ]
}

async fn run(mode: Mode) {
    let Some(app) = spawn_app(mode).await else { return };
    for c in cases() {
        let mut req =
            app.client.post(format!("{}{}", app.base, c.path)).header("Authorization", app.auth()).body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("Content-Type", ct);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{}: request failed: {e}", c.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: body is not JSON: {text}", c.name));
        let code = if c.path == AG { &body["error"]["reason"] } else { &body["code"] };
        assert_eq!(code, c.code, "{}: {text}", c.name);
        if c.path == AG {
            assert_eq!(body["error"]["code"], c.status, "{}", c.name);
        } else {
            assert!(
                body["message"].is_string() && body["type"].is_string() && body["link"].is_string(),
                "{}: {text}",
                c.name
            );
        }
    }
    assert_eq!(app.task_count().await, 0, "bad requests created tasks");
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
