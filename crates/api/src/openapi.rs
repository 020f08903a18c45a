//! The OpenAPI 3.1 document of every route (`GET /openapi.json`) and Swagger UI (`GET /docs`).
//!
//! Handlers carry `#[utoipa::path]` next to their code (operation ids are `<dialect>_<action>`,
//! unique across the document); [`ApiDoc`] lists them. The wire shapes, which handlers build as
//! JSON values, are described by the documentation types in [`schemas`]. The Descope dialect's
//! operations are described here with the builder API ([`descope_paths`]) until its handlers carry
//! their own annotations.
//!
//! Swagger UI is served from assets committed under `crates/api/assets/swagger-ui` (the
//! `swagger-ui-dist` npm package, see its README there) and compiled into the binary with
//! `include_bytes!`: nothing is downloaded at build or run time, and the page's
//! `Content-Security-Policy` lets it load nothing but this server's own files.
//!
//! The tests below hold the document and the router together: every route recorded by
//! [`crate::routes::Routes`] must be a documented operation and every documented operation a
//! registered route, and the document must be valid OpenAPI 3.x (unique operation ids, every
//! `$ref` resolving, path parameters declared).

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use userexport_domain::Code;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::{ApiDialect, ApiError};
use crate::routes::Routes;

/// Registers `GET /openapi.json`, `GET /docs` and `GET /docs/{asset}`.
pub fn configure(routes: &mut Routes<'_>) {
    routes.get("/openapi.json", openapi_json).get("/docs", docs_page).get("/docs/{asset}", docs_asset);
}

/// Security scheme: `Authorization: Bearer <project_id>:<management_key>`.
pub const MANAGEMENT_KEY: &str = "management_key";
/// Security scheme: `Authorization: Bearer <RS256 admin JWT>` (`userexport token mint`).
pub const ADMIN_JWT: &str = "admin_jwt";
/// Security scheme: `Authorization: Bearer <access token from POST /oauth/token>` (Auth0 routes).
pub const AUTH0_ACCESS_TOKEN: &str = "auth0_access_token";

/// The document's operations and shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "userexport",
        description = "Asynchronous user exports speaking the Authgear, Auth0 and Descope APIs, plus a native API.\n\n\
            Every dialect answers errors in its own envelope. Credentials: `Authorization: Bearer \
            <project_id>:<management_key>` or an RS256 admin JWT on every export route; Auth0 routes \
            also accept access tokens from `POST /oauth/token`.",
        license(name = "Apache-2.0")
    ),
    paths(
        crate::ops::healthz,
        crate::ops::readyz,
        crate::ops::metrics_text,
        openapi_json,
        docs_page,
        docs_asset,
        crate::dialect::native::create,
        crate::dialect::native::list,
        crate::dialect::native::get,
        crate::dialect::native::cancel,
        crate::dialect::authgear::create,
        crate::dialect::authgear::get,
        crate::dialect::auth0::create,
        crate::dialect::auth0::get,
        crate::dialect::auth0::errors,
        crate::dialect::auth0::token,
        crate::downloads::download,
        crate::downloads::download_head,
        crate::console::console_page,
        crate::console::console_asset,
    ),
    components(schemas(
        schemas::NativeError,
        schemas::AuthgearErrorEnvelope,
        schemas::Auth0Error,
        schemas::OAuthError,
        schemas::DescopeError,
        schemas::DescopeSearchRequest,
        schemas::DescopeUsersResponse,
        schemas::DescopeUserResponse,
        schemas::DescopeLoadUsersRequest,
        schemas::DescopeCreateUserRequest,
        schemas::DescopeBatchCreateRequest,
        schemas::DescopeBatchCreateResponse,
        schemas::DescopeUpdateStatusRequest,
        schemas::DescopeRolesRequest,
        schemas::DescopeLicense,
    )),
    modifiers(&SecuritySchemes, &DescopeOperations),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this documentation."),
        (name = "native", description = "The native export API (`/v1/exports`)."),
        (name = "authgear", description = "Authgear's Admin User Export API (`/_api/admin/users/export`)."),
        (name = "auth0", description = "Auth0's bulk user export jobs (`/api/v2/jobs`) and `/oauth/token`."),
        (name = "descope", description = "Descope's user management API (`/v1/mgmt`, `/v2/mgmt`)."),
        (name = "downloads", description = "Signed local-file downloads (embedded mode)."),
        (name = "console", description = "The web console (`/console`): search users, export them, follow progress, download."),
    )
)]
pub struct ApiDoc;

/// Adds the three bearer credential kinds.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str, format: Option<&str>| {
            let mut http = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description));
            if let Some(format) = format {
                http = http.bearer_format(format);
            }
            SecurityScheme::Http(http.build())
        };
        components.add_security_scheme(
            MANAGEMENT_KEY,
            bearer("`<project_id>:<management_key>` from `userexport project create`.", None),
        );
        components.add_security_scheme(
            ADMIN_JWT,
            bearer("An RS256 JWT whose `kid` is registered for the project its `aud` names.", Some("JWT")),
        );
        components.add_security_scheme(
            AUTH0_ACCESS_TOKEN,
            bearer("An access token from `POST /oauth/token` (Auth0 routes only).", Some("JWT")),
        );
    }
}

/// One documented Descope operation.
struct DescopeOp {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    response: &'static str,
}

const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    response: &'static str,
) -> DescopeOp {
    DescopeOp { method, path, id, summary, request, response }
}

