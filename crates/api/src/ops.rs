//! Operations endpoints and HTTP metrics.
//!
//! - `GET /healthz`: the process answers.
//! - `GET /readyz`: database, queue and object store answer (200, else 503 with the failed parts).
//! - `GET /metrics`: Prometheus text from the process-wide recorder ([`metrics_handle`]).
//!
//! Worker processes serve the same recorder's text on their own port (the root binary's
//! `worker_metrics_bind`, through [`metrics_response`]).
//!
//! [`observe`] is the app-wide middleware: it records `userexport_http_requests_total` and
//! `userexport_http_request_duration_seconds` by method, matched route pattern and status, and turns
//! a panicking handler into a 500 in the dialect envelope of the path.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use futures_util::FutureExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiDialect, ApiError};
use crate::routes::Routes;

/// Name of the request counter.
pub const HTTP_REQUESTS: &str = "userexport_http_requests_total";
/// Name of the request duration histogram (seconds).
pub const HTTP_DURATION: &str = "userexport_http_request_duration_seconds";
/// Name of the counter of export tasks created (labels `dialect`, `format`).
pub const EXPORTS_CREATED: &str = "userexport_exports_created_total";
/// Name of the counter of cancel requests accepted.
pub const EXPORTS_CANCEL_REQUESTED: &str = "userexport_exports_cancel_requested_total";

const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide Prometheus handle, installing the global `metrics` recorder on first use.
///
/// If another recorder was installed first (by the embedding binary), a detached handle is returned
/// and a warning logged: `/metrics` then shows nothing.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("static, non-empty buckets")
        };
        let handle = match builder().install_recorder() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics will be empty");
                builder().build_recorder().handle()
            }
        };
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the metrics upkeep thread");
        }
        handle
    })
}

/// Help texts of the API's metrics.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by method, route pattern and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request duration, by method, route pattern and status.");
    describe_counter!(EXPORTS_CREATED, "Export tasks created, by dialect and format.");
    describe_counter!(EXPORTS_CANCEL_REQUESTED, "Cancel requests accepted.");
    describe_gauge!(QUEUE_DEPTH, "Export jobs waiting in the queue.");
}

/// Samples the queue depth into [`QUEUE_DEPTH`] (bounded by a timeout; failures are logged).
pub async fn record_queue_depth(queue: &userexport_queue::Queue) {
    match tokio::time::timeout(READY_TIMEOUT, queue.depth()).await {
        Ok(Ok(depth)) => metrics::gauge!(QUEUE_DEPTH).set(depth as f64),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the queue depth"),
        Err(_) => tracing::warn!("reading the queue depth timed out"),
    }
}

/// The Prometheus text of this process's metrics, as a response.
pub fn metrics_response() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(metrics_handle().render())
}

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub fn configure(routes: &mut Routes<'_>) {
    routes.get("/healthz", healthz).get("/readyz", readyz).get("/metrics", metrics_text);
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "The process is up", body = crate::openapi::schemas::Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Per-dependency readiness deadline.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

async fn check<F, E>(name: &'static str, fut: F) -> Option<&'static str>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(READY_TIMEOUT, fut).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
            Some(name)
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness check timed out");
            Some(name)
        }
    }
}

/// Readiness: the database, the queue and the object store answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Every dependency answers", body = crate::openapi::schemas::Readiness),
        (status = 503, description = "`failed` names the dependencies that did not answer", body = crate::openapi::schemas::Readiness),
    )
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (db, queue, storage) = futures_util::join!(
        check("database", state.store.ping()),
        check("queue", state.queue.ping()),
        check("storage", state.storage.check()),
    );
    let failed: Vec<&str> = [db, queue, storage].into_iter().flatten().collect();
    if failed.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ok" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable", "failed": failed }))
    }
}

/// Gauge: export jobs waiting in the queue, sampled at scrape time (drives the worker autoscaler).
pub const QUEUE_DEPTH: &str = "userexport_queue_depth";

/// Prometheus metrics of this process (text exposition format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Metrics in Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics_text(state: Option<web::Data<AppState>>) -> HttpResponse {
    if let Some(state) = state {
        record_queue_depth(&state.queue).await;
    }
    metrics_response()
}

/// Root span of every request: like `tracing-actix-web`'s default but the target is the path
/// only, because query strings carry secrets (download URL signatures).
pub struct RedactedRootSpan;

impl tracing_actix_web::RootSpanBuilder for RedactedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let request_id =
            request.extensions().get::<tracing_actix_web::RequestId>().map(ToString::to_string).unwrap_or_default();
        let route = request.match_pattern().unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.target = %request.path(),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    /// Records the status; server errors are logged at `error`, client errors only at `debug` (a
    /// stream of 401s and 404s is normal traffic, not something to page anyone about).
    fn on_request_end<B: MessageBody>(span: tracing::Span, outcome: &Result<ServiceResponse<B>, actix_web::Error>) {
        let (status, error) = match outcome {
            Ok(res) => (res.status(), res.response().error()),
            Err(e) => (e.as_response_error().status_code(), Some(e)),
        };
        span.record("http.status_code", status.as_u16());
        span.record("otel.status_code", if status.is_server_error() { "ERROR" } else { "OK" });
        let Some(error) = error else { return };
        span.record("exception.message", tracing::field::display(error));
        if status.is_server_error() {
            span.record("exception.details", tracing::field::debug(error));
            tracing::error!(parent: &span, status = status.as_u16(), error = %error, "request failed");
        } else {
            tracing::debug!(parent: &span, status = status.as_u16(), error = %error, "request refused");
        }
    }
}

