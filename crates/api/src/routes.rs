//! The route registrar: every route of the app goes through [`Routes`], which registers it on
//! actix's [`web::ServiceConfig`] *and* records `(method, path)` in a table. The table is what the
//! OpenAPI tests compare with the document ([`crate::route_table`]), so a route cannot be served
//! without being documented.
//!
//! # Adding routes
//!
//! A module exposes `pub fn configure(routes: &mut Routes<'_>)` and calls one of:
//!
//! - [`Routes::get`], [`Routes::post`]: one method on a path;
//! - [`Routes::resource`]: several methods on one path, e.g.
//!   `routes.resource("/v1/exports", |r| r.post(create).get(list))`.
//!
//! Then `register` in `lib.rs` calls that `configure`. Handlers are ordinary actix handlers (any
//! extractors, any [`Responder`]).
//!
//! Rules the registrar enforces or relies on:
//!
//! - **All methods of a path in one call.** actix stops at the first resource whose path matches,
//!   so a second registration of the same path would never be reached; it panics instead.
//! - Any other method on a registered path answers 405 in the path's dialect envelope
//!   ([`crate::error::method_not_allowed`]) with an `Allow` header.
//! - Paths use actix syntax; a segment `{name:regex}` is documented as `{name}`
//!   ([`RouteEntry::openapi_path`]).
//! - Every recorded route must be an operation of [`crate::openapi`]'s document, and every
//!   documented operation must be registered (tests in `openapi.rs`).
//!
//! ```
//! use actix_web::HttpResponse;
//! use actix_web::http::Method;
//! use userexport_api::routes::Routes;
//!
//! async fn search() -> HttpResponse {
//!     HttpResponse::Ok().finish()
//! }
//! async fn load() -> HttpResponse {
//!     HttpResponse::Ok().finish()
//! }
//!
//! fn configure(routes: &mut Routes<'_>) {
//!     routes.post("/v2/mgmt/user/search", search).resource("/v1/mgmt/user", |r| r.get(load));
//! }
//!
//! let table = Routes::collect(configure);
//! assert_eq!(table.len(), 2);
//! assert_eq!((&table[0].method, table[0].path), (&Method::POST, "/v2/mgmt/user/search"));
//! ```

use std::collections::HashSet;

use actix_web::http::{Method, header};
use actix_web::{FromRequest, Handler, HttpRequest, Responder, web};

/// One registered route: a method on an actix path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    /// The HTTP method.
    pub method: Method,
    /// The path as registered with actix (e.g. `/downloads/{key:.*}`).
    pub path: &'static str,
}

impl RouteEntry {
    /// The path in OpenAPI syntax: `{name:regex}` segments become `{name}`.
    pub fn openapi_path(&self) -> String {
        openapi_path(self.path)
    }
}

/// `{name:regex}` → `{name}`, everything else unchanged.
pub fn openapi_path(actix_path: &str) -> String {
    let mut out = String::with_capacity(actix_path.len());
    let mut rest = actix_path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let Some(close) = tail.find('}') else { break };
        let inner = &tail[1..close];
        out.push('{');
        out.push_str(inner.split(':').next().unwrap_or(inner));
        out.push('}');
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Adapts a route-registering function to `App::configure` / `ServiceConfig::configure`, e.g.
/// `App::new().configure(routes::apply(downloads::configure))` in a test.
pub fn apply(configure: impl FnOnce(&mut Routes<'_>)) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| configure(&mut Routes::new(cfg))
}

/// The methods of one path, collected by [`Routes::resource`].
pub struct ResourceRoutes {
    resource: actix_web::Resource,
    methods: Vec<Method>,
}

impl ResourceRoutes {
    /// Serves `method` with `handler`.
    pub fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }

    /// Serves `GET`.
    pub fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::GET, handler)
    }

    /// Serves `POST`.
    pub fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::POST, handler)
    }

    /// Serves `HEAD`.
    pub fn head<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::HEAD, handler)
    }
}

/// Registers routes on a [`web::ServiceConfig`] and records them (see the module docs).
pub struct Routes<'a> {
    cfg: &'a mut web::ServiceConfig,
    table: Vec<RouteEntry>,
    paths: HashSet<&'static str>,
}

impl<'a> Routes<'a> {
    /// A registrar adding to `cfg`.
    pub fn new(cfg: &'a mut web::ServiceConfig) -> Self {
        Self { cfg, table: Vec::new(), paths: HashSet::new() }
    }