/// The Descope routes, in the order they are documented.
const DESCOPE_OPERATIONS: &[DescopeOp] = &[
    op(
        "POST",
        "/v1/mgmt/user/search",
        "descope_search_users_v1",
        "Search users (v1, deprecated)",
        Some("DescopeSearchRequest"),
        "DescopeUsersResponse",
    ),
    op(
        "POST",
        "/v2/mgmt/user/search",
        "descope_search_users",
        "Search users",
        Some("DescopeSearchRequest"),
        "DescopeUsersResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/user/search/test",
        "descope_search_test_users_v1",
        "Search test users (v1)",
        Some("DescopeSearchRequest"),
        "DescopeUsersResponse",
    ),
    op(
        "POST",
        "/v2/mgmt/user/search/test",
        "descope_search_test_users",
        "Search test users",
        Some("DescopeSearchRequest"),
        "DescopeUsersResponse",
    ),
    op(
        "GET",
        "/v1/mgmt/user",
        "descope_load_user",
        "Load one user by login id or user id",
        None,
        "DescopeUserResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/users/load",
        "descope_load_users",
        "Load users by user id",
        Some("DescopeLoadUsersRequest"),
        "DescopeUsersResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/user/create",
        "descope_create_user",
        "Create a user",
        Some("DescopeCreateUserRequest"),
        "DescopeUserResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/user/create/test",
        "descope_create_test_user",
        "Create a test user",
        Some("DescopeCreateUserRequest"),
        "DescopeUserResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/user/create/batch",
        "descope_create_users_batch",
        "Create users in one batch (all or nothing)",
        Some("DescopeBatchCreateRequest"),
        "DescopeBatchCreateResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/user/update/status",
        "descope_update_user_status",
        "Enable or disable a user",
        Some("DescopeUpdateStatusRequest"),
        "DescopeUserResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/user/update/role/set",
        "descope_set_user_roles",
        "Replace a user's roles",
        Some("DescopeRolesRequest"),
        "DescopeUserResponse",
    ),
    op(
        "POST",
        "/v2/mgmt/user/update/role/add",
        "descope_add_user_roles",
        "Add roles to a user",
        Some("DescopeRolesRequest"),
        "DescopeUserResponse",
    ),
    op(
        "POST",
        "/v1/mgmt/user/update/role/remove",
        "descope_remove_user_roles",
        "Remove roles from a user",
        Some("DescopeRolesRequest"),
        "DescopeUserResponse",
    ),
    op("GET", "/v1/mgmt/license", "descope_license", "License (the SDKs' start-up call)", None, "DescopeLicense"),
];

fn json_content(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build()
}

/// One documented Descope operation.
fn descope_operation(id: &str, summary: &str, request: Option<&str>, response: &str, path: &str) -> Operation {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", json_content("DescopeError"))
            .build()
    };
    let mut op = OperationBuilder::new()
        .tag("descope")
        .operation_id(Some(id))
        .summary(Some(summary))
        .response(
            "200",
            ResponseBuilder::new().description("Success").content("application/json", json_content(response)).build(),
        )
        .response("400", error("Invalid request (`E011001` malformed, `E011002` missing argument, `E011003` invalid)"))
        .response("401", error("Missing or invalid management key (`E011401`)"))
        .response("429", error("Rate limited (`E130429`, with `Retry-After`)"))
        .response("500", error("Internal error (`E000500`)"))
        .security(SecurityRequirement::new(MANAGEMENT_KEY, Vec::<String>::new()))
        .security(SecurityRequirement::new(ADMIN_JWT, Vec::<String>::new()));
    if let Some(request) = request {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", json_content(request))
                .build(),
        ));
    }
    if path == "/v1/mgmt/user" {
        op = op.response("404", error("No such user (`E112102`)"));
        for (name, description) in [("loginId", "A login id (also matched against user ids)"), ("userId", "A user id")]
        {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(description))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
    }
    op.build()
}

/// Adds the Descope operations ([`DESCOPE_OPERATIONS`]).
struct DescopeOperations;

impl Modify for DescopeOperations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for op in DESCOPE_OPERATIONS {
            let method = if op.method == "GET" { HttpMethod::Get } else { HttpMethod::Post };
            openapi.paths.add_path_operation(
                op.path,
                vec![method],
                descope_operation(op.id, op.summary, op.request, op.response, op.path),
            );
        }
    }
}

/// The Descope operations the document describes, as `(method, path)`.
pub fn descope_paths() -> impl Iterator<Item = (&'static str, &'static str)> {
    DESCOPE_OPERATIONS.iter().map(|op| (op.method, op.path))
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as JSON, rendered once.
pub fn document_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| serde_json::to_vec(&document()).expect("the OpenAPI document serializes"))
}

/// The OpenAPI document of this server.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document_json())
}

/// The Swagger UI version shipped under `assets/swagger-ui` (npm `swagger-ui-dist`).
pub const SWAGGER_UI_VERSION: &str = "5.35.0";

const DOCS_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>userexport API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/swagger-initializer.js"></script>
</body>
</html>
"#;

/// Points Swagger UI at `/openapi.json` (relative, so a path prefix in front of the server works)
/// and turns off the online validator badge, which would call a public server.
const DOCS_INITIALIZER: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
"##;

/// Only this server's own files: no CDN, no fonts, no validator.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Swagger UI for this server's OpenAPI document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    operation_id = "docs_page",
    responses((status = 200, description = "The Swagger UI page", content_type = "text/html"))
)]
async fn docs_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, DOCS_CSP))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(DOCS_HTML)
}