/// Middleware: HTTP metrics and panic containment. Use with `actix_web::middleware::from_fn`.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    // The request must not be cloned before routing (actix needs it unshared to record the match),
    // so only the dialect is taken up front; the route pattern comes from the response.
    let dialect = ApiDialect::from_path(req.path());
    let (result, route) = match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(Ok(res)) => {
            let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
            (Ok(res.map_into_boxed_body()), route)
        }
        // Errors from services are rendered by actix through their `ResponseError`.
        Ok(Err(e)) => (Err(e), "unmatched".to_owned()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            let err = ApiError::internal(dialect, std::io::Error::other(format!("handler panicked: {what}")));
            (Err(err.into()), "unmatched".to_owned())
        }
    };
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    }
    .as_u16()
    .to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(start.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::App;
    use actix_web::middleware::from_fn;
    use actix_web::test as atest;

    async fn boom() -> HttpResponse {
        panic!("kaboom")
    }

    /// Collects formatted log output in memory.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[actix_web::test]
    async fn request_logs_carry_a_request_id_but_never_the_query_string() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().json().with_current_span(true).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        async fn logs() -> HttpResponse {
            tracing::info!("inside the handler");
            HttpResponse::Ok().finish()
        }
        let app = atest::init_service(
            App::new()
                .wrap(tracing_actix_web::TracingLogger::<RedactedRootSpan>::new())
                .route("/downloads/{key}", web::get().to(logs)),
        )
        .await;
        let req = atest::TestRequest::get().uri("/downloads/f.csv?expires=1&sig=deadbeefcafe").to_request();
        assert_eq!(atest::call_service(&app, req).await.status().as_u16(), 200);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("inside the handler") && text.contains("request_id"), "{text}");
        assert!(text.contains("/downloads/f.csv"), "{text}");
        assert!(!text.contains("deadbeefcafe") && !text.contains("sig="), "{text}");
    }

    #[actix_web::test]
    async fn client_errors_stay_quiet_and_server_errors_are_logged() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        async fn missing() -> Result<HttpResponse, ApiError> {
            Err(ApiError::new(ApiDialect::Native, userexport_domain::Code::TaskNotFound))
        }
        async fn broken() -> Result<HttpResponse, ApiError> {
            Err(ApiError::internal(ApiDialect::Native, std::io::Error::other("disk on fire")))
        }
        let app = atest::init_service(
            App::new()
                .wrap(tracing_actix_web::TracingLogger::<RedactedRootSpan>::new())
                .route("/missing", web::get().to(missing))
                .route("/broken", web::get().to(broken)),
        )
        .await;
        let res = atest::call_service(&app, atest::TestRequest::get().uri("/missing").to_request()).await;
        assert_eq!(res.status().as_u16(), 404);
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logged.is_empty(), "a 404 is not logged at info: {logged}");
        let res = atest::call_service(&app, atest::TestRequest::get().uri("/broken").to_request()).await;
        assert_eq!(res.status().as_u16(), 500);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("ERROR") && text.contains("request failed"), "{text}");
    }

    #[actix_web::test]
    async fn panics_become_500_in_the_dialect_envelope() {
        let app = atest::init_service(
            App::new()
                .wrap(from_fn(observe))
                .route("/_api/admin/boom", web::get().to(boom))
                .route("/v1/boom", web::get().to(boom)),
        )
        .await;
        // The server renders an `Err` through its `ResponseError`, as done here.
        let call = |uri: &'static str| {
            let app = &app;
            async move {
                let err = atest::try_call_service(app, atest::TestRequest::get().uri(uri).to_request())
                    .await
                    .map(|_| ())
                    .expect_err("a panic becomes an error");
                let res = err.error_response();
                let status = res.status().as_u16();
                let Ok(bytes) = actix_web::body::to_bytes(res.into_body()).await else { panic!("body") };
                (status, serde_json::from_slice::<serde_json::Value>(&bytes).expect("json"))
            }
        };
        let (status, body) = call("/_api/admin/boom").await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["reason"], "UnexpectedError");
        assert!(!body.to_string().contains("kaboom"));
        let (status, body) = call("/v1/boom").await;
        assert_eq!(status, 500);
        assert_eq!(body["code"], "internal");
    }

    #[actix_web::test]
    async fn requests_are_counted_by_route_pattern() {
        let handle = metrics_handle();
        let app = atest::init_service(
            App::new()
                .wrap(from_fn(observe))
                .configure(|cfg| {
                    cfg.route("/healthz", web::get().to(healthz)).route("/metrics", web::get().to(metrics_text));
                })
                .route("/v1/things/{id}", web::get().to(healthz)),
        )
        .await;
        for id in ["a", "b", "c"] {
            let res =
                atest::call_service(&app, atest::TestRequest::get().uri(&format!("/v1/things/{id}")).to_request())
                    .await;
            assert_eq!(res.status().as_u16(), 200);
        }
        let res = atest::call_service(&app, atest::TestRequest::get().uri("/healthz").to_request()).await;
        let body: serde_json::Value = atest::read_body_json(res).await;
        assert_eq!(body, json!({"status": "ok"}));

        let text = handle.render();
        let line = text
            .lines()
            .find(|l| l.starts_with(HTTP_REQUESTS) && l.contains("route=\"/v1/things/{id}\""))
            .unwrap_or_else(|| panic!("no counter line in:\n{text}"));
        assert!(line.contains("method=\"GET\"") && line.contains("status=\"200\""), "{line}");
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 3.0, "{line}");
        assert!(text.contains(&format!("{HTTP_DURATION}_bucket")), "{text}");

        let res = atest::call_service(&app, atest::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(res.status().as_u16(), 200);
        let body = atest::read_body(res).await;
        assert!(std::str::from_utf8(&body).unwrap().contains(HTTP_REQUESTS));
    }
}
