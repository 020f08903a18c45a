//! actix-web HTTP API of userexport: the native, Authgear and Auth0 export dialects (Descope plugs
//! in beside them), auth, local-file downloads, health, readiness and metrics.
//!
//! Layout:
//! - [`error`]: [`ApiError`] and the per-dialect envelopes ([`ApiDialect::from_path`]).
//! - [`auth`]: the [`auth::Authenticated`] extractor (management keys, RS256 admin JWTs), key
//!   generation and token minting.
//! - [`body`]: size-limited JSON bodies with JSON-pointer error locations.
//! - [`service`]: the one export-task service (create / get / list / cancel) all dialects share.
//! - [`dialect`]: request parsing and task views per wire contract.
//! - [`downloads`]: signed local-file downloads.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, and the metrics / panic middleware.
//! - [`routes`]: the registrar every route goes through; it records the route table.
//! - [`openapi`]: the OpenAPI document of every route (`/openapi.json`) and Swagger UI (`/docs`).
//! - [`console`]: the web console (`/console`): search users, export, follow progress, download.

pub mod auth;
pub mod body;
pub mod console;
pub mod dialect;
pub mod downloads;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod rate_limit;
pub mod routes;
pub mod service;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;
use userexport_queue::Queue;
use userexport_storage::{LocalFsStore, ObjectStore};
use userexport_store::Store;

pub use error::{ApiDialect, ApiError};

/// Tunables of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted request body (default 10 MiB, as Authgear).
    pub max_body_bytes: usize,
    /// Clock skew tolerated on JWT `exp` / `nbf` (default 60 s).
    pub jwt_leeway: Duration,
    /// Validity of download URLs presigned by the API (default 24 h).
    pub download_url_ttl: Duration,
    /// HS256 key of the access tokens `POST /oauth/token` issues (Auth0 dialect). Derive it from a
    /// secret every replica shares ([`dialect::auth0::TokenKey::derive`]); the default is random,
    /// so tokens are then valid only in this process.
    pub auth0_token_key: dialect::auth0::TokenKey,
    /// Per-project request limit of the Descope routes (429 `E130429` with `Retry-After`); `None`
    /// (the default) means unlimited.
    pub rate_limit: Option<rate_limit::ProjectRateLimit>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            jwt_leeway: Duration::from_secs(60),
            download_url_ttl: Duration::from_secs(24 * 3600),
            auth0_token_key: dialect::auth0::TokenKey::random(),
            rate_limit: None,
        }
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Database access.
    pub store: Store,
    /// Where export files live.
    pub storage: Arc<dyn ObjectStore>,
    /// The local store when files are served by this process (`/downloads/…`).
    pub local_files: Option<Arc<LocalFsStore>>,
    /// The job queue.
    pub queue: Queue,
    /// Tunables.
    pub settings: ApiSettings,
}

/// Every route of the app, through the recording registrar ([`routes::Routes`]). A new module's
/// `configure(&mut Routes)` is called here.
pub fn register(routes: &mut routes::Routes<'_>) {
    ops::configure(routes);
    openapi::configure(routes);
    dialect::native::configure(routes);
    dialect::authgear::configure(routes);
    dialect::auth0::configure(routes);
    dialect::descope::configure(routes);
    downloads::configure(routes);
    console::configure(routes);
}

/// Every `(method, path)` the app serves, in registration order (what [`register`] records).
pub fn route_table() -> Vec<routes::RouteEntry> {
    routes::Routes::collect(register)
}

/// Registers every route, and the dialect-aware 404 for unknown paths.
///
/// Handlers expect `web::Data<AppState>` (and, for downloads, `web::Data<LocalFsStore>`) in the
/// app data; [`app`] sets both up.
pub fn configure(cfg: &mut web::ServiceConfig) {
    register(&mut routes::Routes::new(cfg));
    cfg.default_service(web::to(error::route_not_found));
}

/// The complete application: state, request tracing, metrics / panic middleware and all routes.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let local = state.local_files.clone();
    let mut app = App::new().app_data(state);
    if let Some(local) = local {
        app = app.app_data(web::Data::from(local));
    }
    app.configure(configure).wrap(from_fn(ops::observe)).wrap(TracingLogger::<ops::RedactedRootSpan>::new())
}

/// Starts the HTTP server on `listener`. Signals are not handled here: the caller stops the returned
/// server with `ServerHandle::stop(true)` (graceful) on shutdown.
pub fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    // Install the metrics recorder before the first request records anything.
    ops::metrics_handle();
    let state = web::Data::new(state);
    let server =
        HttpServer::new(move || app(state.clone())).listen(listener)?.disable_signals().shutdown_timeout(30).run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as atest;

    #[actix_web::test]
    async fn unknown_routes_and_methods_answer_in_the_dialect_envelope() {
        // Routing only: no handler runs, so no state is needed.
        let app = atest::init_service(App::new().configure(configure)).await;
        let call = |req: atest::TestRequest| {
            let app = &app;
            async move {
                let res = atest::call_service(app, req.to_request()).await;
                let status = res.status().as_u16();
                let body: serde_json::Value = atest::read_body_json(res).await;
                (status, body)
            }
        };
        let (status, body) = call(atest::TestRequest::get().uri("/nope")).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("route_not_found")));
        let (status, body) = call(atest::TestRequest::get().uri("/_api/admin/nope")).await;
        assert_eq!((status, body["error"]["name"].as_str()), (404, Some("NotFound")));
        let (status, body) = call(atest::TestRequest::get().uri("/api/v2/nope")).await;
        assert_eq!((status, body["statusCode"].as_u64()), (404, Some(404)));
        let (status, body) = call(atest::TestRequest::get().uri("/v2/mgmt/nope")).await;
        assert_eq!(status, 404);
        assert!(body["errorCode"].is_string());

        let (status, body) = call(atest::TestRequest::delete().uri("/v1/exports")).await;
        assert_eq!((status, body["code"].as_str()), (405, Some("method_not_allowed")));
        let (status, body) = call(atest::TestRequest::get().uri("/_api/admin/users/export")).await;
        assert_eq!((status, body["error"]["reason"].as_str()), (405, Some("MethodNotAllowed")));
        let (status, _) = call(atest::TestRequest::put().uri("/_api/admin/users/export/userexport_X")).await;
        assert_eq!(status, 405);
    }

    #[test]
    fn default_settings() {
        let s = ApiSettings::default();
        assert_eq!(s.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(s.jwt_leeway, Duration::from_secs(60));
        assert_eq!(s.download_url_ttl, Duration::from_secs(86_400));
    }
}