/// The files `/docs` loads: `(name, content type, bytes)`.
const DOCS_ASSETS: &[(&str, &str, &[u8])] = &[
    ("swagger-ui.css", "text/css; charset=utf-8", include_bytes!("../assets/swagger-ui/swagger-ui.css")),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    ("swagger-initializer.js", "text/javascript; charset=utf-8", DOCS_INITIALIZER.as_bytes()),
];

/// A static file of the Swagger UI page.
#[utoipa::path(
    get,
    path = "/docs/{asset}",
    tag = "operations",
    operation_id = "docs_asset",
    params(("asset" = String, Path, description = "`swagger-ui.css`, `swagger-ui-bundle.js` or `swagger-initializer.js`")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = schemas::NativeError),
    )
)]
async fn docs_asset(asset: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some((_, content_type, bytes)) = DOCS_ASSETS.iter().find(|(name, ..)| *name == asset.as_str()) else {
        return Err(ApiError::new(ApiDialect::Native, Code::RouteNotFound));
    };
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(*bytes))
}

/// Documentation types: the JSON shapes of requests, responses and error envelopes, as the
/// handlers build and parse them. Nothing constructs these; they exist for the OpenAPI document.
pub mod schemas {
    use serde::Serialize;
    use serde_json::Value;
    use utoipa::ToSchema;

    // ---------------------------------------------------------------------------------------
    // Error envelopes

    /// Native error envelope (also operations and downloads).
    #[derive(Serialize, ToSchema)]
    pub struct NativeError {
        /// Human-readable message.
        pub message: String,
        /// Stable error code, e.g. `task_not_found` (see docs/errors.md).
        pub code: String,
        /// Error class, e.g. `invalid_request_error`.
        #[serde(rename = "type")]
        pub error_type: String,
        /// Documentation link of the code.
        pub link: String,
    }

    /// Authgear's error object.
    #[derive(Serialize, ToSchema)]
    pub struct AuthgearError {
        /// E.g. `Invalid`, `NotFound`.
        pub name: String,
        /// E.g. `ValidationFailed`, `TaskNotFound`.
        pub reason: String,
        /// Human-readable message.
        pub message: String,
        /// The HTTP status.
        pub code: u16,
        /// Details, e.g. `causes` (`[{location, kind, details}]`) or `field_names`.
        #[schema(value_type = Option<Object>)]
        pub info: Option<Value>,
    }

    /// Authgear's error envelope.
    #[derive(Serialize, ToSchema)]
    pub struct AuthgearErrorEnvelope {
        /// The error.
        pub error: AuthgearError,
    }