    /// Registers every method of `path` at once: `build` receives an empty [`ResourceRoutes`] and
    /// returns it with its methods added.
    ///
    /// # Panics
    ///
    /// When `path` was registered before or `build` adds no method or one method twice:
    /// programming errors that would leave a route unreachable.
    pub fn resource(&mut self, path: &'static str, build: impl FnOnce(ResourceRoutes) -> ResourceRoutes) -> &mut Self {
        assert!(
            self.paths.insert(path),
            "route {path} is registered twice; register all of its methods in one `Routes::resource` call"
        );
        let built = build(ResourceRoutes { resource: web::resource(path), methods: Vec::new() });
        assert!(!built.methods.is_empty(), "route {path} has no method");
        let mut allow: Vec<&str> = Vec::with_capacity(built.methods.len());
        for method in &built.methods {
            assert!(!allow.contains(&method.as_str()), "route {path} registers {method} twice");
            allow.push(method.as_str());
            self.table.push(RouteEntry { method: method.clone(), path });
        }
        let allow = allow.join(", ");
        let not_allowed = move |req: HttpRequest| {
            let allow = allow.clone();
            async move {
                let mut res = crate::error::method_not_allowed(req).await;
                if let Ok(value) = header::HeaderValue::from_str(&allow) {
                    res.headers_mut().insert(header::ALLOW, value);
                }
                res
            }
        };
        self.cfg.service(built.resource.default_service(web::to(not_allowed)));
        self
    }

    /// Registers `GET path`.
    pub fn get<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource(path, |r| r.get(handler))
    }

    /// Registers `POST path`.
    pub fn post<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource(path, |r| r.post(handler))
    }

    /// The routes registered so far, in registration order.
    pub fn table(&self) -> &[RouteEntry] {
        &self.table
    }

    /// The routes `configure` registers, without serving anything (the app is built and dropped;
    /// no handler runs, so no state is needed).
    pub fn collect(configure: impl FnOnce(&mut Routes<'_>)) -> Vec<RouteEntry> {
        let mut table = Vec::new();
        let _app = actix_web::App::new().configure(|cfg| {
            let mut routes = Routes::new(cfg);
            configure(&mut routes);
            table = routes.table;
        });
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::HttpResponse;
    use actix_web::test as atest;

    async fn ok() -> HttpResponse {
        HttpResponse::Ok().body("ok")
    }

    #[test]
    fn openapi_paths_drop_regexes() {
        assert_eq!(openapi_path("/downloads/{key:.*}"), "/downloads/{key}");
        assert_eq!(openapi_path("/v1/exports/{id}/cancel"), "/v1/exports/{id}/cancel");
        assert_eq!(openapi_path("/a/{x:[0-9]+}/b/{y}"), "/a/{x}/b/{y}");
        assert_eq!(openapi_path("/healthz"), "/healthz");
    }

    #[actix_web::test]
    async fn routes_are_served_recorded_and_other_methods_are_405_with_allow() {
        let configure = |routes: &mut Routes<'_>| {
            routes.resource("/v1/things", |r| r.get(ok).post(ok)).get("/v1/things/{id:.*}", ok);
        };
        let table = Routes::collect(configure);
        let recorded: Vec<(String, String)> = table.iter().map(|e| (e.method.to_string(), e.openapi_path())).collect();
        assert_eq!(
            recorded,
            [("GET", "/v1/things"), ("POST", "/v1/things"), ("GET", "/v1/things/{id}")]
                .map(|(m, p)| (m.to_owned(), p.to_owned()))
        );

        let app = atest::init_service(actix_web::App::new().configure(apply(configure))).await;
        for req in [atest::TestRequest::get().uri("/v1/things"), atest::TestRequest::post().uri("/v1/things")] {
            assert_eq!(atest::call_service(&app, req.to_request()).await.status().as_u16(), 200);
        }
        let res = atest::call_service(&app, atest::TestRequest::get().uri("/v1/things/a/b").to_request()).await;
        assert_eq!(res.status().as_u16(), 200);
        let res = atest::call_service(&app, atest::TestRequest::delete().uri("/v1/things").to_request()).await;
        assert_eq!(res.status().as_u16(), 405);
        assert_eq!(res.headers().get(header::ALLOW).unwrap(), "GET, POST");
        let body: serde_json::Value = atest::read_body_json(res).await;
        assert_eq!(body["code"], "method_not_allowed");
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_path_registered_twice_panics() {
        Routes::collect(|routes| {
            routes.get("/v1/x", ok).post("/v1/x", ok);
        });
    }
}