    /// Auth0's Management API error envelope.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Auth0Error {
        /// The HTTP status.
        pub status_code: u16,
        /// The HTTP reason phrase.
        pub error: String,
        /// Human-readable message.
        pub message: String,
        /// E.g. `invalid_body`, `inexistent_job`, `invalid_uri`.
        pub error_code: String,
    }

    /// An OAuth 2 error (`POST /oauth/token`).
    #[derive(Serialize, ToSchema)]
    pub struct OAuthError {
        /// `invalid_request`, `access_denied`, `unsupported_grant_type`.
        pub error: String,
        /// Human-readable description.
        pub error_description: String,
    }

    /// Descope's error envelope.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeError {
        /// E.g. `E011003` (validation), `E112102` (user not found), `E130429` (rate limited).
        pub error_code: String,
        /// What the code means.
        pub error_description: String,
        /// This occurrence's message.
        pub error_message: String,
    }

    // ---------------------------------------------------------------------------------------
    // Shared

    /// Output file format.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum ExportFormat {
        /// Comma-separated values with a header row.
        Csv,
        /// One JSON object per line.
        Ndjson,
    }

    /// Which vendor's user shape field pointers see.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum UserView {
        /// Authgear's export record (default).
        Authgear,
        /// Auth0's user profile.
        Auth0,
        /// Descope's user object.
        Descope,
    }

    /// Account status.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum UserStatus {
        /// Active.
        Enabled,
        /// Blocked.
        Disabled,
        /// Invited, never signed in.
        Invited,
        /// Validity ended.
        Expired,
    }

    /// Which test users an export sees.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum TestUsers {
        /// Real users only (default).
        Exclude,
        /// Real and test users.
        Include,
        /// Test users only.
        Only,
    }

    /// Which users to export; every predicate is optional and they all must hold. List
    /// predicates match any element; time ranges are inclusive.
    #[derive(Serialize, ToSchema)]
    pub struct UserFilter {
        /// User ids.
        pub user_ids: Option<Vec<String>>,
        /// Login ids.
        pub login_ids: Option<Vec<String>>,
        /// Email addresses (case-insensitive).
        pub emails: Option<Vec<String>>,
        /// Phone numbers.
        pub phones: Option<Vec<String>>,
        /// Member of at least one of these tenants.
        pub tenant_ids: Option<Vec<String>>,
        /// Has at least one of these roles.
        pub role_names: Option<Vec<String>>,
        /// In one of these statuses.
        pub statuses: Option<Vec<UserStatus>>,
        /// May use one of these SSO apps.
        pub sso_app_ids: Option<Vec<String>>,
        /// Case-insensitive substring of user id, login ids, name, email or phone.
        pub text: Option<String>,
        /// Custom attribute equality; an array value means "any of".
        #[schema(value_type = Option<Object>)]
        pub custom_attributes: Option<Value>,
        /// Created at or after (RFC 3339).
        #[schema(format = DateTime)]
        pub created_from: Option<String>,
        /// Created at or before (RFC 3339).
        #[schema(format = DateTime)]
        pub created_to: Option<String>,
        /// Modified at or after (RFC 3339).
        #[schema(format = DateTime)]
        pub modified_from: Option<String>,
        /// Modified at or before (RFC 3339).
        #[schema(format = DateTime)]
        pub modified_to: Option<String>,
        /// Only users that sign in through SSO.
        pub sso_only: Option<bool>,
        /// Test-user handling (default `exclude`).
        pub test_users: Option<TestUsers>,
    }

    /// The error stored on a failed task.
    #[derive(Serialize, ToSchema)]
    pub struct TaskError {
        /// Human-readable message.
        pub message: String,
        /// Stable error code, e.g. `export_failed`.
        pub code: String,
        /// Error class.
        #[serde(rename = "type")]
        pub error_type: String,
        /// Documentation link.
        pub link: String,
    }

    // ---------------------------------------------------------------------------------------
    // Native

    /// One requested field of a native export.
    #[derive(Serialize, ToSchema)]
    pub struct NativeField {
        /// RFC 6901 JSON pointer into the user view, e.g. `/email`.
        pub pointer: String,
        /// Column header / key (default: derived from the pointer).
        pub name: Option<String>,
    }

    /// `POST /v1/exports` body.
    #[derive(Serialize, ToSchema)]
    pub struct NativeCreateRequest {
        /// File format.
        pub format: ExportFormat,
        /// Fields to export (default: the view's default fields); at least one when given.
        pub fields: Option<Vec<NativeField>>,
        /// Which users to export.
        pub filters: Option<UserFilter>,
        /// User shape the pointers see (default `authgear`).
        pub view: Option<UserView>,
        /// Gzip the file (default false).
        pub gzip: Option<bool>,
        /// Prefix formula-like CSV cells with `'` (default true).
        pub formula_guard: Option<bool>,
    }

    /// Native task status: the domain's [`TaskStatus`](userexport_domain::TaskStatus) names, taken
    /// from [`TaskStatus::ALL`](userexport_domain::TaskStatus::ALL) so the document cannot drift
    /// from the model.
    #[derive(Serialize)]
    pub struct NativeTaskStatus;

    impl utoipa::PartialSchema for NativeTaskStatus {
        fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .description(Some(
                    "pending (waiting for a worker), processing, completed (the file is ready), failed \
                     (see `error`), cancelled, expired (past retention; the file is deleted)",
                ))
                .enum_values(Some(userexport_domain::TaskStatus::ALL.map(|s| s.as_str())))
                .into()
        }
    }

    impl ToSchema for NativeTaskStatus {}

    /// A field of a native task, with its resolved name.
    #[derive(Serialize, ToSchema)]
    pub struct NativeTaskField {
        /// JSON pointer.
        pub pointer: String,
        /// Column header / key.
        pub name: String,
    }

    /// A native export task. Every key is always present; unknown values are `null`.
    #[derive(Serialize, ToSchema)]
    pub struct NativeTask {
        /// Task id (`userexport_…`).
        pub id: String,
        /// Status.
        pub status: NativeTaskStatus,
        /// Dialect the task was created through.
        pub dialect: String,
        /// File format.
        pub format: ExportFormat,
        /// User view.
        pub view: UserView,
        /// Gzipped file.
        pub gzip: bool,
        /// Formula guard on.
        pub formula_guard: bool,
        /// Exported fields.
        pub fields: Vec<NativeTaskField>,
        /// The task's filters.
        pub filters: UserFilter,
        /// Rows written so far.
        pub rows_written: u64,
        /// Rows to write, once counted.
        #[schema(required = true)]
        pub rows_total: Option<u64>,
        /// Bytes written so far.
        pub bytes_written: u64,
        /// Progress, 0–100.
        pub percentage_done: u8,
        /// Estimated seconds left while processing.
        #[schema(required = true)]
        pub time_left_seconds: Option<u64>,
        /// A cancel was requested.
        pub cancel_requested: bool,
        /// Creation time (RFC 3339).
        #[schema(format = DateTime)]
        pub created_at: String,
        /// When a worker started.
        #[schema(required = true, format = DateTime)]
        pub started_at: Option<String>,
        /// When it completed.
        #[schema(required = true, format = DateTime)]
        pub completed_at: Option<String>,
        /// When it reached a final state.
        #[schema(required = true, format = DateTime)]
        pub finished_at: Option<String>,
        /// When the file will be deleted.
        #[schema(required = true, format = DateTime)]
        pub expires_at: Option<String>,
        /// Download URL of a completed task.
        #[schema(required = true)]
        pub download_url: Option<String>,
        /// When `download_url` stops working.
        #[schema(required = true, format = DateTime)]
        pub download_url_expires_at: Option<String>,
        /// Why the task failed.
        #[schema(required = true)]
        pub error: Option<TaskError>,
    }

    /// A page of native tasks, newest first.
    #[derive(Serialize, ToSchema)]
    pub struct NativeTaskPage {
        /// The tasks.
        pub results: Vec<NativeTask>,
        /// Page size used.
        pub limit: u64,
        /// Pass as `from` for the next page; `null` on the last page.
        #[schema(required = true)]
        pub next: Option<String>,
    }

    // ---------------------------------------------------------------------------------------
    // Authgear

    /// One Authgear CSV field.
    #[derive(Serialize, ToSchema)]
    pub struct AuthgearField {
        /// JSON pointer into the Authgear export record, e.g. `/sub`.
        pub pointer: String,
        /// Column header (default: derived from the pointer).
        pub field_name: Option<String>,
    }

    /// Authgear CSV options.
    #[derive(Serialize, ToSchema)]
    pub struct AuthgearCsv {
        /// Columns (default: Authgear's default fields); at least one when given.
        pub fields: Option<Vec<AuthgearField>>,
    }

    /// `POST /_api/admin/users/export` body.
    #[derive(Serialize, ToSchema)]
    pub struct AuthgearCreateRequest {
        /// File format.
        pub format: ExportFormat,
        /// CSV columns.
        pub csv: Option<AuthgearCsv>,
        /// Which users to export (our extension).
        pub filters: Option<UserFilter>,
    }

    /// Authgear task status: `pending` covers pending and processing; `completed` every final state.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum AuthgearTaskStatus {
        /// Not finished.
        Pending,
        /// Finished (with `download_url`, or `failed_at` and `error`).
        Completed,
    }

    /// An Authgear export task.
    #[derive(Serialize, ToSchema)]
    pub struct AuthgearTask {
        /// Task id.
        pub id: String,
        /// Creation time.
        #[schema(format = DateTime)]
        pub created_at: String,
        /// Completion time of a successful export.
        #[schema(format = DateTime)]
        pub completed_at: Option<String>,
        /// Time a failed or cancelled export ended.
        #[schema(format = DateTime)]
        pub failed_at: Option<String>,
        /// Status.
        pub status: AuthgearTaskStatus,
        /// The request, as parsed.
        pub request: AuthgearCreateRequest,
        /// Download URL of a successful export.
        pub download_url: Option<String>,
        /// Why it failed.
        pub error: Option<AuthgearError>,
    }

    /// Authgear's success envelope.
    #[derive(Serialize, ToSchema)]
    pub struct AuthgearTaskEnvelope {
        /// The task.
        pub result: AuthgearTask,
    }

    // ---------------------------------------------------------------------------------------
    // Auth0

    /// Auth0 export format (`json` is NDJSON).
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Auth0Format {
        /// Gzipped CSV.
        Csv,
        /// Gzipped NDJSON.
        Json,
    }

    /// One Auth0 field.
    #[derive(Serialize, ToSchema)]
    pub struct Auth0Field {
        /// Field path, e.g. `email`, `user_metadata.plan`, `identities[0].connection`.
        pub name: String,
        /// Column header / key (default: `name`).
        pub export_as: Option<String>,
    }

    /// `POST /api/v2/jobs/users-exports` body; `{}` exports every user with the default fields.
    #[derive(Serialize, ToSchema)]
    pub struct Auth0CreateRequest {
        /// `con_` + 16 characters; connections are not modelled, so any id is 400 "does not exist".
        pub connection_id: Option<String>,
        /// Format (default `csv`).
        pub format: Option<Auth0Format>,
        /// Most users to export.
        #[schema(minimum = 1)]
        pub limit: Option<u64>,
        /// Fields (CSV: at most 30).
        pub fields: Option<Vec<Auth0Field>>,
    }

    /// Auth0 job status.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Auth0JobStatus {
        /// Queued.
        Pending,
        /// Running (`percentage_done`, `time_left_seconds`).
        Processing,
        /// Done (`location`).
        Completed,
        /// Failed or cancelled (`status_details`).
        Failed,
        /// Past retention.
        Expired,
    }

    /// An Auth0 export job.
    #[derive(Serialize, ToSchema)]
    pub struct Auth0Job {
        /// Always `users_export`.
        #[serde(rename = "type")]
        pub job_type: String,
        /// Status.
        pub status: Auth0JobStatus,
        /// Format.
        pub format: Auth0Format,
        /// The requested limit.
        pub limit: Option<u64>,
        /// The requested fields.
        pub fields: Option<Vec<Auth0Field>>,
        /// Creation time (ISO 8601, milliseconds).
        #[schema(format = DateTime)]
        pub created_at: String,
        /// Job id (`job_` + 16 characters).
        pub id: String,
        /// Progress while processing.
        pub percentage_done: Option<u8>,
        /// Estimated seconds left while processing.
        pub time_left_seconds: Option<u64>,
        /// Download URL of a completed job.
        pub location: Option<String>,
        /// Why a job failed.
        pub status_details: Option<String>,
    }

    /// The failure of a failed job.
    #[derive(Serialize, ToSchema)]
    pub struct Auth0JobErrors {
        /// `failed`.
        pub status: String,
        /// `users_export`.
        #[serde(rename = "type")]
        pub job_type: String,
        /// Job id.
        pub id: String,
        /// Creation time.
        #[schema(format = DateTime)]
        pub created_at: String,
        /// Why it failed.
        pub status_details: Option<String>,
    }

    /// `POST /oauth/token` body (JSON or `application/x-www-form-urlencoded`).
    #[derive(Serialize, ToSchema)]
    pub struct OAuthTokenRequest {
        /// Must be `client_credentials`.
        pub grant_type: String,
        /// The project id.
        pub client_id: String,
        /// A management key of the project.
        pub client_secret: String,
        /// `http(s)://<this host>/api/v2/`.
        pub audience: String,
    }

    /// An issued access token (HS256, one hour).
    #[derive(Serialize, ToSchema)]
    pub struct OAuthToken {
        /// The bearer token.
        pub access_token: String,
        /// Granted scopes.
        pub scope: String,
        /// Lifetime in seconds.
        pub expires_in: u64,
        /// `Bearer`.
        pub token_type: String,
    }

    // ---------------------------------------------------------------------------------------
    // Operations

    /// `{"status": "ok"}`.
    #[derive(Serialize, ToSchema)]
    pub struct Health {
        /// `ok`.
        pub status: String,
    }

    /// Readiness of the dependencies.
    #[derive(Serialize, ToSchema)]
    pub struct Readiness {
        /// `ok` or `unavailable`.
        pub status: String,
        /// The dependencies that failed: `database`, `queue`, `storage`.
        pub failed: Option<Vec<String>>,
    }

    // ---------------------------------------------------------------------------------------
    // Descope

    /// Sort order of a search.
    #[derive(Serialize, ToSchema)]
    pub struct DescopeSort {
        /// `id`, `modifiedTime`, `createdTime`, `externalId`, `displayName`, `tenant`, `phoneNumber`,
        /// `email` or `status`.
        pub field: String,
        /// Descending.
        pub desc: Option<bool>,
    }

    /// Search body; every field is optional and `0`, `""`, `null`, `false`, `[]` mean unset.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeSearchRequest {
        /// One login id (legacy).
        pub login_id: Option<String>,
        /// Any of these login ids.
        pub login_ids: Option<Vec<String>>,
        /// Any of these user ids.
        pub user_ids: Option<Vec<String>>,
        /// In at least one of these tenants.
        pub tenant_ids: Option<Vec<String>>,
        /// Has one of these roles.
        pub role_names: Option<Vec<String>>,
        /// Page size (default 100).
        pub limit: Option<i32>,
        /// 0-based page.
        pub page: Option<i32>,
        /// Free-text search.
        pub text: Option<String>,
        /// Any of these emails.
        pub emails: Option<Vec<String>>,
        /// Any of these phones.
        pub phones: Option<Vec<String>>,
        /// May use one of these SSO apps.
        pub sso_app_ids: Option<Vec<String>>,
        /// Custom attribute equality; an array value means "any of".
        #[schema(value_type = Option<Object>)]
        pub custom_attributes: Option<Value>,
        /// `enabled`, `disabled`, `invited`, `expired`.
        pub statuses: Option<Vec<UserStatus>>,
        /// Include test users.
        pub with_test_user: Option<bool>,
        /// Only test users.
        pub test_users_only: Option<bool>,
        /// Only SSO users.
        pub sso_only: Option<bool>,
        /// Created at or after (unix ms).
        pub from_created_time: Option<i64>,
        /// Created at or before (unix ms).
        pub to_created_time: Option<i64>,
        /// Modified at or after (unix ms).
        pub from_modified_time: Option<i64>,
        /// Modified at or before (unix ms).
        pub to_modified_time: Option<i64>,
        /// Sort order.
        pub sort: Option<Vec<DescopeSort>>,
    }

    /// A user's membership of a tenant.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeUserTenant {
        /// Tenant id.
        pub tenant_id: String,
        /// Tenant name.
        pub tenant_name: Option<String>,
        /// Roles in the tenant.
        pub role_names: Vec<String>,
    }

    /// Descope's user object (every key is always present).
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeUser {
        /// Login ids.
        pub login_ids: Vec<String>,
        /// User id.
        pub user_id: String,
        /// Display name.
        pub name: String,
        /// Email.
        pub email: String,
        /// Phone.
        pub phone: String,
        /// Email verified.
        pub verified_email: bool,
        /// Phone verified.
        pub verified_phone: bool,
        /// Project roles.
        pub role_names: Vec<String>,
        /// Tenants.
        pub user_tenants: Vec<DescopeUserTenant>,
        /// `enabled`, `disabled`, `invited`, `expired`.
        pub status: UserStatus,
        /// External ids.
        pub external_ids: Vec<String>,
        /// Picture URL.
        pub picture: String,
        /// Test user.
        pub test: bool,
        /// Custom attributes.
        #[schema(value_type = Object)]
        pub custom_attributes: Value,
        /// Creation time (unix seconds).
        pub created_time: i64,
        /// Last modification (unix seconds).
        pub modified_time: Option<i64>,
        /// Has TOTP.
        #[serde(rename = "TOTP")]
        pub totp: bool,
        /// Has SAML.
        #[serde(rename = "SAML")]
        pub saml: bool,
        /// OAuth provider → linked.
        #[serde(rename = "OAuth")]
        #[schema(value_type = Object)]
        pub oauth: Value,
        /// Has WebAuthn.
        pub webauthn: bool,
        /// Has a password.
        pub password: bool,
        /// SSO apps (empty: all).
        pub sso_app_ids: Vec<String>,
        /// Given name.
        pub given_name: String,
        /// Middle name.
        pub middle_name: String,
        /// Family name.
        pub family_name: String,
        /// Editable.
        pub editable: bool,
    }

    /// A page of users and the number of all matches.
    #[derive(Serialize, ToSchema)]
    pub struct DescopeUsersResponse {
        /// The users.
        pub users: Vec<DescopeUser>,
        /// All matches, not just this page.
        pub total: u64,
    }

    /// One user.
    #[derive(Serialize, ToSchema)]
    pub struct DescopeUserResponse {
        /// The user.
        pub user: DescopeUser,
    }

    /// `POST /v1/mgmt/users/load` body.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeLoadUsersRequest {
        /// User ids (at least one).
        pub user_ids: Vec<String>,
        /// Also return disabled or expired users.
        pub include_invalid_users: Option<bool>,
    }

    /// A tenant assignment in a create request.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeTenantAssignment {
        /// Tenant id.
        pub tenant_id: String,
        /// Roles in the tenant.
        pub role_names: Option<Vec<String>>,
    }

    /// A user to create.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeCreateUserRequest {
        /// Login id (unique in the project).
        pub login_id: String,
        /// Email.
        pub email: Option<String>,
        /// Phone.
        pub phone: Option<String>,
        /// Display name.
        pub name: Option<String>,
        /// Given name.
        pub given_name: Option<String>,
        /// Middle name.
        pub middle_name: Option<String>,
        /// Family name.
        pub family_name: Option<String>,
        /// Picture URL.
        pub picture: Option<String>,
        /// Project roles.
        pub role_names: Option<Vec<String>>,
        /// Tenants.
        pub user_tenants: Option<Vec<DescopeTenantAssignment>>,
        /// Custom attributes.
        #[schema(value_type = Option<Object>)]
        pub custom_attributes: Option<Value>,
        /// Email verified.
        pub verified_email: Option<bool>,
        /// Phone verified.
        pub verified_phone: Option<bool>,
        /// More login ids.
        pub additional_login_ids: Option<Vec<String>>,
        /// SSO apps.
        pub sso_app_ids: Option<Vec<String>>,
    }

    /// `POST /v1/mgmt/user/create/batch` body.
    #[derive(Serialize, ToSchema)]
    pub struct DescopeBatchCreateRequest {
        /// The users; a duplicate login id rejects the whole batch.
        pub users: Vec<DescopeCreateUserRequest>,
    }

    /// A user the batch could not create.
    #[derive(Serialize, ToSchema)]
    pub struct DescopeFailedUser {
        /// Why.
        pub failure: String,
        /// The user as sent.
        pub user: DescopeCreateUserRequest,
    }

    /// Result of a batch create.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeBatchCreateResponse {
        /// Users created.
        pub created_users: Vec<DescopeUser>,
        /// Users not created.
        pub failed_users: Vec<DescopeFailedUser>,
    }

    /// `POST /v1/mgmt/user/update/status` body.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeUpdateStatusRequest {
        /// The user's login id.
        pub login_id: String,
        /// `enabled` or `disabled`.
        pub status: UserStatus,
    }

    /// Body of the role updates (set / add / remove).
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeRolesRequest {
        /// The user's login id.
        pub login_id: String,
        /// The roles.
        pub role_names: Vec<String>,
        /// The tenant whose roles change (default: project roles).
        pub tenant_id: Option<String>,
    }

    /// `GET /v1/mgmt/license` answer.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DescopeLicense {
        /// The rate-limit tier the SDKs echo in `x-descope-license`.
        pub rate_limit_tier: String,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::*;

    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

    fn spec() -> Value {
        serde_json::from_slice(document_json()).expect("the document is JSON")
    }

    /// `(METHOD, path)` of every operation in the document.
    fn documented(spec: &Value) -> BTreeSet<(String, String)> {
        let paths = spec["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                METHODS.iter().filter(|m| item.get(**m).is_some()).map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect()
    }

    fn registered() -> BTreeSet<(String, String)> {
        crate::route_table().iter().map(|r| (r.method.to_string(), r.openapi_path())).collect()
    }

    #[test]
    fn native_task_status_lists_the_domain_statuses() {
        let spec = spec();
        let status = &spec["components"]["schemas"]["NativeTaskStatus"];
        let names: Vec<&str> = userexport_domain::TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(status["enum"], serde_json::json!(names), "{status}");
    }

    #[test]
    fn every_registered_route_is_documented() {
        let documented = documented(&spec());
        let table = crate::route_table();
        assert!(table.len() >= 20, "{table:?}");
        let missing: Vec<String> = table
            .iter()
            .map(|r| (r.method.to_string(), r.openapi_path()))
            .filter(|route| !documented.contains(route))
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        assert!(missing.is_empty(), "registered routes missing from the OpenAPI document: {missing:?}");
    }

    #[test]
    fn every_documented_route_is_registered() {
        let registered = registered();
        let unrouted: Vec<String> = documented(&spec())
            .iter()
            .filter(|route| !registered.contains(*route))
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        assert!(unrouted.is_empty(), "documented operations without a registered route: {unrouted:?}");
    }

    /// Every `"$ref"` string anywhere in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_valid_openapi_3() {
        let spec = spec();
        let version = spec["openapi"].as_str().expect("openapi version");
        assert!(version.starts_with("3."), "{version}");
        assert_eq!(spec["info"]["title"], "userexport");
        assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
        // It reads back as an OpenAPI document and serializes to the same JSON.
        let parsed: utoipa::openapi::OpenApi = serde_json::from_slice(document_json()).expect("parses as OpenApi");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), spec);

        let schemas = spec["components"]["schemas"].as_object().expect("component schemas");
        let schemes = spec["components"]["securitySchemes"].as_object().expect("security schemes");
        let tags: BTreeSet<&str> =
            spec["tags"].as_array().expect("tags").iter().filter_map(|t| t["name"].as_str()).collect();
        let mut operation_ids: BTreeMap<&str, String> = BTreeMap::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            assert!(path.starts_with('/'), "{path}");
            let template_params: BTreeSet<&str> =
                path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let at = format!("{} {path}", method.to_ascii_uppercase());
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{at} has no operationId"));
                if let Some(other) = operation_ids.insert(id, at.clone()) {
                    panic!("operationId {id} is used by {other} and {at}");
                }
                let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{at} has no responses"));
                assert!(!responses.is_empty(), "{at} has no responses");
                for (status, response) in responses {
                    assert!(status.len() == 3 && status.chars().all(|c| c.is_ascii_alphanumeric()), "{at}: {status}");
                    assert!(response["description"].is_string(), "{at} {status} has no description");
                }
                let op_tags = op["tags"].as_array().unwrap_or_else(|| panic!("{at} has no tag"));
                for tag in op_tags {
                    assert!(tags.contains(tag.as_str().unwrap_or_default()), "{at}: undeclared tag {tag}");
                }
                let path_params: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| {
                        assert_eq!(p["required"], true, "{at}: path parameters are required");
                        p["name"].as_str().unwrap_or_default()
                    })
                    .collect();
                assert_eq!(path_params, template_params, "{at}: path parameters do not match the template");
                for requirement in op["security"].as_array().into_iter().flatten() {
                    for name in requirement.as_object().expect("security requirement").keys() {
                        assert!(schemes.contains_key(name), "{at}: undeclared security scheme {name}");
                    }
                }
            }
        }
        assert!(operation_ids.len() >= 30, "{operation_ids:?}");

        let mut all = Vec::new();
        refs(&spec, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(schemas.contains_key(name), "$ref {r} does not resolve");
        }
    }

    #[test]
    fn main_operations_describe_their_bodies() {
        let spec = spec();
        let op = |method: &str, path: &str| spec["paths"][path][method].clone();
        let request_schema =
            |op: &Value| op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str().map(str::to_owned);
        let response_schema = |op: &Value, status: &str| {
            op["responses"][status]["content"]["application/json"]["schema"]["$ref"].as_str().map(str::to_owned)
        };
        let s = |name: &str| Some(format!("#/components/schemas/{name}"));
        for (method, path, request, status, response, error) in [
            ("post", "/v1/exports", Some("NativeCreateRequest"), "202", "NativeTask", "NativeError"),
            ("get", "/v1/exports", None, "200", "NativeTaskPage", "NativeError"),
            ("get", "/v1/exports/{id}", None, "200", "NativeTask", "NativeError"),
            ("post", "/v1/exports/{id}/cancel", None, "202", "NativeTask", "NativeError"),
            (
                "post",
                "/_api/admin/users/export",
                Some("AuthgearCreateRequest"),
                "200",
                "AuthgearTaskEnvelope",
                "AuthgearErrorEnvelope",
            ),
            ("get", "/_api/admin/users/export/{id}", None, "200", "AuthgearTaskEnvelope", "AuthgearErrorEnvelope"),
            ("post", "/api/v2/jobs/users-exports", Some("Auth0CreateRequest"), "200", "Auth0Job", "Auth0Error"),
            ("get", "/api/v2/jobs/{id}", None, "200", "Auth0Job", "Auth0Error"),
            ("get", "/api/v2/jobs/{id}/errors", None, "200", "Auth0JobErrors", "Auth0Error"),
            ("post", "/oauth/token", Some("OAuthTokenRequest"), "200", "OAuthToken", "OAuthError"),
            (
                "post",
                "/v2/mgmt/user/search",
                Some("DescopeSearchRequest"),
                "200",
                "DescopeUsersResponse",
                "DescopeError",
            ),
            ("get", "/v1/mgmt/user", None, "200", "DescopeUserResponse", "DescopeError"),
        ] {
            let o = op(method, path);
            assert_eq!(request_schema(&o), request.and_then(s), "{method} {path} request");
            assert_eq!(response_schema(&o, status), s(response), "{method} {path} {status}");
            assert_eq!(response_schema(&o, "401"), s(error), "{method} {path} 401");
        }
        // The create bodies describe their fields.
        let schemas = &spec["components"]["schemas"];
        assert!(schemas["NativeCreateRequest"]["properties"]["fields"].is_object());
        assert_eq!(schemas["NativeCreateRequest"]["required"], serde_json::json!(["format"]));
        assert!(schemas["AuthgearCreateRequest"]["properties"]["csv"].is_object());
        assert!(schemas["Auth0CreateRequest"]["properties"]["fields"].is_object());
        assert!(schemas["DescopeUser"]["properties"]["OAuth"].is_object());
    }

    #[actix_web::test]
    async fn openapi_json_and_swagger_ui_are_served_offline() {
        use actix_web::test as atest;
        let app = atest::init_service(actix_web::App::new().configure(crate::configure)).await;
        let get = |uri: &str| atest::TestRequest::get().uri(uri).to_request();

        let res = atest::call_service(&app, get("/openapi.json")).await;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.headers().get(header::CONTENT_TYPE).unwrap(), "application/json");
        let body: Value = atest::read_body_json(res).await;
        assert_eq!(body, spec());

        let res = atest::call_service(&app, get("/docs")).await;
        assert_eq!(res.status().as_u16(), 200);
        let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
        let html = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap();
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"), "{html}");
        // Every script and stylesheet the page names is served here.
        for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
            assert!(html.contains(&format!("\"docs/{asset}\"")), "{asset}");
            let res = atest::call_service(&app, get(&format!("/docs/{asset}"))).await;
            assert_eq!(res.status().as_u16(), 200, "{asset}");
            let body = atest::read_body(res).await;
            assert!(body.len() > 100, "{asset}");
        }
        let res = atest::call_service(&app, get("/docs/swagger-initializer.js")).await;
        let js = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap();
        assert!(js.contains("url: \"openapi.json\"") && js.contains("validatorUrl: null"), "{js}");
        let res = atest::call_service(&app, get("/docs/../Cargo.toml")).await;
        assert_eq!(res.status().as_u16(), 404);
        let res = atest::call_service(&app, get("/docs/index.html")).await;
        assert_eq!(res.status().as_u16(), 404);
    }

    #[test]
    fn the_vendored_swagger_ui_is_the_documented_version() {
        let readme = include_str!("../assets/swagger-ui/README.md");
        assert!(readme.contains(&format!("swagger-ui-dist@{SWAGGER_UI_VERSION}")), "{readme}");
        let bundle = DOCS_ASSETS.iter().find(|(n, ..)| *n == "swagger-ui-bundle.js").unwrap().2;
        assert!(bundle.len() > 1_000_000);
    }
}
